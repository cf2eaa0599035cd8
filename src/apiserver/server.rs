//! The route table of the emulated API, with what applies to every route: the `Status` answers
//! for unknown paths and methods, and the gate that answers 503 during a simulated outage.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::Method;
use axum::response::Response;
use axum::routing::{get, post, put};
use axum::Router;

use super::controls;
use super::debug;
use super::discovery;
use super::objects_api;
use super::outage::OutageMode;
use super::request::{respond, ApiState, RequestContext};
use super::reviews;
use super::status::ApiError;
use super::token_request;

/// The routes of the emulated API.
pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route(
            "/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
            post(token_request::token_request),
        )
        .route(
            "/apis/authentication.k8s.io/v1/tokenreviews",
            post(reviews::token_review),
        )
        .route(
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            post(reviews::self_subject_review),
        )
        .route(
            "/api/v1/namespaces/{namespace}/pods/{name}",
            get(objects_api::read_pods).delete(objects_api::delete_pod),
        )
        .route("/api/v1/pods", get(objects_api::read_pods))
        .route(
            "/api/v1/namespaces/{namespace}/pods",
            get(objects_api::read_pods),
        )
        .route(
            "/api/v1/serviceaccounts",
            get(objects_api::read_service_accounts),
        )
        .route(
            "/api/v1/namespaces/{namespace}/serviceaccounts",
            get(objects_api::read_service_accounts),
        )
        .route(
            "/api/v1/namespaces/{namespace}/serviceaccounts/{name}",
            get(objects_api::read_service_accounts),
        )
        .route(
            "/.well-known/openid-configuration",
            get(discovery::get_openid_configuration),
        )
        .route("/openid/v1/jwks", get(discovery::get_jwks))
        .route("/version", get(discovery::get_version))
        .route("/version/", get(discovery::get_version))
        .route("/api", get(discovery::get_document))
        .route("/api/v1", get(discovery::get_document))
        .route("/apis", get(discovery::get_document))
        .route("/apis/authentication.k8s.io", get(discovery::get_document))
        .route(
            "/apis/authentication.k8s.io/v1",
            get(discovery::get_document),
        )
        .route("/livez", get(debug::health))
        .route("/readyz", get(debug::health))
        .route("/healthz", get(debug::health))
        .route("/metrics", get(debug::metrics_text))
        .route("/debug/token-usage", get(debug::token_usage))
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

/// An unknown path: 404, or 401 when a credential it carries fails (it is authenticated, and
/// a token use accounted, before routing, as upstream).
async fn fallback(State(state): State<Arc<ApiState>>, mut ctx: RequestContext) -> Response {
    let result = state
        .optional_caller(&mut ctx)
        .and_then(|_| Err(ApiError::no_route()));
    respond(&state, ctx, result)
}
