//! A light testbed for what LB nodes say to each other (flow continuity): LB nodes, plain hosts
//! and backends on one segment (a bridge in a switch namespace), and nothing else: no router,
//! no BIRD, no client, no servers on the backends (they only answer ARP, so the agents resolve
//! them and mark them active). Much cheaper than the [`Cluster`](super::Cluster) when no
//! traffic crosses the LBs.
//!
//! ```text
//!   switch ns (bridge br0)
//!   [ lb1 ---- lb1 ns eth0 198.51.100.2   (xlb agent)
//!   [ lbN ---- lbN ns eth0 198.51.100.(1+N)
//!   [ hK  ---- host ns eth0 198.51.100.(200+K)  (plain namespace: the test's own sockets)
//!   [ bM  ---- backend ns eth0 198.51.100.(10+M) (every VIP on lo; no server)
//! ```
//!
//! Removed on drop (also on panic), like [`Testbed`](super::Testbed).

use std::fs;
use std::mem::ManuallyDrop;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use lb_userspace::api::{self, Request, Response, StatusReport};
use lb_userspace::pinning;

use super::agent::node_agent_config;
use super::agent::{all_active, block_on, spawn_agent};
use super::plan::*;
use super::resources::{backend, begin, bridge, bridge_port, pin_root, teardown_and_reap};
use super::{Backend, Resources, tail};
use crate::netns::Netns;

#[derive(Clone, Debug)]
pub struct PeerOptions {
    /// Names everything (`<prefix>-lb1`, `/sys/fs/bpf/<prefix>`); unique per testbed.
    pub prefix: String,
    pub lbs: usize,
    /// Names of the plain hosts, in address order (198.51.100.200 up).
    pub hosts: Vec<String>,
    pub backends: usize,
    /// Configs, logs, API sockets and keys (short: a socket path has at most 107 bytes).
    pub work_dir: PathBuf,
}

impl PeerOptions {
    /// Prefix `xlbt-<tag>-<pid>-<n>`, work directory in the temp directory.
    pub fn for_test(tag: &str, lbs: usize, hosts: &[&str], backends: usize) -> PeerOptions {
        let prefix = super::resources::test_prefix(tag);
        PeerOptions {
            work_dir: std::env::temp_dir().join(&prefix),
            prefix,
            lbs,
            hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
            backends,
        }
    }
}

/// Addresses of plain host `i` (0-based): 198.51.100.(200+i), 2001:db8:51::(200+i).
pub fn host_addrs(i: usize) -> (Ipv4Addr, Ipv6Addr) {
    assert!(i < 50, "at most 50 hosts");
    let host = 200 + i as u16;
    (
        Ipv4Addr::new(198, 51, 100, host as u8),
        Ipv6Addr::new(0x2001, 0xdb8, 0x51, 0, 0, 0, 0, host),
    )
}

/// One LB node of a [`PeerBed`].
pub struct PeerNode {
    /// `lb1`, ...
    pub name: String,
    pub ns: ManuallyDrop<Netns>,
    pub v4: Ipv4Addr,
    pub v6: Ipv6Addr,
    pub pin_dir: PathBuf,
    pub api_socket: PathBuf,
    agent: Option<Child>,
    agents_started: u32,
}

impl PeerNode {
    pub fn maps_dir(&self) -> PathBuf {
        pinning::maps_dir(&self.pin_dir)
    }

    pub fn agent_log_path(&self, work_dir: &Path) -> PathBuf {
        work_dir.join(format!("{}-agent-{}.log", self.name, self.agents_started))
    }

    /// The running agent's pid (for /proc).
    pub fn agent_pid(&self) -> Option<u32> {
        self.agent.as_ref().map(Child::id)
    }

    /// One API request to the node's agent.
    pub fn api(&self, req: &Request) -> Response {
        block_on(api::call(&self.api_socket, req))
            .unwrap_or_else(|e| panic!("{}: API call {req:?}: {e}", self.name))
    }

    pub fn status(&self) -> StatusReport {
        match self.api(&Request::Status) {
            Response::Status(r) => r,
            other => panic!("{}: status: {other:?}", self.name),
        }
    }
}

/// A plain namespace on the segment.
pub struct Host {
    pub name: String,
    pub ns: ManuallyDrop<Netns>,
    pub v4: Ipv4Addr,
}

pub struct PeerBed {
    pub prefix: String,
    pub switch: ManuallyDrop<Netns>,
    pub lbs: Vec<PeerNode>,
    pub hosts: Vec<Host>,
    pub backends: Vec<Backend>,
    pub work_dir: PathBuf,
    res: Resources,
}

