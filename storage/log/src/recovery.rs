//! Start-up: find the newest valid snapshot, check the segments, replay the
//! log after the snapshot, and deal with a damaged tail.
//!
//! Policy for damage (documented in the README):
//! * A torn write is only ever the very end of the last segment: a record
//!   there that is incomplete, all zeroes, or fails a check, with no valid
//!   record anywhere after it, is truncated and the loss is logged. Those
//!   bytes were never acknowledged (a commit fsyncs before any `201`).
//! * Anything else that fails a check — in an earlier segment, or in the
//!   last one with a valid record anywhere after it; a bad magic or
//!   version; a missing segment; a snapshot ahead of the log — refuses to
//!   start with the file and offset, unless `log.on_corruption =
//!   "truncate"`, which drops everything from the damage on (an operator's
//!   explicit choice to lose data rather than stay down). A snapshot ahead
//!   of what would be left is refused under either policy: truncating
//!   could not make that log whole.
//! * A bad record followed by a valid one is refused even when a power
//!   loss, not damage, made it (a group write whose pages reached the disk
//!   out of order): from the bytes alone the two look the same, and only
//!   the operator can choose to lose what follows.
//!
//! Recovery first reads everything and decides; only then, and only if it
//! is going to start, does it change a file (cut a tail, remove the
//! segments after the damage). A refusal leaves every byte as it found it.

use std::path::{Path, PathBuf};

use flashd_engine::Event;

use crate::codec::decode_event;
use crate::error::{Corruption, LogError};
use crate::record::{decode_record, Decoded, PAYLOAD_BYTES_MAX, RECORD_OVERHEAD};
use crate::segment::{
    check_header, list_segments, sync_dir, FORMAT_VERSION, HEADER_BYTES, SEGMENT_MAGIC,
};

/// How much checksumming the search for a valid record after a bad one
/// may do before recovery gives up and treats the bad record as damage
/// (refuses). A real torn tail is zeroes or a fragment of one group write,
/// which costs next to nothing to search; 256 MiB is about a tenth of a
/// second of CRC32C, and only bytes crafted to look like a string of large
/// records could need more. Failing closed then is the safe answer.
const TAIL_SCAN_CRC_BYTES_MAX: usize = 256 << 20;

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

/// A bad record, and whether it can be a torn write.
enum Damage {
    /// At the very end of the last segment, nothing valid after it.
    Torn(u64),
    /// Real corruption at this offset (`offset` in the error).
    Corrupt(u64, LogError),
}

/// What recovery will do to the files, decided before it does any of it.
#[derive(Debug, Default)]
struct Plan {
    /// Segments to delete, newest first (so that a crash part-way leaves a
    /// log without gaps).
    remove: Vec<PathBuf>,
    /// Cut this file to this length.
    cut: Option<(PathBuf, u64)>,
    /// Delete the last segment, which never got a whole header.
    remove_headerless: Option<PathBuf>,
    /// For the report: (file, offset, bytes dropped).
    truncated: Vec<(PathBuf, u64, u64)>,
    /// Why bytes are dropped, logged when they are: (torn write?, what).
    why: Option<(bool, String)>,
}

