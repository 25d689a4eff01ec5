//! `[vip.health]`: the check kind, its kind-specific keys, timing and thresholds.

use std::time::Duration;

use super::Validator;
use crate::config::defaults::*;
use crate::config::duration::parse_duration;
use crate::config::error::ConfigError;
use crate::config::raw::{RawCheckKind, RawHealth};
use crate::model::{CheckKind, HealthCheck};

/// The largest UDP payload over IPv4 (65535 - 20 - 8); IPv6 allows 20 bytes more, but one
/// limit for both families keeps a check valid whichever family its backends have.
pub const MAX_UDP_PAYLOAD: usize = 65_507;

impl Validator<'_> {
    /// The VIP's check and its default probe port (`health.port`), which is folded into each
    /// backend's `check_port`.
    pub(super) fn health(
        &mut self,
        vpath: &str,
        raw: Option<&RawHealth>,
    ) -> (HealthCheck, Option<u16>) {
        let mut hc = HealthCheck {
            kind: CheckKind::None,
            interval: DEFAULT_INTERVAL,
            timeout: DEFAULT_TIMEOUT,
            rise: DEFAULT_RISE,
            fall: DEFAULT_FALL,
        };
        let Some(h) = raw else {
            self.warn(
                format!("{vpath}.health"),
                "no health check: every backend is always considered up (set kind = \"none\" \
                 to say so explicitly)",
            );
            return (hc, None);
        };
        let p = format!("{vpath}.health");
        let kind = h.kind.name();
        let is_http = matches!(h.kind, RawCheckKind::Http | RawCheckKind::Https);
        let is_udp = h.kind == RawCheckKind::Udp;

        for (present, key, ok, used_by) in [
            (h.path.is_some(), "path", is_http, "http/https"),
            (
                h.expect_status.is_some(),
                "expect-status",
                is_http,
                "http/https",
            ),
            (h.host.is_some(), "host", is_http, "http/https"),
            (h.send.is_some(), "send", is_udp, "udp"),
            (h.send_hex.is_some(), "send-hex", is_udp, "udp"),
            (h.expect.is_some(), "expect", is_udp, "udp"),
            (h.expect_hex.is_some(), "expect-hex", is_udp, "udp"),
        ] {
            if present && !ok {
                self.err(ConfigError::FieldNotForKind {
                    path: format!("{p}.{key}"),
                    kind,
                    used_by,
                });
            }
        }
        let none = h.kind == RawCheckKind::None;
        if none {
            for (present, key) in [
                (h.port.is_some(), "port"),
                (h.interval.is_some(), "interval"),
                (h.timeout.is_some(), "timeout"),
                (h.rise.is_some(), "rise"),
                (h.fall.is_some(), "fall"),
            ] {
                if present {
                    self.warn(format!("{p}.{key}"), "ignored: kind is none");
                }
            }
        }

        if h.port == Some(0) {
            self.range(&format!("{p}.port"), 0, (1, 65535), "");
        }
        let interval = h
            .interval
            .as_deref()
            .and_then(|s| self.duration(&format!("{p}.interval"), s));
        let timeout = h
            .timeout
            .as_deref()
            .and_then(|s| self.duration(&format!("{p}.timeout"), s));
        if let Some(iv) = interval {
            if !(INTERVAL_RANGE.0..=INTERVAL_RANGE.1).contains(&iv) {
                self.err(ConfigError::IntervalOutOfRange {
                    path: format!("{p}.interval"),
                    value: iv,
                });
            }
            hc.interval = iv;
        }
        if let Some(t) = timeout {
            if t.is_zero() {
                self.err(ConfigError::InvalidDuration {
                    path: format!("{p}.timeout"),
                    value: h.timeout.clone().unwrap_or_default(),
                    reason: "a timeout must be longer than zero",
                });
            }
            hc.timeout = t;
        }
        // Only compare what parsed (or defaulted): a malformed value already has its error.
        let parsed = (h.interval.is_none() || interval.is_some())
            && (h.timeout.is_none() || timeout.is_some());
        if parsed && hc.timeout >= hc.interval {
            self.err(ConfigError::TimeoutNotBelowInterval {
                path: format!("{p}.timeout"),
                timeout: hc.timeout,
                interval: hc.interval,
                timeout_is_default: h.timeout.is_none(),
                interval_is_default: h.interval.is_none(),
            });
        }
        for (key, value, default, slot) in [
            ("rise", h.rise, DEFAULT_RISE, &mut hc.rise),
            ("fall", h.fall, DEFAULT_FALL, &mut hc.fall),
        ] {
            *slot = match value {
                Some(n) => self
                    .range(
                        &format!("{p}.{key}"),
                        n,
                        RISE_FALL_RANGE,
                        " (consecutive probe results)",
                    )
                    .unwrap_or(default),
                None => default,
            };
        }

        hc.kind = match h.kind {
            RawCheckKind::None => CheckKind::None,
            RawCheckKind::Tcp => CheckKind::Tcp,
            RawCheckKind::Http | RawCheckKind::Https => {
                let path = h.path.clone().unwrap_or_else(|| DEFAULT_HTTP_PATH.into());
                if !path.starts_with('/') {
                    self.err(ConfigError::InvalidText {
                        path: format!("{p}.path"),
                        value: path.clone(),
                        reason: "must start with \"/\": write e.g. \"/healthz\"",
                    });
                } else if !is_visible_ascii(&path) {
                    self.err(ConfigError::InvalidText {
                        path: format!("{p}.path"),
                        value: path.clone(),
                        reason: "must be printable ASCII without spaces: percent-encode \
                                 other characters",
                    });
                }
                if let Some(host) = &h.host
                    && (host.is_empty() || !is_visible_ascii(host))
                {
                    self.err(ConfigError::InvalidText {
                        path: format!("{p}.host"),
                        value: host.clone(),
                        reason: "must be a non-empty host name without spaces or control \
                                 characters: write e.g. \"example.test\", or remove it to \
                                 send the backend address",
                    });
                }
                let status = h.expect_status.unwrap_or(DEFAULT_EXPECT_STATUS);
                self.range(
                    &format!("{p}.expect-status"),
                    status.into(),
                    EXPECT_STATUS_RANGE,
                    " (an HTTP status code)",
                );
                CheckKind::Http {
                    path,
                    expect_status: status,
                    tls: h.kind == RawCheckKind::Https,
                    host: h.host.clone(),
                }
            }
            RawCheckKind::Udp => {
                let send = self.bytes(&p, "send", h.send.as_deref(), h.send_hex.as_deref());
                if h.send.is_none() && h.send_hex.is_none() {
                    self.err(ConfigError::MissingField {
                        path: format!("{p}.send"),
                        what: "a udp check needs send or send-hex (send = \"\" sends an empty \
                               datagram)",
                    });
                }
                let expect = self.bytes(&p, "expect", h.expect.as_deref(), h.expect_hex.as_deref());
                for (key, bytes, what) in [
                    ("send", &send, "a UDP datagram"),
                    ("expect", &expect, "the answer, a UDP datagram,"),
                ] {
                    if let Some(b) = bytes
                        && b.len() > MAX_UDP_PAYLOAD
                    {
                        let hex = if h.send_hex.is_some() && key == "send"
                            || h.expect_hex.is_some() && key == "expect"
                        {
                            "-hex"
                        } else {
                            ""
                        };
                        self.err(ConfigError::TooLong {
                            path: format!("{p}.{key}{hex}"),
                            len: b.len(),
                            max: MAX_UDP_PAYLOAD,
                            what,
                        });
                    }
                }
                CheckKind::Udp {
                    send: send.unwrap_or_default(),
                    expect,
                }
            }
        };
        (hc, if none { None } else { h.port })
    }

    /// `key = "text"` or `key-hex = "0a0b"`, at most one of them.
    fn bytes(
        &mut self,
        p: &str,
        key: &str,
        text: Option<&str>,
        hex: Option<&str>,
    ) -> Option<Vec<u8>> {
        match (text, hex) {
            (Some(_), Some(_)) => {
                self.err(ConfigError::ConflictingFields {
                    path: format!("{p}.{key}-hex"),
                    other: format!("{p}.{key}"),
                });
                None
            }
            (Some(t), None) => Some(t.as_bytes().to_vec()),
            (None, Some(h)) => match parse_hex(h) {
                Ok(b) => Some(b),
                Err(reason) => {
                    self.err(ConfigError::InvalidHex {
                        path: format!("{p}.{key}-hex"),
                        reason,
                    });
                    None
                }
            },
            (None, None) => None,
        }
    }

    pub(super) fn duration(&mut self, path: &str, value: &str) -> Option<Duration> {
        match parse_duration(value) {
            Ok(d) => Some(d),
            Err(reason) => {
                self.err(ConfigError::InvalidDuration {
                    path: path.to_owned(),
                    value: value.to_owned(),
                    reason,
                });
                None
            }
        }
    }
}

