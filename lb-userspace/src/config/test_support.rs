//! Helpers shared by the config tests: a minimal valid `[agent]`, VIP and backend snippets,
//! and assertions on the errors a text produces.

use super::{ConfigError, ConfigErrors, Validated, load_str};

pub(crate) const EXAMPLE: &str = include_str!("../../../examples/xlb.toml");

pub(crate) const AGENT: &str = r#"
[agent]
interfaces = ["eth0"]
lb-src-v4 = "192.0.2.1"
lb-src-v6 = "2001:db8::1"
"#;

pub(crate) fn env(name: &str) -> bool {
    name == "eth0" || name == "eth1"
}

pub(crate) fn check(text: &str) -> Result<Validated, ConfigErrors> {
    load_str(text, &env)
}

pub(crate) fn ok(text: &str) -> Validated {
    match check(text) {
        Ok(v) => v,
        Err(e) => panic!("expected a valid config, got:\n{e}"),
    }
}

/// The agent section plus `rest`.
pub(crate) fn with_agent(rest: &str) -> String {
    format!("{AGENT}\n{rest}")
}

pub(crate) fn errors(text: &str) -> Vec<ConfigError> {
    match check(text) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(e) => e.0,
    }
}

/// Exactly one error; returns (path, message).
pub(crate) fn one(text: &str) -> (String, String) {
    let errs = errors(text);
    assert_eq!(errs.len(), 1, "expected one error, got {errs:#?}");
    (errs[0].path().to_owned(), errs[0].to_string())
}

pub(crate) fn assert_one(text: &str, path: &str, needles: &[&str]) -> ConfigError {
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

pub(crate) fn vip(addr: &str, extra: &str) -> String {
    format!(
        "[[vip]]\naddress = \"{addr}\"\nport = 80\nprotocol = \"tcp\"\nmode = \"ipip\"\n{extra}\n"
    )
}

pub(crate) fn backend(addr: &str, extra: &str) -> String {
    format!("[[vip.backend]]\naddress = \"{addr}\"\n{extra}\n")
}

pub(crate) fn tcp_check() -> &'static str {
    "[vip.health]\nkind = \"tcp\"\n"
}

pub(crate) fn health(kind_and_keys: &str) -> String {
    with_agent(
        &(vip("203.0.113.10", &format!("[vip.health]\n{kind_and_keys}"))
            + &backend("198.51.100.1", "")),
    )
}
