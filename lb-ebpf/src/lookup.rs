//! Classify and choose: VIP lookup, flow table, Maglev ring.

use lb_common::{
    FlowCacheEntry, FlowEntry, FlowKey, LbConfig, VipKey, VipMeta,
    addr::AddrWords,
    hash::{addr_filter_bit, ring_slot},
    limits::{FLOW_CACHE_REFRESH, FLOW_CACHE_SLOTS, RING_SIZE, RING_SLOTS_PER_ENTRY},
    stats::Counter,
    values::{
        BACKEND_EMPTY, Backend, CONFIG_F_ANY_PORT_VIPS, VIP_F_FRAG_ONLY, VIP_F_NO_BACKEND_PASS,
    },
};

use crate::{
    maps::{ADDR_FILTER, BACKENDS, FLOW_CACHE, FLOWS, RING, VIPS},
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

/// The VIP serving `(addr, port, proto)`: exact port, then all-ports if any exist.
#[inline(always)]
pub fn vip(cfg: &LbConfig, family: u8, addr: &AddrWords, port: u16, proto: u8) -> Option<VipMeta> {
    if let Some(v) = get(family, addr, port, proto) {
        return Some(v);
    }
    if cfg.flags & CONFIG_F_ANY_PORT_VIPS == 0 {
        return None;
    }
    get(family, addr, 0, proto).filter(|v| v.flags & VIP_F_FRAG_ONLY == 0)
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
    /// Table first, ring on a miss, nothing written (ICMP errors).
    ReadOnly,
    /// Ring only (fragments).
    None,
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
    Miss,
}

#[inline(always)]
fn backend(id: u32) -> Option<&'static Backend> {
    BACKENDS.get(id)
}

/// Looks the flow up: this CPU's flow cache, then the flow table (docs/datapath.md §4). A hit
/// carries everything forwarding needs (the backend entry holds its VIP's index, mode and
/// flags), so established packets skip the VIP lookup. `entropy` is the flow's
/// (`flow_entropy`): its low bits pick the cache slot.
#[inline(always)]
pub fn established(key: &FlowKey, entropy: u32) -> Established {
    // SAFETY: this CPU's entry; nothing else writes it while the program runs here.
    let cached = FLOW_CACHE
        .get_ptr_mut(cache_slot(entropy))
        .map(|c| unsafe { &mut *c });
    let Some(c) = cached else {
        return table_entry(key);
    };
    if !same_flow(&c.key, key) {
        let found = table_entry(key);
        if let Established::Hit(id, b) = found {
            cache_store(c, key, id, b.generation);
        }
        return found;
    }
    c.packets = c.packets.wrapping_add(1);
    if c.packets % FLOW_CACHE_REFRESH != 0
        && let Some(b) = backend(c.backend_id)
        && c.entry().honoured_by(b)
    {
        return Established::Hit(c.backend_id, b);
    }
    // A refresh, or a copy no longer honoured: the table decides.
    match table_entry(key) {
        Established::Hit(id, b) => {
            c.backend_id = id;
            c.generation = b.generation;
            Established::Hit(id, b)
        }
        // The LRU evicted the entry while this copy served the flow: put the copy back, so
        // the flow keeps its backend whatever the ring says by now.
        Established::Miss => match backend(c.backend_id) {
            Some(b) if c.entry().honoured_by(b) => {
                if FLOWS.insert(key, c.entry(), 0).is_err() {
                    stats::count(Counter::FlowInsertFailed);
                }
                Established::Hit(c.backend_id, b)
            }
            _ => Established::Miss,
        },
        Established::Stale => Established::Stale,
    }
}

/// The flow table alone (relayed ICMP errors use only this: they write neither the table nor
/// the cache).
#[inline(always)]
fn table_entry(key: &FlowKey) -> Established {
    // SAFETY: plain data; see `get`.
    let Some(entry) = (unsafe { FLOWS.get(key) }).copied() else {
        return Established::Miss;
    };
    match backend(entry.backend_id) {
        Some(b) if entry.honoured_by(b) => Established::Hit(entry.backend_id, b),
        _ => Established::Stale,
    }
}

#[inline(always)]
fn cache_slot(entropy: u32) -> u32 {
    entropy & (FLOW_CACHE_SLOTS - 1)
}

#[inline(always)]
fn cache_store(c: &mut FlowCacheEntry, key: &FlowKey, backend_id: u32, generation: u32) {
    c.key = *key;
    c.backend_id = backend_id;
    c.generation = generation;
    c.packets = 0;
}

/// Key equality as ten word compares without branches (a derived `==` may become a call).
#[inline(always)]
fn same_flow(a: &FlowKey, b: &FlowKey) -> bool {
    const WORDS: usize = size_of::<FlowKey>() / 4;
    // SAFETY: `FlowKey` is `repr(C)`, 40 bytes, 4-aligned, without implicit padding.
    let (a, b) = unsafe {
        (
            &*(a as *const FlowKey as *const [u32; WORDS]),
            &*(b as *const FlowKey as *const [u32; WORDS]),
        )
    };
    let mut diff = 0;
    let mut i = 0;
    while i < WORDS {
        diff |= a[i] ^ b[i];
        i += 1;
    }
    diff == 0
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

/// Writes the flow table and this CPU's cache slot of the flow.
#[inline(always)]
fn remember(key: &FlowKey, entropy: u32, id: u32, backend: &Backend) {
    let entry = FlowEntry {
        backend_id: id,
        generation: backend.generation,
    };
    if FLOWS.insert(key, entry, 0).is_err() {
        stats::count(Counter::FlowInsertFailed);
    }
    if let Some(c) = FLOW_CACHE.get_ptr_mut(cache_slot(entropy)) {
        // SAFETY: this CPU's entry.
        cache_store(unsafe { &mut *c }, key, id, backend.generation);
    }
}

/// Picks the backend of a flow of `vip` from its ring (docs/datapath.md §4); `flow_use` says
/// what the caller already learned from the flow table.
#[inline(always)]
pub fn choose(
    vip: &VipMeta,
    key: &FlowKey,
    hash: u32,
    entropy: u32,
    flow_use: FlowUse,
) -> Result<Choice, Verdict> {
    if flow_use == FlowUse::ReadOnly
        && let Established::Hit(id, backend) = table_entry(key)
    {
        return Ok(Choice {
            id,
            backend,
            new_flow: false,
            counter: None,
        });
    }
    let (id, backend) = from_ring(vip, hash)?;
    let counter = match flow_use {
        FlowUse::None => Counter::Fragment,
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
    };
    let new_flow = flow_use != FlowUse::None;
    if new_flow {
        remember(key, entropy, id, backend);
    }
    Ok(Choice {
        id,
        backend,
        new_flow,
        counter: Some(counter),
    })
}
