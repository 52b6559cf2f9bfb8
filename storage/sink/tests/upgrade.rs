//! `migrate` on shards written by the single-writer sink (rows guarded by
//! LSNs, `order_events` keyed by LSN, no copies; librdkafka's mock cluster
//! and the machine's MariaDB): the layout is upgraded in place, what the
//! old rows say is kept, and moves that arrive afterwards are counted as
//! if the sink had always kept copies.

mod common;
use common::*;

use std::time::Duration;

use flashd_engine::{order_created_ms, Event, OrderId};
use flashd_kafka::{KafkaConfig, KafkaLog};
use flashd_log::OrderLog;
use flashd_sink::{migrate, order_table, Sink, SinkConfig};
use rdkafka::mocking::MockCluster;

/// The single-writer sink's tables, as it made them.
const LEGACY: &[&str] = &[
    "CREATE TABLE activities (id INT UNSIGNED NOT NULL PRIMARY KEY, sku_id VARCHAR(255) NOT NULL, name VARCHAR(255) NOT NULL, price_cents BIGINT UNSIGNED NOT NULL, stock BIGINT NOT NULL, remaining BIGINT NOT NULL, reserved BIGINT NOT NULL, sold BIGINT NOT NULL, start_at BIGINT UNSIGNED NOT NULL, end_at BIGINT UNSIGNED NOT NULL, per_user_limit INT UNSIGNED NOT NULL, created_at BIGINT UNSIGNED NOT NULL, void TINYINT NOT NULL DEFAULT 0, version BIGINT UNSIGNED NOT NULL) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
    "CREATE TABLE orders_template (order_id BIGINT UNSIGNED NOT NULL PRIMARY KEY, activity_id INT UNSIGNED NOT NULL, user_id BIGINT UNSIGNED NOT NULL, quantity INT UNSIGNED NOT NULL, amount_cents BIGINT UNSIGNED NOT NULL DEFAULT 0, request_id VARCHAR(128) NOT NULL DEFAULT '', status VARCHAR(12) NOT NULL, created_at BIGINT UNSIGNED NOT NULL, expires_at BIGINT UNSIGNED NOT NULL DEFAULT 0, updated_at BIGINT UNSIGNED NOT NULL, version BIGINT UNSIGNED NOT NULL, KEY by_user (user_id), KEY by_activity (activity_id, status)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
    "CREATE TABLE order_events (lsn BIGINT UNSIGNED NOT NULL, seq INT UNSIGNED NOT NULL, order_id BIGINT UNSIGNED NOT NULL, activity_id INT UNSIGNED NOT NULL, user_id BIGINT UNSIGNED NOT NULL, kind VARCHAR(12) NOT NULL, reason VARCHAR(12) NOT NULL DEFAULT '', quantity INT UNSIGNED NOT NULL, at BIGINT UNSIGNED NOT NULL, PRIMARY KEY (lsn, seq), KEY by_order (order_id)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
    "CREATE TABLE flashd_aborts (abort_lsn BIGINT UNSIGNED NOT NULL PRIMARY KEY, from_lsn BIGINT UNSIGNED NOT NULL, to_lsn BIGINT UNSIGNED NOT NULL, KEY by_end (to_lsn)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
];

fn paid(o: OrderId, user: u64, q: u32) -> Event {
    Event::OrderPaid {
        order_id: o,
        activity_id: 1,
        user_id: user,
        quantity: q,
        at: order_created_ms(o) + 5,
    }
}

/// What the upgrade made, in one line per table.
fn tables(shard: &str, table: &str) -> Vec<String> {
    let mut out: Vec<String> = query::<(u64, u8, String, u64, u8)>(
        shard,
        "SELECT order_id, kind, topic, lsn, voided FROM order_copies",
    )
    .into_iter()
    .map(|r| format!("copy {r:?}"))
    .collect();
    out.extend(
        query::<(u32, i64, i64, i64)>(shard, "SELECT * FROM sale_counters")
            .into_iter()
            .map(|r| format!("held {r:?}")),
    );
    out.extend(
        query::<(u64, String, String, u64)>(
            shard,
            "SELECT order_id, kind, topic, lsn FROM order_events",
        )
        .into_iter()
        .map(|r| format!("event {r:?}")),
    );
    out.extend(
        query::<(u64, String, u64)>(
            shard,
            &format!("SELECT order_id, status, version FROM {table}"),
        )
        .into_iter()
        .map(|r| format!("order {r:?}")),
    );
    out.sort();
    out
}

