//! The Kafka log's failure path against librdkafka's mock cluster (and the sink against the machine's MariaDB): failed groups, late records, rollback, streaming recovery.

mod common;
use common::*;

use std::sync::Arc;
use std::time::{Duration, Instant};

use flashd_engine::{order_created_ms, Event, OrderId};
use flashd_kafka::{
    encode_group_events, recover_topic, KafkaConfig, KafkaLog, KafkaRecovered, LogRecord,
};
use flashd_log::OrderLog;
use flashd_sink::{Sink, SinkConfig};
use rdkafka::config::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

fn sale(id: u32, stock: u64) -> Event {
    Event::ActivityCreated {
        id,
        sku_id: format!("SKU-{id}"),
        name: format!("Sale {id}"),
        price_cents: 100,
        stock,
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

fn replay(cfg: &KafkaConfig) -> (KafkaRecovered, Vec<(u64, LogRecord)>) {
    let mut seen = Vec::new();
    let out = recover_topic(cfg, &mut |lsn, r| {
        seen.push((lsn, r));
        Ok(())
    })
    .unwrap();
    (out, seen)
}

fn events_of(seen: &[(u64, LogRecord)]) -> Vec<(u64, Event)> {
    seen.iter()
        .filter_map(|(l, r)| match r {
            LogRecord::Event(e) => Some((*l, e.clone())),
            LogRecord::Abort(_) => None,
        })
        .collect()
}

/// A record of a failed group that the broker appends after the abort
/// that voids it (a produce request of the replaced producer processed
/// late) is never applied: not by recovery, not by the sink.
#[test]
fn a_late_record_of_a_failed_group_is_applied_by_neither_recovery_nor_the_sink() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("orders", 1, 1).unwrap();
    let cfg = config(&mock, "orders");
    let (o1, o2, o3) = (oid(1), oid(2), oid(4));
    let mut log = KafkaLog::open(cfg.clone(), 0).unwrap();
    // LSNs 0, 1.
    commit_until_ok(&mut log, &[sale(1, 10), created(o1, 1, 7)]);
    // The broker goes away with o2 (LSN 2) in flight: the commit fails,
    // the rollback cannot reach it either.
    mock.broker_down(-1).unwrap();
    log.append(&[created(o2, 1, 8)]).unwrap();
    assert!(log.commit().is_err());
    log.rollback().unwrap();
    assert!(
        log.pending_aborts() > 0,
        "an abort was made durable with the broker down"
    );
    mock.broker_up(-1).unwrap();
    // Next group: the abort goes first, then the pay.
    commit_until_ok(&mut log, &[paid(o1, 1, 7)]);
    assert_eq!(log.pending_aborts(), 0);
    // o2's request lands now, behind the abort and the pay (same group),
    // and once more after a later group (as a retried request would).
    let late: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &cfg.brokers)
        .create()
        .unwrap();
    // Written in group 2 (the LSN committed before it), as the first
    // producer wrote it.
    let mut v = Vec::new();
    encode_group_events(2, &[(2, &created(o2, 1, 8))], &mut v);
    let land = |v: &[u8]| {
        late.send(BaseRecord::to("orders").key("1").payload(v))
            .unwrap();
        late.flush(Duration::from_secs(10)).unwrap();
    };
    land(&v);
    commit_until_ok(&mut log, &[created(o3, 1, 9)]);
    land(&v);
    drop(log);

    let (out, seen) = replay(&cfg);
    let evs = events_of(&seen);
    assert!(
        !evs.iter().any(|(_, e)| *e == created(o2, 1, 8)),
        "the voided order was replayed: {evs:?}"
    );
    assert!(evs.windows(2).all(|w| w[0].0 < w[1].0), "{evs:?}");
    assert_eq!(evs.len(), 4, "{evs:?}");
    // Behind its abort in the same group: voided; behind a later group:
    // late (and voided by the abort's range as well).
    assert!(out.voided >= 1, "{out:?}");
    assert_eq!((out.late, out.late_unvoided), (1, 0), "{out:?}");
    assert!(out.aborts >= 1);

    // The sink, reading the same partition in offset order.
    let shards = vec![mysql_url(&unique("late0")), mysql_url(&unique("late1"))];
    rt().block_on(flashd_sink::migrate(&shards)).unwrap();
    let sink = Sink::start(SinkConfig {
        kafka: cfg.clone(),
        group: "sink-late".into(),
        shards: shards.clone(),
        batch_max: 100,
        batch_wait: Duration::from_millis(20),
    })
    .unwrap();
    let stats = Arc::clone(&sink.stats);
    wait_until(Duration::from_secs(60), "sink reads every record", || {
        stats.voided.load(std::sync::atomic::Ordering::Relaxed) >= 2
    });
    sink.stop();
    let mut rows: Vec<(u64, String)> = Vec::new();
    for s in &shards {
        let tables: Vec<String> = query(s, "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME LIKE 'orders\\_2%'");
        for t in tables {
            rows.extend(query::<(u64, String)>(
                s,
                &format!("SELECT order_id, status FROM {t}"),
            ));
        }
    }
    let act: Vec<(i64, i64, i64)> = query(
        &shards[0],
        "SELECT remaining, reserved, sold FROM activities WHERE id = 1",
    );
    for s in &shards {
        drop_db(s);
    }
    assert!(
        rows.iter().all(|(o, st)| *o != o2 || st == "VOID"),
        "phantom order row: {rows:?}"
    );
    assert!(rows.contains(&(o1, "PAID".into())), "{rows:?}");
    assert!(rows.contains(&(o3, "CREATED".into())), "{rows:?}");
    assert_eq!(act, vec![(8, 1, 1)]);
}

