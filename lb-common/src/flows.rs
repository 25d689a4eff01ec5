//! The flow table (docs/datapath.md §4): a set-associative array of [`FlowSet`]s, each holding
//! [`FLOW_WAYS`] slots, shared by every CPU. A flow lives in the set its entropy
//! (`hash::flow_entropy`) selects, so finding it, or a place for it, touches one set: one
//! random memory access, where a hash map walks a bucket and a chain and an LRU map also
//! unlinks an evicted element from another bucket.
//!
//! The program is the only writer on a live system and takes no lock: two CPUs that write one
//! slot at once can leave a mix of both entries, so every slot carries a seal over its fields
//! ([`FlowSlot::seal_of`]) and a slot whose seal does not match is not a hit. A flow whose entry
//! was torn that way (or evicted) takes the ring's choice again, which is its backend unless the
//! ring changed in between, as after an LRU eviction.
//!
//! Eviction is CLOCK within the set: a hit marks its slot `used`; a flow without a slot takes an
//! empty one, else the first unused one, and every used slot it passes on the way loses its
//! mark. Both searches, and lookups, start at a way the flow's tag picks ([`first_way`]). A new entry starts unused, so a flood of SYNs that
//! never send a second packet replaces its own entries, not the flows that are carrying
//! traffic.
//!
//! The logic lives here, not in the program, so the agent, the test kit and the host tests
//! place and find entries exactly as the program does.

use crate::{FlowEntry, FlowKey};

/// Slots per set. Four 64-byte slots fill four consecutive cache lines of one page.
pub const FLOW_WAYS: usize = 4;

/// Sets of a table with room for `flows` entries: `flows / FLOW_WAYS` rounded up to a power of
/// two (the set index is the entropy masked), at least one.
pub const fn flow_sets(flows: u32) -> u32 {
    let sets = flows.div_ceil(FLOW_WAYS as u32);
    if sets <= 1 {
        1
    } else {
        // Saturates at 2^31 sets (2^33 flows): beyond any map the kernel allows.
        match sets.checked_next_power_of_two() {
            Some(n) => n,
            None => 1 << 31,
        }
    }
}

/// Flows a table of `sets` sets holds (saturating at `u32::MAX`, past any configurable size).
pub const fn flow_capacity(sets: u32) -> u32 {
    sets.saturating_mul(FLOW_WAYS as u32)
}

/// The set of a flow with entropy `tag` in a table of `sets` sets (a power of two).
#[inline(always)]
pub const fn set_index(tag: u32, sets: u32) -> u32 {
    tag & (sets.wrapping_sub(1))
}

/// One entry of the flow table. An empty slot is all zeroes (`key.family == 0`, which no
/// packet's key has).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowSlot {
    pub key: FlowKey,
    pub backend_id: u32,
    /// `Backend::generation` when the entry was written.
    pub generation: u32,
    /// The flow's `flow_entropy`: compared before the key, and the seal's input.
    pub tag: u32,
    /// [`FlowSlot::seal_of`] the fields above: a slot torn by two concurrent writers fails it.
    pub seal: u32,
    /// 1 once a packet found the entry since it was written or the CLOCK hand passed it.
    pub used: u32,
    /// Where the backend came from: [`ORIGIN_RING`] or [`ORIGIN_PEER`] (flow-table entries
    /// taken from a peer's exception). Not sealed: it is only shown, never acted on.
    pub origin: u8,
    pub _pad: u8,
    /// The [`idle_tick`] of the flow's last packet, kept for UDP flows while an idle timeout is
    /// set (`LbConfig::udp_idle_ticks`); 0: not stamped (TCP, an entry the agent wrote, or one
    /// of an xlb that had no such field, where these bytes were `origin`'s zero high half).
    /// Not sealed: a torn stamp only moves one flow's expiry.
    pub seen: u16,
}

/// `FlowSlot::origin` of an entry the ring chose (also every entry of an older xlb, which
/// left the field zero).
pub const ORIGIN_RING: u8 = 0;
/// `FlowSlot::origin` of a flow-table entry copied from a peer's exception.
pub const ORIGIN_PEER: u8 = 1;

/// The longest tick of the UDP idle clock, in ns (2^30, about 1.07 s): coarse enough that a
/// 16-bit stamp spans hours, fine enough for timeouts of seconds.
pub const IDLE_TICK_MAX_NS: u64 = 1 << 30;

