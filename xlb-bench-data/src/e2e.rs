//! The end-to-end testbed of `cargo xtask bench`: the same client traffic direct to the
//! backends, through xlb and through HAProxy, plus packet rates and the agent's memory.

use serde::{Deserialize, Serialize};

use crate::{live, sys::ProcMemory};

/// wrk processes run at once (one per target), summed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Wrk {
    pub targets: Vec<String>,
    pub connections: u32,
    /// `Connection: close`: one connection per request.
    pub connection_close: bool,
    pub seconds: u32,
    pub requests_per_s: f64,
    /// Mean of the processes' medians.
    pub p50_ms: f64,
    /// The worst of the processes' 99th percentiles.
    pub p99_ms: f64,
    /// Socket errors and non-2xx/3xx responses.
    pub errors: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Iperf {
    pub target: String,
    pub seconds: u32,
    pub gbit_per_s: f64,
}

/// One path's figures (direct, xlb or HAProxy).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HttpSuite {
    pub keepalive: Wrk,
    pub connection_close: Wrk,
    pub iperf3: Iperf,
}

/// The XDP_TX rate counted on the LB's interface.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pps {
    pub xdp_tx_pps: f64,
    pub seconds: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct PpsPair {
    pub xlb: Pps,
    pub reflect: Pps,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub backends: usize,
    /// wrk connections in total for keep-alive (half of them with `Connection: close`).
    pub wrk_connections: u32,
    pub direct: HttpSuite,
    pub xlb: HttpSuite,
    pub haproxy: HttpSuite,
    pub pps: PpsPair,
    pub live_frames: live::Report,
    pub agent_memory: ProcMemory,
    /// The last lines of the agent's log, newest first.
    pub xlb_log_tail: Vec<String>,
}

impl Report {
    /// The three paths, in the report's order.
    pub fn paths(&self) -> [(&'static str, &HttpSuite); 3] {
        [
            ("direct", &self.direct),
            ("xlb", &self.xlb),
            ("haproxy", &self.haproxy),
        ]
    }
}
