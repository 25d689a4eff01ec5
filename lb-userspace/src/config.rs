//! The configuration file: TOML text -> [`RawConfig`] (what the file says) -> [`Config`] (what
//! the agent runs), and the [`diff`] between two validated configs for reloads.
//!
//! - [`parse`] is TOML syntax and shape only. Unknown keys are errors (`deny_unknown_fields`
//!   everywhere), so a typo never silently falls back to a default. Those errors stop at the
//!   first one and keep toml's line/column snippet, prefixed by the field path (`vip[1].mode`).
//! - [`validate`] checks meaning and collects *every* problem into [`ConfigErrors`]; each
//!   [`ConfigError`] names the field path in the file's own terms (`vip[2].backend[1].weight`,
//!   indices counted from 0 in file order) and says what to do about it. Things that are legal
//!   but probably unintended (a VIP without backends) come back as [`Warning`]s next to the
//!   config in [`Validated`]. Validation is pure except for one question it asks the injected
//!   [`Environment`]: does this interface exist?
//! - [`load`] / [`load_str`] do both.
//!
//! The file format is documented key by key in `examples/xlb.toml` at the repository root.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use lb_common::limits::{DEFAULT_FLOW_TABLE_SIZE, DEFAULT_MAX_BACKENDS, DEFAULT_MAX_VIPS};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::model::{
    BackendSpec, CheckKind, Config, ForwardMode, HealthCheck, Interface, MAX_WEIGHT, NoBackend,
    Proto, Vip, VipId, XdpMode,
};

// ---------------------------------------------------------------------------------------------
// Defaults and limits (all documented in examples/xlb.toml)
// ---------------------------------------------------------------------------------------------

/// Default flow-hash seed: the bytes of "xlb!". Any fixed value works; what matters is that
/// every LB node sharing a config uses the same one.
pub const DEFAULT_HASH_SEED: u32 = 0x786c_6221;
/// Default GUE destination port (what `ip fou add port 6080 gue` listens on by convention).
pub const DEFAULT_GUE_PORT: u16 = 6080;
pub const DEFAULT_ICMP_RATE: u32 = 1000;
pub const DEFAULT_ICMP_BURST: u32 = 100;
/// TTL / hop limit of the outer header of encapsulated packets: xlb's own header, so not the
/// inner packet's (an inner TTL of 0 or 1 must not kill the tunnelled packet). 64 as Katran.
pub const DEFAULT_OUTER_TTL: u8 = 64;
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/xlb";
pub const DEFAULT_API_SOCKET: &str = "/run/xlb/xlb.sock";
/// Loopback only: the metrics endpoint has no authentication.
pub const DEFAULT_METRICS_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9477);
pub const DEFAULT_WEIGHT: u32 = 100;
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
pub const DEFAULT_RISE: u32 = 2;
pub const DEFAULT_FALL: u32 = 3;
pub const DEFAULT_HTTP_PATH: &str = "/";
pub const DEFAULT_EXPECT_STATUS: u16 = 200;

pub const FLOW_TABLE_SIZE_RANGE: (u64, u64) = (1024, 64 * 1024 * 1024);
/// The ring map holds `max_vips * RING_SIZE` u32 slots: 4096 VIPs is 1 GiB of ring.
pub const MAX_VIPS_RANGE: (u64, u64) = (1, 4096);
/// Backend map entries are 32 bytes; id 0 is reserved, so at least 2.
pub const MAX_BACKENDS_RANGE: (u64, u64) = (2, 1 << 20);
pub const MTU_RANGE: (u64, u64) = (576, 9216);
/// IPv6 links carry at least this much (RFC 8200); PMTU reports below it are ignored (RFC 8201).
pub const IPV6_MIN_MTU: u32 = 1280;
pub const ICMP_RATE_RANGE: (u64, u64) = (1, 1_000_000);
pub const ICMP_BURST_RANGE: (u64, u64) = (1, 1_000_000);
pub const OUTER_TTL_RANGE: (u64, u64) = (1, 255);
pub const RISE_FALL_RANGE: (u64, u64) = (1, 100);
pub const EXPECT_STATUS_RANGE: (u64, u64) = (100, 599);
pub const INTERVAL_RANGE: (Duration, Duration) =
    (Duration::from_millis(100), Duration::from_secs(3600));
/// Where bpffs is mounted; `pin-dir` must be below it.
pub const BPFFS_ROOT: &str = "/sys/fs/bpf";
/// `sizeof(sockaddr_un.sun_path)` minus the terminating NUL.
const MAX_UNIX_SOCKET_PATH: usize = 107;
/// `IFNAMSIZ` minus the terminating NUL.
const MAX_IFNAME_LEN: usize = 15;

// ---------------------------------------------------------------------------------------------
// Raw config: the file's shape
// ---------------------------------------------------------------------------------------------

/// The file as written. Optional keys are `Option`s here; defaults are applied by [`validate`],
/// so an error message can tell "you set this" from "the default".
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawConfig {
    #[serde(default)]
    pub agent: RawAgent,
    /// `[[vip]]` tables.
    #[serde(default)]
    pub vip: Vec<RawVip>,
}

/// `[agent]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawAgent {
    #[serde(default)]
    pub interfaces: Vec<RawInterface>,
    pub lb_src_v4: Option<String>,
    pub lb_src_v6: Option<String>,
    pub hash_seed: Option<u32>,
    pub flow_table_size: Option<u32>,
    pub max_vips: Option<u32>,
    pub max_backends: Option<u32>,
    pub gue_port: Option<u16>,
    pub mtu: Option<u32>,
    pub icmp_rate: Option<u32>,
    pub icmp_burst: Option<u32>,
    pub outer_ttl: Option<u32>,
    pub pin_dir: Option<String>,
    pub api_socket: Option<String>,
    pub metrics_listen: Option<String>,
    #[serde(default)]
    pub metrics_allow_remote: bool,
    #[serde(default)]
    pub detach_on_exit: bool,
}

/// An `interfaces` entry: `"eth0"` or `{ name = "eth0", xdp-mode = "native" }`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawInterface {
    pub name: String,
    pub xdp_mode: Option<RawXdpMode>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawInterfaceTable {
    name: String,
    xdp_mode: Option<RawXdpMode>,
}

impl<'de> Deserialize<'de> for RawInterface {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawInterface;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"an interface name ("eth0") or a table ({ name = "eth0", xdp-mode = "auto" })"#)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawInterface, E> {
                Ok(RawInterface {
                    name: v.to_owned(),
                    xdp_mode: None,
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawInterface, A::Error> {
                let t = RawInterfaceTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(RawInterface {
                    name: t.name,
                    xdp_mode: t.xdp_mode,
                })
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RawXdpMode {
    Auto,
    Native,
    Generic,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RawProto {
    Tcp,
    Udp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RawMode {
    Ipip,
    Gue,
    DsrL2,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RawNoBackend {
    Drop,
    Pass,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RawCheckKind {
    None,
    Tcp,
    Http,
    Https,
    Udp,
}

impl RawCheckKind {
    const fn name(self) -> &'static str {
        match self {
            RawCheckKind::None => "none",
            RawCheckKind::Tcp => "tcp",
            RawCheckKind::Http => "http",
            RawCheckKind::Https => "https",
            RawCheckKind::Udp => "udp",
        }
    }
}

/// `[[vip]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawVip {
    pub address: String,
    pub port: u16,
    pub protocol: RawProto,
    pub mode: RawMode,
    #[serde(default)]
    pub source_affinity: bool,
    pub icmp_echo: Option<bool>,
    pub no_backend: Option<RawNoBackend>,
    pub health: Option<RawHealth>,
    /// `[[vip.backend]]` tables.
    #[serde(default)]
    pub backend: Vec<RawBackend>,
}

/// `[vip.health]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawHealth {
    pub kind: RawCheckKind,
    pub path: Option<String>,
    pub expect_status: Option<u16>,
    pub host: Option<String>,
    pub send: Option<String>,
    pub send_hex: Option<String>,
    pub expect: Option<String>,
    pub expect_hex: Option<String>,
    pub port: Option<u16>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub rise: Option<u32>,
    pub fall: Option<u32>,
}

/// `[[vip.backend]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawBackend {
    pub address: String,
    pub weight: Option<u32>,
    pub check_port: Option<u16>,
}

// ---------------------------------------------------------------------------------------------
// Errors and warnings
// ---------------------------------------------------------------------------------------------

/// One problem with the configuration. `Display` is `path: what is wrong: what to do`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read: {source}", file.display())]
    Read {
        file: PathBuf,
        #[source]
        source: io::Error,
    },
    /// TOML syntax or shape (unknown key, wrong type, unknown enum value, missing key). `path`
    /// is empty for pure syntax errors; `error` carries toml's line/column snippet.
    #[error("{}", syntax_message(path, error))]
    Syntax {
        path: String,
        #[source]
        error: toml::de::Error,
    },
    #[error("{path}: {value} is out of range: use {min}..={max}{hint}")]
    OutOfRange {
        path: String,
        value: u64,
        min: u64,
        max: u64,
        /// Extra advice, with its leading punctuation (` (0 drains the backend)`), or empty.
        hint: &'static str,
    },
    #[error(
        "{path}: {value:?} is not an IP address: write e.g. \"192.0.2.10\" or \"2001:db8::10\""
    )]
    InvalidAddress { path: String, value: String },
    #[error("{path}: {addr} is {what} address, which cannot be {role}: use a unicast address")]
    NotUnicast {
        path: String,
        addr: IpAddr,
        /// "the unspecified", "a multicast", "the broadcast", "a loopback".
        what: &'static str,
        /// "a VIP", "a backend", "a tunnel source".
        role: &'static str,
    },
    #[error("{path}: {addr} is not an {expected} address: {hint}")]
    WrongFamily {
        path: String,
        addr: IpAddr,
        expected: &'static str,
        hint: &'static str,
    },
    #[error("{path}: no interface configured: add one, e.g. interfaces = [\"eth0\"]")]
    NoInterface { path: String },
    #[error("{path}: {name:?} is not a valid interface name: {reason}")]
    InvalidInterfaceName {
        path: String,
        name: String,
        reason: &'static str,
    },
    #[error("{path}: interface {name:?} is already listed at {first}: list each interface once")]
    DuplicateInterface {
        path: String,
        name: String,
        first: String,
    },
    #[error(
        "{path}: interface {name:?} does not exist in the agent's network namespace: check `ip link` (names are case-sensitive)"
    )]
    InterfaceNotFound { path: String, name: String },
    #[error(
        "{path}: {id} is already defined at {first}: remove one, or change its address, port or protocol"
    )]
    DuplicateVip {
        path: String,
        id: VipId,
        first: String,
    },
    #[error(
        "{path}: backend {addr} is already listed at {first}: list each backend once per VIP (raise its weight for more traffic)"
    )]
    DuplicateBackend {
        path: String,
        addr: IpAddr,
        first: String,
    },
    #[error("{}", family_message(path, vip, *mode, backend))]
    UnsupportedBackendFamily {
        path: String,
        vip: VipId,
        mode: ForwardMode,
        backend: IpAddr,
    },
    #[error(
        "{path}: required because {used_by} is tunnelled to over {family}{}: set it to an {family} address of this host that the backends accept as a packet source",
        more_suffix(*more)
    )]
    MissingLbSrc {
        path: String,
        family: &'static str,
        /// Path of the first backend that needs it.
        used_by: String,
        /// How many more backends need it.
        more: usize,
    },
    #[error(
        "{path}: {count} VIPs configured but agent.max-vips is {max}: raise agent.max-vips (at most {}) or remove VIPs",
        MAX_VIPS_RANGE.1
    )]
    TooManyVips {
        path: String,
        count: usize,
        max: u32,
    },
    #[error(
        "{path}: {max} allows {} backends (id 0 is reserved) but {count} are configured over all VIPs: raise it to at least {}",
        max.saturating_sub(1),
        count + 1
    )]
    TooManyBackends {
        path: String,
        count: usize,
        max: u32,
    },
    #[error(
        "{path}: {value:?} is not a duration: {reason} (write e.g. \"500ms\", \"2s\", \"1.5s\", \"1m\")"
    )]
    InvalidDuration {
        path: String,
        value: String,
        reason: &'static str,
    },
    #[error(
        "{path}: {} is out of range: use {}..={}",
        fmt_duration(*value),
        fmt_duration(INTERVAL_RANGE.0),
        fmt_duration(INTERVAL_RANGE.1)
    )]
    IntervalOutOfRange { path: String, value: Duration },
    #[error(
        "{path}: timeout {}{} must be shorter than interval {}{}: lower timeout or raise interval",
        fmt_duration(*timeout),
        default_suffix(*timeout_is_default),
        fmt_duration(*interval),
        default_suffix(*interval_is_default)
    )]
    TimeoutNotBelowInterval {
        path: String,
        timeout: Duration,
        interval: Duration,
        timeout_is_default: bool,
        interval_is_default: bool,
    },
    #[error(
        "{path}: only {used_by} checks use this key, but kind is {kind:?}: remove it or change kind"
    )]
    FieldNotForKind {
        path: String,
        kind: &'static str,
        used_by: &'static str,
    },
    #[error("{path}: {what}")]
    MissingField { path: String, what: &'static str },
    #[error("{path}: conflicts with {other}: set only one of them")]
    ConflictingFields { path: String, other: String },
    #[error("{path}: not hex bytes: {reason} (write e.g. \"0a1bff\")")]
    InvalidHex { path: String, reason: &'static str },
    #[error("{path}: {value:?} {reason}")]
    InvalidText {
        path: String,
        value: String,
        reason: &'static str,
    },
    #[error(
        "{path}: {vip} listens on all ports (port 0), so the {kind} check has no port to probe on {}: set health.port, or check-port on each backend",
        list_addrs(backends)
    )]
    NothingToProbe {
        path: String,
        vip: VipId,
        kind: &'static str,
        backends: Vec<IpAddr>,
    },
    #[error("{path}: {mtu} is too small: {reason}: use at least {need}")]
    MtuTooSmall {
        path: String,
        mtu: u32,
        need: u32,
        reason: String,
    },
    #[error("{path}: {value:?} {reason}")]
    InvalidPath {
        path: String,
        value: String,
        reason: &'static str,
    },
    #[error(
        "{path}: {value:?} is not an address:port: write e.g. \"127.0.0.1:9477\" or \"[::1]:9477\", or \"off\" to disable"
    )]
    InvalidSocketAddr { path: String, value: String },
    #[error(
        "{path}: {addr} is not a loopback address and the metrics endpoint has no authentication: listen on 127.0.0.1 or [::1], or set agent.metrics-allow-remote = true to expose it deliberately"
    )]
    RemoteMetrics { path: String, addr: SocketAddr },
}

