//! The agent's side of `[announce]`: the inputs of the decisions taken from its state, the
//! evaluation after every change, node drain, reloads of the `[announce]` table, and the
//! withdrawal before a detach.

use std::collections::BTreeMap;
use std::time::Instant;

use lb_common::values::BACKEND_ACTIVE;
use tracing::{error, info};

use crate::announce::{
    Announcer, BirdProblem, KernelTable, Speaker, SpeakerError, VipInputs, WithdrawReason,
};
use crate::cli::doctor::{BirdExpectation, DoctorOptions, bird_expectation};
use crate::maps::MapStore;
use crate::model::{AnnounceConfig, Config, VipId};
use crate::reconcile::BackendView;

use super::state::Agent;

/// Opens the speaker an `[announce]` table names; tests pass one that hands out fakes.
pub(super) type OpenSpeaker =
    Box<dyn Fn(&AnnounceConfig) -> Result<Box<dyn Speaker>, SpeakerError> + Send + Sync>;

/// The kernel table of the config, in the agent's network namespace.
pub(super) fn kernel_speaker() -> OpenSpeaker {
    Box::new(|c: &AnnounceConfig| {
        KernelTable::open(c.table, c.protocol).map(|k| Box::new(k) as Box<dyn Speaker>)
    })
}

impl<S: MapStore> Agent<S> {
    /// Starts announcing as the running config says (adopting the routes in place).
    pub(super) fn start_announce(&mut self) {
        self.announcer = match &self.file.announce {
            None => None,
            Some(c) => match (self.open_speaker)(c) {
                Ok(speaker) => Some(Announcer::start(c.clone(), speaker, self.metrics.clone())),
                Err(e) => {
                    error!("cannot open the route speaker: {e}; no VIP is announced");
                    None
                }
            },
        };
    }

    /// What BIRD's checks expect for the running config (`None` without `[announce]`): doctor's
    /// rule, so both check the same thing.
    pub(super) fn bird_expectation(&self) -> Option<BirdExpectation> {
        self.announcer.as_ref()?;
        bird_expectation(&DoctorOptions::default(), Some(&self.file))
    }

    /// A run of BIRD's checks finished.
    pub(super) fn bird_checked(&mut self, problems: Vec<BirdProblem>) {
        if let Some(a) = &mut self.announcer {
            a.set_bird(problems);
        }
    }

    /// A reload changed `[announce]`: new timings apply in place; another table, protocol, or
    /// turning it off withdraws this announcer's routes first.
    pub(super) fn reconfigure_announce(&mut self, old: Option<&AnnounceConfig>) {
        let new = self.file.announce.clone();
        let same_place =
            |a: &AnnounceConfig, b: &AnnounceConfig| (a.table, a.protocol) == (b.table, b.protocol);
        match (old, new, self.announcer.as_mut()) {
            (Some(o), Some(n), Some(a)) if same_place(o, &n) => a.set_config(n),
            _ => {
                let draining = self.announcer.as_ref().is_some_and(Announcer::draining);
                if let Some(a) = &mut self.announcer {
                    info!("announce settings moved: withdrawing the routes of the old ones");
                    a.withdraw_all(WithdrawReason::NotConfigured);
                }
                self.start_announce();
                if let Some(a) = &mut self.announcer {
                    a.set_draining(draining, Instant::now());
                }
            }
        }
    }

    /// Decides every address again and writes what the hold-down allows.
    pub(super) fn evaluate_announce(&mut self) {
        if self.announcer.is_some() {
            let (cfg, backends) = (self.effective(), self.reconciler.backends());
            self.evaluate_announce_with(&cfg, &backends);
        }
    }

