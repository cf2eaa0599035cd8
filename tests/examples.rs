//! The example manifests parse as the Kubernetes objects they claim to be, and every
//! `PROJECTED_TOKEN_*` variable they set is one the binary reads.

mod common;

use std::process::Command;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR")))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn kubernetes_example_parses_and_uses_real_flags() {
    let docs: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(&read("examples/kubernetes/rbac.yaml")).expect("rbac YAML");
    let mut kinds = Vec::new();
    for doc in docs {
        let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
        match kind.as_str() {
            "ServiceAccount" => drop(serde_json::from_value::<ServiceAccount>(doc).expect("sa")),
            "Role" => {
                let role: Role = serde_json::from_value(doc).expect("role");
                let rule = &role.rules.unwrap_or_default()[0];
                assert_eq!(
                    rule.resources.as_deref(),
                    Some(&["serviceaccounts/token".to_owned()][..])
                );
                assert_eq!(rule.verbs, vec!["create".to_owned()]);
            }
            "RoleBinding" => drop(serde_json::from_value::<RoleBinding>(doc).expect("binding")),
            other => panic!("unexpected kind {other}"),
        }
        kinds.push(kind);
    }
    assert_eq!(
        kinds,
        ["ServiceAccount", "ServiceAccount", "Role", "RoleBinding"]
    );

    let deployment: Deployment =
        serde_saphyr::from_str(&read("examples/kubernetes/deployment.yaml")).expect("deployment");
    let pod = deployment.spec.template.spec.expect("pod spec");
    let help = Command::new(common::BIN)
        .args(["sidecar", "--help"])
        .output()
        .expect("sidecar --help");
    let help =
        String::from_utf8_lossy(&help.stdout).into_owned() + &String::from_utf8_lossy(&help.stderr);
    let containers = pod
        .init_containers
        .iter()
        .flatten()
        .chain(pod.containers.iter());
    let mut checked = 0;
    for container in containers.filter(|c| c.args.as_ref().is_some_and(|a| a[0] == "sidecar")) {
        for env in container.env.iter().flatten() {
            if env.name.starts_with("PROJECTED_TOKEN_") && env.name != "PROJECTED_TOKEN_LOG_FORMAT"
            {
                assert!(
                    help.contains(&format!("env: {}=", env.name)),
                    "{} is not a sidecar flag",
                    env.name
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 10, "only {checked} variables checked");
}

/// `examples/reload-test.sh` with `examples/token_client`: re-reading the token per request
/// passes `check`; reading it once fails it, naming that client.
#[test]
fn reload_test_script_passes_the_good_client_and_fails_the_read_once_one() {
    let client = common::example_binary("token_client");
    let script = format!("{}/examples/reload-test.sh", env!("CARGO_MANIFEST_DIR"));
    let run = |reload: &str| {
        let output = Command::new(&script)
            .arg(format!(
                "exec {:?} --reload {reload} --interval-ms 200 --credentials-dir \"$SERVICEACCOUNT_DIR\"",
                client.display().to_string()
            ))
            .env("PROJECTED_TOKEN_BIN", common::BIN)
            .env("DURATION", "8")
            .env("LIFETIME", "2")
            .output()
            .expect("run reload-test.sh");
        let text = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        (output.status.code(), text)
    };
    let ((good, good_text), (bad, bad_text)) = std::thread::scope(|s| {
        let good = s.spawn(|| run("per-request"));
        let bad = s.spawn(|| run("never"));
        (good.join().unwrap(), bad.join().unwrap())
    });
    assert_eq!(good, Some(0), "{good_text}");
    assert!(
        good_text.contains("all 1 clients within bounds"),
        "{good_text}"
    );
    assert!(
        good_text.contains("requests succeeded, 0 failed"),
        "{good_text}"
    );
    assert_eq!(bad, Some(1), "{bad_text}");
    assert!(bad_text.contains("token-client/read-once"), "{bad_text}");
    assert!(bad_text.contains("reload delay"), "{bad_text}");
}

/// A client command that fails is a failed test: crashing at once (no client ever reaches the
/// emulator, so `check` fails too), or after requests that kept within the bounds (`check`
/// passes, the script still fails). Both used to exit 0.
#[test]
fn reload_test_script_fails_when_the_client_command_fails() {
    let client = common::example_binary("token_client");
    let script = format!("{}/examples/reload-test.sh", env!("CARGO_MANIFEST_DIR"));
    let run = |command: String| {
        let output = Command::new(&script)
            .arg(command)
            .env("PROJECTED_TOKEN_BIN", common::BIN)
            .env("DURATION", "20")
            .env("LIFETIME", "2")
            .output()
            .expect("run reload-test.sh");
        let text = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        (output.status.code(), text)
    };
    let good_then_exit_3 = format!(
        "{:?} --interval-ms 200 --duration-secs 2 --credentials-dir \"$SERVICEACCOUNT_DIR\"; exit 3",
        client.display().to_string()
    );
    let ((crashed, crashed_text), (late, late_text)) = std::thread::scope(|s| {
        let crashed = s.spawn(|| run("exit 3".to_owned()));
        let late = s.spawn(|| run(good_then_exit_3));
        (crashed.join().unwrap(), late.join().unwrap())
    });
    assert_eq!(crashed, Some(1), "{crashed_text}");
    assert!(
        crashed_text.contains("the client exited with status 3"),
        "{crashed_text}"
    );
    assert!(
        crashed_text.contains("no client used a service account token"),
        "{crashed_text}"
    );
    assert_eq!(late, Some(1), "{late_text}");
    assert!(
        late_text.contains("all 1 clients within bounds"),
        "{late_text}"
    );
    assert!(
        late_text.contains("FAIL: the client command failed (exit status 3)"),
        "{late_text}"
    );
}
