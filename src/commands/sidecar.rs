//! `sidecar`: tokens from a real kube-apiserver (TokenRequest), kept fresh on disk as the kubelet
//! does, through outages, restarts and tampering; hooks tell the app when a token changed.

use std::sync::Arc;

use jiff::SignedDuration;

use super::shared::{shutdown_signal, CommandError};
use super::volumes::{
    drop_ownership_unless_root, load_named_dirs, log_rotation, pod_volumes, recover_volumes,
    single_volume,
};
use crate::cli::SidecarArgs;
use crate::clock::{Clock, SystemClock};
use crate::health::{self, HealthState, RepairCounts};
use crate::hooks::{parse_signal, Hook, HookRunner, SignalTarget};
use crate::projection::spec::{token_volume_source, DataSources, PodInfo};
use crate::refresher::{heal, Backoff, Control, ProjectedVolume, Refresher, RefresherError};
use crate::source::client::http_client;
use crate::source::config::{self, ConnectionSpec};
use crate::source::kube::KubeTokenSource;
use crate::source::TokenSource;

/// The volume name (and log label) of the flag-defined token.
const VOLUME_NAME: &str = "token";

pub async fn run(args: SidecarArgs) -> Result<(), CommandError> {
    let shutdown = shutdown_signal()?;
    let connection = connect(&args)?;
    let client = http_client(&connection).map_err(|e| CommandError::usage(e.to_string()))?;
    let ca_pem = connection
        .ca_pem()
        .map_err(|e| CommandError::usage(e.to_string()))?;
    let namespace = args
        .namespace
        .clone()
        .or_else(|| connection.namespace.clone())
        .unwrap_or_else(|| "default".to_owned());
    let data = DataSources {
        root_ca: ca_pem.into(),
        configmaps: load_named_dirs("--configmap", &args.writing.configmaps)?,
        secrets: load_named_dirs("--secret", &args.writing.secrets)?,
    };
    let mut volumes = plan(&args, &namespace, &data)?;
    drop_ownership_unless_root(&mut volumes);
    let repaired_at_start = recover_volumes(&mut volumes)?;
    let hooks = Arc::new(HookRunner::new(hooks(&args)?, client.clone()));
    let dirs: Vec<_> = volumes
        .iter()
        .map(|v| v.writer.target_dir().to_path_buf())
        .collect();
    tracing::info!(server = %connection.server, identity = %connection.identity, namespace = %namespace, volumes = dirs.len(), "sidecar starting");

    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let source = KubeTokenSource::new(connection, client, clock.clone());
    let backoff = Backoff {
        initial: args.backoff_initial,
        cap: args.backoff_cap.max(args.backoff_initial),
    };
    let repairs = RepairCounts::default();
    let mut refresher = Refresher::new(Arc::new(source), clock.clone(), volumes)
        .with_backoff(backoff)
        .with_repairs_at_start(repaired_at_start)
        .on_rotation(log_rotation)
        .on_repair({
            let repairs = repairs.clone();
            move |event| repairs.record(event)
        });
    if args.once {
        let wait = OnceWait {
            timeout: args.once_timeout,
            backoff,
        };
        return project_once(&mut refresher, wait, clock.as_ref(), shutdown).await;
    }

    // Hooks run on their own task, in order, so a slow one never holds up a refresh.
    if !hooks.hooks().is_empty() {
        let (queue, _worker) = hooks.clone().spawn_worker();
        refresher = refresher.on_rotation(move |event| {
            queue.submit(event.clone());
        });
    }
    let control = refresher.control();
    let _health = match args.metrics_listen {
        Some(addr) => {
            let state = HealthState {
                status: refresher.status_board(),
                clock,
                hook_failures: hook_failures(hooks),
                repairs,
            };
            Some(serve_health(addr, state).await?)
        }
        None => None,
    };
    // SIGHUP refreshes every token now.
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|e| CommandError::failure(format!("cannot listen for SIGHUP: {e}")))?;
    let hangup_control = control.clone();
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            tracing::info!("SIGHUP: refreshing every token now");
            let _ = hangup_control.send(Control::RefreshAll);
        }
    });
    // The watcher lives until run() returns; dropping it stops it.
    let _watcher = heal::watch_volumes(&dirs, control)
        .map_err(|e| CommandError::failure(format!("cannot watch the token directories: {e}")))?;
    refresher
        .run(shutdown)
        .await
        .map_err(|e| CommandError::failure(e.to_string()))?;
    tracing::info!("stopped");
    Ok(())
}

