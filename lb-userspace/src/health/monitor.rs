//! The set of running checks: one tokio task per (VIP, backend).
//!
//! # Tasks
//! Each task owns its [`Damper`], probes every `interval` (first probe at once, then fixed-rate
//! ticks with [`MissedTickBehavior::Delay`], so a slow probe postpones the next one instead of
//! bursting to catch up) and sends only damped transitions on the events channel. The start of
//! each task is delayed by a deterministic fraction of the interval derived from (VIP, backend),
//! so a reload that starts a thousand checks does not probe them all in the same millisecond,
//! and the spread is the same on every run and every LB node.
//!
//! # Reload
//! [`HealthMonitor::update_with`] reconciles the task set with a config: tasks of removed
//! backends are aborted, new ones are spawned, and surviving ones are handed their (possibly
//! changed) check through a `watch` channel. A surviving task keeps its damper, i.e. its state
//! and its streak: an unrelated reload never resets health; new thresholds apply to the streak
//! in progress, and a new interval restarts the ticker.
//!
//! # Metrics hand-off
//! Every probe result also lands in a per-backend [`BackendStats`] of atomics that the task
//! writes without a lock (relaxed counters: each is monotonic on its own, a scrape needs no
//! cross-field consistency). [`HealthStats`] is the cheap, cloneable read side: a map from
//! (VIP, backend) to those `Arc`s behind an `RwLock` that only reloads write and only scrapes
//! read, so the probe path never takes it. Latency is exported as the last value plus a running
//! sum of successful probes, so Prometheus can derive the mean over any window.
//!
//! # Stopping
//! Dropping the monitor aborts every task; [`HealthMonitor::shutdown`] aborts and also waits for
//! them, so no probe is in flight after it returns. Tasks also end by themselves if the monitor
//! is gone (their `watch` sender is dropped). Events are sent with backpressure (a bounded
//! channel the reconciler drains); a closed receiver is ignored so metrics stay live.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tracing::{debug, info};

use super::{Damper, Health, HealthEvent, ProbeError, default_initial, probe, probe_target};
use crate::model::{BackendSpec, CheckKind, Config, Vip, VipId};

/// What a task is keyed by.
type Key = (VipId, IpAddr);

/// Everything a task needs from the config; a reload sends a new one when it differs.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Spec {
    kind: CheckKind,
    target: Option<SocketAddr>,
    interval: Duration,
    timeout: Duration,
    rise: u32,
    fall: u32,
}

impl Spec {
    fn new(vip: &Vip, backend: &BackendSpec) -> Self {
        let h = &vip.health;
        Self {
            kind: h.kind.clone(),
            target: probe_target(vip, backend),
            // A zero period would make `interval_at` panic; the config never has one.
            interval: h.interval.max(Duration::from_millis(1)),
            timeout: h.timeout,
            rise: h.rise,
            fall: h.fall,
        }
    }

    fn probes(&self) -> bool {
        !matches!(self.kind, CheckKind::None)
    }
}

struct Task {
    spec: watch::Sender<Spec>,
    handle: JoinHandle<()>,
}

/// What [`HealthMonitor::update_with`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UpdateSummary {
    pub started: usize,
    pub stopped: usize,
    /// Kept, with a changed check (kind, port, interval, timeout or thresholds).
    pub retuned: usize,
    /// Kept as they were.
    pub unchanged: usize,
}

/// Runs the health checks of a config. Create it inside a tokio runtime (it spawns its tasks on
/// the runtime it was created in).
pub struct HealthMonitor {
    runtime: Handle,
    events: mpsc::Sender<HealthEvent>,
    tasks: BTreeMap<Key, Task>,
    stats: HealthStats,
}

