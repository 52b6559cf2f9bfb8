//! Log records and segments as start-up reads them: `decode_record`,
//! `decode_event`, `recover` over a directory of segments, and the
//! snapshotter's reader (`Tail`). Never a panic; a record or
//! event that decodes re-encodes to the same bytes; a recovery that fails
//! has changed no file; one that succeeds replays the same events when
//! run again and cuts nothing more, agrees with the snapshotter's reader,
//! and (refusing corruption) never cut a valid record away as a "torn
//! tail"; the engine replays what recovery hands it without panicking.
//!
//! Input: `[mode][from_lsn][rest]`. Mode bit 0 clear: `rest` is one raw
//! segment file (base LSN 0). Set: `rest` is framed items (see
//! `flashd_fuzz::items`), written as segments with valid headers and CRCs.
//! Mode bit 1: `log.on_corruption = "truncate"` instead of "refuse".
#![no_main]

use flashd_engine::{Engine, EngineConfig, Event};
use flashd_fuzz::{file_header, items, Item, Scratch, SEGMENT_MAGIC, SEGMENT_VERSION};
use flashd_log::{
    decode_event, decode_record, encode_event, encode_record, recover, segment_name,
    Decoded, OnCorruption, Tail, HEADER_BYTES,
};
use libfuzzer_sys::fuzz_target;

/// Segments a framed input may make: enough for gaps, overlaps and a
/// damaged middle segment.
const MAX_SEGMENTS: usize = 4;

/// Every record in `buf` from `off`, as recovery walks them; checks that
/// each decodes to what it was encoded from.
fn walk(buf: &[u8]) {
    let mut off = 0;
    while off < buf.len() {
        match decode_record(&buf[off..]) {
            Decoded::Record { kind, payload, len } => {
                let mut again = Vec::new();
                encode_record(&mut again, kind, payload);
                assert_eq!(again, buf[off..off + len], "record re-encodes differently");
                if let Ok(ev) = decode_event(kind, payload) {
                    let mut p = Vec::new();
                    assert_eq!(encode_event(&ev, &mut p), kind, "event kind changed");
                    assert_eq!(p, payload, "event re-encodes differently");
                }
                off += len;
            }
            _ => break,
        }
    }
}

/// The segment files a framed input describes: (base LSN, bytes).
fn framed_segments(rest: &[u8]) -> Vec<(u64, Vec<u8>)> {
    let mut files: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut base = 0u64;
    let mut records = 0u64;
    let mut cur = file_header(SEGMENT_MAGIC, SEGMENT_VERSION, 0).to_vec();
    for item in items(rest) {
        match item {
            Item::Record(kind, payload) => {
                encode_record(&mut cur, kind, payload);
                records += 1;
            }
            Item::Raw(bytes) => cur.extend_from_slice(bytes),
            Item::NewFile(next) => {
                if files.len() + 1 == MAX_SEGMENTS {
                    break;
                }
                files.push((base, std::mem::take(&mut cur)));
                base = next.unwrap_or(base.saturating_add(records));
                records = 0;
                cur = file_header(SEGMENT_MAGIC, SEGMENT_VERSION, base).to_vec();
            }
        }
    }
    files.push((base, cur));
    files
}

fn collect(
    dir: &std::path::Path,
    from: u64,
    policy: OnCorruption,
) -> Result<(flashd_log::Recovered, Vec<(u64, Event)>), flashd_log::LogError> {
    let mut evs = Vec::new();
    let r = recover(dir, from, policy, &mut |lsn, ev| {
        evs.push((lsn, ev));
        Ok(())
    })?;
    Ok((r, evs))
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let (mode, from) = (data[0], data[1] as u64);
    let rest = &data[2..];
    let policy = if mode & 2 == 0 {
        OnCorruption::Refuse
    } else {
        OnCorruption::Truncate
    };
    let files = if mode & 1 == 0 {
        vec![(0, rest.to_vec())]
    } else {
        framed_segments(rest)
    };
    for (_, bytes) in &files {
        walk(bytes.get(HEADER_BYTES..).unwrap_or(&[]));
    }

    let dir = Scratch::new("segment");
    for (base, bytes) in &files {
        // Two files with one base: the later one wins, as a rename would.
        std::fs::write(dir.path().join(segment_name(*base)), bytes).expect("write a segment");
    }
    let before = dir.contents();
    let (r1, evs) = match collect(dir.path(), from, policy) {
        Ok(r) => r,
        Err(e) => {
            assert_eq!(
                dir.contents(),
                before,
                "recovery failed ({e}) after changing the log"
            );
            return;
        }
    };
    assert!(
        r1.next_lsn >= from,
        "next LSN {} before the snapshot's {from}",
        r1.next_lsn
    );
    assert_eq!(r1.replayed as usize, evs.len());
    assert!(
        evs.windows(2).all(|w| w[1].0 == w[0].0 + 1),
        "LSNs not consecutive"
    );
    if let Some(last) = evs.last() {
        assert_eq!(
            last.0 + 1,
            r1.next_lsn,
            "next LSN is not after the last event"
        );
    }

    if policy == OnCorruption::Refuse {
        // A torn tail is only the very end: nothing cut may hold a valid
        // record (one that was written whole after the damage, so acked).
        for (path, at, _) in &r1.truncated {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let Some((_, old)) = before.iter().find(|(n, _)| *n == name) else {
                continue;
            };
            let cut = old.get(*at as usize..).unwrap_or(&[]);
            for i in 1..cut.len() {
                if let Decoded::Record { kind, payload, .. } = decode_record(&cut[i..]) {
                    assert!(
                        decode_event(kind, payload).is_err(),
                        "{name}: cut at {at} as a torn tail, but a valid record follows at {}",
                        *at as usize + i
                    );
                }
            }
        }
    }

    // Recovering a recovered log changes nothing and replays the same.
    let after = dir.contents();
    let (r2, evs2) = collect(dir.path(), from, policy).expect("recovering a recovered log");
    assert!(
        r2.truncated.is_empty(),
        "a second recovery cut {:?}",
        r2.truncated
    );
    assert_eq!(r2.next_lsn, r1.next_lsn);
    assert_eq!(evs2, evs, "a second recovery replayed different events");
    assert_eq!(dir.contents(), after);

    // The snapshotter's follower reads the same events.
    let mut tailed = Vec::new();
    match Tail::new(dir.path(), from) {
        Ok(mut tail) => {
            tail.advance(r1.next_lsn, &mut |lsn, ev| tailed.push((lsn, ev)))
                .expect("tailing a recovered log");
            assert_eq!(
                tailed, evs,
                "the snapshotter's tail disagrees with recovery"
            );
        }
        // Known (reported with issue 14's fuzzing): `Tail::new` decodes the
        // records before `from` that it skips, recovery does not, so a
        // CRC-clean record there that is no event passes recovery and stops
        // the tail. Allowed only where recovering the whole log refuses too.
        Err(e) => assert!(
            from > 0 && collect(dir.path(), 0, OnCorruption::Refuse).is_err(),
            "a tail over a recovered log: {e}"
        ),
    }

    // The engine replays it or says why not; it never panics.
    let engine = Engine::new(EngineConfig {
        max_activities: 16,
        ..EngineConfig::default()
    });
    for (_, ev) in &evs {
        if engine.apply(ev).is_err() {
            break;
        }
    }
});
