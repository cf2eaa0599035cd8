//! Every endpoint of `serve`, over real HTTPS on loopback, with clients that trust only the CA the
//! emulator wrote with `--ca-out`: TokenRequest (JSON and kubectl's protobuf), its validation and
//! authorization, TokenReview, SelfSubjectReview, issuer discovery, discovery documents, health,
//! metrics, the serving certificate's names, several listeners, and the audit log.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use common::{https_client, send, start_serve, write_key, ApiServer, Reply, TokenSpec};
use jiff::Timestamp;
use projected_token::issuer::verify::verify_bound;
use projected_token::issuer::{KeyAlgorithm, SigningKey, DEFAULT_ISSUER};
use projected_token::token::decode;
use reqwest::Method;
use serde_json::{json, Value};

const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";
const TOKEN_REVIEWS: &str = "/apis/authentication.k8s.io/v1/tokenreviews";
const SELF_SUBJECT_REVIEWS: &str = "/apis/authentication.k8s.io/v1/selfsubjectreviews";

const SA_UID: &str = "5b1c3b1e-0a0e-4a59-9c43-2f0f5f6c1a01";
const POD_UID: &str = "9d7e2c44-6f1a-4b8e-8a0b-7c3d2e1f0a02";
const NODE_UID: &str = "c0ffee00-1234-4abc-9def-0123456789ab";

/// A service account, a pod of it scheduled on a node, and the node.
const OBJECTS: &str = r#"
apiVersion: v1
kind: ServiceAccount
metadata:
  name: app
  namespace: ns
  uid: 5b1c3b1e-0a0e-4a59-9c43-2f0f5f6c1a01
---
apiVersion: v1
kind: Pod
metadata:
  name: web-0
  namespace: ns
  uid: 9d7e2c44-6f1a-4b8e-8a0b-7c3d2e1f0a02
spec:
  serviceAccountName: app
  nodeName: worker-1
  containers: [{name: app, image: app}]
---
apiVersion: v1
kind: Node
metadata:
  name: worker-1
  uid: c0ffee00-1234-4abc-9def-0123456789ab
"#;

fn token_path(namespace: &str, name: &str) -> String {
    format!("/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token")
}

fn fixture(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/kubectl")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn timestamp(value: &Value) -> Timestamp {
    value
        .as_str()
        .unwrap_or_else(|| panic!("not a time: {value}"))
        .parse()
        .unwrap_or_else(|e| panic!("not a time: {value}: {e}"))
}

fn claims_of(token: &str) -> Value {
    Value::Object(decode(token).expect("token decodes").claims)
}

fn token_of(reply: &Reply) -> String {
    assert_eq!(reply.status, 201, "{}", reply.text);
    reply.json()["status"]["token"]
        .as_str()
        .expect("status.token")
        .to_owned()
}

/// `exp - iat` of a token.
fn lifetime(token: &str) -> i64 {
    let claims = claims_of(token);
    claims["exp"].as_i64().expect("exp") - claims["iat"].as_i64().expect("iat")
}

fn pod_ref(name: &str, uid: Option<&str>) -> Value {
    let mut reference = json!({"apiVersion": "v1", "kind": "Pod", "name": name});
    if let Some(uid) = uid {
        reference["uid"] = json!(uid);
    }
    reference
}

fn server_with_key(
    dir: &std::path::Path,
    algorithm: KeyAlgorithm,
    args: &[&str],
) -> (ApiServer, Arc<SigningKey>) {
    let (path, key) = write_key(dir, "signing.key", algorithm);
    let key_arg = format!("--signing-key={}", path.display());
    let mut all = vec![key_arg.as_str()];
    all.extend_from_slice(args);
    (start_serve(dir, &all), key)
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in metrics:\n{text}"))
        .trim()
        .parse()
        .expect("metric value")
}

#[tokio::test]
async fn token_request_json_is_created_and_verifies_against_the_jwks() {
    let tmp = tempfile::tempdir().unwrap();
    let (server, key) = server_with_key(tmp.path(), KeyAlgorithm::Es256, &[]);

    let reply = server
        .token_request("ns", "app", json!({"expirationSeconds": 1200}))
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let body = reply.json();
    assert_eq!(body["kind"], "TokenRequest");
    assert_eq!(body["apiVersion"], "authentication.k8s.io/v1");
    assert_eq!(body["metadata"]["name"], "app");
    assert_eq!(body["metadata"]["namespace"], "ns");
    let sa_uid = body["metadata"]["uid"].as_str().expect("metadata.uid");
    assert!(!sa_uid.is_empty());
    assert_eq!(
        body["spec"]["audiences"],
        json!([DEFAULT_ISSUER]),
        "defaulted"
    );
    assert_eq!(body["spec"]["expirationSeconds"], 1200);
    let created = timestamp(&body["metadata"]["creationTimestamp"]);
    let expires = timestamp(&body["status"]["expirationTimestamp"]);
    assert_eq!(expires.as_second() - created.as_second(), 1200);

    let token = body["status"]["token"].as_str().expect("status.token");
    let decoded = decode(token).expect("decodes");
    assert_eq!(decoded.header_str("alg"), Some("ES256"));
    assert_eq!(decoded.header_str("kid"), Some(key.kid()));
    let claims = claims_of(token);
    assert_eq!(claims["iss"], DEFAULT_ISSUER);
    assert_eq!(claims["sub"], "system:serviceaccount:ns:app");
    assert_eq!(claims["aud"], json!([DEFAULT_ISSUER]));
    assert_eq!(claims["iat"], created.as_second());
    assert_eq!(claims["nbf"], created.as_second());
    assert_eq!(claims["exp"], expires.as_second());
    assert_eq!(claims["kubernetes.io"]["namespace"], "ns");
    assert_eq!(claims["kubernetes.io"]["serviceaccount"]["uid"], sa_uid);
    assert!(claims["kubernetes.io"].get("warnafter").is_none());
    assert!(claims["jti"].as_str().is_some_and(|j| j.len() == 36));

    // The JWKS the server publishes verifies it.
    let jwks = server.get("/openid/v1/jwks", None).await;
    assert_eq!(jwks.status, 200);
    let verified = verify_bound(
        token,
        &jwks.json(),
        &[DEFAULT_ISSUER.to_owned()],
        &[DEFAULT_ISSUER.to_owned()],
        Timestamp::now(),
    )
    .expect("verifies against the served JWKS");
    assert_eq!(verified.sub, "system:serviceaccount:ns:app");

    // No spec at all: 3600 seconds and the API audiences.
    let reply = server.token_request("ns", "app", json!({})).await;
    let body = reply.json();
    assert_eq!(body["spec"]["expirationSeconds"], 3600, "{body}");
    assert_eq!(body["spec"]["audiences"], json!([DEFAULT_ISSUER]));
    assert_eq!(body["metadata"]["uid"], sa_uid, "same service account");
    assert_eq!(lifetime(&token_of(&reply)), 3600);
}

