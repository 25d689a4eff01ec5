//! A reference model of the load balancer's forwarding decision, written from
//! docs/datapath.md (not from the eBPF code): given the maps' contents ([`Maps`]) and a frame,
//! the verdict, the output bytes, the counters that move, the traffic stats and the flow-table
//! write the document prescribes. The differential fuzzer (`fuzz`) runs frames through the
//! loaded program and this model and reports every difference; where they disagree, the
//! document decides which one is fixed.
//!
//! Shared rules that the document names by function (`flow_hash`, `ring_slot`,
//! `flow_entropy`, the flow table's probe) come from `lb_common`, as they do for the program:
//! they are the definitions, not the program's reading of them.

mod icmp;
mod parse;
#[cfg(test)]
mod tests;

use std::net::IpAddr;

use lb_common::{
    Backend, FlowEntry, FlowKey, LbConfig, TrafficStats, VipKey, VipMeta,
    addr::{PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP},
    flows::{ORIGIN_PEER, ORIGIN_RING},
    hash::{flow_hash, ports_word, ring_slot},
    limits::RING_SIZE,
    stats::Counter,
    values::*,
};

pub use parse::{Parsed, martian_class};

use crate::expect;

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;

/// What the model reads: the maps, as the program would see them for this packet.
pub trait Maps {
    fn config(&self) -> LbConfig;
    fn vip_entry(&self, key: &VipKey) -> Option<VipMeta>;
    /// `None` past the end of the backend array.
    fn backend(&self, id: u32) -> Option<Backend>;
    /// Slot `slot` of VIP `index`'s ring (0 if out of range).
    fn ring(&self, index: u32, slot: u32) -> u32;
    /// The flow table's intact entry for `key` (sealed, keyed; §4 "Lookup").
    fn flow(&self, key: &FlowKey) -> Option<FlowEntry>;
    /// The idle stamp of `key`'s flow-table entry (`FlowSlot::seen`; 0: none).
    fn flow_seen(&self, key: &FlowKey) -> u16;
    /// Whether writing `key`'s entry would evict another flow's (§4 "Eviction": the set's
    /// probe, `lb_common::flows::FlowSet::place_evicting`).
    fn flow_evicts(&self, key: &FlowKey) -> bool;
    /// The idle clock's tick now (`lb_common::flows::idle_tick` of the kernel's jiffies).
    fn idle_now(&self) -> u16;
    /// The peer table's intact entry for `key`.
    fn peer(&self, key: &FlowKey) -> Option<FlowEntry>;
    /// Whether the ICMP bucket has a token (§5 "Too big").
    fn icmp_token(&self) -> bool;
}

/// What the document prescribes for one frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub verdict: u32,
    /// The verdict counter.
    pub counter: Counter,
    /// The second counter (`Flow*`, `Fragment`, `IcmpErrorForwarded`).
    pub detail: Option<Counter>,
    /// The output frame; `None`: the input, unchanged.
    pub output: Option<Vec<u8>>,
    /// Change of one VIP's stats.
    pub vip: Option<(u32, TrafficStats)>,
    /// Change of one backend's stats.
    pub backend: Option<(u32, TrafficStats)>,
    /// The flow-table entry written.
    pub flow_write: Option<FlowWrite>,
    /// The write evicted another flow's entry (`FlowEvicted`).
    pub evicted: bool,
}

/// A flow-table write (§4): the flow, its entry, the slot's origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowWrite {
    pub key: FlowKey,
    pub entry: FlowEntry,
    pub origin: u8,
}

/// A ring choice that found no backend (§4).
#[derive(Clone, Copy, Debug)]
enum NoPick {
    Pass,
    NoBackend(u32),
    BadBackend(u32),
}

impl From<NoPick> for Outcome {
    fn from(n: NoPick) -> Self {
        match n {
            NoPick::Pass => Outcome::pass(Counter::PassNoBackend),
            NoPick::NoBackend(i) => Outcome::vip_drop(Counter::DropNoBackend, i),
            NoPick::BadBackend(i) => Outcome::vip_drop(Counter::DropBadBackend, i),
        }
    }
}

impl Outcome {
    fn simple(verdict: u32, counter: Counter) -> Self {
        Outcome {
            verdict,
            counter,
            detail: None,
            output: None,
            vip: None,
            backend: None,
            flow_write: None,
            evicted: false,
        }
    }
    fn pass(c: Counter) -> Self {
        Self::simple(XDP_PASS, c)
    }
    fn drop(c: Counter) -> Self {
        Self::simple(XDP_DROP, c)
    }
    /// A drop charged to VIP `index` (§7).
    fn vip_drop(c: Counter, index: u32) -> Self {
        let mut o = Self::drop(c);
        o.vip = Some((index, TrafficStats::new(0, 0, 0, 1)));
        o
    }
    /// Every counter the outcome moves, verdict first.
    pub fn counters(&self) -> Vec<Counter> {
        let mut v = vec![self.counter];
        v.extend(self.detail);
        if self.evicted {
            v.push(Counter::FlowEvicted);
        }
        v
    }
}

