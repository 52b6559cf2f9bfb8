//! Kafka snapshots are exact: a snapshot at any whole cut of a topic (failed groups, aborts and late records around it) plus the replay of the tail hands out the same records and builds the same engine as a full replay; a snapshot that does not fit the topic is refused and the replay is full. Against librdkafka's mock cluster.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flashd_engine::{
    order_created_ms, order_id_floor, Engine, EngineConfig, EngineSnapshot, Event, OrderId,
};
use flashd_kafka::{
    apply_replayed, encode_abort, encode_group_events, is_cut_mismatch, list_cuts,
    recover_with_snapshot, write_kafka_snapshot, Abort, KafkaConfig, KafkaLog, KafkaSnapshotter,
    KafkaSnapshotterConfig, LogRecord, TopicCut, TopicReader, REFUSED_SUFFIX,
};
use flashd_log::OrderLog;
use rdkafka::config::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

/// The `n`th order id of this test process (the same id every call).
fn oid(n: u64) -> OrderId {
    static BASE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let now = *BASE.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    });
    order_id_floor(now) | n
}

fn sale(id: u32) -> Event {
    Event::ActivityCreated {
        id,
        sku_id: format!("SKU-{id}"),
        name: format!("Sale {id}"),
        price_cents: 100,
        stock: 1 << 20,
        start_at: 0,
        end_at: u64::MAX / 2,
        per_user_limit: 1_000_000,
        created_at: 1,
    }
}

fn created(o: OrderId, a: u32, user: u64) -> Event {
    Event::OrderCreated {
        order_id: o,
        activity_id: a,
        user_id: user,
        quantity: 1,
        amount_cents: 100,
        request_id: format!("r{o}").into(),
        created_at: order_created_ms(o),
        expires_at: order_created_ms(o) + 60_000,
    }
}

fn paid(o: OrderId, a: u32, user: u64) -> Event {
    Event::OrderPaid {
        order_id: o,
        activity_id: a,
        user_id: user,
        quantity: 1,
        at: order_created_ms(o) + 1,
    }
}

fn config(mock: &MockCluster<'_, impl rdkafka::ClientContext>, topic: &str) -> KafkaConfig {
    KafkaConfig {
        brokers: mock.bootstrap_servers(),
        topic: topic.into(),
        timeout: Duration::from_millis(1500),
        properties: Vec::new(),
    }
}

/// A directory of its own under the system's temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "flashd-kafka-snap-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn engine() -> Engine {
    Engine::new(EngineConfig::default())
}

/// What a replay handed out, and the engine it built.
struct Replayed {
    seen: Vec<(u64, LogRecord)>,
    next_lsn: u64,
    state: EngineSnapshot,
}

/// Run `reader` (to `upto`) into `e`, collecting what it hands out.
fn run(reader: &mut TopicReader, upto: Option<u64>, e: &Engine) -> Vec<(u64, LogRecord)> {
    let mut seen = Vec::new();
    reader
        .run(upto, &mut |lsn, r| {
            seen.push((lsn, r.clone()));
            apply_replayed(e, lsn, r)
        })
        .unwrap();
    seen
}

fn full(cfg: &KafkaConfig) -> Replayed {
    let e = engine();
    let mut r = TopicReader::open(cfg, None).unwrap();
    let seen = run(&mut r, None, &e);
    Replayed {
        seen,
        next_lsn: r.next_lsn(),
        state: e.export(),
    }
}

