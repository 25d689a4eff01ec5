//! The multi-LB testbed: N xlb nodes behind a router that spreads flows over them with ECMP,
//! each node announcing the VIPs over BGP (with BFD) through BIRD.
//!
//! ```text
//!  client ns              router ns (BIRD, AS 64512)         switch ns (bridge br0)
//!  eth0 192.0.2.100 ---- eth1 192.0.2.1  eth0 198.51.100.1 ---- [ router            ]
//!                        ECMP, L4 hash                          [ lb1 (xlb_pass) ---- lb1 ns .2 (xlb, BIRD AS 64513)
//!                                                               [ lbN (xlb_pass) ---- lbN ns .(1+N)
//!                                                               [ b1 --------------- backend-1 ns .11 (VIPs on lo)
//! ```
//!
//! Backends answer the client straight (DSR, `dsr-l2` VIPs) through the router. Each node's
//! agent announces its ready VIPs (`[announce]`, [`Cluster::node_config`]) into kernel table
//! [`VIP_TABLE`] with protocol [`VIP_PROTO`]; the node's BIRD learns that table and exports it
//! to the router. Removed on drop (also on panic), like [`Testbed`](super::Testbed).

use std::collections::BTreeSet;
use std::fs;
use std::mem::ManuallyDrop;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use lb_userspace::api::{self, Request, Response, StatusReport};

use super::agent::node_agent_config;
use super::agent::{all_active, block_on, spawn_agent};
use super::bird::{self, BirdFiles};
use super::continuity::ContinuityOptions;
use super::plan::*;
use super::resources::{
    attach_pass, backend, begin, bridge, bridge_port, ethtool_off, finish_backends, ip, pin_root,
    python, start_server, start_servers, teardown_and_reap, test_prefix,
};
use super::{Backend, ProcRecord, Resources, tail, wait_exit};
use crate::netns::Netns;

/// The kernel table and route protocol the VIP routes use (the contract's defaults).
pub const VIP_TABLE: u32 = 200;
pub const VIP_PROTO: u8 = 200;
/// MAC of the router's segment port.
const ROUTER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Names everything (`<prefix>-router`, `/sys/fs/bpf/<prefix>`); unique per testbed.
    pub prefix: String,
    pub lbs: usize,
    pub backends: usize,
    /// Configs, logs, BIRD and API sockets (short: a socket path has at most 107 bytes).
    pub work_dir: PathBuf,
}

impl ClusterOptions {
    /// Prefix `xlbt-<tag>-<pid>-<n>`, work directory in the temp directory.
    pub fn for_test(tag: &str, lbs: usize, backends: usize) -> ClusterOptions {
        let prefix = test_prefix(tag);
        ClusterOptions {
            work_dir: std::env::temp_dir().join(&prefix),
            prefix,
            lbs,
            backends,
        }
    }
}

/// One LB node: its namespace, agent and BIRD.
pub struct LbNode {
    /// `lb1`, ...: also its switch port's name.
    pub name: String,
    pub ns: ManuallyDrop<Netns>,
    pub v4: Ipv4Addr,
    pub v6: Ipv6Addr,
    pub pin_dir: PathBuf,
    pub api_socket: PathBuf,
    pub bird: BirdFiles,
    agent: Option<Child>,
    bird_proc: Option<Child>,
    agents_started: u32,
    /// Its switch port is down ([`Cluster::crash_node`] until [`Cluster::revive_node`]).
    crashed: bool,
}

impl LbNode {
    pub fn agent_log_path(&self, work_dir: &Path) -> PathBuf {
        work_dir.join(format!("{}-agent-{}.log", self.name, self.agents_started))
    }

    pub fn agent_running(&self) -> bool {
        self.agent.is_some()
    }

    /// Crashed ([`Cluster::crash_node`]) and not revived since.
    pub fn crashed(&self) -> bool {
        self.crashed
    }

    /// One API request to the node's agent.
    pub fn api(&self, req: &Request) -> Response {
        block_on(api::call(&self.api_socket, req))
            .unwrap_or_else(|e| panic!("{}: API call {req:?}: {e}", self.name))
    }

    /// The agent's status.
    pub fn status(&self) -> StatusReport {
        match self.api(&Request::Status) {
            Response::Status(r) => r,
            other => panic!("{}: status: {other:?}", self.name),
        }
    }

    /// `xlb drain-node`: the agent withdraws the node's routes and keeps forwarding.
    pub fn drain(&self) {
        self.expect_ok(&Request::DrainNode);
    }

