//! Load with faults (issue 13), shared by `integration-tests/tests/load_faults.rs` (which asserts
//! on it) and the reliability bench (which reports it): on the single-LB testbed, with a small
//! flow table, long-lived connections keep asking while a SYN flood from spoofed sources fills
//! the table, and one backend's server stops and comes back. [`run`] measures; it judges
//! nothing.
//!
//! - Two VIPs on the same three backends: the connections go to [`session_vip`] (ipip, with a
//!   health check), the flood to [`flood_vip`] (gue, no check). The flow table is one for
//!   every VIP, so the flood evicts the connections' entries as it would on one VIP; the VIP of
//!   its own makes its packets countable apart: every flood frame that reaches the program
//!   moves that VIP's `packets` counter and nothing else does, so the frames sent can be
//!   compared with the frames counted.
//! - The sources: 192.0.2.0/24 and 203.0.113.128/25 (documentation ranges; no VIP, no testbed
//!   host). Not the segment's 198.51.100.0/24: the backends would resolve every spoofed source
//!   with ARP and the broadcasts would swamp the segment; and some of its addresses are the
//!   testbed's hosts. The backends have no route to these sources, so their stacks drop their
//!   answers to the SYNs at once (an attacker's answers go nowhere either).
//! - The flood comes in two phases: a fast one that fills the table several times over, then a
//!   slower one that keeps it full, each SYN evicting an entry, while the backend fails and
//!   returns. What decides whether an established flow keeps its entry is how often the flood
//!   passes its set between two of its packets (docs/datapath.md §4: the CLOCK hand spares a
//!   used entry once); the second phase's rate (table turnover, SYNs per second per entry) is
//!   printed with the figures.
//! - A flow the flood evicted takes the ring's choice again at its next packet: the same
//!   backend while the ring is unchanged. During the failure the ring changes, and Maglev moves
//!   a few slots between the surviving backends too; a connection whose slot moved
//!   ([`LoadFaultsOutcome::at_risk`]) stays on its backend only through its flow entry.
//! - Counting: the program's verdict counters (every packet bumps exactly one,
//!   `Counter::is_verdict`) and the LB interface's received packets are read in a quiet moment
//!   before and after the run ([`quiet_snapshot`]); both must grow by the same number. Besides
//!   the flood and the connections' packets, the interface receives the backends' answers to
//!   the agent's health checks, ARP and IPv6 neighbour discovery and MLD, and frames the bridge
//!   floods to every port: the program sees and counts each (most as `pass`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use lb_common::stats::{Counter, GlobalStats};
use lb_common::values::TrafficStats;
use lb_userspace::api::{BackendStatus, MapState, Request, Response, StatusReport};
use lb_userspace::maps::{AyaStore, MapStore};

use super::flood::{Flood, FloodOptions, FloodPhase, FloodReport, SourceRange};
use super::plan::*;
use super::probe::{ApiProbe, CpuTimes, Latency, loadavg, rss_kib};
use super::resources::Options;
use super::sessions::{SessionOptions, SessionReport, Sessions};
use super::{Testbed, tail};
use crate::packet::flow_hash;

/// The bound of the API's answer time (issue 13: the API answers within 100 ms throughout).
pub const API_BOUND: Duration = Duration::from_millis(100);

/// The agent's resident set may grow by 20% of what it was before the run, at least 16 MiB:
/// memory stays flat, with room for the allocator's own rounding.
pub fn rss_bound_kib(before_kib: u64) -> u64 {
    before_kib + (before_kib / 5).max(16 * 1024)
}

/// The backend whose server stops and comes back (`backend-2`).
pub const FAILED_BACKEND: usize = 1;

/// The connections' VIP: ipip, TCP port 80, every backend, a health check that tolerates a
/// stall of a second or two (a flood on a loaded 2-core machine must not take a healthy
/// backend out by mistake; the failed one is out within about 3 s).
pub fn session_vip() -> VipSpec {
    VipSpec::tcp(Mode::Ipip, false).health(
        "  kind = \"http\"\n  path = \"/healthz\"\n  interval = \"1s\"\n  timeout = \"800ms\"\n  \
         rise = 1\n  fall = 3\n",
    )
}

