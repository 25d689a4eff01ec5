//! Packet builders: a [`Packet`] describes one test frame (Ethernet, optional 802.1Q tag, IPv4
//! with options or IPv6 with extension headers, TCP / UDP / ICMP / raw payload) and renders it
//! with valid lengths and checksums. Helpers at the end damage frames on purpose (truncation,
//! length fields).

use std::net::IpAddr;

use lb_common::{
    FlowKey,
    addr::{self, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP},
    hash,
};

use super::csum;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_ARP: u16 = 0x0806;

/// MAC of the client side next hop (source MAC of test frames).
pub const CLIENT_MAC: [u8; 6] = [0x02, 0xc1, 0x00, 0x00, 0x00, 0x01];
/// MAC of the load balancer's interface (destination MAC of test frames).
pub const LB_MAC: [u8; 6] = [0x02, 0x1b, 0x00, 0x00, 0x00, 0x01];

/// An IPv6 extension header. The `u8` of the variable-length kinds is the header's length field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ext {
    /// Hop-by-hop options, `(len + 1) * 8` bytes of Pad1.
    HopByHop(u8),
    /// Routing header (type 253, segments left 0), `(len + 1) * 8` bytes.
    Routing(u8),
    /// Destination options, `(len + 1) * 8` bytes.
    DestOpts(u8),
    /// Fragment header (8 bytes): offset in 8-byte units, M flag, identification.
    Fragment { offset: u16, more: bool, id: u32 },
    /// Authentication header, `(len + 2) * 4` bytes (`len >= 1`).
    Ah(u8),
}

impl Ext {
    pub fn number(&self) -> u8 {
        match self {
            Ext::HopByHop(_) => 0,
            Ext::Routing(_) => 43,
            Ext::DestOpts(_) => 60,
            Ext::Fragment { .. } => 44,
            Ext::Ah(_) => 51,
        }
    }

    pub fn len(&self) -> usize {
        match *self {
            Ext::HopByHop(l) | Ext::Routing(l) | Ext::DestOpts(l) => (usize::from(l) + 1) * 8,
            Ext::Fragment { .. } => 8,
            Ext::Ah(l) => (usize::from(l) + 2) * 4,
        }
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    fn render(&self, next: u8) -> Vec<u8> {
        let mut b = vec![0u8; self.len()];
        b[0] = next;
        match *self {
            Ext::HopByHop(l) | Ext::DestOpts(l) => b[1] = l,
            Ext::Routing(l) => {
                b[1] = l;
                b[2] = 253;
                b[3] = 0;
            }
            Ext::Fragment { offset, more, id } => {
                b[2..4].copy_from_slice(&((offset << 3) | u16::from(more)).to_be_bytes());
                b[4..8].copy_from_slice(&id.to_be_bytes());
            }
            Ext::Ah(l) => {
                b[1] = l;
                b[4..8].copy_from_slice(&0x0000_1234u32.to_be_bytes()); // SPI
                b[8..12].copy_from_slice(&1u32.to_be_bytes()); // sequence number
            }
        }
        b
    }
}

/// The transport part of a [`Packet`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum L4 {
    Tcp {
        sport: u16,
        dport: u16,
        flags: u8,
    },
    Udp {
        sport: u16,
        dport: u16,
    },
    /// ICMP echo request (ICMPv6 for an IPv6 packet).
    Echo {
        id: u16,
        seq: u16,
    },
    /// ICMP frag-needed (type 3 code 4, 16-bit next-hop MTU) for IPv4, ICMPv6 packet-too-big
    /// (type 2, 32-bit MTU) for IPv6, quoting `quoted` (an IP packet, usually cut short).
    TooBig {
        mtu: u32,
        quoted: Vec<u8>,
    },
    /// Any ICMP / ICMPv6 message: type, code, 4 bytes of rest-of-header; checksum filled in.
    Icmp {
        ty: u8,
        code: u8,
        rest: [u8; 4],
    },
    /// Opaque transport bytes (non-first fragments, other protocols): not checksummed.
    Raw {
        proto: u8,
    },
}

