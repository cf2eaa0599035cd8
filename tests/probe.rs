//! End-to-end tests of `probe`: the real binary against a real `emulate` directory and API, and
//! against inputs that would block a naive reader (FIFOs, a server that never answers).

mod common;

use std::ffi::CString;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Running;
use projected_token::projection::atomic_writer::{AtomicWriter, WriterOptions};
use projected_token::projection::payload::{FileProjection, Payload};

/// Far longer than a probe may take (its default --timeout is 3 s): a probe still running then
/// has hung, and the test says so instead of hanging too.
const HUNG: Duration = Duration::from_secs(20);

struct Probed {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `probe ARGS` and returns its exit code and output; fails the test if it hangs.
fn probe(args: &[&str]) -> Probed {
    let mut child = Command::new(common::BIN)
        .arg("probe")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn probe");
    let deadline = Instant::now() + HUNG;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("probe {args:?} still running after {HUNG:?}: it hung");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut stdout)
        .expect("read stdout");
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    Probed {
        code: status.code().expect("exit code, not a signal"),
        stdout,
        stderr,
    }
}

fn mkfifo(path: &Path) {
    let c_path = CString::new(path.as_os_str().as_bytes()).expect("path");
    rustix::fs::mkfifoat(rustix::fs::CWD, c_path.as_c_str(), 0o600.into()).expect("mkfifo");
}

/// Writes `token`, `ca.crt` and `namespace` as the kubelet does and returns the version
/// directory's path.
fn publish(dir: &Path, token: &str) -> std::path::PathBuf {
    let mut payload = Payload::new();
    for (name, data) in [("token", token), ("ca.crt", "ca"), ("namespace", "default")] {
        payload.insert(
            name.into(),
            FileProjection {
                data: data.as_bytes().into(),
                mode: 0o644,
                fs_user: None,
            },
        );
    }
    let options = WriterOptions {
        fsync: false,
        fs_group: None,
    };
    AtomicWriter::new(dir, options)
        .write(&payload)
        .expect("write the payload");
    std::fs::canonicalize(dir.join("..data")).expect("..data resolves")
}

#[test]
fn probe_fails_until_emulate_writes_the_first_token_then_passes() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("serviceaccount");
    let dir_arg = dir.to_str().expect("UTF-8 path");

    let missing = probe(&["--dir", dir_arg]);
    assert_eq!(missing.code, 1, "{}", missing.stderr);
    assert_eq!(
        missing.stderr.trim(),
        format!("error: {dir_arg} not ready: the directory does not exist (yet)")
    );
    std::fs::create_dir(&dir).expect("mkdir");
    let empty = probe(&["--dir", dir_arg]);
    assert_eq!(empty.code, 1, "{}", empty.stderr);
    assert!(empty.stderr.contains("no ..data yet"), "{}", empty.stderr);
    assert_eq!(
        empty.stderr.lines().count(),
        1,
        "one line: {}",
        empty.stderr
    );

    let ca = tmp.path().join("ca.pem");
    let ca_arg = format!("--ca-out={}", ca.display());
    let emulate = Running::spawn(&[
        "emulate",
        "--dir",
        dir_arg,
        &ca_arg,
        "--expiration-seconds",
        "3",
        "--key-algorithm",
        "es256",
        "--no-fsync",
    ]);
    let lines = emulate.wait_for_stdout("admin token file: ", common::SERVE_STARTUP);
    let url = lines
        .iter()
        .find_map(|l| l.strip_prefix("serving https API on "))
        .expect("the API's URL")
        .to_owned();

    let deadline = Instant::now() + Duration::from_secs(30);
    let ready = loop {
        let probed = probe(&["--dir", dir_arg]);
        if probed.code == 0 {
            break probed;
        }
        assert_eq!(probed.code, 1, "{}", probed.stderr);
        assert!(
            Instant::now() < deadline,
            "no ready verdict within 30 s: {}",
            probed.stderr
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        ready
            .stdout
            .starts_with(&format!("{dir_arg}: ready (token expires at ")),
        "{}",
        ready.stdout
    );
    // Rotations keep it ready (3-second tokens: a new one every ~2.4 s).
    std::thread::sleep(Duration::from_secs(4));
    let readyz = format!("{url}/readyz");
    let both = probe(&[
        "--dir",
        dir_arg,
        "--url",
        &readyz,
        "--ca",
        ca.to_str().expect("UTF-8 path"),
    ]);
    assert_eq!(both.code, 0, "{}", both.stderr);
    assert_eq!(both.stdout.lines().count(), 2, "{}", both.stdout);
    assert!(
        both.stdout.contains(&format!("{readyz}: ready (200 OK)")),
        "{}",
        both.stdout
    );

    // The API's certificate is not from a CA the platform trusts.
    let untrusted = probe(&["--url", &readyz]);
    assert_eq!(untrusted.code, 1, "{}", untrusted.stderr);
    assert!(
        untrusted.stderr.contains("UnknownIssuer"),
        "{}",
        untrusted.stderr
    );
    // A path the server does not have: its status and the start of its answer.
    let missing_path = probe(&[
        "--url",
        &format!("{url}/nope"),
        "--ca",
        ca.to_str().expect("UTF-8 path"),
    ]);
    assert_eq!(missing_path.code, 1, "{}", missing_path.stderr);
    assert!(
        missing_path.stderr.contains("answered 404 Not Found"),
        "{}",
        missing_path.stderr
    );

    // Stopped: the API no longer answers; the last token is still a usable one.
    emulate.signal(rustix::process::Signal::TERM);
    let mut emulate = emulate;
    assert!(emulate.wait_exit(Duration::from_secs(20)).success());
    let stopped = probe(&["--url", &readyz, "--ca", ca.to_str().expect("UTF-8 path")]);
    assert_eq!(stopped.code, 1, "{}", stopped.stderr);
    assert!(stopped.stderr.contains(&readyz), "{}", stopped.stderr);
    assert_eq!(probe(&["--dir", dir_arg]).code, 0);
}

