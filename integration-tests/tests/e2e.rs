//! End to end: the `xlb` agent on a testbed of network namespaces (client, LB, backends on one
//! bridge; `xlb_testkit::testbed`), real TCP (HTTP) and UDP from the client to the
//! VIPs, answered by real servers on the backends.
//!
//! Each test builds its own testbed (unique names: tests run in parallel), and everything is
//! removed at the end, also on failure. Needs root and bpffs (`cargo xtask setup`): the tests
//! fail loudly rather than skip. Every load loop is bounded in count and time; the only timing
//! assertion is the removal bound a health check promises (interval x fall, plus 1 s of slack).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{
    backend_cli, backend_status, flow_entry, inspect, store, testbed_with_agent, vip_index, vip_row,
};
use lb_common::stats::{Counter, DecapCounter};
use lb_userspace::{
    api::MapState,
    decap,
    maps::{AyaStore, MapStore},
};
use xlb_testkit::netns::enter_named;
use xlb_testkit::testbed::{
    self, CLIENT_V4, CLIENT_V6, Capture, LB_MAC, LB_V4, LB_V6, Mode, Outcome, Testbed, VipSpec,
    http_get, http_load, udp_ask,
};

/// Names of the backends.
fn names(tb: &Testbed) -> BTreeSet<String> {
    tb.backends.iter().map(|b| b.name.clone()).collect()
}

fn decap_count(tb: &Testbed, i: usize, c: DecapCounter) -> u64 {
    decap::stats(&tb.decap_pin_dir(i))
        .unwrap()
        .into_iter()
        .find(|(k, _)| *k == c)
        .unwrap()
        .1
}

#[test]
fn tcp_and_udp_in_every_mode_and_family_are_answered_straight_by_the_backends() {
    let mut vips = Vec::new();
    for mode in Mode::ALL {
        for v6 in [false, true] {
            vips.push(VipSpec::tcp(mode, v6));
            vips.push(VipSpec::udp(mode, v6));
        }
    }
    let tb = testbed_with_agent("e2e-modes", "", &vips);
    let before: Vec<u64> = vips
        .iter()
        .map(|v| vip_row(&tb, &v.id())["packets"].as_u64().unwrap())
        .collect();
    let decap_counters = [DecapCounter::DecapIpip, DecapCounter::DecapGue];
    let decap_before: Vec<[u64; 2]> = (0..3)
        .map(|i| decap_counters.map(|c| decap_count(&tb, i, c)))
        .collect();

    let capture = Capture::start(&tb.client, "eth0");
    // Per VIP: (client port, backend name) of every answer.
    let answers: Vec<Vec<(u16, String)>> = tb.client.enter({
        let vips = vips.clone();
        move || {
            vips.iter()
                .map(|v| {
                    (0..30)
                        .map(|i| {
                            let r = if v.udp {
                                udp_ask(v.socket_addr(), Duration::from_secs(2))
                                    .unwrap_or_else(|e| panic!("{} datagram {i}: {e}", v.id()))
                            } else {
                                http_get(v.socket_addr(), "/", Duration::from_secs(2))
                                    .unwrap_or_else(|(_, e)| panic!("{} request {i}: {e}", v.id()))
                            };
                            (r.local.port(), r.backend)
                        })
                        .collect()
                })
                .collect()
        }
    });
    let frames = capture.finish();

    let mac_of: BTreeMap<String, [u8; 6]> = tb
        .backends
        .iter()
        .map(|b| (b.name.clone(), b.mac))
        .collect();
    for ((v, answers), before) in vips.iter().zip(&answers).zip(&before) {
        let id = v.id();
        let seen: BTreeSet<String> = answers.iter().map(|(_, b)| b.clone()).collect();
        assert_eq!(seen, names(&tb), "{id}: every backend answers some of 30");
        // DSR: every reply frame comes from the VIP address (a connected UDP socket and a TCP
        // connection to the VIP accept nothing else), sent by the backend that answered (its
        // MAC), never by the LB.
        for (port, backend) in answers {
            let replies: Vec<_> = frames
                .iter()
                .filter(|f| {
                    !f.outgoing && f.src == id.addr && f.sport == id.port && f.dport == *port
                })
                .collect();
            assert!(
                !replies.is_empty(),
                "{id}: no reply frame to port {port} captured"
            );
            for f in replies {
                assert_eq!(
                    f.src_mac, mac_of[backend],
                    "{id}: reply to port {port} not sent by {backend} itself"
                );
            }
        }
        // The LB counted exactly the packets the client sent to the VIP: the replies did not
        // go through it.
        let sent = frames
            .iter()
            .filter(|f| f.outgoing && f.dst == id.addr && f.dport == id.port)
            .count() as u64;
        let counted = vip_row(&tb, &id)["packets"].as_u64().unwrap() - before;
        assert_eq!(
            counted, sent,
            "{id}: LB packets vs. client packets to the VIP"
        );
    }
    let vip_addrs = testbed::all_vips();
    assert!(
        !frames
            .iter()
            .any(|f| f.src_mac == LB_MAC && vip_addrs.contains(&f.src)),
        "a frame from a VIP address came from the LB"
    );
    // Tunnelled modes: each backend's decap program unwrapped both kinds of tunnel.
    for (i, before) in decap_before.iter().enumerate() {
        for (c, before) in decap_counters.iter().zip(before) {
            assert!(
                decap_count(&tb, i, *c) > *before,
                "backend {i}: decap counter {c:?} did not move"
            );
        }
    }
}

