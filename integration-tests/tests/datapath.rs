//! The datapath contract (docs/datapath.md), checked packet by packet through
//! `BPF_PROG_TEST_RUN`. Each case: {name, packet, map setup, expected verdict, expected output
//! bytes, expected counter deltas}; expected outputs come from `xlb_testkit::expect`, written from
//! the spec, never from what the program produced.
//!
//! Needs root (CAP_BPF): these tests fail loudly rather than skip. Every case loads its own
//! program instance (no pinning, no attach), so the tests run in parallel.
#![expect(
    clippy::cloned_ref_to_slice_refs,
    reason = "table setups read better as `&[vip.clone()]` than `slice::from_ref(&vip)`"
)]

use lb_common::{
    LbConfig, TrafficStats,
    addr::{PROTO_ICMPV6, PROTO_TCP, PROTO_UDP},
    flows::FLOW_WAYS,
    hash::ring_slot,
    stats::{COUNTER_SLOTS, Counter},
    values::*,
};
use xlb_testkit::{
    Datapath, Ext, Packet,
    datapath::run_errno,
    expect::{self, overhead},
    packet::{self, TCP_ACK, TCP_FIN, TCP_PSH, TCP_SYN, accounted_bytes, ip},
    world::{self, Pool, base_config},
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;

const VIP4: &str = "192.0.2.10";
const VIP6: &str = "2001:db8::10";
const CLIENT4: &str = "198.51.100.7";
const CLIENT6: &str = "2001:db8:c::7";
const ROUTER4: &str = "203.0.113.1";
const ROUTER6: &str = "2001:db8:ff::1";
const OTHER4: &str = "192.0.2.99";
const OTHER6: &str = "2001:db8::99";

fn verdict_name(v: u32) -> &'static str {
    match v {
        0 => "XDP_ABORTED",
        XDP_DROP => "XDP_DROP",
        XDP_PASS => "XDP_PASS",
        XDP_TX => "XDP_TX",
        4 => "XDP_REDIRECT",
        _ => "?",
    }
}

// ------------------------------------------------------------------------------------------------
// The table machinery.

#[derive(Clone, Debug)]
enum Out {
    /// The output must equal the input (PASS / DROP leave the frame alone).
    Unchanged,
    /// Exactly these bytes.
    Exact(Vec<u8>),
}

#[derive(Clone, Debug)]
struct Expect {
    verdict: u32,
    output: Out,
    /// Global counter deltas; every counter not listed must stay 0.
    counters: Vec<(Counter, u64)>,
    /// VIP stats after the packet (by VIP index); VIPs not listed are not checked.
    vips: Vec<(u32, TrafficStats)>,
    /// Backend stats after the packet (by id).
    backends: Vec<(u32, TrafficStats)>,
}

impl Expect {
    fn new(verdict: u32, counters: &[(Counter, u64)]) -> Self {
        Expect {
            verdict,
            output: Out::Unchanged,
            counters: counters.to_vec(),
            vips: Vec::new(),
            backends: Vec::new(),
        }
    }
    fn pass(c: Counter) -> Self {
        Self::new(XDP_PASS, &[(c, 1)])
    }
    /// A drop that must not be charged to any VIP (the VIP is not known).
    fn drop(c: Counter) -> Self {
        Self::new(XDP_DROP, &[(c, 1)])
    }
    /// A drop charged to VIP `index`.
    fn drop_vip(c: Counter, index: u32) -> Self {
        Self::new(XDP_DROP, &[(c, 1)]).vip(index, TrafficStats::new(0, 0, 0, 1))
    }
    fn vip(mut self, index: u32, s: TrafficStats) -> Self {
        self.vips.push((index, s));
        self
    }
    fn backend(mut self, id: u32, s: TrafficStats) -> Self {
        self.backends.push((id, s));
        self
    }
    fn output(mut self, bytes: Vec<u8>) -> Self {
        self.output = Out::Exact(bytes);
        self
    }
}

type Setup = Box<dyn Fn(&mut Datapath)>;

struct Case {
    name: String,
    setup: Setup,
    frame: Vec<u8>,
    expect: Expect,
}

fn case(name: impl Into<String>, setup: Setup, frame: Vec<u8>, expect: Expect) -> Case {
    Case {
        name: name.into(),
        setup,
        frame,
        expect,
    }
}

/// Resets the counters, runs `frame`, and compares everything `exp` says. `Err` holds a readable
/// report of every mismatch.
fn check(dp: &mut Datapath, frame: &[u8], exp: &Expect) -> Result<Vec<u8>, String> {
    dp.reset_counters();
    let (verdict, out) = dp.run(frame);
    let counters = dp.counters();
    let mut report = String::new();
    if verdict == 0 {
        report += "  the program returned XDP_ABORTED, which it must never do\n";
    }
    if verdict != exp.verdict {
        report += &format!(
            "  verdict: expected {}, got {}\n",
            verdict_name(exp.verdict),
            verdict_name(verdict)
        );
    }
    let mut want = [0u64; COUNTER_SLOTS];
    for (c, n) in &exp.counters {
        want[*c as usize] += n;
    }
    for (i, (w, g)) in want.iter().zip(counters.iter()).enumerate() {
        if w != g {
            let name = Counter::ALL.get(i).map_or("unnamed slot", |c| c.name());
            report += &format!("  counter {name}: expected {w}, got {g}\n");
        }
    }
    let expected_out = match &exp.output {
        Out::Unchanged => frame,
        Out::Exact(b) => b.as_slice(),
    };
    if let Some(d) = expect::diff_frames(expected_out, &out) {
        report += &format!("  output frame differs from the expected one:\n{d}");
    }
    if exp.verdict == XDP_TX {
        for p in expect::etherparse_checksum_problems(expected_out) {
            report += &format!("  TEST BUG: expected frame fails etherparse: {p}\n");
        }
        if verdict == XDP_TX {
            for p in expect::etherparse_checksum_problems(&out) {
                report += &format!("  output checksum: {p}\n");
            }
        }
    }
    for (index, s) in &exp.vips {
        let got = dp.vip_stats(*index);
        if got != *s {
            report += &format!("  VIP {index} stats: expected {s:?}, got {got:?}\n");
        }
    }
    for (id, s) in &exp.backends {
        let got = dp.backend_stats(*id);
        if got != *s {
            report += &format!("  backend {id} stats: expected {s:?}, got {got:?}\n");
        }
    }
    if report.is_empty() {
        Ok(out)
    } else {
        Err(report)
    }
}

/// Runs a step of a multi-step scenario; panics with the report.
fn step(dp: &mut Datapath, name: &str, frame: &[u8], exp: &Expect) -> Vec<u8> {
    check(dp, frame, exp).unwrap_or_else(|r| panic!("step `{name}` failed:\n{r}"))
}

/// Runs every case on its own fresh program instance; reports all failures at the end.
fn run_table(cases: Vec<Case>) {
    assert!(!cases.is_empty());
    let total = cases.len();
    eprintln!("{total} cases");
    let mut failures = Vec::new();
    for c in cases {
        let mut dp = Datapath::new();
        (c.setup)(&mut dp);
        if let Err(r) = check(&mut dp, &c.frame, &c.expect) {
            failures.push(format!("case `{}`:\n{r}", c.name));
        }
    }
    if !failures.is_empty() {
        panic!(
            "{} of {total} cases failed:\n\n{}",
            failures.len(),
            failures.join("\n")
        );
    }
}

// ------------------------------------------------------------------------------------------------
// The world: VIPs with known ring layouts.

#[derive(Clone, Debug)]
struct Vip {
    addr: &'static str,
    port: u16,
    proto: u8,
    mode: u8,
    flags: u32,
    index: u32,
    pool: Pool,
}

impl Vip {
    /// VIP `index` with 4 backends of family `backend_v4`, ids `index * 8 + 1 ..`.
    fn new(
        addr: &'static str,
        port: u16,
        proto: u8,
        mode: u8,
        index: u32,
        backend_v4: bool,
    ) -> Self {
        Vip {
            addr,
            port,
            proto,
            mode,
            flags: 0,
            index,
            pool: Pool::new(index, index * 8 + 1, 4, backend_v4),
        }
    }
    fn flags(mut self, f: u32) -> Self {
        self.flags = f;
        self
    }
    fn install(&self, dp: &mut Datapath) {
        self.pool.install(dp);
        dp.add_vip(
            ip(self.addr),
            self.port,
            self.proto,
            self.mode,
            self.flags,
            self.index,
        );
    }
    fn affinity(&self) -> bool {
        self.flags & VIP_F_SRC_AFFINITY != 0
    }
}

fn setup(cfg: LbConfig, vips: &[Vip]) -> Setup {
    let vips = vips.to_vec();
    Box::new(move |dp: &mut Datapath| {
        dp.set_config(cfg);
        for v in &vips {
            v.install(dp);
        }
    })
}

/// [`setup`] without rings and backends: for packets that never reach the backend choice (it
/// saves filling 65537 slots per VIP).
fn setup_no_ring(cfg: LbConfig, vips: &[Vip]) -> Setup {
    let vips = vips.to_vec();
    Box::new(move |dp: &mut Datapath| {
        dp.set_config(cfg);
        for v in &vips {
            dp.add_vip(ip(v.addr), v.port, v.proto, v.mode, v.flags, v.index);
        }
    })
}

fn tcp_vip4(mode: u8, backend_v4: bool) -> Vip {
    Vip::new(VIP4, 80, PROTO_TCP, mode, 0, backend_v4)
}

/// The expectation for `frame` (built from `pkt`) forwarded by `vip`, flow counter `flow`.
fn fwd(cfg: &LbConfig, vip: &Vip, pkt: &Packet, flow: Counter) -> Expect {
    let hash = pkt.hash(cfg.hash_seed, vip.affinity());
    let id = vip.pool.choose(hash);
    fwd_to(cfg, vip, pkt, id, flow)
}

/// `pkt` forwarded to backend `id` (the outer headers carry the flow's entropy).
fn fwd_to(cfg: &LbConfig, vip: &Vip, pkt: &Packet, id: u32, flow: Counter) -> Expect {
    let frame = &pkt.frame();
    let entropy = pkt.entropy(cfg.hash_seed);
    let out = expect::forwarded(frame, cfg, &vip.pool.backend(id), vip.mode, entropy);
    let new = u64::from(matches!(
        flow,
        Counter::FlowMiss | Counter::FlowSyn | Counter::FlowRehash
    ));
    let len = accounted_bytes(frame);
    let mut counters = vec![(Counter::Tx, 1)];
    counters.push((flow, 1));
    Expect::new(XDP_TX, &counters)
        .output(out)
        .vip(vip.index, TrafficStats::new(1, len, new, 0))
        .backend(id, TrafficStats::new(1, len, new, 0))
}

