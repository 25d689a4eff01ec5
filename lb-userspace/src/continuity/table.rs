//! The receiving side: peers' exceptions, held in `XLB_PEER_FLOWS` where the program finds them
//! on a flow-table miss, and mirrored here with what the map cannot say (which peer sent each,
//! which VIP and backend address it names, when it lapses).
//!
//! The agent is the table's only writer. A flow goes into its own slot or an empty one of its
//! set, never over another peer flow: a full set refuses the newcomer (counted), so a peer can
//! fill the table but never push out what other peers sent. Exceptions name backends by VIP and
//! address; each is resolved to this node's backend id and generation, and resolved again after
//! every apply, so a backend re-allocated here never inherits a peer's flows.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use lb_common::addr::to_words;
use lb_common::flows::{FLOW_WAYS, ORIGIN_PEER, first_way, set_index};
use lb_common::{FlowEntry, FlowKey, FlowSet, FlowSlot};

use super::scan::AppliedRings;
use crate::model::VipId;

/// Where the sets live: the pinned map's memory mapping, or a vector in tests.
pub trait SetStore {
    fn sets(&self) -> u32;
    fn read_set(&self, set: u32) -> FlowSet;
    fn write_set(&mut self, set: u32, value: &FlowSet);
}

impl SetStore for Vec<FlowSet> {
    fn sets(&self) -> u32 {
        self.len() as u32
    }
    fn read_set(&self, set: u32) -> FlowSet {
        self[set as usize]
    }
    fn write_set(&mut self, set: u32, value: &FlowSet) {
        self[set as usize] = *value;
    }
}

impl SetStore for crate::maps::mmap::FlowTable {
    fn sets(&self) -> u32 {
        crate::maps::mmap::FlowTable::sets(self)
    }
    fn read_set(&self, set: u32) -> FlowSet {
        self.raw_set(set)
    }
    fn write_set(&mut self, set: u32, value: &FlowSet) {
        self.write_raw_set(set, value)
    }
}

/// What exceptions resolve to here.
#[derive(Clone, Debug, Default)]
pub struct Resolve {
    /// (VIP, backend address) -> this node's entry for that backend, for backends that take
    /// existing flows.
    pub backends: HashMap<(VipId, IpAddr), FlowEntry>,
    /// The VIPs in the maps.
    pub vips: HashSet<VipId>,
}

/// The resolution table of the applied maps.
pub fn resolve_of(rings: &AppliedRings) -> Resolve {
    let backends = rings
        .backends
        .iter()
        .filter(|(_, (_, _, b))| b.accepts_existing_flows())
        .map(|(id, (vip, addr, b))| {
            let entry = FlowEntry {
                backend_id: *id,
                generation: b.generation,
            };
            ((*vip, *addr), entry)
        })
        .collect();
    let vips = rings.vips.values().map(|(vip, _)| *vip).collect();
    Resolve { backends, vips }
}

/// One exception as received: the VIP it belongs to, the backend it names, the flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Incoming {
    pub vip: VipId,
    pub backend: IpAddr,
    pub client: IpAddr,
    pub client_port: u16,
    pub dst_port: u16,
}

/// Why an exception was not installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The VIP is not in this node's maps.
    Unknown,
    /// The flow does not belong to the VIP (family or destination port).
    Mismatch,
    /// Its set of the table is full of other peer flows.
    Full,
}

/// Counts since start (monotonic), for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableCounts {
    pub applied: u64,
    pub unknown: u64,
    pub mismatch: u64,
    pub full: u64,
    pub expired: u64,
}

#[derive(Clone, Debug)]
struct Held {
    /// `None`: found in the pinned table at start, sender unknown.
    peer: Option<SocketAddr>,
    vip: VipId,
    backend: IpAddr,
    /// As installed; backend id 0 when it no longer resolves (then not in the map).
    entry: FlowEntry,
    /// The sync that last named it.
    sync: u64,
    /// Set once its sender stopped vouching for it (lost, or adopted at start).
    expires: Option<Instant>,
}

pub struct PeerTable<T: SetStore> {
    sets: T,
    seed: u32,
    held: HashMap<FlowKey, Held>,
    pub counts: TableCounts,
}