/// One test frame. Build with [`Packet::tcp`], [`Packet::udp`], ... and the chained setters;
/// render with [`Packet::frame`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    pub eth_dst: [u8; 6],
    pub eth_src: [u8; 6],
    /// 802.1Q TCI, if tagged.
    pub vlan: Option<u16>,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IPv4 TOS / IPv6 traffic class.
    pub tos: u8,
    /// TTL / hop limit.
    pub ttl: u8,
    /// IPv4 identification.
    pub ip_id: u16,
    /// IPv4 DF.
    pub df: bool,
    /// IPv4 fragment: offset in 8-byte units, MF.
    pub v4_frag: Option<(u16, bool)>,
    /// IPv4 options (length a multiple of 4, at most 40).
    pub v4_options: Vec<u8>,
    /// IPv6 extension headers, in order.
    pub v6_ext: Vec<Ext>,
    pub flow_label: u32,
    pub l4: L4,
    /// Bytes after the L4 header (ICMP echo data, TCP/UDP payload, fragment data for Raw).
    pub payload: Vec<u8>,
    /// Ethernet padding after the IP packet (not part of it).
    pub padding: usize,
}

/// Parses an address literal (test convenience).
pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|_| panic!("bad IP literal {s:?}"))
}

/// `n` deterministic payload bytes.
pub fn filler(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + 3) as u8).collect()
}

impl Packet {
    fn new(src: &str, dst: &str, l4: L4) -> Self {
        let (src, dst) = (ip(src), ip(dst));
        assert_eq!(
            src.is_ipv4(),
            dst.is_ipv4(),
            "mixed families {src} -> {dst}"
        );
        Packet {
            eth_dst: LB_MAC,
            eth_src: CLIENT_MAC,
            vlan: None,
            src,
            dst,
            tos: 0x28,
            ttl: 61,
            ip_id: 0x4d2e,
            df: true,
            v4_frag: None,
            v4_options: Vec::new(),
            v6_ext: Vec::new(),
            flow_label: 0x5_1234,
            l4,
            payload: filler(24),
            padding: 0,
        }
    }

    pub fn tcp(src: &str, sport: u16, dst: &str, dport: u16, flags: u8) -> Self {
        Self::new(
            src,
            dst,
            L4::Tcp {
                sport,
                dport,
                flags,
            },
        )
    }

    pub fn udp(src: &str, sport: u16, dst: &str, dport: u16) -> Self {
        Self::new(src, dst, L4::Udp { sport, dport })
    }

    pub fn echo(src: &str, dst: &str) -> Self {
        Self::new(src, dst, L4::Echo { id: 0x0b0e, seq: 7 })
    }

    /// An echo request with its own identifier and sequence number.
    pub fn echo_with(src: &str, dst: &str, id: u16, seq: u16) -> Self {
        Self::new(src, dst, L4::Echo { id, seq })
    }

    /// An ICMP frag-needed / packet-too-big from `router` to `dst`, quoting `quoted`.
    pub fn too_big(router: &str, dst: &str, mtu: u32, quoted: Vec<u8>) -> Self {
        let mut p = Self::new(router, dst, L4::TooBig { mtu, quoted });
        p.payload.clear();
        p
    }

    pub fn icmp(src: &str, dst: &str, ty: u8, code: u8) -> Self {
        Self::new(
            src,
            dst,
            L4::Icmp {
                ty,
                code,
                rest: [0; 4],
            },
        )
    }

    pub fn raw(src: &str, dst: &str, proto: u8) -> Self {
        Self::new(src, dst, L4::Raw { proto })
    }

