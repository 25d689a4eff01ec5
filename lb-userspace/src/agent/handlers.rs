//! The control API's requests: status, reload, drain / weight, runtime backend changes, stop.
//! Each one decides against the agent's state and answers; none of them waits for the network
//! (a neighbour resolution they need runs afterwards, from the event loop).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use crate::api::{AgentInfo, HealthStatus, Request, Response, StatusInputs, StatusReport};
use crate::config;
use crate::maps::{MapError, MapStore};
use crate::model::{BackendSpec, MAX_WEIGHT, Vip, VipId};

use super::state::Agent;

/// What a request asks of the event loop.
#[derive(Debug)]
pub(super) enum Answer {
    /// Send this response.
    Reply(Response),
    /// `xlb stop`: tear down, then answer.
    Stop { detach: bool },
}

/// What the API changes of the agent's state, kept to undo a change the maps refused.
struct ApiState {
    added: BTreeMap<VipId, Vec<BackendSpec>>,
    removed: BTreeSet<(VipId, IpAddr)>,
    weights: HashMap<(VipId, IpAddr), u32>,
}

impl<S: MapStore> Agent<S> {
    fn api_state(&self) -> ApiState {
        ApiState {
            added: self.added.clone(),
            removed: self.removed.clone(),
            weights: self.overrides.weights.clone(),
        }
    }

