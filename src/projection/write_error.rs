//! Why writing a projected directory failed, and the I/O helpers of the writer and the links
//! that produce it.

use std::fs;
use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};

use super::paths::PathError;

/// Why a write failed. A failure before the swap (step 9) changes nothing visible; one after it
/// leaves the new version published with cleanup unfinished (the next write or `recover` ends it).
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("payload path {path:?}: {source}")]
    InvalidPath {
        path: String,
        #[source]
        source: PathError,
    },
    /// Two payload keys name the same file once cleaned (`a` and `./a`).
    #[error("payload paths {first:?} and {second:?} both name {cleaned:?}")]
    DuplicatePath {
        first: String,
        second: String,
        cleaned: String,
    },
    /// `..data` is a link, but not to a version directory of this writer.
    #[error(
        "{} points to {target:?}, not to a version directory of this writer; run recover or remove it",
        path.display()
    )]
    UnexpectedDataLink { path: PathBuf, target: PathBuf },
    /// chown refused (not root, no CAP_CHOWN, or not a member of the group).
    #[error(
        "cannot chown {} to {kind} {id} for {setting}: {source}; run as root (or with CAP_CHOWN) or drop {setting}",
        path.display()
    )]
    Ownership {
        path: PathBuf,
        /// `"group"` or `"owner"`.
        kind: &'static str,
        id: u32,
        /// The pod setting that asked for it: `"fsGroup"` or `"runAsUser"`.
        setting: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// `map_err` helper: an I/O error with the operation and the path it was about.
pub(super) fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> WriteError + 'a {
    move |source| WriteError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Removes a file, link or directory tree; `Ok(false)` when there was nothing.
pub(super) fn remove_any(path: &Path) -> Result<bool, WriteError> {
    let result = match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
        Err(e) => Err(e),
    };
    result.map(|()| true).map_err(io_err("remove", path))
}