    pub fn vlan(mut self, tci: u16) -> Self {
        self.vlan = Some(tci);
        self
    }
    pub fn payload(mut self, bytes: Vec<u8>) -> Self {
        self.payload = bytes;
        self
    }
    pub fn payload_len(self, n: usize) -> Self {
        self.payload(filler(n))
    }
    pub fn options(mut self, opts: Vec<u8>) -> Self {
        assert!(
            opts.len().is_multiple_of(4) && opts.len() <= 40,
            "IPv4 options: 4n <= 40 bytes"
        );
        self.v4_options = opts;
        self
    }
    pub fn ext(mut self, ext: Ext) -> Self {
        self.v6_ext.push(ext);
        self
    }
    pub fn frag_v4(mut self, offset: u16, more: bool) -> Self {
        self.v4_frag = Some((offset, more));
        self
    }
    pub fn padding(mut self, n: usize) -> Self {
        self.padding = n;
        self
    }
    pub fn ttl(mut self, ttl: u8) -> Self {
        self.ttl = ttl;
        self
    }
    pub fn tos(mut self, tos: u8) -> Self {
        self.tos = tos;
        self
    }
    pub fn df(mut self, df: bool) -> Self {
        self.df = df;
        self
    }
    pub fn ip_id(mut self, id: u16) -> Self {
        self.ip_id = id;
        self
    }
    pub fn macs(mut self, dst: [u8; 6], src: [u8; 6]) -> Self {
        self.eth_dst = dst;
        self.eth_src = src;
        self
    }

    pub fn is_v4(&self) -> bool {
        self.src.is_ipv4()
    }

    /// The protocol of the transport part (what the last next-header field names).
    pub fn proto(&self) -> u8 {
        match &self.l4 {
            L4::Tcp { .. } => PROTO_TCP,
            L4::Udp { .. } => PROTO_UDP,
            L4::Echo { .. } | L4::TooBig { .. } | L4::Icmp { .. } => {
                if self.is_v4() {
                    PROTO_ICMP
                } else {
                    PROTO_ICMPV6
                }
            }
            L4::Raw { proto } => *proto,
        }
    }

    /// Source and destination port in host order (0 for port-less protocols).
    pub fn ports(&self) -> (u16, u16) {
        match self.l4 {
            L4::Tcp { sport, dport, .. } | L4::Udp { sport, dport } => (sport, dport),
            _ => (0, 0),
        }
    }

    /// L2 header length (14, or 18 with a tag).
    pub fn l2_len(&self) -> usize {
        if self.vlan.is_some() { 18 } else { 14 }
    }

    /// IP header length including IPv4 options / IPv6 extension headers.
    pub fn ip_header_len(&self) -> usize {
        if self.is_v4() {
            20 + self.v4_options.len()
        } else {
            40 + self.v6_ext.iter().map(Ext::len).sum::<usize>()
        }
    }

    /// The transport bytes: header (checksum filled in where it has one) and payload.
    pub fn l4_bytes(&self) -> Vec<u8> {
        let proto = self.proto();
        let mut b = match &self.l4 {
            L4::Tcp {
                sport,
                dport,
                flags,
            } => {
                let mut h = vec![0u8; 20];
                h[0..2].copy_from_slice(&sport.to_be_bytes());
                h[2..4].copy_from_slice(&dport.to_be_bytes());
                h[4..8].copy_from_slice(&0x1122_3344u32.to_be_bytes());
                let ack = if flags & TCP_ACK != 0 {
                    0x5566_7788u32
                } else {
                    0
                };
                h[8..12].copy_from_slice(&ack.to_be_bytes());
                h[12] = 5 << 4;
                h[13] = *flags;
                h[14..16].copy_from_slice(&64240u16.to_be_bytes());
                h
            }
            L4::Udp { sport, dport } => {
                let mut h = vec![0u8; 8];
                h[0..2].copy_from_slice(&sport.to_be_bytes());
                h[2..4].copy_from_slice(&dport.to_be_bytes());
                h[4..6].copy_from_slice(&((8 + self.payload.len()) as u16).to_be_bytes());
                h
            }
            L4::Echo { id, seq } => {
                let ty = if self.is_v4() { 8 } else { 128 };
                let mut h = vec![ty, 0, 0, 0];
                h.extend_from_slice(&id.to_be_bytes());
                h.extend_from_slice(&seq.to_be_bytes());
                h
            }
            L4::TooBig { mtu, quoted } => {
                let mut h = if self.is_v4() {
                    let mut h = vec![3, 4, 0, 0, 0, 0];
                    h.extend_from_slice(&(*mtu as u16).to_be_bytes());
                    h
                } else {
                    let mut h = vec![2, 0, 0, 0];
                    h.extend_from_slice(&mtu.to_be_bytes());
                    h
                };
                h.extend_from_slice(quoted);
                h
            }
            L4::Icmp { ty, code, rest } => {
                let mut h = vec![*ty, *code, 0, 0];
                h.extend_from_slice(rest);
                h
            }
            L4::Raw { .. } => Vec::new(),
        };
        b.extend_from_slice(&self.payload);
        let csum_at = match (&self.l4, proto) {
            (L4::Tcp { .. }, _) => Some(16),
            (L4::Udp { .. }, _) => Some(6),
            (L4::Raw { .. }, _) => None,
            (_, PROTO_ICMP) => Some(2),
            _ => Some(2), // ICMPv6
        };
        if let Some(at) = csum_at {
            let c = if proto == PROTO_ICMP {
                csum::checksum(&b)
            } else {
                let c = csum::l4_checksum(self.src, self.dst, proto, &b);
                // UDP: a computed 0 is sent as all ones (RFC 768).
                if proto == PROTO_UDP && c == 0 {
                    0xffff
                } else {
                    c
                }
            };
            b[at..at + 2].copy_from_slice(&c.to_be_bytes());
        }
        b
    }