impl ConfigError {
    /// The field path the error is about (`vip[2].backend[1].weight`, `agent.mtu`); empty for
    /// read errors and for TOML syntax errors that are not about one field.
    pub fn path(&self) -> &str {
        use ConfigError::*;
        match self {
            Read { .. } => "",
            Syntax { path, .. }
            | OutOfRange { path, .. }
            | InvalidAddress { path, .. }
            | NotUnicast { path, .. }
            | WrongFamily { path, .. }
            | NoInterface { path }
            | InvalidInterfaceName { path, .. }
            | DuplicateInterface { path, .. }
            | InterfaceNotFound { path, .. }
            | DuplicateVip { path, .. }
            | DuplicateBackend { path, .. }
            | UnsupportedBackendFamily { path, .. }
            | MissingLbSrc { path, .. }
            | TooManyVips { path, .. }
            | TooManyBackends { path, .. }
            | InvalidDuration { path, .. }
            | IntervalOutOfRange { path, .. }
            | TimeoutNotBelowInterval { path, .. }
            | FieldNotForKind { path, .. }
            | MissingField { path, .. }
            | ConflictingFields { path, .. }
            | InvalidHex { path, .. }
            | InvalidText { path, .. }
            | NothingToProbe { path, .. }
            | MtuTooSmall { path, .. }
            | InvalidPath { path, .. }
            | InvalidSocketAddr { path, .. }
            | RemoteMetrics { path, .. } => path,
        }
    }
}

fn syntax_message(path: &str, error: &toml::de::Error) -> String {
    let msg = error.to_string();
    let msg = msg.trim_end();
    if path.is_empty() {
        msg.to_owned()
    } else {
        format!("{path}: {msg}")
    }
}

fn family_message(path: &str, vip: &VipId, mode: ForwardMode, backend: &IpAddr) -> String {
    match mode {
        ForwardMode::DsrL2 => format!(
            "{path}: dsr-l2 delivers packets unchanged on the local L2 segment, so backend \
             {backend} must be {} like VIP {vip}: use a backend address of that family, or a \
             tunnel mode (ipip/gue)",
            family_name(&vip.addr)
        ),
        ForwardMode::Ipip | ForwardMode::Gue => format!(
            "{path}: {} cannot carry IPv6 VIP {vip} to IPv4 backend {backend} (IPv6 in IPv4 is \
             unsupported): use an IPv6 backend address",
            mode.name()
        ),
    }
}

fn more_suffix(more: usize) -> String {
    match more {
        0 => String::new(),
        n => format!(" (and {n} more backend{})", if n == 1 { "" } else { "s" }),
    }
}

fn default_suffix(is_default: bool) -> &'static str {
    if is_default { " (default)" } else { "" }
}

fn list_addrs(addrs: &[IpAddr]) -> String {
    const SHOWN: usize = 5;
    let mut s = addrs
        .iter()
        .take(SHOWN)
        .map(IpAddr::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    if addrs.len() > SHOWN {
        s.push_str(&format!(" and {} more", addrs.len() - SHOWN));
    }
    format!("backend{} {s}", if addrs.len() == 1 { "" } else { "s" })
}

const fn family_name(addr: &IpAddr) -> &'static str {
    match addr {
        IpAddr::V4(_) => "IPv4",
        IpAddr::V6(_) => "IPv6",
    }
}

/// Every problem found, in file order (agent first, then VIPs, then cross-VIP limits).
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.0.iter()
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        ConfigErrors(vec![e])
    }
}

impl fmt::Display for ConfigErrors {
    /// One error: its message. Several: a count, then one indented entry each.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_slice() {
            [one] => write!(f, "{one}"),
            all => {
                write!(f, "{} configuration errors:", all.len())?;
                for e in all {
                    let msg = e.to_string();
                    let mut lines = msg.lines();
                    if let Some(first) = lines.next() {
                        write!(f, "\n  - {first}")?;
                    }
                    for line in lines {
                        write!(f, "\n    {line}")?;
                    }
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ConfigErrors {}

/// Legal but probably unintended; the agent logs these and runs anyway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// A config that passed validation, with the warnings found on the way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validated {
    pub config: Config,
    pub warnings: Vec<Warning>,
}

// ---------------------------------------------------------------------------------------------
// Environment: the one outside fact validation asks for
// ---------------------------------------------------------------------------------------------

/// What validation asks of the host. Tests pass a closure (`&|name: &str| name == "eth0"`).
pub trait Environment {
    fn interface_exists(&self, name: &str) -> bool;
}

impl<F: Fn(&str) -> bool> Environment for F {
    fn interface_exists(&self, name: &str) -> bool {
        self(name)
    }
}

/// The real host: an interface exists if `/sys/class/net/<name>` does. sysfs shows the network
/// namespace of the process that *mounted* it (normally the one the agent runs in), so checking
/// from another namespace, or in a container with the host's /sys, can answer for the wrong
/// set of interfaces.
#[derive(Clone, Copy, Debug, Default)]
pub struct HostEnvironment;

impl Environment for HostEnvironment {
    fn interface_exists(&self, name: &str) -> bool {
        // Only called with names that passed `check_ifname` (no '/', not "." or "..").
        Path::new("/sys/class/net").join(name).exists()
    }
}

// ---------------------------------------------------------------------------------------------
// Entry points
// ---------------------------------------------------------------------------------------------

/// TOML text -> [`RawConfig`]. Stops at the first syntax/shape error, which keeps toml's
/// line/column snippet and gains the field path where there is one.
pub fn parse(text: &str) -> Result<RawConfig, ConfigError> {
    let de = toml::Deserializer::parse(text).map_err(|error| ConfigError::Syntax {
        path: String::new(),
        error,
    })?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        ConfigError::Syntax {
            // serde_path_to_error shows the root as ".".
            path: if path == "." { String::new() } else { path },
            error: e.into_inner(),
        }
    })
}

/// Parse and validate TOML text.
pub fn load_str(text: &str, env: &dyn Environment) -> Result<Validated, ConfigErrors> {
    validate(parse(text)?, env)
}

/// Read, parse and validate a config file.
pub fn load(path: &Path, env: &dyn Environment) -> Result<Validated, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: path.to_owned(),
        source,
    })?;
    load_str(&text, env)
}

/// [`RawConfig`] -> [`Config`]: applies defaults, checks every rule, and returns all errors
/// found, or the config (VIPs sorted by [`VipId`], backends by address) and its warnings.
pub fn validate(raw: RawConfig, env: &dyn Environment) -> Result<Validated, ConfigErrors> {
    let mut v = Validator {
        env,
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    let config = v.config(raw);
    if v.errors.is_empty() {
        Ok(Validated {
            config,
            warnings: v.warnings,
        })
    } else {
        Err(ConfigErrors(v.errors))
    }
}

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

struct Validator<'e> {
    env: &'e dyn Environment,
    errors: Vec<ConfigError>,
    warnings: Vec<Warning>,
}

/// A backend that is tunnelled to, remembered for the `lb-src-*` check.
struct TunnelUse {
    path: String,
    v6: bool,
}

