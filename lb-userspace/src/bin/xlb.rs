//! `xlb`: the agent and the operator's CLI. Thin: parse arguments, dispatch, print errors.

use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, anyhow, bail};
use clap::{Parser, Subcommand};
use lb_userspace::{
    agent,
    api::{self, Request, Response},
    cli::{self, InspectCmd, doctor},
    config::{self, HostEnvironment},
    decap::{self, DecapOptions},
    maps::AyaStore,
    model::{ForwardMode, VipId, XdpMode},
    paths::{DEFAULT_API_SOCKET, DEFAULT_CONFIG, DEFAULT_DECAP_PIN_DIR, DEFAULT_PIN_DIR},
    pinning,
};

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
        #[arg(long, default_value = DEFAULT_API_SOCKET)]
        socket: PathBuf,
    },
    /// Drain a backend: no new flows, existing ones continue.
    Drain {
        vip: VipId,
        backend: IpAddr,
        #[arg(long, default_value = DEFAULT_API_SOCKET)]
        socket: PathBuf,
    },
    /// Set a backend's weight (0..=10000) until it leaves the config.
    SetWeight {
        vip: VipId,
        backend: IpAddr,
        weight: u32,
        #[arg(long, default_value = DEFAULT_API_SOCKET)]
        socket: PathBuf,
    },
    /// Add a backend to a VIP until the next reload.
    AddBackend {
        vip: VipId,
        backend: IpAddr,
        #[arg(long, default_value_t = 100)]
        weight: u32,
        #[arg(long, default_value = DEFAULT_API_SOCKET)]
        socket: PathBuf,
    },
    /// Remove a backend from a VIP until the next reload.
    RemoveBackend {
        vip: VipId,
        backend: IpAddr,
        #[arg(long, default_value = DEFAULT_API_SOCKET)]
        socket: PathBuf,
    },
    /// Withdraw this node's VIP routes ([announce]) and keep forwarding, so the routers move
    /// the traffic to the other nodes; `xlb status` says "drained" once no VIP packet arrives.
    /// Not kept across agent restarts.
    DrainNode {
        #[arg(long, default_value = DEFAULT_API_SOCKET)]
        socket: PathBuf,
    },
    /// End a node drain: the VIP routes are announced again as their VIPs allow.
    UndrainNode {
        #[arg(long, default_value = DEFAULT_API_SOCKET)]
        socket: PathBuf,
    },
    /// Make the agent re-read its config file (like SIGHUP).
    Reload {
        #[arg(long, default_value = DEFAULT_API_SOCKET)]
        socket: PathBuf,
    },
    /// Stop the agent. Forwarding continues unless --detach, which first withdraws the VIP
    /// routes ([announce]) and waits withdraw-grace, then detaches the program and removes the
    /// pinned maps (works with no agent running too).
    Stop {
        #[arg(long)]
        detach: bool,
        #[arg(long, default_value = DEFAULT_API_SOCKET)]
        socket: PathBuf,
        #[arg(long, default_value = DEFAULT_PIN_DIR)]
        pin_dir: PathBuf,
    },
    /// Backend hosts: strip xlb's ipip/gue encapsulation in XDP (no kernel tunnel module needed).
    Decap {
        #[command(subcommand)]
        cmd: DecapCmd,
    },
    /// Preflight of this host as a load balancer: kernel, bpffs, capabilities, XDP support of
    /// the interfaces, MTU headroom, rp_filter, the config, the pin directory and the agent.
    /// Prints OK / WARN / FAIL / SKIP per check with the fix; exits non-zero on any FAIL.
    ///
    /// As root, on an interface without an XDP program, it attaches a pass-through program in
    /// native mode and detaches it again: the real test of native XDP. Some NICs reset their
    /// queues when XDP is attached (a short traffic blip): --no-probe skips that.
    Doctor {
        /// The agent's config (default: /etc/xlb/xlb.toml if it exists).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Interface to check (repeat for several; default: the config's interfaces).
        #[arg(long = "iface", value_name = "IF")]
        ifaces: Vec<String>,
        /// Forwarding mode to check the MTU for (default: the config's VIPs).
        #[arg(long, value_enum)]
        mode: Option<ModeArg>,
        /// Print JSON with stable field names.
        #[arg(long)]
        json: bool,
        /// Never attach the native-XDP probe program.
        #[arg(long)]
        no_probe: bool,
    },
    /// Read the pinned maps directly (works with the agent down).
    Inspect {
        #[arg(long, default_value = DEFAULT_PIN_DIR, global = true)]
        pin_dir: PathBuf,
        #[command(subcommand)]
        cmd: InspectCmd,
    },
}

