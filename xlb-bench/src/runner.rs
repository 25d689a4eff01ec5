//! Per-packet timing through `BPF_PROG_TEST_RUN`.
//!
//! Method ("single"): every iteration is its own syscall with `repeat = 1`, so every packet the
//! program sees is the intended input (the kernel's `repeat` loop reuses the buffer the previous
//! iteration modified: after an encapsulation the next iteration would time a tunnel packet that
//! passes). The figure per iteration is the kernel's own measurement, taken inside the syscall
//! around the program run; it therefore includes a fixed per-run overhead (the timer's
//! `ktime_get_ns`, `local_bh_disable/enable`, the run-context switch) that a packet in a real
//! driver loop does not pay. `xlb_pass` measured the same way shows that overhead.
//!
//! Method ("repeat"): one syscall with `repeat = N`; the kernel loop amortises its overhead.
//! Only valid for programs that do the same work on their own output (the no-op, the reflector,
//! MAC-only rewrites, passes); used to size the fixed overhead above.

use std::time::Instant;

use aya::programs::{TestRun, TestRunOptions, Xdp};

/// Where the frames of a measurement come from: one fixed frame, or a template rewritten per
/// iteration (distinct flows).
pub trait Frames {
    /// The frame of iteration `i` (valid until the next call).
    fn frame(&mut self, i: u64) -> &[u8];
}

/// The same frame every time.
pub struct Fixed(pub Vec<u8>);

impl Frames for Fixed {
    fn frame(&mut self, _i: u64) -> &[u8] {
        &self.0
    }
}

/// A set of frames used round-robin.
pub struct Cycle(pub Vec<Vec<u8>>);

impl Frames for Cycle {
    fn frame(&mut self, i: u64) -> &[u8] {
        let n = self.0.len() as u64;
        &self.0[(i % n) as usize]
    }
}

/// An IPv4 TCP/UDP template whose client address and port are rewritten per iteration from a
/// flow index (see [`client_of`]); the IPv4 header checksum is kept valid.
pub struct V4Flows {
    frame: Vec<u8>,
    /// Flow index of iteration `i`.
    index: Box<dyn FnMut(u64) -> u64>,
}

/// Start of the IPv4 header in the templates (untagged Ethernet).
const L2: usize = 14;

impl V4Flows {
    pub fn new(frame: Vec<u8>, index: impl FnMut(u64) -> u64 + 'static) -> Self {
        assert_eq!(
            u16::from_be_bytes([frame[12], frame[13]]),
            0x0800,
            "V4Flows needs an untagged IPv4 template"
        );
        Self {
            frame,
            index: Box::new(index),
        }
    }
}

/// Distinct client endpoints: 198.51.100.0/24 (256 addresses) x source ports 1024.. (64,000).
pub const DISTINCT_CLIENTS: u64 = 256 * 64_000;

/// Client `(address, port)` of flow index `k` (taken modulo [`DISTINCT_CLIENTS`]).
pub fn client_of(k: u64) -> ([u8; 4], u16) {
    let k = k % DISTINCT_CLIENTS;
    ([198, 51, 100, (k & 0xff) as u8], 1024 + (k >> 8) as u16)
}

/// Established flows that carry the traffic of the "resident flows" scenario and of the
/// occupancy curve (the first point of which has 1,000 resident). The table holds many more;
/// packets cycle, in a scrambled order, over this many of them, spread evenly through the
/// resident range, so the curve changes one thing: the size of the table, not the working set.
/// The everything-active case (every packet a different resident flow) is measured separately.
pub const ACTIVE_FLOWS: u64 = 1000;

/// Flow index of call `i` when `active` of `resident` flows carry the traffic.
pub fn active_flow(i: u64, resident: u64, active: u64) -> u64 {
    let active = active.min(resident).max(1);
    (scrambled(i) % active) * (resident / active)
}

/// A pseudo-random permutation of flow indices (an odd multiplier is a bijection mod 2^24;
/// values past [`DISTINCT_CLIENTS`] wrap onto others, which only repeats a few sources).
pub fn scrambled(i: u64) -> u64 {
    (i.wrapping_mul(0x9E37_79B1) ^ 0x5bd1e9) & 0xff_ffff
}

impl Frames for V4Flows {
    fn frame(&mut self, i: u64) -> &[u8] {
        let (addr, port) = client_of((self.index)(i));
        let ihl = usize::from(self.frame[L2] & 0x0f) * 4;
        self.frame[L2 + 12..L2 + 16].copy_from_slice(&addr);
        self.frame[L2 + ihl..L2 + ihl + 2].copy_from_slice(&port.to_be_bytes());
        xlb_testkit::packet::fix_ipv4_checksum(&mut self.frame, L2);
        &self.frame
    }
}

