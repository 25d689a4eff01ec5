//! Expected outputs, built from docs/datapath.md sections 5 and 6 (not from the program), and
//! comparisons that explain a mismatch field by field.

use std::{
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use lb_common::{
    Backend, LbConfig,
    addr::{self, PROTO_ICMP, PROTO_ICMPV6, PROTO_IPIP, PROTO_IPV6, PROTO_UDP},
    limits::ICMP_QUOTE_LEN,
    values::{MODE_DSR_L2, MODE_GUE, MODE_IPIP},
};

use super::{csum, packet};

/// What a test needs to know about a well-formed input frame, read straight from its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameInfo {
    pub l2_len: usize,
    pub vlan: Option<u16>,
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    pub v4: bool,
    /// IPv4 total length, or 40 + IPv6 payload length.
    pub l3_len: usize,
    pub ip_header_len: usize,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// TOS / traffic class.
    pub tos: u8,
    /// TTL / hop limit.
    pub ttl: u8,
    /// IPv4 identification (0 for IPv6).
    pub id: u16,
    /// IPv4 DF (false for IPv6).
    pub df: bool,
}

impl FrameInfo {
    /// Parses an Ethernet (+ one tag) IPv4/IPv6 frame. Panics on anything else: only for inputs
    /// the test built as well-formed.
    pub fn parse(f: &[u8]) -> Self {
        let mut l2 = 14;
        let mut et = u16::from_be_bytes([f[12], f[13]]);
        let mut vlan = None;
        if et == packet::ETH_P_8021Q {
            vlan = Some(u16::from_be_bytes([f[14], f[15]]));
            et = u16::from_be_bytes([f[16], f[17]]);
            l2 = 18;
        }
        let ip = &f[l2..];
        let mut info = FrameInfo {
            l2_len: l2,
            vlan,
            dst_mac: f[0..6].try_into().unwrap(),
            src_mac: f[6..12].try_into().unwrap(),
            v4: et == packet::ETH_P_IP,
            l3_len: 0,
            ip_header_len: 0,
            src: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            dst: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            tos: 0,
            ttl: 0,
            id: 0,
            df: false,
        };
        match et {
            packet::ETH_P_IP => {
                info.ip_header_len = usize::from(ip[0] & 0x0f) * 4;
                info.tos = ip[1];
                info.l3_len = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
                info.id = u16::from_be_bytes([ip[4], ip[5]]);
                info.df = ip[6] & 0x40 != 0;
                info.ttl = ip[8];
                info.src = IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(&ip[12..16]).unwrap()));
                info.dst = IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(&ip[16..20]).unwrap()));
            }
            packet::ETH_P_IPV6 => {
                let w = u32::from_be_bytes(ip[0..4].try_into().unwrap());
                info.ip_header_len = 40;
                info.tos = (w >> 20) as u8;
                info.l3_len = 40 + usize::from(u16::from_be_bytes([ip[4], ip[5]]));
                info.ttl = ip[7];
                info.src = IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&ip[8..24]).unwrap()));
                info.dst = IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&ip[24..40]).unwrap()));
            }
            other => panic!("FrameInfo::parse: EtherType {other:#06x} is not IP"),
        }
        info
    }

    /// The IP packet (L3 length from the IP header on, padding excluded).
    pub fn ip<'a>(&self, frame: &'a [u8]) -> &'a [u8] {
        &frame[self.l2_len..self.l2_len + self.l3_len]
    }
}

/// Outer header bytes `mode` adds for a backend of this family (section 5), DSR 0.
pub fn overhead(mode: u8, backend_v4: bool) -> usize {
    let ip = if backend_v4 { 20 } else { 40 };
    match mode {
        MODE_IPIP => ip,
        MODE_GUE => ip + 8,
        _ => 0,
    }
}

fn backend_ip(b: &Backend) -> IpAddr {
    addr::from_words(b.family, &b.addr).expect("backend with a valid family")
}