/// How the flow table takes part (§4).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Use {
    Syn,
    Miss,
    Rehash,
    /// A UDP entry idle past the timeout (§4 "UDP idle timeout"): as `Rehash`.
    Expired,
    /// Relayed ICMP errors: read, never written.
    ReadOnly,
    /// Fragments: the ring alone.
    RingOnly,
}

struct Pick {
    id: u32,
    backend: Backend,
    new_flow: bool,
    detail: Option<Counter>,
}

/// The frame's IP packet as §2 reads it, if its headers are valid (for reports and invariants).
pub fn parse(frame: &[u8]) -> Option<Parsed> {
    let mut p = parse::fixed(frame).ok()?;
    parse::rest(frame, &mut p).ok()?;
    Some(p)
}

/// The model: one frame in, the document's outcome out.
pub fn decide(maps: &dyn Maps, frame: &[u8]) -> Outcome {
    let cfg = maps.config();
    if cfg.flags & CONFIG_F_READY == 0 {
        return Outcome::pass(Counter::PassNotReady);
    }
    let mut p = match parse::fixed(frame) {
        Ok(p) => p,
        Err(parse::Stop::Pass(c) | parse::Stop::Malformed(c)) => return Outcome::pass(c),
    };
    // The address pre-filter only saves lookups: a destination that is no VIP address ends in
    // `PASS`, `Pass` on every path below (§2-§3), filter bit or not.
    let dst_entry = maps.vip_entry(&VipKey::of(p.dst, 0, 0));
    let Some(dst_entry) = dst_entry else {
        return Outcome::pass(Counter::Pass);
    };
    if let Err(parse::Stop::Malformed(c) | parse::Stop::Pass(c)) = parse::rest(frame, &mut p) {
        return Outcome::drop(c);
    }
    if martian_class(p.src) || maps.vip_entry(&VipKey::of(p.src, 0, 0)).is_some() {
        return Outcome::drop(Counter::DropMartian);
    }
    let icmp_proto = if p.family == lb_common::addr::FAMILY_V4 {
        PROTO_ICMP
    } else {
        PROTO_ICMPV6
    };
    if p.frag {
        return fragment(maps, &cfg, frame, &p);
    }
    match p.proto {
        PROTO_TCP | PROTO_UDP => tcp_udp(maps, &cfg, frame, &p),
        x if x == icmp_proto => icmp::handle(maps, &cfg, frame, &p, &dst_entry),
        _ => Outcome::pass(Counter::Pass),
    }
}

/// §3 "TCP / UDP", then §4 and §5.
fn tcp_udp(maps: &dyn Maps, cfg: &LbConfig, f: &[u8], p: &Parsed) -> Outcome {
    let end = p.l3_end();
    let tcp = p.proto == PROTO_TCP;
    let hdr = if tcp { 20 } else { 8 };
    if p.l4_off + hdr > end {
        return Outcome::drop(Counter::DropTruncated);
    }
    let l4 = &f[p.l4_off..];
    if tcp {
        let data_off = usize::from(l4[12] >> 4) * 4;
        if data_off < 20 || p.l4_off + data_off > end {
            return Outcome::drop(Counter::DropBadHeader);
        }
    } else if usize::from(u16::from_be_bytes([l4[4], l4[5]])) != end - p.l4_off {
        return Outcome::drop(Counter::DropBadHeader);
    }
    let sport = u16::from_be_bytes([l4[0], l4[1]]);
    let dport = u16::from_be_bytes([l4[2], l4[3]]);
    let key = flow_key(p, sport, dport, p.proto);
    let entropy = key.entropy(cfg.hash_seed);
    let syn = tcp && l4[13] & 0x12 == 0x02;
    let usage = if syn {
        Use::Syn
    } else {
        match maps.flow(&key) {
            Some(e) => match maps.backend(e.backend_id) {
                Some(b) if e.honoured_by(&b) && idle_out(maps, cfg, &key) => Use::Expired,
                Some(b) if e.honoured_by(&b) => {
                    let vip = VipMeta {
                        index: b.vip_index,
                        flags: u32::from(b.vip_flags),
                        mode: b.mode,
                        _pad: [0; 3],
                    };
                    let pick = Pick {
                        id: e.backend_id,
                        backend: b,
                        new_flow: false,
                        detail: Some(Counter::FlowHit),
                    };
                    return forward(maps, cfg, f, p, &vip, &pick, entropy, true);
                }
                _ => Use::Rehash,
            },
            None => Use::Miss,
        }
    };
    let Some(vip) = vip_for(maps, cfg, p.dst, dport, p.proto) else {
        return Outcome::pass(Counter::Pass);
    };
    let hash = ring_hash(
        cfg,
        &vip,
        p,
        &p.src_w,
        &p.dst_w,
        ports_word(sport.to_be(), dport.to_be()),
        p.proto,
    );
    match choose(maps, cfg, &vip, &key, hash, usage) {
        Ok((pick, write)) => {
            // The entry is written before the packet is sent, whatever the sending decides.
            let evicted = write.is_some_and(|w| maps.flow_evicts(&w.key));
            let mut o = forward(maps, cfg, f, p, &vip, &pick, entropy, true);
            o.flow_write = write;
            o.evicted = evicted;
            o
        }
        Err(n) => n.into(),
    }
}

