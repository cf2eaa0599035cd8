//! How the sidecar trusts the API server when a CA is configured: the CA bundle, verified by
//! rustls' webpki verifier (as reqwest would), plus the one case client-go, kubectl and OpenSSL
//! accept and webpki refuses: a serving certificate that is itself one of the configured CA
//! certificates. Small dev clusters often serve with their self-signed CA:TRUE certificate and
//! hand out that same certificate as the CA; webpki calls it `CaUsedAsEndEntity`, while Go's
//! `x509.Certificate.Verify` accepts a leaf found in the root pool as a chain of its own (still
//! checking its validity period, name and extended key usage), and so do we.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

/// Verifies the server's certificate against the configured CA certificates.
#[derive(Debug)]
pub struct TrustedServerVerifier {
    /// The configured CA certificates, DER, as given.
    anchors: Vec<CertificateDer<'static>>,
    webpki: Arc<WebPkiServerVerifier>,
}

impl TrustedServerVerifier {
    /// A verifier trusting exactly `anchors` (DER CA certificates).
    pub fn new(
        anchors: Vec<CertificateDer<'static>>,
        provider: Arc<rustls::crypto::CryptoProvider>,
    ) -> Result<Self, rustls::Error> {
        let mut roots = rustls::RootCertStore::empty();
        for anchor in &anchors {
            roots.add(anchor.clone())?;
        }
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        Ok(Self { anchors, webpki })
    }
}

impl ServerCertVerifier for TrustedServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let strict = self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        match strict {
            Ok(verified) => Ok(verified),
            // Trusted as configured, byte for byte: no chain to build, the rest still checked.
            Err(_)
                if self
                    .anchors
                    .iter()
                    .any(|a| a.as_ref() == end_entity.as_ref()) =>
            {
                check_anchor_as_server(end_entity, server_name, now)?;
                Ok(ServerCertVerified::assertion())
            }
            Err(err) => Err(err),
        }
    }

    // The handshake signature is made with the end entity's key, whichever way it was trusted.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }

    fn root_hint_subjects(&self) -> Option<&[rustls::DistinguishedName]> {
        self.webpki.root_hint_subjects()
    }
}

/// What Go checks of a leaf that is itself a root: its validity period at `now`, that it names
/// `server_name` (SAN DNS name or IP address) and, when it limits its extended key usage, that
/// serverAuth is among them.
pub fn check_anchor_as_server(
    cert: &CertificateDer<'_>,
    server_name: &ServerName<'_>,
    now: UnixTime,
) -> Result<(), rustls::Error> {
    let bad = |e: CertificateError| rustls::Error::InvalidCertificate(e);
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|_| bad(CertificateError::BadEncoding))?;
    let now_seconds = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    let validity = parsed.validity();
    if now_seconds < validity.not_before.timestamp() {
        return Err(bad(CertificateError::NotValidYet));
    }
    if now_seconds > validity.not_after.timestamp() {
        return Err(bad(CertificateError::Expired));
    }
    let usage = parsed
        .extended_key_usage()
        .map_err(|_| bad(CertificateError::BadEncoding))?;
    if let Some(usage) = usage {
        if !usage.value.any && !usage.value.server_auth {
            return Err(bad(CertificateError::InvalidPurpose));
        }
    }
    let end_entity = rustls::server::ParsedCertificate::try_from(cert)?;
    rustls::client::verify_server_name(&end_entity, server_name)
}

