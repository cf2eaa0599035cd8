//! `POST /api/v1/namespaces/{ns}/serviceaccounts/{name}/token`: upstream's checks in upstream's
//! order (`TokenREST.Create`), against the in-memory objects. Pure apart from signing: the caller
//! passes `now` and a uid generator. The handler (authorization, body, audit) comes last.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use jiff::Timestamp;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec, TokenRequestStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::audit;
use super::authn::lock;
use super::body::read_body;
use super::protobuf;
use super::request::{
    add_warnings, admin_reason, body_error, json_response, respond, ApiState, RequestContext,
};
use super::status::{go_quote, ApiError};
use crate::issuer::objects::ObjectStore;
use crate::issuer::{
    BoundKind, BoundObject, IssuedToken, Issuer, RequestError, ServiceAccountRef,
    TokenRequestSpec as IssuerSpec, ValidatedRequest, DEFAULT_EXPIRATION_SECONDS,
    MIN_EXPIRATION_SECONDS,
};
use crate::names::is_dns1123_label;
use crate::token::ObjectRef;

const GROUP: &str = "authentication.k8s.io";
const KIND: &str = "TokenRequest";

/// A minted token and the response that carries it.
#[derive(Debug)]
pub struct CreatedToken {
    pub response: TokenRequest,
    /// `Warning` header texts (e.g. the max-expiration clamp).
    pub warnings: Vec<String>,
    pub issued: IssuedToken,
}

/// A TokenRequest checked against the objects, ready to be signed.
#[derive(Debug)]
pub struct PreparedToken {
    body: TokenRequest,
    spec: TokenRequestSpec,
    service_account: ServiceAccountRef,
    validated: ValidatedRequest,
}

/// Validates, resolves and mints one TokenRequest for service account `namespace/name`.
/// `lifetime_override`: the emulator's time compression, as for [`prepare_token`].
#[allow(clippy::too_many_arguments)] // the request, its context and the emulator's one switch
pub fn create_token(
    issuer: &Issuer,
    objects: &mut ObjectStore,
    namespace: &str,
    name: &str,
    body: TokenRequest,
    lifetime_override: Option<i64>,
    now: Timestamp,
    new_uid: &mut dyn FnMut() -> String,
) -> Result<CreatedToken, ApiError> {
    let prepared = prepare_token(
        issuer,
        objects,
        namespace,
        name,
        body,
        lifetime_override,
        new_uid,
    )?;
    sign_token(issuer, prepared, now)
}

