//! End-to-end tests of the state directory: the emulator's identity (CA, signing key, admin
//! token, its objects' uids) survives a restart, and `--ephemeral` keeps nothing.

mod common;

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{https_client, wait_for_file, Running, BIN};
use projected_token::token::decode;
use rustix::process::Signal;

const STARTUP: Duration = Duration::from_secs(30);

/// What one run showed: its URL, the admin token file and content, `ca.crt`, the token.
struct Run {
    process: Running,
    url: String,
    admin_token_file: PathBuf,
    admin_token: String,
    ca_pem: String,
}

/// Starts the binary with `args` and `env`, without the test harness's admin token file.
fn start(args: &[&str], env: &[(&str, &Path)]) -> Run {
    let scratch = tempfile::tempdir().expect("scratch");
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env_remove("PROJECTED_TOKEN_ADMIN_TOKEN_FILE");
    for (name, value) in env {
        command.env(name, value);
    }
    let process = Running::from_command(command, scratch);
    let lines = process.wait_for_stdout("admin token file: ", STARTUP);
    let url = lines
        .iter()
        .find_map(|l| l.strip_prefix("serving https API on "))
        .expect("URL line")
        .to_owned();
    let admin_token_file = lines
        .last()
        .and_then(|l| l.strip_prefix("admin token file: "))
        .map(PathBuf::from)
        .expect("admin token line");
    let admin_token = std::fs::read_to_string(&admin_token_file).expect("admin token");
    Run {
        process,
        url,
        admin_token_file,
        admin_token,
        ca_pem: String::new(),
    }
}

/// Stops the run with SIGTERM; what it showed stays.
fn stop(mut run: Run) -> Run {
    run.process.signal(Signal::TERM);
    assert!(run.process.wait_exit(STARTUP).success());
    run
}

fn claims_and_kid(token: &str) -> (serde_json::Value, String) {
    let decoded = decode(token).expect("a JWT");
    let kid = decoded.header["kid"].as_str().expect("kid").to_owned();
    (serde_json::Value::Object(decoded.claims), kid)
}

/// `SelfSubjectReview` with `token`: the status code and the user name.
async fn whoami(url: &str, ca_pem: &str, token: &str) -> (u16, String) {
    let response = https_client(ca_pem, &[])
        .post(format!(
            "{url}/apis/authentication.k8s.io/v1/selfsubjectreviews"
        ))
        .bearer_auth(token)
        .json(&serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "SelfSubjectReview"
        }))
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    let user = body["status"]["userInfo"]["username"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    (status, user)
}

/// Two runs of `emulate` with one `--state-dir`: the same `ca.crt`, signing key (`kid`), admin
/// token (file and content) and pod uid, and the first run's token authenticates at the second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_the_identity_and_old_tokens_authenticate() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("serviceaccount");
    let state = tmp.path().join("state");
    let args = [
        "emulate",
        "--dir",
        dir.to_str().expect("utf-8"),
        "--state-dir",
        state.to_str().expect("utf-8"),
    ];
    // The first run, stopped before the second starts (same --listen default: a free port).
    let mut first = start(&args, &[]);
    wait_for_file(&dir.join("token"), STARTUP);
    first.ca_pem = std::fs::read_to_string(dir.join("ca.crt")).expect("ca.crt");
    let first_token = std::fs::read_to_string(dir.join("token")).expect("token");
    let first = stop(first);
    // A fresh volume, so the second run issues a new token rather than keeping the first.
    std::fs::remove_dir_all(&dir).expect("the volume");
    let mut second = start(&args, &[]);
    wait_for_file(&dir.join("token"), STARTUP);
    second.ca_pem = std::fs::read_to_string(dir.join("ca.crt")).expect("ca.crt");
    let second_token = std::fs::read_to_string(dir.join("token")).expect("token");

    assert_eq!(first.ca_pem, second.ca_pem, "ca.crt is kept");
    assert_eq!(first.admin_token_file, second.admin_token_file);
    assert_eq!(first.admin_token_file, state.join("admin-token"));
    assert_eq!(first.admin_token, second.admin_token, "admin token is kept");
    let (first_claims, first_kid) = claims_and_kid(&first_token);
    let (second_claims, second_kid) = claims_and_kid(&second_token);
    assert_ne!(first_token, second_token, "a new token at each start");
    assert_eq!(first_kid, second_kid, "the signing key is kept");
    for pointer in [
        "/kubernetes.io/pod/uid",
        "/kubernetes.io/serviceaccount/uid",
    ] {
        assert_eq!(
            first_claims.pointer(pointer),
            second_claims.pointer(pointer),
            "{pointer} is kept"
        );
    }

    let (status, user) = whoami(&second.url, &second.ca_pem, &first_token).await;
    assert_eq!(status, 201, "the first run's token at the second run");
    assert_eq!(user, "system:serviceaccount:default:default");
    let (status, _) = whoami(&second.url, &second.ca_pem, &second.admin_token).await;
    assert_eq!(status, 201, "the kept admin token");

    let user = rustix::process::geteuid().as_raw();
    let meta = std::fs::metadata(&state).expect("state dir");
    assert_eq!((meta.mode() & 0o777, meta.uid()), (0o700, user));
    let mut names: Vec<String> = std::fs::read_dir(&state)
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["admin-token", "ca.pem", "signing-key-rs256.pem", "uid-seed"]
    );
    for name in &names {
        let mode = std::fs::metadata(state.join(name)).expect("meta").mode() & 0o777;
        assert_eq!(mode, 0o600, "{name}");
    }
    stop(second);
}

