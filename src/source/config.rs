//! What the sidecar connects to: in-cluster (service environment variables and the pod's own
//! projected CA and token file) or a kubeconfig context (kube's config module parses it): the
//! server URL, the CA, the client certificate and which credential to send. Nothing but the
//! kubeconfig is read here; [`super::client`] builds the HTTP client and [`super::auth`]
//! re-reads or re-runs the credential before each request.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use kube::config::Kubeconfig;
use secrecy::ExposeSecret as _;

use super::auth::exec::{ClusterInfo, ExecPlugin};
use super::auth::Credential;
use super::ConnectionError;

/// Where a pod's own service account files are mounted.
pub const IN_CLUSTER_CREDENTIALS_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Everything needed to build the HTTP client, before any file but the kubeconfig is read.
#[derive(Debug, Clone)]
pub struct ConnectionSpec {
    /// `https://host:port`, without a trailing slash.
    pub server: String,
    pub ca: Option<PemSource>,
    pub insecure_skip_tls_verify: bool,
    pub credential: Credential,
    /// Client certificate and key (kubeconfig).
    pub client_certificate: Option<PemSource>,
    pub client_key: Option<PemSource>,
    /// The namespace of the context (kubeconfig) or of the pod (in-cluster), if known.
    pub namespace: Option<String>,
    /// Who we are, for error messages: "in-cluster service account token /var/run/..." or
    /// "kubeconfig user dev (context kind-dev)".
    pub identity: String,
}

/// PEM bytes inline (kubeconfig `*-data`, base64-decoded) or in a file.
#[derive(Clone)]
pub enum PemSource {
    Inline(Vec<u8>),
    File(PathBuf),
}

impl std::fmt::Debug for PemSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Inline(bytes) => write!(f, "Inline({} bytes)", bytes.len()),
            Self::File(path) => f.debug_tuple("File").field(path).finish(),
        }
    }
}

impl PemSource {
    /// Where the PEM comes from, for messages: the file, or the kubeconfig's inline data.
    pub fn origin(&self, data_field: &str) -> String {
        match self {
            Self::Inline(_) => format!("the kubeconfig's {data_field}"),
            Self::File(path) => format!("file {}", path.display()),
        }
    }

    /// The PEM bytes (a file is read now); `what` names them in the error.
    pub fn read(&self, what: &str) -> Result<Vec<u8>, ConnectionError> {
        match self {
            Self::Inline(bytes) => Ok(bytes.clone()),
            Self::File(path) => std::fs::read(path)
                .map_err(|e| ConnectionError::new(format!("{what} {}: {e}", path.display()))),
        }
    }
}

/// `https://` + host + port, with an IPv6 host bracketed, as client-go's `InClusterConfig`.
pub fn in_cluster_server(host: &str, port: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("https://[{host}]:{port}")
    } else {
        format!("https://{host}:{port}")
    }
}

/// The in-cluster connection: `KUBERNETES_SERVICE_HOST`/`_PORT` (passed in) and the projected
/// `token`, `ca.crt` and `namespace` in `credentials_dir`.
pub fn in_cluster(
    host: Option<&str>,
    port: Option<&str>,
    credentials_dir: &Path,
) -> Result<ConnectionSpec, ConnectionError> {
    let (Some(host), Some(port)) = (
        host.filter(|h| !h.is_empty()),
        port.filter(|p| !p.is_empty()),
    ) else {
        return Err(ConnectionError::new(
            "unable to load in-cluster configuration, KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must be defined (or give --kubeconfig)",
        ));
    };
    let token = credentials_dir.join("token");
    let namespace = std::fs::read_to_string(credentials_dir.join("namespace"))
        .ok()
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty());
    Ok(ConnectionSpec {
        server: in_cluster_server(host, port),
        ca: Some(PemSource::File(credentials_dir.join("ca.crt"))),
        insecure_skip_tls_verify: false,
        identity: format!("in-cluster service account token {}", token.display()),
        credential: Credential::TokenFile(token),
        client_certificate: None,
        client_key: None,
        namespace,
    })
}

