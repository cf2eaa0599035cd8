//! The integer fields of a Pod manifest that we read, refused when written as strings
//! (`mode: "0400"`), as the API server's schema (int32/int64) refuses them.
//!
//! The YAML reader turns a quoted `"0400"` into an integer as readily as a plain `0400`, so the
//! typed Pod alone cannot tell them apart. A second, small pass reads only these fields, keeping
//! the kind of each scalar (a plain `0644` stays an octal number, as Kubernetes reads it).

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use super::spec_error::SpecError;

/// A scalar where an integer belongs: a number, or what else it was (for the message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntField {
    Integer,
    /// A quoted string, with its text.
    Text(String),
    /// A boolean or a fractional number, as written.
    Other(String),
}

impl<'de> Deserialize<'de> for IntField {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Kind;
        impl Visitor<'_> for Kind {
            type Value = IntField;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an integer")
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<IntField, E> {
                Ok(IntField::Integer)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<IntField, E> {
                Ok(IntField::Integer)
            }
            fn visit_i128<E: de::Error>(self, _: i128) -> Result<IntField, E> {
                Ok(IntField::Integer)
            }
            fn visit_u128<E: de::Error>(self, _: u128) -> Result<IntField, E> {
                Ok(IntField::Integer)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<IntField, E> {
                Ok(IntField::Other(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<IntField, E> {
                Ok(IntField::Other(v.to_string()))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<IntField, E> {
                Ok(IntField::Text(v.to_owned()))
            }
        }
        deserializer.deserialize_any(Kind)
    }
}

/// The integer fields of one Pod that planning reads.
#[derive(Debug, Default, Deserialize)]
pub struct PodInts {
    spec: Option<SpecInts>,
}

/// The integer fields of a `--pods` document: a Pod's, or those of each Pod of a List.
#[derive(Debug, Default, Deserialize)]
pub struct DocumentInts {
    spec: Option<SpecInts>,
    items: Option<Vec<PodInts>>,
}

impl DocumentInts {
    /// The document read as a Pod.
    pub fn check_pod(&self) -> Result<(), SpecError> {
        check_spec(self.spec.as_ref())
    }

    /// The document read as a List: the index of the first bad item, and why.
    pub fn check_items(&self) -> Result<(), (usize, SpecError)> {
        for (index, item) in self.items.iter().flatten().enumerate() {
            check_int_fields(item).map_err(|e| (index, e))?;
        }
        Ok(())
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SpecInts {
    security_context: Option<PodSecurityInts>,
    init_containers: Option<Vec<ContainerInts>>,
    containers: Option<Vec<ContainerInts>>,
    volumes: Option<Vec<VolumeInts>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodSecurityInts {
    fs_group: Option<IntField>,
    run_as_user: Option<IntField>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContainerInts {
    security_context: Option<ContainerSecurityInts>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContainerSecurityInts {
    run_as_user: Option<IntField>,
}

#[derive(Debug, Default, Deserialize)]
struct VolumeInts {
    projected: Option<ProjectedInts>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProjectedInts {
    default_mode: Option<IntField>,
    sources: Option<Vec<SourceInts>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SourceInts {
    secret: Option<ItemsInts>,
    config_map: Option<ItemsInts>,
    #[serde(rename = "downwardAPI")]
    downward_api: Option<ItemsInts>,
    service_account_token: Option<TokenInts>,
}

#[derive(Debug, Default, Deserialize)]
struct ItemsInts {
    items: Option<Vec<ItemInts>>,
}

#[derive(Debug, Default, Deserialize)]
struct ItemInts {
    mode: Option<IntField>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TokenInts {
    expiration_seconds: Option<IntField>,
}

/// Every integer field of a pod's `spec` with where it is, in document order.
fn fields(spec: Option<&SpecInts>) -> Vec<(String, &Option<IntField>)> {
    let mut out = Vec::new();
    let Some(spec) = spec else {
        return out;
    };
    if let Some(sc) = &spec.security_context {
        out.push(("spec.securityContext.fsGroup".to_owned(), &sc.fs_group));
        out.push(("spec.securityContext.runAsUser".to_owned(), &sc.run_as_user));
    }
    for (list, containers) in [
        ("initContainers", &spec.init_containers),
        ("containers", &spec.containers),
    ] {
        for (i, container) in containers.iter().flatten().enumerate() {
            if let Some(sc) = &container.security_context {
                out.push((
                    format!("spec.{list}[{i}].securityContext.runAsUser"),
                    &sc.run_as_user,
                ));
            }
        }
    }
    for (v, volume) in spec.volumes.iter().flatten().enumerate() {
        let Some(projected) = &volume.projected else {
            continue;
        };
        let volume_field = format!("spec.volumes[{v}].projected");
        out.push((
            format!("{volume_field}.defaultMode"),
            &projected.default_mode,
        ));
        for (s, source) in projected.sources.iter().flatten().enumerate() {
            let source_field = format!("{volume_field}.sources[{s}]");
            for (kind, items) in [
                ("secret", &source.secret),
                ("configMap", &source.config_map),
                ("downwardAPI", &source.downward_api),
            ] {
                let items = items.iter().flat_map(|i| i.items.iter().flatten());
                for (i, item) in items.enumerate() {
                    out.push((format!("{source_field}.{kind}.items[{i}].mode"), &item.mode));
                }
            }
            if let Some(token) = &source.service_account_token {
                out.push((
                    format!("{source_field}.serviceAccountToken.expirationSeconds"),
                    &token.expiration_seconds,
                ));
            }
        }
    }
    out
}

/// The first integer field of `pod` written as something else, as a field error with the fix.
pub fn check_int_fields(pod: &PodInts) -> Result<(), SpecError> {
    check_spec(pod.spec.as_ref())
}

fn check_spec(spec: Option<&SpecInts>) -> Result<(), SpecError> {
    for (field, value) in fields(spec) {
        let message = match value {
            None | Some(IntField::Integer) => continue,
            Some(IntField::Text(text)) => {
                let unquoted = if field.to_ascii_lowercase().ends_with("mode") {
                    mode_fix(text)
                } else {
                    format!("write it unquoted ({text})")
                };
                format!(
                    "{text:?} is a string, but the API server's schema says integer: {unquoted}"
                )
            }
            Some(IntField::Other(other)) => {
                format!("{other} is not an integer, as the API server's schema requires")
            }
        };
        return Err(SpecError::Field { field, message });
    }
    Ok(())
}

/// How to write a mode that was quoted: unquoted as YAML octal (`0400`), or in decimal.
fn mode_fix(text: &str) -> String {
    let octal = text
        .strip_prefix('0')
        .map(|rest| rest.strip_prefix('o').unwrap_or(rest))
        .and_then(|digits| u32::from_str_radix(digits, 8).ok());
    match (octal, text.parse::<u32>()) {
        (Some(value), _) => {
            format!("write 0{value:o} unquoted (YAML octal) or its decimal {value}")
        }
        (None, Ok(value)) => format!("write {value} unquoted (decimal, octal 0{value:o})"),
        (None, Err(_)) => {
            "write the mode unquoted: octal with a leading 0 (0644) or decimal (420)".into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(yaml: &str) -> Result<(), String> {
        let mut options = serde_saphyr::options::Options::default();
        options.legacy_octal_numbers = true;
        let pod: PodInts = serde_saphyr::from_str_with_options(yaml, options).unwrap();
        check_int_fields(&pod).map_err(|e| e.to_string())
    }

    #[test]
    fn plain_numbers_pass_in_every_spelling() {
        let yaml = "spec:\n  securityContext: {fsGroup: 2000, runAsUser: 1000}\n  containers: [{securityContext: {runAsUser: 1000}}]\n  volumes:\n  - projected:\n      defaultMode: 0644\n      sources:\n      - serviceAccountToken: {expirationSeconds: 3607}\n      - configMap: {items: [{mode: 420}, {}]}\n      - secret: {items: [{mode: 0o600}]}\n      - downwardAPI: {items: [{mode: !!int \"0400\"}]}\n  - emptyDir: {}\n";
        assert_eq!(check(yaml), Ok(()));
        assert_eq!(check("{}"), Ok(()));
        let json = r#"{"spec": {"volumes": [{"projected": {"defaultMode": 420, "sources": []}}]}}"#;
        assert_eq!(check(json), Ok(()));
    }

    #[test]
    fn quoted_integers_name_the_field_and_the_fix() {
        let item_mode = "spec:\n  volumes:\n  - emptyDir: {}\n  - projected:\n      sources:\n      - serviceAccountToken: {path: token}\n      - configMap: {name: c, items: [{key: k, path: p}, {key: k2, path: p2, mode: \"0400\"}]}\n";
        assert_eq!(
            check(item_mode).unwrap_err(),
            "spec.volumes[1].projected.sources[1].configMap.items[1].mode: \"0400\" is a string, \
             but the API server's schema says integer: write 0400 unquoted (YAML octal) or its decimal 256"
        );
        let json = r#"{"spec": {"volumes": [{"projected": {"defaultMode": "420"}}]}}"#;
        let err = check(json).unwrap_err();
        assert!(
            err.starts_with("spec.volumes[0].projected.defaultMode: \"420\" is a string"),
            "{err}"
        );
        assert!(
            err.ends_with("write 420 unquoted (decimal, octal 0644)"),
            "{err}"
        );
        let err = check("spec: {volumes: [{projected: {defaultMode: 'rw'}}]}").unwrap_err();
        assert!(
            err.contains("octal with a leading 0 (0644) or decimal (420)"),
            "{err}"
        );
        let lifetime =
            "spec:\n  volumes:\n  - projected:\n      sources: [{serviceAccountToken: {expirationSeconds: '3600'}}]\n";
        let err = check(lifetime).unwrap_err();
        assert!(
            err.starts_with(
                "spec.volumes[0].projected.sources[0].serviceAccountToken.expirationSeconds: \"3600\" is a string"
            ) && err.ends_with("write it unquoted (3600)"),
            "{err}"
        );
        let err =
            check("spec: {containers: [{}, {securityContext: {runAsUser: \"0\"}}]}").unwrap_err();
        assert!(
            err.starts_with("spec.containers[1].securityContext.runAsUser"),
            "{err}"
        );
        let err = check("spec: {securityContext: {fsGroup: 1.5}}").unwrap_err();
        assert_eq!(
            err,
            "spec.securityContext.fsGroup: 1.5 is not an integer, as the API server's schema requires"
        );
    }
}
