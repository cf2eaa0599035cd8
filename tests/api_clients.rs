//! Real clients against the emulator over HTTPS: kubectl (`create token`, `auth whoami`), and two
//! Rust clients configured in-cluster style from the projected directory, one that re-reads the
//! token file for every request and one that reads it once, judged by `check`.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{kubectl, Emulator, BIN};

#[test]
fn kubectl_create_token_and_auth_whoami() {
    let kubectl = match kubectl() {
        Ok(path) => path,
        Err(reason) => {
            eprintln!("SKIPPED kubectl_create_token_and_auth_whoami: {reason}");
            return;
        }
    };
    let root = tempfile::tempdir().expect("tempdir");
    let emulator = Emulator::start(root.path(), &[]);
    let ca = emulator.dir.join("ca.crt");
    let admin = std::fs::read_to_string(&emulator.admin_token_file).expect("admin token");
    // An isolated HOME: no kubeconfig or cache of the developer's leaks in.
    let home = root.path().join("home");
    std::fs::create_dir_all(&home).expect("home");
    let run = |token: &str, args: &[&str]| {
        let output = Command::new(&kubectl)
            .env("HOME", &home)
            .env_remove("KUBECONFIG")
            .arg("--server")
            .arg(&emulator.url)
            .arg("--certificate-authority")
            .arg(&ca)
            .arg("--token")
            .arg(token)
            .args(args)
            .output()
            .expect("run kubectl");
        assert!(
            output.status.success(),
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    };

    let token = run(
        admin.trim(),
        &[
            "create",
            "token",
            "builder",
            "-n",
            "ci",
            "--duration",
            "10m",
            "--audience",
            "vault",
        ],
    );
    let decoded = projected_token::token::decode(&token).expect("kubectl printed a JWT");
    assert_eq!(
        decoded.string_claim("sub"),
        Some("system:serviceaccount:ci:builder")
    );
    assert_eq!(decoded.audiences(), vec!["vault".to_owned()]);
    let lifetime =
        decoded.numeric_claim("exp").unwrap_or(0) - decoded.numeric_claim("iat").unwrap_or(0);
    assert_eq!(lifetime, 600);

    // A token for the API audience can ask who it is.
    let api_token = run(admin.trim(), &["create", "token", "builder", "-n", "ci"]);
    let whoami: serde_json::Value =
        serde_json::from_str(&run(&api_token, &["auth", "whoami", "-o", "json"])).expect("JSON");
    assert_eq!(whoami["kind"], "SelfSubjectReview");
    let user = &whoami["status"]["userInfo"];
    assert_eq!(user["username"], "system:serviceaccount:ci:builder");
    assert_eq!(
        user["groups"],
        serde_json::json!([
            "system:serviceaccounts",
            "system:serviceaccounts:ci",
            "system:authenticated"
        ])
    );
    let jti = projected_token::token::decode(&api_token)
        .ok()
        .and_then(|d| d.string_claim("jti").map(str::to_owned))
        .unwrap_or_default();
    assert_eq!(
        user["extra"]["authentication.kubernetes.io/credential-id"],
        serde_json::json!([format!("JTI={jti}")])
    );
    // `get` shows the service accounts and pods tokens are bound to, as in a cluster.
    let accounts = run(admin.trim(), &["get", "serviceaccounts", "-A"]);
    let rows: Vec<Vec<&str>> = accounts
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows.first().map(Vec::as_slice),
        Some(&["NAMESPACE", "NAME", "SECRETS", "AGE"][..]),
        "{accounts}"
    );
    assert!(
        rows.iter().any(|r| r[..2] == ["ci", "builder"]),
        "{accounts}"
    );
    assert!(
        rows.iter().any(|r| r[..2] == ["default", "default"]),
        "{accounts}"
    );
    let pods = run(admin.trim(), &["get", "pods", "-o", "wide"]);
    assert!(
        pods.lines().any(|l| l.starts_with("emulated-pod ")
            && l.contains("Running")
            && l.contains("emulated-node")),
        "{pods}"
    );
    let resources = run(admin.trim(), &["api-resources", "--api-group="]);
    assert!(
        resources.lines().any(|l| l.starts_with("serviceaccounts ")),
        "{resources}"
    );
    assert!(
        resources.lines().any(|l| l.starts_with("pods ")),
        "{resources}"
    );
    // The projected token of the emulated pod works for kubectl too.
    let projected = std::fs::read_to_string(emulator.dir.join("token")).expect("token");
    let whoami = run(&projected, &["auth", "whoami"]);
    assert!(
        whoami.contains("system:serviceaccount:default:default"),
        "{whoami}"
    );
    drop(emulator.process);
}

