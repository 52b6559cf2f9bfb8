//! The durable path, opened once recovery has rebuilt the engine: the log
//! opened for appending, its writer thread, the snapshot follower (file
//! backend) and the embedded sink (`sink.embedded`, Kafka backend). Also
//! publishes what `/metrics` and `/readyz` show of them ([`LogView`]).

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use flashd_engine::{Engine, Event};
use flashd_log::{LogError, LogHooks, LogWriter, OrderLog, Snapshotter};
use flashd_reactor::Completer;

use crate::app::{LogView, Shared};
use crate::clock::SystemClock;
use crate::config::{Config, LogBackend};
use crate::exec::{Completions, Core, Outcome, Pending};
use crate::recovery::{self, RecoveryError};

#[derive(Debug, thiserror::Error)]
pub enum DurableError {
    #[error(transparent)]
    Recovery(#[from] RecoveryError),
    #[error("opening the order log: {0}")]
    Open(#[source] LogError),
    #[error("starting the log writer: {0}")]
    Writer(#[source] std::io::Error),
    #[error("starting the snapshot follower: {0}")]
    Snapshotter(#[source] LogError),
    #[error("starting the embedded sink: {0}")]
    Sink(#[source] flashd_sink::SinkError),
}

/// The running durable path. Stop it after the reactors and workers (no
/// command may arrive any more): [`Durable::stop`].
pub struct Durable {
    pub writer: LogWriter<Pending>,
    /// File backend only (Kafka state is rebuilt from the topic).
    pub snapshotter: Option<Snapshotter>,
    /// `sink.embedded`.
    pub sink: Option<flashd_sink::Sink>,
}

impl Durable {
    /// Recover `core.engine` (fresh) from the configured backend, then open
    /// the log and start its threads; publishes the [`LogView`] in
    /// `shared`. Answers to commands go back through `completer`.
    pub fn open(
        cfg: &Config,
        core: &Core,
        completer: Completer<Outcome>,
        reactors: usize,
        shared: &Shared,
    ) -> Result<Durable, DurableError> {
        match cfg.log.backend {
            LogBackend::File => open_file(cfg, core, completer, reactors, shared),
            LogBackend::Kafka => open_kafka(cfg, core, completer, reactors, shared),
        }
    }

    /// The log writes and syncs what it holds, the snapshotter takes a
    /// final snapshot (so the next start replays nothing), the sink stops.
    pub fn stop(self) {
        self.writer.stop();
        if let Some(s) = self.snapshotter {
            s.stop();
        }
        if let Some(s) = self.sink {
            s.stop();
        }
    }
}

fn open_file(
    cfg: &Config,
    core: &Core,
    completer: Completer<Outcome>,
    reactors: usize,
    shared: &Shared,
) -> Result<Durable, DurableError> {
    use flashd_log as st;
    let dir = cfg.log.dir(&cfg.server.data_dir);
    let rec = recovery::recover_file(
        &dir,
        st::OnCorruption::from(cfg.log.on_corruption),
        &core.engine,
    )?;
    let log = st::FileLog::open(
        st::FileLogConfig {
            dir: dir.clone(),
            segment_bytes: cfg.log.segment_bytes,
            fsync: cfg.log.fsync,
        },
        rec.log.tail,
        rec.log.next_lsn,
    )
    .map_err(DurableError::Open)?;
    let writer = start_writer(
        cfg,
        Box::new(log),
        core,
        completer,
        reactors,
        Duration::from_millis(cfg.log.unavailable_ms),
    )?;
    let snapshotter = st::Snapshotter::start(
        st::SnapshotterConfig {
            dir,
            every_events: cfg.log.snapshot_every_events,
            keep: 2,
            retain_segments: cfg.log.retain_segments,
            fsync: cfg.log.fsync,
            poll: Duration::from_millis(200),
        },
        cfg.engine_config(),
        rec.snapshot.map(|s| (s.lsn, s.path)),
        writer.committed_lsn.clone(),
    )
    .map_err(DurableError::Snapshotter)?;
    let _ = shared.log.set(LogView {
        stats: writer.stats.clone(),
        committed_lsn: writer.committed_lsn.clone(),
        snapshot_lsn: snapshotter.last_snapshot_lsn.clone(),
        snapshot_apply_failures: snapshotter.apply_failures.clone(),
        snapshot_stalled_lsn: snapshotter.stalled_lsn.clone(),
        snapshot_errors: snapshotter.errors.clone(),
        recovery_ms: rec.total_ms,
        recovered_events: rec.log.replayed,
        depth: writer.handle(),
        backend: LogBackend::File,
        sink: None,
    });
    Ok(Durable {
        writer,
        snapshotter: Some(snapshotter),
        sink: None,
    })
}

fn open_kafka(
    cfg: &Config,
    core: &Core,
    completer: Completer<Outcome>,
    reactors: usize,
    shared: &Shared,
) -> Result<Durable, DurableError> {
    let kcfg = cfg.kafka_config();
    let rec = recovery::recover_kafka(&kcfg, cfg.log.kafka.partitions, &core.engine)?;
    let log = flashd_kafka::KafkaLog::open(kcfg.clone(), rec.topic.next_lsn)
        .map_err(DurableError::Open)?;
    let writer = start_writer(cfg, Box::new(log), core, completer, reactors, kcfg.timeout)?;
    let sink = if cfg.sink.embedded {
        Some(flashd_sink::Sink::start(cfg.sink_config()).map_err(DurableError::Sink)?)
    } else {
        None
    };
    let _ = shared.log.set(LogView {
        stats: writer.stats.clone(),
        committed_lsn: writer.committed_lsn.clone(),
        snapshot_lsn: Arc::new(AtomicU64::new(0)),
        snapshot_apply_failures: Arc::new(AtomicU64::new(0)),
        snapshot_stalled_lsn: Arc::new(AtomicU64::new(flashd_log::NOT_STALLED)),
        snapshot_errors: Arc::new(AtomicU64::new(0)),
        recovery_ms: rec.total_ms,
        recovered_events: rec.topic.events,
        depth: writer.handle(),
        backend: LogBackend::Kafka,
        sink: sink.as_ref().map(|s| s.stats.clone()),
    });
    Ok(Durable {
        writer,
        snapshotter: None,
        sink,
    })
}

/// The engine as the log writer sees it: what became durable (cancelled
/// units go back on sale), what to undo after a failed commit.
struct EngineHooks {
    engine: Arc<Engine>,
    /// Cluster mode: events were recorded as replay records them (Redis
    /// decided; the counters hold this node's share), so a failed write
    /// undoes them the same way.
    recorded: bool,
}

impl LogHooks for EngineHooks {
    fn durable(&self, ev: &Event) {
        self.engine.durable(ev)
    }
    fn revert(&self, ev: &Event) {
        if self.recorded {
            self.engine.revert_replayed(ev)
        } else {
            self.engine.revert(ev)
        }
    }
}

fn start_writer(
    cfg: &Config,
    log: Box<dyn OrderLog>,
    core: &Core,
    completer: Completer<Outcome>,
    reactors: usize,
    unavailable: Duration,
) -> Result<LogWriter<Pending>, DurableError> {
    use flashd_log as st;
    st::LogWriter::start(
        log,
        Arc::new(EngineHooks {
            engine: core.engine.clone(),
            recorded: core.cluster.is_some(),
        }),
        Completions {
            completer,
            woken: vec![false; reactors],
        },
        st::WriterConfig {
            ring_capacity: cfg.log.ring_capacity,
            batch_max: cfg.log.batch_max,
            unavailable,
            ack: st::Ack::from(cfg.log.ack),
            flush_interval: Duration::from_millis(cfg.log.flush_interval_ms),
            commit_interval: Duration::from_micros(cfg.log.commit_interval_us),
        },
        // The writer takes a plain function: its breaker runs on the
        // system clock whatever clock the service was given.
        SystemClock::now,
    )
    .map_err(DurableError::Writer)
}
