//! Files the product keeps or hands out outside projected volumes (the admin token, the admin
//! client key, `--ca-out`, the audit log), written so that a file or link someone else planted
//! at the path is never written through, and secrets read back only from the user's own
//! private files.
//!
//! The threat is another local user of a shared directory such as `/tmp`: a link planted at a
//! predictable path would make us overwrite any file we can write (as root, any file), and a
//! file planted there would be read back as our secret while its owner can read it too.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use rustix::fs::OFlags;

/// Why a path cannot hold one of our files. Each names what was found and what to do.
#[derive(Debug, thiserror::Error)]
pub enum PrivateFileError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("is not a regular file ({found}); remove it or choose another path")]
    NotRegular { found: &'static str },
    #[error("is a symbolic link; give the path of a regular file")]
    Link,
    #[error("is owned by uid {owner}, not by this user (uid {user}); remove it or choose a path you own")]
    NotOwned { owner: u32, user: u32 },
    #[error("is readable or writable by group or others (mode {mode:04o}); run `chmod 600` on it or remove it")]
    NotPrivate { mode: u32 },
    #[error("is a directory writable by group or others (mode {mode:04o}); use a directory only you can write (chmod 700)")]
    SharedDirectory { mode: u32 },
    #[error("already exists (a file or link someone else may have planted); remove it or choose another path")]
    Exists,
}

fn no_follow() -> i32 {
    // O_NOFOLLOW: a link at the path fails the open (ELOOP) instead of being followed.
    OFlags::NOFOLLOW.bits() as i32
}

fn file_type_name(metadata: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt as _;
    let kind = metadata.file_type();
    if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_block_device() || kind.is_char_device() {
        "a device"
    } else if kind.is_symlink() {
        "a symbolic link"
    } else {
        "a regular file"
    }
}

/// A file of ours must be a regular file this user owns.
fn check_own_regular(metadata: &std::fs::Metadata) -> Result<(), PrivateFileError> {
    if !metadata.is_file() {
        return Err(PrivateFileError::NotRegular {
            found: file_type_name(metadata),
        });
    }
    let user = rustix::process::geteuid().as_raw();
    if metadata.uid() != user {
        return Err(PrivateFileError::NotOwned {
            owner: metadata.uid(),
            user,
        });
    }
    Ok(())
}

/// A secret file of ours may be read back only if it is a regular file of this user that
/// nobody else can read or write.
fn check_private(metadata: &std::fs::Metadata) -> Result<(), PrivateFileError> {
    check_own_regular(metadata)?;
    let mode = metadata.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(PrivateFileError::NotPrivate { mode });
    }
    Ok(())
}

/// Reads a secret file of ours: `None` when nothing is at `path`. The file is opened without
/// blocking (a FIFO cannot hang us) and checked through the open descriptor, so what is
/// checked is what is read. A link is followed: what it leads to must pass the checks.
pub fn read_private(path: &Path) -> Result<Option<Vec<u8>>, PrivateFileError> {
    let mut file = match OpenOptions::new()
        .read(true)
        .custom_flags(OFlags::NONBLOCK.bits() as i32)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // A dangling link is not "nothing": creating the file would create its target.
            return match std::fs::symlink_metadata(path) {
                Ok(_) => Err(PrivateFileError::Link),
                Err(_) => Ok(None),
            };
        }
        Err(e) => return Err(e.into()),
    };
    check_private(&file.metadata()?)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(Some(bytes))
}

/// Creates `path` with mode 0600 and writes `bytes`; fails if anything (a file, a link, even a
/// dangling one) is already there, so nothing planted is written through.
pub fn create_private(path: &Path, bytes: &[u8]) -> Result<(), PrivateFileError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(no_follow())
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => PrivateFileError::Exists,
            _ => PrivateFileError::Io(e),
        })?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(())
}

