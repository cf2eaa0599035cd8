//! A scenario's verdict from what the emulator saw of the client: its usage (the ledger's report
//! for the scenario's pod) and, for the scenarios that interrupt the API, when requests had to
//! resume and when the first one arrived. Pure.

use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use super::scenarios::Scenario;
use crate::apiserver::usage::ClientUsage;

/// The bounds a client is held to (`--max-reload-delay`, `--max-stale`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_reload_delay: SignedDuration,
    pub max_stale: u64,
}

/// What the emulator saw during one scenario.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    /// Every client (user agent) that used a token of the scenario's pod.
    pub clients: &'a [ClientUsage],
    /// When requests could succeed again (the outage's end, the old CA's drop), if the
    /// scenario interrupts the API.
    pub resume_from: Option<Timestamp>,
    /// The first authenticated request at or after `resume_from`.
    pub first_use_after_resume: Option<Timestamp>,
}

/// The figures a scorecard shows for a scenario, whatever its verdict.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Figures {
    pub uses: u64,
    pub distinct_tokens: u64,
    /// The longest a replaced token was still used after its replacement was written.
    pub worst_reload_delay_seconds: Option<f64>,
    pub stale_uses: u64,
    /// Requests the emulator answered 401 with a token it had issued.
    pub rejected_uses: u64,
    pub expired_uses: u64,
    /// From `resume_from` to the first request after it.
    pub resumed_after_seconds: Option<f64>,
}

/// Passed, or failed with every reason.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    pub scenario: &'static str,
    pub passed: bool,
    pub failures: Vec<String>,
    pub figures: Figures,
}

fn seconds(d: SignedDuration) -> f64 {
    d.as_secs_f64()
}

/// The figures of all the pod's clients together.
fn figures(observed: &Observed<'_>) -> Figures {
    let clients = observed.clients;
    Figures {
        uses: clients.iter().map(|c| c.counts.uses).sum(),
        distinct_tokens: clients.iter().map(|c| c.distinct_tokens).max().unwrap_or(0),
        worst_reload_delay_seconds: clients
            .iter()
            .filter_map(|c| c.worst_reload_delay_seconds)
            .reduce(f64::max),
        stale_uses: clients.iter().map(|c| c.counts.stale).sum(),
        rejected_uses: clients.iter().map(|c| c.counts.rejected.total()).sum(),
        expired_uses: clients.iter().map(|c| c.counts.rejected.expired).sum(),
        resumed_after_seconds: observed
            .resume_from
            .zip(observed.first_use_after_resume)
            .map(|(from, first)| seconds(first.duration_since(from))),
    }
}

