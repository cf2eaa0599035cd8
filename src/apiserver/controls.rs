//! Chaos and test controls of the emulator, for the admin only, under [`PREFIX`]: rotate tokens
//! now, rotate the signing key (with or without a grace period), simulate an outage, change token
//! lifetimes. (Revoking is `DELETE /api/v1/namespaces/{ns}/pods/{name}`, as upstream.) Every
//! control is written to the audit log with a `CONTROL` (`audit::annotation`) annotation saying what it did.
//!
//! Bodies are JSON in and out; errors are `metav1.Status`, as the rest of the API. The projector
//! (`emulate`'s refresher) is reached through the [`Projector`](super::projector::Projector) trait, so this module does not
//! depend on it; `serve` has none and answers the token controls 404.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use jiff::{SignedDuration, Timestamp};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::audit::annotation::{CONTROL, CONTROL_DETAILS};
use super::body::read_body;
use super::outage::{Outage, OutageMode, MAX_OUTAGE_SECONDS};
use super::projector::{ProjectedPod, ProjectedVolumeRef};
use super::request::{admin_reason, json_response, respond, ApiState, RequestContext};
use super::status::ApiError;
use crate::issuer::keyring::KeyRingStatus;
use crate::issuer::{KeyAlgorithm, SigningKey, MAX_EXPIRATION_SECONDS};

/// Every control lives under this path; an outage never blocks it.
pub const PREFIX: &str = "/projected-token/v1/";
pub const API_VERSION: &str = "projected-token/v1";
pub const STATUS_PATH: &str = "/projected-token/v1/status";
pub const ROTATE_TOKENS_PATH: &str = "/projected-token/v1/tokens/rotate";
pub const ROTATE_KEY_PATH: &str = "/projected-token/v1/signingkey/rotate";
pub const OUTAGE_PATH: &str = "/projected-token/v1/outage";
pub const LIFETIME_PATH: &str = "/projected-token/v1/lifetime";

/// The old signing key's grace period when a rotation names none.
pub const DEFAULT_GRACE_SECONDS: i64 = 3600;

/// `POST tokens/rotate`. Both empty: every token of every pod.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RotateTokensRequest {
    #[serde(default)]
    pub api_version: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub pod: Option<String>,
}

/// `POST signingkey/rotate`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RotateKeyRequest {
    #[serde(default)]
    pub api_version: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    /// How long the old key stays in the JWKS (and accepted); 0 drops it at once. Default 3600.
    #[serde(default)]
    pub grace_period_seconds: Option<i64>,
    /// `RS256` or `ES256`; default: the current key's.
    #[serde(default)]
    pub algorithm: Option<String>,
    /// Also replace every projected token now, so they are signed with the new key.
    #[serde(default)]
    pub rotate_tokens: bool,
}

/// `POST outage`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutageRequest {
    #[serde(default)]
    pub api_version: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    pub mode: OutageMode,
    pub duration_seconds: i64,
}

