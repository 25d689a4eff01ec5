//! Reload (SIGHUP or `xlb reload`): re-read the config file and apply it, or, when the maps
//! refuse it, roll back to the config that runs.

use tracing::warn;

use crate::api::ReloadInfo;
use crate::config;
use crate::maps::MapStore;
use crate::model::Config;

use super::state::Agent;

impl<S: MapStore> Agent<S> {
    /// Re-reads the config file and applies it; a refused config leaves everything as it was.
    /// API changes (weights of backends that stay aside) end here: the file is the truth again.
    pub(super) fn reload(&mut self) -> Result<String, String> {
        let result = match config::load(&self.config_path, &*self.env) {
            Err(e) => Err(e.to_string()),
            Ok(v) => {
                for w in &v.warnings {
                    warn!("config: {w}");
                }
                self.replace_config(v.config)
            }
        };
        self.metrics.record_reload(result.is_ok());
        self.last_reload = Some(match &result {
            Ok(m) => ReloadInfo::now(true, m.clone()),
            Err(m) => ReloadInfo::now(false, m.clone()),
        });
        result
    }

    /// Applies `new` in place of the running config; on failure restores and re-applies the
    /// running one.
    fn replace_config(&mut self, mut new: Config) -> Result<String, String> {
        let fixed = restart_only_changes(&self.file, &new);
        // The channel's sockets and the peer table are set up once: the running continuity
        // stays as started (and with it the program's CONFIG_F_PEER_FLOWS).
        new.continuity.clone_from(&self.file.continuity);
        if !fixed.is_empty() {
            warn!(
                "these settings take effect only after a restart (or a detach, for map sizes): {}",
                fixed.join(", ")
            );
        }
        let diff = config::diff(&self.file, &new);
        let new_announce = new.announce.clone();
        let old = std::mem::replace(&mut self.file, new);
        let (old_added, old_removed, old_weights) = (
            std::mem::take(&mut self.added),
            std::mem::take(&mut self.removed),
            self.overrides.weights.clone(),
        );
        self.prune_overrides();
        self.start_health();
        if old.announce != self.file.announce {
            self.reconfigure_announce(old.announce.as_ref());
        }
        // New backends stay out of the ring until their MAC is resolved (the reply does not
        // wait for that).
        self.request_net();
        match self.apply("reload") {
            Ok(()) => Ok(if diff.is_empty() {
                "no changes".to_string()
            } else {
                diff.to_string()
            }),
            Err(e) => {
                // Keep what runs: restore the previous config and re-apply it.
                self.file = old;
                self.added = old_added;
                self.removed = old_removed;
                self.overrides.weights = old_weights;
                self.start_health();
                if self.file.announce != new_announce {
                    self.reconfigure_announce(new_announce.as_ref());
                }
                self.apply_logged("reload rollback");
                Err(format!("{e:#}"))
            }
        }
    }
}

