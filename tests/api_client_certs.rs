//! Client-certificate authentication by `serve`, as kube-apiserver's `--client-ca-file`, over real
//! HTTPS: a certificate of the emulator's CA authenticates (CN = user, O = groups), one in
//! `system:masters` is an admin, other users are authenticated but may not create tokens, a
//! bearer token wins over the certificate, and a certificate of another CA fails the handshake.

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use common::{send, start_serve, ApiServer, Reply, REQUEST_TIMEOUT};
use projected_token::tls::CertificateAuthority;
use reqwest::Method;
use serde_json::{json, Value};

const TOKEN_PATH: &str = "/api/v1/namespaces/default/serviceaccounts/app/token";
const WHOAMI_PATH: &str = "/apis/authentication.k8s.io/v1/selfsubjectreviews";

/// A `serve` whose CA the test holds (so it can issue more client certificates), with the admin
/// client certificate written to `dir/admin-cert/` and an audit log at `dir/audit.log`.
fn serve_with_ca(dir: &Path, extra: &[&str]) -> (ApiServer, CertificateAuthority) {
    let ca = CertificateAuthority::generate("client-cert test CA").expect("generate CA");
    let ca_cert = dir.join("test-ca.crt");
    let ca_key = dir.join("test-ca.key");
    std::fs::write(&ca_cert, ca.cert_pem()).expect("write CA");
    std::fs::write(&ca_key, ca.issuer().key().serialize_pem()).expect("write CA key");
    let args = [
        "--key-algorithm=es256".to_owned(),
        format!("--ca-cert={}", ca_cert.display()),
        format!("--ca-key={}", ca_key.display()),
        format!(
            "--admin-client-cert-out={}",
            dir.join("admin-cert").display()
        ),
        format!("--audit-log={}", dir.join("audit.log").display()),
    ];
    let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
    all.extend_from_slice(extra);
    (start_serve(dir, &all), ca)
}

/// A client that trusts only `server`'s CA and presents `cert_pem` + `key_pem`.
fn client_with_identity(server: &ApiServer, cert_pem: &str, key_pem: &str) -> reqwest::Client {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let ca = reqwest::Certificate::from_pem(server.ca_pem.as_bytes()).expect("CA PEM");
    let identity =
        reqwest::Identity::from_pem(format!("{cert_pem}\n{key_pem}").as_bytes()).expect("identity");
    reqwest::Client::builder()
        .tls_certs_only([ca])
        .identity(identity)
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(REQUEST_TIMEOUT)
        .build()
        .expect("HTTPS client")
}

/// The admin certificate `--admin-client-cert-out` wrote: `(cert PEM, key PEM)`.
fn admin_cert(dir: &Path) -> (String, String) {
    let out: PathBuf = dir.join("admin-cert");
    let key_mode = std::fs::metadata(out.join("admin.key"))
        .expect("admin.key")
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600, "admin.key mode");
    (
        std::fs::read_to_string(out.join("admin.crt")).expect("admin.crt"),
        std::fs::read_to_string(out.join("admin.key")).expect("admin.key"),
    )
}

async fn post(client: &reqwest::Client, url: String, token: Option<&str>, body: Value) -> Reply {
    let bytes = serde_json::to_vec(&body).expect("JSON body");
    send(
        client,
        Method::POST,
        &url,
        token,
        Some("application/json"),
        Some(bytes),
    )
    .await
}

async fn token_request(client: &reqwest::Client, server: &ApiServer, token: Option<&str>) -> Reply {
    let body =
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}});
    post(client, format!("{}{TOKEN_PATH}", server.url), token, body).await
}

/// The user a SelfSubjectReview names, which must be answered 201.
async fn whoami(client: &reqwest::Client, server: &ApiServer, token: Option<&str>) -> Value {
    let body = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"});
    let reply = post(client, format!("{}{WHOAMI_PATH}", server.url), token, body).await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    reply.json()["status"]["userInfo"].clone()
}

async fn get(client: &reqwest::Client, server: &ApiServer, path: &str) -> Reply {
    send(
        client,
        Method::GET,
        &format!("{}{path}", server.url),
        None,
        None,
        None,
    )
    .await
}

/// The audit events of requests to `uri`.
fn audit_events(dir: &Path, uri: &str) -> Vec<Value> {
    std::fs::read_to_string(dir.join("audit.log"))
        .expect("audit log")
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).expect("audit JSON line"))
        .filter(|event| event["requestURI"] == uri)
        .collect()
}

