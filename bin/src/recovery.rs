//! Recovery: rebuild an [`Engine`] from what the order log holds, before
//! anything is served. File backend: the newest verified snapshot, then the
//! log's events after it. Kafka backend: the newest snapshot in the node's
//! own directory that fits the topic, then each partition's tail after it
//! (or the whole topic), merged by LSN (abort records undo what a failed
//! delivery left behind).
//!
//! Nothing here opens the log for appending or starts a thread (that is
//! [`crate::durable`]): a test runs recovery into a fresh engine and
//! compares it with the one that wrote the log.

use std::path::{Path, PathBuf};
use std::time::Instant;

use flashd_engine::{Engine, Event};
use flashd_log::{LogError, OnCorruption};

/// Events replayed per [`Engine::apply_batch`] call (the batch is applied
/// on every core): bounds the memory a full replay of a long log holds.
const CHUNK: usize = 1 << 18;

#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error("creating log.dir {}: {source}", path.display())]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("reading snapshots: {0}")]
    ReadSnapshots(#[source] LogError),
    #[error("{}: {source}", path.display())]
    LoadSnapshot { path: PathBuf, source: LogError },
    #[error("recovery refused: {0}\n(if losing everything from the damage on is acceptable, set log.on_corruption = \"truncate\")")]
    Log(#[source] LogError),
    #[error("kafka brokers {brokers}: {source}")]
    Topic { brokers: String, source: LogError },
    #[error("recovery from kafka topic {topic} refused: {source}")]
    Kafka { topic: String, source: LogError },
    #[error("recovered state breaks an invariant: {0}")]
    Invariant(String),
}

/// The snapshot recovery started from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedSnapshot {
    /// Events it covers: replay went on from this LSN.
    pub lsn: u64,
    pub path: PathBuf,
}

/// What file recovery found and did.
#[derive(Debug)]
pub struct FileRecovered {
    pub snapshot: Option<LoadedSnapshot>,
    /// The log's state for appending (see [`flashd_log::FileLog::open`]).
    pub log: flashd_log::Recovered,
    /// Milliseconds spent reading the snapshot, loading it, replaying the
    /// log, and in all (checks included).
    pub read_ms: u64,
    pub loaded_ms: u64,
    pub replayed_ms: u64,
    pub total_ms: u64,
}

/// Rebuild `engine` (fresh) from the newest snapshot in `dir` and the log
/// after it; `dir` is created if absent. The engine's invariants are
/// checked before it is handed back.
pub fn recover_file(
    dir: &Path,
    policy: OnCorruption,
    engine: &Engine,
) -> Result<FileRecovered, RecoveryError> {
    std::fs::create_dir_all(dir).map_err(|source| RecoveryError::CreateDir {
        path: dir.to_path_buf(),
        source,
    })?;
    let t0 = Instant::now();
    let snapshot =
        flashd_log::latest_verified_snapshot(dir).map_err(RecoveryError::ReadSnapshots)?;
    let read_ms = ms_since(t0);
    let mut from = 0;
    let mut loaded = None;
    if let Some(v) = snapshot {
        let (path, orders) = (v.path.clone(), v.orders);
        from = v
            .load_into(engine)
            .map_err(|source| RecoveryError::LoadSnapshot {
                path: path.clone(),
                source,
            })?;
        tracing::info!(path = %path.display(), lsn = from, orders, "loaded snapshot");
        loaded = Some(LoadedSnapshot { lsn: from, path });
    }
    let loaded_ms = ms_since(t0);
    let mut chunk: Vec<(u64, Event)> = Vec::with_capacity(CHUNK);
    let apply_chunk = |chunk: &mut Vec<(u64, Event)>| -> Result<(), LogError> {
        let r = engine
            .apply_batch(chunk)
            .map_err(|(lsn, source)| LogError::Replay { lsn, source });
        chunk.clear();
        r
    };
    let log = flashd_log::recover(dir, from, policy, &mut |lsn, ev| {
        chunk.push((lsn, ev));
        if chunk.len() == CHUNK {
            apply_chunk(&mut chunk)?;
        }
        Ok(())
    })
    .and_then(|rec| {
        apply_chunk(&mut chunk)?;
        Ok(rec)
    })
    .map_err(RecoveryError::Log)?;
    for (path, offset, dropped) in &log.truncated {
        tracing::warn!(path = %path.display(), offset, dropped_bytes = dropped, "truncated the log at recovery");
    }
    let replayed_ms = ms_since(t0);
    engine
        .check_invariants()
        .map_err(RecoveryError::Invariant)?;
    let total_ms = ms_since(t0);
    tracing::info!(
        snapshot_read_ms = read_ms,
        snapshot_load_ms = loaded_ms - read_ms,
        replay_ms = replayed_ms - loaded_ms,
        check_ms = total_ms - replayed_ms,
        snapshot_lsn = from,
        replayed = log.replayed,
        next_lsn = log.next_lsn,
        ms = total_ms,
        "recovery done"
    );
    Ok(FileRecovered {
        snapshot: loaded,
        log,
        read_ms,
        loaded_ms,
        replayed_ms,
        total_ms,
    })
}

