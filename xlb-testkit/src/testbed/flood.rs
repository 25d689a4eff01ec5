//! A bounded SYN flood from many spoofed sources: raw Ethernet frames (an `AF_PACKET` socket on
//! an interface of a test namespace) carrying TCP SYNs to one VIP, each from another
//! (address, port) of the given documentation ranges, paced in phases of a packet count and a
//! rate, and stopped by a time limit whatever the count. Used by the load-with-faults scenario
//! ([`super::load_faults`]) and through it by the reliability bench.
//!
//! Every frame of a flood is a different flow: frame `i` takes the `i`-th element of a
//! permutation (seeded) of the (source address, source port) space, so the program writes a
//! new flow-table entry for each and the number of distinct flows sent is the number of frames.
//! Checksums are valid, as on a wire, so the backends' stacks take the SYNs as they would take
//! an attacker's (and drop their answers: the sources have no route back in the testbed).

use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::traffic::StoppableThread;
use crate::csum;

/// Source ports the flood uses (the unprivileged ones).
const FIRST_PORT: u16 = 1024;
const PORTS: u64 = 65536 - FIRST_PORT as u64;
/// Frames sent back to back at most before the pacer looks at the clock again.
const BURST: u64 = 64;
/// Ethernet + IPv4 (20) + TCP with an MSS option (24).
const FRAME_LEN: usize = 14 + 20 + 24;

/// A run of consecutive source addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceRange {
    pub first: Ipv4Addr,
    pub count: u32,
}

impl SourceRange {
    fn addr(&self, i: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.first) + i)
    }
}

/// `count` frames at `rate_pps`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FloodPhase {
    pub packets: u64,
    pub rate_pps: u64,
}

impl FloodPhase {
    /// How long the phase lasts at its rate.
    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.packets as f64 / self.rate_pps.max(1) as f64)
    }
}

#[derive(Clone, Debug)]
pub struct FloodOptions {
    /// The interface of the sending namespace the frames leave by.
    pub iface: String,
    pub src_mac: [u8; 6],
    /// The LB's MAC: the frames go to it directly, as from the last router before it.
    pub dst_mac: [u8; 6],
    pub target: SocketAddrV4,
    /// The spoofed sources (never a VIP or a testbed host: see the scenario).
    pub sources: Vec<SourceRange>,
    /// In order; the flood ends after the last, or at `time_limit`.
    pub phases: Vec<FloodPhase>,
    pub time_limit: Duration,
    /// Picks the permutation of sources and the sequence numbers; printed, so a run can be
    /// replayed.
    pub seed: u64,
}

impl FloodOptions {
    /// Frames of all phases.
    pub fn packets(&self) -> u64 {
        self.phases.iter().map(|p| p.packets).sum()
    }
}

/// What a flood did.
#[derive(Clone, Debug, Default)]
pub struct FloodReport {
    /// Frames the socket took (each a distinct flow), in all and per phase.
    pub sent: u64,
    pub sent_per_phase: Vec<u64>,
    /// Frames the socket refused, and the first reason.
    pub send_errors: u64,
    pub first_error: Option<String>,
    pub elapsed: Duration,
    /// Stopped by the time limit (or a stop request) before the last phase's count.
    pub cut_short: bool,
}

