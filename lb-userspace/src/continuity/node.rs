//! Flow continuity in the running agent: the peer table, the scan thread and the channel's
//! tasks, driven by the event loop (a ring change, a refresh tick, a part from a peer).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use aya::maps::MapData;
use lb_common::flows::flow_capacity;
use lb_common::map_names;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn};

use super::channel::{
    self, ChannelMonitor, Inbound, Listener, ListenerConfig, Sender, SenderConfig, SyncSet,
};
use super::scan::AppliedRings;
use super::scanner::{Published, Scanner};
use super::status::{ContinuityStatus, PeerStatus};
use super::table::{Incoming, PeerTable, Resolve, SetStore, resolve_of};
use crate::maps::mmap::FlowTable;
use crate::model::{ContinuityConfig, Proto, VipId};

/// A peer that sent nothing for this many refreshes is treated as lost: its exceptions start
/// their hold (connections carry a sync every refresh, so three missed is no hiccup).
const LOST_AFTER_REFRESHES: u32 = 3;
/// Adopted entries (left by a previous agent) lapse after this unless a peer names them: long
/// enough for every live peer's next sync.
const ADOPT_GRACE_MIN: Duration = Duration::from_secs(10);
/// A node that does not serve yet waits at most this long (or three refreshes, if longer) for
/// a full set from every peer: a live peer reconnects within its 2 s backoff and sends at
/// once, a dead one never will.
const SYNC_WAIT_MIN: Duration = Duration::from_secs(5);
/// Ticks that scan the whole table after a ring change, whatever the last scan found: the scan
/// asked at the change may still run when the next tick comes.
const SCANS_AFTER_CHANGE: u32 = 2;
/// Refreshes between two scans at most, even when nothing seems to have changed: a safety net
/// for exceptions made in ways the agent does not see (a flow table adopted from a previous
/// agent, another tool writing it).
const SCAN_AT_LEAST_EVERY: u32 = 10;

pub struct Continuity<T: SetStore = FlowTable> {
    cfg: ContinuityConfig,
    table: PeerTable<T>,
    resolve: Resolve,
    scanner: Scanner,
    /// Senders read the latest scan from here (`None` until the first scan).
    sets: watch::Sender<Option<Arc<SyncSet>>>,
    channel: Arc<ChannelMonitor>,
    /// Last part received per peer, and peers whose hold has started.
    last_received: BTreeMap<SocketAddr, Instant>,
    received_total: BTreeMap<SocketAddr, u64>,
    lost: BTreeSet<SocketAddr>,
    /// Peers whose full set arrived since start, and when the wait for them ends.
    synced_from: BTreeSet<SocketAddr>,
    sync_deadline: Instant,
    synced_reported: bool,
    /// The last published scan forwarded to the senders.
    forwarded: u64,
    /// Ticks left that must scan (see [`SCANS_AFTER_CHANGE`]), and the program's `flow_peer`
    /// counter at the last scan: a flow taken from a peer is a new exception of this node.
    scans_due: u32,
    flow_peer_at_scan: Option<u64>,
    /// Heartbeats since the last scan.
    beats: u32,
    /// The channel's tasks (stopped on drop).
    _channel_thread: ChannelThread,
}

/// The channel's listener and senders run on a thread and runtime of their own: a flood of
/// connections or of frames to authenticate is handled there, and never queues the API's or
/// the event loop's tasks behind it on the agent's runtime.
struct ChannelThread {
    stop: Option<oneshot::Sender<()>>,
}

