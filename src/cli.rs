//! Command-line interface: every flag also reads a `PROJECTED_TOKEN_*` environment variable.

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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KeyAlgorithmArg {
    Rs256,
    Es256,
}

#[derive(Debug, Args)]
pub struct EmulateArgs {
    /// Directory to project into. Without --pod it receives the default `kube-api-access` volume
    /// (token, ca.crt, namespace); with --pod, one sub-directory per projected volume.
    #[arg(long, env = "PROJECTED_TOKEN_DIR")]
    pub dir: PathBuf,

    /// A Pod manifest (YAML or JSON, as `kubectl get pod -o yaml` prints it) whose projected volumes
    /// are projected into `--dir/<volume-name>/`.
    #[arg(long, env = "PROJECTED_TOKEN_POD")]
    pub pod: Option<PathBuf>,

    /// Namespace of the emulated pod (without --pod).
    #[arg(long, env = "PROJECTED_TOKEN_NAMESPACE", default_value = "default")]
    pub namespace: String,

    /// Name of the emulated pod (without --pod).
    #[arg(long, env = "PROJECTED_TOKEN_POD_NAME", default_value = "emulated-pod")]
    pub pod_name: String,

    /// Service account of the emulated pod (without --pod).
    #[arg(
        long,
        env = "PROJECTED_TOKEN_SERVICE_ACCOUNT",
        default_value = "default"
    )]
    pub service_account: String,

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

    /// Emulator only: replace every token's lifetime with this many seconds (may go below 600,
    /// e.g. 2, so client tests see many rotations).
    #[arg(long, env = "PROJECTED_TOKEN_EXPIRATION_SECONDS", value_parser = clap::value_parser!(i64).range(1..))]
    pub expiration_seconds: Option<i64>,

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
