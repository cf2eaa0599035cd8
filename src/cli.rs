//! Command-line interface: every flag also reads a `PROJECTED_TOKEN_*` environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "projected-token",
    version,
    about = "Kubelet-style projected service account tokens anywhere: emulator, refresher, inspector"
)]
pub struct Cli {
    /// Log line format.
    #[arg(long, global = true, env = "PROJECTED_TOKEN_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Issue tokens with an embedded issuer and project them into a directory as the kubelet does.
    Emulate(Box<EmulateArgs>),
    /// Explain a service account token (no key needed; `--jwks` also verifies its signature).
    Inspect(InspectArgs),
    /// Serve the emulated kube-apiserver token API (TokenRequest, TokenReview, discovery, JWKS)
    /// over HTTPS, without projecting any volume.
    Serve(Box<ServeArgs>),
    /// Fetch the emulator's token usage and fail (exit 1) when a client used stale or replaced
    /// tokens beyond the bounds.
    Check(CheckArgs),
    /// Keep tokens from a real kube-apiserver (TokenRequest) fresh in a directory, as the kubelet
    /// does: a sidecar, init container (--once) or docker-compose service.
    Sidecar(Box<SidecarArgs>),
    /// Watch a projected directory as client libraries do (inotify, following `..data` swaps;
    /// polling where inotify is unavailable) and print one line per token rotation.
    Watch(WatchArgs),
    /// Drive a running emulator (admin token required): rotate tokens now, rotate the signing
    /// key, revoke a pod, simulate an outage, change token lifetimes.
    Ctl(CtlArgs),
    /// Exit 0 when a projected directory holds a usable token (and/or a URL such as the API's
    /// /readyz answers 2xx), else 1 with the reason: a health check for images without a shell.
    Probe(ProbeArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KeyAlgorithmArg {
    Rs256,
    Es256,
}

#[derive(Debug, Args)]
pub struct EmulateArgs {
    /// Directory to project into. Without --pod it receives the default `kube-api-access` volume
    /// (token, ca.crt, namespace); with --pod, one sub-directory per projected volume; with
    /// --pods, `<namespace>/<pod-name>/<volume-name>/`.
    #[arg(long, env = "PROJECTED_TOKEN_DIR")]
    pub dir: PathBuf,

    /// A Pod manifest (YAML or JSON, as `kubectl get pod -o yaml` prints it) whose projected volumes
    /// are projected into `--dir/<volume-name>/`.
    #[arg(long, env = "PROJECTED_TOKEN_POD")]
    pub pod: Option<PathBuf>,

    /// Many pods, as one kubelet runs them: a directory of Pod manifests (`*.yaml`, `*.yml`,
    /// `*.json`; one pod per file or several separated by `---`) or one such file. Each pod's
    /// volumes go to `--dir/<namespace>/<pod-name>/<volume-name>/`, each with its own tokens.
    #[arg(long, env = "PROJECTED_TOKEN_PODS", conflicts_with_all = ["pod", "namespace", "pod_name", "service_account"])]
    pub pods: Option<PathBuf>,

    /// Namespace of the emulated pod (without --pod or --pods).
    #[arg(long, env = "PROJECTED_TOKEN_NAMESPACE", default_value = "default")]
    pub namespace: String,

    /// Name of the emulated pod (without --pod or --pods).
    #[arg(long, env = "PROJECTED_TOKEN_POD_NAME", default_value = "emulated-pod")]
    pub pod_name: String,

    /// Service account of the emulated pod (without --pod or --pods).
    #[arg(
        long,
        env = "PROJECTED_TOKEN_SERVICE_ACCOUNT",
        default_value = "default"
    )]
    pub service_account: String,

    #[command(flatten)]
    pub issuer: IssuerArgs,

    #[command(flatten)]
    pub server: ServerArgs,

    /// Project only; do not serve the API.
    #[arg(long, env = "PROJECTED_TOKEN_NO_SERVE")]
    pub no_serve: bool,