/// Stop a merge below `upto`, snapshot it into `dir` if the cut is
/// whole, then resume from the snapshot (as start-up does, and by hand to
/// see what the tail hands out). `None` when the cut is not whole.
fn split(cfg: &KafkaConfig, upto: u64, dir: &Path) -> Option<(Replayed, TopicCut)> {
    let e = engine();
    let mut r = TopicReader::open(cfg, None).unwrap();
    let mut seen = run(&mut r, Some(upto), &e);
    let cut = r.cut()?;
    assert!(seen.iter().all(|(l, _)| *l < upto));
    for (_, p) in list_cuts(dir).unwrap() {
        std::fs::remove_file(p).unwrap();
    }
    write_kafka_snapshot(dir, &e, &cut, false).unwrap();
    // By hand: the tail's records.
    let e2 = engine();
    let s = flashd_kafka::newest_kafka_snapshot(dir).unwrap().unwrap();
    assert_eq!(s.cut, cut);
    s.engine.load_into(&e2).unwrap();
    let mut r2 = TopicReader::open(cfg, Some(&cut)).unwrap();
    seen.extend(run(&mut r2, None, &e2));
    // As start-up does it.
    let e3 = engine();
    let res = recover_with_snapshot(cfg, dir, &e3).unwrap();
    assert!(res.refused.is_none(), "{:?}", res.refused);
    assert_eq!(res.snapshot.as_ref().map(|s| s.0), Some(cut.next_lsn));
    assert_eq!(res.rec.next_lsn, r2.next_lsn());
    assert_eq!(e3.export(), e2.export());
    Some((
        Replayed {
            seen,
            next_lsn: r2.next_lsn(),
            state: e2.export(),
        },
        cut,
    ))
}

/// Every LSN of the topic as a place to stop: where the cut is whole, a
/// snapshot there plus the tail equals the full replay. Returns how many
/// cuts were whole.
fn check_every_cut(cfg: &KafkaConfig, tag: &str) -> usize {
    let f = full(cfg);
    let dir = TempDir::new(tag);
    let mut whole = 0;
    for upto in 0..=f.next_lsn + 1 {
        let Some((s, cut)) = split(cfg, upto, dir.path()) else {
            continue;
        };
        whole += 1;
        assert_eq!(
            s.seen, f.seen,
            "records handed out, cut below {upto}: {cut:?}"
        );
        assert_eq!(s.next_lsn, f.next_lsn, "next LSN, cut below {upto}");
        assert_eq!(s.state, f.state, "engine, cut below {upto}: {cut:?}");
    }
    whole
}

fn producer(cfg: &KafkaConfig) -> BaseProducer {
    ClientConfig::new()
        .set("bootstrap.servers", &cfg.brokers)
        .create()
        .unwrap()
}

/// Land `value` on `partition`, as a producer (replaced or not) would.
fn land(p: &BaseProducer, cfg: &KafkaConfig, partition: i32, value: &[u8]) {
    p.send(
        BaseRecord::<(), [u8]>::to(&cfg.topic)
            .partition(partition)
            .payload(value),
    )
    .unwrap();
    p.flush(Duration::from_secs(10)).unwrap();
}

fn group(cfg: &KafkaConfig, p: &BaseProducer, partition: i32, g: u64, evs: &[(u64, Event)]) {
    let refs: Vec<(u64, &Event)> = evs.iter().map(|(l, e)| (*l, e)).collect();
    let mut v = Vec::new();
    encode_group_events(g, &refs, &mut v);
    land(p, cfg, partition, &v);
}

fn abort(
    cfg: &KafkaConfig,
    p: &BaseProducer,
    partition: i32,
    lsn: u64,
    covers: std::ops::Range<u64>,
    evs: &[(u64, Event)],
) {
    let mut v = Vec::new();
    encode_abort(
        lsn,
        &Abort {
            covers,
            events: evs.to_vec(),
        },
        &mut v,
    );
    land(p, cfg, partition, &v);
}

