//! The kube-apiserver TokenRequest client: asks a real API server for tokens, as the kubelet's
//! token manager does, and checks each answer before anything is written.
//!
//! The client leaves lifetime limits to the server (a test server may hand out 10 s tokens), but
//! refuses answers that cannot be right: a token that is not a JWT, already expired, or whose
//! JWT `exp` and `status.expirationTimestamp` disagree by more than the JWT leeway.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::authentication::v1::{
    BoundObjectReference, TokenRequest as ApiTokenRequest, TokenRequestSpec,
};

use super::config::ConnectionSpec;
use super::{SourceError, TokenGrant, TokenRequest, TokenSource};
use crate::clock::Clock;

/// How far the JWT `exp` may fall short of `status.expirationTimestamp` (the issuer's clock
/// reads and the JWT leeway), before we call the answer inconsistent.
const EXPIRY_SLACK: SignedDuration = SignedDuration::from_secs(60);

/// TokenRequests against a kube-apiserver.
pub struct KubeTokenSource {
    connection: ConnectionSpec,
    client: reqwest::Client,
    clock: std::sync::Arc<dyn Clock>,
    /// Bounds the requests in flight. When a hundred tokens fall due together, unbounded
    /// requests would each open a TLS connection before the first one negotiated HTTP/2 and
    /// could be shared; a few at a time reuse it, and spare the API server a burst
    /// (client-go's default rate limit is 5 per second with a burst of 10).
    in_flight: std::sync::Arc<tokio::sync::Semaphore>,
    /// What the server is, asked once after the first 403 (for the hint).
    server_kind: tokio::sync::OnceCell<ServerKind>,
}

/// Which kind of API server answers: the fix for a 403 depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    /// A kube-apiserver (or anything not known to be the emulator): RBAC decides.
    Kubernetes,
    /// projected-token's emulator (`serve`, `emulate`): no RBAC; the admin credential or
    /// `--allow-any-token-request` decides.
    Emulator,
}

impl ServerKind {
    /// From the `gitVersion` of `GET /version` (the emulator's ends in `-projected-token.<v>`).
    pub fn from_version(body: &[u8]) -> Self {
        let version: Option<String> = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("gitVersion")?.as_str().map(str::to_owned));
        match version {
            Some(v) if v.contains("-projected-token.") => Self::Emulator,
            _ => Self::Kubernetes,
        }
    }
}

/// Token requests in flight at once, per source.
pub const MAX_REQUESTS_IN_FLIGHT: usize = 8;

impl KubeTokenSource {
    pub fn new(
        connection: ConnectionSpec,
        client: reqwest::Client,
        clock: std::sync::Arc<dyn Clock>,
    ) -> Self {
        Self {
            connection,
            client,
            clock,
            in_flight: std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_REQUESTS_IN_FLIGHT)),
            server_kind: tokio::sync::OnceCell::new(),
        }
    }

    pub fn connection(&self) -> &ConnectionSpec {
        &self.connection
    }

    /// What the server is, from its public `/version` (asked once; a failure means Kubernetes).
    async fn server_kind(&self) -> ServerKind {
        *self
            .server_kind
            .get_or_init(|| async {
                let url = format!("{}/version", self.connection.server);
                match self.client.get(&url).send().await {
                    Ok(response) => read_bounded(response, 64 << 10)
                        .await
                        .map(|body| ServerKind::from_version(&body))
                        .unwrap_or(ServerKind::Kubernetes),
                    Err(_) => ServerKind::Kubernetes,
                }
            })
            .await
    }

    /// `POST URL: what happened`, the URL said once (reqwest's own text repeats it), with the
    /// meaning of the known configuration mistakes first; those are refusals (`--once` does not
    /// wait for them), anything else is unavailability.
    fn send_error(&self, url: &str, error: reqwest::Error) -> SourceError {
        let error = error.without_url();
        let chain = crate::errors::error_chain(&error);
        let ca_origin = self.connection.ca_origin();
        let context = super::send_errors::SendContext {
            server: &self.connection.server,
            ca_origin: ca_origin.as_deref(),
        };
        match super::send_errors::explain(&error, context) {
            Some(meaning) => SourceError::Refused(format!("POST {url}: {meaning} ({chain})")),
            None => SourceError::Unavailable(format!("POST {url}: {chain}")),
        }
    }
}