    /// The IP packet (IP header on; no L2, no padding).
    pub fn ip_bytes(&self) -> Vec<u8> {
        let l4 = self.l4_bytes();
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let hl = 20 + self.v4_options.len();
                let mut h = vec![0u8; hl];
                h[0] = 0x40 | (hl / 4) as u8;
                h[1] = self.tos;
                h[2..4].copy_from_slice(&((hl + l4.len()) as u16).to_be_bytes());
                h[4..6].copy_from_slice(&self.ip_id.to_be_bytes());
                let (off, mf) = self.v4_frag.unwrap_or((0, false));
                let ff = (u16::from(self.df) << 14) | (u16::from(mf) << 13) | (off & 0x1fff);
                h[6..8].copy_from_slice(&ff.to_be_bytes());
                h[8] = self.ttl;
                h[9] = self.proto();
                h[12..16].copy_from_slice(&s.octets());
                h[16..20].copy_from_slice(&d.octets());
                h[20..].copy_from_slice(&self.v4_options);
                let c = csum::checksum(&h);
                h[10..12].copy_from_slice(&c.to_be_bytes());
                h.extend_from_slice(&l4);
                h
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let mut ext = Vec::new();
                for (i, e) in self.v6_ext.iter().enumerate() {
                    let next = self.v6_ext.get(i + 1).map_or(self.proto(), Ext::number);
                    ext.extend_from_slice(&e.render(next));
                }
                let first = self.v6_ext.first().map_or(self.proto(), Ext::number);
                let mut h = vec![0u8; 40];
                let w = (6u32 << 28) | (u32::from(self.tos) << 20) | (self.flow_label & 0xf_ffff);
                h[0..4].copy_from_slice(&w.to_be_bytes());
                h[4..6].copy_from_slice(&((ext.len() + l4.len()) as u16).to_be_bytes());
                h[6] = first;
                h[7] = self.ttl;
                h[8..24].copy_from_slice(&s.octets());
                h[24..40].copy_from_slice(&d.octets());
                h.extend_from_slice(&ext);
                h.extend_from_slice(&l4);
                h
            }
            _ => unreachable!("families checked in Packet::new"),
        }
    }

    /// The whole frame: Ethernet (+ tag), IP packet, padding.
    pub fn frame(&self) -> Vec<u8> {
        let ethertype = if self.is_v4() { ETH_P_IP } else { ETH_P_IPV6 };
        let mut f = eth_header(self.eth_dst, self.eth_src, self.vlan, ethertype);
        f.extend_from_slice(&self.ip_bytes());
        f.extend(std::iter::repeat_n(0u8, self.padding));
        f
    }

    /// The flow-table key of this packet (client -> VIP).
    pub fn flow_key(&self) -> FlowKey {
        let (family, src) = addr::to_words(self.src);
        let (_, dst) = addr::to_words(self.dst);
        let (sport, dport) = self.ports();
        FlowKey {
            src,
            dst,
            sport: sport.to_be(),
            dport: dport.to_be(),
            proto: self.proto(),
            family,
            _pad: [0; 2],
        }
    }
}

