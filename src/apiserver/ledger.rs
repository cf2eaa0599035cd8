//! The usage ledger: how clients use their service account tokens, for client reload testing.
//!
//! Every use of a token the emulator issued, accepted or rejected, is classified the way
//! kube-apiserver does (legacy, valid, stale; `pkg/serviceaccount/claims.go`) and, orthogonally,
//! as *superseded* when the projector had already written a newer token for the same volume path,
//! and as *rejected* (with the reason) when the server refused it. Uses are aggregated per client
//! (subject, pod, user agent) so memory stays bounded however long the server runs. A rejected
//! token the emulator cannot show it signed is never attributed to a client: it is only counted.
//!
//! Pure: no I/O and no clock reads. Every time comes in as a value (`TokenUse::at`,
//! `Rotation::at`, `report(now)`).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

/// The projector wrote a new token for one path of one pod's volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    /// When the new token was published (the `..data` swap): from then on, the old one is stale
    /// for our purposes.
    pub at: Timestamp,
    pub namespace: String,
    pub pod: String,
    pub service_account: String,
    pub volume: String,
    /// Path of the token inside the volume.
    pub path: String,
    pub old_jti: Option<String>,
    pub new_jti: Option<String>,
}

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

    fn add(&mut self, reason: Rejection) {
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

/// How much the ledger remembers. Every structure is bounded by one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerLimits {
    /// Replaced tokens remembered per volume path (the newest ones). A client still holding a
    /// token older than this many rotations is not recognised as superseded, unless it had
    /// already been seen using that token once it was superseded (see `tokens_per_client`).
    pub replaced_tokens_per_path: usize,
    /// Volume paths with a rotation history; the one rotated least recently is forgotten first.
    pub paths: usize,
    /// Clients; the one seen least recently is forgotten first (totals keep counting it).
    pub clients: usize,
    /// Tokens remembered per client (the most recently used ones): each one's span of use for
    /// the report's timeline and median reload delay, and a token once found superseded stays
    /// classified so after its rotation left the path history.
    pub tokens_per_client: usize,
    /// Recent uses kept per client, for timelines.
    pub recent_uses_per_client: usize,
}

impl Default for LedgerLimits {
    fn default() -> Self {
        Self {
            replaced_tokens_per_path: 64,
            paths: 4096,
            clients: 4096,
            tokens_per_client: 64,
            recent_uses_per_client: 16,
        }
    }
}

/// A token path of a pod's volume: the unit that rotations replace tokens in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct TokenPath {
    namespace: String,
    pod: String,
    volume: String,
    path: String,
}

#[derive(Debug)]
struct PathHistory {
    /// Rotations that replaced a token, oldest first: the eviction order.
    rotations: VecDeque<PathRotation>,
    last_rotation: Timestamp,
}

#[derive(Debug)]
struct PathRotation {
    at: Timestamp,
    /// Shared with the key of `Ledger::replaced`.
    old_jti: Arc<str>,
    new_jti: Option<String>,
}

#[derive(Debug)]
struct Replacement {
    at: Timestamp,
    /// Shared by every replacement of the path and its history's key: four strings once per
    /// path, not once per replaced token.
    path: Arc<TokenPath>,
}

/// A client: one program (user agent) using one identity from one pod.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ClientKey {
    subject: String,
    pod: Option<String>,
    user_agent: Option<String>,
}

/// One token as one client used it.
#[derive(Debug)]
struct SeenToken {
    jti: String,
    /// When the rotation that replaced it happened, once known.
    superseded_at: Option<Timestamp>,
    first_use: Timestamp,
    last_use: Timestamp,
    counts: UseCounts,
    /// `warnafter - iat`, from the last use that had both.
    lifetime_seconds: Option<i64>,
}

#[derive(Debug)]
struct ClientStats {
    namespace: String,
    service_account: String,
    pod_uid: Option<String>,
    counts: UseCounts,
    first_use: Timestamp,
    last_use: Timestamp,
    worst_reload_delay_ms: Option<i64>,
    worst_stale_seconds: Option<i64>,
    distinct_tokens: u64,
    /// Most recently used last.
    tokens: VecDeque<SeenToken>,
    recent: VecDeque<RecentUse>,
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

impl UseCounts {
    fn add(&mut self, outcome: &UseOutcome) {
        self.uses += 1;
        match outcome.classification {
            Classification::Legacy => self.legacy += 1,
            Classification::NoWarnAfter => self.no_warn_after += 1,
            Classification::Valid => self.valid += 1,
            Classification::Stale { .. } => self.stale += 1,
        }
        if outcome.superseded_after.is_some() {
            self.superseded += 1;
        }
        if outcome.expired {
            self.expired += 1;
        }
        if let Some(reason) = outcome.rejected {
            self.rejected.add(reason);
        }
    }
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

/// The usage ledger. Not synchronised: the server keeps it behind a mutex.
#[derive(Debug)]
pub struct Ledger {
    limits: LedgerLimits,
    replaced: HashMap<Arc<str>, Replacement>,
    paths: HashMap<Arc<TokenPath>, PathHistory>,
    clients: HashMap<ClientKey, ClientStats>,
    totals: UseCounts,
    rotations: u64,
    clients_forgotten: u64,
    unattributed_rejections: u64,
}

impl Default for Ledger {
    fn default() -> Self {
        Self::new()
    }
}

impl Ledger {
    pub fn new() -> Self {
        Self::with_limits(LedgerLimits::default())
    }

