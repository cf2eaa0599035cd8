//! Who the sidecar is to the API server: the credential sent with each request. Credentials
//! that can change while we run are looked at again before every request, as client-go's
//! transport does: a token file is re-read ([`token_file`]; the sidecar is itself a well-behaved
//! client of its own rotating token), an exec plugin is run again once its token expires or is
//! refused ([`exec`]).

pub mod exec;
pub mod token_file;

use std::path::PathBuf;
use std::sync::Arc;

use secrecy::{ExposeSecret as _, SecretString};

use self::exec::ExecPlugin;
use super::ConnectionError;

/// How requests prove who we are.
#[derive(Clone)]
pub enum Credential {
    None,
    /// A token given inline (kubeconfig `token`).
    Token(SecretString),
    /// A token file, re-read before each request (in-cluster token, kubeconfig `tokenFile`).
    TokenFile(PathBuf),
    /// A kubeconfig exec plugin, run again when its token expires or is refused.
    Exec(Arc<ExecPlugin>),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::Token(_) => f.write_str("Token(<redacted>)"),
            Self::TokenFile(path) => f.debug_tuple("TokenFile").field(path).finish(),
            Self::Exec(plugin) => f.debug_tuple("Exec").field(plugin).finish(),
        }
    }
}

impl Credential {
    /// The bearer token for the next request at `now` (a token file is read now; an exec
    /// plugin runs when its last token expired).
    pub async fn bearer_token(
        &self,
        now: jiff::Timestamp,
    ) -> Result<Option<String>, ConnectionError> {
        match self {
            Self::None => Ok(None),
            Self::Token(token) => Ok(Some(token.expose_secret().to_owned())),
            Self::Exec(plugin) => Ok(Some(plugin.token(now).await?.expose_secret().to_owned())),
            Self::TokenFile(path) => token_file::read(path).map(Some),
        }
    }

    /// The server refused this credential (401): an exec plugin's cached token is dropped so
    /// the next request runs the plugin again. Files are re-read anyway.
    pub async fn refused(&self) {
        if let Self::Exec(plugin) = self {
            plugin.invalidate().await;
        }
    }
}
