//! [`RawConfig`] -> [`Config`]: applies defaults, checks every rule and collects every problem.
//! One file per part of the file: the agent section, VIPs and backends, health checks; this one
//! holds the walk over the whole file and the rules across VIPs.

mod agent;
mod announce;
mod continuity;
mod health;
mod vip;

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use lb_common::limits::{DEFAULT_FLOW_TABLE_SIZE, DEFAULT_MAX_BACKENDS, DEFAULT_MAX_VIPS};

use super::defaults::*;
use super::duration::parse_duration;
use super::error::{ConfigError, ConfigErrors, Warning};
use super::raw::RawConfig;
use super::{Environment, Validated};
use crate::model::{Config, ForwardMode, Vip, VipId};

pub use health::{MAX_UDP_PAYLOAD, parse_hex};

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

/// One pass over the raw config that records every problem and goes on, so the operator sees
/// them all at once.
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

    /// `value` if in `min..=max`; otherwise records an error and returns `None`, for which
    /// callers substitute the default so validation can go on.
    fn range(
        &mut self,
        path: &str,
        value: u32,
        range: (u64, u64),
        hint: &'static str,
    ) -> Option<u32> {
        self.range_u64(path, value.into(), range, hint)
            .map(|_| value)
    }

    /// [`Validator::range`] for numbers the file may give wider than `u32`.
    fn range_u64(
        &mut self,
        path: &str,
        value: u64,
        (min, max): (u64, u64),
        hint: &'static str,
    ) -> Option<u64> {
        if (min..=max).contains(&value) {
            Some(value)
        } else {
            self.err(ConfigError::OutOfRange {
                path: path.to_owned(),
                value,
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
        let udp_idle_timeout = match a.udp_idle_timeout.as_deref() {
            // "0s": no timeout, UDP flows keep their entries as TCP ones do.
            Some(s) if parse_duration(s).is_ok_and(|d| d.is_zero()) => Duration::ZERO,
            value => self
                .bounded_duration(
                    "agent.udp-idle-timeout",
                    value,
                    DEFAULT_UDP_IDLE_TIMEOUT,
                    UDP_IDLE_TIMEOUT_RANGE,
                    " or 0s for none (the program's idle clock ticks about every second and its \
                     stamps span at least 9.8 hours)",
                )
                .unwrap_or(DEFAULT_UDP_IDLE_TIMEOUT),
        };
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

        let announce = self.announce(raw.announce.as_ref(), &vips);
        let continuity = self.continuity(raw.continuity.as_ref());
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
            udp_idle_timeout,
            pin_dir,
            api_socket,
            metrics_listen,
            detach_on_exit: a.detach_on_exit,
            vips,
            announce,
            continuity,
        }
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

pub(super) fn non_unicast(addr: &IpAddr) -> Option<&'static str> {
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
#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::test_support::*;
    use crate::model::{CheckKind, NoBackend, Proto};

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
    fn no_vips_is_a_warning() {
        let v = ok(AGENT);
        assert_eq!(v.warnings[0].path, "vip");
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
}
