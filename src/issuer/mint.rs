//! TokenRequest validation and minting, including the 3607 extension.

use std::sync::Arc;

use jiff::Timestamp;

use super::keys::{KeyError, SigningKey};
use crate::token::claims::{
    service_account_subject, EXPIRATION_EXTENSION_SECONDS, LEGACY_ISSUER,
    WARN_ONLY_BOUND_TOKEN_EXPIRATION_SECONDS,
};
use crate::token::{BoundClaims, KubernetesClaims, LegacyClaims, ObjectRef};

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
    #[error("failed to generate token: no randomness for the token id")]
    Random,
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
        if self.issuer.is_empty() {
            return Err(IssuerError::Config(
                "service-account-issuer is a required flag".into(),
            ));
        }
        match self.max_token_expiration {
            Some(max) if max != 0 && !(3600..=MAX_EXPIRATION_SECONDS).contains(&max) => {
                Err(IssuerError::Config(
                    "the service-account-max-token-expiration must be between 1 hour and 2^32 seconds"
                        .into(),
                ))
            }
            _ => Ok(()),
        }
    }

    /// The warnings kube-apiserver logs at start-up when the extension is on and a maximum is
    /// set: below 3607 s the extension can never apply; below a year extended tokens outlive it.
    pub fn startup_warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if let (true, Some(max)) = (self.extend_token_expiration, self.effective_max()) {
            let shown = go_duration(max);
            if max < WARN_ONLY_BOUND_TOKEN_EXPIRATION_SECONDS {
                warnings.push(format!(
                    "service-account-extend-token-expiration is true, in order to correctly trigger safe transition logic, service-account-max-token-expiration must be set longer than {WARN_ONLY_BOUND_TOKEN_EXPIRATION_SECONDS} seconds (currently {shown})"
                ));
            }
            if max < EXPIRATION_EXTENSION_SECONDS {
                warnings.push(format!(
                    "service-account-extend-token-expiration is true, enabling tokens valid up to {EXPIRATION_EXTENSION_SECONDS} seconds, which is longer than service-account-max-token-expiration set to {shown}"
                ));
            }
        }
        warnings
    }

    /// The maximum lifetime in force: unset and 0 both mean no cap, as upstream's flag.
    fn effective_max(&self) -> Option<i64> {
        self.max_token_expiration.filter(|max| *max > 0)
    }

    /// Validates a TokenRequest spec as kube-apiserver does: defaults, bounds, clamp, extension.
    pub fn validate(&self, spec: &TokenRequestSpec) -> Result<ValidatedRequest, RequestError> {
        let audiences = if spec.audiences.is_empty() {
            self.api_audiences.clone()
        } else {
            spec.audiences.clone()
        };
        let requested = spec
            .expiration_seconds
            .unwrap_or(DEFAULT_EXPIRATION_SECONDS);
        if requested < MIN_EXPIRATION_SECONDS {
            return Err(RequestError::Invalid {
                field: "spec.expirationSeconds",
                value: requested.to_string(),
                message: "may not specify a duration less than 10 minutes",
            });
        }
        if requested > MAX_EXPIRATION_SECONDS {
            return Err(RequestError::Invalid {
                field: "spec.expirationSeconds",
                value: requested.to_string(),
                message: "may not specify a duration larger than 2^32 seconds",
            });
        }
        let mut expiration_seconds = requested;
        let mut warnings = Vec::new();
        if let Some(max) = self.effective_max() {
            if requested > max {
                expiration_seconds = max;
                warnings.push(format!(
                    "requested expiration of {requested} seconds shortened to {max} seconds"
                ));
            }
        }
        // Decided after the clamp, so a maximum below 3607 s turns the extension off.
        let extended = self.extend_token_expiration
            && spec
                .bound_object
                .as_ref()
                .is_some_and(|o| o.kind == BoundKind::Pod)
            && expiration_seconds == WARN_ONLY_BOUND_TOKEN_EXPIRATION_SECONDS
            && audiences.iter().all(|a| self.api_audiences.contains(a));
        Ok(ValidatedRequest {
            audiences,
            expiration_seconds,
            extended,
            bound_object: spec.bound_object.clone(),
            warnings,
        })
    }
}

