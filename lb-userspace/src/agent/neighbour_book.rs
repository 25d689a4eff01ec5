//! What the agent programs as each backend's destination MAC, across resolution runs.
//!
//! A backend that stops answering ARP/ND keeps its last known MAC: whether it is down is the
//! health checks' call (they see the backend itself, with their own damping), not a missed
//! neighbour probe's, which may be a lost packet or a busy host. Taking it out of the ring on
//! the first silent run would move its flows for nothing. A MAC that cannot be a unicast
//! station's (all zeros, or the group bit set: a static entry typed wrong, a proxy answering
//! with a multicast address) is never programmed; the last known one stays instead.
//!
//! Routing problems are different: a backend that has no route, or is reached out of another
//! interface than the XDP one, cannot be sent to whatever its MAC was, so it loses it.
//!
//! Every run reports each backend's outcome; the book turns a change of outcome into one
//! [`Transition`] for the log, so a dead neighbour retried every few seconds logs once.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::IpAddr;

/// What one resolution run found for one backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    /// The kernel's neighbour entry, in a usable state.
    Mac([u8; 6]),
    /// No answer to ARP/ND within the resolve timeout (the message says where to look).
    Silent(String),
    /// Its route makes it unreachable from XDP: no route, another interface, dsr-l2 behind a
    /// gateway.
    Unroutable(String),
    /// Asking the kernel failed (a netlink error): says nothing about the backend.
    LookupFailed(String),
}

/// Whether `mac` can be a frame's destination towards one host (the rule the netlink reader
/// applies too: `netlink::non_unicast_mac`).
pub(super) fn is_unicast_mac(mac: [u8; 6]) -> bool {
    crate::netlink::non_unicast_mac(&mac).is_none()
}

/// A backend's resolution changed in a way the operator should hear about once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Transition {
    /// First resolution, or resolved again after a problem.
    Resolved { addr: IpAddr, mac: [u8; 6] },
    /// Its neighbour now answers with another address.
    MacChanged {
        addr: IpAddr,
        old: [u8; 6],
        new: [u8; 6],
    },
    /// The neighbour did not answer or gave an unusable MAC; `kept` is the MAC still
    /// programmed (`None`: never resolved, so it stays out of the ring).
    Unanswered {
        addr: IpAddr,
        why: String,
        kept: Option<[u8; 6]>,
    },
    /// Not reachable from XDP whatever its MAC: out of the ring.
    Unroutable { addr: IpAddr, why: String },
}

impl Transition {
    /// Problems are warnings; good news is information.
    pub(super) fn is_problem(&self) -> bool {
        matches!(self, Self::Unanswered { .. } | Self::Unroutable { .. })
    }
}

impl fmt::Display for Transition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Resolved { addr, mac } => write!(f, "backend {addr}: neighbour is {}", Mac(*mac)),
            Self::MacChanged { addr, old, new } => write!(
                f,
                "backend {addr}: neighbour MAC changed from {} to {}",
                Mac(*old),
                Mac(*new)
            ),
            Self::Unanswered {
                addr,
                why,
                kept: Some(mac),
            } => write!(
                f,
                "backend {addr}: {why}; keeping its last known MAC {} (health checks decide \
                 whether it is down)",
                Mac(*mac)
            ),
            Self::Unanswered {
                addr,
                why,
                kept: None,
            } => write!(
                f,
                "backend {addr}: {why}; it stays out of the ring until its MAC is resolved"
            ),
            Self::Unroutable { addr, why } => {
                write!(
                    f,
                    "backend {addr}: {why}; out of the ring until that is fixed"
                )
            }
        }
    }
}

struct Mac([u8; 6]);

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// The condition last reported per backend: a new transition is logged only when it differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Condition {
    Resolved,
    Unanswered,
    Unroutable,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    /// What is programmed (`None`: out of the ring for want of a MAC).
    mac: Option<[u8; 6]>,
    condition: Condition,
}

/// The MAC of every backend, kept across runs.
#[derive(Debug, Default)]
pub(super) struct NeighbourBook {
    entries: HashMap<IpAddr, Entry>,
}