/// Settings a reload cannot change in place.
fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    if old.interfaces != new.interfaces {
        out.push("interfaces");
    }
    if old.pin_dir != new.pin_dir {
        out.push("pin-dir");
    }
    if old.api_socket != new.api_socket {
        out.push("api-socket");
    }
    if old.metrics_listen != new.metrics_listen {
        out.push("metrics-listen");
    }
    if (old.max_vips, old.max_backends, old.flow_table_size)
        != (new.max_vips, new.max_backends, new.flow_table_size)
    {
        out.push("max-vips/max-backends/flow-table-size");
    }
    if old.continuity != new.continuity {
        out.push("continuity");
    }
    out
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;
    use std::net::IpAddr;

    use lb_common::values::BACKEND_ACTIVE;

    use crate::agent::handlers::Answer;
    use crate::agent::state::Agent;
    use crate::agent::state::testing::{ConfigFile, agent, view};
    use crate::api::{Request, Response};
    use crate::config;
    use crate::maps::{FakeStore, MapStore};
    use crate::model::Config;
    use crate::test_fixtures;

    /// A config file's text: TCP port-80 ipip VIPs without health checks, as
    /// (address, backends).
    fn toml(max_vips: u32, vips: &[(&str, &[&str])]) -> String {
        let mut t = format!(
            "[agent]\ninterfaces = [\"eth0\"]\nlb-src-v4 = \"192.0.2.1\"\nmax-vips = {max_vips}\n\
             max-backends = 64\n"
        );
        for (addr, backends) in vips {
            write!(
                t,
                "[[vip]]\naddress = \"{addr}\"\nport = 80\nprotocol = \"tcp\"\nmode = \"ipip\"\n\
                 [vip.health]\nkind = \"none\"\n"
            )
            .unwrap();
            for b in *backends {
                write!(t, "[[vip.backend]]\naddress = \"{b}\"\n").unwrap();
            }
        }
        t
    }

    fn parse(text: &str) -> Config {
        config::load_str(text, &|_: &str| true).unwrap().config
    }

    const ONE: &[(&str, &[&str])] = &[("203.0.113.10", &["198.51.100.1", "198.51.100.2"])];

    /// An agent running `ONE`, read from `file`.
    fn running(file: &ConfigFile) -> Agent<FakeStore> {
        let text = toml(8, ONE);
        file.write(&text);
        agent(parse(&text), file.path())
    }

    fn reload(a: &mut Agent<FakeStore>) -> Response {
        match a.answer(Request::Reload) {
            Answer::Reply(r) => r,
            Answer::Stop { .. } => panic!("unexpected stop"),
        }
    }

    fn backends(a: &Agent<FakeStore>) -> Vec<IpAddr> {
        a.reconciler.backends().iter().map(|b| b.addr).collect()
    }

    /// What the maps hold, for before/after comparisons.
    fn maps(a: &Agent<FakeStore>) -> impl PartialEq + std::fmt::Debug + use<> {
        let s = a.reconciler.store();
        (
            s.vips.clone(),
            s.backends.clone(),
            s.ring(0).unwrap(),
            s.ring(1).unwrap(),
            s.filter.clone(),
            s.config,
        )
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn reload_applies_the_file_and_reports_what_changed() {
        let file = ConfigFile::new("reload-applies");
        let mut a = running(&file);
        let Response::Ok { message } = reload(&mut a) else {
            panic!("unchanged file refused");
        };
        assert_eq!(message, "reloaded: no changes");
        file.write(&toml(
            8,
            &[
                ("203.0.113.10", &["198.51.100.1", "198.51.100.3"]),
                ("203.0.113.11", &["198.51.100.1"]),
            ],
        ));
        let Response::Ok { message } = reload(&mut a) else {
            panic!("reload refused");
        };
        let new = parse(&toml(
            8,
            &[
                ("203.0.113.10", &["198.51.100.1", "198.51.100.3"]),
                ("203.0.113.11", &["198.51.100.1"]),
            ],
        ));
        assert_eq!(a.file, new);
        assert_eq!(
            message,
            format!("reloaded: {}", config::diff(&parse(&toml(8, ONE)), &new))
        );
        assert_eq!(
            backends(&a),
            [ip("198.51.100.1"), ip("198.51.100.3"), ip("198.51.100.1")]
        );
        // The new backend waits for its neighbour, which the reload asked for.
        assert!(a.take_net_request());
        a.net_resolved(test_fixtures::net(&a.effective()));
        assert!(
            a.reconciler
                .backends()
                .iter()
                .all(|b| b.entry.state == BACKEND_ACTIVE)
        );
        let last = a.last_reload.clone().unwrap();
        assert!(last.ok);
        assert_eq!(format!("reloaded: {}", last.message), message);
    }

    #[tokio::test]
    async fn reload_ends_api_changes() {
        let file = ConfigFile::new("reload-ends-api");
        let mut a = running(&file);
        let id = a.file.vips[0].id;
        let add = a.answer(Request::AddBackend {
            vip: id,
            addr: ip("198.51.100.7"),
            weight: 3,
        });
        assert!(matches!(add, Answer::Reply(Response::Ok { .. })), "{add:?}");
        let drain = a.answer(Request::Drain {
            vip: id,
            addr: ip("198.51.100.1"),
        });
        assert!(
            matches!(drain, Answer::Reply(Response::Ok { .. })),
            "{drain:?}"
        );
        assert!(matches!(reload(&mut a), Response::Ok { .. }));
        assert!(a.added.is_empty());
        assert_eq!(backends(&a), [ip("198.51.100.1"), ip("198.51.100.2")]);
        // The drain of a backend the file still has stays (weights outlive a reload); the
        // added backend's weight went with it.
        assert_eq!(a.overrides.weights.len(), 1);
        assert_eq!(a.overrides.weights[&(id, ip("198.51.100.1"))], 0);
    }

    /// The backend is added through the API with weight 3 on one node and the file (weight
    /// 1) brings it on both; one node reloads before the API call (which it then refuses),
    /// the other after. Both must end with the file's weight and the same ring.
    #[tokio::test]
    async fn an_api_addition_and_a_reload_that_adds_the_same_backend_commute() {
        const TWO: &[(&str, &[&str])] = &[(
            "203.0.113.10",
            &["198.51.100.1", "198.51.100.2", "198.51.100.3"],
        )];
        let add = |a: &mut Agent<FakeStore>| {
            let vip = a.file.vips[0].id;
            a.answer(Request::AddBackend {
                vip,
                addr: ip("198.51.100.3"),
                weight: 3,
            })
        };
        let (file_a, file_b) = (
            ConfigFile::new("commute-add-first"),
            ConfigFile::new("commute-reload-first"),
        );
        let mut first = running(&file_a);
        assert!(matches!(
            add(&mut first),
            Answer::Reply(Response::Ok { .. })
        ));
        file_a.write(&toml(8, TWO));
        assert!(matches!(reload(&mut first), Response::Ok { .. }));
        let mut second = running(&file_b);
        file_b.write(&toml(8, TWO));
        assert!(matches!(reload(&mut second), Response::Ok { .. }));
        assert!(matches!(
            add(&mut second),
            Answer::Reply(Response::Error { .. })
        ));
        let weight = |a: &Agent<FakeStore>| view(a, "198.51.100.3").map(|b| b.entry.weight);
        assert_eq!(weight(&first), weight(&second));
        assert_eq!(weight(&first), Some(a_file_weight(&first)));
        assert_eq!(
            first.reconciler.ring_digests(),
            second.reconciler.ring_digests()
        );
    }

    /// The weight the file gives 198.51.100.3.
    fn a_file_weight(a: &Agent<FakeStore>) -> u32 {
        a.file.vips[0]
            .backends
            .iter()
            .find(|b| b.addr == ip("198.51.100.3"))
            .unwrap()
            .weight
    }

    #[tokio::test]
    async fn a_config_the_maps_cannot_hold_is_refused_and_api_changes_stay() {
        let file = ConfigFile::new("reload-too-big");
        let mut a = running(&file);
        let id = a.file.vips[0].id;
        assert!(matches!(
            a.answer(Request::AddBackend {
                vip: id,
                addr: ip("198.51.100.7"),
                weight: 1,
            }),
            Answer::Reply(Response::Ok { .. })
        ));
        a.net_resolved(test_fixtures::net(&a.effective()));
        // A drain of a backend the new file lacks: the refused reload must not lose it.
        assert!(matches!(
            a.answer(Request::Drain {
                vip: id,
                addr: ip("198.51.100.2"),
            }),
            Answer::Reply(Response::Ok { .. })
        ));
        let before = maps(&a);
        let running_file = a.file.clone();
        // Nine VIPs: valid for max-vips 16, but the loaded maps hold 8 (fixed while pinned).
        let addrs: Vec<String> = (10..19).map(|i| format!("203.0.113.{i}")).collect();
        let vips: Vec<(&str, &[&str])> = addrs
            .iter()
            .map(|a| (a.as_str(), &["198.51.100.1"][..]))
            .collect();
        file.write(&toml(16, &vips));
        let Response::Error { message } = reload(&mut a) else {
            panic!("a config beyond the maps' size was accepted");
        };
        assert!(
            message.starts_with("reload refused, running state unchanged: the config needs 9 VIP"),
            "{message}"
        );
        assert_eq!(a.file, running_file);
        assert_eq!(a.added[&id].len(), 1);
        assert_eq!(a.overrides.weights[&(id, ip("198.51.100.2"))], 0);
        assert_eq!(maps(&a), before);
        assert!(!a.last_reload.clone().unwrap().ok);
    }

    #[tokio::test]
    async fn a_failed_write_rolls_back_to_the_running_config() {
        let file = ConfigFile::new("reload-write-fails");
        let mut a = running(&file);
        let before = maps(&a);
        let running_file = a.file.clone();
        file.write(&toml(8, &[("203.0.113.20", &["198.51.100.5"])]));
        // The new backend's entry is written, the write after it fails, and so does every one
        // after that (the rollback's included) until the store heals.
        let s = a.reconciler.store_mut();
        s.fail_at = Some(s.log.len() + 2);
        let Response::Error { message } = reload(&mut a) else {
            panic!("a failed write was reported as success");
        };
        assert!(message.contains("injected failure"), "{message}");
        assert_eq!(a.file, running_file);
        assert_ne!(maps(&a), before, "the failing reload wrote nothing");
        // The next event applies the running config again.
        a.reconciler.store_mut().fail_at = None;
        a.apply_logged("test");
        assert_eq!(maps(&a), before);
    }

    #[tokio::test]
    async fn an_unreadable_file_is_refused_and_recorded() {
        let file = ConfigFile::new("reload-unreadable");
        let mut a = running(&file);
        let before = maps(&a);
        file.write("[agent]\ninterfaces = [");
        let Response::Error { message } = reload(&mut a) else {
            panic!("a broken file was accepted");
        };
        assert!(message.starts_with("reload refused, running state unchanged: "));
        assert_eq!(maps(&a), before);
        let last = a.last_reload.clone().unwrap();
        assert!(!last.ok);
        assert_eq!(
            format!("reload refused, running state unchanged: {}", last.message),
            message
        );
    }

    /// Whatever replaces the file (a directory, a FIFO nobody writes, a runaway file, garbage
    /// bytes), a reload answers at once with what is wrong and the running config stays.
    #[tokio::test]
    async fn a_file_replaced_by_something_else_is_refused_quickly_and_the_config_stays() {
        let file = ConfigFile::new("reload-replaced");
        let mut a = running(&file);
        let before = maps(&a);
        let running_file = a.file.clone();
        let path = file.path().to_owned();
        let replace = |make: &dyn Fn(&std::path::Path)| {
            let _ = std::fs::remove_file(&path);
            let _ = std::fs::remove_dir(&path);
            make(&path);
        };
        type Make<'a> = &'a dyn Fn(&std::path::Path);
        let cases: [(&str, Make); 4] = [
            ("is a directory, not a regular file", &|p| {
                std::fs::create_dir(p).unwrap()
            }),
            ("is a FIFO, not a regular file", &|p| {
                let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
                // SAFETY: a valid NUL-terminated path; mkfifo reads it only.
                assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
            }),
            ("is larger than 1024 KiB", &|p| {
                std::fs::File::create(p).unwrap().set_len(64 << 20).unwrap()
            }),
            ("is not UTF-8 text", &|p| {
                std::fs::write(p, b"\x00\xff\xfe garbage \x80").unwrap()
            }),
        ];
        for (expected, make) in cases {
            replace(make);
            let started = std::time::Instant::now();
            let Response::Error { message } = reload(&mut a) else {
                panic!("a file that {expected} was accepted");
            };
            assert!(
                started.elapsed() < std::time::Duration::from_secs(1),
                "{expected}"
            );
            assert!(
                message.starts_with("reload refused, running state unchanged: "),
                "{message}"
            );
            assert!(message.contains(expected), "{message}");
            assert_eq!(a.file, running_file);
            assert_eq!(maps(&a), before);
        }
        let _ = std::fs::remove_dir(&path);
    }
}
