//! What a test or bench measures of a running agent from outside: the answer time of its API
//! (a thread asking `status` through the Unix socket at a fixed pace) and its memory and CPU
//! from `/proc`. Shared by the continuity-peer suite, the load-with-faults scenario and the
//! reliability bench.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use lb_userspace::api::{self, Request, Response};

use super::traffic::StoppableThread;

/// Calls a probe makes at most (its time bound is the caller's stop; this keeps a forgotten
/// probe from growing without end): 10 minutes at the fastest pace.
const MAX_CALLS: usize = 60_000;

/// A thread that asks an agent's API for its status, pausing between calls, and times each answer;
/// optionally it also samples a process's resident set on each call.
pub struct ApiProbe(StoppableThread<Samples>);

/// When each call started and how long it took; the failed calls' errors.
pub struct Samples {
    pub calls: Vec<(Instant, Duration)>,
    pub failures: Vec<String>,
    /// The largest resident set seen (KiB), when the probe sampled one.
    pub rss_max_kib: Option<u64>,
}

/// The answer times of some calls.
#[derive(Clone, Debug)]
pub struct Latency {
    pub samples: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl ApiProbe {
    /// A call, then 10 ms of pause, and so on.
    pub fn start(socket: PathBuf) -> Self {
        Self::every(socket, Duration::from_millis(10), None)
    }

    /// A call, then a pause of `pace`, and so on (a slow agent is not asked faster to catch
    /// up); with `rss_of`, that process's resident set sampled on each call.
    pub fn every(socket: PathBuf, pace: Duration, rss_of: Option<u32>) -> Self {
        ApiProbe(StoppableThread::spawn(move |stop| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            let mut out = Samples {
                calls: Vec::new(),
                failures: Vec::new(),
                rss_max_kib: None,
            };
            while !stop.load(Ordering::Relaxed) && out.calls.len() < MAX_CALLS {
                let t = Instant::now();
                let r = rt.block_on(api::call(&socket, &Request::Status));
                out.calls.push((t, t.elapsed()));
                if !matches!(r, Ok(Response::Status(_))) {
                    out.failures.push(format!("{r:?}"));
                }
                if let Some(kib) = rss_of.and_then(try_rss_kib_of) {
                    out.rss_max_kib = Some(out.rss_max_kib.unwrap_or(0).max(kib));
                }
                std::thread::sleep(pace);
            }
            out
        }))
    }

    /// Stops the probe; panics if a call failed.
    pub fn finish(self) -> Samples {
        let s = self.stop();
        assert!(s.failures.is_empty(), "failed API calls: {:?}", s.failures);
        s
    }

    /// Stops the probe and returns what it saw, failed calls included.
    pub fn stop(self) -> Samples {
        self.0.stop();
        self.0.join("the API probe")
    }
}

impl Samples {
    /// The calls that started in `from..to`; panics if there were none.
    pub fn between(&self, from: Instant, to: Instant) -> Latency {
        self.latency(from..to)
            .expect("no API call in that phase: was the probe running?")
    }

    /// The calls that started in `range`, `None` if none did.
    pub fn latency(&self, range: std::ops::Range<Instant>) -> Option<Latency> {
        let mut d: Vec<Duration> = self
            .calls
            .iter()
            .filter(|(t, _)| range.contains(t))
            .map(|(_, d)| *d)
            .collect();
        d.sort();
        Some(Latency {
            samples: d.len(),
            p50: nearest_rank(&d, 50.0)?,
            p99: nearest_rank(&d, 99.0)?,
            max: *d.last()?,
        })
    }
}

impl Latency {
    pub fn print(&self, what: &str) {
        eprintln!("API status answer time, {what}: {self}");
    }
}

impl std::fmt::Display for Latency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} calls, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            self.samples,
            self.p50.as_secs_f64() * 1000.0,
            self.p99.as_secs_f64() * 1000.0,
            self.max.as_secs_f64() * 1000.0,
        )
    }
}

/// The `p`th percentile of `sorted` (nearest rank); panics when it is empty.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    nearest_rank(sorted, p).expect("the percentile of no values")
}

fn nearest_rank(sorted: &[Duration], p: f64) -> Option<Duration> {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len().max(1)) - 1).copied()
}

fn try_rss_kib_of(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// The resident set of process `pid`, KiB.
pub fn rss_kib(pid: u32) -> u64 {
    try_rss_kib_of(pid).unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status: is it running?"))
}

/// CPU time (user + system) process `pid` has used.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    // The fields after the command name (which may hold spaces) start after its ')'.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|v| v.parse().expect("utime/stime"))
        .collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis((f[0] + f[1]) * 1000 / hz)
}

/// The machine's CPU time counters (the `cpu` line of `/proc/stat`, all CPUs): how busy the
/// machine was between two reads, whoever kept it busy (figures measured on a shared machine
/// say how much else ran).
#[derive(Clone, Copy, Debug)]
pub struct CpuTimes {
    busy: u64,
    total: u64,
}

impl CpuTimes {
    pub fn now() -> CpuTimes {
        let stat = std::fs::read_to_string("/proc/stat").expect("/proc/stat");
        let f: Vec<u64> = stat
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("cpu "))
            .expect("the cpu line of /proc/stat")
            .split_whitespace()
            .map(|v| v.parse().expect("a /proc/stat count"))
            .collect();
        // user nice system idle iowait irq softirq steal ...: idle and iowait are not busy.
        let total: u64 = f.iter().take(8).sum();
        CpuTimes {
            busy: total - f[3] - f.get(4).copied().unwrap_or(0),
            total,
        }
    }

    /// The share of CPU time (0..1, over all CPUs) spent busy since `earlier`.
    pub fn busy_since(&self, earlier: &CpuTimes) -> f64 {
        let total = self.total.saturating_sub(earlier.total);
        if total == 0 {
            return 0.0;
        }
        self.busy.saturating_sub(earlier.busy) as f64 / total as f64
    }
}

/// The 1, 5 and 15 minute load averages.
pub fn loadavg() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").expect("/proc/loadavg");
    let mut f = text
        .split_whitespace()
        .map(|v| v.parse::<f64>().expect("a load average"));
    [(); 3].map(|_| f.next().expect("three load averages"))
}

/// The `/metrics` text of the agent serving on `addr` in network namespace `ns`.
pub fn scrape_metrics(ns: &str, addr: std::net::SocketAddr) -> String {
    crate::netns::enter_named(ns, move || {
        use std::io::{Read as _, Write as _};
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .expect("connect to the metrics endpoint");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        // HTTP/1.0: the answer ends with the connection, never chunked.
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).expect("metrics answer");
        text
    })
}

/// The value of the sample `name` (with its labels) in metrics `text`.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let ms = |n| Duration::from_millis(n);
        let d: Vec<Duration> = (1..=100).map(ms).collect();
        assert_eq!(percentile(&d, 50.0), ms(50));
        assert_eq!(percentile(&d, 99.0), ms(99));
        assert_eq!(percentile(&d, 100.0), ms(100));
        assert_eq!(percentile(&[ms(7)], 99.0), ms(7));
        assert_eq!(nearest_rank(&[], 50.0), None);
    }

    #[test]
    fn own_rss_and_cpu_are_read() {
        let me = std::process::id();
        assert!(rss_kib(me) > 0);
        let _ = cpu_time(me);
        let t0 = CpuTimes::now();
        let busy = CpuTimes::now().busy_since(&t0);
        assert!((0.0..=1.0).contains(&busy));
        assert!(loadavg()[0] >= 0.0);
    }
}
