//! Facts and config shared by the judgement tests: a healthy host, one good interface, a config
//! with one VIP per mode, and `birdc -v` outputs captured from BIRD 2.0.12 (Debian bird2
//! 2.0.12-7; how: testdata/birdc/README.md).

use super::facts::{
    AgentFacts, AgentState, BirdExpectation, BirdFacts, BirdState, BirdView, Caps, ConfigFacts,
    Encap, HostFacts, IfaceFacts, LinkFacts, PinFacts, Probe,
};
use super::gather::{BIRDC_TIMEOUT, birdc};
use super::report::Check;
use crate::config;
use crate::model::ForwardMode;
use crate::paths::{DEFAULT_API_SOCKET, DEFAULT_PIN_DIR};

pub(super) const CONFIG: &str = r#"
[agent]
interfaces = [{ name = "eth0", xdp-mode = "native" }]
lb-src-v4 = "192.0.2.1"
lb-src-v6 = "2001:db8::1"
gue-port = 7000

[[vip]]
address = "203.0.113.10"
port = 80
protocol = "tcp"
mode = "ipip"
no-backend = "pass"
  [vip.health]
  kind = "none"
  [[vip.backend]]
  address = "198.51.100.11"

[[vip]]
address = "203.0.113.20"
port = 443
protocol = "tcp"
mode = "dsr-l2"
  [vip.health]
  kind = "none"
  [[vip.backend]]
  address = "198.51.100.21"

[[vip]]
address = "2001:db8:10::53"
port = 53
protocol = "udp"
mode = "gue"
  [vip.health]
  kind = "none"
  [[vip.backend]]
  address = "2001:db8:20::11"
"#;

pub(super) fn validated(text: &str) -> config::Validated {
    config::load_str(text, &|n: &str| n == "eth0").expect("test config is valid")
}

pub(super) fn valid(text: &str) -> ConfigFacts {
    ConfigFacts::Valid {
        path: "/etc/xlb/xlb.toml".into(),
        validated: Box::new(validated(text)),
    }
}

pub(super) fn iface() -> IfaceFacts {
    IfaceFacts {
        name: "eth0".into(),
        link: Ok(LinkFacts {
            mtu: 1500,
            up: true,
            carrier: true,
        }),
        driver: Some("ixgbe".into()),
        xdp: None,
        probe: Probe::Native,
        configured_mode: None,
        rp_filter: Some(0),
        pinned_link: false,
    }
}

pub(super) fn root() -> Caps {
    Caps {
        euid: 0,
        effective: 0x1ff_ffff_ffff,
    }
}

pub(super) fn healthy() -> HostFacts {
    HostFacts {
        kernel_release: Some("6.1.0-18-amd64".into()),
        bpffs_fstype: Some("bpf".into()),
        caps: Some(root()),
        memlock: Some(Some(8 << 20)),
        rp_filter_all: Some(0),
        config: ConfigFacts::NotGiven,
        encaps: vec![Encap {
            mode: ForwardMode::DsrL2,
            inner_v6: false,
            outer_v6: false,
        }],
        encaps_from_mode: true,
        ifaces: vec![iface()],
        pin: PinFacts {
            dir: DEFAULT_PIN_DIR.into(),
            ..PinFacts::default()
        },
        agent: AgentFacts {
            socket: DEFAULT_API_SOCKET.into(),
            state: AgentState::NotRunning,
        },
        bird: None,
    }
}

pub(super) fn has_fix(c: &Check, snippet: &str) -> bool {
    c.fix.iter().any(|f| f.contains(snippet))
}

#[track_caller]
pub(super) fn assert_fix(c: &Check, snippet: &str) {
    assert!(
        has_fix(c, snippet),
        "no fix containing {snippet:?} in {c:#?}"
    );
}

pub(super) fn ipip_v4() -> Encap {
    Encap {
        mode: ForwardMode::Ipip,
        inner_v6: false,
        outer_v6: false,
    }
}

macro_rules! birdc_output {
    ($name:literal) => {
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/testdata/birdc/",
            $name
        ))
    };
}

pub(super) const BIRD_STATUS: &str = birdc_output!("show-status.txt");
/// kern_xlb4/6 learning table 200, router1 established, router2 with an unreachable neighbor.
pub(super) const BIRD_PROTOCOLS: &str = birdc_output!("show-protocols-all-healthy.txt");
/// A kernel protocol on the main table only, router1 refused with "Bad peer AS".
pub(super) const BIRD_PROTOCOLS_BROKEN: &str = birdc_output!("show-protocols-all-broken.txt");
/// router1 shut down by the router.
pub(super) const BIRD_PROTOCOLS_PEER_SHUTDOWN: &str =
    birdc_output!("show-protocols-all-peer-shutdown.txt");
/// `show protocols all router2` after `birdc disable router2`.
pub(super) const BIRD_PROTOCOLS_DISABLED: &str = birdc_output!("show-protocols-all-disabled.txt");
/// Only the device protocol.
pub(super) const BIRD_PROTOCOLS_EMPTY: &str = birdc_output!("show-protocols-all-empty.txt");
/// `show route table all where krt_source = 200`: 203.0.113.10/32 and 2001:db8:10::53/128.
pub(super) const BIRD_ROUTES: &str = birdc_output!("show-route-krt-source.txt");
pub(super) const BIRD_ROUTES_EMPTY: &str = birdc_output!("show-route-krt-source-empty.txt");

pub(super) fn bird_expect() -> BirdExpectation {
    BirdExpectation {
        socket: "/run/bird/bird.ctl".into(),
        table: 200,
        protocol: 200,
        vips: vec![
            "203.0.113.10".parse().unwrap(),
            "2001:db8:10::53".parse().unwrap(),
        ],
        timeout: BIRDC_TIMEOUT,
    }
}

/// BIRD answering with these outputs, and kernel table 200 holding `kernel`.
pub(super) fn bird_facts(protocols: &str, routes: &str, kernel: &[&str]) -> BirdFacts {
    let (version, status) = birdc::parse_status(BIRD_STATUS).unwrap();
    BirdFacts {
        expect: bird_expect(),
        state: BirdState::Running(BirdView {
            version,
            status,
            protocols: Ok(birdc::parse_protocols(protocols).unwrap()),
            learned: Ok(birdc::parse_routes(routes).unwrap()),
        }),
        kernel_routes: Ok(kernel.iter().map(|a| a.parse().unwrap()).collect()),
    }
}

/// The healthy BIRD: both VIP routes in table 200 and learned.
pub(super) fn bird_healthy() -> BirdFacts {
    bird_facts(
        BIRD_PROTOCOLS,
        BIRD_ROUTES,
        &["203.0.113.10", "2001:db8:10::53"],
    )
}
