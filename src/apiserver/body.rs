//! Request bodies, read as upstream's `limitedReadBody` (k8s.io/apiserver/pkg/endpoints/
//! handlers/rest.go): after the request is authorized, and at most `MaxRequestBodyBytes`
//! (3 MiB); a larger one is answered 413 `RequestEntityTooLarge`.

use std::future::poll_fn;
use std::pin::Pin;

use axum::body::{Body, Bytes, HttpBody as _};

use super::status::ApiError;

/// kube-apiserver's default `MaxRequestBodyBytes` (k8s.io/apiserver/pkg/server/config.go).
pub const MAX_REQUEST_BODY_BYTES: usize = 3 * 1024 * 1024;

/// How much past the limit is still read, and thrown away, before the 413 is sent. A client
/// that is still sending when the answer comes loses it: its HTTP/2 stream is reset, its
/// HTTP/1.1 connection closed with data unread (Go's server drains up to 256 KiB for the same
/// reason). A body declared longer than the limit and this is answered without being read.
pub const DRAIN_BYTES: usize = 1024 * 1024;

/// Whether a body that declares `declared` bytes (its Content-Length) is refused unread.
pub fn refused_unread(declared: Option<u64>, limit: usize) -> bool {
    let most = u64::try_from(limit.saturating_add(DRAIN_BYTES)).unwrap_or(u64::MAX);
    declared.is_some_and(|n| n > most)
}

/// The whole body if it holds at most [`MAX_REQUEST_BODY_BYTES`].
pub async fn read_body(body: Body) -> Result<Bytes, ApiError> {
    read_limited(body, MAX_REQUEST_BODY_BYTES).await
}

/// The whole body if it holds at most `limit` bytes; otherwise 413, after reading up to
/// [`DRAIN_BYTES`] more so the client sees the answer.
pub async fn read_limited(mut body: Body, limit: usize) -> Result<Bytes, ApiError> {
    if refused_unread(body.size_hint().exact(), limit) {
        return Err(ApiError::request_entity_too_large(limit));
    }
    let capacity = body
        .size_hint()
        .exact()
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(0)
        .min(limit);
    let mut kept = Vec::with_capacity(capacity);
    let mut excess = 0usize;
    while let Some(frame) = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame = frame.map_err(|e| {
            ApiError::bad_request(format!("the request body could not be read: {e}"))
        })?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        if excess == 0 && kept.len() + data.len() <= limit {
            kept.extend_from_slice(&data);
            continue;
        }
        if excess == 0 {
            kept = Vec::new();
        }
        excess = excess.saturating_add(data.len());
        if excess > DRAIN_BYTES {
            break;
        }
    }
    if excess > 0 {
        return Err(ApiError::request_entity_too_large(limit));
    }
    Ok(Bytes::from(kept))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(future)
    }

    #[test]
    fn a_body_up_to_the_limit_is_read_whole() {
        let body = block_on(read_limited(Body::from(vec![7u8; 10]), 10)).expect("at the limit");
        assert_eq!(body.as_ref(), [7u8; 10]);
        let empty = block_on(read_limited(Body::empty(), 10)).expect("empty");
        assert!(empty.is_empty());
    }

    #[test]
    fn one_byte_more_is_413_with_upstreams_message() {
        let err = block_on(read_limited(Body::from(vec![0u8; 11]), 10)).expect_err("over");
        assert_eq!(err.code, 413);
        assert_eq!(err.reason, "RequestEntityTooLarge");
        assert_eq!(err.message, "Request entity too large: limit is 10");
        assert_eq!(
            ApiError::request_entity_too_large(MAX_REQUEST_BODY_BYTES).message,
            "Request entity too large: limit is 3145728"
        );
    }

    #[test]
    fn only_bodies_declared_past_the_drain_are_refused_unread() {
        assert!(!refused_unread(None, 10), "length unknown: read it");
        assert!(!refused_unread(Some(10), 10));
        assert!(!refused_unread(Some(11), 10), "drained so the 413 arrives");
        assert!(!refused_unread(Some((10 + DRAIN_BYTES) as u64), 10));
        assert!(refused_unread(Some((11 + DRAIN_BYTES) as u64), 10));
        let err = block_on(read_limited(Body::from(vec![0u8; 11 + DRAIN_BYTES]), 10))
            .expect_err("far over");
        assert_eq!(err.code, 413);
    }
}
