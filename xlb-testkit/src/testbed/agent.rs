//! The agent under test: its config (generated, or an example adapted to the testbed's
//! paths), `xlb run` in the LB namespace, signals, its API and waiting for a status.

use std::fmt::Write as _;
use std::fs;
use std::future::Future;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use lb_userspace::api::{self, Request, Response, StatusReport};

use super::plan::*;
use super::{ProcRecord, Resources, Testbed, tail, wait_exit};
use crate::netns::Netns;

/// Runs a future on a current-thread runtime (API calls from plain test code).
pub(super) fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(f)
}

impl Testbed {
    /// The agent's API socket (its config's `api-socket`).
    pub fn api_socket(&self) -> PathBuf {
        self.work_dir.join("xlb.sock")
    }

    /// Writes a file into the work directory.
    pub fn write_file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.work_dir.join(name);
        fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        path
    }

    /// An agent config for this testbed ([`agent_config`] with its paths and backends).
    pub fn config(&self, agent_extra: &str, vips: &[VipSpec]) -> String {
        agent_config(
            &self.pin_dir(),
            &self.api_socket(),
            self.backends.len(),
            agent_extra,
            vips,
        )
    }

    /// `template` (a config such as examples/demo.toml) with this testbed's pin dir and API
    /// socket ([`adapt_config`]).
    pub fn adapt_config(&self, template: &str) -> String {
        adapt_config(template, &self.pin_dir(), &self.api_socket())
    }

    /// Starts `xlb run --config CONFIG` in the LB namespace and waits until its API answers
    /// (at most 30 s). Its log goes to `agent-N.log` in the work directory.
    pub fn start_agent(&mut self, xlb: &Path, config: &Path) {
        assert!(self.agent.is_none(), "an agent is already running");
        self.agents_started += 1;
        let child = spawn_agent(
            &self.lb,
            xlb,
            config,
            &self.agent_log_path(),
            &self.api_socket(),
            None,
            &mut self.res,
        );
        self.agent = Some(child);
    }

    /// As [`Testbed::start_agent`], with the agent's stdout and stderr on `output` (opened for
    /// writing: `/dev/full` to test a full disk) instead of a log file.
    pub fn start_agent_output_to(&mut self, xlb: &Path, config: &Path, output: &Path) {
        assert!(self.agent.is_none(), "an agent is already running");
        self.agents_started += 1;
        let out = fs::OpenOptions::new()
            .write(true)
            .open(output)
            .unwrap_or_else(|e| panic!("opening {}: {e}", output.display()));
        let child = spawn_agent_with(
            &self.lb,
            xlb,
            config,
            out,
            None,
            &self.api_socket(),
            None,
            &mut self.res,
        );
        self.agent = Some(child);
    }

    pub fn agent_log_path(&self) -> PathBuf {
        self.work_dir
            .join(format!("agent-{}.log", self.agents_started))
    }

    pub fn agent_pid(&self) -> Option<u32> {
        self.agent.as_ref().map(Child::id)
    }

    /// Sends `signal` to the agent without waiting.
    pub fn signal_agent(&self, signal: i32) {
        let pid = self.agent_pid().expect("no agent running");
        // SAFETY: plain syscall on our child.
        unsafe { libc::kill(pid as i32, signal) };
    }

    /// Waits (at most `timeout`) for the agent to exit; `None` if it still runs.
    pub fn wait_agent_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let child = self.agent.as_mut().expect("no agent running");
        let status = wait_exit(child, timeout)?;
        if let Some(child) = self.agent.take() {
            self.res.forget(&child);
        }
        Some(status)
    }

    /// `kill -9` on the agent, and reaps it.
    pub fn kill_agent(&mut self) {
        self.signal_agent(libc::SIGKILL);
        self.wait_agent_exit(Duration::from_secs(10))
            .expect("the agent survived SIGKILL");
    }

    /// One API request to the running agent.
    pub fn api(&self, req: &Request) -> Response {
        block_on(api::call(&self.api_socket(), req))
            .unwrap_or_else(|e| panic!("API call {req:?}: {e}"))
    }

    /// `xlb status` as data.
    pub fn status(&self) -> StatusReport {
        match self.api(&Request::Status) {
            Response::Status(r) => r,
            other => panic!("status: {other:?}"),
        }
    }

    /// Polls the status (every 50 ms) until `done` holds; panics after `timeout` with the last
    /// report and the agent's log. Returns the report and when it first held.
    pub fn wait_status(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&StatusReport) -> bool,
    ) -> (StatusReport, Instant) {
        let deadline = Instant::now() + timeout;
        loop {
            let r = self.status();
            if done(&r) {
                return (r, Instant::now());
            }
            if Instant::now() > deadline {
                panic!(
                    "{what}: not reached within {timeout:?}\nstatus:\n{}\nagent log:\n{}",
                    r.render_table(),
                    tail(&self.agent_log_path(), 30)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until every backend of every VIP is active in the maps with ring slots.
    pub fn wait_all_active(&self, timeout: Duration) -> StatusReport {
        self.wait_status("every backend active", timeout, all_active)
            .0
    }
}

/// Every VIP has backends, and every backend is active in the maps with ring slots.
pub(super) fn all_active(r: &StatusReport) -> bool {
    r.vips.iter().all(|v| {
        !v.backends.is_empty()
            && v.backends
                .iter()
                .all(|b| b.state == api::MapState::Active && b.ring_slots > 0)
    })
}

/// Starts `xlb run --config CONFIG` in `ns` (recorded in `res` before anything can fail; its
/// log to `log_path`) and waits (at most 30 s) until its API on `socket` answers. `node` names
/// the LB node of a multi-LB testbed in the panic messages and the process record.
pub(super) fn spawn_agent(
    ns: &Netns,
    xlb: &Path,
    config: &Path,
    log_path: &Path,
    socket: &Path,
    node: Option<&str>,
    res: &mut Resources,
) -> Child {
    let log = fs::File::create(log_path).unwrap();
    spawn_agent_with(ns, xlb, config, log, Some(log_path), socket, node, res)
}

/// [`spawn_agent`] with its output on `log`, whose path (for the panic messages) is `log_path`
/// when it is a file worth reading back.
#[allow(clippy::too_many_arguments)]
fn spawn_agent_with(
    ns: &Netns,
    xlb: &Path,
    config: &Path,
    log: fs::File,
    log_path: Option<&Path>,
    socket: &Path,
    node: Option<&str>,
    res: &mut Resources,
) -> Child {
    let (what, who) = match node {
        Some(n) => (format!("{n} xlb agent"), format!("{n}: the agent")),
        None => ("xlb agent".to_owned(), "the agent".to_owned()),
    };
    let tail = |n| log_path.map_or_else(|| "(output not kept)".to_owned(), |p| tail(p, n));
    let mut child = ns
        .command(xlb)
        .arg("run")
        .arg("--config")
        .arg(config)
        // XLB_LOG, if set, is inherited; unset, the agent's own default filter applies.
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", xlb.display()));
    res.processes.push(ProcRecord::of(&child, &what));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{who} exited ({status}): {}", tail(30));
        }
        if matches!(
            block_on(api::call(socket, &Request::Status)),
            Ok(Response::Status(_))
        ) {
            return child;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{who}'s API did not answer within 30 s: {}", tail(30));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// [`agent_config`] for one of several LB nodes: its own tunnel sources `v4` and `v6` instead of
/// the single-LB testbed's.
pub fn node_agent_config(
    pin_dir: &Path,
    socket: &Path,
    (v4, v6): (impl std::fmt::Display, impl std::fmt::Display),
    backends: usize,
    agent_extra: &str,
    vips: &[VipSpec],
) -> String {
    agent_config(pin_dir, socket, backends, agent_extra, vips)
        .replace(
            &format!("lb-src-v4 = \"{LB_V4}\""),
            &format!("lb-src-v4 = \"{v4}\""),
        )
        .replace(
            &format!("lb-src-v6 = \"{LB_V6}\""),
            &format!("lb-src-v6 = \"{v6}\""),
        )
}

/// An agent config for a testbed of `backends` backends: the LB's `eth0` in native mode, the
/// tunnel sources, `pin_dir` and `socket`, no metrics endpoint; then `agent_extra` (more
/// `[agent]` keys, not those) and the VIPs.
pub fn agent_config(
    pin_dir: &Path,
    socket: &Path,
    backends: usize,
    agent_extra: &str,
    vips: &[VipSpec],
) -> String {
    let mut s = format!(
        r#"[agent]
interfaces = [{{ name = "eth0", xdp-mode = "native" }}]
lb-src-v4 = "{LB_V4}"
lb-src-v6 = "{LB_V6}"
flow-table-size = 65536
max-vips = 16
max-backends = 256
pin-dir = "{}"
api-socket = "{}"
metrics-listen = "off"
{agent_extra}
"#,
        pin_dir.display(),
        socket.display()
    );
    for v in vips {
        let _ = write!(
            s,
            "\n[[vip]]\naddress = \"{}\"\nport = {}\nprotocol = \"{}\"\nmode = \"{}\"\n",
            v.mode.vip(v.v6),
            if v.udp { UDP_PORT } else { HTTP_PORT },
            if v.udp { "udp" } else { "tcp" },
            v.mode.name()
        );
        if let Some(n) = v.min_healthy {
            let _ = writeln!(s, "min-healthy = {n}");
        }
        if !v.health.is_empty() {
            let _ = write!(s, "  [vip.health]\n{}", v.health);
        }
        for i in 0..backends {
            if v.backends.as_ref().is_none_or(|l| l.contains(&i)) {
                let (v4, v6) = backend_addrs(i);
                let addr: IpAddr = if v.v6 { v6.into() } else { v4.into() };
                let _ = write!(s, "  [[vip.backend]]\n  address = \"{addr}\"\n");
                if let Some(w) = v.weights.get(&i) {
                    let _ = writeln!(s, "  weight = {w}");
                }
            }
        }
    }
    s
}

/// `template` (a config such as examples/demo.toml) with `pin-dir` and `api-socket` replaced;
/// everything else as written.
pub fn adapt_config(template: &str, pin_dir: &Path, socket: &Path) -> String {
    let mut t: toml::Table = toml::from_str(template).expect("config template is TOML");
    let agent = t
        .entry("agent")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .expect("[agent] is a table");
    agent.insert("pin-dir".into(), pin_dir.display().to_string().into());
    agent.insert("api-socket".into(), socket.display().to_string().into());
    toml::to_string(&t).expect("serialize config")
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_userspace::config;

    #[test]
    fn generated_configs_validate() {
        let mut vips = Vec::new();
        for mode in Mode::ALL {
            for v6 in [false, true] {
                vips.push(VipSpec::tcp(mode, v6).weight(1, 200));
                vips.push(VipSpec::udp(mode, v6).only(&[0, 2]).min_healthy(2));
            }
        }
        let text = agent_config(
            Path::new("/sys/fs/bpf/xlbt-x/lb"),
            Path::new("/tmp/xlbt-x/xlb.sock"),
            3,
            "mtu = 1400",
            &vips,
        );
        let v = config::load_str(&text, &|_: &str| true).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(v.config.vips.len(), 12);
        assert_eq!(v.config.mtu, Some(1400));
    }

    #[test]
    fn the_demo_config_validates_as_written_and_adapted() {
        let template = include_str!("../../../examples/demo.toml");
        config::load_str(template, &|_: &str| true).unwrap_or_else(|e| panic!("{e}"));
        let text = adapt_config(
            template,
            Path::new("/sys/fs/bpf/xlbdemo-1/lb"),
            Path::new("/tmp/xlbdemo-1/xlb.sock"),
        );
        let v = config::load_str(&text, &|_: &str| true).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v.config.pin_dir, Path::new("/sys/fs/bpf/xlbdemo-1/lb"));
        // The demo's VIPs are the testbed's.
        for vip in &v.config.vips {
            assert!(all_vips().contains(&vip.id.addr), "{}", vip.id);
            for b in &vip.backends {
                assert!(
                    (0..3).any(|i| {
                        let (v4, v6) = backend_addrs(i);
                        b.addr == IpAddr::from(v4) || b.addr == IpAddr::from(v6)
                    }),
                    "{}",
                    b.addr
                );
            }
        }
    }
}
