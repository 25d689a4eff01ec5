//! The differential run: generated and mutated frames through the loaded program
//! (`BPF_PROG_TEST_RUN`) and through the model, every result compared, invariants checked.

use std::{
    cell::RefCell,
    collections::{BTreeMap, HashMap},
    fmt::Write as _,
    time::{Duration, Instant},
};

use lb_common::{
    TrafficStats,
    stats::{COUNTER_SLOTS, Counter},
};
use lb_userspace::loader::LoadOptions;
use rand::{RngExt, SeedableRng, rngs::SmallRng};

use super::{
    decap::{self, DecapUnderTest},
    frames, invariants, mutate,
    world::{Live, World},
};
use crate::{datapath::Datapath, expect, model};

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Seed of everything: worlds, frames, mutations. The same seed replays the same run.
    pub seed: u64,
    /// Stop after this many frames...
    pub frames: u64,
    /// ...or after this long, whichever comes first.
    pub time: Duration,
    /// Frames per world (each world is a freshly loaded program).
    pub world_frames: u64,
    /// A backend changes state every this many frames.
    pub churn_every: u64,
    /// Mismatches described in full (all are counted).
    pub detail_limit: usize,
}

impl Options {
    pub fn new(seed: u64, frames: u64, time: Duration) -> Self {
        Options {
            seed,
            frames,
            time,
            world_frames: 25_000,
            churn_every: 2_000,
            detail_limit: 6,
        }
    }
}

/// What a run found.
#[derive(Debug, Default)]
pub struct Report {
    pub seed: u64,
    pub frames: u64,
    pub mutated: u64,
    pub worlds: u64,
    /// Frames whose result differs from the model's.
    pub mismatches: u64,
    /// Frames that broke an invariant.
    pub violations: u64,
    /// Stats checks (VIP and backend traffic counters) that disagreed with the model's sums.
    pub stats_mismatches: u64,
    /// Frames run through the decap program, and those whose result differs from its model
    /// (docs/datapath.md §9) or that it stripped without coming from a configured LB source.
    pub decap_frames: u64,
    pub decap_mismatches: u64,
    pub decap_violations: u64,
    /// Frames by the counters the model moved (verdict and detail), by name.
    pub verdicts: BTreeMap<&'static str, u64>,
    pub details: Vec<String>,
    pub elapsed: Duration,
}

impl Report {
    pub fn clean(&self) -> bool {
        self.mismatches == 0
            && self.violations == 0
            && self.stats_mismatches == 0
            && self.decap_mismatches == 0
            && self.decap_violations == 0
    }

    fn note(&mut self, limit: usize, text: String) {
        if self.details.len() < limit {
            self.details.push(text);
        }
    }

    /// The summary lines (`cargo xtask fuzz` prints them last).
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "frames by the model's counters (verdict and detail):");
        for (k, v) in &self.verdicts {
            let _ = writeln!(s, "  {k:<28} {v}");
        }
        let _ = writeln!(
            s,
            "seed {:#018x}: {} worlds, {:.1} s, {:.0} frames/s",
            self.seed,
            self.worlds,
            self.elapsed.as_secs_f64(),
            self.frames as f64 / self.elapsed.as_secs_f64().max(1e-9)
        );
        let _ = writeln!(
            s,
            "packets tried: {} ({} mutated); mismatches: {}; invariant violations: {}; stats mismatches: {}",
            self.frames, self.mutated, self.mismatches, self.violations, self.stats_mismatches
        );
        let _ = writeln!(
            s,
            "decap program: {} frames; mismatches: {}; invariant violations: {}",
            self.decap_frames, self.decap_mismatches, self.decap_violations
        );
        s
    }
}

/// Map sizes of the fuzzed program: small, so the flow table's sets fill and evict.
pub const FUZZ_LOAD_OPTIONS: LoadOptions = LoadOptions {
    max_vips: 8,
    max_backends: 64,
    flow_table_size: 256,
    peer_flows: 256,
};

fn verdict_name(v: u32) -> &'static str {
    match v {
        0 => "XDP_ABORTED",
        1 => "XDP_DROP",
        2 => "XDP_PASS",
        3 => "XDP_TX",
        _ => "other",
    }
}

