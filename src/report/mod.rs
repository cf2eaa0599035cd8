//! `check`'s reload report: per client, a timeline of the rotations of its volume and of the
//! tokens it presented, its worst and median reload delay, its rejected uses, and advice when it
//! failed; when no client used a token, what to check.
//!
//! Pure: built from the emulator's usage report and the bounds; [`html`] renders it. The JSON
//! form is the [`ReloadReport`] itself.

pub mod advice;
pub mod bounds;
pub mod html;
pub mod nothing_observed;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::apiserver::usage::{
    ClientUsage, RecentUse, RotationMark, TokenSpan, UsageReport, UsageTotals, UseCounts,
};
pub use advice::Advice;
use bounds::{evaluate, nothing_observed_fails, BrokenBound, CheckBounds, Offender};
pub use nothing_observed::{NothingObserved, Origin};

/// Everything `check --report` writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReloadReport {
    pub generated_at: Timestamp,
    /// The emulator the usage came from.
    pub server: String,
    pub max_stale_uses: u64,
    #[serde(default)]
    pub max_rejected_uses: u64,
    pub max_reload_delay_seconds: f64,
    /// Every client within the bounds, and at least one client (or `--allow-no-clients`).
    pub within_bounds: bool,
    /// Set when no client used a token: why that fails (or passes with `--allow-no-clients`) and
    /// what to check.
    #[serde(default)]
    pub nothing_observed: Option<NothingObserved>,
    pub totals: UsageTotals,
    pub clients: Vec<ClientReport>,
}

/// One client (subject, pod, user agent) and its verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientReport {
    pub subject: String,
    pub namespace: String,
    pub service_account: String,
    pub pod: Option<String>,
    pub pod_uid: Option<String>,
    pub user_agent: Option<String>,
    pub within_bounds: bool,
    pub broken: Vec<BrokenBound>,
    pub uses: UseCounts,
    /// All rejected uses (`uses.rejected` has them by reason).
    #[serde(default)]
    pub rejected_uses: u64,
    pub distinct_tokens: u64,
    /// Replaced tokens the client moved on from (it presented a newer token afterwards).
    pub reloads: u64,
    pub worst_reload_delay_seconds: Option<f64>,
    pub median_reload_delay_seconds: Option<f64>,
    pub worst_stale_seconds: Option<i64>,
    pub advice: Option<Advice>,
    pub timeline: Timeline,
}

/// What the timeline shows: the window, the rotations within it, the tokens and recent uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timeline {
    pub start: Timestamp,
    pub end: Timestamp,
    pub rotations: Vec<RotationMark>,
    pub tokens: Vec<TokenSpan>,
    pub recent_uses: Vec<RecentUse>,
}

impl ReloadReport {
    /// Judges every client of `usage` against `bounds`, and the run as a whole: no client at all
    /// fails unless `bounds.allow_no_clients`.
    pub fn new(usage: &UsageReport, bounds: &CheckBounds, origin: &Origin) -> Self {
        let offenders = evaluate(usage, bounds);
        let clients: Vec<ClientReport> = usage
            .clients
            .iter()
            .map(|client| {
                let broken = offenders
                    .iter()
                    .find(|o| is_client(o, &client.subject, &client.pod, &client.user_agent))
                    .map(|o| o.broken.clone())
                    .unwrap_or_default();
                ClientReport::new(client, broken)
            })
            .collect();
        let nothing_observed = usage.clients.is_empty().then(|| {
            NothingObserved::new(
                origin,
                usage.totals.unattributed_rejections,
                bounds.allow_no_clients,
            )
        });
        Self {
            generated_at: usage.generated_at,
            server: origin.server.to_owned(),
            max_stale_uses: bounds.max_stale_uses,
            max_rejected_uses: bounds.max_rejected_uses,
            max_reload_delay_seconds: bounds.max_reload_delay.as_secs_f64(),
            within_bounds: offenders.is_empty() && !nothing_observed_fails(usage, bounds),
            nothing_observed,
            totals: usage.totals,
            clients,
        }
    }
}

impl ReloadReport {
    /// The advice for one of the offenders `evaluate` found.
    pub fn advice_for(&self, offender: &Offender) -> Option<&Advice> {
        self.clients
            .iter()
            .find(|c| is_client(offender, &c.subject, &c.pod, &c.user_agent))
            .and_then(|c| c.advice.as_ref())
    }
}

