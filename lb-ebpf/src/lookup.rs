//! Classify and choose: VIP lookup, flow table, Maglev ring.

use aya_ebpf::helpers::generated::bpf_jiffies64;
use lb_common::{
    FlowEntry, FlowKey, FlowSet, LbConfig, VipKey, VipMeta,
    addr::{AddrWords, PROTO_UDP, is_martian_source},
    flows::{ORIGIN_PEER, ORIGIN_RING, idle_expired, idle_tick},
    hash::{self, addr_filter_bit, ring_slot},
    limits::{RING_SIZE, RING_SLOTS_PER_ENTRY},
    stats::Counter,
    values::{
        BACKEND_EMPTY, Backend, CONFIG_F_ANY_PORT_VIPS, CONFIG_F_PEER_FLOWS, VIP_F_FRAG_ONLY,
        VIP_F_NO_BACKEND_PASS, VIP_F_SRC_AFFINITY,
    },
};

use crate::{
    maps::{ADDR_FILTER, BACKENDS, FLOWS, PEER_FLOWS, RING, VIPS, flow_set_mask, peer_set_mask},
    parse::Packet,
    stats::{self, Verdict},
};

/// Cheap pre-filter: `false` means the address is certainly no VIP.
#[inline(always)]
pub fn maybe_vip_address(dst: &AddrWords) -> bool {
    let bit = addr_filter_bit(dst);
    match ADDR_FILTER.get(bit / 64) {
        Some(word) => word & (1u64 << (bit % 64)) != 0,
        None => false,
    }
}

#[inline(always)]
fn get(family: u8, addr: &AddrWords, port: u16, proto: u8) -> Option<VipMeta> {
    let key = VipKey {
        addr: *addr,
        port,
        proto,
        family,
    };
    // SAFETY: entries are plain data; a concurrent update yields an old or new value, both valid.
    unsafe { VIPS.get(key) }.copied()
}

/// The address entry: present for every VIP address.
#[inline(always)]
pub fn address_entry(family: u8, addr: &AddrWords) -> Option<VipMeta> {
    get(family, addr, 0, 0)
}

/// The VIP serving `(addr, port, proto)`: exact port, then all-ports if any exist. Either hit
/// may be the entry `(addr, 0, proto)` (port 0 is a port a packet can carry): that entry is the
/// VIP only without `VIP_F_FRAG_ONLY`; a fragment alias serves fragments, never whole packets.
#[inline(always)]
pub fn vip(cfg: &LbConfig, family: u8, addr: &AddrWords, port: u16, proto: u8) -> Option<VipMeta> {
    let v = match get(family, addr, port, proto) {
        Some(v) => v,
        None if cfg.flags & CONFIG_F_ANY_PORT_VIPS != 0 => get(family, addr, 0, proto)?,
        None => return None,
    };
    (v.flags & VIP_F_FRAG_ONLY == 0).then_some(v)
}

/// A packet that failed a check after its destination was known: VIP traffic is dropped with
/// `reason`, anything else is the kernel's business.
#[inline(always)]
pub fn malformed(pkt: &Packet, reason: Counter) -> Verdict {
    match address_entry(pkt.family, &pkt.dst) {
        Some(_) if reason.is_drop() => Verdict::drop(reason),
        _ => Verdict::pass(Counter::Pass),
    }
}

/// Whether the packet's source is martian (docs/datapath.md §2): an address class no host has
/// (`addr::is_martian_source`, arithmetic only), or one of this LB's VIP addresses, which costs
/// the pre-filter's array lookup and, only when its bit is set, the address entry's hash lookup.
#[inline(always)]
pub fn martian_source(pkt: &Packet) -> bool {
    is_martian_source(pkt.family, &pkt.src)
        || (maybe_vip_address(&pkt.src) && address_entry(pkt.family, &pkt.src).is_some())
}

/// The ring hash of a flow of `vip` (docs/datapath.md §4), shared by data packets and relayed
/// ICMP errors: `lb_common::hash::flow_hash`, with the VIP's source affinity.
#[inline(always)]
pub fn ring_hash(
    cfg: &LbConfig,
    vip: &VipMeta,
    family: u8,
    src: &AddrWords,
    dst: &AddrWords,
    ports: u32,
    proto: u8,
) -> u32 {
    let affinity = vip.flags & VIP_F_SRC_AFFINITY != 0;
    hash::flow_hash(cfg.hash_seed, affinity, family, src, dst, ports, proto)
}

/// The VIP receiving fragments of `proto` sent to `addr`.
#[inline(always)]
pub fn fragment_vip(family: u8, addr: &AddrWords, proto: u8) -> Option<VipMeta> {
    get(family, addr, 0, proto)
}

