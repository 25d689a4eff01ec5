//! The control plane under hostile conditions (issue 13): the agent (`xlb run`, the real
//! binary) on the single-LB testbed while its API socket, its config file and its log are
//! abused.
//!
//! - API: a caller that is not root is refused with a clear error, both by the socket's mode
//!   and, when the mode lets it through, by the agent's `SO_PEERCRED` check; malformed,
//!   oversized, byte-per-second and 200 concurrent requests get an error or are cut off at
//!   the documented limits (docs/operations.md, "The control API's limits") while a
//!   well-formed `status` keeps answering (p99 within 100 ms) and the agent's memory stays
//!   within a bound ([`RSS_GROWTH_KIB`]).
//! - Config: the file replaced by garbage, a directory, a FIFO nobody writes, a huge file or
//!   a symlink loop, then a reload (API and SIGHUP): refused at once with a message naming the
//!   problem, the maps exactly as before.
//! - Log: the agent's stdout and stderr on `/dev/full` (every log line fails to write): it
//!   runs, reloads, follows a backend's failure and recovery, and answers.
//! - Interface: the LB's `eth0` set down and up twice: each change logged once, the XDP
//!   program still attached, and the VIP answering again.
//!
//! Each test builds its own testbed (unique names and pin directory) and removes it at the
//! end, also on failure. Needs root and bpffs: fails loudly rather than skip.
//! `cargo test -p integration-tests --test hostile_control -- --nocapture --test-threads=1`.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::{store, testbed_with_agent, vip_index, xlb, xlb_cli, xlb_ok};
use lb_userspace::api::{MapState, Response, StatusReport};
use lb_userspace::maps::MapStore;
use xlb_testkit::testbed::load_faults::API_BOUND;
use xlb_testkit::testbed::probe::{ApiProbe, Latency, rss_kib};
use xlb_testkit::testbed::{Mode, Options, Testbed, VipSpec, ip_in, tail, udp_ask};

/// `nobody` on Debian-like systems: a uid with no rights on the socket.
const NOBODY: u32 = 65534;
/// Connections that trickle a byte a second: a quarter of the agent's 64 slots, so that the
/// status probe always finds one (a full house is refused with `busy`, unit-tested in
/// `api::server`).
const SLOW_CLIENTS: usize = 16;
/// Connections opened at once, each with one request.
const CONCURRENT: usize = 200;
/// The agent's request deadline (docs/operations.md): a trickling client is cut off then.
const REQUEST_DEADLINE: Duration = Duration::from_secs(10);
/// How much the agent's resident set may grow over the attacks. What the API can hold at once
/// is bounded: 64 connections, each at most a 64 KiB request line (a `Vec` that may reach 128
/// KiB by doubling) and an 8 KiB read buffer, i.e. under 9 MiB, plus 64 refusals of 4 KiB;
/// the rest is the allocator keeping freed memory per thread. 16 MiB is that with room for the
/// rounding, and far below what a leak of the 1 MiB oversized requests (8 MiB sent) or of a
/// buffer per connection (several thousand opened) would add.
const RSS_GROWTH_KIB: u64 = 16 * 1024;

fn tcp_vip() -> VipSpec {
    VipSpec::tcp(Mode::Ipip, false)
}

