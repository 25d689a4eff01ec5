//! `xlb-bench reliability`: the load-with-faults scenario (xlb-testkit's
//! `testbed::load_faults`, the one `integration-tests/tests/load_faults.rs` asserts on) with the
//! release `xlb`; its figures, measured, not judged.

use std::path::Path;
use std::time::Duration;

use xlb_bench_data::reliability::{ApiLatency, LoadFaults};
use xlb_testkit::testbed::load_faults::{
    API_BOUND, LoadFaultsOptions, LoadFaultsOutcome, rss_bound_kib, run as run_scenario,
};
use xlb_testkit::testbed::probe::Latency;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn latency(l: &Latency) -> ApiLatency {
    ApiLatency {
        samples: l.samples,
        p50_ms: ms(l.p50),
        p99_ms: ms(l.p99),
        max_ms: ms(l.max),
    }
}

/// The report's figures of one run.
pub fn figures(o: &LoadFaultsOutcome) -> LoadFaults {
    let (h, f) = (&o.healthy, &o.on_failed_backend);
    LoadFaults {
        seed: o.opts.seed,
        flow_table_entries: o.flow_capacity,
        connections: o.opts.connections,
        request_interval_ms: o.opts.request_interval.as_millis() as u64,
        fill_packets: o.opts.fill.packets,
        fill_pps: o.opts.fill.rate_pps,
        sustain_pps: o.opts.sustain.rate_pps,
        backend_down_ms: ms(o.opts.backend_down_for),
        syn_flood_sent: o.flood.sent,
        syn_flood_counted: o.flood_counted,
        syn_flood_path_drops: o.path_drops,
        table_entries_after_fill: o.table_entries_after_fill,
        evictions_at_least: o.evictions_at_least,
        established_misses: o.flow_misses,
        requests_tried: h.requests_tried + f.requests_tried,
        requests_failed: h.requests_failed + f.requests_failed,
        healthy_connections: h.connections,
        healthy_failed: h.failed,
        healthy_requests_tried: h.requests_tried,
        healthy_requests_failed: h.requests_failed,
        at_risk: o.at_risk,
        failed_backend_connections: f.connections,
        failed_backend_failed: f.failed,
        down_after_ms: ms(o.down_after),
        up_after_ms: ms(o.up_after),
        rx_packets: o.rx_packets,
        verdict_packets: o.verdict_packets,
        rss_before_kib: o.rss_before_kib,
        rss_max_kib: o.rss_max_kib,
        rss_after_kib: o.rss_after_kib,
        rss_bound_kib: rss_bound_kib(o.rss_before_kib),
        api_quiet: latency(&o.api_quiet),
        api_under_load: latency(&o.api_under_load),
        api_failures: o.api_failures.len(),
        api_bound_ms: ms(API_BOUND),
        machine_busy: o.machine_busy,
        loadavg: o.loadavg,
        seconds: o.elapsed.as_secs_f64(),
    }
}

/// One run of the scenario with `opts`; its figures on stdout's document, its log on stderr.
pub fn run(xlb: &Path, opts: &LoadFaultsOptions) -> LoadFaults {
    eprintln!("reliability: load with faults (seed {})", opts.seed);
    let o = run_scenario(xlb, "bench-reliability", opts);
    eprintln!("{}", o.render());
    figures(&o)
}
