//! Three agents (`xlb run`), each on its own testbed (namespaces, pins, API socket), fed the
//! same config with the backends listed in different orders, then the same API calls and
//! health changes: `xlb inspect ring --digest` must print the same lines on all three at every
//! step, and different lines when the ring changes. One agent first adds and removes an extra
//! backend, so its backend ids differ from the others'.
//!
//! Needs root and bpffs (`cargo xtask setup`): fails loudly rather than skip.

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::{xlb, xlb_ok};
use lb_userspace::api::{MapState, Request, Response, StatusReport};
use lb_userspace::model::VipId;
use xlb_testkit::testbed::{Mode, Options, Testbed, VipSpec};

/// `text` with each VIP's `[[vip.backend]]` blocks reordered by `order` (indices into the
/// blocks as written; every VIP here has as many backends as `order` has entries).
fn shuffle_backends(text: &str, order: &[usize]) -> String {
    const BLOCK: &str = "  [[vip.backend]]\n";
    text.split("\n[[vip]]\n")
        .enumerate()
        .map(|(i, chunk)| {
            if i == 0 {
                return chunk.to_string();
            }
            let mut parts = chunk.split(BLOCK);
            let head = parts.next().unwrap_or_default();
            let blocks: Vec<&str> = parts.collect();
            assert_eq!(blocks.len(), order.len(), "backends of a VIP in:\n{text}");
            let mut out = head.to_string();
            for &k in order {
                out.push_str(BLOCK);
                out.push_str(blocks[k]);
            }
            out
        })
        .collect::<Vec<_>>()
        .join("\n[[vip]]\n")
}

fn digests(tb: &Testbed) -> String {
    let pin = tb.pin_dir().display().to_string();
    xlb_ok(&["inspect", "--pin-dir", &pin, "ring", "--digest"])
}

fn ok(tb: &Testbed, req: Request) {
    match tb.api(&req) {
        Response::Ok { .. } => {}
        other => panic!("{req:?}: {other:?}"),
    }
}

/// Waits (bounded) until the three agents print the same digests and `settled` holds on every
/// status; returns the digests.
fn agree(step: &str, nodes: &[Testbed], settled: impl Fn(&StatusReport) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let ready = nodes.iter().all(|n| settled(&n.status()));
        let lines: Vec<String> = nodes.iter().map(digests).collect();
        if ready && lines.iter().all(|l| *l == lines[0]) {
            assert!(!lines[0].is_empty(), "{step}: no digest lines");
            eprintln!("{step}:\n{}", lines[0]);
            return lines[0].clone();
        }
        assert!(
            Instant::now() < deadline,
            "{step}: digests differ or state not settled after 15 s: {lines:#?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn state(r: &StatusReport, vip: &VipId, addr: IpAddr) -> Option<MapState> {
    r.vips
        .iter()
        .find(|v| v.id == *vip)?
        .backends
        .iter()
        .find(|b| b.addr == addr)
        .map(|b| b.state)
}

#[test]
fn three_agents_agree_on_every_ring_digest_whatever_the_order_and_ids() {
    assert!(xlb().exists());
    let tcp = VipSpec::tcp(Mode::Ipip, false).only(&[0, 1, 2]);
    let udp = VipSpec::udp(Mode::Gue, true).only(&[0, 1, 2]);
    let (t, u) = (tcp.id(), udp.id());
    let orders: [&[usize]; 3] = [&[0, 1, 2], &[2, 0, 1], &[1, 2, 0]];
    let mut nodes: Vec<Testbed> = Vec::new();
    for (i, order) in orders.iter().enumerate() {
        // Four backends on the segment; the config names three, the fourth is added later.
        let mut tb = Testbed::up(&Options::for_test(&format!("digest{i}"), 4));
        let text = shuffle_backends(&tb.config("", &[tcp.clone(), udp.clone()]), order);
        let config = tb.write_file("xlb.toml", &text);
        tb.start_agent(xlb(), &config);
        tb.wait_all_active(Duration::from_secs(15));
        nodes.push(tb);
    }
    let v4 = |n: &Testbed, i: usize| IpAddr::V4(n.backends[i].v4);
    let v6 = |n: &Testbed, i: usize| IpAddr::V6(n.backends[i].v6);
    // Node 1 takes ids the others never hand out: an extra backend comes and goes first.
    let extra = v4(&nodes[1], 3);
    ok(
        &nodes[1],
        Request::AddBackend {
            vip: t,
            addr: extra,
            weight: 1,
        },
    );
    ok(
        &nodes[1],
        Request::RemoveBackend {
            vip: t,
            addr: extra,
        },
    );
    let all_active = |r: &StatusReport| {
        r.vips
            .iter()
            .all(|v| v.backends.iter().all(|b| b.state == MapState::Active))
    };
    let mut seen = vec![agree("start", &nodes, all_active)];
    let mut step = |name: &str, nodes: &[Testbed], settled: &dyn Fn(&StatusReport) -> bool| {
        let d = agree(name, nodes, settled);
        assert!(
            !seen.contains(&d),
            "{name}: the ring changed but a digest repeats"
        );
        seen.push(d);
    };

    // Weight change, then a drain, in opposite orders on nodes 0 and 2 (node 1 one way).
    for (i, n) in nodes.iter().enumerate() {
        let weight = Request::SetWeight {
            vip: t,
            addr: v4(n, 1),
            weight: 3,
        };
        let drain = Request::Drain {
            vip: u,
            addr: v6(n, 2),
        };
        if i == 2 {
            ok(n, drain);
            ok(n, weight);
        } else {
            ok(n, weight);
            ok(n, drain);
        }
    }
    step("weight and drain", &nodes, &|r| {
        state(r, &u, v6(&nodes[0], 2)) == Some(MapState::Draining)
    });

    // A backend added through the API, on the TCP VIP.
    for n in &nodes {
        ok(
            n,
            Request::AddBackend {
                vip: t,
                addr: v4(n, 3),
                weight: 2,
            },
        );
    }
    step("add backend", &nodes, &|r| {
        state(r, &t, v4(&nodes[0], 3)) == Some(MapState::Active)
    });
    // The added backend got a different id on node 1 (whose earlier extra took one).
    let id_of = |n: &Testbed| {
        let r = n.status();
        let v = r.vips.iter().find(|v| v.id == t).unwrap();
        v.backends.iter().find(|b| b.addr == v4(n, 3)).unwrap().id
    };
    assert_ne!(
        id_of(&nodes[0]),
        id_of(&nodes[1]),
        "ids differ between nodes"
    );

    // Health: backend 0 stops answering everywhere.
    for n in &mut nodes {
        n.stop_backend(0);
    }
    step("backend 0 down", &nodes, &|r| {
        state(r, &t, v4(&nodes[0], 0)) == Some(MapState::Down)
            && state(r, &u, v6(&nodes[0], 0)) == Some(MapState::Down)
    });

    // A configured backend removed through the API.
    for n in &nodes {
        ok(
            n,
            Request::RemoveBackend {
                vip: t,
                addr: v4(n, 2),
            },
        );
    }
    step("remove backend", &nodes, &|r| {
        state(r, &t, v4(&nodes[0], 2)).is_none()
    });

    // Backend 0 back: its slots return, the same ring as before it failed.
    for n in &mut nodes {
        n.start_backend(0);
    }
    step("backend 0 up", &nodes, &|r| {
        state(r, &t, v4(&nodes[0], 0)) == Some(MapState::Active)
            && state(r, &u, v6(&nodes[0], 0)) == Some(MapState::Active)
    });
}
