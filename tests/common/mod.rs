//! Helpers shared by the end-to-end tests: run the real binary, read its logs, check a layout.
#![allow(dead_code)] // each test binary uses a different subset

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_projected-token");

/// A running `projected-token` process whose stderr lines arrive on a channel. Killed on drop.
pub struct Running {
    pub child: Child,
    pub stderr: Receiver<String>,
    pub stdout: Receiver<String>,
}

impl Running {
    pub fn spawn(args: &[&str]) -> Self {
        let mut child = Command::new(BIN)
            .args(args)
            .env("PROJECTED_TOKEN_LOG", "info")
            // Every test gets its own free port; 6443 would collide between parallel tests.
            .env("PROJECTED_TOKEN_LISTEN", "127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn projected-token");
        let stderr = lines(child.stderr.take().expect("stderr"));
        let stdout = lines(child.stdout.take().expect("stdout"));
        Self {
            child,
            stderr,
            stdout,
        }
    }

    /// Waits for a stderr line containing `needle`; panics with what was seen on timeout.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(line) => seen.push(line),
                Err(_) => panic!(
                    "no log line with {needle:?} within {timeout:?}; saw:\n{}",
                    seen.join("\n")
                ),
            }
        }
    }

    /// Waits for a stdout line containing `needle`; panics with what was seen on timeout.
    pub fn wait_for_stdout(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(line) => seen.push(line),
                Err(_) => panic!(
                    "no stdout line with {needle:?} within {timeout:?}; saw:\n{}",
                    seen.join("\n")
                ),
            }
        }
    }

    pub fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).expect("pid");
        let _ = rustix::process::kill_process(pid, signal);
    }

    /// Waits for exit, up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "process did not exit within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn lines(stream: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Asserts the kubelet's layout in `dir` with exactly `names` visible, and returns the
/// timestamped directory `..data` points to.
pub fn assert_consistent_layout(dir: &Path, names: &[&str]) -> PathBuf {
    let data_target = std::fs::read_link(dir.join("..data")).expect("..data is a symlink");
    let ts_name = data_target.to_string_lossy().into_owned();
    assert!(
        is_timestamp_dir_name(&ts_name),
        "..data points to {ts_name:?}, not a timestamped dir"
    );
    let ts_dir = dir.join(&data_target);
    let meta = std::fs::metadata(&ts_dir).expect("..data target exists");
    assert!(meta.is_dir());
    assert_eq!(
        meta.permissions().mode() & 0o7777,
        0o755,
        "timestamped dir mode"
    );

    let mut hidden = BTreeSet::new();
    let mut visible = BTreeSet::new();
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let name = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        if name.starts_with("..") {
            hidden.insert(name);
        } else {
            visible.insert(name);
        }
    }
    let expected_hidden: BTreeSet<String> = ["..data".to_owned(), ts_name.clone()].into();
    assert_eq!(
        hidden, expected_hidden,
        "hidden entries (orphans or ..data_tmp left?)"
    );
    let expected_visible: BTreeSet<String> = names.iter().map(|s| s.to_string()).collect();
    assert_eq!(visible, expected_visible, "visible entries");
    for name in names {
        let link = std::fs::read_link(dir.join(name)).expect("visible name is a symlink");
        assert_eq!(link, Path::new("..data").join(name), "{name} link target");
        let resolved = std::fs::metadata(dir.join(name)).expect("resolves");
        if resolved.is_file() {
            let content = std::fs::read(dir.join(name)).expect("readable");
            assert!(!content.is_empty(), "{name} is empty");
        }
    }
    ts_dir
}

/// `..YYYY_MM_DD_HH_MM_SS.<digits>`
pub fn is_timestamp_dir_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("..") else {
        return false;
    };
    let Some((stamp, suffix)) = rest.split_once('.') else {
        return false;
    };
    let parts: Vec<&str> = stamp.split('_').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        && parts[0].len() == 4
        && !suffix.is_empty()
        && suffix.bytes().all(|b| b.is_ascii_digit())
}

/// Writes a fresh ES256 signing key (fast to generate and verify) and returns its JWKS.
pub fn write_signing_key(path: &Path) -> serde_json::Value {
    let key =
        projected_token::issuer::SigningKey::generate(projected_token::issuer::KeyAlgorithm::Es256)
            .expect("generate key");
    std::fs::write(path, key.private_key_pem()).expect("write key");
    projected_token::issuer::jwks::jwks_document(&[&key])
}

/// Waits until `path` exists.
pub fn wait_for_file(path: &Path, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} did not appear within {timeout:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}
