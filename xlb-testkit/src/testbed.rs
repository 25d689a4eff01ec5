//! The testbed: a client, an LB and N backends in network namespaces of their own, on one L2
//! segment (a bridge in a "switch" namespace), documentation-range addresses only. The single
//! source of the topology: the end-to-end tests build it in-process, `cargo xtask testbed` and
//! `cargo xtask demo` through `lb-userspace/examples/xlb-testbed.rs`.
//!
//! ```text
//!   client ns            switch ns (bridge br0)             LB ns
//!   eth0 .100 ---- client [            ] lb (xlb_pass) ---- eth0 .2   (xlb agent, XDP)
//!                         [            ] b1 ---- backend-1 ns eth0 .11  (decap XDP, VIPs on lo)
//!                         [            ] b2 ---- backend-2 ns eth0 .12
//! ```
//!
//! Segment 198.51.100.0/24 and 2001:db8:51::/64; the VIPs (203.0.113.10-12, 2001:db8:113::10-12,
//! one address per forwarding mode) are routed by the client via the LB, and owned by every
//! backend on `lo`. Each backend runs `backend.py`: HTTP on port 80 and a UDP responder on 9000,
//! both answering with the backend's name. Replies go from the backends straight to the client.
//!
//! Everything created is recorded in [`Resources`] *before* it is used, and removed by
//! [`Resources::teardown`]: on drop of the [`Testbed`] (also when a test panics), or later from
//! the state file when the testbed was [`Testbed::persist`]ed (`cargo xtask testbed down`).
//! Pins live under a bpffs directory of the testbed's own (`/sys/fs/bpf/<prefix>`), never the
//! default `/sys/fs/bpf/xlb`. Needs root; every failure panics with its reason.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::future::Future;
use std::io::{self, Read as _, Write as _};
use std::mem::ManuallyDrop;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use lb_common::map_names;
use serde::{Deserialize, Serialize};

use super::netns::{Netns, run_ip};
use lb_userspace::api::{self, Request, Response, StatusReport};
use lb_userspace::decap::{self, DecapOptions};
use lb_userspace::loader;
use lb_userspace::model::XdpMode;
use lb_userspace::pinning;

/// The LB's address on the segment (also the tunnels' outer source).
pub const LB_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
pub const LB_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x51, 0, 0, 0, 0, 2);
pub const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 100);
pub const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x51, 0, 0, 0, 0, 0x100);
pub const LB_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x64];
/// Port of the backends' HTTP servers (and of the TCP VIPs).
pub const HTTP_PORT: u16 = 80;
/// Port of the backends' UDP responders (and of the UDP VIPs).
pub const UDP_PORT: u16 = 9000;
/// Backends at most (addresses .11 up).
pub const MAX_BACKENDS: usize = 50;
/// The backend server, written next to the testbed's other files.
pub const BACKEND_PY: &str = include_str!("backend.py");

/// The forwarding modes, each with its own VIP address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mode {
    Ipip,
    Gue,
    DsrL2,
}

impl Mode {
    pub const ALL: [Mode; 3] = [Mode::Ipip, Mode::Gue, Mode::DsrL2];

    /// The config's name of the mode.
    pub const fn name(self) -> &'static str {
        match self {
            Mode::Ipip => "ipip",
            Mode::Gue => "gue",
            Mode::DsrL2 => "dsr-l2",
        }
    }

    const fn host(self) -> u8 {
        match self {
            Mode::Ipip => 10,
            Mode::Gue => 11,
            Mode::DsrL2 => 12,
        }
    }

    /// The mode's VIP address: 203.0.113.10-12 / 2001:db8:113::10-12.
    pub fn vip(self, v6: bool) -> IpAddr {
        if v6 {
            IpAddr::V6(Ipv6Addr::new(
                0x2001,
                0xdb8,
                0x113,
                0,
                0,
                0,
                0,
                u16::from_str_radix(&self.host().to_string(), 16).unwrap(),
            ))
        } else {
            IpAddr::V4(Ipv4Addr::new(203, 0, 113, self.host()))
        }
    }
}

/// Every VIP address of the testbed (the backends own them all on `lo`).
pub fn all_vips() -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = Mode::ALL.iter().map(|m| m.vip(false)).collect();
    v.extend(Mode::ALL.iter().map(|m| m.vip(true)));
    v
}