impl Validator<'_> {
    fn err(&mut self, e: ConfigError) {
        self.errors.push(e);
    }

    fn warn(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(Warning {
            path: path.into(),
            message: message.into(),
        });
    }

    /// `value` if in `min..=max`; otherwise records an error and returns `fallback` so
    /// validation can go on.
    fn range(
        &mut self,
        path: &str,
        value: u32,
        (min, max): (u64, u64),
        hint: &'static str,
    ) -> Option<u32> {
        if (min..=max).contains(&u64::from(value)) {
            Some(value)
        } else {
            self.err(ConfigError::OutOfRange {
                path: path.to_owned(),
                value: value.into(),
                min,
                max,
                hint,
            });
            None
        }
    }

    fn config(&mut self, raw: RawConfig) -> Config {
        let a = raw.agent;

        let interfaces = self.interfaces(&a.interfaces);
        let lb_src_v4 = a.lb_src_v4.as_deref().and_then(|s| {
            match self.unicast("agent.lb-src-v4", s, "a tunnel source")? {
                IpAddr::V4(v4) => Some(v4),
                addr @ IpAddr::V6(_) => {
                    self.err(ConfigError::WrongFamily {
                        path: "agent.lb-src-v4".into(),
                        addr,
                        expected: "IPv4",
                        hint: "put IPv6 tunnel sources in lb-src-v6",
                    });
                    None
                }
            }
        });
        let lb_src_v6 = a.lb_src_v6.as_deref().and_then(|s| {
            match self.unicast("agent.lb-src-v6", s, "a tunnel source")? {
                IpAddr::V6(v6) => Some(v6),
                addr @ IpAddr::V4(_) => {
                    self.err(ConfigError::WrongFamily {
                        path: "agent.lb-src-v6".into(),
                        addr,
                        expected: "IPv6",
                        hint: "put IPv4 tunnel sources in lb-src-v4",
                    });
                    None
                }
            }
        });
        let flow_table_size = self
            .range(
                "agent.flow-table-size",
                a.flow_table_size.unwrap_or(DEFAULT_FLOW_TABLE_SIZE),
                FLOW_TABLE_SIZE_RANGE,
                "",
            )
            .unwrap_or(DEFAULT_FLOW_TABLE_SIZE);
        let max_vips = self.range(
            "agent.max-vips",
            a.max_vips.unwrap_or(DEFAULT_MAX_VIPS),
            MAX_VIPS_RANGE,
            "",
        );
        let max_backends = self.range(
            "agent.max-backends",
            a.max_backends.unwrap_or(DEFAULT_MAX_BACKENDS),
            MAX_BACKENDS_RANGE,
            " (id 0 is reserved, so at least 2)",
        );
        let gue_port = a.gue_port.unwrap_or(DEFAULT_GUE_PORT);
        if gue_port == 0 {
            self.range("agent.gue-port", 0, (1, 65535), "");
        }
        let mtu = a
            .mtu
            .and_then(|m| self.range("agent.mtu", m, MTU_RANGE, ""));
        let icmp_rate = self
            .range(
                "agent.icmp-rate",
                a.icmp_rate.unwrap_or(DEFAULT_ICMP_RATE),
                ICMP_RATE_RANGE,
                " (ICMP errors per second per CPU)",
            )
            .unwrap_or(DEFAULT_ICMP_RATE);
        let icmp_burst = self
            .range(
                "agent.icmp-burst",
                a.icmp_burst.unwrap_or(DEFAULT_ICMP_BURST),
                ICMP_BURST_RANGE,
                "",
            )
            .unwrap_or(DEFAULT_ICMP_BURST);
        let outer_ttl = a
            .outer_ttl
            .and_then(|t| self.range("agent.outer-ttl", t, OUTER_TTL_RANGE, ""))
            // In 1..=255 when set, so it fits.
            .map_or(DEFAULT_OUTER_TTL, |t| t as u8);
        let pin_dir = self.pin_dir(a.pin_dir.as_deref().unwrap_or(DEFAULT_PIN_DIR));
        let api_socket = self.api_socket(a.api_socket.as_deref().unwrap_or(DEFAULT_API_SOCKET));
        let metrics_listen = self.metrics(a.metrics_listen.as_deref(), a.metrics_allow_remote);

        // VIPs.
        // (index in the file, VIP); VIPs whose address did not parse are left out.
        let mut vips: Vec<(usize, Vip)> = Vec::with_capacity(raw.vip.len());
        let mut seen: HashMap<VipId, usize> = HashMap::new();
        let mut tunnels = Vec::new();
        let mut total_backends = 0usize;
        for (i, rv) in raw.vip.iter().enumerate() {
            total_backends += rv.backend.len();
            if let Some(vip) = self.vip(i, rv, &mut tunnels) {
                if let Some(&first) = seen.get(&vip.id) {
                    self.err(ConfigError::DuplicateVip {
                        path: format!("vip[{i}]"),
                        id: vip.id,
                        first: format!("vip[{first}]"),
                    });
                } else {
                    seen.insert(vip.id, i);
                }
                vips.push((i, vip));
            }
        }
        if raw.vip.is_empty() {
            self.warn("vip", "no VIPs configured: the agent will forward nothing");
        }

        // Cross-VIP limits.
        if let Some(max) = max_vips
            && raw.vip.len() > max as usize
        {
            self.err(ConfigError::TooManyVips {
                path: "vip".into(),
                count: raw.vip.len(),
                max,
            });
        }
        if let Some(max) = max_backends
            && total_backends > (max - 1) as usize
        {
            self.err(ConfigError::TooManyBackends {
                path: "agent.max-backends".into(),
                count: total_backends,
                max,
            });
        }
        for (v6, family, path, have) in [
            (false, "IPv4", "agent.lb-src-v4", a.lb_src_v4.is_some()),
            (true, "IPv6", "agent.lb-src-v6", a.lb_src_v6.is_some()),
        ] {
            let mut users = tunnels.iter().filter(|t| t.v6 == v6);
            // `have` rather than the parsed value: a malformed address already has its error.
            if !have && let Some(first) = users.next() {
                self.err(ConfigError::MissingLbSrc {
                    path: path.into(),
                    family,
                    used_by: first.path.clone(),
                    more: users.count(),
                });
            }
        }
        if let Some(mtu) = mtu {
            self.mtu_vs_ipv6(mtu, &vips);
        }

        let mut vips: Vec<Vip> = vips.into_iter().map(|(_, v)| v).collect();
        vips.sort_by_key(|v| v.id);
        Config {
            interfaces,
            lb_src_v4,
            lb_src_v6,
            hash_seed: a.hash_seed.unwrap_or(DEFAULT_HASH_SEED),
            flow_table_size,
            max_vips: max_vips.unwrap_or(DEFAULT_MAX_VIPS),
            max_backends: max_backends.unwrap_or(DEFAULT_MAX_BACKENDS),
            gue_port,
            // In 576..=9216 when set, so it fits.
            mtu: mtu.map(|m| m as u16),
            icmp_rate,
            icmp_burst,
            outer_ttl,
            pin_dir,
            api_socket,
            metrics_listen,
            detach_on_exit: a.detach_on_exit,
            vips,
        }
    }

    fn interfaces(&mut self, raw: &[RawInterface]) -> Vec<Interface> {
        if raw.is_empty() {
            self.err(ConfigError::NoInterface {
                path: "agent.interfaces".into(),
            });
        }
        let mut seen: HashMap<&str, usize> = HashMap::new();
        let mut out = Vec::with_capacity(raw.len());
        for (i, ri) in raw.iter().enumerate() {
            let path = format!("agent.interfaces[{i}]");
            if let Err(reason) = check_ifname(&ri.name) {
                self.err(ConfigError::InvalidInterfaceName {
                    path,
                    name: ri.name.clone(),
                    reason,
                });
                continue;
            }
            if let Some(&first) = seen.get(ri.name.as_str()) {
                self.err(ConfigError::DuplicateInterface {
                    path,
                    name: ri.name.clone(),
                    first: format!("agent.interfaces[{first}]"),
                });
                continue;
            }
            seen.insert(&ri.name, i);
            if !self.env.interface_exists(&ri.name) {
                self.err(ConfigError::InterfaceNotFound {
                    path,
                    name: ri.name.clone(),
                });
            }
            out.push(Interface {
                name: ri.name.clone(),
                xdp_mode: match ri.xdp_mode.unwrap_or(RawXdpMode::Auto) {
                    RawXdpMode::Auto => XdpMode::Auto,
                    RawXdpMode::Native => XdpMode::Native,
                    RawXdpMode::Generic => XdpMode::Generic,
                },
            });
        }
        out
    }

    fn address(&mut self, path: &str, value: &str) -> Option<IpAddr> {
        match value.parse() {
            Ok(a) => Some(a),
            Err(_) => {
                self.err(ConfigError::InvalidAddress {
                    path: path.to_owned(),
                    value: value.to_owned(),
                });
                None
            }
        }
    }

    /// Parses an address that must be unicast (VIPs, backends, tunnel sources).
    fn unicast(&mut self, path: &str, value: &str, role: &'static str) -> Option<IpAddr> {
        let addr = self.address(path, value)?;
        if let Some(what) = non_unicast(&addr) {
            self.err(ConfigError::NotUnicast {
                path: path.to_owned(),
                addr,
                what,
                role,
            });
            return None;
        }
        Some(addr)
    }

    fn pin_dir(&mut self, value: &str) -> PathBuf {
        let path = "agent.pin-dir";
        let p = Path::new(value);
        let reason = if !p.is_absolute() {
            Some("is not absolute: use e.g. \"/sys/fs/bpf/xlb\"")
        } else if has_dot_components(value) {
            Some("must not contain \".\" or \"..\" components: write the path out")
        } else if !p.starts_with(BPFFS_ROOT) || p == Path::new(BPFFS_ROOT) {
            Some(
                "is not a directory below the bpffs mount /sys/fs/bpf: use e.g. \"/sys/fs/bpf/xlb\"",
            )
        } else {
            None
        };
        if let Some(reason) = reason {
            self.err(ConfigError::InvalidPath {
                path: path.into(),
                value: value.into(),
                reason,
            });
        }
        p.to_owned()
    }

    fn api_socket(&mut self, value: &str) -> PathBuf {
        let p = Path::new(value);
        let reason = if !p.is_absolute() {
            Some("is not absolute: use e.g. \"/run/xlb/xlb.sock\"")
        } else if has_dot_components(value) {
            Some("must not contain \".\" or \"..\" components: write the path out")
        } else if value.len() > MAX_UNIX_SOCKET_PATH {
            Some("is longer than a Unix socket path may be (107 bytes): use a shorter path")
        } else if value.ends_with('/') {
            Some("names a directory: add the socket's file name, e.g. \"/run/xlb/xlb.sock\"")
        } else {
            None
        };
        if let Some(reason) = reason {
            self.err(ConfigError::InvalidPath {
                path: "agent.api-socket".into(),
                value: value.into(),
                reason,
            });
        }
        p.to_owned()
    }

    fn metrics(&mut self, value: Option<&str>, allow_remote: bool) -> Option<SocketAddr> {
        let path = "agent.metrics-listen";
        let value = match value {
            None => return Some(DEFAULT_METRICS_LISTEN),
            Some("" | "off") => return None,
            Some(v) => v,
        };
        let addr: SocketAddr = match value.parse() {
            Ok(a) => a,
            Err(_) => {
                self.err(ConfigError::InvalidSocketAddr {
                    path: path.into(),
                    value: value.into(),
                });
                return None;
            }
        };
        if addr.port() == 0 {
            self.range(path, 0, (1, 65535), " (the port of metrics-listen)");
        }
        if !addr.ip().is_loopback() && !allow_remote {
            self.err(ConfigError::RemoteMetrics {
                path: path.into(),
                addr,
            });
        }
        Some(addr)
    }

    fn vip(&mut self, i: usize, rv: &RawVip, tunnels: &mut Vec<TunnelUse>) -> Option<Vip> {
        let vpath = format!("vip[{i}]");
        let addr = self.unicast(&format!("{vpath}.address"), &rv.address, "a VIP");
        let mode = match rv.mode {
            RawMode::Ipip => ForwardMode::Ipip,
            RawMode::Gue => ForwardMode::Gue,
            RawMode::DsrL2 => ForwardMode::DsrL2,
        };
        let proto = match rv.protocol {
            RawProto::Tcp => Proto::Tcp,
            RawProto::Udp => Proto::Udp,
        };
        // Without an address there is no VipId; still check everything that does not need one.
        let id = addr.map(|addr| VipId {
            addr,
            port: rv.port,
            proto,
        });
        let (health, default_port) = self.health(&vpath, rv.health.as_ref());

        let mut backends = Vec::with_capacity(rv.backend.len());
        let mut seen: HashMap<IpAddr, usize> = HashMap::new();
        for (j, rb) in rv.backend.iter().enumerate() {
            let bpath = format!("{vpath}.backend[{j}]");
            let weight = self
                .range(
                    &format!("{bpath}.weight"),
                    rb.weight.unwrap_or(DEFAULT_WEIGHT),
                    (0, MAX_WEIGHT.into()),
                    " (0 drains the backend)",
                )
                .unwrap_or(0);
            if rb.check_port == Some(0) {
                self.range(&format!("{bpath}.check-port"), 0, (1, 65535), "");
            }
            if rb.check_port.is_some() && matches!(health.kind, CheckKind::None) {
                self.warn(
                    format!("{bpath}.check-port"),
                    "ignored: the VIP's health check kind is none",
                );
            }
            let Some(baddr) = self.unicast(&format!("{bpath}.address"), &rb.address, "a backend")
            else {
                continue;
            };
            if let Some(&first) = seen.get(&baddr) {
                self.err(ConfigError::DuplicateBackend {
                    path: format!("{bpath}.address"),
                    addr: baddr,
                    first: format!("{vpath}.backend[{first}]"),
                });
                continue;
            }
            seen.insert(baddr, j);
            if let Some(id) = id {
                let ok = match mode {
                    // IPv4 in IPv6 works; IPv6 in IPv4 is not implemented.
                    ForwardMode::Ipip | ForwardMode::Gue => id.addr.is_ipv4() || baddr.is_ipv6(),
                    ForwardMode::DsrL2 => id.addr.is_ipv4() == baddr.is_ipv4(),
                };
                if !ok {
                    self.err(ConfigError::UnsupportedBackendFamily {
                        path: format!("{bpath}.address"),
                        vip: id,
                        mode,
                        backend: baddr,
                    });
                }
            }
            if mode != ForwardMode::DsrL2 {
                tunnels.push(TunnelUse {
                    path: bpath.clone(),
                    v6: baddr.is_ipv6(),
                });
            }
            backends.push(BackendSpec {
                addr: baddr,
                weight,
                check_port: match health.kind {
                    CheckKind::None => None,
                    _ => rb.check_port.or(default_port),
                },
            });
        }

        if rv.backend.is_empty() {
            self.warn(
                format!("{vpath}.backend"),
                "no backends: the VIP's traffic is dropped (or passed, per no-backend)",
            );
        } else if !backends.is_empty() && backends.iter().all(|b| b.weight == 0) {
            self.warn(
                format!("{vpath}.backend"),
                "every backend has weight 0 (drained): new flows find no backend",
            );
        }

        if let Some(id) = id
            && id.port == 0
            && !matches!(health.kind, CheckKind::None)
        {
            let unprobed: Vec<IpAddr> = backends
                .iter()
                .filter(|b| b.check_port.is_none())
                .map(|b| b.addr)
                .collect();
            if !unprobed.is_empty() {
                self.err(ConfigError::NothingToProbe {
                    path: format!("{vpath}.health.port"),
                    vip: id,
                    kind: rv.health.as_ref().map_or("", |h| h.kind.name()),
                    backends: unprobed,
                });
            }
        }

        backends.sort_by_key(|b| b.addr);
        Some(Vip {
            id: id?,
            mode,
            src_affinity: rv.source_affinity,
            icmp_echo: rv.icmp_echo.unwrap_or(true),
            no_backend: match rv.no_backend.unwrap_or(RawNoBackend::Drop) {
                RawNoBackend::Drop => NoBackend::Drop,
                RawNoBackend::Pass => NoBackend::Pass,
            },
            health,
            backends,
        })
    }

    /// The VIP's check and its default probe port (`health.port`), which is folded into each
    /// backend's `check_port`.
    fn health(&mut self, vpath: &str, raw: Option<&RawHealth>) -> (HealthCheck, Option<u16>) {
        let mut hc = HealthCheck {
            kind: CheckKind::None,
            interval: DEFAULT_INTERVAL,
            timeout: DEFAULT_TIMEOUT,
            rise: DEFAULT_RISE,
            fall: DEFAULT_FALL,
        };
        let Some(h) = raw else {
            self.warn(
                format!("{vpath}.health"),
                "no health check: every backend is always considered up (set kind = \"none\" \
                 to say so explicitly)",
            );
            return (hc, None);
        };
        let p = format!("{vpath}.health");
        let kind = h.kind.name();
        let is_http = matches!(h.kind, RawCheckKind::Http | RawCheckKind::Https);
        let is_udp = h.kind == RawCheckKind::Udp;

        for (present, key, ok, used_by) in [
            (h.path.is_some(), "path", is_http, "http/https"),
            (
                h.expect_status.is_some(),
                "expect-status",
                is_http,
                "http/https",
            ),
            (h.host.is_some(), "host", is_http, "http/https"),
            (h.send.is_some(), "send", is_udp, "udp"),
            (h.send_hex.is_some(), "send-hex", is_udp, "udp"),
            (h.expect.is_some(), "expect", is_udp, "udp"),
            (h.expect_hex.is_some(), "expect-hex", is_udp, "udp"),
        ] {
            if present && !ok {
                self.err(ConfigError::FieldNotForKind {
                    path: format!("{p}.{key}"),
                    kind,
                    used_by,
                });
            }
        }
        let none = h.kind == RawCheckKind::None;
        if none {
            for (present, key) in [
                (h.port.is_some(), "port"),
                (h.interval.is_some(), "interval"),
                (h.timeout.is_some(), "timeout"),
                (h.rise.is_some(), "rise"),
                (h.fall.is_some(), "fall"),
            ] {
                if present {
                    self.warn(format!("{p}.{key}"), "ignored: kind is none");
                }
            }
        }

        if h.port == Some(0) {
            self.range(&format!("{p}.port"), 0, (1, 65535), "");
        }
        let interval = h
            .interval
            .as_deref()
            .and_then(|s| self.duration(&format!("{p}.interval"), s));
        let timeout = h
            .timeout
            .as_deref()
            .and_then(|s| self.duration(&format!("{p}.timeout"), s));
        if let Some(iv) = interval {
            if !(INTERVAL_RANGE.0..=INTERVAL_RANGE.1).contains(&iv) {
                self.err(ConfigError::IntervalOutOfRange {
                    path: format!("{p}.interval"),
                    value: iv,
                });
            }
            hc.interval = iv;
        }
        if let Some(t) = timeout {
            if t.is_zero() {
                self.err(ConfigError::InvalidDuration {
                    path: format!("{p}.timeout"),
                    value: h.timeout.clone().unwrap_or_default(),
                    reason: "a timeout must be longer than zero",
                });
            }
            hc.timeout = t;
        }
        // Only compare what parsed (or defaulted): a malformed value already has its error.
        let parsed = (h.interval.is_none() || interval.is_some())
            && (h.timeout.is_none() || timeout.is_some());
        if parsed && hc.timeout >= hc.interval {
            self.err(ConfigError::TimeoutNotBelowInterval {
                path: format!("{p}.timeout"),
                timeout: hc.timeout,
                interval: hc.interval,
                timeout_is_default: h.timeout.is_none(),
                interval_is_default: h.interval.is_none(),
            });
        }
        for (key, value, default, slot) in [
            ("rise", h.rise, DEFAULT_RISE, &mut hc.rise),
            ("fall", h.fall, DEFAULT_FALL, &mut hc.fall),
        ] {
            *slot = match value {
                Some(n) => self
                    .range(
                        &format!("{p}.{key}"),
                        n,
                        RISE_FALL_RANGE,
                        " (consecutive probe results)",
                    )
                    .unwrap_or(default),
                None => default,
            };
        }

        hc.kind = match h.kind {
            RawCheckKind::None => CheckKind::None,
            RawCheckKind::Tcp => CheckKind::Tcp,
            RawCheckKind::Http | RawCheckKind::Https => {
                let path = h.path.clone().unwrap_or_else(|| DEFAULT_HTTP_PATH.into());
                if !path.starts_with('/') {
                    self.err(ConfigError::InvalidText {
                        path: format!("{p}.path"),
                        value: path.clone(),
                        reason: "must start with \"/\": write e.g. \"/healthz\"",
                    });
                } else if !is_visible_ascii(&path) {
                    self.err(ConfigError::InvalidText {
                        path: format!("{p}.path"),
                        value: path.clone(),
                        reason: "must be printable ASCII without spaces: percent-encode \
                                 other characters",
                    });
                }
                if let Some(host) = &h.host
                    && (host.is_empty() || !is_visible_ascii(host))
                {
                    self.err(ConfigError::InvalidText {
                        path: format!("{p}.host"),
                        value: host.clone(),
                        reason: "must be a non-empty host name without spaces or control \
                                 characters: write e.g. \"example.test\", or remove it to \
                                 send the backend address",
                    });
                }
                let status = h.expect_status.unwrap_or(DEFAULT_EXPECT_STATUS);
                self.range(
                    &format!("{p}.expect-status"),
                    status.into(),
                    EXPECT_STATUS_RANGE,
                    " (an HTTP status code)",
                );
                CheckKind::Http {
                    path,
                    expect_status: status,
                    tls: h.kind == RawCheckKind::Https,
                    host: h.host.clone(),
                }
            }
            RawCheckKind::Udp => {
                let send = self.bytes(&p, "send", h.send.as_deref(), h.send_hex.as_deref());
                if h.send.is_none() && h.send_hex.is_none() {
                    self.err(ConfigError::MissingField {
                        path: format!("{p}.send"),
                        what: "a udp check needs send or send-hex (send = \"\" sends an empty \
                               datagram)",
                    });
                }
                let expect = self.bytes(&p, "expect", h.expect.as_deref(), h.expect_hex.as_deref());
                CheckKind::Udp {
                    send: send.unwrap_or_default(),
                    expect,
                }
            }
        };
        (hc, if none { None } else { h.port })
    }

    /// `key = "text"` or `key-hex = "0a0b"`, at most one of them.
    fn bytes(
        &mut self,
        p: &str,
        key: &str,
        text: Option<&str>,
        hex: Option<&str>,
    ) -> Option<Vec<u8>> {
        match (text, hex) {
            (Some(_), Some(_)) => {
                self.err(ConfigError::ConflictingFields {
                    path: format!("{p}.{key}-hex"),
                    other: format!("{p}.{key}"),
                });
                None
            }
            (Some(t), None) => Some(t.as_bytes().to_vec()),
            (None, Some(h)) => match parse_hex(h) {
                Ok(b) => Some(b),
                Err(reason) => {
                    self.err(ConfigError::InvalidHex {
                        path: format!("{p}.{key}-hex"),
                        reason,
                    });
                    None
                }
            },
            (None, None) => None,
        }
    }

    fn duration(&mut self, path: &str, value: &str) -> Option<Duration> {
        match parse_duration(value) {
            Ok(d) => Some(d),
            Err(reason) => {
                self.err(ConfigError::InvalidDuration {
                    path: path.to_owned(),
                    value: value.to_owned(),
                    reason,
                });
                None
            }
        }
    }

    /// IPv6 needs 1280-byte links, and an IPv6 client must still be able to send 1280-byte
    /// packets after our encapsulation: PMTU reports below 1280 are ignored (RFC 8201), so a
    /// smaller inner MTU black-holes large packets.
    fn mtu_vs_ipv6(&mut self, mtu: u32, vips: &[(usize, Vip)]) {
        let any_v6 = vips
            .iter()
            .any(|(_, v)| v.id.addr.is_ipv6() || v.backends.iter().any(|b| b.addr.is_ipv6()));
        if any_v6 && mtu < IPV6_MIN_MTU {
            self.err(ConfigError::MtuTooSmall {
                path: "agent.mtu".into(),
                mtu,
                need: IPV6_MIN_MTU,
                reason: "IPv6 addresses are configured and IPv6 links carry at least 1280 bytes"
                    .into(),
            });
            return;
        }
        // One error, for the VIP that needs the most.
        let mut worst: Option<(u32, String)> = None;
        for (i, v) in vips {
            if v.id.addr.is_ipv4() || v.mode == ForwardMode::DsrL2 {
                continue;
            }
            // IPv6 tunnelled VIPs only have IPv6 backends: a 40-byte outer header, plus 8
            // bytes of UDP for GUE.
            let overhead = 40 + if v.mode == ForwardMode::Gue { 8 } else { 0 };
            let need = IPV6_MIN_MTU + overhead;
            if mtu < need && worst.as_ref().is_none_or(|(n, _)| need > *n) {
                worst = Some((
                    need,
                    format!(
                        "vip[{i}] ({}) adds {overhead} bytes of {} encapsulation, leaving {} for \
                         IPv6 packets, below IPv6's minimum of 1280",
                        v.id,
                        v.mode.name(),
                        mtu - overhead
                    ),
                ));
            }
        }
        if let Some((need, reason)) = worst {
            self.err(ConfigError::MtuTooSmall {
                path: "agent.mtu".into(),
                mtu,
                need,
                reason,
            });
        }
    }
}

