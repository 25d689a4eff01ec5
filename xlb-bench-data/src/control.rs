//! `xlb-bench control` and `xlb-bench memory`: control-plane timings and memory.

use serde::{Deserialize, Serialize};

use crate::sys::{MapMemory, Rss};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    pub reps: u32,
    pub median_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MaglevPoint {
    pub backends: u32,
    pub table_size: u32,
    pub build: Timing,
    /// Slots rewritten when one backend (of equal weights) is removed.
    pub slots_changed_on_failure: u32,
    /// Of which were not the failed backend's own slots (the paper's "disruption").
    pub slots_moved_between_survivors: u32,
    pub changed_fraction: f64,
    /// The ideal: only the failed backend's share, 1/N.
    pub ideal_fraction: f64,
    pub max_imbalance: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoreFigures {
    /// Which `MapStore` the figures are of (the in-memory fake or the kernel maps).
    pub store: String,
    pub vips: u32,
    pub backends_per_vip: u32,
    /// First apply of the whole config into empty maps.
    pub initial_apply: Timing,
    /// One backend marked down (health change), then back up: time of each apply.
    pub health_change_apply: Timing,
    pub health_change_ring_slots: usize,
    /// Reload with an unchanged config: validate + apply (writes nothing).
    pub reload_unchanged: Timing,
    /// Reload with one backend's weight changed: validate + apply.
    pub reload_one_weight: Timing,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub maglev: Vec<MaglevPoint>,
    /// Parse + validate of the 100 x 100 config text.
    pub validate: Timing,
    pub config_bytes: usize,
    pub stores: Vec<StoreFigures>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemoryReport {
    pub flow_table_size: u32,
    pub flows_inserted: u64,
    /// Entries found in the table after the fill.
    pub flows_resident: usize,
    pub rss_after_load: Rss,
    pub rss_after_fill: Rss,
    pub maps: Vec<MapMemory>,
    pub memlock_total_bytes: u64,
    pub fill_seconds: f64,
}
