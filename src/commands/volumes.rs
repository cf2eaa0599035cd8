//! Volumes from flags, a Pod manifest or (`emulate --pods`) a directory of them, shared by
//! `emulate` and `sidecar`: planning, ownership, crash recovery at start, and the rotation log line.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Pod, ProjectedVolumeSource};

use super::shared::CommandError;
use crate::projection::pods::{has_projected_volume, parse_pod_documents, pod_dir, PodRegistry};
use crate::projection::spec::{
    parse_pod_manifest, plan_pod_volumes, plan_volume, DataSources, NamedData, PlannedFile,
    PodInfo, SpecError,
};
use crate::projection::{is_memory_backed, AtomicWriter, Repair, WriterOptions};
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

/// The largest Pod manifest file read, for `--pod` and each file of `--pods`. Kubernetes keeps
/// an object under 1.5 MiB; the YAML budget (`manifest_yaml_options`) refuses a file of
/// ordinary pods long before this, so the size only bounds what is read to find that out.
pub const MAX_MANIFEST_FILE_BYTES: u64 = 8 << 20;
/// The largest total of the files of `--pods`: what is read, and kept of it (names, labels,
/// annotations), stays in proportion (10,000 pods as `kubectl get -o yaml` prints them is some
/// 60 MiB).
pub const MAX_PODS_TOTAL_BYTES: u64 = 128 << 20;

/// "62915941 bytes (60.0 MiB)".
fn size_words(bytes: u64) -> String {
    format!(
        "{bytes} bytes ({:.1} MiB)",
        bytes as f64 / f64::from(1 << 20)
    )
}

/// Reads one manifest file of at most `MAX_MANIFEST_FILE_BYTES` (checked before reading, and
/// while reading in case it grows).
fn read_manifest(flag: &str, path: &Path) -> Result<String, CommandError> {
    let usage =
        |e: &dyn std::fmt::Display| CommandError::usage(format!("{flag} {}: {e}", path.display()));
    let too_large = |size: u64| {
        let advice = if flag == "--pods" {
            "split it into smaller files (for example one per node: kubectl get pods -A \
             --field-selector spec.nodeName=NODE -o yaml)"
        } else {
            "a Pod manifest is a few KiB; is this the right file?"
        };
        usage(&format!(
            "{} is more than a manifest file may hold ({} MiB): {advice}",
            size_words(size),
            MAX_MANIFEST_FILE_BYTES >> 20
        ))
    };
    let file = std::fs::File::open(path).map_err(|e| usage(&e))?;
    let size = file.metadata().map_err(|e| usage(&e))?.len();
    if size > MAX_MANIFEST_FILE_BYTES {
        return Err(too_large(size));
    }
    let mut text = String::new();
    file.take(MAX_MANIFEST_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| usage(&e))?;
    if text.len() as u64 > MAX_MANIFEST_FILE_BYTES {
        return Err(too_large(text.len() as u64));
    }
    Ok(text)
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
    let text = read_manifest("--pod", path)?;
    let usage =
        |e: &dyn std::fmt::Display| CommandError::usage(format!("--pod {}: {e}", path.display()));
    let pod = parse_pod_manifest(&text).map_err(|e| usage(&e))?;
    let mut info = PodInfo::from_pod(&pod).map_err(|e| usage(&e))?;
    if info.uid.is_empty() && invent_uid {
        info.uid = uuid::Uuid::new_v4().to_string();
    }
    volumes_of_pod(dir, &pod, info, data, fsync).map_err(|e| usage(&e))
}

