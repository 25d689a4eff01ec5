//! The agent's runtime state: the config as the file says, what the API changed since, health
//! and reachability, and the reconciler that turns all of it into map contents.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;

use lb_common::values::BACKEND_ACTIVE;
use tracing::{debug, error, info};

use crate::api::ReloadInfo;
use crate::config::Environment;
use crate::health::{self, Health, HealthMonitor, HealthStats};
use crate::maps::MapStore;
use crate::metrics::AgentMetrics;
use crate::model::{BackendSpec, Config, ForwardMode, VipId};
use crate::reconcile::{NetInfo, Overrides, Reconciler};

pub(super) struct Agent<S: MapStore> {
    pub(super) config_path: PathBuf,
    /// What config validation asks the host (interfaces); a reload validates against it.
    pub(super) env: Box<dyn Environment + Send + Sync>,
    /// The config as the file says.
    pub(super) file: Config,
    /// Backends added / removed through the API (until the next reload).
    pub(super) added: BTreeMap<VipId, Vec<BackendSpec>>,
    pub(super) removed: BTreeSet<(VipId, IpAddr)>,
    pub(super) overrides: Overrides,
    pub(super) net: NetInfo,
    pub(super) reconciler: Reconciler<S>,
    pub(super) health: HealthMonitor,
    pub(super) health_stats: HealthStats,
    pub(super) metrics: AgentMetrics,
    pub(super) last_reload: Option<ReloadInfo>,
    /// Set when the backend set changed: the event loop then starts a neighbour resolution.
    net_wanted: bool,
    /// The program is attached on every configured interface (set once start-up attached it).
    pub(super) attached: bool,
    /// The last apply wrote everything it meant to.
    pub(super) last_apply_ok: bool,
    /// `[announce]`: the routes for the routers, when enabled.
    pub(super) announcer: Option<crate::announce::Announcer>,
    pub(super) open_speaker: super::announce::OpenSpeaker,
    /// When a held route change or a retry is due.
    pub(super) announce_wake: Option<std::time::Instant>,
    /// `[continuity]`, once started.
    pub(super) continuity: Option<crate::continuity::node::Continuity>,
}

impl<S: MapStore> Agent<S> {
    /// An agent on `file` with nothing resolved yet; `health` must be fresh (its stats are
    /// read from here on).
    pub(super) fn new(
        config_path: PathBuf,
        env: Box<dyn Environment + Send + Sync>,
        file: Config,
        reconciler: Reconciler<S>,
        health: HealthMonitor,
        metrics: AgentMetrics,
    ) -> Self {
        Self {
            config_path,
            env,
            health_stats: health.stats(),
            file,
            added: BTreeMap::new(),
            removed: BTreeSet::new(),
            overrides: Overrides::default(),
            net: NetInfo::default(),
            reconciler,
            health,
            metrics,
            last_reload: None,
            net_wanted: false,
            attached: false,
            last_apply_ok: false,
            announcer: None,
            open_speaker: super::announce::kernel_speaker(),
            announce_wake: None,
            continuity: None,
        }
    }

    /// The config plus API additions and removals.
    pub(super) fn effective(&self) -> Config {
        let mut cfg = self.file.clone();
        for vip in &mut cfg.vips {
            if let Some(extra) = self.added.get(&vip.id) {
                vip.backends.extend(extra.iter().cloned());
            }
            vip.backends
                .retain(|b| !self.removed.contains(&(vip.id, b.addr)));
            vip.backends.sort_by_key(|b| b.addr);
        }
        cfg
    }

    /// Hands the effective backend set to the health monitor and derives the starting
    /// `overrides.down` from it.
    pub(super) fn start_health(&mut self) {
        let cfg = self.effective();
        // Backends the adopted maps serve start up (a restart must not pull them out of the
        // ring while the first probes run); others start as their check kind says.
        let active: BTreeSet<(VipId, IpAddr)> = self
            .reconciler
            .backends()
            .into_iter()
            .filter(|b| b.entry.state == BACKEND_ACTIVE)
            .map(|b| (b.vip, b.addr))
            .collect();
        let summary = self.health.update_with(&cfg, |vip, b| {
            if active.contains(&(vip.id, b.addr)) {
                Health::Up
            } else {
                health::default_initial(&vip.health)
            }
        });
        debug!(?summary, "health checks updated");
        // Until a probe says otherwise, the starting state is what the reconciler uses.
        self.overrides.down.clear();
        for vip in &cfg.vips {
            for b in &vip.backends {
                let up = active.contains(&(vip.id, b.addr))
                    || health::default_initial(&vip.health).is_up();
                if !up {
                    self.overrides.down.insert((vip.id, b.addr));
                }
            }
        }
        for h in self.health_stats.snapshot() {
            let key = (h.vip, h.backend);
            if h.probes_ok + h.probes_failed > 0 {
                if h.up {
                    self.overrides.down.remove(&key);
                } else {
                    self.overrides.down.insert(key);
                }
            }
        }
    }

