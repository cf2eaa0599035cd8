//! Discovery documents: `/version`, `/api`, `/apis` and the resource lists of the two groups the
//! emulator serves, enough for kubectl and client libraries to find TokenRequest, TokenReview and
//! SelfSubjectReview; and the OpenID issuer discovery document. The documents are pure; their
//! handlers (and the JWKS one) come last.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::request::{json_response, respond, ApiState, RequestContext};
use super::status::ApiError;

/// The Kubernetes version the emulator answers as (the newest the k8s-openapi types cover).
pub const EMULATED_MAJOR: &str = "1";
pub const EMULATED_MINOR: &str = "37";

/// The oldest minor version the emulated server is compatible with: one before, as a 1.33+
/// kube-apiserver reports by default (`--emulated-version` unset).
const MIN_COMPATIBILITY_MINOR: &str = "36";
/// `buildDate` of `/version`: the date of this release of projected-token.
const RELEASE_DATE: &str = "2026-12-04T00:00:00Z";

/// `/version`, with the emulation and compatibility fields of a 1.33+ server, in its order.
pub fn version_info() -> Value {
    json!({
        "major": EMULATED_MAJOR,
        "minor": EMULATED_MINOR,
        "emulationMajor": EMULATED_MAJOR,
        "emulationMinor": EMULATED_MINOR,
        "minCompatibilityMajor": EMULATED_MAJOR,
        "minCompatibilityMinor": MIN_COMPATIBILITY_MINOR,
        "gitVersion": format!("v{EMULATED_MAJOR}.{EMULATED_MINOR}.0-projected-token.{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": RELEASE_DATE,
        "goVersion": "n/a (projected-token, Rust)",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, go_arch()),
    })
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The discovery document served at `path`, if it is one.
pub fn document(path: &str) -> Option<Value> {
    let doc = match path.trim_end_matches('/') {
        "/api" => json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [],
        }),
        "/api/v1" => json!({
            "kind": "APIResourceList",
            "groupVersion": "v1",
            "resources": [
                {"name": "pods", "singularName": "pod", "namespaced": true,
                 "kind": "Pod", "verbs": ["delete", "get", "list"], "shortNames": ["po"],
                 "categories": ["all"]},
                {"name": "serviceaccounts", "singularName": "serviceaccount", "namespaced": true,
                 "kind": "ServiceAccount", "verbs": ["get", "list"], "shortNames": ["sa"]},
                {"name": "serviceaccounts/token", "singularName": "", "namespaced": true,
                 "group": "authentication.k8s.io", "version": "v1", "kind": "TokenRequest",
                 "verbs": ["create"]},
            ],
        }),
        "/apis" => json!({
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": [authentication_group()],
        }),
        "/apis/authentication.k8s.io" => {
            let mut group = authentication_group();
            group["kind"] = json!("APIGroup");
            group["apiVersion"] = json!("v1");
            group
        }
        "/apis/authentication.k8s.io/v1" => json!({
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": "authentication.k8s.io/v1",
            "resources": [
                {"name": "selfsubjectreviews", "singularName": "selfsubjectreview", "namespaced": false,
                 "kind": "SelfSubjectReview", "verbs": ["create"]},
                {"name": "tokenreviews", "singularName": "tokenreview", "namespaced": false,
                 "kind": "TokenReview", "verbs": ["create"]},
            ],
        }),
        _ => return None,
    };
    Some(doc)
}

fn authentication_group() -> Value {
    json!({
        "name": "authentication.k8s.io",
        "versions": [{"groupVersion": "authentication.k8s.io/v1", "version": "v1"}],
        "preferredVersion": {"groupVersion": "authentication.k8s.io/v1", "version": "v1"},
    })
}

/// `/.well-known/openid-configuration`, compact and in upstream's field order.
pub fn openid_configuration(issuer: &str, jwks_uri: &str, algorithms: &[&str]) -> String {
    let mut algorithms: Vec<&str> = algorithms.to_vec();
    algorithms.sort_unstable();
    algorithms.dedup();
    #[derive(serde::Serialize)]
    struct Document<'a> {
        issuer: &'a str,
        jwks_uri: &'a str,
        response_types_supported: [&'a str; 1],
        subject_types_supported: [&'a str; 1],
        id_token_signing_alg_values_supported: Vec<&'a str>,
    }
    serde_json::to_string(&Document {
        issuer,
        jwks_uri,
        response_types_supported: ["id_token"],
        subject_types_supported: ["public"],
        id_token_signing_alg_values_supported: algorithms,
    })
    .unwrap_or_default()
}

/// Issuer discovery is public, as clusters commonly make it for external OIDC consumers.
pub async fn get_openid_configuration(State(state): State<Arc<ApiState>>) -> Response {
    let published = state.keys.published(state.clock.now());
    let algorithms: Vec<&str> = published.algorithms.iter().map(String::as_str).collect();
    let body = openid_configuration(
        &state.keys.issuer().config.issuer,
        &state.jwks_uri,
        &algorithms,
    );
    cacheable("application/json", body)
}

/// The keys published now: after a signing key rotation, the old one only until its grace ends.
pub async fn get_jwks(State(state): State<Arc<ApiState>>) -> Response {
    let published = state.keys.published(state.clock.now());
    cacheable("application/jwk-set+json", published.jwks_json.clone())
}

fn cacheable(content_type: &'static str, body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

/// `/version` is public, as upstream's `system:public-info-viewer`.
pub async fn get_version() -> Response {
    json_response(StatusCode::OK, &version_info())
}

pub async fn get_document(
    State(state): State<Arc<ApiState>>,
    uri: Uri,
    mut ctx: RequestContext,
) -> Response {
    let result = state.caller(&mut ctx).and_then(|_| {
        document(uri.path())
            .map(|doc| json_response(StatusCode::OK, &doc))
            .ok_or_else(ApiError::no_route)
    });
    respond(&state, ctx, result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openid_configuration_has_upstreams_fields_in_order() {
        let doc = openid_configuration(
            "https://issuer",
            "https://127.0.0.1:6443/openid/v1/jwks",
            &["RS256", "ES256", "RS256"],
        );
        assert_eq!(
            doc,
            r#"{"issuer":"https://issuer","jwks_uri":"https://127.0.0.1:6443/openid/v1/jwks","response_types_supported":["id_token"],"subject_types_supported":["public"],"id_token_signing_alg_values_supported":["ES256","RS256"]}"#
        );
    }

    #[test]
    fn version_has_the_emulation_fields_of_a_1_33_server() {
        let info: k8s_openapi::apimachinery::pkg::version::Info =
            serde_json::from_value(version_info()).expect("version.Info");
        assert_eq!((info.major.as_str(), info.minor.as_str()), ("1", "37"));
        let doc = version_info();
        for (field, value) in [
            ("emulationMajor", "1"),
            ("emulationMinor", "37"),
            ("minCompatibilityMajor", "1"),
            ("minCompatibilityMinor", "36"),
        ] {
            assert_eq!(doc[field], value, "{field}");
        }
        let built: jiff::Timestamp = info.build_date.parse().expect("an RFC 3339 buildDate");
        assert!(built > jiff::Timestamp::UNIX_EPOCH);
    }

    #[test]
    fn discovery_lists_the_token_subresource_and_review_resources() {
        let core = document("/api/v1").unwrap_or_default();
        assert!(core["resources"]
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r["name"] == "serviceaccounts/token")));
        let group = document("/apis/authentication.k8s.io/v1/").unwrap_or_default();
        assert_eq!(group["resources"].as_array().map(Vec::len), Some(2));
        assert!(document("/apis/apps/v1").is_none());
    }
}
