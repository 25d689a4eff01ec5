//! Project automation: `cargo xtask <command>` (the alias lives in `.cargo/config.toml`).
//!
//! One module per subcommand; `cmd` holds the process helpers they share and `toolchain` the
//! choice of the toolchain that builds the eBPF object.

mod bench;
mod bench_charts;
mod bench_e2e;
mod bench_failover;
mod bench_key;
mod bench_reliability;
mod bench_report;
mod build;
mod clippy;
mod cmd;
mod fmt;
mod fuzz;
mod setup;
mod test;
mod testbed;
mod toolchain;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "xlb project automation", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what building and testing need (idempotent; root for packages and bpffs).
    Setup,
    /// Check the eBPF toolchain, build lb-userspace (with the embedded eBPF object), print paths.
    Build(build::Args),
    /// The test command of README and CI: setup, fmt check, clippy (host + eBPF), cargo test.
    Test(test::Args),
    /// Format the workspace (or only check it).
    Fmt(fmt::Args),
    /// Lint the host crates and the eBPF crate (for its BPF target) with warnings denied.
    Clippy,
    /// A testbed of network namespaces (client, LB, backends) to try xlb on (root).
    Testbed(testbed::Args),
    /// Setup, build, and show xlb balancing, failing over and recovering on a testbed (root).
    Demo(testbed::DemoArgs),
    /// Differential fuzzing of the XDP programs against the datapath model (root): `--time N`
    /// seconds, a random seed unless `--seed` replays one; `--host-time N` adds the host-side
    /// parser targets (config, API, peer messages, netlink), `--host-only` runs only those.
    Fuzz(fuzz::Args),
    /// Measure (root): per-packet cost, scale curves, control plane, end to end on a
    /// namespace testbed; writes target/bench/report.md, report.json and SVG charts.
    Bench(bench::Args),
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Setup => setup::run(),
        Command::Build(args) => build::run(&args),
        Command::Test(args) => test::run(&args),
        Command::Fmt(args) => fmt::run(&args),
        Command::Clippy => clippy::run(),
        Command::Testbed(args) => testbed::run(&args),
        Command::Demo(args) => testbed::demo(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Fuzz(args) => fuzz::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The cause chain, without the backtrace anyhow adds under RUST_BACKTRACE=1: the
            // failures here are a command's exit status, not a bug in xtask.
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory as _, Parser as _};

    use super::{Cli, Command};

    #[test]
    fn cli_definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn test_passes_everything_after_the_separator_to_cargo_test() {
        let cli = Cli::try_parse_from([
            "xtask",
            "test",
            "--",
            "-p",
            "lb-common",
            "--",
            "--nocapture",
        ])
        .expect("parses");
        let Command::Test(args) = cli.command else {
            panic!("not the test command");
        };
        assert_eq!(
            args.cargo_test_args,
            ["-p", "lb-common", "--", "--nocapture"]
        );
    }
}