/// How many token ids one draw from the CSPRNG provides.
const JTI_BATCH: usize = 32;

/// A UUID v4 (as upstream's `uuid.NewRandom`) from aws-lc's CSPRNG, drawn in batches: one
/// `rand::fill` costs about as much as all the JSON and base64 work of a mint, so a per-thread
/// pool keeps ES256 minting within a few percent of the bare signature. The bytes are public
/// once in a token; the pool only has to be unpredictable, which the CSPRNG output is. (A
/// fork without exec would share the pool; the emulator never forks that way.)
fn random_uuid() -> Result<String, IssuerError> {
    use std::cell::RefCell;
    thread_local! {
        static POOL: RefCell<([u8; 16 * JTI_BATCH], usize)> =
            const { RefCell::new(([0; 16 * JTI_BATCH], JTI_BATCH)) };
    }
    let bytes = POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        let (buf, next) = &mut *pool;
        if *next == JTI_BATCH {
            aws_lc_rs::rand::fill(buf).map_err(|_| IssuerError::Random)?;
            *next = 0;
        }
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&buf[*next * 16..*next * 16 + 16]);
        // Used ids are wiped so the pool never holds a value already handed out.
        buf[*next * 16..*next * 16 + 16].fill(0);
        *next += 1;
        Ok::<_, IssuerError>(bytes)
    })?;
    let uuid = uuid::Builder::from_random_bytes(bytes).into_uuid();
    Ok(String::from(
        uuid.hyphenated()
            .encode_lower(&mut uuid::Uuid::encode_buffer()),
    ))
}

