//! The writer against the machine's MariaDB: the projection of a log is
//! the same whatever the interleaving of partitions, the split into
//! batches and the batches replayed.

use std::sync::atomic::AtomicU64;

use flashd_engine::{
    order_created_ms, order_id_floor, ActivityId, CancelReason, Event, OrderId, UserId,
};
use mysql_async::Opts;

use crate::clock::now_ms;
use mysql_async::prelude::*;

use super::*;
use crate::schema::migrate;

/// Test fixtures on the machine's MariaDB (127.0.0.1:3306, root).
pub(crate) mod maria {
    use super::*;

    pub fn url(db: &str) -> String {
        let port = std::env::var("FLASHD_MYSQL_PORT").unwrap_or_else(|_| "3306".into());
        format!("mysql://root@127.0.0.1:{port}/{db}")
    }

    /// Fresh, uniquely named shard databases, migrated.
    pub async fn shards(tag: &str, n: usize) -> Vec<String> {
        let uniq = format!(
            "{}_{}_{}",
            std::process::id(),
            now_ms() % 1_000_000_000,
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let urls: Vec<String> = (0..n)
            .map(|i| url(&format!("flashd_t_{tag}_{uniq}_{i}")))
            .collect();
        migrate(&urls).await.expect("migrate");
        urls
    }

    static NEXT: AtomicU64 = AtomicU64::new(0);

    pub async fn drop_all(urls: &[String]) {
        for u in urls {
            let opts = Opts::from_url(u).unwrap();
            let db = opts.db_name().unwrap().to_string();
            let mut c = mysql_async::Conn::new(opts).await.unwrap();
            c.query_drop(format!("DROP DATABASE IF EXISTS `{db}`"))
                .await
                .unwrap();
            let _ = c.disconnect().await;
        }
    }

    pub fn writer(urls: &[String], topic: &str) -> Writer {
        Writer::new(
            urls.to_vec(),
            urls.iter()
                .map(|u| Pool::new(Opts::from_url(u).unwrap()))
                .collect(),
            Arc::new(SinkStats::new(urls.len())),
            Some(topic.into()),
        )
    }

    /// Activity rows and order rows (every shard, every month), sorted:
    /// what a reader of the projection sees.
    pub async fn state(urls: &[String]) -> (Vec<String>, Vec<String>) {
        let mut acts = Vec::new();
        let mut orders = Vec::new();
        for (i, u) in urls.iter().enumerate() {
            let mut c = mysql_async::Conn::new(Opts::from_url(u).unwrap())
                .await
                .unwrap();
            if i == 0 {
                let rows: Vec<(u32, String, i64, i64, i64, i64, i64)> = c
                    .query("SELECT id, name, stock, remaining, reserved, sold, void FROM activities ORDER BY id")
                    .await
                    .unwrap();
                acts.extend(rows.into_iter().map(|r| format!("{r:?}")));
            }
            let tables: Vec<String> = c
                .query("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME LIKE 'orders\\_2%'")
                .await
                .unwrap();
            for t in tables {
                let rows: Vec<(u64, u32, u64, u32, u64, String, String)> = c
                    .query(format!("SELECT order_id, activity_id, user_id, quantity, amount_cents, request_id, status FROM {t}"))
                    .await
                    .unwrap();
                orders.extend(rows.into_iter().map(|r| format!("{r:?}")));
            }
            let _ = c.disconnect().await;
        }
        orders.sort();
        (acts, orders)
    }
}

fn oid(n: u64) -> OrderId {
    order_id_floor(now_ms()) | n
}

fn sale(id: ActivityId, stock: u64, name: &str) -> Event {
    Event::ActivityCreated {
        id,
        sku_id: format!("SKU-{id}"),
        name: name.into(),
        price_cents: 100,
        stock,
        start_at: 0,
        end_at: u64::MAX / 2,
        per_user_limit: 5,
        created_at: 1,
    }
}

fn created(o: OrderId, a: ActivityId, user: UserId, q: u32) -> Event {
    Event::OrderCreated {
        order_id: o,
        activity_id: a,
        user_id: user,
        quantity: q,
        amount_cents: 100 * q as u64,
        request_id: format!("req-{user}").into(),
        created_at: order_created_ms(o),
        expires_at: order_created_ms(o) + 60_000,
    }
}

fn paid(o: OrderId, a: ActivityId, user: UserId, q: u32) -> Event {
    Event::OrderPaid {
        order_id: o,
        activity_id: a,
        user_id: user,
        quantity: q,
        at: order_created_ms(o) + 5,
    }
}

fn rec(partition: i32, offset: i64, group: u64, lsn: u64, rec: TopicRecord) -> Rec {
    Rec {
        topic: "t".into(),
        partition,
        offset,
        group,
        lsn,
        rec,
    }
}

/// Two partitions' streams: sale 1 on partition 0 with a failed group
/// whose order lands again after its abort (a replaced producer's
/// request); sale 2 on partition 1 with an order logged before its
/// sale's creation (issue 14 point 3) and a cancel undone by an abort
/// after it arrived.
fn streams() -> (Vec<Rec>, Vec<Rec>, [OrderId; 7]) {
    let o = [oid(1), oid(2), oid(3), oid(4), oid(5), oid(6), oid(7)];
    let ev = |e: Event| TopicRecord::Event(e);
    let cancel5 = Event::OrderCancelled {
        order_id: o[4],
        activity_id: 2,
        user_id: 15,
        quantity: 1,
        reason: CancelReason::User,
        at: order_created_ms(o[4]) + 9,
    };
    // Groups (commits): 0..2, 2..4, 4..6; 6..8 failed, its retry
    // (two aborts and o3) committed 6..11; then 11..12.
    let p0 = vec![
        rec(0, 0, 0, 0, ev(sale(1, 10, "Phone \u{1F4F1}"))),
        rec(0, 1, 2, 2, ev(created(o[0], 1, 11, 2))),
        rec(0, 2, 4, 5, ev(paid(o[0], 1, 11, 2))),
        rec(
            0,
            3,
            6,
            8,
            TopicRecord::Abort(Abort {
                covers: 6..8,
                events: vec![(6, created(o[1], 1, 12, 1))],
            }),
        ),
        // The failed group's order, landing after its abort.
        rec(0, 4, 6, 6, ev(created(o[1], 1, 12, 1))),
        rec(0, 5, 6, 10, ev(created(o[2], 1, 13, 1))),
        // A restart after group 12 failed with no abort written: the
        // next group is 13, and group 12's order lands behind it.
        rec(0, 6, 13, 13, ev(created(o[5], 1, 16, 1))),
        rec(0, 7, 12, 12, ev(created(o[6], 1, 17, 1))),
    ];
    let p1 = vec![
        rec(1, 0, 0, 1, ev(created(o[3], 2, 14, 3))),
        rec(1, 1, 2, 3, ev(sale(2, 5, "Tablet"))),
        rec(1, 2, 4, 4, ev(created(o[4], 2, 15, 1))),
        rec(1, 3, 6, 7, ev(cancel5.clone())),
        rec(
            1,
            4,
            6,
            9,
            TopicRecord::Abort(Abort {
                covers: 6..8,
                events: vec![(7, cancel5.clone())],
            }),
        ),
        rec(1, 5, 11, 11, ev(paid(o[3], 2, 14, 3))),
        // The failed cancel again (a retried request of the replaced
        // producer), behind a later group.
        rec(1, 6, 6, 7, ev(cancel5)),
    ];
    (p0, p1, o)
}

/// A tiny deterministic generator (no dependency for a shuffle).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

#[test]
fn projection_is_the_same_for_every_interleaving_split_and_replay() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (p0, p1, o) = streams();
        let mut first: Option<(Vec<String>, Vec<String>)> = None;
        for seed in 0..6u64 {
            let mut g = Lcg(seed);
            // Merge the partitions in a seeded order (each keeps its
            // own), split into batches of 1..=4, each batch written
            // twice with a random prefix replayed (a crash before the
            // offsets were committed).
            let (mut i, mut j) = (0, 0);
            let mut merged = Vec::new();
            while i < p0.len() || j < p1.len() {
                let take0 = j == p1.len() || (i < p0.len() && g.next(2) == 0);
                if take0 {
                    merged.push(p0[i].clone());
                    i += 1;
                } else {
                    merged.push(p1[j].clone());
                    j += 1;
                }
            }
            let urls = maria::shards("proj", 2).await;
            let mut w = maria::writer(&urls, "t");
            let mut at = 0;
            while at < merged.len() {
                let n = (1 + g.next(4) as usize).min(merged.len() - at);
                let batch = &merged[at..at + n];
                let replay = g.next(n as u64 + 1) as usize;
                w.write(batch).await.expect("write");
                w.write(&batch[..replay]).await.expect("replay");
                at += n;
            }
            let st = maria::state(&urls).await;
            maria::drop_all(&urls).await;
            // What the engine holds after this log.
            assert_eq!(
                st.0,
                vec![
                    "(1, \"Phone \u{1F4F1}\", 10, 6, 2, 2, 0)".to_string(),
                    "(2, \"Tablet\", 5, 1, 1, 3, 0)".to_string(),
                ],
                "seed {seed}"
            );
            let status = |id: OrderId| {
                st.1.iter()
                    .find(|r| r.starts_with(&format!("({id},")))
                    .map(|r| {
                        r.rsplit(", ")
                            .next()
                            .unwrap()
                            .trim_end_matches(')')
                            .to_string()
                    })
            };
            assert_eq!(status(o[0]).as_deref(), Some("\"PAID\""), "seed {seed}");
            assert_eq!(status(o[1]), None, "seed {seed}: a voided order has a row");
            assert_eq!(status(o[2]).as_deref(), Some("\"CREATED\""), "seed {seed}");
            assert_eq!(status(o[3]).as_deref(), Some("\"PAID\""), "seed {seed}");
            assert_eq!(status(o[4]).as_deref(), Some("\"CREATED\""), "seed {seed}");
            assert_eq!(status(o[5]).as_deref(), Some("\"CREATED\""), "seed {seed}");
            assert_eq!(status(o[6]), None, "seed {seed}: a late order has a row");
            assert_eq!(st.1.len(), 5, "seed {seed}: {:?}", st.1);
            match &first {
                None => first = Some(st),
                Some(f) => assert_eq!(f, &st, "seed {seed}"),
            }
        }
    });
}