    /// [`Agent::evaluate_announce`] from the effective config and the applied backends, which
    /// an apply has at hand already (both are built afresh on each call).
    pub(super) fn evaluate_announce_with(&mut self, cfg: &Config, backends: &[BackendView]) {
        let Some(announcer) = self.announcer.as_ref() else {
            return;
        };
        let global = announcer.config().min_healthy;
        let mut in_ring: BTreeMap<VipId, u32> = BTreeMap::new();
        for b in backends {
            if b.entry.state == BACKEND_ACTIVE && b.slots > 0 {
                *in_ring.entry(b.vip).or_default() += 1;
            }
        }
        let inputs: Vec<(VipId, VipInputs)> = cfg
            .vips
            .iter()
            .map(|v| {
                (
                    v.id,
                    VipInputs {
                        programmed: self.last_apply_ok
                            && self.reconciler.vip_index(&v.id).is_some(),
                        backends_up: in_ring.get(&v.id).copied().unwrap_or(0),
                        min_healthy: v.min_healthy.unwrap_or(global),
                    },
                )
            })
            .collect();
        let attached = self.attached;
        let now = Instant::now();
        // With [continuity], a node that does not serve yet waits for its peers' exceptions.
        let continuity_ready = self.file.continuity.is_none()
            || self.continuity.as_ref().is_some_and(|c| c.synced(now));
        if let Some(a) = self.announcer.as_mut() {
            self.announce_wake = a.evaluate(attached, continuity_ready, &inputs, now);
        }
    }

    /// The timer: the VIP packet counters for the drain's quiet time, and a held change or a
    /// retry that is due.
    pub(super) fn announce_tick(&mut self) {
        let Some(a) = self.announcer.as_mut() else {
            return;
        };
        if a.draining() {
            let store = self.reconciler.store();
            let total: u64 = self
                .file
                .vips
                .iter()
                .filter_map(|v| self.reconciler.vip_index(&v.id))
                .filter_map(|i| store.vip_stats(i).ok())
                .map(|s| s.packets + s.drops)
                .sum();
            a.observe_packets(total, Instant::now());
        }
        if self.announce_wake.is_some_and(|t| t <= Instant::now()) {
            self.evaluate_announce();
        }
    }

    /// `xlb drain-node` / `xlb undrain-node`.
    pub(super) fn set_node_drain(&mut self, on: bool) -> Result<String, String> {
        let Some(a) = self.announcer.as_mut() else {
            return Err("[announce] is not enabled: this node announces nothing to drain".into());
        };
        let changed = a.set_draining(on, Instant::now());
        if changed {
            info!(draining = on, "node drain changed");
        }
        self.announce_tick();
        self.evaluate_announce();
        Ok(match (on, changed) {
            (true, true) => "draining: routes withdrawn (subject to hold-down), forwarding \
                             continues; `xlb status` says drained once no VIP packet arrives"
                .into(),
            (true, false) => "already draining".into(),
            (false, true) => "undrained: routes announced again as their VIPs allow".into(),
            (false, false) => "not draining".into(),
        })
    }