/// The flood's VIP: gue, TCP port 80, every backend, no health check.
pub fn flood_vip() -> VipSpec {
    VipSpec::tcp(Mode::Gue, false).health("")
}

/// The flood's spoofed sources (module docs).
pub fn flood_sources() -> Vec<SourceRange> {
    vec![
        SourceRange {
            first: Ipv4Addr::new(192, 0, 2, 1),
            count: 254,
        },
        SourceRange {
            first: Ipv4Addr::new(203, 0, 113, 128),
            count: 127,
        },
    ]
}

#[derive(Clone, Debug)]
pub struct LoadFaultsOptions {
    /// The agent's `flow-table-size` (small, so that the flood fills it).
    pub flow_table_size: u32,
    pub connections: usize,
    /// Of those, connections (at most; as many as there are such ports below 32768) whose
    /// local port is chosen so that the failure moves their ring slot from one healthy backend
    /// to another: they stay on their backend only through their flow entry, which the flood
    /// is evicting.
    pub at_risk_connections: usize,
    pub request_interval: Duration,
    /// The flood's first phase (fills the table) and second (keeps it full through the
    /// failure; it stops once the backend is back, or after its count).
    pub fill: FloodPhase,
    pub sustain: FloodPhase,
    /// How long the backend's server stays stopped.
    pub backend_down_for: Duration,
    /// The API probe's pace.
    pub api_pace: Duration,
    pub seed: u64,
}

impl Default for LoadFaultsOptions {
    /// A run of about 20 s: a 4096-entry table, 45 connections asking every 100 ms (8 of
    /// them at risk), a flood of 12,288 SYNs at 10,000/s (three times the table) and then
    /// 400/s (a tenth of the table per second) for at most 20 s, the backend stopped for 4 s.
    fn default() -> Self {
        LoadFaultsOptions {
            flow_table_size: 4096,
            connections: 45,
            at_risk_connections: 8,
            request_interval: Duration::from_millis(100),
            fill: FloodPhase {
                packets: 12_288,
                rate_pps: 10_000,
            },
            sustain: FloodPhase {
                packets: 8_000,
                rate_pps: 400,
            },
            backend_down_for: Duration::from_secs(4),
            api_pace: Duration::from_millis(75),
            seed: seed_from_env_or_clock(),
        }
    }
}

/// `XLB_FLOOD_SEED` if set (to replay a run), else the clock.
pub fn seed_from_env_or_clock() -> u64 {
    std::env::var("XLB_FLOOD_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
}

/// Requests and connections of one group of connections.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionCounts {
    pub connections: usize,
    /// Connections that failed (each stops at its first failure).
    pub failed: usize,
    /// Requests tried (answered, plus the failed one of each failed connection) and failed.
    pub requests_tried: u64,
    pub requests_failed: u64,
}

impl SessionCounts {
    fn add(&mut self, r: &SessionReport) {
        self.connections += 1;
        self.requests_tried += r.requests_ok;
        if r.failed() {
            self.failed += 1;
            self.requests_tried += 1;
            self.requests_failed += 1;
        }
    }
}

/// The LB's counters at one quiet moment.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Packets received by the LB's `eth0`.
    pub rx_packets: u64,
    pub stats: GlobalStats,
    pub flood_vip: TrafficStats,
    /// Drops the interfaces between the flood's sender and the LB reported.
    pub path_drops: u64,
}

