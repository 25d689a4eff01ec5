//! What the channel shows the operator: node-wide counters (for metrics), per-peer state (for
//! `xlb status`) and rate-limited warnings.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use super::ChannelError;

/// Why a connection or frame was refused; one counter each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RejectReason {
    BadTag,
    Replay,
    Malformed,
    Oversized,
    UnknownPeer,
    TooManyConnections,
    HandshakeTimeout,
    IdleTimeout,
    Protocol,
    Truncated,
}

impl RejectReason {
    /// Every reason, in counter order.
    pub const ALL: [Self; 10] = [
        Self::BadTag,
        Self::Replay,
        Self::Malformed,
        Self::Oversized,
        Self::UnknownPeer,
        Self::TooManyConnections,
        Self::HandshakeTimeout,
        Self::IdleTimeout,
        Self::Protocol,
        Self::Truncated,
    ];

    /// The `reason` label of `xlb_continuity_rejected_total`.
    pub fn label(self) -> &'static str {
        match self {
            Self::BadTag => "bad_tag",
            Self::Replay => "replay",
            Self::Malformed => "malformed",
            Self::Oversized => "oversized",
            Self::UnknownPeer => "unknown_peer",
            Self::TooManyConnections => "too_many_connections",
            Self::HandshakeTimeout => "handshake_timeout",
            Self::IdleTimeout => "idle_timeout",
            Self::Protocol => "protocol",
            Self::Truncated => "truncated",
        }
    }

    /// What the operator should check, completing "peer X ...".
    fn advice(self) -> &'static str {
        match self {
            Self::BadTag => {
                "sent a frame with a bad tag: do both nodes use the same continuity key-file?"
            }
            Self::Replay => {
                "sent a frame out of sequence (replayed or duplicated): is something on the path replaying traffic?"
            }
            Self::Malformed => "sent a malformed frame: do both nodes run the same xlb version?",
            Self::Oversized => {
                "declared a frame larger than the 1 MiB limit: is it an xlb node of a compatible version?"
            }
            Self::UnknownPeer => {
                "connected but is not a configured continuity peer: add it to this node's peers, or check that it sends from its listen address"
            }
            Self::TooManyConnections => {
                "opened more connections than allowed: is it reconnecting in a loop, or is something else connecting from its address?"
            }
            Self::HandshakeTimeout => {
                "did not authenticate in time: is it an xlb node, and is the path congested?"
            }
            Self::IdleTimeout => "went silent: is its agent running, and is the path up?",
            Self::Protocol => {
                "broke the protocol (unexpected message or version): do both nodes run the same xlb version?"
            }
            Self::Truncated => {
                "closed the connection in the middle of a frame: did its agent restart?"
            }
        }
    }
}

/// Node-wide counters of the channel, both directions.
#[derive(Debug, Default)]
pub struct ChannelStats {
    pub frames_sent: AtomicU64,
    pub frames_received: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub bytes_received: AtomicU64,
    pub exceptions_sent: AtomicU64,
    pub exceptions_received: AtomicU64,
    rejected: [AtomicU64; RejectReason::ALL.len()],
}

