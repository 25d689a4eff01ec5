//! The failover stage (`xlb-bench failover`): several LB nodes behind a router with BIRD,
//! long-lived connections through node loss, node return and a planned drain, then the
//! flow-continuity scenarios (a ring change followed by a change of the router's paths), each
//! with continuity off and on.

use serde::{Deserialize, Serialize};

/// The stage's result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FailoverResult {
    pub lbs: usize,
    pub backends: usize,
    /// Long-lived connections per phase, and the time between two requests on each.
    pub connections: usize,
    pub request_interval_ms: u64,
    pub bfd: BfdSettings,
    pub phases: Vec<FailoverPhase>,
    /// The flow-continuity runs (absent in reports older than them).
    #[serde(default)]
    pub continuity: Vec<ContinuityRun>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BfdSettings {
    pub interval_ms: u64,
    pub multiplier: u32,
    pub detection_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FailoverPhase {
    /// `node loss`, `node return`, `drain`.
    pub name: String,
    pub connections_tried: usize,
    pub connections_survived: usize,
    pub connections_failed: usize,
    /// Over the surviving connections: the median and the largest of each one's longest gap
    /// between two answered requests.
    pub gap_p50_ms: f64,
    pub gap_p100_ms: f64,
    /// New connections (one request each) opened during the phase, and failed.
    pub new_connections_tried: u64,
    pub new_connections_failed: u64,
    /// From the event to the router's route showing it.
    pub router_converged_ms: f64,
}

/// One flow-continuity run: a scenario (ring change, then node change) with continuity on or
/// off. Only connections both remapped by the ring change and moved by the router (`at_risk`)
/// can break; without continuity they do.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContinuityRun {
    /// E.g. `add backend, lose node`.
    pub scenario: String,
    pub continuity: bool,
    pub connections_tried: usize,
    pub connections_survived: usize,
    pub connections_failed: usize,
    pub remapped: usize,
    pub moved: usize,
    pub at_risk: usize,
    pub failed_at_risk: usize,
    /// As in [`FailoverPhase`], over the surviving connections.
    pub gap_p50_ms: f64,
    pub gap_p100_ms: f64,
    /// From the reloads to the same new ring on every node.
    pub ring_converged_ms: f64,
    /// With continuity: from then until every node held every other's exceptions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exceptions_exchanged_ms: Option<f64>,
    /// From the node change to the router's route showing it.
    pub router_converged_ms: f64,
    /// Set when the run could not complete (its figures are then zero).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
