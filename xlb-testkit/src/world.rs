//! A small, fully known configuration for packet tests and benchmarks: one config, VIPs and
//! backend pools whose ring layout lets a test predict the backend of any flow.

use std::net::IpAddr;

use lb_common::{
    Backend, LbConfig, addr,
    hash::ring_slot,
    limits::RING_SIZE,
    values::{BACKEND_ACTIVE, CONFIG_F_READY},
};

use super::{datapath::Datapath, packet::ip};

/// Hash seed of the test config.
pub const SEED: u32 = 0x1234_5678;
/// Source MAC of forwarded frames.
pub const SRC_MAC: [u8; 6] = [0x02, 0x1b, 0x00, 0x00, 0x00, 0x02];
/// Outer IPv4 source.
pub const SRC_V4: &str = "192.0.2.1";
/// Outer IPv6 source.
pub const SRC_V6: &str = "2001:db8:1b::1";
/// GUE destination port (host order; the config stores it in network order).
pub const GUE_PORT: u16 = 6080;

/// TTL / hop limit of outer headers: the agent's default, and unlike the test packets' 61.
pub const OUTER_TTL: u8 = 64;

/// The test config: ready, MTU check off, generous ICMP budget.
pub fn base_config() -> LbConfig {
    let (_, v6) = addr::to_words(ip(SRC_V6));
    let (_, v4) = addr::to_words(ip(SRC_V4));
    LbConfig {
        src_v6: v6,
        src_v4: v4[0],
        hash_seed: SEED,
        src_mac: SRC_MAC,
        gue_port: GUE_PORT.to_be(),
        mtu: 0,
        flags: CONFIG_F_READY,
        icmp_rate: 1000,
        icmp_burst: 1000,
        outer_ttl: OUTER_TTL,
        // The host's clock, as the agent sets it (ticks of about a second).
        idle_shift: lb_userspace::idle_clock::IdleClock::host().map_or(0, |c| c.shift),
        // No idle timeout: the cases that test it set one.
        udp_idle_ticks: 0,
    }
}

/// MAC of backend `id` (next hop for ipip/gue, the backend itself for dsr).
pub fn backend_mac(id: u32) -> [u8; 6] {
    let b = id.to_be_bytes();
    [0x02, 0xbe, b[0], b[1], b[2], b[3]]
}

/// Address of backend `id` (documentation ranges only): `203.0.113.(100 + id)` or
/// `2001:db8:be::x:y`.
pub fn backend_addr(id: u32, v4: bool) -> IpAddr {
    if v4 {
        assert!(id < 155, "IPv4 test backends are 203.0.113.100..254");
        ip(&format!("203.0.113.{}", 100 + id))
    } else {
        ip(&format!("2001:db8:be::{:x}:{:x}", id >> 16, id & 0xffff))
    }
}

/// An active backend entry of VIP `vip_index`, generation `id` (unique). `Datapath` fills in
/// the VIP's mode and flags when it writes the entry.
pub fn backend(id: u32, v4: bool, vip_index: u32) -> Backend {
    let (family, words) = addr::to_words(backend_addr(id, v4));
    Backend {
        addr: words,
        mac: backend_mac(id),
        state: BACKEND_ACTIVE,
        family,
        vip_index,
        generation: id,
        mode: 0,
        _pad0: 0,
        vip_flags: 0,
        weight: 1,
    }
}

/// The backends of one VIP and the layout of its ring: `ids.len()` equal, contiguous regions of
/// slots, region `k` holding `ids[k]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pool {
    pub vip_index: u32,
    pub ids: Vec<u32>,
    pub backends: Vec<Backend>,
}

impl Pool {
    /// `n` active backends with ids `first_id..first_id + n`, addresses of family `v4`.
    pub fn new(vip_index: u32, first_id: u32, n: u32, v4: bool) -> Self {
        let ids: Vec<u32> = (first_id..first_id + n).collect();
        let backends = ids.iter().map(|&id| backend(id, v4, vip_index)).collect();
        Pool {
            vip_index,
            ids,
            backends,
        }
    }

    /// The id the ring holds at `slot`.
    pub fn owner(&self, slot: u32) -> u32 {
        let k = (u64::from(slot) * self.ids.len() as u64 / u64::from(RING_SIZE)) as usize;
        self.ids[k]
    }

    /// The id chosen for a flow hash.
    pub fn choose(&self, hash: u32) -> u32 {
        self.owner(ring_slot(hash))
    }

    pub fn backend(&self, id: u32) -> Backend {
        let k =
            self.ids.iter().position(|&i| i == id).unwrap_or_else(|| {
                panic!("backend {id} is not in the pool of VIP {}", self.vip_index)
            });
        self.backends[k]
    }

    /// Writes the backends and the ring (backends first, as the agent does).
    pub fn install(&self, dp: &mut Datapath) {
        for (id, b) in self.ids.iter().zip(&self.backends) {
            dp.set_backend(*id, *b);
        }
        let pool = self.clone();
        dp.fill_ring(self.vip_index, move |slot| pool.owner(slot));
    }
}
