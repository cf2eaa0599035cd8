//! Rotation hooks: what the sidecar does after each successful write, so the application picks up
//! the new token: signal a process, run a command, or POST the rotation to a URL.
//!
//! A hook never sees the token, only the [`RotationEvent`] (where the token is, when it expires).
//! A failing hook is logged and counted, never returned as an error: refreshing must go on.

use std::ffi::OsString;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustix::io::Errno;
use rustix::process::{Pid, Signal};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::errors::error_chain;
use crate::refresher::RotationEvent;

/// How much of each output stream of an exec hook is kept for the log.
const OUTPUT_CAP: usize = 4096;
/// Pid files hold a number; anything larger is not a pid file.
const PID_FILE_CAP: u64 = 64;
/// Environment variables the sidecar's own flags use; stripped from a hook's environment so the
/// sidecar's configuration does not leak into it, then set afresh for the rotation.
const ENV_PREFIX: &[u8] = b"PROJECTED_TOKEN_";

/// Which process a signal hook signals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignalTarget {
    Pid(i32),
    /// Read on every rotation: the application may have restarted with a new pid.
    PidFile(PathBuf),
}

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
            Hook::Http { url, .. } => write!(f, "POST {}", loggable_url(url)),
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
                Hook::Signal { target, signal } => send_signal(target, *signal).await,
                Hook::Exec { command, timeout } => run_exec(index, command, *timeout, event).await,
                Hook::Http { url, timeout } => self.post(url, *timeout, event).await,
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

    async fn post(
        &self,
        url: &reqwest::Url,
        timeout: Duration,
        event: &RotationEvent,
    ) -> Result<(), String> {
        let body = serde_json::to_vec(event)
            .map_err(|e| format!("cannot encode the rotation as JSON: {e}"))?;
        let response = self
            .client
            .post(url.clone())
            .timeout(timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| {
                let timed_out = e.is_timeout();
                // Without the URL: it may carry credentials, and the hook's name shows it.
                let chain = error_chain(&e.without_url());
                if timed_out {
                    format!("no answer within {timeout:?}: {chain}")
                } else {
                    chain
                }
            })?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("answered {status}"))
        }
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

/// Signal names as `kill -l` prints them, without `SIG`.
const SIGNALS: &[(&str, Signal)] = &[
    ("HUP", Signal::HUP),
    ("INT", Signal::INT),
    ("QUIT", Signal::QUIT),
    ("ILL", Signal::ILL),
    ("TRAP", Signal::TRAP),
    ("ABRT", Signal::ABORT),
    ("BUS", Signal::BUS),
    ("FPE", Signal::FPE),
    ("KILL", Signal::KILL),
    ("USR1", Signal::USR1),
    ("SEGV", Signal::SEGV),
    ("USR2", Signal::USR2),
    ("PIPE", Signal::PIPE),
    ("ALRM", Signal::ALARM),
    ("TERM", Signal::TERM),
    ("CHLD", Signal::CHILD),
    ("CONT", Signal::CONT),
    ("STOP", Signal::STOP),
    ("TSTP", Signal::TSTP),
    ("TTIN", Signal::TTIN),
    ("TTOU", Signal::TTOU),
    ("URG", Signal::URG),
    ("XCPU", Signal::XCPU),
    ("XFSZ", Signal::XFSZ),
    ("VTALRM", Signal::VTALARM),
    ("PROF", Signal::PROF),
    ("WINCH", Signal::WINCH),
    ("IO", Signal::IO),
    ("SYS", Signal::SYS),
];

/// A signal by name (`HUP`, `SIGHUP`, `hup`) or number (`1`). Real-time signals are not
/// supported.
pub fn parse_signal(name: &str) -> Result<Signal, String> {
    let trimmed = name.trim();
    if let Ok(number) = trimmed.parse::<i32>() {
        return Signal::from_named_raw(number)
            .ok_or_else(|| format!("{number} is not a supported signal number"));
    }
    let upper = trimmed.to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    SIGNALS
        .iter()
        .find(|(known, _)| *known == bare)
        .map(|(_, signal)| *signal)
        .ok_or_else(|| format!("unknown signal {trimmed:?} (try HUP, USR1, TERM or a number)"))
}

/// `SIGHUP` style, for logs.
pub fn signal_name(signal: Signal) -> String {
    SIGNALS
        .iter()
        .find(|(_, known)| *known == signal)
        .map(|(name, _)| format!("SIG{name}"))
        .unwrap_or_else(|| format!("signal {}", signal.as_raw()))
}

