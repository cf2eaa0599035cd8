//! projected-token: kubelet-style projected service account tokens anywhere.
//!
//! Data flows one way: a projection spec becomes token requests, a token source turns them into
//! grants, the payload builder turns grants into bytes, the atomic writer puts the bytes on disk,
//! and the refresher emits a [`refresher::RotationEvent`] for each write. See `ARCHITECTURE.md`.

pub mod apiserver;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod conformance;
pub mod duration;
pub mod errors;
pub mod health;
pub mod hooks;
pub mod issuer;
pub mod names;
pub mod private_files;
pub mod projection;
pub mod refresher;
pub mod report;
pub mod source;
pub mod state;
pub mod tls;
pub mod token;
pub mod watch;
