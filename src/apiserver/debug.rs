//! What operators and `check` read: the health endpoints, the Prometheus metrics and the
//! per-client token usage (`/debug/token-usage`, admin only).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use super::metrics;
use super::request::{error_response, json_response, respond, ApiState, RequestContext};
use super::status::ApiError;

/// `/livez`, `/readyz`, `/healthz`: public; an answer means the server is up.
pub async fn health() -> &'static str {
    "ok"
}

/// Metrics are public: they name service accounts and pods, never tokens.
pub async fn metrics_text(State(state): State<Arc<ApiState>>) -> Response {
    match state.metrics.encode() {
        Ok(text) => ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response(),
        Err(e) => error_response(&ApiError::internal(e.to_string())),
    }
}

/// Per-client token usage, for `check`: admin only.
pub async fn token_usage(
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
