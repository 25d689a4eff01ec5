//! Wire format of the continuity channel: the messages, their encoding and a decoder that
//! treats every byte as hostile.
//!
//! All integers are big-endian (network order). Every field is written explicitly (no serde):
//! the layout below is the protocol, version [`VERSION`].
//!
//! # Connection
//!
//! The *sender* (the node that owns exceptions) connects to the *receiver*'s listen address.
//!
//! The receiver speaks first with a **challenge**, [`CHALLENGE_LEN`] = 24 bytes:
//!
//! | offset | size | field                                   |
//! |-------:|-----:|-----------------------------------------|
//! | 0      | 4    | magic `"XLBC"`                          |
//! | 4      | 1    | version, `1`                            |
//! | 5      | 3    | reserved, `0`                           |
//! | 8      | 16   | receiver nonce (random per connection)  |
//!
//! Everything after it, in both directions, is **frames**: a [`HEADER_LEN`] = 16-byte header,
//! the payload, then a [`TAG_LEN`] = 32-byte tag.
//!
//! | offset    | size | field                                                 |
//! |----------:|-----:|-------------------------------------------------------|
//! | 0         | 1    | version, `1`                                          |
//! | 1         | 1    | kind: `1` Hello, `2` Sync, `3` Ack                    |
//! | 2         | 2    | reserved, `0`                                         |
//! | 4         | 4    | payload length `len`, at most [`MAX_PAYLOAD`] (1 MiB) |
//! | 8         | 8    | sequence number                                       |
//! | 16        | len  | payload (below)                                       |
//! | 16 + len  | 32   | tag                                                   |
//!
//! `tag = HMAC-SHA-256(key, label ‖ nonce ‖ header ‖ payload)`, where for sender → receiver
//! frames `label` is the 22 bytes `xlb-continuity-v1 s->r` and `nonce` the receiver's challenge
//! nonce, and for receiver → sender frames `label` is `xlb-continuity-v1 r->s` and `nonce` the
//! sender's nonce from its Hello. The label keeps a frame of one direction from being reflected
//! as a frame of the other; the nonce binds a frame to its connection, so one recorded on
//! another connection fails the tag. Each direction numbers its frames from 1 and every frame
//! must carry exactly the previous number plus one, so a replayed, duplicated or reordered frame
//! is refused even with a valid tag. The sender's first frame is its Hello and it sends only
//! one; the receiver sends only Acks.
//!
//! # Payloads
//!
//! **Hello** (kind 1): `node_len` u8 (at most [`MAX_NODE_LEN`]), `node` (UTF-8, the sender's
//! configured listen address as text), sender nonce (16 bytes). Nothing follows.
//!
//! **Sync** (kind 2), one part of a full set of exceptions:
//!
//! | offset | size | field                                          |
//! |-------:|-----:|------------------------------------------------|
//! | 0      | 8    | `sync_id`                                      |
//! | 8      | 4    | `part`, from 0                                 |
//! | 12     | 1    | flags: bit 0 = last part; other bits `0`       |
//! | 13     | 3    | reserved, `0`                                  |
//! | 16     | 4    | group count                                    |
//! | 20     | …    | that many groups, back to back; nothing after  |
//!
//! A **group** is the flows of one VIP that stay on one backend; its header is followed by
//! `flow count` fixed-size flow records:
//!
//! | size    | field                                                           |
//! |--------:|-----------------------------------------------------------------|
//! | 1       | VIP family: `4` or `6`                                          |
//! | 4 or 16 | VIP address                                                     |
//! | 2       | VIP port as configured; `0` for an all-ports VIP                |
//! | 1       | protocol: `6` TCP or `17` UDP                                   |
//! | 1       | backend family: `4` or `6` (may differ from the VIP's)          |
//! | 4 or 16 | backend address                                                 |
//! | 4       | flow count, at least 1                                          |
//!
//! A **flow record** is the client address (of the VIP's family: 4 or 16 bytes), the client
//! port and the packet's destination port: [`flow_record_len`] = 8 bytes for IPv4, 20 for IPv6.
//! The destination port equals the VIP port unless the VIP is all-ports. A big group may be
//! split across parts (the same group header repeated in the next part).
//!
//! **Ack** (kind 3), receiver → sender after it applied a part: `sync_id` u64, `part` u32,
//! `applied` u32, `rejected` u32 (20 bytes).
//!
//! # Decoding rules
//!
//! The decoder checks every count against the bytes actually present *before* allocating
//! anything from it, so a hostile count cannot make it allocate more than a small multiple of
//! the payload it already holds. Anything unexpected is a [`WireError`]: unknown kind or
//! family, a protocol other than TCP/UDP, a non-zero reserved field or unknown flag, an empty
//! group, a destination port that contradicts the VIP port, a count larger than the remaining
//! bytes allow, a truncated field, trailing bytes, a node name too long or not UTF-8.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use thiserror::Error;

