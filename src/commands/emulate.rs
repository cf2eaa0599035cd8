//! `emulate`: the embedded issuer plus the kubelet's projector, no cluster needed; by default it
//! also serves the emulated API (as `serve`), whose usage ledger learns of every rotation.
//! `--pods` projects the volumes of thousands of pods from one process, as one kubelet does.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::serve::print_api_summary;
use super::setup::{bind_listeners, key_ring, load_issuer, load_objects, start_api, LoadedIssuer};
use super::shared::{shutdown_signal, CommandError};
use super::volumes::{
    drop_ownership_unless_root, load_named_dirs, log_rotation, pod_volumes, pods_volumes,
    recover_volumes, single_volume, PodSet,
};
use crate::apiserver::authn::lock;
use crate::apiserver::ledger::{LedgerLimits, Rotation};
use crate::apiserver::metrics::RepairLabels;
use crate::apiserver::projector::{ProjectedPod, ProjectedVolumeRef, Projector};
use crate::apiserver::request::ApiState;
use crate::cli::EmulateArgs;
use crate::clock::{Clock, SystemClock};
use crate::issuer::objects::{ObjectStore, StoredPod};
use crate::names;
use crate::projection::spec::{default_volume_name, default_volume_source, DataSources, PodInfo};
use crate::refresher::{heal, Control, ProjectedVolume, Refresher, RotationEvent};
use crate::source::{LifetimeOverride, LocalIssuerSource, SourceError};

pub async fn run(args: EmulateArgs) -> Result<(), CommandError> {
    // Registered first, so a signal during start-up is not fatal.
    let shutdown = shutdown_signal()?;
    run_until(args, shutdown, Announce::Stdout).await
}

/// Where a started emulator says it is ready.
#[derive(Debug)]
pub enum Announce {
    /// The summary and the API's URLs on stdout, as the command prints them.
    Stdout,
    /// Nothing printed: `Ready` sent once the API serves and every volume was written (for an
    /// emulator run in-process, as the conformance runner and test suites do).
    Channel(tokio::sync::oneshot::Sender<Ready>),
}

/// A started emulator: where its API serves and where its volumes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    /// `https://host:port` of each listener (none with `--no-serve`).
    pub api_urls: Vec<String>,
    pub admin_token_file: Option<std::path::PathBuf>,
    /// Each projected volume's directory, in the order planned.
    pub volume_dirs: Vec<std::path::PathBuf>,
}

/// An emulator running in this process on the current runtime ([`run_until`] with
/// [`Announce::Channel`]), for the conformance runner and test suites.
#[derive(Debug)]
pub struct InProcess {
    pub ready: Ready,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), CommandError>>,
}

impl InProcess {
    /// Starts `args` and waits up to `timeout` until it serves and every volume was written.
    pub async fn start(
        args: EmulateArgs,
        timeout: std::time::Duration,
    ) -> Result<Self, CommandError> {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(run_until(
            args,
            async move {
                let _ = stopped.await;
            },
            Announce::Channel(ready_tx),
        ));
        match tokio::time::timeout(timeout, ready_rx).await {
            Ok(Ok(ready)) => Ok(Self { ready, stop, task }),
            _ => {
                let _ = stop.send(());
                Err(match task.await {
                    Ok(Err(e)) => e,
                    _ => CommandError::failure(format!(
                        "the emulator was not ready within {}s",
                        timeout.as_secs()
                    )),
                })
            }
        }
    }

    /// Stops it and waits for the end; its result.
    pub async fn stop(self) -> Result<(), CommandError> {
        let _ = self.stop.send(());
        self.task.await.map_err(|e| {
            CommandError::failure(format!("the emulator's task ended abnormally: {e}"))
        })?
    }
}