fn non_unicast(addr: &IpAddr) -> Option<&'static str> {
    if addr.is_unspecified() {
        Some("the unspecified")
    } else if addr.is_multicast() {
        Some("a multicast")
    } else if addr.is_loopback() {
        Some("a loopback")
    } else if matches!(addr, IpAddr::V4(a) if a.is_broadcast()) {
        Some("the broadcast")
    } else {
        None
    }
}

fn check_ifname(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        Err("it is empty")
    } else if name.len() > MAX_IFNAME_LEN {
        Err("Linux interface names are at most 15 bytes")
    } else if name == "." || name == ".." {
        Err("\".\" and \"..\" are not interface names")
    } else if name
        .bytes()
        .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b.is_ascii_control())
    {
        Err("interface names contain no '/', ':', spaces or control characters")
    } else {
        Ok(())
    }
}

fn has_dot_components(path: &str) -> bool {
    path.split('/').any(|c| c == "." || c == "..")
}

fn is_visible_ascii(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_graphic())
}

/// `"0a1b ff"` -> bytes; whitespace between bytes is allowed.
pub fn parse_hex(s: &str) -> Result<Vec<u8>, &'static str> {
    let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if !digits.len().is_multiple_of(2) {
        return Err("odd number of hex digits");
    }
    digits
        .chunks(2)
        .map(|pair| {
            let hi = (pair[0] as char).to_digit(16);
            let lo = (pair[1] as char).to_digit(16);
            match (hi, lo) {
                (Some(h), Some(l)) => Ok((h * 16 + l) as u8),
                _ => Err("only 0-9, a-f and A-F are hex digits"),
            }
        })
        .collect()
}

