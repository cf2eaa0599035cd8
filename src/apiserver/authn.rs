//! Request authentication: the admin token, service account tokens the emulator (or a
//! replica with the same key) issued, validated as kube-apiserver's JWT authenticator does, and
//! client certificates of the emulator's CA, mapped as kube-apiserver's x509 authenticator does.
//!
//! With auto-creation on, a valid token whose service account or pod the store does not know is
//! adopted (its uids taken from the claims), so replicas sharing a signing key accept each
//! other's tokens; a deleted pod is remembered and never adopted again. Names no object could
//! have are never adopted.
//!
//! A service account's user is built from the names its claims carry (`kubernetes.io` for a
//! bound token, the flat claims for a legacy one), as upstream's validators do; `sub` must agree.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use k8s_openapi::api::authentication::v1::UserInfo;

use super::usage::Rejection;
use crate::issuer::keyring::KeyRing;
use crate::issuer::objects::ObjectStore;
use crate::issuer::verify::VerifyError;
use crate::token::claims::{service_account_subject, split_service_account_subject, LEGACY_ISSUER};
use crate::token::{decode, BoundClaims, LegacyClaims, ObjectRef};

/// The user name of the admin token.
pub const ADMIN_USER: &str = "system:admin";
/// Upstream's superuser group: its members pass every authorization check.
pub const MASTERS_GROUP: &str = "system:masters";
const AUTHENTICATED_GROUP: &str = "system:authenticated";

/// Who made a request.
#[derive(Debug, Clone)]
pub enum Caller {
    Admin,
    ServiceAccount(Box<ServiceAccountCaller>),
    /// A verified client certificate's user.
    User(UserInfo),
}

/// A service account token that authenticated.
#[derive(Debug, Clone)]
pub struct ServiceAccountCaller {
    pub user: UserInfo,
    pub token: TokenFacts,
    /// The audiences the token was accepted for (its `aud` intersected with the targets).
    pub audiences: Vec<String>,
}

/// What accounting needs to know of a presented token. Never the token itself.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TokenFacts {
    pub subject: String,
    pub namespace: String,
    pub service_account: String,
    pub pod: Option<ObjectRef>,
    pub jti: Option<String>,
    pub warn_after: Option<i64>,
    pub expires_at: Option<i64>,
    pub issued_at: Option<i64>,
    pub legacy: bool,
}

/// Why authentication failed. `facts` and `rejection` are set when the token is one of ours (its
/// signature verifies with a key we publish or once published) so that even a rejected use is
/// accounted to its client; never for a token we cannot show we signed.
#[derive(Debug, Clone)]
pub struct AuthnFailure {
    pub reason: String,
    pub facts: Option<Box<TokenFacts>>,
    pub rejection: Option<Rejection>,
}

impl AuthnFailure {
    fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            facts: None,
            rejection: None,
        }
    }

    /// The text upstream puts in a TokenReview's `status.error` and its log line.
    pub fn review_error(&self) -> String {
        format!("[invalid bearer token, {}]", self.reason)
    }
}

/// Validates bearer tokens.
#[derive(Debug)]
pub struct Authenticator {
    /// The keys published at the time of each request (a signing key rotation changes them).
    pub keys: Arc<KeyRing>,
    pub issuers: Vec<String>,
    pub api_audiences: Vec<String>,
    admin_token: String,
}

