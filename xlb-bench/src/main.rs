//! `xlb-bench`: the measuring half of `cargo xtask bench` (which builds it, runs its
//! subcommands, and writes the report). Each subcommand prints one JSON document on stdout and
//! its progress on stderr. Needs root (loads XDP programs).

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use lb_common::map_names::{PROG_PASS, PROG_REFLECT};
use xlb_bench::{control, failover, fixture::Aux, live, packet, reliability, scale, sys};
use xlb_testkit::testbed::load_faults::LoadFaultsOptions;

#[derive(Parser)]
#[command(
    name = "xlb-bench",
    about = "xlb benchmark driver (run by `cargo xtask bench`)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args, Clone, Copy)]
struct PacketArgs {
    /// CPU the measuring thread is pinned to.
    #[arg(long, default_value_t = 1)]
    cpu: usize,
    /// One-packet BPF_PROG_TEST_RUN calls per run.
    #[arg(long, default_value_t = 1_000_000)]
    iterations: u64,
    #[arg(long, default_value_t = 5)]
    runs: u32,
    #[arg(long, default_value_t = 20_000)]
    warmup: u64,
    /// Resident flows of the "1M flows" scenario.
    #[arg(long, default_value_t = 1_000_000)]
    resident: u64,
}

impl PacketArgs {
    fn params(self) -> packet::Params {
        packet::Params {
            iterations: self.iterations,
            runs: self.runs,
            warmup: self.warmup,
            cpu: self.cpu,
            resident: self.resident,
        }
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// The machine (CPU model, cores, kernel).
    Machine,
    /// Per-packet cost of every scenario and of the two baselines.
    Packet {
        #[command(flatten)]
        args: PacketArgs,
        /// Measure only this scenario (repeatable; e.g. `v6_tcp_hit`); the baselines always run.
        #[arg(long)]
        scenario: Vec<String>,
    },
    /// Scale curves (VIPs, backends per VIP, flow-table occupancy, SYN flood).
    Scale(PacketArgs),
    /// Maglev, reconcile and reload times.
    Control {
        #[arg(long, default_value_t = 20)]
        reps: u32,
    },
    /// RSS and map memory of a process holding a filled flow table.
    Memory {
        #[arg(long, default_value_t = 1_000_000)]
        flows: u64,
    },
    /// RSS and BPF map memory (fdinfo `memlock:`) of another process, e.g. the agent.
    ProcMemory {
        #[arg(long)]
        pid: u32,
    },
    /// XDP live-frames mode on an interface of the current namespace.
    Live {
        #[arg(long)]
        ifname: String,
        #[arg(long, default_value_t = 2_000_000)]
        frames: u32,
        #[arg(long, default_value_t = 64)]
        batch: u32,
        #[arg(long, default_value_t = 5)]
        runs: u32,
        #[arg(long, default_value_t = 1)]
        cpu: usize,
    },
    /// Send UDP frames out of an interface for a while (live-frames mode; the stand-in for
    /// xdp-trafficgen). Prints the number of frames sent.
    Gen {
        #[arg(long)]
        ifname: String,
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Destination MAC (the LB's), aa:bb:cc:dd:ee:ff.
        #[arg(long)]
        dst_mac: String,
        #[arg(long)]
        src_mac: String,
        #[arg(long)]
        src: String,
        #[arg(long)]
        dst: String,
        #[arg(long, default_value_t = 9000)]
        dport: u16,
        #[arg(long, default_value_t = 0)]
        cpu: usize,
    },
    /// Three LB nodes behind a router (BGP+BFD, ECMP) under long-lived connections: node
    /// loss, node return, drain.
    Failover {
        /// The `xlb` binary the nodes run.
        #[arg(long)]
        xlb: std::path::PathBuf,
        #[arg(long, default_value_t = 300)]
        connections: usize,
        /// Length of each phase.
        #[arg(long, default_value_t = 8)]
        seconds: u64,
    },
    /// Differential fuzzing of the XDP programs against the reference model (what `cargo
    /// xtask fuzz` runs): frames through BPF_PROG_TEST_RUN until `--time` or `--frames`.
    /// Prints the report on stderr and its figures as JSON (`FuzzSummary`).
    Fuzz {
        /// Seconds to run.
        #[arg(long, default_value_t = 60)]
        time: u64,
        /// Frames at most.
        #[arg(long, default_value_t = u64::MAX)]
        frames: u64,
        /// Seed (decimal or 0x-hex); a random one by default. Printed, to replay the run.
        #[arg(long, value_parser = parse_seed)]
        seed: Option<u64>,
    },
    /// Load with faults on the single-LB testbed: a SYN flood fills a small flow table while
    /// long-lived connections ask and one backend fails and returns (defaults: the root test's).
    Reliability {
        /// The `xlb` binary the agent runs.
        #[arg(long)]
        xlb: std::path::PathBuf,
        #[arg(long)]
        flow_table_size: Option<u32>,
        #[arg(long)]
        connections: Option<usize>,
        /// SYNs per second of the flood's second phase (the one during the failure).
        #[arg(long)]
        sustain_pps: Option<u64>,
        /// Replays a run's flood.
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Attach `xlb_pass` or `xlb_reflect` to an interface (native mode) and hold it until
    /// killed; prints "ready" once attached.
    Hold {
        #[arg(long, value_parser = ["pass", "reflect"])]
        prog: String,
        #[arg(long)]
        ifname: String,
    },
}

fn parse_seed(s: &str) -> Result<u64, String> {
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    }
    .map_err(|e| format!("{s:?} is not a seed: {e}"))
}

fn parse_mac(s: &str) -> anyhow::Result<[u8; 6]> {
    let bytes: Vec<u8> = s
        .split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<Result<_, _>>()?;
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("bad MAC address {s}"))
}

fn emit<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v)?;
    writeln!(out)?;
    Ok(())
}

