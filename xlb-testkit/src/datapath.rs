//! [`Datapath`]: one loaded (never attached) instance of the XDP program with typed access to
//! its maps, run packet by packet through `BPF_PROG_TEST_RUN`.

use std::net::IpAddr;

use aya::{
    Ebpf,
    maps::{Array, HashMap, MapData, MapError, PerCpuArray, PerCpuValues},
    programs::{ProgramError, TestRun, TestRunOptions, Xdp},
    util::nr_cpus,
};
use lb_common::{
    Backend, FlowEntry, FlowKey, FlowSet, LbConfig, TrafficStats, VipKey, VipMeta, addr,
    hash::addr_filter_bit,
    limits::RING_SIZE,
    map_names,
    stats::{COUNTER_SLOTS, GlobalStats},
    values::{CONFIG_F_READY, IcmpBucket},
};

use lb_userspace::loader::{self, LoadError, LoadOptions};
use lb_userspace::maps::mmap::{FlowTable, RingTable};

/// Headroom the output buffer leaves for encapsulation (XDP_PACKET_HEADROOM).
const OUT_SLACK: usize = 256;

/// Small map sizes for tests.
pub const TEST_LOAD_OPTIONS: LoadOptions = LoadOptions {
    max_vips: 8,
    max_backends: 64,
    flow_table_size: 4096,
    peer_flows: 1024,
};

/// A loaded program and its maps.
pub struct Datapath {
    ebpf: Ebpf,
    /// The ring and flow maps, memory-mapped as the agent maps them.
    ring: RingTable,
    flows: FlowTable,
    /// The peer-exception table, mapped as the agent maps it.
    peers: FlowTable,
    cpus: usize,
    /// VIP index -> (mode, flags) of its main entry: backends carry their VIP's mode and flags,
    /// which the agent writes with every backend entry; this fixture does the same.
    vip_modes: std::collections::HashMap<u32, (u8, u32)>,
}

/// The message of a datapath test that cannot load the program.
pub const NEED_ROOT: &str = "datapath tests need root with CAP_BPF: run `sudo -E cargo xtask test`";

impl Datapath {
    /// Loads the embedded program with [`TEST_LOAD_OPTIONS`]. Panics, never skips, when that is
    /// impossible: a test that silently does nothing would hide a broken datapath.
    pub fn new() -> Self {
        Self::with_options(&TEST_LOAD_OPTIONS)
    }

    /// [`Datapath::new`] with other map sizes.
    pub fn with_options(opts: &LoadOptions) -> Self {
        match Self::try_new(opts) {
            Ok(dp) => dp,
            Err(e @ LoadError::PermissionDenied { .. }) => panic!("{NEED_ROOT}\n({e})"),
            Err(e) => panic!("cannot load the xlb XDP program: {e}"),
        }
    }

    pub fn try_new(opts: &LoadOptions) -> Result<Self, LoadError> {
        let ebpf = loader::load(opts)?;
        let map = |name: &str| {
            ebpf.map(name)
                .ok_or_else(|| LoadError::InvalidOptions(format!("no map {name} in the object")))
        };
        let mapped = |e: lb_userspace::maps::MapError| LoadError::InvalidOptions(e.to_string());
        let ring = RingTable::of(map(map_names::RING)?).map_err(mapped)?;
        let flows = FlowTable::of(map(map_names::FLOWS)?).map_err(mapped)?;
        let peers = FlowTable::peers_of(map(map_names::PEER_FLOWS)?).map_err(mapped)?;
        let cpus =
            nr_cpus().map_err(|(what, e)| LoadError::InvalidOptions(format!("{what}: {e}")))?;
        Ok(Datapath {
            ebpf,
            ring,
            flows,
            peers,
            cpus,
            vip_modes: Default::default(),
        })
    }

    fn map(&mut self, name: &str) -> &mut aya::maps::Map {
        self.ebpf
            .map_mut(name)
            .unwrap_or_else(|| panic!("map {name} is missing from the eBPF object"))
    }

    fn vips(&mut self) -> HashMap<&mut MapData, VipKey, VipMeta> {
        HashMap::try_from(self.map(map_names::VIPS)).expect("VIPS map type")
    }

    // ---- configuration -----------------------------------------------------------------------