/// GUE source port of a flow's entropy (section 5).
pub fn gue_sport(entropy: u32) -> u16 {
    0xc000 | (entropy & 0x3fff) as u16
}

/// The frame the program must transmit when it forwards `input` to `backend` with `mode`, the
/// flow's entropy being `entropy` (`lb_common::hash::flow_entropy`; docs/datapath.md section 5).
pub fn forwarded(
    input: &[u8],
    cfg: &LbConfig,
    backend: &Backend,
    mode: u8,
    entropy: u32,
) -> Vec<u8> {
    let info = FrameInfo::parse(input);
    let inner = info.ip(input);
    let l3 = inner.len();
    let b_ip = backend_ip(backend);
    let outer_v4 = b_ip.is_ipv4();
    let ethertype = match mode {
        MODE_DSR_L2 => {
            if info.v4 {
                packet::ETH_P_IP
            } else {
                packet::ETH_P_IPV6
            }
        }
        _ if outer_v4 => packet::ETH_P_IP,
        _ => packet::ETH_P_IPV6,
    };
    let mut out = packet::eth_header(backend.mac, cfg.src_mac, info.vlan, ethertype);
    let gue = mode == MODE_GUE;
    let udp_len = if gue { 8 } else { 0 };
    match mode {
        MODE_DSR_L2 => {}
        MODE_IPIP | MODE_GUE => {
            let proto = if gue {
                PROTO_UDP
            } else if info.v4 {
                PROTO_IPIP
            } else {
                PROTO_IPV6
            };
            if outer_v4 {
                assert!(info.v4, "spec: an IPv4 backend carries only IPv4 VIPs");
                let mut h = [0u8; 20];
                h[0] = 0x45;
                h[1] = info.tos;
                h[2..4].copy_from_slice(&((l3 + 20 + udp_len) as u16).to_be_bytes());
                h[4..6].copy_from_slice(&info.id.to_be_bytes());
                h[6] = if info.df { 0x40 } else { 0 };
                h[8] = cfg.outer_ttl;
                h[9] = proto;
                h[12..16].copy_from_slice(&cfg.src_v4.to_ne_bytes());
                h[16..20].copy_from_slice(&backend.addr[0].to_ne_bytes());
                let c = csum::checksum(&h);
                h[10..12].copy_from_slice(&c.to_be_bytes());
                out.extend_from_slice(&h);
            } else {
                let mut h = [0u8; 40];
                let w = (6u32 << 28) | (u32::from(info.tos) << 20) | (entropy & 0xf_ffff);
                h[0..4].copy_from_slice(&w.to_be_bytes());
                h[4..6].copy_from_slice(&((l3 + udp_len) as u16).to_be_bytes());
                h[6] = proto;
                h[7] = cfg.outer_ttl;
                for (i, w) in cfg.src_v6.iter().enumerate() {
                    h[8 + 4 * i..12 + 4 * i].copy_from_slice(&w.to_ne_bytes());
                }
                for (i, w) in backend.addr.iter().enumerate() {
                    h[24 + 4 * i..28 + 4 * i].copy_from_slice(&w.to_ne_bytes());
                }
                out.extend_from_slice(&h);
            }
            if gue {
                out.extend_from_slice(&gue_sport(entropy).to_be_bytes());
                out.extend_from_slice(&cfg.gue_port.to_ne_bytes());
                out.extend_from_slice(&((l3 + 8) as u16).to_be_bytes());
                out.extend_from_slice(&[0, 0]);
            }
        }
        m => panic!("no expected output for unknown mode {m}"),
    }
    out.extend_from_slice(inner);
    out
}

