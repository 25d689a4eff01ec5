//! [`AnnounceStatus`] as `xlb status` prints it, below the VIP table.

use std::fmt::Write as _;

use super::announcer::{AnnounceStatus, DrainState};
use super::decision::Decision;

impl AnnounceStatus {
    /// `announce:` and `node:` lines, one line per address, then problems.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "announce:   {}", self.speaker);
        let node = match self.node {
            DrainState::Active => "active".to_string(),
            DrainState::Draining { since_secs } => format!(
                "draining (for {since_secs}s; drained once no VIP packet for {}s)",
                self.drain_quiet_secs
            ),
            DrainState::Drained { quiet_secs } => {
                format!("drained: no VIP packet for {quiet_secs}s")
            }
        };
        let _ = writeln!(out, "node:       {node}");
        let w = self
            .addresses
            .iter()
            .map(|a| a.addr.to_string().len())
            .max()
            .unwrap_or(0);
        for a in &self.addresses {
            let state = if a.announced {
                "announced"
            } else {
                "withdrawn"
            };
            let why = match a.wanted {
                Decision::Announce if a.announced => String::new(),
                Decision::Announce => ": ready".to_string(),
                Decision::Withdraw(r) => format!(": {r}"),
            };
            let held = a.held_ms.map_or(String::new(), |ms| {
                format!(
                    " (change held: hold-down ends in {}.{}s)",
                    ms / 1000,
                    ms % 1000 / 100
                )
            });
            let _ = writeln!(out, "  {:<w$}  {state}{why}{held}", a.addr.to_string());
        }
        for v in &self.vips {
            if let Decision::Withdraw(r) = v.decision {
                let _ = writeln!(out, "  vip {} not ready: {r}", v.id);
            }
        }
        for c in &self.collisions {
            let _ = writeln!(
                out,
                "  PROBLEM: route of another program in this table: {c} (use a table of xlb's own)"
            );
        }
        match &self.bird {
            None => {}
            Some(p) if p.is_empty() => {
                let _ = writeln!(
                    out,
                    "bird:       ok (runs, learns the table, BGP established)"
                );
            }
            Some(problems) => {
                for p in problems {
                    let _ = writeln!(out, "  PROBLEM: {}", p.headline());
                    for f in &p.fix {
                        let _ = writeln!(out, "    fix: {f}");
                    }
                }
            }
        }
        if let Some(e) = &self.error {
            let _ = writeln!(
                out,
                "  PROBLEM: route update failed: {e} (forwarding continues)"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::announce::announcer::{AddressStatus, VipAnnounce};
    use crate::announce::bird_watch::BirdProblem;
    use crate::announce::decision::WithdrawReason;

    #[test]
    fn golden() {
        let mut s = AnnounceStatus {
            speaker: "kernel table 200 proto 200".into(),
            node: DrainState::Active,
            drain_quiet_secs: 10,
            addresses: vec![
                AddressStatus {
                    addr: "203.0.113.10".parse().unwrap(),
                    announced: true,
                    wanted: Decision::Announce,
                    held_ms: None,
                },
                AddressStatus {
                    addr: "2001:db8::10".parse().unwrap(),
                    announced: true,
                    wanted: Decision::Withdraw(WithdrawReason::TooFewBackends { up: 0, need: 1 }),
                    held_ms: Some(3250),
                },
            ],
            vips: vec![VipAnnounce {
                id: "tcp/[2001:db8::10]:80".parse().unwrap(),
                decision: Decision::Withdraw(WithdrawReason::TooFewBackends { up: 0, need: 1 }),
            }],
            collisions: vec![],
            error: None,
            bird: Some(vec![BirdProblem {
                check: "bgp".into(),
                subject: Some("router1".into()),
                message: "session Active".into(),
                fix: vec!["check the neighbor".into()],
            }]),
        };
        assert_eq!(
            s.render(),
            "announce:   kernel table 200 proto 200\nnode:       active\n  203.0.113.10  announced\n  \
             2001:db8::10  announced: 0 backend(s) up, min-healthy 1 (change held: hold-down \
             ends in 3.2s)\n  vip tcp/[2001:db8::10]:80 not ready: 0 backend(s) up, min-healthy 1\n  \
             PROBLEM: bgp router1: session Active\n    fix: check the neighbor\n"
        );
        s.node = DrainState::Drained { quiet_secs: 12 };
        s.error = Some("EPERM".into());
        let text = s.render();
        assert!(
            text.contains("node:       drained: no VIP packet for 12s\n"),
            "{text}"
        );
        assert!(
            text.contains("PROBLEM: route update failed: EPERM"),
            "{text}"
        );
    }
}