impl NeighbourBook {
    /// Folds one run's outcomes into the book: returns the MACs to program (only targets of
    /// this run; backends no longer targeted are forgotten) and the transitions to log.
    pub(super) fn update(
        &mut self,
        outcomes: BTreeMap<IpAddr, Outcome>,
    ) -> (HashMap<IpAddr, [u8; 6]>, Vec<Transition>) {
        let mut transitions = Vec::new();
        let mut entries = HashMap::with_capacity(outcomes.len());
        for (addr, outcome) in outcomes {
            let before = self.entries.get(&addr).copied();
            let known = before.and_then(|e| e.mac);
            let entry = match outcome {
                Outcome::Mac(mac) if is_unicast_mac(mac) => {
                    match (before.map(|e| e.condition), known) {
                        (Some(Condition::Resolved), Some(old)) if old != mac => {
                            transitions.push(Transition::MacChanged {
                                addr,
                                old,
                                new: mac,
                            });
                        }
                        (Some(Condition::Resolved), _) => {}
                        _ => transitions.push(Transition::Resolved { addr, mac }),
                    }
                    Entry {
                        mac: Some(mac),
                        condition: Condition::Resolved,
                    }
                }
                Outcome::Mac(bad) => unanswered(
                    addr,
                    before,
                    format!(
                        "the kernel's neighbour entry holds {}, which is not a unicast MAC \
                         (check `ip neigh show {addr}`)",
                        Mac(bad)
                    ),
                    &mut transitions,
                ),
                Outcome::Silent(why) => unanswered(addr, before, why, &mut transitions),
                Outcome::LookupFailed(why) => {
                    // Our own query failed: the backend may be fine, so nothing changes and
                    // only a backend never heard of before is reported.
                    if before.is_none() {
                        transitions.push(Transition::Unanswered {
                            addr,
                            why,
                            kept: None,
                        });
                    }
                    Entry {
                        mac: known,
                        condition: before.map_or(Condition::Unanswered, |e| e.condition),
                    }
                }
                Outcome::Unroutable(why) => {
                    if before.map(|e| e.condition) != Some(Condition::Unroutable) {
                        transitions.push(Transition::Unroutable { addr, why });
                    }
                    Entry {
                        mac: None,
                        condition: Condition::Unroutable,
                    }
                }
            };
            entries.insert(addr, entry);
        }
        self.entries = entries;
        let macs = self
            .entries
            .iter()
            .filter_map(|(addr, e)| e.mac.map(|m| (*addr, m)))
            .collect();
        (macs, transitions)
    }
}

