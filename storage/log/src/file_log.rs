//! The embedded file backend of [`OrderLog`]: segment files of framed
//! records, appended by one writer, made durable by `fdatasync` once per
//! group of events, rolled at `segment_bytes`.
//!
//! Records are written into room zeroed ahead of them ([`ZEROED_AHEAD_BYTES`]
//! at a time), not appended at the end of the file: a group commit that
//! grows the file must also make the new size durable, a metadata write
//! per `fdatasync` (the inode on ext4 without a journal, a journal commit
//! with one), where one that overwrites blocks already written needs
//! none. Zeroes where a
//! record should start read as the end of the log (the follower stops
//! there; recovery cuts them off with the torn tail they may hold), and a
//! segment is cut to its records before the next one is started, so only
//! the last segment ever ends in zeroes.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use flashd_engine::Event;

use crate::codec::encode_event;
use crate::error::LogError;
use crate::failpoint;
use crate::order_log::OrderLog;
use crate::record::encode_record;
use crate::segment::{header, segment_name, sync_dir, FORMAT_VERSION, HEADER_BYTES, SEGMENT_MAGIC};

#[derive(Debug, Clone)]
pub struct FileLogConfig {
    pub dir: PathBuf,
    pub segment_bytes: u64,
    /// `fdatasync` at every commit. Off only for tests and benchmarks.
    pub fsync: bool,
}

/// Room zeroed past the last record at a time: 1 MiB, ~7,000 orders, so
/// the file grows (and its size is made durable) once per ~7,000
/// orders rather than once per group commit, for at most 1 MiB of zeroes
/// at the end of the last segment (cut off at the next start).
pub const ZEROED_AHEAD_BYTES: u64 = 1 << 20;

/// Zeroes written per call when zeroing room ahead.
static ZERO_CHUNK: [u8; 64 * 1024] = [0; 64 * 1024];

pub struct FileLog {
    cfg: FileLogConfig,
    file: File,
    path: PathBuf,
    /// Bytes in the current segment, written (not necessarily durable).
    len: u64,
    /// The segment file's length: `len` plus the zeroed room after it.
    room_end: u64,
    /// Bytes in the current segment known durable (or, without fsync,
    /// written by a successful commit).
    committed_len: u64,
    next_lsn: u64,
    committed_lsn: u64,
    buf: Vec<u8>,
    payload: Vec<u8>,
}

impl FileLog {
    /// Open for appending. `tail`: the last segment and its valid length as
    /// recovery found them; `None` starts a new segment at `next_lsn`.
    pub fn open(
        cfg: FileLogConfig,
        tail: Option<(PathBuf, u64)>,
        next_lsn: u64,
    ) -> Result<FileLog, LogError> {
        std::fs::create_dir_all(&cfg.dir).map_err(|e| LogError::io(&cfg.dir, e))?;
        let (file, path, len) = match tail {
            Some((path, len)) => {
                let mut f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| LogError::io(&path, e))?;
                f.set_len(len).map_err(|e| LogError::io(&path, e))?;
                f.seek(SeekFrom::Start(len))
                    .map_err(|e| LogError::io(&path, e))?;
                (f, path, len)
            }
            None => {
                let (f, path) = new_segment(&cfg.dir, next_lsn)?;
                (f, path, HEADER_BYTES as u64)
            }
        };
        Ok(FileLog {
            cfg,
            file,
            path,
            len,
            room_end: len,
            committed_len: len,
            next_lsn,
            committed_lsn: next_lsn,
            buf: Vec::with_capacity(64 * 1024),
            payload: Vec::with_capacity(256),
        })
    }

    pub fn current_segment(&self) -> &Path {
        &self.path
    }
}

fn new_segment(dir: &Path, base: u64) -> Result<(File, PathBuf), LogError> {
    let path = dir.join(segment_name(base));
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .map_err(|e| LogError::io(&path, e))?;
    f.write_all(&header(SEGMENT_MAGIC, FORMAT_VERSION, base))
        .map_err(|e| LogError::io(&path, e))?;
    f.sync_all().map_err(|e| LogError::io(&path, e))?;
    sync_dir(dir)?;
    Ok((f, path))
}

