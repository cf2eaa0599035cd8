//! What every handler shares: the server's state ([`ApiState`]), one request as the audit log and
//! the ledger see it ([`RequestContext`], with its bearer token read as upstream reads it),
//! authentication with the accounting of each token use, authorization decisions for the audit
//! log, and responses (`respond` writes the audit event).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use axum::extract::ConnectInfo;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum_server::tls::TlsInfo;
use jiff::Timestamp;
use k8s_openapi::api::authentication::v1::UserInfo;
use serde::Serialize;

use super::audit::{self, AuditEvent, AuditLog};
use super::authn::{certificate_user, Authenticator, AuthnFailure, Caller, TokenFacts};
use super::classify::TokenUse;
use super::ledger::{Ledger, Rotation};
use super::metrics::Metrics;
use super::outage::OutageSwitch;
use super::projector::Projector;
use super::protobuf::BodyError;
use super::status::ApiError;
use super::usage::Rejection;
use crate::clock::Clock;
use crate::issuer::keyring::KeyRing;
use crate::issuer::objects::ObjectStore;

/// Everything the handlers share.
pub struct ApiState {
    /// The issuer with the current signing key, and the published (accepted) keys.
    pub keys: Arc<KeyRing>,
    pub authenticator: Authenticator,
    pub objects: Arc<Mutex<ObjectStore>>,
    pub allow_any_token_request: bool,
    pub clock: Arc<dyn Clock>,
    /// `jwks_uri` of the OpenID configuration.
    pub jwks_uri: String,
    pub ledger: Mutex<Ledger>,
    pub metrics: Metrics,
    pub audit: Option<AuditLog>,
    /// A simulated outage, if one is on (`ctl outage`).
    pub outage: OutageSwitch,
    /// `emulate`'s projector, attached once it exists; `serve` has none.
    pub projector: OnceLock<Arc<dyn Projector>>,
}

impl ApiState {
    /// Tells the ledger that the projector replaced a token: later uses of the old one are
    /// superseded.
    pub fn record_rotation(&self, rotation: Rotation) {
        self.metrics.observe_rotation(&rotation);
        self.ledger
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .record_rotation(rotation);
    }
}

/// One request as the audit log and the ledger see it.
pub struct RequestContext {
    pub(super) received_at: Timestamp,
    /// The request's bearer token, if any (never logged).
    bearer: Option<String>,
    /// The connection's TLS facts: a client certificate in it was verified in the handshake.
    tls: Option<Arc<TlsInfo>>,
    pub(super) content_type: Option<String>,
    pub(super) method: Method,
    uri: String,
    user_agent: Option<String>,
    source_ip: Option<String>,
    caller: Option<Caller>,
    pub(super) object_ref: Option<audit::ObjectReference>,
    pub(super) annotations: BTreeMap<String, String>,
    /// `Warning` header texts for the response.
    warnings: Vec<String>,
}

impl axum::extract::FromRequestParts<Arc<ApiState>> for RequestContext {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &Arc<ApiState>,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0);
        let mut ctx = Self::new(state, &parts.method, &parts.uri, &parts.headers, peer);
        // axum-server's rustls acceptor puts this on every request of the connection.
        ctx.tls = parts.extensions.get::<Arc<TlsInfo>>().cloned();
        Ok(ctx)
    }
}

impl RequestContext {
    fn new(
        state: &ApiState,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        peer: Option<SocketAddr>,
    ) -> Self {
        let (bearer, warnings) = match bearer_token(headers) {
            Bearer::Token(token) => (Some(token.to_owned()), Vec::new()),
            Bearer::Absent => (None, Vec::new()),
            Bearer::ExtraSpace => (None, vec![EXTRA_SPACE_WARNING.to_owned()]),
        };
        Self {
            received_at: state.clock.now(),
            method: method.clone(),
            uri: uri
                .path_and_query()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_default(),
            bearer,
            tls: None,
            content_type: headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            user_agent: headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            source_ip: peer.map(|p| p.ip().to_string()),
            caller: None,
            object_ref: None,
            annotations: BTreeMap::new(),
            warnings,
        }
    }

    /// The request path, without the query.
    pub(super) fn path(&self) -> &str {
        self.uri.split('?').next().unwrap_or_default()
    }

    fn verb(&self) -> &'static str {
        match (&self.method, self.object_ref.is_some()) {
            (&Method::POST, true) => "create",
            (&Method::DELETE, true) => "delete",
            (&Method::GET, true) => "get",
            // Non-resource URLs: the lower-case HTTP method, as upstream.
            (&Method::POST, false) => "post",
            (&Method::PUT, false) => "put",
            (&Method::DELETE, false) => "delete",
            _ => "get",
        }
    }
}

