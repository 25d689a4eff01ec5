//! Receiver side: accepts connections from configured peers, authenticates them and hands each
//! Sync part to the agent, acknowledging it once applied.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::timeout;

use super::frame::{Auth, FrameReceiver, FrameSender, challenge};
use super::{
    ChannelError, ChannelMonitor, HANDSHAKE_TIMEOUT, MIN_IDLE_TIMEOUT, PeerKey, PeerState, nonce,
};
use crate::continuity::wire::{
    ExceptionGroup, Kind, LABEL_RECEIVER_TO_SENDER, LABEL_SENDER_TO_RECEIVER, Message,
};

/// How long the agent may take to apply one part before the connection gives up on it.
pub const APPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings of the listener.
#[derive(Clone, Debug)]
pub struct ListenerConfig {
    /// The node's own address; never unspecified.
    pub listen: SocketAddr,
    pub key: PeerKey,
    /// Concurrent connections, all peers together.
    pub max_connections: usize,
    /// Deadline for the Hello after the challenge.
    pub handshake_timeout: Duration,
    /// A connection that sends no frame for this long is closed.
    pub idle_timeout: Duration,
    /// Deadline for the agent to take and apply a part.
    pub apply_timeout: Duration,
}

impl ListenerConfig {
    /// The defaults for `peers` configured peers: two connections per peer (an old one being
    /// replaced by a new one) plus two, the default deadlines, and `idle_timeout` raised to at
    /// least [`MIN_IDLE_TIMEOUT`].
    pub fn new(listen: SocketAddr, key: PeerKey, peers: usize, idle_timeout: Duration) -> Self {
        Self {
            listen,
            key,
            max_connections: 2 * peers + 2,
            handshake_timeout: HANDSHAKE_TIMEOUT,
            idle_timeout: idle_timeout.max(MIN_IDLE_TIMEOUT),
            apply_timeout: APPLY_TIMEOUT,
        }
    }
}

/// What the agent did with a part.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApplyResult {
    pub applied: u32,
    pub rejected: u32,
}

/// One authenticated Sync part for the agent.
///
/// Parts of a set arrive in order `0..=last` on one connection. A part 0 of another `sync_id`
/// from the same peer means the sender abandoned the previous set for a newer one (or
/// reconnected): staged parts of the older set should be dropped. The set is complete when
/// the part with `last` arrives; it then replaces everything this peer sent before (an empty
/// complete set means the peer has no exceptions any more).
#[derive(Debug)]
pub struct Inbound {
    /// The configured address of the peer it came from.
    pub peer: SocketAddr,
    pub sync_id: u64,
    pub part: u32,
    pub last: bool,
    pub groups: Vec<ExceptionGroup>,
    /// Where the agent reports the outcome; the Ack waits for it.
    pub done: oneshot::Sender<ApplyResult>,
}

/// A source of connections: TCP in production, in-memory pipes in tests.
pub trait Accept: Send + 'static {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn accept(&mut self) -> impl Future<Output = io::Result<(Self::Stream, SocketAddr)>> + Send;
}

impl Accept for TcpListener {
    type Stream = TcpStream;

    async fn accept(&mut self) -> io::Result<(TcpStream, SocketAddr)> {
        let (stream, addr) = TcpListener::accept(self).await?;
        // Acks are small and latency matters more than packing them.
        stream.set_nodelay(true)?;
        Ok((stream, addr))
    }
}

/// The receiver's accept loop.
pub struct Listener<A = TcpListener> {
    accept: A,
    ctx: Arc<Ctx>,
}

/// What every connection task of a listener shares.
struct Ctx {
    config: ListenerConfig,
    monitor: Arc<ChannelMonitor>,
    inbound: mpsc::Sender<Inbound>,
    slots: Arc<Semaphore>,
}

impl Listener<TcpListener> {
    /// Binds exactly `config.listen`; refuses an unspecified address, which would accept peers
    /// on every interface and make the node's identity ambiguous.
    pub async fn bind(
        config: ListenerConfig,
        monitor: Arc<ChannelMonitor>,
        inbound: mpsc::Sender<Inbound>,
    ) -> Result<Self, ChannelError> {
        if config.listen.ip().is_unspecified() {
            return Err(ChannelError::UnspecifiedListen(config.listen));
        }
        let tcp = TcpListener::bind(config.listen).await?;
        Ok(Self::with_acceptor(tcp, config, monitor, inbound))
    }