/// The idle clock's shift for a kernel whose jiffy lasts `jiffy_ns` (`clock_getres` of
/// `CLOCK_MONOTONIC_COARSE`, the kernel's `TICK_NSEC`): the largest with
/// `jiffy_ns << shift <= IDLE_TICK_MAX_NS`, so a tick lasts between 2^29 and 2^30 ns
/// (1.024 s at HZ 250 or 1000, 0.64 s at HZ 100). The clock counts jiffies because the JIT
/// turns `bpf_jiffies64` into one load, where a clock in ns is a helper call per UDP packet.
pub const fn idle_shift(jiffy_ns: u64) -> u8 {
    // `jiffy_ns << s <= M` exactly when `2^s <= M / jiffy_ns` (rounded down).
    match IDLE_TICK_MAX_NS.checked_div(jiffy_ns) {
        Some(q) if q > 0 => q.ilog2() as u8,
        _ => 0,
    }
}

/// The idle clock's tick at `jiffies` (`bpf_jiffies64`) with `LbConfig::idle_shift`, never 0
/// (0 marks an unstamped entry): the low 16 bits of `jiffies >> shift`, tick 0 counted as 1.
#[inline(always)]
pub const fn idle_tick(jiffies: u64, shift: u8) -> u16 {
    let t = (jiffies >> (shift & 63)) as u16;
    if t == 0 { 1 } else { t }
}

/// Ticks of an idle timeout of `timeout_ns` with ticks of `tick_ns` (`jiffy_ns << shift`):
/// rounded up, so a flow expires only after a whole timeout of silence (a stamp and a later
/// tick are both truncated: a flow expires after between the timeout and the timeout plus two
/// ticks of silence). Saturates at the largest timeout a 16-bit stamp can tell from a fresh
/// one (at least 2^15 ticks of 2^29 ns: 4.9 hours).
pub const fn idle_ticks(timeout_ns: u64, tick_ns: u64) -> u16 {
    if tick_ns == 0 {
        return 0;
    }
    let t = timeout_ns.div_ceil(tick_ns);
    if t > MAX_IDLE_TICKS as u64 {
        MAX_IDLE_TICKS
    } else {
        t as u16
    }
}

/// The longest idle timeout in ticks (4.9 to 9.8 hours): half the 16-bit stamp's lap, so a
/// flow silent for between one and two timeouts is told from a fresh one. Only a flow silent
/// for about a whole lap (10 to 20 hours) can look fresh again: it keeps its entry, as every
/// UDP flow did before idle timeouts existed.
pub const MAX_IDLE_TICKS: u16 = 1 << 15;

/// Whether a flow stamped `seen` has been idle for more than `limit` ticks at tick `now`
/// (docs/datapath.md §4 "UDP idle timeout"). An unstamped entry (`seen == 0`) and a zero
/// `limit` (no timeout) never expire.
#[inline(always)]
pub const fn idle_expired(seen: u16, now: u16, limit: u16) -> bool {
    seen != 0 && limit != 0 && now.wrapping_sub(seen) > limit
}
const _: () = assert!(size_of::<FlowSlot>() == 64);

/// The element of the flow-table map: one set.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowSet {
    pub ways: [FlowSlot; FLOW_WAYS],
}
const _: () = assert!(size_of::<FlowSet>() == 256);

impl FlowSlot {
    /// The seal of an entry. Each field is multiplied by its own odd constant, so a slot that
    /// mixes two writers' backend ids, generations or tags matches with probability 2^-32; the
    /// constant term keeps an all-zero slot unsealed.
    #[inline(always)]
    pub const fn seal_of(tag: u32, backend_id: u32, generation: u32) -> u32 {
        tag.wrapping_mul(0x2c1b_3c6d)
            ^ backend_id.wrapping_mul(0x9e37_79b1)
            ^ generation.wrapping_mul(0x85eb_ca77)
            ^ 0x5851_f42d
    }

    /// Whether the slot is `key`'s (tag and key match; seal not checked).
    #[inline(always)]
    pub fn keyed(&self, key: &FlowKey, tag: u32) -> bool {
        self.tag == tag && self.key.same(key)
    }

    /// Whether the slot holds an intact entry (not empty, not torn).
    #[inline(always)]
    pub fn sealed(&self) -> bool {
        self.key.family != 0 && self.seal_matches()
    }

