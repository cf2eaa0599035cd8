//! How our own commands (`check`, `ctl`) talk to a running emulator's API: trust only the given
//! CA, send the admin token from a file, and turn answers into errors that say what to do.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, StatusCode};

use super::shared::{read_ca, CommandError};
use crate::cli::ApiConnectionArgs;
use crate::errors::error_chain;

/// Time limit of one request (a control answers at once; an RSA key takes up to 0.2 s).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Control answers are small; a larger body is not from the emulator.
const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;
/// A token is a few KiB; anything much larger is the wrong file.
const MAX_TOKEN_FILE_BYTES: u64 = 1024 * 1024;

/// An HTTPS client of one emulator, authenticated as its admin.
pub struct ApiClient {
    base: reqwest::Url,
    client: reqwest::Client,
    authorization: HeaderValue,
    token_file: PathBuf,
}

impl ApiClient {
    /// Reads `--ca` and `--token-file` (usage errors, exit 2, when they are unusable).
    pub async fn connect(args: &ApiConnectionArgs) -> Result<Self, CommandError> {
        let ca = read_ca(
            "--ca",
            &args.ca,
            "the server's certificate (the emulator's ca.crt)",
        )
        .await?;
        let token_file = admin_token_file(args.token_file.as_deref())?;
        let authorization = read_bearer_token(&token_file).await?;
        let client = reqwest::Client::builder()
            .tls_certs_only([ca])
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|e| {
                CommandError::failure(format!("cannot set up HTTPS: {}", error_chain(&e)))
            })?;
        Ok(Self {
            base: base_url(&args.server),
            client,
            authorization,
            token_file,
        })
    }

    /// `path` (without a leading `/`) under the server's base URL, keeping any path prefix.
    pub fn url(&self, path: &str) -> Result<reqwest::Url, CommandError> {
        self.base
            .join(path.trim_start_matches('/'))
            .map_err(|e| CommandError::usage(format!("--server {}: {e}", self.base)))
    }

    /// Sends one request and returns the JSON answer of a success. A 401/403 is a usage error
    /// about the token file; another 4xx is a usage error with the server's message; a 5xx or
    /// no answer is a failure.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value, CommandError> {
        let answer = self.send(method, path, body, MAX_ANSWER_BYTES).await?;
        serde_json::from_slice(&answer.bytes).map_err(|_| {
            CommandError::failure(format!(
                "{} {} answered {} without JSON",
                answer.method, answer.url, answer.status
            ))
        })
    }

    /// GETs a JSON document of type `T` of up to `max_bytes`, with [`Self::call`]'s errors.
    pub async fn get<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        what: &str,
        max_bytes: usize,
    ) -> Result<T, CommandError> {
        let answer = self.send(Method::GET, path, None, max_bytes).await?;
        serde_json::from_slice(&answer.bytes).map_err(|e| {
            CommandError::failure(format!("{} did not answer {what}: {e}", answer.url))
        })
    }

    /// One request; a success's body, or the error its status calls for.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
        max_bytes: usize,
    ) -> Result<Answer, CommandError> {
        let url = self.url(path)?;
        let mut request = self
            .client
            .request(method.clone(), url.clone())
            .header(AUTHORIZATION, self.authorization.clone());
        if let Some(body) = body {
            let bytes = serde_json::to_vec(body)
                .map_err(|e| CommandError::failure(format!("request body: {e}")))?;
            request = request.header(CONTENT_TYPE, "application/json").body(bytes);
        }
        let fetch_error = |e: reqwest::Error| {
            CommandError::failure(format!("cannot fetch {method} {url}: {}", error_chain(&e)))
        };
        let mut response = request.send().await.map_err(fetch_error)?;
        let status = response.status();
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(fetch_error)? {
            bytes.extend_from_slice(&chunk);
            if bytes.len() > max_bytes {
                return Err(CommandError::failure(format!(
                    "{method} {url}: the answer is larger than {max_bytes} bytes"
                )));
            }
        }
        if status.is_success() {
            return Ok(Answer {
                method,
                url,
                status,
                bytes,
            });
        }
        let json: Option<serde_json::Value> = serde_json::from_slice(&bytes).ok();
        let message = json
            .as_ref()
            .and_then(|j| j.get("message"))
            .and_then(|m| m.as_str())
            .map(str::to_owned)
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).trim().to_owned());
        match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err(CommandError::usage(format!(
                "{method} {url} answered HTTP {status}: the server does not accept the token in \
                 --token-file {} as its admin; give the emulator's admin token file",
                self.token_file.display()
            ))),
            s if s.is_client_error() => Err(CommandError::usage(format!(
                "{method} {url} answered HTTP {status}: {message}"
            ))),
            _ => Err(CommandError::failure(format!(
                "{method} {url} answered HTTP {status}: {message}"
            ))),
        }
    }
}

/// The server URL as a base that relative paths extend: a path prefix is kept.
fn base_url(server: &reqwest::Url) -> reqwest::Url {
    let mut base = server.clone();
    if !base.path().ends_with('/') {
        let path = format!("{}/", base.path());
        base.set_path(&path);
    }
    base
}

/// `Bearer <token>` from the token file, marked sensitive so it is never logged. Error messages
/// name the file, never its content.
/// `--token-file`, or the admin token the default state directory keeps.
fn admin_token_file(flag: Option<&Path>) -> Result<PathBuf, CommandError> {
    if let Some(path) = flag {
        return Ok(path.to_path_buf());
    }
    crate::state::default_path()
        .map(|dir| dir.join(crate::state::files::ADMIN_TOKEN))
        .ok_or_else(|| {
            CommandError::usage(
                "--token-file is required: no default state directory (neither XDG_STATE_HOME nor HOME is set); pass the `admin token file` the emulator printed",
            )
        })
}

async fn read_bearer_token(path: &Path) -> Result<HeaderValue, CommandError> {
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

/// A successful answer.
struct Answer {
    method: Method,
    url: reqwest::Url,
    status: StatusCode,
    bytes: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_keep_a_prefix_of_the_server_url() {
        let joined = |server: &str| {
            base_url(&reqwest::Url::parse(server).unwrap())
                .join("debug/token-usage")
                .unwrap()
                .to_string()
        };
        assert_eq!(
            joined("https://127.0.0.1:6443"),
            "https://127.0.0.1:6443/debug/token-usage"
        );
        assert_eq!(
            joined("https://host/emulator"),
            "https://host/emulator/debug/token-usage"
        );
        assert_eq!(
            joined("https://host/emulator/"),
            "https://host/emulator/debug/token-usage"
        );
    }
}