    /// `xlb undrain-node`: the agent announces the node's ready VIPs again.
    pub fn undrain(&self) {
        self.expect_ok(&Request::UndrainNode);
    }

    fn expect_ok(&self, req: &Request) {
        match self.api(req) {
            Response::Ok { .. } => {}
            other => panic!("{}: {req:?}: {other:?}", self.name),
        }
    }
}

pub struct Cluster {
    pub prefix: String,
    pub switch: ManuallyDrop<Netns>,
    pub router: ManuallyDrop<Netns>,
    pub client: ManuallyDrop<Netns>,
    pub lbs: Vec<LbNode>,
    pub backends: Vec<Backend>,
    pub work_dir: PathBuf,
    pub pin_root: PathBuf,
    pub router_bird: BirdFiles,
    /// The VIPs the nodes' configs carry ([`Cluster::node_config`] callers pass them; the
    /// failover and continuity scenarios keep them here so that a node started later, or a
    /// backend change ([`Cluster::apply_vips`]), gives every node the same rings).
    pub vips: Vec<VipSpec>,
    /// Set: every node's config gets a `[continuity]` section ([`Cluster::enable_continuity`]).
    pub(super) continuity: Option<ContinuityOptions>,
    router_bird_proc: Option<Child>,
    res: Resources,
    persisted: bool,
}

impl Cluster {
    /// Builds the topology, starts the backends' servers and every BIRD (the router's and each
    /// node's), but no agent ([`Cluster::start_agent`]). Panics (after removing what it made)
    /// when something cannot be made.
    pub fn up(opts: &ClusterOptions) -> Cluster {
        assert!((1..=MAX_LBS).contains(&opts.lbs), "1..={MAX_LBS} LB nodes");
        assert!(
            (1..=MAX_BACKENDS).contains(&opts.backends),
            "1..={MAX_BACKENDS} backends"
        );
        let pin_root = pin_root(&opts.prefix);
        let mut names = vec![
            "switch".to_owned(),
            "router".to_owned(),
            "client".to_owned(),
        ];
        names.extend((1..=opts.lbs).map(|i| format!("lb{i}")));
        names.extend((1..=opts.backends).map(|i| format!("b{i}")));
        let pin_dirs = (1..=opts.lbs)
            .flat_map(|i| {
                [
                    pin_root.join(format!("lb{i}")),
                    pin_root.join(format!("pass-lb{i}")),
                ]
            })
            .collect();
        let (mut res, mut guard, ns) = begin(&opts.prefix, &opts.work_dir, &names, pin_dirs);
        let mut ns = ns.into_iter();
        let switch = ns.next().unwrap();
        let router = ns.next().unwrap();
        let client = ns.next().unwrap();
        let lb_ns: Vec<_> = ns.by_ref().take(opts.lbs).collect();

        bridge(&switch);

        // The router: forwarding, L4 ECMP hashing (dist/bird/router.conf names these sysctls).
        bridge_port(&switch, &router, "router", ROUTER_MAC, ROUTER_V4, ROUTER_V6);
        for (key, value) in [
            ("net/ipv4/ip_forward", "1"),
            ("net/ipv6/conf/all/forwarding", "1"),
            ("net/ipv4/fib_multipath_hash_policy", "1"),
            ("net/ipv6/fib_multipath_hash_policy", "1"),
            ("net/ipv4/conf/all/rp_filter", "0"),
            ("net/ipv4/conf/default/rp_filter", "0"),
        ] {
            router.sysctl(key, value);
        }
        ip(
            &router,
            &format!(
                "link add eth1 type veth peer name eth0 netns {}",
                client.name
            ),
        );
        ip(&router, &format!("addr add {ROUTER_CLIENT_V4}/24 dev eth1"));
        ip(
            &router,
            &format!("addr add {ROUTER_CLIENT_V6}/64 dev eth1 nodad"),
        );
        ip(&router, "link set eth1 up");
        // The LB's XDP cannot complete a checksum left to "hardware": frames leave the router
        // as a NIC would put them on the wire.
        ethtool_off(&router, "eth0");

        for key in ["all", "default"] {
            client.sysctl(&format!("net/ipv6/conf/{key}/accept_dad"), "0");
        }
        ip(&client, "link set lo up");
        ip(&client, &format!("addr add {ROUTED_CLIENT_V4}/24 dev eth0"));
        ip(
            &client,
            &format!("addr add {ROUTED_CLIENT_V6}/64 dev eth0 nodad"),
        );
        ip(&client, "link set eth0 up");
        ip(
            &client,
            &format!("route add default via {ROUTER_CLIENT_V4}"),
        );
        ip(
            &client,
            &format!("-6 route add default via {ROUTER_CLIENT_V6}"),
        );
        ethtool_off(&client, "eth0");

        let mut lbs = Vec::new();
        for (i, node) in lb_ns.into_iter().enumerate() {
            let name = format!("lb{}", i + 1);
            let (v4, v6) = lb_addrs(i);
            bridge_port(&switch, &node, &name, lb_mac(i), v4, v6);
            attach_pass(&switch, pin_root.join(format!("pass-{name}")), &name);
            lbs.push(LbNode {
                bird: bird::files(&opts.work_dir, &name),
                pin_dir: pin_root.join(&name),
                api_socket: opts.work_dir.join(format!("{name}.sock")),
                name,
                ns: node,
                v4,
                v6,
                agent: None,
                bird_proc: None,
                agents_started: 0,
                crashed: false,
            });
        }

        let mut backends = Vec::new();
        for (i, node) in ns.enumerate() {
            let b = backend(&switch, node, i);
            // Direct server return: answers go to the client through the router.
            ip(&b.ns, &format!("route add 192.0.2.0/24 via {ROUTER_V4}"));
            ip(
                &b.ns,
                &format!("-6 route add 2001:db8:2::/64 via {ROUTER_V6}"),
            );
            backends.push(b);
        }

        res.notes.insert(
            "client".into(),
            format!("{ROUTED_CLIENT_V4} {ROUTED_CLIENT_V6}"),
        );
        res.notes.insert(
            "router".into(),
            format!("{ROUTER_V4} {ROUTER_V6} (AS {ROUTER_AS}, BIRD)"),
        );
        for n in &lbs {
            res.notes.insert(
                n.name.clone(),
                format!("{} {} (AS {NODE_AS}, BIRD)", n.v4, n.v6),
            );
        }
        finish_backends(&mut res, &backends, &opts.work_dir);
        guard.0 = None;
        let mut c = Cluster {
            prefix: opts.prefix.clone(),
            switch,
            router,
            client,
            lbs,
            backends,
            work_dir: opts.work_dir.clone(),
            pin_root,
            router_bird: bird::files(&opts.work_dir, "router"),
            vips: Vec::new(),
            continuity: None,
            router_bird_proc: None,
            res,
            persisted: false,
        };
        start_servers(&python(), &c.work_dir, &mut c.backends, &mut c.res);
        c.router_bird.write_conf(&bird::render(
            bird::ROUTER_CONF,
            &[
                ("ROUTER_ADDR", ROUTER_V4.to_string()),
                ("ROUTER_AS", ROUTER_AS.to_string()),
                ("NODE_AS", NODE_AS.to_string()),
                ("NODES", "198.51.100.0/24".into()),
            ],
        ));
        c.start_router_bird();
        for i in 0..c.lbs.len() {
            c.start_bird(i);
        }
        c
    }

