//! Classify and choose: VIP lookup, flow table, Maglev ring.

use lb_common::{
    FlowEntry, FlowKey, LbConfig, VipKey, VipMeta,
    addr::AddrWords,
    hash::{addr_filter_bit, ring_slot},
    limits::RING_SIZE,
    stats::Counter,
    values::{
        BACKEND_EMPTY, Backend, CONFIG_F_ANY_PORT_VIPS, VIP_F_FRAG_ONLY, VIP_F_NO_BACKEND_PASS,
    },
};

use crate::{
    maps::{ADDR_FILTER, BACKENDS, FLOWS, RING, VIPS},
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

/// How the flow table takes part in a choice.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum FlowUse {
    /// TCP SYN: the ring decides, the table remembers.
    Syn,
    /// Table first, ring on a miss or a dead entry, table remembers.
    Sticky,
    /// Table first, ring on a miss, nothing written (ICMP errors).
    ReadOnly,
    /// Ring only (fragments).
    None,
}

/// A chosen backend.
pub struct Choice {
    pub id: u32,
    pub backend: Backend,
    /// A ring choice for a flow (counts as a new flow).
    pub new_flow: bool,
}

#[inline(always)]
fn backend(id: u32) -> Option<Backend> {
    BACKENDS.get(id).copied()
}

/// The ring's backend for `hash`, or the verdict for a VIP without one.
#[inline(always)]
fn from_ring(vip: &VipMeta, hash: u32) -> Result<(u32, Backend), Verdict> {
    let slot = vip
        .index
        .wrapping_mul(RING_SIZE)
        .wrapping_add(ring_slot(hash));
    let id = RING.get(slot).copied().unwrap_or(0);
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

#[inline(always)]
fn remember(key: &FlowKey, id: u32) {
    let entry = FlowEntry {
        backend_id: id,
        _pad: 0,
    };
    if FLOWS.insert(key, entry, 0).is_err() {
        stats::count(Counter::FlowInsertFailed);
    }
}

/// Picks the backend of a flow of `vip` (section 4 of docs/datapath.md).
#[inline(always)]
pub fn choose(
    vip: &VipMeta,
    key: &FlowKey,
    hash: u32,
    flow_use: FlowUse,
) -> Result<Choice, Verdict> {
    match flow_use {
        FlowUse::None => {
            let (id, backend) = from_ring(vip, hash)?;
            stats::count(Counter::Fragment);
            return Ok(Choice {
                id,
                backend,
                new_flow: false,
            });
        }
        FlowUse::Syn => {
            let (id, backend) = from_ring(vip, hash)?;
            remember(key, id);
            stats::count(Counter::FlowSyn);
            return Ok(Choice {
                id,
                backend,
                new_flow: true,
            });
        }
        FlowUse::Sticky | FlowUse::ReadOnly => {}
    }
    // SAFETY: plain data; see `get`.
    let hit = unsafe { FLOWS.get(key) }.map(|e| e.backend_id);
    let mut rehash = false;
    if let Some(id) = hit {
        if let Some(b) = backend(id)
            && b.accepts_existing_flows()
            && b.vip_index == vip.index
        {
            if flow_use == FlowUse::Sticky {
                stats::count(Counter::FlowHit);
            }
            return Ok(Choice {
                id,
                backend: b,
                new_flow: false,
            });
        }
        rehash = true;
    }
    let (id, backend) = from_ring(vip, hash)?;
    if flow_use == FlowUse::ReadOnly {
        return Ok(Choice {
            id,
            backend,
            new_flow: false,
        });
    }
    remember(key, id);
    stats::count(if rehash {
        Counter::FlowRehash
    } else {
        Counter::FlowMiss
    });
    Ok(Choice {
        id,
        backend,
        new_flow: true,
    })
}
