//! Signing keys: generated or loaded from PEM, with the `kid` kube-apiserver derives.

/// Signature algorithm of a key: RSA keys sign RS256, P-256 keys ES256 (as upstream).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyAlgorithm {
    Rs256,
    Es256,
}

impl KeyAlgorithm {
    /// The JOSE name: `RS256` or `ES256`.
    pub fn jose_name(self) -> &'static str {
        match self {
            Self::Rs256 => "RS256",
            Self::Es256 => "ES256",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{0}")]
    Invalid(String),
}

/// A private signing key with its cached signer and `kid`.
pub struct SigningKey {}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").finish_non_exhaustive()
    }
}

impl SigningKey {
    pub fn generate(algorithm: KeyAlgorithm) -> Result<Self, KeyError> {
        todo!("{algorithm:?}")
    }
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        todo!("{}", pem.len())
    }
    pub fn algorithm(&self) -> KeyAlgorithm {
        todo!()
    }
    pub fn kid(&self) -> &str {
        todo!()
    }
    /// Compact JWS `header.payload.signature` of `claims`, header `{"alg":..,"kid":..}`.
    pub fn sign_jwt<T: serde::Serialize>(&self, claims: &T) -> Result<String, KeyError> {
        let _ = serde_json::to_vec(claims);
        todo!()
    }
    /// The public key as a JWK, in upstream's field order.
    pub fn public_jwk(&self) -> serde_json::Value {
        todo!()
    }
    /// PEM of the private key (PKCS#8), e.g. to save a generated key.
    pub fn private_key_pem(&self) -> String {
        todo!()
    }
    /// PEM of the public key (SubjectPublicKeyInfo).
    pub fn public_key_pem(&self) -> String {
        todo!()
    }
}
