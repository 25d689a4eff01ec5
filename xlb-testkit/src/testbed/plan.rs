//! The testbed's address plan (from `xlb-testplan`, shared with `cargo xtask bench`) and the
//! VIPs a test asks the agent for.

use std::collections::BTreeMap;
use std::net::SocketAddr;

pub use xlb_testplan::*;

/// The backend server, written next to the testbed's other files.
pub const BACKEND_PY: &str = include_str!("../backend.py");

/// One `[[vip]]` of [`Testbed::config`].
#[derive(Clone, Debug)]
pub struct VipSpec {
    pub mode: Mode,
    pub v6: bool,
    /// UDP to [`UDP_PORT`] instead of TCP to [`HTTP_PORT`].
    pub udp: bool,
    /// The `[vip.health]` table's lines; empty: no health check.
    pub health: String,
    /// Indices of the backends (of the VIP's family); `None`: all.
    pub backends: Option<Vec<usize>>,
    /// Weights by backend index (default 100).
    pub weights: BTreeMap<usize, u32>,
    /// The VIP's `min-healthy` (with `[announce]`); `None`: the config's default.
    pub min_healthy: Option<u32>,
}

/// HTTP check of `/healthz`: 500 ms interval, down after 2 failures, up after 1 success.
pub const FAST_HTTP_CHECK: &str = "  kind = \"http\"\n  path = \"/healthz\"\n  interval = \"500ms\"\n  timeout = \"300ms\"\n  rise = 1\n  fall = 2\n";
/// UDP check of the responder, same pace.
pub const FAST_UDP_CHECK: &str = "  kind = \"udp\"\n  send = \"ping\"\n  expect = \"backend-\"\n  interval = \"500ms\"\n  timeout = \"300ms\"\n  rise = 1\n  fall = 2\n";

impl VipSpec {
    pub fn tcp(mode: Mode, v6: bool) -> VipSpec {
        VipSpec {
            mode,
            v6,
            udp: false,
            health: FAST_HTTP_CHECK.into(),
            backends: None,
            weights: BTreeMap::new(),
            min_healthy: None,
        }
    }

    pub fn udp(mode: Mode, v6: bool) -> VipSpec {
        VipSpec {
            mode,
            v6,
            udp: true,
            health: FAST_UDP_CHECK.into(),
            backends: None,
            weights: BTreeMap::new(),
            min_healthy: None,
        }
    }

    pub fn health(mut self, lines: &str) -> VipSpec {
        self.health = lines.into();
        self
    }

    /// Only these backends (indices).
    pub fn only(mut self, backends: &[usize]) -> VipSpec {
        self.backends = Some(backends.to_vec());
        self
    }

    pub fn weight(mut self, backend: usize, weight: u32) -> VipSpec {
        self.weights.insert(backend, weight);
        self
    }

    /// Backends the VIP's ring needs before a node announces it.
    pub fn min_healthy(mut self, n: u32) -> VipSpec {
        self.min_healthy = Some(n);
        self
    }

    /// The VIP as `xlb` writes it (`tcp/203.0.113.10:80`).
    pub fn id(&self) -> lb_userspace::model::VipId {
        lb_userspace::model::VipId {
            addr: self.mode.vip(self.v6),
            port: if self.udp { UDP_PORT } else { HTTP_PORT },
            proto: if self.udp {
                lb_userspace::model::Proto::Udp
            } else {
                lb_userspace::model::Proto::Tcp
            },
        }
    }

    pub fn socket_addr(&self) -> SocketAddr {
        let id = self.id();
        SocketAddr::new(id.addr, id.port)
    }
}
