//! The atomic writer on real files: layout, modes, rotation, removal, nesting, rejection,
//! crash recovery and fsGroup ownership.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use projected_token::projection::atomic_writer::{DATA_DIR_NAME, NEW_DATA_DIR_NAME};
use projected_token::projection::layout::NEW_LINK_NAME;
use projected_token::projection::{
    AtomicWriter, FileProjection, Found, Payload, RecoveryReport, Repair, WriteError, WriteOutcome,
    WriterOptions,
};

/// Every test runs with a umask that would strip group/other bits, to prove modes are exact.
/// The umask is process-wide; all tests want the same value, so parallel tests agree.
fn strict_umask() {
    rustix::process::umask(rustix::fs::Mode::from_bits_truncate(0o077));
}

fn file(data: &[u8], mode: u32) -> FileProjection {
    FileProjection {
        data: data.into(),
        mode,
        fs_user: None,
    }
}

fn payload(entries: &[(&str, &[u8], u32)]) -> Payload {
    entries
        .iter()
        .map(|(path, data, mode)| (path.to_string(), file(data, *mode)))
        .collect()
}

/// The usual projected volume: token, CA bundle and namespace.
fn token_payload(token: &[u8]) -> Payload {
    payload(&[
        ("token", token, 0o600),
        (
            "ca.crt",
            b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
            0o644,
        ),
        ("namespace", b"default", 0o644),
    ])
}

fn writer(dir: &Path) -> AtomicWriter {
    AtomicWriter::new(dir, WriterOptions::default())
}

fn data_target(dir: &Path) -> String {
    fs::read_link(dir.join(DATA_DIR_NAME))
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned()
}

fn entries(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect()
}

fn version_dirs(dir: &Path) -> Vec<String> {
    entries(dir)
        .into_iter()
        .filter(|n| n.starts_with("..") && n != DATA_DIR_NAME)
        .collect()
}