/// §4 "UDP idle timeout": a UDP entry whose stamp is more than `udp_idle_ticks` old.
fn idle_out(maps: &dyn Maps, cfg: &LbConfig, key: &FlowKey) -> bool {
    key.proto == PROTO_UDP
        && cfg.udp_idle_ticks != 0
        && lb_common::flows::idle_expired(maps.flow_seen(key), maps.idle_now(), cfg.udp_idle_ticks)
}

fn flow_key(p: &Parsed, sport: u16, dport: u16, proto: u8) -> FlowKey {
    FlowKey {
        src: p.src_w,
        dst: p.dst_w,
        sport: sport.to_be(),
        dport: dport.to_be(),
        proto,
        family: p.family,
        _pad: [0; 2],
    }
}

/// §3: exact port, then all ports when `CONFIG_F_ANY_PORT_VIPS`; a fragment alias is no VIP.
fn vip_for(maps: &dyn Maps, cfg: &LbConfig, addr: IpAddr, port: u16, proto: u8) -> Option<VipMeta> {
    let v = match maps.vip_entry(&VipKey::of(addr, port, proto)) {
        Some(v) => v,
        None if cfg.flags & CONFIG_F_ANY_PORT_VIPS != 0 => {
            maps.vip_entry(&VipKey::of(addr, 0, proto))?
        }
        None => return None,
    };
    (v.flags & VIP_F_FRAG_ONLY == 0).then_some(v)
}

fn ring_hash(
    cfg: &LbConfig,
    vip: &VipMeta,
    p: &Parsed,
    src: &lb_common::addr::AddrWords,
    dst: &lb_common::addr::AddrWords,
    ports: u32,
    proto: u8,
) -> u32 {
    let affinity = vip.flags & VIP_F_SRC_AFFINITY != 0;
    flow_hash(cfg.hash_seed, affinity, p.family, src, dst, ports, proto)
}

/// §4 "Ring choice" and "Flow continuity": the backend, and the flow-table write.
fn choose(
    maps: &dyn Maps,
    cfg: &LbConfig,
    vip: &VipMeta,
    key: &FlowKey,
    hash: u32,
    usage: Use,
) -> Result<(Pick, Option<FlowWrite>), NoPick> {
    if usage == Use::ReadOnly
        && let Some(e) = maps.flow(key)
        && let Some(b) = maps.backend(e.backend_id)
        && e.honoured_by(&b)
        && !idle_out(maps, cfg, key)
    {
        let pick = Pick {
            id: e.backend_id,
            backend: b,
            new_flow: false,
            detail: None,
        };
        return Ok((pick, None));
    }
    let peers = matches!(
        usage,
        Use::Miss | Use::Rehash | Use::Expired | Use::ReadOnly
    ) && cfg.flags & CONFIG_F_PEER_FLOWS != 0;
    if peers
        && let Some(e) = maps.peer(key)
        && let Some(b) = maps.backend(e.backend_id)
        && e.honoured_by(&b)
        && b.vip_index == vip.index
    {
        let read_only = usage == Use::ReadOnly;
        let pick = Pick {
            id: e.backend_id,
            backend: b,
            new_flow: false,
            detail: (!read_only).then_some(Counter::FlowPeer),
        };
        let entry = FlowEntry {
            backend_id: e.backend_id,
            generation: b.generation,
        };
        let write = (!read_only).then_some(FlowWrite {
            key: *key,
            entry,
            origin: ORIGIN_PEER,
        });
        return Ok((pick, write));
    }
    let slot = ring_slot(hash);
    let id = maps.ring(vip.index, slot);
    debug_assert!(slot < RING_SIZE);
    if id == 0 {
        if vip.flags & VIP_F_NO_BACKEND_PASS != 0 {
            return Err(NoPick::Pass);
        }
        return Err(NoPick::NoBackend(vip.index));
    }
    let b = match maps.backend(id) {
        Some(b) if b.state != BACKEND_EMPTY && b.vip_index == vip.index => b,
        _ => return Err(NoPick::BadBackend(vip.index)),
    };
    let (detail, new_flow) = match usage {
        Use::RingOnly => (Some(Counter::Fragment), false),
        Use::ReadOnly => (None, false),
        Use::Syn => (Some(Counter::FlowSyn), true),
        Use::Miss => (Some(Counter::FlowMiss), true),
        Use::Rehash => (Some(Counter::FlowRehash), true),
        Use::Expired => (Some(Counter::FlowExpired), true),
    };
    let write = new_flow.then_some(FlowWrite {
        key: *key,
        entry: FlowEntry {
            backend_id: id,
            generation: b.generation,
        },
        origin: ORIGIN_RING,
    });
    let pick = Pick {
        id,
        backend: b,
        new_flow,
        detail,
    };
    Ok((pick, write))
}

