//! `cargo xtask demo`: xlb on a testbed, told as a story for someone who sees it the first time.
//! Bounded (a few hundred requests per step, a time limit on every wait); everything is removed
//! at the end, on failure and on Ctrl-C.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use lb_userspace::api::MapState;
use xlb_testkit::testbed::{
    CLIENT_V4, LB_V4, Mode, Options, Testbed, UDP_PORT, http_load, udp_ask,
};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

pub(crate) fn check() -> Result<(), String> {
    if INTERRUPTED.load(Ordering::Relaxed) {
        Err("interrupted: cleaning up".into())
    } else {
        Ok(())
    }
}

/// The demo testbed's prefix and work directory.
pub fn demo_names() -> (String, PathBuf) {
    let prefix = format!("xlbdemo-{}", std::process::id());
    let work_dir = std::env::temp_dir().join(&prefix);
    (prefix, work_dir)
}

/// Sleeps in small steps, stopping early on Ctrl-C.
fn pause(d: Duration) -> Result<(), String> {
    let end = Instant::now() + d;
    while Instant::now() < end {
        check()?;
        std::thread::sleep(Duration::from_millis(50));
    }
    check()
}

pub(crate) fn step(n: u32, title: &str) {
    // SAFETY: isatty has no preconditions.
    if unsafe { libc::isatty(1) } == 1 {
        println!("\n\x1b[1m== {n}. {title}\x1b[0m");
    } else {
        println!("\n== {n}. {title}");
    }
}

