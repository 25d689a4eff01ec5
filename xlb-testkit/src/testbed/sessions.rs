//! Long-lived TCP connections, each asking for `/` every `interval` over HTTP/1.1 keep-alive
//! (the testbed's backends keep such connections open), and what each one saw: which backend
//! answered, how many requests completed, the first failure, and the longest gap between two
//! completed requests. Used by the multi-LB tests (node loss, return, drain) and the failover
//! bench. Bounded: a fixed number of connections, each stopping at the deadline.

use std::io::{self, BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::traffic::{StoppableThread, tcp_connect_from};
use crate::netns::enter_named;

#[derive(Clone, Debug)]
pub struct SessionOptions {
    pub target: SocketAddr,
    pub connections: usize,
    /// Time between the starts of two requests on one connection.
    pub interval: Duration,
    /// Each connection stops asking this long after the run started.
    pub duration: Duration,
    /// Connections are opened spread over this time (not all SYNs at once).
    pub ramp: Duration,
    /// A request not answered within this fails its connection.
    pub request_timeout: Duration,
    /// Local ports of the first connections (in order; chosen to give their flows a known
    /// ring slot); the others take a port the kernel picks.
    pub local_ports: Vec<u16>,
}

/// What one connection saw; times are since the run started.
#[derive(Clone, Debug, Default)]
pub struct SessionReport {
    pub local_port: u16,
    /// The backend that answered the first request.
    pub backend: Option<String>,
    pub requests_ok: u64,
    /// The first failure (the connection stops there): when, and why.
    pub failure: Option<(Duration, String)>,
    /// A later request answered by another backend than the first (the connection broke).
    pub switched_backend: bool,
    /// Longest time between two completed requests.
    pub max_gap: Duration,
    /// When the longest gap ended.
    pub max_gap_end: Duration,
    pub last_ok: Option<Duration>,
}

impl SessionReport {
    pub fn failed(&self) -> bool {
        self.failure.is_some() || self.switched_backend
    }
}

/// A run of sessions in a namespace, on a thread of its own.
pub struct Sessions {
    pub started: Instant,
    thread: StoppableThread<Vec<SessionReport>>,
}

impl Sessions {
    /// Starts `opts.connections` sessions from namespace `ns` (by name; `None`: this
    /// process's); returns at once.
    pub fn start(ns: Option<&str>, opts: &SessionOptions) -> Sessions {
        let started = Instant::now();
        let (ns, opts) = (ns.map(str::to_owned), opts.clone());
        let thread = StoppableThread::spawn(move |stop| {
            let run = move || {
                // Threads made here inherit this thread's namespace.
                std::thread::scope(|s| {
                    let handles: Vec<_> = (0..opts.connections)
                        .map(|i| {
                            let (opts, stop) = (&opts, &*stop);
                            let delay =
                                opts.ramp.mul_f64(i as f64 / opts.connections.max(1) as f64);
                            let port = opts.local_ports.get(i).copied().unwrap_or(0);
                            s.spawn(move || one_session(opts, port, started, delay, stop))
                        })
                        .collect();
                    handles
                        .into_iter()
                        .map(|h| h.join().expect("session thread"))
                        .collect()
                })
            };
            match ns {
                Some(ns) => enter_named(&ns, run),
                None => run(),
            }
        });
        Sessions { started, thread }
    }

    /// Asks every connection to stop after its current request.
    pub fn stop(&self) {
        self.thread.stop();
    }

    /// Waits for every connection's end (at most the run's duration plus a request timeout).
    pub fn join(self) -> Vec<SessionReport> {
        self.thread.join("sessions thread")
    }
}

fn sleep_until(t: Instant, stop: &AtomicBool) {
    while Instant::now() < t && !stop.load(Ordering::Relaxed) {
        std::thread::sleep((t - Instant::now()).min(Duration::from_millis(50)));
    }
}

fn one_session(
    opts: &SessionOptions,
    local_port: u16,
    started: Instant,
    delay: Duration,
    stop: &AtomicBool,
) -> SessionReport {
    let mut r = SessionReport::default();
    sleep_until(started + delay, stop);
    let end = started + opts.duration;
    let (port, conn) = tcp_connect_from(local_port, opts.target, opts.request_timeout);
    r.local_port = port;
    let stream = match conn {
        Ok(s) => s,
        Err(e) => {
            r.failure = Some((started.elapsed(), format!("connect: {e}")));
            return r;
        }
    };
    if let Err(e) = stream.set_read_timeout(Some(opts.request_timeout)) {
        r.failure = Some((started.elapsed(), format!("socket: {e}")));
        return r;
    }
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(e) => {
            r.failure = Some((started.elapsed(), format!("socket: {e}")));
            return r;
        }
    });
    let mut writer = stream;
    let mut next = Instant::now();
    let mut last_ok: Option<Instant> = None;
    while Instant::now() < end && !stop.load(Ordering::Relaxed) {
        match request(&mut writer, &mut reader) {
            Ok(backend) => {
                let now = Instant::now();
                if let Some(prev) = last_ok
                    && now - prev > r.max_gap
                {
                    r.max_gap = now - prev;
                    r.max_gap_end = now - started;
                }
                last_ok = Some(now);
                r.last_ok = Some(now - started);
                r.requests_ok += 1;
                match &r.backend {
                    None => r.backend = Some(backend),
                    Some(b) if *b != backend => {
                        r.switched_backend = true;
                        r.failure =
                            Some((now - started, format!("answered by {backend}, not {b}")));
                        return r;
                    }
                    Some(_) => {}
                }
            }
            Err(e) => {
                r.failure = Some((started.elapsed(), e.to_string()));
                return r;
            }
        }
        next += opts.interval;
        sleep_until(next, stop);
    }
    r
}

