//! Test support: a private network namespace per test, and tiny servers to probe inside it.
//!
//! Project rule: test traffic stays inside network namespaces the test creates, never the
//! host's. [`in_private_netns`] runs a future on a dedicated OS thread that has unshared its
//! network namespace (only that thread moves; the namespace dies with it) and brought `lo` up,
//! on a current-thread tokio runtime so every socket of the test is created in there.

use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, UdpSocket};
use tokio::task::JoinHandle;

/// Runs `test` in a fresh network namespace (only `lo`, up) on its own thread and runtime.
/// Panics, never skips, when the namespace cannot be made.
pub fn in_private_netns<F, Fut, T>(test: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    let thread = std::thread::Builder::new()
        .name("netns-test".into())
        .spawn(move || {
            // SAFETY: plain syscall; it only changes this thread's network namespace.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                let err = io::Error::last_os_error();
                if err.raw_os_error() == Some(libc::EPERM) {
                    panic!(
                        "needs root (CAP_SYS_ADMIN) for a private network namespace: \
                         unshare(CLONE_NEWNET): {err}"
                    );
                }
                panic!("unshare(CLONE_NEWNET) failed: {err}");
            }
            loopback_up().expect("bring lo up in the private network namespace");
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("build the test runtime");
            runtime.block_on(test())
        })
        .expect("spawn the namespace thread");
    match thread.join() {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// `ip link set lo up` by hand: SIOCGIFFLAGS, set IFF_UP, SIOCSIFFLAGS.
fn loopback_up() -> io::Result<()> {
    // SAFETY: plain syscall; the descriptor is owned right after.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: `ifreq` is plain old data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: `req` is a valid ifreq naming an interface, as both requests expect.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut req) < 0 {
            return Err(io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS as _, &req) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

pub fn localhost(port: u16) -> SocketAddr {
    (Ipv4Addr::LOCALHOST, port).into()
}

/// A TCP listener on `addr` (port 0 = any) with SO_REUSEADDR, so a test can stop a server and
/// start it again on the same port.
pub fn tcp_listener(addr: SocketAddr) -> TcpListener {
    let socket = TcpSocket::new_v4().expect("tcp socket");
    socket.set_reuseaddr(true).expect("SO_REUSEADDR");
    socket.bind(addr).expect("bind");
    socket.listen(128).expect("listen")
}

/// A port with nothing listening (TCP connects get RST, UDP datagrams get port unreachable).
pub fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind(localhost(0)).expect("bind");
    listener.local_addr().expect("local addr")
    // dropped here: the port is closed (UDP on the same number was never bound).
}

/// Accepts and closes connections; abort the handle (or drop the runtime) to stop it.
pub fn spawn_tcp_server(listener: TcpListener) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            drop(stream);
        }
    })
}

/// Accepts connections and holds them open without ever answering.
pub fn spawn_silent_tcp_server() -> SocketAddr {
    let listener = tcp_listener(localhost(0));
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    addr
}

/// Accepts connections and answers each with a valid status line and headers dribbled one
/// byte every 20 ms, never ending the head (a slow-loris server: every read gets data).
pub fn spawn_dribbling_http_server() -> SocketAddr {
    let listener = tcp_listener(localhost(0));
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                let head = b"HTTP/1.1 200 OK\r\nX-Slow: ";
                for b in head.iter().chain(std::iter::repeat(&b'a')) {
                    if stream.write_all(&[*b]).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            });
        }
    });
    addr
}

/// Answers every request with `status` (reads the request head, writes a bodyless response).
pub fn spawn_http_server(status: u16) -> SocketAddr {
    let listener = tcp_listener(localhost(0));
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = respond(&mut stream, status).await;
            });
        }
    });
    addr
}

/// Same as [`spawn_http_server`] behind TLS with a self-signed certificate made now.
pub fn spawn_https_server(status: u16) -> SocketAddr {
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

    let certified =
        rcgen::generate_simple_self_signed(vec!["backend.test".to_owned()]).expect("self-signed");
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_no_client_auth()
    .with_single_cert(vec![certified.cert.der().clone()], key)
    .expect("server certificate");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));

    let listener = tcp_listener(localhost(0));
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(stream).await {
                    let _ = respond(&mut tls, status).await;
                }
            });
        }
    });
    addr
}

async fn respond<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, status: u16) -> io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let response =
        format!("HTTP/1.1 {status} Test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// Replies `reply` to every datagram.
pub async fn spawn_udp_server(reply: &'static [u8]) -> SocketAddr {
    let socket = UdpSocket::bind(localhost(0)).await.expect("bind udp");
    let addr = socket.local_addr().expect("local addr");
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        while let Ok((_, peer)) = socket.recv_from(&mut buf).await {
            let _ = socket.send_to(reply, peer).await;
        }
    });
    addr
}

/// Receives datagrams and never replies.
pub async fn spawn_silent_udp_server() -> SocketAddr {
    let socket = UdpSocket::bind(localhost(0)).await.expect("bind udp");
    let addr = socket.local_addr().expect("local addr");
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        while socket.recv_from(&mut buf).await.is_ok() {}
    });
    addr
}