    /// The seal check alone: enough once the key matched a packet's (whose family is never 0).
    #[inline(always)]
    fn seal_matches(&self) -> bool {
        self.seal == Self::seal_of(self.tag, self.backend_id, self.generation)
    }

    #[inline(always)]
    pub fn entry(&self) -> FlowEntry {
        FlowEntry {
            backend_id: self.backend_id,
            generation: self.generation,
        }
    }

    /// Writes `key`'s entry, unused, chosen by the ring.
    #[inline(always)]
    pub fn write(&mut self, key: &FlowKey, tag: u32, entry: FlowEntry) {
        self.write_from(key, tag, entry, ORIGIN_RING)
    }

    /// Writes `key`'s entry, unused, with its `origin`.
    #[inline(always)]
    pub fn write_from(&mut self, key: &FlowKey, tag: u32, entry: FlowEntry, origin: u8) {
        self.origin = origin;
        self._pad = 0;
        self.seen = 0;
        self.key = *key;
        self.backend_id = entry.backend_id;
        self.generation = entry.generation;
        self.tag = tag;
        self.seal = Self::seal_of(tag, entry.backend_id, entry.generation);
        self.used = 0;
    }
}

/// The way a flow's probes start at (`tag`'s top bits; the set index uses its low bits). The
/// flows of one set start at different ways, and a flow is written at its start way whenever
/// that slot is free or unused, so a lookup usually ends at its first probe: one cache line.
#[inline(always)]
pub const fn first_way(tag: u32) -> usize {
    (tag >> 30) as usize % FLOW_WAYS
}

impl FlowSet {
    /// `key`'s intact slot, probing from [`first_way`]. `key` is a packet's (family not 0).
    #[inline(always)]
    pub fn find(&mut self, key: &FlowKey, tag: u32) -> Option<&mut FlowSlot> {
        let way = self.way_of(key, tag);
        self.ways.get_mut(way)
    }

    /// [`FlowSet::find`] for a reader that never writes the set (the peer table).
    #[inline(always)]
    pub fn get(&self, key: &FlowKey, tag: u32) -> Option<&FlowSlot> {
        self.ways.get(self.way_of(key, tag))
    }

    /// The way of `key`'s intact slot, or `FLOW_WAYS` when it has none.
    #[inline(always)]
    fn way_of(&self, key: &FlowKey, tag: u32) -> usize {
        let start = first_way(tag);
        let mut way = FLOW_WAYS;
        for i in 0..FLOW_WAYS {
            let w = (start + i) % FLOW_WAYS;
            let s = &self.ways[w];
            if s.keyed(key, tag) && s.seal_matches() {
                way = w;
                break;
            }
        }
        way
    }

    /// Where `key`'s entry goes, probing from [`first_way`]: its own slot (intact or torn),
    /// else the first empty one, else the CLOCK victim (module docs). Clears the `used` marks
    /// the hand passes.
    #[inline(always)]
    pub fn place(&mut self, key: &FlowKey, tag: u32) -> &mut FlowSlot {
        self.place_evicting(key, tag).0
    }

    /// [`FlowSet::place`], and whether the slot holds another flow's entry that the write
    /// will evict (every slot of the set was taken: the CLOCK hand chose the victim).
    #[inline(always)]
    pub fn place_evicting(&mut self, key: &FlowKey, tag: u32) -> (&mut FlowSlot, bool) {
        let start = first_way(tag);
        let mut way = FLOW_WAYS;
        for i in 0..FLOW_WAYS {
            let w = (start + i) % FLOW_WAYS;
            let s = &self.ways[w];
            if s.keyed(key, tag) {
                way = w;
                break;
            }
            if way == FLOW_WAYS && s.key.family == 0 {
                way = w;
            }
        }
        let evicting = way == FLOW_WAYS;
        if evicting {
            way = start;
            for i in 0..FLOW_WAYS {
                let w = (start + i) % FLOW_WAYS;
                let s = &mut self.ways[w];
                if s.used == 0 {
                    way = w;
                    break;
                }
                s.used = 0;
            }
        }
        (&mut self.ways[way % FLOW_WAYS], evicting)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u32) -> FlowKey {
        FlowKey {
            src: [n, 0, 0, 0],
            dst: [0xcb00_710a, 0, 0, 0],
            sport: 4000,
            dport: 80,
            proto: 6,
            family: 4,
            _pad: [0; 2],
        }
    }