/// One keep-alive request; the answering backend's name.
fn request(w: &mut TcpStream, r: &mut BufReader<TcpStream>) -> io::Result<String> {
    w.write_all(b"GET / HTTP/1.1\r\nHost: xlb-testbed\r\nConnection: keep-alive\r\n\r\n")?;
    let mut line = String::new();
    r.read_line(&mut line)?;
    if !line.starts_with("HTTP/1.1 200") {
        return Err(io::Error::other(format!("status line {line:?}")));
    }
    let mut len = None;
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(io::Error::other("connection closed in the header"));
        }
        if line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse::<usize>().ok();
        }
    }
    let len = len.ok_or_else(|| io::Error::other("no Content-Length"))?;
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    Ok(String::from_utf8_lossy(&body)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_owned())
}

/// Summary of a run: connections tried, survived, failed, and gap percentiles over the
/// connections that survived.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionSummary {
    pub tried: usize,
    pub survived: usize,
    pub failed: usize,
    pub gap_p50: Duration,
    pub gap_p100: Duration,
}

pub fn summarize(reports: &[SessionReport]) -> SessionSummary {
    let mut gaps: Vec<Duration> = reports
        .iter()
        .filter(|r| !r.failed())
        .map(|r| r.max_gap)
        .collect();
    gaps.sort();
    let pick = |q: f64| {
        gaps.get(((gaps.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or_default()
    };
    SessionSummary {
        tried: reports.len(),
        survived: gaps.len(),
        failed: reports.iter().filter(|r| r.failed()).count(),
        gap_p50: pick(0.5),
        gap_p100: pick(1.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_counts_and_gap_percentiles() {
        let ok = |ms| SessionReport {
            max_gap: Duration::from_millis(ms),
            ..SessionReport::default()
        };
        let mut failed = ok(5000);
        failed.failure = Some((Duration::ZERO, "x".into()));
        let s = summarize(&[ok(100), ok(120), ok(900), failed]);
        assert_eq!((s.tried, s.survived, s.failed), (4, 3, 1));
        assert_eq!(s.gap_p50, Duration::from_millis(120));
        assert_eq!(s.gap_p100, Duration::from_millis(900));
    }

    #[test]
    fn sessions_against_a_keep_alive_server_count_requests_and_gaps() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let target = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in listener.incoming().take(2) {
                let s = s.unwrap();
                std::thread::spawn(move || {
                    let mut r = BufReader::new(s.try_clone().unwrap());
                    let mut w = s;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            let _ = w.write_all(
                                b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nbackend-1\n",
                            );
                        }
                    }
                });
            }
        });
        // The first connection from a port of our choosing (free a moment ago).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let opts = SessionOptions {
            target,
            connections: 2,
            interval: Duration::from_millis(50),
            duration: Duration::from_millis(500),
            ramp: Duration::ZERO,
            request_timeout: Duration::from_secs(2),
            local_ports: vec![port],
        };
        let reports = Sessions::start(None, &opts).join();
        assert_eq!(reports[0].local_port, port);
        assert_ne!(reports[1].local_port, port);
        for r in &reports {
            assert!(!r.failed(), "{r:?}");
            assert_eq!(r.backend.as_deref(), Some("backend-1"));
            assert!(r.requests_ok >= 5, "{r:?}");
            assert!(r.max_gap >= Duration::from_millis(40), "{r:?}");
        }
    }
}
