//! The results of the benchmark, as `xlb-bench` prints them (JSON on stdout) and as
//! `cargo xtask bench` reads them back to write its report. One definition for both sides, so
//! a field renamed or retyped by the drivers breaks the report at compile time, not silently.
//!
//! - [`measure`]: one per-packet measurement (runs, median, spread, verdict).
//! - [`packet`], [`scale`]: the per-packet scenarios and the scale curves.
//! - [`control`]: Maglev, reconcile and reload timings, the memory of a 1M-entry flow table.
//! - [`sys`]: machine facts, RSS and BPF map memory.
//! - [`live`]: XDP live-frames runs and the traffic generator.
//! - [`failover`]: node loss, return and drain on several LB nodes behind a BIRD router.
//! - [`e2e`]: the end-to-end testbed (wrk, iperf3, packet rates, the agent's memory).
//! - [`reliability`]: load with faults, and the datapath fuzzer's totals.
//! - [`run`]: one whole `cargo xtask bench` run: stages and their results.

pub mod control;
pub mod e2e;
pub mod failover;
pub mod live;
pub mod measure;
pub mod packet;
pub mod reliability;
pub mod run;
pub mod scale;
pub mod sys;

/// Counter increments during a measurement, by counter name: shows which path ran.
pub type Counters = std::collections::HashMap<String, u64>;