/// Constant-time equality, so the admin token cannot be guessed byte by byte from timings.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl Authenticator {
    pub fn new(
        keys: Arc<KeyRing>,
        issuers: Vec<String>,
        api_audiences: Vec<String>,
        admin_token: String,
    ) -> Self {
        Self {
            keys,
            issuers,
            api_audiences,
            admin_token,
        }
    }

    /// Authenticates `token` for `audiences` (empty: the API audiences) at `now`.
    pub fn authenticate(
        &self,
        token: &str,
        audiences: &[String],
        objects: &Mutex<ObjectStore>,
        now: Timestamp,
    ) -> Result<Caller, AuthnFailure> {
        // A token is taken as given: one with surrounding whitespace (a TokenReview's
        // `spec.token` copied with its newline) is not the token that was issued.
        if token.starts_with(char::is_whitespace) || token.ends_with(char::is_whitespace) {
            return Err(AuthnFailure::new(
                "token has leading or trailing whitespace",
            ));
        }
        if !self.admin_token.is_empty() && same_secret(token, &self.admin_token) {
            return Ok(Caller::Admin);
        }
        let targets = if audiences.is_empty() {
            &self.api_audiences
        } else {
            audiences
        };
        // Routing by the unverified issuer, as upstream's two JWT authenticators do.
        let decoded = decode(token)
            .map_err(|e| AuthnFailure::new(format!("not a service account token: {e}")))?;
        if decoded.string_claim("iss") == Some(LEGACY_ISSUER) {
            return self.authenticate_legacy(token, objects, now);
        }
        let published = self.keys.published(now);
        match published
            .keys
            .verify_bound(token, &self.issuers, targets, now)
        {
            // The signature is checked above without the lock; only the lookups hold it.
            Ok(claims) => self.check_bound_objects(claims, targets, &mut lock(objects)),
            Err(err) => {
                // A token that is ours is still worth accounting for: its signature verified
                // before a later check failed, or it verifies with a key we dropped.
                let rejection = match err {
                    VerifyError::Expired => Some(Rejection::Expired),
                    VerifyError::NotYetValid | VerifyError::IssuedInFuture => {
                        Some(Rejection::NotYetValid)
                    }
                    VerifyError::Audience { .. } => Some(Rejection::WrongAudience),
                    VerifyError::NoMatchingKey { .. }
                    | VerifyError::Signature
                    | VerifyError::AlgorithmMismatch { .. }
                        if self.keys.signed_by_dropped_key(token, now) =>
                    {
                        Some(Rejection::UnknownKey)
                    }
                    _ => None,
                };
                let facts = rejection.and_then(|_| {
                    serde_json::from_value::<BoundClaims>(serde_json::Value::Object(
                        decoded.claims.clone(),
                    ))
                    .ok()
                    .map(|claims| Box::new(bound_facts(&claims)))
                });
                Err(AuthnFailure {
                    reason: err.to_string(),
                    rejection: rejection.filter(|_| facts.is_some()),
                    facts,
                })
            }
        }
    }

    fn check_bound_objects(
        &self,
        claims: BoundClaims,
        targets: &[String],
        objects: &mut ObjectStore,
    ) -> Result<Caller, AuthnFailure> {
        let facts = bound_facts(&claims);
        let invalid = |reason: String| AuthnFailure {
            reason,
            facts: Some(Box::new(facts.clone())),
            rejection: Some(Rejection::Invalidated),
        };
        let k8s = &claims.kubernetes;
        let claimed_sa = &k8s.serviceaccount;
        // The user is built from `kubernetes.io`, as upstream's; a `sub` naming someone else
        // (only a holder of the signing key can make one) is refused rather than ignored.
        if claims.sub != facts.subject {
            return Err(invalid("sub claim is invalid".into()));
        }
        let live_sa = objects
            .ensure_service_account(&k8s.namespace, &claimed_sa.name, || claimed_sa.uid.clone())
            .ok_or_else(|| invalid(format!("serviceaccounts \"{}\" not found", claimed_sa.name)))?;
        if live_sa.uid != claimed_sa.uid {
            return Err(invalid(format!(
                "service account UID ({}) does not match claim ({})",
                live_sa.uid, claimed_sa.uid
            )));
        }
        if let Some(pod) = &k8s.pod {
            if objects.pod_was_deleted(&pod.uid) {
                return Err(invalid("service account token has been invalidated".into()));
            }
            let live = objects
                .ensure_pod(&k8s.namespace, &pod.name, &claimed_sa.name, || {
                    pod.uid.clone()
                })
                .ok_or_else(|| invalid("service account token has been invalidated".into()))?;
            if live.uid != pod.uid {
                return Err(invalid(format!(
                    "pod UID ({}) does not match service account pod ref claim ({})",
                    live.uid, pod.uid
                )));
            }
        }
        if let Some(secret) = &k8s.secret {
            let live = objects
                .ensure_secret(&k8s.namespace, &secret.name, || secret.uid.clone())
                .ok_or_else(|| invalid("service account token has been invalidated".into()))?;
            if live.uid != secret.uid {
                return Err(invalid(format!(
                    "secret UID ({}) does not match service account secret ref claim ({})",
                    live.uid, secret.uid
                )));
            }
        }
        if let (Some(node), None) = (&k8s.node, &k8s.pod) {
            let live = objects
                .ensure_node(&node.name, || node.uid.clone())
                .ok_or_else(|| invalid("service account token has been invalidated".into()))?;
            if live.uid != node.uid {
                return Err(invalid(format!(
                    "node UID ({}) does not match service account node ref claim ({})",
                    live.uid, node.uid
                )));
            }
        }
        let audiences = claims
            .aud
            .iter()
            .filter(|a| targets.contains(a))
            .cloned()
            .collect();
        Ok(Caller::ServiceAccount(Box::new(ServiceAccountCaller {
            user: bound_user_info(&claims),
            token: facts,
            audiences,
        })))
    }

    fn authenticate_legacy(
        &self,
        token: &str,
        objects: &Mutex<ObjectStore>,
        now: Timestamp,
    ) -> Result<Caller, AuthnFailure> {
        self.keys
            .published(now)
            .keys
            .verify_signature(token)
            .map_err(|e| AuthnFailure::new(e.to_string()))?;
        let decoded = decode(token).map_err(|e| AuthnFailure::new(e.to_string()))?;
        let claims: LegacyClaims =
            serde_json::from_value(serde_json::Value::Object(decoded.claims))
                .map_err(|e| AuthnFailure::new(format!("legacy token claims: {e}")))?;
        check_legacy_claims(&claims).map_err(AuthnFailure::new)?;
        let facts = TokenFacts {
            subject: claims.sub.clone(),
            namespace: claims.namespace.clone(),
            service_account: claims.service_account_name.clone(),
            legacy: true,
            ..TokenFacts::default()
        };
        let invalid = |reason: &str| AuthnFailure {
            reason: reason.to_owned(),
            facts: Some(Box::new(facts.clone())),
            rejection: Some(Rejection::Invalidated),
        };
        let mut objects = lock(objects);
        let live = objects
            .ensure_service_account(&claims.namespace, &claims.service_account_name, || {
                claims.service_account_uid.clone()
            })
            .ok_or_else(|| invalid("Token has been invalidated"))?;
        if live.uid != claims.service_account_uid {
            return Err(invalid("Token has been invalidated"));
        }
        if objects
            .ensure_secret(&claims.namespace, &claims.secret_name, uuid_v4)
            .is_none()
        {
            return Err(invalid("Token has been invalidated"));
        }
        let user = UserInfo {
            username: Some(facts.subject.clone()),
            uid: Some(claims.service_account_uid.clone()),
            groups: Some(service_account_groups(&claims.namespace)),
            extra: None,
        };
        Ok(Caller::ServiceAccount(Box::new(ServiceAccountCaller {
            user,
            token: facts,
            audiences: self.api_audiences.clone(),
        })))
    }
}

