//! The HTTPS server: routes, authentication and authorization of each request, accounting of
//! every service account token use (ledger, metrics, audit log).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use axum_server::tls::TlsInfo;
use jiff::Timestamp;
use k8s_openapi::api::authentication::v1::{
    SelfSubjectReview, SelfSubjectReviewStatus, TokenReviewStatus, UserInfo,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::Serialize;

use super::audit::{self, AuditEvent, AuditLog};
use super::authn::{certificate_user, lock, Authenticator, AuthnFailure, Caller, TokenFacts};
use super::body::read_body;
use super::controls::{self, Projector};
use super::discovery;
use super::ledger::{Ledger, Rejection, Rotation, TokenUse};
use super::metrics::{self, Metrics};
use super::object_reads;
use super::outage::{OutageMode, OutageSwitch};
use super::protobuf::{self, BodyError};
use super::status::ApiError;
use super::token_request::{prepare_token, sign_token};
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

/// The routes of the emulated API.
pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route(
            "/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
            post(token_request),
        )
        .route(
            "/apis/authentication.k8s.io/v1/tokenreviews",
            post(token_review),
        )
        .route(
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            post(self_subject_review),
        )
        .route(
            "/api/v1/namespaces/{namespace}/pods/{name}",
            get(object_reads::get_pod).delete(delete_pod),
        )
        .route("/api/v1/pods", get(object_reads::list_all_pods))
        .route(
            "/api/v1/namespaces/{namespace}/pods",
            get(object_reads::list_pods),
        )
        .route(
            "/api/v1/serviceaccounts",
            get(object_reads::list_all_service_accounts),
        )
        .route(
            "/api/v1/namespaces/{namespace}/serviceaccounts",
            get(object_reads::list_service_accounts),
        )
        .route(
            "/api/v1/namespaces/{namespace}/serviceaccounts/{name}",
            get(object_reads::get_service_account),
        )
        .route(
            "/.well-known/openid-configuration",
            get(openid_configuration),
        )
        .route("/openid/v1/jwks", get(jwks))
        .route("/version", get(version))
        .route("/version/", get(version))
        .route("/api", get(discovery_document))
        .route("/api/v1", get(discovery_document))
        .route("/apis", get(discovery_document))
        .route("/apis/authentication.k8s.io", get(discovery_document))
        .route("/apis/authentication.k8s.io/v1", get(discovery_document))
        .route("/livez", get(health))
        .route("/readyz", get(health))
        .route("/healthz", get(health))
        .route("/metrics", get(metrics_text))
        .route("/debug/token-usage", get(token_usage))
        .route(controls::STATUS_PATH, get(controls::status))
        .route(controls::ROTATE_TOKENS_PATH, post(controls::rotate_tokens))
        .route(
            controls::ROTATE_KEY_PATH,
            post(controls::rotate_signing_key),
        )
        .route(
            controls::OUTAGE_PATH,
            post(controls::start_outage).delete(controls::end_outage),
        )
        .route(controls::LIFETIME_PATH, put(controls::set_lifetime))
        .fallback(fallback)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            outage_gate,
        ))
        .with_state(state)
}

/// During a `ServiceUnavailable` outage every request but the controls is answered 503 before
/// it is authenticated or counted, as by a load balancer in front of a server that is down.
async fn outage_gate(
    State(state): State<Arc<ApiState>>,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    let now = state.clock.now();
    if let Some(outage) = state
        .outage
        .current(now)
        .filter(|o| o.mode == OutageMode::ServiceUnavailable)
    {
        if !controls::is_control(request.uri().path()) {
            return controls::unavailable_response(&outage, now);
        }
    }
    next.run(request).await
}