/// Everything of [`create_token`] that needs the objects: the checks, the service account and
/// the bound object. The server holds the object store's lock only for this, so that signing
/// (an RSA-2048 signature is ~0.25 ms) runs outside it and in parallel on the workers. As
/// upstream, which reads the pod and then signs, an object deleted in between still gets its
/// token, which stops authenticating at once.
///
/// `lifetime_override` is `emulate --expiration-seconds` (or `ctl lifetime`): every token gets
/// that lifetime, whatever was asked (a deliberate difference: the emulator compresses time for
/// TokenRequest clients as for its own volumes). The request is still checked as upstream checks
/// it, except that a lifetime below 600 s passes, being replaced anyway.
pub fn prepare_token(
    issuer: &Issuer,
    objects: &mut ObjectStore,
    namespace: &str,
    name: &str,
    body: TokenRequest,
    lifetime_override: Option<i64>,
    new_uid: &mut dyn FnMut() -> String,
) -> Result<PreparedToken, ApiError> {
    // 0. The namespace must exist: upstream's NamespaceLifecycle admission answers a create in
    //    one that does not with 404, and one whose name is not a DNS-1123 label never can. (The
    //    emulator's namespaces exist implicitly; there is no Namespace object to look up.)
    if !is_dns1123_label(namespace) {
        return Err(ApiError::not_found("namespaces", namespace));
    }
    // 1. Name and namespace in the body, when given, must match the URL.
    let mismatch = |field: &str, value: &str, message: &str| {
        ApiError::invalid(GROUP, KIND, name, field, &go_quote(value), message)
    };
    if let Some(body_name) = body.metadata.name.as_deref().filter(|n| !n.is_empty()) {
        if body_name != name {
            return Err(mismatch(
                "metadata.name",
                body_name,
                "must match the service account name if specified",
            ));
        }
    }
    if let Some(body_ns) = body.metadata.namespace.as_deref().filter(|n| !n.is_empty()) {
        if body_ns != namespace {
            return Err(mismatch(
                "metadata.namespace",
                body_ns,
                "must match the service account namespace if specified",
            ));
        }
    }
    // 2. The service account must exist. The storage refuses a name it cannot make a key of
    //    (400); any other invalid name is looked up, found nowhere and never auto-created (404).
    ApiError::check_name_parameter(name)?;
    let service_account_uid = objects
        .ensure_service_account(namespace, name, &mut *new_uid)
        .map(|sa| sa.uid.clone())
        .ok_or_else(|| ApiError::not_found("serviceaccounts", name))?;
    // 3. A uid in the request must be the service account's.
    if let Some(uid) = body.metadata.uid.as_deref().filter(|u| !u.is_empty()) {
        if uid != service_account_uid {
            return Err(ApiError::conflict(
                GROUP,
                KIND,
                name,
                &format!("the UID in the token request ({uid}) does not match the UID of the service account ({service_account_uid})"),
            ));
        }
    }
    let spec = body.spec.clone().unwrap_or_default();
    // 4. Static validation (defaults, bounds, clamp, extension) before the bound object.
    let requested = IssuerSpec {
        audiences: spec.audiences.clone().unwrap_or_default(),
        expiration_seconds: match lifetime_override {
            Some(_) => spec
                .expiration_seconds
                .map(|s| s.max(MIN_EXPIRATION_SECONDS)),
            None => spec.expiration_seconds,
        },
        bound_object: None,
    };
    let mut validated = issuer.config.validate(&requested).map_err(|e| match e {
        RequestError::Invalid {
            field,
            value,
            message,
        } => ApiError::invalid(GROUP, KIND, "", field, &value, message),
    })?;
    // 5. The bound object, resolved against the store.
    if let Some(reference) = &spec.bound_object_ref {
        let bound = resolve_bound_object(objects, namespace, name, reference, new_uid)?;
        // The extension depends on the binding, so decide again with it.
        validated = issuer
            .config
            .validate(&IssuerSpec {
                bound_object: Some(bound),
                ..requested
            })
            .map_err(|e| ApiError::internal(e.to_string()))?;
    }
    if let Some(seconds) = lifetime_override {
        let asked = spec
            .expiration_seconds
            .unwrap_or(DEFAULT_EXPIRATION_SECONDS);
        validated = compress_lifetime(validated, asked, seconds);
    }
    Ok(PreparedToken {
        body,
        spec,
        service_account: ServiceAccountRef {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            uid: service_account_uid,
        },
        validated,
    })
}

/// The emulator's time compression of a validated request: its lifetime becomes `seconds` (the
/// 3607 extension decided on what was asked stays, as for the emulator's own volumes), and the
/// only warning says so, since any clamp it replaces no longer applies.
fn compress_lifetime(validated: ValidatedRequest, asked: i64, seconds: i64) -> ValidatedRequest {
    let warning = format!(
        "requested expiration of {asked} seconds replaced by {seconds} seconds: the emulator compresses token lifetimes (emulate --expiration-seconds, ctl lifetime)"
    );
    ValidatedRequest {
        warnings: vec![warning],
        ..validated.with_lifetime_override(seconds)
    }
}

/// Signs a prepared TokenRequest and builds the response; needs no objects.
pub fn sign_token(
    issuer: &Issuer,
    prepared: PreparedToken,
    now: Timestamp,
) -> Result<CreatedToken, ApiError> {
    let PreparedToken {
        body,
        spec,
        service_account,
        validated,
    } = prepared;
    let issued = issuer
        .mint(&service_account, &validated, now)
        .map_err(|e| ApiError::internal(e.to_string()))?;

    let mut response = body;
    response.metadata.name = Some(service_account.name);
    response.metadata.namespace = Some(service_account.namespace);
    response.metadata.uid = Some(service_account.uid);
    response.metadata.creation_timestamp = Some(Time(whole_seconds(now)));
    response.spec = Some(TokenRequestSpec {
        audiences: Some(validated.audiences.clone()),
        expiration_seconds: Some(validated.expiration_seconds),
        ..spec
    });
    response.status = Some(TokenRequestStatus {
        token: Some(issued.token.clone()),
        expiration_timestamp: Some(Time(whole_seconds(issued.expiration_timestamp))),
    });
    Ok(CreatedToken {
        response,
        warnings: validated.warnings,
        issued,
    })
}