/// A topic written by hand, two partitions, with what only failures
/// leave: a failed group whose records landed on both partitions and the
/// aborts after them, and records of replaced producers landing late
/// (behind later groups, behind the aborts, at the very end).
fn crafted(mock: &MockCluster<'_, impl rdkafka::ClientContext>, topic: &str) -> KafkaConfig {
    mock.create_topic(topic, 2, 1).unwrap();
    let cfg = config(mock, topic);
    let p = producer(&cfg);
    let o: Vec<OrderId> = (0..16).map(|i| oid(100 + i)).collect();
    // Group 0: the two sales.
    group(&cfg, &p, 0, 0, &[(0, sale(1))]);
    group(&cfg, &p, 1, 0, &[(1, sale(2))]);
    // Group 2: an order on each.
    group(
        &cfg,
        &p,
        0,
        2,
        &[(2, created(o[0], 1, 10)), (4, created(o[1], 1, 11))],
    );
    group(&cfg, &p, 1, 2, &[(3, created(o[2], 2, 12))]);
    // Group 5 fails: its records land on both partitions.
    group(
        &cfg,
        &p,
        0,
        5,
        &[(5, created(o[3], 1, 13)), (7, paid(o[0], 1, 10))],
    );
    group(&cfg, &p, 1, 5, &[(6, created(o[4], 2, 14))]);
    // The aborts, one per activity, each voiding 5..8.
    abort(
        &cfg,
        &p,
        0,
        8,
        5..8,
        &[(5, created(o[3], 1, 13)), (7, paid(o[0], 1, 10))],
    );
    abort(&cfg, &p, 1, 9, 5..8, &[(6, created(o[4], 2, 14))]);
    // Group 10 commits.
    group(
        &cfg,
        &p,
        0,
        10,
        &[(10, created(o[5], 1, 15)), (12, paid(o[1], 1, 11))],
    );
    group(&cfg, &p, 1, 10, &[(11, created(o[6], 2, 16))]);
    // A replaced producer's record of group 5 lands late, behind group 10.
    group(&cfg, &p, 1, 5, &[(6, created(o[4], 2, 14))]);
    // Group 13 fails on partition 1 only, and its abort lands before a
    // late duplicate of it.
    group(&cfg, &p, 1, 13, &[(13, created(o[7], 2, 17))]);
    abort(&cfg, &p, 1, 14, 13..14, &[(13, created(o[7], 2, 17))]);
    group(&cfg, &p, 1, 13, &[(13, created(o[7], 2, 17))]);
    // Group 15 commits on both.
    group(&cfg, &p, 0, 15, &[(15, created(o[8], 1, 18))]);
    group(
        &cfg,
        &p,
        1,
        15,
        &[(16, paid(o[6], 2, 16)), (17, created(o[9], 2, 19))],
    );
    // The last process died with group 18 in flight: what landed of it
    // stays (no abort was ever written), and an older group's record
    // lands after it.
    group(&cfg, &p, 0, 18, &[(18, created(o[10], 1, 20))]);
    group(&cfg, &p, 0, 10, &[(12, paid(o[1], 1, 11))]);
    cfg
}

#[test]
fn snapshot_plus_tail_equals_full_replay_around_failed_groups_and_late_records() {
    let mock = MockCluster::new(1).unwrap();
    let cfg = crafted(&mock, "crafted");
    let f = full(&cfg);
    // What the topic means: the failed groups and late records are never
    // applied; the sales, the committed orders and the in-flight one are.
    let applied: Vec<u64> = f
        .seen
        .iter()
        .filter(|(_, r)| matches!(r, LogRecord::Event(_)))
        .map(|(l, _)| *l)
        .collect();
    assert_eq!(applied, vec![0, 1, 2, 3, 4, 10, 11, 12, 15, 16, 17, 18]);
    assert_eq!(f.next_lsn, 19);
    let whole = check_every_cut(&cfg, "crafted");
    // Cuts fall inside groups too (where no message is half applied):
    // more places than there are commits.
    assert!(whole >= 10, "only {whole} whole cuts");
}

