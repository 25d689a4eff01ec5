//! Prometheus / OpenMetrics exposition of the agent and the XDP program's counters.
//!
//! # Where the numbers come from
//!
//! - **BPF counters** (per-CPU, cumulative since the counter's slot was allocated) are read from
//!   the maps *at scrape time* by a collector over a [`SharedStore`]: nothing is copied on a
//!   timer, so a scrape always sees the kernel's current sums. Give the exporter its own
//!   read-only store (`AyaStore::from_pin_dir`); the reconciler keeps the writing one. A VIP
//!   index or backend id is zeroed when it is (re)allocated, so a series restarts from 0 when
//!   its VIP or backend is re-added, which Prometheus treats as a counter reset.
//! - **Agent values** (labels for VIP indices and backend ids, health, ring shares, reloads,
//!   ring rebuilds, probe latencies) come from an [`AgentMetrics`] handle the agent updates:
//!   [`AgentMetrics::set_topology`] after every apply, [`AgentMetrics::record_apply`],
//!   [`AgentMetrics::record_reload`], [`AgentMetrics::set_health`],
//!   [`AgentMetrics::record_probe`].
//!
//! # Metrics
//!
//! Labels: `vip` is the VIP's identity as printed everywhere (`tcp/203.0.113.10:80`,
//! `udp/[2001:db8::1]:*`), `backend` the backend's address (`198.51.100.1`).
//!
//! | metric | type | labels | meaning |
//! | --- | --- | --- | --- |
//! | `xlb_vip_packets_total` | counter | vip | packets forwarded (or echo-answered) for the VIP |
//! | `xlb_vip_bytes_total` | counter | vip | their bytes, as received (L2 frame length) |
//! | `xlb_vip_new_flows_total` | counter | vip | flows that took a ring choice (flow-table misses, SYNs, re-hashes) |
//! | `xlb_vip_drops_total` | counter | vip | packets to the VIP that were dropped |
//! | `xlb_backend_packets_total` | counter | vip, backend | packets forwarded to the backend |
//! | `xlb_backend_bytes_total` | counter | vip, backend | their bytes |
//! | `xlb_backend_new_flows_total` | counter | vip, backend | new flows the ring gave the backend |
//! | `xlb_backend_health` | gauge | vip, backend | damped health-check verdict: **1 = up, 0 = down**; no series until the first verdict |
//! | `xlb_backend_state` | gauge | vip, backend | the backend map entry's state, read from the map: **0 = empty, 1 = active (in the ring), 2 = draining (out of the ring, flows kept), 3 = down (out of the ring, flows re-hash)** |
//! | `xlb_backend_ring_slots` | gauge | vip, backend | Maglev ring slots the backend owns (of 65537), as of the agent's last apply |
//! | `xlb_packets_total` | counter | reason | every global counter of the program, `reason` = `lb_common::stats::Counter::name()`: verdicts (`pass*`, `tx`, `icmp_*`, `drop_*`) and detail counters (`flow_*`, `fragment`). Drops are the `drop_*` reasons: `sum(xlb_packets_total{reason=~"drop_.*"})` |
//! | `xlb_flow_table_entries` | gauge | | flow-table occupancy, see below |
//! | `xlb_flow_table_walk_capped` | gauge | | 1 when the last occupancy walk stopped at its cap (the entries gauge is then a lower bound) |
//! | `xlb_flow_table_capacity` | gauge | | flow-table size (max entries) from the config |
//! | `xlb_ring_rebuilds_total` | counter | | VIP rings rewritten by applies (one per VIP whose ring changed) |
//! | `xlb_ring_rebuild_duration_seconds` | histogram | | duration of each apply that rewrote at least one ring (the whole apply: plan, Maglev builds and map writes) |
//! | `xlb_config_reloads_total` | counter | result = `ok` \| `error` | config reload requests and their outcome |
//! | `xlb_health_check_duration_seconds` | histogram | vip, backend | duration of every probe, successful or not (a timed-out probe lands in the bucket of its timeout) |
//! | `xlb_health_checks_total` | counter | vip, backend, result = `ok` \| `fail` | probes and their raw (undamped) outcome |
//! | `xlb_scrape_map_errors` | gauge | | map reads that failed during this scrape (their series are missing from it) |
//!
//! # Flow-table occupancy
//!
//! The flow table keeps no element count: counting means reading every set of it (through its
//! memory mapping; 64 MiB at the default size). The collector walks at most [`FlowWalk::max_entries`]
//! entries (default 65536) and at most once per [`FlowWalk::min_interval`] (default 30 s),
//! serving the cached count in between. Past the cap, `xlb_flow_table_entries` is the cap and
//! `xlb_flow_table_walk_capped` is 1.
//!
//! # Endpoint
//!
//! [`MetricsServer`] answers `GET /metrics` (and `HEAD`) on the address it is given (the config
//! layer keeps that on loopback by default); any other path is 404. The format is negotiated:
//! a scraper that accepts `application/openmetrics-text` gets OpenMetrics 1.0, anything else
//! (curl, older Prometheus) the Prometheus text format 0.0.4.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use lb_common::stats::Counter as StatCounter;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{
        MetricType,
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::ConstGauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::maps::MapStore;
use crate::model::VipId;
use crate::reconcile::{ApplyReport, BackendView};

