//! Whether this node should receive a VIP's traffic: pure, from what the agent knows.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why an address is not announced. Listed in the order [`decide`] checks them: the first that
/// holds is the one reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "reason")]
pub enum WithdrawReason {
    /// The XDP program is not attached on every configured interface.
    NotAttached,
    /// The operator drained the node (`xlb drain-node`).
    Draining,
    /// Flow continuity: a node that is not yet serving waits for its peers' exceptions (a
    /// full set from every peer, or a bounded wait), so the flows the routers move to it keep
    /// their backends.
    ContinuitySync,
    /// The VIP's maps were not written by the last reconcile (or it failed).
    NotProgrammed,
    /// Fewer backends in the ring than `min-healthy`.
    TooFewBackends { up: u32, need: u32 },
    /// `xlb stop --detach` withdrew everything before detaching.
    Stopping,
    /// No VIP of the running config has this address (an adopted route, or a removed VIP).
    NotConfigured,
}

impl WithdrawReason {
    /// Short stable name (metrics label).
    pub const fn name(self) -> &'static str {
        match self {
            WithdrawReason::NotAttached => "not-attached",
            WithdrawReason::Draining => "draining",
            WithdrawReason::ContinuitySync => "continuity-sync",
            WithdrawReason::NotProgrammed => "not-programmed",
            WithdrawReason::TooFewBackends { .. } => "too-few-backends",
            WithdrawReason::Stopping => "stopping",
            WithdrawReason::NotConfigured => "not-configured",
        }
    }
}

impl fmt::Display for WithdrawReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WithdrawReason::NotAttached => f.write_str("program not attached"),
            WithdrawReason::Draining => f.write_str("node draining"),
            WithdrawReason::ContinuitySync => {
                f.write_str("waiting for the peers' flow exceptions (continuity)")
            }
            WithdrawReason::NotProgrammed => f.write_str("maps not written"),
            WithdrawReason::TooFewBackends { up, need } => {
                write!(f, "{up} backend(s) up, min-healthy {need}")
            }
            WithdrawReason::Stopping => f.write_str("agent stopping (--detach)"),
            WithdrawReason::NotConfigured => f.write_str("no VIP on this address"),
        }
    }
}

/// What the node as a whole contributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeInputs {
    pub attached: bool,
    pub draining: bool,
    /// Flow continuity lets this node take traffic (always true without continuity).
    pub continuity_ready: bool,
}

/// One VIP's readiness.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VipInputs {
    /// Its VIP, backend and ring entries were written by the last (successful) reconcile.
    pub programmed: bool,
    /// Backends in its ring (health up, next hop known, weight above 0).
    pub backends_up: u32,
    pub min_healthy: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "decision")]
pub enum Decision {
    Announce,
    Withdraw(WithdrawReason),
}

impl Decision {
    pub const fn announced(self) -> bool {
        matches!(self, Decision::Announce)
    }
}

/// The decision for one VIP.
pub fn decide(node: NodeInputs, vip: VipInputs) -> Decision {
    let reason = if !node.attached {
        WithdrawReason::NotAttached
    } else if node.draining {
        WithdrawReason::Draining
    } else if !node.continuity_ready {
        WithdrawReason::ContinuitySync
    } else if !vip.programmed {
        WithdrawReason::NotProgrammed
    } else if vip.backends_up < vip.min_healthy {
        WithdrawReason::TooFewBackends {
            up: vip.backends_up,
            need: vip.min_healthy,
        }
    } else {
        return Decision::Announce;
    };
    Decision::Withdraw(reason)
}

/// One address carries every VIP on it (ports, protocols): announced when any of them is
/// ready, else withdrawn for the reason of the first (in the caller's order).
pub fn decide_address(vips: impl IntoIterator<Item = Decision>) -> Option<Decision> {
    let mut first = None;
    for d in vips {
        if d.announced() {
            return Some(d);
        }
        first.get_or_insert(d);
    }
    first
}

#[cfg(test)]
mod tests {
    use super::*;

    const READY: NodeInputs = NodeInputs {
        attached: true,
        draining: false,
        continuity_ready: true,
    };
    const VIP: VipInputs = VipInputs {
        programmed: true,
        backends_up: 2,
        min_healthy: 2,
    };

    #[test]
    fn announced_exactly_at_min_healthy() {
        assert_eq!(decide(READY, VIP), Decision::Announce);
        let one = VipInputs {
            backends_up: 1,
            ..VIP
        };
        assert_eq!(
            decide(READY, one),
            Decision::Withdraw(WithdrawReason::TooFewBackends { up: 1, need: 2 })
        );
    }

    #[test]
    fn reasons_in_order() {
        let worst = VipInputs {
            programmed: false,
            backends_up: 0,
            min_healthy: 1,
        };
        let w = |n, v| match decide(n, v) {
            Decision::Withdraw(r) => r,
            Decision::Announce => panic!("announced"),
        };
        let all_bad = NodeInputs {
            attached: false,
            draining: true,
            continuity_ready: false,
        };
        assert_eq!(w(all_bad, worst), WithdrawReason::NotAttached);
        let draining = NodeInputs {
            attached: true,
            ..all_bad
        };
        assert_eq!(w(draining, VIP), WithdrawReason::Draining);
        let syncing = NodeInputs {
            draining: false,
            ..draining
        };
        assert_eq!(w(syncing, VIP), WithdrawReason::ContinuitySync);
        assert_eq!(w(READY, worst), WithdrawReason::NotProgrammed);
        assert_eq!(
            w(
                READY,
                VipInputs {
                    programmed: true,
                    ..worst
                }
            )
            .to_string(),
            "0 backend(s) up, min-healthy 1"
        );
    }

    #[test]
    fn an_address_is_announced_when_any_vip_on_it_is_ready() {
        let down = Decision::Withdraw(WithdrawReason::NotProgrammed);
        let few = Decision::Withdraw(WithdrawReason::TooFewBackends { up: 0, need: 1 });
        assert_eq!(decide_address([]), None);
        assert_eq!(decide_address([down, few]), Some(down));
        assert_eq!(
            decide_address([few, Decision::Announce, down]),
            Some(Decision::Announce)
        );
    }
}
