//! Start-up: find the newest valid snapshot, check the segments, replay the
//! log after the snapshot, and deal with a damaged tail.
//!
//! Policy for damage (documented in the README):
//! * In the last segment, a record that is incomplete, all zeroes, or fails
//!   its CRC with nothing but zeroes or end-of-file after it is a torn
//!   write: the file is truncated there and the loss is logged. Those bytes
//!   were never acknowledged (a commit fsyncs before any `201`).
//! * Anything else that fails a check — in an earlier segment, or in the
//!   last one with valid data after it; a bad magic or version; a missing
//!   segment; a snapshot ahead of the log — refuses to start with the file
//!   and offset, unless `log.on_corruption = "truncate"`, which drops
//!   everything from the damage on (an operator's explicit choice to lose
//!   data rather than stay down).

use std::path::{Path, PathBuf};

use flashd_engine::Event;

use crate::codec::decode_event;
use crate::error::LogError;
use crate::record::{decode_record, Decoded, RECORD_OVERHEAD};
use crate::segment::{
    check_header, list_segments, sync_dir, FORMAT_VERSION, HEADER_BYTES, SEGMENT_MAGIC,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnCorruption {
    Refuse,
    Truncate,
}

#[derive(Debug, Default)]
pub struct Recovered {
    /// LSN the next event gets.
    pub next_lsn: u64,
    /// The last segment and its valid length, to append to.
    pub tail: Option<(PathBuf, u64)>,
    /// Events applied (those at or after `from_lsn`).
    pub replayed: u64,
    /// What was cut off: (file, offset, bytes dropped).
    pub truncated: Vec<(PathBuf, u64, u64)>,
}

enum Damage {
    /// Torn tail of the last segment: truncate, no questions.
    Torn(u64),
    /// Real corruption at this offset.
    Corrupt(LogError),
}

/// A segment's header (its one format version); returns its base LSN.
fn check_segment_header(path: &Path, data: &[u8]) -> Result<u64, LogError> {
    check_header(
        path,
        data,
        SEGMENT_MAGIC,
        FORMAT_VERSION..=FORMAT_VERSION,
        "log segment",
    )
    .map(|(base, _)| base)
}

/// Replay every event with LSN >= `from_lsn` into `apply`, in order.
pub fn recover(
    dir: &Path,
    from_lsn: u64,
    policy: OnCorruption,
    apply: &mut dyn FnMut(u64, Event) -> Result<(), String>,
) -> Result<Recovered, LogError> {
    let segments = list_segments(dir)?;
    let mut out = Recovered {
        next_lsn: from_lsn,
        ..Recovered::default()
    };
    if segments.is_empty() {
        return Ok(out);
    }
    if segments[0].0 > from_lsn {
        return Err(LogError::MissingSegment {
            path: segments[0].1.clone(),
            from: from_lsn,
            to: segments[0].0,
        });
    }
    let last_idx = segments.len() - 1;
    let mut expected_base: Option<u64> = None;
    for (i, (base, path)) in segments.iter().enumerate() {
        let is_last = i == last_idx;
        if let Some(exp) = expected_base {
            if *base != exp {
                if *base > exp {
                    return Err(LogError::MissingSegment {
                        path: path.clone(),
                        from: exp,
                        to: *base,
                    });
                }
                return Err(LogError::Corrupt {
                    path: path.clone(),
                    offset: 0,
                    why: format!(
                        "segment overlaps the previous one (starts at {base}, expected {exp})"
                    ),
                });
            }
        }
        // A segment wholly before the snapshot holds nothing to replay:
        // don't read it (start-up would otherwise scan the whole retained
        // log). Its damage, if any, cannot change the recovered state.
        if !is_last && segments[i + 1].0 <= from_lsn {
            expected_base = Some(segments[i + 1].0);
            continue;
        }
        let data = std::fs::read(path).map_err(|e| LogError::io(path, e))?;
        // A last segment shorter than its header was created but never
        // written (crash between create and header sync): start it over.
        if is_last && data.len() < HEADER_BYTES {
            tracing::warn!(path = %path.display(), bytes = data.len(), "last log segment has no complete header; recreating it");
            std::fs::remove_file(path).map_err(|e| LogError::io(path, e))?;
            sync_dir(dir)?;
            out.truncated.push((path.clone(), 0, data.len() as u64));
            out.next_lsn = *base;
            out.tail = None;
            return Ok(out);
        }
        let hdr_base = check_segment_header(path, &data)?;
        if hdr_base != *base {
            return Err(LogError::Corrupt {
                path: path.clone(),
                offset: 12,
                why: format!("header says base {hdr_base}, name says {base}"),
            });
        }
        let mut off = HEADER_BYTES;
        let mut lsn = *base;
        let mut damage = None;
        while off < data.len() {
            match decode_record(&data[off..]) {
                Decoded::Record { kind, payload, len } => {
                    if lsn >= from_lsn {
                        let ev = decode_event(kind, payload).map_err(|e| LogError::Corrupt {
                            path: path.clone(),
                            offset: off as u64,
                            why: e.to_string(),
                        })?;
                        apply(lsn, ev).map_err(|why| LogError::Replay { lsn, why })?;
                        out.replayed += 1;
                    }
                    lsn += 1;
                    off += len;
                }
                Decoded::Incomplete | Decoded::Zeroes => {
                    damage = Some(if is_last {
                        Damage::Torn(off as u64)
                    } else {
                        Damage::Corrupt(LogError::Corrupt {
                            path: path.clone(),
                            offset: off as u64,
                            why: "incomplete record before the end of the log".into(),
                        })
                    });
                    break;
                }
                Decoded::Checksum { expected, got, len } => {
                    let rest_clean = data[(off + len).min(data.len())..].iter().all(|b| *b == 0);
                    damage = Some(if is_last && rest_clean {
                        Damage::Torn(off as u64)
                    } else {
                        Damage::Corrupt(LogError::ChecksumMismatch {
                            path: path.clone(),
                            offset: off as u64,
                            expected,
                            got,
                        })
                    });
                    break;
                }
                Decoded::BadLength(n) => {
                    let rest = &data[off..];
                    let torn = rest.len() < RECORD_OVERHEAD || rest[4..].iter().all(|b| *b == 0);
                    damage = Some(if is_last && torn {
                        Damage::Torn(off as u64)
                    } else {
                        Damage::Corrupt(LogError::Corrupt {
                            path: path.clone(),
                            offset: off as u64,
                            why: format!("record length {n} is impossible"),
                        })
                    });
                    break;
                }
            }
        }
        let cut = match damage {
            None => None,
            Some(Damage::Torn(at)) => {
                tracing::warn!(path = %path.display(), offset = at, dropped = data.len() as u64 - at, "torn write at the end of the log: truncating (never acknowledged)");
                Some(at)
            }
            Some(Damage::Corrupt(e)) => match policy {
                OnCorruption::Refuse => return Err(e),
                OnCorruption::Truncate => {
                    let at = match &e {
                        LogError::Corrupt { offset, .. }
                        | LogError::ChecksumMismatch { offset, .. } => *offset,
                        _ => HEADER_BYTES as u64,
                    };
                    tracing::error!(error = %e, "log.on_corruption = truncate: dropping everything from here on");
                    for (_, later) in &segments[i + 1..] {
                        let n = std::fs::metadata(later).map(|m| m.len()).unwrap_or(0);
                        std::fs::remove_file(later).map_err(|e| LogError::io(later, e))?;
                        out.truncated.push((later.clone(), 0, n));
                    }
                    Some(at)
                }
            },
        };
        if let Some(at) = cut {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|e| LogError::io(path, e))?;
            f.set_len(at).map_err(|e| LogError::io(path, e))?;
            f.sync_all().map_err(|e| LogError::io(path, e))?;
            out.truncated
                .push((path.clone(), at, data.len() as u64 - at));
            out.next_lsn = lsn.max(from_lsn);
            out.tail = Some((path.clone(), at));
            if lsn < from_lsn {
                return Err(LogError::SnapshotAhead {
                    path: path.clone(),
                    snapshot_lsn: from_lsn,
                    log_end: lsn,
                });
            }
            return Ok(out);
        }
        expected_base = Some(lsn);
        if is_last {
            if lsn < from_lsn {
                return Err(LogError::SnapshotAhead {
                    path: path.clone(),
                    snapshot_lsn: from_lsn,
                    log_end: lsn,
                });
            }
            out.next_lsn = lsn;
            out.tail = Some((path.clone(), data.len() as u64));
        }
    }
    Ok(out)
}

