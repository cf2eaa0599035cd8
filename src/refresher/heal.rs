//! Self-healing: a watcher (inotify through notify) on each projected directory asks the
//! refresher to restore the layout as soon as someone removes or changes a token, a symlink or
//! `..data`. Our own writes trigger it too; restoring an intact layout writes nothing.

use std::path::PathBuf;

use notify::{EventKind, RecursiveMode, Watcher as _};
use tokio::sync::mpsc::UnboundedSender;

use super::Control;

/// Watches `dirs` (volume `i` is `dirs[i]`) until the returned watcher is dropped.
pub fn watch_volumes(
    dirs: &[PathBuf],
    control: UnboundedSender<Control>,
) -> Result<notify::RecommendedWatcher, notify::Error> {
    // Watched as absolute paths, so the paths in events compare with them whatever the cwd.
    let watched: Vec<PathBuf> = dirs
        .iter()
        .map(|dir| std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone()))
        .collect();
    let to_watch = watched.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else {
            return;
        };
        // Opening and reading files (every client read of the token) is no change.
        if matches!(event.kind, EventKind::Access(_)) {
            return;
        }
        tracing::debug!(kind = ?event.kind, paths = ?event.paths, "volume directory changed");
        for (volume, dir) in watched.iter().enumerate() {
            if event.paths.iter().any(|p| p.starts_with(dir)) {
                let _ = control.send(Control::Rewrite { volume });
            }
        }
    })?;
    for dir in &to_watch {
        // Recursive: a write through `token` lands in the timestamped directory.
        watcher.watch(dir, RecursiveMode::Recursive)?;
    }
    Ok(watcher)
}
