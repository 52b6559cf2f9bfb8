//! The sink against write errors that would recur forever (librdkafka's mock cluster, the machine's MariaDB): a poison record is parked with where it came from and the sink moves on; 4-byte UTF-8 is no poison.

mod common;
use common::*;

use std::sync::atomic::Ordering;
use std::time::Duration;

use flashd_engine::{order_created_ms, Event, OrderId};
use flashd_kafka::{decode_records, KafkaConfig, KafkaLog, TopicRecord};
use flashd_log::OrderLog;
use flashd_sink::{migrate, Sink, SinkConfig};
use rdkafka::mocking::MockCluster;

fn sale(id: u32, name: &str) -> Event {
    Event::ActivityCreated {
        id,
        sku_id: format!("SKU-{id}"),
        name: name.into(),
        price_cents: 100,
        stock: 10,
        start_at: 0,
        end_at: u64::MAX / 2,
        per_user_limit: 5,
        created_at: 1,
    }
}

fn created(o: OrderId, a: u32, user: u64, request_id: &str) -> Event {
    Event::OrderCreated {
        order_id: o,
        activity_id: a,
        user_id: user,
        quantity: 1,
        amount_cents: 100,
        request_id: request_id.into(),
        created_at: order_created_ms(o),
        expires_at: order_created_ms(o) + 60_000,
    }
}

/// Write `groups` to a fresh one-partition topic on a mock cluster and
/// start a sink on it into `shards`.
fn sink_over(
    mock: &MockCluster<'_, impl rdkafka::ClientContext>,
    groups: &[Vec<Event>],
    shards: &[String],
) -> Sink {
    mock.create_topic("orders", 1, 1).unwrap();
    let cfg = KafkaConfig {
        brokers: mock.bootstrap_servers(),
        topic: "orders".into(),
        timeout: Duration::from_secs(5),
        properties: Vec::new(),
    };
    let mut log = KafkaLog::open(cfg.clone(), 0).unwrap();
    for g in groups {
        log.append(g).unwrap();
        log.commit().unwrap();
    }
    drop(log);
    Sink::start(SinkConfig {
        kafka: cfg,
        group: "sink".into(),
        shards: shards.to_vec(),
        batch_max: 100,
        batch_wait: Duration::from_millis(20),
    })
    .unwrap()
}

fn order_status(url: &str, o: OrderId) -> Option<String> {
    let tables: Vec<String> = query(url, "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME LIKE 'orders\\_2%'");
    tables.iter().find_map(|t| {
        query::<String>(url, &format!("SELECT status FROM {t} WHERE order_id = {o}")).pop()
    })
}

/// A record MySQL refuses for good (a name longer than the column of a
/// hand-narrowed schema) is parked in flashd_poison with its partition,
/// offset, LSN, bytes and error, counted, and the orders behind it land.
#[test]
fn a_record_that_always_fails_is_parked_and_the_sink_moves_on() {
    let shard = mysql_url(&unique("poison"));
    rt().block_on(migrate(std::slice::from_ref(&shard)))
        .unwrap();
    exec(
        &shard,
        "ALTER TABLE activities MODIFY name VARCHAR(4) NOT NULL",
    );
    let (o1, o2) = (oid(1), oid(2));
    let mock = MockCluster::new(1).unwrap();
    let sink = sink_over(
        &mock,
        &[
            vec![sale(1, "Phone X"), created(o1, 1, 7, "a")],
            vec![created(o2, 1, 8, "b")],
        ],
        std::slice::from_ref(&shard),
    );
    let stats = sink.stats.clone();
    wait_until(
        Duration::from_secs(60),
        "the sink parks the sale and writes both orders",
        || stats.poison.load(Ordering::Relaxed) == 1 && order_status(&shard, o2).is_some(),
    );
    sink.stop();
    let parked: Vec<(i32, i64, u64, String, Vec<u8>)> = query(
        &shard,
        "SELECT partition_id, record_offset, lsn, error, payload FROM flashd_poison",
    );
    let orders = (order_status(&shard, o1), order_status(&shard, o2));
    exec(
        &shard,
        &format!("DROP DATABASE `{}`", shard.rsplit('/').next().unwrap()),
    );
    assert_eq!(parked.len(), 1, "{parked:?}");
    let (partition, offset, lsn, error, payload) = &parked[0];
    assert_eq!((*partition, *offset, *lsn), (0, 0, 0));
    assert!(error.contains("Data too long"), "{error}");
    assert_eq!(
        decode_records(payload).unwrap(),
        vec![(0, TopicRecord::Event(sale(1, "Phone X")))]
    );
    assert_eq!(orders, (Some("CREATED".into()), Some("CREATED".into())));
}

/// A database made in a 3-byte character set (what an older schema and a
/// server default of utf8 give) takes 4-byte UTF-8 after `migrate`: it is
/// no poison.
#[test]
fn four_byte_utf8_reaches_a_database_made_in_utf8() {
    let name = unique("utf8");
    let shard = mysql_url(&name);
    exec(
        &mysql_url(""),
        &format!("CREATE DATABASE `{name}` CHARACTER SET utf8"),
    );
    rt().block_on(migrate(std::slice::from_ref(&shard)))
        .unwrap();
    let o1 = oid(3);
    let mock = MockCluster::new(1).unwrap();
    let sink = sink_over(
        &mock,
        &[vec![
            sale(1, "Phone \u{1F4F1}"),
            created(o1, 1, 7, "req-\u{1F600}"),
        ]],
        std::slice::from_ref(&shard),
    );
    let stats = sink.stats.clone();
    wait_until(Duration::from_secs(30), "the order reaches MySQL", || {
        order_status(&shard, o1).is_some()
    });
    sink.stop();
    let names: Vec<String> = query(&shard, "SELECT name FROM activities WHERE id = 1");
    let tables: Vec<String> = query(&shard, "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME LIKE 'orders\\_2%'");
    let rids: Vec<String> = tables
        .iter()
        .flat_map(|t| query::<String>(&shard, &format!("SELECT request_id FROM {t}")))
        .collect();
    exec(&shard, &format!("DROP DATABASE `{name}`"));
    assert_eq!(names, vec!["Phone \u{1F4F1}".to_string()]);
    assert_eq!(rids, vec!["req-\u{1F600}".to_string()]);
    assert_eq!(stats.poison.load(Ordering::Relaxed), 0);
}