/// How the flow table takes part in a ring choice.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum FlowUse {
    /// TCP SYN: the ring decides, the table remembers.
    Syn,
    /// The table had no entry: the ring decides, the table remembers.
    Miss,
    /// The table's entry is no longer honoured: the ring decides, the entry is overwritten.
    Rehash,
    /// A UDP flow silent past the idle timeout: as `Rehash`, counted apart.
    Expired,
    /// Table first, ring on a miss, nothing written (ICMP errors).
    ReadOnly,
    /// The ring alone, the table neither read nor written (fragments).
    RingOnly,
}

/// A chosen backend.
pub struct Choice {
    pub id: u32,
    /// The map's entry itself (not a copy: the fast path reads a few fields of it).
    pub backend: &'static Backend,
    /// A ring choice for a flow (counts as a new flow).
    pub new_flow: bool,
    /// How it was chosen (`Flow*`, `Fragment`), for the verdict's second counter.
    pub counter: Option<Counter>,
}

/// What the flow table says about a flow.
pub enum Established {
    /// An entry that is still honoured (docs/datapath.md §4).
    Hit(u32, &'static Backend),
    /// An entry whose backend went away, down, or was reallocated.
    Stale,
    /// A UDP entry idle for longer than `LbConfig::udp_idle_ticks`.
    Expired,
    Miss,
}

#[inline(always)]
fn backend(id: u32) -> Option<&'static Backend> {
    BACKENDS.get(id)
}

/// The set `entropy` selects (docs/datapath.md §4).
#[inline(always)]
fn flow_set(entropy: u32) -> Option<&'static mut FlowSet> {
    // SAFETY: the program writes the table without locks by design; a slot torn by two writers
    // fails its seal (`lb_common::flows`), and every other bit pattern is a valid value.
    FLOWS
        .get_ptr_mut(entropy & flow_set_mask())
        .map(|s| unsafe { &mut *s })
}

/// Looks the flow up in the flow table (docs/datapath.md §4) and marks a honoured entry used
/// (and a UDP one seen). A hit carries everything forwarding needs (the backend entry holds its
/// VIP's index, mode and flags), so established packets skip the VIP lookup. `entropy` is the
/// flow's `flow_entropy`: it selects the set and is the slots' tag.
#[inline(always)]
pub fn established(cfg: &LbConfig, key: &FlowKey, entropy: u32) -> Established {
    table(cfg, key, entropy, true)
}

/// The flow table without writing it (relayed ICMP errors).
#[inline(always)]
fn table_entry(cfg: &LbConfig, key: &FlowKey, entropy: u32) -> Established {
    table(cfg, key, entropy, false)
}

/// The idle clock now (`lb_common::flows::idle_tick`): jiffies, which the JIT reads with one
/// load (a clock in ns costs a helper call: +28 ns per UDP packet, measured A/B).
#[inline(always)]
fn idle_now(cfg: &LbConfig) -> u16 {
    // SAFETY: a helper without arguments, allowed for every program type.
    idle_tick(unsafe { bpf_jiffies64() }, cfg.idle_shift)
}

/// Whether UDP idle timeouts apply to the flow of `key` (read the clock only then: TCP packets
/// never do).
#[inline(always)]
fn idle_timed(cfg: &LbConfig, key: &FlowKey) -> bool {
    key.proto == PROTO_UDP && cfg.udp_idle_ticks != 0
}

#[inline(always)]
fn table(cfg: &LbConfig, key: &FlowKey, entropy: u32, write: bool) -> Established {
    let Some(slot) = flow_set(entropy).and_then(|set| set.find(key, entropy)) else {
        return Established::Miss;
    };
    match backend(slot.backend_id) {
        Some(b) if slot.entry().honoured_by(b) => {
            if idle_timed(cfg, key) {
                let now = idle_now(cfg);
                if idle_expired(slot.seen, now, cfg.udp_idle_ticks) {
                    return Established::Expired;
                }
                // At most one write per tick and flow: the line stays clean in between.
                if write && slot.seen != now {
                    slot.seen = now;
                }
            }
            // Only the first hit writes: later ones leave the line clean.
            if write && slot.used == 0 {
                slot.used = 1;
            }
            Established::Hit(slot.backend_id, b)
        }
        _ => Established::Stale,
    }
}

/// A peer's exception for the flow (docs/datapath.md §4, flow continuity): its backend, if
/// the entry is intact, honoured here, and of `vip`. Only the agent writes the peer table,
/// resolving each exception to this node's id and generation of the backend it names.
#[inline(always)]
fn peer_exception(vip: &VipMeta, key: &FlowKey, entropy: u32) -> Option<(u32, &'static Backend)> {
    let set = PEER_FLOWS.get(entropy & peer_set_mask())?;
    let slot = set.get(key, entropy)?;
    let b = backend(slot.backend_id)?;
    (slot.entry().honoured_by(b) && b.vip_index == vip.index).then_some((slot.backend_id, b))
}