impl ChannelStats {
    /// Counts one rejection.
    pub fn reject(&self, reason: RejectReason) {
        self.rejected[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Rejections so far for `reason`.
    pub fn rejected(&self, reason: RejectReason) -> u64 {
        self.rejected[reason as usize].load(Ordering::Relaxed)
    }

    /// `(reason label, count)` of every reason, for `xlb_continuity_rejected_total{reason}`.
    pub fn rejections(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        RejectReason::ALL
            .iter()
            .map(|&r| (r.label(), self.rejected(r)))
    }

    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// The receiver's acknowledgement of a whole set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AckRecord {
    pub sync_id: u64,
    pub at: SystemTime,
    /// Sums over the set's parts.
    pub applied: u64,
    pub rejected: u64,
}

/// One configured peer as `xlb status` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    /// The configured address.
    pub addr: SocketAddr,
    /// Whether our sender has an authenticated connection to it.
    pub outbound_connected: bool,
    /// Its authenticated connections to our listener.
    pub inbound_connections: u32,
    /// Why the last outbound connection failed or ended, if it did.
    pub last_error: Option<String>,
    pub last_sent: Option<SystemTime>,
    pub last_received: Option<SystemTime>,
    /// The last set it acknowledged in full.
    pub last_acked: Option<AckRecord>,
    /// Exceptions of the last full set sent to it, and sent in total.
    pub exceptions_sent_last_set: u64,
    pub exceptions_sent_total: u64,
    /// Exceptions of the last full set received from it, and received in total.
    pub exceptions_received_last_set: u64,
    pub exceptions_received_total: u64,
    pub frames_sent: u64,
    pub bytes_sent: u64,
    pub frames_received: u64,
    pub bytes_received: u64,
}

/// A configured peer's live state, shared by its sender and the listener's connections.
#[derive(Debug)]
pub struct PeerState {
    inner: Mutex<PeerStatus>,
}

impl PeerState {
    fn new(addr: SocketAddr) -> Self {
        Self {
            inner: Mutex::new(PeerStatus {
                addr,
                outbound_connected: false,
                inbound_connections: 0,
                last_error: None,
                last_sent: None,
                last_received: None,
                last_acked: None,
                exceptions_sent_last_set: 0,
                exceptions_sent_total: 0,
                exceptions_received_last_set: 0,
                exceptions_received_total: 0,
                frames_sent: 0,
                bytes_sent: 0,
                frames_received: 0,
                bytes_received: 0,
            }),
        }
    }

    /// A copy of the state.
    pub fn status(&self) -> PeerStatus {
        self.lock().clone()
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.lock().addr
    }

    /// Changes the state. The lock is never held across an await (std mutex on purpose: the
    /// updates are a few field writes).
    pub(crate) fn update(&self, f: impl FnOnce(&mut PeerStatus)) {
        f(&mut self.lock());
    }

    fn lock(&self) -> MutexGuard<'_, PeerStatus> {
        // A panic while holding the lock leaves only counters half-updated: keep going.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Everything the channel's tasks share: the counters, each peer's state and the warning
/// limiter. The agent holds one per node and reads it for status and metrics.
#[derive(Debug)]
pub struct ChannelMonitor {
    stats: ChannelStats,
    peers: Vec<Arc<PeerState>>,
    warnings: WarnLimiter,
}

impl ChannelMonitor {
    /// State for the configured peers.
    pub fn new(peers: &[SocketAddr]) -> Self {
        Self {
            stats: ChannelStats::default(),
            peers: peers.iter().map(|&a| Arc::new(PeerState::new(a))).collect(),
            warnings: WarnLimiter::new(WARN_INTERVAL),
        }
    }

    pub fn stats(&self) -> &ChannelStats {
        &self.stats
    }

    /// Every configured peer's state, in configuration order.
    pub fn peers(&self) -> Vec<PeerStatus> {
        self.peers.iter().map(|p| p.status()).collect()
    }

    /// The state of the configured peer `addr`.
    pub fn peer(&self, addr: SocketAddr) -> Option<&Arc<PeerState>> {
        self.peers.iter().find(|p| p.addr() == addr)
    }

    /// Configured peers at `ip` (normally one).
    pub(crate) fn peers_at(&self, ip: IpAddr) -> Vec<Arc<PeerState>> {
        let ip = ip.to_canonical();
        self.peers
            .iter()
            .filter(|p| p.addr().ip().to_canonical() == ip)
            .cloned()
            .collect()
    }

    pub(crate) fn count_sent(&self, peer: &PeerState, bytes: usize, exceptions: u64) {
        let now = SystemTime::now();
        ChannelStats::add(&self.stats.frames_sent, 1);
        ChannelStats::add(&self.stats.bytes_sent, bytes as u64);
        ChannelStats::add(&self.stats.exceptions_sent, exceptions);
        peer.update(|s| {
            s.frames_sent += 1;
            s.bytes_sent += bytes as u64;
            s.exceptions_sent_total += exceptions;
            s.last_sent = Some(now);
        });
    }

