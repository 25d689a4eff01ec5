//! The continuity channel: authenticated, replay-protected TCP connections that carry exception
//! sets from the node that owns them (the [`sender`]) to each configured peer (the
//! [`listener`]). The byte layout is in [`super::wire`].
//!
//! Why it can face a hostile network:
//! - every frame's tag is checked (constant time) before its payload is decoded, and its
//!   sequence number must be exactly the previous plus one: nothing unauthenticated, replayed,
//!   reordered or recorded on another connection ever reaches the agent;
//! - any failure closes the connection, so a bad frame never changes a map;
//! - memory stays bounded: frames declaring more than [`MAX_PAYLOAD`] are refused before their
//!   payload is read, connections are limited in number, each holds one frame at a time, and
//!   parts reach the agent through a small bounded queue that the connection waits on, so a
//!   flooding peer is held back by TCP flow control;
//! - connections from addresses that are not configured peers are closed at once, and silent
//!   ones (no Hello within the handshake deadline, no frame within the idle timeout) are closed.
//!
//! Each side's core runs over any `AsyncRead + AsyncWrite` stream (tested over in-memory pipes);
//! only thin glue touches TCP.

use std::io;
use std::time::Duration;

use thiserror::Error;

use super::wire::{MAX_PAYLOAD, VERSION, WireError};

mod frame;
mod key;
pub mod listener;
pub mod sender;
mod stats;

#[cfg(test)]
mod tests;

pub use key::{KeyError, PeerKey};
pub use listener::{Accept, ApplyResult, Inbound, Listener, ListenerConfig};
pub use sender::{Sender, SenderConfig, SyncSet};
pub use stats::{AckRecord, ChannelMonitor, ChannelStats, PeerState, PeerStatus, RejectReason};

/// The default deadline for the Hello after the challenge.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
/// The smallest idle timeout accepted: shorter ones would close healthy connections between
/// two refreshes on a loaded node.
pub const MIN_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a connection ended.
#[derive(Debug, Error)]
pub enum ChannelError {
    #[error("the challenge does not start with \"XLBC\" (not an xlb continuity listener?)")]
    BadMagic,
    #[error("protocol version {got}, this node speaks {VERSION}")]
    Version { got: u8 },
    #[error("reserved header field is {0}, must be 0")]
    ReservedHeader(u32),
    #[error("bad authentication tag")]
    BadTag,
    #[error("frame number {got}, expected {expected} (replayed, duplicated or reordered)")]
    Replay { expected: u64, got: u64 },
    #[error("frame declares {len} bytes of payload, more than {MAX_PAYLOAD}")]
    Oversized { len: u32 },
    #[error("malformed payload: {0}")]
    Malformed(#[from] WireError),
    #[error("protocol violation: {0}")]
    Protocol(&'static str),
    #[error("connection closed in the middle of a frame")]
    Truncated,
    #[error("connection closed")]
    Closed,
    #[error("no authenticated Hello within {0:?}")]
    HandshakeTimeout(Duration),
    #[error("nothing received for {0:?}")]
    IdleTimeout(Duration),
    #[error("the agent did not apply a part within {0:?}")]
    ApplyTimeout(Duration),
    #[error("the agent no longer takes parts")]
    ConsumerGone,
    #[error("{0} is not a configured continuity peer")]
    UnknownPeer(std::net::IpAddr),
    #[error("refusing to listen on the unspecified address {0}: configure the node's own address")]
    UnspecifiedListen(std::net::SocketAddr),
    #[error("no random nonce from the OS: {0}")]
    Random(getrandom::Error),
    #[error("{0}")]
    Io(#[from] io::Error),
}

impl ChannelError {
    /// The rejection counter this failure moves, if it is one (a peer or the network
    /// misbehaving, as opposed to a plain disconnect or a local problem).
    pub fn reason(&self) -> Option<RejectReason> {
        Some(match self {
            Self::BadTag => RejectReason::BadTag,
            Self::Replay { .. } => RejectReason::Replay,
            Self::Malformed(_) | Self::ReservedHeader(_) => RejectReason::Malformed,
            Self::Oversized { .. } => RejectReason::Oversized,
            Self::BadMagic | Self::Version { .. } | Self::Protocol(_) => RejectReason::Protocol,
            Self::Truncated => RejectReason::Truncated,
            Self::HandshakeTimeout(_) => RejectReason::HandshakeTimeout,
            Self::IdleTimeout(_) => RejectReason::IdleTimeout,
            Self::UnknownPeer(_) => RejectReason::UnknownPeer,
            Self::Closed
            | Self::ApplyTimeout(_)
            | Self::ConsumerGone
            | Self::UnspecifiedListen(_)
            | Self::Random(_)
            | Self::Io(_) => return None,
        })
    }
}

/// A fresh random nonce: the OS generator, never a seeded one, since a predictable nonce would
/// let a recorded connection be replayed.
fn nonce() -> Result<[u8; super::wire::NONCE_LEN], ChannelError> {
    let mut out = [0; super::wire::NONCE_LEN];
    getrandom::getrandom(&mut out).map_err(ChannelError::Random)?;
    Ok(out)
}
