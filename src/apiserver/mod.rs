//! The emulated kube-apiserver: TokenRequest, TokenReview, SelfSubjectReview, discovery and JWKS
//! over HTTPS, with stale-token accounting.

pub mod authn;
pub mod protobuf;
pub mod status;
pub mod token_request;