/// The maps the collector reads at scrape time.
pub type SharedStore = Arc<Mutex<dyn MapStore + Send>>;

/// `Content-Type` of the OpenMetrics answer.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// `Content-Type` of the Prometheus text answer.
pub const PROMETHEUS_CONTENT_TYPE: &str =
    prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere while holding the lock leaves plain data behind: keep serving it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VipBackendLabels {
    vip: String,
    backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProbeLabels {
    vip: String,
    backend: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

type ProbeHistograms = Family<VipBackendLabels, Histogram, fn() -> Histogram>;

fn probe_histogram() -> Histogram {
    // 1 ms .. ~16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// What the agent knows that the maps do not say.
#[derive(Debug, Default)]
struct AgentState {
    /// VIP index -> VIP.
    vips: BTreeMap<u32, VipId>,
    backends: Vec<BackendView>,
    health: HashMap<(VipId, IpAddr), bool>,
    flow_capacity: Option<u32>,
    /// Label pairs with probe series, to drop them when the backend leaves.
    probed: HashSet<(VipId, IpAddr)>,
}

#[derive(Debug)]
struct AgentInner {
    ring_rebuilds: Counter,
    ring_rebuild_duration: Histogram,
    reloads: Family<ResultLabel, Counter>,
    probe_duration: ProbeHistograms,
    probes: Family<ProbeLabels, Counter>,
    state: Mutex<AgentState>,
}

/// The agent's side of the metrics; cheap to clone, every clone updates the same values.
#[derive(Clone, Debug)]
pub struct AgentMetrics {
    inner: Arc<AgentInner>,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl AgentMetrics {
    pub fn new() -> Self {
        let reloads = Family::<ResultLabel, Counter>::default();
        // Both outcomes exist from the start, so `rate()` over them works before the first.
        for result in ["ok", "error"] {
            let _ = reloads.get_or_create(&ResultLabel { result });
        }
        Self {
            inner: Arc::new(AgentInner {
                ring_rebuilds: Counter::default(),
                // 100 µs .. ~3.3 s.
                ring_rebuild_duration: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
                reloads,
                probe_duration: Family::new_with_constructor(probe_histogram as fn() -> Histogram),
                probes: Family::default(),
                state: Mutex::new(AgentState::default()),
            }),
        }
    }

    /// After each successful apply.
    pub fn record_apply(&self, report: &ApplyReport) {
        if report.rings_rebuilt > 0 {
            self.inner.ring_rebuilds.inc_by(report.rings_rebuilt as u64);
            self.inner
                .ring_rebuild_duration
                .observe(report.duration.as_secs_f64());
        }
    }

    /// After each reload request.
    pub fn record_reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.inner
            .reloads
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    /// After each health probe, with its raw outcome and how long it took.
    pub fn record_probe(&self, vip: &VipId, backend: IpAddr, ok: bool, latency: Duration) {
        let (v, b) = (vip.to_string(), backend.to_string());
        self.inner
            .probe_duration
            .get_or_create(&VipBackendLabels {
                vip: v.clone(),
                backend: b.clone(),
            })
            .observe(latency.as_secs_f64());
        self.inner
            .probes
            .get_or_create(&ProbeLabels {
                vip: v,
                backend: b,
                result: if ok { "ok" } else { "fail" },
            })
            .inc();
        lock(&self.inner.state).probed.insert((*vip, backend));
    }

    /// The damped health of a backend (after each transition, or for all at startup).
    pub fn set_health(&self, vip: &VipId, backend: IpAddr, up: bool) {
        lock(&self.inner.state).health.insert((*vip, backend), up);
    }

    /// Flow-table capacity in flows (the config's `flow_table_size` rounded up as the loader
    /// rounds it: `lb_common::flows::flow_sets`).
    pub fn set_flow_table_capacity(&self, entries: u32) {
        lock(&self.inner.state).flow_capacity = Some(entries);
    }

    /// What the maps hold after an apply: the VIP indices (`VipId` -> index) and
    /// `Reconciler::backends()`. Series of VIPs and backends no longer present are dropped.
    pub fn set_topology(
        &self,
        vips: impl IntoIterator<Item = (VipId, u32)>,
        backends: Vec<BackendView>,
    ) {
        let mut st = lock(&self.inner.state);
        st.vips = vips.into_iter().map(|(id, index)| (index, id)).collect();
        let present: HashSet<(VipId, IpAddr)> = backends.iter().map(|b| (b.vip, b.addr)).collect();
        st.backends = backends;
        st.health.retain(|k, _| present.contains(k));
        let gone: Vec<(VipId, IpAddr)> = st
            .probed
            .iter()
            .filter(|k| !present.contains(k))
            .copied()
            .collect();
        for (vip, addr) in gone {
            st.probed.remove(&(vip, addr));
            let (v, b) = (vip.to_string(), addr.to_string());
            self.inner.probe_duration.remove(&VipBackendLabels {
                vip: v.clone(),
                backend: b.clone(),
            });
            for result in ["ok", "fail"] {
                self.inner.probes.remove(&ProbeLabels {
                    vip: v.clone(),
                    backend: b.clone(),
                    result,
                });
            }
        }
    }
}

/// How the collector counts flow-table entries (see the module docs).
#[derive(Clone, Copy, Debug)]
pub struct FlowWalk {
    /// Stop counting here.
    pub max_entries: usize,
    /// Serve the cached count for this long after a walk.
    pub min_interval: Duration,
}

impl Default for FlowWalk {
    fn default() -> Self {
        Self {
            max_entries: 65_536,
            min_interval: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct FlowCount {
    at: Instant,
    entries: usize,
    capped: bool,
}

/// Reads the BPF counters at scrape time.
struct MapCollector {
    store: SharedStore,
    agent: AgentMetrics,
    walk: FlowWalk,
    flows: Mutex<Option<FlowCount>>,
}

impl fmt::Debug for MapCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapCollector")
            .field("walk", &self.walk)
            .finish_non_exhaustive()
    }
}

fn counter_family<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(L, u64)],
) -> fmt::Result {
    let mut m = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in series {
        ConstCounter::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn gauge_family<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(L, i64)],
) -> fmt::Result {
    let mut m = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in series {
        ConstGauge::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, v: i64) -> fmt::Result {
    let m = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(v).encode(m)
}

impl MapCollector {
    fn flow_count(&self, store: &dyn MapStore, errors: &mut i64) -> Option<FlowCount> {
        let mut cache = lock(&self.flows);
        if let Some(c) = *cache
            && c.at.elapsed() < self.walk.min_interval
        {
            return Some(c);
        }
        match store.flows(self.walk.max_entries) {
            Ok(f) => {
                let c = FlowCount {
                    at: Instant::now(),
                    entries: f.len(),
                    capped: f.len() >= self.walk.max_entries,
                };
                *cache = Some(c);
                Some(c)
            }
            Err(e) => {
                *errors += 1;
                tracing::warn!(error = %e, "metrics: flow-table walk failed");
                *cache
            }
        }
    }
}

impl Collector for MapCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let (vips, backends, health, capacity) = {
            let st = lock(&self.agent.inner.state);
            (
                st.vips.clone(),
                st.backends.clone(),
                st.health.clone(),
                st.flow_capacity,
            )
        };
        let store = lock(&self.store);
        let store: &dyn MapStore = &*store;
        let mut errors = 0i64;
        let mut note = |what: &str, e: &dyn fmt::Display| {
            errors += 1;
            tracing::warn!(error = %e, "metrics: reading {what} failed");
        };

        let global = store
            .global_stats()
            .map_err(|e| note("global counters", &e))
            .ok();
        let mut vip_rows = Vec::new();
        for (index, id) in &vips {
            match store.vip_stats(*index) {
                Ok(s) => vip_rows.push(([("vip", id.to_string())], s)),
                Err(e) => note("VIP counters", &e),
            }
        }
        let mut backend_rows = Vec::new();
        for b in &backends {
            let labels = VipBackendLabels {
                vip: b.vip.to_string(),
                backend: b.addr.to_string(),
            };
            let stats = store
                .backend_stats(b.id)
                .map_err(|e| note("backend counters", &e))
                .ok();
            let state = store
                .backend(b.id)
                .map_err(|e| note("backend entry", &e))
                .ok()
                .map(|e| e.state);
            let up = health.get(&(b.vip, b.addr)).copied();
            backend_rows.push((labels, stats, state, up, b.slots));
        }
        let flows = self.flow_count(store, &mut errors);

        if let Some(g) = global {
            let series: Vec<_> = StatCounter::ALL
                .iter()
                .map(|c| ([("reason", c.name())], g.counters[*c as usize]))
                .collect();
            counter_family(
                &mut encoder,
                "xlb_packets",
                "Packets seen by the XDP program, by verdict or detail reason (drops are reason=~\"drop_.*\").",
                &series,
            )?;
        }
        let vip_series = |f: fn(&lb_common::TrafficStats) -> u64| -> Vec<_> {
            vip_rows.iter().map(|(l, s)| (l.clone(), f(s))).collect()
        };
        counter_family(
            &mut encoder,
            "xlb_vip_packets",
            "Packets forwarded (or echo-answered) for the VIP.",
            &vip_series(|s| s.packets),
        )?;
        counter_family(
            &mut encoder,
            "xlb_vip_bytes",
            "Bytes of the VIP's forwarded packets, as received (L2 frame length).",
            &vip_series(|s| s.bytes),
        )?;
        counter_family(
            &mut encoder,
            "xlb_vip_new_flows",
            "Flows of the VIP that took a ring choice (flow-table misses, SYNs, re-hashes).",
            &vip_series(|s| s.new_flows),
        )?;
        counter_family(
            &mut encoder,
            "xlb_vip_drops",
            "Packets to the VIP that were dropped.",
            &vip_series(|s| s.drops),
        )?;

        let backend_series = |f: fn(&lb_common::TrafficStats) -> u64| -> Vec<_> {
            backend_rows
                .iter()
                .filter_map(|(l, s, ..)| s.as_ref().map(|s| (l.clone(), f(s))))
                .collect()
        };
        counter_family(
            &mut encoder,
            "xlb_backend_packets",
            "Packets forwarded to the backend.",
            &backend_series(|s| s.packets),
        )?;
        counter_family(
            &mut encoder,
            "xlb_backend_bytes",
            "Bytes forwarded to the backend, as received.",
            &backend_series(|s| s.bytes),
        )?;
        counter_family(
            &mut encoder,
            "xlb_backend_new_flows",
            "New flows the ring gave the backend.",
            &backend_series(|s| s.new_flows),
        )?;
        let health_series: Vec<_> = backend_rows
            .iter()
            .filter_map(|(l, _, _, up, _)| up.map(|up| (l.clone(), i64::from(up))))
            .collect();
        gauge_family(
            &mut encoder,
            "xlb_backend_health",
            "Damped health-check verdict: 1 = up, 0 = down.",
            &health_series,
        )?;
        let state_series: Vec<_> = backend_rows
            .iter()
            .filter_map(|(l, _, state, ..)| state.map(|s| (l.clone(), i64::from(s))))
            .collect();
        gauge_family(
            &mut encoder,
            "xlb_backend_state",
            "Backend map entry state: 0 = empty, 1 = active, 2 = draining, 3 = down.",
            &state_series,
        )?;
        let slot_series: Vec<_> = backend_rows
            .iter()
            .map(|(l, .., slots)| (l.clone(), i64::from(*slots)))
            .collect();
        gauge_family(
            &mut encoder,
            "xlb_backend_ring_slots",
            "Maglev ring slots owned by the backend (of 65537), as of the last apply.",
            &slot_series,
        )?;

        if let Some(f) = flows {
            gauge(
                &mut encoder,
                "xlb_flow_table_entries",
                "Flow-table entries (counted by a capped walk at most every 30 s by default).",
                f.entries as i64,
            )?;
            gauge(
                &mut encoder,
                "xlb_flow_table_walk_capped",
                "1 when the last flow-table walk hit its cap (entries is then a lower bound).",
                i64::from(f.capped),
            )?;
        }
        if let Some(c) = capacity {
            gauge(
                &mut encoder,
                "xlb_flow_table_capacity",
                "Flow-table size (max entries).",
                i64::from(c),
            )?;
        }
        gauge(
            &mut encoder,
            "xlb_scrape_map_errors",
            "Map reads that failed during this scrape.",
            errors,
        )
    }
}

/// Exposition format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    OpenMetrics,
    Prometheus,
}

impl Format {
    /// OpenMetrics if the `Accept` header asks for it, else the Prometheus text format.
    pub fn negotiate(accept: Option<&str>) -> Self {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Prometheus,
        }
    }
    pub const fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
            Format::Prometheus => PROMETHEUS_CONTENT_TYPE,
        }
    }
}

