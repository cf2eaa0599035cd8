//! The conformance scenarios and their timings, derived from one bound: how late a client may
//! be to use a new token (`--max-reload-delay`, B). Pure: a plan says what the emulator does
//! and when, counted from the client's first authenticated request (T0); the runner carries it
//! out.
//!
//! Why the numbers: the kubelet refreshes a token at 80 % of its lifetime and kube-apiserver
//! counts uses after `warnafter` (the end of that lifetime) as stale, so a client that reloads
//! within B uses no stale token only if 20 % of the lifetime is at least B: every plan's tokens
//! live 5 B. Waiting 80 % of such a lifetime for the kubelet's first refresh would take 4 B, so
//! the scenarios that need one start the pod with a token already 3.25 B old, as a client
//! restarting in a long-running pod finds it: its refresh falls between 0.25 B and 0.75 B after
//! the start (the emulator's jitter, up to 10 % of a short lifetime, brings it forward), still B
//! before its `warnafter`. Every plan watches at least 1.25 B after its last event, so a client
//! at the bound is seen reloading.

use jiff::SignedDuration;

/// One scenario of the suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scenario {
    Rotation,
    KeyRotation,
    KeyRevocation,
    Expiry,
    Outage,
    CaRotation,
}

impl Scenario {
    pub const ALL: [Scenario; 6] = [
        Scenario::Rotation,
        Scenario::KeyRotation,
        Scenario::KeyRevocation,
        Scenario::Expiry,
        Scenario::Outage,
        Scenario::CaRotation,
    ];

    /// The name `--scenario` takes.
    pub fn name(self) -> &'static str {
        match self {
            Self::Rotation => "rotation",
            Self::KeyRotation => "key-rotation",
            Self::KeyRevocation => "key-revocation",
            Self::Expiry => "expiry",
            Self::Outage => "outage",
            Self::CaRotation => "ca-rotation",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Run unless `--scenario` names others; `ca-rotation` is opt-in.
    pub fn runs_by_default(self) -> bool {
        self != Self::CaRotation
    }

    /// What happens to the client's tokens.
    pub fn summary(self) -> &'static str {
        match self {
            Self::Rotation => {
                "tokens replaced on the kubelet's schedule, then by a forced rotation"
            }
            Self::KeyRotation => {
                "the signing key is rotated with a grace period longer than the bound; old tokens stay valid, new ones carry the new kid"
            }
            Self::KeyRevocation => {
                "the signing key is dropped with no grace and every token replaced at once"
            }
            Self::Expiry => {
                "tokens without the one-year extension: exp is the end of their short lifetime"
            }
            Self::Outage => {
                "the API answers 503 with Retry-After, then refuses connections, then recovers"
            }
            Self::CaRotation => {
                "the ca.crt bundle gains a new CA, the serving certificate switches to it, the old CA is dropped"
            }
        }
    }

    /// What the client must do to pass.
    pub fn passes_when(self) -> &'static str {
        match self {
            Self::Rotation => {
                "every replaced token stops being used within the bound; no stale use beyond --max-stale"
            }
            Self::KeyRotation => {
                "the client moves to a token of the new key within the bound, with no rejected request"
            }
            Self::KeyRevocation => {
                "after its first 401 the client presents the new token within the bound (the 401s and the time are reported)"
            }
            Self::Expiry => "the client never presents an expired token",
            Self::Outage => {
                "requests succeed again within the bound after the outage ends (the request rate during it is reported)"
            }
            Self::CaRotation => "no TLS failure after the bundle changed (informational unless selected)",
        }
    }
}

/// What the emulator does at a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Replace the pod's projected tokens now (`ctl rotate`).
    RotateTokens,
    /// A new signing key; the old one stays published for `grace` (0: dropped at once), and
    /// with `rotate_tokens` every projected token is replaced.
    RotateKey {
        grace: SignedDuration,
        rotate_tokens: bool,
    },
    /// Every request answered 503 with `Retry-After` for `duration`.
    ServiceUnavailable { duration: SignedDuration },
    /// Connections refused for `duration`.
    RefuseConnections { duration: SignedDuration },
    /// A new CA in the bundle, the serving certificate from it; the old CA dropped after `grace`.
    RotateCa { grace: SignedDuration },
}

/// One action at its time after the client's first authenticated request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub after_first_use: SignedDuration,
    pub action: Action,
}

/// What one scenario's emulator is set to, and what it does when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub scenario: Scenario,
    /// Every token's lifetime (the emulator's `--expiration-seconds`).
    pub lifetime: SignedDuration,
    /// The one-year `exp` of default tokens (off: `exp` ends the lifetime).
    pub extended: bool,
    /// How old the pod's first token is when the scenario starts.
    pub first_token_age: SignedDuration,
    /// How long the client may take to make its first authenticated request.
    pub first_use_timeout: SignedDuration,
    pub steps: Vec<Step>,
    /// When the scenario ends, after the first use.
    pub ends_after_first_use: SignedDuration,
}

