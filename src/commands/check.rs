//! `check`: fetch the emulator's token usage report and judge every client against the bounds.
//!
//! Exit codes: 0 when every client is within the bounds; 1 when one is not (after printing the
//! offenders), when no client used a token at all (unless `--allow-no-clients`; after printing
//! what to check), or when the report cannot be fetched or read; 2 for usage errors: an
//! unreadable `--ca` or `--token-file`, or a token the server refuses (401/403). Bad `--server`
//! and `--max-reload-delay` values are refused by the argument parser, also with 2.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::api_client::ApiClient;
use super::shared::CommandError;
use crate::apiserver::controls::STATUS_PATH;
use crate::apiserver::usage::UsageReport;
use crate::cli::{CheckArgs, OutputFormat};
use crate::report::bounds::{evaluate, CheckBounds, Offender};
use crate::report::{html, Advice, NothingObserved, Origin, ReloadReport};

/// Where the emulator serves the report, relative to the server's base URL.
pub const USAGE_REPORT_PATH: &str = "debug/token-usage";
/// A report of thousands of clients is a few MiB; the cap keeps a wrong server from filling memory.
const MAX_REPORT_BYTES: usize = 64 * 1024 * 1024;
/// The controls' status lists every projected pod: ample for 10,000 pods.
const MAX_STATUS_BYTES: usize = 16 * 1024 * 1024;

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
        max_rejected_uses: args.max_rejected,
        allow_no_clients: args.allow_no_clients,
    };
    // Only when nothing was observed: the projected directories, to name them in the message.
    let token_dirs = if usage.clients.is_empty() {
        projected_dirs(&api).await
    } else {
        Vec::new()
    };
    let ca = args.api.ca.display().to_string();
    let origin = Origin {
        server: args.api.server.as_str().trim_end_matches('/'),
        ca: Some(&ca),
        token_dirs: &token_dirs,
    };
    let offenders = evaluate(&usage, &bounds);
    let report = ReloadReport::new(&usage, &bounds, &origin);
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

    if report.nothing_observed.as_ref().is_some_and(|n| !n.allowed) {
        return Err(CommandError::failure(format!(
            "no client used a service account token of {}: nothing observed is not a pass",
            origin.server
        )));
    }
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