/// Everything a run measured.
#[derive(Clone, Debug)]
pub struct LoadFaultsOutcome {
    pub opts: LoadFaultsOptions,
    /// Entries the table holds (`flow-table-size` rounded up to whole sets).
    pub flow_capacity: u32,
    pub flood: FloodReport,
    /// Flood frames the program forwarded: the flood VIP's `packets` counter's growth.
    pub flood_counted: u64,
    /// Drops the interfaces on the flood's way reported during the run.
    pub path_drops: u64,
    /// Distinct flows the flood wrote beyond the table's capacity: evictions at least.
    pub evictions_at_least: u64,
    /// Packets of established flows whose entry was gone (`flow_miss`): active flows evicted.
    pub flow_misses: u64,
    pub table_entries_after_fill: usize,
    pub table_entries_at_end: usize,
    /// Over the whole run: packets the LB's interface received, and the growth of the sum of
    /// the verdict counters.
    pub rx_packets: u64,
    pub verdict_packets: u64,
    /// Every counter that moved, by name.
    pub counters: Vec<(&'static str, u64)>,
    pub sessions: Vec<SessionReport>,
    pub failed_backend: String,
    /// Connections on the backends that stayed healthy (and those that never got an answer),
    /// and on the failed one.
    pub healthy: SessionCounts,
    pub on_failed_backend: SessionCounts,
    /// Healthy connections whose ring slot the failure gave another backend, and of those,
    /// failed.
    pub at_risk: usize,
    pub failed_at_risk: usize,
    /// Ring slots the failure moved from one healthy backend to another, of all.
    pub survivor_slots_moved: usize,
    pub ring_slots: usize,
    /// The ring with the backend drained (read before the run, to choose the at-risk ports)
    /// was the ring with it down.
    pub ring_predicted: bool,
    /// From the server's stop to the backend's being down in the maps; from its restart to
    /// its being active again.
    pub down_after: Duration,
    pub up_after: Duration,
    pub rss_before_kib: u64,
    pub rss_max_kib: u64,
    pub rss_after_kib: u64,
    /// API status answer times before the connections started, and from then to the end.
    pub api_quiet: Latency,
    pub api_under_load: Latency,
    pub api_failures: Vec<String>,
    /// The slowest calls under load (when, since the load started; how long), slowest first,
    /// and when the run's events happened, to tell what a slow call waited for.
    pub api_slowest: Vec<(Duration, Duration)>,
    pub events: Vec<(&'static str, Duration)>,
    /// How busy the machine was during the run (all CPUs, whoever ran), and its load
    /// averages at the end.
    pub machine_busy: f64,
    pub loadavg: [f64; 3],
    pub elapsed: Duration,
}

impl LoadFaultsOutcome {
    /// The SYNs per second of the sustained phase, per table entry.
    pub fn turnover_per_s(&self) -> f64 {
        self.opts.sustain.rate_pps as f64 / f64::from(self.flow_capacity)
    }

    /// Healthy connections that failed, one line each.
    pub fn healthy_failures(&self) -> Vec<String> {
        self.sessions
            .iter()
            .filter(|r| r.failed() && r.backend.as_deref() != Some(&self.failed_backend))
            .map(|r| format!("{r:?}"))
            .collect()
    }

    /// The figures, for a test's or a bench's log.
    pub fn render(&self) -> String {
        let c = |name: &str| {
            self.counters
                .iter()
                .find(|(n, _)| *n == name)
                .map_or(0, |(_, v)| *v)
        };
        format!(
            "seed {} (XLB_FLOOD_SEED replays it); machine {:.0}% busy over the run, load {:.2} \
             {:.2} {:.2}\n\
             flood: {} SYNs sent in {:.1} s ({:?} per phase, {} refused by the socket{}), {} \
             counted by the program (flood VIP packets), {} drops reported on the way\n\
             flow table: {} entries; {} after the fill, {} at the end; evictions at least {}; \
             sustained turnover {:.2}/s per entry; established packets that found no entry \
             (flow_miss) {}\n\
             connections: {} on healthy backends ({} failed; requests {} tried, {} failed), \
             {} on {} ({} failed, reported apart); {} healthy ones at risk (slot moved by the \
             failure: {} of {} slots moved between healthy backends, as predicted: {}), {} of \
             them failed\n\
             {} down in the maps {:.1} s after its server stopped, active {:.1} s after its \
             restart\n\
             counting: LB eth0 received {} packets, verdict counters grew by {} (tx {}, pass {}, \
             flow_syn {}, flow_hit {}, flow_rehash {})\n\
             agent RSS {} KiB before, {} KiB at most, {} KiB after\n\
             API quiet: {}\nAPI under load: {}; slowest {}; events {}{}",
            self.opts.seed,
            self.machine_busy * 100.0,
            self.loadavg[0],
            self.loadavg[1],
            self.loadavg[2],
            self.flood.sent,
            self.flood.elapsed.as_secs_f64(),
            self.flood.sent_per_phase,
            self.flood.send_errors,
            self.flood
                .first_error
                .as_ref()
                .map_or(String::new(), |e| format!(": {e}")),
            self.flood_counted,
            self.path_drops,
            self.flow_capacity,
            self.table_entries_after_fill,
            self.table_entries_at_end,
            self.evictions_at_least,
            self.turnover_per_s(),
            self.flow_misses,
            self.healthy.connections,
            self.healthy.failed,
            self.healthy.requests_tried,
            self.healthy.requests_failed,
            self.on_failed_backend.connections,
            self.failed_backend,
            self.on_failed_backend.failed,
            self.at_risk,
            self.survivor_slots_moved,
            self.ring_slots,
            self.ring_predicted,
            self.failed_at_risk,
            self.failed_backend,
            self.down_after.as_secs_f64(),
            self.up_after.as_secs_f64(),
            self.rx_packets,
            self.verdict_packets,
            c("tx"),
            c("pass"),
            c("flow_syn"),
            c("flow_hit"),
            c("flow_rehash"),
            self.rss_before_kib,
            self.rss_max_kib,
            self.rss_after_kib,
            self.api_quiet,
            self.api_under_load,
            self.api_slowest
                .iter()
                .map(|(at, d)| format!(
                    "{:.1} ms at +{:.1} s",
                    d.as_secs_f64() * 1e3,
                    at.as_secs_f64()
                ))
                .collect::<Vec<_>>()
                .join(", "),
            self.events
                .iter()
                .map(|(what, at)| format!("{what} +{:.1} s", at.as_secs_f64()))
                .collect::<Vec<_>>()
                .join(", "),
            if self.api_failures.is_empty() {
                String::new()
            } else {
                format!(
                    "\nAPI calls failed: {} (first: {})",
                    self.api_failures.len(),
                    self.api_failures[0]
                )
            },
        )
    }
}

/// The sum of the verdict counters: packets the program has seen.
pub fn verdict_sum(s: &GlobalStats) -> u64 {
    Counter::ALL
        .iter()
        .filter(|c| c.is_verdict())
        .map(|c| s.counters[*c as usize])
        .sum()
}

/// A [`Snapshot`] taken when nothing reached the LB for a while: the interface's count and the
/// counters, read twice 30 ms apart, agree with themselves (a packet in flight would move one
/// of them). Panics after 200 tries.
pub fn quiet_snapshot(tb: &Testbed, store: &AyaStore, flood_vip_index: u32) -> Snapshot {
    let read = || {
        let rx = tb.lb.link_stats("eth0").rx_packets;
        let stats = store.global_stats().expect("read the stats map");
        (rx, stats)
    };
    for _ in 0..200 {
        let (rx1, s1) = read();
        std::thread::sleep(Duration::from_millis(30));
        let (rx2, s2) = read();
        if rx1 == rx2 && s1 == s2 {
            return Snapshot {
                rx_packets: rx1,
                stats: s1,
                flood_vip: store
                    .vip_stats(flood_vip_index)
                    .expect("read the VIP stats"),
                path_drops: path_drops(tb),
            };
        }
    }
    panic!(
        "the LB's eth0 never went 30 ms without a packet in 200 tries: something keeps \
         sending to it (see `ip -s link` in {})",
        tb.lb.name
    )
}

/// Drops reported by the interfaces between the client's `eth0` and the LB's.
fn path_drops(tb: &Testbed) -> u64 {
    let client = tb.client.link_stats("eth0");
    let to_switch = tb.switch.link_stats("client");
    let to_lb = tb.switch.link_stats("lb");
    let lb = tb.lb.link_stats("eth0");
    client.tx_dropped + to_switch.rx_dropped + to_lb.tx_dropped + lb.rx_dropped
}

fn vip_index(r: &StatusReport, vip: &VipSpec) -> u32 {
    let id = vip.id();
    r.vips
        .iter()
        .find(|v| v.id == id)
        .and_then(|v| v.index)
        .unwrap_or_else(|| panic!("{id} has no index in the status"))
}

/// Backend `addr` of `vip`.
fn backend<'a>(r: &'a StatusReport, vip: &VipSpec, addr: IpAddr) -> &'a BackendStatus {
    let id = vip.id();
    r.vips
        .iter()
        .find(|v| v.id == id)
        .and_then(|v| v.backends.iter().find(|b| b.addr == addr))
        .unwrap_or_else(|| panic!("{addr} is not a backend of {id}"))
}

