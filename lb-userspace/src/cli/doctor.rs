//! `xlb doctor`: preflight of a load-balancer host. Every check ends OK, WARN, FAIL or SKIP
//! (could not be judged: nothing to judge, or a fact could not be read), and anything not OK
//! comes with the concrete fix.
//!
//! Two halves, so that the judging is testable without root:
//! - [`gather`] reads the host into a [`HostFacts`]: `/proc`, `/sys`, rtnetlink, the pin
//!   directory, the API socket. As root, on an interface without an XDP program, it also
//!   *probes* native XDP: it attaches the `xlb_pass` program (passes everything) in driver mode
//!   and detaches it at once. That is the truest answer, but on some physical NICs (mlx5, i40e,
//!   ixgbe...) attaching and detaching XDP reconfigures the queues and drops traffic for a
//!   moment: `--no-probe` skips it. An interface that already has an XDP program is never
//!   touched.
//! - [`judge`] is a pure function of the facts: one `judge_*` per check, then
//!   [`backend_setup`], the settings to check on each backend.
//!
//! # JSON (`--json`)
//!
//! Stable field names; fields may be added, never renamed or removed:
//!
//! ```text
//! {"version": 1,
//!  "checks": [{"check": "kernel", "subject": null, "status": "ok", "message": "...", "fix": []}, ...],
//!  "backend_setup": [{"mode": "ipip", "steps": ["..."]}, ...],
//!  "summary": {"ok": 8, "warn": 1, "fail": 0, "skip": 1}}
//! ```
//!
//! `check` is one of `kernel`, `bpffs`, `capabilities`, `memlock`, `config`, `link`, `xdp`,
//! `mtu`, `rp_filter`, `pin_dir`, `agent`; `subject` is the interface for `link`, `xdp`, `mtu`
//! and `rp_filter`, else null; `status` is `ok` | `warn` | `fail` | `skip`. The exit code is
//! non-zero when any check is `fail`.

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::TryStreamExt as _;
use lb_common::{limits::MAP_LAYOUT_VERSION, map_names};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkXdp, XdpAttached};
use serde::Serialize;

use crate::api::{self, ApiError, Request, Response};
use crate::config::{self, BPFFS_ROOT, DEFAULT_API_SOCKET, DEFAULT_PIN_DIR, HostEnvironment};
use crate::loader;
use crate::model::{Config, ForwardMode, NoBackend, XdpMode};

/// The oldest kernel this build runs on, and why.
pub const MIN_KERNEL: (u32, u32) = (5, 9);
pub const MIN_KERNEL_WHY: &str = "XDP through bpf_link (5.9: pinnable attachments, hence \
     hitless restarts), the mmapable ring map (5.5), CAP_BPF (5.8)";
/// From this kernel on, BPF memory is charged to the memory cgroup, not RLIMIT_MEMLOCK.
pub const MEMCG_KERNEL: (u32, u32) = (5, 11);
/// The largest packet a client is assumed to send: the Internet's and Ethernet's 1500, or the
/// interface's MTU when that is smaller.
pub const CLIENT_MTU: u32 = 1500;
/// Config file read when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG: &str = "/etc/xlb/xlb.toml";
/// How long the agent gets to answer a status request.
pub const AGENT_TIMEOUT: Duration = Duration::from_secs(10);
/// Format version of the JSON report.
pub const REPORT_VERSION: u32 = 1;

/// Drivers with native (driver-mode) XDP in mainline Linux, as `ethtool -i` names them. Not
/// exhaustive: an unknown driver is a warning, and as root the probe gives the real answer.
pub const NATIVE_XDP_DRIVERS: &[&str] = &[
    "atlantic",
    "bnxt_en",
    "bond",
    "cpsw",
    "dpaa2-eth",
    "ena",
    "enetc",
    "fec",
    "gve",
    "hv_netvsc",
    "i40e",
    "ice",
    "idpf",
    "igb",
    "igc",
    "ixgbe",
    "ixgbevf",
    "mlx4_core",
    "mlx4_en",
    "mlx5_core",
    "mvneta",
    "mvpp2",
    "netsec",
    "nfp",
    "qede",
    "sfc",
    "stmmac",
    "thunder-nicvf",
    "tun",
    "veth",
    "virtio_net",
    "xen-netfront",
];

// Capability bits (linux/capability.h).
pub const CAP_NET_ADMIN: u32 = 12;
pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

// ---------------------------------------------------------------------------------------------
// Facts
// ---------------------------------------------------------------------------------------------

/// What [`gather`] read from the host; everything [`judge`] looks at.
#[derive(Clone, Debug)]
pub struct HostFacts {
    /// `/proc/sys/kernel/osrelease`.
    pub kernel_release: Option<String>,
    /// File-system type mounted at `/sys/fs/bpf` (topmost mount), `None` if nothing is.
    pub bpffs_fstype: Option<String>,
    pub caps: Option<Caps>,
    /// `RLIMIT_MEMLOCK` soft limit in bytes; `Some(None)` = unlimited, `None` = unread.
    pub memlock: Option<Option<u64>>,
    /// `net.ipv4.conf.all.rp_filter`.
    pub rp_filter_all: Option<u8>,
    pub config: ConfigFacts,
    /// Encapsulations in use: from `--mode`, else from the config's VIPs and backends.
    pub encaps: Vec<Encap>,
    /// Where `encaps` came from.
    pub encaps_from_mode: bool,
    pub ifaces: Vec<IfaceFacts>,
    pub pin: PinFacts,
    pub agent: AgentFacts,
}

/// The process's credentials (`/proc/self/status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caps {
    pub euid: u32,
    /// `CapEff` bits.
    pub effective: u64,
}

impl Caps {
    pub fn has(&self, cap: u32) -> bool {
        self.effective & (1u64 << cap) != 0
    }
}

#[derive(Clone, Debug)]
pub enum ConfigFacts {
    /// No `--config`, and no file at [`DEFAULT_CONFIG`].
    NotGiven,
    Invalid {
        path: PathBuf,
        error: String,
    },
    Valid {
        path: PathBuf,
        validated: config::Validated,
    },
}

impl ConfigFacts {
    /// The file, given or found.
    pub fn path(&self) -> Option<&Path> {
        match self {
            ConfigFacts::NotGiven => None,
            ConfigFacts::Invalid { path, .. } | ConfigFacts::Valid { path, .. } => Some(path),
        }
    }

    pub fn config(&self) -> Option<&Config> {
        match self {
            ConfigFacts::Valid { validated, .. } => Some(&validated.config),
            _ => None,
        }
    }
}

/// One way packets leave the LB: the mode and the address families of the inner packet (the
/// VIP's) and of the outer header (the backend's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Encap {
    pub mode: ForwardMode,
    pub inner_v6: bool,
    pub outer_v6: bool,
}

impl Encap {
    /// Bytes the LB adds: the outer IP header (20 or 40), plus 8 of UDP for GUE; 0 for dsr-l2.
    pub fn overhead(&self) -> u32 {
        match self.mode {
            ForwardMode::DsrL2 => 0,
            ForwardMode::Ipip => ip_header(self.outer_v6),
            ForwardMode::Gue => ip_header(self.outer_v6) + 8,
        }
    }

    fn describe(&self) -> String {
        let fam = |v6| if v6 { "IPv6" } else { "IPv4" };
        match self.mode {
            ForwardMode::DsrL2 => format!("dsr-l2 ({})", fam(self.inner_v6)),
            m => format!(
                "{} {} in {}: +{} bytes",
                m.name(),
                fam(self.inner_v6),
                fam(self.outer_v6),
                self.overhead()
            ),
        }
    }
}

fn ip_header(v6: bool) -> u32 {
    if v6 { 40 } else { 20 }
}

