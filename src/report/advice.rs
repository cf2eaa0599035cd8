//! What to tell the author of a client that kept using replaced tokens for too long.
//!
//! The useful distinction is between a client that never reloads (a bug), one that reloads only
//! once the server rejects its token, and one that reloads on a fixed period, as the official
//! clients do (client-go, kube-rs, Python, JavaScript and Java re-read the token file about once
//! a minute). For the last, the fix is usually in the test: a bound just over the period, and
//! tokens long enough that a client within that bound never presents a token past its
//! `warnafter` (stale) or its `exp`.

use serde::{Deserialize, Serialize};

use crate::apiserver::ledger::{BrokenBound, ClientUsage};

/// The kubelet replaces a token once 80 % of its lifetime has passed (a few seconds earlier with
/// its jitter), so a replaced token has at least 20 % of its life left: a lifetime of 5 times the
/// bound keeps every use within the bound before `warnafter` and `exp`.
const LIFETIME_PER_BOUND: u64 = 5;
/// The bound is the period plus a sixth of it (at least a second): the period is estimated from
/// the delays seen, which only approach it.
const BOUND_MARGIN_DIVISOR: u64 = 6;
/// Periods the official clients use (about a minute), for the comparison in the message.
const OFFICIAL_CLIENT_PERIODS: std::ops::RangeInclusive<u64> = 45..=70;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Advice {
    /// It went on with the first token it read.
    ReadsOnce { message: String },
    /// It reloaded only after the server had rejected its expired token.
    ReloadsAfterRejection { message: String },
    /// It reloads, late by up to about one period each time.
    FixedPeriod {
        period_seconds: u64,
        /// The shortest `--expiration-seconds` with which a client within the bound never uses a
        /// stale or expired token.
        min_expiration_seconds: u64,
        max_reload_delay_seconds: u64,
        message: String,
    },
}

impl Advice {
    pub fn message(&self) -> &str {
        match self {
            Self::ReadsOnce { message }
            | Self::ReloadsAfterRejection { message }
            | Self::FixedPeriod { message, .. } => message,
        }
    }
}

/// Advice for a client that broke the reload-delay bound, judged from how it moved between
/// tokens: `reloads` replaced tokens it left for a newer one.
pub fn advise(client: &ClientUsage, broken: &[BrokenBound], reloads: u64) -> Option<Advice> {
    let BrokenBound::ReloadDelay { worst_seconds, .. } = broken
        .iter()
        .find(|b| matches!(b, BrokenBound::ReloadDelay { .. }))?
    else {
        return None;
    };
    let worst = *worst_seconds;
    if reloads == 0 {
        // Without the tokens it presented (a report without spans) there is nothing to go by.
        if client.tokens.is_empty() {
            return None;
        }
        return Some(Advice::ReadsOnce {
            message: format!(
                "it never moved to a newer token: it used a replaced token for {} after its \
                 replacement. It reads its token once; re-read the token file before each \
                 request, or when it changes, as client-go does about once a minute",
                seconds(worst)
            ),
        });
    }
    if client.counts.expired > 0 {
        return Some(Advice::ReloadsAfterRejection {
            message: format!(
                "it presented expired tokens {} times and reloaded {reloads} times: it seems to \
                 reload only after the server rejects its token. Re-read the token file on a \
                 period shorter than the token's remaining life (about once a minute, as \
                 client-go) or before each request",
                client.counts.expired
            ),
        });
    }
    if reloads < 2 {
        return None;
    }
    Some(fixed_period(worst, reloads))
}

