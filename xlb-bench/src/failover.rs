//! `xlb-bench failover`: the multi-LB testbed (3 nodes behind a router, BGP+BFD through BIRD,
//! ECMP) under long-lived connections, through node loss, node return and a planned drain, then
//! the flow-continuity scenarios with continuity off and on; the figures of each. The scenarios
//! are xlb-testkit's (`testbed::failover`, `testbed::continuity_scenarios`), the ones the root
//! tests assert on; here they are only measured.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::time::Duration;

use xlb_bench_data::failover::{BfdSettings, ContinuityRun, FailoverPhase, FailoverResult};
use xlb_testkit::testbed::bird::{BFD_INTERVAL, BFD_MULTIPLIER, bfd_detection};
use xlb_testkit::testbed::continuity_scenarios::{
    ContinuityOutcome, Scenario, Timing, prepare, run as run_scenario, scenarios,
};
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
    drop(c);

    let timing = Timing {
        connections,
        tail: Duration::from_secs(seconds),
        ..Timing::default()
    };
    let continuity = scenarios()
        .iter()
        .flat_map(|s| continuity_pair(xlb, s, &timing))
        .collect();

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
        continuity,
    }
}

fn continuity_run(o: &ContinuityOutcome) -> ContinuityRun {
    let (c, s) = (&o.counts, &o.summary);
    ContinuityRun {
        scenario: o.scenario.into(),
        continuity: o.continuity,
        connections_tried: c.tried,
        connections_survived: s.survived,
        connections_failed: c.failed,
        remapped: c.remapped,
        moved: c.moved,
        at_risk: c.at_risk,
        failed_at_risk: c.failed_at_risk,
        gap_p50_ms: s.gap_p50.as_secs_f64() * 1e3,
        gap_p100_ms: s.gap_p100.as_secs_f64() * 1e3,
        ring_converged_ms: o.ring_converged.as_secs_f64() * 1e3,
        exceptions_exchanged_ms: o.exceptions_exchanged.map(|d| d.as_secs_f64() * 1e3),
        router_converged_ms: o.router_converged.as_secs_f64() * 1e3,
        error: None,
    }
}

fn failed_run(s: &Scenario, on: bool, error: String) -> ContinuityRun {
    ContinuityRun {
        scenario: s.name.into(),
        continuity: on,
        connections_tried: 0,
        connections_survived: 0,
        connections_failed: 0,
        remapped: 0,
        moved: 0,
        at_risk: 0,
        failed_at_risk: 0,
        gap_p50_ms: 0.0,
        gap_p100_ms: 0.0,
        ring_converged_ms: 0.0,
        exceptions_exchanged_ms: None,
        router_converged_ms: 0.0,
        error: Some(error),
    }
}

/// Scenario `s` without, then with continuity, on one cluster. A run that panics (an agent
/// refusing its config, a timeout) is reported as an error rather than ending the stage, so the
/// other figures survive; its cluster is torn down (on drop) since its state is unknown, and
/// the scenario's remaining run is reported as not run.
fn continuity_pair(xlb: &Path, s: &Scenario, t: &Timing) -> Vec<ContinuityRun> {
    let opts = ClusterOptions::for_test("bench-cont", s.lbs, s.backends);
    eprintln!("failover: continuity, {} ({})", s.name, opts.prefix);
    let mut out = Vec::new();
    let mut c = match catch_unwind(AssertUnwindSafe(|| Cluster::up(&opts))) {
        Ok(c) => c,
        Err(e) => {
            let why = panic_text(&*e);
            return [false, true]
                .map(|on| failed_run(s, on, why.clone()))
                .into();
        }
    };
    for on in [false, true] {
        let r = catch_unwind(AssertUnwindSafe(|| {
            prepare(&mut c, s, on, xlb);
            run_scenario(&mut c, s, xlb, t)
        }));
        match r {
            Ok(o) => {
                eprint!("{}", o.render());
                out.push(continuity_run(&o));
            }
            Err(e) => {
                out.push(failed_run(s, on, panic_text(&*e)));
                if !on {
                    out.push(failed_run(
                        s,
                        true,
                        "not run: the run without continuity failed".into(),
                    ));
                }
                break;
            }
        }
    }
    out
}

/// A panic's message on one line, at most 400 characters: panics here carry an agent's log
/// tail, whose last lines usually hold the reason (a refused config key, say).
fn panic_text(e: &(dyn std::any::Any + Send)) -> String {
    let text = e
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panic".into());
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut one = lines.join(" / ");
    if one.chars().count() > 400 {
        let head: String = lines[0].chars().take(150).collect();
        let tail: String = {
            let chars: Vec<char> = one.chars().collect();
            chars[chars.len() - 240..].iter().collect()
        };
        one = format!("{head} ... {tail}");
    }
    one
}