/// Whether `offender` is the client (subject, pod, user agent).
fn is_client(
    offender: &Offender,
    subject: &str,
    pod: &Option<String>,
    user_agent: &Option<String>,
) -> bool {
    offender.subject == subject && &offender.pod == pod && &offender.user_agent == user_agent
}

impl ClientReport {
    fn new(client: &ClientUsage, broken: Vec<BrokenBound>) -> Self {
        let reloads = reloads(&client.tokens);
        let advice = advice::advise(client, &broken, reloads);
        Self {
            subject: client.subject.clone(),
            namespace: client.namespace.clone(),
            service_account: client.service_account.clone(),
            pod: client.pod.clone(),
            pod_uid: client.pod_uid.clone(),
            user_agent: client.user_agent.clone(),
            within_bounds: broken.is_empty(),
            broken,
            uses: client.counts,
            rejected_uses: client.counts.rejected.total(),
            distinct_tokens: client.distinct_tokens,
            reloads,
            worst_reload_delay_seconds: client.worst_reload_delay_seconds,
            median_reload_delay_seconds: client.median_reload_delay_seconds,
            worst_stale_seconds: client.worst_stale_seconds,
            advice,
            timeline: Timeline::of(client),
        }
    }
}

/// Replaced tokens followed by a newer one: each is a reload the client did (late or not).
fn reloads(tokens: &[TokenSpan]) -> u64 {
    let replaced_then_left = tokens
        .iter()
        .enumerate()
        .filter(|(index, span)| span.superseded_at.is_some() && index + 1 < tokens.len())
        .count();
    replaced_then_left as u64
}

impl Timeline {
    /// From the client's first use (or the replacement of the first token it used, if earlier)
    /// to its last use or the last rotation, whichever is later.
    fn of(client: &ClientUsage) -> Self {
        let start = client
            .tokens
            .iter()
            .filter_map(|span| span.superseded_at)
            .chain(client.tokens.iter().map(|span| span.first_use))
            .min()
            .unwrap_or(client.first_use)
            .min(client.first_use);
        let rotations: Vec<RotationMark> = client
            .rotations
            .iter()
            .filter(|mark| mark.at >= start)
            .cloned()
            .collect();
        let end = rotations
            .last()
            .map_or(client.last_use, |mark| mark.at.max(client.last_use));
        Self {
            start,
            end,
            rotations,
            tokens: client.tokens.clone(),
            recent_uses: client.recent_uses.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::SignedDuration;

    pub(crate) fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + seconds).unwrap()
    }

    pub(crate) fn span(jti: &str, first: i64, last: i64, superseded: Option<i64>) -> TokenSpan {
        TokenSpan {
            jti: jti.to_owned(),
            first_use: at(first),
            last_use: at(last),
            counts: UseCounts {
                uses: 1,
                ..UseCounts::default()
            },
            superseded_at: superseded.map(at),
            reload_delay_seconds: superseded.map(|s| (last - s).max(0) as f64),
            lifetime_seconds: None,
        }
    }

    pub(crate) fn mark(at_s: i64, old: &str, new: &str) -> RotationMark {
        RotationMark {
            at: at(at_s),
            volume: "kube-api-access".to_owned(),
            path: "token".to_owned(),
            old_jti: old.to_owned(),
            new_jti: Some(new.to_owned()),
        }
    }

    pub(crate) fn client(tokens: Vec<TokenSpan>, rotations: Vec<RotationMark>) -> ClientUsage {
        let worst = tokens
            .iter()
            .filter_map(|s| s.reload_delay_seconds)
            .filter(|d| *d > 0.0)
            .reduce(f64::max);
        ClientUsage {
            subject: "system:serviceaccount:default:app".to_owned(),
            namespace: "default".to_owned(),
            service_account: "app".to_owned(),
            pod: Some("app-0".to_owned()),
            pod_uid: None,
            user_agent: Some("app/1.0".to_owned()),
            counts: UseCounts {
                uses: tokens.len() as u64,
                superseded: u64::from(worst.is_some()),
                ..UseCounts::default()
            },
            first_use: tokens.first().map_or(at(0), |s| s.first_use),
            last_use: tokens.iter().map(|s| s.last_use).max().unwrap_or(at(0)),
            worst_reload_delay_seconds: worst,
            worst_stale_seconds: None,
            distinct_tokens: tokens.len() as u64,
            recent_uses: vec![],
            median_reload_delay_seconds: None,
            tokens,
            rotations,
        }
    }