/// A client that reloads every `period` seconds needs a bound over the period, and tokens that
/// live 5 times that bound.
fn fixed_period(worst_delay: f64, reloads: u64) -> Advice {
    let period_seconds = worst_delay.ceil().max(1.0) as u64;
    let max_reload_delay_seconds =
        period_seconds + period_seconds.div_ceil(BOUND_MARGIN_DIVISOR).max(1);
    let min_expiration_seconds = LIFETIME_PER_BOUND * max_reload_delay_seconds;
    let like_official = if OFFICIAL_CLIENT_PERIODS.contains(&period_seconds) {
        " (as the official clients do: client-go, kube-rs, Python, JavaScript and Java re-read \
         the token file about once a minute)"
    } else {
        ""
    };
    Advice::FixedPeriod {
        period_seconds,
        min_expiration_seconds,
        max_reload_delay_seconds,
        message: format!(
            "it reloaded {reloads} times, each time up to {} after a rotation: it looks like it \
             re-reads its token on a fixed period of about {period_seconds}s{like_official}. If \
             that period is intended, check it with --max-reload-delay {max_reload_delay_seconds}s \
             and run the emulator with --expiration-seconds {min_expiration_seconds} or more (the \
             kubelet replaces a token with a fifth of its life left, so a client within the bound \
             never presents a stale or expired token)",
            seconds(worst_delay)
        ),
    }
}

/// `58.3s`, `60s`.
fn seconds(value: f64) -> String {
    let text = format!("{value:.1}");
    format!("{}s", text.trim_end_matches(".0"))
}

#[cfg(test)]
mod tests {
    use super::super::tests::{client, mark, span};
    use super::*;

    fn delay_broken(worst: f64) -> Vec<BrokenBound> {
        vec![BrokenBound::ReloadDelay {
            worst_seconds: worst,
            allowed_seconds: 5.0,
        }]
    }

    /// Period, lifetime, bound and message of the fixed-period advice for a late client.
    fn fixed(worst: f64, reloads: u64) -> ((u64, u64, u64), String) {
        match advise(&client(vec![], vec![]), &delay_broken(worst), reloads) {
            Some(Advice::FixedPeriod {
                period_seconds,
                min_expiration_seconds,
                max_reload_delay_seconds,
                message,
            }) => (
                (
                    period_seconds,
                    min_expiration_seconds,
                    max_reload_delay_seconds,
                ),
                message,
            ),
            other => panic!("not fixed period advice: {other:?}"),
        }
    }

    #[test]
    fn official_client_period_gives_the_readme_figures() {
        let (figures, message) = fixed(59.4, 5);
        assert_eq!(figures, (60, 350, 70));
        assert!(message.contains("--max-reload-delay 70s"), "{message}");
        assert!(message.contains("--expiration-seconds 350"), "{message}");
        assert!(message.contains("official clients"), "{message}");
    }

    #[test]
    fn short_periods_get_a_margin_of_at_least_a_second() {
        let (figures, message) = fixed(9.2, 3);
        assert_eq!(figures, (10, 60, 12));
        assert!(!message.contains("official"), "{message}");
        assert_eq!(fixed(2.9, 3).0, (3, 20, 4));
        assert_eq!(fixed(0.2, 2).0, (1, 10, 2));
    }

    #[test]
    fn kinds_of_late_clients() {
        let read_once = client(vec![span("a", 0, 50, Some(10))], vec![mark(10, "a", "b")]);
        assert!(matches!(
            advise(&read_once, &delay_broken(40.0), 0),
            Some(Advice::ReadsOnce { .. })
        ));

        let mut rejected = client(vec![], vec![]);
        rejected.counts.expired = 4;
        let advice = advise(&rejected, &delay_broken(61.0), 3);
        assert!(
            matches!(advice, Some(Advice::ReloadsAfterRejection { .. })),
            "{advice:?}"
        );
        assert!(advice.unwrap().message().contains("expired tokens 4 times"));

        // One late reload is not a period yet.
        assert_eq!(
            advise(&client(vec![], vec![]), &delay_broken(20.0), 1),
            None
        );
        // Only the reload bound asks for advice.
        let stale_only = vec![BrokenBound::StaleUses {
            uses: 3,
            allowed: 0,
        }];
        assert_eq!(advise(&client(vec![], vec![]), &stale_only, 0), None);
    }

    #[test]
    fn seconds_text() {
        assert_eq!(seconds(60.0), "60s");
        assert_eq!(seconds(58.34), "58.3s");
    }
}
