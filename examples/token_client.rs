//! An in-cluster API client, the way an application uses its projected service account token:
//! it finds the API server through `KUBERNETES_SERVICE_HOST`/`_PORT`, trusts `ca.crt`, and asks
//! "who am I?" (`SelfSubjectReview`) every `--interval-ms`.
//!
//! `--reload per-request` (the default) reads `token` before every request, as a client should:
//! the kubelet (or `projected-token emulate`) replaces it well before it expires. `--reload never`
//! reads it once at start, the bug `projected-token check` exists to catch. `--reload periodic`
//! re-reads it every `--reload-period-ms` (default 60 s), as the official clients do (client-go
//! about once a minute): correct, but its reload delays reach the period.
//!
//! Run against the emulator:
//! ```sh
//! projected-token emulate --dir ./sa --expiration-seconds 3 &
//! KUBERNETES_SERVICE_HOST=127.0.0.1 KUBERNETES_SERVICE_PORT=6443 \
//!     cargo run --example token_client -- --credentials-dir ./sa --duration-secs 30
//! ```
//! Exit status: 0 when every request succeeded, 1 when one failed, 2 for bad configuration.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};

#[derive(Debug, Parser)]
#[command(about = "An in-cluster client that asks the API server who it is, again and again")]
struct Args {
    /// When to read the token file.
    #[arg(long, env = "TOKEN_CLIENT_RELOAD", value_enum, default_value_t = Reload::PerRequest)]
    reload: Reload,
    /// Where the pod's service account files are (token, ca.crt).
    #[arg(
        long,
        env = "TOKEN_CLIENT_CREDENTIALS_DIR",
        default_value = "/var/run/secrets/kubernetes.io/serviceaccount"
    )]
    credentials_dir: PathBuf,
    /// Pause between requests.
    #[arg(long, env = "TOKEN_CLIENT_INTERVAL_MS", default_value_t = 500)]
    interval_ms: u64,
    /// With `--reload periodic`: how often to re-read the token file.
    #[arg(long, env = "TOKEN_CLIENT_RELOAD_PERIOD_MS", default_value_t = 60_000)]
    reload_period_ms: u64,
    /// Stop after this many seconds (0: run until SIGTERM or SIGINT).
    #[arg(long, env = "TOKEN_CLIENT_DURATION_SECS", default_value_t = 0)]
    duration_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Reload {
    /// Read the token before every request (correct).
    PerRequest,
    /// Read the token once at start (the bug).
    Never,
    /// Re-read the token every `--reload-period-ms`, as the official clients do.
    Periodic,
}

const REVIEW: &str =
    r#"{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview","metadata":{}}"#;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    let client = match Client::in_cluster(&args) {
        Ok(client) => client,
        Err(message) => {
            eprintln!("token-client: {message}");
            return ExitCode::from(2);
        }
    };
    let (mut ok, mut failed) = (0u64, 0u64);
    let stop = stop_signal(args.duration_secs);
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(Duration::from_millis(args.interval_ms.max(1)));
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tick.tick() => {}
        }
        match client.who_am_i().await {
            Ok(user) => {
                ok += 1;
                say(&format!("ok {user}"));
            }
            Err(message) => {
                failed += 1;
                say(&format!("failed: {message}"));
            }
        }
    }
    say(&format!(
        "token-client: {ok} requests succeeded, {failed} failed"
    ));
    if failed == 0 && ok > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// One line on standard output; a closed pipe (e.g. `| head`) is not worth a crash.
fn say(line: &str) {
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

/// Completes after `seconds` (never when 0), or at SIGTERM/SIGINT (a container's stop).
async fn stop_signal(seconds: u64) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    let timer = async {
        if seconds == 0 {
            std::future::pending::<()>().await
        } else {
            tokio::time::sleep(Duration::from_secs(seconds)).await
        }
    };
    tokio::select! {
        _ = timer => {}
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

struct Client {
    http: reqwest::Client,
    url: String,
    token_path: PathBuf,
    reload: Reload,
    reload_period: Duration,
    /// The token last read and when (`--reload never` and `periodic`).
    cached: std::sync::Mutex<Option<(String, tokio::time::Instant)>>,
}

impl Client {
    fn in_cluster(args: &Args) -> Result<Self, String> {
        let var = |name: &str| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| format!("{name} is not set: run in a pod, or set it to the API server's host and port"))
        };
        let (host, port) = (
            var("KUBERNETES_SERVICE_HOST")?,
            var("KUBERNETES_SERVICE_PORT")?,
        );
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        let ca_path = args.credentials_dir.join("ca.crt");
        let ca = std::fs::read(&ca_path)
            .map_err(|e| format!("cannot read {}: {e}", ca_path.display()))?;
        let ca = reqwest::Certificate::from_pem(&ca)
            .map_err(|e| format!("{}: {e}", ca_path.display()))?;
        let http = reqwest::Client::builder()
            .tls_certs_only([ca])
            .timeout(Duration::from_secs(10))
            .user_agent(match args.reload {
                Reload::PerRequest => "token-client/per-request",
                Reload::Never => "token-client/read-once",
                Reload::Periodic => "token-client/periodic",
            })
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        let token_path = args.credentials_dir.join("token");
        let cached = match args.reload {
            Reload::PerRequest => None,
            Reload::Never | Reload::Periodic => {
                Some((read_token(&token_path)?, tokio::time::Instant::now()))
            }
        };
        Ok(Self {
            http,
            url: format!("https://{host}:{port}/apis/authentication.k8s.io/v1/selfsubjectreviews"),
            token_path,
            reload: args.reload,
            reload_period: Duration::from_millis(args.reload_period_ms.max(1)),
            cached: std::sync::Mutex::new(cached),
        })
    }

    /// The token to send, read from the file as `--reload` says.
    fn token(&self) -> Result<String, String> {
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        let now = tokio::time::Instant::now();
        match (self.reload, cached.as_ref()) {
            (Reload::Never, Some((token, _))) => return Ok(token.clone()),
            (Reload::Periodic, Some((token, read_at)))
                if now.duration_since(*read_at) < self.reload_period =>
            {
                return Ok(token.clone())
            }
            _ => {}
        }
        let token = read_token(&self.token_path)?;
        if self.reload != Reload::PerRequest {
            *cached = Some((token.clone(), now));
        }
        Ok(token)
    }

    /// One SelfSubjectReview: the username the server sees, or why it failed.
    async fn who_am_i(&self) -> Result<String, String> {
        let token = self.token()?;
        let response = self
            .http
            .post(&self.url)
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(REVIEW)
            .send()
            .await
            .map_err(|e| format!("POST {}: {e}", self.url))?;
        let status = response.status();
        let body: serde_json::Value = response
            .json()
            .await
            .map_err(|e| format!("{status}: unreadable answer: {e}"))?;
        if !status.is_success() {
            return Err(format!(
                "{status}: {}",
                body["message"].as_str().unwrap_or("")
            ));
        }
        Ok(body["status"]["userInfo"]["username"]
            .as_str()
            .unwrap_or("<no username>")
            .to_owned())
    }
}

fn read_token(path: &std::path::Path) -> Result<String, String> {
    let token = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(token.trim().to_owned())
}
