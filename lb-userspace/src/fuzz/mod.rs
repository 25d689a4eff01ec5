//! Property-based fuzzing of the parsers that take outside input: the config file, API
//! request lines and the agent's answers to them (`agent/fuzz.rs`), continuity peer messages
//! and netlink answers. Each target generates near-valid inputs (a valid one, mutated) and
//! random ones, and checks that nothing panics or hangs and that every refusal says what to fix.
//!
//! The budget comes from the environment, so `cargo test` runs a short fixed-seed pass and
//! `cargo xtask fuzz --host-time N` a long random one:
//! - `XLB_FUZZ_CASES`: cases per target (default: each target's own, a few hundred);
//! - `XLB_FUZZ_SECONDS`: seconds for all targets together, shared equally; without
//!   `XLB_FUZZ_CASES` the cases are then bounded by time only;
//! - `XLB_FUZZ_SEED`: the seed (decimal or 0x-hex), printed by every run and in every failure.

mod api;
mod config;
mod continuity;
mod netlink;

use std::time::{Duration, Instant};

use proptest::strategy::Strategy;
use proptest::test_runner::{
    Config, RngAlgorithm, TestCaseError, TestCaseResult, TestError, TestRng, TestRunner,
};

/// Every target, for the time share of each.
pub(crate) const TARGETS: &[&str] = &[
    "config_text",
    "config_mutated",
    "api_lines",
    "api_handlers",
    "continuity_decode",
    "netlink_datagrams",
];

/// The seed of `cargo test`'s pass: "xlbf".
const DEFAULT_SEED: u64 = 0x786c_6266;
/// A case slower than this is reported as a hang.
const SLOW_CASE: Duration = Duration::from_secs(10);
/// Cases run between two looks at the clock.
const BATCH: u32 = 32;

/// How much to run: at most `cases` cases and, when set, until `until`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Budget {
    pub cases: Option<u64>,
    pub time: Option<Duration>,
    pub seed: u64,
}

impl Budget {
    /// The environment's budget for one target whose default is `default_cases`.
    pub fn from_env(default_cases: u64) -> Result<Self, String> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let time = var("XLB_FUZZ_SECONDS")
            .map(|s| {
                s.trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|t| t.is_finite() && *t > 0.0)
                    .map(|t| Duration::from_secs_f64(t / TARGETS.len() as f64))
                    .ok_or(format!(
                        "XLB_FUZZ_SECONDS={s:?}: give a positive number of seconds"
                    ))
            })
            .transpose()?;
        let cases = match var("XLB_FUZZ_CASES") {
            Some(s) => Some(
                s.trim()
                    .parse::<u64>()
                    .map_err(|_| format!("XLB_FUZZ_CASES={s:?}: give a whole number"))?,
            ),
            None if time.is_some() => None,
            None => Some(default_cases),
        };
        let seed = match var("XLB_FUZZ_SEED") {
            Some(s) => parse_seed(&s).ok_or(format!(
                "XLB_FUZZ_SEED={s:?}: give a decimal or 0x-hex number"
            ))?,
            None => DEFAULT_SEED,
        };
        Ok(Self { cases, time, seed })
    }
}