    /// Writes the config entry as is (set `CONFIG_F_READY` in `flags` to make it live; see
    /// [`Datapath::set_ready_config`]).
    pub fn set_config(&mut self, cfg: LbConfig) {
        let mut m: Array<_, LbConfig> =
            Array::try_from(self.map(map_names::CONFIG)).expect("CONFIG map type");
        m.set(0, cfg, 0).expect("write config");
    }

    /// Writes `cfg` with `CONFIG_F_READY` added.
    pub fn set_ready_config(&mut self, mut cfg: LbConfig) {
        cfg.flags |= CONFIG_F_READY;
        self.set_config(cfg);
    }

    pub fn config(&mut self) -> LbConfig {
        let m: Array<_, LbConfig> =
            Array::try_from(self.map(map_names::CONFIG)).expect("CONFIG map type");
        m.get(&0, 0).expect("read config")
    }

    /// Writes a raw VIP-map entry.
    pub fn set_vip_entry(&mut self, addr: IpAddr, port: u16, proto: u8, meta: VipMeta) {
        let key = VipKey::of(addr, port, proto);
        self.vips().insert(key, meta, 0).expect("write VIP entry");
    }

    pub fn remove_vip_entry(&mut self, addr: IpAddr, port: u16, proto: u8) {
        let key = VipKey::of(addr, port, proto);
        self.vips().remove(&key).expect("remove VIP entry");
    }

    pub fn vip_entry(&mut self, addr: IpAddr, port: u16, proto: u8) -> Option<VipMeta> {
        let key = VipKey::of(addr, port, proto);
        match self.vips().get(&key, 0) {
            Ok(v) => Some(v),
            Err(MapError::KeyNotFound) => None,
            Err(e) => panic!("read VIP entry: {e}"),
        }
    }

    /// Adds a VIP `(addr, port, proto)` (port in host order, 0 = all ports) the way the agent
    /// does: the address entry `(addr, 0, 0)` (created with `index` and no flags if absent) and
    /// the address pre-filter bit, then the VIP entry.
    pub fn add_vip(
        &mut self,
        addr: IpAddr,
        port: u16,
        proto: u8,
        mode: u8,
        flags: u32,
        index: u32,
    ) {
        self.ensure_address(addr, index);
        self.set_vip_entry(
            addr,
            port,
            proto,
            VipMeta {
                index,
                flags,
                mode,
                _pad: [0; 3],
            },
        );
        if flags & lb_common::values::VIP_F_FRAG_ONLY == 0 {
            self.vip_modes.insert(index, (mode, flags));
            // Backends installed before their VIP get its mode and flags now.
            let ids: Vec<u32> = (1..self.max_backends())
                .filter(|id| {
                    let b = self.backend(*id);
                    b.state != lb_common::values::BACKEND_EMPTY && b.vip_index == index
                })
                .collect();
            for id in ids {
                let b = self.backend(id);
                self.set_backend(id, b);
            }
        }
    }

    /// The `VIP_F_FRAG_ONLY` entry `(addr, 0, proto)` routing fragments to VIP `index`.
    pub fn add_frag_alias(&mut self, addr: IpAddr, proto: u8, mode: u8, flags: u32, index: u32) {
        self.add_vip(
            addr,
            0,
            proto,
            mode,
            flags | lb_common::values::VIP_F_FRAG_ONLY,
            index,
        );
    }

    /// Writes the address entry `(addr, 0, 0)` with `flags` (e.g. `VIP_F_ICMP_ECHO`) and sets
    /// the pre-filter bit.
    pub fn set_address(&mut self, addr: IpAddr, flags: u32, index: u32) {
        self.set_filter_bit(addr);
        self.set_vip_entry(
            addr,
            0,
            0,
            VipMeta {
                index,
                flags,
                mode: 0,
                _pad: [0; 3],
            },
        );
    }

    fn ensure_address(&mut self, addr: IpAddr, index: u32) {
        if self.vip_entry(addr, 0, 0).is_none() {
            self.set_address(addr, 0, index);
        } else {
            self.set_filter_bit(addr);
        }
    }

    /// Sets the `ADDR_FILTER` bit of `addr` (word `bit / 64`, bit `bit % 64`).
    pub fn set_filter_bit(&mut self, addr: IpAddr) {
        let (_, words) = addr::to_words(addr);
        let bit = addr_filter_bit(&words);
        let mut m: Array<_, u64> =
            Array::try_from(self.map(map_names::ADDR_FILTER)).expect("ADDR_FILTER map type");
        let w = m.get(&(bit / 64), 0).expect("read filter word");
        m.set(bit / 64, w | (1u64 << (bit % 64)), 0)
            .expect("write filter word");
    }

