//! Steps of the wall clock noticed against the monotonic clock, and deadlines kept on the
//! monotonic clock: what the refresher's wall-clock handling (`wall_clock`) works from.

use std::time::Duration;

use jiff::SignedDuration;
use tokio::time::Instant;

use crate::clock::{Clock, WallClockSteps};

/// The wall clock watched against the monotonic clock while the refresher runs.
pub(super) struct StepWatch {
    origin: Instant,
    steps: WallClockSteps,
}

impl StepWatch {
    /// Starts watching: the first observation is the reference.
    pub fn new(clock: &dyn Clock) -> Self {
        let mut watch = Self {
            origin: Instant::now(),
            steps: WallClockSteps::default(),
        };
        watch.observe(clock);
        watch
    }

    /// The step since the last observation, if any (see [`WallClockSteps::observe`]).
    pub(super) fn observe(&mut self, clock: &dyn Clock) -> Option<SignedDuration> {
        let steady = SignedDuration::try_from(self.origin.elapsed()).unwrap_or(SignedDuration::MAX);
        self.steps.observe(clock.now(), steady)
    }
}

/// The monotonic time `wait` from now (none for a wait too long to represent: no bound then).
pub(super) fn steady_deadline(wait: SignedDuration) -> Option<Instant> {
    let wait = Duration::try_from(wait).unwrap_or(Duration::ZERO);
    Instant::now().checked_add(wait)
}
