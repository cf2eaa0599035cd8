//! The usage ledger: how clients use their service account tokens, for client reload testing.
//!
//! Every use of a token the emulator issued, accepted or rejected, is classified as
//! kube-apiserver classifies it ([`super::classify`]) and, orthogonally, as *superseded* when the
//! projector had already written a newer token for the same volume path, and as *rejected* (with
//! the reason) when the server refused it. Uses are aggregated per client (subject, pod, user
//! agent) so memory stays bounded however long the server runs; [`Ledger::report`] answers in the
//! wire types of [`super::usage`]. A rejected token the emulator cannot show it signed is never
//! attributed to a client: it is only counted.
//!
//! Pure: no I/O and no clock reads. Every time comes in as a value (`TokenUse::at`,
//! `Rotation::at`, `report(now)`).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};

use super::classify::{
    classify, stale_annotation_value, upstream_count, TokenUse, UpstreamCount, UseOutcome,
};
use super::usage::{
    Classification, ClientUsage, RecentUse, RotationMark, TokenSpan, UsageReport, UsageTotals,
    UseCounts,
};

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
            count(&mut seen.counts, &outcome);
        }
        count(&mut client.counts, &outcome);
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
        count(&mut self.totals, &outcome);
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

/// Adds one use, as the ledger concluded it, to `counts`.
fn count(counts: &mut UseCounts, outcome: &UseOutcome) {
    counts.uses += 1;
    match outcome.classification {
        Classification::Legacy => counts.legacy += 1,
        Classification::NoWarnAfter => counts.no_warn_after += 1,
        Classification::Valid => counts.valid += 1,
        Classification::Stale { .. } => counts.stale += 1,
    }
    if outcome.superseded_after.is_some() {
        counts.superseded += 1;
    }
    if outcome.expired {
        counts.expired += 1;
    }
    if let Some(reason) = outcome.rejected {
        counts.rejected.add(reason);
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
#[path = "ledger_tests.rs"]
mod tests;
