//! `xlb inspect`: reads the BPF maps directly (pinned under bpffs), so it works while the agent
//! is down, restarting, or wedged. Read-only: nothing here writes a map.
//!
//! Text output is `ipvsadm -L -n` style: numeric addresses, one header line, aligned columns,
//! nothing truncated or coloured. `--json` prints one JSON document (`stats --watch`: one JSON
//! object per line and sample). JSON field names are stable; fields may be added, never renamed
//! or removed:
//!
//! - `vips`: `{"vips": [{vip, proto, addr, port, index, mode, flags, backends: {active,
//!   draining, down}, packets, bytes, new_flows, drops}]}`. `vip` is `tcp/203.0.113.10:80`
//!   (port `*` = all ports, `port` 0); `flags` is a list of `src-affinity`, `no-backend-pass`,
//!   `icmp-echo` (of the address), `fragments` (receives the address's fragments of its
//!   protocol), `0x..` (unknown bits).
//! - `backends`: `{"interval_s": f64|null, "backends": [{vip, vip_index, addr, id, state,
//!   weight, slots, share_pct, packets, bytes, new_flows, packets_per_s, bytes_per_s}]}`; `vip` is null
//!   for a backend whose VIP index has no VIP entry, rates are null with `--no-rates`.
//! - `ring`: `{vip, vip_index, ring_size, empty_slots, empty_share_pct, active_backends,
//!   imbalance, backends: [{addr, id, state, slots, share_pct, expected_share_pct}]}`.
//! - `flows`: `{"limit": n, "more": bool, "flows": [{proto, src, dst, vip, backend_id, backend,
//!   backend_state, valid}]}`; `more` = more entries matched than printed.
//! - `stats`: `{"counters": [{index, name, total}]}`; with `--watch`, per sample `{sample,
//!   time_s, elapsed_s, counters: [{index, name, total, delta, per_s}]}` (moved counters only).
//! - `explain`: `{flow: {proto, src, dst}, config_ready, vip, vip_lookup, vip_index, mode,
//!   flags, seed, hash_input, hash, slot, ring_backend, flow_entry, rule, backend, verdict,
//!   counter, reason, syn_note}`; backends are `{id, addr, state, vip_index}`, `flow_entry` is
//!   `{backend_id, backend, valid, invalid_reason}`.
//!
//! States: `active`, `draining`, `down`, `empty`, `unknown(N)`. Modes: `ipip`, `gue`, `dsr-l2`,
//! `unknown(N)`.

use std::collections::{BTreeMap, BTreeSet, btree_map::Entry};
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use lb_common::{
    Backend, FlowKey, LbConfig, TrafficStats, VipKey, VipMeta,
    addr::{FAMILY_V4, FAMILY_V6, from_words, to_words},
    hash::{flow_hash_v4, flow_hash_v6, ports_word, ring_slot, src_hash_v4, src_hash_v6},
    limits::RING_SIZE,
    stats::{Counter, GlobalStats},
    values::{
        BACKEND_ACTIVE, BACKEND_DOWN, BACKEND_DRAINING, BACKEND_EMPTY, CONFIG_F_ANY_PORT_VIPS,
        CONFIG_F_READY, MODE_DSR_L2, MODE_GUE, MODE_IPIP, VIP_F_FRAG_ONLY, VIP_F_ICMP_ECHO,
        VIP_F_NO_BACKEND_PASS, VIP_F_SRC_AFFINITY,
    },
};
use serde::Serialize;

use super::format::{
    Align, Table, opt, parse_endpoint, parse_interval, parse_proto, parse_vip, pct, rate,
    render_row,
};
use crate::maps::MapStore;
use crate::model::{Proto, VipId};

/// Inspect the BPF maps directly; works with the agent down.
///
/// VIPs are written PROTO/ADDR:PORT: tcp/203.0.113.10:80, udp/[2001:db8::10]:53, and
/// tcp/203.0.113.10:* for an all-ports VIP (the form `xlb` prints everywhere).
///
/// Each backend entry records its effective weight; health-check results are not in the maps:
/// inspect shows each backend's map state (active = in the ring, draining = out of the ring but
/// keeps its flows, down = failed its check or unreachable: out of the ring and its flows
/// re-hash) and its actual ring share. Ask the agent (`xlb status`) for probe results.
#[derive(Clone, Debug, Subcommand)]
pub enum InspectCmd {
    /// Every VIP: index, mode, flags, backend counts by state, and traffic counters.
    ///
    /// Columns: VIP INDEX MODE FLAGS ACTIVE DRAINING DOWN PACKETS BYTES NEWFLOWS DROPS. FLAGS is
    /// a comma list of src-affinity, no-backend-pass, icmp-echo (answered for the address),
    /// fragments (this VIP receives the address's fragments of its protocol), or `-`.
    /// Address entries and fragment aliases of the VIP map are folded into these flags.
    Vips(VipsArgs),
    /// Backends (of one VIP or all): map state, ring share, counters and rates.
    ///
    /// Columns: VIP BACKEND ID STATE WEIGHT SLOTS SHARE% PACKETS BYTES NEWFLOWS PKT/S BYTES/S.
    /// Rates come from two reads --interval apart (--no-rates: one read, no rate columns).
    /// WEIGHT is the effective weight the agent recorded; health results are not in the maps:
    /// STATE is the map state and SHARE% the backend's actual share of the VIP's Maglev ring.
    Backends(BackendsArgs),
    /// One VIP's Maglev ring: slots and share per backend, expected share, imbalance.
    ///
    /// First line: VIP, index, ring size, empty slots (packets hashing there are dropped, or
    /// passed with no-backend-pass), active backends, imbalance (largest share / mean share of
    /// the backends holding slots; 1.0000 is perfect). Then the table BACKEND ID STATE SLOTS
    /// SHARE% EXPECTED%. EXPECTED% is each active backend's share of the active backends' total
    /// weight (the agent records the effective weight in each backend entry).
    Ring(RingArgs),
    /// Flow-table entries: 5-tuple, VIP, backend and whether the entry is still honoured.
    ///
    /// Columns: PROTO SOURCE DESTINATION VIP BACKEND ID STATE VALID. Entries outlive their
    /// connections until a new flow needs their slot (docs/datapath.md §4). VALID = no means
    /// the next packet of the flow re-hashes (backend down, removed, or its id reallocated
    /// since). Sorted by protocol, destination, then source.
    Flows(FlowsArgs),
    /// Global packet counters by reason (one per verdict or flow-table outcome).
    ///
    /// Columns: INDEX REASON COUNT, every counter. With --watch: SAMPLE TIME REASON TOTAL DELTA
    /// PER_S, every --interval, only the counters that moved (a quiet sample prints no line),
    /// until Ctrl-C or --count samples.
    Stats(StatsArgs),
    /// Which backend a flow goes to, and which rule decided.
    ///
    /// Example: xlb inspect explain 198.51.100.7:40000 203.0.113.10:80 tcp. Follows the
    /// datapath: VIP lookup (exact port, then all ports if any all-ports VIP exists), flow-table
    /// entry (honoured if its backend is active or draining and still the allocation the entry
    /// was written for), else
    /// the ring slot of the flow hash (source address only with src-affinity). A TCP SYN (SYN
    /// set, ACK clear) always takes the ring choice; --syn explains that case. Fragments,
    /// ICMP and the MTU check are not covered.
    Explain(ExplainArgs),
}

/// Output options shared by every subcommand.
#[derive(Clone, Debug, Default, Args)]
pub struct OutputArgs {
    /// Print JSON with stable field names instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Debug, Args)]
pub struct VipsArgs {
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Clone, Debug, Args)]
pub struct BackendsArgs {
    /// Only this VIP's backends (PROTO/ADDR:PORT).
    #[arg(value_parser = parse_vip, value_name = "VIP")]
    pub vip: Option<VipId>,
    /// Time between the two reads the rates come from (seconds, or e.g. 500ms).
    #[arg(long, value_parser = parse_interval, default_value = "1s", value_name = "DURATION")]
    pub interval: Duration,
    /// One read, no rate columns (returns at once).
    #[arg(long)]
    pub no_rates: bool,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Clone, Debug, Args)]
pub struct RingArgs {
    /// The VIP (PROTO/ADDR:PORT).
    #[arg(value_parser = parse_vip, value_name = "VIP")]
    pub vip: VipId,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Clone, Debug, Args)]
pub struct FlowsArgs {
    /// Only flows of this VIP (PROTO/ADDR:PORT; an all-ports VIP matches all its ports).
    #[arg(long, value_parser = parse_vip, value_name = "VIP")]
    pub vip: Option<VipId>,
    /// Only flows pinned to this backend address.
    #[arg(long, value_name = "ADDR")]
    pub backend: Option<IpAddr>,
    /// Print at most this many flows. Without a filter: the first N entries in map order (then
    /// sorted); with a filter the whole table is scanned.
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub limit: usize,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Clone, Debug, Args)]
pub struct StatsArgs {
    /// Print the counters that moved, with rates, every --interval until Ctrl-C.
    #[arg(long)]
    pub watch: bool,
    /// Time between samples in watch mode (seconds, or e.g. 500ms).
    #[arg(long, value_parser = parse_interval, default_value = "1s", value_name = "DURATION")]
    pub interval: Duration,
    /// Stop after this many samples.
    #[arg(long, requires = "watch", value_name = "N")]
    pub count: Option<u64>,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Clone, Debug, Args)]
