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
    #[error("{}", syntax_message(path, error, None))]
    Syntax {
        path: String,
        #[source]
        error: toml::de::Error,
    },
    /// A TOML date or time where a key's value belongs: no key takes one, and toml's own
    /// message for it ("invalid type: map") would mislead. Shown like [`ConfigError::Syntax`].
    #[error("{}", syntax_message(path, error, Some(DATETIME_FIX)))]
    DateTime {
        path: String,
        #[source]
        error: toml::de::Error,
    },
    /// A text longer than what it is used for can carry (a UDP check's payload).
    #[error("{path}: {len} bytes is too long: {what} carries at most {max} bytes")]
    TooLong {
        path: String,
        len: usize,
        max: usize,
        what: &'static str,
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
        "{path}: {} is not an IP address: write e.g. \"192.0.2.10\" or \"2001:db8::10\"",
        quoted(value)
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
    #[error("{path}: {} is not a valid interface name: {reason}", quoted(name))]
    InvalidInterfaceName {
        path: String,
        name: String,
        reason: &'static str,
    },
    #[error(
        "{path}: interface {} is already listed at {first}: list each interface once",
        quoted(name)
    )]
    DuplicateInterface {
        path: String,
        name: String,
        first: String,
    },
    #[error(
        "{path}: interface {} does not exist in the agent's network namespace: check `ip link` (names are case-sensitive)",
        quoted(name)
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
        "{path}: {} is not a duration: {reason} (write e.g. \"500ms\", \"2s\", \"1.5s\", \"1m\")",
        quoted(value)
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
    #[error("{path}: {} {reason}", quoted(value))]
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
    #[error("{path}: {} {reason}", quoted(value))]
    InvalidPath {
        path: String,
        value: String,
        reason: &'static str,
    },
    #[error(
        "{path}: {} is not an address:port: write e.g. \"127.0.0.1:9477\" or \"[::1]:9477\", or \"off\" to disable",
        quoted(value)
    )]
    InvalidSocketAddr { path: String, value: String },
    #[error(
        "{path}: {addr} is not a loopback address and the metrics endpoint has no authentication: listen on 127.0.0.1 or [::1], or set agent.metrics-allow-remote = true to expose it deliberately"
    )]
    RemoteMetrics { path: String, addr: SocketAddr },
    #[error("{path}: {} {reason}", quoted(value))]
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
            | DateTime { path, .. }
            | TooLong { path, .. }
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

const DATETIME_FIX: &str = "a date or time, which no xlb key takes: write the value as \
                            examples/xlb.toml shows it for this key (quoted if it is text)";

/// Longest source line a syntax error shows: a huge line (a minified file, a run of brackets)
/// would otherwise be copied whole into the message.
const SNIPPET_LINE_MAX: usize = 160;

/// toml's message, prefixed by the path, in TOML's words rather than serde's (`table`, not
/// `map`; `a whole number from 0 to 65535`, not `u16`), its source lines cut to
/// [`SNIPPET_LINE_MAX`], and its explanation replaced by `replacement` when given.
fn syntax_message(path: &str, error: &toml::de::Error, replacement: Option<&str>) -> String {
    let shown = error.to_string();
    let mut out: Vec<String> = Vec::new();
    let mut explanation: Vec<&str> = Vec::new();
    for line in shown.trim_end().lines() {
        if line.starts_with("TOML parse error") {
            out.push(line.to_owned());
        } else if is_snippet_line(line) && explanation.is_empty() {
            out.push(cut(line));
        } else {
            explanation.push(line);
        }
    }
    match replacement {
        Some(r) => out.push(r.to_owned()),
        None => out.extend(explanation.iter().map(|l| middle_cut(&in_toml_words(l)))),
    }
    let msg = out.join("\n");
    if path.is_empty() {
        msg
    } else {
        format!("{path}: {msg}")
    }
}

/// An explanation line quoting a huge value (`invalid type: string "xxx…", expected u32`),
/// cut in the middle so both what was found and what was expected stay.
fn middle_cut(line: &str) -> String {
    const HEAD: usize = 150;
    const TAIL: usize = 100;
    let n = line.chars().count();
    if n <= HEAD + TAIL + 20 {
        return line.to_owned();
    }
    let head: String = line.chars().take(HEAD).collect();
    let tail: String = line.chars().skip(n - TAIL).collect();
    format!("{head}… ({} characters) …{tail}", n - HEAD - TAIL)
}

/// toml's snippet lines: `  |`, `4 | mtu = x`, `  |       ^^^`.
fn is_snippet_line(line: &str) -> bool {
    line.trim_start_matches(|c: char| c.is_ascii_digit() || c == ' ')
        .starts_with('|')
}

fn cut(line: &str) -> String {
    match line.char_indices().nth(SNIPPET_LINE_MAX) {
        Some((at, _)) => format!("{}…", &line[..at]),
        None => line.to_owned(),
    }
}

/// serde's words for TOML's things.
fn in_toml_words(line: &str) -> String {
    if line.contains("max recursion depth") {
        return "tables and arrays nested too deep (no xlb key nests more than a few levels): \
                remove the extra brackets or braces"
            .to_owned();
    }
    let mut s = line
        .replace("invalid type: map", "invalid type: table")
        .replace("invalid type: sequence", "invalid type: array")
        .replace("expected a sequence", "expected an array")
        .replace("expected a map", "expected a table")
        .replace(" as i128", "");
    for (ty, words) in [
        ("u8", "a whole number from 0 to 255"),
        ("u16", "a whole number from 0 to 65535"),
        ("u32", "a whole number from 0 to 4294967295"),
        ("u64", "a whole number from 0 up"),
    ] {
        let from = format!("expected {ty}");
        if s.ends_with(&from) {
            s.truncate(s.len() - ty.len());
            s.push_str(words);
        }
    }
    // `expected struct RawHealth` / `expected enum RawProto`: Rust names mean nothing here.
    for (kind, words) in [
        ("struct ", "a table"),
        ("enum ", "one of the key's names, quoted"),
    ] {
        if let Some(at) = s.find(&format!("expected {kind}")) {
            let start = at + "expected ".len();
            let end = s[start + kind.len()..]
                .find(|c: char| !c.is_alphanumeric() && c != '_')
                .map_or(s.len(), |i| start + kind.len() + i);
            s.replace_range(start..end, words);
        }
    }
    s
}