impl FileLog {
    /// Grow the segment with zeroes to `to` bytes (past the records being
    /// written). Made durable by the commit that follows, with them.
    fn zero_room(&mut self, to: u64) -> Result<(), LogError> {
        let mut at = self.room_end;
        while at < to {
            let n = (to - at).min(ZERO_CHUNK.len() as u64) as usize;
            self.file
                .write_all_at(&ZERO_CHUNK[..n], at)
                .map_err(|e| LogError::io(&self.path, e))?;
            at += n as u64;
        }
        self.room_end = to;
        Ok(())
    }

    /// Cut the zeroed room off the segment, durably: its length is then
    /// exactly its records.
    fn cut_room(&mut self) -> Result<(), LogError> {
        if self.room_end == self.len {
            return Ok(());
        }
        self.file
            .set_len(self.len)
            .map_err(|e| LogError::io(&self.path, e))?;
        self.file
            .sync_all()
            .map_err(|e| LogError::io(&self.path, e))?;
        self.room_end = self.len;
        Ok(())
    }
}

impl Drop for FileLog {
    /// A clean stop leaves the last segment without its zeroed room, so
    /// the next start finds no tail to cut. (A crash leaves it: recovery
    /// cuts it then.)
    fn drop(&mut self) {
        if self.len == self.committed_len {
            if let Err(e) = self.cut_room() {
                tracing::warn!("could not cut the log's zeroed room at a stop: {e}");
            }
        }
    }
}

impl OrderLog for FileLog {
    fn append(&mut self, events: &[Event]) -> Result<(), LogError> {
        debug_assert!(self.next_lsn >= self.committed_lsn && self.len >= self.committed_len);
        self.buf.clear();
        for ev in events {
            self.payload.clear();
            let kind = encode_event(ev, &mut self.payload);
            encode_record(&mut self.buf, kind, &self.payload);
        }
        failpoint::check("write")?;
        let end = self.len + self.buf.len() as u64;
        if end > self.room_end {
            self.zero_room(end + ZEROED_AHEAD_BYTES)?;
        }
        self.file
            .write_all_at(&self.buf, self.len)
            .map_err(|e| LogError::io(&self.path, e))?;
        self.len = end;
        self.next_lsn += events.len() as u64;
        Ok(())
    }

    fn commit(&mut self) -> Result<u64, LogError> {
        if self.cfg.fsync && self.len != self.committed_len {
            failpoint::check("fsync")?;
            self.file
                .sync_data()
                .map_err(|e| LogError::io(&self.path, e))?;
        }
        // LSNs only grow: what is committed now includes all that was.
        assert!(
            self.next_lsn >= self.committed_lsn && self.len >= self.committed_len,
            "commit would move the log back: LSN {} -> {}, length {} -> {}",
            self.committed_lsn,
            self.next_lsn,
            self.committed_len,
            self.len
        );
        self.committed_len = self.len;
        self.committed_lsn = self.next_lsn;
        if self.len >= self.cfg.segment_bytes {
            // Only the last segment may end in zeroes: cut this one to its
            // records, durably, before a later one exists.
            self.cut_room()?;
            let (f, p) = new_segment(&self.cfg.dir, self.next_lsn)?;
            self.file = f;
            self.path = p;
            self.len = HEADER_BYTES as u64;
            self.room_end = self.len;
            self.committed_len = self.len;
        }
        Ok(self.committed_lsn)
    }

