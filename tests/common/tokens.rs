//! Tokens minted by the tests themselves, as the emulator would mint them but with the issue
//! time, lifetime, audiences and binding each test needs.

use std::sync::Arc;

use jiff::Timestamp;
use projected_token::issuer::{
    BoundKind, BoundObject, IssuedToken, Issuer, IssuerConfig, ServiceAccountRef, SigningKey,
    ValidatedRequest, DEFAULT_ISSUER,
};

/// What to mint: by default a 3600-second token for the default issuer's audience, issued now,
/// bound to nothing and without the one-year extension.
#[derive(Debug, Clone)]
pub struct TokenSpec {
    account: ServiceAccountRef,
    audiences: Vec<String>,
    seconds: i64,
    bound: Option<BoundObject>,
    extended: bool,
    issued_at: Option<Timestamp>,
}

impl TokenSpec {
    pub fn for_service_account(namespace: &str, name: &str, uid: &str) -> Self {
        Self {
            account: ServiceAccountRef {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                uid: uid.to_owned(),
            },
            audiences: vec![DEFAULT_ISSUER.to_owned()],
            seconds: 3600,
            bound: None,
            extended: false,
            issued_at: None,
        }
    }

    pub fn audiences(mut self, audiences: &[&str]) -> Self {
        self.audiences = audiences.iter().map(|a| a.to_string()).collect();
        self
    }

    pub fn lifetime(mut self, seconds: i64) -> Self {
        self.seconds = seconds;
        self
    }

    /// Bound to the pod `name` with `uid`.
    pub fn bound_to_pod(self, name: &str, uid: &str) -> Self {
        self.bound_to(Some(pod_binding(name, uid)))
    }

    pub fn bound_to(mut self, bound: Option<BoundObject>) -> Self {
        self.bound = bound;
        self
    }

    /// With kube-apiserver's one-year `exp` and a `warnafter` at the end of the lifetime.
    pub fn extended(mut self) -> Self {
        self.extended = true;
        self
    }

    pub fn issued_at(mut self, at: Timestamp) -> Self {
        self.issued_at = Some(at);
        self
    }

    /// Signs it with `key`.
    pub fn mint(self, key: &Arc<SigningKey>) -> IssuedToken {
        let issuer = Issuer::new(IssuerConfig::new(DEFAULT_ISSUER), key.clone());
        let request = ValidatedRequest {
            audiences: self.audiences,
            expiration_seconds: self.seconds,
            extended: self.extended,
            bound_object: self.bound,
            warnings: Vec::new(),
        };
        let at = self.issued_at.unwrap_or_else(Timestamp::now);
        issuer.mint(&self.account, &request, at).expect("mint")
    }
}

/// A reference to a pod, for [`TokenSpec::bound_to`].
pub fn pod_binding(name: &str, uid: &str) -> BoundObject {
    BoundObject {
        kind: BoundKind::Pod,
        name: name.to_owned(),
        uid: uid.to_owned(),
        node: None,
    }
}
