//! End-to-end tests of `watch`: the real binary on real directories, written by `emulate` or by
//! the atomic writer (and broken by hand).

mod common;

use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::{plant_fifo, replace_entry, Running};
use projected_token::projection::atomic_writer::{AtomicWriter, WriterOptions};
use projected_token::projection::payload::{FileProjection, Payload};
use rustix::process::Signal;
use serde_json::{json, Value};

const STARTUP: Duration = Duration::from_secs(30);
const EVENT: Duration = Duration::from_secs(20);
/// Quiet notify's routine messages; the rest as the other tests log.
const LOG: (&str, &str) = ("PROJECTED_TOKEN_LOG", "info,notify=warn");

/// An unsigned token with the claims `watch` reads (`watch` never verifies signatures).
fn jwt(jti: &str, iat: i64) -> String {
    let part = |v: Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(&v).unwrap());
    format!(
        "{}.{}.c2ln",
        part(json!({"alg": "ES256", "kid": "k"})),
        part(json!({"jti": jti, "iat": iat, "nbf": iat, "exp": iat + 600,
                    "kubernetes.io": {"warnafter": iat + 480}}))
    )
}

fn file(data: &[u8]) -> FileProjection {
    FileProjection {
        data: data.into(),
        mode: 0o644,
        fs_user: None,
    }
}

/// Publishes `token` and a fixed `ca.crt` as the kubelet does.
fn publish(dir: &Path, token: &str) {
    let mut payload = Payload::new();
    payload.insert("token".into(), file(token.as_bytes()));
    payload.insert("ca.crt".into(), file(b"ca"));
    let options = WriterOptions {
        fsync: false,
        fs_group: None,
    };
    AtomicWriter::new(dir, options).write(&payload).unwrap();
}

/// Starts `watch ARGS` and returns it with the fields of its start-up log line, once it watches.
fn spawn_watch_logged(args: &[&str]) -> (Running, Value) {
    let mut full = vec!["--log-format", "json", "watch"];
    full.extend_from_slice(args);
    let watch = Running::spawn_with_env(&full, &[LOG]);
    let line = watch.wait_for_log("watching", STARTUP);
    let fields = serde_json::from_str::<Value>(&line).unwrap()["fields"].clone();
    (watch, fields)
}

fn spawn_watch(args: &[&str]) -> Running {
    spawn_watch_logged(args).0
}

/// The next stdout line as JSON.
fn next_event(watch: &Running) -> Value {
    let line = watch.stdout.recv_timeout(EVENT).unwrap_or_else(|e| {
        panic!(
            "no event within {EVENT:?} ({e}); stderr:\n{}",
            watch.stderr_so_far()
        )
    });
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

/// The `token rotated` lines `emulate --log-format json` printed so far, as their fields.
fn emulate_rotations(emulate: &Running) -> Vec<Value> {
    emulate
        .stderr
        .try_iter()
        .filter_map(|l| serde_json::from_str::<Value>(&l).ok())
        .filter(|l| l["fields"]["message"] == "token rotated")
        .map(|l| l["fields"].clone())
        .collect()
}

/// Runs `emulate` (3-second tokens) into an empty directory under `watch ARGS --count COUNT`
/// and returns watch's stdout lines and emulate's rotations, after checking watch exited 0.
fn watch_emulate(watch_args: &[&str], count: usize) -> (Vec<String>, Vec<Value>) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("serviceaccount");
    std::fs::create_dir(&dir).unwrap();
    let dir_arg = dir.to_str().unwrap();
    let count_arg = count.to_string();
    let mut args = vec![dir_arg, "--count", &count_arg, "--timeout", "90s"];
    args.extend_from_slice(watch_args);
    let mut watch = spawn_watch(&args);
    let emulate = Running::spawn(&[
        "--log-format",
        "json",
        "emulate",
        "--dir",
        dir_arg,
        "--no-serve",
        "--expiration-seconds",
        "3",
        "--key-algorithm",
        "es256",
        "--no-fsync",
    ]);
    let status = watch.wait_exit(Duration::from_secs(120));
    let lines: Vec<String> = watch.stdout.try_iter().collect();
    assert!(
        status.success(),
        "watch --count {count} exits 0, got {status}; stdout:\n{}\nstderr:\n{}",
        lines.join("\n"),
        watch.stderr_so_far()
    );
    // Give emulate's log reader a moment to deliver the line of the last rotation watch saw.
    std::thread::sleep(Duration::from_millis(200));
    let rotations = emulate_rotations(&emulate);
    (lines, rotations)
}

