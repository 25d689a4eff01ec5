//! The model's reading of a frame (docs/datapath.md §2), written from the document.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lb_common::{
    addr::{self, AddrWords, FAMILY_V4, FAMILY_V6},
    stats::Counter,
};

/// Why parsing stopped, and what the document says about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// Before the destination is known: `PASS` with this counter.
    Pass(Counter),
    /// After: a drop with this counter if the destination is a VIP address, else `PASS`, `Pass`.
    Malformed(Counter),
}

/// An IP packet as §2 describes it.
#[derive(Clone, Debug)]
pub struct Parsed {
    pub l2_len: usize,
    pub family: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub src_w: AddrWords,
    pub dst_w: AddrWords,
    /// IPv4 total length or 40 + IPv6 payload length.
    pub l3_len: usize,
    /// Upper-layer protocol after any extension headers.
    pub proto: u8,
    /// Frame offset of the upper-layer header.
    pub l4_off: usize,
    pub frag: bool,
}

impl Parsed {
    pub fn l3_end(&self) -> usize {
        self.l2_len + self.l3_len
    }
}

fn be16(f: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*f.get(at)?, *f.get(at + 1)?]))
}

/// The fixed header (enough to know the destination), §2's first rules.
pub fn fixed(f: &[u8]) -> Result<Parsed, Stop> {
    let malformed = Stop::Pass(Counter::PassMalformed);
    let mut l2 = 14;
    let mut et = be16(f, 12).ok_or(malformed)?;
    if et == 0x8100 {
        et = be16(f, 16).ok_or(malformed)?;
        l2 = 18;
    }
    let ip = match et {
        0x0800 => f.get(l2..l2 + 20).ok_or(malformed)?,
        0x86dd => f.get(l2..l2 + 40).ok_or(malformed)?,
        _ => return Err(Stop::Pass(Counter::Pass)),
    };
    let (family, src, dst, proto) = if et == 0x0800 {
        let s = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
        let d = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
        (FAMILY_V4, IpAddr::V4(s), IpAddr::V4(d), ip[9])
    } else {
        let s: [u8; 16] = ip[8..24].try_into().expect("16 bytes");
        let d: [u8; 16] = ip[24..40].try_into().expect("16 bytes");
        (
            FAMILY_V6,
            IpAddr::V6(Ipv6Addr::from(s)),
            IpAddr::V6(Ipv6Addr::from(d)),
            ip[6],
        )
    };
    Ok(Parsed {
        l2_len: l2,
        family,
        src,
        dst,
        src_w: addr::to_words(src).1,
        dst_w: addr::to_words(dst).1,
        l3_len: 0,
        proto,
        l4_off: 0,
        frag: false,
    })
}

/// The rest of §2 for a packet to a (possible) VIP address: header checks, IPv6 extension
/// headers, the L3 length.
pub fn rest(f: &[u8], p: &mut Parsed) -> Result<(), Stop> {
    let l2 = p.l2_len;
    let after_l2 = f.len() - l2;
    if p.family == FAMILY_V4 {
        let ver = f[l2] >> 4;
        let ihl = usize::from(f[l2] & 0x0f) * 4;
        let total = usize::from(be16(f, l2 + 2).expect("fixed header"));
        if ver != 4 || ihl < 20 || total < ihl || total > after_l2 {
            return Err(Stop::Malformed(Counter::DropBadHeader));
        }
        p.l3_len = total;
        p.l4_off = l2 + ihl;
        let frag_field = be16(f, l2 + 6).expect("fixed header");
        p.frag = frag_field & 0x3fff != 0;
        return Ok(());
    }
    let ver = f[l2] >> 4;
    let plen = usize::from(be16(f, l2 + 4).expect("fixed header"));
    if ver != 6 || plen == 0 || 40 + plen > after_l2 {
        return Err(Stop::Malformed(Counter::DropBadHeader));
    }
    p.l3_len = 40 + plen;
    let end = p.l3_end();
    let mut off = l2 + 40;
    let mut nh = p.proto;
    let is_ext = |n: u8| matches!(n, 0 | 43 | 60 | 44 | 51);
    let mut walked = 0;
    while is_ext(nh) {
        if walked == lb_common::limits::MAX_IPV6_EXT_HEADERS {
            return Err(Stop::Malformed(Counter::DropTooManyExtHeaders));
        }
        walked += 1;
        // An extension header cut short: by the L3 end (its bytes are not the packet's past it).
        if off + 2 > end {
            return Err(Stop::Malformed(Counter::DropTruncated));
        }
        if nh == 44 {
            if off + 8 > end {
                return Err(Stop::Malformed(Counter::DropTruncated));
            }
            nh = f[off];
            off += 8;
            p.frag = true;
            break;
        }
        let len = if nh == 51 {
            (usize::from(f[off + 1]) + 2) * 4
        } else {
            (usize::from(f[off + 1]) + 1) * 8
        };
        nh = f[off];
        off += len;
        if off > end {
            return Err(Stop::Malformed(Counter::DropTruncated));
        }
    }
    p.proto = nh;
    p.l4_off = off;
    Ok(())
}

/// §2 "Martian sources", the address classes (the VIP-address case is the caller's).
pub fn martian_class(src: IpAddr) -> bool {
    match src {
        IpAddr::V4(a) => {
            a.octets()[0] == 0 || a.is_loopback() || a.is_multicast() || a.is_broadcast()
        }
        IpAddr::V6(a) => {
            a.is_unspecified()
                || a.is_loopback()
                || a.is_multicast()
                || a.segments()[..6] == [0, 0, 0, 0, 0, 0xffff]
        }
    }
}
