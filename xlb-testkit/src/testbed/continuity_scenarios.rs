//! The flow-continuity scenarios of issue 12, shared by `integration-tests/tests/continuity.rs`
//! (which asserts on them) and the failover bench (which reports them): long-lived connections
//! through a ring change on every node, then a change of the router's paths.
//!
//! A connection can break only if both happen to it: the ring change maps its flow to another
//! backend (its node keeps it on the old one through its flow table), and the router then sends
//! it to another node, which has no flow entry for it. [`Fate`] records both for each
//! connection (the ring's new choice from `xlb inspect explain --syn` on the maps, the router's
//! choice before and after from `ip route get` with the flow's ports), so a run states how many
//! connections were at risk and whether exactly those broke: without continuity they do, with
//! it none may.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use lb_userspace::cli::inspect::{ExplainArgs, InspectCmd, OutputArgs};
use lb_userspace::maps::AyaStore;
use lb_userspace::model::Proto;
use lb_userspace::pinning;

use super::cluster::{Cluster, VIP_PROTO, VIP_TABLE};
use super::continuity::{ContinuityOptions, spec_backends};
use super::failover::{bring_up_node, failover_vip, phase_sessions};
use super::plan::{ROUTED_CLIENT_V4, VipSpec};
use super::sessions::{SessionReport, SessionSummary, Sessions, summarize};

/// The change every node's ring goes through (backend indices of the testbed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingChange {
    /// A backend that runs but was not in the config joins.
    AddBackend(usize),
    /// Weight 0: out of the ring, its existing flows kept.
    DrainBackend(usize),
    Weight(usize, u32),
}

/// What then moves flows between nodes (LB node indices).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeChange {
    /// Link down, agent and BIRD killed: the router notices through BFD.
    Crash(usize),
    /// A node that was not running starts and announces.
    Add(usize),
    /// `xlb drain-node`: the node withdraws its routes and keeps forwarding.
    Drain(usize),
}

#[derive(Clone, Debug)]
pub struct Scenario {
    /// Short, for test names and the report.
    pub name: &'static str,
    pub lbs: usize,
    pub backends: usize,
    /// The backends the config lists at the start (the others run, unlisted).
    pub initial_backends: Vec<usize>,
    /// The nodes running at the start.
    pub initial_nodes: Vec<usize>,
    pub ring: RingChange,
    pub node: NodeChange,
}

/// The three scenarios of issue 12.
pub fn scenarios() -> [Scenario; 3] {
    [
        Scenario {
            name: "add backend, lose node",
            lbs: 3,
            backends: 4,
            initial_backends: vec![0, 1, 2],
            initial_nodes: vec![0, 1, 2],
            ring: RingChange::AddBackend(3),
            node: NodeChange::Crash(1),
        },
        Scenario {
            name: "drain backend, add node",
            lbs: 3,
            backends: 3,
            initial_backends: vec![0, 1, 2],
            initial_nodes: vec![0, 1],
            ring: RingChange::DrainBackend(0),
            node: NodeChange::Add(2),
        },
        Scenario {
            name: "re-weight backend, drain node",
            lbs: 3,
            backends: 3,
            initial_backends: vec![0, 1, 2],
            initial_nodes: vec![0, 1, 2],
            ring: RingChange::Weight(0, 300),
            node: NodeChange::Drain(2),
        },
    ]
}

impl Scenario {
    /// The VIP as configured at the start.
    pub fn initial_vip(&self) -> VipSpec {
        self.base_vip().min_healthy(self.min_healthy())
    }

    /// The VIP after the ring change.
    pub fn changed_vip(&self) -> VipSpec {
        self.changed_base().min_healthy(self.min_healthy())
    }

    fn base_vip(&self) -> VipSpec {
        failover_vip().only(&self.initial_backends)
    }

    fn changed_base(&self) -> VipSpec {
        let v = self.base_vip();
        match self.ring {
            RingChange::AddBackend(b) => {
                let mut all = self.initial_backends.clone();
                all.push(b);
                v.only(&all)
            }
            RingChange::DrainBackend(b) => v.weight(b, 0),
            RingChange::Weight(b, w) => v.weight(b, w),
        }
    }

