//! The refresher: one deadline queue for every token of every volume, as the kubelet's token
//! manager plus volume reconciler would act, without a thread or timer per token.
//!
//! The loop sleeps until the earliest deadline, takes every token that is due (in deadline order,
//! [`MAX_IN_FLIGHT`] volumes at a time: request, then rewrite the volume whole through the atomic
//! writer on a blocking thread), and schedules each token's next refresh by the kubelet's rule
//! with a fresh jitter (anywhere in the kubelet's range, not only its whole seconds). Every queue
//! operation is O(log n); there is no task or timer per token. Deadlines are wall-clock times
//! (the kubelet's rule is); `wall_clock` keeps them true when the wall clock steps.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;

use crate::clock::Clock;
use crate::projection::atomic_writer::DATA_DIR_NAME;
use crate::projection::{Found, Repair, WriteOutcome};
use crate::source::{BoundPod, SourceError, TokenGrant, TokenRequest, TokenSource};
use crate::token::refresh::{next_refresh, Occasion};

mod backoff;
mod first_projection;
pub mod heal;
mod jobs;
mod repairs;
mod rotation_event;
#[cfg(test)]
mod scheduler_tests;
mod status;
mod step_watch;
#[cfg(test)]
mod test_fixture;
mod volume;
mod wall_clock;
#[cfg(test)]
mod wall_clock_tests;

pub use backoff::Backoff;
pub use jobs::MAX_IN_FLIGHT;
use jobs::{Done, Jobs, WriteResult};
pub use repairs::RepairEvent;
use repairs::Repairs;
pub use rotation_event::RotationEvent;
use status::failure_reason;
pub use status::{StatusBoard, TokenStatus};
use step_watch::{steady_deadline, StepWatch};
pub use volume::ProjectedVolume;

/// Why the refresher stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RefresherError {
    #[error("volume {volume:?}, file {path:?}: {source}")]
    Rejected {
        volume: String,
        path: String,
        #[source]
        source: SourceError,
    },
    #[error("volume {volume}: {message}")]
    Write { volume: String, message: String },
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
    /// `next_due` on the monotonic clock, as it was when scheduled: a step of the wall clock
    /// back must not delay the refresh beyond it (see [`wall_clock`]).
    steady_due: Option<tokio::time::Instant>,
    generation: u64,
    /// When the slot first came due since its last publication (see `RotationEvent::scheduled_at`).
    due_since: Option<Timestamp>,
    /// Due: to be requested when its volume's turn comes.
    due: bool,
}

struct VolumeState {
    volume: ProjectedVolume,
    tokens: Vec<TokenSlot>,
    write_failures: u32,
    /// Where this volume's tokens start on the status board (O(1) lookups with 10k volumes).
    status_offset: usize,
    /// A request or write of this volume is in flight: its next turn waits for the end of it.
    busy: bool,
    /// Waiting in the ready queue.
    queued: bool,
    /// Recover the layout before the next write (someone else changed it).
    restore: bool,
    /// Recover the layout before the retry of a failed write: what made it fail may be
    /// something someone put in the directory (a foreign `..data`), which only `recover` removes.
    recover_on_retry: bool,
}

/// Told of every rotation (logs, the sidecar's rotation hooks, the emulator's ledger).
type RotationObserver = Box<dyn Fn(&RotationEvent) + Send + Sync>;

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

type QueueEntry = (Timestamp, usize, usize, u64);

/// Keeps every token of every volume fresh on disk.
pub struct Refresher<S> {
    source: Arc<S>,
    clock: Arc<dyn Clock>,
    volumes: Vec<VolumeState>,
    /// (deadline, volume index, token index, slot generation); earliest first.
    queue: BinaryHeap<Reverse<QueueEntry>>,
    backoff: Backoff,
    on_rotation: Vec<RotationObserver>,
    repairs: Repairs,
    control_tx: tokio::sync::mpsc::UnboundedSender<Control>,
    control_rx: tokio::sync::mpsc::UnboundedReceiver<Control>,
    status: StatusBoard,
    /// Tokens in all (the status board's length).
    status_len: usize,
    /// Spread the first refreshes (see [`Refresher::spread_start`]).
    spread_start: bool,
    /// Told how many volumes were written once the first projection is done.
    on_first_projection: Option<tokio::sync::oneshot::Sender<usize>>,
}

