//! One probe of each kind against servers in the test's own network namespace.

use std::io;
use std::time::{Duration, Instant};

use lb_userspace::health::{ProbeError, probe};
use lb_userspace::model::CheckKind;

use crate::netns::*;

const TIMEOUT: Duration = Duration::from_millis(200);
/// A probe that must fail on an answer (RST, ICMP) rather than by timing out gets a long
/// timeout and must finish well before it.
const LONG: Duration = Duration::from_secs(5);

fn http(path: &str, expect_status: u16, tls: bool) -> CheckKind {
    CheckKind::Http {
        path: path.to_owned(),
        expect_status,
        tls,
        host: None,
    }
}

fn udp(send: &[u8], expect: Option<&[u8]>) -> CheckKind {
    CheckKind::Udp {
        send: send.to_vec(),
        expect: expect.map(<[u8]>::to_vec),
    }
}

#[test]
fn tcp_up_for_a_listening_server() {
    in_private_netns(|| async {
        let listener = tcp_listener(localhost(0));
        let addr = listener.local_addr().unwrap();
        spawn_tcp_server(listener);
        let latency = probe(&CheckKind::Tcp, addr, TIMEOUT).await.unwrap();
        assert!(latency < TIMEOUT);
    });
}

#[test]
fn tcp_down_for_a_closed_port_by_rst_not_timeout() {
    in_private_netns(|| async {
        let start = Instant::now();
        let err = probe(&CheckKind::Tcp, closed_port(), LONG)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ProbeError::Connect(e) if e.kind() == io::ErrorKind::ConnectionRefused),
            "{err:?}"
        );
        assert!(start.elapsed() < LONG / 2);
    });
}

#[test]
fn http_up_for_the_expected_status() {
    in_private_netns(|| async {
        let addr = spawn_http_server(204);
        probe(&http("/healthz", 204, false), addr, TIMEOUT)
            .await
            .unwrap();
    });
}

#[test]
fn http_down_for_a_wrong_status() {
    in_private_netns(|| async {
        let addr = spawn_http_server(503);
        let err = probe(&http("/", 200, false), addr, TIMEOUT)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                ProbeError::Status {
                    got: 503,
                    want: 200
                }
            ),
            "{err:?}"
        );
        assert_eq!(err.to_string(), "http status 503, expected 200");
    });
}

#[test]
fn http_down_by_timeout_when_the_server_accepts_but_never_answers() {
    in_private_netns(|| async {
        let addr = spawn_silent_tcp_server();
        let start = Instant::now();
        let err = probe(&http("/", 200, false), addr, TIMEOUT)
            .await
            .unwrap_err();
        let took = start.elapsed();
        assert!(
            matches!(err, ProbeError::Timeout(t) if t == TIMEOUT),
            "{err:?}"
        );
        assert!(took >= TIMEOUT, "returned before the timeout: {took:?}");
        assert!(took < TIMEOUT * 5, "not bounded by the timeout: {took:?}");
    });
}

/// A server that keeps sending (a byte every 20 ms, a header that never ends) does not keep
/// the probe alive: the timeout bounds the whole probe, not each read.
#[test]
fn http_down_by_timeout_when_the_server_dribbles_forever() {
    in_private_netns(|| async {
        let addr = spawn_dribbling_http_server();
        let start = Instant::now();
        // Bounded here too: a probe that timed each read alone would never return.
        let err = tokio::time::timeout(TIMEOUT * 5, probe(&http("/", 200, false), addr, TIMEOUT))
            .await
            .expect("the probe outlived five timeouts: its timeout is not bounding the whole probe")
            .unwrap_err();
        let took = start.elapsed();
        assert!(
            matches!(err, ProbeError::Timeout(t) if t == TIMEOUT),
            "{err:?}"
        );
        assert!(took < TIMEOUT * 5, "not bounded by the timeout: {took:?}");
    });
}

#[test]
fn https_down_by_timeout_when_the_handshake_never_completes() {
    in_private_netns(|| async {
        let addr = spawn_silent_tcp_server();
        let start = Instant::now();
        let err = probe(&http("/", 200, true), addr, TIMEOUT)
            .await
            .unwrap_err();
        assert!(matches!(err, ProbeError::Timeout(_)), "{err:?}");
        assert!(start.elapsed() < TIMEOUT * 5);
    });
}

#[test]
fn https_up_with_a_self_signed_certificate() {
    in_private_netns(|| async {
        let addr = spawn_https_server(200);
        probe(&http("/health", 200, true), addr, Duration::from_secs(2))
            .await
            .unwrap();
        // A named host (SNI) that the certificate does not cover passes too.
        let named = CheckKind::Http {
            path: "/".into(),
            expect_status: 200,
            tls: true,
            host: Some("other.example".into()),
        };
        probe(&named, addr, Duration::from_secs(2)).await.unwrap();
    });
}

#[test]
fn https_down_for_a_wrong_status() {
    in_private_netns(|| async {
        let addr = spawn_https_server(500);
        let err = probe(&http("/", 200, true), addr, Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(
            matches!(err, ProbeError::Status { got: 500, .. }),
            "{err:?}"
        );
    });
}

#[test]
fn https_down_when_the_server_closes_during_the_handshake() {
    in_private_netns(|| async {
        let listener = tcp_listener(localhost(0));
        let addr = listener.local_addr().unwrap();
        spawn_tcp_server(listener);
        let err = probe(&http("/", 200, true), addr, LONG).await.unwrap_err();
        assert!(matches!(err, ProbeError::Tls(_)), "{err:?}");
    });
}

#[test]
fn udp_up_with_the_expected_reply() {
    in_private_netns(|| async {
        let addr = spawn_udp_server(b"PONG v1").await;
        probe(&udp(b"PING", Some(b"PONG")), addr, TIMEOUT)
            .await
            .unwrap();
        // Without `expect`, any reply counts.
        probe(&udp(b"PING", None), addr, TIMEOUT).await.unwrap();
    });
}

#[test]
fn udp_down_with_a_wrong_reply() {
    in_private_netns(|| async {
        let addr = spawn_udp_server(b"NOPE").await;
        let err = probe(&udp(b"PING", Some(b"PONG")), addr, TIMEOUT)
            .await
            .unwrap_err();
        assert!(
            matches!(err, ProbeError::UnexpectedReply { len: 4 }),
            "{err:?}"
        );
    });
}

#[test]
fn udp_down_on_port_unreachable_without_waiting_for_the_timeout() {
    in_private_netns(|| async {
        let start = Instant::now();
        let err = probe(&udp(b"PING", None), closed_port(), LONG)
            .await
            .unwrap_err();
        assert!(matches!(err, ProbeError::PortUnreachable), "{err:?}");
        assert!(start.elapsed() < LONG / 2);
    });
}

#[test]
fn udp_down_by_timeout_when_nothing_replies() {
    in_private_netns(|| async {
        let addr = spawn_silent_udp_server().await;
        let start = Instant::now();
        let err = probe(&udp(b"PING", None), addr, TIMEOUT).await.unwrap_err();
        let took = start.elapsed();
        assert!(matches!(err, ProbeError::Timeout(_)), "{err:?}");
        assert!(took >= TIMEOUT && took < TIMEOUT * 5, "{took:?}");
    });
}