/// The ICMP frag-needed / packet-too-big reply to `input` (section 5, "Too big").
pub fn too_big_reply(input: &[u8], mtu: u16, overhead: usize) -> Vec<u8> {
    let info = FrameInfo::parse(input);
    let quote = &info.ip(input)[..ICMP_QUOTE_LEN];
    let next_mtu = u32::from(mtu) - overhead as u32;
    let ethertype = if info.v4 {
        packet::ETH_P_IP
    } else {
        packet::ETH_P_IPV6
    };
    let mut out = packet::eth_header(info.src_mac, info.dst_mac, info.vlan, ethertype);
    let mut icmp = Vec::with_capacity(8 + ICMP_QUOTE_LEN);
    if info.v4 {
        icmp.extend_from_slice(&[3, 4, 0, 0, 0, 0]);
        icmp.extend_from_slice(&(next_mtu as u16).to_be_bytes());
    } else {
        icmp.extend_from_slice(&[2, 0, 0, 0]);
        icmp.extend_from_slice(&next_mtu.to_be_bytes());
    }
    icmp.extend_from_slice(quote);
    match (info.dst, info.src) {
        (IpAddr::V4(vip), IpAddr::V4(client)) => {
            let c = csum::checksum(&icmp);
            icmp[2..4].copy_from_slice(&c.to_be_bytes());
            let mut h = [0u8; 20];
            h[0] = 0x45;
            h[2..4].copy_from_slice(&((20 + icmp.len()) as u16).to_be_bytes());
            h[8] = 64;
            h[9] = PROTO_ICMP;
            h[12..16].copy_from_slice(&vip.octets());
            h[16..20].copy_from_slice(&client.octets());
            let c = csum::checksum(&h);
            h[10..12].copy_from_slice(&c.to_be_bytes());
            out.extend_from_slice(&h);
        }
        (IpAddr::V6(vip), IpAddr::V6(client)) => {
            let c = csum::l4_checksum(vip.into(), client.into(), PROTO_ICMPV6, &icmp);
            icmp[2..4].copy_from_slice(&c.to_be_bytes());
            let mut h = [0u8; 40];
            h[0] = 0x60;
            h[4..6].copy_from_slice(&(icmp.len() as u16).to_be_bytes());
            h[6] = PROTO_ICMPV6;
            h[7] = 64;
            h[8..24].copy_from_slice(&vip.octets());
            h[24..40].copy_from_slice(&client.octets());
            out.extend_from_slice(&h);
        }
        _ => unreachable!(),
    }
    out.extend_from_slice(&icmp);
    out
}