/// A creation whose write failed before it reached the topic leaves only
/// its abort (which names the sale): MySQL gets no row for a sale no one
/// created, whether the abort comes first or after the sale's own later
/// traffic; a creation that did land and was then aborted is a void row.
#[test]
fn an_abort_of_a_creation_that_never_landed_makes_no_sale() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ev = |e: Event| TopicRecord::Event(e);
        let abort = |covers: std::ops::Range<u64>, events: Vec<(u64, Event)>| {
            TopicRecord::Abort(Abort { covers, events })
        };
        let o = oid(1);
        let log = [
            // Group 0..1 failed: sale 1's creation never landed.
            rec(0, 0, 0, 1, abort(0..1, vec![(0, sale(1, 10, "Ghost"))])),
            // Sale 2 is created (id 2: ids are not reused) and sold.
            rec(0, 1, 1, 1, ev(sale(2, 5, "Real"))),
            rec(0, 2, 2, 2, ev(created(o, 2, 11, 1))),
            // Group 3..4 landed, then was aborted: a void row.
            rec(0, 3, 3, 3, ev(sale(3, 7, "Undone"))),
            rec(0, 4, 3, 4, abort(3..4, vec![(3, sale(3, 7, "Undone"))])),
        ];
        for split in [1, 2, 5] {
            let urls = maria::shards("ghost", 2).await;
            let mut w = maria::writer(&urls, "t");
            for batch in log.chunks(split) {
                w.write(batch).await.expect("write");
                // Replayed whole (a crash before the offsets' commit).
                w.write(batch).await.expect("replay");
            }
            let st = maria::state(&urls).await;
            maria::drop_all(&urls).await;
            assert_eq!(
                st.0,
                vec![
                    "(2, \"Real\", 5, 4, 1, 0, 0)".to_string(),
                    "(3, \"Undone\", 7, 7, 0, 0, 1)".to_string(),
                ],
                "batches of {split}"
            );
        }
    });
}