/// Ethernet header (with an 802.1Q tag if `vlan` is set).
pub fn eth_header(dst: [u8; 6], src: [u8; 6], vlan: Option<u16>, ethertype: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(18);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    if let Some(tci) = vlan {
        f.extend_from_slice(&ETH_P_8021Q.to_be_bytes());
        f.extend_from_slice(&tci.to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

/// Hash of a flow as section 4 of docs/datapath.md defines it: `lb_common::hash::flow_hash`,
/// the program's own selection (5-tuple hash, or the source hash with `affinity`), from
/// addresses and host-order ports (give ports 0 for a fragment).
pub fn flow_hash(
    seed: u32,
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    proto: u8,
    affinity: bool,
) -> u32 {
    let (family, s) = addr::to_words(src);
    let (_, d) = addr::to_words(dst);
    let ports = hash::ports_word(sport.to_be(), dport.to_be());
    hash::flow_hash(seed, affinity, family, &s, &d, ports, proto)
}

impl Packet {
    /// This packet's flow entropy (docs/datapath.md section 5; ports 0 if it is a fragment).
    pub fn entropy(&self, seed: u32) -> u32 {
        let (sport, dport) = if self.is_fragment() {
            (0, 0)
        } else {
            self.ports()
        };
        let (_, s) = addr::to_words(self.src);
        let (_, d) = addr::to_words(self.dst);
        let ports = hash::ports_word(sport.to_be(), dport.to_be());
        hash::flow_entropy(seed, &s, &d, ports, self.proto())
    }

    /// This packet's flow hash (ports 0 if it is a fragment).
    pub fn hash(&self, seed: u32, affinity: bool) -> u32 {
        let (sport, dport) = if self.is_fragment() {
            (0, 0)
        } else {
            self.ports()
        };
        flow_hash(
            seed,
            self.src,
            self.dst,
            sport,
            dport,
            self.proto(),
            affinity,
        )
    }

    /// IPv4 MF or offset, or an IPv6 fragment header.
    pub fn is_fragment(&self) -> bool {
        match self.v4_frag {
            Some((off, more)) if self.is_v4() => off != 0 || more,
            _ => self
                .v6_ext
                .iter()
                .any(|e| matches!(e, Ext::Fragment { .. })),
        }
    }
}

/// Writes a big-endian u16 at `at`.
pub fn put_u16(frame: &mut [u8], at: usize, v: u16) {
    frame[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// Recomputes the IPv4 header checksum of the header at `l2` (after editing it).
pub fn fix_ipv4_checksum(frame: &mut [u8], l2: usize) {
    let hl = usize::from(frame[l2] & 0x0f) * 4;
    if frame.len() < l2 + hl.max(20) {
        return; // the header is cut short: nothing to sum
    }
    frame[l2 + 10..l2 + 12].fill(0);
    let c = csum::checksum(&frame[l2..l2 + hl]);
    frame[l2 + 10..l2 + 12].copy_from_slice(&c.to_be_bytes());
}

/// Cuts the frame to `len` bytes and makes the IP length field agree with the cut (IPv4 total
/// length, checksum fixed; IPv6 payload length), so the packet is "consistently" truncated:
/// short inside its extension or L4 header rather than shorter than its IP header claims.
pub fn truncate_consistently(frame: &[u8], l2: usize, len: usize) -> Vec<u8> {
    let mut f = frame[..len].to_vec();
    match f[l2] >> 4 {
        4 => {
            put_u16(&mut f, l2 + 2, (len - l2) as u16);
            fix_ipv4_checksum(&mut f, l2);
        }
        6 => put_u16(&mut f, l2 + 4, (len - l2 - 40) as u16),
        v => panic!("not an IP packet (version {v})"),
    }
    f
}

/// Bytes the program accounts for a frame in VIP/backend stats: L2 header + IP packet length,
/// Ethernet padding excluded (docs/datapath.md §5). Re-parsed from the frame on purpose.
pub fn accounted_bytes(frame: &[u8]) -> u64 {
    let be16 = |i: usize| u16::from_be_bytes([frame[i], frame[i + 1]]) as usize;
    let (l2, ethertype) = if be16(12) == 0x8100 {
        (18, be16(16))
    } else {
        (14, be16(12))
    };
    let l3 = match ethertype {
        0x0800 => be16(l2 + 2),
        0x86dd => 40 + be16(l2 + 4),
        _ => frame.len() - l2,
    };
    (l2 + l3) as u64
}

#[cfg(test)]
mod tests {
    use etherparse::{Ipv4HeaderSlice, TcpHeader, UdpHeader};

    use super::*;
    use crate::expect;

    fn v4(a: IpAddr) -> [u8; 4] {
        match a {
            IpAddr::V4(a) => a.octets(),
            IpAddr::V6(_) => unreachable!(),
        }
    }
    fn v6(a: IpAddr) -> [u8; 16] {
        match a {
            IpAddr::V6(a) => a.octets(),
            IpAddr::V4(_) => unreachable!(),
        }
    }

    /// The builders' checksums agree with etherparse's (an independent implementation).
    #[test]
    fn builder_checksums_agree_with_etherparse() {
        let tcp4 = Packet::tcp("198.51.100.7", 40000, "192.0.2.10", 80, TCP_SYN)
            .options(vec![1, 1, 1, 0])
            .payload_len(33);
        let ip = tcp4.ip_bytes();
        let h = Ipv4HeaderSlice::from_slice(&ip).unwrap();
        assert_eq!(h.to_header().calc_header_checksum(), h.header_checksum());
        let (th, payload) = TcpHeader::from_slice(&ip[24..]).unwrap();
        let want = th
            .calc_checksum_ipv4_raw(v4(tcp4.src), v4(tcp4.dst), payload)
            .unwrap();
        assert_eq!(th.checksum, want);

        let udp6 = Packet::udp("2001:db8:c::7", 5353, "2001:db8::10", 53)
            .ext(Ext::HopByHop(0))
            .payload_len(17);
        let ip = udp6.ip_bytes();
        let (uh, payload) = UdpHeader::from_slice(&ip[48..]).unwrap();
        let want = uh
            .calc_checksum_ipv6_raw(v6(udp6.src), v6(udp6.dst), payload)
            .unwrap();
        assert_eq!(uh.checksum, want);

        for p in [
            Packet::echo("198.51.100.7", "192.0.2.10"),
            Packet::echo("2001:db8:c::7", "2001:db8::10").vlan(3),
            Packet::too_big(
                "203.0.113.1",
                "192.0.2.10",
                1400,
                tcp4.ip_bytes()[..28].to_vec(),
            ),
        ] {
            let f = p.frame();
            assert!(expect::etherparse_checksum_problems(&f).is_empty(), "{p:?}");
            assert!(expect::etherparse_checksum_problems(&expect::echo_reply(&f)).is_empty());
        }
    }

    #[test]
    fn fragments_hash_with_ports_zero() {
        let first = Packet::udp("198.51.100.7", 1, "192.0.2.10", 2).frag_v4(0, true);
        let mid = Packet::raw("198.51.100.7", "192.0.2.10", PROTO_UDP).frag_v4(3, false);
        assert!(first.is_fragment() && mid.is_fragment());
        assert_eq!(first.hash(9, false), mid.hash(9, false));
        let whole = Packet::udp("198.51.100.7", 1, "192.0.2.10", 2);
        assert_ne!(whole.hash(9, false), first.hash(9, false));
    }

    #[test]
    fn consistent_truncation_fixes_lengths() {
        let p = Packet::tcp("198.51.100.7", 1, "192.0.2.10", 80, TCP_ACK).vlan(1);
        let f = truncate_consistently(&p.frame(), 18, 18 + 30);
        assert_eq!(u16::from_be_bytes([f[20], f[21]]), 30);
        assert!(csum::verifies(&f[18..38]));
    }
}
