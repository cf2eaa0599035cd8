//! Request-body decoding for the emulated authentication endpoints, accepting what kube-apiserver
//! accepts from kubectl: JSON, and Kubernetes protobuf (`application/vnd.kubernetes.protobuf`).
//!
//! kubectl 1.37 POSTs TokenRequest (`kubectl create token`) and SelfSubjectReview
//! (`kubectl auth whoami`) as protobuf with `Accept: application/vnd.kubernetes.protobuf,application/json`
//! and gives up on a 415, so the server has to read protobuf but may always answer JSON.
//!
//! A protobuf body is the magic `k8s\0` followed by a `runtime.Unknown` envelope whose `raw`
//! holds the object. The object is decoded with the `k8s-pb` types and converted to the
//! `k8s-openapi` types the rest of the server uses. The conversion keeps what a create request
//! can meaningfully carry (metadata name/namespace/uid and the spec); `status` is dropped because
//! the server computes it.

use k8s_openapi::api::authentication::v1::{
    BoundObjectReference, SelfSubjectReview, TokenRequest, TokenRequestSpec, TokenReview,
    TokenReviewSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_pb::api::authentication::v1 as pb;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as pb_meta;
use k8s_pb::apimachinery::pkg::runtime::Unknown;
use prost::Message;
use serde::de::DeserializeOwned;

/// Media type of Kubernetes protobuf bodies.
pub const PROTOBUF_MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";
/// Media type of JSON bodies (also assumed when there is no Content-Type).
pub const JSON_MEDIA_TYPE: &str = "application/json";

/// Prefix of every Kubernetes protobuf body; it tells protobuf apart from JSON/YAML/CBOR.
const MAGIC: &[u8] = b"k8s\0";
/// The only group/version these endpoints serve.
const GROUP_VERSION: &str = "authentication.k8s.io/v1";

/// What a request body is encoded as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    Json,
    Protobuf,
}

/// Why a request body cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// 415: the media type we cannot read (e.g. "application/yaml").
    #[error("unsupported media type {0:?}: accepted media types are application/json and application/vnd.kubernetes.protobuf")]
    UnsupportedMediaType(String),
    /// 400: the body does not decode; the message says what is wrong (not protobuf, wrong kind, bad JSON with serde's message...).
    #[error("{0}")]
    Malformed(String),
}