/// The (source address, source port) of every frame: a permutation of the whole space, so no
/// two frames of one flood share a flow.
#[derive(Clone, Debug)]
pub struct FloodKeys {
    sources: Vec<SourceRange>,
    addrs: u64,
    space: u64,
    step: u64,
    offset: u64,
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// SplitMix64: the flood's only randomness, reproducible from the seed.
fn splitmix(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl FloodKeys {
    pub fn new(sources: &[SourceRange], seed: u64) -> FloodKeys {
        let addrs: u64 = sources.iter().map(|r| u64::from(r.count)).sum();
        assert!(addrs > 0, "a flood needs source addresses");
        let space = addrs * PORTS;
        let mut s = seed;
        // `i -> i * step + offset (mod space)` is a bijection when step and space are coprime;
        // a step near the golden ratio of the space scatters consecutive frames over sources
        // and ports alike.
        let mut step = ((space as f64 * 0.618_033_988_7) as u64 + splitmix(&mut s) % 1024) | 1;
        while gcd(step, space) != 1 {
            step += 2;
        }
        FloodKeys {
            sources: sources.to_vec(),
            addrs,
            space,
            step,
            offset: splitmix(&mut s) % space,
        }
    }

    /// Distinct keys there are.
    pub fn space(&self) -> u64 {
        self.space
    }

    /// The source of frame `i` (`i < space`).
    pub fn key(&self, i: u64) -> (Ipv4Addr, u16) {
        assert!(
            i < self.space,
            "frame {i}: the flood has {} flows",
            self.space
        );
        let k = ((u128::from(i) * u128::from(self.step) + u128::from(self.offset))
            % u128::from(self.space)) as u64;
        let (mut a, port) = (k % self.addrs, FIRST_PORT + (k / self.addrs) as u16);
        for r in &self.sources {
            if a < u64::from(r.count) {
                return (r.addr(a as u32), port);
            }
            a -= u64::from(r.count);
        }
        unreachable!("address index within the ranges")
    }
}

/// One SYN frame from `src` to `dst` with valid IPv4 and TCP checksums.
pub fn syn_frame(
    macs: ([u8; 6], [u8; 6]),
    src: SocketAddrV4,
    dst: SocketAddrV4,
    ip_id: u16,
    seq: u32,
) -> [u8; FRAME_LEN] {
    let (dst_mac, src_mac) = macs;
    let mut f = [0u8; FRAME_LEN];
    f[..6].copy_from_slice(&dst_mac);
    f[6..12].copy_from_slice(&src_mac);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(44u16).to_be_bytes());
    ip[4..6].copy_from_slice(&ip_id.to_be_bytes());
    ip[6] = 0x40; // DF
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&src.ip().octets());
    ip[16..20].copy_from_slice(&dst.ip().octets());
    let c = csum::checksum(ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let tcp = &mut f[34..];
    tcp[..2].copy_from_slice(&src.port().to_be_bytes());
    tcp[2..4].copy_from_slice(&dst.port().to_be_bytes());
    tcp[4..8].copy_from_slice(&seq.to_be_bytes());
    tcp[12] = 6 << 4; // data offset: 24 bytes
    tcp[13] = 0x02; // SYN
    tcp[14..16].copy_from_slice(&64240u16.to_be_bytes());
    tcp[20..24].copy_from_slice(&[2, 4, 0x05, 0xb4]); // MSS 1460
    let c = csum::l4_checksum(IpAddr::V4(*src.ip()), IpAddr::V4(*dst.ip()), 6, tcp);
    tcp[16..18].copy_from_slice(&c.to_be_bytes());
    f
}

/// A flood running on a thread of its own, inside a namespace.
pub struct Flood {
    thread: StoppableThread<FloodReport>,
    sent: Arc<AtomicU64>,
    pub started: Instant,
}

impl Flood {
    /// Opens the socket in namespace `ns` (by name) and starts sending; returns once the socket
    /// is bound (panics with the reason if it cannot be). The sending thread runs at nice 19:
    /// on a network the attacker is another machine, here it shares the agent's cores, and the
    /// softirq work its frames cause runs mostly in its own context.
    pub fn start(ns: &str, opts: FloodOptions) -> Flood {
        assert!(
            opts.packets() <= FloodKeys::new(&opts.sources, opts.seed).space(),
            "more frames than distinct (source, port) pairs"
        );
        let path = format!("/var/run/netns/{ns}");
        let nsfile = fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        let sent = Arc::new(AtomicU64::new(0));
        let progress = Arc::clone(&sent);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let thread = StoppableThread::spawn(move |stop| {
            let sock = match open_socket(&nsfile, &opts.iface) {
                Ok(s) => s,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return FloodReport::default();
                }
            };
            let _ = ready_tx.send(Ok(()));
            send_all(&sock, &opts, &stop, &progress)
        });
        ready_rx
            .recv()
            .expect("flood thread ended")
            .unwrap_or_else(|e| panic!("SYN flood: {e}"));
        Flood {
            thread,
            sent,
            started: Instant::now(),
        }
    }

    /// Frames sent so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Waits for the flood's end (its last phase, or its time limit).
    pub fn wait(self) -> FloodReport {
        self.thread.join("the SYN flood")
    }

    /// Asks the flood to stop now and returns what it sent.
    pub fn stop(self) -> FloodReport {
        self.thread.stop();
        self.thread.join("the SYN flood")
    }
}

/// A raw `AF_PACKET` socket bound to `iface` in the namespace of `nsfile` (this thread moves
/// there; the socket stays in that namespace).
fn open_socket(nsfile: &fs::File, iface: &str) -> Result<OwnedFd, String> {
    let name = std::ffi::CString::new(iface).map_err(|e| e.to_string())?;
    // SAFETY: setns changes only this thread's namespace; the socket calls use a descriptor
    // owned by `sock` and a sockaddr of the size passed.
    unsafe {
        if libc::setns(nsfile.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
            return Err(format!("setns: {}", io::Error::last_os_error()));
        }
        // The lowest priority, for this thread only (see `Flood::start`).
        libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 19);
        // Protocol 0: this socket sends only, it receives nothing.
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(format!("socket: {}", io::Error::last_os_error()));
        }
        let sock = OwnedFd::from_raw_fd(fd);
        let ifindex = libc::if_nametoindex(name.as_ptr());
        if ifindex == 0 {
            return Err(format!("no interface {iface}"));
        }
        let mut sll: libc::sockaddr_ll = std::mem::zeroed();
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = ifindex as i32;
        if libc::bind(
            sock.as_raw_fd(),
            &sll as *const _ as *const _,
            size_of::<libc::sockaddr_ll>() as u32,
        ) != 0
        {
            return Err(format!("bind to {iface}: {}", io::Error::last_os_error()));
        }
        Ok(sock)
    }
}