/// Everything one scrape encodes.
#[derive(Debug)]
pub struct Exporter {
    registry: Registry,
}

impl Exporter {
    pub fn new(store: SharedStore, agent: AgentMetrics) -> Self {
        Self::with_flow_walk(store, agent, FlowWalk::default())
    }

    pub fn with_flow_walk(store: SharedStore, agent: AgentMetrics, walk: FlowWalk) -> Self {
        let mut registry = Registry::default();
        let inner = &agent.inner;
        registry.register(
            "xlb_ring_rebuilds",
            "VIP rings rewritten by applies",
            inner.ring_rebuilds.clone(),
        );
        registry.register(
            "xlb_ring_rebuild_duration_seconds",
            "Duration of applies that rewrote at least one ring",
            inner.ring_rebuild_duration.clone(),
        );
        registry.register(
            "xlb_config_reloads",
            "Config reload requests by outcome",
            inner.reloads.clone(),
        );
        registry.register(
            "xlb_health_check_duration_seconds",
            "Duration of each health probe, successful or not",
            inner.probe_duration.clone(),
        );
        registry.register(
            "xlb_health_checks",
            "Health probes by raw (undamped) outcome",
            inner.probes.clone(),
        );
        registry.register_collector(Box::new(MapCollector {
            store,
            agent,
            walk,
            flows: Mutex::new(None),
        }));
        Self { registry }
    }

