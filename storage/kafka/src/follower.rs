//! The Kafka backend's snapshotter ([`KafkaSnapshotter`]): a follower of
//! the topic, as the file backend's is of its segments.
//!
//! It merges the topic with the same [`TopicReader`] recovery uses, into
//! an engine of its own, up to the writer's committed LSN, and every
//! `every_events` LSNs writes a snapshot of that engine with the cut the
//! merge stands at, then prunes to the newest `keep`. The live engine is
//! mutated by many threads and cannot be read consistently; this one only
//! this thread touches. Reading up to a committed LSN is what makes the
//! cut whole: a commit covers whole groups, every record below it is in
//! the topic (its delivery was reported), so no message is half applied
//! there.
//!
//! A failure (the broker, an event that does not apply, a snapshot that
//! cannot be written) never stops it silently: it is logged and counted
//! ([`KafkaSnapshotter::errors`]), no snapshot is written past it, and the
//! follower rebuilds from the newest good snapshot after a backoff.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use flashd_engine::{Engine, EngineConfig};
use flashd_log::LogError;

use crate::config::KafkaConfig;
use crate::recover::{is_cut_mismatch, TopicReader};
use crate::resume::apply_replayed;
use crate::snapshot::{newest_kafka_snapshot, prune_kafka_snapshots, write_kafka_snapshot};

#[derive(Debug, Clone)]
pub struct KafkaSnapshotterConfig {
    /// The node's own snapshot directory.
    pub dir: PathBuf,
    /// LSNs between snapshots.
    pub every_events: u64,
    /// Snapshots kept (at least one).
    pub keep: usize,
    pub fsync: bool,
    /// How often it looks at the committed LSN.
    pub poll: Duration,
}

/// First wait after a failure before rebuilding, doubling up to
/// [`RETRY_MAX`]: long enough not to spin on a failure that stays.
const RETRY_FIRST: Duration = Duration::from_secs(10);
/// Longest wait between rebuilds: a failure that stays is still logged
/// (and retried) several times an hour.
const RETRY_MAX: Duration = Duration::from_secs(600);

/// How long a stop keeps retrying a read the broker failed, to write its
/// final snapshot: a leftover transport error clears on the next poll, and
/// a broker that stays down must not hold up a shutdown (systemd's stop
/// timeout is far longer; the snapshot is only a faster next start).
const STOP_CATCH_UP: Duration = Duration::from_secs(5);

/// The follower's engine and its place in the topic.
struct Shadow {
    engine: Engine,
    reader: TopicReader,
}

pub struct KafkaSnapshotter {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// LSN of the newest snapshot (the loaded one's at start, or 0).
    pub last_snapshot_lsn: Arc<AtomicU64>,
    /// One past the last LSN the follower's engine holds.
    pub applied_lsn: Arc<AtomicU64>,
    /// Failures to build the follower, read the topic, apply an event or
    /// write a snapshot. For `/metrics`.
    pub errors: Arc<AtomicU64>,
}

impl KafkaSnapshotter {
    /// Start the follower. `base_lsn`: the snapshot recovery loaded (0 if
    /// none); `committed`: the writer's committed LSN (one past the last
    /// LSN of the last successful commit).
    pub fn start(
        cfg: KafkaSnapshotterConfig,
        kafka: KafkaConfig,
        engine_cfg: EngineConfig,
        base_lsn: u64,
        committed: Arc<AtomicU64>,
    ) -> Result<KafkaSnapshotter, LogError> {
        let stop = Arc::new(AtomicBool::new(false));
        let last = Arc::new(AtomicU64::new(base_lsn));
        let applied = Arc::new(AtomicU64::new(base_lsn));
        let errors = Arc::new(AtomicU64::new(0));
        let f = Follower {
            cfg,
            kafka,
            engine_cfg,
            committed,
            stop: stop.clone(),
            last_snapshot_lsn: last.clone(),
            applied_lsn: applied.clone(),
            errors: errors.clone(),
            shadow: None,
            built_once: false,
            backoff: RETRY_FIRST,
            retry_at: Instant::now(),
            unreachable: false,
        };
        let thread = std::thread::Builder::new()
            .name("flashd-kafka-snap".into())
            .spawn(move || f.run())
            .map_err(|e| LogError::io(PathBuf::from("flashd-kafka-snap"), e))?;
        Ok(KafkaSnapshotter {
            stop,
            thread: Some(thread),
            last_snapshot_lsn: last,
            applied_lsn: applied,
            errors,
        })
    }

