//! The end-to-end part of `cargo xtask bench`: a testbed of network namespaces of its own
//! (the address plan of `xlb-testplan`, as `xlb_testkit::testbed`), three paths measured with the
//! same client, backends and traffic:
//!
//! ```text
//!   client ns              switch ns (bridge br0)               LB ns
//!   eth0 198.51.100.100 -- c0 (xlb_pass) [   ] l0 (xlb_pass) -- eth0 198.51.100.2 (xlb / HAProxy)
//!                                        [   ] b1 -- be1 ns eth0 .11 (nginx, iperf3; VIP on lo)
//!                                        [   ] b2 -- be2 ns eth0 .12 (nginx; VIP on lo)
//! ```
//!
//! - direct: the client to the backends' own addresses (one wrk per backend, summed); the other
//!   two paths run the same number of wrk processes, each to the one address they serve on;
//! - xlb: `xlb run` (native XDP on the LB's eth0), VIP 203.0.113.10, dsr-l2 (replies go from
//!   the backends straight to the client);
//! - HAProxy: TCP mode, one thread pinned to one CPU, on the LB's own address.
//!
//! Then the packet rate: xdp-trafficgen (UDP/IPv6, its only UDP family) from the client to the
//! IPv6 VIP, forwarded by xlb; then by `xlb_reflect` on the same interface. And the XDP
//! live-frames mode of `xlb-bench live` on the LB's eth0. Everything is removed on drop.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use serde::Deserialize;
use xlb_bench_data::e2e::{self, HttpSuite, Iperf, PpsPair};
use xlb_testplan::{
    CLIENT_MAC, CLIENT_V4, CLIENT_V6, LB_MAC, LB_V4, LB_V6, Mode, backend_addrs, fmt_mac,
};

use crate::bench::{Bins, run_json};
use crate::cmd::output;

const BACKENDS: usize = 2;
const WRK_CONNS: u32 = 32;

/// The VIP: the plan's first VIP address (the testbed's ipip one; forwarded here in dsr-l2
/// mode, which the address does not constrain).
fn vip(v6: bool) -> String {
    Mode::Ipip.vip(v6).to_string()
}
/// Backend `i` of the `be<i>` namespaces (1-based): the plan's backend `i - 1`.
fn backend_v4(i: usize) -> String {
    backend_addrs(i - 1).0.to_string()
}
fn backend_v6(i: usize) -> String {
    backend_addrs(i - 1).1.to_string()
}

/// Everything the testbed created; removed on drop.
struct Topo {
    prefix: String,
    namespaces: Vec<String>,
    children: Vec<(String, Child)>,
    tmp: PathBuf,
    pin_dir: PathBuf,
}

impl Topo {
    fn ns(&self, role: &str) -> String {
        format!("{}-{role}", self.prefix)
    }

    fn ip(&self, role: &str, args: &[&str]) -> Result<String> {
        let ns = self.ns(role);
        let mut c = Command::new("ip");
        c.args(["-n", &ns]).args(args);
        output(&mut c)
    }

    fn exec(&self, role: &str, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(role)]).args(args);
        c
    }

    fn sysctl(&self, role: &str, kv: &[&str]) -> Result<()> {
        let mut c = self.exec(role, &["sysctl", "-q", "-w"]);
        c.args(kv);
        output(&mut c).map(drop)
    }

    fn spawn(&mut self, what: &str, mut cmd: Command, log: &str) -> Result<u32> {
        let log = std::fs::File::create(self.tmp.join(log))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {what}"))?;
        let pid = child.id();
        self.children.push((what.to_string(), child));
        Ok(pid)
    }

    /// Starts an `xlb-bench hold` (aux program attached while it lives), waits for "ready".
    fn hold(&mut self, bench: &Path, role: &str, prog: &str, ifname: &str) -> Result<u32> {
        let mut cmd = self.exec(role, &[]);
        cmd.arg(bench)
            .args(["hold", "--prog", prog, "--ifname", ifname]);
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
        let pid = child.id();
        self.children
            .push((format!("{prog} on {role}:{ifname}"), child));
        if line.trim() != "ready" {
            bail!("xlb-bench hold {prog} on {role}:{ifname} did not attach");
        }
        Ok(pid)
    }

    fn stop(&mut self, pid: u32) {
        if let Some(i) = self.children.iter().position(|(_, c)| c.id() == pid) {
            let (_, mut c) = self.children.remove(i);
            terminate(&mut c);
        }
    }
}