/// kubectl with the client certificate `--admin-client-cert-out` wrote and no token: it is
/// `kubernetes-admin` in `system:masters`, and may create tokens.
#[test]
fn kubectl_with_admin_client_certificate() {
    let kubectl = match kubectl() {
        Ok(path) => path,
        Err(reason) => {
            eprintln!("SKIPPED kubectl_with_admin_client_certificate: {reason}");
            return;
        }
    };
    let root = tempfile::tempdir().expect("tempdir");
    let certs = root.path().join("admin-cert");
    let certs_arg = certs.to_string_lossy().into_owned();
    let emulator = Emulator::start(root.path(), &["--admin-client-cert-out", &certs_arg]);
    let home = root.path().join("home");
    std::fs::create_dir_all(&home).expect("home");
    let run = |args: &[&str]| {
        let output = Command::new(&kubectl)
            .env("HOME", &home)
            .env_remove("KUBECONFIG")
            .arg("--request-timeout=20s")
            .arg("--server")
            .arg(&emulator.url)
            .arg("--certificate-authority")
            .arg(emulator.dir.join("ca.crt"))
            .arg("--client-certificate")
            .arg(certs.join("admin.crt"))
            .arg("--client-key")
            .arg(certs.join("admin.key"))
            .args(args)
            .output()
            .expect("run kubectl");
        assert!(
            output.status.success(),
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    };

    let whoami = run(&["auth", "whoami"]);
    assert!(whoami.contains("kubernetes-admin"), "{whoami}");
    assert!(whoami.contains("system:masters"), "{whoami}");
    let token = run(&["create", "token", "builder", "-n", "ci"]);
    let decoded = projected_token::token::decode(&token).expect("kubectl printed a JWT");
    assert_eq!(
        decoded.string_claim("sub"),
        Some("system:serviceaccount:ci:builder")
    );
    drop(emulator.process);
}

/// How a test client treats its token.
#[derive(Clone, Copy)]
enum Reload {
    /// Reads the token file before every request, as a well-behaved client.
    EveryRequest,
    /// Reads it once at start and keeps it.
    Never,
}

/// Runs an in-cluster style client for `duration`: CA and token from the projected directory,
/// a SelfSubjectReview every 200 ms. Returns how many requests succeeded.
fn run_client(emulator: &Emulator, reload: Reload, user_agent: &str, duration: Duration) -> usize {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let ca = std::fs::read(emulator.dir.join("ca.crt")).expect("ca.crt");
        let client = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(&ca).expect("CA PEM")])
            .user_agent(user_agent)
            .timeout(Duration::from_secs(5))
            .build()
            .expect("client");
        let token_path = emulator.dir.join("token");
        let first = std::fs::read_to_string(&token_path).expect("token");
        let url = format!(
            "{}/apis/authentication.k8s.io/v1/selfsubjectreviews",
            emulator.url
        );
        let started = Instant::now();
        let mut ok = 0;
        while started.elapsed() < duration {
            let token = match reload {
                Reload::EveryRequest => std::fs::read_to_string(&token_path).expect("token"),
                Reload::Never => first.clone(),
            };
            let response = client
                .post(&url)
                .bearer_auth(token)
                .header("content-type", "application/json")
                .body(r#"{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}"#)
                .send()
                .await
                .expect("request");
            if response.status().as_u16() == 201 {
                ok += 1;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        ok
    })
}

fn check(emulator: &Emulator) -> (i32, String) {
    let output = Command::new(BIN)
        .arg("check")
        .arg("--server")
        .arg(&emulator.url)
        .arg("--ca")
        .arg(emulator.dir.join("ca.crt"))
        .arg("--token-file")
        .arg(&emulator.admin_token_file)
        .arg("--max-reload-delay")
        .arg("1s")
        .output()
        .expect("run check");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[test]
fn client_that_reads_its_token_once_fails_check_and_one_that_reloads_passes() {
    let client_time = Duration::from_secs(6);
    // Two emulators, so each `check` judges one client.
    let good_root = tempfile::tempdir().expect("tempdir");
    let bad_root = tempfile::tempdir().expect("tempdir");
    let good = Emulator::start(good_root.path(), &["--expiration-seconds", "2"]);
    let bad = Emulator::start(bad_root.path(), &["--expiration-seconds", "2"]);

    let good_ok = run_client(
        &good,
        Reload::EveryRequest,
        "reloading-client/1.0",
        client_time,
    );
    let bad_ok = run_client(&bad, Reload::Never, "read-once-client/1.0", client_time);
    // Like in production, the extended default token keeps working for the client that never
    // reloads: it is stale, not rejected.
    assert!(
        good_ok >= 20,
        "reloading client: {good_ok} requests succeeded"
    );
    assert!(
        bad_ok >= 20,
        "read-once client: {bad_ok} requests succeeded"
    );

    let (code, table) = check(&good);
    assert_eq!(code, 0, "reloading client should pass check:\n{table}");
    let (code, table) = check(&bad);
    assert_eq!(code, 1, "read-once client should fail check:\n{table}");
    assert!(table.contains("read-once-client/1.0"), "{table}");
    assert!(table.contains("emulated-pod"), "{table}");
    drop(good.process);
    drop(bad.process);
}
