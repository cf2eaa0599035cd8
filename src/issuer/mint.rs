//! TokenRequest validation and minting, including the 3607 extension.

use std::sync::Arc;

use jiff::Timestamp;

use super::keys::{KeyError, SigningKey};
use crate::token::BoundClaims;

/// The issuer kube-apiserver uses by default in most distributions.
pub const DEFAULT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// TokenRequest v1 default lifetime.
pub const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;
/// `MinTokenAgeSec`.
pub const MIN_EXPIRATION_SECONDS: i64 = 600;
/// 2^32 seconds, the largest lifetime validation accepts.
pub const MAX_EXPIRATION_SECONDS: i64 = 1 << 32;

/// Kinds a token may be bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoundKind {
    Pod,
    Secret,
    Node,
}

/// The object a token is bound to, as resolved by the caller (name and uid of the real object).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundObject {
    pub kind: BoundKind,
    pub name: String,
    pub uid: String,
    /// For a pod: the node it runs on (name, uid when known), copied into the claims.
    pub node: Option<crate::token::ObjectRef>,
}

/// The service account a token is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccountRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// The parts of a TokenRequest spec the issuer decides on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TokenRequestSpec {
    /// Empty: the API audiences.
    pub audiences: Vec<String>,
    /// None: 3600.
    pub expiration_seconds: Option<i64>,
    pub bound_object: Option<BoundObject>,
}

/// Issuer settings, as kube-apiserver's flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerConfig {
    pub issuer: String,
    pub api_audiences: Vec<String>,
    pub max_token_expiration: Option<i64>,
    pub extend_token_expiration: bool,
}

/// A request that passed validation, with defaults, clamp and extension decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedRequest {
    pub audiences: Vec<String>,
    pub expiration_seconds: i64,
    pub extended: bool,
    pub bound_object: Option<BoundObject>,
    pub warnings: Vec<String>,
}

/// A validation failure, in the terms of the HTTP status upstream answers with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("{field}: Invalid value: {value}: {message}")]
    Invalid {
        field: &'static str,
        value: String,
        message: &'static str,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum IssuerError {
    #[error("{0}")]
    Config(String),
    #[error("failed to generate token: {0}")]
    Sign(#[from] KeyError),
}

/// A freshly minted token and the TokenRequest status that goes with it.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub token: String,
    pub claims: BoundClaims,
    pub issued_at: Timestamp,
    pub expiration_seconds: i64,
    pub expiration_timestamp: Timestamp,
}

/// Mints tokens with one signing key.
#[derive(Debug, Clone)]
pub struct Issuer {
    pub config: IssuerConfig,
    pub key: Arc<SigningKey>,
}

impl IssuerConfig {
    /// kube-apiserver's defaults: issuer and API audience `DEFAULT_ISSUER`, no maximum, extension on.
    pub fn new(issuer: impl Into<String>) -> Self {
        let issuer = issuer.into();
        Self {
            api_audiences: vec![issuer.clone()],
            issuer,
            max_token_expiration: None,
            extend_token_expiration: true,
        }
    }

    /// Checks the settings as kube-apiserver does at start-up (max expiration in [1 h, 2^32 s]).
    pub fn check(&self) -> Result<(), IssuerError> {
        todo!()
    }

    /// Validates a TokenRequest spec as kube-apiserver does: defaults, bounds, clamp, extension.
    pub fn validate(&self, spec: &TokenRequestSpec) -> Result<ValidatedRequest, RequestError> {
        todo!("{spec:?}")
    }
}

impl ValidatedRequest {
    /// Emulator-only time compression: replaces the lifetime (may be below 600 s) and keeps the
    /// extension decision, so a compressed 3607 token gets `warnafter = iat + seconds`.
    pub fn with_lifetime_override(self, seconds: i64) -> Self {
        todo!("{seconds}")
    }
}

impl Issuer {
    pub fn new(config: IssuerConfig, key: Arc<SigningKey>) -> Self {
        Self { config, key }
    }

    /// Mints and signs a bound token issued at `now`.
    pub fn mint(
        &self,
        service_account: &ServiceAccountRef,
        request: &ValidatedRequest,
        now: Timestamp,
    ) -> Result<IssuedToken, IssuerError> {
        todo!("{service_account:?}{request:?}{now}")
    }

    /// Mints a legacy secret-based token (`iss: kubernetes/serviceaccount`, no `exp`).
    pub fn mint_legacy(
        &self,
        service_account: &ServiceAccountRef,
        secret_name: &str,
    ) -> Result<String, IssuerError> {
        todo!("{service_account:?}{secret_name}")
    }
}
