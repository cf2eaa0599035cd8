//! The kubelet's token refresh rule (`pkg/kubelet/token/token_manager.go`), as a pure function.
//!
//! A token needs refreshing once less than 20% of its requested lifetime remains, or 24 h after it
//! was issued, each threshold brought forward by a random jitter. The kubelet's jitter is a whole
//! number of seconds in 0..=9. We express it as `steps` of a granularity that is one second for
//! every lifetime the API server accepts (>= 600 s) and shrinks with emulator-only short lifetimes
//! (e.g. 2 s), so that a short token is still refreshed after it was issued and before it ends.
//!
//! The refresher asks one question, [`next_refresh`]: when is this token next due, on this
//! [`Occasion`] (a token just granted, the first of a spread start, or a step of the wall clock).
//! [`TokenLifetime::refresh_window`] shows the kubelet's span for `inspect`.

use jiff::{SignedDuration, Timestamp};

/// `maxTTL`: a token older than this is always refreshed.
pub const MAX_TTL: SignedDuration = SignedDuration::from_hours(24);
/// The jitter takes one of this many steps (0..=9), as the kubelet truncates to whole seconds
/// (its `maxJitter` is 10 s).
const JITTER_STEPS: u8 = 10;
/// Share of the requested lifetime that may remain before a refresh, in percent.
const REFRESH_REMAINING_PERCENT: i128 = 20;

/// What the refresh rule needs to know about a token, all derived from a TokenRequest answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenLifetime {
    /// Issue time as the kubelet derives it: status expiration minus the requested lifetime.
    pub issued_at: Timestamp,
    /// The requested lifetime (`spec.expirationSeconds` as the server echoed it).
    pub requested: SignedDuration,
    /// Where the usable lifetime ends: the earliest of the status expiration, the JWT `exp` and
    /// `kubernetes.io.warnafter`.
    pub ends_at: Timestamp,
}

/// Which threshold decided the refresh time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RefreshReason {
    /// Less than 20% of the requested lifetime remains.
    EightyPercent,
    /// The token is 24 hours old.
    MaxTtl,
}

impl TokenLifetime {
    /// Builds the lifetime from a TokenRequest answer and, when known, the JWT's own times.
    pub fn from_grant(
        status_expiration: Timestamp,
        requested: SignedDuration,
        jwt_expiry: Option<Timestamp>,
        warn_after: Option<Timestamp>,
    ) -> Self {
        let ends_at = [Some(status_expiration), jwt_expiry, warn_after]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(status_expiration);
        Self {
            issued_at: status_expiration
                .checked_sub(requested)
                .unwrap_or(status_expiration),
            requested,
            ends_at,
        }
    }

    /// One jitter step: a second for ordinary lifetimes, a hundredth of the lifetime for shorter
    /// (emulator-only) ones, so ten steps never exceed a tenth of the lifetime.
    fn jitter_step(&self) -> SignedDuration {
        let hundredth = self.requested / 100;
        if hundredth < SignedDuration::from_secs(1) {
            hundredth.max(SignedDuration::from_millis(1))
        } else {
            SignedDuration::from_secs(1)
        }
    }

    /// How long before the end of the lifetime the refresh is due: `floor(E * 20 / 100)` in whole
    /// jitter steps (whole seconds for lifetimes the API server accepts, as the kubelet computes it).
    fn refresh_margin(&self) -> SignedDuration {
        let step = self.jitter_step().as_nanos().max(1);
        let margin = self.requested.as_nanos().max(0) * REFRESH_REMAINING_PERCENT / 100;
        duration_from_nanos(margin / step * step)
    }

    /// The refresh time with `jitter_steps` (0..=9) steps of jitter, and the threshold that set it.
    fn refresh_at_with_reason(&self, jitter_steps: u8) -> (Timestamp, RefreshReason) {
        let jitter = self.jitter_step() * i32::from(jitter_steps.min(JITTER_STEPS - 1));
        let by_share = self
            .ends_at
            .checked_sub(self.refresh_margin())
            .unwrap_or(self.ends_at);
        let by_age = self
            .issued_at
            .checked_add(MAX_TTL)
            .unwrap_or(Timestamp::MAX);
        let (deadline, reason) = if by_age < by_share {
            (by_age, RefreshReason::MaxTtl)
        } else {
            (by_share, RefreshReason::EightyPercent)
        };
        (deadline.checked_sub(jitter).unwrap_or(deadline), reason)
    }

    /// The refresh time with `jitter_steps` (0..=9) steps of jitter.
    fn refresh_at(&self, jitter_steps: u8) -> Timestamp {
        self.refresh_at_with_reason(jitter_steps).0
    }