/// The ring's backend for `hash`, or the verdict for a VIP without one.
#[inline(always)]
fn from_ring(vip: &VipMeta, hash: u32) -> Result<(u32, &'static Backend), Verdict> {
    let slot = vip
        .index
        .wrapping_mul(RING_SIZE)
        .wrapping_add(ring_slot(hash));
    let id = match RING.get(slot / RING_SLOTS_PER_ENTRY) {
        Some(pair) => pair[(slot % RING_SLOTS_PER_ENTRY) as usize],
        None => 0,
    };
    if id == 0 {
        if vip.flags & VIP_F_NO_BACKEND_PASS != 0 {
            return Err(Verdict::pass(Counter::PassNoBackend));
        }
        return Err(stats::vip_drop(
            vip.index,
            Verdict::drop(Counter::DropNoBackend),
        ));
    }
    match backend(id) {
        Some(b) if b.state != BACKEND_EMPTY && b.vip_index == vip.index => Ok((id, b)),
        _ => Err(stats::vip_drop(
            vip.index,
            Verdict::drop(Counter::DropBadBackend),
        )),
    }
}

/// Writes the flow's entry into its set: its own slot, an empty one, or the CLOCK victim,
/// whose eviction is counted.
#[inline(always)]
fn remember(cfg: &LbConfig, key: &FlowKey, entropy: u32, id: u32, backend: &Backend, origin: u8) {
    let entry = FlowEntry {
        backend_id: id,
        generation: backend.generation,
    };
    let Some(set) = flow_set(entropy) else {
        stats::count(Counter::FlowInsertFailed);
        return;
    };
    let (slot, evicts) = set.place_evicting(key, entropy);
    slot.write_from(key, entropy, entry, origin);
    if idle_timed(cfg, key) {
        slot.seen = idle_now(cfg);
    }
    if evicts {
        stats::count(Counter::FlowEvicted);
    }
}

/// Picks the backend of a flow of `vip` (docs/datapath.md §4): for a flow the table does not
/// hold, a peer's exception when continuity is on (`cfg`), else its ring slot; `flow_use`
/// says what the caller already learned from the flow table.
#[inline(always)]
pub fn choose(
    cfg: &LbConfig,
    vip: &VipMeta,
    key: &FlowKey,
    hash: u32,
    entropy: u32,
    flow_use: FlowUse,
) -> Result<Choice, Verdict> {
    if flow_use == FlowUse::ReadOnly
        && let Established::Hit(id, backend) = table_entry(cfg, key, entropy)
    {
        return Ok(Choice {
            id,
            backend,
            new_flow: false,
            counter: None,
        });
    }
    // A SYN starts a new connection and a fragment never uses the table: both follow the ring.
    // (Inlined, with a write of its own: merged into the ring path's write, or called out of
    // line, the peer path makes `tcp_udp`'s frame too big for the verifier's 512-byte budget
    // together with the entry point's.)
    let peers_apply = matches!(
        flow_use,
        FlowUse::Miss | FlowUse::Rehash | FlowUse::Expired | FlowUse::ReadOnly
    ) && cfg.flags & CONFIG_F_PEER_FLOWS != 0;
    if peers_apply && let Some((id, backend)) = peer_exception(vip, key, entropy) {
        let counter = if flow_use == FlowUse::ReadOnly {
            None
        } else {
            remember(cfg, key, entropy, id, backend, ORIGIN_PEER);
            Some(Counter::FlowPeer)
        };
        // Not a new flow: the connection exists, it only reached this node now.
        return Ok(Choice {
            id,
            backend,
            new_flow: false,
            counter,
        });
    }
    let (id, backend) = from_ring(vip, hash)?;
    let counter = match flow_use {
        FlowUse::RingOnly => Counter::Fragment,
        FlowUse::ReadOnly => {
            return Ok(Choice {
                id,
                backend,
                new_flow: false,
                counter: None,
            });
        }
        FlowUse::Syn => Counter::FlowSyn,
        FlowUse::Miss => Counter::FlowMiss,
        FlowUse::Rehash => Counter::FlowRehash,
        FlowUse::Expired => Counter::FlowExpired,
    };
    let new_flow = flow_use != FlowUse::RingOnly;
    if new_flow {
        remember(cfg, key, entropy, id, backend, ORIGIN_RING);
    }
    Ok(Choice {
        id,
        backend,
        new_flow,
        counter: Some(counter),
    })
}