impl HealthMonitor {
    /// An empty monitor that will send transitions on `events`.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn new(events: mpsc::Sender<HealthEvent>) -> Self {
        Self {
            runtime: Handle::current(),
            events,
            tasks: BTreeMap::new(),
            stats: HealthStats::default(),
        }
    }

    /// The read side of the per-probe metrics; clone it into the metrics endpoint.
    pub fn stats(&self) -> HealthStats {
        self.stats.clone()
    }

    /// Reconciles with `config`; new backends start in [`default_initial`].
    pub fn update(&mut self, config: &Config) -> UpdateSummary {
        self.update_with(config, |vip, _| default_initial(&vip.health))
    }

    /// Reconciles with `config`. `initial` gives the starting state of backends that get a new
    /// task (see the module docs of [`crate::health`]); backends that already have one keep
    /// their state and streak.
    pub fn update_with(
        &mut self,
        config: &Config,
        initial: impl Fn(&Vip, &BackendSpec) -> Health,
    ) -> UpdateSummary {
        let mut summary = UpdateSummary::default();
        let mut wanted = BTreeMap::new();
        for vip in &config.vips {
            for backend in &vip.backends {
                wanted.insert((vip.id, backend.addr), (vip, backend));
            }
        }

        let stale: Vec<Key> = self
            .tasks
            .keys()
            .filter(|k| !wanted.contains_key(k))
            .copied()
            .collect();
        for key in stale {
            if let Some(task) = self.tasks.remove(&key) {
                task.handle.abort();
            }
            self.stats.remove(&key);
            debug!(vip = %key.0, backend = %key.1, "health check stopped");
            summary.stopped += 1;
        }

        for (key, (vip, backend)) in wanted {
            let spec = Spec::new(vip, backend);
            match self.tasks.entry(key) {
                Entry::Occupied(task) => {
                    if task.get().spec.send_if_modified(|s| {
                        let changed = *s != spec;
                        *s = spec;
                        changed
                    }) {
                        debug!(vip = %key.0, backend = %key.1, "health check retuned, state kept");
                        summary.retuned += 1;
                    } else {
                        summary.unchanged += 1;
                    }
                }
                Entry::Vacant(slot) => {
                    let start = initial(vip, backend);
                    let stats = Arc::new(BackendStats::new(start));
                    self.stats.insert(key, Arc::clone(&stats));
                    let (spec_tx, spec_rx) = watch::channel(spec);
                    let worker = Worker {
                        key,
                        spec: spec_rx,
                        stats,
                        events: self.events.clone(),
                    };
                    let handle = self.runtime.spawn(worker.run(start));
                    slot.insert(Task {
                        spec: spec_tx,
                        handle,
                    });
                    debug!(vip = %key.0, backend = %key.1, initial = %start, "health check started");
                    summary.started += 1;
                }
            }
        }
        summary
    }

    /// Number of running checks.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Stops every task and waits until they are gone.
    pub async fn shutdown(mut self) {
        let tasks = std::mem::take(&mut self.tasks);
        for task in tasks.values() {
            task.handle.abort();
        }
        for (_, task) in tasks {
            // The only expected error is the cancellation just asked for; a panic in a task
            // has already been reported by the runtime.
            let _ = task.handle.await;
        }
        self.stats.clear();
    }
}

impl Drop for HealthMonitor {
    fn drop(&mut self) {
        for task in self.tasks.values() {
            task.handle.abort();
        }
    }
}

/// One (VIP, backend) check.
struct Worker {
    key: Key,
    spec: watch::Receiver<Spec>,
    stats: Arc<BackendStats>,
    events: mpsc::Sender<HealthEvent>,
}

impl Worker {
    async fn run(mut self, initial: Health) {
        let mut spec = self.spec.borrow_and_update().clone();
        let mut damper = Damper::new(initial, spec.rise, spec.fall);
        let mut ticker = self.ticker(spec.interval);
        if !spec.probes() {
            self.force_up(&mut damper).await;
        }
        loop {
            tokio::select! {
                _ = ticker.tick(), if spec.probes() => {
                    let result = match spec.target {
                        Some(target) => probe(&spec.kind, target, spec.timeout).await,
                        None => Err(ProbeError::NoPort),
                    };
                    self.stats.record(&result);
                    if let Err(e) = &result {
                        debug!(vip = %self.key.0, backend = %self.key.1, error = %e, "health probe failed");
                    }
                    if let Some(now) = damper.record(result.is_ok()) {
                        let (latency, reason) = match result {
                            Ok(latency) => (Some(latency), format!("{} consecutive successes", spec.rise.max(1))),
                            Err(e) => (None, format!("{} consecutive failures, last: {e}", spec.fall.max(1))),
                        };
                        self.transition(now, latency, reason).await;
                    }
                }
                changed = self.spec.changed() => {
                    if changed.is_err() {
                        return; // the monitor is gone
                    }
                    let new = self.spec.borrow_and_update().clone();
                    damper.set_thresholds(new.rise, new.fall);
                    if new.interval != spec.interval {
                        ticker = self.ticker(new.interval);
                    }
                    spec = new;
                    if !spec.probes() {
                        self.force_up(&mut damper).await;
                    }
                }
            }
        }
    }

    /// Fixed-rate ticks starting after this backend's jitter.
    fn ticker(&self, interval: Duration) -> Interval {
        let mut ticker =
            tokio::time::interval_at(Instant::now() + jitter(&self.key, interval), interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        ticker
    }

    async fn force_up(&self, damper: &mut Damper) {
        if let Some(now) = damper.force(Health::Up) {
            self.transition(now, None, "check kind none".to_owned())
                .await;
        }
    }

    async fn transition(&self, now: Health, latency: Option<Duration>, reason: String) {
        self.stats.up.store(now.is_up(), Ordering::Relaxed);
        self.stats.transitions.fetch_add(1, Ordering::Relaxed);
        info!(vip = %self.key.0, backend = %self.key.1, state = %now, %reason, "backend health changed");
        let event = HealthEvent {
            vip: self.key.0,
            backend: self.key.1,
            up: now.is_up(),
            latency,
            reason,
        };
        // A closed receiver means the agent is stopping; keep the metrics going until aborted.
        let _ = self.events.send(event).await;
    }
}

/// A deterministic fraction (in 1/1024ths) of `interval`, from FNV-1a over the key: stable
/// across runs, Rust versions and nodes, unlike `DefaultHasher`.
fn jitter(key: &Key, interval: Duration) -> Duration {
    let (vip, backend) = key;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    };
    let ip_bytes = |ip: &IpAddr| match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    eat(&ip_bytes(&vip.addr));
    eat(&vip.port.to_be_bytes());
    eat(&[vip.proto.number()]);
    eat(&ip_bytes(backend));
    interval * (h % 1024) as u32 / 1024
}

