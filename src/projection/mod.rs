//! From a Pod spec to files on disk: projection sources, payload building, path rules, and the
//! kubelet-style atomic writer. No network; never imports `issuer`.

pub mod atomic_writer;
pub mod int_fields;
pub mod layout;
pub mod links;
pub mod paths;
pub mod payload;
pub mod pods;
pub mod spec;
pub mod spec_error;
pub mod validation;
pub mod write_error;

pub use atomic_writer::{
    is_memory_backed, AtomicWriter, RecoveryReport, WriteError, WriteOutcome, WriterOptions,
};
pub use layout::NEW_LINK_NAME;
pub use links::{visible_problem, Found, Repair};
pub use paths::{validate_path, PathError};
pub use payload::{FileProjection, Payload};
