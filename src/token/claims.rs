//! The claim sets kube-apiserver puts in service account JWTs.
//!
//! Field order is alphabetical at every level on purpose: upstream marshals claims through a map,
//! so its JSON keys come out sorted, and we produce byte-for-byte the same shape.

use serde::{Deserialize, Serialize};

use crate::names::{is_dns1123_label, is_dns1123_subdomain};

/// `WarnOnlyBoundTokenExpirationSeconds`: the marker lifetime of the default `kube-api-access` token.
pub const WARN_ONLY_BOUND_TOKEN_EXPIRATION_SECONDS: i64 = 3607;
/// `ExpirationExtensionSeconds`: how long an extended 3607 token really lives (365 days).
pub const EXPIRATION_EXTENSION_SECONDS: i64 = 31_536_000;
/// Issuer of legacy secret-based tokens.
pub const LEGACY_ISSUER: &str = "kubernetes/serviceaccount";

/// A `{name, uid}` reference inside the `kubernetes.io` claim. Empty strings are omitted, as upstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ObjectRef {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
}

impl ObjectRef {
    pub fn new(name: impl Into<String>, uid: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            uid: uid.into(),
        }
    }
}

/// The private `kubernetes.io` claim of a bound token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct KubernetesClaims {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<ObjectRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<ObjectRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<ObjectRef>,
    #[serde(default)]
    pub serviceaccount: ObjectRef,
    /// Unix seconds after which use of the token counts as stale (extended tokens only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warnafter: Option<i64>,
}

/// Claims of a bound (TokenRequest) service account token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoundClaims {
    /// Always an array, even with one audience (go-jose never collapses it).
    pub aud: Vec<String>,
    pub exp: i64,
    pub iat: i64,
    pub iss: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    #[serde(rename = "kubernetes.io")]
    pub kubernetes: KubernetesClaims,
    pub nbf: i64,
    pub sub: String,
}

/// Claims of a legacy secret-based token: flat private claims and no `exp`. A missing claim reads
/// as empty, so that the validator can say which one is missing, as upstream's does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegacyClaims {
    #[serde(default)]
    pub iss: String,
    #[serde(default, rename = "kubernetes.io/serviceaccount/namespace")]
    pub namespace: String,
    #[serde(default, rename = "kubernetes.io/serviceaccount/secret.name")]
    pub secret_name: String,
    #[serde(default, rename = "kubernetes.io/serviceaccount/service-account.name")]
    pub service_account_name: String,
    #[serde(default, rename = "kubernetes.io/serviceaccount/service-account.uid")]
    pub service_account_uid: String,
    #[serde(default)]
    pub sub: String,
}

/// `system:serviceaccount:<namespace>:<name>`, the subject and user name of a service account.
pub fn service_account_subject(namespace: &str, name: &str) -> String {
    format!("{SUBJECT_PREFIX}{namespace}:{name}")
}

const SUBJECT_PREFIX: &str = "system:serviceaccount:";

/// Upstream's `SplitUsername`: the namespace and name of a service account user name, only when
/// both are valid names (so `system:serviceaccount:a:b:c` names nobody).
pub fn split_service_account_subject(subject: &str) -> Option<(&str, &str)> {
    let rest = subject.strip_prefix(SUBJECT_PREFIX)?;
    let (namespace, name) = rest.split_once(':')?;
    (is_dns1123_label(namespace) && is_dns1123_subdomain(name)).then_some((namespace, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bound_claims_serialise_with_sorted_keys_and_array_audience() {
        let claims = BoundClaims {
            aud: vec!["https://kubernetes.default.svc.cluster.local".into()],
            exp: 1_731_536_000,
            iat: 1_700_000_000,
            iss: "https://kubernetes.default.svc.cluster.local".into(),
            jti: Some("j".into()),
            kubernetes: KubernetesClaims {
                namespace: "default".into(),
                node: None,
                pod: Some(ObjectRef::new("p", "pu")),
                secret: None,
                serviceaccount: ObjectRef::new("default", "su"),
                warnafter: Some(1_700_003_607),
            },
            nbf: 1_700_000_000,
            sub: "system:serviceaccount:default:default".into(),
        };
        let json = serde_json::to_string(&claims).unwrap();
        assert_eq!(
            json,
            r#"{"aud":["https://kubernetes.default.svc.cluster.local"],"exp":1731536000,"iat":1700000000,"iss":"https://kubernetes.default.svc.cluster.local","jti":"j","kubernetes.io":{"namespace":"default","pod":{"name":"p","uid":"pu"},"serviceaccount":{"name":"default","uid":"su"},"warnafter":1700003607},"nbf":1700000000,"sub":"system:serviceaccount:default:default"}"#
        );
    }

    #[test]
    fn subjects_split_only_into_valid_names() {
        assert_eq!(
            split_service_account_subject("system:serviceaccount:ns:web.app"),
            Some(("ns", "web.app"))
        );
        for bad in [
            "system:serviceaccount:a:b:c",
            "system:serviceaccount:ns",
            "system:serviceaccount::app",
            "system:serviceaccount:ns:",
            "system:serviceaccount:NS:app",
            "system:serviceaccount:a.b:app",
            "system:admin",
            "admin",
        ] {
            assert_eq!(split_service_account_subject(bad), None, "{bad}");
        }
    }

    #[test]
    fn legacy_claims_use_flat_upstream_names() {
        let claims = LegacyClaims {
            iss: LEGACY_ISSUER.into(),
            namespace: "ns".into(),
            secret_name: "s".into(),
            service_account_name: "sa".into(),
            service_account_uid: "u".into(),
            sub: service_account_subject("ns", "sa"),
        };
        let value = serde_json::to_value(&claims).unwrap();
        assert_eq!(value["kubernetes.io/serviceaccount/secret.name"], "s");
        assert_eq!(value["sub"], "system:serviceaccount:ns:sa");
        assert!(value.get("exp").is_none());
    }
}
