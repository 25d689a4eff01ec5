//! The client side (call from a thread inside the client namespace): HTTP and UDP requests
//! that tell which backend answered, bounded load, and packet capture on an interface.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::netns::Netns;

/// What a backend answered, and from which local endpoint the client asked.
#[derive(Clone, Debug)]
pub struct Reply {
    /// The backend's name (first word of the answer).
    pub backend: String,
    pub body: String,
    pub local: SocketAddr,
}

fn sockaddr(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: zeroed sockaddr_storage is valid; we fill the family-specific prefix.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage.
            unsafe { std::ptr::write(&mut ss as *mut _ as *mut libc::sockaddr_in, sin) };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: sockaddr_in6 fits in sockaddr_storage.
            unsafe { std::ptr::write(&mut ss as *mut _ as *mut libc::sockaddr_in6, sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// A TCP connection whose local port is known even when connecting fails: binds port 0 first,
/// then connects within `timeout`.
pub fn tcp_connect(dst: SocketAddr, timeout: Duration) -> (u16, io::Result<TcpStream>) {
    tcp_connect_from(0, dst, timeout)
}

/// [`tcp_connect`] from local port `port` (0: one the kernel picks).
pub fn tcp_connect_from(
    port: u16,
    dst: SocketAddr,
    timeout: Duration,
) -> (u16, io::Result<TcpStream>) {
    let family = if dst.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket calls on a descriptor we own (OwnedFd closes it on every path).
    unsafe {
        let fd = match cvt(libc::socket(
            family,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )) {
            Ok(fd) => OwnedFd::from_raw_fd(fd),
            Err(e) => return (0, Err(e)),
        };
        let any = if dst.is_ipv4() {
            SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))
        } else {
            SocketAddr::from((Ipv6Addr::UNSPECIFIED, port))
        };
        let (ss, len) = sockaddr(&any);
        if let Err(e) = cvt(libc::bind(fd.as_raw_fd(), &ss as *const _ as *const _, len)) {
            return (0, Err(e));
        }
        let mut local: libc::sockaddr_storage = std::mem::zeroed();
        let mut llen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        let _ = libc::getsockname(fd.as_raw_fd(), &mut local as *mut _ as *mut _, &mut llen);
        let port = if dst.is_ipv4() {
            u16::from_be((*(&local as *const _ as *const libc::sockaddr_in)).sin_port)
        } else {
            u16::from_be((*(&local as *const _ as *const libc::sockaddr_in6)).sin6_port)
        };
        let (ss, len) = sockaddr(&dst);
        let rc = libc::connect(fd.as_raw_fd(), &ss as *const _ as *const _, len);
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINPROGRESS) {
                return (port, Err(e));
            }
            let mut pfd = libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLOUT,
                revents: 0,
            };
            let n = libc::poll(&mut pfd, 1, timeout.as_millis() as libc::c_int);
            if n == 0 {
                return (
                    port,
                    Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
                );
            }
            let mut err: libc::c_int = 0;
            let mut elen = size_of::<libc::c_int>() as libc::socklen_t;
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                &mut err as *mut _ as *mut _,
                &mut elen,
            );
            if err != 0 {
                return (port, Err(io::Error::from_raw_os_error(err)));
            }
        }
        let stream = TcpStream::from(fd);
        if let Err(e) = stream.set_nonblocking(false) {
            return (port, Err(e));
        }
        (port, Ok(stream))
    }
}

/// `GET path` over HTTP/1.0; the reply must be 200.
pub fn http_get(dst: SocketAddr, path: &str, timeout: Duration) -> Result<Reply, (u16, io::Error)> {
    let (port, stream) = tcp_connect(dst, timeout);
    let fail = |e: io::Error| (port, e);
    let mut s = stream.map_err(fail)?;
    let local = s.local_addr().map_err(fail)?;
    s.set_read_timeout(Some(timeout)).map_err(fail)?;
    s.set_write_timeout(Some(timeout)).map_err(fail)?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: xlb-testbed\r\n\r\n").map_err(fail)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(fail)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| fail(io::Error::other(format!("no HTTP header end in {text:?}"))))?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        return Err(fail(io::Error::other(format!("not 200: {head:?}"))));
    }
    Ok(Reply {
        backend: body.split_whitespace().next().unwrap_or("").to_owned(),
        body: body.to_owned(),
        local,
    })
}

/// One datagram to `dst` from a connected socket (so only a reply from `dst` itself counts).
pub fn udp_ask(dst: SocketAddr, timeout: Duration) -> io::Result<Reply> {
    let any: SocketAddr = if dst.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let s = UdpSocket::bind(any)?;
    s.connect(dst)?;
    s.set_read_timeout(Some(timeout))?;
    s.send(b"hello")?;
    let mut buf = [0u8; 1500];
    let n = s.recv(&mut buf)?;
    let body = String::from_utf8_lossy(&buf[..n]).into_owned();
    Ok(Reply {
        backend: body.split_whitespace().next().unwrap_or("").to_owned(),
        body,
        local: s.local_addr()?,
    })
}