/// `emulate` until `shutdown` completes, announcing itself as `announce` says.
pub async fn run_until(
    args: EmulateArgs,
    shutdown: impl std::future::Future<Output = ()>,
    announce: Announce,
) -> Result<(), CommandError> {
    // Bound before anything is written: a taken port leaves no empty --dir behind.
    let listeners = (!args.no_serve)
        .then(|| bind_listeners(&args.server))
        .transpose()?;
    let loaded = load_issuer(&args.issuer).await?;
    let data = DataSources {
        root_ca: loaded.ca.cert_pem().as_bytes().into(),
        configmaps: load_named_dirs("--configmap", &args.writing.configmaps)?,
        secrets: load_named_dirs("--secret", &args.writing.secrets)?,
    };
    let planning = Instant::now();
    let planned = plan_volumes(&args, &data, &loaded)?;
    let mut volumes = planned.volumes;
    drop_ownership_unless_root(&mut volumes);
    let tokens: usize = volumes.iter().map(|v| v.plan.token_specs().count()).sum();
    if let Some(set) = &planned.pod_set {
        tracing::info!(
            pods = set.pods,
            files = set.files,
            skipped = set.skipped.len(),
            volumes = volumes.len(),
            tokens,
            elapsed_ms = planning.elapsed().as_millis(),
            "planned the pods"
        );
    }
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let objects = Arc::new(Mutex::new(load_objects(&args.server, clock.clone())?));
    register_pods(&mut lock(&objects), &volumes, &loaded);
    if matches!(announce, Announce::Stdout) {
        print_summary(
            &args,
            &loaded,
            &volumes,
            planned.pod_set.as_ref(),
            &lock(&objects),
        );
    }

    let keys = key_ring(&loaded)?;
    // Changeable at run time through the API's lifetime control.
    let lifetime = LifetimeOverride::new(args.expiration_seconds);
    let mut source = LocalIssuerSource::new(keys.clone(), clock.clone(), lifetime.clone(), {
        let objects = objects.clone();
        move |namespace: &str, name: &str| {
            lock(&objects)
                .service_account(namespace, name)
                .map(|sa| sa.uid.clone())
                .unwrap_or_default()
        }
    })
    .with_node_uids({
        let objects = objects.clone();
        move |node: &str| lock(&objects).node(node).map(|n| n.uid.clone())
    });
    if let Some(age) = args.first_token_age.filter(|age| age.is_positive()) {
        source = source.with_first_token_age(age);
    }

    let preparing = Instant::now();
    let repaired_at_start = recover_volumes(&mut volumes)?;
    if planned.pod_set.is_some() {
        tracing::info!(
            volumes = volumes.len(),
            elapsed_ms = preparing.elapsed().as_millis(),
            "prepared the volume directories"
        );
    }

    let pods = ProjectedPods::new(&volumes);
    let dirs: Vec<_> = volumes
        .iter()
        .map(|v| v.writer.target_dir().to_path_buf())
        .collect();
    let api = if let Some(listeners) = listeners {
        let limits = ledger_limits(tokens, pods.len());
        let api = start_api(
            &loaded,
            keys,
            objects,
            clock.clone(),
            &args.server,
            limits,
            listeners,
        )
        .await?;
        if matches!(announce, Announce::Stdout) {
            print_api_summary(&api);
        }
        // The projector is the kubelet of this emulated cluster: during a simulated API outage
        // its TokenRequests fail too, and are retried once the outage is over.
        source = source.with_availability(outage_check(api.state.clone(), clock.clone()));
        Some(api)
    } else {
        None
    };
    let mut refresher = Refresher::new(Arc::new(source), clock.clone(), volumes)
        .with_repairs_at_start(repaired_at_start)
        .on_rotation(log_rotation);
    if planned.pod_set.is_some() {
        // Thousands of pods start at once here, never on a kubelet (110 pods by default).
        refresher = refresher.spread_start();
    }
    if let Some(api) = &api {
        let projector = EmulatorProjector {
            control: refresher.control(),
            pods,
            lifetime,
        };
        let _ = api.state.projector.set(Arc::new(projector));
        let state = api.state.clone();
        refresher = refresher.on_repair(move |event| {
            state.metrics.observe_repair(&RepairLabels {
                namespace: event.namespace.clone(),
                pod: event.pod.clone(),
                volume: event.volume.clone(),
                path: event.path.clone(),
                found: event.found.label().to_owned(),
            });
        });
        // Rotations reach the usage ledger, so later uses of a replaced token are "superseded".
        let state = api.state.clone();
        refresher = refresher.on_rotation(move |event| {
            if let Some(scheduled) = event.scheduled_at {
                let late = event.published_at.duration_since(scheduled);
                state.metrics.observe_rotation_lateness(late.as_secs_f64());
            }
            state.record_rotation(rotation_of(event));
        });
    }
    // A watcher puts back what someone changes in a volume at once, as the sidecar's does. Not
    // with --pods: thousands of directories would take as many inotify watches, and every
    // rotation would be followed by a check of its volume (twice the file system calls of the
    // scale figures); there each rotation puts its volume's links right instead.
    let _watcher = match planned.pod_set {
        Some(_) => None,
        None => Some(
            heal::watch_volumes(&dirs, refresher.control()).map_err(|e| {
                CommandError::failure(format!("cannot watch the volume directories: {e}"))
            })?,
        ),
    };
    if let Announce::Channel(ready) = announce {
        let (projected, first_projection) = tokio::sync::oneshot::channel();
        refresher = refresher.on_first_projection(projected);
        let api_urls = api.as_ref().map(|a| a.urls.clone()).unwrap_or_default();
        let admin_token_file = api.as_ref().map(|a| a.admin_token_file.path());
        let volume_dirs = dirs.clone();
        tokio::spawn(async move {
            if first_projection.await.is_ok() {
                let _ = ready.send(Ready {
                    api_urls,
                    admin_token_file,
                    volume_dirs,
                });
            }
        });
    }
    let result = refresher.run(shutdown).await;
    if let Some(api) = api {
        api.shutdown().await;
    }
    result.map_err(|e| CommandError::failure(e.to_string()))?;
    tracing::info!("stopped");
    Ok(())
}

