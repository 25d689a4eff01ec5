//! `[[vip]]` and its `[[vip.backend]]`s.

use std::collections::HashMap;
use std::net::IpAddr;

use super::{TunnelUse, Validator};
use crate::config::defaults::*;
use crate::config::error::ConfigError;
use crate::config::family::check_backend_family;
use crate::config::raw::{RawMode, RawNoBackend, RawProto, RawVip};
use crate::model::{BackendSpec, CheckKind, ForwardMode, MAX_WEIGHT, NoBackend, Proto, Vip, VipId};

impl Validator<'_> {
    pub(super) fn vip(
        &mut self,
        i: usize,
        rv: &RawVip,
        tunnels: &mut Vec<TunnelUse>,
    ) -> Option<Vip> {
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
            if let Some(id) = id
                && let Err(error) = check_backend_family(id, mode, baddr)
            {
                self.err(ConfigError::UnsupportedBackendFamily {
                    path: format!("{bpath}.address"),
                    error,
                });
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
            min_healthy: rv.min_healthy,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Warning;
    use crate::config::test_support::*;

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
}
