//! Kubeconfig exec credential plugins (`users[].user.exec`, e.g. `aws eks get-token`,
//! `gke-gcloud-auth-plugin`, `kubelogin`): run the command, read the `ExecCredential` it prints,
//! use its token until `expirationTimestamp`, then run it again (as client-go's
//! `plugin/pkg/client/auth/exec`).
//!
//! Hand-written because kube's runner lives in its HTTP client, which we do not build (we use
//! only its config module). Only token credentials are supported: a plugin that answers with a
//! client certificate gets a clear error.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use jiff::Timestamp;
use kube::config::{ExecConfig, ExecInteractiveMode};
use secrecy::SecretString;
use serde::Deserialize;
use tokio::io::AsyncReadExt as _;

use crate::source::ConnectionError;

/// The versions of `client.authentication.k8s.io` client-go accepts.
const SUPPORTED_API_VERSIONS: [&str; 2] = [
    "client.authentication.k8s.io/v1",
    "client.authentication.k8s.io/v1beta1",
];
/// A plugin that takes longer is stuck (e.g. waiting for a browser login it cannot get).
pub const EXEC_TIMEOUT: Duration = Duration::from_secs(60);
/// An ExecCredential is a few KiB; more is not one.
const MAX_OUTPUT_BYTES: u64 = 1 << 20;
/// How much of the plugin's standard error an error message quotes.
const MAX_STDERR_QUOTED: usize = 2048;

/// A validated `exec` section of a kubeconfig user, plus the credential it last printed.
pub struct ExecPlugin {
    command: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    api_version: String,
    install_hint: Option<String>,
    /// `KUBERNETES_EXEC_INFO`, prepared once.
    exec_info: String,
    /// Who this is for error messages: `user "dev"`.
    user: String,
    cached: tokio::sync::Mutex<Option<ExecToken>>,
}

impl std::fmt::Debug for ExecPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecPlugin")
            .field("command", &self.command)
            .field("args", &self.args)
            .field("api_version", &self.api_version)
            .finish_non_exhaustive()
    }
}

/// The cluster as `provideClusterInfo` hands it to the plugin.
#[derive(Debug, Clone, Default)]
pub struct ClusterInfo {
    pub server: String,
    /// base64 of the CA PEM, as in a kubeconfig.
    pub certificate_authority_data: Option<String>,
    pub insecure_skip_tls_verify: bool,
}

/// A token a plugin printed, and until when it may be used (`None`: until the server refuses it).
#[derive(Clone)]
pub struct ExecToken {
    pub token: SecretString,
    pub expires_at: Option<Timestamp>,
}

impl ExecToken {
    /// client-go's rule: a cached credential is used until the clock is past its expiry.
    pub fn is_fresh(&self, now: Timestamp) -> bool {
        self.expires_at.is_none_or(|at| now <= at)
    }
}

#[derive(Deserialize)]
struct ExecCredential {
    #[serde(rename = "apiVersion", default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    status: Option<ExecCredentialStatus>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExecCredentialStatus {
    token: Option<String>,
    expiration_timestamp: Option<String>,
    client_certificate_data: Option<String>,
}

