//! The bounded differential fuzz run of `cargo xtask test` (issue 13): at least 200,000
//! generated and mutated frames through the loaded XDP program and the reference model
//! (`xlb_testkit::model`, written from docs/datapath.md); every difference, every invariant
//! violation and every stats disagreement fails the test, with the seed and the frames to
//! replay it. `cargo xtask fuzz --time N` runs the same fuzzer longer, with a random seed.
//!
//! `XLB_FUZZ_SEED` (hex or decimal) replays another seed; `XLB_FUZZ_FRAMES` changes the count.
//! Needs root (CAP_BPF): fails loudly rather than skips.

use std::time::Duration;

use lb_common::stats::Counter;
use xlb_testkit::fuzz::{self, Options};

/// The seed of the bounded run: fixed, so CI is repeatable; longer runs pick their own.
const DEFAULT_SEED: u64 = 0x786c_625f_6675_7a7a;
const FRAMES: u64 = 200_000;

/// The rules a full-length run must reach.
const MUST_REACH: [Counter; 22] = [
    Counter::Pass,
    Counter::PassMalformed,
    Counter::PassNoBackend,
    Counter::Tx,
    Counter::FlowHit,
    Counter::FlowMiss,
    Counter::FlowRehash,
    Counter::FlowSyn,
    Counter::FlowPeer,
    Counter::Fragment,
    Counter::IcmpEchoReply,
    Counter::IcmpErrorForwarded,
    Counter::IcmpTooBigSent,
    Counter::DropTruncated,
    Counter::DropBadHeader,
    Counter::DropTooManyExtHeaders,
    Counter::DropNoBackend,
    Counter::DropBadBackend,
    Counter::DropUnsupported,
    Counter::DropTooBigRateLimited,
    Counter::DropMartian,
    Counter::DropBadIcmpQuote,
];

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    let parsed = match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => v.parse(),
    };
    Some(parsed.unwrap_or_else(|e| panic!("{name}={v:?} is not a number: {e}")))
}

#[test]
fn the_program_agrees_with_the_model() {
    let seed = env_u64("XLB_FUZZ_SEED").unwrap_or(DEFAULT_SEED);
    let frames = env_u64("XLB_FUZZ_FRAMES").unwrap_or(FRAMES);
    // The time bound only guards against a hung run; the count is what the test promises.
    let report = fuzz::run(&Options::new(seed, frames, Duration::from_secs(1800)));
    for d in &report.details {
        eprintln!("{d}\n");
    }
    eprintln!("{}", report.summary());
    assert_eq!(report.frames, frames, "the run stopped early");
    // A fuzzer that stopped reaching a rule would still come out clean: every rule of the
    // contract must have been exercised (counted by the model) in the full-length run.
    if frames >= FRAMES {
        let missing: Vec<&str> = MUST_REACH
            .iter()
            .filter(|c| report.verdicts.get(c.name()).copied().unwrap_or(0) == 0)
            .map(|c| c.name())
            .collect();
        assert!(missing.is_empty(), "the run never reached: {missing:?}");
        assert!(report.decap_frames > 0 && report.mutated > frames / 3);
    }
    assert!(
        report.clean(),
        "the program and the model disagree (replay: XLB_FUZZ_SEED={seed:#x}); see above"
    );
}