/// `new_flows` a VIP and its backend gain when section 4 took a ring choice (FlowSyn / FlowMiss
/// / FlowRehash) but section 5 did not forward the packet (too big, unsupported mode): none,
/// `new_flows` counts forwarded packets only (docs/datapath.md §4).
const NEW_FLOWS_WITHOUT_FORWARD: u64 = 0;

/// A packet dropped in section 5 (after section 4 picked its backend): the flow counter of the
/// pick, the drop counter, VIP `drops`; `new_flows` stays (counted on forwarding only).
fn dropped_after_pick(c: Counter, vip: &Vip, pkt: &Packet, flow: Counter) -> Expect {
    let id = vip.pool.choose(pkt.hash(world::SEED, vip.affinity()));
    let new = if flow == Counter::FlowHit {
        0
    } else {
        NEW_FLOWS_WITHOUT_FORWARD
    };
    Expect::new(XDP_DROP, &[(c, 1), (flow, 1)])
        .vip(vip.index, TrafficStats::new(0, 0, new, 1))
        .backend(id, TrafficStats::new(0, 0, new, 0))
}

const MODES: [(u8, &str); 3] = [(MODE_IPIP, "ipip"), (MODE_GUE, "gue"), (MODE_DSR_L2, "dsr")];

// ------------------------------------------------------------------------------------------------
// Sections 1 and 2: readiness, non-VIP traffic, parsing.

#[test]
fn not_ready_config_passes_everything() {
    let vip = tcp_vip4(MODE_IPIP, true);
    let pkt = Packet::tcp(CLIENT4, 40000, VIP4, 80, TCP_SYN);
    let mut not_ready = base_config();
    not_ready.flags = CONFIG_F_ANY_PORT_VIPS; // everything but READY
    run_table(vec![
        case(
            "no config written (zeroed entry)",
            Box::new({
                let vip = vip.clone();
                move |dp: &mut Datapath| vip.install(dp)
            }),
            pkt.frame(),
            Expect::pass(Counter::PassNotReady),
        ),
        case(
            "config without CONFIG_F_READY",
            setup(not_ready, &[vip.clone()]),
            pkt.frame(),
            Expect::pass(Counter::PassNotReady),
        ),
        case(
            "not ready: even a runt frame passes as not ready",
            setup(not_ready, &[vip]),
            pkt.frame()[..20].to_vec(),
            Expect::pass(Counter::PassNotReady),
        ),
    ]);
}

#[test]
fn non_vip_traffic_passes_untouched() {
    let cfg = base_config();
    let v4 = tcp_vip4(MODE_IPIP, true);
    let v6 = Vip::new(VIP6, 443, PROTO_TCP, MODE_GUE, 1, false);
    let w = || setup(cfg, &[v4.clone(), v6.clone()]);
    // A non-VIP address whose pre-filter bit is set, as a hash collision with a VIP address
    // would leave it: the program must look it up and pass it (documentation range only).
    const COLLIDE: &str = "192.0.2.98";
    let collision = {
        let (v4, v6) = (v4.clone(), v6.clone());
        move || -> Setup {
            let inner = setup(cfg, &[v4.clone(), v6.clone()]);
            Box::new(move |dp: &mut Datapath| {
                inner(dp);
                dp.set_filter_bit(ip(COLLIDE));
            })
        }
    };
    let mut arp = packet::eth_header([0xff; 6], packet::CLIENT_MAC, None, packet::ETH_P_ARP);
    arp.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    arp.extend_from_slice(&[0u8; 20]);
    let mut qinq = Packet::tcp(CLIENT4, 1, VIP4, 80, TCP_SYN).vlan(100).frame();
    // A second tag: outer 0x8100 then another 0x8100 as the inner EtherType.
    qinq.splice(16..16, [0x81, 0x00, 0x00, 0x65]);
    let cfg2 = LbConfig {
        flags: cfg.flags | CONFIG_F_ANY_PORT_VIPS,
        ..cfg
    };
    let fo = v4.clone();
    let frag_only: Setup = Box::new(move |dp: &mut Datapath| {
        dp.set_config(cfg2);
        fo.install(dp);
        dp.add_frag_alias(ip(VIP4), PROTO_TCP, MODE_IPIP, 0, 0);
    });
    // The agent's fragment aliases `(address, 0, proto)` for addresses without an all-ports VIP
    // (where `CONFIG_F_ANY_PORT_VIPS` may well be off): a whole TCP/UDP packet to port 0 finds
    // the alias by its exact port, and must still not be taken for VIP traffic.
    let aliases = {
        let (v4, v6) = (v4.clone(), v6.clone());
        move |cfg: LbConfig| -> Setup {
            let (v4, v6) = (v4.clone(), v6.clone());
            Box::new(move |dp: &mut Datapath| {
                dp.set_config(cfg);
                v4.install(dp);
                v6.install(dp);
                dp.add_frag_alias(ip(VIP4), PROTO_TCP, MODE_IPIP, 0, 0);
                dp.add_frag_alias(ip(VIP4), PROTO_UDP, MODE_IPIP, 0, 0);
                dp.add_frag_alias(ip(VIP6), PROTO_TCP, MODE_GUE, 0, 1);
            })
        }
    };
    let pass = || Expect::pass(Counter::Pass).vip(0, TrafficStats::new(0, 0, 0, 0));
    let pass_both = || pass().vip(1, TrafficStats::new(0, 0, 0, 0));
    run_table(vec![
        case(
            "port 0, tcp SYN v4 to a frag-only alias (exact-port lookup)",
            aliases(cfg),
            Packet::tcp(CLIENT4, 1000, VIP4, 0, TCP_SYN).frame(),
            pass_both(),
        ),
        case(
            "port 0, tcp ACK v4 to a frag-only alias (flow-table miss first)",
            aliases(cfg),
            Packet::tcp(CLIENT4, 1000, VIP4, 0, TCP_ACK).frame(),
            pass_both(),
        ),
        case(
            "port 0, udp v4 to a frag-only alias",
            aliases(cfg),
            Packet::udp(CLIENT4, 1000, VIP4, 0).frame(),
            pass_both(),
        ),
        case(
            "port 0, tcp SYN v6 to a frag-only alias",
            aliases(cfg),
            Packet::tcp(CLIENT6, 1000, VIP6, 0, TCP_SYN).frame(),
            pass_both(),
        ),
        case(
            "port 0, tcp SYN v4 to a frag-only alias, all-ports lookup on",
            aliases(cfg2),
            Packet::tcp(CLIENT4, 1000, VIP4, 0, TCP_SYN).frame(),
            pass_both(),
        ),
        case(
            "tcp v4 to another address",
            w(),
            Packet::tcp(CLIENT4, 1000, OTHER4, 80, TCP_SYN).frame(),
            pass(),
        ),
        case(
            "tcp v6 to another address",
            w(),
            Packet::tcp(CLIENT6, 1000, OTHER6, 443, TCP_SYN).frame(),
            pass(),
        ),
        case(
            "udp v4 to another address with vlan",
            w(),
            Packet::udp(CLIENT4, 53, OTHER4, 53).vlan(7).frame(),
            pass(),
        ),
        case(
            "pre-filter collision, not a VIP address",
            collision(),
            Packet::tcp(CLIENT4, 1000, COLLIDE, 80, TCP_SYN).frame(),
            pass(),
        ),
        case("ARP", w(), arp, pass()),
        case("second 802.1Q tag", w(), qinq, pass()),
        case(
            "VIP address, GRE",
            w(),
            Packet::raw(CLIENT4, VIP4, 47).payload_len(20).frame(),
            pass(),
        ),
        case(
            "VIP address, tcp to a port without VIP",
            w(),
            Packet::tcp(CLIENT4, 1000, VIP4, 81, TCP_SYN).frame(),
            pass(),
        ),
        case(
            "VIP address, udp to a tcp-only VIP port",
            w(),
            Packet::udp(CLIENT4, 1000, VIP4, 80).frame(),
            pass(),
        ),
        case(
            "v6 VIP address, udp to a tcp-only port",
            w(),
            Packet::udp(CLIENT6, 1000, VIP6, 443).frame(),
            pass(),
        ),
        case(
            "frag-only alias is not a VIP for whole packets (any-port lookup)",
            frag_only,
            Packet::tcp(CLIENT4, 1000, VIP4, 81, TCP_SYN).frame(),
            pass(),
        ),
        case(
            "VIP address, icmp timestamp",
            w(),
            Packet::icmp(CLIENT4, VIP4, 13, 0).frame(),
            pass(),
        ),
        case(
            "VIP address, icmp echo reply",
            w(),
            Packet::icmp(CLIENT4, VIP4, 0, 0).frame(),
            pass(),
        ),
        case(
            "VIP address, icmp dest-unreach other code",
            w(),
            Packet::icmp(ROUTER4, VIP4, 3, 1).frame(),
            pass(),
        ),
        case(
            "v6 VIP address, icmpv6 dest-unreach",
            w(),
            Packet::icmp(ROUTER6, VIP6, 1, 0).frame(),
            pass(),
        ),
        case(
            "echo request to another address",
            w(),
            Packet::echo(CLIENT4, OTHER4).frame(),
            pass(),
        ),
    ]);
}

#[test]
fn malformed_ip_headers() {
    let cfg = base_config();
    let v4 = tcp_vip4(MODE_IPIP, true);
    let v6 = Vip::new(VIP6, 443, PROTO_TCP, MODE_GUE, 1, false);
    let w = || setup(cfg, &[v4.clone(), v6.clone()]);
    let good4 = Packet::tcp(CLIENT4, 1000, VIP4, 80, TCP_SYN).frame();
    let good6 = Packet::tcp(CLIENT6, 1000, VIP6, 443, TCP_SYN).frame();
    let other4 = Packet::tcp(CLIENT4, 1000, OTHER4, 80, TCP_SYN).frame();
    let patch4 = |f: &[u8], edit: &dyn Fn(&mut Vec<u8>)| {
        let mut f = f.to_vec();
        edit(&mut f);
        packet::fix_ipv4_checksum(&mut f, 14);
        f
    };
    let bad = |c| {
        Expect::drop(c)
            .vip(0, TrafficStats::new(0, 0, 0, 0))
            .vip(1, TrafficStats::new(0, 0, 0, 0))
    };
    let mut cases = vec![
        case(
            "v4 version 5",
            w(),
            patch4(&good4, &|f| f[14] = 0x55),
            bad(Counter::DropBadHeader),
        ),
        case(
            "v4 IHL 4",
            w(),
            patch4(&good4, &|f| f[14] = 0x44),
            bad(Counter::DropBadHeader),
        ),
        case(
            "v4 total length < IHL*4",
            w(),
            patch4(&good4, &|f| packet::put_u16(f, 16, 19)),
            bad(Counter::DropBadHeader),
        ),
        case(
            "v4 total length > bytes present",
            w(),
            patch4(&good4, &|f| {
                let l = u16::from_be_bytes([f[16], f[17]]);
                packet::put_u16(f, 16, l + 1)
            }),
            bad(Counter::DropBadHeader),
        ),
        case(
            "v4 IHL*4 > total length (options beyond the packet)",
            w(),
            patch4(
                &Packet::tcp(CLIENT4, 1000, VIP4, 80, TCP_SYN)
                    .payload_len(0)
                    .frame(),
                &|f| f[14] = 0x4f,
            ),
            bad(Counter::DropBadHeader),
        ),
        case(
            "v6 payload length 0 (jumbogram)",
            w(),
            {
                let mut f = good6.clone();
                packet::put_u16(&mut f, 18, 0);
                f
            },
            bad(Counter::DropBadHeader),
        ),
        case(
            "v6 payload length > bytes present",
            w(),
            {
                let mut f = good6.clone();
                let l = u16::from_be_bytes([f[18], f[19]]);
                packet::put_u16(&mut f, 18, l + 1);
                f
            },
            bad(Counter::DropBadHeader),
        ),
        case(
            "bad v4 header to a non-VIP address passes",
            w(),
            patch4(&other4, &|f| f[14] = 0x44),
            Expect::pass(Counter::Pass),
        ),
    ];
    // Ethernet padding is fine on PASS too.
    cases.push(case(
        "non-VIP with ethernet padding",
        w(),
        Packet::tcp(CLIENT4, 1000, OTHER4, 80, TCP_SYN)
            .padding(12)
            .frame(),
        Expect::pass(Counter::Pass),
    ));
    run_table(cases);
}