/// The usage ledger's limits for `token_paths` projected tokens of `pods` pods. Up to the
/// default number of paths the defaults hold. Beyond, every path keeps a history (none is
/// forgotten and re-learnt on every rotation) and every pod can be a client, while the replaced
/// tokens remembered per path shrink so that all of them stay within about
/// [`REPLACED_TOKENS_BUDGET`] (some 465 bytes each): 4 per path at 10,000 paths. A client still
/// using a token is caught at its first use after the rotation; one idle for more than that many
/// rotations and then using its old token is no longer recognised as superseded.
fn ledger_limits(token_paths: usize, pods: usize) -> LedgerLimits {
    let defaults = LedgerLimits::default();
    if token_paths <= defaults.paths {
        return defaults;
    }
    let clients = defaults.clients.max(pods);
    LedgerLimits {
        paths: token_paths,
        clients,
        replaced_tokens_per_path: (REPLACED_TOKENS_BUDGET / token_paths).clamp(
            MIN_REPLACED_TOKENS_PER_PATH,
            defaults.replaced_tokens_per_path,
        ),
        // The report's token spans share a budget too: the defaults' 4096 clients x 64.
        tokens_per_client: (defaults.clients * defaults.tokens_per_client / clients)
            .clamp(MIN_TOKENS_PER_CLIENT, defaults.tokens_per_client),
        ..defaults
    }
}

/// Token spans kept per client at the least, however many pods: enough for a timeline of the
/// last few reloads.
const MIN_TOKENS_PER_CLIENT: usize = 8;

