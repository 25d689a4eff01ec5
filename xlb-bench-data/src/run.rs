//! One `cargo xtask bench` run: what ran, how long, and the results of the stages that
//! succeeded (`target/bench/raw/all.json`).

use serde::{Deserialize, Serialize};

use crate::{control, e2e, failover, packet, reliability, scale, sys::Machine};

/// One stage as the report lists it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stage {
    pub name: String,
    pub command: String,
    pub seconds: f64,
    /// Why the stage failed; `None` when it succeeded.
    pub error: Option<String>,
}

/// The results of the stages that ran and succeeded; a stage not run or failed is `None`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Results {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packet: Option<packet::Report>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<scale::Report>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<control::Report>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<control::MemoryReport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e2e: Option<e2e::Report>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<failover::FailoverResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_faults: Option<reliability::LoadFaults>,
    /// Filled by the fuzzer's stage (`cargo xtask fuzz`); absent when it did not run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuzz: Option<reliability::FuzzSummary>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub machine: Machine,
    pub invocation: String,
    pub quick: bool,
    pub total_seconds: f64,
    pub stages: Vec<Stage>,
    pub results: Results,
}