// ------------------------------------------------------------------------------------------------
// Sections 4 and 5: forwarding in every mode.

#[test]
fn forwarding_every_mode_family_and_protocol() {
    let cfg = base_config();
    let mut cases = Vec::new();
    for (mode, mname) in MODES {
        for v4 in [true, false] {
            // Backend families the mode can carry for this VIP family.
            let backend_families: &[bool] = match (mode, v4) {
                (MODE_DSR_L2, true) => &[true],
                (MODE_DSR_L2, false) => &[false],
                (_, true) => &[true, false],
                (_, false) => &[false],
            };
            for &bv4 in backend_families {
                for (proto, pname) in [(PROTO_TCP, "tcp"), (PROTO_UDP, "udp")] {
                    let (vaddr, client) = if v4 { (VIP4, CLIENT4) } else { (VIP6, CLIENT6) };
                    let vip = Vip::new(vaddr, 8080, proto, mode, 2, bv4);
                    let name = format!(
                        "{mname} {} VIP, {} backend, {pname}",
                        if v4 { "v4" } else { "v6" },
                        if bv4 { "v4" } else { "v6" }
                    );
                    let (pkt, flow) = if proto == PROTO_TCP {
                        (
                            Packet::tcp(client, 40001, vaddr, 8080, TCP_SYN),
                            Counter::FlowSyn,
                        )
                    } else {
                        (Packet::udp(client, 40001, vaddr, 8080), Counter::FlowMiss)
                    };
                    cases.push(case(
                        name.clone(),
                        setup(cfg, &[vip.clone()]),
                        pkt.frame(),
                        fwd(&cfg, &vip, &pkt, flow),
                    ));
                    // A non-SYN TCP segment / another UDP flow: flow-table miss.
                    let pkt2 = if proto == PROTO_TCP {
                        Packet::tcp(client, 50123, vaddr, 8080, TCP_ACK | TCP_PSH)
                    } else {
                        Packet::udp(client, 50123, vaddr, 8080).payload_len(300)
                    };
                    cases.push(case(
                        format!("{name}, second flow, flow-table miss"),
                        setup(cfg, &[vip.clone()]),
                        pkt2.frame(),
                        fwd(&cfg, &vip, &pkt2, Counter::FlowMiss),
                    ));
                }
            }
        }
    }
    run_table(cases);
}

#[test]
fn outer_ttl_is_configured_not_copied() {
    // The outer header is xlb's: its TTL / hop limit is `LbConfig::outer_ttl` whatever the
    // inner packet carries (0 and 1 included); the inner packet keeps its own. dsr-l2 adds no
    // header, so the frame keeps the client's TTL.
    let default = base_config();
    assert_eq!(default.outer_ttl, world::OUTER_TTL);
    let custom = LbConfig {
        outer_ttl: 17,
        ..default
    };
    let mut cases = Vec::new();
    for cfg in [default, custom] {
        for (mode, mname) in MODES {
            for (v4, bv4) in [(true, true), (true, false), (false, false)] {
                if mode == MODE_DSR_L2 && v4 != bv4 {
                    continue;
                }
                let (vaddr, client) = if v4 { (VIP4, CLIENT4) } else { (VIP6, CLIENT6) };
                let vip = Vip::new(vaddr, 8080, PROTO_UDP, mode, 2, bv4);
                for inner_ttl in [0u8, 1] {
                    let pkt = Packet::udp(client, 40001, vaddr, 8080).ttl(inner_ttl);
                    let exp = fwd(&cfg, &vip, &pkt, Counter::FlowMiss);
                    cases.push(case(
                        format!(
                            "{mname} {} VIP, {} backend, inner TTL {inner_ttl}, outer-ttl {}",
                            fam(v4),
                            fam(bv4),
                            cfg.outer_ttl
                        ),
                        setup(cfg, &[vip.clone()]),
                        pkt.frame(),
                        exp,
                    ));
                }
            }
        }
    }
    // The expectations are built from the spec; spell the rule out once on the bytes too.
    let vip = Vip::new(VIP4, 8080, PROTO_UDP, MODE_IPIP, 2, true);
    let pkt = Packet::udp(CLIENT4, 40001, VIP4, 8080).ttl(0);
    let Expect {
        output: Out::Exact(out),
        ..
    } = fwd(&custom, &vip, &pkt, Counter::FlowMiss)
    else {
        unreachable!("forwarding has exact output")
    };
    assert_eq!(
        (out[14 + 8], out[14 + 20 + 8]),
        (17, 0),
        "outer TTL, inner TTL"
    );
    run_table(cases);
}

#[test]
fn header_variants_vlan_options_padding() {
    let cfg = base_config();
    let mut cases = Vec::new();
    for (mode, mname) in MODES {
        for bv4 in [true, false] {
            if mode == MODE_DSR_L2 && !bv4 {
                continue;
            }
            let vip4 = tcp_vip4(mode, bv4);
            let v = |p: Packet| p;
            let variants: Vec<(&str, Packet)> = vec![
                (
                    "vlan",
                    v(Packet::tcp(CLIENT4, 1234, VIP4, 80, TCP_SYN).vlan(0x2064)),
                ),
                (
                    "ipv4 options",
                    Packet::tcp(CLIENT4, 1234, VIP4, 80, TCP_ACK)
                        .options(vec![0x94, 0x04, 0, 0, 0x01, 0x01, 0x01, 0x00]),
                ),
                (
                    "40 bytes of ipv4 options + vlan",
                    Packet::tcp(CLIENT4, 1234, VIP4, 80, TCP_ACK)
                        .options({
                            let mut o = vec![0x01; 39];
                            o.push(0);
                            o
                        })
                        .vlan(5),
                ),
                (
                    "ethernet padding removed",
                    Packet::tcp(CLIENT4, 1234, VIP4, 80, TCP_ACK)
                        .payload_len(0)
                        .padding(6),
                ),
                (
                    "DF clear, tos, ttl, id copied",
                    Packet::tcp(CLIENT4, 1234, VIP4, 80, TCP_ACK)
                        .df(false)
                        .tos(0xb8)
                        .ttl(3)
                        .ip_id(0xbeef),
                ),
                (
                    "udp with vlan",
                    Packet::udp(CLIENT4, 5353, VIP4, 80).vlan(0xf00d),
                ),
            ];
            for (vname, pkt) in variants {
                let mut vip = vip4.clone();
                if pkt.proto() == PROTO_UDP {
                    vip.proto = PROTO_UDP;
                }
                let flow = if pkt.proto() == PROTO_TCP
                    && matches!(pkt.l4, packet::L4::Tcp { flags, .. } if flags == TCP_SYN)
                {
                    Counter::FlowSyn
                } else {
                    Counter::FlowMiss
                };
                cases.push(case(
                    format!(
                        "{mname} v4 VIP, {} backend: {vname}",
                        if bv4 { "v4" } else { "v6" }
                    ),
                    setup(cfg, &[vip.clone()]),
                    pkt.frame(),
                    fwd(&cfg, &vip, &pkt, flow),
                ));
            }
        }
        // IPv6 with a tag and padding.
        let bv4 = false;
        let vip6 = Vip::new(VIP6, 443, PROTO_TCP, mode, 3, bv4);
        for (vname, pkt) in [
            (
                "vlan",
                Packet::tcp(CLIENT6, 999, VIP6, 443, TCP_ACK).vlan(42),
            ),
            (
                "padding + traffic class",
                Packet::tcp(CLIENT6, 999, VIP6, 443, TCP_ACK)
                    .payload_len(0)
                    .tos(0x2e)
                    .padding(4),
            ),
        ] {
            cases.push(case(
                format!("{mname} v6 VIP: {vname}"),
                setup(cfg, &[vip6.clone()]),
                pkt.frame(),
                fwd(&cfg, &vip6, &pkt, Counter::FlowMiss),
            ));
        }
    }
    run_table(cases);
}

#[test]
fn ipv6_extension_headers() {
    let cfg = base_config();
    let vip = Vip::new(VIP6, 443, PROTO_TCP, MODE_GUE, 1, false);
    let all = [
        Ext::HopByHop(0),
        Ext::DestOpts(1),
        Ext::Routing(2),
        Ext::Ah(4),
        Ext::DestOpts(0),
    ];
    let mut cases = Vec::new();
    for n in 1..=4 {
        let mut pkt = Packet::tcp(CLIENT6, 2000 + n as u16, VIP6, 443, TCP_ACK);
        for e in &all[..n] {
            pkt = pkt.ext(e.clone());
        }
        cases.push(case(
            format!("{n} extension header(s) walked"),
            setup(cfg, &[vip.clone()]),
            pkt.frame(),
            fwd(&cfg, &vip, &pkt, Counter::FlowMiss),
        ));
    }
    let mut five = Packet::tcp(CLIENT6, 2005, VIP6, 443, TCP_ACK);
    for e in &all {
        five = five.ext(e.clone());
    }
    cases.push(case(
        "5 extension headers: dropped",
        setup(cfg, &[vip.clone()]),
        five.frame(),
        Expect::drop(Counter::DropTooManyExtHeaders),
    ));
    let mut five_other = Packet::tcp(CLIENT6, 2005, OTHER6, 443, TCP_ACK);
    for e in &all {
        five_other = five_other.ext(e.clone());
    }
    cases.push(case(
        "5 extension headers to another address: passed",
        setup(cfg, &[vip.clone()]),
        five_other.frame(),
        Expect::pass(Counter::Pass),
    ));
    let ah = Packet::udp(CLIENT6, 7, VIP6, 443).ext(Ext::Ah(1));
    let uvip = Vip {
        proto: PROTO_UDP,
        ..vip.clone()
    };
    cases.push(case(
        "AH with minimum length, udp",
        setup(cfg, &[uvip.clone()]),
        ah.frame(),
        fwd(&cfg, &uvip, &ah, Counter::FlowMiss),
    ));
    run_table(cases);
}