    fn entry(backend_id: u32) -> FlowEntry {
        FlowEntry {
            backend_id,
            generation: 7,
        }
    }

    /// Inserts `n` with tag `tag`, as the program's `remember` does.
    fn insert(set: &mut FlowSet, n: u32, tag: u32, backend: u32) {
        set.place(&key(n), tag).write(&key(n), tag, entry(backend));
    }

    #[test]
    fn sizes_round_up_to_powers_of_two() {
        assert_eq!(flow_sets(0), 1);
        assert_eq!(flow_sets(4), 1);
        assert_eq!(flow_sets(5), 2);
        assert_eq!(flow_sets(1 << 20), 1 << 18);
        assert_eq!(flow_sets(1_000_000), 1 << 18);
        assert_eq!(flow_sets(u32::MAX), 1 << 30);
        assert_eq!(flow_capacity(flow_sets(1_000_000)), 1 << 20);
        assert_eq!(flow_capacity(1 << 30), u32::MAX);
        assert_eq!(set_index(0xdead_beef, 1 << 18), 0xdead_beef & 0x3_ffff);
        assert_eq!(set_index(0xdead_beef, 1), 0);
    }

    #[test]
    fn fills_empty_slots_before_evicting() {
        let mut set = FlowSet::default();
        for n in 0..FLOW_WAYS as u32 {
            insert(&mut set, n, 0xc000_0000 | n, 10 + n);
        }
        for n in 0..FLOW_WAYS as u32 {
            let s = set
                .find(&key(n), 0xc000_0000 | n)
                .expect("every flow has a slot");
            assert_eq!(s.entry(), entry(10 + n));
        }
    }

    #[test]
    fn flows_sit_at_their_first_way_when_it_is_free() {
        let mut set = FlowSet::default();
        for n in 0..FLOW_WAYS as u32 {
            insert(&mut set, n, n << 30, 10 + n);
        }
        for n in 0..FLOW_WAYS {
            assert_eq!(set.ways[n].key, key(n as u32));
        }
        // Two flows with one first way: the second takes the next free way.
        let mut set = FlowSet::default();
        insert(&mut set, 1, 2 << 30, 10);
        insert(&mut set, 2, 2 << 30 | 1, 11);
        assert_eq!((set.ways[2].key, set.ways[3].key), (key(1), key(2)));
    }

    #[test]
    fn a_rewrite_reuses_the_flows_own_slot() {
        let mut set = FlowSet::default();
        insert(&mut set, 1, 5, 10);
        insert(&mut set, 2, 6, 11);
        insert(&mut set, 1, 5, 12);
        let held: u32 = set.ways.iter().filter(|s| s.key == key(1)).count() as u32;
        assert_eq!(held, 1, "one slot per flow");
        assert_eq!(set.find(&key(1), 5).unwrap().backend_id, 12);
    }

    #[test]
    fn used_flows_survive_a_flood_of_new_ones() {
        let mut set = FlowSet::default();
        // Three flows carrying traffic (a second packet found each), one that never did.
        for n in 0..4 {
            insert(&mut set, n, n, 10 + n);
        }
        for n in 0..3 {
            set.find(&key(n), n).unwrap().used = 1;
        }
        // Single-packet flows (a SYN flood) replace each other, never the used flows, as long
        // as the used flows keep getting packets between two floods' passes of the hand.
        for n in 100..200 {
            insert(&mut set, n, n << 30 | n, 0);
            for k in 0..3 {
                set.find(&key(k), k).expect("used flow kept").used = 1;
            }
        }
        assert!(
            set.find(&key(3), 3).is_none(),
            "the unused flow was evicted"
        );
    }

    #[test]
    fn the_hand_clears_marks_and_evicts_when_every_slot_is_used() {
        let mut set = FlowSet::default();
        for n in 0..4 {
            insert(&mut set, n, n, 10 + n);
            set.find(&key(n), n).unwrap().used = 1;
        }
        // Tag 0 starts the hand at way 0: every slot is used, so it clears all four and takes
        // way 0.
        insert(&mut set, 50, 0, 60);
        assert_eq!(set.ways[0].key, key(50));
        assert!(set.ways[1..].iter().all(|s| s.used == 0));
        // Next, way 1 is unused: the hand (start 1) takes it without touching the others.
        set.ways[2].used = 1;
        insert(&mut set, 51, 1 << 30, 61);
        assert_eq!(set.ways[1].key, key(51));
        assert_eq!(set.ways[2].used, 1);
    }

