//! `xlb-bench live` and `xlb-bench gen`: XDP live-frames mode on a real interface.

use serde::{Deserialize, Serialize};

use crate::Counters;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LiveRun {
    pub frames: u32,
    /// The kernel's time per frame.
    pub kernel_ns_per_frame: f64,
    pub wall_seconds: f64,
    pub pps: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LiveProgram {
    pub program: String,
    pub runs: Vec<LiveRun>,
    /// Median over runs of frames / wall time.
    pub pps: f64,
    pub kernel_ns_per_frame: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub ifname: String,
    pub ifindex: u32,
    pub batch: u32,
    pub xlb: LiveProgram,
    pub reflect: LiveProgram,
    pub xlb_counters: Counters,
}

/// `xlb-bench gen`: what the traffic generator sent.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Generated {
    pub frames_sent: u64,
    pub seconds: f64,
}
