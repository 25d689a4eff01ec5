//! [`MapStore`] over the real BPF maps: those of a freshly loaded program, or the ones pinned
//! under bpffs by a running (or departed) agent.

use std::path::Path;

use aya::{
    Ebpf,
    maps::{Array, HashMap, Map, MapData, PerCpuArray, PerCpuValues},
};
use lb_common::{
    Backend, FlowEntry, FlowKey, LbConfig, TrafficStats, VipKey, VipMeta, limits::RING_SIZE,
    map_names, stats::GlobalStats,
};

use super::{
    MapError, MapStore, Result,
    mmap::{FlowTable, RingTable},
    sum_global, sum_traffic,
};

pub struct AyaStore {
    vips: HashMap<MapData, VipKey, VipMeta>,
    ring: RingTable,
    backends: Array<MapData, Backend>,
    flows: FlowTable,
    /// `None` on maps pinned by an xlb without flow continuity.
    peers: Option<FlowTable>,
    config: Array<MapData, LbConfig>,
    stats: PerCpuArray<MapData, GlobalStats>,
    vip_stats: PerCpuArray<MapData, TrafficStats>,
    backend_stats: PerCpuArray<MapData, TrafficStats>,
    filter: Array<MapData, u64>,
    nr_cpus: usize,
}

fn conv<T>(name: &'static str, r: std::result::Result<T, aya::maps::MapError>) -> Result<T> {
    r.map_err(|e| MapError::new(name, "open", e))
}

impl AyaStore {
    /// Takes the maps out of a loaded program (pin them first if they must outlive it).
    pub fn from_ebpf(ebpf: &mut Ebpf) -> Result<Self> {
        let mut take = |name: &'static str| {
            ebpf.take_map(name)
                .ok_or_else(|| MapError::new(name, "open", "not in the object"))
        };
        Self::from_maps(&mut take)
    }

    /// Opens the maps pinned in `dir` (see `loader`).
    pub fn from_pin_dir(dir: &Path) -> Result<Self> {
        let mut open = |name: &'static str| {
            let data = MapData::from_pin(dir.join(name)).map_err(|e| {
                MapError::new(
                    name,
                    "open",
                    format!("{e}: is the agent's pin directory {} right?", dir.display()),
                )
            })?;
            Map::from_map_data(data).map_err(|e| MapError::new(name, "open", e))
        };
        Self::from_maps(&mut open)
    }

    fn from_maps(get: &mut dyn FnMut(&'static str) -> Result<Map>) -> Result<Self> {
        use map_names::*;
        let nr_cpus = aya::util::nr_cpus()
            .map_err(|(what, e)| MapError::new("stats", "nr_cpus", format!("{what}: {e}")))?;
        let ring = match get(RING)? {
            Map::Array(data) => RingTable::new(data)?,
            _ => return Err(MapError::new(RING, "open", "not an array map")),
        };
        let flows = match get(FLOWS)? {
            Map::Array(data) => FlowTable::new(data)?,
            _ => {
                return Err(MapError::new(
                    FLOWS,
                    "open",
                    "not an array map (a map of another layout version)",
                ));
            }
        };
        let peers = match get(PEER_FLOWS) {
            Ok(Map::Array(data)) => Some(FlowTable::named(PEER_FLOWS, data)?),
            _ => None,
        };
        Ok(Self {
            vips: conv(VIPS, HashMap::try_from(get(VIPS)?))?,
            ring,
            backends: conv(BACKENDS, Array::try_from(get(BACKENDS)?))?,
            flows,
            peers,
            config: conv(CONFIG, Array::try_from(get(CONFIG)?))?,
            stats: conv(STATS, PerCpuArray::try_from(get(STATS)?))?,
            vip_stats: conv(VIP_STATS, PerCpuArray::try_from(get(VIP_STATS)?))?,
            backend_stats: conv(BACKEND_STATS, PerCpuArray::try_from(get(BACKEND_STATS)?))?,
            filter: conv(ADDR_FILTER, Array::try_from(get(ADDR_FILTER)?))?,
            nr_cpus,
        })
    }

    fn zeros<T: aya::Pod + Default>(&self, name: &'static str) -> Result<PerCpuValues<T>> {
        PerCpuValues::try_from(vec![T::default(); self.nr_cpus])
            .map_err(|e| MapError::new(name, "update", e))
    }
}

fn op<T>(
    map: &'static str,
    what: &'static str,
    r: std::result::Result<T, aya::maps::MapError>,
) -> Result<T> {
    r.map_err(|e| MapError::new(map, what, e))
}