// ------------------------------------------------------------------------------------------------
// Truncation at every header boundary.

/// A case of a table that shares one program instance: for packets that change no map state
/// besides the counters (passes and header drops), loading one program per case would only cost
/// time.
type SharedCase = (String, Vec<u8>, Expect);

fn run_shared(setup: Setup, cases: Vec<SharedCase>) {
    let total = cases.len();
    eprintln!("{total} cases on one program instance");
    let mut dp = Datapath::new();
    setup(&mut dp);
    let failures: Vec<String> = cases
        .into_iter()
        .filter_map(|(name, frame, exp)| {
            check(&mut dp, &frame, &exp)
                .err()
                .map(|r| format!("case `{name}`:\n{r}"))
        })
        .collect();
    if !failures.is_empty() {
        panic!(
            "{} of {total} cases failed:\n\n{}",
            failures.len(),
            failures.join("\n")
        );
    }
}

/// For each prefix length of `pkt`'s frame: the raw cut (length fields unchanged) and, past the
/// fixed IP header, the consistent cut (IP length field agreeing with the cut).
fn truncation_cases(
    label: &str,
    pkt: &Packet,
    cases: &mut Vec<SharedCase>,
    errno_cases: &mut Vec<(String, Vec<u8>)>,
) {
    let frame = pkt.frame();
    let l2 = pkt.l2_len();
    let fixed = if pkt.is_v4() { 20 } else { 40 };
    let hl = pkt.ip_header_len();
    let l4_min = match pkt.proto() {
        PROTO_TCP => 20,
        _ => 8, // UDP, ICMP
    };
    let end_of_l4 = l2 + hl + l4_min;
    for len in 0..frame.len() {
        let cut = frame[..len].to_vec();
        if len < 14 {
            errno_cases.push((format!("{label}: raw cut at {len}"), cut));
            continue;
        }
        if len <= end_of_l4 {
            let exp = if len < l2 + fixed {
                Expect::pass(Counter::PassMalformed)
            } else {
                // The IP length field claims more than is present.
                Expect::drop(Counter::DropBadHeader)
            };
            cases.push((format!("{label}: raw cut at {len}"), cut, exp));
        }
        if len >= l2 + fixed && len < end_of_l4 {
            let f = packet::truncate_consistently(&frame, l2, len);
            let ip_len = len - l2;
            // v4: IHL*4 > total length; v6: payload length 0 is a jumbogram.
            let bad_header = if pkt.is_v4() {
                ip_len < hl
            } else {
                ip_len == 40
            };
            let exp = if bad_header {
                Expect::drop(Counter::DropBadHeader)
            } else {
                Expect::drop(Counter::DropTruncated)
            };
            cases.push((format!("{label}: consistent cut at {len}"), f, exp));
        }
    }
}

#[test]
fn truncation_at_every_header_boundary() {
    let vips = [
        tcp_vip4(MODE_IPIP, true),
        Vip::new(VIP4, 53, PROTO_UDP, MODE_GUE, 1, true),
        Vip::new(VIP6, 443, PROTO_TCP, MODE_GUE, 2, false),
    ];
    let mut cases = Vec::new();
    let mut errno = Vec::new();
    for (label, pkt) in [
        (
            "v4 tcp, vlan, options",
            Packet::tcp(CLIENT4, 1, VIP4, 80, TCP_ACK)
                .vlan(9)
                .options(vec![1, 1, 1, 0])
                .payload_len(0),
        ),
        ("v4 udp", Packet::udp(CLIENT4, 1, VIP4, 53).payload_len(0)),
        (
            "v6 tcp, 2 ext headers",
            Packet::tcp(CLIENT6, 1, VIP6, 443, TCP_ACK)
                .ext(Ext::HopByHop(0))
                .ext(Ext::DestOpts(1))
                .payload_len(0),
        ),
        ("v4 echo", Packet::echo(CLIENT4, VIP4).payload_len(0)),
        (
            "v6 echo, vlan",
            Packet::echo(CLIENT6, VIP6).vlan(1).payload_len(0),
        ),
    ] {
        truncation_cases(label, &pkt, &mut cases, &mut errno);
    }
    // The kernel refuses XDP test runs shorter than an Ethernet header (ETH_HLEN) with EINVAL.
    let dp = Datapath::new();
    for (name, f) in &errno {
        match dp.try_run(f) {
            Err(e) => assert_eq!(run_errno(&e), Some(libc::EINVAL), "{name}: {e}"),
            Ok(r) => panic!("{name}: the kernel ran a {}-byte frame: {r:?}", f.len()),
        }
    }
    run_shared(setup_no_ring(base_config(), &vips), cases);
}

#[test]
fn kernel_test_run_limits() {
    let cfg = base_config();
    let vip = tcp_vip4(MODE_IPIP, true);
    let mut dp = Datapath::new();
    setup(cfg, &[vip.clone()])(&mut dp);
    // Zero-length: refused by BPF_PROG_TEST_RUN (size < ETH_HLEN), never reaches the program.
    let e = dp.try_run(&[]).expect_err("empty frame");
    assert_eq!(run_errno(&e), Some(libc::EINVAL), "{e}");
    assert_eq!(dp.counters(), [0; COUNTER_SLOTS]);
    // 14 bytes: the smallest frame the kernel runs; no IP header: PassMalformed.
    let (v, out) = dp.run(&Packet::tcp(CLIENT4, 1, VIP4, 80, TCP_SYN).frame()[..14]);
    assert_eq!((v, out.len()), (XDP_PASS, 14));
    // A 9000-byte frame (jumbo). Kernel behaviour (6.18, net/bpf/test_run.c): the linear XDP
    // buffer holds at most PAGE_SIZE - XDP_PACKET_HEADROOM - sizeof(skb_shared_info) bytes; the
    // rest of a larger `data_in` goes into fragments (a multi-buffer xdp_buff), and the run is
    // accepted even though the program is not declared `xdp.frags`. The program only sees the
    // linear part, so the IPv4 total length exceeds the bytes present: DropBadHeader, and
    // data_out returns all 9000 bytes (linear part + fragments) untouched.
    let big = Packet::tcp(CLIENT4, 1, VIP4, 80, TCP_ACK).payload_len(9000 - 54);
    let frame = big.frame();
    assert_eq!(frame.len(), 9000);
    step(
        &mut dp,
        "9000-byte frame",
        &frame,
        &Expect::drop(Counter::DropBadHeader).vip(0, TrafficStats::new(0, 0, 0, 0)),
    );
    // The largest frame the kernel keeps linear is forwarded end to end; one byte more is split
    // and dropped as above.
    let frame_of = |len: usize| Packet::tcp(CLIENT4, 1, VIP4, 80, TCP_ACK).payload_len(len - 54);
    let largest = (1500..=4096usize)
        .rev()
        .find(|&len| dp.run(&frame_of(len).frame()).0 == XDP_TX)
        .expect("some frame of 1500..4096 bytes is forwarded");
    assert!(
        largest >= 3000,
        "linear XDP test frames should reach 3000 bytes, got {largest}"
    );
    let p = frame_of(largest);
    let mut dp = Datapath::new();
    setup(cfg, &[vip.clone()])(&mut dp);
    step(
        &mut dp,
        "largest linear frame",
        &p.frame(),
        &fwd(&cfg, &vip, &p, Counter::FlowMiss),
    );
    let p1 = frame_of(largest + 1);
    step(
        &mut dp,
        "one byte more: fragments",
        &p1.frame(),
        &Expect::drop(Counter::DropBadHeader),
    );
    eprintln!("largest linear XDP test frame: {largest} bytes");
}

// ------------------------------------------------------------------------------------------------
// Section 3: fragments.