pub struct ExplainArgs {
    /// Client address and port, e.g. 198.51.100.7:40000 or [2001:db8::7]:40000.
    #[arg(value_parser = parse_endpoint, value_name = "SRC:PORT")]
    pub src: SocketAddr,
    /// Destination (VIP) address and port.
    #[arg(value_parser = parse_endpoint, value_name = "DST:PORT")]
    pub dst: SocketAddr,
    /// tcp or udp.
    #[arg(value_parser = parse_proto, value_name = "PROTO")]
    pub proto: Proto,
    /// Explain a TCP SYN (SYN set, ACK clear): the flow table is not consulted.
    #[arg(long)]
    pub syn: bool,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Waits between samples (`backends` rates, `stats --watch`); tests inject their own.
pub trait Pacer {
    /// Waits about `interval` after the previous return (or creation) and returns the time
    /// that actually passed since then, or `None` to stop (Ctrl-C).
    fn wait(&mut self, interval: Duration) -> Option<Duration>;
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// The wall clock. With `stop_on_ctrl_c`, the first SIGINT ends the wait (and the loop) so the
/// output ends cleanly; a second one kills the process as usual.
pub struct RealPacer {
    last: Instant,
}

impl RealPacer {
    pub fn new(stop_on_ctrl_c: bool) -> Self {
        if stop_on_ctrl_c {
            INTERRUPTED.store(false, Ordering::Relaxed);
            // SAFETY: a zeroed sigaction is valid; the handler only stores to an atomic, which
            // is async-signal-safe; SA_RESETHAND restores the default action after one signal.
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = on_sigint as extern "C" fn(libc::c_int) as libc::sighandler_t;
                sa.sa_flags = libc::SA_RESETHAND | libc::SA_RESTART;
                libc::sigemptyset(&mut sa.sa_mask);
                libc::sigaction(libc::SIGINT, &sa, std::ptr::null_mut());
            }
        }
        Self {
            last: Instant::now(),
        }
    }
}

impl Pacer for RealPacer {
    fn wait(&mut self, interval: Duration) -> Option<Duration> {
        let deadline = self.last + interval;
        loop {
            if INTERRUPTED.load(Ordering::Relaxed) {
                return None;
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            std::thread::sleep((deadline - now).min(Duration::from_millis(100)));
        }
        let now = Instant::now();
        let elapsed = now - self.last;
        self.last = now;
        Some(elapsed)
    }
}

/// Runs one inspect command against `store`, writing to `out`. `stats --watch` runs until
/// Ctrl-C or `--count` samples.
pub fn run<S: MapStore>(store: &S, cmd: &InspectCmd, out: &mut dyn Write) -> anyhow::Result<()> {
    let watch = matches!(cmd, InspectCmd::Stats(a) if a.watch);
    run_with(store, cmd, out, &mut RealPacer::new(watch))
}

/// [`run`] with an injected [`Pacer`].
pub fn run_with<S: MapStore>(
    store: &S,
    cmd: &InspectCmd,
    out: &mut dyn Write,
    pacer: &mut dyn Pacer,
) -> anyhow::Result<()> {
    match cmd {
        InspectCmd::Vips(a) => vips(store, a, out),
        InspectCmd::Backends(a) => backends(store, a, out, pacer),
        InspectCmd::Ring(a) => ring(store, a, out),
        InspectCmd::Flows(a) => flows(store, a, out),
        InspectCmd::Stats(a) if a.watch => stats_watch(store, a, out, pacer),
        InspectCmd::Stats(a) => stats(store, a, out),
        InspectCmd::Explain(a) => explain(store, a, out),
    }
}

// ---------------------------------------------------------------------------------------------
// What the maps say, decoded once.

#[derive(Clone, Debug)]
struct VipEntry {
    id: VipId,
    meta: VipMeta,
}

struct Snapshot {
    config: LbConfig,
    entries: BTreeMap<VipKey, VipMeta>,
    /// Main VIP entries, sorted by VIP.
    vips: Vec<VipEntry>,
    /// Non-empty backend entries.
    backends: BTreeMap<u32, Backend>,
}

fn proto_of(number: u8) -> Option<Proto> {
    [Proto::Tcp, Proto::Udp]
        .into_iter()
        .find(|p| p.number() == number)
}

fn mode_name(mode: u8) -> String {
    match mode {
        MODE_IPIP => "ipip".into(),
        MODE_GUE => "gue".into(),
        MODE_DSR_L2 => "dsr-l2".into(),
        m => format!("unknown({m})"),
    }
}

fn state_name(state: u8) -> String {
    match state {
        BACKEND_EMPTY => "empty".into(),
        BACKEND_ACTIVE => "active".into(),
        BACKEND_DRAINING => "draining".into(),
        BACKEND_DOWN => "down".into(),
        s => format!("unknown({s})"),
    }
}

fn backend_addr(b: &Backend) -> Option<IpAddr> {
    from_words(b.family, &b.addr)
}

impl Snapshot {
    fn read<S: MapStore>(store: &S) -> anyhow::Result<Self> {
        let config = store.config()?;
        let entries: BTreeMap<VipKey, VipMeta> = store.vips()?.into_iter().collect();
        let mut vips: Vec<VipEntry> = entries
            .iter()
            .filter(|(k, m)| k.proto != 0 && m.flags & VIP_F_FRAG_ONLY == 0)
            .filter_map(|(k, m)| {
                Some(VipEntry {
                    id: VipId {
                        addr: from_words(k.family, &k.addr)?,
                        port: u16::from_be(k.port),
                        proto: proto_of(k.proto)?,
                    },
                    meta: *m,
                })
            })
            .collect();
        vips.sort_by_key(|v| v.id);
        let mut backends = BTreeMap::new();
        for id in 1..store.max_backends() {
            let b = store.backend(id)?;
            if b.state != BACKEND_EMPTY {
                backends.insert(id, b);
            }
        }
        Ok(Self {
            config,
            entries,
            vips,
            backends,
        })
    }

    fn vip(&self, id: &VipId) -> anyhow::Result<&VipEntry> {
        self.vips.iter().find(|v| v.id == *id).with_context(|| {
            format!("{id} is not in the VIP map (`xlb inspect vips` lists the VIPs)")
        })
    }

    fn vip_by_index(&self, index: u32) -> Option<&VipEntry> {
        self.vips.iter().find(|v| v.meta.index == index)
    }

    fn backends_of(&self, index: u32) -> impl Iterator<Item = (u32, &Backend)> {
        self.backends
            .iter()
            .filter(move |(_, b)| b.vip_index == index)
            .map(|(id, b)| (*id, b))
    }

    /// The VIP the datapath picks for a non-fragment to `dst:dport` (section 3), and whether it
    /// took the all-ports entry.
    fn lookup(&self, dst: IpAddr, dport: u16, proto: Proto) -> Option<(&VipEntry, bool)> {
        let exact = VipId {
            addr: dst,
            port: dport,
            proto,
        };
        let usable = |id: &VipId| {
            self.entries
                .get(&id.map_key())
                .filter(|m| m.flags & VIP_F_FRAG_ONLY == 0)
                .and_then(|_| self.vips.iter().find(|v| v.id == *id))
        };
        if let Some(v) = usable(&exact) {
            return Some((v, false));
        }
        if self.config.flags & CONFIG_F_ANY_PORT_VIPS != 0 {
            return usable(&VipId { port: 0, ..exact }).map(|v| (v, true));
        }
        None
    }