/// The TokenRequest body the kubelet sends for a projected token.
pub fn request_body(request: &TokenRequest) -> ApiTokenRequest {
    ApiTokenRequest {
        spec: Some(TokenRequestSpec {
            // The kubelet sends no audiences (nil) for an empty projection audience.
            audiences: Some(request.audiences.clone()).filter(|a| !a.is_empty()),
            expiration_seconds: Some(request.expiration_seconds),
            bound_object_ref: request.bound_pod.as_ref().map(|pod| BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(pod.name.clone()),
                uid: Some(pod.uid.clone()).filter(|u| !u.is_empty()),
            }),
            ..TokenRequestSpec::default()
        }),
        ..ApiTokenRequest::default()
    }
}

/// `Retry-After` in seconds or as an HTTP date, relative to `now`.
pub fn parse_retry_after(value: &str, now: Timestamp) -> Option<SignedDuration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u32>() {
        return Some(SignedDuration::from_secs(i64::from(seconds)));
    }
    // RFC 9110's IMF-fixdate, e.g. "Wed, 21 Oct 2015 07:28:00 GMT".
    let at = jiff::fmt::rfc2822::parse(value).ok()?.timestamp();
    Some(at.duration_since(now).max(SignedDuration::ZERO))
}

/// Turns an API server answer into a grant, or an error that says what to do (`server`: what
/// answered, which decides the fix for a 403).
pub fn grant_from_response(
    status: u16,
    retry_after: Option<&str>,
    body: &[u8],
    request: &TokenRequest,
    identity: &str,
    server: ServerKind,
    now: Timestamp,
) -> Result<TokenGrant, SourceError> {
    let message = || status_message(body).unwrap_or_else(|| format!("HTTP {status}"));
    let account = format!("{}/{}", request.namespace, request.service_account);
    match status {
        200 | 201 => grant_from_body(body, request, now),
        401 => Err(SourceError::Refused(format!(
            "401 Unauthorized: the API server rejected our own credentials ({identity}); check that they are valid and not expired"
        ))),
        403 if server == ServerKind::Emulator => Err(SourceError::Refused(format!(
            "403 Forbidden: {}; the server is the projected-token emulator, which has no RBAC: connect with its admin credential (the token in its --admin-token-file, or its admin client certificate) instead of {identity}, or start it with --allow-any-token-request",
            message()
        ))),
        403 => Err(SourceError::Refused(format!(
            "403 Forbidden: {}; grant `create` on `serviceaccounts/token` for {account}, e.g. a Role with rules [{{apiGroups: [\"\"], resources: [\"serviceaccounts/token\"], verbs: [\"create\"], resourceNames: [\"{}\"]}}] in namespace {} bound (RoleBinding) to the identity we use ({identity})",
            message(),
            request.service_account,
            request.namespace
        ))),
        404 => Err(SourceError::Refused(format!(
            "404 Not Found: {}; create service account {account} (and its namespace), or fix --namespace/--service-account",
            message()
        ))),
        429 | 503 => {
            let text = format!("{status}: {}", message());
            match retry_after.and_then(|v| parse_retry_after(v, now)) {
                Some(retry_after) => Err(SourceError::Throttled {
                    message: text,
                    retry_after,
                }),
                None => Err(SourceError::Unavailable(text)),
            }
        }
        400 | 409 | 422 => Err(SourceError::Rejected(format!("{status}: {}", message()))),
        _ => Err(SourceError::Unavailable(format!("{status}: {}", message()))),
    }
}

/// The `message` of a `metav1.Status` body, if it is one.
fn status_message(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    value.get("message")?.as_str().map(str::to_owned)
}