/// Outcome of a bounded run of requests.
#[derive(Debug, Default)]
pub struct Tally {
    /// Answers per backend name.
    pub by_backend: BTreeMap<String, usize>,
    /// Failed requests: local port, error, when (since the start).
    pub failures: Vec<(u16, io::Error, Duration)>,
    /// Requests sent (stops early at the time limit).
    pub sent: usize,
    pub elapsed: Duration,
}

impl Tally {
    pub fn ok(&self) -> usize {
        self.by_backend.values().sum()
    }
}

/// One request's outcome, as [`http_load`] reports it to its observer.
pub enum Outcome<'a> {
    Ok(&'a Reply),
    /// The client's local port, and why.
    Failed(u16, &'a io::Error),
}

/// `n` HTTP GETs of `/` (at most `time_limit` in all), spread over `workers` threads. Call
/// inside the client namespace. `observe` sees each outcome with its time since the start,
/// from the worker thread, right away (e.g. to look up a failed flow's backend before its port
/// is reused).
pub fn http_load(
    dst: SocketAddr,
    n: usize,
    workers: usize,
    time_limit: Duration,
    observe: &(dyn Fn(Outcome<'_>, Duration) + Sync),
) -> Tally {
    let start = Instant::now();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let tally = std::sync::Mutex::new(Tally::default());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                while next.fetch_add(1, Ordering::Relaxed) < n && start.elapsed() < time_limit {
                    // Patient: a loaded CI machine can stall a backend's server for a while.
                    let r = http_get(dst, "/", Duration::from_secs(5));
                    let at = start.elapsed();
                    match &r {
                        Ok(reply) => observe(Outcome::Ok(reply), at),
                        Err((port, e)) => observe(Outcome::Failed(*port, e), at),
                    }
                    let mut t = tally.lock().unwrap();
                    t.sent += 1;
                    match r {
                        Ok(reply) => *t.by_backend.entry(reply.backend).or_default() += 1,
                        Err((port, e)) => t.failures.push((port, e, at)),
                    }
                }
            });
        }
    });
    let mut t = tally.into_inner().unwrap();
    t.elapsed = start.elapsed();
    t
}

// ---------------------------------------------------------------------------------------------
// Packet capture (AF_PACKET) on an interface of a namespace

/// An IP frame seen on the wire.
#[derive(Clone, Debug)]
pub struct Frame {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    /// Sent by this host (else received).
    pub outgoing: bool,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IP protocol / next header (no extension headers walked).
    pub proto: u8,
    /// TCP/UDP ports (0 otherwise).
    pub sport: u16,
    pub dport: u16,
    /// ICMP/ICMPv6 type.
    pub icmp_type: Option<u8>,
    pub len: usize,
}

fn parse_frame(buf: &[u8], outgoing: bool) -> Option<Frame> {
    let mac = |o: usize| -> [u8; 6] { buf[o..o + 6].try_into().unwrap() };
    if buf.len() < 14 {
        return None;
    }
    let ethertype = u16::from_be_bytes([buf[12], buf[13]]);
    let ip = &buf[14..];
    let (src, dst, proto, l4): (IpAddr, IpAddr, u8, &[u8]) = match ethertype {
        0x0800 if ip.len() >= 20 => {
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            let s: [u8; 4] = ip[12..16].try_into().ok()?;
            let d: [u8; 4] = ip[16..20].try_into().ok()?;
            (s.into(), d.into(), ip[9], ip.get(ihl..)?)
        }
        0x86dd if ip.len() >= 40 => {
            let s: [u8; 16] = ip[8..24].try_into().ok()?;
            let d: [u8; 16] = ip[24..40].try_into().ok()?;
            (s.into(), d.into(), ip[6], &ip[40..])
        }
        _ => return None,
    };
    let (sport, dport, icmp_type) = match proto {
        6 | 17 if l4.len() >= 4 => (
            u16::from_be_bytes([l4[0], l4[1]]),
            u16::from_be_bytes([l4[2], l4[3]]),
            None,
        ),
        1 | 58 if !l4.is_empty() => (0, 0, Some(l4[0])),
        _ => (0, 0, None),
    };
    Some(Frame {
        src_mac: mac(6),
        dst_mac: mac(0),
        outgoing,
        src,
        dst,
        proto,
        sport,
        dport,
        icmp_type,
        len: buf.len(),
    })
}

/// A thread that runs until asked to stop; asked, and joined, on drop too, so a test that
/// panics leaves no thread behind.
pub struct StoppableThread<T> {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<T>>,
}

impl<T: Send + 'static> StoppableThread<T> {
    /// Runs `body` on a thread of its own; it should return soon after its flag is set.
    pub fn spawn(body: impl FnOnce(Arc<AtomicBool>) -> T + Send + 'static) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        StoppableThread {
            stop,
            thread: Some(std::thread::spawn(move || body(flag))),
        }
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Waits for the thread's end (without asking it to stop) and returns what it returned;
    /// panics with `what` if the thread panicked.
    pub fn join(mut self, what: &str) -> T {
        self.thread.take().unwrap().join().expect(what)
    }
}

