//! What `xlb-bench` prints, `cargo xtask bench` reads back unchanged.

use std::collections::HashMap;

use xlb_bench_data::{
    control::{MemoryReport, Timing},
    e2e::{HttpSuite, Iperf, Pps, PpsPair, Report as E2eReport, Wrk},
    live::{LiveProgram, LiveRun, Report as LiveReport},
    measure::{Measurement, RunStats},
    packet::{LoadOptions, Params, Report as PacketReport, Scenario},
    run::{Results, Run, Stage},
    sys::{Machine, MapMemory, ProcMemory, Rss},
};

fn measurement(ns: f64) -> Measurement {
    Measurement {
        method: "single".into(),
        runs: vec![RunStats {
            iterations: 1000,
            median_ns: ns.round(),
            trimmed_mean_ns: ns,
            p99_ns: ns * 2.0,
            wall_ns_per_call: ns * 10.0,
        }],
        ns,
        median_ns: ns.round(),
        spread: 0.02,
        verdict: 3,
    }
}

fn wrk(close: bool) -> Wrk {
    Wrk {
        targets: vec!["198.51.100.11".into(), "198.51.100.12".into()],
        connections: 16,
        connection_close: close,
        seconds: 2,
        requests_per_s: 12345.5,
        p50_ms: 0.25,
        p99_ms: 1.5,
        errors: 3,
    }
}

fn suite() -> HttpSuite {
    HttpSuite {
        keepalive: wrk(false),
        connection_close: wrk(true),
        iperf3: Iperf {
            target: "198.51.100.11".into(),
            seconds: 2,
            gbit_per_s: 9.5,
        },
    }
}

fn program(name: &str) -> LiveProgram {
    LiveProgram {
        program: name.into(),
        runs: vec![LiveRun {
            frames: 1000,
            kernel_ns_per_frame: 120.0,
            wall_seconds: 0.001,
            pps: 1e6,
        }],
        pps: 1e6,
        kernel_ns_per_frame: 120.0,
    }
}

fn rss() -> Rss {
    Rss {
        rss_kib: 2048,
        hwm_kib: 4096,
        anon_kib: 1024,
        file_kib: 512,
        shmem_kib: 512,
    }
}

fn map() -> MapMemory {
    MapMemory {
        map_id: 9,
        map_type: 1,
        max_entries: 512,
        key_size: 20,
        value_size: 8,
        memlock_bytes: 65536,
    }
}

fn sample() -> Run {
    Run {
        machine: Machine {
            cpu_model: "Test CPU".into(),
            cpus: 2,
            kernel: "6.1.0".into(),
            mem_total_kib: 1 << 22,
        },
        invocation: "cargo xtask bench --quick".into(),
        quick: true,
        total_seconds: 12.5,
        stages: vec![
            Stage {
                name: "packet".into(),
                command: "xlb-bench packet".into(),
                seconds: 3.0,
                error: None,
            },
            Stage {
                name: "scale".into(),
                command: "xlb-bench scale".into(),
                seconds: 1.0,
                error: Some("killed".into()),
            },
        ],
        results: Results {
            packet: Some(PacketReport {
                params: Params {
                    iterations: 1000,
                    runs: 3,
                    warmup: 100,
                    cpu: 1,
                    resident: 1 << 20,
                },
                load_options: LoadOptions {
                    max_vips: 512,
                    max_backends: 4096,
                    flow_table_size: 1 << 20,
                },
                scenarios: vec![Scenario {
                    name: "v4_tcp_hit".into(),
                    label: "IPv4 TCP hit".into(),
                    expected_verdict: 3,
                    m: measurement(41.25),
                    counters: HashMap::from([("FlowHit".into(), 1100), ("Tx".into(), 1100)]),
                }],
                repeat_method: Vec::new(),
                resident_after_fill: None,
                table_entries_after_fill: Some(1_000_000),
            }),
            memory: Some(MemoryReport {
                flow_table_size: 1 << 20,
                flows_inserted: 100,
                flows_resident: 99,
                rss_after_load: rss(),
                rss_after_fill: rss(),
                maps: vec![map()],
                memlock_total_bytes: 65536,
                fill_seconds: 0.5,
            }),
            e2e: Some(E2eReport {
                backends: 2,
                wrk_connections: 32,
                direct: suite(),
                xlb: suite(),
                haproxy: suite(),
                pps: PpsPair {
                    xlb: Pps {
                        xdp_tx_pps: 1.5e6,
                        seconds: 2.0,
                    },
                    reflect: Pps {
                        xdp_tx_pps: 2.5e6,
                        seconds: 2.0,
                    },
                },
                live_frames: LiveReport {
                    ifname: "lv0".into(),
                    ifindex: 4,
                    batch: 64,
                    xlb: program("xlb"),
                    reflect: program("xlb_reflect"),
                    xlb_counters: HashMap::from([("Tx".into(), 1000)]),
                },
                agent_memory: ProcMemory {
                    pid: "1234".into(),
                    rss: rss(),
                    memlock_total_bytes: 65536,
                    maps: vec![map()],
                },
                xlb_log_tail: vec!["ready".into()],
            }),
            ..Results::default()
        },
    }
}

#[test]
fn a_run_reads_back_as_written() {
    let run = sample();
    let text = serde_json::to_string_pretty(&run).unwrap();
    let back: Run = serde_json::from_str(&text).unwrap();
    assert_eq!(back, run);
}

#[test]
fn stages_not_run_are_absent_and_read_back_as_none() {
    let text = serde_json::to_string(&sample().results).unwrap();
    assert!(!text.contains("\"scale\""), "{text}");
    assert!(!text.contains("\"control\""), "{text}");
    let back: Results = serde_json::from_str(&text).unwrap();
    assert!(back.scale.is_none() && back.control.is_none() && back.packet.is_some());
    let empty: Results = serde_json::from_str("{}").unwrap();
    assert_eq!(empty, Results::default());
}

#[test]
fn a_driver_document_missing_a_field_is_refused() {
    // Timing without `max_ms`: the report must not read a figure the driver did not print.
    let err = serde_json::from_str::<Timing>(r#"{"reps": 3, "median_ms": 1.0, "min_ms": 0.5}"#)
        .unwrap_err();
    assert!(err.to_string().contains("max_ms"), "{err}");
}