fn parse_seed(s: &str) -> Option<u64> {
    let s = s.trim();
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// What a run did.
#[derive(Debug)]
pub(crate) struct Ran {
    pub cases: u64,
    pub elapsed: Duration,
}

/// Runs `test` on values of `strategy` within the environment's budget; panics with the seed,
/// the replay command and the smallest failing input when a case fails (shrunk by proptest).
pub(crate) fn fuzz<S>(
    target: &str,
    default_cases: u64,
    strategy: S,
    test: impl Fn(S::Value) -> TestCaseResult,
) -> Ran
where
    S: Strategy,
    S::Value: std::fmt::Debug,
{
    assert!(TARGETS.contains(&target), "{target} is not in TARGETS");
    let budget = Budget::from_env(default_cases).unwrap_or_else(|e| panic!("{e}"));
    let ran = run(target, budget, strategy, test);
    println!(
        "fuzz {target}: {} cases in {:.1}s, seed {:#x}, 0 failures",
        ran.cases,
        ran.elapsed.as_secs_f64(),
        budget.seed
    );
    ran
}

fn run<S>(
    target: &str,
    budget: Budget,
    strategy: S,
    test: impl Fn(S::Value) -> TestCaseResult,
) -> Ran
where
    S: Strategy,
    S::Value: std::fmt::Debug,
{
    // One stream per target, so a target's cases do not depend on which others ran.
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&budget.seed.to_le_bytes());
    seed_bytes[8..16].copy_from_slice(&fnv1a(target.as_bytes()).to_le_bytes());
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes);
    let mut runner = TestRunner::new_with_rng(
        Config {
            cases: BATCH,
            failure_persistence: None,
            max_shrink_iters: 2048,
            ..Config::default()
        },
        rng,
    );
    let start = Instant::now();
    let mut cases = 0u64;
    let timed = |v: S::Value| {
        let t = Instant::now();
        let r = test(v);
        let took = t.elapsed();
        if took > SLOW_CASE {
            return Err(TestCaseError::fail(format!(
                "one case took {:.1}s (more than {}s): a hang?",
                took.as_secs_f64(),
                SLOW_CASE.as_secs()
            )));
        }
        r
    };
    loop {
        let left = budget
            .cases
            .map_or(u64::from(BATCH), |c| c.saturating_sub(cases));
        let out_of_time = budget.time.is_some_and(|t| start.elapsed() >= t);
        if left == 0 || out_of_time {
            break;
        }
        let batch = left.min(u64::from(BATCH)) as u32;
        with_cases(&mut runner, batch);
        match runner.run(&strategy, timed) {
            Ok(()) => cases += u64::from(batch),
            Err(TestError::Fail(reason, value)) => panic!(
                "fuzz {target} failed after {cases}+ cases, seed {seed:#x} (replay: \
                 XLB_FUZZ_SEED={seed:#x} XLB_FUZZ_CASES={n} cargo test -p lb-userspace --lib \
                 fuzz_{target}): {reason}\nsmallest failing input: {value:#?}",
                seed = budget.seed,
                n = cases + u64::from(batch),
            ),
            Err(TestError::Abort(reason)) => panic!("fuzz {target} aborted: {reason}"),
        }
    }
    Ran {
        cases,
        elapsed: start.elapsed(),
    }
}

/// Sets the cases of the runner's next `run`: a new runner on a stream forked from the old
/// one's, so the cases stay a function of the seed.
fn with_cases(runner: &mut TestRunner, cases: u32) {
    let config = Config {
        cases,
        ..runner.config().clone()
    };
    let rng = runner.new_rng();
    *runner = TestRunner::new_with_rng(config, rng);
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Fails the case unless `msg` is a message an operator can act on: not empty, one that
/// starts with the field path when there is one, and of a bounded size.
pub(crate) fn check_message(msg: &str, path: &str) -> TestCaseResult {
    if msg.trim().is_empty() {
        return Err(TestCaseError::fail("an empty error message"));
    }
    if !path.is_empty() && !msg.starts_with(&format!("{path}: ")) {
        return Err(TestCaseError::fail(format!(
            "the message does not start with its path {path:?}: {msg}"
        )));
    }
    if msg.len() > 8 * 1024 {
        return Err(TestCaseError::fail(format!(
            "a message of {} bytes (the input echoed whole?)",
            msg.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn seeds_parse_in_decimal_and_hex() {
        assert_eq!(parse_seed("42"), Some(42));
        assert_eq!(parse_seed(" 0x2A "), Some(42));
        assert_eq!(parse_seed("x"), None);
    }

    #[test]
    fn the_budget_bounds_the_cases_and_a_failure_names_the_seed() {
        let budget = Budget {
            cases: Some(70),
            time: None,
            seed: 7,
        };
        let ran = run("config_text", budget, any::<u8>(), |_| Ok(()));
        assert_eq!(ran.cases, 70);
        let failed = std::panic::catch_unwind(|| {
            run("config_text", budget, any::<u8>(), |v| {
                prop_assert!(v < 200);
                Ok(())
            })
        })
        .unwrap_err();
        let msg = failed.downcast_ref::<String>().unwrap();
        assert!(msg.contains("seed 0x7 (replay: XLB_FUZZ_SEED=0x7"), "{msg}");
        assert!(msg.contains("smallest failing input: 200"), "{msg}");
    }
}