/// Finishes a request: writes its audit event and builds the response.
pub(super) fn respond(
    state: &ApiState,
    mut ctx: RequestContext,
    result: Result<Response, ApiError>,
) -> Response {
    let mut response = match result {
        Ok(response) => response,
        Err(err) => error_response(&err),
    };
    add_warnings(&mut response, &ctx.warnings);
    if let Some(log) = &state.audit {
        let mut event = AuditEvent::new(ctx.verb(), std::mem::take(&mut ctx.uri), ctx.received_at);
        if let Some(caller) = &ctx.caller {
            event.user = audit_user(&caller.user_info());
        } else {
            event.user.username = "system:anonymous".into();
            event.user.groups = vec!["system:unauthenticated".into()];
        }
        event.source_ips = ctx.source_ip.take().into_iter().collect();
        event.user_agent = ctx.user_agent.take();
        event.object_ref = ctx.object_ref.take();
        event.annotations.append(&mut ctx.annotations);
        event.complete(response.status().as_u16(), state.clock.now());
        log.record(&event);
    }
    response
}

fn audit_user(user: &UserInfo) -> audit::UserInfo {
    audit::UserInfo {
        username: user.username.clone().unwrap_or_default(),
        uid: user.uid.clone().unwrap_or_default(),
        groups: user.groups.clone().unwrap_or_default(),
        extra: user.extra.clone().unwrap_or_default(),
    }
}

