//! Signal hooks: a signal to a pid, or to the pid a pid file holds at the time of the rotation.

use std::path::PathBuf;

use rustix::io::Errno;
use rustix::process::{Pid, Signal};
use tokio::io::AsyncReadExt;

/// Pid files hold a number; anything larger is not a pid file.
const PID_FILE_CAP: u64 = 64;

/// Which process a signal hook signals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignalTarget {
    Pid(i32),
    /// Read on every rotation: the application may have restarted with a new pid.
    PidFile(PathBuf),
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

pub(super) async fn send_signal(target: &SignalTarget, signal: Signal) -> Result<(), String> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hooks::test_support::{event, lines, runner, wait_until, PATIENCE};
    use crate::hooks::{Hook, HookCounts};

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
}
