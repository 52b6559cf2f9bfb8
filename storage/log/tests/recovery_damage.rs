//! Proves recovery cuts only a torn tail: damage with a valid record after
//! it is refused (files untouched byte for byte) or truncated by operator
//! choice, and a refusal such as "snapshot ahead" never modifies a file;
//! each case writes a real log, injects the fault, and recovers.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use flashd_engine::*;
use flashd_log::*;

const T0: Millis = 1_800_000_000_000;

struct Dir(PathBuf);
impl Dir {
    fn new(tag: &str) -> Dir {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "flashd-recdmg-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }
}
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn ev(i: u64) -> Event {
    Event::OrderPaid {
        order_id: i,
        activity_id: 1,
        user_id: i,
        quantity: 1,
        at: T0 + i,
    }
}

/// `n` events, one commit each, in segments of `segment_bytes`; returns
/// the offset of every record (segment, offset) in log order.
fn write_events(dir: &Path, n: u64, segment_bytes: u64) -> Vec<(PathBuf, usize)> {
    let mut log = FileLog::open(
        FileLogConfig {
            dir: dir.into(),
            segment_bytes,
            fsync: false,
        },
        None,
        0,
    )
    .unwrap();
    let mut at = Vec::new();
    let mut off = HEADER_BYTES;
    let mut seg = log.current_segment().to_path_buf();
    for i in 0..n {
        if log.current_segment() != seg {
            seg = log.current_segment().to_path_buf();
            off = HEADER_BYTES;
        }
        at.push((seg.clone(), off));
        log.append(&[ev(i)]).unwrap();
        log.commit().unwrap();
        // The record's own length: the file holds zeroed room past it.
        let mut payload = Vec::new();
        let kind = encode_event(&ev(i), &mut payload);
        let mut record = Vec::new();
        encode_record(&mut record, kind, &payload);
        off += record.len();
    }
    at
}

fn read_all(
    dir: &Path,
    from: u64,
    policy: OnCorruption,
) -> Result<(Vec<Event>, Recovered), LogError> {
    let mut out = Vec::new();
    let r = recover(dir, from, policy, &mut |_, e| {
        out.push(e);
        Ok(())
    })?;
    Ok((out, r))
}

/// Every file in `dir` with its bytes, to show a refusal changed nothing.
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    v.sort();
    v
}

fn offset_of(e: &LogError) -> Option<(PathBuf, u64)> {
    match e {
        LogError::Corrupt { path, offset, .. }
        | LogError::ChecksumMismatch { path, offset, .. } => Some((path.clone(), *offset)),
        _ => None,
    }
}

/// Refused under `Refuse` naming `seg`/`at`, with every file unchanged;
/// under `Truncate`, the first `keep` events survive and the file is cut
/// at `at`.
fn refused_then_truncated(d: &Dir, seg: &Path, at: usize, keep: usize) {
    let before = files(&d.0);
    match read_all(&d.0, 0, OnCorruption::Refuse) {
        Err(e) => assert_eq!(
            offset_of(&e),
            Some((seg.to_path_buf(), at as u64)),
            "wrong place: {e}"
        ),
        Ok((got, r)) => panic!(
            "damage followed by valid records was accepted: {} events, truncated {:?}",
            got.len(),
            r.truncated
        ),
    }
    assert_eq!(files(&d.0), before, "a refusal modified a file");
    let (got, r) = read_all(&d.0, 0, OnCorruption::Truncate).unwrap();
    assert_eq!(got, (0..keep as u64).map(ev).collect::<Vec<_>>());
    assert_eq!(r.next_lsn, keep as u64);
    assert_eq!(std::fs::metadata(seg).unwrap().len(), at as u64);
    assert_eq!(r.tail, Some((seg.to_path_buf(), at as u64)));
}

#[test]
fn a_zeroed_record_mid_last_segment_with_valid_records_after_is_refused() {
    let d = Dir::new("zmid");
    let at = write_events(&d.0, 20, 1 << 20);
    let (seg, start) = at[10].clone();
    let end = at[11].1;
    let mut data = std::fs::read(&seg).unwrap();
    data[start..end].fill(0);
    std::fs::write(&seg, &data).unwrap();
    refused_then_truncated(&d, &seg, start, 10);
}

#[test]
fn a_zeroed_page_then_valid_records_is_refused() {
    // Lost pages in the middle of the last segment: zeroes from a record's
    // start across many records, ending inside one, then intact records.
    let d = Dir::new("zpage");
    let at = write_events(&d.0, 400, 1 << 20);
    let (seg, _) = at[0].clone();
    let mut data = std::fs::read(&seg).unwrap();
    let k = at.iter().position(|(_, o)| *o >= 4096).unwrap();
    let (p0, p1) = (at[k].1, 8192);
    assert!(data.len() > p1 + 1000);
    data[p0..p1].fill(0);
    std::fs::write(&seg, &data).unwrap();
    refused_then_truncated(&d, &seg, p0, k);
}