    /// A ledger with other limits; a zero limit is raised to one.
    pub fn with_limits(limits: LedgerLimits) -> Self {
        let limits = LedgerLimits {
            replaced_tokens_per_path: limits.replaced_tokens_per_path.max(1),
            paths: limits.paths.max(1),
            clients: limits.clients.max(1),
            tokens_per_client: limits.tokens_per_client.max(1),
            recent_uses_per_client: limits.recent_uses_per_client,
        };
        Self {
            limits,
            replaced: HashMap::new(),
            paths: HashMap::new(),
            clients: HashMap::new(),
            totals: UseCounts::default(),
            rotations: 0,
            clients_forgotten: 0,
            unattributed_rejections: 0,
        }
    }

    /// Notes that `old_jti` was replaced at `rotation.at`. A rewrite that kept the token (same jti,
    /// e.g. another token of the volume rotated) or a first write replaces nothing.
    pub fn record_rotation(&mut self, rotation: Rotation) {
        self.rotations += 1;
        let Some(old_jti) = rotation.old_jti else {
            return;
        };
        if rotation.new_jti.as_deref() == Some(old_jti.as_str()) {
            return;
        }
        // A token is superseded from the first moment a newer one was available.
        if self.replaced.contains_key(old_jti.as_str()) {
            return;
        }
        let path = TokenPath {
            namespace: rotation.namespace,
            pod: rotation.pod,
            volume: rotation.volume,
            path: rotation.path,
        };
        let path = match self.paths.get_key_value(&path) {
            Some((known, _)) => known.clone(),
            None => {
                if self.paths.len() >= self.limits.paths {
                    self.forget_least_recently_rotated_path();
                }
                Arc::new(path)
            }
        };
        let old_jti: Arc<str> = old_jti.into();
        let history = self
            .paths
            .entry(path.clone())
            .or_insert_with(|| PathHistory {
                rotations: VecDeque::new(),
                last_rotation: rotation.at,
            });
        history.last_rotation = history.last_rotation.max(rotation.at);
        history.rotations.push_back(PathRotation {
            at: rotation.at,
            old_jti: old_jti.clone(),
            new_jti: rotation.new_jti,
        });
        while history.rotations.len() > self.limits.replaced_tokens_per_path {
            if let Some(forgotten) = history.rotations.pop_front() {
                remove_replacement(&mut self.replaced, &forgotten.old_jti, &path);
            }
        }
        self.replaced.insert(
            old_jti,
            Replacement {
                at: rotation.at,
                path,
            },
        );
    }

    /// Classifies one use and adds it to its client's aggregate.
    pub fn record_use(&mut self, token_use: TokenUse) -> UseOutcome {
        let classification = classify(&token_use);
        let (expired, rejected) = (token_use.expired(), token_use.rejected);
        let counted_as = upstream_count(classification, rejected.is_some());
        let stale_annotation = match counted_as {
            UpstreamCount::Stale {
                seconds_after_warning,
            } => Some(stale_annotation_value(
                &token_use.subject,
                seconds_after_warning,
            )),
            _ => None,
        };

        let key = ClientKey {
            subject: token_use.subject,
            pod: token_use.pod,
            user_agent: token_use.user_agent,
        };
        if !self.clients.contains_key(&key) && self.clients.len() >= self.limits.clients {
            self.forget_least_recently_seen_client();
        }
        let client = self.clients.entry(key).or_insert_with(|| ClientStats {
            namespace: token_use.namespace,
            service_account: token_use.service_account,
            pod_uid: None,
            counts: UseCounts::default(),
            first_use: token_use.at,
            last_use: token_use.at,
            worst_reload_delay_ms: None,
            worst_stale_seconds: None,
            distinct_tokens: 0,
            tokens: VecDeque::new(),
            recent: VecDeque::new(),
        });

        let lifetime_seconds = token_use
            .warn_after
            .zip(token_use.issued_at)
            .map(|(warn_after, issued_at)| warn_after.as_second() - issued_at.as_second());
        let seen = token_use.jti.as_deref().map(|jti| {
            let seen = remember_token(
                client,
                jti,
                token_use.at,
                &self.replaced,
                self.limits.tokens_per_client,
            );
            seen.lifetime_seconds = lifetime_seconds.or(seen.lifetime_seconds);
            seen
        });
        // A use recorded before the rotation (requests race with the projector) was not late.
        let superseded_after = seen
            .as_ref()
            .and_then(|seen| seen.superseded_at)
            .map(|rotated_at| token_use.at.duration_since(rotated_at))
            .filter(|delay| delay.is_positive());

        let outcome = UseOutcome {
            classification,
            counted_as,
            superseded_after,
            expired,
            rejected,
            stale_annotation,
        };

        if let Some(seen) = seen {
            seen.counts.add(&outcome);
        }
        client.counts.add(&outcome);
        if token_use.pod_uid.is_some() {
            client.pod_uid = token_use.pod_uid;
        }
        client.first_use = client.first_use.min(token_use.at);
        client.last_use = client.last_use.max(token_use.at);
        if let Some(delay) = superseded_after {
            let delay_ms = duration_millis(delay);
            client.worst_reload_delay_ms = client.worst_reload_delay_ms.max(Some(delay_ms));
        }
        if let Classification::Stale {
            seconds_after_warning,
        } = classification
        {
            client.worst_stale_seconds =
                client.worst_stale_seconds.max(Some(seconds_after_warning));
        }
        if self.limits.recent_uses_per_client > 0 {
            if client.recent.len() >= self.limits.recent_uses_per_client {
                client.recent.pop_front();
            }
            client.recent.push_back(RecentUse {
                at: token_use.at,
                jti: token_use.jti,
                classification,
                superseded_after_seconds: superseded_after.map(millis_as_seconds),
                expired: outcome.expired,
                rejected: outcome.rejected,
            });
        }
        self.totals.add(&outcome);
        outcome
    }

