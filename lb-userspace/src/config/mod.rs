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

mod defaults;
mod diff;
mod duration;
mod error;
mod family;
mod file;
mod raw;
#[cfg(test)]
mod test_support;
mod validate;

use std::path::Path;

pub use crate::model::AnnounceConfig;
pub use defaults::*;
pub use diff::{AgentField, ConfigDiff, VipChange, VipField, WeightChange, diff};
pub use duration::{fmt_duration, parse_duration};
pub use error::{ConfigError, ConfigErrors, Warning};
pub use family::{FamilyError, check_added_backend, check_backend_family};
pub use file::{FileProblem, MAX_CONFIG_BYTES, read_config_file};
pub use raw::{
    RawAgent, RawAnnounce, RawBackend, RawCheckKind, RawConfig, RawHealth, RawInterface, RawMode,
    RawNoBackend, RawProto, RawVip, RawXdpMode,
};
pub use validate::{MAX_UDP_PAYLOAD, parse_hex, validate};

use crate::model::Config;

/// A config that passed validation, with the warnings found on the way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validated {
    pub config: Config,
    pub warnings: Vec<Warning>,
}

/// What validation asks of the host. Tests pass a closure (`&|name: &str| name == "eth0"`).
pub trait Environment {
    fn interface_exists(&self, name: &str) -> bool;
}

impl<F: Fn(&str) -> bool> Environment for F {
    fn interface_exists(&self, name: &str) -> bool {
        self(name)
    }
}

/// The real host, asked through [`crate::netlink::interface_index`]: the network namespace of
/// the calling thread, which is the one the agent will attach in (also under `nsenter --net`).
#[derive(Clone, Copy, Debug, Default)]
pub struct HostEnvironment;

impl Environment for HostEnvironment {
    fn interface_exists(&self, name: &str) -> bool {
        match crate::netlink::interface_index(name) {
            Ok(index) => index.is_some(),
            // Not knowing is no reason to refuse the config: attaching reports a missing
            // interface precisely.
            Err(e) => {
                tracing::warn!("cannot look up interface {name:?}: {e}; assuming it exists");
                true
            }
        }
    }
}

/// TOML text -> [`RawConfig`]. Stops at the first syntax/shape error, which keeps toml's
/// line/column snippet and gains the field path where there is one.
pub fn parse(text: &str) -> Result<RawConfig, ConfigError> {
    let de = toml::Deserializer::parse(text).map_err(|error| ConfigError::Syntax {
        path: String::new(),
        error,
    })?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        // serde_path_to_error shows the root as "."; toml deserializes a date through a
        // private field, which names nothing in the file.
        let path = path.trim_end_matches(".$__toml_private_datetime");
        let path = if path == "." {
            String::new()
        } else {
            path.to_owned()
        };
        let error = e.into_inner();
        if is_datetime_at(text, &error) {
            ConfigError::DateTime { path, error }
        } else {
            ConfigError::Syntax { path, error }
        }
    })
}

/// Whether the error points at a TOML date or time.
fn is_datetime_at(text: &str, error: &toml::de::Error) -> bool {
    error
        .span()
        .and_then(|span| text.get(span))
        .is_some_and(|s| s.trim().parse::<toml::value::Datetime>().is_ok())
}

/// Parse and validate TOML text.
pub fn load_str(text: &str, env: &dyn Environment) -> Result<Validated, ConfigErrors> {
    validate(parse(text)?, env)
}

/// Read (see [`read_config_file`] for what is refused), parse and validate a config file.
pub fn load(path: &Path, env: &dyn Environment) -> Result<Validated, ConfigErrors> {
    load_str(&read_config_file(path)?, env)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::model::{CheckKind, ForwardMode, NoBackend};
    use test_support::*;

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
    fn host_environment_asks_the_current_namespace() {
        assert!(HostEnvironment.interface_exists("lo"));
        assert!(!HostEnvironment.interface_exists("xlb-nosuch0"));
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
}