#[test]
fn a_fifo_in_the_volume_never_hangs_the_probe() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    let dir_arg = dir.to_str().expect("UTF-8 path");
    // A token that is a JWT and far from expiry.
    let token = format!(
        "eyJhbGciOiJFUzI1NiJ9.{}.c2ln",
        base64_url(&format!(
            r#"{{"exp":{},"jti":"live"}}"#,
            jiff::Timestamp::now().as_second() + 3600
        ))
    );
    let version = publish(dir, &token);
    let ok = probe(&["--dir", dir_arg]);
    assert_eq!(ok.code, 0, "{}", ok.stderr);

    // The token, through `..data`, becomes a FIFO: opening it would wait for a writer forever.
    std::fs::remove_file(version.join("token")).expect("rm token");
    mkfifo(&version.join("token"));
    let fifo = probe(&["--dir", dir_arg]);
    assert_eq!(fifo.code, 1, "{}", fifo.stderr);
    assert_eq!(
        fifo.stderr.trim(),
        format!("error: {dir_arg} not ready: token is a FIFO, not a regular file")
    );

    // A FIFO as ca.crt: not read either (the snapshot says what it is), and the client could
    // not read it.
    std::fs::remove_file(version.join("token")).expect("rm fifo");
    std::fs::write(version.join("token"), &token).expect("token back");
    std::fs::remove_file(version.join("ca.crt")).expect("rm ca.crt");
    mkfifo(&version.join("ca.crt"));
    let ca = probe(&["--dir", dir_arg]);
    assert_eq!(ca.code, 1, "{}", ca.stderr);
    assert!(
        ca.stderr.contains("ca.crt is a FIFO, not a regular file"),
        "{}",
        ca.stderr
    );

    // Whatever else blocks (here: a FIFO given as --ca, which the probe does open), the deadline
    // ends the probe with the step it was at.
    let ca_fifo = tmp.path().join("ca-fifo");
    mkfifo(&ca_fifo);
    let started = Instant::now();
    let blocked = probe(&[
        "--url",
        "https://127.0.0.1:9/readyz",
        "--ca",
        ca_fifo.to_str().expect("UTF-8 path"),
        "--timeout",
        "1s",
    ]);
    assert_eq!(blocked.code, 1, "{}", blocked.stderr);
    assert_eq!(
        blocked.stderr.trim(),
        "error: GET https://127.0.0.1:9/readyz: no verdict within 1s (--timeout)"
    );
    assert!(started.elapsed() < HUNG);
}

#[test]
fn a_server_that_never_answers_is_a_failure_at_the_timeout() {
    // Connections complete in the kernel's backlog; nothing ever reads them.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!(
        "http://{}/readyz",
        silent.local_addr().expect("local address")
    );
    let probed = probe(&["--url", &url, "--timeout", "1s"]);
    assert_eq!(probed.code, 1, "{}", probed.stderr);
    assert!(probed.stderr.contains(&url), "{}", probed.stderr);
    assert_eq!(probed.stderr.lines().count(), 1, "{}", probed.stderr);
}

#[test]
fn bad_arguments_exit_2() {
    let none = probe(&[]);
    assert_eq!(none.code, 2, "{}", none.stderr);
    assert!(none.stderr.contains("--dir"), "{}", none.stderr);
    let escape = probe(&["--dir", "/tmp", "--token-path", "../token"]);
    assert_eq!(escape.code, 2, "{}", escape.stderr);
    assert!(escape.stderr.contains("--token-path"), "{}", escape.stderr);
    let plain_ca = probe(&["--url", "http://127.0.0.1:9/", "--ca", "/dev/null"]);
    assert_eq!(plain_ca.code, 2, "{}", plain_ca.stderr);
    assert!(
        plain_ca.stderr.contains("--ca is for an https"),
        "{}",
        plain_ca.stderr
    );
    let scheme = probe(&["--url", "ftp://127.0.0.1/"]);
    assert_eq!(scheme.code, 2, "{}", scheme.stderr);
}

fn base64_url(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}
