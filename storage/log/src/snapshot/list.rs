//! Snapshot names (`snap-<lsn>.snap`), listing them, and removing the temp
//! files of snapshots a crash interrupted.

use std::path::{Path, PathBuf};

use crate::error::LogError;
use crate::segment::sync_dir;

pub fn snapshot_name(lsn: u64) -> String {
    format!("snap-{lsn:020}.snap")
}

pub fn list_snapshots(dir: &Path) -> Result<Vec<(u64, PathBuf)>, LogError> {
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(LogError::io(dir, e)),
    };
    for entry in rd {
        let path = entry.map_err(|e| LogError::io(dir, e))?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if let Some(lsn) = name
            .strip_prefix("snap-")
            .and_then(|r| r.strip_suffix(".snap"))
            .and_then(|n| n.parse().ok())
        {
            out.push((lsn, path));
        }
    }
    out.sort();
    Ok(out)
}

/// Suffix of a snapshot being written; renamed away when it is complete.
pub(super) const TMP_SUFFIX: &str = ".tmp";

/// Remove snapshots a crash left half-written (`snap-*.snap.tmp`): they
/// are never read, and each can be as big as a whole snapshot. Only at
/// start, under the directory's lock ([`crate::DirLock`]), before the
/// snapshotter runs: at any other time one may be a snapshot being
/// written. Returns what was removed.
pub fn remove_stale_temps(dir: &Path) -> Result<Vec<PathBuf>, LogError> {
    let mut removed = Vec::new();
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(LogError::io(dir, e)),
    };
    for entry in rd {
        let path = entry.map_err(|e| LogError::io(dir, e))?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name.starts_with("snap-") && name.ends_with(&format!(".snap{TMP_SUFFIX}")) {
            std::fs::remove_file(&path).map_err(|e| LogError::io(&path, e))?;
            tracing::info!(path = %path.display(), "removed a snapshot a crash left half-written");
            removed.push(path);
        }
    }
    if !removed.is_empty() {
        sync_dir(dir)?;
    }
    removed.sort();
    Ok(removed)
}
