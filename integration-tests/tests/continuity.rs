//! Flow continuity across nodes (issue 12): several xlb nodes behind a BIRD router with ECMP,
//! 300 long-lived TCP connections (one request per 100 ms each), a ring change on every node
//! (a backend added, drained, or re-weighted), then the router moves flows between nodes (a
//! node crashes, joins, or drains). Each scenario runs twice on one cluster: without
//! `[continuity]`, where the connections that were both remapped by the ring and moved by the
//! router must break (the test proves the mechanism, not luck), and with it, where none may.
//! The scenarios and the per-connection bookkeeping are xlb-testkit's
//! (`testbed::continuity_scenarios`), shared with `cargo xtask bench --only failover`.
//!
//! Needs root, bpffs and bird2 (`cargo xtask setup`); fails loudly rather than skip. Bounded:
//! 300 connections per run, each run under a minute; the tests of this file run one at a time
//! (each builds a cluster of 3 nodes and loads two cores).

use std::path::Path;
use std::sync::Mutex;

use xlb_testkit::testbed::continuity_scenarios::{
    ContinuityOutcome, Scenario, Timing, prepare, run, scenarios,
};
use xlb_testkit::testbed::{Cluster, ClusterOptions};

fn xlb() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_xlb-under-test"))
}

/// Serialises this file's tests even without `--test-threads=1`: two clusters with 300
/// sessions each on two cores would time each other out.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Fewer at-risk connections than this and a run proves nothing either way. With 300
/// connections each scenario expects many tens (about 1/4 to 1/3 of the flows remapped, times
/// 1/3 to 1/2 of them moved).
const MIN_AT_RISK: usize = 10;

/// Without continuity: the at-risk connections break (all but a tenth: slack for the
/// bookkeeping, which asks `ip route get` for the router's choice rather than watching the
/// wire), and nothing else does.
fn assert_off(o: &ContinuityOutcome) {
    let c = &o.counts;
    assert!(
        c.at_risk >= MIN_AT_RISK,
        "{}: only {} connections at risk; the run cannot show the loss",
        o.scenario,
        c.at_risk
    );
    assert!(
        c.failed_at_risk > 0 && c.failed_at_risk * 10 >= c.at_risk * 9,
        "{}: without continuity only {} of {} at-risk connections broke: the loss the test \
         relies on did not show",
        o.scenario,
        c.failed_at_risk,
        c.at_risk
    );
    assert_eq!(
        c.failed_unexplained, 0,
        "{}: connections broke that were not at risk",
        o.scenario
    );
}

/// With continuity: every connection completes all its requests (every backend stays healthy
/// here). The target allows 0.1 % with a stated reason (printed by `render`), which for 300
/// connections is none.
fn assert_on(o: &ContinuityOutcome) {
    let c = &o.counts;
    assert!(
        c.at_risk >= MIN_AT_RISK,
        "{}: only {} connections at risk; a run without loss would prove nothing",
        o.scenario,
        c.at_risk
    );
    let allowed = c.tried / 1000;
    assert!(
        c.failed <= allowed,
        "{}: with continuity {} of {} connections broke ({} of them at risk); at most {allowed} \
         allowed",
        o.scenario,
        c.failed,
        c.tried,
        c.failed_at_risk
    );
}

/// Both runs of `s` on one cluster: off first (fresh maps either way: `prepare` detaches).
fn off_and_on(tag: &str, s: &Scenario) {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut c = Cluster::up(&ClusterOptions::for_test(tag, s.lbs, s.backends));
    let t = Timing::default();
    prepare(&mut c, s, false, xlb());
    let off = run(&mut c, s, xlb(), &t);
    eprint!("{}", off.render());
    prepare(&mut c, s, true, xlb());
    let on = run(&mut c, s, xlb(), &t);
    eprint!("{}", on.render());
    eprintln!(
        "{}: lost without continuity {} of {} ({} at risk), with continuity {} of {} ({} at risk)",
        s.name,
        off.counts.failed,
        off.counts.tried,
        off.counts.at_risk,
        on.counts.failed,
        on.counts.tried,
        on.counts.at_risk
    );
    assert_off(&off);
    assert_on(&on);
}

fn scenario(i: usize) -> Scenario {
    scenarios()[i].clone()
}

#[test]
fn added_backend_then_lost_node() {
    off_and_on("cont-add", &scenario(0));
}

#[test]
fn drained_backend_then_added_node() {
    off_and_on("cont-drain", &scenario(1));
}

#[test]
fn reweighted_backend_then_drained_node() {
    off_and_on("cont-weight", &scenario(2));
}
