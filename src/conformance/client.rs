//! The client under test: one process (group) per scenario, started with an unmodified
//! in-cluster environment (`KUBERNETES_SERVICE_HOST`/`PORT`, and `KUBECONFIG` for clients that
//! prefer one), its volume at the in-cluster path where the system allows it, its output in the
//! scenario's log file, and its whole process group stopped at the end.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use rustix::process::{kill_process_group, Pid, Signal};

use super::in_cluster_mount::{InClusterMount, MountError};

/// What to start, and what it sees.
#[derive(Debug, Clone)]
pub struct Launch<'a> {
    /// The program and its arguments, as given after `--`.
    pub command: &'a [OsString],
    /// Where the emulated API listens.
    pub api: SocketAddr,
    /// The scenario's projected volume.
    pub volume_dir: &'a Path,
    /// A kubeconfig whose user reads the volume's token file.
    pub kubeconfig: &'a Path,
    /// Where the client's stdout and stderr go.
    pub log: &'a Path,
    /// Put the volume at the in-cluster path in a mount namespace of the client's own.
    pub mount_in_cluster: bool,
}

/// Why a client could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no client command: give one after `--`")]
    NoCommand,
    #[error("client log {}: {source}", path.display())]
    Log {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Mount(#[from] MountError),
    #[error("cannot start {program:?}: {source}")]
    Spawn {
        program: OsString,
        source: std::io::Error,
    },
}

/// The variables an in-cluster client reads, for a client of the API at `api`, plus `KUBECONFIG`.
pub fn in_cluster_env(api: SocketAddr, kubeconfig: &Path) -> Vec<(&'static str, OsString)> {
    // As in a pod: the address alone (client-go joins host and port itself, bracketing IPv6).
    let host = api.ip().to_string();
    let port = api.port().to_string();
    vec![
        ("KUBERNETES_SERVICE_HOST", host.into()),
        ("KUBERNETES_SERVICE_PORT", port.clone().into()),
        ("KUBERNETES_SERVICE_PORT_HTTPS", port.into()),
        ("KUBECONFIG", kubeconfig.as_os_str().to_owned()),
    ]
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> &str {
    let trimmed = text.trim_end_matches('\n');
    let start = trimmed
        .rmatch_indices('\n')
        .nth(lines.saturating_sub(1))
        .map_or(0, |(at, _)| at + 1);
    if lines == 0 {
        ""
    } else {
        &trimmed[start..]
    }
}

/// A running client.
#[derive(Debug)]
pub struct Client {
    child: tokio::process::Child,
    /// The process group: the client and whatever it started.
    group: Option<Pid>,
    log: PathBuf,
}

impl Client {
    /// Starts the client in a process group of its own.
    pub fn spawn(launch: &Launch<'_>) -> Result<Self, ClientError> {
        use std::os::unix::process::CommandExt as _;
        let (program, args) = launch.command.split_first().ok_or(ClientError::NoCommand)?;
        let log_error = |source| ClientError::Log {
            path: launch.log.to_owned(),
            source,
        };
        let log = std::fs::File::create(launch.log).map_err(log_error)?;
        let log_err = log.try_clone().map_err(log_error)?;
        let mut command = std::process::Command::new(program);
        command
            .args(args)
            .envs(in_cluster_env(launch.api, launch.kubeconfig))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .process_group(0);
        if launch.mount_in_cluster {
            InClusterMount::new(launch.volume_dir)?.apply(&mut command);
        }
        let mut command = tokio::process::Command::from(command);
        command.kill_on_drop(true);
        let child = command.spawn().map_err(|source| ClientError::Spawn {
            program: program.clone(),
            source,
        })?;
        let group = child.id().and_then(|id| Pid::from_raw(id as i32));
        Ok(Self {
            child,
            group,
            log: launch.log.to_owned(),
        })
    }

    /// How it ended, if it has.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The last `lines` lines of its output so far.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read(&self.log).unwrap_or_default();
        tail(&String::from_utf8_lossy(&text), lines).to_owned()
    }

    /// Stops the whole process group: SIGTERM, then SIGKILL after `grace`. Returns how the
    /// client itself ended.
    pub async fn stop(mut self, grace: Duration) -> Option<ExitStatus> {
        if let Some(group) = self.group {
            let _ = kill_process_group(group, Signal::TERM);
        }
        let ended = tokio::time::timeout(grace, self.child.wait()).await;
        if let Some(group) = self.group {
            // What it started may outlive it: the group goes in any case.
            let _ = kill_process_group(group, Signal::KILL);
        }
        match ended {
            Ok(status) => status.ok(),
            Err(_) => self.child.wait().await.ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails_count_lines_from_the_end() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a\nb\nc", 5), "a\nb\nc");
        assert_eq!(tail("a\nb\nc", 1), "c");
        assert_eq!(tail("", 3), "");
        assert_eq!(tail("a\n", 0), "");
    }

    #[test]
    fn the_environment_is_a_pods() {
        let env = in_cluster_env("[::1]:6443".parse().expect("addr"), Path::new("/k/config"));
        let get = |key: &str| env.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone());
        assert_eq!(get("KUBERNETES_SERVICE_HOST"), Some("::1".into()));
        assert_eq!(get("KUBERNETES_SERVICE_PORT"), Some("6443".into()));
        assert_eq!(get("KUBERNETES_SERVICE_PORT_HTTPS"), Some("6443".into()));
        assert_eq!(get("KUBECONFIG"), Some("/k/config".into()));
    }
}
