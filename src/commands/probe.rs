//! `probe`: a health check for images without a shell (a compose `healthcheck`, a Kubernetes exec
//! probe). Exit 0 when `--dir` holds a usable token (see [`readiness`]) and `--url` answers 2xx,
//! printing one line per check; otherwise exit 1 with one line saying why (2 for bad arguments).
//!
//! Bounded by `--timeout` whatever blocks: the checks run on a thread of their own with their own
//! runtime, and the main thread returns at the deadline without waiting for it (a FIFO at the
//! token path, a hung mount or a silent server cannot hold the process; the thread ends with it).

use std::fs;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;

use super::shared::{read_ca, CommandError};
use crate::cli::ProbeArgs;
use crate::errors::error_chain;
use crate::projection::paths::{clean_path, validate_path};
use crate::watch::readiness::{readiness, Readiness};
use crate::watch::snapshot;

/// How much of a failed answer's body is quoted (the sidecar's `/readyz` says why in it).
const QUOTED_BODY_BYTES: usize = 300;

pub fn run(args: ProbeArgs) -> Result<(), CommandError> {
    validate_path(&args.token_path)
        .map_err(|e| CommandError::usage(format!("--token-path {:?}: {e}", args.token_path)))?;
    if args.ca.is_some() && args.url.as_ref().is_some_and(|u| u.scheme() != "https") {
        return Err(CommandError::usage(
            "--ca is for an https --url; drop it, or give the https URL",
        ));
    }
    let timeout = Duration::try_from(args.timeout).unwrap_or(Duration::from_secs(3));
    // What the probe thread is doing, for the timeout's message.
    let doing = Arc::new(Mutex::new(String::new()));
    let (verdict, verdict_out) = mpsc::channel();
    let thread_doing = doing.clone();
    std::thread::Builder::new()
        .name("probe".to_owned())
        .spawn(move || {
            let _ = verdict.send(probe(&args, timeout, &thread_doing));
        })
        .map_err(|e| CommandError::failure(format!("cannot start the probe thread: {e}")))?;
    let lines = match verdict_out.recv_timeout(timeout) {
        Ok(result) => result?,
        Err(RecvTimeoutError::Timeout) => {
            let what = doing.lock().map(|d| d.clone()).unwrap_or_default();
            return Err(CommandError::failure(format!(
                "{what}: no verdict within {timeout:?} (--timeout)"
            )));
        }
        Err(RecvTimeoutError::Disconnected) => {
            return Err(CommandError::failure("the probe ended without a verdict"));
        }
    };
    for line in lines {
        println!("{line}");
    }
    Ok(())
}

/// Every check asked for, in order; the first that fails ends the probe.
fn probe(
    args: &ProbeArgs,
    timeout: Duration,
    doing: &Mutex<String>,
) -> Result<Vec<String>, CommandError> {
    let mut lines = Vec::new();
    let say_doing = |what: String| {
        if let Ok(mut d) = doing.lock() {
            *d = what;
        }
    };
    if let Some(dir) = &args.dir {
        say_doing(format!("reading {}", dir.display()));
        let token_path = clean_path(&args.token_path);
        let line = check_dir(dir, &token_path, Timestamp::now())
            .map_err(|why| CommandError::failure(format!("{} not ready: {why}", dir.display())))?;
        lines.push(line);
    }
    if let Some(url) = &args.url {
        say_doing(format!("GET {url}"));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| CommandError::failure(format!("cannot start the async runtime: {e}")))?;
        lines.push(runtime.block_on(check_url(url, args.ca.as_deref(), timeout))?);
    }
    Ok(lines)
}

/// Reads `dir` as a client does and judges it; `Err` is the reason, one line.
fn check_dir(dir: &Path, token_path: &str, now: Timestamp) -> Result<String, String> {
    // Opening a FIFO (or a device) blocks or has effects; only a regular file is read. (Not a
    // guarantee against a swap in between: the caller's deadline bounds that.)
    if let Ok(meta) = fs::metadata(dir.join(token_path)) {
        let kind = meta.file_type();
        let odd = if kind.is_fifo() {
            Some("a FIFO")
        } else if kind.is_socket() {
            Some("a socket")
        } else if kind.is_block_device() || kind.is_char_device() {
            Some("a device")
        } else if kind.is_dir() {
            Some("a directory")
        } else {
            None
        };
        if let Some(odd) = odd {
            return Err(format!("{token_path} is {odd}, not a regular file"));
        }
    }
    match readiness(&snapshot::read(dir, token_path), now) {
        Readiness::NotReady(why) => Err(why),
        Readiness::Ready { expires_at, .. } => Ok(match expires_at {
            Some(at) => format!("{}: ready ({token_path} expires at {at})", dir.display()),
            None => format!("{}: ready ({token_path} has no exp)", dir.display()),
        }),
    }
}

/// GETs `url` (no redirects) and wants a 2xx.
async fn check_url(
    url: &reqwest::Url,
    ca: Option<&Path>,
    timeout: Duration,
) -> Result<String, CommandError> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout);
    if let Some(ca) = ca {
        builder = builder.tls_certs_only([read_ca("--ca", ca, "the server's certificate").await?]);
    }
    let client = builder
        .build()
        .map_err(|e| CommandError::failure(format!("cannot set up HTTPS: {}", error_chain(&e))))?;
    let mut response = client
        .get(url.clone())
        .send()
        .await
        .map_err(|e| CommandError::failure(format!("GET {url}: {}", error_chain(&e))))?;
    let status = response.status();
    if status.is_success() {
        return Ok(format!("{url}: ready ({status})"));
    }
    let mut body = Vec::new();
    while body.len() < QUOTED_BODY_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            _ => break,
        }
    }
    body.truncate(QUOTED_BODY_BYTES);
    let said = one_line(&String::from_utf8_lossy(&body));
    Err(CommandError::failure(if said.is_empty() {
        format!("GET {url} answered {status}")
    } else {
        format!("GET {url} answered {status}: {said}")
    }))
}

/// `text` on one line: lines joined with "; ", blank ones dropped.
fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn answers_are_quoted_on_one_line() {
        assert_eq!(
            one_line("readyz check failed\n\ntoken: expired\n"),
            "readyz check failed; token: expired"
        );
        assert_eq!(one_line(""), "");
    }

    #[test]
    fn a_fifo_at_the_token_path_is_refused_without_opening_it() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let fifo = tmp.path().join("token");
        let path = CString::new(fifo.as_os_str().as_bytes()).expect("path");
        rustix::fs::mkfifoat(rustix::fs::CWD, path.as_c_str(), 0o600.into()).expect("mkfifo");
        // Opening it for reading would wait for a writer forever; this returns at once.
        let why = check_dir(tmp.path(), "token", Timestamp::now()).expect_err("a FIFO");
        assert_eq!(why, "token is a FIFO, not a regular file");
        fs::remove_file(&fifo).expect("remove");
        fs::create_dir(&fifo).expect("mkdir");
        let why = check_dir(tmp.path(), "token", Timestamp::now()).expect_err("a directory");
        assert_eq!(why, "token is a directory, not a regular file");
    }
}
