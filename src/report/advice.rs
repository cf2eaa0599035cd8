//! What to tell the author of a client that broke a bound: every failing client gets advice.
//!
//! For a client that kept using replaced tokens, the useful distinction is between a client that
//! never reloads (a bug), one that reloads only once the server rejects its token, and one that
//! reloads on a fixed period, as the official clients do (client-go, kube-rs, Python, JavaScript
//! and Java re-read the token file about once a minute). For the last, the fix is usually in the
//! test: a bound just over the period, and tokens long enough that a client within that bound
//! never presents a token past its `warnafter` (stale) or its `exp`. A client whose tokens were
//! rejected is told what the reason means; one that only used stale tokens, what its period and
//! the token lifetime say.

use serde::{Deserialize, Serialize};

use super::bounds::BrokenBound;
use crate::apiserver::usage::{ClientUsage, RejectedUses, Rejection};

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
    /// Late, but not often enough to tell a period (one late reload, or no jtis to go by).
    LateReload { message: String },
    /// Stale uses of a client that reloads on a fixed period: the tokens are too short for it.
    ShortLifetime {
        period_seconds: u64,
        lifetime_seconds: u64,
        min_expiration_seconds: u64,
        max_reload_delay_seconds: u64,
        message: String,
    },
    /// Stale uses, without a period to go by.
    StaleTokens { message: String },
    /// The server refused its tokens; `reason` is the most frequent one.
    RejectedTokens { reason: Rejection, message: String },
}

impl Advice {
    pub fn message(&self) -> &str {
        match self {
            Self::ReadsOnce { message }
            | Self::ReloadsAfterRejection { message }
            | Self::FixedPeriod { message, .. }
            | Self::LateReload { message }
            | Self::ShortLifetime { message, .. }
            | Self::StaleTokens { message }
            | Self::RejectedTokens { message, .. } => message,
        }
    }
}

/// Advice for a client that broke at least one bound (none for a client within them), judged
/// from how it moved between tokens: `reloads` replaced tokens it left for a newer one. Tokens
/// rejected for their key or their bound object come first (no reload timing explains them),
/// then lateness, then expiry, then stale uses.
pub fn advise(client: &ClientUsage, broken: &[BrokenBound], reloads: u64) -> Option<Advice> {
    let rejected = broken.iter().find_map(|b| match b {
        BrokenBound::RejectedUses { reasons, .. } => Some(*reasons),
        _ => None,
    });
    let late = broken.iter().find_map(|b| match b {
        BrokenBound::ReloadDelay { worst_seconds, .. } => Some(*worst_seconds),
        _ => None,
    });
    let stale = broken.iter().find_map(|b| match b {
        BrokenBound::StaleUses { uses, .. } => Some(*uses),
        _ => None,
    });
    if let Some(reasons) = rejected {
        let timing_only = reasons.expired == reasons.total();
        if !timing_only || late.is_none() {
            return Some(rejected_tokens(&reasons));
        }
    }
    if let Some(worst) = late {
        return Some(late_reload(client, worst, reloads));
    }
    stale.map(|uses| stale_tokens(client, uses, reloads))
}

fn late_reload(client: &ClientUsage, worst: f64, reloads: u64) -> Advice {
    if reloads == 0 && !client.tokens.is_empty() {
        return Advice::ReadsOnce {
            message: format!(
                "it never moved to a newer token: it used a replaced token for {} after its \
                 replacement. It reads its token once; re-read the token file before each \
                 request, or when it changes, as client-go does about once a minute",
                seconds(worst)
            ),
        };
    }
    if client.counts.expired > 0 {
        return Advice::ReloadsAfterRejection {
            message: format!(
                "it presented expired tokens {} times and reloaded {reloads} times: it seems to \
                 reload only after the server rejects its token. Re-read the token file on a \
                 period shorter than the token's remaining life (about once a minute, as \
                 client-go) or before each request",
                client.counts.expired
            ),
        };
    }
    if reloads < 2 {
        let seen = if reloads == 1 {
            "it reloaded once"
        } else {
            "it presented no token ids (jti) to follow"
        };
        return Advice::LateReload {
            message: format!(
                "it used a replaced token up to {} after its replacement, and {seen}: too little \
                 to tell whether it reloads on a period. Run it for at least two rotations \
                 (reload-test.sh: a longer DURATION); a client that re-reads before each request \
                 or watches the directory stays within a 1s bound",
                seconds(worst)
            ),
        };
    }
    fixed_period(worst, reloads)
}

