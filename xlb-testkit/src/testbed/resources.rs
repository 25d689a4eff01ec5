//! What a testbed creates - namespaces, the bridge and veth pairs, pins, backend processes -
//! the building of the topology, and its removal, now or later from the state file. The steps
//! are functions of their own: the multi-LB testbed (`cluster.rs`) builds from the same ones.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::mem::ManuallyDrop;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use lb_common::map_names;
use lb_userspace::decap::{self, DecapOptions};
use lb_userspace::loader;
use lb_userspace::model::XdpMode;
use lb_userspace::pinning;
use serde::{Deserialize, Serialize};

use super::plan::*;
use super::{Backend, Testbed, tail};
use crate::netns::{Netns, run_ip};

/// A process the testbed started; `start_time` (from /proc/PID/stat) tells it from a later
/// process that got the same pid.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProcRecord {
    pub pid: u32,
    pub start_time: u64,
    pub what: String,
}

/// Everything a testbed created: what [`Resources::teardown`] removes, and the state file.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Resources {
    pub prefix: String,
    /// Namespaces, in creation order.
    pub namespaces: Vec<String>,
    pub processes: Vec<ProcRecord>,
    /// Pin directories (each removed with `pinning::detach`), all below `pin_root`.
    pub pin_dirs: Vec<PathBuf>,
    pub pin_root: Option<PathBuf>,
    /// Directory of configs, logs, the API socket (removed whole).
    pub work_dir: Option<PathBuf>,
    /// Human-readable facts for `status` (addresses, names).
    #[serde(default)]
    pub notes: BTreeMap<String, String>,
}

fn proc_start_time(pid: u32) -> Option<(u64, char)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may contain spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    // Field 22 of the whole line is field 20 after the command: starttime.
    Some((fields.get(19)?.parse().ok()?, state))
}

impl ProcRecord {
    pub(super) fn of(child: &Child, what: &str) -> ProcRecord {
        let pid = child.id();
        ProcRecord {
            pid,
            start_time: proc_start_time(pid).map_or(0, |(t, _)| t),
            what: what.to_owned(),
        }
    }

    /// Still the process we started, and not a zombie.
    pub fn alive(&self) -> bool {
        matches!(proc_start_time(self.pid), Some((t, s)) if t == self.start_time && s != 'Z')
    }

    fn signal(&self, sig: i32) {
        if self.alive() {
            // SAFETY: plain syscall on a pid we verified is our process.
            unsafe { libc::kill(self.pid as i32, sig) };
        }
    }
}