    fn max_backends(&mut self) -> u32 {
        let m: Array<_, Backend> =
            Array::try_from(self.map(map_names::BACKENDS)).expect("BACKENDS map type");
        m.len()
    }

    /// Writes a backend entry, with the mode and flags of its VIP if that VIP is installed
    /// (as the agent does). A test that wants other values writes them after the VIP.
    pub fn set_backend(&mut self, id: u32, mut backend: Backend) {
        if let Some((mode, flags)) = self.vip_modes.get(&backend.vip_index) {
            backend.mode = *mode;
            backend.vip_flags = *flags as u16;
        }
        let mut m: Array<_, Backend> =
            Array::try_from(self.map(map_names::BACKENDS)).expect("BACKENDS map type");
        m.set(id, backend, 0).expect("write backend");
    }

    pub fn backend(&mut self, id: u32) -> Backend {
        let m: Array<_, Backend> =
            Array::try_from(self.map(map_names::BACKENDS)).expect("BACKENDS map type");
        m.get(&id, 0).expect("read backend")
    }

    /// Writes every slot of VIP `vip_index`'s ring with `id(slot)`.
    pub fn fill_ring(&mut self, vip_index: u32, id: impl Fn(u32) -> u32) {
        let slots: Vec<(u32, u32)> = (0..RING_SIZE).map(|s| (s, id(s))).collect();
        self.ring.write(vip_index, &slots).expect("write ring");
    }

    /// Writes VIP `vip_index`'s ring from a full table of `RING_SIZE` ids.
    pub fn set_ring(&mut self, vip_index: u32, ids: &[u32]) {
        assert_eq!(ids.len(), RING_SIZE as usize, "a ring has RING_SIZE slots");
        self.fill_ring(vip_index, |slot| ids[slot as usize]);
    }

    /// Writes one ring slot.
    pub fn set_slot(&mut self, vip_index: u32, slot: u32, id: u32) {
        self.ring
            .write(vip_index, &[(slot, id)])
            .expect("write ring slot");
    }

    pub fn slot(&mut self, vip_index: u32, slot: u32) -> u32 {
        self.ring.slot(vip_index, slot).expect("read ring slot")
    }

    fn seed(&mut self) -> u32 {
        let m: Array<_, LbConfig> =
            Array::try_from(self.map(map_names::CONFIG)).expect("CONFIG map type");
        m.get(&0, 0).expect("read config").hash_seed
    }

    /// `key`'s intact flow-table entry.
    pub fn flow_entry(&mut self, key: &FlowKey) -> Option<FlowEntry> {
        let seed = self.seed();
        self.flows.get(key, seed)
    }

    /// Pins `key` to backend `backend_id` as its current holder (its generation).
    pub fn set_flow_entry(&mut self, key: &FlowKey, backend_id: u32) {
        let generation = self.backend(backend_id).generation;
        self.set_flow_entry_generation(key, backend_id, generation);
    }

    /// Pins `key` to backend `backend_id` with an explicit generation (e.g. a stale one),
    /// placed where the program would place it.
    pub fn set_flow_entry_generation(&mut self, key: &FlowKey, backend_id: u32, generation: u32) {
        let seed = self.seed();
        let entry = FlowEntry {
            backend_id,
            generation,
        };
        self.flows.insert(key, seed, entry);
    }

    /// `key`'s slot origin (`lb_common::flows::ORIGIN_*`), if it has an intact entry.
    pub fn flow_origin(&mut self, key: &FlowKey) -> Option<u8> {
        let (_, set, tag) = self.flow_set_of(key);
        set.ways
            .iter()
            .find(|s| s.keyed(key, tag) && s.sealed())
            .map(|s| s.origin)
    }

    /// The idle stamp of `key`'s intact entry (`FlowSlot::seen`), 0 without one.
    pub fn flow_seen(&mut self, key: &FlowKey) -> u16 {
        let (_, set, tag) = self.flow_set_of(key);
        set.ways
            .iter()
            .find(|s| s.keyed(key, tag) && s.sealed())
            .map_or(0, |s| s.seen)
    }

    /// Sets the idle stamp of `key`'s intact entry, as if its last packet came at tick `seen`.
    /// Returns whether it had an entry.
    pub fn set_flow_seen(&mut self, key: &FlowKey, seen: u16) -> bool {
        let (i, mut set, tag) = self.flow_set_of(key);
        let Some(slot) = set.find(key, tag) else {
            return false;
        };
        slot.seen = seen;
        self.write_flow_set(i, &set);
        true
    }

