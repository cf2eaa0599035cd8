//! The refresher: one deadline queue for every token of every volume, as the kubelet's token
//! manager plus volume reconciler would act, without a thread or timer per token.
//!
//! The loop sleeps until the earliest deadline, refreshes every token that is due, rewrites the
//! volumes those tokens belong to (whole, through the atomic writer), and schedules each token's
//! next refresh by the kubelet's rule with a fresh jitter.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use crate::clock::Clock;
use crate::projection::spec::{PodInfo, VolumePlan};
use crate::projection::{AtomicWriter, WriteOutcome};
use crate::source::{BoundPod, SourceError, TokenGrant, TokenRequest, TokenSource};
use crate::token::refresh::JITTER_STEPS;

pub mod heal;

/// One projected volume of one pod, and where it is written.
#[derive(Debug, Clone)]
pub struct ProjectedVolume {
    pub pod: PodInfo,
    pub plan: VolumePlan,
    pub writer: AtomicWriter,
}

/// What one rotation did, for logs, hooks, metrics and the usage ledger. Never holds the token.
/// Serializes to JSON with RFC 3339 times (what HTTP rotation hooks POST).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RotationEvent {
    pub volume: String,
    pub dir: PathBuf,
    /// Path of the token inside the volume.
    pub path: String,
    pub namespace: String,
    pub pod: String,
    pub service_account: String,
    pub old_jti: Option<String>,
    pub new_jti: Option<String>,
    pub issued_at: Option<Timestamp>,
    pub expires_at: Option<Timestamp>,
    pub warn_after: Option<Timestamp>,
    /// `status.expirationTimestamp`: when the kubelet considers the token expired.
    pub status_expiration: Timestamp,
    pub next_refresh: Timestamp,
    /// The timestamped directory the rotation published.
    pub data_dir: String,
}

/// Why the refresher stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RefresherError {
    #[error("volume {volume}, token {path}: {source}")]
    Rejected {
        volume: String,
        path: String,
        #[source]
        source: SourceError,
    },
    #[error("volume {volume}: {message}")]
    Write { volume: String, message: String },
}

/// Retry timing after a failed request or write: exponential with full jitter.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub initial: SignedDuration,
    pub cap: SignedDuration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: SignedDuration::from_secs(1),
            cap: SignedDuration::from_secs(60),
        }
    }
}

impl Backoff {
    /// The ceiling of the delay after `failures` consecutive failures (1 = first failure); the
    /// delay itself is drawn uniformly below it (`fraction` in [0, 1)).
    pub fn delay(&self, failures: u32, fraction: f64) -> SignedDuration {
        let exponent = failures.saturating_sub(1).min(30);
        let ceiling = self
            .initial
            .checked_mul(1_i32 << exponent)
            .unwrap_or(self.cap)
            .min(self.cap);
        ceiling.mul_f64(fraction.clamp(0.0, 1.0))
    }
}

struct TokenSlot {
    request: TokenRequest,
    path: String,
    grant: Option<TokenGrant>,
    failures: u32,
    /// The `jti` of the token last published for this slot.
    written_jti: Option<String>,
    /// A new grant arrived that has not been published yet.
    unpublished: bool,
    /// When this slot is next due, and the generation of its live queue entry: rescheduling
    /// bumps the generation, so an entry superseded by a later schedule is skipped when popped.
    next_due: Timestamp,
    generation: u64,
}

struct VolumeState {
    volume: ProjectedVolume,
    tokens: Vec<TokenSlot>,
    write_failures: u32,
}

type RotationHook = Box<dyn Fn(&RotationEvent) + Send + Sync>;

/// Requests to a running refresher, from signal handlers, directory watchers and the
/// emulator's controls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Refresh every token now (SIGHUP).
    RefreshAll,
    /// Refresh every token of one pod now (`ctl rotate --pod`).
    RefreshPod { namespace: String, name: String },
    /// Rewrite one volume from the tokens in hand: restores a layout someone else changed.
    Rewrite { volume: usize },
}

/// What readiness probes and metrics know of one token. Never holds the token.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TokenStatus {
    pub volume: String,
    pub dir: PathBuf,
    pub path: String,
    /// Whether a token of this slot is on disk.
    pub written: bool,
    /// The end of the token on disk's life: the earliest of status expiration, `exp`, `warnafter`.
    pub expires_at: Option<Timestamp>,
    pub next_refresh: Option<Timestamp>,
    pub successes: u64,
    /// Failures by reason: `rejected`, `unavailable`, `throttled`, `write`.
    pub failures: BTreeMap<&'static str, u64>,
    pub last_error: Option<String>,
    pub last_error_at: Option<Timestamp>,
}