/// The connection of a kubeconfig context (`context`, or the current one).
pub fn from_kubeconfig(
    config: &Kubeconfig,
    context: Option<&str>,
) -> Result<ConnectionSpec, ConnectionError> {
    let context_name = context
        .map(str::to_owned)
        .or_else(|| config.current_context.clone())
        .filter(|c| !c.is_empty())
        .ok_or_else(|| {
            ConnectionError::new("the kubeconfig has no current-context; name one with --context")
        })?;
    let named_context = config
        .contexts
        .iter()
        .find(|c| c.name == context_name)
        .and_then(|c| c.context.as_ref())
        .ok_or_else(|| {
            ConnectionError::new(format!("context {context_name:?} is not in the kubeconfig"))
        })?;
    let cluster = config
        .clusters
        .iter()
        .find(|c| c.name == named_context.cluster)
        .and_then(|c| c.cluster.as_ref())
        .ok_or_else(|| {
            ConnectionError::new(format!(
                "cluster {:?} of context {context_name:?} is not in the kubeconfig",
                named_context.cluster
            ))
        })?;
    let server = cluster
        .server
        .clone()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            ConnectionError::new(format!(
                "cluster {:?} has no server URL",
                named_context.cluster
            ))
        })?;
    let ca = match (
        &cluster.certificate_authority_data,
        &cluster.certificate_authority,
    ) {
        (Some(data), _) => Some(PemSource::Inline(decode_data(
            "certificate-authority-data",
            data,
        )?)),
        (None, Some(path)) => Some(PemSource::File(PathBuf::from(path))),
        (None, None) => None,
    };
    let user_name = named_context.user.clone().unwrap_or_default();
    let auth = config
        .auth_infos
        .iter()
        .find(|a| a.name == user_name)
        .and_then(|a| a.auth_info.clone())
        .unwrap_or_default();
    if auth.auth_provider.is_some() {
        return Err(ConnectionError::new(format!(
            "user {user_name:?} authenticates with an auth-provider plugin (removed from client-go in 1.26); give it an exec plugin, a token, tokenFile or client certificate"
        )));
    }
    let credential = match (&auth.token, &auth.token_file, &auth.exec) {
        (Some(token), _, _) => Credential::Token(token.clone()),
        (None, Some(path), _) => Credential::TokenFile(PathBuf::from(path)),
        (None, None, Some(exec)) => {
            let cluster_info = ClusterInfo {
                server: server.clone(),
                certificate_authority_data: cluster.certificate_authority_data.clone(),
                insecure_skip_tls_verify: cluster.insecure_skip_tls_verify.unwrap_or(false),
            };
            Credential::Exec(Arc::new(ExecPlugin::new(exec, &user_name, &cluster_info)?))
        }
        (None, None, None) => Credential::None,
    };
    let client_certificate = match (&auth.client_certificate_data, &auth.client_certificate) {
        (Some(data), _) => Some(PemSource::Inline(decode_data(
            "client-certificate-data",
            data,
        )?)),
        (None, Some(path)) => Some(PemSource::File(PathBuf::from(path))),
        (None, None) => None,
    };
    let client_key = match (&auth.client_key_data, &auth.client_key) {
        (Some(data), _) => Some(PemSource::Inline(decode_data(
            "client-key-data",
            data.expose_secret(),
        )?)),
        (None, Some(path)) => Some(PemSource::File(PathBuf::from(path))),
        (None, None) => None,
    };
    if client_certificate.is_some() != client_key.is_some() {
        return Err(ConnectionError::new(format!(
            "user {user_name:?} has a client certificate without its key (or a key without its certificate)"
        )));
    }
    Ok(ConnectionSpec {
        server: server.trim_end_matches('/').to_owned(),
        ca,
        insecure_skip_tls_verify: cluster.insecure_skip_tls_verify.unwrap_or(false),
        credential,
        client_certificate,
        client_key,
        namespace: named_context.namespace.clone().filter(|n| !n.is_empty()),
        identity: format!("kubeconfig user {user_name:?} (context {context_name:?})"),
    })
}

