//! The host's side of the datapath's UDP idle clock (`lb_common::flows::idle_shift`): the
//! program counts jiffies, so the agent needs the jiffy's length to turn the configured timeout
//! into ticks. The kernel gives it as the resolution of `CLOCK_MONOTONIC_COARSE` (`TICK_NSEC`,
//! 1 s / HZ).

use lb_common::flows::{idle_shift, idle_ticks};
use std::time::Duration;

/// The idle clock of this host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdleClock {
    /// `LbConfig::idle_shift`.
    pub shift: u8,
    /// One tick, in ns.
    pub tick_ns: u64,
}

impl IdleClock {
    /// The clock of a kernel whose jiffy lasts `jiffy_ns`.
    pub const fn from_jiffy(jiffy_ns: u64) -> Self {
        let shift = idle_shift(jiffy_ns);
        Self {
            shift,
            tick_ns: jiffy_ns << shift,
        }
    }

    /// This host's, `None` if the kernel does not say (then UDP flows cannot expire).
    pub fn host() -> Option<Self> {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec for the call's duration.
        let rc = unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
        let ns = u64::try_from(ts.tv_sec)
            .ok()?
            .checked_mul(1_000_000_000)?
            .checked_add(u64::try_from(ts.tv_nsec).ok()?)?;
        (rc == 0 && ns != 0).then(|| Self::from_jiffy(ns))
    }

    /// `LbConfig::udp_idle_ticks` of `timeout` (0 for none).
    pub fn ticks(&self, timeout: Duration) -> u16 {
        idle_ticks(
            u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX),
            self.tick_ns,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_clock_ticks_about_every_second() {
        let c = IdleClock::host().expect("Linux reports the coarse clock's resolution");
        assert!(
            (1 << 29..=1 << 30).contains(&c.tick_ns),
            "a tick of {} ns",
            c.tick_ns
        );
        assert_eq!(c.ticks(Duration::ZERO), 0);
        let t = c.ticks(Duration::from_secs(30));
        assert!((28..=56).contains(&t), "30 s is {t} ticks");
    }

    #[test]
    fn hz_250_ticks_are_1024_ms() {
        let c = IdleClock::from_jiffy(4_000_000);
        assert_eq!((c.shift, c.tick_ns), (8, 1_024_000_000));
        assert_eq!(c.ticks(Duration::from_secs(30)), 30);
        assert_eq!(c.ticks(Duration::from_secs(4 * 3600)), 14063);
    }
}