#[test]
fn hostile_api_clients_get_errors_while_status_keeps_answering() {
    let tb = testbed_with_agent("hostile-api", "", &[tcp_vip()]);
    let socket = tb.api_socket();
    let pid = tb.agent_pid().expect("agent running");

    non_root_callers_are_refused(&tb);

    // Quiet: what the machine gives without attacks.
    let rss_before = rss_kib(pid);
    let probe = ApiProbe::every(socket.clone(), Duration::from_millis(20), Some(pid));
    thread::sleep(Duration::from_secs(2));
    let quiet = probe.finish();
    let quiet = quiet.between(quiet.calls[0].0, Instant::now() + Duration::from_secs(1));
    quiet.print("quiet");

    let probe = ApiProbe::every(socket.clone(), Duration::from_millis(20), Some(pid));
    let attack_start = Instant::now();
    let slow: Vec<_> = (0..SLOW_CLIENTS)
        .map(|_| {
            let socket = socket.clone();
            thread::spawn(move || trickle(&socket))
        })
        .collect();
    // The slow clients hold their slots while the rest runs.
    thread::sleep(Duration::from_millis(500));
    let malformed = malformed_requests(&socket);
    let oversized = oversized_requests(&socket);
    let burst = concurrent_requests(&socket);
    let held: Vec<Duration> = slow.into_iter().map(|t| t.join().unwrap()).collect();
    let attack_end = Instant::now();
    let samples = probe.stop();
    let rss_after = rss_kib(pid);

    eprintln!(
        "malformed: {malformed} lines, each answered with an error; oversized: {oversized} \
         connections answered `request longer than` and closed"
    );
    eprintln!(
        "{CONCURRENT} concurrent: {} answered by the agent, {} refused busy, slowest {:?}",
        burst.answered, burst.busy, burst.slowest
    );
    eprintln!(
        "slow clients cut off after {:?} .. {:?}",
        held.iter().min().unwrap(),
        held.iter().max().unwrap()
    );
    for h in &held {
        assert!(
            *h >= REQUEST_DEADLINE - Duration::from_millis(100)
                && *h <= REQUEST_DEADLINE + Duration::from_secs(2),
            "a byte-per-second client held its connection {h:?}: the deadline is {REQUEST_DEADLINE:?} per request"
        );
    }
    assert_eq!(
        burst.answered + burst.busy,
        CONCURRENT,
        "every concurrent request gets an answer or a busy refusal: {burst:?}"
    );
    assert!(
        burst.slowest < Duration::from_secs(5),
        "a concurrent request waited {:?}",
        burst.slowest
    );

    assert!(
        samples.failures.is_empty(),
        "status calls failed during the attacks: {:?}",
        samples.failures
    );
    let under_attack = samples.between(attack_start, attack_end);
    under_attack.print("under attack");
    let rss_max = samples.rss_max_kib.unwrap_or(rss_after).max(rss_after);
    eprintln!(
        "agent RSS {rss_before} KiB before, {rss_max} KiB at most, {rss_after} KiB after \
         (bound {} KiB)",
        rss_before + RSS_GROWTH_KIB
    );
    the_status_kept_answering(&quiet, &under_attack);
    assert!(
        rss_max <= rss_before + RSS_GROWTH_KIB,
        "agent RSS grew from {rss_before} KiB to {rss_max} KiB, more than {RSS_GROWTH_KIB} KiB"
    );
    // And still serves, on a connection of its own.
    assert!(matches!(
        tb.api(&lb_userspace::api::Request::Status),
        Response::Status(_)
    ));
}

/// `xlb status` as `nobody`: refused by the socket's mode; with the mode opened, by the
/// agent's peer-credential check. Either way a message that says what to do.
fn non_root_callers_are_refused(tb: &Testbed) {
    let socket = tb.api_socket();
    let as_nobody = || {
        Command::new(xlb())
            .args(["status", "--socket"])
            .arg(&socket)
            .uid(NOBODY)
            .gid(NOBODY)
            .output()
            .expect("running xlb as nobody")
    };
    let out = as_nobody();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "nobody got a status: {err}");
    assert!(
        err.contains(&format!(
            "permission denied on {}: run as root",
            socket.display()
        )),
        "{err}"
    );
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&socket), 0o600);
    // The socket's mode is the first wall; opened (the test's own work directory), the
    // agent's SO_PEERCRED check is the second.
    let dir = socket.parent().unwrap();
    let dir_mode = mode(dir);
    let set = |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m));
    set(dir, 0o755).unwrap();
    set(&socket, 0o666).unwrap();
    let out = as_nobody();
    set(&socket, 0o600).unwrap();
    set(dir, dir_mode).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "nobody got a status: {err}");
    assert!(
        err.contains("permission denied: the xlb API is for root only"),
        "{err}"
    );
    eprintln!("non-root: refused by the socket's mode and by SO_PEERCRED");
}

/// One connection that sends a status request a byte a second, then spaces, for at most twice
/// the deadline; how long the agent kept it open.
fn trickle(socket: &Path) -> Duration {
    let mut s = UnixStream::connect(socket).expect("connect");
    s.set_read_timeout(Some(Duration::from_millis(900)))
        .unwrap();
    let started = Instant::now();
    let request = br#"{"op":"status"}"#;
    let mut buf = [0u8; 1024];
    for i in 0..2 * REQUEST_DEADLINE.as_secs() as usize {
        let byte = request.get(i).copied().unwrap_or(b' ');
        if s.write_all(&[byte]).is_err() {
            return started.elapsed();
        }
        // Waits up to 0.9 s for the close (or an answer, which would be a failure below).
        match s.read(&mut buf) {
            Ok(0) => return started.elapsed(),
            Ok(n) => panic!(
                "an incomplete request was answered: {}",
                String::from_utf8_lossy(&buf[..n])
            ),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return started.elapsed(),
        }
        thread::sleep(Duration::from_millis(100));
    }
    started.elapsed()
}

