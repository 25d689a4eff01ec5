//! `cargo xtask fmt [--check]`: rustfmt over the whole workspace (lb-ebpf included).

use anyhow::Result;

use crate::cmd::{cargo, run as run_cmd};

#[derive(clap::Args)]
pub struct Args {
    /// Only check; fail if a file would change.
    #[arg(long)]
    check: bool,
}

pub fn run(args: &Args) -> Result<()> {
    if args.check {
        check()
    } else {
        run_cmd(cargo().args(["fmt", "--all"]))
    }
}

pub fn check() -> Result<()> {
    run_cmd(cargo().args(["fmt", "--all", "--", "--check"]))
}
