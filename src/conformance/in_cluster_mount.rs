//! A client process that sees a scenario's projected volume where in-cluster clients look for it,
//! `/var/run/secrets/kubernetes.io/serviceaccount`, without touching that path for anyone else:
//! the child gets a mount namespace of its own (and, when we are not root, a user namespace that
//! maps our uid and gid to themselves), in which a tmpfs covers the nearest existing directory on
//! the way to that path, the missing directories are made in it, and the volume is bind-mounted
//! at the end. Mounts in the namespace are private, so nothing reaches the host, and several
//! clients run side by side, each with its own volume.
//!
//! Everything the child does between fork and exec is a system call on strings prepared before
//! the fork: no allocation, no lock (the parent is multi-threaded).

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};
use rustix::mount::{MountFlags, MountPropagationFlags};
use rustix::thread::UnshareFlags;

/// Where in-cluster clients read their token, `ca.crt` and `namespace`.
pub const IN_CLUSTER_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Why a mount could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("volume directory {}: {source}", path.display())]
    Volume { path: PathBuf, source: io::Error },
    #[error("{path:?}: a path with a NUL byte")]
    Nul { path: String },
    #[error("no directory on the way to {IN_CLUSTER_DIR} exists to mount over")]
    NoBase,
}

/// Everything the child needs, as C strings made before the fork.
#[derive(Debug, Clone)]
pub struct InClusterMount {
    /// Not root: a user namespace is needed for the mount namespace.
    unprivileged: Option<IdMaps>,
    /// The existing directory the tmpfs covers.
    base: CString,
    /// Directories to make inside the tmpfs, outermost first; the last is the mount point.
    to_make: Vec<CString>,
    source: CString,
    target: CString,
}

#[derive(Debug, Clone)]
struct IdMaps {
    uid_map: CString,
    gid_map: CString,
}

fn c_path(path: &Path) -> Result<CString, MountError> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| MountError::Nul {
        path: path.display().to_string(),
    })
}

impl InClusterMount {
    /// Prepares a mount of `volume_dir` at [`IN_CLUSTER_DIR`] (the directory must exist).
    pub fn new(volume_dir: &Path) -> Result<Self, MountError> {
        let source = std::fs::canonicalize(volume_dir).map_err(|source| MountError::Volume {
            path: volume_dir.to_owned(),
            source,
        })?;
        // The nearest existing directory on the way, links resolved (`/var/run` is often
        // `/run`); never `/` itself, which the tmpfs would hide entirely.
        let mut missing: Vec<&std::ffi::OsStr> = Vec::new();
        let mut base = Path::new(IN_CLUSTER_DIR);
        let resolved_base = loop {
            match std::fs::canonicalize(base) {
                Ok(resolved) if resolved.is_dir() && resolved != Path::new("/") => break resolved,
                _ => {}
            }
            match (base.parent(), base.file_name()) {
                (Some(parent), Some(name)) if parent != Path::new("/") => {
                    missing.push(name);
                    base = parent;
                }
                _ => return Err(MountError::NoBase),
            }
        };
        missing.reverse();
        let mut to_make = Vec::new();
        let mut at = resolved_base.clone();
        for name in missing {
            at.push(name);
            to_make.push(c_path(&at)?);
        }
        let unprivileged = (!rustix::process::geteuid().is_root()).then(|| {
            let uid = rustix::process::getuid().as_raw();
            let gid = rustix::process::getgid().as_raw();
            IdMaps {
                uid_map: CString::new(format!("{uid} {uid} 1\n")).unwrap_or_default(),
                gid_map: CString::new(format!("{gid} {gid} 1\n")).unwrap_or_default(),
            }
        });
        Ok(Self {
            unprivileged,
            base: c_path(&resolved_base)?,
            to_make,
            source: c_path(&source)?,
            target: c_path(&at)?,
        })
    }

    /// Makes `command` run in a mount namespace of its own with the volume at
    /// [`IN_CLUSTER_DIR`]. Spawning fails with the system's error where namespaces are not
    /// allowed (not root and no unprivileged user namespaces).
    pub fn apply(self, command: &mut std::process::Command) {
        use std::os::unix::process::CommandExt as _;
        // SAFETY: the closure runs in the child between fork and exec; it only makes system
        // calls on strings allocated before the fork, and allocates nothing itself.
        unsafe {
            command.pre_exec(move || self.enter().map_err(io::Error::from));
        }
    }

    /// In the child: the namespaces, then the mounts.
    fn enter(&self) -> rustix::io::Result<()> {
        let mut flags = UnshareFlags::NEWNS;
        if self.unprivileged.is_some() {
            flags |= UnshareFlags::NEWUSER;
        }
        // SAFETY: a fresh single-threaded child; it shares no file table or fs state with a
        // thread that could be confused by the change.
        unsafe { rustix::thread::unshare_unsafe(flags)? };
        if let Some(maps) = &self.unprivileged {
            write_file(c"/proc/self/setgroups", c"deny")?;
            write_file(c"/proc/self/uid_map", &maps.uid_map)?;
            write_file(c"/proc/self/gid_map", &maps.gid_map)?;
        }
        rustix::mount::mount_change(
            c"/",
            MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
        )?;
        rustix::mount::mount(
            c"tmpfs",
            self.base.as_c_str(),
            c"tmpfs",
            MountFlags::NOSUID | MountFlags::NODEV,
            c"mode=0755",
        )?;
        for dir in &self.to_make {
            rustix::fs::mkdir(dir.as_c_str(), Mode::from_raw_mode(0o755))?;
        }
        rustix::mount::mount_bind(self.source.as_c_str(), self.target.as_c_str())
    }
}

fn write_file(path: &std::ffi::CStr, text: &std::ffi::CStr) -> rustix::io::Result<()> {
    let fd = rustix::fs::open(path, OFlags::WRONLY | OFlags::CLOEXEC, Mode::empty())?;
    let bytes = text.to_bytes();
    let written = rustix::io::write(&fd, bytes)?;
    if written == bytes.len() {
        Ok(())
    } else {
        Err(rustix::io::Errno::IO)
    }
}