    /// Every backend of the VIP with a weight, before and after the change (the smaller
    /// count): a node that joins announces only once its ring holds all of them. With the
    /// default of 1 it announces as soon as its first health check passes, while the others
    /// are still out of its ring, and breaks flows of those (not at risk, and no concern of
    /// continuity) for the second or so until they join. Never more than the count before or
    /// after the change, so that no running node withdraws while a new backend's first check
    /// is pending.
    fn min_healthy(&self) -> u32 {
        let weighted = |v: &VipSpec| {
            spec_backends(v, self.backends)
                .iter()
                .filter(|(_, w)| *w > 0)
                .count() as u32
        };
        weighted(&self.base_vip()).min(weighted(&self.changed_base()))
    }

    /// The nodes the router has a path to after the node change.
    pub fn final_nodes(&self) -> Vec<usize> {
        let mut n = self.initial_nodes.clone();
        match self.node {
            NodeChange::Crash(i) | NodeChange::Drain(i) => n.retain(|&k| k != i),
            NodeChange::Add(i) => n.push(i),
        }
        n.sort();
        n
    }
}

/// How long each part of a run lasts.
#[derive(Clone, Debug)]
pub struct Timing {
    pub connections: usize,
    /// From the sessions' start to the ring change (the ramp is 1 s: all are established).
    pub change_after: Duration,
    /// Requests go on this long after the router's paths changed.
    pub tail: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            connections: 300,
            change_after: Duration::from_secs(2),
            tail: Duration::from_secs(8),
        }
    }
}

/// What happened to one connection.
#[derive(Clone, Debug)]
pub struct Fate {
    pub report: SessionReport,
    /// The backend that answered its first request.
    pub backend: Option<IpAddr>,
    /// The backend the changed ring gives its flow.
    pub ring_backend: Option<IpAddr>,
    /// The router's next hop for its flow before and after the node change (`None`: the
    /// connection was not established when asked).
    pub node_before: Option<IpAddr>,
    pub node_after: Option<IpAddr>,
}

impl Fate {
    /// The ring change gave its flow another backend.
    pub fn remapped(&self) -> bool {
        self.backend.is_some() && self.backend != self.ring_backend
    }

    /// The router sends it to another node after the change.
    pub fn moved(&self) -> bool {
        self.node_before.is_some() && self.node_before != self.node_after
    }

    /// Remapped and moved: the one case where only continuity keeps it.
    pub fn at_risk(&self) -> bool {
        self.remapped() && self.moved()
    }
}

/// Counts over a run's connections.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FateCounts {
    pub tried: usize,
    pub remapped: usize,
    pub moved: usize,
    pub at_risk: usize,
    pub failed: usize,
    pub failed_at_risk: usize,
    /// Failed without being at risk: neither continuity nor its absence explains these.
    pub failed_unexplained: usize,
}

pub fn count(fates: &[Fate]) -> FateCounts {
    let n = |f: &dyn Fn(&Fate) -> bool| fates.iter().filter(|x| f(x)).count();
    FateCounts {
        tried: fates.len(),
        remapped: n(&Fate::remapped),
        moved: n(&Fate::moved),
        at_risk: n(&Fate::at_risk),
        failed: n(&|f| f.report.failed()),
        failed_at_risk: n(&|f| f.report.failed() && f.at_risk()),
        failed_unexplained: n(&|f| f.report.failed() && !f.at_risk()),
    }
}

/// A run's outcome.
#[derive(Debug)]
pub struct ContinuityOutcome {
    pub scenario: &'static str,
    pub continuity: bool,
    pub fates: Vec<Fate>,
    pub counts: FateCounts,
    pub summary: SessionSummary,
    /// From the reloads to equal ring digests on every node.
    pub ring_converged: Duration,
    /// With continuity: from then until every node held every other's exceptions (`None`
    /// without continuity, or when that was not confirmed within 5 s).
    pub exceptions_exchanged: Option<Duration>,
    /// From the node change to the router's paths showing it.
    pub router_converged: Duration,
}

