//! One scrape: the registry of the agent's metrics and the map collector, encoded in the
//! format the scraper asked for.

use prometheus_client::registry::Registry;

use super::agent::AgentMetrics;
use super::collector::{FlowWalk, MapCollector, SharedStore};

/// `Content-Type` of the OpenMetrics answer.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// `Content-Type` of the Prometheus text answer.
pub const PROMETHEUS_CONTENT_TYPE: &str =
    prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

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
            "xlb_interface_events",
            "Changes of the XDP interface seen by the agent: down, up, xdp_detached, xdp_attached",
            inner.interface_events.clone(),
        );
        registry.register(
            "xlb_netlink_events",
            "Kernel notifications received (link, neigh, route, overrun); a burst is coalesced \
             into one re-resolution",
            inner.netlink_events.clone(),
        );
        registry.register(
            "xlb_net_resolutions",
            "Re-resolutions of the XDP interface and the backends' next hops",
            inner.net_resolutions.clone(),
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
        inner.announce.register(&mut registry);
        inner.continuity.register(&mut registry);
        registry.register_collector(Box::new(MapCollector::new(store, agent, walk)));
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

#[cfg(test)]
pub(super) mod tests {
    use std::net::IpAddr;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use lb_common::{
        Backend, TrafficStats,
        stats::Counter as StatCounter,
        values::{BACKEND_ACTIVE, BACKEND_DOWN},
    };

    use super::*;
    use crate::maps::{FakeStore, MapStore};
    use crate::model::VipId;
    use crate::reconcile::{ApplyReport, BackendView};

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
    pub(in crate::metrics) fn fixture() -> (Arc<Mutex<FakeStore>>, AgentMetrics) {
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
    fn ring_digests_are_one_gauge_per_vip_with_the_digest_as_label() {
        use crate::ring_digest::{SlotOwner, ring_digest};
        let (store, agent) = fixture();
        let d = ring_digest(7, &[0, 0, 0], |_| SlotOwner::None);
        agent.set_ring_digests([(vip("tcp/203.0.113.10:80"), d)].into_iter().collect());
        let exporter = Exporter::new(store, agent.clone());
        let line = format!(r#"xlb_vip_ring_info{{vip="tcp/203.0.113.10:80",digest="{d}"}} 1"#);
        assert_lines(&exporter.encode(Format::OpenMetrics), &[&line]);
        assert_lines(&exporter.encode(Format::Prometheus), &[&line]);
        // A VIP gone from the last apply loses its series.
        agent.set_ring_digests(Default::default());
        let text = exporter.encode(Format::OpenMetrics);
        assert!(
            !text.lines().any(|l| l.starts_with("xlb_vip_ring_info{")),
            "{text}"
        );
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
        agent.record_interface_event("eth0", "down");
        agent.add_netlink_events("route", 3);
        agent.record_net_resolution();
        agent.record_interface_event("eth0", "up");
        agent.record_interface_event("eth0", "down");
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
            r#"xlb_interface_events_total{interface="eth0",event="down"} 2"#.into(),
            r#"xlb_interface_events_total{interface="eth0",event="up"} 1"#.into(),
            r#"xlb_netlink_events_total{kind="route"} 3"#.into(),
            // Every kind is present from the start, so `rate()` works before the first.
            r#"xlb_netlink_events_total{kind="overrun"} 0"#.into(),
            "xlb_net_resolutions_total 1".into(),
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
}
