//! `check`'s bounds and the clients of a usage report that broke them. Pure: judged from the
//! report alone.

use jiff::SignedDuration;
use serde::{Deserialize, Serialize};

use crate::apiserver::usage::{RejectedUses, UsageReport};

/// What `check` enforces: limits per client, and whether a run in which no client used a token
/// passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckBounds {
    /// Stale uses allowed per client (uses after `warnafter`).
    pub max_stale_uses: u64,
    /// The longest a client may go on using a token after its replacement was written.
    pub max_reload_delay: SignedDuration,
    /// Rejected uses allowed per client: tokens the emulator issued and then refused.
    pub max_rejected_uses: u64,
    /// Nothing observed passes (`--allow-no-clients`); otherwise it fails.
    pub allow_no_clients: bool,
}

impl CheckBounds {
    /// The default bounds of `check`, with `max_reload_delay`.
    pub const fn strict(max_reload_delay: SignedDuration) -> Self {
        Self {
            max_stale_uses: 0,
            max_reload_delay,
            max_rejected_uses: 0,
            allow_no_clients: false,
        }
    }
}

/// A bound one client broke.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "bound", rename_all = "snake_case")]
pub enum BrokenBound {
    StaleUses {
        uses: u64,
        allowed: u64,
    },
    ReloadDelay {
        worst_seconds: f64,
        allowed_seconds: f64,
    },
    RejectedUses {
        uses: u64,
        allowed: u64,
        reasons: RejectedUses,
    },
}

impl BrokenBound {
    /// For the text table's BROKEN column.
    pub fn name(&self) -> &'static str {
        match self {
            Self::StaleUses { .. } => "stale uses",
            Self::ReloadDelay { .. } => "reload delay",
            Self::RejectedUses { .. } => "rejected uses",
        }
    }
}

/// A client that broke at least one bound.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Offender {
    pub subject: String,
    pub namespace: String,
    pub pod: Option<String>,
    pub user_agent: Option<String>,
    pub stale_uses: u64,
    pub superseded_uses: u64,
    pub rejected_uses: u64,
    /// The rejected uses by reason.
    #[serde(default)]
    pub rejected: RejectedUses,
    pub worst_reload_delay_seconds: Option<f64>,
    pub worst_stale_seconds: Option<i64>,
    pub broken: Vec<BrokenBound>,
}

/// Whether the report fails for want of clients: none used a token and `--allow-no-clients` was
/// not given.
pub fn nothing_observed_fails(report: &UsageReport, bounds: &CheckBounds) -> bool {
    report.clients.is_empty() && !bounds.allow_no_clients
}