    pub(crate) fn count_received(&self, peer: &PeerState, bytes: usize, exceptions: u64) {
        let now = SystemTime::now();
        ChannelStats::add(&self.stats.frames_received, 1);
        ChannelStats::add(&self.stats.bytes_received, bytes as u64);
        ChannelStats::add(&self.stats.exceptions_received, exceptions);
        peer.update(|s| {
            s.frames_received += 1;
            s.bytes_received += bytes as u64;
            s.exceptions_received_total += exceptions;
            s.last_received = Some(now);
        });
    }

    /// Counts a failure that is a rejection and warns about it (rate-limited); other failures
    /// (plain disconnects, local problems) are logged at debug level with `context`.
    pub(crate) fn failed(&self, ip: IpAddr, context: &'static str, err: &ChannelError) {
        match err.reason() {
            Some(reason) => {
                self.stats.reject(reason);
                if let Some(suppressed) = self.warnings.check(ip, reason.label(), Instant::now()) {
                    tracing::warn!(
                        peer = %ip,
                        reason = reason.label(),
                        suppressed,
                        "continuity: peer {ip} {} ({context}: {err})",
                        reason.advice(),
                    );
                }
            }
            None => tracing::debug!(peer = %ip, "continuity: {context}: {err}"),
        }
    }

    /// A warning that is not a rejection (a connect failure, a slow agent), rate-limited per
    /// peer and `key` like the rejections.
    pub(crate) fn warn(&self, ip: IpAddr, key: &'static str, message: impl FnOnce() -> String) {
        if let Some(suppressed) = self.warnings.check(ip, key, Instant::now()) {
            tracing::warn!(peer = %ip, suppressed, "continuity: {}", message());
        }
    }
}

/// At most one warning per peer and reason in this interval.
pub(crate) const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// Entries kept before old ones are pruned: unknown peers are keyed by address, and a scan
/// from many addresses must not grow the table without bound.
const WARN_TABLE_MAX: usize = 1024;

/// Rate limiter of warnings: one per (peer IP, reason) per interval, with the number held back
/// since the last one reported on the next.
#[derive(Debug)]
pub(crate) struct WarnLimiter {
    interval: Duration,
    seen: Mutex<WarnTable>,
}

/// Per (peer IP, reason): when the last warning was logged and how many were held back since.
type WarnTable = HashMap<(IpAddr, &'static str), (Instant, u64)>;

impl WarnLimiter {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(suppressed since the last warning)` when a warning should be logged now.
    pub fn check(&self, ip: IpAddr, key: &'static str, now: Instant) -> Option<u64> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() >= WARN_TABLE_MAX && !seen.contains_key(&(ip, key)) {
            let interval = self.interval;
            seen.retain(|_, (at, _)| now.duration_since(*at) < interval);
            if seen.len() >= WARN_TABLE_MAX {
                // Still full of recent entries: an address scan. Fold the rest into one entry
                // so the flood is still reported, once per interval.
                return Self::step(&mut seen, (IpAddr::from([0u8; 4]), key), now, interval);
            }
        }
        Self::step(&mut seen, (ip, key), now, self.interval)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    fn step(
        seen: &mut WarnTable,
        key: (IpAddr, &'static str),
        now: Instant,
        interval: Duration,
    ) -> Option<u64> {
        match seen.get_mut(&key) {
            Some((at, suppressed)) if now.duration_since(*at) < interval => {
                *suppressed += 1;
                None
            }
            Some((at, suppressed)) => {
                let held = *suppressed;
                *at = now;
                *suppressed = 0;
                Some(held)
            }
            None => {
                seen.insert(key, (now, 0));
                Some(0)
            }
        }
    }
}