/// Plans every projected volume of `pod` into `dir/<volume-name>/`: what `--pod` and `--pods`
/// share.
fn volumes_of_pod(
    dir: &Path,
    pod: &Pod,
    info: PodInfo,
    data: &DataSources,
    fsync: bool,
) -> Result<Vec<ProjectedVolume>, SpecError> {
    let plans = plan_pod_volumes(pod, &info, data)?;
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

/// The volumes of every pod of `--pods PATH`, and what was read to plan them.
#[derive(Debug)]
pub struct PodSet {
    pub volumes: Vec<ProjectedVolume>,
    pub files: usize,
    pub pods: usize,
    /// Pods without a projected volume, by where they are (`FILE document N`).
    pub skipped: Vec<String>,
}

/// The manifest files of `--pods PATH`: PATH itself when it is a file, else its `*.yaml`,
/// `*.yml` and `*.json` files (not hidden, not in sub-directories), in name order.
pub fn pod_manifest_files(path: &Path) -> Result<Vec<PathBuf>, CommandError> {
    let flag =
        |e: &dyn std::fmt::Display| CommandError::usage(format!("--pods {}: {e}", path.display()));
    let meta = std::fs::metadata(path).map_err(|e| flag(&e))?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).map_err(|e| flag(&e))? {
        let entry = entry.map_err(|e| flag(&e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let manifest = [".yaml", ".yml", ".json"]
            .iter()
            .any(|ext| name.to_ascii_lowercase().ends_with(ext));
        // `is_file` follows symbolic links, so a mounted config map's visible names count.
        if manifest && !name.starts_with('.') && entry.path().is_file() {
            files.push(entry.path());
        }
    }
    if files.is_empty() {
        return Err(flag(&"no *.yaml, *.yml or *.json file in this directory: put Pod manifests there (one pod per file, or several separated by ---)"));
    }
    files.sort();
    Ok(files)
}

/// Pods without a projected volume warned about one by one; the rest are only counted.
const SKIPPED_WARNINGS: usize = 20;

/// Plans every pod of `--pods PATH`: pod `namespace/name`'s volumes go to
/// `dir/<namespace>/<name>/<volume-name>/`. A pod without a uid gets a random one. A pod with no
/// projected volume is skipped with a warning, as a kubelet has nothing to project for it
/// (`automountServiceAccountToken: false`); no pod at all with one is an error.
pub fn pods_volumes(
    dir: &Path,
    path: &Path,
    data: &DataSources,
    fsync: bool,
) -> Result<PodSet, CommandError> {
    let files = pod_manifest_files(path)?;
    // Sizes as listed first, so an oversized set is refused before anything is read; then as
    // read, in case a file grew meanwhile.
    let listed: u64 = files
        .iter()
        .filter_map(|file| std::fs::metadata(file).ok())
        .map(|meta| meta.len())
        .sum();
    let over_total = |total: u64| {
        CommandError::usage(format!(
            "--pods {}: the manifests hold {}, more than --pods reads ({} MiB): project fewer pods per process",
            path.display(),
            size_words(total),
            MAX_PODS_TOTAL_BYTES >> 20
        ))
    };
    if listed > MAX_PODS_TOTAL_BYTES {
        return Err(over_total(listed));
    }
    let mut read = 0u64;
    let mut registry = PodRegistry::default();
    let mut set = PodSet {
        volumes: Vec::new(),
        files: files.len(),
        pods: 0,
        skipped: Vec::new(),
    };
    for file in &files {
        let text = read_manifest("--pods", file)?;
        read += text.len() as u64;
        if read > MAX_PODS_TOTAL_BYTES {
            return Err(over_total(read));
        }
        let documents = parse_pod_documents(&text)
            .map_err(|e| CommandError::usage(format!("--pods {}: {e}", file.display())))?;
        for document in documents {
            let origin = format!("{} {}", file.display(), document.position());
            let usage =
                |e: &dyn std::fmt::Display| CommandError::usage(format!("--pods {origin}: {e}"));
            let mut info = PodInfo::from_pod(&document.pod).map_err(|e| usage(&e))?;
            registry.admit(&origin, &info).map_err(|e| usage(&e))?;
            if !has_projected_volume(&document.pod) {
                if set.skipped.len() < SKIPPED_WARNINGS {
                    tracing::warn!(pod = %format!("{}/{}", info.namespace, info.name), at = %origin, "skipped: the pod has no projected volume (nothing to project)");
                }
                set.skipped.push(origin);
                continue;
            }
            if info.uid.is_empty() {
                info.uid = uuid::Uuid::new_v4().to_string();
            }
            let pod_dir = pod_dir(dir, &info.namespace, &info.name);
            let volumes = volumes_of_pod(&pod_dir, &document.pod, info, data, fsync)
                .map_err(|e| usage(&e))?;
            set.volumes.extend(volumes);
            set.pods += 1;
        }
    }
    if set.volumes.is_empty() {
        return Err(CommandError::usage(format!(
            "--pods {}: no pod with a projected volume in {} file(s) ({} pod(s) without one): add a projected volume (e.g. the kube-api-access volume) to the pods' spec.volumes",
            path.display(),
            files.len(),
            set.skipped.len()
        )));
    }
    Ok(set)
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

/// Cleans what a crash may have left in each volume directory before the first write, and
/// turns fsync off for directories kept in memory (tmpfs, as the kubelet's projected volumes
/// are): there it makes nothing durable and is a sixth of a rotation's system calls. Returns
/// what was repaired (someone changed `..data`), by volume index, for
/// [`crate::refresher::Refresher::with_repairs_at_start`] to log and count.
pub fn recover_volumes(
    volumes: &mut [ProjectedVolume],
) -> Result<Vec<(usize, Repair)>, CommandError> {
    let mut in_memory = 0usize;
    let mut repairs = Vec::new();
    for (index, volume) in volumes.iter_mut().enumerate() {
        let report = volume.writer.recover().map_err(|e| {
            CommandError::failure(format!(
                "cannot prepare {}: {e}",
                volume.writer.target_dir().display()
            ))
        })?;
        if !report.removed.is_empty() {
            tracing::info!(dir = %volume.writer.target_dir().display(), cleaned = ?report.removed, "cleaned leftovers of an earlier crash");
        }
        repairs.extend(report.repairs.into_iter().map(|repair| (index, repair)));
        let options = volume.writer.options();
        if options.fsync && is_memory_backed(volume.writer.target_dir()) {
            in_memory += 1;
            volume.writer.set_options(WriterOptions {
                fsync: false,
                ..options
            });
        }
    }
    if in_memory > 0 {
        tracing::info!(
            volumes = in_memory,
            "volume directories on tmpfs: written without fsync"
        );
    }
    Ok(repairs)
}

/// chown needs root (or the target ids to be our own): outside root, keep the modes the kubelet
/// would use but skip ownership rather than fail, and say so (once, however many volumes).
pub fn drop_ownership_unless_root(volumes: &mut [ProjectedVolume]) {
    if rustix::process::geteuid().is_root() {
        return;
    }
    let own_uid = rustix::process::geteuid().as_raw();
    let mut dropped: Vec<&str> = Vec::new();
    for volume in volumes.iter_mut() {
        let mut changed = false;
        for file in &mut volume.plan.files {
            if let PlannedFile::Token(spec) = file {
                if spec.fs_user.is_some_and(|user| user != own_uid) {
                    spec.fs_user = None;
                    changed = true;
                }
            }
        }
        if volume.plan.fs_group.is_some() {
            changed = true;
            volume.writer.set_options(WriterOptions {
                fs_group: None,
                ..volume.writer.options()
            });
        }
        if changed {
            dropped.push(&volume.plan.name);
        }
    }
    if let Some(first) = dropped.first() {
        tracing::warn!(volume = %first, volumes = dropped.len(), "not running as root: fsGroup/runAsUser ownership is not applied (file modes still are)");
    }
}

pub fn log_rotation(event: &RotationEvent) {
    let fmt = |t: Option<jiff::Timestamp>| t.map(|t| t.to_string()).unwrap_or_else(|| "-".into());
    // When it was due and how late, to the microsecond (the scale benchmark reads them); a first
    // write has no schedule, and a field that is `None` is left out of the line.
    let scheduled = event.scheduled_at;
    tracing::info!(
        volume = %event.volume,
        dir = %event.dir.display(),
        path = %event.path,
        jti = event.new_jti.as_deref().unwrap_or("-"),
        iat = %fmt(event.issued_at),
        exp = %fmt(event.expires_at),
        warnafter = %fmt(event.warn_after),
        next_refresh = %event.next_refresh,
        scheduled_at = scheduled.map(tracing::field::display),
        late_ms = scheduled.map(|at| lateness_ms(at, event.published_at)),
        "token rotated"
    );
}

/// Milliseconds from `scheduled` to `published`, with microsecond precision.
pub fn lateness_ms(scheduled: jiff::Timestamp, published: jiff::Timestamp) -> f64 {
    let micros = published.duration_since(scheduled).as_micros();
    // i128 microseconds to f64: exact for any lateness below 285 years.
    micros as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lateness_is_in_milliseconds_to_the_microsecond() {
        let due = jiff::Timestamp::from_second(1_700_000_000).unwrap();
        let at = |micros: i64| due + jiff::SignedDuration::from_micros(micros);
        assert_eq!(lateness_ms(due, at(1_500)), 1.5);
        assert_eq!(lateness_ms(due, at(2)), 0.002);
        assert_eq!(lateness_ms(due, at(61_000_000)), 61_000.0);
        // Published before its time (a control's "now" rounding): negative, not hidden.
        assert_eq!(lateness_ms(due, at(-250)), -0.25);
    }
}
