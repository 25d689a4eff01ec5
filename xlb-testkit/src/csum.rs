//! RFC 1071 Internet checksum, written from the RFC for the test kit: expected outputs are
//! checked with this code (and cross-checked with etherparse), never with bytes the program made.

use std::net::IpAddr;

/// One's-complement sum of `data` as big-endian 16-bit words (an odd last byte is padded with
/// zero), added to `acc`. Not folded.
pub fn sum(data: &[u8], mut acc: u64) -> u64 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u64::from(u16::from_be_bytes([*last, 0]));
    }
    acc
}

/// Folds a sum to 16 bits and complements it: the value to store in a checksum field.
pub fn finish(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// Checksum of `data` (e.g. an IPv4 header with its checksum field zeroed, or ICMPv4).
pub fn checksum(data: &[u8]) -> u16 {
    finish(sum(data, 0))
}

/// Whether `data`, checksum field included, sums to all ones (a valid checksum).
pub fn verifies(data: &[u8]) -> bool {
    finish(sum(data, 0)) == 0
}

/// Sum of the TCP/UDP/ICMPv6 pseudo-header for `src`, `dst` (same family), `proto` and the
/// upper-layer length.
pub fn pseudo_header(src: IpAddr, dst: IpAddr, proto: u8, len: u32) -> u64 {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let acc = sum(&s.octets(), 0);
            let acc = sum(&d.octets(), acc);
            acc + u64::from(proto) + u64::from(len)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let acc = sum(&s.octets(), 0);
            let acc = sum(&d.octets(), acc);
            acc + u64::from(len >> 16) + u64::from(len & 0xffff) + u64::from(proto)
        }
        _ => panic!("pseudo header of mixed families {src} -> {dst}"),
    }
}

/// Checksum of an upper-layer message (checksum field zeroed) with its pseudo-header.
pub fn l4_checksum(src: IpAddr, dst: IpAddr, proto: u8, l4: &[u8]) -> u16 {
    finish(sum(l4, pseudo_header(src, dst, proto, l4.len() as u32)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: the sum of these words is ddf2, the checksum its complement.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(finish(sum(&data, 0)), !0xddf2);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(checksum(&[0x12]), !0x1200);
    }
}