    /// What the testbed created so far.
    pub fn resources(&self) -> &Resources {
        &self.res
    }

    /// Writes the state file and leaves everything running after this value is gone.
    pub fn persist(mut self, state: &Path) -> std::io::Result<()> {
        self.res.save(state)?;
        self.persisted = true;
        Ok(())
    }

    /// Node `i`'s agent config: [`agent_config`] with its own pin dir, socket and address, an
    /// `[announce]` section writing the table its BIRD learns, and the `[continuity]` section
    /// when enabled. The hold-down is 1 s instead
    /// of the shipped 5 s because scenarios here change a node's routes seconds apart; the
    /// withdraw grace is 1 s so that `stop --detach` stays short.
    pub fn node_config(&self, i: usize, agent_extra: &str, vips: &[VipSpec]) -> String {
        let n = &self.lbs[i];
        let mut config = node_agent_config(
            &n.pin_dir,
            &n.api_socket,
            (n.v4, n.v6),
            self.backends.len(),
            agent_extra,
            vips,
        );
        config.push_str(&format!(
            "\n[announce]\nenabled = true\ntable = {VIP_TABLE}\nprotocol = {VIP_PROTO}\n\
             hold-down = \"1s\"\nwithdraw-grace = \"1s\"\nbird-socket = \"{}\"\n",
            n.bird.socket().display()
        ));
        if let Some(section) = self.continuity_section(i) {
            config.push_str(&section);
        }
        config
    }

