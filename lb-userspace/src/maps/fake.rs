//! In-memory [`MapStore`] for tests: same semantics as the kernel maps, plus a write log so
//! tests can assert the order in which the reconciler touched things.

use std::collections::{BTreeMap, HashMap};

use lb_common::{
    Backend, FlowEntry, FlowKey, LbConfig, TrafficStats, VipKey, VipMeta,
    limits::{ADDR_FILTER_WORDS, RING_SIZE},
    stats::GlobalStats,
};

use super::{MapError, MapStore, Result};

/// One write, as recorded by [`FakeStore::log`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    Config,
    Vip(VipKey, Option<VipMeta>),
    Backend(u32, Backend),
    /// (vip index, slots written)
    Ring(u32, usize),
    Filter(u32),
    ClearVipStats(u32),
    ClearBackendStats(u32),
}

#[derive(Debug)]
pub struct FakeStore {
    max_vips: u32,
    max_backends: u32,
    pub config: LbConfig,
    pub vips: BTreeMap<VipKey, VipMeta>,
    pub backends: Vec<Backend>,
    pub rings: HashMap<u32, Vec<u32>>,
    pub filter: Vec<u64>,
    pub vip_stats: HashMap<u32, TrafficStats>,
    pub backend_stats: HashMap<u32, TrafficStats>,
    pub global: GlobalStats,
    pub flows: HashMap<FlowKey, FlowEntry>,
    /// Flow-table entries whose origin is not `ORIGIN_RING`.
    pub flow_origins: HashMap<FlowKey, u8>,
    /// The peer-exception table.
    pub peer_flows: HashMap<FlowKey, FlowEntry>,
    /// Every write in order.
    pub log: Vec<Write>,
    /// When set, the write with this log position fails (for partial-failure tests).
    pub fail_at: Option<usize>,
}

impl FakeStore {
    pub fn new(max_vips: u32, max_backends: u32) -> Self {
        Self {
            max_vips,
            max_backends,
            config: LbConfig::default(),
            vips: BTreeMap::new(),
            backends: vec![Backend::default(); max_backends as usize],
            rings: HashMap::new(),
            filter: vec![0; ADDR_FILTER_WORDS as usize],
            vip_stats: HashMap::new(),
            backend_stats: HashMap::new(),
            global: GlobalStats::default(),
            flows: HashMap::new(),
            flow_origins: HashMap::new(),
            peer_flows: HashMap::new(),
            log: Vec::new(),
            fail_at: None,
        }
    }

    fn record(&mut self, w: Write, map: &'static str) -> Result<()> {
        if self.fail_at == Some(self.log.len()) {
            return Err(MapError::new(map, "update", "injected failure"));
        }
        self.log.push(w);
        Ok(())
    }

    fn check_index(&self, index: u32, max: u32, map: &'static str) -> Result<()> {
        if index >= max {
            return Err(MapError::new(
                map,
                "update",
                format!("index {index} >= {max}"),
            ));
        }
        Ok(())
    }
}

impl MapStore for FakeStore {
    fn max_vips(&self) -> u32 {
        self.max_vips
    }
    fn max_backends(&self) -> u32 {
        self.max_backends
    }
    fn config(&self) -> Result<LbConfig> {
        Ok(self.config)
    }
    fn set_config(&mut self, cfg: &LbConfig) -> Result<()> {
        self.record(Write::Config, "config")?;
        self.config = *cfg;
        Ok(())
    }
    fn vips(&self) -> Result<Vec<(VipKey, VipMeta)>> {
        Ok(self.vips.iter().map(|(k, v)| (*k, *v)).collect())
    }
    fn set_vip(&mut self, key: &VipKey, meta: &VipMeta) -> Result<()> {
        self.record(Write::Vip(*key, Some(*meta)), "vips")?;
        self.vips.insert(*key, *meta);
        Ok(())
    }
    fn remove_vip(&mut self, key: &VipKey) -> Result<()> {
        self.record(Write::Vip(*key, None), "vips")?;
        self.vips.remove(key);
        Ok(())
    }
    fn backend(&self, id: u32) -> Result<Backend> {
        self.check_index(id, self.max_backends, "backends")?;
        Ok(self.backends[id as usize])
    }
    fn set_backend(&mut self, id: u32, backend: &Backend) -> Result<()> {
        self.check_index(id, self.max_backends, "backends")?;
        self.record(Write::Backend(id, *backend), "backends")?;
        self.backends[id as usize] = *backend;
        Ok(())
    }
    fn ring(&self, vip_index: u32) -> Result<Vec<u32>> {
        self.check_index(vip_index, self.max_vips, "ring")?;
        Ok(self
            .rings
            .get(&vip_index)
            .cloned()
            .unwrap_or_else(|| vec![0; RING_SIZE as usize]))
    }
    fn set_ring_slots(&mut self, vip_index: u32, slots: &[(u32, u32)]) -> Result<()> {
        self.check_index(vip_index, self.max_vips, "ring")?;
        self.record(Write::Ring(vip_index, slots.len()), "ring")?;
        let ring = self
            .rings
            .entry(vip_index)
            .or_insert_with(|| vec![0; RING_SIZE as usize]);
        for &(slot, id) in slots {
            ring[slot as usize] = id;
        }
        Ok(())
    }
    fn filter_words(&self) -> Result<Vec<u64>> {
        Ok(self.filter.clone())
    }
    fn set_filter_word(&mut self, index: u32, word: u64) -> Result<()> {
        self.check_index(index, ADDR_FILTER_WORDS, "addr_filter")?;
        self.record(Write::Filter(index), "addr_filter")?;
        self.filter[index as usize] = word;
        Ok(())
    }
    fn global_stats(&self) -> Result<GlobalStats> {
        Ok(self.global)
    }
    fn vip_stats(&self, vip_index: u32) -> Result<TrafficStats> {
        Ok(self.vip_stats.get(&vip_index).copied().unwrap_or_default())
    }
    fn backend_stats(&self, id: u32) -> Result<TrafficStats> {
        Ok(self.backend_stats.get(&id).copied().unwrap_or_default())
    }
    fn clear_vip_stats(&mut self, vip_index: u32) -> Result<()> {
        self.record(Write::ClearVipStats(vip_index), "vip_stats")?;
        self.vip_stats.remove(&vip_index);
        Ok(())
    }
    fn clear_backend_stats(&mut self, id: u32) -> Result<()> {
        self.record(Write::ClearBackendStats(id), "backend_stats")?;
        self.backend_stats.remove(&id);
        Ok(())
    }
    fn flows(&self, limit: usize) -> Result<Vec<(FlowKey, FlowEntry)>> {
        Ok(self
            .flows
            .iter()
            .take(limit)
            .map(|(k, v)| (*k, *v))
            .collect())
    }
    fn flow(&self, key: &FlowKey) -> Result<Option<FlowEntry>> {
        Ok(self.flows.get(key).copied())
    }
    fn flow_origin(&self, key: &FlowKey) -> Result<Option<u8>> {
        Ok(self.flows.contains_key(key).then(|| {
            self.flow_origins
                .get(key)
                .copied()
                .unwrap_or(lb_common::flows::ORIGIN_RING)
        }))
    }
    fn peer_flows(&self, limit: usize) -> Result<Vec<(FlowKey, FlowEntry)>> {
        Ok(self
            .peer_flows
            .iter()
            .take(limit)
            .map(|(k, v)| (*k, *v))
            .collect())
    }
    fn peer_flow(&self, key: &FlowKey) -> Result<Option<FlowEntry>> {
        Ok(self.peer_flows.get(key).copied())
    }
}
