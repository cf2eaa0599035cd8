//! `inspect`: explain a service account token.
//!
//! The argument is read as a file when such a path exists (a directory is read as its `token`
//! file, so a projected volume directory works too), as standard input when it is `-`, and as the
//! token itself when it looks like a JWT. No key is needed; `--jwks` adds a signature check.
//!
//! Exit codes: 2 when the input is not a token or a named file cannot be read; 1 when the JWKS
//! cannot be fetched, or the signature does not verify. A bad signature still prints the whole
//! explanation first (with `signature.verified: false`), then fails, so scripts can read both.

use std::io::{Read, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::Timestamp;

use super::shared::{read_ca, CommandError};
use crate::cli::{InspectArgs, OutputFormat};
use crate::errors::error_chain;
use crate::issuer::verify::verify_signature;
use crate::token::decode::decode;
use crate::token::explain::{explain, render_text, SignatureCheck};

/// Tokens are a few KiB; anything much larger is the wrong file.
const MAX_INPUT_BYTES: u64 = 1024 * 1024;
/// A JWKS is a few KiB too; the cap keeps a misbehaving server from filling memory.
const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// Time limit of the whole JWKS request.
const JWKS_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn run(args: &InspectArgs) -> Result<(), CommandError> {
    let (token, source) = read_token(&args.token).await?;
    let decoded = decode(&token).map_err(|e| CommandError::usage(format!("{source}: {e}")))?;
    let mut inspection = explain(&decoded, Timestamp::now());

    let mut verify_failure = None;
    if let Some(location) = &args.jwks {
        let jwks = load_jwks(location, args.jwks_ca.as_deref()).await?;
        inspection.signature = Some(match verify_signature(token.trim(), &jwks) {
            Ok(kid) => SignatureCheck {
                verified: true,
                key_id: Some(kid),
                error: None,
            },
            Err(e) => {
                let error = e.to_string();
                verify_failure = Some(format!(
                    "the signature does not verify against the JWKS {location}: {error}"
                ));
                SignatureCheck {
                    verified: false,
                    key_id: None,
                    error: Some(error),
                }
            }
        });
    }

    let output = match args.output {
        OutputFormat::Text => render_text(&inspection),
        OutputFormat::Json => {
            let mut json = serde_json::to_string_pretty(&inspection).map_err(|e| {
                CommandError::failure(format!("cannot serialise the inspection: {e}"))
            })?;
            json.push('\n');
            json
        }
    };
    std::io::stdout()
        .lock()
        .write_all(output.as_bytes())
        .map_err(|e| CommandError::failure(format!("cannot write to standard output: {e}")))?;

    match verify_failure {
        Some(message) => Err(CommandError::failure(message)),
        None => Ok(()),
    }
}

/// The token text and a description of where it came from, for error messages. The description
/// never contains the token.
async fn read_token(arg: &str) -> Result<(String, String), CommandError> {
    if arg == "-" {
        let what = "standard input".to_owned();
        let text = read_blocking(None, what.clone()).await?;
        return Ok((text, what));
    }
    match tokio::fs::metadata(arg).await {
        Ok(meta) => {
            // A projected volume directory holds the token in `token`.
            let path = if meta.is_dir() {
                Path::new(arg).join("token")
            } else {
                PathBuf::from(arg)
            };
            let what = format!("token file {}", path.display());
            let text = read_blocking(Some(path), what.clone()).await?;
            Ok((text, what))
        }
        // Any lookup error (not found, name too long for a path) leaves the token reading.
        Err(_) if looks_like_jwt(arg) => Ok((arg.to_owned(), "the token argument".to_owned())),
        Err(e) => Err(CommandError::usage(format!(
            "cannot read token file {}: {e}; the argument is neither a readable file, nor `-` \
             (standard input), nor a JWT",
            shortened(arg)
        ))),
    }
}

/// Reads a file, or standard input when `path` is `None`, off the async workers (the crate's
/// tokio has no async stdin).
async fn read_blocking(path: Option<PathBuf>, what: String) -> Result<String, CommandError> {
    let read = move || match path {
        None => read_limited(std::io::stdin().lock(), &what),
        Some(path) => std::fs::File::open(&path)
            .map_err(|e| CommandError::usage(format!("cannot read {what}: {e}")))
            .and_then(|file| read_limited(file, &what)),
    };
    tokio::task::spawn_blocking(read)
        .await
        .map_err(|e| CommandError::failure(format!("reading the token failed: {e}")))?
}

fn read_limited(reader: impl Read, what: &str) -> Result<String, CommandError> {
    let mut bytes = Vec::new();
    reader
        .take(MAX_INPUT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| CommandError::usage(format!("cannot read {what}: {e}")))?;
    if bytes.len() as u64 > MAX_INPUT_BYTES {
        return Err(CommandError::usage(format!(
            "{what} is larger than {MAX_INPUT_BYTES} bytes: not a token"
        )));
    }
    String::from_utf8(bytes)
        .map_err(|_| CommandError::usage(format!("{what} is not text (UTF-8): not a token")))
}

/// Every JWS header is a JSON object, so its base64url starts with `eyJ` (`{"`); a long run of
/// base64url characters with dots is taken as a token too, so that a mangled token gets a
/// decoding error naming the bad part instead of "no such file".
fn looks_like_jwt(arg: &str) -> bool {
    let arg = arg.trim();
    let jwt_chars = arg
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '='));
    arg.starts_with("eyJ") || (jwt_chars && arg.contains('.') && arg.len() >= 64)
}