/// 3000 connections per VIP: the 10% bound is over 3 standard deviations of the binomial
/// spread (sd 26 of 1000), so the test does not flake, while a skewed ring fails it.
#[test]
fn equal_weight_backends_share_3000_connections_within_10_percent_of_even() {
    let vips = [
        VipSpec::tcp(Mode::Ipip, false),
        VipSpec::tcp(Mode::DsrL2, true),
    ];
    let tb = testbed_with_agent("e2e-spread", "", &vips);
    for v in &vips {
        let dst = v.socket_addr();
        let t = tb
            .client
            .enter(move || http_load(dst, 3000, 2, Duration::from_secs(90), &|_, _| {}));
        assert!(
            t.failures.is_empty(),
            "{}: failures {:?}",
            v.id(),
            t.failures
        );
        assert_eq!(t.ok(), 3000, "{}: bounded by time before count", v.id());
        let even = 3000.0 / 3.0;
        for (name, n) in &t.by_backend {
            let off = (*n as f64 - even).abs() / even;
            assert!(
                off <= 0.10,
                "{}: {name} got {n} of 3000 ({:.1}% off even): {:?}",
                v.id(),
                off * 100.0,
                t.by_backend
            );
        }
        assert_eq!(t.by_backend.len(), 3, "{}: {:?}", v.id(), t.by_backend);
        eprintln!("{}: {:?} in {:?}", v.id(), t.by_backend, t.elapsed);
    }
}

#[test]
fn a_stopped_backend_is_removed_within_interval_times_fall_and_no_other_connection_fails() {
    // FAST_HTTP_CHECK: interval 500 ms, fall 2.
    let bound = Duration::from_millis(500 * 2) + Duration::from_secs(1);
    let vip = VipSpec::tcp(Mode::Ipip, false);
    let id = vip.id();
    let mut tb = testbed_with_agent("e2e-fail", "", std::slice::from_ref(&vip));
    let victim = 1;
    let victim_addr = IpAddr::V4(tb.backends[victim].v4);
    let before = tb.status();
    let victim_id = backend_status(&before, &id, victim_addr).id.unwrap();
    let index = vip_index(&before, &id);
    let ring_before = store(&tb).ring(index).unwrap();

    // Requests run throughout; each failure's flow-table entry is read at once (before the
    // port can be reused), to learn which backend it went to.
    let failed_to = Mutex::new(Vec::new());
    let maps_dir = tb.maps_dir();
    let dst = vip.socket_addr();
    let client = tb.client.name.clone();
    let (tally, killed, removed) = std::thread::scope(|s| {
        let load = s.spawn(|| {
            enter_named(&client, || {
                let st = Mutex::new(AyaStore::from_pin_dir(&maps_dir).unwrap());
                http_load(dst, 20_000, 2, Duration::from_secs(6), &|o, _| {
                    if let Outcome::Failed(port, e) = o {
                        let at = Instant::now();
                        let entry = flow_entry(&st.lock().unwrap(), CLIENT_V4.into(), port, &id);
                        failed_to.lock().unwrap().push((
                            port,
                            e.to_string(),
                            entry.map(|e| e.backend_id),
                            at,
                        ));
                    }
                })
            })
        });
        std::thread::sleep(Duration::from_secs(1));
        let killed = Instant::now();
        tb.stop_backend(victim);
        let (_, removed) = tb.wait_status("victim out of the ring", bound * 3, |r| {
            let b = backend_status(r, &id, victim_addr);
            b.state == MapState::Down && b.ring_slots == 0
        });
        (load.join().unwrap(), killed, removed)
    });

    let took = removed.duration_since(killed);
    assert!(
        took <= bound,
        "removed {took:?} after the stop, bound interval x fall + 1 s = {bound:?}"
    );
    let failed_to = failed_to.into_inner().unwrap();
    assert_eq!(failed_to.len(), tally.failures.len());
    for (port, e, backend, at) in &failed_to {
        assert_eq!(
            *backend,
            Some(victim_id),
            "connection from port {port} failed ({e}) {:?} after the stop but went to backend \
             id {backend:?}, not the stopped one ({victim_id}); removal {took:?} after the stop",
            at.saturating_duration_since(killed)
        );
        assert!(*at >= killed, "a failure before the stop: {e}");
    }
    let others: usize = tally
        .by_backend
        .iter()
        .filter(|(n, _)| **n != tb.backends[victim].name)
        .map(|(_, c)| c)
        .sum();
    assert!(
        others > 0 && tally.sent > 100,
        "too little traffic: {tally:?}"
    );
    eprintln!(
        "removed after {took:?}; {} requests, {} failed (all to the stopped backend): {:?}",
        tally.sent,
        failed_to.len(),
        tally.by_backend
    );

    // The maps: the victim is down with no slots; its slots moved, the others' stayed but for
    // Maglev's small disruption (at most 3% of the ring, the maglev module's bound).
    let after = tb.status();
    let ring_after = store(&tb).ring(index).unwrap();
    let mut moved = 0;
    for (slot, (old, new)) in ring_before.iter().zip(&ring_after).enumerate() {
        if *old == victim_id {
            assert_ne!(*new, victim_id, "slot {slot} still on the victim");
        } else if old != new {
            moved += 1;
        }
    }
    assert!(
        moved * 100 <= ring_before.len() * 3,
        "{moved} slots of live backends moved"
    );
    assert_eq!(
        backend_status(&after, &id, victim_addr).id,
        Some(victim_id),
        "same id"
    );
    assert_eq!(
        backend_status(&after, &id, victim_addr).health,
        lb_userspace::api::HealthStatus::Down
    );
}