    /// One scrape's text. Reads the maps: call from a blocking context.
    pub fn encode(&self, format: Format) -> String {
        let mut out = String::new();
        let r = match format {
            Format::OpenMetrics => {
                prometheus_client::encoding::text::encode(&mut out, &self.registry)
            }
            Format::Prometheus => {
                prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
            }
        };
        if let Err(e) = r {
            // Only a label or name the encoder rejects gets here: a bug, not an outage.
            tracing::error!(error = %e, "metrics encoding failed");
        }
        out
    }
}

/// Longest request head accepted.
const MAX_HEAD: usize = 8 * 1024;
/// A client has this long to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Scrapes served at once.
const MAX_SCRAPES: usize = 8;

/// The `/metrics` endpoint, bound.
#[derive(Debug)]
pub struct MetricsServer {
    listener: TcpListener,
    exporter: Arc<Exporter>,
}

/// Binds `addr` and serves until the task is dropped.
pub async fn serve(addr: SocketAddr, exporter: Exporter) -> io::Result<()> {
    MetricsServer::bind(addr, exporter).await?.run().await
}

impl MetricsServer {
    pub async fn bind(addr: SocketAddr, exporter: Exporter) -> io::Result<Self> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("metrics endpoint: bind {addr}: {e}")))?;
        Ok(Self {
            listener,
            exporter: Arc::new(exporter),
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts scrapes until the task is dropped.
    pub async fn run(self) -> io::Result<()> {
        let slots = Arc::new(Semaphore::new(MAX_SCRAPES));
        loop {
            let permit = slots.clone().acquire_owned().await.expect("never closed");
            let stream = match self.listener.accept().await {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let exporter = self.exporter.clone();
            tokio::spawn(async move {
                if let Err(e) = handle(stream, exporter).await {
                    tracing::debug!(error = %e, "metrics connection ended with an error");
                }
                drop(permit);
            });
        }
    }
}

/// Reads the request head (up to the blank line).
async fn read_head(stream: &mut TcpStream) -> io::Result<Option<String>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n") {
            return Ok(Some(String::from_utf8_lossy(&buf).into_owned()));
        }
        if buf.len() > MAX_HEAD {
            return Ok(None);
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    extra: &str,
    body: &[u8],
    head_only: bool,
) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    if !head_only {
        stream.write_all(body).await?;
    }
    stream.shutdown().await
}

