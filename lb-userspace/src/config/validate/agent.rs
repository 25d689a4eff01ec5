//! The `[agent]` section: interfaces, paths and the metrics endpoint.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::Validator;
use crate::config::defaults::*;
use crate::config::error::ConfigError;
use crate::config::raw::{RawInterface, RawXdpMode};
use crate::model::{Interface, XdpMode};

/// `sizeof(sockaddr_un.sun_path)` minus the terminating NUL.
const MAX_UNIX_SOCKET_PATH: usize = 107;
/// `IFNAMSIZ` minus the terminating NUL.
const MAX_IFNAME_LEN: usize = 15;
/// Why a path with a NUL byte is refused: the kernel's paths end at the first one, so no
/// system call could use it (it would fail only when the agent opens the file).
pub(super) const NUL_IN_PATH: &str =
    "contains a NUL byte (\\0), which no file path can hold: remove it";

impl Validator<'_> {
    pub(super) fn interfaces(&mut self, raw: &[RawInterface]) -> Vec<Interface> {
        if raw.is_empty() {
            self.err(ConfigError::NoInterface {
                path: "agent.interfaces".into(),
            });
        }
        let mut seen: HashMap<&str, usize> = HashMap::new();
        let mut out = Vec::with_capacity(raw.len());
        for (i, ri) in raw.iter().enumerate() {
            let path = format!("agent.interfaces[{i}]");
            if let Err(reason) = check_ifname(&ri.name) {
                self.err(ConfigError::InvalidInterfaceName {
                    path,
                    name: ri.name.clone(),
                    reason,
                });
                continue;
            }
            if let Some(&first) = seen.get(ri.name.as_str()) {
                self.err(ConfigError::DuplicateInterface {
                    path,
                    name: ri.name.clone(),
                    first: format!("agent.interfaces[{first}]"),
                });
                continue;
            }
            seen.insert(&ri.name, i);
            if !self.env.interface_exists(&ri.name) {
                self.err(ConfigError::InterfaceNotFound {
                    path,
                    name: ri.name.clone(),
                });
            }
            out.push(Interface {
                name: ri.name.clone(),
                xdp_mode: match ri.xdp_mode.unwrap_or(RawXdpMode::Auto) {
                    RawXdpMode::Auto => XdpMode::Auto,
                    RawXdpMode::Native => XdpMode::Native,
                    RawXdpMode::Generic => XdpMode::Generic,
                },
            });
        }
        out
    }

    pub(super) fn pin_dir(&mut self, value: &str) -> PathBuf {
        let path = "agent.pin-dir";
        let p = Path::new(value);
        let reason = if value.contains('\0') {
            Some(NUL_IN_PATH)
        } else if !p.is_absolute() {
            Some("is not absolute: use e.g. \"/sys/fs/bpf/xlb\"")
        } else if has_dot_components(value) {
            Some("must not contain \".\" or \"..\" components: write the path out")
        } else if !p.starts_with(BPFFS_ROOT) || p == Path::new(BPFFS_ROOT) {
            Some(
                "is not a directory below the bpffs mount /sys/fs/bpf: use e.g. \"/sys/fs/bpf/xlb\"",
            )
        } else {
            None
        };
        if let Some(reason) = reason {
            self.err(ConfigError::InvalidPath {
                path: path.into(),
                value: value.into(),
                reason,
            });
        }
        p.to_owned()
    }

    pub(super) fn api_socket(&mut self, value: &str) -> PathBuf {
        let p = Path::new(value);
        let reason = if value.contains('\0') {
            Some(NUL_IN_PATH)
        } else if !p.is_absolute() {
            Some("is not absolute: use e.g. \"/run/xlb/xlb.sock\"")
        } else if has_dot_components(value) {
            Some("must not contain \".\" or \"..\" components: write the path out")
        } else if value.len() > MAX_UNIX_SOCKET_PATH {
            Some("is longer than a Unix socket path may be (107 bytes): use a shorter path")
        } else if value.ends_with('/') {
            Some("names a directory: add the socket's file name, e.g. \"/run/xlb/xlb.sock\"")
        } else {
            None
        };
        if let Some(reason) = reason {
            self.err(ConfigError::InvalidPath {
                path: "agent.api-socket".into(),
                value: value.into(),
                reason,
            });
        }
        p.to_owned()
    }

    pub(super) fn metrics(
        &mut self,
        value: Option<&str>,
        allow_remote: bool,
    ) -> Option<SocketAddr> {
        let path = "agent.metrics-listen";
        let value = match value {
            None => return Some(DEFAULT_METRICS_LISTEN),
            Some("" | "off") => return None,
            Some(v) => v,
        };
        let addr: SocketAddr = match value.parse() {
            Ok(a) => a,
            Err(_) => {
                self.err(ConfigError::InvalidSocketAddr {
                    path: path.into(),
                    value: value.into(),
                });
                return None;
            }
        };
        if addr.port() == 0 {
            self.range(path, 0, (1, 65535), " (the port of metrics-listen)");
        }
        if !addr.ip().is_loopback() && !allow_remote {
            self.err(ConfigError::RemoteMetrics {
                path: path.into(),
                addr,
            });
        }
        Some(addr)
    }
}