/// Per-probe counters of one backend, written by its task.
#[derive(Debug)]
pub struct BackendStats {
    up: AtomicBool,
    probes_ok: AtomicU64,
    probes_failed: AtomicU64,
    /// Microseconds; `u64::MAX` = no successful probe yet.
    last_latency_us: AtomicU64,
    latency_sum_us: AtomicU64,
    last_ok: AtomicBool,
    transitions: AtomicU64,
}

impl BackendStats {
    fn new(initial: Health) -> Self {
        Self {
            up: AtomicBool::new(initial.is_up()),
            probes_ok: AtomicU64::new(0),
            probes_failed: AtomicU64::new(0),
            last_latency_us: AtomicU64::new(u64::MAX),
            latency_sum_us: AtomicU64::new(0),
            last_ok: AtomicBool::new(false),
            transitions: AtomicU64::new(0),
        }
    }

    fn record(&self, result: &Result<Duration, ProbeError>) {
        match result {
            Ok(latency) => {
                let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX - 1);
                self.probes_ok.fetch_add(1, Ordering::Relaxed);
                self.last_latency_us.store(us, Ordering::Relaxed);
                self.latency_sum_us.fetch_add(us, Ordering::Relaxed);
                self.last_ok.store(true, Ordering::Relaxed);
            }
            Err(_) => {
                self.probes_failed.fetch_add(1, Ordering::Relaxed);
                self.last_ok.store(false, Ordering::Relaxed);
            }
        }
    }
}

/// A snapshot of one backend's health metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendHealth {
    pub vip: VipId,
    pub backend: IpAddr,
    /// Damped state.
    pub up: bool,
    pub probes_ok: u64,
    pub probes_failed: u64,
    /// Result of the latest probe (false before the first one).
    pub last_ok: bool,
    /// Latency of the latest successful probe.
    pub last_latency: Option<Duration>,
    /// Sum of the latencies of all successful probes (`/ probes_ok` = mean).
    pub latency_sum: Duration,
    pub transitions: u64,
}

/// Read side of the per-probe metrics (cheap to clone; see the module docs).
#[derive(Clone, Debug, Default)]
pub struct HealthStats {
    inner: Arc<RwLock<BTreeMap<Key, Arc<BackendStats>>>>,
}

impl HealthStats {
    /// Every checked backend, sorted by (VIP, backend).
    pub fn snapshot(&self) -> Vec<BackendHealth> {
        let map = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        map.iter().map(|(k, s)| Self::read(k, s)).collect()
    }

    /// One backend of one VIP.
    pub fn get(&self, vip: &VipId, backend: IpAddr) -> Option<BackendHealth> {
        let key = (*vip, backend);
        let map = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        map.get(&key).map(|s| Self::read(&key, s))
    }

    fn read(key: &Key, s: &BackendStats) -> BackendHealth {
        let last = s.last_latency_us.load(Ordering::Relaxed);
        BackendHealth {
            vip: key.0,
            backend: key.1,
            up: s.up.load(Ordering::Relaxed),
            probes_ok: s.probes_ok.load(Ordering::Relaxed),
            probes_failed: s.probes_failed.load(Ordering::Relaxed),
            last_ok: s.last_ok.load(Ordering::Relaxed),
            last_latency: (last != u64::MAX).then(|| Duration::from_micros(last)),
            latency_sum: Duration::from_micros(s.latency_sum_us.load(Ordering::Relaxed)),
            transitions: s.transitions.load(Ordering::Relaxed),
        }
    }

    fn insert(&self, key: Key, stats: Arc<BackendStats>) {
        let mut map = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        map.insert(key, stats);
    }

    fn remove(&self, key: &Key) {
        let mut map = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        map.remove(key);
    }

    fn clear(&self) {
        let mut map = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        map.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Proto;

    #[test]
    fn jitter_is_deterministic_below_the_interval_and_spreads_backends() {
        let id = VipId {
            addr: "192.0.2.10".parse().unwrap(),
            port: 80,
            proto: Proto::Tcp,
        };
        let interval = Duration::from_secs(2);
        let offsets: Vec<Duration> = (1..=64u8)
            .map(|i| jitter(&(id, IpAddr::from([10, 0, 0, i])), interval))
            .collect();
        assert!(offsets.iter().all(|&j| j < interval));
        let again = jitter(&(id, IpAddr::from([10, 0, 0, 1])), interval);
        assert_eq!(offsets[0], again);
        let mut distinct = offsets.clone();
        distinct.sort();
        distinct.dedup();
        assert!(
            distinct.len() > 48,
            "only {} distinct offsets",
            distinct.len()
        );
    }
}
