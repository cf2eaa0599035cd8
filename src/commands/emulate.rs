//! `emulate`: the embedded issuer plus the kubelet's projector, no cluster needed; by default it
//! also serves the emulated API (as `serve`), whose usage ledger learns of every rotation.

use std::sync::{Arc, Mutex};

use super::serve::print_api_summary;
use super::setup::{key_ring, load_issuer, load_objects, start_api, LoadedIssuer};
use super::volumes::{
    drop_ownership_unless_root, load_named_dirs, log_rotation, pod_volumes, recover_volumes,
    single_volume,
};
use super::{shutdown_signal, CommandError};
use crate::apiserver::authn::lock;
use crate::apiserver::controls::{ProjectedPod, ProjectedVolumeRef, Projector};
use crate::apiserver::ledger::Rotation;
use crate::apiserver::server::ApiState;
use crate::cli::EmulateArgs;
use crate::clock::{Clock, SystemClock};
use crate::issuer::objects::{ObjectStore, StoredPod};
use crate::projection::spec::{default_volume_name, default_volume_source, DataSources, PodInfo};
use crate::refresher::{Control, ProjectedVolume, Refresher, RotationEvent};
use crate::source::{LifetimeOverride, LocalIssuerSource, SourceError};

pub async fn run(args: EmulateArgs) -> Result<(), CommandError> {
    let shutdown = shutdown_signal()?;
    let loaded = load_issuer(&args.issuer).await?;
    let data = DataSources {
        root_ca: loaded.ca.cert_pem().as_bytes().into(),
        configmaps: load_named_dirs("--configmap", &args.writing.configmaps)?,
        secrets: load_named_dirs("--secret", &args.writing.secrets)?,
    };
    let mut volumes = plan_volumes(&args, &data)?;
    let is_root = rustix::process::geteuid().is_root();
    for volume in &mut volumes {
        drop_ownership_unless_root(volume, is_root);
    }
    let objects = Arc::new(Mutex::new(load_objects(&args.server)?));
    register_pods(&mut lock(&objects), &volumes);
    print_summary(&args, &loaded, &volumes, &lock(&objects));

    let keys = key_ring(&loaded)?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
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
    });

    recover_volumes(&volumes)?;

    let api = if args.no_serve {
        None
    } else {
        let api = start_api(&loaded, keys, objects, clock.clone(), &args.server).await?;
        print_api_summary(&api);
        // The projector is the kubelet of this emulated cluster: during a simulated API outage
        // its TokenRequests fail too, and are retried once the outage is over.
        source = source.with_availability(outage_check(api.state.clone(), clock.clone()));
        Some(api)
    };
    let pods = projected_pods(&volumes);
    let mut refresher =
        Refresher::new(Arc::new(source), clock.clone(), volumes).on_rotation(log_rotation);
    if let Some(api) = &api {
        let projector = EmulatorProjector {
            control: refresher.control(),
            pods,
            lifetime,
        };
        let _ = api.state.projector.set(Arc::new(projector));
        // Rotations reach the usage ledger, so later uses of a replaced token are "superseded".
        let state = api.state.clone();
        refresher = refresher
            .on_rotation(move |event| state.record_rotation(rotation_of(event, clock.now())));
    }
    let result = refresher.run(shutdown).await;
    if let Some(api) = api {
        api.shutdown().await;
    }
    result.map_err(|e| CommandError::failure(e.to_string()))?;
    tracing::info!("stopped");
    Ok(())
}

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
    pods: Vec<ProjectedPod>,
    lifetime: LifetimeOverride,
}

impl Projector for EmulatorProjector {
    fn pods(&self) -> Vec<ProjectedPod> {
        self.pods.clone()
    }

    fn rotate(&self, pod: Option<(&str, &str)>) -> Option<Vec<ProjectedVolumeRef>> {
        let chosen = |p: &&ProjectedPod| {
            pod.is_none_or(|(namespace, name)| p.namespace == namespace && p.name == name)
        };
        let matching: Vec<&ProjectedPod> = self.pods.iter().filter(chosen).collect();
        if pod.is_some() && matching.is_empty() {
            return None;
        }
        let control = match pod {
            None => Control::RefreshAll,
            Some((namespace, name)) => Control::RefreshPod {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            },
        };
        // The refresher is gone only while the process stops; nothing to rotate then.
        let _ = self.control.send(control);
        Some(
            matching
                .into_iter()
                .flat_map(|p| p.volumes.clone())
                .collect(),
        )
    }

    fn lifetime(&self) -> Option<i64> {
        self.lifetime.get()
    }

    fn set_lifetime(&self, seconds: Option<i64>) {
        self.lifetime.set(seconds);
    }
}

/// The projected pods and their volumes, in the order of the volumes.
fn projected_pods(volumes: &[ProjectedVolume]) -> Vec<ProjectedPod> {
    let mut pods: Vec<ProjectedPod> = Vec::new();
    for volume in volumes {
        let reference = ProjectedVolumeRef {
            namespace: volume.pod.namespace.clone(),
            pod: volume.pod.name.clone(),
            volume: volume.plan.name.clone(),
            dir: volume.writer.target_dir().display().to_string(),
        };
        match pods
            .iter_mut()
            .find(|p| p.namespace == volume.pod.namespace && p.name == volume.pod.name)
        {
            Some(pod) => pod.volumes.push(reference),
            None => pods.push(ProjectedPod {
                namespace: volume.pod.namespace.clone(),
                name: volume.pod.name.clone(),
                uid: volume.pod.uid.clone(),
                volumes: vec![reference],
            }),
        }
    }
    pods
}

/// The ledger's view of a rotation published at `at`.
fn rotation_of(event: &RotationEvent, at: jiff::Timestamp) -> Rotation {
    Rotation {
        at,
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
fn register_pods(objects: &mut ObjectStore, volumes: &[ProjectedVolume]) {
    for volume in volumes {
        let pod = &volume.pod;
        if objects
            .service_account(&pod.namespace, &pod.service_account)
            .is_none()
        {
            objects.put_service_account(
                &pod.namespace,
                &pod.service_account,
                uuid::Uuid::new_v4().to_string(),
            );
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
    objects: &ObjectStore,
) {
    let mut out = String::from("projected-token emulate\n");
    if let Some(first) = volumes.first() {
        let pod = &first.pod;
        let sa_uid = objects
            .service_account(&pod.namespace, &pod.service_account)
            .map(|sa| sa.uid.as_str())
            .unwrap_or_default();
        out.push_str(&format!(
            "  pod:             {}/{} (uid {})\n  service account: {} (uid {})\n",
            pod.namespace, pod.name, pod.uid, pod.service_account, sa_uid
        ));
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
    for volume in volumes {
        out.push_str(&format!(
            "  volume:          {} -> {}\n",
            volume.plan.name,
            volume.writer.target_dir().display()
        ));
    }
    print!("{out}");
}

fn plan_volumes(
    args: &EmulateArgs,
    data: &DataSources,
) -> Result<Vec<ProjectedVolume>, CommandError> {
    let fsync = !args.writing.no_fsync;
    match &args.pod {
        Some(path) => pod_volumes(&args.dir, path, data, fsync, true),
        None => {
            let info = PodInfo {
                namespace: args.namespace.clone(),
                name: args.pod_name.clone(),
                uid: uuid::Uuid::new_v4().to_string(),
                service_account: args.service_account.clone(),
                ..PodInfo::default()
            };
            let name = default_volume_name(|n| fastrand::usize(..n));
            single_volume(
                &args.dir,
                &name,
                &default_volume_source(),
                info,
                data,
                fsync,
            )
        }
    }
}