    /// Before a detach: withdraws every route now; whether there was anything to withdraw.
    pub(super) fn withdraw_for_detach(&mut self) -> bool {
        match self.announcer.as_mut() {
            Some(a) if !a.announced().is_empty() => {
                a.withdraw_all(WithdrawReason::Stopping);
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::path::Path;
    use std::time::Duration;

    use crate::agent::handlers::Answer;
    use crate::agent::state::Agent;
    use crate::agent::state::testing::announcing_agent;
    use crate::announce::{Decision, SharedFake, WithdrawReason};
    use crate::api::{Request, Response};
    use crate::maps::FakeStore;
    use crate::model::{AnnounceConfig, Config, Proto};
    use crate::test_fixtures::{config, vip};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn announced(cfg_hold: Duration) -> Config {
        let mut c = config(vec![
            vip(
                "203.0.113.10",
                80,
                Proto::Tcp,
                &[("198.51.100.1", 1), ("198.51.100.2", 1)],
            ),
            vip("203.0.113.11", 80, Proto::Tcp, &[("198.51.100.3", 1)]),
        ]);
        c.vips[0].min_healthy = Some(2);
        c.announce = Some(AnnounceConfig {
            table: 200,
            protocol: 200,
            min_healthy: 1,
            hold_down: cfg_hold,
            withdraw_grace: Duration::ZERO,
            drain_quiet: Duration::from_secs(10),
            bird_socket: "/run/bird/bird.ctl".into(),
        });
        c
    }

    /// The two-VIP config announced with no hold-down, through `fake`.
    fn started(fake: &SharedFake) -> Agent<FakeStore> {
        announcing_agent(
            announced(Duration::ZERO),
            Path::new("/nonexistent"),
            fake.clone(),
        )
    }

    fn reply(a: &mut Agent<FakeStore>, r: Request) -> Response {
        match a.answer(r) {
            Answer::Reply(r) => r,
            Answer::Stop { .. } => panic!("stop"),
        }
    }

    #[tokio::test]
    async fn ready_vips_are_announced_and_adopted_routes_are_not_rewritten() {
        let fake = SharedFake::default();
        fake.get().routes.insert(ip("203.0.113.10"));
        fake.get().routes.insert(ip("203.0.113.77"));
        let a = started(&fake);
        assert_eq!(
            fake.get().routes,
            [ip("203.0.113.10"), ip("203.0.113.11")].into()
        );
        // The adopted route was kept as is: only the new one and the stray were touched.
        assert_eq!(
            fake.get().log,
            [(true, ip("203.0.113.11")), (false, ip("203.0.113.77"))]
        );
        assert!(a.announcer.is_some());
    }

    #[tokio::test]
    async fn a_vip_below_its_min_healthy_is_withdrawn_with_its_reason() {
        let fake = SharedFake::default();
        let mut a = started(&fake);
        let id = a.file.vips[0].id;
        a.health_changed(id, ip("198.51.100.2"), false);
        assert_eq!(fake.get().routes, [ip("203.0.113.11")].into());
        let Response::Status(r) = reply(&mut a, Request::Status) else {
            panic!("status")
        };
        let s = r.announce.unwrap();
        assert_eq!(
            s.vips[0].decision,
            Decision::Withdraw(WithdrawReason::TooFewBackends { up: 1, need: 2 })
        );
        assert!(r.agent.config_path.ends_with("nonexistent"));
        a.health_changed(id, ip("198.51.100.2"), true);
        assert!(fake.get().routes.contains(&ip("203.0.113.10")));
    }

    #[tokio::test]
    async fn drain_node_withdraws_everything_and_undrain_brings_it_back() {
        let fake = SharedFake::default();
        let mut a = started(&fake);
        let Response::Ok { message } = reply(&mut a, Request::DrainNode) else {
            panic!("drain")
        };
        assert!(message.starts_with("draining"), "{message}");
        assert!(fake.get().routes.is_empty());
        let Response::Status(r) = reply(&mut a, Request::Status) else {
            panic!("status")
        };
        let text = r.render_table();
        assert!(text.contains("node:       draining"), "{text}");
        assert!(text.contains("withdrawn: node draining"), "{text}");
        let Response::Ok { message } = reply(&mut a, Request::UndrainNode) else {
            panic!("undrain")
        };
        assert!(message.starts_with("undrained"), "{message}");
        assert_eq!(fake.get().routes.len(), 2);
    }

    #[tokio::test]
    async fn drain_without_announce_is_refused_and_speaker_errors_never_stop_applies() {
        let fake = SharedFake::default();
        let mut plain = announced(Duration::ZERO);
        plain.announce = None;
        let mut a = announcing_agent(plain, Path::new("/nonexistent"), fake.clone());
        let Response::Error { message } = reply(&mut a, Request::DrainNode) else {
            panic!("drain accepted")
        };
        assert!(message.contains("not enabled"), "{message}");
        assert!(fake.get().log.is_empty());

        let mut a = started(&fake);
        fake.get().fail = Some("ENOBUFS".into());
        let id = a.file.vips[1].id;
        a.health_changed(id, ip("198.51.100.3"), false);
        // The map write happened; the route could not be withdrawn and is retried.
        assert!(a.last_apply_ok);
        assert!(a.announce_wake.is_some());
        let Response::Status(r) = reply(&mut a, Request::Status) else {
            panic!("status")
        };
        assert_eq!(r.announce.unwrap().error.as_deref(), Some("ENOBUFS"));
    }
}
