//! Addresses as the maps store them: four `u32` words holding the address bytes in network order
//! (so the XDP program copies them straight from the packet). IPv4 uses word 0; words 1..3 are 0.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Address family tag stored next to every address (`family` fields).
pub const FAMILY_V4: u8 = 4;
/// See [`FAMILY_V4`].
pub const FAMILY_V6: u8 = 6;

/// IP protocol numbers used in keys.
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_IPIP: u8 = 4;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_IPV6: u8 = 41;
pub const PROTO_ICMPV6: u8 = 58;

/// Map representation of an IP address: network-order bytes viewed as native `u32` words.
pub type AddrWords = [u32; 4];

/// `(family, words)` for an address, as keys and values store it.
pub fn to_words(ip: IpAddr) -> (u8, AddrWords) {
    match ip {
        IpAddr::V4(v4) => (FAMILY_V4, [u32::from_ne_bytes(v4.octets()), 0, 0, 0]),
        IpAddr::V6(v6) => {
            let o = v6.octets();
            let mut w = [0u32; 4];
            let mut i = 0;
            while i < 4 {
                w[i] = u32::from_ne_bytes([o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]]);
                i += 1;
            }
            (FAMILY_V6, w)
        }
    }
}

/// Inverse of [`to_words`]; `None` for an unknown family (e.g. a zeroed, unused entry).
pub fn from_words(family: u8, w: &AddrWords) -> Option<IpAddr> {
    match family {
        FAMILY_V4 => Some(IpAddr::V4(Ipv4Addr::from(w[0].to_ne_bytes()))),
        FAMILY_V6 => {
            let mut o = [0u8; 16];
            for (i, word) in w.iter().enumerate() {
                o[4 * i..4 * i + 4].copy_from_slice(&word.to_ne_bytes());
            }
            Some(IpAddr::V6(Ipv6Addr::from(o)))
        }
        _ => None,
    }
}

/// Whether `src` is a source address no host can send from (docs/datapath.md §2, "martian
/// sources"): IPv4 0.0.0.0/8, 127.0.0.0/8, 224.0.0.0/4 (multicast) and 255.255.255.255; IPv6
/// `::`, `::1`, ff00::/8 (multicast) and ::ffff:0:0/96 (IPv4-mapped, which RFC 4291 §2.5.5.2
/// keeps off the wire). A VIP address as the source is martian too, but that takes a map
/// lookup, so the program checks it beside this rule. Pure arithmetic on the words: the
/// program calls it for every packet to a VIP address.
#[inline(always)]
pub fn is_martian_source(family: u8, src: &AddrWords) -> bool {
    if family == FAMILY_V4 {
        let o = src[0].to_ne_bytes();
        o[0] == 0 || o[0] == 127 || o[0] & 0xf0 == 0xe0 || src[0] == u32::MAX
    } else {
        let first = src[0].to_ne_bytes();
        let mapped = src[0] == 0 && src[1] == 0 && src[2] == u32::from_ne_bytes([0, 0, 0xff, 0xff]);
        let low = src[0] == 0 && src[1] == 0 && src[2] == 0;
        let one = u32::from_ne_bytes([0, 0, 0, 1]);
        first[0] == 0xff || mapped || (low && (src[3] == 0 || src[3] == one))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip() {
        for ip in ["192.0.2.7", "2001:db8::1:2", "203.0.113.255", "::"] {
            let ip: IpAddr = ip.parse().unwrap();
            let (f, w) = to_words(ip);
            assert_eq!(from_words(f, &w), Some(ip));
        }
        assert_eq!(from_words(0, &[0; 4]), None);
    }

    #[test]
    fn martian_sources_match_the_standard_library_classes() {
        let martian = |s: &str| {
            let (f, w) = to_words(s.parse().unwrap());
            is_martian_source(f, &w)
        };
        for s in [
            "0.0.0.0",
            "0.1.2.3",
            "127.0.0.1",
            "127.255.255.255",
            "224.0.0.1",
            "239.255.255.255",
            "255.255.255.255",
            "::",
            "::1",
            "ff02::1",
            "ff0e::1:2",
            "::ffff:192.0.2.1",
        ] {
            assert!(martian(s), "{s} is martian");
        }
        for s in [
            "1.0.0.0",
            "126.255.255.255",
            "128.0.0.1",
            "223.255.255.255",
            "240.0.0.1",
            "255.255.255.254",
            "192.0.2.1",
            "::2",
            "::192.0.2.1",
            "2001:db8::1",
            "fe80::1",
            "feff::1",
            "::fffe:192.0.2.1",
        ] {
            assert!(!martian(s), "{s} is not martian");
        }
    }

    #[test]
    fn v4_word_holds_network_order_bytes() {
        let (_, w) = to_words("192.0.2.1".parse().unwrap());
        assert_eq!(w[0].to_ne_bytes(), [192, 0, 2, 1]);
        assert_eq!(&w[1..], &[0, 0, 0]);
    }
}