    /// A peer's exception for `key` naming backend `backend_id` with `generation`, placed in
    /// the peer table where the agent would place it.
    pub fn set_peer_flow(&mut self, key: &FlowKey, backend_id: u32, generation: u32) {
        let seed = self.seed();
        let entry = FlowEntry {
            backend_id,
            generation,
        };
        self.peers.insert(key, seed, entry);
    }

    /// `key`'s intact entry in the peer-exception table.
    pub fn peer_flow_entry(&mut self, key: &FlowKey) -> Option<FlowEntry> {
        let seed = self.seed();
        self.peers.get(key, seed)
    }

    /// Empties `key`'s slot (as an eviction does). Returns whether it had one.
    pub fn remove_flow_entry(&mut self, key: &FlowKey) -> bool {
        let seed = self.seed();
        self.flows.remove(key, seed)
    }

    /// The set holding `key` (or where it would go) and the key's tag.
    pub fn flow_set_of(&mut self, key: &FlowKey) -> (u32, FlowSet, u32) {
        let seed = self.seed();
        let (i, tag) = self.flows.locate(key, seed);
        (i, self.flows.raw_set(i), tag)
    }

    /// Sets in the flow table.
    pub fn flow_sets(&self) -> u32 {
        self.flows.sets()
    }

    /// Set `index` of the flow table.
    pub fn flow_set(&self, index: u32) -> FlowSet {
        self.flows.raw_set(index)
    }

    /// Overwrites a whole set of the flow table.
    pub fn write_flow_set(&mut self, index: u32, set: &FlowSet) {
        self.flows.write_raw_set(index, set);
    }

    pub fn flow_count(&mut self) -> usize {
        self.flows.count()
    }

    // ---- counters ----------------------------------------------------------------------------

    /// Global counters summed over CPUs.
    pub fn counters(&mut self) -> [u64; COUNTER_SLOTS] {
        let m: PerCpuArray<_, GlobalStats> =
            PerCpuArray::try_from(self.map(map_names::STATS)).expect("STATS map type");
        let per_cpu = m.get(&0, 0).expect("read STATS");
        let mut sum = [0u64; COUNTER_SLOTS];
        for cpu in per_cpu.iter() {
            for (s, c) in sum.iter_mut().zip(cpu.counters) {
                *s += c;
            }
        }
        sum
    }

    fn traffic(&mut self, map: &str, index: u32) -> TrafficStats {
        let m: PerCpuArray<_, TrafficStats> =
            PerCpuArray::try_from(self.map(map)).expect("stats map type");
        let per_cpu = m.get(&index, 0).expect("read stats");
        per_cpu
            .iter()
            .fold(TrafficStats::default(), |a, c| TrafficStats {
                packets: a.packets + c.packets,
                bytes: a.bytes + c.bytes,
                new_flows: a.new_flows + c.new_flows,
                drops: a.drops + c.drops,
            })
    }

    /// VIP `index`'s stats summed over CPUs.
    pub fn vip_stats(&mut self, index: u32) -> TrafficStats {
        self.traffic(map_names::VIP_STATS, index)
    }

    /// Backend `id`'s stats summed over CPUs.
    pub fn backend_stats(&mut self, id: u32) -> TrafficStats {
        self.traffic(map_names::BACKEND_STATS, id)
    }

    fn zero_per_cpu<T: aya::Pod + Default + Clone>(&mut self, map: &str, entries: u32) {
        let cpus = self.cpus;
        let mut m: PerCpuArray<_, T> = PerCpuArray::try_from(self.map(map)).expect("per-CPU map");
        for i in 0..entries {
            let zero = PerCpuValues::try_from(vec![T::default(); cpus]).expect("per-CPU values");
            m.set(i, zero, 0).expect("zero per-CPU entry");
        }
    }

    /// Zeroes the global counters and every VIP and backend stats entry.
    pub fn reset_counters(&mut self) {
        self.zero_per_cpu::<GlobalStats>(map_names::STATS, 1);
        let vips = self.map_entries(map_names::VIP_STATS);
        self.zero_per_cpu::<TrafficStats>(map_names::VIP_STATS, vips);
        let backends = self.map_entries(map_names::BACKEND_STATS);
        self.zero_per_cpu::<TrafficStats>(map_names::BACKEND_STATS, backends);
    }

