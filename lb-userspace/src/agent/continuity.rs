//! The agent's side of flow continuity: starting it, feeding it ring changes, ticks and peers'
//! parts, and reporting it (status, metrics).

use std::time::Instant;

use lb_common::stats::Counter;

use crate::continuity::channel::Inbound;
use crate::continuity::node::Continuity;
use crate::continuity::status::ContinuityStatus;
use crate::maps::MapStore;
use crate::metrics::ContinuityTotals;

use super::state::Agent;

impl<S: MapStore> Agent<S> {
    /// After an apply that wrote something: peers' exceptions resolved again, a scan at once.
    pub(super) fn continuity_rings_changed(&mut self) {
        if let Some(c) = &mut self.continuity {
            c.rings_changed(self.reconciler.applied_rings());
        }
    }

    /// Every `continuity.refresh`.
    pub(super) fn continuity_tick(&mut self) {
        let Some(c) = &mut self.continuity else {
            return;
        };
        // The program's flow_peer counter (unread: a scan).
        let flow_peer = self
            .reconciler
            .store()
            .global_stats()
            .ok()
            .map(|g| g.counters[Counter::FlowPeer as usize]);
        c.tick(self.reconciler.applied_rings(), Instant::now(), flow_peer);
        self.metrics.set_continuity(totals(c));
        self.continuity_sync_check();
    }

    /// Once the peers' exceptions are in (or the wait is over), the routes may come.
    fn continuity_sync_check(&mut self) {
        if self
            .continuity
            .as_mut()
            .is_some_and(|c| c.became_synced(Instant::now()))
        {
            self.evaluate_announce();
        }
    }

    /// A scan finished: its set goes to the senders.
    pub(super) fn continuity_scanned(&mut self) {
        if let Some(c) = &mut self.continuity {
            c.forward_scan();
        }
    }

    pub(super) fn continuity_part(&mut self, part: Inbound) {
        if let Some(c) = &mut self.continuity {
            c.part(part);
        }
        self.continuity_sync_check();
    }

    pub(super) fn continuity_status(&self) -> Option<ContinuityStatus> {
        self.continuity.as_ref().map(|c| c.status())
    }
}

fn totals(c: &Continuity) -> ContinuityTotals {
    let counts = c.counts();
    let ch = c.channel_totals();
    ContinuityTotals {
        own: c.latest_scan().exceptions,
        held: c.held() as u64,
        sent: ch.exceptions_sent,
        received: ch.exceptions_received,
        applied: counts.applied,
        expired: counts.expired,
        refused: vec![
            ("unknown", counts.unknown),
            ("mismatch", counts.mismatch),
            ("full", counts.full),
        ],
        rejected: ch.rejected,
        bytes_sent: ch.bytes_sent,
        bytes_received: ch.bytes_received,
        connected: ch.connected,
    }
}
