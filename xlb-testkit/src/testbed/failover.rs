//! The failover scenarios of the multi-LB testbed, shared by `integration-tests/tests/multi_lb.rs`
//! and the failover bench: a [`Cluster`] whose nodes all forward one `dsr-l2` TCP VIP, and a
//! phase runner that keeps long-lived sessions and a stream of new connections going while
//! something happens to a node.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::cluster::{Cluster, ClusterOptions};
use super::plan::{HTTP_PORT, Mode, VipSpec};
use super::sessions::{SessionOptions, SessionReport, SessionSummary, Sessions, summarize};
use super::traffic::http_get;
use crate::netns::enter_named;

/// The VIP every node forwards: TCP port 80 of the dsr-l2 address. Its health check tolerates
/// a stall of a second or two (three misses of 800 ms): these scenarios keep every backend
/// healthy, and on a loaded 2-core machine the faster test check could mark one down by
/// mistake, moving its flows and resetting their connections.
pub fn failover_vip() -> VipSpec {
    VipSpec::tcp(Mode::DsrL2, false).health(
        "  kind = \"http\"\n  path = \"/healthz\"\n  interval = \"1s\"\n  timeout = \"800ms\"\n  \
         rise = 1\n  fall = 3\n",
    )
}

/// The failover VIP as the testbed tools print it (`tcp/203.0.113.12:80 (dsr-l2)`).
pub fn failover_vip_note() -> String {
    format!("{} (dsr-l2)", failover_vip().id())
}

/// A cluster of `lbs` nodes and `backends` backends, each node's agent running
/// [`failover_vip`] with every backend active and announcing it, and the router holding a path
/// to each node.
pub fn announced_cluster(opts: &ClusterOptions, xlb: &Path) -> Cluster {
    let mut c = Cluster::up(opts);
    let vip = failover_vip();
    c.vips = vec![vip.clone()];
    for i in 0..c.lbs.len() {
        bring_up_node(&mut c, i, xlb, false);
    }
    c.wait_next_hops(vip.id().addr, &all_paths(&c), Duration::from_secs(30));
    c
}

/// Every node's address: the router's next hops when all announce.
pub fn all_paths(c: &Cluster) -> BTreeSet<IpAddr> {
    (0..c.lbs.len()).map(|i| c.node_addr(i, false)).collect()
}

/// Starts node `i`'s agent with the cluster's VIPs ([`Cluster::vips`]; [`failover_vip`] when
/// none are set) after [`Cluster::revive_node`] when `revive`, and waits until its backends
/// are as those VIPs say ([`Cluster::wait_settled`]); the agent announces once it is ready.
pub fn bring_up_node(c: &mut Cluster, i: usize, xlb: &Path, revive: bool) {
    if revive {
        c.revive_node(i);
    }
    if c.vips.is_empty() {
        c.vips = vec![failover_vip()];
    }
    let config = c.node_config(i, "", &c.vips);
    c.start_agent(i, xlb, &config);
    c.wait_settled(i, Duration::from_secs(30));
}

/// The sessions of a phase: `connections` connections, one request per 100 ms, for `duration`.
pub fn phase_sessions(connections: usize, duration: Duration) -> SessionOptions {
    SessionOptions {
        target: SocketAddr::new(failover_vip().id().addr, HTTP_PORT),
        connections,
        interval: Duration::from_millis(100),
        duration,
        ramp: Duration::from_secs(1),
        request_timeout: Duration::from_secs(5),
        local_ports: Vec::new(),
    }
}

/// What a phase saw.
#[derive(Debug)]
pub struct PhaseOutcome {
    pub sessions: Vec<SessionReport>,
    pub summary: SessionSummary,
    /// New connections (one HTTP/1.0 request each) attempted during the phase, and failed.
    pub new_tried: u64,
    pub new_failed: u64,
    /// When the event ran, since the sessions started.
    pub event_at: Duration,
}

/// Runs `opts`'s sessions and a stream of new connections (one every 20 ms) from the client;
/// `event_at` after the start (the sessions are established by then) runs `event` on the
/// cluster; then waits for the sessions' end.
pub fn run_phase(
    c: &mut Cluster,
    opts: &SessionOptions,
    event_at: Duration,
    event: impl FnOnce(&mut Cluster),
) -> PhaseOutcome {
    let sessions = Sessions::start(Some(&c.client.name), opts);
    let stop = Arc::new(AtomicBool::new(false));
    let (tried, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let newconns = {
        let (ns, stop, tried, failed) = (
            c.client.name.clone(),
            stop.clone(),
            tried.clone(),
            failed.clone(),
        );
        let (target, end) = (opts.target, sessions.started + opts.duration);
        std::thread::spawn(move || {
            enter_named(&ns, move || {
                while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                    tried.fetch_add(1, Ordering::Relaxed);
                    if http_get(target, "/", Duration::from_secs(5)).is_err() {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        })
    };
    while sessions.started.elapsed() < event_at {
        std::thread::sleep(Duration::from_millis(10));
    }
    let event_at = sessions.started.elapsed();
    event(c);
    let reports = sessions.join();
    stop.store(true, Ordering::Relaxed);
    newconns.join().expect("new-connection thread");
    PhaseOutcome {
        summary: summarize(&reports),
        sessions: reports,
        new_tried: tried.load(Ordering::Relaxed),
        new_failed: failed.load(Ordering::Relaxed),
        event_at,
    }
}
