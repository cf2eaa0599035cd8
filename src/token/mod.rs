//! Service account tokens as data: claim sets, decoding without a key, the kubelet's refresh rule
//! and `inspect`'s explanation. Pure: no I/O, no clock reads (callers pass `now`).

pub mod claim_time;
pub mod claims;
pub mod decode;
pub mod explain;
pub mod refresh;

pub use claims::{BoundClaims, KubernetesClaims, LegacyClaims, ObjectRef};
pub use decode::{decode, DecodeError, DecodedToken, TokenKind};
pub use refresh::{RefreshReason, RefreshWindow, TokenLifetime};
