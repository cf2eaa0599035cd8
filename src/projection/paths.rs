//! Payload path rules of the kubelet's atomic writer (`validatePath` in atomic_writer.go).

/// Why a payload path was rejected. Messages follow upstream's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("invalid path: must not be empty: \"{0}\"")]
    Empty(String),
}

/// Checks one payload path as upstream does (on the raw string, before cleaning).
pub fn validate_path(path: &str) -> Result<(), PathError> {
    todo!("{path}")
}

/// `filepath.Clean` for a validated relative path: `./a` -> `a`, `a//b` -> `a/b`.
pub fn clean_path(path: &str) -> String {
    todo!("{path}")
}