/// The directories the emulator projects into, from its controls' status; none when it has no
/// projector (`serve`) or the status cannot be had: the message then names `--dir` instead.
async fn projected_dirs(api: &ApiClient) -> Vec<String> {
    let Ok(status) = api
        .get::<serde_json::Value>(STATUS_PATH, "the emulator's status", MAX_STATUS_BYTES)
        .await
    else {
        return Vec::new();
    };
    let pods = status["projector"]["pods"].as_array().cloned();
    pods.unwrap_or_default()
        .iter()
        .filter_map(|pod| pod["volumes"].as_array())
        .flatten()
        .filter_map(|volume| volume["dir"].as_str().map(str::to_owned))
        .collect()
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

/// The offenders as a table with advice, one line saying all clients are within the bounds, or,
/// when no client used a token, why that fails and what to check.
pub fn render_text(
    report: &UsageReport,
    bounds: &CheckBounds,
    offenders: &[Offender],
    reload_report: &ReloadReport,
) -> String {
    let bounds_text = format!(
        "max stale uses {}, max rejected uses {}, max reload delay {}",
        bounds.max_stale_uses,
        bounds.max_rejected_uses,
        format_seconds(bounds.max_reload_delay.as_secs_f64())
    );
    if let Some(nothing) = &reload_report.nothing_observed {
        return nothing_observed_text(nothing);
    }
    let unattributed = match report.totals.unattributed_rejections {
        0 => String::new(),
        n => format!(
            "note: {n} requests presented bearer tokens the emulator did not sign; they count \
             for no client\n"
        ),
    };
    if offenders.is_empty() {
        return format!(
            "all {} clients within bounds ({bounds_text})\n{unattributed}",
            report.clients.len()
        );
    }
    let header = [
        "SUBJECT",
        "POD",
        "USER AGENT",
        "STALE",
        "SUPERSEDED",
        "REJECTED",
        "WORST DELAY",
        "BROKEN",
    ]
    .map(str::to_owned);
    let rows: Vec<[String; 8]> = offenders
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
                match offender.rejected_uses {
                    0 => "0".to_owned(),
                    _ => offender.rejected.describe(),
                },
                offender
                    .worst_reload_delay_seconds
                    .map_or_else(|| "-".to_owned(), format_seconds),
                offender
                    .broken
                    .iter()
                    .map(|bound| bound.name())
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
    text.push_str(&unattributed);
    text
}

fn nothing_observed_text(nothing: &NothingObserved) -> String {
    let mut text = format!("{}\n", nothing.message);
    text.push_str(if nothing.allowed {
        "if a client was expected, check:\n"
    } else {
        "check:\n"
    });
    for check in &nothing.checks {
        text.push_str(&format!("  - {check}\n"));
    }
    text
}

#[derive(Serialize)]
struct JsonVerdict<'a> {
    within_bounds: bool,
    clients: usize,
    max_stale_uses: u64,
    max_rejected_uses: u64,
    max_reload_delay_seconds: f64,
    allow_no_clients: bool,
    /// Set when no client used a token: the message and what to check.
    nothing_observed: Option<&'a NothingObserved>,
    unattributed_rejections: u64,
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
        within_bounds: reload_report.within_bounds,
        clients: report.clients.len(),
        max_stale_uses: bounds.max_stale_uses,
        max_rejected_uses: bounds.max_rejected_uses,
        max_reload_delay_seconds: bounds.max_reload_delay.as_secs_f64(),
        allow_no_clients: bounds.allow_no_clients,
        nothing_observed: reload_report.nothing_observed.as_ref(),
        unattributed_rejections: report.totals.unattributed_rejections,
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
    use crate::apiserver::usage::RejectedUses;
    use jiff::SignedDuration;

    use crate::apiserver::usage::samples::{client, report};

    const BOUNDS: CheckBounds = CheckBounds::strict(SignedDuration::from_secs(5));

    fn text_of(report: &UsageReport) -> String {
        let reload_report =
            ReloadReport::new(report, &BOUNDS, &Origin::server("https://127.0.0.1:6443"));
        render_text(report, &BOUNDS, &evaluate(report, &BOUNDS), &reload_report)
    }

    #[test]
    fn text_when_all_within_bounds() {
        let report = report(vec![client(Some("a"), 0, Some(1.0)), client(None, 0, None)]);
        assert_eq!(
            text_of(&report),
            "all 2 clients within bounds (max stale uses 0, max rejected uses 0, max reload \
             delay 5s)\n"
        );
    }

    #[test]
    fn text_when_nothing_was_observed() {
        let text = text_of(&report(vec![]));
        assert!(
            text.starts_with("no client used a service account token of https://127.0.0.1:6443"),
            "{text}"
        );
        assert!(text.contains("\ncheck:\n  - the URL:"), "{text}");
        assert!(text.contains("--allow-no-clients"), "{text}");
    }

    #[test]
    fn rejected_uses_in_the_table_and_the_json() {
        let mut dropped = client(Some("dropped/1.0"), 0, None);
        dropped.counts.rejected = RejectedUses {
            unknown_key: 80,
            ..RejectedUses::default()
        };
        let report = report(vec![dropped]);
        let text = text_of(&report);
        assert!(text.contains("REJECTED"), "{text}");
        assert!(text.contains("80 unknown key"), "{text}");
        assert!(text.contains("rejected uses\n"), "{text}");
        assert!(
            text.contains("advice for system:serviceaccount:default:app (app-0, dropped/1.0): the emulator refused 80"),
            "{text}"
        );
        let reload_report = ReloadReport::new(&report, &BOUNDS, &Origin::server("s"));
        let json = render_json(
            &report,
            &BOUNDS,
            &evaluate(&report, &BOUNDS),
            &reload_report,
        )
        .expect("json");
        let json: serde_json::Value = serde_json::from_str(&json).expect("JSON");
        assert_eq!(json["within_bounds"], false);
        assert_eq!(json["max_rejected_uses"], 0);
        let offender = &json["offenders"][0];
        assert_eq!(offender["rejected_uses"], 80);
        assert_eq!(offender["rejected"]["unknown_key"], 80);
        assert_eq!(offender["broken"][0]["bound"], "rejected_uses");
        assert_eq!(offender["advice"]["kind"], "rejected_tokens");
        assert_eq!(offender["advice"]["reason"], "unknown_key");
    }

    #[test]
    fn text_table_of_offenders() {
        let report = report(vec![
            client(Some("fine/1.0"), 0, None),
            client(Some("kubectl/v1.37.0 (linux/amd64)"), 3, Some(90.5)),
            client(None, 0, Some(6.0)),
        ]);
        let text = text_of(&report);
        let (table, advice) = text.split_at(text.find("advice for").expect("advice"));
        assert_eq!(
            table,
            "2 of 3 clients broke the bounds (max stale uses 0, max rejected uses 0, max reload delay 5s):\n\
             SUBJECT                            POD    USER AGENT                     STALE  SUPERSEDED  REJECTED  WORST DELAY  BROKEN\n\
             system:serviceaccount:default:app  app-0  kubectl/v1.37.0 (linux/amd64)  3      1           0         90.5s        stale uses, reload delay\n\
             system:serviceaccount:default:app  app-0  -                              0      1           0         6s           reload delay\n"
        );
        // Every offender gets advice, also without the tokens to tell its kind.
        assert_eq!(advice.lines().count(), 2, "{advice}");
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
