//! The announcement's metrics: per-VIP announced (0/1) with the reason it is not, the node's
//! drain state, route changes and speaker errors.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use super::agent::AgentMetrics;
use super::lock;
use crate::model::VipId;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct VipLabel {
    vip: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct WithdrawnLabels {
    vip: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ActionLabel {
    action: &'static str,
}

#[derive(Debug, Default)]
pub(super) struct AnnounceFamilies {
    announced: Family<VipLabel, Gauge>,
    withdrawn: Family<WithdrawnLabels, Gauge>,
    draining: Gauge,
    route_changes: Family<ActionLabel, Counter>,
    speaker_errors: Counter,
    bird_problems: Gauge,
    /// Series present, to drop those of VIPs that left.
    shown: std::sync::Mutex<Vec<(String, &'static str)>>,
}

impl AnnounceFamilies {
    pub(super) fn register(&self, registry: &mut Registry) {
        registry.register(
            "xlb_vip_announced",
            "1 when this node's route for the VIP's address is in place",
            self.announced.clone(),
        );
        registry.register(
            "xlb_vip_withdrawn_reason",
            "1 for the reason a VIP is not ready on this node (not-attached, draining, \
             not-programmed, too-few-backends)",
            self.withdrawn.clone(),
        );
        registry.register(
            "xlb_node_draining",
            "1 while the node is drained (xlb drain-node)",
            self.draining.clone(),
        );
        registry.register(
            "xlb_route_changes",
            "Routes announced and withdrawn",
            self.route_changes.clone(),
        );
        registry.register(
            "xlb_speaker_errors",
            "Failed route updates (announce, withdraw, list)",
            self.speaker_errors.clone(),
        );
        registry.register(
            "xlb_bird_problems",
            "BIRD checks (bird, bird_kernel, bgp as xlb doctor runs them) not OK at the last run",
            self.bird_problems.clone(),
        );
    }
}

impl AgentMetrics {
    /// After each run of BIRD's checks.
    pub fn set_bird_problems(&self, n: usize) {
        self.inner.announce.bird_problems.set(n as i64);
    }

    /// After each evaluation: per VIP, whether its address is announced, and the reason it is
    /// not ready ("" when it is).
    pub fn set_announced(&self, vips: Vec<(VipId, bool, &'static str)>) {
        let a = &self.inner.announce;
        let mut shown = lock(&a.shown);
        for (vip, reason) in shown.drain(..) {
            a.announced.remove(&VipLabel { vip: vip.clone() });
            if !reason.is_empty() {
                a.withdrawn.remove(&WithdrawnLabels { vip, reason });
            }
        }
        for (id, on, reason) in vips {
            let vip = id.to_string();
            a.announced
                .get_or_create(&VipLabel { vip: vip.clone() })
                .set(i64::from(on));
            if !reason.is_empty() {
                a.withdrawn
                    .get_or_create(&WithdrawnLabels {
                        vip: vip.clone(),
                        reason,
                    })
                    .set(1);
            }
            shown.push((vip, reason));
        }
    }

    pub fn set_node_draining(&self, on: bool) {
        self.inner.announce.draining.set(i64::from(on));
    }

    pub fn record_route_change(&self, announced: bool) {
        let action = if announced { "announce" } else { "withdraw" };
        self.inner
            .announce
            .route_changes
            .get_or_create(&ActionLabel { action })
            .inc();
    }

    pub fn record_speaker_error(&self) {
        self.inner.announce.speaker_errors.inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announce_series_follow_the_last_evaluation() {
        let m = AgentMetrics::new();
        let mut r = Registry::default();
        m.inner.announce.register(&mut r);
        let id: VipId = "tcp/203.0.113.10:80".parse().unwrap();
        let other: VipId = "tcp/203.0.113.11:80".parse().unwrap();
        m.set_announced(vec![(id, true, ""), (other, false, "too-few-backends")]);
        m.record_route_change(true);
        m.record_speaker_error();
        m.set_node_draining(true);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &r).unwrap();
        for line in [
            "xlb_vip_announced{vip=\"tcp/203.0.113.10:80\"} 1",
            "xlb_vip_announced{vip=\"tcp/203.0.113.11:80\"} 0",
            "xlb_vip_withdrawn_reason{vip=\"tcp/203.0.113.11:80\",reason=\"too-few-backends\"} 1",
            "xlb_node_draining 1",
            "xlb_route_changes_total{action=\"announce\"} 1",
            "xlb_speaker_errors_total 1",
        ] {
            assert!(out.contains(line), "{line} missing in\n{out}");
        }
        m.set_announced(vec![(id, false, "draining")]);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &r).unwrap();
        assert!(!out.contains("203.0.113.11"), "{out}");
        assert!(out.contains("reason=\"draining\"} 1"), "{out}");
    }
}
