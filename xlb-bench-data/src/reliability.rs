//! The reliability section of the report (issue 13). Each part comes from a stage of its own
//! and is absent, never zero, when that stage did not run:
//!
//! - [`LoadFaults`]: `xlb-bench reliability` (stage `reliability`): the agent under a SYN flood
//!   that fills its flow table, long-lived connections, and a backend that fails and returns.
//! - [`FuzzSummary`]: the datapath fuzzer's totals (`cargo xtask fuzz`), for the stage that
//!   runs it to fill.

use serde::{Deserialize, Serialize};

/// Answer times of the agent's API (`status` through its Unix socket), milliseconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApiLatency {
    pub samples: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Load with faults: what one run measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoadFaults {
    /// Replays the flood (`XLB_FLOOD_SEED`).
    pub seed: u64,
    /// The flow table's capacity (`flow-table-size` rounded up to whole sets).
    pub flow_table_entries: u32,
    pub connections: usize,
    pub request_interval_ms: u64,
    /// The flood's two phases: filling the table (`fill_packets` SYNs), then keeping it full
    /// through the failure.
    pub fill_packets: u64,
    pub fill_pps: u64,
    pub sustain_pps: u64,
    /// How long the failed backend's server stayed stopped.
    pub backend_down_ms: f64,
    /// SYNs sent (each a new flow), forwarded by the program (its VIP's packet counter), and
    /// dropped on the way as the interfaces reported.
    pub syn_flood_sent: u64,
    pub syn_flood_counted: u64,
    pub syn_flood_path_drops: u64,
    pub table_entries_after_fill: usize,
    /// Distinct flows written beyond the capacity.
    pub evictions_at_least: u64,
    /// Packets of established connections that found their entry evicted.
    pub established_misses: u64,
    /// Every connection's requests: tried and failed under the flood.
    pub requests_tried: u64,
    pub requests_failed: u64,
    /// Connections on the backends that stayed healthy, and of those, failed (target 0);
    /// how many of them the failure put at risk (their ring slot moved to another healthy
    /// backend: only their flow entry held them).
    pub healthy_connections: usize,
    pub healthy_failed: usize,
    pub healthy_requests_tried: u64,
    pub healthy_requests_failed: u64,
    pub at_risk: usize,
    /// Connections on the backend that failed (they break with its server), and failed.
    pub failed_backend_connections: usize,
    pub failed_backend_failed: usize,
    /// From the server's stop to the backend's being out of the ring; from its restart to its
    /// being back.
    pub down_after_ms: f64,
    pub up_after_ms: f64,
    /// Packets the LB's interface received during the run, and the growth of the sum of the
    /// verdict counters (equal when every packet is counted once).
    pub rx_packets: u64,
    pub verdict_packets: u64,
    pub rss_before_kib: u64,
    pub rss_max_kib: u64,
    pub rss_after_kib: u64,
    /// What "flat" allows: the root test's bound for the RSS after and at most.
    pub rss_bound_kib: u64,
    /// Before the load, and from the start of the load to its end.
    pub api_quiet: ApiLatency,
    pub api_under_load: ApiLatency,
    pub api_failures: usize,
    /// The bound every call is held to.
    pub api_bound_ms: f64,
    /// How busy the machine was over the run (all CPUs, 0..1) and its load averages at the
    /// end: other work on a shared machine shows here.
    pub machine_busy: f64,
    pub loadavg: [f64; 3],
    pub seconds: f64,
}

/// The datapath fuzzer's totals over a run (`xlb-bench fuzz`, what `cargo xtask fuzz` runs).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FuzzSummary {
    /// The run's seed (0x-hex): `cargo xtask fuzz --seed` replays it.
    pub seed: String,
    pub frames_fuzzed: u64,
    /// Of those, frames mutated after generation.
    pub mutated: u64,
    /// Freshly loaded programs with their own drawn configuration.
    pub worlds: u64,
    pub seconds: f64,
    /// Results of the LB program that differ from the reference model (target 0).
    pub mismatches: u64,
    /// Results that break an invariant whatever the model says (target 0).
    pub invariant_violations: u64,
    /// VIP and backend stats checks that disagreed with the model's sums (target 0).
    pub stats_mismatches: u64,
    /// Frames through the decap program, and its disagreements and violations (target 0).
    pub decap_frames: u64,
    pub decap_mismatches: u64,
    pub decap_invariant_violations: u64,
}