#[test]
fn fragments_hash_on_addresses_and_reach_one_backend() {
    let cfg = base_config();
    let any_port = LbConfig {
        flags: cfg.flags | CONFIG_F_ANY_PORT_VIPS,
        ..cfg
    };
    // An all-ports UDP VIP, and a frag-only alias for TCP to VIP index 1.
    let allports = Vip::new(VIP4, 0, PROTO_UDP, MODE_IPIP, 0, true);
    let tcp80 = Vip::new(VIP4, 80, PROTO_TCP, MODE_GUE, 1, true);
    let v6all = Vip::new(VIP6, 0, PROTO_UDP, MODE_GUE, 2, false);
    let v6aff = Vip::new(VIP6, 0, PROTO_TCP, MODE_IPIP, 3, false).flags(VIP_F_SRC_AFFINITY);
    let world = {
        let vips = [
            allports.clone(),
            tcp80.clone(),
            v6all.clone(),
            v6aff.clone(),
        ];
        move || -> Setup {
            let vips = vips.clone();
            Box::new(move |dp: &mut Datapath| {
                setup(any_port, &vips)(dp);
                dp.add_frag_alias(ip(VIP4), PROTO_TCP, MODE_GUE, 0, 1);
            })
        }
    };
    let frag_fwd = |vip: &Vip, pkt: &Packet| {
        let hash = pkt.hash(cfg.hash_seed, vip.affinity());
        let id = vip.pool.choose(hash);
        let mut e = fwd_to(&any_port, vip, pkt, id, Counter::Fragment);
        e.vips[0].1.new_flows = 0;
        e.backends[0].1.new_flows = 0;
        e
    };
    let udp_first = Packet::udp(CLIENT4, 5000, VIP4, 9999)
        .payload_len(64)
        .frag_v4(0, true);
    let udp_mid = Packet::raw(CLIENT4, VIP4, PROTO_UDP)
        .payload_len(64)
        .frag_v4(9, true);
    let udp_last = Packet::raw(CLIENT4, VIP4, PROTO_UDP)
        .payload_len(20)
        .frag_v4(18, false);
    let tcp_first = Packet::tcp(CLIENT4, 5000, VIP4, 80, TCP_ACK).frag_v4(0, true);
    let tcp_mid = Packet::raw(CLIENT4, VIP4, PROTO_TCP)
        .payload_len(48)
        .frag_v4(6, true);
    let v6_first = Packet::udp(CLIENT6, 5000, VIP6, 53)
        .ext(Ext::Fragment {
            offset: 0,
            more: true,
            id: 77,
        })
        .payload_len(64);
    let v6_mid = Packet::raw(CLIENT6, VIP6, PROTO_UDP)
        .ext(Ext::Fragment {
            offset: 9,
            more: false,
            id: 77,
        })
        .payload_len(16);
    let v6_aff = Packet::tcp(CLIENT6, 5000, VIP6, 22, TCP_SYN)
        .ext(Ext::HopByHop(0))
        .ext(Ext::Fragment {
            offset: 0,
            more: true,
            id: 78,
        });
    // Same datagram, same backend: the first fragment (with ports) hashes like the others.
    for (a, b) in [
        (&udp_first, &udp_mid),
        (&udp_first, &udp_last),
        (&tcp_first, &tcp_mid),
        (&v6_first, &v6_mid),
    ] {
        assert_eq!(
            a.hash(world::SEED, false),
            b.hash(world::SEED, false),
            "test bug: fragment hashes differ"
        );
    }
    let mut cases = vec![
        case(
            "v4 udp first fragment (MF)",
            world(),
            udp_first.frame(),
            frag_fwd(&allports, &udp_first),
        ),
        case(
            "v4 udp middle fragment",
            world(),
            udp_mid.frame(),
            frag_fwd(&allports, &udp_mid),
        ),
        case(
            "v4 udp last fragment (offset, no MF)",
            world(),
            udp_last.frame(),
            frag_fwd(&allports, &udp_last),
        ),
        case(
            "v4 tcp first fragment via frag-only alias",
            world(),
            tcp_first.frame(),
            frag_fwd(&tcp80, &tcp_first),
        ),
        case(
            "v4 tcp middle fragment via frag-only alias",
            world(),
            tcp_mid.frame(),
            frag_fwd(&tcp80, &tcp_mid),
        ),
        case(
            "v6 fragment header, first",
            world(),
            v6_first.frame(),
            frag_fwd(&v6all, &v6_first),
        ),
        case(
            "v6 fragment header, last",
            world(),
            v6_mid.frame(),
            frag_fwd(&v6all, &v6_mid),
        ),
        case(
            "v6 fragment after hop-by-hop, source affinity",
            world(),
            v6_aff.frame(),
            frag_fwd(&v6aff, &v6_aff),
        ),
        case(
            "v4 fragment, no VIP for the protocol: pass",
            world(),
            Packet::raw(CLIENT4, VIP4, 132)
                .payload_len(16)
                .frag_v4(3, true)
                .frame(),
            Expect::pass(Counter::Pass),
        ),
        case(
            "v6 fragment, no VIP for the protocol: pass",
            world(),
            Packet::raw(CLIENT6, VIP6, PROTO_ICMPV6)
                .ext(Ext::Fragment {
                    offset: 3,
                    more: true,
                    id: 1,
                })
                .payload_len(16)
                .frame(),
            Expect::pass(Counter::Pass),
        ),
    ];
    // Fragments do not need the any-port flag: the (dst, 0, proto) lookup is their own.
    let no_flag = {
        let v = allports.clone();
        Box::new(move |dp: &mut Datapath| setup(cfg, &[v.clone()])(dp)) as Setup
    };
    let mut e = frag_fwd(&allports, &udp_mid);
    if let Out::Exact(o) = &mut e.output {
        *o = expect::forwarded(
            &udp_mid.frame(),
            &cfg,
            &allports
                .pool
                .backend(allports.pool.choose(udp_mid.hash(world::SEED, false))),
            MODE_IPIP,
            udp_mid.entropy(world::SEED),
        );
    }
    cases.push(case(
        "v4 fragment without CONFIG_F_ANY_PORT_VIPS",
        no_flag,
        udp_mid.frame(),
        e,
    ));
    run_table(cases);
}

// ------------------------------------------------------------------------------------------------
// Section 3: ICMP echo, PMTU errors; section 5: too big.

#[test]
fn icmp_echo() {
    let cfg = base_config();
    let echo_on = |addr: &'static str, index: u32| -> Setup {
        Box::new(move |dp: &mut Datapath| {
            dp.set_config(cfg);
            dp.set_address(ip(addr), VIP_F_ICMP_ECHO, index);
        })
    };
    let echo_off = |addr: &'static str| -> Setup {
        let vip = Vip::new(addr, 80, PROTO_TCP, MODE_IPIP, 0, addr.contains('.'));
        setup(cfg, &[vip])
    };
    let reply = |pkt: &Packet, index: u32| {
        let f = pkt.frame();
        Expect::new(XDP_TX, &[(Counter::IcmpEchoReply, 1)])
            .output(expect::echo_reply(&f))
            .vip(index, TrafficStats::new(1, accounted_bytes(&f), 0, 0))
    };
    let p4 = Packet::echo(CLIENT4, VIP4);
    let p4x = Packet::echo(CLIENT4, VIP4)
        .vlan(12)
        .options(vec![0x07, 0x07, 0x04, 0, 0, 0, 0, 0])
        .payload_len(56)
        .padding(5);
    let p6 = Packet::echo(CLIENT6, VIP6);
    let p6x = Packet::echo(CLIENT6, VIP6)
        .vlan(3)
        .payload_len(1000)
        .ttl(1)
        .padding(2);
    run_table(vec![
        case(
            "v4 echo, flag on",
            echo_on(VIP4, 5),
            p4.frame(),
            reply(&p4, 5),
        ),
        case(
            "v4 echo, vlan, options, padding",
            echo_on(VIP4, 5),
            p4x.frame(),
            reply(&p4x, 5),
        ),
        case(
            "v6 echo, flag on",
            echo_on(VIP6, 6),
            p6.frame(),
            reply(&p6, 6),
        ),
        case(
            "v6 echo, vlan, hop limit 1, padding",
            echo_on(VIP6, 6),
            p6x.frame(),
            reply(&p6x, 6),
        ),
        case(
            "v4 echo, flag off",
            echo_off(VIP4),
            p4.frame(),
            Expect::pass(Counter::Pass).vip(0, TrafficStats::new(0, 0, 0, 0)),
        ),
        case(
            "v6 echo, flag off",
            echo_off(VIP6),
            p6.frame(),
            Expect::pass(Counter::Pass),
        ),
        case(
            "v4 echo with code 1: not an echo request",
            echo_on(VIP4, 5),
            Packet::icmp(CLIENT4, VIP4, 8, 1).frame(),
            Expect::pass(Counter::Pass),
        ),
    ]);
}

/// The ICMP error a router sends to the VIP about a VIP -> client packet of `flow` (a client ->
/// VIP packet).
fn pmtu_error(flow: &Packet, mtu: u32) -> Packet {
    let (sport, dport) = flow.ports();
    let (vip, client) = (flow.dst.to_string(), flow.src.to_string());
    let reverse = match flow.proto() {
        PROTO_TCP => Packet::tcp(&vip, dport, &client, sport, TCP_ACK),
        _ => Packet::udp(&vip, dport, &client, sport),
    }
    .payload_len(1400);
    let q = reverse.ip_bytes();
    let (router, quoted) = if flow.is_v4() {
        (ROUTER4, q[..28].to_vec())
    } else {
        (ROUTER6, q[..200].to_vec())
    };
    Packet::too_big(router, &vip, mtu, quoted).ttl(250)
}

/// The ICMP error `icmp` about `flow` relayed to backend `id`: the outer headers carry the
/// entropy of the flow it quotes.
fn icmp_forwarded(cfg: &LbConfig, vip: &Vip, icmp: &Packet, flow: &Packet, id: u32) -> Expect {
    let f = icmp.frame();
    let entropy = flow.entropy(cfg.hash_seed);
    let out = expect::forwarded(&f, cfg, &vip.pool.backend(id), vip.mode, entropy);
    let len = accounted_bytes(&f);
    Expect::new(
        XDP_TX,
        &[(Counter::Tx, 1), (Counter::IcmpErrorForwarded, 1)],
    )
    .output(out)
    .vip(vip.index, TrafficStats::new(1, len, 0, 0))
    .backend(id, TrafficStats::new(1, len, 0, 0))
}

#[test]
fn icmp_pmtu_errors_follow_the_flow() {
    let cfg = base_config();
    let small_mtu = LbConfig { mtu: 100, ..cfg }; // forwarding of ICMP errors skips the MTU check
    let mut cases = Vec::new();
    for (mode, mname) in MODES {
        for (v4, bv4) in [(true, true), (true, false), (false, false)] {
            if mode == MODE_DSR_L2 && v4 != bv4 {
                continue;
            }
            let (vaddr, client) = if v4 { (VIP4, CLIENT4) } else { (VIP6, CLIENT6) };
            let vip = Vip::new(vaddr, 443, PROTO_TCP, mode, 1, bv4);
            let flow = Packet::tcp(client, 33333, vaddr, 443, TCP_ACK);
            let icmp = pmtu_error(&flow, 1400);
            let hash = flow.hash(cfg.hash_seed, false);
            let id = vip.pool.choose(hash);
            let name = format!("{mname} {}→{} ring choice", fam(v4), fam(bv4));
            cases.push(case(
                name.clone(),
                setup(small_mtu, &[vip.clone()]),
                icmp.frame(),
                icmp_forwarded(&small_mtu, &vip, &icmp, &flow, id),
            ));
        }
    }
    // Source affinity: the ICMP error hashes the client (quoted destination) alone.
    let aff = Vip::new(VIP4, 443, PROTO_UDP, MODE_GUE, 2, true).flags(VIP_F_SRC_AFFINITY);
    let flow = Packet::udp(CLIENT4, 4242, VIP4, 443);
    let icmp = pmtu_error(&flow, 1300);
    let hash = flow.hash(cfg.hash_seed, true);
    cases.push(case(
        "source affinity",
        setup(cfg, &[aff.clone()]),
        icmp.frame(),
        icmp_forwarded(&cfg, &aff, &icmp, &flow, aff.pool.choose(hash)),
    ));
    // Any-port VIP reached through the fallback.
    let anyport = Vip::new(VIP6, 0, PROTO_UDP, MODE_IPIP, 3, false);
    let flow = Packet::udp(CLIENT6, 4242, VIP6, 5555);
    let icmp = pmtu_error(&flow, 1280);
    let hash = flow.hash(cfg.hash_seed, false);
    cases.push(case(
        "all-ports VIP",
        setup(
            LbConfig {
                flags: cfg.flags | CONFIG_F_ANY_PORT_VIPS,
                ..cfg
            },
            &[anyport.clone()],
        ),
        icmp.frame(),
        icmp_forwarded(&cfg, &anyport, &icmp, &flow, anyport.pool.choose(hash)),
    ));
    // Malformed / foreign quotes.
    let vip = Vip::new(VIP4, 443, PROTO_TCP, MODE_IPIP, 1, true);
    let flow = Packet::tcp(CLIENT4, 33333, VIP4, 443, TCP_ACK);
    let mut short = pmtu_error(&flow, 1400);
    if let packet::L4::TooBig { quoted, .. } = &mut short.l4 {
        quoted.truncate(23); // IPv4 header + 3 bytes: ports incomplete
    }
    cases.push(case(
        "quote without full ports: malformed",
        setup(cfg, &[vip.clone()]),
        short.frame(),
        Expect::pass(Counter::PassMalformed),
    ));
    let mut bad_ihl = pmtu_error(&flow, 1400);
    if let packet::L4::TooBig { quoted, .. } = &mut bad_ihl.l4 {
        quoted[0] = 0x43;
    }
    cases.push(case(
        "quote with IHL 3: malformed",
        setup(cfg, &[vip.clone()]),
        bad_ihl.frame(),
        Expect::pass(Counter::PassMalformed),
    ));
    let foreign = pmtu_error(&Packet::tcp(CLIENT4, 33333, VIP4, 444, TCP_ACK), 1400);
    cases.push(case(
        "quote of a flow to no VIP port: pass",
        setup(cfg, &[vip.clone()]),
        foreign.frame(),
        Expect::pass(Counter::Pass),
    ));
    let flow6 = Packet::tcp(CLIENT6, 1, VIP6, 443, TCP_ACK);
    let mut short6 = pmtu_error(&flow6, 1280);
    if let packet::L4::TooBig { quoted, .. } = &mut short6.l4 {
        quoted.truncate(42);
    }
    let vip6 = Vip::new(VIP6, 443, PROTO_TCP, MODE_IPIP, 1, false);
    cases.push(case(
        "v6 quote without full ports: malformed",
        setup(cfg, &[vip6]),
        short6.frame(),
        Expect::pass(Counter::PassMalformed),
    ));
    run_table(cases);
}