/// Lines that are not requests, each of which must get an error and leave the connection
/// usable; 4 connections of 250 lines. Returns the lines answered.
fn malformed_requests(socket: &Path) -> usize {
    let nested = "[".repeat(10_000);
    let lines: Vec<Vec<u8>> = vec![
        b"{not json".to_vec(),
        br#"{"op":"explode"}"#.to_vec(),
        br#"{"op":"drain","vip":"tcp/203.0.113.10","addr":"198.51.100.1"}"#.to_vec(),
        br#"{"op":"set_weight","vip":"tcp/203.0.113.10:80","addr":"198.51.100.1","weight":-1}"#
            .to_vec(),
        b"\x00\xff\xfe\x80 binary".to_vec(),
        nested.into_bytes(),
        b"null".to_vec(),
    ];
    let threads: Vec<_> = (0..4)
        .map(|c| {
            let (socket, lines) = (socket.to_owned(), lines.clone());
            thread::spawn(move || {
                let s = UnixStream::connect(&socket).expect("connect");
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut w = s.try_clone().unwrap();
                let mut r = std::io::BufReader::new(s);
                let mut answered = 0;
                for i in 0..250 {
                    let line = &lines[(c + i) % lines.len()];
                    w.write_all(line).unwrap();
                    w.write_all(b"\n").unwrap();
                    let answer = read_answer(&mut r);
                    let Response::Error { message } = &answer else {
                        panic!(
                            "{:?} was accepted: {answer:?}",
                            String::from_utf8_lossy(line)
                        );
                    };
                    assert!(
                        message.starts_with("malformed request: "),
                        "{:?}: {message}",
                        String::from_utf8_lossy(line)
                    );
                    answered += 1;
                }
                w.write_all(b"{\"op\":\"status\"}\n").unwrap();
                assert!(matches!(read_answer(&mut r), Response::Status(_)));
                answered
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).sum()
}

fn read_answer(r: &mut impl std::io::BufRead) -> Response {
    let mut line = String::new();
    r.read_line(&mut line).expect("an answer line");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
}

/// 8 connections each sending 1 MiB without a newline: each gets the length error and is
/// closed. Returns the connections so answered.
fn oversized_requests(socket: &Path) -> usize {
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let socket = socket.to_owned();
            thread::spawn(move || {
                let mut s = UnixStream::connect(&socket).expect("connect");
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
                // The agent stops reading past 64 KiB and closes: the rest of the write fails.
                let _ = s.write_all(&vec![b'x'; 1 << 20]);
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = s.read(&mut buf) {
                    got.extend_from_slice(&buf[..n]);
                }
                let text = String::from_utf8_lossy(&got);
                assert!(
                    text.contains("request longer than 65536 bytes; closing the connection"),
                    "oversized request answered {text:?}"
                );
                assert_eq!(text.lines().count(), 1, "{text}");
            })
        })
        .collect();
    let n = threads.len();
    for t in threads {
        t.join().unwrap();
    }
    n
}

#[derive(Debug, Default)]
struct Burst {
    answered: usize,
    busy: usize,
    slowest: Duration,
}

/// [`CONCURRENT`] connections at once, each asking the agent's loop for something it refuses
/// quickly (a weight for a VIP it does not have): the requests reach the loop, as a runaway
/// script's would, without each costing a status report.
fn concurrent_requests(socket: &Path) -> Burst {
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(CONCURRENT));
    let threads: Vec<_> = (0..CONCURRENT)
        .map(|i| {
            let (socket, barrier) = (socket.to_owned(), barrier.clone());
            thread::spawn(move || {
                barrier.wait();
                let started = Instant::now();
                let s = UnixStream::connect(&socket).expect("connect");
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut w = s.try_clone().unwrap();
                let request = format!(
                    "{{\"op\":\"set_weight\",\"vip\":\"tcp/203.0.113.250:{}\",\
                     \"addr\":\"198.51.100.1\",\"weight\":1}}\n",
                    1000 + i
                );
                // A refused connection may be closed before the request is written.
                let _ = w.write_all(request.as_bytes());
                let answer = read_answer(&mut std::io::BufReader::new(s));
                (answer, started.elapsed())
            })
        })
        .collect();
    let mut burst = Burst::default();
    for t in threads {
        let (answer, took) = t.join().unwrap();
        burst.slowest = burst.slowest.max(took);
        match answer {
            Response::Error { message } if message == lb_userspace::api::BUSY_MESSAGE => {
                burst.busy += 1;
            }
            Response::Error { message } if message.contains("203.0.113.250") => {
                burst.answered += 1;
            }
            other => panic!("unexpected answer {other:?}"),
        }
    }
    burst
}

