//! `emulate`: the embedded issuer plus the kubelet's projector, no cluster needed.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use super::CommandError;
use crate::cli::{EmulateArgs, KeyAlgorithmArg};
use crate::clock::{Clock, SystemClock};
use crate::issuer::{Issuer, IssuerConfig, KeyAlgorithm, SigningKey};
use crate::projection::spec::{
    default_volume_name, default_volume_source, parse_pod_manifest, plan_pod_volumes, plan_volume,
    DataSources, PlannedFile, PodInfo,
};
use crate::projection::{AtomicWriter, WriterOptions};
use crate::refresher::{ProjectedVolume, Refresher, RotationEvent};
use crate::source::LocalIssuerSource;
use crate::tls::CertificateAuthority;

pub async fn run(args: EmulateArgs) -> Result<(), CommandError> {
    let shutdown = shutdown_signal()?;
    // RSA key generation takes 60-200 ms: do it on a blocking thread while the rest loads.
    let key_task = tokio::task::spawn_blocking({
        let path = args.signing_key.clone();
        let algorithm = match args.key_algorithm {
            KeyAlgorithmArg::Rs256 => KeyAlgorithm::Rs256,
            KeyAlgorithmArg::Es256 => KeyAlgorithm::Es256,
        };
        move || load_signing_key(path.as_deref(), algorithm)
    });
    let ca = load_ca(args.ca_cert.as_deref(), args.ca_key.as_deref())?;
    let config = issuer_config(&args)?;
    let data = DataSources {
        root_ca: ca.cert_pem().as_bytes().to_vec(),
        configmaps: load_named_dirs("--configmap", &args.configmaps)?,
        secrets: load_named_dirs("--secret", &args.secrets)?,
    };
    let mut volumes = plan_volumes(&args, &data)?;
    let is_root = rustix::process::geteuid().is_root();
    for volume in &mut volumes {
        drop_ownership_unless_root(volume, is_root);
    }

    let key = key_task
        .await
        .map_err(|e| CommandError::failure(format!("signing key task failed: {e}")))??;
    let service_account_uids = service_account_uids(&volumes);
    print_summary(&args, &key, &config, &volumes, &service_account_uids);

    let issuer = Arc::new(Issuer::new(config, Arc::new(key)));
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let source = LocalIssuerSource::new(issuer, clock.clone(), args.expiration_seconds, {
        move |namespace: &str, name: &str| {
            service_account_uids
                .get(&(namespace.to_owned(), name.to_owned()))
                .cloned()
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

    let refresher = Refresher::new(Arc::new(source), clock, volumes).on_rotation(log_rotation);
    refresher
        .run(shutdown)
        .await
        .map_err(|e| CommandError::failure(e.to_string()))?;
    tracing::info!("stopped");
    Ok(())
}

fn load_signing_key(
    path: Option<&Path>,
    algorithm: KeyAlgorithm,
) -> Result<SigningKey, CommandError> {
    match path {
        Some(path) => {
            let pem = read_text("--signing-key", path)?;
            SigningKey::from_pem(&pem)
                .map_err(|e| CommandError::usage(format!("--signing-key {}: {e}", path.display())))
        }
        None => SigningKey::generate(algorithm)
            .map_err(|e| CommandError::failure(format!("cannot generate a signing key: {e}"))),
    }
}

fn load_ca(cert: Option<&Path>, key: Option<&Path>) -> Result<CertificateAuthority, CommandError> {
    match (cert, key) {
        (Some(cert), Some(key)) => {
            let cert_pem = read_text("--ca-cert", cert)?;
            let key_pem = read_text("--ca-key", key)?;
            CertificateAuthority::from_pem(&cert_pem, &key_pem)
                .map_err(|e| CommandError::usage(e.to_string()))
        }
        _ => CertificateAuthority::generate("projected-token emulator CA")
            .map_err(|e| CommandError::failure(e.to_string())),
    }
}

fn read_text(flag: &str, path: &Path) -> Result<String, CommandError> {
    std::fs::read_to_string(path)
        .map_err(|e| CommandError::usage(format!("{flag} {}: {e}", path.display())))
}

fn issuer_config(args: &EmulateArgs) -> Result<IssuerConfig, CommandError> {
    let mut config = IssuerConfig::new(args.issuer.clone());
    if !args.api_audiences.is_empty() {
        config.api_audiences = args.api_audiences.clone();
    }
    config.max_token_expiration = args.max_token_expiration.filter(|max| *max != 0);
    config.extend_token_expiration = args.extend_token_expiration;
    config
        .check()
        .map_err(|e| CommandError::usage(format!("--max-token-expiration: {e}")))?;
    Ok(config)
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

fn service_account_uids(volumes: &[ProjectedVolume]) -> HashMap<(String, String), String> {
    let mut uids = HashMap::new();
    for volume in volumes {
        uids.entry((
            volume.pod.namespace.clone(),
            volume.pod.service_account.clone(),
        ))
        .or_insert_with(|| uuid::Uuid::new_v4().to_string());
    }
    uids
}

fn print_summary(
    args: &EmulateArgs,
    key: &SigningKey,
    config: &IssuerConfig,
    volumes: &[ProjectedVolume],
    service_account_uids: &HashMap<(String, String), String>,
) {
    let mut out = String::from("projected-token emulate\n");
    if let Some(first) = volumes.first() {
        let pod = &first.pod;
        let sa_uid = service_account_uids
            .get(&(pod.namespace.clone(), pod.service_account.clone()))
            .map(String::as_str)
            .unwrap_or_default();
        out.push_str(&format!(
            "  pod:             {}/{} (uid {})\n  service account: {} (uid {})\n",
            pod.namespace, pod.name, pod.uid, pod.service_account, sa_uid
        ));
    }
    out.push_str(&format!(
        "  issuer:          {} (key {} {})\n",
        config.issuer,
        key.algorithm().jose_name(),
        key.kid()
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

/// Registers for SIGTERM and SIGINT now (so a signal that comes during start-up is not fatal)
/// and returns a future that completes when one arrives.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, CommandError> {
    use tokio::signal::unix::{signal, SignalKind};
    let listen = |kind: SignalKind, name: &str| {
        signal(kind).map_err(|e| CommandError::failure(format!("cannot listen for {name}: {e}")))
    };
    let mut terminate = listen(SignalKind::terminate(), "SIGTERM")?;
    let mut interrupt = listen(SignalKind::interrupt(), "SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        tracing::info!("shutting down");
    })
}
