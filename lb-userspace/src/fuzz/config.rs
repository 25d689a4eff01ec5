//! The config file: random text, and valid files mutated key by key and line by line. Parsing
//! and validation never panic, and every error names its key (and line, for TOML errors) in
//! the file's own words; an accepted config holds the limits validation promises.

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use toml::{Table, Value};

use super::{check_message, fuzz};
use crate::config::{ConfigError, MAX_UDP_PAYLOAD, load_str};
use crate::model::{CheckKind, Config};

const EXAMPLE: &str = include_str!("../../../examples/xlb.toml");

/// Pieces of TOML and of xlb's keys, for random text that gets past the first byte.
const FRAGMENTS: &[&str] = &[
    "[agent]",
    "[[vip]]",
    "[vip.health]",
    "[[vip.backend]]",
    "[announce]",
    "[continuity]",
    "interfaces = ",
    "address = ",
    "port = ",
    "protocol = ",
    "mode = ",
    "kind = ",
    "send = ",
    "path = ",
    "pin-dir = ",
    "weight = ",
    "\"eth0\"",
    "\"tcp\"",
    "\"udp\"",
    "\"ipip\"",
    "\"203.0.113.10\"",
    "\"2001:db8::1\"",
    "=",
    "[",
    "]",
    "{",
    "}",
    ",",
    "\n",
    " ",
    "1",
    "-1",
    "1e999",
    "nan",
    "1979-05-27",
    "07:32:00",
    "true",
    "\"\\u0000\"",
    "'''",
    "\"\"\"",
    "#",
    "\"",
    ".",
    "a.b.c",
    "0x10",
    "18446744073709551616",
];

fn random_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,300}",
        prop::collection::vec(any::<u8>(), 0..300)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        prop::collection::vec(prop::sample::select(FRAGMENTS), 0..60).prop_map(|f| f.concat()),
    ]
}

/// The values a mutation puts in place of another: extremes, wrong types, hostile strings.
fn hostile_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        prop::sample::select(vec![
            i64::MIN,
            -1,
            0,
            1,
            255,
            256,
            65_535,
            65_536,
            65_508,
            i64::from(u32::MAX),
            i64::from(u32::MAX) + 1,
            i64::MAX,
        ])
        .prop_map(Value::Integer),
        prop::sample::select(vec![f64::NAN, f64::INFINITY, -0.0, 1.5]).prop_map(Value::Float),
        any::<bool>().prop_map(Value::Boolean),
        prop::sample::select(vec![
            "",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "127.0.0.1",
            "::",
            "ff02::1",
            "::1",
            "203.0.113.10",
            "2001:db8::10",
            "203.0.113.10:7946",
            "0s",
            "1h",
            "-1s",
            "99999999999h",
            "1.5s",
            "/",
            "/a b",
            "/sys/fs/bpf/x\u{0}",
            "/run/\u{1}",
            "relative",
            "../..",
            "off",
            "zz",
            "0a1",
            "eth0",
            "lo",
            "a/b",
            "https",
            "dsr-l2",
        ])
        .prop_map(|s| Value::String(s.to_owned())),
        "\\PC{0,40}".prop_map(Value::String),
        (1usize..3).prop_map(|k| Value::String("x".repeat(k * 40_000))),
        Just(Value::Datetime("1979-05-27T07:32:00Z".parse().unwrap())),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z-]{1,12}", inner, 0..3)
                .prop_map(|m| Value::Table(m.into_iter().collect())),
        ]
    })
}

#[derive(Clone, Debug)]
enum Mutation {
    /// The n-th key (in a walk over the file) is removed.
    Drop(usize),
    /// The n-th key gets another value.
    Replace(usize, Value),
    /// An unknown key next to the n-th.
    Unknown(usize, String),
    /// A line of the text is repeated (a duplicate key, a repeated table header).
    DuplicateLine(usize),
    /// A line of the text is removed.
    DeleteLine(usize),
    /// Text inserted at a line.
    Insert(usize, String),
    /// Nesting far beyond any key's.
    Deep(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<usize>().prop_map(Mutation::Drop),
        (any::<usize>(), hostile_value()).prop_map(|(i, v)| Mutation::Replace(i, v)),
        (any::<usize>(), "[a-z-]{1,16}").prop_map(|(i, k)| Mutation::Unknown(i, k)),
        any::<usize>().prop_map(Mutation::DuplicateLine),
        any::<usize>().prop_map(Mutation::DeleteLine),
        (any::<usize>(), random_text()).prop_map(|(i, t)| Mutation::Insert(i, t)),
        (1usize..20_000).prop_map(Mutation::Deep),
    ]
}

