//! API errors as kube-apiserver reports them: a `metav1.Status` body with upstream's reason,
//! message, details and HTTP code.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    ListMeta, Status, StatusCause, StatusDetails,
};

/// Go's `%q`, re-exported: upstream's messages quote names and values with it.
pub use crate::errors::go_quote;

/// An error answer of the API.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Box<StatusDetails>>,
}

fn details(name: &str, group: Option<&str>, kind: &str) -> Option<Box<StatusDetails>> {
    Some(Box::new(StatusDetails {
        name: Some(name.to_owned()).filter(|n| !n.is_empty()),
        group: group.map(str::to_owned),
        kind: Some(kind.to_owned()),
        ..StatusDetails::default()
    }))
}

impl ApiError {
    /// 400 BadRequest, no details.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            code: 400,
            reason: "BadRequest",
            message: message.into(),
            details: None,
        }
    }

    /// 400 for a name the storage layer cannot make a key of (upstream's `NamespaceKeyFunc` and
    /// `NoNamespaceKeyFunc`): empty, `.` or `..`, or containing `/` or `%`. Every other name,
    /// valid or not, is simply looked up (and an invalid one is never found).
    pub fn check_name_parameter(name: &str) -> Result<(), Self> {
        if name.is_empty() {
            return Err(Self::bad_request("Name parameter required."));
        }
        let errors = crate::names::path_segment_errors(name);
        if errors.is_empty() {
            return Ok(());
        }
        Err(Self::bad_request(format!(
            "Name parameter invalid: {}: {}",
            go_quote(name),
            errors.join(";")
        )))
    }

    /// 401: the real cause stays in the server log, as upstream.
    pub fn unauthorized() -> Self {
        Self {
            code: 401,
            reason: "Unauthorized",
            message: "Unauthorized".into(),
            details: None,
        }
    }

    /// 403 for a resource: `<resource> "<name>" is forbidden: User "<user>" cannot <verb> ...`.
    pub fn forbidden_resource(
        user: &str,
        verb: &str,
        resource: &str,
        subresource: Option<&str>,
        group: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Self {
        let full = match subresource {
            Some(sub) => format!("{resource}/{sub}"),
            None => resource.to_owned(),
        };
        let qualified = if group.is_empty() {
            resource.to_owned()
        } else {
            format!("{resource}.{group}")
        };
        let subject = if name.is_empty() {
            qualified.clone()
        } else {
            format!("{qualified} {}", go_quote(name))
        };
        let scope = match namespace {
            Some(ns) => format!(" in the namespace {}", go_quote(ns)),
            None => " at the cluster scope".to_owned(),
        };
        Self {
            code: 403,
            reason: "Forbidden",
            message: format!(
                "{subject} is forbidden: User {} cannot {verb} resource {} in API group {}{scope}",
                go_quote(user),
                go_quote(&full),
                go_quote(group)
            ),
            details: details(name, Some(group).filter(|g| !g.is_empty()), resource),
        }
    }

    /// 403 for a non-resource URL.
    pub fn forbidden_path(user: &str, verb: &str, path: &str) -> Self {
        Self {
            code: 403,
            reason: "Forbidden",
            message: format!(
                "forbidden: User {} cannot {verb} path {}",
                go_quote(user),
                go_quote(path)
            ),
            details: None,
        }
    }

    /// 404 `<resource> "<name>" not found`.
    pub fn not_found(resource: &str, name: &str) -> Self {
        Self {
            code: 404,
            reason: "NotFound",
            message: format!("{resource} {} not found", go_quote(name)),
            details: details(name, None, resource),
        }
    }

    /// 404 for a path the emulator does not serve.
    pub fn no_route() -> Self {
        Self {
            code: 404,
            reason: "NotFound",
            message: "the server could not find the requested resource".into(),
            details: None,
        }
    }

    /// 405 for a known path with another verb.
    pub fn method_not_allowed(method: &str) -> Self {
        Self {
            code: 405,
            reason: "MethodNotAllowed",
            message: format!(
                "the server does not allow this method on the requested resource ({method})"
            ),
            details: None,
        }
    }

    /// 409 Conflict: `Operation cannot be fulfilled on <resource>[.<group>] "<name>": <why>`, with
    /// the group and resource apart in the details, as upstream's `NewConflict`.
    pub fn conflict(group: &str, resource: &str, name: &str, why: &str) -> Self {
        let qualified = if group.is_empty() {
            resource.to_owned()
        } else {
            format!("{resource}.{group}")
        };
        Self {
            code: 409,
            reason: "Conflict",
            message: format!(
                "Operation cannot be fulfilled on {qualified} {}: {why}",
                go_quote(name)
            ),
            details: details(name, Some(group).filter(|g| !g.is_empty()), resource),
        }
    }

    /// 413 for a body over `limit` bytes, as upstream's `limitedReadBody`
    /// (k8s.io/apiserver/pkg/endpoints/handlers/rest.go) with `NewRequestEntityTooLargeError`.
    pub fn request_entity_too_large(limit: usize) -> Self {
        Self {
            code: 413,
            reason: "RequestEntityTooLarge",
            message: format!("Request entity too large: limit is {limit}"),
            details: None,
        }
    }

    /// 415 for a body we cannot read.
    pub fn unsupported_media_type(media_type: &str) -> Self {
        Self {
            code: 415,
            reason: "UnsupportedMediaType",
            message: format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/vnd.kubernetes.protobuf (got {media_type:?})"
            ),
            details: None,
        }
    }

    /// 422 Invalid for one field of a `group` `kind` named `name` (may be empty).
    pub fn invalid(
        group: &str,
        kind: &str,
        name: &str,
        field: &str,
        value: &str,
        message: &str,
    ) -> Self {
        let qualified = if group.is_empty() {
            kind.to_owned()
        } else {
            format!("{kind}.{group}")
        };
        let cause = format!("Invalid value: {value}: {message}");
        Self {
            code: 422,
            reason: "Invalid",
            message: format!(
                "{qualified} {} is invalid: {field}: {cause}",
                go_quote(name)
            ),
            details: Some(Box::new(StatusDetails {
                name: Some(name.to_owned()).filter(|n| !n.is_empty()),
                group: Some(group.to_owned()).filter(|g| !g.is_empty()),
                kind: Some(kind.to_owned()),
                causes: Some(vec![StatusCause {
                    reason: Some("FieldValueInvalid".into()),
                    message: Some(cause),
                    field: Some(field.to_owned()),
                }]),
                ..StatusDetails::default()
            })),
        }
    }

    /// 500 InternalError.
    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            code: 500,
            reason: "InternalError",
            message: format!("Internal error occurred: {}", message.into()),
            details: None,
        }
    }

    /// 503 ServiceUnavailable.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            code: 503,
            reason: "ServiceUnavailable",
            message: message.into(),
            details: None,
        }
    }

    /// The `metav1.Status` body.
    pub fn to_status(&self) -> Status {
        Status {
            code: Some(i32::from(self.code)),
            details: self.details.as_deref().cloned(),
            message: Some(self.message.clone()),
            metadata: ListMeta::default(),
            reason: Some(self.reason.to_owned()),
            status: Some("Failure".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_body_matches_upstream_shape() {
        let status = ApiError::not_found("serviceaccounts", "ghost").to_status();
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "serviceaccounts \"ghost\" not found", "reason": "NotFound",
                "details": {"name": "ghost", "kind": "serviceaccounts"}, "code": 404
            })
        );
    }

    #[test]
    fn invalid_names_the_field_and_cause() {
        let err = ApiError::invalid(
            "authentication.k8s.io",
            "TokenRequest",
            "",
            "spec.expirationSeconds",
            "60",
            "may not specify a duration less than 10 minutes",
        );
        assert_eq!(
            err.message,
            "TokenRequest.authentication.k8s.io \"\" is invalid: spec.expirationSeconds: Invalid value: 60: may not specify a duration less than 10 minutes"
        );
        let json = serde_json::to_value(err.to_status()).unwrap();
        assert_eq!(json["code"], 422);
        assert_eq!(json["details"]["causes"][0]["reason"], "FieldValueInvalid");
        assert_eq!(
            json["details"]["causes"][0]["field"],
            "spec.expirationSeconds"
        );
        assert!(json["details"].get("name").is_none());
    }

    #[test]
    fn conflict_details_keep_group_and_resource_apart() {
        let err = ApiError::conflict("authentication.k8s.io", "TokenRequest", "app", "why");
        assert_eq!(
            err.message,
            "Operation cannot be fulfilled on TokenRequest.authentication.k8s.io \"app\": why"
        );
        let json = serde_json::to_value(err.to_status()).unwrap();
        assert_eq!(
            json["details"],
            serde_json::json!({"name": "app", "group": "authentication.k8s.io", "kind": "TokenRequest"})
        );
        let err = ApiError::conflict("", "Pod", "web", "why");
        assert_eq!(
            err.message,
            "Operation cannot be fulfilled on Pod \"web\": why"
        );
        let json = serde_json::to_value(err.to_status()).unwrap();
        assert_eq!(
            json["details"],
            serde_json::json!({"name": "web", "kind": "Pod"})
        );
    }

    #[test]
    fn names_the_storage_cannot_key_are_bad_requests() {
        assert_eq!(ApiError::check_name_parameter("A:b\0"), Ok(()));
        let err = ApiError::check_name_parameter("..").unwrap_err();
        assert_eq!((err.code, err.reason), (400, "BadRequest"));
        assert_eq!(
            err.message,
            "Name parameter invalid: \"..\": may not be '..'"
        );
        let err = ApiError::check_name_parameter("a/b%").unwrap_err();
        assert_eq!(
            err.message,
            "Name parameter invalid: \"a/b%\": may not contain '/';may not contain '%'"
        );
        let err = ApiError::check_name_parameter("").unwrap_err();
        assert_eq!(err.message, "Name parameter required.");
        // Names are quoted as Go's %q in every message.
        assert_eq!(
            ApiError::not_found("serviceaccounts", "a\0b").message,
            "serviceaccounts \"a\\x00b\" not found"
        );
    }

    #[test]
    fn forbidden_message_is_upstreams() {
        let err = ApiError::forbidden_resource(
            "system:serviceaccount:ns:app",
            "create",
            "serviceaccounts",
            Some("token"),
            "",
            Some("ns"),
            "app",
        );
        assert_eq!(
            err.message,
            "serviceaccounts \"app\" is forbidden: User \"system:serviceaccount:ns:app\" cannot create resource \"serviceaccounts/token\" in API group \"\" in the namespace \"ns\""
        );
    }
}
