//! Every map of the load-balancer program. Sizes here are defaults: the agent resizes the
//! VIP-, backend- and flow-sized maps at load time. Layouts: `lb_common`.

use aya_ebpf::{
    bindings::BPF_F_MMAPABLE,
    macros::map,
    maps::{Array, HashMap, PerCpuArray},
};
use lb_common::{
    FlowSet, LbConfig, TrafficStats, VipKey, VipMeta,
    flows::flow_sets,
    limits::{
        ADDR_FILTER_WORDS, DEFAULT_FLOW_TABLE_SIZE, DEFAULT_MAX_BACKENDS, DEFAULT_MAX_VIPS,
        DEFAULT_VIP_MAP_ENTRIES, PEER_FLOWS_OFF, RING_SIZE, RING_SLOTS_PER_ENTRY,
    },
    stats::GlobalStats,
    values::{Backend, DecapConfig, IcmpBucket},
};

/// VIPs, all-ports VIPs, fragment aliases and address entries.
#[map(name = "XLB_VIPS")]
pub static VIPS: HashMap<VipKey, VipMeta> = HashMap::with_max_entries(DEFAULT_VIP_MAP_ENTRIES, 0);

/// Maglev tables, `RING_SIZE` backend ids per VIP index. Mmapable: the agent reads and rewrites
/// whole tables through a memory mapping instead of one syscall per slot.
#[map(name = "XLB_RING")]
pub static RING: Array<[u32; RING_SLOTS_PER_ENTRY as usize]> = Array::with_max_entries(
    (DEFAULT_MAX_VIPS * RING_SIZE).div_ceil(RING_SLOTS_PER_ENTRY),
    BPF_F_MMAPABLE,
);

/// Backends by id (id 0 never used).
#[map(name = "XLB_BACKENDS")]
pub static BACKENDS: Array<Backend> = Array::with_max_entries(DEFAULT_MAX_BACKENDS, 0);

/// 5-tuple -> backend: sets of `FLOW_WAYS` slots (`lb_common::flows`), `FLOW_SET_MASK + 1` of
/// them. Mmapable: the agent reads the whole table through a memory mapping.
#[map(name = "XLB_FLOWS")]
pub static FLOWS: Array<FlowSet> =
    Array::with_max_entries(flow_sets(DEFAULT_FLOW_TABLE_SIZE), BPF_F_MMAPABLE);

/// The flow table's set count minus one. The loader overwrites it together with the map's
/// size; read it with [`flow_set_mask`] (a plain read would be folded to this default).
#[unsafe(no_mangle)]
static XLB_FLOW_SET_MASK: u32 = flow_sets(DEFAULT_FLOW_TABLE_SIZE) - 1;

#[inline(always)]
pub fn flow_set_mask() -> u32 {
    // SAFETY: a plain u32 global.
    unsafe { core::ptr::read_volatile(&XLB_FLOW_SET_MASK) }
}

/// Peers' exceptions (flow continuity): the flow table's layout, written only by the agent,
/// read on a flow-table miss when `CONFIG_F_PEER_FLOWS` is set. Mmapable: the agent writes it
/// through a memory mapping.
#[map(name = "XLB_PEER_FLOWS")]
pub static PEER_FLOWS: Array<FlowSet> =
    Array::with_max_entries(flow_sets(PEER_FLOWS_OFF), BPF_F_MMAPABLE);

/// The peer table's set count minus one (see `XLB_FLOW_SET_MASK`).
#[unsafe(no_mangle)]
static XLB_PEER_SET_MASK: u32 = flow_sets(PEER_FLOWS_OFF) - 1;

#[inline(always)]
pub fn peer_set_mask() -> u32 {
    // SAFETY: a plain u32 global.
    unsafe { core::ptr::read_volatile(&XLB_PEER_SET_MASK) }
}

/// Global configuration (one entry).
#[map(name = "XLB_CONFIG")]
pub static CONFIG: Array<LbConfig> = Array::with_max_entries(1, 0);

/// Counters by reason (one per-CPU entry).
#[map(name = "XLB_STATS")]
pub static STATS: PerCpuArray<GlobalStats> = PerCpuArray::with_max_entries(1, 0);

/// Per-VIP traffic, by VIP index.
#[map(name = "XLB_VIP_STATS")]
pub static VIP_STATS: PerCpuArray<TrafficStats> =
    PerCpuArray::with_max_entries(DEFAULT_MAX_VIPS, 0);

/// Per-backend traffic, by backend id.
#[map(name = "XLB_BE_STATS")]
pub static BACKEND_STATS: PerCpuArray<TrafficStats> =
    PerCpuArray::with_max_entries(DEFAULT_MAX_BACKENDS, 0);

/// One bit per hashed VIP address: lets non-VIP traffic pass without a hash-map lookup.
#[map(name = "XLB_ADDR_FILT")]
pub static ADDR_FILTER: Array<u64> = Array::with_max_entries(ADDR_FILTER_WORDS, 0);

/// Token bucket for generated ICMP errors (one per-CPU entry).
#[map(name = "XLB_ICMP_RL")]
pub static ICMP_BUCKET: PerCpuArray<IcmpBucket> = PerCpuArray::with_max_entries(1, 0);

/// Configuration of the backend-side decap program (one entry).
#[map(name = "XLB_DECAP_CFG")]
pub static DECAP_CONFIG: Array<DecapConfig> = Array::with_max_entries(1, 0);

/// Counters of the decap program by `DecapCounter` (one per-CPU entry).
#[map(name = "XLB_DECAP_STAT")]
pub static DECAP_STATS: PerCpuArray<GlobalStats> = PerCpuArray::with_max_entries(1, 0);
