//! Object names over real HTTPS, as kube-apiserver answers them: a namespace that is not a
//! DNS-1123 label does not exist (404), a service account or pod name that is not a DNS-1123
//! subdomain is not found (404), a name the storage cannot key (`.`, `..`, `/`, `%`) is a bad
//! request (400); none of them is ever created. Manifests and `emulate`'s pod names with such
//! names are refused before anything starts.

mod common;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::{output_within, start_serve, ApiServer, Reply, BIN, REQUEST_TIMEOUT};
use reqwest::Method;
use serde_json::{json, Value};

/// What upstream answers: code, reason, message.
type Answer = (u16, &'static str, String);

fn not_found(resource: &str, quoted: &str) -> Answer {
    (404, "NotFound", format!("{resource} {quoted} not found"))
}

fn bad_name(quoted: &str, why: &str) -> Answer {
    (
        400,
        "BadRequest",
        format!("Name parameter invalid: {quoted}: {why}"),
    )
}

fn token_path(namespace: &str, name: &str) -> String {
    format!("/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token")
}

fn token_request_body() -> Value {
    json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}})
}

fn assert_answer(reply: &Reply, (code, reason, message): &Answer, what: &str) {
    assert_eq!(
        (reply.status, reply.assert_status(*code, reason)),
        (*code, message.clone()),
        "{what}"
    );
}

/// One HTTP/1.1 request over TLS with the path exactly as given (an HTTP client library would
/// resolve `.` and `..` segments before sending): the status and the body.
fn raw_request(server: &ApiServer, method: &str, path: &str, body: &str) -> (u16, Value) {
    let mut roots = rustls::RootCertStore::empty();
    for cert in pem::parse_many(&server.ca_pem).expect("CA PEM") {
        roots
            .add(rustls::pki_types::CertificateDer::from(
                cert.into_contents(),
            ))
            .expect("CA certificate");
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("server name");
    let connection =
        rustls::ClientConnection::new(Arc::new(config), name).expect("TLS client connection");
    let socket = TcpStream::connect(("127.0.0.1", server.port())).expect("connect");
    socket
        .set_read_timeout(Some(REQUEST_TIMEOUT))
        .expect("timeout");
    socket
        .set_write_timeout(Some(REQUEST_TIMEOUT))
        .expect("timeout");
    let mut stream = rustls::StreamOwned::new(connection, socket);
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        server.admin_token,
        body.len()
    );
    stream.write_all(request.as_bytes()).expect("send");
    let mut answer = Vec::new();
    // The server may close without close_notify; what arrived before is the whole answer.
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    (status, serde_json::from_str(body).expect("JSON body"))
}

#[tokio::test]
async fn token_request_names_are_answered_as_upstream_and_never_created() {
    let tmp = tempfile::tempdir().unwrap();
    let server = start_serve(tmp.path(), &[]);
    let long = "x".repeat(300);
    // (namespace, service account as sent in the path, upstream's answer)
    let cases: Vec<(&str, &str, Answer)> = vec![
        // `a` + `b:c` and `a:b` + `c` would both be system:serviceaccount:a:b:c.
        ("a:b", "c", not_found("namespaces", "\"a:b\"")),
        ("a", "b:c", not_found("serviceaccounts", "\"b:c\"")),
        ("Team", "app", not_found("namespaces", "\"Team\"")),
        ("a.b", "app", not_found("namespaces", "\"a.b\"")),
        ("ns", "App", not_found("serviceaccounts", "\"App\"")),
        ("ns", "ünï", not_found("serviceaccounts", "\"ünï\"")),
        ("ns", "a%00b", not_found("serviceaccounts", "\"a\\x00b\"")),
        (
            "ns",
            &long,
            not_found("serviceaccounts", &format!("\"{long}\"")),
        ),
        ("ns", "a%25b", bad_name("\"a%b\"", "may not contain '%'")),
        ("ns", "a%2Fb", bad_name("\"a/b\"", "may not contain '/'")),
    ];
    for (namespace, name, answer) in &cases {
        // Twice: the first one created nothing the second could find.
        for attempt in 1..=2 {
            let reply = server
                .post_json(
                    &token_path(namespace, name),
                    Some(&server.admin_token),
                    &token_request_body(),
                )
                .await;
            assert_answer(&reply, answer, &format!("{namespace}/{name} #{attempt}"));
        }
    }
    for (name, why) in [(".", "may not be '.'"), ("..", "may not be '..'")] {
        let (code, status) = raw_request(
            &server,
            "POST",
            &token_path("ns", name),
            &token_request_body().to_string(),
        );
        assert_eq!(code, 400, "{status}");
        assert_eq!(status["reason"], "BadRequest", "{status}");
        assert_eq!(
            status["message"],
            format!("Name parameter invalid: \"{name}\": {why}")
        );
    }

    // A pod to bind to is named as a pod must be, and is not made up either.
    for (pod, answer) in [
        ("Web:0", not_found("pods", "\"Web:0\"")),
        (
            "",
            (400, "BadRequest", "Name parameter required.".to_owned()),
        ),
        ("..", bad_name("\"..\"", "may not be '..'")),
    ] {
        let spec = json!({"boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": pod}});
        let reply = server.token_request("ns", "app", spec).await;
        assert_answer(&reply, &answer, &format!("pod {pod:?}"));
    }

    // Valid names, split either way, still get tokens for their own user.
    let token = server.issue("a", "b.c", json!({})).await;
    let claims = projected_token::token::decode(&token)
        .expect("token")
        .claims;
    assert_eq!(claims["sub"], "system:serviceaccount:a:b.c");
}

