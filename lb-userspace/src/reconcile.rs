//! The single writer of the BPF maps.
//!
//! Desired state = validated config + runtime overrides (health, API weights) + what netlink
//! knows (MACs, MTU). [`Reconciler::apply`] computes the map contents that state implies and
//! writes only the difference, in an order that never exposes a half-written VIP:
//!
//! 1. new/changed backend entries (counters of fresh ids zeroed first);
//! 2. address pre-filter bits added;
//! 3. ring slots that changed (Maglev diff), so a VIP never points at a missing backend;
//! 4. VIP, address and fragment entries added/changed; on the first apply, the config (with
//!    `READY`: until then the program passes every packet);
//! 5. then the reverse for what goes away: VIP entries removed, their rings zeroed, their
//!    backends emptied, stale filter bits cleared.
//!
//! A later config change (addresses, seed, MTU, ...) is written before step 1: it concerns
//! every VIP alike, so no order among the other writes protects anything from it.
//!
//! A failed write leaves the maps in a state that is still safe to forward with (every step
//! above is), and marks the reconciler dirty: the next apply re-reads the maps before
//! computing its difference.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lb_common::{
    Backend, LbConfig, VipKey, VipMeta,
    addr::{from_words, to_words},
    hash::addr_filter_bit,
    limits::{ADDR_FILTER_WORDS, RING_SIZE},
    values::{
        BACKEND_ACTIVE, BACKEND_DOWN, BACKEND_DRAINING, BACKEND_EMPTY, CONFIG_F_ANY_PORT_VIPS,
        CONFIG_F_PEER_FLOWS, CONFIG_F_READY, VIP_F_FRAG_ONLY, VIP_F_ICMP_ECHO,
        VIP_F_NO_BACKEND_PASS, VIP_F_SRC_AFFINITY,
    },
};

use crate::maglev::{self, MaglevBackend};
use crate::maps::{MapError, MapStore};
use crate::model::{Config, NoBackend, Proto, Vip, VipId};
use crate::ring_digest::{RingDigest, SlotOwner, ring_digest};

/// What netlink found out: the egress interface and how to reach each backend.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetInfo {
    /// MAC of the interface the program forwards out of.
    pub src_mac: [u8; 6],
    /// Egress L3 MTU (the config's `mtu` wins when set).
    pub mtu: u16,
    /// Destination MAC per backend address: its next hop, or itself for dsr-l2. A backend
    /// without one is kept out of the ring (it cannot be reached).
    pub macs: HashMap<IpAddr, [u8; 6]>,
}

/// Runtime state that is not in the config file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Overrides {
    /// Backends whose health check says down.
    pub down: HashSet<(VipId, IpAddr)>,
    /// Weights set through the API (`xlb drain` = 0); they win over the config's weight until
    /// the backend leaves the config.
    pub weights: HashMap<(VipId, IpAddr), u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Map(#[from] MapError),
    #[error(
        "the config needs {needed} VIP indices but the loaded maps hold {max}: raise max-vips, then detach (`xlb stop --detach`) and restart the agent (map sizes are fixed while the maps stay pinned)"
    )]
    TooManyVips { needed: usize, max: u32 },
    #[error(
        "the config needs {needed} backend ids but the loaded maps hold {max} (id 0 is reserved): raise max-backends, then detach (`xlb stop --detach`) and restart the agent"
    )]
    TooManyBackends { needed: usize, max: u32 },
    #[error("Maglev table for {vip}: {source}")]
    Maglev {
        vip: VipId,
        source: maglev::MaglevError,
    },
}

/// What one apply did (for logs and metrics).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApplyReport {
    pub vips_added: usize,
    pub vips_removed: usize,
    pub vip_entries_written: usize,
    pub backends_written: usize,
    pub rings_rebuilt: usize,
    pub ring_slots_written: usize,
    pub duration: Duration,
}

impl ApplyReport {
    pub fn wrote_anything(&self) -> bool {
        self.vip_entries_written
            + self.backends_written
            + self.ring_slots_written
            + self.vips_removed
            > 0
    }
}

/// A backend as the reconciler sees it: which id it has and what its map entry says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendView {
    pub vip: VipId,
    pub addr: IpAddr,
    pub id: u32,
    pub entry: Backend,
    /// Slots owned in the VIP's ring.
    pub slots: u32,
}

/// A VIP's ring and its slot count per backend id. Shared (not copied) between the applied
/// contents and the next plan while its inputs do not change, so an apply compares, counts and
/// copies only the rings it rebuilt.
#[derive(Debug, Default)]
struct Ring {
    slots: Vec<u32>,
    counts: BTreeMap<u32, u32>,
}

impl Ring {
    fn new(slots: Vec<u32>) -> Arc<Self> {
        let counts = maglev::slot_counts(&slots);
        Arc::new(Self { slots, counts })
    }
}

