//! Flow continuity's metrics. The channel and the peer table count in their own atomics and
//! fields; the agent hands their totals over once per refresh, and the counters here advance
//! by the difference (Prometheus counters only go up).

use std::collections::HashMap;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use super::agent::AgentMetrics;
use super::lock;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ReasonLabel {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct PeerLabel {
    peer: String,
}

/// Totals since the agent started, as the continuity runtime counts them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContinuityTotals {
    /// This node's exceptions at the last scan, and peer exceptions held now.
    pub own: u64,
    pub held: u64,
    pub sent: u64,
    pub received: u64,
    pub applied: u64,
    pub expired: u64,
    /// Exceptions not installed, by reason (unknown, mismatch, full).
    pub refused: Vec<(&'static str, u64)>,
    /// Messages refused by the channel, by reason.
    pub rejected: Vec<(String, u64)>,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Per configured peer: our connection to it is up.
    pub connected: Vec<(String, bool)>,
}

#[derive(Debug, Default)]
pub(super) struct ContinuityFamilies {
    own: Gauge,
    held: Gauge,
    sent: Counter,
    received: Counter,
    applied: Counter,
    expired: Counter,
    refused: Family<ReasonLabel, Counter>,
    rejected: Family<ReasonLabel, Counter>,
    bytes_sent: Counter,
    bytes_received: Counter,
    connected: Family<PeerLabel, Gauge>,
    /// The totals last handed over.
    last: std::sync::Mutex<ContinuityTotals>,
}

impl ContinuityFamilies {
    pub(super) fn register(&self, r: &mut Registry) {
        r.register(
            "xlb_continuity_own_exceptions",
            "Flows of this node's flow table that no longer follow the ring, at the last scan",
            self.own.clone(),
        );
        r.register(
            "xlb_continuity_held_exceptions",
            "Peers' exceptions held in the peer table",
            self.held.clone(),
        );
        r.register(
            "xlb_continuity_exceptions_sent",
            "Exceptions sent to peers (each full set counts again)",
            self.sent.clone(),
        );
        r.register(
            "xlb_continuity_exceptions_received",
            "Exceptions received from authenticated peers",
            self.received.clone(),
        );
        r.register(
            "xlb_continuity_exceptions_applied",
            "Received exceptions installed in the peer table (or refreshed there)",
            self.applied.clone(),
        );
        r.register(
            "xlb_continuity_exceptions_expired",
            "Peer exceptions removed because their peer stopped naming them within the hold",
            self.expired.clone(),
        );
        r.register(
            "xlb_continuity_exceptions_refused",
            "Received exceptions not installed: unknown (VIP or backend not here), mismatch \
             (flow not of its VIP), full (its set of the peer table is full)",
            self.refused.clone(),
        );
        r.register(
            "xlb_continuity_rejected",
            "Channel messages or connections refused, by reason (bad tag, replay, malformed, \
             oversized, unknown peer, ...): none of them changed a map",
            self.rejected.clone(),
        );
        r.register(
            "xlb_continuity_sent_bytes",
            "Bytes sent on the continuity channel",
            self.bytes_sent.clone(),
        );
        r.register(
            "xlb_continuity_received_bytes",
            "Bytes received on the continuity channel",
            self.bytes_received.clone(),
        );
        r.register(
            "xlb_continuity_peer_connected",
            "1 while this node's connection to the peer is up",
            self.connected.clone(),
        );
    }
}

fn advance(c: &Counter, now: u64, before: u64) {
    if now > before {
        c.inc_by(now - before);
    }
}

impl AgentMetrics {
    /// Once per continuity refresh.
    pub fn set_continuity(&self, t: ContinuityTotals) {
        let f = &self.inner.continuity;
        let mut last = lock(&f.last);
        f.own.set(t.own as i64);
        f.held.set(t.held as i64);
        advance(&f.sent, t.sent, last.sent);
        advance(&f.received, t.received, last.received);
        advance(&f.applied, t.applied, last.applied);
        advance(&f.expired, t.expired, last.expired);
        advance(&f.bytes_sent, t.bytes_sent, last.bytes_sent);
        advance(&f.bytes_received, t.bytes_received, last.bytes_received);
        let before: HashMap<&str, u64> = last.refused.iter().copied().collect();
        for (reason, n) in &t.refused {
            let c = f.refused.get_or_create(&ReasonLabel {
                reason: (*reason).into(),
            });
            advance(&c, *n, before.get(reason).copied().unwrap_or(0));
        }
        let before: HashMap<&str, u64> = last
            .rejected
            .iter()
            .map(|(r, n)| (r.as_str(), *n))
            .collect();
        for (reason, n) in &t.rejected {
            let c = f.rejected.get_or_create(&ReasonLabel {
                reason: reason.clone(),
            });
            advance(&c, *n, before.get(reason.as_str()).copied().unwrap_or(0));
        }
        for (peer, up) in &t.connected {
            f.connected
                .get_or_create(&PeerLabel { peer: peer.clone() })
                .set(i64::from(*up));
        }
        *last = t;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_advance_by_the_difference_of_totals() {
        let m = AgentMetrics::new();
        let mut r = Registry::default();
        m.inner.continuity.register(&mut r);
        let mut t = ContinuityTotals {
            own: 5,
            held: 7,
            sent: 10,
            applied: 3,
            refused: vec![("full", 2)],
            rejected: vec![("bad_tag".into(), 1)],
            connected: vec![("198.51.100.12:7946".into(), true)],
            ..Default::default()
        };
        m.set_continuity(t.clone());
        t.sent = 25;
        t.rejected = vec![("bad_tag".into(), 4)];
        m.set_continuity(t);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &r).unwrap();
        for line in [
            "xlb_continuity_own_exceptions 5",
            "xlb_continuity_held_exceptions 7",
            "xlb_continuity_exceptions_sent_total 25",
            "xlb_continuity_exceptions_applied_total 3",
            "xlb_continuity_exceptions_refused_total{reason=\"full\"} 2",
            "xlb_continuity_rejected_total{reason=\"bad_tag\"} 4",
            "xlb_continuity_peer_connected{peer=\"198.51.100.12:7946\"} 1",
        ] {
            assert!(out.contains(line), "{line} missing in\n{out}");
        }
    }
}
