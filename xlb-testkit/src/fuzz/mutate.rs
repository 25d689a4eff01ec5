//! Mutations of a generated frame: truncation at any offset, bit and byte flips, length and
//! offset fields at their extremes, random bytes appended or in place of the whole frame.

use rand::{RngExt, rngs::SmallRng};

/// Where a frame's length and offset fields sit, read from its own bytes (best effort: a
/// field is only touched where the frame has it).
fn length_fields(f: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut l2 = 14;
    if f.len() < 14 {
        return out;
    }
    let mut et = u16::from_be_bytes([f[12], f[13]]);
    if et == 0x8100 && f.len() >= 18 {
        et = u16::from_be_bytes([f[16], f[17]]);
        l2 = 18;
    }
    // (offset, width in bytes); width 0 = the high nibble of one byte.
    let (l4, proto) = match et {
        0x0800 if f.len() >= l2 + 20 => {
            out.extend([(l2, 0), (l2 + 2, 2), (l2 + 6, 2)]);
            (l2 + usize::from(f[l2] & 0x0f) * 4, f[l2 + 9])
        }
        0x86dd if f.len() >= l2 + 40 => {
            out.extend([(l2, 0), (l2 + 4, 2), (l2 + 6, 1)]);
            (l2 + 40, f[l2 + 6])
        }
        _ => return out,
    };
    match proto {
        6 => out.push((l4 + 12, 0)),
        17 => out.push((l4 + 4, 2)),
        // ICMP errors: the quoted header's version/IHL and length.
        1 | 58 => out.extend([(l4 + 8, 0), (l4 + 10, 2), (l4 + 12, 2)]),
        // IPv6 extension header length bytes.
        0 | 43 | 60 | 51 => out.push((l4 + 1, 1)),
        _ => {}
    }
    out.retain(|&(at, w)| at + w.max(1) <= f.len());
    out
}

fn extreme(rng: &mut SmallRng, current: u32, max: u32) -> u32 {
    match rng.random_range(0..7) {
        0 => 0,
        1 => 1,
        2 => max,
        3 => current.wrapping_add(1) & max,
        4 => current.wrapping_sub(1) & max,
        5 => max / 2,
        _ => rng.random_range(0..=max),
    }
}

/// Applies 1-3 mutations to `f`.
pub fn mutate(rng: &mut SmallRng, f: &mut Vec<u8>) {
    for _ in 0..rng.random_range(1..=3) {
        match rng.random_range(0..12) {
            0 | 1 => {
                let at = rng.random_range(0..=f.len());
                f.truncate(at);
            }
            2 | 3 if !f.is_empty() => {
                let at = rng.random_range(0..f.len());
                f[at] ^= 1 << rng.random_range(0..8);
            }
            4 if !f.is_empty() => {
                let at = rng.random_range(0..f.len());
                f[at] = rng.random();
            }
            5..=8 => {
                let fields = length_fields(f);
                if fields.is_empty() {
                    continue;
                }
                let (at, width) = fields[rng.random_range(0..fields.len())];
                match width {
                    0 => {
                        let v = extreme(rng, u32::from(f[at] >> 4), 15) as u8;
                        f[at] = (v << 4) | (f[at] & 0x0f);
                        if rng.random_bool(0.5) {
                            let ihl = extreme(rng, u32::from(f[at] & 0x0f), 15) as u8;
                            f[at] = (f[at] & 0xf0) | ihl;
                        }
                    }
                    1 => f[at] = extreme(rng, u32::from(f[at]), 255) as u8,
                    _ => {
                        let cur = u32::from(u16::from_be_bytes([f[at], f[at + 1]]));
                        let v = extreme(rng, cur, 0xffff) as u16;
                        f[at..at + 2].copy_from_slice(&v.to_be_bytes());
                    }
                }
            }
            9 => {
                let n = rng.random_range(1..64);
                f.extend((0..n).map(|_| rng.random::<u8>()));
            }
            10 if rng.random_bool(0.2) => {
                let n = rng.random_range(0..200);
                *f = (0..n).map(|_| rng.random::<u8>()).collect();
            }
            _ => {
                // A run of random bytes in place.
                if f.len() > 4 {
                    let at = rng.random_range(0..f.len() - 4);
                    let n = rng.random_range(1..=4);
                    for b in &mut f[at..at + n] {
                        *b = rng.random();
                    }
                }
            }
        }
    }
}
