//! Why a pod's projected volumes cannot be planned; shared by the planner and its checks.

/// Why a pod's projected volumes cannot be planned. Each message names the field and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("pod manifest: {0}")]
    Manifest(String),
    #[error("{field}: {message}")]
    Field { field: String, message: String },
}