    fn usage(clients: Vec<ClientUsage>) -> UsageReport {
        UsageReport {
            generated_at: at(100),
            clients,
            totals: UsageTotals::default(),
        }
    }

    const BOUNDS: CheckBounds = CheckBounds::strict(SignedDuration::from_secs(5));

    #[test]
    fn verdicts_reloads_and_window() {
        let good = client(
            vec![
                span("a", 2, 9, Some(10)),
                span("b", 10, 19, Some(20)),
                span("c", 20, 25, None),
            ],
            // The rotation before the first use is outside the window.
            vec![mark(0, "z", "a"), mark(10, "a", "b"), mark(20, "b", "c")],
        );
        let read_once = ClientUsage {
            user_agent: Some("read-once".to_owned()),
            ..client(vec![span("a", 2, 40, Some(10))], vec![mark(10, "a", "b")])
        };
        let report = ReloadReport::new(
            &usage(vec![good, read_once]),
            &BOUNDS,
            &Origin::server("https://127.0.0.1:6443"),
        );
        assert!(!report.within_bounds);
        let [good, read_once] = &report.clients[..] else {
            panic!("two clients: {:?}", report.clients);
        };
        assert!(good.within_bounds);
        assert_eq!(good.reloads, 2);
        assert_eq!(good.advice, None);
        assert_eq!(good.timeline.start, at(2));
        assert_eq!(good.timeline.end, at(25));
        assert_eq!(good.timeline.rotations.len(), 2);

        assert!(!read_once.within_bounds);
        assert_eq!(read_once.reloads, 0);
        assert!(matches!(
            read_once.broken[..],
            [BrokenBound::ReloadDelay { .. }]
        ));
        assert!(matches!(read_once.advice, Some(Advice::ReadsOnce { .. })));
        assert_eq!(read_once.timeline.end, at(40));
    }

    #[test]
    fn a_token_first_used_after_its_replacement_starts_the_window_at_the_replacement() {
        let late = client(vec![span("a", 30, 40, Some(10))], vec![mark(10, "a", "b")]);
        let report = ReloadReport::new(&usage(vec![late]), &BOUNDS, &Origin::server("s"));
        assert_eq!(report.clients[0].timeline.start, at(10));
        assert_eq!(report.clients[0].timeline.rotations.len(), 1);
    }

    #[test]
    fn json_round_trip() {
        let report = ReloadReport::new(
            &usage(vec![client(
                vec![span("a", 2, 40, Some(10))],
                vec![mark(10, "a", "b")],
            )]),
            &BOUNDS,
            &Origin::server("s"),
        );
        let json = serde_json::to_string(&report).unwrap();
        let back: ReloadReport = serde_json::from_str(&json).unwrap();
        assert_eq!(back, report);
    }

    #[test]
    fn nothing_observed_fails_unless_allowed() {
        let origin = Origin::server("https://127.0.0.1:6443");
        let report = ReloadReport::new(&usage(vec![]), &BOUNDS, &origin);
        assert!(!report.within_bounds);
        let nothing = report.nothing_observed.expect("nothing observed");
        assert!(!nothing.allowed);
        assert!(nothing.message.contains("never reached the emulator"));

        let allowed = CheckBounds {
            allow_no_clients: true,
            ..BOUNDS
        };
        let report = ReloadReport::new(&usage(vec![]), &allowed, &origin);
        assert!(report.within_bounds);
        assert!(report.nothing_observed.expect("nothing observed").allowed);

        let one = client(vec![span("a", 0, 1, None)], vec![]);
        let report = ReloadReport::new(&usage(vec![one]), &BOUNDS, &origin);
        assert!(report.within_bounds);
        assert_eq!(report.nothing_observed, None);
    }

    #[test]
    fn rejected_uses_fail_the_client_with_advice() {
        let mut dropped = client(vec![span("a", 0, 80, None)], vec![]);
        dropped.counts.rejected.unknown_key = 80;
        let report = ReloadReport::new(&usage(vec![dropped]), &BOUNDS, &Origin::server("s"));
        assert!(!report.within_bounds);
        let client = &report.clients[0];
        assert_eq!(client.rejected_uses, 80);
        assert!(matches!(
            client.broken[..],
            [BrokenBound::RejectedUses { uses: 80, .. }]
        ));
        let advice = client.advice.as_ref().expect("advice");
        assert!(
            advice.message().contains("80 unknown key"),
            "{}",
            advice.message()
        );
    }
}