async fn send_signal(target: &SignalTarget, signal: Signal) -> Result<(), String> {
    let raw = match target {
        SignalTarget::Pid(pid) => *pid,
        SignalTarget::PidFile(path) => read_pid_file(path).await?,
    };
    // 0 and negative numbers would signal whole process groups (-1: every process we may).
    if raw <= 0 {
        return Err(format!("{raw} is not a process id"));
    }
    if u32::try_from(raw).is_ok_and(|pid| pid == std::process::id()) {
        return Err(format!("pid {raw} is this process; refusing to signal it"));
    }
    let pid = Pid::from_raw(raw).ok_or_else(|| format!("{raw} is not a process id"))?;
    rustix::process::kill_process(pid, signal).map_err(|errno| match errno {
        Errno::SRCH => format!("no process with pid {raw}"),
        Errno::PERM => format!("not permitted to signal pid {raw}"),
        other => format!("cannot signal pid {raw}: {other}"),
    })
}

/// Never echoes the file's content: a misconfigured path could name the token itself.
async fn read_pid_file(path: &std::path::Path) -> Result<i32, String> {
    let shown = path.display();
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| format!("cannot read pid file {shown}: {e}"))?;
    let mut bytes = Vec::new();
    file.take(PID_FILE_CAP + 1)
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| format!("cannot read pid file {shown}: {e}"))?;
    if bytes.len() as u64 > PID_FILE_CAP {
        return Err(format!("pid file {shown} is too large to hold a pid"));
    }
    std::str::from_utf8(&bytes)
        .ok()
        .and_then(|text| text.trim().parse::<i32>().ok())
        .ok_or_else(|| format!("pid file {shown} does not hold a process id"))
}

/// The environment an exec hook gets for one rotation.
fn exec_env(event: &RotationEvent) -> Vec<(&'static str, OsString)> {
    let mut env = vec![
        (
            "PROJECTED_TOKEN_PATH",
            event.dir.join(&event.path).into_os_string(),
        ),
        ("PROJECTED_TOKEN_DIR", event.dir.clone().into_os_string()),
        ("PROJECTED_TOKEN_VOLUME", event.volume.clone().into()),
        // The kubelet's notion of expiry (status), which is what refreshing is scheduled by.
        (
            "PROJECTED_TOKEN_EXPIRES_AT",
            event.status_expiration.to_string().into(),
        ),
        (
            "PROJECTED_TOKEN_NEXT_REFRESH",
            event.next_refresh.to_string().into(),
        ),
    ];
    if let Some(warn_after) = event.warn_after {
        env.push(("PROJECTED_TOKEN_WARN_AFTER", warn_after.to_string().into()));
    }
    if let Some(jti) = &event.new_jti {
        env.push(("PROJECTED_TOKEN_JTI", jti.clone().into()));
    }
    env
}

async fn run_exec(
    index: usize,
    command: &[String],
    timeout: Duration,
    event: &RotationEvent,
) -> Result<(), String> {
    exec_command(index, command, timeout, exec_env(event)).await
}