/// Replaced tokens the ledger may remember in all when it is sized beyond its defaults (~19 MiB).
const REPLACED_TOKENS_BUDGET: usize = 40_960;
/// Fewer than this and a client idle for a rotation or two is no longer recognised.
const MIN_REPLACED_TOKENS_PER_PATH: usize = 4;

/// Fails a token request while the API is in a simulated outage, with the time left as the
/// `Retry-After`.
fn outage_check(
    state: Arc<ApiState>,
    clock: Arc<dyn Clock>,
) -> impl Fn() -> Result<(), SourceError> + Send + Sync + 'static {
    move || {
        let now = clock.now();
        match state.outage.current(now) {
            Some(outage) => Err(SourceError::Throttled {
                message: format!(
                    "the emulated API server is in a simulated outage ({})",
                    outage.mode.as_str()
                ),
                retry_after: outage.remaining(now),
            }),
            None => Ok(()),
        }
    }
}

/// The controls' handle on the refresher: which pods it projects, rotations on demand, and the
/// lifetime of the tokens it mints.
struct EmulatorProjector {
    control: tokio::sync::mpsc::UnboundedSender<Control>,
    pods: ProjectedPods,
    lifetime: LifetimeOverride,
}

impl Projector for EmulatorProjector {
    fn pods(&self) -> Vec<ProjectedPod> {
        self.pods.pods.clone()
    }

    fn rotate(&self, pod: Option<(&str, &str)>) -> Option<Vec<ProjectedVolumeRef>> {
        let (control, volumes) = match pod {
            None => (
                Control::RefreshAll,
                self.pods
                    .pods
                    .iter()
                    .flat_map(|p| p.volumes.iter().cloned())
                    .collect(),
            ),
            Some((namespace, name)) => (
                Control::RefreshPod {
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                },
                self.pods.get(namespace, name)?.volumes.clone(),
            ),
        };
        // The refresher is gone only while the process stops; nothing to rotate then.
        let _ = self.control.send(control);
        Some(volumes)
    }

    fn lifetime(&self) -> Option<i64> {
        self.lifetime.get()
    }

    fn set_lifetime(&self, seconds: Option<i64>) {
        self.lifetime.set(seconds);
    }
}

/// The projected pods and their volumes, in the order of the volumes, found by
/// `namespace/name` in O(1) (`ctl rotate --pod` among 10,000 pods).
struct ProjectedPods {
    pods: Vec<ProjectedPod>,
    index: HashMap<(String, String), usize>,
}

impl ProjectedPods {
    fn new(volumes: &[ProjectedVolume]) -> Self {
        let mut pods: Vec<ProjectedPod> = Vec::new();
        let mut index: HashMap<(String, String), usize> = HashMap::new();
        for volume in volumes {
            let reference = ProjectedVolumeRef {
                namespace: volume.pod.namespace.clone(),
                pod: volume.pod.name.clone(),
                volume: volume.plan.name.clone(),
                dir: volume.writer.target_dir().display().to_string(),
            };
            let key = (volume.pod.namespace.clone(), volume.pod.name.clone());
            match index.get(&key) {
                Some(&at) => pods[at].volumes.push(reference),
                None => {
                    index.insert(key, pods.len());
                    pods.push(ProjectedPod {
                        namespace: volume.pod.namespace.clone(),
                        name: volume.pod.name.clone(),
                        uid: volume.pod.uid.clone(),
                        volumes: vec![reference],
                    });
                }
            }
        }
        Self { pods, index }
    }

    fn get(&self, namespace: &str, name: &str) -> Option<&ProjectedPod> {
        self.index
            .get(&(namespace.to_owned(), name.to_owned()))
            .map(|&at| &self.pods[at])
    }

    fn len(&self) -> usize {
        self.pods.len()
    }
}

/// The ledger's view of a rotation.
fn rotation_of(event: &RotationEvent) -> Rotation {
    Rotation {
        at: event.published_at,
        namespace: event.namespace.clone(),
        pod: event.pod.clone(),
        service_account: event.service_account.clone(),
        volume: event.volume.clone(),
        path: event.path.clone(),
        old_jti: event.old_jti.clone(),
        new_jti: event.new_jti.clone(),
    }
}

