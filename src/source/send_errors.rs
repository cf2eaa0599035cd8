//! Plain words for a request to the API server that got no answer: the TLS and protocol mistakes
//! met first (the wrong CA, `http://` against an HTTPS port and back), naming what to fix.

/// The server and the trust the request was made with, for the words.
#[derive(Debug, Clone, Copy)]
pub struct SendContext<'a> {
    /// The server's base URL (`https://host:port`).
    pub server: &'a str,
    /// Where the configured CA comes from ("file /x/ca.crt"); `None`: the system's roots.
    pub ca_origin: Option<&'a str>,
}

/// What the failure means and what to do, when it is one of the known configuration mistakes
/// (trust or protocol: waiting will not cure them); `None` leaves the error's own words.
pub fn explain(
    error: &(dyn std::error::Error + 'static),
    context: SendContext<'_>,
) -> Option<String> {
    let plain_http = context.server.starts_with("http://");
    if let Some(tls) = rustls_error(error) {
        return explain_tls(tls, context);
    }
    // hyper's words for a response that does not start as HTTP/1.x does: here, a TLS alert.
    if plain_http && crate::errors::error_chain(error).contains("invalid HTTP version") {
        return Some(format!(
            "{} is a plain-HTTP URL, but the server did not answer in plain HTTP (it speaks HTTPS): use https:// in the server URL",
            context.server
        ));
    }
    None
}

fn explain_tls(error: &rustls::Error, context: SendContext<'_>) -> Option<String> {
    use rustls::CertificateError as Cert;
    let trusted = match context.ca_origin {
        Some(origin) => format!("the configured CA ({origin})"),
        None => "the system's CAs (no CA is configured)".to_owned(),
    };
    let where_ca = "kubeconfig certificate-authority or certificate-authority-data; in-cluster: ca.crt in --credentials-dir";
    match error {
        rustls::Error::InvalidCertificate(Cert::UnknownIssuer) => Some(format!(
            "the CA does not match: the server's certificate is not signed by {trusted}; give the CA that signed it ({where_ca})"
        )),
        rustls::Error::InvalidCertificate(
            Cert::NotValidForName | Cert::NotValidForNameContext { .. },
        ) => Some(format!(
            "the server's certificate does not name the host of {}; use a host name or address it holds (its subject alternative names)",
            context.server
        )),
        rustls::Error::InvalidCertificate(
            Cert::Expired | Cert::ExpiredContext { .. } | Cert::NotValidYet | Cert::NotValidYetContext { .. },
        ) => Some(format!(
            "the server's certificate is outside its validity period ({error}); renew it, or check this machine's clock"
        )),
        // webpki's `CaUsedAsEndEntity` (no rustls variant of its own): a CA certificate serving,
        // and not one of ours, or it would have been accepted (see `server_trust`).
        rustls::Error::InvalidCertificate(Cert::Other(other))
            if format!("{other:?}").contains("CaUsedAsEndEntity") =>
        {
            Some(format!(
                "the CA does not match: the server's certificate is a CA certificate that is not {trusted}; if the server serves with its own CA certificate, give that certificate as the CA ({where_ca})"
            ))
        }
        rustls::Error::InvalidCertificate(other) => Some(format!(
            "the server's certificate was refused ({other:?}), trusting {trusted}"
        )),
        // A plain-HTTP server answers the TLS hello with an HTTP error page: not a TLS record.
        rustls::Error::InvalidMessage(_) => Some(format!(
            "the server at {} speaks plain HTTP, not TLS: use its HTTPS port, or an http:// URL for a plain-HTTP endpoint such as `kubectl proxy`",
            context.server
        )),
        _ => None,
    }
}

/// The rustls error in `error`'s chain, if any, also inside `io::Error`s, whose `source` skips
/// the error they wrap (hyper-rustls wraps tokio-rustls' `io::Error` in another one).
fn rustls_error<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut next = Some(error);
    while let Some(cause) = next {
        let mut inner: &(dyn std::error::Error + 'static) = cause;
        loop {
            if let Some(tls) = inner.downcast_ref::<rustls::Error>() {
                return Some(tls);
            }
            match inner
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
            {
                Some(wrapped) => inner = wrapped,
                None => break,
            }
        }
        next = cause.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("client error (Connect)")]
    struct Outer(#[source] std::io::Error);

    /// As hyper-rustls hands it over: tokio-rustls' `io::Error` in another `io::Error`.
    fn wrapped(tls: rustls::Error) -> Outer {
        Outer(std::io::Error::other(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            tls,
        )))
    }

    const HTTPS: SendContext<'static> = SendContext {
        server: "https://10.0.0.1:6443",
        ca_origin: Some("file /etc/ca.crt"),
    };

    #[test]
    fn a_wrong_ca_names_the_ca_file() {
        let error = wrapped(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer,
        ));
        let text = explain(&error, HTTPS).unwrap_or_default();
        assert!(text.starts_with("the CA does not match"), "{text}");
        assert!(text.contains("file /etc/ca.crt"), "{text}");
        let system = explain(
            &error,
            SendContext {
                ca_origin: None,
                ..HTTPS
            },
        )
        .unwrap_or_default();
        assert!(system.contains("no CA is configured"), "{system}");
    }

    #[test]
    fn plain_http_on_either_side_is_said() {
        let error = wrapped(rustls::Error::InvalidMessage(
            rustls::InvalidMessage::InvalidContentType,
        ));
        let text = explain(&error, HTTPS).unwrap_or_default();
        assert!(text.contains("speaks plain HTTP, not TLS"), "{text}");

        #[derive(Debug, thiserror::Error)]
        #[error("client error (SendRequest): invalid HTTP version parsed")]
        struct Parse;
        let plain = SendContext {
            server: "http://10.0.0.1:6443",
            ..HTTPS
        };
        let text = explain(&Parse, plain).unwrap_or_default();
        assert!(text.contains("use https://"), "{text}");
        assert_eq!(explain(&Parse, HTTPS), None);
    }

    #[test]
    fn other_errors_keep_their_own_words() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(explain(&refused, HTTPS), None);
    }
}