    /// Counts a bearer token the server refused and could not attribute: not signed by any key it
    /// has or had (a forgery, another issuer's token, garbage). Its claims are never believed.
    pub fn record_unattributed_rejection(&mut self) {
        self.unattributed_rejections += 1;
    }

    /// Every remembered client, and totals since start.
    pub fn report(&self, now: Timestamp) -> UsageReport {
        let mut clients: Vec<(&ClientKey, &ClientStats)> = self.clients.iter().collect();
        clients.sort_by(|a, b| a.0.cmp_for_report(b.0));
        let clients = clients
            .into_iter()
            .map(|(key, stats)| {
                let tokens = self.token_spans(stats);
                let rotations = self.rotations_replacing(&tokens);
                // A replaced token the client left in time is a delay of 0, not "none": the
                // worst is never below the delay of a remembered token.
                let worst_reload_delay_seconds = tokens
                    .iter()
                    .filter_map(|span| span.reload_delay_seconds)
                    .chain(stats.worst_reload_delay_ms.map(|ms| ms as f64 / 1000.0))
                    .reduce(f64::max);
                ClientUsage {
                    subject: key.subject.clone(),
                    namespace: stats.namespace.clone(),
                    service_account: stats.service_account.clone(),
                    pod: key.pod.clone(),
                    pod_uid: stats.pod_uid.clone(),
                    user_agent: key.user_agent.clone(),
                    counts: stats.counts,
                    first_use: stats.first_use,
                    last_use: stats.last_use,
                    worst_reload_delay_seconds,
                    worst_stale_seconds: stats.worst_stale_seconds,
                    distinct_tokens: stats.distinct_tokens,
                    recent_uses: stats.recent.iter().cloned().collect(),
                    median_reload_delay_seconds: median_reload_delay(&tokens),
                    tokens,
                    rotations,
                }
            })
            .collect::<Vec<_>>();
        UsageReport {
            generated_at: now,
            totals: UsageTotals {
                clients: clients.len() as u64 + self.clients_forgotten,
                clients_forgotten: self.clients_forgotten,
                counts: self.totals,
                rotations: self.rotations,
                replaced_tokens_tracked: self.replaced.len() as u64,
                unattributed_rejections: self.unattributed_rejections,
            },
            clients,
        }
    }

    /// The client's remembered tokens in the order it started using them, each with the time it
    /// was replaced (looked up now: a token last used before its rotation learns it here).
    fn token_spans(&self, stats: &ClientStats) -> Vec<TokenSpan> {
        let mut spans: Vec<TokenSpan> = stats
            .tokens
            .iter()
            .map(|seen| {
                let superseded_at = seen
                    .superseded_at
                    .or_else(|| self.replaced.get(seen.jti.as_str()).map(|r| r.at));
                TokenSpan {
                    jti: seen.jti.clone(),
                    first_use: seen.first_use,
                    last_use: seen.last_use,
                    counts: seen.counts,
                    superseded_at,
                    reload_delay_seconds: superseded_at.map(|at| {
                        let late = seen.last_use.duration_since(at);
                        if late.is_positive() {
                            millis_as_seconds(late)
                        } else {
                            0.0
                        }
                    }),
                    lifetime_seconds: seen.lifetime_seconds,
                }
            })
            .collect();
        spans.sort_by(|a, b| (a.first_use, &a.jti).cmp(&(b.first_use, &b.jti)));
        spans
    }

    /// The remembered rotations of every volume path that replaced one of `tokens`, oldest first.
    fn rotations_replacing(&self, tokens: &[TokenSpan]) -> Vec<RotationMark> {
        let mut paths: Vec<&TokenPath> = tokens
            .iter()
            .filter_map(|span| self.replaced.get(span.jti.as_str()).map(|r| &*r.path))
            .collect();
        paths.sort_by(|a, b| (&a.volume, &a.path).cmp(&(&b.volume, &b.path)));
        paths.dedup();
        let mut marks: Vec<RotationMark> = paths
            .into_iter()
            .filter_map(|path| self.paths.get(path).map(|history| (path, history)))
            .flat_map(|(path, history)| {
                history.rotations.iter().map(|rotation| RotationMark {
                    at: rotation.at,
                    volume: path.volume.clone(),
                    path: path.path.clone(),
                    old_jti: rotation.old_jti.to_string(),
                    new_jti: rotation.new_jti.clone(),
                })
            })
            .collect();
        marks.sort_by_key(|mark| mark.at);
        marks
    }

    /// Replaced tokens currently remembered: bounded by `paths × replaced_tokens_per_path`.
    pub fn replaced_tokens_tracked(&self) -> usize {
        self.replaced.len()
    }