#[derive(Clone, Debug)]
pub struct IfaceFacts {
    pub name: String,
    /// `Err` = not found (or unreadable), with why.
    pub link: Result<LinkFacts, String>,
    /// `ethtool -i` driver (`ETHTOOL_GDRVINFO`), else the `device/driver` link in sysfs.
    pub driver: Option<String>,
    /// The XDP program attached now (before any probe).
    pub xdp: Option<AttachedXdp>,
    pub probe: Probe,
    /// The config's `xdp-mode` for this interface, if the config lists it.
    pub configured_mode: Option<XdpMode>,
    /// `net.ipv4.conf.<if>.rp_filter`.
    pub rp_filter: Option<u8>,
    /// The pin directory holds `link-<if>`.
    pub pinned_link: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkFacts {
    pub mtu: u32,
    pub up: bool,
    pub carrier: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttachedXdp {
    pub mode: AttachMode,
    pub prog_id: u32,
    /// The program's name, when it could be read (needs CAP_SYS_ADMIN).
    pub prog_name: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    Native,
    Generic,
    Offload,
    Multiple,
}

impl AttachMode {
    fn name(self) -> &'static str {
        match self {
            AttachMode::Native => "native (driver)",
            AttachMode::Generic => "generic (skb)",
            AttachMode::Offload => "offloaded",
            AttachMode::Multiple => "several modes",
        }
    }
}

/// The native-mode attach probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// Not attempted, and why.
    NotRun(String),
    /// `xlb_pass` attached in driver mode and was detached again.
    Native,
    /// The kernel refused driver mode.
    Failed(String),
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PinFacts {
    pub dir: PathBuf,
    pub exists: bool,
    /// `None` when not checked (the directory does not exist).
    pub on_bpffs: Option<bool>,
    /// Layout versions of the `maps-v<N>` directories found.
    pub versions: Vec<u32>,
    /// Interfaces with a pinned link (`link-<if>`).
    pub links: Vec<String>,
    pub read_error: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentFacts {
    pub socket: PathBuf,
    pub state: AgentState,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgentState {
    Answered {
        pin_dir: PathBuf,
        interfaces: Vec<String>,
    },
    NotRunning,
    PermissionDenied,
    Error(String),
}

// ---------------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Skip,
    Warn,
    Fail,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Skip => "SKIP",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    pub check: &'static str,
    pub subject: Option<String>,
    pub status: Status,
    pub message: String,
    /// What to do, one command or step per entry; empty when OK.
    pub fix: Vec<String>,
}

impl Check {
    fn new(check: &'static str, subject: Option<&str>, status: Status, message: String) -> Self {
        Check {
            check,
            subject: subject.map(str::to_string),
            status,
            message,
            fix: Vec::new(),
        }
    }
    fn fix(mut self, step: impl Into<String>) -> Self {
        self.fix.push(step.into());
        self
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BackendSetup {
    pub mode: &'static str,
    pub steps: Vec<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub ok: usize,
    pub warn: usize,
    pub fail: usize,
    pub skip: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Report {
    pub version: u32,
    pub checks: Vec<Check>,
    pub backend_setup: Vec<BackendSetup>,
    pub summary: Summary,
}

impl Report {
    /// Whether no check failed (the exit code).
    pub fn passed(&self) -> bool {
        self.summary.fail == 0
    }

    /// The human-readable report.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        for c in &self.checks {
            let name = match &c.subject {
                Some(s) => format!("{} {s}", c.check),
                None => c.check.to_string(),
            };
            let _ = writeln!(out, "{:<5} {name}: {}", c.status.label(), c.message);
            for f in &c.fix {
                let _ = writeln!(out, "      fix: {f}");
            }
        }
        if !self.backend_setup.is_empty() {
            let _ = writeln!(
                out,
                "\nOn each backend (doctor cannot see them; check there):"
            );
            for b in &self.backend_setup {
                let _ = writeln!(out, "  {}:", b.mode);
                for s in &b.steps {
                    let _ = writeln!(out, "    - {s}");
                }
            }
        }
        let s = &self.summary;
        let _ = writeln!(
            out,
            "\n{} ok, {} warn, {} fail, {} skip",
            s.ok, s.warn, s.fail, s.skip
        );
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Judging (pure)
// ---------------------------------------------------------------------------------------------

/// Every check, in a fixed order, and the backend set-up.
pub fn judge(f: &HostFacts) -> Report {
    let mut checks = vec![
        judge_kernel(f.kernel_release.as_deref()),
        judge_bpffs(f.bpffs_fstype.as_deref()),
        judge_caps(f.caps),
        judge_memlock(f.kernel_release.as_deref(), f.memlock),
        judge_config(&f.config),
    ];
    if f.ifaces.is_empty() {
        checks.push(
            Check::new(
                "link",
                None,
                Status::Skip,
                "no interface to check: none given and no valid config".into(),
            )
            .fix("name the LB's interfaces: xlb doctor --iface eth0 (or --config FILE)"),
        );
    }
    let cfg = f.config.config();
    for i in &f.ifaces {
        checks.push(judge_link(i));
        checks.push(judge_xdp(i));
        checks.push(judge_mtu(
            i,
            cfg.and_then(|c| c.mtu),
            &f.encaps,
            f.encaps_from_mode,
        ));
        checks.push(judge_rp_filter(i, f.rp_filter_all, cfg));
    }
    checks.push(judge_pin_dir(&f.pin, cfg));
    checks.push(judge_agent(&f.agent, &f.pin, cfg, f.config.path()));
    let mut summary = Summary::default();
    for c in &checks {
        match c.status {
            Status::Ok => summary.ok += 1,
            Status::Warn => summary.warn += 1,
            Status::Fail => summary.fail += 1,
            Status::Skip => summary.skip += 1,
        }
    }
    Report {
        version: REPORT_VERSION,
        checks,
        backend_setup: backend_setup(f),
        summary,
    }
}

/// `major.minor` of a kernel release string (`6.1.0-18-amd64` -> (6, 1)).
pub fn parse_kernel(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

pub fn judge_kernel(release: Option<&str>) -> Check {
    let (min_major, min_minor) = MIN_KERNEL;
    let Some(release) = release else {
        return Check::new(
            "kernel",
            None,
            Status::Warn,
            "cannot read /proc/sys/kernel/osrelease".into(),
        )
        .fix(format!(
            "check `uname -r` is at least {min_major}.{min_minor}"
        ));
    };
    match parse_kernel(release) {
        None => Check::new(
            "kernel",
            None,
            Status::Warn,
            format!("cannot parse the kernel release {release:?}"),
        )
        .fix(format!(
            "make sure the kernel is at least {min_major}.{min_minor}: {MIN_KERNEL_WHY}"
        )),
        Some(v) if v < MIN_KERNEL => Check::new(
            "kernel",
            None,
            Status::Fail,
            format!(
                "{release} is older than {min_major}.{min_minor}, which this build needs: \
                 {MIN_KERNEL_WHY}"
            ),
        )
        .fix(format!(
            "upgrade to Linux {min_major}.{min_minor} or newer (e.g. Debian 12's 6.1)"
        )),
        Some(_) => Check::new(
            "kernel",
            None,
            Status::Ok,
            format!("{release} (this build needs {min_major}.{min_minor}: {MIN_KERNEL_WHY})"),
        ),
    }
}

pub fn judge_bpffs(fstype: Option<&str>) -> Check {
    let mount = format!("mount -t bpf bpf {BPFFS_ROOT}");
    let fstab = format!(
        "make it permanent: add `bpf {BPFFS_ROOT} bpf defaults 0 0` to /etc/fstab (systemd \
         distributions usually mount it already; dist/xlb.service has \
         RequiresMountsFor={BPFFS_ROOT})"
    );
    match fstype {
        Some("bpf") => Check::new(
            "bpffs",
            None,
            Status::Ok,
            format!("bpf file system mounted at {BPFFS_ROOT}"),
        ),
        Some(other) => Check::new(
            "bpffs",
            None,
            Status::Fail,
            format!(
                "{BPFFS_ROOT} is a {other} mount, not bpf: pins (maps and XDP links that keep \
                 forwarding across agent restarts) cannot be created"
            ),
        )
        .fix(mount)
        .fix(fstab),
        None => Check::new(
            "bpffs",
            None,
            Status::Fail,
            format!(
                "no bpf file system at {BPFFS_ROOT}: the agent pins its maps and XDP links \
                 there (that is what keeps forwarding across restarts) and refuses to start \
                 without it"
            ),
        )
        .fix(mount)
        .fix(fstab),
    }
}

/// Names of the capabilities the agent needs that `caps` lacks: (fatal, degrading).
fn missing_caps(caps: Caps) -> (Vec<&'static str>, Vec<&'static str>) {
    let sys_admin = caps.has(CAP_SYS_ADMIN);
    let mut fatal = Vec::new();
    let mut degrading = Vec::new();
    if !caps.has(CAP_BPF) && !sys_admin {
        fatal.push("CAP_BPF");
    }
    if !caps.has(CAP_NET_ADMIN) {
        fatal.push("CAP_NET_ADMIN");
    }
    if !caps.has(CAP_PERFMON) && !sys_admin {
        degrading.push("CAP_PERFMON");
    }
    (fatal, degrading)
}

pub fn judge_caps(caps: Option<Caps>) -> Check {
    let Some(caps) = caps else {
        return Check::new(
            "capabilities",
            None,
            Status::Warn,
            "cannot read CapEff from /proc/self/status".into(),
        )
        .fix("run the agent as root, or with CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON");
    };
    let (fatal, degrading) = missing_caps(caps);
    let grant = |names: &[&str]| {
        [
            "run as root (the agent, and this doctor, under sudo)".to_string(),
            format!(
                "or grant the binary the capabilities: setcap {}+ep /usr/local/bin/xlb (a \
                 non-root user also needs write access to the pin directory and the API \
                 socket's directory)",
                names
                    .iter()
                    .map(|n| n.to_ascii_lowercase())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            "under systemd, dist/xlb.service sets AmbientCapabilities=CAP_BPF CAP_NET_ADMIN \
             CAP_PERFMON ..."
                .to_string(),
        ]
    };
    let all = ["CAP_BPF", "CAP_NET_ADMIN", "CAP_PERFMON"];
    let who = if caps.euid == 0 {
        "root".to_string()
    } else {
        format!("uid {}", caps.euid)
    };
    if !fatal.is_empty() {
        let mut c = Check::new(
            "capabilities",
            None,
            Status::Fail,
            format!(
                "this process ({who}, CapEff {:#x}) lacks {}: the agent could not load the XDP \
                 program or attach it (checked for this process: run doctor the way the agent \
                 runs)",
                caps.effective,
                fatal.join(", ")
            ),
        );
        c.fix.extend(grant(&all));
        return c;
    }
    if !degrading.is_empty() {
        let mut c = Check::new(
            "capabilities",
            None,
            Status::Warn,
            format!(
                "this process ({who}) has CAP_BPF and CAP_NET_ADMIN but not CAP_PERFMON (or \
                 CAP_SYS_ADMIN): the verifier then applies the unprivileged rules (no pointer \
                 leaks, Spectre v1 sanitation) and may reject or slow the program"
            ),
        );
        c.fix.extend(grant(&all));
        return c;
    }
    Check::new(
        "capabilities",
        None,
        Status::Ok,
        format!("{who}: CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON effective"),
    )
}

pub fn judge_memlock(release: Option<&str>, memlock: Option<Option<u64>>) -> Check {
    let (maj, min) = MEMCG_KERNEL;
    if release
        .and_then(parse_kernel)
        .is_some_and(|v| v >= MEMCG_KERNEL)
    {
        return Check::new(
            "memlock",
            None,
            Status::Ok,
            format!(
                "kernel {maj}.{min}+ charges BPF maps to the memory cgroup: RLIMIT_MEMLOCK does \
                 not apply"
            ),
        );
    }
    match memlock {
        Some(None) => Check::new(
            "memlock",
            None,
            Status::Ok,
            "RLIMIT_MEMLOCK is unlimited".into(),
        ),
        Some(Some(bytes)) => Check::new(
            "memlock",
            None,
            Status::Warn,
            format!(
                "RLIMIT_MEMLOCK is {} KiB and kernels before {maj}.{min} charge BPF maps to it: \
                 the default maps (a 128 MiB ring alone) will not load",
                bytes / 1024
            ),
        )
        .fix("raise it for the agent: LimitMEMLOCK=infinity (dist/xlb.service has it), or `ulimit -l unlimited` in the shell that starts it"),
        None => Check::new(
            "memlock",
            None,
            Status::Skip,
            "cannot read RLIMIT_MEMLOCK".into(),
        ),
    }
}

pub fn judge_config(c: &ConfigFacts) -> Check {
    match c {
        ConfigFacts::NotGiven => Check::new(
            "config",
            None,
            Status::Skip,
            format!("no config given and {DEFAULT_CONFIG} does not exist"),
        )
        .fix("give the agent's config: xlb doctor --config /path/to/xlb.toml"),
        ConfigFacts::Invalid { path, error } => {
            let mut check = Check::new(
                "config",
                None,
                Status::Fail,
                format!(
                    "{} does not validate; the agent would refuse it",
                    path.display()
                ),
            );
            for line in error.lines().map(str::trim).filter(|l| !l.is_empty()) {
                check.fix.push(line.trim_start_matches("- ").to_string());
            }
            check.fix(format!(
                "then check again: xlb check-config {}",
                path.display()
            ))
        }
        ConfigFacts::Valid { path, validated } => {
            let cfg = &validated.config;
            let backends: usize = cfg.vips.iter().map(|v| v.backends.len()).sum();
            let what = format!(
                "{}: valid ({} VIPs, {backends} backends)",
                path.display(),
                cfg.vips.len()
            );
            if validated.warnings.is_empty() {
                Check::new("config", None, Status::Ok, what)
            } else {
                let mut check = Check::new(
                    "config",
                    None,
                    Status::Warn,
                    format!("{what}, with {} warnings", validated.warnings.len()),
                );
                check.fix = validated.warnings.iter().map(|w| w.to_string()).collect();
                check
            }
        }
    }
}

pub fn judge_link(i: &IfaceFacts) -> Check {
    let name = i.name.as_str();
    let subject = Some(name);
    match &i.link {
        Err(e) => Check::new(
            "link",
            subject,
            Status::Fail,
            format!("{name}: {e}"),
        )
        .fix("check `ip link` in the agent's network namespace (names are case-sensitive)"),
        Ok(l) if !l.up => Check::new(
            "link",
            subject,
            Status::Warn,
            format!("{name} is administratively down: nothing arrives, nothing leaves"),
        )
        .fix(format!("ip link set dev {name} up")),
        Ok(l) if !l.carrier => Check::new(
            "link",
            subject,
            Status::Warn,
            format!("{name} is up but has no carrier (cable, switch port, or veth peer down)"),
        )
        .fix(format!(
            "check the cabling / switch port, or bring the peer up; `ip link show {name}` shows NO-CARRIER"
        )),
        Ok(l) => Check::new(
            "link",
            subject,
            Status::Ok,
            format!("{name} is up with carrier, MTU {}", l.mtu),
        ),
    }
}

/// The driver name is one of [`NATIVE_XDP_DRIVERS`].
pub fn driver_has_native_xdp(driver: &str) -> bool {
    NATIVE_XDP_DRIVERS.contains(&driver)
}

const VETH_NOTE: &str = " (veth: frames sent back with XDP_TX are delivered only if the peer \
     has an XDP program of its own, e.g. xlb_pass, or GRO enabled)";

pub fn judge_xdp(i: &IfaceFacts) -> Check {
    let name = i.name.as_str();
    let subject = Some(name);
    if i.link.is_err() {
        return Check::new("xdp", subject, Status::Skip, format!("{name} not found"));
    }
    let driver = i.driver.as_deref();
    let driver_text = driver.map_or("an unknown driver".to_string(), |d| format!("driver {d}"));
    let veth = if driver == Some("veth") {
        VETH_NOTE
    } else {
        ""
    };
    let wants_native = i.configured_mode == Some(XdpMode::Native);
    if let Some(x) = &i.xdp {
        let prog = x
            .prog_name
            .as_deref()
            .map_or(format!("id {}", x.prog_id), |n| {
                format!("{n:?} (id {})", x.prog_id)
            });
        let is_xlb = x.prog_name.as_deref() == Some(map_names::PROG_LB)
            || (x.prog_name.is_none() && i.pinned_link);
        if !is_xlb {
            return Check::new(
                "xdp",
                subject,
                Status::Warn,
                format!(
                    "{name} already runs XDP program {prog} in {} mode, not xlb's pinned link: \
                     an interface takes one XDP program, so the agent's attach fails while it \
                     is there (doctor did not probe native mode, to leave it alone)",
                    x.mode.name()
                ),
            )
            .fix(format!(
                "if it is stale, remove it: ip link set dev {name} xdp off (or `xlb decap detach` / `xlb stop --detach` if it is an xlb program pinned elsewhere)"
            ));
        }
        return match x.mode {
            AttachMode::Generic => Check::new(
                "xdp",
                subject,
                Status::Warn,
                format!(
                    "xlb's program {prog} runs on {name} in generic (skb) mode: the kernel allocates an skb \
                     for every packet first, several times slower than native ({driver_text})"
                ),
            )
            .fix(format!(
                "if the driver supports native XDP: set xdp-mode = \"native\" for {name}, then `xlb stop --detach` and start the agent (a pinned link keeps its mode across restarts)"
            )),
            mode => Check::new(
                "xdp",
                subject,
                Status::Ok,
                format!(
                    "xlb's program {prog} attached to {name} in {} mode{veth}",
                    mode.name()
                ),
            ),
        };
    }
    match &i.probe {
        Probe::Native => Check::new(
            "xdp",
            subject,
            Status::Ok,
            format!(
                "native XDP works on {name} ({driver_text}): xlb_pass attached in driver mode and \
                 detached again{veth}"
            ),
        ),
        Probe::Failed(e) => {
            let (status, consequence) = if wants_native {
                (
                    Status::Fail,
                    "the config asks for xdp-mode = \"native\", so the agent will fail to attach",
                )
            } else {
                (
                    Status::Warn,
                    "xdp-mode \"auto\" falls back to generic (skb) mode: it works, several times slower",
                )
            };
            Check::new(
                "xdp",
                subject,
                status,
                format!(
                    "{name} ({driver_text}) refused native XDP ({e}): {consequence}"
                ),
            )
            .fix(format!(
                "native XDP needs driver support (list in docs/operations.md); check `ethtool -i {name}`, the kernel version, and the driver's XDP constraints (MTU, channels: `ethtool -l {name}`)"
            ))
            .fix(format!(
                "or accept generic mode explicitly: interfaces = [{{ name = \"{name}\", xdp-mode = \"generic\" }}]"
            ))
        }
        Probe::NotRun(why) => match driver {
            Some(d) if driver_has_native_xdp(d) => Check::new(
                "xdp",
                subject,
                Status::Ok,
                format!(
                    "driver {d} supports native XDP (not probed: {why}){veth}"
                ),
            ),
            _ => Check::new(
                "xdp",
                subject,
                Status::Warn,
                format!(
                    "{driver_text} is not known to support native XDP (not probed: {why}): \
                     generic mode works, several times slower{}",
                    if wants_native {
                        "; the config asks for xdp-mode = \"native\", which then fails"
                    } else {
                        ""
                    }
                ),
            )
            .fix(format!(
                "run `xlb doctor --iface {name}` as root: it attaches a pass-through program in native mode and detaches it, which is the real test"
            )),
        },
    }
}

/// The packet-too-big arithmetic for one interface. The largest client packet is
/// `min(interface MTU, CLIENT_MTU)`; the LB forwards it if it fits the egress MTU (the config's
/// `mtu`, else the interface's) after encapsulation.
pub fn judge_mtu(
    i: &IfaceFacts,
    config_mtu: Option<u16>,
    encaps: &[Encap],
    from_mode: bool,
) -> Check {
    let name = i.name.as_str();
    let subject = Some(name);
    let Ok(link) = &i.link else {
        return Check::new("mtu", subject, Status::Skip, format!("{name} not found"));
    };
    let Some(worst) = encaps.iter().max_by_key(|e| (e.overhead(), e.inner_v6)) else {
        return Check::new(
            "mtu",
            subject,
            Status::Skip,
            "no forwarding mode known: give --mode ipip|gue|dsr-l2 or --config".into(),
        );
    };
    let overhead = worst.overhead();
    let client = link.mtu.min(CLIENT_MTU);
    let egress = config_mtu.map_or(link.mtu, u32::from);
    let egress_src = match config_mtu {
        Some(m) => format!("agent.mtu = {m}"),
        None => format!("{name}'s MTU {} (agent.mtu unset)", link.mtu),
    };
    let need = client + overhead;
    let caveat = if from_mode && worst.mode != ForwardMode::DsrL2 {
        " (assuming IPv4 backends; IPv6 backends add 20 more: give --config for the exact set)"
    } else {
        ""
    };
    if egress < need {
        // MSS that fits: egress - overhead - inner IP and TCP headers.
        let inner = if worst.inner_v6 { 60 } else { 40 };
        let mss = egress.saturating_sub(overhead + inner);
        let family = if worst.inner_v6 {
            "ip6tables"
        } else {
            "iptables"
        };
        return Check::new(
            "mtu",
            subject,
            Status::Warn,
            format!(
                "clients' full-size packets ({client} bytes) become {need} bytes with {}{caveat}, \
                 more than the egress MTU {egress} ({egress_src}): the LB answers them with ICMP \
                 too-big, which costs a round trip per connection and black-holes clients whose \
                 path drops ICMP",
                worst.describe()
            ),
        )
        .fix(format!(
            "raise the MTU between the LB and the backends by {overhead}: ip link set dev {name} mtu {need} (and the switches' and backends' interfaces), then set agent.mtu = {need} or leave it unset"
        ))
        .fix(format!(
            "or clamp the TCP MSS on each backend so clients never send more: {family} -t mangle -A OUTPUT -p tcp --tcp-flags SYN,RST SYN -j TCPMSS --set-mss {mss} (UDP services must keep their datagrams under {} bytes themselves)",
            egress - overhead
        ));
    }
    if egress > link.mtu {
        return Check::new(
            "mtu",
            subject,
            Status::Warn,
            format!(
                "agent.mtu = {egress} is above {name}'s MTU {}: encapsulated frames of up to \
                 {egress} bytes leave {name} with XDP_TX, and a NIC, veth peer or switch set \
                 for {} drops them silently",
                link.mtu, link.mtu
            ),
        )
        .fix(format!(
            "raise {name}'s MTU to match (ip link set dev {name} mtu {egress}) and make sure the path to the backends carries it, or lower agent.mtu to {}",
            link.mtu
        ));
    }
    Check::new(
        "mtu",
        subject,
        Status::Ok,
        format!(
            "clients' full-size packets ({client} bytes) fit the egress MTU {egress} \
             ({egress_src}) after {}{caveat}",
            worst.describe()
        ),
    )
}

pub fn judge_rp_filter(i: &IfaceFacts, all: Option<u8>, cfg: Option<&Config>) -> Check {
    let name = i.name.as_str();
    let subject = Some(name);
    if i.link.is_err() {
        return Check::new(
            "rp_filter",
            subject,
            Status::Skip,
            format!("{name} not found"),
        );
    }
    let (Some(all), Some(own)) = (all, i.rp_filter) else {
        return Check::new(
            "rp_filter",
            subject,
            Status::Skip,
            format!("cannot read net.ipv4.conf.{{all,{name}}}.rp_filter (no IPv4?)"),
        );
    };
    // The kernel uses the larger of the two.
    let effective = all.max(own);
    let what = match effective {
        0 => "off",
        1 => "strict",
        _ => "loose",
    };
    let base = format!(
        "rp_filter {effective} ({what}; all={all}, {name}={own}): packets forwarded by XDP \
         never reach it, it applies only to what the program passes to this host's stack"
    );
    let pass_vips: Vec<String> = cfg
        .map(|c| {
            c.vips
                .iter()
                .filter(|v| v.no_backend == NoBackend::Pass && v.id.addr.is_ipv4())
                .map(|v| v.id.to_string())
                .collect()
        })
        .unwrap_or_default();
    if effective == 1 && !pass_vips.is_empty() {
        return Check::new(
            "rp_filter",
            subject,
            Status::Warn,
            format!(
                "{base}; {} pass(es) packets to this host when no backend is up, and strict \
                 mode drops them when the route back to the client is not via {name}",
                pass_vips.join(", ")
            ),
        )
        .fix(format!(
            "use loose mode: sysctl -w net.ipv4.conf.all.rp_filter=2 net.ipv4.conf.{name}.rp_filter=2 (persist in /etc/sysctl.d/)"
        ));
    }
    Check::new("rp_filter", subject, Status::Ok, base)
}

pub fn judge_pin_dir(p: &PinFacts, cfg: Option<&Config>) -> Check {
    let dir = p.dir.display();
    if let Some(e) = &p.read_error {
        return Check::new(
            "pin_dir",
            None,
            Status::Warn,
            format!("cannot read {dir}: {e}"),
        )
        .fix("run doctor as root to see the pinned deployment");
    }
    if !p.exists {
        return Check::new(
            "pin_dir",
            None,
            Status::Ok,
            format!("{dir} does not exist: no deployment pinned, the agent creates it"),
        );
    }
    if p.on_bpffs == Some(false) {
        return Check::new(
            "pin_dir",
            None,
            Status::Fail,
            format!("{dir} exists but is not on a bpf file system: nothing can be pinned there"),
        )
        .fix(format!(
            "mount bpffs (mount -t bpf bpf {BPFFS_ROOT}) and keep pin-dir below it"
        ));
    }
    let other: Vec<u32> = p
        .versions
        .iter()
        .copied()
        .filter(|v| *v != MAP_LAYOUT_VERSION)
        .collect();
    if let Some(found) = other.first() {
        return Check::new(
            "pin_dir",
            None,
            Status::Fail,
            format!(
                "{dir} holds maps of layout v{found}, but this xlb uses layout \
                 v{MAP_LAYOUT_VERSION}: the agent refuses to start on it"
            ),
        )
        .fix(format!(
            "detach the old deployment with the xlb that created it: xlb stop --detach --pin-dir {dir}"
        ))
        .fix(format!(
            "or, if nothing runs from it any more: rm -r {dir} (unpinning detaches its XDP links and stops that forwarding)"
        ));
    }
    let links = if p.links.is_empty() {
        "no XDP link".to_string()
    } else {
        format!("XDP links on {}", p.links.join(", "))
    };
    let has_maps = p.versions.contains(&MAP_LAYOUT_VERSION);
    let state = format!(
        "{dir}: {} and {links}",
        if has_maps {
            format!("maps of layout v{MAP_LAYOUT_VERSION} (ours)")
        } else {
            "no maps".to_string()
        }
    );
    if let Some(cfg) = cfg {
        let stray: Vec<&str> = p
            .links
            .iter()
            .filter(|l| !cfg.interfaces.iter().any(|i| &i.name == *l))
            .map(String::as_str)
            .collect();
        if !stray.is_empty() {
            return Check::new(
                "pin_dir",
                None,
                Status::Warn,
                format!(
                    "{state}; {} not in the config's interfaces: xlb stays attached there until \
                     the whole deployment is detached",
                    stray.join(", ")
                ),
            )
            .fix(
                "to take xlb off them: xlb stop --detach (stops forwarding everywhere), then \
                 start the agent with the new config",
            );
        }
    }
    let tail = if has_maps || !p.links.is_empty() {
        ": a pinned deployment, the next agent adopts it (flows kept)"
    } else {
        ""
    };
    Check::new("pin_dir", None, Status::Ok, format!("{state}{tail}"))
}

pub fn judge_agent(
    a: &AgentFacts,
    pin: &PinFacts,
    cfg: Option<&Config>,
    config_path: Option<&Path>,
) -> Check {
    let sock = a.socket.display();
    let mut stop = "xlb stop --detach".to_string();
    if a.socket != Path::new(DEFAULT_API_SOCKET) {
        let _ = write!(stop, " --socket {sock}");
    }
    if pin.dir != Path::new(DEFAULT_PIN_DIR) {
        let _ = write!(stop, " --pin-dir {}", pin.dir.display());
    }
    let run = format!(
        "xlb run --config {}",
        config_path.unwrap_or(Path::new(DEFAULT_CONFIG)).display()
    );
    match &a.state {
        AgentState::Answered {
            pin_dir,
            interfaces,
        } => {
            let base = format!(
                "an agent answers on {sock} (pin dir {}, interfaces {})",
                pin_dir.display(),
                interfaces.join(", ")
            );
            match cfg {
                Some(c) if &c.pin_dir != pin_dir => Check::new(
                    "agent",
                    None,
                    Status::Warn,
                    format!(
                        "{base}, but the config's pin-dir is {}: it runs another deployment",
                        c.pin_dir.display()
                    ),
                )
                .fix("compare `xlb status` with the config; two deployments on one interface cannot both attach"),
                _ => Check::new("agent", None, Status::Ok, base),
            }
        }
        AgentState::NotRunning if !pin.links.is_empty() => Check::new(
            "agent",
            None,
            Status::Warn,
            format!(
                "no agent on {sock}, but XDP links are pinned ({}): forwarding runs on the last \
                 state, and nothing applies health changes, reloads or neighbour changes",
                pin.links.join(", ")
            ),
        )
        .fix(format!(
            "start the agent: systemctl start xlb (or {run}); it adopts the pinned maps"
        ))
        .fix(format!("or, to stop forwarding: {stop}")),
        AgentState::NotRunning => Check::new(
            "agent",
            None,
            Status::Ok,
            format!("no agent on {sock} yet (start it: systemctl start xlb, or {run})"),
        ),
        AgentState::PermissionDenied => Check::new(
            "agent",
            None,
            Status::Warn,
            format!("permission denied on {sock}: cannot tell whether an agent runs"),
        )
        .fix("run doctor as root (the socket is 0600 in a 0700 directory)"),
        AgentState::Error(e) => Check::new("agent", None, Status::Warn, format!("{sock}: {e}"))
            .fix("check `systemctl status xlb` and `journalctl -u xlb`"),
    }
}

/// What to set up on every backend, per mode in use (every mode when none is known), with the
/// config's own addresses where it has them and documentation addresses otherwise.
pub fn backend_setup(f: &HostFacts) -> Vec<BackendSetup> {
    let cfg = f.config.config();
    let mut modes: Vec<ForwardMode> = Vec::new();
    for e in &f.encaps {
        if !modes.contains(&e.mode) {
            modes.push(e.mode);
        }
    }
    if modes.is_empty() {
        modes = vec![ForwardMode::Ipip, ForwardMode::Gue, ForwardMode::DsrL2];
    }
    let vips_of = |mode: ForwardMode| -> Vec<IpAddr> {
        let mut out: Vec<IpAddr> = cfg
            .map(|c| {
                c.vips
                    .iter()
                    .filter(|v| v.mode == mode)
                    .map(|v| v.id.addr)
                    .collect()
            })
            .unwrap_or_default();
        out.dedup();
        if out.is_empty() {
            out.push("203.0.113.10".parse().expect("literal"));
        }
        out
    };
    let lo = |addrs: &[IpAddr]| -> String {
        let cmds: Vec<String> = addrs
            .iter()
            .take(4)
            .map(|a| match a {
                IpAddr::V4(a) => format!("ip addr add {a}/32 dev lo"),
                IpAddr::V6(a) => format!("ip addr add {a}/128 dev lo nodad"),
            })
            .collect();
        let more = if addrs.len() > 4 {
            format!(" (and {} more VIPs)", addrs.len() - 4)
        } else {
            String::new()
        };
        format!(
            "own the VIP on loopback, so the stack accepts packets for it and replies from it: {}{more}",
            cmds.join("; ")
        )
    };
    let mut out = Vec::new();
    for mode in modes {
        let vips = vips_of(mode);
        let any_v4 = vips.iter().any(IpAddr::is_ipv4);
        let mut steps = vec![lo(&vips)];
        match mode {
            ForwardMode::Ipip | ForwardMode::Gue => {
                let v4 = cfg.map_or(Some("192.0.2.1".to_string()), |c| {
                    c.lb_src_v4.map(|a| a.to_string())
                });
                let v6 = cfg.and_then(|c| c.lb_src_v6.map(|a| a.to_string()));
                let mut cmd = "xlb decap attach --iface eth0".to_string();
                if let Some(a) = &v4 {
                    let _ = write!(cmd, " --lb-src-v4 {a}");
                }
                if let Some(a) = &v6 {
                    let _ = write!(cmd, " --lb-src-v6 {a}");
                }
                if mode == ForwardMode::Gue {
                    let port = cfg.map_or(config::DEFAULT_GUE_PORT, |c| c.gue_port);
                    let _ = write!(cmd, " --gue-port {port}");
                }
                steps.push(format!(
                    "strip the tunnel on the receiving interface (eth0 here), only for packets \
                     from the LB's lb-src addresses: {cmd}"
                ));
                if any_v4 {
                    steps.push(
                        "rp_filter 0 or 2 on the receiving interface and `all` (the inner \
                         packet's source is the client): sysctl -w \
                         net.ipv4.conf.all.rp_filter=2 net.ipv4.conf.eth0.rp_filter=2"
                            .to_string(),
                    );
                }
                steps.push(
                    "verify: xlb decap stats (decap_ipip / decap_gue grow with traffic; a \
                     growing pass_not_from_lb means --lb-src-* differs from the LB's lb-src)"
                        .to_string(),
                );
            }
            ForwardMode::DsrL2 => {
                if any_v4 {
                    steps.push(
                        "do not answer ARP for the VIP (the LB does): sysctl -w \
                         net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2 \
                         net.ipv4.conf.eth0.arp_ignore=1 net.ipv4.conf.eth0.arp_announce=2"
                            .to_string(),
                    );
                    steps.push(
                        "rp_filter 0 or 2 on the receiving interface and `all`: sysctl -w \
                         net.ipv4.conf.all.rp_filter=2 net.ipv4.conf.eth0.rp_filter=2"
                            .to_string(),
                    );
                }
                steps.push(
                    "be on the LB's L2 segment (same VLAN): frames arrive with only the \
                     destination MAC rewritten"
                        .to_string(),
                );
            }
        }
        steps.push(
            "replies go straight to the client with the VIP as source: the backend's network \
             must not filter that as spoofed"
                .to_string(),
        );
        out.push(BackendSetup {
            mode: mode.name(),
            steps,
        });
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Gathering (reads the host; probes native XDP as root)
// ---------------------------------------------------------------------------------------------

/// What to check.
#[derive(Clone, Debug, Default)]
pub struct DoctorOptions {
    /// `None`: [`DEFAULT_CONFIG`] if it exists.
    pub config: Option<PathBuf>,
    /// Empty: the config's interfaces.
    pub ifaces: Vec<String>,
    /// `None`: the config's modes.
    pub mode: Option<ForwardMode>,
    /// Never attach the probe program.
    pub no_probe: bool,
}

/// Reads the host. Needs a tokio runtime (rtnetlink, the API socket).
pub async fn gather(opts: &DoctorOptions) -> HostFacts {
    let kernel_release = fs::read_to_string("/proc/sys/kernel/osrelease")
        .ok()
        .map(|s| s.trim().to_string());
    let config = read_config(opts.config.as_deref());
    let cfg = config.config().cloned();

    let (encaps, encaps_from_mode) = match (opts.mode, &cfg) {
        (Some(mode), _) => (
            vec![Encap {
                mode,
                inner_v6: false,
                outer_v6: false,
            }],
            true,
        ),
        (None, Some(c)) => (encaps_of(c), false),
        (None, None) => (Vec::new(), false),
    };

    let pin_dir = cfg
        .as_ref()
        .map_or_else(|| PathBuf::from(DEFAULT_PIN_DIR), |c| c.pin_dir.clone());
    let pin = read_pin_dir(&pin_dir);
    let socket = cfg.as_ref().map_or_else(
        || PathBuf::from(DEFAULT_API_SOCKET),
        |c| c.api_socket.clone(),
    );
    let agent = AgentFacts {
        state: read_agent(&socket).await,
        socket,
    };

    let caps = read_caps();
    let can_probe = caps.is_some_and(|c| missing_caps(c).0.is_empty());
    let names: Vec<String> = if opts.ifaces.is_empty() {
        cfg.as_ref()
            .map(|c| c.interfaces.iter().map(|i| i.name.clone()).collect())
            .unwrap_or_default()
    } else {
        opts.ifaces.clone()
    };
    let handle = netlink_handle();
    let mut ifaces = Vec::new();
    for name in names {
        let configured_mode = cfg.as_ref().and_then(|c| {
            c.interfaces
                .iter()
                .find(|i| i.name == name)
                .map(|i| i.xdp_mode)
        });
        let link = match &handle {
            Ok(h) => read_link(h, &name).await,
            Err(e) => Err(e.clone()),
        };
        let (link, xdp) = match link {
            Ok((l, x)) => (Ok(l), x),
            Err(e) => (Err(e), None),
        };
        let probe = if link.is_err() {
            Probe::NotRun("interface not found".into())
        } else if xdp.is_some() {
            Probe::NotRun("an XDP program is attached".into())
        } else if opts.no_probe {
            Probe::NotRun("--no-probe".into())
        } else if !can_probe {
            Probe::NotRun("needs root".into())
        } else {
            // Look again right before touching it: never replace a program.
            match &handle {
                Ok(h) => match read_link(h, &name).await {
                    Ok((_, None)) => probe_native(&name),
                    _ => Probe::NotRun("an XDP program appeared".into()),
                },
                Err(e) => Probe::NotRun(e.clone()),
            }
        };
        ifaces.push(IfaceFacts {
            driver: read_driver(&name),
            rp_filter: read_sysctl_u8(&format!("/proc/sys/net/ipv4/conf/{name}/rp_filter")),
            pinned_link: pin.links.contains(&name),
            name,
            link,
            xdp,
            probe,
            configured_mode,
        });
    }

    HostFacts {
        kernel_release,
        bpffs_fstype: read_bpffs_fstype(),
        caps,
        memlock: read_memlock(),
        rp_filter_all: read_sysctl_u8("/proc/sys/net/ipv4/conf/all/rp_filter"),
        config,
        encaps,
        encaps_from_mode,
        ifaces,
        pin,
        agent,
    }
}

/// Each distinct (mode, VIP family, backend family) of the config.
pub fn encaps_of(c: &Config) -> Vec<Encap> {
    let mut out = Vec::new();
    for v in &c.vips {
        let inner_v6 = v.id.addr.is_ipv6();
        let mut push = |e: Encap| {
            if !out.contains(&e) {
                out.push(e);
            }
        };
        if v.mode == ForwardMode::DsrL2 || v.backends.is_empty() {
            push(Encap {
                mode: v.mode,
                inner_v6,
                outer_v6: inner_v6,
            });
        }
        if v.mode != ForwardMode::DsrL2 {
            for b in &v.backends {
                push(Encap {
                    mode: v.mode,
                    inner_v6,
                    outer_v6: b.addr.is_ipv6(),
                });
            }
        }
    }
    out
}

fn read_config(given: Option<&Path>) -> ConfigFacts {
    let path = match given {
        Some(p) => p.to_path_buf(),
        None if Path::new(DEFAULT_CONFIG).exists() => PathBuf::from(DEFAULT_CONFIG),
        None => return ConfigFacts::NotGiven,
    };
    match config::load(&path, &HostEnvironment) {
        Ok(validated) => ConfigFacts::Valid { path, validated },
        Err(e) => ConfigFacts::Invalid {
            path,
            error: e.to_string(),
        },
    }
}

fn read_caps() -> Option<Caps> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    parse_status(&status)
}

/// `Uid:` (effective, the second field) and `CapEff:` of a `/proc/<pid>/status` text.
pub fn parse_status(status: &str) -> Option<Caps> {
    let mut euid = None;
    let mut effective = None;
    for line in status.lines() {
        if let Some(v) = line.strip_prefix("Uid:") {
            euid = v.split_whitespace().nth(1).and_then(|u| u.parse().ok());
        } else if let Some(v) = line.strip_prefix("CapEff:") {
            effective = u64::from_str_radix(v.trim(), 16).ok();
        }
    }
    Some(Caps {
        euid: euid?,
        effective: effective?,
    })
}

fn read_memlock() -> Option<Option<u64>> {
    let mut r: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: valid out-pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r) } != 0 {
        return None;
    }
    Some((r.rlim_cur != libc::RLIM_INFINITY).then_some(r.rlim_cur))
}

fn read_sysctl_u8(path: &str) -> Option<u8> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn read_bpffs_fstype() -> Option<String> {
    let text = fs::read_to_string("/proc/self/mountinfo").ok()?;
    mount_fstype(&text, BPFFS_ROOT)
}

/// The file-system type of the topmost mount at `mount_point` in a `mountinfo` text.
pub fn mount_fstype(mountinfo: &str, mount_point: &str) -> Option<String> {
    mountinfo
        .lines()
        .filter(|l| l.split(' ').nth(4) == Some(mount_point))
        .filter_map(|l| {
            let (_, post) = l.split_once(" - ")?;
            post.split(' ').next().map(str::to_string)
        })
        .next_back()
}

fn read_pin_dir(dir: &Path) -> PinFacts {
    let mut p = PinFacts {
        dir: dir.to_path_buf(),
        ..PinFacts::default()
    };
    match fs::read_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            p.exists = true;
            p.read_error = Some(e.to_string());
        }
        Ok(entries) => {
            p.exists = true;
            p.on_bpffs = is_bpffs(dir);
            for entry in entries.filter_map(Result::ok) {
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                if let Some(v) = name.strip_prefix("maps-v").and_then(|v| v.parse().ok()) {
                    p.versions.push(v);
                } else if let Some(l) = name.strip_prefix("link-") {
                    p.links.push(l.to_string());
                }
            }
            p.versions.sort_unstable();
            p.links.sort();
        }
    }
    p
}

fn is_bpffs(path: &Path) -> Option<bool> {
    use std::os::unix::ffi::OsStrExt;
    const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and out-pointer.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(st.f_type as i64 == BPF_FS_MAGIC)
}

async fn read_agent(socket: &Path) -> AgentState {
    let call = api::call(socket, &Request::Status);
    match tokio::time::timeout(AGENT_TIMEOUT, call).await {
        Err(_) => AgentState::Error(format!(
            "the agent did not answer a status request within {} s (still starting up, or stuck)",
            AGENT_TIMEOUT.as_secs()
        )),
        Ok(Ok(Response::Status(r))) => AgentState::Answered {
            pin_dir: r.agent.pin_dir,
            interfaces: r.agent.interfaces,
        },
        Ok(Ok(Response::Error { message })) => AgentState::Error(message),
        Ok(Ok(Response::Ok { message })) => {
            AgentState::Error(format!("unexpected answer: {message}"))
        }
        Ok(Err(ApiError::NotRunning { .. })) => AgentState::NotRunning,
        Ok(Err(ApiError::PermissionDenied { .. })) => AgentState::PermissionDenied,
        Ok(Err(e)) => AgentState::Error(e.to_string()),
    }
}

fn netlink_handle() -> Result<rtnetlink::Handle, String> {
    let (conn, handle, _) =
        rtnetlink::new_connection().map_err(|e| format!("cannot open netlink: {e}"))?;
    tokio::spawn(conn);
    Ok(handle)
}

/// The link's MTU and state and its XDP attachment (`IFLA_XDP`), like `ip -d link show`.
async fn read_link(
    handle: &rtnetlink::Handle,
    name: &str,
) -> Result<(LinkFacts, Option<AttachedXdp>), String> {
    let not_found = || format!("no interface {name} in this network namespace");
    let c = std::ffi::CString::new(name).map_err(|_| not_found())?;
    // SAFETY: valid C string.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        return Err(not_found());
    }
    let msg = handle
        .link()
        .get()
        .match_index(index)
        .execute()
        .try_next()
        .await
        .map_err(|e| format!("netlink link get: {e}"))?
        .ok_or_else(not_found)?;
    let mut facts = LinkFacts {
        mtu: 0,
        up: msg.header.flags.contains(LinkFlags::Up),
        carrier: msg.header.flags.contains(LinkFlags::LowerUp),
    };
    let mut mode = None;
    let mut prog_id = 0;
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::Mtu(m) => facts.mtu = *m,
            LinkAttribute::Xdp(xdp) => {
                for x in xdp {
                    match x {
                        LinkXdp::Attached(a) => {
                            mode = match a {
                                XdpAttached::None => None,
                                XdpAttached::Driver => Some(AttachMode::Native),
                                XdpAttached::SocketBuffer => Some(AttachMode::Generic),
                                XdpAttached::Hardware => Some(AttachMode::Offload),
                                _ => Some(AttachMode::Multiple),
                            }
                        }
                        LinkXdp::ProgId(id) => prog_id = *id,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    let xdp = mode.map(|mode| AttachedXdp {
        mode,
        prog_id,
        prog_name: program_name(prog_id),
    });
    Ok((facts, xdp))
}

/// The name of a loaded program (needs CAP_SYS_ADMIN to walk the program ids).
fn program_name(id: u32) -> Option<String> {
    if id == 0 {
        return None;
    }
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == id)
        .and_then(|p| p.name_as_str().map(str::to_string))
}

/// Attaches `xlb_pass` in driver mode and detaches it again.
fn probe_native(iface: &str) -> Probe {
    let mut ebpf = match loader::load_aux(map_names::PROG_PASS) {
        Ok(e) => e,
        Err(e) => return Probe::NotRun(format!("cannot load the probe program: {e}")),
    };
    let program: &mut aya::programs::Xdp = match ebpf
        .program_mut(map_names::PROG_PASS)
        .and_then(|p| p.try_into().ok())
    {
        Some(p) => p,
        None => return Probe::NotRun("the probe program is missing from the object".into()),
    };
    match program.attach(iface, aya::programs::XdpMode::Driver) {
        Ok(id) => {
            // Dropping `ebpf` would detach too; say it explicitly.
            let _ = program.detach(id);
            Probe::Native
        }
        Err(e) => Probe::Failed(error_chain(&e)),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let _ = write!(s, ": {inner}");
        src = inner.source();
    }
    s
}

/// The driver: `ETHTOOL_GDRVINFO` (works for virtual devices too), else the sysfs link.
fn read_driver(iface: &str) -> Option<String> {
    ethtool_driver(iface)
        .ok()
        .filter(|d| !d.is_empty())
        .or_else(|| {
            fs::read_link(format!("/sys/class/net/{iface}/device/driver"))
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        })
}

fn ethtool_driver(iface: &str) -> io::Result<String> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    const ETHTOOL_GDRVINFO: u32 = 0x0000_0003;
    #[repr(C)]
    struct DrvInfo {
        cmd: u32,
        driver: [u8; 32],
        version: [u8; 32],
        fw_version: [u8; 32],
        bus_info: [u8; 32],
        erom_version: [u8; 32],
        reserved2: [u8; 12],
        n_priv_flags: u32,
        n_stats: u32,
        testinfo_len: u32,
        eedump_len: u32,
        regdump_len: u32,
    }
    #[repr(C)]
    struct IfReq {
        name: [u8; libc::IFNAMSIZ],
        data: *mut libc::c_void,
        _pad: [u8; 16],
    }
    if iface.is_empty() || iface.len() >= libc::IFNAMSIZ {
        return Err(io::ErrorKind::InvalidInput.into());
    }
    // SAFETY: plain socket(2); the fd is owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: all-zero is valid for both plain-data structs.
    let mut info: DrvInfo = unsafe { std::mem::zeroed() };
    info.cmd = ETHTOOL_GDRVINFO;
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        data: (&mut info as *mut DrvInfo).cast(),
        _pad: [0; 16],
    };
    req.name[..iface.len()].copy_from_slice(iface.as_bytes());
    // SAFETY: SIOCETHTOOL with an ifreq whose data points at a live ethtool_drvinfo.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCETHTOOL, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let end = info.driver.iter().position(|b| *b == 0).unwrap_or(32);
    Ok(String::from_utf8_lossy(&info.driver[..end]).into_owned())
}

// ---------------------------------------------------------------------------------------------
// Tests (judging only: no root, no network)
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
[agent]
interfaces = [{ name = "eth0", xdp-mode = "native" }]
lb-src-v4 = "192.0.2.1"
lb-src-v6 = "2001:db8::1"
gue-port = 7000

[[vip]]
address = "203.0.113.10"
port = 80
protocol = "tcp"
mode = "ipip"
no-backend = "pass"
  [vip.health]
  kind = "none"
  [[vip.backend]]
  address = "198.51.100.11"

[[vip]]
address = "203.0.113.20"
port = 443
protocol = "tcp"
mode = "dsr-l2"
  [vip.health]
  kind = "none"
  [[vip.backend]]
  address = "198.51.100.21"

[[vip]]
address = "2001:db8:10::53"
port = 53
protocol = "udp"
mode = "gue"
  [vip.health]
  kind = "none"
  [[vip.backend]]
  address = "2001:db8:20::11"
"#;

    fn validated(text: &str) -> config::Validated {
        config::load_str(text, &|n: &str| n == "eth0").expect("test config is valid")
    }

    fn valid(text: &str) -> ConfigFacts {
        ConfigFacts::Valid {
            path: "/etc/xlb/xlb.toml".into(),
            validated: validated(text),
        }
    }

    fn iface() -> IfaceFacts {
        IfaceFacts {
            name: "eth0".into(),
            link: Ok(LinkFacts {
                mtu: 1500,
                up: true,
                carrier: true,
            }),
            driver: Some("ixgbe".into()),
            xdp: None,
            probe: Probe::Native,
            configured_mode: None,
            rp_filter: Some(0),
            pinned_link: false,
        }
    }

    fn root() -> Caps {
        Caps {
            euid: 0,
            effective: 0x1ff_ffff_ffff,
        }
    }

    fn healthy() -> HostFacts {
        HostFacts {
            kernel_release: Some("6.1.0-18-amd64".into()),
            bpffs_fstype: Some("bpf".into()),
            caps: Some(root()),
            memlock: Some(Some(8 << 20)),
            rp_filter_all: Some(0),
            config: ConfigFacts::NotGiven,
            encaps: vec![Encap {
                mode: ForwardMode::DsrL2,
                inner_v6: false,
                outer_v6: false,
            }],
            encaps_from_mode: true,
            ifaces: vec![iface()],
            pin: PinFacts {
                dir: DEFAULT_PIN_DIR.into(),
                ..PinFacts::default()
            },
            agent: AgentFacts {
                socket: DEFAULT_API_SOCKET.into(),
                state: AgentState::NotRunning,
            },
        }
    }

    fn has_fix(c: &Check, snippet: &str) -> bool {
        c.fix.iter().any(|f| f.contains(snippet))
    }

    #[track_caller]
    fn assert_fix(c: &Check, snippet: &str) {
        assert!(
            has_fix(c, snippet),
            "no fix containing {snippet:?} in {c:#?}"
        );
    }

    #[test]
    fn kernel() {
        let ok = judge_kernel(Some("6.18.44-fc-v669"));
        assert_eq!(ok.status, Status::Ok);
        assert!(ok.message.contains("needs 5.9"), "{}", ok.message);
        assert!(ok.fix.is_empty());
        assert_eq!(judge_kernel(Some("5.9.0")).status, Status::Ok);
        let old = judge_kernel(Some("5.4.0-150-generic"));
        assert_eq!(old.status, Status::Fail);
        assert!(old.message.contains("bpf_link"), "{}", old.message);
        assert_fix(&old, "upgrade to Linux 5.9 or newer");
        assert_eq!(judge_kernel(Some("4.19.0")).status, Status::Fail);
        assert_eq!(judge_kernel(Some("weird")).status, Status::Warn);
        assert_eq!(judge_kernel(None).status, Status::Warn);
        assert_eq!(parse_kernel("6.1.0-18-amd64"), Some((6, 1)));
        assert_eq!(parse_kernel("5.10"), Some((5, 10)));
    }

    #[test]
    fn bpffs() {
        assert_eq!(judge_bpffs(Some("bpf")).status, Status::Ok);
        let none = judge_bpffs(None);
        assert_eq!(none.status, Status::Fail);
        assert_fix(&none, "mount -t bpf bpf /sys/fs/bpf");
        assert_fix(&none, "bpf /sys/fs/bpf bpf defaults 0 0");
        let tmpfs = judge_bpffs(Some("tmpfs"));
        assert_eq!(tmpfs.status, Status::Fail);
        assert!(tmpfs.message.contains("tmpfs"));
    }

    #[test]
    fn mountinfo_topmost_mount_wins() {
        let text = "\
24 1 0:22 / /sys rw - sysfs sysfs rw
30 24 0:26 / /sys/fs/bpf rw,nosuid - tmpfs tmpfs rw
31 30 0:27 / /sys/fs/bpf rw,relatime shared:9 - bpf bpf rw,mode=700
";
        assert_eq!(mount_fstype(text, "/sys/fs/bpf").as_deref(), Some("bpf"));
        assert_eq!(mount_fstype(text, "/sys").as_deref(), Some("sysfs"));
        assert_eq!(mount_fstype(text, "/run"), None);
    }

    #[test]
    fn capabilities() {
        let ok = judge_caps(Some(root()));
        assert_eq!(ok.status, Status::Ok);
        assert!(ok.message.starts_with("root"));
        // Unprivileged user: nothing.
        let none = judge_caps(Some(Caps {
            euid: 1000,
            effective: 0,
        }));
        assert_eq!(none.status, Status::Fail);
        assert!(
            none.message.contains("lacks CAP_BPF, CAP_NET_ADMIN"),
            "{}",
            none.message
        );
        assert_fix(
            &none,
            "setcap cap_bpf,cap_net_admin,cap_perfmon+ep /usr/local/bin/xlb",
        );
        assert_fix(&none, "AmbientCapabilities=");
        // BPF + NET_ADMIN without PERFMON: works with restrictions.
        let partial = Caps {
            euid: 998,
            effective: (1 << CAP_BPF) | (1 << CAP_NET_ADMIN),
        };
        let warn = judge_caps(Some(partial));
        assert_eq!(warn.status, Status::Warn);
        assert!(warn.message.contains("not CAP_PERFMON"));
        // CAP_SYS_ADMIN stands in for CAP_BPF and CAP_PERFMON.
        let sys_admin = Caps {
            euid: 998,
            effective: (1 << CAP_SYS_ADMIN) | (1 << CAP_NET_ADMIN),
        };
        assert_eq!(judge_caps(Some(sys_admin)).status, Status::Ok);
        // Without CAP_NET_ADMIN nothing attaches.
        let no_net = Caps {
            euid: 0,
            effective: (1 << CAP_BPF) | (1 << CAP_PERFMON),
        };
        let fail = judge_caps(Some(no_net));
        assert_eq!(fail.status, Status::Fail);
        assert!(fail.message.contains("lacks CAP_NET_ADMIN"));
        assert_eq!(judge_caps(None).status, Status::Warn);
    }

    #[test]
    fn status_parsing() {
        let text = "Name:\txlb\nUid:\t1000\t0\t0\t0\nGid:\t0\t0\t0\t0\n\
                    CapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(
            parse_status(text),
            Some(Caps {
                euid: 0,
                effective: 0x1ff_ffff_ffff
            })
        );
        assert_eq!(parse_status("Name:\tx\n"), None);
    }

    #[test]
    fn memlock() {
        assert_eq!(
            judge_memlock(Some("6.1.0"), Some(Some(65536))).status,
            Status::Ok
        );
        let old = judge_memlock(Some("5.10.0"), Some(Some(64 << 10)));
        assert_eq!(old.status, Status::Warn);
        assert!(old.message.contains("64 KiB"));
        assert_fix(&old, "LimitMEMLOCK=infinity");
        assert_eq!(judge_memlock(Some("5.10.0"), Some(None)).status, Status::Ok);
        assert_eq!(judge_memlock(Some("5.10.0"), None).status, Status::Skip);
    }

    #[test]
    fn config_check() {
        assert_eq!(judge_config(&ConfigFacts::NotGiven).status, Status::Skip);
        let ok = judge_config(&valid(CONFIG));
        assert_eq!(ok.status, Status::Ok, "{ok:#?}");
        assert!(ok.message.contains("3 VIPs, 3 backends"));
        let bad = judge_config(&ConfigFacts::Invalid {
            path: "/etc/xlb/xlb.toml".into(),
            error: "2 configuration errors:\n  - agent.mtu: 100 is out of range: use 576..=9216\n  - vip[0].port: missing"
                .into(),
        });
        assert_eq!(bad.status, Status::Fail);
        assert_fix(&bad, "agent.mtu: 100 is out of range: use 576..=9216");
        assert_fix(&bad, "xlb check-config /etc/xlb/xlb.toml");
        // A VIP without health check is a warning of validation.
        let warned = valid(
            "[agent]\ninterfaces = [\"eth0\"]\n[[vip]]\naddress = \"203.0.113.10\"\nport = 80\n\
             protocol = \"tcp\"\nmode = \"dsr-l2\"\n",
        );
        let w = judge_config(&warned);
        assert_eq!(w.status, Status::Warn, "{w:#?}");
        assert!(!w.fix.is_empty());
    }

    #[test]
    fn link() {
        assert_eq!(judge_link(&iface()).status, Status::Ok);
        let missing = IfaceFacts {
            link: Err("no interface eth9 in this network namespace".into()),
            ..iface()
        };
        let c = judge_link(&missing);
        assert_eq!(c.status, Status::Fail);
        assert_fix(&c, "ip link");
        let down = IfaceFacts {
            link: Ok(LinkFacts {
                mtu: 1500,
                up: false,
                carrier: false,
            }),
            ..iface()
        };
        let c = judge_link(&down);
        assert_eq!(c.status, Status::Warn);
        assert_fix(&c, "ip link set dev eth0 up");
        let no_carrier = IfaceFacts {
            link: Ok(LinkFacts {
                mtu: 1500,
                up: true,
                carrier: false,
            }),
            ..iface()
        };
        assert_eq!(judge_link(&no_carrier).status, Status::Warn);
    }

    #[test]
    fn xdp_probe_results() {
        let ok = judge_xdp(&iface());
        assert_eq!(ok.status, Status::Ok);
        assert!(ok.message.contains("xlb_pass attached in driver mode"));
        let failed = IfaceFacts {
            probe: Probe::Failed("Operation not supported (os error 95)".into()),
            driver: Some("r8169".into()),
            ..iface()
        };
        let c = judge_xdp(&failed);
        assert_eq!(c.status, Status::Warn);
        assert!(c.message.contains("falls back to generic"));
        assert_fix(&c, "xdp-mode = \"generic\"");
        // The config insists on native: the agent would fail.
        let insists = IfaceFacts {
            configured_mode: Some(XdpMode::Native),
            ..failed
        };
        assert_eq!(judge_xdp(&insists).status, Status::Fail);
    }

    #[test]
    fn xdp_driver_list_without_probe() {
        let known = IfaceFacts {
            probe: Probe::NotRun("needs root".into()),
            driver: Some("mlx5_core".into()),
            ..iface()
        };
        let c = judge_xdp(&known);
        assert_eq!(c.status, Status::Ok);
        assert!(c.message.contains("not probed: needs root"));
        let unknown = IfaceFacts {
            driver: Some("r8169".into()),
            ..known.clone()
        };
        let c = judge_xdp(&unknown);
        assert_eq!(
            c.status,
            Status::Warn,
            "unknown driver is a warning, not a failure"
        );
        assert!(c.message.contains("generic mode works"));
        assert_fix(&c, "xlb doctor --iface eth0");
        let no_driver = IfaceFacts {
            driver: None,
            ..known.clone()
        };
        assert_eq!(judge_xdp(&no_driver).status, Status::Warn);
        let veth = IfaceFacts {
            driver: Some("veth".into()),
            ..known
        };
        assert!(judge_xdp(&veth).message.contains("peer"));
        for d in [
            "veth",
            "virtio_net",
            "ixgbe",
            "i40e",
            "ice",
            "mlx5_core",
            "mlx4_en",
            "bnxt_en",
        ] {
            assert!(driver_has_native_xdp(d), "{d}");
        }
        assert!(!driver_has_native_xdp("e1000"));
    }

    #[test]
    fn xdp_existing_program_is_left_alone() {
        let other = IfaceFacts {
            xdp: Some(AttachedXdp {
                mode: AttachMode::Native,
                prog_id: 42,
                prog_name: Some("firewall".into()),
            }),
            probe: Probe::NotRun("an XDP program is attached".into()),
            ..iface()
        };
        let c = judge_xdp(&other);
        assert_eq!(c.status, Status::Warn);
        assert!(c.message.contains("\"firewall\" (id 42)"), "{}", c.message);
        assert_fix(&c, "ip link set dev eth0 xdp off");
        let ours = IfaceFacts {
            xdp: Some(AttachedXdp {
                mode: AttachMode::Native,
                prog_id: 7,
                prog_name: Some("xlb".into()),
            }),
            ..other.clone()
        };
        assert_eq!(judge_xdp(&ours).status, Status::Ok);
        // Name unreadable, but our pin dir holds the interface's link: ours.
        let pinned = IfaceFacts {
            xdp: Some(AttachedXdp {
                mode: AttachMode::Native,
                prog_id: 7,
                prog_name: None,
            }),
            pinned_link: true,
            ..other.clone()
        };
        assert_eq!(judge_xdp(&pinned).status, Status::Ok);
        let generic = IfaceFacts {
            xdp: Some(AttachedXdp {
                mode: AttachMode::Generic,
                prog_id: 7,
                prog_name: Some("xlb".into()),
            }),
            ..other
        };
        let c = judge_xdp(&generic);
        assert_eq!(c.status, Status::Warn);
        assert_fix(&c, "xlb stop --detach");
    }

    fn ipip_v4() -> Encap {
        Encap {
            mode: ForwardMode::Ipip,
            inner_v6: false,
            outer_v6: false,
        }
    }

    #[test]
    fn mtu_overheads() {
        let e = |mode, outer_v6| Encap {
            mode,
            inner_v6: false,
            outer_v6,
        };
        assert_eq!(e(ForwardMode::Ipip, false).overhead(), 20);
        assert_eq!(e(ForwardMode::Ipip, true).overhead(), 40);
        assert_eq!(e(ForwardMode::Gue, false).overhead(), 28);
        assert_eq!(e(ForwardMode::Gue, true).overhead(), 48);
        assert_eq!(e(ForwardMode::DsrL2, false).overhead(), 0);
    }

    #[test]
    fn mtu_too_small_for_ipip() {
        let c = judge_mtu(&iface(), None, &[ipip_v4()], true);
        assert_eq!(c.status, Status::Warn);
        assert!(
            c.message.contains("1500 bytes) become 1520"),
            "{}",
            c.message
        );
        assert!(c.message.contains("ICMP too-big"));
        assert!(c.message.contains("assuming IPv4 backends"));
        assert_fix(&c, "ip link set dev eth0 mtu 1520");
        assert_fix(&c, "--set-mss 1440");
        // IPv6 VIP over GUE to IPv6 backends: 48 bytes, inner headers 60.
        let v6 = Encap {
            mode: ForwardMode::Gue,
            inner_v6: true,
            outer_v6: true,
        };
        let c = judge_mtu(&iface(), None, &[ipip_v4(), v6], false);
        assert_eq!(c.status, Status::Warn);
        assert_fix(&c, "mtu 1548");
        assert_fix(&c, "ip6tables -t mangle");
        assert_fix(&c, "--set-mss 1392");
        assert!(!c.message.contains("assuming"));
    }

    #[test]
    fn mtu_ok_paths() {
        // dsr-l2 adds nothing.
        let dsr = Encap {
            mode: ForwardMode::DsrL2,
            inner_v6: false,
            outer_v6: false,
        };
        assert_eq!(judge_mtu(&iface(), None, &[dsr], true).status, Status::Ok);
        // Jumbo frames toward the backends, clients at 1500.
        let jumbo = IfaceFacts {
            link: Ok(LinkFacts {
                mtu: 9000,
                up: true,
                carrier: true,
            }),
            ..iface()
        };
        let c = judge_mtu(&jumbo, None, &[ipip_v4()], true);
        assert_eq!(c.status, Status::Ok, "{c:#?}");
        assert!(c.message.contains("(1500 bytes) fit the egress MTU 9000"));
        // Interface raised by the overhead.
        let raised = IfaceFacts {
            link: Ok(LinkFacts {
                mtu: 1520,
                up: true,
                carrier: true,
            }),
            ..iface()
        };
        assert_eq!(
            judge_mtu(&raised, None, &[ipip_v4()], true).status,
            Status::Ok
        );
        // Nothing known about the modes.
        assert_eq!(judge_mtu(&iface(), None, &[], false).status, Status::Skip);
    }

    #[test]
    fn mtu_config_above_interface() {
        let c = judge_mtu(&iface(), Some(1520), &[ipip_v4()], true);
        assert_eq!(c.status, Status::Warn);
        assert!(c.message.contains("above eth0's MTU 1500"), "{}", c.message);
        assert_fix(&c, "ip link set dev eth0 mtu 1520");
    }

    #[test]
    fn rp_filter() {
        let ok = judge_rp_filter(&iface(), Some(0), None);
        assert_eq!(ok.status, Status::Ok);
        assert!(ok.message.contains("never reach it"));
        // Strict, but no VIP passes traffic to the stack: informational.
        let strict = IfaceFacts {
            rp_filter: Some(1),
            ..iface()
        };
        assert_eq!(judge_rp_filter(&strict, Some(0), None).status, Status::Ok);
        // The kernel takes the max of all and the interface.
        let c = judge_rp_filter(&iface(), Some(1), None);
        assert!(c.message.contains("rp_filter 1 (strict"), "{}", c.message);
        // A no-backend = "pass" VIP is handed to the stack: strict can drop it.
        let cfg = validated(CONFIG).config;
        let c = judge_rp_filter(&strict, Some(0), Some(&cfg));
        assert_eq!(c.status, Status::Warn);
        assert!(c.message.contains("tcp/203.0.113.10:80"));
        assert_fix(&c, "net.ipv4.conf.eth0.rp_filter=2");
        assert_eq!(judge_rp_filter(&strict, None, None).status, Status::Skip);
    }

    #[test]
    fn pin_dir() {
        let mut p = PinFacts {
            dir: "/sys/fs/bpf/xlb".into(),
            ..PinFacts::default()
        };
        let c = judge_pin_dir(&p, None);
        assert_eq!(c.status, Status::Ok);
        assert!(c.message.contains("no deployment pinned"));
        p.exists = true;
        p.on_bpffs = Some(true);
        p.versions = vec![MAP_LAYOUT_VERSION];
        p.links = vec!["eth0".into()];
        let c = judge_pin_dir(&p, None);
        assert_eq!(c.status, Status::Ok);
        assert!(
            c.message.contains("the next agent adopts it"),
            "{}",
            c.message
        );
        // Another layout version.
        let old = PinFacts {
            versions: vec![MAP_LAYOUT_VERSION + 1],
            ..p.clone()
        };
        let c = judge_pin_dir(&old, None);
        assert_eq!(c.status, Status::Fail);
        assert!(
            c.message
                .contains(&format!("layout v{}", MAP_LAYOUT_VERSION + 1))
        );
        assert_fix(&c, "xlb stop --detach --pin-dir /sys/fs/bpf/xlb");
        assert_fix(&c, "rm -r /sys/fs/bpf/xlb");
        // Not on bpffs.
        let tmp = PinFacts {
            on_bpffs: Some(false),
            ..p.clone()
        };
        assert_eq!(judge_pin_dir(&tmp, None).status, Status::Fail);
        // A link on an interface the config no longer lists.
        let cfg = validated(CONFIG).config;
        let stray = PinFacts {
            links: vec!["eth0".into(), "eth1".into()],
            ..p.clone()
        };
        let c = judge_pin_dir(&stray, Some(&cfg));
        assert_eq!(c.status, Status::Warn);
        assert!(c.message.contains("eth1 not in the config"));
        assert_eq!(judge_pin_dir(&p, Some(&cfg)).status, Status::Ok);
        let unreadable = PinFacts {
            read_error: Some("Permission denied (os error 13)".into()),
            ..p
        };
        assert_eq!(judge_pin_dir(&unreadable, None).status, Status::Warn);
    }

    #[test]
    fn agent() {
        let pin = PinFacts::default();
        let a = |state| AgentFacts {
            socket: DEFAULT_API_SOCKET.into(),
            state,
        };
        assert_eq!(
            judge_agent(&a(AgentState::NotRunning), &pin, None, None).status,
            Status::Ok
        );
        let pinned = PinFacts {
            dir: DEFAULT_PIN_DIR.into(),
            links: vec!["eth0".into()],
            ..PinFacts::default()
        };
        let c = judge_agent(&a(AgentState::NotRunning), &pinned, None, None);
        assert_eq!(c.status, Status::Warn);
        assert!(c.message.contains("forwarding runs on the last state"));
        assert_fix(
            &c,
            "systemctl start xlb (or xlb run --config /etc/xlb/xlb.toml)",
        );
        assert!(
            c.fix
                .iter()
                .any(|f| f == "or, to stop forwarding: xlb stop --detach")
        );
        // Non-default places are spelled out.
        let custom = AgentFacts {
            socket: "/run/xlb-b/xlb.sock".into(),
            state: AgentState::NotRunning,
        };
        let custom_pin = PinFacts {
            dir: "/sys/fs/bpf/xlb-b".into(),
            ..pinned.clone()
        };
        let c = judge_agent(
            &custom,
            &custom_pin,
            None,
            Some(Path::new("/etc/xlb/b.toml")),
        );
        assert_fix(&c, "xlb run --config /etc/xlb/b.toml");
        assert_fix(
            &c,
            "xlb stop --detach --socket /run/xlb-b/xlb.sock --pin-dir /sys/fs/bpf/xlb-b",
        );
        let answered = a(AgentState::Answered {
            pin_dir: "/sys/fs/bpf/xlb".into(),
            interfaces: vec!["eth0".into()],
        });
        assert_eq!(
            judge_agent(&answered, &pinned, None, None).status,
            Status::Ok
        );
        let cfg = validated(CONFIG).config;
        assert_eq!(
            judge_agent(&answered, &pinned, Some(&cfg), None).status,
            Status::Ok
        );
        let elsewhere = a(AgentState::Answered {
            pin_dir: "/sys/fs/bpf/other".into(),
            interfaces: vec!["eth0".into()],
        });
        assert_eq!(
            judge_agent(&elsewhere, &pinned, Some(&cfg), None).status,
            Status::Warn
        );
        let c = judge_agent(&a(AgentState::PermissionDenied), &pin, None, None);
        assert_eq!(c.status, Status::Warn);
        assert_fix(&c, "run doctor as root");
    }

    #[test]
    fn encaps_from_config() {
        let cfg = validated(CONFIG).config;
        let e = encaps_of(&cfg);
        assert!(e.contains(&ipip_v4()));
        assert!(e.contains(&Encap {
            mode: ForwardMode::Gue,
            inner_v6: true,
            outer_v6: true
        }));
        assert!(e.contains(&Encap {
            mode: ForwardMode::DsrL2,
            inner_v6: false,
            outer_v6: false
        }));
        assert_eq!(e.len(), 3);
    }

    #[test]
    fn backend_setup_uses_the_config() {
        let cfg = validated(CONFIG).config;
        let f = HostFacts {
            encaps: encaps_of(&cfg),
            encaps_from_mode: false,
            config: valid(CONFIG),
            ..healthy()
        };
        let setup = backend_setup(&f);
        let modes: Vec<&str> = setup.iter().map(|b| b.mode).collect();
        assert_eq!(modes, ["ipip", "dsr-l2", "gue"]);
        let text = |mode: &str| {
            setup
                .iter()
                .find(|b| b.mode == mode)
                .unwrap()
                .steps
                .join("\n")
        };
        let ipip = text("ipip");
        assert!(ipip.contains("ip addr add 203.0.113.10/32 dev lo"));
        assert!(ipip.contains(
            "xlb decap attach --iface eth0 --lb-src-v4 192.0.2.1 --lb-src-v6 2001:db8::1"
        ));
        assert!(ipip.contains("rp_filter=2"));
        let gue = text("gue");
        assert!(gue.contains("ip addr add 2001:db8:10::53/128 dev lo nodad"));
        assert!(gue.contains("--gue-port 7000"));
        assert!(gue.contains("xlb decap stats"));
        // IPv6 only: no IPv4 sysctl advice.
        assert!(!gue.contains("rp_filter"));
        let dsr = text("dsr-l2");
        assert!(dsr.contains("ip addr add 203.0.113.20/32 dev lo"));
        assert!(dsr.contains("arp_ignore=1"));
        assert!(dsr.contains("arp_announce=2"));
    }

    #[test]
    fn backend_setup_without_config_covers_every_mode() {
        let f = HostFacts {
            encaps: Vec::new(),
            ..healthy()
        };
        let setup = backend_setup(&f);
        assert_eq!(setup.len(), 3);
        assert!(setup[0].steps.join(" ").contains("--lb-src-v4 192.0.2.1"));
    }

    #[test]
    fn report_summary_exit_and_json() {
        let r = judge(&healthy());
        assert!(r.passed(), "{}", r.render_text());
        assert_eq!(r.summary.fail, 0);
        let bad = HostFacts {
            bpffs_fstype: None,
            ..healthy()
        };
        let r = judge(&bad);
        assert!(!r.passed());
        assert_eq!(r.summary.fail, 1);
        let text = r.render_text();
        assert!(text.contains("FAIL  bpffs: no bpf file system"), "{text}");
        assert!(text.contains("      fix: mount -t bpf bpf /sys/fs/bpf"));
        assert!(text.contains("OK    xdp eth0: native XDP works"));
        let json: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(json["version"], 1);
        assert_eq!(json["summary"]["fail"], 1);
        let bpffs = &json["checks"][1];
        assert_eq!(bpffs["check"], "bpffs");
        assert_eq!(bpffs["status"], "fail");
        assert!(bpffs["subject"].is_null());
        assert!(bpffs["fix"][0].as_str().unwrap().contains("mount -t bpf"));
        let xdp = json["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["check"] == "xdp")
            .unwrap();
        assert_eq!(xdp["subject"], "eth0");
        assert_eq!(json["backend_setup"][0]["mode"], "dsr-l2");
    }

    #[test]
    fn no_interface_is_skipped_with_a_hint() {
        let f = HostFacts {
            ifaces: Vec::new(),
            ..healthy()
        };
        let r = judge(&f);
        let c = r.checks.iter().find(|c| c.check == "link").unwrap();
        assert_eq!(c.status, Status::Skip);
        assert_fix(c, "--iface eth0");
    }
}
