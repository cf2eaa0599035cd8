//! `watch DIR`: follow a projected directory as a client library does and print its events.
//!
//! Wakes on inotify events for the directory (recursively, so writes through a link into a
//! version directory are seen too), or on a timer when polling; each wake-up reads one
//! [`Snapshot`] and the [`Tracker`] decides what changed. While the directory does not exist,
//! its parent is watched instead.
//!
//! Exit codes: 0 at `--count` rotations, at `--timeout` without `--count`, or on SIGTERM/SIGINT;
//! 1 when `--timeout` passes before `--count` rotations, or with `--strict` after any error
//! event or inconsistent change; 2 for bad arguments.

use std::ffi::OsString;
use std::future::Future;
use std::io::Write as _;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use jiff::Timestamp;
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;

use super::shared::{shutdown_signal, CommandError};
use crate::cli::{OutputFormat, WatchArgs};
use crate::projection::paths::{clean_path, validate_path};
use crate::watch::{exec_env, render_text, snapshot, Event, Snapshot, TokenState, Tracker};

/// How long a broken layout must last to be reported: the kubelet's own writes pass through
/// states a reader could catch (links created just after the first swap, links of removed
/// names dangling until step 11), each for well under this.
const SETTLE: Duration = Duration::from_millis(100);

pub async fn run(args: WatchArgs) -> Result<(), CommandError> {
    validate_path(&args.token_path)
        .map_err(|e| CommandError::usage(format!("--token-path {:?}: {e}", args.token_path)))?;
    let token_path = clean_path(&args.token_path);
    let exec = match &args.exec {
        None => None,
        Some(command) => {
            let argv: Vec<String> = command.split_whitespace().map(str::to_owned).collect();
            if argv.is_empty() {
                return Err(CommandError::usage(
                    "--exec is empty; give a command, e.g. --exec ./on-rotation.sh",
                ));
            }
            Some(argv)
        }
    };
    let dir = std::path::absolute(&args.dir)
        .map_err(|e| CommandError::usage(format!("DIR {}: {e}", args.dir.display())))?;
    let shutdown = shutdown_signal()?;
    tokio::pin!(shutdown);
    let deadline = args
        .timeout
        .and_then(|t| Duration::try_from(t).ok())
        .map(|t| tokio::time::Instant::now() + t);
    let poll_interval = Duration::try_from(args.poll_interval).unwrap_or(Duration::from_secs(1));

    let mut wakeups = if args.poll {
        Wakeups::poll(poll_interval)
    } else {
        Wakeups::inotify(poll_interval)
    };

    let (exec_queue, exec_worker) = match exec {
        Some(argv) => {
            let timeout = Duration::try_from(args.exec_timeout).unwrap_or(Duration::from_secs(30));
            let (queue, worker) = spawn_exec_worker(argv, timeout, dir.clone(), &token_path);
            (Some(queue), Some(worker))
        }
        None => (None, None),
    };
    let mut output = Output {
        format: args.output,
        exec: exec_queue,
        rotations: 0,
        problems: 0,
    };

    let watching = Watching {
        dir: &dir,
        token_path: &token_path,
        count: args.count,
        deadline,
    };
    let result = match watching
        .follow(&mut wakeups, &mut output, shutdown.as_mut())
        .await
    {
        Ok(End::Timeout) => match args.count {
            Some(n) => Err(CommandError::failure(format!(
                "--timeout {:#} passed after {} of {n} rotations (--count {n})",
                args.timeout.unwrap_or_default(),
                output.rotations,
            ))),
            None => Ok(()),
        },
        Ok(End::Counted | End::Signal) => Ok(()),
        Err(e) => Err(e),
    };

    // Let queued --exec runs finish, so a script sees every one before we exit.
    drop(output.exec.take());
    if let Some(worker) = exec_worker {
        let _ = worker.await;
    }
    result?;
    if args.strict && output.problems > 0 {
        return Err(CommandError::failure(format!(
            "--strict: {} error event(s) or inconsistent change(s) seen",
            output.problems
        )));
    }
    Ok(())
}

/// Why following the directory ended.
enum End {
    /// `--count` rotations seen.
    Counted,
    /// SIGTERM or SIGINT.
    Signal,
    /// `--timeout` passed.
    Timeout,
}

/// What to follow, and until when.
struct Watching<'a> {
    dir: &'a Path,
    token_path: &'a str,
    count: Option<u64>,
    deadline: Option<tokio::time::Instant>,
}

