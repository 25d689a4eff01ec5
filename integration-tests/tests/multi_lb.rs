//! Several xlb nodes behind a router (`xlb_testkit::testbed::cluster`): BIRD on the router and
//! on each node (configs rendered from dist/bird/), ECMP with L4 hashing on the router, backends
//! answering the client straight (dsr-l2). The routes a node's agent will write into table 200
//! are written by the testbed (`LbNode::announce_manually`) until the agent does it itself.
//!
//! Needs root, bpffs and bird2 (`cargo xtask setup`); fails loudly rather than skip. The traffic
//! test runs a bounded number of connections for a bounded time; its timing bound is the one the
//! design promises: the longest gap any connection sees stays below the BFD detection time of
//! the shipped configs plus 1 s.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use xlb_testkit::testbed::bird::bfd_detection;
use xlb_testkit::testbed::failover::{
    PhaseOutcome, all_paths, announced_cluster, bring_up_node, failover_vip, phase_sessions,
    run_phase,
};
use xlb_testkit::testbed::{Cluster, ClusterOptions, Mode};

fn xlb() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_xlb-under-test"))
}

#[test]
fn the_router_has_one_path_per_announcing_node_and_loses_it_on_withdrawal() {
    let c = Cluster::up(&ClusterOptions::for_test("mlb-routes", 3, 1));
    for v6 in [false, true] {
        let vip = Mode::DsrL2.vip(v6);
        let all: BTreeSet<_> = (0..3).map(|i| c.node_addr(i, v6)).collect();
        assert!(
            c.router_next_hops(vip).is_empty(),
            "a route before any announcement"
        );
        for n in &c.lbs {
            n.announce_manually(vip);
        }
        c.wait_next_hops(vip, &all, Duration::from_secs(20));
        c.lbs[1].withdraw_manually(vip);
        let mut rest = all.clone();
        rest.remove(&c.node_addr(1, v6));
        let t = c.wait_next_hops(vip, &rest, Duration::from_secs(5));
        eprintln!("{vip}: withdrawal reached the router in {t:?}");
        c.lbs[1].announce_manually(vip);
        c.wait_next_hops(vip, &all, Duration::from_secs(5));
        for n in &c.lbs {
            n.withdraw_manually(vip);
        }
        c.wait_next_hops(vip, &BTreeSet::new(), Duration::from_secs(5));
    }
}

fn report(what: &str, o: &PhaseOutcome) {
    let s = &o.summary;
    eprintln!(
        "{what}: event at {:?}; connections tried {}, survived {}, failed {}; longest gap p50 {:?}, \
         p100 {:?}; new connections {} tried, {} failed",
        o.event_at, s.tried, s.survived, s.failed, s.gap_p50, s.gap_p100, o.new_tried, o.new_failed
    );
    for r in o.sessions.iter().filter(|r| r.failed()).take(10) {
        eprintln!("  failed: {r:?}");
    }
}

#[test]
fn losing_returning_and_draining_a_node_breaks_no_connection() {
    let mut c = announced_cluster(&ClusterOptions::for_test("mlb-fail", 3, 3), xlb());
    let vip = failover_vip().id().addr;
    let sessions = phase_sessions(300, Duration::from_secs(8));
    let bound = bfd_detection() + Duration::from_secs(1);

    // Node loss: lb2 crashes (link down, agent and BIRD killed).
    let mut detected = Duration::ZERO;
    let loss = run_phase(&mut c, &sessions, Duration::from_secs(3), |c| {
        c.crash_node(1);
        let mut rest = all_paths(c);
        rest.remove(&c.node_addr(1, false));
        detected = c.wait_next_hops(vip, &rest, Duration::from_secs(5));
    });
    eprintln!("node loss: the router dropped lb2 {detected:?} after the crash");
    report("node loss", &loss);
    assert_eq!(loss.summary.failed, 0, "connections broke on node loss");
    assert!(
        loss.summary.gap_p100 < bound,
        "longest gap {:?} over the bound {bound:?}",
        loss.summary.gap_p100
    );

    // Node return: lb2 comes back (link, BIRD, agent adopting its pins, announcement).
    let back = run_phase(&mut c, &sessions, Duration::from_secs(2), |c| {
        bring_up_node(c, 1, xlb(), true);
        let all = all_paths(c);
        c.wait_next_hops(vip, &all, Duration::from_secs(20));
    });
    report("node return", &back);
    assert_eq!(back.summary.failed, 0, "connections broke on node return");
    assert_eq!(back.new_failed, 0, "new connections failed on node return");

    // Planned drain: lb3 withdraws, the router moves its flows away, then it stops.
    let drain = run_phase(&mut c, &sessions, Duration::from_secs(2), |c| {
        c.lbs[2].withdraw_manually(vip);
        let mut rest = all_paths(c);
        rest.remove(&c.node_addr(2, false));
        c.wait_next_hops(vip, &rest, Duration::from_secs(5));
        std::thread::sleep(Duration::from_secs(2));
        c.crash_node(2);
    });
    report("drain", &drain);
    assert_eq!(drain.summary.failed, 0, "connections broke on drain");
    assert_eq!(drain.new_failed, 0, "new connections failed on drain");
}
