//! The emulated kube-apiserver: TokenRequest, TokenReview, SelfSubjectReview, discovery and JWKS
//! over HTTPS, with stale-token accounting.

pub mod audit;
pub mod authn;
pub mod body;
pub mod classify;
pub mod connections;
pub mod controls;
pub mod debug;
pub mod discovery;
pub mod idle;
pub mod ledger;
pub mod listener;
pub mod metrics;
pub mod objects_api;
pub mod outage;
pub mod projector;
pub mod protobuf;
pub mod request;
pub mod reviews;
pub mod server;
pub mod status;
pub mod token_request;
pub mod usage;
