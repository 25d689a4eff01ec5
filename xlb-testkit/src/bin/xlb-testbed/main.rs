//! The testbed of `xlb_testkit::testbed` as a command (what `cargo xtask testbed` and
//! `cargo xtask demo` run; root only):
//!
//! ```text
//! xlb-testbed up --state FILE [--backends N] [--lbs N] [--xlb PATH --agent-config TEMPLATE]
//! xlb-testbed status --state FILE
//! xlb-testbed down --state FILE
//! xlb-testbed demo --xlb PATH --config TEMPLATE [--backends N] [--lbs N]
//! ```
//!
//! `--lbs 1` (the default) is the single-LB testbed; more builds the multi-LB one
//! (`xlb_testkit::testbed::cluster`: a router with BIRD in front of N nodes), where `--xlb`
//! starts an agent on every node with the dsr-l2 VIP of the failover tests.
//!
//! `up` records what it created in the state file (and its work directory next to it);
//! `down` removes exactly that. The demo builds its own testbed and removes it when it ends,
//! fails or is interrupted (Ctrl-C).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use xlb_testkit::testbed::failover::announced_cluster;
use xlb_testkit::testbed::{ClusterOptions, Options, Resources, Testbed, failover_vip_note};

mod demo;
mod demo_multi;

fn usage() -> ExitCode {
    eprintln!(
        "usage: xlb-testbed up --state FILE [--backends N] [--lbs N] [--xlb PATH --agent-config TEMPLATE]\n\
         \x20      xlb-testbed status --state FILE\n\
         \x20      xlb-testbed down --state FILE\n\
         \x20      xlb-testbed demo --xlb PATH --config TEMPLATE [--backends N] [--lbs N]"
    );
    ExitCode::from(2)
}

struct Args {
    cmd: String,
    state: Option<PathBuf>,
    backends: usize,
    lbs: usize,
    xlb: Option<PathBuf>,
    config: Option<PathBuf>,
}

fn parse() -> Option<Args> {
    let mut it = std::env::args().skip(1);
    let mut a = Args {
        cmd: it.next()?,
        state: None,
        backends: 3,
        lbs: 1,
        xlb: None,
        config: None,
    };
    while let Some(flag) = it.next() {
        let value = it.next()?;
        match flag.as_str() {
            "--state" => a.state = Some(value.into()),
            "--backends" => a.backends = value.parse().ok()?,
            "--lbs" => a.lbs = value.parse().ok()?,
            "--xlb" => a.xlb = Some(value.into()),
            "--config" | "--agent-config" => a.config = Some(value.into()),
            _ => return None,
        }
    }
    Some(a)
}

