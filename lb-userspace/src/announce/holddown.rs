//! Route hold-down: a route changes state at most once per hold-down period.
//!
//! Pure state machine, no clock of its own: the caller passes `now`. The first change is
//! immediate (a route that never changed, or that was adopted from a previous agent, has no
//! window running); a further change inside the window waits for the window's end, and is
//! dropped if the wish flipped back in the meantime. The caller commits a change only once
//! the speaker carried it out, so a failed write neither changes the state nor opens a window.

use std::time::{Duration, Instant};

/// What to do with one route now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// The route is as wanted.
    Steady,
    /// Change it now (to announced if `true`), then [`HoldDown::commit`].
    Change(bool),
    /// A change is wanted but held until this instant.
    HeldUntil(Instant),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HoldDown {
    hold: Duration,
    announced: bool,
    last_change: Option<Instant>,
}

impl HoldDown {
    /// A route in state `announced` with no window running (new, or adopted at start).
    pub fn new(announced: bool, hold: Duration) -> Self {
        Self {
            hold,
            announced,
            last_change: None,
        }
    }

    pub fn announced(&self) -> bool {
        self.announced
    }

    /// A reload may change the period; a running window is measured with the new one.
    pub fn set_hold(&mut self, hold: Duration) {
        self.hold = hold;
    }

    /// What wanting `want` means at `now`.
    pub fn step(&self, want: bool, now: Instant) -> Step {
        if want == self.announced {
            return Step::Steady;
        }
        match self.last_change {
            Some(at) if now < at + self.hold => Step::HeldUntil(at + self.hold),
            _ => Step::Change(want),
        }
    }

    /// The speaker carried out a change to `announced` at `now`.
    pub fn commit(&mut self, announced: bool, now: Instant) {
        if announced != self.announced {
            self.announced = announced;
            self.last_change = Some(now);
        }
    }

    /// Sets the state without a window (stop --detach, a table change, an outside removal).
    pub fn force(&mut self, announced: bool) {
        self.announced = announced;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOLD: Duration = Duration::from_secs(5);
    const NS: Duration = Duration::from_nanos(1);

    #[test]
    fn the_first_change_is_immediate() {
        let t0 = Instant::now();
        let h = HoldDown::new(false, HOLD);
        assert_eq!(h.step(false, t0), Step::Steady);
        assert_eq!(h.step(true, t0), Step::Change(true));
        let adopted = HoldDown::new(true, HOLD);
        assert_eq!(adopted.step(false, t0), Step::Change(false));
    }

    #[test]
    fn a_second_change_waits_exactly_the_hold_down() {
        let t0 = Instant::now();
        let mut h = HoldDown::new(false, HOLD);
        h.commit(true, t0);
        assert!(h.announced());
        assert_eq!(h.step(false, t0), Step::HeldUntil(t0 + HOLD));
        assert_eq!(h.step(false, t0 + HOLD - NS), Step::HeldUntil(t0 + HOLD));
        assert_eq!(h.step(false, t0 + HOLD), Step::Change(false));
        // The wish flipped back before the end: nothing to do, and no change happened.
        assert_eq!(h.step(true, t0 + HOLD - NS), Step::Steady);
        h.commit(false, t0 + HOLD);
        assert_eq!(
            h.step(true, t0 + HOLD + HOLD - NS),
            Step::HeldUntil(t0 + HOLD + HOLD)
        );
    }

    #[test]
    fn an_uncommitted_change_opens_no_window() {
        let t0 = Instant::now();
        let mut h = HoldDown::new(false, HOLD);
        assert_eq!(h.step(true, t0), Step::Change(true));
        // The speaker failed: not committed, so the retry is not held.
        assert_eq!(h.step(true, t0 + NS), Step::Change(true));
        // Committing the state it already has opens none either.
        h.commit(false, t0);
        assert_eq!(h.step(true, t0 + NS), Step::Change(true));
    }

    #[test]
    fn zero_hold_down_never_holds_and_force_opens_no_window() {
        let t0 = Instant::now();
        let mut h = HoldDown::new(false, Duration::ZERO);
        h.commit(true, t0);
        assert_eq!(h.step(false, t0), Step::Change(false));
        let mut h = HoldDown::new(true, HOLD);
        h.commit(false, t0);
        h.set_hold(Duration::from_secs(1));
        assert_eq!(
            h.step(true, t0 + Duration::from_secs(1) - NS),
            Step::HeldUntil(t0 + Duration::from_secs(1))
        );
        h.force(true);
        assert_eq!(h.step(true, t0), Step::Steady);
    }
}