/// Longest part of an offending value an error quotes: a 40 kB string is still named, not
/// copied whole into the log.
const QUOTED_MAX: usize = 80;

/// `value` as `{:?}` shows it, cut to [`QUOTED_MAX`] characters with its full length.
fn quoted(value: &str) -> String {
    match value.char_indices().nth(QUOTED_MAX) {
        Some((at, _)) => format!("{:?}… ({} bytes)", &value[..at], value.len()),
        None => format!("{value:?}"),
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

    #[test]
    fn deep_nesting_is_explained_in_toml_words() {
        let text = format!("a = {}1{}\n", "[".repeat(5000), "]".repeat(5000));
        let (path, msg) = one(&text);
        assert_eq!(path, "");
        assert!(
            msg.starts_with("TOML parse error at line 1, column "),
            "{msg}"
        );
        assert!(
            msg.ends_with("remove the extra brackets or braces"),
            "{msg}"
        );
        assert!(!msg.contains("recurse"), "{msg}");
    }

    #[test]
    fn huge_lines_are_cut_in_syntax_errors() {
        let text = format!("a = {}\n", "[".repeat(100_000));
        let msg = one(&text).1;
        assert!(msg.len() < 1000, "{} bytes", msg.len());
        assert!(msg.contains('…'), "{msg}");
    }

    #[test]
    fn datetime_values_are_named() {
        for (text, path) in [
            (format!("{AGENT}mtu = 1979-05-27T07:32:00Z\n"), "agent.mtu"),
            (
                "[agent]\ninterfaces = [07:32:00]\n".to_owned(),
                "agent.interfaces[0]",
            ),
            (
                with_agent(&vip("203.0.113.10", "").replace("\"tcp\"", "1979-05-27")),
                "vip[0].protocol",
            ),
        ] {
            let e = errors(&text).remove(0);
            assert!(matches!(e, ConfigError::DateTime { .. }), "{e:?}");
            assert_eq!(e.path(), path);
            let msg = e.to_string();
            assert!(
                msg.starts_with(&format!("{path}: TOML parse error at line")),
                "{msg}"
            );
            assert!(
                msg.contains("a date or time, which no xlb key takes"),
                "{msg}"
            );
            assert!(!msg.contains("map"), "{msg}");
        }
    }

    #[test]
    fn tables_and_arrays_where_values_belong_are_named_in_toml_words() {
        for (text, path, words) in [
            (
                format!("{AGENT}mtu = {{ a = 1 }}\n"),
                "agent.mtu",
                "invalid type: table, expected a whole number from 0 to 4294967295",
            ),
            (
                format!("{AGENT}gue-port = [1]\n"),
                "agent.gue-port",
                "invalid type: array, expected a whole number from 0 to 65535",
            ),
            (
                format!("{AGENT}mtu = 99999999999999999999\n"),
                "agent.mtu",
                "integer `99999999999999999999`, expected a whole number",
            ),
            (
                with_agent(&(vip("203.0.113.10", "") + "health = 3\n")),
                "vip[0].health",
                "expected a table",
            ),
            (
                with_agent(&vip("203.0.113.10", "").replace("\"tcp\"", "[\"tcp\"]")),
                "vip[0].protocol",
                "",
            ),
        ] {
            let (p, msg) = one(&text);
            assert_eq!(p, path, "{msg}");
            assert!(msg.contains(words), "{msg}");
            for rust in ["map", "sequence", "u32", "u16", "i128", "Raw"] {
                assert!(!msg.contains(rust), "{rust} in {msg}");
            }
        }
    }

    #[test]
    fn overlong_udp_payloads_are_refused() {
        let max = crate::config::MAX_UDP_PAYLOAD;
        let text = health(&format!(
            "kind = \"udp\"\nsend = \"{}\"",
            "x".repeat(max + 1)
        ));
        let e = assert_one(
            &text,
            "vip[0].health.send",
            &["65508 bytes is too long: a UDP datagram carries at most 65507 bytes"],
        );
        assert!(matches!(e, ConfigError::TooLong { .. }));
        let text = health(&format!(
            "kind = \"udp\"\nsend = \"\"\nexpect-hex = \"{}\"",
            "ab".repeat(max + 1)
        ));
        assert_one(
            &text,
            "vip[0].health.expect-hex",
            &["65508 bytes is too long"],
        );
        // The largest datagram is fine.
        let text = health(&format!("kind = \"udp\"\nsend = \"{}\"", "x".repeat(max)));
        assert!(check(&text).is_ok());
    }

    #[test]
    fn huge_values_are_quoted_cut() {
        let long = "x".repeat(40_000);
        let text = with_agent(&vip(&long, ""));
        let e = assert_one(
            &text,
            "vip[0].address",
            &["… (40000 bytes) is not an IP address"],
        );
        assert!(e.to_string().len() < 400, "{e}");
        let (path, msg) = one(&format!("{AGENT}mtu = \"{long}\"\n"));
        assert_eq!(path, "agent.mtu");
        assert!(msg.len() < 1000, "{} bytes", msg.len());
        assert!(
            msg.ends_with("expected a whole number from 0 to 4294967295"),
            "{msg}"
        );
    }
}