    /// Applies an API change made since `before`. If the maps refuse it (full, or a write
    /// failed half-way), the change is undone and the state before it applied again, so a
    /// refused request leaves nothing half-done for the next event to finish.
    fn apply_api_change(&mut self, before: ApiState, done: String) -> Response {
        let Err(e) = self.apply("api") else {
            return Response::ok(done);
        };
        let backends_changed = before.added != self.added || before.removed != self.removed;
        self.added = before.added;
        self.removed = before.removed;
        self.overrides.weights = before.weights;
        if backends_changed {
            self.start_health();
        }
        self.apply_logged("api change undone");
        Response::error(format!("{e:#}: the change was undone"))
    }

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
            Request::DrainNode => match self.set_node_drain(true) {
                Ok(m) => Response::ok(m),
                Err(e) => Response::error(e),
            },
            Request::UndrainNode => match self.set_node_drain(false) {
                Ok(m) => Response::ok(m),
                Err(e) => Response::error(e),
            },
            Request::Shutdown { detach } => return Answer::Stop { detach },
        })
    }

    fn status(&mut self) -> Result<StatusReport, MapError> {
        // The drain's quiet time is as fresh as the packet counters read now.
        self.announce_tick();
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
        let mut report = StatusReport::collect(
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
        )?;
        report.announce = self
            .announcer
            .as_ref()
            .map(|a| Box::new(a.status(std::time::Instant::now())));
        report.continuity = self.continuity_status().map(Box::new);
        Ok(report)
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
        let before = self.api_state();
        self.overrides.weights.insert((id, addr), weight);
        self.apply_api_change(before, format!("{id} {addr}: {what} (weight {weight})"))
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
        if let Err(e) = config::check_added_backend(&self.file, &vip, addr) {
            return Response::error(e.to_string());
        }
        let before = self.api_state();
        self.removed.remove(&(id, addr));
        if self
            .file
            .vip(&id)
            .is_some_and(|v| v.backends.iter().any(|b| b.addr == addr))
        {
            // A configured backend back from removal: the request's weight overrides the file's.
            self.overrides.weights.insert((id, addr), weight);
        } else {
            // The weight lives in the addition, not in an override: an override would outlive
            // the addition when a reload brings the backend into the file, and the node would
            // then keep this weight where a node that reloaded first keeps the file's.
            self.added.entry(id).or_default().push(BackendSpec {
                addr,
                weight,
                check_port: None,
            });
            self.overrides.weights.remove(&(id, addr));
        }
        self.start_health();
        self.request_net();
        self.apply_api_change(
            before,
            format!(
                "{id}: backend {addr} added (weight {weight}) until the next reload; it takes \
                 traffic once its next hop resolves and its health check passes"
            ),
        )
    }

    fn remove_backend(&mut self, id: VipId, addr: IpAddr) -> Response {
        let vip = match self.vip(&id) {
            Ok(v) => v,
            Err(e) => return Response::error(e),
        };
        if let Err(e) = self.backend_known(&vip, addr) {
            return Response::error(e);
        }
        let before = self.api_state();
        if let Some(list) = self.added.get_mut(&id) {
            list.retain(|b| b.addr != addr);
        }
        self.removed.insert((id, addr));
        self.overrides.weights.remove(&(id, addr));
        self.start_health();
        self.apply_api_change(
            before,
            format!("{id}: backend {addr} removed until the next reload"),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::path::Path;

    use lb_common::Backend;
    use lb_common::values::{BACKEND_ACTIVE, BACKEND_DOWN, BACKEND_DRAINING};

    use super::Answer;
    use crate::agent::state::Agent;
    use crate::agent::state::testing::{agent, three_backends, view};
    use crate::api::{HealthStatus, MapState, Request, Response, StatusReport};
    use crate::maglev;
    use crate::maps::{FakeStore, MapStore};
    use crate::model::VipId;
    use crate::test_fixtures;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// One TCP VIP with three backends of weight 1, applied.
    fn three() -> (Agent<FakeStore>, VipId) {
        let cfg = three_backends();
        let id = cfg.vips[0].id;
        (agent(cfg, Path::new("/nonexistent")), id)
    }

    fn reply(a: &mut Agent<FakeStore>, request: Request) -> Response {
        match a.answer(request) {
            Answer::Reply(r) => r,
            Answer::Stop { .. } => panic!("unexpected stop"),
        }
    }

    fn ok(r: Response) -> String {
        match r {
            Response::Ok { message } => message,
            other => panic!("expected Ok, got {other:?}"),
        }
    }

    fn error(r: Response) -> String {
        match r {
            Response::Error { message } => message,
            other => panic!("expected Error, got {other:?}"),
        }
    }

    /// Ring slots per backend id, as the store holds them.
    fn shares(a: &Agent<FakeStore>) -> std::collections::BTreeMap<u32, u32> {
        maglev::slot_counts(&a.reconciler.store().ring(0).unwrap())
    }

    #[tokio::test]
    async fn drain_takes_the_backend_out_of_the_ring_and_keeps_its_flows() {
        let (mut a, id) = three();
        let drained = view(&a, "198.51.100.2").unwrap();
        let msg = ok(reply(
            &mut a,
            Request::Drain {
                vip: id,
                addr: drained.addr,
            },
        ));
        assert_eq!(msg, format!("{id} 198.51.100.2: drained (weight 0)"));
        let store = a.reconciler.store();
        // Draining, not down: flows already pinned to it stay.
        assert_eq!(store.backends[drained.id as usize].state, BACKEND_DRAINING);
        assert_eq!(store.backends[drained.id as usize].weight, 0);
        let shares = shares(&a);
        assert!(!shares.contains_key(&drained.id), "{shares:?}");
        assert_eq!(shares.len(), 2);
    }

    #[tokio::test]
    async fn set_weight_rebuilds_the_ring_with_the_new_shares() {
        let (mut a, id) = three();
        let heavy = view(&a, "198.51.100.1").unwrap();
        let msg = ok(reply(
            &mut a,
            Request::SetWeight {
                vip: id,
                addr: heavy.addr,
                weight: 2,
            },
        ));
        assert_eq!(msg, format!("{id} 198.51.100.1: weight set (weight 2)"));
        assert_eq!(a.reconciler.store().backends[heavy.id as usize].weight, 2);
        // Weight 2 of 4: about half the ring.
        let share = shares(&a)[&heavy.id];
        let ring = lb_common::limits::RING_SIZE;
        assert!(
            (ring * 45 / 100..=ring * 55 / 100).contains(&share),
            "{share}"
        );
        // The override survives an unrelated apply.
        a.health_changed(id, ip("198.51.100.3"), false);
        assert_eq!(a.reconciler.store().backends[heavy.id as usize].weight, 2);
    }

    #[tokio::test]
    async fn weight_changes_the_running_config_cannot_take_are_refused_without_writes() {
        let (mut a, id) = three();
        let writes = a.reconciler.store().log.len();
        let too_heavy = error(reply(
            &mut a,
            Request::SetWeight {
                vip: id,
                addr: ip("198.51.100.1"),
                weight: crate::model::MAX_WEIGHT + 1,
            },
        ));
        assert!(too_heavy.contains("out of range"), "{too_heavy}");
        let mut other = id;
        other.port = 81;
        let no_vip = error(reply(
            &mut a,
            Request::Drain {
                vip: other,
                addr: ip("198.51.100.1"),
            },
        ));
        assert_eq!(no_vip, format!("no VIP {other} in the running config"));
        let stranger = error(reply(
            &mut a,
            Request::Drain {
                vip: id,
                addr: ip("198.51.100.9"),
            },
        ));
        assert_eq!(stranger, format!("198.51.100.9 is not a backend of {id}"));
        assert_eq!(a.reconciler.store().log.len(), writes);
        assert!(a.overrides.weights.is_empty());
    }

    #[tokio::test]
    async fn an_added_backend_waits_for_its_neighbour_then_joins_the_ring() {
        let (mut a, id) = three();
        assert!(!a.take_net_request());
        let msg = ok(reply(
            &mut a,
            Request::AddBackend {
                vip: id,
                addr: ip("198.51.100.4"),
                weight: 1,
            },
        ));
        assert!(msg.starts_with(&format!("{id}: backend 198.51.100.4 added (weight 1)")));
        // Written, but out of the ring until its MAC is known; a resolution was asked for.
        let added = view(&a, "198.51.100.4").unwrap();
        assert_eq!((added.entry.state, added.slots), (BACKEND_DOWN, 0));
        assert!(a.take_net_request());
        assert!(a.net_targets().contains_key(&ip("198.51.100.4")));
        a.net_resolved(test_fixtures::net(&a.effective()));
        let added = view(&a, "198.51.100.4").unwrap();
        assert_eq!(added.entry.state, BACKEND_ACTIVE);
        assert_eq!(shares(&a).len(), 4);
    }

    #[tokio::test]
    async fn add_backend_refuses_a_duplicate_or_a_family_the_vip_cannot_reach() {
        let (mut a, id) = three();
        let writes = a.reconciler.store().log.len();
        let dup = error(reply(
            &mut a,
            Request::AddBackend {
                vip: id,
                addr: ip("198.51.100.1"),
                weight: 1,
            },
        ));
        assert_eq!(dup, format!("198.51.100.1 is already a backend of {id}"));
        // The fixture config has no lb-src-v6: ipip cannot reach an IPv6 backend.
        let v6 = error(reply(
            &mut a,
            Request::AddBackend {
                vip: id,
                addr: ip("2001:db8::5"),
                weight: 1,
            },
        ));
        assert!(v6.contains("agent.lb-src-v6"), "{v6}");
        assert_eq!(a.reconciler.store().log.len(), writes);
        assert!(a.added.is_empty());
        assert!(!a.take_net_request());
    }

    #[tokio::test]
    async fn a_removed_backend_is_emptied_and_can_be_added_back() {
        let (mut a, id) = three();
        let gone = view(&a, "198.51.100.3").unwrap();
        let msg = ok(reply(
            &mut a,
            Request::RemoveBackend {
                vip: id,
                addr: gone.addr,
            },
        ));
        assert_eq!(
            msg,
            format!("{id}: backend 198.51.100.3 removed until the next reload")
        );
        assert_eq!(
            a.reconciler.store().backends[gone.id as usize],
            Backend::default()
        );
        assert!(!shares(&a).contains_key(&gone.id));
        assert!(view(&a, "198.51.100.3").is_none());
        // Removing it twice: it is no longer a backend.
        let again = error(reply(
            &mut a,
            Request::RemoveBackend {
                vip: id,
                addr: gone.addr,
            },
        ));
        assert_eq!(again, format!("198.51.100.3 is not a backend of {id}"));
        // Added back: a configured backend returns without becoming an API addition.
        ok(reply(
            &mut a,
            Request::AddBackend {
                vip: id,
                addr: gone.addr,
                weight: 1,
            },
        ));
        assert!(a.added.is_empty() && a.removed.is_empty());
        assert_eq!(
            view(&a, "198.51.100.3").unwrap().entry.state,
            BACKEND_ACTIVE
        );
        assert_eq!(shares(&a).len(), 3);
    }

    #[tokio::test]
    async fn status_answers_with_weights_states_and_ring_shares() {
        let (mut a, id) = three();
        ok(reply(
            &mut a,
            Request::Drain {
                vip: id,
                addr: ip("198.51.100.2"),
            },
        ));
        let Response::Status(StatusReport { agent, vips, .. }) = reply(&mut a, Request::Status)
        else {
            panic!("expected a status report");
        };
        assert_eq!(agent.config_path, Path::new("/nonexistent"));
        assert_eq!(agent.interfaces, ["eth0"]);
        assert_eq!(agent.last_reload, None);
        assert_eq!(vips.len(), 1);
        assert_eq!((vips[0].id, vips[0].index), (id, Some(0)));
        let rows: Vec<(IpAddr, u32, u32, MapState, bool)> = vips[0]
            .backends
            .iter()
            .map(|b| {
                (
                    b.addr,
                    b.weight,
                    b.effective_weight,
                    b.state,
                    b.ring_slots > 0,
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                (ip("198.51.100.1"), 1, 1, MapState::Active, true),
                (ip("198.51.100.2"), 1, 0, MapState::Draining, false),
                (ip("198.51.100.3"), 1, 1, MapState::Active, true),
            ]
        );
        for b in &vips[0].backends {
            assert_eq!(b.health, HealthStatus::Up);
            assert_eq!(b.state, b.desired);
            assert_eq!(b.mismatch, None);
        }
    }

    #[tokio::test]
    async fn shutdown_is_handed_to_the_loop_without_touching_the_maps() {
        let (mut a, _) = three();
        let writes = a.reconciler.store().log.len();
        assert!(matches!(
            a.answer(Request::Shutdown { detach: true }),
            Answer::Stop { detach: true }
        ));
        assert_eq!(a.reconciler.store().log.len(), writes);
    }

    #[tokio::test]
    async fn add_backend_refuses_addresses_that_are_not_unicast() {
        let (mut a, id) = three();
        let writes = a.reconciler.store().log.len();
        for (addr, what) in [
            ("0.0.0.0", "the unspecified"),
            ("224.0.0.1", "a multicast"),
            ("255.255.255.255", "the broadcast"),
            ("127.0.0.1", "a loopback"),
        ] {
            let e = error(reply(
                &mut a,
                Request::AddBackend {
                    vip: id,
                    addr: ip(addr),
                    weight: 1,
                },
            ));
            assert_eq!(
                e,
                format!(
                    "backend {addr} is {what} address, which cannot be a backend: use the \
                     unicast address of the backend host"
                )
            );
        }
        assert_eq!(a.reconciler.store().log.len(), writes);
        assert!(a.added.is_empty());
    }

    /// Backend entries and rings as the store holds them.
    fn maps(a: &Agent<FakeStore>) -> (Vec<Backend>, Vec<u32>) {
        let s = a.reconciler.store();
        (s.backends.clone(), s.ring(0).unwrap())
    }

    #[tokio::test]
    async fn a_change_the_maps_refuse_half_way_is_undone() {
        let requests = |id: VipId| {
            [
                Request::AddBackend {
                    vip: id,
                    addr: ip("198.51.100.4"),
                    weight: 5,
                },
                Request::RemoveBackend {
                    vip: id,
                    addr: ip("198.51.100.1"),
                },
                Request::SetWeight {
                    vip: id,
                    addr: ip("198.51.100.2"),
                    weight: 9,
                },
                Request::Drain {
                    vip: id,
                    addr: ip("198.51.100.3"),
                },
            ]
        };
        for (i, request) in requests(three().1).into_iter().enumerate() {
            // The first write of the change succeeds, the second fails: half-applied.
            let (mut a, _) = three();
            let before = maps(&a);
            let at = a.reconciler.store().log.len() + 1;
            a.reconciler.store_mut().fail_at = Some(at);
            let e = error(reply(&mut a, request.clone()));
            assert!(
                e.ends_with("injected failure: the change was undone"),
                "{i}: {e}"
            );
            assert!(a.added.is_empty(), "{i}");
            assert!(a.removed.is_empty(), "{i}");
            assert!(a.overrides.weights.is_empty(), "{i}");
            // Once the maps take writes again, the next apply restores the state before the
            // change, not the change.
            a.reconciler.store_mut().fail_at = None;
            a.apply("retry").unwrap();
            assert_eq!(maps(&a), before, "{i}: {request:?}");
        }
    }
}
