//! Flow continuity across nodes (issue 12) on the multi-LB testbed: each node's `[continuity]`
//! section (listener, peers, pre-shared key), backend changes applied to every node at once,
//! and waiting until every node runs the same ring.
//!
//! The nodes reach each other on the segment they share with the router (198.51.100.0/24):
//! the peer channel is ordinary TCP to a node's own address, which the XDP program passes (it
//! is not a VIP), and a crashed node's port going down cuts its peer connections as a real
//! crash would.

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read as _, Write as _};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lb_userspace::api::{MapState, Request, Response, StatusReport};
use lb_userspace::cli::inspect::{InspectCmd, OutputArgs, RingArgs};
use lb_userspace::continuity::status::ContinuityStatus;
use lb_userspace::maps::AyaStore;
use lb_userspace::pinning;

use super::cluster::Cluster;
use super::plan::{VipSpec, backend_addrs};
use super::tail;

/// The peer listener's port on every node (the port the contract's example uses).
pub const CONTINUITY_PORT: u16 = 7946;

/// What every node's `[continuity]` section says besides its addresses and key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContinuityOptions {
    /// Full re-send period of the exception set.
    pub refresh: Duration,
    /// How long a lost peer's exceptions are kept: longer than any scenario here, so that a
    /// crashed node's exceptions outlive the run.
    pub hold: Duration,
}

impl Default for ContinuityOptions {
    fn default() -> Self {
        ContinuityOptions {
            refresh: Duration::from_secs(1),
            hold: Duration::from_secs(600),
        }
    }
}

