//! The snapshotter: a follower of the log.
//!
//! It tails the committed log into an engine of its own and writes a
//! snapshot every `every_events` events, so snapshots never pause the
//! serving path: the live engine is mutated concurrently by many threads
//! and cannot be read consistently, a follower that only this thread
//! touches can. The price is a second copy of the state in memory; writing
//! a snapshot of it is streamed, a block at a time, so it costs a buffer,
//! not a third copy.
//!
//! An event the follower cannot apply never stops it silently: the error
//! names the LSN, [`Snapshotter::apply_failures`] and
//! [`Snapshotter::stalled_lsn`] show it, no snapshot is written past it
//! (the last good one and the log after it stay, so nothing is lost), and
//! the follower rebuilds from that snapshot and retries, with a backoff.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use flashd_engine::{Engine, EngineConfig};

use crate::error::LogError;
use crate::snapshot::{
    newest_verified_snapshot, prune, verify_snapshot_lean, write_engine_snapshot,
};
use crate::tail::Tail;

#[derive(Debug, Clone)]
pub struct SnapshotterConfig {
    pub dir: PathBuf,
    pub every_events: u64,
    pub keep: usize,
    pub retain_segments: usize,
    pub fsync: bool,
    pub poll: Duration,
}

/// [`Snapshotter::stalled_lsn`] while the follower is not stuck.
pub const NOT_STALLED: u64 = u64::MAX;

/// Polls between an event the follower could not apply (or a failed
/// start) and its first rebuild: 50, i.e. 10 s at flashd's 200 ms poll.
/// Long enough not to spin on a deterministic failure, short enough that a
/// passing one costs little.
const RETRY_FIRST_POLLS: u32 = 50;
/// Longest wait between rebuilds, doubling from the first: 10 minutes, so
/// a failure that stays is still logged (and retried) several times an
/// hour, never only once.
const RETRY_MAX: Duration = Duration::from_secs(600);

/// Where the follower's engine comes from.
enum Source {
    /// The snapshot recovery loaded (at start).
    Path(PathBuf),
    /// The newest snapshot that verifies, or the log from its start.
    Newest,
}

/// The follower's own engine and its place in the log.
struct Shadow {
    engine: Engine,
    tail: Tail,
}

fn build(
    cfg: &SnapshotterConfig,
    engine_cfg: &EngineConfig,
    src: &Source,
) -> Result<Shadow, LogError> {
    let engine = Engine::new(EngineConfig {
        hold_released_until_durable: false,
        ..engine_cfg.clone()
    });
    let snap = match src {
        Source::Path(p) => Some(verify_snapshot_lean(p)?),
        Source::Newest => newest_verified_snapshot(&cfg.dir, true)?,
    };
    let lsn = match snap {
        Some(v) => v.load_into(&engine)?,
        None => 0,
    };
    let tail = Tail::new(&cfg.dir, lsn)?;
    Ok(Shadow { engine, tail })
}

pub struct Snapshotter {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub last_snapshot_lsn: Arc<AtomicU64>,
    pub applied_lsn: Arc<AtomicU64>,
    /// Times an event did not apply in the follower (every attempt
    /// counts): nonzero means snapshots have stopped at the last good one.
    /// For `/metrics`.
    pub apply_failures: Arc<AtomicU64>,
    /// The LSN of the event the follower is stuck on, or [`NOT_STALLED`].
    pub stalled_lsn: Arc<AtomicU64>,
    /// Failures to load the follower's engine, read the log or write a
    /// snapshot. For `/metrics`.
    pub errors: Arc<AtomicU64>,
}

impl Snapshotter {
    pub fn start(
        cfg: SnapshotterConfig,
        engine_cfg: EngineConfig,
        base: Option<(u64, std::path::PathBuf)>,
        committed: Arc<AtomicU64>,
    ) -> Result<Snapshotter, LogError> {
        let stop = Arc::new(AtomicBool::new(false));
        let base_lsn = base.as_ref().map_or(0, |b| b.0);
        let last = Arc::new(AtomicU64::new(base_lsn));
        let applied = Arc::new(AtomicU64::new(base_lsn));
        let failures = Arc::new(AtomicU64::new(0));
        let stalled = Arc::new(AtomicU64::new(NOT_STALLED));
        let errors = Arc::new(AtomicU64::new(0));
        let retry_first = cfg.poll.saturating_mul(RETRY_FIRST_POLLS);
        let follower = Follower {
            // Its own copy of the base snapshot, read again at low priority
            // once the server is up, rather than held in memory since start.
            src: match base {
                Some((_, p)) => Source::Path(p),
                None => Source::Newest,
            },
            cfg,
            engine_cfg,
            committed,
            stop: stop.clone(),
            last_snapshot_lsn: last.clone(),
            applied_lsn: applied.clone(),
            apply_failures: failures.clone(),
            stalled_lsn: stalled.clone(),
            errors: errors.clone(),
            shadow: None,
            built_once: false,
            retry_first,
            backoff: retry_first,
            retry_at: Instant::now(),
        };
        let thread = std::thread::Builder::new()
            .name("flashd-snapshot".into())
            .spawn(move || follower.run())
            .map_err(|e| LogError::io(PathBuf::from("flashd-snapshot"), e))?;
        Ok(Snapshotter {
            stop,
            thread: Some(thread),
            last_snapshot_lsn: last,
            applied_lsn: applied,
            apply_failures: failures,
            stalled_lsn: stalled,
            errors,
        })
    }

