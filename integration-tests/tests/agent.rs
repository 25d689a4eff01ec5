//! The agent (`xlb run`) against a real kernel: started on the LB's veth of a testbed
//! (`xlb_testkit::testbed`), driven through its config file, signals and CLI, checked
//! through the pinned maps (`AyaStore`, `xlb inspect --json`) and its status API at each step.
//!
//! Each test builds its own testbed (unique names and pin directory) and removes it at the end,
//! also on failure. Needs root and bpffs: fails loudly rather than skip.

mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::{
    backend_cli, backend_status, flow_entry, inspect, store, testbed_with_agent, vip_index,
    vip_row, xlb_cli, xlb_ok,
};
use lb_common::{Backend, LbConfig, VipKey, VipMeta, stats::Counter};
use lb_userspace::{
    api::{HealthStatus, MapState, StatusReport},
    maps::{AyaStore, MapStore},
    model::VipId,
};
use xlb_testkit::netns::enter_named;
use xlb_testkit::testbed::{self, CLIENT_V4, Mode, Testbed, VipSpec, http_load, udp_ask};

/// Everything the datapath reads, for "unchanged" comparisons.
#[derive(Debug, PartialEq)]
struct MapSnapshot {
    config: LbConfig,
    vips: Vec<(VipKey, VipMeta)>,
    rings: BTreeMap<u32, Vec<u32>>,
    backends: Vec<Backend>,
}

fn snapshot(s: &AyaStore) -> MapSnapshot {
    let mut vips = s.vips().unwrap();
    vips.sort_by_key(|(k, _)| *k);
    let rings = vips
        .iter()
        .filter(|(k, _)| k.proto != 0)
        .map(|(_, m)| (m.index, s.ring(m.index).unwrap()))
        .collect();
    MapSnapshot {
        config: s.config().unwrap(),
        vips,
        rings,
        backends: (1..s.max_backends())
            .map(|id| s.backend(id).unwrap())
            .collect(),
    }
}

/// Backend address -> id, per VIP.
fn ids(r: &StatusReport) -> BTreeMap<(VipId, IpAddr), u32> {
    r.vips
        .iter()
        .flat_map(|v| {
            v.backends
                .iter()
                .filter_map(move |b| b.id.map(|id| ((v.id, b.addr), id)))
        })
        .collect()
}

fn all_active(r: &StatusReport) -> bool {
    r.vips.iter().all(|v| {
        v.backends
            .iter()
            .all(|b| b.state == MapState::Active && b.ring_slots > 0)
    })
}

fn slots_of(ring: &[u32], id: u32) -> usize {
    ring.iter().filter(|s| **s == id).count()
}