    /// Where [`Cluster::start_agent`] writes node `i`'s config (and a reload re-reads it).
    pub fn config_path(&self, i: usize) -> PathBuf {
        self.work_dir.join(format!("{}.toml", self.lbs[i].name))
    }

    /// Starts node `i`'s BIRD (rendered from dist/bird/xlb-node.conf) and waits for its socket.
    pub fn start_bird(&mut self, i: usize) {
        let n = &self.lbs[i];
        assert!(n.bird_proc.is_none(), "{}: bird already running", n.name);
        n.bird.write_conf(&bird::render(
            bird::NODE_CONF,
            &[
                ("NODE_ADDR", n.v4.to_string()),
                ("ROUTER_ADDR", ROUTER_V4.to_string()),
                ("NODE_AS", NODE_AS.to_string()),
                ("ROUTER_AS", ROUTER_AS.to_string()),
                ("VIP_TABLE", VIP_TABLE.to_string()),
                ("VIP_PROTO", VIP_PROTO.to_string()),
            ],
        ));
        let mut child = n.bird.spawn(&n.ns);
        self.res
            .processes
            .push(ProcRecord::of(&child, &format!("{} bird", n.name)));
        n.bird.wait_ready(&mut child);
        self.lbs[i].bird_proc = Some(child);
    }

