//! `check`: fetch the emulator's token usage report and judge every client against the bounds.
//!
//! Exit codes: 0 when every client is within the bounds; 1 when one is not (after printing the
//! offenders), or when the report cannot be fetched or read; 2 for usage errors: an unreadable
//! `--ca` or `--token-file`, or a token the server refuses (401/403). Bad `--server` and
//! `--max-reload-delay` values are refused by the argument parser, also with 2.

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use reqwest::header::{HeaderValue, AUTHORIZATION};
use reqwest::StatusCode;
use serde::Serialize;

use super::{error_chain, read_ca, CommandError};
use crate::apiserver::ledger::{evaluate, BrokenBound, CheckBounds, Offender, UsageReport};
use crate::cli::{CheckArgs, OutputFormat};

/// Where the emulator serves the report, relative to the server's base URL.
pub const USAGE_REPORT_PATH: &str = "debug/token-usage";
/// Time limit of the whole request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A report of thousands of clients is a few MiB; the cap keeps a wrong server from filling memory.
const MAX_REPORT_BYTES: usize = 64 * 1024 * 1024;
/// A token is a few KiB; anything much larger is the wrong file.
const MAX_TOKEN_FILE_BYTES: u64 = 1024 * 1024;

pub async fn run(args: &CheckArgs) -> Result<(), CommandError> {
    let url = usage_report_url(&args.server)?;
    let ca = read_ca(
        "--ca",
        &args.ca,
        "the server's certificate (the emulator's ca.crt)",
    )
    .await?;
    let authorization = read_bearer_token(&args.token_file).await?;
    let report = fetch_report(&url, ca, authorization, &args.token_file).await?;

    let bounds = CheckBounds {
        max_stale_uses: args.max_stale,
        max_reload_delay: args.max_reload_delay,
    };
    let offenders = evaluate(&report, &bounds);
    let output = match args.output {
        OutputFormat::Text => render_text(&report, &bounds, &offenders),
        OutputFormat::Json => render_json(&report, &bounds, &offenders)?,
    };
    std::io::stdout()
        .lock()
        .write_all(output.as_bytes())
        .map_err(|e| CommandError::failure(format!("cannot write to standard output: {e}")))?;

    if offenders.is_empty() {
        Ok(())
    } else {
        Err(CommandError::failure(format!(
            "{} of {} clients broke the bounds",
            offenders.len(),
            report.clients.len()
        )))
    }
}

/// `<server>/debug/token-usage`, keeping any path prefix of the server URL.
pub fn usage_report_url(server: &reqwest::Url) -> Result<reqwest::Url, CommandError> {
    let mut base = server.clone();
    if !base.path().ends_with('/') {
        let path = format!("{}/", base.path());
        base.set_path(&path);
    }
    base.join(USAGE_REPORT_PATH)
        .map_err(|e| CommandError::usage(format!("--server {server}: {e}")))
}

/// `Bearer <token>` from the token file, marked sensitive so it is never logged. Error messages
/// name the file, never its content.
pub async fn read_bearer_token(path: &Path) -> Result<HeaderValue, CommandError> {
    let what = format!("--token-file {}", path.display());
    let metadata = tokio::fs::metadata(path)
        .await
        .map_err(|e| CommandError::usage(format!("cannot read {what}: {e}")))?;
    if metadata.len() > MAX_TOKEN_FILE_BYTES {
        return Err(CommandError::usage(format!(
            "{what} is larger than {MAX_TOKEN_FILE_BYTES} bytes: not a token"
        )));
    }
    let text = tokio::fs::read_to_string(path)
        .await
        .map_err(|e| CommandError::usage(format!("cannot read {what}: {e}")))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(CommandError::usage(format!("{what} is empty")));
    }
    let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
        CommandError::usage(format!(
            "{what} holds characters an HTTP header cannot carry: not a token"
        ))
    })?;
    value.set_sensitive(true);
    Ok(value)
}

