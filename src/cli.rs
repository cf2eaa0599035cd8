//! Command-line interface: every flag also reads a `PROJECTED_TOKEN_*` environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::duration;

/// Prefix of the environment variables every flag reads.
pub const ENV_PREFIX: &str = "PROJECTED_TOKEN_";

/// Parses the command line and the environment, as [`Cli::parse`], with an empty
/// `PROJECTED_TOKEN_*` variable meaning "not set" (clap would take it as an empty value: docker-
/// compose's `${VAR:-}` and Kubernetes' `value: ""` set variables that way). The empty ones are
/// removed from the environment first: call this before any other thread runs.
pub fn parse() -> Cli {
    for name in empty_variables(std::env::vars_os()) {
        std::env::remove_var(name);
    }
    Cli::parse()
}

/// The whole command tree as clap builds it: the source of `--help` and of the generated
/// reference in `docs/commands/` (`tests/cli_docs.rs`).
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

/// The names of the `PROJECTED_TOKEN_*` variables in `vars` whose value is empty.
pub fn empty_variables(
    vars: impl IntoIterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
) -> Vec<std::ffi::OsString> {
    vars.into_iter()
        .filter(|(name, value)| {
            value.is_empty()
                && name
                    .to_str()
                    .is_some_and(|name| name.starts_with(ENV_PREFIX))
        })
        .map(|(name, _)| name)
        .collect()
}

#[derive(Debug, Parser)]
#[command(
    name = "projected-token",
    version,
    about = "Kubelet-style projected service account tokens anywhere: emulator, refresher, inspector",
    after_long_help = "Every flag also reads the PROJECTED_TOKEN_* variable shown with it; an empty \
        variable means \"not set\". Every duration is read one way: a bare number is seconds (5), \
        otherwise a number with units (500ms, 5s, 2m, 1m30s) or ISO 8601 (PT5S); ctl's durations \
        must be whole seconds."
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
    ///
    /// Decodes any JWT without its key and explains it: claims, UTC times, lifetime, bound
    /// object, whether it is a bound or a legacy token, and when a kubelet would refresh it. A
    /// time claim past the dates shown (after 9999-12-30T22:00:00Z, e.g. `exp` = 2^63-1) is
    /// printed as `out of range:` with its number, compared as later than any date (such a token
    /// does not expire in practice) and listed in the JSON's `out_of_range`.
    #[command(after_long_help = "Examples:
  projected-token inspect ./serviceaccount/token          # a file
  projected-token inspect - < token                       # standard input
  projected-token inspect eyJhbGciOi...                   # the token itself
  projected-token inspect --output json TOKEN             # for machines
  projected-token inspect --jwks jwks.json TOKEN          # also verify the signature (file or URL)