fn grant_from_body(
    body: &[u8],
    request: &TokenRequest,
    now: Timestamp,
) -> Result<TokenGrant, SourceError> {
    let unusable = |why: String| {
        SourceError::Unavailable(format!(
            "the API server answered an unusable token, which was not written: {why}"
        ))
    };
    let answer: ApiTokenRequest = serde_json::from_slice(body)
        .map_err(|e| unusable(format!("the answer is not a TokenRequest: {e}")))?;
    let status = answer
        .status
        .ok_or_else(|| unusable("the answer has no status".into()))?;
    let token = status
        .token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| unusable("status.token is empty".into()))?;
    let expiration = status
        .expiration_timestamp
        .map(|t| t.0)
        .ok_or_else(|| unusable("status.expirationTimestamp is missing".into()))?;
    let seconds = answer
        .spec
        .and_then(|s| s.expiration_seconds)
        .unwrap_or(request.expiration_seconds);
    let grant =
        TokenGrant::from_status(token, expiration, seconds).map_err(|e| unusable(e.to_string()))?;
    check_grant(&grant, now).map_err(unusable)?;
    Ok(grant)
}

/// The sanity checks every answered token must pass before it may replace the one on disk.
pub fn check_grant(grant: &TokenGrant, now: Timestamp) -> Result<(), String> {
    if grant.expiration_timestamp <= now {
        return Err(format!(
            "status.expirationTimestamp {} is already past",
            grant.expiration_timestamp
        ));
    }
    let Some(exp) = grant.jwt_expiry else {
        return Err("the JWT has no exp claim".into());
    };
    if exp <= now {
        return Err(format!("the JWT expired at {exp}"));
    }
    // An extended token's exp lies far beyond the status; one that ends well before it is wrong.
    if exp < grant.expiration_timestamp - EXPIRY_SLACK {
        return Err(format!(
            "the JWT exp {exp} ends well before status.expirationTimestamp {}",
            grant.expiration_timestamp
        ));
    }
    if let Some(iat) = grant.jwt_issued_at {
        if iat > now + EXPIRY_SLACK {
            return Err(format!("the JWT is issued in the future ({iat})"));
        }
    }
    Ok(())
}

impl TokenSource for KubeTokenSource {
    async fn request_token(&self, request: &TokenRequest) -> Result<TokenGrant, SourceError> {
        let url = format!(
            "{}/api/v1/namespaces/{}/serviceaccounts/{}/token",
            self.connection.server, request.namespace, request.service_account
        );
        let body = serde_json::to_vec(&request_body(request))
            .map_err(|e| SourceError::Rejected(e.to_string()))?;
        let mut http = self
            .client
            .post(&url)
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .body(body);
        let _permit =
            self.in_flight.acquire().await.map_err(|_| {
                SourceError::Unavailable("the token source is shutting down".into())
            })?;
        if let Some(token) = self
            .connection
            .credential
            .bearer_token(self.clock.now())
            .await
            .map_err(|e| SourceError::Refused(e.to_string()))?
        {
            http = http.bearer_auth(token);
        }
        let response = http.send().await.map_err(|e| self.send_error(&url, e))?;
        let status = response.status().as_u16();
        if status == 401 {
            self.connection.credential.refused().await;
        }
        let server = match status {
            403 => self.server_kind().await,
            _ => ServerKind::Kubernetes,
        };
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        // A token answer is a few KiB; a bounded read keeps a broken server from filling memory.
        let body = read_bounded(response, 1 << 20)
            .await
            .map_err(|e| SourceError::Unavailable(format!("reading the answer of {url}: {e}")))?;
        grant_from_response(
            status,
            retry_after.as_deref(),
            &body,
            request,
            &self.connection.identity,
            server,
            self.clock.now(),
        )
    }
}

