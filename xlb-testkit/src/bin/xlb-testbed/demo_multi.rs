//! `cargo xtask demo --lbs N`: several xlb nodes behind a router, told as a story: traffic
//! spreads over the nodes, one node dies and the connections carry on, it comes back. Bounded
//! (a fixed number of connections per step, a time limit on every wait); everything is removed
//! at the end, on failure and on Ctrl-C.

use std::path::Path;
use std::time::{Duration, Instant};

use xlb_testkit::testbed::bird::{BFD_INTERVAL, BFD_MULTIPLIER, bfd_detection};
use xlb_testkit::testbed::failover::{
    all_paths, announced_cluster, bring_up_node, failover_vip, phase_sessions, run_phase,
};
use xlb_testkit::testbed::{Cluster, ClusterOptions, ROUTED_CLIENT_V4, ROUTER_V4, http_load};

use crate::demo::{catch_signals, check, demo_names, step};

fn show_route(c: &Cluster) {
    let vip = failover_vip().id().addr;
    println!("$ ip -n {} route show {vip}", c.router.name);
    for line in c.router.ip(&["route", "show", &vip.to_string()]).lines() {
        println!("    {line}");
    }
}

fn counts(c: &Cluster) -> Vec<u64> {
    (0..c.lbs.len()).map(|i| c.node_packets(i)).collect()
}

/// Packets each node received between two [`counts`], as bars.
fn spread(c: &Cluster, before: &[u64], after: &[u64]) {
    let d: Vec<u64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
    let total = d.iter().sum::<u64>().max(1);
    for (n, p) in c.lbs.iter().zip(&d) {
        println!(
            "    {:<4} {:<40} {p:>6} packets ({:>3.0}%)",
            n.name,
            "#".repeat((p * 40 / total) as usize),
            *p as f64 * 100.0 / total as f64
        );
    }
}

pub fn run(xlb: &Path, lbs: usize, backends: usize) -> Result<(), String> {
    if lbs < 2 {
        return Err("the multi-node demo needs at least 2 LB nodes".into());
    }
    catch_signals();
    let started = Instant::now();
    println!(
        "Several xlb nodes announce the same VIP to a router over BGP (BIRD on every box); the \
         router spreads\nflows over them with ECMP (hashing on addresses and ports). Every \
         node builds the same Maglev\nring, so whichever node a flow reaches, it picks the same \
         backend: a node can die, come or go\nwithout breaking connections."
    );
    step(
        1,
        "A testbed of network namespaces: client, router, LB nodes, backends",
    );
    let (prefix, work_dir) = demo_names();
    let opts = ClusterOptions {
        work_dir,
        prefix,
        lbs,
        backends,
    };
    let mut c = announced_cluster(&opts, xlb);
    check()?;
    println!("    client  {ROUTED_CLIENT_V4:<15} behind the router");
    println!(
        "    router  {ROUTER_V4:<15} BIRD, BGP+BFD to every node ({} ms x {BFD_MULTIPLIER}), \
         ECMP with L4 hashing",
        BFD_INTERVAL.as_millis()
    );
    for n in &c.lbs {
        println!("    {:<7} {:<15} xlb run + BIRD", n.name, n.v4.to_string());
    }
    for b in &c.backends {
        println!(
            "    {:<7} {:<15} answers the client straight (DSR)",
            b.name,
            b.v4.to_string()
        );
    }
    println!(
        "    BIRD configs: dist/bird/xlb-node.conf and dist/bird/router.conf, rendered into {}",
        c.work_dir.display()
    );

    step(
        2,
        "Every node's agent announces the VIP (`[announce]`): the router has one path per node",
    );
    show_route(&c);

    step(
        3,
        "300 new connections from the client: how the nodes share them",
    );
    let target = phase_sessions(1, Duration::ZERO).target;
    let before = counts(&c);
    let ns = c.client.name.clone();
    let t = xlb_testkit::netns::enter_named(&ns, move || {
        http_load(target, 300, 2, Duration::from_secs(30), &|_, _| {})
    });
    spread(&c, &before, &counts(&c));
    println!("    {} answered, {} failed", t.ok(), t.failures.len());
    check()?;

    step(
        4,
        "lb2 crashes (link down, agent and BIRD killed) under 100 long-lived connections",
    );
    let before = counts(&c);
    let mut detected = Duration::ZERO;
    let vip = failover_vip().id().addr;
    let loss = run_phase(
        &mut c,
        &phase_sessions(100, Duration::from_secs(6)),
        Duration::from_secs(2),
        |c| {
            c.crash_node(1);
            let mut rest = all_paths(c);
            rest.remove(&c.node_addr(1, false));
            detected = c.wait_next_hops(vip, &rest, Duration::from_secs(5));
        },
    );
    println!(
        "    the router dropped lb2 {:.0} ms after the crash (BFD detection {} ms)",
        detected.as_secs_f64() * 1e3,
        bfd_detection().as_millis()
    );
    show_route(&c);
    let s = &loss.summary;
    println!(
        "    connections: {} open, {} survived, {} failed; longest pause a connection saw: {:.0} ms",
        s.tried,
        s.survived,
        s.failed,
        s.gap_p100.as_secs_f64() * 1e3
    );
    spread(&c, &before, &counts(&c));
    check()?;

    step(5, "lb2 comes back (link, BIRD, agent) and announces again");
    let before = counts(&c);
    let back = run_phase(
        &mut c,
        &phase_sessions(100, Duration::from_secs(6)),
        Duration::from_secs(1),
        |c| {
            bring_up_node(c, 1, xlb, true);
            let all = all_paths(c);
            c.wait_next_hops(vip, &all, Duration::from_secs(20));
        },
    );
    show_route(&c);
    let s = &back.summary;
    println!(
        "    connections: {} open, {} survived, {} failed; new connections: {} tried, {} failed",
        s.tried, s.survived, s.failed, back.new_tried, back.new_failed
    );
    spread(&c, &before, &counts(&c));

    step(6, "Tear down");
    drop(c);
    println!(
        "    namespaces, processes and pins removed. The demo took {:.0} s.",
        started.elapsed().as_secs_f64()
    );
    if loss.summary.failed + back.summary.failed > 0 {
        return Err("connections failed (see above)".into());
    }
    Ok(())
}
