//! `emulate`: the embedded issuer plus the kubelet's projector, no cluster needed; by default it
//! also serves the emulated API (as `serve`), whose usage ledger learns of every rotation.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::serve::print_api_summary;
use super::setup::{load_issuer, load_objects, read_text, start_api, LoadedIssuer};
use super::{shutdown_signal, CommandError};
use crate::apiserver::authn::lock;
use crate::apiserver::ledger::Rotation;
use crate::cli::EmulateArgs;
use crate::clock::{Clock, SystemClock};
use crate::issuer::objects::{ObjectStore, StoredPod};
use crate::issuer::Issuer;
use crate::projection::spec::{
    default_volume_name, default_volume_source, parse_pod_manifest, plan_pod_volumes, plan_volume,
    DataSources, PlannedFile, PodInfo,
};
use crate::projection::{AtomicWriter, WriterOptions};
use crate::refresher::{ProjectedVolume, Refresher, RotationEvent};
use crate::source::LocalIssuerSource;

pub async fn run(args: EmulateArgs) -> Result<(), CommandError> {
    let shutdown = shutdown_signal()?;
    let loaded = load_issuer(&args.issuer).await?;
    let data = DataSources {
        root_ca: loaded.ca.cert_pem().as_bytes().to_vec(),
        configmaps: load_named_dirs("--configmap", &args.configmaps)?,
        secrets: load_named_dirs("--secret", &args.secrets)?,
    };
    let mut volumes = plan_volumes(&args, &data)?;
    let is_root = rustix::process::geteuid().is_root();
    for volume in &mut volumes {
        drop_ownership_unless_root(volume, is_root);
    }
    let objects = Arc::new(Mutex::new(load_objects(&args.server)?));
    register_pods(&mut lock(&objects), &volumes);
    print_summary(&args, &loaded, &volumes, &lock(&objects));

    let issuer = Arc::new(Issuer::new(loaded.config.clone(), loaded.key.clone()));
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let source = LocalIssuerSource::new(issuer.clone(), clock.clone(), args.expiration_seconds, {
        let objects = objects.clone();
        move |namespace: &str, name: &str| {
            lock(&objects)
                .service_account(namespace, name)
                .map(|sa| sa.uid.clone())
                .unwrap_or_default()
        }
    });

    for volume in &volumes {
        let report = volume.writer.recover().map_err(|e| {
            CommandError::failure(format!(
                "cannot prepare {}: {e}",
                volume.writer.target_dir().display()
            ))
        })?;
        if !report.removed.is_empty() {
            tracing::info!(dir = %volume.writer.target_dir().display(), cleaned = ?report.removed, "cleaned leftovers of an earlier crash");
        }
    }

    let api = if args.no_serve {
        None
    } else {
        let api = start_api(&loaded, issuer, objects, clock.clone(), &args.server).await?;
        print_api_summary(&api);
        Some(api)
    };
    let mut refresher =
        Refresher::new(Arc::new(source), clock.clone(), volumes).on_rotation(log_rotation);
    if let Some(api) = &api {
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

/// Reads `NAME=DIR` pairs into name -> file name -> bytes. Hidden names (such as a projected
/// volume's own `..data`) are skipped, so another projected directory can serve as a source.
fn load_named_dirs(
    flag: &str,
    pairs: &[String],
) -> Result<BTreeMap<String, BTreeMap<String, Vec<u8>>>, CommandError> {
    let mut out = BTreeMap::new();
    for pair in pairs {
        let Some((name, dir)) = pair
            .split_once('=')
            .filter(|(n, d)| !n.is_empty() && !d.is_empty())
        else {
            return Err(CommandError::usage(format!(
                "{flag} {pair:?}: expected NAME=DIR, e.g. {flag} app-config=./config"
            )));
        };
        let entries = std::fs::read_dir(dir)
            .map_err(|e| CommandError::usage(format!("{flag} {name}={dir}: {e}")))?;
        let mut files = BTreeMap::new();
        for entry in entries {
            let entry =
                entry.map_err(|e| CommandError::usage(format!("{flag} {name}={dir}: {e}")))?;
            let file_name = entry.file_name().to_string_lossy().into_owned();
            if file_name.starts_with('.') || !entry.path().is_file() {
                continue;
            }
            let bytes = std::fs::read(entry.path()).map_err(|e| {
                CommandError::usage(format!("{flag} {name}={dir}: {file_name}: {e}"))
            })?;
            files.insert(file_name, bytes);
        }
        out.insert(name.to_owned(), files);
    }
    Ok(out)
}

fn plan_volumes(
    args: &EmulateArgs,
    data: &DataSources,
) -> Result<Vec<ProjectedVolume>, CommandError> {
    let fsync = !args.no_fsync;
    match &args.pod {
        Some(path) => {
            let text = read_text("--pod", path)?;
            let usage = |e: &dyn std::fmt::Display| {
                CommandError::usage(format!("--pod {}: {e}", path.display()))
            };
            let pod = parse_pod_manifest(&text).map_err(|e| usage(&e))?;
            let mut info = PodInfo::from_pod(&pod).map_err(|e| usage(&e))?;
            if info.uid.is_empty() {
                info.uid = uuid::Uuid::new_v4().to_string();
            }
            let plans = plan_pod_volumes(&pod, &info, data).map_err(|e| usage(&e))?;
            Ok(plans
                .into_iter()
                .map(|plan| ProjectedVolume {
                    writer: AtomicWriter::new(
                        args.dir.join(&plan.name),
                        WriterOptions {
                            fsync,
                            fs_group: plan.fs_group,
                        },
                    ),
                    pod: info.clone(),
                    plan,
                })
                .collect())
        }
        None => {
            let info = PodInfo {
                namespace: args.namespace.clone(),
                name: args.pod_name.clone(),
                uid: uuid::Uuid::new_v4().to_string(),
                service_account: args.service_account.clone(),
                ..PodInfo::default()
            };
            let name = default_volume_name(|n| fastrand::usize(..n));
            let plan = plan_volume(
                &name,
                "kube-api-access",
                &default_volume_source(),
                &info,
                data,
            )
            .map_err(|e| CommandError::usage(e.to_string()))?;
            Ok(vec![ProjectedVolume {
                writer: AtomicWriter::new(
                    args.dir.clone(),
                    WriterOptions {
                        fsync,
                        fs_group: None,
                    },
                ),
                pod: info,
                plan,
            }])
        }
    }
}

/// chown needs root (or the target ids to be our own): outside root, keep the modes the kubelet
/// would use but skip ownership rather than fail, and say so.
fn drop_ownership_unless_root(volume: &mut ProjectedVolume, is_root: bool) {
    if is_root {
        return;
    }
    let own_uid = rustix::process::geteuid().as_raw();
    let mut dropped = false;
    for file in &mut volume.plan.files {
        if let PlannedFile::Token(spec) = file {
            if spec.fs_user.is_some_and(|user| user != own_uid) {
                spec.fs_user = None;
                dropped = true;
            }
        }
    }
    let options = WriterOptions {
        fs_group: None,
        ..WriterOptions::default()
    };
    if volume.plan.fs_group.is_some() {
        dropped = true;
        volume.writer = AtomicWriter::new(volume.writer.target_dir().to_path_buf(), options);
    }
    if dropped {
        tracing::warn!(volume = %volume.plan.name, "not running as root: fsGroup/runAsUser ownership is not applied (file modes still are)");
    }
}

fn log_rotation(event: &RotationEvent) {
    let fmt = |t: Option<jiff::Timestamp>| t.map(|t| t.to_string()).unwrap_or_else(|| "-".into());
    tracing::info!(
        volume = %event.volume,
        dir = %event.dir.display(),
        path = %event.path,
        jti = event.new_jti.as_deref().unwrap_or("-"),
        iat = %fmt(event.issued_at),
        exp = %fmt(event.expires_at),
        warnafter = %fmt(event.warn_after),
        next_refresh = %event.next_refresh,
        "token rotated"
    );
}
