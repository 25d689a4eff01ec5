//! One per-packet measurement through `BPF_PROG_TEST_RUN`.

use serde::{Deserialize, Serialize};

/// One run's statistics, in nanoseconds per packet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunStats {
    pub iterations: u64,
    pub median_ns: f64,
    /// Mean of the samples at or below the run's 99th percentile (interrupts and preemptions
    /// that land inside the timed region would otherwise dominate the mean).
    pub trimmed_mean_ns: f64,
    pub p99_ns: f64,
    /// Wall-clock time per syscall seen from user space (the cost of this method, not of the
    /// program).
    pub wall_ns_per_call: f64,
}

/// A measurement: several runs; the figure is the median over runs of each run's trimmed mean.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    /// "single" (one packet per syscall) or "repeat" (the kernel's repeat loop).
    pub method: String,
    pub runs: Vec<RunStats>,
    /// Median over runs of `trimmed_mean_ns`: THE figure.
    pub ns: f64,
    /// Median over runs of `median_ns` (integer nanoseconds: the kernel reports whole ns).
    pub median_ns: f64,
    /// Spread of the runs: (max - min) / median of `trimmed_mean_ns`.
    pub spread: f64,
    /// Verdict of the last iteration (sanity: TX = 3, PASS = 2).
    pub verdict: u32,
}

impl Measurement {
    pub fn mpps(&self) -> f64 {
        if self.ns > 0.0 { 1e3 / self.ns } else { 0.0 }
    }
}
