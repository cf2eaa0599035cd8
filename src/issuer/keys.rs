//! Signing keys: generated or loaded from PEM, with the `kid` kube-apiserver derives.
//!
//! Signing uses a cached aws-lc-rs key pair and builds the compact JWS by hand: going through
//! `jsonwebtoken::encode` would re-parse the private key on every call (about 2.5x slower for RSA).

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize, PublicKeyComponents};
use aws_lc_rs::signature::{
    EcdsaKeyPair, EcdsaSigningAlgorithm, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING,
    ECDSA_P384_SHA384_FIXED_SIGNING, ECDSA_P521_SHA512_FIXED_SIGNING, RSA_PKCS1_SHA256,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

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

/// What the accepted key forms are, appended to every load error.
const ACCEPTED: &str = "give an RSA or EC P-256 private key (PKCS#1, PKCS#8 or SEC1 PEM)";

/// Key errors. Messages name the problem and never include key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The PEM could not be loaded as a signing key.
    #[error("{0}")]
    Invalid(String),
    /// Key generation failed inside the crypto library.
    #[error("signing key: generating a {0} key failed")]
    Generate(&'static str),
    /// Exporting the key (PKCS#8 / SPKI DER) failed inside the crypto library.
    #[error("signing key: encoding the {0} failed")]
    Encode(&'static str),
    /// The claims could not be serialised to JSON.
    #[error("serialising the token claims failed: {0}")]
    Claims(String),
    /// The signature operation itself failed.
    #[error("signing with key {kid} failed")]
    Sign { kid: String },
}

/// aws-lc-rs's accepted RSA sizes, named when it rejects a key.
const RSA_SIZES: &str = "RSA keys of 2048 to 8192 bits are supported";

/// aws-lc-rs's rejection reasons are CamelCase identifiers; say them in words.
fn rejected(e: &aws_lc_rs::error::KeyRejected) -> String {
    match e.description_() {
        "TooSmall" => "key too small".into(),
        "TooLarge" => "key too large".into(),
        "InvalidEncoding" => "invalid encoding".into(),
        "InconsistentComponents" => "inconsistent key components".into(),
        other => other.to_string(),
    }
}

fn invalid(problem: impl std::fmt::Display) -> KeyError {
    KeyError::Invalid(format!("signing key: {problem}; {ACCEPTED}"))
}

/// One public key in JWKS form. Field order is upstream's (`use, kty, kid, crv, alg, x, y, n, e`)
/// so the serialised bytes match kube-apiserver's `/openid/v1/jwks`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    #[serde(rename = "use")]
    pub key_use: String,
    pub kty: String,
    pub kid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    pub alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
}

enum Signer {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
}

/// Signature bytes as each backend returns them. aws-lc-rs's ECDSA `Signature` is a large
/// fixed buffer, but it only lives on the stack for one call: boxing it would add an allocation.
#[allow(clippy::large_enum_variant)]
enum Signature {
    Rsa(Vec<u8>),
    Ec(aws_lc_rs::signature::Signature),
}

impl AsRef<[u8]> for Signature {
    fn as_ref(&self) -> &[u8] {
        match self {
            Self::Rsa(sig) => sig,
            Self::Ec(sig) => sig.as_ref(),
        }
    }
}

/// A private signing key with its cached signer and `kid`.
pub struct SigningKey {
    signer: Signer,
    kid: String,
    /// `base64url(header) + "."`, fixed per key, so signing only encodes the claims.
    header_prefix: String,
    spki_der: Vec<u8>,
    /// Exported once at load so `private_key_pem` cannot fail later.
    pkcs8_der: Vec<u8>,
    jwk: Jwk,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Only public facts: the private key never reaches a log line.
        f.debug_struct("SigningKey")
            .field("algorithm", &self.algorithm())
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// `base64url-nopad(SHA-256(SPKI DER))`, as `keyIDFromPublicKey` in kube-apiserver.
pub fn kid_from_spki_der(spki_der: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, spki_der);
    URL_SAFE_NO_PAD.encode(digest.as_ref())
}

/// The JWK of a key given only to verify tokens (`--extra-verification-keys`, as upstream's
/// `--service-account-key-file`): a PEM `PUBLIC KEY` (SubjectPublicKeyInfo) of an RSA or P-256
/// key, or any private key [`SigningKey::from_pem`] accepts.
pub fn verification_jwk_from_pem(pem_text: &str) -> Result<Jwk, KeyError> {
    let blocks = pem::parse_many(pem_text).map_err(|e| invalid(pem_error(&e)))?;
    let Some(public) = blocks.iter().find(|b| b.tag() == "PUBLIC KEY") else {
        return SigningKey::from_pem(pem_text).map(|key| key.public_jwk());
    };
    use x509_parser::prelude::FromDer as _;
    let spki_der = public.contents();
    let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki_der).map_err(|e| {
        invalid(format!(
            "PEM block `PUBLIC KEY` is not a SubjectPublicKeyInfo ({e})"
        ))
    })?;
    let kid = kid_from_spki_der(spki_der);
    let parsed = spki
        .parsed()
        .map_err(|e| invalid(format!("PEM block `PUBLIC KEY`: {e}")))?;
    match parsed {
        x509_parser::public_key::PublicKey::RSA(rsa) => {
            // DER integers carry a leading zero when the top bit is set; JWK values do not.
            let trim = |bytes: &[u8]| {
                let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
                URL_SAFE_NO_PAD.encode(&bytes[start..])
            };
            Ok(Jwk {
                key_use: "sig".into(),
                kty: "RSA".into(),
                kid,
                crv: None,
                alg: KeyAlgorithm::Rs256.jose_name().into(),
                x: None,
                y: None,
                n: Some(trim(rsa.modulus)),
                e: Some(trim(rsa.exponent)),
            })
        }
        x509_parser::public_key::PublicKey::EC(point) => {
            let point = point.data();
            if point.len() != 65 || point[0] != 0x04 {
                return Err(invalid(
                    "PEM block `PUBLIC KEY` is an EC key but not an uncompressed P-256 point; only P-256 (ES256) keys are supported",
                ));
            }
            Ok(Jwk {
                key_use: "sig".into(),
                kty: "EC".into(),
                kid,
                crv: Some("P-256".into()),
                alg: KeyAlgorithm::Es256.jose_name().into(),
                x: Some(URL_SAFE_NO_PAD.encode(&point[1..33])),
                y: Some(URL_SAFE_NO_PAD.encode(&point[33..65])),
                n: None,
                e: None,
            })
        }
        _ => Err(invalid(format!(
            "PEM block `PUBLIC KEY` is neither RSA nor EC P-256; {ACCEPTED}"
        ))),
    }
}

