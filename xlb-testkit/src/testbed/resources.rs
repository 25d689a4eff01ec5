//! What a testbed creates - namespaces, the bridge and veth pairs, pins, backend processes -
//! the building of the topology, and its removal, now or later from the state file.

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
        use std::sync::atomic::AtomicU32;
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let prefix = format!(
            "xlbt-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        Options {
            work_dir: std::env::temp_dir().join(&prefix),
            prefix,
            backends,
        }
    }
}

pub(super) fn bpffs_mounted() -> bool {
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

impl Testbed {
    /// Builds the topology and starts the backends' servers. Panics (after removing what it
    /// created) when something cannot be made.
    pub fn up(opts: &Options) -> Testbed {
        assert!(
            (1..=MAX_BACKENDS).contains(&opts.backends),
            "1..={MAX_BACKENDS} backends"
        );
        assert!(
            bpffs_mounted(),
            "the testbed needs bpffs at /sys/fs/bpf: run `cargo xtask setup` (as root)"
        );
        let pin_root = Path::new("/sys/fs/bpf").join(&opts.prefix);
        let mut names = vec!["switch".to_owned(), "client".to_owned(), "lb".to_owned()];
        names.extend((1..=opts.backends).map(|i| format!("b{i}")));
        let mut res = Resources {
            prefix: opts.prefix.clone(),
            namespaces: names
                .iter()
                .map(|n| format!("{}-{n}", opts.prefix))
                .collect(),
            pin_dirs: [pin_root.join("lb"), pin_root.join("pass")]
                .into_iter()
                .chain((1..=opts.backends).map(|i| pin_root.join(format!("decap-b{i}"))))
                .collect(),
            pin_root: Some(pin_root.clone()),
            work_dir: Some(opts.work_dir.clone()),
            ..Resources::default()
        };
        // Everything is recorded before it is created: a panic half-way removes what exists.
        let mut guard = TeardownGuard(Some(res.clone()));
        for dir in [&opts.work_dir, &pin_root] {
            assert!(
                !dir.exists(),
                "{} exists: another testbed with prefix {} is up (or was not removed)",
                dir.display(),
                opts.prefix
            );
            fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        }
        let mut ns = res
            .namespaces
            .iter()
            .map(|n| ManuallyDrop::new(Netns::named(n)));
        let switch = ns.next().unwrap();
        let client = ns.next().unwrap();
        let lb = ns.next().unwrap();
        let backend_ns: Vec<_> = ns.collect();

        ip(&switch, "link set lo up");
        ip(&switch, "link add br0 type bridge mcast_snooping 0");
        ip(&switch, "link set br0 up");
        // The bridge stands in for a switch: no netfilter on bridged frames (with br_netfilter
        // loaded on the host, a new namespace starts with these at 1).
        if Path::new("/proc/sys/net/bridge/bridge-nf-call-iptables").exists() {
            for proto in ["iptables", "ip6tables", "arptables"] {
                switch.sysctl(&format!("net/bridge/bridge-nf-call-{proto}"), "0");
            }
        }
        let port = |node: &Netns, port: &str, mac: [u8; 6], v4: Ipv4Addr, v6: Ipv6Addr| {
            for key in ["all", "default"] {
                node.sysctl(&format!("net/ipv6/conf/{key}/accept_dad"), "0");
            }
            let peer = &node.name;
            ip(
                &switch,
                &format!("link add {port} type veth peer name eth0 netns {peer}"),
            );
            ip(&switch, &format!("link set {port} master br0 up"));
            ip(node, &format!("link set eth0 address {}", fmt_mac(&mac)));
            ip(node, &format!("addr add {v4}/24 dev eth0"));
            ip(node, &format!("addr add {v6}/64 dev eth0 nodad"));
            ip(node, "link set eth0 up");
            ip(node, "link set lo up");
        };
        port(&client, "client", CLIENT_MAC, CLIENT_V4, CLIENT_V6);
        // A veth hands its peer packets with the checksum left to "hardware" (CHECKSUM_PARTIAL)
        // and TCP segments up to 64 KiB. XDP sees neither flag: the LB would forward a bad
        // checksum, the backend drop it. So the client sends what a NIC would put on the
        // wire: complete checksums, MTU-sized frames.
        let out = client
            .command("ethtool")
            .args(["-K", "eth0", "tx", "off", "tso", "off", "gso", "off"])
            .output()
            .unwrap_or_else(|e| panic!("ethtool (cargo xtask setup installs it): {e}"));
        assert!(
            out.status.success(),
            "ethtool -K eth0 tx off tso off gso off: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        port(&lb, "lb", LB_MAC, LB_V4, LB_V6);
        ip(&client, &format!("route add 203.0.113.0/24 via {LB_V4}"));
        ip(
            &client,
            &format!("-6 route add 2001:db8:113::/64 via {LB_V6}"),
        );

        // XDP_TX on a veth reaches the peer only if the peer runs an XDP program.
        let pass_dir = pin_root.join("pass");
        switch.enter(move || {
            fs::create_dir_all(&pass_dir).unwrap();
            let mut ebpf = loader::load_aux(map_names::PROG_PASS)
                .unwrap_or_else(|e| panic!("loading xlb_pass: {e}"));
            pinning::attach_program(
                &mut ebpf,
                map_names::PROG_PASS,
                &pass_dir,
                "lb",
                XdpMode::Native,
            )
            .unwrap_or_else(|e| panic!("attaching xlb_pass to the LB's switch port: {e}"));
        });

        let mut backends = Vec::new();
        for (i, node) in backend_ns.into_iter().enumerate() {
            let (v4, v6) = backend_addrs(i);
            let mac = backend_mac(i);
            port(&node, &format!("b{}", i + 1), mac, v4, v6);
            for vip in all_vips() {
                let plen = if vip.is_ipv4() { 32 } else { 128 };
                ip(&node, &format!("addr add {vip}/{plen} dev lo"));
            }
            // dsr-l2: the VIPs on lo must not be announced or answered for on eth0. All modes:
            // the (decapsulated) packet arrives on eth0 for an address of lo.
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
            let decap_dir = pin_root.join(format!("decap-b{}", i + 1));
            node.enter(move || {
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
            backends.push(Backend {
                name: format!("backend-{}", i + 1),
                ns: node,
                v4,
                v6,
                mac,
                server: None,
            });
        }

        res.notes
            .insert("client".into(), format!("{CLIENT_V4} {CLIENT_V6}"));
        res.notes.insert("lb".into(), format!("{LB_V4} {LB_V6}"));
        for b in &backends {
            res.notes
                .insert(b.name.clone(), format!("{} {}", b.v4, b.v6));
        }
        res.notes.insert(
            "vips".into(),
            Mode::ALL
                .iter()
                .map(|m| format!("{} {} {}", m.name(), m.vip(false), m.vip(true)))
                .collect::<Vec<_>>()
                .join(", "),
        );
        let script = opts.work_dir.join("backend.py");
        fs::write(&script, BACKEND_PY).unwrap();
        let python = python();
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
            python,
            res,
            agent: None,
            agents_started: 0,
            persisted: false,
        };
        for i in 0..tb.backends.len() {
            tb.start_backend(i);
        }
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
        assert!(self.backends[i].server.is_none(), "already running");
        let child = start_server(
            &self.python,
            &self.work_dir,
            &self.backends[i],
            &mut self.res,
        );
        self.backends[i].server = Some(child);
    }

    /// Kills backend `i`'s servers (SIGKILL: the port closes at once, connections get RST).
    pub fn stop_backend(&mut self, i: usize) {
        let child = self.backends[i].server.take().expect("backend not running");
        self.res.kill(child);
    }
}

/// Starts backend `b`'s servers (recorded in `res` before anything can fail) and waits until
/// they listen; shared by [`Testbed`] and the multi-LB testbed.
pub(super) fn start_server(
    python: &Path,
    work_dir: &Path,
    b: &Backend,
    res: &mut Resources,
) -> Child {
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
            return child;
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
        let problems = self.res.teardown();
        for b in &mut self.backends {
            if let Some(mut c) = b.server.take() {
                let _ = c.wait();
            }
        }
        if let Some(mut c) = self.agent.take() {
            let _ = c.wait();
        }
        if !problems.is_empty() {
            eprintln!(
                "testbed {}: teardown left: {}",
                self.prefix,
                problems.join("; ")
            );
        }
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