impl ChannelThread {
    async fn start(
        cfg: &ContinuityConfig,
        key: &channel::PeerKey,
        monitor: Arc<ChannelMonitor>,
        parts: mpsc::Sender<Inbound>,
        sets: watch::Receiver<Option<Arc<SyncSet>>>,
    ) -> anyhow::Result<Self> {
        let idle = cfg.refresh * LOST_AFTER_REFRESHES;
        let listener_cfg = ListenerConfig::new(cfg.listen, key.clone(), cfg.peers.len(), idle);
        let mut senders = Vec::new();
        for peer in &cfg.peers {
            // From the listen address: peers accept only their configured peers' addresses.
            let sender_cfg = SenderConfig::new(
                *peer,
                cfg.listen.to_string(),
                Some(cfg.listen.ip()),
                key.clone(),
            );
            senders.push(
                Sender::new(sender_cfg, Arc::clone(&monitor))
                    .context("a configured peer without its channel state")?,
            );
        }
        let (ready_tx, ready) = oneshot::channel::<Result<(), channel::ChannelError>>();
        let (stop, stopped) = oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("building the continuity channel's runtime")?;
        std::thread::Builder::new()
            .name("xlb-continuity".into())
            .spawn(move || {
                background_priority();
                runtime.block_on(async move {
                    let listener = match Listener::bind(listener_cfg, monitor, parts).await {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    let mut tasks = tokio::task::JoinSet::new();
                    tasks.spawn(listener.run());
                    for s in senders {
                        tasks.spawn(s.run(sets.clone()));
                    }
                    // Until the agent lets go; dropping the set aborts every task.
                    let _ = stopped.await;
                });
            })
            .context("starting the continuity channel's thread")?;
        ready
            .await
            .context("the continuity channel's thread ended")??;
        Ok(Self { stop: Some(stop) })
    }
}

/// Lowers the calling thread's scheduling priority (nice 10): under a flood the channel's and
/// the scan's threads yield the CPU to the threads that answer the API and run the event
/// loop. Linux's nice value is per thread.
pub(super) fn background_priority() {
    // SAFETY: plain syscalls on the calling thread's own id.
    let r = unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10)
    };
    if r != 0 {
        warn!(
            "could not lower the priority of a continuity thread: {}",
            std::io::Error::last_os_error()
        );
    }
}

impl Drop for ChannelThread {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// The pinned map `name` under `maps_dir`, memory-mapped.
fn pinned_table(maps_dir: &Path, name: &'static str) -> anyhow::Result<FlowTable> {
    let path = maps_dir.join(name);
    let map = MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
    Ok(FlowTable::named(name, map)?)
}

impl Continuity<FlowTable> {
    /// Starts continuity on the pinned maps: adopts the peer table, starts the scan thread, the
    /// listener and one sender per peer. Returns the parts peers send, for the event loop.
    pub async fn start(
        cfg: &ContinuityConfig,
        maps_dir: &Path,
        rings: &AppliedRings,
    ) -> anyhow::Result<(Self, mpsc::Receiver<Inbound>)> {
        let key = Arc::new(channel::PeerKey::load(&cfg.key_file)?);
        let peers = pinned_table(maps_dir, map_names::PEER_FLOWS)?;
        let flows = pinned_table(maps_dir, map_names::FLOWS)?;
        let grace = (cfg.refresh * LOST_AFTER_REFRESHES).max(ADOPT_GRACE_MIN);
        let table = PeerTable::adopt(peers, rings, Instant::now() + grace);
        if !table.is_empty() {
            info!(
                held = table.len(),
                "kept the peer exceptions a previous agent installed"
            );
        }
        let scanner = Scanner::spawn(flows).context("starting the continuity scan thread")?;
        let monitor = Arc::new(ChannelMonitor::new(&cfg.peers));
        // Small: a connection waits for its part's turn, so a flooding peer is held back by
        // TCP flow control instead of growing this queue.
        let (parts_tx, parts) = mpsc::channel(8);
        let (sets, sets_rx) = watch::channel(None);
        let channel_thread =
            ChannelThread::start(cfg, &key, Arc::clone(&monitor), parts_tx, sets_rx)
                .await
                .with_context(|| format!("listening on continuity.listen {}", cfg.listen))?;
        let mut c = Self {
            cfg: cfg.clone(),
            table,
            resolve: resolve_of(rings),
            scanner,
            sets,
            channel: monitor,
            last_received: BTreeMap::new(),
            received_total: BTreeMap::new(),
            lost: BTreeSet::new(),
            synced_from: BTreeSet::new(),
            sync_deadline: Instant::now()
                + (cfg.refresh * LOST_AFTER_REFRESHES + Duration::from_secs(2)).max(SYNC_WAIT_MIN),
            synced_reported: false,
            forwarded: 0,
            scans_due: SCANS_AFTER_CHANGE,
            flow_peer_at_scan: None,
            beats: 0,
            _channel_thread: channel_thread,
        };
        c.scanner.ask(rings.clone());
        Ok((c, parts))
    }
}

impl<T: SetStore> Continuity<T> {
    pub fn refresh(&self) -> Duration {
        self.cfg.refresh
    }

