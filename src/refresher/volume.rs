//! What the refresher keeps fresh: one projected volume of one pod.

use crate::projection::spec::{PodInfo, VolumePlan};
use crate::projection::AtomicWriter;

/// One projected volume of one pod, and where it is written.
#[derive(Debug, Clone)]
pub struct ProjectedVolume {
    pub pod: PodInfo,
    pub plan: VolumePlan,
    pub writer: AtomicWriter,
}
