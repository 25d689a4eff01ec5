//! Array maps created with `BPF_F_MMAPABLE`, memory-mapped: reading or rewriting a whole table
//! is a memory copy instead of a syscall per element: the ring map ([`RingTable`]) and the flow
//! table ([`FlowTable`]), for the agent, `xlb inspect`, the test kit and the benchmarks.

use std::os::fd::{AsFd, AsRawFd};

use aya::maps::MapData;
use lb_common::{
    FlowEntry, FlowKey, FlowSet, flows,
    limits::{RING_SIZE, RING_SLOTS_PER_ENTRY},
    map_names,
};
use memmap2::{MmapOptions, MmapRaw};

use super::{MapError, Result};

/// One mapping of an array map's value area (elements back to back, `value_size` apart).
pub struct ArrayMmap {
    mmap: MmapRaw,
    _map: MapData,
    entries: u32,
}

impl ArrayMmap {
    /// Maps `map` (named `name`), refusing one whose values are not `value_size` bytes: a map
    /// of another layout version.
    pub fn new(name: &'static str, map: MapData, value_size: u32) -> Result<Self> {
        let info = map.info().map_err(|e| MapError::new(name, "info", e))?;
        if info.value_size() != value_size {
            return Err(MapError::new(
                name,
                "info",
                format!(
                    "value size {} B, expected {value_size} B (a map of another layout version)",
                    info.value_size()
                ),
            ));
        }
        let entries = info.max_entries();
        // The exact value area, no page arithmetic here: the kernel rounds the mapping up to its
        // own page size (4 KiB, or 16/64 KiB on some arm64 kernels), as it rounded the map.
        let len = entries as usize * value_size as usize;
        let mmap = MmapOptions::new()
            .len(len)
            .map_raw(map.fd().as_fd().as_raw_fd())
            .map_err(|e| {
                MapError::new(
                    name,
                    "mmap",
                    format!("{e} (the map must be created with BPF_F_MMAPABLE)"),
                )
            })?;
        Ok(Self {
            mmap,
            _map: map,
            entries,
        })
    }

    pub fn entries(&self) -> u32 {
        self.entries
    }

    /// The value area as `T`s (`T` must be the element type, or a divisor of it for flat
    /// views such as the ring's u32 slots).
    pub fn as_ptr<T>(&self) -> *mut T {
        self.mmap.as_mut_ptr().cast()
    }
}

/// A handle of its own on the array map `map` of a loaded program.
fn second_handle(name: &'static str, map: &aya::maps::Map) -> Result<MapData> {
    let aya::maps::Map::Array(data) = map else {
        return Err(MapError::new(name, "open", "not an array map"));
    };
    let fd = data
        .fd()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| MapError::new(name, "open", e))?;
    MapData::from_fd(fd).map_err(|e| MapError::new(name, "open", e))
}

/// The ring map, memory-mapped (`BPF_F_MMAPABLE`): reading or rewriting a 65537-slot table is
/// a memory copy instead of 65537 syscalls, which is what makes adopting hundreds of VIPs on
/// restart, and rebuilding a ring after a health change, fast.
/// Its elements are pairs of slots (`limits::RING_SLOTS_PER_ENTRY`) laid out back to back, so
/// the mapping reads as one flat array of u32 slots.
pub struct RingTable {
    _m: ArrayMmap,
    ptr: *mut u32,
    /// Slots the map holds (elements x slots per element).
    slots: u32,
}

// SAFETY: `ptr` points into the mapping `_m` owns; accessed only through `&self`/`&mut self`.
unsafe impl Send for RingTable {}
unsafe impl Sync for RingTable {}

impl RingTable {
    pub fn new(map: MapData) -> Result<Self> {
        let m = ArrayMmap::new(map_names::RING, map, 4 * RING_SLOTS_PER_ENTRY)?;
        Ok(Self {
            ptr: m.as_ptr(),
            slots: m.entries().saturating_mul(RING_SLOTS_PER_ENTRY),
            _m: m,
        })
    }

    /// A second mapping of a loaded program's ring map (the program keeps its own handle).
    pub fn of(map: &aya::maps::Map) -> Result<Self> {
        Self::new(second_handle(map_names::RING, map)?)
    }

    /// Slots the map holds.
    pub fn slots(&self) -> u32 {
        self.slots
    }

    fn vip_range(&self, vip_index: u32) -> Result<std::ops::Range<usize>> {
        let start = vip_index as usize * RING_SIZE as usize;
        let end = start + RING_SIZE as usize;
        if end > self.slots as usize {
            return Err(MapError::new(
                map_names::RING,
                "access",
                format!(
                    "VIP index {vip_index} beyond the ring map's {} slots",
                    self.slots
                ),
            ));
        }
        Ok(start..end)
    }

    /// VIP `vip_index`'s table, `RING_SIZE` ids.
    pub fn read(&self, vip_index: u32) -> Result<Vec<u32>> {
        let r = self.vip_range(vip_index)?;
        // Volatile: the kernel side may be reading concurrently; each slot is one aligned u32.
        Ok(r.map(|i| unsafe { self.ptr.add(i).read_volatile() })
            .collect())
    }

    /// One slot of VIP `vip_index`'s table.
    pub fn slot(&self, vip_index: u32, slot: u32) -> Result<u32> {
        let r = self.vip_range(vip_index)?;
        if slot >= RING_SIZE {
            return Err(MapError::new(
                map_names::RING,
                "lookup",
                format!("slot {slot}"),
            ));
        }
        // SAFETY: in range (checked above); see `read`.
        Ok(unsafe { self.ptr.add(r.start + slot as usize).read_volatile() })
    }