/// Go's `time.Duration` string for whole seconds (`3600` -> `1h0m0s`), as upstream logs it.
fn go_duration(seconds: i64) -> String {
    let (h, m, s) = (seconds / 3600, seconds % 3600 / 60, seconds % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

impl ValidatedRequest {
    /// Emulator-only time compression: replaces the lifetime (may be below 600 s) and keeps the
    /// extension decision, so a compressed 3607 token gets `warnafter = iat + seconds`.
    pub fn with_lifetime_override(self, seconds: i64) -> Self {
        Self {
            expiration_seconds: seconds,
            ..self
        }
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
        let out_of_range = || {
            IssuerError::Config(format!(
                "token lifetime of {} seconds is out of range",
                request.expiration_seconds
            ))
        };
        // NumericDate: whole Unix seconds, truncated.
        let iat = now.as_second();
        let lifetime_end = iat
            .checked_add(request.expiration_seconds)
            .ok_or_else(out_of_range)?;
        let (exp, warnafter) = if request.extended {
            (iat + EXPIRATION_EXTENSION_SECONDS, Some(lifetime_end))
        } else {
            (lifetime_end, None)
        };
        let mut kubernetes = KubernetesClaims {
            namespace: service_account.namespace.clone(),
            serviceaccount: ObjectRef::new(&service_account.name, &service_account.uid),
            warnafter,
            ..KubernetesClaims::default()
        };
        if let Some(bound) = &request.bound_object {
            let object = ObjectRef::new(&bound.name, &bound.uid);
            match bound.kind {
                BoundKind::Pod => {
                    kubernetes.pod = Some(object);
                    // The pod's node, when it has been scheduled (uid may be unknown).
                    kubernetes.node = bound.node.clone().filter(|n| !n.name.is_empty());
                }
                BoundKind::Secret => kubernetes.secret = Some(object),
                BoundKind::Node => kubernetes.node = Some(object),
            }
        }
        let claims = BoundClaims {
            aud: request.audiences.clone(),
            exp,
            iat,
            iss: self.config.issuer.clone(),
            jti: Some(random_uuid()?),
            kubernetes,
            nbf: iat,
            sub: service_account_subject(&service_account.namespace, &service_account.name),
        };
        let token = self.key.sign_jwt(&claims)?;
        // The status keeps full precision and the unextended lifetime, as upstream's response.
        let expiration_timestamp = now
            .checked_add(jiff::SignedDuration::from_secs(request.expiration_seconds))
            .map_err(|_| out_of_range())?;
        Ok(IssuedToken {
            token,
            claims,
            issued_at: now,
            expiration_seconds: request.expiration_seconds,
            expiration_timestamp,
        })
    }

    /// Mints a legacy secret-based token (`iss: kubernetes/serviceaccount`, no `exp`).
    pub fn mint_legacy(
        &self,
        service_account: &ServiceAccountRef,
        secret_name: &str,
    ) -> Result<String, IssuerError> {
        let claims = LegacyClaims {
            iss: LEGACY_ISSUER.into(),
            namespace: service_account.namespace.clone(),
            secret_name: secret_name.into(),
            service_account_name: service_account.name.clone(),
            service_account_uid: service_account.uid.clone(),
            sub: service_account_subject(&service_account.namespace, &service_account.name),
        };
        Ok(self.key.sign_jwt(&claims)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;

    use crate::issuer::KeyAlgorithm;

    const API: &str = "https://kubernetes.default.svc.cluster.local";

    fn config() -> IssuerConfig {
        IssuerConfig::new(API)
    }

    fn pod(node: Option<ObjectRef>) -> BoundObject {
        BoundObject {
            kind: BoundKind::Pod,
            name: "web-0".into(),
            uid: "pod-uid".into(),
            node,
        }
    }

    fn spec(
        seconds: Option<i64>,
        audiences: &[&str],
        bound: Option<BoundObject>,
    ) -> TokenRequestSpec {
        TokenRequestSpec {
            audiences: audiences.iter().map(|a| a.to_string()).collect(),
            expiration_seconds: seconds,
            bound_object: bound,
        }
    }

    fn invalid(value: i64, message: &'static str) -> RequestError {
        RequestError::Invalid {
            field: "spec.expirationSeconds",
            value: value.to_string(),
            message,
        }
    }

    #[test]
    fn expiration_bounds_and_default() {
        let c = config();
        let cases: [(Option<i64>, Result<i64, RequestError>); 6] = [
            (None, Ok(3600)),
            (Some(600), Ok(600)),
            (
                Some(599),
                Err(invalid(
                    599,
                    "may not specify a duration less than 10 minutes",
                )),
            ),
            (Some(1 << 32), Ok(1 << 32)),
            (
                Some((1 << 32) + 1),
                Err(invalid(
                    (1 << 32) + 1,
                    "may not specify a duration larger than 2^32 seconds",
                )),
            ),
            (
                Some(-1),
                Err(invalid(
                    -1,
                    "may not specify a duration less than 10 minutes",
                )),
            ),
        ];
        for (asked, want) in cases {
            let got = c
                .validate(&spec(asked, &[], None))
                .map(|v| v.expiration_seconds);
            assert_eq!(got, want, "asked {asked:?}");
        }
        let err = c.validate(&spec(Some(60), &[], None)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "spec.expirationSeconds: Invalid value: 60: may not specify a duration less than 10 minutes"
        );
    }

    #[test]
    fn audiences_default_to_the_api_audiences() {
        let mut c = config();
        c.api_audiences = vec!["a".into(), "b".into()];
        let v = c.validate(&spec(None, &[], None)).unwrap();
        assert_eq!(v.audiences, ["a", "b"]);
        let v = c.validate(&spec(None, &["vault"], None)).unwrap();
        assert_eq!(v.audiences, ["vault"]);
    }

    #[test]
    fn clamp_to_the_maximum_with_a_warning() {
        let mut c = config();
        c.max_token_expiration = Some(7200);
        let v = c.validate(&spec(Some(86400), &[], None)).unwrap();
        assert_eq!(v.expiration_seconds, 7200);
        assert_eq!(
            v.warnings,
            ["requested expiration of 86400 seconds shortened to 7200 seconds"]
        );
        // At or below the maximum: untouched, no warning.
        let v = c.validate(&spec(Some(7200), &[], None)).unwrap();
        assert_eq!((v.expiration_seconds, v.warnings.len()), (7200, 0));
        // Bounds are checked on the request before the clamp.
        c.max_token_expiration = Some(3600);
        assert!(c.validate(&spec(Some(599), &[], None)).is_err());
        // 0 means no cap.
        c.max_token_expiration = Some(0);
        let v = c.validate(&spec(Some(86400), &[], None)).unwrap();
        assert_eq!(v.expiration_seconds, 86400);
    }

    #[test]
    fn extension_needs_all_four_conditions() {
        let secret = BoundObject {
            kind: BoundKind::Secret,
            ..pod(None)
        };
        let node = BoundObject {
            kind: BoundKind::Node,
            ..pod(None)
        };
        // (flag, spec, extended?)
        let cases = [
            (true, spec(Some(3607), &[], Some(pod(None))), true),
            (true, spec(Some(3607), &[API], Some(pod(None))), true),
            (false, spec(Some(3607), &[], Some(pod(None))), false),
            (true, spec(Some(3607), &[], Some(secret)), false),
            (true, spec(Some(3607), &[], Some(node)), false),
            (true, spec(Some(3607), &[], None), false),
            (true, spec(Some(3606), &[], Some(pod(None))), false),
            (true, spec(Some(3608), &[], Some(pod(None))), false),
            (true, spec(Some(3607), &["vault"], Some(pod(None))), false),
            (
                true,
                spec(Some(3607), &[API, "vault"], Some(pod(None))),
                false,
            ),
        ];
        for (flag, s, want) in cases {
            let mut c = config();
            c.extend_token_expiration = flag;
            let v = c.validate(&s).unwrap();
            assert_eq!(v.extended, want, "flag {flag} spec {s:?}");
            assert_eq!(v.expiration_seconds, s.expiration_seconds.unwrap());
        }
    }

    #[test]
    fn extension_is_decided_after_the_clamp() {
        let mut c = config();
        // A maximum below 3607 shortens the marker value, so the extension never applies.
        c.max_token_expiration = Some(3600);
        let v = c.validate(&spec(Some(3607), &[], Some(pod(None)))).unwrap();
        assert_eq!((v.expiration_seconds, v.extended), (3600, false));
        assert_eq!(v.warnings.len(), 1);
        // A maximum of exactly 3607 makes a longer request land on the marker.
        c.max_token_expiration = Some(3607);
        let v = c.validate(&spec(Some(7200), &[], Some(pod(None)))).unwrap();
        assert_eq!((v.expiration_seconds, v.extended), (3607, true));
    }

    #[test]
    fn check_bounds_the_maximum() {
        let cases = [
            (None, true),
            (Some(0), true),
            (Some(3599), false),
            (Some(3600), true),
            (Some(1 << 32), true),
            (Some((1 << 32) + 1), false),
            (Some(-3600), false),
        ];
        for (max, ok) in cases {
            let mut c = config();
            c.max_token_expiration = max;
            let got = c.check();
            assert_eq!(got.is_ok(), ok, "max {max:?}");
            if let Err(e) = got {
                assert_eq!(
                    e.to_string(),
                    "the service-account-max-token-expiration must be between 1 hour and 2^32 seconds"
                );
            }
        }
        assert!(IssuerConfig::new("").check().is_err());
    }

    #[test]
    fn startup_warnings_as_upstream() {
        let mut c = config();
        assert!(c.startup_warnings().is_empty());
        c.max_token_expiration = Some(3600);
        let w = c.startup_warnings();
        assert_eq!(w.len(), 2);
        assert_eq!(
            w[0],
            "service-account-extend-token-expiration is true, in order to correctly trigger safe transition logic, service-account-max-token-expiration must be set longer than 3607 seconds (currently 1h0m0s)"
        );
        assert_eq!(
            w[1],
            "service-account-extend-token-expiration is true, enabling tokens valid up to 31536000 seconds, which is longer than service-account-max-token-expiration set to 1h0m0s"
        );
        c.extend_token_expiration = false;
        assert!(c.startup_warnings().is_empty());
        assert_eq!(go_duration(59), "59s");
        assert_eq!(go_duration(61), "1m1s");
    }

    fn issuer() -> Issuer {
        Issuer::new(
            config(),
            Arc::new(SigningKey::generate(KeyAlgorithm::Es256).unwrap()),
        )
    }

    fn sa() -> ServiceAccountRef {
        ServiceAccountRef {
            namespace: "team-a".into(),
            name: "builder".into(),
            uid: "sa-uid".into(),
        }
    }

    fn payload(token: &str) -> serde_json::Value {
        let part = token.split('.').nth(1).unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    }

    /// 2023-11-14T22:13:20.75Z: a fractional second to show truncation.
    fn now() -> Timestamp {
        Timestamp::new(1_700_000_000, 750_000_000).unwrap()
    }

    #[test]
    fn mint_produces_upstreams_exact_claims() {
        let issuer = issuer();
        let request = issuer
            .config
            .validate(&spec(
                Some(3600),
                &[],
                Some(pod(Some(ObjectRef::new("node-1", "node-uid")))),
            ))
            .unwrap();
        let issued = issuer.mint(&sa(), &request, now()).unwrap();
        let mut got = payload(&issued.token);
        let jti = got["jti"].as_str().unwrap().to_string();
        let parsed = uuid::Uuid::parse_str(&jti).unwrap();
        assert_eq!(parsed.get_version_num(), 4);
        got["jti"] = "JTI".into();
        let want = serde_json::json!({
            "aud": [API],
            "exp": 1_700_003_600,
            "iat": 1_700_000_000,
            "iss": API,
            "jti": "JTI",
            "kubernetes.io": {
                "namespace": "team-a",
                "node": {"name": "node-1", "uid": "node-uid"},
                "pod": {"name": "web-0", "uid": "pod-uid"},
                "serviceaccount": {"name": "builder", "uid": "sa-uid"}
            },
            "nbf": 1_700_000_000,
            "sub": "system:serviceaccount:team-a:builder"
        });
        assert_eq!(got, want);
        // The returned claims are the signed ones, byte for byte.
        let part = issued.token.split('.').nth(1).unwrap();
        assert_eq!(
            URL_SAFE_NO_PAD.decode(part).unwrap(),
            serde_json::to_vec(&issued.claims).unwrap()
        );
        assert_eq!(issued.issued_at, now());
        assert_eq!(issued.expiration_seconds, 3600);
        assert_eq!(
            issued.expiration_timestamp,
            Timestamp::new(1_700_003_600, 750_000_000).unwrap()
        );
    }

    #[test]
    fn extended_token_lives_a_year_and_warns_after_3607() {
        let issuer = issuer();
        let request = issuer
            .config
            .validate(&spec(Some(3607), &[], Some(pod(None))))
            .unwrap();
        assert!(request.extended);
        let issued = issuer.mint(&sa(), &request, now()).unwrap();
        let c = &issued.claims;
        assert_eq!(c.exp, c.iat + 31_536_000);
        assert_eq!(c.kubernetes.warnafter, Some(c.iat + 3607));
        assert_eq!(c.kubernetes.node, None);
        // The status says the unextended lifetime.
        assert_eq!(issued.expiration_seconds, 3607);
        assert_eq!(
            issued.expiration_timestamp,
            Timestamp::new(1_700_003_607, 750_000_000).unwrap()
        );
        assert_eq!(
            payload(&issued.token)["kubernetes.io"]["warnafter"],
            1_700_003_607
        );

        // Not extended: no warnafter, exp is the lifetime.
        let plain = issuer
            .config
            .validate(&spec(Some(3607), &["vault"], Some(pod(None))))
            .unwrap();
        let issued = issuer.mint(&sa(), &plain, now()).unwrap();
        assert_eq!(issued.claims.exp, issued.claims.iat + 3607);
        assert_eq!(issued.claims.kubernetes.warnafter, None);
        assert!(payload(&issued.token)["kubernetes.io"]
            .get("warnafter")
            .is_none());
    }

    #[test]
    fn compressed_override_keeps_the_extension() {
        let issuer = issuer();
        let request = issuer
            .config
            .validate(&spec(Some(3607), &[], Some(pod(None))))
            .unwrap()
            .with_lifetime_override(2);
        assert_eq!((request.expiration_seconds, request.extended), (2, true));
        let issued = issuer.mint(&sa(), &request, now()).unwrap();
        assert_eq!(issued.claims.kubernetes.warnafter, Some(1_700_000_002));
        assert_eq!(issued.claims.exp, 1_700_000_000 + 31_536_000);
        assert_eq!(
            issued.expiration_timestamp,
            Timestamp::new(1_700_000_002, 750_000_000).unwrap()
        );
        // Without the extension the override is the real lifetime.
        let plain = issuer
            .config
            .validate(&spec(None, &[], Some(pod(None))))
            .unwrap()
            .with_lifetime_override(30);
        let issued = issuer.mint(&sa(), &plain, now()).unwrap();
        assert_eq!(issued.claims.exp, 1_700_000_030);
        assert_eq!(issued.claims.kubernetes.warnafter, None);
    }

    #[test]
    fn secret_and_node_bindings() {
        let issuer = issuer();
        for (kind, key) in [(BoundKind::Secret, "secret"), (BoundKind::Node, "node")] {
            let bound = BoundObject {
                kind,
                name: "obj".into(),
                uid: "obj-uid".into(),
                node: None,
            };
            let request = issuer
                .config
                .validate(&spec(None, &[], Some(bound)))
                .unwrap();
            let issued = issuer.mint(&sa(), &request, now()).unwrap();
            let k8s = &payload(&issued.token)["kubernetes.io"];
            assert_eq!(
                k8s[key],
                serde_json::json!({"name": "obj", "uid": "obj-uid"})
            );
            assert!(k8s.get("pod").is_none());
        }
        // Unbound: only namespace and serviceaccount; a pod's node without uid keeps only its name.
        let request = issuer.config.validate(&spec(None, &[], None)).unwrap();
        let k8s =
            payload(&issuer.mint(&sa(), &request, now()).unwrap().token)["kubernetes.io"].clone();
        assert_eq!(
            k8s,
            serde_json::json!({"namespace": "team-a", "serviceaccount": {"name": "builder", "uid": "sa-uid"}})
        );
        let request = issuer
            .config
            .validate(&spec(
                None,
                &[],
                Some(pod(Some(ObjectRef::new("node-1", "")))),
            ))
            .unwrap();
        let k8s =
            payload(&issuer.mint(&sa(), &request, now()).unwrap().token)["kubernetes.io"].clone();
        assert_eq!(k8s["node"], serde_json::json!({"name": "node-1"}));
    }

    #[test]
    fn each_token_gets_a_new_jti() {
        let issuer = issuer();
        let request = issuer.config.validate(&spec(None, &[], None)).unwrap();
        let a = issuer.mint(&sa(), &request, now()).unwrap();
        let b = issuer.mint(&sa(), &request, now()).unwrap();
        assert_ne!(a.claims.jti, b.claims.jti);
    }

    #[test]
    fn pooled_token_ids_are_distinct_v4_uuids() {
        let ids: std::collections::HashSet<String> =
            (0..3 * JTI_BATCH).map(|_| random_uuid().unwrap()).collect();
        assert_eq!(ids.len(), 3 * JTI_BATCH);
        for id in &ids {
            let uuid = uuid::Uuid::parse_str(id).unwrap();
            assert_eq!(uuid.get_version_num(), 4);
            assert_eq!(uuid.get_variant(), uuid::Variant::RFC4122);
            assert_eq!(id.len(), 36);
        }
    }

    #[test]
    fn legacy_token_claims() {
        let issuer = issuer();
        let token = issuer.mint_legacy(&sa(), "builder-token-abcde").unwrap();
        assert_eq!(
            payload(&token),
            serde_json::json!({
                "iss": "kubernetes/serviceaccount",
                "kubernetes.io/serviceaccount/namespace": "team-a",
                "kubernetes.io/serviceaccount/secret.name": "builder-token-abcde",
                "kubernetes.io/serviceaccount/service-account.name": "builder",
                "kubernetes.io/serviceaccount/service-account.uid": "sa-uid",
                "sub": "system:serviceaccount:team-a:builder"
            })
        );
    }
}
