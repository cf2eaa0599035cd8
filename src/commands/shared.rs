//! What every subcommand shares: its error (a message and an exit code), the shutdown signal,
//! and reading the CA an HTTPS client of ours trusts.

use crate::errors::error_chain;

/// A command's failure: the message (naming the field and the fix) and the exit code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CommandError {
    pub message: String,
    pub exit_code: u8,
}

impl CommandError {
    /// Bad input from the user: exit 2.
    pub fn usage(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            exit_code: 2,
        }
    }

    /// The command could not do its job: exit 1.
    pub fn failure(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            exit_code: 1,
        }
    }
}

/// Registers for SIGTERM and SIGINT now (so a signal that comes during start-up is not fatal)
/// and returns a future that completes when one arrives.
pub fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, CommandError> {
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

/// Reads the one CA certificate an HTTPS client of ours trusts (`flag` names it in errors;
/// `signer_of` says what it should have signed).
pub async fn read_ca(
    flag: &str,
    path: &std::path::Path,
    signer_of: &str,
) -> Result<reqwest::Certificate, CommandError> {
    let what = format!("{flag} {}", path.display());
    let bytes = tokio::fs::read(path)
        .await
        .map_err(|e| CommandError::usage(format!("cannot read {what}: {e}")))?;
    // reqwest parses the PEM only when the client is built, and then says little; check first.
    let has_certificate = pem::parse_many(&bytes)
        .map(|blocks| blocks.iter().any(|b| b.tag() == "CERTIFICATE"))
        .unwrap_or(false);
    if !has_certificate {
        return Err(CommandError::usage(format!(
            "{what} holds no PEM CERTIFICATE block; give the CA certificate that signed {signer_of}"
        )));
    }
    reqwest::Certificate::from_pem(&bytes)
        .map_err(|e| CommandError::usage(format!("{what}: {}", error_chain(&e))))
}