/// `PUT lifetime`. `null`: each volume's own lifetime again.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LifetimeRequest {
    #[serde(default)]
    pub api_version: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    pub expiration_seconds: Option<i64>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ControlStatus {
    api_version: &'static str,
    kind: &'static str,
    now: Timestamp,
    signing_keys: KeyRingStatus,
    outage: Option<OutageView>,
    /// `None` without a projector (`serve`).
    #[serde(skip_serializing_if = "Option::is_none")]
    projector: Option<ProjectorView>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ProjectorView {
    expiration_seconds: Option<i64>,
    pods: Vec<ProjectedPod>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct OutageView {
    #[serde(flatten)]
    outage: Outage,
    retry_after_seconds: i64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct TokenRotation {
    api_version: &'static str,
    kind: &'static str,
    volumes: Vec<ProjectedVolumeRef>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct SigningKeyRotation {
    api_version: &'static str,
    kind: &'static str,
    old_kid: String,
    new_kid: String,
    algorithm: String,
    grace_period_seconds: i64,
    old_key_published_until: Timestamp,
    /// Projected volumes whose tokens are being replaced (with `rotateTokens`).
    volumes: Vec<ProjectedVolumeRef>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct OutageAnswer {
    api_version: &'static str,
    kind: &'static str,
    #[serde(flatten)]
    outage: Outage,
    duration_seconds: i64,
    /// Set when the outage was ended early.
    #[serde(skip_serializing_if = "Option::is_none")]
    ended_at: Option<Timestamp>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct LifetimeAnswer {
    api_version: &'static str,
    kind: &'static str,
    expiration_seconds: Option<i64>,
    previous_expiration_seconds: Option<i64>,
    volumes: Vec<ProjectedVolumeRef>,
}

/// The admin check every control starts with: 401 without credentials, 403 for anyone else.
fn authorize(state: &ApiState, ctx: &mut RequestContext, control: &str) -> Result<(), ApiError> {
    ctx.annotations.insert(CONTROL.into(), control.into());
    let caller = state.caller(ctx)?;
    if !caller.is_admin() {
        ApiState::forbid(ctx);
        return Err(ApiError::forbidden_path(
            &caller.username(),
            &ctx.method.as_str().to_ascii_lowercase(),
            ctx.path(),
        ));
    }
    ApiState::allow(ctx, admin_reason(&caller));
    Ok(())
}

/// A JSON body, or the type's default when the body is empty.
fn body<T: DeserializeOwned + Default>(ctx: &RequestContext, bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    required_body(ctx, bytes)
}

fn required_body<T: DeserializeOwned>(ctx: &RequestContext, bytes: &[u8]) -> Result<T, ApiError> {
    let media_type = ctx.content_type.as_deref().map(|c| {
        c.split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    });
    if let Some(media_type) = media_type.filter(|m| m != "application/json") {
        return Err(ApiError::unsupported_media_type(&media_type));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::bad_request(format!(
            "the request body is not valid for {}: {e}",
            ctx.path()
        ))
    })
}

fn no_projector() -> ApiError {
    ApiError {
        code: 404,
        reason: "NotFound",
        message: "this server projects no volumes (serve): rotating tokens and changing lifetimes are controls of emulate".into(),
        details: None,
    }
}

/// Names listed in an audit annotation, log line, error or `ctl` line before "and N more": with 10,000
/// pods, rotating everything must not write a megabyte per line.
const LISTED_NAMES: usize = 10;

/// `names` joined, the first `LISTED_NAMES` of them, or `empty` for none.
pub fn list_names(names: impl ExactSizeIterator<Item = String>, empty: &str) -> String {
    let total = names.len();
    let shown: Vec<String> = names.take(LISTED_NAMES).collect();
    match total {
        0 => empty.to_owned(),
        n if n <= LISTED_NAMES => shown.join(", "),
        n => format!("{} and {} more", shown.join(", "), n - LISTED_NAMES),
    }
}

fn describe_volumes(volumes: &[ProjectedVolumeRef]) -> String {
    list_names(
        volumes
            .iter()
            .map(|v| format!("{}/{} volume {}", v.namespace, v.pod, v.volume)),
        "no volumes",
    )
}

/// `GET /projected-token/v1/status`: keys, outage, lifetime and projected pods.
pub async fn status(State(state): State<Arc<ApiState>>, mut ctx: RequestContext) -> Response {
    let result = authorize(&state, &mut ctx, "status").map(|()| {
        ctx.annotations.remove(CONTROL);
        let now = state.clock.now();
        let projector = state.projector.get().map(|p| ProjectorView {
            expiration_seconds: p.lifetime(),
            pods: p.pods(),
        });
        json_response(
            StatusCode::OK,
            &ControlStatus {
                api_version: API_VERSION,
                kind: "ControlStatus",
                now,
                signing_keys: state.keys.status(now),
                outage: state.outage.current(now).map(|outage| OutageView {
                    retry_after_seconds: outage.retry_after_seconds(now),
                    outage,
                }),
                projector,
            },
        )
    });
    respond(&state, ctx, result)
}

/// `POST /projected-token/v1/tokens/rotate`: replace one pod's tokens (or all) now, as if their
/// refresh were due. Answers 202: the projector writes them right after.
pub async fn rotate_tokens(
    State(state): State<Arc<ApiState>>,
    mut ctx: RequestContext,
    bytes: Body,
) -> Response {
    let result = async {
        authorize(&state, &mut ctx, "rotate-tokens")?;
        let bytes = read_body(bytes).await?;
        let request: RotateTokensRequest = body(&ctx, &bytes)?;
        let projector = state.projector.get().ok_or_else(no_projector)?;
        let target = match (&request.namespace, &request.pod) {
            (_, None) => None,
            (namespace, Some(pod)) => {
                Some((namespace.as_deref().unwrap_or("default"), pod.as_str()))
            }
        };
        if let (Some(namespace), None) = (&request.namespace, &request.pod) {
            return Err(ApiError::bad_request(format!(
                "namespace {namespace:?} without pod: name the pod too, or neither to rotate every token"
            )));
        }
        let volumes = projector.rotate(target).ok_or_else(|| {
            let (namespace, pod) = target.unwrap_or_default();
            ApiError {
                message: format!(
                    "pods \"{pod}\" not found in namespace \"{namespace}\": the emulator projects {}",
                    describe_pods(&projector.pods())
                ),
                ..ApiError::not_found("pods", pod)
            }
        })?;
        let details = format!("rotate now: {}", describe_volumes(&volumes));
        ctx.annotations
            .insert(CONTROL_DETAILS.into(), details.clone());
        tracing::info!(control = "rotate-tokens", "{details}");
        Ok::<_, ApiError>(json_response(
            StatusCode::ACCEPTED,
            &TokenRotation {
                api_version: API_VERSION,
                kind: "TokenRotation",
                volumes,
            },
        ))
    }
    .await;
    respond(&state, ctx, result)
}

fn describe_pods(pods: &[ProjectedPod]) -> String {
    list_names(
        pods.iter().map(|p| format!("{}/{}", p.namespace, p.name)),
        "no pods",
    )
}

/// `POST /projected-token/v1/signingkey/rotate`: a new signing key (new `kid`) for every token
/// minted from now on; the old key stays in the JWKS, and accepted, for the grace period.
pub async fn rotate_signing_key(
    State(state): State<Arc<ApiState>>,
    mut ctx: RequestContext,
    bytes: Body,
) -> Response {
    let prepared = async {
        authorize(&state, &mut ctx, "rotate-signing-key")?;
        let bytes = read_body(bytes).await?;
        let request: RotateKeyRequest = body(&ctx, &bytes)?;
        let grace = request
            .grace_period_seconds
            .unwrap_or(DEFAULT_GRACE_SECONDS);
        if !(0..=MAX_EXPIRATION_SECONDS).contains(&grace) {
            return Err(invalid_field(
                "SigningKeyRotation",
                "gracePeriodSeconds",
                &grace.to_string(),
                &format!("must be between 0 and {MAX_EXPIRATION_SECONDS}"),
            ));
        }
        let algorithm = match request.algorithm.as_deref().map(str::to_ascii_uppercase) {
            None => state.keys.issuer().key.algorithm(),
            Some(a) if a == "RS256" => KeyAlgorithm::Rs256,
            Some(a) if a == "ES256" => KeyAlgorithm::Es256,
            Some(other) => {
                return Err(invalid_field(
                    "SigningKeyRotation",
                    "algorithm",
                    &other,
                    "supported values: \"RS256\", \"ES256\"",
                ))
            }
        };
        Ok::<_, ApiError>((grace, algorithm, request.rotate_tokens))
    }
    .await;
    let result = match prepared {
        Err(err) => Err(err),
        Ok((grace, algorithm, rotate_tokens)) => {
            // RSA key generation takes 60-200 ms: not on a request thread.
            match tokio::task::spawn_blocking(move || SigningKey::generate(algorithm)).await {
                Ok(Ok(key)) => Ok(finish_key_rotation(
                    &state,
                    &mut ctx,
                    key,
                    grace,
                    rotate_tokens,
                )),
                Ok(Err(e)) => Err(ApiError::internal(e.to_string())),
                Err(e) => Err(ApiError::internal(format!("key generation task: {e}"))),
            }
        }
    };
    respond(&state, ctx, result)
}

fn finish_key_rotation(
    state: &ApiState,
    ctx: &mut RequestContext,
    key: SigningKey,
    grace: i64,
    rotate_tokens: bool,
) -> Response {
    let now = state.clock.now();
    let rotation = state
        .keys
        .rotate(key, SignedDuration::from_secs(grace), now);
    let volumes = match (rotate_tokens, state.projector.get()) {
        (true, Some(projector)) => projector.rotate(None).unwrap_or_default(),
        _ => Vec::new(),
    };
    let details = format!(
        "old kid {}, new kid {} ({}), old key {}{}",
        rotation.old_kid,
        rotation.new_kid,
        rotation.algorithm,
        if grace == 0 {
            "dropped at once".to_owned()
        } else {
            format!(
                "published until {} ({grace} s grace)",
                rotation.old_published_until
            )
        },
        if volumes.is_empty() {
            String::new()
        } else {
            format!("; rotate now: {}", describe_volumes(&volumes))
        }
    );
    ctx.annotations
        .insert(CONTROL_DETAILS.into(), details.clone());
    tracing::info!(control = "rotate-signing-key", "{details}");
    json_response(
        StatusCode::CREATED,
        &SigningKeyRotation {
            api_version: API_VERSION,
            kind: "SigningKeyRotation",
            old_kid: rotation.old_kid,
            new_kid: rotation.new_kid,
            algorithm: rotation.algorithm,
            grace_period_seconds: grace,
            old_key_published_until: rotation.old_published_until,
            volumes,
        },
    )
}

fn invalid_field(kind: &str, field: &str, value: &str, message: &str) -> ApiError {
    ApiError::invalid("", kind, "", field, value, message)
}

/// `POST /projected-token/v1/outage` starts one (replacing any); `DELETE` ends it early.
pub async fn start_outage(
    State(state): State<Arc<ApiState>>,
    mut ctx: RequestContext,
    bytes: Body,
) -> Response {
    let result = async {
        authorize(&state, &mut ctx, "outage")?;
        let bytes = read_body(bytes).await?;
        let request: OutageRequest = required_body(&ctx, &bytes)?;
        if !(1..=MAX_OUTAGE_SECONDS).contains(&request.duration_seconds) {
            return Err(invalid_field(
                "Outage",
                "durationSeconds",
                &request.duration_seconds.to_string(),
                &format!("must be between 1 and {MAX_OUTAGE_SECONDS}"),
            ));
        }
        let now = state.clock.now();
        let outage = Outage::new(request.mode, request.duration_seconds, now);
        let details = format!(
            "{} for {} s, until {}",
            outage.mode.as_str(),
            request.duration_seconds,
            outage.ends_at
        );
        ctx.annotations
            .insert(CONTROL_DETAILS.into(), details.clone());
        tracing::warn!(control = "outage", "simulated outage: {details}");
        // Started last: with RefuseConnections the listeners close once this answer is out.
        let response = json_response(
            StatusCode::CREATED,
            &OutageAnswer {
                api_version: API_VERSION,
                kind: "Outage",
                outage,
                duration_seconds: request.duration_seconds,
                ended_at: None,
            },
        );
        state.outage.start(outage);
        Ok::<_, ApiError>(response)
    }
    .await;
    respond(&state, ctx, result)
}

pub async fn end_outage(State(state): State<Arc<ApiState>>, mut ctx: RequestContext) -> Response {
    let result = (|| {
        authorize(&state, &mut ctx, "end-outage")?;
        let now = state.clock.now();
        let outage = state.outage.end(now).ok_or_else(|| ApiError {
            message: "no outage in progress".into(),
            ..ApiError::not_found("outage", "")
        })?;
        let details = format!("{} ended early", outage.mode.as_str());
        ctx.annotations
            .insert(CONTROL_DETAILS.into(), details.clone());
        tracing::info!(control = "end-outage", "{details}");
        Ok(json_response(
            StatusCode::OK,
            &OutageAnswer {
                api_version: API_VERSION,
                kind: "Outage",
                duration_seconds: outage.ends_at.duration_since(outage.started_at).as_secs(),
                outage,
                ended_at: Some(now),
            },
        ))
    })();
    respond(&state, ctx, result)
}

/// `PUT /projected-token/v1/lifetime`: every token minted from now on lives this long (as
/// `--expiration-seconds`); the projected tokens are replaced at once so the change shows.
pub async fn set_lifetime(
    State(state): State<Arc<ApiState>>,
    mut ctx: RequestContext,
    bytes: Body,
) -> Response {
    let result = async {
        authorize(&state, &mut ctx, "lifetime")?;
        let bytes = read_body(bytes).await?;
        let request: LifetimeRequest = required_body(&ctx, &bytes)?;
        if let Some(seconds) = request
            .expiration_seconds
            .filter(|s| !(1..=MAX_EXPIRATION_SECONDS).contains(s))
        {
            return Err(invalid_field(
                "Lifetime",
                "expirationSeconds",
                &seconds.to_string(),
                &format!(
                    "must be between 1 and {MAX_EXPIRATION_SECONDS}, or null for each volume's own"
                ),
            ));
        }
        let projector = state.projector.get().ok_or_else(no_projector)?;
        let previous = projector.lifetime();
        projector.set_lifetime(request.expiration_seconds);
        let volumes = projector.rotate(None).unwrap_or_default();
        let show = |s: Option<i64>| s.map_or("each volume's own".to_owned(), |s| format!("{s} s"));
        let details = format!(
            "token lifetime {} (was {}); rotate now: {}",
            show(request.expiration_seconds),
            show(previous),
            describe_volumes(&volumes)
        );
        ctx.annotations
            .insert(CONTROL_DETAILS.into(), details.clone());
        tracing::info!(control = "lifetime", "{details}");
        Ok::<_, ApiError>(json_response(
            StatusCode::OK,
            &LifetimeAnswer {
                api_version: API_VERSION,
                kind: "Lifetime",
                expiration_seconds: request.expiration_seconds,
                previous_expiration_seconds: previous,
                volumes,
            },
        ))
    }
    .await;
    respond(&state, ctx, result)
}

/// The answer to a request refused by an outage: 503 with `Retry-After` and a `Status` body.
pub fn unavailable_response(outage: &Outage, now: Timestamp) -> Response {
    let retry_after = outage.retry_after_seconds(now);
    let err = ApiError::unavailable(format!(
        "the server is currently unable to handle the request (simulated outage until {})",
        outage.ends_at
    ));
    let mut response = json_response(StatusCode::SERVICE_UNAVAILABLE, &err.to_status());
    if let Ok(value) = axum::http::HeaderValue::from_str(&retry_after.to_string()) {
        response
            .headers_mut()
            .insert(axum::http::header::RETRY_AFTER, value);
    }
    response
}

/// Whether a request is a control (never blocked by an outage).
pub fn is_control(path: &str) -> bool {
    path.starts_with(PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lists_are_cut_with_a_count() {
        let names = |n: usize| (0..n).map(|i| format!("p{i}")).collect::<Vec<_>>();
        assert_eq!(list_names(names(0).into_iter(), "no pods"), "no pods");
        assert_eq!(list_names(names(2).into_iter(), "-"), "p0, p1");
        assert_eq!(
            list_names(names(10).into_iter(), "-").matches(", ").count(),
            9
        );
        let cut = list_names(names(10_000).into_iter(), "-");
        assert!(cut.starts_with("p0, p1, "), "{cut}");
        assert!(cut.ends_with("p9 and 9990 more"), "{cut}");
    }
}
