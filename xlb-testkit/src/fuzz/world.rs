//! The fuzzer's world: VIPs of every mode, family, lookup kind and flag, backends in every
//! state, rings with holes and foreign ids, peer exceptions; written to a loaded program and
//! known to the model ([`Live`] implements `model::Maps`).

use std::{cell::RefCell, collections::HashMap, net::IpAddr};

use lb_common::{
    Backend, FlowEntry, FlowKey, LbConfig, VipKey, VipMeta,
    addr::{PROTO_TCP, PROTO_UDP},
    limits::RING_SIZE,
    values::*,
};
use rand::{RngExt, rngs::SmallRng};

use crate::{
    datapath::Datapath,
    model::Maps,
    packet::ip,
    world::{backend, base_config},
};

/// A VIP of the world: its entry key and meta, and the family of its backends.
#[derive(Clone, Debug)]
pub struct FuzzVip {
    pub addr: IpAddr,
    /// Host order; 0 = all ports.
    pub port: u16,
    pub proto: u8,
    pub meta: VipMeta,
    pub backend_v4: bool,
}

/// VIP addresses (documentation ranges).
pub const VIP_A4: &str = "192.0.2.10";
pub const VIP_B4: &str = "192.0.2.11";
pub const VIP_A6: &str = "2001:db8::10";
pub const VIP_B6: &str = "2001:db8::11";
/// Addresses that are no VIP (one of them shares nothing with the VIPs).
pub const OTHER4: &str = "192.0.2.99";
pub const OTHER6: &str = "2001:db8::99";

const BACKENDS_PER_VIP: u32 = 4;

pub struct World {
    pub cfg: LbConfig,
    pub vips: Vec<FuzzVip>,
    /// Every VIP-map entry: address entries, VIPs, fragment aliases.
    pub entries: HashMap<VipKey, VipMeta>,
    /// Backend entries by id (index 0 unused); ids past the end are out of the map.
    pub backends: Vec<Backend>,
    /// Ring of each VIP index.
    pub rings: Vec<Vec<u32>>,
    /// Whether a too-big packet finds an ICMP token (the bucket is configured full or empty).
    pub icmp_budget: bool,
}

