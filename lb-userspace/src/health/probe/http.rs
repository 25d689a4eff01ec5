//! HTTP and HTTPS checks: one GET over the probe's own connection (hyper's HTTP/1.1 client),
//! judged by the response status alone.

use std::net::{IpAddr, SocketAddr};

use http_body_util::Empty;
use hyper::Request;
use hyper::body::Bytes;
use hyper::client::conn::http1;
use hyper::header::{CONNECTION, HOST, USER_AGENT};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};

use super::{ProbeError, connect, tls};

pub(super) async fn check(
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
        let tls_stream = tls::connector()
            .connect(name, stream)
            .await
            .map_err(ProbeError::Tls)?;
        status(tls_stream, path, &host_header).await?
    } else {
        status(stream, path, &host_header).await?
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

/// One GET with `Connection: close` on `stream`; returns the response status. The body is
/// never read: liveness is judged by the status, and the caller drops the connection (with
/// RST, see [`connect`]) as soon as it has it.
async fn status<S>(stream: S, path: &str, host: &str) -> Result<u16, ProbeError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let request = Request::get(path)
        .header(HOST, host)
        .header(CONNECTION, "close")
        .header(USER_AGENT, "xlb-health")
        .body(Empty::<Bytes>::new())
        .map_err(ProbeError::Request)?;
    let (mut sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http_error)?;
    // The connection future does the I/O; it is driven here rather than spawned so that the
    // probe's timeout, or its end, drops the socket with it.
    let mut connection = std::pin::pin!(connection);
    let mut exchange = std::pin::pin!(sender.send_request(request));
    let response = tokio::select! {
        response = &mut exchange => response,
        ended = &mut connection => {
            ended.map_err(http_error)?;
            // Closed cleanly before an answer: the exchange reports it.
            exchange.await
        }
    };
    Ok(response.map_err(http_error)?.status().as_u16())
}

fn http_error(e: hyper::Error) -> ProbeError {
    if e.is_incomplete_message() {
        ProbeError::Closed
    } else {
        ProbeError::Http(e)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// `status` against a peer that reads the request and writes `answer` (then closes), over an
    /// in-memory pipe: no socket, no namespace.
    async fn status_for(answer: &'static [u8]) -> Result<u16, ProbeError> {
        let (client, mut server) = tokio::io::duplex(4096);
        let peer = tokio::spawn(async move {
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = server.read(&mut buf).await.unwrap();
                assert_ne!(n, 0, "request head cut short");
                request.extend_from_slice(&buf[..n]);
            }
            server.write_all(answer).await.unwrap();
            server.shutdown().await.unwrap();
            String::from_utf8(request).unwrap()
        });
        let got = status(client, "/healthz", "192.0.2.1:8080").await;
        let request = peer.await.unwrap();
        assert!(
            request.starts_with("GET /healthz HTTP/1.1\r\n"),
            "{request}"
        );
        for header in [
            "host: 192.0.2.1:8080\r\n",
            "connection: close\r\n",
            "user-agent: xlb-health\r\n",
        ] {
            assert!(request.to_ascii_lowercase().contains(header), "{request}");
        }
        got
    }

    #[tokio::test]
    async fn status_line_parsing() {
        assert_eq!(status_for(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap(), 200);
        assert_eq!(status_for(b"HTTP/1.0 503\r\n\r\n").await.unwrap(), 503);
        assert_eq!(
            status_for(b"HTTP/1.1 404 Not Found\r\n\r\n").await.unwrap(),
            404
        );
        for bad in [
            &b"HTTP/2 200 OK\r\n\r\n"[..],
            b"HTTP/1.1 20 OK\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.1200 OK\r\n\r\n",
            b"SSH-2.0-OpenSSH\r\n\r\n",
            b"\r\n\r\n",
        ] {
            assert!(status_for(bad).await.is_err(), "{bad:?}");
        }
        // Closed without a byte of answer.
        let err = status_for(b"").await.unwrap_err();
        assert!(matches!(err, ProbeError::Closed), "{err:?}");
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