    fn rollback(&mut self) -> Result<(), LogError> {
        // After a failed write or fsync the file's contents past the last
        // commit are unknown: cut them off so that no record the callers
        // were told failed can reappear at recovery. Never below it: that
        // would cut records already reported durable.
        assert!(
            self.len >= self.committed_len && self.next_lsn >= self.committed_lsn,
            "rollback below the committed end"
        );
        self.file
            .set_len(self.committed_len)
            .map_err(|e| LogError::io(&self.path, e))?;
        self.file
            .seek(SeekFrom::Start(self.committed_len))
            .map_err(|e| LogError::io(&self.path, e))?;
        if self.cfg.fsync {
            self.file
                .sync_all()
                .map_err(|e| LogError::io(&self.path, e))?;
        }
        self.len = self.committed_len;
        self.room_end = self.committed_len;
        self.next_lsn = self.committed_lsn;
        Ok(())
    }

    fn committed_lsn(&self) -> u64 {
        self.committed_lsn
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(id: u64) -> Event {
        Event::OrderCreated {
            order_id: id,
            activity_id: 1,
            user_id: 7,
            quantity: 1,
            amount_cents: 100,
            request_id: format!("r{id}").into(),
            created_at: 1,
            expires_at: 2,
        }
    }

    #[test]
    fn the_committed_lsn_only_grows_and_a_rollback_returns_to_it() {
        let dir = std::env::temp_dir().join(format!("flashd-filelog-lsn-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cfg = FileLogConfig {
            dir: dir.clone(),
            segment_bytes: 1 << 20,
            fsync: false,
        };
        let mut log = FileLog::open(cfg, None, 10).unwrap();
        assert_eq!(log.committed_lsn(), 10);
        log.append(&[order(1), order(2)]).unwrap();
        assert_eq!(log.committed_lsn(), 10, "appending commits nothing");
        assert_eq!(log.commit().unwrap(), 12);
        log.append(&[order(3)]).unwrap();
        log.rollback().unwrap();
        assert_eq!(
            log.committed_lsn(),
            12,
            "a rollback goes back to the commit, not below"
        );
        assert_eq!(log.commit().unwrap(), 12, "nothing left to commit after it");
        log.append(&[order(4)]).unwrap();
        assert_eq!(
            log.commit().unwrap(),
            13,
            "the next event takes the rolled-back LSN"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn record_bytes(ev: &Event) -> u64 {
        let mut payload = Vec::new();
        let kind = encode_event(ev, &mut payload);
        let mut out = Vec::new();
        encode_record(&mut out, kind, &payload);
        out.len() as u64
    }

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("flashd-filelog-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn config(d: &Path, segment_bytes: u64, fsync: bool) -> FileLogConfig {
        FileLogConfig {
            dir: d.into(),
            segment_bytes,
            fsync,
        }
    }

    fn len(p: &Path) -> u64 {
        std::fs::metadata(p).unwrap().len()
    }

    fn read_back(dir: &Path) -> (Vec<Event>, crate::Recovered) {
        let mut got = Vec::new();
        let r = crate::recover(dir, 0, crate::OnCorruption::Refuse, &mut |_, e| {
            got.push(e);
            Ok(())
        })
        .unwrap();
        (got, r)
    }

    /// Records go into room zeroed ahead of them: the file grows by
    /// `ZEROED_AHEAD_BYTES` at a time, not at every commit; a rollback and
    /// a clean stop cut the room off, leaving exactly the records.
    #[test]
    fn records_fill_zeroed_room_that_a_stop_cuts_off() {
        let d = dir("room");
        let cfg = config(&d, 64 << 20, true);
        let mut log = FileLog::open(cfg.clone(), None, 0).unwrap();
        let seg = log.current_segment().to_path_buf();
        let mut records = HEADER_BYTES as u64;
        log.append(&[order(0)]).unwrap();
        log.commit().unwrap();
        records += record_bytes(&order(0));
        let grown = len(&seg);
        assert_eq!(
            grown,
            records + ZEROED_AHEAD_BYTES,
            "room zeroed past the first record"
        );
        for i in 1..50 {
            log.append(&[order(i), order(1000 + i)]).unwrap();
            log.commit().unwrap();
            records += record_bytes(&order(i)) + record_bytes(&order(1000 + i));
            assert_eq!(
                len(&seg),
                grown,
                "commits inside the room do not grow the file"
            );
        }
        log.append(&[order(99)]).unwrap();
        log.rollback().unwrap();
        assert_eq!(
            len(&seg),
            records,
            "a rollback cuts the room with what it held"
        );
        log.append(&[order(100)]).unwrap();
        log.commit().unwrap();
        records += record_bytes(&order(100));
        drop(log);
        assert_eq!(
            len(&seg),
            records,
            "a clean stop leaves exactly the records"
        );
        let (got, r) = read_back(&d);
        assert_eq!(got.len(), 100);
        assert!(
            r.truncated.is_empty(),
            "nothing to cut after a clean stop: {:?}",
            r.truncated
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    /// A crash leaves the room: recovery reads every committed record,
    /// cuts the zeroes off, and the log goes on from there. A write past
    /// the room (one group larger than it) grows it again.
    #[test]
    fn a_crash_leaves_room_that_recovery_cuts_off() {
        let d = dir("crash");
        let cfg = config(&d, 64 << 20, false);
        let mut log = FileLog::open(cfg.clone(), None, 0).unwrap();
        let seg = log.current_segment().to_path_buf();
        for i in 0..10 {
            log.append(&[order(i)]).unwrap();
            log.commit().unwrap();
        }
        // One group larger than the room: zeroed past its own end.
        let big: Vec<Event> = (10..20_000).map(order).collect();
        let big_bytes: u64 = big.iter().map(record_bytes).sum();
        assert!(big_bytes > ZEROED_AHEAD_BYTES);
        log.append(&big).unwrap();
        log.commit().unwrap();
        let records =
            HEADER_BYTES as u64 + (0..20_000).map(|i| record_bytes(&order(i))).sum::<u64>();
        assert_eq!(len(&seg), records + ZEROED_AHEAD_BYTES);
        std::mem::forget(log); // kill -9: no clean stop
        let (got, r) = read_back(&d);
        assert_eq!(got, (0..20_000).map(order).collect::<Vec<_>>());
        assert_eq!(r.next_lsn, 20_000);
        assert_eq!(
            r.truncated,
            vec![(seg.clone(), records, ZEROED_AHEAD_BYTES)]
        );
        assert_eq!(len(&seg), records);
        let mut log = FileLog::open(cfg, r.tail, r.next_lsn).unwrap();
        log.append(&[order(20_000)]).unwrap();
        log.commit().unwrap();
        drop(log);
        let (got, _) = read_back(&d);
        assert_eq!(got.len(), 20_001);
        let _ = std::fs::remove_dir_all(&d);
    }

    /// Only the last segment ever ends in zeroes: a segment is cut to its
    /// records before the next one is started, so recovery reads a full
    /// segment to its end (zeroes there would be damage).
    #[test]
    fn a_rolled_segment_is_exactly_its_records() {
        let d = dir("roll");
        let cfg = config(&d, 4096, false);
        let mut log = FileLog::open(cfg, None, 0).unwrap();
        let mut tail = crate::Tail::new(&d, 0).unwrap();
        let mut followed = Vec::new();
        for i in 0..200 {
            log.append(&[order(i)]).unwrap();
            log.commit().unwrap();
            // The follower reads up to the committed LSN through the room.
            tail.advance(log.committed_lsn(), &mut |_, e| followed.push(e))
                .unwrap();
            assert_eq!(followed.len() as u64, i + 1);
        }
        let segs = crate::list_segments(&d).unwrap();
        assert!(segs.len() > 3);
        for (_, p) in &segs[..segs.len() - 1] {
            let data = std::fs::read(p).unwrap();
            let mut off = HEADER_BYTES;
            while off < data.len() {
                match crate::decode_record(&data[off..]) {
                    crate::Decoded::Record { len, .. } => off += len,
                    other => panic!("{}: {other:?} at {off}", p.display()),
                }
            }
            assert_eq!(off, data.len());
        }
        std::mem::forget(log);
        let (got, _) = read_back(&d);
        assert_eq!(got, followed);
        let _ = std::fs::remove_dir_all(&d);
    }
}