    /// A damped health transition: the backend enters or leaves the ring.
    pub(super) fn health_changed(&mut self, vip: VipId, backend: IpAddr, up: bool) {
        let key = (vip, backend);
        if up {
            self.overrides.down.remove(&key);
        } else {
            self.overrides.down.insert(key);
        }
        self.metrics.set_health(&vip, backend, up);
        self.apply_logged("health");
    }

    /// A neighbour resolution finished: applies it if anything changed.
    pub(super) fn net_resolved(&mut self, net: NetInfo) {
        if net != self.net {
            self.net = net;
            self.apply_logged("neighbours resolved");
        }
    }

    /// Asks the event loop for a neighbour resolution (new backends stay out of the ring until
    /// their MAC is known).
    pub(super) fn request_net(&mut self) {
        self.net_wanted = true;
    }

    /// Whether a resolution was asked for since the last call.
    pub(super) fn take_net_request(&mut self) -> bool {
        std::mem::take(&mut self.net_wanted)
    }

    /// What the resolver needs: every backend address, dsr-l2 ones marked (they must be
    /// on-link).
    pub(super) fn net_targets(&self) -> BTreeMap<IpAddr, bool> {
        let cfg = self.effective();
        let mut targets = BTreeMap::new();
        for vip in &cfg.vips {
            for b in &vip.backends {
                let dsr = targets.entry(b.addr).or_insert(false);
                *dsr |= vip.mode == ForwardMode::DsrL2;
            }
        }
        targets
    }

    /// Makes the maps match the effective config, overrides and neighbours.
    pub(super) fn apply(&mut self, why: &str) -> anyhow::Result<()> {
        let cfg = self.effective();
        let result = self.reconciler.apply(&cfg, &self.overrides, &self.net);
        self.last_apply_ok = result.is_ok();
        // Listed once for the routes and the metrics.
        let backends = self.reconciler.backends();
        // Every change reaches the maps through here: routes follow them.
        self.evaluate_announce_with(&cfg, &backends);
        let report = result?;
        self.metrics.record_apply(&report);
        if report.wrote_anything() {
            self.continuity_rings_changed();
        }
        let indices: Vec<(VipId, u32)> = cfg
            .vips
            .iter()
            .filter_map(|v| self.reconciler.vip_index(&v.id).map(|i| (v.id, i)))
            .collect();
        self.metrics.set_topology(indices, backends);
        self.metrics
            .set_ring_digests(self.reconciler.ring_digests());
        if report.wrote_anything() {
            info!(
                why,
                vips_added = report.vips_added,
                vips_removed = report.vips_removed,
                backends = report.backends_written,
                ring_slots = report.ring_slots_written,
                took_us = report.duration.as_micros() as u64,
                "maps updated"
            );
        }
        Ok(())
    }

    /// Applies, logging instead of failing: at runtime a failed write is retried on the next
    /// event (the reconciler re-reads the maps), and forwarding continues meanwhile.
    pub(super) fn apply_logged(&mut self, why: &str) {
        if let Err(e) = self.apply(why) {
            error!(why, "updating the maps failed: {e:#}");
        }
    }

    /// Drops weight overrides of backends that left the config.
    pub(super) fn prune_overrides(&mut self) {
        let cfg = self.effective();
        let present: BTreeSet<(VipId, IpAddr)> = cfg
            .vips
            .iter()
            .flat_map(|v| v.backends.iter().map(move |b| (v.id, b.addr)))
            .collect();
        self.overrides.weights.retain(|k, _| present.contains(k));
    }
}

/// An agent on an in-memory store, as `run` builds one after start-up.
#[cfg(test)]
pub(super) mod testing {
    use std::net::IpAddr;
    use std::path::{Path, PathBuf};

    use tokio::sync::mpsc;

    use super::Agent;
    use crate::announce::SharedFake;
    use crate::health::HealthMonitor;
    use crate::maps::FakeStore;
    use crate::metrics::AgentMetrics;
    use crate::model::Config;
    use crate::reconcile::{BackendView, Reconciler};
    use crate::test_fixtures;

    /// One TCP VIP (203.0.113.10:80) with three backends of weight 1: what the handler tests
    /// and the handler fuzzer start from.
    pub fn three_backends() -> Config {
        test_fixtures::config(vec![test_fixtures::vip(
            "203.0.113.10",
            80,
            crate::model::Proto::Tcp,
            &[
                ("198.51.100.1", 1),
                ("198.51.100.2", 1),
                ("198.51.100.3", 1),
            ],
        )])
    }

    /// `cfg` applied to a fresh 8-VIP, 64-backend store with every backend resolved; reloads
    /// read `config_path` and find every interface. Call inside a tokio runtime (health).
    pub fn agent(cfg: Config, config_path: &Path) -> Agent<FakeStore> {
        started(cfg, config_path, None)
    }