/// Runs `command` (an argv, no shell) in its own process group with `env` set and the caller's
/// other `PROJECTED_TOKEN_*` variables removed, killing the group after `timeout`. Its output is
/// logged (JWT-shaped text redacted); `index` names it in the log.
pub async fn exec_command(
    index: usize,
    command: &[String],
    timeout: Duration,
    env: Vec<(&'static str, OsString)>,
) -> Result<(), String> {
    let (program, args) = command
        .split_first()
        .ok_or_else(|| "empty command".to_string())?;
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own group, so a timeout also kills what it started (`sh -c 'sleep 99'`).
        .process_group(0)
        .kill_on_drop(true);
    for (key, _) in std::env::vars_os() {
        if key.as_bytes().starts_with(ENV_PREFIX) {
            cmd.env_remove(key);
        }
    }
    cmd.envs(env);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {program}: {e}"))?;
    let group = child.id().and_then(|id| i32::try_from(id).ok());
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let mut out = Capture::default();
    let mut err = Capture::default();
    // Output is read while waiting, so a chatty command cannot block on a full pipe; the hook is
    // done when it has exited and closed its output.
    let finished = tokio::time::timeout(timeout, async {
        let (status, (), ()) = tokio::join!(
            child.wait(),
            out.read_from(stdout.as_mut()),
            err.read_from(stderr.as_mut())
        );
        status
    })
    .await;
    let result = match finished {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(format!("{program} failed: {status}")),
        Ok(Err(e)) => Err(format!("cannot wait for {program}: {e}")),
        Err(_elapsed) => {
            let exited = child.try_wait().ok().flatten();
            if let Some(group) = group.and_then(Pid::from_raw) {
                // ESRCH: the group is already gone, which is what we want.
                let _ = rustix::process::kill_process_group(group, Signal::KILL);
            }
            let _ = child.start_kill();
            // Reap it, so no zombie is left behind.
            let _ = child.wait().await;
            Err(match exited {
                Some(status) => format!(
                    "{program} ended ({status}), but its output was still open after {timeout:?} (a background process?); killed its process group"
                ),
                None => format!("{program} still running after {timeout:?}; killed"),
            })
        }
    };
    for (stream, capture) in [("stdout", &out), ("stderr", &err)] {
        if let Some(text) = capture.text() {
            if result.is_ok() {
                tracing::info!(hook = index, program = %program, stream, truncated = capture.truncated, output = %text, "rotation hook output");
            } else {
                tracing::warn!(hook = index, program = %program, stream, truncated = capture.truncated, output = %text, "rotation hook output");
            }
        }
    }
    result
}

/// The first [`OUTPUT_CAP`] bytes of a stream; the rest is read and dropped.
#[derive(Default)]
struct Capture {
    bytes: Vec<u8>,
    truncated: bool,
}

impl Capture {
    async fn read_from<R: AsyncRead + Unpin>(&mut self, pipe: Option<&mut R>) {
        let Some(pipe) = pipe else { return };
        let mut buffer = [0u8; 4096];
        loop {
            match pipe.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let room = OUTPUT_CAP.saturating_sub(self.bytes.len());
                    self.bytes.extend_from_slice(&buffer[..n.min(room)]);
                    self.truncated |= n > room;
                }
            }
        }
    }

    fn text(&self) -> Option<String> {
        let text = String::from_utf8_lossy(&self.bytes);
        let text = text.trim_end();
        (!text.is_empty()).then(|| redact_jwts(text))
    }
}

/// Replaces anything shaped like a JWT (base64url JSON `eyJ…` with a dot), so a hook that prints
/// the token does not put it in our logs.
fn redact_jwts(text: &str) -> String {
    let is_jwt_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    let mut redacted = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("eyJ") {
        let candidate = &rest[start..];
        let len = candidate
            .find(|c: char| !is_jwt_char(c))
            .unwrap_or(candidate.len());
        redacted.push_str(&rest[..start]);
        if candidate[..len].contains('.') {
            redacted.push_str("[redacted JWT]");
        } else {
            redacted.push_str(&candidate[..len]);
        }
        rest = &candidate[len..];
    }
    redacted.push_str(rest);
    redacted
}