Exit status: 0 explained (and verified, with --jwks); 1 the signature does not verify; 2 a \
            malformed token (the message says which part is wrong) or bad arguments.")]
    Inspect(InspectArgs),
    /// Serve the emulated kube-apiserver token API (TokenRequest, TokenReview, discovery, JWKS)
    /// over HTTPS, without projecting any volume.
    Serve(Box<ServeArgs>),
    /// Fetch the emulator's token usage and fail (exit 1) when a client used stale or replaced
    /// tokens beyond the bounds.
    #[command(
        after_long_help = "Exit status: 0 every client within the bounds; 1 a client broke a bound, \
            no client used a token (unless --allow-no-clients), or the emulator could not be \
            reached; 2 bad flags or files, or an admin token the emulator refuses."
    )]
    Check(CheckArgs),
    /// Keep tokens from a real kube-apiserver (TokenRequest) fresh in a directory, as the kubelet
    /// does: a sidecar, init container (--once) or docker-compose service.
    #[command(
        after_long_help = "Signals: SIGHUP refreshes every token now; SIGTERM and SIGINT finish a write \
            in progress and exit 0. With --once: exit 0 once every token is written, non-zero with \
            the reason otherwise."
    )]
    Sidecar(Box<SidecarArgs>),
    /// Watch a projected directory as client libraries do (inotify, following `..data` swaps;
    /// polling where inotify is unavailable) and print one line per token rotation.
    #[command(
        after_long_help = "Exit status: 0 at --count rotations, at --timeout without --count, or on \
            SIGTERM/SIGINT; 1 when --timeout passes first with --count, with --strict after \
            problems, or when standard output is closed; 2 bad arguments. --timeout and the \
            signals end it even while a read is in progress (a file system that does not answer \
            delays the exit by a second at most)."
    )]
    Watch(WatchArgs),
    /// Drive a running emulator (admin token required): rotate tokens now, rotate the signing
    /// key, revoke a pod, simulate an outage, change token lifetimes.
    #[command(
        after_long_help = "Durations are whole seconds: 30, 30s, 10m, 1h, 1m30s (500ms is refused). \
            Exit status: 0 done; 1 the server could not be reached or failed; 2 bad flags or \
            files, a token the server refuses, or a request it rejects (an unknown pod, no outage \
            to end, rotate under serve)."
    )]
    Ctl(CtlArgs),
    /// Exit 0 when a projected directory holds a usable token (and/or a URL such as the API's
    /// /readyz answers 2xx), else 1 with the reason: a health check for images without a shell.
    #[command(
        after_long_help = "Exit status: 0 ready (one line per check); 1 not ready, or --timeout \
            passed (one line saying why, naming the step); 2 bad arguments."
    )]
    Probe(ProbeArgs),
    /// Run a client through the token failures it will meet in a cluster, one scenario each
    /// with its own emulator and pod, and judge it: exit 0 only when every scenario passed.
    #[command(
        after_long_help = "The client command (after --) is started once per scenario with a pod's \
            environment: KUBERNETES_SERVICE_HOST/PORT, the projected token, ca.crt and namespace at \
            /var/run/secrets/kubernetes.io/serviceaccount (in a private mount namespace where the \
            system allows it), and KUBECONFIG with a tokenFile. It must make authenticated requests \
            in a loop. `--list` shows each scenario's timings for the bound. Exit status: 0 every \
            scenario passed; 1 one failed; 2 bad arguments."
    )]
    Conformance(ConformanceArgs),
}

#[derive(Debug, Args)]
pub struct ConformanceArgs {
    /// List the scenarios, what each does when (for --max-reload-delay) and what passes it.
    #[arg(long, env = "PROJECTED_TOKEN_LIST")]
    pub list: bool,

    /// The scenarios to run, comma-separated (default: all but ca-rotation).
    #[arg(long, env = "PROJECTED_TOKEN_SCENARIO", value_delimiter = ',')]
    pub scenario: Vec<String>,

    /// The longest a client may go on using a replaced token (the official clients re-read
    /// theirs every 50 to 60 s). Every scenario's timings derive from it.
    #[arg(long, env = "PROJECTED_TOKEN_MAX_RELOAD_DELAY", default_value = "70s", value_parser = duration::parse_positive)]
    pub max_reload_delay: jiff::SignedDuration,

    /// Uses of tokens past their warnafter allowed per scenario.
    #[arg(long, env = "PROJECTED_TOKEN_MAX_STALE", default_value_t = 0)]
    pub max_stale: u64,

    /// Run the scenarios one after another instead of side by side.
    #[arg(long, env = "PROJECTED_TOKEN_SEQUENTIAL")]
    pub sequential: bool,

    /// Also write the results as JSON to this file.
    #[arg(long, env = "PROJECTED_TOKEN_JSON")]
    pub json: Option<PathBuf>,

    /// Also write the results as JUnit XML to this file (one test case per scenario).
    #[arg(long, env = "PROJECTED_TOKEN_JUNIT")]
    pub junit: Option<PathBuf>,

