//! Reading a projected directory as a careful client does: resolve `..data` once, read every
//! file through that version, and start again if `..data` moved meanwhile, so a snapshot never
//! mixes two generations. Blocking file I/O (small files): call it off the async threads.
//!
//! Only regular files are opened, and never in a way that can wait: a FIFO, socket or device
//! someone put in the directory is reported for what it is, not read (opening a FIFO for reading
//! waits for a writer, for ever).

use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use jiff::Timestamp;

use super::{top_level, DataLink, Entry, EntryKind, Snapshot, TokenInfo, TokenState};
use crate::projection::atomic_writer::DATA_DIR_NAME;
use crate::token::decode;

/// Largest file read: config maps and secrets stop at 1 MiB, tokens are a few KiB.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;
/// Reads restarted because `..data` moved while reading; a writer swapping faster than this
/// many reads gets the last attempt (each is still read through one version).
const ATTEMPTS: usize = 10;

/// Reads `dir`, with the token at `token_path` (relative, e.g. `token`).
pub fn read(dir: &Path, token_path: &str) -> Snapshot {
    let mut snapshot = read_once(dir, token_path);
    for _ in 1..ATTEMPTS {
        // Same `..data` after reading as before: nothing read came from another version.
        if read_data_link(dir) == snapshot.data {
            break;
        }
        snapshot = read_once(dir, token_path);
    }
    snapshot
}

fn read_once(dir: &Path, token_path: &str) -> Snapshot {
    let exists = fs::metadata(dir).is_ok_and(|m| m.is_dir());
    let data = if exists {
        read_data_link(dir)
    } else {
        DataLink::Absent
    };
    let mut snapshot = Snapshot {
        exists,
        data,
        entries: Vec::new(),
        version_names: Vec::new(),
        token_path: token_path.to_owned(),
        token: TokenState::Absent,
    };
    if !exists {
        return snapshot;
    }
    let version = snapshot.version().map(|v| dir.join(v));
    if let Some(version) = &version {
        snapshot.version_names = visible_names(version);
    }
    let mut links = Vec::new();
    for name in visible_names(dir) {
        let (entry, real) = read_entry(dir, version.as_deref(), name);
        links.push(real);
        snapshot.entries.push(entry);
    }
    let top = top_level(token_path);
    let rest = token_path
        .get(top.len()..)
        .unwrap_or("")
        .trim_start_matches('/');
    snapshot.token = match snapshot.entries.iter().position(|e| e.name == top) {
        None => TokenState::Absent,
        Some(i) => match (&snapshot.entries[i].kind, &links[i]) {
            (EntryKind::Dangling { .. }, _) | (_, None) => TokenState::Absent,
            (_, Some(real)) => {
                let path = if rest.is_empty() {
                    real.clone()
                } else {
                    real.join(rest)
                };
                read_token(&path)
            }
        },
    };
    snapshot
}

/// Sorted names in `dir` that do not start with `..` (those are the writer's).
fn visible_names(dir: &Path) -> Vec<String> {
    let Ok(read) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = read
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| !n.starts_with(".."))
        .collect();
    names.sort();
    names
}

fn read_data_link(dir: &Path) -> DataLink {
    let link = dir.join(DATA_DIR_NAME);
    match fs::symlink_metadata(&link) {
        Err(e) if e.kind() == ErrorKind::NotFound => DataLink::Absent,
        Err(e) => DataLink::Unreadable(e.to_string()),
        Ok(meta) if !meta.file_type().is_symlink() => DataLink::NotALink,
        Ok(_) => match fs::read_link(&link) {
            Err(e) => DataLink::Unreadable(e.to_string()),
            Ok(target) => {
                let shown = target.to_string_lossy().into_owned();
                if fs::metadata(dir.join(&target)).is_ok_and(|m| m.is_dir()) {
                    DataLink::Version(shown)
                } else {
                    DataLink::Dangling(shown)
                }
            }
        },
    }
}

