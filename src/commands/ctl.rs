//! `ctl`: the emulator's controls from the command line, one request each (see
//! `apiserver::controls` for what the server does). Prints a line in words, or the server's JSON
//! answer with `--output json`.
//!
//! Exit codes: 0 done; 1 the server could not be reached or failed; 2 bad flags or files, a token
//! the server refuses, or a request it rejects (e.g. an unknown pod).

use std::io::Write as _;

use reqwest::Method;
use serde_json::{json, Value};

use super::api_client::ApiClient;
use super::shared::CommandError;
use crate::apiserver::controls::{
    list_names, LIFETIME_PATH, OUTAGE_PATH, ROTATE_KEY_PATH, ROTATE_TOKENS_PATH, STATUS_PATH,
};
use crate::cli::{
    ApiConnectionArgs, CtlArgs, CtlCommand, KeyAlgorithmArg, OutageModeArg, OutputFormat,
};

pub async fn run(args: &CtlArgs) -> Result<(), CommandError> {
    let (connection, method, path, body, render): (_, _, String, _, fn(&Value) -> String) =
        match &args.command {
            CtlCommand::Status(a) => (
                &a.connection,
                Method::GET,
                STATUS_PATH.into(),
                None,
                render_status,
            ),
            CtlCommand::Rotate(a) => {
                let body = match &a.pod {
                    Some(pod) => json!({"namespace": a.namespace, "pod": pod}),
                    None => json!({}),
                };
                (
                    &a.connection,
                    Method::POST,
                    ROTATE_TOKENS_PATH.into(),
                    Some(body),
                    render_rotation,
                )
            }
            CtlCommand::RotateKey(a) => {
                let mut body = json!({
                    "gracePeriodSeconds": a.grace,
                    "rotateTokens": a.rotate_tokens,
                });
                if let Some(algorithm) = a.key_algorithm {
                    body["algorithm"] = json!(match algorithm {
                        KeyAlgorithmArg::Rs256 => "RS256",
                        KeyAlgorithmArg::Es256 => "ES256",
                    });
                }
                (
                    &a.connection,
                    Method::POST,
                    ROTATE_KEY_PATH.into(),
                    Some(body),
                    render_key_rotation,
                )
            }
            CtlCommand::Revoke(a) => (
                &a.connection,
                Method::DELETE,
                format!(
                    "/api/v1/namespaces/{}/pods/{}",
                    path_segment(&a.namespace)?,
                    path_segment(&a.pod)?
                ),
                None,
                render_revoke,
            ),
            CtlCommand::Outage(a) => match (a.end, a.duration) {
                (true, _) => (
                    &a.connection,
                    Method::DELETE,
                    OUTAGE_PATH.into(),
                    None,
                    render_outage,
                ),
                (false, Some(seconds)) => {
                    let mode = match a.mode {
                        OutageModeArg::Unavailable => "ServiceUnavailable",
                        OutageModeArg::Refuse => "RefuseConnections",
                    };
                    let body = json!({"mode": mode, "durationSeconds": seconds});
                    (
                        &a.connection,
                        Method::POST,
                        OUTAGE_PATH.into(),
                        Some(body),
                        render_outage,
                    )
                }
                (false, None) => {
                    return Err(CommandError::usage(
                        "ctl outage: give --duration (e.g. --duration 10s), or --end",
                    ))
                }
            },
            CtlCommand::Lifetime(a) => {
                let seconds = if a.reset { None } else { a.lifetime };
                if !a.reset && seconds.is_none() {
                    return Err(CommandError::usage(
                        "ctl lifetime: give the lifetime (e.g. 5s), or --reset",
                    ));
                }
                let body = json!({"expirationSeconds": seconds});
                (
                    &a.connection,
                    Method::PUT,
                    LIFETIME_PATH.into(),
                    Some(body),
                    render_lifetime,
                )
            }
        };
    let client = ApiClient::connect(connection).await?;
    let answer = client.call(method, &path, body.as_ref()).await?;
    print(connection, &answer, render)
}

/// A name put into a URL path: Kubernetes names never need escaping, so refuse what would.
fn path_segment(name: &str) -> Result<&str, CommandError> {
    let valid = !matches!(name, "" | "." | "..")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if valid {
        Ok(name)
    } else {
        Err(CommandError::usage(format!(
            "{name:?} is not a Kubernetes name (lower-case letters, digits, '-' and '.')"
        )))
    }
}

fn print(
    connection: &ApiConnectionArgs,
    answer: &Value,
    render: fn(&Value) -> String,
) -> Result<(), CommandError> {
    let text = match connection.output {
        OutputFormat::Text => render(answer),
        OutputFormat::Json => format!(
            "{}\n",
            serde_json::to_string_pretty(answer)
                .map_err(|e| CommandError::failure(format!("cannot print the answer: {e}")))?
        ),
    };
    std::io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .map_err(|e| CommandError::failure(format!("cannot write to standard output: {e}")))
}

fn text<'a>(value: &'a Value, key: &str) -> &'a str {
    value.get(key).and_then(Value::as_str).unwrap_or("-")
}

/// The answer's volumes in words, the first few of thousands (`--output json` has them all).
fn volumes(answer: &Value) -> String {
    let list = answer
        .get("volumes")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    list_names(
        list.iter().map(|v| {
            format!(
                "{}/{} volume {} ({})",
                text(v, "namespace"),
                text(v, "pod"),
                text(v, "volume"),
                text(v, "dir")
            )
        }),
        "no volumes",
    )
}

