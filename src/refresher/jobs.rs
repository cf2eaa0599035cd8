//! The refresher's work in flight: token requests (polled by the refresher's task, abandoned on
//! shutdown: nothing is written before their answers arrive) and volume writes (on blocking
//! threads, or inline when they never wait for a disk; always finished, so no temporary
//! directory is left behind), at most
//! [`MAX_IN_FLIGHT`] at once.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use jiff::Timestamp;
use tokio::task::{Id, JoinSet};

use crate::clock::Clock;
use crate::projection::{Repair, WriteOutcome};
use crate::source::{SourceError, TokenGrant, TokenRequest, TokenSource};

/// Volumes being requested or written at once, at most. Enough to overlap signing on both cores
/// with fsync waits; few enough that a burst of thousands of due tokens neither monopolises the
/// runtime the API server shares nor starts a blocking thread per write.
pub const MAX_IN_FLIGHT: usize = 8;

/// The answers for some tokens of one volume, by token index.
pub type Answers = Vec<(usize, Result<TokenGrant, SourceError>)>;

/// What a write did.
#[derive(Debug)]
pub struct WriteResult {
    /// What `recover` removed, when the layout was restored first.
    pub cleaned: Vec<String>,
    /// Entries found changed behind the writer's back and put right (by `recover` and by the
    /// write), also when the write failed afterwards.
    pub repairs: Vec<Repair>,
    pub outcome: Result<WriteOutcome, String>,
}

impl WriteResult {
    pub fn failed(message: String) -> Self {
        Self {
            cleaned: Vec::new(),
            repairs: Vec::new(),
            outcome: Err(message),
        }
    }
}

/// A finished job.
pub enum Done {
    Answers {
        volume: usize,
        answers: Answers,
    },
    Written {
        volume: usize,
        /// The layout was recovered before the write (a `Control::Rewrite`).
        restored: bool,
        result: WriteResult,
        /// When the write finished: the moment the new version was published.
        at: Timestamp,
    },
}

/// A volume's token requests, polled by the refresher's own task: a local issuer signs right
/// there (no task hand-off, no runtime worker busy signing), an HTTP source's answers arrive
/// concurrently all the same.
struct RequestJob {
    volume: usize,
    tokens: Vec<usize>,
    answers: Pin<Box<dyn Future<Output = Answers> + Send>>,
}

#[derive(Default)]
pub struct Jobs {
    requests: Vec<RequestJob>,
    /// Writes already done on the refresher's own thread, waiting to be taken by `next`.
    finished: VecDeque<Done>,
    writes: JoinSet<Done>,
    /// Volume and `restored` of each write in flight, to report one whose thread panicked.
    running_writes: HashMap<Id, (usize, bool)>,
}

impl Jobs {
    pub fn len(&self) -> usize {
        self.requests.len() + self.running_writes.len() + self.finished.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn has_room(&self) -> bool {
        self.len() < MAX_IN_FLIGHT
    }

    /// Requests `requests` (tokens of volume `volume`) from `source`, all at once: one slow
    /// answer holds up no other token of the volume.
    pub fn request<S: TokenSource>(
        &mut self,
        source: &Arc<S>,
        volume: usize,
        requests: Vec<(usize, TokenRequest)>,
    ) {
        let tokens = requests.iter().map(|(token, _)| *token).collect();
        let answers = requests.into_iter().map(|(token, request)| {
            let source = source.clone();
            Box::pin(async move { (token, source.request_token(&request).await) })
                as Pin<Box<dyn Future<Output = (usize, Result<TokenGrant, SourceError>)> + Send>>
        });
        self.requests.push(RequestJob {
            volume,
            tokens,
            answers: Box::pin(join_all(answers.collect())),
        });
    }

    /// Runs `write` on a blocking thread (file I/O and fsync must not stall the runtime), or
    /// right here when `in_memory`: a write that never waits for a disk (no fsync) is some 60
    /// system calls on memory, cheaper than the two thread hand-offs it would take.
    pub fn write(
        &mut self,
        volume: usize,
        restored: bool,
        in_memory: bool,
        clock: Arc<dyn Clock>,
        write: impl FnOnce() -> WriteResult + Send + 'static,
    ) {
        if in_memory {
            let result = write();
            self.finished.push_back(Done::Written {
                volume,
                restored,
                result,
                at: clock.now(),
            });
            return;
        }
        let handle = self.writes.spawn_blocking(move || {
            let result = write();
            Done::Written {
                volume,
                restored,
                result,
                at: clock.now(),
            }
        });
        self.running_writes.insert(handle.id(), (volume, restored));
    }

    /// The next finished job, or `None` when none is running. A request or write that panicked
    /// is reported as failed (so its volume is retried, not forgotten).
    pub async fn next(&mut self, clock: &dyn Clock) -> Option<Done> {
        std::future::poll_fn(|cx| self.poll_next(cx, clock)).await
    }

    fn poll_next(&mut self, cx: &mut Context<'_>, clock: &dyn Clock) -> Poll<Option<Done>> {
        if let Some(done) = self.finished.pop_front() {
            return Poll::Ready(Some(done));
        }
        for index in 0..self.requests.len() {
            let job = &mut self.requests[index];
            let polled =
                std::panic::catch_unwind(AssertUnwindSafe(|| job.answers.as_mut().poll(cx)));
            let answers = match polled {
                Ok(Poll::Pending) => continue,
                Ok(Poll::Ready(answers)) => answers,
                Err(_) => job
                    .tokens
                    .iter()
                    .map(|&token| {
                        let why = "the token request panicked".to_owned();
                        (token, Err(SourceError::Unavailable(why)))
                    })
                    .collect(),
            };
            let job = self.requests.swap_remove(index);
            return Poll::Ready(Some(Done::Answers {
                volume: job.volume,
                answers,
            }));
        }
        if let Poll::Ready(Some(joined)) = self.writes.poll_join_next_with_id(cx) {
            let done = match joined {
                Ok((id, done)) => {
                    self.running_writes.remove(&id);
                    done
                }
                Err(err) => {
                    let (volume, restored) =
                        self.running_writes.remove(&err.id()).unwrap_or_default();
                    Done::Written {
                        volume,
                        restored,
                        result: WriteResult::failed(format!("writer task failed: {err}")),
                        at: clock.now(),
                    }
                }
            };
            return Poll::Ready(Some(done));
        }
        if self.is_empty() {
            Poll::Ready(None)
        } else {
            Poll::Pending
        }
    }

    /// Abandons every request in flight (on shutdown); writes run to their end.
    pub fn abort_requests(&mut self) {
        self.requests.clear();
    }
}

/// Every future's output, in their order; all polled together.
async fn join_all<T>(futures: Vec<Pin<Box<dyn Future<Output = T> + Send>>>) -> Vec<T> {
    let mut futures: Vec<Option<Pin<Box<dyn Future<Output = T> + Send>>>> =
        futures.into_iter().map(Some).collect();
    let mut outputs: Vec<Option<T>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if let Some(running) = future {
                match running.as_mut().poll(cx) {
                    Poll::Ready(value) => {
                        *output = Some(value);
                        *future = None;
                    }
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}
