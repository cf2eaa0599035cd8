//! `emulate`'s projector as the API server sees it: the projected pods, rotating their tokens now,
//! and the lifetime of new tokens. A trait, so that the server does not depend on the refresher;
//! `serve` has no projector.

use serde::Serialize;

/// `emulate`'s projector, as the controls see it.
pub trait Projector: Send + Sync {
    /// The projected pods and their volumes.
    fn pods(&self) -> Vec<ProjectedPod>;
    /// Refreshes every token of the pod `(namespace, name)` now, or every token when `None`.
    /// Returns the volumes whose tokens will be replaced, or `None` for a pod it does not project.
    fn rotate(&self, pod: Option<(&str, &str)>) -> Option<Vec<ProjectedVolumeRef>>;
    /// The lifetime that replaces every token's (`--expiration-seconds`), if any.
    fn lifetime(&self) -> Option<i64>;
    /// Sets it for tokens minted from now on.
    fn set_lifetime(&self, seconds: Option<i64>);
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProjectedPod {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub volumes: Vec<ProjectedVolumeRef>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProjectedVolumeRef {
    pub namespace: String,
    pub pod: String,
    pub volume: String,
    pub dir: String,
}