/// `"500ms"`, `"2s"`, `"1.5s"`, `"1m"`, `"1h"`: a decimal number and one unit (ms, s, m, h).
/// Computed in integer nanoseconds, so `"0.1s"` is exactly 100 ms.
pub fn parse_duration(s: &str) -> Result<Duration, &'static str> {
    let s = s.trim();
    let unit_at = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or("it has no unit")?;
    let (num, unit) = s.split_at(unit_at);
    let unit_ns: u128 = match unit {
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return Err("the unit must be ms, s, m or h"),
    };
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if int.is_empty() || frac.contains('.') || (num.contains('.') && frac.is_empty()) {
        return Err("the number must look like 2 or 1.5");
    }
    if int.len() > 12 || frac.len() > 9 {
        return Err("the number is too long");
    }
    let int: u128 = int
        .parse()
        .map_err(|_| "the number must look like 2 or 1.5")?;
    let mut ns = int * unit_ns;
    if !frac.is_empty() {
        let f: u128 = frac
            .parse()
            .map_err(|_| "the number must look like 2 or 1.5")?;
        ns += f * unit_ns / 10u128.pow(frac.len() as u32);
    }
    u64::try_from(ns)
        .map(Duration::from_nanos)
        .map_err(|_| "it is too long")
}

/// `Duration` the way the file writes it: `500ms`, `2s`, `1.5s`, `1m`.
pub fn fmt_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns != 0 && ns.is_multiple_of(60_000_000_000) {
        format!("{}m", ns / 60_000_000_000)
    } else if ns.is_multiple_of(1_000_000_000) {
        format!("{}s", ns / 1_000_000_000)
    } else if ns.is_multiple_of(1_000_000) && ns < 1_000_000_000 {
        format!("{}ms", ns / 1_000_000)
    } else if ns.is_multiple_of(1_000_000) {
        format!("{}s", d.as_secs_f64())
    } else {
        format!("{d:?}")
    }
}

// ---------------------------------------------------------------------------------------------
// Diff
// ---------------------------------------------------------------------------------------------

/// An agent-level setting, named as in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AgentField {
    Interfaces,
    LbSrcV4,
    LbSrcV6,
    HashSeed,
    FlowTableSize,
    MaxVips,
    MaxBackends,
    GuePort,
    Mtu,
    IcmpRate,
    IcmpBurst,
    OuterTtl,
    PinDir,
    ApiSocket,
    MetricsListen,
    DetachOnExit,
}

impl AgentField {
    pub const fn key(self) -> &'static str {
        match self {
            AgentField::Interfaces => "interfaces",
            AgentField::LbSrcV4 => "lb-src-v4",
            AgentField::LbSrcV6 => "lb-src-v6",
            AgentField::HashSeed => "hash-seed",
            AgentField::FlowTableSize => "flow-table-size",
            AgentField::MaxVips => "max-vips",
            AgentField::MaxBackends => "max-backends",
            AgentField::GuePort => "gue-port",
            AgentField::Mtu => "mtu",
            AgentField::IcmpRate => "icmp-rate",
            AgentField::IcmpBurst => "icmp-burst",
            AgentField::OuterTtl => "outer-ttl",
            AgentField::PinDir => "pin-dir",
            AgentField::ApiSocket => "api-socket",
            AgentField::MetricsListen => "metrics-listen",
            AgentField::DetachOnExit => "detach-on-exit",
        }
    }
}

/// A VIP setting other than its backends, named as in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum VipField {
    Mode,
    SourceAffinity,
    IcmpEcho,
    NoBackend,
    Health,
}

impl VipField {
    pub const fn key(self) -> &'static str {
        match self {
            VipField::Mode => "mode",
            VipField::SourceAffinity => "source-affinity",
            VipField::IcmpEcho => "icmp-echo",
            VipField::NoBackend => "no-backend",
            VipField::Health => "health",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct WeightChange {
    pub addr: IpAddr,
    pub old: u32,
    pub new: u32,
}

/// How one VIP present in both configs changed. Lists are sorted by address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VipChange {
    pub id: VipId,
    pub fields: Vec<VipField>,
    pub backends_added: Vec<IpAddr>,
    pub backends_removed: Vec<IpAddr>,
    pub weights_changed: Vec<WeightChange>,
    /// Backends whose `check_port` changed (their probes restart).
    pub check_ports_changed: Vec<IpAddr>,
}

/// What a reload changes. VIPs are identified by [`VipId`]: changing a VIP's address, port or
/// protocol is a removal plus an addition. All lists are sorted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ConfigDiff {
    pub agent: Vec<AgentField>,
    pub vips_added: Vec<VipId>,
    pub vips_removed: Vec<VipId>,
    pub vips_changed: Vec<VipChange>,
}

impl ConfigDiff {
    pub fn is_empty(&self) -> bool {
        self.agent.is_empty()
            && self.vips_added.is_empty()
            && self.vips_removed.is_empty()
            && self.vips_changed.is_empty()
    }
}

/// What changes from `old` to `new`.
pub fn diff(old: &Config, new: &Config) -> ConfigDiff {
    let mut agent = Vec::new();
    let mut field = |changed: bool, f: AgentField| {
        if changed {
            agent.push(f);
        }
    };
    field(old.interfaces != new.interfaces, AgentField::Interfaces);
    field(old.lb_src_v4 != new.lb_src_v4, AgentField::LbSrcV4);
    field(old.lb_src_v6 != new.lb_src_v6, AgentField::LbSrcV6);
    field(old.hash_seed != new.hash_seed, AgentField::HashSeed);
    field(
        old.flow_table_size != new.flow_table_size,
        AgentField::FlowTableSize,
    );
    field(old.max_vips != new.max_vips, AgentField::MaxVips);
    field(
        old.max_backends != new.max_backends,
        AgentField::MaxBackends,
    );
    field(old.gue_port != new.gue_port, AgentField::GuePort);
    field(old.mtu != new.mtu, AgentField::Mtu);
    field(old.icmp_rate != new.icmp_rate, AgentField::IcmpRate);
    field(old.icmp_burst != new.icmp_burst, AgentField::IcmpBurst);
    field(old.outer_ttl != new.outer_ttl, AgentField::OuterTtl);
    field(old.pin_dir != new.pin_dir, AgentField::PinDir);
    field(old.api_socket != new.api_socket, AgentField::ApiSocket);
    field(
        old.metrics_listen != new.metrics_listen,
        AgentField::MetricsListen,
    );
    field(
        old.detach_on_exit != new.detach_on_exit,
        AgentField::DetachOnExit,
    );

    let olds: BTreeMap<VipId, &Vip> = old.vips.iter().map(|v| (v.id, v)).collect();
    let news: BTreeMap<VipId, &Vip> = new.vips.iter().map(|v| (v.id, v)).collect();
    let vips_added = news
        .keys()
        .filter(|id| !olds.contains_key(id))
        .copied()
        .collect();
    let vips_removed = olds
        .keys()
        .filter(|id| !news.contains_key(id))
        .copied()
        .collect();
    let vips_changed = olds
        .iter()
        .filter_map(|(id, o)| news.get(id).and_then(|n| vip_change(o, n)))
        .collect();
    ConfigDiff {
        agent,
        vips_added,
        vips_removed,
        vips_changed,
    }
}

fn vip_change(old: &Vip, new: &Vip) -> Option<VipChange> {
    if old == new {
        return None;
    }
    let mut fields = Vec::new();
    if old.mode != new.mode {
        fields.push(VipField::Mode);
    }
    if old.src_affinity != new.src_affinity {
        fields.push(VipField::SourceAffinity);
    }
    if old.icmp_echo != new.icmp_echo {
        fields.push(VipField::IcmpEcho);
    }
    if old.no_backend != new.no_backend {
        fields.push(VipField::NoBackend);
    }
    if old.health != new.health {
        fields.push(VipField::Health);
    }
    let ob: BTreeMap<IpAddr, &BackendSpec> = old.backends.iter().map(|b| (b.addr, b)).collect();
    let nb: BTreeMap<IpAddr, &BackendSpec> = new.backends.iter().map(|b| (b.addr, b)).collect();
    let mut change = VipChange {
        id: new.id,
        fields,
        backends_added: nb.keys().filter(|a| !ob.contains_key(a)).copied().collect(),
        backends_removed: ob.keys().filter(|a| !nb.contains_key(a)).copied().collect(),
        weights_changed: Vec::new(),
        check_ports_changed: Vec::new(),
    };
    for (addr, o) in &ob {
        let Some(n) = nb.get(addr) else { continue };
        if o.weight != n.weight {
            change.weights_changed.push(WeightChange {
                addr: *addr,
                old: o.weight,
                new: n.weight,
            });
        }
        if o.check_port != n.check_port {
            change.check_ports_changed.push(*addr);
        }
    }
    Some(change)
}

