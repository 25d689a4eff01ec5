//! xlb agent and CLI.

pub mod agent;
pub mod announce;
pub mod api;
pub mod cli;
pub mod config;
pub mod continuity;
pub mod decap;
#[cfg(test)]
mod fuzz;
pub mod health;
pub mod idle_clock;
pub mod loader;
pub mod maglev;
pub mod maps;
pub mod metrics;
pub mod model;
pub mod netlink;
pub mod paths;
pub mod pinning;
pub mod reconcile;
pub mod ring_digest;
#[cfg(any(test, feature = "test-fixtures"))]
pub mod test_fixtures;
