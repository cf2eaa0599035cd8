//! The emulator's identity kept across restarts: its CA, signing keys, admin token and the seed
//! of the uids it gives its own objects, in a private state directory (mode 0700, each file
//! 0600), so a kubeconfig, a sidecar or a `ctl` set up against one run keeps working with the
//! next, and tokens issued before a restart still authenticate after it (as a kind cluster keeps
//! its CA). Several emulators may share one directory: a file is created whole under a temporary
//! name and linked into place only if nobody else got there first; the loser reads the winner's.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::private_files::{ensure_private_dir, read_private, PrivateFileError};

/// The directory under `$XDG_STATE_HOME` (default `~/.local/state`) that holds the state.
pub const STATE_DIR_NAME: &str = "projected-token";

/// The files of the state directory.
pub mod files {
    pub const CA: &str = "ca.pem";
    pub const ADMIN_TOKEN: &str = "admin-token";
    pub const UID_SEED: &str = "uid-seed";

    /// One signing key per algorithm, so `--key-algorithm` picks its own.
    pub fn signing_key(algorithm: &str) -> String {
        format!("signing-key-{algorithm}.pem")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state directory {}: {source}", path.display())]
    Directory {
        path: PathBuf,
        #[source]
        source: PrivateFileError,
    },
    #[error("{}: {source}", path.display())]
    File {
        path: PathBuf,
        #[source]
        source: PrivateFileError,
    },
    #[error("{}: empty; remove it and a new one is made at the next start", path.display())]
    Empty { path: PathBuf },
    #[error("{}: {reason}", path.display())]
    Generate { path: PathBuf, reason: String },
}

/// An open state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    path: PathBuf,
}

/// Where the state lives when no `--state-dir` is given: `$XDG_STATE_HOME/projected-token`, else
/// `$HOME/.local/state/projected-token`; `None` when neither variable is set (a scratch image).
pub fn default_path() -> Option<PathBuf> {
    let absolute = |name: &str| {
        std::env::var_os(name)
            .map(PathBuf::from)
            .filter(|path| path.is_absolute())
    };
    absolute("XDG_STATE_HOME")
        .or_else(|| absolute("HOME").map(|home| home.join(".local/state")))
        .map(|base| base.join(STATE_DIR_NAME))
}