    /// Emulator only: replace every token's lifetime with this many seconds (may go below 600,
    /// e.g. 2, so client tests see many rotations).
    #[arg(long, env = "PROJECTED_TOKEN_EXPIRATION_SECONDS", value_parser = clap::value_parser!(i64).range(1..))]
    pub expiration_seconds: Option<i64>,

    #[command(flatten)]
    pub writing: WritingArgs,
}

/// What `emulate` and `sidecar` share about writing volumes: the data of config maps and
/// secrets a pod's projections name, and durability.
#[derive(Debug, Args)]
pub struct WritingArgs {
    /// A config map's data as a directory of files: NAME=DIR (repeatable).
    #[arg(
        long = "configmap",
        env = "PROJECTED_TOKEN_CONFIGMAPS",
        value_delimiter = ','
    )]
    pub configmaps: Vec<String>,

    /// A secret's data as a directory of files: NAME=DIR (repeatable).
    #[arg(
        long = "secret",
        env = "PROJECTED_TOKEN_SECRETS",
        value_delimiter = ','
    )]
    pub secrets: Vec<String>,

    /// Skip fsync of files and directories (faster, not crash-durable; upstream never fsyncs).
    #[arg(long, env = "PROJECTED_TOKEN_NO_FSYNC")]
    pub no_fsync: bool,
}

/// The token issuer's keys and rules, as kube-apiserver's `--service-account-*` flags.
#[derive(Debug, Args)]
pub struct IssuerArgs {
    /// PEM private key (RSA or EC P-256) to sign tokens with; generated in memory when absent.
    #[arg(long, env = "PROJECTED_TOKEN_SIGNING_KEY")]
    pub signing_key: Option<PathBuf>,

    /// Algorithm of a generated signing key.
    #[arg(long, env = "PROJECTED_TOKEN_KEY_ALGORITHM", value_enum, default_value_t = KeyAlgorithmArg::Rs256)]
    pub key_algorithm: KeyAlgorithmArg,

    /// PEM CA certificate written as `ca.crt` (needs --ca-key); generated in memory when absent.
    #[arg(long, env = "PROJECTED_TOKEN_CA_CERT", requires = "ca_key")]
    pub ca_cert: Option<PathBuf>,

    /// PEM private key of --ca-cert.
    #[arg(long, env = "PROJECTED_TOKEN_CA_KEY", requires = "ca_cert")]
    pub ca_key: Option<PathBuf>,

    /// Issuer (`iss`) of minted tokens, as kube-apiserver's --service-account-issuer.
    #[arg(long, env = "PROJECTED_TOKEN_ISSUER", default_value = crate::issuer::DEFAULT_ISSUER)]
    pub issuer: String,

    /// API audiences (comma-separated); default: the issuer.
    #[arg(long, env = "PROJECTED_TOKEN_API_AUDIENCES", value_delimiter = ',')]
    pub api_audiences: Vec<String>,

    /// Longest lifetime a TokenRequest may get, in seconds (3600 to 2^32; 0 or absent: no limit).
    #[arg(long, env = "PROJECTED_TOKEN_MAX_TOKEN_EXPIRATION")]
    pub max_token_expiration: Option<i64>,

    /// Give 3607-second pod-bound tokens a one-year `exp` and a `warnafter` claim, as upstream.
    #[arg(long, env = "PROJECTED_TOKEN_EXTEND_TOKEN_EXPIRATION", default_value_t = true, action = clap::ArgAction::Set)]
    pub extend_token_expiration: bool,

    /// More keys whose tokens are accepted and listed in the JWKS (PEM files, public or private;
    /// repeatable or comma-separated), e.g. the previous signing key after a key rotation.
    #[arg(
        long,
        env = "PROJECTED_TOKEN_EXTRA_VERIFICATION_KEYS",
        value_delimiter = ','
    )]
    pub extra_verification_keys: Vec<PathBuf>,
}

