//! The conformance suite's parts: running an unmodified in-cluster client against a scenario's
//! own projected volume. (The scenarios and their runner build on these.)

pub mod client;
pub mod in_cluster_mount;
pub mod scenarios;