fn fam(v4: bool) -> &'static str {
    if v4 { "v4" } else { "v6" }
}

#[test]
fn icmp_pmtu_error_uses_the_flow_table() {
    for v4 in [true, false] {
        let cfg = base_config();
        let (vaddr, client) = if v4 { (VIP4, CLIENT4) } else { (VIP6, CLIENT6) };
        let vip = Vip::new(vaddr, 443, PROTO_TCP, MODE_GUE, 1, v4);
        let mut dp = Datapath::new();
        setup(cfg, &[vip.clone()])(&mut dp);
        let flow = Packet::tcp(client, 33333, vaddr, 443, TCP_ACK);
        let hash = flow.hash(cfg.hash_seed, false);
        let a = vip.pool.choose(hash);
        step(
            &mut dp,
            "flow starts (miss)",
            &flow.frame(),
            &fwd(&cfg, &vip, &flow, Counter::FlowMiss),
        );
        assert_eq!(
            dp.flow_entry(&flow.flow_key()).map(|e| e.backend_id),
            Some(a)
        );
        // The ring moves every slot to another backend; the flow table still says `a`.
        let b = *vip.pool.ids.iter().find(|&&i| i != a).unwrap();
        dp.fill_ring(vip.index, |_| b);
        let icmp = pmtu_error(&flow, 1400);
        step(
            &mut dp,
            "ICMP error follows the flow entry",
            &icmp.frame(),
            &icmp_forwarded(&cfg, &vip, &icmp, &flow, a),
        );
        // An invalid entry (backend down): ring choice, and the entry is left alone.
        let mut down = vip.pool.backend(a);
        down.state = BACKEND_DOWN;
        dp.set_backend(a, down);
        step(
            &mut dp,
            "ICMP error, entry's backend down: ring",
            &icmp.frame(),
            &icmp_forwarded(&cfg, &vip, &icmp, &flow, b),
        );
        assert_eq!(
            dp.flow_entry(&flow.flow_key()).map(|e| e.backend_id),
            Some(a),
            "ICMP never writes the flow table"
        );
        // No entry at all for another client: ring choice, nothing inserted.
        let other = Packet::tcp(client, 44444, vaddr, 443, TCP_ACK);
        let icmp2 = pmtu_error(&other, 1400);
        step(
            &mut dp,
            "ICMP error without entry",
            &icmp2.frame(),
            &icmp_forwarded(&cfg, &vip, &icmp2, &other, b),
        );
        assert_eq!(dp.flow_entry(&other.flow_key()), None, "ICMP never inserts");
    }
}

#[test]
fn too_big_replies() {
    let cfg = LbConfig {
        mtu: 1500,
        ..base_config()
    };
    let mut cases = Vec::new();
    for (mode, mname) in [(MODE_IPIP, "ipip"), (MODE_GUE, "gue")] {
        for (v4, bv4) in [(true, true), (true, false), (false, false)] {
            let (vaddr, client) = if v4 { (VIP4, CLIENT4) } else { (VIP6, CLIENT6) };
            let vip = Vip::new(vaddr, 443, PROTO_TCP, mode, 1, bv4);
            let oh = overhead(mode, bv4);
            let hdrs = if v4 { 20 + 20 } else { 40 + 20 };
            // Largest L3 that still fits: forwarded.
            let fits = Packet::tcp(client, 1111, vaddr, 443, TCP_ACK).payload_len(1500 - oh - hdrs);
            let name = format!("{mname} {}→{}", fam(v4), fam(bv4));
            cases.push(case(
                format!("{name}: L3 + overhead == mtu is forwarded"),
                setup(cfg, &[vip.clone()]),
                fits.frame(),
                fwd(&cfg, &vip, &fits, Counter::FlowMiss),
            ));
            for vlan in [None, Some(77)] {
                let mut big = Packet::tcp(client, 1111, vaddr, 443, TCP_ACK)
                    .payload_len(1500 - oh - hdrs + 1);
                if let Some(t) = vlan {
                    big = big.vlan(t);
                }
                let f = big.frame();
                let id = vip.pool.choose(big.hash(cfg.hash_seed, false));
                cases.push(case(
                    format!("{name}: one byte over the mtu, vlan {vlan:?}: too big reply"),
                    setup(cfg, &[vip.clone()]),
                    f.clone(),
                    Expect::new(
                        XDP_TX,
                        &[(Counter::IcmpTooBigSent, 1), (Counter::FlowMiss, 1)],
                    )
                    .output(expect::too_big_reply(&f, 1500, oh))
                    .vip(1, TrafficStats::new(0, 0, NEW_FLOWS_WITHOUT_FORWARD, 1))
                    .backend(id, TrafficStats::new(0, 0, NEW_FLOWS_WITHOUT_FORWARD, 0)),
                ));
            }
        }
    }
    // DSR adds nothing: a packet of exactly the MTU is forwarded.
    let dsr = Vip::new(VIP4, 443, PROTO_TCP, MODE_DSR_L2, 1, true);
    let full = Packet::tcp(CLIENT4, 1, VIP4, 443, TCP_ACK).payload_len(1460);
    cases.push(case(
        "dsr: L3 == mtu forwarded",
        setup(cfg, &[dsr.clone()]),
        full.frame(),
        fwd(&cfg, &dsr, &full, Counter::FlowMiss),
    ));
    // mtu 0 disables the check.
    let ipip = Vip::new(VIP4, 443, PROTO_TCP, MODE_IPIP, 1, true);
    let huge = Packet::tcp(CLIENT4, 1, VIP4, 443, TCP_ACK).payload_len(2500);
    cases.push(case(
        "mtu 0: no check",
        setup(base_config(), &[ipip.clone()]),
        huge.frame(),
        fwd(&base_config(), &ipip, &huge, Counter::FlowMiss),
    ));
    run_table(cases);
}

/// Pins the calling thread to one CPU (per-CPU maps: the ICMP bucket) until dropped.
struct PinCpu(libc::cpu_set_t);

impl PinCpu {
    fn to(cpu: usize) -> Self {
        // SAFETY: plain libc calls on a zeroed cpu_set_t for the calling thread (pid 0).
        unsafe {
            let mut old: libc::cpu_set_t = std::mem::zeroed();
            assert_eq!(
                libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut old),
                0
            );
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            assert_eq!(
                libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set),
                0
            );
            PinCpu(old)
        }
    }
}

impl Drop for PinCpu {
    fn drop(&mut self) {
        // SAFETY: restores the saved mask of the calling thread.
        unsafe {
            libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &self.0);
        }
    }
}

#[test]
fn too_big_replies_are_rate_limited() {
    let _pin = PinCpu::to(0);
    let cfg = LbConfig {
        mtu: 1500,
        icmp_rate: 1,
        icmp_burst: 1,
        ..base_config()
    };
    let vip = Vip::new(VIP6, 443, PROTO_UDP, MODE_GUE, 1, false);
    let mut dp = Datapath::new();
    setup(cfg, &[vip.clone()])(&mut dp);
    dp.reset_icmp_bucket();
    let big = Packet::udp(CLIENT6, 1, VIP6, 443).payload_len(1500);
    let f = big.frame();
    let id = vip.pool.choose(big.hash(cfg.hash_seed, false));
    step(
        &mut dp,
        "first too-big: answered",
        &f,
        &Expect::new(
            XDP_TX,
            &[(Counter::IcmpTooBigSent, 1), (Counter::FlowMiss, 1)],
        )
        .output(expect::too_big_reply(&f, 1500, 48))
        .vip(1, TrafficStats::new(0, 0, NEW_FLOWS_WITHOUT_FORWARD, 1))
        .backend(id, TrafficStats::new(0, 0, NEW_FLOWS_WITHOUT_FORWARD, 0)),
    );
    step(
        &mut dp,
        "second too-big within the second: rate limited",
        &f,
        &Expect::new(
            XDP_DROP,
            &[(Counter::DropTooBigRateLimited, 1), (Counter::FlowHit, 1)],
        )
        .vip(1, TrafficStats::new(0, 0, 0, 1))
        .backend(id, TrafficStats::new(0, 0, 0, 0)),
    );
}

// ------------------------------------------------------------------------------------------------
// Sections 3 and 4: VIP lookup and backend choice.

