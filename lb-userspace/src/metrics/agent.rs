//! The agent's side of the metrics: values only the agent knows (labels of VIP indices and
//! backend ids, health, ring shares) and the counters and histograms it records.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        histogram::{Histogram, exponential_buckets},
    },
};

use super::lock;
use crate::model::VipId;
use crate::reconcile::{ApplyReport, BackendView};
use crate::ring_digest::RingDigest;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct VipBackendLabels {
    pub(super) vip: String,
    pub(super) backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ProbeLabels {
    vip: String,
    backend: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct InterfaceEventLabels {
    interface: String,
    event: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ResultLabel {
    result: &'static str,
}

pub(super) type ProbeHistograms = Family<VipBackendLabels, Histogram, fn() -> Histogram>;

fn probe_histogram() -> Histogram {
    // 1 ms .. ~16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// The kinds of kernel notification the agent counts (`crate::netlink::NetEvent`).
pub const NETLINK_EVENT_KINDS: [&str; 4] = ["link", "neigh", "route", "overrun"];

/// What the agent knows that the maps do not say.
#[derive(Debug, Default)]
pub(super) struct AgentState {
    /// VIP index -> VIP.
    pub(super) vips: BTreeMap<u32, VipId>,
    pub(super) backends: Vec<BackendView>,
    /// Ring digest per VIP, as of the last apply.
    pub(super) ring_digests: BTreeMap<VipId, RingDigest>,
    pub(super) health: HashMap<(VipId, IpAddr), bool>,
    pub(super) flow_capacity: Option<u32>,
    /// Label pairs with probe series, to drop them when the backend leaves.
    pub(super) probed: HashSet<(VipId, IpAddr)>,
}

#[derive(Debug)]
pub(super) struct AgentInner {
    pub(super) ring_rebuilds: Counter,
    pub(super) ring_rebuild_duration: Histogram,
    pub(super) reloads: Family<ResultLabel, Counter>,
    pub(super) interface_events: Family<InterfaceEventLabels, Counter>,
    pub(super) netlink_events: Family<KindLabel, Counter>,
    pub(super) net_resolutions: Counter,
    pub(super) probe_duration: ProbeHistograms,
    pub(super) probes: Family<ProbeLabels, Counter>,
    pub(super) state: Mutex<AgentState>,
    pub(super) announce: super::announce::AnnounceFamilies,
    pub(super) continuity: super::continuity::ContinuityFamilies,
}

/// The agent's side of the metrics; cheap to clone, every clone updates the same values.
#[derive(Clone, Debug)]
pub struct AgentMetrics {
    pub(super) inner: Arc<AgentInner>,
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
        let netlink_events = Family::<KindLabel, Counter>::default();
        for kind in NETLINK_EVENT_KINDS {
            let _ = netlink_events.get_or_create(&KindLabel { kind });
        }
        Self {
            inner: Arc::new(AgentInner {
                ring_rebuilds: Counter::default(),
                // 100 µs .. ~3.3 s.
                ring_rebuild_duration: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
                reloads,
                interface_events: Family::default(),
                netlink_events,
                net_resolutions: Counter::default(),
                probe_duration: Family::new_with_constructor(probe_histogram as fn() -> Histogram),
                probes: Family::default(),
                state: Mutex::new(AgentState::default()),
                announce: Default::default(),
                continuity: Default::default(),
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

    /// `n` more kernel notifications of `kind` (`link`, `neigh`, `route`, `overrun`).
    pub fn add_netlink_events(&self, kind: &'static str, n: u64) {
        self.inner
            .netlink_events
            .get_or_create(&KindLabel { kind })
            .inc_by(n);
    }

    /// A re-resolution of the interface and the backends' next hops finished.
    pub fn record_net_resolution(&self) {
        self.inner.net_resolutions.inc();
    }

    /// A change of the XDP interface (`down`, `up`, `xdp_detached`, `xdp_attached`).
    pub fn record_interface_event(&self, interface: &str, event: &'static str) {
        self.inner
            .interface_events
            .get_or_create(&InterfaceEventLabels {
                interface: interface.to_owned(),
                event,
            })
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

    /// After each apply: `Reconciler::ring_digests()`. Replaces the previous set, so a removed
    /// VIP's series goes away.
    pub fn set_ring_digests(&self, digests: BTreeMap<VipId, RingDigest>) {
        lock(&self.inner.state).ring_digests = digests;
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
