//! What one rotation did ([`RotationEvent`]): what hooks, logs and the usage ledger are told.

use std::path::PathBuf;

use jiff::Timestamp;

/// What one rotation did, for logs, hooks, metrics and the usage ledger. Never holds the token.
/// Serializes to JSON with RFC 3339 times (what HTTP rotation hooks POST).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RotationEvent {
    pub volume: String,
    pub dir: PathBuf,
    /// Path of the token inside the volume.
    pub path: String,
    pub namespace: String,
    pub pod: String,
    pub service_account: String,
    pub old_jti: Option<String>,
    pub new_jti: Option<String>,
    pub issued_at: Option<Timestamp>,
    pub expires_at: Option<Timestamp>,
    pub warn_after: Option<Timestamp>,
    /// `status.expirationTimestamp`: when the kubelet considers the token expired.
    pub status_expiration: Timestamp,
    pub next_refresh: Timestamp,
    /// The timestamped directory the rotation published.
    pub data_dir: String,
    /// When this token was due by its schedule (the refresh rule, or a request to rotate now);
    /// `None` for a volume's first write. Retries after failures keep the first due time, so
    /// `published_at - scheduled_at` is how late the rotation was, failures included.
    pub scheduled_at: Option<Timestamp>,
    /// When the write that published it finished (the `..data` swap).
    pub published_at: Timestamp,
}