#[test]
fn json_sees_every_rotation_of_emulate_and_no_torn_payload() {
    const COUNT: usize = 5;
    let (lines, rotations) = watch_emulate(&["--output", "json"], COUNT);
    assert_eq!(lines.len(), COUNT, "one object per rotation: {lines:#?}");
    assert!(
        rotations.len() >= COUNT,
        "emulate rotated {} times",
        rotations.len()
    );
    let mut previous: Option<String> = None;
    for (i, (line, rotation)) in lines.iter().zip(&rotations).enumerate() {
        let event: Value = serde_json::from_str(line).unwrap();
        for field in [
            "time",
            "old_jti",
            "new_jti",
            "iat",
            "exp",
            "warnafter",
            "consistent",
        ] {
            assert!(event.get(field).is_some(), "{field} missing: {event}");
        }
        assert_eq!(event["event"], "rotation", "{event}");
        assert_eq!(
            event["consistent"], true,
            "torn or in-place payload: {event}"
        );
        assert_eq!(event["problems"], json!([]), "{event}");
        // Every rotation emulate made, in order, none skipped, none twice.
        assert_eq!(event["new_jti"], rotation["jti"], "rotation {i}");
        assert_eq!(event["iat"], rotation["iat"], "rotation {i}");
        assert_eq!(event["exp"], rotation["exp"], "rotation {i}");
        assert_eq!(event["warnafter"], rotation["warnafter"], "rotation {i}");
        assert_eq!(
            event["old_jti"].as_str(),
            previous.as_deref(),
            "rotation {i}"
        );
        let changed = event["changed"].as_array().unwrap();
        if i == 0 {
            assert_eq!(changed.len(), 3, "the first payload is all new: {event}");
        } else {
            assert_eq!(changed, &vec![json!("token")], "{event}");
        }
        assert_ne!(event["old_data_dir"], event["new_data_dir"]);
        previous = event["new_jti"].as_str().map(str::to_owned);
    }
}

#[test]
fn polling_sees_every_rotation_too() {
    const COUNT: usize = 3;
    let (lines, rotations) = watch_emulate(&["--poll", "--poll-interval", "100ms"], COUNT);
    assert_eq!(lines.len(), COUNT, "{lines:#?}");
    for (line, rotation) in lines.iter().zip(&rotations) {
        assert!(line.contains(" rotation "), "{line}");
        assert!(line.contains("consistent=yes"), "{line}");
        let jti = rotation["jti"].as_str().unwrap();
        assert!(line.contains(&format!("new_jti={jti} ")), "{line}");
    }
}

#[test]
fn polling_is_used_when_asked() {
    let tmp = tempfile::tempdir().unwrap();
    publish(tmp.path(), &jwt("a", 1_700_000_000));
    let (watch, started) = spawn_watch_logged(&[
        tmp.path().to_str().unwrap(),
        "--poll",
        "--poll-interval",
        "50ms",
        "-o",
        "json",
    ]);
    assert_eq!(started["how"], "polling", "{started}");
    assert_eq!(
        started["jti"], "a",
        "the current token is logged: {started}"
    );
    publish(tmp.path(), &jwt("b", 1_700_000_100));
    let event = next_event(&watch);
    assert_eq!(event["new_jti"], "b", "{event}");
    assert_eq!(event["old_jti"], "a", "{event}");
}

