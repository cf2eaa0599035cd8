//! Token sources.
