//! What doctor reads from the host: everything the judgement looks at, as plain data that tests
//! can build by hand.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config;
use crate::model::{Config, ForwardMode, XdpMode};

// Capability bits (linux/capability.h).
pub const CAP_NET_ADMIN: u32 = 12;
pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

/// What [`gather`](super::gather) read from the host; everything [`judge`](super::judge) looks at.
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
    /// BIRD, when the VIPs are announced through it; `None`: not checked.
    pub bird: Option<BirdFacts>,
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
    /// No `--config`, and no file at [`DEFAULT_CONFIG`](crate::paths::DEFAULT_CONFIG).
    NotGiven,
    Invalid {
        path: PathBuf,
        error: String,
    },
    Valid {
        path: PathBuf,
        // Boxed: a validated config is much larger than the other variants.
        validated: Box<config::Validated>,
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

    pub(super) fn describe(&self) -> String {
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
    /// `ethtool -i` driver (`ETHTOOL_GDRVINFO`).
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

/// How the program is attached: the netlink view, which names the modes the judgement speaks of.
pub use crate::netlink::XdpAttachMode as AttachMode;

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

/// What the BIRD checks expect: where BIRD listens, the kernel routing table and route
/// protocol number the agent writes the VIP routes with, and the VIP addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BirdExpectation {
    /// BIRD's control socket (`birdc -s`).
    pub socket: PathBuf,
    /// The kernel routing table the agent writes the VIP routes into.
    pub table: u32,
    /// The route protocol number of those routes (BIRD shows it as `Kernel.source`).
    pub protocol: u8,
    /// Every VIP address of the config.
    pub vips: Vec<IpAddr>,
    /// How long one `birdc` call may take before BIRD is reported stuck.
    pub timeout: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BirdFacts {
    pub expect: BirdExpectation,
    pub state: BirdState,
    /// The host routes of table `expect.table` with protocol `expect.protocol`, read through
    /// rtnetlink in doctor's network namespace: the VIP routes the agent announces now.
    pub kernel_routes: Result<Vec<IpAddr>, String>,
}

/// Whether `birdc` reached BIRD, and what BIRD said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BirdState {
    /// No `birdc` on PATH.
    NotInstalled,
    SocketMissing,
    PermissionDenied,
    /// The socket exists but nothing accepts on it (BIRD died without removing it).
    Refused,
    /// `birdc` did not finish within the timeout.
    Stuck,
    /// Anything else `birdc` failed with.
    Error(String),
    Running(BirdView),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BirdView {
    /// `BIRD 2.0.12`.
    pub version: String,
    /// The last line of `show status` (`Daemon is up and running`).
    pub status: String,
    /// `show protocols all`.
    pub protocols: Result<Vec<BirdProtocol>, String>,
    /// The routes BIRD learned from the kernel with `Kernel.source` = the expected protocol.
    pub learned: Result<Vec<BirdRoute>, String>,
}

/// One protocol of `show protocols all`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BirdProtocol {
    pub name: String,
    /// `BGP`, `Kernel`, `Device`, `BFD`...
    pub proto: String,
    /// `up`, `start`, `down`...
    pub state: String,
    pub since: String,
    /// The Info column (for BGP: the session state and the last error).
    pub info: String,
    pub bgp: Option<BgpDetail>,
    pub channels: Vec<BirdChannel>,
}

impl BirdProtocol {
    pub fn is_bgp(&self) -> bool {
        self.proto == "BGP"
    }
    pub fn is_kernel(&self) -> bool {
        self.proto == "Kernel"
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BgpDetail {
    /// `Established`, `Active`, `Connect`, `Idle`, `Down`...
    pub state: String,
    pub neighbor_address: Option<String>,
    pub neighbor_as: Option<u32>,
    pub local_as: Option<u32>,
    pub last_error: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BirdChannel {
    /// `ipv4`, `ipv6`.
    pub family: String,
    /// `UP`, `DOWN`...
    pub state: String,
    pub imported: Option<u32>,
    pub exported: Option<u32>,
}

/// One route of `show route`: its network and the protocol that brought it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BirdRoute {
    pub addr: IpAddr,
    pub prefix_len: u8,
    pub protocol: String,
}

/// Names of the capabilities the agent needs that `caps` lacks: (fatal, degrading).
pub(super) fn missing_caps(caps: Caps) -> (Vec<&'static str>, Vec<&'static str>) {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
