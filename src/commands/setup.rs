//! What `serve` and `emulate` share: loading the issuer (keys, CA, rules) from flags, and
//! starting the HTTPS API server.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum_server::tls_rustls::RustlsConfig;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use super::shared::CommandError;
use crate::apiserver::audit::AuditLog;
use crate::apiserver::authn::{Authenticator, MASTERS_GROUP};
use crate::apiserver::connections::{connection_cap, open_file_limit, ConnectionLimits};
use crate::apiserver::ledger::{Ledger, LedgerLimits};
use crate::apiserver::listener::Listeners;
use crate::apiserver::metrics::Metrics;
use crate::apiserver::outage::OutageSwitch;
use crate::apiserver::request::ApiState;
use crate::apiserver::server::router;
use crate::cli::{IssuerArgs, KeyAlgorithmArg, ServerArgs};
use crate::clock::Clock;
use crate::issuer::keyring::KeyRing;
use crate::issuer::keys::{verification_jwk_from_pem, Jwk};
use crate::issuer::objects::ObjectStore;
use crate::issuer::{Issuer, IssuerConfig, KeyAlgorithm, SigningKey};
use crate::private_files::{
    create_private, ensure_private_dir, read_private, replace_file, PrivateFileError, RunDirectory,
};
use crate::state::{derived_uid, files as state_files, StateDir, StateError};
use crate::tls::CertificateAuthority;

/// The key ring (signing key and extra verification keys) of `loaded`, shared by the API and
/// `emulate`'s token source.
pub fn key_ring(loaded: &LoadedIssuer) -> Result<Arc<KeyRing>, CommandError> {
    KeyRing::new(
        Issuer::new(loaded.config.clone(), loaded.key.clone()),
        loaded.extra_jwks.clone(),
    )
    .map(Arc::new)
    .map_err(|e| CommandError::usage(format!("--extra-verification-keys: {e}")))
}

/// The issuer's material, loaded from flags.
pub struct LoadedIssuer {
    pub key: Arc<SigningKey>,
    pub ca: CertificateAuthority,
    pub config: IssuerConfig,
    /// Keys whose tokens are accepted besides the signing key's.
    pub extra_jwks: Vec<Jwk>,
    /// Where the identity is kept across restarts; `None` with `--ephemeral` (or no home).
    pub state: Option<StateDir>,
    /// Seed of the uids `emulate` gives its own objects (kept in the state directory).
    uid_seed: Option<Vec<u8>>,
}

impl LoadedIssuer {
    /// A uid for an object the emulator makes itself: the same at every start that shares the
    /// state directory, so tokens bound to it survive a restart; random when ephemeral.
    pub fn uid_for(&self, kind: &str, namespace: &str, name: &str) -> String {
        match &self.uid_seed {
            Some(seed) => derived_uid(seed, kind, namespace, name),
            None => uuid::Uuid::new_v4().to_string(),
        }
    }
}