/// The HTTPS API server.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Address to serve HTTPS on (repeatable or comma-separated; port 0 picks a free port).
    #[arg(
        long,
        env = "PROJECTED_TOKEN_LISTEN",
        value_delimiter = ',',
        default_value = "127.0.0.1:6443"
    )]
    pub listen: Vec<SocketAddr>,

    /// Extra subject alternative names for the serving certificate (DNS names or IPs).
    #[arg(long = "san", env = "PROJECTED_TOKEN_SANS", value_delimiter = ',')]
    pub sans: Vec<String>,

    /// File holding the admin bearer token: read if it exists and is not empty, otherwise a
    /// random token is generated and written there (mode 0600). Default: a file in the
    /// temporary directory, removed at exit.
    #[arg(long, env = "PROJECTED_TOKEN_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,

    /// Write the CA certificate (PEM) that signs the serving certificate to this file.
    #[arg(long, env = "PROJECTED_TOKEN_CA_OUT")]
    pub ca_out: Option<PathBuf>,

    /// Write an admin client certificate of the CA to this directory: `admin.crt` and
    /// `admin.key` (mode 0600), user `kubernetes-admin` in group `system:masters`.
    #[arg(long, env = "PROJECTED_TOKEN_ADMIN_CLIENT_CERT_OUT")]
    pub admin_client_cert_out: Option<PathBuf>,

    /// ServiceAccount, Pod, Secret and Node manifests (multi-document YAML) to start with.
    #[arg(long, env = "PROJECTED_TOKEN_OBJECTS")]
    pub objects: Option<PathBuf>,

    /// Do not create service accounts, pods, secrets and nodes on first use.
    #[arg(long, env = "PROJECTED_TOKEN_NO_AUTO_CREATE")]
    pub no_auto_create: bool,

    /// Let any authenticated caller (not only the admin token) create tokens. INSECURE: meant
    /// for docker-compose setups where every container is trusted.
    #[arg(long, env = "PROJECTED_TOKEN_ALLOW_ANY_TOKEN_REQUEST")]
    pub allow_any_token_request: bool,

    /// Append an audit log (JSON lines, audit.k8s.io/v1 Event) to this file.
    #[arg(long, env = "PROJECTED_TOKEN_AUDIT_LOG")]
    pub audit_log: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub issuer: IssuerArgs,

    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A token file, `-` for standard input, or the token itself.
    pub token: String,

    /// Output format.
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,

    /// Also verify the signature against this JWKS (a file, or an http(s) URL). A signature that
    /// does not verify still prints the explanation, then exits 1.
    #[arg(long, env = "PROJECTED_TOKEN_JWKS")]
    pub jwks: Option<String>,

    /// CA certificate (PEM) to trust when --jwks is an https URL.
    #[arg(long, env = "PROJECTED_TOKEN_JWKS_CA")]
    pub jwks_ca: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SidecarArgs {
    /// Directory to project into. Without --pod it receives one volume: the token, `ca.crt` (the
    /// cluster's CA) and `namespace`; with --pod, one sub-directory per projected volume.
    #[arg(long, env = "PROJECTED_TOKEN_DIR")]
    pub dir: PathBuf,

    /// A Pod manifest whose projected volumes (serviceAccountToken, configMap, secret,
    /// downwardAPI sources) are projected into `--dir/<volume-name>/`.
    #[arg(long, env = "PROJECTED_TOKEN_POD")]
    pub pod: Option<PathBuf>,

    /// Namespace of the service account (default: the kubeconfig context's, or the one in
    /// --credentials-dir, or `default`).
    #[arg(long, env = "PROJECTED_TOKEN_NAMESPACE")]
    pub namespace: Option<String>,

    /// Service account to request tokens for (without --pod).
    #[arg(
        long,
        env = "PROJECTED_TOKEN_SERVICE_ACCOUNT",
        default_value = "default"
    )]
    pub service_account: String,

    /// Audience of the token (without --pod; default: the API server's audiences).
    #[arg(long, env = "PROJECTED_TOKEN_AUDIENCE")]
    pub audience: Option<String>,

    /// Requested lifetime in seconds (without --pod). The server decides what it grants.
    #[arg(
        long,
        env = "PROJECTED_TOKEN_EXPIRATION_SECONDS",
        default_value_t = 3600
    )]
    pub expiration_seconds: i64,

    /// Bind the token to this pod (typically from the downward API: metadata.name).
    #[arg(long, env = "PROJECTED_TOKEN_BOUND_POD_NAME")]
    pub bound_pod_name: Option<String>,

    /// The bound pod's uid (downward API: metadata.uid).
    #[arg(
        long,
        env = "PROJECTED_TOKEN_BOUND_POD_UID",
        requires = "bound_pod_name"
    )]
    pub bound_pod_uid: Option<String>,

    /// Use this kubeconfig instead of the in-cluster configuration.
    #[arg(long, env = "PROJECTED_TOKEN_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// Kubeconfig context (default: the current context).
    #[arg(long, env = "PROJECTED_TOKEN_CONTEXT", requires = "kubeconfig")]
    pub context: Option<String>,

    /// In-cluster: where our own token, ca.crt and namespace are (re-read before each request).
    #[arg(
        long,
        env = "PROJECTED_TOKEN_CREDENTIALS_DIR",
        default_value = crate::source::connection::IN_CLUSTER_CREDENTIALS_DIR
    )]
    pub credentials_dir: PathBuf,

    /// Serve /healthz, /readyz and /metrics over plain HTTP here (e.g. 0.0.0.0:9090).
    #[arg(long, env = "PROJECTED_TOKEN_METRICS_LISTEN")]
    pub metrics_listen: Option<std::net::SocketAddr>,

    /// After each rotation, send this signal (HUP, USR1, ...) to --signal-pid or the pid in
    /// --signal-pid-file.
    #[arg(long, env = "PROJECTED_TOKEN_ON_ROTATE_SIGNAL")]
    pub on_rotate_signal: Option<String>,

    #[arg(
        long,
        env = "PROJECTED_TOKEN_SIGNAL_PID",
        conflicts_with = "signal_pid_file"
    )]
    pub signal_pid: Option<i32>,

    /// A file holding the pid to signal, read at each rotation (the app may restart).
    #[arg(long, env = "PROJECTED_TOKEN_SIGNAL_PID_FILE")]
    pub signal_pid_file: Option<PathBuf>,

    /// After each rotation, run this command (no shell; arguments split at spaces), with
    /// PROJECTED_TOKEN_PATH, PROJECTED_TOKEN_EXPIRES_AT, ... in its environment.
    #[arg(long, env = "PROJECTED_TOKEN_ON_ROTATE_EXEC")]
    pub on_rotate_exec: Option<String>,

    /// Time limit of --on-rotate-exec and --on-rotate-http (e.g. 30s).
    #[arg(long, env = "PROJECTED_TOKEN_HOOK_TIMEOUT", default_value = "30s")]
    pub hook_timeout: jiff::SignedDuration,

    /// After each rotation, POST a JSON description (never the token) to this URL.
    #[arg(long, env = "PROJECTED_TOKEN_ON_ROTATE_HTTP")]
    pub on_rotate_http: Option<reqwest::Url>,

    /// Write every token once and exit (an init container); non-zero with the reason on failure.
    #[arg(long, env = "PROJECTED_TOKEN_ONCE")]
    pub once: bool,

    /// First retry delay after a failure; doubles per failure with full jitter up to --backoff-cap.
    #[arg(long, env = "PROJECTED_TOKEN_BACKOFF_INITIAL", default_value = "1s")]
    pub backoff_initial: jiff::SignedDuration,

    #[arg(long, env = "PROJECTED_TOKEN_BACKOFF_CAP", default_value = "60s")]
    pub backoff_cap: jiff::SignedDuration,

    #[command(flatten)]
    pub writing: WritingArgs,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub api: ApiConnectionArgs,

    /// Stale uses (after the token's `warnafter`) allowed per client.
    #[arg(long, env = "PROJECTED_TOKEN_MAX_STALE", default_value_t = 0)]
    pub max_stale: u64,

    /// Longest a client may keep using a token after its replacement was written (e.g. 5s, 90s,
    /// 2m, 1m30s). client-go rereads its token file about every 50 s: allow 60s for it.
    #[arg(long, env = "PROJECTED_TOKEN_MAX_RELOAD_DELAY", default_value = "5s", value_parser = parse_reload_delay)]
    pub max_reload_delay: jiff::SignedDuration,

    /// Also write the reload report: FILE.json and FILE.html (a self-contained page with one
    /// timeline per client). A `.json` or `.html` extension of FILE is replaced.
    #[arg(long, env = "PROJECTED_TOKEN_REPORT", value_name = "FILE")]
    pub report: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// The projected directory (e.g. /var/run/secrets/kubernetes.io/serviceaccount). It may not
    /// exist yet: its first token is then reported as a rotation from nothing.
    #[arg(env = "PROJECTED_TOKEN_DIR")]
    pub dir: PathBuf,

    /// Path of the token inside DIR (a projected volume's `serviceAccountToken.path`).
    #[arg(
        long,
        env = "PROJECTED_TOKEN_WATCH_TOKEN_PATH",
        default_value = "token"
    )]
    pub token_path: String,

    /// Output format: one line per event, or one JSON object per line.
    #[arg(long, short, env = "PROJECTED_TOKEN_OUTPUT", value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,

    /// Run this command (no shell; arguments split at spaces) for every event printed, in
    /// order, with PROJECTED_TOKEN_EVENT, PROJECTED_TOKEN_JTI, ... in its environment.
    #[arg(long, env = "PROJECTED_TOKEN_WATCH_EXEC")]
    pub exec: Option<String>,

    /// Time limit of one --exec run (e.g. 30s); its process group is killed after it.
    #[arg(long, env = "PROJECTED_TOKEN_WATCH_EXEC_TIMEOUT", default_value = "30s", value_parser = parse_positive_duration)]
    pub exec_timeout: jiff::SignedDuration,

    /// Exit (0) after this many rotations.
    #[arg(long, env = "PROJECTED_TOKEN_WATCH_COUNT", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,

    /// Exit after this long (e.g. 30s, 2m): 0, or 1 when --count rotations were not seen by then.
    #[arg(long, env = "PROJECTED_TOKEN_WATCH_TIMEOUT", value_parser = parse_positive_duration)]
    pub timeout: Option<jiff::SignedDuration>,

    /// Exit 1 (at --count, --timeout or a signal) if any error event or inconsistent change was
    /// seen.
    #[arg(long, env = "PROJECTED_TOKEN_WATCH_STRICT")]
    pub strict: bool,

    /// Poll instead of using inotify (as on file systems without inotify, e.g. network mounts).
    #[arg(long, env = "PROJECTED_TOKEN_WATCH_POLL")]
    pub poll: bool,

    /// How often to look when polling (with --poll, or when inotify is unavailable).
    #[arg(long, env = "PROJECTED_TOKEN_WATCH_POLL_INTERVAL", default_value = "1s", value_parser = parse_positive_duration)]
    pub poll_interval: jiff::SignedDuration,
}

