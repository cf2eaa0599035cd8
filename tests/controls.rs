//! The emulator's controls end to end: the real `emulate` (or `serve`) binary, driven by the real
//! `ctl` command and raw HTTPS, with the effect on clients asserted: the token a client reads from
//! the projected directory, used as a bearer token and under TokenReview, and the JWKS.

mod common;

use std::time::{Duration, Instant};

use common::{assert_ctl_success, run_ctl, send, start_serve, Emulator, Reply, SOON};
use reqwest::Method;
use serde_json::{json, Value};

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The command exited with `code` and said `needle` on stderr.
fn assert_failed(output: &std::process::Output, code: i32, needle: &str) {
    let said = stderr(output);
    assert_eq!(output.status.code(), Some(code), "{said}");
    assert!(said.contains(needle), "expected {needle:?} in: {said}");
}

fn decoded(token: &str) -> projected_token::token::DecodedToken {
    projected_token::token::decode(token).expect("a JWT")
}

fn kid(token: &str) -> String {
    decoded(token).header["kid"]
        .as_str()
        .expect("kid")
        .to_owned()
}

/// Asserts one event of `control` by the admin with this verb, URI and code; returns its details.
fn assert_audited(events: &[Value], verb: &str, uri: &str, code: u16) -> String {
    let event = events
        .iter()
        .find(|e| e["requestURI"] == uri && e["responseStatus"]["code"] == code)
        .unwrap_or_else(|| panic!("no audit event for {uri} with {code}: {events:?}"));
    assert_eq!(event["verb"], verb, "{event}");
    assert_eq!(event["user"]["username"], "system:admin", "{event}");
    assert_eq!(
        event["annotations"]["authorization.k8s.io/decision"], "allow",
        "{event}"
    );
    event["annotations"]["projected-token/control-details"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_now_replaces_the_pods_tokens_and_refuses_unknown_pods() {
    let emulator = Emulator::builder().start();
    let first = emulator.token();
    let status = emulator.ctl_json(&["status"]);
    assert_eq!(status["kind"], "ControlStatus");
    let pods = status["projector"]["pods"].as_array().expect("pods");
    assert_eq!(pods.len(), 1, "{status}");
    assert_eq!(pods[0]["name"], "emulated-pod");

    // One pod: the default tokens live an hour, so only the control can have rotated it.
    let output = emulator.ctl(&["rotate", "--pod", "emulated-pod", "--namespace", "default"]);
    assert_ctl_success(&output, &["rotate"]);
    assert!(
        stdout(&output).starts_with("rotating now: default/emulated-pod volume kube-api-access-"),
        "{}",
        stdout(&output)
    );
    let second = emulator.next_token(&first);
    assert_ne!(
        decoded(&first).string_claim("jti"),
        decoded(&second).string_claim("jti")
    );
    assert_eq!(emulator.whoami(&second).await.status, 201);

    // Every token.
    let answer = emulator.ctl_json(&["rotate"]);
    assert_eq!(answer["kind"], "TokenRotation");
    assert_eq!(
        answer["volumes"].as_array().map(Vec::len),
        Some(1),
        "{answer}"
    );
    let third = emulator.next_token(&second);
    assert_eq!(emulator.whoami(&third).await.status, 201);

    // A pod the emulator does not project: 404, exit 2, and nothing rotated.
    let output = emulator.ctl(&["rotate", "--pod", "ghost"]);
    assert_failed(&output, 2, "pods \"ghost\" not found");
    assert!(
        stderr(&output).contains("default/emulated-pod"),
        "{}",
        stderr(&output)
    );

    let events = emulator.audit_events("rotate-tokens");
    let details = assert_audited(&events, "post", "/projected-token/v1/tokens/rotate", 202);
    assert!(
        details.contains("default/emulated-pod volume kube-api-access-"),
        "{details}"
    );
    assert_audited(&events, "post", "/projected-token/v1/tokens/rotate", 404);
    assert_eq!(events.len(), 3, "{events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_key_rotation_with_grace_keeps_old_tokens_until_it_ends() {
    let emulator = Emulator::builder().start();
    let old_token = emulator.token();
    let old_kid = kid(&old_token);
    assert_eq!(emulator.jwks_kids().await, std::slice::from_ref(&old_kid));

    let answer = emulator.ctl_json(&["rotate-key", "--grace", "6s", "--rotate-tokens"]);
    assert_eq!(answer["kind"], "SigningKeyRotation");
    assert_eq!(answer["oldKid"], old_kid.as_str());
    let new_kid = answer["newKid"].as_str().expect("newKid").to_owned();
    assert_ne!(new_kid, old_kid);
    assert_eq!(answer["algorithm"], "ES256");

    // During the grace period: both keys published, old and new tokens accepted.
    assert_eq!(
        emulator.jwks_kids().await,
        [new_kid.clone(), old_kid.clone()]
    );
    let new_token = emulator.next_token(&old_token);
    assert_eq!(
        kid(&new_token),
        new_kid,
        "--rotate-tokens re-signs the projected token"
    );
    let review = emulator.review(&old_token).await;
    assert_eq!(review["authenticated"], true, "{review}");
    assert_eq!(emulator.whoami(&old_token).await.status, 201);
    assert_eq!(emulator.whoami(&new_token).await.status, 201);

    // After it: the old key is gone, and so are its tokens; the new ones still work.
    let deadline = Instant::now() + SOON;
    while emulator.jwks_kids().await.len() > 1 {
        assert!(Instant::now() < deadline, "the old key stayed in the JWKS");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(emulator.jwks_kids().await, std::slice::from_ref(&new_kid));
    let review = emulator.review(&old_token).await;
    assert_eq!(review["authenticated"], false, "{review}");
    assert_eq!(
        review["error"], "[invalid bearer token, invalid signature, no keys found]",
        "{review}"
    );
    assert_eq!(emulator.whoami(&old_token).await.status, 401);
    assert_eq!(emulator.whoami(&new_token).await.status, 201);

    let status = stdout(&emulator.ctl(&["status"]));
    assert!(
        status.contains(&format!("signing key:  {new_kid} (ES256)")),
        "{status}"
    );
    assert!(
        status.contains(&format!("retired key:  {old_kid} (ES256), dropped at")),
        "{status}"
    );

    let events = emulator.audit_events("rotate-signing-key");
    let details = assert_audited(
        &events,
        "post",
        "/projected-token/v1/signingkey/rotate",
        201,
    );
    assert!(
        details.contains(&format!("old kid {old_kid}, new kid {new_kid}")),
        "{details}"
    );
    assert!(details.contains("(6 s grace)"), "{details}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_key_rotation_without_grace_breaks_old_tokens_at_once() {
    let emulator = Emulator::builder().start();
    let old_token = emulator.token();
    let old_kid = kid(&old_token);
    assert_eq!(emulator.whoami(&old_token).await.status, 201);

    // A bad rollout: the old key is dropped at once, the projected token is not replaced.
    let output = emulator.ctl(&["rotate-key", "--grace", "0", "--key-algorithm", "rs256"]);
    assert_ctl_success(&output, &["rotate-key"]);
    assert!(
        stdout(&output).contains("dropped at once"),
        "{}",
        stdout(&output)
    );
    let kids = emulator.jwks_kids().await;
    assert_eq!(kids.len(), 1);
    assert_ne!(kids[0], old_kid);
    assert_eq!(
        emulator.token(),
        old_token,
        "the projected token is left as it was"
    );
    let review = emulator.review(&old_token).await;
    assert_eq!(review["authenticated"], false, "{review}");
    assert_eq!(emulator.whoami(&old_token).await.status, 401);

    // The next rotation brings a token of the new key, which works.
    emulator.ctl_json(&["rotate"]);
    let new_token = emulator.next_token(&old_token);
    assert_eq!(kid(&new_token), kids[0]);
    assert_eq!(decoded(&new_token).header["alg"], "RS256");
    assert_eq!(emulator.review(&new_token).await["authenticated"], true);
    assert_eq!(emulator.whoami(&new_token).await.status, 201);

    let reply = emulator
        .get("/.well-known/openid-configuration", None)
        .await;
    assert_eq!(
        reply.json()["id_token_signing_alg_values_supported"],
        json!(["RS256"])
    );
    let events = emulator.audit_events("rotate-signing-key");
    let details = assert_audited(
        &events,
        "post",
        "/projected-token/v1/signingkey/rotate",
        201,
    );
    assert!(details.contains("old key dropped at once"), "{details}");
}

/// A client that keeps presenting a token whose key was dropped (`rotate-key --grace 0`) gets
/// 401s: `check` fails it with its rejected uses and their reason, and says what to do. A token
/// the emulator never signed counts for no client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_keeping_a_dropped_keys_token_fails_check() {
    let emulator = Emulator::builder().start();
    let old_token = emulator.token();
    assert_eq!(emulator.whoami(&old_token).await.status, 201);
    let output = emulator.check(&[]);
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));

    let output = emulator.ctl(&["rotate-key", "--grace", "0"]);
    assert_ctl_success(&output, &["rotate-key"]);
    for _ in 0..5 {
        assert_eq!(emulator.whoami(&old_token).await.status, 401);
    }
    assert_eq!(emulator.whoami("not-a-token").await.status, 401);

    let output = emulator.check(&[]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{text}{}", stderr(&output));
    assert!(text.contains("1 of 1 clients broke the bounds"), "{text}");
    let row = text
        .lines()
        .find(|l| l.starts_with("system:serviceaccount:default:default"))
        .expect("the client's row");
    assert!(row.contains("5 unknown key"), "{row}");
    assert!(row.ends_with("rejected uses"), "{row}");
    assert!(
        text.contains("advice for system:serviceaccount:default:default"),
        "{text}"
    );
    assert!(
        text.contains("a key the emulator no longer accepts"),
        "{text}"
    );
    assert!(
        text.contains("note: 1 requests presented bearer tokens the emulator did not sign"),
        "{text}"
    );

    let output = emulator.check(&["-o", "json"]);
    let verdict: Value = serde_json::from_slice(&output.stdout).expect("JSON verdict");
    assert_eq!(verdict["within_bounds"], false);
    assert_eq!(verdict["offenders"][0]["rejected_uses"], 5);
    assert_eq!(verdict["offenders"][0]["rejected"]["unknown_key"], 5);
    assert_eq!(verdict["unattributed_rejections"], 1);

    let output = emulator.check(&["--max-rejected", "5"]);
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_outage_answers_503_then_recovers() {
    // Two-second tokens, so a refresh falls due during the outage.
    let emulator = Emulator::builder()
        .args(&["--expiration-seconds", "2"])
        .start();
    assert_eq!(emulator.whoami(&emulator.token()).await.status, 201);

    let output = emulator.ctl(&["outage", "--mode", "unavailable", "--duration", "4s"]);
    assert_ctl_success(&output, &["outage"]);
    assert!(
        stdout(&output).starts_with("simulated outage: ServiceUnavailable for 4 s"),
        "{}",
        stdout(&output)
    );
    let reply = emulator.whoami(&emulator.token()).await;
    let message = reply.assert_status(503, "ServiceUnavailable");
    assert!(message.contains("simulated outage"), "{message}");
    let retry_after: i64 = reply
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("whole seconds");
    assert!((1..=4).contains(&retry_after), "Retry-After {retry_after}");
    // Public endpoints too; the controls are not blocked.
    let version = emulator.get("/version", None).await;
    assert_eq!(version.status, 503);
    let status = emulator.ctl_json(&["status"]);
    assert_eq!(status["outage"]["mode"], "ServiceUnavailable", "{status}");

    // The projector (the kubelet) cannot refresh either, and retries after the outage.
    emulator.process.wait_for_log("token refresh failed", SOON);
    emulator.process.wait_for_log("token rotated", SOON);

    let deadline = Instant::now() + SOON;
    loop {
        let reply = emulator.whoami(&emulator.token()).await;
        if reply.status == 201 {
            break;
        }
        assert_eq!(reply.status, 503, "{}", reply.text);
        assert!(Instant::now() < deadline, "the outage did not end");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // An outage ended early.
    emulator.ctl_json(&["outage", "--duration", "10m"]);
    assert_eq!(emulator.whoami(&emulator.token()).await.status, 503);
    let output = emulator.ctl(&["outage", "--end"]);
    assert_ctl_success(&output, &["outage", "--end"]);
    assert!(
        stdout(&output).starts_with("outage ServiceUnavailable ended at"),
        "{}",
        stdout(&output)
    );
    assert_eq!(emulator.whoami(&emulator.token()).await.status, 201);
    let output = emulator.ctl(&["outage", "--end"]);
    assert_failed(&output, 2, "no outage in progress");

    let events = emulator.audit_events("outage");
    let details = assert_audited(&events, "post", "/projected-token/v1/outage", 201);
    assert!(
        details.starts_with("ServiceUnavailable for 4 s, until "),
        "{details}"
    );
    let ended = emulator.audit_events("end-outage");
    assert_audited(&ended, "delete", "/projected-token/v1/outage", 200);
    assert_audited(&ended, "delete", "/projected-token/v1/outage", 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuse_outage_closes_the_listener_then_serves_again_on_the_same_address() {
    let emulator = Emulator::builder().start();
    // A fresh connection per request, as a client reconnecting after an outage would.
    let fresh = || {
        let ca = reqwest::Certificate::from_pem(emulator.ca_pem.as_bytes()).expect("CA");
        reqwest::Client::builder()
            .tls_certs_only([ca])
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client")
    };
    let livez = format!("{}/livez", emulator.url);
    assert!(fresh()
        .get(&livez)
        .send()
        .await
        .expect("up")
        .status()
        .is_success());

    // ctl returns at once: the server times the outage itself.
    let output = emulator.ctl(&["outage", "--mode", "refuse", "--duration", "6s"]);
    assert_ctl_success(&output, &["outage"]);
    assert!(
        stdout(&output).contains("RefuseConnections for 6 s"),
        "{}",
        stdout(&output)
    );

    let deadline = Instant::now() + SOON;
    loop {
        match fresh().get(&livez).send().await {
            Err(e) => {
                assert!(e.is_connect(), "refused, not another error: {e:?}");
                break;
            }
            Ok(_) => assert!(Instant::now() < deadline, "the listener stayed open"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Clients (ctl too) cannot connect meanwhile.
    let output = emulator.ctl(&["status"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(stderr(&output).contains("onnect"), "{}", stderr(&output));

    let deadline = Instant::now() + SOON;
    loop {
        if let Ok(response) = fresh().get(&livez).send().await {
            assert!(response.status().is_success());
            break;
        }
        assert!(Instant::now() < deadline, "the server did not listen again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    emulator.process.wait_for_log("listening again", SOON);
    assert_eq!(emulator.whoami(&emulator.token()).await.status, 201);

    let events = emulator.audit_events("outage");
    let details = assert_audited(&events, "post", "/projected-token/v1/outage", 201);
    assert!(
        details.starts_with("RefuseConnections for 6 s"),
        "{details}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_pod_fails_token_review() {
    let emulator = Emulator::builder().start();
    let token = emulator.token();
    assert_eq!(emulator.review(&token).await["authenticated"], true);

    let output = emulator.ctl(&["revoke", "emulated-pod", "--namespace", "default"]);
    assert_ctl_success(&output, &["revoke"]);
    assert!(
        stdout(&output).starts_with("pod default/emulated-pod (uid "),
        "{}",
        stdout(&output)
    );
    let review = emulator.review(&token).await;
    assert_eq!(review["authenticated"], false, "{review}");
    assert_eq!(
        review["error"],
        "[invalid bearer token, service account token has been invalidated]"
    );
    assert_eq!(emulator.whoami(&token).await.status, 401);

    // Tokens minted for the deleted pod afterwards fail too: the pod's uid is gone for good.
    emulator.ctl_json(&["rotate"]);
    let next = emulator.next_token(&token);
    assert_eq!(emulator.review(&next).await["authenticated"], false);

    let output = emulator.ctl(&["revoke", "emulated-pod"]);
    assert_failed(&output, 2, "pods \"emulated-pod\" not found");

    let events = emulator.audit_events("revoke-pod");
    let details = assert_audited(
        &events,
        "delete",
        "/api/v1/namespaces/default/pods/emulated-pod",
        200,
    );
    assert!(
        details.contains("pod default/emulated-pod (uid "),
        "{details}"
    );
    assert_audited(
        &events,
        "delete",
        "/api/v1/namespaces/default/pods/emulated-pod",
        404,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifetime_changes_at_run_time() {
    let emulator = Emulator::builder().start();
    let lived = |token: &str| {
        let decoded = decoded(token);
        decoded.warn_after().expect("warnafter") - decoded.numeric_claim("iat").expect("iat")
    };
    let first = emulator.token();
    assert_eq!(lived(&first), 3607);

    let output = emulator.ctl(&["lifetime", "2s"]);
    assert_ctl_success(&output, &["lifetime"]);
    assert!(
        stdout(&output).starts_with("token lifetime: 2 s (was each volume's own); rotating now:"),
        "{}",
        stdout(&output)
    );
    let short = emulator.next_token(&first);
    assert_eq!(lived(&short), 2);
    assert_eq!(emulator.whoami(&short).await.status, 201);
    // Short-lived tokens keep rotating by themselves.
    let shorter = emulator.next_token(&short);
    assert_eq!(lived(&shorter), 2);
    assert_eq!(
        emulator.ctl_json(&["status"])["projector"]["expirationSeconds"],
        2
    );

    let answer = emulator.ctl_json(&["lifetime", "--reset"]);
    assert_eq!(answer["previousExpirationSeconds"], 2);
    assert!(answer["expirationSeconds"].is_null());
    let deadline = Instant::now() + SOON;
    while lived(&emulator.token()) != 3607 {
        assert!(Instant::now() < deadline, "the lifetime was not reset");
        std::thread::sleep(Duration::from_millis(20));
    }

    let output = emulator.ctl(&["lifetime", "0"]);
    assert_failed(&output, 2, "expirationSeconds");

    let events = emulator.audit_events("lifetime");
    let details = assert_audited(&events, "put", "/projected-token/v1/lifetime", 200);
    assert!(
        details.starts_with("token lifetime 2 s (was each volume's own)"),
        "{details}"
    );
    assert_audited(&events, "put", "/projected-token/v1/lifetime", 422);
}

/// `--expiration-seconds` and `ctl lifetime` govern the tokens of the TokenRequest API too (the
/// emulator's time compression), with a warning; without them upstream's 600 s minimum holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifetime_governs_token_requests_too() {
    let emulator = Emulator::builder()
        .args(&["--expiration-seconds", "10"])
        .start();
    let url = format!(
        "{}/api/v1/namespaces/default/serviceaccounts/app/token",
        emulator.url
    );
    let request = |seconds: i64| {
        let body = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                          "spec": {"expirationSeconds": seconds}});
        send(
            &emulator.client,
            Method::POST,
            &url,
            Some(&emulator.admin_token),
            Some("application/json"),
            Some(serde_json::to_vec(&body).expect("body")),
        )
    };
    // The lifetime granted, as the answer says it and as the token has it.
    let granted = |reply: &Reply| {
        assert_eq!(reply.status, 201, "{}", reply.text);
        let answer = reply.json();
        let token = decoded(answer["status"]["token"].as_str().expect("token"));
        let lived =
            token.numeric_claim("exp").expect("exp") - token.numeric_claim("iat").expect("iat");
        assert_eq!(answer["spec"]["expirationSeconds"].as_i64(), Some(lived));
        lived
    };
    for asked in [600, 60, 3600] {
        let reply = request(asked).await;
        assert_eq!(granted(&reply), 10, "asked {asked}");
        let warning = reply.header("warning").unwrap_or_default();
        assert!(
            warning.contains(&format!(
                "requested expiration of {asked} seconds replaced by 10 seconds"
            )),
            "{warning}"
        );
    }

    assert_ctl_success(&emulator.ctl(&["lifetime", "5s"]), &["lifetime"]);
    assert_eq!(granted(&request(600).await), 5);

    assert_ctl_success(&emulator.ctl(&["lifetime", "--reset"]), &["lifetime"]);
    assert_eq!(granted(&request(600).await), 600);
    let too_short = request(60).await;
    assert!(
        too_short
            .assert_status(422, "Invalid")
            .contains("may not specify a duration less than 10 minutes"),
        "{}",
        too_short.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controls_are_for_the_admin_only() {
    let emulator = Emulator::builder().start();
    let url = |path: &str| format!("{}{path}", emulator.url);
    let body = serde_json::to_vec(&json!({"mode": "ServiceUnavailable", "durationSeconds": 60}))
        .expect("body");
    for (method, path, body) in [
        (Method::GET, "/projected-token/v1/status", None),
        (
            Method::POST,
            "/projected-token/v1/outage",
            Some(body.clone()),
        ),
        (Method::POST, "/projected-token/v1/signingkey/rotate", None),
    ] {
        let anonymous = send(
            &emulator.client,
            method.clone(),
            &url(path),
            None,
            Some("application/json"),
            body.clone(),
        )
        .await;
        anonymous.assert_status(401, "Unauthorized");
        let token = emulator.token();
        let as_pod = send(
            &emulator.client,
            method,
            &url(path),
            Some(&token),
            Some("application/json"),
            body.clone(),
        )
        .await;
        let message = as_pod.assert_status(403, "Forbidden");
        assert!(
            message.contains("system:serviceaccount:default:default"),
            "{message}"
        );
    }
    // Nothing happened.
    let status = emulator.ctl_json(&["status"]);
    assert!(status["outage"].is_null(), "{status}");
    assert!(status["signingKeys"]["retired"]
        .as_array()
        .expect("retired")
        .is_empty());

    // Bad bodies are the caller's error, with the field named.
    let admin = Some(emulator.admin_token.as_str());
    let bad = send(
        &emulator.client,
        Method::POST,
        &url("/projected-token/v1/outage"),
        admin,
        Some("application/json"),
        Some(br#"{"mode":"Sideways","durationSeconds":5}"#.to_vec()),
    )
    .await;
    bad.assert_status(400, "BadRequest");
    let zero = send(
        &emulator.client,
        Method::POST,
        &url("/projected-token/v1/outage"),
        admin,
        Some("application/json"),
        Some(br#"{"mode":"ServiceUnavailable","durationSeconds":0}"#.to_vec()),
    )
    .await;
    let message = zero.assert_status(422, "Invalid");
    assert!(message.contains("durationSeconds"), "{message}");

    // ctl with another token: exit 2, naming the token file.
    let wrong = emulator.root.join("wrong.token");
    std::fs::write(&wrong, "not-the-admin-token\n").expect("write");
    let output = run_ctl(&emulator.url, &emulator.ca_file, &wrong, &["rotate"]);
    assert_failed(&output, 2, "--token-file");

    let events = emulator.audit_events("outage");
    let forbidden = events
        .iter()
        .find(|e| e["responseStatus"]["code"] == 403)
        .expect("the refused control is audited");
    assert_eq!(
        forbidden["user"]["username"],
        "system:serviceaccount:default:default"
    );
    assert_eq!(
        forbidden["annotations"]["authorization.k8s.io/decision"],
        "forbid"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_rotates_its_key_but_projects_no_tokens() {
    let temp = tempfile::tempdir().expect("temp dir");
    let server = start_serve(temp.path(), &["--key-algorithm", "es256"]);
    let ca_file = temp.path().join("ctl-ca.crt");
    std::fs::write(&ca_file, &server.ca_pem).expect("ca");
    let admin_token_file = temp.path().join("ctl-admin.token");
    std::fs::write(&admin_token_file, &server.admin_token).expect("token");
    let run = |args: &[&str]| run_ctl(&server.url, &ca_file, &admin_token_file, args);

    let output = run(&["rotate"]);
    assert_failed(&output, 2, "projects no volumes");
    let output = run(&["lifetime", "5s"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stdout(&run(&["status"])).contains("projector:    none (serve)"));

    let before = server.issue("default", "app", json!({})).await;
    assert_eq!(server.whoami(&before).await.status, 201);
    let output = run(&["rotate-key", "--grace", "0"]);
    assert_ctl_success(&output, &["rotate-key"]);
    assert_eq!(server.whoami(&before).await.status, 401);
    let after = server.issue("default", "app", json!({})).await;
    assert_ne!(kid(&after), kid(&before));
    assert_eq!(server.whoami(&after).await.status, 201);
    let jwks = server.get("/openid/v1/jwks", None).await.json();
    assert_eq!(common::kids(&jwks), [kid(&after)]);
}