impl ContinuityOutcome {
    /// One line of figures, then one line per failed connection with its reason.
    pub fn render(&self) -> String {
        let (c, s) = (&self.counts, &self.summary);
        let mut out = format!(
            "{} (continuity {}): {} connections, {} remapped by the ring change, {} moved by the \
             router, {} at risk (both); failed {} ({} at risk, {} unexplained); survived {}; gap \
             p50 {:?} p100 {:?}; rings converged in {:?}, exchange of exceptions confirmed {:?} \
             after that (up to one refresh late), \
             router in {:?}\n",
            self.scenario,
            if self.continuity { "on" } else { "off" },
            c.tried,
            c.remapped,
            c.moved,
            c.at_risk,
            c.failed,
            c.failed_at_risk,
            c.failed_unexplained,
            s.survived,
            s.gap_p50,
            s.gap_p100,
            self.ring_converged,
            self.exceptions_exchanged,
            self.router_converged,
        );
        // Every loss with continuity, and every unexplained one, needs its reason; without
        // continuity the at-risk losses are expected, and a few show what they look like.
        let mut expected_shown = 0;
        for f in self.fates.iter().filter(|f| f.report.failed()) {
            if !self.continuity && f.at_risk() {
                expected_shown += 1;
                if expected_shown > 3 {
                    continue;
                }
            }
            out.push_str(&format!(
                "  lost port {}: backend {:?} -> ring {:?}, node {:?} -> {:?}, {}: {:?}\n",
                f.report.local_port,
                f.backend,
                f.ring_backend,
                f.node_before,
                f.node_after,
                if f.at_risk() {
                    "at risk"
                } else {
                    "NOT at risk"
                },
                f.report.failure
            ));
        }
        if expected_shown > 3 {
            out.push_str(&format!(
                "  ... and {} more at-risk losses\n",
                expected_shown - 3
            ));
        }
        out
    }
}

/// Brings `c` to `s`'s start with continuity `on` or off: every agent stopped with `--detach`
/// (or, on a crashed node, its pins removed and its link revived), so each run starts from
/// empty maps (no flow entry or exception of an earlier run can serve its connections); then
/// the initial nodes started on the initial VIP, and the router holding a path to each. The
/// router hashes headers ([`Cluster::hash_router_on_headers`]) so that which flows move can be
/// told.
pub fn prepare(c: &mut Cluster, s: &Scenario, on: bool, xlb: &Path) {
    c.hash_router_on_headers();
    for i in 0..c.lbs.len() {
        if c.lbs[i].agent_running() && !c.lbs[i].crashed() {
            c.stop_detach(i);
        }
        if c.lbs[i].crashed() {
            c.remove_pins(i);
            // The killed agent withdrew nothing: without this, the revived BIRD would
            // announce a VIP that no program forwards there any more. `ip` fails when the
            // table does not exist, which leaves nothing to flush: only other failures count.
            let (table, proto) = (VIP_TABLE.to_string(), VIP_PROTO.to_string());
            let out = c.lbs[i]
                .ns
                .command("ip")
                .args(["route", "flush", "table", &table, "proto", &proto])
                .output()
                .expect("running ip");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success() || err.contains("does not exist"),
                "{}: flushing table {table}: {err}",
                c.lbs[i].name
            );
            c.revive_node(i);
        }
    }
    if on {
        c.enable_continuity(ContinuityOptions::default());
    } else {
        c.disable_continuity();
    }
    c.vips = vec![s.initial_vip()];
    for &i in &s.initial_nodes {
        bring_up_node(c, i, xlb, false);
    }
    wait_paths(c, &s.initial_nodes, Duration::from_secs(30));
}

/// Waits until the router's paths to the VIP are exactly `nodes`'; returns how long it took.
fn wait_paths(c: &Cluster, nodes: &[usize], timeout: Duration) -> Duration {
    let want = nodes.iter().map(|&i| c.node_addr(i, false)).collect();
    c.wait_next_hops(failover_vip().id().addr, &want, timeout)
}