/// No usable answer: the last known MAC (if any) stays; reported when the backend was not
/// already in that condition.
fn unanswered(
    addr: IpAddr,
    before: Option<Entry>,
    why: String,
    transitions: &mut Vec<Transition>,
) -> Entry {
    // A backend that was unroutable has no MAC worth keeping (`mac` is None then anyway).
    let kept = before.and_then(|e| e.mac);
    if before.map(|e| e.condition) != Some(Condition::Unanswered) {
        transitions.push(Transition::Unanswered { addr, why, kept });
    }
    Entry {
        mac: kept,
        condition: Condition::Unanswered,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: [u8; 6] = [0x02, 0, 0x5e, 0, 0x53, 0x01];
    const B: [u8; 6] = [0x02, 0, 0x5e, 0, 0x53, 0x02];

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn run(
        book: &mut NeighbourBook,
        outcomes: &[(&str, Outcome)],
    ) -> (HashMap<IpAddr, [u8; 6]>, Vec<Transition>) {
        book.update(outcomes.iter().map(|(a, o)| (ip(a), o.clone())).collect())
    }

    fn silent() -> Outcome {
        Outcome::Silent("did not answer address resolution".into())
    }

    #[test]
    fn unicast_macs() {
        assert!(is_unicast_mac(A));
        assert!(!is_unicast_mac([0; 6]));
        assert!(!is_unicast_mac([0xff; 6]));
        assert!(!is_unicast_mac([0x01, 0, 0x5e, 0, 0, 1]));
        assert!(!is_unicast_mac([0x33, 0x33, 0, 0, 0, 1]));
    }

    #[test]
    fn a_silent_backend_keeps_its_mac_and_is_logged_once() {
        let mut book = NeighbourBook::default();
        let (macs, t) = run(&mut book, &[("198.51.100.1", Outcome::Mac(A))]);
        assert_eq!(macs[&ip("198.51.100.1")], A);
        assert_eq!(
            t,
            [Transition::Resolved {
                addr: ip("198.51.100.1"),
                mac: A
            }]
        );
        // The same answer again is no news.
        assert_eq!(run(&mut book, &[("198.51.100.1", Outcome::Mac(A))]).1, []);
        let (macs, t) = run(&mut book, &[("198.51.100.1", silent())]);
        assert_eq!(macs[&ip("198.51.100.1")], A, "the last known MAC stays");
        assert_eq!(t.len(), 1);
        assert!(matches!(&t[0], Transition::Unanswered { kept: Some(m), .. } if *m == A));
        assert!(t[0].is_problem());
        assert!(
            t[0].to_string()
                .contains("keeping its last known MAC 02:00:5e:00:53:01")
        );
        // Retries while it stays silent: same MAC, nothing logged.
        for _ in 0..10 {
            let (macs, t) = run(&mut book, &[("198.51.100.1", silent())]);
            assert_eq!(macs[&ip("198.51.100.1")], A);
            assert_eq!(t, []);
        }
        // It answers again: one transition back.
        let (_, t) = run(&mut book, &[("198.51.100.1", Outcome::Mac(A))]);
        assert_eq!(
            t,
            [Transition::Resolved {
                addr: ip("198.51.100.1"),
                mac: A
            }]
        );
    }

    #[test]
    fn a_never_resolved_backend_has_no_mac_and_is_logged_once() {
        let mut book = NeighbourBook::default();
        for i in 0..5 {
            let (macs, t) = run(&mut book, &[("198.51.100.1", silent())]);
            assert!(macs.is_empty());
            assert_eq!(t.len(), usize::from(i == 0));
        }
        let (_, t) = run(&mut book, &[("198.51.100.1", silent())]);
        assert_eq!(t, []);
    }

    #[test]
    fn zero_and_multicast_macs_are_never_programmed() {
        let mut book = NeighbourBook::default();
        for bad in [
            [0; 6],
            [0xff; 6],
            [0x01, 0, 0x5e, 0, 0, 1],
            [0x33, 0x33, 0, 0, 0, 1],
        ] {
            let (macs, _) = run(&mut book, &[("198.51.100.1", Outcome::Mac(bad))]);
            assert!(macs.is_empty(), "{bad:?} programmed");
        }
        run(&mut book, &[("198.51.100.1", Outcome::Mac(A))]);
        let (macs, t) = run(&mut book, &[("198.51.100.1", Outcome::Mac([0; 6]))]);
        assert_eq!(macs[&ip("198.51.100.1")], A);
        assert_eq!(t.len(), 1);
        assert!(
            t[0].to_string()
                .contains("00:00:00:00:00:00, which is not a unicast MAC")
        );
    }

    #[test]
    fn a_changed_mac_is_programmed_and_logged_once() {
        let mut book = NeighbourBook::default();
        run(&mut book, &[("198.51.100.1", Outcome::Mac(A))]);
        let (macs, t) = run(&mut book, &[("198.51.100.1", Outcome::Mac(B))]);
        assert_eq!(macs[&ip("198.51.100.1")], B);
        assert_eq!(
            t,
            [Transition::MacChanged {
                addr: ip("198.51.100.1"),
                old: A,
                new: B
            }]
        );
        assert!(!t[0].is_problem());
        assert_eq!(run(&mut book, &[("198.51.100.1", Outcome::Mac(B))]).1, []);
    }

    #[test]
    fn an_unroutable_backend_loses_its_mac() {
        let mut book = NeighbourBook::default();
        run(&mut book, &[("198.51.100.1", Outcome::Mac(A))]);
        let why = || Outcome::Unroutable("no route".into());
        let (macs, t) = run(&mut book, &[("198.51.100.1", why())]);
        assert!(macs.is_empty());
        assert_eq!(t.len(), 1);
        assert_eq!(run(&mut book, &[("198.51.100.1", why())]).1, []);
        // Silent after that: nothing to keep.
        let (macs, t) = run(&mut book, &[("198.51.100.1", silent())]);
        assert!(macs.is_empty());
        assert!(matches!(
            &t[..],
            [Transition::Unanswered { kept: None, .. }]
        ));
    }

    #[test]
    fn a_failed_lookup_changes_nothing() {
        let mut book = NeighbourBook::default();
        run(&mut book, &[("198.51.100.1", Outcome::Mac(A))]);
        let failed = || Outcome::LookupFailed("netlink request failed".into());
        let (macs, t) = run(&mut book, &[("198.51.100.1", failed())]);
        assert_eq!(macs[&ip("198.51.100.1")], A);
        assert_eq!(t, []);
        assert_eq!(run(&mut book, &[("198.51.100.1", Outcome::Mac(A))]).1, []);
        // A backend never asked about before is reported, without a MAC.
        let (macs, t) = run(&mut book, &[("198.51.100.2", failed())]);
        assert!(macs.is_empty());
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn backends_no_longer_targeted_are_forgotten() {
        let mut book = NeighbourBook::default();
        run(&mut book, &[("198.51.100.1", Outcome::Mac(A))]);
        run(&mut book, &[("198.51.100.2", Outcome::Mac(B))]);
        // Back in the config but silent: its old MAC is not resurrected.
        let (macs, t) = run(&mut book, &[("198.51.100.1", silent())]);
        assert!(macs.is_empty());
        assert!(matches!(
            &t[..],
            [Transition::Unanswered { kept: None, .. }]
        ));
    }
}