#[test]
fn a_single_writer_shard_is_upgraded_in_place_and_counts_on_from_its_rows() {
    let name = unique("upgrade");
    let shard = mysql_url(&name);
    exec(&mysql_url(""), &format!("CREATE DATABASE `{name}`"));
    for ddl in LEGACY {
        exec(&shard, ddl);
    }
    let o: Vec<OrderId> = (1..=4).map(oid).collect();
    let table = order_table(o[0]);
    exec(
        &shard,
        &format!("CREATE TABLE {table} LIKE orders_template"),
    );
    // Sale 1 (10 units): o1 CREATED (2), o2 PAID (1), o3 CANCELLED (3),
    // o4 VOID (1, its creation aborted); counters as the old sink folded.
    exec(
        &shard,
        "INSERT INTO activities VALUES (1, 'S', 'Sale', 100, 10, 7, 2, 1, 0, 99, 5, 1, 0, 12)",
    );
    for (i, (status, q, v)) in [
        ("CREATED", 2, 3),
        ("PAID", 1, 6),
        ("CANCELLED", 3, 7),
        ("VOID", 1, 9),
    ]
    .iter()
    .enumerate()
    {
        exec(
            &shard,
            &format!(
                "INSERT INTO {table} VALUES ({}, 1, {}, {q}, 100, 'r{i}', '{status}', {}, 0, 0, {v})",
                o[i],
                10 + i,
                order_created_ms(o[i])
            ),
        );
    }
    for (lsn, seq, i, kind) in [
        (1, 0, 0, "created"),
        (2, 0, 1, "created"),
        (3, 0, 2, "created"),
        (6, 0, 1, "paid"),
        (7, 0, 2, "cancelled"),
        (8, 0, 3, "created"),
        (9, 0, 3, "reverted"),
    ] {
        exec(
            &shard,
            &format!(
                "INSERT INTO order_events VALUES ({lsn}, {seq}, {}, 1, {}, '{kind}', '', 1, {lsn})",
                o[i],
                10 + i
            ),
        );
    }
    exec(&shard, "INSERT INTO flashd_aborts VALUES (9, 8, 9)");

    rt().block_on(migrate(std::slice::from_ref(&shard)))
        .unwrap();
    let once = tables(&shard, &table);
    rt().block_on(migrate(std::slice::from_ref(&shard)))
        .unwrap();
    assert_eq!(
        tables(&shard, &table),
        once,
        "a second migrate changed rows"
    );
    let (a, b, c, d) = (o[0], o[1], o[2], o[3]);
    let mut want = vec![
        // One copy per standing move, of no topic, at the row's old
        // version (the LSN of its last event).
        format!("copy ({a}, 1, \"\", 3, 0)"),
        format!("copy ({b}, 1, \"\", 6, 0)"),
        format!("copy ({b}, 2, \"\", 6, 0)"),
        format!("copy ({c}, 1, \"\", 7, 0)"),
        format!("copy ({c}, 3, \"\", 7, 0)"),
        "held (1, -3, 2, 1)".to_string(),
        format!("event ({a}, \"created\", \"\", 1)"),
        format!("event ({b}, \"created\", \"\", 2)"),
        format!("event ({b}, \"paid\", \"\", 6)"),
        format!("event ({c}, \"cancelled\", \"\", 7)"),
        format!("event ({c}, \"created\", \"\", 3)"),
        format!("order ({a}, \"CREATED\", 1)"),
        format!("order ({b}, \"PAID\", 2)"),
        format!("order ({c}, \"CANCELLED\", 2)"),
        format!("order ({d}, \"VOID\", 0)"),
    ];
    want.sort();
    assert_eq!(once, want);
    let old: Vec<u64> = query(&shard, "SELECT COUNT(*) FROM order_events_lsn");
    assert_eq!(old, vec![7], "the old events are kept");
    let version: Vec<u64> = query(&shard, "SELECT COUNT(*) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'activities' AND COLUMN_NAME = 'version'");
    assert_eq!(version, vec![0]);

    // The sink goes on from there: o1 is paid.
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("orders", 1, 1).unwrap();
    let cfg = KafkaConfig {
        brokers: mock.bootstrap_servers(),
        topic: "orders".into(),
        timeout: Duration::from_secs(5),
        properties: Vec::new(),
    };
    let mut log = KafkaLog::open(cfg.clone(), 20).unwrap();
    log.append(&[paid(a, 10, 2)]).unwrap();
    log.commit().unwrap();
    drop(log);
    let sink = Sink::start(SinkConfig {
        kafka: cfg,
        group: "sink".into(),
        shards: vec![shard.clone()],
        batch_max: 100,
        batch_wait: Duration::from_millis(20),
    })
    .unwrap();
    let acts = || {
        query::<(i64, i64, i64, i64)>(
            &shard,
            "SELECT stock, remaining, reserved, sold FROM activities",
        )
    };
    wait_until(Duration::from_secs(30), "the pay is counted", || {
        acts() == vec![(10, 7, 0, 3)]
    });
    sink.stop();
    let aborts: Vec<(String, u64)> = query(&shard, "SELECT topic, abort_lsn FROM flashd_aborts");
    let status: Vec<String> = query(
        &shard,
        &format!("SELECT status FROM {table} WHERE order_id = {a}"),
    );
    exec(&shard, &format!("DROP DATABASE `{name}`"));
    assert_eq!(
        aborts,
        vec![("orders".to_string(), 9)],
        "the old ranges are the one topic's"
    );
    assert_eq!(status, vec!["PAID".to_string()]);
}