fn send_all(
    sock: &OwnedFd,
    opts: &FloodOptions,
    stop: &AtomicBool,
    progress: &AtomicU64,
) -> FloodReport {
    let keys = FloodKeys::new(&opts.sources, opts.seed);
    let mut rng = opts.seed ^ 0x5eed_f100d;
    let start = Instant::now();
    let mut r = FloodReport::default();
    let mut i = 0u64;
    let over = || stop.load(Ordering::Relaxed) || start.elapsed() > opts.time_limit;
    for phase in &opts.phases {
        let (phase_start, mut done) = (Instant::now(), 0u64);
        while done < phase.packets && !over() {
            let due = (phase_start.elapsed().as_secs_f64() * phase.rate_pps as f64) as u64;
            let due = due.min(phase.packets);
            if due <= done {
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            for _ in 0..(due - done).min(BURST) {
                let (src, sport) = keys.key(i);
                i += 1;
                done += 1;
                let x = splitmix(&mut rng);
                let frame = syn_frame(
                    (opts.dst_mac, opts.src_mac),
                    SocketAddrV4::new(src, sport),
                    opts.target,
                    x as u16,
                    (x >> 32) as u32,
                );
                // SAFETY: sends `frame`'s bytes, of the length passed, on our socket.
                let n =
                    unsafe { libc::send(sock.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
                if n == frame.len() as isize {
                    r.sent += 1;
                    progress.store(r.sent, Ordering::Relaxed);
                } else {
                    r.send_errors += 1;
                    r.first_error
                        .get_or_insert_with(|| io::Error::last_os_error().to_string());
                }
            }
        }
        r.sent_per_phase
            .push(r.sent - r.sent_per_phase.iter().sum::<u64>());
    }
    r.cut_short = i < opts.packets();
    r.elapsed = start.elapsed();
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn ranges() -> Vec<SourceRange> {
        vec![
            SourceRange {
                first: Ipv4Addr::new(192, 0, 2, 1),
                count: 254,
            },
            SourceRange {
                first: Ipv4Addr::new(203, 0, 113, 128),
                count: 127,
            },
        ]
    }

    #[test]
    fn keys_are_distinct_and_inside_the_ranges() {
        let keys = FloodKeys::new(&ranges(), 42);
        assert_eq!(keys.space(), 381 * PORTS);
        let mut seen = HashSet::new();
        for i in 0..200_000 {
            let (a, p) = keys.key(i);
            let o = a.octets();
            assert!(
                (o[..3] == [192, 0, 2] && (1..=254).contains(&o[3]))
                    || (o[..3] == [203, 0, 113] && (128..=254).contains(&o[3])),
                "{a}"
            );
            assert!(p >= FIRST_PORT);
            assert!(seen.insert((a, p)), "frame {i} repeats {a}:{p}");
        }
        // Both ranges are used, and another seed gives another order.
        assert!(seen.iter().any(|(a, _)| a.octets()[0] == 192));
        assert!(seen.iter().any(|(a, _)| a.octets()[0] == 203));
        assert_ne!(FloodKeys::new(&ranges(), 43).key(0), keys.key(0));
    }

    #[test]
    fn a_small_space_is_a_permutation() {
        let one = [SourceRange {
            first: Ipv4Addr::new(192, 0, 2, 7),
            count: 1,
        }];
        let keys = FloodKeys::new(&one, 7);
        let all: HashSet<_> = (0..keys.space()).map(|i| keys.key(i)).collect();
        assert_eq!(all.len() as u64, PORTS);
    }

    #[test]
    fn syn_frames_are_valid_on_the_wire() {
        let src = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 9), 40000);
        let dst = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 11), 80);
        let f = syn_frame(([2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 0x64]), src, dst, 7, 99);
        assert_eq!(f[12..14], [0x08, 0x00]);
        let ip = etherparse::Ipv4HeaderSlice::from_slice(&f[14..]).expect("IPv4 header");
        assert_eq!(ip.source_addr(), *src.ip());
        assert_eq!(ip.destination_addr(), *dst.ip());
        assert_eq!(usize::from(ip.total_len()), FRAME_LEN - 14);
        assert!(csum::verifies(&f[14..34]));
        let tcp = etherparse::TcpHeaderSlice::from_slice(&f[34..]).expect("TCP header");
        assert!(tcp.syn() && !tcp.ack());
        assert_eq!((tcp.source_port(), tcp.destination_port()), (40000, 80));
        let pseudo = csum::pseudo_header(IpAddr::V4(*src.ip()), IpAddr::V4(*dst.ip()), 6, 24);
        assert_eq!(csum::finish(csum::sum(&f[34..], pseudo)), 0);
    }

    #[test]
    fn phases_last_their_count_over_their_rate() {
        let p = FloodPhase {
            packets: 3000,
            rate_pps: 1000,
        };
        assert_eq!(p.duration(), Duration::from_secs(3));
    }
}