/// Without `--state-dir` the state goes to `$XDG_STATE_HOME/projected-token` and is reused;
/// `--ephemeral` writes nothing there and starts with a new CA and admin token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_state_home_and_ephemeral() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let home = tmp.path().join("state-home");
    let env = [("XDG_STATE_HOME", home.as_path())];
    let ca_out = |n: usize| tmp.path().join(format!("ca-{n}.crt"));
    let mut seen = Vec::new();
    for (n, ephemeral) in [(0, false), (1, false), (2, true), (3, true)] {
        let ca_arg = format!("--ca-out={}", ca_out(n).display());
        let mut args = vec!["serve", ca_arg.as_str()];
        if ephemeral {
            args.push("--ephemeral");
        }
        let mut run = start(&args, &env);
        run.ca_pem = std::fs::read_to_string(ca_out(n)).expect("ca");
        let (status, _) = whoami(&run.url, &run.ca_pem, &run.admin_token).await;
        assert_eq!(status, 201);
        if !ephemeral {
            // ctl and check find the kept admin token without --token-file.
            let output = common::output_within(
                Command::new(BIN)
                    .args(["ctl", "status", "--server", &run.url, "--ca"])
                    .arg(ca_out(n))
                    .env_remove("PROJECTED_TOKEN_TOKEN_FILE")
                    .env("XDG_STATE_HOME", &home),
                STARTUP,
            );
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(output.status.success(), "ctl status: {stderr}");
        }
        seen.push((
            run.ca_pem.clone(),
            run.admin_token.clone(),
            run.admin_token_file.clone(),
        ));
        stop(run);
    }
    let kept = home.join("projected-token");
    assert_eq!(seen[0], seen[1], "the default state directory is reused");
    assert_eq!(seen[0].2, kept.join("admin-token"));
    for ephemeral in &seen[2..] {
        assert_ne!(ephemeral.0, seen[0].0, "--ephemeral: a new CA");
        assert_ne!(ephemeral.1, seen[0].1, "--ephemeral: a new admin token");
        assert!(!ephemeral.2.starts_with(&kept));
        assert!(!ephemeral.2.exists(), "its admin token went with it");
    }
    assert_ne!(seen[2].0, seen[3].0);
}

/// A state file others can read is refused with exit 2, naming the file and the fix.
#[test]
fn insecure_state_is_refused() {
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = tempfile::tempdir().expect("tempdir");
    let state = tmp.path().join("state");
    std::fs::create_dir(&state).expect("mkdir");
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    std::fs::write(state.join("admin-token"), "known-to-all").expect("write");
    std::fs::set_permissions(
        state.join("admin-token"),
        std::fs::Permissions::from_mode(0o644),
    )
    .expect("chmod");
    let output = common::output_within(
        Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--state-dir"])
            .arg(&state),
        Duration::from_secs(15),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("admin-token"), "{stderr}");
    assert!(stderr.contains("mode 0644"), "{stderr}");
}