/// The issue's bound on the status p99; on a machine too busy to meet it without attacks
/// (cores shared with other work), three times the quiet p99, which still catches an agent
/// that stalls under them (as `load_faults` does).
fn the_status_kept_answering(quiet: &Latency, under_attack: &Latency) {
    let noisy = quiet.max >= API_BOUND / 2;
    let bound = if noisy {
        API_BOUND.max(quiet.p99 * 3)
    } else {
        API_BOUND
    };
    assert!(
        under_attack.p99 < bound,
        "status p99 under attack {:?}, over {bound:?} (quiet: {quiet})",
        under_attack.p99
    );
}

/// What the datapath reads of one VIP, and the agent's view of it.
fn state(tb: &Testbed) -> (Vec<(IpAddr, MapState, u32)>, Vec<u32>, lb_common::LbConfig) {
    let r: StatusReport = tb.status();
    let backends = r.vips[0]
        .backends
        .iter()
        .map(|b| (b.addr, b.state, b.ring_slots))
        .collect();
    let s = store(tb);
    let ring = s.ring(vip_index(&r, &r.vips[0].id)).unwrap();
    (backends, ring, s.config().unwrap())
}

#[test]
fn a_config_file_replaced_by_garbage_is_refused_and_the_running_config_stays() {
    let tb = testbed_with_agent("hostile-config", "", &[tcp_vip()]);
    let config = tb.work_dir.join("xlb.toml");
    let good = std::fs::read_to_string(&config).unwrap();
    let socket = tb.api_socket().display().to_string();
    let before = state(&tb);

    let remove = |p: &Path| {
        let _ = std::fs::remove_file(p);
        let _ = std::fs::remove_dir(p);
    };
    // Deterministic bytes that are neither UTF-8 nor TOML.
    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    let garbage: Vec<u8> = (0..64 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 56) as u8 | 0x80
        })
        .collect();
    type Make<'a> = Box<dyn Fn(&Path) + 'a>;
    let cases: Vec<(&str, &str, Make)> = vec![
        (
            "binary garbage",
            "is not UTF-8 text",
            Box::new(|p| std::fs::write(p, &garbage).unwrap()),
        ),
        (
            "text garbage",
            "TOML parse error",
            Box::new(|p| std::fs::write(p, "}{ [[vip]] = = \"\n\t garbage").unwrap()),
        ),
        (
            "an empty file",
            "no interface configured",
            Box::new(|p| std::fs::write(p, "").unwrap()),
        ),
        (
            "a directory",
            "is a directory, not a regular file",
            Box::new(|p| std::fs::create_dir(p).unwrap()),
        ),
        (
            "a FIFO without writer",
            "is a FIFO, not a regular file",
            Box::new(|p| {
                let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
                // SAFETY: a valid NUL-terminated path; mkfifo only reads it.
                assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
            }),
        ),
        (
            "a 100 MiB file",
            "is larger than 1024 KiB",
            Box::new(|p| {
                std::fs::File::create(p)
                    .unwrap()
                    .set_len(100 << 20)
                    .unwrap()
            }),
        ),
        (
            "a symlink loop",
            "cannot read",
            Box::new(|p| {
                let other = p.with_extension("loop");
                remove(&other);
                std::os::unix::fs::symlink(p, &other).unwrap();
                std::os::unix::fs::symlink(&other, p).unwrap();
            }),
        ),
    ];
    let mut timings = BTreeMap::new();
    for (what, expected, make) in &cases {
        remove(&config);
        make(&config);
        let started = Instant::now();
        let out = xlb_cli(&["reload", "--socket", &socket]);
        let took = started.elapsed();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what}: reload accepted");
        assert!(
            err.contains("reload refused, running state unchanged") && err.contains(expected),
            "{what}: {err}"
        );
        assert!(
            took < Duration::from_secs(2),
            "{what}: reload took {took:?}"
        );
        timings.insert(*what, took);
        assert_eq!(state(&tb), before, "{what}: the running state changed");
    }
    // SIGHUP with a FIFO in place: the loop must not block on it.
    remove(&config);
    remove(&config.with_extension("loop"));
    cases[4].2(&config);
    tb.signal_agent(libc::SIGHUP);
    let (r, _) = tb.wait_status("SIGHUP refused", Duration::from_secs(5), |r| {
        r.agent
            .last_reload
            .as_ref()
            .is_some_and(|l| !l.ok && l.message.contains("is a FIFO"))
    });
    assert!(
        r.vips[0]
            .backends
            .iter()
            .all(|b| b.state == MapState::Active)
    );
    assert_eq!(state(&tb), before, "SIGHUP: the running state changed");
    for (what, took) in &timings {
        eprintln!(
            "refused within {:.1} ms: {what}",
            took.as_secs_f64() * 1000.0
        );
    }
    // The good file back: reloads work again.
    remove(&config);
    std::fs::write(&config, good).unwrap();
    let out = xlb_ok(&["reload", "--socket", &socket]);
    assert!(out.starts_with("reloaded"), "{out}");
}