/// Records that land after a snapshot was taken (as while the follower
/// waits for the next commit): a replaced producer's record of a failed
/// group, behind its abort, which only the highest LSN handed out before
/// the snapshot says is late.
#[test]
fn a_late_record_landing_after_the_snapshot_is_skipped_as_a_full_replay_skips_it() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("after", 2, 1).unwrap();
    let cfg = config(&mock, "after");
    let p = producer(&cfg);
    let o: Vec<OrderId> = (0..8).map(|i| oid(200 + i)).collect();
    group(&cfg, &p, 0, 0, &[(0, sale(1))]);
    group(&cfg, &p, 1, 0, &[(1, sale(2))]);
    group(&cfg, &p, 0, 2, &[(2, created(o[0], 1, 10))]);
    group(&cfg, &p, 1, 2, &[(3, created(o[1], 2, 11))]);
    // Group 4 fails; its aborts follow.
    group(&cfg, &p, 0, 4, &[(4, created(o[2], 1, 12))]);
    group(&cfg, &p, 1, 4, &[(5, created(o[3], 2, 13))]);
    abort(&cfg, &p, 0, 6, 4..6, &[(4, created(o[2], 1, 12))]);
    abort(&cfg, &p, 1, 7, 4..6, &[(5, created(o[3], 2, 13))]);
    group(&cfg, &p, 1, 8, &[(8, created(o[4], 2, 14))]);
    // The snapshot, as the follower takes it: everything committed.
    let dir = TempDir::new("after");
    let e = engine();
    let mut r = TopicReader::open(&cfg, None).unwrap();
    run(&mut r, Some(9), &e);
    let cut = r.cut().expect("a whole cut at a commit");
    assert_eq!(cut.next_lsn, 9);
    write_kafka_snapshot(dir.path(), &e, &cut, false).unwrap();
    // Then: group 4's record lands again on partition 0, behind its
    // abort, and later groups commit.
    group(&cfg, &p, 0, 4, &[(4, created(o[2], 1, 12))]);
    group(&cfg, &p, 1, 2, &[(3, created(o[1], 2, 11))]);
    group(&cfg, &p, 0, 9, &[(9, created(o[5], 1, 15))]);
    group(&cfg, &p, 1, 9, &[(10, paid(o[4], 2, 14))]);
    let f = full(&cfg);
    let applied: Vec<u64> = f
        .seen
        .iter()
        .filter(|(_, r)| matches!(r, LogRecord::Event(_)))
        .map(|(l, _)| *l)
        .collect();
    assert_eq!(applied, vec![0, 1, 2, 3, 8, 9, 10]);
    let e2 = engine();
    let res = recover_with_snapshot(&cfg, dir.path(), &e2).unwrap();
    assert_eq!(res.snapshot.as_ref().map(|s| s.0), Some(9));
    assert_eq!(res.rec.events, 2, "{:?}", res.rec);
    assert_eq!(res.rec.late, 2, "{:?}", res.rec);
    assert_eq!(res.rec.next_lsn, f.next_lsn);
    assert_eq!(e2.export(), f.state);
}

/// Append and commit as the writer does, rolling back and retrying while
/// the broker refuses (each retry is a new group with new LSNs).
fn commit_until_ok(log: &mut KafkaLog, events: &[Event]) {
    let t0 = Instant::now();
    loop {
        log.append(events).unwrap();
        match log.commit() {
            Ok(_) => return,
            Err(e) => {
                assert!(
                    t0.elapsed() < Duration::from_secs(30),
                    "never committed: {e}"
                );
                log.rollback().unwrap();
            }
        }
    }
}

/// A topic written by the real producer: groups over three partitions,
/// and failed commits (broker down) whose aborts go out with the next.
fn produced(
    mock: &MockCluster<'_, impl rdkafka::ClientContext>,
    topic: &str,
    groups: u64,
) -> KafkaConfig {
    mock.create_topic(topic, 3, 1).unwrap();
    let cfg = config(mock, topic);
    let mut log = KafkaLog::open(cfg.clone(), 0).unwrap();
    commit_until_ok(&mut log, &[sale(1), sale(2), sale(3), sale(4)]);
    let mut n = 0u64;
    for g in 0..groups {
        let mut evs = Vec::new();
        for i in 0..3u64 {
            n += 1;
            evs.push(created(oid(n), ((g + i) % 4) as u32 + 1, n));
        }
        if n > 3 {
            evs.push(paid(oid(n - 3), ((g + 2 - 1) % 4) as u32 + 1, n - 3));
        }
        if g % 4 == 2 {
            // This group fails: the broker is gone while it is sent.
            mock.broker_down(-1).unwrap();
            log.append(&evs).unwrap();
            assert!(log.commit().is_err());
            log.rollback().unwrap();
            mock.broker_up(-1).unwrap();
        }
        commit_until_ok(&mut log, &evs);
    }
    cfg
}

