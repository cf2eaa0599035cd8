//! A payload: what one projected volume should contain, path -> bytes and mode.

use std::collections::BTreeMap;
use std::sync::Arc;

/// One file of a payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProjection {
    /// Shared: the root CA or a config map projected into 10,000 volumes is one allocation,
    /// and building a payload for a write copies no bytes but the token's.
    pub data: Arc<[u8]>,
    /// Permission bits, e.g. 0o644. Applied exactly, whatever the umask.
    pub mode: u32,
    /// Owner to chown the file to (the pod's single `runAsUser`), when set.
    pub fs_user: Option<u32>,
}

/// Relative path (as given in the volume spec, validated by the writer) -> file.
pub type Payload = BTreeMap<String, FileProjection>;
