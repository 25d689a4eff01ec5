//! `xlb-bench packet`: the per-packet scenarios.

use serde::{Deserialize, Serialize};

use crate::{Counters, measure::Measurement};

/// How much to measure.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Params {
    /// One-packet syscalls per run.
    pub iterations: u64,
    pub runs: u32,
    pub warmup: u64,
    /// The CPU the measuring thread is pinned to.
    pub cpu: usize,
    /// Resident flows of the "1M flows" scenario.
    pub resident: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scenario {
    pub name: String,
    pub label: String,
    pub expected_verdict: u32,
    pub m: Measurement,
    /// Counter increments during the measurement (warm-up included): shows which path ran.
    pub counters: Counters,
}

/// The map sizes the program was loaded with.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoadOptions {
    pub max_vips: u32,
    pub max_backends: u32,
    pub flow_table_size: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub params: Params,
    pub load_options: LoadOptions,
    pub scenarios: Vec<Scenario>,
    /// The idempotent programs measured with the kernel's repeat loop.
    pub repeat_method: Vec<Scenario>,
    /// Flows of the "1M resident" fill that have an entry after it (fewer than inserted: a
    /// flow whose set is full evicts another, as in the program).
    pub resident_after_fill: Option<usize>,
    /// Entries in the whole table after that fill.
    pub table_entries_after_fill: Option<usize>,
}

impl Report {
    /// The scenario called `name` among the single-packet ones.
    pub fn scenario(&self, name: &str) -> Option<&Scenario> {
        self.scenarios.iter().find(|s| s.name == name)
    }

    /// The scenario called `name` among the repeat-loop ones.
    pub fn repeat(&self, name: &str) -> Option<&Scenario> {
        self.repeat_method.iter().find(|s| s.name == name)
    }
}