/// Read the committed events in `[from, to)` (for followers of the log).
pub fn read_range(
    dir: &Path,
    from: u64,
    to: u64,
    f: &mut dyn FnMut(u64, Event),
) -> Result<u64, LogError> {
    let segments = list_segments(dir)?;
    let mut lsn_out = from;
    for (i, (base, path)) in segments.iter().enumerate() {
        let next_base = segments.get(i + 1).map(|s| s.0).unwrap_or(u64::MAX);
        if next_base <= from || *base >= to {
            continue;
        }
        let data = std::fs::read(path).map_err(|e| LogError::io(path, e))?;
        check_segment_header(path, &data)?;
        let mut off = HEADER_BYTES;
        let mut lsn = *base;
        while off < data.len() && lsn < to {
            match decode_record(&data[off..]) {
                Decoded::Record { kind, payload, len } => {
                    if lsn >= from {
                        let ev = decode_event(kind, payload).map_err(|e| LogError::Corrupt {
                            path: path.clone(),
                            offset: off as u64,
                            why: e.to_string(),
                        })?;
                        f(lsn, ev);
                        lsn_out = lsn + 1;
                    }
                    lsn += 1;
                    off += len;
                }
                // Past the committed end, a record may still be in flight.
                _ => break,
            }
        }
    }
    Ok(lsn_out)
}
