//! The user-visible links of a projected directory (`token -> ..data/token`, one per top-level
//! payload name): checking that each is exactly what the writer made, and putting back what
//! someone else changed.
//!
//! Nothing here follows an entry the writer did not make: links are read with readlink(2),
//! other entries classified with lstat(2), and a wrong entry is replaced by renaming a fresh link
//! over it, so a reader opening the name sees the old entry or the right link, never nothing.

use std::ffi::OsStr;
use std::fmt;
use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::{symlink, FileTypeExt};
use std::path::{Path, PathBuf};

use super::layout::{is_version_dir_name, DATA_DIR_NAME, NEW_LINK_NAME};
use super::write_error::{io_err, remove_any, WriteError};

/// What the writer found at a name it owns instead of what it had made there. Never holds
/// file contents: a link's target is a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// Nothing: the entry had been removed.
    Missing,
    /// A symbolic link to somewhere else (its target as read, never followed).
    Link(PathBuf),
    RegularFile,
    Directory,
    Fifo,
    Socket,
    Device,
    /// Files of the published version changed in place (written through a link); the refresher
    /// tells this apart, since only it knows the payload did not change.
    Modified,
}

impl Found {
    /// What is at `path` (never followed).
    pub fn at(path: &Path) -> std::io::Result<Self> {
        let file_type = fs::symlink_metadata(path)?.file_type();
        Ok(if file_type.is_symlink() {
            Found::Link(fs::read_link(path)?)
        } else {
            Found::of_type(file_type)
        })
    }

    /// What a non-link entry of this type is.
    fn of_type(file_type: fs::FileType) -> Self {
        if file_type.is_dir() {
            Found::Directory
        } else if file_type.is_fifo() {
            Found::Fifo
        } else if file_type.is_socket() {
            Found::Socket
        } else if file_type.is_block_device() || file_type.is_char_device() {
            Found::Device
        } else {
            Found::RegularFile
        }
    }

    /// A metric label: `missing`, `symlink`, `file`, `directory`, `fifo`, `socket`, `device` or
    /// `modified`.
    pub fn label(&self) -> &'static str {
        match self {
            Found::Missing => "missing",
            Found::Link(_) => "symlink",
            Found::RegularFile => "file",
            Found::Directory => "directory",
            Found::Fifo => "fifo",
            Found::Socket => "socket",
            Found::Device => "device",
            Found::Modified => "modified",
        }
    }
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Found::Missing => f.write_str("nothing (removed)"),
            Found::Link(target) => write!(f, "a symlink to {target:?}"),
            Found::RegularFile => f.write_str("a regular file"),
            Found::Directory => f.write_str("a directory"),
            Found::Fifo => f.write_str("a FIFO"),
            Found::Socket => f.write_str("a socket"),
            Found::Device => f.write_str("a device file"),
            Found::Modified => f.write_str("files changed in place"),
        }
    }
}

/// One entry found changed behind the writer's back, and put right.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repair {
    /// Relative to the target directory: a top-level payload name, or `..data`.
    pub name: String,
    pub found: Found,
}

/// The link the kubelet makes for a top-level name: `..data/<name>`, byte for byte.
fn link_target(name: &str) -> String {
    format!("{DATA_DIR_NAME}/{name}")
}

/// Makes `<name> -> ..data/<name>` true for every name (step 10, and its check when nothing is
/// written): creates a missing link, and replaces any other entry: a link elsewhere, a file, a
/// directory, a FIFO. A missing link of a name the `previous` version (the one published before)
/// holds was removed by someone: that and every replacement is pushed to `repairs`; a link
/// for a name new to the payload is not. Returns whether anything changed (for fsync).
///
/// One readlink(2) per name when all is well (what upstream's lstat costs).
pub(super) fn ensure_links<'a>(
    target: &Path,
    names: impl Iterator<Item = &'a String>,
    previous: Option<&Path>,
    repairs: &mut Vec<Repair>,
) -> Result<bool, WriteError> {
    let mut changed = false;
    for name in names {
        let link = target.join(name);
        let want = link_target(name);
        let found = match fs::read_link(&link) {
            Ok(dest) if dest.as_os_str() == OsStr::new(&want) => continue,
            Ok(dest) => Found::Link(dest),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                symlink(&want, &link).map_err(io_err("symlink", &link))?;
                changed = true;
                if previous.is_some_and(|old| fs::symlink_metadata(old.join(name)).is_ok()) {
                    repairs.push(Repair {
                        name: name.clone(),
                        found: Found::Missing,
                    });
                }
                continue;
            }
            // EINVAL: there is an entry, but not a link.
            Err(e) if e.kind() == ErrorKind::InvalidInput => {
                Found::at(&link).map_err(io_err("stat", &link))?
            }
            Err(e) => return Err(io_err("read link", &link)(e)),
        };
        replace_with_link(target, &link, &want)?;
        changed = true;
        repairs.push(Repair {
            name: name.clone(),
            found,
        });
    }
    Ok(changed)
}