#[tokio::test]
async fn kubectl_protobuf_bodies_and_media_types() {
    let tmp = tempfile::tempdir().unwrap();
    let server = start_serve(tmp.path(), &["--key-algorithm=es256"]);
    let admin = Some(server.admin_token.as_str());

    // kubectl create token default -n default --audience vault --duration 10m
    let reply = server
        .send(
            Method::POST,
            &token_path("default", "default"),
            admin,
            Some(PROTOBUF),
            Some(fixture("create-token.pb")),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let body = reply.json();
    assert_eq!(body["kind"], "TokenRequest");
    assert_eq!(body["metadata"]["name"], "default");
    assert_eq!(body["metadata"]["namespace"], "default");
    assert_eq!(body["spec"]["audiences"], json!(["vault"]));
    assert_eq!(body["spec"]["expirationSeconds"], 600);
    let token = token_of(&reply);
    assert_eq!(claims_of(&token)["aud"], json!(["vault"]));
    assert_eq!(lifetime(&token), 600);

    // The bound variant: the pod is created on first use with the uid kubectl named.
    let reply = server
        .send(
            Method::POST,
            &token_path("ci", "build-robot"),
            admin,
            Some(PROTOBUF),
            Some(fixture("create-token-bound.pb")),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    let body = reply.json();
    assert_eq!(
        body["spec"]["audiences"],
        json!(["vault", "https://kubernetes.default.svc"])
    );
    assert_eq!(body["spec"]["expirationSeconds"], 3600);
    assert_eq!(body["spec"]["boundObjectRef"]["kind"], "Pod");
    assert_eq!(body["spec"]["boundObjectRef"]["name"], "web-0");
    let claims = claims_of(&token_of(&reply));
    assert_eq!(claims["sub"], "system:serviceaccount:ci:build-robot");
    assert_eq!(
        claims["kubernetes.io"]["pod"],
        json!({"name": "web-0", "uid": "7b0a1f58-3a2c-4c1e-9d7e-0123456789ab"})
    );

    // No Content-Type: read as JSON.
    let json_body = serde_json::to_vec(&json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"audiences": ["plain"], "expirationSeconds": 900}
    }))
    .unwrap();
    let reply = server
        .send(
            Method::POST,
            &token_path("default", "default"),
            admin,
            None,
            Some(json_body),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    assert_eq!(reply.json()["spec"]["audiences"], json!(["plain"]));
    assert_eq!(lifetime(&token_of(&reply)), 900);

    // YAML is not read: 415 with a Status.
    let yaml = b"apiVersion: authentication.k8s.io/v1\nkind: TokenRequest\nspec: {}\n".to_vec();
    let reply = server
        .send(
            Method::POST,
            &token_path("default", "default"),
            admin,
            Some("application/yaml"),
            Some(yaml),
        )
        .await;
    let message = reply.assert_status(415, "UnsupportedMediaType");
    assert!(message.contains("application/yaml"), "{message}");

    // kubectl auth whoami, as a service account.
    let sa_token = server.issue("default", "default", json!({})).await;
    let reply = server
        .send(
            Method::POST,
            SELF_SUBJECT_REVIEWS,
            Some(&sa_token),
            Some(PROTOBUF),
            Some(fixture("whoami.pb")),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    let body = reply.json();
    assert_eq!(body["kind"], "SelfSubjectReview");
    assert_eq!(
        body["status"]["userInfo"]["username"],
        "system:serviceaccount:default:default"
    );
}

#[tokio::test]
async fn token_request_validation_over_http() {
    let tmp = tempfile::tempdir().unwrap();
    let server = start_serve(tmp.path(), &["--key-algorithm=es256"]);

    let invalid = |value: &str, why: &str| {
        format!("TokenRequest.authentication.k8s.io \"\" is invalid: spec.expirationSeconds: Invalid value: {value}: {why}")
    };
    let reply = server
        .token_request("ns", "app", json!({"expirationSeconds": 599}))
        .await;
    assert_eq!(
        reply.assert_status(422, "Invalid"),
        invalid("599", "may not specify a duration less than 10 minutes")
    );
    let details = &reply.json()["details"];
    assert_eq!(details["group"], "authentication.k8s.io");
    assert_eq!(details["kind"], "TokenRequest");
    assert_eq!(details["causes"][0]["reason"], "FieldValueInvalid");
    assert_eq!(details["causes"][0]["field"], "spec.expirationSeconds");

    let too_long = (1_i64 << 32) + 1;
    let reply = server
        .token_request("ns", "app", json!({"expirationSeconds": too_long}))
        .await;
    assert_eq!(
        reply.assert_status(422, "Invalid"),
        invalid(
            "4294967297",
            "may not specify a duration larger than 2^32 seconds"
        )
    );
    // Both bounds themselves are allowed.
    for seconds in [600, 1_i64 << 32] {
        let reply = server
            .token_request("ns", "app", json!({"expirationSeconds": seconds}))
            .await;
        assert_eq!(lifetime(&token_of(&reply)), seconds);
    }

    // 3607 seconds bound to a pod, for the API audiences: extended to a year, warnafter at 3607.
    let reply = server
        .token_request(
            "ns",
            "app",
            json!({"expirationSeconds": 3607, "boundObjectRef": pod_ref("web-0", None)}),
        )
        .await;
    let body = reply.json();
    let claims = claims_of(&token_of(&reply));
    let iat = claims["iat"].as_i64().unwrap();
    assert_eq!(claims["exp"], iat + 31_536_000);
    assert_eq!(claims["kubernetes.io"]["warnafter"], iat + 3607);
    assert_eq!(body["spec"]["expirationSeconds"], 3607);
    let created = timestamp(&body["metadata"]["creationTimestamp"]);
    assert_eq!(
        timestamp(&body["status"]["expirationTimestamp"]).as_second(),
        created.as_second() + 3607,
        "the status keeps the unextended lifetime"
    );

    // Not extended: unbound, or bound but for an audience that is not an API audience.
    let unbound = server
        .token_request("ns", "app", json!({"expirationSeconds": 3607}))
        .await;
    let vault = server
        .token_request(
            "ns",
            "app",
            json!({"expirationSeconds": 3607, "audiences": ["vault"],
                   "boundObjectRef": pod_ref("web-0", None)}),
        )
        .await;
    for (what, reply) in [("unbound", unbound), ("vault audience", vault)] {
        let token = token_of(&reply);
        assert_eq!(lifetime(&token), 3607, "{what}");
        assert!(
            claims_of(&token)["kubernetes.io"]
                .get("warnafter")
                .is_none(),
            "{what}"
        );
    }

    let reply = server
        .token_request(
            "ns",
            "app",
            json!({"boundObjectRef": {"apiVersion": "v1", "kind": "ConfigMap", "name": "c"}}),
        )
        .await;
    assert_eq!(
        reply.assert_status(400, "BadRequest"),
        "cannot bind token to object of type /v1, Kind=ConfigMap"
    );
}

#[tokio::test]
async fn max_token_expiration_shortens_with_a_warning() {
    let tmp = tempfile::tempdir().unwrap();
    let server = start_serve(
        tmp.path(),
        &["--key-algorithm=es256", "--max-token-expiration=3600"],
    );
    let reply = server
        .token_request("ns", "app", json!({"expirationSeconds": 7200}))
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    let warnings: Vec<&str> = reply
        .headers
        .get_all("warning")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert_eq!(
        warnings,
        ["299 - \"requested expiration of 7200 seconds shortened to 3600 seconds\""]
    );
    let body = reply.json();
    assert_eq!(body["spec"]["expirationSeconds"], 3600);
    let created = timestamp(&body["metadata"]["creationTimestamp"]);
    assert_eq!(
        timestamp(&body["status"]["expirationTimestamp"]).as_second(),
        created.as_second() + 3600
    );
    assert_eq!(lifetime(&token_of(&reply)), 3600);

    // Within the maximum: no warning.
    let reply = server
        .token_request("ns", "app", json!({"expirationSeconds": 1800}))
        .await;
    assert_eq!(reply.status, 201);
    assert!(
        reply.headers.get("warning").is_none(),
        "{:?}",
        reply.headers
    );
}

#[tokio::test]
async fn declared_objects_without_auto_creation() {
    let tmp = tempfile::tempdir().unwrap();
    let objects = tmp.path().join("objects.yaml");
    std::fs::write(&objects, OBJECTS).unwrap();
    let objects_arg = format!("--objects={}", objects.display());
    let server = start_serve(
        tmp.path(),
        &["--key-algorithm=es256", "--no-auto-create", &objects_arg],
    );

    // Bound to the declared pod, with or without its uid: the declared uids end up in the token.
    for uid in [Some(POD_UID), None] {
        let reply = server
            .token_request(
                "ns",
                "app",
                json!({"boundObjectRef": pod_ref("web-0", uid)}),
            )
            .await;
        assert_eq!(reply.json()["metadata"]["uid"], SA_UID);
        let claims = claims_of(&token_of(&reply));
        let k8s = &claims["kubernetes.io"];
        assert_eq!(k8s["serviceaccount"], json!({"name": "app", "uid": SA_UID}));
        assert_eq!(k8s["pod"], json!({"name": "web-0", "uid": POD_UID}));
        assert_eq!(k8s["node"], json!({"name": "worker-1", "uid": NODE_UID}));
    }

    let reply = server
        .token_request(
            "ns",
            "app",
            json!({"boundObjectRef": pod_ref("web-0", Some("not-the-uid"))}),
        )
        .await;
    assert_eq!(
        reply.assert_status(409, "Conflict"),
        "Operation cannot be fulfilled on Pod \"web-0\": the UID in the bound object reference (not-the-uid) does not match the UID in record. The object might have been deleted and then recreated"
    );
    assert_eq!(
        reply.json()["details"],
        json!({"name": "web-0", "kind": "Pod"})
    );

    // A uid in the request's metadata must be the service account's.
    let admin = Some(server.admin_token.as_str());
    let request = |uid: &str| {
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
               "metadata": {"uid": uid}})
    };
    let reply = server
        .post_json(&token_path("ns", "app"), admin, &request("stale-uid"))
        .await;
    assert_eq!(
        reply.assert_status(409, "Conflict"),
        format!("Operation cannot be fulfilled on TokenRequest.authentication.k8s.io \"app\": the UID in the token request (stale-uid) does not match the UID of the service account ({SA_UID})")
    );
    assert_eq!(
        reply.json()["details"],
        json!({"name": "app", "group": "authentication.k8s.io", "kind": "TokenRequest"})
    );
    let reply = server
        .post_json(&token_path("ns", "app"), admin, &request(SA_UID))
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text);

    let reply = server
        .token_request("ns", "app", json!({"boundObjectRef": pod_ref("x", None)}))
        .await;
    assert_eq!(reply.assert_status(404, "NotFound"), "pods \"x\" not found");
    assert_eq!(
        reply.json()["details"],
        json!({"name": "x", "kind": "pods"})
    );

    let reply = server.token_request("ns", "ghost", json!({})).await;
    assert_eq!(
        reply.assert_status(404, "NotFound"),
        "serviceaccounts \"ghost\" not found"
    );
    // Declared in another namespace only: still unknown here.
    let reply = server.token_request("other", "app", json!({})).await;
    assert_eq!(
        reply.assert_status(404, "NotFound"),
        "serviceaccounts \"app\" not found"
    );
}