async fn fetch_report(
    url: &reqwest::Url,
    ca: reqwest::Certificate,
    authorization: HeaderValue,
    token_file: &Path,
) -> Result<UsageReport, CommandError> {
    let client = reqwest::Client::builder()
        .tls_certs_only([ca])
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .build()
        .map_err(|e| CommandError::failure(format!("cannot set up HTTPS: {}", error_chain(&e))))?;
    let fetch_error = |e: reqwest::Error| {
        CommandError::failure(format!("cannot fetch {url}: {}", error_chain(&e)))
    };
    let mut response = client
        .get(url.clone())
        .header(AUTHORIZATION, authorization)
        .send()
        .await
        .map_err(fetch_error)?;
    let status = response.status();
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        return Err(CommandError::usage(format!(
            "{url} answered HTTP {status}: the server does not accept the token in --token-file \
             {}; give the emulator's admin token",
            token_file.display()
        )));
    }
    if !status.is_success() {
        return Err(CommandError::failure(format!(
            "{url} answered HTTP {status}"
        )));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(fetch_error)? {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_REPORT_BYTES {
            return Err(CommandError::failure(format!(
                "the report from {url} is larger than {MAX_REPORT_BYTES} bytes"
            )));
        }
    }
    serde_json::from_slice(&body).map_err(|e| {
        CommandError::failure(format!("{url} did not answer a token usage report: {e}"))
    })
}

