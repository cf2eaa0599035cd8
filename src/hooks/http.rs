//! HTTP hooks: the rotation POSTed as JSON; any status but 2xx is a failure.

use std::time::Duration;

use crate::errors::error_chain;
use crate::refresher::RotationEvent;

/// POSTs `event` as JSON to `url` with `client`, within `timeout`.
pub(super) async fn post_rotation(
    client: &reqwest::Client,
    url: &reqwest::Url,
    timeout: Duration,
    event: &RotationEvent,
) -> Result<(), String> {
    let body = serde_json::to_vec(event)
        .map_err(|e| format!("cannot encode the rotation as JSON: {e}"))?;
    let response = client
        .post(url.clone())
        .timeout(timeout)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| {
            let timed_out = e.is_timeout();
            // Without the URL: it may carry credentials, and the hook's name shows it.
            let chain = error_chain(&e.without_url());
            if timed_out {
                format!("no answer within {timeout:?}: {chain}")
            } else {
                chain
            }
        })?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("answered {status}"))
    }
}

/// The URL without its credentials, query and fragment, for logs.
pub(super) fn loggable_url(url: &reqwest::Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::http::StatusCode;
    use axum::routing::post;

    use crate::hooks::test_support::{event, runner, PATIENCE};
    use crate::hooks::Hook;
    use crate::refresher::RotationEvent;

    type Bodies = Arc<Mutex<Vec<serde_json::Value>>>;

    /// An HTTP server on 127.0.0.1 recording the JSON POSTed to `/`; `/fail` answers 500.
    async fn recording_server() -> (std::net::SocketAddr, Bodies) {
        let bodies: Bodies = Arc::default();
        let recorded = bodies.clone();
        let app = axum::Router::new()
            .route(
                "/",
                post(move |body: axum::Json<serde_json::Value>| async move {
                    recorded.lock().expect("bodies lock").push(body.0);
                    StatusCode::NO_CONTENT
                }),
            )
            .route(
                "/fail",
                post(|| async { StatusCode::INTERNAL_SERVER_ERROR }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1");
        let addr = listener.local_addr().expect("local addr");
        // Ends with the test's runtime.
        tokio::spawn(async move { axum::serve(listener, app).await });
        (addr, bodies)
    }

    fn http(url: String) -> Hook {
        Hook::Http {
            url: reqwest::Url::parse(&url).expect("url"),
            timeout: PATIENCE,
        }
    }

    #[tokio::test]
    async fn http_posts_the_rotation_once_per_rotation() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (addr, bodies) = recording_server().await;
        let runner = runner(vec![http(format!("http://{addr}/"))]);
        let events: Vec<RotationEvent> = (0..3).map(|n| event(dir.path(), n)).collect();
        for event in &events {
            let report = runner.run(event).await;
            assert_eq!(report.failed(), 0, "{report:?}");
        }
        let bodies = bodies.lock().expect("bodies lock").clone();
        assert_eq!(bodies.len(), 3);
        for (body, event) in bodies.iter().zip(&events) {
            let object = body.as_object().expect("a JSON object");
            let keys: Vec<&str> = object.keys().map(String::as_str).collect();
            let mut expected_keys = vec![
                "volume",
                "dir",
                "path",
                "namespace",
                "pod",
                "service_account",
                "old_jti",
                "new_jti",
                "issued_at",
                "expires_at",
                "warn_after",
                "status_expiration",
                "next_refresh",
                "data_dir",
                "scheduled_at",
                "published_at",
            ];
            expected_keys.sort_unstable();
            let mut keys = keys;
            keys.sort_unstable();
            assert_eq!(
                keys, expected_keys,
                "no field beyond the event's, none a token"
            );
            assert!(
                object
                    .values()
                    .all(|v| !v.as_str().is_some_and(|s| s.starts_with("eyJ"))),
                "{body}"
            );
            assert_eq!(body["volume"], "kube-api-access");
            assert_eq!(body["dir"], dir.path().display().to_string());
            assert_eq!(body["path"], "token");
            assert_eq!(body["data_dir"], event.data_dir);
            assert_eq!(
                body["status_expiration"],
                event.status_expiration.to_string()
            );
            assert_eq!(body["next_refresh"], event.next_refresh.to_string());
            let expires_at = event.expires_at.expect("expiry").to_string();
            assert_eq!(body["expires_at"], expires_at);
            assert_eq!(
                body["new_jti"],
                serde_json::to_value(&event.new_jti).expect("jti")
            );
        }
        assert_eq!(bodies[0]["issued_at"], "2023-11-14T22:13:20Z");
        assert_eq!(bodies[1]["new_jti"], serde_json::Value::Null);
        assert_eq!(runner.successes().http, 3);
    }

    #[tokio::test]
    async fn http_errors_and_refused_connections_are_counted_failures() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (addr, bodies) = recording_server().await;
        // A port that was free a moment ago: nothing listens there.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port");
        let runner = runner(vec![
            http(format!("http://{addr}/fail")),
            http(format!("http://{closed}/")),
            http(format!("http://{addr}/")),
        ]);
        for n in 0..2 {
            let report = runner.run(&event(dir.path(), n)).await;
            let errors: Vec<Option<&str>> =
                report.outcomes.iter().map(|o| o.error.as_deref()).collect();
            assert!(errors[0].is_some_and(|e| e.contains("500")), "{errors:?}");
            assert!(errors[1].is_some(), "{errors:?}");
            assert_eq!(errors[2], None);
        }
        assert_eq!(bodies.lock().expect("bodies lock").len(), 2);
        assert_eq!(runner.failures().http, 4);
        assert_eq!(runner.successes().http, 2);
    }
}