fn mode_of(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

/// `..YYYY_MM_DD_HH_MM_SS.<decimal u32>`, with the time in UTC and close to now.
fn assert_version_name(name: &str) {
    let rest = name
        .strip_prefix("..")
        .unwrap_or_else(|| panic!("{name}: no '..' prefix"));
    let (stamp, random) = rest
        .rsplit_once('.')
        .unwrap_or_else(|| panic!("{name}: no '.' before the random part"));
    assert!(
        !random.is_empty() && random.bytes().all(|b| b.is_ascii_digit()),
        "{name}: random part is not decimal"
    );
    random.parse::<u32>().expect("random part fits a u32");
    assert_eq!(stamp.len(), "2006_01_02_15_04_05".len(), "{name}");
    let written = jiff::civil::DateTime::strptime("%Y_%m_%d_%H_%M_%S", stamp)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .to_zoned(jiff::tz::TimeZone::UTC)
        .unwrap()
        .timestamp();
    let age = jiff::Timestamp::now().as_second() - written.as_second();
    assert!((-2..=120).contains(&age), "{name}: not a recent UTC time");
}

#[test]
fn write_lays_out_volume_like_the_kubelet() {
    strict_umask();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let token = b"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln";
    let p = token_payload(token);

    let outcome = writer(dir).write(&p).unwrap();

    let version = data_target(dir);
    assert_version_name(&version);
    assert_eq!(
        outcome,
        WriteOutcome::Written {
            data_dir: version.clone()
        }
    );
    assert_eq!(
        entries(dir),
        BTreeSet::from([
            DATA_DIR_NAME.to_owned(),
            version.clone(),
            "token".to_owned(),
            "ca.crt".to_owned(),
            "namespace".to_owned(),
        ])
    );
    assert!(fs::symlink_metadata(dir.join(DATA_DIR_NAME))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(mode_of(&dir.join(&version)), 0o755);
    for (name, projection) in &p {
        let visible = dir.join(name);
        assert!(fs::symlink_metadata(&visible)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(
            fs::read_link(&visible).unwrap(),
            Path::new(&format!("..data/{name}"))
        );
        // Exact bytes: no trailing newline added to the token.
        assert_eq!(fs::read(&visible).unwrap(), *projection.data, "{name}");
        let real = dir.join(&version).join(name);
        assert!(fs::symlink_metadata(&real).unwrap().is_file());
        assert_eq!(mode_of(&real), projection.mode, "{name}");
    }
    assert_eq!(fs::read(dir.join("token")).unwrap(), token);
    assert_eq!(mode_of(&dir.join(&version).join("token")), 0o600);
    assert_eq!(mode_of(&dir.join(&version).join("namespace")), 0o644);
}

#[test]
fn unusual_modes_are_exact() {
    strict_umask();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let p = payload(&[
        ("all", b"a", 0o777),
        ("owner-read", b"b", 0o400),
        ("odd", b"c", 0o407),
        (".dotfile", b"d", 0o666),
    ]);
    writer(dir).write(&p).unwrap();
    let version = dir.join(data_target(dir));
    for (name, projection) in &p {
        assert_eq!(mode_of(&version.join(name)), projection.mode, "{name}");
    }
}

#[test]
fn rotation_publishes_new_version_and_removes_old() {
    strict_umask();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let w = AtomicWriter::new(
        dir,
        WriterOptions {
            fsync: false,
            fs_group: None,
        },
    );
    w.write(&token_payload(b"token-one")).unwrap();
    let first = data_target(dir);

    let outcome = w.write(&token_payload(b"token-two")).unwrap();
    let second = data_target(dir);

    assert_ne!(first, second);
    assert_eq!(
        outcome,
        WriteOutcome::Written {
            data_dir: second.clone()
        }
    );
    assert_eq!(version_dirs(dir), vec![second]);
    assert_eq!(fs::read(dir.join("token")).unwrap(), b"token-two");
}

#[test]
fn unchanged_payload_is_a_no_op_but_restores_missing_links() {
    strict_umask();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let w = writer(dir);
    let p = token_payload(b"same-token");
    w.write(&p).unwrap();
    let version = data_target(dir);
    let before = entries(dir);

    assert_eq!(w.write(&p).unwrap(), WriteOutcome::Unchanged);
    assert_eq!(data_target(dir), version);
    assert_eq!(entries(dir), before);

    // A mode change alone does not rewrite (byte comparison only, as upstream).
    let mut other_mode = p.clone();
    other_mode.get_mut("namespace").unwrap().mode = 0o640;
    assert_eq!(w.write(&other_mode).unwrap(), WriteOutcome::Unchanged);

    // Someone deleted a user-visible link: same data, still Unchanged, link back.
    fs::remove_file(dir.join("token")).unwrap();
    assert_eq!(w.write(&p).unwrap(), WriteOutcome::Unchanged);
    assert_eq!(data_target(dir), version);
    assert_eq!(
        fs::read_link(dir.join("token")).unwrap(),
        Path::new("..data/token")
    );
    assert_eq!(fs::read(dir.join("token")).unwrap(), b"same-token");
    assert_eq!(entries(dir), before);
}

/// The comparison reads what is really there: a file grown, shrunk, swapped for a link, a
/// directory or a FIFO behind the writer's back gets a new version with the right bytes (and a
/// FIFO does not hang it).
#[test]
fn tampered_files_in_the_current_version_are_rewritten() {
    strict_umask();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let w = writer(&dir);
    let p = token_payload(b"the-token");
    w.write(&p).unwrap();
    type Tamper = fn(&Path);
    let tampering: [(&str, Tamper); 5] = [
        ("grown", |f| fs::write(f, b"the-token!").unwrap()),
        ("shrunk", |f| fs::write(f, b"the-toke").unwrap()),
        ("a link to the same bytes", |f| {
            let twin = f.with_file_name("twin");
            fs::write(&twin, b"the-token").unwrap();
            fs::remove_file(f).unwrap();
            symlink(&twin, f).unwrap();
        }),
        ("a directory", |f| {
            fs::remove_file(f).unwrap();
            fs::create_dir(f).unwrap();
        }),
        ("a FIFO", |f| {
            fs::remove_file(f).unwrap();
            let mode = rustix::fs::Mode::from_bits_truncate(0o600);
            rustix::fs::mknodat(rustix::fs::CWD, f, rustix::fs::FileType::Fifo, mode, 0).unwrap();
        }),
    ];
    for (what, tamper) in tampering {
        let version = data_target(&dir);
        tamper(&dir.join(&version).join("token"));
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let (w2, p2) = (w.clone(), p.clone());
        std::thread::spawn(move || done_tx.send(w2.write(&p2).map_err(|e| e.to_string())));
        let outcome = done_rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("write hung on {what}"));
        assert!(
            matches!(outcome, Ok(WriteOutcome::Written { .. })),
            "{what}: {outcome:?}"
        );
        assert_ne!(data_target(&dir), version, "{what}");
        assert_eq!(fs::read(dir.join("token")).unwrap(), b"the-token", "{what}");
        assert_eq!(version_dirs(&dir).len(), 1, "{what}");
    }
}

/// tmpfs (where fsync is skipped) is told apart from other file systems as `stat -f` tells it.
#[test]
fn memory_backed_directories_are_recognised() {
    let tmp = tempfile::tempdir().unwrap();
    for dir in [Path::new("/dev/shm"), tmp.path()] {
        let Ok(out) = std::process::Command::new("stat")
            .args(["-f", "-c", "%T"])
            .arg(dir)
            .output()
        else {
            eprintln!("SKIPPED for {}: no stat command", dir.display());
            continue;
        };
        if !out.status.success() {
            eprintln!("SKIPPED for {}: stat -f failed", dir.display());
            continue;
        }
        let kind = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let expected = kind == "tmpfs" || kind == "ramfs";
        assert_eq!(
            projected_token::projection::is_memory_backed(dir),
            expected,
            "{} is {kind}",
            dir.display()
        );
    }
    assert!(!projected_token::projection::is_memory_backed(Path::new(
        "/no/such/dir"
    )));
}

#[test]
fn path_removed_from_payload_disappears() {
    strict_umask();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let w = writer(dir);
    w.write(&payload(&[
        ("token", b"t", 0o644),
        ("extra", b"x", 0o644),
        ("gone/deep/file", b"g", 0o644),
    ]))
    .unwrap();
    assert!(dir.join("extra").exists());

    // Same bytes for `token`: only the removal forces a new version.
    let outcome = w.write(&payload(&[("token", b"t", 0o644)])).unwrap();
    assert!(matches!(outcome, WriteOutcome::Written { .. }));
    for name in ["extra", "gone"] {
        assert!(
            fs::symlink_metadata(dir.join(name)).is_err(),
            "{name} still there"
        );
    }
    let version = data_target(dir);
    assert_eq!(
        entries(dir),
        BTreeSet::from([
            DATA_DIR_NAME.to_owned(),
            version.clone(),
            "token".to_owned()
        ])
    );
    assert_eq!(
        entries(&dir.join(version)),
        BTreeSet::from(["token".to_owned()])
    );
}

#[test]
fn nested_paths_go_through_the_top_level_link() {
    strict_umask();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let w = writer(dir);
    w.write(&payload(&[
        ("a/b/c", b"deep", 0o600),
        ("a/d", b"shallow", 0o644),
        ("./top", b"top", 0o644),
        ("x//y", b"double slash", 0o644),
    ]))
    .unwrap();

    let version = dir.join(data_target(dir));
    assert_eq!(
        entries(dir),
        BTreeSet::from([
            DATA_DIR_NAME.to_owned(),
            data_target(dir),
            "a".to_owned(),
            "top".to_owned(),
            "x".to_owned(),
        ])
    );
    assert_eq!(fs::read_link(dir.join("a")).unwrap(), Path::new("..data/a"));
    assert_eq!(fs::read(dir.join("a/b/c")).unwrap(), b"deep");
    assert_eq!(fs::read(dir.join("a/d")).unwrap(), b"shallow");
    assert_eq!(fs::read(dir.join("x/y")).unwrap(), b"double slash");
    // Inside the version the directories are real and traversable despite the umask.
    assert!(fs::symlink_metadata(version.join("a/b")).unwrap().is_dir());
    assert_eq!(mode_of(&version.join("a")), 0o755);
    assert_eq!(mode_of(&version.join("a/b")), 0o755);
    assert_eq!(mode_of(&version.join("a/b/c")), 0o600);

    // Dropping a/b/c keeps `a` (a/d still lives there) but not a/b.
    w.write(&payload(&[
        ("a/d", b"shallow", 0o644),
        ("top", b"top", 0o644),
        ("x/y", b"double slash", 0o644),
    ]))
    .unwrap();
    assert_eq!(fs::read(dir.join("a/d")).unwrap(), b"shallow");
    assert!(fs::symlink_metadata(dir.join("a/b")).is_err());
    assert_eq!(
        entries(&dir.join(data_target(dir)).join("a")),
        BTreeSet::from(["d".to_owned()])
    );
}

#[test]
fn invalid_paths_are_rejected_and_old_version_stays() {
    strict_umask();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let w = writer(dir);
    w.write(&token_payload(b"good")).unwrap();
    let version = data_target(dir);
    let before = entries(dir);

    let long_name = "n".repeat(256);
    let bad_paths = [
        ("", "invalid path: must not be empty: \"\""),
        (
            "/etc/passwd",
            "invalid path: must be relative path: /etc/passwd",
        ),
        ("a/../b", "invalid path: must not contain '..': a/../b"),
        ("..data", "invalid path: must not start with '..': ..data"),
        (
            long_name.as_str(),
            "invalid path: filenames must be less than or equal to 255 characters",
        ),
    ];
    for (bad, message) in bad_paths {
        let mut p = token_payload(b"new token that must not land");
        p.insert(bad.to_owned(), file(b"x", 0o644));
        let err = w.write(&p).unwrap_err();
        match &err {
            WriteError::InvalidPath { path, source } => {
                assert_eq!(path, bad);
                assert_eq!(source.to_string(), message);
            }
            other => panic!("{bad:?}: unexpected error {other}"),
        }
        assert!(err.to_string().contains(message), "{err}");
        assert_eq!(data_target(dir), version);
        assert_eq!(entries(dir), before);
        assert_eq!(fs::read(dir.join("token")).unwrap(), b"good");
    }

    // Two keys naming the same file once cleaned.
    let mut p = token_payload(b"good");
    p.insert("./token".to_owned(), file(b"other", 0o644));
    assert!(matches!(w.write(&p), Err(WriteError::DuplicatePath { .. })));
    assert_eq!(entries(dir), before);
}

#[test]
fn failure_while_building_removes_the_new_version() {
    strict_umask();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let w = writer(dir);
    w.write(&token_payload(b"good")).unwrap();
    let before = entries(dir);
    let version = data_target(dir);

    // `a` as a file and as a directory: valid paths, impossible together; fails in step 6.
    let p = payload(&[("a", b"file", 0o644), ("a/b", b"nested", 0o644)]);
    let err = w.write(&p).unwrap_err();
    assert!(matches!(err, WriteError::Io { .. }), "{err}");
    assert_eq!(entries(dir), before);
    assert_eq!(data_target(dir), version);
    assert_eq!(fs::read(dir.join("token")).unwrap(), b"good");
}

#[test]
fn stale_staging_link_does_not_block_writes() {
    strict_umask();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let w = writer(dir);
    w.write(&token_payload(b"one")).unwrap();
    symlink("..2001_01_01_00_00_00.1", dir.join(NEW_DATA_DIR_NAME)).unwrap();

    w.write(&token_payload(b"two")).unwrap();
    assert_eq!(fs::read(dir.join("token")).unwrap(), b"two");
    assert!(fs::symlink_metadata(dir.join(NEW_DATA_DIR_NAME)).is_err());
}

#[test]
fn recover_cleans_crash_leftovers_and_keeps_user_files() {
    strict_umask();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let w = writer(dir);
    w.write(&token_payload(b"live")).unwrap();
    let version = data_target(dir);

    // What crashes leave: a staging link, unpublished/unremoved versions, a link to a name the
    // current version lacks. Plus things the user owns.
    let orphan = "..2020_01_02_03_04_05.42";
    fs::create_dir(dir.join(orphan)).unwrap();
    fs::write(dir.join(orphan).join("token"), b"half").unwrap();
    let orphan2 = "..2020_01_02_03_04_06.43";
    fs::create_dir(dir.join(orphan2)).unwrap();
    symlink(orphan, dir.join(NEW_DATA_DIR_NAME)).unwrap();
    symlink("..data/old-name", dir.join("old-name")).unwrap();
    fs::write(dir.join("notes.txt"), b"mine").unwrap();
    symlink("/etc/hostname", dir.join("my-link")).unwrap();

    let report = w.recover().unwrap();

    let removed: BTreeSet<String> = report.removed.iter().cloned().collect();
    assert_eq!(
        removed,
        BTreeSet::from([
            NEW_DATA_DIR_NAME.to_owned(),
            orphan.to_owned(),
            orphan2.to_owned(),
            "old-name".to_owned(),
        ])
    );
    assert_eq!(data_target(dir), version);
    assert_eq!(
        entries(dir),
        BTreeSet::from([
            DATA_DIR_NAME.to_owned(),
            version.clone(),
            "token".to_owned(),
            "ca.crt".to_owned(),
            "namespace".to_owned(),
            "notes.txt".to_owned(),
            "my-link".to_owned(),
        ])
    );
    assert_eq!(fs::read(dir.join("notes.txt")).unwrap(), b"mine");
    assert_eq!(fs::read(dir.join("token")).unwrap(), b"live");

    // Consistent now: a second recover finds nothing; the next write builds on it.
    assert!(w.recover().unwrap().removed.is_empty());
    assert_eq!(
        w.write(&token_payload(b"live")).unwrap(),
        WriteOutcome::Unchanged
    );
    w.write(&token_payload(b"next")).unwrap();
    assert_eq!(fs::read(dir.join("token")).unwrap(), b"next");
    assert_eq!(version_dirs(dir).len(), 1);
}

#[test]
fn recover_removes_dangling_data_link_and_its_links() {
    strict_umask();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let w = writer(dir);
    w.write(&token_payload(b"lost")).unwrap();
    fs::remove_dir_all(dir.join(data_target(dir))).unwrap();
    fs::write(dir.join("notes.txt"), b"mine").unwrap();

    let report = w.recover().unwrap();
    let removed: BTreeSet<String> = report.removed.into_iter().collect();
    assert_eq!(
        removed,
        BTreeSet::from([
            DATA_DIR_NAME.to_owned(),
            "token".to_owned(),
            "ca.crt".to_owned(),
            "namespace".to_owned(),
        ])
    );
    assert_eq!(entries(dir), BTreeSet::from(["notes.txt".to_owned()]));

    // A following write publishes a complete fresh version.
    let outcome = w.write(&token_payload(b"fresh")).unwrap();
    assert!(matches!(outcome, WriteOutcome::Written { .. }));
    assert_eq!(fs::read(dir.join("token")).unwrap(), b"fresh");
    assert_eq!(fs::read(dir.join("namespace")).unwrap(), b"default");
}

#[test]
fn recover_creates_target_and_the_next_write_restores_links() {
    strict_umask();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("volume");
    let w = writer(&dir);

    assert!(w.recover().unwrap().removed.is_empty());
    assert!(dir.is_dir());
    assert_eq!(mode_of(&dir), 0o755);

    let p = token_payload(b"t");
    w.write(&p).unwrap();
    fs::remove_file(dir.join("ca.crt")).unwrap();
    // recover cleans leftovers only; the payload's names are the write's.
    assert_eq!(w.recover().unwrap(), RecoveryReport::default());
    let mut repairs = Vec::new();
    assert_eq!(
        w.write_and_repair(&p, &mut repairs).unwrap(),
        WriteOutcome::Unchanged
    );
    assert_eq!(repairs, vec![repair("ca.crt", Found::Missing)]);
    assert_eq!(
        fs::read_link(dir.join("ca.crt")).unwrap(),
        Path::new("..data/ca.crt")
    );
}

fn repair(name: &str, found: Found) -> Repair {
    Repair {
        name: name.to_owned(),
        found,
    }
}

/// Makes an entry at the path it is given.
type Plant = Box<dyn Fn(&Path)>;

/// Every kind of entry someone can put at a payload name: what the writer reports finding.
fn wrong_entries(victim: &Path) -> Vec<(&'static str, Found, Plant)> {
    let link =
        |target: PathBuf| -> Plant { Box::new(move |at: &Path| symlink(&target, at).unwrap()) };
    vec![
        (
            "a link to a foreign file",
            Found::Link(victim.to_path_buf()),
            link(victim.to_path_buf()),
        ),
        (
            "a link to ../other",
            Found::Link(PathBuf::from("../other")),
            link(PathBuf::from("../other")),
        ),
        (
            "a link around ..data",
            Found::Link(PathBuf::from("..data/./token")),
            link(PathBuf::from("..data/./token")),
        ),
        (
            "a regular file",
            Found::RegularFile,
            Box::new(|at: &Path| fs::write(at, b"planted").unwrap()),
        ),
        (
            "a directory with files",
            Found::Directory,
            Box::new(|at: &Path| {
                fs::create_dir_all(at.join("sub")).unwrap();
                fs::write(at.join("sub/file"), b"planted").unwrap();
            }),
        ),
        (
            "a FIFO",
            Found::Fifo,
            Box::new(|at: &Path| {
                let mode = rustix::fs::Mode::from_bits_truncate(0o600);
                rustix::fs::mknodat(rustix::fs::CWD, at, rustix::fs::FileType::Fifo, mode, 0)
                    .unwrap();
            }),
        ),
        (
            "a socket",
            Found::Socket,
            Box::new(|at: &Path| drop(std::os::unix::net::UnixListener::bind(at).unwrap())),
        ),
    ]
}

/// A user-visible entry someone replaced (with a link elsewhere, a file, a directory, a FIFO)
/// is put back as `..data/<name>` by the next write, published or not, and reported; nothing is
/// ever written through the foreign link. Upstream keeps any existing entry.
#[test]
fn wrong_visible_entries_are_replaced_never_followed() {
    strict_umask();
    let tmp = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let victim = elsewhere.path().join("passwd");
    fs::write(&victim, b"root:x:0:0").unwrap();
    let dir = tmp.path().to_path_buf();
    let w = writer(&dir);
    let p = token_payload(b"the-token");
    w.write(&p).unwrap();

    for (what, found, plant) in wrong_entries(&victim) {
        for (name, next) in [("token", b"the-token"), ("ca.crt", b"new-token")] {
            // In place of the right link, as rename(2) would put it (one step, no gap).
            let staged = dir.join("planted");
            plant(&staged);
            fs::rename(&staged, dir.join(name)).unwrap_or_else(|_| {
                // rename cannot put a directory over a link: remove the link first.
                fs::remove_file(dir.join(name)).unwrap();
                fs::rename(&staged, dir.join(name)).unwrap();
            });
            let mut repairs = Vec::new();
            let payload = token_payload(next);
            let outcome = w.write_and_repair(&payload, &mut repairs).unwrap();
            assert_eq!(
                matches!(outcome, WriteOutcome::Written { .. }),
                next != b"the-token",
                "{what} at {name}: {outcome:?}"
            );
            assert_eq!(
                repairs,
                vec![repair(name, found.clone())],
                "{what} at {name}"
            );
            assert_eq!(
                fs::read_link(dir.join(name)).unwrap(),
                Path::new(&format!("..data/{name}")),
                "{what} at {name}"
            );
            assert_eq!(fs::read(dir.join("token")).unwrap(), next, "{what}");
            assert_eq!(fs::read(&victim).unwrap(), b"root:x:0:0", "{what}");
            assert_eq!(version_dirs(&dir).len(), 1, "{what}: {:?}", entries(&dir));
            assert!(!entries(&dir).contains("planted"));
            w.write(&p).unwrap();
        }
    }
}

/// The first write into a directory where someone already put entries under the payload's
/// names replaces them too (upstream keeps them for good).
#[test]
fn wrong_entries_before_the_first_write_are_replaced() {
    strict_umask();
    let tmp = tempfile::tempdir().unwrap();
    let victim = tmp.path().join("victim");
    fs::write(&victim, b"keep me").unwrap();
    let dir = tmp.path().join("volume");
    fs::create_dir(&dir).unwrap();
    symlink(&victim, dir.join("token")).unwrap();
    fs::write(dir.join("namespace"), b"planted").unwrap();

    let mut repairs = Vec::new();
    writer(&dir)
        .write_and_repair(&token_payload(b"t"), &mut repairs)
        .unwrap();
    repairs.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(
        repairs,
        vec![
            repair("namespace", Found::RegularFile),
            repair("token", Found::Link(victim.clone())),
        ]
    );
    assert_eq!(fs::read(dir.join("token")).unwrap(), b"t");
    assert_eq!(fs::read(dir.join("namespace")).unwrap(), b"default");
    assert_eq!(fs::read(&victim).unwrap(), b"keep me");
}

/// `..data` is the writer's name: a directory or file there, or a link elsewhere, is removed
/// by recover (and reported), and so are the staging links a crash can leave.
#[test]
fn recover_replaces_whatever_is_at_data_and_staging_links() {
    strict_umask();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let w = writer(dir);
    let elsewhere = tempfile::tempdir().unwrap();
    let foreign = elsewhere.path().to_path_buf();
    fs::write(foreign.join("token"), b"foreign").unwrap();
    let cases: [(Found, Plant); 3] = [
        (Found::Directory, Box::new(|at| fs::create_dir(at).unwrap())),
        (
            Found::RegularFile,
            Box::new(|at| fs::write(at, b"x").unwrap()),
        ),
        (Found::Link(foreign.clone()), {
            let foreign = foreign.clone();
            Box::new(move |at| symlink(&foreign, at).unwrap())
        }),
    ];
    for (found, plant) in cases {
        w.write(&token_payload(b"t")).unwrap();
        fs::remove_file(dir.join(DATA_DIR_NAME)).unwrap();
        plant(&dir.join(DATA_DIR_NAME));
        symlink("..data/token", dir.join(NEW_LINK_NAME)).unwrap();
        let report = w.recover().unwrap();
        assert_eq!(report.repairs, vec![repair(DATA_DIR_NAME, found.clone())]);
        assert!(
            report.removed.contains(&NEW_LINK_NAME.to_owned()),
            "{report:?}"
        );
        w.write(&token_payload(b"t")).unwrap();
        assert_eq!(fs::read(dir.join("token")).unwrap(), b"t", "{found:?}");
        assert_eq!(fs::read(foreign.join("token")).unwrap(), b"foreign");
    }
    // `..data` removed while its links are there: reported as missing.
    fs::remove_file(dir.join(DATA_DIR_NAME)).unwrap();
    let report = w.recover().unwrap();
    assert_eq!(report.repairs, vec![repair(DATA_DIR_NAME, Found::Missing)]);
}

#[test]
fn write_refuses_a_foreign_data_link() {
    strict_umask();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let elsewhere = tempfile::tempdir().unwrap();
    symlink(elsewhere.path(), dir.join(DATA_DIR_NAME)).unwrap();

    let err = writer(dir).write(&token_payload(b"t")).unwrap_err();
    assert!(
        matches!(err, WriteError::UnexpectedDataLink { .. }),
        "{err}"
    );
    // recover drops the link (not what it points to) and writing works again.
    writer(dir).recover().unwrap();
    assert!(elsewhere.path().is_dir());
    writer(dir).write(&token_payload(b"t")).unwrap();
    assert_eq!(fs::read(dir.join("token")).unwrap(), b"t");
}

#[test]
fn fs_group_and_fs_user_ownership() {
    if !rustix::process::geteuid().is_root() {
        println!("skipped: needs root");
        return;
    }
    strict_umask();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let gid = 4242;
    let uid = 4243;
    let w = AtomicWriter::new(
        dir,
        WriterOptions {
            fsync: true,
            fs_group: Some(gid),
        },
    );
    let mut p = payload(&[
        ("namespace", b"default", 0o644),
        ("sub/ca.crt", b"ca", 0o600),
    ]);
    p.insert(
        "token".to_owned(),
        FileProjection {
            data: b"tok".as_slice().into(),
            mode: 0o600,
            fs_user: Some(uid),
        },
    );
    w.write(&p).unwrap();
    let version = dir.join(data_target(dir));

    for rel in ["", "sub"] {
        let meta = fs::symlink_metadata(version.join(rel)).unwrap();
        assert_eq!(meta.gid(), gid, "{rel:?}");
        // setgid, plus owner/group read and traverse on top of 0755.
        assert_eq!(meta.mode() & 0o7777, 0o2755, "{rel:?}");
    }
    let expect = [
        ("namespace", 0o644, 0),
        ("sub/ca.crt", 0o640, 0),
        ("token", 0o640, uid),
    ];
    for (rel, mode, owner) in expect {
        let meta = fs::symlink_metadata(version.join(rel)).unwrap();
        assert_eq!(meta.gid(), gid, "{rel}");
        assert_eq!(meta.uid(), owner, "{rel}");
        assert_eq!(meta.mode() & 0o7777, mode, "{rel}");
    }
}