impl World {
    /// A world drawn from `rng`: the VIP layout is fixed, its options (MTU, continuity, ICMP
    /// budget, seed, flags, backend states, ring holes) vary.
    pub fn new(rng: &mut SmallRng, max_backends: u32) -> Self {
        let mut cfg = base_config();
        cfg.hash_seed = rng.random();
        cfg.mtu = if rng.random_bool(0.5) { 1500 } else { 0 };
        cfg.flags |= CONFIG_F_ANY_PORT_VIPS;
        if rng.random_bool(0.5) {
            cfg.flags |= CONFIG_F_PEER_FLOWS;
        }
        let icmp_budget = rng.random_bool(0.7);
        if icmp_budget {
            cfg.icmp_rate = 1_000_000_000;
            cfg.icmp_burst = u32::MAX;
        } else {
            cfg.icmp_rate = 0;
            cfg.icmp_burst = 0;
        }
        cfg.outer_ttl = rng.random_range(1..=255);
        // Timeouts far longer than a world lives, so time passing never expires a flow between
        // the model's reading of the clock and the program's: `age_udp_flows` moves stamps
        // well past the timeout or well inside it.
        cfg.udp_idle_ticks = [0, 3600, lb_common::flows::MAX_IDLE_TICKS][rng.random_range(0..3)];
        let mut flag = |p: f64, f: u32| if rng.random_bool(p) { f } else { 0 };
        let specs: Vec<(&str, u16, u8, u8, bool, u32)> = vec![
            (
                VIP_A4,
                80,
                PROTO_TCP,
                MODE_IPIP,
                true,
                flag(0.3, VIP_F_SRC_AFFINITY),
            ),
            (
                VIP_A4,
                53,
                PROTO_UDP,
                MODE_GUE,
                false,
                flag(0.3, VIP_F_SRC_AFFINITY),
            ),
            (
                VIP_A6,
                443,
                PROTO_TCP,
                MODE_GUE,
                false,
                flag(0.3, VIP_F_SRC_AFFINITY),
            ),
            (
                VIP_A6,
                0,
                PROTO_UDP,
                MODE_DSR_L2,
                false,
                flag(0.5, VIP_F_NO_BACKEND_PASS),
            ),
            (
                VIP_B4,
                0,
                PROTO_TCP,
                MODE_DSR_L2,
                true,
                flag(0.5, VIP_F_NO_BACKEND_PASS),
            ),
            (VIP_B6, 8080, PROTO_TCP, MODE_IPIP, false, 0),
            (VIP_A4, 443, PROTO_TCP, MODE_GUE, true, 0),
            // IPv4 backends under an IPv6 VIP: config validation refuses it, the program
            // must drop such packets (`DropUnsupported`) rather than trust the agent.
            (VIP_B6, 9090, PROTO_UDP, MODE_IPIP, true, 0),
        ];
        let mut entries = HashMap::new();
        let mut vips = Vec::new();
        for (i, (addr, port, proto, mode, bv4, flags)) in specs.into_iter().enumerate() {
            let meta = VipMeta {
                index: i as u32,
                flags,
                mode,
                _pad: [0; 3],
            };
            let a = ip(addr);
            entries.insert(VipKey::of(a, port, proto), meta);
            vips.push(FuzzVip {
                addr: a,
                port,
                proto,
                meta,
                backend_v4: bv4,
            });
        }
        // Address entries: echo on the A addresses only, each with the index of its first VIP.
        for (addr, index, echo) in [
            (VIP_A4, 0, true),
            (VIP_B4, 4, false),
            (VIP_A6, 2, true),
            (VIP_B6, 5, rng.random_bool(0.5)),
        ] {
            entries.insert(
                VipKey::of(ip(addr), 0, 0),
                VipMeta {
                    index,
                    flags: if echo { VIP_F_ICMP_ECHO } else { 0 },
                    mode: 0,
                    _pad: [0; 3],
                },
            );
        }
        // Fragment aliases: fragments of TCP to A4 go to VIP 0, of UDP to A4 to VIP 1.
        for (proto, index) in [(PROTO_TCP, 0u32), (PROTO_UDP, 1)] {
            let v = &vips[index as usize];
            entries.insert(
                VipKey::of(ip(VIP_A4), 0, proto),
                VipMeta {
                    index,
                    flags: v.meta.flags | VIP_F_FRAG_ONLY,
                    mode: v.meta.mode,
                    _pad: [0; 3],
                },
            );
        }
        let mut backends = vec![Backend::default(); max_backends as usize];
        let mut rings = Vec::new();
        for v in &vips {
            let first = 1 + v.meta.index * BACKENDS_PER_VIP;
            let ids: Vec<u32> = (first..first + BACKENDS_PER_VIP).collect();
            for &id in &ids {
                let mut b = backend(id, v.backend_v4, v.meta.index);
                b.mode = v.meta.mode;
                b.vip_flags = v.meta.flags as u16;
                b.state = match rng.random_range(0..10) {
                    0 => BACKEND_DRAINING,
                    1 => BACKEND_DOWN,
                    _ => BACKEND_ACTIVE,
                };
                backends[id as usize] = b;
            }
            let foreign = 1 + ((v.meta.index + 1) % vips.len() as u32) * BACKENDS_PER_VIP;
            let mut ring = Vec::with_capacity(RING_SIZE as usize);
            for slot in 0..RING_SIZE {
                let k = (u64::from(slot) * ids.len() as u64 / u64::from(RING_SIZE)) as usize;
                ring.push(ids[k]);
            }
            // Holes (no backend), a foreign id (bad backend) and an id past every entry.
            for _ in 0..rng.random_range(0..200) {
                let s = rng.random_range(0..RING_SIZE) as usize;
                ring[s] = match rng.random_range(0..4) {
                    0 => foreign,
                    1 => max_backends - 1,
                    _ => 0,
                };
            }
            rings.push(ring);
        }
        World {
            cfg,
            vips,
            entries,
            backends,
            rings,
            icmp_budget,
        }
    }

