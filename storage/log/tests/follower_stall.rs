//! Proves the snapshot follower never stops silently on an event it cannot
//! apply: it counts it (`apply_failures`, every retry), shows the LSN
//! (`stalled_lsn`), keeps the last good snapshot and the log after it,
//! writes nothing past the bad event, and keeps retrying; a real log with
//! an unappliable event at a known LSN drives it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flashd_engine::*;
use flashd_log::*;

const T0: Millis = 1_800_000_000_000;

fn created(i: u64) -> Event {
    Event::OrderCreated {
        order_id: i,
        activity_id: 1,
        user_id: 100 + i,
        quantity: 1,
        amount_cents: 5,
        request_id: format!("r{i}").into(),
        created_at: T0 + i,
        expires_at: T0 + 3_600_000,
    }
}

fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !ok() {
        assert!(t0.elapsed() < Duration::from_secs(30), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn snapshot_lsns(dir: &Path) -> Vec<u64> {
    list_snapshots(dir)
        .unwrap()
        .into_iter()
        .map(|s| s.0)
        .collect()
}

#[test]
fn an_event_that_does_not_apply_stalls_loudly_and_keeps_the_last_good_snapshot() {
    let dir: PathBuf =
        std::env::temp_dir().join(format!("flashd-follower-stall-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut log = FileLog::open(
        FileLogConfig {
            dir: dir.clone(),
            segment_bytes: 1 << 20,
            fsync: false,
        },
        None,
        0,
    )
    .unwrap();
    let mut events = vec![Event::ActivityCreated {
        id: 1,
        sku_id: "S".into(),
        name: "N".into(),
        price_cents: 5,
        stock: 100,
        start_at: T0,
        end_at: T0 + 3_600_000,
        per_user_limit: 2,
        created_at: T0,
    }];
    events.extend((1..=10).map(created));
    log.append(&events).unwrap();
    let good_end = log.commit().unwrap();
    assert_eq!(good_end, 11);
    // LSN 11: a payment for an order that was never created.
    let bad_lsn = good_end;
    let mut rest = vec![Event::OrderPaid {
        order_id: 999,
        activity_id: 1,
        user_id: 999,
        quantity: 1,
        at: T0 + 50,
    }];
    rest.extend((11..=20).map(created));
    log.append(&rest).unwrap();
    let end = log.commit().unwrap();

    let committed = Arc::new(AtomicU64::new(good_end));
    let snap = Snapshotter::start(
        SnapshotterConfig {
            dir: dir.clone(),
            every_events: 5,
            keep: 1,
            retain_segments: 0,
            fsync: false,
            poll: Duration::from_millis(2),
        },
        EngineConfig::default(),
        None,
        committed.clone(),
    )
    .unwrap();
    wait_until("a snapshot of the good prefix", || {
        snap.last_snapshot_lsn.load(Ordering::Acquire) == good_end
    });
    assert_eq!(snap.apply_failures.load(Ordering::Acquire), 0);
    assert_eq!(snap.stalled_lsn.load(Ordering::Acquire), NOT_STALLED);

    // The rest is committed: the follower reaches the bad event.
    committed.store(end, Ordering::Release);
    wait_until("the failure counted", || {
        snap.apply_failures.load(Ordering::Acquire) >= 1
    });
    assert_eq!(snap.stalled_lsn.load(Ordering::Acquire), bad_lsn);
    // It retries (rebuilding from the last good snapshot) and counts
    // every attempt: not one log line and silence.
    wait_until("a retry", || {
        snap.apply_failures.load(Ordering::Acquire) >= 2
    });
    assert_eq!(snap.stalled_lsn.load(Ordering::Acquire), bad_lsn);
    assert_eq!(snap.last_snapshot_lsn.load(Ordering::Acquire), good_end);
    assert!(snap.applied_lsn.load(Ordering::Acquire) <= bad_lsn);
    // Nothing past the bad event; the last good snapshot and the log after
    // it are all there, so a restart loses nothing.
    assert_eq!(snapshot_lsns(&dir), vec![good_end]);
    let (_, newest) = list_snapshots(&dir).unwrap().pop().unwrap();
    let v = verify_snapshot(&newest).unwrap();
    assert_eq!((v.lsn, v.orders), (good_end, 10));
    let mut seen = Vec::new();
    Tail::new(&dir, good_end)
        .unwrap()
        .advance(end, &mut |lsn, _| seen.push(lsn))
        .unwrap();
    assert_eq!(seen, (good_end..end).collect::<Vec<_>>());
    // Stopping while stalled writes no snapshot past the bad event.
    snap.stop();
    assert_eq!(snapshot_lsns(&dir), vec![good_end]);
    let _ = std::fs::remove_dir_all(&dir);
}