fn lifetime(value: Option<&Value>) -> String {
    value
        .and_then(Value::as_i64)
        .map_or("each volume's own".into(), |s| format!("{s} s"))
}

pub fn render_status(answer: &Value) -> String {
    let mut out = String::new();
    let keys = &answer["signingKeys"];
    out.push_str(&format!(
        "signing key:  {} ({})\n",
        text(&keys["current"], "kid"),
        text(&keys["current"], "algorithm")
    ));
    for key in keys["retired"].as_array().into_iter().flatten() {
        let state = if key["published"].as_bool() == Some(true) {
            "published until"
        } else {
            "dropped at"
        };
        out.push_str(&format!(
            "retired key:  {} ({}), {state} {}\n",
            text(key, "kid"),
            text(key, "algorithm"),
            text(key, "publishedUntil")
        ));
    }
    for key in keys["extra"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "extra key:    {} ({})\n",
            text(key, "kid"),
            text(key, "algorithm")
        ));
    }
    match answer.get("outage").filter(|o| !o.is_null()) {
        Some(outage) => out.push_str(&format!(
            "outage:       {} until {} ({} s left)\n",
            text(outage, "mode"),
            text(outage, "endsAt"),
            outage["retryAfterSeconds"]
        )),
        None => out.push_str("outage:       none\n"),
    }
    match answer.get("projector") {
        Some(projector) => {
            out.push_str(&format!(
                "lifetime:     {}\n",
                lifetime(projector.get("expirationSeconds"))
            ));
            for pod in projector["pods"].as_array().into_iter().flatten() {
                out.push_str(&format!(
                    "pod:          {}/{} (uid {}): {}\n",
                    text(pod, "namespace"),
                    text(pod, "name"),
                    text(pod, "uid"),
                    volumes(pod)
                ));
            }
        }
        None => out.push_str("projector:    none (serve)\n"),
    }
    out
}

pub fn render_rotation(answer: &Value) -> String {
    format!("rotating now: {}\n", volumes(answer))
}

pub fn render_key_rotation(answer: &Value) -> String {
    let old = if answer["gracePeriodSeconds"].as_i64() == Some(0) {
        format!("old key {} dropped at once", text(answer, "oldKid"))
    } else {
        format!(
            "old key {} published until {}",
            text(answer, "oldKid"),
            text(answer, "oldKeyPublishedUntil")
        )
    };
    let mut line = format!(
        "signing key rotated: new key {} ({}); {old}",
        text(answer, "newKid"),
        text(answer, "algorithm")
    );
    if answer["volumes"].as_array().is_some_and(|v| !v.is_empty()) {
        line.push_str(&format!("; rotating now: {}", volumes(answer)));
    }
    line.push('\n');
    line
}

pub fn render_revoke(answer: &Value) -> String {
    format!(
        "pod {}/{} (uid {}) deleted: its tokens no longer authenticate\n",
        text(&answer["metadata"], "namespace"),
        text(&answer["metadata"], "name"),
        text(&answer["metadata"], "uid")
    )
}

pub fn render_outage(answer: &Value) -> String {
    match answer.get("endedAt").and_then(Value::as_str) {
        Some(ended) => format!("outage {} ended at {ended}\n", text(answer, "mode")),
        None => format!(
            "simulated outage: {} for {} s, until {}\n",
            text(answer, "mode"),
            answer["durationSeconds"],
            text(answer, "endsAt")
        ),
    }
}

pub fn render_lifetime(answer: &Value) -> String {
    format!(
        "token lifetime: {} (was {}); rotating now: {}\n",
        lifetime(answer.get("expirationSeconds")),
        lifetime(answer.get("previousExpirationSeconds")),
        volumes(answer)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_say_what_happened() {
        let rotation = json!({"gracePeriodSeconds": 0, "oldKid": "old", "newKid": "new",
            "algorithm": "ES256", "oldKeyPublishedUntil": "2030-01-01T00:00:00Z", "volumes": []});
        assert_eq!(
            render_key_rotation(&rotation),
            "signing key rotated: new key new (ES256); old key old dropped at once\n"
        );
        let lifetime = json!({"expirationSeconds": 5, "previousExpirationSeconds": null,
            "volumes": [{"namespace": "default", "pod": "p", "volume": "v", "dir": "/d"}]});
        assert_eq!(
            render_lifetime(&lifetime),
            "token lifetime: 5 s (was each volume's own); rotating now: default/p volume v (/d)\n"
        );
        let status = json!({
            "signingKeys": {"current": {"kid": "k2", "algorithm": "RS256"},
                "retired": [{"kid": "k1", "algorithm": "ES256", "published": false,
                             "publishedUntil": "T"}], "extra": []},
            "outage": null,
        });
        let text = render_status(&status);
        assert!(text.contains("signing key:  k2 (RS256)"), "{text}");
        assert!(
            text.contains("retired key:  k1 (ES256), dropped at T"),
            "{text}"
        );
        assert!(text.contains("outage:       none"), "{text}");
        assert!(text.contains("projector:    none (serve)"), "{text}");
    }

    #[test]
    fn names_in_paths_are_kubernetes_names() {
        assert!(path_segment("emulated-pod").is_ok());
        assert!(path_segment("a.b-1").is_ok());
        assert!(path_segment("").is_err());
        assert!(path_segment("..").is_err());
        assert!(path_segment("../x").is_err());
        assert!(path_segment("a/b").is_err());
    }
}