/// A rollback leaves its abort in the topic before it returns when the
/// broker answers: nothing of the failed group is left without one.
#[test]
fn rollback_makes_its_abort_durable_before_it_returns() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("orders", 2, 1).unwrap();
    let cfg = config(&mock, "orders");
    let o1 = oid(3);
    let mut log = KafkaLog::open(cfg.clone(), 0).unwrap();
    commit_until_ok(&mut log, &[sale(1, 10)]);
    let before = log.committed_lsn();
    // The broker refuses the next produce request for good.
    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE],
    );
    log.append(&[created(o1, 1, 7)]).unwrap();
    assert!(log.commit().is_err());
    log.rollback().unwrap();
    assert_eq!(log.pending_aborts(), 0);
    // The order (LSN 1) and its abort (LSN 2) are behind us.
    assert_eq!(log.committed_lsn(), before + 2);
    drop(log);
    let (out, seen) = replay(&cfg);
    let aborts: Vec<&Vec<Event>> = seen
        .iter()
        .filter_map(|(_, r)| match r {
            LogRecord::Abort(evs) => Some(evs),
            LogRecord::Event(_) => None,
        })
        .collect();
    assert_eq!(aborts, vec![&vec![created(o1, 1, 7)]]);
    assert_eq!(out.next_lsn, before + 2);
}

/// Recovery merges partitions by LSN while holding only a bounded window
/// of records, whatever the topic's size.
#[test]
fn recovery_merges_interleaved_partitions_in_lsn_order_with_bounded_memory() {
    const PARTITIONS: i32 = 4;
    const ACTIVITIES: u32 = 8;
    const GROUPS: u64 = 250;
    const PER_GROUP: u64 = 40;
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("orders", PARTITIONS, 1).unwrap();
    let cfg = config(&mock, "orders");
    let mut log = KafkaLog::open(cfg.clone(), 0).unwrap();
    let sales: Vec<Event> = (1..=ACTIVITIES).map(|a| sale(a, 1 << 40)).collect();
    commit_until_ok(&mut log, &sales);
    let mut n = 0u64;
    for _ in 0..GROUPS {
        // Each group spans every activity, so partitions interleave.
        let evs: Vec<Event> = (0..PER_GROUP)
            .map(|i| {
                n += 1;
                created(oid(n), (i % ACTIVITIES as u64) as u32 + 1, n)
            })
            .collect();
        commit_until_ok(&mut log, &evs);
    }
    drop(log);
    let total = ACTIVITIES as u64 + GROUPS * PER_GROUP;
    let (out, seen) = replay(&cfg);
    let lsns: Vec<u64> = seen.iter().map(|(l, _)| *l).collect();
    assert!(
        lsns == (0..total).collect::<Vec<_>>(),
        "replayed {} of {total} events ({:?}); first missing: {:?}",
        lsns.len(),
        out,
        (0..total).find(|l| lsns.binary_search(l).is_err())
    );
    assert_eq!(out.events, total);
    assert_eq!(out.next_lsn, total);
    let busy = out.partitions.iter().filter(|n| **n > 0).count();
    assert!(
        busy >= 2,
        "records on {busy} partition(s): {:?}",
        out.partitions
    );
    // The merge holds, per partition, its part of one group and the first
    // message of the next: at most two groups in all.
    let bound = 2 * PER_GROUP as usize;
    assert!(
        out.peak_buffered <= bound,
        "held {} records at once (bound {bound}, topic {total})",
        out.peak_buffered
    );
}

