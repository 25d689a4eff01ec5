//! The BPF counters, read from the maps at scrape time (see the module docs of
//! [`crate::metrics`]).

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lb_common::stats::Counter as StatCounter;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
};

use super::agent::{AgentMetrics, VipBackendLabels};
use super::lock;
use crate::maps::MapStore;

/// The maps the collector reads at scrape time.
pub type SharedStore = Arc<Mutex<dyn MapStore + Send>>;

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
pub(super) struct MapCollector {
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
    pub(super) fn new(store: SharedStore, agent: AgentMetrics, walk: FlowWalk) -> Self {
        Self {
            store,
            agent,
            walk,
            flows: Mutex::new(None),
        }
    }

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
        let (vips, backends, health, capacity, digests) = {
            let st = lock(&self.agent.inner.state);
            (
                st.vips.clone(),
                st.backends.clone(),
                st.health.clone(),
                st.flow_capacity,
                st.ring_digests.clone(),
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

        let digest_series: Vec<_> = digests
            .iter()
            .map(|(vip, d)| ([("vip", vip.to_string()), ("digest", d.to_string())], 1))
            .collect();
        gauge_family(
            &mut encoder,
            "xlb_vip_ring_info",
            "The VIP's ring digest (label digest, as `xlb inspect ring --digest` prints it); always 1.",
            &digest_series,
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