    /// The refresh time with a jitter anywhere in the kubelet's range (`fraction` in [0, 1]:
    /// none to the largest), not only its whole steps. The kubelet's whole seconds on top of an
    /// `exp` in whole seconds put every deadline on a few instants per second; with thousands of
    /// tokens that is a crowd due at once, each one a little later than the one before.
    fn refresh_at_jittered(&self, fraction: f64) -> Timestamp {
        let (deadline, _) = self.refresh_at_with_reason(0);
        let largest = self.jitter_step() * i32::from(JITTER_STEPS - 1);
        let jitter = largest.mul_f64(fraction.clamp(0.0, 1.0));
        deadline.checked_sub(jitter).unwrap_or(deadline)
    }

    /// A first refresh spread over the second half of the span before the kubelet's (jitter-free)
    /// refresh time: `fraction` 0 is halfway there (40 % of an ordinary lifetime), 1 is the
    /// kubelet's time. For a mass start (`emulate --pods`): thousands of tokens minted within
    /// seconds would otherwise all be due again within seconds, and again at every later round.
    /// Never later than the kubelet would refresh.
    fn spread_refresh_at(&self, fraction: f64) -> Timestamp {
        let (latest, _) = self.refresh_at_with_reason(0);
        let span = latest.duration_since(self.issued_at);
        if !span.is_positive() {
            return latest;
        }
        let early = span.mul_f64(0.5 * (1.0 - fraction.clamp(0.0, 1.0)));
        latest.checked_sub(early).unwrap_or(latest)
    }

    /// When a kubelet would refresh this token: the earliest moment (largest jitter) and the
    /// latest (no jitter).
    pub fn refresh_window(&self) -> RefreshWindow {
        let (latest, reason) = self.refresh_at_with_reason(0);
        RefreshWindow {
            earliest: self.refresh_at(JITTER_STEPS - 1),
            latest,
            reason,
        }
    }
}

/// Why the refresher asks when a token is next due.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Occasion<'a> {
    /// A token was just granted; its next refresh follows the kubelet's rule with a jitter
    /// anywhere in the kubelet's range. `spread_start`: it is the first token of its slot and
    /// the first refreshes are spread over the second half of the span before the kubelet's time
    /// (a mass start, `emulate --pods`: thousands of tokens minted within seconds would otherwise
    /// all be due again within seconds, round after round).
    Granted {
        token: &'a TokenLifetime,
        spread_start: bool,
    },
    /// The wall clock stepped (it was set, or the machine slept) while a refresh was due at
    /// `scheduled`; `steady_left` is what remains of that wait on the monotonic clock, `token`
    /// the token in hand (none: a retry before the first token).
    ClockStepped {
        token: Option<&'a TokenLifetime>,
        scheduled: Timestamp,
        steady_left: SignedDuration,
    },
}

/// When a token is next due for a refresh: the one rule the refresher follows. `now` is the
/// wall clock when asked; `jitter` in [0, 1] draws the jitter (none to the largest) or, with
/// `spread_start`, the place in the spread (halfway to the kubelet's time up to it).
///
/// A granted token is due strictly by its own times (even if that is already past). After a
/// step of the wall clock, a token's lifetime still runs out in real time, whatever the clock
/// reads: a step back never delays a refresh beyond the wait that was scheduled (the earlier of
/// the two deadlines wins), a step forward brings it due at once (the wall clock's deadline is
/// the earlier: a suspended machine's tokens aged meanwhile, and an apiserver whose clock we now
/// agree with treats them as that old). A token issued in the clock's future is due now: a
/// verifier on this clock would reject its `nbf`. Upstream's `requiresRefresh` never merged that
/// last check (the spec's open question Q1), but a daemon whose clock stepped back must not trust
/// its old schedule.
pub fn next_refresh(occasion: Occasion<'_>, now: Timestamp, jitter: f64) -> Timestamp {
    match occasion {
        Occasion::Granted {
            token,
            spread_start: true,
        } => token.spread_refresh_at(jitter),
        Occasion::Granted {
            token,
            spread_start: false,
        } => token.refresh_at_jittered(jitter),
        Occasion::ClockStepped {
            token,
            scheduled,
            steady_left,
        } => {
            if token.is_some_and(|token| now < token.issued_at) {
                return now;
            }
            let by_steady_clock = now
                .checked_add(steady_left.max(SignedDuration::ZERO))
                .unwrap_or(Timestamp::MAX);
            scheduled.min(by_steady_clock)
        }
    }
}

/// The span in which a kubelet would refresh a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshWindow {
    pub earliest: Timestamp,
    pub latest: Timestamp,
    pub reason: RefreshReason,
}

