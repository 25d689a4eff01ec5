//! Load with faults (issue 13): the agent (the real `xlb` binary) on the single-LB testbed, with
//! a 4096-entry flow table, while 45 long-lived connections each ask every 100 ms, a SYN flood
//! from spoofed documentation-range sources fills the table three times over and keeps it full,
//! and one backend's server stops for 4 s and comes back. The scenario is the test kit's
//! (`xlb_testkit::testbed::load_faults`, also run by `cargo xtask bench --only reliability`);
//! this suite judges it:
//!
//! - the flood filled the table: nearly every entry taken after the fill, and more distinct
//!   flows counted than the table holds (evictions);
//! - no failed request on a connection whose backend stayed healthy, up to 8 of them chosen (by
//!   their local port) so that the failure moves their ring slot to another healthy backend:
//!   only their flow entry, which the flood keeps evicting, holds them; the connections on the
//!   failed backend are reported apart (they all break: its server was killed);
//! - the counters account for every packet: the verdict counters grew by exactly the packets
//!   the LB's `eth0` received, and the flood's VIP counted every SYN sent but those the
//!   interfaces on the way reported dropped;
//! - the agent's memory stayed flat (RSS after within 20% or 16 MiB of before);
//! - the API answered every `status` (sampled every 75 ms): within 100 ms in a release build,
//!   with a p99 within 100 ms in a debug one (see `the_api_kept_answering` for a noisy
//!   machine).
//!
//! `cargo test -p integration-tests --test load_faults -- --nocapture --test-threads=1` (root;
//! about 20 s once built; `--release` for the API bound). `XLB_FLOOD_SEED=N` replays a
//! run's flood.

use std::path::Path;

use xlb_testkit::testbed::load_faults::{
    API_BOUND, LoadFaultsOptions, LoadFaultsOutcome, rss_bound_kib, run,
};

fn xlb() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_xlb-under-test"))
}

#[test]
fn syn_flood_full_flow_table_and_a_failing_backend_break_no_healthy_connection() {
    let opts = LoadFaultsOptions::default();
    let o = run(xlb(), "load-faults", &opts);
    eprintln!("{}", o.render());
    the_flood_filled_the_table(&o);
    no_healthy_connection_failed(&o);
    every_packet_is_counted(&o);
    memory_stays_flat(&o);
    the_api_kept_answering(&o);
}

fn the_flood_filled_the_table(o: &LoadFaultsOutcome) {
    let cap = o.flow_capacity as usize;
    assert!(
        o.table_entries_after_fill * 100 >= cap * 95,
        "the fill left {} of {cap} entries taken: the flood did not fill the table",
        o.table_entries_after_fill
    );
    assert!(
        o.evictions_at_least > 0,
        "the program counted {} flood SYNs (each a new flow) for a table of {cap}: no eviction",
        o.flood_counted
    );
}

fn no_healthy_connection_failed(o: &LoadFaultsOutcome) {
    assert!(
        o.healthy.connections > 0 && o.on_failed_backend.connections > 0,
        "connections on healthy backends {:?}, on {} {:?}: the run does not test the failure",
        o.healthy,
        o.failed_backend,
        o.on_failed_backend
    );
    assert_eq!(
        o.on_failed_backend.failed, o.on_failed_backend.connections,
        "connections on {} that outlived its server: was it stopped?",
        o.failed_backend
    );
    assert!(
        o.at_risk > 0,
        "no healthy connection had its ring slot moved by the failure (ring as predicted: {}): \
         the run does not test that flow entries hold them under the flood",
        o.ring_predicted
    );
    let failures = o.healthy_failures();
    assert!(
        failures.is_empty(),
        "{} of {} connections on healthy backends failed ({} were at risk: their ring slot \
         moved during the failure, so only their flow entry kept them; {} of those failed):\n{}",
        failures.len(),
        o.healthy.connections,
        o.at_risk,
        o.failed_at_risk,
        failures.join("\n")
    );
}

fn every_packet_is_counted(o: &LoadFaultsOutcome) {
    assert_eq!(
        o.verdict_packets, o.rx_packets,
        "the verdict counters grew by {}, the LB's eth0 received {} packets: every packet the \
         program sees bumps exactly one verdict counter (counters that moved: {:?})",
        o.verdict_packets, o.rx_packets, o.counters
    );
    assert!(
        o.flood.sent > u64::from(o.flow_capacity),
        "the flood sent only {} SYNs",
        o.flood.sent
    );
    assert!(
        o.flood_counted <= o.flood.sent && o.flood.sent - o.flood_counted <= o.path_drops,
        "the flood sent {} SYNs, the program forwarded {} to the flood VIP, and the interfaces \
         on the way reported {} drops: SYNs unaccounted for",
        o.flood.sent,
        o.flood_counted,
        o.path_drops
    );
}

fn memory_stays_flat(o: &LoadFaultsOutcome) {
    let bound = rss_bound_kib(o.rss_before_kib);
    assert!(
        o.rss_after_kib <= bound && o.rss_max_kib <= bound,
        "agent RSS {} KiB before, {} KiB at most, {} KiB after: over {bound} KiB",
        o.rss_before_kib,
        o.rss_max_kib,
        o.rss_after_kib
    );
}

fn the_api_kept_answering(o: &LoadFaultsOutcome) {
    assert!(
        o.api_failures.is_empty(),
        "failed API calls: {:?}",
        o.api_failures
    );
    // The bound holds call by call for a release build. A debug build's agent takes
    // ~20 ms per status and runs its ring rebuilds and health checks on the same loop, ten
    // times slower: its p99 is held to the bound, each call to three times it.
    let max_bound = if cfg!(debug_assertions) {
        API_BOUND * 3
    } else {
        API_BOUND
    };
    // An agent that does not answer promptly without load (cores shared with other work)
    // measures the machine: then load may not make the p99 more than three times the quiet
    // one, which still catches an agent that stalls under load.
    let noisy = o.api_quiet.max >= API_BOUND / 2;
    let p99_bound = if noisy {
        eprintln!(
            "the API took {:?} at worst without load: bounding the p99 under load by three \
             times the quiet p99, at least {API_BOUND:?}, and not every call",
            o.api_quiet.max
        );
        API_BOUND.max(o.api_quiet.p99 * 3)
    } else {
        API_BOUND
    };
    assert!(
        o.api_under_load.p99 < p99_bound,
        "the API's p99 under load is {:?}, over {p99_bound:?} (quiet: {})",
        o.api_under_load.p99,
        o.api_quiet
    );
    assert!(
        noisy || o.api_under_load.max < max_bound,
        "the API took {:?} at worst under load, over {max_bound:?} (quiet: {})",
        o.api_under_load.max,
        o.api_quiet
    );
}