/// One request as the audit log and the ledger see it.
pub struct RequestContext {
    received_at: Timestamp,
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

fn error_response(err: &ApiError) -> Response {
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
fn add_warnings(response: &mut Response, warnings: &[String]) {
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
    fn authenticate_and_record(
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
    fn optional_caller(&self, ctx: &mut RequestContext) -> Result<Option<Caller>, ApiError> {
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

fn body_error(err: BodyError) -> ApiError {
    match err {
        BodyError::UnsupportedMediaType(media_type) => {
            ApiError::unsupported_media_type(&media_type)
        }
        BodyError::Malformed(message) => ApiError::bad_request(message),
    }
}

fn new_uid() -> String {
    uuid::Uuid::new_v4().to_string()
}

async fn token_request(
    State(state): State<Arc<ApiState>>,
    Path((namespace, name)): Path<(String, String)>,
    mut ctx: RequestContext,
    body: Body,
) -> Response {
    ctx.object_ref = Some(audit::ObjectReference {
        resource: "serviceaccounts".into(),
        namespace: namespace.clone(),
        name: name.clone(),
        api_version: "v1".into(),
        subresource: "token".into(),
        ..audit::ObjectReference::default()
    });
    let result = async {
        let caller = state.caller(&mut ctx)?;
        if caller.is_admin() {
            ApiState::allow(&mut ctx, admin_reason(&caller));
        } else if state.allow_any_token_request {
            ApiState::allow(&mut ctx, "--allow-any-token-request");
        } else {
            ApiState::forbid(&mut ctx);
            return Err(ApiError::forbidden_resource(
                &caller.username(),
                "create",
                "serviceaccounts",
                Some("token"),
                "",
                Some(&namespace),
                &name,
            ));
        }
        let body = read_body(body).await?;
        let request = protobuf::decode_token_request(ctx.content_type.as_deref(), &body)
            .map_err(body_error)?;
        // The issuer with the signing key of this moment (a rotation may replace it).
        let issuer = state.keys.issuer();
        // `emulate --expiration-seconds` / `ctl lifetime` govern these tokens too.
        let lifetime_override = state.projector.get().and_then(|p| p.lifetime());
        // The object store is locked for the checks only, not while signing.
        let prepared = prepare_token(
            &issuer,
            &mut lock(&state.objects),
            &namespace,
            &name,
            request,
            lifetime_override,
            &mut new_uid,
        )?;
        let created = sign_token(&issuer, prepared, ctx.received_at)?;
        if let Some(jti) = &created.issued.claims.jti {
            ctx.annotations.insert(
                audit::annotation::ISSUED_CREDENTIAL_ID.into(),
                audit::credential_id(jti),
            );
        }
        let mut response = json_response(StatusCode::CREATED, &created.response);
        add_warnings(&mut response, &created.warnings);
        Ok::<_, ApiError>(response)
    }
    .await;
    respond(&state, ctx, result)
}

async fn token_review(
    State(state): State<Arc<ApiState>>,
    mut ctx: RequestContext,
    body: Body,
) -> Response {
    ctx.object_ref = Some(audit::ObjectReference {
        resource: "tokenreviews".into(),
        api_group: "authentication.k8s.io".into(),
        api_version: "v1".into(),
        ..audit::ObjectReference::default()
    });
    let result = async {
        state.caller(&mut ctx)?;
        ApiState::allow(&mut ctx, "authenticated callers may review tokens");
        let body = read_body(body).await?;
        let mut review = protobuf::decode_token_review(ctx.content_type.as_deref(), &body)
            .map_err(body_error)?;
        if let Some(namespace) = review
            .metadata
            .namespace
            .as_deref()
            .filter(|n| !n.is_empty())
        {
            return Err(ApiError::bad_request(format!(
                "namespace is not allowed on this type: {namespace}"
            )));
        }
        let spec = review.spec.clone();
        let token = spec.token.as_str();
        if token.is_empty() {
            return Err(ApiError::bad_request(
                "token is required for TokenReview in authentication",
            ));
        }
        let audiences = spec.audiences.clone().unwrap_or_default();
        // The reviewed token is a use of that token: the accounting is the whole point.
        let status = match state.authenticate_and_record(token, &audiences, &mut ctx) {
            Ok(Caller::ServiceAccount(sa)) => TokenReviewStatus {
                authenticated: Some(true),
                user: Some(sa.user.clone()),
                audiences: Some(sa.audiences.clone()),
                error: None,
            },
            // The admin token is not a service account token; upstream's token file
            // authenticator would accept it, and so do we. (A token never yields a certificate
            // user; the arm only keeps the match whole.)
            Ok(caller @ (Caller::Admin | Caller::User(_))) => TokenReviewStatus {
                authenticated: Some(true),
                user: Some(caller.user_info()),
                audiences: Some(state.authenticator.api_audiences.clone()),
                error: None,
            },
            Err(failure) => TokenReviewStatus {
                authenticated: Some(false),
                user: Some(UserInfo::default()),
                audiences: None,
                error: Some(failure.review_error()),
            },
        };
        review.metadata.creation_timestamp = Some(Time(whole_seconds(ctx.received_at)));
        review.status = Some(status);
        Ok::<_, ApiError>(json_response(StatusCode::CREATED, &review))
    }
    .await;
    respond(&state, ctx, result)
}

async fn self_subject_review(
    State(state): State<Arc<ApiState>>,
    mut ctx: RequestContext,
    body: Body,
) -> Response {
    ctx.object_ref = Some(audit::ObjectReference {
        resource: "selfsubjectreviews".into(),
        api_group: "authentication.k8s.io".into(),
        api_version: "v1".into(),
        ..audit::ObjectReference::default()
    });
    let result = async {
        let caller = state.caller(&mut ctx)?;
        ApiState::allow(&mut ctx, "every authenticated user may review itself");
        let body = read_body(body).await?;
        let mut review: SelfSubjectReview =
            protobuf::decode_self_subject_review(ctx.content_type.as_deref(), &body)
                .map_err(body_error)?;
        review.metadata.creation_timestamp = Some(Time(whole_seconds(ctx.received_at)));
        review.status = Some(SelfSubjectReviewStatus {
            user_info: Some(caller.user_info()),
        });
        Ok::<_, ApiError>(json_response(StatusCode::CREATED, &review))
    }
    .await;
    respond(&state, ctx, result)
}

/// `DELETE /api/v1/namespaces/{ns}/pods/{name}` (admin only): tokens bound to the pod stop
/// authenticating at once, as upstream once the object is gone. Answers the deleted pod.
async fn delete_pod(
    State(state): State<Arc<ApiState>>,
    Path((namespace, name)): Path<(String, String)>,
    mut ctx: RequestContext,
) -> Response {
    ctx.object_ref = Some(audit::ObjectReference {
        resource: "pods".into(),
        namespace: namespace.clone(),
        name: name.clone(),
        api_version: "v1".into(),
        ..audit::ObjectReference::default()
    });
    let result = state.caller(&mut ctx).and_then(|caller| {
        if !caller.is_admin() {
            ApiState::forbid(&mut ctx);
            return Err(ApiError::forbidden_resource(
                &caller.username(),
                "delete",
                "pods",
                None,
                "",
                Some(&namespace),
                &name,
            ));
        }
        ApiState::allow(&mut ctx, admin_reason(&caller));
        // As upstream's storage: a name it cannot key is a bad request; any other name that no
        // pod has (an invalid one never does) is not found.
        ApiError::check_name_parameter(&name)?;
        // Deleting a pod is how its tokens are revoked (`ctl revoke`).
        ctx.annotations
            .insert(controls::CONTROL.into(), "revoke-pod".into());
        let deleted = lock(&state.objects)
            .delete_pod(&namespace, &name)
            .ok_or_else(|| ApiError::not_found("pods", &name))?;
        ctx.annotations.insert(
            controls::CONTROL_DETAILS.into(),
            format!(
                "pod {namespace}/{name} (uid {}) deleted: its tokens no longer authenticate",
                deleted.uid
            ),
        );
        let pod = k8s_openapi::api::core::v1::Pod {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                uid: Some(deleted.uid),
                ..Default::default()
            },
            spec: Some(k8s_openapi::api::core::v1::PodSpec {
                service_account_name: Some(deleted.service_account),
                node_name: deleted.node_name,
                ..Default::default()
            }),
            status: None,
        };
        tracing::info!(namespace = %namespace, pod = %name, "pod deleted; its tokens no longer authenticate");
        Ok(json_response(StatusCode::OK, &pod))
    });
    respond(&state, ctx, result)
}

fn whole_seconds(at: Timestamp) -> Timestamp {
    Timestamp::from_second(at.as_second()).unwrap_or(at)
}

/// Issuer discovery is public, as clusters commonly make it for external OIDC consumers.
async fn openid_configuration(State(state): State<Arc<ApiState>>) -> Response {
    let published = state.keys.published(state.clock.now());
    let algorithms: Vec<&str> = published.algorithms.iter().map(String::as_str).collect();
    let body = discovery::openid_configuration(
        &state.keys.issuer().config.issuer,
        &state.jwks_uri,
        &algorithms,
    );
    cacheable("application/json", body)
}

/// The keys published now: after a signing key rotation, the old one only until its grace ends.
async fn jwks(State(state): State<Arc<ApiState>>) -> Response {
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
async fn version() -> Response {
    json_response(StatusCode::OK, &discovery::version_info())
}

async fn discovery_document(
    State(state): State<Arc<ApiState>>,
    uri: Uri,
    mut ctx: RequestContext,
) -> Response {
    let result = state.caller(&mut ctx).and_then(|_| {
        discovery::document(uri.path())
            .map(|doc| json_response(StatusCode::OK, &doc))
            .ok_or_else(ApiError::no_route)
    });
    respond(&state, ctx, result)
}

async fn health() -> &'static str {
    "ok"
}

/// Metrics are public: they name service accounts and pods, never tokens.
async fn metrics_text(State(state): State<Arc<ApiState>>) -> Response {
    match state.metrics.encode() {
        Ok(text) => ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response(),
        Err(e) => error_response(&ApiError::internal(e.to_string())),
    }
}

/// Per-client token usage, for `check`: admin only.
async fn token_usage(
    State(state): State<Arc<ApiState>>,
    uri: Uri,
    mut ctx: RequestContext,
) -> Response {
    let result = state.caller(&mut ctx).and_then(|caller| {
        if !caller.is_admin() {
            return Err(ApiError::forbidden_path(
                &caller.username(),
                "get",
                uri.path(),
            ));
        }
        let report = state
            .ledger
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .report(state.clock.now());
        Ok(json_response(StatusCode::OK, &report))
    });
    respond(&state, ctx, result)
}

/// A known path with another method: a `Status` body, as every other error.
async fn method_not_allowed(
    State(state): State<Arc<ApiState>>,
    method: Method,
    ctx: RequestContext,
) -> Response {
    respond(
        &state,
        ctx,
        Err(ApiError::method_not_allowed(method.as_str())),
    )
}

async fn fallback(State(state): State<Arc<ApiState>>, mut ctx: RequestContext) -> Response {
    let result = state
        .optional_caller(&mut ctx)
        .and_then(|_| Err(ApiError::no_route()));
    respond(&state, ctx, result)
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
