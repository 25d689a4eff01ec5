//! One health probe: connect to a backend, ask, judge the answer. Async (tokio), bounded by the
//! check's timeout as a whole (connect + TLS handshake + request + reply), and from the agent's
//! own network namespace and default route: the probe checks the backend as any client of the
//! host would reach it, not through the VIP.
//!
//! The caller resolves the port (`BackendSpec.check_port`, else the VIP port: see
//! [`super::probe_target`]) so a probe is only "this kind of check against this socket address".

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio_rustls::TlsConnector;

use crate::model::CheckKind;

/// Longest HTTP status line accepted ("HTTP/1.1 200 OK\r\n" plus a generous reason phrase).
const MAX_STATUS_LINE: usize = 512;
/// Receive buffer of the UDP check when no longer `expect` needs more: a datagram larger than
/// the buffer is truncated, which is fine because only its prefix is compared.
const UDP_RECV_BUF: usize = 1500;

/// Why a probe failed. `Display` is the `reason` carried by health events and logs.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("no port to probe (no check port and the VIP covers all ports)")]
    NoPort,
    #[error("connect: {0}")]
    Connect(io::Error),
    #[error("tls handshake: {0}")]
    Tls(io::Error),
    #[error("i/o: {0}")]
    Io(io::Error),
    #[error("connection closed before the status line")]
    Closed,
    #[error("malformed status line {0:?}")]
    Malformed(String),
    #[error("http status {got}, expected {want}")]
    Status { got: u16, want: u16 },
    /// A connected UDP socket reports the ICMP error as `ECONNREFUSED` on receive.
    #[error("port unreachable")]
    PortUnreachable,
    #[error("reply of {len} bytes does not start with the expected bytes")]
    UnexpectedReply { len: usize },
}

/// Runs one probe of `kind` against `target`; `Ok` carries the latency (time to a judged
/// answer). The whole probe is bounded by `timeout`.
pub async fn probe(
    kind: &CheckKind,
    target: SocketAddr,
    timeout: Duration,
) -> Result<Duration, ProbeError> {
    let start = Instant::now();
    let run = async {
        match kind {
            CheckKind::None => Ok(()),
            CheckKind::Tcp => tcp(target).await,
            CheckKind::Http {
                path,
                expect_status,
                tls,
                host,
            } => http(target, path, *expect_status, *tls, host.as_deref()).await,
            CheckKind::Udp { send, expect } => udp(target, send, expect.as_deref()).await,
        }
    };
    match tokio::time::timeout(timeout, run).await {
        Ok(Ok(())) => Ok(start.elapsed()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(ProbeError::Timeout(timeout)),
    }
}

/// Connects and closes. A refused connection (RST) fails at once; a silent one times out.
async fn tcp(target: SocketAddr) -> Result<(), ProbeError> {
    let stream = connect(target).await?;
    drop(stream);
    Ok(())
}

/// Connects with the close mode of every TCP probe: `SO_LINGER` 0, so dropping the stream sends
/// RST instead of FIN. A check every couple of seconds per backend would otherwise leave a
/// TIME_WAIT socket (and a used ephemeral port) behind per probe for a minute (HAProxy closes
/// its checks the same way). Zero linger never blocks on drop, unlike a positive one.
async fn connect(target: SocketAddr) -> Result<TcpStream, ProbeError> {
    let stream = TcpStream::connect(target)
        .await
        .map_err(ProbeError::Connect)?;
    // Best effort: failing to set it only costs a TIME_WAIT entry.
    let _ = stream.set_zero_linger();
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

async fn http(
    target: SocketAddr,
    path: &str,
    expect_status: u16,
    tls: bool,
    host: Option<&str>,
) -> Result<(), ProbeError> {
    let stream = connect(target).await?;
    let host_header = match host {
        Some(h) => h.to_owned(),
        None => default_host(target, tls),
    };
    let got = if tls {
        let name = server_name(host, target.ip());
        let mut tls_stream = tls_connector()
            .connect(name, stream)
            .await
            .map_err(ProbeError::Tls)?;
        http_status(&mut tls_stream, path, &host_header).await?
    } else {
        let mut stream = stream;
        http_status(&mut stream, path, &host_header).await?
    };
    if got == expect_status {
        Ok(())
    } else {
        Err(ProbeError::Status {
            got,
            want: expect_status,
        })
    }
}

/// `Host` value when the check names none: the backend address, bracketed for IPv6, with the
/// port unless it is the scheme's default (RFC 9110 §7.2).
fn default_host(target: SocketAddr, tls: bool) -> String {
    let default_port = if tls { 443 } else { 80 };
    let ip = match target.ip() {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    };
    if target.port() == default_port {
        ip
    } else {
        format!("{ip}:{}", target.port())
    }
}

/// SNI: the configured host name when it is a valid DNS name, else the backend address
/// (rustls sends no SNI for an address, which is what a client dialling the IP would do).
fn server_name(host: Option<&str>, ip: IpAddr) -> ServerName<'static> {
    host.and_then(|h| ServerName::try_from(h.to_owned()).ok())
        .unwrap_or_else(|| ServerName::IpAddress(ip.into()))
}

/// Minimal HTTP/1.1 exchange: one GET with `Connection: close`, then only the status line is
/// read; headers and body are not needed to judge liveness.
async fn http_status<S>(stream: &mut S, path: &str, host: &str) -> Result<u16, ProbeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nUser-Agent: xlb-health\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(ProbeError::Io)?;
    stream.flush().await.map_err(ProbeError::Io)?;

    let mut buf = [0u8; MAX_STATUS_LINE];
    let mut len = 0;
    loop {
        if let Some(end) = buf[..len].iter().position(|&b| b == b'\n') {
            return parse_status_line(&buf[..end]);
        }
        if len == buf.len() {
            return Err(ProbeError::Malformed(lossy(&buf[..len])));
        }
        let n = stream.read(&mut buf[len..]).await.map_err(ProbeError::Io)?;
        if n == 0 {
            return if len == 0 {
                Err(ProbeError::Closed)
            } else {
                Err(ProbeError::Malformed(lossy(&buf[..len])))
            };
        }
        len += n;
    }
}