    /// Empties the ICMP token bucket of every CPU (tokens 0, last refill at time 0).
    pub fn reset_icmp_bucket(&mut self) {
        self.zero_per_cpu::<IcmpBucket>(map_names::ICMP_BUCKET, 1);
    }

    fn map_entries(&mut self, name: &str) -> u32 {
        let m: PerCpuArray<_, TrafficStats> =
            PerCpuArray::try_from(self.map(name)).expect("stats map type");
        m.len()
    }

    // ---- running packets ---------------------------------------------------------------------

    fn program(&self) -> &Xdp {
        self.ebpf
            .program(map_names::PROG_LB)
            .expect("program xlb")
            .try_into()
            .expect("xlb is an XDP program")
    }

    /// Runs one frame through the program: `(verdict, output frame)`. Panics if the kernel
    /// refuses the run (see [`Datapath::try_run`]).
    pub fn run(&self, frame: &[u8]) -> (u32, Vec<u8>) {
        self.try_run(frame)
            .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN of a {}-byte frame: {e}", frame.len()))
    }

    /// [`Datapath::run`] that returns the kernel's refusal (e.g. `EINVAL` for frames shorter
    /// than an Ethernet header).
    pub fn try_run(&self, frame: &[u8]) -> Result<(u32, Vec<u8>), ProgramError> {
        try_run_program(self.program(), frame)
    }

    /// Runs a frame `repeat` times in one syscall; returns the kernel's mean time per run (for
    /// benchmarks). Map state changes accumulate like `repeat` separate packets.
    pub fn bench(&self, frame: &[u8], repeat: u32) -> Result<std::time::Duration, ProgramError> {
        let mut out = vec![0u8; frame.len() + OUT_SLACK];
        let res = self.program().test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat,
            ..TestRunOptions::default()
        })?;
        Ok(res.duration)
    }
}

impl Default for Datapath {
    fn default() -> Self {
        Self::new()
    }
}

/// One `BPF_PROG_TEST_RUN` of `frame` through `program`: `(verdict, output frame)`.
pub fn try_run_program(program: &Xdp, frame: &[u8]) -> Result<(u32, Vec<u8>), ProgramError> {
    let mut out = vec![0u8; frame.len() + OUT_SLACK];
    let res = program.test_run(TestRunOptions {
        data_in: Some(frame),
        data_out: Some(&mut out),
        ..TestRunOptions::default()
    })?;
    out.truncate(res.data_size_out as usize);
    Ok((res.return_value, out))
}

/// [`try_run_program`] on the XDP program `name` of any loaded object; panics on failure.
pub fn run_named(ebpf: &mut Ebpf, name: &str, frame: &[u8]) -> (u32, Vec<u8>) {
    let program: &mut Xdp = ebpf
        .program_mut(name)
        .unwrap_or_else(|| panic!("program {name} is not in the object"))
        .try_into()
        .expect("an XDP program");
    try_run_program(program, frame).unwrap_or_else(|e| {
        panic!(
            "BPF_PROG_TEST_RUN of {name}, {}-byte frame: {e}",
            frame.len()
        )
    })
}

/// The OS error number of a failed test run, if it was a syscall error.
pub fn run_errno(e: &ProgramError) -> Option<i32> {
    match e {
        ProgramError::SyscallError(s) => s.io_error.raw_os_error(),
        _ => None,
    }
}

/// The kernel's jiffies now (what `bpf_jiffies64` returns), read from `/proc/timer_list`
/// (root only, as everything here).
pub fn jiffies() -> u64 {
    let list = std::fs::read_to_string("/proc/timer_list").expect("reading /proc/timer_list");
    list.lines()
        .find_map(|l| l.strip_prefix("jiffies: "))
        .and_then(|v| v.trim().parse().ok())
        .expect("a `jiffies: N` line in /proc/timer_list")
}

/// This host's idle clock (`LbConfig::idle_shift` and the tick), as the agent sets it.
pub fn idle_clock() -> lb_userspace::idle_clock::IdleClock {
    lb_userspace::idle_clock::IdleClock::host().expect("the coarse clock's resolution")
}

/// The program's idle clock now (`lb_common::flows::idle_tick`) with this host's shift.
pub fn idle_now() -> u16 {
    lb_common::flows::idle_tick(jiffies(), idle_clock().shift)
}
