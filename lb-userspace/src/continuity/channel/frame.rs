//! Challenge and frames on a stream: sealing (header, payload, tag, sequence number) and
//! opening, with every check made before a payload is handed on.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{ChannelError, PeerKey};
use crate::continuity::wire::{
    CHALLENGE_LEN, CHALLENGE_MAGIC, HEADER_LEN, Kind, MAX_PAYLOAD, NONCE_LEN, TAG_LEN, VERSION,
};

/// The receiver's challenge bytes for `nonce`.
pub(crate) fn challenge(nonce: &[u8; NONCE_LEN]) -> [u8; CHALLENGE_LEN] {
    let mut out = [0; CHALLENGE_LEN];
    out[..4].copy_from_slice(&CHALLENGE_MAGIC);
    out[4] = VERSION;
    out[8..].copy_from_slice(nonce);
    out
}

/// Reads and checks a challenge; returns the receiver's nonce.
pub(crate) async fn read_challenge<R: AsyncRead + Unpin>(
    r: &mut R,
) -> Result<[u8; NONCE_LEN], ChannelError> {
    let mut buf = [0; CHALLENGE_LEN];
    read_full(r, &mut buf, ChannelError::Closed).await?;
    if buf[..4] != CHALLENGE_MAGIC {
        return Err(ChannelError::BadMagic);
    }
    if buf[4] != VERSION {
        return Err(ChannelError::Version { got: buf[4] });
    }
    if buf[5..8] != [0; 3] {
        return Err(ChannelError::ReservedHeader(u32::from_be_bytes([
            0, buf[5], buf[6], buf[7],
        ])));
    }
    let mut nonce = [0; NONCE_LEN];
    nonce.copy_from_slice(&buf[8..]);
    Ok(nonce)
}

/// Fills `buf`; an end of stream before the first byte is `at_start` (a clean close between
/// frames, or a close before the challenge), after it [`ChannelError::Truncated`].
async fn read_full<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut [u8],
    at_start: ChannelError,
) -> Result<(), ChannelError> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = r.read(&mut buf[filled..]).await?;
        if n == 0 {
            return Err(if filled == 0 {
                at_start
            } else {
                ChannelError::Truncated
            });
        }
        filled += n;
    }
    Ok(())
}

/// One direction's authentication context: the key, the direction's label and the nonce of
/// the side that receives (it chose it, so it knows the frames are for this connection).
#[derive(Clone, Debug)]
pub(crate) struct Auth {
    pub key: PeerKey,
    pub label: &'static [u8],
    pub nonce: [u8; NONCE_LEN],
}

/// Outgoing frames of one direction of one connection.
pub(crate) struct FrameSender {
    auth: Auth,
    /// Number of the last frame sent; the first is 1.
    seq: u64,
}

impl FrameSender {
    pub fn new(auth: Auth) -> Self {
        Self { auth, seq: 0 }
    }

    /// The next frame's bytes (header, payload, tag), numbering it.
    pub fn seal(&mut self, kind: Kind, payload: &[u8]) -> Vec<u8> {
        debug_assert!(payload.len() <= MAX_PAYLOAD);
        self.seq += 1;
        let header = header(kind as u8, payload.len() as u32, self.seq);
        let tag = self
            .auth
            .key
            .tag(self.auth.label, &self.auth.nonce, &header, payload);
        let mut out = Vec::with_capacity(HEADER_LEN + payload.len() + TAG_LEN);
        out.extend_from_slice(&header);
        out.extend_from_slice(payload);
        out.extend_from_slice(&tag);
        out
    }

    /// Seals and writes one frame; returns the bytes written.
    pub async fn send<W: AsyncWrite + Unpin>(
        &mut self,
        w: &mut W,
        kind: Kind,
        payload: &[u8],
    ) -> Result<usize, ChannelError> {
        let bytes = self.seal(kind, payload);
        w.write_all(&bytes).await?;
        w.flush().await?;
        Ok(bytes.len())
    }
}

/// A frame header's bytes.
pub(crate) fn header(kind: u8, len: u32, seq: u64) -> [u8; HEADER_LEN] {
    let mut out = [0; HEADER_LEN];
    out[0] = VERSION;
    out[1] = kind;
    out[4..8].copy_from_slice(&len.to_be_bytes());
    out[8..].copy_from_slice(&seq.to_be_bytes());
    out
}

/// An authenticated frame, in order: its payload is not decoded yet.
#[derive(Debug)]
pub(crate) struct Frame {
    pub kind: u8,
    pub payload: Vec<u8>,
    /// Bytes the frame took on the wire.
    pub wire_len: usize,
}

/// Incoming frames of one direction of one connection.
pub(crate) struct FrameReceiver {
    auth: Auth,
    /// Number the next frame must carry.
    next_seq: u64,
}

impl FrameReceiver {
    pub fn new(auth: Auth) -> Self {
        Self { auth, next_seq: 1 }
    }

    /// Reads one frame and authenticates it. The payload buffer is allocated only after the
    /// declared length passed the limit, the tag is checked before anything looks at the
    /// payload, and the sequence number after the tag (a forged number fails the tag; a genuine
    /// frame with the wrong number is a replay).
    pub async fn recv<R: AsyncRead + Unpin>(&mut self, r: &mut R) -> Result<Frame, ChannelError> {
        let mut head = [0; HEADER_LEN];
        read_full(r, &mut head, ChannelError::Closed).await?;
        if head[0] != VERSION {
            return Err(ChannelError::Version { got: head[0] });
        }
        let reserved = u16::from_be_bytes([head[2], head[3]]);
        if reserved != 0 {
            return Err(ChannelError::ReservedHeader(u32::from(reserved)));
        }
        let len = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
        if len as usize > MAX_PAYLOAD {
            return Err(ChannelError::Oversized { len });
        }
        let mut body = vec![0; len as usize + TAG_LEN];
        read_full(r, &mut body, ChannelError::Truncated).await?;
        let (payload, tag) = body.split_at(len as usize);
        if !self
            .auth
            .key
            .verify(self.auth.label, &self.auth.nonce, &head, payload, tag)
        {
            return Err(ChannelError::BadTag);
        }
        let seq = u64::from_be_bytes(head[8..].try_into().expect("8 bytes"));
        if seq != self.next_seq {
            return Err(ChannelError::Replay {
                expected: self.next_seq,
                got: seq,
            });
        }
        self.next_seq += 1;
        body.truncate(len as usize);
        Ok(Frame {
            kind: head[1],
            payload: body,
            wire_len: HEADER_LEN + len as usize + TAG_LEN,
        })
    }
}