async fn handle(mut stream: TcpStream, exporter: Arc<Exporter>) -> io::Result<()> {
    let head = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut stream)).await {
        Ok(Ok(Some(h))) => h,
        Ok(Ok(None)) | Err(_) => {
            return respond(
                &mut stream,
                "400 Bad Request",
                "text/plain",
                "",
                b"bad request\n",
                false,
            )
            .await;
        }
        Ok(Err(e)) => return Err(e),
    };
    let mut lines = head.lines();
    let mut request = lines.next().unwrap_or("").split_whitespace();
    let (method, target) = (request.next().unwrap_or(""), request.next().unwrap_or(""));
    let accept = lines.find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("accept")
            .then(|| v.trim().to_string())
    });
    let path = target.split('?').next().unwrap_or("");
    if path != "/metrics" {
        return respond(
            &mut stream,
            "404 Not Found",
            "text/plain",
            "",
            b"not found: metrics are at /metrics\n",
            method == "HEAD",
        )
        .await;
    }
    if method != "GET" && method != "HEAD" {
        return respond(
            &mut stream,
            "405 Method Not Allowed",
            "text/plain",
            "Allow: GET, HEAD\r\n",
            b"method not allowed\n",
            false,
        )
        .await;
    }
    let format = Format::negotiate(accept.as_deref());
    // Reading the maps is syscalls (and may walk the flow table): off the async workers.
    let body = tokio::task::spawn_blocking(move || exporter.encode(format))
        .await
        .map_err(io::Error::other)?;
    respond(
        &mut stream,
        "200 OK",
        format.content_type(),
        "",
        body.as_bytes(),
        method == "HEAD",
    )
    .await
}