/// The store's lock; a panic elsewhere while holding it leaves plain data, still usable.
pub fn lock(objects: &Mutex<ObjectStore>) -> std::sync::MutexGuard<'_, ObjectStore> {
    objects
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn uuid_v4() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Upstream's legacy validator: every claim present, and `sub` the user name of the claimed
/// namespace and service account, both valid names (`SplitUsername`).
fn check_legacy_claims(claims: &LegacyClaims) -> Result<(), &'static str> {
    let required = [
        (&claims.sub, "sub claim is missing"),
        (&claims.namespace, "namespace claim is missing"),
        (&claims.secret_name, "secretName claim is missing"),
        (
            &claims.service_account_name,
            "serviceAccountName claim is missing",
        ),
        (
            &claims.service_account_uid,
            "serviceAccountUID claim is missing",
        ),
    ];
    if let Some((_, missing)) = required.iter().find(|(value, _)| value.is_empty()) {
        return Err(missing);
    }
    match split_service_account_subject(&claims.sub) {
        Some((namespace, name))
            if namespace == claims.namespace && name == claims.service_account_name =>
        {
            Ok(())
        }
        _ => Err("sub claim is invalid"),
    }
}

/// What accounting knows of a bound token; the subject is the user the claims name.
fn bound_facts(claims: &BoundClaims) -> TokenFacts {
    TokenFacts {
        subject: service_account_subject(
            &claims.kubernetes.namespace,
            &claims.kubernetes.serviceaccount.name,
        ),
        namespace: claims.kubernetes.namespace.clone(),
        service_account: claims.kubernetes.serviceaccount.name.clone(),
        pod: claims.kubernetes.pod.clone(),
        jti: claims.jti.clone(),
        warn_after: claims.kubernetes.warnafter,
        expires_at: Some(claims.exp),
        issued_at: Some(claims.iat),
        legacy: false,
    }
}