    /// Writes everything to the program, backends first (as the agent does).
    pub fn install(&self, dp: &mut Datapath) {
        dp.set_ready_config(self.cfg);
        if !self.icmp_budget {
            dp.reset_icmp_bucket();
        }
        for (id, b) in self.backends.iter().enumerate().skip(1) {
            if b.state != BACKEND_EMPTY {
                dp.set_backend(id as u32, *b);
            }
        }
        for (i, ring) in self.rings.iter().enumerate() {
            dp.set_ring(i as u32, ring);
        }
        for (k, m) in &self.entries {
            let a = lb_common::addr::from_words(k.family, &k.addr).expect("valid family");
            if k.proto == 0 {
                dp.set_address(a, m.flags, m.index);
            }
        }
        for (k, m) in &self.entries {
            if k.proto != 0 {
                let a = lb_common::addr::from_words(k.family, &k.addr).expect("valid family");
                dp.set_vip_entry(a, u16::from_be(k.port), k.proto, *m);
            }
        }
    }

    /// Ages some UDP entries of the program's flow table as silence would: past the idle
    /// timeout (by at least 3 ticks), well inside it (at most half of it), or unstamped.
    pub fn age_udp_flows(&self, rng: &mut SmallRng, dp: &mut Datapath) {
        let limit = self.cfg.udp_idle_ticks;
        if limit == 0 {
            return;
        }
        let now = crate::datapath::idle_now();
        for i in 0..dp.flow_sets() {
            let mut set = dp.flow_set(i);
            let mut changed = false;
            for s in set.ways.iter_mut() {
                if !s.sealed() || s.key.proto != PROTO_UDP || !rng.random_bool(0.3) {
                    continue;
                }
                s.seen = match rng.random_range(0..3) {
                    0 => now.wrapping_sub(limit + rng.random_range(3..100)),
                    1 => now.wrapping_sub(rng.random_range(0..limit / 2)),
                    _ => 0,
                };
                changed = true;
            }
            if changed {
                dp.write_flow_set(i, &set);
            }
        }
    }

    /// A backend changes state or is reallocated (new generation), as health and config
    /// changes do; the change is written to the program too.
    pub fn churn(&mut self, rng: &mut SmallRng, dp: &mut Datapath) {
        let ids: Vec<usize> = (1..self.backends.len())
            .filter(|&i| self.backends[i].state != BACKEND_EMPTY)
            .collect();
        let id = ids[rng.random_range(0..ids.len())];
        let b = &mut self.backends[id];
        match rng.random_range(0..4) {
            0 => b.state = BACKEND_DOWN,
            1 => b.state = BACKEND_DRAINING,
            2 => b.generation = b.generation.wrapping_add(1000),
            _ => b.state = BACKEND_ACTIVE,
        }
        dp.set_backend(id as u32, *b);
    }
}

/// The world and the program's live flow and peer tables, as the model reads them.
pub struct Live<'a> {
    pub world: &'a World,
    pub dp: RefCell<&'a mut Datapath>,
}

impl Maps for Live<'_> {
    fn config(&self) -> LbConfig {
        self.world.cfg
    }
    fn vip_entry(&self, key: &VipKey) -> Option<VipMeta> {
        self.world.entries.get(key).copied()
    }
    fn backend(&self, id: u32) -> Option<Backend> {
        self.world.backends.get(id as usize).copied()
    }
    fn ring(&self, index: u32, slot: u32) -> u32 {
        self.world
            .rings
            .get(index as usize)
            .and_then(|r| r.get(slot as usize))
            .copied()
            .unwrap_or(0)
    }
    fn flow(&self, key: &FlowKey) -> Option<FlowEntry> {
        self.dp.borrow_mut().flow_entry(key)
    }
    fn flow_seen(&self, key: &FlowKey) -> u16 {
        self.dp.borrow_mut().flow_seen(key)
    }
    fn flow_evicts(&self, key: &FlowKey) -> bool {
        let (_, mut set, tag) = self.dp.borrow_mut().flow_set_of(key);
        set.place_evicting(key, tag).1
    }
    fn idle_now(&self) -> u16 {
        crate::datapath::idle_now()
    }
    fn peer(&self, key: &FlowKey) -> Option<FlowEntry> {
        self.dp.borrow_mut().peer_flow_entry(key)
    }
    fn icmp_token(&self) -> bool {
        self.world.icmp_budget
    }
}
