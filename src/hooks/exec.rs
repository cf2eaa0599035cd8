//! Exec hooks: a command run without a shell for each rotation, the rotation in its environment,
//! in its own process group (killed whole at its timeout), its output logged with JWTs redacted.
//! `watch --exec` runs its commands the same way ([`exec_command`]).

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::process::Stdio;
use std::time::Duration;

use rustix::process::{Pid, Signal};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::refresher::RotationEvent;

/// How much of each output stream of an exec hook is kept for the log.
const OUTPUT_CAP: usize = 4096;
/// Environment variables the sidecar's own flags use; stripped from a hook's environment so the
/// sidecar's configuration does not leak into it, then set afresh for the rotation.
const ENV_PREFIX: &[u8] = b"PROJECTED_TOKEN_";

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

pub(super) async fn run_exec(
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

#[cfg(test)]
mod tests {
    use rustix::io::Errno;

    use super::*;
    use crate::hooks::test_support::{event, exec, lines, runner, sh, wait_until, PATIENCE};

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
}