#[test]
fn an_agent_logging_to_a_full_disk_keeps_running_and_answering() {
    let mut tb = Testbed::up(&Options::for_test("hostile-full", 3));
    let config = tb.write_file("xlb.toml", &tb.config("", &[tcp_vip()]));
    tb.start_agent_output_to(xlb(), &config, Path::new("/dev/full"));
    tb.wait_all_active(Duration::from_secs(15));
    let pid = tb.agent_pid().unwrap();
    let socket = tb.api_socket().display().to_string();
    let id = tcp_vip().id();
    let victim = IpAddr::V4(tb.backends[2].v4);

    // Every one of these logs at info or warn, each line failing with ENOSPC.
    for i in 0..20 {
        if i % 2 == 0 {
            xlb_ok(&["reload", "--socket", &socket]);
        } else {
            std::fs::write(&config, "garbage = [").unwrap();
            assert!(!xlb_cli(&["reload", "--socket", &socket]).status.success());
            std::fs::write(&config, tb.config("", &[tcp_vip()])).unwrap();
        }
        tb.signal_agent(libc::SIGHUP);
    }
    tb.stop_backend(2);
    tb.wait_status("backend down", Duration::from_secs(15), |r| {
        common::backend_status(r, &id, victim).state == MapState::Down
    });
    tb.start_backend(2);
    tb.wait_status("backend back", Duration::from_secs(15), |r| {
        common::backend_status(r, &id, victim).state == MapState::Active
    });
    let state = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let state = state
        .lines()
        .find(|l| l.starts_with("State:"))
        .unwrap_or_default()
        .to_owned();
    assert!(!state.contains('Z'), "the agent died: {state}");
    assert!(matches!(
        tb.api(&lb_userspace::api::Request::Status),
        Response::Status(_)
    ));
    eprintln!("agent on /dev/full: 20 reloads, a backend down and up, still answering ({state})");
}

#[test]
fn the_interface_going_down_and_up_is_logged_once_each_and_the_program_stays_attached() {
    let vip = VipSpec::udp(Mode::Ipip, false);
    let tb = testbed_with_agent("hostile-link", "", std::slice::from_ref(&vip));
    let dst = vip.socket_addr();
    let ask = || {
        tb.client
            .enter(move || udp_ask(dst, Duration::from_millis(500)))
            .is_ok()
    };
    assert!(ask(), "the VIP does not answer before the test");
    let lb = tb.lb.name.clone();
    for round in 0..2 {
        ip_in(&lb, &["link", "set", "eth0", "down"]);
        thread::sleep(Duration::from_secs(1));
        assert!(
            !ask(),
            "round {round}: the VIP answered through a down interface"
        );
        ip_in(&lb, &["link", "set", "eth0", "up"]);
        let started = Instant::now();
        // Bounded: the link, the backends' neighbours and their ring slots come back.
        while !ask() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "round {round}: the VIP did not answer again within 20 s: {}",
                tail(&tb.agent_log_path(), 30)
            );
            thread::sleep(Duration::from_millis(200));
        }
        eprintln!(
            "round {round}: answering again {:.1} s after `up`",
            started.elapsed().as_secs_f64()
        );
    }
    let show = ip_in(&lb, &["-d", "link", "show", "eth0"]);
    assert!(show.contains("xdp"), "the XDP program is gone: {show}");
    // Every notification of a change triggers a resolution; the log says each change once.
    thread::sleep(Duration::from_secs(1));
    let log = std::fs::read_to_string(tb.agent_log_path()).unwrap();
    let count = |s: &str| log.lines().filter(|l| l.contains(s)).count();
    for l in log
        .lines()
        .filter(|l| l.contains("interface eth0") || l.contains(": neighbour"))
    {
        eprintln!("agent: {l}");
    }
    assert_eq!(
        (
            count("interface eth0 is down or lost its carrier"),
            count("interface eth0 is up again")
        ),
        (2, 2),
        "{}",
        tail(&tb.agent_log_path(), 40)
    );
    assert_eq!(count("has no XDP program"), 0, "{log}");
}