#[test]
fn broken_layouts_are_error_events_then_recovery() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sa");
    std::fs::create_dir(&dir).unwrap();
    publish(&dir, &jwt("a", 1_700_000_000));
    let mut watch = spawn_watch(&[dir.to_str().unwrap(), "--output", "json", "--strict"]);

    // A dangling symlink among the visible names.
    symlink("..data/missing", dir.join("extra")).unwrap();
    let event = next_event(&watch);
    assert_eq!(event["event"], "error", "{event}");
    let errors = event["errors"].to_string();
    assert!(
        errors.contains("extra is a dangling symlink to ..data/missing"),
        "{event}"
    );
    std::fs::remove_file(dir.join("extra")).unwrap();
    let event = next_event(&watch);
    assert_eq!(event["event"], "recovered", "{event}");
    assert_eq!(event["jti"], "a", "{event}");

    // A token that does not parse, published properly: an error, not a rotation.
    publish(&dir, "this is not a token");
    let event = next_event(&watch);
    assert_eq!(event["event"], "error", "{event}");
    let errors = event["errors"].to_string();
    assert!(errors.contains("token does not parse"), "{event}");
    assert!(
        !errors.contains("this is not a token"),
        "never quotes the file"
    );

    // `..data` dangling: every link dangles with it.
    let version = std::fs::read_link(dir.join("..data")).unwrap();
    std::fs::rename(dir.join(&version), dir.join("..elsewhere")).unwrap();
    let event = next_event(&watch);
    assert_eq!(event["event"], "error", "{event}");
    assert!(
        event["errors"]
            .to_string()
            .contains("..data is a dangling symlink"),
        "{event}"
    );
    std::fs::rename(dir.join("..elsewhere"), dir.join(&version)).unwrap();
    let event = next_event(&watch);
    assert!(
        event["errors"].to_string().contains("token does not parse"),
        "{event}"
    );

    // A good token again: recovered, and a rotation from the last good one.
    publish(&dir, &jwt("b", 1_700_000_100));
    let event = next_event(&watch);
    assert_eq!(event["event"], "recovered", "{event}");
    let event = next_event(&watch);
    assert_eq!(event["event"], "rotation", "{event}");
    assert_eq!(event["old_jti"], "a");
    assert_eq!(event["new_jti"], "b");
    assert_eq!(event["consistent"], true);

    // A token written in place through its link: a rotation whose files did not change together.
    std::fs::write(dir.join("token"), jwt("c", 1_700_000_200)).unwrap();
    let event = next_event(&watch);
    assert_eq!(event["event"], "rotation", "{event}");
    assert_eq!(event["new_jti"], "c");
    assert_eq!(event["consistent"], false, "{event}");
    assert!(
        event["problems"].to_string().contains("written in place"),
        "{event}"
    );

    assert!(watch.child.try_wait().unwrap().is_none(), "still watching");
    watch.signal(Signal::TERM);
    let status = watch.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(1), "--strict fails after problems");
    assert!(watch.stderr_so_far().contains("--strict"));
}