/// Whole seconds, as the API serialises times.
/// `at` truncated to whole seconds, as upstream's `metav1.Time` serializes it.
pub(super) fn whole_seconds(at: Timestamp) -> Timestamp {
    Timestamp::from_second(at.as_second()).unwrap_or(at)
}

/// Looks up the object a token is to be bound to, with upstream's errors.
fn resolve_bound_object(
    objects: &mut ObjectStore,
    namespace: &str,
    service_account: &str,
    reference: &k8s_openapi::api::authentication::v1::BoundObjectReference,
    new_uid: &mut dyn FnMut() -> String,
) -> Result<BoundObject, ApiError> {
    let api_version = reference.api_version.as_deref().unwrap_or_default();
    let kind = reference.kind.as_deref().unwrap_or_default();
    let name = reference.name.as_deref().unwrap_or_default();
    let wanted_uid = reference.uid.as_deref().filter(|u| !u.is_empty());
    // The group is what comes before the last `/` of apiVersion; the version is ignored.
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    if !group.is_empty() || !matches!(kind, "Pod" | "Secret" | "Node") {
        return Err(ApiError::bad_request(format!(
            "cannot bind token to object of type {group}/{version}, Kind={kind}"
        )));
    }
    // As upstream's GET of the object: a name the storage cannot key is a bad request; an
    // invalid one is not found (and never created on first use).
    ApiError::check_name_parameter(name)?;
    // A new object created on first use takes the uid the reference names, so it matches.
    let mut uid_for_new = || wanted_uid.map(str::to_owned).unwrap_or_else(&mut *new_uid);
    let (bound_kind, uid, node) = match kind {
        "Pod" => {
            let pod = objects
                .ensure_pod(namespace, name, service_account, &mut uid_for_new)
                .cloned()
                .ok_or_else(|| ApiError::not_found("pods", name))?;
            if pod.service_account != service_account {
                return Err(ApiError::bad_request(format!(
                    "cannot bind token for serviceaccount {} to pod running with different serviceaccount name.",
                    go_quote(service_account)
                )));
            }
            // The pod's node goes into the claims; its uid only when the node object exists.
            let node = pod.node_name.as_deref().map(|node_name| {
                let uid = objects.node(node_name).map(|n| n.uid.clone());
                ObjectRef::new(node_name, uid.unwrap_or_default())
            });
            (BoundKind::Pod, pod.uid, node)
        }
        "Secret" => {
            let secret = objects
                .ensure_secret(namespace, name, &mut uid_for_new)
                .ok_or_else(|| ApiError::not_found("secrets", name))?;
            (BoundKind::Secret, secret.uid.clone(), None)
        }
        _ => {
            let node = objects
                .ensure_node(name, &mut uid_for_new)
                .ok_or_else(|| ApiError::not_found("nodes", name))?;
            (BoundKind::Node, node.uid.clone(), None)
        }
    };
    if let Some(wanted) = wanted_uid {
        if wanted != uid {
            return Err(ApiError::conflict(
                group,
                kind,
                name,
                &format!("the UID in the bound object reference ({wanted}) does not match the UID in record. The object might have been deleted and then recreated"),
            ));
        }
    }
    Ok(BoundObject {
        kind: bound_kind,
        name: name.to_owned(),
        uid,
        node,
    })
}

fn new_uid() -> String {
    uuid::Uuid::new_v4().to_string()
}