impl TokenStatus {
    /// Present on disk and not past its effective expiry.
    pub fn is_ready(&self, now: Timestamp) -> bool {
        self.written && self.expires_at.is_some_and(|end| now < end)
    }
}

/// Shared, cheap snapshot of every token's status, in volume and source order.
pub type StatusBoard = Arc<std::sync::Mutex<Vec<TokenStatus>>>;

fn failure_reason(err: &SourceError) -> &'static str {
    match err {
        SourceError::Rejected(_) => "rejected",
        SourceError::Unavailable(_) => "unavailable",
        SourceError::Throttled { .. } => "throttled",
    }
}
type QueueEntry = (Timestamp, usize, usize, u64);

/// Keeps every token of every volume fresh on disk.
pub struct Refresher<S> {
    source: Arc<S>,
    clock: Arc<dyn Clock>,
    volumes: Vec<VolumeState>,
    /// (deadline, volume index, token index, slot generation); earliest first.
    queue: BinaryHeap<Reverse<QueueEntry>>,
    backoff: Backoff,
    on_rotation: Vec<RotationHook>,
    control_tx: tokio::sync::mpsc::UnboundedSender<Control>,
    control_rx: tokio::sync::mpsc::UnboundedReceiver<Control>,
    status: StatusBoard,
}

impl<S: TokenSource> Refresher<S> {
    pub fn new(source: Arc<S>, clock: Arc<dyn Clock>, volumes: Vec<ProjectedVolume>) -> Self {
        let volumes: Vec<VolumeState> = volumes
            .into_iter()
            .map(|volume| {
                let tokens = volume
                    .plan
                    .token_specs()
                    .map(|spec| TokenSlot {
                        request: TokenRequest {
                            namespace: volume.pod.namespace.clone(),
                            service_account: volume.pod.service_account.clone(),
                            audiences: spec.audience.iter().cloned().collect(),
                            expiration_seconds: spec.expiration_seconds,
                            // A volume without a pod name (a sidecar given no --bound-pod-name)
                            // asks for unbound tokens.
                            bound_pod: (!volume.pod.name.is_empty()).then(|| BoundPod {
                                name: volume.pod.name.clone(),
                                uid: volume.pod.uid.clone(),
                                node_name: volume.pod.node_name.clone(),
                            }),
                        },
                        path: spec.path.clone(),
                        grant: None,
                        failures: 0,
                        written_jti: None,
                        unpublished: false,
                        next_due: Timestamp::UNIX_EPOCH,
                        generation: 0,
                    })
                    .collect();
                VolumeState {
                    volume,
                    tokens,
                    write_failures: 0,
                }
            })
            .collect();
        let status: Vec<TokenStatus> = volumes
            .iter()
            .flat_map(|state: &VolumeState| {
                state.tokens.iter().map(|slot| TokenStatus {
                    volume: state.volume.plan.name.clone(),
                    dir: state.volume.writer.target_dir().to_path_buf(),
                    path: slot.path.clone(),
                    ..TokenStatus::default()
                })
            })
            .collect();
        let (control_tx, control_rx) = tokio::sync::mpsc::unbounded_channel();
        Self {
            source,
            clock,
            volumes,
            queue: BinaryHeap::new(),
            backoff: Backoff::default(),
            on_rotation: Vec::new(),
            control_tx,
            control_rx,
            status: Arc::new(std::sync::Mutex::new(status)),
        }
    }

    /// A handle to send [`Control`] requests to the running refresher.
    pub fn control(&self) -> tokio::sync::mpsc::UnboundedSender<Control> {
        self.control_tx.clone()
    }

    /// The status of every token, updated as the refresher works.
    pub fn status_board(&self) -> StatusBoard {
        self.status.clone()
    }

    /// Index into the status board of one token.
    fn status_index(&self, volume_index: usize, token_index: usize) -> usize {
        self.volumes[..volume_index]
            .iter()
            .map(|v| v.tokens.len())
            .sum::<usize>()
            + token_index
    }

    fn update_status(
        &self,
        volume_index: usize,
        token_index: usize,
        update: impl FnOnce(&mut TokenStatus),
    ) {
        let index = self.status_index(volume_index, token_index);
        let mut board = self
            .status
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(status) = board.get_mut(index) {
            update(status);
        }
    }

    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Calls `hook` after every successful rotation.
    pub fn on_rotation(mut self, hook: impl Fn(&RotationEvent) + Send + Sync + 'static) -> Self {
        self.on_rotation.push(Box::new(hook));
        self
    }