/// What reading the log found.
struct Scanned {
    plan: Plan,
    /// LSN after the last event kept.
    end_lsn: u64,
    /// The last segment and its length once the plan is carried out.
    tail: Option<(PathBuf, u64)>,
    /// The file where the kept log ends (named by a refusal).
    end_path: PathBuf,
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

/// Outcome of searching the bytes after a bad record.
#[derive(Debug, PartialEq, Eq)]
enum After {
    /// No valid record starts anywhere after it.
    Nothing,
    /// A record with a valid checksum starts at this offset.
    Valid(usize),
    /// The search would checksum more than [`TAIL_SCAN_CRC_BYTES_MAX`].
    TooCostly,
}

/// Search `data[from..]` for any offset where a whole record with a valid
/// CRC starts. Every offset is tried (a bad length means the framing is
/// lost), but runs of zeroes are skipped at once: a record has a nonzero
/// byte in its first [`RECORD_OVERHEAD`] bytes (the CRC of a zero-length
/// record of kind 0 is not zero), and a length beyond the file or the
/// limit costs no checksum.
fn valid_record_after(data: &[u8], from: usize) -> After {
    let mut budget = TAIL_SCAN_CRC_BYTES_MAX;
    let mut s = from;
    while s + RECORD_OVERHEAD <= data.len() {
        let Some(nz) = data[s..].iter().position(|b| *b != 0) else {
            return After::Nothing;
        };
        s = s.max((s + nz).saturating_sub(RECORD_OVERHEAD - 1));
        if s + RECORD_OVERHEAD > data.len() {
            break;
        }
        let n = u32::from_le_bytes(data[s..s + 4].try_into().expect("4 bytes")) as usize;
        if n <= PAYLOAD_BYTES_MAX && s + n + RECORD_OVERHEAD <= data.len() {
            let covered = n + 5;
            if covered > budget {
                return After::TooCostly;
            }
            budget -= covered;
            if matches!(decode_record(&data[s..]), Decoded::Record { .. }) {
                return After::Valid(s);
            }
        }
        s += 1;
    }
    After::Nothing
}

/// Classify the bad record at `off` (described by `err`) in a segment.
fn classify(path: &Path, data: &[u8], off: usize, is_last: bool, err: LogError) -> Damage {
    if !is_last {
        return Damage::Corrupt(off as u64, err);
    }
    let after = match valid_record_after(data, off + 1) {
        After::Nothing => return Damage::Torn(off as u64),
        After::Valid(at) => Some(at as u64),
        After::TooCostly => None,
    };
    match after {
        Some(at) => {
            tracing::error!(path = %path.display(), offset = off, valid_record_at = at, "a valid record follows, so this is damage, not a torn write")
        }
        None => {
            tracing::error!(path = %path.display(), offset = off, "the bytes after it cannot be cheaply shown to hold no valid record, so it is not taken for a torn write")
        }
    }
    // Say why in the error where it has room for it; a checksum mismatch
    // keeps its own type (and its offset).
    let err = match err {
        LogError::Corrupt { path, offset, why } => LogError::Corrupt {
            path,
            offset,
            why: match after {
                Some(at) => Corruption::ValidAfter {
                    reason: Box::new(why),
                    at,
                },
                None => Corruption::Unscanned {
                    reason: Box::new(why),
                },
            },
        },
        other => other,
    };
    Damage::Corrupt(off as u64, err)
}

/// Replay every event with LSN >= `from_lsn` into `apply`, in order.
/// `apply` stops recovery by returning an error, which is passed through
/// as it is: [`LogError::Replay`] for an event that does not apply (a
/// caller that applies events in batches names the LSN that failed).
pub fn recover(
    dir: &Path,
    from_lsn: u64,
    policy: OnCorruption,
    apply: &mut dyn FnMut(u64, Event) -> Result<(), LogError>,
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
    let Scanned {
        plan,
        end_lsn,
        tail,
        end_path,
    } = scan(&segments, from_lsn, policy, &mut out, apply)?;
    // The decision, before any file changes: what is left must reach the
    // snapshot, or the snapshot's events after the log's end are nowhere.
    if end_lsn < from_lsn {
        return Err(LogError::SnapshotAhead {
            path: end_path,
            snapshot_lsn: from_lsn,
            log_end: end_lsn,
        });
    }
    execute(dir, &plan)?;
    out.truncated = plan.truncated;
    out.next_lsn = end_lsn;
    out.tail = tail;
    Ok(out)
}

/// Read the segments from the one holding `from_lsn` on, applying events,
/// and decide what to change. Changes nothing.
fn scan(
    segments: &[(u64, PathBuf)],
    from_lsn: u64,
    policy: OnCorruption,
    out: &mut Recovered,
    apply: &mut dyn FnMut(u64, Event) -> Result<(), LogError>,
) -> Result<Scanned, LogError> {
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
                    why: Corruption::Overlap {
                        base: *base,
                        expected: exp,
                    },
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
            let plan = Plan {
                remove_headerless: Some(path.clone()),
                truncated: vec![(path.clone(), 0, data.len() as u64)],
                why: Some((
                    true,
                    "last log segment has no complete header; recreating it".into(),
                )),
                ..Plan::default()
            };
            return Ok(Scanned {
                plan,
                end_lsn: *base,
                tail: None,
                end_path: path.clone(),
            });
        }
        let hdr_base = check_segment_header(path, &data)?;
        if hdr_base != *base {
            return Err(LogError::Corrupt {
                path: path.clone(),
                offset: 12,
                why: Corruption::BaseMismatch {
                    header: hdr_base,
                    name: *base,
                },
            });
        }
        let mut off = HEADER_BYTES;
        let mut lsn = *base;
        let mut damage = None;
        while off < data.len() {
            let bad = match decode_record(&data[off..]) {
                Decoded::Record { kind, payload, len } => {
                    if lsn >= from_lsn {
                        // A record whose CRC holds but whose payload does
                        // not decode is a format bug or a version mismatch,
                        // not damage: never truncated away.
                        let ev = decode_event(kind, payload).map_err(|e| LogError::Corrupt {
                            path: path.clone(),
                            offset: off as u64,
                            why: e.into(),
                        })?;
                        apply(lsn, ev)?;
                        out.replayed += 1;
                    }
                    lsn += 1;
                    off += len;
                    continue;
                }
                d @ (Decoded::Incomplete | Decoded::Zeroes) => LogError::Corrupt {
                    path: path.clone(),
                    offset: off as u64,
                    why: if is_last {
                        Corruption::of_record(&d)
                    } else {
                        Corruption::Fixed("incomplete record before the end of the log")
                    },
                },
                Decoded::Checksum { expected, got, .. } => LogError::ChecksumMismatch {
                    path: path.clone(),
                    offset: off as u64,
                    expected,
                    got,
                },
                Decoded::BadLength(n) => LogError::Corrupt {
                    path: path.clone(),
                    offset: off as u64,
                    why: Corruption::BadLength(n),
                },
            };
            damage = Some(classify(path, &data, off, is_last, bad));
            break;
        }
        let (at, why) = match damage {
            None => {
                expected_base = Some(lsn);
                if is_last {
                    return Ok(Scanned {
                        plan: Plan::default(),
                        end_lsn: lsn,
                        tail: Some((path.clone(), data.len() as u64)),
                        end_path: path.clone(),
                    });
                }
                continue;
            }
            // Nothing but zeroes from there: the room the writer zeroes
            // ahead of its records (`file_log`), left by a crash. Any
            // write torn in it was never acknowledged either.
            Some(Damage::Torn(at)) if data[at as usize..].iter().all(|b| *b == 0) => (
                at,
                (
                    true,
                    format!(
                        "{}: {} zeroed bytes past the last record at offset {at}, the end of the log: cutting them off",
                        path.display(),
                        data.len() as u64 - at
                    ),
                ),
            ),
            Some(Damage::Torn(at)) => (
                at,
                (
                    true,
                    format!(
                        "{}: torn write at offset {at}, the end of the log: truncating (never acknowledged)",
                        path.display()
                    ),
                ),
            ),
            Some(Damage::Corrupt(at, e)) => match policy {
                OnCorruption::Refuse => return Err(e),
                OnCorruption::Truncate => (
                    at,
                    (
                        false,
                        format!("{e}: log.on_corruption = truncate: dropping everything from here on"),
                    ),
                ),
            },
        };
        let mut plan = Plan {
            why: Some(why),
            ..Plan::default()
        };
        for (_, later) in segments[i + 1..].iter().rev() {
            let n = std::fs::metadata(later)
                .map_err(|e| LogError::io(later, e))?
                .len();
            plan.remove.push(later.clone());
            plan.truncated.push((later.clone(), 0, n));
        }
        plan.truncated
            .push((path.clone(), at, data.len() as u64 - at));
        plan.cut = Some((path.clone(), at));
        return Ok(Scanned {
            plan,
            end_lsn: lsn,
            tail: Some((path.clone(), at)),
            end_path: path.clone(),
        });
    }
    unreachable!("the last segment always returns")
}