/// What Kafka recovery found, and how long it took.
#[derive(Debug)]
pub struct KafkaRecovered {
    /// What the replay after the snapshot (or of the whole topic) found.
    pub topic: flashd_kafka::KafkaRecovered,
    /// The snapshot recovery started from.
    pub snapshot: Option<LoadedSnapshot>,
    /// Why the newest snapshot was refused (then the replay was full).
    pub refused: Option<String>,
    /// Milliseconds to load the snapshot, to replay after it, and in all.
    pub load_ms: u64,
    pub replay_ms: u64,
    pub total_ms: u64,
}

/// Rebuild `engine` (fresh) from the newest snapshot in `snapshot_dir`
/// that fits the topic and the topic after it (or the whole topic),
/// creating the topic with `partitions` if it does not exist.
/// `snapshot_dir` is this node's own and is created if absent. `share`:
/// cluster mode (`Engine::check_share_invariants`).
pub fn recover_kafka(
    cfg: &flashd_kafka::KafkaConfig,
    partitions: i32,
    snapshot_dir: &Path,
    engine: &Engine,
    share: bool,
) -> Result<KafkaRecovered, RecoveryError> {
    use flashd_kafka as kafka;
    let t0 = Instant::now();
    std::fs::create_dir_all(snapshot_dir).map_err(|source| RecoveryError::CreateDir {
        path: snapshot_dir.to_path_buf(),
        source,
    })?;
    let created = kafka::ensure_topic(cfg, partitions).map_err(|source| RecoveryError::Topic {
        brokers: cfg.brokers.clone(),
        source,
    })?;
    if created {
        tracing::info!(topic = %cfg.topic, partitions, "created the topic");
    }
    let r = kafka::recover_with_snapshot(cfg, snapshot_dir, engine).map_err(|source| {
        RecoveryError::Kafka {
            topic: cfg.topic.clone(),
            source,
        }
    })?;
    // In cluster mode the log holds this node's share of sales Redis
    // decides: only what a share can keep is checked.
    if share {
        engine.check_share_invariants()
    } else {
        engine.check_invariants()
    }
    .map_err(RecoveryError::Invariant)?;
    let total_ms = ms_since(t0);
    let rec = r.rec;
    tracing::info!(
        topic = %cfg.topic,
        snapshot_lsn = r.snapshot.as_ref().map_or(0, |s| s.0),
        snapshot_refused = r.refused.is_some(),
        snapshot_load_ms = r.load_ms,
        replay_ms = r.replay_ms,
        events = rec.events,
        aborts = rec.aborts,
        voided = rec.voided,
        late = rec.late,
        late_unvoided = rec.late_unvoided,
        peak_buffered = rec.peak_buffered,
        per_partition = ?rec.partitions,
        next_lsn = rec.next_lsn,
        ms = total_ms,
        "recovery from kafka done"
    );
    Ok(KafkaRecovered {
        topic: rec,
        snapshot: r.snapshot.map(|(lsn, path)| LoadedSnapshot { lsn, path }),
        refused: r.refused,
        load_ms: r.load_ms,
        replay_ms: r.replay_ms,
        total_ms,
    })
}

fn ms_since(t0: Instant) -> u64 {
    u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX)
}
