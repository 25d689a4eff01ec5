//! The health monitor's tasks probing servers in the test's own network namespace: damping,
//! reloads that keep state, stopping.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use lb_userspace::health::{BackendHealth, Health, HealthEvent, HealthMonitor, UpdateSummary};
use lb_userspace::model::{BackendSpec, CheckKind, HealthCheck, Proto, Vip, VipId};
use lb_userspace::test_fixtures::{self, config};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::netns::*;

const INTERVAL: Duration = Duration::from_millis(50);

fn check(kind: CheckKind, rise: u32, fall: u32) -> HealthCheck {
    HealthCheck {
        kind,
        interval: INTERVAL,
        timeout: Duration::from_millis(40),
        rise,
        fall,
    }
}

fn vip(port: u16, health: HealthCheck, backends: Vec<BackendSpec>) -> Vip {
    let mut v = test_fixtures::vip("192.0.2.10", port, Proto::Tcp, &[]);
    v.health = health;
    v.backends = backends;
    v
}

fn backend(addr: &str, check_port: u16) -> BackendSpec {
    BackendSpec {
        addr: addr.parse().unwrap(),
        weight: 100,
        check_port: Some(check_port),
    }
}

/// The next event, or `None` if there is none within `within`.
async fn next_event(rx: &mut mpsc::Receiver<HealthEvent>, within: Duration) -> Option<HealthEvent> {
    tokio::time::timeout(within, rx.recv()).await.ok().flatten()
}

const EVENT_WAIT: Duration = Duration::from_secs(3);

#[test]
fn monitor_emits_down_after_fall_failures_and_up_after_rise_successes() {
    in_private_netns(|| async {
        let listener = tcp_listener(localhost(0));
        let addr = listener.local_addr().unwrap();
        let server = spawn_tcp_server(listener);

        let v = vip(
            80,
            check(CheckKind::Tcp, 2, 3),
            vec![backend("127.0.0.1", addr.port())],
        );
        let id = v.id;
        let cfg = config(vec![v]);
        let (tx, mut rx) = mpsc::channel(16);
        let mut monitor = HealthMonitor::new(tx);
        let stats = monitor.stats();
        let summary = monitor.update_with(&cfg, |_, _| Health::Up);
        assert_eq!(summary.started, 1);
        let ip: IpAddr = Ipv4Addr::LOCALHOST.into();

        // Healthy and already up: probes succeed, nothing is reported.
        assert_eq!(next_event(&mut rx, INTERVAL * 5).await, None);
        let before = stats.get(&id, ip).unwrap();
        assert!(
            before.up && before.probes_ok >= 2 && before.probes_failed == 0,
            "{before:?}"
        );
        assert!(before.last_ok && before.last_latency.is_some());

        // Server stops: down after `fall` = 3 consecutive failures, not before.
        server.abort();
        let _ = server.await;
        let stopped = Instant::now();
        let down = next_event(&mut rx, EVENT_WAIT).await.expect("down event");
        let at_down = stats.get(&id, ip).unwrap();
        assert_eq!(
            (down.vip, down.backend, down.up, down.latency),
            (id, ip, false, None)
        );
        assert!(
            down.reason.starts_with("3 consecutive failures"),
            "{}",
            down.reason
        );
        assert!(at_down.probes_failed >= 3, "{at_down:?}");
        assert!(
            stopped.elapsed() >= INTERVAL * 3 / 2,
            "3 fixed-rate probes span about 2 intervals (tokio keeps a tick up to 5 ms late \
             on schedule, so allow slack)"
        );
        assert!(!at_down.up && at_down.transitions == 1);

        // Server returns on the same port: up after `rise` = 2 successes.
        let server = spawn_tcp_server(tcp_listener(addr));
        let up = next_event(&mut rx, EVENT_WAIT).await.expect("up event");
        let at_up = stats.get(&id, ip).unwrap();
        assert_eq!((up.vip, up.backend, up.up), (id, ip, true));
        assert!(up.latency.is_some());
        assert_eq!(up.reason, "2 consecutive successes");
        assert!(at_up.probes_ok >= before.probes_ok + 2, "{at_up:?}");

        // Steady again: no duplicate events.
        assert_eq!(next_event(&mut rx, INTERVAL * 5).await, None);
        assert_eq!(stats.get(&id, ip).unwrap().transitions, 2);
        monitor.shutdown().await;
        server.abort();
    });
}