/// The TLS client configuration for a server whose CA is `ca_pem`, with the client certificate
/// chain and key if any: ALPN `h2` and `http/1.1`, as reqwest configures its own.
pub fn client_config(
    ca_pem: &[u8],
    identity: Option<(&[u8], &[u8])>,
) -> Result<rustls::ClientConfig, String> {
    let anchors = CertificateDer::pem_slice_iter(ca_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not PEM: {e}"))?;
    if anchors.is_empty() {
        return Err("no PEM CERTIFICATE block found".to_owned());
    }
    // The process-wide provider when one is installed (main installs aws-lc-rs).
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    let verifier = TrustedServerVerifier::new(anchors, provider.clone())
        .map_err(|e| format!("not a usable CA certificate: {e}"))?;
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let mut config = match identity {
        Some((cert_pem, key_pem)) => {
            let chain = CertificateDer::pem_slice_iter(cert_pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("client certificate: {e}"))?;
            if chain.is_empty() {
                return Err("client certificate: no PEM CERTIFICATE block found".to_owned());
            }
            let key =
                PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| format!("client key: {e}"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("client certificate and key: {e}"))?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rcgen::{
        BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };

    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn at(seconds: u64) -> UnixTime {
        UnixTime::since_unix_epoch(Duration::from_secs(seconds))
    }

    /// A self-signed CA:TRUE certificate for `sans` (subjects differ by SANs and usages), valid
    /// an hour either side of [`NOW`].
    fn self_signed_ca(
        sans: &[&str],
        usages: Vec<ExtendedKeyUsagePurpose>,
    ) -> CertificateDer<'static> {
        let key = KeyPair::generate().expect("key");
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{sans:?} {usages:?}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.extended_key_usages = usages;
        let offset = |s: u64| time::OffsetDateTime::from_unix_timestamp(s as i64).expect("time");
        params.not_before = offset(NOW - 3600);
        params.not_after = offset(NOW + 3600);
        params.self_signed(&key).expect("certificate").der().clone()
    }

    fn verifier(anchors: &[&CertificateDer<'static>]) -> TrustedServerVerifier {
        TrustedServerVerifier::new(
            anchors.iter().map(|a| (*a).clone()).collect(),
            Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
        )
        .expect("verifier")
    }

    fn name(text: &'static str) -> ServerName<'static> {
        ServerName::try_from(text).expect("server name")
    }

    #[test]
    fn a_ca_certificate_serving_as_itself_is_accepted_with_its_checks() {
        let ca = self_signed_ca(&["127.0.0.1", "dev.local"], vec![]);
        let other = self_signed_ca(&["127.0.0.1"], vec![]);
        let trusting = verifier(&[&other, &ca]);
        let verify =
            |v: &TrustedServerVerifier, n, t| v.verify_server_cert(&ca, &[], &name(n), &[], at(t));
        // webpki alone refuses it.
        let strict = trusting
            .webpki
            .verify_server_cert(&ca, &[], &name("127.0.0.1"), &[], at(NOW))
            .err()
            .map(|e| format!("{e:?}"))
            .unwrap_or_default();
        assert!(strict.contains("CaUsedAsEndEntity"), "{strict}");
        assert!(verify(&trusting, "127.0.0.1", NOW).is_ok());
        assert!(verify(&trusting, "dev.local", NOW).is_ok());
        // The name, the validity period and the trust itself still count.
        assert!(matches!(
            verify(&trusting, "example.com", NOW),
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForNameContext { .. }
            ))
        ));
        assert!(matches!(
            verify(&trusting, "127.0.0.1", NOW + 7200),
            Err(rustls::Error::InvalidCertificate(CertificateError::Expired))
        ));
        assert!(matches!(
            verify(&trusting, "127.0.0.1", NOW - 7200),
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidYet
            ))
        ));
        // Not a configured certificate: webpki's answer stands.
        let untrusted = verify(&verifier(&[&other]), "127.0.0.1", NOW)
            .err()
            .map(|e| format!("{e:?}"))
            .unwrap_or_default();
        assert!(untrusted.contains("CaUsedAsEndEntity"), "{untrusted}");
    }

    #[test]
    fn extended_key_usage_must_allow_serving() {
        let client_only = self_signed_ca(&["127.0.0.1"], vec![ExtendedKeyUsagePurpose::ClientAuth]);
        let serving = self_signed_ca(&["127.0.0.1"], vec![ExtendedKeyUsagePurpose::ServerAuth]);
        assert!(matches!(
            check_anchor_as_server(&client_only, &name("127.0.0.1"), at(NOW)),
            Err(rustls::Error::InvalidCertificate(
                CertificateError::InvalidPurpose
            ))
        ));
        assert!(check_anchor_as_server(&serving, &name("127.0.0.1"), at(NOW)).is_ok());
    }

    #[test]
    fn client_config_needs_a_certificate_and_offers_h2() {
        let ca = crate::tls::CertificateAuthority::generate("test CA").expect("CA");
        let config = client_config(ca.cert_pem().as_bytes(), None).expect("config");
        assert_eq!(
            config.alpn_protocols,
            [b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        assert!(!config.client_auth_cert_resolver.has_certs());
        let (cert, key) = ca
            .client_certificate("alice", &[])
            .expect("client certificate");
        let with_identity = client_config(
            ca.cert_pem().as_bytes(),
            Some((cert.as_bytes(), key.as_bytes())),
        )
        .expect("config");
        assert!(with_identity.client_auth_cert_resolver.has_certs());
        for bad in [
            &b""[..],
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        ] {
            assert!(client_config(bad, None).is_err());
        }
        assert!(
            client_config(ca.cert_pem().as_bytes(), Some((cert.as_bytes(), b"no key"))).is_err()
        );
    }
}
