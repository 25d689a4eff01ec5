//! The validated configuration: what the agent makes true. Produced only by `config::validate`,
//! so every value here has passed its checks (address families agree, weights in range, no
//! duplicate VIPs...). Collections are sorted, so two equal configs compare and iterate equal.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use lb_common::addr::from_words;
use lb_common::addr::{PROTO_TCP, PROTO_UDP};
use lb_common::values::{
    BACKEND_ACTIVE, BACKEND_DOWN, BACKEND_DRAINING, BACKEND_EMPTY, MODE_DSR_L2, MODE_GUE,
    MODE_IPIP, VIP_F_FRAG_ONLY,
};
use lb_common::{VipKey, VipMeta};
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
    /// TTL / hop limit of the outer IP header of encapsulated packets.
    pub outer_ttl: u8,
    /// A UDP flow silent this long leaves the flow table's entry and follows the ring again.
    pub udp_idle_timeout: Duration,
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
    /// `[announce]` when enabled: VIP routes in a kernel table for a BGP speaker.
    pub announce: Option<AnnounceConfig>,
    /// `[continuity]` when enabled: flows kept on their backend across LB nodes.
    pub continuity: Option<ContinuityConfig>,
}

/// `[announce]`: one route per VIP address in kernel table `table` with route protocol
/// `protocol`, for BIRD's `kernel` protocol to learn and export over BGP.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AnnounceConfig {
    pub table: u32,
    pub protocol: u8,
    /// Backends in the ring a VIP needs to be announced (a VIP's own `min_healthy` wins).
    pub min_healthy: u32,
    /// A route changes state at most once per hold-down.
    pub hold_down: Duration,
    /// `xlb stop --detach` waits this long between withdrawing and detaching.
    pub withdraw_grace: Duration,
    /// A draining node reports "drained" once no VIP packet arrived for this long.
    pub drain_quiet: Duration,
    /// BIRD's control socket, for `xlb doctor`.
    pub bird_socket: PathBuf,
}

/// `[continuity]`: this node sends the flows that no longer follow its ring (exceptions) to
/// `peers`, and installs theirs, so a flow keeps its backend when the routers move it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ContinuityConfig {
    /// The peer listener: one specific address of this node, never a wildcard.
    pub listen: SocketAddr,
    /// Every other LB node's listener. Connections from other addresses are refused.
    pub peers: Vec<SocketAddr>,
    /// The pre-shared key (read at start and on reload).
    pub key_file: PathBuf,
    /// The full exception set is sent again this often (and at once after a ring change).
    pub refresh: Duration,
    /// How long the exceptions of a peer that stopped sending are kept.
    pub hold: Duration,
    /// Capacity of the peer-exception table, in flows.
    pub max_exceptions: u32,
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
    /// The protocol of an IP protocol number, if it is one a VIP can have.
    pub const fn from_number(n: u8) -> Option<Proto> {
        match n {
            PROTO_TCP => Some(Proto::Tcp),
            PROTO_UDP => Some(Proto::Udp),
            _ => None,
        }
    }
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

impl VipId {
    /// This VIP's key in the VIP map.
    pub fn map_key(&self) -> VipKey {
        VipKey::of(self.addr, self.port, self.proto.number())
    }
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

impl VipId {
    /// The VIP a VIP-map entry stands for; `None` for address entries and fragment aliases
    /// (see `lb_common::keys::VipKey`).
    pub fn from_map_entry(key: &VipKey, meta: &VipMeta) -> Option<VipId> {
        if key.proto == 0 || meta.flags & VIP_F_FRAG_ONLY != 0 {
            return None;
        }
        Some(VipId {
            addr: from_words(key.family, &key.addr)?,
            port: u16::from_be(key.port),
            proto: Proto::from_number(key.proto)?,
        })
    }
}

/// Why a string is not a VIP identity (see [`VipId`]'s `FromStr`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid VIP {input:?}: {reason} (expected like tcp/192.0.2.10:80, udp/[2001:db8::1]:53, tcp/192.0.2.10:*)"
)]
pub struct ParseVipIdError {
    pub input: String,
    pub reason: String,
}

impl std::str::FromStr for VipId {
    type Err = ParseVipIdError;