/// Waits (at most `timeout`, polling every 20 ms) for `child` to exit; `None` if it still runs.
pub fn wait_exit(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Resources {
    /// SIGKILLs a process this testbed started, reaps it and drops its record (teardown has
    /// nothing left to do for it).
    pub fn kill(&mut self, mut child: Child) {
        let _ = child.kill();
        let _ = child.wait();
        self.forget(&child);
    }

    /// Drops the record of a process that has exited.
    pub fn forget(&mut self, child: &Child) {
        let pid = child.id();
        self.processes.retain(|p| p.pid != pid);
    }

    pub fn load(path: &Path) -> io::Result<Resources> {
        let text = fs::read_to_string(path)?;
        serde_json::from_str(&text).map_err(io::Error::other)
    }

    pub fn save(&self, path: &Path) -> io::Result<()> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        fs::write(
            path,
            serde_json::to_string_pretty(self).map_err(io::Error::other)?,
        )
    }

    /// Removes everything recorded, in order: processes (SIGTERM, SIGKILL after 2 s), pins,
    /// namespaces, the work directory. Best effort and idempotent; returns what could not be
    /// removed.
    pub fn teardown(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for p in &self.processes {
            p.signal(libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.processes.iter().any(ProcRecord::alive) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        for p in &self.processes {
            p.signal(libc::SIGKILL);
        }
        for dir in &self.pin_dirs {
            if let Err(e) = pinning::detach(dir) {
                problems.push(format!("{}: {e}", dir.display()));
            }
        }
        if let Some(root) = &self.pin_root
            && root.exists()
            && let Err(e) = fs::remove_dir_all(root)
        {
            problems.push(format!("{}: {e}", root.display()));
        }
        for ns in self.namespaces.iter().rev() {
            if Path::new("/var/run/netns").join(ns).exists() {
                let out = std::process::Command::new("ip")
                    .args(["netns", "del", ns])
                    .output();
                match out {
                    Ok(o) if o.status.success() => {}
                    Ok(o) => problems.push(format!(
                        "ip netns del {ns}: {}",
                        String::from_utf8_lossy(&o.stderr).trim()
                    )),
                    Err(e) => problems.push(format!("ip netns del {ns}: {e}")),
                }
            }
        }
        if let Some(dir) = &self.work_dir
            && dir.exists()
            && let Err(e) = fs::remove_dir_all(dir)
        {
            problems.push(format!("{}: {e}", dir.display()));
        }
        problems
    }

    /// One line per recorded item, with whether it still exists.
    pub fn status(&self) -> String {
        let mut s = String::new();
        let yes = |b: bool| if b { "present" } else { "GONE" };
        let _ = writeln!(s, "testbed {}", self.prefix);
        for (k, v) in &self.notes {
            let _ = writeln!(s, "  {k:<10} {v}");
        }
        for ns in &self.namespaces {
            let there = Path::new("/var/run/netns").join(ns).exists();
            let _ = writeln!(s, "  netns      {ns:<36} {}", yes(there));
        }
        for p in &self.processes {
            let state = if p.alive() { "running" } else { "GONE" };
            let _ = writeln!(
                s,
                "  process    {:<36} {state}",
                format!("{} ({})", p.what, p.pid)
            );
        }
        for d in &self.pin_dirs {
            let _ = writeln!(s, "  pins       {:<36} {}", d.display(), yes(d.exists()));
        }
        if let Some(w) = &self.work_dir {
            let _ = writeln!(s, "  files      {:<36} {}", w.display(), yes(w.exists()));
        }
        s
    }
}

#[derive(Clone, Debug)]
pub struct Options {
    /// Names everything: namespaces `<prefix>-client`, pins `/sys/fs/bpf/<prefix>`. Unique per
    /// testbed (e.g. `xlbt-e2e-<pid>-<n>`).
    pub prefix: String,
    pub backends: usize,
    /// Created by the testbed and removed with it: configs, logs, the API socket (keep its path
    /// short: a unix socket path has at most 107 bytes).
    pub work_dir: PathBuf,
}

impl Options {
    /// For tests: prefix `xlbt-<tag>-<pid>-<n>`, work dir in the temp directory.
    pub fn for_test(tag: &str, backends: usize) -> Options {
        let prefix = test_prefix(tag);
        Options {
            work_dir: std::env::temp_dir().join(&prefix),
            prefix,
            backends,
        }
    }
}

/// `xlbt-<tag>-<pid>-<n>`: one counter for both kinds of testbed, so two built by one test
/// process never share a prefix.
pub(super) fn test_prefix(tag: &str) -> String {
    use std::sync::atomic::AtomicU32;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "xlbt-{tag}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn bpffs_mounted() -> bool {
    fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(1) == Some(&"/sys/fs/bpf") && f.get(2) == Some(&"bpf")
        })
}

/// `ip -n NS WORDS...` (`words` split at spaces).
pub(super) fn ip(ns: &Netns, words: &str) {
    ns.ip(&words.split_whitespace().collect::<Vec<_>>());
}

/// Tears down a [`Resources`] on drop unless disarmed (a panic while building).
pub(super) struct TeardownGuard(pub(super) Option<Resources>);

impl Drop for TeardownGuard {
    fn drop(&mut self) {
        if let Some(r) = self.0.take() {
            r.teardown();
        }
    }
}

/// The bpffs directory a testbed's pins live under.
pub(super) fn pin_root(prefix: &str) -> PathBuf {
    Path::new("/sys/fs/bpf").join(prefix)
}

/// The first step of every testbed: records the namespaces `<prefix>-<name>` and `pin_dirs`,
/// then creates the work and pin directories and the namespaces (in `names`' order). Recorded
/// before created: the guard, armed until the caller disarms it, removes whatever a panic
/// half-way left.
pub(super) fn begin(
    prefix: &str,
    work_dir: &Path,
    names: &[String],
    pin_dirs: Vec<PathBuf>,
) -> (Resources, TeardownGuard, Vec<ManuallyDrop<Netns>>) {
    assert!(
        bpffs_mounted(),
        "the testbed needs bpffs at /sys/fs/bpf: run `cargo xtask setup` (as root)"
    );
    let pin_root = pin_root(prefix);
    let res = Resources {
        prefix: prefix.to_owned(),
        namespaces: names.iter().map(|n| format!("{prefix}-{n}")).collect(),
        pin_dirs,
        pin_root: Some(pin_root.clone()),
        work_dir: Some(work_dir.to_owned()),
        ..Resources::default()
    };
    let guard = TeardownGuard(Some(res.clone()));
    for dir in [work_dir, pin_root.as_path()] {
        assert!(
            !dir.exists(),
            "{} exists: another testbed with prefix {prefix} is up (or was not removed)",
            dir.display(),
        );
        fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    }
    let namespaces = res
        .namespaces
        .iter()
        .map(|n| ManuallyDrop::new(Netns::named(n)))
        .collect();
    (res, guard, namespaces)
}