#[cfg(test)]
mod tests {
    use lb_common::{
        Backend, TrafficStats,
        values::{BACKEND_ACTIVE, BACKEND_DOWN},
    };

    use super::*;
    use crate::maps::FakeStore;

    fn vip(s: &str) -> VipId {
        s.parse().unwrap()
    }

    fn view(v: &str, addr: &str, id: u32, slots: u32) -> BackendView {
        BackendView {
            vip: vip(v),
            addr: addr.parse().unwrap(),
            id,
            entry: Backend::default(),
            slots,
        }
    }

    /// A store with one IPv4 and one IPv6 VIP and three backends, and an agent that knows them.
    fn fixture() -> (Arc<Mutex<FakeStore>>, AgentMetrics) {
        let mut s = FakeStore::new(8, 16);
        s.vip_stats.insert(0, TrafficStats::new(100, 15_000, 7, 3));
        s.vip_stats.insert(2, TrafficStats::new(5, 600, 5, 0));
        s.backend_stats
            .insert(1, TrafficStats::new(60, 9_000, 4, 0));
        s.backend_stats
            .insert(2, TrafficStats::new(40, 6_000, 3, 0));
        s.backend_stats.insert(5, TrafficStats::new(5, 600, 5, 0));
        s.backends[1].state = BACKEND_ACTIVE;
        s.backends[2].state = BACKEND_DOWN;
        s.backends[5].state = BACKEND_ACTIVE;
        s.global.counters[StatCounter::Tx as usize] = 105;
        s.global.counters[StatCounter::DropNoBackend as usize] = 3;
        s.global.counters[StatCounter::Pass as usize] = 1_000;
        for i in 0..10u8 {
            let k = lb_common::FlowKey {
                sport: u16::from(i),
                ..Default::default()
            };
            s.flows.insert(k, lb_common::FlowEntry::default());
        }
        let agent = AgentMetrics::new();
        agent.set_topology(
            [
                (vip("tcp/203.0.113.10:80"), 0),
                (vip("udp/[2001:db8::1]:*"), 2),
            ],
            vec![
                view("tcp/203.0.113.10:80", "198.51.100.1", 1, 65_537),
                view("tcp/203.0.113.10:80", "198.51.100.2", 2, 0),
                view("udp/[2001:db8::1]:*", "2001:db8::53", 5, 65_537),
            ],
        );
        agent.set_health(
            &vip("tcp/203.0.113.10:80"),
            "198.51.100.1".parse().unwrap(),
            true,
        );
        agent.set_health(
            &vip("tcp/203.0.113.10:80"),
            "198.51.100.2".parse().unwrap(),
            false,
        );
        agent.set_flow_table_capacity(4096);
        (Arc::new(Mutex::new(s)), agent)
    }

    fn assert_lines(text: &str, expected: &[&str]) {
        for line in expected {
            assert!(
                text.lines().any(|l| l == *line),
                "missing line {line:?} in:\n{text}"
            );
        }
    }