    /// The bound address (the configured one; its port if 0 was asked).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.accept.local_addr()
    }
}

impl<A: Accept> Listener<A> {
    /// A listener over any source of connections.
    pub fn with_acceptor(
        accept: A,
        config: ListenerConfig,
        monitor: Arc<ChannelMonitor>,
        inbound: mpsc::Sender<Inbound>,
    ) -> Self {
        let slots = Arc::new(Semaphore::new(config.max_connections));
        Self {
            accept,
            ctx: Arc::new(Ctx {
                config,
                monitor,
                inbound,
                slots,
            }),
        }
    }

    /// Accepts until the agent drops the inbound queue's receiver. Dropping (or aborting) this
    /// future ends every connection it started.
    pub async fn run(mut self) {
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                accepted = self.accept.accept() => match accepted {
                    Ok((stream, remote)) => self.admit(&mut connections, stream, remote),
                    Err(err) => {
                        // Out of descriptors and the like: back off instead of spinning.
                        self.ctx.monitor.warn(self.ctx.config.listen.ip(), "accept", || {
                            format!("accepting on {} failed: {err}", self.ctx.config.listen)
                        });
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(_) = connections.join_next() => {}
                () = self.ctx.inbound.closed() => return,
            }
        }
    }

    fn admit(&self, connections: &mut JoinSet<()>, stream: A::Stream, remote: SocketAddr) {
        let ctx = &self.ctx;
        let candidates = ctx.monitor.peers_at(remote.ip());
        if candidates.is_empty() {
            ctx.monitor.failed(
                remote.ip(),
                "connection refused",
                &ChannelError::UnknownPeer(remote.ip()),
            );
            return; // Dropping the stream closes it.
        }
        let Ok(slot) = Arc::clone(&ctx.slots).try_acquire_owned() else {
            ctx.monitor
                .stats()
                .reject(super::RejectReason::TooManyConnections);
            ctx.monitor.warn(remote.ip(), "too_many_connections", || {
                format!(
                    "connection from peer {} refused: already {} connections (the limit); \
                     is it reconnecting in a loop?",
                    remote.ip(),
                    ctx.config.max_connections
                )
            });
            return;
        };
        let ctx = Arc::clone(ctx);
        connections.spawn(async move {
            let result = serve(stream, &candidates, &ctx).await;
            if let Err(err) = result {
                ctx.monitor.failed(remote.ip(), "inbound connection", &err);
                if let ChannelError::ApplyTimeout(_) = err {
                    ctx.monitor.warn(remote.ip(), "apply_timeout", || {
                        format!("closed the connection of peer {}: {err}", remote.ip())
                    });
                }
            }
            drop(slot);
        });
    }
}

