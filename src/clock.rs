//! Time as an injectable dependency, so policy and schedules are tested without sleeping; and
//! what it takes to notice that the wall clock was set (or the machine slept).

use std::sync::Mutex;

use jiff::{SignedDuration, Timestamp};

/// A source of "now". Everything that decides by time takes one of these (or a `Timestamp`).
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
}

/// How long anything that waits for a wall-clock time sleeps at most before it looks at the wall
/// clock again. Sleeps run on the monotonic clock, which a step of the wall clock (NTP
/// correcting it, a VM restored, a laptop resumed) does not move: without a bound, a deadline
/// that a forward step brought due would wait out the monotonic time computed before the step.
/// The kubelet re-checks its tokens at every pod sync (60-90 s); a token due after a step is
/// refreshed within this period plus its request and write, well within 30 s. Idle, it costs a
/// wake-up, two clock reads and a heap peek every 10 s.
pub const WALL_CLOCK_RECHECK: std::time::Duration = std::time::Duration::from_secs(10);

/// A change of the wall clock against the monotonic clock smaller than this is not a step:
/// reading two clocks one after the other on a loaded machine, and NTP's slewing (at most
/// 0.5 ms per second, so 5 ms between two re-checks), stay far below it.
pub const STEP_THRESHOLD: SignedDuration = SignedDuration::from_secs(1);

/// Notices steps of the wall clock by comparing it with a clock that never steps (monotonic time
/// since any fixed origin): between two observations both advance alike unless the wall clock
/// was set, or the machine was suspended (the monotonic clock stands still meanwhile on Linux;
/// the wall clock does not, so a resume looks like a forward step).
#[derive(Debug, Default)]
pub struct WallClockSteps {
    /// Wall clock minus monotonic time at the last observation.
    offset: Option<SignedDuration>,
}

impl WallClockSteps {
    /// Observes the wall clock reading `wall` when the monotonic clock read `steady`. Returns how
    /// far the wall clock stepped since the last observation (negative: back), when that is at
    /// least [`STEP_THRESHOLD`] either way.
    pub fn observe(&mut self, wall: Timestamp, steady: SignedDuration) -> Option<SignedDuration> {
        let offset = wall.as_duration().saturating_sub(steady);
        let previous = self.offset.replace(offset)?;
        let step = offset.saturating_sub(previous);
        (step.abs() >= STEP_THRESHOLD).then_some(step)
    }
}

/// The real wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock that only moves when told to: for tests.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<Timestamp>,
}

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        Self {
            now: Mutex::new(start),
        }
    }

    pub fn set(&self, to: Timestamp) {
        *self.lock() = to;
    }

    pub fn advance(&self, by: SignedDuration) {
        let mut now = self.lock();
        *now = now.saturating_add(by).unwrap_or(*now);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Timestamp> {
        // A poisoned lock only means another test thread panicked; the timestamp is still valid.
        self.now
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.lock()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let start = Timestamp::from_second(1_700_000_000).unwrap();
        let clock = ManualClock::new(start);
        assert_eq!(clock.now(), start);
        clock.advance(SignedDuration::from_secs(90));
        assert_eq!(clock.now().as_second(), 1_700_000_090);
        clock.set(start);
        assert_eq!(clock.now(), start);
    }

    #[test]
    fn steps_of_the_wall_clock_are_told_from_time_passing() {
        let start = Timestamp::from_second(1_700_000_000).unwrap();
        let clock = ManualClock::new(start);
        let secs = SignedDuration::from_secs;
        let mut steps = WallClockSteps::default();
        let mut steady = SignedDuration::ZERO;
        let observe =
            |steps: &mut WallClockSteps, steady: SignedDuration| steps.observe(clock.now(), steady);
        assert_eq!(observe(&mut steps, steady), None, "the first observation");
        // Both clocks advance alike: no step, however long.
        clock.advance(secs(3600));
        steady += secs(3600);
        assert_eq!(observe(&mut steps, steady), None);
        // Slewing: 5 ms of difference over 10 s is no step.
        clock.advance(SignedDuration::from_millis(10_005));
        steady += secs(10);
        assert_eq!(observe(&mut steps, steady), None);
        // Set forward by an hour (or a suspend: the monotonic clock stood still).
        clock.advance(secs(3600));
        assert_eq!(observe(&mut steps, steady), Some(secs(3600)));
        assert_eq!(observe(&mut steps, steady), None, "reported once");
        // Set back by ten minutes while five seconds passed.
        clock.advance(secs(5 - 600));
        steady += secs(5);
        assert_eq!(observe(&mut steps, steady), Some(secs(-600)));
        // Exactly the threshold counts; just under it does not.
        clock.advance(-STEP_THRESHOLD);
        assert_eq!(observe(&mut steps, steady), Some(-STEP_THRESHOLD));
        clock.advance(SignedDuration::from_millis(999));
        assert_eq!(observe(&mut steps, steady), None);
    }
}