#[derive(Clone, Debug)]
enum Seg {
    Key(String),
    Index(usize),
}

/// Paths of every value in the document (keys and array elements), in walk order.
fn paths(v: &Value, prefix: &mut Vec<Seg>, out: &mut Vec<Vec<Seg>>) {
    match v {
        Value::Table(t) => {
            for (k, c) in t {
                prefix.push(Seg::Key(k.clone()));
                out.push(prefix.clone());
                paths(c, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(a) => {
            for (i, c) in a.iter().enumerate() {
                prefix.push(Seg::Index(i));
                out.push(prefix.clone());
                paths(c, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

/// The container holding the value at `path`, and the value's place in it.
fn parent<'a>(root: &'a mut Value, path: &[Seg]) -> Option<(&'a mut Value, Seg)> {
    let (last, up) = path.split_last()?;
    let mut v = root;
    for seg in up {
        v = match (seg, v) {
            (Seg::Key(k), Value::Table(t)) => t.get_mut(k)?,
            (Seg::Index(i), Value::Array(a)) => a.get_mut(*i)?,
            _ => return None,
        };
    }
    Some((v, last.clone()))
}

/// `text` with `m` applied: tree mutations through toml's own writer (on text that still
/// parses), line ones on the text.
fn mutate(text: &str, m: &Mutation) -> String {
    let tree = matches!(
        m,
        Mutation::Drop(_) | Mutation::Replace(..) | Mutation::Unknown(..)
    );
    let text = match text.parse::<Table>() {
        Ok(base) if tree => mutate_tree(base, m),
        _ => text.to_owned(),
    };
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let at = |i: usize, n: usize| i % n.max(1);
    match m {
        Mutation::DuplicateLine(i) if !lines.is_empty() => {
            let j = at(*i, lines.len());
            lines.insert(j, lines[j].clone());
        }
        Mutation::DeleteLine(i) if !lines.is_empty() => {
            lines.remove(at(*i, lines.len()));
        }
        Mutation::Insert(i, t) => lines.insert(at(*i, lines.len() + 1), t.clone()),
        Mutation::Deep(depth) => {
            let j = at(*depth, lines.len() + 1);
            lines.insert(
                j,
                format!("deep = {}1{}", "[".repeat(*depth), "]".repeat(*depth)),
            );
        }
        _ => {}
    }
    lines.join("\n")
}

fn mutate_tree(base: Table, m: &Mutation) -> String {
    let mut doc = Value::Table(base);
    let mut all = Vec::new();
    paths(&doc, &mut Vec::new(), &mut all);
    let pick = |i: usize| all.get(i % all.len().max(1)).cloned().unwrap_or_default();
    match m {
        Mutation::Drop(i) => match parent(&mut doc, &pick(*i)) {
            Some((Value::Table(t), Seg::Key(k))) => drop(t.remove(&k)),
            Some((Value::Array(a), Seg::Index(j))) if j < a.len() => drop(a.remove(j)),
            _ => {}
        },
        Mutation::Replace(i, value) => match parent(&mut doc, &pick(*i)) {
            Some((Value::Table(t), Seg::Key(k))) => drop(t.insert(k, value.clone())),
            Some((Value::Array(a), Seg::Index(j))) if j < a.len() => a[j] = value.clone(),
            _ => {}
        },
        Mutation::Unknown(i, key) => {
            if let Some((Value::Table(t), _)) = parent(&mut doc, &pick(*i)) {
                t.insert(key.clone(), Value::Integer(1));
            }
        }
        _ => {}
    }
    // toml cannot write every tree (a table after a value in an array): such a mutation is
    // written as the empty document, which validation refuses too.
    let Value::Table(t) = doc else { unreachable!() };
    toml::to_string(&t).unwrap_or_default()
}

fn env(name: &str) -> bool {
    name == "eth0" || name == "eth1"
}

/// Parse and validate `text`: no panic (proptest catches one), and every error or accepted
/// config as the module doc says.
fn check(text: &str) -> Result<(), TestCaseError> {
    match load_str(text, &env) {
        Ok(v) => accepted(&v.config),
        Err(errors) => {
            prop_assert!(!errors.is_empty(), "an empty error list");
            for e in errors.iter() {
                let msg = e.to_string();
                check_message(&msg, e.path())?;
                if let ConfigError::Syntax { .. } | ConfigError::DateTime { .. } = e {
                    // toml places every error but a few shape errors of the whole document.
                    prop_assert!(
                        msg.contains("TOML parse error at line") || !e.path().is_empty(),
                        "a syntax error with neither line nor key: {msg}"
                    );
                    for rust in ["$__toml", "Raw", "i128", "sequence", "recurse"] {
                        prop_assert!(!msg.contains(rust), "{rust:?} in {msg}");
                    }
                }
            }
            Ok(())
        }
    }
}

/// What validation promises of a config it accepts.
fn accepted(c: &Config) -> Result<(), TestCaseError> {
    let mut paths = vec![c.pin_dir.as_os_str(), c.api_socket.as_os_str()];
    if let Some(k) = &c.continuity {
        paths.push(k.key_file.as_os_str());
    }
    if let Some(a) = &c.announce {
        paths.push(a.bird_socket.as_os_str());
    }
    for p in paths {
        prop_assert!(!p.as_encoded_bytes().contains(&0), "NUL in {p:?}");
    }
    for v in &c.vips {
        prop_assert!(unicast(v.id.addr), "VIP {}", v.id);
        for b in &v.backends {
            prop_assert!(unicast(b.addr), "backend {} of {}", b.addr, v.id);
        }
        match &v.health.kind {
            CheckKind::Udp { send, expect } => {
                prop_assert!(send.len() <= MAX_UDP_PAYLOAD);
                prop_assert!(expect.as_ref().is_none_or(|e| e.len() <= MAX_UDP_PAYLOAD));
            }
            CheckKind::Http { path, host, .. } => {
                prop_assert!(path.starts_with('/') && path.bytes().all(|b| b.is_ascii_graphic()));
                prop_assert!(
                    host.as_ref()
                        .is_none_or(|h| h.bytes().all(|b| b.is_ascii_graphic()))
                );
            }
            _ => {}
        }
        prop_assert!(v.health.timeout < v.health.interval);
    }
    Ok(())
}

/// True when `a` may be a VIP or a backend.
fn unicast(a: std::net::IpAddr) -> bool {
    !(a.is_unspecified()
        || a.is_multicast()
        || a.is_loopback()
        || matches!(a, std::net::IpAddr::V4(v4) if v4.is_broadcast()))
}

/// Valid files to start from: the documented example and a small one with every section.
fn bases() -> Vec<Table> {
    let small = r#"
[agent]
interfaces = ["eth0", { name = "eth1", xdp-mode = "generic" }]
lb-src-v4 = "192.0.2.1"
lb-src-v6 = "2001:db8::1"
pin-dir = "/sys/fs/bpf/xlb-fuzz"
[[vip]]
address = "203.0.113.10"
port = 53
protocol = "udp"
mode = "gue"
min-healthy = 1
[vip.health]
kind = "udp"
send-hex = "00 01"
expect = "ok"
interval = "1s"
timeout = "500ms"
[[vip.backend]]
address = "198.51.100.1"
weight = 10
[[vip]]
address = "2001:db8::10"
port = 0
protocol = "tcp"
mode = "dsr-l2"
[vip.health]
kind = "http"
port = 8080
path = "/healthz"
host = "example.test"
[[vip.backend]]
address = "2001:db8::2"
[announce]
enabled = true
table = 200
[continuity]
listen = "198.51.100.11:7946"
peers = ["198.51.100.12:7946"]
key-file = "/etc/xlb/continuity.key"
"#;
    [EXAMPLE, small]
        .iter()
        .map(|t| {
            load_str(t, &env).unwrap_or_else(|e| panic!("a base config is invalid: {e}"));
            t.parse::<Table>().unwrap()
        })
        .collect()
}

#[test]
fn fuzz_config_text() {
    fuzz("config_text", 400, random_text(), |text| check(&text));
}

#[test]
fn fuzz_config_mutated() {
    let bases = bases();
    let strategy = (0..bases.len(), prop::collection::vec(mutation(), 1..4));
    fuzz("config_mutated", 300, strategy, |(b, mutations)| {
        let mut text = toml::to_string(&bases[b]).unwrap();
        for m in &mutations {
            text = mutate(&text, m);
        }
        check(&text)
    });
}
