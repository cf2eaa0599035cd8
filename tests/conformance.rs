//! `conformance` end to end with shell clients of curl: one that reads its token before every
//! request passes, one that reads it once fails with the reasons, and `--list` gives the
//! timings. Small bounds keep each run near ten seconds.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{output_within, BIN};

/// A client loop with curl at the in-cluster path; `$T` is the bearer token.
fn curl_loop(read_token: &str) -> String {
    let dir = "/var/run/secrets/kubernetes.io/serviceaccount";
    format!(
        "{read_token} while true; do curl -s --cacert {dir}/ca.crt -H \"Authorization: Bearer $T\" \
         https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT/api >/dev/null; sleep 0.3; done"
    )
}

fn conformance(logs: &std::path::Path, scenarios: &str, client: &str) -> std::process::Output {
    output_within(
        Command::new(BIN)
            .args([
                "conformance",
                "--max-reload-delay",
                "4s",
                "--scenario",
                scenarios,
            ])
            .arg("--log-dir")
            .arg(logs)
            .arg("--json")
            .arg(logs.join("results.json"))
            .arg("--junit")
            .arg(logs.join("results.xml"))
            .args(["--", "sh", "-c", client])
            .env_remove("PROJECTED_TOKEN_LOG"),
        Duration::from_secs(120),
    )
}

/// Why this machine cannot run the suite's clients, if it cannot.
fn missing() -> Option<String> {
    let runs = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(args)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !runs("curl", &["--version"]) {
        return Some("no curl".into());
    }
    // A private mount namespace for the clients: root, or unprivileged user namespaces.
    if !runs(
        "unshare",
        &["--user", "--mount", "--map-current-user", "true"],
    ) && !runs("unshare", &["--mount", "true"])
    {
        return Some(
            "no mount namespace for the clients (neither root nor user namespaces)".into(),
        );
    }
    None
}

#[test]
fn a_client_that_rereads_passes_and_one_that_reads_once_fails() {
    if let Some(why) = missing() {
        println!("SKIPPED: {why}");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let scenarios = "rotation,key-revocation,outage";
    let rereads = curl_loop("T=x;").replace(
        "do curl",
        "do T=$(cat /var/run/secrets/kubernetes.io/serviceaccount/token); curl",
    );
    let output = conformance(&tmp.path().join("good"), scenarios, &rereads);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for scenario in ["rotation", "key-revocation", "outage"] {
        assert!(stdout.contains(&format!("PASS {scenario}")), "{stdout}");
    }
    assert!(
        !stdout.contains(" INFO "),
        "the emulators' INFO lines stay out: {stdout}"
    );

    let once = curl_loop("T=$(cat /var/run/secrets/kubernetes.io/serviceaccount/token);");
    let output = conformance(&tmp.path().join("once"), "rotation,key-revocation", &once);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("FAIL rotation"), "{stdout}");
    assert!(
        stdout.contains("never used a replacement token"),
        "{stdout}"
    );
    assert!(stdout.contains("FAIL key-revocation"), "{stdout}");
    // Each scenario's client log is kept, and the results are written for CI.
    assert!(tmp.path().join("once/rotation.log").is_file());
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tmp.path().join("once/results.json")).expect("--json"),
    )
    .expect("JSON");
    assert_eq!(json["passed"], false);
    assert_eq!(json["max_reload_delay_seconds"], 4.0);
    let rotation = &json["scenarios"][0];
    assert_eq!(rotation["scenario"], "rotation", "{json}");
    assert_eq!(rotation["passed"], false);
    assert!(rotation["figures"]["uses"].as_u64() > Some(0), "{json}");
    let xml = std::fs::read_to_string(tmp.path().join("once/results.xml")).expect("--junit");
    assert!(xml.contains("tests=\"2\" failures=\"2\""), "{xml}");
    assert!(xml.contains("<testcase name=\"rotation\""), "{xml}");
    assert!(xml.contains("<failure message=\""), "{xml}");
}

#[test]
fn a_client_that_exits_at_once_fails_with_its_output() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let output = conformance(tmp.path(), "outage", "echo starting; exit 3");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("FAIL outage: the client exited before its first request"),
        "{stdout}"
    );
    assert!(stdout.contains("starting"), "the log's tail: {stdout}");
}

#[test]
fn list_gives_the_timings_and_bad_arguments_exit_2() {
    let output = output_within(
        Command::new(BIN).args(["conformance", "--list", "--max-reload-delay", "60s"]),
        Duration::from_secs(20),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(
        stdout.starts_with("Scenarios for --max-reload-delay 60s"),
        "{stdout}"
    );
    assert!(stdout.contains("tokens live 300s"), "{stdout}");
    let output = output_within(
        Command::new(BIN).args(["conformance", "--scenario", "rotations", "--", "true"]),
        Duration::from_secs(20),
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no such scenario"));
    let output = output_within(
        Command::new(BIN).arg("conformance"),
        Duration::from_secs(20),
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no client command"));
}
