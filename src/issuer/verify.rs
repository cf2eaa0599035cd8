//! Strict verification of service account JWTs against a JWKS.
//!
//! The header is parsed here rather than by jsonwebtoken so that `alg: none`, HMAC algorithms and
//! an algorithm that does not fit the key are named in the error instead of failing generically.
//! Time checks are done here too, against the caller's `now` rather than the wall clock.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jiff::{SignedDuration, Timestamp};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;

use crate::errors::go_quote;
use crate::token::BoundClaims;

/// go-jose's default leeway for exp/nbf/iat, which kube-apiserver uses.
pub const LEEWAY_SECONDS: i64 = 60;

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{0}")]
    Invalid(String),
    /// Not a compact JWS, or a part does not decode.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// `none`, HMAC, or an algorithm kube-apiserver keys never use.
    #[error("unsupported signing algorithm {0:?}")]
    UnsupportedAlgorithm(String),
    /// The JWKS document itself is unusable.
    #[error("invalid JWKS: {0}")]
    Jwks(String),
    /// No key carries the header's `kid` (or the JWKS is empty). Upstream's message.
    #[error("invalid signature, no keys found")]
    NoMatchingKey { kid: Option<String> },
    /// Keys were found but none can verify this algorithm (e.g. RS256 against an EC key).
    #[error("signing algorithm {alg} does not match the key type of key {kid:?}")]
    AlgorithmMismatch { alg: String, kid: String },
    /// Every candidate key rejected the signature.
    #[error("invalid signature")]
    Signature,
    #[error("token issuer {} is invalid", go_quote(.0))]
    Issuer(String),
    #[error(
        "token audiences {} is invalid for the target audiences {}",
        go_quote_list(.token),
        go_quote_list(.target)
    )]
    Audience {
        token: Vec<String>,
        target: Vec<String>,
    },
    #[error("service account token has expired")]
    Expired,
    #[error("service account token is not valid yet")]
    NotYetValid,
    #[error("service account token is issued in the future")]
    IssuedInFuture,
    /// Signed and timely, but not shaped like a bound token (e.g. a legacy token).
    #[error("token claims are not those of a bound service account token: {0}")]
    Claims(String),
}

/// Go's `%q` for a `[]string`: `["a" "b"]`.
fn go_quote_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| go_quote(s)).collect();
    format!("[{}]", quoted.join(" "))
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

struct Parts<'a> {
    /// `header.payload`, the signed bytes.
    message: &'a str,
    payload: &'a str,
    signature: &'a str,
}

fn split(token: &str) -> Result<Parts<'_>, VerifyError> {
    let token = token.trim();
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(VerifyError::Malformed(
            "expected three dot-separated parts (compact JWS)",
        ));
    };
    Ok(Parts {
        message: &token[..header.len() + 1 + payload.len()],
        payload,
        signature,
    })
}

fn decode_part(part: &str, what: &'static str) -> Result<Vec<u8>, VerifyError> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| VerifyError::Malformed(what))
}

/// The algorithms a kube-apiserver key can verify; everything else is refused by name.
fn parse_algorithm(alg: &str) -> Result<Algorithm, VerifyError> {
    match alg {
        "RS256" => Ok(Algorithm::RS256),
        "RS384" => Ok(Algorithm::RS384),
        "RS512" => Ok(Algorithm::RS512),
        "PS256" => Ok(Algorithm::PS256),
        "PS384" => Ok(Algorithm::PS384),
        "PS512" => Ok(Algorithm::PS512),
        "ES256" => Ok(Algorithm::ES256),
        "ES384" => Ok(Algorithm::ES384),
        other => Err(VerifyError::UnsupportedAlgorithm(other.to_string())),
    }
}

/// Whether `alg` is the right algorithm for `jwk`: RSA keys verify RS*/PS*, an EC key only the
/// ECDSA algorithm of its curve; symmetric keys never (no HMAC, so no key confusion). A JWK that
/// declares its own `alg` must declare this one.
fn key_fits(jwk: &Jwk, alg: Algorithm, alg_name: &str) -> bool {
    let family_fits = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => matches!(
            alg,
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512
        ),
        AlgorithmParameters::EllipticCurve(ec) => matches!(
            (&ec.curve, alg),
            (EllipticCurve::P256, Algorithm::ES256) | (EllipticCurve::P384, Algorithm::ES384)
        ),
        _ => false,
    };
    let declared_fits = jwk
        .common
        .key_algorithm
        .is_none_or(|declared| declared.to_string() == alg_name);
    family_fits && declared_fits
}