impl<T: SetStore> PeerTable<T> {
    /// An empty table over `sets` (what is already there is cleared: see [`Self::adopt`]).
    pub fn new(sets: T, seed: u32) -> Self {
        let mut t = Self {
            sets,
            seed,
            held: HashMap::new(),
            counts: TableCounts::default(),
        };
        for i in 0..t.sets.sets() {
            if t.sets.read_set(i) != FlowSet::default() {
                t.sets.write_set(i, &FlowSet::default());
            }
        }
        t
    }

    /// A table over `sets` keeping what a previous agent installed, as far as it still
    /// resolves: those entries lapse at `expires` unless a peer sends them again first.
    pub fn adopt(sets: T, rings: &AppliedRings, expires: Instant) -> Self {
        let mut t = Self {
            sets,
            seed: rings.seed,
            held: HashMap::new(),
            counts: TableCounts::default(),
        };
        for i in 0..t.sets.sets() {
            let mut set = t.sets.read_set(i);
            let mut changed = false;
            for s in &mut set.ways {
                let found = s
                    .sealed()
                    .then(|| rings.backends.get(&s.backend_id))
                    .flatten();
                match found {
                    Some((vip, addr, b)) if s.entry().honoured_by(b) => {
                        t.held.insert(
                            s.key,
                            Held {
                                peer: None,
                                vip: *vip,
                                backend: *addr,
                                entry: s.entry(),
                                sync: 0,
                                expires: Some(expires),
                            },
                        );
                    }
                    _ if *s != FlowSlot::default() => {
                        *s = FlowSlot::default();
                        changed = true;
                    }
                    _ => {}
                }
            }
            if changed {
                t.sets.write_set(i, &set);
            }
        }
        t
    }

    /// Exceptions held (installed or waiting for their backend to resolve).
    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Exceptions held per sending peer (adopted ones under `None`).
    pub fn per_peer(&self) -> HashMap<Option<SocketAddr>, usize> {
        let mut out = HashMap::new();
        for h in self.held.values() {
            *out.entry(h.peer).or_default() += 1;
        }
        out
    }

    /// Installs one exception `peer` sent in sync `sync`.
    pub fn apply(
        &mut self,
        peer: SocketAddr,
        sync: u64,
        x: &Incoming,
        resolve: &Resolve,
    ) -> Result<(), Refusal> {
        let r = self.install(peer, sync, x, resolve);
        match r {
            Ok(()) => self.counts.applied += 1,
            Err(Refusal::Unknown) => self.counts.unknown += 1,
            Err(Refusal::Mismatch) => self.counts.mismatch += 1,
            Err(Refusal::Full) => self.counts.full += 1,
        }
        r
    }

    fn install(
        &mut self,
        peer: SocketAddr,
        sync: u64,
        x: &Incoming,
        resolve: &Resolve,
    ) -> Result<(), Refusal> {
        let key = flow_key(x).ok_or(Refusal::Mismatch)?;
        if !resolve.vips.contains(&x.vip) {
            return Err(Refusal::Unknown);
        }
        // A backend that does not resolve yet (not in the ring's maps, down, its next hop
        // unknown: a node still starting) is held pending, and written once an apply resolves
        // it (`reresolve`): the exceptions a joining node gets before its backends are up are
        // the ones it needs first.
        let entry = resolve
            .backends
            .get(&(x.vip, x.backend))
            .copied()
            .unwrap_or_default();
        let held = Held {
            peer: Some(peer),
            vip: x.vip,
            backend: x.backend,
            entry,
            sync,
            expires: None,
        };
        let full = self.held.len() >= self.capacity();
        let before = match self.held.get_mut(&key) {
            Some(h) if h.entry == entry => {
                *h = held;
                return Ok(());
            }
            Some(h) => Some(h.entry),
            None if full => return Err(Refusal::Full),
            None => None,
        };
        if entry.backend_id != 0 {
            self.write(&key, entry)?;
        } else if before.is_some_and(|e| e.backend_id != 0) {
            self.erase(&key);
        }
        self.held.insert(key, held);
        Ok(())
    }

    /// Flows the table can hold (its map's slots; pending ones count too, so the mirror is as
    /// bounded as the map).
    pub fn capacity(&self) -> usize {
        lb_common::flows::flow_capacity(self.sets.sets()) as usize
    }

    /// Exceptions held whose backend does not resolve here (yet).
    pub fn pending(&self) -> usize {
        self.held
            .values()
            .filter(|h| h.entry.backend_id == 0)
            .count()
    }