    fn forget_least_recently_rotated_path(&mut self) {
        let oldest = self
            .paths
            .iter()
            .min_by_key(|(_, history)| history.last_rotation)
            .map(|(path, _)| path.clone());
        if let Some(path) = oldest {
            if let Some(history) = self.paths.remove(&path) {
                for rotation in history.rotations {
                    remove_replacement(&mut self.replaced, &rotation.old_jti, &path);
                }
            }
        }
    }

    fn forget_least_recently_seen_client(&mut self) {
        let oldest = self
            .clients
            .iter()
            .min_by_key(|(_, stats)| stats.last_use)
            .map(|(key, _)| key.clone());
        if let Some(key) = oldest {
            self.clients.remove(&key);
            self.clients_forgotten += 1;
        }
    }
}

impl ClientKey {
    fn cmp_for_report(&self, other: &Self) -> std::cmp::Ordering {
        (&self.subject, &self.pod, &self.user_agent).cmp(&(
            &other.subject,
            &other.pod,
            &other.user_agent,
        ))
    }
}

fn classify(token_use: &TokenUse) -> Classification {
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

fn upstream_count(classification: Classification, rejected: bool) -> UpstreamCount {
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

/// Records that the client presented `jti` at `at` and returns the token's record, its
/// replacement time filled in if it was replaced. A replacement found once stays with the
/// client's token, so the classification survives the path history forgetting it.
fn remember_token<'a>(
    client: &'a mut ClientStats,
    jti: &str,
    at: Timestamp,
    replaced: &HashMap<Arc<str>, Replacement>,
    tokens_per_client: usize,
) -> &'a mut SeenToken {
    // Most recently used last: a client presents its current token over and over, so the search
    // from the back ends at once.
    let known = client.tokens.iter().rposition(|token| token.jti == jti);
    let mut seen = match known.and_then(|index| client.tokens.remove(index)) {
        Some(seen) => seen,
        None => {
            client.distinct_tokens += 1;
            if client.tokens.len() >= tokens_per_client {
                client.tokens.pop_front();
            }
            SeenToken {
                jti: jti.to_owned(),
                superseded_at: None,
                first_use: at,
                last_use: at,
                counts: UseCounts::default(),
                lifetime_seconds: None,
            }
        }
    };
    if seen.superseded_at.is_none() {
        seen.superseded_at = replaced.get(jti).map(|replacement| replacement.at);
    }
    seen.first_use = seen.first_use.min(at);
    seen.last_use = seen.last_use.max(at);
    client.tokens.push_back(seen);
    let last = client.tokens.len() - 1;
    &mut client.tokens[last]
}

/// The median of the reload delays of the replaced tokens (0 for one not used after its
/// replacement), or none when no token was replaced.
fn median_reload_delay(tokens: &[TokenSpan]) -> Option<f64> {
    let mut delays: Vec<f64> = tokens
        .iter()
        .filter_map(|span| span.reload_delay_seconds)
        .collect();
    if delays.is_empty() {
        return None;
    }
    delays.sort_by(f64::total_cmp);
    let middle = delays.len() / 2;
    Some(if delays.len() % 2 == 1 {
        delays[middle]
    } else {
        (delays[middle - 1] + delays[middle]) / 2.0
    })
}

fn remove_replacement(replaced: &mut HashMap<Arc<str>, Replacement>, jti: &str, path: &TokenPath) {
    if replaced.get(jti).is_some_and(|r| *r.path == *path) {
        replaced.remove(jti);
    }
}

fn duration_millis(duration: SignedDuration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

fn millis_as_seconds(duration: SignedDuration) -> f64 {
    duration_millis(duration) as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUBJECT: &str = "system:serviceaccount:default:app";

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + seconds).unwrap()
    }

    fn at_millis(millis: i64) -> Timestamp {
        Timestamp::from_millisecond(1_700_000_000_000 + millis).unwrap()
    }

    fn token_use(at: Timestamp, jti: &str) -> TokenUse {
        TokenUse {
            at,
            subject: SUBJECT.to_owned(),
            namespace: "default".to_owned(),
            service_account: "app".to_owned(),
            pod: Some("app-0".to_owned()),
            pod_uid: Some("pod-uid".to_owned()),
            jti: Some(jti.to_owned()),
            warn_after: None,
            issued_at: None,
            legacy: false,
            rejected: None,
            user_agent: Some("client-go/1.37".to_owned()),
        }
    }

    fn rotation(at: Timestamp, old: Option<&str>, new: &str) -> Rotation {
        Rotation {
            at,
            namespace: "default".to_owned(),
            pod: "app-0".to_owned(),
            service_account: "app".to_owned(),
            volume: "kube-api-access-abcde".to_owned(),
            path: "token".to_owned(),
            old_jti: old.map(str::to_owned),
            new_jti: Some(new.to_owned()),
        }
    }

    fn secs(seconds: i64) -> SignedDuration {
        SignedDuration::from_secs(seconds)
    }

