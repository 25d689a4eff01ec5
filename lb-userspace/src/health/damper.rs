//! Flap damping: turns a stream of probe results into up/down transitions.
//!
//! Pure state machine, no I/O, no clock: the monitor feeds it one result per probe. Only
//! *consecutive* results count (no sliding window): an up backend goes down after `fall`
//! failures in a row, a down backend comes up after `rise` successes in a row, and a result in
//! the direction of the current state resets the streak. Separate thresholds (practice 9) let
//! the operator make "down" fast and "up" cautious, or the reverse.
//!
//! The initial state is the caller's choice, because the right answer depends on where the
//! backend comes from (see [`crate::health`] for the agent's policy): starting every backend
//! down would make a restarted agent that adopted live maps drop all traffic for `rise *
//! interval`; starting a never-checked backend up would send it traffic before any probe.

use super::Health;

/// Per-backend damping state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damper {
    state: Health,
    /// Consecutive results against `state` (failures while up, successes while down).
    streak: u32,
    rise: u32,
    fall: u32,
}

impl Damper {
    /// A damper in state `initial`. Thresholds below 1 are treated as 1 (the validated config
    /// never has them; a zero would otherwise mean "transition without evidence").
    pub fn new(initial: Health, rise: u32, fall: u32) -> Self {
        Self {
            state: initial,
            streak: 0,
            rise: rise.max(1),
            fall: fall.max(1),
        }
    }

    /// The damped state.
    pub fn state(&self) -> Health {
        self.state
    }

    /// Consecutive results seen against the current state so far.
    pub fn streak(&self) -> u32 {
        self.streak
    }

    /// Feeds one probe result; returns the new state only when it changed.
    pub fn record(&mut self, ok: bool) -> Option<Health> {
        let (against, threshold) = match self.state {
            Health::Up => (!ok, self.fall),
            Health::Down => (ok, self.rise),
        };
        if !against {
            self.streak = 0;
            return None;
        }
        self.streak = self.streak.saturating_add(1);
        if self.streak < threshold {
            return None;
        }
        self.streak = 0;
        self.state = self.state.flipped();
        Some(self.state)
    }

    /// Sets the state without evidence (a check of kind `none` is up by definition). Returns
    /// the new state only when it changed; the streak is cleared either way.
    pub fn force(&mut self, state: Health) -> Option<Health> {
        self.streak = 0;
        if self.state == state {
            return None;
        }
        self.state = state;
        Some(state)
    }

    /// New thresholds from a config reload. State and streak are kept: a reload must not
    /// reset health. A streak that already meets the new threshold transitions on the next
    /// result against the state, never inside this call (transitions come from probes only).
    pub fn set_thresholds(&mut self, rise: u32, fall: u32) {
        self.rise = rise.max(1);
        self.fall = fall.max(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(d: &mut Damper, results: &[bool]) -> Vec<Option<Health>> {
        results.iter().map(|&ok| d.record(ok)).collect()
    }

    #[test]
    fn up_goes_down_after_exactly_fall_consecutive_failures() {
        let mut d = Damper::new(Health::Up, 2, 3);
        assert_eq!(
            feed(&mut d, &[false, false, false]),
            [None, None, Some(Health::Down)]
        );
        assert_eq!(d.state(), Health::Down);
    }

    #[test]
    fn down_goes_up_after_exactly_rise_consecutive_successes() {
        let mut d = Damper::new(Health::Down, 2, 3);
        assert_eq!(feed(&mut d, &[true, true]), [None, Some(Health::Up)]);
        assert_eq!(d.state(), Health::Up);
    }

    #[test]
    fn opposite_result_resets_the_streak() {
        let mut d = Damper::new(Health::Up, 2, 3);
        // Two failures, a success: streak back to zero, so two more failures are not enough.
        assert_eq!(feed(&mut d, &[false, false, true, false, false]), [None; 5]);
        assert_eq!(d.streak(), 2);
        assert_eq!(d.record(false), Some(Health::Down));

        // Same when down: one success, one failure, then `rise` successes are needed again.
        assert_eq!(feed(&mut d, &[true, false, true]), [None; 3]);
        assert_eq!(d.record(true), Some(Health::Up));
    }

    #[test]
    fn no_duplicate_events_while_state_holds() {
        let mut d = Damper::new(Health::Up, 2, 2);
        let events: Vec<_> = feed(&mut d, &[false; 10]).into_iter().flatten().collect();
        assert_eq!(events, [Health::Down]);
        let events: Vec<_> = feed(&mut d, &[true; 10]).into_iter().flatten().collect();
        assert_eq!(events, [Health::Up]);
        assert_eq!(d.force(Health::Up), None);
    }

    #[test]
    fn initial_state_is_the_callers_and_results_in_its_direction_change_nothing() {
        let mut up = Damper::new(Health::Up, 2, 3);
        assert_eq!(up.state(), Health::Up);
        assert_eq!(feed(&mut up, &[true; 5]), [None; 5]);

        let mut down = Damper::new(Health::Down, 2, 3);
        assert_eq!(down.state(), Health::Down);
        assert_eq!(feed(&mut down, &[false; 5]), [None; 5]);
    }

    #[test]
    fn thresholds_of_one_flip_on_every_opposite_result_and_zero_means_one() {
        let mut d = Damper::new(Health::Down, 0, 0);
        assert_eq!(
            feed(&mut d, &[true, false, true]),
            [Some(Health::Up), Some(Health::Down), Some(Health::Up)]
        );
    }

    #[test]
    fn set_thresholds_keeps_state_and_streak() {
        let mut d = Damper::new(Health::Up, 2, 5);
        feed(&mut d, &[false, false]);
        d.set_thresholds(2, 3);
        assert_eq!((d.state(), d.streak()), (Health::Up, 2));
        assert_eq!(d.record(false), Some(Health::Down));
    }

    #[test]
    fn force_reports_only_a_change_and_clears_the_streak() {
        let mut d = Damper::new(Health::Down, 3, 3);
        d.record(true);
        assert_eq!(d.force(Health::Up), Some(Health::Up));
        assert_eq!(d.streak(), 0);
        assert_eq!(d.force(Health::Up), None);
    }
}