#[test]
fn snapshot_plus_tail_equals_full_replay_on_a_producers_topic_with_failed_commits() {
    let mock = MockCluster::new(1).unwrap();
    let cfg = produced(&mock, "produced", 8);
    let f = full(&cfg);
    assert!(
        f.seen.iter().any(|(_, r)| matches!(r, LogRecord::Abort(_))),
        "no abort in the topic"
    );
    let whole = check_every_cut(&cfg, "produced");
    assert!(whole >= 9, "only {whole} whole cuts");
}

/// The newest snapshot written by `split` at `upto`, for the refusals.
fn snapshot_at(cfg: &KafkaConfig, upto: u64, dir: &Path) -> TopicCut {
    split(cfg, upto, dir).expect("a whole cut").1
}

/// Replace the snapshot's cut in `dir` with `cut`.
fn rewrite_cut(dir: &Path, cut: &TopicCut) {
    let (_, p) = list_cuts(dir).unwrap().pop().unwrap();
    std::fs::write(p, cut.encode()).unwrap();
}

/// Start-up with the snapshot in `dir`: it must be refused (loudly, and
/// set aside) and the replay must be the full one.
fn assert_refused(cfg: &KafkaConfig, dir: &Path, why: &str) {
    let s = flashd_kafka::newest_kafka_snapshot(dir).unwrap().unwrap();
    let err = TopicReader::open(cfg, Some(&s.cut))
        .err()
        .expect("a cut that does not fit was taken");
    assert!(is_cut_mismatch(&err), "{err}");
    assert!(err.to_string().contains(why), "{err}");
    let e = engine();
    let res = recover_with_snapshot(cfg, dir, &e).unwrap();
    assert!(
        res.refused.as_deref().is_some_and(|r| r.contains(why)),
        "{:?}",
        res.refused
    );
    assert!(res.snapshot.is_none());
    let f = full(cfg);
    assert_eq!(e.export(), f.state);
    assert_eq!(res.rec.next_lsn, f.next_lsn);
    assert!(
        list_cuts(dir).unwrap().is_empty(),
        "a refused cut is still there"
    );
    let aside = std::fs::read_dir(dir)
        .unwrap()
        .filter(|d| {
            d.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(REFUSED_SUFFIX)
        })
        .count();
    assert!(aside >= 1);
}

#[test]
fn a_snapshot_that_does_not_fit_the_topic_is_refused_and_the_replay_is_full() {
    let mock = MockCluster::new(1).unwrap();
    let cfg = crafted(&mock, "fit");
    let dir = TempDir::new("fit");

    // Another topic's snapshot.
    let cut = snapshot_at(&cfg, 13, dir.path());
    rewrite_cut(
        dir.path(),
        &TopicCut {
            topic: "other".into(),
            ..cut.clone()
        },
    );
    assert_refused(&cfg, dir.path(), "the snapshot is of topic");

    // Offsets past the end (the topic was truncated or recreated smaller).
    let cut = snapshot_at(&cfg, 13, dir.path());
    let mut far = cut.clone();
    far.partitions[1].resume += 1000;
    far.partitions[1].anchor = None;
    rewrite_cut(dir.path(), &far);
    assert_refused(&cfg, dir.path(), "past the end");

    // Another partition count.
    let cut = snapshot_at(&cfg, 13, dir.path());
    let mut fewer = cut.clone();
    fewer.partitions.pop();
    rewrite_cut(dir.path(), &fewer);
    assert_refused(&cfg, dir.path(), "knows partitions");

    // The topic recreated (same name, other records): the message before
    // the resume offset is not the one the snapshot names.
    let cut = snapshot_at(&cfg, 13, dir.path());
    let other = produced(&mock, "recreated", 3);
    rewrite_cut(
        dir.path(),
        &TopicCut {
            topic: other.topic.clone(),
            partitions: vec![
                cut.partitions[0].clone(),
                cut.partitions[1].clone(),
                flashd_kafka::PartitionCut {
                    id: 2,
                    resume: 0,
                    group: None,
                    anchor: None,
                },
            ],
            ..cut.clone()
        },
    );
    assert_refused(&other, dir.path(), "recreated");
}

