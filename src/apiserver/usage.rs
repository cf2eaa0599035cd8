//! The usage report's wire types: what `GET /debug/token-usage` serves and `check` reads (per
//! client use counts, rejections by reason, recent uses, token spans, rotations), and the words
//! for a rejection. Pure data; the ledger fills them.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// Why the server refused a token it issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rejection {
    /// Signed by a key the server no longer publishes: dropped at once (`ctl rotate-key --grace
    /// 0`) or past its grace period. Upstream says `invalid signature, no keys found`.
    UnknownKey,
    /// Past `exp` plus the 60 s leeway.
    Expired,
    /// Its pod, secret, node or service account was deleted or replaced (`ctl revoke`).
    Invalidated,
    /// Not meant for the audiences it was presented to.
    WrongAudience,
    /// `nbf` or `iat` in the future.
    NotYetValid,
}

impl Rejection {
    pub const ALL: [Rejection; 5] = [
        Rejection::UnknownKey,
        Rejection::Expired,
        Rejection::Invalidated,
        Rejection::WrongAudience,
        Rejection::NotYetValid,
    ];

    /// In words, for tables and messages.
    pub fn describe(self) -> &'static str {
        match self {
            Self::UnknownKey => "unknown key",
            Self::Expired => "expired",
            Self::Invalidated => "invalidated",
            Self::WrongAudience => "wrong audience",
            Self::NotYetValid => "not yet valid",
        }
    }
}

/// Rejected uses by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RejectedUses {
    pub unknown_key: u64,
    pub expired: u64,
    pub invalidated: u64,
    pub wrong_audience: u64,
    pub not_yet_valid: u64,
}

impl RejectedUses {
    pub fn total(&self) -> u64 {
        Rejection::ALL.iter().map(|&reason| self.of(reason)).sum()
    }

    pub fn of(&self, reason: Rejection) -> u64 {
        match reason {
            Rejection::UnknownKey => self.unknown_key,
            Rejection::Expired => self.expired,
            Rejection::Invalidated => self.invalidated,
            Rejection::WrongAudience => self.wrong_audience,
            Rejection::NotYetValid => self.not_yet_valid,
        }
    }

    pub fn add(&mut self, reason: Rejection) {
        let count = match reason {
            Rejection::UnknownKey => &mut self.unknown_key,
            Rejection::Expired => &mut self.expired,
            Rejection::Invalidated => &mut self.invalidated,
            Rejection::WrongAudience => &mut self.wrong_audience,
            Rejection::NotYetValid => &mut self.not_yet_valid,
        };
        *count += 1;
    }

    /// `80 unknown key, 2 expired` (the reasons seen, most frequent first); empty when none.
    pub fn describe(&self) -> String {
        let mut seen: Vec<(Rejection, u64)> = Rejection::ALL
            .iter()
            .map(|&reason| (reason, self.of(reason)))
            .filter(|(_, count)| *count > 0)
            .collect();
        // Stable: equal counts keep the order of `ALL`.
        seen.sort_by_key(|(_, count)| std::cmp::Reverse(*count));
        seen.iter()
            .map(|(reason, count)| format!("{count} {}", reason.describe()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Our classification of a use, by its `warnafter`. Expired tokens are classified too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Classification {
    /// A secret-based token.
    Legacy,
    /// A bound token without `warnafter` (not extended): upstream counts it nowhere.
    NoWarnAfter,
    /// `warnafter` has not passed.
    Valid,
    /// Used strictly after `warnafter`.
    Stale { seconds_after_warning: i64 },
}

/// Use counts by classification. `valid + stale + legacy + no_warn_after = uses`; `superseded`,
/// `expired` and `rejected` overlap with those (`expired` is also one of the rejection reasons).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UseCounts {
    pub uses: u64,
    pub valid: u64,
    pub stale: u64,
    pub legacy: u64,
    pub no_warn_after: u64,
    pub superseded: u64,
    pub expired: u64,
    /// Uses the server answered 401, by reason.
    #[serde(default)]
    pub rejected: RejectedUses,
}

/// One recent use of a client, for timelines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecentUse {
    pub at: Timestamp,
    pub jti: Option<String>,
    pub classification: Classification,
    pub superseded_after_seconds: Option<f64>,
    pub expired: bool,
    /// Why the server refused it, if it did.
    #[serde(default)]
    pub rejected: Option<Rejection>,
}

/// One token as one client used it: the bars of the report's timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenSpan {
    pub jti: String,
    pub first_use: Timestamp,
    pub last_use: Timestamp,
    #[serde(flatten)]
    pub counts: UseCounts,
    /// When the projector wrote the token that replaced it, if it did.
    pub superseded_at: Option<Timestamp>,
    /// How long after its replacement the client last used it (0 when it never did); none while
    /// it has not been replaced.
    pub reload_delay_seconds: Option<f64>,
    /// The lifetime it was issued for (`warnafter - iat`), when it has a `warnafter`.
    #[serde(default)]
    pub lifetime_seconds: Option<i64>,
}

/// A rotation of a volume path whose token the client used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationMark {
    pub at: Timestamp,
    pub volume: String,
    pub path: String,
    pub old_jti: String,
    pub new_jti: Option<String>,
}

