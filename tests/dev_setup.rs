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

/// The recipe of docs/sidecar.md ("Test the sidecar locally"): `emulate --kubeconfig-out` makes a
/// kubeconfig the sidecar uses as it is; the sidecar's token is the emulator's and names the
/// requested service account.
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

/// Pod-bound tokens are shaped as a 1.32+ cluster's: the default emulated pod runs on an
/// emulated node whose name and uid are in its token (and printed at start); a `--pod` on a node
/// declared in `--objects` gets that node's uid.
#[test]
fn projected_tokens_carry_the_node_name_and_uid() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("default");
    let emulate = Running::spawn(&["emulate", "--dir", dir.to_str().expect("utf-8")]);
    let summary = emulate.wait_for_stdout("  node:", STARTUP);
    let printed = summary.last().expect("node line").to_owned();
    wait_for_file(&dir.join("token"), STARTUP);
    let claims = decode(&std::fs::read_to_string(dir.join("token")).expect("token"))
        .expect("a JWT")
        .claims;
    let node = &claims["kubernetes.io"]["node"];
    assert_eq!(node["name"], "emulated-node");
    let uid = node["uid"].as_str().expect("node uid");
    assert!(uuid_like(uid), "{uid}");
    assert_eq!(
        printed.trim(),
        format!("node:            emulated-node (uid {uid})")
    );
    drop(emulate);

    let pod = tmp.path().join("pod.yaml");
    std::fs::write(
        &pod,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: app, namespace: team}\n\
         spec:\n  nodeName: worker-1\n  serviceAccountName: app\n  containers: [{name: c, image: x}]\n\
         \x20 volumes:\n  - name: tokens\n    projected:\n      sources:\n      - serviceAccountToken: {path: token, audience: vault}\n",
    )
    .expect("pod");
    let objects = tmp.path().join("objects.yaml");
    std::fs::write(
        &objects,
        "apiVersion: v1\nkind: Node\nmetadata: {name: worker-1, uid: 6d3c1a2e-0000-4000-8000-000000000001}\n",
    )
    .expect("objects");
    let volumes = tmp.path().join("volumes");
    let _emulate = Running::spawn(&[
        "emulate",
        "--dir",
        volumes.to_str().expect("utf-8"),
        "--pod",
        pod.to_str().expect("utf-8"),
        "--objects",
        objects.to_str().expect("utf-8"),
    ]);
    let token = volumes.join("tokens/token");
    wait_for_file(&token, STARTUP);
    let claims = decode(&std::fs::read_to_string(&token).expect("token"))
        .expect("a JWT")
        .claims;
    assert_eq!(
        claims["kubernetes.io"]["node"],
        serde_json::json!({"name": "worker-1", "uid": "6d3c1a2e-0000-4000-8000-000000000001"})
    );
}

fn uuid_like(text: &str) -> bool {
    let parts: Vec<&str> = text.split('-').collect();
    parts.iter().map(|p| p.len()).collect::<Vec<_>>() == [8, 4, 4, 4, 12]
        && text.chars().all(|c| c == '-' || c.is_ascii_hexdigit())
}