/// Carry out a decided plan.
fn execute(dir: &Path, plan: &Plan) -> Result<(), LogError> {
    match &plan.why {
        Some((true, why)) => tracing::warn!("{why}"),
        Some((false, why)) => tracing::error!("{why}"),
        None => {}
    }
    for p in &plan.remove {
        std::fs::remove_file(p).map_err(|e| LogError::io(p, e))?;
    }
    if let Some(p) = &plan.remove_headerless {
        std::fs::remove_file(p).map_err(|e| LogError::io(p, e))?;
    }
    if let Some((path, at)) = &plan.cut {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| LogError::io(path, e))?;
        f.set_len(*at).map_err(|e| LogError::io(path, e))?;
        f.sync_all().map_err(|e| LogError::io(path, e))?;
    }
    if !plan.remove.is_empty() || plan.remove_headerless.is_some() {
        sync_dir(dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::encode_record;

    #[test]
    fn zeroes_never_form_a_valid_record() {
        // The zero-run skip in `valid_record_after` relies on it.
        assert_ne!(crc32c::crc32c(&[0u8; 5]), 0);
        assert_eq!(valid_record_after(&[0u8; 4096], 0), After::Nothing);
    }

    #[test]
    fn a_record_is_found_after_zeroes_at_any_alignment() {
        // Lengths whose low bytes are zero: the record starts with zeroes.
        for payload_len in [1usize, 256, 512] {
            for gap in 0..12 {
                let mut data = vec![0u8; 100 + gap];
                let at = data.len();
                encode_record(&mut data, 2, &vec![7u8; payload_len]);
                data.extend_from_slice(&[0u8; 30]);
                assert_eq!(
                    valid_record_after(&data, 1),
                    After::Valid(at),
                    "payload {payload_len}, gap {gap}"
                );
            }
        }
        // Garbage with no valid record.
        let junk: Vec<u8> = (0..10_000u32).map(|i| (i * 7 + 3) as u8).collect();
        assert_eq!(valid_record_after(&junk, 0), After::Nothing);
    }

    #[test]
    fn a_costly_search_fails_closed() {
        // Every fourth offset claims a full-size record that fits: each
        // costs a megabyte of checksum, so the budget runs out.
        let n = (PAYLOAD_BYTES_MAX as u32).to_le_bytes();
        let data: Vec<u8> = n
            .iter()
            .copied()
            .cycle()
            .take(PAYLOAD_BYTES_MAX * 3)
            .collect();
        assert_eq!(valid_record_after(&data, 0), After::TooCostly);
    }
}
