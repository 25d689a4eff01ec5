//! Several xlb nodes behind a router (`xlb_testkit::testbed::cluster`): BIRD on the router and
//! on each node (configs rendered from dist/bird/), ECMP with L4 hashing on the router, backends
//! answering the client straight (dsr-l2). Each node's agent announces its ready VIPs
//! (`[announce]`, kernel table 200) and the node's BIRD exports them to the router, so these
//! tests check announcements where they matter: in the router's routing table.
//!
//! Needs root, bpffs and bird2 (`cargo xtask setup`); fails loudly rather than skip. The traffic
//! test runs a bounded number of connections for a bounded time; its timing bound is the one the
//! design promises: the longest gap any connection sees stays below the BFD detection time of
//! the shipped configs plus 1 s.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use xlb_testkit::netns::enter_named;
use xlb_testkit::testbed::bird::bfd_detection;
use xlb_testkit::testbed::cluster::{VIP_TABLE, next_hops};
use xlb_testkit::testbed::failover::{
    PhaseOutcome, all_paths, announced_cluster, bring_up_node, failover_vip, phase_sessions,
    run_phase,
};
use xlb_testkit::testbed::{
    Cluster, ClusterOptions, HTTP_PORT, Mode, StoppableThread, VipSpec, http_get, tail,
};

fn xlb() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_xlb-under-test"))
}

/// The nodes' addresses in one family, but those of `except`: the router's next hops when
/// exactly those nodes announce.
fn paths(c: &Cluster, v6: bool, except: &[usize]) -> BTreeSet<IpAddr> {
    (0..c.lbs.len())
        .filter(|i| !except.contains(i))
        .map(|i| c.node_addr(i, v6))
        .collect()
}

/// Waits until the router's paths to both VIPs are those of every node but `except`.
fn wait_paths(c: &Cluster, vips: [IpAddr; 2], except: &[usize], what: &str, timeout: Duration) {
    for vip in vips {
        let t = c.wait_next_hops(vip, &paths(c, vip.is_ipv6(), except), timeout);
        eprintln!("{what}: {vip} at the router after {t:?}");
    }
}

#[test]
fn the_router_follows_the_agents_announcements() {
    let mut c = Cluster::up(&ClusterOptions::for_test("mlb-routes", 3, 1));
    let (v4, v6) = (
        VipSpec::tcp(Mode::DsrL2, false),
        VipSpec::tcp(Mode::DsrL2, true),
    );
    let vips = [v4.id().addr, v6.id().addr];
    for vip in vips {
        assert!(
            c.router_next_hops(vip).is_empty(),
            "{vip}: a route before any agent runs"
        );
    }

    // Every agent becomes ready: one path per node, in both families.
    for i in 0..3 {
        let config = c.node_config(i, "", &[v4.clone(), v6.clone()]);
        c.start_agent(i, xlb(), &config);
    }
    wait_paths(&c, vips, &[], "agents ready", Duration::from_secs(30));

    // The VIPs' only backend fails: every node withdraws; it recovers: every node announces.
    c.stop_backend(0);
    wait_paths(
        &c,
        vips,
        &[0, 1, 2],
        "backend down",
        Duration::from_secs(10),
    );
    c.start_backend(0);
    wait_paths(&c, vips, &[], "backend up", Duration::from_secs(10));

    // lb2 drains, then undrains.
    c.lbs[1].drain();
    wait_paths(&c, vips, &[1], "lb2 drained", Duration::from_secs(5));
    c.lbs[1].undrain();
    wait_paths(&c, vips, &[], "lb2 undrained", Duration::from_secs(5));

    // lb1's agent is killed (-9) and restarted: the router keeps lb1's path throughout.
    let sampler = StoppableThread::spawn({
        let (router, vip) = (c.router.name.clone(), vips[0]);
        move |stop| {
            let mut samples = Vec::new();
            // Bounded: the test stops it long before.
            let deadline = Instant::now() + Duration::from_secs(120);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let out = Command::new("ip")
                    .args(["-n", &router, "route", "show", "exact", &vip.to_string()])
                    .output()
                    .expect("running ip");
                samples.push(next_hops(&String::from_utf8_lossy(&out.stdout)));
                std::thread::sleep(Duration::from_millis(20));
            }
            samples
        }
    });
    std::thread::sleep(Duration::from_millis(200));
    c.kill_agent(0);
    std::thread::sleep(Duration::from_secs(1));
    let config = c.node_config(0, "", &[v4.clone(), v6.clone()]);
    c.start_agent(0, xlb(), &config);
    c.wait_all_active(0, Duration::from_secs(15));
    // Past the restarted agent's first reconcile, when a wrong withdrawal would show.
    std::thread::sleep(Duration::from_secs(1));
    sampler.stop();
    let samples = sampler.join("sampler thread");
    let all = paths(&c, false, &[]);
    let short = samples.iter().filter(|s| **s != all).count();
    assert!(samples.len() >= 50, "only {} samples", samples.len());
    assert_eq!(
        short,
        0,
        "the router lacked a path at {short} of {} samples during lb1's kill -9 and restart",
        samples.len()
    );

    // lb3 stops with --detach: its path goes.
    c.stop_detach(2);
    wait_paths(
        &c,
        vips,
        &[2],
        "lb3 stopped --detach",
        Duration::from_secs(5),
    );
}

/// Prints a phase's figures; where connections failed, also each running agent's log tail
/// (health transitions and ring changes there explain most failures).
/// BIRD's checks as node `i`'s agent last ran them (`None`: not yet).
fn bird_problems(c: &Cluster, i: usize) -> Option<Vec<String>> {
    let r = c.lbs[i].status();
    let a = r.announce.expect("[announce] status");
    a.bird.map(|p| {
        p.iter()
            .map(|p| format!("{} ({})", p.headline(), p.fix.join("; ")))
            .collect()
    })
}