impl SigningKey {
    /// A fresh key: RSA-2048 for RS256, P-256 for ES256.
    pub fn generate(algorithm: KeyAlgorithm) -> Result<Self, KeyError> {
        let signer = match algorithm {
            KeyAlgorithm::Rs256 => Signer::Rsa(
                RsaKeyPair::generate(KeySize::Rsa2048)
                    .map_err(|_| KeyError::Generate("RSA-2048"))?,
            ),
            KeyAlgorithm::Es256 => Signer::Ec(
                EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
                    .map_err(|_| KeyError::Generate("EC P-256"))?,
            ),
        };
        Self::from_signer(signer)
    }

    /// Loads the first private key block of a PEM document (other blocks, such as the
    /// `EC PARAMETERS` that `openssl ecparam -genkey` writes first, are skipped, as upstream).
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let blocks = pem::parse_many(pem).map_err(|e| invalid(pem_error(&e)))?;
        if blocks.is_empty() {
            return Err(invalid("no PEM block found"));
        }
        let block = blocks
            .iter()
            .find(|b| {
                matches!(
                    b.tag(),
                    "RSA PRIVATE KEY" | "PRIVATE KEY" | "EC PRIVATE KEY" | "ENCRYPTED PRIVATE KEY"
                )
            })
            .ok_or_else(|| no_private_key(&blocks))?;
        if block.tag() == "ENCRYPTED PRIVATE KEY"
            || block
                .headers()
                .get("Proc-Type")
                .is_some_and(|v| v.contains("ENCRYPTED"))
        {
            return Err(invalid(format!(
                "PEM block `{}` is encrypted; decrypt it first (e.g. `openssl pkey`)",
                block.tag()
            )));
        }
        let der = block.contents();
        let signer = match block.tag() {
            "RSA PRIVATE KEY" => Signer::Rsa(RsaKeyPair::from_der(der).map_err(|e| {
                invalid(format!(
                    "PEM block `RSA PRIVATE KEY` is not a usable PKCS#1 RSA key ({}; {RSA_SIZES})",
                    rejected(&e)
                ))
            })?),
            "EC PRIVATE KEY" => Signer::Ec(load_ec(der, "EC PRIVATE KEY", "SEC1")?),
            _ => load_pkcs8(der)?,
        };
        Self::from_signer(signer)
    }

    fn from_signer(signer: Signer) -> Result<Self, KeyError> {
        let (spki_der, algorithm) = match &signer {
            Signer::Rsa(kp) => (spki(kp.public_key().as_der())?, KeyAlgorithm::Rs256),
            Signer::Ec(kp) => (spki(kp.public_key().as_der())?, KeyAlgorithm::Es256),
        };
        let pkcs8_der = match &signer {
            Signer::Rsa(kp) => AsDer::<Pkcs8V1Der>::as_der(kp).map(|d| d.as_ref().to_vec()),
            Signer::Ec(kp) => kp.to_pkcs8v1().map(|d| d.as_ref().to_vec()),
        }
        .map_err(|_| KeyError::Encode("private key (PKCS#8)"))?;
        let kid = kid_from_spki_der(&spki_der);
        // Upstream's header is a sorted map without `typ`: exactly {"alg":..,"kid":..}.
        let header = format!(r#"{{"alg":"{}","kid":"{kid}"}}"#, algorithm.jose_name());
        let mut header_prefix = URL_SAFE_NO_PAD.encode(header.as_bytes());
        header_prefix.push('.');
        let jwk = match &signer {
            Signer::Rsa(kp) => {
                let parts = PublicKeyComponents::<Vec<u8>>::from(kp.public_key());
                Jwk {
                    key_use: "sig".into(),
                    kty: "RSA".into(),
                    kid: kid.clone(),
                    crv: None,
                    alg: algorithm.jose_name().into(),
                    x: None,
                    y: None,
                    n: Some(URL_SAFE_NO_PAD.encode(&parts.n)),
                    e: Some(URL_SAFE_NO_PAD.encode(&parts.e)),
                }
            }
            Signer::Ec(kp) => {
                // SEC1 uncompressed point: 0x04 || x (32 bytes) || y (32 bytes).
                let point = kp.public_key().as_ref();
                if point.len() != 65 || point[0] != 0x04 {
                    return Err(KeyError::Encode("EC public point"));
                }
                Jwk {
                    key_use: "sig".into(),
                    kty: "EC".into(),
                    kid: kid.clone(),
                    crv: Some("P-256".into()),
                    alg: algorithm.jose_name().into(),
                    x: Some(URL_SAFE_NO_PAD.encode(&point[1..33])),
                    y: Some(URL_SAFE_NO_PAD.encode(&point[33..65])),
                    n: None,
                    e: None,
                }
            }
        };
        Ok(Self {
            signer,
            kid,
            header_prefix,
            spki_der,
            pkcs8_der,
            jwk,
        })
    }

    pub fn algorithm(&self) -> KeyAlgorithm {
        match self.signer {
            Signer::Rsa(_) => KeyAlgorithm::Rs256,
            Signer::Ec(_) => KeyAlgorithm::Es256,
        }
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as SubjectPublicKeyInfo DER (what the `kid` hashes).
    pub fn public_key_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// Compact JWS `header.payload.signature` of `claims`, header `{"alg":..,"kid":..}`.
    pub fn sign_jwt<T: serde::Serialize>(&self, claims: &T) -> Result<String, KeyError> {
        // A bound token's claims are 400-600 bytes: one allocation instead of to_vec's regrowth.
        let mut payload = Vec::with_capacity(768);
        serde_json::to_writer(&mut payload, claims).map_err(|e| KeyError::Claims(e.to_string()))?;
        // One allocation for the whole token: header, payload and a 2048-bit RSA signature.
        let mut jws = String::with_capacity(self.header_prefix.len() + payload.len() * 4 / 3 + 350);
        jws.push_str(&self.header_prefix);
        URL_SAFE_NO_PAD.encode_string(&payload, &mut jws);
        let signature = self.sign_message(jws.as_bytes())?;
        jws.push('.');
        URL_SAFE_NO_PAD.encode_string(signature.as_ref(), &mut jws);
        Ok(jws)
    }

    /// Raw signature (RSASSA-PKCS1-v1_5 SHA-256, or fixed-size ECDSA r||s) over `message` with
    /// the cached key pair. Public so benchmarks can compare minting with the bare crypto cost.
    pub fn sign_raw(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        Ok(self.sign_message(message)?.as_ref().to_vec())
    }

    fn sign_message(&self, message: &[u8]) -> Result<Signature, KeyError> {
        let failed = || KeyError::Sign {
            kid: self.kid.clone(),
        };
        // aws-lc-rs ignores the rng argument (it seeds itself); the type is only for ring's API.
        let rng = aws_lc_rs::rand::SystemRandom::new();
        match &self.signer {
            Signer::Rsa(kp) => {
                let mut sig = vec![0u8; kp.public_modulus_len()];
                kp.sign(&RSA_PKCS1_SHA256, &rng, message, &mut sig)
                    .map_err(|_| failed())?;
                Ok(Signature::Rsa(sig))
            }
            Signer::Ec(kp) => Ok(Signature::Ec(kp.sign(&rng, message).map_err(|_| failed())?)),
        }
    }

    /// The public key as a JWK, in upstream's field order.
    pub fn public_jwk(&self) -> Jwk {
        self.jwk.clone()
    }

    /// [`Self::public_jwk`] without a copy.
    pub fn public_jwk_ref(&self) -> &Jwk {
        &self.jwk
    }

    /// PEM of the private key (PKCS#8), e.g. to save a generated key.
    pub fn private_key_pem(&self) -> String {
        pem_encode("PRIVATE KEY", self.pkcs8_der.clone())
    }

    /// PEM of the public key (SubjectPublicKeyInfo).
    pub fn public_key_pem(&self) -> String {
        pem_encode("PUBLIC KEY", self.spki_der.clone())
    }
}

fn pem_encode(tag: &str, der: Vec<u8>) -> String {
    pem::encode_config(
        &pem::Pem::new(tag, der),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

fn spki(
    der: Result<PublicKeyX509Der<'static>, aws_lc_rs::error::Unspecified>,
) -> Result<Vec<u8>, KeyError> {
    der.map(|d| d.as_ref().to_vec())
        .map_err(|_| KeyError::Encode("public key (SubjectPublicKeyInfo)"))
}

/// Describes a PEM parse failure without echoing any of the (possibly secret) input.
fn pem_error(e: &pem::PemError) -> String {
    match e {
        pem::PemError::InvalidData(_) => "a PEM block's body is not valid base64".into(),
        pem::PemError::MismatchedTags(begin, end) => {
            format!("PEM BEGIN tag `{begin}` does not match END tag `{end}`")
        }
        other => format!("not a valid PEM document ({other})"),
    }
}

fn no_private_key(blocks: &[pem::Pem]) -> KeyError {
    let tags: Vec<&str> = blocks.iter().map(|b| b.tag()).collect();
    let first = tags.first().copied().unwrap_or_default();
    let what = if first.contains("PUBLIC KEY") {
        "is a public key, not a private key"
    } else {
        "is not a private key"
    };
    if tags.len() == 1 {
        invalid(format!("PEM block `{first}` {what}"))
    } else {
        invalid(format!(
            "no private key among the PEM blocks {}",
            tags.iter()
                .map(|t| format!("`{t}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }
}

/// A PKCS#8 `PRIVATE KEY`: RSA or EC P-256; other curves and key types get a named error.
fn load_pkcs8(der: &[u8]) -> Result<Signer, KeyError> {
    if let Ok(kp) = RsaKeyPair::from_pkcs8(der) {
        return Ok(Signer::Rsa(kp));
    }
    if let Ok(kp) = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der) {
        return Ok(Signer::Ec(kp));
    }
    if let Some(curve) = other_curve(der) {
        return Err(unsupported_curve("PRIVATE KEY", curve));
    }
    if aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).is_ok() {
        return Err(invalid(
            "PEM block `PRIVATE KEY` is an Ed25519 key, which kube-apiserver cannot sign with",
        ));
    }
    // Tell an undersized or otherwise rejected RSA key apart from an unknown key type.
    match RsaKeyPair::from_pkcs8(der) {
        Err(e) if is_rsa_pkcs8(der) => Err(invalid(format!(
            "PEM block `PRIVATE KEY` is an RSA key that cannot be used ({}; {RSA_SIZES})",
            rejected(&e)
        ))),
        _ => Err(invalid(
            "PEM block `PRIVATE KEY` holds neither an RSA nor an EC P-256 key",
        )),
    }
}

/// A SEC1 (or, leniently, PKCS#8) EC key; names the curve when it is not P-256.
fn load_ec(der: &[u8], tag: &str, form: &str) -> Result<EcdsaKeyPair, KeyError> {
    if let Ok(kp) = EcdsaKeyPair::from_private_key_der(&ECDSA_P256_SHA256_FIXED_SIGNING, der) {
        return Ok(kp);
    }
    if let Some(curve) = other_curve(der) {
        return Err(unsupported_curve(tag, curve));
    }
    Err(invalid(format!(
        "PEM block `{tag}` is not a valid {form} EC private key"
    )))
}

fn other_curve(der: &[u8]) -> Option<&'static str> {
    let curves: [(&'static EcdsaSigningAlgorithm, &'static str); 2] = [
        (&ECDSA_P384_SHA384_FIXED_SIGNING, "P-384"),
        (&ECDSA_P521_SHA512_FIXED_SIGNING, "P-521"),
    ];
    curves
        .iter()
        .find(|(alg, _)| EcdsaKeyPair::from_private_key_der(alg, der).is_ok())
        .map(|(_, name)| *name)
}

fn unsupported_curve(tag: &str, curve: &str) -> KeyError {
    invalid(format!(
        "PEM block `{tag}` is an EC {curve} key; only P-256 (ES256) is supported"
    ))
}

/// Whether a PKCS#8 structure names the rsaEncryption algorithm (OID 1.2.840.113549.1.1.1).
fn is_rsa_pkcs8(der: &[u8]) -> bool {
    const RSA_OID: [u8; 11] = [
        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
    ];
    der.windows(RSA_OID.len()).take(32).any(|w| w == RSA_OID)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verification_jwk_from_public_or_private_pem_matches_the_signing_key() {
        for algorithm in [KeyAlgorithm::Rs256, KeyAlgorithm::Es256] {
            let key = SigningKey::generate(algorithm).unwrap();
            let from_public = verification_jwk_from_pem(&key.public_key_pem()).unwrap();
            let from_private = verification_jwk_from_pem(&key.private_key_pem()).unwrap();
            assert_eq!(from_public, key.public_jwk());
            assert_eq!(from_private, key.public_jwk());
        }
        let err = verification_jwk_from_pem("not pem").unwrap_err();
        assert!(err.to_string().contains("PEM"), "{err}");
    }
    use std::sync::OnceLock;

    fn rsa() -> &'static SigningKey {
        static KEY: OnceLock<SigningKey> = OnceLock::new();
        KEY.get_or_init(|| SigningKey::generate(KeyAlgorithm::Rs256).unwrap())
    }

    fn ec() -> SigningKey {
        SigningKey::generate(KeyAlgorithm::Es256).unwrap()
    }

    /// An independent SPKI: rcgen builds it from the raw public key and the algorithm OIDs.
    fn rcgen_kid(private_pem: &str) -> String {
        use rcgen::PublicKeyData as _;
        let kp = rcgen::KeyPair::from_pem(private_pem).unwrap();
        kid_from_spki_der(&kp.subject_public_key_info())
    }

    #[test]
    fn kid_is_43_chars_and_hashes_an_independently_built_spki() {
        for key in [rsa(), &ec()] {
            assert_eq!(key.kid().len(), 43);
            assert!(!key.kid().contains(['=', '+', '/']));
            assert_eq!(key.kid(), rcgen_kid(&key.private_key_pem()));
            // The SPKI we export is the one parsed back from the public PEM.
            let public = pem::parse(key.public_key_pem()).unwrap();
            assert_eq!(public.tag(), "PUBLIC KEY");
            assert_eq!(kid_from_spki_der(public.contents()), key.kid());
        }
    }

    /// Vectors made with `openssl ecparam -genkey -name prime256v1` and
    /// `openssl genrsa -traditional 2048`; kids computed with
    /// `openssl pkey -pubout -outform DER | openssl dgst -sha256 -binary | basenc --base64url`.
    const EC_SEC1: &str = "-----BEGIN EC PARAMETERS-----
BggqhkjOPQMBBw==
-----END EC PARAMETERS-----
-----BEGIN EC PRIVATE KEY-----
MHcCAQEEIDtce9uTPgVl2HGUt1Wz6dOkjt1LTKcK3EJAGS6Q4PeQoAoGCCqGSM49
AwEHoUQDQgAEgzVaFgo4me9KecFoXsfFGywdm7HJh9NSn6uIyajbsEj2XFwzfyFi
uwQse12OQCWjh1qL+FpRu3ApVcx89AzipQ==
-----END EC PRIVATE KEY-----
";
    const EC_SEC1_KID: &str = "XmkyMeyazGFN9U7pKw9WwxWSpWedA75N5mU-9B0Bb1s";
    const RSA_PKCS1: &str = "-----BEGIN RSA PRIVATE KEY-----
MIIEowIBAAKCAQEAhwnQbIDaTWIg6bgUbqOf0cYZ3QV8IgcLkFYN5fqtmfxwnmi/
OVY3JVn914G4mrx/EDQXny957yjIiPln3IlgajcfSRgy/kx86gvqRiXyGQ0kyzfs
PL3NrERtsuoCwd628spmt64rQC+GcPoG69zMK/1uYtD5pTpbZ35I6An33TScn6N5
WdbtbH7uG+OK+DNRqrRRBSZFEdDNlW7VB3XyL/Gz8a9R2ev7L+zvRQHbKKOXz9xY
jtjPbcl6pr9JDTyVw+RdDMyP2qPv467xmRqJtBYkS0CMXpbhx3dAP3SmPTp8AhLn
4cIv/LxVT2Dxydjao3TigSwo0gDmIyILOyKnewIDAQABAoIBAAExJnxWtNabB6RY
giGp4xbEc2T+j+Zy/nijMdM2X8LstgfH7+wvJSR4w2NcG0eOY2a+tviqQB7K0t5W
qUKKmeXGH8oS4xxYi3+7ZDGDUzxCX/FFSJoOqNqc7gT2yNhyQVYqUDbN3EbgRIUJ
x/bcB5dZ0NghdRquxbDHrhgSQnRa58BtT/j04tchRwudUq6g0isTuOMleQlW6GCy
+LObLyOV/iYkQ/KUeACI0URNQXGHGLx6Ix16ejNcTEUHtMkXiOIMXINkQVvuCmP+
bKVaVOfE8W/Lk6ww7JAFN1c+Gz6rAMR22w+4ngmO2+OC1cZ/Xl+rUkK3iSQzjQZ8
32dD6MUCgYEAvtd3UPX6iY54e8IQnwgpBdcQNFR1S0nUKfWy/RicFSJTrR+tDWbN
ccOyRM6Jp9DJVmMbGbwzhcbkmVhyH2pHOToxnbAPSnL9avdb1XoNv7Jsf2tmgciQ
GoQNWdr/6T8ps34iZUvZwSCPw68LfWltcle92LirV3wcmHPKMK6y2PcCgYEAtSTa
VdnbJwNdxHyeyzZmbmOCfv0WrN15VbFHuZX0TnDn0vxOyNUs4e0VXE33+z0P58f4
hSIJqU8NwYUvX7a69Z1ISxZ7ALtU8/s7JtcmV1kg0CLjWTyYCQCww+TPrrXTFGw1
wPKJnlqPfxkLNIGLjB+Y+kcntjyVNm9xkXibKJ0CgYEAgCWg+h1iMZIYd0nV7WQG
X+SM/gakiHy32cEhgnBPBqX5OCwoAPLCC51UDH3/008Qk1CTNxG4KyFmCU5pu4ya
7OOVw4QgkGZsorIc2VlO+CUwU9NjjsyFbziy2l6DLzV5pAyTvh9Txio+PzFAbuMn
WftvAKLocyNk9D30TAJTF/sCgYB/SwR7K/rLMZxlBUX5e6MDk74SSvvyQjiPtWK3
0d66eLEQHOmoS9WcdiR6lvfaf5B7ypSjycWMStdZ1KPz2M8M5pf03DlXzEzonvV0
V+DDpQhf+wRUozYbrXaKUnJ3TaKlSV2E12tJ8k3AfPLY1OghcdrolbQcZfpdJHdk
SKKQKQKBgDxEK74anbSukujaHWVesbG0fevEQt75gkC8ju6gbZccPLdfsMdVkKKF
wDDwgs0tjYptdxKwEWEwTz+Y1Zdxul8ppplcAt/QHnB62hkVlo68w5nEsRlxW5sB
S9g/vUXWjgPj3OZCB8bzLTCF2ua/LmRPLvgptHyfwS7e8jzTS7eW
-----END RSA PRIVATE KEY-----
";
    const RSA_PKCS1_KID: &str = "Bt_3DsmwIvN1NP2P8n8Voiyx3AruXozOWr7rGRBwzjk";

    #[test]
    fn openssl_vectors_load_with_openssl_kids() {
        // SEC1 after an `EC PARAMETERS` block, as `openssl ecparam -genkey` writes it.
        let ec = SigningKey::from_pem(EC_SEC1).unwrap();
        assert_eq!(ec.algorithm(), KeyAlgorithm::Es256);
        assert_eq!(ec.kid(), EC_SEC1_KID);
        let rsa = SigningKey::from_pem(RSA_PKCS1).unwrap();
        assert_eq!(rsa.algorithm(), KeyAlgorithm::Rs256);
        assert_eq!(rsa.kid(), RSA_PKCS1_KID);
        // And their PKCS#8 exports load back to the same kid.
        for key in [ec, rsa] {
            let pkcs8 = key.private_key_pem();
            assert!(pkcs8.starts_with("-----BEGIN PRIVATE KEY-----\n"));
            assert_eq!(SigningKey::from_pem(&pkcs8).unwrap().kid(), key.kid());
        }
    }

    #[test]
    fn pem_round_trip_keeps_the_kid() {
        for key in [rsa(), &ec()] {
            let again = SigningKey::from_pem(&key.private_key_pem()).unwrap();
            assert_eq!(again.kid(), key.kid());
            assert_eq!(again.algorithm(), key.algorithm());
            assert_eq!(again.public_jwk(), key.public_jwk());
        }
    }

    fn err(pem: &str) -> String {
        SigningKey::from_pem(pem).unwrap_err().to_string()
    }

    #[test]
    fn bad_input_gives_clear_errors() {
        let garbage = err("this is not a key");
        assert!(garbage.contains("no PEM block found"), "{garbage}");
        assert!(garbage.contains("PKCS#1, PKCS#8 or SEC1"), "{garbage}");

        let public = err(&rsa().public_key_pem());
        assert!(
            public.contains("`PUBLIC KEY` is a public key, not a private key"),
            "{public}"
        );

        let pkcs1_public = match &rsa().signer {
            Signer::Rsa(kp) => kp.public_key().as_ref().to_vec(),
            Signer::Ec(_) => unreachable!(),
        };
        let rsa_public = err(&pem_encode("RSA PUBLIC KEY", pkcs1_public));
        assert!(
            rsa_public.contains("`RSA PUBLIC KEY` is a public key"),
            "{rsa_public}"
        );

        let cert = err(&pem_encode("CERTIFICATE", vec![0x30, 0x00]));
        assert_eq!(
            cert,
            "signing key: PEM block `CERTIFICATE` is not a private key; give an RSA or EC P-256 private key (PKCS#1, PKCS#8 or SEC1 PEM)"
        );

        let broken = err(&pem_encode(
            "RSA PRIVATE KEY",
            vec![0x30, 0x03, 0x02, 0x01, 0x00],
        ));
        assert!(broken.contains("not a usable PKCS#1 RSA key"), "{broken}");

        let bad_b64 = err("-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n");
        assert!(bad_b64.contains("not valid base64"), "{bad_b64}");

        let encrypted = err(&pem_encode("ENCRYPTED PRIVATE KEY", vec![0x30, 0x00]));
        assert!(encrypted.contains("encrypted"), "{encrypted}");

        let p384 = aws_lc_rs::signature::EcdsaKeyPair::generate(&ECDSA_P384_SHA384_FIXED_SIGNING)
            .unwrap()
            .to_pkcs8v1()
            .unwrap();
        let p384 = err(&pem_encode("PRIVATE KEY", p384.as_ref().to_vec()));
        assert!(p384.contains("EC P-384 key; only P-256"), "{p384}");
    }

    const ED25519: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIKdqW5Yb8/btBr4mJeHI3lZyneVnDB7n0dFeeXgt8ewT
-----END PRIVATE KEY-----
";
    const RSA_1024_PKCS8: &str = "-----BEGIN PRIVATE KEY-----
MIICdgIBADANBgkqhkiG9w0BAQEFAASCAmAwggJcAgEAAoGBAM/FeEzZOrQZFdbD
b4qT/TJTA8grTj6sRFQlFlxJsWzllGkt+fUpsutklqsjsYlDCXfL/N5D6WbWAX1y
ba1AWIeNiTTMeNsj7lvn/Z9D9aXWemVUDpus7MEOAkR7LbnJHMkldoS7iDYV7YVb
WOHJUOXLBwdD06amlLt14U3bQto3AgMBAAECgYAu9IbCf1ln+D9aQOLFY7qWE/LH
2xmcylvK1HLgOntRi/TlbFGQGXNpBVuTo8ZsqezK2Rv1s01dQ0Ik8qZcwC0BVMra
gi0rrolGiIe+fnJRqZXV0fpLMDcoEdhcUq+AoG4FBdpt6TofaG3SeEWxp4UGVkMR
wd1tyIPx+BMHWT3PQQJBAPyqtxMEkVMbyhcA+t86lUA5RY4mGNxQXhwTyKrT+eGU
9mCqceu5TBiAsaj8lnwMxGsGkXAetW5AACgU2El0ldcCQQDSgyM495nLwklUJ15w
pJfW478auJh7FNqspedA0tJh9mJV6Nst1chCKVDMyR5KF2Im9MIjkzWHdsGhMjkI
5JKhAkEA80OCBANvz65/weoln+sNa8o4V4YChYuzMCE0IJT6juAW3jb8e9Hpm+W8
J1EZqdG5ArpOKL7IO5/PBsga/Y4L/QJAMLLnnhEhghKjFhW5ckORYMP0/MCBfc+4
OsJyefuLceAmpYsl0TeoiS23pHhOSoOYUDzFAKfYdUsSxjCxIw6FoQJAFdB6A/9a
0Rh7gu6rw5gRDQQwYmrei3UdtHZ2rS0J8+8VsKj1D/9aaPD2doKg0qPguedCjBFO
nc0UA3qvtw8qCg==
-----END PRIVATE KEY-----
";
    const RSA_1024_PKCS1: &str = "-----BEGIN RSA PRIVATE KEY-----
MIICXQIBAAKBgQC6Dfs2u7zCb0jZZXLIbiIOZkxpwl0xOYcpUwlooYgc9X0Or+c1
mDoO9pnCVeYtE5bGQzMR/gUDmD2O2Cvl4bULG+A5TfhuFfTuozYrOuPlKkecxhZd
h/XQ3FiIcN5pbs0/lb2cSvCnhweyriP1M0Z8/Q8caHHfD4NHVL7n1OvZewIDAQAB
AoGAXC+BQWVT6aLqHY0+ikDHbwsQ4XYEZtdyOO+DwewHXRHlnNlbXhrG6ZMWLEwT
eFI0apfxPgD2ywkrtxM07PogkUASHW5ISyW8pl59tSqZb7pBR4NSYIEiLqDOp4GQ
th2ln2rlH/elyPZ2AlZAT2AUaEvRHf+XNEZ0drb/JY7bvEECQQDjbHGN4JoQPe/a
0XTTi9tB8F3f1QDv03BoFcbcO+S9AG+LnxJeBfCVklMcyrbBzsmgNZvsC4yKYVUH
oXAq4kuVAkEA0W7RRVB0G9qY5oIzR4E0c1aqBMQjXMO2BCTr9jO1FPqv/vuzo9Y2
T4DopdNNc2SWaXPRttMGKTv0GlxgB17MzwJBALBVHt6ArTO2skiZatmzcLd5pW+t
eeJ5sIgjimKsVbhtpA8/sUARnu5529NRIc63hQGhT1n/wmJxATq/Y3b8qtkCQDBx
WJiW1nSG6K0Q2rmkajRvjF4T3DYd0uE8hRPqu+0BW2o4YEH6T4+uOqH4sUaKsrvr
nUuTni41fu4GBfROekMCQQC1oa0zTQ8BSRxaMJtC9pNjjqgo9yq285H2k0eGkwk1
/x1/3AjUyRntHpQLICRINvrZQVUWXawD5c0MH1QjAjsG
-----END RSA PRIVATE KEY-----
";

    #[test]
    fn unsupported_key_kinds_are_named() {
        let ed = err(ED25519);
        assert!(ed.contains("Ed25519"), "{ed}");
        for pem in [RSA_1024_PKCS8, RSA_1024_PKCS1] {
            let small = err(pem);
            assert!(small.contains("2048 to 8192 bits"), "{small}");
        }
    }

    #[test]
    fn errors_do_not_echo_key_material() {
        let pem = rsa().private_key_pem();
        let body_line = pem.lines().nth(1).unwrap();
        // Corrupt the DER but keep valid base64.
        let corrupted = pem.replacen(body_line, &"A".repeat(body_line.len()), 1);
        let msg = err(&corrupted);
        assert!(!msg.contains(&body_line[..16]), "{msg}");
    }

    #[test]
    fn header_is_exact_and_jwt_verifies_with_the_jwk() {
        use jsonwebtoken::{Algorithm, DecodingKey, Validation};
        let claims = serde_json::json!({"sub": "x", "exp": 4_000_000_000_i64});
        for (key, alg) in [(rsa(), Algorithm::RS256), (&ec(), Algorithm::ES256)] {
            let token = key.sign_jwt(&claims).unwrap();
            let header = token.split('.').next().unwrap();
            let header = URL_SAFE_NO_PAD.decode(header).unwrap();
            assert_eq!(
                String::from_utf8(header).unwrap(),
                format!(r#"{{"alg":"{}","kid":"{}"}}"#, alg_name(alg), key.kid())
            );
            let jwk: jsonwebtoken::jwk::Jwk =
                serde_json::from_str(&serde_json::to_string(&key.public_jwk()).unwrap()).unwrap();
            let decoding = DecodingKey::from_jwk(&jwk).unwrap();
            let data =
                jsonwebtoken::decode::<serde_json::Value>(&token, &decoding, &Validation::new(alg))
                    .unwrap();
            assert_eq!(data.claims, claims);
            if alg == Algorithm::ES256 {
                // JOSE's fixed r||s form: 64 bytes.
                let sig = token.rsplit('.').next().unwrap();
                assert_eq!(URL_SAFE_NO_PAD.decode(sig).unwrap().len(), 64);
            }
        }
    }

    fn alg_name(alg: jsonwebtoken::Algorithm) -> &'static str {
        match alg {
            jsonwebtoken::Algorithm::RS256 => "RS256",
            _ => "ES256",
        }
    }

    #[test]
    fn jwk_fields_come_out_in_upstream_order() {
        let rsa_json = serde_json::to_string(&rsa().public_jwk()).unwrap();
        assert!(
            rsa_json.starts_with(&format!(
                r#"{{"use":"sig","kty":"RSA","kid":"{}","alg":"RS256","n":""#,
                rsa().kid()
            )),
            "{rsa_json}"
        );
        assert!(rsa_json.ends_with(r#","e":"AQAB"}"#), "{rsa_json}");
        let ec = ec();
        let ec_json = serde_json::to_string(&ec.public_jwk()).unwrap();
        assert!(
            ec_json.starts_with(&format!(
                r#"{{"use":"sig","kty":"EC","kid":"{}","crv":"P-256","alg":"ES256","x":""#,
                ec.kid()
            )),
            "{ec_json}"
        );
        let jwk = ec.public_jwk();
        assert_eq!(URL_SAFE_NO_PAD.decode(jwk.x.unwrap()).unwrap().len(), 32);
        assert_eq!(URL_SAFE_NO_PAD.decode(jwk.y.unwrap()).unwrap().len(), 32);
    }

    #[test]
    fn debug_shows_no_key_material() {
        let shown = format!("{:?}", rsa());
        assert!(shown.contains(rsa().kid()));
        assert!(!shown.contains("PRIVATE"));
    }
}