/// The emulated pods and their service accounts exist in the API's object store, so their
/// tokens authenticate (also with --no-auto-create). Declared service accounts keep their uids.
fn register_pods(objects: &mut ObjectStore, volumes: &[ProjectedVolume], loaded: &LoadedIssuer) {
    for volume in volumes {
        let pod = &volume.pod;
        if objects
            .service_account(&pod.namespace, &pod.service_account)
            .is_none()
        {
            objects.put_service_account(
                &pod.namespace,
                &pod.service_account,
                loaded.uid_for("ServiceAccount", &pod.namespace, &pod.service_account),
            );
        }
        // The pod's node exists too, so its uid goes into the pod's tokens (an `--objects`
        // node keeps its own uid).
        if let Some(node) = pod.node_name.as_deref() {
            if objects.node(node).is_none() {
                objects.put_node(node, loaded.uid_for("Node", "", node));
            }
        }
        objects.put_pod(
            &pod.namespace,
            &pod.name,
            StoredPod {
                uid: pod.uid.clone(),
                service_account: pod.service_account.clone(),
                node_name: pod.node_name.clone(),
            },
        );
    }
}

fn print_summary(
    args: &EmulateArgs,
    loaded: &LoadedIssuer,
    volumes: &[ProjectedVolume],
    pod_set: Option<&PodSet>,
    objects: &ObjectStore,
) {
    let mut out = String::from("projected-token emulate\n");
    match (pod_set, volumes.first()) {
        (Some(set), _) => {
            let tokens: usize = volumes.iter().map(|v| v.plan.token_specs().count()).sum();
            out.push_str(&format!(
                "  pods:            {} from {} ({} file(s); {} skipped: no projected volume)\n",
                set.pods,
                args.pods.as_deref().unwrap_or(Path::new("")).display(),
                set.files,
                set.skipped.len()
            ));
            out.push_str(&format!(
                "  volumes:         {} ({tokens} tokens) in {}/<namespace>/<pod-name>/<volume-name>/\n",
                volumes.len(),
                args.dir.display()
            ));
        }
        (None, Some(first)) => {
            let pod = &first.pod;
            let sa_uid = objects
                .service_account(&pod.namespace, &pod.service_account)
                .map(|sa| sa.uid.as_str())
                .unwrap_or_default();
            out.push_str(&format!(
                "  pod:             {}/{} (uid {})\n  service account: {} (uid {})\n",
                pod.namespace, pod.name, pod.uid, pod.service_account, sa_uid
            ));
            if let Some(node) = &pod.node_name {
                let node_uid = objects
                    .node(node)
                    .map(|n| n.uid.as_str())
                    .unwrap_or_default();
                out.push_str(&format!("  node:            {node} (uid {node_uid})\n"));
            }
        }
        (None, None) => {}
    }
    out.push_str(&format!(
        "  issuer:          {} (key {} {})\n",
        loaded.config.issuer,
        loaded.key.algorithm().jose_name(),
        loaded.key.kid()
    ));
    if let Some(seconds) = args.expiration_seconds {
        out.push_str(&format!(
            "  lifetimes:       compressed to {seconds} s (emulator only)\n"
        ));
    }
    // Thousands of pods: their volumes are in `ctl status`, not here.
    if pod_set.is_none() {
        for volume in volumes {
            out.push_str(&format!(
                "  volume:          {} -> {}\n",
                volume.plan.name,
                volume.writer.target_dir().display()
            ));
        }
    }
    print!("{out}");
}