    #[test]
    fn exposition_has_map_counters_with_labels() {
        let (store, agent) = fixture();
        let exporter = Exporter::new(store.clone(), agent.clone());
        let text = exporter.encode(Format::OpenMetrics);
        const V4: &str = r#"vip="tcp/203.0.113.10:80""#;
        let expected = [
            r#"xlb_vip_packets_total{vip="tcp/203.0.113.10:80"} 100"#.to_string(),
            format!("xlb_vip_bytes_total{{{V4}}} 15000"),
            format!("xlb_vip_new_flows_total{{{V4}}} 7"),
            format!("xlb_vip_drops_total{{{V4}}} 3"),
            r#"xlb_vip_packets_total{vip="udp/[2001:db8::1]:*"} 5"#.into(),
            format!(r#"xlb_backend_packets_total{{{V4},backend="198.51.100.1"}} 60"#),
            format!(r#"xlb_backend_bytes_total{{{V4},backend="198.51.100.2"}} 6000"#),
            format!(r#"xlb_backend_new_flows_total{{{V4},backend="198.51.100.1"}} 4"#),
            r#"xlb_backend_packets_total{vip="udp/[2001:db8::1]:*",backend="2001:db8::53"} 5"#
                .into(),
            format!(r#"xlb_backend_health{{{V4},backend="198.51.100.1"}} 1"#),
            format!(r#"xlb_backend_health{{{V4},backend="198.51.100.2"}} 0"#),
            format!(r#"xlb_backend_state{{{V4},backend="198.51.100.1"}} 1"#),
            format!(r#"xlb_backend_state{{{V4},backend="198.51.100.2"}} 3"#),
            format!(r#"xlb_backend_ring_slots{{{V4},backend="198.51.100.1"}} 65537"#),
            format!(r#"xlb_backend_ring_slots{{{V4},backend="198.51.100.2"}} 0"#),
            r#"xlb_packets_total{reason="tx"} 105"#.into(),
            r#"xlb_packets_total{reason="drop_no_backend"} 3"#.into(),
            r#"xlb_packets_total{reason="pass"} 1000"#.into(),
            r#"xlb_packets_total{reason="drop_too_big_rate_limited"} 0"#.into(),
            "xlb_flow_table_entries 10".into(),
            "xlb_flow_table_walk_capped 0".into(),
            "xlb_flow_table_capacity 4096".into(),
            "xlb_scrape_map_errors 0".into(),
            "xlb_ring_rebuilds_total 0".into(),
            r#"xlb_config_reloads_total{result="ok"} 0"#.into(),
            r#"xlb_config_reloads_total{result="error"} 0"#.into(),
            "# TYPE xlb_backend_health gauge".into(),
            "# TYPE xlb_vip_packets counter".into(),
            "# EOF".into(),
        ];
        let refs: Vec<&str> = expected.iter().map(String::as_str).collect();
        assert_lines(&text, &refs);
        // Every global counter is exported, once.
        let reasons = text
            .lines()
            .filter(|l| l.starts_with("xlb_packets_total{"))
            .count();
        assert_eq!(reasons, StatCounter::ALL.len());
        // No health series for a backend without a verdict.
        assert!(!text.contains(r#"xlb_backend_health{vip="udp"#), "{text}");

        // Counters are read at scrape time: a change in the maps shows in the next scrape.
        {
            let mut s = store.lock().unwrap();
            let _ = s.clear_vip_stats(0);
        }
        let text = exporter.encode(Format::Prometheus);
        assert_lines(
            &text,
            &[
                r#"xlb_vip_packets_total{vip="tcp/203.0.113.10:80"} 0"#,
                "# TYPE xlb_vip_packets_total counter",
            ],
        );
        assert!(!text.contains("# EOF"));
    }

    #[test]
    fn the_real_store_can_back_the_exporter() {
        fn shared(s: crate::maps::AyaStore) -> SharedStore {
            Arc::new(Mutex::new(s))
        }
        let _ = shared;
    }

    #[test]
    fn agent_side_metrics() {
        let (store, agent) = fixture();
        let exporter = Exporter::new(store, agent.clone());
        agent.record_apply(&ApplyReport {
            rings_rebuilt: 2,
            duration: Duration::from_millis(3),
            ..ApplyReport::default()
        });
        agent.record_apply(&ApplyReport::default());
        agent.record_reload(true);
        agent.record_reload(false);
        agent.record_reload(false);
        let v = vip("tcp/203.0.113.10:80");
        let b: IpAddr = "198.51.100.1".parse().unwrap();
        agent.record_probe(&v, b, true, Duration::from_millis(2));
        agent.record_probe(&v, b, false, Duration::from_secs(1));
        let text = exporter.encode(Format::OpenMetrics);
        const L: &str = r#"vip="tcp/203.0.113.10:80",backend="198.51.100.1""#;
        let expected = [
            "xlb_ring_rebuilds_total 2".to_string(),
            "xlb_ring_rebuild_duration_seconds_count 1".into(),
            r#"xlb_ring_rebuild_duration_seconds_bucket{le="0.0064"} 1"#.into(),
            r#"xlb_ring_rebuild_duration_seconds_bucket{le="0.0016"} 0"#.into(),
            r#"xlb_config_reloads_total{result="ok"} 1"#.into(),
            r#"xlb_config_reloads_total{result="error"} 2"#.into(),
            format!(r#"xlb_health_checks_total{{{L},result="ok"}} 1"#),
            format!(r#"xlb_health_checks_total{{{L},result="fail"}} 1"#),
            format!("xlb_health_check_duration_seconds_count{{{L}}} 2"),
            format!("xlb_health_check_duration_seconds_sum{{{L}}} 1.002"),
            format!(r#"xlb_health_check_duration_seconds_bucket{{le="0.002",{L}}} 1"#),
            "# TYPE xlb_health_check_duration_seconds histogram".into(),
        ];
        let refs: Vec<&str> = expected.iter().map(String::as_str).collect();
        assert_lines(&text, &refs);

        // The backend leaves: its series go with it.
        agent.set_topology(
            [(v, 0)],
            vec![view("tcp/203.0.113.10:80", "198.51.100.2", 2, 0)],
        );
        let text = exporter.encode(Format::OpenMetrics);
        assert!(!text.contains(r#"backend="198.51.100.1""#), "{text}");
        assert!(!text.contains(r#"vip="udp/"#), "{text}");
    }

    #[test]
    fn flow_walk_is_capped_and_cached() {
        let (store, agent) = fixture();
        let walk = FlowWalk {
            max_entries: 4,
            min_interval: Duration::from_secs(3600),
        };
        let exporter = Exporter::with_flow_walk(store.clone(), agent, walk);
        let text = exporter.encode(Format::OpenMetrics);
        assert_lines(
            &text,
            &["xlb_flow_table_entries 4", "xlb_flow_table_walk_capped 1"],
        );
        store.lock().unwrap().flows.clear();
        // Within the interval: the cached count.
        let text = exporter.encode(Format::OpenMetrics);
        assert_lines(&text, &["xlb_flow_table_entries 4"]);
        let exporter = Exporter::with_flow_walk(
            store,
            AgentMetrics::new(),
            FlowWalk {
                max_entries: 4,
                min_interval: Duration::ZERO,
            },
        );
        let text = exporter.encode(Format::OpenMetrics);
        assert_lines(
            &text,
            &["xlb_flow_table_entries 0", "xlb_flow_table_walk_capped 0"],
        );
        assert!(!text.contains("xlb_flow_table_capacity"));
    }

    async fn http(addr: SocketAddr, request: &str) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn http_endpoint_serves_metrics_and_404s_the_rest() {
        let (store, agent) = fixture();
        let server =
            MetricsServer::bind("127.0.0.1:0".parse().unwrap(), Exporter::new(store, agent))
                .await
                .unwrap();
        let addr = server.local_addr().unwrap();
        assert!(addr.ip().is_loopback());
        let task = tokio::spawn(server.run());

        let r = http(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.contains(&format!("Content-Type: {PROMETHEUS_CONTENT_TYPE}\r\n")));
        assert!(r.contains("\r\n\r\n# HELP "), "{r}");
        assert!(r.contains("\nxlb_vip_packets_total{vip=\"tcp/203.0.113.10:80\"} 100\n"));
        let (head, body) = r.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}\r\n", body.len())));

        let r = http(
            addr,
            "GET /metrics?x=1 HTTP/1.1\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5\r\n\r\n",
        )
        .await;
        assert!(r.contains(&format!("Content-Type: {OPENMETRICS_CONTENT_TYPE}\r\n")));
        assert!(r.ends_with("# EOF\n"), "{r}");

        let r = http(addr, "HEAD /metrics HTTP/1.1\r\n\r\n").await;
        assert!(
            r.starts_with("HTTP/1.1 200 OK\r\n") && r.ends_with("\r\n\r\n"),
            "{r}"
        );

        for path in ["/", "/metricsx", "/favicon.ico"] {
            let r = http(addr, &format!("GET {path} HTTP/1.1\r\n\r\n")).await;
            assert!(r.starts_with("HTTP/1.1 404 Not Found\r\n"), "{path}: {r}");
        }
        let r = http(addr, "POST /metrics HTTP/1.1\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 405 "), "{r}");
        task.abort();
    }
}
