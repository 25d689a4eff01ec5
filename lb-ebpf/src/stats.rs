//! Counters and verdicts.

use aya_ebpf::{bindings::xdp_action, maps::PerCpuArray};
use lb_common::{
    TrafficStats,
    stats::{COUNTER_SLOTS, Counter, GlobalStats},
};

use crate::maps::{BACKEND_STATS, STATS, VIP_STATS};

/// What to do with the packet and which counters say why, one register wide so subprograms
/// return it in R0 (a struct would take a hidden pointer argument, and BPF calls allow only
/// five). Bits 0-15: the XDP action; 16-31: the encapsulation overhead of a `too_big` verdict;
/// 32-47: the verdict counter; 48-63: a second counter + 1 (0: none), the flow-table outcome of
/// a forwarded packet, so both are bumped with one lookup of the per-CPU stats entry.
#[derive(Clone, Copy)]
#[repr(transparent)]
pub struct Verdict(u64);

/// Pseudo-action of `Verdict::too_big` (no XDP action has this value).
const ACTION_TOO_BIG: u64 = 0xffff;
const DETAIL_SHIFT: u32 = 48;

impl Verdict {
    #[inline(always)]
    const fn new(action: u32, counter: Counter) -> Self {
        Self(action as u64 | ((counter as u64) << 32))
    }
    #[inline(always)]
    pub const fn pass(counter: Counter) -> Self {
        Self::new(xdp_action::XDP_PASS, counter)
    }
    #[inline(always)]
    pub const fn drop(counter: Counter) -> Self {
        Self::new(xdp_action::XDP_DROP, counter)
    }
    #[inline(always)]
    pub const fn tx(counter: Counter) -> Self {
        Self::new(xdp_action::XDP_TX, counter)
    }
    /// Not a final verdict: the packet is too big to encapsulate with `overhead` bytes, and the
    /// caller at the top of the program answers it (`icmp::too_big`). Raised deep in the fast
    /// path but answered from the shallowest frame, so no call chain exceeds the BPF stack.
    #[inline(always)]
    pub const fn too_big(overhead: usize) -> Self {
        Self(ACTION_TOO_BIG | ((overhead as u64 & 0xffff) << 16))
    }
    #[inline(always)]
    pub const fn too_big_overhead(self) -> Option<usize> {
        if self.0 & 0xffff == ACTION_TOO_BIG {
            Some(((self.0 >> 16) & 0xffff) as usize)
        } else {
            None
        }
    }
    /// Also counts `detail` (a `Flow*` outcome, `Fragment`, `IcmpErrorForwarded`).
    #[inline(always)]
    pub const fn with_detail(self, detail: Counter) -> Self {
        Self((self.0 & !(0xffff << DETAIL_SHIFT)) | ((detail as u64 + 1) << DETAIL_SHIFT))
    }
    /// [`Verdict::with_detail`] if there is one.
    #[inline(always)]
    pub const fn with_detail_opt(self, detail: Option<Counter>) -> Self {
        match detail {
            Some(d) => self.with_detail(d),
            None => self,
        }
    }
    /// This verdict with the second counter of `other` (when a verdict replaces another).
    #[inline(always)]
    pub const fn keep_detail(self, other: Verdict) -> Self {
        Self((self.0 & !(0xffff << DETAIL_SHIFT)) | (other.0 & (0xffff << DETAIL_SHIFT)))
    }
    #[inline(always)]
    pub const fn action(self) -> u32 {
        (self.0 & 0xffff) as u32
    }
    #[inline(always)]
    pub const fn is_tx(self) -> bool {
        self.action() == xdp_action::XDP_TX
    }
    #[inline(always)]
    pub const fn counter_index(self) -> u32 {
        ((self.0 >> 32) & 0xffff) as u32
    }
    /// Bumps this verdict's counter and its second one, in one lookup.
    #[inline(always)]
    pub fn count(self) {
        let detail = (self.0 >> DETAIL_SHIFT) as usize;
        per_cpu(&STATS, 0, |s| {
            s.counters[slot(self.counter_index() as usize)] += 1;
            if detail != 0 {
                s.counters[slot(detail - 1)] += 1;
            }
        });
    }
}

/// The one place that writes per-CPU entries (counters and traffic stats): `f` gets this CPU's
/// entry `index` of `map`, if the map has one.
#[inline(always)]
fn per_cpu<T>(map: &PerCpuArray<T>, index: u32, f: impl FnOnce(&mut T)) {
    if let Some(p) = map.get_ptr_mut(index) {
        // SAFETY: a per-CPU entry: the program is its only writer on this CPU and does not
        // run twice at once there (XDP runs with preemption off); readers in user space copy.
        f(unsafe { &mut *p })
    }
}

/// Index `i` of a `GlobalStats` array, masked so the verifier sees it in bounds.
#[inline(always)]
const fn slot(i: usize) -> usize {
    i & (COUNTER_SLOTS - 1)
}

/// Adds 1 to counter `i` of `map`'s single entry (`Counter`, `DecapCounter` indices).
#[inline(always)]
pub fn bump(map: &PerCpuArray<GlobalStats>, i: usize) {
    per_cpu(map, 0, |s| s.counters[slot(i)] += 1);
}

#[inline(always)]
pub fn count(counter: Counter) {
    bump(&STATS, counter as usize);
}

/// A forwarded packet: VIP and backend traffic counters.
#[inline(always)]
pub fn forwarded(vip_index: u32, backend_id: u32, bytes: u64, new_flow: bool) {
    let n = new_flow as u64;
    let add = |s: &mut TrafficStats| {
        s.packets += 1;
        s.bytes += bytes;
        s.new_flows += n;
    };
    per_cpu(&VIP_STATS, vip_index, add);
    per_cpu(&BACKEND_STATS, backend_id, add);
}

/// A packet answered for a VIP (ICMP echo).
#[inline(always)]
pub fn answered(vip_index: u32, bytes: u64) {
    per_cpu(&VIP_STATS, vip_index, |s| {
        s.packets += 1;
        s.bytes += bytes;
    });
}

/// A packet for a known VIP that was not delivered; returns the verdict for chaining.
#[inline(always)]
pub fn vip_drop(vip_index: u32, v: Verdict) -> Verdict {
    per_cpu(&VIP_STATS, vip_index, |s| s.drops += 1);
    v
}