fn is_visible_ascii(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_graphic())
}

/// `"0a1b ff"` -> bytes; whitespace between bytes is allowed.
pub fn parse_hex(s: &str) -> Result<Vec<u8>, &'static str> {
    let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if !digits.len().is_multiple_of(2) {
        return Err("odd number of hex digits");
    }
    digits
        .chunks(2)
        .map(|pair| {
            let hi = (pair[0] as char).to_digit(16);
            let lo = (pair[1] as char).to_digit(16);
            match (hi, lo) {
                (Some(h), Some(l)) => Ok((h * 16 + l) as u8),
                _ => Err("only 0-9, a-f and A-F are hex digits"),
            }
        })
        .collect()
}
#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::ConfigError;
    use crate::config::test_support::*;

    /// The validated check of a VIP whose `[vip.health]` holds `kind_and_keys`.
    fn checked(kind_and_keys: &str) -> HealthCheck {
        ok(&health(kind_and_keys)).config.vips[0].health.clone()
    }

    #[test]
    fn health_defaults() {
        let text = with_agent(
            &(vip("203.0.113.10", "")
                + "[vip.health]\nkind = \"http\"\n"
                + &backend("198.51.100.1", "")),
        );
        let h = &ok(&text).config.vips[0].health;
        assert_eq!(h.interval, Duration::from_secs(2));
        assert_eq!(h.timeout, Duration::from_secs(1));
        assert_eq!((h.rise, h.fall), (2, 3));
        assert_eq!(
            h.kind,
            CheckKind::Http {
                path: "/".into(),
                expect_status: 200,
                tls: false,
                host: None,
            }
        );
    }

    #[test]
    fn timeout_must_be_below_interval() {
        assert_one(
            &health("kind = \"tcp\"\ninterval = \"1s\"\ntimeout = \"1s\""),
            "vip[0].health.timeout",
            &["timeout 1s must be shorter than interval 1s"],
        );
        let (_, msg) = one(&health("kind = \"tcp\"\ninterval = \"500ms\""));
        assert!(
            msg.contains("timeout 1s (default) must be shorter than interval 500ms"),
            "{msg}"
        );
        let h = checked("kind = \"tcp\"\ninterval = \"500ms\"\ntimeout = \"0.2s\"");
        assert_eq!(
            (h.interval, h.timeout),
            (Duration::from_millis(500), Duration::from_millis(200))
        );
    }

    #[test]
    fn durations_are_checked() {
        assert_one(
            &health("kind = \"tcp\"\ninterval = \"2\""),
            "vip[0].health.interval",
            &["\"2\" is not a duration: it has no unit"],
        );
        assert_one(
            &health("kind = \"tcp\"\ninterval = \"50ms\"\ntimeout = \"10ms\""),
            "vip[0].health.interval",
            &["50ms is out of range: use 100ms..=1h"],
        );
        assert_one(
            &health("kind = \"tcp\"\ntimeout = \"0s\""),
            "vip[0].health.timeout",
            &["longer than zero"],
        );
    }

    #[test]
    fn rise_and_fall_ranges() {
        for key in ["rise", "fall"] {
            for value in ["0", "101"] {
                assert_one(
                    &health(&format!("kind = \"tcp\"\n{key} = {value}")),
                    &format!("vip[0].health.{key}"),
                    &[&format!("{value} is out of range: use 1..=100")],
                );
            }
        }
        let h = checked("kind = \"tcp\"\nrise = 1\nfall = 100");
        assert_eq!((h.rise, h.fall), (1, 100));
    }

    #[test]
    fn http_keys_only_on_http_checks_and_udp_keys_only_on_udp() {
        for key in ["path = \"/x\"", "expect-status = 204", "host = \"a.test\""] {
            let name = key.split(' ').next().unwrap();
            assert_one(
                &health(&format!("kind = \"tcp\"\n{key}")),
                &format!("vip[0].health.{name}"),
                &["only http/https checks use this key, but kind is \"tcp\""],
            );
        }
        for key in [
            "send = \"x\"",
            "send-hex = \"00\"",
            "expect = \"x\"",
            "expect-hex = \"00\"",
        ] {
            let name = key.split(' ').next().unwrap();
            assert_one(
                &health(&format!("kind = \"https\"\n{key}")),
                &format!("vip[0].health.{name}"),
                &["only udp checks use this key, but kind is \"https\""],
            );
        }
        // The udp check still reports its missing send alongside.
        let errs = errors(&health("kind = \"udp\"\npath = \"/\""));
        let paths: Vec<&str> = errs.iter().map(ConfigError::path).collect();
        assert_eq!(paths, ["vip[0].health.path", "vip[0].health.send"]);
    }

    #[test]
    fn http_fields_are_checked() {
        assert_one(
            &health("kind = \"http\"\npath = \"healthz\""),
            "vip[0].health.path",
            &["must start with \"/\""],
        );
        assert_one(
            &health("kind = \"http\"\npath = \"/a b\""),
            "vip[0].health.path",
            &["without spaces"],
        );
        assert_one(
            &health("kind = \"http\"\nhost = \"a.test\\r\\nX: y\""),
            "vip[0].health.host",
            &["without spaces or control characters"],
        );
        for status in ["99", "600"] {
            assert_one(
                &health(&format!("kind = \"http\"\nexpect-status = {status}")),
                "vip[0].health.expect-status",
                &["use 100..=599"],
            );
        }
        let kind = checked("kind = \"https\"\nexpect-status = 204").kind;
        assert_eq!(
            kind,
            CheckKind::Http {
                path: "/".into(),
                expect_status: 204,
                tls: true,
                host: None
            }
        );
    }

    #[test]
    fn udp_fields_are_checked() {
        assert_one(
            &health("kind = \"udp\""),
            "vip[0].health.send",
            &["needs send or send-hex"],
        );
        assert_one(
            &health("kind = \"udp\"\nsend = \"a\"\nsend-hex = \"61\""),
            "vip[0].health.send-hex",
            &["conflicts with vip[0].health.send"],
        );
        assert_one(
            &health("kind = \"udp\"\nsend-hex = \"abc\""),
            "vip[0].health.send-hex",
            &["odd number of hex digits"],
        );
        assert_one(
            &health("kind = \"udp\"\nsend = \"\"\nexpect-hex = \"zz\""),
            "vip[0].health.expect-hex",
            &["only 0-9, a-f and A-F"],
        );
        let kind = checked("kind = \"udp\"\nsend = \"\"\nexpect-hex = \"DE ad\"").kind;
        assert_eq!(
            kind,
            CheckKind::Udp {
                send: vec![],
                expect: Some(vec![0xde, 0xad])
            }
        );
    }

    #[test]
    fn hex_parsing() {
        assert_eq!(parse_hex("00ff 10"), Ok(vec![0, 255, 16]));
        assert_eq!(parse_hex(""), Ok(vec![]));
        assert!(parse_hex("0").is_err());
        assert!(parse_hex("0g").is_err());
    }

    #[test]
    fn http_path_with_control_or_space_is_refused() {
        for bad in ["/a b", "/a\\u0001b", "/a\\tb", "/\\u007f"] {
            assert_one(
                &health(&format!("kind = \"http\"\npath = \"{bad}\"")),
                "vip[0].health.path",
                &["must be printable ASCII without spaces"],
            );
        }
    }
}
