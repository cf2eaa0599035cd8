//! The HTTP client for the API server of a [`ConnectionSpec`]: TLS trusting only the cluster CA
//! (see [`super::server_trust`]), the client certificate if any, and the time limits of a request.

use std::time::Duration;

use super::config::ConnectionSpec;
use super::ConnectionError;

/// A client certificate chain and its key, PEM.
type IdentityPem = (Vec<u8>, Vec<u8>);

/// Time limits of one API request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Builds the HTTP client: TLS trusting only the cluster CA (see [`super::server_trust`]),
/// the client identity if any.
pub fn http_client(spec: &ConnectionSpec) -> Result<reqwest::Client, ConnectionError> {
    let mut builder = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .user_agent(concat!("projected-token/", env!("CARGO_PKG_VERSION")));
    if spec.insecure_skip_tls_verify {
        tracing::warn!(server = %spec.server, "insecure-skip-tls-verify: the API server's certificate is not verified");
        builder = builder.tls_danger_accept_invalid_certs(true);
    } else if let Some(ca) = &spec.ca {
        // Our own rustls configuration carries the CA and the client identity.
        let pem = ca.read("certificate authority")?;
        let identity = identity_pem(spec)?;
        let tls = super::server_trust::client_config(
            &pem,
            identity.as_ref().map(|(c, k)| (c.as_slice(), k.as_slice())),
        )
        .map_err(|e| {
            ConnectionError::new(format!(
                "certificate authority ({}) or client certificate: {e}",
                ca.origin("certificate-authority-data")
            ))
        })?;
        return builder
            .tls_backend_preconfigured(tls)
            .build()
            .map_err(|e| ConnectionError::new(format!("HTTP client for {}: {e}", spec.server)));
    }
    if let Some((cert, key)) = identity_pem(spec)? {
        let mut pem = cert;
        pem.push(b'\n');
        pem.extend(key);
        let identity = reqwest::Identity::from_pem(&pem)
            .map_err(|e| ConnectionError::new(format!("client certificate and key: {e}")))?;
        builder = builder.identity(identity);
    }
    builder
        .build()
        .map_err(|e| ConnectionError::new(format!("HTTP client for {}: {e}", spec.server)))
}

/// The client certificate chain and key, PEM, if configured.
fn identity_pem(spec: &ConnectionSpec) -> Result<Option<IdentityPem>, ConnectionError> {
    match (&spec.client_certificate, &spec.client_key) {
        (Some(cert), Some(key)) => Ok(Some((
            cert.read("client certificate")?,
            key.read("client key")?,
        ))),
        _ => Ok(None),
    }
}
