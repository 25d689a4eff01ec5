//! §3 "ICMP" and §6: echo replies for VIP addresses, PMTU errors relayed to the flow's backend.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lb_common::{
    LbConfig, TrafficStats, VipMeta,
    addr::{FAMILY_V4, PROTO_TCP, PROTO_UDP},
    hash::ports_word,
    stats::Counter,
    values::VIP_F_ICMP_ECHO,
};

use super::{Maps, Outcome, Parsed, Use, XDP_TX, choose, forward, ring_hash, vip_for};

/// RFC 1624 eqn. 3: the checksum after one 16-bit word changed from `old` to `new`.
fn replace16(check: u16, old: u16, new: u16) -> u16 {
    let mut sum = u32::from(!check) + u32::from(!old) + u32::from(new);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

pub(super) fn handle(
    maps: &dyn Maps,
    cfg: &LbConfig,
    f: &[u8],
    p: &Parsed,
    address: &VipMeta,
) -> Outcome {
    if p.l4_off + 8 > p.l3_end() {
        return Outcome::drop(Counter::DropTruncated);
    }
    let (kind, code) = (f[p.l4_off], f[p.l4_off + 1]);
    let v4 = p.family == FAMILY_V4;
    let echo = if v4 { kind == 8 } else { kind == 128 };
    if echo && code == 0 {
        if address.flags & VIP_F_ICMP_ECHO == 0 {
            return Outcome::pass(Counter::Pass);
        }
        let mut o = Outcome::simple(XDP_TX, Counter::IcmpEchoReply);
        o.output = Some(echo_reply(f, p));
        o.vip = Some((address.index, TrafficStats::new(1, p.l3_end() as u64, 0, 0)));
        return o;
    }
    let pmtu = if v4 {
        kind == 3 && code == 4
    } else {
        kind == 2
    };
    if !pmtu {
        return Outcome::pass(Counter::Pass);
    }
    relay(maps, cfg, f, p)
}

/// §6: MACs, addresses swapped, TTL 64, type 0 / 129, checksums updated incrementally, padding
/// removed, every other byte (options, extension headers, echo data) unchanged.
fn echo_reply(f: &[u8], p: &Parsed) -> Vec<u8> {
    // Padding after the IP packet is removed.
    let mut o = f[..p.l3_end()].to_vec();
    let l2 = p.l2_len;
    o[0..6].copy_from_slice(&f[6..12]);
    o[6..12].copy_from_slice(&f[0..6]);
    let reply = if p.family == FAMILY_V4 {
        let ip = l2;
        let old = u16::from_be_bytes([f[ip + 8], f[ip + 9]]);
        let new = u16::from_be_bytes([64, f[ip + 9]]);
        let c = replace16(u16::from_be_bytes([f[ip + 10], f[ip + 11]]), old, new);
        o[ip + 8] = 64;
        o[ip + 10..ip + 12].copy_from_slice(&c.to_be_bytes());
        o[ip + 12..ip + 16].copy_from_slice(&f[ip + 16..ip + 20]);
        o[ip + 16..ip + 20].copy_from_slice(&f[ip + 12..ip + 16]);
        0u8
    } else {
        let ip = l2;
        o[ip + 7] = 64;
        o[ip + 8..ip + 24].copy_from_slice(&f[ip + 24..ip + 40]);
        o[ip + 24..ip + 40].copy_from_slice(&f[ip + 8..ip + 24]);
        129u8
    };
    let l4 = p.l4_off;
    let old = u16::from_be_bytes([f[l4], f[l4 + 1]]);
    let new = u16::from_be_bytes([reply, f[l4 + 1]]);
    let c = match replace16(u16::from_be_bytes([f[l4 + 2], f[l4 + 3]]), old, new) {
        // §6: the zero checksum is written 0xffff.
        0 => 0xffff,
        c => c,
    };
    o[l4] = reply;
    o[l4 + 2..l4 + 4].copy_from_slice(&c.to_be_bytes());
    o
}

/// §3, frag-needed / packet-too-big: the quoted packet names the flow (VIP -> client).
fn relay(maps: &dyn Maps, cfg: &LbConfig, f: &[u8], p: &Parsed) -> Outcome {
    let bad = || Outcome::drop(Counter::DropBadIcmpQuote);
    let end = p.l3_end();
    let q = p.l4_off + 8;
    let (qsrc, qdst, qproto, ports_at) = if p.family == FAMILY_V4 {
        if q + 20 > end {
            return bad();
        }
        let ihl = usize::from(f[q] & 0x0f) * 4;
        if f[q] >> 4 != 4 || ihl < 20 {
            return bad();
        }
        let s = Ipv4Addr::new(f[q + 12], f[q + 13], f[q + 14], f[q + 15]);
        let d = Ipv4Addr::new(f[q + 16], f[q + 17], f[q + 18], f[q + 19]);
        (IpAddr::V4(s), IpAddr::V4(d), f[q + 9], q + ihl)
    } else {
        if q + 40 > end {
            return bad();
        }
        if f[q] >> 4 != 6 {
            return bad();
        }
        let s: [u8; 16] = f[q + 8..q + 24].try_into().expect("16 bytes");
        let d: [u8; 16] = f[q + 24..q + 40].try_into().expect("16 bytes");
        (
            IpAddr::V6(Ipv6Addr::from(s)),
            IpAddr::V6(Ipv6Addr::from(d)),
            f[q + 6],
            q + 40,
        )
    };
    if qsrc != p.dst {
        return bad();
    }
    if qproto != PROTO_TCP && qproto != PROTO_UDP {
        return Outcome::pass(Counter::Pass);
    }
    if ports_at + 4 > end {
        return bad();
    }
    let vip_port = u16::from_be_bytes([f[ports_at], f[ports_at + 1]]);
    let client_port = u16::from_be_bytes([f[ports_at + 2], f[ports_at + 3]]);
    let Some(vip) = vip_for(maps, cfg, qsrc, vip_port, qproto) else {
        return Outcome::pass(Counter::Pass);
    };
    let client_w = lb_common::addr::to_words(qdst).1;
    let vip_w = lb_common::addr::to_words(qsrc).1;
    let ports = ports_word(client_port.to_be(), vip_port.to_be());
    let hash = ring_hash(cfg, &vip, p, &client_w, &vip_w, ports, qproto);
    let key = lb_common::FlowKey {
        src: client_w,
        dst: vip_w,
        sport: client_port.to_be(),
        dport: vip_port.to_be(),
        proto: qproto,
        family: p.family,
        _pad: [0; 2],
    };
    let entropy = key.entropy(cfg.hash_seed);
    match choose(maps, cfg, &vip, &key, hash, Use::ReadOnly) {
        Ok((pick, _)) => {
            let mut o = forward(maps, cfg, f, p, &vip, &pick, entropy, false);
            if o.verdict == XDP_TX {
                o.detail = Some(Counter::IcmpErrorForwarded);
            }
            o
        }
        Err(n) => n.into(),
    }
}
