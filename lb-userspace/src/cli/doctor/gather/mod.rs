//! Gathering: reads the host into [`HostFacts`]. One file per source: the host (`/proc`,
//! rlimits), the interfaces (rtnetlink, ethtool, the probe), the pin directory, the agent,
//! BIRD (`bird`, with `birdc` parsing its client's output).

mod agent;
mod bird;
pub mod birdc;
mod host;
mod iface;
mod pins;

use std::path::{Path, PathBuf};

pub use agent::AGENT_TIMEOUT;
pub use bird::{BIRDC, BIRDC_TIMEOUT, gather_bird};
pub use host::{mount_fstype, parse_status};

use super::facts::{AgentFacts, BirdExpectation, ConfigFacts, Encap, HostFacts, missing_caps};
use crate::config::{self, HostEnvironment};
use crate::model::{Config, ForwardMode};
use crate::netlink::Netlink;
use crate::paths::{DEFAULT_API_SOCKET, DEFAULT_CONFIG, DEFAULT_PIN_DIR};

/// What to check.
#[derive(Clone, Debug, Default)]
pub struct DoctorOptions {
    /// `None`: [`DEFAULT_CONFIG`] if it exists.
    pub config: Option<PathBuf>,
    /// Empty: the config's interfaces.
    pub ifaces: Vec<String>,
    /// `None`: the config's modes.
    pub mode: Option<ForwardMode>,
    /// Never attach the probe program.
    pub no_probe: bool,
    /// Check BIRD against this; `None`: see [`bird_expectation`].
    pub bird: Option<BirdExpectation>,
}

/// What the BIRD checks expect, if BIRD is to be checked at all: the options' expectation, else
/// the config's `[announce]` (no `[announce]`: this node announces nothing, BIRD is not checked).
pub fn bird_expectation(opts: &DoctorOptions, cfg: Option<&Config>) -> Option<BirdExpectation> {
    if let Some(expect) = &opts.bird {
        return Some(expect.clone());
    }
    let cfg = cfg?;
    let announce = cfg.announce.as_ref()?;
    let mut vips: Vec<_> = cfg.vips.iter().map(|v| v.id.addr).collect();
    vips.sort_unstable();
    vips.dedup();
    Some(BirdExpectation {
        socket: announce.bird_socket.clone(),
        table: announce.table,
        protocol: announce.protocol,
        vips,
        timeout: BIRDC_TIMEOUT,
    })
}

/// Reads the host. Needs a tokio runtime (rtnetlink, the API socket).
pub async fn gather(opts: &DoctorOptions) -> HostFacts {
    let kernel_release = host::read_kernel_release();
    let config = read_config(opts.config.as_deref());
    let cfg = config.config().cloned();

    let (encaps, encaps_from_mode) = match (opts.mode, &cfg) {
        (Some(mode), _) => (
            vec![Encap {
                mode,
                inner_v6: false,
                outer_v6: false,
            }],
            true,
        ),
        (None, Some(c)) => (encaps_of(c), false),
        (None, None) => (Vec::new(), false),
    };

    let pin_dir = cfg
        .as_ref()
        .map_or_else(|| PathBuf::from(DEFAULT_PIN_DIR), |c| c.pin_dir.clone());
    let pin = pins::read_pin_dir(&pin_dir);
    let socket = cfg.as_ref().map_or_else(
        || PathBuf::from(DEFAULT_API_SOCKET),
        |c| c.api_socket.clone(),
    );
    let agent = AgentFacts {
        state: agent::read_agent(&socket).await,
        socket,
    };

    let bird = match bird_expectation(opts, cfg.as_ref()) {
        Some(expect) => Some(gather_bird(&expect).await),
        None => None,
    };

    let caps = host::read_caps();
    let can_probe = caps.is_some_and(|c| missing_caps(c).0.is_empty());
    let names: Vec<String> = if opts.ifaces.is_empty() {
        cfg.as_ref()
            .map(|c| c.interfaces.iter().map(|i| i.name.clone()).collect())
            .unwrap_or_default()
    } else {
        opts.ifaces.clone()
    };
    let netlink = Netlink::new().map_err(|e| format!("cannot open netlink: {e}"));
    let mut ifaces = Vec::new();
    for name in names {
        let configured_mode = cfg.as_ref().and_then(|c| {
            c.interfaces
                .iter()
                .find(|i| i.name == name)
                .map(|i| i.xdp_mode)
        });
        let probe = if opts.no_probe {
            Err("--no-probe")
        } else if !can_probe {
            Err("needs root")
        } else {
            Ok(())
        };
        let mut facts = iface::read_iface(netlink.as_ref(), name, probe).await;
        facts.configured_mode = configured_mode;
        facts.pinned_link = pin.links.contains(&facts.name);
        ifaces.push(facts);
    }

    HostFacts {
        kernel_release,
        bpffs_fstype: host::read_bpffs_fstype(),
        caps,
        memlock: host::read_memlock(),
        rp_filter_all: host::read_sysctl_u8("/proc/sys/net/ipv4/conf/all/rp_filter"),
        config,
        encaps,
        encaps_from_mode,
        ifaces,
        pin,
        agent,
        bird,
    }
}