fn check_ifname(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        Err("it is empty")
    } else if name.len() > MAX_IFNAME_LEN {
        Err("Linux interface names are at most 15 bytes")
    } else if name == "." || name == ".." {
        Err("\".\" and \"..\" are not interface names")
    } else if name
        .bytes()
        .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b.is_ascii_control())
    {
        Err("interface names contain no '/', ':', spaces or control characters")
    } else {
        Ok(())
    }
}

fn has_dot_components(path: &str) -> bool {
    path.split('/').any(|c| c == "." || c == "..")
}
#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::load_str;
    use crate::config::test_support::*;

    #[test]
    fn no_interface() {
        assert_one(
            "[agent]\n",
            "agent.interfaces",
            &["no interface configured"],
        );
        assert_one("", "agent.interfaces", &["interfaces = [\"eth0\"]"]);
    }

    #[test]
    fn interface_missing_uses_the_injected_check() {
        let text = "[agent]\ninterfaces = [\"eth0\", \"eth7\"]\n";
        assert_one(text, "agent.interfaces[1]", &["\"eth7\" does not exist"]);
        assert!(load_str(text, &|_: &str| true).is_ok());
    }

    #[test]
    fn interface_names_and_duplicates() {
        assert_one(
            "[agent]\ninterfaces = [\"eth0\", \"../x\"]\n",
            "agent.interfaces[1]",
            &["not a valid interface name"],
        );
        assert_one(
            "[agent]\ninterfaces = [\"averyveryverylongname\"]\n",
            "agent.interfaces[0]",
            &["at most 15 bytes"],
        );
        assert_one(
            "[agent]\ninterfaces = [\"eth0\", { name = \"eth0\" }]\n",
            "agent.interfaces[1]",
            &["already listed at agent.interfaces[0]"],
        );
    }

    #[test]
    fn lb_src_must_be_unicast_of_the_right_family() {
        let text = "[agent]\ninterfaces = [\"eth0\"]\nlb-src-v4 = \"2001:db8::1\"\n";
        assert_one(
            text,
            "agent.lb-src-v4",
            &["not an IPv4 address", "lb-src-v6"],
        );
        let text = "[agent]\ninterfaces = [\"eth0\"]\nlb-src-v6 = \"192.0.2.1\"\n";
        assert_one(text, "agent.lb-src-v6", &["not an IPv6 address"]);
        let text = "[agent]\ninterfaces = [\"eth0\"]\nlb-src-v4 = \"0.0.0.0\"\n";
        assert_one(text, "agent.lb-src-v4", &["unspecified", "tunnel source"]);
        let text = "[agent]\ninterfaces = [\"eth0\"]\nlb-src-v4 = \"192.0.2.300\"\n";
        assert_one(
            text,
            "agent.lb-src-v4",
            &["\"192.0.2.300\" is not an IP address"],
        );
    }

    #[test]
    fn numeric_agent_ranges() {
        for (key, value, needle) in [
            (
                "flow-table-size",
                "100",
                "100 is out of range: use 1024..=67108864",
            ),
            ("max-vips", "0", "0 is out of range: use 1..=4096"),
            ("max-vips", "5000", "use 1..=4096"),
            ("max-backends", "1", "use 2..=1048576 (id 0 is reserved"),
            ("gue-port", "0", "0 is out of range: use 1..=65535"),
            ("icmp-burst", "0", "0 is out of range: use 1..=1000000"),
            ("icmp-rate", "0", "use 1..=1000000"),
            ("mtu", "500", "500 is out of range: use 576..=9216"),
            ("mtu", "9217", "use 576..=9216"),
            ("outer-ttl", "0", "0 is out of range: use 1..=255"),
            ("outer-ttl", "256", "use 1..=255"),
        ] {
            let text = format!("{AGENT}{key} = {value}\n");
            assert_one(&text, &format!("agent.{key}"), &[needle]);
        }
        let c = ok(&format!("{AGENT}mtu = 576\nhash-seed = 7\n")).config;
        assert_eq!((c.mtu, c.hash_seed), (Some(576), 7));
        let c = ok(&format!("{AGENT}outer-ttl = 1\n")).config;
        assert_eq!(c.outer_ttl, 1);
    }

    #[test]
    fn udp_idle_timeout_is_bounded_and_zero_turns_it_off() {
        for (value, needle) in [
            ("\"1s\"", "1s is out of range: use 2s..=4h or 0s for none"),
            ("\"5h\"", "use 2s..=4h"),
            ("\"soon\"", "soon"),
        ] {
            let text = format!("{AGENT}udp-idle-timeout = {value}\n");
            assert_one(&text, "agent.udp-idle-timeout", &[needle]);
        }
        assert_eq!(ok(AGENT).config.udp_idle_timeout, Duration::from_secs(30));
        for (value, want) in [("0s", 0), ("2s", 2), ("4h", 4 * 3600)] {
            let text = format!("{AGENT}udp-idle-timeout = \"{value}\"\n");
            let got = ok(&text).config.udp_idle_timeout;
            assert_eq!(got, Duration::from_secs(want), "{value}");
        }
    }

    #[test]
    fn pin_dir_and_api_socket() {
        for (value, needle) in [
            ("xlb", "is not absolute"),
            ("/tmp/xlb", "below the bpffs mount /sys/fs/bpf"),
            ("/sys/fs/bpf", "below the bpffs mount"),
            ("/sys/fs/bpfx/xlb", "below the bpffs mount"),
            ("/sys/fs/bpf/../xlb", "\"..\""),
        ] {
            let text = format!("{AGENT}pin-dir = \"{value}\"\n");
            assert_one(&text, "agent.pin-dir", &[needle]);
        }
        assert!(check(&format!("{AGENT}pin-dir = \"/sys/fs/bpf/lb/a\"\n")).is_ok());
        let text = format!("{AGENT}api-socket = \"xlb.sock\"\n");
        assert_one(&text, "agent.api-socket", &["is not absolute"]);
        let long = format!("/run/{}", "x".repeat(110));
        let text = format!("{AGENT}api-socket = \"{long}\"\n");
        assert_one(&text, "agent.api-socket", &["107 bytes"]);
    }

    #[test]
    fn metrics_listen() {
        let get = |v: &str| ok(&format!("{AGENT}{v}\n")).config.metrics_listen;
        assert_eq!(get("metrics-listen = \"off\""), None);
        assert_eq!(get("metrics-listen = \"\""), None);
        assert_eq!(
            get("metrics-listen = \"[::1]:9100\""),
            Some("[::1]:9100".parse().unwrap())
        );
        let text = format!("{AGENT}metrics-listen = \"0.0.0.0:9477\"\n");
        assert_one(
            &text,
            "agent.metrics-listen",
            &[
                "0.0.0.0:9477 is not a loopback address",
                "metrics-allow-remote = true",
            ],
        );
        assert_eq!(
            get("metrics-listen = \"192.0.2.1:9477\"\nmetrics-allow-remote = true"),
            Some("192.0.2.1:9477".parse().unwrap())
        );
        let text = format!("{AGENT}metrics-listen = \"localhost:9477\"\n");
        assert_one(&text, "agent.metrics-listen", &["not an address:port"]);
    }

    #[test]
    fn nul_bytes_in_paths_are_refused() {
        for (section, key) in [
            ("", "pin-dir = \"/sys/fs/bpf/x\\u0000y\""),
            ("", "api-socket = \"/run/xlb/x\\u0000.sock\""),
            ("[announce]\n", "bird-socket = \"/run/bird/\\u0000\""),
        ] {
            let text = format!("{AGENT}{section}{key}\n");
            let name = key.split(' ').next().unwrap();
            let path = if section.is_empty() {
                format!("agent.{name}")
            } else {
                format!("announce.{name}")
            };
            assert_one(&text, &path, &["contains a NUL byte", "\\0"]);
        }
        let text = with_agent(
            "[continuity]\nlisten = \"198.51.100.11:7946\"\npeers = [\"198.51.100.12:7946\"]\n\
             key-file = \"/etc/xlb/k\\u0000\"\n",
        );
        assert_one(&text, "continuity.key-file", &["contains a NUL byte"]);
    }
}
