//! BIRD for the multi-LB testbed: its configs are the shipped examples of `dist/bird/`, with
//! only their `define` lines replaced (so the tests run exactly what operators copy), and the
//! daemon started in a namespace with its own config, control socket and pid file.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::netns::Netns;

/// `dist/bird/xlb-node.conf`: an xlb node.
pub const NODE_CONF: &str = include_str!("../../../dist/bird/xlb-node.conf");
/// `dist/bird/router.conf`: the router in front of the nodes.
pub const ROUTER_CONF: &str = include_str!("../../../dist/bird/router.conf");

/// BFD transmit interval and multiplier of the shipped configs (both ends use the same): a
/// dead peer is declared down after interval x multiplier.
pub const BFD_INTERVAL: Duration = Duration::from_millis(100);
pub const BFD_MULTIPLIER: u32 = 3;

/// The failure detection time the shipped BFD settings promise.
pub fn bfd_detection() -> Duration {
    BFD_INTERVAL * BFD_MULTIPLIER
}

/// `template` with the value of each `define NAME = ...;` line named in `values` replaced.
/// Panics when a name has no define line: the template and the testbed disagree.
pub fn render(template: &str, values: &[(&str, String)]) -> String {
    let mut out = String::new();
    let mut seen = vec![false; values.len()];
    for line in template.lines() {
        let name = line
            .strip_prefix("define ")
            .and_then(|rest| rest.split_once('='))
            .map(|(n, _)| n.trim());
        match name.and_then(|n| values.iter().position(|(k, _)| *k == n)) {
            Some(i) => {
                seen[i] = true;
                let _ = writeln!(out, "define {} = {};", values[i].0, values[i].1);
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    for (i, (k, _)) in values.iter().enumerate() {
        assert!(seen[i], "the BIRD template has no `define {k} = ...;` line");
    }
    out
}

/// Where one BIRD keeps its files: `<dir>/<name>.conf`, `.ctl`, `.pid`, `.log`.
#[derive(Clone, Debug)]
pub struct BirdFiles {
    pub name: String,
    pub dir: PathBuf,
}

impl BirdFiles {
    pub fn conf(&self) -> PathBuf {
        self.dir.join(format!("{}.conf", self.name))
    }
    pub fn socket(&self) -> PathBuf {
        self.dir.join(format!("{}.ctl", self.name))
    }
    pub fn pid_file(&self) -> PathBuf {
        self.dir.join(format!("{}.pid", self.name))
    }
    pub fn log(&self) -> PathBuf {
        self.dir.join(format!("{}.log", self.name))
    }

    /// Writes the config and checks that BIRD parses it.
    pub fn write_conf(&self, text: &str) {
        std::fs::write(self.conf(), text).unwrap();
        let out = Command::new("bird")
            .arg("-p")
            .arg("-c")
            .arg(self.conf())
            .output()
            .unwrap_or_else(|e| panic!("bird (`cargo xtask setup` installs bird2): {e}"));
        assert!(
            out.status.success(),
            "bird -p -c {}: {}",
            self.conf().display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts `bird -f` (foreground: the caller owns the process) in `ns`; does not wait.
    pub fn spawn(&self, ns: &Netns) -> Child {
        let log = std::fs::File::create(self.log()).unwrap();
        ns.command("bird")
            .arg("-f")
            .arg("-c")
            .arg(self.conf())
            .arg("-s")
            .arg(self.socket())
            .arg("-P")
            .arg(self.pid_file())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting bird in {}: {e}", ns.name))
    }

    /// `birdc -s SOCKET ARGS`: its output, or why it failed.
    pub fn birdc(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("birdc")
            .arg("-s")
            .arg(self.socket())
            .args(args)
            .output()
            .map_err(|e| format!("birdc: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Waits (at most 10 s) until the control socket answers.
    pub fn wait_ready(&self, child: &mut Child) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.socket().exists() && self.birdc(&["show", "status"]).is_ok() {
                return;
            }
            if let Ok(Some(st)) = child.try_wait() {
                panic!(
                    "bird {} exited ({st}): {}",
                    self.name,
                    std::fs::read_to_string(self.log()).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "bird {}: control socket not answering after 10 s",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The files of the BIRD called `name` in `dir`.
pub fn files(dir: &Path, name: &str) -> BirdFiles {
    BirdFiles {
        name: name.to_owned(),
        dir: dir.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_replaces_only_the_named_defines() {
        let out = render(
            NODE_CONF,
            &[
                ("NODE_ADDR", "198.51.100.3".into()),
                ("VIP_TABLE", "201".into()),
            ],
        );
        assert!(out.contains("define NODE_ADDR = 198.51.100.3;\n"));
        assert!(out.contains("define VIP_TABLE = 201;\n"));
        assert!(out.contains("define ROUTER_ADDR = 198.51.100.1;"));
        assert_eq!(out.lines().count(), NODE_CONF.lines().count());
    }

    #[test]
    #[should_panic(expected = "no `define NOPE")]
    fn render_rejects_an_unknown_define() {
        render(ROUTER_CONF, &[("NOPE", "1".into())]);
    }

    #[test]
    fn the_shipped_bfd_timers_are_the_ones_the_tests_assume() {
        for conf in [NODE_CONF, ROUTER_CONF] {
            assert!(conf.contains(&format!("interval {} ms;", BFD_INTERVAL.as_millis())));
            assert!(conf.contains(&format!("multiplier {BFD_MULTIPLIER};")));
        }
    }
}
