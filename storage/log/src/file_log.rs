//! The embedded file backend of [`OrderLog`]: segment files of framed
//! records, appended by one writer, made durable by `fdatasync` once per
//! group of events, rolled at `segment_bytes`.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
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

pub struct FileLog {
    cfg: FileLogConfig,
    file: File,
    path: PathBuf,
    /// Bytes in the current segment, written (not necessarily durable).
    len: u64,
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
        self.file
            .write_all(&self.buf)
            .map_err(|e| LogError::io(&self.path, e))?;
        self.len += self.buf.len() as u64;
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
            let (f, p) = new_segment(&self.cfg.dir, self.next_lsn)?;
            self.file = f;
            self.path = p;
            self.len = HEADER_BYTES as u64;
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
}