impl Watching<'_> {
    /// Reads the directory at each wake-up and emits the tracker's events, until `--count`
    /// rotations, the deadline or a signal. Waiting for a wake-up and reading both give way to
    /// the signal and the deadline, so neither a file that cannot be read without waiting nor a
    /// stream of events keeps the process from ending when it should.
    async fn follow(
        &self,
        wakeups: &mut Wakeups,
        output: &mut Output,
        mut shutdown: Pin<&mut impl Future<Output = ()>>,
    ) -> Result<End, CommandError> {
        let mut tracker = Tracker::new();
        // Watch before the first read, so a change right after it still wakes us.
        wakeups.follow(self.dir, self.dir.is_dir());
        let read = read_settled(self.dir, self.token_path, &tracker);
        let first = match self.unless_stopped(read, shutdown.as_mut()).await {
            Ok(snapshot) => snapshot,
            Err(end) => return Ok(end),
        };
        if wakeups.follow(self.dir, first.exists) {
            wakeups.wake_now();
        }
        log_start(self.dir, &first, wakeups);
        output.emit(tracker.start(&first, now()))?;
        loop {
            if self.count.is_some_and(|n| output.rotations >= n) {
                return Ok(End::Counted);
            }
            if let Err(end) = self.unless_stopped(wakeups.next(), shutdown.as_mut()).await {
                return Ok(end);
            }
            let read = read_settled(self.dir, self.token_path, &tracker);
            let snapshot = match self.unless_stopped(read, shutdown.as_mut()).await {
                Ok(snapshot) => snapshot,
                Err(end) => return Ok(end),
            };
            // The directory appeared or went: move the watch before reading again, so nothing
            // that happens in between is missed.
            if wakeups.follow(self.dir, snapshot.exists) {
                wakeups.wake_now();
            }
            output.emit(tracker.observe(&snapshot, now()))?;
        }
    }

    /// `work`, unless a signal or the deadline comes first (checked first, so a busy directory
    /// cannot starve them).
    async fn unless_stopped<T>(
        &self,
        work: impl Future<Output = T>,
        shutdown: Pin<&mut impl Future<Output = ()>>,
    ) -> Result<T, End> {
        tokio::select! {
            biased;
            () = shutdown => Err(End::Signal),
            () = sleep_until(self.deadline) => Err(End::Timeout),
            value = work => Ok(value),
        }
    }
}