#[cfg(test)]
mod tests;

/// Protocol version carried by the challenge and every frame header.
pub const VERSION: u8 = 1;
/// Magic that opens the receiver's challenge.
pub const CHALLENGE_MAGIC: [u8; 4] = *b"XLBC";
/// Length of the receiver's challenge.
pub const CHALLENGE_LEN: usize = 24;
/// Length of each side's nonce.
pub const NONCE_LEN: usize = 16;
/// Length of a frame header.
pub const HEADER_LEN: usize = 16;
/// Length of a frame's tag (HMAC-SHA-256).
pub const TAG_LEN: usize = 32;
/// Largest payload a frame may declare; a header declaring more is refused before any of the
/// payload is read. 1 MiB holds about 130k IPv4 flows, so big sets travel in a few parts.
pub const MAX_PAYLOAD: usize = 1 << 20;
/// Longest node name in a Hello.
pub const MAX_NODE_LEN: usize = 64;
/// Length of a Sync payload's fixed header.
pub const SYNC_HEADER_LEN: usize = 20;
/// Length of an Ack payload.
pub const ACK_LEN: usize = 20;
/// The smallest part size [`encode_sync`] accepts: the Sync header, the largest group header
/// and one IPv6 flow, so every part carries progress.
pub const MIN_PART_PAYLOAD: usize = SYNC_HEADER_LEN + group_header_len(true, true) + 20;

/// Domain label of sender → receiver tags.
pub const LABEL_SENDER_TO_RECEIVER: &[u8; 22] = b"xlb-continuity-v1 s->r";
/// Domain label of receiver → sender tags.
pub const LABEL_RECEIVER_TO_SENDER: &[u8; 22] = b"xlb-continuity-v1 r->s";

const FAMILY_V4: u8 = 4;
const FAMILY_V6: u8 = 6;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const FLAG_LAST: u8 = 0x01;

/// Bytes of one flow record on the wire: 8 for an IPv4 VIP, 20 for an IPv6 one.
pub const fn flow_record_len(v6: bool) -> usize {
    (if v6 { 16 } else { 4 }) + 2 + 2
}

/// Bytes of a group header for the VIP's and the backend's families.
pub const fn group_header_len(vip_v6: bool, backend_v6: bool) -> usize {
    1 + (if vip_v6 { 16 } else { 4 }) + 2 + 1 + 1 + (if backend_v6 { 16 } else { 4 }) + 4
}

/// Frame kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Hello = 1,
    Sync = 2,
    Ack = 3,
}

impl Kind {
    /// The kind of a header's kind byte.
    pub fn from_u8(value: u8) -> Result<Self, WireError> {
        match value {
            1 => Ok(Self::Hello),
            2 => Ok(Self::Sync),
            3 => Ok(Self::Ack),
            other => Err(WireError::UnknownKind(other)),
        }
    }
}

/// A VIP as configured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VipRef {
    pub addr: IpAddr,
    /// Configured port (host order); 0 = all-ports VIP.
    pub port: u16,
    /// IP protocol number: 6 (TCP) or 17 (UDP).
    pub proto: u8,
}

/// One client flow of a VIP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowRef {
    /// Client address: always of the VIP's family.
    pub client: IpAddr,
    pub client_port: u16,
    /// The packet's destination port: the VIP port, or any port of an all-ports VIP.
    pub dst_port: u16,
}

/// Flows of one VIP that stay on one backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExceptionGroup {
    pub vip: VipRef,
    pub backend: IpAddr,
    pub flows: Vec<FlowRef>,
}

