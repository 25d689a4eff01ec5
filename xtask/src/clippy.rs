//! `cargo xtask clippy`: lint the host crates, then lb-ebpf for its BPF target; warnings denied.

use anyhow::Result;

use crate::{
    cmd::{cargo, run as run_cmd},
    toolchain::EbpfToolchain,
};

pub fn run() -> Result<()> {
    let tc = EbpfToolchain::detect()?;
    // Run both so one report shows every lint.
    let host = host(&tc);
    let ebpf = ebpf(&tc);
    host.and(ebpf)
}

/// Every workspace crate but lb-ebpf, all targets (tests, examples, build scripts) on the host.
/// lb-userspace's build script still builds the eBPF object, hence the toolchain environment.
pub fn host(tc: &EbpfToolchain) -> Result<()> {
    let mut cmd = cargo();
    cmd.args([
        "clippy",
        "--workspace",
        "--exclude",
        "lb-ebpf",
        "--all-targets",
    ])
    .args(["--", "-D", "warnings"]);
    tc.configure_ebpf_build(&mut cmd);
    run_cmd(&mut cmd)
}

/// lb-ebpf's lib and bin for bpfel-unknown-none. Not `--all-targets`: a test harness needs std,
/// which the BPF target does not have.
pub fn ebpf(tc: &EbpfToolchain) -> Result<()> {
    let mut cmd = tc.command("cargo");
    cmd.args([
        "clippy",
        "--package",
        "lb-ebpf",
        "--target",
        "bpfel-unknown-none",
    ])
    .args(["-Z", "build-std=core", "--", "-D", "warnings"]);
    run_cmd(&mut cmd)
}