/// A VIP's applied ring, shared with the reconciler.
#[derive(Clone, Debug)]
pub struct RingSlots(Arc<Ring>);

impl RingSlots {
    /// The backend id in ring slot `slot` (0 past the end, like an empty slot).
    pub fn get(&self, slot: u32) -> u32 {
        self.0.slots.get(slot as usize).copied().unwrap_or(0)
    }

    #[cfg(test)]
    pub fn of(slots: Vec<u32>) -> Self {
        Self(Ring::new(slots))
    }
}

/// One VIP's part of [`MapContents`].
#[derive(Clone, Debug, Default)]
struct VipContents {
    index: u32,
    backends: BTreeMap<IpAddr, u32>,
    ring: Arc<Ring>,
    /// What `ring` was built from (`None` when adopted): an unchanged input reuses the table
    /// instead of rebuilding it, so a health change rebuilds one VIP's table, not all of them.
    inputs: Option<Vec<MaglevBackend>>,
    /// The ring's digest and the hash seed it was taken under (`None` when adopted); reused
    /// with the table when neither changed.
    digest: Option<(u32, RingDigest)>,
}

/// Contents of the maps: what they hold as far as the reconciler wrote or adopted it, or what
/// an apply is about to make them hold (the plan, which becomes the former once written).
#[derive(Clone, Debug, Default)]
struct MapContents {
    vips: BTreeMap<VipId, VipContents>,
    entries: BTreeMap<VipKey, VipMeta>,
    backends: BTreeMap<u32, Backend>,
    filter: Vec<u64>,
    config: LbConfig,
}

pub struct Reconciler<S: MapStore> {
    store: S,
    /// What the maps hold; an apply writes its difference from the plan.
    applied: MapContents,
    dirty: bool,
    /// Next backend id to try: ids are handed out round-robin so a freed id is not reused at
    /// once (flows still pinned to it would land on the newcomer instead of re-hashing).
    next_id: u32,
    /// Next `Backend::generation`: every allocation of an id gets a new one, so flow entries
    /// written for a previous holder of the id are never honoured.
    next_generation: u32,
}

fn read_applied<S: MapStore>(store: &S) -> Result<MapContents, MapError> {
    let mut applied = MapContents {
        config: store.config()?,
        filter: store.filter_words()?,
        ..MapContents::default()
    };
    let mut index_to_vip = HashMap::new();
    for (key, meta) in store.vips()? {
        if let Some(id) = VipId::from_map_entry(&key, &meta) {
            index_to_vip.insert(meta.index, id);
            applied.vips.insert(
                id,
                VipContents {
                    index: meta.index,
                    backends: BTreeMap::new(),
                    ring: Ring::new(store.ring(meta.index)?),
                    inputs: None,
                    digest: None,
                },
            );
        }
        applied.entries.insert(key, meta);
    }
    for id in 1..store.max_backends() {
        let b = store.backend(id)?;
        if b.state == BACKEND_EMPTY {
            continue;
        }
        applied.backends.insert(id, b);
        let vip = index_to_vip.get(&b.vip_index);
        if let (Some(vip), Some(addr)) = (vip, from_words(b.family, &b.addr))
            && let Some(v) = applied.vips.get_mut(vip)
        {
            v.backends.insert(addr, id);
        }
    }
    Ok(applied)
}