/// Runs `s` on `c` (prepared by [`prepare`]): sessions start; after `t.change_after` every
/// node gets the ring change and the run waits until every node runs the same new ring, then
/// one continuity refresh and half a second more (in both modes, so that both runs have the
/// same timing); then the node change, and `t.tail` more of requests.
pub fn run(c: &mut Cluster, s: &Scenario, xlb: &Path, t: &Timing) -> ContinuityOutcome {
    let vip = failover_vip();
    // An upper bound: the run stops the sessions itself once the tail has passed.
    let opts = phase_sessions(t.connections, Duration::from_secs(90));
    let before = c.ring_digests(c.live_nodes()[0]);
    let sessions = Sessions::start(Some(&c.client.name), &opts);
    std::thread::sleep(t.change_after);

    let start = Instant::now();
    c.apply_vips(vec![s.changed_vip()]);
    c.wait_rings_converged(Some(&before), Duration::from_secs(30));
    let ring_converged = start.elapsed();
    // With continuity: until every node holds every other's exceptions from a scan of the new
    // ring. Without: as long as one refresh and a margin would take, so that the node change
    // comes at a comparable time.
    let converged = Instant::now();
    let exceptions_exchanged = match c.continuity() {
        Some(_) => c.wait_exceptions_exchanged(converged, Duration::from_secs(5)),
        None => {
            std::thread::sleep(ContinuityOptions::default().refresh + Duration::from_millis(500));
            None
        }
    };

    let ports = client_ports(c, vip.socket_addr());
    let node_before = router_choices(c, vip.socket_addr(), &ports);
    let start = Instant::now();
    match s.node {
        NodeChange::Crash(i) => c.crash_node(i),
        NodeChange::Add(i) => bring_up_node(c, i, xlb, false),
        NodeChange::Drain(i) => c.lbs[i].drain(),
    }
    wait_paths(c, &s.final_nodes(), Duration::from_secs(30));
    let router_converged = start.elapsed();
    // What a joining node held when the router started sending it flows: the flows at risk
    // there depend on it having its peers' exceptions by then.
    if let NodeChange::Add(i) = s.node
        && let Some(cont) = c.node_status(i).continuity
    {
        eprintln!(
            "{} when its path appeared: {}",
            c.lbs[i].name,
            cont.render().trim_end()
        );
    }
    let node_after = router_choices(c, vip.socket_addr(), &ports);
    // A node that joined must run the ring the others run, or its flows would break for a
    // reason continuity cannot cure.
    for i in c.live_nodes() {
        eprintln!("{} ring: {}", c.lbs[i].name, c.ring_digests(i).trim());
    }
    c.wait_rings_converged(None, Duration::from_secs(5));
    std::thread::sleep(t.tail);
    sessions.stop();
    let reports = sessions.join();

    let ring = ring_choices(c, vip.socket_addr(), &reports);
    let by_name: BTreeMap<&str, IpAddr> = c
        .backends
        .iter()
        .map(|b| (b.name.as_str(), b.addr(false)))
        .collect();
    let fates: Vec<Fate> = reports
        .iter()
        .map(|r| Fate {
            backend: r.backend.as_deref().and_then(|n| by_name.get(n).copied()),
            ring_backend: ring.get(&r.local_port).copied(),
            node_before: node_before.get(&r.local_port).copied(),
            node_after: node_after.get(&r.local_port).copied(),
            report: r.clone(),
        })
        .collect();
    ContinuityOutcome {
        scenario: s.name,
        continuity: c.continuity().is_some(),
        counts: count(&fates),
        summary: summarize(&reports),
        fates,
        ring_converged,
        exceptions_exchanged,
        router_converged,
    }
}

/// The client's local ports of its established connections to `target` (`ss` in its
/// namespace).
fn client_ports(c: &Cluster, target: SocketAddr) -> Vec<u16> {
    let out = c
        .client
        .command("ss")
        .args(["-Htn", "state", "established", "dst"])
        .arg(target.to_string())
        .output()
        .expect("running ss");
    assert!(out.status.success(), "ss: {out:?}");
    parse_ss_ports(&String::from_utf8_lossy(&out.stdout))
}

/// Local ports of `ss -Htn state established` lines (`RECV SEND LOCAL:PORT PEER:PORT`).
fn parse_ss_ports(text: &str) -> Vec<u16> {
    text.lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .filter_map(|local| local.rsplit_once(':')?.1.parse().ok())
        .collect()
}

