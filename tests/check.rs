//! `check` against a small HTTPS server of the test's own that serves a canned usage report:
//! exit codes 0 / 1 / 2, the offender table, JSON output, nothing observed, rejected uses,
//! durations, and trust in the given CA only.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use assert_cmd::Command;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use axum_server::tls_rustls::RustlsConfig;
use jiff::Timestamp;
use projected_token::apiserver::classify::TokenUse;
use projected_token::apiserver::ledger::{Ledger, Rotation};
use projected_token::apiserver::usage::{Rejection, UsageReport};
use projected_token::tls::CertificateAuthority;
use serde_json::Value;

const ADMIN_TOKEN: &str = "admin-token-for-tests";
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// An HTTPS server on 127.0.0.1 serving one report; stops when dropped (with its runtime).
struct ReportServer {
    url: String,
    ca_file: PathBuf,
    token_file: PathBuf,
    dir: tempfile::TempDir,
    _runtime: tokio::runtime::Runtime,
}

struct ServerState {
    report_json: String,
    expected_authorization: String,
}

async fn token_usage(State(state): State<Arc<ServerState>>, headers: HeaderMap) -> Response {
    let authorized = headers
        .get(header::AUTHORIZATION)
        .is_some_and(|value| value.as_bytes() == state.expected_authorization.as_bytes());
    if !authorized {
        return (StatusCode::UNAUTHORIZED, "Unauthorized").into_response();
    }
    (
        [(header::CONTENT_TYPE, "application/json")],
        state.report_json.clone(),
    )
        .into_response()
}