#[test]
fn all_ports_vip_fallback() {
    let cfg = base_config();
    let any = LbConfig {
        flags: cfg.flags | CONFIG_F_ANY_PORT_VIPS,
        ..cfg
    };
    let all = Vip::new(VIP4, 0, PROTO_TCP, MODE_IPIP, 0, true);
    let exact = Vip::new(VIP4, 80, PROTO_TCP, MODE_GUE, 1, true);
    let p1234 = Packet::tcp(CLIENT4, 999, VIP4, 1234, TCP_SYN);
    let p80 = Packet::tcp(CLIENT4, 999, VIP4, 80, TCP_SYN);
    let p0 = Packet::tcp(CLIENT4, 999, VIP4, 0, TCP_SYN);
    let all6 = Vip::new(VIP6, 0, PROTO_UDP, MODE_DSR_L2, 2, false);
    let p6 = Packet::udp(CLIENT6, 999, VIP6, 7);
    run_table(vec![
        case(
            "exact miss, all-ports VIP hit",
            setup(any, &[all.clone(), exact.clone()]),
            p1234.frame(),
            fwd(&any, &all, &p1234, Counter::FlowSyn),
        ),
        case(
            "exact port wins over all-ports",
            setup(any, &[all.clone(), exact.clone()]),
            p80.frame(),
            fwd(&any, &exact, &p80, Counter::FlowSyn).vip(0, TrafficStats::new(0, 0, 0, 0)),
        ),
        case(
            "port 0 to an all-ports VIP: the VIP",
            setup(any, &[all.clone(), exact.clone()]),
            p0.frame(),
            fwd(&any, &all, &p0, Counter::FlowSyn),
        ),
        case(
            "all-ports VIP without CONFIG_F_ANY_PORT_VIPS: pass",
            setup(cfg, &[all.clone()]),
            p1234.frame(),
            Expect::pass(Counter::Pass),
        ),
        case(
            "v6 all-ports udp dsr",
            setup(any, &[all6.clone()]),
            p6.frame(),
            fwd(&any, &all6, &p6, Counter::FlowMiss),
        ),
    ]);
}

#[test]
fn no_backend_bad_backend_unsupported() {
    let cfg = base_config();
    let vip = tcp_vip4(MODE_IPIP, true);
    let pkt = Packet::tcp(CLIENT4, 2222, VIP4, 80, TCP_SYN);
    let slot = ring_slot(pkt.hash(cfg.hash_seed, false));
    let with = |f: Box<dyn Fn(&mut Datapath)>| -> Setup {
        let vip = vip.clone();
        Box::new(move |dp: &mut Datapath| {
            setup(cfg, &[vip.clone()])(dp);
            f(dp)
        })
    };
    let nopass = Vip {
        flags: VIP_F_NO_BACKEND_PASS,
        ..vip.clone()
    };
    let v6_v4b_ipip = Vip::new(VIP6, 80, PROTO_TCP, MODE_IPIP, 0, true);
    let v6_v4b_gue = Vip::new(VIP6, 80, PROTO_TCP, MODE_GUE, 0, true);
    let p6 = Packet::tcp(CLIENT6, 2222, VIP6, 80, TCP_SYN);
    run_table(vec![
        case(
            "empty ring slot: drop",
            with(Box::new(move |dp| dp.set_slot(0, slot, 0))),
            pkt.frame(),
            Expect::drop_vip(Counter::DropNoBackend, 0),
        ),
        case(
            "empty ring slot with VIP_F_NO_BACKEND_PASS: pass",
            {
                let nopass = nopass.clone();
                Box::new(move |dp: &mut Datapath| {
                    setup(cfg, &[nopass.clone()])(dp);
                    dp.fill_ring(0, |_| 0);
                })
            },
            pkt.frame(),
            Expect::pass(Counter::PassNoBackend).vip(0, TrafficStats::new(0, 0, 0, 0)),
        ),
        case(
            "ring slot names an empty backend entry",
            with(Box::new(move |dp| dp.set_slot(0, slot, 40))),
            pkt.frame(),
            Expect::drop_vip(Counter::DropBadBackend, 0).backend(40, TrafficStats::new(0, 0, 0, 0)),
        ),
        case(
            "ring slot names another VIP's backend",
            with(Box::new(move |dp| {
                dp.set_backend(41, world::backend(41, true, 5));
                dp.set_slot(0, slot, 41);
            })),
            pkt.frame(),
            Expect::drop_vip(Counter::DropBadBackend, 0).backend(41, TrafficStats::new(0, 0, 0, 0)),
        ),
        case(
            "unknown mode 0",
            setup(
                cfg,
                &[Vip {
                    mode: 0,
                    ..vip.clone()
                }],
            ),
            pkt.frame(),
            dropped_after_pick(Counter::DropUnsupported, &vip, &pkt, Counter::FlowSyn),
        ),
        case(
            "unknown mode 9",
            setup(
                cfg,
                &[Vip {
                    mode: 9,
                    ..vip.clone()
                }],
            ),
            pkt.frame(),
            dropped_after_pick(Counter::DropUnsupported, &vip, &pkt, Counter::FlowSyn),
        ),
        case(
            "ipip: v6 VIP, v4 backend",
            setup(cfg, &[v6_v4b_ipip.clone()]),
            p6.frame(),
            dropped_after_pick(
                Counter::DropUnsupported,
                &v6_v4b_ipip,
                &p6,
                Counter::FlowSyn,
            ),
        ),
        case(
            "gue: v6 VIP, v4 backend",
            setup(cfg, &[v6_v4b_gue.clone()]),
            p6.frame(),
            dropped_after_pick(Counter::DropUnsupported, &v6_v4b_gue, &p6, Counter::FlowSyn),
        ),
    ]);
}

/// `n` client ports of CLIENT4 whose flows to VIP4:80 share one flow-table set.
fn same_set_flows(dp: &mut Datapath, n: usize) -> Vec<Packet> {
    let first = Packet::tcp(CLIENT4, 40001, VIP4, 80, TCP_ACK);
    let (set, _, _) = dp.flow_set_of(&first.flow_key());
    let mut out = vec![first];
    let mut port = 40002;
    while out.len() < n {
        let p = Packet::tcp(CLIENT4, port, VIP4, 80, TCP_ACK);
        if dp.flow_set_of(&p.flow_key()).0 == set {
            out.push(p);
        }
        port = port
            .checked_add(1)
            .expect("enough client ports share a set");
    }
    out
}

fn with_flags(p: &Packet, flags: u8) -> Packet {
    let (sport, dport) = p.ports();
    Packet::tcp(CLIENT4, sport, VIP4, dport, flags)
}

/// The flow table's sets (docs/datapath.md §4): a SYN's entry starts unused, the flow's next
/// packet marks it used, and a new flow in a full set evicts an unused entry, never one that
/// is carrying traffic. Flows that share a set each go where their own entry says.
#[test]
fn flow_table_sets_evict_unused_entries_first() {
    let cfg = base_config();
    let vip = Vip::new(VIP4, 80, PROTO_TCP, MODE_IPIP, 0, true);
    let mut dp = Datapath::new();
    setup(cfg, &[vip.clone()])(&mut dp);
    let flows = same_set_flows(&mut dp, FLOW_WAYS + 1);
    let choice = |p: &Packet| vip.pool.choose(p.hash(cfg.hash_seed, false));
    let used = |dp: &mut Datapath, p: &Packet| {
        let (_, set, tag) = dp.flow_set_of(&p.flow_key());
        set.ways
            .iter()
            .find(|s| s.keyed(&p.flow_key(), tag))
            .map(|s| s.used)
    };
    // Fill the set: four SYNs.
    for p in &flows[..FLOW_WAYS] {
        let syn = with_flags(p, TCP_SYN);
        step(
            &mut dp,
            "SYN",
            &syn.frame(),
            &fwd_to(&cfg, &vip, &syn, choice(p), Counter::FlowSyn),
        );
        assert_eq!(used(&mut dp, p), Some(0), "a new entry starts unused");
    }
    // The first three send a second packet: hits, now used.
    for p in &flows[..FLOW_WAYS - 1] {
        step(
            &mut dp,
            "second packet",
            &p.frame(),
            &fwd_to(&cfg, &vip, p, choice(p), Counter::FlowHit),
        );
        assert_eq!(used(&mut dp, p), Some(1), "a hit marks the entry used");
    }
    // Pin the used flows to backends other than their ring choices, so a lost entry shows.
    let pinned: Vec<u32> = flows[..FLOW_WAYS - 1]
        .iter()
        .map(|p| {
            let other = *vip.pool.ids.iter().find(|&&i| i != choice(p)).unwrap();
            dp.set_flow_entry(&p.flow_key(), other);
            // Rewriting an entry resets its mark; mark it again as its traffic would.
            let f = p.frame();
            step(
                &mut dp,
                "pinned",
                &f,
                &fwd_to(&cfg, &vip, p, other, Counter::FlowHit),
            );
            other
        })
        .collect();
    // A fifth flow: the set is full, and the one entry that never saw a second packet goes.
    let new = with_flags(&flows[FLOW_WAYS], TCP_SYN);
    step(
        &mut dp,
        "new flow in a full set",
        &new.frame(),
        &fwd_to(&cfg, &vip, &new, choice(&new), Counter::FlowSyn),
    );
    assert_eq!(dp.flow_entry(&flows[FLOW_WAYS - 1].flow_key()), None);
    assert!(dp.flow_entry(&new.flow_key()).is_some());
    for (p, id) in flows[..FLOW_WAYS - 1].iter().zip(pinned) {
        step(
            &mut dp,
            "used flow kept its entry",
            &p.frame(),
            &fwd_to(&cfg, &vip, p, id, Counter::FlowHit),
        );
    }
    let total = dp.flow_set_of(&new.flow_key()).1;
    assert!(total.ways.iter().all(|s| s.sealed()), "four intact entries");
}

/// A slot whose fields do not match its seal (two CPUs wrote it at once) is no hit: the flow
/// takes the ring's choice, which overwrites the same slot.
#[test]
fn flow_table_torn_slot_is_a_miss() {
    let cfg = base_config();
    let vip = Vip::new(VIP4, 80, PROTO_TCP, MODE_IPIP, 0, true);
    let mut dp = Datapath::new();
    setup(cfg, &[vip.clone()])(&mut dp);
    let ack = Packet::tcp(CLIENT4, 40001, VIP4, 80, TCP_ACK);
    let key = ack.flow_key();
    let a = vip.pool.choose(ack.hash(cfg.hash_seed, false));
    let b = *vip.pool.ids.iter().find(|&&i| i != a).unwrap();
    dp.set_flow_entry(&key, b);
    let f = ack.frame();
    step(
        &mut dp,
        "pinned",
        &f,
        &fwd_to(&cfg, &vip, &ack, b, Counter::FlowHit),
    );
    // Another writer's backend id under this writer's seal.
    let (index, mut set, tag) = dp.flow_set_of(&key);
    let slot = set
        .ways
        .iter_mut()
        .find(|s| s.keyed(&key, tag))
        .expect("the flow's slot");
    slot.backend_id = a;
    dp.write_flow_set(index, &set);
    assert_eq!(dp.flow_entry(&key), None, "a torn slot is no entry");
    step(
        &mut dp,
        "torn slot: the ring decides",
        &f,
        &fwd_to(&cfg, &vip, &ack, a, Counter::FlowMiss),
    );
    assert_eq!(dp.flow_entry(&key).map(|e| e.backend_id), Some(a));
    let (_, set, _) = dp.flow_set_of(&key);
    assert_eq!(
        set.ways.iter().filter(|s| s.key == key).count(),
        1,
        "the flow's own slot was rewritten"
    );
}

