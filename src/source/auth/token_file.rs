//! A token file (the in-cluster token, a kubeconfig `tokenFile`), read again before every
//! request: whoever writes it (the kubelet, or this very sidecar) may have rotated it.

use std::path::Path;

use crate::source::ConnectionError;

/// The token in `path` now, without surrounding whitespace; an empty file is an error.
pub fn read(path: &Path) -> Result<String, ConnectionError> {
    let token = std::fs::read_to_string(path).map_err(|e| {
        ConnectionError::new(format!("cannot read our own token {}: {e}", path.display()))
    })?;
    let token = token.trim();
    if token.is_empty() {
        return Err(ConnectionError::new(format!(
            "read empty token from file {:?}",
            path.display().to_string()
        )));
    }
    Ok(token.to_owned())
}

#[cfg(test)]
mod tests {
    use crate::source::auth::Credential;

    const NOW: jiff::Timestamp = jiff::Timestamp::UNIX_EPOCH;

    #[tokio::test]
    async fn token_file_is_read_per_request_and_empty_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let token = dir.path().join("token");
        let credential = Credential::TokenFile(token.clone());
        assert!(credential.bearer_token(NOW).await.is_err());
        std::fs::write(&token, "first\n").expect("write");
        assert_eq!(
            credential.bearer_token(NOW).await.ok().flatten().as_deref(),
            Some("first")
        );
        std::fs::write(&token, "second").expect("write");
        assert_eq!(
            credential.bearer_token(NOW).await.ok().flatten().as_deref(),
            Some("second")
        );
        std::fs::write(&token, "  \n").expect("write");
        let err = credential.bearer_token(NOW).await.unwrap_err();
        assert!(err.0.contains("read empty token"), "{err}");
    }
}
