//! Volumes from flags or a Pod manifest, shared by `emulate` and `sidecar`: planning, ownership,
//! crash recovery at start, and the rotation log line.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1::ProjectedVolumeSource;

use super::setup::read_text;
use super::CommandError;
use crate::projection::spec::{
    parse_pod_manifest, plan_pod_volumes, plan_volume, DataSources, NamedData, PlannedFile, PodInfo,
};
use crate::projection::{AtomicWriter, WriterOptions};
use crate::refresher::{ProjectedVolume, RotationEvent};

/// Reads `NAME=DIR` pairs into name -> file name -> bytes. Hidden names (such as a projected
/// volume's own `..data`) are skipped, so another projected directory can serve as a source.
pub fn load_named_dirs(
    flag: &str,
    pairs: &[String],
) -> Result<BTreeMap<String, NamedData>, CommandError> {
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
            files.insert(file_name, bytes.into());
        }
        out.insert(name.to_owned(), files);
    }
    Ok(out)
}

/// Every projected volume of the Pod manifest at `path`, each into `dir/<volume-name>/`.
/// `invent_uid`: a pod without `metadata.uid` gets a random one (the emulator's pods); a real
/// pod's manifest must carry its own for binding.
pub fn pod_volumes(
    dir: &Path,
    path: &Path,
    data: &DataSources,
    fsync: bool,
    invent_uid: bool,
) -> Result<Vec<ProjectedVolume>, CommandError> {
    let text = read_text("--pod", path)?;
    let usage =
        |e: &dyn std::fmt::Display| CommandError::usage(format!("--pod {}: {e}", path.display()));
    let pod = parse_pod_manifest(&text).map_err(|e| usage(&e))?;
    let mut info = PodInfo::from_pod(&pod).map_err(|e| usage(&e))?;
    if info.uid.is_empty() && invent_uid {
        info.uid = uuid::Uuid::new_v4().to_string();
    }
    let plans = plan_pod_volumes(&pod, &info, data).map_err(|e| usage(&e))?;
    Ok(plans
        .into_iter()
        .map(|plan| ProjectedVolume {
            writer: AtomicWriter::new(
                dir.join(&plan.name),
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

/// One volume of `source` straight into `dir`.
pub fn single_volume(
    dir: &Path,
    name: &str,
    source: &ProjectedVolumeSource,
    info: PodInfo,
    data: &DataSources,
    fsync: bool,
) -> Result<Vec<ProjectedVolume>, CommandError> {
    let plan = plan_volume(name, name, source, &info, data)
        .map_err(|e| CommandError::usage(e.to_string()))?;
    Ok(vec![ProjectedVolume {
        writer: AtomicWriter::new(
            dir,
            WriterOptions {
                fsync,
                fs_group: None,
            },
        ),
        pod: info,
        plan,
    }])
}

/// Cleans what a crash may have left in each volume directory before the first write.
pub fn recover_volumes(volumes: &[ProjectedVolume]) -> Result<(), CommandError> {
    for volume in volumes {
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
    Ok(())
}

/// chown needs root (or the target ids to be our own): outside root, keep the modes the kubelet
/// would use but skip ownership rather than fail, and say so.
pub fn drop_ownership_unless_root(volume: &mut ProjectedVolume, is_root: bool) {
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

pub fn log_rotation(event: &RotationEvent) {
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