/// The period a client that reloaded late several times seems to have (its worst delay, whole
/// seconds up), the bound that fits it (`P + P/6`, at least `P + 1`) and the shortest lifetime
/// with which a client within that bound never presents a stale or expired token (5 × bound).
fn period_figures(worst_delay: f64) -> (u64, u64, u64) {
    let period_seconds = worst_delay.ceil().max(1.0) as u64;
    let max_reload_delay_seconds =
        period_seconds + period_seconds.div_ceil(BOUND_MARGIN_DIVISOR).max(1);
    (
        period_seconds,
        max_reload_delay_seconds,
        LIFETIME_PER_BOUND * max_reload_delay_seconds,
    )
}

/// A client that reloads every `period` seconds needs a bound over the period, and tokens that
/// live 5 times that bound.
fn fixed_period(worst_delay: f64, reloads: u64) -> Advice {
    let (period_seconds, max_reload_delay_seconds, min_expiration_seconds) =
        period_figures(worst_delay);
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

/// Stale uses alone: with a period to go by (two reloads or more) and a known lifetime shorter
/// than that period needs, the numbers; otherwise what stale means and what to do.
fn stale_tokens(client: &ClientUsage, uses: u64, reloads: u64) -> Advice {
    let lifetime = client
        .tokens
        .iter()
        .rev()
        .find_map(|span| span.lifetime_seconds)
        .and_then(|seconds| u64::try_from(seconds).ok());
    let period = client
        .worst_reload_delay_seconds
        .filter(|worst| *worst > 0.0 && reloads >= 2);
    if let (Some(worst), Some(lifetime_seconds)) = (period, lifetime) {
        let (period_seconds, max_reload_delay_seconds, min_expiration_seconds) =
            period_figures(worst);
        if lifetime_seconds < min_expiration_seconds {
            return Advice::ShortLifetime {
                period_seconds,
                lifetime_seconds,
                min_expiration_seconds,
                max_reload_delay_seconds,
                message: format!(
                    "it re-reads its token about every {period_seconds}s, but the tokens live \
                     {lifetime_seconds}s: shorter than 5 x the {max_reload_delay_seconds}s bound \
                     that period needs, so it still holds a replaced token past its warnafter \
                     ({uses} stale uses). Run the emulator with --expiration-seconds \
                     {min_expiration_seconds} or more (with --max-reload-delay \
                     {max_reload_delay_seconds}s), or allow them with --max-stale {uses}"
                ),
            };
        }
    }
    let lifetime_text = lifetime.map_or_else(String::new, |l| format!(", tokens of {l}s"));
    let worst_text = client
        .worst_stale_seconds
        .map_or_else(String::new, |s| format!(", up to {s}s after it"));
    Advice::StaleTokens {
        message: format!(
            "it used tokens past their warnafter {uses} times{worst_text}{lifetime_text}: it \
             holds a token longer than the lifetime it was issued for. Re-read the token file \
             when it changes or at least every fifth of the lifetime; a client that re-reads on \
             a fixed period P needs tokens of at least 5 x (P + P/6) (emulate \
             --expiration-seconds), or allow the stale uses with --max-stale {uses}"
        ),
    }
}

/// Rejected uses: what the most frequent reason means and what to do about it.
fn rejected_tokens(reasons: &RejectedUses) -> Advice {
    let reason = Rejection::ALL
        .iter()
        .copied()
        .max_by_key(|&r| (reasons.of(r), std::cmp::Reverse(r as u8)))
        .unwrap_or(Rejection::UnknownKey);
    let what = match reason {
        Rejection::UnknownKey => {
            "signed by a key the emulator no longer accepts (dropped by ctl rotate-key --grace 0, \
             or past its grace period): the client kept a token of the old key. Re-read the \
             token file after a 401 (the emulator writes a token of the new key at the next \
             rotation; ctl rotate or rotate-key --rotate-tokens forces one), and roll keys with a \
             grace period longer than the token lifetime"
        }
        Rejection::Invalidated => {
            "invalidated: the pod (or service account, secret, node) it is bound to was deleted, \
             e.g. by ctl revoke, so every token bound to it fails. A client should surface the \
             401 and stop, not retry the same token; restart the emulator to get the pod back"
        }
        Rejection::Expired => {
            "expired: it presented a token after its exp. Re-read the token file when it \
             changes, or at least once a minute as client-go does, and before retrying a 401"
        }
        Rejection::WrongAudience => {
            "meant for another audience: it sends a token of a volume whose audience is not the \
             API server's. Use the kube-api-access token (or one with the API audience) for API \
             calls"
        }
        Rejection::NotYetValid => {
            "not valid yet (nbf or iat in the future): the client's or the emulator's clock is \
             off by more than the 60 s leeway"
        }
    };
    Advice::RejectedTokens {
        reason,
        message: format!(
            "the emulator refused {} of its uses ({}); the most frequent reason, {}: tokens {what}",
            reasons.total(),
            reasons.describe(),
            reason.describe()
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

        // One late reload is not a period yet, but still gets a word.
        let once = advise(&client(vec![], vec![]), &delay_broken(20.0), 1);
        assert!(
            matches!(&once, Some(Advice::LateReload { message }) if message.contains("reloaded once")),
            "{once:?}"
        );
        // Within every bound: nothing to say.
        assert_eq!(advise(&client(vec![], vec![]), &[], 3), None);
    }

    fn stale_broken(uses: u64) -> BrokenBound {
        BrokenBound::StaleUses { uses, allowed: 0 }
    }

    /// A client re-reading every 60 s, within a 70 s bound, with 60 s tokens: stale only.
    #[test]
    fn stale_only_client_with_a_period_gets_the_lifetime_it_needs() {
        let mut tokens = vec![
            span("a", 0, 100, Some(48)),
            span("b", 60, 160, Some(96)),
            span("c", 120, 170, None),
        ];
        for token in &mut tokens {
            token.lifetime_seconds = Some(60);
        }
        let mut periodic = client(tokens, vec![]);
        periodic.worst_reload_delay_seconds = Some(59.6);
        let advice = advise(&periodic, &[stale_broken(12)], 2);
        let Some(Advice::ShortLifetime {
            period_seconds,
            lifetime_seconds,
            min_expiration_seconds,
            max_reload_delay_seconds,
            message,
        }) = advice
        else {
            panic!("not short-lifetime advice: {advice:?}");
        };
        assert_eq!(
            (
                period_seconds,
                lifetime_seconds,
                min_expiration_seconds,
                max_reload_delay_seconds
            ),
            (60, 60, 350, 70)
        );
        for needle in [
            "about every 60s",
            "tokens live 60s",
            "--expiration-seconds 350",
            "--max-stale 12",
        ] {
            assert!(message.contains(needle), "{needle}: {message}");
        }
        // Long enough tokens, or no period to go by: what stale means.
        for token in &mut periodic.tokens {
            token.lifetime_seconds = Some(350);
        }
        assert!(matches!(
            advise(&periodic, &[stale_broken(1)], 2),
            Some(Advice::StaleTokens { .. })
        ));
        let mut no_period = client(vec![], vec![]);
        no_period.worst_stale_seconds = Some(93);
        let advice = advise(&no_period, &[stale_broken(3)], 0).expect("advice");
        assert!(matches!(advice, Advice::StaleTokens { .. }));
        assert!(
            advice.message().contains("3 times, up to 93s after it"),
            "{}",
            advice.message()
        );
    }

    fn rejected_broken(reasons: RejectedUses) -> BrokenBound {
        BrokenBound::RejectedUses {
            uses: reasons.total(),
            allowed: 0,
            reasons,
        }
    }

    #[test]
    fn rejected_tokens_are_explained_by_their_most_frequent_reason() {
        let dropped = RejectedUses {
            unknown_key: 80,
            expired: 3,
            ..RejectedUses::default()
        };
        // The key's rejection explains more than lateness does.
        let broken = [rejected_broken(dropped), delay_broken(40.0)[0].clone()];
        let advice = advise(&client(vec![], vec![]), &broken, 0);
        let Some(Advice::RejectedTokens { reason, message }) = advice else {
            panic!("{advice:?}");
        };
        assert_eq!(reason, Rejection::UnknownKey);
        assert!(message.contains("refused 83 of its uses (80 unknown key, 3 expired)"));
        assert!(message.contains("rotate-key"), "{message}");

        let revoked = RejectedUses {
            invalidated: 5,
            ..RejectedUses::default()
        };
        let advice = advise(&client(vec![], vec![]), &[rejected_broken(revoked)], 0);
        assert!(matches!(
            advice,
            Some(Advice::RejectedTokens {
                reason: Rejection::Invalidated,
                ..
            })
        ));
        // Expired uses of a late client: its lateness is the story.
        let mut late = client(vec![], vec![]);
        late.counts.expired = 4;
        let expired = RejectedUses {
            expired: 4,
            ..RejectedUses::default()
        };
        let broken = [rejected_broken(expired), delay_broken(61.0)[0].clone()];
        assert!(matches!(
            advise(&late, &broken, 3),
            Some(Advice::ReloadsAfterRejection { .. })
        ));
        // Expired alone: the rejection advice.
        assert!(matches!(
            advise(&late, &[rejected_broken(expired)], 3),
            Some(Advice::RejectedTokens {
                reason: Rejection::Expired,
                ..
            })
        ));
    }

    #[test]
    fn seconds_text() {
        assert_eq!(seconds(60.0), "60s");
        assert_eq!(seconds(58.34), "58.3s");
    }
}