    /// [`agent`] announcing through `speaker` (a [`SharedFake`] the test keeps a clone of),
    /// started as `run` starts it: adoption before the first apply.
    pub fn announcing_agent(
        cfg: Config,
        config_path: &Path,
        speaker: SharedFake,
    ) -> Agent<FakeStore> {
        started(cfg, config_path, Some(speaker))
    }

    fn started(cfg: Config, config_path: &Path, speaker: Option<SharedFake>) -> Agent<FakeStore> {
        // Transitions are not read (the monitor ignores a closed channel): the tests drive
        // `health_changed` themselves.
        let (tx, _) = mpsc::channel(64);
        let mut a = Agent::new(
            PathBuf::from(config_path),
            Box::new(|_: &str| true),
            cfg,
            Reconciler::adopt(FakeStore::new(8, 64)).unwrap(),
            HealthMonitor::new(tx),
            AgentMetrics::new(),
        );
        let announcing = speaker.is_some();
        if let Some(speaker) = speaker {
            a.open_speaker = Box::new(move |_| Ok(Box::new(speaker.clone())));
        }
        a.start_health();
        a.net = test_fixtures::net(&a.file);
        a.attached = true;
        if announcing {
            a.start_announce();
        }
        a.apply("startup").unwrap();
        a
    }

    /// The applied backend at `addr` (the first VIP's that has one), as the reconciler lists it.
    pub fn view(a: &Agent<FakeStore>, addr: &str) -> Option<BackendView> {
        let addr: IpAddr = addr.parse().unwrap();
        a.reconciler.backends().into_iter().find(|b| b.addr == addr)
    }

    /// A config file in the temporary directory, removed when dropped.
    pub struct ConfigFile(PathBuf);

    impl ConfigFile {
        /// `name` must be unique among the tests of this crate (they run in parallel).
        pub fn new(name: &str) -> Self {
            Self(
                std::env::temp_dir()
                    .join(format!("xlb-agent-test-{}-{name}.toml", std::process::id())),
            )
        }

        pub fn path(&self) -> &Path {
            &self.0
        }

        pub fn write(&self, text: &str) {
            std::fs::write(&self.0, text).unwrap();
        }
    }

    impl Drop for ConfigFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::path::Path;

    use lb_common::values::{BACKEND_ACTIVE, BACKEND_DOWN};

    use super::testing::{agent, view};
    use crate::maglev;
    use crate::maps::MapStore;
    use crate::model::Proto;
    use crate::test_fixtures::{config, vip};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn a_health_transition_takes_the_backend_out_of_the_ring_and_back() {
        let cfg = config(vec![vip(
            "203.0.113.10",
            80,
            Proto::Tcp,
            &[("198.51.100.1", 1), ("198.51.100.2", 1)],
        )]);
        let id = cfg.vips[0].id;
        let mut a = agent(cfg, Path::new("/nonexistent"));
        let victim = view(&a, "198.51.100.2").unwrap();
        a.health_changed(id, victim.addr, false);
        let store = a.reconciler.store();
        assert_eq!(store.backends[victim.id as usize].state, BACKEND_DOWN);
        assert!(!store.ring(0).unwrap().contains(&victim.id));
        a.health_changed(id, victim.addr, true);
        let store = a.reconciler.store();
        assert_eq!(store.backends[victim.id as usize].state, BACKEND_ACTIVE);
        assert_eq!(maglev::slot_counts(&store.ring(0).unwrap()).len(), 2);
    }

    #[tokio::test]
    async fn resolved_neighbours_are_applied_only_when_they_change() {
        let cfg = config(vec![vip(
            "203.0.113.10",
            80,
            Proto::Tcp,
            &[("198.51.100.1", 1), ("198.51.100.2", 1)],
        )]);
        let mut a = agent(cfg, Path::new("/nonexistent"));
        let writes = a.reconciler.store().log.len();
        a.net_resolved(a.net.clone());
        assert_eq!(a.reconciler.store().log.len(), writes);
        // A backend whose MAC is lost leaves the ring.
        let mut net = a.net.clone();
        net.macs.remove(&ip("198.51.100.1"));
        a.net_resolved(net);
        let lost = view(&a, "198.51.100.1").unwrap();
        assert_eq!((lost.entry.state, lost.slots), (BACKEND_DOWN, 0));
    }

    #[tokio::test]
    async fn net_targets_mark_backends_reached_in_dsr_l2() {
        let mut dsr = vip("203.0.113.10", 80, Proto::Tcp, &[("198.51.100.1", 1)]);
        dsr.mode = crate::model::ForwardMode::DsrL2;
        let tunnel = vip(
            "203.0.113.11",
            80,
            Proto::Tcp,
            &[("198.51.100.1", 1), ("198.51.100.2", 1)],
        );
        let a = agent(config(vec![dsr, tunnel]), Path::new("/nonexistent"));
        let targets = a.net_targets();
        assert_eq!(targets.len(), 2);
        assert!(targets[&ip("198.51.100.1")]);
        assert!(!targets[&ip("198.51.100.2")]);
    }
}
