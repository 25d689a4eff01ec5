//! The file's shape: what [`super::parse`] deserializes the TOML into. Optional keys are
//! `Option`s; defaults are applied by validation. Unknown keys are errors
//! (`deny_unknown_fields` everywhere), so a typo never silently falls back to a default.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

/// The file as written. Optional keys are `Option`s here; defaults are applied by
/// [`super::validate`], so an error message can tell "you set this" from "the default".
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawConfig {
    #[serde(default)]
    pub agent: RawAgent,
    /// `[[vip]]` tables.
    #[serde(default)]
    pub vip: Vec<RawVip>,
    /// `[announce]`.
    pub announce: Option<RawAnnounce>,
    /// `[continuity]`.
    pub continuity: Option<RawContinuity>,
}

/// `[continuity]`: flow continuity across LB nodes (exceptions exchanged with peers).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawContinuity {
    /// Defaults to true: writing the table is turning it on.
    pub enabled: Option<bool>,
    pub listen: Option<String>,
    #[serde(default)]
    pub peers: Vec<String>,
    pub key_file: Option<String>,
    pub refresh: Option<String>,
    pub hold: Option<String>,
    pub max_exceptions: Option<u64>,
}

/// `[announce]`: routes for a BGP speaker (BIRD) in a kernel table. Numbers are read wider
/// than they are stored so that validation, not TOML, explains a value out of range.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawAnnounce {
    #[serde(default)]
    pub enabled: bool,
    pub table: Option<u64>,
    pub protocol: Option<u64>,
    pub min_healthy: Option<u32>,
    pub hold_down: Option<String>,
    pub withdraw_grace: Option<String>,
    pub drain_quiet: Option<String>,
    pub bird_socket: Option<String>,
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
    pub udp_idle_timeout: Option<String>,
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
    pub(super) const fn name(self) -> &'static str {
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
    /// Overrides `announce.min-healthy` for this VIP.
    pub min_healthy: Option<u32>,
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
#[cfg(test)]
mod tests {
    use super::super::parse;
    use crate::config::ConfigError;
    use crate::config::test_support::*;
    use crate::model::{Interface, XdpMode};

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
}