/// Serves one connection until it closes or fails; `candidates` are the configured peers at the
/// connection's source address.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    candidates: &[Arc<PeerState>],
    ctx: &Ctx,
) -> Result<(), ChannelError> {
    let config = &ctx.config;
    let our_nonce = nonce()?;
    stream.write_all(&challenge(&our_nonce)).await?;
    stream.flush().await?;
    let mut frames_in = FrameReceiver::new(Auth {
        key: config.key.clone(),
        label: LABEL_SENDER_TO_RECEIVER,
        nonce: our_nonce,
    });

    let first = timeout(config.handshake_timeout, frames_in.recv(&mut stream))
        .await
        .map_err(|_| ChannelError::HandshakeTimeout(config.handshake_timeout))??;
    if first.kind != Kind::Hello as u8 {
        return Err(ChannelError::Protocol("the first frame is not a Hello"));
    }
    let Message::Hello { node, nonce } = Message::decode(first.kind, &first.payload)? else {
        unreachable!("a Hello frame decodes to a Hello");
    };
    let peer = pick_peer(candidates, &node);
    ctx.monitor.count_received(&peer, first.wire_len, 0);
    let mut frames_out = FrameSender::new(Auth {
        key: config.key.clone(),
        label: LABEL_RECEIVER_TO_SENDER,
        nonce,
    });
    peer.update(|s| s.inbound_connections += 1);
    let _connected = scopeguard(&peer);

    // The set being received: its id, the part expected next and its flows so far.
    let mut set: Option<(u64, u32, u64)> = None;
    loop {
        let frame = match timeout(config.idle_timeout, frames_in.recv(&mut stream)).await {
            Err(_) => return Err(ChannelError::IdleTimeout(config.idle_timeout)),
            Ok(Err(ChannelError::Closed)) => return Ok(()),
            Ok(frame) => frame?,
        };
        let Message::Sync {
            sync_id,
            part,
            last,
            groups,
        } = Message::decode(frame.kind, &frame.payload)?
        else {
            return Err(ChannelError::Protocol(if frame.kind == Kind::Hello as u8 {
                "a second Hello"
            } else {
                "an Ack from the sending side"
            }));
        };
        drop(frame.payload);
        let flows: u64 = groups.iter().map(|g| g.flows.len() as u64).sum();
        let so_far = match set {
            _ if part == 0 => 0,
            Some((id, next, so_far)) if id == sync_id && next == part => so_far,
            _ => return Err(ChannelError::Protocol("a sync part out of order")),
        };
        set = next_part(sync_id, part, last, so_far.saturating_add(flows))?;
        ctx.monitor.count_received(&peer, frame.wire_len, flows);
        if last {
            peer.update(|s| s.exceptions_received_last_set = so_far + flows);
        }

        let (done, outcome) = oneshot::channel();
        let inbound = Inbound {
            peer: peer.addr(),
            sync_id,
            part,
            last,
            groups,
            done,
        };
        // Waiting here (queue full, agent busy) is what holds a fast peer back: this task
        // stops reading, so TCP flow control stops the peer.
        let result = timeout(config.apply_timeout, async {
            ctx.inbound
                .send(inbound)
                .await
                .map_err(|_| ChannelError::ConsumerGone)?;
            outcome.await.map_err(|_| ChannelError::ConsumerGone)
        })
        .await
        .map_err(|_| ChannelError::ApplyTimeout(config.apply_timeout))??;

        let ack = Message::Ack {
            sync_id,
            part,
            applied: result.applied,
            rejected: result.rejected,
        }
        .encode()
        .expect("an Ack always encodes");
        let bytes = frames_out.send(&mut stream, Kind::Ack, &ack).await?;
        ctx.monitor.count_sent(&peer, bytes, 0);
    }
}

/// What to expect after part `part` of set `sync_id` (`None` once the set is complete). A set
/// cannot have more parts than `part` can number: a peer that sends part `u32::MAX` without
/// the last flag is refused rather than wrapped to part 0.
fn next_part(
    sync_id: u64,
    part: u32,
    last: bool,
    flows_so_far: u64,
) -> Result<Option<(u64, u32, u64)>, ChannelError> {
    if last {
        return Ok(None);
    }
    let next = part.checked_add(1).ok_or(ChannelError::Protocol(
        "a sync set with more parts than can be numbered",
    ))?;
    Ok(Some((sync_id, next, flows_so_far)))
}

/// The configured peer a connection speaks for: the one whose address is the Hello's node
/// name, else the first at the source address (the node name is the sender's listen address,
/// which tells apart two peers sharing an IP).
fn pick_peer(candidates: &[Arc<PeerState>], node: &str) -> Arc<PeerState> {
    let named = node.parse::<SocketAddr>().ok();
    candidates
        .iter()
        .find(|p| Some(p.addr()) == named)
        .unwrap_or(&candidates[0])
        .clone()
}

/// Decrements the peer's inbound connection count when the connection ends, however it ends.
fn scopeguard(peer: &Arc<PeerState>) -> impl Drop + '_ {
    struct Guard<'a>(&'a PeerState);
    impl Drop for Guard<'_> {
        fn drop(&mut self) {
            self.0
                .update(|s| s.inbound_connections = s.inbound_connections.saturating_sub(1));
        }
    }
    Guard(peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_numbered_part_without_the_last_flag_is_refused() {
        assert_eq!(next_part(7, 0, false, 3).unwrap(), Some((7, 1, 3)));
        assert_eq!(next_part(7, u32::MAX, true, 3).unwrap(), None);
        let err = next_part(7, u32::MAX, false, 3).unwrap_err();
        assert!(
            matches!(err, ChannelError::Protocol(m) if m.contains("more parts than can be numbered")),
            "{err}"
        );
    }
}
