//! `cargo xtask fuzz --time N`: differential fuzzing of the XDP programs (generated and
//! mutated frames through BPF_PROG_TEST_RUN, each result compared with the reference model of
//! docs/datapath.md; `xlb_testkit::fuzz`), run by the release `xlb-bench fuzz`. A random seed
//! unless `--seed` replays one; the last lines give frames tried and mismatches. Root needed.
//! `cargo xtask test` runs a bounded, fixed-seed run of the same fuzzer (200,000 frames).

use std::time::Duration;

use anyhow::{Result, bail};

use xlb_bench_data::reliability::FuzzSummary;

use crate::{cmd::is_root, toolchain::EbpfToolchain};

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
}

pub fn run(args: &Args) -> Result<()> {
    if !is_root() {
        bail!("`cargo xtask fuzz` loads XDP programs: run it as root (CAP_BPF)");
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