/// The clients of `report` that broke a bound, in report order. A client breaks the stale bound
/// with more than `max_stale_uses` stale uses, the rejected bound with more than
/// `max_rejected_uses` rejected uses, and the reload bound when its worst reload delay is longer
/// than `max_reload_delay` (compared in milliseconds, the ledger's resolution).
pub fn evaluate(report: &UsageReport, bounds: &CheckBounds) -> Vec<Offender> {
    let allowed_delay_ms = i64::try_from(bounds.max_reload_delay.as_millis()).unwrap_or(i64::MAX);
    report
        .clients
        .iter()
        .filter_map(|client| {
            let mut broken = Vec::new();
            let rejected = client.counts.rejected.total();
            if rejected > bounds.max_rejected_uses {
                broken.push(BrokenBound::RejectedUses {
                    uses: rejected,
                    allowed: bounds.max_rejected_uses,
                    reasons: client.counts.rejected,
                });
            }
            if client.counts.stale > bounds.max_stale_uses {
                broken.push(BrokenBound::StaleUses {
                    uses: client.counts.stale,
                    allowed: bounds.max_stale_uses,
                });
            }
            if let Some(worst) = client.worst_reload_delay_seconds {
                if (worst * 1000.0).round() as i64 > allowed_delay_ms {
                    broken.push(BrokenBound::ReloadDelay {
                        worst_seconds: worst,
                        allowed_seconds: allowed_delay_ms as f64 / 1000.0,
                    });
                }
            }
            (!broken.is_empty()).then(|| Offender {
                subject: client.subject.clone(),
                namespace: client.namespace.clone(),
                pod: client.pod.clone(),
                user_agent: client.user_agent.clone(),
                stale_uses: client.counts.stale,
                superseded_uses: client.counts.superseded,
                rejected_uses: rejected,
                rejected: client.counts.rejected,
                worst_reload_delay_seconds: client.worst_reload_delay_seconds,
                worst_stale_seconds: client.worst_stale_seconds,
                broken,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::usage::ClientUsage;

    fn client(stale: u64, worst_delay: Option<f64>, user_agent: &str) -> ClientUsage {
        samples::client(Some(user_agent), stale, worst_delay)
    }

    use crate::apiserver::usage::samples::{self, report};

    #[test]
    fn evaluate_bounds() {
        let report = report(vec![
            client(0, None, "fresh"),
            client(0, Some(5.0), "at-the-limit"),
            client(0, Some(5.001), "just-late"),
            client(1, None, "one-stale"),
            client(2, Some(90.0), "both"),
        ]);
        let bounds = CheckBounds::strict(SignedDuration::from_secs(5));
        let offenders = evaluate(&report, &bounds);
        let names: Vec<_> = offenders
            .iter()
            .map(|o| o.user_agent.as_deref().unwrap())
            .collect();
        assert_eq!(names, ["just-late", "one-stale", "both"]);
        assert_eq!(
            offenders[2].broken,
            vec![
                BrokenBound::StaleUses {
                    uses: 2,
                    allowed: 0
                },
                BrokenBound::ReloadDelay {
                    worst_seconds: 90.0,
                    allowed_seconds: 5.0
                },
            ]
        );
        assert_eq!(offenders[2].superseded_uses, 1);

        let lenient = CheckBounds {
            max_stale_uses: 2,
            max_reload_delay: SignedDuration::from_secs(90),
            ..bounds
        };
        assert!(evaluate(&report, &lenient).is_empty());
    }

    #[test]
    fn rejected_uses_break_their_own_bound_with_the_reasons() {
        let mut dropped_key = client(0, None, "dropped-key");
        dropped_key.counts.rejected = RejectedUses {
            unknown_key: 80,
            expired: 2,
            ..RejectedUses::default()
        };
        let report = report(vec![client(0, None, "fine"), dropped_key]);
        let bounds = CheckBounds::strict(SignedDuration::from_secs(5));
        let offenders = evaluate(&report, &bounds);
        assert_eq!(offenders.len(), 1);
        assert_eq!(offenders[0].rejected_uses, 82);
        assert_eq!(offenders[0].rejected.unknown_key, 80);
        assert_eq!(
            offenders[0].broken,
            vec![BrokenBound::RejectedUses {
                uses: 82,
                allowed: 0,
                reasons: offenders[0].rejected,
            }]
        );
        assert_eq!(offenders[0].broken[0].name(), "rejected uses");
        assert_eq!(
            offenders[0].rejected.describe(),
            "80 unknown key, 2 expired"
        );
        let allowed = CheckBounds {
            max_rejected_uses: 82,
            ..bounds
        };
        assert!(evaluate(&report, &allowed).is_empty());
    }

    #[test]
    fn no_clients_fail_unless_allowed() {
        let empty = report(vec![]);
        let bounds = CheckBounds::strict(SignedDuration::from_secs(5));
        assert!(evaluate(&empty, &bounds).is_empty());
        assert!(nothing_observed_fails(&empty, &bounds));
        let allowed = CheckBounds {
            allow_no_clients: true,
            ..bounds
        };
        assert!(!nothing_observed_fails(&empty, &allowed));
        assert!(!nothing_observed_fails(
            &report(vec![client(0, None, "a")]),
            &bounds
        ));
    }
}
