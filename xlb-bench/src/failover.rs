//! `xlb-bench failover`: the multi-LB testbed (3 nodes behind a router, BGP+BFD through BIRD,
//! ECMP) under long-lived connections, through node loss, node return and a planned drain; the
//! figures of each phase. The scenarios are xlb-testkit's (`testbed::failover`), the ones the
//! root tests assert on; here they are only measured.

use std::path::Path;
use std::time::Duration;

use xlb_bench_data::failover::{BfdSettings, FailoverPhase, FailoverResult};
use xlb_testkit::testbed::bird::{BFD_INTERVAL, BFD_MULTIPLIER, bfd_detection};
use xlb_testkit::testbed::failover::{
    PhaseOutcome, all_paths, announced_cluster, bring_up_node, failover_vip, phase_sessions,
    run_phase,
};
use xlb_testkit::testbed::{Cluster, ClusterOptions};

fn phase(name: &str, o: &PhaseOutcome, converged: Duration) -> FailoverPhase {
    let s = &o.summary;
    FailoverPhase {
        name: name.into(),
        connections_tried: s.tried,
        connections_survived: s.survived,
        connections_failed: s.failed,
        gap_p50_ms: s.gap_p50.as_secs_f64() * 1e3,
        gap_p100_ms: s.gap_p100.as_secs_f64() * 1e3,
        new_connections_tried: o.new_tried,
        new_connections_failed: o.new_failed,
        router_converged_ms: converged.as_secs_f64() * 1e3,
    }
}

/// Waits for the router's paths to be every node's but `without`'s.
fn wait_paths(c: &Cluster, without: Option<usize>) -> Duration {
    let mut want = all_paths(c);
    if let Some(i) = without {
        want.remove(&c.node_addr(i, false));
    }
    c.wait_next_hops(failover_vip().id().addr, &want, Duration::from_secs(20))
}

pub fn run(xlb: &Path, connections: usize, seconds: u64) -> FailoverResult {
    let (lbs, backends) = (3, 3);
    let opts = ClusterOptions::for_test("bench-failover", lbs, backends);
    eprintln!("failover: building {} with {lbs} LB nodes", opts.prefix);
    let mut c = announced_cluster(&opts, xlb);
    let sessions = phase_sessions(connections, Duration::from_secs(seconds));
    let mut phases = Vec::new();

    eprintln!("failover: node loss");
    let mut t = Duration::ZERO;
    let o = run_phase(&mut c, &sessions, Duration::from_secs(3), |c| {
        c.crash_node(1);
        t = wait_paths(c, Some(1));
    });
    phases.push(phase("node loss", &o, t));

    eprintln!("failover: node return");
    let o = run_phase(&mut c, &sessions, Duration::from_secs(2), |c| {
        let start = std::time::Instant::now();
        bring_up_node(c, 1, xlb, true);
        wait_paths(c, None);
        t = start.elapsed();
    });
    phases.push(phase("node return", &o, t));

    eprintln!("failover: drain");
    let o = run_phase(&mut c, &sessions, Duration::from_secs(2), |c| {
        c.lbs[2].drain();
        t = wait_paths(c, Some(2));
        std::thread::sleep(Duration::from_secs(2));
        c.crash_node(2);
    });
    phases.push(phase("drain", &o, t));

    FailoverResult {
        lbs,
        backends,
        connections,
        request_interval_ms: sessions.interval.as_millis() as u64,
        bfd: BfdSettings {
            interval_ms: BFD_INTERVAL.as_millis() as u64,
            multiplier: BFD_MULTIPLIER,
            detection_ms: bfd_detection().as_millis() as u64,
        },
        phases,
    }
}
