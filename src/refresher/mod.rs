//! The refresher.
