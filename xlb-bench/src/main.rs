//! `xlb-bench`: the measuring half of `cargo xtask bench` (which builds it, runs its
//! subcommands, and writes the report). Each subcommand prints one JSON document on stdout and
//! its progress on stderr. Needs root (loads XDP programs).

use std::io::Write as _;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lb_common::map_names::{PROG_PASS, PROG_REFLECT};
use xlb_bench::{control, failover, fixture::Aux, live, packet, scale, sys};

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
    /// Attach `xlb_pass` or `xlb_reflect` to an interface (native mode) and hold it until
    /// killed; prints "ready" once attached.
    Hold {
        #[arg(long, value_parser = ["pass", "reflect"])]
        prog: String,
        #[arg(long)]
        ifname: String,
    },
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
                std::thread::sleep(std::time::Duration::from_secs(3600));
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
