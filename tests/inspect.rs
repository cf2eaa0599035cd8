//! End-to-end tests of `inspect`: the real binary on tokens shaped like the two seed examples.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;

use assert_cmd::Command;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};

const IAT: i64 = 1_700_000_000;
const ISS: &str = "https://kubernetes.default.svc.cluster.local";

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
}

fn header() -> Value {
    json!({"alg": "RS256", "kid": "Zm9vYmFyYmF6cXV4cXV1eGNvcmdlZ3JhdWx0Z2FycGx5"})
}

fn jwt(claims: &Value) -> String {
    // Any base64url bytes do as a signature: inspect needs no key.
    format!(
        "{}.{}.{}",
        b64(&header()),
        b64(claims),
        URL_SAFE_NO_PAD.encode([7u8; 256])
    )
}

/// A default `kube-api-access` volume token: 3607 s requested, extended to a year.
fn bound_claims() -> Value {
    json!({
        "aud": [ISS],
        "exp": IAT + 31_536_000,
        "iat": IAT,
        "iss": ISS,
        "jti": "6f1c4c2e-8a5b-4f5e-9d1e-2b3c4d5e6f70",
        "kubernetes.io": {
            "namespace": "default",
            "node": {"name": "kind-control-plane", "uid": "0d6a1c55-3c0f-4f0e-8a8b-6d3f2c1b0a99"},
            "pod": {"name": "app-7d9c8b6f5-x2x4z", "uid": "8f7e6d5c-4b3a-4291-8e7f-6a5b4c3d2e1f"},
            "serviceaccount": {"name": "default", "uid": "2a9b8c7d-6e5f-4a3b-9c2d-1e0f9a8b7c6d"},
            "warnafter": IAT + 3607
        },
        "nbf": IAT,
        "sub": "system:serviceaccount:default:default"
    })
}

/// A legacy secret-based token: flat claims, no `exp`.
fn legacy_claims() -> Value {
    json!({
        "iss": "kubernetes/serviceaccount",
        "kubernetes.io/serviceaccount/namespace": "default",
        "kubernetes.io/serviceaccount/secret.name": "default-token-7xk2p",
        "kubernetes.io/serviceaccount/service-account.name": "default",
        "kubernetes.io/serviceaccount/service-account.uid": "2a9b8c7d-6e5f-4a3b-9c2d-1e0f9a8b7c6d",
        "sub": "system:serviceaccount:default:default"
    })
}

fn inspect() -> Command {
    let mut cmd = Command::cargo_bin("projected-token").unwrap();
    cmd.arg("inspect");
    cmd
}