/// Replaces whatever is at `path` with a file of `mode` holding `bytes`: written to a new
/// temporary file beside it (created exclusively, mode 0600 until complete) and renamed over
/// the path. A rename replaces a link at the path instead of following it, and readers see the
/// old file or the new one, never a part.
pub fn replace_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), PrivateFileError> {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut file = tempfile::Builder::new()
        .prefix(".projected-token-")
        .tempfile_in(dir)?;
    file.write_all(bytes)?;
    file.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Makes sure `dir` is a directory only this user can write: created with mode 0700 (parents
/// too) when missing; an existing one must be ours (or root's, as `/`) and not writable by
/// group or others, since whoever can write a directory can swap the files in it.
pub fn ensure_private_dir(dir: &Path) -> Result<(), PrivateFileError> {
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
            Ok(())
        }
        Err(e) => Err(e.into()),
        Ok(_) => {
            // A link to a directory is fine if what it leads to passes.
            let metadata = std::fs::metadata(dir)?;
            if !metadata.is_dir() {
                return Err(PrivateFileError::NotRegular {
                    found: file_type_name(&metadata),
                });
            }
            let user = rustix::process::geteuid().as_raw();
            if metadata.uid() != user && metadata.uid() != 0 {
                return Err(PrivateFileError::NotOwned {
                    owner: metadata.uid(),
                    user,
                });
            }
            let mode = metadata.mode() & 0o7777;
            if mode & 0o022 != 0 {
                return Err(PrivateFileError::SharedDirectory { mode });
            }
            Ok(())
        }
    }
}

/// Opens `path` for appending (created with mode 0600 if missing). A link at the path is
/// refused, and an existing file must be this user's regular file: a log that someone else
/// owns would let them read what we write.
pub fn open_append(path: &Path) -> Result<File, PrivateFileError> {
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(no_follow() | OFlags::NONBLOCK.bits() as i32)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
                PrivateFileError::Link
            } else {
                PrivateFileError::Io(e)
            }
        })?;
    check_own_regular(&file.metadata()?)?;
    Ok(file)
}

/// A directory of our own for secrets of one run (mode 0700, a random name, in
/// `$XDG_RUNTIME_DIR` when set, else the temporary directory), removed when dropped. Its name
/// carries our pid, so a later run removes the ones left by a process killed with SIGKILL.
#[derive(Debug)]
pub struct RunDirectory {
    dir: tempfile::TempDir,
}

const RUN_DIRECTORY_PREFIX: &str = "projected-token-";