/// Judges `scenario` from what was observed.
pub fn judge(scenario: Scenario, limits: &Limits, observed: &Observed<'_>) -> Verdict {
    let figures = figures(observed);
    let bound = seconds(limits.max_reload_delay);
    let mut failures = Vec::new();
    if figures.uses == 0 {
        failures.push(
            "the client never reached the API with its token: check that it uses \
             KUBERNETES_SERVICE_HOST/PORT (or KUBECONFIG), the projected ca.crt and token"
                .to_owned(),
        );
    }
    let replaced = matches!(
        scenario,
        Scenario::Rotation | Scenario::KeyRotation | Scenario::KeyRevocation | Scenario::Expiry
    );
    if figures.uses > 0 && replaced && figures.distinct_tokens < 2 {
        failures.push(
            "the client never used a replacement token: it read its token once, or stopped \
             making requests"
                .to_owned(),
        );
    }
    if let Some(worst) = figures.worst_reload_delay_seconds {
        if worst > bound {
            // The kubelet's margin before exp is the bound in this plan: later is past exp
            // (kube-apiserver refuses such a token once its 60 s leeway is over too).
            let past_exp = if scenario == Scenario::Expiry {
                ", past its exp"
            } else {
                ""
            };
            failures.push(format!(
                "a replaced token was still used {worst:.1}s after its replacement was written \
                 (bound {bound:.0}s){past_exp}"
            ));
        }
    }
    if figures.stale_uses > limits.max_stale {
        failures.push(format!(
            "{} uses of tokens past their warnafter (allowed {})",
            figures.stale_uses, limits.max_stale
        ));
    }
    if figures.expired_uses > 0 {
        failures.push(format!(
            "{} requests with an expired token",
            figures.expired_uses
        ));
    }
    // A revoked key's 401s are the scenario itself; anywhere else a 401 is a failure.
    let other_rejections = figures.rejected_uses - figures.expired_uses;
    if scenario != Scenario::KeyRevocation && other_rejections > 0 {
        failures.push(format!(
            "{other_rejections} requests refused with a token the emulator had issued"
        ));
    }
    if let Some(from) = observed.resume_from {
        match figures.resumed_after_seconds {
            Some(after) if after <= bound => {}
            Some(after) => failures.push(format!(
                "requests succeeded again only {after:.1}s after the API recovered (bound {bound:.0}s)"
            )),
            None => failures.push(format!(
                "no request succeeded after the API recovered at {from}"
            )),
        }
    }
    Verdict {
        scenario: scenario.name(),
        passed: failures.is_empty(),
        failures,
        figures,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::usage::samples;

    const LIMITS: Limits = Limits {
        max_reload_delay: SignedDuration::from_secs(70),
        max_stale: 0,
    };

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + seconds).unwrap_or_default()
    }

    /// A client that used `tokens` tokens, the replaced ones at most `delay` after their
    /// replacement.
    fn client(tokens: u64, delay: Option<f64>) -> ClientUsage {
        let mut client = samples::client(Some("python-client"), 0, delay);
        client.distinct_tokens = tokens;
        client
    }

    fn observed(clients: &[ClientUsage]) -> Observed<'_> {
        Observed {
            clients,
            resume_from: None,
            first_use_after_resume: None,
        }
    }

    #[test]
    fn a_client_that_reloads_within_the_bound_passes_the_rotations() {
        let clients = [client(3, Some(60.0))];
        for scenario in [Scenario::Rotation, Scenario::KeyRotation, Scenario::Expiry] {
            let verdict = judge(scenario, &LIMITS, &observed(&clients));
            assert!(verdict.passed, "{verdict:?}");
            assert_eq!(verdict.figures.worst_reload_delay_seconds, Some(60.0));
        }
    }

    #[test]
    fn late_read_once_silent_and_stale_clients_fail_with_their_reasons() {
        let cases = [
            (
                client(3, Some(90.5)),
                "still used 90.5s after its replacement",
            ),
            (client(1, Some(5.0)), "never used a replacement token"),
            (
                samples::client(Some("quiet"), 0, None),
                "never used a replacement",
            ),
        ];
        for (client, reason) in cases {
            let clients = [client];
            let verdict = judge(Scenario::Rotation, &LIMITS, &observed(&clients));
            assert!(!verdict.passed);
            assert!(
                verdict.failures.iter().any(|f| f.contains(reason)),
                "{reason}: {verdict:?}"
            );
        }
        let mut stale = client(3, Some(10.0));
        stale.counts.stale = 4;
        let clients = [stale];
        let verdict = judge(Scenario::Rotation, &LIMITS, &observed(&clients));
        assert_eq!(
            verdict.failures,
            ["4 uses of tokens past their warnafter (allowed 0)"]
        );
        let verdict = judge(Scenario::Rotation, &LIMITS, &observed(&[]));
        assert!(
            verdict.failures[0].contains("never reached the API"),
            "{verdict:?}"
        );
    }

    #[test]
    fn rejections_fail_everywhere_but_key_revocation_which_reports_them() {
        let mut revoked = client(2, Some(50.0));
        revoked.counts.rejected.unknown_key = 12;
        let clients = [revoked];
        let verdict = judge(Scenario::KeyRevocation, &LIMITS, &observed(&clients));
        assert!(verdict.passed, "{verdict:?}");
        assert_eq!(verdict.figures.rejected_uses, 12);
        let verdict = judge(Scenario::KeyRotation, &LIMITS, &observed(&clients));
        assert_eq!(
            verdict.failures,
            ["12 requests refused with a token the emulator had issued"]
        );
        let mut expired = client(2, Some(10.0));
        expired.counts.rejected.expired = 3;
        let clients = [expired];
        let verdict = judge(Scenario::Expiry, &LIMITS, &observed(&clients));
        assert_eq!(verdict.failures, ["3 requests with an expired token"]);
    }

    #[test]
    fn after_an_outage_requests_must_resume_within_the_bound() {
        let clients = [client(1, None)];
        let resumed = |first: Option<Timestamp>| Observed {
            clients: &clients,
            resume_from: Some(at(100)),
            first_use_after_resume: first,
        };
        let verdict = judge(Scenario::Outage, &LIMITS, &resumed(Some(at(130))));
        assert!(verdict.passed, "{verdict:?}");
        assert_eq!(verdict.figures.resumed_after_seconds, Some(30.0));
        let verdict = judge(Scenario::Outage, &LIMITS, &resumed(Some(at(175))));
        assert_eq!(
            verdict.failures,
            ["requests succeeded again only 75.0s after the API recovered (bound 70s)"]
        );
        let verdict = judge(Scenario::Outage, &LIMITS, &resumed(None));
        assert!(verdict.failures[0].starts_with("no request succeeded after the API recovered"));
    }
}
