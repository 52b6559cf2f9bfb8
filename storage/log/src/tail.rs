//! [`Tail`]: an incremental reader of the committed log, segment by
//! segment, as the snapshotter follows it.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use flashd_engine::Event;

use crate::codec::decode_event;
use crate::error::LogError;
use crate::record::{decode_record, Decoded};
use crate::segment::{list_segments, HEADER_BYTES};

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
        self.advance_while(to, &mut |lsn, ev| {
            f(lsn, ev);
            true
        })
    }

    /// Like [`Tail::advance`], but `f` may refuse an event (return
    /// `false`): the tail then stops before it, and delivers it again on
    /// the next call.
    pub fn advance_while(
        &mut self,
        to: u64,
        f: &mut dyn FnMut(u64, Event) -> bool,
    ) -> Result<(), LogError> {
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
                            why: e.into(),
                        })?;
                        if !f(self.lsn, ev) {
                            self.offset += off as u64;
                            return Ok(());
                        }
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
