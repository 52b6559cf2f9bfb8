//! Start-up recovery of the Kafka backend with snapshots
//! ([`recover_with_snapshot`]): the newest good snapshot in the node's
//! directory, checked against the topic, then only the tail of each
//! partition after it; a full replay when there is none, or when the one
//! there does not fit the topic (refused loudly, never trusted).

use std::path::{Path, PathBuf};
use std::time::Instant;

use flashd_engine::Engine;
use flashd_log::LogError;

use crate::config::KafkaConfig;
use crate::record::LogRecord;
use crate::recover::{is_cut_mismatch, KafkaRecovered, TopicReader};
use crate::snapshot::{list_cuts, newest_kafka_snapshot, remove_stale_kafka_temps};

/// Suffix a refused cut is renamed to: kept for whoever looks into why,
/// never read again.
pub const REFUSED_SUFFIX: &str = ".refused";

/// What start-up recovery did.
#[derive(Debug)]
pub struct Resumed {
    /// What the replay (of the tail, or of the whole topic) found.
    pub rec: KafkaRecovered,
    /// The snapshot loaded: its LSN and its cut's path.
    pub snapshot: Option<(u64, PathBuf)>,
    /// Why the newest snapshot was refused (the replay was then full).
    pub refused: Option<String>,
    /// Milliseconds to find, check and load the snapshot.
    pub load_ms: u64,
    /// Milliseconds to replay the topic after it.
    pub replay_ms: u64,
}

/// Apply one replayed record to `engine`: an event, or the undo of an
/// abort's events (newest first).
pub fn apply_replayed(engine: &Engine, lsn: u64, rec: LogRecord) -> Result<(), LogError> {
    match rec {
        LogRecord::Event(ev) => engine
            .apply(&ev)
            .map_err(|source| LogError::Replay { lsn, source }),
        LogRecord::Abort(evs) => {
            for ev in evs.iter().rev() {
                engine.revert_replayed(ev);
            }
            Ok(())
        }
    }
}

/// Rebuild `engine` (fresh) from the newest snapshot in `dir` and the
/// topic after it, or from the whole topic. `dir` is the node's own (its
/// lock held, no snapshotter running yet): temp files of interrupted
/// snapshots are removed, and when the newest snapshot does not fit the
/// topic every cut there is renamed aside (`.refused`), since the older
/// ones were taken of the same topic and fit it no better.
pub fn recover_with_snapshot(
    cfg: &KafkaConfig,
    dir: &Path,
    engine: &Engine,
) -> Result<Resumed, LogError> {
    let t0 = Instant::now();
    remove_stale_kafka_temps(dir)?;
    let mut refused = None;
    let mut resumed = None;
    if let Some(s) = newest_kafka_snapshot(dir)? {
        match TopicReader::open(cfg, Some(&s.cut)) {
            Ok(reader) => {
                let lsn = s.engine.load_into(engine)?;
                tracing::info!(path = %s.cut_path.display(), lsn, ms = t0.elapsed().as_millis() as u64, "loaded kafka snapshot");
                resumed = Some((reader, (lsn, s.cut_path)));
            }
            Err(e) if is_cut_mismatch(&e) => {
                tracing::error!(error = %e, path = %s.cut_path.display(), "kafka snapshot refused: it does not fit the topic; replaying the whole topic");
                set_aside_cuts(dir)?;
                refused = Some(e.to_string());
            }
            Err(e) => return Err(e),
        }
    }
    let load_ms = ms_since(t0);
    let (mut reader, snapshot) = match resumed {
        Some((r, s)) => (r, Some(s)),
        None => (TopicReader::open(cfg, None)?, None),
    };
    reader.run(None, &mut |lsn, r| apply_replayed(engine, lsn, r))?;
    let rec = reader.finish();
    Ok(Resumed {
        rec,
        snapshot,
        refused,
        load_ms,
        replay_ms: ms_since(t0) - load_ms,
    })
}

/// Rename every cut in `dir` aside, so no later start reads one.
fn set_aside_cuts(dir: &Path) -> Result<(), LogError> {
    for (_, p) in list_cuts(dir)? {
        let mut to = p.clone().into_os_string();
        to.push(REFUSED_SUFFIX);
        std::fs::rename(&p, &to).map_err(|e| LogError::io(&p, e))?;
    }
    Ok(())
}

fn ms_since(t0: Instant) -> u64 {
    u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX)
}
