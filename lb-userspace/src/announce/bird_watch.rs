//! BIRD seen from the agent. The routes the agent writes reach the routers only through BIRD; a
//! stopped BIRD, a kernel protocol that does not learn the table or a BGP session that never
//! comes up changes nothing on this host (forwarding goes on, the routes stay in the table) but
//! leaves the node unannounced. So a task runs doctor's BIRD checks (`bird`, `bird_kernel`,
//! `bgp`: the same facts, judgement and fixes as `xlb doctor`) every [`BIRD_CHECK_INTERVAL`] and
//! hands the ones that are not OK to the event loop, for `xlb status`, the metrics and one log
//! line per change.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use crate::cli::doctor::{BirdExpectation, Check, Status, gather_bird, judge_bird};

/// Pace of the checks: three short `birdc` calls and one table dump each. A problem shows in
/// `xlb status` at most this late; BFD, not this, is what moves traffic when a node fails.
pub const BIRD_CHECK_INTERVAL: Duration = Duration::from_secs(10);

/// One BIRD check that is not OK.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BirdProblem {
    /// doctor's check name: `bird`, `bird_kernel` or `bgp`.
    pub check: String,
    /// The BGP protocol's name for `bgp`.
    pub subject: Option<String>,
    pub message: String,
    /// What to do, one step per entry.
    pub fix: Vec<String>,
}

impl BirdProblem {
    /// `bgp router1: message`, the form of the log line and the status line.
    pub fn headline(&self) -> String {
        match &self.subject {
            Some(s) => format!("{} {s}: {}", self.check, self.message),
            None => format!("{}: {}", self.check, self.message),
        }
    }
}

/// The checks that are not OK (skipped ones included: a check that could not run is a problem
/// of its own here), in doctor's order.
pub fn problems(checks: &[Check]) -> Vec<BirdProblem> {
    checks
        .iter()
        .filter(|c| c.status != Status::Ok)
        .map(|c| BirdProblem {
            check: c.check.to_string(),
            subject: c.subject.clone(),
            message: c.message.clone(),
            fix: c.fix.clone(),
        })
        .collect()
}

/// Starts the checking task. It checks at once, then every [`BIRD_CHECK_INTERVAL`], against
/// the expectation last sent on `expect` (`None`: no `[announce]`, nothing to check). Ends when
/// the receiver of its results is dropped. Needs a tokio runtime.
pub fn spawn(
    mut expect: watch::Receiver<Option<BirdExpectation>>,
) -> mpsc::Receiver<Vec<BirdProblem>> {
    let (tx, rx) = mpsc::channel(2);
    tokio::spawn(async move {
        loop {
            let current = expect.borrow_and_update().clone();
            if let Some(e) = current {
                let found = problems(&judge_bird(&gather_bird(&e).await));
                if tx.send(found).await.is_err() {
                    return;
                }
            }
            // A changed expectation (a reload) is checked at once.
            let _ = tokio::time::timeout(BIRD_CHECK_INTERVAL, expect.changed()).await;
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn expectation(socket: PathBuf) -> BirdExpectation {
        BirdExpectation {
            socket,
            table: 200,
            protocol: 200,
            vips: vec!["203.0.113.10".parse().unwrap()],
            timeout: Duration::from_secs(2),
        }
    }

    #[tokio::test]
    async fn a_missing_bird_is_one_problem_with_a_fix() {
        let dir = std::env::temp_dir().join(format!("xlb-bird-watch-{}", std::process::id()));
        let (tx, rx) = watch::channel(Some(expectation(dir.join("no-such.ctl"))));
        let mut results = spawn(rx);
        let found = tokio::time::timeout(Duration::from_secs(10), results.recv())
            .await
            .expect("a first check at once")
            .expect("the task runs");
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].check, "bird");
        assert!(!found[0].fix.is_empty(), "{found:?}");
        // No expectation: nothing is checked, nothing sent.
        tx.send(None).unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(300), results.recv())
                .await
                .is_err()
        );
    }

    #[test]
    fn ok_checks_are_no_problem() {
        let checks = vec![
            Check {
                check: "bird",
                subject: None,
                status: Status::Ok,
                message: "BIRD 2.0.12 answers".into(),
                fix: vec![],
            },
            Check {
                check: "bgp",
                subject: Some("router1".into()),
                status: Status::Fail,
                message: "session Active: Connection refused".into(),
                fix: vec!["check the router".into()],
            },
        ];
        let p = problems(&checks);
        assert_eq!(p.len(), 1);
        assert_eq!(
            p[0].headline(),
            "bgp router1: session Active: Connection refused"
        );
    }
}