/// The format of a body sent with this `Content-Type` header value.
///
/// No header (or an empty one) means JSON: `kubectl create --raw` sends none. Parameters such as
/// `; charset=utf-8` are ignored, and media types compare case-insensitively (RFC 9110).
pub fn body_format(content_type: Option<&str>) -> Result<BodyFormat, BodyError> {
    let Some(value) = content_type else {
        return Ok(BodyFormat::Json);
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    if essence.is_empty() {
        return Ok(BodyFormat::Json);
    }
    if essence.eq_ignore_ascii_case(JSON_MEDIA_TYPE) {
        Ok(BodyFormat::Json)
    } else if essence.eq_ignore_ascii_case(PROTOBUF_MEDIA_TYPE) {
        Ok(BodyFormat::Protobuf)
    } else {
        Err(BodyError::UnsupportedMediaType(essence.to_owned()))
    }
}

/// Decodes the body of `POST .../serviceaccounts/{name}/token`.
///
/// An empty body is a TokenRequest with no spec, so the server's defaults apply.
pub fn decode_token_request(
    content_type: Option<&str>,
    body: &[u8],
) -> Result<TokenRequest, BodyError> {
    decode(
        content_type,
        body,
        "TokenRequest",
        true,
        |m: pb::TokenRequest| TokenRequest {
            metadata: object_meta(m.metadata),
            spec: m.spec.map(token_request_spec),
            status: None,
        },
    )
}

/// Decodes the body of `POST /apis/authentication.k8s.io/v1/tokenreviews`.
///
/// An empty body is rejected: a review without a token has nothing to review.
pub fn decode_token_review(
    content_type: Option<&str>,
    body: &[u8],
) -> Result<TokenReview, BodyError> {
    decode(
        content_type,
        body,
        "TokenReview",
        false,
        |m: pb::TokenReview| {
            let spec = m.spec.unwrap_or_default();
            TokenReview {
                metadata: object_meta(m.metadata),
                spec: TokenReviewSpec {
                    token: spec.token.unwrap_or_default(),
                    audiences: non_empty_list(spec.audiences),
                },
                status: None,
            }
        },
    )
}

/// Decodes the body of `POST /apis/authentication.k8s.io/v1/selfsubjectreviews`.
///
/// An empty body is the default (empty) review: the request carries no input besides metadata.
pub fn decode_self_subject_review(
    content_type: Option<&str>,
    body: &[u8],
) -> Result<SelfSubjectReview, BodyError> {
    decode(
        content_type,
        body,
        "SelfSubjectReview",
        true,
        |m: pb::SelfSubjectReview| SelfSubjectReview {
            metadata: object_meta(m.metadata),
            status: None,
        },
    )
}

/// Shared decoding: format check, empty-body rule, then JSON via serde or protobuf via k8s-pb.
fn decode<T, P>(
    content_type: Option<&str>,
    body: &[u8],
    kind: &str,
    empty_is_default: bool,
    convert: impl FnOnce(P) -> T,
) -> Result<T, BodyError>
where
    T: DeserializeOwned + Default,
    P: Message + Default,
{
    let format = body_format(content_type)?;
    if body.is_empty() {
        return if empty_is_default {
            Ok(T::default())
        } else {
            Err(BodyError::Malformed(format!(
                "the request body is empty; expected a {kind}"
            )))
        };
    }
    match format {
        BodyFormat::Json => serde_json::from_slice(body)
            .map_err(|e| BodyError::Malformed(format!("cannot decode the {kind} JSON body: {e}"))),
        BodyFormat::Protobuf => {
            let raw = open_envelope(body, kind)?;
            let message = P::decode(raw.as_slice()).map_err(|e| {
                BodyError::Malformed(format!("cannot decode the {kind} protobuf object: {e}"))
            })?;
            Ok(convert(message))
        }
    }
}

/// Checks the magic and the envelope's type, and returns the protobuf bytes of the object.
fn open_envelope(body: &[u8], kind: &str) -> Result<Vec<u8>, BodyError> {
    let Some(rest) = body.strip_prefix(MAGIC) else {
        return Err(BodyError::Malformed(
            "the body is not Kubernetes protobuf: it does not start with the \"k8s\\0\" prefix"
                .to_owned(),
        ));
    };
    let envelope = Unknown::decode(rest)
        .map_err(|e| BodyError::Malformed(format!("cannot decode the protobuf envelope: {e}")))?;
    let type_meta = envelope.type_meta.unwrap_or_default();
    // Empty type fields are tolerated, as the JSON deserialisers tolerate missing ones; wrong
    // ones are not, so a TokenReview posted to the TokenRequest endpoint is refused.
    let got_kind = type_meta.kind.unwrap_or_default();
    if !got_kind.is_empty() && got_kind != kind {
        return Err(BodyError::Malformed(format!(
            "the protobuf envelope holds kind {got_kind:?}, expected {kind:?}"
        )));
    }
    let got_version = type_meta.api_version.unwrap_or_default();
    if !got_version.is_empty() && got_version != GROUP_VERSION {
        return Err(BodyError::Malformed(format!(
            "the protobuf envelope holds apiVersion {got_version:?}, expected {GROUP_VERSION:?}"
        )));
    }
    // An encoded (e.g. compressed) raw would be misread as the object itself.
    let encoding = envelope.content_encoding.unwrap_or_default();
    if !encoding.is_empty() {
        return Err(BodyError::Malformed(format!(
            "unsupported content encoding {encoding:?} in the protobuf envelope"
        )));
    }
    Ok(envelope.raw.unwrap_or_default())
}

// Go's protobuf encoder writes every non-pointer string, so absent fields arrive as "" (and
// lists as empty); JSON from Go omits them. Mapping "" and [] to None makes both decode alike.

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|s| !s.is_empty())
}

