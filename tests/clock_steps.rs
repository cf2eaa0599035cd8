//! Steps of the wall clock end to end, as after a laptop resumed, a VM restored or NTP setting the
//! clock: the real binary under libfaketime (Debian's `faketime` package), its wall clock offset
//! through a file the test rewrites while it runs, its monotonic clock left alone
//! (`FAKETIME_DONT_FAKE_MONOTONIC=1`). Where libfaketime is missing each test prints `SKIPPED:`
//! and returns.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{
    https_client, start_serve_with_env, wait_for_file, Running, EMULATE_READY, SERVE_STARTUP,
};
use projected_token::token::decode;
use serde_json::json;

/// A token due after a step must be on disk this soon after it (the refresher looks at the wall
/// clock at least every 10 s).
const AFTER_STEP: Duration = Duration::from_secs(30);
const HOUR: i64 = 3600;

/// The offset of the wall clock that processes started with [`FakeClock::env`] see.
struct FakeClock {
    library: PathBuf,
    control: PathBuf,
    _dir: tempfile::TempDir,
}

impl FakeClock {
    /// `None`, after printing why, where libfaketime is not installed.
    fn new(test: &str) -> Option<Self> {
        let Some(library) = find_libfaketime() else {
            eprintln!(
                "SKIPPED {test}: libfaketime not installed (Debian: apt-get install faketime)"
            );
            return None;
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let clock = Self {
            library,
            control: dir.path().join("faketime.rc"),
            _dir: dir,
        };
        clock.set_offset(0);
        Some(clock)
    }

    /// The environment that puts a process on this clock. The binary under test is the
    /// dynamically linked debug build: a static one would ignore `LD_PRELOAD`.
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("LD_PRELOAD", self.library.display().to_string()),
            (
                "FAKETIME_TIMESTAMP_FILE",
                self.control.display().to_string(),
            ),
            // Read the file at every call, so a step takes effect at once.
            ("FAKETIME_NO_CACHE", "1".to_owned()),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_owned()),
        ]
    }

    /// Steps the wall clock to `seconds` from the real time. The file is replaced whole: it is
    /// read at every clock call and must never be seen half written.
    fn set_offset(&self, seconds: i64) {
        let next = self.control.with_extension("next");
        std::fs::write(&next, format!("{seconds:+}\n")).expect("write faketime file");
        std::fs::rename(&next, &self.control).expect("replace faketime file");
    }
}

/// libfaketime's multithreaded build where there is one (the runtime has several threads).
fn find_libfaketime() -> Option<PathBuf> {
    let mut dirs = vec![
        PathBuf::from("/usr/local/lib/faketime"),
        PathBuf::from("/usr/lib/faketime"),
    ];
    // Debian's multiarch directories, e.g. /usr/lib/x86_64-linux-gnu/faketime.
    if let Ok(entries) = std::fs::read_dir("/usr/lib") {
        dirs.extend(entries.flatten().map(|entry| entry.path().join("faketime")));
    }
    dirs.iter().find_map(|dir| {
        ["libfaketimeMT.so.1", "libfaketime.so.1"]
            .iter()
            .map(|name| dir.join(name))
            .find(|path| path.is_file())
    })
}

fn arg(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

fn read_token(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("token")).expect("token")
}

fn issued_at(token: &str) -> i64 {
    decode(token)
        .expect("a JWT")
        .numeric_claim("iat")
        .expect("iat")
}