    #[test]
    fn torn_or_empty_slots_are_no_hits() {
        let mut set = FlowSet::default();
        assert!(set.find(&FlowKey::default(), 0).is_none(), "zeroed slot");
        insert(&mut set, 1, 9, 10);
        set.ways[0].backend_id = 11; // another writer's backend id, this writer's seal
        assert!(set.find(&key(1), 9).is_none());
        // The flow's next entry overwrites the torn slot instead of taking a second one.
        insert(&mut set, 1, 9, 12);
        assert_eq!(set.find(&key(1), 9).unwrap().backend_id, 12);
        assert_eq!(set.ways.iter().filter(|s| s.key == key(1)).count(), 1);
    }

    #[test]
    fn a_tag_match_alone_is_no_hit() {
        let mut set = FlowSet::default();
        insert(&mut set, 1, 9, 10);
        assert!(set.find(&key(2), 9).is_none());
        assert!(set.find(&key(1), 8).is_none());
    }

    #[test]
    fn a_full_set_reports_its_eviction() {
        let mut set = FlowSet::default();
        for n in 0..FLOW_WAYS as u32 {
            let (slot, evicts) = set.place_evicting(&key(n), n << 30);
            assert!(!evicts, "an empty slot is no eviction");
            slot.write(&key(n), n << 30, entry(10));
        }
        let (_, evicts) = set.place_evicting(&key(1), 1 << 30);
        assert!(!evicts, "the flow's own slot is no eviction");
        let (slot, evicts) = set.place_evicting(&key(9), 0);
        assert!(evicts);
        assert_eq!(slot.key, key(0), "the CLOCK victim");
    }

    #[test]
    fn idle_ticks_round_up_and_saturate() {
        // HZ 250: a jiffy of 4 ms, 256 jiffies a tick (1.024 s).
        assert_eq!(idle_shift(4_000_000), 8);
        assert_eq!(idle_shift(1_000_000), 10, "HZ 1000");
        assert_eq!(idle_shift(10_000_000), 6, "HZ 100: 0.64 s");
        assert_eq!(idle_shift(3_333_333), 8, "HZ 300: 0.85 s");
        assert_eq!(idle_shift(0), 0);
        assert_eq!(idle_shift(IDLE_TICK_MAX_NS * 2), 0);
        for hz in [100u64, 250, 300, 1000] {
            let jiffy = 1_000_000_000 / hz;
            let tick = jiffy << idle_shift(jiffy);
            assert!(
                tick <= IDLE_TICK_MAX_NS && tick > IDLE_TICK_MAX_NS / 2,
                "HZ {hz}"
            );
            // The longest configurable timeout (4 h) fits without saturating.
            assert!(idle_ticks(4 * 3600 * 1_000_000_000, tick) < MAX_IDLE_TICKS);
        }
        let tick = 4_000_000u64 << 8;
        assert_eq!(idle_ticks(0, tick), 0);
        assert_eq!(idle_ticks(1, tick), 1);
        assert_eq!(idle_ticks(tick, tick), 1);
        assert_eq!(idle_ticks(tick + 1, tick), 2);
        assert_eq!(idle_ticks(30_000_000_000, tick), 30); // 30 s
        assert_eq!(idle_ticks(u64::MAX, tick), MAX_IDLE_TICKS);
        assert_eq!(idle_ticks(30, 0), 0, "no clock, no timeout");
        assert_eq!(idle_tick(0, 8), 1, "tick 0 is stamped 1");
        assert_eq!(idle_tick(5 * 256 + 7, 8), 5);
        assert_eq!(idle_tick((1 << 16) * 256, 8), 1, "wraps, never 0");
    }

    #[test]
    fn expiry_is_strictly_past_the_limit_and_survives_the_wrap() {
        assert!(!idle_expired(100, 128, 28));
        assert!(idle_expired(100, 129, 28));
        assert!(
            !idle_expired(0, 60_000, 28),
            "unstamped entries never expire"
        );
        assert!(!idle_expired(100, 60_000, 0), "no timeout");
        // The tick counter wrapped between the stamp and now.
        assert!(!idle_expired(65_530, 20, 28));
        assert!(idle_expired(65_530, 30, 28));
    }
}
