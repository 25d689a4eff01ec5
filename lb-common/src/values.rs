//! Map values.

use crate::addr::AddrWords;

/// Forwarding modes (`VipMeta::mode`).
pub const MODE_IPIP: u8 = 1;
/// UDP encapsulation (GUE variant 1: the inner IP packet directly follows the UDP header).
pub const MODE_GUE: u8 = 2;
/// Rewrite the destination MAC only; backends share the L2 segment and own the VIP.
pub const MODE_DSR_L2: u8 = 3;

/// Hash on the source address only, so one client always reaches one backend.
pub const VIP_F_SRC_AFFINITY: u32 = 1 << 0;
/// Answer ICMP echo requests to this address in XDP (address entries only).
pub const VIP_F_ICMP_ECHO: u32 = 1 << 1;
/// Entry exists only to route fragments; non-fragments that land on it are not VIP traffic.
pub const VIP_F_FRAG_ONLY: u32 = 1 << 2;
/// When the VIP has no backend, pass its packets to the local stack instead of dropping them.
pub const VIP_F_NO_BACKEND_PASS: u32 = 1 << 3;

/// Value of the VIP map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VipMeta {
    /// VIP index: selects the ring (`index * RING_SIZE ..`) and the `VIP_STATS` entry.
    pub index: u32,
    /// `VIP_F_*` bits.
    pub flags: u32,
    /// `MODE_*`; 0 (or unknown) drops with `DropUnsupported`.
    pub mode: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(size_of::<VipMeta>() == 12);

/// Backend entry states (`Backend::state`).
pub const BACKEND_EMPTY: u8 = 0;
/// Healthy and in the ring.
pub const BACKEND_ACTIVE: u8 = 1;
/// Out of the ring (weight 0 / drain); flows already pinned to it keep it.
pub const BACKEND_DRAINING: u8 = 2;
/// Failed its health check: out of the ring, and flows pinned to it re-hash.
pub const BACKEND_DOWN: u8 = 3;

/// Value of the backend map. Backends are per VIP: the same server behind two VIPs has two ids,
/// so removing it from one VIP never affects the other and its counters split by VIP.
///
/// The entry also carries what a flow-table hit needs of its VIP (`vip_index`, `mode`,
/// `vip_flags`): established packets skip the VIP lookup (one hash lookup less per packet).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backend {
    /// Backend address (outer destination for ipip/gue). See [`crate::addr`].
    pub addr: AddrWords,
    /// Destination MAC: the next hop toward the backend (ipip/gue) or the backend (dsr-l2).
    pub mac: [u8; 6],
    /// `BACKEND_*`.
    pub state: u8,
    /// Family of `addr`.
    pub family: u8,
    /// Index of the VIP owning this backend (its stats entry and ring).
    pub vip_index: u32,
    /// Allocation generation: new for every (re)allocation of this id. A flow entry is honoured
    /// only if it recorded the same generation, so a recycled id never inherits old flows.
    pub generation: u32,
    /// The owning VIP's `MODE_*`.
    pub mode: u8,
    pub _pad0: u8,
    /// The owning VIP's `VIP_F_*` bits.
    pub vip_flags: u16,
    /// Effective weight (config or API override). Not read by the program: it is there so
    /// `xlb inspect` can show weights and expected ring shares with the agent down.
    pub weight: u32,
}
const _: () = assert!(size_of::<Backend>() == 40);

impl Backend {
    /// Whether a flow already pinned to this backend may keep using it.
    #[inline(always)]
    pub fn accepts_existing_flows(&self) -> bool {
        self.state == BACKEND_ACTIVE || self.state == BACKEND_DRAINING
    }
}

/// A flow's entry as callers see it (the flow table stores it in a [`crate::FlowSlot`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowEntry {
    pub backend_id: u32,
    /// `Backend::generation` when the entry was written.
    pub generation: u32,
}
const _: () = assert!(size_of::<FlowEntry>() == 8);