/// Peak resident memory of recovery over a topic of `FLASHD_RSS_EVENTS`
/// events (default 500,000), streamed versus loaded whole and sorted
/// (what recovery did before), both in this process against the same mock
/// cluster. A measurement, not a check: run with `--ignored --nocapture`.
/// The mock keeps about 5 MB per partition, hence 16 partitions.
#[test]
#[ignore]
fn recovery_peak_rss_streamed_versus_loaded_whole() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    let total: u64 = std::env::var("FLASHD_RSS_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500_000);
    const PARTS: i32 = 16;
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("orders", PARTS, 1).unwrap();
    let cfg = config(&mock, "orders");
    let mut log = KafkaLog::open(cfg.clone(), 0).unwrap();
    commit_until_ok(
        &mut log,
        &(1..=32).map(|a| sale(a, 1 << 40)).collect::<Vec<_>>(),
    );
    let mut n = 0u64;
    while n < total {
        let evs: Vec<Event> = (0..1000)
            .map(|i| {
                n += 1;
                created(oid(n), (i % 32) + 1, n)
            })
            .collect();
        commit_until_ok(&mut log, &evs);
    }
    drop(log);
    let kib = |key: &str| -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap()
    };
    // Writing 5 resets the peak (VmHWM) to the current RSS.
    let reset = || std::fs::write("/proc/self/clear_refs", "5").unwrap();
    reset();
    let base = kib("VmRSS:");
    let t0 = Instant::now();
    let (out, _) = (recover_topic(&cfg, &mut |_, _| Ok(())).unwrap(), ());
    let streamed = kib("VmHWM:") - base;
    let streamed_s = t0.elapsed().as_secs_f64();
    assert_eq!(out.events, total + 32, "{out:?}");
    reset();
    let base = kib("VmRSS:");
    let t0 = Instant::now();
    // The former recovery: one consumer on every partition, every record
    // decoded into one Vec, sorted by LSN.
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &cfg.brokers)
        .set("group.id", "old-recovery")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    let mut ends = std::collections::BTreeMap::new();
    for p in 0..PARTS {
        let (lo, hi) = c
            .fetch_watermarks("orders", p, Duration::from_secs(10))
            .unwrap();
        if hi > lo {
            ends.insert(p, hi);
            tpl.add_partition_offset("orders", p, rdkafka::Offset::Offset(lo))
                .unwrap();
        }
    }
    c.assign(&tpl).unwrap();
    let mut records = Vec::new();
    while !ends.is_empty() {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            records.extend(flashd_kafka::decode_records(m.payload().unwrap()).unwrap());
            if ends
                .get(&m.partition())
                .is_some_and(|h| m.offset() + 1 >= *h)
            {
                ends.remove(&m.partition());
            }
        }
    }
    records.sort_by_key(|r| r.0);
    let whole = kib("VmHWM:") - base;
    let whole_s = t0.elapsed().as_secs_f64();
    assert_eq!(records.len() as u64, total + 32);
    println!(
        "recovery of {} events: streamed peak +{} MiB in {streamed_s:.1} s (held at most {} records); loaded whole +{} MiB in {whole_s:.1} s",
        total + 32,
        streamed / 1024,
        out.peak_buffered,
        whole / 1024
    );
}