/// Runs `xlb ARGS` and prints what it prints, indented, under `$ xlb SHOWN`.
fn show_xlb(xlb: &Path, shown: &str, args: &[&str]) -> Result<(), String> {
    println!("$ xlb {shown}");
    let out = Command::new(xlb)
        .args(args)
        .output()
        .map_err(|e| format!("running xlb: {e}"))?;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        println!("    {line}");
    }
    if !out.status.success() {
        return Err(format!(
            "xlb {shown} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// One line per backend: a bar and the count.
fn bars(counts: &BTreeMap<String, usize>, names: &[String], failed: usize) {
    let total: usize = counts.values().sum::<usize>() + failed;
    for n in names {
        let c = counts.get(n).copied().unwrap_or(0);
        let width = (c * 40).checked_div(total).unwrap_or(0);
        println!(
            "    {n:<10} {:<40} {c:>4} ({:>3.0}%)",
            "#".repeat(width),
            c as f64 * 100.0 / total.max(1) as f64
        );
    }
    if failed > 0 {
        println!(
            "    {:<10} {:<40} {failed:>4}",
            "failed",
            "x".repeat(failed * 40 / total)
        );
    }
}

/// Ctrl-C and SIGTERM set a flag that [`check`] turns into an error (so the testbed is
/// dropped, and removed, on the way out).
pub(crate) fn catch_signals() {
    // SAFETY: installing an async-signal-safe handler (it only stores to an atomic).
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}

pub fn run(xlb: &Path, template: &Path, backends: usize) -> Result<(), String> {
    catch_signals();
    if backends < 2 {
        return Err("the demo needs at least 2 backends".into());
    }
    let started = Instant::now();
    let template_text =
        std::fs::read_to_string(template).map_err(|e| format!("{}: {e}", template.display()))?;

    println!(
        "xlb is a layer-4 load balancer: an XDP program on the LB's network interface sends each \
         packet\nfor a virtual IP (VIP) to one of several backends, chosen by consistent hashing \
         (Maglev).\nThe backends answer the client directly (direct server return); the agent \
         (`xlb run`) keeps the\nprogram's maps in step with the config and with health checks."
    );

    step(
        1,
        "A testbed of network namespaces (nothing outside them is touched)",
    );
    let (prefix, work_dir) = demo_names();
    let opts = Options {
        work_dir,
        prefix,
        backends,
    };
    let mut tb = Testbed::up(&opts);
    check()?;
    println!("    client    {CLIENT_V4:<16} sends requests to the VIPs, routed via the LB");
    println!("    lb        {LB_V4:<16} runs the xlb agent; XDP on its eth0");
    for b in &tb.backends {
        println!(
            "    {:<9} {:<16} HTTP on :80 and UDP on :{UDP_PORT}, both answer with its name",
            b.name,
            b.v4.to_string()
        );
    }
    println!(
        "    all on one Ethernet segment (a bridge). Namespaces {}-*, removed at the end.",
        tb.prefix
    );

    step(2, "Start the agent in the LB's namespace");
    let config = tb.write_file("xlb.toml", &tb.adapt_config(&template_text));
    println!(
        "    config: {} (from {})",
        config.display(),
        template.display()
    );
    tb.start_agent(xlb, &config);
    println!(
        "    `xlb run` started; it attached the XDP program and wrote the maps. Log: {}",
        tb.agent_log_path().display()
    );
    print!("    waiting for the health checks to bring the backends up ...");
    let t = Instant::now();
    tb.wait_all_active(Duration::from_secs(30));
    println!(" {:.1} s", t.elapsed().as_secs_f64());
    check()?;
    let socket = tb.api_socket().display().to_string();
    let pin = tb.pin_dir().display().to_string();
    show_xlb(xlb, "status", &["status", "--socket", &socket])?;

    step(3, "One request from the client");
    let vip: SocketAddr = (Mode::Ipip.vip(false), 80).into();
    let client_ns = format!("/run/netns/{}-client", tb.prefix);
    println!("$ nsenter --net={client_ns} curl -s http://{vip}/");
    let curl = Command::new("nsenter")
        .arg(format!("--net={client_ns}"))
        .args(["curl", "-s", "-m", "2", &format!("http://{vip}/")])
        .output();
    match curl {
        Ok(o) if o.status.success() => {
            print!("    {}", String::from_utf8_lossy(&o.stdout));
        }
        _ => {
            let r = tb
                .client
                .enter(move || xlb_testkit::testbed::http_get(vip, "/", Duration::from_secs(2)));
            match r {
                Ok(r) => println!(
                    "    (curl unavailable; xlb's test client got) {}",
                    r.backend
                ),
                Err((_, e)) => return Err(format!("request to {vip}: {e}")),
            }
        }
    }

    let names: Vec<String> = tb.backends.iter().map(|b| b.name.clone()).collect();
    step(
        4,
        "300 HTTP requests (new connections) to the VIP: how they spread",
    );
    let spread = |vip: SocketAddr, how: &str| {
        let t = tb
            .client
            .enter(move || http_load(vip, 300, 2, Duration::from_secs(30), &|_, _| {}));
        println!("    http://{vip}/  ({how})");
        bars(&t.by_backend, &names, t.failures.len());
        check()
    };
    spread(vip, "ipip: IP-in-IP to the backends")?;
    spread(
        (Mode::Gue.vip(true), 80).into(),
        "gue: IPv6 in UDP to the backends",
    )?;
    let vipu: SocketAddr = (Mode::DsrL2.vip(false), UDP_PORT).into();
    let counts = tb.client.enter(move || {
        let mut c: BTreeMap<String, usize> = BTreeMap::new();
        let mut failed = 0;
        for _ in 0..100 {
            match udp_ask(vipu, Duration::from_secs(1)) {
                Ok(r) => *c.entry(r.backend).or_default() += 1,
                Err(_) => failed += 1,
            }
        }
        (c, failed)
    });
    println!("    udp {vipu}  (dsr-l2: only the MAC is rewritten), 100 datagrams");
    bars(&counts.0, &names, counts.1);
    println!(
        "    The replies came straight from the backends (source address: the VIP), not via \
         the LB."
    );
    show_xlb(xlb, "inspect vips", &["inspect", "--pin-dir", &pin, "vips"])?;
    show_xlb(
        xlb,
        &format!("inspect backends tcp/{vip}"),
        &[
            "inspect",
            "--pin-dir",
            &pin,
            "backends",
            &format!("tcp/{vip}"),
            "--no-rates",
        ],
    )?;

    step(
        5,
        "backend-2 fails (its server is killed) while requests keep coming",
    );
    let victim = 1;
    let victim_name = tb.backends[victim].name.clone();
    let victim_addr = std::net::IpAddr::V4(tb.backends[victim].v4);
    let victim_addr6 = std::net::IpAddr::V6(tb.backends[victim].v6);
    let vip_id: lb_userspace::model::VipId = format!("tcp/{vip}").parse().unwrap();
    tb.stop_backend(victim);
    let killed = Instant::now();
    println!(
        "    {victim_name} stopped. The health check (HTTP /healthz every 1 s, down after 2 \
         failures)\n    will notice; until then new connections hashed to it fail."
    );
    let mut removed_after = None;
    for window in 0..16 {
        check()?;
        let t = tb
            .client
            .enter(move || http_load(vip, 60, 2, Duration::from_millis(500), &|_, _| {}));
        let removed = {
            let r = tb.status();
            r.vips.iter().any(|v| {
                v.id == vip_id
                    && v.backends
                        .iter()
                        .any(|b| b.addr == victim_addr && b.state == MapState::Down)
            })
        };
        let line: Vec<String> = names
            .iter()
            .map(|n| format!("{n} {:>2}", t.by_backend.get(n).copied().unwrap_or(0)))
            .collect();
        println!(
            "    t={:>4.1}s  {}  failed {:>2}{}",
            killed.elapsed().as_secs_f64(),
            line.join("  "),
            t.failures.len(),
            if removed && removed_after.is_none() {
                "   <- health check: removed from the ring"
            } else {
                ""
            }
        );
        if removed && removed_after.is_none() {
            removed_after = Some(killed.elapsed());
        }
        if let Some(at) = removed_after
            && killed.elapsed() > at + Duration::from_secs(1)
            && window >= 3
        {
            break;
        }
        pause(Duration::from_millis(100))?;
    }
    let Some(at) = removed_after else {
        return Err(format!(
            "{victim_name} was not removed within the demo's time"
        ));
    };
    println!(
        "    removed {:.1} s after it failed; new connections go to the others only, and flows \
         of the\n    healthy backends stay where they were (Maglev hands out the failed \
         backend's slots and\n    moves hardly any other).",
        at.as_secs_f64()
    );
    // The UDP check (500 ms timeout per probe) notices a little later.
    tb.wait_status("down on every VIP", Duration::from_secs(15), |r| {
        r.vips.iter().all(|v| {
            v.backends
                .iter()
                .filter(|b| b.addr == victim_addr || b.addr == victim_addr6)
                .all(|b| b.state == MapState::Down)
        })
    });
    show_xlb(xlb, "status", &["status", "--socket", &socket])?;

    step(6, "backend-2 comes back");
    tb.start_backend(victim);
    let t = Instant::now();
    tb.wait_all_active(Duration::from_secs(30));
    println!(
        "    back in the ring {:.1} s after its server restarted (2 good checks); it gets its old \
         slots.",
        t.elapsed().as_secs_f64()
    );
    let t = tb
        .client
        .enter(move || http_load(vip, 300, 2, Duration::from_secs(30), &|_, _| {}));
    bars(&t.by_backend, &names, t.failures.len());

    step(7, "Tear down");
    show_xlb(
        xlb,
        "stop --detach",
        &["stop", "--detach", "--socket", &socket, "--pin-dir", &pin],
    )?;
    tb.wait_agent_exit(Duration::from_secs(15));
    drop(tb);
    println!(
        "    namespaces, processes and pins removed. The demo took {:.0} s.",
        started.elapsed().as_secs_f64()
    );
    println!(
        "\nNext: `cargo xtask testbed up --agent` keeps such a testbed running for your own \
         experiments\n(`cargo xtask testbed status`, `cargo xtask testbed down`)."
    );
    Ok(())
}