/// The messages of the channel (see the module doc for their layout).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// The sender's first frame.
    Hello {
        /// The sender's configured listen address, as text.
        node: String,
        nonce: [u8; NONCE_LEN],
    },
    /// One part of a full set of exceptions.
    Sync {
        sync_id: u64,
        part: u32,
        last: bool,
        groups: Vec<ExceptionGroup>,
    },
    /// The receiver's answer to one part.
    Ack {
        sync_id: u64,
        part: u32,
        applied: u32,
        rejected: u32,
    },
}

/// Why bytes were refused. Each message says what was wrong, for the operator's log.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum WireError {
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    #[error("unknown address family {family} for the {what} (expected 4 or 6)")]
    UnknownFamily { what: &'static str, family: u8 },
    #[error("protocol {0} is neither TCP (6) nor UDP (17)")]
    BadProto(u8),
    #[error("{what}: need {need} bytes, only {remaining} present")]
    Truncated {
        what: &'static str,
        need: usize,
        remaining: usize,
    },
    #[error("{what} count {count} needs at least {need} bytes, only {remaining} present")]
    CountTooLarge {
        what: &'static str,
        count: u32,
        need: u64,
        remaining: usize,
    },
    #[error("{extra} trailing bytes after the {what}")]
    TrailingBytes { what: &'static str, extra: usize },
    #[error("a group with no flows")]
    EmptyGroup,
    #[error("node name of {0} bytes is longer than {MAX_NODE_LEN}")]
    NodeNameTooLong(usize),
    #[error("node name is not UTF-8")]
    NodeNameNotUtf8,
    #[error("reserved field {what} is {value}, must be 0")]
    Reserved { what: &'static str, value: u32 },
    #[error("unknown flags {0:#04x} in a sync part")]
    UnknownFlags(u8),
    #[error(
        "flow to port {dst_port} in a group of VIP port {vip_port} (only all-ports VIPs have other ports)"
    )]
    DstPortMismatch { vip_port: u16, dst_port: u16 },
}

/// Why a message could not be encoded (a caller's bug, never input from the network).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum EncodeError {
    #[error("node name of {0} bytes is longer than {MAX_NODE_LEN}")]
    NodeNameTooLong(usize),
    #[error("protocol {0} is neither TCP (6) nor UDP (17)")]
    BadProto(u8),
    #[error("a group with no flows")]
    EmptyGroup,
    #[error("client {client} is not of the family of VIP {vip}")]
    ClientFamily { vip: IpAddr, client: IpAddr },
    #[error("flow to port {dst_port} in a group of VIP port {vip_port}")]
    DstPortMismatch { vip_port: u16, dst_port: u16 },
    #[error("payload of {0} bytes is larger than {MAX_PAYLOAD}")]
    TooLarge(usize),
}

impl Message {
    /// The kind byte of this message's frames.
    pub fn kind(&self) -> Kind {
        match self {
            Self::Hello { .. } => Kind::Hello,
            Self::Sync { .. } => Kind::Sync,
            Self::Ack { .. } => Kind::Ack,
        }
    }