/// The echo reply to the echo request `input` (section 6): MACs and addresses swapped, TTL 64,
/// type 0 / 129, checksums valid, Ethernet padding removed; everything else unchanged.
pub fn echo_reply(input: &[u8]) -> Vec<u8> {
    let info = FrameInfo::parse(input);
    let mut out = input[..info.l2_len + info.l3_len].to_vec();
    out[0..6].copy_from_slice(&info.src_mac);
    out[6..12].copy_from_slice(&info.dst_mac);
    let l2 = info.l2_len;
    let hl = info.ip_header_len;
    if info.v4 {
        let (s, d) = (
            out[l2 + 12..l2 + 16].to_vec(),
            out[l2 + 16..l2 + 20].to_vec(),
        );
        out[l2 + 12..l2 + 16].copy_from_slice(&d);
        out[l2 + 16..l2 + 20].copy_from_slice(&s);
        out[l2 + 8] = 64;
        packet::fix_ipv4_checksum(&mut out, l2);
        let icmp = l2 + hl..l2 + info.l3_len;
        out[icmp.start] = 0;
        out[icmp.start + 2..icmp.start + 4].fill(0);
        let c = csum::checksum(&out[icmp.clone()]);
        out[icmp.start + 2..icmp.start + 4].copy_from_slice(&c.to_be_bytes());
    } else {
        let (s, d) = (
            out[l2 + 8..l2 + 24].to_vec(),
            out[l2 + 24..l2 + 40].to_vec(),
        );
        out[l2 + 8..l2 + 24].copy_from_slice(&d);
        out[l2 + 24..l2 + 40].copy_from_slice(&s);
        out[l2 + 7] = 64;
        // The ICMPv6 message follows the fixed header (echo requests in tests carry no
        // extension headers).
        let icmp = l2 + 40..l2 + info.l3_len;
        out[icmp.start] = 129;
        out[icmp.start + 2..icmp.start + 4].fill(0);
        let c = csum::l4_checksum(info.dst, info.src, PROTO_ICMPV6, &out[icmp.clone()]);
        out[icmp.start + 2..icmp.start + 4].copy_from_slice(&c.to_be_bytes());
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Field-by-field description and comparison.

/// A named field of a dissected frame, e.g. `("outer.ip4.ttl", "64")`.
pub type Field = (String, String);

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn mac(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Dissects a frame into named fields (Ethernet, tag, IP, UDP/ICMP headers, encapsulated IP
/// headers, and the remaining bytes), with checksum validity computed by this test kit.
pub fn dissect(frame: &[u8]) -> Vec<Field> {
    let mut f: Vec<Field> = Vec::new();
    let mut push = |k: &str, v: String| f.push((k.to_string(), v));
    push("frame.len", frame.len().to_string());
    if frame.len() < 14 {
        push("frame.bytes", hex(frame));
        return f;
    }
    push("eth.dst", mac(&frame[0..6]));
    push("eth.src", mac(&frame[6..12]));
    let mut et = u16::from_be_bytes([frame[12], frame[13]]);
    let mut off = 14;
    if et == packet::ETH_P_8021Q && frame.len() >= 18 {
        push(
            "vlan.tci",
            format!("{:#06x}", u16::from_be_bytes([frame[14], frame[15]])),
        );
        et = u16::from_be_bytes([frame[16], frame[17]]);
        off = 18;
    }
    push("eth.type", format!("{et:#06x}"));
    let version = match et {
        packet::ETH_P_IP => 4,
        packet::ETH_P_IPV6 => 6,
        _ => 0,
    };
    dissect_ip(&frame[off..], version, "ip", 0, &mut f);
    f
}

fn dissect_ip(b: &[u8], version: u8, pfx: &str, depth: usize, f: &mut Vec<Field>) {
    let mut push = |k: &str, v: String| f.push((format!("{pfx}.{k}"), v));
    if version == 4 && b.len() >= 20 {
        let hl = usize::from(b[0] & 0x0f) * 4;
        push("version", (b[0] >> 4).to_string());
        push("ihl", (b[0] & 0x0f).to_string());
        push("tos", format!("{:#04x}", b[1]));
        let total = usize::from(u16::from_be_bytes([b[2], b[3]]));
        push("total_len", total.to_string());
        push("id", format!("{:#06x}", u16::from_be_bytes([b[4], b[5]])));
        let ff = u16::from_be_bytes([b[6], b[7]]);
        push("flags", format!("DF={} MF={}", ff >> 14 & 1, ff >> 13 & 1));
        push("frag_offset", (ff & 0x1fff).to_string());
        push("ttl", b[8].to_string());
        push("proto", b[9].to_string());
        let valid = hl >= 20 && b.len() >= hl && csum::verifies(&b[..hl]);
        push(
            "checksum",
            format!(
                "{:#06x} ({})",
                u16::from_be_bytes([b[10], b[11]]),
                ok(valid)
            ),
        );
        push(
            "src",
            Ipv4Addr::from(<[u8; 4]>::try_from(&b[12..16]).unwrap()).to_string(),
        );
        push(
            "dst",
            Ipv4Addr::from(<[u8; 4]>::try_from(&b[16..20]).unwrap()).to_string(),
        );
        if hl > 20 && b.len() >= hl {
            push("options", hex(&b[20..hl]));
        }
        let end = total.clamp(hl.min(b.len()), b.len());
        let src: IpAddr = Ipv4Addr::from(<[u8; 4]>::try_from(&b[12..16]).unwrap()).into();
        let dst: IpAddr = Ipv4Addr::from(<[u8; 4]>::try_from(&b[16..20]).unwrap()).into();
        dissect_l4(&b[hl.min(b.len())..end], b[9], src, dst, pfx, depth, f);
        if b.len() > end {
            f.push(("trailer".into(), hex(&b[end..])));
        }
    } else if version == 6 && b.len() >= 40 {
        let w = u32::from_be_bytes(b[0..4].try_into().unwrap());
        push("version", (w >> 28).to_string());
        push("traffic_class", format!("{:#04x}", (w >> 20) as u8));
        push("flow_label", format!("{:#07x}", w & 0xf_ffff));
        let plen = usize::from(u16::from_be_bytes([b[4], b[5]]));
        push("payload_len", plen.to_string());
        push("next_header", b[6].to_string());
        push("hop_limit", b[7].to_string());
        let src = Ipv6Addr::from(<[u8; 16]>::try_from(&b[8..24]).unwrap());
        let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&b[24..40]).unwrap());
        push("src", src.to_string());
        push("dst", dst.to_string());
        let end = (40 + plen).min(b.len());
        dissect_l4(&b[40..end], b[6], src.into(), dst.into(), pfx, depth, f);
        if b.len() > end {
            f.push(("trailer".into(), hex(&b[end..])));
        }
    } else {
        push("bytes", hex(b));
    }
}

fn ok(valid: bool) -> &'static str {
    if valid { "valid" } else { "INVALID" }
}

fn dissect_l4(
    b: &[u8],
    proto: u8,
    src: IpAddr,
    dst: IpAddr,
    pfx: &str,
    depth: usize,
    f: &mut Vec<Field>,
) {
    let inner = format!("{pfx}.inner");
    match proto {
        PROTO_IPIP if depth == 0 => return dissect_ip(b, 4, &inner, 1, f),
        PROTO_IPV6 if depth == 0 => return dissect_ip(b, 6, &inner, 1, f),
        PROTO_UDP if b.len() >= 8 => {
            let mut push = |k: &str, v: String| f.push((format!("{pfx}.udp.{k}"), v));
            push("sport", u16::from_be_bytes([b[0], b[1]]).to_string());
            push("dport", u16::from_be_bytes([b[2], b[3]]).to_string());
            push("len", u16::from_be_bytes([b[4], b[5]]).to_string());
            push(
                "checksum",
                format!("{:#06x}", u16::from_be_bytes([b[6], b[7]])),
            );
            let rest = &b[8..];
            // GUE variant 1: an IP packet right after the UDP header.
            if depth == 0 && !rest.is_empty() && (rest[0] >> 4 == 4 || rest[0] >> 4 == 6) {
                return dissect_ip(rest, rest[0] >> 4, &inner, 1, f);
            }
            f.push((format!("{pfx}.payload"), hex(rest)));
            return;
        }
        PROTO_ICMP | PROTO_ICMPV6 if b.len() >= 8 => {
            let valid = if proto == PROTO_ICMP {
                csum::verifies(b)
            } else {
                csum::finish(csum::sum(
                    b,
                    csum::pseudo_header(src, dst, proto, b.len() as u32),
                )) == 0
            };
            let mut push = |k: &str, v: String| f.push((format!("{pfx}.icmp.{k}"), v));
            push("type", b[0].to_string());
            push("code", b[1].to_string());
            push(
                "checksum",
                format!("{:#06x} ({})", u16::from_be_bytes([b[2], b[3]]), ok(valid)),
            );
            push("rest_of_header", hex(&b[4..8]));
            f.push((format!("{pfx}.icmp.data"), hex(&b[8..])));
            return;
        }
        _ => {}
    }
    f.push((format!("{pfx}.payload"), hex(b)));
}

/// Compares two frames. `None` if they are identical; otherwise a readable report: the fields
/// that differ (expected vs actual), then the first differing byte offset.
pub fn diff_frames(expected: &[u8], actual: &[u8]) -> Option<String> {
    if expected == actual {
        return None;
    }
    let e = dissect(expected);
    let a = dissect(actual);
    let mut out = String::new();
    for (k, ev) in &e {
        match a.iter().find(|(ak, _)| ak == k) {
            Some((_, av)) if av == ev => {}
            Some((_, av)) => {
                let _ = writeln!(out, "  {k}: expected {}, got {}", short(ev), short(av));
            }
            None => {
                let _ = writeln!(out, "  {k}: expected {}, missing in output", short(ev));
            }
        }
    }
    for (k, av) in &a {
        if !e.iter().any(|(ek, _)| ek == k) {
            let _ = writeln!(out, "  {k}: unexpected in output ({})", short(av));
        }
    }
    let first = expected
        .iter()
        .zip(actual)
        .position(|(x, y)| x != y)
        .unwrap_or(expected.len().min(actual.len()));
    let _ = writeln!(
        out,
        "  first differing byte at offset {first} (expected {} bytes, got {})",
        expected.len(),
        actual.len()
    );
    Some(out)
}

fn short(v: &str) -> String {
    if v.len() > 72 {
        format!("{}…({} hex chars)", &v[..64], v.len())
    } else {
        v.to_string()
    }
}

/// Checks every IPv4 header checksum and ICMP checksum of a frame with etherparse (a second,
/// independent implementation). Returns the problems found.
pub fn etherparse_checksum_problems(frame: &[u8]) -> Vec<String> {
    use etherparse::{Icmpv4Slice, Icmpv6Slice, Ipv4HeaderSlice};
    let mut problems = Vec::new();
    let info = FrameInfo::parse(frame);
    let mut ip = &frame[info.l2_len..];
    // Walk at most two IP headers (outer and encapsulated).
    for _ in 0..2 {
        if ip.is_empty() {
            break;
        }
        match ip[0] >> 4 {
            4 => {
                let Ok(h) = Ipv4HeaderSlice::from_slice(ip) else {
                    problems.push("etherparse could not parse an IPv4 header".into());
                    break;
                };
                let hdr = h.to_header();
                if hdr.calc_header_checksum() != h.header_checksum() {
                    problems.push(format!(
                        "IPv4 header checksum {:#06x}, etherparse computes {:#06x}",
                        h.header_checksum(),
                        hdr.calc_header_checksum()
                    ));
                }
                let hl = h.slice().len();
                let total = usize::from(h.total_len()).min(ip.len());
                let payload = &ip[hl..total];
                match h.protocol().0 {
                    PROTO_ICMP => {
                        if let Ok(icmp) = Icmpv4Slice::from_slice(payload) {
                            let want = icmp.icmp_type().calc_checksum(icmp.payload());
                            if want != icmp.checksum() {
                                problems.push(format!(
                                    "ICMP checksum {:#06x}, etherparse computes {want:#06x}",
                                    icmp.checksum()
                                ));
                            }
                        }
                        break;
                    }
                    PROTO_UDP if payload.len() > 8 => ip = &payload[8..],
                    PROTO_IPIP | PROTO_IPV6 => ip = payload,
                    _ => break,
                }
            }
            6 if ip.len() >= 40 => {
                let plen = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
                let payload = &ip[40..(40 + plen).min(ip.len())];
                match ip[6] {
                    PROTO_ICMPV6 => {
                        if let Ok(icmp) = Icmpv6Slice::from_slice(payload) {
                            let src: [u8; 16] = ip[8..24].try_into().unwrap();
                            let dst: [u8; 16] = ip[24..40].try_into().unwrap();
                            if !icmp.is_checksum_valid(src, dst) {
                                problems.push(format!(
                                    "ICMPv6 checksum {:#06x} is invalid (etherparse)",
                                    icmp.checksum()
                                ));
                            }
                        }
                        break;
                    }
                    PROTO_UDP if payload.len() > 8 => ip = &payload[8..],
                    PROTO_IPIP | PROTO_IPV6 => ip = payload,
                    _ => break,
                }
            }
            _ => break,
        }
    }
    problems
}
