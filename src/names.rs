//! Kubernetes object names as kube-apiserver validates them, with upstream's messages:
//! namespaces are DNS-1123 labels, service accounts, pods, secrets and nodes DNS-1123 subdomains
//! (`k8s.io/apimachinery/pkg/util/validation`: `IsDNS1123Label`, `IsDNS1123Subdomain`), and a
//! name the storage layer is asked for must be usable as a path segment
//! (`k8s.io/apimachinery/pkg/api/validation/path`: `IsValidPathSegmentName`).
//!
//! Pure: every layer may use it (the API server, the object store, the pod planner).

use crate::errors::go_quote;

/// `DNS1123LabelMaxLength`.
pub const DNS1123_LABEL_MAX_LENGTH: usize = 63;
/// `DNS1123SubdomainMaxLength`.
pub const DNS1123_SUBDOMAIN_MAX_LENGTH: usize = 253;

const LABEL_FORMAT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const SUBDOMAIN_FORMAT: &str = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const LABEL_MESSAGE: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character";
const SUBDOMAIN_MESSAGE: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";

/// Upstream's label regex, of any length: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`.
fn matches_label_format(value: &str) -> bool {
    let bytes = value.as_bytes();
    let alphanumeric = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    bytes.first().is_some_and(alphanumeric)
        && bytes.last().is_some_and(alphanumeric)
        && bytes.iter().all(|b| alphanumeric(b) || *b == b'-')
}

/// Upstream's subdomain regex, of any length: labels joined by single dots.
fn matches_subdomain_format(value: &str) -> bool {
    value.split('.').all(matches_label_format)
}

/// `MaxLenError`.
fn too_long(max: usize) -> String {
    format!("must be no more than {max} characters")
}

/// `RegexError`: the rule, examples, and the regex.
fn regex_error(message: &str, format: &str, examples: &[&str]) -> String {
    let examples: String = examples
        .iter()
        .map(|e| format!("'{e}', "))
        .collect::<Vec<_>>()
        .join(" or ");
    format!("{message} (e.g. {examples}regex used for validation is '{format}')")
}

/// Whether `value` is a DNS-1123 label (a namespace name).
pub fn is_dns1123_label(value: &str) -> bool {
    value.len() <= DNS1123_LABEL_MAX_LENGTH && matches_label_format(value)
}

/// Whether `value` is a DNS-1123 subdomain (a service account, pod, secret or node name).
pub fn is_dns1123_subdomain(value: &str) -> bool {
    value.len() <= DNS1123_SUBDOMAIN_MAX_LENGTH && matches_subdomain_format(value)
}

/// `IsDNS1123Label`: what is wrong with `value` as a label, in upstream's words (empty: nothing).
pub fn dns1123_label_errors(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > DNS1123_LABEL_MAX_LENGTH {
        errors.push(too_long(DNS1123_LABEL_MAX_LENGTH));
    }
    if !matches_label_format(value) {
        if matches_subdomain_format(value) {
            // A valid subdomain that is not a label: the length was checked, so it is the dots.
            errors.push("must not contain dots".to_owned());
        } else {
            errors.push(regex_error(
                LABEL_MESSAGE,
                LABEL_FORMAT,
                &["my-name", "123-abc"],
            ));
        }
    }
    errors
}

/// `IsDNS1123Subdomain`: what is wrong with `value` as a subdomain (empty: nothing).
pub fn dns1123_subdomain_errors(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > DNS1123_SUBDOMAIN_MAX_LENGTH {
        errors.push(too_long(DNS1123_SUBDOMAIN_MAX_LENGTH));
    }
    if !matches_subdomain_format(value) {
        errors.push(regex_error(
            SUBDOMAIN_MESSAGE,
            SUBDOMAIN_FORMAT,
            &["example.com"],
        ));
    }
    errors
}

/// `IsValidPathSegmentName`: `.` and `..` are refused outright, `/` and `%` anywhere.
pub fn path_segment_errors(name: &str) -> Vec<String> {
    if let Some(reserved) = [".", ".."].into_iter().find(|r| name == *r) {
        return vec![format!("may not be '{reserved}'")];
    }
    ["/", "%"]
        .into_iter()
        .filter(|part| name.contains(part))
        .map(|part| format!("may not contain '{part}'"))
        .collect()
}

/// A `field.Invalid` error list as upstream prints it: `<field>: Invalid value: "<value>": <why>`,
/// several inside `[...]` joined by `, ` (an aggregate). `None` when `errors` is empty.
pub fn invalid_value(field: &str, value: &str, errors: &[String]) -> Option<String> {
    let each: Vec<String> = errors
        .iter()
        .map(|why| format!("{field}: Invalid value: {}: {why}", go_quote(value)))
        .collect();
    match each.as_slice() {
        [] => None,
        [one] => Some(one.clone()),
        _ => Some(format!("[{}]", each.join(", "))),
    }
}