    /// The payload of this message, as one frame. For a full set of exceptions, which may need
    /// several parts, use [`encode_sync`].
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::new();
        match self {
            Self::Hello { node, nonce } => {
                if node.len() > MAX_NODE_LEN {
                    return Err(EncodeError::NodeNameTooLong(node.len()));
                }
                out.push(node.len() as u8);
                out.extend_from_slice(node.as_bytes());
                out.extend_from_slice(nonce);
            }
            Self::Sync {
                sync_id,
                part,
                last,
                groups,
            } => {
                put_sync_header(&mut out, *sync_id, *part, *last, groups.len() as u32);
                for group in groups {
                    check_group(group)?;
                    if group.flows.is_empty() {
                        return Err(EncodeError::EmptyGroup);
                    }
                    let count_at = put_group_header(&mut out, group);
                    for flow in &group.flows {
                        check_flow(&group.vip, flow)?;
                        put_flow(&mut out, flow);
                    }
                    patch_u32(&mut out, count_at, group.flows.len() as u32);
                }
            }
            Self::Ack {
                sync_id,
                part,
                applied,
                rejected,
            } => {
                out.extend_from_slice(&sync_id.to_be_bytes());
                out.extend_from_slice(&part.to_be_bytes());
                out.extend_from_slice(&applied.to_be_bytes());
                out.extend_from_slice(&rejected.to_be_bytes());
            }
        }
        if out.len() > MAX_PAYLOAD {
            return Err(EncodeError::TooLarge(out.len()));
        }
        Ok(out)
    }

    /// Decodes the payload of a frame of kind `kind`. Never panics and never allocates more
    /// than a small multiple of `payload.len()`.
    pub fn decode(kind: u8, payload: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(payload);
        let kind = Kind::from_u8(kind)?;
        let message = match kind {
            Kind::Hello => {
                let len = usize::from(r.u8("node length")?);
                if len > MAX_NODE_LEN {
                    return Err(WireError::NodeNameTooLong(len));
                }
                let node = std::str::from_utf8(r.take(len, "node name")?)
                    .map_err(|_| WireError::NodeNameNotUtf8)?
                    .to_owned();
                let mut nonce = [0; NONCE_LEN];
                nonce.copy_from_slice(r.take(NONCE_LEN, "hello nonce")?);
                Self::Hello { node, nonce }
            }
            Kind::Sync => {
                let sync_id = r.u64("sync id")?;
                let part = r.u32("part")?;
                let flags = r.u8("flags")?;
                if flags & !FLAG_LAST != 0 {
                    return Err(WireError::UnknownFlags(flags));
                }
                let reserved = r.take(3, "reserved")?;
                if reserved != [0; 3] {
                    return Err(WireError::Reserved {
                        what: "sync header",
                        value: u32::from_be_bytes([0, reserved[0], reserved[1], reserved[2]]),
                    });
                }
                let count = r.u32("group count")?;
                // Every group takes at least its smallest header and one IPv4 flow.
                let min_group = group_header_len(false, false) + flow_record_len(false);
                r.check_count("group", count, min_group)?;
                let mut groups = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    groups.push(decode_group(&mut r)?);
                }
                Self::Sync {
                    sync_id,
                    part,
                    last: flags & FLAG_LAST != 0,
                    groups,
                }
            }
            Kind::Ack => Self::Ack {
                sync_id: r.u64("sync id")?,
                part: r.u32("part")?,
                applied: r.u32("applied")?,
                rejected: r.u32("rejected")?,
            },
        };
        r.finish(match kind {
            Kind::Hello => "hello",
            Kind::Sync => "sync part",
            Kind::Ack => "ack",
        })?;
        Ok(message)
    }
}

fn decode_group(r: &mut Reader<'_>) -> Result<ExceptionGroup, WireError> {
    let vip_addr = r.addr("VIP")?;
    let vip_port = r.u16("VIP port")?;
    let proto = r.u8("protocol")?;
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return Err(WireError::BadProto(proto));
    }
    let backend = r.addr("backend")?;
    let count = r.u32("flow count")?;
    if count == 0 {
        return Err(WireError::EmptyGroup);
    }
    let v6 = vip_addr.is_ipv6();
    r.check_count("flow", count, flow_record_len(v6))?;
    let mut flows = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let client = if v6 {
            IpAddr::V6(Ipv6Addr::from(r.array::<16>("client address")?))
        } else {
            IpAddr::V4(Ipv4Addr::from(r.array::<4>("client address")?))
        };
        let client_port = r.u16("client port")?;
        let dst_port = r.u16("destination port")?;
        if vip_port != 0 && dst_port != vip_port {
            return Err(WireError::DstPortMismatch { vip_port, dst_port });
        }
        flows.push(FlowRef {
            client,
            client_port,
            dst_port,
        });
    }
    Ok(ExceptionGroup {
        vip: VipRef {
            addr: vip_addr,
            port: vip_port,
            proto,
        },
        backend,
        flows,
    })
}