/// The segment's bridge `br0` in the switch namespace.
pub(super) fn bridge(switch: &Netns) {
    ip(switch, "link set lo up");
    ip(switch, "link add br0 type bridge mcast_snooping 0");
    ip(switch, "link set br0 up");
    // The bridge stands in for a switch: no netfilter on bridged frames (with br_netfilter
    // loaded on the host, a new namespace starts with these at 1).
    if Path::new("/proc/sys/net/bridge/bridge-nf-call-iptables").exists() {
        for proto in ["iptables", "ip6tables", "arptables"] {
            switch.sysctl(&format!("net/bridge/bridge-nf-call-{proto}"), "0");
        }
    }
}

/// A veth from the bridge (`port`) to `node`'s eth0, with its addresses.
pub(super) fn bridge_port(
    switch: &Netns,
    node: &Netns,
    port: &str,
    mac: [u8; 6],
    v4: Ipv4Addr,
    v6: Ipv6Addr,
) {
    for key in ["all", "default"] {
        node.sysctl(&format!("net/ipv6/conf/{key}/accept_dad"), "0");
    }
    ip(
        switch,
        &format!(
            "link add {port} type veth peer name eth0 netns {}",
            node.name
        ),
    );
    ip(switch, &format!("link set {port} master br0 up"));
    ip(node, &format!("link set eth0 address {}", fmt_mac(&mac)));
    ip(node, &format!("addr add {v4}/24 dev eth0"));
    ip(node, &format!("addr add {v6}/64 dev eth0 nodad"));
    ip(node, "link set eth0 up");
    ip(node, "link set lo up");
}