fn hex(f: &[u8]) -> String {
    f.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs the fuzzer. Panics if the program cannot be loaded (root and CAP_BPF needed).
pub fn run(opts: &Options) -> Report {
    let start = Instant::now();
    let mut rng = SmallRng::seed_from_u64(opts.seed);
    let mut report = Report {
        seed: opts.seed,
        ..Report::default()
    };
    let mut decap = DecapUnderTest::new(
        crate::world::SRC_V4.parse().expect("an IPv4 literal"),
        crate::world::SRC_V6.parse().expect("an IPv6 literal"),
        crate::world::GUE_PORT,
    );
    'worlds: while report.frames < opts.frames && start.elapsed() < opts.time {
        let mut dp = Datapath::with_options(&FUZZ_LOAD_OPTIONS);
        let mut world = World::new(&mut rng, FUZZ_LOAD_OPTIONS.max_backends);
        world.install(&mut dp);
        seed_peers(&mut rng, &world, &mut dp);
        report.worlds += 1;
        let mut before = dp.counters();
        let mut sums: HashMap<(bool, u32), TrafficStats> = HashMap::new();
        for i in 0..opts.world_frames {
            if report.frames >= opts.frames || start.elapsed() >= opts.time {
                check_stats(&mut dp, &world, &sums, &mut report, opts);
                break 'worlds;
            }
            if i > 0 && i % opts.churn_every == 0 {
                world.churn(&mut rng, &mut dp);
                world.age_udp_flows(&mut rng, &mut dp);
            }
            let mut f = frames::frame(&mut rng, &world).frame();
            let mutated = rng.random_bool(0.5);
            if mutated {
                mutate::mutate(&mut rng, &mut f);
                // The kernel refuses test runs shorter than an Ethernet header.
                while f.len() < 14 {
                    f.push(rng.random());
                }
                report.mutated += 1;
            }
            report.frames += 1;
            let frame_no = report.frames;
            let (want, parsed) = {
                let live = Live {
                    world: &world,
                    dp: RefCell::new(&mut dp),
                };
                (model::decide(&live, &f), model::parse(&f))
            };
            let (verdict, out) = match dp.try_run(&f) {
                Ok(r) => r,
                Err(e) => {
                    report.mismatches += 1;
                    report.note(
                        opts.detail_limit,
                        format!(
                            "frame {frame_no}: the kernel refused the run: {e}\n  frame {}",
                            hex(&f)
                        ),
                    );
                    continue;
                }
            };
            let after = dp.counters();
            let problems = compare(&mut dp, &want, verdict, &out, &f, &before, &after);
            let (before_counts, after_counts) = (before, after);
            before = after;
            for c in want.counters() {
                *report.verdicts.entry(c.name()).or_default() += 1;
            }
            if !problems.is_empty() {
                report.mismatches += 1;
                report.note(
                    opts.detail_limit,
                    format!(
                        "frame {frame_no} (seed {:#x}{}): {}\n  model: {} {:?} detail {:?}\n  frame {}",
                        opts.seed,
                        if mutated { ", mutated" } else { "" },
                        problems.join("; "),
                        verdict_name(want.verdict),
                        want.counter,
                        want.detail,
                        hex(&f)
                    ),
                );
            }
            let seen = invariants::Seen {
                input: &f,
                parsed: parsed.as_ref(),
            };
            let mut broken = invariants::check(&world, &seen, verdict, &out);
            // Every packet moves exactly one verdict counter (docs/datapath.md, top).
            let verdicts: u64 = Counter::ALL
                .iter()
                .filter(|c| c.is_verdict())
                .map(|c| after_counts[*c as usize] - before_counts[*c as usize])
                .sum();
            if verdicts != 1 {
                broken.push(format!("{verdicts} verdict counters moved"));
            }
            if !broken.is_empty() {
                report.violations += 1;
                report.note(
                    opts.detail_limit,
                    format!(
                        "frame {frame_no}: invariant: {}\n  frame {}",
                        broken.join("; "),
                        hex(&f)
                    ),
                );
            }
            // The decap program gets the LB's tunnels (as sent, from another source, or
            // mutated) and, now and then, client traffic.
            let tunnel = verdict == 3 && out.len() > f.len();
            if tunnel || rng.random_bool(0.1) {
                let mut d = if tunnel { out.clone() } else { f.clone() };
                match rng.random_range(0..4) {
                    0 if tunnel => {
                        let other = if rng.random_bool(0.5) {
                            "198.51.100.200"
                        } else {
                            "2001:db8:c::200"
                        };
                        d = decap::with_outer_source(&d, other.parse().expect("literal"));
                    }
                    1 => {
                        mutate::mutate(&mut rng, &mut d);
                        while d.len() < 14 {
                            d.push(rng.random());
                        }
                    }
                    _ => {}
                }
                decap_step(&mut decap, &d, frame_no, &mut report, opts);
            }
            for (vip, (index, s)) in [(true, want.vip), (false, want.backend)]
                .into_iter()
                .filter_map(|(v, x)| x.map(|x| (v, x)))
            {
                let e = sums.entry((vip, index)).or_default();
                e.packets += s.packets;
                e.bytes += s.bytes;
                e.new_flows += s.new_flows;
                e.drops += s.drops;
            }
            if i % 1000 == 999 {
                check_stats(&mut dp, &world, &sums, &mut report, opts);
            }
        }
        check_stats(&mut dp, &world, &sums, &mut report, opts);
    }
    report.elapsed = start.elapsed();
    report
}