pub use xlb_bench_data::measure::{Measurement, RunStats};

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn summarise(method: &'static str, runs: Vec<RunStats>, verdict: u32) -> Measurement {
    let mut means: Vec<f64> = runs.iter().map(|r| r.trimmed_mean_ns).collect();
    let mut medians: Vec<f64> = runs.iter().map(|r| r.median_ns).collect();
    let ns = median(&mut means);
    let spread = if ns > 0.0 && !means.is_empty() {
        (means[means.len() - 1] - means[0]) / ns
    } else {
        0.0
    };
    Measurement {
        method: method.into(),
        ns,
        median_ns: median(&mut medians),
        spread,
        runs,
        verdict,
    }
}

/// Runs `frame` once; returns (verdict, kernel-measured ns).
pub fn run_once(prog: &Xdp, frame: &[u8]) -> anyhow::Result<(u32, u32)> {
    let res = prog.test_run(TestRunOptions {
        data_in: Some(frame),
        ..TestRunOptions::default()
    })?;
    Ok((res.return_value, res.duration.as_nanos() as u32))
}

/// The "single" method: `runs` runs of `iterations` one-packet syscalls, after `warmup`
/// unrecorded ones. Iteration numbers continue across runs (distinct-flow sources never repeat
/// a flow within a measurement unless they wrap).
pub fn measure(
    prog: &Xdp,
    frames: &mut dyn Frames,
    warmup: u64,
    iterations: u64,
    runs: u32,
) -> anyhow::Result<Measurement> {
    let mut i = 0u64;
    let mut verdict = 0;
    for _ in 0..warmup {
        verdict = run_once(prog, frames.frame(i))?.0;
        i += 1;
    }
    let mut samples: Vec<u32> = Vec::with_capacity(iterations as usize);
    let mut out = Vec::new();
    for _ in 0..runs {
        samples.clear();
        let start = Instant::now();
        for _ in 0..iterations {
            let (v, ns) = run_once(prog, frames.frame(i))?;
            verdict = v;
            samples.push(ns);
            i += 1;
        }
        let wall = start.elapsed();
        samples.sort_unstable();
        let n = samples.len();
        let p99_at = ((n as f64 * 0.99) as usize).min(n.saturating_sub(1));
        let kept = &samples[..=p99_at];
        let trimmed = kept.iter().map(|&s| f64::from(s)).sum::<f64>() / kept.len() as f64;
        out.push(RunStats {
            iterations,
            median_ns: f64::from(samples[n / 2]),
            trimmed_mean_ns: trimmed,
            p99_ns: f64::from(samples[p99_at]),
            wall_ns_per_call: wall.as_nanos() as f64 / iterations as f64,
        });
    }
    Ok(summarise("single", out, verdict))
}

/// The "repeat" method: `runs` syscalls of `repeat` iterations each (the kernel's mean per
/// iteration). Only for programs whose work on their own output is the same (see the module
/// doc).
pub fn measure_repeat(
    prog: &Xdp,
    frame: &[u8],
    repeat: u32,
    runs: u32,
) -> anyhow::Result<Measurement> {
    let mut out = Vec::new();
    let mut verdict = 0;
    // Warm-up.
    prog.test_run(TestRunOptions {
        data_in: Some(frame),
        repeat: repeat.min(10_000),
        ..TestRunOptions::default()
    })?;
    for _ in 0..runs {
        let start = Instant::now();
        let res = prog.test_run(TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..TestRunOptions::default()
        })?;
        let wall = start.elapsed();
        verdict = res.return_value;
        // The kernel's mean per iteration, in whole nanoseconds. (The wall time is no use:
        // with repeat > 1 the kernel swaps the XDP dispatcher in and out around the loop,
        // milliseconds of fixed cost per syscall.)
        let kernel_ns = res.duration.as_nanos() as f64;
        out.push(RunStats {
            iterations: u64::from(repeat),
            median_ns: kernel_ns,
            trimmed_mean_ns: kernel_ns,
            p99_ns: kernel_ns,
            wall_ns_per_call: wall.as_nanos() as f64 / f64::from(repeat),
        });
    }
    Ok(summarise("repeat", out, verdict))
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn active_flows_are_a_fixed_spread_subset_of_the_resident_ones() {
        let resident = 1_000_000;
        let seen: HashSet<u64> = (0..200_000)
            .map(|i| active_flow(i, resident, ACTIVE_FLOWS))
            .collect();
        assert_eq!(seen.len() as u64, ACTIVE_FLOWS, "every active flow is used");
        assert!(seen.iter().all(|&k| k < resident && k % 1000 == 0));
        assert!(
            seen.contains(&0) && seen.contains(&999_000),
            "spread over the range"
        );
    }

    #[test]
    fn fewer_resident_than_active_uses_them_all() {
        let seen: HashSet<u64> = (0..10_000).map(|i| active_flow(i, 300, 1000)).collect();
        assert_eq!(seen, (0..300).collect());
    }
}
