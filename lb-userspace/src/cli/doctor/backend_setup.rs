//! What doctor prints for each backend, which it cannot see: the settings per forwarding mode.

use std::fmt::Write as _;
use std::net::IpAddr;

use super::facts::HostFacts;
use super::report::BackendSetup;
use crate::config;
use crate::model::ForwardMode;

/// config's own addresses where it has them and documentation addresses otherwise.
pub fn backend_setup(f: &HostFacts) -> Vec<BackendSetup> {
    let cfg = f.config.config();
    let mut modes: Vec<ForwardMode> = Vec::new();
    for e in &f.encaps {
        if !modes.contains(&e.mode) {
            modes.push(e.mode);
        }
    }
    if modes.is_empty() {
        modes = vec![ForwardMode::Ipip, ForwardMode::Gue, ForwardMode::DsrL2];
    }
    let vips_of = |mode: ForwardMode| -> Vec<IpAddr> {
        let mut out: Vec<IpAddr> = cfg
            .map(|c| {
                c.vips
                    .iter()
                    .filter(|v| v.mode == mode)
                    .map(|v| v.id.addr)
                    .collect()
            })
            .unwrap_or_default();
        out.dedup();
        if out.is_empty() {
            out.push("203.0.113.10".parse().expect("literal"));
        }
        out
    };
    let lo = |addrs: &[IpAddr]| -> String {
        let cmds: Vec<String> = addrs
            .iter()
            .take(4)
            .map(|a| match a {
                IpAddr::V4(a) => format!("ip addr add {a}/32 dev lo"),
                IpAddr::V6(a) => format!("ip addr add {a}/128 dev lo nodad"),
            })
            .collect();
        let more = if addrs.len() > 4 {
            format!(" (and {} more VIPs)", addrs.len() - 4)
        } else {
            String::new()
        };
        format!(
            "own the VIP on loopback, so the stack accepts packets for it and replies from it: {}{more}",
            cmds.join("; ")
        )
    };
    let mut out = Vec::new();
    for mode in modes {
        let vips = vips_of(mode);
        let any_v4 = vips.iter().any(IpAddr::is_ipv4);
        let mut steps = vec![lo(&vips)];
        match mode {
            ForwardMode::Ipip | ForwardMode::Gue => {
                let v4 = cfg.map_or(Some("192.0.2.1".to_string()), |c| {
                    c.lb_src_v4.map(|a| a.to_string())
                });
                let v6 = cfg.and_then(|c| c.lb_src_v6.map(|a| a.to_string()));
                let mut cmd = "xlb decap attach --iface eth0".to_string();
                if let Some(a) = &v4 {
                    let _ = write!(cmd, " --lb-src-v4 {a}");
                }
                if let Some(a) = &v6 {
                    let _ = write!(cmd, " --lb-src-v6 {a}");
                }
                if mode == ForwardMode::Gue {
                    let port = cfg.map_or(config::DEFAULT_GUE_PORT, |c| c.gue_port);
                    let _ = write!(cmd, " --gue-port {port}");
                }
                steps.push(format!(
                    "strip the tunnel on the receiving interface (eth0 here), only for packets \
                     from the LB's lb-src addresses: {cmd}"
                ));
                if any_v4 {
                    steps.push(
                        "rp_filter 0 or 2 on the receiving interface and `all` (the inner \
                         packet's source is the client): sysctl -w \
                         net.ipv4.conf.all.rp_filter=2 net.ipv4.conf.eth0.rp_filter=2"
                            .to_string(),
                    );
                }
                steps.push(
                    "verify: xlb decap stats (decap_ipip / decap_gue grow with traffic; a \
                     growing pass_not_from_lb means --lb-src-* differs from the LB's lb-src)"
                        .to_string(),
                );
            }
            ForwardMode::DsrL2 => {
                if any_v4 {
                    steps.push(
                        "do not answer ARP for the VIP (the LB does): sysctl -w \
                         net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2 \
                         net.ipv4.conf.eth0.arp_ignore=1 net.ipv4.conf.eth0.arp_announce=2"
                            .to_string(),
                    );
                    steps.push(
                        "rp_filter 0 or 2 on the receiving interface and `all`: sysctl -w \
                         net.ipv4.conf.all.rp_filter=2 net.ipv4.conf.eth0.rp_filter=2"
                            .to_string(),
                    );
                }
                steps.push(
                    "be on the LB's L2 segment (same VLAN): frames arrive with only the \
                     destination MAC rewritten"
                        .to_string(),
                );
            }
        }
        steps.push(
            "replies go straight to the client with the VIP as source: the backend's network \
             must not filter that as spoofed"
                .to_string(),
        );
        out.push(BackendSetup {
            mode: mode.name(),
            steps,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::doctor::fixtures::*;
    use crate::cli::doctor::gather::encaps_of;

    #[test]
    fn backend_setup_uses_the_config() {
        let cfg = validated(CONFIG).config;
        let f = HostFacts {
            encaps: encaps_of(&cfg),
            encaps_from_mode: false,
            config: valid(CONFIG),
            ..healthy()
        };
        let setup = backend_setup(&f);
        let modes: Vec<&str> = setup.iter().map(|b| b.mode).collect();
        assert_eq!(modes, ["ipip", "dsr-l2", "gue"]);
        let text = |mode: &str| {
            setup
                .iter()
                .find(|b| b.mode == mode)
                .unwrap()
                .steps
                .join("\n")
        };
        let ipip = text("ipip");
        assert!(ipip.contains("ip addr add 203.0.113.10/32 dev lo"));
        assert!(ipip.contains(
            "xlb decap attach --iface eth0 --lb-src-v4 192.0.2.1 --lb-src-v6 2001:db8::1"
        ));
        assert!(ipip.contains("rp_filter=2"));
        let gue = text("gue");
        assert!(gue.contains("ip addr add 2001:db8:10::53/128 dev lo nodad"));
        assert!(gue.contains("--gue-port 7000"));
        assert!(gue.contains("xlb decap stats"));
        // IPv6 only: no IPv4 sysctl advice.
        assert!(!gue.contains("rp_filter"));
        let dsr = text("dsr-l2");
        assert!(dsr.contains("ip addr add 203.0.113.20/32 dev lo"));
        assert!(dsr.contains("arp_ignore=1"));
        assert!(dsr.contains("arp_announce=2"));
    }

    #[test]
    fn backend_setup_without_config_covers_every_mode() {
        let f = HostFacts {
            encaps: Vec::new(),
            ..healthy()
        };
        let setup = backend_setup(&f);
        assert_eq!(setup.len(), 3);
        assert!(setup[0].steps.join(" ").contains("--lb-src-v4 192.0.2.1"));
    }
}
