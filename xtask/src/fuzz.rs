//! `cargo xtask fuzz --time N`: differential fuzzing of the XDP programs (generated and
//! mutated frames through BPF_PROG_TEST_RUN, each result compared with the reference model of
//! docs/datapath.md; `xlb_testkit::fuzz`), run by the release `xlb-bench fuzz`. A random seed
//! unless `--seed` replays one; the last lines give frames tried and mismatches. Root needed.
//! `cargo xtask test` runs a bounded, fixed-seed run of the same fuzzer (200,000 frames).
//!
//! `--host-time N` first runs the host-side targets (lb-userspace's `fuzz` module: config
//! file, API requests and handlers, continuity peer messages, netlink answers) for N seconds
//! in all, shared among them; `--host-only` runs only those, without root or eBPF. They run
//! as a debug build, so an arithmetic overflow is a failure as it is in `cargo test`, whose
//! own pass of them (a few hundred cases each, fixed seed) is the bounded run of
//! `cargo xtask test`.

use std::time::Duration;

use anyhow::{Result, bail};

use xlb_bench_data::reliability::FuzzSummary;

use crate::{
    cmd::{self, is_root},
    toolchain::EbpfToolchain,
};

#[derive(clap::Args)]
pub struct Args {
    /// Seconds to run the datapath fuzzer.
    #[arg(long, default_value_t = 60)]
    pub time: u64,
    /// Stop after this many frames (default: only the time bounds the run).
    #[arg(long)]
    pub frames: Option<u64>,
    /// Replay this seed (decimal or 0x-hex), as printed by an earlier run.
    #[arg(long)]
    pub seed: Option<String>,
    /// Seconds for the host-side targets (config, API, continuity, netlink), all together.
    #[arg(long)]
    pub host_time: Option<u64>,
    /// Only the host-side targets (no root, no eBPF), for --host-time or else --time seconds.
    #[arg(long)]
    pub host_only: bool,
}

pub fn run(args: &Args) -> Result<()> {
    if let Some(secs) = args.host_time.or(args.host_only.then_some(args.time)) {
        host(secs, args.seed.as_deref())?;
    }
    if args.host_only {
        return Ok(());
    }
    datapath(args)
}

/// The host-side targets for `secs` seconds; each prints its cases and the seed.
fn host(secs: u64, seed: Option<&str>) -> Result<()> {
    if secs == 0 {
        bail!("--host-time 0: give the seconds the host-side targets may run");
    }
    let seed = match seed {
        Some(s) => s.to_owned(),
        None => format!("{:#x}", random_seed()),
    };
    let mut cmd = cmd::cargo();
    cmd.args([
        "test",
        "--package",
        "lb-userspace",
        "--lib",
        "fuzz_",
        "--",
        "--nocapture",
        // One at a time, so the time given is the time taken.
        "--test-threads=1",
    ])
    .env("AYA_BUILD_SKIP", "1")
    .env("XLB_FUZZ_SECONDS", secs.to_string())
    .env("XLB_FUZZ_SEED", &seed)
    .env_remove("XLB_FUZZ_CASES");
    cmd::run(&mut cmd).map_err(|e| {
        e.context(format!(
            "a host-side fuzz target failed (above: the target, its smallest failing input and \
             its replay line); replay all with `cargo xtask fuzz --host-only --time {secs} \
             --seed {seed}`"
        ))
    })
}

/// A seed for a run nobody asked to replay: the clock and the process id, which differ
/// between runs (this picks inputs, it protects nothing).
fn random_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    (nanos ^ u64::from(std::process::id()).rotate_left(32)).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

fn datapath(args: &Args) -> Result<()> {
    if !is_root() {
        bail!(
            "`cargo xtask fuzz` loads XDP programs: run it as root (CAP_BPF), or add \
             --host-only for the host-side targets alone"
        );
    }
    let tc = EbpfToolchain::detect()?;
    let built = crate::build::with_ebpf(
        &tc,
        &["--release", "--package", "xlb-bench", "--bin", "xlb-bench"],
    )?;
    let mut cmd = std::process::Command::new(built.executable("xlb-bench")?);
    cmd.args(["fuzz", "--time", &args.time.to_string()]);
    if let Some(f) = args.frames {
        cmd.args(["--frames", &f.to_string()]);
    }
    if let Some(s) = &args.seed {
        cmd.args(["--seed", s]);
    }
    // The run ends by itself at --time; the margin covers loading programs and the last world.
    let limit = Duration::from_secs(args.time + 120);
    let f: FuzzSummary = crate::bench::run_json(&mut cmd, limit)?;
    println!("{}", serde_json::to_string_pretty(&f)?);
    let wrong = f.mismatches
        + f.invariant_violations
        + f.stats_mismatches
        + f.decap_mismatches
        + f.decap_invariant_violations;
    if wrong != 0 {
        bail!(
            "the programs and the model disagree on {wrong} results (above): replay with \
             `cargo xtask fuzz --seed {}`",
            f.seed
        );
    }
    Ok(())
}