// Its own `PROJECTED_TOKEN_PROBE_*` variables: a health check runs with the environment of the
// container it checks, whose `PROJECTED_TOKEN_DIR` may mean something else (e.g. with --pod).
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("probed").required(true).multiple(true).args(["dir", "url"])))]
pub struct ProbeArgs {
    /// A projected directory: ready when `..data` resolves, no name dangles, `ca.crt` and
    /// `namespace` (where present) are readable files, and the token decodes as a JWT whose
    /// `exp` has not passed.
    #[arg(long, env = "PROJECTED_TOKEN_PROBE_DIR")]
    pub dir: Option<PathBuf>,

    /// Path of the token inside --dir (a projected volume's `serviceAccountToken.path`).
    #[arg(
        long,
        env = "PROJECTED_TOKEN_PROBE_TOKEN_PATH",
        default_value = "token"
    )]
    pub token_path: String,

    /// An http(s) URL to GET, e.g. https://127.0.0.1:6443/readyz or the sidecar's
    /// http://127.0.0.1:9090/readyz: ready on a 2xx answer (redirects are not followed).
    #[arg(long, env = "PROJECTED_TOKEN_PROBE_URL", value_parser = parse_probe_url)]
    pub url: Option<reqwest::Url>,

    /// CA certificate (PEM) to trust for an https --url (e.g. the projected ca.crt); without it,
    /// the platform's roots.
    #[arg(long, env = "PROJECTED_TOKEN_PROBE_CA", requires = "url")]
    pub ca: Option<PathBuf>,

    /// Give up (exit 1) after this long, whatever hangs (a FIFO, a dead mount, a silent server).
    #[arg(long, env = "PROJECTED_TOKEN_PROBE_TIMEOUT", default_value = "3s", value_parser = parse_positive_duration)]
    pub timeout: jiff::SignedDuration,
}

