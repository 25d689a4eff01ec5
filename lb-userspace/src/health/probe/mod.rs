//! One health probe: connect to a backend, ask, judge the answer. Async (tokio), bounded by the
//! check's timeout as a whole (connect + TLS handshake + request + reply), and from the agent's
//! own network namespace and default route: the probe checks the backend as any client of the
//! host would reach it, not through the VIP.
//!
//! The caller resolves the port (`BackendSpec.check_port`, else the VIP port: see
//! [`super::probe_target`]) so a probe is only "this kind of check against this socket address".
//!
//! TCP and UDP checks are here; HTTP(S) checks (hyper's client over the probe's own
//! connection) in `http.rs`, their TLS client configuration in `tls.rs`.

mod http;
mod tls;

use std::error::Error as _;
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::net::{TcpStream, UdpSocket};

use crate::model::CheckKind;

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
    #[error("connection closed before the response head")]
    Closed,
    /// The path or `Host` of the check cannot make a request.
    #[error("invalid request: {0}")]
    Request(hyper::http::Error),
    /// Anything else that went wrong in the HTTP exchange (a malformed answer, a read error).
    #[error("http: {}", Chain(.0))]
    Http(hyper::Error),
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
            } => http::check(target, path, *expect_status, *tls, host.as_deref()).await,
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
pub(super) async fn connect(target: SocketAddr) -> Result<TcpStream, ProbeError> {
    let stream = TcpStream::connect(target)
        .await
        .map_err(ProbeError::Connect)?;
    // Best effort: failing to set it only costs a TIME_WAIT entry.
    let _ = stream.set_zero_linger();
    let _ = stream.set_nodelay(true);
    Ok(stream)
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

/// An error and its sources, `: `-separated (hyper's own message names only its kind).
struct Chain<'a>(&'a hyper::Error);

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(e) = source {
            write!(f, ": {e}")?;
            source = e.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_millis(200);

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
}