/// `kubectl get sa` / `get pods`: the declared and auto-created objects are listed and got, as
/// JSON or as kubectl's Table, by the admin only.
#[tokio::test]
async fn service_accounts_and_pods_are_listed_and_got_by_the_admin() {
    let tmp = tempfile::tempdir().unwrap();
    let objects = tmp.path().join("objects.yaml");
    let declared = OBJECTS.replace(
        "  uid: 5b1c3b1e-0a0e-4a59-9c43-2f0f5f6c1a01",
        "  uid: 5b1c3b1e-0a0e-4a59-9c43-2f0f5f6c1a01\n  creationTimestamp: \"2026-01-02T03:04:05Z\"",
    );
    std::fs::write(&objects, declared).unwrap();
    let server = start_serve(tmp.path(), &[&format!("--objects={}", objects.display())]);
    let admin = Some(server.admin_token.as_str());
    // A second service account, created on first use by a TokenRequest.
    let builder_token = server.issue("ci", "builder", json!({})).await;

    let reply = server.get("/api/v1/serviceaccounts", admin).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let list = reply.json();
    assert_eq!(list["kind"], "ServiceAccountList");
    let names: Vec<(String, String)> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| {
            let m = &i["metadata"];
            (
                m["namespace"].as_str().unwrap_or("").to_owned(),
                m["name"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            ("ci".to_owned(), "builder".to_owned()),
            ("ns".to_owned(), "app".to_owned())
        ]
    );
    // The declared creationTimestamp is kept; the auto-created one is dated when it was made.
    assert_eq!(
        list["items"][1]["metadata"]["creationTimestamp"],
        "2026-01-02T03:04:05Z"
    );
    assert_eq!(list["items"][1]["metadata"]["uid"], SA_UID);
    let made = timestamp(&list["items"][0]["metadata"]["creationTimestamp"]);
    assert!(
        (Timestamp::now() - made).get_seconds().abs() < 300,
        "{made}"
    );

    let one = server
        .get("/api/v1/namespaces/ns/serviceaccounts/app", admin)
        .await;
    assert_eq!(one.status, 200, "{}", one.text);
    assert_eq!(one.json()["kind"], "ServiceAccount");
    assert_eq!(one.json()["metadata"]["uid"], SA_UID);
    let in_ns = server
        .get("/api/v1/namespaces/ci/serviceaccounts", admin)
        .await;
    assert_eq!(in_ns.json()["items"].as_array().map(Vec::len), Some(1));
    let missing = server
        .get("/api/v1/namespaces/ns/serviceaccounts/ghost", admin)
        .await;
    assert_eq!(
        missing.assert_status(404, "NotFound"),
        "serviceaccounts \"ghost\" not found"
    );

    // Pods: the declared one, with its node; a field selector on the node.
    let pods = server
        .get(
            "/api/v1/namespaces/ns/pods?fieldSelector=spec.nodeName%3Dworker-1",
            admin,
        )
        .await;
    assert_eq!(pods.status, 200, "{}", pods.text);
    let pods = pods.json();
    assert_eq!(pods["kind"], "PodList");
    assert_eq!(pods["items"][0]["metadata"]["uid"], POD_UID);
    assert_eq!(pods["items"][0]["spec"]["serviceAccountName"], "app");
    assert_eq!(pods["items"][0]["status"]["phase"], "Running");
    let none = server
        .get("/api/v1/pods?fieldSelector=spec.nodeName%3Dworker-2", admin)
        .await;
    assert_eq!(none.json()["items"], json!([]));
    let bad = server
        .get("/api/v1/pods?fieldSelector=spec.hostNetwork%3Dtrue", admin)
        .await;
    assert_eq!(
        bad.assert_status(400, "BadRequest"),
        "field label not supported: spec.hostNetwork"
    );

    // What kubectl asks for: a Table with upstream's columns.
    let table = server
        .client
        .get(format!("{}/api/v1/namespaces/ns/pods/web-0", server.url))
        .bearer_auth(&server.admin_token)
        .header(
            "accept",
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
        )
        .send()
        .await
        .expect("table request");
    assert_eq!(table.status().as_u16(), 200);
    let table: Value = table.json().await.expect("table JSON");
    assert_eq!(table["kind"], "Table");
    assert_eq!(table["columnDefinitions"][0]["name"], "Name");
    assert_eq!(table["rows"][0]["cells"][0], "web-0");
    assert_eq!(table["rows"][0]["cells"][6], "worker-1");
    assert_eq!(table["rows"][0]["object"]["metadata"]["uid"], POD_UID);

    // A service account may not read them, as under upstream's default RBAC.
    let forbidden = server
        .get(
            "/api/v1/namespaces/ci/serviceaccounts",
            Some(&builder_token),
        )
        .await;
    assert_eq!(
        forbidden.assert_status(403, "Forbidden"),
        "serviceaccounts is forbidden: User \"system:serviceaccount:ci:builder\" cannot list resource \"serviceaccounts\" in API group \"\" in the namespace \"ci\""
    );
    let anonymous = server.get("/api/v1/pods", None).await;
    assert_eq!(anonymous.status, 401, "{}", anonymous.text);
}

#[tokio::test]
async fn token_creation_is_for_the_admin_unless_allowed() {
    let tmp = tempfile::tempdir().unwrap();
    let server = start_serve(tmp.path(), &["--key-algorithm=es256"]);
    let request = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest"});

    let reply = server
        .post_json(&token_path("ns", "app"), None, &request)
        .await;
    assert_eq!(reply.assert_status(401, "Unauthorized"), "Unauthorized");
    let reply = server
        .post_json(&token_path("ns", "app"), Some("not-a-token"), &request)
        .await;
    reply.assert_status(401, "Unauthorized");

    let sa_token = server.issue("ns", "app", json!({})).await;
    let reply = server
        .post_json(&token_path("ns", "app"), Some(&sa_token), &request)
        .await;
    assert_eq!(
        reply.assert_status(403, "Forbidden"),
        "serviceaccounts \"app\" is forbidden: User \"system:serviceaccount:ns:app\" cannot create resource \"serviceaccounts/token\" in API group \"\" in the namespace \"ns\""
    );
    assert_eq!(
        reply.json()["details"],
        json!({"name": "app", "kind": "serviceaccounts"})
    );

    let reply = server.get("/debug/token-usage", Some(&sa_token)).await;
    assert_eq!(
        reply.assert_status(403, "Forbidden"),
        "forbidden: User \"system:serviceaccount:ns:app\" cannot get path \"/debug/token-usage\""
    );
    let reply = server
        .get("/debug/token-usage", Some(&server.admin_token))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert!(reply.json().is_object());
    server
        .get("/debug/token-usage", None)
        .await
        .assert_status(401, "Unauthorized");

    // --allow-any-token-request: any authenticated caller may create tokens.
    // start_serve names its files uniquely, so the second server can share the directory.
    let open = start_serve(
        tmp.path(),
        &["--key-algorithm=es256", "--allow-any-token-request"],
    );
    let sa_token = open.issue("ns", "app", json!({})).await;
    let reply = open
        .post_json(&token_path("ns", "other"), Some(&sa_token), &request)
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    assert_eq!(
        claims_of(&token_of(&reply))["sub"],
        "system:serviceaccount:ns:other"
    );
    // Still not for anonymous callers.
    open.post_json(&token_path("ns", "app"), None, &request)
        .await
        .assert_status(401, "Unauthorized");
}

#[tokio::test]
async fn token_review_reports_the_user_of_a_pod_bound_token() {
    let tmp = tempfile::tempdir().unwrap();
    let objects = tmp.path().join("objects.yaml");
    std::fs::write(&objects, OBJECTS).unwrap();
    let objects_arg = format!("--objects={}", objects.display());
    let server = start_serve(tmp.path(), &["--key-algorithm=es256", &objects_arg]);

    let token = server
        .issue(
            "ns",
            "app",
            json!({"boundObjectRef": pod_ref("web-0", Some(POD_UID))}),
        )
        .await;
    let jti = claims_of(&token)["jti"].as_str().unwrap().to_owned();
    let expected_user = json!({
        "username": "system:serviceaccount:ns:app",
        "uid": SA_UID,
        "groups": ["system:serviceaccounts", "system:serviceaccounts:ns", "system:authenticated"],
        "extra": {
            "authentication.kubernetes.io/credential-id": [format!("JTI={jti}")],
            "authentication.kubernetes.io/node-name": ["worker-1"],
            "authentication.kubernetes.io/node-uid": [NODE_UID],
            "authentication.kubernetes.io/pod-name": ["web-0"],
            "authentication.kubernetes.io/pod-uid": [POD_UID],
        },
    });

    let status = server.review(&token).await;
    assert_eq!(status["authenticated"], true, "{status}");
    assert_eq!(status["user"], expected_user);
    assert_eq!(status["audiences"], json!([DEFAULT_ISSUER]));
    assert!(status.get("error").is_none(), "{status}");

    // Any authenticated caller may review: here the service account reviews its own token.
    let body = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                      "spec": {"token": token}});
    let reply = server.post_json(TOKEN_REVIEWS, Some(&token), &body).await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    let review = reply.json();
    assert_eq!(review["apiVersion"], "authentication.k8s.io/v1");
    assert_eq!(review["status"]["user"], expected_user);
    // Without a caller token: 401.
    server
        .post_json(TOKEN_REVIEWS, None, &body)
        .await
        .assert_status(401, "Unauthorized");

    // A token that is not one.
    let status = server.review("garbage.not.a-token").await;
    assert_eq!(status["authenticated"], false, "{status}");
    let error = status["error"].as_str().expect("status.error");
    assert!(error.starts_with("[invalid bearer token, "), "{error}");
    assert!(error.ends_with(']'), "{error}");

    // An empty token is a bad request.
    let body = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                      "spec": {"token": ""}});
    let reply = server
        .post_json(TOKEN_REVIEWS, Some(&server.admin_token), &body)
        .await;
    assert_eq!(
        reply.assert_status(400, "BadRequest"),
        "token is required for TokenReview in authentication"
    );

    // SelfSubjectReview: the caller's own user info, from JSON and from kubectl's protobuf.
    let reply = server.whoami(&token).await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    let body = reply.json();
    assert_eq!(body["kind"], "SelfSubjectReview");
    assert_eq!(body["apiVersion"], "authentication.k8s.io/v1");
    assert!(body["metadata"]["creationTimestamp"].is_string(), "{body}");
    assert_eq!(body["status"]["userInfo"], expected_user);
    let reply = server
        .send(
            Method::POST,
            SELF_SUBJECT_REVIEWS,
            Some(&token),
            Some(PROTOBUF),
            Some(fixture("whoami.pb")),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    assert_eq!(reply.json()["status"]["userInfo"], expected_user);
}