/// Why `namespace` cannot name a namespace (`ValidateNamespaceName`), as a `field` error.
pub fn check_namespace(field: &str, namespace: &str) -> Result<(), String> {
    invalid_value(field, namespace, &dns1123_label_errors(namespace)).map_or(Ok(()), Err)
}

/// Why `name` cannot name a service account, pod, secret or node (`ValidateServiceAccountName`,
/// `ValidatePodName`, ...: all `NameIsDNSSubdomain`), as a `field` error.
pub fn check_object_name(field: &str, name: &str) -> Result<(), String> {
    invalid_value(field, name, &dns1123_subdomain_errors(name)).map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LABEL_RULE: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
    const SUBDOMAIN_RULE: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

    #[test]
    fn labels_are_lowercase_alphanumerics_and_dashes_up_to_63() {
        for good in ["a", "0", "kube-system", "123-abc", &"x".repeat(63)] {
            assert!(is_dns1123_label(good), "{good:?}");
            assert!(dns1123_label_errors(good).is_empty(), "{good:?}");
        }
        for bad in [
            "",
            "A",
            "a:b",
            "-a",
            "a-",
            "a_b",
            "é",
            "a\0b",
            "..",
            "a.b",
            &"x".repeat(64),
        ] {
            assert!(!is_dns1123_label(bad), "{bad:?}");
            assert!(!dns1123_label_errors(bad).is_empty(), "{bad:?}");
        }
    }

    #[test]
    fn label_messages_are_upstreams() {
        assert_eq!(dns1123_label_errors("a:b"), [LABEL_RULE]);
        // A subdomain that is not a label is told about its dots only.
        assert_eq!(dns1123_label_errors("a.b"), ["must not contain dots"]);
        assert_eq!(
            dns1123_label_errors(&"x".repeat(64)),
            ["must be no more than 63 characters"]
        );
        assert_eq!(
            dns1123_label_errors(&"X".repeat(64)),
            ["must be no more than 63 characters", LABEL_RULE]
        );
    }

    #[test]
    fn subdomains_are_dot_joined_labels_up_to_253() {
        // Upstream's regex does not bound the parts, only the whole.
        let long_part = format!("{}.b", "a".repeat(100));
        for good in [
            "a",
            "web-0.canary",
            "example.com",
            &long_part,
            &"x".repeat(253),
        ] {
            assert!(is_dns1123_subdomain(good), "{good:?}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a..b",
            ".a",
            "a.",
            "A",
            "b:c",
            "a/b",
            "a b",
            "a\0",
            &"x".repeat(254),
        ] {
            assert!(!is_dns1123_subdomain(bad), "{bad:?}");
        }
        assert_eq!(dns1123_subdomain_errors("b:c"), [SUBDOMAIN_RULE]);
        assert_eq!(
            dns1123_subdomain_errors(&"x".repeat(300)),
            ["must be no more than 253 characters"]
        );
    }

    #[test]
    fn path_segments_refuse_dots_slashes_and_percents() {
        assert!(path_segment_errors("A:b\0").is_empty());
        assert_eq!(path_segment_errors("."), ["may not be '.'"]);
        assert_eq!(path_segment_errors(".."), ["may not be '..'"]);
        assert_eq!(path_segment_errors("..."), Vec::<String>::new());
        assert_eq!(
            path_segment_errors("a/b%c"),
            ["may not contain '/'", "may not contain '%'"]
        );
    }

    #[test]
    fn field_errors_read_as_upstreams() {
        assert_eq!(check_namespace("metadata.namespace", "team-a"), Ok(()));
        assert_eq!(
            check_object_name("metadata.name", "B:c"),
            Err(format!(
                "metadata.name: Invalid value: \"B:c\": {SUBDOMAIN_RULE}"
            ))
        );
        let long = "X".repeat(300);
        assert_eq!(
            check_object_name("metadata.name", &long),
            Err(format!(
                "[metadata.name: Invalid value: \"{long}\": must be no more than 253 characters, metadata.name: Invalid value: \"{long}\": {SUBDOMAIN_RULE}]"
            ))
        );
        assert_eq!(
            check_namespace("metadata.namespace", "a\0b"),
            Err(format!(
                "metadata.namespace: Invalid value: \"a\\x00b\": {LABEL_RULE}"
            ))
        );
    }
}