fn decode_data(field: &str, data: &str) -> Result<Vec<u8>, ConnectionError> {
    STANDARD
        .decode(data.trim())
        .map_err(|e| ConnectionError::new(format!("kubeconfig {field} is not base64: {e}")))
}

impl ConnectionSpec {
    /// Where the CA comes from, for messages ("file /path/ca.crt"), if one is configured.
    pub fn ca_origin(&self) -> Option<String> {
        self.ca
            .as_ref()
            .map(|ca| ca.origin("certificate-authority-data"))
    }

    /// The cluster CA, PEM, for the projected `ca.crt` (empty when none is configured).
    pub fn ca_pem(&self) -> Result<Vec<u8>, ConnectionError> {
        self.ca
            .as_ref()
            .map(|ca| ca.read("certificate authority"))
            .transpose()
            .map(Option::unwrap_or_default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_cluster_needs_both_variables_and_brackets_ipv6() {
        let dir = Path::new("/nonexistent");
        assert!(in_cluster(None, Some("443"), dir).is_err());
        assert!(in_cluster(Some("10.0.0.1"), Some(""), dir).is_err());
        let spec = in_cluster(Some("fd00::1"), Some("443"), dir).expect("spec");
        assert_eq!(spec.server, "https://[fd00::1]:443");
        assert_eq!(
            in_cluster_server("10.96.0.1", "443"),
            "https://10.96.0.1:443"
        );
        assert!(matches!(spec.credential, Credential::TokenFile(ref p) if p.ends_with("token")));
    }

    const KUBECONFIG: &str = r#"
apiVersion: v1
kind: Config
current-context: dev
contexts:
- name: dev
  context: {cluster: c1, user: u1, namespace: team-a}
- name: certs
  context: {cluster: c1, user: u2}
- name: exec
  context: {cluster: c1, user: u3}
- name: broken
  context: {cluster: nowhere, user: u1}
clusters:
- name: c1
  cluster:
    server: https://127.0.0.1:6443/
    certificate-authority-data: LS0tLS1CRUdJTg==
users:
- name: u1
  user: {token: secret-token}
- name: u2
  user: {client-certificate: /certs/c.pem, client-key: /certs/k.pem}
- name: u3
  user:
    exec: {apiVersion: client.authentication.k8s.io/v1, command: aws}
"#;

    const NOW: jiff::Timestamp = jiff::Timestamp::UNIX_EPOCH;

    #[tokio::test]
    async fn kubeconfig_contexts_resolve_to_connections() {
        let config = Kubeconfig::from_yaml(KUBECONFIG).expect("kubeconfig");
        let dev = from_kubeconfig(&config, None).expect("current context");
        assert_eq!(dev.server, "https://127.0.0.1:6443");
        assert_eq!(dev.namespace.as_deref(), Some("team-a"));
        assert!(matches!(dev.ca, Some(PemSource::Inline(ref b)) if b == b"-----BEGIN"));
        assert_eq!(
            dev.credential
                .bearer_token(NOW)
                .await
                .ok()
                .flatten()
                .as_deref(),
            Some("secret-token")
        );
        assert!(
            !format!("{dev:?}").contains("secret-token"),
            "a Debug print must not show the token"
        );

        let certs = from_kubeconfig(&config, Some("certs")).expect("certs context");
        assert!(matches!(certs.credential, Credential::None));
        assert!(
            matches!(certs.client_key, Some(PemSource::File(ref p)) if p == Path::new("/certs/k.pem"))
        );

        let exec = from_kubeconfig(&config, Some("exec")).expect("exec context");
        assert!(matches!(exec.credential, Credential::Exec(_)));
        let broken = from_kubeconfig(&config, Some("broken")).unwrap_err();
        assert!(broken.0.contains("\"nowhere\""), "{broken}");
        let missing = from_kubeconfig(&config, Some("nope")).unwrap_err();
        assert!(missing.0.contains("\"nope\""), "{missing}");
    }
}