fn json_of(output: &std::process::Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

fn write_token(dir: &Path, token: &str) -> String {
    let path = dir.join("token");
    std::fs::write(&path, token).unwrap();
    path.to_str().unwrap().to_owned()
}

/// Runs `inspect` expecting exit 2; returns stderr.
fn usage_error(args: &[&str]) -> String {
    let output = inspect().args(args).output().unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    String::from_utf8(output.stderr).unwrap()
}

#[test]
fn bound_token_from_a_file_as_json() {
    let tmp = tempfile::tempdir().unwrap();
    let path = write_token(tmp.path(), &jwt(&bound_claims()));
    let output = inspect()
        .args([&path, "--output", "json"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let v = json_of(&output);
    assert_eq!(v["kind"], "bound");
    assert_eq!(v["header"]["alg"], "RS256");
    assert_eq!(v["claims"]["sub"], "system:serviceaccount:default:default");
    assert_eq!(v["issued_at"], "2023-11-14T22:13:20Z");
    assert_eq!(v["expires_at"], "2024-11-13T22:13:20Z");
    assert_eq!(v["warn_after"], "2023-11-14T23:13:27Z");
    assert_eq!(v["extended_expiration"], true);
    assert_eq!(v["effective_expiry"], "2023-11-14T23:13:27Z");
    // 80% of 3607 s is 2886 s after issue; the jitter brings it up to 9 s earlier.
    assert_eq!(v["refresh_window"]["earliest"], "2023-11-14T23:01:17Z");
    assert_eq!(v["refresh_window"]["latest"], "2023-11-14T23:01:26Z");
    assert_eq!(v["lifetime_seconds"], 31_536_000);
    assert_eq!(v["requested_lifetime_seconds"], 3607);
    assert_eq!(v["namespace"], "default");
    assert_eq!(v["service_account"]["name"], "default");
    assert_eq!(v["bound_object"]["kind"], "pod");
    assert_eq!(v["bound_object"]["name"], "app-7d9c8b6f5-x2x4z");
    assert_eq!(v["node"]["name"], "kind-control-plane");
    assert_eq!(v["audiences"], json!([ISS]));
    assert_eq!(v["jti"], "6f1c4c2e-8a5b-4f5e-9d1e-2b3c4d5e6f70");
    // Issued in 2023 for a year: long expired by any clock this test runs on.
    assert_eq!(v["status"], "expired");
    assert!(v["signature"].is_null());
    assert!(v["explanation"].as_array().is_some_and(|l| !l.is_empty()));
}

#[test]
fn legacy_token_as_the_argument() {
    let output = inspect()
        .args([&jwt(&legacy_claims()), "-o", "json"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let v = json_of(&output);
    assert_eq!(v["kind"], "legacy");
    assert!(v["expires_at"].is_null());
    assert!(v["issued_at"].is_null());
    assert!(v["warn_after"].is_null());
    assert!(v["effective_expiry"].is_null());
    assert!(v["refresh_window"].is_null());
    assert_eq!(v["extended_expiration"], false);
    assert_eq!(v["status"], "valid");
    assert_eq!(v["secret_name"], "default-token-7xk2p");
    assert_eq!(v["service_account"]["name"], "default");
    let words = v["explanation"].to_string();
    assert!(words.contains("never expire"), "{words}");
}

#[test]
fn text_output_explains_the_one_year_extension() {
    let tmp = tempfile::tempdir().unwrap();
    let path = write_token(tmp.path(), &jwt(&bound_claims()));
    let output = inspect().arg(&path).output().unwrap();
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    for needle in [
        "bound (TokenRequest)",
        "pod app-7d9c8b6f5-x2x4z",
        "2023-11-14T22:13:20Z",
        "2024-11-13T22:13:20Z",
        "one year",
        "extended this 3607 s token",
        "never reload",
        "stale",
        "80% of 3607 s",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
}

#[test]
fn legacy_text_says_it_never_expires() {
    let output = inspect().arg(jwt(&legacy_claims())).output().unwrap();
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.contains("legacy (secret-based)"), "{text}");
    assert!(text.contains("never (no exp claim)"), "{text}");
    assert!(text.contains("Legacy tokens never expire"), "{text}");
}

/// `exp` = 2^63-1 is a date past any we can show, not a missing `exp`: said so, with the number.
#[test]
fn an_exp_past_the_last_date_is_shown_with_its_number() {
    let mut claims = bound_claims();
    claims["exp"] = json!(i64::MAX);
    let output = inspect().arg(jwt(&claims)).output().unwrap();
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(
        text.contains(
            "out of range: 9223372036854775807 is after 9999-12-30T22:00:00Z, the last date shown here"
        ),
        "{text}"
    );
    assert!(!text.contains("no exp claim"), "{text}");

    let output = inspect()
        .args([&jwt(&claims), "--output", "json"])
        .output()
        .unwrap();
    let json = json_of(&output);
    assert_eq!(json["expires_at"], Value::Null);
    assert_eq!(
        json["out_of_range"],
        json!([{"claim": "exp", "seconds": i64::MAX, "beyond": "after"}])
    );
}

#[test]
fn dash_reads_standard_input_and_trims_the_newline() {
    let output = inspect()
        .args(["-", "--output", "json"])
        .write_stdin(format!("{}\n", jwt(&bound_claims())))
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(json_of(&output)["issued_at"], "2023-11-14T22:13:20Z");
}

#[test]
fn a_volume_directory_reads_its_token_file() {
    let tmp = tempfile::tempdir().unwrap();
    write_token(tmp.path(), &jwt(&bound_claims()));
    let output = inspect()
        .args([tmp.path().to_str().unwrap(), "-o", "json"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(json_of(&output)["kind"], "bound");
}

#[test]
fn two_parts_is_a_usage_error() {
    let token = jwt(&bound_claims());
    let two = token.rsplit_once('.').unwrap().0;
    let stderr = usage_error(&[two]);
    assert!(
        stderr.contains("three dot-separated parts, found 2"),
        "{stderr}"
    );
}

#[test]
fn bad_base64_in_the_payload_is_a_usage_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let payload = b64(&bound_claims());
    let token = format!(
        "{}.{}*{}.c2ln",
        b64(&header()),
        &payload[..10],
        &payload[10..]
    );
    let path = write_token(tmp.path(), &token);
    let stderr = usage_error(&[&path]);
    assert!(stderr.contains("payload"), "{stderr}");
    assert!(stderr.contains("not base64url"), "{stderr}");
    assert!(stderr.contains(&path), "names the source: {stderr}");
    // The token is a credential: it never appears in errors.
    assert!(!stderr.contains(&payload[10..40]), "{stderr}");
}

#[test]
fn payload_that_is_not_json_is_a_usage_error_naming_it() {
    let payload = URL_SAFE_NO_PAD.encode(b"this is not json");
    let token = format!("{}.{payload}.c2ln", b64(&header()));
    let output = inspect().arg("-").write_stdin(token).output().unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("payload"), "{stderr}");
    assert!(stderr.contains("not JSON"), "{stderr}");
    assert!(!stderr.contains(&payload), "{stderr}");
}

#[test]
fn a_missing_file_is_a_usage_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no-such-token");
    let missing = missing.to_str().unwrap();
    let stderr = usage_error(&[missing]);
    assert!(stderr.contains(missing), "{stderr}");
    assert!(stderr.contains("No such file"), "{stderr}");
}

#[test]
fn empty_standard_input_is_a_usage_error() {
    let output = inspect().arg("-").write_stdin("\n").output().unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("standard input: the token is empty"),
        "{stderr}"
    );
}

#[test]
fn a_missing_jwks_file_is_a_usage_error() {
    let stderr = usage_error(&[&jwt(&bound_claims()), "--jwks", "/nonexistent/jwks.json"]);
    assert!(stderr.contains("/nonexistent/jwks.json"), "{stderr}");
}

mod jwks {
    use super::*;
    use projected_token::issuer::jwks::jwks_document;
    use projected_token::issuer::{KeyAlgorithm, SigningKey};

    fn signed(key: &SigningKey) -> String {
        key.sign_jwt(&bound_claims()).unwrap()
    }

    fn write_jwks(dir: &Path, key: &SigningKey) -> String {
        let path = dir.join("jwks.json");
        std::fs::write(&path, jwks_document(&[key]).to_string()).unwrap();
        path.to_str().unwrap().to_owned()
    }

    #[test]
    fn good_signature_exits_0_and_wrong_key_exits_1() {
        let tmp = tempfile::tempdir().unwrap();
        let key = SigningKey::generate(KeyAlgorithm::Es256).unwrap();
        let other = SigningKey::generate(KeyAlgorithm::Es256).unwrap();
        let token = signed(&key);

        let jwks = write_jwks(tmp.path(), &key);
        let output = inspect()
            .args([&token, "--jwks", &jwks, "-o", "json"])
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        let v = json_of(&output);
        assert_eq!(v["signature"]["verified"], true);
        assert_eq!(v["signature"]["key_id"], key.kid());

        let wrong = tmp.path().join("other");
        std::fs::create_dir(&wrong).unwrap();
        let jwks = write_jwks(&wrong, &other);
        let output = inspect()
            .args([&token, "--jwks", &jwks, "-o", "json"])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1), "{output:?}");
        // The explanation is still printed, with the failed check in it.
        let v = json_of(&output);
        assert_eq!(v["signature"]["verified"], false);
        assert_eq!(v["kind"], "bound");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(stderr.contains("signature does not verify"), "{stderr}");
        assert!(!stderr.contains(&token), "{stderr}");
    }

    /// A one-thread HTTPS server answering every request with `body`, its certificate signed by a
    /// fresh CA. Returns the port and the CA's PEM.
    fn https_server(body: String) -> (u16, String) {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let ca = projected_token::tls::CertificateAuthority::generate("inspect test CA").unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .unwrap();
        let leaf = params.signed_by(&leaf_key, ca.issuer()).unwrap();
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
            )
            .unwrap();
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(tcp) = stream else { continue };
                let Ok(conn) = rustls::ServerConnection::new(config.clone()) else {
                    continue;
                };
                let mut tls = rustls::StreamOwned::new(conn, tcp);
                // Read the request head; a client that rejects our certificate fails here.
                let mut reader = BufReader::new(&mut tls);
                let mut line = String::new();
                let mut ok = true;
                loop {
                    line.clear();
                    match reader.read_line(&mut line) {
                        Ok(0) | Err(_) => {
                            ok = false;
                            break;
                        }
                        Ok(_) if line == "\r\n" => break,
                        Ok(_) => {}
                    }
                }
                if !ok {
                    continue;
                }
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/jwk-set+json\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(response.as_bytes());
                tls.conn.send_close_notify();
                let _ = tls.flush();
            }
        });
        (port, ca.cert_pem().to_owned())
    }

    #[test]
    fn jwks_over_https_with_a_private_ca() {
        let tmp = tempfile::tempdir().unwrap();
        let key = SigningKey::generate(KeyAlgorithm::Es256).unwrap();
        let token = signed(&key);
        let (port, ca_pem) = https_server(jwks_document(&[&key]).to_string());
        let ca = tmp.path().join("ca.crt");
        std::fs::write(&ca, ca_pem).unwrap();
        let url = format!("https://127.0.0.1:{port}/openid/v1/jwks");

        let output = inspect()
            .args([&token, "--jwks", &url, "--jwks-ca", ca.to_str().unwrap()])
            .args(["-o", "json"])
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        assert_eq!(json_of(&output)["signature"]["verified"], true);

        // Another CA is not trusted: the fetch fails (exit 1) before anything is printed.
        let other_ca = projected_token::tls::CertificateAuthority::generate("other").unwrap();
        let other = tmp.path().join("other.crt");
        std::fs::write(&other, other_ca.cert_pem()).unwrap();
        let output = inspect()
            .args([&token, "--jwks", &url, "--jwks-ca", other.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1), "{output:?}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(stderr.contains("cannot fetch JWKS"), "{stderr}");
    }

    #[test]
    fn a_ca_file_without_a_certificate_is_a_usage_error() {
        let tmp = tempfile::tempdir().unwrap();
        let ca = tmp.path().join("ca.crt");
        std::fs::write(&ca, "not a certificate").unwrap();
        let stderr = usage_error(&[
            &jwt(&bound_claims()),
            "--jwks",
            "https://127.0.0.1:1/jwks",
            "--jwks-ca",
            ca.to_str().unwrap(),
        ]);
        assert!(stderr.contains("no PEM CERTIFICATE"), "{stderr}");
    }
}