#[derive(Subcommand)]
enum DecapCmd {
    /// Attach (or update) the decap program on an interface; it stays after xlb exits.
    Attach {
        #[arg(long)]
        iface: String,
        /// The LB's outer source address for IPv4 tunnels (only its packets are stripped).
        #[arg(long)]
        lb_src_v4: Option<std::net::Ipv4Addr>,
        #[arg(long)]
        lb_src_v6: Option<std::net::Ipv6Addr>,
        /// GUE port (0: do not decapsulate GUE).
        #[arg(long, default_value_t = 6080)]
        gue_port: u16,
        #[arg(long, value_enum, default_value = "auto")]
        xdp_mode: XdpModeArg,
        #[arg(long, default_value = DEFAULT_DECAP_PIN_DIR)]
        pin_dir: PathBuf,
    },
    /// Detach it and remove its pins.
    Detach {
        #[arg(long, default_value = DEFAULT_DECAP_PIN_DIR)]
        pin_dir: PathBuf,
    },
    /// Its counters.
    Stats {
        #[arg(long, default_value = DEFAULT_DECAP_PIN_DIR)]
        pin_dir: PathBuf,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ModeArg {
    Ipip,
    Gue,
    DsrL2,
}

impl From<ModeArg> for ForwardMode {
    fn from(m: ModeArg) -> Self {
        match m {
            ModeArg::Ipip => ForwardMode::Ipip,
            ModeArg::Gue => ForwardMode::Gue,
            ModeArg::DsrL2 => ForwardMode::DsrL2,
        }
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum XdpModeArg {
    Auto,
    Native,
    Generic,
}

impl From<XdpModeArg> for XdpMode {
    fn from(m: XdpModeArg) -> Self {
        match m {
            XdpModeArg::Auto => XdpMode::Auto,
            XdpModeArg::Native => XdpMode::Native,
            XdpModeArg::Generic => XdpMode::Generic,
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("XLB_LOG")
        // netlink_proto warns at every overrun of the notification socket's buffer, which a
        // flood of kernel changes repeats many times a second; the agent counts them
        // (`xlb_netlink_events_total{kind="overrun"}`), logs the first, and re-resolves.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,netlink_proto=error"));
    // Colours only on a terminal: a log file or journald gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        // A log that cannot be written (disk full, closed pipe) loses the line; reporting that
        // on stderr, the very writer that failed, would panic in `eprintln!`.
        .log_internal_errors(false)
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
            // Not `eprintln!`, which panics when stderr cannot be written.
            let _ = writeln!(std::io::stderr(), "xlb: {e:#}");
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
            // The key is read at start: a bad one would stop the agent, so say it now.
            if let Some(c) = &v.config.continuity {
                lb_userspace::continuity::channel::PeerKey::load(&c.key_file)
                    .map_err(|e| anyhow!("continuity.key-file: {e}"))?;
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
        Cmd::DrainNode { socket } => ask(&socket, Request::DrainNode),
        Cmd::UndrainNode { socket } => ask(&socket, Request::UndrainNode),
        Cmd::Stop {
            detach,
            socket,
            pin_dir,
        } => {
            let msg = runtime()?.block_on(agent::stop(&socket, &pin_dir, detach))?;
            println!("{msg}");
            Ok(())
        }
        Cmd::Decap { cmd } => match cmd {
            DecapCmd::Attach {
                iface,
                lb_src_v4,
                lb_src_v6,
                gue_port,
                xdp_mode,
                pin_dir,
            } => {
                let msg = decap::attach(&DecapOptions {
                    iface,
                    lb_src_v4,
                    lb_src_v6,
                    gue_port,
                    pin_dir,
                    mode: xdp_mode.into(),
                })?;
                println!("{msg}");
                Ok(())
            }
            DecapCmd::Detach { pin_dir } => {
                decap::detach(&pin_dir)?;
                println!("decap detached, {} removed", pin_dir.display());
                Ok(())
            }
            DecapCmd::Stats { pin_dir } => {
                for (c, n) in decap::stats(&pin_dir)? {
                    println!("{:<24}{n:>16}", c.name());
                }
                Ok(())
            }
        },
        Cmd::Doctor {
            config,
            ifaces,
            mode,
            json,
            no_probe,
        } => {
            let opts = doctor::DoctorOptions {
                config,
                ifaces,
                mode: mode.map(Into::into),
                no_probe,
                bird: None,
            };
            let report = doctor::judge(&runtime()?.block_on(doctor::gather(&opts)));
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.render_text());
            }
            if !report.passed() {
                bail!("{} check(s) failed", report.summary.fail);
            }
            Ok(())
        }
        Cmd::Inspect { pin_dir, cmd } => {
            let store = AyaStore::from_pin_dir(&pinning::maps_dir(&pin_dir))?;
            let mut out = std::io::stdout().lock();
            cli::run(&store, &cmd, &mut out)
        }
    }
}
