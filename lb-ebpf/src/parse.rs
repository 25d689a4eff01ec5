//! Header parsing: frame bytes (read through `frame`) to the plain values the rest of the
//! program works with.

use aya_ebpf::programs::XdpContext;
use lb_common::{
    addr::{AddrWords, FAMILY_V4, FAMILY_V6, PROTO_TCP, PROTO_UDP},
    limits::MAX_IPV6_EXT_HEADERS,
    stats::Counter,
};

use crate::{
    frame::{self, header, read},
    hdr::*,
};

/// The link layer of a frame. The MACs are not in it: forwarding writes new ones, and only the
/// paths that answer or decapsulate read the old ones (`macs`), so the fast path skips them.
#[derive(Clone, Copy)]
pub struct L2 {
    /// 14, or 18 with an 802.1Q tag.
    pub len: usize,
    /// EtherType after the tag, host order.
    pub proto: u16,
    /// Network-order TCI of the tag, if `len == 18`.
    pub vlan_tci: u16,
}

/// Destination and source MAC of the frame, read before anything rewrites the head.
#[derive(Clone, Copy)]
pub struct Macs {
    pub dst: [u8; 6],
    pub src: [u8; 6],
}

#[inline(always)]
pub fn macs(ctx: &XdpContext) -> Option<Macs> {
    let eth = header::<EthHdr>(ctx, 0)?;
    Some(Macs {
        dst: eth.dst,
        src: eth.src,
    })
}

/// Ethernet and at most one 802.1Q tag; `None` if the frame is shorter than that. Headers are
/// read field by field in place (`frame::header`), never copied whole.
#[inline(always)]
pub fn ethernet(ctx: &XdpContext) -> Option<L2> {
    let eth = header::<EthHdr>(ctx, 0)?;
    let mut l2 = L2 {
        len: ETH_LEN,
        proto: u16::from_be(eth.proto),
        vlan_tci: 0,
    };
    if l2.proto == ETH_P_8021Q {
        let vlan = header::<VlanHdr>(ctx, ETH_LEN)?;
        l2.len = ETH_LEN + VLAN_LEN;
        l2.proto = u16::from_be(vlan.proto);
        l2.vlan_tci = vlan.tci;
    }
    Some(l2)
}

/// An IP packet as far as the program cares.
#[derive(Clone, Copy)]
pub struct Packet {
    pub family: u8,
    pub src: AddrWords,
    pub dst: AddrWords,
    /// Offset of the IP header in the frame (= L2 length).
    pub l3_off: usize,
    /// IP packet length (IPv4 total length, 40 + IPv6 payload length).
    pub l3_len: usize,
    /// Upper-layer protocol, after any IPv6 extension headers.
    pub proto: u8,
    /// Offset of the upper-layer header.
    pub l4_off: usize,
    /// Fragment of a larger datagram (first or not).
    pub frag: bool,
    /// TOS / traffic class.
    pub tos: u8,
    /// IPv4 identification (network order) and DF flag; 0 / false for IPv6.
    pub ip_id: u16,
    pub df: bool,
    /// IPv4 total length / IPv6 payload length, host order, checked by `ip_rest`.
    raw_len_field: u16,
    /// IPv4 version-IHL byte / IPv6 `vtc_flow` word (host order), checked by `ip_rest`.
    raw_first: u32,
}

/// The fixed IP header: enough to know source and destination. `None` if the frame is too short.
#[inline(always)]
pub fn ip_fixed(ctx: &XdpContext, l2: &L2) -> Option<Packet> {
    if l2.proto == ETH_P_IP {
        let ip = header::<Ipv4Hdr>(ctx, l2.len)?;
        let frag_off = u16::from_be(ip.frag_off);
        Some(Packet {
            family: FAMILY_V4,
            src: [ip.src, 0, 0, 0],
            dst: [ip.dst, 0, 0, 0],
            l3_off: l2.len,
            l3_len: 0,
            proto: ip.proto,
            l4_off: 0,
            frag: frag_off & (IPV4_MF | IPV4_OFFSET_MASK) != 0,
            tos: ip.tos,
            ip_id: ip.id,
            df: frag_off & IPV4_DF != 0,
            raw_len_field: u16::from_be(ip.tot_len),
            raw_first: ip.ver_ihl as u32,
        })
    } else {
        let ip = header::<Ipv6Hdr>(ctx, l2.len)?;
        let vtc = u32::from_be(ip.vtc_flow);
        Some(Packet {
            family: FAMILY_V6,
            src: ip.src,
            dst: ip.dst,
            l3_off: l2.len,
            l3_len: 0,
            proto: ip.next_hdr,
            l4_off: 0,
            frag: false,
            tos: (vtc >> 20) as u8,
            ip_id: 0,
            df: false,
            raw_len_field: u16::from_be(ip.payload_len),
            raw_first: vtc,
        })
    }
}