/// One flow table for all CPUs: a flow whose packets arrive on different CPUs (no RSS, as on
/// a veth) keeps the backend its first packet got, even after the ring changed.
#[test]
fn flow_table_is_shared_by_every_cpu() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert!(cpus >= 2, "this test needs two CPUs (found {cpus})");
    let cfg = base_config();
    let vip = Vip::new(VIP4, 80, PROTO_TCP, MODE_IPIP, 0, true);
    let mut dp = Datapath::new();
    setup(cfg, &[vip.clone()])(&mut dp);
    let syn = Packet::tcp(CLIENT4, 40001, VIP4, 80, TCP_SYN);
    let ack = Packet::tcp(CLIENT4, 40001, VIP4, 80, TCP_ACK);
    let a = vip.pool.choose(syn.hash(cfg.hash_seed, false));
    {
        let _pin = PinCpu::to(0);
        step(
            &mut dp,
            "SYN on CPU 0",
            &syn.frame(),
            &fwd_to(&cfg, &vip, &syn, a, Counter::FlowSyn),
        );
    }
    // The ring now sends the flow elsewhere; its entry still decides.
    let b = *vip.pool.ids.iter().find(|&&i| i != a).unwrap();
    dp.fill_ring(vip.index, |_| b);
    let _pin = PinCpu::to(1);
    step(
        &mut dp,
        "ACK on CPU 1",
        &ack.frame(),
        &fwd_to(&cfg, &vip, &ack, a, Counter::FlowHit),
    );
}

#[test]
fn flow_table_stickiness() {
    let cfg = base_config();
    let vip = Vip::new(VIP4, 80, PROTO_TCP, MODE_IPIP, 0, true);
    let other_vip = Vip::new(VIP4, 81, PROTO_TCP, MODE_IPIP, 1, true);
    let mut dp = Datapath::new();
    setup(cfg, &[vip.clone(), other_vip.clone()])(&mut dp);
    let ack = Packet::tcp(CLIENT4, 45678, VIP4, 80, TCP_ACK);
    let syn = Packet::tcp(CLIENT4, 45678, VIP4, 80, TCP_SYN);
    let synack_like = Packet::tcp(CLIENT4, 45678, VIP4, 80, TCP_SYN | TCP_ACK);
    let fin = Packet::tcp(CLIENT4, 45678, VIP4, 80, TCP_FIN | TCP_ACK);
    let key = ack.flow_key();
    let hash = ack.hash(cfg.hash_seed, false);
    let slot = ring_slot(hash);
    let a = vip.pool.choose(hash);
    let b = *vip.pool.ids.iter().find(|&&i| i != a).unwrap();
    let entry = |dp: &mut Datapath| dp.flow_entry(&key).map(|e| e.backend_id);
    let f = |p: &Packet| p.frame();

    assert_eq!(entry(&mut dp), None);
    step(
        &mut dp,
        "miss: ring choice inserted",
        &f(&ack),
        &fwd_to(&cfg, &vip, &ack, a, Counter::FlowMiss),
    );
    assert_eq!(entry(&mut dp), Some(a));
    step(
        &mut dp,
        "hit",
        &f(&fin),
        &fwd_to(&cfg, &vip, &fin, a, Counter::FlowHit),
    );

    dp.set_slot(vip.index, slot, b);
    step(
        &mut dp,
        "ring changed: non-SYN keeps its backend",
        &f(&ack),
        &fwd_to(&cfg, &vip, &ack, a, Counter::FlowHit),
    );
    step(
        &mut dp,
        "SYN|ACK is not a SYN: keeps its backend",
        &f(&synack_like),
        &fwd_to(&cfg, &vip, &synack_like, a, Counter::FlowHit),
    );
    step(
        &mut dp,
        "SYN takes the new ring choice",
        &f(&syn),
        &fwd_to(&cfg, &vip, &syn, b, Counter::FlowSyn),
    );
    assert_eq!(entry(&mut dp), Some(b), "SYN rewrites the entry");
    step(
        &mut dp,
        "after SYN the flow sticks to the new backend",
        &f(&ack),
        &fwd_to(&cfg, &vip, &ack, b, Counter::FlowHit),
    );

    // Entry -> a again; a DRAINING keeps it.
    dp.set_flow_entry(&key, a);
    let mut draining = vip.pool.backend(a);
    draining.state = BACKEND_DRAINING;
    dp.set_backend(a, draining);
    let mut exp = fwd_to(&cfg, &vip, &ack, a, Counter::FlowHit);
    if let Out::Exact(o) = &mut exp.output {
        *o = expect::forwarded(
            &f(&ack),
            &cfg,
            &draining,
            vip.mode,
            ack.entropy(cfg.hash_seed),
        );
    }
    step(&mut dp, "DRAINING backend keeps its flows", &f(&ack), &exp);
    assert_eq!(entry(&mut dp), Some(a));

    // a DOWN: re-hash to the ring (b), entry overwritten.
    let mut down = vip.pool.backend(a);
    down.state = BACKEND_DOWN;
    dp.set_backend(a, down);
    step(
        &mut dp,
        "DOWN backend: re-hash",
        &f(&ack),
        &fwd_to(&cfg, &vip, &ack, b, Counter::FlowRehash),
    );
    assert_eq!(entry(&mut dp), Some(b), "re-hash overwrites the entry");

    // Entry written for a previous holder of the id (the id was reallocated since, here to
    // another VIP: its generation moved on): re-hash, never a forward to the new holder.
    let foreign = other_vip.pool.ids[0];
    let current = dp.backend(foreign).generation;
    dp.set_flow_entry_generation(&key, foreign, current.wrapping_add(1000));
    step(
        &mut dp,
        "entry of a recycled backend id (stale generation): re-hash",
        &f(&ack),
        &fwd_to(&cfg, &vip, &ack, b, Counter::FlowRehash)
            .backend(foreign, TrafficStats::new(0, 0, 0, 0)),
    );
    assert_eq!(entry(&mut dp), Some(b));

    // Entry names an empty backend id: re-hash.
    dp.set_flow_entry(&key, 60);
    step(
        &mut dp,
        "entry names an empty backend: re-hash",
        &f(&ack),
        &fwd_to(&cfg, &vip, &ack, b, Counter::FlowRehash),
    );

    // UDP flows stick too (no SYN concept).
    let uvip = Vip::new(VIP6, 53, PROTO_UDP, MODE_GUE, 2, false);
    uvip.install(&mut dp);
    let u = Packet::udp(CLIENT6, 5353, VIP6, 53);
    let uh = u.hash(cfg.hash_seed, false);
    let ua = uvip.pool.choose(uh);
    let ub = *uvip.pool.ids.iter().find(|&&i| i != ua).unwrap();
    step(
        &mut dp,
        "udp miss",
        &f(&u),
        &fwd_to(&cfg, &uvip, &u, ua, Counter::FlowMiss),
    );
    dp.fill_ring(uvip.index, |_| ub);
    step(
        &mut dp,
        "udp hit after ring change",
        &f(&u),
        &fwd_to(&cfg, &uvip, &u, ua, Counter::FlowHit),
    );
    assert_eq!(dp.flow_entry(&u.flow_key()).map(|e| e.backend_id), Some(ua));
}

#[test]
fn source_affinity() {
    let cfg = base_config();
    let mut cases = Vec::new();
    for (v4, mode) in [(true, MODE_GUE), (false, MODE_IPIP), (true, MODE_DSR_L2)] {
        let (vaddr, client) = if v4 { (VIP4, CLIENT4) } else { (VIP6, CLIENT6) };
        let vip = Vip::new(vaddr, 443, PROTO_TCP, mode, 4, v4).flags(VIP_F_SRC_AFFINITY);
        let mut dp = Datapath::new();
        setup(cfg, &[vip.clone()])(&mut dp);
        let (_, w) = lb_common::addr::to_words(ip(client));
        let h = if v4 {
            lb_common::hash::src_hash_v4(cfg.hash_seed, w[0])
        } else {
            lb_common::hash::src_hash_v6(cfg.hash_seed, &w)
        };
        let slot = ring_slot(h);
        let id = vip.pool.owner(slot);
        assert_eq!(dp.slot(vip.index, slot), id);
        for sport in [1000u16, 2000, 3000, 65535] {
            let p = Packet::tcp(client, sport, vaddr, 443, TCP_SYN);
            assert_eq!(p.hash(cfg.hash_seed, true), h);
            step(
                &mut dp,
                &format!("{} sport {sport}", fam(v4)),
                &p.frame(),
                &{
                    let mut e = fwd_to(&cfg, &vip, &p, id, Counter::FlowSyn);
                    // Stats accumulate across the steps: check only the global counters here.
                    e.vips.clear();
                    e.backends.clear();
                    e
                },
            );
            assert_eq!(dp.flow_entry(&p.flow_key()).map(|e| e.backend_id), Some(id));
        }
        // A different client lands elsewhere by its own source hash.
        let other = if v4 {
            "198.51.100.200"
        } else {
            "2001:db8:c::200"
        };
        let p = Packet::tcp(other, 1000, vaddr, 443, TCP_ACK);
        cases.push(case(
            format!("{} other client, source hash", fam(v4)),
            setup(cfg, &[vip.clone()]),
            p.frame(),
            fwd(&cfg, &vip, &p, Counter::FlowMiss),
        ));
    }
    run_table(cases);
}

#[test]
fn stats_accumulate_per_vip_and_backend() {
    let cfg = base_config();
    let vip = Vip::new(VIP4, 80, PROTO_UDP, MODE_GUE, 3, true);
    let mut dp = Datapath::new();
    setup(cfg, &[vip.clone()])(&mut dp);
    let mut per_backend = std::collections::HashMap::<u32, TrafficStats>::new();
    let mut total = TrafficStats::default();
    for i in 0..40u16 {
        let p = Packet::udp(CLIENT4, 10_000 + i, VIP4, 80).payload_len(usize::from(i));
        let id = vip.pool.choose(p.hash(cfg.hash_seed, false));
        let (v, _) = dp.run(&p.frame());
        assert_eq!(v, XDP_TX);
        let len = accounted_bytes(&p.frame());
        for s in [per_backend.entry(id).or_default(), &mut total] {
            s.packets += 1;
            s.bytes += len;
            s.new_flows += 1;
        }
    }
    assert_eq!(dp.vip_stats(3), total);
    for (id, s) in &per_backend {
        assert_eq!(dp.backend_stats(*id), *s, "backend {id}");
    }
    assert!(
        per_backend.len() > 1,
        "40 flows spread over several backends"
    );
    let c = dp.counters();
    assert_eq!(c[Counter::Tx as usize], 40);
    assert_eq!(c[Counter::FlowMiss as usize], 40);
    assert_eq!(dp.flow_count(), 40);
}
