//! Pruning: keep the newest snapshots, and the segments they still need.

use std::path::{Path, PathBuf};

use super::list::list_snapshots;
use crate::error::LogError;
use crate::segment::{list_segments, sync_dir};

/// Keep the newest `keep` snapshots; delete segments wholly before the
/// oldest kept one, except the last `retain_segments` of those.
pub fn prune(dir: &Path, keep: usize, retain_segments: usize) -> Result<(), LogError> {
    let snaps = list_snapshots(dir)?;
    if snaps.len() > keep {
        for (_, p) in &snaps[..snaps.len() - keep] {
            std::fs::remove_file(p).map_err(|e| LogError::io(p, e))?;
        }
    }
    let snaps = list_snapshots(dir)?;
    let Some((oldest, _)) = snaps.first() else {
        return Ok(());
    };
    let segs = list_segments(dir)?;
    // Segment i ends where segment i+1 begins.
    let covered: Vec<&PathBuf> = segs
        .windows(2)
        .filter(|w| w[1].0 <= *oldest)
        .map(|w| &w[0].1)
        .collect();
    if covered.len() > retain_segments {
        for p in &covered[..covered.len() - retain_segments] {
            std::fs::remove_file(p).map_err(|e| LogError::io(*p, e))?;
        }
        sync_dir(dir)?;
    }
    Ok(())
}
