//! A use of a token the emulator issued, classified as kube-apiserver classifies it
//! (`pkg/serviceaccount/claims.go`): legacy, valid, or stale by its `warnafter`, and which of
//! upstream's counters it increments (none for a rejected token). Pure.

use jiff::{SignedDuration, Timestamp};

use super::usage::{Classification, Rejection};

/// One use of a service account token the emulator issued (its signature verified with a key it
/// publishes, or once published), accepted or rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenUse {
    /// When the request was received.
    pub at: Timestamp,
    /// `system:serviceaccount:<namespace>:<name>`.
    pub subject: String,
    pub namespace: String,
    pub service_account: String,
    /// The pod the token is bound to (`kubernetes.io.pod.name`), if any.
    pub pod: Option<String>,
    pub pod_uid: Option<String>,
    pub jti: Option<String>,
    /// `kubernetes.io.warnafter`; a zero value counts as absent, as upstream.
    pub warn_after: Option<Timestamp>,
    /// `iat`: with `warn_after`, the lifetime the token was issued for.
    pub issued_at: Option<Timestamp>,
    /// A secret-based token (issuer `kubernetes/serviceaccount`).
    pub legacy: bool,
    /// Why the server answered 401, if it did; the ledger records the use all the same.
    pub rejected: Option<Rejection>,
    pub user_agent: Option<String>,
}

impl TokenUse {
    /// Past `exp` plus the 60 s leeway.
    pub fn expired(&self) -> bool {
        self.rejected == Some(Rejection::Expired)
    }
}

/// Which of upstream's counters this use increments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamCount {
    /// `serviceaccount_valid_tokens_total`.
    Valid,
    /// `serviceaccount_stale_tokens_total`.
    Stale { seconds_after_warning: i64 },
    /// `serviceaccount_legacy_tokens_total`.
    Legacy,
    /// No upstream counter: a token without `warnafter`, or a rejected token (upstream rejects it
    /// before its stale accounting runs).
    Uncounted,
}

/// What the ledger concluded about one use: feeds metrics and the audit event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UseOutcome {
    pub classification: Classification,
    pub counted_as: UpstreamCount,
    /// How long after the rotation that replaced this token it was used.
    pub superseded_after: Option<SignedDuration>,
    pub expired: bool,
    pub rejected: Option<Rejection>,
    /// The value of upstream's `authentication.k8s.io/stale-token` audit annotation, exactly:
    /// `subject: <sub>, seconds after warning threshold: <N>`. Only when upstream would add it.
    pub stale_annotation: Option<String>,
}

/// Upstream's `authentication.k8s.io/stale-token` annotation value.
pub fn stale_annotation_value(subject: &str, seconds_after_warning: i64) -> String {
    format!("subject: {subject}, seconds after warning threshold: {seconds_after_warning}")
}

pub fn classify(token_use: &TokenUse) -> Classification {
    if token_use.legacy {
        return Classification::Legacy;
    }
    match token_use.warn_after {
        // Upstream treats a zero warnafter as absent.
        Some(warn_after) if warn_after != Timestamp::UNIX_EPOCH => {
            // Strictly after, and whole seconds as upstream's `now.Unix() - warnafter`: a use half
            // a second after the threshold is stale by 0 seconds.
            if token_use.at > warn_after {
                Classification::Stale {
                    seconds_after_warning: token_use.at.as_second() - warn_after.as_second(),
                }
            } else {
                Classification::Valid
            }
        }
        _ => Classification::NoWarnAfter,
    }
}

pub fn upstream_count(classification: Classification, rejected: bool) -> UpstreamCount {
    if rejected {
        return UpstreamCount::Uncounted;
    }
    match classification {
        Classification::Legacy => UpstreamCount::Legacy,
        Classification::NoWarnAfter => UpstreamCount::Uncounted,
        Classification::Valid => UpstreamCount::Valid,
        Classification::Stale {
            seconds_after_warning,
        } => UpstreamCount::Stale {
            seconds_after_warning,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: f64) -> Timestamp {
        Timestamp::from_duration(SignedDuration::from_secs_f64(1_700_000_000.0 + seconds))
            .expect("timestamp")
    }

    fn token_use(used_at: f64, warn_after: Option<Timestamp>, legacy: bool) -> TokenUse {
        TokenUse {
            at: at(used_at),
            subject: "system:serviceaccount:ns:app".into(),
            namespace: "ns".into(),
            service_account: "app".into(),
            pod: None,
            pod_uid: None,
            jti: None,
            warn_after,
            issued_at: None,
            legacy,
            rejected: None,
            user_agent: None,
        }
    }

    #[test]
    fn uses_are_classified_as_upstream_classifies_them() {
        let warn = Some(at(100.0));
        let cases = [
            (
                "before warnafter",
                token_use(99.0, warn, false),
                Classification::Valid,
            ),
            (
                "at warnafter: not after it",
                token_use(100.0, warn, false),
                Classification::Valid,
            ),
            (
                "half a second after: stale by 0 whole seconds",
                token_use(100.5, warn, false),
                Classification::Stale {
                    seconds_after_warning: 0,
                },
            ),
            (
                "61 s after",
                token_use(161.0, warn, false),
                Classification::Stale {
                    seconds_after_warning: 61,
                },
            ),
            (
                "no warnafter",
                token_use(500.0, None, false),
                Classification::NoWarnAfter,
            ),
            (
                "a zero warnafter counts as absent",
                token_use(500.0, Some(Timestamp::UNIX_EPOCH), false),
                Classification::NoWarnAfter,
            ),
            (
                "legacy wins",
                token_use(500.0, warn, true),
                Classification::Legacy,
            ),
        ];
        for (case, token_use, expected) in cases {
            assert_eq!(classify(&token_use), expected, "{case}");
        }
    }

    #[test]
    fn rejected_uses_increment_no_upstream_counter() {
        let stale = Classification::Stale {
            seconds_after_warning: 3,
        };
        assert_eq!(
            upstream_count(stale, false),
            UpstreamCount::Stale {
                seconds_after_warning: 3
            }
        );
        assert_eq!(
            upstream_count(Classification::Valid, false),
            UpstreamCount::Valid
        );
        assert_eq!(
            upstream_count(Classification::Legacy, false),
            UpstreamCount::Legacy
        );
        assert_eq!(
            upstream_count(Classification::NoWarnAfter, false),
            UpstreamCount::Uncounted
        );
        for classification in [stale, Classification::Valid, Classification::Legacy] {
            assert_eq!(
                upstream_count(classification, true),
                UpstreamCount::Uncounted
            );
        }
        assert_eq!(
            stale_annotation_value("system:serviceaccount:ns:app", 42),
            "subject: system:serviceaccount:ns:app, seconds after warning threshold: 42"
        );
    }
}
