//! Strict verification of service account JWTs against a JWKS.

use jiff::Timestamp;

use crate::token::BoundClaims;

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{0}")]
    Invalid(String),
}

/// Checks only the signature against `jwks` (a JWKS JSON document), returning the verifying `kid`.
pub fn verify_signature(token: &str, jwks: &serde_json::Value) -> Result<String, VerifyError> {
    todo!("{}{jwks}", token.len())
}

/// Full validation of a bound token as kube-apiserver does: signature, issuer, audience, times
/// with 60 s leeway.
pub fn verify_bound(
    token: &str,
    jwks: &serde_json::Value,
    issuers: &[String],
    audiences: &[String],
    now: Timestamp,
) -> Result<BoundClaims, VerifyError> {
    todo!("{}{jwks}{issuers:?}{audiences:?}{now}", token.len())
}
