//! Hand-built validated configs for tests that drive the reconciler, the API, the inspect CLI
//! or the health monitor (no TOML, no root). Built for this crate's unit tests and, through the
//! `test-fixtures` feature, for the integration suites; never part of a release build.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::model::{
    BackendSpec, CheckKind, Config, ForwardMode, HealthCheck, Interface, NoBackend, Proto, Vip,
    VipId, XdpMode,
};
use crate::reconcile::NetInfo;

/// Hash seed of [`config`].
pub const SEED: u32 = 7;
/// Destination MAC [`net`] gives every backend.
pub const BACKEND_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];

/// A check of kind `none` with the default timings.
pub fn no_check() -> HealthCheck {
    HealthCheck {
        kind: CheckKind::None,
        interval: Duration::from_secs(2),
        timeout: Duration::from_secs(1),
        rise: 2,
        fall: 3,
    }
}

/// An ipip VIP without health check; `backends` as (address, weight), sorted like validation
/// sorts them.
pub fn vip(addr: &str, port: u16, proto: Proto, backends: &[(&str, u32)]) -> Vip {
    let mut backends: Vec<BackendSpec> = backends
        .iter()
        .map(|(a, w)| BackendSpec {
            addr: a.parse().unwrap(),
            weight: *w,
            check_port: None,
        })
        .collect();
    backends.sort_by_key(|b| b.addr);
    Vip {
        id: VipId {
            addr: addr.parse().unwrap(),
            port,
            proto,
        },
        mode: ForwardMode::Ipip,
        src_affinity: false,
        icmp_echo: false,
        no_backend: NoBackend::Drop,
        health: no_check(),
        backends,
        min_healthy: None,
    }
}

/// A config for 8 VIPs and 63 backends on `eth0`, holding `vips` (sorted).
pub fn config(mut vips: Vec<Vip>) -> Config {
    vips.sort_by_key(|v| v.id);
    Config {
        interfaces: vec![Interface {
            name: "eth0".into(),
            xdp_mode: XdpMode::Auto,
        }],
        lb_src_v4: Some("192.0.2.1".parse().unwrap()),
        lb_src_v6: None,
        hash_seed: SEED,
        flow_table_size: 4096,
        max_vips: 8,
        max_backends: 64,
        gue_port: 6080,
        mtu: Some(1500),
        icmp_rate: 1000,
        icmp_burst: 100,
        outer_ttl: 64,
        udp_idle_timeout: Duration::from_secs(30),
        pin_dir: PathBuf::from("/sys/fs/bpf/xlb-test"),
        api_socket: PathBuf::from("/tmp/xlb.sock"),
        metrics_listen: None,
        detach_on_exit: false,
        vips,
        announce: None,
        continuity: None,
    }
}

/// Every backend of `cfg` reachable at [`BACKEND_MAC`].
pub fn net(cfg: &Config) -> NetInfo {
    NetInfo {
        src_mac: [2, 0, 0, 0, 0, 0xff],
        mtu: 1500,
        macs: cfg
            .vips
            .iter()
            .flat_map(|v| v.backends.iter().map(|b| (b.addr, BACKEND_MAC)))
            .collect::<std::collections::HashMap<IpAddr, [u8; 6]>>(),
    }
}