#[tokio::test]
async fn issuer_discovery_and_jwks() {
    let tmp = tempfile::tempdir().unwrap();
    let (server, key) = server_with_key(tmp.path(), KeyAlgorithm::Rs256, &[]);

    let reply = server.get("/.well-known/openid-configuration", None).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.header("cache-control"), Some("public, max-age=3600"));
    let jwks_uri = format!("https://127.0.0.1:{}/openid/v1/jwks", server.port());
    assert_eq!(
        reply.text,
        format!(
            r#"{{"issuer":"{DEFAULT_ISSUER}","jwks_uri":"{jwks_uri}","response_types_supported":["id_token"],"subject_types_supported":["public"],"id_token_signing_alg_values_supported":["RS256"]}}"#
        )
    );

    // The JWKS, fetched from the URI the document names.
    let reply = send(&server.client, Method::GET, &jwks_uri, None, None, None).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(
        reply.header("content-type"),
        Some("application/jwk-set+json")
    );
    assert_eq!(reply.header("cache-control"), Some("public, max-age=3600"));
    let prefix = format!(
        r#"{{"keys":[{{"use":"sig","kty":"RSA","kid":"{}","alg":"RS256","n":""#,
        key.kid()
    );
    assert!(reply.text.starts_with(&prefix), "{}", reply.text);
    assert!(reply.text.ends_with(r#"","e":"AQAB"}]}"#), "{}", reply.text);
    let jwks = reply.json();
    assert_eq!(jwks["keys"].as_array().map(Vec::len), Some(1));

    // The published n and e verify the server's tokens.
    let token = server.issue("ns", "app", json!({})).await;
    verify_bound(
        &token,
        &jwks,
        &[DEFAULT_ISSUER.to_owned()],
        &[DEFAULT_ISSUER.to_owned()],
        Timestamp::now(),
    )
    .expect("verifies");

    // An EC key: `crv` between `kid` and `alg`, then `x`, `y`.
    let ec_dir = tmp.path().join("ec");
    std::fs::create_dir(&ec_dir).unwrap();
    let (ec_server, ec_key) = server_with_key(&ec_dir, KeyAlgorithm::Es256, &[]);
    let reply = ec_server.get("/openid/v1/jwks", None).await;
    let prefix = format!(
        r#"{{"keys":[{{"use":"sig","kty":"EC","kid":"{}","crv":"P-256","alg":"ES256","x":""#,
        ec_key.kid()
    );
    assert!(reply.text.starts_with(&prefix), "{}", reply.text);
    let y = reply.text.find(r#"","y":""#).expect("y");
    assert!(reply.text[y..].ends_with(r#""}]}"#), "{}", reply.text);
    let reply = ec_server
        .get("/.well-known/openid-configuration", None)
        .await;
    assert_eq!(
        reply.json()["id_token_signing_alg_values_supported"],
        json!(["ES256"])
    );
}

#[tokio::test]
async fn version_discovery_health_metrics_and_unknown_paths() {
    let tmp = tempfile::tempdir().unwrap();
    let server = start_serve(tmp.path(), &["--key-algorithm=es256"]);

    for path in ["/version", "/version/"] {
        let reply = server.get(path, None).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text);
        assert_eq!(reply.header("content-type"), Some("application/json"));
        let version = reply.json();
        assert_eq!(version["major"], "1", "{version}");
        let minor = version["minor"].as_str().expect("minor");
        assert!(minor.parse::<u32>().is_ok(), "{version}");
        let git = version["gitVersion"].as_str().expect("gitVersion");
        assert!(git.starts_with(&format!("v1.{minor}.")), "{git}");
    }

    let sa_token = server.issue("ns", "app", json!({})).await;
    let names = |doc: &Value, list: &str, field: &str| -> Vec<String> {
        doc[list]
            .as_array()
            .unwrap_or_else(|| panic!("no {list}: {doc}"))
            .iter()
            .filter_map(|item| item[field].as_str().map(str::to_owned))
            .collect()
    };
    for token in [sa_token.as_str(), server.admin_token.as_str()] {
        let api = server.get("/api", Some(token)).await;
        assert_eq!(api.status, 200, "{}", api.text);
        assert_eq!(api.json()["kind"], "APIVersions");
        assert_eq!(api.json()["versions"], json!(["v1"]));

        let apis = server.get("/apis", Some(token)).await;
        assert_eq!(apis.status, 200, "{}", apis.text);
        assert_eq!(apis.json()["kind"], "APIGroupList");
        assert_eq!(
            names(&apis.json(), "groups", "name"),
            ["authentication.k8s.io"]
        );

        let core = server.get("/api/v1", Some(token)).await;
        assert_eq!(core.status, 200, "{}", core.text);
        assert_eq!(core.json()["kind"], "APIResourceList");
        assert!(
            names(&core.json(), "resources", "name").contains(&"serviceaccounts/token".to_owned())
        );

        let authn = server
            .get("/apis/authentication.k8s.io/v1", Some(token))
            .await;
        assert_eq!(authn.status, 200, "{}", authn.text);
        assert_eq!(authn.json()["groupVersion"], "authentication.k8s.io/v1");
        let resources = names(&authn.json(), "resources", "name");
        assert!(
            resources.contains(&"tokenreviews".to_owned()),
            "{resources:?}"
        );
        assert!(
            resources.contains(&"selfsubjectreviews".to_owned()),
            "{resources:?}"
        );
    }
    server
        .get("/api", None)
        .await
        .assert_status(401, "Unauthorized");

    for path in ["/livez", "/readyz", "/healthz"] {
        let reply = server.get(path, None).await;
        assert_eq!((reply.status, reply.text.as_str()), (200, "ok"), "{path}");
    }

    let reply = server.get("/metrics", None).await;
    assert_eq!(reply.status, 200);
    assert!(reply
        .header("content-type")
        .is_some_and(|c| c.starts_with("text/plain")));
    assert!(
        reply.text.contains("serviceaccount_valid_tokens_total"),
        "{}",
        reply.text
    );

    for token in [None, Some(server.admin_token.as_str())] {
        let reply = server.get("/apis/apps/v1/deployments", token).await;
        assert_eq!(
            reply.assert_status(404, "NotFound"),
            "the server could not find the requested resource"
        );
    }
    // A known path with another method: 405 with a Status body too.
    let reply = server
        .get(
            "/api/v1/namespaces/default/serviceaccounts/default/token",
            Some(server.admin_token.as_str()),
        )
        .await;
    assert_eq!(
        reply.assert_status(405, "MethodNotAllowed"),
        "the server does not allow this method on the requested resource (GET)"
    );
}

#[tokio::test]
async fn serving_certificate_names_and_trust() {
    let tmp = tempfile::tempdir().unwrap();
    let server = start_serve(tmp.path(), &["--key-algorithm=es256", "--san=my.example"]);
    let addr: SocketAddr = format!("127.0.0.1:{}", server.port()).parse().unwrap();
    let port = server.port();

    for name in ["localhost", "my.example"] {
        let client = https_client(&server.ca_pem, &[(name, addr)]);
        let url = format!("https://{name}:{port}/version");
        let reply = send(&client, Method::GET, &url, None, None, None).await;
        assert_eq!(reply.status, 200, "{url}");
    }
    let reply = server.get("/version", None).await;
    assert_eq!(reply.status, 200, "127.0.0.1");

    // A name the certificate does not carry is refused.
    let client = https_client(&server.ca_pem, &[("not-in-the-cert.example", addr)]);
    let result = client
        .get(format!("https://not-in-the-cert.example:{port}/version"))
        .send()
        .await;
    assert!(result.is_err(), "a foreign name was accepted: {result:?}");

    // Another CA is not trusted.
    let other = projected_token::tls::CertificateAuthority::generate("another CA").unwrap();
    let client = https_client(other.cert_pem(), &[]);
    let result = client.get(format!("{}/version", server.url)).send().await;
    assert!(result.is_err(), "a foreign CA was trusted: {result:?}");
}

#[tokio::test]
async fn listens_on_ipv4_and_ipv6_loopback() {
    let tmp = tempfile::tempdir().unwrap();
    let ipv6 = match std::net::TcpListener::bind("[::1]:0") {
        Ok(_) => true,
        Err(e) => {
            eprintln!("skipping the IPv6 part: cannot bind [::1]:0 on this machine: {e}");
            false
        }
    };
    let listen = if ipv6 {
        "--listen=127.0.0.1:0,[::1]:0"
    } else {
        "--listen=127.0.0.1:0"
    };
    let server = start_serve(tmp.path(), &["--key-algorithm=es256", listen]);
    assert_eq!(
        server.urls.len(),
        if ipv6 { 2 } else { 1 },
        "{:?}",
        server.urls
    );
    assert!(
        server.urls[0].starts_with("https://127.0.0.1:"),
        "{:?}",
        server.urls
    );
    if ipv6 {
        assert!(
            server.urls[1].starts_with("https://[::1]:"),
            "{:?}",
            server.urls
        );
        assert_ne!(server.urls[1], "https://[::1]:0");
    }
    for url in &server.urls {
        let reply = send(
            &server.client,
            Method::GET,
            &format!("{url}/version"),
            None,
            None,
            None,
        )
        .await;
        assert_eq!(reply.status, 200, "{url}");
        // The same server behind every listener: a token from one works at the other.
        let reply = send(
            &server.client,
            Method::GET,
            &format!("{url}/debug/token-usage"),
            Some(&server.admin_token),
            None,
            None,
        )
        .await;
        assert_eq!(reply.status, 200, "{url}");
    }
}

#[tokio::test]
async fn audit_log_records_issued_credentials_and_stale_tokens() {
    let tmp = tempfile::tempdir().unwrap();
    let audit = tmp.path().join("audit.log");
    let audit_arg = format!("--audit-log={}", audit.display());
    let (server, key) = server_with_key(tmp.path(), KeyAlgorithm::Es256, &[&audit_arg]);

    let reply = server.token_request("ns", "app", json!({})).await;
    let issued = token_of(&reply);
    let sa_uid = reply.json()["metadata"]["uid"].as_str().unwrap().to_owned();
    let jti = claims_of(&issued)["jti"].as_str().unwrap().to_owned();

    let metrics = server.get("/metrics", None).await.text;
    let stale_before = metric(&metrics, "serviceaccount_stale_tokens_total");

    // An extended pod-bound token issued 4000 s ago: past its warnafter (3607 s), not expired.
    let issued_at = Timestamp::now() - jiff::SignedDuration::from_secs(4000);
    let stale = TokenSpec::for_service_account("ns", "app", &sa_uid)
        .lifetime(3607)
        .bound_to_pod("web-0", POD_UID)
        .extended()
        .issued_at(issued_at)
        .mint(&key);
    let warn_after = stale.claims.kubernetes.warnafter.expect("warnafter");
    assert_eq!(warn_after, issued_at.as_second() + 3607);
    let reply = server.whoami(&stale.token).await;
    assert_eq!(
        reply.status, 201,
        "a stale token still authenticates: {}",
        reply.text
    );

    let metrics = server.get("/metrics", None).await.text;
    assert_eq!(
        metric(&metrics, "serviceaccount_stale_tokens_total"),
        stale_before + 1.0
    );
    let valid_before = metric(&metrics, "serviceaccount_valid_tokens_total");

    // A fresh extended token counts as valid; a token without warnafter counts as neither.
    let fresh = TokenSpec::for_service_account("ns", "app", &sa_uid)
        .lifetime(3607)
        .bound_to_pod("web-0", POD_UID)
        .extended()
        .mint(&key);
    assert_eq!(server.whoami(&fresh.token).await.status, 201);
    assert_eq!(server.whoami(&issued).await.status, 201);
    let metrics = server.get("/metrics", None).await.text;
    assert_eq!(
        metric(&metrics, "serviceaccount_valid_tokens_total"),
        valid_before + 1.0
    );
    assert_eq!(
        metric(&metrics, "serviceaccount_stale_tokens_total"),
        stale_before + 1.0
    );

    let text = std::fs::read_to_string(&audit).expect("audit log");
    let events: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    for event in &events {
        assert_eq!(event["kind"], "Event", "{event}");
        assert_eq!(event["apiVersion"], "audit.k8s.io/v1", "{event}");
        assert!(
            !event.to_string().contains(&issued),
            "a token in the audit log"
        );
        assert!(
            !event.to_string().contains(&stale.token),
            "a token in the audit log"
        );
    }
    let token_request = events
        .iter()
        .find(|e| e["objectRef"]["subresource"] == "token")
        .unwrap_or_else(|| panic!("no TokenRequest event in\n{text}"));
    assert_eq!(token_request["verb"], "create");
    assert_eq!(token_request["objectRef"]["resource"], "serviceaccounts");
    assert_eq!(token_request["objectRef"]["namespace"], "ns");
    assert_eq!(token_request["objectRef"]["name"], "app");
    assert_eq!(token_request["responseStatus"]["code"], 201);
    assert_eq!(
        token_request["annotations"]["authentication.kubernetes.io/issued-credential-id"],
        format!("JTI={jti}")
    );

    let stale_event = events
        .iter()
        .find(|e| {
            e["annotations"]
                .get("authentication.k8s.io/stale-token")
                .is_some()
        })
        .unwrap_or_else(|| panic!("no stale-token annotation in\n{text}"));
    assert_eq!(stale_event["objectRef"]["resource"], "selfsubjectreviews");
    assert_eq!(
        stale_event["user"]["username"],
        "system:serviceaccount:ns:app"
    );
    let received = timestamp(&stale_event["requestReceivedTimestamp"]).as_second();
    let seconds_after = received - warn_after;
    assert!(seconds_after >= 4000 - 3607, "{seconds_after}");
    assert_eq!(
        stale_event["annotations"]["authentication.k8s.io/stale-token"],
        format!("subject: system:serviceaccount:ns:app, seconds after warning threshold: {seconds_after}")
    );
}