/// An argument quoted in an error, cut short: what is not a path might be a mangled token.
fn shortened(arg: &str) -> String {
    const MAX: usize = 80;
    match arg.char_indices().nth(MAX) {
        Some((cut, _)) => format!("`{}...`", &arg[..cut]),
        None => format!("`{arg}`"),
    }
}

/// Reads a JWKS from a file or an http(s) URL. A bad file is a usage error (exit 2); a server that
/// cannot be reached or answers badly is a failure (exit 1).
async fn load_jwks(location: &str, ca: Option<&Path>) -> Result<serde_json::Value, CommandError> {
    let lower = location.to_ascii_lowercase();
    let is_url = lower.starts_with("https://") || lower.starts_with("http://");
    if !is_url {
        if ca.is_some() {
            tracing::warn!("--jwks-ca is only used when --jwks is an https URL; ignored");
        }
        let bytes = tokio::fs::read(location)
            .await
            .map_err(|e| CommandError::usage(format!("cannot read JWKS file {location}: {e}")))?;
        return parse_jwks(&bytes)
            .map_err(|e| CommandError::usage(format!("JWKS file {location} is not a JWKS: {e}")));
    }

    let mut builder = reqwest::Client::builder().timeout(JWKS_TIMEOUT);
    if let Some(ca) = ca {
        builder =
            builder
                .tls_certs_only([read_ca("--jwks-ca", ca, "the JWKS server's certificate").await?]);
    }
    let client = builder
        .build()
        .map_err(|e| CommandError::failure(format!("cannot set up HTTPS: {}", error_chain(&e))))?;
    let fetch_error = |e: reqwest::Error| {
        CommandError::failure(format!("cannot fetch JWKS: {}", error_chain(&e)))
    };
    let mut response = client.get(location).send().await.map_err(fetch_error)?;
    let status = response.status();
    if !status.is_success() {
        return Err(CommandError::failure(format!(
            "cannot fetch JWKS from {location}: the server answered HTTP {status}"
        )));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(fetch_error)? {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_JWKS_BYTES {
            return Err(CommandError::failure(format!(
                "JWKS from {location} is larger than {MAX_JWKS_BYTES} bytes"
            )));
        }
    }
    parse_jwks(&body)
        .map_err(|e| CommandError::failure(format!("{location} did not answer a JWKS: {e}")))
}

fn parse_jwks(bytes: &[u8]) -> Result<serde_json::Value, String> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    if !value.get("keys").is_some_and(serde_json::Value::is_array) {
        return Err("expected a JSON object with a \"keys\" array".to_owned());
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwt_detection() {
        assert!(looks_like_jwt("eyJhbGciOiJSUzI1NiJ9.eyJ9.sig"));
        assert!(looks_like_jwt("eyJhbGciOiJSUzI1NiJ9.eyJ9"));
        assert!(looks_like_jwt(&format!(
            "{}.{}",
            "a".repeat(40),
            "b".repeat(40)
        )));
        assert!(!looks_like_jwt("token.txt"));
        assert!(!looks_like_jwt(
            "/var/run/secrets/kubernetes.io/serviceaccount/token"
        ));
        assert!(!looks_like_jwt("./missing"));
    }

    #[test]
    fn long_arguments_are_shortened_in_errors() {
        let long = "x".repeat(200);
        let shown = shortened(&long);
        assert!(shown.len() < 100, "{shown}");
        assert_eq!(shortened("a/b"), "`a/b`");
    }

    #[test]
    fn jwks_shape_is_checked() {
        assert!(parse_jwks(br#"{"keys":[]}"#).is_ok());
        assert!(parse_jwks(br#"{"kty":"RSA"}"#)
            .unwrap_err()
            .contains("keys"));
        assert!(parse_jwks(b"<html>").unwrap_err().contains("not JSON"));
    }
}
