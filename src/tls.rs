//! The emulator's certificate authority: its certificate is the `ca.crt` projected into volumes, so
//! a client configured "in-cluster" from a projected directory trusts the emulator as in a pod.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// Lifetime of a serving certificate: long enough for any test run, short enough to be obviously
/// not a real server's.
const SERVING_CERTIFICATE_DAYS: i64 = 365;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("CA certificate: {0}; give a PEM `CERTIFICATE` block of a CA (--ca-cert)")]
    Certificate(String),
    #[error("CA key: {0}; give the PEM private key that belongs to --ca-cert (--ca-key)")]
    Key(String),
    #[error("cannot generate the CA: {0}")]
    Generate(String),
    #[error("cannot issue a serving certificate: {0}")]
    Serving(String),
}

/// A CA that can sign serving certificates. Its private key never leaves memory unless the user
/// supplied it.
pub struct CertificateAuthority {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// A fresh self-signed CA with an EC P-256 key (fast to generate, accepted by every client).
    pub fn generate(common_name: &str) -> Result<Self, TlsError> {
        let key = KeyPair::generate().map_err(|e| TlsError::Generate(e.to_string()))?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, common_name);
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = jiff::Timestamp::now().as_second();
        params.not_before = unix_to_offset(now - 3600);
        params.not_after = unix_to_offset(now + 10 * 365 * 24 * 3600);
        let cert = params
            .self_signed(&key)
            .map_err(|e| TlsError::Generate(e.to_string()))?;
        Ok(Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads a CA from its PEM certificate and private key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, TlsError> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| TlsError::Key(e.to_string()))?;
        let cert = pem::parse(cert_pem).map_err(|e| TlsError::Certificate(e.to_string()))?;
        if cert.tag() != "CERTIFICATE" {
            return Err(TlsError::Certificate(format!(
                "found a PEM `{}` block",
                cert.tag()
            )));
        }
        let issuer = Issuer::from_ca_cert_der(&cert.contents().to_vec().into(), key)
            .map_err(|e| TlsError::Certificate(e.to_string()))?;
        Ok(Self {
            cert_pem: cert_pem.to_owned(),
            issuer,
        })
    }

    /// The CA certificate, PEM: the content of `ca.crt`.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A serving certificate signed by this CA for `sans` (DNS names, or IP addresses, which
    /// become IP SANs), with a fresh EC P-256 key: `(certificate PEM, private key PEM)`.
    pub fn serving_certificate(&self, sans: &[String]) -> Result<(String, String), TlsError> {
        let Some(first) = sans.first() else {
            return Err(TlsError::Serving(
                "no subject alternative names given; name at least one host or IP".to_owned(),
            ));
        };
        let mut params = CertificateParams::new(sans.to_vec())
            .map_err(|e| TlsError::Serving(format!("subject alternative names {sans:?}: {e}")))?;
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, first.as_str());
        params.distinguished_name = name;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let now = jiff::Timestamp::now().as_second();
        // An hour of slack for clocks slightly behind ours.
        params.not_before = unix_to_offset(now - 3600);
        params.not_after = unix_to_offset(now + SERVING_CERTIFICATE_DAYS * 24 * 3600);
        let key = KeyPair::generate().map_err(|e| TlsError::Serving(e.to_string()))?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| TlsError::Serving(e.to_string()))?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// The issuer used to sign serving certificates.
    pub fn issuer(&self) -> &Issuer<'static, KeyPair> {
        &self.issuer
    }
}

fn unix_to_offset(seconds: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(seconds).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ca_round_trips_through_pem() {
        let ca = CertificateAuthority::generate("test CA").unwrap();
        assert!(ca.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        let key_pem = ca.issuer().key().serialize_pem();
        let loaded = CertificateAuthority::from_pem(ca.cert_pem(), &key_pem).unwrap();
        assert_eq!(loaded.cert_pem(), ca.cert_pem());
    }

    #[test]
    fn serving_certificate_verifies_against_the_ca_for_its_names_only() {
        use std::sync::Arc;

        use rustls::client::danger::ServerCertVerifier as _;
        use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

        let der =
            |pem_text: &str| CertificateDer::from(pem::parse(pem_text).unwrap().into_contents());
        let ca = CertificateAuthority::generate("test CA").unwrap();
        let sans = ["localhost".to_owned(), "127.0.0.1".to_owned()];
        let (cert_pem, key_pem) = ca.serving_certificate(&sans).unwrap();
        assert!(key_pem.contains("PRIVATE KEY"));

        let mut roots = rustls::RootCertStore::empty();
        roots.add(der(ca.cert_pem())).unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
        )
        .build()
        .unwrap();
        let verify = |name: &'static str| {
            verifier.verify_server_cert(
                &der(&cert_pem),
                &[],
                &ServerName::try_from(name).unwrap(),
                &[],
                UnixTime::now(),
            )
        };
        verify("localhost").unwrap();
        verify("127.0.0.1").unwrap();
        assert!(verify("example.com").is_err());
        assert!(ca.serving_certificate(&[]).is_err());
    }

    #[test]
    fn key_in_place_of_certificate_is_a_clear_error() {
        let ca = CertificateAuthority::generate("test CA").unwrap();
        let key_pem = ca.issuer().key().serialize_pem();
        let err = CertificateAuthority::from_pem(&key_pem, &key_pem).unwrap_err();
        assert!(err.to_string().contains("--ca-cert"), "{err}");
    }
}