fn non_empty_list(values: Vec<String>) -> Option<Vec<String>> {
    (!values.is_empty()).then_some(values)
}

fn object_meta(meta: Option<pb_meta::ObjectMeta>) -> ObjectMeta {
    let meta = meta.unwrap_or_default();
    ObjectMeta {
        name: non_empty(meta.name),
        namespace: non_empty(meta.namespace),
        uid: non_empty(meta.uid),
        ..ObjectMeta::default()
    }
}

fn token_request_spec(spec: pb::TokenRequestSpec) -> TokenRequestSpec {
    TokenRequestSpec {
        audiences: non_empty_list(spec.audiences),
        expiration_seconds: spec.expiration_seconds,
        bound_object_ref: spec.bound_object_ref.map(bound_object_ref),
        // k8s-pb 0.9 predates `attestations` (Kubernetes 1.37): prost skips it as an unknown field.
        attestations: None,
    }
}

fn bound_object_ref(reference: pb::BoundObjectReference) -> BoundObjectReference {
    BoundObjectReference {
        kind: non_empty(reference.kind),
        api_version: non_empty(reference.api_version),
        name: non_empty(reference.name),
        uid: non_empty(reference.u_id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_pb::apimachinery::pkg::runtime::TypeMeta;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    const PB: Option<&str> = Some(PROTOBUF_MEDIA_TYPE);

    // Captured from kubectl v1.37.1, see tests/fixtures/kubectl/README.md.
    const KUBECTL_CREATE_TOKEN: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/kubectl/create-token.pb"
    ));
    const KUBECTL_CREATE_TOKEN_BOUND: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/kubectl/create-token-bound.pb"
    ));
    const KUBECTL_WHOAMI: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/kubectl/whoami.pb"
    ));

    /// Builds a body the way client-go does: magic + Unknown{typeMeta, raw, "", ""}.
    fn envelope(api_version: &str, kind: &str, object: &impl Message) -> Vec<u8> {
        let unknown = Unknown {
            type_meta: Some(TypeMeta {
                api_version: Some(api_version.to_owned()),
                kind: Some(kind.to_owned()),
            }),
            raw: Some(object.encode_to_vec()),
            content_encoding: Some(String::new()),
            content_type: Some(String::new()),
        };
        let mut body = MAGIC.to_vec();
        body.extend(unknown.encode_to_vec());
        body
    }

    fn pb_meta(name: &str, namespace: &str) -> pb_meta::ObjectMeta {
        pb_meta::ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            uid: Some(String::new()),
            ..Default::default()
        }
    }

    fn malformed_message<T: std::fmt::Debug>(result: Result<T, BodyError>) -> String {
        match result {
            Err(BodyError::Malformed(message)) => message,
            other => panic!("expected Malformed, got {other:?}"),
        }
    }

    #[test]
    fn content_types() -> TestResult {
        assert_eq!(body_format(None)?, BodyFormat::Json);
        assert_eq!(body_format(Some(""))?, BodyFormat::Json);
        assert_eq!(body_format(Some("application/json"))?, BodyFormat::Json);
        assert_eq!(
            body_format(Some("Application/JSON ; charset=UTF-8"))?,
            BodyFormat::Json
        );
        assert_eq!(body_format(PB)?, BodyFormat::Protobuf);
        assert_eq!(
            body_format(Some("application/vnd.kubernetes.protobuf; stream=watch"))?,
            BodyFormat::Protobuf
        );
        for unsupported in ["application/yaml", "text/plain", "application/cbor", "*/*"] {
            match body_format(Some(&format!("{unsupported}; charset=utf-8"))) {
                Err(BodyError::UnsupportedMediaType(t)) => assert_eq!(t, unsupported),
                other => panic!("{unsupported}: expected UnsupportedMediaType, got {other:?}"),
            }
        }
        Ok(())
    }

    #[test]
    fn unsupported_type_is_reported_before_the_body_is_read() {
        let result = decode_token_request(Some("application/yaml"), b"kind: TokenRequest");
        match result {
            Err(e @ BodyError::UnsupportedMediaType(_)) => {
                assert!(e.to_string().contains("\"application/yaml\""), "{e}");
            }
            other => panic!("expected UnsupportedMediaType, got {other:?}"),
        }
        assert!(matches!(
            decode_self_subject_review(Some("text/plain"), b""),
            Err(BodyError::UnsupportedMediaType(t)) if t == "text/plain"
        ));
    }

    #[test]
    fn json_token_request() -> TestResult {
        let body = br#"{"apiVersion":"authentication.k8s.io/v1","kind":"TokenRequest",
            "spec":{"audiences":["vault"],"expirationSeconds":600,
            "boundObjectRef":{"kind":"Pod","apiVersion":"v1","name":"web-0","uid":"u-1"}}}"#;
        for content_type in [
            None,
            Some("application/json"),
            Some("application/json; charset=utf-8"),
        ] {
            let request = decode_token_request(content_type, body)?;
            let spec = request.spec.ok_or("no spec")?;
            assert_eq!(spec.audiences, Some(vec!["vault".to_owned()]));
            assert_eq!(spec.expiration_seconds, Some(600));
            let bound = spec.bound_object_ref.ok_or("no boundObjectRef")?;
            assert_eq!(bound.name.as_deref(), Some("web-0"));
            assert_eq!(bound.uid.as_deref(), Some("u-1"));
        }
        Ok(())
    }

    #[test]
    fn json_errors_carry_serde_messages() {
        let wrong_kind = br#"{"apiVersion":"authentication.k8s.io/v1","kind":"TokenReview"}"#;
        let message = malformed_message(decode_token_request(None, wrong_kind));
        assert!(message.contains("TokenRequest"), "{message}");

        let wrong_version = br#"{"apiVersion":"v1","kind":"TokenRequest"}"#;
        let message = malformed_message(decode_token_request(None, wrong_version));
        assert!(message.contains("authentication.k8s.io/v1"), "{message}");

        let message = malformed_message(decode_token_review(None, b"{\"spec\":"));
        assert!(message.contains("EOF"), "{message}");

        // JSON sent as protobuf (and the reverse) is caught by the magic / JSON parser.
        let message = malformed_message(decode_token_request(PB, b"{}"));
        assert!(message.contains("k8s\\0"), "{message}");
        let message = malformed_message(decode_self_subject_review(None, KUBECTL_WHOAMI));
        assert!(message.contains("JSON"), "{message}");
    }

    #[test]
    fn empty_bodies() -> TestResult {
        for content_type in [None, PB] {
            assert_eq!(
                decode_token_request(content_type, b"")?,
                TokenRequest::default()
            );
            assert_eq!(
                decode_self_subject_review(content_type, b"")?,
                SelfSubjectReview::default()
            );
            let message = malformed_message(decode_token_review(content_type, b""));
            assert!(message.contains("empty"), "{message}");
        }
        Ok(())
    }

    #[test]
    fn protobuf_token_request_round_trip() -> TestResult {
        let object = pb::TokenRequest {
            metadata: Some(pb_meta("build-robot", "ci")),
            spec: Some(pb::TokenRequestSpec {
                audiences: vec!["vault".to_owned(), "api".to_owned()],
                expiration_seconds: Some(3600),
                bound_object_ref: Some(pb::BoundObjectReference {
                    kind: Some("Secret".to_owned()),
                    api_version: Some("v1".to_owned()),
                    name: Some("s".to_owned()),
                    u_id: Some("uid-9".to_owned()),
                }),
            }),
            status: Some(pb::TokenRequestStatus {
                token: Some("ignored".to_owned()),
                expiration_timestamp: None,
            }),
        };
        let body = envelope(GROUP_VERSION, "TokenRequest", &object);
        let request = decode_token_request(PB, &body)?;
        assert_eq!(request.metadata.name.as_deref(), Some("build-robot"));
        assert_eq!(request.metadata.namespace.as_deref(), Some("ci"));
        assert_eq!(request.metadata.uid, None);
        assert_eq!(request.status, None);
        let spec = request.spec.ok_or("no spec")?;
        assert_eq!(
            spec.audiences,
            Some(vec!["vault".to_owned(), "api".to_owned()])
        );
        assert_eq!(spec.expiration_seconds, Some(3600));
        assert_eq!(
            spec.bound_object_ref,
            Some(BoundObjectReference {
                kind: Some("Secret".to_owned()),
                api_version: Some("v1".to_owned()),
                name: Some("s".to_owned()),
                uid: Some("uid-9".to_owned()),
            })
        );
        Ok(())
    }

    #[test]
    fn protobuf_token_review_round_trip() -> TestResult {
        let object = pb::TokenReview {
            metadata: Some(pb_meta("", "")),
            spec: Some(pb::TokenReviewSpec {
                token: Some("a.b.c".to_owned()),
                audiences: vec!["vault".to_owned()],
            }),
            status: None,
        };
        let body = envelope(GROUP_VERSION, "TokenReview", &object);
        let review = decode_token_review(Some("application/vnd.kubernetes.protobuf"), &body)?;
        assert_eq!(review.metadata, ObjectMeta::default());
        assert_eq!(review.spec.token, "a.b.c");
        assert_eq!(review.spec.audiences, Some(vec!["vault".to_owned()]));

        // No audiences in protobuf means the same as none in JSON.
        let object = pb::TokenReview {
            spec: Some(pb::TokenReviewSpec {
                token: Some("t".to_owned()),
                audiences: Vec::new(),
            }),
            ..Default::default()
        };
        let review = decode_token_review(PB, &envelope(GROUP_VERSION, "TokenReview", &object))?;
        assert_eq!(
            review,
            decode_token_review(None, br#"{"spec":{"token":"t"}}"#)?
        );
        Ok(())
    }

    #[test]
    fn protobuf_self_subject_review_round_trip() -> TestResult {
        let object = pb::SelfSubjectReview {
            metadata: Some(pb_meta("me", "")),
            status: None,
        };
        let body = envelope(GROUP_VERSION, "SelfSubjectReview", &object);
        let review = decode_self_subject_review(PB, &body)?;
        assert_eq!(review.metadata.name.as_deref(), Some("me"));
        assert_eq!(review.status, None);
        Ok(())
    }

    #[test]
    fn protobuf_envelope_without_type_meta_is_accepted() -> TestResult {
        let unknown = Unknown {
            raw: Some(pb::SelfSubjectReview::default().encode_to_vec()),
            ..Default::default()
        };
        let mut body = MAGIC.to_vec();
        body.extend(unknown.encode_to_vec());
        assert_eq!(
            decode_self_subject_review(PB, &body)?,
            SelfSubjectReview::default()
        );
        Ok(())
    }

    #[test]
    fn protobuf_wrong_magic() {
        let mut body = KUBECTL_CREATE_TOKEN.to_vec();
        body[3] = b'!';
        let message = malformed_message(decode_token_request(PB, &body));
        assert!(message.contains("k8s\\0"), "{message}");
        // Shorter than the magic.
        let message = malformed_message(decode_token_request(PB, b"k8s"));
        assert!(message.contains("k8s\\0"), "{message}");
    }

    #[test]
    fn protobuf_truncated() {
        // Cut inside the envelope's last field, and inside the raw object.
        let cuts = [KUBECTL_CREATE_TOKEN.len() - 1, 60, MAGIC.len() + 5];
        for cut in cuts {
            let result = decode_token_request(PB, &KUBECTL_CREATE_TOKEN[..cut]);
            let message = malformed_message(result);
            assert!(message.contains("protobuf"), "cut at {cut}: {message}");
        }
    }

    #[test]
    fn protobuf_truncated_raw_object() {
        // A well-formed envelope whose raw object is cut in the middle of a field.
        let object = pb::TokenRequest {
            spec: Some(pb::TokenRequestSpec {
                audiences: vec!["vault".to_owned()],
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut raw = object.encode_to_vec();
        raw.truncate(raw.len() - 2);
        let unknown = Unknown {
            type_meta: Some(TypeMeta {
                api_version: Some(GROUP_VERSION.to_owned()),
                kind: Some("TokenRequest".to_owned()),
            }),
            raw: Some(raw),
            ..Default::default()
        };
        let mut body = MAGIC.to_vec();
        body.extend(unknown.encode_to_vec());
        let message = malformed_message(decode_token_request(PB, &body));
        assert!(
            message.contains("TokenRequest protobuf object"),
            "{message}"
        );
    }

    #[test]
    fn protobuf_wrong_kind_or_version() {
        let review = envelope(GROUP_VERSION, "TokenReview", &pb::TokenReview::default());
        let message = malformed_message(decode_token_request(PB, &review));
        assert!(message.contains("\"TokenReview\""), "{message}");
        assert!(message.contains("\"TokenRequest\""), "{message}");

        let message = malformed_message(decode_self_subject_review(PB, KUBECTL_CREATE_TOKEN));
        assert!(message.contains("\"SelfSubjectReview\""), "{message}");
        let message = malformed_message(decode_token_review(PB, KUBECTL_WHOAMI));
        assert!(message.contains("\"SelfSubjectReview\""), "{message}");

        let beta = envelope(
            "authentication.k8s.io/v1beta1",
            "SelfSubjectReview",
            &pb::SelfSubjectReview::default(),
        );
        let message = malformed_message(decode_self_subject_review(PB, &beta));
        assert!(message.contains("v1beta1"), "{message}");
    }

    #[test]
    fn protobuf_content_encoding_is_refused() {
        let unknown = Unknown {
            raw: Some(b"\x1f\x8b".to_vec()),
            content_encoding: Some("gzip".to_owned()),
            ..Default::default()
        };
        let mut body = MAGIC.to_vec();
        body.extend(unknown.encode_to_vec());
        let message = malformed_message(decode_self_subject_review(PB, &body));
        assert!(message.contains("gzip"), "{message}");
    }

    #[test]
    fn kubectl_create_token_fixture() -> TestResult {
        // kubectl create token default -n default --audience vault --duration 10m
        let request = decode_token_request(PB, KUBECTL_CREATE_TOKEN)?;
        // kubectl names the service account only in the URL; metadata arrives empty.
        assert_eq!(request.metadata, ObjectMeta::default());
        let spec = request.spec.ok_or("no spec")?;
        assert_eq!(spec.audiences, Some(vec!["vault".to_owned()]));
        assert_eq!(spec.expiration_seconds, Some(600));
        assert_eq!(spec.bound_object_ref, None);
        Ok(())
    }

    #[test]
    fn kubectl_create_token_bound_fixture() -> TestResult {
        // kubectl create token build-robot -n ci --audience vault
        //   --audience https://kubernetes.default.svc --duration 1h
        //   --bound-object-kind Pod --bound-object-name web-0 --bound-object-uid 7b0a...
        let request = decode_token_request(PB, KUBECTL_CREATE_TOKEN_BOUND)?;
        let spec = request.spec.ok_or("no spec")?;
        assert_eq!(
            spec.audiences,
            Some(vec![
                "vault".to_owned(),
                "https://kubernetes.default.svc".to_owned()
            ])
        );
        assert_eq!(spec.expiration_seconds, Some(3600));
        assert_eq!(
            spec.bound_object_ref,
            Some(BoundObjectReference {
                kind: Some("Pod".to_owned()),
                api_version: Some("v1".to_owned()),
                name: Some("web-0".to_owned()),
                uid: Some("7b0a1f58-3a2c-4c1e-9d7e-0123456789ab".to_owned()),
            })
        );
        Ok(())
    }

    #[test]
    fn kubectl_whoami_fixture() -> TestResult {
        let review = decode_self_subject_review(PB, KUBECTL_WHOAMI)?;
        assert_eq!(review, SelfSubjectReview::default());
        Ok(())
    }
}
