//! Proves the file log and recovery: round trips across segment rolls, the
//! exact outcome of every kind of damage (torn tail, corrupt tail, corrupt
//! middle, empty file, bad magic or version, snapshot ahead of the log,
//! missing segment), rollback, snapshots, the follower, and the writer's
//! group commit with failure, revert and breaker.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod common;

use flashd_engine::*;
use flashd_log::*;

const T0: Millis = 1_800_000_000_000;

struct Dir(PathBuf);
impl Dir {
    fn new(tag: &str) -> Dir {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "flashd-storage-{tag}-{}-{}",
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

fn cfg(dir: &Path, segment_bytes: u64) -> FileLogConfig {
    FileLogConfig {
        dir: dir.into(),
        segment_bytes,
        fsync: true,
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

fn write_events(dir: &Path, n: u64, segment_bytes: u64) -> Vec<Event> {
    let mut log = FileLog::open(cfg(dir, segment_bytes), None, 0).unwrap();
    let evs: Vec<Event> = (0..n).map(ev).collect();
    for chunk in evs.chunks(7) {
        log.append(chunk).unwrap();
        log.commit().unwrap();
    }
    evs
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

fn segments(dir: &Path) -> Vec<PathBuf> {
    list_segments(dir)
        .unwrap()
        .into_iter()
        .map(|(_, p)| p)
        .collect()
}

#[test]
fn round_trip_across_segments_and_append_after_recovery() {
    let d = Dir::new("rt");
    let evs = write_events(&d.0, 100, 512);
    assert!(segments(&d.0).len() > 3, "small segments must roll");
    let (got, r) = read_all(&d.0, 0, OnCorruption::Refuse).unwrap();
    assert_eq!(got, evs);
    assert_eq!(r.next_lsn, 100);
    assert!(r.truncated.is_empty());
    // Reopen at the tail and keep going.
    let mut log = FileLog::open(cfg(&d.0, 512), r.tail, r.next_lsn).unwrap();
    log.append(&[ev(100)]).unwrap();
    assert_eq!(log.commit().unwrap(), 101);
    let (got, _) = read_all(&d.0, 95, OnCorruption::Refuse).unwrap();
    assert_eq!(got, (95..101).map(ev).collect::<Vec<_>>());
}

#[test]
fn torn_tail_is_truncated_and_reported() {
    let d = Dir::new("torn");
    let evs = write_events(&d.0, 20, 1 << 20);
    let seg = segments(&d.0).pop().unwrap();
    let good_len = std::fs::metadata(&seg).unwrap().len();
    // Half a record: a length and a few bytes.
    let mut f = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
    std::io::Write::write_all(&mut f, &[40, 0, 0, 0, 2, 9, 9]).unwrap();
    drop(f);
    let (got, r) = read_all(&d.0, 0, OnCorruption::Refuse).unwrap();
    assert_eq!(got, evs);
    assert_eq!(r.truncated, vec![(seg.clone(), good_len, 7)]);
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), good_len);
}

#[test]
fn corrupt_last_record_is_a_torn_tail() {
    let d = Dir::new("ctail");
    let evs = write_events(&d.0, 20, 1 << 20);
    let seg = segments(&d.0).pop().unwrap();
    let mut data = std::fs::read(&seg).unwrap();
    let n = data.len();
    data[n - 6] ^= 0xff; // inside the last record
    std::fs::write(&seg, &data).unwrap();
    let (got, r) = read_all(&d.0, 0, OnCorruption::Refuse).unwrap();
    assert_eq!(got, evs[..19].to_vec());
    assert_eq!(r.next_lsn, 19);
    assert_eq!(r.truncated.len(), 1);
}

#[test]
fn corruption_in_the_middle_refuses_with_file_and_offset() {
    let d = Dir::new("cmid");
    write_events(&d.0, 20, 1 << 20);
    let seg = segments(&d.0).pop().unwrap();
    let mut data = std::fs::read(&seg).unwrap();
    let at = HEADER_BYTES + 10; // inside the first record
    data[at] ^= 0x01;
    std::fs::write(&seg, &data).unwrap();
    match read_all(&d.0, 0, OnCorruption::Refuse) {
        Err(LogError::ChecksumMismatch { path, offset, .. }) => {
            assert_eq!(path, seg);
            assert_eq!(offset, HEADER_BYTES as u64);
        }
        other => panic!("expected a checksum error, got {other:?}"),
    }
    // Nothing was changed by refusing.
    assert_eq!(std::fs::read(&seg).unwrap(), data);
    // The operator's override drops from the damage on.
    let (got, r) = read_all(&d.0, 0, OnCorruption::Truncate).unwrap();
    assert!(got.is_empty());
    assert_eq!(r.next_lsn, 0);
}

#[test]
fn corruption_in_an_earlier_segment_refuses() {
    let d = Dir::new("cearly");
    write_events(&d.0, 60, 512);
    let first = segments(&d.0)[0].clone();
    let mut data = std::fs::read(&first).unwrap();
    let n = data.len();
    data[n - 2] ^= 0x10; // its last record: not the log's tail
    std::fs::write(&first, &data).unwrap();
    assert!(matches!(
        read_all(&d.0, 0, OnCorruption::Refuse),
        Err(LogError::ChecksumMismatch { .. })
    ));
}

#[test]
fn segments_wholly_before_the_snapshot_are_not_read() {
    let d = Dir::new("skip");
    let evs = write_events(&d.0, 60, 512);
    let segs = list_segments(&d.0).unwrap();
    assert!(segs.len() >= 3, "want several segments: {segs:?}");
    // Damage the first segment; a snapshot at the third segment's base
    // makes it irrelevant, so recovery neither reads nor refuses it.
    let mut data = std::fs::read(&segs[0].1).unwrap();
    let n = data.len();
    data[n - 2] ^= 0x10;
    std::fs::write(&segs[0].1, &data).unwrap();
    let from = segs[2].0;
    let (got, r) = read_all(&d.0, from, OnCorruption::Refuse).unwrap();
    assert_eq!(got, evs[from as usize..]);
    assert_eq!(r.next_lsn, 60);
    // A snapshot inside the first segment still needs it: refused.
    assert!(matches!(
        read_all(&d.0, 1, OnCorruption::Refuse),
        Err(LogError::ChecksumMismatch { .. })
    ));
}

#[test]
fn empty_files_bad_magic_and_version() {
    // An empty last segment (created, never written): recreated.
    let d = Dir::new("empty");
    write_events(&d.0, 10, 1 << 20);
    std::fs::write(d.0.join(segment_name(10)), b"").unwrap();
    let (got, r) = read_all(&d.0, 0, OnCorruption::Refuse).unwrap();
    assert_eq!(got.len(), 10);
    assert_eq!((r.next_lsn, r.tail.is_none()), (10, true));
    // An empty earlier segment: refused.
    let d = Dir::new("emptymid");
    write_events(&d.0, 60, 512);
    std::fs::write(&segments(&d.0)[1], b"").unwrap();
    assert!(read_all(&d.0, 0, OnCorruption::Refuse).is_err());
    // Wrong magic.
    let d = Dir::new("magic");
    write_events(&d.0, 5, 1 << 20);
    let seg = segments(&d.0)[0].clone();
    let mut data = std::fs::read(&seg).unwrap();
    data[0] = b'X';
    std::fs::write(&seg, &data).unwrap();
    assert!(matches!(
        read_all(&d.0, 0, OnCorruption::Refuse),
        Err(LogError::BadMagic { .. })
    ));
    // A version from the future.
    data[0] = b'F';
    data[8] = 9;
    std::fs::write(&seg, &data).unwrap();
    match read_all(&d.0, 0, OnCorruption::Refuse) {
        Err(LogError::Version {
            found, supported, ..
        }) => assert_eq!((found, supported), (9, 1)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn missing_segment_and_snapshot_ahead_refuse() {
    let d = Dir::new("missing");
    write_events(&d.0, 60, 512);
    let segs = segments(&d.0);
    std::fs::remove_file(&segs[1]).unwrap();
    assert!(matches!(
        read_all(&d.0, 0, OnCorruption::Refuse),
        Err(LogError::MissingSegment { .. })
    ));
    let d = Dir::new("ahead");
    write_events(&d.0, 10, 1 << 20);
    match read_all(&d.0, 50, OnCorruption::Refuse) {
        Err(LogError::SnapshotAhead {
            snapshot_lsn,
            log_end,
            ..
        }) => assert_eq!((snapshot_lsn, log_end), (50, 10)),
        other => panic!("{other:?}"),
    }
    // A log that starts after the snapshot: events in between are missing.
    let d = Dir::new("gap");
    let mut log = FileLog::open(cfg(&d.0, 1 << 20), None, 100).unwrap();
    log.append(&[ev(100)]).unwrap();
    log.commit().unwrap();
    assert!(matches!(
        read_all(&d.0, 50, OnCorruption::Refuse),
        Err(LogError::MissingSegment { .. })
    ));
}

#[test]
fn rollback_forgets_uncommitted() {
    let d = Dir::new("rb");
    let mut log = FileLog::open(cfg(&d.0, 1 << 20), None, 0).unwrap();
    log.append(&[ev(0), ev(1)]).unwrap();
    log.commit().unwrap();
    log.append(&[ev(2), ev(3)]).unwrap();
    log.rollback().unwrap();
    log.append(&[ev(9)]).unwrap();
    log.commit().unwrap();
    let (got, _) = read_all(&d.0, 0, OnCorruption::Refuse).unwrap();
    assert_eq!(got, vec![ev(0), ev(1), ev(9)]);
}

fn spec(stock: u64) -> ActivitySpec {
    ActivitySpec {
        sku_id: "S".into(),
        name: "N".into(),
        price_cents: 5,
        stock,
        start_at: T0,
        end_at: T0 + 3_600_000,
        per_user_limit: 2,
    }
}

/// The snapshot start-up would load (the newest that verifies; a damaged
/// newer one is skipped): its path, LSN and the state it loads to.
fn latest_snapshot(dir: &Path) -> Result<Option<(PathBuf, u64, EngineSnapshot)>, LogError> {
    let Some(v) = latest_verified_snapshot(dir)? else {
        return Ok(None);
    };
    let path = v.path.clone();
    let e = engine(false);
    let lsn = v.load_into(&e)?;
    Ok(Some((path, lsn, e.export())))
}

fn engine(hold: bool) -> Engine {
    Engine::new(EngineConfig {
        node_id: 1,
        order_ttl_ms: 60_000,
        max_activities: 8,
        hold_released_until_durable: hold,
    })
}

#[test]
fn snapshots_round_trip_and_a_damaged_one_is_skipped() {
    let d = Dir::new("snap");
    let e = engine(false);
    let mut log = Vec::new();
    e.create_activity(&spec(10), T0, &mut log).unwrap();
    for u in 1..=5 {
        e.place_order(
            &PlaceOrder {
                activity_id: 1,
                user_id: u,
                quantity: 1,
                request_id: "r",
            },
            T0 + 1,
            &mut log,
        )
        .unwrap();
    }
    let s1 = e.export();
    write_snapshot(&d.0, 6, &s1, true).unwrap();
    let first = s1.orders.iter().find(|o| o.user_id == 1).unwrap().id;
    e.pay(1, first, T0 + 2, &mut log).unwrap();
    let s2 = e.export();
    let p2 = write_snapshot(&d.0, 7, &s2, true).unwrap();
    let (p, lsn, got) = latest_snapshot(&d.0).unwrap().unwrap();
    assert_eq!((p, lsn, &got), (p2.clone(), 7, &s2));
    let f = engine(false);
    f.load(&got).unwrap();
    assert_eq!(f.dump(), e.dump());
    // Damage the newest: the older one is used.
    let mut data = std::fs::read(&p2).unwrap();
    let n = data.len();
    data[n / 2] ^= 0x40;
    std::fs::write(&p2, &data).unwrap();
    let (_, lsn, got) = latest_snapshot(&d.0).unwrap().unwrap();
    assert_eq!((lsn, got), (6, s1));
    // Pruning keeps the newest, and the segments still needed.
    prune(&d.0, 1, 0).unwrap();
    assert_eq!(list_snapshots(&d.0).unwrap().len(), 1);
}

/// A log that fails on demand, around the real file log.
struct Flaky {
    inner: FileLog,
    fail: Arc<AtomicBool>,
}

impl OrderLog for Flaky {
    fn append(&mut self, events: &[Event]) -> Result<(), LogError> {
        self.inner.append(events)
    }
    fn commit(&mut self) -> Result<u64, LogError> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(LogError::Injected("fsync"));
        }
        self.inner.commit()
    }
    fn rollback(&mut self) -> Result<(), LogError> {
        self.inner.rollback()
    }
    fn committed_lsn(&self) -> u64 {
        self.inner.committed_lsn()
    }
}

#[derive(Clone, Default)]
struct Collect(Arc<Mutex<Vec<(u32, bool)>>>);
impl Replies<u32> for Collect {
    fn done(&mut self, r: u32, ok: bool) {
        self.0.lock().unwrap().push((r, ok));
    }
}

fn now() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as Millis
}

struct Sink<'a>(&'a WriterHandle<u32>, u64);
impl EventSink for Sink<'_> {
    fn emit(&mut self, ev: Event) {
        self.0.push(Entry::Event { ev, epoch: self.1 });
    }
}

fn wait_for(replies: &Collect, n: usize) -> Vec<(u32, bool)> {
    let t0 = std::time::Instant::now();
    loop {
        let v = replies.0.lock().unwrap().clone();
        if v.len() >= n {
            return v;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "only {} of {n} replies",
            v.len()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A writer over `log` with `cfg`, and an open sale of `stock` units
/// created through it (its events queued under a fresh epoch).
fn writer_with_sale(
    log: Box<dyn OrderLog>,
    e: &Arc<Engine>,
    replies: Collect,
    cfg: WriterConfig,
    stock: u64,
) -> (LogWriter<u32>, WriterHandle<u32>, u64) {
    let w = LogWriter::start(log, common::hooks(e), replies, cfg, now).unwrap();
    let h = w.handle();
    let t = now();
    let epoch = h.gate.admit(t).unwrap();
    e.create_activity(
        &ActivitySpec {
            start_at: t - 1000,
            end_at: t + 3_600_000,
            ..spec(stock)
        },
        t,
        &mut Sink(&h, epoch),
    )
    .unwrap();
    (w, h, epoch)
}

fn writer_config(ack: Ack, commit_interval: Duration) -> WriterConfig {
    WriterConfig {
        ring_capacity: 1 << 16,
        batch_max: 256,
        unavailable: Duration::from_millis(200),
        ack,
        flush_interval: Duration::from_millis(5),
        commit_interval,
    }
}

#[test]
fn writer_group_commits_fails_reverts_and_recovers() {
    let d = Dir::new("writer");
    let e = Arc::new(engine(true));
    let fail = Arc::new(AtomicBool::new(false));
    let log = Flaky {
        inner: FileLog::open(cfg(&d.0, 1 << 20), None, 0).unwrap(),
        fail: fail.clone(),
    };
    let replies = Collect::default();
    let (w, h, epoch) = writer_with_sale(
        Box::new(log),
        &e,
        replies.clone(),
        writer_config(Ack::Durable, Duration::ZERO),
        3,
    );
    let t = now();
    h.push(Entry::Reply { reply: 0, epoch });
    for u in 1..=2u32 {
        e.place_order(
            &PlaceOrder {
                activity_id: 1,
                user_id: u as u64,
                quantity: 1,
                request_id: "a",
            },
            t,
            &mut Sink(&h, epoch),
        )
        .unwrap();
        h.push(Entry::Reply { reply: u, epoch });
    }
    assert!(wait_for(&replies, 3).iter().all(|r| r.1));
    assert_eq!(w.committed_lsn.load(Ordering::SeqCst), 3);

    // The disk fails: the order is answered "not durable", its unit is back,
    // the breaker is open.
    fail.store(true, Ordering::SeqCst);
    let placed = e
        .place_order(
            &PlaceOrder {
                activity_id: 1,
                user_id: 9,
                quantity: 1,
                request_id: "b",
            },
            t,
            &mut Sink(&h, epoch),
        )
        .unwrap();
    h.push(Entry::Reply { reply: 9, epoch });
    assert_eq!(wait_for(&replies, 4)[3], (9, false));
    let Placed::Created(o) = placed else { panic!() };
    assert_eq!(e.order(9, o.id), None, "the failed order is gone");
    assert_eq!(e.activity(1).unwrap().view(t).remaining, 1);
    assert!(h.gate.admit(now()).is_none(), "breaker open");
    e.check_invariants().unwrap();
    // A straggler applied under the old epoch is reverted too.
    let placed = e
        .place_order(
            &PlaceOrder {
                activity_id: 1,
                user_id: 10,
                quantity: 1,
                request_id: "c",
            },
            t,
            &mut Sink(&h, epoch),
        )
        .unwrap();
    h.push(Entry::Reply { reply: 10, epoch });
    assert_eq!(wait_for(&replies, 5)[4], (10, false));
    let Placed::Created(o) = placed else { panic!() };
    assert_eq!(e.order(10, o.id), None);

    // The disk is back; after the breaker's time, orders flow again.
    fail.store(false, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(250));
    let epoch2 = h
        .gate
        .admit(now())
        .expect("breaker closes after unavailable_ms");
    assert!(epoch2 > epoch);
    e.place_order(
        &PlaceOrder {
            activity_id: 1,
            user_id: 11,
            quantity: 1,
            request_id: "d",
        },
        t,
        &mut Sink(&h, epoch2),
    )
    .unwrap();
    h.push(Entry::Reply {
        reply: 11,
        epoch: epoch2,
    });
    assert_eq!(wait_for(&replies, 6)[5], (11, true));
    w.stop();
    e.check_invariants().unwrap();

    // The log holds exactly what was acknowledged.
    let r = engine(false);
    let (evs, _) = read_all(&d.0, 0, OnCorruption::Refuse).unwrap();
    assert_eq!(evs.len(), 4);
    for ev in &evs {
        r.apply(ev).unwrap();
    }
    let (mut a, mut b) = (r.export(), e.export());
    a.last_order_id = 0;
    b.last_order_id = 0;
    assert_eq!(a, b);
}

#[test]
fn follower_snapshots_and_recovery_from_snapshot_plus_tail() {
    let d = Dir::new("follow");
    let e = engine(false);
    let mut evs = Vec::new();
    e.create_activity(&spec(1000), T0, &mut evs).unwrap();
    for u in 1..=300u64 {
        e.place_order(
            &PlaceOrder {
                activity_id: 1,
                user_id: u,
                quantity: 1,
                request_id: "r",
            },
            T0 + 1,
            &mut evs,
        )
        .unwrap();
    }
    let mut log = FileLog::open(cfg(&d.0, 4096), None, 0).unwrap();
    let committed = Arc::new(AtomicU64::new(0));
    let snap = Snapshotter::start(
        SnapshotterConfig {
            dir: d.0.clone(),
            every_events: 100,
            keep: 2,
            retain_segments: 1,
            fsync: true,
            poll: Duration::from_millis(5),
        },
        e.config().clone(),
        None,
        committed.clone(),
    )
    .unwrap();
    for chunk in evs.chunks(10) {
        log.append(chunk).unwrap();
        committed.store(log.commit().unwrap(), Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(1));
    }
    snap.stop();
    let snaps = list_snapshots(&d.0).unwrap();
    assert!(!snaps.is_empty());
    assert_eq!(
        snaps.last().unwrap().0,
        301,
        "final snapshot at the end of the log"
    );
    // Recovery: newest snapshot + the tail after it = the full state.
    let (_, lsn, s) = latest_snapshot(&d.0).unwrap().unwrap();
    let r = engine(false);
    r.load(&s).unwrap();
    let (_, rec) = {
        let mut n = 0;
        let rec = recover(&d.0, lsn, OnCorruption::Refuse, &mut |lsn, ev| {
            n += 1;
            r.apply(&ev)
                .map_err(|source| LogError::Replay { lsn, source })
        })
        .unwrap();
        (n, rec)
    };
    assert_eq!(rec.next_lsn, 301);
    assert_eq!(r.dump(), e.dump());
}

/// `ack = ledger`: nobody waits on the writer, so under a steady stream it
/// polls instead of being woken per event; every event must still reach
/// the disk within a few flush intervals, also a lone one after the stream
/// stopped (then a push wakes it again), and be there for recovery.
#[test]
fn ledger_writer_writes_behind_within_its_window() {
    let d = Dir::new("ledger");
    let e = Arc::new(engine(true));
    let log = FileLog::open(cfg(&d.0, 1 << 20), None, 0).unwrap();
    let (w, h, epoch) = writer_with_sale(
        Box::new(log),
        &e,
        Collect::default(),
        writer_config(Ack::Ledger, Duration::ZERO),
        10_000,
    );
    let buy = |u: u64| {
        e.place_order(
            &PlaceOrder {
                activity_id: 1,
                user_id: u,
                quantity: 1,
                request_id: "r",
            },
            now(),
            &mut Sink(&h, epoch),
        )
        .unwrap();
    };
    let durable_within = |lsn: u64, limit: Duration| {
        let t0 = std::time::Instant::now();
        while w.committed_lsn.load(Ordering::Acquire) < lsn {
            assert!(
                t0.elapsed() < limit,
                "only {} of {lsn} events synced after {limit:?}",
                w.committed_lsn.load(Ordering::Acquire)
            );
            std::thread::sleep(Duration::from_micros(200));
        }
        t0.elapsed()
    };
    // A steady stream: 2,000 orders over ~200 ms.
    for u in 1..=2000u64 {
        buy(u);
        if u % 20 == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    durable_within(2001, Duration::from_millis(100));
    // Quiet long enough for the writer to go back to sleeping until woken,
    // then one order: written and synced promptly, not after a long park.
    std::thread::sleep(Duration::from_millis(300));
    buy(5000);
    let took = durable_within(2002, Duration::from_millis(40));
    assert!(took < Duration::from_millis(40), "{took:?}");
    w.stop();
    let (got, r) = read_all(&d.0, 0, OnCorruption::Refuse).unwrap();
    assert_eq!(got.len(), 2002);
    assert_eq!(r.next_lsn, 2002);
}

/// Big snapshots are decoded on every core: the same state comes back, and
/// a flipped byte in the middle of the orders is still refused with its
/// offset.
#[test]
fn a_large_snapshot_decodes_in_parallel_and_damage_is_found() {
    let d = Dir::new("bigsnap");
    let e = Engine::new(EngineConfig {
        node_id: 1,
        order_ttl_ms: 60_000,
        max_activities: 8,
        hold_released_until_durable: false,
    });
    let mut log = Vec::new();
    e.create_activity(&spec(200_000), T0, &mut log).unwrap();
    for u in 1..=110_000u64 {
        e.place_order(
            &PlaceOrder {
                activity_id: 1,
                user_id: u,
                quantity: 1,
                request_id: "r",
            },
            T0 + 1,
            &mut log,
        )
        .unwrap();
    }
    let snap = e.export();
    let p = write_snapshot(&d.0, 110_001, &snap, false).unwrap();
    let (lsn, got) = read_snapshot(&p).unwrap();
    assert_eq!(lsn, 110_001);
    assert_eq!(got, snap);
    // Loaded block by block straight into an engine (start-up's path):
    // the same state, every invariant holding, the same orders findable.
    let fresh = Engine::new(EngineConfig {
        node_id: 1,
        order_ttl_ms: 60_000,
        max_activities: 8,
        hold_released_until_durable: false,
    });
    let v = verify_snapshot(&p).unwrap();
    assert_eq!((v.lsn, v.orders), (110_001, 110_000));
    assert_eq!(v.load_into(&fresh).unwrap(), 110_001);
    assert_eq!(fresh.dump(), e.dump());
    fresh.check_invariants().unwrap();
    let some = &snap.orders[snap.orders.len() / 3];
    assert_eq!(
        fresh.order(some.user_id, some.id).map(|o| o.id),
        Some(some.id)
    );
    // Unpaid orders still time out after a load.
    let mut expired = Vec::new();
    assert_eq!(
        fresh.expire_due(T0 + 60_001, usize::MAX, &mut expired),
        110_000
    );
    fresh.check_invariants().unwrap();
    let mut data = std::fs::read(&p).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0x01;
    std::fs::write(&p, &data).unwrap();
    match read_snapshot(&p) {
        Err(LogError::ChecksumMismatch { offset, .. }) => {
            // The offset names the block of orders holding the flipped
            // byte: its length field says where that block ends.
            let at = offset as usize;
            let len = u32::from_le_bytes(data[at..at + 4].try_into().unwrap()) as usize;
            assert!(
                at <= mid && mid < at + len + 9,
                "block at {at} ({len} bytes) does not hold flipped byte {mid}"
            );
        }
        other => panic!("expected a checksum mismatch, got {other:?}"),
    }
    // Verification finds it before any engine is touched.
    assert!(matches!(
        verify_snapshot(&p),
        Err(LogError::ChecksumMismatch { .. })
    ));
}

/// `commit_interval`: back-to-back durable commits are spaced out (fewer,
/// larger syncs), every order is still answered only once durable, and an
/// order arriving after a quiet spell is committed at once, not held for
/// the interval.
#[test]
fn durable_commits_are_paced_but_a_lone_order_is_not_held() {
    let d = Dir::new("paced");
    let e = Arc::new(engine(true));
    let interval = Duration::from_millis(150);
    let replies = Collect::default();
    let (w, h, epoch) = writer_with_sale(
        Box::new(FileLog::open(cfg(&d.0, 1 << 20), None, 0).unwrap()),
        &e,
        replies.clone(),
        WriterConfig {
            batch_max: 4096,
            ..writer_config(Ack::Durable, interval)
        },
        1_000_000,
    );
    h.push(Entry::Reply { reply: 0, epoch });
    wait_for(&replies, 1);
    let order = |u: u32| {
        e.place_order(
            &PlaceOrder {
                activity_id: 1,
                user_id: u as u64,
                quantity: 1,
                request_id: "r",
            },
            now(),
            &mut Sink(&h, epoch),
        )
        .unwrap();
        h.push(Entry::Reply { reply: u, epoch });
    };

    // After a quiet spell longer than the interval, one order is committed
    // at once. (Unpaced, this takes one fdatasync, ~0.3 ms; the bound
    // leaves room for a slow disk, not for the 150 ms interval.)
    std::thread::sleep(interval * 2);
    let t0 = std::time::Instant::now();
    order(1);
    wait_for(&replies, 2);
    let lone = t0.elapsed();
    assert!(lone < interval / 2, "a lone order waited {lone:?}");

    // Orders every millisecond for 1.2 s: unpaced, that is a commit each
    // (~1,200); paced, at most one per interval (~8), each one a batch.
    let c0 = w.stats.commits.load(Ordering::SeqCst);
    let t0 = std::time::Instant::now();
    let mut u = 2;
    while t0.elapsed() < Duration::from_millis(1200) {
        order(u);
        u += 1;
        std::thread::sleep(Duration::from_millis(1));
    }
    let n = (u - 2) as usize;
    let all = wait_for(&replies, 2 + n);
    assert!(all.iter().all(|r| r.1), "every order durable");
    let commits = w.stats.commits.load(Ordering::SeqCst) - c0;
    let most = (t0.elapsed().as_millis() / interval.as_millis()) as u64 + 2;
    assert!(
        (2..=most).contains(&commits),
        "{n} orders in {commits} commits (at most {most})"
    );
    // And every one of them is in the log.
    assert_eq!(w.committed_lsn.load(Ordering::SeqCst), 1 + 1 + n as u64);
    w.stop();
}
