//! The conformance suite's parts (issue 14, in progress: the runner and the `conformance`
//! command come next): the scenarios and their timings, the verdict rules, and running an
//! unmodified in-cluster client against a scenario's own projected volume.

pub mod client;
pub mod in_cluster_mount;
pub mod junit;
pub mod scenarios;
pub mod verdict;