fn parse_probe_url(text: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(text)
        .map_err(|e| format!("not a URL ({e}); e.g. https://127.0.0.1:6443/readyz"))?;
    match url.scheme() {
        "http" | "https" => Ok(url),
        other => Err(format!("the scheme must be http or https, not {other}")),
    }
}

/// A duration above zero in jiff's friendly format (`500ms`, `30s`, `2m`) or ISO 8601.
fn parse_positive_duration(text: &str) -> Result<jiff::SignedDuration, String> {
    let duration: jiff::SignedDuration = text
        .parse()
        .map_err(|e| format!("not a duration ({e}); e.g. 500ms, 30s, 2m"))?;
    if !duration.is_positive() {
        return Err("must be above zero".to_owned());
    }
    Ok(duration)
}

/// How our commands reach a running emulator: its URL, the CA to trust, the admin token.
#[derive(Debug, Args)]
pub struct ApiConnectionArgs {
    /// Base URL of the emulated API server, e.g. https://127.0.0.1:6443.
    #[arg(long, env = "PROJECTED_TOKEN_SERVER", value_parser = parse_server_url)]
    pub server: reqwest::Url,

    /// CA certificate (PEM) that signed the server's certificate; the only one trusted.
    #[arg(long, env = "PROJECTED_TOKEN_CA")]
    pub ca: PathBuf,