/// Validates the rest of the IP header and finds the upper-layer header. The error is the drop
/// reason should the packet turn out to be VIP traffic.
#[inline(always)]
pub fn ip_rest(ctx: &XdpContext, pkt: &mut Packet) -> Result<(), Counter> {
    if pkt.family == FAMILY_V4 {
        let ihl = (pkt.raw_first & 0x0f) as usize * 4;
        let total = pkt.raw_len_field as usize;
        if pkt.raw_first >> 4 != 4
            || ihl < IPV4_LEN
            || total < ihl
            || !frame::holds(ctx, pkt.l3_off + total)
        {
            return Err(Counter::DropBadHeader);
        }
        pkt.l3_len = total;
        pkt.l4_off = pkt.l3_off + ihl;
        Ok(())
    } else {
        let total = pkt.raw_len_field as usize + IPV6_LEN;
        if pkt.raw_first >> 28 != 6
            || pkt.raw_len_field == 0
            || !frame::holds(ctx, pkt.l3_off + total)
        {
            return Err(Counter::DropBadHeader);
        }
        pkt.l3_len = total;
        ipv6_ext_headers(ctx, pkt)
    }
}

#[inline(always)]
fn is_ipv6_ext(nh: u8) -> bool {
    matches!(
        nh,
        IPV6_NH_HOP | IPV6_NH_ROUTING | IPV6_NH_DEST | IPV6_NH_AH | IPV6_NH_FRAGMENT
    )
}

/// Walks up to `MAX_IPV6_EXT_HEADERS` extension headers. A fragment header ends the walk: what
/// follows it belongs to the fragmentable part, present only in the first fragment.
#[inline(always)]
fn ipv6_ext_headers(ctx: &XdpContext, pkt: &mut Packet) -> Result<(), Counter> {
    let end = pkt.l3_off + pkt.l3_len;
    let mut off = pkt.l3_off + IPV6_LEN;
    let mut nh = pkt.proto;
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        if !is_ipv6_ext(nh) {
            break;
        }
        if nh == IPV6_NH_FRAGMENT {
            let f: Ipv6FragHdr = read(ctx, off).ok_or(Counter::DropTruncated)?;
            nh = f.next_hdr;
            off += IPV6_FRAG_LEN;
            pkt.frag = true;
            break;
        }
        let e: Ipv6ExtHdr = read(ctx, off).ok_or(Counter::DropTruncated)?;
        let len = if nh == IPV6_NH_AH {
            (e.len as usize + 2) * 4
        } else {
            (e.len as usize + 1) * 8
        };
        nh = e.next_hdr;
        off += len;
        if off > end {
            return Err(Counter::DropTruncated);
        }
    }
    if !pkt.frag && is_ipv6_ext(nh) {
        return Err(Counter::DropTooManyExtHeaders);
    }
    if off > end {
        return Err(Counter::DropTruncated);
    }
    pkt.proto = nh;
    pkt.l4_off = off;
    Ok(())
}

/// Ports and TCP flags of a TCP/UDP packet.
#[derive(Clone, Copy)]
pub struct L4 {
    /// Network order.
    pub sport: u16,
    /// Network order.
    pub dport: u16,
    /// TCP flags byte (0 for UDP).
    pub tcp_flags: u8,
}