    /// Writes every volume once. A rejected request (a lifetime or binding the issuer refuses) is
    /// an error here, since retrying cannot fix it; nothing is written for that volume.
    pub async fn project_all(&mut self) -> Result<(), RefresherError> {
        self.project(false).await
    }

    /// Writes every volume once and fails on any failure, retryable or not (`--once`).
    pub async fn project_once(&mut self) -> Result<(), RefresherError> {
        self.project(true).await
    }

    /// Requests every token at once, then writes each volume whose tokens are all in hand.
    async fn project(&mut self, strict: bool) -> Result<(), RefresherError> {
        let all: Vec<(usize, usize)> = (0..self.volumes.len())
            .flat_map(|v| (0..self.volumes[v].tokens.len()).map(move |t| (v, t)))
            .collect();
        let results = self.refresh_batch(&all).await;
        for (&(volume_index, token_index), result) in all.iter().zip(results) {
            if let Err(err) = result {
                if strict || matches!(err, SourceError::Rejected(_)) {
                    let state = &self.volumes[volume_index];
                    return Err(RefresherError::Rejected {
                        volume: state.volume.plan.name.clone(),
                        path: state.tokens[token_index].path.clone(),
                        source: err,
                    });
                }
            }
        }
        for volume_index in 0..self.volumes.len() {
            self.write_volume(volume_index)
                .await
                .map_err(|message| RefresherError::Write {
                    volume: self.volumes[volume_index].volume.plan.name.clone(),
                    message,
                })?;
        }
        Ok(())
    }

    fn handle_control(&mut self, control: Control) -> Option<usize> {
        match control {
            Control::RefreshAll => {
                let now = self.clock.now();
                for volume_index in 0..self.volumes.len() {
                    for token_index in 0..self.volumes[volume_index].tokens.len() {
                        self.schedule(volume_index, token_index, now);
                    }
                }
                None
            }
            Control::RefreshPod { namespace, name } => {
                let now = self.clock.now();
                for volume_index in 0..self.volumes.len() {
                    let pod = &self.volumes[volume_index].volume.pod;
                    if pod.namespace == namespace && pod.name == name {
                        for token_index in 0..self.volumes[volume_index].tokens.len() {
                            self.schedule(volume_index, token_index, now);
                        }
                    }
                }
                None
            }
            // A volume whose last write failed already has a retry scheduled (with backoff) that
            // rewrites it whole. Restoring it now would retry at once, and that failed write's
            // own directory changes would ask again: a busy loop while the disk is full.
            Control::Rewrite { volume } => self
                .volumes
                .get(volume)
                .filter(|state| state.write_failures == 0)
                .map(|_| volume),
        }
    }

