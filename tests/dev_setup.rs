//! End-to-end tests of local dev setups: the sidecar against the emulator through
//! `--kubeconfig-out`, and a start that fails on its listen address writing nothing.

mod common;

use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use common::{output_within, wait_for_file, Running, BIN};
use projected_token::token::decode;
use rustix::process::Signal;

const STARTUP: Duration = Duration::from_secs(30);

/// The README's recipe: `emulate --kubeconfig-out` makes a kubeconfig the sidecar uses as it
/// is; the sidecar's token is the emulator's and names the requested service account.
#[test]
fn sidecar_runs_against_the_emulator_with_its_kubeconfig() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let kubeconfig = tmp.path().join("emulator.kubeconfig");
    let emulate = Running::spawn(&[
        "emulate",
        "--dir",
        tmp.path().join("emulated").to_str().expect("utf-8"),
        "--kubeconfig-out",
        kubeconfig.to_str().expect("utf-8"),
    ]);
    emulate.wait_for_stdout("admin token file: ", STARTUP);
    let text = std::fs::read_to_string(&kubeconfig).expect("--kubeconfig-out written when ready");
    assert!(text.contains("tokenFile:"), "{text}");
    let mode = std::os::unix::fs::MetadataExt::mode(&std::fs::metadata(&kubeconfig).expect("meta"));
    assert_eq!(mode & 0o777, 0o600);

    let volume = tmp.path().join("vault-token");
    let mut sidecar = Running::spawn(&[
        "sidecar",
        "--kubeconfig",
        kubeconfig.to_str().expect("utf-8"),
        "--service-account",
        "vault-client",
        "--audience",
        "vault",
        "--dir",
        volume.to_str().expect("utf-8"),
    ]);
    wait_for_file(&volume.join("token"), STARTUP);
    let token = std::fs::read_to_string(volume.join("token")).expect("token");
    let claims = decode(&token).expect("a JWT").claims;
    assert_eq!(claims["sub"], "system:serviceaccount:default:vault-client");
    assert_eq!(claims["aud"], serde_json::json!(["vault"]));
    let emulated_ca =
        std::fs::read_to_string(tmp.path().join("emulated/ca.crt")).expect("emulated ca.crt");
    assert_eq!(
        std::fs::read_to_string(volume.join("ca.crt")).expect("ca.crt"),
        emulated_ca,
        "the sidecar projects the kubeconfig's CA"
    );
    sidecar.signal(Signal::TERM);
    assert!(sidecar.wait_exit(STARTUP).success());
}

/// A taken `--listen` port fails the start (exit 1, naming the flag) before `--dir` is made.
#[test]
fn a_taken_port_fails_before_anything_is_written() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let dir = tmp.path().join("serviceaccount");
    let output = output_within(
        Command::new(BIN)
            .arg("emulate")
            .arg("--dir")
            .arg(&dir)
            .arg("--listen")
            .arg(&addr)
            .env("XDG_STATE_HOME", tmp.path().join("state")),
        STARTUP,
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("--listen {addr}")), "{stderr}");
    assert!(!dir.exists(), "--dir was created: {stderr}");
    assert!(
        !tmp.path().join("state").exists(),
        "nothing of the state either"
    );
}