impl FlowEntry {
    /// The rule of docs/datapath.md §4: an entry is honoured while its backend takes existing
    /// flows (active or draining) and is still the allocation it was written for.
    #[inline(always)]
    pub fn honoured_by(&self, backend: &Backend) -> bool {
        backend.accepts_existing_flows() && backend.generation == self.generation
    }
}

/// Set once the agent has written a complete configuration; until then every packet passes.
pub const CONFIG_F_READY: u16 = 1 << 0;
/// Some VIP listens on all ports: a VIP-map miss on the exact port retries with port 0.
pub const CONFIG_F_ANY_PORT_VIPS: u16 = 1 << 1;
/// Flow continuity is on: a flow-table miss consults the peer-exception table
/// (`map_names::PEER_FLOWS`) before the ring. Off, the program never reads that table.
pub const CONFIG_F_PEER_FLOWS: u16 = 1 << 2;

/// The single entry of the config map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LbConfig {
    /// Outer source address of IPv6 encapsulation (network order words).
    pub src_v6: AddrWords,
    /// Outer source address of IPv4 encapsulation (network order).
    pub src_v4: u32,
    /// Seed of the flow hash: the same on every node that shares a config.
    pub hash_seed: u32,
    /// Source MAC of forwarded frames (the egress interface's).
    pub src_mac: [u8; 6],
    /// GUE destination port, network byte order.
    pub gue_port: u16,
    /// L3 MTU of the egress link. A packet that would exceed it once encapsulated is answered
    /// with ICMP frag-needed / packet-too-big. 0 disables the check.
    pub mtu: u16,
    /// `CONFIG_F_*`.
    pub flags: u16,
    /// Generated ICMP errors allowed per second, per CPU (token refill rate).
    pub icmp_rate: u32,
    /// Bucket depth of that limit.
    pub icmp_burst: u32,
    /// TTL / hop limit of the outer IP header of encapsulated packets (the inner packet's is
    /// not the tunnel's: an inner TTL of 0 or 1 would kill the tunnelled packet).
    pub outer_ttl: u8,
    /// The idle clock's tick is `bpf_jiffies64() >> idle_shift` (`flows::idle_shift` of the
    /// host's jiffy).
    pub idle_shift: u8,
    /// Idle timeout of UDP flow-table entries in ticks of `flows::idle_tick`
    /// (`flows::idle_ticks` of the configured timeout): a UDP flow silent for longer takes the
    /// ring's choice again (docs/datapath.md §4). 0: UDP entries never expire.
    pub udp_idle_ticks: u16,
}
const _: () = assert!(size_of::<LbConfig>() == 48);

/// Per-CPU token bucket of generated ICMP errors.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IcmpBucket {
    /// Whole tokens left.
    pub tokens: u64,
    /// `bpf_ktime_get_ns` of the last refill.
    pub last_ns: u64,
}
const _: () = assert!(size_of::<IcmpBucket>() == 16);

/// Per-VIP and per-backend counters (per CPU; readers sum the CPUs).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrafficStats {
    /// Packets forwarded (or answered, for ICMP echo).
    pub packets: u64,
    /// Their bytes, as received (L2 frame length).
    pub bytes: u64,
    /// Flows that took a ring choice (flow-table misses, SYNs, re-hashes).
    pub new_flows: u64,
    /// Packets to this VIP that were dropped (VIP entries only).
    pub drops: u64,
}
const _: () = assert!(size_of::<TrafficStats>() == 32);

impl TrafficStats {
    pub const fn new(packets: u64, bytes: u64, new_flows: u64, drops: u64) -> Self {
        Self {
            packets,
            bytes,
            new_flows,
            drops,
        }
    }
}

/// The single entry of the decap program's config map (backend hosts).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DecapConfig {
    /// LB source addresses whose encapsulated packets are stripped; others pass untouched.
    pub lb_v6: AddrWords,
    pub lb_v4: u32,
    /// GUE port in network order (0: GUE not decapsulated).
    pub gue_port: u16,
    /// `CONFIG_F_READY` once written.
    pub flags: u16,
}
const _: () = assert!(size_of::<DecapConfig>() == 24);
