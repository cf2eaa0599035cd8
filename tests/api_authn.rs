//! Authentication of service account tokens by `serve`, over real HTTPS: each kind of bad token is
//! refused with 401 on a SelfSubjectReview, and a TokenReview tells why; bound tokens die with
//! their pod; replicas sharing a key accept each other's tokens; a rotated-out key keeps working
//! only when given as an extra verification key.

mod common;

use std::path::Path;
use std::sync::Arc;

use aws_lc_rs::hmac;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::{start_serve, write_key, ApiServer, TokenSpec};
use jiff::{SignedDuration, Timestamp};
use projected_token::issuer::{KeyAlgorithm, SigningKey, DEFAULT_ISSUER};
use projected_token::token::decode;
use reqwest::Method;
use serde_json::{json, Value};

const SA_UID: &str = "3f0c8a52-5d0e-4c57-9b1a-1e2d3c4b5a60";

/// A server signing with a fresh key of `algorithm` written to `dir`.
fn serve_with_key(dir: &Path, algorithm: KeyAlgorithm) -> (ApiServer, Arc<SigningKey>) {
    let (path, key) = write_key(dir, "signing.key", algorithm);
    let arg = format!("--signing-key={}", path.display());
    (start_serve(dir, &[&arg]), key)
}

/// The token is refused: 401 with upstream's bare Status on a SelfSubjectReview, and a TokenReview
/// (by the admin) says it is not authenticated, with `reason` as upstream words it.
async fn assert_rejected(server: &ApiServer, token: &str, reason: &str) {
    let reply = server.whoami(token).await;
    assert_eq!(reply.assert_status(401, "Unauthorized"), "Unauthorized");
    assert!(
        !reply.text.contains(reason),
        "the cause leaked: {}",
        reply.text
    );
    let status = server.review(token).await;
    assert_eq!(status["authenticated"], false, "{status}");
    assert_eq!(
        status["error"],
        format!("[invalid bearer token, {reason}]"),
        "{status}"
    );
    assert!(
        status["user"].as_object().is_none_or(|u| u.is_empty()),
        "{status}"
    );
}

/// The token authenticates as `ns/app`.
async fn assert_accepted(server: &ApiServer, token: &str) -> Value {
    let reply = server.whoami(token).await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    let user = reply.json()["status"]["userInfo"].clone();
    assert_eq!(user["username"], "system:serviceaccount:ns:app", "{user}");
    user
}

fn now() -> Timestamp {
    Timestamp::now()
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// `header.payload` of `token` with another header.
fn with_header(token: &str, header: &Value) -> String {
    let payload = token.split('.').nth(1).expect("payload");
    format!("{}.{payload}", b64(header.to_string().as_bytes()))
}

fn kid(token: &str) -> String {
    decode(token)
        .expect("decodes")
        .header_str("kid")
        .expect("kid")
        .to_owned()
}

#[tokio::test]
async fn wrong_signature() {
    let tmp = tempfile::tempdir().unwrap();
    let (server, _) = serve_with_key(tmp.path(), KeyAlgorithm::Es256);
    let token = server.issue("ns", "app", json!({})).await;
    assert_accepted(&server, &token).await;

    let (signed, signature) = token.rsplit_once('.').unwrap();
    let mut bytes = URL_SAFE_NO_PAD.decode(signature).unwrap();
    for i in [5, 20, 40] {
        bytes[i] ^= 0x5a;
    }
    let tampered = format!("{signed}.{}", b64(&bytes));
    assert_rejected(&server, &tampered, "invalid signature").await;

    // The claims changed under an unchanged signature fails the same way.
    let mut claims = decode(&token).unwrap().claims;
    claims.insert(
        "sub".into(),
        json!("system:serviceaccount:kube-system:admin"),
    );
    let header = signed.split('.').next().unwrap();
    let forged = format!(
        "{header}.{}.{signature}",
        b64(serde_json::to_string(&claims).unwrap().as_bytes())
    );
    assert_rejected(&server, &forged, "invalid signature").await;
}

#[tokio::test]
async fn unknown_kid() {
    let tmp = tempfile::tempdir().unwrap();
    let (server, _) = serve_with_key(tmp.path(), KeyAlgorithm::Es256);
    let other = Arc::new(SigningKey::generate(KeyAlgorithm::Es256).unwrap());
    let token = TokenSpec::for_service_account("ns", "app", SA_UID).mint(&other);
    assert_rejected(&server, &token.token, "invalid signature, no keys found").await;
}

#[tokio::test]
async fn alg_none() {
    let tmp = tempfile::tempdir().unwrap();
    let (server, _) = serve_with_key(tmp.path(), KeyAlgorithm::Es256);
    let token = server.issue("ns", "app", json!({})).await;
    let unsigned = format!("{}.", with_header(&token, &json!({"alg": "none"})));
    assert_rejected(&server, &unsigned, "unsupported signing algorithm \"none\"").await;
    // The same with the server's kid: still refused.
    let unsigned = format!(
        "{}.",
        with_header(&token, &json!({"alg": "none", "kid": kid(&token)}))
    );
    assert_rejected(&server, &unsigned, "unsupported signing algorithm \"none\"").await;
}

#[tokio::test]
async fn hs256_keyed_with_the_rsa_public_key() {
    let tmp = tempfile::tempdir().unwrap();
    let (server, key) = serve_with_key(tmp.path(), KeyAlgorithm::Rs256);
    let token = server.issue("ns", "app", json!({})).await;
    assert_accepted(&server, &token).await;

    let public_pem = key.public_key_pem();
    let secrets: [(&str, &[u8]); 2] = [
        ("public key PEM", public_pem.as_bytes()),
        ("SPKI DER", key.public_key_der()),
    ];
    for (what, secret) in secrets {
        let signed = with_header(&token, &json!({"alg": "HS256", "kid": key.kid()}));
        let mac = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, secret),
            signed.as_bytes(),
        );
        let forged = format!("{signed}.{}", b64(mac.as_ref()));
        eprintln!("HS256 keyed with the {what}");
        assert_rejected(&server, &forged, "unsupported signing algorithm \"HS256\"").await;
    }
}