fn loggable_url(url: &reqwest::Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::path::Path;
    use std::sync::Mutex;
    use std::time::Instant;

    use axum::http::StatusCode;
    use axum::routing::post;
    use jiff::Timestamp;

    /// Upper bound for anything a test waits on; generous for a loaded machine.
    const PATIENCE: Duration = Duration::from_secs(20);

    fn event(dir: &Path, n: i64) -> RotationEvent {
        let at = |s: i64| Timestamp::from_second(1_700_000_000 + s).expect("timestamp in range");
        RotationEvent {
            volume: "kube-api-access".into(),
            dir: dir.to_path_buf(),
            path: "token".into(),
            namespace: "default".into(),
            pod: "app".into(),
            service_account: "default".into(),
            old_jti: (n > 0).then(|| format!("jti-{}", n - 1)),
            // One event without a jti, to see the variable left unset.
            new_jti: (n != 1).then(|| format!("jti-{n}")),
            issued_at: Some(at(n * 100)),
            expires_at: Some(at(n * 100 + 3607)),
            warn_after: Some(at(n * 100 + 3600)),
            status_expiration: at(n * 100 + 3600),
            next_refresh: at(n * 100 + 2880),
            data_dir: format!("..2024_01_01_00_00_0{n}.000000001"),
            scheduled_at: (n > 0).then(|| at(n * 100 - 720)),
            published_at: at(n * 100),
        }
    }

    fn client() -> reqwest::Client {
        reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("plain HTTP client")
    }

    fn runner(hooks: Vec<Hook>) -> HookRunner {
        HookRunner::new(hooks, client())
    }

    fn sh(script: &str, args: &[&Path]) -> Vec<String> {
        let mut argv = vec!["sh".to_string(), "-c".to_string(), script.to_string()];
        argv.extend(args.iter().map(|p| p.display().to_string()));
        argv
    }

    fn exec(command: Vec<String>, timeout: Duration) -> Hook {
        Hook::Exec { command, timeout }
    }

    async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !done() {
            assert!(Instant::now() < deadline, "gave up waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Gone, or a zombie waiting for a reaper that is not us.
    fn process_gone(pid: i32) -> bool {
        let Some(pid) = Pid::from_raw(pid) else {
            return true;
        };
        if rustix::process::test_kill_process(pid) == Err(Errno::SRCH) {
            return true;
        }
        std::fs::read_to_string(format!("/proc/{}/stat", pid.as_raw_nonzero()))
            .ok()
            .and_then(|stat| {
                let after_name = &stat[stat.rfind(')')? + 1..];
                after_name.split_whitespace().next().map(|s| s == "Z")
            })
            .unwrap_or(true)
    }

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn parses_signal_names_and_numbers() {
        for name in ["HUP", "SIGHUP", "hup", "sighup", " SigHup "] {
            assert_eq!(parse_signal(name), Ok(Signal::HUP), "{name}");
        }
        assert_eq!(parse_signal("USR1"), Ok(Signal::USR1));
        assert_eq!(parse_signal("sigusr2"), Ok(Signal::USR2));
        assert_eq!(parse_signal("TERM"), Ok(Signal::TERM));
        assert_eq!(
            parse_signal(&Signal::HUP.as_raw().to_string()),
            Ok(Signal::HUP)
        );
        assert_eq!(
            parse_signal(&Signal::USR1.as_raw().to_string()),
            Ok(Signal::USR1)
        );
        for bad in ["", "SIG", "FOO", "SIGFOO", "0", "-1", "999", "HUP1"] {
            assert!(parse_signal(bad).is_err(), "{bad:?} parsed");
        }
        assert_eq!(signal_name(Signal::HUP), "SIGHUP");
    }

    #[test]
    fn redacts_jwts_from_hook_output() {
        let token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln-_";
        assert_eq!(
            redact_jwts(&format!("token={token} done")),
            "token=[redacted JWT] done"
        );
        assert_eq!(
            redact_jwts("eyJ alone, no dots; bytes: ünïcode"),
            "eyJ alone, no dots; bytes: ünïcode"
        );
    }

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
    async fn a_signal_reaches_a_child_through_its_pid_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let got = dir.path().join("got");
        let ready = dir.path().join("ready");
        // The trap is set before `ready` appears, so the signal cannot arrive before it.
        let script =
            r#"trap 'echo got >> "$0"; exit 0' HUP; : > "$1"; while :; do sleep 0.05; done"#;
        let mut child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg(&got)
            .arg(&ready)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn sh");
        let pid = child.id().expect("child pid");
        wait_until("the child's trap", || ready.exists()).await;
        let pid_file = dir.path().join("app.pid");
        std::fs::write(&pid_file, format!("{pid}\n")).expect("write pid file");

        let runner = runner(vec![Hook::Signal {
            target: SignalTarget::PidFile(pid_file),
            signal: Signal::HUP,
        }]);
        let report = runner.run(&event(dir.path(), 0)).await;
        assert_eq!(report.failed(), 0, "{report:?}");

        let status = tokio::time::timeout(PATIENCE, child.wait())
            .await
            .expect("child exits after the signal")
            .expect("wait for child");
        assert!(status.success(), "{status}");
        assert_eq!(lines(&got), ["got"]);
        assert_eq!(
            runner.successes(),
            HookCounts {
                signal: 1,
                ..HookCounts::default()
            }
        );
        assert_eq!(runner.failures(), HookCounts::default());
    }

    #[tokio::test]
    async fn bad_pid_files_and_dead_pids_are_counted_failures() {
        let dir = tempfile::tempdir().expect("temp dir");
        let pid_file = |name: &str, content: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, content).expect("write pid file");
            SignalTarget::PidFile(path)
        };
        let mut dead = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let dead_pid = i32::try_from(dead.id()).expect("pid fits");
        dead.wait().expect("reap true");

        let targets = [
            pid_file("garbage.pid", "garbage\n"),
            pid_file("empty.pid", ""),
            pid_file("zero.pid", "0"),
            pid_file("all.pid", "-1"),
            pid_file("huge.pid", &"1".repeat(200)),
            SignalTarget::PidFile(dir.path().join("missing.pid")),
            pid_file("dead.pid", &dead_pid.to_string()),
            SignalTarget::Pid(dead_pid),
            SignalTarget::Pid(i32::try_from(std::process::id()).expect("pid fits")),
        ];
        let count = targets.len();
        let runner = runner(
            targets
                .into_iter()
                .map(|target| Hook::Signal {
                    target,
                    // TERM: were a check missing, the test process would notice.
                    signal: Signal::TERM,
                })
                .collect(),
        );
        let report = runner.run(&event(dir.path(), 0)).await;
        assert_eq!(report.failed(), count, "{report:?}");
        let reasons: Vec<&str> = report
            .outcomes
            .iter()
            .filter_map(|o| o.error.as_deref())
            .collect();
        assert!(
            reasons[0].contains("does not hold a process id"),
            "{reasons:?}"
        );
        assert!(reasons[2].contains("not a process id"), "{reasons:?}");
        assert!(reasons[3].contains("not a process id"), "{reasons:?}");
        assert!(reasons[4].contains("too large"), "{reasons:?}");
        assert!(reasons[5].contains("cannot read pid file"), "{reasons:?}");
        assert!(reasons[6].contains("no process with pid"), "{reasons:?}");
        assert!(reasons[8].contains("this process"), "{reasons:?}");
        assert_eq!(runner.failures().signal, count as u64);
    }

    #[tokio::test]
    async fn exec_runs_once_per_rotation_with_the_rotation_in_its_environment() {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = dir.path().join("out");
        let script = r#"printf '%s|%s|%s|%s\n' "$PROJECTED_TOKEN_PATH" "$PROJECTED_TOKEN_EXPIRES_AT" "${PROJECTED_TOKEN_JTI-unset}" "$PROJECTED_TOKEN_VOLUME" >> "$0"; echo "stdout is logged"; echo "stderr too" >&2"#;
        let runner = runner(vec![exec(sh(script, &[&out]), PATIENCE)]);
        let events: Vec<RotationEvent> = (0..3).map(|n| event(dir.path(), n)).collect();
        for event in &events {
            let report = runner.run(event).await;
            assert_eq!(report.failed(), 0, "{report:?}");
        }
        let token_path = dir.path().join("token").display().to_string();
        let expected: Vec<String> = events
            .iter()
            .map(|e| {
                format!(
                    "{token_path}|{}|{}|kube-api-access",
                    e.status_expiration,
                    e.new_jti.as_deref().unwrap_or("unset")
                )
            })
            .collect();
        assert_eq!(lines(&out), expected);
        assert!(expected[0].contains("2023-11-14T23:13:20Z"), "{expected:?}");
        assert_eq!(runner.successes().exec, 3);
    }

    #[tokio::test]
    async fn exec_past_its_timeout_is_killed_with_what_it_started() {
        let dir = tempfile::tempdir().expect("temp dir");
        let pids = dir.path().join("pids");
        // The shell starts a long sleep and waits for it; both must die at the timeout.
        let script =
            r#"sleep 300 & echo $! > "$0.tmp"; echo $$ >> "$0.tmp"; mv "$0.tmp" "$0"; wait"#;
        let runner = runner(vec![exec(sh(script, &[&pids]), Duration::from_secs(2))]);
        let report = runner.run(&event(dir.path(), 0)).await;
        let reason = report.outcomes[0].error.as_deref().expect("a failure");
        assert!(reason.contains("still running after"), "{reason}");
        assert_eq!(runner.failures().exec, 1);

        let started = lines(&pids);
        assert_eq!(
            started.len(),
            2,
            "the script did not start in time: {started:?}"
        );
        for pid in started {
            let pid: i32 = pid.parse().expect("a pid");
            wait_until("the hook's processes to die", || process_gone(pid)).await;
        }
    }

    #[tokio::test]
    async fn a_failing_command_is_counted_and_the_other_hooks_still_run() {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = dir.path().join("out");
        let runner = runner(vec![
            exec(vec!["false".into()], PATIENCE),
            exec(
                vec![dir.path().join("no-such-program").display().to_string()],
                PATIENCE,
            ),
            exec(vec![], PATIENCE),
            exec(sh(r#"echo ran >> "$0""#, &[&out]), PATIENCE),
        ]);
        for n in 0..2 {
            let report = runner.run(&event(dir.path(), n)).await;
            let failed: Vec<bool> = report.outcomes.iter().map(|o| o.error.is_some()).collect();
            assert_eq!(failed, [true, true, true, false], "{report:?}");
            assert!(report.outcomes[1]
                .error
                .as_deref()
                .is_some_and(|e| e.contains("cannot start")));
        }
        assert_eq!(lines(&out), ["ran", "ran"]);
        assert_eq!(runner.failures().exec, 6);
        assert_eq!(runner.successes().exec, 2);
    }

    type Bodies = Arc<Mutex<Vec<serde_json::Value>>>;

    /// An HTTP server on 127.0.0.1 recording the JSON POSTed to `/`; `/fail` answers 500.
    async fn recording_server() -> (std::net::SocketAddr, Bodies) {
        let bodies: Bodies = Arc::default();
        let recorded = bodies.clone();
        let app = axum::Router::new()
            .route(
                "/",
                post(move |body: axum::Json<serde_json::Value>| async move {
                    recorded.lock().expect("bodies lock").push(body.0);
                    StatusCode::NO_CONTENT
                }),
            )
            .route(
                "/fail",
                post(|| async { StatusCode::INTERNAL_SERVER_ERROR }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1");
        let addr = listener.local_addr().expect("local addr");
        // Ends with the test's runtime.
        tokio::spawn(async move { axum::serve(listener, app).await });
        (addr, bodies)
    }

    fn http(url: String) -> Hook {
        Hook::Http {
            url: reqwest::Url::parse(&url).expect("url"),
            timeout: PATIENCE,
        }
    }

    #[tokio::test]
    async fn http_posts_the_rotation_once_per_rotation() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (addr, bodies) = recording_server().await;
        let runner = runner(vec![http(format!("http://{addr}/"))]);
        let events: Vec<RotationEvent> = (0..3).map(|n| event(dir.path(), n)).collect();
        for event in &events {
            let report = runner.run(event).await;
            assert_eq!(report.failed(), 0, "{report:?}");
        }
        let bodies = bodies.lock().expect("bodies lock").clone();
        assert_eq!(bodies.len(), 3);
        for (body, event) in bodies.iter().zip(&events) {
            let object = body.as_object().expect("a JSON object");
            let keys: Vec<&str> = object.keys().map(String::as_str).collect();
            let mut expected_keys = vec![
                "volume",
                "dir",
                "path",
                "namespace",
                "pod",
                "service_account",
                "old_jti",
                "new_jti",
                "issued_at",
                "expires_at",
                "warn_after",
                "status_expiration",
                "next_refresh",
                "data_dir",
                "scheduled_at",
                "published_at",
            ];
            expected_keys.sort_unstable();
            let mut keys = keys;
            keys.sort_unstable();
            assert_eq!(
                keys, expected_keys,
                "no field beyond the event's, none a token"
            );
            assert!(
                object
                    .values()
                    .all(|v| !v.as_str().is_some_and(|s| s.starts_with("eyJ"))),
                "{body}"
            );
            assert_eq!(body["volume"], "kube-api-access");
            assert_eq!(body["dir"], dir.path().display().to_string());
            assert_eq!(body["path"], "token");
            assert_eq!(body["data_dir"], event.data_dir);
            assert_eq!(
                body["status_expiration"],
                event.status_expiration.to_string()
            );
            assert_eq!(body["next_refresh"], event.next_refresh.to_string());
            let expires_at = event.expires_at.expect("expiry").to_string();
            assert_eq!(body["expires_at"], expires_at);
            assert_eq!(
                body["new_jti"],
                serde_json::to_value(&event.new_jti).expect("jti")
            );
        }
        assert_eq!(bodies[0]["issued_at"], "2023-11-14T22:13:20Z");
        assert_eq!(bodies[1]["new_jti"], serde_json::Value::Null);
        assert_eq!(runner.successes().http, 3);
    }

    #[tokio::test]
    async fn http_errors_and_refused_connections_are_counted_failures() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (addr, bodies) = recording_server().await;
        // A port that was free a moment ago: nothing listens there.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port");
        let runner = runner(vec![
            http(format!("http://{addr}/fail")),
            http(format!("http://{closed}/")),
            http(format!("http://{addr}/")),
        ]);
        for n in 0..2 {
            let report = runner.run(&event(dir.path(), n)).await;
            let errors: Vec<Option<&str>> =
                report.outcomes.iter().map(|o| o.error.as_deref()).collect();
            assert!(errors[0].is_some_and(|e| e.contains("500")), "{errors:?}");
            assert!(errors[1].is_some(), "{errors:?}");
            assert_eq!(errors[2], None);
        }
        assert_eq!(bodies.lock().expect("bodies lock").len(), 2);
        assert_eq!(runner.failures().http, 4);
        assert_eq!(runner.successes().http, 2);
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