#[test]
fn reload_by_sighup_and_by_cli_updates_the_maps_and_a_bad_config_changes_nothing() {
    let tcp = VipSpec::tcp(Mode::Ipip, false);
    let id = tcp.id();
    let tb = testbed_with_agent("agent-reload", "", &[tcp.clone().only(&[0, 1])]);
    let config = tb.work_dir.join("xlb.toml");
    let socket = tb.api_socket().display().to_string();
    let addr = |i: usize| IpAddr::V4(tb.backends[i].v4);
    let r0 = tb.status();
    assert_eq!(r0.vips.len(), 1);
    assert_eq!(r0.vips[0].backends.len(), 2);
    let ids0 = ids(&r0);

    // SIGHUP: a third backend and a second VIP (UDP over GUE, IPv6).
    let udp = VipSpec::udp(Mode::Gue, true);
    std::fs::write(&config, tb.config("", &[tcp.clone(), udp.clone()])).unwrap();
    tb.signal_agent(libc::SIGHUP);
    let (r1, _) = tb.wait_status("SIGHUP reload applied", Duration::from_secs(10), |r| {
        r.vips.len() == 2 && r.vips.iter().all(|v| v.backends.len() == 3) && all_active(r)
    });
    let ids1 = ids(&r1);
    for (k, v) in &ids0 {
        assert_eq!(ids1.get(k), Some(v), "{k:?} kept its backend id");
    }
    assert!(r1.agent.last_reload.as_ref().is_some_and(|l| l.ok));
    let row = vip_row(&tb, &udp.id());
    assert_eq!(row["mode"], "gue");
    assert_eq!(row["backends"]["active"], 3);
    assert_eq!(vip_row(&tb, &id)["backends"]["active"], 3);
    let dst = udp.socket_addr();
    let answer = tb
        .client
        .enter(move || udp_ask(dst, Duration::from_secs(2)));
    assert!(answer.unwrap().backend.starts_with("backend-"));

    // `xlb reload`: backend 0 leaves the TCP VIP, backend 1 weighs twice backend 2.
    std::fs::write(
        &config,
        tb.config("", &[tcp.clone().only(&[1, 2]).weight(1, 200), udp.clone()]),
    )
    .unwrap();
    let out = xlb_ok(&["reload", "--socket", &socket]);
    assert!(out.starts_with("reloaded"), "{out}");
    let r2 = tb.status();
    let tcp_backends: Vec<IpAddr> = r2
        .vips
        .iter()
        .find(|v| v.id == id)
        .unwrap()
        .backends
        .iter()
        .map(|b| b.addr)
        .collect();
    assert_eq!(tcp_backends, vec![addr(1), addr(2)]);
    let ring = store(&tb).ring(vip_index(&r2, &id)).unwrap();
    let gone = ids1[&(id, addr(0))];
    assert_eq!(slots_of(&ring, gone), 0, "the removed backend owns no slot");
    let (s1, s2) = (
        slots_of(&ring, ids1[&(id, addr(1))]),
        slots_of(&ring, ids1[&(id, addr(2))]),
    );
    assert_eq!(s1 + s2, ring.len(), "the ring is full");
    let share = s1 as f64 / ring.len() as f64;
    assert!(
        (share - 2.0 / 3.0).abs() < 0.01,
        "weight 200 vs 100: share {share:.4}"
    );
    assert_eq!(
        store(&tb).backend(gone).unwrap().state,
        lb_common::values::BACKEND_EMPTY,
        "the removed backend's entry is cleared"
    );

    // An invalid config is refused, by the CLI and by SIGHUP, and the maps stay as they are.
    let before = snapshot(&store(&tb));
    let bad = tb
        .config("", &[tcp.clone().weight(0, 99_999), udp.clone()])
        .replace("protocol = \"udp\"", "protocol = \"udp\"\nbogus-key = 1");
    std::fs::write(&config, bad).unwrap();
    let out = xlb_cli(&["reload", "--socket", &socket]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "bad reload accepted");
    assert!(err.contains("refused"), "{err}");
    tb.signal_agent(libc::SIGHUP);
    let (r3, _) = tb.wait_status("SIGHUP reload refused", Duration::from_secs(10), |r| {
        r.agent.last_reload.as_ref().is_some_and(|l| !l.ok)
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        snapshot(&store(&tb)),
        before,
        "maps changed by a refused reload"
    );
    assert_eq!(ids(&r3), ids(&r2));
    assert!(all_active(&r3));
    eprintln!(
        "refused: {}",
        r3.agent.last_reload.as_ref().unwrap().message
    );
}

#[test]
fn a_failed_backend_gives_up_its_ring_slots_and_gets_them_back_when_it_recovers() {
    let vip = VipSpec::tcp(Mode::Gue, true);
    let id = vip.id();
    let mut tb = testbed_with_agent("agent-fail", "", &[vip]);
    let r0 = tb.status();
    let index = vip_index(&r0, &id);
    let ring0 = store(&tb).ring(index).unwrap();
    let victim = IpAddr::V6(tb.backends[2].v6);
    let victim_id = backend_status(&r0, &id, victim).id.unwrap();

    tb.stop_backend(2);
    let (r1, _) = tb.wait_status("victim down", Duration::from_secs(10), |r| {
        backend_status(r, &id, victim).state == MapState::Down
    });
    let b = backend_status(&r1, &id, victim);
    assert_eq!(
        (b.health, b.ring_slots, b.id),
        (HealthStatus::Down, 0, Some(victim_id))
    );
    // Its slots went to the others; theirs stayed, but for Maglev's small disruption (the
    // maglev module's bound: at most 3% of the ring).
    let ring1 = store(&tb).ring(index).unwrap();
    let mut moved = 0;
    for (slot, (old, new)) in ring0.iter().zip(&ring1).enumerate() {
        if *old == victim_id {
            assert!(
                *new != victim_id && *new != 0,
                "slot {slot} not moved: {new}"
            );
        } else if old != new {
            moved += 1;
        }
    }
    assert!(
        moved * 100 <= ring0.len() * 3,
        "{moved} slots of healthy backends moved"
    );
    let row = vip_row(&tb, &id);
    assert_eq!(
        (
            row["backends"]["active"].as_u64(),
            row["backends"]["down"].as_u64()
        ),
        (Some(2), Some(1))
    );
    assert_eq!(
        store(&tb).backend(victim_id).unwrap().state,
        lb_common::values::BACKEND_DOWN
    );

    tb.start_backend(2);
    let (r2, _) = tb.wait_status("victim back", Duration::from_secs(10), all_active);
    assert_eq!(backend_status(&r2, &id, victim).id, Some(victim_id));
    assert_eq!(
        store(&tb).ring(index).unwrap(),
        ring0,
        "the same ring as before the failure"
    );
}

#[test]
fn drain_from_the_cli_keeps_flows_and_takes_the_backend_out_of_the_ring() {
    let vip = VipSpec::tcp(Mode::Ipip, false);
    let id = vip.id();
    let tb = testbed_with_agent("agent-drain", "", std::slice::from_ref(&vip));
    let r0 = tb.status();
    let index = vip_index(&r0, &id);
    let ring0 = store(&tb).ring(index).unwrap();
    let target = IpAddr::V4(tb.backends[0].v4);
    let target_id = backend_status(&r0, &id, target).id.unwrap();
    let dst = vip.socket_addr();
    // Some flows on every backend first (the flow table remembers them).
    let t = tb
        .client
        .enter(move || http_load(dst, 60, 1, Duration::from_secs(20), &|_, _| {}));
    assert!(t.failures.is_empty());

    let out = backend_cli(&tb, "drain", &id, target, &[]);
    assert!(out.contains("drained"), "{out}");
    let r1 = tb.status();
    let b = backend_status(&r1, &id, target);
    assert_eq!(
        (
            b.state,
            b.desired,
            b.ring_slots,
            b.effective_weight,
            b.health
        ),
        (
            MapState::Draining,
            MapState::Draining,
            0,
            0,
            HealthStatus::Up
        )
    );
    let ring1 = store(&tb).ring(index).unwrap();
    assert_eq!(slots_of(&ring1, target_id), 0);
    assert!(
        ring1.iter().all(|s| *s != 0),
        "the other backends fill the ring"
    );
    assert_eq!(vip_row(&tb, &id)["backends"]["draining"], 1);
    // Flows pinned to it stay valid.
    let flows = inspect(&tb, &["flows", "--backend", &target.to_string()]);
    let flows = flows["flows"].as_array().unwrap();
    assert!(!flows.is_empty(), "the earlier requests left flows on it");
    assert!(flows.iter().all(|f| f["valid"] == true), "{flows:?}");

    // New connections: its new-flow counter stands still, the others' grow.
    let new_flows = |tb: &Testbed| -> BTreeMap<u64, u64> {
        inspect(tb, &["backends", "--no-rates"])["backends"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| (b["id"].as_u64().unwrap(), b["new_flows"].as_u64().unwrap()))
            .collect()
    };
    let nf0 = new_flows(&tb);
    let t = tb
        .client
        .enter(move || http_load(dst, 100, 1, Duration::from_secs(20), &|_, _| {}));
    assert!(t.failures.is_empty());
    let nf1 = new_flows(&tb);
    for (bid, n) in &nf1 {
        if *bid == u64::from(target_id) {
            assert_eq!(*n, nf0[bid], "the drained backend got new flows");
        } else {
            assert!(*n > nf0[bid], "backend {bid} got no new flows");
        }
    }

    // Undrain: the same slots come back.
    backend_cli(&tb, "set-weight", &id, target, &["100"]);
    assert_eq!(store(&tb).ring(index).unwrap(), ring0);
    assert_eq!(
        backend_status(&tb.status(), &id, target).state,
        MapState::Active
    );
}

#[test]
fn kill_9_and_restart_adopt_the_maps_and_flows_while_packets_flow() {
    let vip = VipSpec::udp(Mode::Ipip, false);
    let id = vip.id();
    let mut tb = testbed_with_agent("agent-restart", "", std::slice::from_ref(&vip));
    let config = tb.work_dir.join("xlb.toml");
    let dst: SocketAddr = vip.socket_addr();
    let client = tb.client.name.clone();
    // 8 flows (sockets), each asking every 20 ms; every datagram must be answered.
    let drops = |tb: &Testbed| -> u64 {
        let s = store(tb).global_stats().unwrap();
        Counter::ALL
            .iter()
            .filter(|c| c.name().starts_with("drop"))
            .map(|c| s.counters[*c as usize])
            .sum()
    };
    let drops0 = drops(&tb);
    let packets0 = vip_row(&tb, &id)["packets"].as_u64().unwrap();
    let (sockets_ready_tx, sockets_ready_rx) = std::sync::mpsc::channel();
    let r0 = tb.status();
    let (results, flows_before, ports) = std::thread::scope(|s| {
        let stream = s.spawn(|| {
            enter_named(&client, || {
                let socks: Vec<UdpSocket> = (0..8)
                    .map(|_| {
                        let u = UdpSocket::bind(("0.0.0.0", 0)).unwrap();
                        u.connect(dst).unwrap();
                        u.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
                        u
                    })
                    .collect();
                let ports: Vec<u16> = socks
                    .iter()
                    .map(|u| u.local_addr().unwrap().port())
                    .collect();
                let mut answered = vec![Vec::new(); 8];
                let (mut lost, mut retried) = (Vec::new(), Vec::new());
                let mut sent = 0u64;
                let start = Instant::now();
                let mut round = 0;
                while round < 300 && start.elapsed() < Duration::from_secs(15) {
                    for (i, u) in socks.iter().enumerate() {
                        let mut buf = [0u8; 64];
                        // One retry: a datagram lost past the LB (the backend's stack or
                        // server) is not the LB's doing; the VIP counter below proves the LB
                        // forwarded every one.
                        let mut reply = None;
                        for attempt in 0..2 {
                            u.send(b"x").unwrap();
                            sent += 1;
                            match u.recv(&mut buf) {
                                Ok(n) => {
                                    reply = Some(n);
                                    break;
                                }
                                Err(e) if attempt == 0 => retried.push((i, round, e.to_string())),
                                Err(e) => lost.push((i, round, e.to_string())),
                            }
                        }
                        if let Some(n) = reply {
                            answered[i].push(String::from_utf8_lossy(&buf[..n]).trim().to_owned());
                        }
                    }
                    if round == 10 {
                        sockets_ready_tx.send(ports.clone()).unwrap();
                    }
                    round += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                (answered, lost, retried, round, sent)
            })
        });
        let ports: Vec<u16> = sockets_ready_rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap();
        let st = store(&tb);
        let flows_before: Vec<_> = ports
            .iter()
            .map(|p| flow_entry(&st, CLIENT_V4.into(), *p, &id).expect("flow remembered"))
            .collect();
        drop(st);
        tb.kill_agent();
        std::thread::sleep(Duration::from_millis(300));
        tb.start_agent(common::xlb(), &config);
        (stream.join().unwrap(), flows_before, ports)
    });
    let (answered, lost, retried, rounds, sent) = results;
    let logs = || {
        format!(
            "\nfirst agent:\n{}\nsecond agent:\n{}",
            testbed::tail(&tb.work_dir.join("agent-1.log"), 15),
            testbed::tail(&tb.agent_log_path(), 30)
        )
    };
    assert!(lost.is_empty(), "unanswered datagrams: {lost:?}{}", logs());
    // Every datagram went through the LB's program and was forwarded: none was dropped or
    // passed to the LB host while the agent was away.
    let forwarded = vip_row(&tb, &id)["packets"].as_u64().unwrap() - packets0;
    assert_eq!(
        forwarded,
        sent,
        "VIP packets forwarded vs. datagrams sent{}",
        logs()
    );
    if !retried.is_empty() {
        eprintln!("answered on the retry (lost after the LB): {retried:?}");
    }
    assert!(rounds >= 100, "only {rounds} rounds");
    // Each flow stayed on one backend throughout.
    for a in &answered {
        assert!(
            a.iter().all(|b| *b == a[0]),
            "a flow changed backend: {a:?}"
        );
    }
    let r1 = tb.wait_all_active(Duration::from_secs(10));
    assert_eq!(ids(&r1), ids(&r0), "backend ids adopted{}", logs());
    let st = store(&tb);
    for (p, before) in ports.iter().zip(&flows_before) {
        assert_eq!(
            flow_entry(&st, CLIENT_V4.into(), *p, &id).as_ref(),
            Some(before),
            "flow from port {p} kept{}",
            logs()
        );
    }
    assert_eq!(
        drops(&tb),
        drops0,
        "the datapath dropped packets: {}{}",
        inspect(&tb, &["stats"]),
        logs()
    );
    assert!(
        std::fs::read_to_string(tb.agent_log_path())
            .unwrap()
            .contains("adopted pinned XDP link"),
        "the new agent adopted the pinned link"
    );
}

/// `ip -d link show eth0` in the LB namespace names an XDP program.
fn xdp_attached(tb: &Testbed) -> bool {
    tb.lb
        .ip(&["-d", "link", "show", "dev", "eth0"])
        .contains("prog/xdp")
}

#[test]
fn stop_detach_detaches_the_program_and_removes_the_pins() {
    let vip = VipSpec::tcp(Mode::Ipip, false);
    let mut tb = testbed_with_agent("agent-stop", "", std::slice::from_ref(&vip));
    let socket = tb.api_socket().display().to_string();
    let pin = tb.pin_dir().display().to_string();
    assert!(xdp_attached(&tb));
    assert!(tb.pin_dir().join("link-eth0").exists());

    let out = xlb_ok(&["stop", "--detach", "--socket", &socket, "--pin-dir", &pin]);
    assert!(out.contains("detach"), "{out}");
    // The answer comes after the teardown: detached by the time the command returns.
    assert!(!xdp_attached(&tb), "XDP still attached after stop --detach");
    assert!(!tb.pin_dir().exists(), "pins left in {pin}");
    let status = tb
        .wait_agent_exit(Duration::from_secs(15))
        .expect("the agent exits after stop");
    assert!(status.success(), "{status}");
    assert!(
        !xlb_cli(&["inspect", "--pin-dir", &pin, "vips"])
            .status
            .success()
    );
    // The VIP is no longer served.
    let dst = vip.socket_addr();
    let r = tb
        .client
        .enter(move || testbed::http_get(dst, "/", Duration::from_secs(1)));
    assert!(r.is_err(), "the VIP still answers");
    // Again with no agent: nothing to do, still fine.
    let out = xlb_ok(&["stop", "--detach", "--socket", &socket, "--pin-dir", &pin]);
    assert!(out.contains("no agent running"), "{out}");
}