#[tokio::test]
async fn wrong_audience() {
    let tmp = tempfile::tempdir().unwrap();
    let (server, _) = serve_with_key(tmp.path(), KeyAlgorithm::Es256);
    let token = server.issue("ns", "app", json!({"audiences": ["x"]})).await;
    assert_rejected(
        &server,
        &token,
        &format!(
            "token audiences [\"x\"] is invalid for the target audiences [\"{DEFAULT_ISSUER}\"]"
        ),
    )
    .await;

    // A review that asks for audience "x" accepts it, and says so.
    let body = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                      "spec": {"token": token, "audiences": ["x"]}});
    let reply = server
        .post_json(
            "/apis/authentication.k8s.io/v1/tokenreviews",
            Some(&server.admin_token),
            &body,
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    let status = &reply.json()["status"];
    assert_eq!(status["authenticated"], true, "{status}");
    assert_eq!(status["audiences"], json!(["x"]));
}

#[tokio::test]
async fn expired() {
    let tmp = tempfile::tempdir().unwrap();
    let (server, key) = serve_with_key(tmp.path(), KeyAlgorithm::Es256);
    let token = TokenSpec::for_service_account("ns", "app", SA_UID)
        .issued_at(now() - SignedDuration::from_secs(7200))
        .mint(&key);
    assert_rejected(&server, &token.token, "service account token has expired").await;
    // Expired 30 s ago is within go-jose's 60 s leeway: still accepted.
    let token = TokenSpec::for_service_account("ns", "app", SA_UID)
        .issued_at(now() - SignedDuration::from_secs(3630))
        .mint(&key);
    assert_accepted(&server, &token.token).await;
}

#[tokio::test]
async fn not_yet_valid() {
    let tmp = tempfile::tempdir().unwrap();
    let (server, key) = serve_with_key(tmp.path(), KeyAlgorithm::Es256);
    let token = TokenSpec::for_service_account("ns", "app", SA_UID)
        .issued_at(now() + SignedDuration::from_secs(600))
        .mint(&key);
    assert_rejected(
        &server,
        &token.token,
        "service account token is not valid yet",
    )
    .await;
    // Within go-jose's 60 s leeway it is fine (the SA is adopted with the claimed uid).
    let token = TokenSpec::for_service_account("ns", "app", SA_UID)
        .issued_at(now() + SignedDuration::from_secs(20))
        .mint(&key);
    let user = assert_accepted(&server, &token.token).await;
    assert_eq!(user["uid"], SA_UID);
}