pub async fn token_request(
    State(state): State<Arc<ApiState>>,
    Path((namespace, name)): Path<(String, String)>,
    mut ctx: RequestContext,
    body: Body,
) -> Response {
    ctx.object_ref = Some(audit::ObjectReference {
        resource: "serviceaccounts".into(),
        namespace: namespace.clone(),
        name: name.clone(),
        api_version: "v1".into(),
        subresource: "token".into(),
        ..audit::ObjectReference::default()
    });
    let result = async {
        let caller = state.caller(&mut ctx)?;
        if caller.is_admin() {
            ApiState::allow(&mut ctx, admin_reason(&caller));
        } else if state.allow_any_token_request {
            ApiState::allow(&mut ctx, "--allow-any-token-request");
        } else {
            ApiState::forbid(&mut ctx);
            return Err(ApiError::forbidden_resource(
                &caller.username(),
                "create",
                "serviceaccounts",
                Some("token"),
                "",
                Some(&namespace),
                &name,
            ));
        }
        let body = read_body(body).await?;
        let request = protobuf::decode_token_request(ctx.content_type.as_deref(), &body)
            .map_err(body_error)?;
        // The issuer with the signing key of this moment (a rotation may replace it).
        let issuer = state.keys.issuer();
        // `emulate --expiration-seconds` / `ctl lifetime` govern these tokens too.
        let lifetime_override = state.projector.get().and_then(|p| p.lifetime());
        // The object store is locked for the checks only, not while signing.
        let prepared = prepare_token(
            &issuer,
            &mut lock(&state.objects),
            &namespace,
            &name,
            request,
            lifetime_override,
            &mut new_uid,
        )?;
        let created = sign_token(&issuer, prepared, ctx.received_at)?;
        if let Some(jti) = &created.issued.claims.jti {
            ctx.annotations.insert(
                audit::annotation::ISSUED_CREDENTIAL_ID.into(),
                audit::credential_id(jti),
            );
        }
        let mut response = json_response(StatusCode::CREATED, &created.response);
        add_warnings(&mut response, &created.warnings);
        Ok::<_, ApiError>(response)
    }
    .await;
    respond(&state, ctx, result)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, OnceLock};

    use k8s_openapi::api::authentication::v1::BoundObjectReference;

    use super::*;
    use crate::issuer::objects::StoredPod;
    use crate::issuer::{IssuerConfig, KeyAlgorithm, SigningKey, DEFAULT_ISSUER};
    use crate::token::decode;

    fn key() -> Arc<SigningKey> {
        static KEY: OnceLock<Arc<SigningKey>> = OnceLock::new();
        KEY.get_or_init(|| {
            Arc::new(SigningKey::generate(KeyAlgorithm::Es256).expect("EC key generation"))
        })
        .clone()
    }

    fn issuer(max: Option<i64>) -> Issuer {
        let mut config = IssuerConfig::new(DEFAULT_ISSUER);
        config.max_token_expiration = max;
        Issuer::new(config, key())
    }

    fn store() -> ObjectStore {
        let mut store = ObjectStore::new(false);
        store.put_service_account("ns", "app", "sa-uid".into());
        store.put_service_account("ns", "other", "other-uid".into());
        store.put_pod(
            "ns",
            "web",
            StoredPod {
                uid: "pod-uid".into(),
                service_account: "app".into(),
                node_name: Some("worker".into()),
            },
        );
        store.put_node("worker", "node-uid".into());
        store.put_secret("ns", "s", "secret-uid".into());
        store
    }

    fn request(
        seconds: Option<i64>,
        audiences: &[&str],
        bound: Option<(&str, &str, &str, Option<&str>)>,
    ) -> TokenRequest {
        TokenRequest {
            spec: Some(TokenRequestSpec {
                audiences: Some(audiences.iter().map(|a| a.to_string()).collect()),
                expiration_seconds: seconds,
                bound_object_ref: bound.map(|(api_version, kind, name, uid)| {
                    BoundObjectReference {
                        api_version: Some(api_version.into()),
                        kind: Some(kind.into()),
                        name: Some(name.into()),
                        uid: uid.map(str::to_owned),
                    }
                }),
                ..TokenRequestSpec::default()
            }),
            ..TokenRequest::default()
        }
    }

    fn now() -> Timestamp {
        Timestamp::from_second(1_800_000_000).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    fn create(issuer: &Issuer, sa: &str, body: TokenRequest) -> Result<CreatedToken, ApiError> {
        let mut counter = 0;
        let mut uid = move || {
            counter += 1;
            format!("new-{counter}")
        };
        create_token(issuer, &mut store(), "ns", sa, body, None, now(), &mut uid)
    }

    fn claims(created: &CreatedToken) -> serde_json::Value {
        let token = created
            .response
            .status
            .as_ref()
            .and_then(|s| s.token.clone())
            .unwrap_or_default();
        serde_json::Value::Object(decode(&token).map(|d| d.claims).unwrap_or_default())
    }

    /// The validation table: code and reason for each bad request, as upstream answers.
    #[test]
    fn rejections_have_upstreams_codes_and_messages() {
        let issuer = issuer(None);
        let pod = |uid| Some(("v1", "Pod", "web", uid));
        let cases: Vec<(&str, TokenRequest, u16, &str, &str)> = vec![
            ("too short", request(Some(599), &[], None), 422, "Invalid",
             "TokenRequest.authentication.k8s.io \"\" is invalid: spec.expirationSeconds: Invalid value: 599: may not specify a duration less than 10 minutes"),
            ("too long", request(Some((1 << 32) + 1), &[], None), 422, "Invalid",
             "TokenRequest.authentication.k8s.io \"\" is invalid: spec.expirationSeconds: Invalid value: 4294967297: may not specify a duration larger than 2^32 seconds"),
            ("unknown service account", request(None, &[], None), 404, "NotFound", "serviceaccounts \"ghost\" not found"),
            ("missing pod", request(None, &[], Some(("v1", "Pod", "gone", None))), 404, "NotFound", "pods \"gone\" not found"),
            ("missing secret", request(None, &[], Some(("v1", "Secret", "gone", None))), 404, "NotFound", "secrets \"gone\" not found"),
            ("missing node", request(None, &[], Some(("v1", "Node", "gone", None))), 404, "NotFound", "nodes \"gone\" not found"),
            ("wrong pod uid", request(None, &[], pod(Some("stale-uid"))), 409, "Conflict",
             "Operation cannot be fulfilled on Pod \"web\": the UID in the bound object reference (stale-uid) does not match the UID in record. The object might have been deleted and then recreated"),
            ("wrong kind", request(None, &[], Some(("v1", "ConfigMap", "c", None))), 400, "BadRequest",
             "cannot bind token to object of type /v1, Kind=ConfigMap"),
            ("wrong group", request(None, &[], Some(("apps/v1", "Deployment", "d", None))), 400, "BadRequest",
             "cannot bind token to object of type apps/v1, Kind=Deployment"),
        ];
        for (what, body, code, reason, message) in cases {
            let sa = if what == "unknown service account" {
                "ghost"
            } else {
                "app"
            };
            let err = create(&issuer, sa, body)
                .err()
                .unwrap_or_else(|| panic!("{what}: accepted"));
            assert_eq!(
                (err.code, err.reason, err.message.as_str()),
                (code, reason, message),
                "{what}"
            );
        }
        // A pod running as another service account.
        let err = create(&issuer, "other", request(None, &[], pod(None))).err();
        assert_eq!(
            err.map(|e| (e.code, e.message)),
            Some((400, "cannot bind token for serviceaccount \"other\" to pod running with different serviceaccount name.".into()))
        );
        // Body name that is not the URL's.
        let mut body = request(None, &[], None);
        body.metadata.name = Some("someone-else".into());
        let err = create(&issuer, "app", body).err();
        assert_eq!(
            err.map(|e| (e.code, e.message)),
            Some((422, "TokenRequest.authentication.k8s.io \"app\" is invalid: metadata.name: Invalid value: \"someone-else\": must match the service account name if specified".into()))
        );
    }

    /// Names kube-apiserver could never hold: upstream's answer for each, and nothing created
    /// even with auto-creation on.
    #[test]
    fn invalid_names_are_answered_as_upstream_and_never_created() {
        let issuer = issuer(None);
        let long = "x".repeat(300);
        let namespace_missing = |ns: &str| {
            (
                404,
                "NotFound",
                format!("namespaces {} not found", go_quote(ns)),
            )
        };
        let sa_missing = |sa: &str| {
            (
                404,
                "NotFound",
                format!("serviceaccounts {} not found", go_quote(sa)),
            )
        };
        // (namespace, service account, bound pod, expected (code, reason, message))
        type Case<'a> = (&'a str, &'a str, Option<&'a str>, (u16, &'a str, String));
        let cases: Vec<Case> = vec![
            // `a` + `b:c` and `a:b` + `c` would both be system:serviceaccount:a:b:c.
            ("a:b", "c", None, namespace_missing("a:b")),
            ("a", "b:c", None, sa_missing("b:c")),
            ("Team", "app", None, namespace_missing("Team")),
            ("a.b", "app", None, namespace_missing("a.b")),
            ("ns", "App", None, sa_missing("App")),
            ("ns", "ünïcode", None, sa_missing("ünïcode")),
            ("ns", "a\0b", None, sa_missing("a\0b")),
            ("ns", &long, None, sa_missing(&long)),
            (
                "ns",
                "..",
                None,
                (
                    400,
                    "BadRequest",
                    "Name parameter invalid: \"..\": may not be '..'".into(),
                ),
            ),
            (
                "ns",
                "a%b",
                None,
                (
                    400,
                    "BadRequest",
                    "Name parameter invalid: \"a%b\": may not contain '%'".into(),
                ),
            ),
            (
                "ns",
                "app",
                Some("Web:0"),
                (404, "NotFound", "pods \"Web:0\" not found".into()),
            ),
            (
                "ns",
                "app",
                Some("."),
                (
                    400,
                    "BadRequest",
                    "Name parameter invalid: \".\": may not be '.'".into(),
                ),
            ),
            (
                "ns",
                "app",
                Some(""),
                (400, "BadRequest", "Name parameter required.".into()),
            ),
        ];
        for (namespace, name, pod, (code, reason, message)) in cases {
            let mut objects = ObjectStore::new(true);
            let mut uid = || "fresh".to_owned();
            let body = request(None, &[], pod.map(|p| ("v1", "Pod", p, None)));
            let err = create_token(
                &issuer,
                &mut objects,
                namespace,
                name,
                body,
                None,
                now(),
                &mut uid,
            )
            .err()
            .unwrap_or_else(|| panic!("{namespace}/{name} {pod:?}: accepted"));
            assert_eq!(
                (err.code, err.reason, err.message.as_str()),
                (code, reason, message.as_str()),
                "{namespace}/{name} {pod:?}"
            );
            assert!(objects.service_account(namespace, name).is_none() || pod.is_some());
            if let Some(pod) = pod {
                assert!(objects.pod(namespace, pod).is_none(), "pod {pod:?} created");
            }
        }
    }

    #[test]
    fn default_request_gets_api_audiences_and_3600_seconds() {
        let created = create(&issuer(None), "app", request(None, &[], None)).expect("created");
        let spec = created.response.spec.clone().unwrap_or_default();
        assert_eq!(spec.audiences, Some(vec![DEFAULT_ISSUER.to_owned()]));
        assert_eq!(spec.expiration_seconds, Some(3600));
        let status = created.response.status.clone().unwrap_or_default();
        assert_eq!(
            status.expiration_timestamp.map(|t| t.0.as_second()),
            Some(now().as_second() + 3600)
        );
        assert_eq!(created.response.metadata.uid.as_deref(), Some("sa-uid"));
        let claims = claims(&created);
        assert_eq!(claims["exp"], now().as_second() + 3600);
        assert_eq!(claims["sub"], "system:serviceaccount:ns:app");
        assert!(claims["kubernetes.io"].get("pod").is_none());
    }

    #[test]
    fn pod_bound_3607_is_extended_and_carries_the_node() {
        let created = create(
            &issuer(None),
            "app",
            request(Some(3607), &[], Some(("v1", "Pod", "web", Some("pod-uid")))),
        )
        .expect("created");
        let claims = claims(&created);
        let iat = now().as_second();
        assert_eq!(claims["exp"], iat + 31_536_000);
        assert_eq!(claims["kubernetes.io"]["warnafter"], iat + 3607);
        assert_eq!(
            claims["kubernetes.io"]["pod"],
            serde_json::json!({"name": "web", "uid": "pod-uid"})
        );
        assert_eq!(
            claims["kubernetes.io"]["node"],
            serde_json::json!({"name": "worker", "uid": "node-uid"})
        );
        let status = created.response.status.clone().unwrap_or_default();
        assert_eq!(
            status.expiration_timestamp.map(|t| t.0.as_second()),
            Some(iat + 3607)
        );
    }

    #[test]
    fn extension_needs_pod_binding_and_api_audiences() {
        let iat = now().as_second();
        let unbound =
            create(&issuer(None), "app", request(Some(3607), &[], None)).expect("created");
        assert_eq!(claims(&unbound)["exp"], iat + 3607);
        let other_audience = create(
            &issuer(None),
            "app",
            request(Some(3607), &["vault"], Some(("v1", "Pod", "web", None))),
        )
        .expect("created");
        assert_eq!(claims(&other_audience)["exp"], iat + 3607);
        assert!(claims(&other_audience)["kubernetes.io"]
            .get("warnafter")
            .is_none());
        let secret = create(
            &issuer(None),
            "app",
            request(Some(3607), &[], Some(("v1", "Secret", "s", None))),
        )
        .expect("created");
        assert_eq!(claims(&secret)["exp"], iat + 3607);
        assert_eq!(
            claims(&secret)["kubernetes.io"]["secret"]["uid"],
            "secret-uid"
        );
    }

    #[test]
    fn max_expiration_clamps_with_a_warning_and_can_disable_the_extension() {
        let created =
            create(&issuer(Some(3600)), "app", request(Some(7200), &[], None)).expect("created");
        assert_eq!(
            created.warnings,
            vec!["requested expiration of 7200 seconds shortened to 3600 seconds".to_owned()]
        );
        assert_eq!(
            created.response.spec.and_then(|s| s.expiration_seconds),
            Some(3600)
        );
        let clamped = create(
            &issuer(Some(3600)),
            "app",
            request(Some(3607), &[], Some(("v1", "Pod", "web", None))),
        )
        .expect("created");
        assert_eq!(claims(&clamped)["exp"], now().as_second() + 3600);
    }

    /// The emulator's time compression: any lifetime asked (even below 600 s) becomes the
    /// override, with a warning; the extension is still decided on what was asked.
    #[test]
    fn lifetime_override_replaces_every_lifetime() {
        // A maximum of 3600 s: its clamp (7200) gives way to the compression too.
        let compressed_under = |max, seconds: Option<i64>, bound| {
            let mut uid = || "fresh".to_owned();
            create_token(
                &issuer(max),
                &mut store(),
                "ns",
                "app",
                request(seconds, &[], bound),
                Some(10),
                now(),
                &mut uid,
            )
        };
        let compressed = |seconds, bound| compressed_under(None, seconds, bound);
        let iat = now().as_second();
        for asked in [None, Some(60), Some(600), Some(7200)] {
            let created = compressed_under(Some(3600), asked, None).expect("created");
            let spec = created.response.spec.clone().unwrap_or_default();
            assert_eq!(spec.expiration_seconds, Some(10), "{asked:?}");
            let status = created.response.status.clone().unwrap_or_default();
            assert_eq!(
                status.expiration_timestamp.map(|t| t.0.as_second()),
                Some(iat + 10)
            );
            assert_eq!(claims(&created)["exp"], iat + 10, "{asked:?}");
            assert_eq!(created.warnings.len(), 1, "{asked:?}");
            assert!(
                created.warnings[0].starts_with(&format!(
                    "requested expiration of {} seconds replaced by 10 seconds",
                    asked.unwrap_or(3600)
                )),
                "{:?}",
                created.warnings
            );
        }
        let extended = compressed(Some(3607), Some(("v1", "Pod", "web", None))).expect("created");
        assert_eq!(claims(&extended)["exp"], iat + 31_536_000);
        assert_eq!(claims(&extended)["kubernetes.io"]["warnafter"], iat + 10);
        // Upstream's other checks still hold.
        let too_long = compressed(Some((1 << 32) + 1), None).err();
        assert_eq!(too_long.map(|e| e.code), Some(422));
        let no_pod = compressed(None, Some(("v1", "Pod", "gone", None))).err();
        assert_eq!(no_pod.map(|e| e.code), Some(404));
    }

    #[test]
    fn auto_create_makes_the_service_account_and_bound_pod_with_the_given_uid() {
        let mut objects = ObjectStore::new(true);
        let mut uid = || "fresh".to_owned();
        let created = create_token(
            &issuer(None),
            &mut objects,
            "ns",
            "new-sa",
            request(None, &[], Some(("v1", "Pod", "p", Some("given")))),
            None,
            now(),
            &mut uid,
        )
        .expect("created");
        assert_eq!(
            objects
                .service_account("ns", "new-sa")
                .map(|s| s.uid.as_str()),
            Some("fresh")
        );
        assert_eq!(
            objects.pod("ns", "p").map(|p| p.uid.as_str()),
            Some("given")
        );
        assert_eq!(claims(&created)["kubernetes.io"]["pod"]["uid"], "given");
    }
}
