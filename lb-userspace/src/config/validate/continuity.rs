//! `[continuity]`: the peer channel's addresses, key and timers.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;

use super::Validator;
use crate::config::defaults::*;
use crate::config::error::ConfigError;
use crate::config::raw::RawContinuity;
use crate::model::ContinuityConfig;

impl Validator<'_> {
    /// The `[continuity]` table, checked even when disabled; `None` unless enabled.
    pub(super) fn continuity(&mut self, raw: Option<&RawContinuity>) -> Option<ContinuityConfig> {
        let r = raw?;
        let listen = match r.listen.as_deref() {
            Some(v) => self.peer_address("continuity.listen", v),
            None => {
                self.err(ConfigError::MissingField {
                    path: "continuity.listen".into(),
                    what: "required: this node's address:port for its peers, e.g. \
                           \"198.51.100.11:7946\"",
                });
                None
            }
        };
        if r.peers.is_empty() {
            self.err(ConfigError::MissingField {
                path: "continuity.peers".into(),
                what: "required: the listen address of every other LB node",
            });
        }
        let mut peers = BTreeSet::new();
        for (i, v) in r.peers.iter().enumerate() {
            let path = format!("continuity.peers[{i}]");
            let Some(addr) = self.peer_address(&path, v) else {
                continue;
            };
            if Some(addr) == listen {
                self.err(ConfigError::BadPeerAddress {
                    path,
                    value: v.clone(),
                    reason: "is this node's own continuity.listen: list the other nodes only",
                });
            } else if !peers.insert(addr) {
                self.err(ConfigError::BadPeerAddress {
                    path,
                    value: v.clone(),
                    reason: "is listed twice",
                });
            }
        }
        let key_file = match r.key_file.as_deref() {
            Some(k) if k.contains('\0') => {
                self.err(ConfigError::InvalidPath {
                    path: "continuity.key-file".into(),
                    value: k.into(),
                    reason: super::agent::NUL_IN_PATH,
                });
                None
            }
            Some(k) if k.starts_with('/') => Some(PathBuf::from(k)),
            Some(k) => {
                self.err(ConfigError::InvalidPath {
                    path: "continuity.key-file".into(),
                    value: k.into(),
                    reason: "is not absolute: write the full path, e.g. \
                             \"/etc/xlb/continuity.key\"",
                });
                None
            }
            None => {
                self.err(ConfigError::MissingField {
                    path: "continuity.key-file".into(),
                    what: "required: a file of at least 32 secret bytes shared by every node \
                           (`head -c 32 /dev/urandom | base64 > key; chmod 600 key`)",
                });
                None
            }
        };
        let refresh = self.bounded_duration(
            "continuity.refresh",
            r.refresh.as_deref(),
            DEFAULT_CONTINUITY_REFRESH,
            CONTINUITY_REFRESH_RANGE,
            "",
        );
        let hold = self.bounded_duration(
            "continuity.hold",
            r.hold.as_deref(),
            DEFAULT_CONTINUITY_HOLD,
            CONTINUITY_HOLD_RANGE,
            "",
        );
        let max_exceptions = self
            .range_u64(
                "continuity.max-exceptions",
                r.max_exceptions.unwrap_or(DEFAULT_MAX_EXCEPTIONS.into()),
                MAX_EXCEPTIONS_RANGE,
                " (64 bytes each)",
            )
            .map(|n| n as u32);
        if !r.enabled.unwrap_or(true) {
            return None;
        }
        Some(ContinuityConfig {
            listen: listen?,
            peers: peers.into_iter().collect(),
            key_file: key_file?,
            refresh: refresh?,
            hold: hold?,
            max_exceptions: max_exceptions?,
        })
    }

    /// A listener or peer address: a specific unicast address and a port. A wildcard would
    /// expose the channel on every interface of the node.
    fn peer_address(&mut self, path: &str, value: &str) -> Option<SocketAddr> {
        let reason = match value.parse::<SocketAddr>() {
            Err(_) => "is not an address:port: write e.g. \"198.51.100.11:7946\"",
            Ok(a) if a.ip().is_unspecified() => {
                "is a wildcard address, which would open the channel on every interface: give \
                 this node's own address on the network its peers reach it through"
            }
            Ok(a) if a.ip().is_multicast() => "is a multicast address: give a unicast one",
            Ok(a) if a.port() == 0 => "has port 0: give a fixed port, e.g. 7946",
            Ok(a) => return Some(a),
        };
        self.err(ConfigError::BadPeerAddress {
            path: path.into(),
            value: value.into(),
            reason,
        });
        None
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::test_support::*;

    fn with(keys: &str) -> String {
        with_agent(&format!("[continuity]\n{keys}\n"))
    }

    const GOOD: &str = "listen = \"198.51.100.11:7946\"\npeers = [\"198.51.100.12:7946\", \
                        \"198.51.100.13:7946\"]\nkey-file = \"/etc/xlb/continuity.key\"";

    #[test]
    fn defaults_and_absence() {
        assert_eq!(ok(&with_agent("")).config.continuity, None);
        let c = ok(&with(GOOD))
            .config
            .continuity
            .expect("enabled by the table");
        assert_eq!(c.listen, "198.51.100.11:7946".parse().unwrap());
        assert_eq!(c.peers.len(), 2);
        assert_eq!(c.refresh, Duration::from_secs(1));
        assert_eq!(c.hold, Duration::from_secs(600));
        assert_eq!(c.max_exceptions, 1 << 18);
        let off = with(&format!("{GOOD}\nenabled = false"));
        assert_eq!(ok(&off).config.continuity, None);
    }

    #[test]
    fn bad_addresses_and_missing_keys_are_explained() {
        for (keys, path, words) in [
            (
                GOOD.replace("198.51.100.11:7946", "0.0.0.0:7946"),
                "continuity.listen",
                "wildcard",
            ),
            (
                GOOD.replace("198.51.100.11:7946", "[::]:7946"),
                "continuity.listen",
                "wildcard",
            ),
            (
                GOOD.replace("198.51.100.11:7946", "198.51.100.11"),
                "continuity.listen",
                "address:port",
            ),
            (
                GOOD.replace("198.51.100.12:7946", "198.51.100.11:7946"),
                "continuity.peers[0]",
                "own continuity.listen",
            ),
            (
                GOOD.replace("198.51.100.13:7946", "198.51.100.12:7946"),
                "continuity.peers[1]",
                "twice",
            ),
            (
                GOOD.replace("/etc/xlb/continuity.key", "continuity.key"),
                "continuity.key-file",
                "absolute",
            ),
            (
                GOOD.replace(
                    "peers = [\"198.51.100.12:7946\", \"198.51.100.13:7946\"]",
                    "",
                ),
                "continuity.peers",
                "every other LB node",
            ),
            (
                format!("{GOOD}\nrefresh = \"10ms\""),
                "continuity.refresh",
                "",
            ),
            (
                format!("{GOOD}\nmax-exceptions = 10"),
                "continuity.max-exceptions",
                "64 bytes",
            ),
        ] {
            assert_one(&with(&keys), path, &[words]);
        }
    }
}