#[tokio::test]
async fn pod_delete_names_are_answered_as_upstream() {
    let tmp = tempfile::tempdir().unwrap();
    let server = start_serve(tmp.path(), &[]);
    let delete = |path: String| {
        let server = &server;
        async move {
            server
                .send(Method::DELETE, &path, Some(&server.admin_token), None, None)
                .await
        }
    };
    let cases: Vec<(&str, &str, Answer)> = vec![
        ("ns", "Web", not_found("pods", "\"Web\"")),
        ("a:b", "web", not_found("pods", "\"web\"")),
        ("ns", "a%00b", not_found("pods", "\"a\\x00b\"")),
        ("ns", "a%25b", bad_name("\"a%b\"", "may not contain '%'")),
    ];
    for (namespace, name, answer) in &cases {
        let reply = delete(format!("/api/v1/namespaces/{namespace}/pods/{name}")).await;
        assert_answer(&reply, answer, &format!("{namespace}/{name}"));
    }
    let (code, status) = raw_request(&server, "DELETE", "/api/v1/namespaces/ns/pods/..", "");
    assert_eq!(code, 400, "{status}");
    assert_eq!(
        status["message"],
        "Name parameter invalid: \"..\": may not be '..'"
    );
}

/// Runs the binary with `args` (it must exit at once) and returns its exit code and stderr.
fn run(args: &[&str]) -> (Option<i32>, String) {
    let output = output_within(Command::new(BIN).args(args), Duration::from_secs(60));
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

const SUBDOMAIN_RULE: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
const LABEL_RULE: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character";

#[test]
fn manifests_with_invalid_names_are_refused_naming_the_file_and_field() {
    let tmp = tempfile::tempdir().unwrap();
    let objects = tmp.path().join("objects.yaml");
    std::fs::write(
        &objects,
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: app, namespace: ns}\n---\n\
         apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: \"b:c\", namespace: a}\n",
    )
    .unwrap();
    let objects_arg = format!("--objects={}", objects.display());
    let (code, stderr) = run(&["serve", "--listen=127.0.0.1:0", &objects_arg]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "--objects {}: document 2: ServiceAccount metadata.name: Invalid value: \"b:c\": {SUBDOMAIN_RULE}",
            objects.display()
        )),
        "{stderr}"
    );
}

#[test]
fn emulated_pod_names_are_refused_naming_the_flag_or_field() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("out");
    let dir_arg = format!("--dir={}", dir.display());
    let (code, stderr) = run(&["emulate", &dir_arg, "--no-serve", "--namespace=a:b"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "--namespace: Invalid value: \"a:b\": {LABEL_RULE}"
        )),
        "{stderr}"
    );
    let (code, stderr) = run(&["emulate", &dir_arg, "--no-serve", "--service-account=b:c"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "--service-account: Invalid value: \"b:c\": {SUBDOMAIN_RULE}"
        )),
        "{stderr}"
    );

    let pods = tmp.path().join("pods.yaml");
    std::fs::write(
        &pods,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: a}\nspec:\n  serviceAccountName: \"b:c\"\n  containers: [{name: c, image: c}]\n  volumes:\n  - name: v\n    projected:\n      sources: [{serviceAccountToken: {path: token}}]\n",
    )
    .unwrap();
    for flag in ["--pod", "--pods"] {
        let pods_arg = format!("{flag}={}", pods.display());
        let (code, stderr) = run(&["emulate", &dir_arg, "--no-serve", &pods_arg]);
        assert_eq!(code, Some(2), "{flag}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "spec.serviceAccountName: Invalid value: \"b:c\": {SUBDOMAIN_RULE}"
            )),
            "{flag}: {stderr}"
        );
        assert!(stderr.contains(&pods.display().to_string()), "{stderr}");
    }
}