/// Lifetimes are this many bounds: 20 % of the lifetime, the kubelet's margin before
/// `warnafter`, is then one bound.
const LIFETIME_IN_BOUNDS: i32 = 5;
/// How much older than a fresh token an "aged" first token is, in quarter bounds (3.25 B).
const AGED_QUARTERS: i32 = 13;
/// The least time a client gets to make its first request, however small the bound.
const LEAST_FIRST_USE_TIMEOUT: SignedDuration = SignedDuration::from_secs(30);

fn quarters(bound: SignedDuration, n: i32) -> SignedDuration {
    (bound / 4) * n
}

/// The plan of `scenario` for the bound `bound` (B).
pub fn plan(scenario: Scenario, bound: SignedDuration) -> Plan {
    let lead = quarters(bound, 1);
    // After an event, the client has the bound, and a quarter more to be seen doing it.
    let watch = quarters(bound, 5);
    let at = |after_first_use: SignedDuration, action: Action| Step {
        after_first_use,
        action,
    };
    let half = bound / 2;
    let (extended, aged, steps, ends) = match scenario {
        Scenario::Rotation => {
            // The kubelet's refresh of the aged token comes first; then one forced rotation.
            let forced = lead + watch;
            (
                true,
                true,
                vec![at(forced, Action::RotateTokens)],
                forced + watch,
            )
        }
        Scenario::KeyRotation => (
            true,
            false,
            vec![at(
                lead,
                Action::RotateKey {
                    grace: bound * 3,
                    rotate_tokens: true,
                },
            )],
            lead + watch,
        ),
        Scenario::KeyRevocation => (
            true,
            false,
            vec![at(
                lead,
                Action::RotateKey {
                    grace: SignedDuration::ZERO,
                    rotate_tokens: true,
                },
            )],
            lead + watch,
        ),
        // The aged token expires 1.75 B after the start, after its refresh: watched past that.
        Scenario::Expiry => (false, true, vec![], quarters(bound, 8)),
        Scenario::Outage => (
            true,
            false,
            vec![
                at(lead, Action::ServiceUnavailable { duration: half }),
                at(lead + half, Action::RefuseConnections { duration: half }),
            ],
            lead + bound + watch,
        ),
        Scenario::CaRotation => (
            true,
            false,
            vec![at(lead, Action::RotateCa { grace: bound })],
            lead + bound + watch,
        ),
    };
    Plan {
        scenario,
        lifetime: bound * LIFETIME_IN_BOUNDS,
        extended,
        first_token_age: if aged {
            quarters(bound, AGED_QUARTERS)
        } else {
            SignedDuration::ZERO
        },
        first_use_timeout: bound.max(LEAST_FIRST_USE_TIMEOUT),
        steps,
        ends_after_first_use: ends,
    }
}

/// `--list`: every scenario, what it does when and what passes it, for the bound `bound`.
pub fn list_text(bound: SignedDuration) -> String {
    let seconds = |d: SignedDuration| format!("{}s", d.as_secs());
    let mut out = format!(
        "Scenarios for --max-reload-delay {} (times after the client's first request, T0):\n",
        seconds(bound)
    );
    for scenario in Scenario::ALL {
        let plan = plan(scenario, bound);
        let default = if scenario.runs_by_default() {
            ""
        } else {
            " (opt-in)"
        };
        out.push_str(&format!(
            "\n{}{default}: {}\n",
            scenario.name(),
            scenario.summary()
        ));
        out.push_str(&format!(
            "  tokens live {}{}{}\n",
            seconds(plan.lifetime),
            if plan.extended {
                ", exp a year (as kube-apiserver's default)"
            } else {
                ", exp at the end of the lifetime"
            },
            if plan.first_token_age.is_zero() {
                String::new()
            } else {
                format!(
                    "; the first is {} old at the start, so the kubelet refreshes it soon",
                    seconds(plan.first_token_age)
                )
            }
        ));
        for step in &plan.steps {
            out.push_str(&format!(
                "  T0+{}: {}\n",
                seconds(step.after_first_use),
                describe(step.action)
            ));
        }
        out.push_str(&format!(
            "  ends at T0+{}; passes when {}\n",
            seconds(plan.ends_after_first_use),
            scenario.passes_when()
        ));
    }
    out
}