/// Each distinct (mode, VIP family, backend family) of the config.
pub fn encaps_of(c: &Config) -> Vec<Encap> {
    let mut out = Vec::new();
    for v in &c.vips {
        let inner_v6 = v.id.addr.is_ipv6();
        let mut push = |e: Encap| {
            if !out.contains(&e) {
                out.push(e);
            }
        };
        if v.mode == ForwardMode::DsrL2 || v.backends.is_empty() {
            push(Encap {
                mode: v.mode,
                inner_v6,
                outer_v6: inner_v6,
            });
        }
        if v.mode != ForwardMode::DsrL2 {
            for b in &v.backends {
                push(Encap {
                    mode: v.mode,
                    inner_v6,
                    outer_v6: b.addr.is_ipv6(),
                });
            }
        }
    }
    out
}

fn read_config(given: Option<&Path>) -> ConfigFacts {
    let path = match given {
        Some(p) => p.to_path_buf(),
        None if Path::new(DEFAULT_CONFIG).exists() => PathBuf::from(DEFAULT_CONFIG),
        None => return ConfigFacts::NotGiven,
    };
    match config::load(&path, &HostEnvironment) {
        Ok(validated) => ConfigFacts::Valid {
            path,
            validated: Box::new(validated),
        },
        Err(e) => ConfigFacts::Invalid {
            path,
            error: e.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::model::{AnnounceConfig, Proto};
    use crate::test_fixtures::{config, vip};

    #[test]
    fn bird_is_checked_against_the_announce_table_with_each_vip_address_once() {
        let mut cfg = config(vec![
            vip("203.0.113.10", 80, Proto::Tcp, &[("198.51.100.11", 1)]),
            vip("203.0.113.10", 53, Proto::Udp, &[("198.51.100.11", 1)]),
            vip("2001:db8::10", 80, Proto::Tcp, &[("2001:db8:51::11", 1)]),
        ]);
        let opts = DoctorOptions::default();
        assert_eq!(
            bird_expectation(&opts, Some(&cfg)),
            None,
            "no [announce]: no BIRD"
        );
        cfg.announce = Some(AnnounceConfig {
            table: 4242,
            protocol: 201,
            min_healthy: 1,
            hold_down: Duration::from_secs(5),
            withdraw_grace: Duration::from_secs(3),
            drain_quiet: Duration::from_secs(10),
            bird_socket: "/run/bird/test.ctl".into(),
        });
        let e = bird_expectation(&opts, Some(&cfg)).expect("announce configured");
        assert_eq!(e.socket, Path::new("/run/bird/test.ctl"));
        assert_eq!((e.table, e.protocol), (4242, 201));
        let want: Vec<std::net::IpAddr> = vec![
            "203.0.113.10".parse().unwrap(),
            "2001:db8::10".parse().unwrap(),
        ];
        assert_eq!(e.vips, want);
        assert_eq!(bird_expectation(&opts, None), None, "no config: no BIRD");
    }

    use super::*;
    use crate::cli::doctor::fixtures::*;

    #[test]
    fn encaps_from_config() {
        let cfg = validated(CONFIG).config;
        let e = encaps_of(&cfg);
        assert!(e.contains(&ipip_v4()));
        assert!(e.contains(&Encap {
            mode: ForwardMode::Gue,
            inner_v6: true,
            outer_v6: true
        }));
        assert!(e.contains(&Encap {
            mode: ForwardMode::DsrL2,
            inner_v6: false,
            outer_v6: false
        }));
        assert_eq!(e.len(), 3);
    }
}
