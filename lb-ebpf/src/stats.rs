//! Counters and verdicts.

use aya_ebpf::bindings::xdp_action;
use lb_common::stats::{COUNTER_SLOTS, Counter};

use crate::maps::{BACKEND_STATS, STATS, VIP_STATS};

/// What to do with the packet and which verdict counter says why.
#[derive(Clone, Copy)]
pub struct Verdict {
    pub action: u32,
    pub counter: Counter,
}

impl Verdict {
    #[inline(always)]
    pub const fn pass(counter: Counter) -> Self {
        Self {
            action: xdp_action::XDP_PASS,
            counter,
        }
    }
    #[inline(always)]
    pub const fn drop(counter: Counter) -> Self {
        Self {
            action: xdp_action::XDP_DROP,
            counter,
        }
    }
    #[inline(always)]
    pub const fn tx(counter: Counter) -> Self {
        Self {
            action: xdp_action::XDP_TX,
            counter,
        }
    }
}

#[inline(always)]
pub fn count(counter: Counter) {
    if let Some(s) = STATS.get_ptr_mut(0) {
        // Masked so the verifier sees the index in bounds whatever the enum value.
        let i = (counter as usize) & (COUNTER_SLOTS - 1);
        // SAFETY: per-CPU entry, no concurrent writer on this CPU.
        unsafe { (*s).counters[i] += 1 };
    }
}

/// A forwarded packet: VIP and backend traffic counters.
#[inline(always)]
pub fn forwarded(vip_index: u32, backend_id: u32, bytes: u64, new_flow: bool) {
    let n = new_flow as u64;
    if let Some(v) = VIP_STATS.get_ptr_mut(vip_index) {
        // SAFETY: per-CPU entry.
        unsafe {
            (*v).packets += 1;
            (*v).bytes += bytes;
            (*v).new_flows += n;
        }
    }
    if let Some(b) = BACKEND_STATS.get_ptr_mut(backend_id) {
        // SAFETY: per-CPU entry.
        unsafe {
            (*b).packets += 1;
            (*b).bytes += bytes;
            (*b).new_flows += n;
        }
    }
}

/// A packet answered for a VIP (ICMP echo).
#[inline(always)]
pub fn answered(vip_index: u32, bytes: u64) {
    if let Some(v) = VIP_STATS.get_ptr_mut(vip_index) {
        // SAFETY: per-CPU entry.
        unsafe {
            (*v).packets += 1;
            (*v).bytes += bytes;
        }
    }
}

/// A packet for a known VIP that was not delivered; returns the verdict for chaining.
#[inline(always)]
pub fn vip_drop(vip_index: u32, v: Verdict) -> Verdict {
    if let Some(s) = VIP_STATS.get_ptr_mut(vip_index) {
        // SAFETY: per-CPU entry.
        unsafe { (*s).drops += 1 };
    }
    v
}
