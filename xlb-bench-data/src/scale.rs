//! `xlb-bench scale`: per-packet cost against VIPs, backends and flow-table occupancy.

use serde::{Deserialize, Serialize};

use crate::{Counters, measure::Measurement, packet::Params};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub x: u64,
    /// Flows resident at this point (occupancy curve only).
    pub resident: Option<usize>,
    pub m: Measurement,
    pub counters: Counters,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Curve {
    pub name: String,
    pub label: String,
    pub x_label: String,
    pub points: Vec<Point>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub params: Params,
    pub reflect: Measurement,
    pub curves: Vec<Curve>,
    /// Per-packet cost of SYNs from random sources with the flow table full (every insert
    /// evicts), and of established hits measured right after that flood.
    pub syn_flood_full: Measurement,
    /// Of the active flows the hits after the flood use (each had one packet just before the
    /// flood), how many had an entry right before the flood and right after it.
    pub active_before_flood: usize,
    pub active_after_flood: usize,
    /// The same for as many flows of the fill that had no packet.
    pub idle_before_flood: usize,
    pub idle_after_flood: usize,
    pub hit_after_flood: Measurement,
    pub flood_counters: Counters,
    pub hit_after_flood_counters: Counters,
}

impl Report {
    pub fn curve(&self, name: &str) -> Option<&Curve> {
        self.curves.iter().find(|c| c.name == name)
    }
}