/// The emulated pod's names as kube-apiserver validates a pod's (`fields` name where each came
/// from): the pod and its service account become objects of the API, and no object may have a
/// name upstream refuses (`a:b` + `c` and `a` + `b:c` would share one user name).
fn check_pod_names(info: &PodInfo, fields: [&str; 3]) -> Result<(), String> {
    let [namespace, name, service_account] = fields;
    names::check_namespace(namespace, &info.namespace)?;
    names::check_object_name(name, &info.name)?;
    names::check_object_name(service_account, &info.service_account)
}

/// What `--pod`, `--pods` or the identity flags give to project.
struct Planned {
    volumes: Vec<ProjectedVolume>,
    /// With `--pods`: what was read.
    pod_set: Option<PodSet>,
}

fn plan_volumes(
    args: &EmulateArgs,
    data: &DataSources,
    loaded: &LoadedIssuer,
) -> Result<Planned, CommandError> {
    let fsync = !args.writing.no_fsync;
    if let Some(path) = &args.pods {
        let mut set = pods_volumes(&args.dir, path, data, fsync)?;
        return Ok(Planned {
            volumes: std::mem::take(&mut set.volumes),
            pod_set: Some(set),
        });
    }
    let volumes = match &args.pod {
        Some(path) => {
            let volumes = pod_volumes(&args.dir, path, data, fsync, true)?;
            if let Some(volume) = volumes.first() {
                let fields = [
                    "metadata.namespace",
                    "metadata.name",
                    "spec.serviceAccountName",
                ];
                check_pod_names(&volume.pod, fields)
                    .map_err(|e| CommandError::usage(format!("--pod {}: {e}", path.display())))?;
            }
            volumes
        }
        None => {
            let info = PodInfo {
                namespace: args.namespace.clone(),
                name: args.pod_name.clone(),
                uid: loaded.uid_for("Pod", &args.namespace, &args.pod_name),
                service_account: args.service_account.clone(),
                node_name: Some(args.node_name.clone()),
                ..PodInfo::default()
            };
            let fields = ["--namespace", "--pod-name", "--service-account"];
            check_pod_names(&info, fields).map_err(CommandError::usage)?;
            let name = default_volume_name(|n| fastrand::usize(..n));
            single_volume(
                &args.dir,
                &name,
                &default_volume_source(),
                info,
                data,
                fsync,
            )?
        }
    };
    Ok(Planned {
        volumes,
        pod_set: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ledger_limits_grow_with_the_pods_and_share_one_budget() {
        let defaults = LedgerLimits::default();
        let small = ledger_limits(1, 1);
        assert_eq!(
            (small.paths, small.clients, small.replaced_tokens_per_path),
            (
                defaults.paths,
                defaults.clients,
                defaults.replaced_tokens_per_path
            )
        );
        let at_default = ledger_limits(defaults.paths, defaults.paths);
        assert_eq!(at_default.paths, defaults.paths);
        let large = ledger_limits(10_000, 10_000);
        assert_eq!(large.paths, 10_000);
        assert_eq!(large.clients, 10_000);
        assert_eq!(large.replaced_tokens_per_path, 4);
        assert_eq!(large.tokens_per_client, 26);
        assert!(
            large.clients * large.tokens_per_client
                <= defaults.clients * defaults.tokens_per_client
        );
        assert_eq!(ledger_limits(1_000_000, 1_000_000).tokens_per_client, 8);
        assert!(large.paths * large.replaced_tokens_per_path <= REPLACED_TOKENS_BUDGET);
        let mid = ledger_limits(5_000, 2_000);
        assert_eq!(mid.paths, 5_000);
        assert_eq!(mid.clients, defaults.clients, "never below the default");
        assert_eq!(mid.replaced_tokens_per_path, 8);
        assert_eq!(ledger_limits(1_000_000, 1).replaced_tokens_per_path, 4);
        // Limits that are not about scale stay the defaults.
        assert_eq!(mid.tokens_per_client, defaults.tokens_per_client);
        assert_eq!(
            large.recent_uses_per_client,
            defaults.recent_uses_per_client
        );
    }
}