/// Loads keys, CA and rules. A generated identity is kept in (and read back from) the state
/// directory. RSA key generation (60-200 ms, first start only) runs on a blocking thread while
/// the CA and the rest load.
pub async fn load_issuer(args: &IssuerArgs) -> Result<LoadedIssuer, CommandError> {
    let state = open_state(args)?;
    let key_task = tokio::task::spawn_blocking({
        let path = args.signing_key.clone();
        let algorithm = match args.key_algorithm {
            KeyAlgorithmArg::Rs256 => KeyAlgorithm::Rs256,
            KeyAlgorithmArg::Es256 => KeyAlgorithm::Es256,
        };
        let state = state.clone();
        move || load_signing_key(path.as_deref(), algorithm, state.as_ref())
    });
    let ca = load_ca(
        args.ca_cert.as_deref(),
        args.ca_key.as_deref(),
        state.as_ref(),
    )?;
    let config = issuer_config(args)?;
    let extra_jwks = args
        .extra_verification_keys
        .iter()
        .map(|path| {
            let pem = read_text("--extra-verification-keys", path)?;
            verification_jwk_from_pem(&pem).map_err(|e| {
                CommandError::usage(format!("--extra-verification-keys {}: {e}", path.display()))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let uid_seed = state
        .as_ref()
        .map(|state| state.load_or_create(state_files::UID_SEED, random_secret))
        .transpose()
        .map_err(state_error)?;
    let key = key_task
        .await
        .map_err(|e| CommandError::failure(format!("signing key task failed: {e}")))??;
    for warning in config.startup_warnings() {
        tracing::warn!("{warning}");
    }
    Ok(LoadedIssuer {
        key: Arc::new(key),
        ca,
        config,
        extra_jwks,
        state,
        uid_seed,
    })
}

/// The state directory of `--state-dir`, or the default one; none with `--ephemeral`. A default
/// that cannot be used (no home, a read-only file system) is a warning, not a failure: the
/// identity is then new at every start.
fn open_state(args: &IssuerArgs) -> Result<Option<StateDir>, CommandError> {
    if args.ephemeral {
        return Ok(None);
    }
    if let Some(dir) = &args.state_dir {
        return StateDir::open(dir)
            .map(Some)
            .map_err(|e| CommandError::usage(format!("--state-dir: {e}")));
    }
    let Some(dir) = crate::state::default_path() else {
        tracing::warn!("no state directory (neither XDG_STATE_HOME nor HOME is set): the CA, signing key and admin token are new at every start; pass --state-dir to keep them");
        return Ok(None);
    };
    match StateDir::open(&dir) {
        Ok(state) => Ok(Some(state)),
        Err(e) => {
            tracing::warn!(error = %e, "cannot use the default state directory: the CA, signing key and admin token are new at every start; pass --state-dir to keep them");
            Ok(None)
        }
    }
}

fn state_error(e: StateError) -> CommandError {
    CommandError::usage(format!(
        "{e} (the state directory keeps the emulator's identity; --ephemeral starts without it)"
    ))
}

/// 32 random bytes, base64url: an admin token or a seed.
fn random_secret() -> Result<Vec<u8>, String> {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| "no randomness".to_owned())?;
    Ok(URL_SAFE_NO_PAD.encode(bytes).into_bytes())
}

fn load_signing_key(
    path: Option<&Path>,
    algorithm: KeyAlgorithm,
    state: Option<&StateDir>,
) -> Result<SigningKey, CommandError> {
    let generate = || {
        SigningKey::generate(algorithm)
            .map_err(|e| CommandError::failure(format!("cannot generate a signing key: {e}")))
    };
    match (path, state) {
        (Some(path), _) => {
            let pem = read_text("--signing-key", path)?;
            SigningKey::from_pem(&pem)
                .map_err(|e| CommandError::usage(format!("--signing-key {}: {e}", path.display())))
        }
        (None, Some(state)) => {
            let name =
                state_files::signing_key(algorithm.jose_name().to_ascii_lowercase().as_str());
            let pem = state
                .load_or_create(&name, || {
                    generate()
                        .map(|key| key.private_key_pem().into_bytes())
                        .map_err(|e| e.message)
                })
                .map_err(state_error)?;
            SigningKey::from_pem(&String::from_utf8_lossy(&pem)).map_err(|e| {
                CommandError::usage(format!(
                    "{}: {e}; remove it and a new key is made at the next start",
                    state.file(&name).display()
                ))
            })
        }
        (None, None) => generate(),
    }
}

fn load_ca(
    cert: Option<&Path>,
    key: Option<&Path>,
    state: Option<&StateDir>,
) -> Result<CertificateAuthority, CommandError> {
    let generate = || {
        CertificateAuthority::generate("projected-token emulator CA")
            .map_err(|e| CommandError::failure(e.to_string()))
    };
    match (cert, key, state) {
        (Some(cert), Some(key), _) => {
            let cert_pem = read_text("--ca-cert", cert)?;
            let key_pem = read_text("--ca-key", key)?;
            CertificateAuthority::from_pem(&cert_pem, &key_pem)
                .map_err(|e| CommandError::usage(e.to_string()))
        }
        (_, _, Some(state)) => {
            // Certificate and key in one file, so racing starts cannot pair one's certificate
            // with another's key.
            let pem = state
                .load_or_create(state_files::CA, || {
                    generate()
                        .map(|ca| format!("{}{}", ca.cert_pem(), ca.key_pem()).into_bytes())
                        .map_err(|e| e.message)
                })
                .map_err(state_error)?;
            ca_from_state(&String::from_utf8_lossy(&pem)).map_err(|e| {
                CommandError::usage(format!(
                    "{}: {e}; remove it and a new CA is made at the next start",
                    state.file(state_files::CA).display()
                ))
            })
        }
        _ => generate(),
    }
}

/// The CA of the state file: its certificate block, then its key block.
fn ca_from_state(text: &str) -> Result<CertificateAuthority, String> {
    let blocks = pem::parse_many(text).map_err(|e| e.to_string())?;
    let [cert, key] = blocks.as_slice() else {
        return Err(format!(
            "{} PEM blocks, expected a certificate and a key",
            blocks.len()
        ));
    };
    CertificateAuthority::from_pem(&pem::encode(cert), &pem::encode(key)).map_err(|e| e.to_string())
}

pub fn read_text(flag: &str, path: &Path) -> Result<String, CommandError> {
    std::fs::read_to_string(path)
        .map_err(|e| CommandError::usage(format!("{flag} {}: {e}", path.display())))
}

fn issuer_config(args: &IssuerArgs) -> Result<IssuerConfig, CommandError> {
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

/// The object store from `--objects` and `--no-auto-create`; `clock` dates what it stores.
pub fn load_objects(args: &ServerArgs, clock: Arc<dyn Clock>) -> Result<ObjectStore, CommandError> {
    let mut store = ObjectStore::new(!args.no_auto_create).with_clock(clock);
    if let Some(path) = &args.objects {
        let text = read_text("--objects", path)?;
        store
            .load_manifests(&text, || uuid::Uuid::new_v4().to_string())
            .map_err(|e| CommandError::usage(format!("--objects {}: {e}", path.display())))?;
    }
    Ok(store)
}

/// The names every in-cluster client may use for the API server, as in a real cluster.
const CLUSTER_NAMES: [&str; 7] = [
    "localhost",
    "127.0.0.1",
    "::1",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
];

/// The user of `--admin-client-cert-out`'s certificate, as kubeadm names it.
const ADMIN_CERT_USER: &str = "kubernetes-admin";

/// The connection bounds from flags, the cap lowered to fit `open_files` (logged once).
fn connection_limits(args: &ServerArgs, open_files: Option<u64>) -> ConnectionLimits {
    let requested = usize::try_from(args.max_connections).unwrap_or(usize::MAX);
    let max_connections = connection_cap(requested, open_files);
    if max_connections < requested {
        tracing::warn!(
            requested,
            max_connections,
            open_file_limit = open_files.unwrap_or_default(),
            "--max-connections lowered to fit the open-file limit (raise it with `ulimit -n`)"
        );
    }
    ConnectionLimits {
        read_header_timeout: args.read_header_timeout.unsigned_abs(),
        idle_timeout: args.idle_timeout.unsigned_abs(),
        max_connections,
    }
}

/// The running API server.
pub struct RunningApi {
    pub state: Arc<ApiState>,
    /// `https://host:port` of each listener.
    pub urls: Vec<String>,
    pub admin_token_file: AdminTokenFile,
    listeners: Listeners,
}

impl RunningApi {
    /// Stops accepting, lets requests in flight finish (up to 2 s), and cleans up.
    pub async fn shutdown(self) {
        self.listeners.shutdown().await;
        // A generated admin token's directory goes with `self.admin_token_file`.
    }
}

/// Every `--listen` address, bound: done first, so a taken port fails the start before
/// anything is written.
pub struct BoundListeners(Vec<(TcpListener, SocketAddr)>);

pub fn bind_listeners(args: &ServerArgs) -> Result<BoundListeners, CommandError> {
    let mut listeners = Vec::new();
    for addr in &args.listen {
        let listener = TcpListener::bind(addr)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|e| {
                CommandError::failure(format!(
                    "--listen {addr}: {e}; pick another address or port (port 0 picks a free one)"
                ))
            })?;
        let local = listener
            .local_addr()
            .map_err(|e| CommandError::failure(format!("--listen {addr}: {e}")))?;
        listeners.push((listener, local));
    }
    Ok(BoundListeners(listeners))
}

/// Serves the API on every bound listener until [`RunningApi::shutdown`].
/// `ledger_limits`: how much the usage ledger remembers (`emulate` sizes it to its pods).
pub async fn start_api(
    loaded: &LoadedIssuer,
    keys: Arc<KeyRing>,
    objects: Arc<Mutex<ObjectStore>>,
    clock: Arc<dyn Clock>,
    args: &ServerArgs,
    ledger_limits: LedgerLimits,
    BoundListeners(listeners): BoundListeners,
) -> Result<RunningApi, CommandError> {
    let mut sans: Vec<String> = CLUSTER_NAMES.iter().map(|s| s.to_string()).collect();
    for (_, local) in &listeners {
        if !local.ip().is_unspecified() {
            sans.push(local.ip().to_string());
        }
    }
    sans.extend(args.sans.iter().cloned());
    sans.sort();
    sans.dedup();
    let (cert_pem, key_pem) = loaded
        .ca
        .serving_certificate(&sans)
        .map_err(|e| CommandError::failure(format!("serving certificate: {e}")))?;
    // Client certificates of the emulator's CA authenticate, as kube-apiserver's
    // --client-ca-file (see `CertificateAuthority::server_config`).
    let tls = loaded
        .ca
        .server_config(&cert_pem, &key_pem)
        .map(|config| RustlsConfig::from_config(Arc::new(config)))
        .map_err(|e| CommandError::failure(e.to_string()))?;
    if let Some(path) = &args.ca_out {
        replace_file(path, loaded.ca.cert_pem().as_bytes(), 0o644)
            .map_err(|e| CommandError::usage(format!("--ca-out {}: {e}", path.display())))?;
    }
    if let Some(dir) = &args.admin_client_cert_out {
        write_admin_client_certificate(&loaded.ca, dir)?;
    }
    let (admin_token, admin_token_file) =
        admin_token(args.admin_token_file.as_deref(), loaded.state.as_ref())?;

    let urls: Vec<String> = listeners
        .iter()
        .map(|(_, local)| {
            if local.ip().is_unspecified() {
                format!("https://localhost:{}", local.port())
            } else {
                format!("https://{local}")
            }
        })
        .collect();
    let public_url = urls.first().cloned().unwrap_or_default();
    if let Some(path) = &args.kubeconfig_out {
        write_kubeconfig(
            path,
            &public_url,
            loaded.ca.cert_pem(),
            &admin_token_file.path(),
        )?;
    }
    let issuer = keys.issuer();
    let audit = args
        .audit_log
        .as_deref()
        .map(AuditLog::open)
        .transpose()
        .map_err(|e| CommandError::usage(format!("--audit-log: {e}")))?;
    let state = Arc::new(ApiState {
        authenticator: Authenticator::new(
            keys.clone(),
            vec![issuer.config.issuer.clone()],
            issuer.config.api_audiences.clone(),
            admin_token,
        ),
        keys,
        objects,
        allow_any_token_request: args.allow_any_token_request,
        clock,
        jwks_uri: format!("{public_url}/openid/v1/jwks"),
        ledger: Mutex::new(Ledger::with_limits(ledger_limits)),
        metrics: Metrics::new(),
        audit,
        outage: OutageSwitch::new(),
        projector: std::sync::OnceLock::new(),
    });
    let app = router(state.clone());
    let limits = connection_limits(args, open_file_limit());
    let listeners = Listeners::spawn(listeners, tls, limits, app, &state.outage, &state.clock);
    if args.allow_any_token_request {
        tracing::warn!("--allow-any-token-request: any authenticated caller may create tokens for any service account (insecure; for trusted docker-compose setups only)");
    }
    Ok(RunningApi {
        state,
        urls,
        admin_token_file,
        listeners,
    })
}

/// Writes `--kubeconfig-out` (mode 0600, replaced whole) for the admin token at `token_file`.
fn write_kubeconfig(
    path: &Path,
    server: &str,
    ca_pem: &str,
    token_file: &Path,
) -> Result<(), CommandError> {
    let flag = "--kubeconfig-out";
    let token_file = std::path::absolute(token_file)
        .map_err(|e| CommandError::failure(format!("{flag}: {}: {e}", token_file.display())))?;
    let yaml = super::kubeconfig_out::render(server, ca_pem, &token_file)
        .map_err(|e| CommandError::failure(format!("{flag}: {e}")))?;
    replace_file(path, yaml.as_bytes(), 0o600)
        .map_err(|e| CommandError::usage(format!("{flag} {}: {e}", path.display())))
}

/// Writes `admin.crt` and `admin.key` (mode 0600) to `dir`: a client certificate of the CA for
/// `kubernetes-admin` in `system:masters`, as kubeadm's admin.conf user.
fn write_admin_client_certificate(
    ca: &CertificateAuthority,
    dir: &Path,
) -> Result<(), CommandError> {
    let flag = "--admin-client-cert-out";
    let (cert_pem, key_pem) = ca
        .client_certificate(ADMIN_CERT_USER, &[MASTERS_GROUP.to_owned()])
        .map_err(|e| CommandError::failure(format!("{flag}: {e}")))?;
    let io_error = |path: &Path, e: PrivateFileError| {
        CommandError::usage(format!("{flag} {}: {e}", path.display()))
    };
    // The key is replaced whole inside a directory only this user can write.
    ensure_private_dir(dir).map_err(|e| io_error(dir, e))?;
    let key_path = dir.join("admin.key");
    replace_file(&key_path, key_pem.as_bytes(), 0o600).map_err(|e| io_error(&key_path, e))?;
    let cert_path = dir.join("admin.crt");
    replace_file(&cert_path, cert_pem.as_bytes(), 0o644).map_err(|e| io_error(&cert_path, e))?;
    tracing::info!(cert = %cert_path.display(), key = %key_path.display(), user = ADMIN_CERT_USER, "wrote the admin client certificate");
    Ok(())
}

/// Where the admin token lives: the user's `--admin-token-file` or the state directory's file
/// (both kept), or a file in a private directory of this run (removed at exit).
pub enum AdminTokenFile {
    Kept(PathBuf),
    Generated(RunDirectory),
}

const GENERATED_ADMIN_TOKEN_NAME: &str = "admin-token";

impl AdminTokenFile {
    pub fn path(&self) -> PathBuf {
        match self {
            Self::Kept(path) => path.clone(),
            Self::Generated(dir) => dir.path().join(GENERATED_ADMIN_TOKEN_NAME),
        }
    }
}

/// The admin token: read from `path` when it holds one, otherwise generated and written there
/// (or kept in the state directory, or without one in a private directory of this run) with
/// mode 0600. An existing file is read only if it is the user's own, private, regular file, and
/// a new one is created without following anything planted at the path (see
/// [`crate::private_files`]).
fn admin_token(
    path: Option<&Path>,
    state: Option<&StateDir>,
) -> Result<(String, AdminTokenFile), CommandError> {
    let flag = "--admin-token-file";
    if let (None, Some(state)) = (path, state) {
        let token = state
            .load_or_create(state_files::ADMIN_TOKEN, random_secret)
            .map_err(state_error)?;
        let token = String::from_utf8_lossy(&token).trim().to_owned();
        return Ok((
            token,
            AdminTokenFile::Kept(state.file(state_files::ADMIN_TOKEN)),
        ));
    }
    let error = |path: &Path, e: PrivateFileError| {
        CommandError::usage(format!("{flag} {}: {e}", path.display()))
    };
    let existing = match path {
        Some(path) => read_private(path).map_err(|e| error(path, e))?,
        None => None,
    };
    if let (Some(path), Some(bytes)) = (path, &existing) {
        let text = String::from_utf8_lossy(bytes);
        if !text.trim().is_empty() {
            return Ok((
                text.trim().to_owned(),
                AdminTokenFile::Kept(path.to_path_buf()),
            ));
        }
    }
    let token = random_secret().map_err(|e| CommandError::failure(format!("admin token: {e}")))?;
    let token = String::from_utf8_lossy(&token).into_owned();
    let file = match path {
        Some(path) => AdminTokenFile::Kept(path.to_path_buf()),
        None => AdminTokenFile::Generated(RunDirectory::create().map_err(|e| {
            CommandError::failure(format!(
                "cannot create a private directory for the admin token: {e}; set TMPDIR to a writable directory or pass {flag}"
            ))
        })?),
    };
    let target = file.path();
    let written = if existing.is_some() {
        // Our own private file, only empty: replaced whole.
        replace_file(&target, token.as_bytes(), 0o600)
    } else {
        create_private(&target, token.as_bytes())
    };
    written.map_err(|e| error(&target, e))?;
    Ok((token, file))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn serve_args(flags: &[&str]) -> ServerArgs {
        use clap::Parser as _;
        let argv = ["projected-token", "serve"].iter().chain(flags);
        match crate::cli::Cli::try_parse_from(argv)
            .expect("flags parse")
            .command
        {
            crate::cli::Command::Serve(serve) => serve.server,
            _ => unreachable!("parsed serve"),
        }
    }

    #[test]
    fn connection_bounds_default_to_kube_apiservers() {
        use crate::apiserver::connections::{IDLE_TIMEOUT, READ_HEADER_TIMEOUT};
        let limits = connection_limits(&serve_args(&[]), None);
        assert_eq!(limits.read_header_timeout, READ_HEADER_TIMEOUT);
        assert_eq!(limits.read_header_timeout, Duration::from_secs(32));
        assert_eq!(limits.idle_timeout, IDLE_TIMEOUT);
        assert_eq!(limits.idle_timeout, Duration::from_secs(90));
        assert_eq!(limits.max_connections, 4096);
        // A login shell's soft limit of 1024 open files leaves 768 for connections.
        assert_eq!(
            connection_limits(&serve_args(&[]), Some(1024)).max_connections,
            768
        );
        let tuned = serve_args(&[
            "--read-header-timeout=1500ms",
            "--idle-timeout=2s",
            "--max-connections=10",
        ]);
        let limits = connection_limits(&tuned, Some(1024));
        assert_eq!(limits.read_header_timeout, Duration::from_millis(1500));
        assert_eq!(limits.idle_timeout, Duration::from_secs(2));
        assert_eq!(limits.max_connections, 10);
    }
}