#[test]
fn a_drained_backend_finishes_its_long_connections_and_gets_no_new_ones() {
    let vip = VipSpec::tcp(Mode::Ipip, false);
    let id = vip.id();
    let tb = testbed_with_agent("e2e-drain", "", std::slice::from_ref(&vip));
    let dst = vip.socket_addr();

    // 12 long-lived connections (a line every 100 ms for 4 s), across the backends.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<String>();
    let streams: Vec<_> = (0..12)
        .map(|_| {
            let ready_tx = ready_tx.clone();
            let path = format!("/var/run/netns/{}", tb.client.name);
            std::thread::spawn(move || -> Result<(String, usize), String> {
                let ns = std::fs::File::open(&path).unwrap();
                // SAFETY: setns on this thread only.
                assert_eq!(
                    unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) },
                    0
                );
                let mut s = TcpStream::connect_timeout(&dst, Duration::from_secs(2))
                    .map_err(|e| e.to_string())?;
                s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
                write!(s, "GET /stream?secs=4 HTTP/1.0\r\n\r\n").unwrap();
                let mut r = BufReader::new(s);
                let mut line = String::new();
                // Header lines, then the first body line names the backend.
                loop {
                    line.clear();
                    r.read_line(&mut line).map_err(|e| e.to_string())?;
                    if line == "\r\n" {
                        break;
                    }
                }
                line.clear();
                r.read_line(&mut line).map_err(|e| e.to_string())?;
                let backend = line.split_whitespace().next().unwrap_or("").to_owned();
                ready_tx.send(backend.clone()).unwrap();
                let mut rest = String::new();
                r.read_to_string(&mut rest).map_err(|e| e.to_string())?;
                let lines = rest.lines().count();
                if !rest.ends_with("done\n") {
                    return Err(format!("{backend}: stream cut short: {rest:?}"));
                }
                Ok((backend, lines))
            })
        })
        .collect();
    let first: Vec<String> = (0..12)
        .map(|_| {
            ready_rx
                .recv_timeout(Duration::from_secs(5))
                .expect("long-lived connection established")
        })
        .collect();
    let target = first[0].clone();
    let target_addr = IpAddr::V4(tb.backends[tb.backend_index(&target)].v4);
    let on_target = first.iter().filter(|b| **b == target).count();

    let msg = backend_cli(&tb, "drain", &id, target_addr, &[]);
    assert!(msg.contains("drained"), "{msg}");
    let r = tb.status();
    let b = backend_status(&r, &id, target_addr);
    assert_eq!(
        (b.state, b.ring_slots, b.effective_weight),
        (MapState::Draining, 0, 0)
    );

    // New connections avoid it, and none fails.
    let t = tb
        .client
        .enter(move || http_load(dst, 300, 2, Duration::from_secs(30), &|_, _| {}));
    assert!(t.failures.is_empty(), "{:?}", t.failures);
    assert_eq!(t.ok(), 300);
    assert!(
        !t.by_backend.contains_key(&target),
        "new connections reached the drained {target}: {:?}",
        t.by_backend
    );
    assert_eq!(t.by_backend.len(), 2, "{:?}", t.by_backend);

    // The long-lived ones, the drained backend's included, complete.
    let mut done_on_target = 0;
    for s in streams {
        let (backend, lines) = s.join().unwrap().unwrap_or_else(|e| panic!("{e}"));
        assert!(lines >= 10, "{backend}: only {lines} lines");
        if backend == target {
            done_on_target += 1;
        }
    }
    assert_eq!(done_on_target, on_target);
    eprintln!(
        "drained {target}: {on_target} long connections completed; new: {:?}",
        t.by_backend
    );
}

