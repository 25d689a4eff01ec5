//! The validated configuration: what the agent makes true. Produced only by `config::validate`,
//! so every value here has passed its checks (address families agree, weights in range, no
//! duplicate VIPs...). Collections are sorted, so two equal configs compare and iterate equal.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use lb_common::addr::{PROTO_TCP, PROTO_UDP};
use lb_common::values::{MODE_DSR_L2, MODE_GUE, MODE_IPIP};
use serde::Serialize;

/// Largest backend weight. Maglev shares are relative; the cap keeps one typo (an extra zero)
/// from starving every other backend of slots.
pub const MAX_WEIGHT: u32 = 10_000;

/// Everything the agent runs from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Config {
    /// Interfaces the LB program is attached to (ingress of VIP traffic, egress via XDP_TX).
    pub interfaces: Vec<Interface>,
    /// Outer source address of IPv4 encapsulation; required if any IPv4 backend is tunnelled to.
    pub lb_src_v4: Option<Ipv4Addr>,
    /// Outer source address of IPv6 encapsulation; required if any IPv6 backend is tunnelled to.
    pub lb_src_v6: Option<Ipv6Addr>,
    /// Seed of the flow hash; the same on every LB node that shares this config.
    pub hash_seed: u32,
    /// Flow-table entries.
    pub flow_table_size: u32,
    /// VIP index space (sizes the ring map: `max_vips * RING_SIZE` entries).
    pub max_vips: u32,
    /// Backend id space (all VIPs together).
    pub max_backends: u32,
    /// GUE destination port.
    pub gue_port: u16,
    /// Egress L3 MTU for the too-big check; `None` = read the interface's MTU.
    pub mtu: Option<u16>,
    /// Generated ICMP errors per second per CPU, and the burst.
    pub icmp_rate: u32,
    pub icmp_burst: u32,
    /// Directory under bpffs where maps and the XDP link are pinned.
    pub pin_dir: PathBuf,
    /// Unix socket of the control API (mode 0600).
    pub api_socket: PathBuf,
    /// Prometheus listen address; `None` disables the endpoint.
    pub metrics_listen: Option<SocketAddr>,
    /// Detach and unpin on exit instead of leaving forwarding running.
    pub detach_on_exit: bool,
    /// Sorted by `VipId`.
    pub vips: Vec<Vip>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Interface {
    pub name: String,
    pub xdp_mode: XdpMode,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum XdpMode {
    /// Native (driver) mode, falling back to generic (skb) mode with a warning.
    Auto,
    Native,
    Generic,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub const fn number(self) -> u8 {
        match self {
            Proto::Tcp => PROTO_TCP,
            Proto::Udp => PROTO_UDP,
        }
    }
    pub const fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// A VIP's identity: what the XDP program looks up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct VipId {
    pub addr: IpAddr,
    /// 0 = all ports.
    pub port: u16,
    pub proto: Proto,
}

impl fmt::Display for VipId {
    /// `tcp/192.0.2.10:80`, `udp/[2001:db8::10]:53`, port 0 shown as `*`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let port = if self.port == 0 {
            "*".to_string()
        } else {
            self.port.to_string()
        };
        match self.addr {
            IpAddr::V4(a) => write!(f, "{}/{}:{}", self.proto.name(), a, port),
            IpAddr::V6(a) => write!(f, "{}/[{}]:{}", self.proto.name(), a, port),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ForwardMode {
    Ipip,
    Gue,
    DsrL2,
}

impl ForwardMode {
    pub const fn number(self) -> u8 {
        match self {
            ForwardMode::Ipip => MODE_IPIP,
            ForwardMode::Gue => MODE_GUE,
            ForwardMode::DsrL2 => MODE_DSR_L2,
        }
    }
    pub const fn name(self) -> &'static str {
        match self {
            ForwardMode::Ipip => "ipip",
            ForwardMode::Gue => "gue",
            ForwardMode::DsrL2 => "dsr-l2",
        }
    }
}

/// What a VIP does with packets when no backend is available.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NoBackend {
    Drop,
    /// Hand them to the LB host's own stack.
    Pass,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Vip {
    pub id: VipId,
    pub mode: ForwardMode,
    /// Hash on the client address only.
    pub src_affinity: bool,
    /// Answer ICMP echo requests to this VIP's address in XDP.
    pub icmp_echo: bool,
    pub no_backend: NoBackend,
    pub health: HealthCheck,
    /// Sorted by address; addresses unique within the VIP.
    pub backends: Vec<BackendSpec>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BackendSpec {
    pub addr: IpAddr,
    /// 0..=MAX_WEIGHT; 0 = drained (no new flows, existing ones kept).
    pub weight: u32,
    /// Port the health check probes; `None` = the VIP's port (or the check's own port).
    pub check_port: Option<u16>,
}

/// A VIP's health check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HealthCheck {
    pub kind: CheckKind,
    /// Time between probes (default 2 s).
    pub interval: Duration,
    /// Probe timeout (default 1 s); always below `interval`.
    pub timeout: Duration,
    /// Consecutive successes that bring a down backend up (default 2).
    pub rise: u32,
    /// Consecutive failures that take an up backend down (default 3).
    pub fall: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    /// Backends are always considered up.
    None,
    /// A TCP connect succeeds.
    Tcp,
    /// An HTTP(S) GET returns `expect_status`.
    Http {
        path: String,
        expect_status: u16,
        tls: bool,
        /// Host header; `None` = the backend address.
        host: Option<String>,
    },
    /// A datagram is sent; if `expect` is set, the reply must start with it, otherwise any
    /// reply (and no ICMP port unreachable) within the timeout counts as up.
    Udp {
        send: Vec<u8>,
        expect: Option<Vec<u8>>,
    },
}

impl Config {
    /// The VIP with this identity.
    pub fn vip(&self, id: &VipId) -> Option<&Vip> {
        self.vips
            .binary_search_by(|v| v.id.cmp(id))
            .ok()
            .map(|i| &self.vips[i])
    }
}