    /// Projects every volume, then keeps them fresh until `shutdown` completes. A write in
    /// progress when `shutdown` fires is finished first, so no temporary directory is left.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), RefresherError> {
        self.project_all().await?;
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            // Sleep until the earliest deadline (or forever when there is none), waking early
            // for a control request or shutdown: no polling.
            let wait = self
                .queue
                .peek()
                .map(|Reverse((deadline, ..))| deadline.duration_since(self.clock.now()))
                .map(|wait| Duration::try_from(wait).unwrap_or(Duration::ZERO));
            let sleep = async {
                match wait {
                    Some(wait) => tokio::time::sleep(wait).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = sleep => {}
                Some(control) = self.control_rx.recv() => {
                    let mut rewrite = BTreeSet::new();
                    rewrite.extend(self.handle_control(control));
                    // Watchers send bursts (a swap is several events): take them all at once.
                    while let Ok(control) = self.control_rx.try_recv() {
                        rewrite.extend(self.handle_control(control));
                    }
                    for volume in rewrite {
                        if let Err(message) = self.restore_volume(volume).await {
                            tracing::error!(volume = %self.volumes[volume].volume.plan.name, error = %message, "restoring the layout failed");
                        }
                    }
                    continue;
                }
                _ = &mut shutdown => return Ok(()),
            }
            let now = self.clock.now();
            let mut due = Vec::new();
            while let Some(Reverse((deadline, volume, token, generation))) =
                self.queue.peek().copied()
            {
                if deadline > now {
                    break;
                }
                self.queue.pop();
                if generation != self.volumes[volume].tokens[token].generation {
                    continue; // superseded by a later schedule of the same token
                }
                due.push((volume, token));
            }
            // Failures are logged and rescheduled with backoff inside; the old tokens stay.
            // Requests still waiting for their answers are abandoned on shutdown (nothing is
            // written before the answers arrive); a write, below, is always finished.
            tokio::select! {
                _ = self.refresh_batch(&due) => {}
                _ = &mut shutdown => return Ok(()),
            }
            let due_volumes: BTreeSet<usize> = due.iter().map(|(volume, _)| *volume).collect();
            for volume in due_volumes {
                if let Err(message) = self.write_volume(volume).await {
                    tracing::error!(volume = %self.volumes[volume].volume.plan.name, error = %message, "write failed; retrying");
                }
            }
        }
    }

    /// Requests the tokens of `due` concurrently (one slow or hanging answer holds up no other
    /// token), then records each answer and schedules each slot's next refresh or retry.
    /// Results are in the order of `due`.
    async fn refresh_batch(&mut self, due: &[(usize, usize)]) -> Vec<Result<(), SourceError>> {
        let mut tasks = tokio::task::JoinSet::new();
        for (index, &(volume_index, token_index)) in due.iter().enumerate() {
            let source = self.source.clone();
            let request = self.volumes[volume_index].tokens[token_index]
                .request
                .clone();
            tasks.spawn(async move { (index, source.request_token(&request).await) });
        }
        let mut answers: Vec<Option<Result<TokenGrant, SourceError>>> =
            due.iter().map(|_| None).collect();
        while let Some(joined) = tasks.join_next().await {
            if let Ok((index, answer)) = joined {
                answers[index] = Some(answer);
            }
        }
        due.iter()
            .zip(answers)
            .map(|(&(volume_index, token_index), answer)| {
                let answer = answer.unwrap_or_else(|| {
                    Err(SourceError::Unavailable(
                        "the token request task failed".into(),
                    ))
                });
                self.record_answer(volume_index, token_index, answer)
            })
            .collect()
    }

    /// Records one answer: a grant to publish with the next write, or a failure to retry.
    fn record_answer(
        &mut self,
        volume_index: usize,
        token_index: usize,
        result: Result<TokenGrant, SourceError>,
    ) -> Result<(), SourceError> {
        let now = self.clock.now();
        let state = &mut self.volumes[volume_index];
        let slot = &mut state.tokens[token_index];
        match result {
            Ok(grant) => {
                let next = grant.lifetime().refresh_at(fastrand::u8(0..JITTER_STEPS));
                slot.grant = Some(grant);
                slot.failures = 0;
                slot.unpublished = true;
                self.schedule(volume_index, token_index, next);
                self.update_status(volume_index, token_index, |status| {
                    status.successes += 1;
                    status.next_refresh = Some(next);
                });
                Ok(())
            }
            Err(err) => {
                slot.failures = slot.failures.saturating_add(1);
                // A server's Retry-After is a floor under our own backoff.
                let delay = self.backoff.delay(slot.failures, fastrand::f64());
                let delay = err.retry_after().map_or(delay, |floor| delay.max(floor));
                let retry = now.checked_add(delay).unwrap_or(now);
                let expired = slot
                    .grant
                    .as_ref()
                    .is_some_and(|g| now > g.expiration_timestamp);
                tracing::warn!(
                    volume = %state.volume.plan.name,
                    path = %slot.path,
                    error = %err,
                    failures = slot.failures,
                    retry_at = %retry,
                    kept_token = slot.grant.is_some() && !expired,
                    "token refresh failed{}",
                    if expired { "; the token on disk has expired" } else { "" }
                );
                self.schedule(volume_index, token_index, retry);
                self.update_status(volume_index, token_index, |status| {
                    *status.failures.entry(failure_reason(&err)).or_default() += 1;
                    status.last_error = Some(err.to_string());
                    status.last_error_at = Some(now);
                    status.next_refresh = Some(retry);
                });
                Err(err)
            }
        }
    }

    /// Puts back a volume someone else changed: clears crash-like leftovers, then rewrites it from
    /// the tokens in hand (an intact layout is left as it is).
    async fn restore_volume(&mut self, volume_index: usize) -> Result<(), String> {
        let report = self.volumes[volume_index]
            .volume
            .writer
            .recover()
            .map_err(|e| e.to_string())?;
        if !report.removed.is_empty() {
            tracing::warn!(volume = %self.volumes[volume_index].volume.plan.name, removed = ?report.removed, "cleaned a changed layout");
        }
        self.write_volume(volume_index).await
    }

    /// (Re)schedules one token; any earlier queue entry of it becomes stale.
    fn schedule(&mut self, volume_index: usize, token_index: usize, at: Timestamp) {
        let slot = &mut self.volumes[volume_index].tokens[token_index];
        slot.generation = slot.generation.wrapping_add(1);
        slot.next_due = at;
        self.queue
            .push(Reverse((at, volume_index, token_index, slot.generation)));
    }

    /// Writes one volume whole from the current grants (nothing if a token is missing).
    async fn write_volume(&mut self, volume_index: usize) -> Result<(), String> {
        let state = &mut self.volumes[volume_index];
        let tokens: Vec<Option<&str>> = state
            .tokens
            .iter()
            .map(|slot| slot.grant.as_ref().map(|g| g.token.as_str()))
            .collect();
        let Some(payload) = state.volume.plan.payload(&tokens) else {
            return Ok(()); // a token is still missing; its retry will write the volume
        };
        let writer = state.volume.writer.clone();
        let outcome = tokio::task::spawn_blocking(move || writer.write(&payload))
            .await
            .map_err(|e| format!("writer task failed: {e}"))
            .and_then(|r| r.map_err(|e| e.to_string()));
        let outcome = match outcome {
            Ok(outcome) => {
                state.write_failures = 0;
                outcome
            }
            Err(message) => {
                // Retry the whole volume after a backoff by re-queuing its tokens.
                state.write_failures = state.write_failures.saturating_add(1);
                let now = self.clock.now();
                let retry = now
                    .checked_add(self.backoff.delay(state.write_failures, fastrand::f64()))
                    .unwrap_or(now);
                for token_index in 0..state.tokens.len() {
                    self.schedule(volume_index, token_index, retry);
                    self.update_status(volume_index, token_index, |status| {
                        *status.failures.entry("write").or_default() += 1;
                        status.last_error = Some(message.clone());
                        status.last_error_at = Some(now);
                        status.next_refresh = Some(retry);
                    });
                }
                return Err(message);
            }
        };
        let WriteOutcome::Written { data_dir } = outcome else {
            return Ok(());
        };
        let state = &mut self.volumes[volume_index];
        let mut published = Vec::new();
        for (token_index, slot) in state.tokens.iter_mut().enumerate() {
            let Some(grant) = slot.grant.as_ref().filter(|_| slot.unpublished) else {
                continue;
            };
            published.push((token_index, grant.lifetime().ends_at));
            let next_refresh = slot.next_due;
            let event = RotationEvent {
                volume: state.volume.plan.name.clone(),
                dir: state.volume.writer.target_dir().to_path_buf(),
                path: slot.path.clone(),
                namespace: state.volume.pod.namespace.clone(),
                pod: state.volume.pod.name.clone(),
                service_account: state.volume.pod.service_account.clone(),
                old_jti: slot.written_jti.clone(),
                new_jti: grant.jti.clone(),
                issued_at: grant.jwt_issued_at,
                expires_at: grant.jwt_expiry,
                warn_after: grant.warn_after,
                status_expiration: grant.expiration_timestamp,
                next_refresh,
                data_dir: data_dir.clone(),
            };
            slot.written_jti = grant.jti.clone();
            slot.unpublished = false;
            for hook in &self.on_rotation {
                hook(&event);
            }
        }
        for (token_index, ends_at) in published {
            self.update_status(volume_index, token_index, |status| {
                status.written = true;
                status.expires_at = Some(ends_at);
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_full_jitter() {
        let backoff = Backoff::default();
        let secs = |s: f64| SignedDuration::from_secs_f64(s);
        // fraction 1.0 shows the ceiling: 1, 2, 4, ... capped at 60 s.
        assert_eq!(backoff.delay(1, 1.0), secs(1.0));
        assert_eq!(backoff.delay(2, 1.0), secs(2.0));
        assert_eq!(backoff.delay(6, 1.0), secs(32.0));
        assert_eq!(backoff.delay(7, 1.0), secs(60.0));
        assert_eq!(backoff.delay(1000, 1.0), secs(60.0));
        // Full jitter: anywhere from zero up to the ceiling.
        assert_eq!(backoff.delay(3, 0.0), SignedDuration::ZERO);
        assert_eq!(backoff.delay(3, 0.5), secs(2.0));
    }
}
