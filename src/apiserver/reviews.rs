//! `TokenReview` (any authenticated caller may review a token; the review is a use of the reviewed
//! token, accounted like any other) and `SelfSubjectReview` (the caller as the server sees it).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use k8s_openapi::api::authentication::v1::{
    SelfSubjectReview, SelfSubjectReviewStatus, TokenReviewStatus, UserInfo,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::audit;
use super::authn::Caller;
use super::body::read_body;
use super::protobuf;
use super::request::{body_error, json_response, respond, ApiState, RequestContext};
use super::status::ApiError;
use super::token_request::whole_seconds;

pub async fn token_review(
    State(state): State<Arc<ApiState>>,
    mut ctx: RequestContext,
    body: Body,
) -> Response {
    ctx.object_ref = Some(audit::ObjectReference {
        resource: "tokenreviews".into(),
        api_group: "authentication.k8s.io".into(),
        api_version: "v1".into(),
        ..audit::ObjectReference::default()
    });
    let result = async {
        state.caller(&mut ctx)?;
        ApiState::allow(&mut ctx, "authenticated callers may review tokens");
        let body = read_body(body).await?;
        let mut review = protobuf::decode_token_review(ctx.content_type.as_deref(), &body)
            .map_err(body_error)?;
        if let Some(namespace) = review
            .metadata
            .namespace
            .as_deref()
            .filter(|n| !n.is_empty())
        {
            return Err(ApiError::bad_request(format!(
                "namespace is not allowed on this type: {namespace}"
            )));
        }
        let spec = review.spec.clone();
        let token = spec.token.as_str();
        if token.is_empty() {
            return Err(ApiError::bad_request(
                "token is required for TokenReview in authentication",
            ));
        }
        let audiences = spec.audiences.clone().unwrap_or_default();
        // The reviewed token is a use of that token: the accounting is the whole point.
        let status = match state.authenticate_and_record(token, &audiences, &mut ctx) {
            Ok(Caller::ServiceAccount(sa)) => TokenReviewStatus {
                authenticated: Some(true),
                user: Some(sa.user.clone()),
                audiences: Some(sa.audiences.clone()),
                error: None,
            },
            // The admin token is not a service account token; upstream's token file
            // authenticator would accept it, and so do we. (A token never yields a certificate
            // user; the arm only keeps the match whole.)
            Ok(caller @ (Caller::Admin | Caller::User(_))) => TokenReviewStatus {
                authenticated: Some(true),
                user: Some(caller.user_info()),
                audiences: Some(state.authenticator.api_audiences.clone()),
                error: None,
            },
            Err(failure) => TokenReviewStatus {
                authenticated: Some(false),
                user: Some(UserInfo::default()),
                audiences: None,
                error: Some(failure.review_error()),
            },
        };
        review.metadata.creation_timestamp = Some(Time(whole_seconds(ctx.received_at)));
        review.status = Some(status);
        Ok::<_, ApiError>(json_response(StatusCode::CREATED, &review))
    }
    .await;
    respond(&state, ctx, result)
}

pub async fn self_subject_review(
    State(state): State<Arc<ApiState>>,
    mut ctx: RequestContext,
    body: Body,
) -> Response {
    ctx.object_ref = Some(audit::ObjectReference {
        resource: "selfsubjectreviews".into(),
        api_group: "authentication.k8s.io".into(),
        api_version: "v1".into(),
        ..audit::ObjectReference::default()
    });
    let result = async {
        let caller = state.caller(&mut ctx)?;
        ApiState::allow(&mut ctx, "every authenticated user may review itself");
        let body = read_body(body).await?;
        let mut review: SelfSubjectReview =
            protobuf::decode_self_subject_review(ctx.content_type.as_deref(), &body)
                .map_err(body_error)?;
        review.metadata.creation_timestamp = Some(Time(whole_seconds(ctx.received_at)));
        review.status = Some(SelfSubjectReviewStatus {
            user_info: Some(caller.user_info()),
        });
        Ok::<_, ApiError>(json_response(StatusCode::CREATED, &review))
    }
    .await;
    respond(&state, ctx, result)
}
