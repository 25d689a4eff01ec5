//! The seam between the agent's logic and the BPF maps.
//!
//! `reconcile` (the single writer), `inspect` and the metrics exporter talk to a [`MapStore`];
//! [`AyaStore`] is the real one (maps of a loaded program or pinned under bpffs), [`FakeStore`]
//! an in-memory one that lets reconcile and health logic be tested without root.

mod aya_store;
pub mod fake;
pub mod mmap;

use lb_common::{
    Backend, FlowEntry, FlowKey, LbConfig, TrafficStats, VipKey, VipMeta, stats::GlobalStats,
};

pub use aya_store::AyaStore;
pub use fake::FakeStore;

/// A map operation failed. Carries the map name so the operator knows where to look.
#[derive(Debug, thiserror::Error)]
#[error("BPF map {map}: {op} failed: {detail}")]
pub struct MapError {
    pub map: &'static str,
    pub op: &'static str,
    pub detail: String,
}

impl MapError {
    pub fn new(map: &'static str, op: &'static str, detail: impl ToString) -> Self {
        Self {
            map,
            op,
            detail: detail.to_string(),
        }
    }
}

pub type Result<T> = std::result::Result<T, MapError>;

/// Everything the agent reads from and writes to the program's maps.
pub trait MapStore {
    /// Capacity of the VIP index space (ring map size / RING_SIZE).
    fn max_vips(&self) -> u32;
    /// Capacity of the backend id space (ids 1..max_backends).
    fn max_backends(&self) -> u32;

    fn config(&self) -> Result<LbConfig>;
    fn set_config(&mut self, cfg: &LbConfig) -> Result<()>;

    fn vips(&self) -> Result<Vec<(VipKey, VipMeta)>>;
    fn set_vip(&mut self, key: &VipKey, meta: &VipMeta) -> Result<()>;
    fn remove_vip(&mut self, key: &VipKey) -> Result<()>;

    fn backend(&self, id: u32) -> Result<Backend>;
    fn set_backend(&mut self, id: u32, backend: &Backend) -> Result<()>;

    /// The `RING_SIZE` slots of one VIP index.
    fn ring(&self, vip_index: u32) -> Result<Vec<u32>>;
    /// Writes `(slot, backend id)` pairs of one VIP index.
    fn set_ring_slots(&mut self, vip_index: u32, slots: &[(u32, u32)]) -> Result<()>;

    fn filter_words(&self) -> Result<Vec<u64>>;
    fn set_filter_word(&mut self, index: u32, word: u64) -> Result<()>;

    /// Global counters summed over CPUs.
    fn global_stats(&self) -> Result<GlobalStats>;
    /// Per-VIP counters summed over CPUs.
    fn vip_stats(&self, vip_index: u32) -> Result<TrafficStats>;
    /// Per-backend counters summed over CPUs.
    fn backend_stats(&self, id: u32) -> Result<TrafficStats>;
    /// Zeroes the counters of a newly allocated VIP index / backend id, so a recycled slot does
    /// not inherit its predecessor's traffic.
    fn clear_vip_stats(&mut self, vip_index: u32) -> Result<()>;
    fn clear_backend_stats(&mut self, id: u32) -> Result<()>;

    /// Up to `limit` flow-table entries (unordered).
    fn flows(&self, limit: usize) -> Result<Vec<(FlowKey, FlowEntry)>>;
    /// The flow-table entry of one flow.
    fn flow(&self, key: &FlowKey) -> Result<Option<FlowEntry>>;
    /// The `origin` of one flow's flow-table entry (`lb_common::flows::ORIGIN_*`).
    fn flow_origin(&self, key: &FlowKey) -> Result<Option<u8>>;
    /// Up to `limit` entries of the peer-exception table (flow continuity).
    fn peer_flows(&self, limit: usize) -> Result<Vec<(FlowKey, FlowEntry)>>;
    /// The peer-exception entry of one flow.
    fn peer_flow(&self, key: &FlowKey) -> Result<Option<FlowEntry>>;
}

/// Sums per-CPU traffic counters.
pub fn sum_traffic(values: impl IntoIterator<Item = TrafficStats>) -> TrafficStats {
    values
        .into_iter()
        .fold(TrafficStats::default(), |mut acc, v| {
            acc.packets += v.packets;
            acc.bytes += v.bytes;
            acc.new_flows += v.new_flows;
            acc.drops += v.drops;
            acc
        })
}

/// Sums per-CPU global counters.
pub fn sum_global(values: impl IntoIterator<Item = GlobalStats>) -> GlobalStats {
    values
        .into_iter()
        .fold(GlobalStats::default(), |mut acc, v| {
            for (a, x) in acc.counters.iter_mut().zip(v.counters) {
                *a += x;
            }
            acc
        })
}