fn main() -> ExitCode {
    let Some(a) = parse() else {
        return usage();
    };
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("xlb-testbed: needs root (network namespaces, XDP, bpffs)");
        return ExitCode::FAILURE;
    }
    let result = match (a.cmd.as_str(), &a.state) {
        ("up", Some(state)) if a.lbs > 1 => up_cluster(state, &a),
        ("up", Some(state)) => up(state, &a),
        ("status", Some(state)) => status(state),
        ("down", Some(state)) => down(state),
        ("demo", _) => match (&a.xlb, &a.config) {
            (Some(xlb), _) if a.lbs > 1 => demo_multi::run(xlb, a.lbs, a.backends),
            (Some(xlb), Some(config)) => demo::run(xlb, config, a.backends),
            _ => return usage(),
        },
        _ => return usage(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xlb-testbed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The prefix and work directory of a testbed `up` records in `state`, or why not: one is up.
fn fresh(state: &Path) -> Result<(String, PathBuf), String> {
    if state.exists() {
        return Err(format!(
            "{} exists: a testbed is up; `cargo xtask testbed down` first",
            state.display()
        ));
    }
    let prefix = format!("xlbtb-{}", std::process::id());
    let work_dir = state.parent().unwrap_or(Path::new(".")).join(&prefix);
    Ok((prefix, work_dir))
}

/// `title`, then the testbed's notes, as the first lines of what `up` prints.
fn heading(title: String, res: &Resources) -> Vec<String> {
    let mut lines = vec![title];
    for (k, v) in &res.notes {
        lines.push(format!("  {k:<10} {v}"));
    }
    lines
}

/// Leaves the testbed up (`persist` writes `state`) and prints `lines`.
fn persist_and_print(
    mut lines: Vec<String>,
    state: &Path,
    persist: impl FnOnce(&Path) -> std::io::Result<()>,
) -> Result<(), String> {
    lines.push(format!("  state:     {}", state.display()));
    persist(state).map_err(|e| format!("writing {}: {e}", state.display()))?;
    println!("{}", lines.join("\n"));
    Ok(())
}

fn up(state: &Path, a: &Args) -> Result<(), String> {
    let (prefix, work_dir) = fresh(state)?;
    let opts = Options {
        work_dir,
        prefix,
        backends: a.backends,
    };
    let mut tb = Testbed::up(&opts);
    let mut lines = heading(format!("testbed {} is up:", tb.prefix), tb.resources());
    lines.push(format!(
        "  run in a namespace:  nsenter --net=/run/netns/{}-client curl -s http://203.0.113.10/",
        tb.prefix
    ));
    if let (Some(xlb), Some(template)) = (&a.xlb, &a.config) {
        let text = std::fs::read_to_string(template)
            .map_err(|e| format!("{}: {e}", template.display()))?;
        let config = tb.write_file("xlb.toml", &tb.adapt_config(&text));
        tb.start_agent(xlb, &config);
        lines.push(format!(
            "  agent:     running in {}-lb, config {}, log {}",
            tb.prefix,
            config.display(),
            tb.agent_log_path().display()
        ));
        lines.push(format!(
            "  try:       {} status --socket {}",
            xlb.display(),
            tb.api_socket().display()
        ));
        lines.push(format!(
            "             {} inspect --pin-dir {} backends",
            xlb.display(),
            tb.pin_dir().display()
        ));
    }
    persist_and_print(lines, state, |s| tb.persist(s))
}

fn up_cluster(state: &Path, a: &Args) -> Result<(), String> {
    let (prefix, work_dir) = fresh(state)?;
    let opts = ClusterOptions {
        work_dir,
        prefix,
        lbs: a.lbs,
        backends: a.backends,
    };
    let c = match &a.xlb {
        Some(xlb) => announced_cluster(&opts, xlb),
        None => xlb_testkit::testbed::Cluster::up(&opts),
    };
    let mut lines = heading(
        format!("testbed {} is up ({} LB nodes):", c.prefix, a.lbs),
        c.resources(),
    );
    let vip = failover_vip_note();
    if a.xlb.is_some() {
        lines.push(format!(
            "  agents:    on every node, {vip}, announced by the agent ([announce], table 200)"
        ));
    } else {
        lines.push(
            "  agents:    none (BIRD runs on the router and every node); announce a VIP from a \
             node with\n             ip -n NODE_NS route add 203.0.113.12/32 dev lo table 200 proto 200"
                .into(),
        );
    }
    lines.push(format!(
        "  routes:    ip -n {}-router route show;  birdc -s {} show protocols",
        c.prefix,
        c.router_bird.socket().display()
    ));
    lines.push(format!(
        "  try:       nsenter --net=/run/netns/{}-client curl -s http://203.0.113.12/",
        c.prefix
    ));
    persist_and_print(lines, state, |s| c.persist(s))
}

/// The testbed recorded in `state`; `None` (said on stdout) when none is up.
fn load(state: &Path) -> Result<Option<Resources>, String> {
    match Resources::load(state) {
        Ok(r) => Ok(Some(r)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!("no testbed is up ({} does not exist)", state.display());
            Ok(None)
        }
        Err(e) => Err(format!("{}: {e}", state.display())),
    }
}

fn status(state: &Path) -> Result<(), String> {
    if let Some(r) = load(state)? {
        print!("{}", r.status());
    }
    Ok(())
}

fn down(state: &Path) -> Result<(), String> {
    let Some(r) = load(state)? else {
        return Ok(());
    };
    let problems = r.teardown();
    std::fs::remove_file(state).map_err(|e| format!("removing {}: {e}", state.display()))?;
    if problems.is_empty() {
        println!(
            "testbed {} removed ({} namespaces, {} processes, pins under {})",
            r.prefix,
            r.namespaces.len(),
            r.processes.len(),
            r.pin_root.as_deref().unwrap_or(Path::new("-")).display()
        );
        Ok(())
    } else {
        Err(format!("left behind: {}", problems.join("; ")))
    }
}
