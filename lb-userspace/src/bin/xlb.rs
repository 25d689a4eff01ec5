//! `xlb`: the agent and the operator's CLI. Thin: parse arguments, dispatch, print errors.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, anyhow, bail};
use clap::{Parser, Subcommand};
use lb_userspace::{
    agent,
    api::{self, Request, Response},
    cli::{self, InspectCmd},
    config::{self, HostEnvironment},
    maps::AyaStore,
    model::VipId,
    pinning,
};

const DEFAULT_CONFIG: &str = "/etc/xlb/xlb.toml";
const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/xlb";

#[derive(Parser)]
#[command(name = "xlb", version, about = "XDP layer-4 load balancer")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the agent: load and attach the XDP program and keep its maps in step with the config
    /// and the backends' health. Stopping it leaves forwarding running.
    Run {
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Validate a config file and print what is wrong (touches nothing).
    CheckConfig {
        #[arg(default_value = DEFAULT_CONFIG)]
        file: PathBuf,
    },
    /// Ask the running agent for desired vs. actual state.
    Status {
        #[arg(long)]
        json: bool,
        #[arg(long, default_value = api::DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Drain a backend: no new flows, existing ones continue.
    Drain {
        vip: VipId,
        backend: IpAddr,
        #[arg(long, default_value = api::DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Set a backend's weight (0..=10000) until it leaves the config.
    SetWeight {
        vip: VipId,
        backend: IpAddr,
        weight: u32,
        #[arg(long, default_value = api::DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Add a backend to a VIP until the next reload.
    AddBackend {
        vip: VipId,
        backend: IpAddr,
        #[arg(long, default_value_t = 100)]
        weight: u32,
        #[arg(long, default_value = api::DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Remove a backend from a VIP until the next reload.
    RemoveBackend {
        vip: VipId,
        backend: IpAddr,
        #[arg(long, default_value = api::DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Make the agent re-read its config file (like SIGHUP).
    Reload {
        #[arg(long, default_value = api::DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Stop the agent. Forwarding continues unless --detach, which also detaches the program
    /// and removes the pinned maps (works with no agent running too).
    Stop {
        #[arg(long)]
        detach: bool,
        #[arg(long, default_value = api::DEFAULT_SOCKET)]
        socket: PathBuf,
        #[arg(long, default_value = DEFAULT_PIN_DIR)]
        pin_dir: PathBuf,
    },
    /// Read the pinned maps directly (works with the agent down).
    Inspect {
        #[arg(long, default_value = DEFAULT_PIN_DIR, global = true)]
        pin_dir: PathBuf,
        #[command(subcommand)]
        cmd: InspectCmd,
    },
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("XLB_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Sends one request to the agent and prints the answer.
fn ask(socket: &Path, req: Request) -> anyhow::Result<()> {
    match runtime()?.block_on(api::call(socket, &req))? {
        Response::Ok { message } => {
            println!("{message}");
            Ok(())
        }
        Response::Error { message } => Err(anyhow!(message)),
        Response::Status(_) => bail!("unexpected status answer"),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match dispatch(cli.cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xlb: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Run { config } => runtime()?.block_on(agent::run(&config)),
        Cmd::CheckConfig { file } => {
            let v = config::load(&file, &HostEnvironment).map_err(|e| anyhow!("{e}"))?;
            for w in &v.warnings {
                println!("warning: {w}");
            }
            println!(
                "{}: OK ({} VIPs, {} backends)",
                file.display(),
                v.config.vips.len(),
                v.config
                    .vips
                    .iter()
                    .map(|vip| vip.backends.len())
                    .sum::<usize>()
            );
            Ok(())
        }
        Cmd::Status { json, socket } => {
            match runtime()?.block_on(api::call(&socket, &Request::Status))? {
                Response::Status(report) => {
                    if json {
                        println!("{}", serde_json::to_string_pretty(&report)?);
                    } else {
                        print!("{}", report.render_table());
                    }
                    Ok(())
                }
                Response::Error { message } => Err(anyhow!(message)),
                Response::Ok { message } => bail!("unexpected answer: {message}"),
            }
        }
        Cmd::Drain {
            vip,
            backend,
            socket,
        } => ask(&socket, Request::Drain { vip, addr: backend }),
        Cmd::SetWeight {
            vip,
            backend,
            weight,
            socket,
        } => ask(
            &socket,
            Request::SetWeight {
                vip,
                addr: backend,
                weight,
            },
        ),
        Cmd::AddBackend {
            vip,
            backend,
            weight,
            socket,
        } => ask(
            &socket,
            Request::AddBackend {
                vip,
                addr: backend,
                weight,
            },
        ),
        Cmd::RemoveBackend {
            vip,
            backend,
            socket,
        } => ask(&socket, Request::RemoveBackend { vip, addr: backend }),
        Cmd::Reload { socket } => ask(&socket, Request::Reload),
        Cmd::Stop {
            detach,
            socket,
            pin_dir,
        } => {
            let msg = runtime()?.block_on(agent::stop(&socket, &pin_dir, detach))?;
            println!("{msg}");
            Ok(())
        }
        Cmd::Inspect { pin_dir, cmd } => {
            let store = AyaStore::from_pin_dir(&pinning::maps_dir(&pin_dir))?;
            let mut out = std::io::stdout().lock();
            cli::run(&store, &cmd, &mut out)
        }
    }
}
