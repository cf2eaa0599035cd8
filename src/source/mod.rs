//! Where tokens come from: the [`TokenSource`] trait, the in-process issuer behind it, and the
//! kube-apiserver TokenRequest client ([`kube`]): what it connects to ([`config`]), who it is
//! there ([`auth`]: credentials re-read or re-run per request) and its HTTP client ([`client`]).
//!
//! The errors the submodules share live here, so that none of them imports another that
//! imports it back; this module imports none of its submodules.

pub mod auth;
pub mod client;
pub mod config;
pub mod kube;
pub mod send_errors;
pub mod server_trust;

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use jiff::{SignedDuration, Timestamp};

use crate::clock::Clock;
use crate::issuer::keyring::KeyRing;
use crate::issuer::{BoundKind, BoundObject, ServiceAccountRef, TokenRequestSpec};
use crate::token::{decode, ObjectRef, TokenLifetime};

/// A TokenRequest as the kubelet makes it for one projected token.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenRequest {
    pub namespace: String,
    pub service_account: String,
    /// Empty: the API server's audiences.
    pub audiences: Vec<String>,
    pub expiration_seconds: i64,
    pub bound_pod: Option<BoundPod>,
}

/// The pod a token is bound to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BoundPod {
    pub name: String,
    pub uid: String,
    pub node_name: Option<String>,
}

/// A token with the TokenRequest status that came with it.
#[derive(Debug, Clone)]
pub struct TokenGrant {
    pub token: String,
    /// `status.expirationTimestamp`.
    pub expiration_timestamp: Timestamp,
    /// `spec.expirationSeconds` as the server echoed it.
    pub expiration_seconds: i64,
    /// The JWT's own `exp`, `warnafter`, `iat` and `jti`, read without the key.
    pub jwt_expiry: Option<Timestamp>,
    pub warn_after: Option<Timestamp>,
    pub jwt_issued_at: Option<Timestamp>,
    pub jti: Option<String>,
}

impl TokenGrant {
    /// Builds a grant from a TokenRequest answer, reading the JWT's times without its key.
    pub fn from_status(
        token: String,
        expiration_timestamp: Timestamp,
        expiration_seconds: i64,
    ) -> Result<Self, SourceError> {
        let decoded = decode(&token)
            .map_err(|e| SourceError::Rejected(format!("the returned token is not a JWT: {e}")))?;
        let at = |s: Option<i64>| s.and_then(|s| Timestamp::from_second(s).ok());
        let jti = decoded
            .claims
            .get("jti")
            .and_then(|v| v.as_str())
            .map(str::to_owned);
        Ok(Self {
            jwt_expiry: at(decoded.numeric_claim("exp")),
            warn_after: at(decoded.warn_after()),
            jwt_issued_at: at(decoded.numeric_claim("iat")),
            jti,
            token,
            expiration_timestamp,
            expiration_seconds,
        })
    }

    /// What the refresh rule needs.
    pub fn lifetime(&self) -> TokenLifetime {
        TokenLifetime::from_grant(
            self.expiration_timestamp,
            SignedDuration::from_secs(self.expiration_seconds),
            self.jwt_expiry,
            self.warn_after,
        )
    }
}

/// Why a token could not be had.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SourceError {
    /// The request itself is wrong (bad lifetime, unknown object): retrying will not help.
    #[error("token request rejected: {0}")]
    Rejected(String),
    /// A failure that may pass by itself (network, server overload, an unusable answer).
    #[error("token request failed: {0}")]
    Unavailable(String),
    /// The server refused us (401, 403, 404) or our own credential could not be had: it may pass
    /// once someone acts (an admin grants the role, the credential is renewed), so the daemon
    /// keeps retrying, but `--once` does not wait for it.
    #[error("token request failed: {0}")]
    Refused(String),
    /// The server asked us to come back later (429 or 503 with `Retry-After`).
    #[error("token request throttled: {message} (retry after {retry_after:#})")]
    Throttled {
        message: String,
        retry_after: SignedDuration,
    },
}