fn describe(action: Action) -> String {
    let s = |d: SignedDuration| d.as_secs();
    match action {
        Action::RotateTokens => "the pod's tokens are replaced".into(),
        Action::RotateKey {
            grace,
            rotate_tokens,
        } => format!(
            "new signing key, the old one {}{}",
            if grace.is_zero() {
                "dropped at once".to_owned()
            } else {
                format!("accepted {}s more", s(grace))
            },
            if rotate_tokens {
                ", every token replaced"
            } else {
                ""
            }
        ),
        Action::ServiceUnavailable { duration } => {
            format!("503 with Retry-After for {}s", s(duration))
        }
        Action::RefuseConnections { duration } => {
            format!("connections refused for {}s", s(duration))
        }
        Action::RotateCa { grace } => format!(
            "new CA in ca.crt and serving, the old one dropped after {}s",
            s(grace)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT_BOUND: SignedDuration = SignedDuration::from_secs(70);

    /// The latest the emulator's kubelet refreshes the aged first token, after the start: 80 %
    /// of the lifetime after its issue, with no jitter.
    fn latest_first_refresh(plan: &Plan) -> SignedDuration {
        plan.lifetime * 4 / 5 - plan.first_token_age
    }

    /// The earliest: brought forward by the whole jitter (10 % of the lifetime).
    fn earliest_first_refresh(plan: &Plan) -> SignedDuration {
        latest_first_refresh(plan) - plan.lifetime / 10
    }

    #[test]
    fn the_default_suite_fits_in_five_minutes_side_by_side() {
        // A client that makes its first request within 10 s of its start.
        let start_up = SignedDuration::from_secs(10);
        for scenario in Scenario::ALL.into_iter().filter(|s| s.runs_by_default()) {
            let plan = plan(scenario, DEFAULT_BOUND);
            let total = start_up + plan.ends_after_first_use;
            assert!(
                total <= SignedDuration::from_secs(300),
                "{}: {total:?}",
                scenario.name()
            );
        }
    }

    #[test]
    fn a_client_at_the_bound_is_never_stale_nor_late_by_construction() {
        for bound in [5, 20, 70, 300].map(SignedDuration::from_secs) {
            for scenario in Scenario::ALL {
                let plan = plan(scenario, bound);
                // The kubelet's margin: refreshed a bound before warnafter (and exp).
                assert!(plan.lifetime / 5 >= bound, "{}", scenario.name());
                if !plan.first_token_age.is_zero() {
                    let warn_after = plan.lifetime - plan.first_token_age;
                    assert!(
                        warn_after - latest_first_refresh(&plan) >= bound,
                        "{}",
                        scenario.name()
                    );
                    // And not before the scenario starts.
                    assert!(earliest_first_refresh(&plan) > SignedDuration::ZERO);
                    // Watched until a client at the bound has reloaded after it.
                    assert!(plan.ends_after_first_use >= latest_first_refresh(&plan) + bound);
                }
                // Every event is watched for more than a bound.
                for step in &plan.steps {
                    let ends = match step.action {
                        Action::ServiceUnavailable { duration }
                        | Action::RefuseConnections { duration } => duration,
                        _ => SignedDuration::ZERO,
                    };
                    assert!(
                        plan.ends_after_first_use - (step.after_first_use + ends) > bound,
                        "{}",
                        scenario.name()
                    );
                }
            }
        }
    }

    #[test]
    fn expiry_watches_past_the_first_tokens_exp() {
        let plan = plan(Scenario::Expiry, DEFAULT_BOUND);
        assert!(!plan.extended);
        let exp = plan.lifetime - plan.first_token_age;
        assert!(plan.ends_after_first_use > exp, "{plan:?}");
    }

    #[test]
    fn key_rotation_grace_outlasts_the_bound_and_revocation_has_none() {
        let rotation = plan(Scenario::KeyRotation, DEFAULT_BOUND);
        let revocation = plan(Scenario::KeyRevocation, DEFAULT_BOUND);
        assert!(matches!(
            rotation.steps[..],
            [Step { action: Action::RotateKey { grace, rotate_tokens: true }, .. }] if grace > DEFAULT_BOUND
        ));
        assert!(matches!(
            revocation.steps[..],
            [Step { action: Action::RotateKey { grace, rotate_tokens: true }, .. }] if grace.is_zero()
        ));
    }

    #[test]
    fn names_round_trip_and_ca_rotation_is_opt_in() {
        for scenario in Scenario::ALL {
            assert_eq!(Scenario::from_name(scenario.name()), Some(scenario));
        }
        assert_eq!(Scenario::from_name("rotations"), None);
        let defaults: Vec<&str> = Scenario::ALL
            .into_iter()
            .filter(|s| s.runs_by_default())
            .map(Scenario::name)
            .collect();
        assert_eq!(
            defaults,
            [
                "rotation",
                "key-rotation",
                "key-revocation",
                "expiry",
                "outage"
            ]
        );
    }

    #[test]
    fn the_list_gives_each_scenarios_times_for_the_bound() {
        let text = list_text(DEFAULT_BOUND);
        assert!(
            text.starts_with("Scenarios for --max-reload-delay 70s"),
            "{text}"
        );
        for scenario in Scenario::ALL {
            assert!(text.contains(&format!("\n{}", scenario.name())), "{text}");
        }
        assert!(text.contains("ca-rotation (opt-in)"), "{text}");
        assert!(
            text.contains(
                "T0+17s: new signing key, the old one dropped at once, every token replaced"
            ),
            "{text}"
        );
        assert!(text.contains("tokens live 350s"), "{text}");
    }
}
