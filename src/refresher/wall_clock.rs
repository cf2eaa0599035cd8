//! The refresher against steps of the wall clock (NTP setting it, a VM restored, a laptop resumed
//! from sleep). Deadlines are wall-clock times, as the kubelet's rule is, but the refresher sleeps
//! on the monotonic clock, which a step does not move. So:
//! - it never sleeps longer than [`WALL_CLOCK_RECHECK`] before it compares the deadlines with the
//!   wall clock again: after a step forward, the tokens it made due are refreshed within that;
//! - each deadline is also kept on the monotonic clock, as it was when scheduled. After a step
//!   back every queued deadline becomes the earlier of the two, or now for a token issued in the
//!   clock's new future ([`Occasion::ClockStepped`]): a token is never refreshed later than its
//!   real lifetime says, whatever the clock reads.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use jiff::SignedDuration;
use tokio::time::Instant;

use super::step_watch::StepWatch;
use super::Refresher;
use crate::clock::WALL_CLOCK_RECHECK;
use crate::source::{TokenGrant, TokenSource};
use crate::token::refresh::{next_refresh, Occasion};

impl<S: TokenSource> Refresher<S> {
    /// Looks at the wall clock against the monotonic clock; after a step back, brings the
    /// deadlines forward that the step would delay. A step forward needs nothing more: the
    /// deadlines it made due are collected right after.
    pub(super) fn notice_clock_step(&mut self, watch: &mut StepWatch) {
        let Some(step) = watch.observe(self.clock.as_ref()) else {
            return;
        };
        // In whole seconds: the nanoseconds between two clock reads are noise.
        let size = SignedDuration::from_secs(step.abs().as_secs());
        if step.is_positive() {
            tracing::warn!(
                step = %format_args!("{size:#}"),
                "the wall clock jumped forward (it was set, or the machine slept); refreshing the tokens now due"
            );
            return;
        }
        let brought_forward = self.reschedule_after_step_back();
        tracing::warn!(
            step = %format_args!("{size:#}"),
            brought_forward,
            "the wall clock was set back; refreshes are kept to their real lifetimes"
        );
    }

    /// Moves each queued deadline to its [`Occasion::ClockStepped`] deadline (superseded entries are dropped
    /// on the way). O(n), once per step. Returns how many deadlines moved.
    fn reschedule_after_step_back(&mut self) -> usize {
        let now = self.clock.now();
        let steady_now = Instant::now();
        let mut entries = std::mem::take(&mut self.queue).into_vec();
        let volumes = &mut self.volumes;
        entries.retain(|Reverse((_, v, t, generation))| {
            volumes[*v].tokens[*t].generation == *generation
        });
        let mut moved = Vec::new();
        for Reverse((deadline, volume_index, token_index, _)) in &mut entries {
            let slot = &mut volumes[*volume_index].tokens[*token_index];
            let steady_left = slot.steady_due.map_or(SignedDuration::MAX, |due| {
                SignedDuration::try_from(due.saturating_duration_since(steady_now))
                    .unwrap_or(SignedDuration::MAX)
            });
            let token = slot.grant.as_ref().map(TokenGrant::lifetime);
            let occasion = Occasion::ClockStepped {
                token: token.as_ref(),
                scheduled: *deadline,
                steady_left,
            };
            let due = next_refresh(occasion, now, fastrand::f64());
            if due < *deadline {
                *deadline = due;
                slot.next_due = due;
                moved.push((*volume_index, *token_index, due));
            }
        }
        self.queue = BinaryHeap::from(entries);
        for (volume_index, token_index, due) in &moved {
            self.update_status(*volume_index, *token_index, |status| {
                status.next_refresh = Some(*due);
            });
        }
        moved.len()
    }

    /// When to wake next: at the earliest deadline by the wall clock's reading now, or by that
    /// token's monotonic deadline if it comes first (a step back not yet noticed), and never
    /// later than [`WALL_CLOCK_RECHECK`] from now. `None` when nothing is queued.
    pub(super) fn next_wake(&self) -> Option<Instant> {
        let Reverse((deadline, volume_index, token_index, generation)) = *self.queue.peek()?;
        let now = Instant::now();
        let by_wall = Duration::try_from(deadline.duration_since(self.clock.now()))
            .unwrap_or(Duration::ZERO)
            .min(WALL_CLOCK_RECHECK);
        let wake = now + by_wall;
        // Only a live entry's own deadline, and only one still ahead: a passed one whose wall
        // deadline has not come (a step back under the threshold) would wake us in a loop.
        let slot = &self.volumes[volume_index].tokens[token_index];
        let steady = slot
            .steady_due
            .filter(|due| slot.generation == generation && *due > now);
        Some(steady.map_or(wake, |due| due.min(wake)))
    }
}