impl MapStore for AyaStore {
    fn max_vips(&self) -> u32 {
        self.ring.slots() / RING_SIZE
    }
    fn max_backends(&self) -> u32 {
        self.backends.len()
    }
    fn config(&self) -> Result<LbConfig> {
        op(map_names::CONFIG, "lookup", self.config.get(&0, 0))
    }
    fn set_config(&mut self, cfg: &LbConfig) -> Result<()> {
        op(map_names::CONFIG, "update", self.config.set(0, cfg, 0))
    }
    fn vips(&self) -> Result<Vec<(VipKey, VipMeta)>> {
        self.vips
            .iter()
            .map(|r| op(map_names::VIPS, "iterate", r))
            .collect()
    }
    fn set_vip(&mut self, key: &VipKey, meta: &VipMeta) -> Result<()> {
        op(map_names::VIPS, "update", self.vips.insert(key, meta, 0))
    }
    fn remove_vip(&mut self, key: &VipKey) -> Result<()> {
        match self.vips.remove(key) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(MapError::new(map_names::VIPS, "delete", e)),
        }
    }
    fn backend(&self, id: u32) -> Result<Backend> {
        op(map_names::BACKENDS, "lookup", self.backends.get(&id, 0))
    }
    fn set_backend(&mut self, id: u32, backend: &Backend) -> Result<()> {
        op(
            map_names::BACKENDS,
            "update",
            self.backends.set(id, backend, 0),
        )
    }
    fn ring(&self, vip_index: u32) -> Result<Vec<u32>> {
        self.ring.read(vip_index)
    }
    fn set_ring_slots(&mut self, vip_index: u32, slots: &[(u32, u32)]) -> Result<()> {
        self.ring.write(vip_index, slots)
    }
    fn filter_words(&self) -> Result<Vec<u64>> {
        self.filter
            .iter()
            .map(|r| op(map_names::ADDR_FILTER, "lookup", r))
            .collect()
    }
    fn set_filter_word(&mut self, index: u32, word: u64) -> Result<()> {
        op(
            map_names::ADDR_FILTER,
            "update",
            self.filter.set(index, word, 0),
        )
    }
    fn global_stats(&self) -> Result<GlobalStats> {
        let v = op(map_names::STATS, "lookup", self.stats.get(&0, 0))?;
        Ok(sum_global(v.iter().copied()))
    }
    fn vip_stats(&self, vip_index: u32) -> Result<TrafficStats> {
        let v = op(
            map_names::VIP_STATS,
            "lookup",
            self.vip_stats.get(&vip_index, 0),
        )?;
        Ok(sum_traffic(v.iter().copied()))
    }
    fn backend_stats(&self, id: u32) -> Result<TrafficStats> {
        let v = op(
            map_names::BACKEND_STATS,
            "lookup",
            self.backend_stats.get(&id, 0),
        )?;
        Ok(sum_traffic(v.iter().copied()))
    }
    fn clear_vip_stats(&mut self, vip_index: u32) -> Result<()> {
        let z = self.zeros(map_names::VIP_STATS)?;
        op(
            map_names::VIP_STATS,
            "update",
            self.vip_stats.set(vip_index, z, 0),
        )
    }
    fn clear_backend_stats(&mut self, id: u32) -> Result<()> {
        let z = self.zeros(map_names::BACKEND_STATS)?;
        op(
            map_names::BACKEND_STATS,
            "update",
            self.backend_stats.set(id, z, 0),
        )
    }
    fn flows(&self, limit: usize) -> Result<Vec<(FlowKey, FlowEntry)>> {
        Ok(self.flows.entries(limit))
    }
    fn flow(&self, key: &FlowKey) -> Result<Option<FlowEntry>> {
        let seed = self.config()?.hash_seed;
        Ok(self.flows.get(key, seed))
    }
    fn flow_origin(&self, key: &FlowKey) -> Result<Option<u8>> {
        let seed = self.config()?.hash_seed;
        Ok(self.flows.origin(key, seed))
    }
    fn peer_flows(&self, limit: usize) -> Result<Vec<(FlowKey, FlowEntry)>> {
        Ok(self
            .peers
            .as_ref()
            .map_or_else(Vec::new, |p| p.entries(limit)))
    }
    fn peer_flow(&self, key: &FlowKey) -> Result<Option<FlowEntry>> {
        let seed = self.config()?.hash_seed;
        Ok(self.peers.as_ref().and_then(|p| p.get(key, seed)))
    }
}
