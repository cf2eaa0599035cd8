//! What the hooks' tests share: a rotation event, a runner with a plain HTTP client, argv
//! helpers, bounded waiting.

use std::path::Path;
use std::time::{Duration, Instant};

use jiff::Timestamp;

use super::{Hook, HookRunner};
use crate::refresher::RotationEvent;

/// Upper bound for anything a test waits on; generous for a loaded machine.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub fn event(dir: &Path, n: i64) -> RotationEvent {
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

pub fn runner(hooks: Vec<Hook>) -> HookRunner {
    HookRunner::new(hooks, client())
}

pub fn sh(script: &str, args: &[&Path]) -> Vec<String> {
    let mut argv = vec!["sh".to_string(), "-c".to_string(), script.to_string()];
    argv.extend(args.iter().map(|p| p.display().to_string()));
    argv
}

pub fn exec(command: Vec<String>, timeout: Duration) -> Hook {
    Hook::Exec { command, timeout }
}

pub async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}