    /// Where each scenario's client log goes (`<scenario>.log`).
    #[arg(
        long,
        env = "PROJECTED_TOKEN_LOG_DIR",
        default_value = "conformance-logs"
    )]
    pub log_dir: PathBuf,

    /// The client command and its arguments.
    #[arg(last = true)]
    pub command: Vec<std::ffi::OsString>,
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

    /// A Pod manifest (YAML or JSON, as `kubectl get pod -o yaml` prints it; at most 8 MiB) whose
    /// projected volumes are projected into `--dir/<volume-name>/`, their tokens bound to that pod.
    #[arg(long, env = "PROJECTED_TOKEN_POD")]
    pub pod: Option<PathBuf>,

    /// Many pods, as one kubelet runs them: a directory of Pod manifests (`*.yaml`, `*.yml`,
    /// `*.json`; one pod per file or several separated by `---`; `List`/`PodList` documents too)
    /// or one such file. Each pod's volumes go to `--dir/<namespace>/<pod-name>/<volume-name>/`,
    /// each with its own tokens and schedule.
    #[arg(long, env = "PROJECTED_TOKEN_PODS", conflicts_with_all = ["pod", "namespace", "pod_name", "service_account", "node_name"])]
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

    /// Node the emulated pod runs on (without --pod or --pods): its name and uid go into the
    /// pod's tokens, as on a 1.32+ cluster.
    #[arg(
        long,
        env = "PROJECTED_TOKEN_NODE_NAME",
        default_value = "emulated-node"
    )]
    pub node_name: String,

    #[command(flatten)]
    pub issuer: IssuerArgs,

    #[command(flatten)]
    pub server: ServerArgs,

    /// Project only; do not serve the API.
    #[arg(long, env = "PROJECTED_TOKEN_NO_SERVE")]
    pub no_serve: bool,

    /// Emulator only: replace every token's lifetime with this many seconds (may go below 600,
    /// e.g. 2, so client tests see many rotations): projected tokens and those of the
    /// TokenRequest API alike (any requested lifetime is answered with this one and a
    /// `Warning`). `ctl lifetime` changes it while the emulator runs.
    #[arg(long, env = "PROJECTED_TOKEN_EXPIRATION_SECONDS", value_parser = clap::value_parser!(i64).range(1..))]
    pub expiration_seconds: Option<i64>,

    /// Emulator only: mint each projected token's first version as if issued this long ago, as
    /// a client restarting in a long-running pod finds its token, so the kubelet's first refresh
    /// (at 80 % of the lifetime from the issue) comes that much sooner. Capped at 80 % of the
    /// token's lifetime; later versions are fresh.
    #[arg(long, env = "PROJECTED_TOKEN_FIRST_TOKEN_AGE", value_parser = duration::parse_non_negative)]
    pub first_token_age: Option<jiff::SignedDuration>,

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
    /// Directory that keeps the generated CA, signing key, admin token and object uids across
    /// restarts (created with mode 0700). Default: `$XDG_STATE_HOME/projected-token`, else
    /// `~/.local/state/projected-token`.
    #[arg(long, env = "PROJECTED_TOKEN_STATE_DIR", conflicts_with = "ephemeral")]
    pub state_dir: Option<PathBuf>,

    /// Keep nothing: a new CA, signing key and admin token at every start (for tests).
    #[arg(long, env = "PROJECTED_TOKEN_EPHEMERAL")]
    pub ephemeral: bool,

    /// PEM private key (RSA or EC P-256) to sign tokens with; default: the state directory's
    /// (generated at the first start).
    #[arg(long, env = "PROJECTED_TOKEN_SIGNING_KEY")]
    pub signing_key: Option<PathBuf>,

    /// Algorithm of a generated signing key.
    #[arg(long, env = "PROJECTED_TOKEN_KEY_ALGORITHM", value_enum, default_value_t = KeyAlgorithmArg::Rs256)]
    pub key_algorithm: KeyAlgorithmArg,

    /// PEM CA certificate written as `ca.crt` (needs --ca-key); default: the state directory's
    /// (generated at the first start).
    #[arg(long, env = "PROJECTED_TOKEN_CA_CERT", requires = "ca_key")]
    pub ca_cert: Option<PathBuf>,

    /// PEM private key of --ca-cert.
    #[arg(long, env = "PROJECTED_TOKEN_CA_KEY", requires = "ca_cert")]
    pub ca_key: Option<PathBuf>,

    /// Issuer (`iss`) of minted tokens, as kube-apiserver's --service-account-issuer.
    #[arg(long, env = "PROJECTED_TOKEN_ISSUER", default_value = crate::issuer::DEFAULT_ISSUER)]
    pub issuer: String,

    /// API audiences (comma-separated), as kube-apiserver's --api-audiences: the default audience
    /// of a token, and the audiences the 3607-second extension accepts. Default: the issuer.
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

    /// File holding the admin bearer token: read if it exists and is not empty (it must be your
    /// own file that group and others cannot read), otherwise a random token is generated and
    /// written there (mode 0600). Default: `admin-token` in the state directory; with
    /// --ephemeral, a file in a private temporary directory removed at exit.
    #[arg(long, env = "PROJECTED_TOKEN_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,

    /// Write a kubeconfig for the admin to this file (server URL, the CA inline, the admin
    /// token by `tokenFile`), for kubectl, client libraries and `sidecar --kubeconfig`.
    #[arg(long, env = "PROJECTED_TOKEN_KUBECONFIG_OUT")]
    pub kubeconfig_out: Option<PathBuf>,

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

    /// How long a client has for its TLS handshake, and then for the headers of each request
    /// (over HTTP/1.1 this includes the wait for the next request on a kept-alive connection;
    /// over HTTP/2 the first request must arrive by then). kube-apiserver's ReadHeaderTimeout.
    #[arg(long, env = "PROJECTED_TOKEN_READ_HEADER_TIMEOUT", default_value = "32s", value_parser = duration::parse_positive)]
    pub read_header_timeout: jiff::SignedDuration,

    /// A connection with no request in flight for this long is closed (HTTP/2 with a GOAWAY).
    /// kube-apiserver's IdleTimeout.
    #[arg(long, env = "PROJECTED_TOKEN_IDLE_TIMEOUT", default_value = "90s", value_parser = duration::parse_positive)]
    pub idle_timeout: jiff::SignedDuration,

    /// The most connections open at once, across every --listen address; further clients wait
    /// in the kernel's listen queue until one closes. Lowered to fit the open-file limit.
    #[arg(long, env = "PROJECTED_TOKEN_MAX_CONNECTIONS", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
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
        default_value = crate::source::config::IN_CLUSTER_CREDENTIALS_DIR
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

    /// Time limit of --on-rotate-exec and --on-rotate-http (e.g. 30s; a bare number is seconds).
    #[arg(long, env = "PROJECTED_TOKEN_HOOK_TIMEOUT", default_value = "30s", value_parser = duration::parse_positive)]
    pub hook_timeout: jiff::SignedDuration,

    /// After each rotation, POST a JSON description (never the token) to this URL.
    #[arg(long, env = "PROJECTED_TOKEN_ON_ROTATE_HTTP")]
    pub on_rotate_http: Option<reqwest::Url>,

    /// Write every token once and exit (an init container); non-zero with the reason on failure.
    #[arg(long, env = "PROJECTED_TOKEN_ONCE")]
    pub once: bool,

    /// With --once: how long to keep retrying (with the backoff) while the API server is
    /// unavailable (connection refused, timeout, 5xx, 429), e.g. while it starts next to an init
    /// container. A refusal (401, 403, 404) or a rejected request fails at once. 0: no retry.
    #[arg(long, env = "PROJECTED_TOKEN_ONCE_TIMEOUT", default_value = "60s", value_parser = duration::parse_non_negative)]
    pub once_timeout: jiff::SignedDuration,

    /// First retry delay after a failure (e.g. 500ms, 1s); doubles per failure with full jitter up
    /// to --backoff-cap.
    #[arg(long, env = "PROJECTED_TOKEN_BACKOFF_INITIAL", default_value = "1s", value_parser = duration::parse_positive)]
    pub backoff_initial: jiff::SignedDuration,

    /// Longest retry delay (e.g. 60s, 2m).
    #[arg(long, env = "PROJECTED_TOKEN_BACKOFF_CAP", default_value = "60s", value_parser = duration::parse_positive)]
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

    /// Longest a client may keep using a token after its replacement was written (e.g. 5, 5s,
    /// 500ms, 2m, 1m30s; a bare number is seconds). client-go and the other official clients
    /// re-read their token file about once a minute: allow 70s for them, with tokens of 350 s or
    /// more (emulate --expiration-seconds 350).
    #[arg(long, env = "PROJECTED_TOKEN_MAX_RELOAD_DELAY", default_value = "5s", value_parser = duration::parse_non_negative)]
    pub max_reload_delay: jiff::SignedDuration,

    /// Rejected uses allowed per client: tokens the emulator issued but refuses now (signed by a
    /// key it dropped, expired, or invalidated by a deleted pod).
    #[arg(long, env = "PROJECTED_TOKEN_MAX_REJECTED", default_value_t = 0)]
    pub max_rejected: u64,

    /// Pass when no client used a token at all. Without it, nothing observed is a failure: the
    /// client never reached the emulator, or never presented a projected token.
    #[arg(long, env = "PROJECTED_TOKEN_ALLOW_NO_CLIENTS")]
    pub allow_no_clients: bool,

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

    /// Time limit of one --exec run (e.g. 30s; a bare number is seconds); its process group is
    /// killed after it.
    #[arg(long, env = "PROJECTED_TOKEN_WATCH_EXEC_TIMEOUT", default_value = "30s", value_parser = duration::parse_positive)]
    pub exec_timeout: jiff::SignedDuration,

    /// Exit (0) after this many rotations.
    #[arg(long, env = "PROJECTED_TOKEN_WATCH_COUNT", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,

    /// Exit after this long (e.g. 30, 30s, 2m): 0, or 1 when --count rotations were not seen by
    /// then.
    #[arg(long, env = "PROJECTED_TOKEN_WATCH_TIMEOUT", value_parser = duration::parse_positive)]
    pub timeout: Option<jiff::SignedDuration>,

    /// Exit 1 (at --count, --timeout or a signal) if any error event or inconsistent change was
    /// seen.
    #[arg(long, env = "PROJECTED_TOKEN_WATCH_STRICT")]
    pub strict: bool,

    /// Poll instead of using inotify (as on file systems without inotify, e.g. network mounts).
    #[arg(long, env = "PROJECTED_TOKEN_WATCH_POLL")]
    pub poll: bool,

    /// How often to look when polling (with --poll, or when inotify is unavailable; e.g. 500ms).
    #[arg(long, env = "PROJECTED_TOKEN_WATCH_POLL_INTERVAL", default_value = "1s", value_parser = duration::parse_positive)]
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
    #[arg(long, env = "PROJECTED_TOKEN_PROBE_TIMEOUT", default_value = "3s", value_parser = duration::parse_positive)]
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
    /// Default: `admin-token` in the default state directory, where `emulate` and `serve` keep
    /// it unless told otherwise.
    #[arg(long, env = "PROJECTED_TOKEN_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,

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
    /// Change the lifetime of every token the emulator mints, projected or through the
    /// TokenRequest API (as --expiration-seconds); the projected tokens are replaced at once.
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

    /// How long the old key stays published and accepted (e.g. 30, 30s, 10m, 1h; whole
    /// seconds); 0 drops it at once, as a bad rollout would: tokens it signed fail from then on.
    #[arg(long, env = "PROJECTED_TOKEN_GRACE", default_value = "1h", value_parser = duration::parse_whole_seconds)]
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

    /// How long (e.g. 10, 10s, 2m; whole seconds, at most 24h).
    #[arg(long, env = "PROJECTED_TOKEN_OUTAGE_DURATION", value_parser = duration::parse_whole_seconds, required_unless_present = "end")]
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

    /// The new lifetime (e.g. 5, 5s, 10m, 3607s; whole seconds).
    #[arg(env = "PROJECTED_TOKEN_LIFETIME", value_parser = duration::parse_whole_seconds, required_unless_present = "reset")]
    pub lifetime: Option<i64>,

    /// Give every token the lifetime its volume asks for again (no --expiration-seconds).
    #[arg(long, conflicts_with = "lifetime")]
    pub reset: bool,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("projected-token").chain(args.iter().copied()))
    }

    const CONNECTION: [&str; 6] = [
        "--server",
        "https://127.0.0.1:6443",
        "--ca",
        "ca.crt",
        "--token-file",
        "admin.token",
    ];

    fn check_delay(value: &str) -> jiff::SignedDuration {
        let mut args = vec!["check"];
        args.extend(CONNECTION);
        args.extend(["--max-reload-delay", value]);
        match parse(&args).expect(value).command {
            Command::Check(check) => check.max_reload_delay,
            other => panic!("{other:?}"),
        }
    }

    fn ctl_seconds(args: &[&str]) -> Result<i64, clap::Error> {
        let mut all = vec!["ctl"];
        all.extend(args);
        all.extend(CONNECTION);
        Ok(match parse(&all)?.command {
            Command::Ctl(CtlArgs {
                command: CtlCommand::Lifetime(a),
            }) => a.lifetime.expect("lifetime"),
            Command::Ctl(CtlArgs {
                command: CtlCommand::RotateKey(a),
            }) => a.grace,
            Command::Ctl(CtlArgs {
                command: CtlCommand::Outage(a),
            }) => a.duration.expect("duration"),
            other => panic!("{other:?}"),
        })
    }

    fn watch_timeout(value: &str) -> jiff::SignedDuration {
        match parse(&["watch", "dir", "--timeout", value, "--exec-timeout", value])
            .expect(value)
            .command
        {
            Command::Watch(w) => {
                assert_eq!(w.exec_timeout, w.timeout.expect("timeout"));
                w.exec_timeout
            }
            other => panic!("{other:?}"),
        }
    }

    fn sidecar_durations(value: &str) -> [jiff::SignedDuration; 3] {
        let args = [
            "sidecar",
            "--dir",
            "d",
            "--hook-timeout",
            value,
            "--backoff-initial",
            value,
            "--backoff-cap",
            value,
        ];
        match parse(&args).expect(value).command {
            Command::Sidecar(s) => [s.hook_timeout, s.backoff_initial, s.backoff_cap],
            other => panic!("{other:?}"),
        }
    }

    /// `5`, `5s`, `500ms` and `2m` mean the same for every duration flag; `ctl` takes whole
    /// seconds only, and says so.
    #[test]
    fn empty_variables_are_the_empty_ones_of_ours() {
        let vars = [
            ("PROJECTED_TOKEN_CONTEXT", ""),
            ("PROJECTED_TOKEN_DIR", "/out"),
            ("KUBE_CONTEXT", ""),
            ("PROJECTED_TOKEN_ONCE", " "),
        ]
        .map(|(name, value)| (name.into(), value.into()));
        assert_eq!(empty_variables(vars), ["PROJECTED_TOKEN_CONTEXT"]);
    }

    #[test]
    fn every_duration_flag_reads_durations_one_way() {
        let secs = jiff::SignedDuration::from_secs;
        let half = jiff::SignedDuration::from_millis(500);
        for (text, expected) in [
            ("5", secs(5)),
            ("5s", secs(5)),
            ("500ms", half),
            ("2m", secs(120)),
        ] {
            assert_eq!(check_delay(text), expected, "check {text}");
            assert_eq!(watch_timeout(text), expected, "watch {text}");
            assert_eq!(sidecar_durations(text), [expected; 3], "sidecar {text}");
        }
        for args in [
            &["lifetime"][..],
            &["rotate-key", "--grace"],
            &["outage", "--duration"],
        ] {
            for (text, expected) in [("5", 5), ("5s", 5), ("2m", 120), ("1000ms", 1)] {
                let mut all = args.to_vec();
                all.push(text);
                assert_eq!(ctl_seconds(&all).expect(text), expected, "{args:?} {text}");
            }
            let mut all = args.to_vec();
            all.push("500ms");
            let error = ctl_seconds(&all).expect_err("500ms").to_string();
            assert!(
                error.contains("whole number of seconds"),
                "{args:?}: {error}"
            );
        }
        assert_eq!(check_delay("0"), secs(0));
        let mut args = vec!["check"];
        args.extend(CONNECTION);
        args.extend(["--max-reload-delay", "-5s"]);
        assert!(parse(&args).is_err());
        assert!(parse(&["watch", "dir", "--timeout", "0"]).is_err());
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
