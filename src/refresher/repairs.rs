//! Reporting what the writer found changed behind its back and put right: one log line per
//! entry, and the observers that count it (the sidecar's `/metrics`, the emulator's).

use std::path::PathBuf;

use crate::projection::{Found, Repair};

use super::volume::ProjectedVolume;

/// One entry of a volume found changed by someone else and put right. Never holds contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairEvent {
    pub volume: String,
    pub dir: PathBuf,
    pub namespace: String,
    pub pod: String,
    /// The entry, relative to `dir`: a top-level payload name (`token`, `ca.crt`), or `..data`.
    pub path: String,
    pub found: Found,
}

pub(super) type RepairObserver = Box<dyn Fn(&RepairEvent) + Send + Sync>;

/// The repair observers, and the repairs made before the refresher ran (start-up recovery), which
/// are reported once the observers are in place.
#[derive(Default)]
pub(super) struct Repairs {
    pub observers: Vec<RepairObserver>,
    pub at_start: Vec<(usize, Repair)>,
}

impl Repairs {
    /// Logs each repair of `volume` and tells every observer.
    pub fn report(&self, volume: &ProjectedVolume, repairs: impl IntoIterator<Item = Repair>) {
        for repair in repairs {
            let event = RepairEvent {
                volume: volume.plan.name.clone(),
                dir: volume.writer.target_dir().to_path_buf(),
                namespace: volume.pod.namespace.clone(),
                pod: volume.pod.name.clone(),
                path: repair.name,
                found: repair.found,
            };
            tracing::warn!(
                volume = %event.volume,
                dir = %event.dir.display(),
                path = %event.path,
                found = %event.found,
                "repaired an entry changed behind our back"
            );
            for observer in &self.observers {
                observer(&event);
            }
        }
    }
}