pub(super) fn error_response(err: &ApiError) -> Response {
    let code = StatusCode::from_u16(err.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(code, &err.to_status())
}

pub(super) fn json_response<T: Serialize>(code: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (code, [(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// `Warning: 299 - "<text>"` headers, as upstream's warning recorder writes them.
pub(super) fn add_warnings(response: &mut Response, warnings: &[String]) {
    for warning in warnings {
        if let Ok(value) =
            HeaderValue::from_str(&format!("299 - {}", super::status::go_quote(warning)))
        {
            response.headers_mut().append(header::WARNING, value);
        }
    }
}

/// Upstream's warning for `Authorization: Bearer  <token>` (`invalidTokenWithSpaceWarning`).
const EXTRA_SPACE_WARNING: &str =
    "the provided Authorization header contains extra space before the bearer token, and is ignored";

/// What a request's `Authorization` header holds.
#[derive(Debug, PartialEq, Eq)]
enum Bearer<'a> {
    Token(&'a str),
    /// No header, another scheme, or no token.
    Absent,
    /// `Bearer` followed by two spaces: ignored, with a warning.
    ExtraSpace,
}

/// The bearer token of a request as upstream's `bearertoken` authenticator reads it: the value
/// trimmed, split at single spaces into at most three parts, the second part the token (so a
/// token is never trimmed itself, and whatever follows a space after it is ignored).
fn bearer_token(headers: &HeaderMap) -> Bearer<'_> {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Bearer::Absent;
    };
    let parts: Vec<&str> = value.trim().splitn(3, ' ').collect();
    match parts.as_slice() {
        [scheme, token, ..] if scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() => {
            Bearer::Token(token)
        }
        [scheme, _, _] if scheme.eq_ignore_ascii_case("bearer") => Bearer::ExtraSpace,
        _ => Bearer::Absent,
    }
}

impl ApiState {
    /// Authenticates a token for `audiences` and accounts for the use (ledger, metrics, audit
    /// annotations), whether it is accepted or rejected; a rejected token that is not ours is only
    /// counted.
    pub(super) fn authenticate_and_record(
        &self,
        token: &str,
        audiences: &[String],
        ctx: &mut RequestContext,
    ) -> Result<Caller, AuthnFailure> {
        let result =
            self.authenticator
                .authenticate(token, audiences, &self.objects, ctx.received_at);
        let facts = match &result {
            Ok(Caller::ServiceAccount(sa)) => Some((&sa.token, None)),
            Ok(Caller::Admin | Caller::User(_)) => None,
            Err(failure) => failure.facts.as_deref().map(|f| (f, failure.rejection)),
        };
        match facts {
            Some((facts, rejection)) => self.record_use(facts, rejection, ctx),
            None if result.is_err() => self
                .ledger
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .record_unattributed_rejection(),
            None => {}
        }
        if let Err(failure) = &result {
            tracing::info!(reason = %failure.reason, user_agent = ctx.user_agent.as_deref().unwrap_or("-"), "Unable to authenticate the request");
        }
        result
    }

    fn record_use(
        &self,
        facts: &TokenFacts,
        rejected: Option<Rejection>,
        ctx: &mut RequestContext,
    ) {
        let token_use = TokenUse {
            at: ctx.received_at,
            subject: facts.subject.clone(),
            namespace: facts.namespace.clone(),
            service_account: facts.service_account.clone(),
            pod: facts.pod.as_ref().map(|p| p.name.clone()),
            pod_uid: facts.pod.as_ref().map(|p| p.uid.clone()),
            jti: facts.jti.clone(),
            warn_after: facts
                .warn_after
                .filter(|w| *w != 0)
                .and_then(|w| Timestamp::from_second(w).ok()),
            issued_at: facts.issued_at.and_then(|i| Timestamp::from_second(i).ok()),
            legacy: facts.legacy,
            rejected,
            user_agent: ctx.user_agent.clone(),
        };
        let outcome = self
            .ledger
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .record_use(token_use.clone());
        self.metrics.observe(&token_use, &outcome);
        if self.audit.is_some() {
            let mut scratch = AuditEvent::new("", "", ctx.received_at);
            scratch.annotate_token_use(&token_use, &outcome);
            ctx.annotations.append(&mut scratch.annotations);
        }
    }

    /// The caller of a request that must be authenticated (401 otherwise).
    pub(super) fn caller(&self, ctx: &mut RequestContext) -> Result<Caller, ApiError> {
        self.optional_caller(ctx)?
            .ok_or_else(ApiError::unauthorized)
    }

    /// The caller, if the request carries a credential: its bearer token, else its client
    /// certificate (either may authenticate, as upstream's union of authenticators; the token is
    /// tried first). A token that fails with no certificate user to fall back on is 401.
    pub(super) fn optional_caller(
        &self,
        ctx: &mut RequestContext,
    ) -> Result<Option<Caller>, ApiError> {
        let mut token_rejected = false;
        if let Some(token) = ctx.bearer.take() {
            match self.authenticate_and_record(&token, &[], ctx) {
                Ok(caller) => {
                    ctx.caller = Some(caller.clone());
                    return Ok(Some(caller));
                }
                Err(_) => token_rejected = true,
            }
        }
        let caller = ctx
            .tls
            .as_ref()
            .and_then(|tls| tls.peer_certificates.first())
            .and_then(|der| certificate_user(der))
            .map(Caller::User);
        if caller.is_none() && token_rejected {
            return Err(ApiError::unauthorized());
        }
        ctx.caller = caller.clone();
        Ok(caller)
    }

    pub(super) fn allow(ctx: &mut RequestContext, reason: &str) {
        ctx.annotations.insert(
            audit::annotation::AUTHORIZATION_DECISION.into(),
            "allow".into(),
        );
        ctx.annotations.insert(
            audit::annotation::AUTHORIZATION_REASON.into(),
            reason.into(),
        );
    }

    pub(super) fn forbid(ctx: &mut RequestContext) {
        ctx.annotations.insert(
            audit::annotation::AUTHORIZATION_DECISION.into(),
            "forbid".into(),
        );
    }
}

/// The audit log's authorization reason for an admin caller.
pub(super) fn admin_reason(caller: &Caller) -> &'static str {
    match caller {
        Caller::Admin => "admin token",
        _ => "group system:masters",
    }
}

/// A body that cannot be decoded, as upstream answers it.
pub(super) fn body_error(err: BodyError) -> ApiError {
    match err {
        BodyError::UnsupportedMediaType(media_type) => {
            ApiError::unsupported_media_type(&media_type)
        }
        BodyError::Malformed(message) => ApiError::bad_request(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_authorization(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(value).expect("header value"),
        );
        headers
    }

    #[test]
    fn bearer_tokens_are_read_as_upstream_reads_them() {
        let read = |value: &str| format!("{:?}", bearer_token(&with_authorization(value)));
        assert_eq!(read("Bearer abc"), "Token(\"abc\")");
        assert_eq!(read("bearer abc"), "Token(\"abc\")");
        // Whatever follows the token after a space is not part of it.
        assert_eq!(read("Bearer abc def"), "Token(\"abc\")");
        // A tab is not a separator: it stays in the token, which then fails to authenticate.
        assert_eq!(read("Bearer \tabc"), "Token(\"\\tabc\")");
        assert_eq!(read("Bearer  abc"), "ExtraSpace");
        assert_eq!(read("Bearer"), "Absent");
        assert_eq!(read("Basic abc"), "Absent");
        assert_eq!(format!("{:?}", bearer_token(&HeaderMap::new())), "Absent");
    }
}