impl ReportServer {
    fn start(report: &UsageReport) -> Self {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let ca = CertificateAuthority::generate("check test CA").expect("CA");
        let (cert_pem, key_pem) = ca
            .serving_certificate(&["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("serving certificate");
        let dir = tempfile::tempdir().expect("temp dir");
        let ca_file = dir.path().join("ca.crt");
        std::fs::write(&ca_file, ca.cert_pem()).expect("write ca.crt");
        let token_file = dir.path().join("admin-token");
        // A trailing newline, as editors leave it: check must trim it.
        std::fs::write(&token_file, format!("{ADMIN_TOKEN}\n")).expect("write token");

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("address").port();
        let state = Arc::new(ServerState {
            report_json: serde_json::to_string(report).expect("report JSON"),
            expected_authorization: format!("Bearer {ADMIN_TOKEN}"),
        });
        let app = Router::new()
            .route("/debug/token-usage", get(token_usage))
            .with_state(state);
        runtime.block_on(async {
            let config = RustlsConfig::from_pem(cert_pem.into_bytes(), key_pem.into_bytes())
                .await
                .expect("TLS config");
            let server = axum_server::from_tcp_rustls(listener, config).expect("server");
            tokio::spawn(server.serve(app.into_make_service()));
        });
        Self {
            url: format!("https://127.0.0.1:{port}"),
            ca_file,
            token_file,
            dir,
            _runtime: runtime,
        }
    }

    /// `check` with this server's URL, CA and admin token.
    fn check(&self) -> Command {
        self.check_with(&[])
    }

    /// `check` with other flag values: those of `--server`, `--ca` and `--token-file` replace this
    /// server's (clap refuses a flag given twice), others are added.
    fn check_with(&self, flags: &[(&str, &str)]) -> Command {
        let mut cmd = Command::cargo_bin("projected-token").expect("binary");
        cmd.timeout(COMMAND_TIMEOUT)
            .env_remove("PROJECTED_TOKEN_MAX_STALE")
            .env_remove("PROJECTED_TOKEN_MAX_RELOAD_DELAY")
            .env_remove("PROJECTED_TOKEN_MAX_REJECTED")
            .env_remove("PROJECTED_TOKEN_ALLOW_NO_CLIENTS")
            .env_remove("PROJECTED_TOKEN_OUTPUT")
            .arg("check");
        let defaults = [
            ("--server", self.url.clone()),
            ("--ca", path_arg(&self.ca_file)),
            ("--token-file", path_arg(&self.token_file)),
        ];
        for (flag, default) in &defaults {
            let value = flags
                .iter()
                .find(|(name, _)| name == flag)
                .map_or(default.as_str(), |(_, value)| value);
            cmd.arg(format!("{flag}={value}"));
        }
        for (flag, value) in flags {
            if !defaults.iter().any(|(name, _)| name == flag) {
                // `--flag=value`, so a value starting with `-` stays a value.
                cmd.arg(format!("{flag}={value}"));
            }
        }
        cmd
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + seconds).expect("timestamp")
}

fn token_use(at: Timestamp, jti: &str, user_agent: &str) -> TokenUse {
    TokenUse {
        at,
        subject: "system:serviceaccount:default:app".to_owned(),
        namespace: "default".to_owned(),
        service_account: "app".to_owned(),
        pod: Some("app-0".to_owned()),
        pod_uid: Some("0d9f8c1e-4b4a-4f5e-9a31-6c2a0e7d1b55".to_owned()),
        jti: Some(jti.to_owned()),
        warn_after: Some(at_warn()),
        issued_at: None,
        legacy: false,
        rejected: None,
        user_agent: Some(user_agent.to_owned()),
    }
}

fn at_warn() -> Timestamp {
    at(3607)
}

/// One client-go client that reloads within 2 s; with `offenders`, also a client that keeps a
/// replaced token for 90 s and a kubectl that uses a token past its warnafter three times.
fn canned_report(offenders: bool) -> UsageReport {
    let mut ledger = Ledger::new();
    ledger.record_rotation(Rotation {
        at: at(100),
        namespace: "default".to_owned(),
        pod: "app-0".to_owned(),
        service_account: "app".to_owned(),
        volume: "kube-api-access-x2b7k".to_owned(),
        path: "token".to_owned(),
        old_jti: Some("first".to_owned()),
        new_jti: Some("second".to_owned()),
    });
    ledger.record_use(token_use(at(50), "first", "client-go/v1.37.0"));
    ledger.record_use(token_use(at(102), "first", "client-go/v1.37.0"));
    ledger.record_use(token_use(at(103), "second", "client-go/v1.37.0"));
    ledger.record_use(token_use(at(104), "second", "fresh-reader/2.0"));
    if offenders {
        ledger.record_use(token_use(at(190), "first", "reads-once/1.0"));
        for seconds in [3610, 3620, 3630] {
            let stale_use = token_use(at(seconds), "kubectl-token", "kubectl/v1.37.0");
            ledger.record_use(stale_use);
        }
    }
    ledger.report(at(4000))
}

fn stdout_of(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr_of(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn all_clients_within_bounds_exit_0() {
    let server = ReportServer::start(&canned_report(false));
    let output = server.check().output().expect("run check");
    assert_eq!(
        output.status.code(),
        Some(0),
        "stderr: {}",
        stderr_of(&output)
    );
    assert_eq!(
        stdout_of(&output),
        "all 2 clients within bounds (max stale uses 0, max rejected uses 0, max reload delay 5s)\n"
    );
}

#[test]
fn offenders_are_tabled_and_exit_1() {
    let server = ReportServer::start(&canned_report(true));
    let output = server.check().output().expect("run check");
    assert_eq!(
        output.status.code(),
        Some(1),
        "stderr: {}",
        stderr_of(&output)
    );
    let stdout = stdout_of(&output);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[0],
        "2 of 4 clients broke the bounds (max stale uses 0, max rejected uses 0, max reload delay 5s):"
    );
    let columns = |line: &str| -> Vec<String> {
        line.split("  ")
            .map(str::trim)
            .filter(|cell| !cell.is_empty())
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(
        columns(lines[1]),
        [
            "SUBJECT",
            "POD",
            "USER AGENT",
            "STALE",
            "SUPERSEDED",
            "REJECTED",
            "WORST DELAY",
            "BROKEN"
        ]
    );
    assert_eq!(
        columns(lines[2]),
        [
            "system:serviceaccount:default:app",
            "app-0",
            "kubectl/v1.37.0",
            "3",
            "0",
            "0",
            "-",
            "stale uses"
        ]
    );
    assert_eq!(
        columns(lines[3]),
        [
            "system:serviceaccount:default:app",
            "app-0",
            "reads-once/1.0",
            "0",
            "1",
            "0",
            "90s",
            "reload delay"
        ]
    );
    // Every offender gets advice: the stale one what stale means, the read-once one its kind.
    assert_eq!(lines.len(), 6, "{stdout}");
    assert!(
        lines[4].starts_with(
            "advice for system:serviceaccount:default:app (app-0, kubectl/v1.37.0): it used tokens past their warnafter 3 times, up to 23s after it"
        ),
        "{stdout}"
    );
    assert!(lines[4].contains("--max-stale 3"), "{stdout}");
    assert!(
        lines[5].starts_with(
            "advice for system:serviceaccount:default:app (app-0, reads-once/1.0): it never moved to a newer token"
        ),
        "{stdout}"
    );
    assert!(
        stderr_of(&output).contains("2 of 4 clients broke the bounds"),
        "{}",
        stderr_of(&output)
    );
}

#[test]
fn looser_bounds_from_flags_and_environment_exit_0() {
    let server = ReportServer::start(&canned_report(true));
    let output = server
        .check_with(&[("--max-stale", "3")])
        .env("PROJECTED_TOKEN_MAX_RELOAD_DELAY", "1m30s")
        .output()
        .expect("run check");
    assert_eq!(
        output.status.code(),
        Some(0),
        "stderr: {}",
        stderr_of(&output)
    );
    assert_eq!(
        stdout_of(&output),
        "all 4 clients within bounds (max stale uses 3, max rejected uses 0, max reload delay 90s)\n"
    );
}

/// A client that broke only the stale bound gets advice too (it used to get none).
#[test]
fn stale_only_offender_gets_advice() {
    let mut ledger = Ledger::new();
    for seconds in [3610, 3620, 3630] {
        ledger.record_use(token_use(at(seconds), "kubectl-token", "kubectl/v1.37.0"));
    }
    let server = ReportServer::start(&ledger.report(at(4000)));
    let output = server.check().output().expect("run check");
    let stdout = stdout_of(&output);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    let advice = stdout
        .lines()
        .find(|l| {
            l.starts_with("advice for system:serviceaccount:default:app (app-0, kubectl/v1.37.0)")
        })
        .unwrap_or_else(|| panic!("no advice line: {stdout}"));
    assert!(advice.contains("past their warnafter 3 times"), "{advice}");
    assert!(advice.contains("--max-stale 3"), "{advice}");
}

/// A bare number is seconds, as everywhere: `--max-reload-delay 5` is `5s` (it used to be
/// refused), `90` is `90s`, and `500ms` works too.
#[test]
fn reload_delay_bound_reads_bare_seconds_and_units_alike() {
    let server = ReportServer::start(&canned_report(true));
    let run = |value: &str| {
        let output = server
            .check_with(&[("--max-reload-delay", value)])
            .output()
            .expect("run check");
        (output.status.code(), stdout_of(&output), stderr_of(&output))
    };
    let (code, bare, stderr) = run("5");
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!((code, bare.clone()), {
        let (code, text, _) = run("5s");
        (code, text)
    });
    assert!(bare.contains("max reload delay 5s"), "{bare}");
    let (code, text, stderr) = run("90");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(text.contains("1 of 4 clients broke the bounds"), "{text}");
    assert!(text.contains("max reload delay 90s"), "{text}");
    let (_, text, _) = run("500ms");
    assert!(text.contains("max reload delay 0.5s"), "{text}");
}

/// Nothing observed is not a pass: no client used a token, so `check` fails and says what to
/// check (the URL, the CA, the token path), unless `--allow-no-clients`.
#[test]
fn no_clients_exit_1_with_what_to_check_unless_allowed() {
    let server = ReportServer::start(&Ledger::new().report(at(0)));
    let output = server.check().output().expect("run check");
    let stdout = stdout_of(&output);
    let stderr = stderr_of(&output);
    assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
    assert!(!stdout.contains("within bounds"), "{stdout}");
    assert!(
        stderr.contains(&format!(
            "no client used a service account token of {}:",
            server.url
        )),
        "{stderr}"
    );
    let port = server.url.rsplit(':').next().expect("port");
    for needle in [
        format!("KUBERNETES_SERVICE_PORT={port}"),
        path_arg(&server.ca_file),
        "the token path".to_owned(),
        "--allow-no-clients".to_owned(),
    ] {
        assert!(stdout.contains(&needle), "{needle}: {stdout}");
    }

    let json = server
        .check_with(&[("--output", "json")])
        .output()
        .expect("run check");
    assert_eq!(json.status.code(), Some(1));
    let verdict: Value = serde_json::from_slice(&json.stdout).expect("JSON verdict");
    assert_eq!(verdict["within_bounds"], false);
    assert_eq!(verdict["clients"], 0);
    assert_eq!(verdict["nothing_observed"]["allowed"], false);

    let allowed = server
        .check()
        .arg("--allow-no-clients")
        .output()
        .expect("run check");
    assert_eq!(allowed.status.code(), Some(0), "{}", stderr_of(&allowed));
    assert!(
        stdout_of(&allowed).contains("passing because of --allow-no-clients"),
        "{}",
        stdout_of(&allowed)
    );
    let from_env = server
        .check()
        .env("PROJECTED_TOKEN_ALLOW_NO_CLIENTS", "true")
        .output()
        .expect("run check");
    assert_eq!(from_env.status.code(), Some(0), "{}", stderr_of(&from_env));
}

/// Uses the emulator rejected count against `--max-rejected` (default 0), with their reasons.
#[test]
fn rejected_uses_fail_with_their_reasons_unless_allowed() {
    let mut ledger = Ledger::new();
    ledger.record_use(token_use(at(1), "kept", "keeps-old-key/1.0"));
    for second in 2..82 {
        ledger.record_use(TokenUse {
            rejected: Some(Rejection::UnknownKey),
            ..token_use(at(second), "kept", "keeps-old-key/1.0")
        });
    }
    ledger.record_use(token_use(at(3), "fresh", "fine/1.0"));
    let server = ReportServer::start(&ledger.report(at(100)));
    let output = server.check().output().expect("run check");
    let stdout = stdout_of(&output);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("1 of 2 clients broke the bounds"),
        "{stdout}"
    );
    let row = stdout
        .lines()
        .find(|l| l.contains("keeps-old-key/1.0") && !l.starts_with("advice"))
        .expect("row");
    assert!(row.contains("80 unknown key"), "{row}");
    assert!(row.ends_with("rejected uses"), "{row}");
    assert!(stdout.contains("advice for"), "{stdout}");

    let allowed = server
        .check_with(&[("--max-rejected", "80")])
        .output()
        .expect("run check");
    assert_eq!(allowed.status.code(), Some(0), "{}", stdout_of(&allowed));
}

#[test]
fn json_output() {
    let server = ReportServer::start(&canned_report(true));
    let output = server
        .check_with(&[("--output", "json"), ("--max-reload-delay", "2m")])
        .output()
        .expect("run check");
    assert_eq!(
        output.status.code(),
        Some(1),
        "stderr: {}",
        stderr_of(&output)
    );
    let verdict: Value = serde_json::from_slice(&output.stdout).expect("JSON verdict");
    assert_eq!(verdict["within_bounds"], false);
    assert_eq!(verdict["clients"], 4);
    assert_eq!(verdict["max_reload_delay_seconds"], 120.0);
    let offenders = verdict["offenders"].as_array().expect("offenders");
    assert_eq!(offenders.len(), 1);
    assert_eq!(offenders[0]["user_agent"], "kubectl/v1.37.0");
    assert_eq!(offenders[0]["broken"][0]["bound"], "stale_uses");
}

#[test]
fn usage_errors_exit_2_and_name_the_flag() {
    let server = ReportServer::start(&canned_report(false));

    let wrong_token = server.path("wrong-token");
    std::fs::write(&wrong_token, "not-the-admin-token").expect("write");
    let not_a_ca = server.path("not-a-ca.crt");
    std::fs::write(&not_a_ca, "hello").expect("write");
    let missing = server.path("missing");

    let wrong_token = path_arg(&wrong_token);
    let not_a_ca = path_arg(&not_a_ca);
    let missing = path_arg(&missing);
    let plain_http = server.url.replace("https", "http");
    // (case, flag, value): the flag named in the message is the one given the bad value.
    let cases = [
        (
            "token the server refuses",
            "--token-file",
            wrong_token.as_str(),
        ),
        ("missing token file", "--token-file", &missing),
        ("missing CA file", "--ca", &missing),
        ("CA file without a certificate", "--ca", &not_a_ca),
        ("plain http", "--server", &plain_http),
        ("not a URL", "--server", "127.0.0.1:6443"),
        ("bad duration", "--max-reload-delay", "soon"),
        ("negative duration", "--max-reload-delay", "-5s"),
    ];
    for (name, flag, value) in cases {
        let output = server
            .check_with(&[(flag, value)])
            .output()
            .expect("run check");
        let stderr = stderr_of(&output);
        assert_eq!(output.status.code(), Some(2), "{name}: {stderr}");
        assert!(stderr.contains(flag), "{name}: {stderr}");
        for token in [ADMIN_TOKEN, "not-the-admin-token"] {
            assert!(!stderr.contains(token), "{name}: token leaked: {stderr}");
        }
        assert!(stdout_of(&output).is_empty(), "{name}");
    }
}

#[test]
fn only_the_given_ca_is_trusted() {
    let server = ReportServer::start(&canned_report(false));
    let other_ca = CertificateAuthority::generate("another CA").expect("CA");
    let other_ca_file = server.path("other-ca.crt");
    std::fs::write(&other_ca_file, other_ca.cert_pem()).expect("write");
    let output = server
        .check_with(&[("--ca", &path_arg(&other_ca_file))])
        .output()
        .expect("run check");
    let stderr = stderr_of(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot fetch"), "{stderr}");
    assert!(stdout_of(&output).is_empty());
}

fn path_arg(path: &Path) -> String {
    path.display().to_string()
}