impl PeerBed {
    /// Builds the segment, no agent yet ([`PeerBed::start_agent`]). Panics (after removing what
    /// it made) when something cannot be made.
    pub fn up(opts: &PeerOptions) -> PeerBed {
        assert!((1..=MAX_LBS).contains(&opts.lbs), "1..={MAX_LBS} LB nodes");
        assert!(
            opts.backends <= MAX_BACKENDS,
            "at most {MAX_BACKENDS} backends"
        );
        let root = pin_root(&opts.prefix);
        let mut names = vec!["switch".to_owned()];
        names.extend((1..=opts.lbs).map(|i| format!("lb{i}")));
        names.extend(opts.hosts.iter().cloned());
        names.extend((1..=opts.backends).map(|i| format!("b{i}")));
        let pin_dirs = (1..=opts.lbs)
            .map(|i| root.join(format!("lb{i}")))
            .collect();
        let (mut res, mut guard, ns) = begin(&opts.prefix, &opts.work_dir, &names, pin_dirs);
        let mut ns = ns.into_iter();
        let switch = ns.next().unwrap();
        bridge(&switch);

        let mut lbs = Vec::new();
        for (i, node) in ns.by_ref().take(opts.lbs).enumerate() {
            let name = format!("lb{}", i + 1);
            let (v4, v6) = lb_addrs(i);
            bridge_port(&switch, &node, &name, lb_mac(i), v4, v6);
            lbs.push(PeerNode {
                pin_dir: root.join(&name),
                api_socket: opts.work_dir.join(format!("{name}.sock")),
                name,
                ns: node,
                v4,
                v6,
                agent: None,
                agents_started: 0,
            });
        }
        let mut hosts = Vec::new();
        // Names first: a zip that ran out of names would take (and lose) a backend's namespace.
        for (i, (name, node)) in opts.hosts.iter().zip(ns.by_ref()).enumerate() {
            let (v4, v6) = host_addrs(i);
            let mac = [0x02, 0, 0, 0, 0x02, i as u8];
            bridge_port(&switch, &node, &format!("h{i}"), mac, v4, v6);
            res.notes.insert(name.clone(), format!("{v4} {v6}"));
            hosts.push(Host {
                name: name.clone(),
                ns: node,
                v4,
            });
        }
        let backends: Vec<Backend> = ns
            .enumerate()
            .map(|(i, node)| backend(&switch, node, i))
            .collect();
        for n in &lbs {
            res.notes
                .insert(n.name.clone(), format!("{} {}", n.v4, n.v6));
        }
        for b in &backends {
            res.notes
                .insert(b.name.clone(), format!("{} {}", b.v4, b.v6));
        }
        guard.0 = None;
        PeerBed {
            prefix: opts.prefix.clone(),
            switch,
            lbs,
            hosts,
            backends,
            work_dir: opts.work_dir.clone(),
            res,
        }
    }

    /// Node `i`'s agent config: [`agent_config`] with its own pin dir, socket and source
    /// addresses. `agent_extra` and the VIPs as there; the caller appends other sections.
    pub fn node_config(&self, i: usize, agent_extra: &str, vips: &[VipSpec]) -> String {
        let n = &self.lbs[i];
        node_agent_config(
            &n.pin_dir,
            &n.api_socket,
            (n.v4, n.v6),
            self.backends.len(),
            agent_extra,
            vips,
        )
    }

    /// Writes `text` to `name` in the work directory with mode 0600 (a key file).
    pub fn write_secret(&self, name: &str, text: &str) -> PathBuf {
        use std::os::unix::fs::OpenOptionsExt as _;
        let path = self.work_dir.join(name);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
        path
    }

    /// Starts `xlb run` with `config` in node `i` and waits (at most 30 s) for its API.
    pub fn start_agent(&mut self, i: usize, xlb: &Path, config: &str) {
        let n = &mut self.lbs[i];
        assert!(n.agent.is_none(), "{}: an agent is already running", n.name);
        n.agents_started += 1;
        let conf_path = self.work_dir.join(format!("{}.toml", n.name));
        fs::write(&conf_path, config).unwrap();
        let child = spawn_agent(
            &n.ns,
            xlb,
            &conf_path,
            &n.agent_log_path(&self.work_dir),
            &n.api_socket,
            Some(&n.name),
            &mut self.res,
        );
        n.agent = Some(child);
    }

    /// Polls node `i`'s status (every 10 ms) until `done` holds; panics after `timeout` with
    /// the last report and the agent's log.
    pub fn wait_status(
        &self,
        i: usize,
        what: &str,
        timeout: Duration,
        done: impl Fn(&StatusReport) -> bool,
    ) -> StatusReport {
        let n = &self.lbs[i];
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let r = n.status();
            if done(&r) {
                return r;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{}: {what}: not reached within {timeout:?}:\n{}\n{}",
                n.name,
                r.render_table(),
                tail(&n.agent_log_path(&self.work_dir), 30)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until every backend of every VIP of node `i` is active with ring slots.
    pub fn wait_all_active(&self, i: usize, timeout: Duration) -> StatusReport {
        self.wait_status(i, "every backend active", timeout, all_active)
    }

    /// The last lines of node `i`'s agent log (for messages).
    pub fn agent_log_tail(&self, i: usize, lines: usize) -> String {
        tail(&self.lbs[i].agent_log_path(&self.work_dir), lines)
    }
}

impl Drop for PeerBed {
    fn drop(&mut self) {
        let agents: Vec<Child> = self.lbs.iter_mut().filter_map(|n| n.agent.take()).collect();
        teardown_and_reap(
            &format!("peer testbed {}", self.prefix),
            &self.res,
            &mut self.backends,
            agents,
        );
    }
}