    /// Ends sync `sync` of `peer`: what it held from that peer and the sync did not name is
    /// gone from the peer's flow table, so it goes here too.
    pub fn finish_sync(&mut self, peer: SocketAddr, sync: u64) -> usize {
        self.remove_where(|h| h.peer == Some(peer) && h.sync != sync)
    }

    /// `peer` stopped sending (connection lost): its exceptions stay for `hold`, the time its
    /// flows need to reach another node, which then holds them as its own.
    pub fn peer_lost(&mut self, peer: SocketAddr, now: Instant, hold: Duration) {
        for h in self.held.values_mut() {
            if h.peer == Some(peer) && h.expires.is_none() {
                h.expires = Some(now + hold);
            }
        }
    }

    /// Removes what lapsed by `now`.
    pub fn expire(&mut self, now: Instant) -> usize {
        let n = self.remove_where(|h| h.expires.is_some_and(|e| e <= now));
        self.counts.expired += n as u64;
        n
    }

    /// After an apply: every exception resolved again. One whose backend changed id or
    /// generation is rewritten; one whose backend is gone or down leaves the map (and comes
    /// back if the backend does, while its sender still names it).
    pub fn reresolve(&mut self, resolve: &Resolve) {
        let changed: Vec<(FlowKey, FlowEntry)> = self
            .held
            .iter()
            .filter_map(|(k, h)| {
                let now = resolve
                    .backends
                    .get(&(h.vip, h.backend))
                    .copied()
                    .unwrap_or_default();
                (now != h.entry).then_some((*k, now))
            })
            .collect();
        for (key, entry) in changed {
            self.erase(&key);
            let ok = entry.backend_id == 0 || self.write(&key, entry).is_ok();
            if let Some(h) = self.held.get_mut(&key) {
                h.entry = if ok { entry } else { FlowEntry::default() };
            }
        }
    }

    fn remove_where(&mut self, f: impl Fn(&Held) -> bool) -> usize {
        let gone: Vec<FlowKey> = self
            .held
            .iter()
            .filter(|(_, h)| f(h))
            .map(|(k, _)| *k)
            .collect();
        for k in &gone {
            self.erase(k);
            self.held.remove(k);
        }
        gone.len()
    }

    fn locate(&self, key: &FlowKey) -> (u32, u32) {
        let tag = key.entropy(self.seed);
        (set_index(tag, self.sets.sets()), tag)
    }

    /// Writes `key`'s slot: its own, else an empty one; never another flow's.
    fn write(&mut self, key: &FlowKey, entry: FlowEntry) -> Result<(), Refusal> {
        let (i, tag) = self.locate(key);
        let mut set = self.sets.read_set(i);
        let start = first_way(tag);
        let way = (0..FLOW_WAYS)
            .map(|n| (start + n) % FLOW_WAYS)
            .find(|&w| set.ways[w].keyed(key, tag))
            .or_else(|| {
                (0..FLOW_WAYS)
                    .map(|n| (start + n) % FLOW_WAYS)
                    .find(|&w| set.ways[w].key.family == 0)
            })
            .ok_or(Refusal::Full)?;
        set.ways[way].write_from(key, tag, entry, ORIGIN_PEER);
        self.sets.write_set(i, &set);
        Ok(())
    }

    fn erase(&mut self, key: &FlowKey) {
        let (i, tag) = self.locate(key);
        let mut set = self.sets.read_set(i);
        if let Some(s) = set.ways.iter_mut().find(|s| s.keyed(key, tag)) {
            *s = FlowSlot::default();
            self.sets.write_set(i, &set);
        }
    }

    /// Sets of the table (its capacity is `flow_capacity` of it).
    pub fn sets(&self) -> u32 {
        self.sets.sets()
    }

    #[cfg(test)]
    fn store(&self) -> &T {
        &self.sets
    }
}

/// The flow-table key of an exception, if the flow can belong to its VIP.
pub fn flow_key(x: &Incoming) -> Option<FlowKey> {
    let (family, src) = to_words(x.client);
    let (vip_family, dst) = to_words(x.vip.addr);
    if family != vip_family || (x.vip.port != 0 && x.vip.port != x.dst_port) {
        return None;
    }
    Some(FlowKey {
        src,
        dst,
        sport: x.client_port.to_be(),
        dport: x.dst_port.to_be(),
        proto: x.vip.proto.number(),
        family,
        _pad: [0; 2],
    })
}

