//! One file per subcommand, wiring the library's parts together from parsed arguments.

pub use crate::errors::error_chain;
pub use shared::{read_ca, shutdown_signal, CommandError};

pub mod api_client;
pub mod check;
pub mod conformance;
pub mod ctl;
pub mod emulate;
pub mod inspect;
pub mod kubeconfig_out;
pub mod probe;
pub mod serve;
pub mod setup;
pub mod shared;
pub mod sidecar;
pub mod volumes;
pub mod watch;

use std::process::ExitCode;

use crate::cli::{Cli, Command, LogFormat};

/// How long blocking tasks still running when a command ends may delay the exit.
const BLOCKING_TASKS_AT_EXIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Runs the parsed command line and returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    // `conformance` runs its emulators in-process: their INFO lines would bury its own output.
    let quiet = matches!(cli.command, Command::Conformance(_));
    init_logging(cli.log_format, quiet);
    // One crypto provider for the whole process, installed before any TLS object is built.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let result = match cli.command {
        // Its own thread and runtime, left behind at its deadline: dropping a runtime waits for
        // its blocking threads, and a probe must return in time whatever blocks.
        Command::Probe(args) => probe::run(args),
        command => run_async(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", err.message);
            ExitCode::from(err.exit_code)
        }
    }
}

fn run_async(command: Command) -> Result<(), CommandError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| CommandError::failure(format!("cannot start the async runtime: {e}")))?;
    let result = runtime.block_on(async {
        match command {
            Command::Emulate(args) => emulate::run(*args).await,
            Command::Inspect(args) => inspect::run(&args).await,
            Command::Serve(args) => serve::run(*args).await,
            Command::Sidecar(args) => sidecar::run(*args).await,
            Command::Check(args) => check::run(&args).await,
            Command::Watch(args) => watch::run(args).await,
            Command::Ctl(args) => ctl::run(&args).await,
            // `run` takes it first; here it would still return in time (its thread is its own).
            Command::Probe(args) => probe::run(args),
            Command::Conformance(args) => conformance::run(args).await,
        }
    });
    // Dropping the runtime would wait for every blocking task, for ever if one is stuck in a
    // read that never returns (a file system that does not answer): the command is done, so
    // give them a moment and exit. What must finish (writes, hooks) was awaited above.
    runtime.shutdown_timeout(BLOCKING_TASKS_AT_EXIT);
    result
}

/// Our INFO lines by default.
const DEFAULT_LOG_FILTER: &str = "info";
/// Only warnings from notify, whatever the level asked for (unless a filter names notify): its
/// inotify backend reports at INFO that a watch of a directory the atomic writer already removed
/// cannot be removed (EINVAL), on every rotation.
const NOTIFY_LOG_FILTER: &str = "notify=warn";

/// `PROJECTED_TOKEN_LOG` (an `EnvFilter`, e.g. `debug`) or the default, with notify's noise off.
fn log_filter(from_env: Option<&str>) -> tracing_subscriber::EnvFilter {
    let asked = from_env.filter(|f| !f.trim().is_empty());
    let mut text = asked.unwrap_or(DEFAULT_LOG_FILTER).to_owned();
    if !text.contains("notify") {
        text.push(',');
        text.push_str(NOTIFY_LOG_FILTER);
    }
    tracing_subscriber::EnvFilter::try_new(&text).unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{DEFAULT_LOG_FILTER},{NOTIFY_LOG_FILTER}"))
    })
}

fn init_logging(format: LogFormat, quiet: bool) {
    let asked = std::env::var("PROJECTED_TOKEN_LOG").ok();
    let filter = log_filter(asked.as_deref().or(quiet.then_some("warn")));
    // Colours only for a person at a terminal; not in pipes, files or `docker logs`.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_stays_at_warn_unless_named() {
        assert_eq!(log_filter(None).to_string(), "notify=warn,info");
        assert_eq!(log_filter(Some("")).to_string(), "notify=warn,info");
        assert_eq!(log_filter(Some("trace")).to_string(), "notify=warn,trace");
        assert_eq!(
            log_filter(Some("debug,notify=debug")).to_string(),
            "notify=debug,debug"
        );
    }
}