/// One visible entry, and the real path its content is read from (`None` when dangling).
fn read_entry(dir: &Path, version: Option<&Path>, name: String) -> (Entry, Option<PathBuf>) {
    let path = dir.join(&name);
    let entry = |kind, (digest, not_regular)| Entry {
        name: name.clone(),
        kind,
        digest,
        not_regular,
    };
    let Ok(meta) = fs::symlink_metadata(&path) else {
        // Removed between listing and now: a dangling name for this snapshot.
        return (
            entry(
                EntryKind::Dangling {
                    target: "(removed while reading)".to_owned(),
                },
                (None, None),
            ),
            None,
        );
    };
    if !meta.file_type().is_symlink() {
        return (entry(EntryKind::Plain, digest(&path)), Some(path));
    }
    let Ok(target) = fs::read_link(&path) else {
        return (
            entry(
                EntryKind::Dangling {
                    target: "(unreadable link)".to_owned(),
                },
                (None, None),
            ),
            None,
        );
    };
    let shown = target.to_string_lossy().into_owned();
    let through_data = match target.components().next() {
        Some(Component::Normal(first)) => first == DATA_DIR_NAME,
        _ => false,
    };
    let real = match (through_data, version) {
        // Through the version resolved once, not through `..data` again (which may move).
        (true, Some(version)) => target
            .strip_prefix(DATA_DIR_NAME)
            .map(|rest| version.join(rest))
            .unwrap_or_else(|_| path.clone()),
        _ => path.clone(),
    };
    if fs::metadata(&real).is_err() {
        return (
            entry(EntryKind::Dangling { target: shown }, (None, None)),
            None,
        );
    }
    let kind = if through_data {
        EntryKind::ThroughData
    } else {
        EntryKind::OtherLink { target: shown }
    };
    (entry(kind, digest(&real)), Some(real))
}

/// SHA-256 of a regular file's content (up to the cap), and what the entry is when it is
/// neither a regular file nor a directory (`a FIFO`); `(None, None)` for a directory or a file
/// that cannot be read.
fn digest(path: &Path) -> (Option<[u8; 32]>, Option<&'static str>) {
    match read_capped(path) {
        Ok(bytes) => (Some(sha256(&bytes)), None),
        Err(Unread::NotRegular(kind)) if kind != DIRECTORY => (None, Some(kind)),
        Err(_) => (None, None),
    }
}

/// Why a file was not read.
enum Unread {
    Io(io::Error),
    /// What it is instead of a regular file: `a FIFO`, `a directory`, ...
    NotRegular(&'static str),
}

impl From<io::Error> for Unread {
    fn from(e: io::Error) -> Self {
        Unread::Io(e)
    }
}

const DIRECTORY: &str = "a directory";

fn type_name(file_type: fs::FileType) -> &'static str {
    if file_type.is_dir() {
        DIRECTORY
    } else if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_block_device() || file_type.is_char_device() {
        "a device file"
    } else {
        "not a regular file"
    }
}

/// Opens the regular file `path` resolves to (links followed: `token` is one) without ever
/// waiting: its type is checked first, the open is non-blocking (a FIFO swapped in after the
/// check opens at once instead of waiting for a writer), and the opened file is checked again.
fn open_regular(path: &Path) -> Result<File, Unread> {
    let file_type = fs::metadata(path)?.file_type();
    if !file_type.is_file() {
        return Err(Unread::NotRegular(type_name(file_type)));
    }
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)?;
    let file_type = file.metadata()?.file_type();
    if !file_type.is_file() {
        return Err(Unread::NotRegular(type_name(file_type)));
    }
    Ok(file)
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