/// The router's next hop for each client port's flow to `target`: `ip route get` as a packet
/// from the client arriving on the router's client link, with the flow's ports, so the kernel
/// applies the same L4 multipath hash it applies to the packets. One `ip -batch` for all.
fn router_choices(c: &Cluster, target: SocketAddr, ports: &[u16]) -> BTreeMap<u16, IpAddr> {
    let script: String = ports
        .iter()
        .map(|p| {
            format!(
                "route get {} from {ROUTED_CLIENT_V4} iif eth1 ipproto tcp sport {p} dport {}\n",
                target.ip(),
                target.port()
            )
        })
        .collect();
    let mut child = std::process::Command::new("ip")
        .args(["-n", &c.router.name, "-o", "-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running ip -batch");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .expect("writing ip's batch");
    let out = child.wait_with_output().expect("ip -batch");
    assert!(out.status.success(), "ip route get batch: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let hops: Vec<Option<IpAddr>> = text.lines().map(via).collect();
    assert_eq!(
        hops.len(),
        ports.len(),
        "one route per port expected:\n{text}"
    );
    ports
        .iter()
        .zip(hops)
        .filter_map(|(p, h)| Some((*p, h?)))
        .collect()
}

/// The gateway of one `ip -o route get` line.
fn via(line: &str) -> Option<IpAddr> {
    let w: Vec<&str> = line.split_whitespace().collect();
    w.windows(2)
        .find(|p| p[0] == "via")
        .and_then(|p| p[1].parse().ok())
}

/// The backend the ring (of the first live node: all run the same one) gives each
/// connection's flow: [`ring_choice`].
fn ring_choices(
    c: &Cluster,
    target: SocketAddr,
    reports: &[SessionReport],
) -> BTreeMap<u16, IpAddr> {
    let node = *c.live_nodes().first().expect("a live node");
    let dir = pinning::maps_dir(&c.lbs[node].pin_dir);
    let store =
        AyaStore::from_pin_dir(&dir).unwrap_or_else(|e| panic!("open {}: {e:#}", dir.display()));
    reports
        .iter()
        .filter(|r| r.local_port != 0)
        .filter_map(|r| {
            let src = SocketAddr::new(ROUTED_CLIENT_V4.into(), r.local_port);
            Some((r.local_port, ring_choice(&store, src, target)?))
        })
        .collect()
}

/// The backend the ring in `store` gives the TCP flow `src` -> `vip` (`None`: no backend):
/// `xlb inspect explain --syn`, which skips the flow table.
pub fn ring_choice(store: &AyaStore, src: SocketAddr, vip: SocketAddr) -> Option<IpAddr> {
    let cmd = InspectCmd::Explain(ExplainArgs {
        src,
        dst: vip,
        proto: Proto::Tcp,
        syn: true,
        output: OutputArgs { json: true },
    });
    let mut out = Vec::new();
    lb_userspace::cli::run(store, &cmd, &mut out).unwrap_or_else(|e| panic!("explain: {e:#}"));
    let v: serde_json::Value = serde_json::from_slice(&out).expect("explain JSON");
    v["ring_backend"]["addr"].as_str()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ss_and_route_get_output_parse() {
        let ss = "0      0      192.0.2.100:40312   203.0.113.12:80\n0 0 192.0.2.100:40314 203.0.113.12:80 \n";
        assert_eq!(parse_ss_ports(ss), vec![40312, 40314]);
        let line = "203.0.113.12 from 192.0.2.100 via 198.51.100.3 dev eth0 table main src 198.51.100.1 iif eth1 \\    cache iif eth1";
        assert_eq!(via(line), Some("198.51.100.3".parse().unwrap()));
        assert_eq!(via("unreachable"), None);
    }

    #[test]
    fn only_remapped_and_moved_connections_are_at_risk() {
        let a: IpAddr = "198.51.100.11".parse().unwrap();
        let b: IpAddr = "198.51.100.12".parse().unwrap();
        let (n1, n2): (IpAddr, IpAddr) = (
            "198.51.100.2".parse().unwrap(),
            "198.51.100.3".parse().unwrap(),
        );
        let fate = |ring, after, failed: bool| {
            let mut report = SessionReport::default();
            if failed {
                report.failure = Some((Duration::ZERO, "reset".into()));
            }
            Fate {
                report,
                backend: Some(a),
                ring_backend: Some(ring),
                node_before: Some(n1),
                node_after: Some(after),
            }
        };
        let fates = [
            fate(b, n2, true),  // remapped and moved: at risk, lost
            fate(b, n1, false), // remapped, stays on its node
            fate(a, n2, false), // moved, same backend on the new node
            fate(a, n1, true),  // neither: a loss nothing explains
        ];
        let c = count(&fates);
        assert_eq!(
            c,
            FateCounts {
                tried: 4,
                remapped: 2,
                moved: 2,
                at_risk: 1,
                failed: 2,
                failed_at_risk: 1,
                failed_unexplained: 1,
            }
        );
    }

    #[test]
    fn scenario_changes() {
        let [a, b, c] = scenarios();
        assert_eq!(a.changed_vip().backends, Some(vec![0, 1, 2, 3]));
        assert_eq!(a.final_nodes(), vec![0, 2]);
        assert_eq!(b.changed_vip().weights.get(&0), Some(&0));
        assert_eq!(b.final_nodes(), vec![0, 1, 2]);
        assert_eq!(c.changed_vip().weights.get(&0), Some(&300));
        assert_eq!(c.final_nodes(), vec![0, 1]);
        let min = |s: &Scenario| (s.initial_vip().min_healthy, s.changed_vip().min_healthy);
        assert_eq!(min(&a), (Some(3), Some(3)));
        assert_eq!(min(&b), (Some(2), Some(2)));
        assert_eq!(min(&c), (Some(3), Some(3)));
    }
}