#[test]
fn an_overlong_length_mid_last_segment_is_refused() {
    // A length field grown so the record seems to run past the end of the
    // file ("incomplete"), with valid records inside what it claims.
    let d = Dir::new("long");
    let at = write_events(&d.0, 20, 1 << 20);
    let (seg, start) = at[5].clone();
    let mut data = std::fs::read(&seg).unwrap();
    let len = data.len() as u32;
    data[start..start + 4].copy_from_slice(&len.to_le_bytes());
    std::fs::write(&seg, &data).unwrap();
    refused_then_truncated(&d, &seg, start, 5);
}

#[test]
fn a_torn_tail_at_the_very_end_is_truncated() {
    // Each shape a crash can leave after the last acknowledged record.
    let shapes: Vec<(&str, Vec<u8>)> = vec![
        ("half a record", vec![40, 0, 0, 0, 2, 9, 9]),
        ("zeroes", vec![0; 3000]),
        ("a length and zeroes", {
            let mut v = vec![0; 600];
            v[0] = 45;
            v
        }),
        (
            "garbage",
            (0..700u32).map(|i| (i * 31 + 7) as u8 | 1).collect(),
        ),
        ("a record with a bad crc", {
            let mut v = Vec::new();
            encode_record(&mut v, 2, &[5u8; 60]);
            let n = v.len();
            v[n - 1] ^= 1;
            v
        }),
        ("an impossible length then zeroes", {
            let mut v = vec![0xff, 0xff, 0xff, 0x7f];
            v.extend_from_slice(&[0; 100]);
            v
        }),
    ];
    for (what, tail) in shapes {
        let d = Dir::new("torn");
        write_events(&d.0, 20, 1 << 20);
        let seg = list_segments(&d.0).unwrap().pop().unwrap().1;
        let good = std::fs::metadata(&seg).unwrap().len();
        let mut data = std::fs::read(&seg).unwrap();
        data.extend_from_slice(&tail);
        std::fs::write(&seg, &data).unwrap();
        let (got, r) = read_all(&d.0, 0, OnCorruption::Refuse)
            .unwrap_or_else(|e| panic!("{what}: a torn tail was refused: {e}"));
        assert_eq!(got.len(), 20, "{what}");
        assert_eq!(r.next_lsn, 20, "{what}");
        assert_eq!(
            r.truncated,
            vec![(seg.clone(), good, tail.len() as u64)],
            "{what}"
        );
        assert_eq!(std::fs::metadata(&seg).unwrap().len(), good, "{what}");
    }
}

#[test]
fn a_snapshot_ahead_of_a_torn_log_is_refused_and_nothing_is_cut() {
    let d = Dir::new("ahead");
    write_events(&d.0, 10, 1 << 20);
    let seg = list_segments(&d.0).unwrap().pop().unwrap().1;
    let mut data = std::fs::read(&seg).unwrap();
    data.extend_from_slice(&[40, 0, 0, 0, 2, 9, 9]);
    std::fs::write(&seg, &data).unwrap();
    let before = files(&d.0);
    for policy in [OnCorruption::Refuse, OnCorruption::Truncate] {
        match read_all(&d.0, 50, policy) {
            Err(LogError::SnapshotAhead {
                snapshot_lsn,
                log_end,
                ..
            }) => assert_eq!((snapshot_lsn, log_end), (50, 10)),
            other => panic!("{policy:?}: {other:?}"),
        }
        assert_eq!(files(&d.0), before, "{policy:?}: the refusal cut the log");
    }
}

#[test]
fn truncating_to_before_the_snapshot_is_refused_and_nothing_is_cut() {
    // Damage at event 5 of the segment holding the snapshot's LSN 15: what
    // truncation would leave ends before the snapshot, so it cannot help.
    let d = Dir::new("cutahead");
    let at = write_events(&d.0, 20, 1 << 20);
    let (seg, start) = at[5].clone();
    let mut data = std::fs::read(&seg).unwrap();
    data[start + 6] ^= 0x40;
    std::fs::write(&seg, &data).unwrap();
    let before = files(&d.0);
    match read_all(&d.0, 15, OnCorruption::Truncate) {
        Err(LogError::SnapshotAhead {
            snapshot_lsn,
            log_end,
            ..
        }) => assert_eq!((snapshot_lsn, log_end), (15, 5)),
        other => panic!("{other:?}"),
    }
    assert_eq!(files(&d.0), before, "the refusal cut the log");
}

#[test]
fn a_headerless_last_segment_behind_the_snapshot_is_refused_and_kept() {
    let d = Dir::new("hdrless");
    write_events(&d.0, 10, 1 << 20);
    std::fs::write(d.0.join(segment_name(10)), [b'F', b'L']).unwrap();
    let before = files(&d.0);
    match read_all(&d.0, 12, OnCorruption::Refuse) {
        Err(LogError::SnapshotAhead {
            snapshot_lsn,
            log_end,
            ..
        }) => assert_eq!((snapshot_lsn, log_end), (12, 10)),
        other => panic!("{other:?}"),
    }
    assert_eq!(files(&d.0), before, "the refusal removed a file");
    // At the snapshot's LSN it is recreated as before.
    let (got, r) = read_all(&d.0, 10, OnCorruption::Refuse).unwrap();
    assert!(got.is_empty());
    assert_eq!((r.next_lsn, r.tail.is_none()), (10, true));
    assert!(!d.0.join(segment_name(10)).exists());
}