impl RunDirectory {
    pub fn create() -> Result<Self, PrivateFileError> {
        let parent = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|dir| dir.is_absolute() && dir.is_dir())
            .unwrap_or_else(std::env::temp_dir);
        remove_orphaned_run_directories(&parent);
        // Created exclusively under a random name; the mode is given at creation (tempfile's
        // default for directories follows the umask).
        let dir = tempfile::Builder::new()
            .prefix(&format!("{RUN_DIRECTORY_PREFIX}{}-", std::process::id()))
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir_in(parent)?;
        Ok(Self { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// The pid a run directory's name carries, if `name` is one.
fn run_directory_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(RUN_DIRECTORY_PREFIX)?;
    let (pid, random) = rest.split_once('-')?;
    if random.is_empty() {
        return None;
    }
    pid.parse().ok()
}

/// Removes run directories of this user whose process is gone.
fn remove_orphaned_run_directories(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    let user = rustix::process::geteuid().as_raw();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(run_directory_pid) else {
            continue;
        };
        // Not through links, and only our own directories.
        let ours = entry
            .metadata()
            .is_ok_and(|m| m.is_dir() && m.uid() == user);
        if ours && !process_alive(pid) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn process_alive(pid: u32) -> bool {
    i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .is_some_and(|pid| {
            // EPERM: alive but someone else's.
            !matches!(
                rustix::process::test_kill_process(pid),
                Err(rustix::io::Errno::SRCH)
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt as _};

    fn mode_of(path: &Path) -> u32 {
        std::fs::metadata(path).expect("metadata").mode() & 0o777
    }

    #[test]
    fn create_private_never_writes_through_a_link_or_a_file() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, "keep").expect("write");
        let link = tmp.path().join("link");
        symlink(&victim, &link).expect("symlink");
        let dangling = tmp.path().join("dangling");
        symlink(tmp.path().join("nowhere"), &dangling).expect("symlink");
        for path in [&link, &victim, &dangling] {
            assert!(matches!(
                create_private(path, b"secret"),
                Err(PrivateFileError::Exists)
            ));
        }
        assert_eq!(std::fs::read_to_string(&victim).expect("read"), "keep");
        assert!(!tmp.path().join("nowhere").exists());
        let fresh = tmp.path().join("fresh");
        create_private(&fresh, b"secret").expect("create");
        assert_eq!(mode_of(&fresh), 0o600);
        assert_eq!(std::fs::read(&fresh).expect("read"), b"secret");
    }

    #[test]
    fn read_private_checks_what_it_reads() {
        let tmp = tempfile::tempdir().expect("tempdir");
        assert!(read_private(&tmp.path().join("none"))
            .expect("absent")
            .is_none());
        let own = tmp.path().join("own");
        create_private(&own, b"s3cret").expect("create");
        assert_eq!(
            read_private(&own).expect("read").as_deref(),
            Some(&b"s3cret"[..])
        );
        // A link to our own private file is fine; a dangling one is not "absent".
        let link = tmp.path().join("link");
        symlink(&own, &link).expect("symlink");
        assert!(read_private(&link).expect("read").is_some());
        let dangling = tmp.path().join("dangling");
        symlink(tmp.path().join("nowhere"), &dangling).expect("symlink");
        assert!(matches!(
            read_private(&dangling),
            Err(PrivateFileError::Link)
        ));
        let shared = tmp.path().join("shared");
        std::fs::write(&shared, "x").expect("write");
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(matches!(
            read_private(&shared),
            Err(PrivateFileError::NotPrivate { mode: 0o644 })
        ));
        let fifo = tmp.path().join("fifo");
        rustix::fs::mkfifoat(rustix::fs::CWD, &fifo, rustix::fs::Mode::from(0o600))
            .expect("mkfifo");
        assert!(matches!(
            read_private(&fifo),
            Err(PrivateFileError::NotRegular { found: "a FIFO" })
        ));
    }

    #[test]
    fn replace_file_replaces_a_link_instead_of_following_it() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, "keep").expect("write");
        let path = tmp.path().join("ca.crt");
        symlink(&victim, &path).expect("symlink");
        replace_file(&path, b"cert", 0o644).expect("replace");
        assert_eq!(std::fs::read_to_string(&victim).expect("read"), "keep");
        assert!(std::fs::symlink_metadata(&path).expect("meta").is_file());
        assert_eq!(std::fs::read(&path).expect("read"), b"cert");
        assert_eq!(mode_of(&path), 0o644);
    }

    #[test]
    fn open_append_refuses_links() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, "keep").expect("write");
        let link = tmp.path().join("audit.log");
        symlink(&victim, &link).expect("symlink");
        assert!(matches!(open_append(&link), Err(PrivateFileError::Link)));
        let log = tmp.path().join("real.log");
        open_append(&log).expect("open");
        assert_eq!(mode_of(&log), 0o600);
    }

    #[test]
    fn private_directories_are_created_0700_and_shared_ones_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let nested = tmp.path().join("a/b");
        ensure_private_dir(&nested).expect("create");
        assert_eq!(mode_of(&nested), 0o700);
        ensure_private_dir(&nested).expect("an existing private directory");
        let shared = tmp.path().join("shared");
        std::fs::create_dir(&shared).expect("mkdir");
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        assert!(matches!(
            ensure_private_dir(&shared),
            Err(PrivateFileError::SharedDirectory { mode: 0o777 })
        ));
    }

    #[test]
    fn run_directories_are_private_and_orphans_removed() {
        let run = RunDirectory::create().expect("create");
        assert_eq!(mode_of(run.path()), 0o700);
        let name = run
            .path()
            .file_name()
            .and_then(|n| n.to_str())
            .expect("name");
        assert_eq!(run_directory_pid(name), Some(std::process::id()));
        assert_eq!(run_directory_pid("projected-token-12-"), None);
        assert_eq!(run_directory_pid("projected-token-x-abc"), None);

        let parent = tempfile::tempdir().expect("tempdir");
        // A pid above the kernel's maximum (4194304) can never be alive.
        let dead = parent.path().join("projected-token-4194399-abc");
        let live = parent
            .path()
            .join(format!("projected-token-{}-abc", std::process::id()));
        let other = parent.path().join("projected-token-notes");
        for dir in [&dead, &live, &other] {
            std::fs::create_dir(dir).expect("mkdir");
        }
        remove_orphaned_run_directories(parent.path());
        assert!(!dead.exists(), "a dead process's directory is removed");
        assert!(live.exists(), "a live process's directory is kept");
        assert!(other.exists(), "other entries are left alone");
    }
}
