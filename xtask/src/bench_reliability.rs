//! The reliability section of `cargo xtask bench` (issue 13). It is made of parts, each from a
//! stage of its own, each shown only when its stage ran (absent, never zero):
//!
//! - load with faults: stage `reliability` (`--only reliability`), `xlb-bench reliability`
//!   with the release `xlb`: a SYN flood fills a small flow table while long-lived connections
//!   ask and a backend fails and returns (`Results::load_faults`);
//! - the datapath fuzzer's totals: frames fuzzed, mismatches, invariant violations
//!   (`Results::fuzz`), for the stage that runs `cargo xtask fuzz` to fill. A further part
//!   adds its own function here and its call in [`report`].

use std::fmt::Write as _;
use std::process::Command;
use std::time::Duration;

use anyhow::Result;
use xlb_bench_data::reliability::{FuzzSummary, LoadFaults};

use crate::bench::{Bins, run_json};
use crate::bench_key::{Figure, KeyFigure, Outcome, Section};

/// The command of the load-with-faults stage.
pub fn command(bins: &Bins) -> Command {
    let mut c = Command::new(&bins.bench);
    c.arg("reliability").arg("--xlb").arg(&bins.xlb);
    c
}

/// About 30 s with the testbed's build and removal.
pub fn run(bins: &Bins) -> Result<LoadFaults> {
    run_json(&mut command(bins), Duration::from_secs(300))
}

/// The section's body: every part whose stage ran, or "(not run)".
pub fn report(
    fuzz: Option<&FuzzSummary>,
    load: Option<&LoadFaults>,
    md: &mut String,
    key: &mut Vec<KeyFigure>,
) {
    if fuzz.is_none() && load.is_none() {
        md.push_str("(not run)\n");
        return;
    }
    if let Some(f) = fuzz {
        fuzz_part(f, md, key);
    }
    if let Some(l) = load {
        load_part(l, md, key);
    }
}