impl fmt::Display for ConfigDiff {
    /// One line per change, for the reload log: `+ vip …`, `- vip …`, `~ vip …: …`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("no changes");
        }
        let mut lines = Vec::new();
        if !self.agent.is_empty() {
            let keys: Vec<&str> = self.agent.iter().map(|a| a.key()).collect();
            lines.push(format!("~ agent: {}", keys.join(", ")));
        }
        for id in &self.vips_removed {
            lines.push(format!("- vip {id}"));
        }
        for id in &self.vips_added {
            lines.push(format!("+ vip {id}"));
        }
        for c in &self.vips_changed {
            let mut parts: Vec<String> = c.fields.iter().map(|f| f.key().to_owned()).collect();
            parts.extend(c.backends_added.iter().map(|a| format!("+backend {a}")));
            parts.extend(c.backends_removed.iter().map(|a| format!("-backend {a}")));
            parts.extend(
                c.weights_changed
                    .iter()
                    .map(|w| format!("weight {} {}->{}", w.addr, w.old, w.new)),
            );
            parts.extend(
                c.check_ports_changed
                    .iter()
                    .map(|a| format!("check-port {a}")),
            );
            lines.push(format!("~ vip {}: {}", c.id, parts.join(", ")));
        }
        f.write_str(&lines.join("\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../examples/xlb.toml");

    const AGENT: &str = r#"
[agent]
interfaces = ["eth0"]
lb-src-v4 = "192.0.2.1"
lb-src-v6 = "2001:db8::1"
"#;

    fn env(name: &str) -> bool {
        name == "eth0" || name == "eth1"
    }

    fn check(text: &str) -> Result<Validated, ConfigErrors> {
        load_str(text, &env)
    }

    fn ok(text: &str) -> Validated {
        match check(text) {
            Ok(v) => v,
            Err(e) => panic!("expected a valid config, got:\n{e}"),
        }
    }

    /// The agent section plus `rest`.
    fn with_agent(rest: &str) -> String {
        format!("{AGENT}\n{rest}")
    }

    fn errors(text: &str) -> Vec<ConfigError> {
        match check(text) {
            Ok(_) => panic!("expected errors for:\n{text}"),
            Err(e) => e.0,
        }
    }

    /// Exactly one error; returns (path, message).
    fn one(text: &str) -> (String, String) {
        let errs = errors(text);
        assert_eq!(errs.len(), 1, "expected one error, got {errs:#?}");
        (errs[0].path().to_owned(), errs[0].to_string())
    }

    fn assert_one(text: &str, path: &str, needles: &[&str]) -> ConfigError {
        let mut errs = errors(text);
        assert_eq!(errs.len(), 1, "expected one error, got {errs:#?}");
        let e = errs.remove(0);
        assert_eq!(e.path(), path, "{e}");
        let msg = e.to_string();
        assert!(msg.starts_with(&format!("{path}: ")), "{msg}");
        for n in needles {
            assert!(msg.contains(n), "{msg:?} lacks {n:?}");
        }
        e
    }

    fn vip(addr: &str, extra: &str) -> String {
        format!(
            "[[vip]]\naddress = \"{addr}\"\nport = 80\nprotocol = \"tcp\"\nmode = \"ipip\"\n{extra}\n"
        )
    }

    fn backend(addr: &str, extra: &str) -> String {
        format!("[[vip.backend]]\naddress = \"{addr}\"\n{extra}\n")
    }

    fn tcp_check() -> &'static str {
        "[vip.health]\nkind = \"tcp\"\n"
    }

    // --- example, defaults, shapes ---------------------------------------------------------

    #[test]
    fn example_file_parses_and_validates_without_warnings() {
        let v = ok(EXAMPLE);
        assert_eq!(v.warnings, vec![], "example should be warning-free");
        let c = &v.config;
        assert_eq!(c.interfaces[0].name, "eth0");
        assert_eq!(c.vips.len(), 3);
        // Sorted: IPv4 before IPv6, then by address.
        let ids: Vec<String> = c.vips.iter().map(|v| v.id.to_string()).collect();
        assert_eq!(
            ids,
            [
                "tcp/203.0.113.10:80",
                "tcp/203.0.113.20:443",
                "udp/[2001:db8:10::53]:*"
            ]
        );
        let web = &c.vips[0];
        assert_eq!(
            web.health.kind,
            CheckKind::Http {
                path: "/healthz".into(),
                expect_status: 200,
                tls: false,
                host: Some("example.test".into()),
            }
        );
        // health.port folded into backends without their own check-port.
        assert_eq!(web.backends[1].check_port, Some(8080));
        let dns = &c.vips[2];
        assert_eq!(
            dns.health.kind,
            CheckKind::Udp {
                send: vec![0, 1],
                expect: Some(b"ok".to_vec()),
            }
        );
        assert_eq!(dns.health.interval, Duration::from_millis(500));
        assert_eq!(dns.backends[0].check_port, Some(5353));
        assert_eq!(dns.backends[1].check_port, Some(5354));
        assert_eq!(dns.no_backend, NoBackend::Pass);
        assert_eq!(c.vips[1].mode, ForwardMode::DsrL2);
    }

    #[test]
    fn defaults_are_applied() {
        let v = ok(&with_agent(
            &(vip("203.0.113.10", "") + &backend("198.51.100.1", "")),
        ));
        let c = v.config;
        assert_eq!(c.hash_seed, DEFAULT_HASH_SEED);
        assert_eq!(c.flow_table_size, DEFAULT_FLOW_TABLE_SIZE);
        assert_eq!(c.max_vips, DEFAULT_MAX_VIPS);
        assert_eq!(c.max_backends, DEFAULT_MAX_BACKENDS);
        assert_eq!(c.gue_port, 6080);
        assert_eq!(c.mtu, None);
        assert_eq!((c.icmp_rate, c.icmp_burst), (1000, 100));
        assert_eq!(c.outer_ttl, 64);
        assert_eq!(c.pin_dir, Path::new("/sys/fs/bpf/xlb"));
        assert_eq!(c.api_socket, Path::new("/run/xlb/xlb.sock"));
        assert_eq!(c.metrics_listen, Some("127.0.0.1:9477".parse().unwrap()));
        assert!(!c.detach_on_exit);
        let vip = &c.vips[0];
        assert!(!vip.src_affinity);
        assert!(vip.icmp_echo);
        assert_eq!(vip.no_backend, NoBackend::Drop);
        assert_eq!(vip.health.kind, CheckKind::None);
        assert_eq!(vip.backends[0].weight, 100);
        assert_eq!(vip.backends[0].check_port, None);
        // No [vip.health] table: warned, not an error.
        assert_eq!(v.warnings.len(), 1);
        assert_eq!(v.warnings[0].path, "vip[0].health");
    }

    #[test]
    fn health_defaults() {
        let text = with_agent(
            &(vip("203.0.113.10", "")
                + "[vip.health]\nkind = \"http\"\n"
                + &backend("198.51.100.1", "")),
        );
        let h = &ok(&text).config.vips[0].health;
        assert_eq!(h.interval, Duration::from_secs(2));
        assert_eq!(h.timeout, Duration::from_secs(1));
        assert_eq!((h.rise, h.fall), (2, 3));
        assert_eq!(
            h.kind,
            CheckKind::Http {
                path: "/".into(),
                expect_status: 200,
                tls: false,
                host: None,
            }
        );
    }

    #[test]
    fn interface_shorthand_and_table_forms() {
        let text = r#"
[agent]
interfaces = ["eth0", { name = "eth1", xdp-mode = "generic" }]
"#;
        let c = ok(text).config;
        assert_eq!(
            c.interfaces,
            vec![
                Interface {
                    name: "eth0".into(),
                    xdp_mode: XdpMode::Auto
                },
                Interface {
                    name: "eth1".into(),
                    xdp_mode: XdpMode::Generic
                },
            ]
        );
        let (path, msg) = one("[agent]\ninterfaces = [{ name = \"eth0\", mode = \"auto\" }]\n");
        assert_eq!(path, "agent.interfaces[0].mode");
        assert!(msg.contains("unknown field `mode`"), "{msg}");
        let (path, msg) = one("[agent]\ninterfaces = [{ name = \"eth0\", xdp-mode = \"fast\" }]\n");
        assert_eq!(path, "agent.interfaces[0].xdp-mode");
        assert!(msg.contains("unknown variant `fast`"), "{msg}");
    }

    #[test]
    fn no_vips_is_a_warning() {
        let v = ok(AGENT);
        assert_eq!(v.warnings[0].path, "vip");
    }

    // --- TOML shape errors keep line/column and gain the path -----------------------------

    #[test]
    fn syntax_error_keeps_line_and_column() {
        let (path, msg) = one("[agent]\ninterfaces = [\"eth0\"\n");
        assert_eq!(path, "");
        assert!(msg.contains("line 2"), "{msg}");
        assert!(matches!(
            parse("x = ").unwrap_err(),
            ConfigError::Syntax { .. }
        ));
    }

    #[test]
    fn unknown_keys_are_errors_everywhere() {
        for (text, path, key) in [
            ("agents = 1\n".to_string(), "", "agents"),
            (format!("{AGENT}hash-sed = 1\n"), "agent", "hash-sed"),
            (
                with_agent(&vip("203.0.113.10", "prot = 1")),
                "vip[0]",
                "prot",
            ),
            (
                with_agent(&(vip("203.0.113.10", tcp_check()) + "intervall = \"1s\"\n")),
                "vip[0].health",
                "intervall",
            ),
            (
                with_agent(&(vip("203.0.113.10", "") + &backend("198.51.100.1", "weigth = 1"))),
                "vip[0].backend[0]",
                "weigth",
            ),
        ] {
            // The path names the unknown key itself.
            let (p, msg) = one(&text);
            let want = if path.is_empty() {
                key.to_owned()
            } else {
                format!("{path}.{key}")
            };
            assert_eq!(p, want, "{msg}");
            assert!(msg.contains(&format!("unknown field `{key}`")), "{msg}");
            assert!(msg.contains("TOML parse error at line"), "{msg}");
        }
    }

    #[test]
    fn unknown_enum_values_name_the_field() {
        let base = vip("203.0.113.10", "");
        for (from, to, path, bad) in [
            (
                "mode = \"ipip\"",
                "mode = \"vxlan\"",
                "vip[0].mode",
                "vxlan",
            ),
            (
                "protocol = \"tcp\"",
                "protocol = \"sctp\"",
                "vip[0].protocol",
                "sctp",
            ),
        ] {
            let text = with_agent(&base.replace(from, to));
            let (p, msg) = one(&text);
            assert_eq!(p, path);
            assert!(
                msg.starts_with(&format!("{path}: TOML parse error at line ")),
                "{msg}"
            );
            assert!(msg.contains(&format!("unknown variant `{bad}`")), "{msg}");
        }
        let text = with_agent(&(base + "[vip.health]\nkind = \"icmp\"\n"));
        let (p, msg) = one(&text);
        assert_eq!(p, "vip[0].health.kind");
        assert!(
            msg.contains("expected one of `none`, `tcp`, `http`, `https`, `udp`"),
            "{msg}"
        );
    }

    #[test]
    fn wrong_types_name_the_field() {
        let text = with_agent(&(vip("203.0.113.10", "") + &backend("198.51.100.1", "weight = -1")));
        let (p, _) = one(&text);
        assert_eq!(p, "vip[0].backend[0].weight");
        let (p, msg) = one(&with_agent(
            &vip("203.0.113.10", "").replace("port = 80", ""),
        ));
        assert_eq!(p, "vip[0]");
        assert!(msg.contains("missing field `port`"), "{msg}");
    }

    // --- agent rules ----------------------------------------------------------------------

    #[test]
    fn no_interface() {
        assert_one(
            "[agent]\n",
            "agent.interfaces",
            &["no interface configured"],
        );
        assert_one("", "agent.interfaces", &["interfaces = [\"eth0\"]"]);
    }

    #[test]
    fn interface_missing_uses_the_injected_check() {
        let text = "[agent]\ninterfaces = [\"eth0\", \"eth7\"]\n";
        assert_one(text, "agent.interfaces[1]", &["\"eth7\" does not exist"]);
        assert!(load_str(text, &|_: &str| true).is_ok());
    }

    #[test]
    fn interface_names_and_duplicates() {
        assert_one(
            "[agent]\ninterfaces = [\"eth0\", \"../x\"]\n",
            "agent.interfaces[1]",
            &["not a valid interface name"],
        );
        assert_one(
            "[agent]\ninterfaces = [\"averyveryverylongname\"]\n",
            "agent.interfaces[0]",
            &["at most 15 bytes"],
        );
        assert_one(
            "[agent]\ninterfaces = [\"eth0\", { name = \"eth0\" }]\n",
            "agent.interfaces[1]",
            &["already listed at agent.interfaces[0]"],
        );
    }

    #[test]
    fn lb_src_must_be_unicast_of_the_right_family() {
        let text = "[agent]\ninterfaces = [\"eth0\"]\nlb-src-v4 = \"2001:db8::1\"\n";
        assert_one(
            text,
            "agent.lb-src-v4",
            &["not an IPv4 address", "lb-src-v6"],
        );
        let text = "[agent]\ninterfaces = [\"eth0\"]\nlb-src-v6 = \"192.0.2.1\"\n";
        assert_one(text, "agent.lb-src-v6", &["not an IPv6 address"]);
        let text = "[agent]\ninterfaces = [\"eth0\"]\nlb-src-v4 = \"0.0.0.0\"\n";
        assert_one(text, "agent.lb-src-v4", &["unspecified", "tunnel source"]);
        let text = "[agent]\ninterfaces = [\"eth0\"]\nlb-src-v4 = \"192.0.2.300\"\n";
        assert_one(
            text,
            "agent.lb-src-v4",
            &["\"192.0.2.300\" is not an IP address"],
        );
    }

    #[test]
    fn numeric_agent_ranges() {
        for (key, value, needle) in [
            (
                "flow-table-size",
                "100",
                "100 is out of range: use 1024..=67108864",
            ),
            ("max-vips", "0", "0 is out of range: use 1..=4096"),
            ("max-vips", "5000", "use 1..=4096"),
            ("max-backends", "1", "use 2..=1048576 (id 0 is reserved"),
            ("gue-port", "0", "0 is out of range: use 1..=65535"),
            ("icmp-burst", "0", "0 is out of range: use 1..=1000000"),
            ("icmp-rate", "0", "use 1..=1000000"),
            ("mtu", "500", "500 is out of range: use 576..=9216"),
            ("mtu", "9217", "use 576..=9216"),
            ("outer-ttl", "0", "0 is out of range: use 1..=255"),
            ("outer-ttl", "256", "use 1..=255"),
        ] {
            let text = format!("{AGENT}{key} = {value}\n");
            assert_one(&text, &format!("agent.{key}"), &[needle]);
        }
        let c = ok(&format!("{AGENT}mtu = 576\nhash-seed = 7\n")).config;
        assert_eq!((c.mtu, c.hash_seed), (Some(576), 7));
        let c = ok(&format!("{AGENT}outer-ttl = 1\n")).config;
        assert_eq!(c.outer_ttl, 1);
    }

    #[test]
    fn mtu_with_ipv6() {
        let v6 = vip("2001:db8::10", "") + &backend("2001:db8:1::1", "");
        assert!(check(&with_agent(&v6)).is_ok());
        let text = format!("{AGENT}mtu = 1200\n{v6}");
        assert_one(
            &text,
            "agent.mtu",
            &["1200 is too small", "use at least 1280"],
        );
        // IPv6 VIP over ipip needs 1280 + 40.
        let text = format!("{AGENT}mtu = 1300\n{v6}");
        assert_one(
            &text,
            "agent.mtu",
            &[
                "vip[0] (tcp/[2001:db8::10]:80) adds 40 bytes of ipip",
                "at least 1320",
            ],
        );
        let gue = v6.replace("mode = \"ipip\"", "mode = \"gue\"");
        let text = format!("{AGENT}mtu = 1320\n{gue}");
        assert_one(&text, "agent.mtu", &["48 bytes of gue", "at least 1328"]);
        assert!(check(&format!("{AGENT}mtu = 1328\n{gue}")).is_ok());
        // IPv4-only configs may go down to 576.
        let v4 = vip("203.0.113.10", "") + &backend("198.51.100.1", "");
        assert!(check(&format!("{AGENT}mtu = 576\n{v4}")).is_ok());
    }

    #[test]
    fn pin_dir_and_api_socket() {
        for (value, needle) in [
            ("xlb", "is not absolute"),
            ("/tmp/xlb", "below the bpffs mount /sys/fs/bpf"),
            ("/sys/fs/bpf", "below the bpffs mount"),
            ("/sys/fs/bpfx/xlb", "below the bpffs mount"),
            ("/sys/fs/bpf/../xlb", "\"..\""),
        ] {
            let text = format!("{AGENT}pin-dir = \"{value}\"\n");
            assert_one(&text, "agent.pin-dir", &[needle]);
        }
        assert!(check(&format!("{AGENT}pin-dir = \"/sys/fs/bpf/lb/a\"\n")).is_ok());
        let text = format!("{AGENT}api-socket = \"xlb.sock\"\n");
        assert_one(&text, "agent.api-socket", &["is not absolute"]);
        let long = format!("/run/{}", "x".repeat(110));
        let text = format!("{AGENT}api-socket = \"{long}\"\n");
        assert_one(&text, "agent.api-socket", &["107 bytes"]);
    }

    #[test]
    fn metrics_listen() {
        let get = |v: &str| ok(&format!("{AGENT}{v}\n")).config.metrics_listen;
        assert_eq!(get("metrics-listen = \"off\""), None);
        assert_eq!(get("metrics-listen = \"\""), None);
        assert_eq!(
            get("metrics-listen = \"[::1]:9100\""),
            Some("[::1]:9100".parse().unwrap())
        );
        let text = format!("{AGENT}metrics-listen = \"0.0.0.0:9477\"\n");
        assert_one(
            &text,
            "agent.metrics-listen",
            &[
                "0.0.0.0:9477 is not a loopback address",
                "metrics-allow-remote = true",
            ],
        );
        assert_eq!(
            get("metrics-listen = \"192.0.2.1:9477\"\nmetrics-allow-remote = true"),
            Some("192.0.2.1:9477".parse().unwrap())
        );
        let text = format!("{AGENT}metrics-listen = \"localhost:9477\"\n");
        assert_one(&text, "agent.metrics-listen", &["not an address:port"]);
    }

    // --- VIP rules ------------------------------------------------------------------------

    #[test]
    fn vip_address_must_be_unicast() {
        for (addr, what) in [
            ("0.0.0.0", "the unspecified"),
            ("::", "the unspecified"),
            ("224.0.0.1", "a multicast"),
            ("ff02::1", "a multicast"),
            ("255.255.255.255", "the broadcast"),
            ("127.0.0.1", "a loopback"),
            ("::1", "a loopback"),
        ] {
            let text = with_agent(&vip(addr, ""));
            assert_one(
                &text,
                "vip[0].address",
                &[&format!("{addr} is {what} address, which cannot be a VIP")],
            );
        }
        let text = with_agent(&vip("203.0.113.999", ""));
        assert_one(&text, "vip[0].address", &["is not an IP address"]);
    }

    #[test]
    fn duplicate_vip() {
        let one_vip = vip("203.0.113.10", "") + &backend("198.51.100.1", "");
        let text = with_agent(&format!("{one_vip}{one_vip}"));
        assert_one(
            &text,
            "vip[1]",
            &["tcp/203.0.113.10:80 is already defined at vip[0]"],
        );
        // Same address, other protocol or port: distinct VIPs.
        let udp = one_vip.replace("\"tcp\"", "\"udp\"");
        let p443 = one_vip.replace("port = 80", "port = 443");
        assert_eq!(
            ok(&with_agent(&format!("{one_vip}{udp}{p443}")))
                .config
                .vips
                .len(),
            3
        );
    }

    #[test]
    fn duplicate_backend() {
        let text = with_agent(
            &(vip("203.0.113.10", "")
                + &backend("198.51.100.1", "")
                + &backend("198.51.100.2", "")
                + &backend("198.51.100.1", "weight = 5")),
        );
        assert_one(
            &text,
            "vip[0].backend[2].address",
            &["backend 198.51.100.1 is already listed at vip[0].backend[0]"],
        );
    }

    #[test]
    fn backend_address_must_be_unicast() {
        let text = with_agent(&(vip("203.0.113.10", "") + &backend("127.0.0.1", "")));
        assert_one(&text, "vip[0].backend[0].address", &["cannot be a backend"]);
    }

    #[test]
    fn backend_family_per_mode() {
        // ipip/gue: IPv4 VIP -> IPv6 backend is fine.
        for mode in ["ipip", "gue"] {
            let text = with_agent(
                &(vip("203.0.113.10", "").replace("ipip", mode) + &backend("2001:db8::5", "")),
            );
            assert!(check(&text).is_ok(), "{mode}");
        }
        // ipip/gue: IPv6 VIP -> IPv4 backend is not.
        for mode in ["ipip", "gue"] {
            let text = with_agent(
                &(vip("2001:db8::10", "").replace("ipip", mode) + &backend("198.51.100.1", "")),
            );
            let e = assert_one(
                &text,
                "vip[0].backend[0].address",
                &[&format!(
                    "{mode} cannot carry IPv6 VIP tcp/[2001:db8::10]:80 to IPv4 backend 198.51.100.1"
                )],
            );
            assert!(matches!(e, ConfigError::UnsupportedBackendFamily { .. }));
        }
        // dsr-l2: families must match, both ways.
        let dsr = |v: &str, b: &str| {
            with_agent(&(vip(v, "").replace("ipip", "dsr-l2") + &backend(b, "")))
        };
        assert_one(
            &dsr("203.0.113.10", "2001:db8::5"),
            "vip[0].backend[0].address",
            &["dsr-l2", "must be IPv4 like VIP"],
        );
        assert_one(
            &dsr("2001:db8::10", "198.51.100.1"),
            "vip[0].backend[0].address",
            &["must be IPv6 like VIP"],
        );
        assert!(check(&dsr("2001:db8::10", "2001:db8::5")).is_ok());
    }

    #[test]
    fn tunnels_need_lb_src_of_the_backend_family() {
        let vips = vip("203.0.113.10", "")
            + &backend("198.51.100.1", "")
            + &backend("198.51.100.2", "")
            + &vip("203.0.113.11", "")
            + &backend("2001:db8::5", "");
        let text = format!("[agent]\ninterfaces = [\"eth0\"]\n{vips}");
        let errs = errors(&text);
        let got: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(errs.len(), 2, "{got:#?}");
        assert_eq!(errs[0].path(), "agent.lb-src-v4");
        assert!(
            got[0].contains(
                "required because vip[0].backend[0] is tunnelled to over IPv4 (and 1 more backend)"
            ),
            "{}",
            got[0]
        );
        assert_eq!(errs[1].path(), "agent.lb-src-v6");
        assert!(got[1].contains("vip[1].backend[0]"), "{}", got[1]);
        // dsr-l2 does not tunnel.
        let dsr = vip("203.0.113.10", "").replace("ipip", "dsr-l2") + &backend("198.51.100.1", "");
        assert!(check(&format!("[agent]\ninterfaces = [\"eth0\"]\n{dsr}")).is_ok());
    }

    #[test]
    fn weight_out_of_range() {
        let text = with_agent(
            &(vip("203.0.113.10", "")
                + &backend("198.51.100.1", "weight = 0")
                + &backend("198.51.100.2", "weight = 20000")),
        );
        let (path, msg) = one(&text);
        assert_eq!(path, "vip[0].backend[1].weight");
        assert_eq!(
            msg,
            "vip[0].backend[1].weight: 20000 is out of range: use 0..=10000 (0 drains the backend)"
        );
        let text =
            with_agent(&(vip("203.0.113.10", "") + &backend("198.51.100.1", "weight = 10000")));
        assert_eq!(ok(&text).config.vips[0].backends[0].weight, 10000);
    }

    #[test]
    fn too_many_vips() {
        let vips: String = (1..=3)
            .map(|i| vip(&format!("203.0.113.{i}"), "") + &backend("198.51.100.1", ""))
            .collect();
        let text = format!("{AGENT}max-vips = 2\n{vips}");
        assert_one(&text, "vip", &["3 VIPs configured but agent.max-vips is 2"]);
        assert!(check(&format!("{AGENT}max-vips = 3\n{vips}")).is_ok());
    }

    #[test]
    fn too_many_backends() {
        let vips = vip("203.0.113.1", "")
            + &backend("198.51.100.1", "")
            + &backend("198.51.100.2", "")
            + &vip("203.0.113.2", "")
            + &backend("198.51.100.1", "");
        let text = format!("{AGENT}max-backends = 3\n{vips}");
        assert_one(
            &text,
            "agent.max-backends",
            &[
                "3 allows 2 backends (id 0 is reserved) but 3 are configured",
                "at least 4",
            ],
        );
        assert!(check(&format!("{AGENT}max-backends = 4\n{vips}")).is_ok());
    }

    #[test]
    fn zero_backends_is_a_warning() {
        let v = ok(&with_agent(&vip(
            "203.0.113.10",
            "[vip.health]\nkind = \"none\"",
        )));
        assert_eq!(
            v.warnings,
            vec![Warning {
                path: "vip[0].backend".into(),
                message: "no backends: the VIP's traffic is dropped (or passed, per no-backend)"
                    .into()
            }]
        );
        assert!(v.config.vips[0].backends.is_empty());
    }

    // --- health rules ---------------------------------------------------------------------

    fn health(kind_and_keys: &str) -> String {
        with_agent(
            &(vip("203.0.113.10", &format!("[vip.health]\n{kind_and_keys}"))
                + &backend("198.51.100.1", "")),
        )
    }

    #[test]
    fn timeout_must_be_below_interval() {
        assert_one(
            &health("kind = \"tcp\"\ninterval = \"1s\"\ntimeout = \"1s\""),
            "vip[0].health.timeout",
            &["timeout 1s must be shorter than interval 1s"],
        );
        let (_, msg) = one(&health("kind = \"tcp\"\ninterval = \"500ms\""));
        assert!(
            msg.contains("timeout 1s (default) must be shorter than interval 500ms"),
            "{msg}"
        );
        let h = ok(&health(
            "kind = \"tcp\"\ninterval = \"500ms\"\ntimeout = \"0.2s\"",
        ))
        .config
        .vips[0]
            .health
            .clone();
        assert_eq!(
            (h.interval, h.timeout),
            (Duration::from_millis(500), Duration::from_millis(200))
        );
    }

    #[test]
    fn durations_are_checked() {
        assert_one(
            &health("kind = \"tcp\"\ninterval = \"2\""),
            "vip[0].health.interval",
            &["\"2\" is not a duration: it has no unit"],
        );
        assert_one(
            &health("kind = \"tcp\"\ninterval = \"50ms\"\ntimeout = \"10ms\""),
            "vip[0].health.interval",
            &["50ms is out of range: use 100ms..=60m"],
        );
        assert_one(
            &health("kind = \"tcp\"\ntimeout = \"0s\""),
            "vip[0].health.timeout",
            &["longer than zero"],
        );
    }

    #[test]
    fn rise_and_fall_ranges() {
        for key in ["rise", "fall"] {
            for value in ["0", "101"] {
                assert_one(
                    &health(&format!("kind = \"tcp\"\n{key} = {value}")),
                    &format!("vip[0].health.{key}"),
                    &[&format!("{value} is out of range: use 1..=100")],
                );
            }
        }
        let h = ok(&health("kind = \"tcp\"\nrise = 1\nfall = 100"))
            .config
            .vips[0]
            .health
            .clone();
        assert_eq!((h.rise, h.fall), (1, 100));
    }

    #[test]
    fn http_keys_only_on_http_checks_and_udp_keys_only_on_udp() {
        for key in ["path = \"/x\"", "expect-status = 204", "host = \"a.test\""] {
            let name = key.split(' ').next().unwrap();
            assert_one(
                &health(&format!("kind = \"tcp\"\n{key}")),
                &format!("vip[0].health.{name}"),
                &["only http/https checks use this key, but kind is \"tcp\""],
            );
        }
        for key in [
            "send = \"x\"",
            "send-hex = \"00\"",
            "expect = \"x\"",
            "expect-hex = \"00\"",
        ] {
            let name = key.split(' ').next().unwrap();
            assert_one(
                &health(&format!("kind = \"https\"\n{key}")),
                &format!("vip[0].health.{name}"),
                &["only udp checks use this key, but kind is \"https\""],
            );
        }
        // The udp check still reports its missing send alongside.
        let errs = errors(&health("kind = \"udp\"\npath = \"/\""));
        let paths: Vec<&str> = errs.iter().map(ConfigError::path).collect();
        assert_eq!(paths, ["vip[0].health.path", "vip[0].health.send"]);
    }

    #[test]
    fn http_fields_are_checked() {
        assert_one(
            &health("kind = \"http\"\npath = \"healthz\""),
            "vip[0].health.path",
            &["must start with \"/\""],
        );
        assert_one(
            &health("kind = \"http\"\npath = \"/a b\""),
            "vip[0].health.path",
            &["without spaces"],
        );
        assert_one(
            &health("kind = \"http\"\nhost = \"a.test\\r\\nX: y\""),
            "vip[0].health.host",
            &["without spaces or control characters"],
        );
        for status in ["99", "600"] {
            assert_one(
                &health(&format!("kind = \"http\"\nexpect-status = {status}")),
                "vip[0].health.expect-status",
                &["use 100..=599"],
            );
        }
        let kind = ok(&health("kind = \"https\"\nexpect-status = 204"))
            .config
            .vips[0]
            .health
            .kind
            .clone();
        assert_eq!(
            kind,
            CheckKind::Http {
                path: "/".into(),
                expect_status: 204,
                tls: true,
                host: None
            }
        );
    }

    #[test]
    fn udp_fields_are_checked() {
        assert_one(
            &health("kind = \"udp\""),
            "vip[0].health.send",
            &["needs send or send-hex"],
        );
        assert_one(
            &health("kind = \"udp\"\nsend = \"a\"\nsend-hex = \"61\""),
            "vip[0].health.send-hex",
            &["conflicts with vip[0].health.send"],
        );
        assert_one(
            &health("kind = \"udp\"\nsend-hex = \"abc\""),
            "vip[0].health.send-hex",
            &["odd number of hex digits"],
        );
        assert_one(
            &health("kind = \"udp\"\nsend = \"\"\nexpect-hex = \"zz\""),
            "vip[0].health.expect-hex",
            &["only 0-9, a-f and A-F"],
        );
        let kind = ok(&health(
            "kind = \"udp\"\nsend = \"\"\nexpect-hex = \"DE ad\"",
        ))
        .config
        .vips[0]
            .health
            .kind
            .clone();
        assert_eq!(
            kind,
            CheckKind::Udp {
                send: vec![],
                expect: Some(vec![0xde, 0xad])
            }
        );
    }

    #[test]
    fn port_zero_vip_needs_a_probe_port() {
        let vip0 = |health: &str, b2: &str| {
            with_agent(
                &(vip("203.0.113.10", health).replace("port = 80", "port = 0")
                    + &backend("198.51.100.1", "check-port = 22")
                    + &backend("198.51.100.2", b2)),
            )
        };
        for kind in ["tcp", "http", "https"] {
            assert_one(
                &vip0(&format!("[vip.health]\nkind = \"{kind}\""), ""),
                "vip[0].health.port",
                &[&format!(
                    "tcp/203.0.113.10:* listens on all ports (port 0), so the {kind} check has no port to probe on backend 198.51.100.2"
                )],
            );
        }
        assert_one(
            &vip0("[vip.health]\nkind = \"udp\"\nsend = \"x\"", ""),
            "vip[0].health.port",
            &["udp check"],
        );
        // Fixed by a check port on every backend, or a health.port; kind none needs none.
        assert!(check(&vip0(tcp_check(), "check-port = 23")).is_ok());
        let c = ok(&vip0("[vip.health]\nkind = \"tcp\"\nport = 9", "")).config;
        let ports: Vec<_> = c.vips[0].backends.iter().map(|b| b.check_port).collect();
        assert_eq!(ports, [Some(22), Some(9)]);
        assert!(check(&vip0("[vip.health]\nkind = \"none\"", "")).is_ok());
    }

    #[test]
    fn check_ports_must_be_nonzero() {
        assert_one(
            &health("kind = \"tcp\"\nport = 0"),
            "vip[0].health.port",
            &["use 1..=65535"],
        );
        let text = with_agent(
            &(vip("203.0.113.10", tcp_check()) + &backend("198.51.100.1", "check-port = 0")),
        );
        assert_one(&text, "vip[0].backend[0].check-port", &["use 1..=65535"]);
    }

    // --- all errors at once, order independence -------------------------------------------

    #[test]
    fn all_errors_are_collected() {
        let text = r#"
[agent]
interfaces = ["eth9"]
gue-port = 0
mtu = 100
[[vip]]
address = "224.0.0.1"
port = 80
protocol = "tcp"
mode = "ipip"
  [[vip.backend]]
  address = "198.51.100.1"
  weight = 10001
"#;
        let e = check(text).unwrap_err();
        let paths: Vec<&str> = e.iter().map(ConfigError::path).collect();
        assert_eq!(
            paths,
            [
                "agent.interfaces[0]",
                "agent.gue-port",
                "agent.mtu",
                "vip[0].address",
                "vip[0].backend[0].weight",
                "agent.lb-src-v4",
            ]
        );
        let shown = e.to_string();
        assert!(
            shown.starts_with("6 configuration errors:\n  - agent.interfaces[0]: "),
            "{shown}"
        );
        assert_eq!(shown.lines().count(), 7, "{shown}");
    }

    #[test]
    fn output_is_independent_of_file_order() {
        let a = with_agent(
            &(vip("203.0.113.10", tcp_check())
                + &backend("198.51.100.2", "")
                + &backend("198.51.100.1", "weight = 7")
                + &vip("2001:db8::10", tcp_check())
                + &backend("2001:db8::2", "")
                + &vip("203.0.113.9", tcp_check())
                + &backend("2001:db8::1", "")),
        );
        let b = with_agent(
            &(vip("2001:db8::10", tcp_check())
                + &backend("2001:db8::2", "")
                + &vip("203.0.113.9", tcp_check())
                + &backend("2001:db8::1", "")
                + &vip("203.0.113.10", tcp_check())
                + &backend("198.51.100.1", "weight = 7")
                + &backend("198.51.100.2", "")),
        );
        let (a, b) = (ok(&a).config, ok(&b).config);
        assert_eq!(a, b);
        assert!(a.vips.is_sorted_by_key(|v| v.id));
        assert!(
            a.vips
                .iter()
                .all(|v| v.backends.is_sorted_by_key(|b| b.addr))
        );
        let id: VipId = VipId {
            addr: "203.0.113.10".parse().unwrap(),
            port: 80,
            proto: Proto::Tcp,
        };
        assert_eq!(a.vip(&id).unwrap().backends[0].weight, 7);
    }

    #[test]
    fn load_reads_files() {
        let dir = std::env::temp_dir().join(format!("xlb-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("xlb.toml");
        std::fs::write(&file, EXAMPLE).unwrap();
        assert!(load(&file, &env).is_ok());
        let missing = dir.join("missing.toml");
        let e = load(&missing, &env).unwrap_err();
        assert!(matches!(e.0[0], ConfigError::Read { .. }));
        assert!(e.to_string().contains("missing.toml: cannot read"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    // --- durations, hex --------------------------------------------------------------------

    #[test]
    fn duration_parsing() {
        for (s, d) in [
            ("500ms", Duration::from_millis(500)),
            ("2s", Duration::from_secs(2)),
            ("1.5s", Duration::from_millis(1500)),
            ("0.1s", Duration::from_millis(100)),
            ("1m", Duration::from_secs(60)),
            ("1h", Duration::from_secs(3600)),
            (" 3s ", Duration::from_secs(3)),
            ("0ms", Duration::ZERO),
        ] {
            assert_eq!(parse_duration(s), Ok(d), "{s}");
        }
        for s in [
            "", "2", "s", "1.s", ".5s", "1..5s", "1.2.3s", "-1s", "2 s", "2sec", "1d", "1e3ms",
        ] {
            assert!(parse_duration(s).is_err(), "{s:?}");
        }
        for (d, s) in [
            (Duration::from_millis(500), "500ms"),
            (Duration::from_secs(2), "2s"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_secs(120), "2m"),
            (Duration::ZERO, "0s"),
        ] {
            assert_eq!(fmt_duration(d), s);
        }
    }

    #[test]
    fn hex_parsing() {
        assert_eq!(parse_hex("00ff 10"), Ok(vec![0, 255, 16]));
        assert_eq!(parse_hex(""), Ok(vec![]));
        assert!(parse_hex("0").is_err());
        assert!(parse_hex("0g").is_err());
    }

    // --- diff ------------------------------------------------------------------------------

    fn cfg(rest: &str) -> Config {
        ok(&with_agent(rest)).config
    }

    fn id(addr: &str) -> VipId {
        VipId {
            addr: addr.parse().unwrap(),
            port: 80,
            proto: Proto::Tcp,
        }
    }

    #[test]
    fn diff_of_equal_configs_is_empty() {
        let c = ok(EXAMPLE).config;
        let d = diff(&c, &c);
        assert!(d.is_empty());
        assert_eq!(d.to_string(), "no changes");
    }

    #[test]
    fn diff_vips_added_removed_changed() {
        let a = vip("203.0.113.1", tcp_check()) + &backend("198.51.100.1", "");
        let b = vip("203.0.113.2", tcp_check())
            + &backend("198.51.100.1", "")
            + &backend("198.51.100.2", "weight = 5")
            + &backend("198.51.100.3", "check-port = 81");
        let b2 = vip(
            "203.0.113.2",
            "source-affinity = true\n[vip.health]\nkind = \"tcp\"\nrise = 5",
        )
        .replace("ipip", "gue")
            + &backend("198.51.100.2", "weight = 0")
            + &backend("198.51.100.3", "check-port = 82")
            + &backend("198.51.100.4", "");
        let c3 = vip("203.0.113.3", tcp_check()) + &backend("198.51.100.1", "");
        let old = cfg(&format!("{a}{b}"));
        let new = cfg(&format!("{b2}{c3}"));
        let d = diff(&old, &new);
        assert!(d.agent.is_empty());
        assert_eq!(d.vips_added, [id("203.0.113.3")]);
        assert_eq!(d.vips_removed, [id("203.0.113.1")]);
        assert_eq!(
            d.vips_changed,
            [VipChange {
                id: id("203.0.113.2"),
                fields: vec![VipField::Mode, VipField::SourceAffinity, VipField::Health],
                backends_added: vec!["198.51.100.4".parse().unwrap()],
                backends_removed: vec!["198.51.100.1".parse().unwrap()],
                weights_changed: vec![WeightChange {
                    addr: "198.51.100.2".parse().unwrap(),
                    old: 5,
                    new: 0
                }],
                check_ports_changed: vec!["198.51.100.3".parse().unwrap()],
            }]
        );
        assert_eq!(
            d.to_string(),
            "- vip tcp/203.0.113.1:80\n+ vip tcp/203.0.113.3:80\n~ vip tcp/203.0.113.2:80: mode, \
             source-affinity, health, +backend 198.51.100.4, -backend 198.51.100.1, weight \
             198.51.100.2 5->0, check-port 198.51.100.3"
        );
        // Reverse direction mirrors added/removed.
        let r = diff(&new, &old);
        assert_eq!(r.vips_added, d.vips_removed);
        assert_eq!(r.vips_removed, d.vips_added);
    }

    #[test]
    fn diff_agent_fields() {
        let old = cfg("");
        let new = ok(&format!(
            "{}hash-seed = 1\nmtu = 1400\nmetrics-listen = \"off\"\n",
            AGENT.replace("[\"eth0\"]", "[\"eth0\", \"eth1\"]")
        ))
        .config;
        let d = diff(&old, &new);
        assert_eq!(
            d.agent,
            [
                AgentField::Interfaces,
                AgentField::HashSeed,
                AgentField::Mtu,
                AgentField::MetricsListen
            ]
        );
        assert!(d.vips_changed.is_empty() && d.vips_added.is_empty());
        assert_eq!(
            d.to_string(),
            "~ agent: interfaces, hash-seed, mtu, metrics-listen"
        );
    }

    #[test]
    fn diff_is_independent_of_file_order() {
        let x = vip("203.0.113.1", tcp_check()) + &backend("198.51.100.1", "");
        let y = vip("203.0.113.2", tcp_check()) + &backend("198.51.100.2", "");
        assert!(diff(&cfg(&format!("{x}{y}")), &cfg(&format!("{y}{x}"))).is_empty());
    }
}
