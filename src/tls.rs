//! The emulator's certificate authority: its certificate is the `ca.crt` projected into volumes, so
//! a client configured "in-cluster" from a projected directory trusts the emulator as in a pod.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

/// Lifetime of a serving or client certificate: long enough for any test run, short enough to be
/// obviously not a real server's (kubeadm's admin certificate lasts a year too).
const LEAF_CERTIFICATE_DAYS: i64 = 365;

/// The X.520 `organizationName` attribute: a certificate user's groups.
const ORGANIZATION_OID: [u64; 4] = [2, 5, 4, 10];

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
    #[error("cannot issue a client certificate: {0}")]
    Client(String),
    #[error("TLS server configuration: {0}")]
    Config(String),
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
        params.not_after = unix_to_offset(now + LEAF_CERTIFICATE_DAYS * 24 * 3600);
        let key = KeyPair::generate().map_err(|e| TlsError::Serving(e.to_string()))?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| TlsError::Serving(e.to_string()))?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// A client certificate signed by this CA, as kube-apiserver's `--client-ca-file` maps it:
    /// subject CN `common_name` is the user name, each O of `organizations` a group
    /// (`system:masters` makes an admin). EKU clientAuth, a fresh EC P-256 key:
    /// `(certificate PEM, private key PEM)`.
    ///
    /// At most two organizations: rcgen keeps one value per attribute type, and the second is
    /// written through its custom attribute type with the same OID.
    pub fn client_certificate(
        &self,
        common_name: &str,
        organizations: &[String],
    ) -> Result<(String, String), TlsError> {
        if common_name.is_empty() {
            // Upstream does not authenticate a certificate without a CN.
            return Err(TlsError::Client(
                "the common name (the user name) is empty".to_owned(),
            ));
        }
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, common_name);
        match organizations {
            [] => {}
            [one] => name.push(DnType::OrganizationName, one.as_str()),
            [first, second] => {
                name.push(DnType::OrganizationName, first.as_str());
                name.push(
                    DnType::CustomDnType(ORGANIZATION_OID.to_vec()),
                    second.as_str(),
                );
            }
            more => {
                return Err(TlsError::Client(format!(
                    "{} organizations (groups) given; at most two are supported",
                    more.len()
                )))
            }
        }
        let mut params = CertificateParams::default();
        params.distinguished_name = name;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let now = jiff::Timestamp::now().as_second();
        params.not_before = unix_to_offset(now - 3600);
        params.not_after = unix_to_offset(now + LEAF_CERTIFICATE_DAYS * 24 * 3600);
        let key = KeyPair::generate().map_err(|e| TlsError::Client(e.to_string()))?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| TlsError::Client(e.to_string()))?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// The HTTPS server configuration for a serving certificate of this CA: ALPN `h2` and
    /// `http/1.1`, and a client certificate asked for but not required, as kube-apiserver with
    /// `--client-ca-file`. One that is presented must chain to this CA (with EKU clientAuth), or
    /// the handshake fails.
    pub fn server_config(
        &self,
        cert_pem: &str,
        key_pem: &str,
    ) -> Result<rustls::ServerConfig, TlsError> {
        let config_error = |e: &dyn std::fmt::Display| TlsError::Config(e.to_string());
        // The process-wide provider if one is installed (main installs aws-lc-rs), so a
        // library user's choice is kept; otherwise aws-lc-rs, never an ambiguity panic.
        let provider = rustls::crypto::CryptoProvider::get_default()
            .cloned()
            .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(self.cert_pem.as_bytes()) {
            roots
                .add(ca.map_err(|e| config_error(&e))?)
                .map_err(|e| config_error(&e))?;
        }
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .allow_unauthenticated()
                .build()
                .map_err(|e| config_error(&e))?;
        let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| config_error(&e))?;
        let key =
            PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| config_error(&e))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| config_error(&e))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .map_err(|e| config_error(&e))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }

    /// The CA's private key, PEM (PKCS#8), e.g. to keep a generated CA.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
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
    fn client_certificate_verifies_as_a_client_of_its_ca_only() {
        use rustls::pki_types::UnixTime;

        let der =
            |pem_text: &str| CertificateDer::from(pem::parse(pem_text).unwrap().into_contents());
        let ca = CertificateAuthority::generate("test CA").unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(der(ca.cert_pem())).unwrap();
        let verifier = WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
        )
        .build()
        .unwrap();
        let verify =
            |cert_pem: &str| verifier.verify_client_cert(&der(cert_pem), &[], UnixTime::now());

        let (cert, key) = ca
            .client_certificate("alice", &["devs".to_owned()])
            .unwrap();
        assert!(key.contains("PRIVATE KEY"));
        verify(&cert).unwrap();
        let other = CertificateAuthority::generate("other CA").unwrap();
        assert!(verify(&other.client_certificate("alice", &[]).unwrap().0).is_err());
        // A serving certificate lacks EKU clientAuth.
        let (serving, serving_key) = ca.serving_certificate(&["localhost".to_owned()]).unwrap();
        assert!(verify(&serving).is_err());

        let three = ["a".to_owned(), "b".to_owned(), "c".to_owned()];
        assert!(ca.client_certificate("alice", &three).is_err());
        let config = ca.server_config(&serving, &serving_key).unwrap();
        assert_eq!(
            config.alpn_protocols,
            [b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        assert!(ca.server_config(&serving, "not a key").is_err());
    }

    #[test]
    fn key_in_place_of_certificate_is_a_clear_error() {
        let ca = CertificateAuthority::generate("test CA").unwrap();
        let key_pem = ca.issuer().key().serialize_pem();
        let err = CertificateAuthority::from_pem(&key_pem, &key_pem).unwrap_err();
        assert!(err.to_string().contains("--ca-cert"), "{err}");
    }
}
