//! The control API's requests: status, reload, drain / weight, runtime backend changes, stop.
//! Each one decides against the agent's state and answers; none of them waits for the network
//! (a neighbour resolution they need runs afterwards, from the event loop).

use std::collections::HashMap;
use std::net::IpAddr;

use crate::api::{AgentInfo, HealthStatus, Request, Response, StatusInputs, StatusReport};
use crate::maps::{MapError, MapStore};
use crate::model::{BackendSpec, Config, ForwardMode, MAX_WEIGHT, Vip, VipId};

use super::state::Agent;

/// What a request asks of the event loop.
#[derive(Debug)]
pub(super) enum Answer {
    /// Send this response.
    Reply(Response),
    /// `xlb stop`: tear down, then answer.
    Stop { detach: bool },
}

impl<S: MapStore> Agent<S> {
    pub(super) fn answer(&mut self, request: Request) -> Answer {
        Answer::Reply(match request {
            Request::Status => match self.status() {
                Ok(r) => Response::Status(r),
                Err(e) => Response::error(format!("reading the maps: {e}")),
            },
            Request::Reload => match self.reload() {
                Ok(m) => Response::ok(format!("reloaded: {m}")),
                Err(e) => Response::error(format!("reload refused, running state unchanged: {e}")),
            },
            Request::Drain { vip, addr } => self.set_weight(vip, addr, 0, "drained"),
            Request::SetWeight { vip, addr, weight } => {
                self.set_weight(vip, addr, weight, "weight set")
            }
            Request::AddBackend { vip, addr, weight } => self.add_backend(vip, addr, weight),
            Request::RemoveBackend { vip, addr } => self.remove_backend(vip, addr),
            Request::Shutdown { detach } => return Answer::Stop { detach },
        })
    }

    fn status(&self) -> Result<StatusReport, MapError> {
        let cfg = self.effective();
        let mut health = HashMap::new();
        for h in self.health_stats.snapshot() {
            let s = if h.probes_ok + h.probes_failed == 0 && !h.up {
                HealthStatus::Unknown
            } else if h.up {
                HealthStatus::Up
            } else {
                HealthStatus::Down
            };
            health.insert((h.vip, h.backend), s);
        }
        let assigned = self.reconciler.backends();
        StatusReport::collect(
            &StatusInputs {
                config: &cfg,
                agent: AgentInfo {
                    config_path: self.config_path.clone(),
                    pin_dir: self.file.pin_dir.clone(),
                    interfaces: self
                        .file
                        .interfaces
                        .iter()
                        .map(|i| i.name.clone())
                        .collect(),
                    last_reload: self.last_reload.clone(),
                },
                overrides: &self.overrides,
                health: &health,
                net: &self.net,
                assigned: &assigned,
            },
            self.reconciler.store(),
        )
    }

    fn vip(&self, id: &VipId) -> Result<Vip, String> {
        self.effective()
            .vip(id)
            .cloned()
            .ok_or_else(|| format!("no VIP {id} in the running config"))
    }

    fn backend_known(&self, vip: &Vip, addr: IpAddr) -> Result<(), String> {
        if vip.backends.iter().any(|b| b.addr == addr) {
            Ok(())
        } else {
            Err(format!("{addr} is not a backend of {}", vip.id))
        }
    }

    fn set_weight(&mut self, id: VipId, addr: IpAddr, weight: u32, what: &str) -> Response {
        if weight > MAX_WEIGHT {
            return Response::error(format!(
                "weight {weight} is out of range: use 0..={MAX_WEIGHT} (0 drains the backend)"
            ));
        }
        let vip = match self.vip(&id) {
            Ok(v) => v,
            Err(e) => return Response::error(e),
        };
        if let Err(e) = self.backend_known(&vip, addr) {
            return Response::error(e);
        }
        self.overrides.weights.insert((id, addr), weight);
        match self.apply("api") {
            Ok(()) => Response::ok(format!("{id} {addr}: {what} (weight {weight})")),
            Err(e) => Response::error(format!("{e:#}")),
        }
    }

    fn add_backend(&mut self, id: VipId, addr: IpAddr, weight: u32) -> Response {
        if weight > MAX_WEIGHT {
            return Response::error(format!(
                "weight {weight} is out of range: use 0..={MAX_WEIGHT}"
            ));
        }
        let vip = match self.vip(&id) {
            Ok(v) => v,
            Err(e) => return Response::error(e),
        };
        if vip.backends.iter().any(|b| b.addr == addr) {
            return Response::error(format!("{addr} is already a backend of {id}"));
        }
        if let Err(e) = family_ok(&self.file, &vip, addr) {
            return Response::error(e);
        }
        self.removed.remove(&(id, addr));
        if !self
            .file
            .vip(&id)
            .is_some_and(|v| v.backends.iter().any(|b| b.addr == addr))
        {
            self.added.entry(id).or_default().push(BackendSpec {
                addr,
                weight,
                check_port: None,
            });
        }
        self.overrides.weights.insert((id, addr), weight);
        self.start_health();
        self.request_net();
        match self.apply("api") {
            Ok(()) => Response::ok(format!(
                "{id}: backend {addr} added (weight {weight}) until the next reload; it takes \
                 traffic once its next hop resolves and its health check passes"
            )),
            Err(e) => Response::error(format!("{e:#}")),
        }
    }

    fn remove_backend(&mut self, id: VipId, addr: IpAddr) -> Response {
        let vip = match self.vip(&id) {
            Ok(v) => v,
            Err(e) => return Response::error(e),
        };
        if let Err(e) = self.backend_known(&vip, addr) {
            return Response::error(e);
        }
        if let Some(list) = self.added.get_mut(&id) {
            list.retain(|b| b.addr != addr);
        }
        self.removed.insert((id, addr));
        self.overrides.weights.remove(&(id, addr));
        self.start_health();
        match self.apply("api") {
            Ok(()) => Response::ok(format!(
                "{id}: backend {addr} removed until the next reload"
            )),
            Err(e) => Response::error(format!("{e:#}")),
        }
    }
}

/// The family rules of `config::validate` for a backend added at runtime.
fn family_ok(cfg: &Config, vip: &Vip, addr: IpAddr) -> Result<(), String> {
    let same = vip.id.addr.is_ipv4() == addr.is_ipv4();
    match vip.mode {
        ForwardMode::DsrL2 if !same => Err(format!(
            "dsr-l2 rewrites only the MAC: backend {addr} must be of the VIP's address family"
        )),
        ForwardMode::Ipip | ForwardMode::Gue if vip.id.addr.is_ipv6() && addr.is_ipv4() => {
            Err(format!(
                "{} cannot carry IPv6 VIP traffic to IPv4 backend {addr}",
                vip.mode.name()
            ))
        }
        ForwardMode::Ipip | ForwardMode::Gue if addr.is_ipv4() && cfg.lb_src_v4.is_none() => {
            Err("tunnelling to an IPv4 backend needs agent.lb-src-v4 in the config".into())
        }
        ForwardMode::Ipip | ForwardMode::Gue if addr.is_ipv6() && cfg.lb_src_v6.is_none() => {
            Err("tunnelling to an IPv6 backend needs agent.lb-src-v6 in the config".into())
        }
        _ => Ok(()),
    }
}