#[test]
fn a_damaged_snapshot_is_skipped_for_an_older_one_or_a_full_replay() {
    let mock = MockCluster::new(1).unwrap();
    let cfg = crafted(&mock, "damaged");
    let dir = TempDir::new("damaged");
    let f = full(&cfg);
    // Two snapshots: an older at 5, a newer at 16.
    let older = {
        let e = engine();
        let mut r = TopicReader::open(&cfg, None).unwrap();
        run(&mut r, Some(5), &e);
        let c = r.cut().unwrap();
        write_kafka_snapshot(dir.path(), &e, &c, true).unwrap();
        let mut r = TopicReader::open(&cfg, None).unwrap();
        let e = engine();
        run(&mut r, Some(16), &e);
        write_kafka_snapshot(dir.path(), &e, &r.cut().unwrap(), true).unwrap();
        c
    };
    // A flipped byte in the newer cut.
    let (_, newest) = list_cuts(dir.path()).unwrap().pop().unwrap();
    let mut b = std::fs::read(&newest).unwrap();
    let k = b.len() - 7;
    b[k] ^= 1;
    std::fs::write(&newest, &b).unwrap();
    let e = engine();
    let res = recover_with_snapshot(&cfg, dir.path(), &e).unwrap();
    assert_eq!(res.snapshot.as_ref().map(|s| s.0), Some(older.next_lsn));
    assert_eq!(e.export(), f.state);
    // The older one's engine file damaged too: a full replay.
    let snap = dir.path().join(flashd_log::snapshot_name(older.next_lsn));
    let mut b = std::fs::read(&snap).unwrap();
    let k = b.len() / 2;
    b[k] ^= 1;
    std::fs::write(&snap, &b).unwrap();
    let e = engine();
    let res = recover_with_snapshot(&cfg, dir.path(), &e).unwrap();
    assert!(res.snapshot.is_none());
    assert_eq!(e.export(), f.state);
    assert_eq!(res.rec.next_lsn, f.next_lsn);
}

