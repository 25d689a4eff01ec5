//! The flow hash. The XDP program, `xlb inspect explain` and the test kit all call these
//! functions (and [`flow_hash`], which picks among them), so a flow's ring slot can be predicted
//! from userspace; the seed comes from the config so every node with the same config picks the
//! same backend for the same flow.
//!
//! Construction: MurmurHash3's 32-bit block mixing and finaliser over a fixed number of words,
//! with the seed as the initial state. Cheap in BPF (no loops after unrolling, no tables) and
//! well distributed over the low bits used for `% RING_SIZE`.

use crate::addr::{AddrWords, FAMILY_V4};
use crate::limits::{ADDR_FILTER_BITS, RING_SIZE};

const C1: u32 = 0xcc9e_2d51;
const C2: u32 = 0x1b87_3593;

#[inline(always)]
const fn mix(h: u32, k: u32) -> u32 {
    let k = k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
    (h ^ k)
        .rotate_left(13)
        .wrapping_mul(5)
        .wrapping_add(0xe654_6b64)
}

#[inline(always)]
const fn finish(h: u32, len_bytes: u32) -> u32 {
    let mut h = h ^ len_bytes;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// Keyed hash of `N` words.
#[inline(always)]
pub fn hash_words<const N: usize>(seed: u32, words: &[u32; N]) -> u32 {
    let mut h = seed;
    let mut i = 0;
    while i < N {
        h = mix(h, words[i]);
        i += 1;
    }
    finish(h, (N as u32) * 4)
}

/// The L4 ports as one word, as read from the packet (both network order).
#[inline(always)]
pub const fn ports_word(sport_be: u16, dport_be: u16) -> u32 {
    (sport_be as u32) | ((dport_be as u32) << 16)
}

/// Hash of an IPv4 5-tuple (ports 0 for fragments).
#[inline(always)]
pub fn flow_hash_v4(seed: u32, src: u32, dst: u32, ports: u32, proto: u8) -> u32 {
    hash_words(seed, &[src, dst, ports, proto as u32])
}

/// Hash of an IPv6 5-tuple (ports 0 for fragments).
#[inline(always)]
pub fn flow_hash_v6(seed: u32, src: &AddrWords, dst: &AddrWords, ports: u32, proto: u8) -> u32 {
    hash_words(
        seed,
        &[
            src[0],
            src[1],
            src[2],
            src[3],
            dst[0],
            dst[1],
            dst[2],
            dst[3],
            ports,
            proto as u32,
        ],
    )
}

/// Source-affinity hash: the client address alone.
#[inline(always)]
pub fn src_hash_v4(seed: u32, src: u32) -> u32 {
    hash_words(seed, &[src])
}

/// Source-affinity hash for IPv6 clients.
#[inline(always)]
pub fn src_hash_v6(seed: u32, src: &AddrWords) -> u32 {
    hash_words(seed, src)
}

/// The ring hash of a flow (docs/datapath.md section 4): with `src_affinity` (the VIP's
/// `VIP_F_SRC_AFFINITY`) the client address alone, else the 5-tuple; IPv4 for `FAMILY_V4`, IPv6
/// otherwise. `ports` is `ports_word(sport, dport)` (0 for fragments). The one definition of
/// which hash a flow takes, so kernel and tooling cannot drift apart.
#[inline(always)]
pub fn flow_hash(
    seed: u32,
    src_affinity: bool,
    family: u8,
    src: &AddrWords,
    dst: &AddrWords,
    ports: u32,
    proto: u8,
) -> u32 {
    match (src_affinity, family == FAMILY_V4) {
        (true, true) => src_hash_v4(seed, src[0]),
        (true, false) => src_hash_v6(seed, src),
        (false, true) => flow_hash_v4(seed, src[0], dst[0], ports, proto),
        (false, false) => flow_hash_v6(seed, src, dst, ports, proto),
    }
}

/// Entropy of a flow for the outer headers (GUE source port, IPv6 flow label; docs/datapath.md
/// section 5) and for its flow-table set. It only has to be stable per flow and spread over its
/// low 20 bits, and it runs for every TCP/UDP packet, so it is as cheap as that allows: each
/// address folded to one word, each field multiplied by its own 64-bit odd constant (a 64-bit
/// product carries every input bit into the upper half, so fields that differ only in their
/// top byte, like addresses of one /24 in network order, still differ after the fold), the
/// halves folded, one 32-bit avalanche. No rotations: BPF has no rotate instruction. Ports are
/// 0 for fragments, as in the ring hash.
#[inline(always)]
pub const fn flow_entropy(
    seed: u32,
    src: &AddrWords,
    dst: &AddrWords,
    ports: u32,
    proto: u8,
) -> u32 {
    let s = (src[0] ^ src[1] ^ src[2] ^ src[3]) as u64;
    let d = (dst[0] ^ dst[1] ^ dst[2] ^ dst[3]) as u64;
    let h = (seed as u64 | (proto as u64) << 32)
        ^ s.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ d.wrapping_mul(0xc2b2_ae3d_27d4_eb4f)
        ^ (ports as u64).wrapping_mul(0x1656_67b1_9e37_79f9);
    avalanche((h ^ (h >> 32)) as u32)
}

/// A 32-bit integer mixer (xor-shift / multiply, two rounds): every input bit moves about half
/// of the output bits.
#[inline(always)]
const fn avalanche(x: u32) -> u32 {
    let mut x = x ^ (x >> 16);
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^ (x >> 16)
}

/// Ring slot of a hash.
#[inline(always)]
pub const fn ring_slot(hash: u32) -> u32 {
    hash % RING_SIZE
}

/// Bit of the VIP address pre-filter for a destination address. Unkeyed: it only has to spread
/// the few VIP addresses; a collision costs one hash lookup, never a wrong verdict.
#[inline(always)]
pub const fn addr_filter_bit(addr: &AddrWords) -> u32 {
    let x = addr[0] ^ addr[1].rotate_left(8) ^ addr[2].rotate_left(16) ^ addr[3].rotate_left(24);
    let x = x.wrapping_mul(0x9e37_79b1);
    (x >> 16) % ADDR_FILTER_BITS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_values_pin_the_hash() {
        // Changing the hash moves every flow on a rolling upgrade: these values must not change
        // without a MAP_LAYOUT_VERSION bump and a release note.
        assert_eq!(hash_words(0, &[]), 0);
        assert_eq!(flow_hash_v4(0, 0, 0, 0, 0), flow_hash_v4(0, 0, 0, 0, 0));
        let h = flow_hash_v4(
            0x1234_5678,
            u32::from_ne_bytes([192, 0, 2, 1]),
            u32::from_ne_bytes([203, 0, 113, 10]),
            ports_word(40000u16.to_be(), 80u16.to_be()),
            6,
        );
        assert_eq!(h, GOLDEN_V4);
    }
    // MurmurHash3_x86_32 (reference implementation) of the bytes 192.0.2.1, 203.0.113.10,
    // 40000 and 80 big-endian, then 6 as little-endian u32, seed 0x12345678.
    const GOLDEN_V4: u32 = 220_644_946;

    #[test]
    fn entropy_golden_value_and_fields() {
        // Changing it moves flows between fabric paths on an upgrade (never between backends):
        // keep it stable unless there is a reason.
        let src = [u32::from_ne_bytes([198, 51, 100, 7]), 0, 0, 0];
        let dst = [u32::from_ne_bytes([203, 0, 113, 10]), 0, 0, 0];
        let ports = ports_word(999u16.to_be(), 80u16.to_be());
        let base = flow_entropy(0x1234_5678, &src, &dst, ports, 6);
        assert_eq!(base, GOLDEN_ENTROPY, "{base:#x}");
        assert_ne!(base, flow_entropy(0x1234_5679, &src, &dst, ports, 6));
        assert_ne!(base, flow_entropy(0x1234_5678, &dst, &src, ports, 6));
        assert_ne!(base, flow_entropy(0x1234_5678, &src, &dst, ports + 1, 6));
        assert_ne!(base, flow_entropy(0x1234_5678, &src, &dst, ports, 17));
        for w in 0..4 {
            let mut other = src;
            other[w] ^= 1;
            assert_ne!(base, flow_entropy(0x1234_5678, &other, &dst, ports, 6));
        }
    }
    // Computed independently (Python, the same definition) for 198.51.100.7:999 -> 203.0.113.10:80.
    const GOLDEN_ENTROPY: u32 = 0xa4d2_30fa;

    #[test]
    fn entropy_spreads_over_the_gue_port_bits() {
        // 16384 client ports of one client: the 14 bits of the GUE source port must take
        // nearly as many values as a uniform draw (1 - 1/e of 16384, about 10356).
        let src = [u32::from_ne_bytes([198, 51, 100, 7]), 0, 0, 0];
        let dst = [u32::from_ne_bytes([203, 0, 113, 10]), 0, 0, 0];
        let mut seen = [0u64; 16384 / 64];
        for p in 0..16384u16 {
            let ports = ports_word((1024 + p).to_be(), 443u16.to_be());
            let v = (flow_entropy(7, &src, &dst, ports, 6) & 0x3fff) as usize;
            seen[v / 64] |= 1 << (v % 64);
        }
        let distinct: u32 = seen.iter().map(|w| w.count_ones()).sum();
        assert!(distinct > 10_000, "{distinct} distinct values");
    }

    #[test]
    fn entropy_spreads_flows_that_differ_in_a_top_byte() {
        // 512 VIPs of one /24 (in network order the last address byte is the word's top byte)
        // on three ports, one client: 4096 flow-table sets must fill like a uniform draw
        // (4096 * (1 - e^(-512/4096)), about 481 distinct).
        let src = [u32::from_ne_bytes([198, 51, 100, 7]), 0, 0, 0];
        let mut seen = [0u64; 4096 / 64];
        for i in 0..512u32 {
            let dst = [
                u32::from_ne_bytes([203, 0, 113, 1 + (i % 250) as u8]),
                0,
                0,
                0,
            ];
            let ports = ports_word(999u16.to_be(), (80 + (i / 250) as u16).to_be());
            let v = (flow_entropy(7, &src, &dst, ports, 6) & 4095) as usize;
            seen[v / 64] |= 1 << (v % 64);
        }
        let distinct: u32 = seen.iter().map(|w| w.count_ones()).sum();
        assert!(distinct >= 450, "{distinct} distinct slots");
    }

    #[test]
    fn flow_hash_picks_by_affinity_and_family() {
        use crate::addr::FAMILY_V6;
        let (s, d) = ([1, 2, 3, 4], [5, 6, 7, 8]);
        assert_eq!(
            flow_hash(7, false, FAMILY_V4, &s, &d, 9, 6),
            flow_hash_v4(7, 1, 5, 9, 6)
        );
        assert_eq!(
            flow_hash(7, false, FAMILY_V6, &s, &d, 9, 6),
            flow_hash_v6(7, &s, &d, 9, 6)
        );
        assert_eq!(
            flow_hash(7, true, FAMILY_V4, &s, &d, 9, 6),
            src_hash_v4(7, 1)
        );
        assert_eq!(
            flow_hash(7, true, FAMILY_V6, &s, &d, 9, 6),
            src_hash_v6(7, &s)
        );
        // Source affinity: one client, one hash, whatever the destination and ports.
        assert_eq!(
            flow_hash(7, true, FAMILY_V4, &s, &[9; 4], 1, 17),
            flow_hash(7, true, FAMILY_V4, &s, &d, 9, 6)
        );
    }

    #[test]
    fn seed_changes_the_hash() {
        let a = flow_hash_v4(1, 10, 20, 30, 6);
        let b = flow_hash_v4(2, 10, 20, 30, 6);
        assert_ne!(a, b);
    }

    #[test]
    fn every_field_matters() {
        let base = flow_hash_v6(7, &[1, 2, 3, 4], &[5, 6, 7, 8], 9, 17);
        assert_ne!(base, flow_hash_v6(7, &[1, 2, 3, 5], &[5, 6, 7, 8], 9, 17));
        assert_ne!(base, flow_hash_v6(7, &[1, 2, 3, 4], &[5, 6, 7, 9], 9, 17));
        assert_ne!(base, flow_hash_v6(7, &[1, 2, 3, 4], &[5, 6, 7, 8], 10, 17));
        assert_ne!(base, flow_hash_v6(7, &[1, 2, 3, 4], &[5, 6, 7, 8], 9, 6));
    }

    #[test]
    fn slots_spread_evenly_over_sequential_clients() {
        // 100k clients on consecutive addresses and ports, 16 buckets of the ring: each bucket
        // within 3% of the mean.
        const BUCKETS: usize = 16;
        let mut count = [0u32; BUCKETS];
        let n = 100_000u32;
        for i in 0..n {
            let src = u32::from_ne_bytes([198, 51, (i >> 8) as u8, i as u8]);
            let sport = (1024 + (i % 50_000)) as u16;
            let h = flow_hash_v4(
                42,
                src,
                0x0a00_0001,
                ports_word(sport.to_be(), 80u16.to_be()),
                6,
            );
            count[(ring_slot(h) as usize * BUCKETS) / RING_SIZE as usize] += 1;
        }
        let mean = n as f64 / BUCKETS as f64;
        for c in count {
            assert!((c as f64 - mean).abs() / mean < 0.03, "{count:?}");
        }
    }

    #[test]
    fn filter_bit_in_range() {
        assert!(addr_filter_bit(&[u32::MAX; 4]) < ADDR_FILTER_BITS);
    }
}