/// The state and ring slots of backend `addr` of `vip`.
fn backend_state(r: &StatusReport, vip: &VipSpec, addr: IpAddr) -> (MapState, u32) {
    let b = backend(r, vip, addr);
    (b.state, b.ring_slots)
}

/// The ring of `vip` with backend `addr` out of it: drains it through the API, reads the ring,
/// and gives it its weight back (the ring must then be `ring` again).
fn ring_without(tb: &Testbed, store: &AyaStore, vip: &VipSpec, addr: IpAddr) -> Vec<u32> {
    let index = vip_index(&tb.status(), vip);
    let ring = store.ring(index).expect("read the ring");
    let ok = |req: Request| match tb.api(&req) {
        Response::Ok { .. } => {}
        other => panic!("{req:?}: {other:?}"),
    };
    ok(Request::Drain {
        vip: vip.id(),
        addr,
    });
    tb.wait_status("the drain", Duration::from_secs(10), |r| {
        backend_state(r, vip, addr) == (MapState::Draining, 0)
    });
    let without = store.ring(index).expect("read the ring");
    ok(Request::SetWeight {
        vip: vip.id(),
        addr,
        weight: 100,
    });
    tb.wait_status("the undrain", Duration::from_secs(10), |r| {
        backend_state(r, vip, addr).0 == MapState::Active
    });
    assert_eq!(
        store.ring(index).expect("read the ring"),
        ring,
        "the ring did not come back after the drain"
    );
    without
}