/// A bounds-checked cursor over untrusted bytes: every read names what it was reading so the
/// error tells the operator where a message went wrong.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        if self.buf.len() < n {
            return Err(WireError::Truncated {
                what,
                need: n,
                remaining: self.buf.len(),
            });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], WireError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, WireError> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    fn addr(&mut self, what: &'static str) -> Result<IpAddr, WireError> {
        match self.u8(what)? {
            FAMILY_V4 => Ok(IpAddr::V4(Ipv4Addr::from(self.array::<4>(what)?))),
            FAMILY_V6 => Ok(IpAddr::V6(Ipv6Addr::from(self.array::<16>(what)?))),
            family => Err(WireError::UnknownFamily { what, family }),
        }
    }

    /// Refuses a count whose items, at `min_len` bytes each, cannot fit in what remains: the
    /// check that makes `Vec::with_capacity(count)` safe.
    fn check_count(&self, what: &'static str, count: u32, min_len: usize) -> Result<(), WireError> {
        let need = u64::from(count) * min_len as u64;
        if need > self.buf.len() as u64 {
            return Err(WireError::CountTooLarge {
                what,
                count,
                need,
                remaining: self.buf.len(),
            });
        }
        Ok(())
    }

    fn finish(&self, what: &'static str) -> Result<(), WireError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(WireError::TrailingBytes {
                what,
                extra: self.buf.len(),
            })
        }
    }
}

fn put_addr(out: &mut Vec<u8>, addr: &IpAddr) {
    match addr {
        IpAddr::V4(a) => {
            out.push(FAMILY_V4);
            out.extend_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            out.push(FAMILY_V6);
            out.extend_from_slice(&a.octets());
        }
    }
}

fn put_sync_header(out: &mut Vec<u8>, sync_id: u64, part: u32, last: bool, groups: u32) {
    out.extend_from_slice(&sync_id.to_be_bytes());
    out.extend_from_slice(&part.to_be_bytes());
    out.push(if last { FLAG_LAST } else { 0 });
    out.extend_from_slice(&[0; 3]);
    out.extend_from_slice(&groups.to_be_bytes());
}

/// Writes a group header with a zero flow count; returns where the count is, to patch.
fn put_group_header(out: &mut Vec<u8>, group: &ExceptionGroup) -> usize {
    put_addr(out, &group.vip.addr);
    out.extend_from_slice(&group.vip.port.to_be_bytes());
    out.push(group.vip.proto);
    put_addr(out, &group.backend);
    let at = out.len();
    out.extend_from_slice(&0u32.to_be_bytes());
    at
}

fn put_flow(out: &mut Vec<u8>, flow: &FlowRef) {
    match flow.client {
        IpAddr::V4(a) => out.extend_from_slice(&a.octets()),
        IpAddr::V6(a) => out.extend_from_slice(&a.octets()),
    }
    out.extend_from_slice(&flow.client_port.to_be_bytes());
    out.extend_from_slice(&flow.dst_port.to_be_bytes());
}

fn patch_u32(out: &mut [u8], at: usize, value: u32) {
    out[at..at + 4].copy_from_slice(&value.to_be_bytes());
}

fn check_group(group: &ExceptionGroup) -> Result<(), EncodeError> {
    if group.vip.proto != PROTO_TCP && group.vip.proto != PROTO_UDP {
        return Err(EncodeError::BadProto(group.vip.proto));
    }
    Ok(())
}

fn check_flow(vip: &VipRef, flow: &FlowRef) -> Result<(), EncodeError> {
    if flow.client.is_ipv6() != vip.addr.is_ipv6() {
        return Err(EncodeError::ClientFamily {
            vip: vip.addr,
            client: flow.client,
        });
    }
    if vip.port != 0 && flow.dst_port != vip.port {
        return Err(EncodeError::DstPortMismatch {
            vip_port: vip.port,
            dst_port: flow.dst_port,
        });
    }
    Ok(())
}

/// One encoded Sync payload, ready to frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedPart {
    pub payload: Vec<u8>,
    /// Flows in this part (for the "exceptions sent" counters).
    pub flows: u32,
}

/// A full set of exceptions split into Sync payloads by [`encode_sync`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedSync {
    /// Parts numbered from 0; the last one has the last flag. Never empty.
    pub parts: Vec<EncodedPart>,
    /// Flows encoded.
    pub flows: u64,
    /// Flows left out because the wire cannot carry them (see [`encode_sync`]). Non-zero only
    /// through a bug of the caller; it should log them.
    pub skipped_flows: u64,
    /// The first reason a flow was skipped, for that log.
    pub first_skip: Option<EncodeError>,
}

