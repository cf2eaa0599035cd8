//! The kubelet's atomic writer (`pkg/volume/util/atomic_writer.go`).
//!
//! Layout of a target directory:
//!
//! ```text
//! <dir>/..2026_01_02_15_04_05.1234567890/   real files (directory mode 0755)
//! <dir>/..data -> ..2026_01_02_15_04_05.1234567890
//! <dir>/token  -> ..data/token               one link per top-level name of the payload
//! ```
//!
//! A new version is built in a fresh hidden directory and published by renaming a staging link
//! over `..data`, so readers going through the user-visible names see the old or the new set of
//! files, never a mix. Names starting with `..` are reserved for the writer.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, ErrorKind, Read, Write};
use std::os::unix::fs::{fchown, lchown, symlink, DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::layout::NEW_LINK_NAME;
pub use super::layout::{is_version_dir_name, DATA_DIR_NAME, NEW_DATA_DIR_NAME};
use super::links::{ensure_links, Found, Repair};
use super::paths::{clean_path, validate_path};
use super::payload::{FileProjection, Payload};
pub use super::write_error::WriteError;
use super::write_error::{io_err, remove_any};

/// Version directories must be traversable by group and other whatever the umask (upstream).
const VERSION_DIR_MODE: u32 = 0o755;
/// Go's `os.MkdirTemp` gives up after this many name collisions.
const MAX_VERSION_DIR_ATTEMPTS: u32 = 10_000;
/// fsGroup on a read-only volume: group (and owner) may read files (`SetVolumeOwnership`).
const FS_GROUP_FILE_MASK: u32 = 0o440;
/// fsGroup on directories: read and traverse for owner and group, setgid so new entries inherit.
const FS_GROUP_DIR_MASK: u32 = 0o2000 | 0o440 | 0o110;

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
    /// Names (relative to the target directory) that were removed.
    pub removed: Vec<String>,
    /// What was wrong with `..data` when someone else changed it (removed or replaced it, or
    /// pointed it elsewhere); crash leftovers are in `removed` only.
    pub repairs: Vec<Repair>,
}

/// Writes payloads into one target directory, kubelet style. Not safe for concurrent writers to the
/// same directory (neither is upstream's): the caller serialises.
#[derive(Debug, Clone)]
pub struct AtomicWriter {
    target_dir: PathBuf,
    options: WriterOptions,
}