fn duration_from_nanos(nanos: i128) -> SignedDuration {
    let clamped = nanos.clamp(0, i128::from(i64::MAX));
    let secs = i64::try_from(clamped / 1_000_000_000).unwrap_or(i64::MAX);
    let rest = i32::try_from(clamped % 1_000_000_000).unwrap_or(0);
    SignedDuration::new(secs, rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_700_000_000;

    fn at(offset_ms: i64) -> Timestamp {
        Timestamp::from_millisecond(T0 * 1000 + offset_ms).unwrap()
    }

    /// A TokenRequest answer issued at T0 for `requested` seconds, with optional JWT times
    /// (offsets from T0 in seconds).
    fn lifetime(requested: i64, jwt_exp: Option<i64>, warn_after: Option<i64>) -> TokenLifetime {
        let secs = |s: i64| at(s * 1000);
        TokenLifetime::from_grant(
            secs(requested),
            SignedDuration::from_secs(requested),
            jwt_exp.map(secs),
            warn_after.map(secs),
        )
    }

    struct Case {
        name: &'static str,
        lifetime: TokenLifetime,
        /// Expected refresh time (ms after T0) with no jitter, and with the largest jitter.
        latest_ms: i64,
        earliest_ms: i64,
        reason: RefreshReason,
    }

    #[test]
    fn refresh_rule_table() {
        let cases = [
            Case {
                // The default kube-api-access token: exp a year out, warnafter at 3607 s, and the
                // status expiration (what the kubelet reads) at 3607 s: 80% of 3607 s, not of a year.
                name: "3607 extended token",
                lifetime: lifetime(3607, Some(3607 + 31_536_000 - 3607), Some(3607)),
                latest_ms: (3607 - 721) * 1000,
                earliest_ms: (3607 - 721 - 9) * 1000,
                reason: RefreshReason::EightyPercent,
            },
            Case {
                name: "600 s minimum token",
                lifetime: lifetime(600, Some(600), None),
                latest_ms: 480_000,
                earliest_ms: 471_000,
                reason: RefreshReason::EightyPercent,
            },
            Case {
                name: "3600 s token",
                lifetime: lifetime(3600, Some(3600), None),
                latest_ms: 2_880_000,
                earliest_ms: 2_871_000,
                reason: RefreshReason::EightyPercent,
            },
            Case {
                name: "2-day token hits the 24 h cap",
                lifetime: lifetime(172_800, Some(172_800), None),
                latest_ms: 86_400_000,
                earliest_ms: 86_391_000,
                reason: RefreshReason::MaxTtl,
            },
            Case {
                // warnafter before the 80% point: the lifetime ends at warnafter, and the refresh
                // comes when less than 20% of the requested lifetime remains before it.
                name: "warnafter before 80%",
                lifetime: lifetime(3600, Some(3600), Some(1000)),
                latest_ms: (1000 - 720) * 1000,
                earliest_ms: (1000 - 720 - 9) * 1000,
                reason: RefreshReason::EightyPercent,
            },
            Case {
                // JWT exp shorter than the status says (a server that disagrees): the earlier wins.
                name: "jwt exp before status expiration",
                lifetime: lifetime(3600, Some(1800), None),
                latest_ms: (1800 - 720) * 1000,
                earliest_ms: (1800 - 729) * 1000,
                reason: RefreshReason::EightyPercent,
            },
            Case {
                // Emulator-only 2 s token: steps of 20 ms, margin 400 ms.
                name: "2 s emulator token",
                lifetime: lifetime(2, Some(2), None),
                latest_ms: 1600,
                earliest_ms: 1600 - 9 * 20,
                reason: RefreshReason::EightyPercent,
            },
            Case {
                name: "2 s compressed 3607 token (warnafter at 2 s, exp a year out)",
                lifetime: lifetime(2, Some(31_536_000), Some(2)),
                latest_ms: 1600,
                earliest_ms: 1420,
                reason: RefreshReason::EightyPercent,
            },
        ];
        for case in cases {
            let window = case.lifetime.refresh_window();
            assert_eq!(window.latest, at(case.latest_ms), "{}: latest", case.name);
            assert_eq!(
                window.earliest,
                at(case.earliest_ms),
                "{}: earliest",
                case.name
            );
            assert_eq!(window.reason, case.reason, "{}: reason", case.name);
            // Ordering holds: refresh strictly after issue and not after the end of the lifetime.
            assert!(window.earliest > case.lifetime.issued_at, "{}", case.name);
            assert!(window.latest <= case.lifetime.ends_at, "{}", case.name);
        }
    }

    /// The next refresh of a token just granted, the first of a spread start or not.
    fn granted(token: &TokenLifetime, spread_start: bool, jitter: f64) -> Timestamp {
        let occasion = Occasion::Granted {
            token,
            spread_start,
        };
        // A granted token's refresh follows from its own times, whatever the clock reads.
        next_refresh(occasion, at(123_456), jitter)
    }

    /// The next refresh after a step of the wall clock to `now`.
    fn stepped(
        token: Option<&TokenLifetime>,
        scheduled: Timestamp,
        steady_left: SignedDuration,
        now: Timestamp,
    ) -> Timestamp {
        let occasion = Occasion::ClockStepped {
            token,
            scheduled,
            steady_left,
        };
        next_refresh(occasion, now, 0.5)
    }

    #[test]
    fn a_granted_token_is_due_at_the_kubelets_threshold_less_the_jitter() {
        let l = lifetime(600, Some(600), None);
        assert_eq!(granted(&l, false, 0.0), at(480_000));
        // With the largest jitter (9 s for this lifetime) the threshold moves to 471 s.
        assert_eq!(granted(&l, false, 1.0), at(471_000));
        // Out-of-range fractions are clamped to the kubelet's range.
        assert_eq!(granted(&l, false, 7.0), at(471_000));
        assert_eq!(granted(&l, false, -1.0), at(480_000));
    }

    #[test]
    fn clock_before_issue_time_forces_refresh() {
        let l = lifetime(600, Some(600), None);
        let scheduled = granted(&l, false, 0.0);
        let now = at(-1);
        assert_eq!(stepped(Some(&l), scheduled, SignedDuration::MAX, now), now);
    }

    #[test]
    fn after_a_clock_step_a_refresh_is_never_later_than_its_real_wait() {
        use crate::clock::{Clock, ManualClock};
        let secs = SignedDuration::from_secs;
        // A 600 s token issued at T0, its refresh scheduled at 480 s (no jitter).
        let token = lifetime(600, Some(600), None);
        let scheduled = granted(&token, false, 0.0);
        assert_eq!(scheduled, at(480_000));
        let issued = Some(&token);

        // 300 s later the clock is set back by 200 s: it reads T0 + 100 s. By the wall clock
        // the refresh would come 380 s later, at 680 s of real time, after the token's end; the
        // 180 s of the wait left on the monotonic clock win.
        let clock = ManualClock::new(at(300_000));
        clock.advance(-secs(200));
        let due = stepped(issued, scheduled, secs(180), clock.now());
        assert_eq!(due, at(280_000));
        assert!(due.duration_since(clock.now()) == secs(180));

        // Set back before the issue time: due now (a verifier on this clock rejects its nbf).
        clock.set(at(300_000));
        clock.advance(-secs(3600));
        assert_eq!(
            stepped(issued, scheduled, secs(180), clock.now()),
            clock.now()
        );

        // Set forward by an hour: the wall clock's deadline, long past, wins.
        clock.set(at(300_000));
        clock.advance(secs(3600));
        let due = stepped(issued, scheduled, secs(180), clock.now());
        assert_eq!(due, scheduled);
        assert!(due < clock.now());

        // No step at all (both clocks agree): the deadline stays where it was.
        clock.set(at(300_000));
        assert_eq!(
            stepped(issued, scheduled, secs(180), clock.now()),
            scheduled
        );
        // A retry with no token in hand, and a wait already over on the monotonic clock.
        assert_eq!(stepped(None, scheduled, -secs(5), at(100_000)), at(100_000));
    }

    #[test]
    fn jitter_steps_above_nine_are_clamped() {
        let l = lifetime(600, Some(600), None);
        assert_eq!(l.refresh_at(200), l.refresh_at(9));
    }

    #[test]
    fn margin_is_whole_seconds_for_api_lifetimes() {
        // floor(3607 * 20 / 100) = 721, not 721.4
        assert_eq!(
            lifetime(3607, None, None).refresh_margin(),
            SignedDuration::from_secs(721)
        );
        assert_eq!(
            lifetime(601, None, None).refresh_margin(),
            SignedDuration::from_secs(120)
        );
    }

    #[test]
    fn continuous_jitter_and_start_spread_stay_inside_the_kubelets_window() {
        for requested in [2, 60, 600, 3607, 100_000] {
            let token = lifetime(requested, None, None);
            let window = token.refresh_window();
            assert_eq!(granted(&token, false, 0.0), window.latest, "{requested}");
            assert_eq!(granted(&token, false, 1.0), window.earliest, "{requested}");
            let middle = granted(&token, false, 0.5);
            assert!(
                window.earliest < middle && middle < window.latest,
                "{requested}"
            );
            // The start spread: from halfway to the kubelet's time, never after it.
            assert_eq!(granted(&token, true, 1.0), window.latest, "{requested}");
            let halfway = granted(&token, true, 0.0);
            assert_eq!(
                halfway.duration_since(token.issued_at),
                window.latest.duration_since(token.issued_at) / 2,
                "{requested}"
            );
            assert!(halfway > token.issued_at);
        }
        // 60 s: the kubelet refreshes at 48 s; the spread starts at 24 s.
        let token = lifetime(60, None, None);
        assert_eq!(granted(&token, true, 0.0), at(24_000));
        assert_eq!(granted(&token, false, 0.5), at(48_000 - 2_700));
    }
}