/// Addresses of backend `i` (0-based): 198.51.100.(11+i), 2001:db8:51::(11+i).
pub fn backend_addrs(i: usize) -> (Ipv4Addr, Ipv6Addr) {
    assert!(i < MAX_BACKENDS);
    let host = 11 + i as u16;
    (
        Ipv4Addr::new(198, 51, 100, host as u8),
        Ipv6Addr::new(
            0x2001,
            0xdb8,
            0x51,
            0,
            0,
            0,
            0,
            u16::from_str_radix(&host.to_string(), 16).unwrap(),
        ),
    )
}

pub fn backend_mac(i: usize) -> [u8; 6] {
    [0x02, 0, 0, 0, 0x01, (i + 1) as u8]
}

pub fn fmt_mac(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

// ---------------------------------------------------------------------------------------------
// What was created, and its removal

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
    fn of(child: &Child, what: &str) -> ProcRecord {
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

// ---------------------------------------------------------------------------------------------
// The testbed

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

pub struct Backend {
    /// `backend-1`, ...: what its servers answer.
    pub name: String,
    /// Removed by the testbed's teardown, not on drop.
    pub ns: ManuallyDrop<Netns>,
    pub v4: Ipv4Addr,
    pub v6: Ipv6Addr,
    pub mac: [u8; 6],
    /// Its server process, while it runs.
    server: Option<Child>,
}

impl Backend {
    pub fn addr(&self, v6: bool) -> IpAddr {
        if v6 { self.v6.into() } else { self.v4.into() }
    }
}

pub struct Testbed {
    pub prefix: String,
    /// The namespaces are removed by the teardown (or left by [`Testbed::persist`]), never by
    /// their own drop.
    pub switch: ManuallyDrop<Netns>,
    pub client: ManuallyDrop<Netns>,
    pub lb: ManuallyDrop<Netns>,
    pub backends: Vec<Backend>,
    pub work_dir: PathBuf,
    pub pin_root: PathBuf,
    python: PathBuf,
    res: Resources,
    /// The running agent, if any.
    agent: Option<Child>,
    /// Agents started so far (names their logs).
    agents_started: u32,
    /// Set by [`Testbed::persist`]: drop leaves everything in place.
    persisted: bool,
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
fn ip(ns: &Netns, words: &str) {
    ns.ip(&words.split_whitespace().collect::<Vec<_>>());
}

/// Tears down a [`Resources`] on drop unless disarmed (a panic while building).
struct TeardownGuard(Option<Resources>);

impl Drop for TeardownGuard {
    fn drop(&mut self) {
        if let Some(r) = self.0.take() {
            r.teardown();
        }
    }
}

/// Runs a future on a current-thread runtime (API calls from plain test code).
fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(f)
}

/// The last `n` lines of a file (for panic messages).
pub fn tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
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
        let python = ["/usr/bin/python3", "/usr/local/bin/python3"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .unwrap_or_else(|| PathBuf::from("python3"));
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

    /// The agent's API socket (its config's `api-socket`).
    pub fn api_socket(&self) -> PathBuf {
        self.work_dir.join("xlb.sock")
    }

    pub fn decap_pin_dir(&self, i: usize) -> PathBuf {
        self.pin_root.join(format!("decap-b{}", i + 1))
    }

    /// Starts backend `i`'s servers (again) and waits until they listen.
    pub fn start_backend(&mut self, i: usize) {
        assert!(self.backends[i].server.is_none(), "already running");
        let b = &self.backends[i];
        let log_path = self.work_dir.join(format!("{}.log", b.name));
        let log = fs::File::create(&log_path).unwrap();
        let mut cmd = b.ns.command(&self.python);
        cmd.arg(self.work_dir.join("backend.py"))
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
            .unwrap_or_else(|e| panic!("starting {} ({}): {e}", b.name, self.python.display()));
        let what = format!("{} server", b.name);
        self.res.processes.push(ProcRecord::of(&child, &what));
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if fs::read_to_string(&log_path)
                .unwrap_or_default()
                .contains("ready")
            {
                break;
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
        self.backends[i].server = Some(child);
    }

    /// Kills backend `i`'s servers (SIGKILL: the port closes at once, connections get RST).
    pub fn stop_backend(&mut self, i: usize) {
        let mut child = self.backends[i].server.take().expect("backend not running");
        let pid = child.id();
        let _ = child.kill();
        let _ = child.wait();
        self.res.processes.retain(|p| p.pid != pid);
    }

    /// Writes a file into the work directory.
    pub fn write_file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.work_dir.join(name);
        fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        path
    }

    /// An agent config for this testbed ([`agent_config`] with its paths and backends).
    pub fn config(&self, agent_extra: &str, vips: &[VipSpec]) -> String {
        agent_config(
            &self.pin_dir(),
            &self.api_socket(),
            self.backends.len(),
            agent_extra,
            vips,
        )
    }

    /// `template` (a config such as examples/demo.toml) with this testbed's pin dir and API
    /// socket ([`adapt_config`]).
    pub fn adapt_config(&self, template: &str) -> String {
        adapt_config(template, &self.pin_dir(), &self.api_socket())
    }

    /// Starts `xlb run --config CONFIG` in the LB namespace and waits until its API answers
    /// (at most 30 s). Its log goes to `agent-N.log` in the work directory.
    pub fn start_agent(&mut self, xlb: &Path, config: &Path) {
        assert!(self.agent.is_none(), "an agent is already running");
        self.agents_started += 1;
        let log_path = self.agent_log_path();
        let log = fs::File::create(&log_path).unwrap();
        let mut cmd = self.lb.command(xlb);
        cmd.arg("run")
            .arg("--config")
            .arg(config)
            .env("XLB_LOG", std::env::var("XLB_LOG").unwrap_or("info".into()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", xlb.display()));
        self.res.processes.push(ProcRecord::of(&child, "xlb agent"));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("the agent exited ({status}): {}", tail(&log_path, 30));
            }
            if matches!(
                block_on(api::call(&self.api_socket(), &Request::Status)),
                Ok(Response::Status(_))
            ) {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "the agent's API did not answer within 30 s: {}",
                    tail(&log_path, 30)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.agent = Some(child);
    }

    pub fn agent_log_path(&self) -> PathBuf {
        self.work_dir
            .join(format!("agent-{}.log", self.agents_started))
    }

    pub fn agent_pid(&self) -> Option<u32> {
        self.agent.as_ref().map(Child::id)
    }

    /// Sends `signal` to the agent without waiting.
    pub fn signal_agent(&self, signal: i32) {
        let pid = self.agent_pid().expect("no agent running");
        // SAFETY: plain syscall on our child.
        unsafe { libc::kill(pid as i32, signal) };
    }

    /// Waits (at most `timeout`) for the agent to exit; `None` if it still runs.
    pub fn wait_agent_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let child = self.agent.as_mut().expect("no agent running");
            if let Ok(Some(status)) = child.try_wait() {
                let pid = child.id();
                self.agent = None;
                self.res.processes.retain(|p| p.pid != pid);
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `kill -9` on the agent, and reaps it.
    pub fn kill_agent(&mut self) {
        self.signal_agent(libc::SIGKILL);
        self.wait_agent_exit(Duration::from_secs(10))
            .expect("the agent survived SIGKILL");
    }

    /// One API request to the running agent.
    pub fn api(&self, req: &Request) -> Response {
        block_on(api::call(&self.api_socket(), req))
            .unwrap_or_else(|e| panic!("API call {req:?}: {e}"))
    }

    /// `xlb status` as data.
    pub fn status(&self) -> StatusReport {
        match self.api(&Request::Status) {
            Response::Status(r) => r,
            other => panic!("status: {other:?}"),
        }
    }

    /// Polls the status (every 50 ms) until `done` holds; panics after `timeout` with the last
    /// report and the agent's log. Returns the report and when it first held.
    pub fn wait_status(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&StatusReport) -> bool,
    ) -> (StatusReport, Instant) {
        let deadline = Instant::now() + timeout;
        loop {
            let r = self.status();
            if done(&r) {
                return (r, Instant::now());
            }
            if Instant::now() > deadline {
                panic!(
                    "{what}: not reached within {timeout:?}\nstatus:\n{}\nagent log:\n{}",
                    r.render_table(),
                    tail(&self.agent_log_path(), 30)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until every backend of every VIP is active in the maps with ring slots.
    pub fn wait_all_active(&self, timeout: Duration) -> StatusReport {
        self.wait_status("every backend active", timeout, |r| {
            r.vips.iter().all(|v| {
                !v.backends.is_empty()
                    && v.backends
                        .iter()
                        .all(|b| b.state == api::MapState::Active && b.ring_slots > 0)
            })
        })
        .0
    }

    /// The backend whose name is `name`.
    pub fn backend_index(&self, name: &str) -> usize {
        self.backends
            .iter()
            .position(|b| b.name == name)
            .unwrap_or_else(|| panic!("no backend {name:?}"))
    }
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

/// An agent config for a testbed of `backends` backends: the LB's `eth0` in native mode, the
/// tunnel sources, `pin_dir` and `socket`, no metrics endpoint; then `agent_extra` (more
/// `[agent]` keys, not those) and the VIPs.
pub fn agent_config(
    pin_dir: &Path,
    socket: &Path,
    backends: usize,
    agent_extra: &str,
    vips: &[VipSpec],
) -> String {
    let mut s = format!(
        r#"[agent]
interfaces = [{{ name = "eth0", xdp-mode = "native" }}]
lb-src-v4 = "{LB_V4}"
lb-src-v6 = "{LB_V6}"
flow-table-size = 65536
max-vips = 16
max-backends = 256
pin-dir = "{}"
api-socket = "{}"
metrics-listen = "off"
{agent_extra}
"#,
        pin_dir.display(),
        socket.display()
    );
    for v in vips {
        let _ = write!(
            s,
            "\n[[vip]]\naddress = \"{}\"\nport = {}\nprotocol = \"{}\"\nmode = \"{}\"\n",
            v.mode.vip(v.v6),
            if v.udp { UDP_PORT } else { HTTP_PORT },
            if v.udp { "udp" } else { "tcp" },
            v.mode.name()
        );
        if !v.health.is_empty() {
            let _ = write!(s, "  [vip.health]\n{}", v.health);
        }
        for i in 0..backends {
            if v.backends.as_ref().is_none_or(|l| l.contains(&i)) {
                let (v4, v6) = backend_addrs(i);
                let addr: IpAddr = if v.v6 { v6.into() } else { v4.into() };
                let _ = write!(s, "  [[vip.backend]]\n  address = \"{addr}\"\n");
                if let Some(w) = v.weights.get(&i) {
                    let _ = writeln!(s, "  weight = {w}");
                }
            }
        }
    }
    s
}

/// `template` (a config such as examples/demo.toml) with `pin-dir` and `api-socket` replaced;
/// everything else as written.
pub fn adapt_config(template: &str, pin_dir: &Path, socket: &Path) -> String {
    let mut t: toml::Table = toml::from_str(template).expect("config template is TOML");
    let agent = t
        .entry("agent")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .expect("[agent] is a table");
    agent.insert("pin-dir".into(), pin_dir.display().to_string().into());
    agent.insert("api-socket".into(), socket.display().to_string().into());
    toml::to_string(&t).expect("serialize config")
}

/// One `[[vip]]` of [`Testbed::config`].
#[derive(Clone, Debug)]
pub struct VipSpec {
    pub mode: Mode,
    pub v6: bool,
    /// UDP to [`UDP_PORT`] instead of TCP to [`HTTP_PORT`].
    pub udp: bool,
    /// The `[vip.health]` table's lines; empty: no health check.
    pub health: String,
    /// Indices of the backends (of the VIP's family); `None`: all.
    pub backends: Option<Vec<usize>>,
    /// Weights by backend index (default 100).
    pub weights: BTreeMap<usize, u32>,
}

/// HTTP check of `/healthz`: 500 ms interval, down after 2 failures, up after 1 success.
pub const FAST_HTTP_CHECK: &str = "  kind = \"http\"\n  path = \"/healthz\"\n  interval = \"500ms\"\n  timeout = \"300ms\"\n  rise = 1\n  fall = 2\n";
/// UDP check of the responder, same pace.
pub const FAST_UDP_CHECK: &str = "  kind = \"udp\"\n  send = \"ping\"\n  expect = \"backend-\"\n  interval = \"500ms\"\n  timeout = \"300ms\"\n  rise = 1\n  fall = 2\n";

impl VipSpec {
    pub fn tcp(mode: Mode, v6: bool) -> VipSpec {
        VipSpec {
            mode,
            v6,
            udp: false,
            health: FAST_HTTP_CHECK.into(),
            backends: None,
            weights: BTreeMap::new(),
        }
    }

    pub fn udp(mode: Mode, v6: bool) -> VipSpec {
        VipSpec {
            mode,
            v6,
            udp: true,
            health: FAST_UDP_CHECK.into(),
            backends: None,
            weights: BTreeMap::new(),
        }
    }

    pub fn health(mut self, lines: &str) -> VipSpec {
        self.health = lines.into();
        self
    }

    /// Only these backends (indices).
    pub fn only(mut self, backends: &[usize]) -> VipSpec {
        self.backends = Some(backends.to_vec());
        self
    }

    pub fn weight(mut self, backend: usize, weight: u32) -> VipSpec {
        self.weights.insert(backend, weight);
        self
    }

    /// The VIP as `xlb` writes it (`tcp/203.0.113.10:80`).
    pub fn id(&self) -> lb_userspace::model::VipId {
        lb_userspace::model::VipId {
            addr: self.mode.vip(self.v6),
            port: if self.udp { UDP_PORT } else { HTTP_PORT },
            proto: if self.udp {
                lb_userspace::model::Proto::Udp
            } else {
                lb_userspace::model::Proto::Tcp
            },
        }
    }

    pub fn socket_addr(&self) -> SocketAddr {
        let id = self.id();
        SocketAddr::new(id.addr, id.port)
    }
}

// ---------------------------------------------------------------------------------------------
// Client side (call from a thread inside the client namespace)

/// What a backend answered, and from which local endpoint the client asked.
#[derive(Clone, Debug)]
pub struct Reply {
    /// The backend's name (first word of the answer).
    pub backend: String,
    pub body: String,
    pub local: SocketAddr,
}

fn sockaddr(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: zeroed sockaddr_storage is valid; we fill the family-specific prefix.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage.
            unsafe { std::ptr::write(&mut ss as *mut _ as *mut libc::sockaddr_in, sin) };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: sockaddr_in6 fits in sockaddr_storage.
            unsafe { std::ptr::write(&mut ss as *mut _ as *mut libc::sockaddr_in6, sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// A TCP connection whose local port is known even when connecting fails: binds port 0 first,
/// then connects within `timeout`.
pub fn tcp_connect(dst: SocketAddr, timeout: Duration) -> (u16, io::Result<TcpStream>) {
    let family = if dst.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket calls on a descriptor we own (OwnedFd closes it on every path).
    unsafe {
        let fd = match cvt(libc::socket(
            family,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )) {
            Ok(fd) => OwnedFd::from_raw_fd(fd),
            Err(e) => return (0, Err(e)),
        };
        let any = if dst.is_ipv4() {
            SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))
        } else {
            SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0))
        };
        let (ss, len) = sockaddr(&any);
        if let Err(e) = cvt(libc::bind(fd.as_raw_fd(), &ss as *const _ as *const _, len)) {
            return (0, Err(e));
        }
        let mut local: libc::sockaddr_storage = std::mem::zeroed();
        let mut llen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        let _ = libc::getsockname(fd.as_raw_fd(), &mut local as *mut _ as *mut _, &mut llen);
        let port = if dst.is_ipv4() {
            u16::from_be((*(&local as *const _ as *const libc::sockaddr_in)).sin_port)
        } else {
            u16::from_be((*(&local as *const _ as *const libc::sockaddr_in6)).sin6_port)
        };
        let (ss, len) = sockaddr(&dst);
        let rc = libc::connect(fd.as_raw_fd(), &ss as *const _ as *const _, len);
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINPROGRESS) {
                return (port, Err(e));
            }
            let mut pfd = libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLOUT,
                revents: 0,
            };
            let n = libc::poll(&mut pfd, 1, timeout.as_millis() as libc::c_int);
            if n == 0 {
                return (
                    port,
                    Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
                );
            }
            let mut err: libc::c_int = 0;
            let mut elen = size_of::<libc::c_int>() as libc::socklen_t;
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                &mut err as *mut _ as *mut _,
                &mut elen,
            );
            if err != 0 {
                return (port, Err(io::Error::from_raw_os_error(err)));
            }
        }
        let stream = TcpStream::from(fd);
        if let Err(e) = stream.set_nonblocking(false) {
            return (port, Err(e));
        }
        (port, Ok(stream))
    }
}

/// `GET path` over HTTP/1.0; the reply must be 200.
pub fn http_get(dst: SocketAddr, path: &str, timeout: Duration) -> Result<Reply, (u16, io::Error)> {
    let (port, stream) = tcp_connect(dst, timeout);
    let fail = |e: io::Error| (port, e);
    let mut s = stream.map_err(fail)?;
    let local = s.local_addr().map_err(fail)?;
    s.set_read_timeout(Some(timeout)).map_err(fail)?;
    s.set_write_timeout(Some(timeout)).map_err(fail)?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: xlb-testbed\r\n\r\n").map_err(fail)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(fail)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| fail(io::Error::other(format!("no HTTP header end in {text:?}"))))?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        return Err(fail(io::Error::other(format!("not 200: {head:?}"))));
    }
    Ok(Reply {
        backend: body.split_whitespace().next().unwrap_or("").to_owned(),
        body: body.to_owned(),
        local,
    })
}

/// One datagram to `dst` from a connected socket (so only a reply from `dst` itself counts).
pub fn udp_ask(dst: SocketAddr, timeout: Duration) -> io::Result<Reply> {
    let any: SocketAddr = if dst.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let s = UdpSocket::bind(any)?;
    s.connect(dst)?;
    s.set_read_timeout(Some(timeout))?;
    s.send(b"hello")?;
    let mut buf = [0u8; 1500];
    let n = s.recv(&mut buf)?;
    let body = String::from_utf8_lossy(&buf[..n]).into_owned();
    Ok(Reply {
        backend: body.split_whitespace().next().unwrap_or("").to_owned(),
        body,
        local: s.local_addr()?,
    })
}

/// Outcome of a bounded run of requests.
#[derive(Debug, Default)]
pub struct Tally {
    /// Answers per backend name.
    pub by_backend: BTreeMap<String, usize>,
    /// Failed requests: local port, error, when (since the start).
    pub failures: Vec<(u16, io::Error, Duration)>,
    /// Requests sent (stops early at the time limit).
    pub sent: usize,
    pub elapsed: Duration,
}

impl Tally {
    pub fn ok(&self) -> usize {
        self.by_backend.values().sum()
    }
}

/// One request's outcome, as [`http_load`] reports it to its observer.
pub enum Outcome<'a> {
    Ok(&'a Reply),
    /// The client's local port, and why.
    Failed(u16, &'a io::Error),
}

/// `n` HTTP GETs of `/` (at most `time_limit` in all), spread over `workers` threads. Call
/// inside the client namespace. `observe` sees each outcome with its time since the start,
/// from the worker thread, right away (e.g. to look up a failed flow's backend before its port
/// is reused).
pub fn http_load(
    dst: SocketAddr,
    n: usize,
    workers: usize,
    time_limit: Duration,
    observe: &(dyn Fn(Outcome<'_>, Duration) + Sync),
) -> Tally {
    let start = Instant::now();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let tally = std::sync::Mutex::new(Tally::default());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                while next.fetch_add(1, Ordering::Relaxed) < n && start.elapsed() < time_limit {
                    // Patient: a loaded CI machine can stall a backend's server for a while.
                    let r = http_get(dst, "/", Duration::from_secs(5));
                    let at = start.elapsed();
                    match &r {
                        Ok(reply) => observe(Outcome::Ok(reply), at),
                        Err((port, e)) => observe(Outcome::Failed(*port, e), at),
                    }
                    let mut t = tally.lock().unwrap();
                    t.sent += 1;
                    match r {
                        Ok(reply) => *t.by_backend.entry(reply.backend).or_default() += 1,
                        Err((port, e)) => t.failures.push((port, e, at)),
                    }
                }
            });
        }
    });
    let mut t = tally.into_inner().unwrap();
    t.elapsed = start.elapsed();
    t
}

// ---------------------------------------------------------------------------------------------
// Packet capture (AF_PACKET) on an interface of a namespace

/// An IP frame seen on the wire.
#[derive(Clone, Debug)]
pub struct Frame {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    /// Sent by this host (else received).
    pub outgoing: bool,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IP protocol / next header (no extension headers walked).
    pub proto: u8,
    /// TCP/UDP ports (0 otherwise).
    pub sport: u16,
    pub dport: u16,
    /// ICMP/ICMPv6 type.
    pub icmp_type: Option<u8>,
    pub len: usize,
}

fn parse_frame(buf: &[u8], outgoing: bool) -> Option<Frame> {
    let mac = |o: usize| -> [u8; 6] { buf[o..o + 6].try_into().unwrap() };
    if buf.len() < 14 {
        return None;
    }
    let ethertype = u16::from_be_bytes([buf[12], buf[13]]);
    let ip = &buf[14..];
    let (src, dst, proto, l4): (IpAddr, IpAddr, u8, &[u8]) = match ethertype {
        0x0800 if ip.len() >= 20 => {
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            let s: [u8; 4] = ip[12..16].try_into().ok()?;
            let d: [u8; 4] = ip[16..20].try_into().ok()?;
            (s.into(), d.into(), ip[9], ip.get(ihl..)?)
        }
        0x86dd if ip.len() >= 40 => {
            let s: [u8; 16] = ip[8..24].try_into().ok()?;
            let d: [u8; 16] = ip[24..40].try_into().ok()?;
            (s.into(), d.into(), ip[6], &ip[40..])
        }
        _ => return None,
    };
    let (sport, dport, icmp_type) = match proto {
        6 | 17 if l4.len() >= 4 => (
            u16::from_be_bytes([l4[0], l4[1]]),
            u16::from_be_bytes([l4[2], l4[3]]),
            None,
        ),
        1 | 58 if !l4.is_empty() => (0, 0, Some(l4[0])),
        _ => (0, 0, None),
    };
    Some(Frame {
        src_mac: mac(6),
        dst_mac: mac(0),
        outgoing,
        src,
        dst,
        proto,
        sport,
        dport,
        icmp_type,
        len: buf.len(),
    })
}

/// Records the IP frames of one interface until [`Capture::finish`].
pub struct Capture {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<Frame>>>,
}

impl Capture {
    /// Starts capturing on `iface` of `ns`; returns once the socket is bound.
    pub fn start(ns: &Netns, iface: &str) -> Capture {
        let path = format!("/var/run/netns/{}", ns.name);
        let nsfile = fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        let iface = std::ffi::CString::new(iface).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut frames = Vec::new();
            // SAFETY: setns changes only this thread's namespace; the socket calls use a
            // descriptor owned by `sock` and buffers of the sizes passed.
            unsafe {
                if libc::setns(nsfile.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    let _ = ready_tx.send(Err(format!("setns: {}", io::Error::last_os_error())));
                    return frames;
                }
                let proto = (libc::ETH_P_ALL as u16).to_be();
                let fd = libc::socket(
                    libc::AF_PACKET,
                    libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                    i32::from(proto),
                );
                if fd < 0 {
                    let _ = ready_tx.send(Err(format!("socket: {}", io::Error::last_os_error())));
                    return frames;
                }
                let sock = OwnedFd::from_raw_fd(fd);
                let ifindex = libc::if_nametoindex(iface.as_ptr());
                let mut sll: libc::sockaddr_ll = std::mem::zeroed();
                sll.sll_family = libc::AF_PACKET as u16;
                sll.sll_protocol = proto;
                sll.sll_ifindex = ifindex as i32;
                if ifindex == 0
                    || libc::bind(
                        sock.as_raw_fd(),
                        &sll as *const _ as *const _,
                        size_of::<libc::sockaddr_ll>() as u32,
                    ) != 0
                {
                    let _ = ready_tx.send(Err(format!(
                        "bind to {iface:?}: {}",
                        io::Error::last_os_error()
                    )));
                    return frames;
                }
                let tv = libc::timeval {
                    tv_sec: 0,
                    tv_usec: 50_000,
                };
                libc::setsockopt(
                    sock.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    &tv as *const _ as *const _,
                    size_of::<libc::timeval>() as u32,
                );
                // Room for bursts: a dropped frame would make the test's count wrong.
                let rcvbuf: libc::c_int = 8 << 20;
                libc::setsockopt(
                    sock.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVBUFFORCE,
                    &rcvbuf as *const _ as *const _,
                    size_of::<libc::c_int>() as u32,
                );
                let _ = ready_tx.send(Ok(()));
                let mut buf = vec![0u8; 65536];
                loop {
                    let mut from: libc::sockaddr_ll = std::mem::zeroed();
                    let mut flen = size_of::<libc::sockaddr_ll>() as u32;
                    let n = libc::recvfrom(
                        sock.as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        0,
                        &mut from as *mut _ as *mut _,
                        &mut flen,
                    );
                    if n > 0 {
                        let outgoing = from.sll_pkttype == libc::PACKET_OUTGOING;
                        if let Some(f) = parse_frame(&buf[..n as usize], outgoing) {
                            frames.push(f);
                        }
                    } else if stop2.load(Ordering::Relaxed) {
                        // Drained: a receive timed out after the stop request.
                        return frames;
                    }
                }
            }
        });
        ready_rx
            .recv()
            .expect("capture thread ended")
            .unwrap_or_else(|e| panic!("packet capture: {e}"));
        Capture {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops (after the socket has been drained) and returns the frames.
    pub fn finish(mut self) -> Vec<Frame> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().expect("capture thread")
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
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
    use lb_userspace::config;

    fn documentation_range(a: IpAddr) -> bool {
        match a {
            IpAddr::V4(a) => {
                let o = a.octets();
                matches!(
                    (o[0], o[1], o[2]),
                    (192, 0, 2) | (198, 51, 100) | (203, 0, 113)
                )
            }
            IpAddr::V6(a) => a.segments()[..2] == [0x2001, 0xdb8],
        }
    }

    #[test]
    fn every_address_is_from_the_documentation_ranges() {
        let mut all: Vec<IpAddr> = vec![
            LB_V4.into(),
            LB_V6.into(),
            CLIENT_V4.into(),
            CLIENT_V6.into(),
        ];
        all.extend(all_vips());
        for i in 0..MAX_BACKENDS {
            let (v4, v6) = backend_addrs(i);
            all.extend([IpAddr::from(v4), v6.into()]);
        }
        for a in &all {
            assert!(documentation_range(*a), "{a}");
        }
        let unique: std::collections::BTreeSet<_> = all.iter().collect();
        assert_eq!(unique.len(), all.len(), "addresses collide");
        assert_eq!(Mode::Gue.vip(true).to_string(), "2001:db8:113::11");
        assert_eq!(backend_addrs(2).1.to_string(), "2001:db8:51::13");
    }

    #[test]
    fn generated_configs_validate() {
        let mut vips = Vec::new();
        for mode in Mode::ALL {
            for v6 in [false, true] {
                vips.push(VipSpec::tcp(mode, v6).weight(1, 200));
                vips.push(VipSpec::udp(mode, v6).only(&[0, 2]));
            }
        }
        let text = agent_config(
            Path::new("/sys/fs/bpf/xlbt-x/lb"),
            Path::new("/tmp/xlbt-x/xlb.sock"),
            3,
            "mtu = 1400",
            &vips,
        );
        let v = config::load_str(&text, &|_: &str| true).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(v.config.vips.len(), 12);
        assert_eq!(v.config.mtu, Some(1400));
    }

    #[test]
    fn the_demo_config_validates_as_written_and_adapted() {
        let template = include_str!("../../examples/demo.toml");
        config::load_str(template, &|_: &str| true).unwrap_or_else(|e| panic!("{e}"));
        let text = adapt_config(
            template,
            Path::new("/sys/fs/bpf/xlbdemo-1/lb"),
            Path::new("/tmp/xlbdemo-1/xlb.sock"),
        );
        let v = config::load_str(&text, &|_: &str| true).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v.config.pin_dir, Path::new("/sys/fs/bpf/xlbdemo-1/lb"));
        // The demo's VIPs are the testbed's.
        for vip in &v.config.vips {
            assert!(all_vips().contains(&vip.id.addr), "{}", vip.id);
            for b in &vip.backends {
                assert!(
                    (0..3).any(|i| {
                        let (v4, v6) = backend_addrs(i);
                        b.addr == IpAddr::from(v4) || b.addr == IpAddr::from(v6)
                    }),
                    "{}",
                    b.addr
                );
            }
        }
    }

    #[test]
    fn frames_parse() {
        let mut f = vec![0u8; 14 + 20 + 8];
        f[..6].copy_from_slice(&CLIENT_MAC);
        f[6..12].copy_from_slice(&backend_mac(0));
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[14 + 9] = 17;
        f[14 + 12..14 + 16].copy_from_slice(&[203, 0, 113, 10]);
        f[14 + 16..14 + 20].copy_from_slice(&CLIENT_V4.octets());
        f[34..36].copy_from_slice(&9000u16.to_be_bytes());
        f[36..38].copy_from_slice(&40000u16.to_be_bytes());
        let p = parse_frame(&f, false).unwrap();
        assert_eq!(p.src_mac, backend_mac(0));
        assert_eq!(p.src, Mode::Ipip.vip(false));
        assert_eq!((p.proto, p.sport, p.dport), (17, 9000, 40000));
        assert!(parse_frame(&f[..20], false).is_none());
    }

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
