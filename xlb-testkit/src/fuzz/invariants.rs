//! Properties every result must have, whatever the model says (issue 13): never XDP_ABORTED;
//! PASS and DROP leave the frame alone; a transmitted frame's outer headers are valid, its
//! lengths match the frame, and a forwarded frame carries the input's IP packet byte for byte;
//! only exact VIP / port / protocol matches are forwarded (no open relay); echo replies only
//! for VIP addresses that answer them.

use std::net::IpAddr;

use lb_common::{
    VipKey,
    addr::{PROTO_ICMP, PROTO_ICMPV6},
    values::{VIP_F_FRAG_ONLY, VIP_F_ICMP_ECHO},
};

use super::world::World;
use crate::{csum, model::Parsed};

/// What the input was, as far as the invariants care (the model's parse, when it got far
/// enough to know).
pub struct Seen<'a> {
    pub input: &'a [u8],
    pub parsed: Option<&'a Parsed>,
}

fn l2_of(f: &[u8]) -> Option<(usize, u16)> {
    let et = u16::from_be_bytes([*f.get(12)?, *f.get(13)?]);
    if et == 0x8100 {
        return Some((18, u16::from_be_bytes([*f.get(16)?, *f.get(17)?])));
    }
    Some((14, et))
}

/// Every violation of the properties above, as readable lines.
pub fn check(world: &World, seen: &Seen, verdict: u32, out: &[u8]) -> Vec<String> {
    let mut v = Vec::new();
    if !(1..=3).contains(&verdict) {
        v.push(format!(
            "verdict {verdict}: the program returns only DROP, PASS or TX"
        ));
        return v;
    }
    if verdict != 3 {
        if out != seen.input {
            v.push("PASS/DROP changed the frame".into());
        }
        return v;
    }
    let Some(p) = seen.parsed else {
        v.push("TX of a frame whose IP header was never parsed".into());
        return v;
    };
    let Some((l2, et)) = l2_of(out) else {
        v.push("TX frame shorter than an Ethernet header".into());
        return v;
    };
    let ip = &out[l2..];
    let input_ip = &seen.input[p.l2_len..p.l3_end()];
    // dsr-l2 sends the client's own IP packet, and an echo reply keeps the client's header
    // layout (options, extension headers): xlb wrote an IPv4 header of its own only when it
    // encapsulates or answers too-big, and only those must be IHL 5.
    let echo = matches!(p.proto, PROTO_ICMP | PROTO_ICMPV6)
        && matches!(seen.input.get(p.l4_off), Some(8 | 128));
    let own_v4_header = ip != input_ip && !echo;
    let (outer_len, outer_proto, hdr) = match et {
        0x0800 if ip.len() >= 20 => {
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            if own_v4_header && ip[0] != 0x45 {
                v.push(format!("outer IPv4 version/IHL {:#04x}", ip[0]));
            }
            // The client's header keeps a corrupt checksum corrupt; xlb's must be valid.
            let input_valid = seen
                .input
                .get(p.l2_len..p.l2_len + ihl)
                .is_some_and(csum::verifies);
            if (own_v4_header || input_valid) && !ip.get(..ihl).is_some_and(csum::verifies) {
                v.push("outer IPv4 header checksum invalid".into());
            }
            (usize::from(u16::from_be_bytes([ip[2], ip[3]])), ip[9], ihl)
        }
        0x86dd if ip.len() >= 40 => (
            40 + usize::from(u16::from_be_bytes([ip[4], ip[5]])),
            ip[6],
            40,
        ),
        _ => {
            v.push(format!(
                "TX frame of EtherType {et:#06x} or shorter than its IP header"
            ));
            return v;
        }
    };
    if outer_len != ip.len() {
        v.push(format!(
            "IP length field {outer_len} but {} bytes follow the L2 header",
            ip.len()
        ));
    }
    // Back to the sender (an echo reply, or a too-big answer to a data packet), from the
    // address it wrote to: told by the IP addresses, as a fuzzed source MAC may be a
    // backend's. A forwarded packet keeps the client as source (dsr-l2) or carries the LB's.
    let (out_src, out_dst) = if et == 0x0800 {
        (
            IpAddr::V4(<[u8; 4]>::try_from(&ip[12..16]).expect("4 bytes").into()),
            IpAddr::V4(<[u8; 4]>::try_from(&ip[16..20]).expect("4 bytes").into()),
        )
    } else {
        (ipv6_at(ip, 8), ipv6_at(ip, 24))
    };
    let reply = out[0..6] == seen.input[6..12] && out_dst == p.src && out_src == p.dst;
    if reply {
        // An echo reply or a too-big answer: back to the sender, from a VIP address.
        let entry = world.entries.get(&VipKey::of(p.dst, 0, 0));
        let Some(entry) = entry else {
            v.push(format!(
                "ICMP answer from {}, which is no VIP address",
                p.dst
            ));
            return v;
        };
        if echo && entry.flags & VIP_F_ICMP_ECHO == 0 {
            v.push(format!(
                "echo reply for {}, which does not answer echo",
                p.dst
            ));
        }
        let valid = |ip: &[u8], hdr: usize| match (p.src, p.dst) {
            (IpAddr::V4(_), _) => csum::verifies(&ip[hdr..]),
            (IpAddr::V6(_), _) => {
                let (src, dst) = (ipv6_at(ip, 8), ipv6_at(ip, 24));
                let len = (ip.len() - hdr) as u32;
                csum::finish(csum::sum(
                    &ip[hdr..],
                    csum::pseudo_header(src, dst, 58, len),
                )) == 0
            }
        };
        // A too-big answer is xlb's own: valid. An echo reply keeps a corrupt checksum corrupt.
        let icmp_off = if echo { p.l4_off - p.l2_len } else { hdr };
        let input_valid = !echo || valid(input_ip, icmp_off);
        if input_valid && outer_len == ip.len() && !valid(ip, icmp_off) {
            v.push("ICMP answer with an invalid checksum".into());
        }
        return v;
    }
    if outer_proto == 17 && ip != input_ip {
        let udp = &ip[hdr..];
        let len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
        if len != ip.len() - hdr {
            v.push(format!(
                "GUE UDP length {len} but {} bytes follow",
                ip.len() - hdr
            ));
        }
    }
    // Forwarded: the input's IP packet, byte for byte, at the end of the frame.
    let inner = &seen.input[p.l2_len..p.l3_end()];
    if !out.ends_with(inner) {
        v.push("forwarded frame does not end with the input's IP packet".into());
    }
    if !forwardable(world, p, seen.input) {
        v.push(format!(
            "forwarded a packet to {} proto {} that matches no VIP (open relay)",
            p.dst, p.proto
        ));
    }
    v
}