/// `HTTP/1.x NNN[ reason]`, without the line end (a trailing `\r` is tolerated).
fn parse_status_line(line: &[u8]) -> Result<u16, ProbeError> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let malformed = || ProbeError::Malformed(lossy(line));
    let rest = line.strip_prefix(b"HTTP/1.").ok_or_else(malformed)?;
    let (minor, rest) = rest.split_first().ok_or_else(malformed)?;
    if !minor.is_ascii_digit() || rest.first() != Some(&b' ') {
        return Err(malformed());
    }
    let code = rest.get(1..4).ok_or_else(malformed)?;
    if !code.iter().all(u8::is_ascii_digit) || !matches!(rest.get(4), None | Some(b' ')) {
        return Err(malformed());
    }
    Ok(code
        .iter()
        .fold(0u16, |acc, d| acc * 10 + u16::from(d - b'0')))
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Sends `payload` on a connected socket and waits for one reply. Connecting makes the kernel
/// report an ICMP port unreachable for this flow as `ECONNREFUSED` on the next receive, so a
/// closed port fails fast instead of timing out.
async fn udp(target: SocketAddr, payload: &[u8], expect: Option<&[u8]>) -> Result<(), ProbeError> {
    let local: SocketAddr = match target {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).await.map_err(ProbeError::Connect)?;
    socket.connect(target).await.map_err(ProbeError::Connect)?;
    socket.send(payload).await.map_err(udp_error)?;
    let mut buf = vec![0u8; expect.map_or(0, <[u8]>::len).max(UDP_RECV_BUF)];
    let len = socket.recv(&mut buf).await.map_err(udp_error)?;
    match expect {
        Some(want) if !buf[..len].starts_with(want) => Err(ProbeError::UnexpectedReply { len }),
        _ => Ok(()),
    }
}

fn udp_error(e: io::Error) -> ProbeError {
    if e.kind() == io::ErrorKind::ConnectionRefused {
        ProbeError::PortUnreachable
    } else {
        ProbeError::Io(e)
    }
}

/// One TLS client configuration for all HTTPS checks (building it parses the provider's
/// tables; connections share it through the `Arc`).
fn tls_connector() -> &'static TlsConnector {
    static CONNECTOR: OnceLock<TlsConnector> = OnceLock::new();
    CONNECTOR.get_or_init(|| {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = AcceptAnyServerCert {
            algorithms: provider.signature_verification_algorithms,
        };
        let config = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports rustls' default protocol versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        TlsConnector::from(Arc::new(config))
    })
}

/// Certificate verification of HTTPS checks: off, on purpose. A health check asserts that the
/// backend is alive and answers, not who it is: backends commonly serve self-signed or
/// internal-CA certificates, are addressed by IP (no name to match), and the LB forwards the
/// client's own TLS untouched, so the client does the identity check that matters. Refusing a
/// live backend over its certificate would only turn a PKI issue into an outage.
///
/// The handshake signatures are still verified (with the provider's algorithms): the server
/// must hold the key of the certificate it presents, so a check passes only after a complete,
/// correct TLS handshake.
#[derive(Debug)]
struct AcceptAnyServerCert {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::test_ns::*;

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

    #[test]
    fn none_is_always_up_without_any_traffic() {
        // No namespace needed: nothing is sent (the target is a documentation address).
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let target: SocketAddr = "192.0.2.1:9".parse().unwrap();
        runtime
            .block_on(probe(&CheckKind::None, target, TIMEOUT))
            .unwrap();
    }

    #[test]
    fn status_line_parsing() {
        assert_eq!(parse_status_line(b"HTTP/1.1 200 OK\r").unwrap(), 200);
        assert_eq!(parse_status_line(b"HTTP/1.0 503").unwrap(), 503);
        assert_eq!(parse_status_line(b"HTTP/1.1 404 Not Found").unwrap(), 404);
        for bad in [
            &b"HTTP/2 200 OK"[..],
            b"HTTP/1.1 20 OK",
            b"HTTP/1.1 2000 OK",
            b"HTTP/1.1200 OK",
            b"SSH-2.0-OpenSSH",
            b"",
        ] {
            assert!(parse_status_line(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn default_host_header_brackets_v6_and_omits_default_ports() {
        assert_eq!(
            default_host("10.0.0.1:80".parse().unwrap(), false),
            "10.0.0.1"
        );
        assert_eq!(
            default_host("10.0.0.1:443".parse().unwrap(), true),
            "10.0.0.1"
        );
        assert_eq!(
            default_host("10.0.0.1:443".parse().unwrap(), false),
            "10.0.0.1:443"
        );
        assert_eq!(
            default_host("[2001:db8::1]:8080".parse().unwrap(), true),
            "[2001:db8::1]:8080"
        );
    }
}