fn service_account_groups(namespace: &str) -> Vec<String> {
    vec![
        "system:serviceaccounts".to_owned(),
        format!("system:serviceaccounts:{namespace}"),
        "system:authenticated".to_owned(),
    ]
}

/// Upstream's user info for a bound token: extra keys only for what the claims carry.
fn bound_user_info(claims: &BoundClaims) -> UserInfo {
    let k8s = &claims.kubernetes;
    let mut extra = BTreeMap::new();
    let mut put = |key: &str, value: &str| {
        if !value.is_empty() {
            extra.insert(
                format!("authentication.kubernetes.io/{key}"),
                vec![value.to_owned()],
            );
        }
    };
    if let Some(pod) = k8s
        .pod
        .as_ref()
        .filter(|p| !p.name.is_empty() && !p.uid.is_empty())
    {
        put("pod-name", &pod.name);
        put("pod-uid", &pod.uid);
    }
    if let Some(node) = k8s.node.as_ref().filter(|n| !n.name.is_empty()) {
        put("node-name", &node.name);
        put("node-uid", &node.uid);
    }
    if let Some(jti) = &claims.jti {
        put("credential-id", &format!("JTI={jti}"));
    }
    UserInfo {
        username: Some(service_account_subject(
            &k8s.namespace,
            &k8s.serviceaccount.name,
        )),
        uid: Some(k8s.serviceaccount.uid.clone()),
        groups: Some(service_account_groups(&k8s.namespace)),
        extra: Some(extra).filter(|e| !e.is_empty()),
    }
}

/// The admin's user info.
pub fn admin_user_info() -> UserInfo {
    UserInfo {
        username: Some(ADMIN_USER.to_owned()),
        uid: None,
        groups: Some(vec![
            MASTERS_GROUP.to_owned(),
            AUTHENTICATED_GROUP.to_owned(),
        ]),
        extra: None,
    }
}

/// The user of a client certificate (DER) the TLS handshake already verified against the CA,
/// as upstream's `CommonNameUserConversion`: the subject's CN is the name, its O values the
/// groups (plus `system:authenticated`), and extra `authentication.kubernetes.io/credential-id`
/// `X509SHA256=<hex of the certificate's SHA-256>`. `None` without a CN, as upstream.
pub fn certificate_user(der: &[u8]) -> Option<UserInfo> {
    use x509_parser::prelude::{FromDer as _, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let subject = cert.subject();
    // Go keeps the last CN of a subject that has several.
    let name = subject
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok())
        .last()
        .filter(|cn| !cn.is_empty())?
        .to_owned();
    let mut groups: Vec<String> = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok())
        .map(str::to_owned)
        .collect();
    if !groups.iter().any(|g| g == AUTHENTICATED_GROUP) {
        groups.push(AUTHENTICATED_GROUP.to_owned());
    }
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    Some(UserInfo {
        username: Some(name),
        uid: None,
        groups: Some(groups),
        extra: Some(BTreeMap::from([(
            "authentication.kubernetes.io/credential-id".to_owned(),
            vec![format!("X509SHA256={hex}")],
        )])),
    })
}