fn terminate(c: &mut Child) {
    // A child that already exited makes this fail; the wait below then returns at once.
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(c.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(5) {
        if let Ok(Some(_)) = c.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = c.kill();
    let _ = c.wait();
}

impl Drop for Topo {
    fn drop(&mut self) {
        while let Some((_, mut c)) = self.children.pop() {
            terminate(&mut c);
        }
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.pin_dir);
        let _ = std::fs::remove_dir_all(&self.tmp);
    }
}

fn build_topology(t: &mut Topo) -> Result<()> {
    let roles: Vec<String> = ["sw", "cli", "lb"]
        .iter()
        .map(|s| s.to_string())
        .chain((1..=BACKENDS).map(|i| format!("be{i}")))
        .collect();
    for r in &roles {
        let ns = t.ns(r);
        output(Command::new("ip").args(["netns", "add", &ns]))?;
        t.namespaces.push(ns);
        t.ip(r, &["link", "set", "lo", "up"])?;
    }
    let sw = t.ns("sw");
    t.ip("sw", &["link", "add", "br0", "type", "bridge"])?;
    t.ip("sw", &["link", "set", "br0", "up"])?;
    // The bridge stands in for a switch: no netfilter on bridged frames. (With br_netfilter
    // loaded on the host, a new namespace starts with these at 1, and every bridge pass runs
    // the IP hooks: a fifth of the CPU in a profile of the xlb path, which crosses the bridge
    // twice per request packet.)
    if Path::new("/proc/sys/net/bridge/bridge-nf-call-iptables").exists() {
        t.sysctl(
            "sw",
            &[
                "net.bridge.bridge-nf-call-iptables=0",
                "net.bridge.bridge-nf-call-ip6tables=0",
                "net.bridge.bridge-nf-call-arptables=0",
            ],
        )?;
    }
    let attach = |role: &str, port: &str, mac: Option<&str>, v4: &str, v6: &str| -> Result<()> {
        t.ip(
            role,
            &[
                "link", "add", "eth0", "type", "veth", "peer", "name", port, "netns", &sw,
            ],
        )?;
        if let Some(mac) = mac {
            t.ip(role, &["link", "set", "eth0", "address", mac])?;
        }
        t.ip("sw", &["link", "set", port, "master", "br0"])?;
        t.ip("sw", &["link", "set", port, "up"])?;
        t.ip(role, &["addr", "add", &format!("{v4}/24"), "dev", "eth0"])?;
        t.ip(
            role,
            &["addr", "add", &format!("{v6}/64"), "dev", "eth0", "nodad"],
        )?;
        t.ip(role, &["link", "set", "eth0", "up"])?;
        Ok(())
    };
    attach(
        "cli",
        "c0",
        Some(&fmt_mac(&CLIENT_MAC)),
        &CLIENT_V4.to_string(),
        &CLIENT_V6.to_string(),
    )?;
    attach(
        "lb",
        "l0",
        Some(&fmt_mac(&LB_MAC)),
        &LB_V4.to_string(),
        &LB_V6.to_string(),
    )?;
    for i in 1..=BACKENDS {
        attach(
            &format!("be{i}"),
            &format!("b{i}"),
            None,
            &backend_v4(i),
            &backend_v6(i),
        )?;
    }
    // Through XDP a frame loses the skb's "checksum not computed yet" mark (veth offloads it),
    // so the client computes its checksums itself (also turns TSO off: MTU-sized segments, as
    // on a real link; the same for all three paths).
    output(&mut t.exec("cli", &["ethtool", "-K", "eth0", "tx", "off"]))?;
    // A veth pair of its own for the live-frames mode (lv1 gets xlb_pass, bridged nowhere).
    t.ip(
        "lb",
        &[
            "link", "add", "lv0", "type", "veth", "peer", "name", "lv1", "netns", &sw,
        ],
    )?;
    t.ip("lb", &["link", "set", "lv0", "up"])?;
    t.ip("sw", &["link", "set", "lv1", "up"])?;
    t.ip(
        "cli",
        &[
            "route",
            "add",
            &format!("{}/32", vip(false)),
            "via",
            &LB_V4.to_string(),
        ],
    )?;
    t.ip(
        "cli",
        &[
            "route",
            "add",
            &format!("{}/128", vip(true)),
            "via",
            &LB_V6.to_string(),
        ],
    )?;
    t.sysctl(
        "cli",
        &[
            "net.ipv4.ip_local_port_range=1024 65000",
            "net.ipv4.tcp_tw_reuse=1",
        ],
    )?;
    for i in 1..=BACKENDS {
        let r = format!("be{i}");
        t.ip(
            &r,
            &["addr", "add", &format!("{}/32", vip(false)), "dev", "lo"],
        )?;
        t.ip(
            &r,
            &["addr", "add", &format!("{}/128", vip(true)), "dev", "lo"],
        )?;
        t.sysctl(
            &r,
            &[
                "net.ipv4.conf.all.arp_ignore=1",
                "net.ipv4.conf.all.arp_announce=2",
                "net.ipv4.conf.all.rp_filter=0",
                "net.ipv4.tcp_max_tw_buckets=1000000",
                "net.core.somaxconn=4096",
            ],
        )?;
    }
    t.sysctl("lb", &["net.core.somaxconn=4096"])?;
    Ok(())
}

fn nginx_conf(dir: &Path, i: usize) -> Result<PathBuf> {
    let d = dir.join(format!("nginx{i}"));
    std::fs::create_dir_all(&d)?;
    let conf = format!(
        "worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
         events {{ worker_connections 8192; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d};\n  proxy_temp_path {d};\n  \
         fastcgi_temp_path {d};\n  uwsgi_temp_path {d};\n  scgi_temp_path {d};\n  \
         keepalive_requests 1000000;\n  server {{\n    listen 80 backlog=4096;\n    \
         listen [::]:80 backlog=4096;\n    location / {{ return 200 \"be{i}\\n\"; }}\n  }}\n}}\n",
        d = d.display()
    );
    let path = d.join("nginx.conf");
    std::fs::write(&path, conf)?;
    Ok(path)
}

fn haproxy_conf(dir: &Path) -> Result<PathBuf> {
    let mut c = format!(
        "global\n  nbthread 1\n  maxconn 8000\n\
         defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 30s\n  timeout server 30s\n\
         frontend http\n  bind {LB_V4}:80\n  default_backend http\n\
         backend http\n  balance roundrobin\n",
    );
    for i in 1..=BACKENDS {
        c.push_str(&format!("  server be{i} {}:80\n", backend_v4(i)));
    }
    c.push_str(&format!(
        "frontend iperf\n  bind {LB_V4}:5201\n  default_backend iperf\n\
         backend iperf\n  server be1 {}:5201\n",
        backend_v4(1)
    ));
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, c)?;
    Ok(path)
}

fn xlb_conf(dir: &Path, pin_dir: &Path) -> Result<PathBuf> {
    let mut c = format!(
        "[agent]\ninterfaces = [{{ name = \"eth0\", xdp-mode = \"native\" }}]\n\
         lb-src-v4 = \"{LB_V4}\"\nlb-src-v6 = \"{LB_V6}\"\nflow-table-size = 1048576\n\
         max-vips = 8\nmax-backends = 64\npin-dir = \"{}\"\napi-socket = \"{}\"\n\
         metrics-listen = \"off\"\ndetach-on-exit = true\n",
        pin_dir.display(),
        dir.join("xlb.sock").display()
    );
    let add_vip = |c: &mut String, addr: &str, port: u16, proto: &str, backends: &[String]| {
        c.push_str(&format!(
            "[[vip]]\naddress = \"{addr}\"\nport = {port}\nprotocol = \"{proto}\"\n\
             mode = \"dsr-l2\"\n[vip.health]\nkind = \"none\"\n"
        ));
        for b in backends {
            c.push_str(&format!("[[vip.backend]]\naddress = \"{b}\"\n"));
        }
    };
    let v4: Vec<String> = (1..=BACKENDS).map(backend_v4).collect();
    let v6: Vec<String> = (1..=BACKENDS).map(backend_v6).collect();
    let (vip_v4, vip_v6) = (vip(false), vip(true));
    add_vip(&mut c, &vip_v4, 80, "tcp", &v4);
    add_vip(&mut c, &vip_v4, 5201, "tcp", &v4[..1]);
    add_vip(&mut c, &vip_v4, 9000, "udp", &v4);
    add_vip(&mut c, &vip_v6, 9000, "udp", &v6);
    let path = dir.join("xlb.toml");
    std::fs::write(&path, c)?;
    Ok(path)
}

/// `1.23ms` -> 1.23 (milliseconds).
fn wrk_ms(s: &str) -> Option<f64> {
    let s = s.trim();
    let (num, mult) = if let Some(v) = s.strip_suffix("us") {
        (v, 1e-3)
    } else if let Some(v) = s.strip_suffix("ms") {
        (v, 1.0)
    } else if let Some(v) = s.strip_suffix('s') {
        (v, 1e3)
    } else {
        (s, 1.0)
    };
    num.parse::<f64>().ok().map(|v| v * mult)
}

#[derive(Default, Clone, Copy)]
struct Wrk {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

fn parse_wrk(out: &str) -> Result<Wrk> {
    let mut w = Wrk::default();
    for line in out.lines() {
        let l = line.trim();
        if let Some(v) = l.strip_prefix("Requests/sec:") {
            w.rps = v.trim().parse().unwrap_or(0.0);
        } else if let Some(v) = l.strip_prefix("50%") {
            w.p50_ms = wrk_ms(v).unwrap_or(0.0);
        } else if let Some(v) = l.strip_prefix("99%") {
            w.p99_ms = wrk_ms(v).unwrap_or(0.0);
        } else if let Some(v) = l.strip_prefix("Socket errors:") {
            w.errors += v
                .split(',')
                .filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok())
                .sum::<u64>();
        } else if let Some(v) = l.strip_prefix("Non-2xx or 3xx responses:") {
            w.errors += v.trim().parse::<u64>().unwrap_or(0);
        }
    }
    if w.rps == 0.0 {
        bail!("wrk reported no requests: {out}");
    }
    Ok(w)
}

/// wrk from the client against each of `targets` at once (connections split), summed.
fn wrk_parallel(t: &Topo, targets: &[String], secs: u32, close: bool) -> Result<e2e::Wrk> {
    let conns = if close { WRK_CONNS / 2 } else { WRK_CONNS };
    let per = (conns / targets.len() as u32).max(1).to_string();
    let d = format!("{secs}s");
    let mut procs = Vec::new();
    for target in targets {
        let mut c = t.exec(
            "cli",
            &[
                "wrk",
                "-t1",
                "-c",
                &per,
                "-d",
                &d,
                "--latency",
                "--timeout",
                "2s",
            ],
        );
        if close {
            c.args(["-H", "Connection: close"]);
        }
        c.arg(format!("http://{target}/"));
        eprintln!("$ {}", crate::cmd::display(&c));
        procs.push(
            c.stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()?,
        );
    }
    let mut sum = Wrk::default();
    let mut p50s = Vec::new();
    for p in procs {
        let out = p.wait_with_output()?;
        let w = parse_wrk(&String::from_utf8_lossy(&out.stdout))?;
        sum.rps += w.rps;
        sum.errors += w.errors;
        sum.p99_ms = sum.p99_ms.max(w.p99_ms);
        p50s.push(w.p50_ms);
    }
    sum.p50_ms = p50s.iter().sum::<f64>() / p50s.len() as f64;
    Ok(e2e::Wrk {
        targets: targets.to_vec(),
        connections: conns,
        connection_close: close,
        seconds: secs,
        requests_per_s: sum.rps,
        p50_ms: sum.p50_ms,
        p99_ms: sum.p99_ms,
        errors: sum.errors,
    })
}

/// The part of `iperf3 -J`'s document the report uses: `end.sum_received.bits_per_second`.
#[derive(Deserialize)]
struct IperfJson {
    end: IperfEnd,
}
#[derive(Deserialize)]
struct IperfEnd {
    sum_received: IperfSum,
}
#[derive(Deserialize)]
struct IperfSum {
    bits_per_second: f64,
}

fn iperf(t: &Topo, target: &str, port: u16, secs: u32) -> Result<Iperf> {
    let mut c = t.exec(
        "cli",
        &[
            "iperf3",
            "-c",
            target,
            "-p",
            &port.to_string(),
            "-t",
            &secs.to_string(),
            "-J",
        ],
    );
    let out = output(&mut c)?;
    let v: IperfJson =
        serde_json::from_str(&out).context("iperf3 -J output (no end.sum_received?)")?;
    Ok(Iperf {
        target: target.to_string(),
        seconds: secs,
        gbit_per_s: v.end.sum_received.bits_per_second / 1e9,
    })
}

/// Sum of the `*xdp_tx` counters of `ethtool -S eth0` in the LB namespace.
fn lb_xdp_tx(t: &Topo) -> Result<u64> {
    let out = output(&mut t.exec("lb", &["ethtool", "-S", "eth0"]))?;
    Ok(out
        .lines()
        .filter_map(|l| l.trim().split_once(':'))
        .filter(|(k, _)| k.trim().ends_with("xdp_tx"))
        .filter_map(|(_, v)| v.trim().parse::<u64>().ok())
        .sum())
}

/// UDP to the VIP from the client for `secs` (`xlb-bench gen`: live-frames XDP_TX out of the
/// client's veth, what xdp-trafficgen does; Debian's xdp-trafficgen 1.3 fails to load on this
/// kernel); the LB's XDP_TX rate in the middle of the run.
fn pps(t: &mut Topo, bench: &Path, secs: u32) -> Result<e2e::Pps> {
    let mut c = t.exec("cli", &[]);
    c.arg(bench).args([
        "gen",
        "--ifname",
        "eth0",
        "--seconds",
        &(secs + 3).to_string(),
        "--dst-mac",
        &fmt_mac(&LB_MAC),
        "--src-mac",
        &fmt_mac(&CLIENT_MAC),
        "--src",
        &CLIENT_V4.to_string(),
        "--dst",
        &vip(false),
        "--dport",
        "9000",
        "--cpu",
        "0",
    ]);
    eprintln!("$ {}", crate::cmd::display(&c));
    let pid = t.spawn("generator", c, "gen.log")?;
    std::thread::sleep(Duration::from_secs(2));
    let a = lb_xdp_tx(t)?;
    let ta = Instant::now();
    std::thread::sleep(Duration::from_secs(u64::from(secs)));
    let b = lb_xdp_tx(t)?;
    let dt = ta.elapsed().as_secs_f64();
    t.stop(pid);
    let log = std::fs::read_to_string(t.tmp.join("gen.log")).unwrap_or_default();
    if b <= a {
        bail!("no XDP_TX on the LB during the traffic run; the generator said: {log}");
    }
    Ok(e2e::Pps {
        xdp_tx_pps: (b - a) as f64 / dt,
        seconds: dt,
    })
}

/// What to look at when the VIP does not answer.
fn diagnostics(t: &Topo, xlb: &Path) -> String {
    let pin = t.pin_dir.display().to_string();
    let x = xlb.display().to_string();
    let mut out = String::new();
    let cmds: Vec<(&str, Vec<&str>)> = vec![
        ("lb", vec![&x, "inspect", "--pin-dir", &pin, "stats"]),
        ("lb", vec![&x, "inspect", "--pin-dir", &pin, "backends"]),
        ("lb", vec!["ip", "neigh"]),
        ("lb", vec!["ethtool", "-S", "eth0"]),
        ("be1", vec!["ip", "-s", "link", "show", "eth0"]),
        ("sw", vec!["ip", "-s", "link"]),
    ];
    for (role, args) in cmds {
        let r = output(&mut t.exec(role, &args));
        out.push_str(&format!(
            "--- {role}: {}\n{}\n",
            args.join(" "),
            r.unwrap_or_else(|e| format!("{e:#}"))
        ));
    }
    out
}

fn wait_http(t: &Topo, url: &str, limit: Duration) -> Result<()> {
    let start = Instant::now();
    while start.elapsed() < limit {
        let ok = t
            .exec("cli", &["curl", "-s", "-m", "1", "-o", "/dev/null", url])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!("{url} not answering from the client after {limit:?}")
}

fn http_suite(t: &Topo, targets: &[String], iperf_target: &str, secs: u32) -> Result<HttpSuite> {
    Ok(HttpSuite {
        keepalive: wrk_parallel(t, targets, secs, false)?,
        connection_close: wrk_parallel(t, targets, secs, true)?,
        iperf3: iperf(t, iperf_target, 5201, secs)?,
    })
}

pub fn run(bins: &Bins, secs: u32) -> Result<e2e::Report> {
    for tool in ["wrk", "haproxy", "nginx", "iperf3", "curl", "ethtool"] {
        if crate::cmd::find_on_path(tool).is_none() && !Path::new("/usr/sbin").join(tool).exists() {
            bail!("{tool} is missing: run `cargo xtask setup`");
        }
    }
    let id = std::process::id();
    let tmp = std::env::temp_dir().join(format!("xlb-bench-{id}"));
    std::fs::create_dir_all(&tmp)?;
    let mut t = Topo {
        prefix: format!("xb{id}"),
        namespaces: Vec::new(),
        children: Vec::new(),
        tmp: tmp.clone(),
        pin_dir: PathBuf::from(format!("/sys/fs/bpf/xlb-bench-{id}")),
    };
    build_topology(&mut t)?;
    // A veth delivers XDP_TX / redirected frames only to a peer with an XDP program.
    t.hold(&bins.bench, "sw", "pass", "l0")?;
    t.hold(&bins.bench, "sw", "pass", "c0")?;
    t.hold(&bins.bench, "sw", "pass", "lv1")?;

    // Live frames on a veth of the LB namespace whose peer only passes them to its stack.
    let live = run_json(
        t.exec("lb", &[])
            .arg(&bins.bench)
            .args(["live", "--ifname", "lv0", "--frames", "1000000"]),
        Duration::from_secs(120),
    )?;

    for i in 1..=BACKENDS {
        let conf = nginx_conf(&tmp, i)?;
        let mut c = t.exec(&format!("be{i}"), &["nginx", "-c"]);
        c.arg(&conf).args(["-e", "stderr"]);
        t.spawn(&format!("nginx be{i}"), c, &format!("nginx{i}.log"))?;
    }
    let c = t.exec("be1", &["iperf3", "-s", "-p", "5201"]);
    t.spawn("iperf3 server", c, "iperf3.log")?;
    for i in 1..=BACKENDS {
        wait_http(
            &t,
            &format!("http://{}/", backend_v4(i)),
            Duration::from_secs(10),
        )?;
    }
    let direct_targets: Vec<String> = (1..=BACKENDS).map(backend_v4).collect();
    let direct = http_suite(&t, &direct_targets, &backend_v4(1), secs)?;

    // xlb.
    let conf = xlb_conf(&tmp, &t.pin_dir)?;
    let mut c = Command::new("nsenter");
    c.arg(format!("--net=/run/netns/{}", t.ns("lb")))
        .arg(&bins.xlb)
        .args(["run", "--config"])
        .arg(&conf);
    let xlb_pid = t.spawn("xlb run", c, "xlb.log")?;
    if let Err(e) = wait_http(
        &t,
        &format!("http://{}/", vip(false)),
        Duration::from_secs(20),
    ) {
        let log = std::fs::read_to_string(tmp.join("xlb.log")).unwrap_or_default();
        bail!(
            "{e}; xlb log:\n{log}\ndiagnostics:\n{}",
            diagnostics(&t, &bins.xlb)
        );
    }
    let agent_memory = run_json(
        Command::new(&bins.bench).args(["proc-memory", "--pid", &xlb_pid.to_string()]),
        Duration::from_secs(10),
    )?;
    // As many wrk processes (and connections) as the direct path runs: the same client.
    let via_xlb = http_suite(&t, &vec![vip(false); BACKENDS], &vip(false), secs)?;
    let xlb_pps = pps(&mut t, &bins.bench, secs)?;
    let xlb_log = std::fs::read_to_string(tmp.join("xlb.log")).unwrap_or_default();
    t.stop(xlb_pid); // detach-on-exit: the program leaves eth0

    // HAProxy, one thread on one CPU.
    let conf = haproxy_conf(&tmp)?;
    let mut c = t.exec("lb", &["taskset", "-c", "1", "haproxy", "-db", "-f"]);
    c.arg(&conf);
    let hap = t.spawn("haproxy", c, "haproxy.log")?;
    wait_http(&t, &format!("http://{LB_V4}/"), Duration::from_secs(10))?;
    let via_haproxy = http_suite(
        &t,
        &vec![LB_V4.to_string(); BACKENDS],
        &LB_V4.to_string(),
        secs,
    )?;
    t.stop(hap);

    // The reflector on the same interface, same traffic.
    let r = t.hold(&bins.bench, "lb", "reflect", "eth0")?;
    let reflect_pps = pps(&mut t, &bins.bench, secs)?;
    t.stop(r);

    Ok(e2e::Report {
        backends: BACKENDS,
        wrk_connections: WRK_CONNS,
        direct,
        xlb: via_xlb,
        haproxy: via_haproxy,
        pps: PpsPair {
            xlb: xlb_pps,
            reflect: reflect_pps,
        },
        live_frames: live,
        agent_memory,
        xlb_log_tail: xlb_log.lines().rev().take(5).map(String::from).collect(),
    })
}