/// One frame through the decap program, against its model and its invariant.
fn decap_step(
    decap: &mut DecapUnderTest,
    f: &[u8],
    frame_no: u64,
    report: &mut Report,
    opts: &Options,
) {
    report.decap_frames += 1;
    let (counter, want) = decap::model(&decap.cfg, f);
    let before = decap.counters();
    let (verdict, out) = decap.run(f);
    let after = decap.counters();
    let mut problems = Vec::new();
    if verdict != 2 {
        problems.push(format!(
            "verdict {} (model XDP_PASS)",
            verdict_name(verdict)
        ));
    }
    for (i, (a, b)) in after.iter().zip(before.iter()).enumerate() {
        let want_n = u64::from(i == counter as usize);
        if a - b != want_n {
            problems.push(format!("counter {i} +{} (model +{want_n})", a - b));
        }
    }
    let want_out = want.as_deref().unwrap_or(f);
    if let Some(d) = expect::diff_frames(want_out, &out) {
        problems.push(format!("output differs:\n{d}"));
    }
    if !problems.is_empty() {
        report.decap_mismatches += 1;
        report.note(
            opts.detail_limit,
            format!(
                "decap, after LB frame {frame_no}: {} (model {counter:?})\n  frame {}",
                problems.join("; "),
                hex(f)
            ),
        );
    }
    if out != f && !decap::from_configured_source(&decap.cfg, f) {
        report.decap_violations += 1;
        report.note(
            opts.detail_limit,
            format!("decap, after LB frame {frame_no}: stripped a frame from a source that is no LB\n  frame {}", hex(f)),
        );
    }
}

/// Peer exceptions for some of the generator's flows: honoured ones, stale ones, and ones
/// naming another VIP's backend (which the program must not take).
fn seed_peers(rng: &mut SmallRng, world: &World, dp: &mut Datapath) {
    for _ in 0..64 {
        let p = frames::frame(rng, world);
        if p.is_fragment() || !matches!(p.proto(), 6 | 17) {
            continue;
        }
        let key = p.flow_key();
        let id = rng.random_range(1..world.backends.len() as u32);
        let b = world.backends[id as usize];
        let generation = if rng.random_bool(0.8) {
            b.generation
        } else {
            b.generation ^ 1
        };
        dp.set_peer_flow(&key, id, generation);
    }
}

/// Compares the program's result with the model's. Each difference is a line.
fn compare(
    dp: &mut Datapath,
    want: &model::Outcome,
    verdict: u32,
    out: &[u8],
    input: &[u8],
    before: &[u64; COUNTER_SLOTS],
    after: &[u64; COUNTER_SLOTS],
) -> Vec<String> {
    let mut p = Vec::new();
    if verdict != want.verdict {
        p.push(format!(
            "verdict {} (model {})",
            verdict_name(verdict),
            verdict_name(want.verdict)
        ));
    }
    let mut expected = [0u64; COUNTER_SLOTS];
    for c in want.counters() {
        expected[c as usize] += 1;
    }
    for i in 0..COUNTER_SLOTS {
        let got = after[i] - before[i];
        if got != expected[i] {
            let name = Counter::ALL.get(i).map_or("slot", |c| c.name());
            p.push(format!("counter {name} +{got} (model +{})", expected[i]));
        }
    }
    let want_out = want.output.as_deref().unwrap_or(input);
    if let Some(d) = expect::diff_frames(want_out, out) {
        p.push(format!("output differs:\n{d}"));
    }
    if let Some(w) = &want.flow_write {
        let got = dp.flow_entry(&w.key);
        let origin = dp.flow_origin(&w.key);
        if got != Some(w.entry) {
            p.push(format!("flow entry {got:?} (model {:?})", w.entry));
        } else if origin != Some(w.origin) {
            p.push(format!("flow origin {origin:?} (model {})", w.origin));
        }
    }
    p
}

/// VIP and backend traffic stats against the model's sums.
fn check_stats(
    dp: &mut Datapath,
    world: &World,
    sums: &HashMap<(bool, u32), TrafficStats>,
    report: &mut Report,
    opts: &Options,
) {
    let mut wrong = Vec::new();
    for v in &world.vips {
        let i = v.meta.index;
        let want = sums.get(&(true, i)).copied().unwrap_or_default();
        let got = dp.vip_stats(i);
        if got != want {
            wrong.push(format!("VIP {i}: {got:?} (model {want:?})"));
        }
    }
    for id in 1..world.backends.len() as u32 {
        let want = sums.get(&(false, id)).copied().unwrap_or_default();
        let got = dp.backend_stats(id);
        if got != want {
            wrong.push(format!("backend {id}: {got:?} (model {want:?})"));
        }
    }
    if !wrong.is_empty() {
        report.stats_mismatches += 1;
        report.note(
            opts.detail_limit,
            format!("stats after frame {}: {}", report.frames, wrong.join("; ")),
        );
    }
}