fn parse_jwks(jwks: &serde_json::Value) -> Result<Vec<Jwk>, VerifyError> {
    let keys = jwks
        .get("keys")
        .and_then(|k| k.as_array())
        .ok_or_else(|| VerifyError::Jwks("no `keys` array".into()))?;
    keys.iter()
        .enumerate()
        .map(|(i, k)| {
            serde_json::from_value::<Jwk>(k.clone())
                .map_err(|e| VerifyError::Jwks(format!("key {i}: {e}")))
        })
        .collect()
}

/// Verification keys prepared once: every JWK parsed and its decoding key built, so that a
/// server verifying many tokens pays only for the signature check.
pub struct KeySet {
    keys: Vec<(Jwk, DecodingKey)>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<&str> = self
            .keys
            .iter()
            .map(|(jwk, _)| jwk.common.key_id.as_deref().unwrap_or(""))
            .collect();
        f.debug_struct("KeySet").field("kids", &kids).finish()
    }
}

impl KeySet {
    /// Prepares every key of a JWKS document (`{"keys":[...]}`).
    pub fn from_jwks(jwks: &serde_json::Value) -> Result<Self, VerifyError> {
        // A JWK of a kind jsonwebtoken cannot verify with is skipped, not fatal: the other keys
        // of the set still work, and a token naming that kid fails as "no keys found".
        let keys = parse_jwks(jwks)?
            .into_iter()
            .filter_map(|jwk| DecodingKey::from_jwk(&jwk).ok().map(|key| (jwk, key)))
            .collect();
        Ok(Self { keys })
    }

    /// Checks only the signature, returning the verifying `kid` (empty when the verifying JWK
    /// has none).
    ///
    /// As upstream: with a `kid` in the header only keys with that kid are tried, without one
    /// every key is tried.
    pub fn verify_signature(&self, token: &str) -> Result<String, VerifyError> {
        let parts = split(token)?;
        let header_json = decode_part(
            parts.message.split('.').next().unwrap_or_default(),
            "header is not base64url",
        )?;
        let header: Header = serde_json::from_slice(&header_json)
            .map_err(|_| VerifyError::Malformed("header is not a JSON object with an `alg`"))?;
        if header.crit.is_some() {
            return Err(VerifyError::Malformed(
                "critical header parameters are not supported",
            ));
        }
        let alg = parse_algorithm(&header.alg)?;
        // Decoded only to fail early with a clear error; jsonwebtoken decodes it again itself.
        decode_part(parts.signature, "signature is not base64url")?;

        let mut candidates = self
            .keys
            .iter()
            .filter(|(jwk, _)| match &header.kid {
                Some(kid) => jwk.common.key_id.as_deref() == Some(kid.as_str()),
                None => true,
            })
            .peekable();
        let Some((first, _)) = candidates.peek() else {
            return Err(VerifyError::NoMatchingKey { kid: header.kid });
        };
        let first_kid = first.common.key_id.clone().unwrap_or_default();
        let mut any_fits = false;
        for (jwk, key) in candidates.filter(|(jwk, _)| key_fits(jwk, alg, &header.alg)) {
            any_fits = true;
            if let Ok(true) =
                jsonwebtoken::crypto::verify(parts.signature, parts.message.as_bytes(), key, alg)
            {
                return Ok(jwk.common.key_id.clone().unwrap_or_default());
            }
        }
        if !any_fits {
            return Err(VerifyError::AlgorithmMismatch {
                alg: header.alg,
                kid: first_kid,
            });
        }
        Err(VerifyError::Signature)
    }

    /// Full validation of a bound token as kube-apiserver does: signature, issuer, audience,
    /// times with 60 s leeway.
    pub fn verify_bound(
        &self,
        token: &str,
        issuers: &[String],
        audiences: &[String],
        now: Timestamp,
    ) -> Result<BoundClaims, VerifyError> {
        self.verify_signature(token)?;
        let payload = decode_part(split(token)?.payload, "payload is not base64url")?;
        let registered: Registered = serde_json::from_slice(&payload)
            .map_err(|_| VerifyError::Malformed("payload is not a JSON claim set"))?;

        let iss = registered.iss.unwrap_or_default();
        if !issuers.contains(&iss) {
            return Err(VerifyError::Issuer(iss));
        }

        let token_audiences = match registered.aud {
            Some(Audience::One(a)) => vec![a],
            Some(Audience::Many(a)) => a,
            None => Vec::new(),
        };
        // Upstream treats a token without audiences as meant for the API audiences, and skips
        // the check when no target audiences are configured.
        if !token_audiences.is_empty()
            && !audiences.is_empty()
            && !token_audiences.iter().any(|a| audiences.contains(a))
        {
            return Err(VerifyError::Audience {
                token: token_audiences,
                target: audiences.to_vec(),
            });
        }

        check_times(registered.nbf, registered.exp, registered.iat, now)?;

        serde_json::from_slice(&payload).map_err(|e| VerifyError::Claims(e.to_string()))
    }
}

