//! Backend health checks: probes ([`probe`]), flap damping ([`damper`]) and the task set that
//! runs them ([`monitor`]).
//!
//! Health changes the table, never the packet path: the monitor only
//! reports transitions on a channel; the reconciler (the single map writer) decides what to do
//! with them (take the backend out of the ring, put it back). Nothing here touches a BPF map.
//!
//! # Initial state
//! A backend's state before its first damped result is chosen by the caller
//! ([`HealthMonitor::update_with`]). The agent's policy:
//! - a backend already in the ring adopted from the pinned maps of a previous run starts
//!   **up**: it was serving a moment ago, and starting it down would make a restarted agent
//!   drop (or pass) all of that VIP's traffic for `rise * interval`;
//! - any other backend (fresh start, added by a reload) starts **down** and needs `rise`
//!   successes: no traffic goes to a backend nobody has checked yet;
//! - a check of kind `none` is up, whatever the caller passed (an event says so if the caller
//!   passed down).
//!
//! [`default_initial`] is that policy without the adopted-ring knowledge, used by
//! [`HealthMonitor::update`].

pub mod damper;
pub mod monitor;
pub mod probe;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::model::{BackendSpec, CheckKind, HealthCheck, Vip, VipId};

pub use damper::Damper;
pub use monitor::{BackendHealth, HealthMonitor, HealthStats, UpdateSummary};
pub use probe::{ProbeError, probe};

/// A backend's damped health.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Health {
    Up,
    Down,
}

impl Health {
    pub const fn from_up(up: bool) -> Self {
        if up { Health::Up } else { Health::Down }
    }
    pub const fn is_up(self) -> bool {
        matches!(self, Health::Up)
    }
    pub const fn flipped(self) -> Self {
        match self {
            Health::Up => Health::Down,
            Health::Down => Health::Up,
        }
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_up() { "up" } else { "down" })
    }
}

/// A damped transition of one backend of one VIP (the same address behind two VIPs is checked,
/// and reported, per VIP: the checks may differ).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthEvent {
    pub vip: VipId,
    pub backend: IpAddr,
    pub up: bool,
    /// Latency of the probe that completed the transition; `None` for a failed probe or a
    /// transition without a probe (check kind `none`).
    pub latency: Option<Duration>,
    /// Human-readable cause, for logs and `xlb status`.
    pub reason: String,
}

/// The state a backend starts in when the caller knows nothing more (see the module docs):
/// up for a check of kind `none`, down for every real check.
pub fn default_initial(check: &HealthCheck) -> Health {
    match check.kind {
        CheckKind::None => Health::Up,
        _ => Health::Down,
    }
}

/// The socket address a backend's check probes: its `check_port`, else the VIP's port. `None`
/// when neither exists (a port-0 VIP whose backend has no `check_port`; config validation
/// rejects that for real checks, and the monitor reports it as a failing probe).
pub fn probe_target(vip: &Vip, backend: &BackendSpec) -> Option<SocketAddr> {
    let port = backend
        .check_port
        .or(Some(vip.id.port).filter(|&p| p != 0))?;
    Some(SocketAddr::new(backend.addr, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Proto;

    fn vip(port: u16) -> Vip {
        let mut v = crate::test_fixtures::vip("192.0.2.10", port, Proto::Tcp, &[]);
        v.health.kind = CheckKind::Tcp;
        v
    }

    fn backend(check_port: Option<u16>) -> BackendSpec {
        BackendSpec {
            addr: "198.51.100.1".parse().unwrap(),
            weight: 1,
            check_port,
        }
    }

    #[test]
    fn probe_target_prefers_check_port_then_vip_port() {
        let addr: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(
            probe_target(&vip(80), &backend(Some(8080))),
            Some(SocketAddr::new(addr, 8080))
        );
        assert_eq!(
            probe_target(&vip(80), &backend(None)),
            Some(SocketAddr::new(addr, 80))
        );
        assert_eq!(
            probe_target(&vip(0), &backend(Some(9))),
            Some(SocketAddr::new(addr, 9))
        );
        assert_eq!(probe_target(&vip(0), &backend(None)), None);
    }

    #[test]
    fn default_initial_is_up_only_for_kind_none() {
        let mut check = vip(80).health;
        assert_eq!(default_initial(&check), Health::Down);
        check.kind = CheckKind::None;
        assert_eq!(default_initial(&check), Health::Up);
    }
}
