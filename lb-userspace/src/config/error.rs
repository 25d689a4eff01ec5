//! The typed errors of loading a config, and the warnings validation may add.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::defaults::{INTERVAL_RANGE, MAX_VIPS_RANGE};
use super::duration::fmt_duration;
use super::family::FamilyError;
use super::file::FileProblem;
use crate::model::VipId;

/// One problem with the configuration. `Display` is `path: what is wrong: what to do`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read: {source}", file.display())]
    Read {
        file: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: {reason}", file.display())]
    Unreadable { file: PathBuf, reason: FileProblem },
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
    #[error("{path}: {error}")]
    UnsupportedBackendFamily { path: String, error: FamilyError },
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
        "{path}: {} is out of range: use {}..={}{hint}",
        fmt_duration(*value),
        fmt_duration(*min),
        fmt_duration(*max)
    )]
    DurationOutOfRange {
        path: String,
        value: Duration,
        min: Duration,
        max: Duration,
        /// Why the limits, with its leading punctuation, or empty.
        hint: &'static str,
    },
    #[error("{path}: {value} {reason}: {fix}")]
    ReservedNumber {
        path: String,
        value: u64,
        reason: &'static str,
        fix: &'static str,
    },
    #[error(
        "{path}: {value} exceeds the {count} backend{} of {vip}, so it could never be announced: lower it to at most {count}",
        if *count == 1 { "" } else { "s" }
    )]
    MinHealthyAboveBackends {
        path: String,
        value: u32,
        count: usize,
        vip: VipId,
    },
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
    #[error("{path}: {value:?} {reason}")]
    BadPeerAddress {
        path: String,
        value: String,
        reason: &'static str,
    },
}

impl ConfigError {
    /// The field path the error is about (`vip[2].backend[1].weight`, `agent.mtu`); empty for
    /// read errors and for TOML syntax errors that are not about one field.
    pub fn path(&self) -> &str {
        use ConfigError::*;
        match self {
            Read { .. } | Unreadable { .. } => "",
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
            | DurationOutOfRange { path, .. }
            | ReservedNumber { path, .. }
            | MinHealthyAboveBackends { path, .. }
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
            | RemoteMetrics { path, .. }
            | BadPeerAddress { path, .. } => path,
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
#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::*;

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
}