fn fuzz_part(f: &FuzzSummary, md: &mut String, key: &mut Vec<KeyFigure>) {
    let _ = writeln!(
        md,
        "### Datapath fuzzing\n\n`cargo xtask fuzz --seed {}`: generated and mutated frames \
         through the loaded LB and decap programs (`BPF_PROG_TEST_RUN`), each result checked \
         against the reference model of docs/datapath.md and the invariants (section 10 \
         there); {} worlds in {:.0} s.\n\n\
         | figure | value | target | result |\n|---|---:|---|---|\n\
         | frames fuzzed (LB program) | {} ({} mutated) | - | - |\n\
         | frames fuzzed (decap program) | {} | - | - |",
        f.seed, f.worlds, f.seconds, f.frames_fuzzed, f.mutated, f.decap_frames
    );
    for (name, count, of) in [
        ("mismatches", f.mismatches, f.frames_fuzzed),
        (
            "invariant violations",
            f.invariant_violations,
            f.frames_fuzzed,
        ),
        ("stats mismatches", f.stats_mismatches, f.frames_fuzzed),
        ("decap mismatches", f.decap_mismatches, f.decap_frames),
        (
            "decap invariant violations",
            f.decap_invariant_violations,
            f.decap_frames,
        ),
    ] {
        let result = Outcome::of(count == 0);
        let _ = writeln!(md, "| {name} | {count} | 0 | {} |", result.as_str());
        key.push(KeyFigure::new(
            Section::Reliability,
            format!("fuzz: {name}"),
            Figure::Zero { count, of, result },
        ));
    }
    md.push('\n');
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn load_part(l: &LoadFaults, md: &mut String, key: &mut Vec<KeyFigure>) {
    let _ = writeln!(
        md,
        "### Load with faults\n\n`xlb-bench reliability` (the scenario of \
         `integration-tests/tests/load_faults.rs`, release build): the agent on the single-LB \
         testbed with a {}-entry flow table; {} long-lived connections, one request every {} ms \
         each, {} of them at risk (the failure moved their flow's ring slot from one healthy \
         backend to another, so only their flow entry kept them; the run picks local ports that \
         make it so); a SYN flood from spoofed documentation-range sources, each SYN a new \
         flow: {} at {}/s to fill the table, then {}/s ({:.2} of the table per second) through \
         the failure; one backend's server killed and restarted {:.1} s later. Seed {} \
         (`XLB_FLOOD_SEED` replays it). The machine was {:.0}% busy over the run (all CPUs, \
         whoever ran), load averages {:.2} {:.2} {:.2} at the end; {:.0} s.\n",
        l.flow_table_entries,
        l.connections,
        l.request_interval_ms,
        l.at_risk,
        l.fill_packets,
        l.fill_pps,
        l.sustain_pps,
        l.sustain_pps as f64 / f64::from(l.flow_table_entries),
        l.backend_down_ms / 1e3,
        l.seed,
        100.0 * l.machine_busy,
        l.loadavg[0],
        l.loadavg[1],
        l.loadavg[2],
        l.seconds,
    );
    md.push_str("| figure | value | target | result |\n|---|---|---|---|\n");
    let mut row = |name: &str, value: String, target: &str, result: Outcome| {
        let _ = writeln!(md, "| {name} | {value} | {target} | {} |", result.as_str());
    };

    let lost = l.syn_flood_sent.saturating_sub(l.syn_flood_counted);
    row(
        "SYN flood packets sent",
        format!(
            "{} sent; {} forwarded by the program; {} drops reported on the way",
            l.syn_flood_sent, l.syn_flood_counted, l.syn_flood_path_drops
        ),
        "sent - forwarded ≤ drops on the way",
        Outcome::of(l.syn_flood_counted <= l.syn_flood_sent && lost <= l.syn_flood_path_drops),
    );
    let full = l.table_entries_after_fill as u64 * 100 >= u64::from(l.flow_table_entries) * 95;
    row(
        "flow table",
        format!(
            "{} entries, {} taken after the fill; evictions ≥ {}; established packets that \
             found their entry evicted: {}",
            l.flow_table_entries,
            l.table_entries_after_fill,
            l.evictions_at_least,
            l.established_misses
        ),
        "full (≥ 95%), evictions > 0",
        Outcome::of(full && l.evictions_at_least > 0),
    );
    row(
        "requests tried / failed under the flood",
        format!(
            "{} / {} ({} of the failed on the failed backend's connections)",
            l.requests_tried,
            l.requests_failed,
            l.requests_failed.saturating_sub(l.healthy_requests_failed)
        ),
        "-",
        Outcome::None,
    );
    let healthy_ok = l.healthy_failed == 0 && l.healthy_requests_failed == 0;
    row(
        "failures on healthy backends",
        format!(
            "{} failed requests of {} on {} connections ({} at risk)",
            l.healthy_requests_failed, l.healthy_requests_tried, l.healthy_connections, l.at_risk
        ),
        "0",
        Outcome::of(healthy_ok),
    );
    row(
        "connections on the failed backend",
        format!(
            "{}, of which failed {} (its server was killed); out of the ring {:.1} s after, \
             back {:.1} s after its restart",
            l.failed_backend_connections,
            l.failed_backend_failed,
            l.down_after_ms / 1e3,
            l.up_after_ms / 1e3
        ),
        "-",
        Outcome::None,
    );
    let counted = Outcome::of(l.rx_packets == l.verdict_packets);
    row(
        "counter accounting",
        format!(
            "the LB's eth0 received {}; the verdict counters grew by {}",
            l.rx_packets, l.verdict_packets
        ),
        "equal",
        counted,
    );
    let flat = Outcome::of(l.rss_after_kib <= l.rss_bound_kib && l.rss_max_kib <= l.rss_bound_kib);
    row(
        "agent RSS before / max / after",
        format!(
            "{:.1} / {:.1} / {:.1} MiB",
            mib(l.rss_before_kib),
            mib(l.rss_max_kib),
            mib(l.rss_after_kib)
        ),
        &format!("≤ {:.1} MiB", mib(l.rss_bound_kib)),
        flat,
    );
    let (q, u) = (&l.api_quiet, &l.api_under_load);
    let api_ok = l.api_failures == 0 && u.max_ms < l.api_bound_ms && q.max_ms < l.api_bound_ms;
    row(
        "API `status` latency p50 / p99 / max",
        format!(
            "under load {:.1} / {:.1} / {:.1} ms ({} calls, {} failed); before it {:.1} / {:.1} \
             / {:.1} ms ({} calls)",
            u.p50_ms,
            u.p99_ms,
            u.max_ms,
            u.samples,
            l.api_failures,
            q.p50_ms,
            q.p99_ms,
            q.max_ms,
            q.samples
        ),
        &format!("every call < {:.0} ms", l.api_bound_ms),
        Outcome::of(api_ok),
    );

    let figures = [
        (
            "load: failures on healthy backends",
            Figure::Zero {
                count: l.healthy_requests_failed,
                of: l.healthy_requests_tried,
                result: Outcome::of(healthy_ok),
            },
        ),
        (
            "load: counter accounting",
            Figure::Accounting {
                packets: l.rx_packets,
                counted: l.verdict_packets,
                result: counted,
            },
        ),
        (
            "load: agent RSS",
            Figure::RssGrowth {
                before_mib: mib(l.rss_before_kib),
                max_mib: mib(l.rss_max_kib),
                after_mib: mib(l.rss_after_kib),
                bound_mib: mib(l.rss_bound_kib),
                result: flat,
            },
        ),
        (
            "load: API status latency",
            Figure::Latency {
                p50_ms: u.p50_ms,
                p99_ms: u.p99_ms,
                max_ms: u.max_ms.max(q.max_ms),
                target_ms: l.api_bound_ms,
                result: Outcome::of(api_ok),
            },
        ),
    ];
    for (name, figure) in figures {
        key.push(KeyFigure::new(Section::Reliability, name, figure));
    }
    md.push_str(
        "\nThe flood's second phase sets how often it passes each set of the table between two \
         packets of a connection: what decides whether an established flow keeps its entry \
         (docs/datapath.md §4). A flow that lost it takes the ring's choice again, the same \
         backend unless the ring changed: the connections at risk are those it changed.\n",
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use xlb_bench_data::reliability::ApiLatency;

    fn latency(max_ms: f64) -> ApiLatency {
        ApiLatency {
            samples: 100,
            p50_ms: 1.0,
            p99_ms: max_ms / 2.0,
            max_ms,
        }
    }

    fn load() -> LoadFaults {
        LoadFaults {
            seed: 7,
            flow_table_entries: 4096,
            connections: 45,
            request_interval_ms: 100,
            fill_packets: 12_288,
            fill_pps: 10_000,
            sustain_pps: 400,
            backend_down_ms: 4000.0,
            syn_flood_sent: 15_000,
            syn_flood_counted: 14_990,
            syn_flood_path_drops: 10,
            table_entries_after_fill: 4090,
            evictions_at_least: 10_894,
            established_misses: 12,
            requests_tried: 3300,
            requests_failed: 11,
            healthy_connections: 34,
            healthy_failed: 0,
            healthy_requests_tried: 3000,
            healthy_requests_failed: 0,
            at_risk: 8,
            failed_backend_connections: 11,
            failed_backend_failed: 11,
            down_after_ms: 2600.0,
            up_after_ms: 1300.0,
            rx_packets: 26_000,
            verdict_packets: 26_000,
            rss_before_kib: 30 * 1024,
            rss_max_kib: 31 * 1024,
            rss_after_kib: 31 * 1024,
            rss_bound_kib: 46 * 1024,
            api_quiet: latency(3.0),
            api_under_load: latency(120.0),
            api_failures: 0,
            api_bound_ms: 100.0,
            machine_busy: 0.5,
            loadavg: [1.0, 2.0, 3.0],
            seconds: 30.0,
        }
    }

    #[test]
    fn nothing_run_says_so() {
        let (mut md, mut key) = (String::new(), Vec::new());
        report(None, None, &mut md, &mut key);
        assert_eq!(md, "(not run)\n");
        assert!(key.is_empty());
    }

    #[test]
    fn the_load_part_judges_each_target_and_the_fuzz_rows_are_absent_without_their_stage() {
        let (mut md, mut key) = (String::new(), Vec::new());
        report(None, Some(&load()), &mut md, &mut key);
        for line in [
            "| SYN flood packets sent | 15000 sent; 14990 forwarded by the program; 10 drops \
             reported on the way | sent - forwarded ≤ drops on the way | PASS |",
            "| failures on healthy backends | 0 failed requests of 3000 on 34 connections (8 at \
             risk) | 0 | PASS |",
            "| counter accounting | the LB's eth0 received 26000; the verdict counters grew by \
             26000 | equal | PASS |",
            "| agent RSS before / max / after | 30.0 / 31.0 / 31.0 MiB | ≤ 46.0 MiB | PASS |",
            // One call over the bound under load: a miss.
            "| API `status` latency p50 / p99 / max | under load 1.0 / 60.0 / 120.0 ms (100 \
             calls, 0 failed); before it 1.0 / 1.5 / 3.0 ms (100 calls) | every call < 100 ms \
             | MISS |",
        ] {
            assert!(md.contains(line), "missing {line:?} in:\n{md}");
        }
        assert!(
            md.contains(
                "12288 at 10000/s to fill the table, then 400/s (0.10 of the table per second)"
            ),
            "{md}"
        );
        assert!(!md.contains("fuzz"), "{md}");
        let rows: Vec<String> = key.iter().map(KeyFigure::row).collect();
        assert_eq!(
            rows,
            [
                "| reliability | load: failures on healthy backends | count 0.000, of 3000.000 | \
                 target 0 | PASS |",
                "| reliability | load: counter accounting | counted 26000.000, packets \
                 26000.000 | counted = packets | PASS |",
                "| reliability | load: agent RSS | after_mib 31.000, before_mib 30.000, max_mib \
                 31.000 | max, after ≤ 46.0 MiB | PASS |",
                "| reliability | load: API status latency | max_ms 120.000, p50_ms 1.000, \
                 p99_ms 60.000 | max < 100 ms | MISS |",
            ]
        );
    }

    #[test]
    fn fuzz_rows_come_with_their_stage_and_a_failure_on_a_healthy_backend_misses() {
        let mut l = load();
        l.healthy_failed = 1;
        l.healthy_requests_failed = 1;
        l.rx_packets += 1;
        let fuzz = FuzzSummary {
            seed: "0x1".into(),
            frames_fuzzed: 200_000,
            mutated: 100_000,
            worlds: 8,
            seconds: 10.0,
            mismatches: 0,
            invariant_violations: 2,
            stats_mismatches: 0,
            decap_frames: 50_000,
            decap_mismatches: 0,
            decap_invariant_violations: 0,
        };
        let (mut md, mut key) = (String::new(), Vec::new());
        report(Some(&fuzz), Some(&l), &mut md, &mut key);
        for line in [
            "| frames fuzzed (LB program) | 200000 (100000 mutated) | - | - |",
            "| frames fuzzed (decap program) | 50000 | - | - |",
            "| mismatches | 0 | 0 | PASS |",
            "| decap invariant violations | 0 | 0 | PASS |",
            "| invariant violations | 2 | 0 | MISS |",
            "| failures on healthy backends | 1 failed requests of 3000 on 34 connections (8 at \
             risk) | 0 | MISS |",
            "| counter accounting | the LB's eth0 received 26001; the verdict counters grew by \
             26000 | equal | MISS |",
        ] {
            assert!(md.contains(line), "missing {line:?} in:\n{md}");
        }
        assert!(md.find("### Datapath fuzzing") < md.find("### Load with faults"));
        let names: Vec<&str> = key.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "fuzz: mismatches",
                "fuzz: invariant violations",
                "fuzz: stats mismatches",
                "fuzz: decap mismatches",
                "fuzz: decap invariant violations",
                "load: failures on healthy backends",
                "load: counter accounting",
                "load: agent RSS",
                "load: API status latency",
            ]
        );
        assert_eq!(key[1].outcome(), Outcome::Miss);
    }
}