impl ExecPlugin {
    /// Checks an `exec` section (`user` names the kubeconfig user in errors).
    pub fn new(
        config: &ExecConfig,
        user: &str,
        cluster: &ClusterInfo,
    ) -> Result<Self, ConnectionError> {
        let who = format!("user {user:?}");
        let command = config
            .command
            .clone()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| ConnectionError(format!("{who}: exec has no command")))?;
        let api_version = config.api_version.clone().unwrap_or_default();
        if !SUPPORTED_API_VERSIONS.contains(&api_version.as_str()) {
            return Err(ConnectionError(format!(
                "{who}: exec apiVersion {api_version:?} is not supported; use one of {SUPPORTED_API_VERSIONS:?}"
            )));
        }
        if matches!(config.interactive_mode, Some(ExecInteractiveMode::Always)) {
            return Err(ConnectionError(format!(
                "{who}: exec interactiveMode is Always, but the sidecar has no terminal; give the plugin a non-interactive login (interactiveMode: Never or IfAvailable)"
            )));
        }
        let mut env = Vec::new();
        for (index, entry) in config.env.iter().flatten().enumerate() {
            match (entry.get("name"), entry.get("value")) {
                (Some(name), Some(value)) if !name.is_empty() => {
                    env.push((name.clone(), value.clone()))
                }
                _ => {
                    return Err(ConnectionError(format!(
                        "{who}: exec env[{index}] needs a name and a value"
                    )))
                }
            }
        }
        let exec_info =
            exec_info_json(&api_version, config.provide_cluster_info.then_some(cluster));
        Ok(Self {
            command,
            args: config.args.clone().unwrap_or_default(),
            env,
            api_version,
            install_hint: config.install_hint.clone(),
            exec_info,
            user: who,
            cached: tokio::sync::Mutex::new(None),
        })
    }

    /// The token to send now: the cached one while fresh, else a new one from the plugin.
    /// Concurrent callers wait for one run of the plugin.
    pub async fn token(&self, now: Timestamp) -> Result<SecretString, ConnectionError> {
        let mut cached = self.cached.lock().await;
        if let Some(token) = cached.as_ref().filter(|t| t.is_fresh(now)) {
            return Ok(token.token.clone());
        }
        let stdout = self.run().await?;
        let token = parse_exec_credential(&self.api_version, &stdout).map_err(|e| {
            ConnectionError(format!("{}: exec plugin {}: {e}", self.user, self.command))
        })?;
        let secret = token.token.clone();
        *cached = Some(token);
        Ok(secret)
    }

    /// Forgets the cached token (the server answered 401), so the next request runs the
    /// plugin again, as client-go does.
    pub async fn invalidate(&self) {
        *self.cached.lock().await = None;
    }

    async fn run(&self) -> Result<Vec<u8>, ConnectionError> {
        let what = format!("{}: exec plugin {}", self.user, self.command);
        let mut command = tokio::process::Command::new(&self.command);
        command
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("KUBERNETES_EXEC_INFO", &self.exec_info)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().map_err(|e| {
            let hint = match (&self.install_hint, e.kind()) {
                (Some(hint), std::io::ErrorKind::NotFound) => format!("\n{}", hint.trim()),
                (None, std::io::ErrorKind::NotFound) => format!(
                    "; install it or give its full path (PATH is searched{})",
                    if Path::new(&self.command).is_absolute() {
                        ", but this path is absolute"
                    } else {
                        ""
                    }
                ),
                _ => String::new(),
            };
            ConnectionError(format!("{what}: cannot run it: {e}{hint}"))
        })?;
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(ConnectionError(format!(
                "{what}: its output could not be captured"
            )));
        };
        let collect = async {
            let mut out = Vec::new();
            let mut err = Vec::new();
            let mut stdout = stdout.take(MAX_OUTPUT_BYTES);
            let mut stderr = stderr.take(MAX_OUTPUT_BYTES);
            let (read_out, read_err) =
                tokio::join!(stdout.read_to_end(&mut out), stderr.read_to_end(&mut err),);
            let status = child.wait().await;
            (read_out.and(read_err).and(status), out, err)
        };
        let (status, out, err) = tokio::time::timeout(EXEC_TIMEOUT, collect)
            .await
            .map_err(|_| {
                ConnectionError(format!(
                    "{what}: no answer within {} s (killed); does it wait for an interactive login?",
                    EXEC_TIMEOUT.as_secs()
                ))
            })?;
        let status = status.map_err(|e| ConnectionError(format!("{what}: {e}")))?;
        if !status.success() {
            return Err(ConnectionError(format!(
                "{what}: exited with {status}: {}",
                quote_stderr(&err)
            )));
        }
        Ok(out)
    }
}

