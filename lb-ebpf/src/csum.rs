//! Internet checksum arithmetic (RFC 1071 sums, RFC 1624 incremental updates).
//!
//! Sums are taken over 16-bit words as they sit in memory; one's-complement addition commutes
//! with byte swapping, so a checksum computed this way is stored back unchanged.

/// Folds a running sum to 16 bits and complements it: the value for a checksum field.
#[inline(always)]
pub fn fold(mut sum: u64) -> u16 {
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// Sum of the 16-bit words of a value (its size must be even).
#[inline(always)]
pub fn sum_words<T: Copy>(value: &T) -> u64 {
    let words = size_of::<T>() / 2;
    let p = value as *const T as *const u16;
    let mut sum = 0u64;
    let mut i = 0;
    while i < words {
        // SAFETY: `i < size_of::<T>() / 2` and headers are 2-aligned (`packed(2)`).
        sum += unsafe { p.add(i).read() } as u64;
        i += 1;
    }
    sum
}

/// Sum of address words as the maps hold them.
#[inline(always)]
pub fn sum_addr(a: &[u32; 4]) -> u64 {
    (a[0] & 0xffff) as u64
        + (a[0] >> 16) as u64
        + (a[1] & 0xffff) as u64
        + (a[1] >> 16) as u64
        + (a[2] & 0xffff) as u64
        + (a[2] >> 16) as u64
        + (a[3] & 0xffff) as u64
        + (a[3] >> 16) as u64
}

/// Checksum field after one 16-bit word of the covered data changed from `old` to `new`
/// (RFC 1624, eqn. 3).
#[inline(always)]
pub fn replace16(check: u16, old: u16, new: u16) -> u16 {
    let sum = (!check) as u64 + (!old) as u64 + new as u64;
    fold(sum)
}