    /// After an apply: exceptions resolved again (ids and generations may have changed) and a
    /// scan at once, so peers learn a ring change's exceptions without waiting for the tick.
    pub fn rings_changed(&mut self, rings: AppliedRings) {
        self.resolve = resolve_of(&rings);
        self.table.reresolve(&self.resolve);
        self.scanner.ask(rings);
        self.scans_due = SCANS_AFTER_CHANGE;
    }

    /// Every refresh: a new full set (the heartbeat too), lost peers' holds started, lapsed
    /// exceptions removed. The set comes from a scan of the whole flow table, unless nothing
    /// can have made an exception since a scan that found none: no ring change, and no flow
    /// taken from a peer (`flow_peer`, the program's counter). Then an empty set is sent
    /// without reading the table, for at most [`SCAN_AT_LEAST_EVERY`] refreshes in a row.
    pub fn tick(&mut self, rings: AppliedRings, now: Instant, flow_peer: Option<u64>) {
        let quiet = self.scans_due == 0
            && self.beats + 1 < SCAN_AT_LEAST_EVERY
            && flow_peer.is_some()
            && flow_peer == self.flow_peer_at_scan
            && self.latest_scan().exceptions == 0;
        if quiet {
            self.beats += 1;
            self.scanner.heartbeat();
        } else {
            self.beats = 0;
            self.scans_due = self.scans_due.saturating_sub(1);
            self.flow_peer_at_scan = flow_peer;
            self.scanner.ask(rings);
        }
        let silent = self.cfg.refresh * LOST_AFTER_REFRESHES;
        for (peer, at) in &self.last_received {
            if now.duration_since(*at) > silent && self.lost.insert(*peer) {
                warn!(%peer, "no exceptions from this peer for {silent:?}: holding its \
                       exceptions for {:?}", self.cfg.hold);
                self.table.peer_lost(*peer, now, self.cfg.hold);
            }
        }
        let n = self.table.expire(now);
        if n > 0 {
            info!(expired = n, "peer exceptions lapsed");
        }
        self.forward_scan();
    }

    /// Hands a finished scan to the senders (called on the tick and when the scan thread
    /// publishes).
    pub fn forward_scan(&mut self) {
        self.scanner.flush();
        let latest: Arc<Published> = self.scanner.published.borrow().clone();
        if latest.set.sync_id == self.forwarded {
            return;
        }
        self.forwarded = latest.set.sync_id;
        self.sets.send_replace(Some(Arc::clone(&latest.set)));
    }

    /// Installs one part a peer sent; the answer goes back to its connection as an Ack.
    pub fn part(&mut self, p: Inbound) {
        let now = Instant::now();
        self.last_received.insert(p.peer, now);
        if self.lost.remove(&p.peer) {
            info!(peer = %p.peer, "peer sending again");
        }
        let (mut applied, mut rejected) = (0u32, 0u32);
        for g in &p.groups {
            let Some(proto) = Proto::from_number(g.vip.proto) else {
                rejected += g.flows.len() as u32;
                continue;
            };
            let vip = VipId {
                addr: g.vip.addr,
                port: g.vip.port,
                proto,
            };
            for f in &g.flows {
                let x = Incoming {
                    vip,
                    backend: g.backend,
                    client: f.client,
                    client_port: f.client_port,
                    dst_port: f.dst_port,
                };
                match self.table.apply(p.peer, p.sync_id, &x, &self.resolve) {
                    Ok(()) => applied += 1,
                    Err(_) => rejected += 1,
                }
            }
        }
        *self.received_total.entry(p.peer).or_default() += u64::from(applied + rejected);
        if p.last {
            self.table.finish_sync(p.peer, p.sync_id);
            self.synced_from.insert(p.peer);
        }
        let _ = p.done.send(channel::ApplyResult { applied, rejected });
    }