fn ipv6_at(ip: &[u8], at: usize) -> IpAddr {
    let o: [u8; 16] = ip[at..at + 16].try_into().expect("16 bytes");
    IpAddr::V6(o.into())
}

/// Whether a VIP entry exists that a packet to `p.dst` may be forwarded by: the exact
/// (address, port, protocol), the all-ports entry, a fragment alias for a fragment, or for a
/// relayed ICMP error the VIP it quotes.
fn forwardable(world: &World, p: &Parsed, f: &[u8]) -> bool {
    let has = |a: IpAddr, port: u16, proto: u8, frag: bool| {
        world
            .entries
            .get(&VipKey::of(a, port, proto))
            .is_some_and(|m| proto != 0 && (frag || m.flags & VIP_F_FRAG_ONLY == 0))
    };
    if p.frag {
        return has(p.dst, 0, p.proto, true);
    }
    let l4 = &f[p.l4_off..];
    if matches!(p.proto, PROTO_ICMP | PROTO_ICMPV6) {
        // The quoted packet's source and source port: the VIP the error is about.
        let g = |i: usize| f.get(i).copied().unwrap_or(0);
        let q = p.l4_off + 8;
        let (src_at, proto, ports) = if p.dst.is_ipv4() {
            (q + 12..q + 16, g(q + 9), q + usize::from(g(q) & 0x0f) * 4)
        } else {
            (q + 8..q + 24, g(q + 6), q + 40)
        };
        let qsrc_ok = match (f.get(src_at), lb_common::addr::to_words(p.dst).1) {
            (Some(s), _) => match p.dst {
                IpAddr::V4(a) => s == a.octets(),
                IpAddr::V6(a) => s == a.octets(),
            },
            (None, _) => false,
        };
        let port = u16::from_be_bytes([g(ports), g(ports + 1)]);
        return qsrc_ok && (has(p.dst, port, proto, false) || has(p.dst, 0, proto, false));
    }
    let dport = u16::from_be_bytes([l4[2], l4[3]]);
    has(p.dst, dport, p.proto, false) || has(p.dst, 0, p.proto, false)
}
