//! Decoding a JWT without its key: for `inspect`, and to read `exp`/`warnafter` from grants.

use serde_json::{Map, Value};

/// What kind of service account token this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    /// A TokenRequest token with the `kubernetes.io` claim.
    Bound,
    /// A secret-based token (`iss: kubernetes/serviceaccount`).
    Legacy,
    /// A JWT that is not a Kubernetes service account token.
    Other,
}

/// A JWT split and decoded, signature not checked.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedToken {
    pub header: Map<String, Value>,
    pub claims: Map<String, Value>,
    pub kind: TokenKind,
}

/// Why a string is not a JWT. Each says which part is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("not a JWT: expected three dot-separated parts, found {0}")]
    NotThreeParts(usize),
}

/// Splits and decodes a compact JWS. Surrounding whitespace is ignored.
pub fn decode(token: &str) -> Result<DecodedToken, DecodeError> {
    todo!("{}", token.len())
}

impl DecodedToken {
    /// A numeric claim (`exp`, `iat`, `nbf`) as Unix seconds.
    pub fn numeric_claim(&self, name: &str) -> Option<i64> {
        todo!("{name}")
    }

    /// `kubernetes.io.warnafter`, Unix seconds.
    pub fn warn_after(&self) -> Option<i64> {
        todo!()
    }
}