    /// Catch up with the committed LSN, write a final snapshot (so the
    /// next start replays nothing), stop. Call after the writer stopped.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

impl Drop for KafkaSnapshotter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

struct Follower {
    cfg: KafkaSnapshotterConfig,
    kafka: KafkaConfig,
    engine_cfg: EngineConfig,
    committed: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    last_snapshot_lsn: Arc<AtomicU64>,
    applied_lsn: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
    shadow: Option<Shadow>,
    built_once: bool,
    backoff: Duration,
    retry_at: Instant,
    /// The broker failed the last poll (logged once per outage).
    unreachable: bool,
}

impl Follower {
    fn run(mut self) {
        let mut stop_by: Option<Instant> = None;
        loop {
            let stopping = self.stop.load(Ordering::Acquire);
            // The first build runs even if a stop came at once (the final
            // snapshot needs it); a retry does not hold up a stop.
            let due = Instant::now() >= self.retry_at && (!stopping || !self.built_once);
            if self.shadow.is_none() && due {
                self.built_once = true;
                match self.build() {
                    Ok(s) => self.shadow = Some(s),
                    Err(e) => self.failed("cannot build its engine", &e),
                }
            }
            if self.shadow.is_some() {
                match self.follow(stopping) {
                    Ok(()) => {
                        if self.unreachable {
                            self.unreachable = false;
                            tracing::info!("kafka snapshotter reaches the broker again");
                        }
                    }
                    // The broker: nothing was taken from the topic or
                    // applied, so the same engine goes on next poll.
                    Err(e @ LogError::Backend { .. }) => {
                        if !self.unreachable {
                            self.unreachable = true;
                            tracing::warn!(error = %e, "kafka snapshotter cannot read the topic; retrying every poll");
                        }
                    }
                    Err(e) => self.failed("stopped", &e),
                }
            }
            if stopping {
                // The broker failed the stop's read (often a transport
                // error the consumer kept from a blip while there was
                // nothing to read): try again for a while, or the next
                // start replays everything since the last snapshot.
                let by = *stop_by.get_or_insert_with(|| Instant::now() + STOP_CATCH_UP);
                if !(self.unreachable && self.shadow.is_some() && Instant::now() < by) {
                    break;
                }
            }
            std::thread::park_timeout(self.cfg.poll);
        }
    }

    /// Drop the follower's engine; rebuild after the backoff.
    fn failed(&mut self, what: &str, e: &LogError) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        tracing::error!(error = %e, retry_in_s = self.backoff.as_secs(), last_snapshot_lsn = self.last_snapshot_lsn.load(Ordering::Acquire), "kafka snapshotter {what}; no new snapshots until it recovers");
        self.shadow = None;
        self.retry_at = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(RETRY_MAX);
    }

    /// The follower's engine from the newest good snapshot that fits the
    /// topic, else from the topic's beginning.
    fn build(&self) -> Result<Shadow, LogError> {
        let engine = Engine::new(EngineConfig {
            hold_released_until_durable: false,
            ..self.engine_cfg.clone()
        });
        if let Some(s) = newest_kafka_snapshot(&self.cfg.dir)? {
            match TopicReader::open(&self.kafka, Some(&s.cut)) {
                Ok(reader) => {
                    let lsn = s.engine.load_into(&engine)?;
                    self.applied_lsn.store(lsn, Ordering::Release);
                    return Ok(Shadow { engine, reader });
                }
                Err(e) if is_cut_mismatch(&e) => {
                    tracing::error!(error = %e, "kafka snapshotter: the newest snapshot does not fit the topic; following from the topic's beginning")
                }
                Err(e) => return Err(e),
            }
        }
        Ok(Shadow {
            engine,
            reader: TopicReader::open(&self.kafka, None)?,
        })
    }

    /// Apply the topic up to the committed LSN; write a snapshot when
    /// `every_events` LSNs have passed since the last (or at stop).
    fn follow(&mut self, stopping: bool) -> Result<(), LogError> {
        let Some(sh) = self.shadow.as_mut() else {
            return Ok(());
        };
        // Read the committed LSN before the ends: everything below it is
        // then below them.
        let to = self.committed.load(Ordering::Acquire);
        if self.unreachable {
            sh.reader.reassign()?;
        }
        if to > sh.reader.next_lsn() {
            sh.reader.refresh_ends()?;
            let engine = &sh.engine;
            sh.reader
                .run(Some(to), &mut |lsn, r| apply_replayed(engine, lsn, r))?;
        }
        let at = sh.reader.next_lsn();
        self.applied_lsn.store(at, Ordering::Release);
        let since = at.saturating_sub(self.last_snapshot_lsn.load(Ordering::Acquire));
        if since == 0 || (since < self.cfg.every_events && !stopping) {
            return Ok(());
        }
        let Some(cut) = sh.reader.cut() else {
            // Not at a whole commit (cannot happen when reading up to a
            // committed LSN); the next round gets there.
            return Ok(());
        };
        let t0 = Instant::now();
        match write_kafka_snapshot(&self.cfg.dir, &sh.engine, &cut, self.cfg.fsync) {
            Ok(path) => {
                self.last_snapshot_lsn.store(at, Ordering::Release);
                tracing::info!(path = %path.display(), lsn = at, ms = t0.elapsed().as_millis() as u64, "kafka snapshot written");
                if let Err(e) = prune_kafka_snapshots(&self.cfg.dir, self.cfg.keep) {
                    tracing::warn!(error = %e, "pruning old kafka snapshots failed");
                }
                self.backoff = RETRY_FIRST;
            }
            // The engine is still good: the next poll tries again, as the
            // file backend's follower does (the older snapshots stay).
            Err(e) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, lsn = at, "kafka snapshot failed");
            }
        }
        Ok(())
    }
}