    /// Writes `(slot, id)` pairs of VIP `vip_index`'s table.
    pub fn write(&mut self, vip_index: u32, slots: &[(u32, u32)]) -> Result<()> {
        let r = self.vip_range(vip_index)?;
        for &(slot, id) in slots {
            if slot >= RING_SIZE {
                return Err(MapError::new(
                    map_names::RING,
                    "update",
                    format!("slot {slot}"),
                ));
            }
            // SAFETY: in range (checked above); aligned u32 stores are atomic, so the program
            // sees either the old or the new id in a slot, never a torn value.
            unsafe { self.ptr.add(r.start + slot as usize).write_volatile(id) };
        }
        Ok(())
    }
}

/// The flow table (`lb_common::flows`) as the program sees it. Reads copy one set at a time, so
/// a set the program rewrites meanwhile reads as old or new slots, or as a torn slot that fails
/// its seal and is skipped, as the program would.
pub struct FlowTable {
    m: ArrayMmap,
}

impl FlowTable {
    pub fn new(map: MapData) -> Result<Self> {
        Self::named(map_names::FLOWS, map)
    }

    /// A table of the flow table's layout under another name (`map_names::PEER_FLOWS`).
    pub fn named(name: &'static str, map: MapData) -> Result<Self> {
        let m = ArrayMmap::new(name, map, size_of::<FlowSet>() as u32)?;
        Ok(Self { m })
    }

    /// A second mapping of a loaded program's flow map (the program keeps its own handle).
    pub fn of(map: &aya::maps::Map) -> Result<Self> {
        Self::new(second_handle(map_names::FLOWS, map)?)
    }

    /// A second mapping of a loaded program's peer-exception map.
    pub fn peers_of(map: &aya::maps::Map) -> Result<Self> {
        Self::named(
            map_names::PEER_FLOWS,
            second_handle(map_names::PEER_FLOWS, map)?,
        )
    }

    /// Intact entries (reads the whole table).
    pub fn count(&self) -> usize {
        (0..self.sets())
            .map(|i| self.read(i).ways.iter().filter(|s| s.sealed()).count())
            .sum()
    }

    pub fn sets(&self) -> u32 {
        self.m.entries()
    }

    /// Flows the table holds at most.
    pub fn capacity(&self) -> u32 {
        flows::flow_capacity(self.sets())
    }

    fn read(&self, set: u32) -> FlowSet {
        assert!(set < self.sets());
        // SAFETY: in range; volatile because the program writes the table concurrently.
        unsafe { self.m.as_ptr::<FlowSet>().add(set as usize).read_volatile() }
    }

    fn write(&mut self, set: u32, value: &FlowSet) {
        assert!(set < self.sets());
        // SAFETY: in range.
        unsafe {
            self.m
                .as_ptr::<FlowSet>()
                .add(set as usize)
                .write_volatile(*value)
        }
    }

    fn set_of(&self, key: &FlowKey, seed: u32) -> (u32, u32) {
        let tag = key.entropy(seed);
        (flows::set_index(tag, self.sets()), tag)
    }

    /// `key`'s intact entry; `seed` is `LbConfig::hash_seed`.
    pub fn get(&self, key: &FlowKey, seed: u32) -> Option<FlowEntry> {
        let (i, tag) = self.set_of(key, seed);
        self.read(i).find(key, tag).map(|s| s.entry())
    }

    /// `key`'s intact entry's `origin` (`flows::ORIGIN_*`).
    pub fn origin(&self, key: &FlowKey, seed: u32) -> Option<u8> {
        let (i, tag) = self.set_of(key, seed);
        self.read(i).find(key, tag).map(|s| s.origin)
    }

    /// Writes `key`'s entry where the program would (its own slot, an empty one, or the CLOCK
    /// victim), unused. For tests and benchmarks: on a live system only the program writes.
    pub fn insert(&mut self, key: &FlowKey, seed: u32, entry: FlowEntry) {
        let (i, tag) = self.set_of(key, seed);
        let mut set = self.read(i);
        set.place(key, tag).write(key, tag, entry);
        self.write(i, &set);
    }

    /// Empties `key`'s slot, as an eviction does. Returns whether it had one.
    pub fn remove(&mut self, key: &FlowKey, seed: u32) -> bool {
        let (i, tag) = self.set_of(key, seed);
        let mut set = self.read(i);
        let Some(slot) = set.ways.iter_mut().find(|s| s.keyed(key, tag)) else {
            return false;
        };
        *slot = Default::default();
        self.write(i, &set);
        true
    }

    /// Up to `limit` intact entries, in table order.
    pub fn entries(&self, limit: usize) -> Vec<(FlowKey, FlowEntry)> {
        let mut out = Vec::new();
        for i in 0..self.sets() {
            if out.len() >= limit {
                break;
            }
            let set = self.read(i);
            out.extend(
                set.ways
                    .iter()
                    .filter(|s| s.sealed())
                    .map(|s| (s.key, s.entry()))
                    .take(limit - out.len()),
            );
        }
        out
    }

    /// Every slot of set `set`, as stored (tests).
    pub fn raw_set(&self, set: u32) -> FlowSet {
        self.read(set)
    }

    /// Overwrites set `set` (tests).
    pub fn write_raw_set(&mut self, set: u32, value: &FlowSet) {
        self.write(set, value);
    }

    /// The set `key` lives in and its tag.
    pub fn locate(&self, key: &FlowKey, seed: u32) -> (u32, u32) {
        self.set_of(key, seed)
    }
}