/// A validated payload keyed by cleaned path.
type CleanPayload<'a> = BTreeMap<String, &'a FileProjection>;

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

    pub fn options(&self) -> WriterOptions {
        self.options
    }

    /// Changes how later writes treat durability and ownership (the same directory).
    pub fn set_options(&mut self, options: WriterOptions) {
        self.options = options;
    }

    /// Creates the target directory if missing and cleans what a crash (or someone else) left
    /// behind.
    ///
    /// Removes the staging links `..data_tmp` and `..link_tmp`, version directories `..data`
    /// does not point to, a `..data` that is dangling, points outside or is not a link at all
    /// (the name is the writer's), and user-visible links into `..data` whose name the current
    /// version lacks. Other entries are left alone: the payload's names are put right by the
    /// next [`AtomicWriter::write`], which knows them (a missing link is created there too).
    pub fn recover(&self) -> Result<RecoveryReport, WriteError> {
        let target = self.target_dir.as_path();
        let mut report = RecoveryReport::default();

        match fs::metadata(target) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(WriteError::Io {
                    op: "use as target directory",
                    path: target.to_path_buf(),
                    source: io::Error::from(ErrorKind::NotADirectory),
                })
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                fs::create_dir_all(target).map_err(io_err("create directory", target))?;
                // Other users (the app) must traverse it whatever our umask.
                fs::set_permissions(target, Permissions::from_mode(VERSION_DIR_MODE))
                    .map_err(io_err("chmod", target))?;
            }
            Err(e) => return Err(io_err("stat", target)(e)),
        }

        // A write that died between steps 8 and 9 left a staging link that was never published;
        // one that died while replacing a wrong user-visible entry left its new link.
        for staging in [NEW_DATA_DIR_NAME, NEW_LINK_NAME] {
            if remove_any(&target.join(staging))? {
                report.removed.push(staging.to_owned());
            }
        }

        let data_link = target.join(DATA_DIR_NAME);
        let current = match fs::read_link(&data_link) {
            Ok(dest) => {
                let name = dest.to_str().filter(|n| is_version_dir_name(n));
                let live = name.filter(|n| {
                    fs::symlink_metadata(target.join(n)).is_ok_and(|m| m.file_type().is_dir())
                });
                match live {
                    Some(name) => Some(name.to_owned()),
                    None => {
                        // Dangling or foreign: nothing reachable through it, so a fresh write
                        // will publish a full version. Removing a link loses no data.
                        remove_any(&data_link)?;
                        report.removed.push(DATA_DIR_NAME.to_owned());
                        report.repairs.push(Repair {
                            name: DATA_DIR_NAME.to_owned(),
                            found: Found::Link(dest),
                        });
                        None
                    }
                }
            }
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            // Not a link: a directory, file or FIFO someone put under the writer's reserved
            // name. Readers cannot use it; a fresh write replaces it.
            Err(e) if e.kind() == ErrorKind::InvalidInput => {
                let found = Found::at(&data_link).map_err(io_err("stat", &data_link))?;
                remove_any(&data_link)?;
                report.removed.push(DATA_DIR_NAME.to_owned());
                report.repairs.push(Repair {
                    name: DATA_DIR_NAME.to_owned(),
                    found,
                });
                None
            }
            Err(e) => return Err(io_err("read link", &data_link)(e)),
        };
        // Links into `..data` exist only once a version was published: finding one without
        // `..data` means someone removed it (the writer only ever renames over it).
        let mut data_link_removed = false;

        for (name, file_type) in list_dir(target)? {
            let path = target.join(&name);
            if name.starts_with("..") {
                // Versions a crash left unpublished, or that step 12 did not get to remove.
                if file_type.is_dir()
                    && is_version_dir_name(&name)
                    && Some(&name) != current.as_ref()
                {
                    fs::remove_dir_all(&path).map_err(io_err("remove directory", &path))?;
                    report.removed.push(name);
                }
                continue;
            }
            if !file_type.is_symlink() {
                continue;
            }
            let dest = fs::read_link(&path).map_err(io_err("read link", &path))?;
            let Some(rest) = dest
                .to_str()
                .and_then(|d| d.strip_prefix(DATA_DIR_NAME))
                .and_then(|d| d.strip_prefix('/'))
            else {
                continue;
            };
            let still_there = current
                .as_ref()
                .is_some_and(|cur| fs::symlink_metadata(target.join(cur).join(rest)).is_ok());
            if !still_there {
                fs::remove_file(&path).map_err(io_err("remove link", &path))?;
                report.removed.push(name);
            }
            data_link_removed |= current.is_none() && report.repairs.is_empty();
        }
        if data_link_removed {
            report.repairs.push(Repair {
                name: DATA_DIR_NAME.to_owned(),
                found: Found::Missing,
            });
        }

        if self.options.fsync && !report.removed.is_empty() {
            sync_dir(target)?;
        }
        Ok(report)
    }

    /// Publishes `payload` as the new version of the directory.
    ///
    /// Step numbers follow upstream's comments. Until step 9 nothing visible changes and any
    /// failure removes what was created; after it the new version is live and a failure only
    /// means cleanup (user-visible links, the old version) is incomplete, which the next write or
    /// `recover` finishes.
    pub fn write(&self, payload: &Payload) -> Result<WriteOutcome, WriteError> {
        self.write_and_repair(payload, &mut Vec::new())
    }

    /// [`AtomicWriter::write`], which also puts every user-visible link of the payload right
    /// (step 10, also when nothing is published) and pushes what it found wrong to `repairs`,
    /// also when the write fails afterwards. A link anywhere but `..data/<name>` or an entry that
    /// is not a link at all is replaced, never followed or written through.
    ///
    /// Upstream only creates missing links, so a link someone pointed elsewhere stays for good.
    pub fn write_and_repair(
        &self,
        payload: &Payload,
        repairs: &mut Vec<Repair>,
    ) -> Result<WriteOutcome, WriteError> {
        let target = self.target_dir.as_path();

        // (1) Validate every path before touching the disk, so a bad key can never leave a
        // half-built version behind.
        let clean = validate_payload(payload)?;

        // (2) The current version, if any. Read before comparing: steps 3 and 4 work on it.
        let data_link = target.join(DATA_DIR_NAME);
        let old_version = self.read_data_link(&data_link)?;

        let (to_remove, changed) = match &old_version {
            Some(old) => {
                let old_path = target.join(old);
                // (3) Paths of the old version the new payload lacks, so step 11 can remove
                // their user-visible links after the swap.
                let to_remove = paths_to_remove(&clean, &old_path)?;
                // (4) Byte comparison only (as upstream: a mode change alone does not rewrite).
                let changed = payload_changed(&clean, &old_path)?;
                (to_remove, changed)
            }
            None => (BTreeSet::new(), true),
        };
        if !changed && to_remove.is_empty() {
            // Nothing to publish, but a user-visible link someone deleted (upstream fix for
            // issue #121472) or changed is still put right (step 10).
            let old_path = old_version.as_ref().map(|old| target.join(old));
            let fixed = ensure_links(
                target,
                top_level_names(&clean).iter(),
                old_path.as_deref(),
                repairs,
            )?;
            if self.options.fsync && fixed {
                sync_dir(target)?;
            }
            return Ok(WriteOutcome::Unchanged);
        }

        // (5) A fresh private directory: readers cannot reach it until step 9.
        let (version, version_path) = self.new_version_dir()?;

        // (6) + (7) Files with exact modes and owners, then fsGroup, then fsync, all before
        // publication so no reader ever sees a file with the wrong content or permissions.
        if let Err(e) = self.fill_version(&clean, &version_path) {
            let _ = fs::remove_dir_all(&version_path);
            return Err(e);
        }

        // (8) Stage the new `..data` next to it. A stale `..data_tmp` from a crash between 8 and
        // 9 would make symlink() fail on every write (upstream's behaviour), so drop it first;
        // it was never published, so nothing reads through it.
        let tmp_link = target.join(NEW_DATA_DIR_NAME);
        let staged = remove_any(&tmp_link)
            .and_then(|_| symlink(&version, &tmp_link).map_err(io_err("symlink", &tmp_link)));
        if let Err(e) = staged {
            let _ = fs::remove_dir_all(&version_path);
            return Err(e);
        }

        // (9) The atomic step: rename(2) replaces `..data` in one operation, so a reader
        // resolves either the old or the new version, never a mix.
        if let Err(e) = fs::rename(&tmp_link, &data_link) {
            let _ = fs::remove_file(&tmp_link);
            let _ = fs::remove_dir_all(&version_path);
            return Err(io_err("rename", &tmp_link)(e));
        }
        // From here on the new version is live: run every remaining step and report the first
        // failure, rather than stopping half way (upstream returns at the first).
        let mut first_error: Option<WriteError> = None;
        let mut note = |r: Result<(), WriteError>| {
            if let Err(e) = r {
                first_error.get_or_insert(e);
            }
        };
        if self.options.fsync {
            // Makes the rename (and the new directory's entry) durable.
            note(sync_dir(target));
        }

        // (10) Links for new top-level names. After the swap so they never dangle; correct
        // links are content-independent and stay as they are, wrong ones are replaced. The old
        // version still exists: a name it holds whose link is missing was removed by someone.
        let old_path = old_version.as_ref().map(|old| target.join(old));
        let fixed = ensure_links(
            target,
            top_level_names(&clean).iter(),
            old_path.as_deref(),
            repairs,
        );
        let fixed_any = matches!(fixed, Ok(true));
        note(fixed.map(drop));
        if self.options.fsync && fixed_any {
            note(sync_dir(target));
        }

        // (11) Top-level names that left the payload; before this they dangled briefly.
        note(remove_user_visible_links(target, &to_remove));

        // (12) The previous version: no link points into it any more.
        if let Some(old) = &old_version {
            let old_path = target.join(old);
            note(match fs::remove_dir_all(&old_path) {
                Err(e) if e.kind() != ErrorKind::NotFound => {
                    Err(io_err("remove directory", &old_path)(e))
                }
                _ => Ok(()),
            });
        }

        match first_error {
            Some(e) => Err(e),
            None => Ok(WriteOutcome::Written { data_dir: version }),
        }
    }

    /// Step 2: the version `..data` points to; `None` when there is no `..data` yet.
    fn read_data_link(&self, data_link: &Path) -> Result<Option<String>, WriteError> {
        match fs::read_link(data_link) {
            Ok(dest) => match dest.to_str() {
                Some(name) if is_version_dir_name(name) => Ok(Some(name.to_owned())),
                // Never compare against, or delete (step 12), something outside the target.
                _ => Err(WriteError::UnexpectedDataLink {
                    path: data_link.to_path_buf(),
                    target: dest,
                }),
            },
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("read link", data_link)(e)),
        }
    }

    /// Step 5: `..` + UTC `YYYY_MM_DD_HH_MM_SS` + `.` + random u32, as Go's `os.MkdirTemp` names it.
    fn new_version_dir(&self) -> Result<(String, PathBuf), WriteError> {
        let stamp = jiff::Timestamp::now()
            .strftime("%Y_%m_%d_%H_%M_%S")
            .to_string();
        let mut last_path = self.target_dir.clone();
        for _ in 0..MAX_VERSION_DIR_ATTEMPTS {
            let name = format!("..{stamp}.{}", fastrand::u32(..));
            let path = self.target_dir.join(&name);
            // Private while being filled (as MkdirTemp), opened up right after.
            match DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => {
                    if let Err(e) =
                        fs::set_permissions(&path, Permissions::from_mode(VERSION_DIR_MODE))
                    {
                        let _ = fs::remove_dir(&path);
                        return Err(io_err("chmod", &path)(e));
                    }
                    return Ok((name, path));
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => last_path = path,
                Err(e) => return Err(io_err("create directory", &path)(e)),
            }
        }
        Err(io_err("create directory", &last_path)(io::Error::from(
            ErrorKind::AlreadyExists,
        )))
    }

    /// Steps 6 and 7 (and the fsyncs that must precede publication) inside the new version.
    fn fill_version(
        &self,
        clean: &CleanPayload<'_>,
        version_path: &Path,
    ) -> Result<(), WriteError> {
        // Handles stay open until the fsync pass: reopening a file of mode 0200 or 0000 for
        // fsync would fail for a non-root writer.
        let mut files: Vec<(PathBuf, File)> = Vec::with_capacity(clean.len());
        // Parents before children; the version directory itself first.
        let mut dirs: Vec<PathBuf> = vec![version_path.to_path_buf()];

        // (6)
        for (rel, projection) in clean {
            let mut dir = version_path.to_path_buf();
            let mut parts: Vec<&str> = rel.split('/').collect();
            parts.pop();
            for part in parts {
                dir.push(part);
                match DirBuilder::new().mode(VERSION_DIR_MODE).create(&dir) {
                    Ok(()) => {
                        // Nested paths must be reachable by the app whatever our umask. (Upstream
                        // leaves these to the umask; the kubelet's 022 gives the same 0755.)
                        fs::set_permissions(&dir, Permissions::from_mode(VERSION_DIR_MODE))
                            .map_err(io_err("chmod", &dir))?;
                        dirs.push(dir.clone());
                    }
                    Err(e)
                        if e.kind() == ErrorKind::AlreadyExists
                            && fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) => {}
                    Err(e) => return Err(io_err("create directory", &dir)(e)),
                }
            }

            let path = version_path.join(rel);
            let mode = projection.mode & 0o7777;
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&path)
                .map_err(io_err("create file", &path))?;
            file.write_all(&projection.data)
                .map_err(io_err("write", &path))?;
            if let Some(uid) = projection.fs_user {
                fchown(&file, Some(uid), None).map_err(|source| WriteError::Ownership {
                    path: path.clone(),
                    kind: "owner",
                    id: uid,
                    setting: "runAsUser",
                    source,
                })?;
            }
            // open(2) applied the umask; chmod sets exactly the requested bits. After chown,
            // which may clear set-id bits.
            file.set_permissions(Permissions::from_mode(mode))
                .map_err(io_err("chmod", &path))?;
            files.push((path, file));
        }

        // (7) fsGroup before publication (upstream PR #114464; it used to run after the swap and
        // readers could briefly see files their group could not read).
        if let Some(gid) = self.options.fs_group {
            let ownership = |path: &Path, source| WriteError::Ownership {
                path: path.to_path_buf(),
                kind: "group",
                id: gid,
                setting: "fsGroup",
                source,
            };
            for dir in &dirs {
                lchown(dir, None, Some(gid)).map_err(|e| ownership(dir, e))?;
                fs::set_permissions(
                    dir,
                    Permissions::from_mode(VERSION_DIR_MODE | FS_GROUP_DIR_MASK),
                )
                .map_err(io_err("chmod", dir))?;
            }
            for (path, file) in &files {
                fchown(file, None, Some(gid)).map_err(|e| ownership(path, e))?;
                let mode = file
                    .metadata()
                    .map_err(io_err("stat", path))?
                    .permissions()
                    .mode()
                    & 0o7777;
                file.set_permissions(Permissions::from_mode(mode | FS_GROUP_FILE_MASK))
                    .map_err(io_err("chmod", path))?;
            }
        }

        // Durability (not upstream): contents and modes reach the disk before step 9 can, so a
        // crash never publishes empty or partial files. Children before parents.
        if self.options.fsync {
            for (path, file) in &files {
                file.sync_all().map_err(io_err("fsync", path))?;
            }
            for dir in dirs.iter().rev() {
                sync_dir(dir)?;
            }
        }
        Ok(())
    }
}