    #[test]
    fn classification_table() {
        struct Case {
            name: &'static str,
            rotations: Vec<Rotation>,
            token_use: TokenUse,
            classification: Classification,
            counted_as: UpstreamCount,
            superseded_after: Option<SignedDuration>,
            annotation: Option<&'static str>,
        }
        let with_warn = |use_at: Timestamp, warn: Timestamp, jti: &str| TokenUse {
            warn_after: Some(warn),
            ..token_use(use_at, jti)
        };
        let cases = vec![
            Case {
                name: "valid: warnafter not reached",
                rotations: vec![],
                token_use: with_warn(at(10), at(3607), "a"),
                classification: Classification::Valid,
                counted_as: UpstreamCount::Valid,
                superseded_after: None,
                annotation: None,
            },
            Case {
                name: "at warnafter exactly: still valid",
                rotations: vec![],
                token_use: with_warn(at(3607), at(3607), "a"),
                classification: Classification::Valid,
                counted_as: UpstreamCount::Valid,
                superseded_after: None,
                annotation: None,
            },
            Case {
                name: "half a second after warnafter: stale by 0 s, as now.Unix() - warnafter",
                rotations: vec![],
                token_use: with_warn(at_millis(3_607_500), at(3607), "a"),
                classification: Classification::Stale {
                    seconds_after_warning: 0,
                },
                counted_as: UpstreamCount::Stale {
                    seconds_after_warning: 0,
                },
                superseded_after: None,
                annotation: Some(
                    "subject: system:serviceaccount:default:app, seconds after warning threshold: 0",
                ),
            },
            Case {
                name: "one second after warnafter: stale",
                rotations: vec![],
                token_use: with_warn(at(3608), at(3607), "a"),
                classification: Classification::Stale {
                    seconds_after_warning: 1,
                },
                counted_as: UpstreamCount::Stale {
                    seconds_after_warning: 1,
                },
                superseded_after: None,
                annotation: Some(
                    "subject: system:serviceaccount:default:app, seconds after warning threshold: 1",
                ),
            },
            Case {
                name: "zero warnafter is absent",
                rotations: vec![],
                token_use: with_warn(at(10), Timestamp::UNIX_EPOCH, "a"),
                classification: Classification::NoWarnAfter,
                counted_as: UpstreamCount::Uncounted,
                superseded_after: None,
                annotation: None,
            },
            Case {
                name: "legacy",
                rotations: vec![],
                token_use: TokenUse {
                    legacy: true,
                    jti: None,
                    pod: None,
                    pod_uid: None,
                    ..token_use(at(10), "unused")
                },
                classification: Classification::Legacy,
                counted_as: UpstreamCount::Legacy,
                superseded_after: None,
                annotation: None,
            },
            Case {
                name: "no warnafter: uncounted upstream",
                rotations: vec![],
                token_use: token_use(at(10), "a"),
                classification: Classification::NoWarnAfter,
                counted_as: UpstreamCount::Uncounted,
                superseded_after: None,
                annotation: None,
            },
            Case {
                name: "superseded after one rotation",
                rotations: vec![rotation(at(100), Some("a"), "b")],
                token_use: token_use(at_millis(112_250), "a"),
                classification: Classification::NoWarnAfter,
                counted_as: UpstreamCount::Uncounted,
                superseded_after: Some(SignedDuration::from_millis(12_250)),
                annotation: None,
            },
            Case {
                name: "two rotations: the oldest token counts from its own replacement",
                rotations: vec![
                    rotation(at(100), Some("a"), "b"),
                    rotation(at(200), Some("b"), "c"),
                ],
                token_use: token_use(at(230), "a"),
                classification: Classification::NoWarnAfter,
                counted_as: UpstreamCount::Uncounted,
                superseded_after: Some(secs(130)),
                annotation: None,
            },
            Case {
                name: "two rotations: the middle token counts from the second",
                rotations: vec![
                    rotation(at(100), Some("a"), "b"),
                    rotation(at(200), Some("b"), "c"),
                ],
                token_use: token_use(at(230), "b"),
                classification: Classification::NoWarnAfter,
                counted_as: UpstreamCount::Uncounted,
                superseded_after: Some(secs(30)),
                annotation: None,
            },
            Case {
                name: "the newest token is not superseded",
                rotations: vec![rotation(at(100), Some("a"), "b")],
                token_use: token_use(at(230), "b"),
                classification: Classification::NoWarnAfter,
                counted_as: UpstreamCount::Uncounted,
                superseded_after: None,
                annotation: None,
            },
            Case {
                name: "a use recorded before the rotation is not superseded",
                rotations: vec![rotation(at(100), Some("a"), "b")],
                token_use: token_use(at(99), "a"),
                classification: Classification::NoWarnAfter,
                counted_as: UpstreamCount::Uncounted,
                superseded_after: None,
                annotation: None,
            },
            Case {
                name: "a rewrite that kept the token does not supersede it",
                rotations: vec![rotation(at(100), Some("a"), "a")],
                token_use: token_use(at(130), "a"),
                classification: Classification::NoWarnAfter,
                counted_as: UpstreamCount::Uncounted,
                superseded_after: None,
                annotation: None,
            },
            Case {
                name: "stale and superseded",
                rotations: vec![rotation(at(2900), Some("a"), "b")],
                token_use: with_warn(at(3700), at(3607), "a"),
                classification: Classification::Stale {
                    seconds_after_warning: 93,
                },
                counted_as: UpstreamCount::Stale {
                    seconds_after_warning: 93,
                },
                superseded_after: Some(secs(800)),
                annotation: Some(
                    "subject: system:serviceaccount:default:app, seconds after warning threshold: 93",
                ),
            },
            Case {
                name: "expired: classified and recorded, counted nowhere upstream",
                rotations: vec![rotation(at(2900), Some("a"), "b")],
                token_use: TokenUse {
                    rejected: Some(Rejection::Expired),
                    ..with_warn(at(4000), at(3607), "a")
                },
                classification: Classification::Stale {
                    seconds_after_warning: 393,
                },
                counted_as: UpstreamCount::Uncounted,
                superseded_after: Some(secs(1100)),
                annotation: None,
            },
            Case {
                name: "signed by a dropped key: classified and recorded, counted nowhere upstream",
                rotations: vec![],
                token_use: TokenUse {
                    rejected: Some(Rejection::UnknownKey),
                    ..with_warn(at(100), at(3607), "a")
                },
                classification: Classification::Valid,
                counted_as: UpstreamCount::Uncounted,
                superseded_after: None,
                annotation: None,
            },
        ];
        for case in cases {
            let mut ledger = Ledger::new();
            for r in case.rotations {
                ledger.record_rotation(r);
            }
            let expired = case.token_use.expired();
            let rejected = case.token_use.rejected;
            let outcome = ledger.record_use(case.token_use);
            assert_eq!(outcome.classification, case.classification, "{}", case.name);
            assert_eq!(outcome.counted_as, case.counted_as, "{}", case.name);
            assert_eq!(
                outcome.superseded_after, case.superseded_after,
                "{}",
                case.name
            );
            assert_eq!(outcome.expired, expired, "{}", case.name);
            assert_eq!(outcome.rejected, rejected, "{}", case.name);
            assert_eq!(
                outcome.stale_annotation.as_deref(),
                case.annotation,
                "{}",
                case.name
            );
            let report = ledger.report(at(5000));
            assert_eq!(report.totals.counts.uses, 1, "{}", case.name);
            assert_eq!(
                report.totals.counts.expired,
                u64::from(expired),
                "{}",
                case.name
            );
            assert_eq!(
                report.totals.counts.superseded,
                u64::from(case.superseded_after.is_some()),
                "{}",
                case.name
            );
            assert_eq!(
                report.clients[0].counts.rejected.total(),
                u64::from(rejected.is_some()),
                "{}",
                case.name
            );
        }
    }

