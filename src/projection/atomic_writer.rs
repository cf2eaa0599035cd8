//! The kubelet's atomic writer (`pkg/volume/util/atomic_writer.go`).

use std::path::{Path, PathBuf};

use super::paths::PathError;
use super::payload::Payload;

/// How the writer treats durability and ownership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterOptions {
    /// fsync files and directories before and after the swap (upstream does not; we do by default).
    pub fsync: bool,
    /// `fsGroup`: chown every file and directory of a version to this group, group-readable.
    pub fs_group: Option<u32>,
}

impl Default for WriterOptions {
    fn default() -> Self {
        Self {
            fsync: true,
            fs_group: None,
        }
    }
}

/// What one `write` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The payload equals what is on disk: no new directory, no swap.
    Unchanged,
    /// A new version was published; `data_dir` is its timestamped directory name (`..2026_...`).
    Written { data_dir: String },
}

/// What `recover` cleaned up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Names (relative to the target directory) that were removed or repaired.
    pub removed: Vec<String>,
}

/// Why a write failed. Nothing visible changes when it fails.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("payload path {path:?}: {source}")]
    InvalidPath {
        path: String,
        #[source]
        source: PathError,
    },
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Writes payloads into one target directory, kubelet style. Not safe for concurrent writers to the
/// same directory (neither is upstream's): the caller serialises.
#[derive(Debug, Clone)]
pub struct AtomicWriter {
    target_dir: PathBuf,
    options: WriterOptions,
}

impl AtomicWriter {
    pub fn new(target_dir: impl Into<PathBuf>, options: WriterOptions) -> Self {
        Self {
            target_dir: target_dir.into(),
            options,
        }
    }

    pub fn target_dir(&self) -> &Path {
        &self.target_dir
    }

    /// Creates the target directory if missing and cleans what a crash left behind.
    pub fn recover(&self) -> Result<RecoveryReport, WriteError> {
        todo!("{:?}", self.options)
    }

    /// Publishes `payload` as the new version of the directory.
    pub fn write(&self, payload: &Payload) -> Result<WriteOutcome, WriteError> {
        todo!("{}", payload.len())
    }
}
