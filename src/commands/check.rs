//! `check`: fetch the emulator's token usage report and judge every client against the bounds.
//!
//! Exit codes: 0 when every client is within the bounds; 1 when one is not (after printing the
//! offenders), or when the report cannot be fetched or read; 2 for usage errors: an unreadable
//! `--ca` or `--token-file`, or a token the server refuses (401/403). Bad `--server` and
//! `--max-reload-delay` values are refused by the argument parser, also with 2.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::api_client::ApiClient;
use super::CommandError;
use crate::apiserver::ledger::{evaluate, BrokenBound, CheckBounds, Offender, UsageReport};
use crate::cli::{CheckArgs, OutputFormat};
use crate::report::{html, Advice, ReloadReport};

/// Where the emulator serves the report, relative to the server's base URL.
pub const USAGE_REPORT_PATH: &str = "debug/token-usage";
/// A report of thousands of clients is a few MiB; the cap keeps a wrong server from filling memory.
const MAX_REPORT_BYTES: usize = 64 * 1024 * 1024;

pub async fn run(args: &CheckArgs) -> Result<(), CommandError> {
    // Where the report goes is checked before anything is fetched.
    let report_paths = args.report.as_deref().map(report_paths).transpose()?;
    let api = ApiClient::connect(&args.api).await?;
    let usage: UsageReport = api
        .get(USAGE_REPORT_PATH, "a token usage report", MAX_REPORT_BYTES)
        .await?;

    let bounds = CheckBounds {
        max_stale_uses: args.max_stale,
        max_reload_delay: args.max_reload_delay,
    };
    let offenders = evaluate(&usage, &bounds);
    let report = ReloadReport::new(&usage, &bounds, args.api.server.as_str());
    if let Some(paths) = &report_paths {
        write_report(&report, paths)?;
    }
    let output = match args.api.output {
        OutputFormat::Text => render_text(&usage, &bounds, &offenders, &report),
        OutputFormat::Json => render_json(&usage, &bounds, &offenders, &report)?,
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
            usage.clients.len()
        )))
    }
}

/// Where `--report FILE` writes: `FILE.json` and `FILE.html`, an extension `.json` or `.html`
/// of FILE replaced.
#[derive(Debug, PartialEq, Eq)]
pub struct ReportPaths {
    pub json: PathBuf,
    pub html: PathBuf,
}

pub fn report_paths(file: &Path) -> Result<ReportPaths, CommandError> {
    let Some(name) = file.file_name().and_then(|n| n.to_str()) else {
        return Err(CommandError::usage(format!(
            "--report {}: give a file name (e.g. --report reload-report), not a directory",
            file.display()
        )));
    };
    let stem = [".json", ".html", ".htm"]
        .iter()
        .find_map(|ext| name.strip_suffix(ext))
        .filter(|stem| !stem.is_empty())
        .unwrap_or(name);
    let dir = file.parent().unwrap_or_else(|| Path::new(""));
    let paths = ReportPaths {
        json: dir.join(format!("{stem}.json")),
        html: dir.join(format!("{stem}.html")),
    };
    let parent = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    if !parent.is_dir() {
        return Err(CommandError::usage(format!(
            "--report {}: directory {} does not exist; create it first",
            file.display(),
            parent.display()
        )));
    }
    Ok(paths)
}

/// Writes both files, each whole or not at all (a temporary file in the same directory, renamed).
fn write_report(report: &ReloadReport, paths: &ReportPaths) -> Result<(), CommandError> {
    let mut json = serde_json::to_vec_pretty(report)
        .map_err(|e| CommandError::failure(format!("cannot serialise the report: {e}")))?;
    json.push(b'\n');
    write_whole(&paths.json, &json)?;
    write_whole(&paths.html, html::render(report).as_bytes())
}