#[test]
fn monitor_update_keeps_state_for_unchanged_backends() {
    in_private_netns(|| async {
        let listener = tcp_listener(localhost(0));
        let port = listener.local_addr().unwrap().port();
        spawn_tcp_server(listener);
        let dead = closed_port().port();

        let a: IpAddr = Ipv4Addr::LOCALHOST.into();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let vip1 = vip(
            80,
            check(CheckKind::Tcp, 1, 3),
            vec![backend("127.0.0.1", port)],
        );
        let vip2 = vip(
            81,
            check(CheckKind::Tcp, 1, 3),
            vec![backend("127.0.0.1", port)],
        );
        let (id1, id2) = (vip1.id, vip2.id);

        let (tx, mut rx) = mpsc::channel(16);
        let mut monitor = HealthMonitor::new(tx);
        let stats = monitor.stats();
        let summary = monitor.update(&config(vec![vip1.clone(), vip2]));
        assert_eq!((summary.started, monitor.len()), (2, 2));
        // Both start down (default policy) and come up after `rise` = 1 success.
        let mut ups = [
            next_event(&mut rx, EVENT_WAIT).await.expect("up 1"),
            next_event(&mut rx, EVENT_WAIT).await.expect("up 2"),
        ];
        ups.sort_by_key(|e| e.vip);
        assert!(ups.iter().all(|e| e.up && e.backend == a));
        assert_eq!((ups[0].vip, ups[1].vip), (id1, id2));
        let ok_before = stats.get(&id1, a).unwrap().probes_ok;

        // Reload: weight of A changed (not a check change), B added (to a closed port),
        // VIP 2 removed.
        let mut vip1b = vip1.clone();
        vip1b.backends[0].weight = 7;
        vip1b.backends.push(backend("127.0.0.2", dead));
        let summary = monitor.update(&config(vec![vip1b.clone()]));
        assert_eq!(
            summary,
            UpdateSummary {
                started: 1,
                stopped: 1,
                retuned: 0,
                unchanged: 1
            }
        );
        assert_eq!(monitor.len(), 2);
        assert_eq!(stats.get(&id2, a), None, "removed backend's stats are gone");

        // A was not reset: a reset would start it down and report a new up (rise = 1).
        // B starts down and stays down: no event either.
        assert_eq!(next_event(&mut rx, INTERVAL * 6).await, None);
        let kept = stats.get(&id1, a).unwrap();
        assert!(
            kept.up && kept.transitions == 1 && kept.probes_ok > ok_before,
            "{kept:?}"
        );
        let new = stats.get(&id1, b).unwrap();
        assert!(
            !new.up && new.probes_failed >= 1 && new.transitions == 0,
            "{new:?}"
        );

        // A changed check (interval, thresholds) retunes the task, still keeping state.
        let mut vip1c = vip1b;
        vip1c.health.interval = INTERVAL * 2;
        vip1c.health.fall = 5;
        let summary = monitor.update(&config(vec![vip1c]));
        assert_eq!(
            summary,
            UpdateSummary {
                started: 0,
                stopped: 0,
                retuned: 2,
                unchanged: 0
            }
        );
        assert_eq!(next_event(&mut rx, INTERVAL * 6).await, None);
        assert!(stats.get(&id1, a).unwrap().up);

        // The removed task is really gone: after shutdown every sender is dropped.
        monitor.shutdown().await;
        assert_eq!(rx.recv().await, None);
    });
}

#[test]
fn dropping_the_monitor_stops_every_task() {
    in_private_netns(|| async {
        let port = closed_port().port();
        let cfg = config(vec![vip(
            80,
            check(CheckKind::Tcp, 1, 1),
            vec![backend("127.0.0.1", port), backend("127.0.0.2", port)],
        )]);
        let (tx, mut rx) = mpsc::channel(16);
        let mut monitor = HealthMonitor::new(tx);
        monitor.update_with(&cfg, |_, _| Health::Up);
        let stats = monitor.stats();
        drop(monitor);
        // Every task held a sender; the channel closes only when all of them are gone.
        let closed =
            tokio::time::timeout(EVENT_WAIT, async { while rx.recv().await.is_some() {} }).await;
        assert!(closed.is_ok(), "a task outlived its monitor");
        let probes: u64 = stats.snapshot().iter().map(|s| s.probes_failed).sum();
        tokio::time::sleep(INTERVAL * 3).await;
        let later: u64 = stats.snapshot().iter().map(|s| s.probes_failed).sum();
        assert_eq!(probes, later, "probes after the monitor was dropped");
    });
}

#[test]
fn kind_none_is_forced_up_without_probing() {
    in_private_netns(|| async {
        let v = vip(
            80,
            check(CheckKind::None, 2, 3),
            vec![backend("127.0.0.1", 9)],
        );
        let id = v.id;
        let (tx, mut rx) = mpsc::channel(16);
        let mut monitor = HealthMonitor::new(tx);
        monitor.update_with(&config(vec![v]), |_, _| Health::Down);
        let ev = next_event(&mut rx, EVENT_WAIT).await.expect("up event");
        assert!(ev.up && ev.latency.is_none() && ev.reason == "check kind none");
        assert_eq!(next_event(&mut rx, INTERVAL * 4).await, None);
        let s = stats_of(&monitor, &id);
        assert_eq!((s.up, s.probes_ok, s.probes_failed), (true, 0, 0));
        monitor.shutdown().await;
    });
}

#[test]
fn a_backend_without_a_port_fails_its_probes() {
    in_private_netns(|| async {
        let mut b = backend("127.0.0.1", 1);
        b.check_port = None;
        let v = vip(0, check(CheckKind::Tcp, 1, 1), vec![b]);
        let (tx, mut rx) = mpsc::channel(16);
        let mut monitor = HealthMonitor::new(tx);
        monitor.update_with(&config(vec![v]), |_, _| Health::Up);
        let ev = next_event(&mut rx, EVENT_WAIT).await.expect("down event");
        assert!(
            !ev.up && ev.reason.contains("no port to probe"),
            "{}",
            ev.reason
        );
    });
}

fn stats_of(monitor: &HealthMonitor, id: &VipId) -> BackendHealth {
    monitor.stats().get(id, Ipv4Addr::LOCALHOST.into()).unwrap()
}
