//! Which backend address families a VIP's forwarding mode can reach. Validation applies it to
//! the file's backends; the agent applies it to backends added through its API, so both accept
//! and refuse the same backends.

use std::net::IpAddr;

use crate::model::{Config, ForwardMode, Vip, VipId};

/// Why a backend cannot serve a VIP in its mode. The message says what to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FamilyError {
    #[error(
        "dsr-l2 delivers packets unchanged on the local L2 segment, so backend {backend} must \
         be {} like VIP {vip}: use a backend address of that family, or a tunnel mode (ipip/gue)",
        family_name(&vip.addr)
    )]
    DsrL2OtherFamily { vip: VipId, backend: IpAddr },
    #[error(
        "{} cannot carry IPv6 VIP {vip} to IPv4 backend {backend} (IPv6 in IPv4 is \
         unsupported): use an IPv6 backend address",
        mode.name()
    )]
    Ipv6OverIpv4 {
        vip: VipId,
        mode: ForwardMode,
        backend: IpAddr,
    },
    /// Validation reports this one as `NotUnicast`; only [`check_added_backend`] returns it.
    #[error(
        "backend {backend} is {what} address, which cannot be a backend: use the unicast \
         address of the backend host"
    )]
    NotUnicast {
        backend: IpAddr,
        /// "the unspecified", "a multicast", "the broadcast", "a loopback".
        what: &'static str,
    },
    /// Validation reports this one per family over all backends (`MissingLbSrc`); only
    /// [`check_added_backend`] returns it.
    #[error(
        "tunnelling to {} backend {backend} needs agent.{key} in the config: add it and reload",
        family_name(backend)
    )]
    NoTunnelSource {
        backend: IpAddr,
        /// `lb-src-v4` or `lb-src-v6`.
        key: &'static str,
    },
}

/// Can `mode` take traffic of `vip` to `backend`? The tunnels carry IPv4 in IPv6 but not IPv6
/// in IPv4 (not implemented); dsr-l2 only rewrites the Ethernet header, so the families must
/// match.
pub fn check_backend_family(
    vip: VipId,
    mode: ForwardMode,
    backend: IpAddr,
) -> Result<(), FamilyError> {
    match mode {
        ForwardMode::DsrL2 if vip.addr.is_ipv4() != backend.is_ipv4() => {
            Err(FamilyError::DsrL2OtherFamily { vip, backend })
        }
        ForwardMode::Ipip | ForwardMode::Gue if vip.addr.is_ipv6() && backend.is_ipv4() => {
            Err(FamilyError::Ipv6OverIpv4 { vip, mode, backend })
        }
        _ => Ok(()),
    }
}

/// The rules for a backend added to a running `config` (through the API): a unicast address as
/// the file's backends, its family, and the tunnel source (`agent.lb-src-v4`/`-v6`) a tunnelled
/// backend of that family needs.
pub fn check_added_backend(config: &Config, vip: &Vip, backend: IpAddr) -> Result<(), FamilyError> {
    if let Some(what) = super::validate::non_unicast(&backend) {
        return Err(FamilyError::NotUnicast { backend, what });
    }
    check_backend_family(vip.id, vip.mode, backend)?;
    let source_missing = match backend {
        IpAddr::V4(_) => config.lb_src_v4.is_none().then_some("lb-src-v4"),
        IpAddr::V6(_) => config.lb_src_v6.is_none().then_some("lb-src-v6"),
    };
    match source_missing {
        Some(key) if vip.mode != ForwardMode::DsrL2 => {
            Err(FamilyError::NoTunnelSource { backend, key })
        }
        _ => Ok(()),
    }
}

const fn family_name(addr: &IpAddr) -> &'static str {
    match addr {
        IpAddr::V4(_) => "IPv4",
        IpAddr::V6(_) => "IPv6",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigError;
    use crate::config::test_support::*;

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
    fn added_backends_follow_the_same_rules() {
        let text = with_agent(
            &(vip("2001:db8::10", "") + &backend("2001:db8::5", "")).replace("ipip", "gue"),
        );
        let cfg = ok(&text).config;
        let v = &cfg.vips[0];
        assert_eq!(
            check_added_backend(&cfg, v, "2001:db8::6".parse().unwrap()),
            Ok(())
        );
        let e = check_added_backend(&cfg, v, "198.51.100.1".parse().unwrap()).unwrap_err();
        assert!(matches!(e, FamilyError::Ipv6OverIpv4 { .. }), "{e}");
        assert!(
            e.to_string()
                .starts_with("gue cannot carry IPv6 VIP tcp/[2001:db8::10]:80 to IPv4 backend"),
            "{e}"
        );
    }

    #[test]
    fn added_tunnelled_backends_need_the_tunnel_source_of_their_family() {
        let v4 = vip("203.0.113.10", "") + &backend("198.51.100.1", "");
        let text = format!("[agent]\ninterfaces = [\"eth0\"]\nlb-src-v4 = \"192.0.2.1\"\n{v4}");
        let cfg = ok(&text).config;
        let v = &cfg.vips[0];
        assert_eq!(
            check_added_backend(&cfg, v, "198.51.100.2".parse().unwrap()),
            Ok(())
        );
        let e = check_added_backend(&cfg, v, "2001:db8::5".parse().unwrap()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "tunnelling to IPv6 backend 2001:db8::5 needs agent.lb-src-v6 in the config: add it \
             and reload"
        );
        // dsr-l2 does not tunnel: no source needed, only the same family.
        let dsr = cfg.vips[0].clone();
        let dsr = Vip {
            mode: ForwardMode::DsrL2,
            ..dsr
        };
        let no_src = Config {
            lb_src_v4: None,
            ..cfg.clone()
        };
        assert_eq!(
            check_added_backend(&no_src, &dsr, "198.51.100.2".parse().unwrap()),
            Ok(())
        );
        assert!(matches!(
            check_added_backend(&no_src, &dsr, "2001:db8::5".parse().unwrap()),
            Err(FamilyError::DsrL2OtherFamily { .. })
        ));
    }
}
