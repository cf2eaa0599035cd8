//! Rotation hooks: what the sidecar does after each successful write, so the application picks up
//! the new token: signal a process, run a command, or POST the rotation to a URL.
//!
//! A hook never sees the token, only the [`RotationEvent`] (where the token is, when it expires).
//! A failing hook is logged and counted, never returned as an error: refreshing must go on.
//!
//! Each kind of hook is its own module (`signal`, `exec`, `http`); this one holds the list
//! of hooks, runs them in order, counts their outcomes and queues rotations for a worker task.
//! The kinds import nothing from here.

mod exec;
mod http;
mod signal;
#[cfg(test)]
mod test_support;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustix::process::Signal;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::refresher::RotationEvent;

pub use self::exec::exec_command;
pub use self::signal::{parse_signal, signal_name, SignalTarget};

/// One action to take after each rotation.
#[derive(Debug, Clone)]
pub enum Hook {
    Signal {
        target: SignalTarget,
        signal: Signal,
    },
    /// An argv run without a shell, in its own process group; the whole group is killed if it
    /// outlives `timeout`.
    Exec {
        command: Vec<String>,
        timeout: Duration,
    },
    /// POSTs the [`RotationEvent`] as JSON; any status but 2xx is a failure.
    Http {
        url: reqwest::Url,
        timeout: Duration,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HookKind {
    Signal,
    Exec,
    Http,
}

impl HookKind {
    pub fn as_str(self) -> &'static str {
        match self {
            HookKind::Signal => "signal",
            HookKind::Exec => "exec",
            HookKind::Http => "http",
        }
    }

    fn slot(self) -> usize {
        match self {
            HookKind::Signal => 0,
            HookKind::Exec => 1,
            HookKind::Http => 2,
        }
    }
}

impl Hook {
    pub fn kind(&self) -> HookKind {
        match self {
            Hook::Signal { .. } => HookKind::Signal,
            Hook::Exec { .. } => HookKind::Exec,
            Hook::Http { .. } => HookKind::Http,
        }
    }
}

/// For logs. Exec shows only the program (arguments may carry secrets); HTTP drops the URL's
/// credentials and query for the same reason.
impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hook::Signal {
                target: SignalTarget::Pid(pid),
                signal,
            } => write!(f, "signal {} to pid {pid}", signal_name(*signal)),
            Hook::Signal {
                target: SignalTarget::PidFile(path),
                signal,
            } => write!(
                f,
                "signal {} to the pid in {}",
                signal_name(*signal),
                path.display()
            ),
            Hook::Exec { command, .. } => match command.first() {
                Some(program) => write!(f, "exec {program}"),
                None => f.write_str("exec (empty command)"),
            },
            Hook::Http { url, .. } => write!(f, "POST {}", http::loggable_url(url)),
        }
    }
}

/// What one hook did for one rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookOutcome {
    /// Position of the hook in the runner's list.
    pub index: usize,
    pub kind: HookKind,
    /// Why it failed; `None` if it succeeded.
    pub error: Option<String>,
}

/// What every hook did for one rotation, in the runner's order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HookReport {
    pub outcomes: Vec<HookOutcome>,
}

impl HookReport {
    pub fn succeeded(&self) -> usize {
        self.outcomes.iter().filter(|o| o.error.is_none()).count()
    }

    pub fn failed(&self) -> usize {
        self.outcomes.len() - self.succeeded()
    }
}

/// Totals by hook kind since the runner was created, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HookCounts {
    pub signal: u64,
    pub exec: u64,
    pub http: u64,
}

#[derive(Default)]
struct Counters([AtomicU64; 3]);

impl Counters {
    fn add(&self, kind: HookKind) {
        self.0[kind.slot()].fetch_add(1, Ordering::Relaxed);
    }

    fn get(&self) -> HookCounts {
        HookCounts {
            signal: self.0[0].load(Ordering::Relaxed),
            exec: self.0[1].load(Ordering::Relaxed),
            http: self.0[2].load(Ordering::Relaxed),
        }
    }
}

/// Runs the configured hooks for each rotation. `Send + Sync`; share it in an [`Arc`].
pub struct HookRunner {
    hooks: Vec<Hook>,
    client: reqwest::Client,
    successes: Counters,
    failures: Counters,
}

impl fmt::Debug for HookRunner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HookRunner")
            .field("hooks", &self.hooks)
            .field("successes", &self.successes.get())
            .field("failures", &self.failures.get())
            .finish_non_exhaustive()
    }
}

impl HookRunner {
    /// `http_client` is used for every HTTP hook (its proxy, TLS and redirect settings apply);
    /// each hook's own timeout bounds its request.
    pub fn new(hooks: Vec<Hook>, http_client: reqwest::Client) -> Self {
        Self {
            hooks,
            client: http_client,
            successes: Counters::default(),
            failures: Counters::default(),
        }
    }