impl Caller {
    pub fn user_info(&self) -> UserInfo {
        match self {
            Self::Admin => admin_user_info(),
            Self::ServiceAccount(sa) => sa.user.clone(),
            Self::User(user) => user.clone(),
        }
    }

    pub fn username(&self) -> String {
        match self {
            Self::Admin => ADMIN_USER.to_owned(),
            Self::ServiceAccount(sa) => sa.token.subject.clone(),
            Self::User(user) => user.username.clone().unwrap_or_default(),
        }
    }

    /// The admin token, or a user in `system:masters` (which upstream's authorizer lets do
    /// anything, ahead of RBAC).
    pub fn is_admin(&self) -> bool {
        match self {
            Self::Admin => true,
            Self::ServiceAccount(_) => false,
            Self::User(user) => user
                .groups
                .as_ref()
                .is_some_and(|groups| groups.iter().any(|g| g == MASTERS_GROUP)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::CertificateAuthority;

    fn der(pem_text: &str) -> Vec<u8> {
        pem::parse(pem_text).unwrap().into_contents()
    }

    #[test]
    fn certificate_user_is_cn_and_organizations_plus_authenticated() {
        let ca = CertificateAuthority::generate("test CA").unwrap();
        let (cert, _) = ca
            .client_certificate("alice", &["devs".to_owned(), "ops".to_owned()])
            .unwrap();
        let der = der(&cert);
        let user = certificate_user(&der).unwrap();
        assert_eq!(user.username.as_deref(), Some("alice"));
        assert_eq!(
            user.groups.unwrap(),
            ["devs", "ops", "system:authenticated"]
        );
        let id = &user.extra.unwrap()["authentication.kubernetes.io/credential-id"];
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &der);
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex.len(), 64);
        assert_eq!(id, &[format!("X509SHA256={hex}")]);
        assert!(!Caller::User(certificate_user(&der).unwrap()).is_admin());
    }

    #[test]
    fn legacy_claims_name_their_user_with_valid_names_only() {
        let claims = |namespace: &str, name: &str, sub: &str| LegacyClaims {
            iss: LEGACY_ISSUER.into(),
            namespace: namespace.into(),
            secret_name: "s".into(),
            service_account_name: name.into(),
            service_account_uid: "u".into(),
            sub: sub.into(),
        };
        let sub = service_account_subject;
        assert_eq!(
            check_legacy_claims(&claims("ns", "app", &sub("ns", "app"))),
            Ok(())
        );
        // `sub` agrees character for character, but names nobody: `a:b` is no namespace.
        for (namespace, name) in [("a:b", "c"), ("a", "b:c"), ("ns", "App"), ("ns", "..")] {
            assert_eq!(
                check_legacy_claims(&claims(namespace, name, &sub(namespace, name))),
                Err("sub claim is invalid"),
                "{namespace}/{name}"
            );
        }
        assert_eq!(
            check_legacy_claims(&claims("ns", "app", "system:admin")),
            Err("sub claim is invalid")
        );
        assert_eq!(
            check_legacy_claims(&claims("", "app", &sub("ns", "app"))),
            Err("namespace claim is missing")
        );
        let mut no_uid = claims("ns", "app", &sub("ns", "app"));
        no_uid.service_account_uid.clear();
        assert_eq!(
            check_legacy_claims(&no_uid),
            Err("serviceAccountUID claim is missing")
        );
    }

    #[test]
    fn masters_group_makes_an_admin_and_no_cn_no_user() {
        let ca = CertificateAuthority::generate("test CA").unwrap();
        let (cert, _) = ca
            .client_certificate("kubernetes-admin", &[MASTERS_GROUP.to_owned()])
            .unwrap();
        let caller = Caller::User(certificate_user(&der(&cert)).unwrap());
        assert!(caller.is_admin());
        assert_eq!(caller.username(), "kubernetes-admin");
        // The CA certificate has a CN; a plain self-signed one without CN maps to nobody.
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        let no_cn = params.self_signed(&key).unwrap();
        assert!(certificate_user(no_cn.der()).is_none());
        assert!(certificate_user(b"not a certificate").is_none());
        assert!(ca.client_certificate("", &[]).is_err());
    }
}