/// The follower writes snapshots as the writer commits, keeps the newest
/// two, writes a last one at stop; start-up from it replays nothing and
/// equals the full replay.
#[test]
fn the_follower_snapshots_committed_groups_and_a_restart_replays_only_the_tail() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("follow", 3, 1).unwrap();
    let cfg = config(&mock, "follow");
    let dir = TempDir::new("follow");
    let mut log = KafkaLog::open(cfg.clone(), 0).unwrap();
    let committed = Arc::new(AtomicU64::new(log.committed_lsn()));
    let snap = KafkaSnapshotter::start(
        KafkaSnapshotterConfig {
            dir: dir.path().to_path_buf(),
            every_events: 20,
            keep: 2,
            fsync: false,
            poll: Duration::from_millis(20),
        },
        cfg.clone(),
        EngineConfig::default(),
        0,
        committed.clone(),
    )
    .unwrap();
    commit_until_ok(&mut log, &[sale(1), sale(2), sale(3)]);
    committed.store(log.committed_lsn(), Ordering::Release);
    let mut n = 0;
    for g in 0..30u64 {
        let evs: Vec<Event> = (0..4)
            .map(|i| {
                n += 1;
                created(oid(n), ((g + i) % 3) as u32 + 1, n)
            })
            .collect();
        if g % 10 == 5 {
            mock.broker_down(-1).unwrap();
            log.append(&evs).unwrap();
            assert!(log.commit().is_err());
            log.rollback().unwrap();
            mock.broker_up(-1).unwrap();
        }
        commit_until_ok(&mut log, &evs);
        committed.store(log.committed_lsn(), Ordering::Release);
        std::thread::sleep(Duration::from_millis(10));
    }
    let t0 = Instant::now();
    while snap.last_snapshot_lsn.load(Ordering::Acquire) == 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "no snapshot written"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(snap.errors.load(Ordering::Relaxed), 0);
    let end = log.committed_lsn();
    drop(log);
    snap.stop();
    let cuts = list_cuts(dir.path()).unwrap();
    assert!(cuts.len() <= 2, "{cuts:?}");
    assert_eq!(
        cuts.last().unwrap().0,
        end,
        "the stop's snapshot is at the committed LSN"
    );
    let snaps = flashd_log::list_snapshots(dir.path()).unwrap();
    assert_eq!(
        snaps.iter().map(|s| s.0).collect::<Vec<_>>(),
        cuts.iter().map(|c| c.0).collect::<Vec<_>>()
    );
    let f = full(&cfg);
    let e = engine();
    let res = recover_with_snapshot(&cfg, dir.path(), &e).unwrap();
    assert_eq!(res.snapshot.as_ref().map(|s| s.0), Some(end));
    assert_eq!(
        res.rec.events, 0,
        "replayed {:?} after the stop's snapshot",
        res.rec
    );
    assert_eq!(res.rec.next_lsn, f.next_lsn);
    assert_eq!(e.export(), f.state);
}

/// A clean stop writes its final snapshot even when the first read of the
/// stop fails: the broker went away and came back while the follower had
/// nothing to read, so the consumer holds a transport error it hands out
/// on the next poll — the stop's. Without a retry the next start would
/// replay everything since the last periodic snapshot.
#[test]
fn a_stop_after_a_broker_blip_still_writes_the_final_snapshot() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("blip", 3, 1).unwrap();
    let cfg = config(&mock, "blip");
    let dir = TempDir::new("blip");
    let mut log = KafkaLog::open(cfg.clone(), 0).unwrap();
    let committed = Arc::new(AtomicU64::new(log.committed_lsn()));
    let snap = KafkaSnapshotter::start(
        KafkaSnapshotterConfig {
            dir: dir.path().to_path_buf(),
            every_events: 1_000_000,
            keep: 2,
            fsync: false,
            poll: Duration::from_millis(20),
        },
        cfg.clone(),
        EngineConfig::default(),
        0,
        committed.clone(),
    )
    .unwrap();
    commit_until_ok(&mut log, &[sale(1)]);
    committed.store(log.committed_lsn(), Ordering::Release);
    let t0 = Instant::now();
    while snap.applied_lsn.load(Ordering::Acquire) < log.committed_lsn() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "follower never caught up"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The blip, while the follower has nothing to read.
    mock.broker_down(-1).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    mock.broker_up(-1).unwrap();
    let evs: Vec<Event> = (1..=8).map(|n| created(oid(n), 1, n)).collect();
    commit_until_ok(&mut log, &evs);
    committed.store(log.committed_lsn(), Ordering::Release);
    let end = log.committed_lsn();
    drop(log);
    snap.stop();
    let cuts = list_cuts(dir.path()).unwrap();
    assert_eq!(
        cuts.last().map(|c| c.0),
        Some(end),
        "the stop's snapshot is at the committed LSN: {cuts:?}"
    );
    let f = full(&cfg);
    let e = engine();
    let res = recover_with_snapshot(&cfg, dir.path(), &e).unwrap();
    assert_eq!(res.rec.events, 0, "replayed {:?}", res.rec);
    assert_eq!(e.export(), f.state);
}
