//! Frame access: the only code that turns frame offsets into pointers, or moves the frame's
//! start and end. Every access is checked against `data_end` here, so the rest of the program
//! handles plain values and references it cannot take out of bounds.

use aya_ebpf::{
    helpers::generated::{bpf_csum_diff, bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    programs::XdpContext,
};
use lb_common::stats::{Counter, DecapCounter};

use crate::hdr::EthHdr;

/// Why a frame could not be rewritten. Kept apart because they point at different culprits: a
/// refused adjustment at the driver (too little XDP headroom), a short write at the program.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Failed {
    /// `bpf_xdp_adjust_head` / `bpf_xdp_adjust_tail` refused.
    Adjust,
    /// A header did not fit inside the frame where it was to be written.
    Write,
}

impl Failed {
    #[inline(always)]
    pub const fn counter(self) -> Counter {
        match self {
            Failed::Adjust => Counter::DropAdjustFailed,
            Failed::Write => Counter::DropWriteFailed,
        }
    }

    #[inline(always)]
    pub const fn decap_counter(self) -> DecapCounter {
        match self {
            Failed::Adjust => DecapCounter::DropAdjustFailed,
            Failed::Write => DecapCounter::DropWriteFailed,
        }
    }
}

/// Bounds-checked pointer to a `T` at `off` bytes into the frame.
#[inline(always)]
fn ptr_at<T>(ctx: &XdpContext, off: usize) -> Option<*mut T> {
    // Headers are `packed(2)`; frames start 2-aligned, and every header offset is even.
    const { assert!(align_of::<T>() <= 2) };
    let start = ctx.data();
    let end = ctx.data_end();
    if start + off + size_of::<T>() > end {
        return None;
    }
    Some((start + off) as *mut T)
}

/// The `T` at `off`, in place, if the frame holds it. Its fields read by value without copying
/// the whole header (header-sized copies would crowd the 512-byte BPF stack). Valid until the
/// frame is adjusted or that part of it written: callers read what they need and drop it.
#[inline(always)]
pub fn header<T>(ctx: &XdpContext, off: usize) -> Option<&T> {
    // SAFETY: in bounds (`ptr_at`), aligned for `T` (align <= 2, checked there), and every bit
    // pattern is a valid header (plain integers and byte arrays).
    ptr_at::<T>(ctx, off).map(|p| unsafe { &*p })
}

/// Copy of the `T` at `off`, if the frame holds it.
#[inline(always)]
pub fn read<T: Copy>(ctx: &XdpContext, off: usize) -> Option<T> {
    // SAFETY: as in `header`.
    ptr_at::<T>(ctx, off).map(|p| unsafe { p.read() })
}

/// Overwrites the `T` at `off`.
#[inline(always)]
pub fn write<T>(ctx: &XdpContext, off: usize, value: T) -> Result<(), Failed> {
    match ptr_at::<T>(ctx, off) {
        // SAFETY: as in `header`; no reference into the frame is alive across a write.
        Some(p) => {
            unsafe { p.write(value) };
            Ok(())
        }
        None => Err(Failed::Write),
    }
}

/// Whether the frame extends at least `end` bytes. A pointer comparison: the verifier forbids
/// arithmetic on `data_end`, so lengths are never derived from it on the fast path.
#[inline(always)]
pub fn holds(ctx: &XdpContext, end: usize) -> bool {
    ctx.data() + end <= ctx.data_end()
}

/// Length of the frame, for the helpers that take a length delta. `black_box` keeps the
/// subtraction a `pkt_end - pkt` pair (allowed to privileged loaders); without it LLVM folds it
/// into neighbouring arithmetic as `scalar - pkt_end`, which the verifier rejects.
#[inline(always)]
pub fn len(ctx: &XdpContext) -> usize {
    core::hint::black_box(ctx.data_end() - ctx.data())
}

/// Grows (negative `delta`) or shrinks the frame at the head.
#[inline(always)]
pub fn adjust_head(ctx: &XdpContext, delta: i32) -> Result<(), Failed> {
    // SAFETY: helper call on our own context; every packet pointer is derived anew afterwards
    // (none is kept: `header` references are dropped before any adjustment).
    match unsafe { bpf_xdp_adjust_head(ctx.ctx, delta) } {
        0 => Ok(()),
        _ => Err(Failed::Adjust),
    }
}

/// Shrinks (negative `delta`) the frame at the tail.
#[inline(always)]
pub fn adjust_tail(ctx: &XdpContext, delta: i32) -> Result<(), Failed> {
    // SAFETY: as `adjust_head`.
    match unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta) } {
        0 => Ok(()),
        _ => Err(Failed::Adjust),
    }
}

/// Swaps the frame's destination and source MAC in place; `false` if it holds no Ethernet
/// header.
#[inline(always)]
pub fn swap_macs(ctx: &XdpContext) -> bool {
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return false;
    };
    // SAFETY: in bounds (`ptr_at`); by-value access to fields of a packed struct.
    unsafe {
        let (src, dst) = ((*eth).src, (*eth).dst);
        (*eth).src = dst;
        (*eth).dst = src;
    }
    true
}

/// One's-complement sum (`bpf_csum_diff`, unfolded) of the `N` bytes at `off`, `N` a multiple
/// of 4.
#[inline(always)]
pub fn sum<const N: usize>(ctx: &XdpContext, off: usize) -> Option<u64> {
    const { assert!(N.is_multiple_of(4)) };
    let bytes = ptr_at::<[u8; N]>(ctx, off)?;
    // SAFETY: `bytes` covers N bytes of the frame (checked by `ptr_at`); the helper only reads.
    let sum = unsafe { bpf_csum_diff(core::ptr::null_mut(), 0, bytes as *mut u32, N as u32, 0) };
    Some(sum as u32 as u64)
}
