//! VIP announcement (`[announce]`) against a real kernel: the agent (`xlb run`) on a testbed
//! writes its VIP routes into a routing table of the LB namespace, read back here with
//! `ip route show table T proto P`, through health changes, a node drain, a `kill -9` and
//! restart, and `xlb stop --detach`.
//!
//! Each test builds its own testbed (unique names, pin directory, table) and removes it at the
//! end, also on failure. Needs root and bpffs: fails loudly rather than skip.

mod common;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{xlb, xlb_ok};
use lb_userspace::announce::DrainState;
use lb_userspace::api::StatusReport;
use xlb_testkit::testbed::{Mode, Options, Testbed, VipSpec, tail};

/// The protocol xlb writes its routes with (the default).
const PROTO: u8 = 200;

/// `[announce]` for this test: its own table, no hold-down so every change shows at once.
fn announce_table(table: u32, extra: &str) -> String {
    format!(
        "\n[announce]\nenabled = true\ntable = {table}\nprotocol = {PROTO}\nhold-down = \"0s\"\n{extra}"
    )
}

/// A testbed whose agent announces `vips` into `table`, every backend active.
fn announcing_testbed(tag: &str, table: u32, extra: &str, vips: &[VipSpec]) -> Testbed {
    let mut tb = Testbed::up(&Options::for_test(tag, 3));
    let text = tb.config("", vips) + &announce_table(table, extra);
    let config = tb.write_file("xlb.toml", &text);
    tb.start_agent(xlb(), &config);
    tb.wait_all_active(Duration::from_secs(15));
    tb
}

/// The destinations of the routes of `table` with xlb's protocol in namespace `ns`, both
/// families. Usable from any thread (`ip -n`).
fn routes(ns: &str, table: u32) -> BTreeSet<IpAddr> {
    let t = table.to_string();
    let p = PROTO.to_string();
    let mut out = BTreeSet::new();
    for family in ["-4", "-6"] {
        let o = Command::new("ip")
            .args([family, "-n", ns, "route", "show", "table", &t, "proto", &p])
            .output()
            .expect("running ip");
        // IPv6 tables exist only once they hold a route.
        if !o.status.success()
            && String::from_utf8_lossy(&o.stderr).contains("FIB table does not exist")
        {
            continue;
        }
        assert!(
            o.status.success(),
            "ip route show table {t} in {ns}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        for line in String::from_utf8_lossy(&o.stdout).lines() {
            let dst = line.split_whitespace().next().unwrap_or_default();
            let addr = dst.split('/').next().unwrap_or_default();
            out.insert(
                addr.parse()
                    .unwrap_or_else(|e| panic!("route line {line:?}: {e}")),
            );
        }
    }
    out
}