fn write_whole(path: &Path, bytes: &[u8]) -> Result<(), CommandError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let error = |e: &dyn std::fmt::Display| {
        CommandError::usage(format!(
            "--report: cannot write {}: {e}; give a writable directory",
            path.display()
        ))
    };
    // A report is for reading: 0644 (less the umask), not the temporary file's 0600.
    let mut file = tempfile::Builder::new()
        .prefix(".report-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .tempfile_in(dir)
        .map_err(|e| error(&e))?;
    file.write_all(bytes).map_err(|e| error(&e))?;
    file.persist(path).map_err(|e| error(&e.error))?;
    Ok(())
}

/// The offenders as a table, or one line saying all clients are within the bounds.
pub fn render_text(
    report: &UsageReport,
    bounds: &CheckBounds,
    offenders: &[Offender],
    reload_report: &ReloadReport,
) -> String {
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
    for offender in offenders {
        if let Some(advice) = reload_report.advice_for(offender) {
            text.push_str(&format!(
                "advice for {} ({}, {}): {}\n",
                offender.subject,
                offender.pod.as_deref().unwrap_or("no pod"),
                offender.user_agent.as_deref().unwrap_or("no user agent"),
                advice.message()
            ));
        }
    }
    text
}

#[derive(Serialize)]
struct JsonVerdict<'a> {
    within_bounds: bool,
    clients: usize,
    max_stale_uses: u64,
    max_reload_delay_seconds: f64,
    offenders: Vec<JsonOffender<'a>>,
}

#[derive(Serialize)]
struct JsonOffender<'a> {
    #[serde(flatten)]
    offender: &'a Offender,
    advice: Option<&'a Advice>,
}

fn render_json(
    report: &UsageReport,
    bounds: &CheckBounds,
    offenders: &[Offender],
    reload_report: &ReloadReport,
) -> Result<String, CommandError> {
    let verdict = JsonVerdict {
        within_bounds: offenders.is_empty(),
        clients: report.clients.len(),
        max_stale_uses: bounds.max_stale_uses,
        max_reload_delay_seconds: bounds.max_reload_delay.as_secs_f64(),
        offenders: offenders
            .iter()
            .map(|offender| JsonOffender {
                offender,
                advice: reload_report.advice_for(offender),
            })
            .collect(),
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
            median_reload_delay_seconds: None,
            tokens: vec![],
            rotations: vec![],
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

    fn text_of(report: &UsageReport) -> String {
        let reload_report = ReloadReport::new(report, &BOUNDS, "https://127.0.0.1:6443");
        render_text(report, &BOUNDS, &evaluate(report, &BOUNDS), &reload_report)
    }

    #[test]
    fn text_when_all_within_bounds() {
        let report = report(vec![client(Some("a"), 0, Some(1.0)), client(None, 0, None)]);
        assert_eq!(
            text_of(&report),
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
        let text = text_of(&report);
        assert_eq!(
            text,
            "2 of 3 clients broke the bounds (max stale uses 0, max reload delay 5s):\n\
             SUBJECT                            POD    USER AGENT                     STALE  SUPERSEDED  WORST DELAY  BROKEN\n\
             system:serviceaccount:default:app  app-0  kubectl/v1.37.0 (linux/amd64)  3      1           90.5s        stale uses, reload delay\n\
             system:serviceaccount:default:app  app-0  -                              0      1           6s           reload delay\n"
        );
    }

    #[test]
    fn report_paths_replace_a_known_extension() {
        let dir = tempfile::tempdir().unwrap();
        let paths = |name: &str| report_paths(&dir.path().join(name)).unwrap();
        for name in ["reload", "reload.json", "reload.html", "reload.htm"] {
            assert_eq!(
                paths(name),
                ReportPaths {
                    json: dir.path().join("reload.json"),
                    html: dir.path().join("reload.html"),
                },
                "{name}"
            );
        }
        assert_eq!(paths("r.v1").json, dir.path().join("r.v1.json"));
        assert_eq!(paths(".json").json, dir.path().join(".json.json"));
        assert!(report_paths(&dir.path().join("missing/reload")).is_err());
        assert!(report_paths(Path::new("/")).is_err());
        assert_eq!(
            report_paths(Path::new("reload")).unwrap().html,
            PathBuf::from("reload.html")
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
