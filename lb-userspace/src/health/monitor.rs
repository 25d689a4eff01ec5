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
    use std::net::Ipv4Addr;

    use super::*;
    use crate::health::test_ns::*;
    use crate::model::{HealthCheck, Proto};

    const INTERVAL: Duration = Duration::from_millis(50);

    fn check(kind: CheckKind, rise: u32, fall: u32) -> HealthCheck {
        HealthCheck {
            kind,
            interval: INTERVAL,
            timeout: Duration::from_millis(40),
            rise,
            fall,
        }
    }

    fn vip(port: u16, health: HealthCheck, backends: Vec<BackendSpec>) -> Vip {
        let mut v = crate::test_fixtures::vip("192.0.2.10", port, Proto::Tcp, &[]);
        v.health = health;
        v.backends = backends;
        v
    }

    fn backend(addr: &str, check_port: u16) -> BackendSpec {
        BackendSpec {
            addr: addr.parse().unwrap(),
            weight: 100,
            check_port: Some(check_port),
        }
    }

    use crate::test_fixtures::config;

    /// The next event, or `None` if there is none within `within`.
    async fn next_event(
        rx: &mut mpsc::Receiver<HealthEvent>,
        within: Duration,
    ) -> Option<HealthEvent> {
        tokio::time::timeout(within, rx.recv()).await.ok().flatten()
    }

    const EVENT_WAIT: Duration = Duration::from_secs(3);

    #[test]
    fn monitor_emits_down_after_fall_failures_and_up_after_rise_successes() {
        in_private_netns(|| async {
            let listener = tcp_listener(localhost(0));
            let addr = listener.local_addr().unwrap();
            let server = spawn_tcp_server(listener);

            let v = vip(
                80,
                check(CheckKind::Tcp, 2, 3),
                vec![backend("127.0.0.1", addr.port())],
            );
            let id = v.id;
            let cfg = config(vec![v]);
            let (tx, mut rx) = mpsc::channel(16);
            let mut monitor = HealthMonitor::new(tx);
            let stats = monitor.stats();
            let summary = monitor.update_with(&cfg, |_, _| Health::Up);
            assert_eq!(summary.started, 1);
            let ip: IpAddr = Ipv4Addr::LOCALHOST.into();

            // Healthy and already up: probes succeed, nothing is reported.
            assert_eq!(next_event(&mut rx, INTERVAL * 5).await, None);
            let before = stats.get(&id, ip).unwrap();
            assert!(
                before.up && before.probes_ok >= 2 && before.probes_failed == 0,
                "{before:?}"
            );
            assert!(before.last_ok && before.last_latency.is_some());

            // Server stops: down after `fall` = 3 consecutive failures, not before.
            server.abort();
            let _ = server.await;
            let stopped = Instant::now();
            let down = next_event(&mut rx, EVENT_WAIT).await.expect("down event");
            let at_down = stats.get(&id, ip).unwrap();
            assert_eq!(
                (down.vip, down.backend, down.up, down.latency),
                (id, ip, false, None)
            );
            assert!(
                down.reason.starts_with("3 consecutive failures"),
                "{}",
                down.reason
            );
            assert!(at_down.probes_failed >= 3, "{at_down:?}");
            assert!(
                stopped.elapsed() >= INTERVAL * 3 / 2,
                "3 fixed-rate probes span about 2 intervals (tokio keeps a tick up to 5 ms late \
                 on schedule, so allow slack)"
            );
            assert!(!at_down.up && at_down.transitions == 1);

            // Server returns on the same port: up after `rise` = 2 successes.
            let server = spawn_tcp_server(tcp_listener(addr));
            let up = next_event(&mut rx, EVENT_WAIT).await.expect("up event");
            let at_up = stats.get(&id, ip).unwrap();
            assert_eq!((up.vip, up.backend, up.up), (id, ip, true));
            assert!(up.latency.is_some());
            assert_eq!(up.reason, "2 consecutive successes");
            assert!(at_up.probes_ok >= before.probes_ok + 2, "{at_up:?}");

            // Steady again: no duplicate events.
            assert_eq!(next_event(&mut rx, INTERVAL * 5).await, None);
            assert_eq!(stats.get(&id, ip).unwrap().transitions, 2);
            monitor.shutdown().await;
            server.abort();
        });
    }

    #[test]
    fn monitor_update_keeps_state_for_unchanged_backends() {
        in_private_netns(|| async {
            let listener = tcp_listener(localhost(0));
            let port = listener.local_addr().unwrap().port();
            spawn_tcp_server(listener);
            let dead = closed_port().port();

            let a: IpAddr = Ipv4Addr::LOCALHOST.into();
            let b: IpAddr = "127.0.0.2".parse().unwrap();
            let vip1 = vip(
                80,
                check(CheckKind::Tcp, 1, 3),
                vec![backend("127.0.0.1", port)],
            );
            let vip2 = vip(
                81,
                check(CheckKind::Tcp, 1, 3),
                vec![backend("127.0.0.1", port)],
            );
            let (id1, id2) = (vip1.id, vip2.id);

            let (tx, mut rx) = mpsc::channel(16);
            let mut monitor = HealthMonitor::new(tx);
            let stats = monitor.stats();
            let summary = monitor.update(&config(vec![vip1.clone(), vip2]));
            assert_eq!((summary.started, monitor.len()), (2, 2));
            // Both start down (default policy) and come up after `rise` = 1 success.
            let mut ups = [
                next_event(&mut rx, EVENT_WAIT).await.expect("up 1"),
                next_event(&mut rx, EVENT_WAIT).await.expect("up 2"),
            ];
            ups.sort_by_key(|e| e.vip);
            assert!(ups.iter().all(|e| e.up && e.backend == a));
            assert_eq!((ups[0].vip, ups[1].vip), (id1, id2));
            let ok_before = stats.get(&id1, a).unwrap().probes_ok;

            // Reload: weight of A changed (not a check change), B added (to a closed port),
            // VIP 2 removed.
            let mut vip1b = vip1.clone();
            vip1b.backends[0].weight = 7;
            vip1b.backends.push(backend("127.0.0.2", dead));
            let summary = monitor.update(&config(vec![vip1b.clone()]));
            assert_eq!(
                summary,
                UpdateSummary {
                    started: 1,
                    stopped: 1,
                    retuned: 0,
                    unchanged: 1
                }
            );
            assert_eq!(monitor.len(), 2);
            assert_eq!(stats.get(&id2, a), None, "removed backend's stats are gone");

            // A was not reset: a reset would start it down and report a new up (rise = 1).
            // B starts down and stays down: no event either.
            assert_eq!(next_event(&mut rx, INTERVAL * 6).await, None);
            let kept = stats.get(&id1, a).unwrap();
            assert!(
                kept.up && kept.transitions == 1 && kept.probes_ok > ok_before,
                "{kept:?}"
            );
            let new = stats.get(&id1, b).unwrap();
            assert!(
                !new.up && new.probes_failed >= 1 && new.transitions == 0,
                "{new:?}"
            );

            // A changed check (interval, thresholds) retunes the task, still keeping state.
            let mut vip1c = vip1b;
            vip1c.health.interval = INTERVAL * 2;
            vip1c.health.fall = 5;
            let summary = monitor.update(&config(vec![vip1c]));
            assert_eq!(
                summary,
                UpdateSummary {
                    started: 0,
                    stopped: 0,
                    retuned: 2,
                    unchanged: 0
                }
            );
            assert_eq!(next_event(&mut rx, INTERVAL * 6).await, None);
            assert!(stats.get(&id1, a).unwrap().up);

            // The removed task is really gone: after shutdown every sender is dropped.
            monitor.shutdown().await;
            assert_eq!(rx.recv().await, None);
        });
    }

    #[test]
    fn dropping_the_monitor_stops_every_task() {
        in_private_netns(|| async {
            let port = closed_port().port();
            let cfg = config(vec![vip(
                80,
                check(CheckKind::Tcp, 1, 1),
                vec![backend("127.0.0.1", port), backend("127.0.0.2", port)],
            )]);
            let (tx, mut rx) = mpsc::channel(16);
            let mut monitor = HealthMonitor::new(tx);
            monitor.update_with(&cfg, |_, _| Health::Up);
            let stats = monitor.stats();
            drop(monitor);
            // Every task held a sender; the channel closes only when all of them are gone.
            let closed =
                tokio::time::timeout(EVENT_WAIT, async { while rx.recv().await.is_some() {} })
                    .await;
            assert!(closed.is_ok(), "a task outlived its monitor");
            let probes: u64 = stats.snapshot().iter().map(|s| s.probes_failed).sum();
            tokio::time::sleep(INTERVAL * 3).await;
            let later: u64 = stats.snapshot().iter().map(|s| s.probes_failed).sum();
            assert_eq!(probes, later, "probes after the monitor was dropped");
        });
    }

    #[test]
    fn kind_none_is_forced_up_without_probing() {
        in_private_netns(|| async {
            let v = vip(
                80,
                check(CheckKind::None, 2, 3),
                vec![backend("127.0.0.1", 9)],
            );
            let id = v.id;
            let (tx, mut rx) = mpsc::channel(16);
            let mut monitor = HealthMonitor::new(tx);
            monitor.update_with(&config(vec![v]), |_, _| Health::Down);
            let ev = next_event(&mut rx, EVENT_WAIT).await.expect("up event");
            assert!(ev.up && ev.latency.is_none() && ev.reason == "check kind none");
            assert_eq!(next_event(&mut rx, INTERVAL * 4).await, None);
            let s = stats_of(&monitor, &id);
            assert_eq!((s.up, s.probes_ok, s.probes_failed), (true, 0, 0));
            monitor.shutdown().await;
        });
    }

    #[test]
    fn a_backend_without_a_port_fails_its_probes() {
        in_private_netns(|| async {
            let mut b = backend("127.0.0.1", 1);
            b.check_port = None;
            let v = vip(0, check(CheckKind::Tcp, 1, 1), vec![b]);
            let (tx, mut rx) = mpsc::channel(16);
            let mut monitor = HealthMonitor::new(tx);
            monitor.update_with(&config(vec![v]), |_, _| Health::Up);
            let ev = next_event(&mut rx, EVENT_WAIT).await.expect("down event");
            assert!(
                !ev.up && ev.reason.contains("no port to probe"),
                "{}",
                ev.reason
            );
        });
    }

    fn stats_of(monitor: &HealthMonitor, id: &VipId) -> BackendHealth {
        monitor.stats().get(id, Ipv4Addr::LOCALHOST.into()).unwrap()
    }

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
