//! Snapshots of the Kafka backend on disk: a pair of files per snapshot in
//! the node's own directory, the engine's state (`snap-<lsn>.snap`, the
//! file backend's format, written by [`flashd_log::write_engine_snapshot`])
//! and its place in the topic (`cut-<lsn>.cut`, a [`TopicCut`]). The cut is
//! written second, so a snapshot exists only once both are complete: a
//! crash in between leaves an engine file without a cut, which is never
//! read and is pruned.

use std::path::{Path, PathBuf};

use flashd_engine::Engine;
use flashd_log::{verify_snapshot, LogError, VerifiedSnapshot};

use crate::cut::TopicCut;

/// Suffix of a cut being written; renamed away once complete.
const TMP_SUFFIX: &str = ".tmp";

pub fn cut_name(lsn: u64) -> String {
    format!("cut-{lsn:020}.cut")
}

/// The cuts in `dir`, oldest first.
pub fn list_cuts(dir: &Path) -> Result<Vec<(u64, PathBuf)>, LogError> {
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
            .strip_prefix("cut-")
            .and_then(|r| r.strip_suffix(".cut"))
            .and_then(|n| n.parse().ok())
        {
            out.push((lsn, path));
        }
    }
    out.sort();
    Ok(out)
}

fn sync_dir(dir: &Path) -> Result<(), LogError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| LogError::io(dir, e))
}

/// Write a snapshot of `engine` (one no one else mutates) at `cut`: the
/// engine file, then the cut, each to a temp file renamed into place (and
/// synced, with `fsync`). Returns the cut's path.
pub fn write_kafka_snapshot(
    dir: &Path,
    engine: &Engine,
    cut: &TopicCut,
    fsync: bool,
) -> Result<PathBuf, LogError> {
    std::fs::create_dir_all(dir).map_err(|e| LogError::io(dir, e))?;
    flashd_log::write_engine_snapshot(dir, cut.next_lsn, engine, fsync)?;
    let path = dir.join(cut_name(cut.next_lsn));
    let tmp = dir.join(format!("{}{TMP_SUFFIX}", cut_name(cut.next_lsn)));
    let written = (|| {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&cut.encode())?;
        if fsync {
            f.sync_all()?;
        }
        Ok(())
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(LogError::io(&tmp, e));
    }
    std::fs::rename(&tmp, &path).map_err(|e| LogError::io(&path, e))?;
    if fsync {
        sync_dir(dir)?;
    }
    Ok(path)
}

/// A snapshot whose two files passed every check (the cut's CRC and
/// fields, the engine file end to end, the same LSN), not yet checked
/// against the topic nor loaded.
pub struct KafkaSnapshot {
    pub cut: TopicCut,
    pub cut_path: PathBuf,
    pub engine: VerifiedSnapshot,
}

/// Read and check the snapshot whose cut is `cut_path`.
pub fn read_kafka_snapshot(dir: &Path, cut_path: &Path) -> Result<KafkaSnapshot, LogError> {
    let data = std::fs::read(cut_path).map_err(|e| LogError::io(cut_path, e))?;
    let cut = TopicCut::decode(cut_path, &data)?;
    let engine = verify_snapshot(&dir.join(flashd_log::snapshot_name(cut.next_lsn)))?;
    if engine.lsn != cut.next_lsn {
        return Err(LogError::Corrupt {
            path: engine.path.clone(),
            offset: 0,
            why: flashd_log::Corruption::Fixed("engine snapshot and cut disagree on the LSN"),
        });
    }
    Ok(KafkaSnapshot {
        cut,
        cut_path: cut_path.to_path_buf(),
        engine,
    })
}

/// The newest snapshot in `dir` that passes every check of its files; a
/// damaged newer one is reported loudly and skipped.
pub fn newest_kafka_snapshot(dir: &Path) -> Result<Option<KafkaSnapshot>, LogError> {
    for (_, path) in list_cuts(dir)?.into_iter().rev() {
        match read_kafka_snapshot(dir, &path) {
            Ok(s) => return Ok(Some(s)),
            Err(e) => {
                tracing::error!(error = %e, path = %path.display(), "kafka snapshot damaged: skipped for an older one (or a full replay)")
            }
        }
    }
    Ok(None)
}

/// Remove the temp files of snapshots a crash interrupted. Only at start,
/// before the snapshotter runs (at any other time one may be being
/// written).
pub fn remove_stale_kafka_temps(dir: &Path) -> Result<(), LogError> {
    flashd_log::remove_stale_temps(dir)?;
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(LogError::io(dir, e)),
    };
    for entry in rd {
        let path = entry.map_err(|e| LogError::io(dir, e))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("cut-") && name.ends_with(&format!(".cut{TMP_SUFFIX}")) {
            std::fs::remove_file(&path).map_err(|e| LogError::io(&path, e))?;
        }
    }
    Ok(())
}

/// Keep the newest `keep` snapshots (at least one); remove older cuts and
/// every engine file that is not one of a kept cut's (older ones, and one
/// a crash left without its cut). Only from the thread that writes
/// snapshots.
pub fn prune_kafka_snapshots(dir: &Path, keep: usize) -> Result<(), LogError> {
    let cuts = list_cuts(dir)?;
    let keep = keep.max(1);
    let kept: Vec<u64> = cuts.iter().rev().take(keep).map(|c| c.0).collect();
    let mut removed = false;
    if cuts.len() > keep {
        for (_, p) in &cuts[..cuts.len() - keep] {
            std::fs::remove_file(p).map_err(|e| LogError::io(p, e))?;
            removed = true;
        }
    }
    for (lsn, p) in flashd_log::list_snapshots(dir)? {
        if !kept.contains(&lsn) {
            std::fs::remove_file(&p).map_err(|e| LogError::io(&p, e))?;
            removed = true;
        }
    }
    if removed {
        sync_dir(dir)?;
    }
    Ok(())
}