    #[test]
    fn rejected_uses_are_counted_per_client_by_reason() {
        let mut ledger = Ledger::new();
        ledger.record_use(token_use(at(1), "a"));
        for second in 2..82 {
            ledger.record_use(TokenUse {
                rejected: Some(Rejection::UnknownKey),
                ..token_use(at(second), "a")
            });
        }
        ledger.record_use(TokenUse {
            rejected: Some(Rejection::Invalidated),
            ..token_use(at(90), "b")
        });
        ledger.record_unattributed_rejection();
        ledger.record_unattributed_rejection();
        let report = ledger.report(at(100));
        let client = &report.clients[0];
        assert_eq!(client.counts.uses, 82);
        assert_eq!(
            client.counts.rejected,
            RejectedUses {
                unknown_key: 80,
                invalidated: 1,
                ..RejectedUses::default()
            }
        );
        assert_eq!(client.counts.rejected.total(), 81);
        assert_eq!(
            client.counts.rejected.describe(),
            "80 unknown key, 1 invalidated"
        );
        assert_eq!(client.tokens[0].counts.rejected.unknown_key, 80);
        assert_eq!(
            client.recent_uses.last().map(|u| u.rejected),
            Some(Some(Rejection::Invalidated))
        );
        // Unattributed rejections belong to nobody: no client, only the totals.
        assert_eq!(report.clients.len(), 1);
        assert_eq!(report.totals.unattributed_rejections, 2);
        assert_eq!(report.totals.counts.rejected.total(), 81);
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["clients"][0]["rejected"]["unknown_key"], 80);
        assert_eq!(json["totals"]["unattributed_rejections"], 2);
        assert_eq!(RejectedUses::default().describe(), "");
    }

    #[test]
    fn a_replaced_token_left_in_time_is_a_worst_delay_of_zero_not_none() {
        let mut ledger = Ledger::new();
        ledger.record_use(token_use(at(1), "a"));
        ledger.record_rotation(rotation(at(10), Some("a"), "b"));
        ledger.record_use(token_use(at(11), "b"));
        let report = ledger.report(at(20));
        let client = &report.clients[0];
        assert_eq!(client.median_reload_delay_seconds, Some(0.0));
        assert_eq!(client.worst_reload_delay_seconds, Some(0.0));
        // Nothing replaced: none for both.
        let mut ledger = Ledger::new();
        ledger.record_use(token_use(at(1), "a"));
        let client = &ledger.report(at(20)).clients[0];
        assert_eq!(client.median_reload_delay_seconds, None);
        assert_eq!(client.worst_reload_delay_seconds, None);
    }

    #[test]
    fn a_token_span_knows_the_lifetime_it_was_issued_for() {
        let mut ledger = Ledger::new();
        ledger.record_use(TokenUse {
            warn_after: Some(at(60)),
            issued_at: Some(at(0)),
            ..token_use(at(1), "a")
        });
        ledger.record_use(token_use(at(2), "b"));
        let report = ledger.report(at(20));
        let lifetimes: Vec<_> = report.clients[0]
            .tokens
            .iter()
            .map(|span| span.lifetime_seconds)
            .collect();
        assert_eq!(lifetimes, [Some(60), None]);
    }