    /// File holding the admin bearer token (the `admin token file` the emulator prints).
    #[arg(long, env = "PROJECTED_TOKEN_TOKEN_FILE")]
    pub token_file: PathBuf,

    /// Output format: text for people, or JSON (the server's answer, or `check`'s verdict).
    #[arg(long, short, env = "PROJECTED_TOKEN_OUTPUT", value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct CtlArgs {
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// Show the signing keys, any outage, the token lifetime and the projected pods.
    Status(CtlStatusArgs),
    /// Replace tokens now, as if their refresh were due: one pod's (--pod) or every one.
    Rotate(CtlRotateArgs),
    /// Rotate the signing key: tokens minted from now on carry a new `kid`; the old key stays in
    /// the JWKS (and accepted) for --grace, or is dropped at once with --grace 0.
    RotateKey(CtlRotateKeyArgs),
    /// Revoke a pod's tokens by deleting the pod: they fail authentication from now on.
    Revoke(CtlRevokeArgs),
    /// Simulate an API outage for --duration: 503 with Retry-After (unavailable), or refused
    /// connections (refuse). Returns at once; the server ends the outage by itself.
    Outage(CtlOutageArgs),
    /// Change the lifetime of every token the emulator mints (as --expiration-seconds); the
    /// projected tokens are replaced at once.
    Lifetime(CtlLifetimeArgs),
}