/// How long and how often `--once` tries while the API server is unavailable.
#[derive(Debug, Clone, Copy)]
struct OnceWait {
    timeout: SignedDuration,
    backoff: Backoff,
}

impl OnceWait {
    /// The wait before the next try after `error`, the `failures`-th failure in a row, `elapsed`
    /// after the first try began (`fraction` in [0, 1) draws the jitter); `None` to give up: the
    /// error is not one of availability, or the next try would begin after the timeout.
    fn retry_delay(
        &self,
        error: &RefresherError,
        failures: u32,
        elapsed: SignedDuration,
        fraction: f64,
    ) -> Option<SignedDuration> {
        let RefresherError::Rejected { source, .. } = error else {
            return None; // a write failed: the disk, not the server
        };
        if !source.is_transient() {
            return None;
        }
        let delay = self.backoff.delay(failures, fraction);
        let delay = source.retry_after().map_or(delay, |floor| delay.max(floor));
        (elapsed + delay < self.timeout).then_some(delay)
    }
}

/// `--once`: every token written, retrying while the server is unavailable (an init container
/// may start before the API server answers), within `wait.timeout`.
async fn project_once<S: TokenSource>(
    refresher: &mut Refresher<S>,
    wait: OnceWait,
    clock: &dyn Clock,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), CommandError> {
    let started = clock.now();
    let mut shutdown = std::pin::pin!(shutdown);
    let mut failures = 0;
    loop {
        let err = match refresher.project_once().await {
            Ok(_written) => return Ok(()),
            Err(err) => err,
        };
        failures += 1;
        let elapsed = clock.now().duration_since(started);
        let Some(delay) = wait.retry_delay(&err, failures, elapsed, fastrand::f64()) else {
            return Err(CommandError::failure(match failures {
                1 => err.to_string(),
                _ => format!(
                    "{err} (still failing after {failures} tries in {:.0}s; --once-timeout {:#})",
                    elapsed.as_secs_f64(),
                    wait.timeout
                ),
            }));
        };
        tracing::warn!(
            retry_in = %format!("{delay:#}"),
            "--once: the API server is unavailable; trying again"
        );
        let pause = tokio::time::sleep(std::time::Duration::try_from(delay).unwrap_or_default());
        tokio::select! {
            _ = pause => {}
            _ = &mut shutdown => {
                return Err(CommandError::failure(format!("stopped before every token was written: {err}")));
            }
        }
    }
}

/// Kubeconfig when given, in-cluster otherwise.
fn connect(args: &SidecarArgs) -> Result<ConnectionSpec, CommandError> {
    match &args.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path).map_err(|e| {
                CommandError::usage(format!("--kubeconfig {}: {e}", path.display()))
            })?;
            config::from_kubeconfig(&kubeconfig, args.context.as_deref())
                .map_err(|e| CommandError::usage(format!("--kubeconfig {}: {e}", path.display())))
        }
        None => config::in_cluster(
            std::env::var("KUBERNETES_SERVICE_HOST").ok().as_deref(),
            std::env::var("KUBERNETES_SERVICE_PORT").ok().as_deref(),
            &args.credentials_dir,
        )
        .map_err(|e| CommandError::usage(e.to_string())),
    }
}

/// The volumes to keep: every projected volume of --pod, or one from the flags.
fn plan(
    args: &SidecarArgs,
    namespace: &str,
    data: &DataSources,
) -> Result<Vec<ProjectedVolume>, CommandError> {
    let fsync = !args.writing.no_fsync;
    if let Some(path) = &args.pod {
        let mut volumes = pod_volumes(&args.dir, path, data, fsync, false)?;
        for volume in &mut volumes {
            // The target namespace wins over the manifest's when given.
            if args.namespace.is_some() || volume.pod.namespace.is_empty() {
                volume.pod.namespace = namespace.to_owned();
            }
        }
        return Ok(volumes);
    }
    let info = PodInfo {
        namespace: namespace.to_owned(),
        name: args.bound_pod_name.clone().unwrap_or_default(),
        uid: args.bound_pod_uid.clone().unwrap_or_default(),
        service_account: args.service_account.clone(),
        ..PodInfo::default()
    };
    single_volume(
        &args.dir,
        VOLUME_NAME,
        &token_volume_source(args.audience.clone(), args.expiration_seconds),
        info,
        data,
        fsync,
    )
}