#[tokio::test]
async fn deleted_pod_invalidates_its_tokens() {
    let tmp = tempfile::tempdir().unwrap();
    let (server, _) = serve_with_key(tmp.path(), KeyAlgorithm::Es256);
    let reply = server
        .token_request(
            "ns",
            "app",
            json!({"boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "web-0"}}),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    let token = reply.json()["status"]["token"].as_str().unwrap().to_owned();
    let pod_uid = decode(&token).unwrap().claims["kubernetes.io"]["pod"]["uid"]
        .as_str()
        .unwrap()
        .to_owned();
    let user = assert_accepted(&server, &token).await;
    assert_eq!(
        user["extra"]["authentication.kubernetes.io/pod-uid"],
        json!([pod_uid])
    );

    let pod_path = "/api/v1/namespaces/ns/pods/web-0";
    // A service account may not delete pods.
    let reply = server
        .send(Method::DELETE, pod_path, Some(&token), None, None)
        .await;
    assert_eq!(
        reply.assert_status(403, "Forbidden"),
        "pods \"web-0\" is forbidden: User \"system:serviceaccount:ns:app\" cannot delete resource \"pods\" in API group \"\" in the namespace \"ns\""
    );
    assert_accepted(&server, &token).await;

    // The admin may: the pod is answered, and its tokens stop working at once.
    let reply = server
        .send(
            Method::DELETE,
            pod_path,
            Some(&server.admin_token),
            None,
            None,
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let pod = reply.json();
    assert_eq!(pod["kind"], "Pod");
    assert_eq!(pod["metadata"]["name"], "web-0");
    assert_eq!(pod["metadata"]["uid"], pod_uid);
    assert_rejected(
        &server,
        &token,
        "service account token has been invalidated",
    )
    .await;

    // Gone: a second delete is 404.
    let reply = server
        .send(
            Method::DELETE,
            pod_path,
            Some(&server.admin_token),
            None,
            None,
        )
        .await;
    assert_eq!(
        reply.assert_status(404, "NotFound"),
        "pods \"web-0\" not found"
    );

    // A new pod of the same name (created on first use) has another uid: the old token stays dead.
    let fresh = server
        .issue(
            "ns",
            "app",
            json!({"boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "web-0"}}),
        )
        .await;
    let fresh_uid = decode(&fresh).unwrap().claims["kubernetes.io"]["pod"]["uid"].clone();
    assert_ne!(fresh_uid, json!(pod_uid));
    assert_accepted(&server, &fresh).await;
    assert_rejected(
        &server,
        &token,
        "service account token has been invalidated",
    )
    .await;
}

#[tokio::test]
async fn replicas_sharing_a_key_accept_each_others_tokens() {
    let tmp = tempfile::tempdir().unwrap();
    let (key_path, key) = write_key(tmp.path(), "shared.key", KeyAlgorithm::Es256);
    let key_arg = format!("--signing-key={}", key_path.display());
    let a = start_serve(tmp.path(), &[&key_arg]);
    let b = start_serve(tmp.path(), &[&key_arg]);
    assert_ne!(a.url, b.url);
    for server in [&a, &b] {
        let jwks = server.get("/openid/v1/jwks", None).await.json();
        assert_eq!(common::kids(&jwks), [key.kid()]);
    }

    let from_a = a
        .issue(
            "ns",
            "app",
            json!({"boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "web-0"}}),
        )
        .await;
    let at_a = assert_accepted(&a, &from_a).await;
    let at_b = assert_accepted(&b, &from_a).await;
    assert_eq!(at_a, at_b, "same user, uids adopted from the claims");
    let status = b.review(&from_a).await;
    assert_eq!(status["authenticated"], true, "{status}");

    let from_b = b.issue("other", "robot", json!({})).await;
    let reply = a.whoami(&from_b).await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    assert_eq!(
        reply.json()["status"]["userInfo"]["username"],
        "system:serviceaccount:other:robot"
    );
}

#[tokio::test]
async fn rotated_key_needs_extra_verification_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let (old_path, old_key) = write_key(tmp.path(), "old.key", KeyAlgorithm::Rs256);
    let (new_path, new_key) = write_key(tmp.path(), "new.key", KeyAlgorithm::Es256);
    let old_public = tmp.path().join("old.pub.pem");
    std::fs::write(&old_public, old_key.public_key_pem()).unwrap();

    let old_token = {
        let old_server = start_serve(
            tmp.path(),
            &[&format!("--signing-key={}", old_path.display())],
        );
        old_server.issue("ns", "app", json!({})).await
    };
    assert_eq!(kid(&old_token), old_key.kid());

    let new_arg = format!("--signing-key={}", new_path.display());
    for extra in [&old_path, &old_public] {
        let extra_arg = format!("--extra-verification-keys={}", extra.display());
        let server = start_serve(tmp.path(), &[&new_arg, &extra_arg]);
        let jwks = server.get("/openid/v1/jwks", None).await.json();
        assert_eq!(
            common::kids(&jwks),
            [new_key.kid(), old_key.kid()],
            "{}",
            extra.display()
        );
        let config = server
            .get("/.well-known/openid-configuration", None)
            .await
            .json();
        assert_eq!(
            config["id_token_signing_alg_values_supported"],
            json!(["ES256", "RS256"])
        );
        assert_accepted(&server, &old_token).await;
        // New tokens are signed with the new key.
        let new_token = server.issue("ns", "app", json!({})).await;
        assert_eq!(kid(&new_token), new_key.kid());
        assert_accepted(&server, &new_token).await;
    }

    // Without the old key, its tokens are refused.
    let server = start_serve(tmp.path(), &[&new_arg]);
    let jwks = server.get("/openid/v1/jwks", None).await.json();
    assert_eq!(common::kids(&jwks), [new_key.kid()]);
    assert_rejected(&server, &old_token, "invalid signature, no keys found").await;
}

#[tokio::test]
async fn claims_must_match_the_declared_objects() {
    let tmp = tempfile::tempdir().unwrap();
    let objects = tmp.path().join("objects.yaml");
    let pod_uid = "6a1e0b7c-2d3f-4e5a-8b9c-0d1e2f3a4b5c";
    std::fs::write(
        &objects,
        format!(
            "apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: app, namespace: ns, uid: {SA_UID}}}\n---\n\
             apiVersion: v1\nkind: Pod\nmetadata: {{name: web-0, namespace: ns, uid: {pod_uid}}}\n\
             spec: {{serviceAccountName: app, containers: [{{name: app, image: app}}]}}\n"
        ),
    )
    .unwrap();
    let (key_path, key) = write_key(tmp.path(), "signing.key", KeyAlgorithm::Es256);
    let server = start_serve(
        tmp.path(),
        &[
            &format!("--signing-key={}", key_path.display()),
            &format!("--objects={}", objects.display()),
            "--no-auto-create",
        ],
    );
    let token = |sa: (&str, &str, &str), pod: Option<(&str, &str)>| {
        TokenSpec::for_service_account(sa.0, sa.1, sa.2)
            .bound_to(pod.map(|(name, uid)| common::pod_binding(name, uid)))
            .mint(&key)
            .token
    };

    let good = token(("ns", "app", SA_UID), Some(("web-0", pod_uid)));
    let user = assert_accepted(&server, &good).await;
    assert_eq!(user["uid"], SA_UID);

    let other_sa_uid = "00000000-0000-4000-8000-000000000001";
    assert_rejected(
        &server,
        &token(("ns", "app", other_sa_uid), None),
        &format!("service account UID ({SA_UID}) does not match claim ({other_sa_uid})"),
    )
    .await;
    assert_rejected(
        &server,
        &token(("ns", "ghost", SA_UID), None),
        "serviceaccounts \"ghost\" not found",
    )
    .await;
    let other_pod_uid = "00000000-0000-4000-8000-000000000002";
    assert_rejected(
        &server,
        &token(("ns", "app", SA_UID), Some(("web-0", other_pod_uid))),
        &format!(
            "pod UID ({pod_uid}) does not match service account pod ref claim ({other_pod_uid})"
        ),
    )
    .await;
    assert_rejected(
        &server,
        &token(("ns", "app", SA_UID), Some(("web-1", other_pod_uid))),
        "service account token has been invalidated",
    )
    .await;
}

/// Claims of a bound token for `ns/app` issued now, with `sub` as given.
fn bound_claims(namespace: &str, name: &str, sub: &str) -> Value {
    let iat = now().as_second();
    json!({
        "aud": [DEFAULT_ISSUER], "exp": iat + 3600, "iat": iat, "iss": DEFAULT_ISSUER,
        "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": name, "uid": SA_UID}},
        "nbf": iat, "sub": sub,
    })
}

/// A token signed with the server's own key cannot choose its user with `sub`: the user is the
/// `kubernetes.io` service account, and a `sub` naming anyone else is refused.
#[tokio::test]
async fn sub_must_name_the_kubernetes_io_service_account() {
    let tmp = tempfile::tempdir().unwrap();
    let (server, key) = serve_with_key(tmp.path(), KeyAlgorithm::Es256);
    for sub in [
        "admin",
        "system:admin",
        "system:serviceaccount:kube-system:admin",
        "",
    ] {
        let forged = key.sign_jwt(&bound_claims("ns", "app", sub)).expect("sign");
        eprintln!("sub {sub:?}");
        assert_rejected(&server, &forged, "sub claim is invalid").await;
    }
    let honest = key
        .sign_jwt(&bound_claims("ns", "app", "system:serviceaccount:ns:app"))
        .expect("sign");
    let user = assert_accepted(&server, &honest).await;
    assert_eq!(user["groups"][1], "system:serviceaccounts:ns", "{user}");
}

/// Names no object can have are never adopted from a signed token: `a` + `b:c` and `a:b` + `c`
/// would both be `system:serviceaccount:a:b:c`. Legacy tokens too (upstream's `SplitUsername`).
#[tokio::test]
async fn signed_tokens_with_invalid_names_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (server, key) = serve_with_key(tmp.path(), KeyAlgorithm::Es256);
    for (namespace, name) in [("a:b", "c"), ("a", "b:c"), ("ns", "App"), ("NS", "app")] {
        let sub = format!("system:serviceaccount:{namespace}:{name}");
        let bound = key
            .sign_jwt(&bound_claims(namespace, name, &sub))
            .expect("sign");
        eprintln!("bound {namespace}/{name}");
        assert_rejected(
            &server,
            &bound,
            &format!("serviceaccounts \"{name}\" not found"),
        )
        .await;
        let issuer = projected_token::issuer::Issuer::new(
            projected_token::issuer::IssuerConfig::new(DEFAULT_ISSUER),
            key.clone(),
        );
        let account = projected_token::issuer::ServiceAccountRef {
            namespace: namespace.into(),
            name: name.into(),
            uid: SA_UID.into(),
        };
        let legacy = issuer.mint_legacy(&account, "app-token").expect("legacy");
        eprintln!("legacy {namespace}/{name}");
        assert_rejected(&server, &legacy, "sub claim is invalid").await;
    }
    // The valid names of the first case, split either way, still work.
    let token = server.issue("a", "b.c", json!({})).await;
    let reply = server.whoami(&token).await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    assert_eq!(
        reply.json()["status"]["userInfo"]["username"],
        "system:serviceaccount:a:b.c"
    );
}

/// A TokenReview of a token with whitespace around it does not authenticate (the token a client
/// would send in a header has none), and neither does a header with two spaces after `Bearer`
/// (upstream ignores that header and says so in a warning).
#[tokio::test]
async fn tokens_with_surrounding_whitespace_do_not_authenticate() {
    let tmp = tempfile::tempdir().unwrap();
    let (server, _) = serve_with_key(tmp.path(), KeyAlgorithm::Es256);
    let token = server.issue("ns", "app", json!({})).await;
    assert_accepted(&server, &token).await;
    for padded in [
        format!(" {token}"),
        format!("{token} "),
        format!("{token}\n"),
        format!("\t{token}"),
        format!("\r\n{token}\r\n"),
    ] {
        let status = server.review(&padded).await;
        assert_eq!(status["authenticated"], false, "{padded:?}: {status}");
        assert_eq!(
            status["error"], "[invalid bearer token, token has leading or trailing whitespace]",
            "{status}"
        );
    }
    let status = server.review(&token).await;
    assert_eq!(status["authenticated"], true, "{status}");

    let body = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"});
    let reply = server
        .client
        .post(format!(
            "{}/apis/authentication.k8s.io/v1/selfsubjectreviews",
            server.url
        ))
        .header("authorization", format!("Bearer  {token}"))
        .json(&body)
        .send()
        .await
        .expect("request");
    assert_eq!(reply.status(), 401);
    assert_eq!(
        reply
            .headers()
            .get("warning")
            .and_then(|v| v.to_str().ok()),
        Some("299 - \"the provided Authorization header contains extra space before the bearer token, and is ignored\"")
    );
}