    /// Starts `xlb run` with `config` in node `i` and waits (at most 30 s) for its API.
    pub fn start_agent(&mut self, i: usize, xlb: &Path, config: &str) {
        let conf_path = self.config_path(i);
        let n = &mut self.lbs[i];
        assert!(n.agent.is_none(), "{}: an agent is already running", n.name);
        n.agents_started += 1;
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

    /// Waits until every backend of every VIP of node `i` is active with ring slots.
    pub fn wait_all_active(&self, i: usize, timeout: Duration) {
        let n = &self.lbs[i];
        let deadline = Instant::now() + timeout;
        loop {
            let r = n.status();
            if all_active(&r) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}: not every backend active within {timeout:?}:\n{}\n{}",
                n.name,
                r.render_table(),
                tail(&n.agent_log_path(&self.work_dir), 30)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Hard-stops node `i` as a crash would: its link goes down, its agent and BIRD get
    /// SIGKILL (nothing is withdrawn: the router notices through BFD).
    pub fn crash_node(&mut self, i: usize) {
        let name = self.lbs[i].name.clone();
        ip(&self.switch, &format!("link set {name} down"));
        let n = &mut self.lbs[i];
        n.crashed = true;
        if let Some(child) = n.agent.take() {
            self.res.kill(child);
        }
        if n.bird_proc.is_some() {
            self.kill_bird(i);
        }
    }

    /// Starts the router's BIRD (its config is written at [`Cluster::up`]) and waits for its
    /// socket.
    pub fn start_router_bird(&mut self) {
        assert!(
            self.router_bird_proc.is_none(),
            "router bird already running"
        );
        let mut child = self.router_bird.spawn(&self.router);
        self.res
            .processes
            .push(ProcRecord::of(&child, "router bird"));
        self.router_bird.wait_ready(&mut child);
        self.router_bird_proc = Some(child);
    }

    /// `kill -9` of the router's BIRD: every node's BGP session goes down, and the router's
    /// kernel keeps no route to a VIP.
    pub fn kill_router_bird(&mut self) {
        let child = self
            .router_bird_proc
            .take()
            .expect("no router BIRD running");
        self.res.kill(child);
        let _ = fs::remove_file(self.router_bird.socket());
    }

    /// `kill -9` of node `i`'s BIRD alone: the agent, its routes in the kernel table and the
    /// program stay; the router loses the node's BGP session (BFD notices).
    pub fn kill_bird(&mut self, i: usize) {
        let n = &mut self.lbs[i];
        let child = n.bird_proc.take().expect("no BIRD running");
        self.res.kill(child);
        // BIRD leaves its socket behind when killed; a restarted BIRD makes a new one.
        let _ = fs::remove_file(n.bird.socket());
    }

    /// `kill -9` of node `i`'s agent alone: BIRD, the link and the pinned program stay, and so
    /// do the agent's routes in the kernel table.
    pub fn kill_agent(&mut self, i: usize) {
        let child = self.lbs[i].agent.take().expect("no agent running");
        self.res.kill(child);
    }

    /// `xlb stop --detach` on node `i`: the agent withdraws its routes, waits its grace,
    /// detaches and exits (waited for, at most 30 s).
    pub fn stop_detach(&mut self, i: usize) {
        let n = &mut self.lbs[i];
        let mut child = n.agent.take().expect("no agent running");
        match n.api(&Request::Shutdown { detach: true }) {
            Response::Ok { .. } => {}
            other => panic!("{}: stop --detach: {other:?}", n.name),
        }
        if wait_exit(&mut child, Duration::from_secs(30)).is_none() {
            let _ = child.kill();
            panic!(
                "{}: the agent did not exit within 30 s of stop --detach",
                n.name
            );
        }
        self.res.forget(&child);
    }

    /// Kills backend `i`'s servers: its health checks fail on every node.
    pub fn stop_backend(&mut self, i: usize) {
        let child = self.backends[i].server.take().expect("backend not running");
        self.res.kill(child);
    }

    /// Starts backend `i`'s servers again.
    pub fn start_backend(&mut self, i: usize) {
        let b = &mut self.backends[i];
        start_server(&python(), &self.work_dir, b, &mut self.res);
    }

    /// Brings node `i`'s link back up and starts its BIRD (the agent: [`Cluster::start_agent`]).
    pub fn revive_node(&mut self, i: usize) {
        let name = self.lbs[i].name.clone();
        ip(&self.switch, &format!("link set {name} up"));
        self.lbs[i].crashed = false;
        self.start_bird(i);
    }

    /// The next hops of the router's route to `vip` (empty: no route).
    pub fn router_next_hops(&self, vip: IpAddr) -> BTreeSet<IpAddr> {
        let fam = if vip.is_ipv4() { "-4" } else { "-6" };
        let out = self
            .router
            .ip(&[fam, "route", "show", "exact", &vip.to_string()]);
        next_hops(&out)
    }

    /// Waits (at most `timeout`) until the router's next hops for `vip` are `want`; returns
    /// how long that took. Panics with the router's view otherwise.
    pub fn wait_next_hops(
        &self,
        vip: IpAddr,
        want: &BTreeSet<IpAddr>,
        timeout: Duration,
    ) -> Duration {
        let start = Instant::now();
        loop {
            let have = self.router_next_hops(vip);
            if &have == want {
                return start.elapsed();
            }
            if start.elapsed() > timeout {
                panic!(
                    "router: next hops of {vip} are {have:?}, not {want:?}, after {timeout:?}\n{}",
                    self.router_bird
                        .birdc(&["show", "protocols"])
                        .unwrap_or_else(|e| e)
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Packets the switch has handed to node `i` (its port's transmit counter): the traffic the
    /// router sent that node.
    pub fn node_packets(&self, i: usize) -> u64 {
        self.switch.link_stats(&self.lbs[i].name).tx_packets
    }

    /// The next hop the router sees for node `i` for a VIP of this family.
    pub fn node_addr(&self, i: usize, v6: bool) -> IpAddr {
        let n = &self.lbs[i];
        if v6 { n.v6.into() } else { n.v4.into() }
    }
}

/// The gateways of `ip route show` output: a single `via X` or one `nexthop via X` per path.
pub fn next_hops(ip_route_output: &str) -> BTreeSet<IpAddr> {
    let words: Vec<&str> = ip_route_output.split_whitespace().collect();
    words
        .windows(2)
        .filter(|w| w[0] == "via")
        .filter_map(|w| w[1].parse().ok())
        .collect()
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.persisted {
            return;
        }
        let others: Vec<Child> = self
            .lbs
            .iter_mut()
            .flat_map(|n| [n.agent.take(), n.bird_proc.take()])
            .chain([self.router_bird_proc.take()])
            .flatten()
            .collect();
        teardown_and_reap(
            &format!("cluster {}", self.prefix),
            &self.res,
            &mut self.backends,
            others,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_hops_of_single_and_multipath_routes() {
        let multi = "203.0.113.12 proto bird metric 32 \n\tnexthop via 198.51.100.2 dev eth0 weight 1 \n\tnexthop via 198.51.100.3 dev eth0 weight 1 \n";
        let got: Vec<String> = next_hops(multi).iter().map(|a| a.to_string()).collect();
        assert_eq!(got, ["198.51.100.2", "198.51.100.3"]);
        let single = "203.0.113.12 via 198.51.100.3 dev eth0 proto bird metric 32 \n";
        assert_eq!(next_hops(single).len(), 1);
        assert!(next_hops("").is_empty());
    }
}