/// A duration as the config writes it, in milliseconds (exact for any value here).
fn config_duration(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

impl Cluster {
    /// The pre-shared key file every node's section names (written by
    /// [`Cluster::enable_continuity`]).
    pub fn continuity_key_path(&self) -> PathBuf {
        self.work_dir.join("continuity.key")
    }

    /// Node `i`'s peer listener: its own segment address, never a wildcard (the agent refuses
    /// 0.0.0.0 and ::).
    pub fn continuity_addr(&self, i: usize) -> SocketAddr {
        SocketAddr::new(self.lbs[i].v4.into(), CONTINUITY_PORT)
    }

    /// From now on every node config ([`Cluster::node_config`]) carries a `[continuity]`
    /// section: this node's listener, every other node as a peer (started or not: a node that
    /// joins later is already listed, as an operator would list it), and a fresh key written
    /// 0600 (the agent refuses a key readable by group or others). Agents already running keep
    /// their config until restarted.
    pub fn enable_continuity(&mut self, opts: ContinuityOptions) {
        let path = self.continuity_key_path();
        write_key(&path);
        self.continuity = Some(opts);
    }

    /// Node configs written from now on have no `[continuity]` section (continuity off).
    pub fn disable_continuity(&mut self) {
        self.continuity = None;
    }

    pub fn continuity(&self) -> Option<&ContinuityOptions> {
        self.continuity.as_ref()
    }

    /// Node `i`'s `[continuity]` section, if enabled.
    pub(super) fn continuity_section(&self, i: usize) -> Option<String> {
        let o = self.continuity.as_ref()?;
        let peers: Vec<SocketAddr> = (0..self.lbs.len())
            .filter(|&k| k != i)
            .map(|k| self.continuity_addr(k))
            .collect();
        Some(continuity_section(
            self.continuity_addr(i),
            &peers,
            &self.continuity_key_path(),
            o,
        ))
    }

    /// Node `i`'s status; when its agent does not answer, the panic carries its log's tail
    /// (an agent that exited says why there).
    pub fn node_status(&self, i: usize) -> StatusReport {
        let n = &self.lbs[i];
        match super::agent::block_on(lb_userspace::api::call(&n.api_socket, &Request::Status)) {
            Ok(Response::Status(r)) => r,
            other => panic!(
                "{}: status: {other:?}\nagent log:\n{}",
                n.name,
                tail(&n.agent_log_path(&self.work_dir), 40)
            ),
        }
    }

    /// Nodes whose agent runs and whose link is up: the ones that forward and reload.
    pub fn live_nodes(&self) -> Vec<usize> {
        (0..self.lbs.len())
            .filter(|&i| self.lbs[i].agent_running() && !self.lbs[i].crashed())
            .collect()
    }

    /// Makes `vips` every node's VIPs: rewrites each running node's config and reloads it
    /// (`xlb reload`), node after node. Rewriting the file rather than calling the API's
    /// SetWeight/AddBackend keeps the file the one truth, so a node started or restarted later
    /// builds the same ring. Returns when every node has answered its reload; the new ring may
    /// need a health check and a neighbour resolution more ([`Cluster::wait_rings_converged`]).
    pub fn apply_vips(&mut self, vips: Vec<VipSpec>) {
        self.vips = vips;
        for i in self.live_nodes() {
            let config = self.node_config(i, "", &self.vips.clone());
            fs::write(self.config_path(i), config).unwrap();
            match self.lbs[i].api(&Request::Reload) {
                Response::Ok { message } => {
                    eprintln!("{}: reload: {message}", self.lbs[i].name)
                }
                other => panic!("{}: reload: {other:?}", self.lbs[i].name),
            }
        }
    }

    /// Node `i`'s ring digests (`xlb inspect ring --digest`, read from its pinned maps).
    pub fn ring_digests(&self, i: usize) -> String {
        let dir = pinning::maps_dir(&self.lbs[i].pin_dir);
        let store = AyaStore::from_pin_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: open {}: {e:#}", self.lbs[i].name, dir.display()));
        let cmd = InspectCmd::Ring(RingArgs {
            vip: None,
            digest: true,
            output: OutputArgs { json: false },
        });
        let mut out = Vec::new();
        lb_userspace::cli::run(&store, &cmd, &mut out)
            .unwrap_or_else(|e| panic!("{}: ring digest: {e:#}", self.lbs[i].name));
        String::from_utf8(out).expect("digest lines are text")
    }

    /// Node `i`'s status matches [`Cluster::vips`]: exactly the listed backends, those with a
    /// weight above 0 active with ring slots, those with weight 0 draining without any.
    pub fn settled(&self, r: &StatusReport) -> bool {
        self.vips.iter().all(|spec| {
            let Some(v) = r.vips.iter().find(|v| v.id == spec.id()) else {
                return false;
            };
            let want = spec_backends(spec, self.backends.len());
            v.backends.len() == want.len()
                && want.iter().all(|(addr, weight)| {
                    v.backends.iter().any(|b| {
                        b.addr == *addr
                            && b.weight == *weight
                            && b.mismatch.is_none()
                            && if *weight > 0 {
                                b.state == MapState::Active && b.ring_slots > 0
                            } else {
                                b.state == MapState::Draining && b.ring_slots == 0
                            }
                    })
                })
        })
    }

    /// Waits (at most `timeout`) until node `i` is [`Cluster::settled`].
    pub fn wait_settled(&self, i: usize, timeout: Duration) {
        let n = &self.lbs[i];
        let deadline = Instant::now() + timeout;
        loop {
            let r = self.node_status(i);
            if self.settled(&r) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}: not settled on {:?} within {timeout:?}:\n{}\n{}",
                n.name,
                self.vips,
                r.render_table(),
                tail(&n.agent_log_path(&self.work_dir), 30)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (at most `timeout`) until every live node is settled on [`Cluster::vips`] and
    /// prints the same ring digests, different from `before` when given (so that a change not
    /// applied yet anywhere does not pass for convergence). Returns the digests and the time
    /// it took.
    pub fn wait_rings_converged(
        &self,
        before: Option<&str>,
        timeout: Duration,
    ) -> (String, Duration) {
        let start = Instant::now();
        loop {
            let nodes = self.live_nodes();
            let settled = nodes.iter().all(|&i| self.settled(&self.node_status(i)));
            let digests: Vec<String> = nodes.iter().map(|&i| self.ring_digests(i)).collect();
            let same = digests.iter().collect::<BTreeSet<_>>().len() == 1;
            if settled && same && before.is_none_or(|b| b != digests[0]) {
                return (digests[0].clone(), start.elapsed());
            }
            if start.elapsed() > timeout {
                let statuses: Vec<String> = nodes
                    .iter()
                    .map(|&i| {
                        format!(
                            "{}:\n{}\n{}",
                            self.lbs[i].name,
                            self.lbs[i].status().render_table(),
                            tail(&self.lbs[i].agent_log_path(&self.work_dir), 20)
                        )
                    })
                    .collect();
                panic!(
                    "rings not converged after {timeout:?} (settled {settled}, digests {digests:?}, \
                     before {before:?}):\n{}",
                    statuses.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Makes the router hash each packet's 5-tuple as read from its headers (multipath hash
    /// policy 3 on source and destination address, protocol and ports), so that `ip route get`
    /// with a flow's ports names the node its packets really reach. With policy 1 (the
    /// testbed's default, dist/bird/router.conf's advice) Linux takes a hash the packet already
    /// carries: here the client socket's random transmit hash, which veth keeps across
    /// namespaces and TCP re-rolls on each retransmission timeout, so a flow's node could be
    /// neither predicted nor relied on to stay. A hardware router hashes headers, as this does.
    pub fn hash_router_on_headers(&self) {
        // FIB_MULTIPATH_HASH_FIELD_{SRC_IP 0x1, DST_IP 0x2, IP_PROTO 0x4, SRC_PORT 0x10,
        // DST_PORT 0x20}; written in decimal.
        self.router
            .sysctl("net/ipv4/fib_multipath_hash_fields", &0x37.to_string());
        self.router
            .sysctl("net/ipv4/fib_multipath_hash_policy", "3");
    }

    /// Waits (at most `timeout`) until, between every two live nodes, each holds all of the
    /// other's exceptions as the other last counted them in a scan that ran after `since` (the
    /// ring change), and returns how long after `since` that held. Continuity must be on.
    ///
    /// `None` when it did not hold in time, after printing every node's continuity status: the
    /// counts come from status calls made one after another, not from one instant, so a count
    /// that never settles is reported for a look rather than failing the run; the traffic
    /// outcome is what the scenarios judge.
    pub fn wait_exceptions_exchanged(&self, since: Instant, timeout: Duration) -> Option<Duration> {
        let deadline = Instant::now() + timeout;
        loop {
            let nodes = self.live_nodes();
            let statuses: Vec<(usize, ContinuityStatus)> = nodes
                .iter()
                .map(|&i| {
                    let c = self.node_status(i).continuity.unwrap_or_else(|| {
                        panic!("{}: no continuity in its status", self.lbs[i].name)
                    });
                    (i, *c)
                })
                .collect();
            let scanned_since = |c: &ContinuityStatus| {
                c.last_scan_ago_ms
                    .is_some_and(|ago| Duration::from_millis(ago) < since.elapsed())
            };
            let exchanged = statuses.iter().all(|(_, c)| scanned_since(c))
                && statuses.iter().all(|(i, holder)| {
                    statuses.iter().filter(|(j, _)| j != i).all(|(j, owner)| {
                        holder.peers.iter().any(|p| {
                            p.addr == self.continuity_addr(*j) && p.held == owner.own_exceptions
                        })
                    })
                });
            if exchanged {
                return Some(since.elapsed());
            }
            if Instant::now() > deadline {
                let text: Vec<String> = statuses
                    .iter()
                    .map(|(i, c)| format!("{}: {}", self.lbs[*i].name, c.render()))
                    .collect();
                eprintln!(
                    "NOTE: exchange of exceptions not confirmed within {timeout:?} (going on):\n{}",
                    text.join("\n")
                );
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Removes node `i`'s pins (program link and maps) while no agent runs there: the next
    /// agent starts from empty maps, as on a new machine. For a node that crashed, whose agent
    /// cannot `stop --detach`.
    pub fn remove_pins(&self, i: usize) {
        let n = &self.lbs[i];
        assert!(!n.agent_running(), "{}: the agent still runs", n.name);
        pinning::detach(&n.pin_dir).unwrap_or_else(|e| panic!("{}: removing pins: {e:#}", n.name));
    }
}

/// A `[continuity]` section (the agent's contract: examples/xlb.toml).
pub fn continuity_section(
    listen: SocketAddr,
    peers: &[SocketAddr],
    key_file: &Path,
    o: &ContinuityOptions,
) -> String {
    let peers: Vec<String> = peers.iter().map(|p| format!("\"{p}\"")).collect();
    format!(
        "\n[continuity]\nlisten = \"{listen}\"\npeers = [{}]\nkey-file = \"{}\"\n\
         refresh = \"{}\"\nhold = \"{}\"\n",
        peers.join(", "),
        key_file.display(),
        config_duration(o.refresh),
        config_duration(o.hold),
    )
}

/// The backends `spec` lists for a testbed of `backends` backends: address and weight (the
/// config's default 100 where the spec sets none).
pub fn spec_backends(spec: &VipSpec, backends: usize) -> Vec<(IpAddr, u32)> {
    (0..backends)
        .filter(|i| spec.backends.as_ref().is_none_or(|l| l.contains(i)))
        .map(|i| {
            let (v4, v6) = backend_addrs(i);
            let addr: IpAddr = if spec.v6 { v6.into() } else { v4.into() };
            (addr, spec.weights.get(&i).copied().unwrap_or(100))
        })
        .collect()
}

/// Writes 32 random bytes as 64 hex digits (a key that survives being pasted into a file by
/// hand), created 0600 so that it is never readable by others, not even for a moment.
fn write_key(path: &Path) {
    let mut raw = [0u8; 32];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut raw))
        .expect("reading /dev/urandom");
    let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    let _ = fs::remove_file(path);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
    f.write_all(hex.as_bytes())
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testbed::plan::Mode;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn key_file_is_private_and_long_enough() {
        let dir = std::env::temp_dir().join(format!("xlbt-key-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("k");
        write_key(&path);
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::read(&path).unwrap().len(), 64);
        let first = fs::read(&path).unwrap();
        write_key(&path);
        assert_ne!(fs::read(&path).unwrap(), first, "a fresh key each time");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_continuity_section_validates() {
        let listen: SocketAddr = "198.51.100.2:7946".parse().unwrap();
        let peers: Vec<SocketAddr> = ["198.51.100.3:7946", "198.51.100.4:7946"]
            .iter()
            .map(|p| p.parse().unwrap())
            .collect();
        let mut text = crate::testbed::agent_config(
            Path::new("/sys/fs/bpf/xlbt-x/lb1"),
            Path::new("/tmp/xlbt-x/lb1.sock"),
            3,
            "",
            &[VipSpec::tcp(Mode::DsrL2, false)],
        );
        text.push_str(&continuity_section(
            listen,
            &peers,
            Path::new("/tmp/xlbt-x/continuity.key"),
            &ContinuityOptions::default(),
        ));
        let v = lb_userspace::config::load_str(&text, &|_: &str| true)
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        let c = v.config.continuity.expect("continuity on");
        assert_eq!(c.listen, listen);
        assert_eq!(c.peers, peers);
        assert_eq!(c.refresh, Duration::from_secs(1));
        assert_eq!(c.hold, Duration::from_secs(600));
    }

    #[test]
    fn spec_backends_follow_only_and_weights() {
        let spec = VipSpec::tcp(Mode::DsrL2, false).only(&[0, 2]).weight(2, 0);
        let got = spec_backends(&spec, 4);
        assert_eq!(
            got,
            vec![
                ("198.51.100.11".parse().unwrap(), 100),
                ("198.51.100.13".parse().unwrap(), 0)
            ]
        );
        assert_eq!(config_duration(Duration::from_secs(600)), "600000ms");
    }
}
