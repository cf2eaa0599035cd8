//! The emulated kube-apiserver: TokenRequest, TokenReview, SelfSubjectReview, discovery and JWKS
//! over HTTPS, with stale-token accounting.

pub mod audit;
pub mod authn;
pub mod body;
pub mod bounds;
pub mod connections;
pub mod controls;
pub mod discovery;
pub mod idle;
pub mod ledger;
pub mod metrics;
pub mod object_reads;
pub mod outage;
pub mod protobuf;
pub mod server;
pub mod status;
pub mod token_request;
