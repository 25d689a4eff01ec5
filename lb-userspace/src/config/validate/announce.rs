//! `[announce]` and the VIPs' `min-healthy`.

use std::path::PathBuf;
use std::time::Duration;

use super::Validator;
use crate::config::defaults::*;
use crate::config::error::ConfigError;
use crate::config::raw::RawAnnounce;
use crate::model::{AnnounceConfig, Vip};

/// A number `[announce]` gives the kernel (a routing table, a route protocol), with the
/// numbers that already mean something else there.
struct KernelNumber<'a> {
    path: &'static str,
    value: u64,
    range: (u64, u64),
    /// Advice after the range, with its leading punctuation.
    hint: &'static str,
    taken: &'a [u64],
    /// Why a taken number cannot be used, and what to pick instead.
    reason: &'static str,
    fix: &'static str,
}

impl Validator<'_> {
    /// The `[announce]` table, checked even when disabled (turning it on later must not reveal
    /// old mistakes); `None` unless enabled. `vips` are (index in the file, VIP).
    pub(super) fn announce(
        &mut self,
        raw: Option<&RawAnnounce>,
        vips: &[(usize, Vip)],
    ) -> Option<AnnounceConfig> {
        let enabled = raw.is_some_and(|r| r.enabled);
        let default = RawAnnounce::default();
        let r = raw.unwrap_or(&default);

        let table = self.kernel_number(KernelNumber {
            path: "announce.table",
            value: r.table.unwrap_or(DEFAULT_ANNOUNCE_TABLE.into()),
            range: ANNOUNCE_TABLE_RANGE,
            hint: " (a routing table id that no ip rule points at)",
            taken: &RESERVED_TABLES.map(u64::from),
            reason: "is one of the kernel's own tables (253 default, 254 main, 255 local)",
            fix: "pick a table of its own, e.g. 200, that no ip rule points at",
        });
        let table = table.and_then(|t| u32::try_from(t).ok());
        let protocol = self.kernel_number(KernelNumber {
            path: "announce.protocol",
            value: r.protocol.unwrap_or(DEFAULT_ANNOUNCE_PROTOCOL.into()),
            range: ANNOUNCE_PROTOCOL_RANGE,
            hint: " (0..=4 are the kernel's own route protocols)",
            taken: &[BIRD_PROTOCOL.into()],
            reason: "is BIRD's own route protocol, and BIRD does not learn its own routes",
            fix: "pick a number of its own, e.g. 200",
        });
        let protocol = protocol.and_then(|p| u8::try_from(p).ok());

        let min_healthy = self.min_healthy("announce.min-healthy", r.min_healthy);
        let hold_down = self.bounded_duration(
            "announce.hold-down",
            r.hold_down.as_deref(),
            DEFAULT_HOLD_DOWN,
            HOLD_DOWN_RANGE,
            "",
        );
        let withdraw_grace = self.bounded_duration(
            "announce.withdraw-grace",
            r.withdraw_grace.as_deref(),
            DEFAULT_WITHDRAW_GRACE,
            WITHDRAW_GRACE_RANGE,
            " (xlb stop --detach waits this long before it answers; its client gives up after 60s)",
        );
        let drain_quiet = self.bounded_duration(
            "announce.drain-quiet",
            r.drain_quiet.as_deref(),
            DEFAULT_DRAIN_QUIET,
            DRAIN_QUIET_RANGE,
            "",
        );
        let bird_socket = r.bird_socket.as_deref().unwrap_or(DEFAULT_BIRD_SOCKET);
        let bad_socket = if bird_socket.contains('\0') {
            Some(super::agent::NUL_IN_PATH)
        } else if !bird_socket.starts_with('/') {
            Some("is not absolute: write the full path, e.g. \"/run/bird/bird.ctl\"")
        } else {
            None
        };
        if let Some(reason) = bad_socket {
            self.err(ConfigError::InvalidPath {
                path: "announce.bird-socket".into(),
                value: bird_socket.into(),
                reason,
            });
        }

        for (i, vip) in vips {
            let path = format!("vip[{i}].min-healthy");
            let Some(own) = vip.min_healthy else {
                if enabled
                    && let Some(global) = min_healthy
                    && (global as usize) > vip.backends.len()
                {
                    self.warn(
                        format!("vip[{i}]"),
                        format!(
                            "{} has {} backend(s), fewer than announce.min-healthy = {global}: \
                             it is never announced (set its own min-healthy)",
                            vip.id,
                            vip.backends.len()
                        ),
                    );
                }
                continue;
            };
            if self.min_healthy(&path, Some(own)).is_none() {
                continue;
            }
            if own as usize > vip.backends.len() {
                self.err(ConfigError::MinHealthyAboveBackends {
                    path,
                    value: own,
                    count: vip.backends.len(),
                    vip: vip.id,
                });
            } else if !enabled {
                self.warn(path, "ignored: [announce] is not enabled");
            }
        }

        if !enabled {
            return None;
        }
        Some(AnnounceConfig {
            table: table?,
            protocol: protocol?,
            min_healthy: min_healthy?,
            hold_down: hold_down?,
            withdraw_grace: withdraw_grace?,
            drain_quiet: drain_quiet?,
            bird_socket: PathBuf::from(bird_socket),
        })
    }

    /// `n.value` if it is in `n.range` and not one of the numbers others own; otherwise
    /// records why and returns `None`.
    fn kernel_number(&mut self, n: KernelNumber<'_>) -> Option<u64> {
        let value = self.range_u64(n.path, n.value, n.range, n.hint)?;
        if n.taken.contains(&value) {
            self.err(ConfigError::ReservedNumber {
                path: n.path.into(),
                value,
                reason: n.reason,
                fix: n.fix,
            });
            return None;
        }
        Some(value)
    }

    fn min_healthy(&mut self, path: &str, value: Option<u32>) -> Option<u32> {
        self.range(
            path,
            value.unwrap_or(DEFAULT_MIN_HEALTHY),
            MIN_HEALTHY_RANGE,
            " (0 would announce a VIP with no backend to send its traffic to)",
        )
    }

    pub(super) fn bounded_duration(
        &mut self,
        path: &str,
        value: Option<&str>,
        default: Duration,
        (min, max): (Duration, Duration),
        hint: &'static str,
    ) -> Option<Duration> {
        let d = match value {
            None => default,
            Some(s) => self.duration(path, s)?,
        };
        if d < min || d > max {
            self.err(ConfigError::DurationOutOfRange {
                path: path.into(),
                value: d,
                min,
                max,
                hint,
            });
            return None;
        }
        Some(d)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use crate::config::test_support::*;

    fn with_announce(keys: &str) -> String {
        with_agent(&format!(
            "{}{}[announce]\nenabled = true\n{keys}\n",
            vip("203.0.113.10", tcp_check()),
            backend("198.51.100.1", "")
        ))
    }

    #[test]
    fn absent_or_disabled_is_none_and_defaults_apply_when_enabled() {
        let plain = with_agent(&(vip("203.0.113.10", tcp_check()) + &backend("198.51.100.1", "")));
        assert_eq!(ok(&plain).config.announce, None);
        let off = with_announce("").replace("enabled = true", "enabled = false");
        assert_eq!(ok(&off).config.announce, None);
        let a = ok(&with_announce("")).config.announce.unwrap();
        assert_eq!((a.table, a.protocol, a.min_healthy), (200, 200, 1));
        assert_eq!(a.hold_down, Duration::from_secs(5));
        assert_eq!(a.withdraw_grace, Duration::from_secs(3));
        assert_eq!(a.drain_quiet, Duration::from_secs(10));
        assert_eq!(a.bird_socket, Path::new("/run/bird/bird.ctl"));
    }

    #[test]
    fn every_key_is_read() {
        let a = ok(&with_announce(
            "table = 1000\nprotocol = 99\nmin-healthy = 1\nhold-down = \"0s\"\n\
             withdraw-grace = \"500ms\"\ndrain-quiet = \"1m\"\nbird-socket = \"/tmp/b.ctl\"",
        ))
        .config
        .announce
        .unwrap();
        assert_eq!((a.table, a.protocol), (1000, 99));
        assert_eq!(a.hold_down, Duration::ZERO);
        assert_eq!(a.withdraw_grace, Duration::from_millis(500));
        assert_eq!(a.drain_quiet, Duration::from_secs(60));
        assert_eq!(a.bird_socket, Path::new("/tmp/b.ctl"));
    }

    #[test]
    fn tables_and_protocols_of_others_are_refused() {
        assert_one(
            &with_announce("table = 0"),
            "announce.table",
            &["0 is out of range: use 1..=2147483648"],
        );
        assert_one(
            &with_announce("table = 2147483649"),
            "announce.table",
            &["out of range"],
        );
        for t in [253, 254, 255] {
            assert_one(
                &with_announce(&format!("table = {t}")),
                "announce.table",
                &["kernel's own tables", "e.g. 200"],
            );
        }
        assert!(check(&with_announce("table = 2147483648")).is_ok());
        for p in [0, 4] {
            assert_one(
                &with_announce(&format!("protocol = {p}")),
                "announce.protocol",
                &["use 5..=255", "kernel's own route protocols"],
            );
        }
        assert_one(
            &with_announce("protocol = 256"),
            "announce.protocol",
            &["use 5..=255"],
        );
        assert_one(
            &with_announce("protocol = 12"),
            "announce.protocol",
            &["12 is BIRD's own route protocol"],
        );
        assert!(check(&with_announce("protocol = 5")).is_ok());
    }

    #[test]
    fn durations_min_healthy_and_socket_are_checked() {
        assert_one(
            &with_announce("hold-down = \"2h\""),
            "announce.hold-down",
            &["2h is out of range: use 0s..=1h"],
        );
        assert_one(
            &with_announce("withdraw-grace = \"1m\""),
            "announce.withdraw-grace",
            &["use 0s..=50s", "gives up after 60s"],
        );
        assert_one(
            &with_announce("drain-quiet = \"500ms\""),
            "announce.drain-quiet",
            &["use 1s..=1h"],
        );
        assert_one(
            &with_announce("hold-down = \"5\""),
            "announce.hold-down",
            &["no unit"],
        );
        assert_one(
            &with_announce("min-healthy = 0"),
            "announce.min-healthy",
            &["use 1..=", "no backend"],
        );
        assert_one(
            &with_announce("bird-socket = \"bird.ctl\""),
            "announce.bird-socket",
            &["not absolute"],
        );
        // Checked when disabled too.
        let off = with_announce("table = 254").replace("enabled = true", "enabled = false");
        assert_one(&off, "announce.table", &["kernel's own"]);
    }

    #[test]
    fn a_vips_min_healthy_overrides_and_must_be_reachable() {
        let two = |extra: &str| {
            with_agent(&format!(
                "{}{}{}[announce]\nenabled = true\n",
                vip("203.0.113.10", &format!("{extra}\n{}", tcp_check())),
                backend("198.51.100.1", ""),
                backend("198.51.100.2", "")
            ))
        };
        let v = ok(&two("min-healthy = 2"));
        assert_eq!(v.config.vips[0].min_healthy, Some(2));
        assert_one(
            &two("min-healthy = 3"),
            "vip[0].min-healthy",
            &[
                "3 exceeds the 2 backends of tcp/203.0.113.10:80",
                "at most 2",
            ],
        );
        assert_one(&two("min-healthy = 0"), "vip[0].min-healthy", &["use 1..="]);
        // Without [announce] it is legal but has no effect: warned.
        let text = two("min-healthy = 1").replace("[announce]\nenabled = true\n", "");
        let v = ok(&text);
        assert!(
            v.warnings
                .iter()
                .any(|w| w.path == "vip[0].min-healthy" && w.message.contains("not enabled")),
            "{:?}",
            v.warnings
        );
        // A global min-healthy above a VIP's backend count is a warning for that VIP.
        let v = ok(&with_announce("min-healthy = 2"));
        assert!(
            v.warnings
                .iter()
                .any(|w| w.path == "vip[0]" && w.message.contains("never announced")),
            "{:?}",
            v.warnings
        );
    }

    #[test]
    fn unknown_announce_keys_are_errors() {
        let (path, msg) = one(&with_announce("tabel = 1"));
        assert_eq!(path, "announce.tabel");
        assert!(msg.contains("unknown field `tabel`"), "{msg}");
    }
}