    pub fn hooks(&self) -> &[Hook] {
        &self.hooks
    }

    /// Runs every hook for one rotation, one after another in the configured order (so a user
    /// can rely on it, e.g. a command before a signal). Never fails: a failure is logged, naming
    /// the hook and the reason, counted, and the next hook runs.
    pub async fn run(&self, event: &RotationEvent) -> HookReport {
        let mut outcomes = Vec::with_capacity(self.hooks.len());
        for (index, hook) in self.hooks.iter().enumerate() {
            let result = match hook {
                Hook::Signal { target, signal } => signal::send_signal(target, *signal).await,
                Hook::Exec { command, timeout } => {
                    exec::run_exec(index, command, *timeout, event).await
                }
                Hook::Http { url, timeout } => {
                    http::post_rotation(&self.client, url, *timeout, event).await
                }
            };
            let kind = hook.kind();
            match &result {
                Ok(()) => {
                    self.successes.add(kind);
                    tracing::debug!(hook = index, action = %hook, volume = %event.volume, path = %event.path, "rotation hook succeeded");
                }
                Err(reason) => {
                    self.failures.add(kind);
                    tracing::warn!(hook = index, action = %hook, volume = %event.volume, path = %event.path, error = %reason, "rotation hook failed");
                }
            }
            outcomes.push(HookOutcome {
                index,
                kind,
                error: result.err(),
            });
        }
        HookReport { outcomes }
    }

    /// Failed hook runs by kind.
    pub fn failures(&self) -> HookCounts {
        self.failures.get()
    }

    /// Successful hook runs by kind.
    pub fn successes(&self) -> HookCounts {
        self.successes.get()
    }

    /// Starts a task that runs the hooks for each submitted event in submission order, one
    /// rotation at a time, so a slow hook delays later hooks but never the refresher, and runs
    /// for two rotations never overlap. The task ends once every [`HookQueue`] is dropped and
    /// the queued events are done. Must be called within a Tokio runtime.
    pub fn spawn_worker(self: Arc<Self>) -> (HookQueue, JoinHandle<()>) {
        // Unbounded: rotations come minutes apart per token, and `submit` must not block the
        // refresher's synchronous rotation callback.
        let (sender, mut receiver) = mpsc::unbounded_channel::<RotationEvent>();
        let worker = tokio::spawn(async move {
            while let Some(event) = receiver.recv().await {
                self.run(&event).await;
            }
        });
        (HookQueue { sender }, worker)
    }
}

/// Hands rotations to a [`HookRunner::spawn_worker`] task without waiting; cheap to clone.
#[derive(Debug, Clone)]
pub struct HookQueue {
    sender: mpsc::UnboundedSender<RotationEvent>,
}

impl HookQueue {
    /// Queues one rotation; `false` if the worker has stopped (the event is dropped).
    pub fn submit(&self, event: RotationEvent) -> bool {
        self.sender.send(event).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::{event, exec, lines, runner, sh, PATIENCE};
    use super::*;

    #[test]
    fn logged_urls_drop_credentials_and_query() {
        let url =
            reqwest::Url::parse("http://user:secret@127.0.0.1:9/hook?key=abc#x").expect("url");
        let hook = Hook::Http {
            url,
            timeout: Duration::from_secs(1),
        };
        assert_eq!(hook.to_string(), "POST http://127.0.0.1:9/hook");
        let hook = exec(
            vec!["reload".into(), "--password=hunter2".into()],
            Duration::from_secs(1),
        );
        assert_eq!(hook.to_string(), "exec reload");
    }

    #[test]
    fn runner_is_shareable() {
        fn shareable<T: Send + Sync + 'static>() {}
        shareable::<HookRunner>();
        shareable::<HookQueue>();
    }

    #[tokio::test]
    async fn the_worker_runs_queued_rotations_in_order_then_stops() {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = dir.path().join("out");
        let runner = Arc::new(runner(vec![exec(
            sh(r#"echo "$PROJECTED_TOKEN_NEXT_REFRESH" >> "$0""#, &[&out]),
            PATIENCE,
        )]));
        let (queue, worker) = runner.clone().spawn_worker();
        let events: Vec<RotationEvent> = (0..3).map(|n| event(dir.path(), n)).collect();
        for event in &events {
            assert!(queue.submit(event.clone()));
        }
        drop(queue);
        tokio::time::timeout(PATIENCE, worker)
            .await
            .expect("the worker drains its queue and stops")
            .expect("the worker does not panic");
        let expected: Vec<String> = events.iter().map(|e| e.next_refresh.to_string()).collect();
        assert_eq!(lines(&out), expected);
        assert_eq!(runner.successes().exec, 3);
    }
}
