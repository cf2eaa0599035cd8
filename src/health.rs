//! The sidecar's health and metrics endpoint (plain HTTP, as kubelet probes and Prometheus
//! scrapes expect on a pod port): `/healthz` (the process answers), `/readyz` (every token is on
//! disk and not past its effective expiry) and `/metrics`.
//!
//! Everything is rendered from the refresher's [`StatusBoard`] at request time: no background
//! task, and nothing to keep in sync.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use jiff::Timestamp;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::clock::Clock;
use crate::refresher::{StatusBoard, TokenStatus};

/// Hook failures by kind (`signal`, `exec`, `http`), read at scrape time.
pub type HookFailures = Arc<dyn Fn() -> Vec<(&'static str, u64)> + Send + Sync>;

/// What the endpoints read.
#[derive(Clone)]
pub struct HealthState {
    pub status: StatusBoard,
    pub clock: Arc<dyn Clock>,
    pub hook_failures: HookFailures,
}

pub fn router(state: HealthState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

fn snapshot(board: &StatusBoard) -> Vec<TokenStatus> {
    board
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone()
}

/// The lines of a readiness answer: one per token, `ok` or why not. Pure, for tests.
pub fn readiness(tokens: &[TokenStatus], now: Timestamp) -> (bool, String) {
    let mut ready = !tokens.is_empty();
    let mut body = String::new();
    for token in tokens {
        let line = if token.is_ready(now) {
            format!(
                "[+] {}/{} ok (until {})",
                token.volume,
                token.path,
                fmt_time(token.expires_at)
            )
        } else {
            ready = false;
            let why = match (&token.written, token.expires_at) {
                (false, _) => "no token written yet".to_owned(),
                (true, Some(end)) => format!("the token on disk expired at {end}"),
                (true, None) => "expiry unknown".to_owned(),
            };
            let last = token
                .last_error
                .as_deref()
                .map(|e| format!("; last error: {e}"))
                .unwrap_or_default();
            format!("[-] {}/{} not ready: {why}{last}", token.volume, token.path)
        };
        body.push_str(&line);
        body.push('\n');
    }
    body.push_str(if ready {
        "readyz check passed\n"
    } else {
        "readyz check failed\n"
    });
    (ready, body)
}

fn fmt_time(at: Option<Timestamp>) -> String {
    at.map(|t| t.to_string()).unwrap_or_else(|| "-".into())
}

async fn readyz(State(state): State<HealthState>) -> Response {
    let (ready, body) = readiness(&snapshot(&state.status), state.clock.now());
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, body).into_response()
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    volume: String,
    path: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    volume: String,
    path: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HookLabels {
    kind: String,
}

type GaugeF64 = Gauge<f64, AtomicU64>;

/// The Prometheus text of the token statuses and hook failures. Pure, for tests.
pub fn render_metrics(
    tokens: &[TokenStatus],
    hook_failures: &[(&'static str, u64)],
    now: Timestamp,
) -> Result<String, std::fmt::Error> {
    let expiry = Family::<TokenLabels, GaugeF64>::default();
    let next_refresh = Family::<TokenLabels, GaugeF64>::default();
    let ready = Family::<TokenLabels, Gauge>::default();
    let last_error = Family::<TokenLabels, GaugeF64>::default();
    let successes = Family::<TokenLabels, Counter>::default();
    let failures = Family::<FailureLabels, Counter>::default();
    let hooks = Family::<HookLabels, Counter>::default();
    let seconds = |at: Timestamp| at.as_millisecond() as f64 / 1000.0;
    for token in tokens {
        let labels = TokenLabels {
            volume: token.volume.clone(),
            path: token.path.clone(),
        };
        if let Some(end) = token.expires_at {
            expiry.get_or_create(&labels).set(seconds(end));
        }
        if let Some(at) = token.next_refresh {
            next_refresh.get_or_create(&labels).set(seconds(at));
        }
        if let Some(at) = token.last_error_at {
            last_error.get_or_create(&labels).set(seconds(at));
        }
        ready
            .get_or_create(&labels)
            .set(i64::from(token.is_ready(now)));
        successes.get_or_create(&labels).inc_by(token.successes);
        for (reason, count) in &token.failures {
            failures
                .get_or_create(&FailureLabels {
                    volume: token.volume.clone(),
                    path: token.path.clone(),
                    reason: (*reason).to_owned(),
                })
                .inc_by(*count);
        }
    }
    for (kind, count) in hook_failures {
        hooks
            .get_or_create(&HookLabels {
                kind: (*kind).to_owned(),
            })
            .inc_by(*count);
    }
    let mut registry = Registry::default();
    registry.register(
        "projected_token_expiry_timestamp_seconds",
        "When the token on disk stops being usable (earliest of status expiration, exp, warnafter)",
        expiry,
    );
    registry.register(
        "projected_token_next_refresh_timestamp_seconds",
        "When the token is refreshed next (or retried after a failure)",
        next_refresh,
    );
    registry.register(
        "projected_token_ready",
        "1 when the token is on disk and not past its effective expiry",
        ready,
    );
    registry.register(
        "projected_token_last_error_timestamp_seconds",
        "When the last refresh or write of the token failed",
        last_error,
    );
    registry.register(
        "projected_token_refresh_successes",
        "Tokens obtained from the API server",
        successes,
    );
    registry.register(
        "projected_token_refresh_failures",
        "Failed refreshes and writes, by reason (rejected, unavailable, throttled, write)",
        failures,
    );
    registry.register(
        "projected_token_hook_failures",
        "Rotation hooks that failed, by kind (signal, exec, http)",
        hooks,
    );
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)?;
    Ok(text)
}

async fn metrics(State(state): State<HealthState>) -> Response {
    let tokens = snapshot(&state.status);
    match render_metrics(&tokens, &(state.hook_failures)(), state.clock.now()) {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    fn token(written: bool, expires: Option<i64>) -> TokenStatus {
        TokenStatus {
            volume: "vault".into(),
            path: "token".into(),
            written,
            expires_at: expires.map(at),
            next_refresh: Some(at(480)),
            successes: 2,
            failures: BTreeMap::from([("unavailable", 3)]),
            last_error: Some("token request failed: 503".into()),
            last_error_at: Some(at(10)),
            ..TokenStatus::default()
        }
    }

    #[test]
    fn ready_only_when_every_token_is_on_disk_and_unexpired() {
        assert!(readiness(&[token(true, Some(600))], at(0)).0);
        let (ready, body) = readiness(&[token(true, Some(600)), token(false, None)], at(0));
        assert!(!ready);
        assert!(
            body.contains("no token written yet; last error: token request failed: 503"),
            "{body}"
        );
        let (ready, body) = readiness(&[token(true, Some(600))], at(601));
        assert!(!ready);
        assert!(body.contains("expired at"), "{body}");
        assert!(!readiness(&[], at(0)).0, "nothing to serve is not ready");
    }

    #[test]
    fn metrics_name_expiry_next_refresh_and_failures_by_reason() {
        let text =
            render_metrics(&[token(true, Some(600))], &[("exec", 1)], at(0)).unwrap_or_default();
        for needle in [
            "projected_token_expiry_timestamp_seconds{volume=\"vault\",path=\"token\"} 1800000600",
            "projected_token_next_refresh_timestamp_seconds{volume=\"vault\",path=\"token\"} 1800000480",
            "projected_token_ready{volume=\"vault\",path=\"token\"} 1",
            "projected_token_refresh_successes_total{volume=\"vault\",path=\"token\"} 2",
            "projected_token_refresh_failures_total{volume=\"vault\",path=\"token\",reason=\"unavailable\"} 3",
            "projected_token_hook_failures_total{kind=\"exec\"} 1",
        ] {
            assert!(text.contains(needle), "missing {needle} in:\n{text}");
        }
    }
}