/// Waits (at most `timeout`: BIRD is checked every 10 s) until `done` holds of node `i`'s
/// BIRD problems; returns them.
fn wait_bird(
    c: &Cluster,
    i: usize,
    what: &str,
    timeout: Duration,
    done: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let p = bird_problems(c, i);
        if let Some(p) = p.as_deref().filter(|p| done(p)) {
            return p.to_vec();
        }
        assert!(
            Instant::now() < deadline,
            "{what}: BIRD problems of {} after {timeout:?}: {p:?}",
            c.lbs[i].name
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A stopped BIRD changes nothing on the node (routes stay in the table, the program stays)
/// but the routers lose the node: the agent says so in `xlb status` with doctor's fix, and the
/// VIP keeps answering through the other node. BIRD back: the path and a clean status return.
/// Then the router goes away: the BGP session that does not come up is reported the same way.
#[test]
fn a_stopped_bird_or_a_lost_bgp_session_is_reported_and_the_vip_keeps_answering() {
    let mut c = Cluster::up(&ClusterOptions::for_test("mlb-bird", 2, 1));
    let vip = failover_vip();
    let addr = vip.id().addr;
    for i in 0..2 {
        let config = c.node_config(i, "", std::slice::from_ref(&vip));
        c.start_agent(i, xlb(), &config);
    }
    c.wait_next_hops(addr, &paths(&c, false, &[]), Duration::from_secs(30));
    wait_bird(&c, 0, "BIRD healthy", Duration::from_secs(25), |p| {
        p.is_empty()
    });

    c.kill_bird(0);
    c.wait_next_hops(addr, &paths(&c, false, &[0]), Duration::from_secs(5));
    let problems = wait_bird(&c, 0, "BIRD stopped", Duration::from_secs(25), |p| {
        p.iter().any(|l| l.starts_with("bird:"))
    });
    eprintln!("lb1 reports: {problems:?}");
    assert!(
        problems
            .iter()
            .any(|l| l.contains("systemctl") || l.contains("bird ")),
        "the status gives a fix: {problems:?}"
    );
    let table = c.lbs[0]
        .ns
        .ip(&["route", "show", "table", &VIP_TABLE.to_string()]);
    assert!(
        table.contains(&addr.to_string()),
        "the agent's route stays while BIRD is away: {table}"
    );
    let r = c.lbs[0].status();
    let a = r.announce.as_ref().expect("[announce] status");
    assert!(
        a.addresses.iter().any(|s| s.addr == addr && s.announced),
        "{}",
        r.render_table()
    );
    let target = SocketAddr::new(addr, HTTP_PORT);
    let ok = enter_named(&c.client.name, move || {
        (0..20)
            .filter(|_| http_get(target, "/", Duration::from_secs(2)).is_ok())
            .count()
    });
    assert_eq!(ok, 20, "requests through the remaining node");

    c.start_bird(0);
    c.wait_next_hops(addr, &paths(&c, false, &[]), Duration::from_secs(20));
    wait_bird(&c, 0, "BIRD back", Duration::from_secs(25), |p| {
        p.is_empty()
    });

    // The router goes away: BIRD runs, but its BGP session does not come up; the agent says
    // which session and keeps its route.
    c.kill_router_bird();
    let problems = wait_bird(&c, 0, "router gone", Duration::from_secs(25), |p| {
        p.iter().any(|l| l.starts_with("bgp"))
    });
    eprintln!("lb1 reports: {problems:?}");
    assert!(
        c.lbs[0]
            .ns
            .ip(&["route", "show", "table", &VIP_TABLE.to_string()])
            .contains(&addr.to_string()),
        "the agent's route stays while BGP is down"
    );
    c.start_router_bird();
    c.wait_next_hops(addr, &paths(&c, false, &[]), Duration::from_secs(30));
    wait_bird(&c, 0, "router back", Duration::from_secs(25), |p| {
        p.is_empty()
    });
}

fn report(c: &Cluster, what: &str, o: &PhaseOutcome) {
    let s = &o.summary;
    eprintln!(
        "{what}: event at {:?}; connections tried {}, survived {}, failed {}; longest gap p50 {:?}, \
         p100 {:?}; new connections {} tried, {} failed",
        o.event_at, s.tried, s.survived, s.failed, s.gap_p50, s.gap_p100, o.new_tried, o.new_failed
    );
    for r in o.sessions.iter().filter(|r| r.failed()).take(10) {
        eprintln!("  failed: {r:?}");
    }
    if s.failed > 0 || o.new_failed > 0 {
        for n in c.lbs.iter().filter(|n| n.agent_running()) {
            eprintln!(
                "{} agent log:\n{}",
                n.name,
                tail(&n.agent_log_path(&c.work_dir), 40)
            );
        }
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
    report(&c, "node loss", &loss);
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
    report(&c, "node return", &back);
    assert_eq!(back.summary.failed, 0, "connections broke on node return");
    assert_eq!(back.new_failed, 0, "new connections failed on node return");

    // Planned drain: lb3 withdraws, the router moves its flows away, then it stops.
    let drain = run_phase(&mut c, &sessions, Duration::from_secs(2), |c| {
        c.lbs[2].drain();
        let mut rest = all_paths(c);
        rest.remove(&c.node_addr(2, false));
        c.wait_next_hops(vip, &rest, Duration::from_secs(5));
        std::thread::sleep(Duration::from_secs(2));
        c.crash_node(2);
    });
    report(&c, "drain", &drain);
    assert_eq!(drain.summary.failed, 0, "connections broke on drain");
    assert_eq!(drain.new_failed, 0, "new connections failed on drain");
}
