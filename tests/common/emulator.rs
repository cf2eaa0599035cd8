//! The one `emulate` fixture: started with a builder, its API reachable through [`Api`], its
//! projected directory, CA, admin token and audit log in a directory of the test's.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{https_client, wait_for_file, Api, Running, BIN};

/// How long `emulate` may take to serve and write its first token (debug build, loaded machine).
pub const EMULATE_READY: Duration = Duration::from_secs(20);
/// Upper bound for anything the emulator does "at once" (a rotation, a rebind) on a busy machine.
pub const SOON: Duration = Duration::from_secs(30);
/// Upper bound of one `ctl` or `check` run.
pub const CTL_TIMEOUT: Duration = Duration::from_secs(60);

/// How to start an [`Emulator`]: in a temporary directory of its own unless [`Self::in_dir`],
/// with an ES256 key (fast to generate) and `args` added to `emulate`'s.
#[derive(Debug, Default)]
pub struct EmulatorBuilder {
    root: Option<PathBuf>,
    args: Vec<String>,
}

impl EmulatorBuilder {
    /// Files go to `root` (which the test keeps) instead of a temporary directory.
    pub fn in_dir(mut self, root: &Path) -> Self {
        self.root = Some(root.to_owned());
        self
    }

    /// More `emulate` flags.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// Every token lives `seconds` (`--expiration-seconds`).
    pub fn expiration_seconds(self, seconds: u32) -> Self {
        self.args(&["--expiration-seconds", &seconds.to_string()])
    }

    /// Starts it; returns once the API serves and the first token is on disk.
    pub fn start(self) -> Emulator {
        let temp = match self.root {
            Some(_) => None,
            None => Some(tempfile::tempdir().expect("temp dir")),
        };
        let root = match (&self.root, &temp) {
            (Some(root), _) => root.clone(),
            (None, Some(temp)) => temp.path().to_owned(),
            (None, None) => unreachable!("a temporary directory when no root is given"),
        };
        let dir = root.join("sa");
        let ca_file = root.join("ca.crt");
        let admin_token_file = root.join("admin.token");
        let audit_file = root.join("audit.log");
        let mut args: Vec<String> = vec![
            "emulate".into(),
            format!("--dir={}", dir.display()),
            format!("--ca-out={}", ca_file.display()),
            format!("--admin-token-file={}", admin_token_file.display()),
            format!("--audit-log={}", audit_file.display()),
            "--key-algorithm=es256".into(),
        ];
        args.extend(self.args);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let process = Running::spawn(&args);
        let lines = process.wait_for_stdout("admin token file: ", EMULATE_READY);
        let url = lines
            .iter()
            .find_map(|l| l.strip_prefix("serving https API on "))
            .unwrap_or_else(|| panic!("no URL printed: {lines:?}"))
            .to_owned();
        let ca_pem = std::fs::read_to_string(&ca_file).expect("--ca-out");
        let admin_token = std::fs::read_to_string(&admin_token_file)
            .expect("admin token")
            .trim()
            .to_owned();
        wait_for_file(&dir.join("token"), EMULATE_READY);
        let client = https_client(&ca_pem, &[]);
        Emulator {
            process,
            root,
            dir,
            ca_file,
            admin_token_file,
            audit_file,
            api: Api {
                url,
                ca_pem,
                admin_token,
                client,
            },
            _temp: temp,
        }
    }
}

/// A running `emulate` (killed on drop) and its API (its fields and requests through `Deref`).
pub struct Emulator {
    pub process: Running,
    /// Where its files are (a temporary directory removed on drop, unless the test gave one).
    pub root: PathBuf,
    /// The projected directory of the emulated pod.
    pub dir: PathBuf,
    /// The CA certificate (`--ca-out`), the same as the projected `ca.crt`.
    pub ca_file: PathBuf,
    pub admin_token_file: PathBuf,
    pub audit_file: PathBuf,
    pub api: Api,
    _temp: Option<tempfile::TempDir>,
}

impl std::ops::Deref for Emulator {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

impl Emulator {
    pub fn builder() -> EmulatorBuilder {
        EmulatorBuilder::default()
    }

    /// `emulate` with its files in `root`, plus `extra` flags.
    pub fn start(root: &Path, extra: &[&str]) -> Emulator {
        Self::builder().in_dir(root).args(extra).start()
    }

    /// The token a client would read now.
    pub fn token(&self) -> String {
        std::fs::read_to_string(self.dir.join("token"))
            .expect("token")
            .trim()
            .to_owned()
    }

    /// Waits until the projected token is another than `old` (a rotation happened) and returns it.
    pub fn next_token(&self, old: &str) -> String {
        let deadline = Instant::now() + SOON;
        loop {
            let token = self.token();
            if token != old {
                return token;
            }
            assert!(Instant::now() < deadline, "the token was not rotated");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `ctl ARGS` against this emulator.
    pub fn ctl(&self, args: &[&str]) -> std::process::Output {
        run_ctl(&self.url, &self.ca_file, &self.admin_token_file, args)
    }

    /// `ctl ARGS -o json` that must succeed; its JSON answer.
    pub fn ctl_json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let output = self.ctl(&all);
        assert_ctl_success(&output, args);
        serde_json::from_slice(&output.stdout).expect("ctl -o json prints JSON")
    }

    /// `check ARGS` against this emulator.
    pub fn check(&self, args: &[&str]) -> std::process::Output {
        assert_cmd::Command::new(BIN)
            .arg("check")
            .args(args)
            .env("PROJECTED_TOKEN_SERVER", &self.url)
            .env("PROJECTED_TOKEN_CA", &self.ca_file)
            .env("PROJECTED_TOKEN_TOKEN_FILE", &self.admin_token_file)
            .timeout(CTL_TIMEOUT)
            .output()
            .expect("run check")
    }

    /// The audit events of one control (`projected-token/control` annotation).
    pub fn audit_events(&self, control: &str) -> Vec<Value> {
        std::fs::read_to_string(&self.audit_file)
            .expect("audit log")
            .lines()
            .map(|line| serde_json::from_str::<Value>(line).expect("audit line is JSON"))
            .filter(|event| event["annotations"]["projected-token/control"] == control)
            .collect()
    }
}

/// Asserts `ctl ARGS` succeeded, showing its output otherwise.
pub fn assert_ctl_success(output: &std::process::Output, args: &[&str]) {
    assert!(
        output.status.success(),
        "ctl {args:?}: {:?}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `ctl ARGS` against the API at `url`, trusting `ca`, with the admin token in `token_file`.
pub fn run_ctl(url: &str, ca: &Path, token_file: &Path, args: &[&str]) -> std::process::Output {
    assert_cmd::Command::new(BIN)
        .arg("ctl")
        .args(args)
        .env("PROJECTED_TOKEN_SERVER", url)
        .env("PROJECTED_TOKEN_CA", ca)
        .env("PROJECTED_TOKEN_TOKEN_FILE", token_file)
        .timeout(CTL_TIMEOUT)
        .output()
        .expect("run ctl")
}