#[test]
fn a_directory_that_appears_goes_and_comes_back() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("later");
    let (watch, started) = spawn_watch_logged(&[dir.to_str().unwrap(), "-o", "json"]);
    let message = started["message"].as_str().unwrap();
    assert!(message.contains("does not exist yet"), "{started}");
    assert_eq!(started["how"], "inotify", "{started}");

    std::fs::create_dir(&dir).unwrap();
    publish(&dir, &jwt("a", 1_700_000_000));
    let event = next_event(&watch);
    assert_eq!(event["event"], "rotation", "{event}");
    assert_eq!(event["old_jti"], Value::Null);
    assert_eq!(event["new_jti"], "a");
    assert_eq!(event["consistent"], true);

    std::fs::remove_dir_all(&dir).unwrap();
    let event = next_event(&watch);
    assert_eq!(event["event"], "error", "{event}");
    assert!(
        event["errors"].to_string().contains("does not exist"),
        "{event}"
    );

    std::fs::create_dir(&dir).unwrap();
    publish(&dir, &jwt("b", 1_700_000_100));
    let event = next_event(&watch);
    assert_eq!(event["event"], "recovered", "{event}");
    let event = next_event(&watch);
    assert_eq!(event["event"], "rotation", "{event}");
    assert_eq!(event["old_jti"], "a");
    assert_eq!(event["new_jti"], "b");

    // The new directory is watched, not only the old one's parent.
    publish(&dir, &jwt("c", 1_700_000_200));
    let event = next_event(&watch);
    assert_eq!(event["new_jti"], "c", "{event}");
}

#[test]
fn exec_runs_once_per_event_with_its_environment() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sa");
    std::fs::create_dir(&dir).unwrap();
    publish(&dir, &jwt("a", 1_700_000_000));
    let script = tmp.path().join("hook.sh");
    let out = tmp.path().join("calls");
    std::fs::write(
        &script,
        "#!/bin/sh\necho \"$PROJECTED_TOKEN_EVENT|$PROJECTED_TOKEN_JTI|$PROJECTED_TOKEN_OLD_JTI|$PROJECTED_TOKEN_CONSISTENT|$PROJECTED_TOKEN_ISSUED_AT|$PROJECTED_TOKEN_EXPIRES_AT|$PROJECTED_TOKEN_WARN_AFTER|$PROJECTED_TOKEN_DIR|$PROJECTED_TOKEN_PATH|${PROJECTED_TOKEN_WATCH_COUNT-unset}\" >> \"$1\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let exec = format!("{} {}", script.display(), out.display());
    let dir_arg = dir.to_str().unwrap();
    let mut watch = Running::spawn_with_env(
        &["watch", dir_arg, "--count", "2", "--exec", &exec],
        // Our own configuration must not leak into the command's environment.
        &[LOG, ("PROJECTED_TOKEN_WATCH_COUNT", "2")],
    );
    watch.wait_for_log("watching", STARTUP);
    publish(&dir, &jwt("b", 1_700_000_100));
    let first = watch.wait_for_stdout(" rotation ", EVENT);
    assert_eq!(first.len(), 1, "{first:?}");
    publish(&dir, &jwt("c", 1_700_000_200));
    let status = watch.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "--count 2 reached: {status}");

    // Every run finished before exit: exactly one line per rotation, in order.
    let calls = std::fs::read_to_string(&out).unwrap();
    let token = dir.join("token");
    let expect = |jti: &str, old: &str, iat: &str, exp: &str, warn: &str| {
        format!(
            "rotation|{jti}|{old}|true|{iat}|{exp}|{warn}|{}|{}|unset",
            dir.display(),
            token.display()
        )
    };
    assert_eq!(
        calls.lines().collect::<Vec<_>>(),
        vec![
            expect(
                "b",
                "a",
                "2023-11-14T22:15:00Z",
                "2023-11-14T22:25:00Z",
                "2023-11-14T22:23:00Z"
            ),
            expect(
                "c",
                "b",
                "2023-11-14T22:16:40Z",
                "2023-11-14T22:26:40Z",
                "2023-11-14T22:24:40Z"
            ),
        ]
    );
}

