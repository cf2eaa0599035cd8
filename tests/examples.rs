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