fn read_capped(path: &Path) -> Result<Vec<u8>, Unread> {
    let mut bytes = Vec::new();
    open_regular(path)?
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

fn read_token(path: &Path) -> TokenState {
    let bytes = match read_capped(path) {
        Ok(bytes) => bytes,
        Err(Unread::Io(e)) if e.kind() == ErrorKind::NotFound => return TokenState::Absent,
        Err(Unread::Io(e)) => return TokenState::Unreadable(e.to_string()),
        Err(Unread::NotRegular(kind)) => return TokenState::NotRegular(kind),
    };
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return TokenState::Invalid("larger than 1 MiB".to_owned());
    }
    let Ok(text) = std::str::from_utf8(&bytes) else {
        return TokenState::Invalid("not UTF-8 text".to_owned());
    };
    match decode(text) {
        Err(e) => TokenState::Invalid(e.to_string()),
        Ok(token) => {
            let time = |s: Option<i64>| s.and_then(|s| Timestamp::from_second(s).ok());
            TokenState::Valid(TokenInfo {
                digest: sha256(&bytes),
                jti: token.string_claim("jti").map(str::to_owned),
                issued_at: time(token.numeric_claim("iat")),
                expires_at: time(token.numeric_claim("exp")),
                warn_after: time(token.warn_after()),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::projection::atomic_writer::{AtomicWriter, WriterOptions};
    use crate::projection::payload::{FileProjection, Payload};
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use std::os::unix::fs::symlink;

    fn jwt(jti: &str) -> String {
        let part = |v: serde_json::Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(&v).unwrap());
        format!(
            "{}.{}.c2ln",
            part(serde_json::json!({"alg": "ES256"})),
            part(
                serde_json::json!({"jti": jti, "iat": 1_700_000_000, "exp": 1_700_000_600,
                                     "kubernetes.io": {"warnafter": 1_700_000_300}})
            )
        )
    }

    fn file(data: &[u8]) -> FileProjection {
        FileProjection {
            data: data.into(),
            mode: 0o644,
            fs_user: None,
        }
    }

    fn write(dir: &Path, token: &str, ca: &str) -> String {
        let mut payload = Payload::new();
        payload.insert("token".into(), file(token.as_bytes()));
        payload.insert("ca.crt".into(), file(ca.as_bytes()));
        let writer = AtomicWriter::new(
            dir,
            WriterOptions {
                fsync: false,
                fs_group: None,
            },
        );
        match writer.write(&payload).unwrap() {
            crate::projection::atomic_writer::WriteOutcome::Written { data_dir } => data_dir,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_kubelet_layout_reads_through_one_version() {
        let tmp = tempfile::tempdir().unwrap();
        let version = write(tmp.path(), &jwt("one"), "ca");
        let snap = read(tmp.path(), "token");
        assert!(snap.exists);
        assert_eq!(snap.data, DataLink::Version(version));
        assert_eq!(snap.version_names, vec!["ca.crt", "token"]);
        let names: Vec<_> = snap.entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, vec!["ca.crt", "token"]);
        assert!(snap
            .entries
            .iter()
            .all(|e| e.kind == EntryKind::ThroughData && e.digest.is_some()));
        let TokenState::Valid(info) = &snap.token else {
            panic!("{:?}", snap.token)
        };
        assert_eq!(info.jti.as_deref(), Some("one"));
        assert_eq!(info.issued_at, Timestamp::from_second(1_700_000_000).ok());
        assert_eq!(info.warn_after, Timestamp::from_second(1_700_000_300).ok());
        assert!(snap.errors(true).is_empty(), "{:?}", snap.errors(true));
    }

    #[test]
    fn missing_and_empty_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let snap = read(&tmp.path().join("nope"), "token");
        assert!(!snap.exists);
        assert!(snap.errors(false).is_empty());
        assert_eq!(snap.errors(true).len(), 1);
        let snap = read(tmp.path(), "token");
        assert!(snap.exists);
        assert_eq!(snap.token, TokenState::Absent);
        assert!(snap.errors(false).is_empty());
    }

    #[test]
    fn dangling_links_and_bad_tokens_are_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let version = write(dir, &jwt("one"), "ca");
        symlink("..data/gone", dir.join("extra")).unwrap();
        let snap = read(dir, "token");
        assert_eq!(
            snap.entries[1].kind,
            EntryKind::Dangling {
                target: "..data/gone".into()
            }
        );
        let errors = snap.errors(true);
        assert!(
            errors
                .iter()
                .any(|e| e.contains("extra is a dangling symlink")),
            "{errors:?}"
        );
        fs::remove_file(dir.join("extra")).unwrap();

        // The version directory disappears: `..data` and every link dangle.
        fs::rename(dir.join(&version), dir.join("..moved")).unwrap();
        let snap = read(dir, "token");
        assert_eq!(snap.data, DataLink::Dangling(version.clone()));
        let errors = snap.errors(true);
        assert!(
            errors.iter().any(|e| e.contains("..data is a dangling")),
            "{errors:?}"
        );
        assert!(
            errors.iter().any(|e| e.contains("token is a dangling")),
            "{errors:?}"
        );
        fs::rename(dir.join("..moved"), dir.join(&version)).unwrap();

        write(dir, "not a token", "ca");
        let snap = read(dir, "token");
        assert!(
            matches!(snap.token, TokenState::Invalid(_)),
            "{:?}",
            snap.token
        );
        let errors = snap.errors(true);
        assert!(
            errors.iter().any(|e| e.contains("does not parse")),
            "{errors:?}"
        );
        assert!(
            errors.iter().all(|e| !e.contains("not a token")),
            "{errors:?}"
        );
    }

    #[test]
    fn plain_files_and_foreign_links_are_not_through_data() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let version = write(dir, &jwt("one"), "ca");
        fs::remove_file(dir.join("ca.crt")).unwrap();
        fs::write(dir.join("ca.crt"), "plain").unwrap();
        fs::remove_file(dir.join("token")).unwrap();
        symlink(format!("{version}/token"), dir.join("token")).unwrap();
        let snap = read(dir, "token");
        assert_eq!(snap.entries[0].kind, EntryKind::Plain);
        assert_eq!(
            snap.entries[1].kind,
            EntryKind::OtherLink {
                target: format!("{version}/token")
            }
        );
        assert!(matches!(snap.token, TokenState::Valid(_)));
        assert_eq!(
            snap.layout_problems().len(),
            2,
            "{:?}",
            snap.layout_problems()
        );
    }

    #[test]
    fn no_data_link_reads_plain_files() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("token"), jwt("plain")).unwrap();
        let snap = read(tmp.path(), "token");
        assert_eq!(snap.data, DataLink::Absent);
        assert!(matches!(&snap.token, TokenState::Valid(t) if t.jti.as_deref() == Some("plain")));
        assert!(snap.errors(false).is_empty());
        assert_eq!(snap.layout_problems().len(), 2);
    }

    /// Read on another thread: a read that waits on a FIFO fails the test instead of hanging it.
    fn read_within_seconds(dir: &Path) -> Snapshot {
        let (tx, rx) = std::sync::mpsc::channel();
        let dir = dir.to_path_buf();
        std::thread::spawn(move || {
            let _ = tx.send(read(&dir, "token"));
        });
        rx.recv_timeout(std::time::Duration::from_secs(10))
            .expect("the read waited on a FIFO")
    }

    fn mkfifo(path: &Path) {
        let mode = rustix::fs::Mode::from_bits_truncate(0o600);
        rustix::fs::mknodat(rustix::fs::CWD, path, rustix::fs::FileType::Fifo, mode, 0).unwrap();
    }

    #[test]
    fn fifos_are_reported_never_opened_for_a_blocking_read() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        mkfifo(&dir.join("token"));
        let snap = read_within_seconds(dir);
        assert_eq!(snap.token, TokenState::NotRegular("a FIFO"));
        assert_eq!(
            snap.errors(false),
            vec!["token is a FIFO, not a regular file"]
        );
        fs::remove_file(dir.join("token")).unwrap();

        // Through `..data`, as a kubelet layout someone tampered with.
        let version = write(dir, &jwt("one"), "ca");
        for name in ["token", "ca.crt"] {
            fs::remove_file(dir.join(&version).join(name)).unwrap();
            mkfifo(&dir.join(&version).join(name));
        }
        let snap = read_within_seconds(dir);
        assert_eq!(snap.entries[0].not_regular, Some("a FIFO"));
        assert_eq!(
            snap.errors(true),
            vec![
                "ca.crt is a FIFO, not a regular file",
                "token is a FIFO, not a regular file"
            ]
        );
        fs::remove_file(dir.join(&version).join("token")).unwrap();
        fs::create_dir(dir.join(&version).join("token")).unwrap();
        let snap = read_within_seconds(dir);
        assert_eq!(snap.token, TokenState::NotRegular("a directory"));
    }

    #[test]
    fn a_nested_token_path() {
        let tmp = tempfile::tempdir().unwrap();
        let mut payload = Payload::new();
        payload.insert("tokens/vault".into(), file(jwt("nested").as_bytes()));
        AtomicWriter::new(tmp.path(), WriterOptions::default())
            .write(&payload)
            .unwrap();
        let snap = read(tmp.path(), "tokens/vault");
        assert!(matches!(&snap.token, TokenState::Valid(t) if t.jti.as_deref() == Some("nested")));
        assert_eq!(snap.entries[0].digest, None, "directories have no digest");
        assert!(read(tmp.path(), "tokens/other").token == TokenState::Absent);
    }
}