fn real_now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// Waits for a token other than `old` in `dir`; panics with how long the old one stayed.
fn wait_for_new_token(dir: &Path, old: &str, stepped: Instant) -> String {
    loop {
        let token = read_token(dir);
        if token != old {
            return token;
        }
        assert!(
            stepped.elapsed() < AFTER_STEP,
            "the token was still on disk {:?} after the step",
            stepped.elapsed()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until `process` has projected its tokens and gone to sleep until the next deadline, so
/// that a step comes while it sleeps (rather than before a wake-up it had anyway).
fn wait_until_asleep(process: &Running) {
    process.wait_for_log("initial projection done", EMULATE_READY);
    std::thread::sleep(Duration::from_secs(2));
}

/// `emulate --expiration-seconds 600` on the fake clock, asleep; the projected directory.
fn start_emulate(root: &Path, clock: &FakeClock) -> (Running, PathBuf) {
    let dir = root.join("sa");
    let env = clock.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let process = Running::spawn_with_env(
        &[
            "emulate",
            "--dir",
            arg(&dir),
            "--key-algorithm",
            "es256",
            "--expiration-seconds",
            "600",
        ],
        &env,
    );
    wait_for_file(&dir.join("token"), EMULATE_READY);
    wait_until_asleep(&process);
    (process, dir)
}

#[test]
fn emulate_refreshes_within_30_s_after_the_clock_steps_forward() {
    let Some(clock) = FakeClock::new("emulate_refreshes_within_30_s_after_the_clock_steps_forward")
    else {
        return;
    };
    let root = tempfile::tempdir().expect("temp dir");
    let (emulate, dir) = start_emulate(root.path(), &clock);
    let old = read_token(&dir);

    // An hour on: the 600 s token's warnafter is long past.
    clock.set_offset(HOUR);
    let stepped = Instant::now();
    let new = wait_for_new_token(&dir, &old, stepped);
    // Issued by the stepped clock: the fake took effect.
    assert!(
        issued_at(&new) >= real_now() + HOUR - 60,
        "iat {} is not an hour ahead",
        issued_at(&new)
    );
    emulate.wait_for_log("the wall clock jumped forward", Duration::from_secs(5));
}

#[test]
fn emulate_refreshes_at_once_after_the_clock_steps_back_before_the_issue_time() {
    let Some(clock) = FakeClock::new(
        "emulate_refreshes_at_once_after_the_clock_steps_back_before_the_issue_time",
    ) else {
        return;
    };
    let root = tempfile::tempdir().expect("temp dir");
    let (emulate, dir) = start_emulate(root.path(), &clock);
    let old = read_token(&dir);

    // An hour back: the token's iat (and nbf) lie in the clock's future, so the emulated API
    // server, on the same clock, would reject it.
    clock.set_offset(-HOUR);
    let stepped = Instant::now();
    let new = wait_for_new_token(&dir, &old, stepped);
    assert!(
        issued_at(&new) <= real_now() - HOUR + 60,
        "iat {} is not an hour back",
        issued_at(&new)
    );
    emulate.wait_for_log("the wall clock was set back", Duration::from_secs(5));
}

#[test]
fn sidecar_against_serve_refreshes_within_30_s_after_both_clocks_step_forward() {
    let Some(clock) = FakeClock::new(
        "sidecar_against_serve_refreshes_within_30_s_after_both_clocks_step_forward",
    ) else {
        return;
    };
    let root = tempfile::tempdir().expect("temp dir");
    let env = clock.env();
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // The API server and the sidecar share the machine, and so the step.
    let api = start_serve_with_env(root.path(), &["--key-algorithm", "es256"], &env);
    let credentials = root.path().join("credentials");
    std::fs::create_dir(&credentials).expect("credentials dir");
    std::fs::write(credentials.join("token"), &api.admin_token).expect("token");
    std::fs::write(credentials.join("ca.crt"), &api.ca_pem).expect("ca.crt");
    std::fs::write(credentials.join("namespace"), "default").expect("namespace");
    let port = api.port().to_string();
    env.extend([
        ("KUBERNETES_SERVICE_HOST", "127.0.0.1"),
        ("KUBERNETES_SERVICE_PORT", port.as_str()),
    ]);
    let dir = root.path().join("out");
    let sidecar = Running::spawn_with_env(
        &[
            "sidecar",
            "--dir",
            arg(&dir),
            "--credentials-dir",
            arg(&credentials),
            "--expiration-seconds",
            "600",
        ],
        &env,
    );
    wait_for_file(&dir.join("token"), SERVE_STARTUP);
    wait_until_asleep(&sidecar);
    let old = read_token(&dir);

    clock.set_offset(HOUR);
    let stepped = Instant::now();
    let new = wait_for_new_token(&dir, &old, stepped);
    assert!(
        issued_at(&new) >= real_now() + HOUR - 60,
        "iat {} is not an hour ahead",
        issued_at(&new)
    );
    sidecar.wait_for_log("the wall clock jumped forward", Duration::from_secs(5));
}

#[tokio::test]
async fn a_refusing_outage_ends_within_30_s_when_the_clock_steps_past_its_end() {
    let Some(clock) =
        FakeClock::new("a_refusing_outage_ends_within_30_s_when_the_clock_steps_past_its_end")
    else {
        return;
    };
    let root = tempfile::tempdir().expect("temp dir");
    let env = clock.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let api = start_serve_with_env(root.path(), &["--key-algorithm", "es256"], &env);
    let reply = api
        .post_json(
            "/projected-token/v1/outage",
            Some(&api.admin_token),
            &json!({"mode": "RefuseConnections", "durationSeconds": HOUR}),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    api.process.wait_for_log("not listening", AFTER_STEP);
    // A fresh connection per probe, as a client reconnecting after an outage would.
    let livez = format!("{}/livez", api.url);
    let up = || async { https_client(&api.ca_pem, &[]).get(&livez).send().await };
    match up().await {
        Err(e) => assert!(e.is_connect(), "refused, not another error: {e:?}"),
        Ok(reply) => panic!("answered {} during the outage", reply.status()),
    }

    // Two hours on: the hour-long outage is over by the clock.
    clock.set_offset(2 * HOUR);
    let stepped = Instant::now();
    while up().await.is_err() {
        assert!(
            stepped.elapsed() < AFTER_STEP,
            "still refusing connections {:?} after the outage's end",
            stepped.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    api.process
        .wait_for_log("listening again", Duration::from_secs(5));
}