impl<T> Drop for StoppableThread<T> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `setsockopt(SOL_SOCKET, name, value)`, best effort (the capture works without either).
fn socket_option<T>(sock: &OwnedFd, name: libc::c_int, value: &T) {
    // SAFETY: `value` points to a live `T` of the size passed; the descriptor is `sock`'s.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            name,
            (value as *const T).cast(),
            size_of::<T>() as u32,
        );
    }
}

/// Records the IP frames of one interface until [`Capture::finish`].
pub struct Capture(StoppableThread<Vec<Frame>>);

impl Capture {
    /// Starts capturing on `iface` of `ns`; returns once the socket is bound.
    pub fn start(ns: &Netns, iface: &str) -> Capture {
        let path = format!("/var/run/netns/{}", ns.name);
        let nsfile = fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        let iface = std::ffi::CString::new(iface).unwrap();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let thread = StoppableThread::spawn(move |stop| {
            let mut frames = Vec::new();
            // SAFETY: setns changes only this thread's namespace; the socket calls use a
            // descriptor owned by `sock` and buffers of the sizes passed.
            unsafe {
                if libc::setns(nsfile.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    let _ = ready_tx.send(Err(format!("setns: {}", io::Error::last_os_error())));
                    return frames;
                }
                let proto = (libc::ETH_P_ALL as u16).to_be();
                let fd = libc::socket(
                    libc::AF_PACKET,
                    libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                    i32::from(proto),
                );
                if fd < 0 {
                    let _ = ready_tx.send(Err(format!("socket: {}", io::Error::last_os_error())));
                    return frames;
                }
                let sock = OwnedFd::from_raw_fd(fd);
                let ifindex = libc::if_nametoindex(iface.as_ptr());
                let mut sll: libc::sockaddr_ll = std::mem::zeroed();
                sll.sll_family = libc::AF_PACKET as u16;
                sll.sll_protocol = proto;
                sll.sll_ifindex = ifindex as i32;
                if ifindex == 0
                    || libc::bind(
                        sock.as_raw_fd(),
                        &sll as *const _ as *const _,
                        size_of::<libc::sockaddr_ll>() as u32,
                    ) != 0
                {
                    let _ = ready_tx.send(Err(format!(
                        "bind to {iface:?}: {}",
                        io::Error::last_os_error()
                    )));
                    return frames;
                }
                let tv = libc::timeval {
                    tv_sec: 0,
                    tv_usec: 50_000,
                };
                socket_option(&sock, libc::SO_RCVTIMEO, &tv);
                // Room for bursts: a dropped frame would make the test's count wrong.
                let rcvbuf: libc::c_int = 8 << 20;
                socket_option(&sock, libc::SO_RCVBUFFORCE, &rcvbuf);
                let _ = ready_tx.send(Ok(()));
                let mut buf = vec![0u8; 65536];
                loop {
                    let mut from: libc::sockaddr_ll = std::mem::zeroed();
                    let mut flen = size_of::<libc::sockaddr_ll>() as u32;
                    let n = libc::recvfrom(
                        sock.as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        0,
                        &mut from as *mut _ as *mut _,
                        &mut flen,
                    );
                    if n > 0 {
                        let outgoing = from.sll_pkttype == libc::PACKET_OUTGOING;
                        if let Some(f) = parse_frame(&buf[..n as usize], outgoing) {
                            frames.push(f);
                        }
                    } else if stop.load(Ordering::Relaxed) {
                        // Drained: a receive timed out after the stop request.
                        return frames;
                    }
                }
            }
        });
        ready_rx
            .recv()
            .expect("capture thread ended")
            .unwrap_or_else(|e| panic!("packet capture: {e}"));
        Capture(thread)
    }

    /// Stops (after the socket has been drained) and returns the frames.
    pub fn finish(self) -> Vec<Frame> {
        self.0.stop();
        self.0.join("capture thread")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testbed::plan::*;

    #[test]
    fn frames_parse() {
        let mut f = vec![0u8; 14 + 20 + 8];
        f[..6].copy_from_slice(&CLIENT_MAC);
        f[6..12].copy_from_slice(&backend_mac(0));
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[14 + 9] = 17;
        f[14 + 12..14 + 16].copy_from_slice(&[203, 0, 113, 10]);
        f[14 + 16..14 + 20].copy_from_slice(&CLIENT_V4.octets());
        f[34..36].copy_from_slice(&9000u16.to_be_bytes());
        f[36..38].copy_from_slice(&40000u16.to_be_bytes());
        let p = parse_frame(&f, false).unwrap();
        assert_eq!(p.src_mac, backend_mac(0));
        assert_eq!(p.src, Mode::Ipip.vip(false));
        assert_eq!((p.proto, p.sport, p.dport), (17, 9000, 40000));
        assert!(parse_frame(&f[..20], false).is_none());
    }
}