/// The plugin's standard error for an error message: trimmed and bounded.
fn quote_stderr(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let text = text.trim();
    if text.is_empty() {
        return "no message on standard error".to_owned();
    }
    let mut end = text.len().min(MAX_STDERR_QUOTED);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// `KUBERNETES_EXEC_INFO`: an ExecCredential with the spec client-go sends (never interactive
/// here; the cluster only with `provideClusterInfo`).
pub fn exec_info_json(api_version: &str, cluster: Option<&ClusterInfo>) -> String {
    let mut spec = serde_json::json!({ "interactive": false });
    if let Some(cluster) = cluster {
        let mut info = serde_json::json!({ "server": cluster.server });
        if let Some(ca) = &cluster.certificate_authority_data {
            info["certificate-authority-data"] = serde_json::Value::from(ca.as_str());
        }
        if cluster.insecure_skip_tls_verify {
            info["insecure-skip-tls-verify"] = serde_json::Value::from(true);
        }
        spec["cluster"] = info;
    }
    serde_json::json!({ "kind": "ExecCredential", "apiVersion": api_version, "spec": spec })
        .to_string()
}

/// Reads what a plugin printed: an ExecCredential of the version it was asked for, with a
/// token and, optionally, an RFC 3339 expiry.
pub fn parse_exec_credential(api_version: &str, stdout: &[u8]) -> Result<ExecToken, String> {
    let credential: ExecCredential = serde_json::from_slice(stdout)
        .map_err(|e| format!("its output is not an ExecCredential JSON object: {e}"))?;
    if credential.kind != "ExecCredential" {
        return Err(format!(
            "it printed kind {:?}, want ExecCredential",
            credential.kind
        ));
    }
    if credential.api_version != api_version {
        return Err(format!(
            "it printed apiVersion {:?}, but the kubeconfig asks for {api_version:?}",
            credential.api_version
        ));
    }
    let status = credential
        .status
        .ok_or("its ExecCredential has no status")?;
    let token = match (status.token, status.client_certificate_data) {
        (Some(token), _) if !token.is_empty() => token,
        (_, Some(_)) => {
            return Err(
                "it answered with a client certificate, which the sidecar does not support; use a plugin mode that prints a token"
                    .to_owned(),
            )
        }
        _ => return Err("its ExecCredential status has no token".to_owned()),
    };
    let expires_at = status
        .expiration_timestamp
        .filter(|t| !t.is_empty())
        .map(|t| {
            t.parse::<Timestamp>()
                .map_err(|e| format!("status.expirationTimestamp {t:?} is not RFC 3339: {e}"))
        })
        .transpose()?;
    Ok(ExecToken {
        token: SecretString::from(token),
        expires_at,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use secrecy::ExposeSecret as _;

    use super::*;

    fn env_entry(name: &str, value: &str) -> HashMap<String, String> {
        HashMap::from([
            ("name".to_owned(), name.to_owned()),
            ("value".to_owned(), value.to_owned()),
        ])
    }

    const V1: &str = "client.authentication.k8s.io/v1";

    #[test]
    fn credentials_parse_with_and_without_expiry() {
        let with = br#"{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1","status":{"token":"abc","expirationTimestamp":"2030-01-02T03:04:05Z"}}"#;
        let token = parse_exec_credential(V1, with).unwrap();
        assert_eq!(token.token.expose_secret(), "abc");
        let at: Timestamp = "2030-01-02T03:04:05Z".parse().unwrap();
        assert_eq!(token.expires_at, Some(at));
        assert!(token.is_fresh(at));
        assert!(!token.is_fresh(at + jiff::SignedDuration::from_secs(1)));

        let without = br#"{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1","status":{"token":"abc"}}"#;
        let token = parse_exec_credential(V1, without).unwrap();
        assert!(token.expires_at.is_none());
        assert!(token.is_fresh(Timestamp::MAX));
    }

    #[test]
    fn bad_credentials_say_what_is_wrong() {
        let cases: [(&[u8], &str); 6] = [
            (b"not json", "not an ExecCredential JSON"),
            (br#"{"kind":"Pod","apiVersion":"v1"}"#, "kind \"Pod\""),
            (
                br#"{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1beta1","status":{"token":"a"}}"#,
                "asks for \"client.authentication.k8s.io/v1\"",
            ),
            (
                br#"{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1"}"#,
                "no status",
            ),
            (
                br#"{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1","status":{"clientCertificateData":"x","clientKeyData":"y"}}"#,
                "client certificate",
            ),
            (
                br#"{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1","status":{"token":"a","expirationTimestamp":"tomorrow"}}"#,
                "expirationTimestamp \"tomorrow\"",
            ),
        ];
        for (output, expected) in cases {
            let err = parse_exec_credential(V1, output).err().unwrap();
            assert!(err.contains(expected), "{err} should contain {expected}");
        }
    }

    #[test]
    fn exec_info_carries_the_cluster_only_when_asked() {
        let cluster = ClusterInfo {
            server: "https://10.0.0.1:6443".into(),
            certificate_authority_data: Some("Q0E=".into()),
            insecure_skip_tls_verify: false,
        };
        let plain: serde_json::Value = serde_json::from_str(&exec_info_json(V1, None)).unwrap();
        assert_eq!(
            plain,
            serde_json::json!({"kind":"ExecCredential","apiVersion":V1,"spec":{"interactive":false}})
        );
        let with: serde_json::Value =
            serde_json::from_str(&exec_info_json(V1, Some(&cluster))).unwrap();
        assert_eq!(with["spec"]["cluster"]["server"], "https://10.0.0.1:6443");
        assert_eq!(
            with["spec"]["cluster"]["certificate-authority-data"],
            "Q0E="
        );
    }

    #[test]
    fn configs_are_checked() {
        let cluster = ClusterInfo::default();
        let config = |api: Option<&str>, command: Option<&str>| ExecConfig {
            api_version: api.map(str::to_owned),
            command: command.map(str::to_owned),
            ..ExecConfig::default()
        };
        let err = ExecPlugin::new(&config(Some(V1), None), "dev", &cluster).unwrap_err();
        assert!(err.0.contains("no command"), "{err}");
        let err = ExecPlugin::new(
            &config(Some("client.authentication.k8s.io/v1alpha1"), Some("x")),
            "dev",
            &cluster,
        )
        .unwrap_err();
        assert!(err.0.contains("apiVersion"), "{err}");
        let mut always = config(Some(V1), Some("x"));
        always.interactive_mode = Some(ExecInteractiveMode::Always);
        assert!(ExecPlugin::new(&always, "dev", &cluster)
            .unwrap_err()
            .0
            .contains("interactiveMode"));
        let mut bad_env = config(Some(V1), Some("x"));
        bad_env.env = Some(vec![HashMap::from([("name".to_owned(), "A".to_owned())])]);
        assert!(ExecPlugin::new(&bad_env, "dev", &cluster)
            .unwrap_err()
            .0
            .contains("env[0]"));
        let mut good = config(Some(V1), Some("x"));
        good.env = Some(vec![env_entry("A", "1")]);
        assert!(ExecPlugin::new(&good, "dev", &cluster).is_ok());
    }

    /// A real plugin (a shell script) runs once while its token is fresh, again after expiry
    /// or invalidation, and sees its env and `KUBERNETES_EXEC_INFO`.
    #[tokio::test]
    async fn plugin_runs_are_cached_until_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let count = dir.path().join("count");
        let script = dir.path().join("plugin.sh");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho run >> {count}\nn=$(wc -l < {count} | tr -d ' ')\n\
                 case \"$KUBERNETES_EXEC_INFO\" in *'\"interactive\":false'*) ;; *) exit 3;; esac\n\
                 printf '{{\"kind\":\"ExecCredential\",\"apiVersion\":\"{V1}\",\"status\":{{\"token\":\"%s-%s\",\"expirationTimestamp\":\"2030-01-01T00:00:00Z\"}}}}' \"$GREETING\" \"$n\"\n",
                count = count.display()
            ),
        )
        .unwrap();
        let config = ExecConfig {
            api_version: Some(V1.into()),
            command: Some("/bin/sh".into()),
            args: Some(vec![script.display().to_string()]),
            env: Some(vec![env_entry("GREETING", "hi")]),
            ..ExecConfig::default()
        };
        let plugin = ExecPlugin::new(&config, "dev", &ClusterInfo::default()).unwrap();
        let before: Timestamp = "2029-12-31T00:00:00Z".parse().unwrap();
        let after: Timestamp = "2030-01-01T00:00:01Z".parse().unwrap();
        assert_eq!(plugin.token(before).await.unwrap().expose_secret(), "hi-1");
        assert_eq!(plugin.token(before).await.unwrap().expose_secret(), "hi-1");
        assert_eq!(plugin.token(after).await.unwrap().expose_secret(), "hi-2");
        plugin.invalidate().await;
        assert_eq!(plugin.token(before).await.unwrap().expose_secret(), "hi-3");
    }

    #[tokio::test]
    async fn failing_and_missing_plugins_are_reported() {
        let failing = ExecConfig {
            api_version: Some(V1.into()),
            command: Some("/bin/sh".into()),
            args: Some(vec![
                "-c".into(),
                "echo 'login required' >&2; exit 7".into(),
            ]),
            env: None,
            ..ExecConfig::default()
        };
        let plugin = ExecPlugin::new(&failing, "dev", &ClusterInfo::default()).unwrap();
        let err = plugin.token(Timestamp::UNIX_EPOCH).await.unwrap_err();
        assert!(
            err.0.contains("login required") && err.0.contains("7"),
            "{err}"
        );

        let missing = ExecConfig {
            command: Some("projected-token-no-such-plugin".into()),
            install_hint: Some("install it with: apt install no-such-plugin".into()),
            ..failing
        };
        let plugin = ExecPlugin::new(&missing, "dev", &ClusterInfo::default()).unwrap();
        let err = plugin.token(Timestamp::UNIX_EPOCH).await.unwrap_err();
        assert!(err.0.contains("apt install no-such-plugin"), "{err}");
    }
}
