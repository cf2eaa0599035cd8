//! The sidecar's health and metrics endpoint (plain HTTP, as kubelet probes and Prometheus
//! scrapes expect on a pod port): `/healthz` (the process answers), `/readyz` (every token is on
//! disk, not past its effective expiry, and what a reader opening its path gets) and `/metrics`.
//!
//! Everything is rendered from the refresher's [`StatusBoard`], the repair counts and a look at
//! each token's links (readlink and lstat only) at request time: no background task, and nothing
//! to keep in sync.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

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
use crate::projection::visible_problem;
use crate::refresher::{RepairEvent, StatusBoard, TokenStatus};

/// Hook failures by kind (`signal`, `exec`, `http`), read at scrape time.
pub type HookFailures = Arc<dyn Fn() -> Vec<(&'static str, u64)> + Send + Sync>;

/// Repairs by volume, entry (`token`, `..data`) and what was found there (a
/// [`crate::projection::Found`] label), for `projected_token_repairs_total`.
#[derive(Clone, Default)]
pub struct RepairCounts(Arc<Mutex<BTreeMap<RepairKey, u64>>>);

/// (volume, path, found)
type RepairKey = (String, String, &'static str);

impl RepairCounts {
    /// Counts one repair (a refresher's repair hook).
    pub fn record(&self, event: &RepairEvent) {
        let key = (
            event.volume.clone(),
            event.path.clone(),
            event.found.label(),
        );
        *self.lock().entry(key).or_default() += 1;
    }

    fn snapshot(&self) -> Vec<(RepairKey, u64)> {
        self.lock()
            .iter()
            .map(|(key, count)| (key.clone(), *count))
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<RepairKey, u64>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// What the endpoints read.
#[derive(Clone)]
pub struct HealthState {
    pub status: StatusBoard,
    pub clock: Arc<dyn Clock>,
    pub hook_failures: HookFailures,
    pub repairs: RepairCounts,
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

/// For each written token, why a reader opening its path would not get the published file
/// (someone changed a link, `..data` or the file: the watcher is putting it back, or cannot):
/// `None` when it would. readlink and lstat only: nothing planted there can block the probe.
fn layout_problems(tokens: &[TokenStatus]) -> Vec<Option<String>> {
    tokens
        .iter()
        .map(|token| {
            token
                .written
                .then(|| visible_problem(&token.dir, &token.path))
                .flatten()
        })
        .collect()
}

/// Ready: on disk, unexpired, and read through the published version (`layout`, by token).
fn token_ready(token: &TokenStatus, layout: Option<&Option<String>>, now: Timestamp) -> bool {
    token.is_ready(now) && layout.is_none_or(|problem| problem.is_none())
}

/// The lines of a readiness answer: one per token, `ok` or why not. `layout`: what
/// `layout_problems` found, by token. Pure, for tests.
pub fn readiness(
    tokens: &[TokenStatus],
    layout: &[Option<String>],
    now: Timestamp,
) -> (bool, String) {
    let mut ready = !tokens.is_empty();
    let mut body = String::new();
    for (index, token) in tokens.iter().enumerate() {
        let problem = layout.get(index).and_then(Option::as_deref);
        let line = if let (true, Some(problem)) = (token.is_ready(now), problem) {
            ready = false;
            format!(
                "[-] {}/{} not ready: a reader would not get the token written: {problem}",
                token.volume, token.path
            )
        } else if token.is_ready(now) {
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
    let tokens = snapshot(&state.status);
    let (ready, body) = readiness(&tokens, &layout_problems(&tokens), state.clock.now());
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RepairLabels {
    volume: String,
    path: String,
    found: String,
}

type GaugeF64 = Gauge<f64, AtomicU64>;

/// Name (the encoder appends `_total`) and help of the repair counter; the emulator's has the
/// same name, with the pod's namespace and name as more labels.
pub const REPAIRS_METRIC: &str = "projected_token_repairs";
pub const REPAIRS_HELP: &str = "Entries of a token directory found changed by someone else and put back, by entry (path) and what was there (found: missing, symlink, file, directory, fifo, socket, device, modified)";

/// Everything `/metrics` shows, read at scrape time.
pub struct MetricsInput<'a> {
    pub tokens: &'a [TokenStatus],
    /// What `layout_problems` found, by token.
    pub layout: &'a [Option<String>],
    pub hook_failures: &'a [(&'static str, u64)],
    /// ((volume, path, found), count)
    pub repairs: &'a [((String, String, &'static str), u64)],
    pub now: Timestamp,
}

/// The Prometheus text of the token statuses, hook failures and repairs. Pure, for tests.
pub fn render_metrics(input: &MetricsInput<'_>) -> Result<String, std::fmt::Error> {
    let MetricsInput {
        tokens,
        layout,
        hook_failures,
        repairs,
        now,
    } = *input;
    let expiry = Family::<TokenLabels, GaugeF64>::default();
    let next_refresh = Family::<TokenLabels, GaugeF64>::default();
    let ready = Family::<TokenLabels, Gauge>::default();
    let last_error = Family::<TokenLabels, GaugeF64>::default();
    let successes = Family::<TokenLabels, Counter>::default();
    let failures = Family::<FailureLabels, Counter>::default();
    let hooks = Family::<HookLabels, Counter>::default();
    let repaired = Family::<RepairLabels, Counter>::default();
    let seconds = |at: Timestamp| at.as_millisecond() as f64 / 1000.0;
    for (index, token) in tokens.iter().enumerate() {
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
            .set(i64::from(token_ready(token, layout.get(index), now)));
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
    for ((volume, path, found), count) in repairs {
        repaired
            .get_or_create(&RepairLabels {
                volume: volume.clone(),
                path: path.clone(),
                found: (*found).to_owned(),
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
        "1 when the token is on disk, not past its effective expiry, and what a reader opening its path gets",
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
    registry.register(REPAIRS_METRIC, REPAIRS_HELP, repaired);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)?;
    Ok(text)
}

async fn metrics(State(state): State<HealthState>) -> Response {
    let tokens = snapshot(&state.status);
    let input = MetricsInput {
        tokens: &tokens,
        layout: &layout_problems(&tokens),
        hook_failures: &(state.hook_failures)(),
        repairs: &state.repairs.snapshot(),
        now: state.clock.now(),
    };
    match render_metrics(&input) {
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
        assert!(readiness(&[token(true, Some(600))], &[], at(0)).0);
        let (ready, body) = readiness(&[token(true, Some(600)), token(false, None)], &[], at(0));
        assert!(!ready);
        assert!(
            body.contains("no token written yet; last error: token request failed: 503"),
            "{body}"
        );
        let (ready, body) = readiness(&[token(true, Some(600))], &[], at(601));
        assert!(!ready);
        assert!(body.contains("expired at"), "{body}");
        assert!(
            !readiness(&[], &[], at(0)).0,
            "nothing to serve is not ready"
        );
    }

    #[test]
    fn not_ready_while_a_reader_would_get_another_file() {
        let problem =
            Some("token is a symlink to \"/etc/hostname\", not to ..data/token".to_owned());
        let (ready, body) = readiness(&[token(true, Some(600))], &[problem], at(0));
        assert!(!ready);
        assert!(
            body.contains("[-] vault/token not ready: a reader would not get the token written: token is a symlink to \"/etc/hostname\""),
            "{body}"
        );
        assert!(readiness(&[token(true, Some(600))], &[None], at(0)).0);
    }

    #[test]
    fn metrics_name_expiry_next_refresh_and_failures_by_reason() {
        let repairs = [(("vault".to_owned(), "token".to_owned(), "symlink"), 2)];
        let input = MetricsInput {
            tokens: &[token(true, Some(600))],
            layout: &[None],
            hook_failures: &[("exec", 1)],
            repairs: &repairs,
            now: at(0),
        };
        let text = render_metrics(&input).unwrap_or_default();
        for needle in [
            "projected_token_repairs_total{volume=\"vault\",path=\"token\",found=\"symlink\"} 2",
            "projected_token_expiry_timestamp_seconds{volume=\"vault\",path=\"token\"} 1800000600",
            "projected_token_next_refresh_timestamp_seconds{volume=\"vault\",path=\"token\"} 1800000480",
            "projected_token_ready{volume=\"vault\",path=\"token\"} 1",
            "projected_token_refresh_successes_total{volume=\"vault\",path=\"token\"} 2",
            "projected_token_refresh_failures_total{volume=\"vault\",path=\"token\",reason=\"unavailable\"} 3",
            "projected_token_hook_failures_total{kind=\"exec\"} 1",
        ] {
            assert!(text.contains(needle), "missing {needle} in:\n{text}");
        }
        let tampered = [Some("token is missing".to_owned())];
        let text = render_metrics(&MetricsInput {
            layout: &tampered,
            ..input
        })
        .unwrap_or_default();
        assert!(
            text.contains("projected_token_ready{volume=\"vault\",path=\"token\"} 0"),
            "{text}"
        );
    }
}