/// What `GET /debug/token-usage` returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageReport {
    pub generated_at: Timestamp,
    /// Sorted by subject, pod, user agent.
    pub clients: Vec<ClientUsage>,
    pub totals: UsageTotals,
}

/// One client's aggregated uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientUsage {
    pub subject: String,
    pub namespace: String,
    pub service_account: String,
    pub pod: Option<String>,
    #[serde(default)]
    pub pod_uid: Option<String>,
    pub user_agent: Option<String>,
    #[serde(flatten)]
    pub counts: UseCounts,
    pub first_use: Timestamp,
    pub last_use: Timestamp,
    /// The longest time between a rotation and a use of the token it replaced: 0 when the client
    /// had tokens replaced but never used one after its replacement, none when no token of it was
    /// replaced.
    pub worst_reload_delay_seconds: Option<f64>,
    /// The largest `seconds after warning threshold` seen.
    pub worst_stale_seconds: Option<i64>,
    /// Distinct jtis presented (tokens without a jti are not counted).
    pub distinct_tokens: u64,
    #[serde(default)]
    pub recent_uses: Vec<RecentUse>,
    /// The median reload delay over the remembered tokens that were replaced.
    #[serde(default)]
    pub median_reload_delay_seconds: Option<f64>,
    /// The remembered tokens (at most `tokens_per_client`), in the order first used.
    #[serde(default)]
    pub tokens: Vec<TokenSpan>,
    /// Rotations of the volume paths those tokens came from, oldest first.
    #[serde(default)]
    pub rotations: Vec<RotationMark>,
}

/// Counts over every use since start, including clients the ledger has since forgotten.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageTotals {
    pub clients: u64,
    pub clients_forgotten: u64,
    #[serde(flatten)]
    pub counts: UseCounts,
    pub rotations: u64,
    /// Replaced tokens currently remembered (bounded by the limits).
    pub replaced_tokens_tracked: u64,
    /// Bearer tokens refused that the server could not attribute to a client: not signed by any
    /// key it has (or had), so anyone's; counted, never attributed.
    #[serde(default)]
    pub unattributed_rejections: u64,
}

/// Usage reports for the unit tests of what reads them (`check`'s bounds and output).
#[cfg(test)]
pub(crate) mod samples {
    use super::*;

    /// A client of pod `default/app-0` with 10 uses at 1,700,000,000..+10 s, `stale` of them
    /// stale (the worst 3 s after warnafter), superseded once when it has a `worst_delay`.
    pub fn client(user_agent: Option<&str>, stale: u64, worst_delay: Option<f64>) -> ClientUsage {
        let at = |s: i64| Timestamp::from_second(1_700_000_000 + s).unwrap_or_default();
        ClientUsage {
            subject: "system:serviceaccount:default:app".to_owned(),
            namespace: "default".to_owned(),
            service_account: "app".to_owned(),
            pod: Some("app-0".to_owned()),
            pod_uid: None,
            user_agent: user_agent.map(str::to_owned),
            counts: UseCounts {
                uses: 10,
                stale,
                superseded: u64::from(worst_delay.is_some()),
                ..UseCounts::default()
            },
            first_use: at(0),
            last_use: at(10),
            worst_reload_delay_seconds: worst_delay,
            worst_stale_seconds: (stale > 0).then_some(3),
            distinct_tokens: 1,
            recent_uses: vec![],
            median_reload_delay_seconds: None,
            tokens: vec![],
            rotations: vec![],
        }
    }

    /// A report of `clients`, made at 1,700,000,100.
    pub fn report(clients: Vec<ClientUsage>) -> UsageReport {
        UsageReport {
            generated_at: Timestamp::from_second(1_700_000_100).unwrap_or_default(),
            clients,
            totals: UsageTotals::default(),
        }
    }
}