impl EncodedSync {
    /// Bytes of all payloads (without framing).
    pub fn payload_bytes(&self) -> usize {
        self.parts.iter().map(|p| p.payload.len()).sum()
    }
}

/// Encodes a full set of exceptions as Sync payloads of at most `max_payload` bytes each
/// (clamped to [`MIN_PART_PAYLOAD`]..=[`MAX_PAYLOAD`]), splitting big groups across parts.
///
/// Parts are numbered from 0 and the last carries the last flag. An empty set still yields one
/// empty last part: it is the heartbeat, and tells the receiver this node has no exceptions.
/// Groups without flows are left out (the decoder refuses them); flows the wire cannot carry
/// (a protocol other than TCP/UDP, a client of the other family than the VIP, a destination
/// port other than the VIP's on a VIP with a port) are skipped and counted, never sent.
pub fn encode_sync(sync_id: u64, groups: &[ExceptionGroup], max_payload: usize) -> EncodedSync {
    let max = max_payload.clamp(MIN_PART_PAYLOAD, MAX_PAYLOAD);
    let mut enc = PartEncoder {
        sync_id,
        max,
        parts: Vec::new(),
        buf: Vec::new(),
        groups_in_part: 0,
        flows_in_part: 0,
    };
    enc.start_part();
    let mut out_flows = 0u64;
    let mut skipped = 0u64;
    let mut first_skip = None;
    let mut skip = |err: EncodeError, n: u64| {
        skipped += n;
        first_skip.get_or_insert(err);
    };

    for group in groups {
        if let Err(err) = check_group(group) {
            if !group.flows.is_empty() {
                skip(err, group.flows.len() as u64);
            }
            continue;
        }
        let flow_len = flow_record_len(group.vip.addr.is_ipv6());
        let header_len = group_header_len(group.vip.addr.is_ipv6(), group.backend.is_ipv6());
        // Where this group's flow count sits in the current part, and how many flows it holds.
        let mut open: Option<(usize, u32)> = None;
        for flow in &group.flows {
            if let Err(err) = check_flow(&group.vip, flow) {
                skip(err, 1);
                continue;
            }
            let need = match open {
                Some(_) => flow_len,
                None => header_len + flow_len,
            };
            if enc.buf.len() + need > enc.max {
                if let Some((at, n)) = open.take() {
                    patch_u32(&mut enc.buf, at, n);
                }
                enc.finish_part(false);
                enc.start_part();
            }
            let (at, n) = match open {
                Some(o) => o,
                None => {
                    enc.groups_in_part += 1;
                    (put_group_header(&mut enc.buf, group), 0)
                }
            };
            put_flow(&mut enc.buf, flow);
            enc.flows_in_part += 1;
            out_flows += 1;
            open = Some((at, n + 1));
        }
        if let Some((at, n)) = open {
            patch_u32(&mut enc.buf, at, n);
        }
    }
    enc.finish_part(true);
    EncodedSync {
        parts: enc.parts,
        flows: out_flows,
        skipped_flows: skipped,
        first_skip,
    }
}

/// State of [`encode_sync`]: the part being filled.
struct PartEncoder {
    sync_id: u64,
    max: usize,
    parts: Vec<EncodedPart>,
    buf: Vec<u8>,
    groups_in_part: u32,
    flows_in_part: u32,
}

impl PartEncoder {
    fn start_part(&mut self) {
        self.buf = Vec::new();
        let part = self.parts.len() as u32;
        // Group count and flags are patched by `finish_part`.
        put_sync_header(&mut self.buf, self.sync_id, part, false, 0);
        self.groups_in_part = 0;
        self.flows_in_part = 0;
    }

    fn finish_part(&mut self, last: bool) {
        let mut payload = std::mem::take(&mut self.buf);
        if last {
            payload[12] = FLAG_LAST;
        }
        patch_u32(&mut payload, 16, self.groups_in_part);
        self.parts.push(EncodedPart {
            payload,
            flows: self.flows_in_part,
        });
    }
}