impl StateDir {
    /// Opens `path`, creating it (mode 0700) if missing; an existing one must be this user's
    /// and not writable by group or others.
    pub fn open(path: &Path) -> Result<Self, StateError> {
        ensure_private_dir(path).map_err(|source| StateError::Directory {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self {
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// The content of file `name`: read if it exists (it must be this user's private regular
    /// file), else made by `create` and saved with mode 0600. When another process saved it
    /// first, its content is returned instead of ours.
    pub fn load_or_create(
        &self,
        name: &str,
        create: impl FnOnce() -> Result<Vec<u8>, String>,
    ) -> Result<Vec<u8>, StateError> {
        let path = self.file(name);
        let file_error = |source: PrivateFileError| StateError::File {
            path: path.clone(),
            source,
        };
        if let Some(bytes) = read_private(&path).map_err(file_error)? {
            return non_empty(bytes, &path);
        }
        let bytes = create().map_err(|reason| StateError::Generate {
            path: path.clone(),
            reason,
        })?;
        let saved = self.save_new(&path, &bytes).map_err(file_error)?;
        if saved {
            return Ok(bytes);
        }
        let theirs = read_private(&path).map_err(file_error)?;
        non_empty(theirs.unwrap_or_default(), &path)
    }

    /// Writes `bytes` to a new temporary file in the directory and links it at `path` unless
    /// something is already there: false when it was.
    fn save_new(&self, path: &Path, bytes: &[u8]) -> Result<bool, PrivateFileError> {
        // tempfile creates it exclusively, mode 0600.
        let mut file = tempfile::Builder::new()
            .prefix(".new-")
            .tempfile_in(&self.path)?;
        file.write_all(bytes)?;
        file.as_file().sync_all()?;
        match file.persist_noclobber(path) {
            Ok(_) => Ok(true),
            Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e.error.into()),
        }
    }
}

fn non_empty(bytes: Vec<u8>, path: &Path) -> Result<Vec<u8>, StateError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(StateError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(bytes)
}

/// A uid for object `kind` `namespace/name` derived from `seed`: the same every run that shares
/// the seed (so tokens bound to the object survive a restart), formatted as the random (v4)
/// uids kube-apiserver gives.
pub fn derived_uid(seed: &[u8], kind: &str, namespace: &str, name: &str) -> String {
    let mut context = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for part in [seed, kind.as_bytes(), namespace.as_bytes(), name.as_bytes()] {
        // Length-prefixed, so ("a", "bc") and ("ab", "c") differ.
        context.update(&(part.len() as u64).to_be_bytes());
        context.update(part);
    }
    let digest = context.finish();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest.as_ref()[..16]);
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};

    #[test]
    fn a_file_is_created_once_and_read_back() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let state = StateDir::open(&tmp.path().join("state")).expect("open");
        let dir_mode = std::fs::metadata(state.path()).expect("meta").mode() & 0o777;
        assert_eq!(dir_mode, 0o700);
        let first = state
            .load_or_create("admin-token", || Ok(b"one".to_vec()))
            .expect("create");
        let second = state
            .load_or_create("admin-token", || Ok(b"two".to_vec()))
            .expect("read");
        assert_eq!(
            (first.as_slice(), second.as_slice()),
            (&b"one"[..], &b"one"[..])
        );
        let mode = std::fs::metadata(state.file("admin-token"))
            .expect("meta")
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        // No temporary files are left.
        let names: Vec<_> = std::fs::read_dir(state.path())
            .expect("ls")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["admin-token"]);
    }

    #[test]
    fn racing_creators_agree_on_one_content() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let state = StateDir::open(tmp.path()).expect("open");
        let results: Vec<Vec<u8>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|i| {
                    let state = &state;
                    scope.spawn(move || {
                        state
                            .load_or_create("uid-seed", || Ok(format!("seed-{i}").into_bytes()))
                            .expect("load")
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("join"))
                .collect()
        });
        assert!(results.windows(2).all(|w| w[0] == w[1]), "{results:?}");
    }

    #[test]
    fn insecure_or_empty_files_and_shared_directories_are_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let state = StateDir::open(tmp.path()).expect("open");
        let path = state.file("ca.pem");
        std::fs::write(&path, "pem").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = state
            .load_or_create("ca.pem", || Ok(b"new".to_vec()))
            .expect_err("readable by others");
        assert!(err.to_string().contains("mode 0644"), "{err}");
        std::fs::write(state.file("empty"), "").expect("write");
        std::fs::set_permissions(state.file("empty"), std::fs::Permissions::from_mode(0o600))
            .expect("chmod");
        let err = state
            .load_or_create("empty", || Ok(b"new".to_vec()))
            .expect_err("empty");
        assert!(err.to_string().contains("empty; remove it"), "{err}");

        let shared = tmp.path().join("shared");
        std::fs::create_dir(&shared).expect("mkdir");
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let err = StateDir::open(&shared).expect_err("shared");
        assert!(
            err.to_string().contains("writable by group or others"),
            "{err}"
        );
    }

    #[test]
    fn derived_uids_are_stable_distinct_and_uuid_shaped() {
        let uid = derived_uid(b"seed", "Pod", "default", "emulated-pod");
        assert_eq!(uid, derived_uid(b"seed", "Pod", "default", "emulated-pod"));
        assert_ne!(uid, derived_uid(b"other", "Pod", "default", "emulated-pod"));
        assert_ne!(
            uid,
            derived_uid(b"seed", "ServiceAccount", "default", "emulated-pod")
        );
        assert_ne!(
            derived_uid(b"seed", "Pod", "a", "bc"),
            derived_uid(b"seed", "Pod", "ab", "c")
        );
        let parsed = uuid::Uuid::parse_str(&uid).expect("a uuid");
        assert_eq!(parsed.get_version_num(), 4);
    }
}