fn hooks(args: &SidecarArgs) -> Result<Vec<Hook>, CommandError> {
    let mut hooks = Vec::new();
    let timeout = std::time::Duration::try_from(args.hook_timeout)
        .map_err(|_| CommandError::usage("--hook-timeout must be positive, e.g. 30s".to_owned()))?;
    if let Some(name) = &args.on_rotate_signal {
        let signal = parse_signal(name)
            .map_err(|e| CommandError::usage(format!("--on-rotate-signal {name:?}: {e}")))?;
        let target = match (&args.signal_pid, &args.signal_pid_file) {
            (Some(pid), _) => SignalTarget::Pid(*pid),
            (None, Some(path)) => SignalTarget::PidFile(path.clone()),
            (None, None) => {
                return Err(CommandError::usage(
                    "--on-rotate-signal needs --signal-pid or --signal-pid-file",
                ))
            }
        };
        hooks.push(Hook::Signal { target, signal });
    } else if args.signal_pid.is_some() || args.signal_pid_file.is_some() {
        return Err(CommandError::usage(
            "--signal-pid/--signal-pid-file need --on-rotate-signal (e.g. HUP)",
        ));
    }
    if let Some(command) = &args.on_rotate_exec {
        let argv: Vec<String> = command.split_whitespace().map(str::to_owned).collect();
        if argv.is_empty() {
            return Err(CommandError::usage(
                "--on-rotate-exec is empty; give a command",
            ));
        }
        hooks.push(Hook::Exec {
            command: argv,
            timeout,
        });
    }
    if let Some(url) = &args.on_rotate_http {
        hooks.push(Hook::Http {
            url: url.clone(),
            timeout,
        });
    }
    Ok(hooks)
}

/// The hooks' failure counts by kind, read at scrape time.
fn hook_failures(hooks: Arc<HookRunner>) -> health::HookFailures {
    Arc::new(move || {
        let failures = hooks.failures();
        vec![
            ("signal", failures.signal),
            ("exec", failures.exec),
            ("http", failures.http),
        ]
    })
}

/// Serves /healthz, /readyz and /metrics until the process ends.
async fn serve_health(
    addr: std::net::SocketAddr,
    state: HealthState,
) -> Result<tokio::task::JoinHandle<()>, CommandError> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        CommandError::failure(format!("--metrics-listen {addr}: {e}; pick another port"))
    })?;
    let local = listener
        .local_addr()
        .map_err(|e| CommandError::failure(format!("--metrics-listen {addr}: {e}")))?;
    println!("serving health and metrics on http://{local}");
    let app = health::router(state);
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "health endpoint stopped");
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::SourceError;

    fn failed(source: SourceError) -> RefresherError {
        RefresherError::Rejected {
            volume: "token".into(),
            path: "token".into(),
            source,
        }
    }

    #[test]
    fn once_retries_only_unavailability_and_only_within_its_timeout() {
        let secs = SignedDuration::from_secs;
        let wait = OnceWait {
            timeout: secs(60),
            backoff: Backoff {
                initial: secs(1),
                cap: secs(8),
            },
        };
        let refused = failed(SourceError::Unavailable("connection refused".into()));
        assert_eq!(wait.retry_delay(&refused, 1, secs(0), 1.0), Some(secs(1)));
        assert_eq!(wait.retry_delay(&refused, 5, secs(10), 1.0), Some(secs(8)));
        assert_eq!(wait.retry_delay(&refused, 5, secs(52), 1.0), None);
        let throttled = failed(SourceError::Throttled {
            message: "429".into(),
            retry_after: secs(20),
        });
        assert_eq!(
            wait.retry_delay(&throttled, 1, secs(0), 0.5),
            Some(secs(20))
        );
        assert_eq!(wait.retry_delay(&throttled, 1, secs(45), 0.5), None);
        for fatal in [
            failed(SourceError::Refused("403 Forbidden".into())),
            failed(SourceError::Rejected("422".into())),
            RefresherError::Write {
                volume: "token".into(),
                message: "disk full".into(),
            },
        ] {
            assert_eq!(wait.retry_delay(&fatal, 1, secs(0), 1.0), None, "{fatal}");
        }
        let no_wait = OnceWait {
            timeout: SignedDuration::ZERO,
            ..wait
        };
        assert_eq!(no_wait.retry_delay(&refused, 1, secs(0), 0.0), None);
    }
}
