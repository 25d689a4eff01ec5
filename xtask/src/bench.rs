//! `cargo xtask bench`: builds the release binaries, runs the measurements of `xlb-bench`
//! (per-packet cost, scale curves, control plane, memory), the end-to-end testbed
//! (`bench_e2e`), failover (`bench_failover`) and reliability (`bench_reliability`), then
//! writes `target/bench/report.md`, `report.json` and SVG charts (`bench_report`,
//! `bench_charts`). The drivers' output is parsed into the types of `xlb-bench-data`, the ones
//! `xlb-bench` prints. Needs root. Bounded: every stage has a time limit, the whole run takes a
//! few minutes; all traffic stays inside namespaces it creates and removes.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use serde::de::DeserializeOwned;
use xlb_bench_data::run::{Results, Run, Stage};

use crate::{
    bench_e2e, bench_failover, bench_reliability, bench_report,
    cmd::{display, is_root, workspace_root},
    toolchain::EbpfToolchain,
};

#[derive(clap::Args, Clone)]
pub struct Args {
    /// One-packet BPF_PROG_TEST_RUN calls per run (per-packet scenarios).
    #[arg(long, default_value_t = 1_000_000)]
    pub iterations: u64,
    /// Runs per scenario (the figure is the median over runs).
    #[arg(long, default_value_t = 5)]
    pub runs: u32,
    /// Calls per run for each point of the scale curves.
    #[arg(long, default_value_t = 200_000)]
    pub scale_iterations: u64,
    /// CPU the per-packet measurements are pinned to.
    #[arg(long, default_value_t = 1)]
    pub cpu: usize,
    /// Seconds per wrk / iperf3 / traffic-generator run.
    #[arg(long, default_value_t = 5)]
    pub duration: u32,
    /// Small iteration counts and short runs: a smoke test of the whole pipeline (its figures
    /// are not the published ones).
    #[arg(long)]
    pub quick: bool,
    /// Skip the end-to-end testbed.
    #[arg(long)]
    pub no_e2e: bool,
    /// Run only these stages (packet, scale, control, memory, e2e, failover, fuzz, reliability);
    /// repeatable.
    #[arg(
        long,
        value_parser = ["packet", "scale", "control", "memory", "e2e", "failover", "fuzz", "reliability"]
    )]
    pub only: Vec<String>,
}

/// Where the report goes: `<workspace>/target/bench`.
pub fn out_dir() -> PathBuf {
    workspace_root().join("target").join("bench")
}

pub struct Bins {
    pub xlb: PathBuf,
    pub bench: PathBuf,
}

fn build() -> Result<Bins> {
    let tc = EbpfToolchain::detect()?;
    let built = crate::build::with_ebpf(
        &tc,
        &[
            "--release",
            "--package",
            "lb-userspace",
            "--package",
            "xlb-bench",
            "--bins",
        ],
    )?;
    Ok(Bins {
        xlb: built.executable("xlb")?,
        bench: built.executable("xlb-bench")?,
    })
}

/// Runs `cmd` (stderr shown), killing it after `limit`; returns its stdout parsed as a `T`.
pub fn run_json<T: DeserializeOwned>(cmd: &mut Command, limit: Duration) -> Result<T> {
    let shown = display(cmd);
    eprintln!("$ {shown}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot start `{shown}`"))?;
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            bail!("`{shown}` took longer than {limit:?} and was killed");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = reader.join().unwrap_or_default();
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    serde_json::from_str(&out).with_context(|| {
        format!(
            "`{shown}` printed no {} document",
            std::any::type_name::<T>()
        )
    })
}

/// The stages run so far, and the ones `--only` asks for (none: all).
struct Stages<'a> {
    done: Vec<Stage>,
    only: &'a [String],
}

