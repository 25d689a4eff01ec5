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

/// What the BIRD checks expect, if BIRD is to be checked at all (the options' expectation).
pub fn bird_expectation(opts: &DoctorOptions, _cfg: Option<&Config>) -> Option<BirdExpectation> {
    opts.bird.clone()
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
