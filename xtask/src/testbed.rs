//! `cargo xtask testbed up|status|down` and `cargo xtask demo`.
//!
//! The topology lives in one place, `xlb-testkit/src/testbed/` (the end-to-end tests
//! build it in-process); these commands drive it through xlb-testkit's `xlb-testbed` binary,
//! built here together with `xlb`. `up` records what it created in `target/testbed/state.json`; `down` removes exactly that.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Result, bail};
use nix::sys::signal::{SigHandler, Signal, signal};

use crate::{
    cmd::{is_root, run as run_cmd, workspace_root},
    setup,
    toolchain::EbpfToolchain,
};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
}

#[derive(clap::Subcommand)]
pub enum Action {
    /// Create the namespaces (client, LB, backends on a bridge), start the backends' servers,
    /// record everything in target/testbed/state.json.
    Up {
        /// Number of backends.
        #[arg(long, default_value_t = 3)]
        backends: usize,
        /// Also start the agent: with one LB, in its namespace with examples/demo.toml; with
        /// several, on every node with the dsr-l2 VIP 203.0.113.12:80, announced to the router.
        #[arg(long)]
        agent: bool,
        /// LB nodes. 1: the single-LB testbed; more: a router running BIRD in front of N nodes
        /// (each running BIRD), ECMP over BGP+BFD (dist/bird/).
        #[arg(long, default_value_t = 1)]
        lbs: usize,
    },
    /// What the state file records, and whether it still exists.
    Status,
    /// Remove what `up` created (processes, pins, namespaces, files).
    Down,
}

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Number of backends (at least 2).
    #[arg(long, default_value_t = 3)]
    backends: usize,
    /// LB nodes: more than 1 runs the multi-node demo (ECMP over BGP, one node killed).
    #[arg(long, default_value_t = 1)]
    lbs: usize,
}

fn state_file() -> PathBuf {
    workspace_root().join("target/testbed/state.json")
}

fn demo_config() -> PathBuf {
    workspace_root().join("examples/demo.toml")
}

/// Builds `xlb` and the testbed tool; returns their paths.
fn build_tools() -> Result<(PathBuf, PathBuf)> {
    let tc = EbpfToolchain::detect()?;
    let built = crate::build::with_ebpf(
        &tc,
        &[
            "--package",
            "lb-userspace",
            "--package",
            "xlb-testkit",
            "--bins",
        ],
    )?;
    Ok((built.executable("xlb")?, built.executable("xlb-testbed")?))
}

fn require_root(what: &str) -> Result<()> {
    if !is_root() {
        bail!(
            "`cargo xtask {what}` must run as root (network namespaces, XDP, bpffs); \
             e.g. `sudo -E env \"PATH=$PATH\" cargo xtask {what}`"
        );
    }
    Ok(())
}

pub fn run(args: &Args) -> Result<()> {
    require_root("testbed")?;
    let (xlb, tool) = build_tools()?;
    let state = state_file();
    let mut cmd = Command::new(&tool);
    match &args.action {
        Action::Up {
            backends,
            agent,
            lbs,
        } => {
            cmd.arg("up")
                .arg("--state")
                .arg(&state)
                .args(["--backends", &backends.to_string()])
                .args(["--lbs", &lbs.to_string()]);
            if *agent {
                cmd.arg("--xlb")
                    .arg(&xlb)
                    .arg("--agent-config")
                    .arg(demo_config());
            }
        }
        Action::Status => {
            cmd.arg("status").arg("--state").arg(&state);
        }
        Action::Down => {
            cmd.arg("down").arg("--state").arg(&state);
        }
    }
    run_cmd(&mut cmd)
}

pub fn demo(args: &DemoArgs) -> Result<()> {
    require_root("demo")?;
    setup::run()?;
    let (xlb, tool) = build_tools()?;
    let mut cmd = Command::new(&tool);
    cmd.arg("demo")
        .arg("--xlb")
        .arg(&xlb)
        .arg("--config")
        .arg(demo_config())
        .args(["--backends", &args.backends.to_string()])
        .args(["--lbs", &args.lbs.to_string()]);
    // Ctrl-C reaches the demo too (same process group); it cleans up and exits, so we wait for
    // it instead of dying first.
    set_sigint(SigHandler::SigIgn);
    let result = run_cmd(&mut cmd);
    set_sigint(SigHandler::SigDfl);
    result
}

fn set_sigint(disposition: SigHandler) {
    // SAFETY: only ignore or default, never a handler function, so no code runs in signal
    // context.
    if let Err(e) = unsafe { signal(Signal::SIGINT, disposition) } {
        eprintln!("testbed: cannot set the SIGINT disposition: {e}");
    }
}
