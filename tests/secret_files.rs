//! End-to-end tests of the files `serve` and `emulate` write outside projected volumes (the
//! admin token, the admin client key, `--ca-out`, the audit log): nothing planted at a path is
//! written through, and a secret is read back only from the user's own private file.

mod common;

use std::os::unix::fs::{symlink, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{output_within, Running, BIN};
use rustix::process::Signal;

const STARTUP: Duration = Duration::from_secs(30);
/// Long enough for a start that fails on its flags; a server that starts instead runs past it.
const REFUSAL: Duration = Duration::from_secs(15);

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).expect("metadata").mode() & 0o7777
}

/// `serve` with `args`, expected to refuse its flags: the exit code and stderr.
fn refused(args: &[&str]) -> (Option<i32>, String) {
    let output = output_within(
        Command::new(BIN)
            .arg("serve")
            .args(args)
            .env("PROJECTED_TOKEN_LISTEN", "127.0.0.1:0"),
        REFUSAL,
    );
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The attack of the trial: another user predicts the default admin token path from the pid and
/// plants a link there before the server starts. The token goes to a private directory instead,
/// the link's target is untouched, and the directory is gone after exit.
#[test]
fn default_admin_token_lives_in_a_private_directory_not_at_a_planted_link() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let victim = tmp.path().join("victim");
    std::fs::write(&victim, "root-owned file\n").expect("victim");
    let scratch = tempfile::tempdir().expect("scratch");
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(r#"ln -s "$1" "$TMPDIR/projected-token-$$.admin-token"; exec "$2" serve --ephemeral"#)
        .arg("sh")
        .arg(&victim)
        .arg(BIN)
        .env("TMPDIR", tmp.path())
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("PROJECTED_TOKEN_ADMIN_TOKEN_FILE");
    let mut serve = Running::from_command(command, scratch);
    let lines = serve.wait_for_stdout("admin token file: ", STARTUP);
    let printed = lines
        .last()
        .and_then(|l| l.strip_prefix("admin token file: "))
        .map(PathBuf::from)
        .expect("admin token line");

    assert_eq!(
        std::fs::read_to_string(&victim).expect("victim"),
        "root-owned file\n",
        "the planted link's target was written"
    );
    let dir = printed.parent().expect("a directory").to_path_buf();
    assert!(dir.starts_with(tmp.path()), "{}", dir.display());
    assert!(std::fs::symlink_metadata(&printed)
        .expect("token")
        .is_file());
    assert_eq!(mode(&printed), 0o600, "admin token mode");
    assert_eq!(mode(&dir), 0o700, "its directory is private");
    let user = rustix::process::geteuid().as_raw();
    assert_eq!(std::fs::metadata(&dir).expect("dir").uid(), user);
    assert!(std::fs::read_to_string(&printed)
        .expect("token")
        .trim()
        .len()
        .ge(&40));

    serve.signal(Signal::TERM);
    assert!(serve.wait_exit(STARTUP).success());
    assert!(!dir.exists(), "the private directory is removed at exit");
}

/// An existing `--admin-token-file` is read only when it is this user's private regular file:
/// one others can read (they would know the admin token), a link to nothing (creating it would
/// create the link's target) and a FIFO (reading would hang) are refused with exit 2.
#[test]
fn admin_token_file_is_read_only_when_private_and_regular() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let readable = tmp.path().join("readable.token");
    std::fs::write(&readable, "guessed-by-others").expect("write");
    std::fs::set_permissions(&readable, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let dangling = tmp.path().join("dangling.token");
    let target = tmp.path().join("created-through-link");
    symlink(&target, &dangling).expect("symlink");
    let fifo = tmp.path().join("fifo.token");
    rustix::fs::mkfifoat(rustix::fs::CWD, &fifo, rustix::fs::Mode::from(0o600)).expect("mkfifo");

    let mut cases = vec![
        (
            readable.clone(),
            "readable or writable by group or others (mode 0644)",
        ),
        (dangling.clone(), "is a symbolic link"),
        (fifo.clone(), "is not a regular file (a FIFO)"),
    ];
    let foreign = tmp.path().join("foreign.token");
    if rustix::process::geteuid().is_root() {
        // Planted by another user: only root can make such a file here.
        std::fs::write(&foreign, "theirs").expect("write");
        std::fs::set_permissions(&foreign, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        rustix::fs::chown(
            &foreign,
            Some(rustix::fs::Uid::from_raw(65534)),
            Some(rustix::fs::Gid::from_raw(65534)),
        )
        .expect("chown");
        cases.push((foreign.clone(), "owned by uid 65534, not by this user"));
    } else {
        eprintln!("SKIPPED (one case): a file owned by another user needs root to create");
    }
    for (path, expected) in cases {
        let arg = format!("--admin-token-file={}", path.display());
        let (code, stderr) = refused(&[&arg]);
        assert_eq!(code, Some(2), "{}: {stderr}", path.display());
        assert!(stderr.contains("--admin-token-file"), "{stderr}");
        assert!(stderr.contains(expected), "{}: {stderr}", path.display());
    }
    assert!(
        !target.exists(),
        "nothing was created through the dangling link"
    );
    assert_eq!(mode(&readable), 0o644, "the refused file is left as it was");
}

/// A private, empty `--admin-token-file` of the user's own gets a token; a new one is created
/// with mode 0600.
#[test]
fn admin_token_file_of_our_own_is_filled_or_created() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let empty = tmp.path().join("empty.token");
    std::fs::write(&empty, "").expect("write");
    std::fs::set_permissions(&empty, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let fresh = tmp.path().join("fresh.token");
    for path in [&empty, &fresh] {
        let mut serve =
            Running::spawn(&["serve", &format!("--admin-token-file={}", path.display())]);
        let lines = serve.wait_for_stdout("admin token file: ", STARTUP);
        assert_eq!(
            lines
                .last()
                .and_then(|l| l.strip_prefix("admin token file: ")),
            path.to_str()
        );
        let written = std::fs::read_to_string(path).expect("token file");
        assert_eq!(
            written.trim().len(),
            43,
            "32 random bytes, base64url: {written}"
        );
        assert_eq!(mode(path), 0o600);
        serve.signal(Signal::TERM);
        assert!(serve.wait_exit(STARTUP).success());
        assert!(path.exists(), "a given admin token file is kept at exit");
    }
}

/// `--ca-out`, `--admin-client-cert-out` and `--audit-log` never write through a planted link;
/// the admin client key needs a directory only this user can write.
#[test]
fn certificates_keys_and_audit_log_are_not_written_through_links() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let victim = tmp.path().join("victim");
    std::fs::write(&victim, "keep me\n").expect("victim");
    let ca_out = tmp.path().join("ca.crt");
    symlink(&victim, &ca_out).expect("symlink");
    let certs = tmp.path().join("certs");
    std::fs::create_dir(&certs).expect("mkdir");
    symlink(&victim, certs.join("admin.key")).expect("symlink");
    symlink(&victim, certs.join("admin.crt")).expect("symlink");

    let admin = tmp.path().join("admin.token");
    let mut serve = Running::spawn(&[
        "serve",
        &format!("--admin-token-file={}", admin.display()),
        &format!("--ca-out={}", ca_out.display()),
        &format!("--admin-client-cert-out={}", certs.display()),
    ]);
    serve.wait_for_stdout("admin token file: ", STARTUP);
    assert_eq!(
        std::fs::read_to_string(&victim).expect("victim"),
        "keep me\n"
    );
    for (path, expected_mode, begins) in [
        (ca_out.clone(), 0o644, "-----BEGIN CERTIFICATE-----"),
        (
            certs.join("admin.crt"),
            0o644,
            "-----BEGIN CERTIFICATE-----",
        ),
        (
            certs.join("admin.key"),
            0o600,
            "-----BEGIN PRIVATE KEY-----",
        ),
    ] {
        assert!(
            std::fs::symlink_metadata(&path).expect("meta").is_file(),
            "{} replaced by a file",
            path.display()
        );
        assert_eq!(mode(&path), expected_mode, "{}", path.display());
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.starts_with(begins), "{}: {text}", path.display());
    }
    serve.signal(Signal::TERM);
    assert!(serve.wait_exit(STARTUP).success());

    let shared = tmp.path().join("shared");
    std::fs::create_dir(&shared).expect("mkdir");
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let audit = tmp.path().join("audit.log");
    symlink(&victim, &audit).expect("symlink");
    for (arg, expected) in [
        (
            format!("--admin-client-cert-out={}", shared.display()),
            "writable by group or others (mode 0777)",
        ),
        (
            format!("--audit-log={}", audit.display()),
            "is a symbolic link",
        ),
    ] {
        let admin_arg = format!("--admin-token-file={}", admin.display());
        let (code, stderr) = refused(&[&admin_arg, &arg]);
        assert_eq!(code, Some(2), "{arg}: {stderr}");
        assert!(stderr.contains(expected), "{arg}: {stderr}");
    }
    assert_eq!(
        std::fs::read_to_string(&victim).expect("victim"),
        "keep me\n"
    );
    assert!(std::fs::read_dir(&shared).expect("ls").next().is_none());
}