/// The offenders as a table, or one line saying all clients are within the bounds.
pub fn render_text(report: &UsageReport, bounds: &CheckBounds, offenders: &[Offender]) -> String {
    let bounds_text = format!(
        "max stale uses {}, max reload delay {}",
        bounds.max_stale_uses,
        format_seconds(bounds.max_reload_delay.as_secs_f64())
    );
    if offenders.is_empty() {
        return format!(
            "all {} clients within bounds ({bounds_text})\n",
            report.clients.len()
        );
    }
    let header = [
        "SUBJECT",
        "POD",
        "USER AGENT",
        "STALE",
        "SUPERSEDED",
        "WORST DELAY",
        "BROKEN",
    ]
    .map(str::to_owned);
    let rows: Vec<[String; 7]> = offenders
        .iter()
        .map(|offender| {
            [
                offender.subject.clone(),
                offender.pod.clone().unwrap_or_else(|| "-".to_owned()),
                offender
                    .user_agent
                    .clone()
                    .unwrap_or_else(|| "-".to_owned()),
                offender.stale_uses.to_string(),
                offender.superseded_uses.to_string(),
                offender
                    .worst_reload_delay_seconds
                    .map_or_else(|| "-".to_owned(), format_seconds),
                offender
                    .broken
                    .iter()
                    .map(|bound| match bound {
                        BrokenBound::StaleUses { .. } => "stale uses",
                        BrokenBound::ReloadDelay { .. } => "reload delay",
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
            ]
        })
        .collect();
    let mut widths = header.clone().map(|cell| cell.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = format!(
        "{} of {} clients broke the bounds ({bounds_text}):\n",
        offenders.len(),
        report.clients.len()
    );
    for row in std::iter::once(&header).chain(&rows) {
        let line = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect::<Vec<_>>()
            .join("  ");
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

#[derive(Serialize)]
struct JsonVerdict<'a> {
    within_bounds: bool,
    clients: usize,
    max_stale_uses: u64,
    max_reload_delay_seconds: f64,
    offenders: &'a [Offender],
}

fn render_json(
    report: &UsageReport,
    bounds: &CheckBounds,
    offenders: &[Offender],
) -> Result<String, CommandError> {
    let verdict = JsonVerdict {
        within_bounds: offenders.is_empty(),
        clients: report.clients.len(),
        max_stale_uses: bounds.max_stale_uses,
        max_reload_delay_seconds: bounds.max_reload_delay.as_secs_f64(),
        offenders,
    };
    let mut json = serde_json::to_string_pretty(&verdict)
        .map_err(|e| CommandError::failure(format!("cannot serialise the verdict: {e}")))?;
    json.push('\n');
    Ok(json)
}

/// `5s`, `1.5s`, `0.25s`: at most millisecond precision, no trailing zeros.
fn format_seconds(seconds: f64) -> String {
    let text = format!("{seconds:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}s")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::ledger::{ClientUsage, UsageTotals, UseCounts};
    use jiff::{SignedDuration, Timestamp};

    fn client(user_agent: Option<&str>, stale: u64, worst_delay: Option<f64>) -> ClientUsage {
        ClientUsage {
            subject: "system:serviceaccount:default:app".to_owned(),
            namespace: "default".to_owned(),
            service_account: "app".to_owned(),
            pod: Some("app-0".to_owned()),
            pod_uid: None,
            user_agent: user_agent.map(str::to_owned),
            counts: UseCounts {
                uses: 5,
                stale,
                superseded: u64::from(worst_delay.is_some()),
                ..UseCounts::default()
            },
            first_use: Timestamp::UNIX_EPOCH,
            last_use: Timestamp::UNIX_EPOCH,
            worst_reload_delay_seconds: worst_delay,
            worst_stale_seconds: None,
            distinct_tokens: 1,
            recent_uses: vec![],
        }
    }

    fn report(clients: Vec<ClientUsage>) -> UsageReport {
        UsageReport {
            generated_at: Timestamp::UNIX_EPOCH,
            clients,
            totals: UsageTotals::default(),
        }
    }

    const BOUNDS: CheckBounds = CheckBounds {
        max_stale_uses: 0,
        max_reload_delay: SignedDuration::from_secs(5),
    };

    #[test]
    fn text_when_all_within_bounds() {
        let report = report(vec![client(Some("a"), 0, Some(1.0)), client(None, 0, None)]);
        assert_eq!(
            render_text(&report, &BOUNDS, &evaluate(&report, &BOUNDS)),
            "all 2 clients within bounds (max stale uses 0, max reload delay 5s)\n"
        );
    }

    #[test]
    fn text_table_of_offenders() {
        let report = report(vec![
            client(Some("fine/1.0"), 0, None),
            client(Some("kubectl/v1.37.0 (linux/amd64)"), 3, Some(90.5)),
            client(None, 0, Some(6.0)),
        ]);
        let text = render_text(&report, &BOUNDS, &evaluate(&report, &BOUNDS));
        assert_eq!(
            text,
            "2 of 3 clients broke the bounds (max stale uses 0, max reload delay 5s):\n\
             SUBJECT                            POD    USER AGENT                     STALE  SUPERSEDED  WORST DELAY  BROKEN\n\
             system:serviceaccount:default:app  app-0  kubectl/v1.37.0 (linux/amd64)  3      1           90.5s        stale uses, reload delay\n\
             system:serviceaccount:default:app  app-0  -                              0      1           6s           reload delay\n"
        );
    }

    #[test]
    fn report_url_keeps_a_path_prefix() {
        let url = |s: &str| reqwest::Url::parse(s).unwrap();
        assert_eq!(
            usage_report_url(&url("https://127.0.0.1:6443"))
                .unwrap()
                .as_str(),
            "https://127.0.0.1:6443/debug/token-usage"
        );
        assert_eq!(
            usage_report_url(&url("https://host/emulator"))
                .unwrap()
                .as_str(),
            "https://host/emulator/debug/token-usage"
        );
        assert_eq!(
            usage_report_url(&url("https://host/emulator/"))
                .unwrap()
                .as_str(),
            "https://host/emulator/debug/token-usage"
        );
    }

    #[test]
    fn seconds_format() {
        assert_eq!(format_seconds(5.0), "5s");
        assert_eq!(format_seconds(1.5), "1.5s");
        assert_eq!(format_seconds(0.0), "0s");
        assert_eq!(format_seconds(0.25), "0.25s");
    }
}