/// Step 1: validates every key on its raw form, then keys the payload by cleaned path.
fn validate_payload(payload: &Payload) -> Result<CleanPayload<'_>, WriteError> {
    let mut clean = CleanPayload::new();
    let mut originals: BTreeMap<String, &str> = BTreeMap::new();
    for (path, projection) in payload {
        validate_path(path).map_err(|source| WriteError::InvalidPath {
            path: path.clone(),
            source,
        })?;
        let cleaned = clean_path(path);
        // Upstream keeps whichever Go's map order visits last; refuse instead of guessing.
        if let Some(first) = originals.insert(cleaned.clone(), path) {
            return Err(WriteError::DuplicatePath {
                first: first.to_owned(),
                second: path.clone(),
                cleaned,
            });
        }
        clean.insert(cleaned, projection);
    }
    Ok(clean)
}

/// The first component of every payload path: the names that get a user-visible link.
fn top_level_names(clean: &CleanPayload<'_>) -> BTreeSet<String> {
    clean
        .keys()
        .map(|p| p.split('/').next().unwrap_or(p).to_owned())
        .collect()
}

/// Step 3: every path in the old version that is neither a payload path nor a parent of one.
fn paths_to_remove(
    clean: &CleanPayload<'_>,
    old_path: &Path,
) -> Result<BTreeSet<String>, WriteError> {
    let mut existing = BTreeSet::new();
    match walk(old_path, "", &mut existing) {
        Ok(()) => {}
        // `..data` dangles: there is nothing of the old version to remove.
        Err(WriteError::Io { source, .. }) if source.kind() == ErrorKind::NotFound => {
            return Ok(BTreeSet::new())
        }
        Err(e) => return Err(e),
    }
    let mut wanted = BTreeSet::new();
    for path in clean.keys() {
        // Parents count as present, so a directory still holding payload files is not removed.
        let mut sub = path.as_str();
        loop {
            wanted.insert(sub);
            match sub.rfind('/') {
                Some(i) => sub = &sub[..i],
                None => break,
            }
        }
    }
    Ok(existing
        .into_iter()
        .filter(|p| !wanted.contains(p.as_str()))
        .collect())
}