fn table_entries(store: &AyaStore) -> usize {
    store.flows(usize::MAX).expect("read the flow table").len()
}

/// Builds the testbed (prefix `xlbt-<tag>-…`), runs the scenario with the `xlb` binary `xlb`,
/// removes everything, and returns what it measured. Panics when a step cannot be done (the
/// testbed is removed all the same).
pub fn run(xlb: &Path, tag: &str, opts: &LoadFaultsOptions) -> LoadFaultsOutcome {
    let started = Instant::now();
    let cpu0 = CpuTimes::now();
    let mut tb = Testbed::up(&Options::for_test(tag, 3));
    let (svip, fvip) = (session_vip(), flood_vip());
    let generated = tb.config("", &[svip.clone(), fvip.clone()]);
    let config = generated.replacen(
        "flow-table-size = 65536\n",
        &format!("flow-table-size = {}\n", opts.flow_table_size),
        1,
    );
    assert_ne!(
        config, generated,
        "no flow-table-size line to replace:\n{generated}"
    );
    let path = tb.write_file("xlb.toml", &config);
    tb.start_agent(xlb, &path);
    tb.wait_all_active(Duration::from_secs(30));
    let pid = tb.agent_pid().expect("the agent runs");
    let store = AyaStore::from_pin_dir(&tb.maps_dir()).expect("open the pinned maps");
    let status = tb.status();
    let (sidx, fidx) = (vip_index(&status, &svip), vip_index(&status, &fvip));
    let flow_capacity =
        lb_common::flows::flow_capacity(lb_common::flows::flow_sets(opts.flow_table_size));
    let failed = tb.backends[FAILED_BACKEND].name.clone();
    let failed_addr = IpAddr::V4(tb.backends[FAILED_BACKEND].v4);
    let seed = store.config().expect("read the config map").hash_seed;
    let target = svip.socket_addr();
    let slot_of = |port: u16| {
        let hash = flow_hash(
            seed,
            IpAddr::V4(CLIENT_V4),
            target.ip(),
            port,
            target.port(),
            6,
            false,
        );
        lb_common::hash::ring_slot(hash) as usize
    };
    let failed_id = backend(&status, &svip, failed_addr)
        .id
        .expect("the failed backend's id");
    let ring_before = store.ring(sidx).expect("read the ring");
    let predicted = ring_without(&tb, &store, &svip, failed_addr);
    // Ports below the kernel's ephemeral range (32768 up), so no other socket holds them.
    // Maglev moves few slots between the survivors (a few in ten thousand), so the search
    // runs over all of them.
    let at_risk_ports: Vec<u16> = (1024..32_768)
        .filter(|p| {
            let slot = slot_of(*p);
            ring_before[slot] != failed_id && predicted[slot] != ring_before[slot]
        })
        .take(opts.at_risk_connections)
        .collect();

    // Two quiet seconds: the API's answer time without load, to compare with.
    let probe = ApiProbe::every(tb.api_socket(), opts.api_pace, Some(pid));
    let quiet_start = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let rss_before_kib = rss_kib(pid);
    let before = quiet_snapshot(&tb, &store, fidx);

    let sessions = Sessions::start(
        Some(&tb.client.name),
        &SessionOptions {
            target,
            connections: opts.connections,
            interval: opts.request_interval,
            // An upper bound: the run stops them once the flood is over.
            duration: Duration::from_secs(120),
            ramp: Duration::from_secs(1),
            request_timeout: Duration::from_secs(5),
            local_ports: at_risk_ports,
        },
    );
    let load_start = sessions.started;
    while sessions.started.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(20));
    }

    let flood_opts = FloodOptions {
        iface: "eth0".into(),
        src_mac: CLIENT_MAC,
        dst_mac: LB_MAC,
        target: match fvip.socket_addr() {
            SocketAddr::V4(a) => a,
            SocketAddr::V6(_) => unreachable!("the flood VIP is IPv4"),
        },
        sources: flood_sources(),
        phases: vec![opts.fill, opts.sustain],
        time_limit: opts.fill.duration() + opts.sustain.duration() + Duration::from_secs(5),
        seed: opts.seed,
    };
    let mut events = vec![("flood", load_start.elapsed())];
    let flood = Flood::start(&tb.client.name, flood_opts);
    // The fill: the whole first phase, at most three times its planned time.
    let fill_deadline = Instant::now() + opts.fill.duration() * 3 + Duration::from_secs(2);
    while flood.sent() < opts.fill.packets && Instant::now() < fill_deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let table_entries_after_fill = table_entries(&store);

    // The failure, while the table stays full.
    let stopped = Instant::now();
    tb.stop_backend(FAILED_BACKEND);
    let (_, down) = tb.wait_status("the failed backend down", Duration::from_secs(20), |r| {
        backend_state(r, &svip, failed_addr) == (MapState::Down, 0)
    });
    let down_after = down - stopped;
    events.push(("server stopped", stopped - load_start));
    events.push(("backend down", down - load_start));
    let ring_down = store.ring(sidx).expect("read the ring");
    while stopped.elapsed() < opts.backend_down_for {
        std::thread::sleep(Duration::from_millis(20));
    }
    let restarted = Instant::now();
    tb.start_backend(FAILED_BACKEND);
    let (_, up) = tb.wait_status("the failed backend back", Duration::from_secs(20), |r| {
        let (state, slots) = backend_state(r, &svip, failed_addr);
        state == MapState::Active && slots > 0
    });
    let up_after = up - restarted;
    events.push(("server restarted", restarted - load_start));
    events.push(("backend up", up - load_start));
    // A second of requests on the ring as it was, under the flood, then the end.
    std::thread::sleep(Duration::from_secs(1));
    let flood = flood.stop();
    std::thread::sleep(Duration::from_millis(500));
    sessions.stop();
    let reports = sessions.join();
    std::thread::sleep(Duration::from_millis(500));

    let after = quiet_snapshot(&tb, &store, fidx);
    let table_entries_at_end = table_entries(&store);
    let rss_after_kib = rss_kib(pid);
    let samples = probe.stop();
    let api_quiet = samples
        .latency(quiet_start..load_start)
        .expect("API calls before the load");
    let api_under_load = samples
        .latency(load_start..Instant::now())
        .expect("API calls under load");

    let mut api_slowest: Vec<(Duration, Duration)> = samples
        .calls
        .iter()
        .filter(|(t, _)| *t >= load_start)
        .map(|(t, d)| (*t - load_start, *d))
        .collect();
    api_slowest.sort_by_key(|c| std::cmp::Reverse(c.1));
    api_slowest.truncate(3);
    let delta = |c: Counter| after.stats.counters[c as usize] - before.stats.counters[c as usize];
    let counters = Counter::ALL
        .iter()
        .map(|c| (c.name(), delta(*c)))
        .filter(|(_, n)| *n > 0)
        .collect();
    let flood_counted = after.flood_vip.packets - before.flood_vip.packets;

    let (mut healthy, mut on_failed) = (SessionCounts::default(), SessionCounts::default());
    let (mut at_risk, mut failed_at_risk) = (0, 0);
    for r in &reports {
        if r.backend.as_deref() == Some(failed.as_str()) {
            on_failed.add(r);
            continue;
        }
        healthy.add(r);
        if r.local_port == 0 {
            continue;
        }
        let slot = slot_of(r.local_port);
        if ring_before[slot] != ring_down[slot] {
            at_risk += 1;
            failed_at_risk += usize::from(r.failed());
        }
    }

    let outcome = LoadFaultsOutcome {
        opts: opts.clone(),
        flow_capacity,
        evictions_at_least: flood_counted.saturating_sub(u64::from(flow_capacity)),
        flow_misses: delta(Counter::FlowMiss),
        flood,
        flood_counted,
        path_drops: after.path_drops - before.path_drops,
        table_entries_after_fill,
        table_entries_at_end,
        rx_packets: after.rx_packets - before.rx_packets,
        verdict_packets: verdict_sum(&after.stats) - verdict_sum(&before.stats),
        counters,
        sessions: reports,
        failed_backend: failed,
        healthy,
        on_failed_backend: on_failed,
        at_risk,
        failed_at_risk,
        survivor_slots_moved: ring_before
            .iter()
            .zip(&ring_down)
            .filter(|(b, d)| *b != &failed_id && b != d)
            .count(),
        ring_slots: ring_before.len(),
        ring_predicted: predicted == ring_down,
        down_after,
        up_after,
        rss_before_kib,
        rss_max_kib: samples.rss_max_kib.unwrap_or(rss_after_kib),
        rss_after_kib,
        api_quiet,
        api_under_load,
        api_failures: samples.failures,
        api_slowest,
        events,
        machine_busy: CpuTimes::now().busy_since(&cpu0),
        loadavg: loadavg(),
        elapsed: started.elapsed(),
    };
    if !outcome.api_failures.is_empty() || outcome.healthy.failed > 0 {
        eprintln!(
            "load with faults: agent log tail:\n{}",
            tail(&tb.agent_log_path(), 30)
        );
    }
    drop(tb);
    outcome
}
