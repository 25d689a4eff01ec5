//! Sender side: one task per configured peer keeps a connection to it and sends every new full
//! set of this node's exceptions.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::time::timeout;

use super::frame::{Auth, FrameReceiver, FrameSender, read_challenge};
use super::{
    AckRecord, ChannelError, ChannelMonitor, HANDSHAKE_TIMEOUT, PeerKey, PeerState, nonce,
};
use crate::continuity::wire::{
    EncodedPart, ExceptionGroup, Kind, LABEL_RECEIVER_TO_SENDER, LABEL_SENDER_TO_RECEIVER,
    MAX_PAYLOAD, Message, encode_sync,
};

/// First reconnect delay; doubled after each failure up to [`BACKOFF_MAX`].
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
pub const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Deadline of a TCP connect.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default wait for an ack of a sent part. Longer than the receiver's apply timeout (10 s) so a
/// receiver whose agent is slow closes the connection itself, with that reason in its log.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// A full set of this node's exceptions, encoded once for every peer (parts do not depend on
/// the connection; only their framing does).
#[derive(Debug)]
pub struct SyncSet {
    pub sync_id: u64,
    pub parts: Vec<EncodedPart>,
    /// Flows in the set.
    pub flows: u64,
}

impl SyncSet {
    /// Encodes `groups` in parts of at most [`MAX_PAYLOAD`] bytes. Flows the wire cannot carry
    /// are left out and counted in the second value (see [`encode_sync`]); the caller logs them.
    pub fn encode(sync_id: u64, groups: &[ExceptionGroup]) -> (Self, u64) {
        let encoded = encode_sync(sync_id, groups, MAX_PAYLOAD);
        (
            Self {
                sync_id,
                parts: encoded.parts,
                flows: encoded.flows,
            },
            encoded.skipped_flows,
        )
    }
}

/// Settings of one peer's sender.
#[derive(Clone, Debug)]
pub struct SenderConfig {
    /// The peer's listen address.
    pub peer: SocketAddr,
    /// This node's listen address as text (sent in the Hello; at most 64 bytes).
    pub node: String,
    /// Source address of the connection: this node's listen IP, so the peer recognises it.
    pub bind_ip: Option<IpAddr>,
    pub key: PeerKey,
    pub connect_timeout: Duration,
    pub handshake_timeout: Duration,
    /// With parts unacknowledged, a connection that receives nothing for this long is dropped
    /// and made again (a peer that vanished without a reset).
    pub ack_timeout: Duration,
}

impl SenderConfig {
    /// The defaults: source bound to `bind_ip`, default deadlines.
    pub fn new(peer: SocketAddr, node: String, bind_ip: Option<IpAddr>, key: PeerKey) -> Self {
        Self {
            peer,
            node,
            bind_ip,
            key,
            connect_timeout: CONNECT_TIMEOUT,
            handshake_timeout: HANDSHAKE_TIMEOUT,
            ack_timeout: ACK_TIMEOUT,
        }
    }
}

/// The sets to send: `None` until the agent has scanned its flow table once (sending an empty
/// set before would wipe what the peer holds from us).
///
/// The agent publishes a new set (with a new `sync_id`) every refresh interval, even when
/// nothing changed: it is the heartbeat that keeps the peer's idle timeout from closing the
/// connection, and it repairs whatever a peer lost. Sync ids only need to differ from the
/// previous set's; an increasing counter is simplest.
pub type SetReceiver = watch::Receiver<Option<Arc<SyncSet>>>;

/// One peer's sender task.
pub struct Sender {
    config: SenderConfig,
    monitor: Arc<ChannelMonitor>,
    state: Arc<PeerState>,
}

impl Sender {
    /// A sender to `config.peer`, which must be one of the monitor's peers.
    pub fn new(config: SenderConfig, monitor: Arc<ChannelMonitor>) -> Option<Self> {
        let state = Arc::clone(monitor.peer(config.peer)?);
        Some(Self {
            config,
            monitor,
            state,
        })
    }