/// A veth hands its peer packets with the checksum left to "hardware" (CHECKSUM_PARTIAL) and
/// TCP segments up to 64 KiB. XDP sees neither flag: the LB would forward a bad checksum, the
/// backend drop it. So whatever sends towards the LB sends what a NIC would put on the wire:
/// complete checksums, MTU-sized frames.
pub(super) fn ethtool_off(ns: &Netns, dev: &str) {
    let out = ns
        .command("ethtool")
        .args(["-K", dev, "tx", "off", "tso", "off", "gso", "off"])
        .output()
        .unwrap_or_else(|e| panic!("ethtool (cargo xtask setup installs it): {e}"));
    assert!(
        out.status.success(),
        "ethtool -K {dev} tx off tso off gso off: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// XDP_TX on a veth reaches the peer only if the peer runs an XDP program: `xlb_pass` on the
/// switch's end of an LB's port, pinned in `pass_dir`.
pub(super) fn attach_pass(switch: &Netns, pass_dir: PathBuf, port: &str) {
    let port = port.to_owned();
    switch.enter(move || {
        fs::create_dir_all(&pass_dir).unwrap();
        let mut ebpf = loader::load_aux(map_names::PROG_PASS)
            .unwrap_or_else(|e| panic!("loading xlb_pass: {e}"));
        pinning::attach_program(
            &mut ebpf,
            map_names::PROG_PASS,
            &pass_dir,
            &port,
            XdpMode::Native,
        )
        .unwrap_or_else(|e| panic!("attaching xlb_pass to switch port {port}: {e}"));
    });
}

/// Backend `i` on the segment (port `b<i+1>`) with every VIP on its `lo`; its server is not
/// started yet.
pub(super) fn backend(switch: &Netns, node: ManuallyDrop<Netns>, i: usize) -> Backend {
    let (v4, v6) = backend_addrs(i);
    let mac = backend_mac(i);
    bridge_port(switch, &node, &format!("b{}", i + 1), mac, v4, v6);
    for vip in all_vips() {
        let plen = if vip.is_ipv4() { 32 } else { 128 };
        ip(&node, &format!("addr add {vip}/{plen} dev lo"));
    }
    // dsr-l2: the VIPs on lo must not be announced or answered for on eth0. All modes: the
    // (decapsulated) packet arrives on eth0 for an address of lo.
    for (key, value) in [
        ("net/ipv4/conf/all/arp_ignore", "1"),
        ("net/ipv4/conf/all/arp_announce", "2"),
        ("net/ipv4/conf/all/rp_filter", "0"),
        ("net/ipv4/conf/default/rp_filter", "0"),
        ("net/ipv4/conf/eth0/rp_filter", "0"),
        ("net/ipv4/conf/lo/rp_filter", "0"),
    ] {
        node.sysctl(key, value);
    }
    Backend {
        name: format!("backend-{}", i + 1),
        ns: node,
        v4,
        v6,
        mac,
        server: None,
    }
}

/// The last step before a testbed's drop takes over from the guard: the backends' addresses
/// in the notes, their server script in the work directory.
pub(super) fn finish_backends(res: &mut Resources, backends: &[Backend], work_dir: &Path) {
    for b in backends {
        res.notes
            .insert(b.name.clone(), format!("{} {}", b.v4, b.v6));
    }
    fs::write(work_dir.join("backend.py"), BACKEND_PY).unwrap();
}

/// Starts every backend's servers (see [`start_server`]).
pub(super) fn start_servers(
    python: &Path,
    work_dir: &Path,
    backends: &mut [Backend],
    res: &mut Resources,
) {
    for b in backends {
        start_server(python, work_dir, b, res);
    }
}

/// A testbed's drop: removes what `res` records, reaps the processes it killed (the
/// backends' servers and `others`) and reports what could not be removed.
pub(super) fn teardown_and_reap(
    what: &str,
    res: &Resources,
    backends: &mut [Backend],
    others: impl IntoIterator<Item = Child>,
) {
    let problems = res.teardown();
    for b in backends {
        if let Some(mut c) = b.server.take() {
            let _ = c.wait();
        }
    }
    for mut c in others {
        let _ = c.wait();
    }
    if !problems.is_empty() {
        eprintln!("{what}: teardown left: {}", problems.join("; "));
    }
}

impl Testbed {
    /// Builds the topology and starts the backends' servers. Panics (after removing what it
    /// created) when something cannot be made.
    pub fn up(opts: &Options) -> Testbed {
        assert!(
            (1..=MAX_BACKENDS).contains(&opts.backends),
            "1..={MAX_BACKENDS} backends"
        );
        let pin_root = pin_root(&opts.prefix);
        let mut names = vec!["switch".to_owned(), "client".to_owned(), "lb".to_owned()];
        names.extend((1..=opts.backends).map(|i| format!("b{i}")));
        let pin_dirs = [pin_root.join("lb"), pin_root.join("pass")]
            .into_iter()
            .chain((1..=opts.backends).map(|i| pin_root.join(format!("decap-b{i}"))))
            .collect();
        let (mut res, mut guard, ns) = begin(&opts.prefix, &opts.work_dir, &names, pin_dirs);
        let mut ns = ns.into_iter();
        let switch = ns.next().unwrap();
        let client = ns.next().unwrap();
        let lb = ns.next().unwrap();

        bridge(&switch);
        bridge_port(&switch, &client, "client", CLIENT_MAC, CLIENT_V4, CLIENT_V6);
        ethtool_off(&client, "eth0");
        bridge_port(&switch, &lb, "lb", LB_MAC, LB_V4, LB_V6);
        ip(&client, &format!("route add 203.0.113.0/24 via {LB_V4}"));
        ip(
            &client,
            &format!("-6 route add 2001:db8:113::/64 via {LB_V6}"),
        );
        attach_pass(&switch, pin_root.join("pass"), "lb");

        let mut backends = Vec::new();
        for (i, node) in ns.enumerate() {
            let b = backend(&switch, node, i);
            let decap_dir = pin_root.join(format!("decap-b{}", i + 1));
            b.ns.enter(move || {
                decap::attach(&DecapOptions {
                    iface: "eth0".into(),
                    lb_src_v4: Some(LB_V4),
                    lb_src_v6: Some(LB_V6),
                    gue_port: lb_userspace::config::DEFAULT_GUE_PORT,
                    pin_dir: decap_dir,
                    mode: XdpMode::Native,
                })
                .unwrap_or_else(|e| panic!("xlb decap on a backend: {e:#}"));
            });
            backends.push(b);
        }

        res.notes
            .insert("client".into(), format!("{CLIENT_V4} {CLIENT_V6}"));
        res.notes.insert("lb".into(), format!("{LB_V4} {LB_V6}"));
        res.notes.insert(
            "vips".into(),
            Mode::ALL
                .iter()
                .map(|m| format!("{} {} {}", m.name(), m.vip(false), m.vip(true)))
                .collect::<Vec<_>>()
                .join(", "),
        );
        finish_backends(&mut res, &backends, &opts.work_dir);
        // From here on the testbed's drop tears down.
        guard.0 = None;
        let mut tb = Testbed {
            prefix: opts.prefix.clone(),
            switch,
            client,
            lb,
            backends,
            work_dir: opts.work_dir.clone(),
            pin_root,
            python: python(),
            res,
            agent: None,
            agents_started: 0,
            persisted: false,
        };
        start_servers(&tb.python, &tb.work_dir, &mut tb.backends, &mut tb.res);
        tb
    }
    /// What the testbed created so far.
    pub fn resources(&self) -> &Resources {
        &self.res
    }

    /// Writes the state file and leaves everything running after this value is gone; a later
    /// [`Resources::teardown`] of the loaded state file removes it.
    pub fn persist(mut self, state: &Path) -> io::Result<()> {
        self.res.save(state)?;
        self.persisted = true;
        Ok(())
    }

    /// The agent's pin directory (its config's `pin-dir`).
    pub fn pin_dir(&self) -> PathBuf {
        self.pin_root.join("lb")
    }

    pub fn maps_dir(&self) -> PathBuf {
        pinning::maps_dir(&self.pin_dir())
    }

    pub fn decap_pin_dir(&self, i: usize) -> PathBuf {
        self.pin_root.join(format!("decap-b{}", i + 1))
    }

    /// Starts backend `i`'s servers (again) and waits until they listen.
    pub fn start_backend(&mut self, i: usize) {
        let b = &mut self.backends[i];
        start_server(&self.python, &self.work_dir, b, &mut self.res);
    }

    /// Kills backend `i`'s servers (SIGKILL: the port closes at once, connections get RST).
    pub fn stop_backend(&mut self, i: usize) {
        let child = self.backends[i].server.take().expect("backend not running");
        self.res.kill(child);
    }
}

/// Starts backend `b`'s servers (recorded in `res` before anything can fail) and waits until
/// they listen.
pub(super) fn start_server(python: &Path, work_dir: &Path, b: &mut Backend, res: &mut Resources) {
    assert!(b.server.is_none(), "{}: already running", b.name);
    let log_path = work_dir.join(format!("{}.log", b.name));
    let log = fs::File::create(&log_path).unwrap();
    let mut cmd = b.ns.command(python);
    cmd.arg(work_dir.join("backend.py"))
        .args(["--name", &b.name])
        .args(["--http-port", &HTTP_PORT.to_string()])
        .args(["--udp-port", &UDP_PORT.to_string()]);
    for a in all_vips()
        .into_iter()
        .chain([IpAddr::V4(b.v4), IpAddr::V6(b.v6)])
    {
        cmd.args(["--udp-bind", &a.to_string()]);
    }
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("starting {} ({}): {e}", b.name, python.display()));
    let what = format!("{} server", b.name);
    res.processes.push(ProcRecord::of(&child, &what));
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if fs::read_to_string(&log_path)
            .unwrap_or_default()
            .contains("ready")
        {
            b.server = Some(child);
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited ({status}): {}", tail(&log_path, 20));
        }
        assert!(
            Instant::now() < deadline,
            "{what} not ready after 15 s: {}",
            tail(&log_path, 20)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The python interpreter the backends run on.
pub(super) fn python() -> PathBuf {
    ["/usr/bin/python3", "/usr/local/bin/python3"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("python3"))
}

impl Drop for Testbed {
    fn drop(&mut self) {
        if self.persisted {
            return;
        }
        teardown_and_reap(
            &format!("testbed {}", self.prefix),
            &self.res,
            &mut self.backends,
            self.agent.take(),
        );
    }
}

/// Runs `ip` in a namespace by name (for tools that only have the state file).
pub fn ip_in(ns: &str, args: &[&str]) -> String {
    let mut all = vec!["-n", ns];
    all.extend_from_slice(args);
    run_ip(&all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_round_trip_through_the_state_file() {
        let r = Resources {
            prefix: "xlbtb-1".into(),
            namespaces: vec!["xlbtb-1-lb".into()],
            processes: vec![ProcRecord {
                pid: 1,
                start_time: 2,
                what: "x".into(),
            }],
            ..Resources::default()
        };
        let back: Resources = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back.namespaces, r.namespaces);
        assert_eq!(back.processes[0].start_time, 2);
        // pid 1 with another start time is not ours.
        assert!(!back.processes[0].alive());
    }
}