fn dispatch(cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Machine => emit(&sys::machine()),
        Cmd::Fuzz { time, frames, seed } => {
            let seed = match seed {
                Some(s) => s,
                None => {
                    let mut b = [0u8; 8];
                    getrandom::getrandom(&mut b)
                        .map_err(|e| anyhow::anyhow!("no random seed from the OS: {e}"))?;
                    u64::from_ne_bytes(b)
                }
            };
            eprintln!("fuzz: seed {seed:#x} (replay with --seed {seed:#x})");
            let opts = xlb_testkit::fuzz::Options::new(seed, frames, Duration::from_secs(time));
            let report = xlb_testkit::fuzz::run(&opts);
            for d in &report.details {
                eprintln!("{d}\n");
            }
            eprint!("{}", report.summary());
            emit(&xlb_bench_data::reliability::FuzzSummary {
                seed: format!("{seed:#x}"),
                frames_fuzzed: report.frames,
                mutated: report.mutated,
                worlds: report.worlds,
                seconds: report.elapsed.as_secs_f64(),
                mismatches: report.mismatches,
                invariant_violations: report.violations,
                stats_mismatches: report.stats_mismatches,
                decap_frames: report.decap_frames,
                decap_mismatches: report.decap_mismatches,
                decap_invariant_violations: report.decap_violations,
            })?;
            // The figures say whether it was clean; `cargo xtask fuzz` and the bench judge them.
            Ok(())
        }
        Cmd::Packet { args, scenario } => {
            sys::pin_to_cpu(args.cpu)?;
            emit(&packet::run(&args.params(), &scenario)?)
        }
        Cmd::Scale(a) => {
            sys::pin_to_cpu(a.cpu)?;
            emit(&scale::run(&a.params())?)
        }
        Cmd::Control { reps } => emit(&control::run(reps)?),
        Cmd::Memory { flows } => emit(&control::memory(flows)?),
        Cmd::ProcMemory { pid } => {
            let pid = pid.to_string();
            let maps = sys::map_memory(&pid);
            emit(&sys::ProcMemory {
                rss: sys::rss(&pid),
                memlock_total_bytes: maps.iter().map(|m| m.memlock_bytes).sum::<u64>(),
                maps,
                pid,
            })
        }
        Cmd::Live {
            ifname,
            frames,
            batch,
            runs,
            cpu,
        } => {
            sys::pin_to_cpu(cpu)?;
            emit(&live::run(&ifname, frames, batch, runs)?)
        }
        Cmd::Gen {
            ifname,
            seconds,
            dst_mac,
            src_mac,
            src,
            dst,
            dport,
            cpu,
        } => {
            sys::pin_to_cpu(cpu)?;
            let sent = live::generate(
                &ifname,
                seconds,
                parse_mac(&dst_mac)?,
                parse_mac(&src_mac)?,
                &src,
                &dst,
                dport,
            )?;
            emit(&live::Generated {
                frames_sent: sent,
                seconds,
            })
        }
        Cmd::Failover {
            xlb,
            connections,
            seconds,
        } => emit(&failover::run(&xlb, connections, seconds)),
        Cmd::Reliability {
            xlb,
            flow_table_size,
            connections,
            sustain_pps,
            seed,
        } => {
            let mut o = LoadFaultsOptions::default();
            if let Some(n) = flow_table_size {
                // The fill stays three times the table.
                o.fill.packets = u64::from(n) * 3;
                o.flow_table_size = n;
            }
            if let Some(n) = connections {
                o.connections = n;
            }
            if let Some(pps) = sustain_pps {
                // The same 20 s at most.
                o.sustain.packets = o.sustain.packets / o.sustain.rate_pps * pps;
                o.sustain.rate_pps = pps;
            }
            if let Some(s) = seed {
                o.seed = s;
            }
            emit(&reliability::run(&xlb, &o))
        }
        Cmd::Hold { prog, ifname } => {
            let name = if prog == "pass" {
                PROG_PASS
            } else {
                PROG_REFLECT
            };
            let mut aux = Aux::new(name)?;
            aux.prog_mut()
                .attach(&ifname, aya::programs::XdpMode::Driver)?;
            println!("ready");
            std::io::stdout().flush()?;
            // Detached when the process dies (the link's fd closes).
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
    }
}

fn main() -> ExitCode {
    match dispatch(Cli::parse().cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xlb-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