    /// Connects, sends, reconnects with backoff; returns once the agent drops the set's
    /// watch sender (or when aborted).
    pub async fn run(self, mut sets: SetReceiver) {
        let ip = self.config.peer.ip();
        let mut backoff = BACKOFF_MIN;
        loop {
            let mut established = false;
            let result = match self.connect().await {
                Ok(stream) => self.drive(stream, &mut sets, &mut established).await,
                Err(err) => Err(err),
            };
            self.state.update(|s| s.outbound_connected = false);
            match result {
                Ok(()) => return,
                Err(err) => {
                    self.state.update(|s| s.last_error = Some(err.to_string()));
                    if err.reason().is_some() {
                        self.monitor.failed(ip, "outbound connection", &err);
                    } else {
                        let peer = self.config.peer;
                        self.monitor.warn(ip, "connect", || {
                            format!("connection to peer {peer} failed or ended: {err}; retrying")
                        });
                    }
                }
            }
            if established {
                backoff = BACKOFF_MIN;
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                // The agent stopped: no point in reconnecting.
                () = closed(&mut sets) => return,
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    async fn connect(&self) -> Result<TcpStream, ChannelError> {
        let peer = self.config.peer;
        let socket = if peer.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(ip) = self.config.bind_ip {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        let stream = timeout(self.config.connect_timeout, socket.connect(peer))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
            })??;
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    /// Runs one connection: handshake, then every set. `Ok` when the agent stopped; sets
    /// `established` once the peer acknowledged a part. Not when the Hello went out: a peer
    /// that refuses it (another key) closes at once, and counting that as a connection would
    /// reset the backoff and reconnect to it ten times a second, each time a rejection and a
    /// warning on its side.
    pub(crate) async fn drive<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        mut stream: S,
        sets: &mut SetReceiver,
        established: &mut bool,
    ) -> Result<(), ChannelError> {
        let config = &self.config;
        let their_nonce = timeout(config.handshake_timeout, read_challenge(&mut stream))
            .await
            .map_err(|_| ChannelError::HandshakeTimeout(config.handshake_timeout))??;
        let our_nonce = nonce()?;
        let (mut rd, mut wr) = tokio::io::split(stream);
        let mut frames_out = FrameSender::new(Auth {
            key: config.key.clone(),
            label: LABEL_SENDER_TO_RECEIVER,
            nonce: their_nonce,
        });
        let mut frames_in = FrameReceiver::new(Auth {
            key: config.key.clone(),
            label: LABEL_RECEIVER_TO_SENDER,
            nonce: our_nonce,
        });
        let hello = Message::Hello {
            node: config.node.clone(),
            nonce: our_nonce,
        }
        .encode()
        .map_err(|_| ChannelError::Protocol("this node's name is too long for a Hello"))?;
        let bytes = frames_out.send(&mut wr, Kind::Hello, &hello).await?;
        self.monitor.count_sent(&self.state, bytes, 0);
        self.state.update(|s| {
            s.outbound_connected = true;
            s.last_error = None;
        });

        let pending = Mutex::new(Pending::default());
        let writer = async {
            loop {
                let current = sets.borrow_and_update().clone();
                if let Some(set) = current {
                    self.send_set(&mut wr, &mut frames_out, &set, sets, &pending)
                        .await?;
                }
                if sets.changed().await.is_err() {
                    return Ok(());
                }
            }
        };
        let reader = async {
            loop {
                let frame = match timeout(config.ack_timeout, frames_in.recv(&mut rd)).await {
                    Err(_) if lock(&pending).parts.is_empty() => continue,
                    Err(_) => return Err(ChannelError::IdleTimeout(config.ack_timeout)),
                    Ok(frame) => frame?,
                };
                let Message::Ack {
                    sync_id,
                    part,
                    applied,
                    rejected,
                } = Message::decode(frame.kind, &frame.payload)?
                else {
                    return Err(ChannelError::Protocol(
                        "a frame other than an Ack from the receiver",
                    ));
                };
                self.monitor.count_received(&self.state, frame.wire_len, 0);
                // An authenticated Ack: the peer accepted our key and our Hello.
                *established = true;
                let complete = lock(&pending).acked(sync_id, part, applied, rejected)?;
                if let Some(record) = complete {
                    self.state.update(|s| s.last_acked = Some(record));
                }
            }
        };
        tokio::select! {
            r = writer => r,
            r = reader => r,
        }
    }

    /// Sends a set's parts, abandoning it as soon as a newer one is published (the newer one
    /// replaces it whole on the peer, so finishing the old one would only delay it).
    async fn send_set<W: AsyncWrite + Unpin>(
        &self,
        wr: &mut W,
        frames_out: &mut FrameSender,
        set: &SyncSet,
        sets: &SetReceiver,
        pending: &Mutex<Pending>,
    ) -> Result<(), ChannelError> {
        let last = set.parts.len() - 1;
        for (i, part) in set.parts.iter().enumerate() {
            if sets.has_changed().unwrap_or(true) {
                return Ok(());
            }
            lock(pending)
                .parts
                .push_back((set.sync_id, i as u32, i == last));
            let bytes = frames_out.send(wr, Kind::Sync, &part.payload).await?;
            self.monitor
                .count_sent(&self.state, bytes, u64::from(part.flows));
        }
        self.state
            .update(|s| s.exceptions_sent_last_set = set.flows);
        Ok(())
    }
}

/// Resolves once the watch sender is gone.
async fn closed(sets: &mut SetReceiver) {
    while sets.changed().await.is_ok() {}
}

/// Parts sent and not yet acknowledged, and the sums of the set being acknowledged.
#[derive(Debug, Default)]
struct Pending {
    /// `(sync_id, part, last)` in the order sent; acks come back in the same order.
    parts: VecDeque<(u64, u32, bool)>,
    /// `(sync_id, applied, rejected)` summed over the acked parts of that set.
    sums: Option<(u64, u64, u64)>,
}

impl Pending {
    /// Records an ack; the record of the whole set when it acknowledges a set's last part.
    fn acked(
        &mut self,
        sync_id: u64,
        part: u32,
        applied: u32,
        rejected: u32,
    ) -> Result<Option<AckRecord>, ChannelError> {
        let Some((id, number, last)) = self.parts.pop_front() else {
            return Err(ChannelError::Protocol("an Ack for a part not sent"));
        };
        if (id, number) != (sync_id, part) {
            return Err(ChannelError::Protocol("an Ack for a part not sent"));
        }
        let (applied_sum, rejected_sum) = match self.sums {
            Some((id, a, r)) if id == sync_id && part != 0 => (a, r),
            _ => (0, 0),
        };
        let sums = (
            sync_id,
            applied_sum + u64::from(applied),
            rejected_sum + u64::from(rejected),
        );
        self.sums = Some(sums);
        Ok(last.then(|| AckRecord {
            sync_id,
            at: SystemTime::now(),
            applied: sums.1,
            rejected: sums.2,
        }))
    }
}

fn lock(pending: &Mutex<Pending>) -> std::sync::MutexGuard<'_, Pending> {
    pending.lock().unwrap_or_else(|e| e.into_inner())
}