/// §3 "Fragments".
fn fragment(maps: &dyn Maps, cfg: &LbConfig, f: &[u8], p: &Parsed) -> Outcome {
    // Found: an all-ports VIP or a fragment alias of the packet's protocol (only TCP and UDP
    // VIPs exist; the address entry `(dst, 0, 0)` is neither).
    let vip = match maps.vip_entry(&VipKey::of(p.dst, 0, p.proto)) {
        Some(v) if p.proto == PROTO_TCP || p.proto == PROTO_UDP => v,
        _ => return Outcome::pass(Counter::Pass),
    };
    let hash = ring_hash(cfg, &vip, p, &p.src_w, &p.dst_w, 0, p.proto);
    let key = flow_key(p, 0, 0, p.proto);
    let entropy = key.entropy(cfg.hash_seed);
    match choose(maps, cfg, &vip, &key, hash, Use::RingOnly) {
        Ok((pick, _)) => forward(maps, cfg, f, p, &vip, &pick, entropy, true),
        Err(n) => n.into(),
    }
}

/// §5: the frame sent to the chosen backend, or the too-big answer.
#[expect(
    clippy::too_many_arguments,
    reason = "the packet, its VIP, its pick and its flow: the document's inputs of §5"
)]
fn forward(
    maps: &dyn Maps,
    cfg: &LbConfig,
    f: &[u8],
    p: &Parsed,
    vip: &VipMeta,
    pick: &Pick,
    entropy: u32,
    mtu_check: bool,
) -> Outcome {
    let b = &pick.backend;
    let bv4 = b.family == lb_common::addr::FAMILY_V4;
    let pv4 = p.family == lb_common::addr::FAMILY_V4;
    let supported = match vip.mode {
        MODE_DSR_L2 => true,
        MODE_IPIP | MODE_GUE => (bv4 && pv4) || b.family == lb_common::addr::FAMILY_V6,
        _ => false,
    };
    if !supported {
        let mut o = Outcome::vip_drop(Counter::DropUnsupported, vip.index);
        o.detail = pick.detail;
        return o;
    }
    let overhead = expect::overhead(vip.mode, bv4);
    if mtu_check && overhead != 0 && cfg.mtu != 0 && p.l3_len + overhead > usize::from(cfg.mtu) {
        let mut o = if maps.icmp_token() {
            let mut o = Outcome::simple(XDP_TX, Counter::IcmpTooBigSent);
            o.output = Some(expect::too_big_reply(f, cfg.mtu, overhead));
            o
        } else {
            Outcome::drop(Counter::DropTooBigRateLimited)
        };
        o.vip = Some((vip.index, TrafficStats::new(0, 0, 0, 1)));
        o.detail = pick.detail;
        return o;
    }
    let input = &f[..p.l3_end()];
    let out = expect::forwarded(input, cfg, b, vip.mode, entropy);
    let bytes = p.l3_end() as u64;
    let stats = TrafficStats::new(1, bytes, u64::from(pick.new_flow), 0);
    Outcome {
        verdict: XDP_TX,
        counter: Counter::Tx,
        detail: pick.detail,
        output: Some(out),
        vip: Some((vip.index, stats)),
        backend: Some((pick.id, stats)),
        flow_write: None,
        evicted: false,
    }
}
