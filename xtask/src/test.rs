//! `cargo xtask test`: the test command of README and CI, and the only one that runs every tier:
//! the unit tests (what a plain `cargo test` runs, no root) and the privileged suites of the
//! `integration-tests` crate (XDP programs, bpffs, network namespaces), which the workspace
//! leaves out of its default members.
//!
//! setup (full, idempotent) -> `cargo fmt --check` -> clippy on the host crates -> clippy on
//! lb-ebpf for the BPF target -> `cargo test --no-fail-fast` (one failing test binary must not
//! hide the results of the others). A failed setup stops the run; after that every stage runs
//! even if an earlier one failed, and a summary ends the output. Root is required: the datapath
//! tests load XDP programs, and they fail rather than skip without privileges.

use std::time::Duration;

use anyhow::{Result, anyhow, bail};

use crate::{
    clippy,
    cmd::{cargo, is_root, run as run_cmd, timed},
    fmt, setup,
    toolchain::EbpfToolchain,
};

#[derive(clap::Args)]
pub struct Args {
    /// Extra arguments for `cargo test`, after `--`; e.g. `cargo xtask test -- -p lb-common`
    /// or `cargo xtask test -- --test datapath -- --nocapture`.
    #[arg(last = true)]
    pub cargo_test_args: Vec<String>,
}

/// True if `args` (cargo's own, before a `--`) pick packages; `--workspace` would override that.
fn selects_packages(args: &[String]) -> bool {
    args.iter()
        .take_while(|a| *a != "--")
        .any(|a| a == "--package" || a.starts_with("--package=") || a.starts_with("-p"))
}

struct Stage {
    name: &'static str,
    result: Result<()>,
    elapsed: Duration,
}

pub fn run(args: &Args) -> Result<()> {
    if !is_root() {
        bail!(
            "`cargo xtask test` must run as root: setup installs packages and mounts bpffs, and the \
             datapath tests load XDP programs (CAP_BPF, CAP_NET_ADMIN); nothing was run. \
             As root: `cargo xtask test` (e.g. `sudo -E env \"PATH=$PATH\" cargo xtask test`)"
        );
    }
    let mut stages = Vec::new();
    let mut stage = |name: &'static str, f: &mut dyn FnMut() -> Result<()>| {
        println!("\n==> xtask test: {name}");
        let (result, elapsed) = timed(f);
        if let Err(e) = &result {
            println!("==> xtask test: {name} FAILED: {e:#}");
        }
        let ok = result.is_ok();
        stages.push(Stage {
            name,
            result,
            elapsed,
        });
        ok
    };

    if stage("setup", &mut setup::run) {
        match EbpfToolchain::detect() {
            Ok(tc) => {
                stage("fmt --check", &mut fmt::check);
                stage("clippy (host)", &mut || clippy::host(&tc));
                stage("clippy (eBPF)", &mut || clippy::ebpf(&tc));
                stage("cargo test", &mut || {
                    let mut cmd = cargo();
                    cmd.args(["test", "--no-fail-fast"]);
                    if !selects_packages(&args.cargo_test_args) {
                        cmd.args(["--workspace", "--exclude", "lb-ebpf"]);
                    }
                    cmd.args(&args.cargo_test_args);
                    tc.configure_ebpf_build(&mut cmd);
                    run_cmd(&mut cmd)
                });
            }
            Err(e) => stages.push(Stage {
                name: "eBPF toolchain",
                result: Err(e),
                elapsed: Duration::ZERO,
            }),
        }
    }

    println!("\n==> xtask test: summary");
    for s in &stages {
        let verdict = if s.result.is_ok() { "ok" } else { "FAILED" };
        println!(
            "    {:<16} {verdict:<7} {:>7.1}s",
            s.name,
            s.elapsed.as_secs_f64()
        );
    }
    let failed: Vec<&str> = stages
        .iter()
        .filter(|s| s.result.is_err())
        .map(|s| s.name)
        .collect();
    if failed.is_empty() {
        println!("==> xtask test: all {} stages passed", stages.len());
        Ok(())
    } else {
        Err(anyhow!(
            "{} of {} stages failed: {}",
            failed.len(),
            stages.len(),
            failed.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::selects_packages;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn package_selection_is_seen_only_before_the_separator() {
        assert!(selects_packages(&strings(&["-p", "lb-common"])));
        assert!(selects_packages(&strings(&["-plb-common"])));
        assert!(selects_packages(&strings(&["--package=lb-common"])));
        assert!(!selects_packages(&strings(&[
            "--test", "datapath", "--", "-p"
        ])));
        assert!(!selects_packages(&strings(&[])));
    }
}