    #[test]
    fn token_spans_rotations_and_median_reload_delay() {
        let mut ledger = Ledger::new();
        // Another pod's rotations never show up on this client's timeline.
        ledger.record_rotation(Rotation {
            pod: "other-0".to_owned(),
            ..rotation(at(5), Some("x"), "y")
        });
        // Token a: replaced at 10, used until 13 (3 s late).
        ledger.record_use(token_use(at(1), "a"));
        ledger.record_use(token_use(at(9), "a"));
        ledger.record_rotation(rotation(at(10), Some("a"), "b"));
        ledger.record_use(token_use(at(13), "a"));
        // Token b: replaced at 20, last used at 19 (on time: 0 s).
        ledger.record_use(token_use(at(14), "b"));
        ledger.record_use(token_use(at(19), "b"));
        ledger.record_rotation(rotation(at(20), Some("b"), "c"));
        // Token c: replaced at 30, used until 37 (7 s late); d is current.
        ledger.record_use(token_use(at(21), "c"));
        ledger.record_rotation(rotation(at(30), Some("c"), "d"));
        ledger.record_use(token_use(at(37), "c"));
        ledger.record_use(token_use(at(38), "d"));

        let report = ledger.report(at(40));
        let client = &report.clients[0];
        type Span<'a> = (&'a str, i64, i64, u64, u64, Option<f64>);
        let spans: Vec<Span> = client
            .tokens
            .iter()
            .map(|s| {
                (
                    s.jti.as_str(),
                    s.first_use.as_second() - at(0).as_second(),
                    s.last_use.as_second() - at(0).as_second(),
                    s.counts.uses,
                    s.counts.superseded,
                    s.reload_delay_seconds,
                )
            })
            .collect();
        assert_eq!(
            spans,
            [
                ("a", 1, 13, 3, 1, Some(3.0)),
                ("b", 14, 19, 2, 0, Some(0.0)),
                ("c", 21, 37, 2, 1, Some(7.0)),
                ("d", 38, 38, 1, 0, None),
            ]
        );
        assert_eq!(client.tokens[1].superseded_at, Some(at(20)));
        assert_eq!(client.median_reload_delay_seconds, Some(3.0));
        assert_eq!(client.worst_reload_delay_seconds, Some(7.0));
        let marks: Vec<(i64, &str, Option<&str>)> = client
            .rotations
            .iter()
            .map(|m| {
                (
                    m.at.as_second() - at(0).as_second(),
                    m.old_jti.as_str(),
                    m.new_jti.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            marks,
            [
                (10, "a", Some("b")),
                (20, "b", Some("c")),
                (30, "c", Some("d"))
            ]
        );
        assert_eq!(client.rotations[0].volume, "kube-api-access-abcde");
    }

    #[test]
    fn median_of_an_even_number_of_delays_and_of_none() {
        let span = |delay: Option<f64>| TokenSpan {
            jti: "j".to_owned(),
            first_use: at(0),
            last_use: at(0),
            counts: UseCounts::default(),
            superseded_at: delay.map(|_| at(0)),
            reload_delay_seconds: delay,
            lifetime_seconds: None,
        };
        assert_eq!(median_reload_delay(&[span(None)]), None);
        assert_eq!(
            median_reload_delay(&[span(Some(4.0)), span(Some(1.0)), span(None)]),
            Some(2.5)
        );
    }

    #[test]
    fn report_aggregates_per_client() {
        let mut ledger = Ledger::new();
        ledger.record_rotation(rotation(at(0), None, "a"));
        ledger.record_rotation(rotation(at(100), Some("a"), "b"));
        // Same pod and subject, two programs: two clients.
        let kubectl = |u: TokenUse| TokenUse {
            user_agent: Some("kubectl/v1.37.0".to_owned()),
            ..u
        };
        ledger.record_use(token_use(at(50), "a"));
        ledger.record_use(token_use(at(103), "a"));
        ledger.record_use(token_use(at(110), "a"));
        ledger.record_use(token_use(at(111), "b"));
        ledger.record_use(kubectl(token_use(at(60), "a")));
        ledger.record_use(kubectl(TokenUse {
            warn_after: Some(at(3607)),
            ..token_use(at(3610), "a")
        }));
        ledger.record_use(kubectl(TokenUse {
            warn_after: Some(at(3607)),
            ..token_use(at(3700), "a")
        }));

        let report = ledger.report(at(4000));
        assert_eq!(report.generated_at, at(4000));
        assert_eq!(report.clients.len(), 2);
        let go = &report.clients[0];
        assert_eq!(go.user_agent.as_deref(), Some("client-go/1.37"));
        assert_eq!(go.pod.as_deref(), Some("app-0"));
        assert_eq!(go.pod_uid.as_deref(), Some("pod-uid"));
        assert_eq!(go.namespace, "default");
        assert_eq!(go.service_account, "app");
        assert_eq!(
            go.counts,
            UseCounts {
                uses: 4,
                no_warn_after: 4,
                superseded: 2,
                ..UseCounts::default()
            }
        );
        assert_eq!(go.first_use, at(50));
        assert_eq!(go.last_use, at(111));
        assert_eq!(go.worst_reload_delay_seconds, Some(10.0));
        assert_eq!(go.worst_stale_seconds, None);
        assert_eq!(go.distinct_tokens, 2);
        assert_eq!(go.recent_uses.len(), 4);

        let kubectl = &report.clients[1];
        assert_eq!(kubectl.user_agent.as_deref(), Some("kubectl/v1.37.0"));
        assert_eq!(kubectl.counts.uses, 3);
        assert_eq!(kubectl.counts.stale, 2);
        assert_eq!(kubectl.counts.superseded, 2);
        assert_eq!(kubectl.worst_stale_seconds, Some(93));
        assert_eq!(kubectl.worst_reload_delay_seconds, Some(3600.0));
        assert_eq!(kubectl.distinct_tokens, 1);

        assert_eq!(report.totals.clients, 2);
        assert_eq!(report.totals.counts.uses, 7);
        assert_eq!(report.totals.counts.stale, 2);
        assert_eq!(report.totals.counts.superseded, 4);
        assert_eq!(report.totals.rotations, 2);
        assert_eq!(report.totals.replaced_tokens_tracked, 1);
    }

    #[test]
    fn report_round_trips_through_json() {
        let mut ledger = Ledger::new();
        ledger.record_rotation(rotation(at(100), Some("a"), "b"));
        ledger.record_use(TokenUse {
            warn_after: Some(at(50)),
            ..token_use(at_millis(101_500), "a")
        });
        let report = ledger.report(at(200));
        let json = serde_json::to_value(&report).unwrap();
        let client = &json["clients"][0];
        assert_eq!(client["subject"], SUBJECT);
        assert_eq!(client["uses"], 1);
        assert_eq!(client["stale"], 1);
        assert_eq!(client["superseded"], 1);
        assert_eq!(client["worst_reload_delay_seconds"], 1.5);
        assert_eq!(client["worst_stale_seconds"], 51);
        assert_eq!(client["first_use"], "2023-11-14T22:15:01.5Z");
        assert_eq!(json["totals"]["uses"], 1);
        let back: UsageReport = serde_json::from_value(json).unwrap();
        assert_eq!(back, report);
    }

    #[test]
    fn memory_stays_bounded() {
        let limits = LedgerLimits::default();
        let mut ledger = Ledger::new();
        let mut previous = None;
        for i in 0..10_000 {
            let jti = format!("jti-{i}");
            ledger.record_rotation(rotation(at(i), previous.as_deref(), &jti));
            ledger.record_use(token_use(at(i), &jti));
            previous = Some(jti);
        }
        assert_eq!(
            ledger.replaced_tokens_tracked(),
            limits.replaced_tokens_per_path
        );
        let report = ledger.report(at(10_000));
        assert_eq!(report.clients.len(), 1);
        assert_eq!(report.clients[0].distinct_tokens, 10_000);
        assert_eq!(
            report.clients[0].recent_uses.len(),
            limits.recent_uses_per_client
        );
        assert_eq!(report.totals.rotations, 10_000);

        // Many pods and many clients: both capped, the least recent forgotten first.
        let limits = LedgerLimits {
            replaced_tokens_per_path: 2,
            paths: 3,
            clients: 5,
            tokens_per_client: 2,
            recent_uses_per_client: 1,
        };
        let mut ledger = Ledger::with_limits(limits);
        for pod in 0..20 {
            for i in 0..5 {
                ledger.record_rotation(Rotation {
                    pod: format!("pod-{pod}"),
                    ..rotation(
                        at(pod * 10 + i),
                        Some(&format!("{pod}-{i}")),
                        &format!("{pod}-{}", i + 1),
                    )
                });
            }
            ledger.record_use(TokenUse {
                pod: Some(format!("pod-{pod}")),
                ..token_use(at(pod * 10), "x")
            });
        }
        assert_eq!(ledger.replaced_tokens_tracked(), 6);
        let report = ledger.report(at(1000));
        assert_eq!(report.clients.len(), 5);
        assert_eq!(report.clients[0].pod.as_deref(), Some("pod-15"));
        assert_eq!(report.totals.clients, 20);
        assert_eq!(report.totals.clients_forgotten, 15);
        assert_eq!(report.totals.counts.uses, 20);
    }

    #[test]
    fn a_token_found_superseded_stays_superseded_after_the_path_forgets_it() {
        let mut ledger = Ledger::with_limits(LedgerLimits {
            replaced_tokens_per_path: 2,
            ..LedgerLimits::default()
        });
        ledger.record_rotation(rotation(at(100), Some("held"), "n0"));
        assert!(ledger
            .record_use(token_use(at(105), "held"))
            .superseded_after
            .is_some());
        let mut previous = "n0".to_owned();
        for i in 1..10 {
            let next = format!("n{i}");
            ledger.record_rotation(rotation(at(100 + i), Some(&previous), &next));
            previous = next;
        }
        let outcome = ledger.record_use(token_use(at(300), "held"));
        assert_eq!(outcome.superseded_after, Some(secs(200)));
        // Another client presenting the same old token was never seen with it: forgotten.
        let other = ledger.record_use(TokenUse {
            user_agent: Some("other".to_owned()),
            ..token_use(at(300), "held")
        });
        assert_eq!(other.superseded_after, None);
    }

    #[test]
    fn repeated_rotation_event_keeps_the_first_time() {
        let mut ledger = Ledger::new();
        ledger.record_rotation(rotation(at(100), Some("a"), "b"));
        ledger.record_rotation(rotation(at(150), Some("a"), "b"));
        let outcome = ledger.record_use(token_use(at(160), "a"));
        assert_eq!(outcome.superseded_after, Some(secs(60)));
        assert_eq!(ledger.replaced_tokens_tracked(), 1);
    }
}