/// TCP needs its 20-byte header and a data offset inside the segment; UDP its 8 bytes and a
/// length field equal to the IP payload's (docs/datapath.md §3). A header that lies about its
/// own length is no packet any stack sends, and the backend's stack would read it otherwise
/// than this program did.
#[inline(always)]
pub fn l4(ctx: &XdpContext, pkt: &Packet) -> Result<L4, Counter> {
    let end = pkt.l3_off + pkt.l3_len;
    if pkt.proto == PROTO_TCP {
        if pkt.l4_off + TCP_LEN > end {
            return Err(Counter::DropTruncated);
        }
        let t: TcpHdr = read(ctx, pkt.l4_off).ok_or(Counter::DropTruncated)?;
        let data_off = (t.off_flags >> 4) as usize * 4;
        if data_off < TCP_LEN || pkt.l4_off + data_off > end {
            return Err(Counter::DropBadHeader);
        }
        Ok(L4 {
            sport: t.sport,
            dport: t.dport,
            tcp_flags: t.flags,
        })
    } else if pkt.proto == PROTO_UDP {
        if pkt.l4_off + UDP_LEN > end {
            return Err(Counter::DropTruncated);
        }
        let u: UdpHdr = read(ctx, pkt.l4_off).ok_or(Counter::DropTruncated)?;
        if u16::from_be(u.len) as usize != end - pkt.l4_off {
            return Err(Counter::DropBadHeader);
        }
        Ok(L4 {
            sport: u.sport,
            dport: u.dport,
            tcp_flags: 0,
        })
    } else {
        Err(Counter::Pass)
    }
}

/// The ICMP header of an ICMP / ICMPv6 packet.
#[inline(always)]
pub fn icmp(ctx: &XdpContext, pkt: &Packet) -> Result<IcmpHdr, Counter> {
    if pkt.l4_off + ICMP_LEN > pkt.l3_off + pkt.l3_len {
        return Err(Counter::DropTruncated);
    }
    read(ctx, pkt.l4_off).ok_or(Counter::DropTruncated)
}

/// The flow an ICMP error is about, read from the packet it quotes (sent by the VIP toward the
/// client). Returned as (client, vip, client port, vip port, proto), all ports network order.
pub struct Quoted {
    pub client: AddrWords,
    pub vip: AddrWords,
    pub client_port: u16,
    pub vip_port: u16,
    pub proto: u8,
}

/// Parses the quoted IP header (IPv4 with IHL, or the fixed IPv6 header) and its ports, all
/// inside the error's IP packet. The error is the verdict's reason: `DropBadIcmpQuote` for a
/// quote that cannot name a VIP flow (the other IP version, cut short, a bad IHL, or a quoted
/// source other than the address the error is sent to, which no router produces), `Pass` for
/// a well-formed quote of another protocol than TCP/UDP.
#[inline(always)]
pub fn icmp_quote(ctx: &XdpContext, pkt: &Packet) -> Result<Quoted, Counter> {
    const BAD: Counter = Counter::DropBadIcmpQuote;
    let off = pkt.l4_off + ICMP_LEN;
    let end = pkt.l3_off + pkt.l3_len;
    let (client, vip, proto, ports_off) = if pkt.family == FAMILY_V4 {
        if off + IPV4_LEN > end {
            return Err(BAD);
        }
        let ip: Ipv4Hdr = read(ctx, off).ok_or(BAD)?;
        let ihl = (ip.ver_ihl & 0x0f) as usize * 4;
        if ip.ver_ihl >> 4 != 4 || ihl < IPV4_LEN {
            return Err(BAD);
        }
        ([ip.dst, 0, 0, 0], [ip.src, 0, 0, 0], ip.proto, off + ihl)
    } else {
        if off + IPV6_LEN > end {
            return Err(BAD);
        }
        let ip: Ipv6Hdr = read(ctx, off).ok_or(BAD)?;
        if u32::from_be(ip.vtc_flow) >> 28 != 6 {
            return Err(BAD);
        }
        (ip.dst, ip.src, ip.next_hdr, off + IPV6_LEN)
    };
    if vip != pkt.dst {
        return Err(BAD);
    }
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return Err(Counter::Pass);
    }
    if ports_off + PORTS_LEN > end {
        return Err(BAD);
    }
    let ports: Ports = read(ctx, ports_off).ok_or(BAD)?;
    Ok(Quoted {
        client,
        vip,
        client_port: ports.dport,
        vip_port: ports.sport,
        proto,
    })
}