    /// The inverse of `Display`: `tcp/192.0.2.10:80`, `udp/[2001:db8::1]:53`; the port `*` or
    /// `0` means all ports. IPv6 addresses need their brackets.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: &str| ParseVipIdError {
            input: s.to_string(),
            reason: reason.to_string(),
        };
        let (proto, rest) = s
            .split_once('/')
            .ok_or_else(|| err("missing the protocol (tcp/ or udp/)"))?;
        let proto = match proto.to_ascii_lowercase().as_str() {
            "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            _ => return Err(err("protocol must be tcp or udp")),
        };
        let (addr, port): (IpAddr, &str) = if let Some(v6) = rest.strip_prefix('[') {
            let (addr, port) = v6
                .split_once(']')
                .ok_or_else(|| err("unclosed [ around the IPv6 address"))?;
            let port = port
                .strip_prefix(':')
                .ok_or_else(|| err("missing the port (:53, or :* for all ports)"))?;
            let addr = addr.parse().map_err(|_| err("not an IPv6 address"))?;
            (IpAddr::V6(addr), port)
        } else {
            let (addr, port) = rest
                .split_once(':')
                .ok_or_else(|| err("missing the port (:80, or :* for all ports)"))?;
            if port.contains(':') {
                return Err(err("an IPv6 address needs brackets: [2001:db8::1]:53"));
            }
            let addr = addr.parse().map_err(|_| err("not an IPv4 address"))?;
            (IpAddr::V4(addr), port)
        };
        let port = match port {
            "*" => 0,
            p => p
                .parse::<u16>()
                .map_err(|_| err("port must be 0..=65535 or *"))?,
        };
        Ok(VipId { addr, port, proto })
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
    /// The mode of a `VipMeta::mode` value.
    pub const fn from_number(n: u8) -> Option<ForwardMode> {
        match n {
            MODE_IPIP => Some(ForwardMode::Ipip),
            MODE_GUE => Some(ForwardMode::Gue),
            MODE_DSR_L2 => Some(ForwardMode::DsrL2),
            _ => None,
        }
    }
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
    /// The name of a `VipMeta::mode` value as the maps hold it; `unknown(N)` for a number no
    /// mode has (a map written by another version).
    pub fn name_of_number(n: u8) -> String {
        ForwardMode::from_number(n).map_or_else(|| format!("unknown({n})"), |m| m.name().into())
    }
}

/// The state of a backend-map entry (`Backend::state`), as status, inspect and metrics name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendState {
    /// A zeroed entry: no backend.
    Empty,
    /// In the ring: gets new flows.
    Active,
    /// Out of the ring; flows already pinned to it stay.
    Draining,
    /// Out of the ring; its flows re-hash.
    Down,
}

impl BackendState {
    pub const fn from_number(n: u8) -> Option<BackendState> {
        match n {
            BACKEND_EMPTY => Some(BackendState::Empty),
            BACKEND_ACTIVE => Some(BackendState::Active),
            BACKEND_DRAINING => Some(BackendState::Draining),
            BACKEND_DOWN => Some(BackendState::Down),
            _ => None,
        }
    }
    pub const fn name(self) -> &'static str {
        match self {
            BackendState::Empty => "empty",
            BackendState::Active => "active",
            BackendState::Draining => "draining",
            BackendState::Down => "down",
        }
    }
    /// The name of a state number as the maps hold it; `unknown(N)` for one no state has.
    pub fn name_of_number(n: u8) -> String {
        BackendState::from_number(n).map_or_else(|| format!("unknown({n})"), |s| s.name().into())
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
    /// Overrides `AnnounceConfig::min_healthy` for this VIP.
    pub min_healthy: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BackendSpec {
    pub addr: IpAddr,
    /// 0..=MAX_WEIGHT; 0 = drained (no new flows, existing ones kept).
    pub weight: u32,
    /// Port the health check probes; `None` = the VIP's port (config validation copies a
    /// check-level port into every backend that has none).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vip_id_parses_and_round_trips_through_display() {
        for (text, shown) in [
            ("tcp/192.0.2.10:80", "tcp/192.0.2.10:80"),
            ("udp/[2001:db8::1]:53", "udp/[2001:db8::1]:53"),
            ("tcp/192.0.2.10:*", "tcp/192.0.2.10:*"),
            ("udp/192.0.2.10:0", "udp/192.0.2.10:*"),
            ("TCP/[2001:db8::10]:*", "tcp/[2001:db8::10]:*"),
        ] {
            let id: VipId = text.parse().unwrap();
            assert_eq!(id.to_string(), shown);
            assert_eq!(shown.parse::<VipId>().unwrap(), id);
        }
        let id: VipId = "udp/[2001:db8::1]:53".parse().unwrap();
        assert_eq!(
            id,
            VipId {
                addr: "2001:db8::1".parse().unwrap(),
                port: 53,
                proto: Proto::Udp,
            }
        );
    }

    #[test]
    fn vip_id_parse_errors_say_what_is_wrong() {
        for (text, reason) in [
            ("192.0.2.10:80", "missing the protocol"),
            ("sctp/192.0.2.10:80", "tcp or udp"),
            ("tcp/192.0.2.10", "missing the port"),
            ("tcp/192.0.2.300:80", "not an IPv4 address"),
            ("tcp/2001:db8::1:53", "needs brackets"),
            ("tcp/[2001:db8::1:53", "unclosed ["),
            ("tcp/[2001:zz8::1]:53", "not an IPv6 address"),
            ("udp/[2001:db8::1]", "missing the port"),
            ("tcp/192.0.2.10:65536", "port must be"),
            ("tcp/192.0.2.10:", "port must be"),
        ] {
            let e = text.parse::<VipId>().unwrap_err();
            assert!(e.reason.contains(reason), "{text}: {e}");
            assert!(e.to_string().contains(text), "{e}");
        }
    }
}