#[cfg(test)]
mod tests {
    use lb_common::flows::flow_sets;

    use super::*;
    use crate::model::Proto;

    const SEED: u32 = 7;

    fn vip() -> VipId {
        VipId {
            addr: "203.0.113.10".parse().unwrap(),
            port: 80,
            proto: Proto::Tcp,
        }
    }

    fn peer(n: u8) -> SocketAddr {
        SocketAddr::new(IpAddr::from([198, 51, 100, n]), 7946)
    }

    fn be(n: u8) -> IpAddr {
        IpAddr::from([198, 51, 100, 100 + n])
    }

    fn x(client: u16, backend: u8) -> Incoming {
        Incoming {
            vip: vip(),
            backend: be(backend),
            client: IpAddr::from([192, 0, 2, (client % 250) as u8]),
            client_port: 10_000 + client,
            dst_port: 80,
        }
    }

    fn resolve() -> Resolve {
        let backends = (1..=3)
            .map(|n| {
                let e = FlowEntry {
                    backend_id: u32::from(n),
                    generation: 10 + u32::from(n),
                };
                ((vip(), be(n)), e)
            })
            .collect();
        Resolve {
            backends,
            vips: [vip()].into(),
        }
    }

    fn table(flows: u32) -> PeerTable<Vec<FlowSet>> {
        PeerTable::new(vec![FlowSet::default(); flow_sets(flows) as usize], SEED)
    }

    /// What the program would find for `x` (the same `FlowSet::get` it runs).
    fn found(t: &PeerTable<Vec<FlowSet>>, x: &Incoming) -> Option<FlowEntry> {
        let key = flow_key(x).unwrap();
        let tag = key.entropy(SEED);
        let set = t.store()[set_index(tag, t.sets()) as usize];
        set.get(&key, tag).map(|s| {
            assert_eq!(s.origin, ORIGIN_PEER);
            s.entry()
        })
    }

    #[test]
    fn an_exception_is_installed_under_this_nodes_id_and_generation() {
        let mut t = table(1024);
        t.apply(peer(2), 1, &x(1, 2), &resolve()).unwrap();
        assert_eq!(
            found(&t, &x(1, 2)),
            Some(FlowEntry {
                backend_id: 2,
                generation: 12
            })
        );
        assert_eq!(t.len(), 1);
        assert_eq!(t.counts.applied, 1);
    }

    #[test]
    fn unknown_vips_and_foreign_flows_are_refused_and_counted() {
        let mut t = table(1024);
        let mut other_vip = x(1, 1);
        other_vip.vip.port = 443;
        other_vip.dst_port = 443;
        assert_eq!(
            t.apply(peer(2), 1, &other_vip, &resolve()),
            Err(Refusal::Unknown)
        );
        let mut other_port = x(2, 1);
        other_port.dst_port = 81;
        assert_eq!(
            t.apply(peer(2), 1, &other_port, &resolve()),
            Err(Refusal::Mismatch)
        );
        let mut v6_client = x(3, 1);
        v6_client.client = "2001:db8::1".parse().unwrap();
        assert_eq!(
            t.apply(peer(2), 1, &v6_client, &resolve()),
            Err(Refusal::Mismatch)
        );
        assert!(t.is_empty());
        assert_eq!((t.counts.unknown, t.counts.mismatch), (1, 2));
        assert!(
            t.store().iter().all(|s| *s == FlowSet::default()),
            "no map write"
        );
    }

    #[test]
    fn an_exception_for_a_backend_not_up_yet_waits_and_is_written_once_it_resolves() {
        let mut t = table(1024);
        let mut r = resolve();
        r.backends.remove(&(vip(), be(1)));
        t.apply(peer(2), 1, &x(1, 1), &r).unwrap();
        assert_eq!((t.len(), t.pending()), (1, 1));
        assert_eq!(found(&t, &x(1, 1)), None, "nothing in the map yet");
        t.reresolve(&resolve());
        assert_eq!(t.pending(), 0);
        assert_eq!(found(&t, &x(1, 1)).map(|e| e.backend_id), Some(1));
    }

