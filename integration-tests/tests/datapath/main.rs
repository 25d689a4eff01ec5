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
    datapath::{idle_clock, idle_now, run_errno},
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
    /// One more global counter delta (e.g. `flow_evicted`, which moves beside a verdict).
    fn also(mut self, c: Counter, n: u64) -> Self {
        self.counters.push((c, n));
        self
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
        Counter::FlowMiss | Counter::FlowSyn | Counter::FlowRehash | Counter::FlowExpired
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

fn fam(v4: bool) -> &'static str {
    if v4 { "v4" } else { "v6" }
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

mod flows;
mod fragments_icmp;
mod hostile;
mod packets;
mod peers;