impl<S: TokenSource> Refresher<S> {
    pub fn new(source: Arc<S>, clock: Arc<dyn Clock>, volumes: Vec<ProjectedVolume>) -> Self {
        let mut status_offset = 0;
        let volumes: Vec<VolumeState> = volumes
            .into_iter()
            .map(|volume| {
                let mut tokens: Vec<TokenSlot> = volume
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
                        steady_due: None,
                        generation: 0,
                        due_since: None,
                        due: false,
                    })
                    .collect();
                // A volume has a token or two: `collect` reserves room for four (400 bytes
                // each), 12 MB of nothing at 10,000 volumes.
                tokens.shrink_to_fit();
                let state = VolumeState {
                    volume,
                    write_failures: 0,
                    status_offset,
                    busy: false,
                    queued: false,
                    restore: false,
                    recover_on_retry: false,
                    tokens,
                };
                status_offset += state.tokens.len();
                state
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
            repairs: Repairs::default(),
            control_tx,
            control_rx,
            status_len: status.len(),
            spread_start: false,
            status: Arc::new(std::sync::Mutex::new(status)),
            on_first_projection: None,
        }
    }

    /// `done` hears how many volumes were written once [`Refresher::run`]'s first projection is
    /// done: every volume holds its tokens (an in-process emulator waits for it).
    pub fn on_first_projection(mut self, done: tokio::sync::oneshot::Sender<usize>) -> Self {
        self.on_first_projection = Some(done);
        self
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
        self.volumes[volume_index].status_offset + token_index
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

    /// Spreads each token's first refresh over the second half of the span before its
    /// kubelet refresh time ([`Occasion::Granted`]), for a mass start: thousands
    /// of tokens written in the first seconds are otherwise all due again together, round after
    /// round, more than the projector can write on time. Later refreshes follow the kubelet's rule.
    pub fn spread_start(mut self) -> Self {
        self.spread_start = true;
        self
    }

    /// Calls `observer` after every successful rotation.
    pub fn on_rotation(
        mut self,
        observer: impl Fn(&RotationEvent) + Send + Sync + 'static,
    ) -> Self {
        self.on_rotation.push(Box::new(observer));
        self
    }

    /// Calls `observer` for every entry of a volume found changed behind the writer's back and
    /// put right (each is also logged).
    pub fn on_repair(mut self, observer: impl Fn(&RepairEvent) + Send + Sync + 'static) -> Self {
        self.repairs.observers.push(Box::new(observer));
        self
    }

    /// Repairs made before the refresher runs (start-up recovery, by volume index): logged and
    /// reported to the repair hooks when it starts.
    pub fn with_repairs_at_start(mut self, repairs: Vec<(usize, Repair)>) -> Self {
        self.repairs.at_start = repairs;
        self
    }

    /// Projects every volume, then keeps them fresh until `shutdown` completes. Tokens that
    /// fall due are taken in deadline order, [`MAX_IN_FLIGHT`] volumes at a time; each volume is
    /// requested, then written, while the others go on. On `shutdown`, requests waiting for their
    /// answers are abandoned (nothing is written before they arrive) and writes in progress are
    /// finished, so no temporary directory is left.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), RefresherError> {
        let started = std::time::Instant::now();
        // From the start, so a step during the first projection is noticed too.
        let mut steps = StepWatch::new(self.clock.as_ref());
        let mut shutdown = std::pin::pin!(shutdown);
        let Some(written) = self.project(false, &mut shutdown).await? else {
            return Ok(()); // shut down during the first projection
        };
        tracing::info!(
            volumes = self.volumes.len(),
            written,
            tokens = self.status_len,
            elapsed_ms = started.elapsed().as_millis(),
            "initial projection done"
        );
        if let Some(done) = self.on_first_projection.take() {
            // Nobody listening any more is not our failure.
            let _ = done.send(written);
        }
        let mut jobs = Jobs::default();
        // Volumes with due tokens (or a layout to restore), in the order they fell due.
        let mut ready: VecDeque<usize> = VecDeque::new();
        let sleep = tokio::time::sleep(Duration::ZERO);
        let mut sleep = std::pin::pin!(sleep);
        loop {
            self.notice_clock_step(&mut steps);
            self.collect_due(&mut ready);
            while jobs.has_room() {
                let Some(volume_index) = ready.pop_front() else {
                    break;
                };
                self.start(&mut jobs, volume_index);
            }
            // Sleep until the earliest deadline, or the next look at the wall clock (or until a
            // job ends, a control request or shutdown comes).
            let wake = self.next_wake();
            if let Some(wake) = wake {
                sleep.as_mut().reset(wake);
            }
            tokio::select! {
                _ = &mut shutdown => {
                    jobs.abort_requests();
                    while let Some(done) = jobs.next(self.clock.as_ref()).await {
                        if let Done::Written { volume, restored, result, at } = done {
                            let _ = self.finish_write(volume, restored, result, at);
                        }
                    }
                    return Ok(());
                }
                Some(done) = jobs.next(self.clock.as_ref()), if !jobs.is_empty() => {
                    self.job_done(&mut jobs, &mut ready, done);
                }
                Some(control) = self.control_rx.recv() => {
                    self.handle_control(control, &mut ready);
                    // Watchers send bursts (a swap is several events): take them all at once.
                    while let Ok(control) = self.control_rx.try_recv() {
                        self.handle_control(control, &mut ready);
                    }
                }
                _ = &mut sleep, if wake.is_some() => {}
            }
        }
    }

    /// Moves every token whose deadline has passed out of the queue and its volume into `ready`.
    fn collect_due(&mut self, ready: &mut VecDeque<usize>) {
        let now = self.clock.now();
        while let Some(Reverse((deadline, volume, token, generation))) = self.queue.peek().copied()
        {
            if deadline > now {
                break;
            }
            self.queue.pop();
            let slot = &mut self.volumes[volume].tokens[token];
            if generation != slot.generation {
                continue; // superseded by a later schedule of the same token
            }
            slot.due = true;
            slot.due_since.get_or_insert(deadline);
            self.enqueue(ready, volume);
        }
    }

    /// Puts a volume in line, unless it is already, or busy (its job's end puts it back).
    fn enqueue(&mut self, ready: &mut VecDeque<usize>, volume_index: usize) {
        let state = &mut self.volumes[volume_index];
        if !state.busy && !state.queued {
            state.queued = true;
            ready.push_back(volume_index);
        }
    }

    /// A volume's turn: request its due tokens, or (nothing due) restore its layout.
    fn start(&mut self, jobs: &mut Jobs, volume_index: usize) {
        let state = &mut self.volumes[volume_index];
        state.queued = false;
        let due: Vec<usize> = state
            .tokens
            .iter_mut()
            .enumerate()
            .filter_map(|(index, slot)| std::mem::take(&mut slot.due).then_some(index))
            .collect();
        if !due.is_empty() {
            self.request(jobs, volume_index, due);
        } else if state.restore {
            self.write(jobs, volume_index);
        }
    }

    fn request(&mut self, jobs: &mut Jobs, volume_index: usize, tokens: Vec<usize>) {
        let state = &mut self.volumes[volume_index];
        state.busy = true;
        let requests = tokens
            .into_iter()
            .map(|token| (token, state.tokens[token].request.clone()))
            .collect();
        jobs.request(&self.source, volume_index, requests);
    }

    /// Writes one volume whole from the current grants (see [`Jobs::write`]); nothing when a
    /// token is still missing (its retry writes the volume).
    fn write(&mut self, jobs: &mut Jobs, volume_index: usize) {
        let state = &mut self.volumes[volume_index];
        let tokens: Vec<Option<&str>> = state
            .tokens
            .iter()
            .map(|slot| slot.grant.as_ref().map(|g| g.token.as_str()))
            .collect();
        let Some(payload) = state.volume.plan.payload(&tokens) else {
            state.busy = false;
            return;
        };
        state.busy = true;
        let restore =
            std::mem::take(&mut state.restore) | std::mem::take(&mut state.recover_on_retry);
        let writer = state.volume.writer.clone();
        let in_memory = !writer.options().fsync;
        jobs.write(
            volume_index,
            restore,
            in_memory,
            self.clock.clone(),
            move || {
                let mut done = WriteResult::failed(String::new());
                if restore {
                    match writer.recover() {
                        Ok(report) => {
                            done.cleaned = report.removed;
                            done.repairs = report.repairs;
                        }
                        Err(e) => return WriteResult::failed(e.to_string()),
                    }
                }
                done.outcome = writer
                    .write_and_repair(&payload, &mut done.repairs)
                    .map_err(|e| e.to_string());
                done
            },
        );
    }

    /// Takes a finished job's results; a volume whose request ended goes on to its write.
    fn job_done(&mut self, jobs: &mut Jobs, ready: &mut VecDeque<usize>, done: Done) {
        let volume_index = match done {
            Done::Answers { volume, answers } => {
                for (token, answer) in answers {
                    // Failures are logged and rescheduled with backoff inside; old tokens stay.
                    let _ = self.record_answer(volume, token, answer);
                }
                let state = &self.volumes[volume];
                if state.restore || state.tokens.iter().any(|slot| slot.unpublished) {
                    self.write(jobs, volume);
                } else {
                    self.volumes[volume].busy = false;
                }
                volume
            }
            Done::Written {
                volume,
                restored,
                result,
                at,
            } => {
                if let Err(message) = self.finish_write(volume, restored, result, at) {
                    let what = if restored {
                        "restoring the layout failed; retrying"
                    } else {
                        "write failed; retrying"
                    };
                    tracing::error!(volume = %self.volumes[volume].volume.plan.name, error = %message, "{what}");
                }
                volume
            }
        };
        let state = &self.volumes[volume_index];
        if !state.busy && (state.restore || state.tokens.iter().any(|slot| slot.due)) {
            self.enqueue(ready, volume_index);
        }
    }

    fn handle_control(&mut self, control: Control, ready: &mut VecDeque<usize>) {
        let now = self.clock.now();
        match control {
            Control::RefreshAll => {
                for volume_index in 0..self.volumes.len() {
                    self.refresh_now(ready, volume_index, now);
                }
            }
            Control::RefreshPod { namespace, name } => {
                for volume_index in 0..self.volumes.len() {
                    let pod = &self.volumes[volume_index].volume.pod;
                    if pod.namespace == namespace && pod.name == name {
                        self.refresh_now(ready, volume_index, now);
                    }
                }
            }
            // A volume whose last write failed already has a retry scheduled (with backoff) that
            // rewrites it whole. Restoring it now would retry at once, and that failed write's
            // own directory changes would ask again: a busy loop while the disk is full.
            Control::Rewrite { volume } => {
                if let Some(state) = self
                    .volumes
                    .get_mut(volume)
                    .filter(|state| state.write_failures == 0)
                {
                    state.restore = true;
                    self.enqueue(ready, volume);
                }
            }
        }
    }

    /// Makes every token of a volume due now. A token whose request is in flight is requested
    /// again after it: the rotation asked for now may postdate the request.
    fn refresh_now(&mut self, ready: &mut VecDeque<usize>, volume_index: usize, now: Timestamp) {
        for slot in &mut self.volumes[volume_index].tokens {
            // The queued entry is superseded; the answer schedules the next one.
            slot.generation = slot.generation.wrapping_add(1);
            slot.due = true;
            slot.due_since.get_or_insert(now);
        }
        self.enqueue(ready, volume_index);
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
                // A slot's first token, with the start spread on: see `spread_start`.
                let occasion = Occasion::Granted {
                    token: &grant.lifetime(),
                    spread_start: self.spread_start && slot.grant.is_none(),
                };
                let next = next_refresh(occasion, now, fastrand::f64());
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

    /// (Re)schedules one token; any earlier queue entry of it becomes stale.
    fn schedule(&mut self, volume_index: usize, token_index: usize, at: Timestamp) {
        let wait = at.duration_since(self.clock.now());
        let slot = &mut self.volumes[volume_index].tokens[token_index];
        slot.generation = slot.generation.wrapping_add(1);
        slot.next_due = at;
        slot.steady_due = steady_deadline(wait);
        self.queue
            .push(Reverse((at, volume_index, token_index, slot.generation)));
        // Rescheduling leaves the superseded entry in the heap until its time comes; a burst of
        // "rotate everything now" could pile them up. Past twice the live count, drop them
        // (O(n), so amortised O(1) per schedule).
        if self.queue.len() > 2 * self.status_len + 64 {
            let volumes = &self.volumes;
            self.queue.retain(|Reverse((_, v, t, generation))| {
                volumes[*v].tokens[*t].generation == *generation
            });
        }
    }

    /// Takes a write's result: reports what it repaired, publishes the new grants (events,
    /// status) or schedules a retry of the whole volume after a backoff. `restored`: the layout
    /// was recovered first (someone changed the directory). `Ok(true)`: a new version was
    /// published.
    fn finish_write(
        &mut self,
        volume_index: usize,
        restored: bool,
        result: WriteResult,
        published_at: Timestamp,
    ) -> Result<bool, String> {
        let WriteResult {
            cleaned,
            mut repairs,
            outcome,
        } = result;
        let state = &mut self.volumes[volume_index];
        state.busy = false;
        // A restore that had to publish a new version although every token was already
        // published and nothing else was wrong: files of the version were changed in place.
        let rewritten = matches!(outcome, Ok(WriteOutcome::Written { .. }))
            && restored
            && repairs.is_empty()
            && !state.tokens.iter().any(|slot| slot.unpublished);
        if rewritten {
            repairs.push(Repair {
                name: DATA_DIR_NAME.to_owned(),
                found: Found::Modified,
            });
        }
        self.repairs.report(&state.volume, repairs);
        let outcome = match outcome {
            Ok(outcome) => {
                state.write_failures = 0;
                if !cleaned.is_empty() {
                    tracing::warn!(volume = %state.volume.plan.name, removed = ?cleaned, "cleaned a changed layout");
                }
                outcome
            }
            Err(message) => {
                // Retry the whole volume after a backoff by re-queuing its tokens, recovering the
                // layout first. A restore asked for meanwhile (the failed write's own changes,
                // seen by the watcher) must not retry it at once: while the disk is full that
                // would be a busy loop.
                state.write_failures = state.write_failures.saturating_add(1);
                state.restore = false;
                state.recover_on_retry = true;
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
            return Ok(false);
        };
        let state = &mut self.volumes[volume_index];
        let mut published = Vec::new();
        for (token_index, slot) in state.tokens.iter_mut().enumerate() {
            let Some(grant) = slot.grant.as_ref().filter(|_| slot.unpublished) else {
                continue;
            };
            published.push((token_index, grant.lifetime().ends_at));
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
                next_refresh: slot.next_due,
                data_dir: data_dir.clone(),
                scheduled_at: slot.due_since.take(),
                published_at,
            };
            slot.written_jti = grant.jti.clone();
            slot.unpublished = false;
            for observer in &self.on_rotation {
                observer(&event);
            }
        }
        for (token_index, ends_at) in published {
            self.update_status(volume_index, token_index, |status| {
                status.written = true;
                status.expires_at = Some(ends_at);
            });
        }
        Ok(true)
    }
}
