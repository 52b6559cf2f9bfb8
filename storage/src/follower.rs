//! The snapshotter: a follower of the log.
//!
//! It tails the committed log into an engine of its own and writes a
//! snapshot every `every_events` events, so snapshots never pause the
//! serving path: the live engine is mutated concurrently by many threads
//! and cannot be read consistently, a follower that only this thread
//! touches can. The price is a second copy of the state in memory.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use flashd_engine::{Engine, EngineConfig, Event};

use crate::codec::decode_event;
use crate::error::LogError;
use crate::record::{decode_record, Decoded};
use crate::segment::{list_segments, HEADER_BYTES};
use crate::snapshot::{prune, write_snapshot};

/// Incremental reader of committed records.
pub struct Tail {
    dir: PathBuf,
    path: Option<PathBuf>,
    offset: u64,
    lsn: u64,
    buf: Vec<u8>,
}

impl Tail {
    /// Position at `lsn` (the first event not yet applied).
    pub fn new(dir: &Path, lsn: u64) -> Result<Tail, LogError> {
        let mut t = Tail {
            dir: dir.into(),
            path: None,
            offset: 0,
            lsn: 0,
            buf: Vec::new(),
        };
        let segs = list_segments(dir)?;
        if let Some((base, path)) = segs.iter().rev().find(|(b, _)| *b <= lsn) {
            t.path = Some(path.clone());
            t.offset = HEADER_BYTES as u64;
            t.lsn = *base;
            // Skip to `lsn`.
            t.advance(lsn, &mut |_, _| {})?;
        } else {
            t.lsn = lsn;
        }
        Ok(t)
    }

    pub fn lsn(&self) -> u64 {
        self.lsn
    }

    /// Deliver committed events up to (not including) `to`.
    pub fn advance(&mut self, to: u64, f: &mut dyn FnMut(u64, Event)) -> Result<(), LogError> {
        while self.lsn < to {
            let Some(path) = self.path.clone() else {
                if !self.next_segment()? {
                    return Ok(());
                }
                continue;
            };
            let mut file = std::fs::File::open(&path).map_err(|e| LogError::io(&path, e))?;
            file.seek(SeekFrom::Start(self.offset))
                .map_err(|e| LogError::io(&path, e))?;
            self.buf.clear();
            file.read_to_end(&mut self.buf)
                .map_err(|e| LogError::io(&path, e))?;
            let mut off = 0usize;
            while self.lsn < to {
                match decode_record(&self.buf[off..]) {
                    Decoded::Record { kind, payload, len } => {
                        let ev = decode_event(kind, payload).map_err(|e| LogError::Corrupt {
                            path: path.clone(),
                            offset: self.offset + off as u64,
                            why: e.to_string(),
                        })?;
                        f(self.lsn, ev);
                        self.lsn += 1;
                        off += len;
                    }
                    _ => break,
                }
            }
            self.offset += off as u64;
            if self.lsn < to && off == 0 && !self.next_segment()? {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Move to the segment that starts at `self.lsn`, if it exists yet.
    fn next_segment(&mut self) -> Result<bool, LogError> {
        let segs = list_segments(&self.dir)?;
        match segs.into_iter().find(|(b, _)| *b == self.lsn) {
            Some((_, p)) if Some(&p) != self.path.as_ref() => {
                self.path = Some(p);
                self.offset = HEADER_BYTES as u64;
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SnapshotterConfig {
    pub dir: PathBuf,
    pub every_events: u64,
    pub keep: usize,
    pub retain_segments: usize,
    pub fsync: bool,
    pub poll: Duration,
}

pub struct Snapshotter {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub last_snapshot_lsn: Arc<AtomicU64>,
    pub applied_lsn: Arc<AtomicU64>,
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
        let (st, la, ap) = (stop.clone(), last.clone(), applied.clone());
        let thread = std::thread::Builder::new()
            .name("flashd-snapshot".into())
            .spawn(move || {
                background_priority();
                let shadow = Engine::new(EngineConfig { hold_released_until_durable: false, ..engine_cfg });
                if let Some((_, path)) = &base {
                    // Its own copy, read again at low priority once the
                    // server is up, rather than held in memory since start.
                    if let Err(e) = crate::snapshot::verify_snapshot(path).and_then(|v| v.load_into(&shadow)) {
                        tracing::error!(error = %e, "snapshotter cannot load the snapshot; no further snapshots");
                        return;
                    }
                }
                let mut tail = match Tail::new(&cfg.dir, base_lsn) {
                    Ok(t) => t,
                    Err(e) => {
                        tracing::error!(error = %e, "snapshotter cannot read the log; no further snapshots");
                        return;
                    }
                };
                let mut failed = false;
                loop {
                    let stopping = st.load(Ordering::Acquire);
                    let to = committed.load(Ordering::Acquire);
                    let res = tail.advance(to, &mut |lsn, ev| {
                        if let Err(e) = shadow.apply(&ev) {
                            if !failed {
                                tracing::error!(lsn, error = %e, "snapshotter: event does not apply; no further snapshots");
                            }
                            failed = true;
                        }
                    });
                    if let Err(e) = res {
                        tracing::error!(error = %e, "snapshotter cannot read the log");
                    }
                    let at = tail.lsn();
                    ap.store(at, Ordering::Release);
                    let since = at - la.load(Ordering::Acquire);
                    if !failed && since > 0 && (since >= cfg.every_events || stopping) {
                        let t0 = std::time::Instant::now();
                        match write_snapshot(&cfg.dir, at, &shadow.export(), cfg.fsync) {
                            Ok(p) => {
                                la.store(at, Ordering::Release);
                                tracing::info!(path = %p.display(), lsn = at, ms = t0.elapsed().as_millis() as u64, "snapshot written");
                                if let Err(e) = prune(&cfg.dir, cfg.keep, cfg.retain_segments) {
                                    tracing::warn!(error = %e, "pruning old snapshots and segments failed");
                                }
                            }
                            Err(e) => tracing::error!(error = %e, "snapshot failed"),
                        }
                    }
                    if stopping {
                        break;
                    }
                    std::thread::park_timeout(cfg.poll);
                }
            })
            .map_err(|e| LogError::io(PathBuf::from("flashd-snapshot"), e))?;
        Ok(Snapshotter {
            stop,
            thread: Some(thread),
            last_snapshot_lsn: last,
            applied_lsn: applied,
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