/// Puts `link -> dest` in place of whatever `link` is, without following it: a fresh link is
/// renamed over it (atomic for anything but a directory, which rename(2) cannot replace by a
/// link and is removed first; a reader found no usable file there anyway).
fn replace_with_link(target: &Path, link: &Path, dest: &str) -> Result<(), WriteError> {
    let staging = target.join(NEW_LINK_NAME);
    remove_any(&staging)?;
    symlink(dest, &staging).map_err(io_err("symlink", &staging))?;
    let renamed = match fs::rename(&staging, link) {
        Err(e)
            if e.kind() == ErrorKind::IsADirectory || e.kind() == ErrorKind::DirectoryNotEmpty =>
        {
            // Does not follow links inside it (std's remove_dir_all is symlink-safe).
            fs::remove_dir_all(link)
                .map_err(io_err("remove directory", link))
                .and_then(|()| fs::rename(&staging, link).map_err(io_err("rename", &staging)))
        }
        other => other.map_err(io_err("rename", &staging)),
    };
    if renamed.is_err() {
        let _ = fs::remove_file(&staging);
    }
    renamed
}

/// Why a reader opening `path` (relative, e.g. `token` or `tokens/vault`) in `target` would not
/// read the published version's regular file; `None` when it would. For readiness: readlink and
/// lstat only, so nothing planted there can make it block.
pub fn visible_problem(target: &Path, path: &str) -> Option<String> {
    let top = path.split('/').next().unwrap_or(path);
    let link = target.join(top);
    let want = link_target(top);
    match fs::read_link(&link) {
        Ok(dest) if dest.as_os_str() == OsStr::new(&want) => {}
        Ok(dest) => return Some(format!("{top} is a symlink to {dest:?}, not to {want}")),
        Err(e) if e.kind() == ErrorKind::NotFound => return Some(format!("{top} is missing")),
        Err(e) if e.kind() == ErrorKind::InvalidInput => {
            let found = Found::at(&link)
                .map(|found| found.to_string())
                .unwrap_or_else(|e| format!("unreadable ({e})"));
            return Some(format!("{top} is {found}, not a symlink to {want}"));
        }
        Err(e) => return Some(format!("cannot read the link {top}: {e}")),
    }
    let data_link = target.join(DATA_DIR_NAME);
    let version = match fs::read_link(&data_link) {
        Ok(dest) => match dest.to_str().filter(|d| is_version_dir_name(d)) {
            Some(version) => version.to_owned(),
            None => {
                return Some(format!(
                    "{DATA_DIR_NAME} is a symlink to {dest:?}, not to a version directory"
                ))
            }
        },
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Some(format!("{DATA_DIR_NAME} is missing"))
        }
        Err(e) if e.kind() == ErrorKind::InvalidInput => {
            return Some(format!("{DATA_DIR_NAME} is not a symlink"))
        }
        Err(e) => return Some(format!("cannot read the link {DATA_DIR_NAME}: {e}")),
    };
    match Found::at(&target.join(&version).join(path)) {
        Ok(Found::RegularFile) => None,
        Ok(found) => Some(format!(
            "{path} in {version} is {found}, not a regular file"
        )),
        Err(e) => Some(format!("{path} in {version}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::projection::{AtomicWriter, FileProjection, Payload, WriterOptions};

    fn written(dir: &Path) {
        let mut payload = Payload::new();
        payload.insert(
            "token".into(),
            FileProjection {
                data: b"t".as_slice().into(),
                mode: 0o600,
                fs_user: None,
            },
        );
        let options = WriterOptions {
            fsync: false,
            fs_group: None,
        };
        AtomicWriter::new(dir, options).write(&payload).unwrap();
    }

    #[test]
    fn visible_problem_names_what_a_reader_would_get_instead() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        written(dir);
        assert_eq!(visible_problem(dir, "token"), None);

        fs::remove_file(dir.join("token")).unwrap();
        symlink("/etc/hostname", dir.join("token")).unwrap();
        assert_eq!(
            visible_problem(dir, "token").as_deref(),
            Some("token is a symlink to \"/etc/hostname\", not to ..data/token")
        );
        fs::remove_file(dir.join("token")).unwrap();
        assert_eq!(
            visible_problem(dir, "token").as_deref(),
            Some("token is missing")
        );
        let mode = rustix::fs::Mode::from_bits_truncate(0o600);
        rustix::fs::mknodat(
            rustix::fs::CWD,
            dir.join("token"),
            rustix::fs::FileType::Fifo,
            mode,
            0,
        )
        .unwrap();
        assert_eq!(
            visible_problem(dir, "token").as_deref(),
            Some("token is a FIFO, not a symlink to ..data/token")
        );
        fs::remove_file(dir.join("token")).unwrap();
        symlink("..data/token", dir.join("token")).unwrap();
        fs::remove_file(dir.join(DATA_DIR_NAME)).unwrap();
        assert_eq!(
            visible_problem(dir, "token").as_deref(),
            Some("..data is missing")
        );
    }

    #[test]
    fn labels_and_descriptions() {
        assert_eq!(Found::Link("/x".into()).label(), "symlink");
        assert_eq!(Found::Link("/x".into()).to_string(), "a symlink to \"/x\"");
        assert_eq!(Found::Missing.label(), "missing");
        assert_eq!(Found::Fifo.to_string(), "a FIFO");
    }
}