async fn read_bounded(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > limit {
            return Err(format!("the answer is larger than {limit} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::issuer::{
        BoundKind, BoundObject, Issuer, IssuerConfig, KeyAlgorithm, ServiceAccountRef, SigningKey,
        TokenRequestSpec as IssuerSpec, DEFAULT_ISSUER,
    };
    use crate::source::BoundPod;

    fn now() -> Timestamp {
        Timestamp::from_second(1_800_000_000).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    fn request() -> TokenRequest {
        TokenRequest {
            namespace: "ns".into(),
            service_account: "app".into(),
            audiences: vec!["vault".into()],
            expiration_seconds: 600,
            bound_pod: Some(BoundPod {
                name: "web".into(),
                uid: "pod-uid".into(),
                node_name: None,
            }),
        }
    }

    /// A TokenRequest answer minted at `issued` with `seconds` of life; `status_shift` moves the
    /// status expiration away from the JWT's.
    fn answer(issued: Timestamp, seconds: i64, status_shift: i64) -> Vec<u8> {
        let key = Arc::new(SigningKey::generate(KeyAlgorithm::Es256).expect("key"));
        let issuer = Issuer::new(IssuerConfig::new(DEFAULT_ISSUER), key);
        let spec = IssuerSpec {
            audiences: vec!["vault".into()],
            expiration_seconds: Some(seconds.max(600)),
            bound_object: Some(BoundObject {
                kind: BoundKind::Pod,
                name: "web".into(),
                uid: "pod-uid".into(),
                node: None,
            }),
        };
        let validated = issuer
            .config
            .validate(&spec)
            .expect("valid")
            .with_lifetime_override(seconds);
        let sa = ServiceAccountRef {
            namespace: "ns".into(),
            name: "app".into(),
            uid: "sa".into(),
        };
        let minted = issuer.mint(&sa, &validated, issued).expect("mint");
        let expiration = minted.expiration_timestamp + SignedDuration::from_secs(status_shift);
        serde_json::to_vec(&serde_json::json!({
            "kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
            "spec": {"audiences": ["vault"], "expirationSeconds": seconds},
            "status": {"token": minted.token, "expirationTimestamp": jiff::fmt::strtime::format("%Y-%m-%dT%H:%M:%SZ", expiration).unwrap_or_default()},
        }))
        .unwrap_or_default()
    }

    fn respond(
        status: u16,
        retry_after: Option<&str>,
        body: &[u8],
    ) -> Result<TokenGrant, SourceError> {
        respond_from(ServerKind::Kubernetes, status, retry_after, body)
    }

    fn respond_from(
        server: ServerKind,
        status: u16,
        retry_after: Option<&str>,
        body: &[u8],
    ) -> Result<TokenGrant, SourceError> {
        grant_from_response(
            status,
            retry_after,
            body,
            &request(),
            "test identity",
            server,
            now(),
        )
    }

    #[test]
    fn a_good_answer_is_a_grant_even_below_600_seconds() {
        let grant = respond(201, None, &answer(now(), 10, 0)).expect("grant");
        assert_eq!(grant.expiration_seconds, 10);
        assert_eq!(
            grant.expiration_timestamp,
            now() + SignedDuration::from_secs(10)
        );
    }

    #[test]
    fn unusable_answers_are_refused_and_say_why() {
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("not JSON", b"<html>".to_vec(), "not a TokenRequest"),
            (
                "no status",
                br#"{"kind":"TokenRequest","apiVersion":"authentication.k8s.io/v1"}"#.to_vec(),
                "no status",
            ),
            (
                "not a JWT",
                br#"{"status":{"token":"abc","expirationTimestamp":"2030-01-01T00:00:00Z"}}"#
                    .to_vec(),
                "not a JWT",
            ),
            (
                "already expired",
                answer(now() - SignedDuration::from_secs(7200), 3600, 0),
                "already past",
            ),
            (
                "status far beyond exp",
                answer(now(), 3600, 7200),
                "ends well before",
            ),
            (
                "issued in the future",
                answer(now() + SignedDuration::from_secs(600), 3600, 0),
                "issued in the future",
            ),
        ];
        for (what, body, needle) in cases {
            let err = respond(201, None, &body)
                .err()
                .unwrap_or_else(|| panic!("{what}: accepted"));
            assert!(matches!(err, SourceError::Unavailable(_)), "{what}: {err}");
            assert!(err.to_string().contains(needle), "{what}: {err}");
            assert!(err.to_string().contains("not written"), "{what}: {err}");
        }
    }

    #[test]
    fn errors_say_what_to_do() {
        let status = br#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"serviceaccounts \"app\" is forbidden: ...","reason":"Forbidden","code":403}"#;
        let forbidden = respond(403, None, status)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            forbidden.contains("serviceaccounts/token") && forbidden.contains("RoleBinding"),
            "{forbidden}"
        );
        let emulator = respond_from(ServerKind::Emulator, 403, None, status)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        for needle in [
            "--admin-token-file",
            "--allow-any-token-request",
            "test identity",
        ] {
            assert!(emulator.contains(needle), "{needle}: {emulator}");
        }
        assert!(!emulator.contains("RoleBinding"), "{emulator}");
        for refused in [401, 403, 404] {
            let err = respond(refused, None, status).err();
            assert!(
                matches!(err, Some(SourceError::Refused(_))),
                "{refused}: {err:?}"
            );
        }
        let unauthorized = respond(401, None, b"")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(unauthorized.contains("test identity"), "{unauthorized}");
        let missing = respond(404, None, b"")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(missing.contains("ns/app"), "{missing}");
        let invalid = respond(
            422,
            None,
            br#"{"message":"spec.expirationSeconds: Invalid value"}"#,
        )
        .err();
        assert!(
            matches!(invalid, Some(SourceError::Rejected(ref m)) if m.contains("Invalid value"))
        );
        let server = respond(500, None, b"").err();
        assert!(matches!(server, Some(SourceError::Unavailable(_))));
    }

    #[test]
    fn the_emulator_is_known_by_its_version() {
        let emulator =
            br#"{"major":"1","minor":"37","gitVersion":"v1.37.0-projected-token.0.1.0"}"#;
        assert_eq!(ServerKind::from_version(emulator), ServerKind::Emulator);
        let kubernetes = br#"{"major":"1","minor":"33","gitVersion":"v1.33.2"}"#;
        assert_eq!(ServerKind::from_version(kubernetes), ServerKind::Kubernetes);
        assert_eq!(ServerKind::from_version(b"<html>"), ServerKind::Kubernetes);
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let throttled = respond(429, Some("7"), b"").err();
        assert_eq!(
            throttled.and_then(|e| e.retry_after()),
            Some(SignedDuration::from_secs(7))
        );
        let date = jiff::fmt::rfc2822::to_string(
            &(now() + SignedDuration::from_secs(30)).to_zoned(jiff::tz::TimeZone::UTC),
        )
        .unwrap_or_default();
        let throttled = respond(503, Some(&date), b"").err();
        assert_eq!(
            throttled.and_then(|e| e.retry_after()),
            Some(SignedDuration::from_secs(30))
        );
        let plain = respond(503, Some("soon"), b"").err();
        assert!(matches!(plain, Some(SourceError::Unavailable(_))));
    }

    #[test]
    fn request_body_is_the_kubelets() {
        let body = serde_json::to_value(request_body(&request())).unwrap_or_default();
        assert_eq!(body["spec"]["audiences"], serde_json::json!(["vault"]));
        assert_eq!(body["spec"]["expirationSeconds"], 600);
        assert_eq!(
            body["spec"]["boundObjectRef"],
            serde_json::json!({"apiVersion": "v1", "kind": "Pod", "name": "web", "uid": "pod-uid"})
        );
        let unbound = TokenRequest {
            audiences: vec![],
            bound_pod: None,
            ..request()
        };
        let body = serde_json::to_value(request_body(&unbound)).unwrap_or_default();
        assert!(body["spec"].get("audiences").is_none());
        assert!(body["spec"].get("boundObjectRef").is_none());
    }
}