impl SourceError {
    /// The least time to wait before retrying, when the server said so.
    pub fn retry_after(&self) -> Option<SignedDuration> {
        match self {
            Self::Throttled { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// A failure of availability (connection refused, timeout, 5xx, 429, an unusable answer)
    /// that waiting may cure by itself, as opposed to a refusal or a rejected request.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Throttled { .. })
    }
}

/// A connection setting or credential that cannot be used, naming the setting and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConnectionError(pub String);

impl ConnectionError {
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// Something that answers TokenRequests.
pub trait TokenSource: Send + Sync + 'static {
    fn request_token(
        &self,
        request: &TokenRequest,
    ) -> impl Future<Output = Result<TokenGrant, SourceError>> + Send;
}

/// Looks up the uid of a service account by namespace and name.
type ServiceAccountUids = Arc<dyn Fn(&str, &str) -> String + Send + Sync>;

/// Says whether the emulated API would answer a TokenRequest now (an outage makes it fail).
type Availability = Arc<dyn Fn() -> Result<(), SourceError> + Send + Sync>;

/// The emulator's `--expiration-seconds`, changeable while it runs (`ctl lifetime`): shared by
/// the token source that reads it and the control that sets it.
#[derive(Debug, Clone, Default)]
pub struct LifetimeOverride(Arc<AtomicI64>);

impl LifetimeOverride {
    /// `None`: every token gets the lifetime its volume asks for.
    pub fn new(seconds: Option<i64>) -> Self {
        let this = Self::default();
        this.set(seconds);
        this
    }

    pub fn get(&self) -> Option<i64> {
        Some(self.0.load(Ordering::Relaxed)).filter(|s| *s > 0)
    }

    /// Zero or negative means none.
    pub fn set(&self, seconds: Option<i64>) {
        self.0
            .store(seconds.filter(|s| *s > 0).unwrap_or(0), Ordering::Relaxed);
    }
}

/// The in-process issuer as a token source: the emulator's kube-apiserver without HTTP.
#[derive(Clone)]
pub struct LocalIssuerSource {
    /// The current signing key at each request (it may be rotated while the emulator runs).
    keys: Arc<KeyRing>,
    clock: Arc<dyn Clock>,
    /// Emulator-only `--expiration-seconds`: replaces every token's lifetime.
    lifetime_override: LifetimeOverride,
    service_account_uid: ServiceAccountUids,
    /// The uid of a pod's node, when the node is known (its name alone otherwise).
    node_uid: Option<NodeUids>,
    availability: Option<Availability>,
    /// `--first-token-age`: how old each request's first token is made, and the requests
    /// already answered once.
    first_token_age: Option<(SignedDuration, Arc<Mutex<HashSet<TokenRequest>>>)>,
}

type NodeUids = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

impl LocalIssuerSource {
    /// `service_account_uid(namespace, name)` gives the uid to put in the claims.
    pub fn new(
        keys: Arc<KeyRing>,
        clock: Arc<dyn Clock>,
        lifetime_override: LifetimeOverride,
        service_account_uid: impl Fn(&str, &str) -> String + Send + Sync + 'static,
    ) -> Self {
        Self {
            keys,
            clock,
            lifetime_override,
            service_account_uid: Arc::new(service_account_uid),
            node_uid: None,
            availability: None,
            first_token_age: None,
        }
    }

    /// Mints the first token of each request as if issued `age` ago (at most 80 % of its
    /// lifetime): `emulate --first-token-age`.
    pub fn with_first_token_age(mut self, age: SignedDuration) -> Self {
        self.first_token_age = Some((age, Arc::default()));
        self
    }

    /// When the token for `request`, living `lifetime` seconds, is issued: now, or earlier for
    /// the first token of a request under `--first-token-age`.
    fn issued_at(&self, request: &TokenRequest, lifetime: i64) -> Timestamp {
        let now = self.clock.now();
        let Some((age, answered)) = &self.first_token_age else {
            return now;
        };
        let first = answered
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(request.clone());
        if !first {
            return now;
        }
        let cap = SignedDuration::from_secs(lifetime) * 4 / 5;
        now.checked_sub((*age).min(cap)).unwrap_or(now)
    }

    /// Puts the uid `node_uid(name)` of a bound pod's node into its tokens, as kube-apiserver
    /// 1.32+ does (`ServiceAccountTokenPodNodeInfo`).
    pub fn with_node_uids(
        mut self,
        node_uid: impl Fn(&str) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.node_uid = Some(Arc::new(node_uid));
        self
    }

    /// Asks `available` before every request: an error (e.g. a simulated API outage) is the
    /// answer instead of a token, as the kubelet's TokenRequest would fail.
    pub fn with_availability(
        mut self,
        available: impl Fn() -> Result<(), SourceError> + Send + Sync + 'static,
    ) -> Self {
        self.availability = Some(Arc::new(available));
        self
    }

    /// Mints synchronously (RS256 signing takes about a quarter of a millisecond).
    pub fn mint(&self, request: &TokenRequest) -> Result<TokenGrant, SourceError> {
        if let Some(available) = &self.availability {
            available()?;
        }
        let issuer = self.keys.issuer();
        let spec = TokenRequestSpec {
            audiences: request.audiences.clone(),
            expiration_seconds: Some(request.expiration_seconds),
            bound_object: request.bound_pod.as_ref().map(|pod| BoundObject {
                kind: BoundKind::Pod,
                name: pod.name.clone(),
                uid: pod.uid.clone(),
                node: pod.node_name.as_ref().map(|node| {
                    let uid = self.node_uid.as_ref().and_then(|uid_of| uid_of(node));
                    ObjectRef::new(node.clone(), uid.unwrap_or_default())
                }),
            }),
        };
        // Time compression happens before validation so that lifetimes below 600 s pass; the
        // extension decision still looks at what the volume asked for (3607).
        let validated = match self.lifetime_override.get() {
            Some(seconds) => {
                let asked = TokenRequestSpec {
                    expiration_seconds: Some(request.expiration_seconds.max(600)),
                    ..spec
                };
                issuer
                    .config
                    .validate(&asked)
                    .map_err(|e| SourceError::Rejected(e.to_string()))?
                    .with_lifetime_override(seconds)
            }
            None => issuer
                .config
                .validate(&spec)
                .map_err(|e| SourceError::Rejected(e.to_string()))?,
        };
        let service_account = ServiceAccountRef {
            uid: (self.service_account_uid)(&request.namespace, &request.service_account),
            namespace: request.namespace.clone(),
            name: request.service_account.clone(),
        };
        let issued_at = self.issued_at(request, validated.expiration_seconds);
        let issued = issuer
            .mint(&service_account, &validated, issued_at)
            .map_err(|e| SourceError::Unavailable(e.to_string()))?;
        let at = |s: i64| Timestamp::from_second(s).ok();
        Ok(TokenGrant {
            jwt_expiry: at(issued.claims.exp),
            warn_after: issued.claims.kubernetes.warnafter.and_then(at),
            jwt_issued_at: at(issued.claims.iat),
            jti: issued.claims.jti.clone(),
            token: issued.token,
            expiration_timestamp: issued.expiration_timestamp,
            expiration_seconds: issued.expiration_seconds,
        })
    }
}

impl TokenSource for LocalIssuerSource {
    async fn request_token(&self, request: &TokenRequest) -> Result<TokenGrant, SourceError> {
        self.mint(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::issuer::{Issuer, IssuerConfig, KeyAlgorithm, SigningKey, DEFAULT_ISSUER};

    fn source(clock: Arc<ManualClock>, lifetime: i64) -> LocalIssuerSource {
        let key = Arc::new(SigningKey::generate(KeyAlgorithm::Es256).expect("key"));
        let issuer = Issuer::new(IssuerConfig::new(DEFAULT_ISSUER), key);
        let keys = Arc::new(KeyRing::new(issuer, Vec::new()).expect("key ring"));
        LocalIssuerSource::new(
            keys,
            clock,
            LifetimeOverride::new(Some(lifetime)),
            |_, _| "sa-uid".to_owned(),
        )
    }

    fn request(name: &str) -> TokenRequest {
        TokenRequest {
            namespace: "default".into(),
            service_account: "default".into(),
            audiences: Vec::new(),
            expiration_seconds: 3607,
            bound_pod: Some(BoundPod {
                name: name.into(),
                uid: format!("{name}-uid"),
                node_name: None,
            }),
        }
    }

    #[test]
    fn first_tokens_are_aged_once_per_request_and_at_most_to_their_refresh() {
        let now = Timestamp::from_second(1_700_000_000).expect("timestamp");
        let clock = Arc::new(ManualClock::new(now));
        let aged = source(clock.clone(), 100).with_first_token_age(SignedDuration::from_secs(70));
        let iat = |grant: &TokenGrant| grant.jwt_issued_at.map(|t| t.as_second());
        let first = aged.mint(&request("web")).expect("first");
        assert_eq!(iat(&first), Some(now.as_second() - 70));
        assert_eq!(
            first.warn_after.map(|t| t.as_second()),
            Some(now.as_second() + 30)
        );
        // The kubelet's rule now finds it due 10 s from now (80 s after its issue).
        assert_eq!(
            first.expiration_timestamp.as_second() - first.expiration_seconds,
            now.as_second() - 70
        );
        clock.advance(SignedDuration::from_secs(10));
        let second = aged.mint(&request("web")).expect("second");
        assert_eq!(
            iat(&second),
            Some(now.as_second() + 10),
            "later versions are fresh"
        );
        // Another pod's first token is aged too; an age past 80 % of the lifetime is capped.
        let capped =
            source(clock.clone(), 100).with_first_token_age(SignedDuration::from_secs(500));
        let other = capped.mint(&request("other")).expect("other");
        assert_eq!(iat(&other), Some(now.as_second() + 10 - 80));
        // Without the option, every token is issued now.
        let fresh = source(clock, 100).mint(&request("web")).expect("fresh");
        assert_eq!(iat(&fresh), Some(now.as_second() + 10));
    }
}