fn now() -> Timestamp {
    let now = Timestamp::now();
    now.round(jiff::Unit::Millisecond).unwrap_or(now)
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// A snapshot, read again after [`SETTLE`] when it shows errors: only lasting ones count.
async fn read_settled(dir: &Path, token_path: &str, tracker: &Tracker) -> Snapshot {
    let snapshot = read(dir, token_path).await;
    if snapshot.errors(tracker.had_token()).is_empty() {
        return snapshot;
    }
    tokio::time::sleep(SETTLE).await;
    read(dir, token_path).await
}

async fn read(dir: &Path, token_path: &str) -> Snapshot {
    let (dir_owned, path_owned) = (dir.to_path_buf(), token_path.to_owned());
    match tokio::task::spawn_blocking(move || snapshot::read(&dir_owned, &path_owned)).await {
        Ok(snapshot) => snapshot,
        // Only a panic in the reader gets here; read on this thread rather than stop watching.
        Err(_) => snapshot::read(dir, token_path),
    }
}

fn log_start(dir: &Path, snapshot: &Snapshot, wakeups: &Wakeups) {
    let how = wakeups.describe();
    let fmt = |t: Option<Timestamp>| t.map_or_else(|| "-".to_owned(), |t| t.to_string());
    match &snapshot.token {
        TokenState::Valid(token) => tracing::info!(
            dir = %dir.display(),
            how,
            jti = token.jti.as_deref().unwrap_or("-"),
            iat = %fmt(token.issued_at),
            exp = %fmt(token.expires_at),
            warnafter = %fmt(token.warn_after),
            data_dir = snapshot.version().unwrap_or("-"),
            "watching; current token"
        ),
        _ if !snapshot.exists => tracing::info!(
            dir = %dir.display(),
            how,
            "watching; the directory does not exist yet"
        ),
        _ => tracing::info!(
            dir = %dir.display(),
            how,
            token = %snapshot.token_path,
            "watching; no token yet"
        ),
    }
}

/// Where events go: standard output, and the --exec queue.
struct Output {
    format: OutputFormat,
    exec: Option<mpsc::UnboundedSender<Event>>,
    rotations: u64,
    problems: u64,
}

impl Output {
    fn emit(&mut self, events: Vec<Event>) -> Result<(), CommandError> {
        let mut stdout = std::io::stdout().lock();
        for event in events {
            let line = match self.format {
                OutputFormat::Text => render_text(&event),
                OutputFormat::Json => serde_json::to_string(&event).map_err(|e| {
                    CommandError::failure(format!("cannot serialise an event: {e}"))
                })?,
            };
            writeln!(stdout, "{line}")
                .and_then(|()| stdout.flush())
                .map_err(|e| {
                    CommandError::failure(format!("cannot write to standard output: {e}"))
                })?;
            self.rotations += u64::from(event.is_rotation());
            self.problems += u64::from(event.is_problem());
            if let Some(queue) = &self.exec {
                let _ = queue.send(event);
            }
        }
        Ok(())
    }
}

/// Runs --exec for each event in order, one at a time, so a slow command delays later runs
/// but never watching. Ends when the queue is dropped and drained.
fn spawn_exec_worker(
    argv: Vec<String>,
    timeout: Duration,
    dir: PathBuf,
    token_path: &str,
) -> (mpsc::UnboundedSender<Event>, tokio::task::JoinHandle<()>) {
    let (sender, mut receiver) = mpsc::unbounded_channel::<Event>();
    let token_file = dir.join(token_path);
    let worker = tokio::spawn(async move {
        while let Some(event) = receiver.recv().await {
            let mut env: Vec<(&'static str, OsString)> = vec![
                ("PROJECTED_TOKEN_DIR", dir.clone().into_os_string()),
                ("PROJECTED_TOKEN_PATH", token_file.clone().into_os_string()),
            ];
            env.extend(
                exec_env(&event)
                    .into_iter()
                    .map(|(name, value)| (name, OsString::from(value))),
            );
            if let Err(reason) = crate::hooks::exec_command(0, &argv, timeout, env).await {
                tracing::warn!(event = event.kind(), error = %reason, "--exec failed");
            }
        }
    });
    (sender, worker)
}

/// What wakes the loop: inotify events, or a timer.
enum Wakeups {
    Inotify {
        watcher: RecommendedWatcher,
        events: mpsc::UnboundedReceiver<()>,
        sender: mpsc::UnboundedSender<()>,
        /// What is watched now: the directory (recursively) or, while it is missing, its parent;
        /// with the directory's inode, to notice one removed and made again between two looks
        /// (the kernel drops the watch of a removed directory).
        watching: Option<(PathBuf, Option<(u64, u64)>)>,
        /// Used if watching fails later.
        poll_interval: Duration,
    },
    Poll {
        interval: tokio::time::Interval,
    },
}

impl Wakeups {
    fn poll(period: Duration) -> Self {
        let mut interval = tokio::time::interval(period);
        // A late tick (a slow --exec, a busy machine) is followed by one read, not a burst.
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Wakeups::Poll { interval }
    }

    /// inotify through notify, or polling (with a warning) when it cannot start.
    fn inotify(poll_interval: Duration) -> Self {
        let (sender, events) = mpsc::unbounded_channel();
        let tx = sender.clone();
        let handler = move |event: notify::Result<notify::Event>| {
            // Opening and reading (our own reads included) is no change; an error (e.g. a
            // queue overflow) is a reason to look.
            if event.is_ok_and(|e| matches!(e.kind, EventKind::Access(_))) {
                return;
            }
            let _ = tx.send(());
        };
        match notify::recommended_watcher(handler) {
            Ok(watcher) => Wakeups::Inotify {
                watcher,
                events,
                sender,
                watching: None,
                poll_interval,
            },
            Err(e) => {
                tracing::warn!(error = %e, interval = ?poll_interval, "inotify is unavailable; polling instead");
                Self::poll(poll_interval)
            }
        }
    }

    fn describe(&self) -> &'static str {
        match self {
            Wakeups::Inotify { .. } => "inotify",
            Wakeups::Poll { .. } => "polling",
        }
    }

    /// Waits for the next reason to read the directory. A burst of inotify events (a swap is
    /// several) makes one wake-up.
    async fn next(&mut self) {
        match self {
            Wakeups::Inotify { events, .. } => {
                if events.recv().await.is_none() {
                    // Cannot happen while we hold a sender; never spin if it does.
                    std::future::pending::<()>().await;
                }
                while events.try_recv().is_ok() {}
            }
            Wakeups::Poll { interval, .. } => {
                interval.tick().await;
            }
        }
    }

    /// Makes the next [`Wakeups::next`] return at once.
    fn wake_now(&mut self) {
        match self {
            Wakeups::Inotify { sender, .. } => {
                let _ = sender.send(());
            }
            Wakeups::Poll { interval, .. } => interval.reset_immediately(),
        }
    }

    /// Watches `dir` when it exists, else its parent (to see it appear). Returns whether the
    /// watch moved. A watch that cannot be set up turns this into polling, with a warning.
    fn follow(&mut self, dir: &Path, exists: bool) -> bool {
        let Wakeups::Inotify {
            watcher,
            watching,
            poll_interval,
            ..
        } = self
        else {
            return false;
        };
        let (target, mode) = match (exists, dir.parent()) {
            (true, _) => (dir, RecursiveMode::Recursive),
            (false, Some(parent)) => (parent, RecursiveMode::NonRecursive),
            (false, None) => (dir, RecursiveMode::Recursive),
        };
        let inode = std::fs::metadata(target).ok().map(|m| (m.dev(), m.ino()));
        if watching
            .as_ref()
            .is_some_and(|(path, ino)| path == target && *ino == inode)
        {
            return false;
        }
        if let Some((old, _)) = watching.take() {
            // Fails when the kernel already dropped it (the directory was removed): fine.
            let _ = watcher.unwatch(&old);
        }
        match watcher.watch(target, mode) {
            Ok(()) => {
                *watching = Some((target.to_path_buf(), inode));
                true
            }
            Err(e) => {
                let period = *poll_interval;
                tracing::warn!(path = %target.display(), error = %e, interval = ?period, "cannot watch with inotify; polling instead");
                *self = Self::poll(period);
                true
            }
        }
    }
}