    /// Catch up with the committed log, write a final snapshot, stop.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// The snapshotter thread's state: its engine and place in the log, what
/// it shows to `/metrics`, and when it next retries after a failure.
struct Follower {
    cfg: SnapshotterConfig,
    engine_cfg: EngineConfig,
    /// The writer's committed LSN: the follower reads the log up to it.
    committed: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    last_snapshot_lsn: Arc<AtomicU64>,
    applied_lsn: Arc<AtomicU64>,
    apply_failures: Arc<AtomicU64>,
    stalled_lsn: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
    /// Where the next build comes from.
    src: Source,
    /// `None` until built, and again after an event did not apply.
    shadow: Option<Shadow>,
    built_once: bool,
    retry_first: Duration,
    backoff: Duration,
    retry_at: Instant,
}

impl Follower {
    fn run(mut self) {
        background_priority();
        loop {
            let stopping = self.stop.load(Ordering::Acquire);
            // The first build runs even if a stop came at once (the stop's
            // final snapshot needs it); a retry does not hold up a stop.
            let due = Instant::now() >= self.retry_at && (!stopping || !self.built_once);
            if self.shadow.is_none() && due {
                self.build();
            }
            if self.shadow.is_some() {
                self.follow(stopping);
            }
            if stopping {
                break;
            }
            std::thread::park_timeout(self.cfg.poll);
        }
    }

    /// Build the follower's engine from `src`; on failure, retry later.
    fn build(&mut self) {
        self.built_once = true;
        match build(&self.cfg, &self.engine_cfg, &self.src) {
            Ok(s) => {
                self.applied_lsn.store(s.tail.lsn(), Ordering::Release);
                self.shadow = Some(s);
            }
            Err(e) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, retry_in_s = self.backoff.as_secs(), "snapshotter cannot load its engine; no new snapshots until it can");
                self.retry_later();
            }
        }
    }

    /// Rebuild from the newest good snapshot after the backoff, which
    /// doubles up to [`RETRY_MAX`].
    fn retry_later(&mut self) {
        self.src = Source::Newest;
        self.retry_at = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(RETRY_MAX);
    }

    /// Apply the committed log to the follower's engine, and write a
    /// snapshot when `every_events` have passed (or at stop).
    fn follow(&mut self, stopping: bool) {
        let Some(sh) = self.shadow.as_mut() else {
            return;
        };
        let to = self.committed.load(Ordering::Acquire);
        let mut bad = None;
        let engine = &sh.engine;
        let res = sh
            .tail
            .advance_while(to, &mut |lsn, ev| match engine.apply(&ev) {
                Ok(()) => true,
                Err(e) => {
                    bad = Some((lsn, e));
                    false
                }
            });
        if let Err(e) = res {
            self.errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, "snapshotter cannot read the log");
        }
        let at = sh.tail.lsn();
        self.applied_lsn.store(at, Ordering::Release);
        if let Some((lsn, e)) = bad {
            // No snapshot can be written past this event: the last good
            // one stays (with the log after it, never pruned meanwhile), so
            // nothing is lost. Drop this engine (its memory too) and
            // rebuild from that snapshot later, in case the failure does
            // not recur.
            self.apply_failures.fetch_add(1, Ordering::Relaxed);
            self.stalled_lsn.store(lsn, Ordering::Release);
            tracing::error!(lsn, error = %e, last_snapshot_lsn = self.last_snapshot_lsn.load(Ordering::Acquire), retry_in_s = self.backoff.as_secs(), "snapshotter: event does not apply; snapshots stop at the last good one until it does");
            self.shadow = None;
            self.retry_later();
            return;
        }
        let was = self.stalled_lsn.load(Ordering::Acquire);
        if was != NOT_STALLED && at > was {
            tracing::info!(
                lsn = was,
                "snapshotter: the event that did not apply now does; snapshots resume"
            );
            self.stalled_lsn.store(NOT_STALLED, Ordering::Release);
            self.backoff = self.retry_first;
        }
        let since = at.saturating_sub(self.last_snapshot_lsn.load(Ordering::Acquire));
        if since > 0 && (since >= self.cfg.every_events || stopping) {
            self.snapshot(at);
        }
    }

    /// Write a snapshot of the follower's engine at `at`, then prune.
    fn snapshot(&self, at: u64) {
        let Some(sh) = self.shadow.as_ref() else {
            return;
        };
        let cfg = &self.cfg;
        let t0 = Instant::now();
        match write_engine_snapshot(&cfg.dir, at, &sh.engine, cfg.fsync) {
            Ok(p) => {
                self.last_snapshot_lsn.store(at, Ordering::Release);
                tracing::info!(path = %p.display(), lsn = at, ms = t0.elapsed().as_millis() as u64, "snapshot written");
                if let Err(e) = prune(&cfg.dir, cfg.keep, cfg.retain_segments) {
                    tracing::warn!(error = %e, "pruning old snapshots and segments failed");
                }
            }
            Err(e) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "snapshot failed");
            }
        }
    }
}

/// Run this thread (and the threads it starts) at the lowest CPU priority.
/// The follower's work comes in bursts (a poll's worth of events, a whole
/// snapshot) and nothing waits for it; at normal priority each burst took
/// the CPU from a reactor sharing it for milliseconds, which showed as the
/// p99 of every request on that reactor.
fn background_priority() {
    // SAFETY: setpriority on this thread's own id; no memory is touched.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 19) };
    if rc != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "could not lower the snapshotter's priority");
    }
}