#[derive(Debug, Args)]
pub struct CtlStatusArgs {
    #[command(flatten)]
    pub connection: ApiConnectionArgs,
}

#[derive(Debug, Args)]
pub struct CtlRotateArgs {
    #[command(flatten)]
    pub connection: ApiConnectionArgs,

    /// Rotate only this pod's tokens (default: every projected token).
    #[arg(long, env = "PROJECTED_TOKEN_POD_NAME")]
    pub pod: Option<String>,

    /// Namespace of --pod.
    #[arg(long, env = "PROJECTED_TOKEN_NAMESPACE", default_value = "default")]
    pub namespace: String,
}

#[derive(Debug, Args)]
pub struct CtlRotateKeyArgs {
    #[command(flatten)]
    pub connection: ApiConnectionArgs,

    /// How long the old key stays published and accepted (e.g. 30s, 10m, 1h); 0 drops it at
    /// once, as a bad rollout would: tokens it signed fail from then on.
    #[arg(long, env = "PROJECTED_TOKEN_GRACE", default_value = "1h", value_parser = parse_seconds)]
    pub grace: i64,

    /// Algorithm of the new key (default: the current key's).
    #[arg(long, env = "PROJECTED_TOKEN_KEY_ALGORITHM", value_enum)]
    pub key_algorithm: Option<KeyAlgorithmArg>,

    /// Also replace every projected token now, signed with the new key.
    #[arg(long, env = "PROJECTED_TOKEN_ROTATE_TOKENS")]
    pub rotate_tokens: bool,
}

#[derive(Debug, Args)]
pub struct CtlRevokeArgs {
    #[command(flatten)]
    pub connection: ApiConnectionArgs,

    /// The pod to delete.
    #[arg(env = "PROJECTED_TOKEN_POD_NAME")]
    pub pod: String,

    /// Its namespace.
    #[arg(long, env = "PROJECTED_TOKEN_NAMESPACE", default_value = "default")]
    pub namespace: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutageModeArg {
    /// Every API request (except the controls) is answered 503 with Retry-After.
    Unavailable,
    /// The listeners close: connections are refused until the outage ends.
    Refuse,
}

#[derive(Debug, Args)]
pub struct CtlOutageArgs {
    #[command(flatten)]
    pub connection: ApiConnectionArgs,

    /// What clients see during the outage.
    #[arg(long, env = "PROJECTED_TOKEN_OUTAGE_MODE", value_enum, default_value_t = OutageModeArg::Unavailable)]
    pub mode: OutageModeArg,

    /// How long (e.g. 10s, 2m; at most 24h).
    #[arg(long, env = "PROJECTED_TOKEN_OUTAGE_DURATION", value_parser = parse_seconds, required_unless_present = "end")]
    pub duration: Option<i64>,

    /// End the outage in progress now (a 503 outage; while connections are refused, the
    /// controls cannot be reached either).
    #[arg(long, conflicts_with = "duration")]
    pub end: bool,
}

#[derive(Debug, Args)]
pub struct CtlLifetimeArgs {
    #[command(flatten)]
    pub connection: ApiConnectionArgs,

    /// The new lifetime (e.g. 5s, 10m, 3607s; a bare number is seconds).
    #[arg(env = "PROJECTED_TOKEN_LIFETIME", value_parser = parse_seconds, required_unless_present = "reset")]
    pub lifetime: Option<i64>,