impl<S: MapStore> Reconciler<S> {
    /// Takes over whatever the maps hold (a fresh program's empty maps, or the pinned maps of a
    /// previous agent): the next apply changes only what differs, keeping VIP indices and
    /// backend ids, so the flow table stays valid across restarts.
    pub fn adopt(store: S) -> Result<Self, MapError> {
        let applied = read_applied(&store)?;
        let next_id = applied.backends.keys().next_back().map_or(1, |id| id + 1);
        let next_generation = applied
            .backends
            .values()
            .map(|b| b.generation)
            .max()
            .map_or(1, |g| g.wrapping_add(1).max(1));
        Ok(Self {
            store,
            applied,
            dirty: false,
            next_id,
            next_generation,
        })
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    /// For tests that inject failures into a fake store under a running agent.
    #[cfg(test)]
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// VIP index of a configured VIP, as applied.
    pub fn vip_index(&self, vip: &VipId) -> Option<u32> {
        self.applied.vips.get(vip).map(|v| v.index)
    }

    /// The ring digest of every applied VIP (see [`crate::ring_digest`]), by VIP.
    pub fn ring_digests(&self) -> BTreeMap<VipId, RingDigest> {
        self.applied
            .vips
            .iter()
            .filter_map(|(id, v)| v.digest.map(|(_, d)| (*id, d)))
            .collect()
    }

    /// What the continuity scan needs of the applied maps: rings are shared, not copied.
    pub fn applied_rings(&self) -> crate::continuity::scan::AppliedRings {
        let mut view = crate::continuity::scan::AppliedRings {
            seed: self.applied.config.hash_seed,
            ..Default::default()
        };
        for (vip, v) in &self.applied.vips {
            view.vips
                .insert(v.index, (*vip, RingSlots(Arc::clone(&v.ring))));
            for (addr, id) in &v.backends {
                if let Some(b) = self.applied.backends.get(id) {
                    view.backends.insert(*id, (*vip, *addr, *b));
                }
            }
        }
        view
    }

    /// Every applied backend with its id, entry and ring share.
    pub fn backends(&self) -> Vec<BackendView> {
        let mut out = Vec::new();
        for (vip, v) in &self.applied.vips {
            let counts = &v.ring.counts;
            for (addr, id) in &v.backends {
                out.push(BackendView {
                    vip: *vip,
                    addr: *addr,
                    id: *id,
                    entry: self.applied.backends.get(id).copied().unwrap_or_default(),
                    slots: counts.get(id).copied().unwrap_or(0),
                });
            }
        }
        out
    }

    /// Makes the maps match `config` + `overrides` + `net`.
    pub fn apply(
        &mut self,
        config: &Config,
        overrides: &Overrides,
        net: &NetInfo,
    ) -> Result<ApplyReport, ReconcileError> {
        let start = Instant::now();
        if self.dirty {
            self.applied = read_applied(&self.store)?;
            self.dirty = false;
        }
        let plan = self.plan(config, overrides, net)?;
        let mut report = ApplyReport::default();
        let result = self.write(&plan, &mut report);
        match result {
            Ok(()) => {
                self.applied = plan;
                report.duration = start.elapsed();
                Ok(report)
            }
            Err(e) => {
                self.dirty = true;
                Err(e.into())
            }
        }
    }

    fn allocate_index(&self, used: &BTreeSet<u32>) -> Option<u32> {
        (0..self.store.max_vips()).find(|i| !used.contains(i))
    }

    fn plan(
        &mut self,
        config: &Config,
        overrides: &Overrides,
        net: &NetInfo,
    ) -> Result<MapContents, ReconcileError> {
        // Capacity first: a plan that cannot fit must not write anything.
        let total_backends: usize = config.vips.iter().map(|v| v.backends.len()).sum();
        let kept_removed_vips = self
            .applied
            .vips
            .keys()
            .filter(|id| config.vip(id).is_none())
            .count();
        let needed_vips = config.vips.len() + kept_removed_vips;
        if needed_vips > self.store.max_vips() as usize {
            return Err(ReconcileError::TooManyVips {
                needed: needed_vips,
                max: self.store.max_vips(),
            });
        }
        // Backends being removed keep their ids until the end of the apply.
        let desired: HashSet<(VipId, IpAddr)> = config
            .vips
            .iter()
            .flat_map(|v| v.backends.iter().map(move |b| (v.id, b.addr)))
            .collect();
        let removed_backends = self
            .applied
            .vips
            .iter()
            .flat_map(|(id, v)| v.backends.keys().map(move |a| (*id, *a)))
            .filter(|k| !desired.contains(k))
            .count();
        let needed_ids = total_backends + removed_backends;
        if needed_ids + 1 > self.store.max_backends() as usize {
            return Err(ReconcileError::TooManyBackends {
                needed: needed_ids,
                max: self.store.max_backends(),
            });
        }

        let max_backends = self.store.max_backends();
        let mut used_indices: BTreeSet<u32> = self.applied.vips.values().map(|v| v.index).collect();
        let mut used_ids: BTreeSet<u32> = self.applied.backends.keys().copied().collect();

        let mut plan = MapContents {
            filter: vec![0; ADDR_FILTER_WORDS as usize],
            ..MapContents::default()
        };

        for vip in &config.vips {
            let previous = self.applied.vips.get(&vip.id);
            let index = match previous {
                Some(p) => p.index,
                None => {
                    let i =
                        self.allocate_index(&used_indices)
                            .ok_or(ReconcileError::TooManyVips {
                                needed: needed_vips,
                                max: self.store.max_vips(),
                            })?;
                    used_indices.insert(i);
                    i
                }
            };
            let mut planned = VipContents {
                index,
                backends: BTreeMap::new(),
                ring: Arc::default(),
                inputs: None,
                digest: None,
            };
            let meta = vip_meta(vip, index);
            let mut in_ring = Vec::new();
            for spec in &vip.backends {
                let id = match previous.and_then(|p| p.backends.get(&spec.addr)) {
                    Some(id) => *id,
                    None => {
                        let id = allocate_id(&mut self.next_id, max_backends, &used_ids).ok_or(
                            ReconcileError::TooManyBackends {
                                needed: needed_ids,
                                max: self.store.max_backends(),
                            },
                        )?;
                        used_ids.insert(id);
                        id
                    }
                };
                let key = (vip.id, spec.addr);
                let weight = overrides.weights.get(&key).copied().unwrap_or(spec.weight);
                let mac = net.macs.get(&spec.addr).copied();
                let state = if overrides.down.contains(&key) || mac.is_none() {
                    BACKEND_DOWN
                } else if weight == 0 {
                    BACKEND_DRAINING
                } else {
                    BACKEND_ACTIVE
                };
                let (family, addr) = to_words(spec.addr);
                let generation = match self.applied.backends.get(&id) {
                    Some(old) if old.vip_index == index => old.generation,
                    _ => {
                        let g = self.next_generation;
                        self.next_generation = g.wrapping_add(1).max(1);
                        g
                    }
                };
                plan.backends.insert(
                    id,
                    Backend {
                        addr,
                        mac: mac.unwrap_or_default(),
                        state,
                        family,
                        vip_index: index,
                        generation,
                        mode: meta.mode,
                        _pad0: 0,
                        // VIP_F_* fit in 16 bits (lb_common::values).
                        vip_flags: meta.flags as u16,
                        weight,
                    },
                );
                planned.backends.insert(spec.addr, id);
                if state == BACKEND_ACTIVE {
                    in_ring.push(MaglevBackend {
                        id,
                        // The backend's identity in the Maglev permutation is its address
                        // alone: the same server gets the same preference list in every VIP.
                        addr: SocketAddr::new(spec.addr, 0),
                        weight,
                    });
                }
            }
            let reused = previous.filter(|p| p.inputs.as_ref() == Some(&in_ring));
            planned.ring = match reused {
                Some(p) => Arc::clone(&p.ring),
                None => Ring::new(maglev::build_table(&in_ring, RING_SIZE).map_err(|source| {
                    ReconcileError::Maglev {
                        vip: vip.id,
                        source,
                    }
                })?),
            };
            // Taken from the entries this plan writes, through the rule `xlb inspect` applies
            // to the maps, so both print the same digest for the same maps.
            planned.digest = match reused.and_then(|p| p.digest) {
                Some((seed, d)) if seed == config.hash_seed => Some((seed, d)),
                _ => {
                    let d = ring_digest(config.hash_seed, &planned.ring.slots, |id| {
                        SlotOwner::of(id, index, plan.backends.get(&id))
                    });
                    Some((config.hash_seed, d))
                }
            };
            planned.inputs = Some(in_ring);
            plan.entries.insert(vip.id.map_key(), meta);
            plan.vips.insert(vip.id, planned);
        }

        add_shared_entries(config, &mut plan);
        for key in plan.entries.keys() {
            let bit = addr_filter_bit(&key.addr);
            plan.filter[(bit / 64) as usize] |= 1u64 << (bit % 64);
        }
        plan.config = lb_config(config, net);
        Ok(plan)
    }

    fn write(&mut self, plan: &MapContents, report: &mut ApplyReport) -> Result<(), MapError> {
        let first_apply = self.applied.config.flags & CONFIG_F_READY == 0;
        if !first_apply && plan.config != self.applied.config {
            self.store.set_config(&plan.config)?;
        }

        // 1. Backends that exist after this apply.
        for (id, b) in &plan.backends {
            let old = self.applied.backends.get(id);
            if old == Some(b) {
                continue;
            }
            if old.is_none() {
                self.store.clear_backend_stats(*id)?;
            }
            self.store.set_backend(*id, b)?;
            report.backends_written += 1;
        }

        // 2. Filter bits of new addresses.
        for (i, (want, have)) in plan.filter.iter().zip(&self.applied.filter).enumerate() {
            if want & !have != 0 {
                self.store.set_filter_word(i as u32, want | have)?;
            }
        }

        // 3. Rings.
        for (id, v) in &plan.vips {
            let changes = match self.applied.vips.get(id) {
                // The ring the maps hold already: its inputs did not change.
                Some(a) if Arc::ptr_eq(&a.ring, &v.ring) => Vec::new(),
                Some(a) => maglev::diff(&a.ring.slots, &v.ring.slots),
                None => {
                    self.store.clear_vip_stats(v.index)?;
                    report.vips_added += 1;
                    maglev::diff(&self.store.ring(v.index)?, &v.ring.slots)
                }
            };
            if !changes.is_empty() {
                self.store.set_ring_slots(v.index, &changes)?;
                report.rings_rebuilt += 1;
                report.ring_slots_written += changes.len();
            }
        }

        // 4. VIP, address and fragment entries; the first config.
        for (key, meta) in &plan.entries {
            if self.applied.entries.get(key) != Some(meta) {
                self.store.set_vip(key, meta)?;
                report.vip_entries_written += 1;
            }
        }
        if first_apply {
            self.store.set_config(&plan.config)?;
        }

        // 5. What goes away, in reverse order.
        for key in self.applied.entries.keys() {
            if !plan.entries.contains_key(key) {
                self.store.remove_vip(key)?;
            }
        }
        for (id, old) in &self.applied.vips {
            if !plan.vips.contains_key(id) {
                let zero: Vec<(u32, u32)> = old
                    .ring
                    .slots
                    .iter()
                    .enumerate()
                    .filter(|(_, b)| **b != 0)
                    .map(|(slot, _)| (slot as u32, 0))
                    .collect();
                if !zero.is_empty() {
                    self.store.set_ring_slots(old.index, &zero)?;
                    report.ring_slots_written += zero.len();
                }
                report.vips_removed += 1;
            }
        }
        for id in self.applied.backends.keys() {
            if !plan.backends.contains_key(id) {
                self.store.set_backend(*id, &Backend::default())?;
                report.backends_written += 1;
            }
        }
        for (i, (want, have)) in plan.filter.iter().zip(&self.applied.filter).enumerate() {
            if want != have && want & !have == 0 {
                self.store.set_filter_word(i as u32, *want)?;
            }
        }
        Ok(())
    }
}

/// Next free id from `next` on, wrapping (ids 1..max).
fn allocate_id(next: &mut u32, max: u32, used: &BTreeSet<u32>) -> Option<u32> {
    for _ in 1..max {
        let id = if *next == 0 || *next >= max { 1 } else { *next };
        *next = id + 1;
        if !used.contains(&id) {
            return Some(id);
        }
    }
    None
}

fn vip_meta(vip: &Vip, index: u32) -> VipMeta {
    let mut flags = 0;
    if vip.src_affinity {
        flags |= VIP_F_SRC_AFFINITY;
    }
    if vip.no_backend == NoBackend::Pass {
        flags |= VIP_F_NO_BACKEND_PASS;
    }
    VipMeta {
        index,
        flags,
        mode: vip.mode.number(),
        _pad: [0; 3],
    }
}

/// Address entries (one per VIP address) and fragment aliases (one per address and protocol
/// without an all-ports VIP), see `lb_common::keys::VipKey`.
fn add_shared_entries(config: &Config, plan: &mut MapContents) {
    let mut by_addr: BTreeMap<IpAddr, Vec<&Vip>> = BTreeMap::new();
    for vip in &config.vips {
        by_addr.entry(vip.id.addr).or_default().push(vip);
    }
    for (addr, vips) in by_addr {
        // `vips` is sorted by VipId, so the first is stable across reloads.
        let first = plan.vips[&vips[0].id].index;
        let echo = vips.iter().any(|v| v.icmp_echo);
        plan.entries.insert(
            VipKey::of(addr, 0, 0),
            VipMeta {
                index: first,
                flags: if echo { VIP_F_ICMP_ECHO } else { 0 },
                mode: 0,
                _pad: [0; 3],
            },
        );
        for proto in [Proto::Tcp, Proto::Udp] {
            let of_proto: Vec<&&Vip> = vips.iter().filter(|v| v.id.proto == proto).collect();
            if of_proto.is_empty() || of_proto.iter().any(|v| v.id.port == 0) {
                continue;
            }
            let target = of_proto
                .iter()
                .min_by_key(|v| v.id.port)
                .expect("non-empty");
            let mut meta = vip_meta(target, plan.vips[&target.id].index);
            meta.flags |= VIP_F_FRAG_ONLY;
            plan.entries
                .insert(VipKey::of(addr, 0, proto.number()), meta);
        }
    }
}

fn lb_config(config: &Config, net: &NetInfo) -> LbConfig {
    let idle = crate::idle_clock::IdleClock::host();
    let mut flags = CONFIG_F_READY;
    if config.vips.iter().any(|v| v.id.port == 0) {
        flags |= CONFIG_F_ANY_PORT_VIPS;
    }
    if config.continuity.is_some() {
        flags |= CONFIG_F_PEER_FLOWS;
    }
    LbConfig {
        src_v6: config
            .lb_src_v6
            .map(|a| to_words(IpAddr::V6(a)).1)
            .unwrap_or_default(),
        src_v4: config
            .lb_src_v4
            .map(|a| to_words(IpAddr::V4(a)).1[0])
            .unwrap_or_default(),
        hash_seed: config.hash_seed,
        src_mac: net.src_mac,
        gue_port: config.gue_port.to_be(),
        mtu: config.mtu.unwrap_or(net.mtu),
        flags,
        icmp_rate: config.icmp_rate,
        icmp_burst: config.icmp_burst,
        outer_ttl: config.outer_ttl,
        idle_shift: idle.map_or(0, |c| c.shift),
        udp_idle_ticks: idle.map_or(0, |c| c.ticks(config.udp_idle_timeout)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maps::FakeStore;
    use crate::maps::fake::Write;
    use crate::test_fixtures::{config, net, vip};

    fn four() -> Vec<(&'static str, u32)> {
        vec![
            ("198.51.100.1", 100),
            ("198.51.100.2", 100),
            ("198.51.100.3", 100),
            ("198.51.100.4", 100),
        ]
    }

    fn position(log: &[Write], f: impl Fn(&Write) -> bool) -> usize {
        log.iter().position(f).expect("write not found")
    }

    fn ring_share(store: &FakeStore, index: u32) -> BTreeMap<u32, u32> {
        maglev::slot_counts(&store.ring(index).unwrap())
    }

    #[test]
    fn fresh_apply_writes_backends_then_ring_then_vip_then_ready() {
        let cfg = config(vec![vip("203.0.113.10", 80, Proto::Tcp, &four())]);
        let mut r = Reconciler::adopt(FakeStore::new(8, 64)).unwrap();
        let report = r.apply(&cfg, &Overrides::default(), &net(&cfg)).unwrap();
        assert_eq!(report.vips_added, 1);
        assert_eq!(report.backends_written, 4);
        assert_eq!(report.ring_slots_written, RING_SIZE as usize);
        let log = &r.store().log;
        let last_backend = log
            .iter()
            .rposition(|w| matches!(w, Write::Backend(..)))
            .unwrap();
        let ring = position(log, |w| matches!(w, Write::Ring(..)));
        let vip = position(log, |w| matches!(w, Write::Vip(_, Some(_))));
        let ready = position(log, |w| matches!(w, Write::Config));
        assert!(last_backend < ring && ring < vip && vip < ready, "{log:?}");
        assert!(r.store().config.flags & CONFIG_F_READY != 0);
        // Every slot is owned, by the four backends, evenly.
        let share = ring_share(r.store(), 0);
        assert_eq!(share.len(), 4);
        assert!(!share.contains_key(&0));
        for n in share.values() {
            assert!((16_000..=16_800).contains(n), "{share:?}");
        }
    }

    #[test]
    fn second_identical_apply_writes_nothing() {
        let cfg = config(vec![vip("203.0.113.10", 80, Proto::Tcp, &four())]);
        let mut r = Reconciler::adopt(FakeStore::new(8, 64)).unwrap();
        r.apply(&cfg, &Overrides::default(), &net(&cfg)).unwrap();
        let n = r.store().log.len();
        let report = r.apply(&cfg, &Overrides::default(), &net(&cfg)).unwrap();
        assert!(!report.wrote_anything(), "{report:?}");
        assert_eq!(r.store().log.len(), n);
    }

    #[test]
    fn adopting_the_maps_of_a_previous_agent_keeps_ids_and_writes_nothing() {
        let cfg = config(vec![
            vip("203.0.113.10", 80, Proto::Tcp, &four()),
            vip("203.0.113.11", 53, Proto::Udp, &four()),
        ]);
        let mut first = Reconciler::adopt(FakeStore::new(8, 64)).unwrap();
        first
            .apply(&cfg, &Overrides::default(), &net(&cfg))
            .unwrap();
        let ids_before = first.backends();
        let mut store = first.store;
        store.log.clear();
        let mut second = Reconciler::adopt(store).unwrap();
        let report = second
            .apply(&cfg, &Overrides::default(), &net(&cfg))
            .unwrap();
        assert!(!report.wrote_anything(), "{report:?}");
        assert_eq!(second.backends(), ids_before);
    }

    #[test]
    fn health_down_rewrites_only_that_backends_slots_and_marks_it_down() {
        let cfg = config(vec![vip("203.0.113.10", 80, Proto::Tcp, &four())]);
        let id = cfg.vips[0].id;
        let mut r = Reconciler::adopt(FakeStore::new(8, 64)).unwrap();
        r.apply(&cfg, &Overrides::default(), &net(&cfg)).unwrap();
        let before = r.store().ring(0).unwrap();
        let victim = r.backends()[1].clone();
        let mut over = Overrides::default();
        over.down.insert((id, victim.addr));
        let report = r.apply(&cfg, &over, &net(&cfg)).unwrap();
        let after = r.store().ring(0).unwrap();
        // Exactly the changed slots were written: all of the victim's, and (Maglev's bound)
        // hardly any of the others.
        let changed = before.iter().zip(&after).filter(|(a, b)| a != b).count();
        let others_moved = before
            .iter()
            .zip(&after)
            .filter(|(a, b)| a != b && **a != victim.id)
            .count();
        assert_eq!(report.ring_slots_written, changed);
        assert_eq!(changed - others_moved, victim.slots as usize);
        assert!(
            others_moved * 100 <= RING_SIZE as usize * 3,
            "{others_moved}"
        );
        assert!(!after.contains(&victim.id));
        assert_eq!(r.store().backends[victim.id as usize].state, BACKEND_DOWN);
        // The ring moved away from it before its entry said down.
        let log = &r.store().log;
        let ring = log
            .iter()
            .rposition(|w| matches!(w, Write::Ring(..)))
            .unwrap();
        assert!(matches!(log[ring], Write::Ring(0, _)));
        // Up again: it gets its slots back, exactly.
        r.apply(&cfg, &Overrides::default(), &net(&cfg)).unwrap();
        assert_eq!(r.store().ring(0).unwrap(), before);
        assert_eq!(r.store().backends[victim.id as usize].state, BACKEND_ACTIVE);
    }

    #[test]
    fn drained_backend_leaves_the_ring_but_keeps_its_flows() {
        let mut b = four();
        b[2].1 = 0;
        let cfg = config(vec![vip("203.0.113.10", 80, Proto::Tcp, &b)]);
        let mut r = Reconciler::adopt(FakeStore::new(8, 64)).unwrap();
        r.apply(&cfg, &Overrides::default(), &net(&cfg)).unwrap();
        let drained = r
            .backends()
            .into_iter()
            .find(|v| v.addr == "198.51.100.3".parse::<IpAddr>().unwrap())
            .unwrap();
        assert_eq!(drained.entry.state, BACKEND_DRAINING);
        assert_eq!(drained.slots, 0);
        // The API's drain does the same to another backend.
        let mut over = Overrides::default();
        let other: IpAddr = "198.51.100.1".parse().unwrap();
        over.weights.insert((cfg.vips[0].id, other), 0);
        r.apply(&cfg, &over, &net(&cfg)).unwrap();
        let v = r.backends().into_iter().find(|v| v.addr == other).unwrap();
        assert_eq!((v.entry.state, v.slots), (BACKEND_DRAINING, 0));
        assert_eq!(ring_share(r.store(), 0).len(), 2);
    }

    #[test]
    fn backend_without_a_mac_stays_out_of_the_ring() {
        let cfg = config(vec![vip("203.0.113.10", 80, Proto::Tcp, &four())]);
        let mut n = net(&cfg);
        n.macs.remove(&"198.51.100.4".parse::<IpAddr>().unwrap());
        let mut r = Reconciler::adopt(FakeStore::new(8, 64)).unwrap();
        r.apply(&cfg, &Overrides::default(), &n).unwrap();
        let v = r
            .backends()
            .into_iter()
            .find(|v| v.addr == "198.51.100.4".parse::<IpAddr>().unwrap())
            .unwrap();
        assert_eq!((v.entry.state, v.slots), (BACKEND_DOWN, 0));
    }

    #[test]
    fn removing_a_vip_removes_entry_then_ring_then_backends() {
        let a = vip("203.0.113.10", 80, Proto::Tcp, &four());
        let b = vip("203.0.113.20", 80, Proto::Tcp, &[("198.51.100.9", 1)]);
        let both = config(vec![a.clone(), b]);
        let mut r = Reconciler::adopt(FakeStore::new(8, 64)).unwrap();
        r.apply(&both, &Overrides::default(), &net(&both)).unwrap();
        let index_b = r.vip_index(&both.vips[1].id).unwrap();
        let b_backend = r
            .backends()
            .into_iter()
            .find(|v| v.vip == both.vips[1].id)
            .unwrap()
            .id;
        r.store.log.clear();
        let only_a = config(vec![a]);
        let report = r
            .apply(&only_a, &Overrides::default(), &net(&only_a))
            .unwrap();
        assert_eq!(report.vips_removed, 1);
        let log = &r.store().log;
        let entry = position(log, |w| matches!(w, Write::Vip(k, None) if k.port != 0));
        let ring = position(log, |w| matches!(w, Write::Ring(i, _) if *i == index_b));
        let backend = position(
            log,
            |w| matches!(w, Write::Backend(id, _) if *id == b_backend),
        );
        assert!(entry < ring && ring < backend, "{log:?}");
        assert!(r.store().ring(index_b).unwrap().iter().all(|id| *id == 0));
        assert_eq!(r.store().backends[b_backend as usize], Backend::default());
        // Its address left the filter; the remaining VIP's is still there.
        let (_, words_b) = to_words("203.0.113.20".parse().unwrap());
        let (_, words_a) = to_words("203.0.113.10".parse().unwrap());
        let bit = |w| addr_filter_bit(&w);
        let set = |s: &FakeStore, b: u32| s.filter[(b / 64) as usize] & (1 << (b % 64)) != 0;
        assert!(set(r.store(), bit(words_a)));
        if bit(words_a) != bit(words_b) {
            assert!(!set(r.store(), bit(words_b)));
        }
    }

    #[test]
    fn address_entries_fragment_aliases_and_any_port_flag() {
        let mut web = vip("203.0.113.10", 443, Proto::Tcp, &four());
        web.icmp_echo = true;
        let web80 = vip("203.0.113.10", 80, Proto::Tcp, &four());
        let dns_all = vip("203.0.113.10", 0, Proto::Udp, &four());
        let cfg = config(vec![web, web80, dns_all]);
        let mut r = Reconciler::adopt(FakeStore::new(8, 64)).unwrap();
        r.apply(&cfg, &Overrides::default(), &net(&cfg)).unwrap();
        let s = r.store();
        let addr: IpAddr = "203.0.113.10".parse().unwrap();
        let entry = s.vips[&VipKey::of(addr, 0, 0)];
        assert_eq!(entry.flags, VIP_F_ICMP_ECHO);
        // TCP fragments go to the lowest-port TCP VIP (80).
        let tcp_alias = s.vips[&VipKey::of(addr, 0, Proto::Tcp.number())];
        assert_eq!(tcp_alias.flags & VIP_F_FRAG_ONLY, VIP_F_FRAG_ONLY);
        let id80 = VipId {
            addr,
            port: 80,
            proto: Proto::Tcp,
        };
        assert_eq!(tcp_alias.index, r.vip_index(&id80).unwrap());
        // UDP has an all-ports VIP: its own entry, no alias.
        let udp = s.vips[&VipKey::of(addr, 0, Proto::Udp.number())];
        assert_eq!(udp.flags & VIP_F_FRAG_ONLY, 0);
        assert!(s.config.flags & CONFIG_F_ANY_PORT_VIPS != 0);
        assert_eq!(s.vips.len(), 3 + 1 + 1);
    }

    #[test]
    fn a_plan_that_does_not_fit_writes_nothing() {
        let vips: Vec<Vip> = (0..9)
            .map(|i| vip(&format!("203.0.113.{}", 10 + i), 80, Proto::Tcp, &four()))
            .collect();
        let cfg = config(vips);
        let mut r = Reconciler::adopt(FakeStore::new(8, 64)).unwrap();
        let err = r
            .apply(&cfg, &Overrides::default(), &net(&cfg))
            .unwrap_err();
        assert!(matches!(
            err,
            ReconcileError::TooManyVips { needed: 9, max: 8 }
        ));
        assert!(r.store().log.is_empty());
        let many: Vec<(String, u32)> = (1..=64).map(|i| (format!("198.51.100.{i}"), 1)).collect();
        let refs: Vec<(&str, u32)> = many.iter().map(|(a, w)| (a.as_str(), *w)).collect();
        let cfg = config(vec![vip("203.0.113.10", 80, Proto::Tcp, &refs)]);
        let err = r
            .apply(&cfg, &Overrides::default(), &net(&cfg))
            .unwrap_err();
        assert!(
            matches!(err, ReconcileError::TooManyBackends { .. }),
            "{err}"
        );
        assert!(r.store().log.is_empty());
    }

    #[test]
    fn a_failed_write_marks_dirty_and_the_next_apply_converges() {
        let cfg = config(vec![vip("203.0.113.10", 80, Proto::Tcp, &four())]);
        let mut store = FakeStore::new(8, 64);
        store.fail_at = Some(5);
        let mut r = Reconciler::adopt(store).unwrap();
        assert!(r.apply(&cfg, &Overrides::default(), &net(&cfg)).is_err());
        r.store.fail_at = None;
        r.apply(&cfg, &Overrides::default(), &net(&cfg)).unwrap();
        let mut fresh = Reconciler::adopt(FakeStore::new(8, 64)).unwrap();
        fresh
            .apply(&cfg, &Overrides::default(), &net(&cfg))
            .unwrap();
        assert_eq!(r.store().vips, fresh.store().vips);
        assert_eq!(ring_share(r.store(), 0).len(), 4);
        assert!(r.store().config.flags & CONFIG_F_READY != 0);
    }

    #[test]
    fn freed_backend_ids_are_not_reused_at_once() {
        let cfg = config(vec![vip("203.0.113.10", 80, Proto::Tcp, &four())]);
        let mut r = Reconciler::adopt(FakeStore::new(8, 64)).unwrap();
        r.apply(&cfg, &Overrides::default(), &net(&cfg)).unwrap();
        let old: BTreeSet<u32> = r.backends().iter().map(|b| b.id).collect();
        let replaced = config(vec![vip(
            "203.0.113.10",
            80,
            Proto::Tcp,
            &[("198.51.100.50", 1), ("198.51.100.51", 1)],
        )]);
        r.apply(&replaced, &Overrides::default(), &net(&replaced))
            .unwrap();
        for b in r.backends() {
            assert!(!old.contains(&b.id), "id {} reused", b.id);
        }
    }
}