impl Stages<'_> {
    /// Runs stage `name` unless `only` leaves it out; records it, returns its result if it
    /// succeeded.
    fn run<T>(
        &mut self,
        name: &'static str,
        command: String,
        f: impl FnOnce() -> Result<T>,
    ) -> Option<T> {
        if !self.only.is_empty() && !self.only.iter().any(|o| o == name) {
            return None;
        }
        println!("\n==> xtask bench: {name}");
        let t = Instant::now();
        let result = f();
        if let Err(e) = &result {
            println!("==> xtask bench: {name} FAILED: {e:#}");
        }
        self.done.push(Stage {
            name: name.into(),
            command,
            seconds: t.elapsed().as_secs_f64(),
            error: result.as_ref().err().map(|e| format!("{e:#}")),
        });
        result.ok()
    }

    /// Stage `name`: `xlb-bench NAME ARGS`, its output parsed.
    fn driver<T: DeserializeOwned>(
        &mut self,
        bench: &Path,
        name: &'static str,
        args: &[String],
        limit: Duration,
    ) -> Option<T> {
        let argv: Vec<String> = std::iter::once(name.to_owned())
            .chain(args.iter().cloned())
            .collect();
        let command = display(&bench_cmd(bench, &argv));
        self.run(name, command, || {
            run_json(&mut bench_cmd(bench, &argv), limit)
        })
    }
}

fn bench_cmd(bench: &Path, args: &[String]) -> Command {
    let mut c = Command::new(bench);
    c.args(args);
    c
}

pub fn run(args: &Args) -> Result<()> {
    if !is_root() {
        bail!(
            "`cargo xtask bench` must run as root: it loads XDP programs, creates network \
             namespaces and runs servers in them; nothing was run"
        );
    }
    // The bench's own packages (HAProxy, nginx, wrk, iperf3) come only here:
    // `cargo xtask test` does not need them.
    crate::setup::run_for_bench()?;
    let mut a = args.clone();
    if a.quick {
        a.iterations = a.iterations.min(50_000);
        a.runs = a.runs.min(3);
        a.scale_iterations = a.scale_iterations.min(20_000);
        a.duration = a.duration.min(2);
    }
    let started = Instant::now();
    let out = out_dir();
    std::fs::create_dir_all(out.join("raw"))?;
    println!("==> xtask bench: build (release)");
    let bins = build()?;

    let mut stages = Stages {
        done: Vec::new(),
        only: &a.only,
    };
    let mut results = Results::default();
    let b = &bins.bench;
    let cpu = a.cpu.to_string();
    let machine = run_json(
        &mut bench_cmd(b, &["machine".into()]),
        Duration::from_secs(10),
    )?;

    // The per-packet stages share their arguments but for the iteration count.
    let per_packet_args = |iterations: u64| -> Vec<String> {
        let (iterations, runs) = (iterations.to_string(), a.runs.to_string());
        ["--cpu", &cpu, "--iterations", &iterations, "--runs", &runs]
            .map(String::from)
            .to_vec()
    };
    let secs = Duration::from_secs;
    results.packet = stages.driver(b, "packet", &per_packet_args(a.iterations), secs(240));
    results.scale = stages.driver(b, "scale", &per_packet_args(a.scale_iterations), secs(180));
    let reps = ["--reps".to_owned(), "10".to_owned()];
    results.control = stages.driver(b, "control", &reps, secs(90));
    results.memory = stages.driver(b, "memory", &[], secs(60));
    if !a.no_e2e {
        results.e2e = stages.run(
            "e2e",
            "testbed in network namespaces (see docs/performance.md)".into(),
            || bench_e2e::run(&bins, a.duration),
        );
    }
    results.failover = stages.run("failover", display(&bench_failover::command(&bins)), || {
        bench_failover::run(&bins)
    });
    // The reliability section's parts, each a stage of its own (bench_reliability): the
    // datapath fuzzer (60 s, a random seed the report names), then load with faults.
    let fuzz_args = ["--time".to_owned(), "60".to_owned()];
    results.fuzz = stages.driver(b, "fuzz", &fuzz_args, secs(180));
    results.load_faults = stages.run(
        "reliability",
        display(&bench_reliability::command(&bins)),
        || bench_reliability::run(&bins),
    );

    let total = started.elapsed().as_secs_f64();
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let invocation = format!("cargo xtask {}", argv.join(" "));
    let raw = Run {
        machine,
        invocation,
        quick: a.quick,
        total_seconds: total,
        stages: stages.done,
        results,
    };
    std::fs::write(
        out.join("raw").join("all.json"),
        serde_json::to_string_pretty(&raw)?,
    )?;
    bench_report::write(&raw, &out)?;
    println!(
        "\n==> xtask bench: done in {total:.0} s: {}",
        out.join("report.md").display()
    );
    let failed: Vec<&str> = raw
        .stages
        .iter()
        .filter(|s| s.error.is_some())
        .map(|s| s.name.as_str())
        .collect();
    if !failed.is_empty() {
        bail!("stages failed: {} (see the report)", failed.join(", "));
    }
    Ok(())
}