    /// Every peer's full set arrived since start, or the wait for them is over.
    pub fn synced(&self, now: Instant) -> bool {
        now >= self.sync_deadline || self.cfg.peers.iter().all(|p| self.synced_from.contains(p))
    }

    /// [`Continuity::synced`], true once: when it becomes so.
    pub fn became_synced(&mut self, now: Instant) -> bool {
        if self.synced_reported || !self.synced(now) {
            return false;
        }
        self.synced_reported = true;
        info!(
            peers = self.synced_from.len(),
            of = self.cfg.peers.len(),
            "peers' exceptions in: ready for traffic"
        );
        true
    }

    /// Peer exceptions held now.
    pub fn held(&self) -> usize {
        self.table.len()
    }

    pub fn counts(&self) -> super::table::TableCounts {
        self.table.counts
    }

    pub fn latest_scan(&self) -> Arc<Published> {
        self.scanner.published.borrow().clone()
    }

    /// The scan thread's results, for the event loop to wait on.
    pub fn scans(&self) -> watch::Receiver<Arc<Published>> {
        self.scanner.published.clone()
    }

    /// The channel's totals, for the metrics.
    pub fn channel_totals(&self) -> ChannelTotals {
        let st = self.channel.stats();
        let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        ChannelTotals {
            exceptions_sent: load(&st.exceptions_sent),
            exceptions_received: load(&st.exceptions_received),
            bytes_sent: load(&st.bytes_sent),
            bytes_received: load(&st.bytes_received),
            rejected: st
                .rejections()
                .filter(|(_, n)| *n > 0)
                .map(|(r, n)| (r.to_string(), n))
                .collect(),
            connected: self
                .channel
                .peers()
                .into_iter()
                .map(|p| (p.addr.to_string(), p.outbound_connected))
                .collect(),
        }
    }

    pub fn status(&self) -> ContinuityStatus {
        let now = Instant::now();
        let wall = SystemTime::now();
        let scan = self.latest_scan();
        let held = self.table.per_peer();
        let ms =
            |at: Option<Instant>| at.map(|a| now.saturating_duration_since(a).as_millis() as u64);
        let wall_ms = |at: Option<SystemTime>| {
            at.map(|a| wall.duration_since(a).unwrap_or_default().as_millis() as u64)
        };
        let peers = self
            .channel
            .peers()
            .into_iter()
            .map(|st| {
                let addr = &st.addr;
                PeerStatus {
                    addr: *addr,
                    connected: st.outbound_connected,
                    last_sent_ago_ms: wall_ms(st.last_sent),
                    last_received_ago_ms: ms(self.last_received.get(addr).copied()),
                    acked_sync: st.last_acked.as_ref().map(|a| a.sync_id),
                    exceptions_sent: st.exceptions_sent_total,
                    held: held.get(&Some(*addr)).copied().unwrap_or(0) as u64,
                    exceptions_received: self.received_total.get(addr).copied().unwrap_or(0),
                }
            })
            .collect();
        ContinuityStatus {
            listen: self.cfg.listen,
            own_exceptions: scan.exceptions,
            last_scan_ago_ms: (scan.set.sync_id > 0).then(|| ms(Some(scan.at)).unwrap_or(0)),
            last_scan_took_ms: scan.took.as_millis() as u64,
            held: self.table.len() as u64,
            pending: self.table.pending() as u64,
            capacity: u64::from(flow_capacity(self.table.sets())),
            peers,
            rejected: self.channel_totals().rejected,
        }
    }
}

/// The channel's counters as the metrics take them.
#[derive(Clone, Debug, Default)]
pub struct ChannelTotals {
    pub exceptions_sent: u64,
    pub exceptions_received: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub rejected: Vec<(String, u64)>,
    pub connected: Vec<(String, bool)>,
}