#[test]
fn timeout_and_count_exit_codes() {
    let tmp = tempfile::tempdir().unwrap();
    publish(tmp.path(), &jwt("a", 1_700_000_000));
    let dir = tmp.path().to_str().unwrap();
    let run = |args: &[&str]| {
        let started = Instant::now();
        let output = std::process::Command::new(common::BIN)
            .arg("watch")
            .args(args)
            .env(LOG.0, LOG.1)
            .output()
            .unwrap();
        (output, started.elapsed())
    };

    // --timeout before --count rotations: 1, saying how many were seen.
    let (output, _) = run(&[dir, "--count", "1", "--timeout", "300ms"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("0 of 1 rotations"), "{stderr}");
    assert!(output.stdout.is_empty());

    // --timeout alone: a bounded look, 0.
    let (output, elapsed) = run(&[dir, "--timeout", "300ms"]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert!(elapsed >= Duration::from_millis(300));

    // Bad arguments: 2, naming the flag.
    for (args, needle) in [
        (vec![dir, "--count", "0"], "--count"),
        (vec![dir, "--timeout", "0s"], "--timeout"),
        (vec![dir, "--token-path", "../token"], "--token-path"),
        (vec![dir, "--token-path", "/etc/token"], "--token-path"),
        (vec![dir, "--exec", " "], "--exec"),
    ] {
        let (output, _) = run(&args);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

/// Starts `watch DIR -o json ARGS` without waiting for its start-up line (a watch that hangs
/// on its first read never prints it).
fn spawn_watch_raw(dir: &Path, args: &[&str]) -> Running {
    let mut full = vec!["watch", dir.to_str().unwrap(), "--output", "json"];
    full.extend_from_slice(args);
    Running::spawn_with_env(&full, &[LOG])
}

/// A FIFO where the token is (at start, or later through `..data`) is an error event, never a
/// read that waits for a writer: `--timeout` and SIGTERM still end the process, with the exit
/// codes they always have.
#[test]
fn a_fifo_token_is_an_error_event_and_never_blocks() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sa");
    std::fs::create_dir(&dir).unwrap();
    plant_fifo(&dir.join("token"));

    // At start, bounded by --timeout: the error, then exit 0 (no --count), or 1 with --count.
    for (extra, code) in [(None, 0), (Some("1"), 1)] {
        let mut args = vec!["--timeout", "2s"];
        args.extend(extra.iter().flat_map(|n| ["--count", *n]));
        let mut watch = spawn_watch_raw(&dir, &args);
        let event = next_event(&watch);
        assert_eq!(event["event"], "error", "{event}");
        assert_eq!(
            event["errors"],
            json!(["token is a FIFO, not a regular file"]),
            "{event}"
        );
        let status = watch.wait_exit(Duration::from_secs(20));
        assert_eq!(status.code(), Some(code), "{args:?}: {status}");
    }

    // At start, without --timeout: SIGTERM ends it.
    let mut watch = spawn_watch_raw(&dir, &[]);
    assert_eq!(next_event(&watch)["event"], "error");
    watch.signal(Signal::TERM);
    assert!(watch.wait_exit(Duration::from_secs(20)).success());

    // Later: a good token, then the version's token and ca.crt swapped for FIFOs.
    std::fs::remove_file(dir.join("token")).unwrap();
    publish(&dir, &jwt("a", 1_700_000_000));
    let mut watch = spawn_watch(&[dir.to_str().unwrap(), "--output", "json"]);
    let version = dir.join(std::fs::read_link(dir.join("..data")).unwrap());
    for name in ["ca.crt", "token"] {
        replace_entry(&version, name, plant_fifo);
    }
    let errors = wait_for_error(&watch, "token is a FIFO, not a regular file");
    assert!(
        errors.contains(&json!("ca.crt is a FIFO, not a regular file")),
        "{errors:?}"
    );
    watch.signal(Signal::TERM);
    assert!(watch.wait_exit(Duration::from_secs(20)).success());
}

/// Error events until one lists `needle`; returns that event's errors.
fn wait_for_error(watch: &Running, needle: &str) -> Vec<Value> {
    loop {
        let event = next_event(watch);
        assert_eq!(event["event"], "error", "{event}");
        let errors = event["errors"].as_array().cloned().unwrap_or_default();
        if errors.contains(&json!(needle)) {
            return errors;
        }
    }
}
