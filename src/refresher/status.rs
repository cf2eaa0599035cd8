//! What readiness probes and metrics know of each token ([`TokenStatus`], the shared
//! [`StatusBoard`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use jiff::Timestamp;

use crate::source::SourceError;

/// What readiness probes and metrics know of one token. Never holds the token.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TokenStatus {
    pub volume: String,
    pub dir: PathBuf,
    pub path: String,
    /// Whether a token of this slot is on disk.
    pub written: bool,
    /// The end of the token on disk's life: the earliest of status expiration, `exp`, `warnafter`.
    pub expires_at: Option<Timestamp>,
    pub next_refresh: Option<Timestamp>,
    pub successes: u64,
    /// Failures by reason: `rejected`, `unavailable`, `throttled`, `write`.
    pub failures: BTreeMap<&'static str, u64>,
    pub last_error: Option<String>,
    pub last_error_at: Option<Timestamp>,
}

impl TokenStatus {
    /// Present on disk and not past its effective expiry.
    pub fn is_ready(&self, now: Timestamp) -> bool {
        self.written && self.expires_at.is_some_and(|end| now < end)
    }
}

/// Shared, cheap snapshot of every token's status, in volume and source order.
pub type StatusBoard = Arc<std::sync::Mutex<Vec<TokenStatus>>>;

pub(super) fn failure_reason(err: &SourceError) -> &'static str {
    match err {
        SourceError::Rejected(_) => "rejected",
        // A refusal is retried like an outage, and counted with it.
        SourceError::Unavailable(_) | SourceError::Refused(_) => "unavailable",
        SourceError::Throttled { .. } => "throttled",
    }
}