    /// Give every token the lifetime its volume asks for again (no --expiration-seconds).
    #[arg(long, conflicts_with = "lifetime")]
    pub reset: bool,
}

/// Whole seconds: a bare number, or a duration (`30s`, `10m`, `1h`, `1m30s`).
fn parse_seconds(text: &str) -> Result<i64, String> {
    if let Ok(seconds) = text.trim().parse::<i64>() {
        return (seconds >= 0)
            .then_some(seconds)
            .ok_or_else(|| "must not be negative".to_owned());
    }
    let duration: jiff::SignedDuration = text
        .parse()
        .map_err(|e| format!("not a duration ({e}); e.g. 30s, 10m, 1h, 1m30s"))?;
    if duration.is_negative() {
        return Err("must not be negative".to_owned());
    }
    if duration.subsec_nanos() != 0 {
        return Err("give whole seconds".to_owned());
    }
    Ok(duration.as_secs())
}

/// An https URL without query or fragment: the usage report's path is appended to it.
fn parse_server_url(text: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(text)
        .map_err(|e| format!("not a URL ({e}); e.g. https://127.0.0.1:6443"))?;
    if url.scheme() != "https" {
        return Err(format!("the scheme must be https, not {}", url.scheme()));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("give the server's base URL, without a query or fragment".to_owned());
    }
    Ok(url)
}

/// A non-negative duration in jiff's friendly format (`5s`, `1m30s`, `2 minutes`) or ISO 8601.
fn parse_reload_delay(text: &str) -> Result<jiff::SignedDuration, String> {
    let delay: jiff::SignedDuration = text
        .parse()
        .map_err(|e| format!("not a duration ({e}); e.g. 5s, 90s, 2m, 1m30s"))?;
    if delay.is_negative() {
        return Err("must not be negative".to_owned());
    }
    Ok(delay)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reload_delays() {
        let secs = jiff::SignedDuration::from_secs;
        assert_eq!(parse_reload_delay("5s"), Ok(secs(5)));
        assert_eq!(parse_reload_delay("90s"), Ok(secs(90)));
        assert_eq!(parse_reload_delay("2m"), Ok(secs(120)));
        assert_eq!(parse_reload_delay("1m30s"), Ok(secs(90)));
        assert_eq!(
            parse_reload_delay("1.5s"),
            Ok(jiff::SignedDuration::from_millis(1500))
        );
        assert_eq!(parse_reload_delay("0s"), Ok(secs(0)));
        assert!(parse_reload_delay("-5s").is_err());
        assert!(parse_reload_delay("5").is_err());
        assert!(parse_reload_delay("soon").is_err());
    }

    #[test]
    fn positive_durations() {
        assert_eq!(
            parse_positive_duration("500ms"),
            Ok(jiff::SignedDuration::from_millis(500))
        );
        assert_eq!(
            parse_positive_duration("2m"),
            Ok(jiff::SignedDuration::from_secs(120))
        );
        assert!(parse_positive_duration("0s").is_err());
        assert!(parse_positive_duration("-1s").is_err());
        assert!(parse_positive_duration("10").is_err());
    }

    #[test]
    fn seconds() {
        assert_eq!(parse_seconds("5"), Ok(5));
        assert_eq!(parse_seconds("5s"), Ok(5));
        assert_eq!(parse_seconds("0"), Ok(0));
        assert_eq!(parse_seconds("1h"), Ok(3600));
        assert_eq!(parse_seconds("1m30s"), Ok(90));
        assert!(parse_seconds("1.5s").is_err());
        assert!(parse_seconds("-1").is_err());
        assert!(parse_seconds("soon").is_err());
    }

    #[test]
    fn server_urls() {
        assert!(parse_server_url("https://127.0.0.1:6443").is_ok());
        assert!(parse_server_url("https://emulator.local/prefix/").is_ok());
        assert!(parse_server_url("http://127.0.0.1:6443").is_err());
        assert!(parse_server_url("127.0.0.1:6443").is_err());
        assert!(parse_server_url("https://127.0.0.1:6443/?x=1").is_err());
    }
}