#[test]
fn killing_the_agent_and_restarting_it_under_load_fails_no_request() {
    let vips = [
        VipSpec::tcp(Mode::Ipip, false),
        VipSpec::tcp(Mode::Gue, true),
    ];
    let mut tb = testbed_with_agent("e2e-restart", "", &vips);
    let config = tb.work_dir.join("xlb.toml");
    let dsts: Vec<SocketAddr> = vips.iter().map(VipSpec::socket_addr).collect();
    let client = tb.client.name.clone();
    let tallies = std::thread::scope(|s| {
        let loads: Vec<_> = dsts
            .iter()
            .map(|dst| {
                let (client, dst) = (&client, *dst);
                s.spawn(move || {
                    enter_named(client, || {
                        http_load(dst, 50_000, 1, Duration::from_secs(7), &|_, _| {})
                    })
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs(1));
        tb.kill_agent();
        std::thread::sleep(Duration::from_millis(500));
        tb.start_agent(common::xlb(), &config);
        tb.wait_all_active(Duration::from_secs(10));
        loads
            .into_iter()
            .map(|l| l.join().unwrap())
            .collect::<Vec<_>>()
    });
    for (v, t) in vips.iter().zip(&tallies) {
        assert!(
            t.failures.is_empty(),
            "{}: {} of {} requests failed: {:?}",
            v.id(),
            t.failures.len(),
            t.sent,
            t.failures
        );
        assert!(t.ok() > 100, "{}: too few requests: {t:?}", v.id());
        assert_eq!(t.by_backend.len(), 3, "{}: {:?}", v.id(), t.by_backend);
        eprintln!(
            "{}: {} requests, 0 failed: {:?}",
            v.id(),
            t.sent,
            t.by_backend
        );
    }
}

#[test]
fn traffic_to_the_lb_hosts_own_addresses_keeps_working() {
    let vip = VipSpec::tcp(Mode::Ipip, false);
    let tb = testbed_with_agent("e2e-host", "", std::slice::from_ref(&vip));
    let pass_before = global(&tb, Counter::Pass);
    // A TCP echo service of the LB host itself, on both families.
    let listeners = tb.lb.enter(|| {
        [
            TcpListener::bind((LB_V4, 7007)).unwrap(),
            TcpListener::bind((LB_V6, 7007)).unwrap(),
        ]
    });
    let servers: Vec<_> = listeners
        .into_iter()
        .map(|l| {
            std::thread::spawn(move || {
                for _ in 0..20 {
                    let (mut c, _) = l.accept().unwrap();
                    let mut buf = [0u8; 64];
                    let n = c.read(&mut buf).unwrap();
                    c.write_all(&buf[..n]).unwrap();
                }
            })
        })
        .collect();
    let dst = vip.socket_addr();
    tb.client.enter(move || {
        for i in 0..20 {
            for lb in [IpAddr::V4(LB_V4), IpAddr::V6(LB_V6)] {
                let mut s = TcpStream::connect_timeout(&(lb, 7007).into(), Duration::from_secs(2))
                    .unwrap_or_else(|e| panic!("connect to the LB host {lb}: {e}"));
                s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                s.write_all(format!("hello {i}").as_bytes()).unwrap();
                let mut buf = [0u8; 64];
                let n = s.read(&mut buf).unwrap();
                assert_eq!(&buf[..n], format!("hello {i}").as_bytes());
            }
            // VIP traffic goes on meanwhile.
            http_get(dst, "/", Duration::from_secs(2)).unwrap_or_else(|(_, e)| panic!("{e}"));
        }
        // UDP to the LB host: a closed port answers with ICMP port unreachable (the kernel's,
        // so the packet reached the host's stack).
        let u = UdpSocket::bind((std::net::Ipv4Addr::UNSPECIFIED, 0)).unwrap();
        u.connect((LB_V4, 7)).unwrap();
        u.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        u.send(b"x").unwrap();
        let e = u.recv(&mut [0u8; 8]).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
    });
    for s in servers {
        s.join().unwrap();
    }
    assert!(
        global(&tb, Counter::Pass) >= pass_before + 40 * 3,
        "the XDP program passed the host's traffic"
    );
}

fn global(tb: &Testbed, c: Counter) -> u64 {
    let v = inspect(tb, &["stats"]);
    v["counters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["index"] == c as u32)
        .unwrap()["total"]
        .as_u64()
        .unwrap()
}

/// A datagram too big for the configured MTU after encapsulation: the LB answers with ICMP
/// "fragmentation needed" / "packet too big", which the client's stack takes in: its path MTU
/// to the VIP drops, and a connected socket that forbids fragmentation gets EMSGSIZE.
#[test]
fn packets_over_the_mtu_get_an_icmp_error_the_client_sees() {
    let vips = [
        VipSpec::udp(Mode::Ipip, false),
        VipSpec::udp(Mode::Ipip, true),
    ];
    let tb = testbed_with_agent("e2e-mtu", "mtu = 1400", &vips);
    let too_big_before = global(&tb, Counter::IcmpTooBigSent);
    let capture = Capture::start(&tb.client, "eth0");
    let results = tb.client.enter({
        let vips = vips.clone();
        move || {
            vips.iter()
                .map(|v| {
                    let dst = v.socket_addr();
                    // Small datagrams pass.
                    let small = udp_ask(dst, Duration::from_secs(2))
                        .unwrap_or_else(|e| panic!("{}: small datagram: {e}", v.id()));
                    let any: SocketAddr = if v.v6 {
                        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
                    } else {
                        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
                    };
                    let s = UdpSocket::bind(any).unwrap();
                    set_pmtudisc_do(&s, v.v6);
                    s.connect(dst).unwrap();
                    let payload = vec![0x55u8; 1400];
                    // The first one leaves (1428/1448 bytes fit the link); the LB answers
                    // with ICMP; then the stack knows the path MTU and refuses.
                    let deadline = Instant::now() + Duration::from_secs(5);
                    let err = loop {
                        match s.send(&payload) {
                            Ok(_) => {}
                            Err(e) => break e,
                        }
                        assert!(
                            Instant::now() < deadline,
                            "{}: no EMSGSIZE within 5 s",
                            v.id()
                        );
                        std::thread::sleep(Duration::from_millis(50));
                    };
                    (small.backend, err.raw_os_error(), path_mtu(&s, v.v6))
                })
                .collect::<Vec<_>>()
        }
    });
    let frames = capture.finish();
    for (v, (small, err, mtu)) in vips.iter().zip(results) {
        assert!(small.starts_with("backend-"), "{small}");
        assert_eq!(err, Some(libc::EMSGSIZE), "{}", v.id());
        let overhead = if v.v6 { 40 } else { 20 };
        assert_eq!(
            mtu,
            1400 - overhead,
            "{}: path MTU learnt from the ICMP",
            v.id()
        );
        let (icmp_type, client) = if v.v6 {
            (2u8, IpAddr::V6(CLIENT_V6))
        } else {
            (3u8, IpAddr::V4(CLIENT_V4))
        };
        assert!(
            frames.iter().any(|f| !f.outgoing
                && f.src == v.id().addr
                && f.dst == client
                && f.icmp_type == Some(icmp_type)),
            "{}: no ICMP error from the VIP captured",
            v.id()
        );
    }
    assert!(global(&tb, Counter::IcmpTooBigSent) >= too_big_before + 2);
}

fn set_pmtudisc_do(s: &UdpSocket, v6: bool) {
    let (level, opt, val) = if v6 {
        (
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU_DISCOVER,
            libc::IPV6_PMTUDISC_DO,
        )
    } else {
        (
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_DO,
        )
    };
    // SAFETY: setsockopt with an int option on our socket.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            level,
            opt,
            &val as *const _ as *const _,
            size_of::<libc::c_int>() as u32,
        )
    };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
}

fn path_mtu(s: &UdpSocket, v6: bool) -> i32 {
    let (level, opt) = if v6 {
        (libc::IPPROTO_IPV6, libc::IPV6_MTU)
    } else {
        (libc::IPPROTO_IP, libc::IP_MTU)
    };
    let mut val: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as u32;
    // SAFETY: getsockopt of an int option into a local.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            level,
            opt,
            &mut val as *mut _ as *mut _,
            &mut len,
        )
    };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
    val
}
