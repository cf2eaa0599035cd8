//! The checks kube-apiserver's pod validation makes on projected volumes that planning alone
//! would not (`validateProjectionSources` in pkg/apis/core/validation/validation.go): a token's
//! lifetime, and one writer per path. Pure: field names and values in, errors out.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::ProjectedVolumeSource;

use super::paths::clean_path;
use super::spec_error::SpecError;

/// The shortest `expirationSeconds` a pod's token projection may ask for (10 minutes).
pub const MIN_EXPIRATION_SECONDS: i64 = 600;
/// The longest (2^32 seconds).
pub const MAX_EXPIRATION_SECONDS: i64 = 1 << 32;

/// Checks every `serviceAccountToken.expirationSeconds` of a projected volume of a Pod manifest
/// as the API server does when the pod is created. `field` is the volume's
/// (`spec.volumes[0].projected`). Lifetimes from our own flags are not pod fields and are not
/// checked here.
pub fn check_token_lifetimes(field: &str, source: &ProjectedVolumeSource) -> Result<(), SpecError> {
    for (index, projection) in source.sources.iter().flatten().enumerate() {
        let Some(seconds) = projection
            .service_account_token
            .as_ref()
            .and_then(|token| token.expiration_seconds)
        else {
            continue;
        };
        let message = if seconds < MIN_EXPIRATION_SECONDS {
            "may not specify a duration less than 10 minutes"
        } else if seconds > MAX_EXPIRATION_SECONDS {
            "may not specify a duration larger than 2^32 seconds"
        } else {
            continue;
        };
        return Err(SpecError::Field {
            field: format!("{field}.sources[{index}].serviceAccountToken.expirationSeconds"),
            message: format!(
                "{seconds}: {message}: give 600 to 4294967296 (the API server refuses the pod otherwise)"
            ),
        });
    }
    Ok(())
}

/// Which field writes each file of one volume, to refuse a path written twice.
///
/// Upstream's validation keeps one set of the item paths of `secret`, `configMap` and
/// `downwardAPI` sources and refuses a repeat with "conflicting duplicate paths"; it compares the
/// paths as written and leaves out the `serviceAccountToken` path and the keys of a source
/// without items, so the kubelet then writes whichever source comes last (or, for `token` and
/// `./token`, whichever its map visits last). We also count those, and compare cleaned paths:
/// a second writer of a file is always a mistake, and here it would replace a token while the
/// log says "token rotated".
#[derive(Debug, Default)]
pub struct WrittenPaths {
    /// Cleaned path -> (field that writes it, path as written there).
    by_path: HashMap<String, (String, String)>,
}

impl WrittenPaths {
    /// Records that `field` writes `path` (already validated); refuses a path another field
    /// already writes, naming both.
    pub fn claim(&mut self, field: &str, path: &str) -> Result<(), SpecError> {
        let cleaned = clean_path(path);
        if let Some((first, first_path)) = self.by_path.get(&cleaned) {
            let written_as = if first_path == path {
                String::new()
            } else {
                format!(" as {first_path:?}")
            };
            return Err(SpecError::Field {
                field: field.to_owned(),
                message: format!(
                    "{path:?}: conflicting duplicate paths (also written by {first}{written_as}): give each file its own path"
                ),
            });
        }
        self.by_path
            .insert(cleaned, (field.to_owned(), path.to_owned()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ServiceAccountTokenProjection, VolumeProjection};

    fn with_token_lifetime(seconds: Option<i64>) -> ProjectedVolumeSource {
        ProjectedVolumeSource {
            sources: Some(vec![
                VolumeProjection::default(),
                VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        path: "token".into(),
                        expiration_seconds: seconds,
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        }
    }

    #[test]
    fn token_lifetimes_are_600_to_2_pow_32_seconds() {
        for ok in [None, Some(600), Some(3607), Some(1 << 32)] {
            assert_eq!(check_token_lifetimes("v", &with_token_lifetime(ok)), Ok(()));
        }
        let err =
            check_token_lifetimes("spec.volumes[2].projected", &with_token_lifetime(Some(599)))
                .unwrap_err()
                .to_string();
        assert!(
            err.starts_with(
                "spec.volumes[2].projected.sources[1].serviceAccountToken.expirationSeconds: 599: \
                 may not specify a duration less than 10 minutes"
            ),
            "{err}"
        );
        let err = check_token_lifetimes("v", &with_token_lifetime(Some((1 << 32) + 1)))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("4294967297: may not specify a duration larger than 2^32 seconds"),
            "{err}"
        );
    }

    #[test]
    fn a_path_written_twice_names_both_writers() {
        let mut paths = WrittenPaths::default();
        paths.claim("a.path", "token").unwrap();
        paths.claim("b.path", "dir/file").unwrap();
        let err = paths.claim("c.path", "token").unwrap_err().to_string();
        assert_eq!(
            err,
            "c.path: \"token\": conflicting duplicate paths (also written by a.path): give each file its own path"
        );
        // The same file under another spelling is the same file.
        let err = paths
            .claim("d.path", "./dir//file")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(
                "d.path: \"./dir//file\": conflicting duplicate paths (also written by b.path as \"dir/file\")"
            ),
            "{err}"
        );
        paths.claim("e.path", "dir/other").unwrap();
    }
}
