//! Wire formats of the headers the program reads and writes.
//!
//! `packed(2)`: every header starts at an even offset (Ethernet is 14 bytes, IPv4 options and
//! IPv6 extension headers come in multiples of 4 and 8), but not always at a multiple of 4, so
//! 32-bit fields may only be assumed 2-byte aligned. All multi-byte fields hold network byte order.

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86DD;
pub const ETH_P_8021Q: u16 = 0x8100;

pub const IPV4_DF: u16 = 0x4000;
pub const IPV4_MF: u16 = 0x2000;
pub const IPV4_OFFSET_MASK: u16 = 0x1fff;

pub const TCP_FLAG_SYN: u8 = 0x02;
pub const TCP_FLAG_ACK: u8 = 0x10;

pub const IPV6_NH_HOP: u8 = 0;
pub const IPV6_NH_ROUTING: u8 = 43;
pub const IPV6_NH_FRAGMENT: u8 = 44;
pub const IPV6_NH_AH: u8 = 51;
pub const IPV6_NH_DEST: u8 = 60;

pub const ICMP_ECHO_REPLY: u8 = 0;
pub const ICMP_DEST_UNREACH: u8 = 3;
pub const ICMP_FRAG_NEEDED: u8 = 4;
pub const ICMP_ECHO_REQUEST: u8 = 8;
pub const ICMPV6_PACKET_TOO_BIG: u8 = 2;
pub const ICMPV6_ECHO_REQUEST: u8 = 128;
pub const ICMPV6_ECHO_REPLY: u8 = 129;

/// TTL / hop limit of packets the program originates (echo and too-big replies).
pub const REPLY_TTL: u8 = 64;

#[repr(C, packed(2))]
#[derive(Clone, Copy)]
pub struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub proto: u16,
}
pub const ETH_LEN: usize = 14;

/// The 4 bytes an 802.1Q tag inserts before the inner EtherType.
#[repr(C, packed(2))]
#[derive(Clone, Copy)]
pub struct VlanHdr {
    pub tci: u16,
    pub proto: u16,
}
pub const VLAN_LEN: usize = 4;

#[repr(C, packed(2))]
#[derive(Clone, Copy)]
pub struct Ipv4Hdr {
    pub ver_ihl: u8,
    pub tos: u8,
    pub tot_len: u16,
    pub id: u16,
    pub frag_off: u16,
    pub ttl: u8,
    pub proto: u8,
    pub check: u16,
    pub src: u32,
    pub dst: u32,
}
pub const IPV4_LEN: usize = 20;

#[repr(C, packed(2))]
#[derive(Clone, Copy)]
pub struct Ipv6Hdr {
    /// Version (4 bits), traffic class (8), flow label (20).
    pub vtc_flow: u32,
    pub payload_len: u16,
    pub next_hdr: u8,
    pub hop_limit: u8,
    pub src: [u32; 4],
    pub dst: [u32; 4],
}
pub const IPV6_LEN: usize = 40;

/// The generic extension header prefix (hop-by-hop, routing, destination options, AH).
#[repr(C, packed(2))]
#[derive(Clone, Copy)]
pub struct Ipv6ExtHdr {
    pub next_hdr: u8,
    pub len: u8,
}

#[repr(C, packed(2))]
#[derive(Clone, Copy)]
pub struct Ipv6FragHdr {
    pub next_hdr: u8,
    pub _reserved: u8,
    /// Offset (13 bits) << 3 | M flag.
    pub off_m: u16,
    pub ident: u32,
}
pub const IPV6_FRAG_LEN: usize = 8;

#[repr(C, packed(2))]
#[derive(Clone, Copy)]
pub struct TcpHdr {
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub off_flags: u8,
    pub flags: u8,
    pub window: u16,
    pub check: u16,
    pub urg: u16,
}
pub const TCP_LEN: usize = 20;

#[repr(C, packed(2))]
#[derive(Clone, Copy)]
pub struct UdpHdr {
    pub sport: u16,
    pub dport: u16,
    pub len: u16,
    pub check: u16,
}
pub const UDP_LEN: usize = 8;

/// ICMP and ICMPv6 share this layout; `rest` is the type-specific word (echo id/seq, MTU...).
#[repr(C, packed(2))]
#[derive(Clone, Copy)]
pub struct IcmpHdr {
    pub kind: u8,
    pub code: u8,
    pub check: u16,
    pub rest: [u16; 2],
}
pub const ICMP_LEN: usize = 8;

/// The first 4 bytes of TCP and UDP: what an ICMP error quotes at least.
#[repr(C, packed(2))]
#[derive(Clone, Copy)]
pub struct Ports {
    pub sport: u16,
    pub dport: u16,
}
pub const PORTS_LEN: usize = 4;
