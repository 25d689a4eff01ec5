//! Benchmark drivers behind `xlb-bench` (run by `cargo xtask bench`, which turns their JSON into
//! `target/bench/report.md`). Nothing here asserts a performance figure: it measures and prints.
//!
//! - [`runner`]: per-packet cost through `BPF_PROG_TEST_RUN`, one packet per syscall (the kernel
//!   does not restore the packet between the iterations of its `repeat` loop, so an encapsulating
//!   program would time a different packet from the second iteration on).
//! - [`fixture`]: a loaded program configured the way the agent does it (config -> reconciler ->
//!   maps), plus direct flow-table fills.
//! - [`packet`], [`scale`]: the per-packet scenarios and the scale curves.
//! - [`control`]: Maglev builds, disruption, reconcile and reload times, memory.
//! - [`live`]: `BPF_F_TEST_XDP_LIVE_FRAMES` on a real interface (run inside a namespace).
//! - [`failover`]: the multi-LB testbed through node loss, return and drain.
//! - [`reliability`]: load with faults (a SYN flood filling the flow table, long-lived
//!   connections, a backend failing and returning).
//! - [`sys`]: CPU pinning, RSS and memlock readings, machine facts.

pub mod control;
pub mod failover;
pub mod fixture;
pub mod live;
pub mod packet;
pub mod reliability;
pub mod runner;
pub mod scale;
pub mod sys;
