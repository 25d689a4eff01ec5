//! Names of the program's maps (also their pin file names). BPF object names hold 15 bytes.

/// `HashMap<VipKey, VipMeta>`: every VIP, plus address and fragment entries (see `VipKey`).
pub const VIPS: &str = "XLB_VIPS";
/// `Array<[u32; 2]>` holding `max_vips * RING_SIZE` backend ids, two per element
/// (`limits::RING_SLOTS_PER_ENTRY`): VIP `index`'s Maglev table is slots `index * RING_SIZE ..`.
pub const RING: &str = "XLB_RING";
/// `Array<Backend>` indexed by backend id.
pub const BACKENDS: &str = "XLB_BACKENDS";
/// `Array<FlowSet>`, mmapable: the chosen backend of each recent flow, in the set its entropy
/// selects (`flows`). The number of sets is a power of two; the program learns it from the
/// global [`FLOW_SET_MASK`].
pub const FLOWS: &str = "XLB_FLOWS";
/// Global `u32` of the program: the flow table's set count minus one, set at load time.
pub const FLOW_SET_MASK: &str = "XLB_FLOW_SET_MASK";
/// `Array<FlowSet>`, mmapable: flows that peer nodes keep on another backend than the ring
/// gives (flow continuity). Same layout and placement as [`FLOWS`]; only the agent writes it,
/// the program reads it on a flow-table miss when `CONFIG_F_PEER_FLOWS` is set.
pub const PEER_FLOWS: &str = "XLB_PEER_FLOWS";
/// Global `u32` of the program: the peer table's set count minus one, set at load time.
pub const PEER_SET_MASK: &str = "XLB_PEER_SET_MASK";
/// `Array<LbConfig>` with one entry.
pub const CONFIG: &str = "XLB_CONFIG";
/// `PerCpuArray<GlobalStats>` with one entry: counters by reason.
pub const STATS: &str = "XLB_STATS";
/// `PerCpuArray<TrafficStats>` indexed by VIP index.
pub const VIP_STATS: &str = "XLB_VIP_STATS";
/// `PerCpuArray<TrafficStats>` indexed by backend id.
pub const BACKEND_STATS: &str = "XLB_BE_STATS";
/// `Array<u64>` of `ADDR_FILTER_WORDS` words: bit set for every VIP address (pre-filter).
pub const ADDR_FILTER: &str = "XLB_ADDR_FILT";
/// `PerCpuArray<IcmpBucket>` with one entry: the token bucket limiting generated ICMP errors.
pub const ICMP_BUCKET: &str = "XLB_ICMP_RL";
/// `Array<DecapConfig>` with one entry: configuration of the backend-side decap program.
pub const DECAP_CONFIG: &str = "XLB_DECAP_CFG";
/// `PerCpuArray<GlobalStats>` of the decap program.
pub const DECAP_STATS: &str = "XLB_DECAP_STAT";

/// Name of the load-balancer XDP program in the object.
pub const PROG_LB: &str = "xlb";
/// Name of the backend-side decapsulation XDP program.
pub const PROG_DECAP: &str = "xlb_decap";
/// XDP_PASS, for veth peers of XDP_TX senders (testbed).
pub const PROG_PASS: &str = "xlb_pass";
/// MAC swap + XDP_TX: the benchmarks' reflector baseline.
pub const PROG_REFLECT: &str = "xlb_reflect";