/// Checks only the signature against `jwks` (a JWKS JSON document); see
/// [`KeySet::verify_signature`]. Prepare a [`KeySet`] instead when verifying many tokens.
pub fn verify_signature(token: &str, jwks: &serde_json::Value) -> Result<String, VerifyError> {
    KeySet::from_jwks(jwks)?.verify_signature(token)
}

/// `aud` as go-jose reads it: a string or an array of strings.
#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

/// The registered claims checked before the full claim set is parsed.
#[derive(Deserialize)]
struct Registered {
    #[serde(default)]
    iss: Option<String>,
    #[serde(default)]
    aud: Option<Audience>,
    #[serde(default)]
    exp: Option<i64>,
    #[serde(default)]
    nbf: Option<i64>,
    #[serde(default)]
    iat: Option<i64>,
}

/// Full validation of a bound token against a JWKS document; see [`KeySet::verify_bound`].
pub fn verify_bound(
    token: &str,
    jwks: &serde_json::Value,
    issuers: &[String],
    audiences: &[String],
    now: Timestamp,
) -> Result<BoundClaims, VerifyError> {
    KeySet::from_jwks(jwks)?.verify_bound(token, issuers, audiences, now)
}

/// go-jose's `ValidateWithLeeway` order: nbf, exp, iat; each only when present.
fn check_times(
    nbf: Option<i64>,
    exp: Option<i64>,
    iat: Option<i64>,
    now: Timestamp,
) -> Result<(), VerifyError> {
    let leeway = SignedDuration::from_secs(LEEWAY_SECONDS);
    // Saturate rather than fail on absurd claim values: a far-future date is simply "later".
    let at = |s: i64| {
        Timestamp::from_second(s).unwrap_or(if s < 0 {
            Timestamp::MIN
        } else {
            Timestamp::MAX
        })
    };
    let later = now.saturating_add(leeway).unwrap_or(Timestamp::MAX);
    let earlier = now.saturating_sub(leeway).unwrap_or(Timestamp::MIN);
    if nbf.is_some_and(|nbf| later < at(nbf)) {
        return Err(VerifyError::NotYetValid);
    }
    if exp.is_some_and(|exp| earlier > at(exp)) {
        return Err(VerifyError::Expired);
    }
    if iat.is_some_and(|iat| later < at(iat)) {
        return Err(VerifyError::IssuedInFuture);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, OnceLock};

    use crate::issuer::jwks::jwks_document;
    use crate::issuer::{
        BoundKind, BoundObject, Issuer, IssuerConfig, KeyAlgorithm, ServiceAccountRef, SigningKey,
        TokenRequestSpec,
    };

    const API: &str = "https://kubernetes.default.svc.cluster.local";

    fn rsa() -> Arc<SigningKey> {
        static KEY: OnceLock<Arc<SigningKey>> = OnceLock::new();
        KEY.get_or_init(|| Arc::new(SigningKey::generate(KeyAlgorithm::Rs256).unwrap()))
            .clone()
    }

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    const IAT: i64 = 1_700_000_000;

    /// A pod-bound 3600 s token issued at `IAT`.
    fn mint(key: Arc<SigningKey>, audiences: &[&str]) -> String {
        let issuer = Issuer::new(IssuerConfig::new(API), key);
        let spec = TokenRequestSpec {
            audiences: audiences.iter().map(|a| a.to_string()).collect(),
            expiration_seconds: None,
            bound_object: Some(BoundObject {
                kind: BoundKind::Pod,
                name: "p".into(),
                uid: "pu".into(),
                node: None,
            }),
        };
        let request = issuer.config.validate(&spec).unwrap();
        let sa = ServiceAccountRef {
            namespace: "ns".into(),
            name: "sa".into(),
            uid: "su".into(),
        };
        issuer.mint(&sa, &request, t(IAT)).unwrap().token
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn verify_at(
        token: &str,
        jwks: &serde_json::Value,
        now: i64,
    ) -> Result<BoundClaims, VerifyError> {
        verify_bound(token, jwks, &strings(&[API]), &strings(&[API]), t(now))
    }

    #[test]
    fn valid_rs256_and_es256_tokens_verify() {
        let ec = Arc::new(SigningKey::generate(KeyAlgorithm::Es256).unwrap());
        let jwks = jwks_document(&[&rsa(), &ec]);
        for key in [rsa(), ec.clone()] {
            let token = mint(key.clone(), &[]);
            assert_eq!(verify_signature(&token, &jwks).unwrap(), key.kid());
            let claims = verify_at(&token, &jwks, IAT + 10).unwrap();
            assert_eq!(claims.sub, "system:serviceaccount:ns:sa");
            assert_eq!(claims.kubernetes.pod.unwrap().uid, "pu");
        }
    }

    #[test]
    fn time_checks_use_60s_leeway_against_the_given_now() {
        let key = rsa();
        let jwks = jwks_document(&[&key]);
        let token = mint(key, &[]);
        let exp = IAT + 3600;
        assert!(verify_at(&token, &jwks, exp + 60).is_ok());
        let expired = verify_at(&token, &jwks, exp + 61).unwrap_err();
        assert!(matches!(expired, VerifyError::Expired));
        assert_eq!(expired.to_string(), "service account token has expired");
        assert!(verify_at(&token, &jwks, IAT - 60).is_ok());
        let early = verify_at(&token, &jwks, IAT - 61).unwrap_err();
        // nbf is checked before iat, as go-jose does.
        assert_eq!(early.to_string(), "service account token is not valid yet");
    }

    #[test]
    fn iat_in_the_future_is_its_own_error() {
        assert!(matches!(
            check_times(None, None, Some(IAT), t(IAT - 61)),
            Err(VerifyError::IssuedInFuture)
        ));
        assert_eq!(
            VerifyError::IssuedInFuture.to_string(),
            "service account token is issued in the future"
        );
        assert!(check_times(Some(i64::MAX), None, None, t(IAT)).is_err());
        assert!(check_times(None, Some(i64::MIN), None, t(IAT)).is_err());
    }

    #[test]
    fn wrong_audience_and_issuer() {
        let key = rsa();
        let jwks = jwks_document(&[&key]);
        let token = mint(key, &["vault", "aws"]);
        let err = verify_at(&token, &jwks, IAT).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                r#"token audiences ["vault" "aws"] is invalid for the target audiences ["{API}"]"#
            )
        );
        let ok = verify_bound(&token, &jwks, &strings(&[API]), &strings(&["aws"]), t(IAT));
        assert!(ok.is_ok());
        let err = verify_bound(
            &token,
            &jwks,
            &strings(&["https://other"]),
            &strings(&["aws"]),
            t(IAT),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(r#"token issuer "{API}" is invalid"#)
        );
    }

    fn forge(header: &str, payload: &str, signature: &[u8]) -> String {
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(payload),
            URL_SAFE_NO_PAD.encode(signature)
        )
    }

    fn payload_of(token: &str) -> String {
        String::from_utf8(
            URL_SAFE_NO_PAD
                .decode(token.split('.').nth(1).unwrap())
                .unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn alg_none_is_rejected() {
        let key = rsa();
        let jwks = jwks_document(&[&key]);
        let payload = payload_of(&mint(key.clone(), &[]));
        for header in [
            r#"{"alg":"none"}"#.to_string(),
            format!(r#"{{"alg":"none","kid":"{}"}}"#, key.kid()),
        ] {
            let token = format!(
                "{}.{}.",
                URL_SAFE_NO_PAD.encode(&header),
                URL_SAFE_NO_PAD.encode(&payload)
            );
            let err = verify_signature(&token, &jwks).unwrap_err();
            assert!(
                matches!(&err, VerifyError::UnsupportedAlgorithm(a) if a == "none"),
                "{err}"
            );
            assert!(verify_at(&token, &jwks, IAT).is_err());
        }
    }

    #[test]
    fn hmac_with_the_public_key_as_secret_is_rejected() {
        let key = rsa();
        let jwks = jwks_document(&[&key]);
        let payload = payload_of(&mint(key.clone(), &[]));
        // The classic confusion: HS256 keyed with the RSA public key bytes (PEM and DER).
        for secret in [
            key.public_key_pem().into_bytes(),
            key.public_key_der().to_vec(),
        ] {
            let header = format!(r#"{{"alg":"HS256","kid":"{}"}}"#, key.kid());
            let message = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(&header),
                URL_SAFE_NO_PAD.encode(&payload)
            );
            let hmac_key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &secret);
            let tag = aws_lc_rs::hmac::sign(&hmac_key, message.as_bytes());
            let token = format!("{message}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()));
            let err = verify_signature(&token, &jwks).unwrap_err();
            assert!(
                matches!(&err, VerifyError::UnsupportedAlgorithm(a) if a == "HS256"),
                "{err}"
            );
        }
    }

    #[test]
    fn algorithm_must_fit_the_key_type() {
        let key = rsa();
        let jwks = jwks_document(&[&key]);
        let payload = payload_of(&mint(key.clone(), &[]));
        let token = forge(
            &format!(r#"{{"alg":"ES256","kid":"{}"}}"#, key.kid()),
            &payload,
            &[0u8; 64],
        );
        let err = verify_signature(&token, &jwks).unwrap_err();
        assert!(
            matches!(err, VerifyError::AlgorithmMismatch { .. }),
            "{err}"
        );
        // RS384 with an RSA key that declares RS256: refused too.
        let token = forge(
            &format!(r#"{{"alg":"RS384","kid":"{}"}}"#, key.kid()),
            &payload,
            &[0u8; 256],
        );
        assert!(matches!(
            verify_signature(&token, &jwks).unwrap_err(),
            VerifyError::AlgorithmMismatch { .. }
        ));
    }

    #[test]
    fn unknown_kid_and_missing_kid() {
        let key = rsa();
        let other = SigningKey::generate(KeyAlgorithm::Es256).unwrap();
        let token = mint(key.clone(), &[]);
        // Only the other key published: the kid matches nothing.
        let err = verify_signature(&token, &jwks_document(&[&other])).unwrap_err();
        assert!(matches!(err, VerifyError::NoMatchingKey { .. }));
        assert_eq!(err.to_string(), "invalid signature, no keys found");
        // No kid in the header: every key is tried.
        let parts: Vec<&str> = token.split('.').collect();
        let message = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256"}"#),
            parts[1]
        );
        let sig = key.sign_raw(message.as_bytes()).unwrap();
        let no_kid = format!("{message}.{}", URL_SAFE_NO_PAD.encode(sig));
        let both = jwks_document(&[&other, &key]);
        assert_eq!(verify_signature(&no_kid, &both).unwrap(), key.kid());
        assert!(matches!(
            verify_signature(&no_kid, &jwks_document(&[])).unwrap_err(),
            VerifyError::NoMatchingKey { kid: None }
        ));
    }

    #[test]
    fn tampered_tokens_fail_the_signature() {
        let key = rsa();
        let jwks = jwks_document(&[&key]);
        let token = mint(key, &[]);
        let parts: Vec<&str> = token.split('.').collect();
        let payload = payload_of(&token).replace("\"ns\"", "\"kube-system\"");
        let tampered = format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(payload),
            parts[2]
        );
        assert!(matches!(
            verify_signature(&tampered, &jwks).unwrap_err(),
            VerifyError::Signature
        ));
        assert!(matches!(
            verify_signature("a.b", &jwks).unwrap_err(),
            VerifyError::Malformed(_)
        ));
        assert!(matches!(
            verify_signature(&token, &serde_json::json!({})).unwrap_err(),
            VerifyError::Jwks(_)
        ));
    }

    #[test]
    fn legacy_tokens_are_not_bound_tokens() {
        let key = rsa();
        let jwks = jwks_document(&[&key]);
        let issuer = Issuer::new(IssuerConfig::new(API), key);
        let sa = ServiceAccountRef {
            namespace: "ns".into(),
            name: "sa".into(),
            uid: "su".into(),
        };
        let token = issuer.mint_legacy(&sa, "sa-token").unwrap();
        assert!(verify_signature(&token, &jwks).is_ok());
        let err = verify_at(&token, &jwks, IAT).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"token issuer "kubernetes/serviceaccount" is invalid"#
        );
        let legacy = strings(&["kubernetes/serviceaccount"]);
        let err = verify_bound(&token, &jwks, &legacy, &strings(&[API]), t(IAT)).unwrap_err();
        assert!(matches!(err, VerifyError::Claims(_)), "{err}");
    }

    #[test]
    fn go_quoting() {
        assert_eq!(go_quote_list(&strings(&["a", "b\"c"])), r#"["a" "b\"c"]"#);
        assert_eq!(go_quote("x\u{1}"), r#""x\x01""#);
    }
}