/// Collects every path below `root` (relative, `/`-separated), without following links.
fn walk(root: &Path, rel: &str, out: &mut BTreeSet<String>) -> Result<(), WriteError> {
    let dir = if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    };
    for (name, file_type) in list_dir(&dir)? {
        let child = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        if file_type.is_dir() {
            walk(root, &child, out)?;
        }
        out.insert(child);
    }
    Ok(())
}

/// Step 4: whether any payload file differs in bytes from (or is missing in) the old version.
fn payload_changed(clean: &CleanPayload<'_>, old_path: &Path) -> Result<bool, WriteError> {
    // Reused for every file: one read of one byte more than expected tells a longer file apart.
    let mut on_disk = Vec::new();
    for (rel, projection) in clean {
        let path = old_path.join(rel);
        if !same_bytes(&path, &projection.data, &mut on_disk)? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Whether the regular file at `path` holds exactly `expected`: open, read, close (three system
/// calls; a stat and a read to end of file would double that on every rotation). A link, a
/// directory or a missing file counts as different: the write replaces it. (Upstream errors on a
/// directory and can never move past it.)
fn same_bytes(path: &Path, expected: &[u8], buf: &mut Vec<u8>) -> Result<bool, WriteError> {
    let file = OpenOptions::new()
        .read(true)
        // NONBLOCK: a FIFO planted here must not hang the writer (regular files ignore it).
        .custom_flags((rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits() as i32)
        .open(path);
    let mut file = match file {
        Ok(file) => file,
        Err(e) if file_is_not_there(&e) => return Ok(false),
        Err(e) => return Err(io_err("open", path)(e)),
    };
    buf.clear();
    buf.resize(expected.len() + 1, 0);
    let mut filled = 0;
    loop {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => {
                filled += n;
                if filled == buf.len() {
                    break; // longer than expected
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::IsADirectory => return Ok(false),
            Err(e) => return Err(io_err("read", path)(e)),
        }
    }
    Ok(buf[..filled] == *expected)
}

/// Open errors that mean "no regular file here": missing, a link (O_NOFOLLOW), a component that
/// is not a directory.
fn file_is_not_there(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory)
        || e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error())
}

/// Step 11: removes the top-level links of names that left the payload. Nested paths need no
/// work: they lived inside the old version. Only links into `..data` are removed, so a file the
/// user put under such a name survives. Tries all, returns the last error (upstream).
fn remove_user_visible_links(
    target: &Path,
    to_remove: &BTreeSet<String>,
) -> Result<(), WriteError> {
    let mut last_error = None;
    for name in to_remove.iter().filter(|p| !p.contains('/')) {
        let link = target.join(name);
        let ours = fs::read_link(&link).is_ok_and(|dest| dest.starts_with(DATA_DIR_NAME));
        if ours {
            if let Err(e) = fs::remove_file(&link) {
                last_error = Some(io_err("remove link", &link)(e));
            }
        }
    }
    last_error.map_or(Ok(()), Err)
}

/// Names and types (not following links) of a directory's entries; non-UTF-8 names, which the
/// writer never creates, are skipped.
fn list_dir(dir: &Path) -> Result<Vec<(String, fs::FileType)>, WriteError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err("read directory", dir))? {
        let entry = entry.map_err(io_err("read directory", dir))?;
        let file_type = entry.file_type().map_err(io_err("stat", &entry.path()))?;
        if let Ok(name) = entry.file_name().into_string() {
            out.push((name, file_type));
        }
    }
    Ok(out)
}

/// `statfs` magic numbers of file systems kept in memory only (`linux/magic.h`).
const TMPFS_MAGIC: u64 = 0x0102_1994;
const RAMFS_MAGIC: u64 = 0x8584_58f6;

/// Whether `dir` lives on tmpfs or ramfs, where fsync has nothing to make durable (a crash loses
/// the whole file system): the kubelet's projected volumes and `medium: Memory` emptyDirs.
/// `false` when it cannot tell.
pub fn is_memory_backed(dir: &Path) -> bool {
    rustix::fs::statfs(dir).is_ok_and(|fs| {
        // The field's integer type differs between architectures.
        #[allow(clippy::useless_conversion, clippy::unnecessary_cast)]
        let kind = fs.f_type as u64;
        kind == TMPFS_MAGIC || kind == RAMFS_MAGIC
    })
}

/// fsync a directory so the entries created, renamed or removed in it are durable.
fn sync_dir(dir: &Path) -> Result<(), WriteError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}
