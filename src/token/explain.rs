//! `inspect`'s explanation of a token: pure, from a decoded token and `now`.

use jiff::Timestamp;

use super::decode::DecodedToken;

/// Everything `inspect` prints, as one serialisable value (`--output json`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Inspection {
    pub kind: super::decode::TokenKind,
}

/// Builds the explanation of `token` as seen at `now`.
pub fn explain(token: &DecodedToken, now: Timestamp) -> Inspection {
    todo!("{token:?}{now}")
}

/// The human-readable table and plain-words explanation.
pub fn render_text(inspection: &Inspection) -> String {
    todo!("{inspection:?}")
}
