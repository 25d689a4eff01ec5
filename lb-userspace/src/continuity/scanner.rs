//! The scan off the event loop: a thread of its own reads the whole flow table (tens of
//! milliseconds for a million slots in a release build), finds the exceptions (`scan`) and
//! encodes them once for every peer (`wire::encode_sync`). The agent asks for a scan after each
//! ring change and on every refresh tick; asks that pile up while a scan runs collapse into one,
//! on the latest rings.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use lb_common::FlowSlot;
use tokio::sync::watch;
use tracing::warn;

use super::channel::SyncSet;
use super::scan::{AppliedRings, Exceptions, client_of};
use super::table::SetStore;
use super::wire::{ExceptionGroup, FlowRef, VipRef};

/// A scan's outcome, as the senders send it.
#[derive(Debug)]
pub struct Published {
    /// The full set, encoded once for every peer; its `sync_id` grows by one per scan.
    pub set: Arc<SyncSet>,
    /// Exceptions found (flows in `set`, plus any the wire could not carry).
    pub exceptions: u64,
    pub took: Duration,
    pub at: Instant,
}

/// What the agent asks of the thread: a scan on these rings, or (`None`) only a new empty set
/// under a new sync id, the heartbeat of a node that has nothing to send.
type Ask = Option<AppliedRings>;

/// The agent's end: asks for scans, reads their outcome.
pub struct Scanner {
    asks: SyncSender<Ask>,
    pending: Option<Ask>,
    pub published: watch::Receiver<Arc<Published>>,
}

impl Scanner {
    /// Starts the thread over `table` (the flow table's mapping).
    pub fn spawn<T: SetStore + Send + 'static>(table: T) -> std::io::Result<Self> {
        let (asks, rx) = sync_channel(1);
        let first = Arc::new(Published {
            set: Arc::new(SyncSet::encode(0, &[]).0),
            exceptions: 0,
            took: Duration::ZERO,
            at: Instant::now(),
        });
        let (tx, published) = watch::channel(first);
        std::thread::Builder::new()
            .name("xlb-continuity-scan".into())
            .spawn(move || {
                super::node::background_priority();
                run(table, rx, tx)
            })?;
        Ok(Self {
            asks,
            pending: None,
            published,
        })
    }

    /// Asks for a scan on `rings`; if one is queued already, the newest rings replace it on
    /// the next [`Scanner::ask`] or [`Scanner::flush`].
    pub fn ask(&mut self, rings: AppliedRings) {
        self.pending = Some(Some(rings));
        self.flush();
    }

    /// Asks for a heartbeat: an empty set, without reading the table. A scan already pending
    /// stays (it sends at least as much).
    pub fn heartbeat(&mut self) {
        if self.pending.is_none() {
            self.pending = Some(None);
        }
        self.flush();
    }

    /// Hands a pending ask to the thread if it has room.
    pub fn flush(&mut self) {
        if let Some(r) = self.pending.take() {
            match self.asks.try_send(r) {
                Ok(()) => {}
                Err(TrySendError::Full(r)) => self.pending = Some(r),
                Err(TrySendError::Disconnected(_)) => warn!("the continuity scan thread ended"),
            }
        }
    }
}

fn run<T: SetStore>(table: T, asks: Receiver<Ask>, out: watch::Sender<Arc<Published>>) {
    let mut sync_id = 0u64;
    // The last real scan's time and duration, which a heartbeat reports as its own.
    let (mut took, mut at) = (Duration::ZERO, Instant::now());
    while let Ok(ask) = asks.recv() {
        sync_id += 1;
        let Some(rings) = ask else {
            let published = Published {
                set: Arc::new(SyncSet::encode(sync_id, &[]).0),
                exceptions: 0,
                took,
                at,
            };
            if out.send(Arc::new(published)).is_err() {
                return;
            }
            continue;
        };
        let start = Instant::now();
        let found = scan_table(&table, &rings);
        let groups = groups_of(&found);
        let (set, skipped) = SyncSet::encode(sync_id, &groups);
        if skipped > 0 {
            warn!(
                skipped,
                "exceptions the wire cannot carry were left out of the peer sync"
            );
        }
        let exceptions = found.values().map(|v| v.len() as u64).sum();
        (took, at) = (start.elapsed(), Instant::now());
        let published = Published {
            set: Arc::new(set),
            exceptions,
            took,
            at,
        };
        if out.send(Arc::new(published)).is_err() {
            return;
        }
    }
}

/// Every exception of `table`.
pub fn scan_table<T: SetStore>(table: &T, rings: &AppliedRings) -> Exceptions {
    let mut out = Exceptions::new();
    for i in 0..table.sets() {
        let set = table.read_set(i);
        for s in set.ways.iter().filter(|s: &&FlowSlot| s.key.family != 0) {
            if let Some(group) = rings.exception(s) {
                out.entry(group).or_default().push(s.key);
            }
        }
    }
    out
}

/// The wire's groups of `found`.
pub fn groups_of(found: &Exceptions) -> Vec<ExceptionGroup> {
    found
        .iter()
        .map(|((vip, backend), keys)| ExceptionGroup {
            vip: VipRef {
                addr: vip.addr,
                port: vip.port,
                proto: vip.proto.number(),
            },
            backend: *backend,
            flows: keys
                .iter()
                .filter_map(client_of)
                .map(|(client, client_port, dst_port)| FlowRef {
                    client,
                    client_port,
                    dst_port,
                })
                .collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use lb_common::FlowSet;

    use super::*;

    fn next(sc: &mut Scanner, after: u64) -> Arc<Published> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            sc.flush();
            let p = sc.published.borrow().clone();
            if p.set.sync_id > after {
                return p;
            }
            assert!(Instant::now() < deadline, "no set after sync {after}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn scans_and_heartbeats_publish_sets_under_growing_sync_ids() {
        let mut sc = Scanner::spawn(vec![FlowSet::default(); 4]).unwrap();
        sc.ask(AppliedRings::default());
        let scan = next(&mut sc, 0);
        assert_eq!((scan.set.sync_id, scan.exceptions), (1, 0));
        sc.heartbeat();
        let beat = next(&mut sc, 1);
        assert_eq!(beat.set.sync_id, 2);
        assert_eq!(beat.set.parts.len(), 1, "one empty, last part");
        assert_eq!(beat.set.flows, 0);
        assert_eq!(beat.at, scan.at, "a heartbeat reports the last real scan");
    }
}