/// Polls the table (every 20 ms) until `done` holds; panics after `timeout` with the table,
/// the agent's status and its log.
fn wait_routes(
    tb: &Testbed,
    table: u32,
    what: &str,
    timeout: Duration,
    done: impl Fn(&BTreeSet<IpAddr>) -> bool,
) -> BTreeSet<IpAddr> {
    let deadline = Instant::now() + timeout;
    loop {
        let r = routes(&tb.lb.name, table);
        if done(&r) {
            return r;
        }
        if Instant::now() > deadline {
            let status = if tb.agent_pid().is_some() {
                tb.status().render_table()
            } else {
                "(no agent)".into()
            };
            panic!(
                "{what}: not reached within {timeout:?}\ntable {table}: {r:?}\nstatus:\n{status}\nagent log:\n{}",
                tail(&tb.agent_log_path(), 30)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether the status reports `addr` as announced.
fn announced(r: &StatusReport, addr: IpAddr) -> bool {
    r.announce
        .as_ref()
        .is_some_and(|a| a.addresses.iter().any(|s| s.addr == addr && s.announced))
}

#[test]
fn routes_follow_the_health_of_the_backends() {
    let table = 211;
    let v4 = VipSpec::tcp(Mode::Ipip, false);
    let v6 = VipSpec::tcp(Mode::Gue, true);
    let (a4, a6) = (v4.id().addr, v6.id().addr);
    let mut tb = announcing_testbed(
        "ann-health",
        table,
        "",
        &[v4.clone().only(&[0, 1]), v6.clone().only(&[2])],
    );
    let both = BTreeSet::from([a4, a6]);
    wait_routes(
        &tb,
        table,
        "both VIPs announced",
        Duration::from_secs(5),
        |r| *r == both,
    );
    let r = tb.status();
    assert!(
        announced(&r, a4) && announced(&r, a6),
        "{}",
        r.render_table()
    );
    // The shape BIRD learns: a host route on lo, nothing the host itself would forward by.
    let t = table.to_string();
    let v4_line = tb.lb.ip(&["-4", "route", "show", "table", &t]);
    assert!(
        v4_line.contains(&format!("{a4} dev lo proto {PROTO} scope link")),
        "{v4_line}"
    );
    let v6_line = tb.lb.ip(&["-6", "route", "show", "table", &t]);
    assert!(
        v6_line.contains(&format!("{a6} dev lo proto {PROTO}")),
        "{v6_line}"
    );

    // One of the IPv4 VIP's two backends fails: still ready, still announced.
    tb.stop_backend(0);
    tb.wait_status("backend 0 down", Duration::from_secs(10), |r| {
        r.vips.iter().any(|v| {
            v.id == v4.id()
                && v.backends
                    .iter()
                    .any(|b| b.addr == IpAddr::V4(tb.backends[0].v4) && b.ring_slots == 0)
        })
    });
    assert_eq!(routes(&tb.lb.name, table), both, "one backend left: kept");

    // Its last backend fails: withdrawn; the other VIP's address stays.
    tb.stop_backend(1);
    wait_routes(
        &tb,
        table,
        "IPv4 VIP withdrawn without backends",
        Duration::from_secs(10),
        |r| *r == BTreeSet::from([a6]),
    );
    let r = tb.status();
    assert!(!announced(&r, a4), "{}", r.render_table());
    let rendered = r.render_table();
    assert!(rendered.contains("min-healthy 1"), "{rendered}");

    // The IPv6 VIP's only backend fails too: the table is empty.
    tb.stop_backend(2);
    wait_routes(
        &tb,
        table,
        "everything withdrawn",
        Duration::from_secs(10),
        |r| r.is_empty(),
    );

    // They recover: both announced again.
    for i in 0..3 {
        tb.start_backend(i);
    }
    wait_routes(
        &tb,
        table,
        "both announced again",
        Duration::from_secs(10),
        |r| *r == both,
    );
}

#[test]
fn drain_node_withdraws_and_undrain_announces_again() {
    let table = 212;
    let vip = VipSpec::tcp(Mode::Ipip, false);
    let addr = vip.id().addr;
    let tb = announcing_testbed("ann-drain", table, "", &[vip]);
    let socket = tb.api_socket().display().to_string();
    wait_routes(&tb, table, "announced", Duration::from_secs(5), |r| {
        r.contains(&addr)
    });

    let out = xlb_ok(&["drain-node", "--socket", &socket]);
    wait_routes(&tb, table, "drain withdrew", Duration::from_secs(5), |r| {
        r.is_empty()
    });
    let status = xlb_ok(&["status", "--socket", &socket]);
    assert!(
        status.contains("node:       draining"),
        "drain-node said {out:?}; status:\n{status}"
    );
    let r = tb.status();
    assert!(
        matches!(
            r.announce.as_ref().map(|a| &a.node),
            Some(DrainState::Draining { .. })
        ),
        "{}",
        r.render_table()
    );
    assert!(!announced(&r, addr));
    // Still forwarding: the VIP keeps its backends in the maps.
    assert!(r.vips[0].backends.iter().all(|b| b.ring_slots > 0));

    xlb_ok(&["undrain-node", "--socket", &socket]);
    wait_routes(
        &tb,
        table,
        "undrain announced",
        Duration::from_secs(5),
        |r| r.contains(&addr),
    );
    let status = xlb_ok(&["status", "--socket", &socket]);
    assert!(status.contains("node:       active"), "{status}");
}

#[test]
fn kill_9_and_restart_never_withdraw_the_route() {
    let table = 213;
    let vip = VipSpec::tcp(Mode::Ipip, false);
    let addr = vip.id().addr;
    let mut tb = announcing_testbed("ann-restart", table, "", &[vip]);
    wait_routes(&tb, table, "announced", Duration::from_secs(5), |r| {
        r.contains(&addr)
    });

    // Samples the table every 20 ms over the whole kill and restart.
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = std::thread::spawn({
        let (stop, ns) = (stop.clone(), tb.lb.name.clone());
        move || {
            let mut samples = Vec::new();
            // Bounded: the test stops it long before.
            let deadline = Instant::now() + Duration::from_secs(120);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                samples.push(routes(&ns, table));
                std::thread::sleep(Duration::from_millis(20));
            }
            samples
        }
    });
    std::thread::sleep(Duration::from_millis(200));
    tb.kill_agent();
    std::thread::sleep(Duration::from_millis(500));
    let config = tb.work_dir.join("xlb.toml");
    tb.start_agent(xlb(), &config);
    tb.wait_all_active(Duration::from_secs(15));
    let (r, _) = tb.wait_status("restarted agent announces", Duration::from_secs(5), |r| {
        announced(r, addr)
    });
    // A while after the first reconcile, when a wrongly withdrawn route would have gone.
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.join().expect("sampler thread");

    assert!(samples.len() >= 20, "only {} samples", samples.len());
    let missing: Vec<usize> = samples
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.contains(&addr))
        .map(|(i, _)| i)
        .collect();
    assert!(
        missing.is_empty(),
        "route absent at {} of {} samples (first at #{:?})\nagent log:\n{}",
        missing.len(),
        samples.len(),
        missing.first(),
        tail(&tb.agent_log_path(), 30)
    );
    assert!(announced(&r, addr), "{}", r.render_table());
    assert_eq!(routes(&tb.lb.name, table), BTreeSet::from([addr]));
}

#[test]
fn stop_detach_withdraws_the_route() {
    let table = 214;
    let vip = VipSpec::tcp(Mode::Ipip, false);
    let addr = vip.id().addr;
    let mut tb = announcing_testbed("ann-detach", table, "withdraw-grace = \"1s\"\n", &[vip]);
    wait_routes(&tb, table, "announced", Duration::from_secs(5), |r| {
        r.contains(&addr)
    });
    let socket = tb.api_socket().display().to_string();
    let pin = tb.pin_dir().display().to_string();

    // Samples (route present, program attached) every 20 ms during the stop.
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = std::thread::spawn({
        let (stop, ns) = (stop.clone(), tb.lb.name.clone());
        move || {
            let mut samples = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(60);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let route = routes(&ns, table).contains(&addr);
                let link = Command::new("ip")
                    .args(["-n", &ns, "-d", "link", "show", "dev", "eth0"])
                    .output()
                    .expect("running ip");
                let attached = String::from_utf8_lossy(&link.stdout).contains("prog/xdp");
                samples.push((route, attached));
                std::thread::sleep(Duration::from_millis(20));
            }
            samples
        }
    });
    let started = Instant::now();
    let out = xlb_ok(&["stop", "--detach", "--socket", &socket, "--pin-dir", &pin]);
    let took = started.elapsed();
    // A few more samples after the command returned.
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.join().expect("sampler thread");
    assert_eq!(
        samples.first(),
        Some(&(true, true)),
        "announced and attached first"
    );
    assert_eq!(
        samples.last(),
        Some(&(false, false)),
        "both gone at the end"
    );
    assert!(
        !samples.contains(&(true, false)),
        "the program was detached while its route was still in place: {samples:?}"
    );
    let grace = samples.iter().filter(|s| **s == (false, true)).count();
    assert!(
        grace >= 10,
        "withdrawn only {grace} samples before the detach, not withdraw-grace: {samples:?}"
    );
    tb.wait_agent_exit(Duration::from_secs(15))
        .expect("the agent exits after `xlb stop --detach`");
    assert!(
        routes(&tb.lb.name, table).is_empty(),
        "`xlb stop --detach` ({out:?}) left {:?}",
        routes(&tb.lb.name, table)
    );
    // The withdrawal came withdraw-grace before the detach.
    assert!(took >= Duration::from_secs(1), "stopped in {took:?}: {out}");
    assert!(!tb.pin_dir().exists(), "pins removed: {out}");
}

/// A table that something else uses (a route of another protocol in it) is reported in
/// `xlb status` with the fix; the agent leaves that route alone and still announces its VIP.
#[test]
fn a_table_used_by_another_program_is_reported_and_its_route_left_alone() {
    let table = 215;
    let vip = VipSpec::tcp(Mode::Ipip, false);
    let addr = vip.id().addr;
    let mut tb = Testbed::up(&Options::for_test("ann-taken", 3));
    let t = table.to_string();
    // Documentation range, on lo, in a table no rule points at: nothing routes by it.
    tb.lb.ip(&[
        "route",
        "add",
        "198.51.100.250/32",
        "dev",
        "lo",
        "table",
        &t,
        "proto",
        "77",
    ]);
    let text = tb.config("", &[vip]) + &announce_table(table, "");
    let config = tb.write_file("xlb.toml", &text);
    tb.start_agent(xlb(), &config);
    tb.wait_all_active(Duration::from_secs(15));
    wait_routes(&tb, table, "announced", Duration::from_secs(5), |r| {
        r.contains(&addr)
    });
    let r = tb.status();
    let rendered = r.render_table();
    assert!(
        rendered.contains("PROBLEM: route of another program in this table: 198.51.100.250/32")
            && rendered.contains("use a table of xlb's own"),
        "{rendered}"
    );
    let all = tb.lb.ip(&["route", "show", "table", &t]);
    assert!(
        all.contains("198.51.100.250 dev lo proto 77"),
        "the other program's route is untouched: {all}"
    );
}
