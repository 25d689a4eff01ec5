//! Waits between samples, and the Ctrl-C that ends a watch cleanly.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Waits between samples (`backends` rates, `stats --watch`); tests inject their own.
pub trait Pacer {
    /// Waits about `interval` after the previous return (or creation) and returns the time
    /// that actually passed since then, or `None` to stop (Ctrl-C).
    fn wait(&mut self, interval: Duration) -> Option<Duration>;
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// The wall clock. With `stop_on_ctrl_c`, the first SIGINT ends the wait (and the loop) so the
/// output ends cleanly; a second one kills the process as usual.
pub struct RealPacer {
    last: Instant,
}

impl RealPacer {
    pub fn new(stop_on_ctrl_c: bool) -> Self {
        if stop_on_ctrl_c {
            INTERRUPTED.store(false, Ordering::Relaxed);
            // SAFETY: a zeroed sigaction is valid; the handler only stores to an atomic, which
            // is async-signal-safe; SA_RESETHAND restores the default action after one signal.
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = on_sigint as extern "C" fn(libc::c_int) as libc::sighandler_t;
                sa.sa_flags = libc::SA_RESETHAND | libc::SA_RESTART;
                libc::sigemptyset(&mut sa.sa_mask);
                libc::sigaction(libc::SIGINT, &sa, std::ptr::null_mut());
            }
        }
        Self {
            last: Instant::now(),
        }
    }
}

impl Pacer for RealPacer {
    fn wait(&mut self, interval: Duration) -> Option<Duration> {
        let deadline = self.last + interval;
        loop {
            if INTERRUPTED.load(Ordering::Relaxed) {
                return None;
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            std::thread::sleep((deadline - now).min(Duration::from_millis(100)));
        }
        let now = Instant::now();
        let elapsed = now - self.last;
        self.last = now;
        Some(elapsed)
    }
}