    fn flags(&self, v: &VipEntry) -> Vec<String> {
        let mut flags = Vec::new();
        if v.meta.flags & VIP_F_SRC_AFFINITY != 0 {
            flags.push("src-affinity".to_string());
        }
        if v.meta.flags & VIP_F_NO_BACKEND_PASS != 0 {
            flags.push("no-backend-pass".to_string());
        }
        let (family, words) = to_words(v.id.addr);
        let shared = |proto: u8| {
            self.entries.get(&VipKey {
                addr: words,
                port: 0,
                proto,
                family,
            })
        };
        if shared(0).is_some_and(|m| m.flags & VIP_F_ICMP_ECHO != 0) {
            flags.push("icmp-echo".to_string());
        }
        let frag_target = v.id.port == 0
            || shared(v.id.proto.number())
                .is_some_and(|m| m.flags & VIP_F_FRAG_ONLY != 0 && m.index == v.meta.index);
        if frag_target {
            flags.push("fragments".to_string());
        }
        let known = VIP_F_SRC_AFFINITY | VIP_F_NO_BACKEND_PASS | VIP_F_ICMP_ECHO | VIP_F_FRAG_ONLY;
        if v.meta.flags & !known != 0 {
            flags.push(format!("{:#x}", v.meta.flags & !known));
        }
        flags
    }
}

fn flags_text(flags: &[String]) -> String {
    if flags.is_empty() {
        "-".into()
    } else {
        flags.join(",")
    }
}

fn write_json<T: Serialize>(out: &mut dyn Write, v: &T) -> anyhow::Result<()> {
    serde_json::to_writer_pretty(&mut *out, v)?;
    writeln!(out)?;
    Ok(())
}

fn share(slots: u32) -> f64 {
    pct(f64::from(slots), f64::from(RING_SIZE))
}

// ---------------------------------------------------------------------------------------------
// vips

#[derive(Serialize)]
struct VipsJson {
    vips: Vec<VipJson>,
}

#[derive(Serialize, Default)]
struct StateCounts {
    active: u32,
    draining: u32,
    down: u32,
}

#[derive(Serialize)]
struct VipJson {
    vip: String,
    proto: &'static str,
    addr: IpAddr,
    port: u16,
    index: u32,
    mode: String,
    flags: Vec<String>,
    backends: StateCounts,
    packets: u64,
    bytes: u64,
    new_flows: u64,
    drops: u64,
}

fn vips<S: MapStore>(store: &S, a: &VipsArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let snap = Snapshot::read(store)?;
    let mut rows = Vec::new();
    for v in &snap.vips {
        let mut counts = StateCounts::default();
        for (_, b) in snap.backends_of(v.meta.index) {
            match b.state {
                BACKEND_ACTIVE => counts.active += 1,
                BACKEND_DRAINING => counts.draining += 1,
                BACKEND_DOWN => counts.down += 1,
                _ => {}
            }
        }
        let s = store.vip_stats(v.meta.index)?;
        rows.push(VipJson {
            vip: v.id.to_string(),
            proto: v.id.proto.name(),
            addr: v.id.addr,
            port: v.id.port,
            index: v.meta.index,
            mode: mode_name(v.meta.mode),
            flags: snap.flags(v),
            backends: counts,
            packets: s.packets,
            bytes: s.bytes,
            new_flows: s.new_flows,
            drops: s.drops,
        });
    }
    if a.output.json {
        return write_json(out, &VipsJson { vips: rows });
    }
    use Align::{Left as L, Right as R};
    let mut t = Table::new(&[
        ("VIP", L),
        ("INDEX", R),
        ("MODE", L),
        ("FLAGS", L),
        ("ACTIVE", R),
        ("DRAINING", R),
        ("DOWN", R),
        ("PACKETS", R),
        ("BYTES", R),
        ("NEWFLOWS", R),
        ("DROPS", R),
    ]);
    for r in rows {
        t.push(vec![
            r.vip,
            r.index.to_string(),
            r.mode,
            flags_text(&r.flags),
            r.backends.active.to_string(),
            r.backends.draining.to_string(),
            r.backends.down.to_string(),
            r.packets.to_string(),
            r.bytes.to_string(),
            r.new_flows.to_string(),
            r.drops.to_string(),
        ]);
    }
    out.write_all(t.render().as_bytes())?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// backends

#[derive(Serialize)]
struct BackendsJson {
    interval_s: Option<f64>,
    backends: Vec<BackendRowJson>,
}

#[derive(Serialize)]
struct BackendRowJson {
    vip: Option<String>,
    vip_index: u32,
    addr: Option<IpAddr>,
    id: u32,
    state: String,
    /// Effective weight as the agent recorded it in the backend entry.
    weight: u32,
    slots: u32,
    share_pct: f64,
    packets: u64,
    bytes: u64,
    new_flows: u64,
    packets_per_s: Option<f64>,
    bytes_per_s: Option<f64>,
}

fn backends<S: MapStore>(
    store: &S,
    a: &BackendsArgs,
    out: &mut dyn Write,
    pacer: &mut dyn Pacer,
) -> anyhow::Result<()> {
    let snap = Snapshot::read(store)?;
    let selected: Vec<(u32, Backend)> = match &a.vip {
        Some(id) => {
            let v = snap.vip(id)?;
            snap.backends_of(v.meta.index)
                .map(|(id, b)| (id, *b))
                .collect()
        }
        None => snap.backends.iter().map(|(id, b)| (*id, *b)).collect(),
    };
    let read = |sel: &[(u32, Backend)]| -> anyhow::Result<Vec<TrafficStats>> {
        Ok(sel
            .iter()
            .map(|(id, _)| store.backend_stats(*id))
            .collect::<Result<_, _>>()?)
    };
    let first = read(&selected)?;
    let (last, elapsed) = if a.no_rates {
        (first.clone(), None)
    } else {
        match pacer.wait(a.interval) {
            Some(e) => (read(&selected)?, Some(e)),
            None => (first.clone(), None),
        }
    };
    let mut slot_counts: BTreeMap<u32, BTreeMap<u32, u32>> = BTreeMap::new();
    let mut rows = Vec::new();
    for (i, (id, b)) in selected.iter().enumerate() {
        if let Entry::Vacant(e) = slot_counts.entry(b.vip_index) {
            e.insert(if snap.vip_by_index(b.vip_index).is_some() {
                crate::maglev::slot_counts(&store.ring(b.vip_index)?)
            } else {
                BTreeMap::new()
            });
        }
        let slots = slot_counts[&b.vip_index].get(id).copied().unwrap_or(0);
        let (s0, s1) = (first[i], last[i]);
        rows.push(BackendRowJson {
            vip: snap.vip_by_index(b.vip_index).map(|v| v.id.to_string()),
            vip_index: b.vip_index,
            addr: backend_addr(b),
            id: *id,
            state: state_name(b.state),
            weight: b.weight,
            slots,
            share_pct: share(slots),
            packets: s1.packets,
            bytes: s1.bytes,
            new_flows: s1.new_flows,
            packets_per_s: elapsed.map(|e| rate(delta(s0.packets, s1.packets), e)),
            bytes_per_s: elapsed.map(|e| rate(delta(s0.bytes, s1.bytes), e)),
        });
    }
    rows.sort_by(|x, y| {
        let vip_of = |r: &BackendRowJson| snap.vip_by_index(r.vip_index).map(|v| v.id);
        (vip_of(x), x.vip_index, x.addr, x.id).cmp(&(vip_of(y), y.vip_index, y.addr, y.id))
    });
    if a.output.json {
        return write_json(
            out,
            &BackendsJson {
                interval_s: elapsed.map(|e| e.as_secs_f64()),
                backends: rows,
            },
        );
    }
    use Align::{Left as L, Right as R};
    let mut cols = vec![
        ("VIP", L),
        ("BACKEND", L),
        ("ID", R),
        ("STATE", L),
        ("WEIGHT", R),
        ("SLOTS", R),
        ("SHARE%", R),
        ("PACKETS", R),
        ("BYTES", R),
        ("NEWFLOWS", R),
    ];
    if elapsed.is_some() {
        cols.extend([("PKT/S", R), ("BYTES/S", R)]);
    }
    let mut t = Table::new(&cols);
    for r in rows {
        let mut row = vec![
            r.vip.unwrap_or_else(|| format!("index:{}", r.vip_index)),
            opt(r.addr),
            r.id.to_string(),
            r.state,
            r.weight.to_string(),
            r.slots.to_string(),
            format!("{:.2}", r.share_pct),
            r.packets.to_string(),
            r.bytes.to_string(),
            r.new_flows.to_string(),
        ];
        if let (Some(p), Some(b)) = (r.packets_per_s, r.bytes_per_s) {
            row.extend([format!("{p:.1}"), format!("{b:.1}")]);
        }
        t.push(row);
    }
    out.write_all(t.render().as_bytes())?;
    Ok(())
}

/// Counter increase; a counter that went down was reset (new maps), so its value is the increase.
fn delta(before: u64, after: u64) -> u64 {
    if after >= before {
        after - before
    } else {
        after
    }
}

// ---------------------------------------------------------------------------------------------
// ring

#[derive(Serialize)]
struct RingJson {
    vip: String,
    vip_index: u32,
    ring_size: u32,
    empty_slots: u32,
    empty_share_pct: f64,
    active_backends: u32,
    imbalance: Option<f64>,
    backends: Vec<RingRowJson>,
}

#[derive(Serialize)]
struct RingRowJson {
    addr: Option<IpAddr>,
    id: u32,
    state: String,
    slots: u32,
    share_pct: f64,
    expected_share_pct: f64,
}

fn ring<S: MapStore>(store: &S, a: &RingArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let snap = Snapshot::read(store)?;
    let v = snap.vip(&a.vip)?;
    let index = v.meta.index;
    let counts = crate::maglev::slot_counts(&store.ring(index)?);
    let empty = counts.get(&0).copied().unwrap_or(0);
    // The VIP's backends, plus any id its ring names that is not one of them (the datapath
    // drops those packets: DropBadBackend).
    let mut ids: BTreeSet<u32> = snap.backends_of(index).map(|(id, _)| id).collect();
    ids.extend(counts.keys().copied().filter(|id| *id != 0));
    let active = snap
        .backends_of(index)
        .filter(|(_, b)| b.state == BACKEND_ACTIVE)
        .count() as u32;
    // Expected shares follow the weights the agent recorded; entries without one (written by
    // something else) count as equal.
    let active_weight: u64 = snap
        .backends_of(index)
        .filter(|(_, b)| b.state == BACKEND_ACTIVE)
        .map(|(_, b)| u64::from(b.weight))
        .sum();
    let mut rows = Vec::new();
    for id in ids {
        let b = match snap.backends.get(&id) {
            Some(b) => *b,
            None => store.backend(id).unwrap_or_default(),
        };
        let state = if b.state != BACKEND_EMPTY && b.vip_index != index {
            format!("other-vip({})", b.vip_index)
        } else {
            state_name(b.state)
        };
        let slots = counts.get(&id).copied().unwrap_or(0);
        let expected = if b.state != BACKEND_ACTIVE || b.vip_index != index {
            0.0
        } else if active_weight == 0 {
            100.0 / f64::from(active)
        } else {
            100.0 * f64::from(b.weight) / active_weight as f64
        };
        rows.push(RingRowJson {
            addr: backend_addr(&b),
            id,
            state,
            slots,
            share_pct: share(slots),
            expected_share_pct: expected,
        });
    }
    rows.sort_by_key(|r| (r.addr, r.id));
    let holders: Vec<u32> = rows.iter().map(|r| r.slots).filter(|s| *s > 0).collect();
    let imbalance = (!holders.is_empty()).then(|| {
        let max = f64::from(*holders.iter().max().expect("non-empty"));
        let mean = f64::from(holders.iter().sum::<u32>()) / holders.len() as f64;
        max / mean
    });
    let doc = RingJson {
        vip: v.id.to_string(),
        vip_index: index,
        ring_size: RING_SIZE,
        empty_slots: empty,
        empty_share_pct: share(empty),
        active_backends: active,
        imbalance,
        backends: rows,
    };
    if a.output.json {
        return write_json(out, &doc);
    }
    writeln!(
        out,
        "{}  index {}  ring_size {}  empty_slots {} ({:.2}%)  active_backends {}  imbalance {}",
        doc.vip,
        doc.vip_index,
        doc.ring_size,
        doc.empty_slots,
        doc.empty_share_pct,
        doc.active_backends,
        opt(doc.imbalance.map(|i| format!("{i:.4}")))
    )?;
    use Align::{Left as L, Right as R};
    let mut t = Table::new(&[
        ("BACKEND", L),
        ("ID", R),
        ("STATE", L),
        ("SLOTS", R),
        ("SHARE%", R),
        ("EXPECTED%", R),
    ]);
    for r in doc.backends {
        t.push(vec![
            opt(r.addr),
            r.id.to_string(),
            r.state,
            r.slots.to_string(),
            format!("{:.2}", r.share_pct),
            format!("{:.2}", r.expected_share_pct),
        ]);
    }
    out.write_all(t.render().as_bytes())?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// flows

#[derive(Serialize)]
struct FlowsJson {
    limit: usize,
    more: bool,
    flows: Vec<FlowJson>,
}

#[derive(Serialize)]
struct FlowJson {
    proto: String,
    src: Option<SocketAddr>,
    dst: Option<SocketAddr>,
    vip: Option<String>,
    backend_id: u32,
    backend: Option<IpAddr>,
    backend_state: String,
    valid: bool,
}

fn proto_name(number: u8) -> String {
    proto_of(number).map_or_else(|| number.to_string(), |p| p.name().to_string())
}

fn flows<S: MapStore>(store: &S, a: &FlowsArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let snap = Snapshot::read(store)?;
    let filtered = a.vip.is_some() || a.backend.is_some();
    if let Some(id) = &a.vip {
        snap.vip(id)?;
    }
    let raw = store.flows(if filtered {
        usize::MAX
    } else {
        a.limit.saturating_add(1)
    })?;
    let mut rows = Vec::new();
    for (k, e) in raw {
        let src = from_words(k.family, &k.src).map(|ip| SocketAddr::new(ip, u16::from_be(k.sport)));
        let dst = from_words(k.family, &k.dst).map(|ip| SocketAddr::new(ip, u16::from_be(k.dport)));
        let vip = match (dst, proto_of(k.proto)) {
            (Some(d), Some(p)) => snap.lookup(d.ip(), d.port(), p).map(|(v, _)| v),
            _ => None,
        };
        let b = match snap.backends.get(&e.backend_id) {
            Some(b) => *b,
            None => Backend::default(),
        };
        let valid = e.honoured_by(&b);
        if a.vip.is_some() && a.vip != vip.map(|v| v.id) {
            continue;
        }
        if a.backend.is_some() && a.backend != backend_addr(&b) {
            continue;
        }
        rows.push((
            (k.proto, dst, src),
            FlowJson {
                proto: proto_name(k.proto),
                src,
                dst,
                vip: vip.map(|v| v.id.to_string()),
                backend_id: e.backend_id,
                backend: backend_addr(&b),
                backend_state: if b.state != BACKEND_EMPTY
                    && vip.is_some_and(|v| v.meta.index != b.vip_index)
                {
                    format!("other-vip({})", b.vip_index)
                } else {
                    state_name(b.state)
                },
                valid,
            },
        ));
    }
    rows.sort_by_key(|r| r.0);
    let more = rows.len() > a.limit;
    rows.truncate(a.limit);
    let flows: Vec<FlowJson> = rows.into_iter().map(|r| r.1).collect();
    if a.output.json {
        return write_json(
            out,
            &FlowsJson {
                limit: a.limit,
                more,
                flows,
            },
        );
    }
    use Align::{Left as L, Right as R};
    let mut t = Table::new(&[
        ("PROTO", L),
        ("SOURCE", L),
        ("DESTINATION", L),
        ("VIP", L),
        ("BACKEND", L),
        ("ID", R),
        ("STATE", L),
        ("VALID", L),
    ]);
    for f in flows {
        t.push(vec![
            f.proto,
            opt(f.src),
            opt(f.dst),
            opt(f.vip),
            opt(f.backend),
            f.backend_id.to_string(),
            f.backend_state,
            if f.valid { "yes" } else { "no" }.into(),
        ]);
    }
    out.write_all(t.render().as_bytes())?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// stats

#[derive(Serialize)]
struct StatsJson {
    counters: Vec<CounterJson>,
}

#[derive(Serialize)]
struct CounterJson {
    index: u32,
    name: &'static str,
    total: u64,
}

#[derive(Serialize)]
struct SampleJson {
    sample: u64,
    time_s: f64,
    elapsed_s: f64,
    counters: Vec<MovedJson>,
}

#[derive(Serialize)]
struct MovedJson {
    index: u32,
    name: &'static str,
    total: u64,
    delta: u64,
    per_s: f64,
}

fn stats<S: MapStore>(store: &S, a: &StatsArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let g = store.global_stats()?;
    let counters: Vec<CounterJson> = Counter::ALL
        .iter()
        .map(|c| CounterJson {
            index: *c as u32,
            name: c.name(),
            total: g.counters[*c as usize],
        })
        .collect();
    if a.output.json {
        return write_json(out, &StatsJson { counters });
    }
    let mut t = Table::new(&[
        ("INDEX", Align::Right),
        ("REASON", Align::Left),
        ("COUNT", Align::Right),
    ]);
    for c in counters {
        t.push(vec![
            c.index.to_string(),
            c.name.into(),
            c.total.to_string(),
        ]);
    }
    out.write_all(t.render().as_bytes())?;
    Ok(())
}

/// Fixed widths of the streamed watch table (a wider cell widens its own line only).
const WATCH_COLUMNS: [(&str, Align, usize); 6] = [
    ("SAMPLE", Align::Right, 6),
    ("TIME", Align::Right, 9),
    ("REASON", Align::Left, 25),
    ("TOTAL", Align::Right, 14),
    ("DELTA", Align::Right, 10),
    ("PER_S", Align::Right, 12),
];

fn stats_watch<S: MapStore>(
    store: &S,
    a: &StatsArgs,
    out: &mut dyn Write,
    pacer: &mut dyn Pacer,
) -> anyhow::Result<()> {
    let widths: Vec<usize> = WATCH_COLUMNS.iter().map(|c| c.2).collect();
    let aligns: Vec<Align> = WATCH_COLUMNS.iter().map(|c| c.1).collect();
    if !a.output.json {
        let header: Vec<String> = WATCH_COLUMNS.iter().map(|c| c.0.to_string()).collect();
        writeln!(out, "{}", render_row(&header, &widths, &aligns))?;
        out.flush()?;
    }
    let mut prev: GlobalStats = store.global_stats()?;
    let mut time = Duration::ZERO;
    let mut sample = 0u64;
    while a.count.is_none_or(|n| sample < n) {
        let Some(elapsed) = pacer.wait(a.interval) else {
            break;
        };
        let cur = store.global_stats()?;
        sample += 1;
        time += elapsed;
        let moved: Vec<MovedJson> = Counter::ALL
            .iter()
            .filter_map(|c| {
                let i = *c as usize;
                let d = delta(prev.counters[i], cur.counters[i]);
                (d > 0).then(|| MovedJson {
                    index: *c as u32,
                    name: c.name(),
                    total: cur.counters[i],
                    delta: d,
                    per_s: rate(d, elapsed),
                })
            })
            .collect();
        if a.output.json {
            let doc = SampleJson {
                sample,
                time_s: time.as_secs_f64(),
                elapsed_s: elapsed.as_secs_f64(),
                counters: moved,
            };
            serde_json::to_writer(&mut *out, &doc)?;
            writeln!(out)?;
        } else {
            for m in moved {
                let row = vec![
                    sample.to_string(),
                    format!("{:.3}", time.as_secs_f64()),
                    m.name.to_string(),
                    m.total.to_string(),
                    m.delta.to_string(),
                    format!("{:.1}", m.per_s),
                ];
                writeln!(out, "{}", render_row(&row, &widths, &aligns))?;
            }
        }
        out.flush()?;
        prev = cur;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// explain

#[derive(Serialize)]
struct ExplainJson {
    flow: FlowTupleJson,
    config_ready: bool,
    vip: Option<String>,
    /// `exact_port` or `all_ports`.
    vip_lookup: Option<&'static str>,
    vip_index: Option<u32>,
    mode: Option<String>,
    flags: Vec<String>,
    seed: u32,
    /// `5-tuple` or `source address`.
    hash_input: Option<&'static str>,
    hash: Option<u32>,
    slot: Option<u32>,
    ring_backend: Option<BackendRefJson>,
    flow_entry: Option<FlowEntryJson>,
    /// `not_ready`, `not_a_vip`, `flow_hit`, `flow_rehash`, `flow_miss`, `flow_syn`.
    rule: &'static str,
    backend: Option<BackendRefJson>,
    /// `XDP_TX`, `XDP_PASS`, `XDP_DROP`.
    verdict: &'static str,
    /// The `stats` counter this packet bumps (besides `tx` for forwarded packets).
    counter: &'static str,
    reason: String,
    syn_note: Option<String>,
}

#[derive(Serialize)]
struct FlowTupleJson {
    proto: &'static str,
    src: SocketAddr,
    dst: SocketAddr,
}

#[derive(Serialize, Clone, PartialEq)]
struct BackendRefJson {
    id: u32,
    addr: Option<IpAddr>,
    state: String,
    vip_index: u32,
}

#[derive(Serialize)]
struct FlowEntryJson {
    backend_id: u32,
    backend: Option<BackendRefJson>,
    valid: bool,
    invalid_reason: Option<String>,
}

fn backend_ref(id: u32, b: &Backend) -> BackendRefJson {
    BackendRefJson {
        id,
        addr: backend_addr(b),
        state: state_name(b.state),
        vip_index: b.vip_index,
    }
}

fn describe(b: &BackendRefJson) -> String {
    match b.addr {
        Some(addr) => format!("backend {} {addr} ({})", b.id, b.state),
        None => format!("backend {} ({})", b.id, b.state),
    }
}

/// Outcome of the ring choice (section 4).
enum RingChoice {
    Backend(BackendRefJson, Backend),
    NoBackend,
    BadBackend(u32, Backend),
}

fn explain<S: MapStore>(store: &S, a: &ExplainArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let (sfam, src) = to_words(a.src.ip());
    let (dfam, dst) = to_words(a.dst.ip());
    if sfam != dfam {
        bail!("source and destination must be of the same address family");
    }
    let config = store.config()?;
    let mut doc = ExplainJson {
        flow: FlowTupleJson {
            proto: a.proto.name(),
            src: a.src,
            dst: a.dst,
        },
        config_ready: config.flags & CONFIG_F_READY != 0,
        vip: None,
        vip_lookup: None,
        vip_index: None,
        mode: None,
        flags: Vec::new(),
        seed: config.hash_seed,
        hash_input: None,
        hash: None,
        slot: None,
        ring_backend: None,
        flow_entry: None,
        rule: "not_ready",
        backend: None,
        verdict: "XDP_PASS",
        counter: Counter::PassNotReady.name(),
        reason: String::new(),
        syn_note: None,
    };
    if !doc.config_ready {
        doc.reason = "the agent has not written a complete configuration (CONFIG_F_READY unset): \
                      every packet passes"
            .into();
        return explain_out(out, a, &doc);
    }
    let snap = Snapshot::read(store)?;
    let Some((v, all_ports)) = snap.lookup(a.dst.ip(), a.dst.port(), a.proto) else {
        doc.rule = "not_a_vip";
        doc.counter = Counter::Pass.name();
        let any = config.flags & CONFIG_F_ANY_PORT_VIPS != 0;
        doc.reason = format!(
            "no VIP {}/{}{}",
            a.proto.name(),
            a.dst,
            if any {
                " and no all-ports VIP on that address"
            } else {
                " (all-ports lookup off: no all-ports VIP configured)"
            }
        );
        return explain_out(out, a, &doc);
    };
    let index = v.meta.index;
    doc.vip = Some(v.id.to_string());
    doc.vip_lookup = Some(if all_ports { "all_ports" } else { "exact_port" });
    doc.vip_index = Some(index);
    doc.mode = Some(mode_name(v.meta.mode));
    doc.flags = snap.flags(v);

    // Hash and ring choice.
    let seed = config.hash_seed;
    let affinity = v.meta.flags & VIP_F_SRC_AFFINITY != 0;
    let hash = match (dfam, affinity) {
        (FAMILY_V4, false) => flow_hash_v4(
            seed,
            src[0],
            dst[0],
            ports_word(a.src.port().to_be(), a.dst.port().to_be()),
            a.proto.number(),
        ),
        (FAMILY_V4, true) => src_hash_v4(seed, src[0]),
        (FAMILY_V6, false) => flow_hash_v6(
            seed,
            &src,
            &dst,
            ports_word(a.src.port().to_be(), a.dst.port().to_be()),
            a.proto.number(),
        ),
        _ => src_hash_v6(seed, &src),
    };
    let slot = ring_slot(hash);
    doc.hash_input = Some(if affinity {
        "source address"
    } else {
        "5-tuple"
    });
    doc.hash = Some(hash);
    doc.slot = Some(slot);
    let ring = store.ring(index)?;
    let ring_id = ring.get(slot as usize).copied().unwrap_or(0);
    let choice = if ring_id == 0 {
        RingChoice::NoBackend
    } else {
        let b = store.backend(ring_id).unwrap_or_default();
        if b.state == BACKEND_EMPTY || b.vip_index != index {
            RingChoice::BadBackend(ring_id, b)
        } else {
            RingChoice::Backend(backend_ref(ring_id, &b), b)
        }
    };
    doc.ring_backend = match &choice {
        RingChoice::Backend(r, _) => Some(r.clone()),
        RingChoice::BadBackend(id, b) => Some(backend_ref(*id, b)),
        RingChoice::NoBackend => None,
    };

    // Flow table.
    let tcp_syn = a.syn && a.proto == Proto::Tcp;
    let mut picked: Option<(BackendRefJson, Backend)> = None;
    if tcp_syn {
        doc.rule = "flow_syn";
        doc.reason = "TCP SYN: the ring choice is taken whatever the flow table holds".into();
    } else {
        let key = FlowKey {
            src,
            dst,
            sport: a.src.port().to_be(),
            dport: a.dst.port().to_be(),
            proto: a.proto.number(),
            family: dfam,
            _pad: [0; 2],
        };
        match store.flow(&key)? {
            None => {
                doc.rule = "flow_miss";
                doc.reason = "no flow-table entry: new flow, ring choice (then remembered)".into();
            }
            Some(e) => {
                let b = store.backend(e.backend_id).ok();
                let invalid = match b {
                    None => Some(format!("backend id {} out of range", e.backend_id)),
                    Some(b) if b.state == BACKEND_EMPTY => {
                        Some("backend entry empty, backend removed".to_string())
                    }
                    Some(b) if !b.accepts_existing_flows() => {
                        Some(format!("backend {}", state_name(b.state)))
                    }
                    Some(b) if !e.honoured_by(&b) => Some(format!(
                        "backend id recycled (entry generation {}, backend now {})",
                        e.generation, b.generation
                    )),
                    Some(_) => None,
                };
                let bref = b.map(|b| backend_ref(e.backend_id, &b));
                doc.flow_entry = Some(FlowEntryJson {
                    backend_id: e.backend_id,
                    backend: bref.clone(),
                    valid: invalid.is_none(),
                    invalid_reason: invalid.clone(),
                });
                match (invalid, bref, b) {
                    (None, Some(r), Some(b)) => {
                        doc.rule = "flow_hit";
                        doc.reason = format!(
                            "flow-table entry honoured (backend {}, still this VIP's): the flow \
                             stays on its backend",
                            r.state
                        );
                        picked = Some((r, b));
                    }
                    (why, _, _) => {
                        doc.rule = "flow_rehash";
                        doc.reason = format!(
                            "flow-table entry not honoured ({}): re-hashed to the ring choice, \
                             entry overwritten",
                            why.unwrap_or_default()
                        );
                    }
                }
            }
        }
    }
    if picked.is_none() {
        match &choice {
            RingChoice::Backend(r, b) => picked = Some((r.clone(), *b)),
            RingChoice::NoBackend => {
                let pass = v.meta.flags & VIP_F_NO_BACKEND_PASS != 0;
                doc.verdict = if pass { "XDP_PASS" } else { "XDP_DROP" };
                doc.counter = if pass {
                    Counter::PassNoBackend.name()
                } else {
                    Counter::DropNoBackend.name()
                };
                doc.reason += &format!("; ring slot {slot} is empty: the VIP has no backend");
            }
            RingChoice::BadBackend(id, b) => {
                doc.verdict = "XDP_DROP";
                doc.counter = Counter::DropBadBackend.name();
                doc.reason += &format!(
                    "; ring slot {slot} names backend {id}, which is {}",
                    if b.state == BACKEND_EMPTY {
                        "empty".to_string()
                    } else {
                        format!("VIP index {}'s", b.vip_index)
                    }
                );
            }
        }
    }
    if let Some((r, b)) = picked {
        // Section 5: an IPv4 outer header cannot carry an IPv6 VIP.
        let tunnel = v.meta.mode == MODE_IPIP || v.meta.mode == MODE_GUE;
        if !matches!(v.meta.mode, MODE_IPIP | MODE_GUE | MODE_DSR_L2)
            || (tunnel && b.family == FAMILY_V4 && dfam == FAMILY_V6)
        {
            doc.verdict = "XDP_DROP";
            doc.counter = Counter::DropUnsupported.name();
            doc.reason += &format!(
                "; mode {} cannot carry this flow to {}",
                mode_name(v.meta.mode),
                opt(r.addr)
            );
        } else {
            doc.verdict = "XDP_TX";
            doc.counter = match doc.rule {
                "flow_hit" => Counter::FlowHit.name(),
                "flow_rehash" => Counter::FlowRehash.name(),
                "flow_syn" => Counter::FlowSyn.name(),
                _ => Counter::FlowMiss.name(),
            };
        }
        doc.backend = Some(r);
    }
    if a.proto == Proto::Tcp && !tcp_syn {
        let ring_desc = match &doc.ring_backend {
            Some(r) if matches!(choice, RingChoice::Backend(..)) => describe(r),
            _ => "no usable backend (see ring)".into(),
        };
        let same = doc.backend.is_some() && doc.backend == doc.ring_backend;
        doc.syn_note = Some(format!(
            "a TCP SYN (SYN set, ACK clear) skips the flow table and takes the ring choice: {}{}",
            ring_desc,
            if same { " (the same)" } else { "" }
        ));
    }
    explain_out(out, a, &doc)
}

fn explain_out(out: &mut dyn Write, a: &ExplainArgs, doc: &ExplainJson) -> anyhow::Result<()> {
    if a.output.json {
        return write_json(out, doc);
    }
    let mut lines: Vec<(&str, String)> = vec![(
        "flow",
        format!("{} {} -> {}", doc.flow.proto, doc.flow.src, doc.flow.dst),
    )];
    if let (Some(vip), Some(lookup)) = (&doc.vip, doc.vip_lookup) {
        lines.push((
            "vip",
            format!(
                "{vip} index {} mode {} flags {} ({} match)",
                opt(doc.vip_index),
                opt(doc.mode.clone()),
                flags_text(&doc.flags),
                lookup.replace('_', " ")
            ),
        ));
    }
    if let (Some(hash), Some(input)) = (doc.hash, doc.hash_input) {
        lines.push((
            "hash",
            format!("{hash:#010x} ({input}, seed {:#010x})", doc.seed),
        ));
    }
    if let Some(slot) = doc.slot {
        let target = match &doc.ring_backend {
            Some(r) => describe(r),
            None => "0 (empty)".into(),
        };
        lines.push(("ring", format!("slot {slot} -> {target}")));
    }
    if let Some(e) = &doc.flow_entry {
        let b = e.backend.as_ref().map_or_else(
            || format!("backend {} (out of range)", e.backend_id),
            describe,
        );
        let validity = match &e.invalid_reason {
            None => "valid".to_string(),
            Some(why) => format!("not valid: {why}"),
        };
        lines.push(("flow-table", format!("hit: {b}, {validity}")));
    } else if doc.rule == "flow_miss" {
        lines.push(("flow-table", "miss".into()));
    }
    lines.push(("rule", format!("{}: {}", doc.rule, doc.reason)));
    let verdict = match (doc.rule, &doc.backend, doc.verdict) {
        ("not_a_vip", _, _) => "not a VIP: XDP_PASS".to_string(),
        (_, Some(b), "XDP_TX") => format!("XDP_TX to {}", describe(b)),
        (_, _, v) => v.to_string(),
    };
    lines.push(("verdict", format!("{verdict}; counter {}", doc.counter)));
    if let Some(n) = &doc.syn_note {
        lines.push(("note", n.clone()));
    }
    let w = lines.iter().map(|l| l.0.len()).max().unwrap_or(0);
    for (k, v) in lines {
        writeln!(out, "{k:<w$}  {v}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use clap::Parser;
    use lb_common::FlowEntry;
    use serde_json::Value;

    use super::*;
    use crate::maglev::slot_counts;
    use crate::maps::{FakeStore, Result as MapResult};
    use crate::model::{Config, ForwardMode, NoBackend};
    use crate::reconcile::{Overrides, Reconciler};
    use crate::test_fixtures::{SEED, config, net, vip};

    /// A `MapStore` over a shared `FakeStore`, so a test pacer can change counters between the
    /// samples of one `run_with` call, and the reconciler can fill the same store.
    struct Shared<'a>(&'a RefCell<FakeStore>);

    impl MapStore for Shared<'_> {
        fn max_vips(&self) -> u32 {
            self.0.borrow().max_vips()
        }
        fn max_backends(&self) -> u32 {
            self.0.borrow().max_backends()
        }
        fn config(&self) -> MapResult<LbConfig> {
            self.0.borrow().config()
        }
        fn set_config(&mut self, cfg: &LbConfig) -> MapResult<()> {
            self.0.borrow_mut().set_config(cfg)
        }
        fn vips(&self) -> MapResult<Vec<(VipKey, VipMeta)>> {
            self.0.borrow().vips()
        }
        fn set_vip(&mut self, key: &VipKey, meta: &VipMeta) -> MapResult<()> {
            self.0.borrow_mut().set_vip(key, meta)
        }
        fn remove_vip(&mut self, key: &VipKey) -> MapResult<()> {
            self.0.borrow_mut().remove_vip(key)
        }
        fn backend(&self, id: u32) -> MapResult<Backend> {
            self.0.borrow().backend(id)
        }
        fn set_backend(&mut self, id: u32, backend: &Backend) -> MapResult<()> {
            self.0.borrow_mut().set_backend(id, backend)
        }
        fn ring(&self, vip_index: u32) -> MapResult<Vec<u32>> {
            self.0.borrow().ring(vip_index)
        }
        fn set_ring_slots(&mut self, vip_index: u32, slots: &[(u32, u32)]) -> MapResult<()> {
            self.0.borrow_mut().set_ring_slots(vip_index, slots)
        }
        fn filter_words(&self) -> MapResult<Vec<u64>> {
            self.0.borrow().filter_words()
        }
        fn set_filter_word(&mut self, index: u32, word: u64) -> MapResult<()> {
            self.0.borrow_mut().set_filter_word(index, word)
        }
        fn global_stats(&self) -> MapResult<GlobalStats> {
            self.0.borrow().global_stats()
        }
        fn vip_stats(&self, vip_index: u32) -> MapResult<TrafficStats> {
            self.0.borrow().vip_stats(vip_index)
        }
        fn backend_stats(&self, id: u32) -> MapResult<TrafficStats> {
            self.0.borrow().backend_stats(id)
        }
        fn clear_vip_stats(&mut self, vip_index: u32) -> MapResult<()> {
            self.0.borrow_mut().clear_vip_stats(vip_index)
        }
        fn clear_backend_stats(&mut self, id: u32) -> MapResult<()> {
            self.0.borrow_mut().clear_backend_stats(id)
        }
        fn flows(&self, limit: usize) -> MapResult<Vec<(FlowKey, FlowEntry)>> {
            self.0.borrow().flows(limit)
        }
        fn flow(&self, key: &FlowKey) -> MapResult<Option<FlowEntry>> {
            self.0.borrow().flow(key)
        }
    }

    /// Returns `elapsed` at every wait, after letting `step` change the store (call number
    /// from 1).
    struct Script<'a> {
        store: &'a RefCell<FakeStore>,
        step: Step<'a>,
        calls: usize,
        elapsed: Duration,
    }

    type Step<'a> = Box<dyn FnMut(&mut FakeStore, usize) + 'a>;

    impl<'a> Script<'a> {
        fn new(
            store: &'a RefCell<FakeStore>,
            step: impl FnMut(&mut FakeStore, usize) + 'a,
        ) -> Self {
            Self {
                store,
                step: Box::new(step),
                calls: 0,
                elapsed: Duration::from_secs(2),
            }
        }
    }

    impl Pacer for Script<'_> {
        fn wait(&mut self, _: Duration) -> Option<Duration> {
            self.calls += 1;
            (self.step)(&mut self.store.borrow_mut(), self.calls);
            Some(self.elapsed)
        }
    }

    #[derive(Parser)]
    struct TestCli {
        #[command(subcommand)]
        cmd: InspectCmd,
    }

    fn parse(args: &[&str]) -> Result<InspectCmd, clap::Error> {
        TestCli::try_parse_from(std::iter::once("inspect").chain(args.iter().copied()))
            .map(|c| c.cmd)
    }

    fn run_script(store: &RefCell<FakeStore>, args: &[&str], pacer: &mut dyn Pacer) -> String {
        let cmd = parse(args).unwrap();
        let mut out = Vec::new();
        run_with(&Shared(store), &cmd, &mut out, pacer).unwrap();
        String::from_utf8(out).unwrap()
    }

    /// Runs a command whose waits change nothing.
    fn run_args(store: &RefCell<FakeStore>, args: &[&str]) -> String {
        run_script(store, args, &mut Script::new(store, |_, _| {}))
    }

    fn json(store: &RefCell<FakeStore>, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.push("--json");
        let text = run_args(store, &args);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
    }

    /// The VIPs of most tests, as the reconciler writes them:
    /// - index 0: `udp/203.0.113.10:*` (all ports, no-backend pass): backends 1, 2;
    /// - index 1: `tcp/203.0.113.10:80` (echo on the address): backends 3..=6;
    /// - index 2: `tcp/203.0.113.20:443` (gue, source affinity): backends 7 (drained),
    ///   8 (down), 9, 10.
    fn world_config() -> Config {
        let mut dns = vip(
            "203.0.113.10",
            0,
            Proto::Udp,
            &[("198.51.100.11", 1), ("198.51.100.12", 1)],
        );
        dns.no_backend = NoBackend::Pass;
        let mut web = vip(
            "203.0.113.10",
            80,
            Proto::Tcp,
            &[
                ("198.51.100.1", 1),
                ("198.51.100.2", 1),
                ("198.51.100.3", 1),
                ("198.51.100.4", 1),
            ],
        );
        web.icmp_echo = true;
        let mut tls = vip(
            "203.0.113.20",
            443,
            Proto::Tcp,
            &[
                ("198.51.100.21", 0),
                ("198.51.100.22", 1),
                ("198.51.100.23", 1),
                ("198.51.100.24", 1),
            ],
        );
        tls.mode = ForwardMode::Gue;
        tls.src_affinity = true;
        config(vec![dns, web, tls])
    }

    fn world_overrides(cfg: &Config) -> Overrides {
        let mut o = Overrides::default();
        o.down
            .insert((cfg.vips[2].id, "198.51.100.22".parse().unwrap()));
        o
    }

    fn world() -> RefCell<FakeStore> {
        let cell = RefCell::new(FakeStore::new(8, 64));
        let cfg = world_config();
        let mut r = Reconciler::adopt(Shared(&cell)).unwrap();
        r.apply(&cfg, &world_overrides(&cfg), &net(&cfg)).unwrap();
        drop(r);
        cell
    }

    fn id_of(store: &RefCell<FakeStore>, addr: &str) -> u32 {
        let (_, w) = to_words(addr.parse().unwrap());
        let s = store.borrow();
        (1..64)
            .find(|id| s.backends[*id as usize].addr == w && s.backends[*id as usize].state != 0)
            .unwrap()
    }

    fn flow_key(src: &str, dst: &str, proto: Proto) -> FlowKey {
        let (src, dst): (SocketAddr, SocketAddr) = (src.parse().unwrap(), dst.parse().unwrap());
        let (family, s) = to_words(src.ip());
        let (_, d) = to_words(dst.ip());
        FlowKey {
            src: s,
            dst: d,
            sport: src.port().to_be(),
            dport: dst.port().to_be(),
            proto: proto.number(),
            family,
            _pad: [0; 2],
        }
    }

    fn pin(store: &RefCell<FakeStore>, src: &str, dst: &str, proto: Proto, backend_id: u32) {
        let generation = store.borrow().backends[backend_id as usize].generation;
        store.borrow_mut().flows.insert(
            flow_key(src, dst, proto),
            FlowEntry {
                backend_id,
                generation,
            },
        );
    }

    #[test]
    fn the_world_is_what_the_tests_assume() {
        let w = world();
        let s = w.borrow();
        let index = |v: &str| {
            let id = parse_vip(v).unwrap();
            s.vips[&id.map_key()].index
        };
        assert_eq!(index("udp/203.0.113.10:*"), 0);
        assert_eq!(index("tcp/203.0.113.10:80"), 1);
        assert_eq!(index("tcp/203.0.113.20:443"), 2);
        drop(s);
        assert_eq!(id_of(&w, "198.51.100.11"), 1);
        assert_eq!(id_of(&w, "198.51.100.1"), 3);
        assert_eq!(id_of(&w, "198.51.100.21"), 7);
        assert_eq!(id_of(&w, "198.51.100.24"), 10);
    }

    #[test]
    fn vips_table_golden() {
        let w = world();
        {
            let mut s = w.borrow_mut();
            s.vip_stats.insert(0, TrafficStats::new(12, 1_200, 3, 0));
            s.vip_stats
                .insert(1, TrafficStats::new(1_234_567, 987_654_321, 4_321, 17));
            s.vip_stats.insert(2, TrafficStats::new(5, 400, 5, 2));
        }
        let text = run_args(&w, &["vips"]);
        assert_eq!(
            text,
            concat!(
                "VIP                   INDEX  MODE  FLAGS                                ACTIVE  DRAINING  DOWN  PACKETS      BYTES  NEWFLOWS  DROPS\n",
                "udp/203.0.113.10:*        0  ipip  no-backend-pass,icmp-echo,fragments       2         0     0       12       1200         3      0\n",
                "tcp/203.0.113.10:80       1  ipip  icmp-echo,fragments                       4         0     0  1234567  987654321      4321     17\n",
                "tcp/203.0.113.20:443      2  gue   src-affinity,fragments                    2         1     1        5        400         5      2\n",
            )
        );
    }

    #[test]
    fn vips_json_has_the_documented_fields() {
        let w = world();
        w.borrow_mut()
            .vip_stats
            .insert(1, TrafficStats::new(10, 1000, 2, 1));
        let v = json(&w, &["vips"]);
        let vips = v["vips"].as_array().unwrap();
        assert_eq!(vips.len(), 3);
        let web = &vips[1];
        assert_eq!(web["vip"], "tcp/203.0.113.10:80");
        assert_eq!(web["proto"], "tcp");
        assert_eq!(web["addr"], "203.0.113.10");
        assert_eq!(web["port"], 80);
        assert_eq!(web["index"], 1);
        assert_eq!(web["mode"], "ipip");
        assert_eq!(web["flags"], serde_json::json!(["icmp-echo", "fragments"]));
        assert_eq!(
            web["backends"],
            serde_json::json!({"active": 4, "draining": 0, "down": 0})
        );
        for (f, want) in [
            ("packets", 10),
            ("bytes", 1000),
            ("new_flows", 2),
            ("drops", 1),
        ] {
            assert_eq!(web[f], want, "{f}");
        }
        assert_eq!(vips[0]["port"], 0);
        assert_eq!(vips[0]["vip"], "udp/203.0.113.10:*");
        assert_eq!(vips[2]["mode"], "gue");
        assert_eq!(
            vips[2]["backends"],
            serde_json::json!({"active": 2, "draining": 1, "down": 1})
        );
    }

    fn lines(text: &str) -> Vec<&str> {
        text.lines().collect()
    }

    /// The data row of a table whose first columns match `prefix` (split on whitespace).
    fn row<'t>(text: &'t str, prefix: &[&str]) -> Vec<&'t str> {
        text.lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|cells| cells.len() >= prefix.len() && cells[..prefix.len()] == *prefix)
            .unwrap_or_else(|| panic!("no row {prefix:?} in\n{text}"))
    }

    #[test]
    fn backends_show_ring_share_and_rates_from_two_samples() {
        let w = world();
        let b1 = id_of(&w, "198.51.100.1");
        w.borrow_mut()
            .backend_stats
            .insert(b1, TrafficStats::new(100, 15_000, 10, 0));
        // Between the two reads (2 s apart): +1000 packets, +150000 bytes.
        let mut pacer = Script::new(&w, |s, call| {
            assert_eq!(call, 1, "backends takes exactly two samples");
            s.backend_stats
                .insert(b1, TrafficStats::new(1_100, 165_000, 30, 0));
        });
        let text = run_script(&w, &["backends", "tcp/203.0.113.10:80"], &mut pacer);
        let ls = lines(&text);
        assert_eq!(
            ls[0].split_whitespace().collect::<Vec<_>>(),
            [
                "VIP", "BACKEND", "ID", "STATE", "WEIGHT", "SLOTS", "SHARE%", "PACKETS", "BYTES",
                "NEWFLOWS", "PKT/S", "BYTES/S"
            ]
        );
        assert_eq!(ls.len(), 1 + 4, "{text}");
        let ring = w.borrow().ring(1).unwrap();
        let counts = slot_counts(&ring);
        let mut total_share = 0.0;
        for (i, addr) in [
            "198.51.100.1",
            "198.51.100.2",
            "198.51.100.3",
            "198.51.100.4",
        ]
        .iter()
        .enumerate()
        {
            let id = id_of(&w, addr);
            let slots = counts[&id];
            let share = format!("{:.2}", f64::from(slots) * 100.0 / f64::from(RING_SIZE));
            let r = row(&text, &["tcp/203.0.113.10:80", addr]);
            assert_eq!(
                r[2..7],
                [&id.to_string(), "active", "1", &slots.to_string(), &share],
                "{i}"
            );
            total_share += share.parse::<f64>().unwrap();
        }
        assert!((total_share - 100.0).abs() < 0.05, "{total_share}");
        let r = row(&text, &["tcp/203.0.113.10:80", "198.51.100.1"]);
        assert_eq!(r[7..], ["1100", "165000", "30", "500.0", "75000.0"]);
        let r = row(&text, &["tcp/203.0.113.10:80", "198.51.100.2"]);
        assert_eq!(r[7..], ["0", "0", "0", "0.0", "0.0"]);

        // All VIPs: drained and down backends hold no slots.
        let text = run_args(&w, &["backends", "--no-rates"]);
        assert_eq!(lines(&text).len(), 1 + 10);
        assert!(!lines(&text)[0].contains("PKT/S"));
        let r = row(&text, &["tcp/203.0.113.20:443", "198.51.100.21"]);
        assert_eq!(r[2..7], ["7", "draining", "0", "0", "0.00"]);
        let r = row(&text, &["tcp/203.0.113.20:443", "198.51.100.22"]);
        assert_eq!(r[2..7], ["8", "down", "1", "0", "0.00"]);

        let v = json(&w, &["backends", "tcp/203.0.113.20:443"]);
        assert_eq!(v["interval_s"], 2.0);
        let bs = v["backends"].as_array().unwrap();
        assert_eq!(bs.len(), 4);
        let b = &bs[2];
        for f in [
            "vip",
            "vip_index",
            "addr",
            "id",
            "state",
            "slots",
            "share_pct",
            "packets",
            "bytes",
            "new_flows",
            "packets_per_s",
            "bytes_per_s",
        ] {
            assert!(b.get(f).is_some(), "{f} missing: {b}");
        }
        assert_eq!(b["vip"], "tcp/203.0.113.20:443");
        assert_eq!(b["addr"], "198.51.100.23");
        assert_eq!(b["state"], "active");
        let share = b["share_pct"].as_f64().unwrap() + bs[3]["share_pct"].as_f64().unwrap();
        assert!((share - 100.0).abs() < 1e-9);
        let v = json(&w, &["backends", "--no-rates"]);
        assert!(v["interval_s"].is_null() && v["backends"][0]["packets_per_s"].is_null());
    }

    #[test]
    fn unknown_vip_is_a_clear_error() {
        let w = world();
        let cmd = parse(&["ring", "tcp/203.0.113.10:81"]).unwrap();
        let err = run(&Shared(&w), &cmd, &mut Vec::new()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "tcp/203.0.113.10:81 is not in the VIP map (`xlb inspect vips` lists the VIPs)"
        );
    }

    /// A VIP at index 3 with a hand-made ring: 30000 / 20000 / 15000 slots, 537 empty, and a
    /// down backend.
    fn lopsided() -> RefCell<FakeStore> {
        let mut s = FakeStore::new(4, 16);
        s.config.flags = CONFIG_F_READY;
        s.config.hash_seed = SEED;
        let id = parse_vip("tcp/192.0.2.10:80").unwrap();
        s.vips.insert(
            id.map_key(),
            VipMeta {
                index: 3,
                flags: 0,
                mode: MODE_IPIP,
                _pad: [0; 3],
            },
        );
        for (i, state) in [BACKEND_ACTIVE, BACKEND_ACTIVE, BACKEND_ACTIVE, BACKEND_DOWN]
            .into_iter()
            .enumerate()
        {
            let (family, addr) = to_words(format!("192.0.2.{}", 101 + i).parse().unwrap());
            s.backends[i + 1] = Backend {
                addr,
                family,
                state,
                vip_index: 3,
                ..Backend::default()
            };
        }
        let mut ring = vec![1u32; 30_000];
        ring.extend(std::iter::repeat_n(2, 20_000));
        ring.extend(std::iter::repeat_n(3, 15_000));
        ring.extend(std::iter::repeat_n(0, 537));
        assert_eq!(ring.len(), RING_SIZE as usize);
        s.rings.insert(3, ring);
        RefCell::new(s)
    }

    #[test]
    fn ring_and_backends_use_the_recorded_weights() {
        let cell = RefCell::new(FakeStore::new(8, 64));
        let cfg = config(vec![vip(
            "192.0.2.10",
            80,
            Proto::Tcp,
            &[("198.51.100.1", 100), ("198.51.100.2", 300)],
        )]);
        let mut r = Reconciler::adopt(Shared(&cell)).unwrap();
        r.apply(&cfg, &Overrides::default(), &net(&cfg)).unwrap();
        drop(r);
        let v = json(&cell, &["ring", "tcp/192.0.2.10:80"]);
        let expected: Vec<f64> = v["backends"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["expected_share_pct"].as_f64().unwrap())
            .collect();
        assert_eq!(expected, vec![25.0, 75.0]);
        // And the ring follows them (Maglev: within 1% of the weight share).
        let share = v["backends"][1]["share_pct"].as_f64().unwrap();
        assert!((share - 75.0).abs() < 0.75, "{share}");
        let b = json(&cell, &["backends", "--no-rates"]);
        let weights: Vec<u64> = b["backends"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["weight"].as_u64().unwrap())
            .collect();
        assert_eq!(weights, vec![100, 300]);
    }

    #[test]
    fn ring_reports_shares_expected_shares_and_imbalance() {
        let s = lopsided();
        let text = run_args(&s, &["ring", "tcp/192.0.2.10:80"]);
        assert_eq!(
            text,
            concat!(
                "tcp/192.0.2.10:80  index 3  ring_size 65537  empty_slots 537 (0.82%)  active_backends 3  imbalance 1.3846\n",
                "BACKEND      ID  STATE   SLOTS  SHARE%  EXPECTED%\n",
                "192.0.2.101   1  active  30000   45.78      33.33\n",
                "192.0.2.102   2  active  20000   30.52      33.33\n",
                "192.0.2.103   3  active  15000   22.89      33.33\n",
                "192.0.2.104   4  down        0    0.00       0.00\n",
            )
        );
        let v = json(&s, &["ring", "tcp/192.0.2.10:80"]);
        assert_eq!(v["vip"], "tcp/192.0.2.10:80");
        assert_eq!(v["vip_index"], 3);
        assert_eq!(v["ring_size"], 65537);
        assert_eq!(v["empty_slots"], 537);
        assert_eq!(v["active_backends"], 3);
        let imbalance = v["imbalance"].as_f64().unwrap();
        assert!((imbalance - 30_000.0 / (65_000.0 / 3.0)).abs() < 1e-12);
        let b = &v["backends"][0];
        assert_eq!(b["addr"], "192.0.2.101");
        assert_eq!(b["id"], 1);
        assert_eq!(b["slots"], 30000);
        assert!((b["share_pct"].as_f64().unwrap() - 3_000_000.0 / 65537.0).abs() < 1e-9);
        assert!((b["expected_share_pct"].as_f64().unwrap() - 100.0 / 3.0).abs() < 1e-9);
        assert_eq!(v["backends"][3]["expected_share_pct"], 0.0);

        // A Maglev ring of equal weights is balanced within a slot or so.
        let w = world();
        let v = json(&w, &["ring", "tcp/203.0.113.10:80"]);
        assert_eq!(v["empty_slots"], 0);
        assert_eq!(v["active_backends"], 4);
        assert!(v["imbalance"].as_f64().unwrap() < 1.001, "{v}");
    }

    fn pinned_world() -> RefCell<FakeStore> {
        let w = world();
        for i in 0..10u32 {
            let src = format!("198.51.100.{}:{}", 100 + i, 40_000 + i);
            pin(&w, &src, "203.0.113.10:80", Proto::Tcp, 3 + i % 4);
        }
        pin(&w, "192.0.2.50:5000", "203.0.113.10:5353", Proto::Udp, 1);
        pin(&w, "192.0.2.51:5000", "203.0.113.10:53", Proto::Udp, 2);
        pin(&w, "192.0.2.60:41000", "203.0.113.20:443", Proto::Tcp, 8);
        w
    }

    #[test]
    fn flows_filter_by_vip_backend_and_limit() {
        let w = pinned_world();
        let text = run_args(&w, &["flows"]);
        assert_eq!(lines(&text).len(), 1 + 13, "{text}");
        assert_eq!(
            lines(&text)[0].split_whitespace().collect::<Vec<_>>(),
            [
                "PROTO",
                "SOURCE",
                "DESTINATION",
                "VIP",
                "BACKEND",
                "ID",
                "STATE",
                "VALID"
            ]
        );

        let text = run_args(&w, &["flows", "--vip", "tcp/203.0.113.10:80"]);
        assert_eq!(lines(&text).len(), 1 + 10);
        assert!(
            lines(&text)[1..]
                .iter()
                .all(|l| l.contains(" tcp/203.0.113.10:80 "))
        );
        assert_eq!(
            row(&text, &["tcp", "198.51.100.105:40005"]),
            [
                "tcp",
                "198.51.100.105:40005",
                "203.0.113.10:80",
                "tcp/203.0.113.10:80",
                "198.51.100.2",
                "4",
                "active",
                "yes"
            ]
        );

        // All-ports VIP: both UDP flows, whatever their port.
        let text = run_args(&w, &["flows", "--vip", "udp/203.0.113.10:*"]);
        assert_eq!(lines(&text).len(), 1 + 2);
        assert_eq!(
            row(&text, &["udp", "192.0.2.50:5000"])[2..5],
            ["203.0.113.10:5353", "udp/203.0.113.10:*", "198.51.100.11"]
        );

        // backend 198.51.100.1 = id 3: flows 0, 4, 8.
        let text = run_args(&w, &["flows", "--backend", "198.51.100.1"]);
        assert_eq!(lines(&text).len(), 1 + 3);
        for src in [
            "198.51.100.100:40000",
            "198.51.100.104:40004",
            "198.51.100.108:40008",
        ] {
            assert_eq!(row(&text, &["tcp", src])[4..6], ["198.51.100.1", "3"]);
        }
        let text = run_args(
            &w,
            &[
                "flows",
                "--vip",
                "tcp/203.0.113.10:80",
                "--backend",
                "198.51.100.1",
                "--limit",
                "2",
            ],
        );
        assert_eq!(lines(&text).len(), 1 + 2);

        // A flow pinned to a down backend will re-hash.
        let text = run_args(&w, &["flows", "--backend", "198.51.100.22"]);
        assert_eq!(
            row(&text, &["tcp", "192.0.2.60:41000"])[5..],
            ["8", "down", "no"]
        );

        let text = run_args(&w, &["flows", "--limit", "5"]);
        assert_eq!(lines(&text).len(), 1 + 5);
        let v = json(&w, &["flows", "--limit", "5"]);
        assert_eq!(v["limit"], 5);
        assert_eq!(v["more"], true);
        assert_eq!(v["flows"].as_array().unwrap().len(), 5);
        let v = json(&w, &["flows", "--vip", "udp/203.0.113.10:*"]);
        assert_eq!(v["more"], false);
        // Sorted by protocol, destination, source: port 53 before 5353.
        assert_eq!(v["flows"][0]["dst"], "203.0.113.10:53");
        let f = &v["flows"][1];
        assert_eq!(
            *f,
            serde_json::json!({
                "proto": "udp", "src": "192.0.2.50:5000", "dst": "203.0.113.10:5353",
                "vip": "udp/203.0.113.10:*", "backend_id": 1, "backend": "198.51.100.11",
                "backend_state": "active", "valid": true
            })
        );
    }

    #[test]
    fn stats_lists_every_counter() {
        let w = world();
        w.borrow_mut().global.counters[Counter::Tx as usize] = 42;
        let text = run_args(&w, &["stats"]);
        assert_eq!(lines(&text).len(), 1 + Counter::ALL.len());
        assert_eq!(row(&text, &["4"]), ["4", "tx", "42"]);
        assert_eq!(
            row(&text, &["21"]),
            ["21", "drop_too_big_rate_limited", "0"]
        );
        let v = json(&w, &["stats"]);
        assert_eq!(
            v["counters"][4],
            serde_json::json!({"index": 4, "name": "tx", "total": 42})
        );
    }

    #[test]
    fn stats_watch_prints_moved_counters_with_rates() {
        let w = world();
        let set = |s: &mut FakeStore, c: Counter, v: u64| s.global.counters[c as usize] = v;
        {
            let mut s = w.borrow_mut();
            set(&mut s, Counter::Pass, 50);
            set(&mut s, Counter::Tx, 1_000);
            set(&mut s, Counter::FlowHit, 900);
        }
        let step = move |s: &mut FakeStore, call: usize| match call {
            1 => {
                set(s, Counter::Tx, 1_200);
                set(s, Counter::FlowHit, 1_050);
                set(s, Counter::FlowMiss, 50);
            }
            2 => set(s, Counter::DropNoBackend, 4),
            _ => panic!("--count 2 takes two samples"),
        };
        let text = run_script(
            &w,
            &["stats", "--watch", "--interval", "2", "--count", "2"],
            &mut Script::new(&w, step),
        );
        assert_eq!(
            text,
            concat!(
                "SAMPLE       TIME  REASON                              TOTAL       DELTA         PER_S\n",
                "     1      2.000  tx                                   1200         200         100.0\n",
                "     1      2.000  flow_hit                             1050         150          75.0\n",
                "     1      2.000  flow_miss                              50          50          25.0\n",
                "     2      4.000  drop_no_backend                         4           4           2.0\n",
            )
        );
        let out = run_script(
            &w,
            &["stats", "--watch", "--count", "1", "--json"],
            &mut Script::new(&w, move |s, _| set(s, Counter::Tx, 1_210)),
        );
        let samples: Vec<Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(samples.len(), 1);
        assert_eq!(
            samples[0],
            serde_json::json!({
                "sample": 1, "time_s": 2.0, "elapsed_s": 2.0,
                "counters": [{"index": 4, "name": "tx", "total": 1210, "delta": 10, "per_s": 5.0}]
            })
        );
    }

    fn v4(s: &str) -> u32 {
        let (_, w) = to_words(s.parse().unwrap());
        w[0]
    }

    fn web_hash(src: &str, sport: u16) -> u32 {
        flow_hash_v4(
            SEED,
            v4(src),
            v4("203.0.113.10"),
            ports_word(sport.to_be(), 80u16.to_be()),
            Proto::Tcp.number(),
        )
    }

    #[test]
    fn explain_ring_choice_for_a_new_flow() {
        let w = world();
        let slot = ring_slot(web_hash("198.51.100.7", 40_000));
        let id = w.borrow().ring(1).unwrap()[slot as usize];
        let addr = backend_addr(&w.borrow().backends[id as usize]).unwrap();
        let args = ["explain", "198.51.100.7:40000", "203.0.113.10:80", "tcp"];
        let text = run_args(&w, &args);
        assert_eq!(
            text,
            concat!(
                "flow        tcp 198.51.100.7:40000 -> 203.0.113.10:80\n",
                "vip         tcp/203.0.113.10:80 index 1 mode ipip flags icmp-echo,fragments (exact port match)\n",
                "hash        0xc252daf9 (5-tuple, seed 0x00000007)\n",
                "ring        slot 6311 -> backend 6 198.51.100.4 (active)\n",
                "flow-table  miss\n",
                "rule        flow_miss: no flow-table entry: new flow, ring choice (then remembered)\n",
                "verdict     XDP_TX to backend 6 198.51.100.4 (active); counter flow_miss\n",
                "note        a TCP SYN (SYN set, ACK clear) skips the flow table and takes the ring choice: backend 6 198.51.100.4 (active) (the same)\n",
            )
        );
        let v = json(&w, &args);
        assert_eq!(v["rule"], "flow_miss");
        assert_eq!(v["slot"], slot);
        assert_eq!(v["hash"], web_hash("198.51.100.7", 40_000));
        assert_eq!(v["hash_input"], "5-tuple");
        assert_eq!(v["backend"]["id"], id);
        assert_eq!(v["backend"]["addr"], addr.to_string());
        assert_eq!(v["ring_backend"], v["backend"]);
        assert_eq!(v["verdict"], "XDP_TX");
        assert_eq!(v["counter"], "flow_miss");
        assert!(v["flow_entry"].is_null());
        for f in [
            "flow",
            "config_ready",
            "vip",
            "vip_lookup",
            "vip_index",
            "mode",
            "flags",
            "seed",
            "reason",
            "syn_note",
        ] {
            assert!(v.get(f).is_some(), "{f}");
        }
    }

    #[test]
    fn explain_flow_table_hit_and_syn() {
        let w = world();
        let slot = ring_slot(web_hash("198.51.100.7", 40_000));
        let ring_id = w.borrow().ring(1).unwrap()[slot as usize];
        // Pin the flow to another active backend of the VIP.
        let pinned = if ring_id == 3 { 4 } else { 3 };
        pin(
            &w,
            "198.51.100.7:40000",
            "203.0.113.10:80",
            Proto::Tcp,
            pinned,
        );
        let args = ["explain", "198.51.100.7:40000", "203.0.113.10:80", "tcp"];
        let text = run_args(&w, &args);
        assert_eq!(
            text,
            concat!(
                "flow        tcp 198.51.100.7:40000 -> 203.0.113.10:80\n",
                "vip         tcp/203.0.113.10:80 index 1 mode ipip flags icmp-echo,fragments (exact port match)\n",
                "hash        0xc252daf9 (5-tuple, seed 0x00000007)\n",
                "ring        slot 6311 -> backend 6 198.51.100.4 (active)\n",
                "flow-table  hit: backend 3 198.51.100.1 (active), valid\n",
                "rule        flow_hit: flow-table entry honoured (backend active, still this VIP's): the flow stays on its backend\n",
                "verdict     XDP_TX to backend 3 198.51.100.1 (active); counter flow_hit\n",
                "note        a TCP SYN (SYN set, ACK clear) skips the flow table and takes the ring choice: backend 6 198.51.100.4 (active)\n",
            )
        );
        let v = json(&w, &args);
        assert_eq!(v["rule"], "flow_hit");
        assert_eq!(v["counter"], "flow_hit");
        assert_eq!(v["backend"]["id"], pinned);
        assert_eq!(v["ring_backend"]["id"], ring_id);
        assert_eq!(v["flow_entry"]["valid"], true);
        // Draining keeps the flow.
        w.borrow_mut().backends[pinned as usize].state = BACKEND_DRAINING;
        let v = json(&w, &args);
        assert_eq!(
            (v["rule"].as_str(), v["backend"]["id"].as_u64()),
            (Some("flow_hit"), Some(u64::from(pinned)))
        );
        // A SYN ignores the entry.
        let mut syn = args.to_vec();
        syn.push("--syn");
        let v = json(&w, &syn);
        assert_eq!(v["rule"], "flow_syn");
        assert_eq!(v["counter"], "flow_syn");
        assert_eq!(v["backend"]["id"], ring_id);
        assert!(v["flow_entry"].is_null() && v["syn_note"].is_null());
    }

    #[test]
    fn explain_rehashes_a_flow_pinned_to_a_removed_backend() {
        let w = world();
        let slot = ring_slot(web_hash("198.51.100.7", 40_000));
        let gone = w.borrow().ring(1).unwrap()[slot as usize];
        let gone_addr = backend_addr(&w.borrow().backends[gone as usize]).unwrap();
        pin(
            &w,
            "198.51.100.7:40000",
            "203.0.113.10:80",
            Proto::Tcp,
            gone,
        );
        // The backend leaves the config: its entry is emptied, its slots move.
        let mut cfg = world_config();
        cfg.vips[1].backends.retain(|b| b.addr != gone_addr);
        let mut r = Reconciler::adopt(Shared(&w)).unwrap();
        r.apply(&cfg, &world_overrides(&cfg), &net(&cfg)).unwrap();
        drop(r);
        assert_eq!(w.borrow().backends[gone as usize].state, BACKEND_EMPTY);
        let now = w.borrow().ring(1).unwrap()[slot as usize];
        assert_ne!(now, gone);
        let args = ["explain", "198.51.100.7:40000", "203.0.113.10:80", "tcp"];
        let text = run_args(&w, &args);
        assert_eq!(
            text,
            concat!(
                "flow        tcp 198.51.100.7:40000 -> 203.0.113.10:80\n",
                "vip         tcp/203.0.113.10:80 index 1 mode ipip flags icmp-echo,fragments (exact port match)\n",
                "hash        0xc252daf9 (5-tuple, seed 0x00000007)\n",
                "ring        slot 6311 -> backend 4 198.51.100.2 (active)\n",
                "flow-table  hit: backend 6 (empty), not valid: backend entry empty, backend removed\n",
                "rule        flow_rehash: flow-table entry not honoured (backend entry empty, backend removed): re-hashed to the ring choice, entry overwritten\n",
                "verdict     XDP_TX to backend 4 198.51.100.2 (active); counter flow_rehash\n",
                "note        a TCP SYN (SYN set, ACK clear) skips the flow table and takes the ring choice: backend 4 198.51.100.2 (active) (the same)\n",
            )
        );
        let v = json(&w, &args);
        assert_eq!(v["rule"], "flow_rehash");
        assert_eq!(v["counter"], "flow_rehash");
        assert_eq!(v["flow_entry"]["backend_id"], gone);
        assert_eq!(v["flow_entry"]["valid"], false);
        assert_eq!(v["backend"]["id"], now);
        assert_eq!(v["verdict"], "XDP_TX");
    }

    #[test]
    fn explain_source_affinity_hashes_the_client_address() {
        let w = world();
        let slot = ring_slot(src_hash_v4(SEED, v4("198.51.100.7")));
        let id = w.borrow().ring(2).unwrap()[slot as usize];
        assert!(id == 9 || id == 10, "only 9 and 10 are in the ring: {id}");
        for sport in ["40000", "50123"] {
            let src = format!("198.51.100.7:{sport}");
            let args = ["explain", src.as_str(), "203.0.113.20:443", "tcp"];
            let v = json(&w, &args);
            assert_eq!(v["hash_input"], "source address");
            assert_eq!(v["slot"], slot);
            assert_eq!(v["backend"]["id"], id);
            assert_eq!(v["flags"], serde_json::json!(["src-affinity", "fragments"]));
            let text = run_args(&w, &args);
            assert!(
                text.contains(&format!("ring        slot {slot} -> backend {id} ")),
                "{text}"
            );
            assert!(text.contains("(source address, seed 0x00000007)"), "{text}");
        }
    }

    #[test]
    fn explain_all_ports_vip() {
        let w = world();
        let args = ["explain", "192.0.2.50:5000", "203.0.113.10:5353", "udp"];
        let text = run_args(&w, &args);
        assert_eq!(
            text,
            concat!(
                "flow        udp 192.0.2.50:5000 -> 203.0.113.10:5353\n",
                "vip         udp/203.0.113.10:* index 0 mode ipip flags no-backend-pass,icmp-echo,fragments (all ports match)\n",
                "hash        0x80da8115 (5-tuple, seed 0x00000007)\n",
                "ring        slot 59 -> backend 1 198.51.100.11 (active)\n",
                "flow-table  miss\n",
                "rule        flow_miss: no flow-table entry: new flow, ring choice (then remembered)\n",
                "verdict     XDP_TX to backend 1 198.51.100.11 (active); counter flow_miss\n",
            )
        );
        let v = json(&w, &args);
        assert_eq!(v["vip"], "udp/203.0.113.10:*");
        assert_eq!(v["vip_lookup"], "all_ports");
        let h = flow_hash_v4(
            SEED,
            v4("192.0.2.50"),
            v4("203.0.113.10"),
            ports_word(5000u16.to_be(), 5353u16.to_be()),
            Proto::Udp.number(),
        );
        assert_eq!(v["slot"], ring_slot(h));
        assert!(v["syn_note"].is_null());
    }

    #[test]
    fn explain_non_vip_destinations_pass() {
        let w = world();
        for dst in ["203.0.113.99:80", "203.0.113.10:81"] {
            let args = ["explain", "198.51.100.7:40000", dst, "tcp"];
            let text = run_args(&w, &args);
            assert!(
                text.contains("not a VIP: XDP_PASS; counter pass\n"),
                "{text}"
            );
            let v = json(&w, &args);
            assert_eq!(v["rule"], "not_a_vip");
            assert_eq!(v["verdict"], "XDP_PASS");
            assert!(v["vip"].is_null() && v["backend"].is_null());
        }
        let text = run_args(
            &w,
            &["explain", "198.51.100.7:40000", "203.0.113.99:80", "tcp"],
        );
        assert_eq!(
            text,
            concat!(
                "flow     tcp 198.51.100.7:40000 -> 203.0.113.99:80\n",
                "rule     not_a_vip: no VIP tcp/203.0.113.99:80 and no all-ports VIP on that address\n",
                "verdict  not a VIP: XDP_PASS; counter pass\n",
            )
        );
        // Before the agent's first complete write, everything passes.
        let empty = RefCell::new(FakeStore::new(8, 64));
        let v = json(
            &empty,
            &["explain", "198.51.100.7:40000", "203.0.113.10:80", "tcp"],
        );
        assert_eq!(
            (v["rule"].as_str(), v["counter"].as_str()),
            (Some("not_ready"), Some("pass_not_ready"))
        );
    }

    #[test]
    fn arguments_and_help() {
        use clap::CommandFactory;
        TestCli::command().debug_assert();
        let e = parse(&["ring", "203.0.113.10:80/tcp"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("write the protocol first: `tcp/203.0.113.10:80`"),
            "{e}"
        );
        let e = parse(&["explain", "198.51.100.7:1", "203.0.113.10:80", "icmp"]).unwrap_err();
        assert!(
            e.to_string()
                .contains("unknown protocol `icmp` (tcp or udp)"),
            "{e}"
        );
        assert!(
            parse(&["stats", "--count", "3"]).is_err(),
            "--count needs --watch"
        );
        let InspectCmd::Flows(f) = parse(&["flows"]).unwrap() else {
            panic!()
        };
        assert_eq!(f.limit, 100);
        let InspectCmd::Backends(b) = parse(&["backends"]).unwrap() else {
            panic!()
        };
        assert_eq!(b.interval, Duration::from_secs(1));
        let mut cmd = TestCli::command();
        let help = cmd
            .find_subcommand_mut("backends")
            .unwrap()
            .render_long_help()
            .to_string();
        assert!(
            help.contains("health results are not in the maps"),
            "{help}"
        );
    }

    #[test]
    fn ipv6_vips_and_flows() {
        let cell = RefCell::new(FakeStore::new(8, 64));
        let cfg = config(vec![vip(
            "2001:db8::10",
            443,
            Proto::Tcp,
            &[("2001:db8:1::1", 1), ("2001:db8:1::2", 1)],
        )]);
        let mut r = Reconciler::adopt(Shared(&cell)).unwrap();
        r.apply(&cfg, &Overrides::default(), &net(&cfg)).unwrap();
        drop(r);
        let text = run_args(&cell, &["vips"]);
        assert_eq!(row(&text, &["tcp/[2001:db8::10]:443"])[1..3], ["0", "ipip"]);
        let (_, src) = to_words("2001:db8:2::7".parse().unwrap());
        let (_, dst) = to_words("2001:db8::10".parse().unwrap());
        let h = flow_hash_v6(
            SEED,
            &src,
            &dst,
            ports_word(40000u16.to_be(), 443u16.to_be()),
            6,
        );
        let id = cell.borrow().ring(0).unwrap()[ring_slot(h) as usize];
        let args = [
            "explain",
            "[2001:db8:2::7]:40000",
            "[2001:db8::10]:443",
            "tcp",
        ];
        let v = json(&cell, &args);
        assert_eq!(v["vip"], "tcp/[2001:db8::10]:443");
        assert_eq!(v["slot"], ring_slot(h));
        assert_eq!(v["backend"]["id"], id);
        pin(
            &cell,
            "[2001:db8:2::7]:40000",
            "[2001:db8::10]:443",
            Proto::Tcp,
            id,
        );
        let text = run_args(&cell, &["flows", "--vip", "tcp/[2001:db8::10]:443"]);
        assert_eq!(
            row(&text, &["tcp"])[1..4],
            [
                "[2001:db8:2::7]:40000",
                "[2001:db8::10]:443",
                "tcp/[2001:db8::10]:443"
            ]
        );
        let cmd = parse(&["explain", "198.51.100.7:1", "[2001:db8::10]:443", "tcp"]).unwrap();
        let err = run(&Shared(&cell), &cmd, &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("same address family"), "{err}");
    }
}