#[tokio::test]
async fn admin_certificate_creates_tokens_reads_usage_and_is_audited() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // A world-readable key left from an earlier run ends up 0600 all the same.
    let stale = tmp.path().join("admin-cert");
    std::fs::create_dir(&stale).expect("mkdir");
    std::fs::write(stale.join("admin.key"), "old").expect("write");
    std::fs::set_permissions(
        stale.join("admin.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .expect("chmod");
    let (server, _ca) = serve_with_ca(tmp.path(), &[]);
    let (cert, key) = admin_cert(tmp.path());
    let admin = client_with_identity(&server, &cert, &key);

    let reply = token_request(&admin, &server, None).await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    let token = reply.json()["status"]["token"]
        .as_str()
        .expect("status.token")
        .to_owned();
    let claims = projected_token::token::decode(&token).expect("a JWT");
    assert_eq!(
        claims.string_claim("sub"),
        Some("system:serviceaccount:default:app")
    );

    let usage = get(&admin, &server, "/debug/token-usage").await;
    assert_eq!(usage.status, 200, "{}", usage.text);
    let user = whoami(&admin, &server, None).await;
    assert_eq!(user["username"], "kubernetes-admin", "{user}");
    assert_eq!(
        user["groups"],
        json!(["system:masters", "system:authenticated"])
    );
    let credential_id = user["extra"]["authentication.kubernetes.io/credential-id"][0]
        .as_str()
        .unwrap_or_default();
    assert!(credential_id.starts_with("X509SHA256="), "{user}");

    // The audit log names the certificate user and why it was allowed.
    let events = audit_events(tmp.path(), TOKEN_PATH);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["user"]["username"], "kubernetes-admin");
    assert_eq!(events[0]["responseStatus"]["code"], 201);
    assert_eq!(
        events[0]["annotations"]["authorization.k8s.io/reason"],
        "group system:masters"
    );
}

#[tokio::test]
async fn user_certificate_is_authenticated_but_may_not_create_tokens() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (server, ca) = serve_with_ca(tmp.path(), &[]);
    let (cert, key) = ca
        .client_certificate("alice", &["devs".to_owned()])
        .expect("client certificate");
    let alice = client_with_identity(&server, &cert, &key);

    let message = token_request(&alice, &server, None)
        .await
        .assert_status(403, "Forbidden");
    assert_eq!(
        message,
        "serviceaccounts \"app\" is forbidden: User \"alice\" cannot create resource \"serviceaccounts/token\" in API group \"\" in the namespace \"default\""
    );
    let user = whoami(&alice, &server, None).await;
    assert_eq!(user["username"], "alice", "{user}");
    assert_eq!(user["groups"], json!(["devs", "system:authenticated"]));
    assert_eq!(get(&alice, &server, "/api/v1").await.status, 200);
    let usage = get(&alice, &server, "/debug/token-usage").await;
    assert!(usage.assert_status(403, "Forbidden").contains("\"alice\""));
    let events = audit_events(tmp.path(), TOKEN_PATH);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["user"]["username"], "alice");
    assert_eq!(
        events[0]["user"]["groups"],
        json!(["devs", "system:authenticated"])
    );
    assert_eq!(
        events[0]["annotations"]["authorization.k8s.io/decision"],
        "forbid"
    );

    // A bearer token wins over the certificate; a rejected one falls back to it.
    let reply = token_request(&alice, &server, Some(&server.admin_token)).await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    let user = whoami(&alice, &server, Some(&server.admin_token)).await;
    assert_eq!(user["username"], "system:admin", "{user}");
    let user = whoami(&alice, &server, Some("not-a-token")).await;
    assert_eq!(user["username"], "alice", "{user}");

    // With --allow-any-token-request a certificate user may create tokens too.
    let open_dir = tmp.path().join("open");
    std::fs::create_dir(&open_dir).expect("mkdir");
    let (open, open_ca) = serve_with_ca(&open_dir, &["--allow-any-token-request"]);
    let (cert, key) = open_ca
        .client_certificate("alice", &["devs".to_owned()])
        .expect("client certificate");
    let reply = token_request(&client_with_identity(&open, &cert, &key), &open, None).await;
    assert_eq!(reply.status, 201, "{}", reply.text);
}

#[tokio::test]
async fn foreign_or_server_only_certificate_fails_the_handshake_and_none_is_401() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (server, ca) = serve_with_ca(tmp.path(), &[]);
    let other = CertificateAuthority::generate("another CA").expect("generate CA");
    let (cert, key) = other
        .client_certificate("kubernetes-admin", &["system:masters".to_owned()])
        .expect("client certificate");
    // Our CA, but a serving certificate (no clientAuth EKU): refused as well.
    let (serving_cert, serving_key) = ca
        .serving_certificate(&["mallory".to_owned()])
        .expect("serving certificate");
    for (what, cert, key) in [
        ("another CA", &cert, &key),
        ("serverAuth only", &serving_cert, &serving_key),
    ] {
        let client = client_with_identity(&server, cert, key);
        let body = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"});
        let result = client
            .post(format!("{}{WHOAMI_PATH}", server.url))
            .json(&body)
            .send()
            .await;
        assert!(result.is_err(), "{what}: answered {result:?}");
    }

    // No certificate and no token: 401, and the server still serves.
    let reply = server
        .post_json(
            WHOAMI_PATH,
            None,
            &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}),
        )
        .await;
    assert_eq!(reply.assert_status(401, "Unauthorized"), "Unauthorized");
    assert_eq!(server.whoami(&server.admin_token).await.status, 201);
}
