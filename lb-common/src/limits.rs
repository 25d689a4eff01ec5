//! Sizes shared by the program and the agent.

/// Slots in one VIP's Maglev lookup table. Prime, as the paper requires, and the size the paper
/// evaluates; a VIP's ring occupies `RING_SIZE` consecutive entries of the ring map.
pub const RING_SIZE: u32 = 65_537;

/// Default capacity of the VIP index space (ring map = `max_vips * RING_SIZE` u32 slots,
/// 128 MiB at 512). The agent may resize the maps at load time.
pub const DEFAULT_MAX_VIPS: u32 = 512;

/// Ring slots per element of the ring map. The kernel lays array elements out at
/// `round_up(value_size, 8)` bytes, so a map of single u32 ids would take twice its size; each
/// element holds two consecutive slots instead. Global slot `g` (= `vip.index * RING_SIZE +
/// ring_slot`) is half `g % 2` of element `g / 2`.
pub const RING_SLOTS_PER_ENTRY: u32 = 2;

/// Elements of the ring map for `max_vips` VIPs (`None` on overflow).
pub const fn ring_entries(max_vips: u32) -> Option<u32> {
    match max_vips.checked_mul(RING_SIZE) {
        Some(slots) => Some(slots.div_ceil(RING_SLOTS_PER_ENTRY)),
        None => None,
    }
}

/// Default number of backend entries. Backend ids index the backend map; id 0 is reserved for
/// "no backend" so a zeroed ring slot is a counted drop, never a forward.
pub const DEFAULT_MAX_BACKENDS: u32 = 65_536;

/// Entries of the VIP map for `max_vips` VIPs (`None` on overflow): a VIP takes its own entry
/// and may add an address entry and a fragment alias, so three would do; four leave the hash
/// map room below full.
pub const fn vip_map_entries(max_vips: u32) -> Option<u32> {
    max_vips.checked_mul(4)
}

/// Default capacity of the VIP map.
pub const DEFAULT_VIP_MAP_ENTRIES: u32 = 4 * DEFAULT_MAX_VIPS;

/// Default flow-table capacity in flows (`flows::flow_sets` of it sets).
pub const DEFAULT_FLOW_TABLE_SIZE: u32 = 1 << 20;

/// Default capacity of the peer-exception table in flows (`flows::flow_sets` of it sets) when
/// flow continuity is configured.
pub const DEFAULT_PEER_FLOWS: u32 = 1 << 18;

/// Capacity of the peer-exception table when flow continuity is off: the map exists in every
/// deployment (the program declares it) but is never read, so it is kept at one page.
pub const PEER_FLOWS_OFF: u32 = 64;

/// IPv6 extension headers the parser walks before giving up on a packet.
pub const MAX_IPV6_EXT_HEADERS: usize = 4;

/// Bits in the VIP address pre-filter (`ADDR_FILTER_WORDS` u64 words).
pub const ADDR_FILTER_BITS: u32 = 65_536;
/// Words of the address pre-filter map.
pub const ADDR_FILTER_WORDS: u32 = ADDR_FILTER_BITS / 64;

/// Bytes of the offending packet quoted in ICMP frag-needed / packet-too-big replies (from its IP
/// header on). Always available: such a packet is larger than the egress MTU minus the
/// encapsulation overhead, and the agent refuses MTUs below 576 (IPv4) / 1280 (IPv6).
pub const ICMP_QUOTE_LEN: usize = 128;

/// Version of the map layout below. Bumped on any change to a key, value or map definition; the
/// agent refuses to adopt pinned maps of another version.
pub const MAP_LAYOUT_VERSION: u32 = 5;