    #[test]
    fn the_mirror_is_bounded_by_the_tables_capacity() {
        // Four slots: pending exceptions count as well.
        let mut t = table(4);
        let mut r = resolve();
        r.backends.clear();
        for c in 0..4 {
            t.apply(peer(2), 1, &x(c, 1), &r).unwrap();
        }
        assert_eq!(t.apply(peer(2), 1, &x(4, 1), &r), Err(Refusal::Full));
        assert_eq!(t.len(), 4);
    }

    #[test]
    fn a_full_set_refuses_instead_of_evicting() {
        // One set: four flows fill it, the fifth is refused and the four stay.
        let mut t = table(4);
        for c in 0..4 {
            t.apply(peer(2), 1, &x(c, 1), &resolve()).unwrap();
        }
        assert_eq!(
            t.apply(peer(3), 1, &x(4, 1), &resolve()),
            Err(Refusal::Full)
        );
        for c in 0..4 {
            assert!(found(&t, &x(c, 1)).is_some());
        }
        assert_eq!(t.counts.full, 1);
    }

    #[test]
    fn a_finished_sync_drops_what_its_peer_no_longer_names() {
        let mut t = table(1024);
        let r = resolve();
        t.apply(peer(2), 1, &x(1, 1), &r).unwrap();
        t.apply(peer(2), 1, &x(2, 1), &r).unwrap();
        t.apply(peer(3), 5, &x(3, 1), &r).unwrap();
        t.apply(peer(2), 2, &x(1, 1), &r).unwrap();
        assert_eq!(t.finish_sync(peer(2), 2), 1);
        assert!(found(&t, &x(1, 1)).is_some());
        assert_eq!(found(&t, &x(2, 1)), None);
        assert!(found(&t, &x(3, 1)).is_some(), "another peer's flow stays");
    }

    #[test]
    fn a_lost_peers_exceptions_lapse_after_the_hold() {
        let mut t = table(1024);
        t.apply(peer(2), 1, &x(1, 1), &resolve()).unwrap();
        let now = Instant::now();
        t.peer_lost(peer(2), now, Duration::from_secs(10));
        assert_eq!(t.expire(now + Duration::from_secs(9)), 0);
        assert!(found(&t, &x(1, 1)).is_some());
        assert_eq!(t.expire(now + Duration::from_secs(10)), 1);
        assert_eq!(found(&t, &x(1, 1)), None);
        assert_eq!(t.counts.expired, 1);
    }

    #[test]
    fn a_backend_reallocated_here_is_resolved_again() {
        let mut t = table(1024);
        t.apply(peer(2), 1, &x(1, 1), &resolve()).unwrap();
        let mut r = resolve();
        r.backends.remove(&(vip(), be(1)));
        t.reresolve(&r);
        assert_eq!(found(&t, &x(1, 1)), None, "backend gone: out of the map");
        assert_eq!(t.len(), 1, "still held while its sender names it");
        r.backends.insert(
            (vip(), be(1)),
            FlowEntry {
                backend_id: 40,
                generation: 99,
            },
        );
        t.reresolve(&r);
        assert_eq!(
            found(&t, &x(1, 1)),
            Some(FlowEntry {
                backend_id: 40,
                generation: 99
            })
        );
    }

    #[test]
    fn adopting_keeps_what_resolves_until_it_lapses() {
        let mut t = table(1024);
        t.apply(peer(2), 1, &x(1, 1), &resolve()).unwrap();
        let sets = t.store().clone();
        let mut rings = AppliedRings {
            seed: SEED,
            ..Default::default()
        };
        let b = lb_common::values::Backend {
            state: lb_common::values::BACKEND_ACTIVE,
            generation: 11,
            ..Default::default()
        };
        rings.backends.insert(1, (vip(), be(1), b));
        let at = Instant::now() + Duration::from_secs(5);
        let mut adopted = PeerTable::adopt(sets, &rings, at);
        assert_eq!(adopted.len(), 1);
        assert!(found(&adopted, &x(1, 1)).is_some());
        assert_eq!(adopted.expire(at), 1);
        // Refreshed by a peer before it lapses: kept.
        let mut adopted = PeerTable::adopt(t.store().clone(), &rings, at);
        adopted.apply(peer(2), 3, &x(1, 1), &resolve()).unwrap();
        assert_eq!(adopted.expire(at), 0);
    }
}
