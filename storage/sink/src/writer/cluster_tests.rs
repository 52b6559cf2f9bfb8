//! The writer over several node topics (cluster mode) against the
//! machine's MariaDB: duplicate creations, moves logged by a node other
//! than the creator's, aborts in one topic, read in many interleavings,
//! batch splits and replays, always give the same rows, equal to folding
//! the de-duplicated events that stand.

use std::collections::{BTreeMap, BTreeSet};

use flashd_engine::fold::effect;
use flashd_engine::{order_created_ms, order_id_floor, ActivityId, CancelReason, Counters, Event};
use flashd_engine::{OrderId, UserId};
use mysql_async::prelude::*;
use mysql_async::Opts;

use super::tests::maria;
use super::*;
use crate::clock::now_ms;
use crate::rows::{ActivityRow, OrderRow};

const A: &str = "t.node1";
const B: &str = "t.node2";
const C: &str = "t.node3";

fn sale(id: ActivityId, stock: u64) -> Event {
    Event::ActivityCreated {
        id,
        sku_id: format!("SKU-{id}"),
        name: format!("Sale {id}"),
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

fn cancelled(o: OrderId, a: ActivityId, user: UserId, q: u32, reason: CancelReason) -> Event {
    Event::OrderCancelled {
        order_id: o,
        activity_id: a,
        user_id: user,
        quantity: q,
        reason,
        at: order_created_ms(o) + 7,
    }
}

/// A node's topic as its single writer fills it: one group per commit.
struct Topic {
    name: &'static str,
    next: u64,
    recs: Vec<Rec>,
    /// (LSN, event) of every event logged (voided ones too), for the
    /// reference fold.
    logged: Vec<(u64, Event)>,
    voided: Vec<std::ops::Range<u64>>,
}

impl Topic {
    fn new(name: &'static str) -> Topic {
        Topic {
            name,
            next: 0,
            recs: Vec::new(),
            logged: Vec::new(),
            voided: Vec::new(),
        }
    }

    fn push(&mut self, group: u64, lsn: u64, rec: TopicRecord) {
        let offset = self.recs.len() as i64;
        self.recs.push(Rec {
            topic: self.name.into(),
            partition: 0,
            offset,
            group,
            lsn,
            rec,
        });
    }

    /// A group that commits.
    fn commit(&mut self, evs: &[Event]) -> u64 {
        let group = self.next;
        for ev in evs {
            self.push(group, self.next, TopicRecord::Event(ev.clone()));
            self.logged.push((self.next, ev.clone()));
            self.next += 1;
        }
        group
    }

    /// A group whose commit failed after its records reached the topic:
    /// the next group starts with its abort.
    fn fail(&mut self, evs: &[Event]) {
        let from = self.next;
        let mut listed = Vec::new();
        for ev in evs {
            self.push(from, self.next, TopicRecord::Event(ev.clone()));
            listed.push((self.next, ev.clone()));
            self.logged.push((self.next, ev.clone()));
            self.next += 1;
        }
        let covers = from..self.next;
        let abort = self.next;
        // An abort's group is the failed group's (`encode_abort`).
        self.push(
            from,
            abort,
            TopicRecord::Abort(Abort {
                covers: covers.clone(),
                events: listed,
            }),
        );
        self.voided.push(covers);
        self.next += 1;
    }

    /// What stands of it: its events outside the voided ranges.
    fn standing(&self) -> impl Iterator<Item = &Event> {
        self.logged
            .iter()
            .filter(|(l, _)| !self.voided.iter().any(|r| r.contains(l)))
            .map(|(_, e)| e)
    }
}

/// Three nodes serving sales 1 and 2. What each order ends as is in the
/// comment; the reference fold below derives the counters on its own.
fn cluster() -> (Vec<Topic>, BTreeMap<OrderId, &'static str>) {
    let f = order_id_floor(now_ms());
    let o: Vec<OrderId> = (1..=8).map(|n| f | n).collect();
    let (mut a, mut b, mut c) = (Topic::new(A), Topic::new(B), Topic::new(C));
    for t in [&mut a, &mut b, &mut c] {
        t.commit(&[sale(1, 10)]);
    }
    a.commit(&[sale(2, 5)]);
    b.commit(&[sale(2, 5)]);
    // o1: decided on A, paid on B (B logs its copy of the creation first).
    a.commit(&[created(o[0], 1, 11, 2)]);
    b.commit(&[created(o[0], 1, 11, 2), paid(o[0], 1, 11, 2)]);
    // o2: decided on A, cancelled by its buyer on C.
    a.commit(&[created(o[1], 1, 12, 1)]);
    c.commit(&[created(o[1], 1, 12, 1)]);
    c.commit(&[cancelled(o[1], 1, 12, 1, CancelReason::User)]);
    // o3: decided on B, timed out by A's sweeper.
    b.commit(&[created(o[2], 1, 13, 3)]);
    a.commit(&[
        created(o[2], 1, 13, 3),
        cancelled(o[2], 1, 13, 3, CancelReason::Timeout),
    ]);
    // o4: decided on C; a retry completed on A, logged twice there (A's
    // own replay of the request).
    c.commit(&[created(o[3], 1, 14, 1)]);
    a.commit(&[created(o[3], 1, 14, 1)]);
    a.commit(&[created(o[3], 1, 14, 1)]);
    // o5: B's group with it fails (aborted); the retry lands on A.
    b.fail(&[created(o[4], 1, 15, 2)]);
    a.commit(&[created(o[4], 1, 15, 2)]);
    // o6: C's pay of it fails (aborted): it stays CREATED.
    c.commit(&[created(o[5], 1, 16, 1)]);
    c.fail(&[paid(o[5], 1, 16, 1)]);
    // o7: A's group with it fails, and no retry comes: VOID.
    a.fail(&[created(o[6], 1, 17, 1)]);
    // C's creations of sale 2 (which A and B also logged) and of sale 3
    // (logged nowhere else) fail: sale 2 stands, sale 3 is void.
    c.fail(&[sale(2, 5)]);
    c.fail(&[sale(3, 4)]);
    // o8 (sale 2): decided on B, paid on A.
    b.commit(&[created(o[7], 2, 18, 1)]);
    a.commit(&[created(o[7], 2, 18, 1), paid(o[7], 2, 18, 1)]);
    let expect = BTreeMap::from([
        (o[0], "PAID"),
        (o[1], "CANCELLED"),
        (o[2], "CANCELLED"),
        (o[3], "CREATED"),
        (o[4], "CREATED"),
        (o[5], "CREATED"),
        (o[6], "VOID"),
        (o[7], "PAID"),
    ]);
    (vec![a, b, c], expect)
}

/// The engine's fold of every move that stands in some topic, each once:
/// per sale, `(stock, remaining, reserved, sold)`.
fn reference(topics: &[Topic]) -> BTreeMap<ActivityId, (i64, i64, i64, i64)> {
    let mut sales: BTreeMap<ActivityId, (i64, Counters)> = BTreeMap::new();
    // A sale keeps its stock even when every copy of its creation was
    // undone (it is then void, with its units on sale).
    for (_, ev) in topics.iter().flat_map(|t| &t.logged) {
        if let Event::ActivityCreated { id, stock, .. } = ev {
            sales.entry(*id).or_default().0 = *stock as i64;
        }
    }
    let mut seen: BTreeSet<(OrderId, &'static str)> = BTreeSet::new();
    for ev in topics.iter().flat_map(|t| t.standing()) {
        let (id, d) = effect(ev);
        let s = sales.entry(id).or_default();
        if let Some(o) = ev.order_id() {
            if seen.insert((o, ev.kind().as_str())) {
                s.1 += d;
            }
        }
    }
    sales
        .into_iter()
        .map(|(id, (stock, c))| (id, (stock, stock + c.remaining, c.reserved, c.sold)))
        .collect()
}

/// The sales no standing copy of whose creation is left.
fn void_sales(topics: &[Topic]) -> BTreeSet<ActivityId> {
    let logged: BTreeSet<ActivityId> = topics
        .iter()
        .flat_map(|t| &t.logged)
        .filter(|(_, e)| e.order_id().is_none())
        .map(|(_, e)| e.activity_id())
        .collect();
    let standing: BTreeSet<ActivityId> = topics
        .iter()
        .flat_map(|t| t.standing())
        .filter(|e| e.order_id().is_none())
        .map(|e| e.activity_id())
        .collect();
    logged.difference(&standing).copied().collect()
}

/// Everything a reader sees, sorted: activities, orders, order_events,
/// and each sale's counters summed over the shards.
async fn state(urls: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for (i, u) in urls.iter().enumerate() {
        let mut c = mysql_async::Conn::new(Opts::from_url(u).unwrap())
            .await
            .unwrap();
        if i == 0 {
            let rows: Vec<mysql_async::Row> = c
                .query(format!("SELECT {} FROM activities", ActivityRow::COLUMNS))
                .await
                .unwrap();
            out.extend(
                rows.iter()
                    .map(|r| format!("act {:?}", ActivityRow::from_row(r))),
            );
        }
        let tables: Vec<String> = c
            .query("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME LIKE 'orders\\_2%'")
            .await
            .unwrap();
        for t in tables {
            let rows: Vec<mysql_async::Row> = c
                .query(format!("SELECT {} FROM {t}", OrderRow::COLUMNS))
                .await
                .unwrap();
            out.extend(
                rows.iter()
                    .map(|r| format!("order {:?}", OrderRow::from_row(r).unwrap())),
            );
        }
        let evs: Vec<(u64, String, String, u32, u64, String, u64)> = c
            .query("SELECT order_id, kind, reason, quantity, at, topic, lsn FROM order_events")
            .await
            .unwrap();
        out.extend(evs.iter().map(|e| format!("event {e:?}")));
        let _ = c.disconnect().await;
    }
    out.sort();
    out
}

fn statuses(st: &[String]) -> BTreeMap<OrderId, String> {
    st.iter()
        .filter_map(|l| l.strip_prefix("order OrderRow { order_id: "))
        .map(|l| {
            let id: OrderId = l.split(',').next().unwrap().parse().unwrap();
            let status = if l.contains("status: Void") {
                "VOID".to_string()
            } else {
                let s = l.split("status: Is(").nth(1).unwrap();
                s.split(')').next().unwrap().to_uppercase()
            };
            (id, status)
        })
        .collect()
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

/// Merge the topics in a seeded order, each keeping its own.
fn interleave(topics: &[Topic], g: &mut Lcg) -> Vec<Rec> {
    let mut at = vec![0usize; topics.len()];
    let mut out = Vec::new();
    loop {
        let open: Vec<usize> = (0..topics.len())
            .filter(|&i| at[i] < topics[i].recs.len())
            .collect();
        if open.is_empty() {
            return out;
        }
        let i = open[g.next(open.len() as u64) as usize];
        out.push(topics[i].recs[at[i]].clone());
        at[i] += 1;
    }
}

#[test]
fn node_topics_give_the_same_rows_in_every_order_equal_to_the_deduplicated_fold() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (topics, expect) = cluster();
        let want = reference(&topics);
        // Whole topics one after another (A B C, C B A), then seeded
        // interleavings with random batch splits and replayed prefixes.
        let mut orders: Vec<(String, Vec<Rec>)> = Vec::new();
        for perm in [[0, 1, 2], [2, 1, 0], [1, 2, 0]] {
            let recs = perm.iter().flat_map(|&i| topics[i].recs.clone()).collect();
            orders.push((format!("topics {perm:?} whole"), recs));
        }
        for seed in 0..5u64 {
            orders.push((format!("seed {seed}"), interleave(&topics, &mut Lcg(seed))));
        }
        let mut first: Option<Vec<String>> = None;
        for (k, (what, recs)) in orders.iter().enumerate() {
            let urls = maria::shards("cluster", 2).await;
            let mut w = maria::writer(&urls, A);
            let mut g = Lcg(k as u64 + 100);
            let mut at = 0;
            while at < recs.len() {
                let n = (1 + g.next(5) as usize).min(recs.len() - at);
                let batch = &recs[at..at + n];
                w.write(batch).await.expect("write");
                // A crash before the offsets were committed: a prefix again.
                let replay = g.next(n as u64 + 1) as usize;
                w.write(&batch[..replay]).await.expect("replay");
                at += n;
            }
            // A restart of the sink that reads everything again.
            let mut again = maria::writer(&urls, A);
            again.write(recs).await.expect("full replay");
            let st = state(&urls).await;
            let acts = {
                let mut c = mysql_async::Conn::new(Opts::from_url(&urls[0]).unwrap())
                    .await
                    .unwrap();
                let r: Vec<(u32, i64, i64, i64, i64)> = c
                    .query(
                        "SELECT id, stock, remaining, reserved, sold FROM activities ORDER BY id",
                    )
                    .await
                    .unwrap();
                let v: Vec<u32> = c
                    .query("SELECT id FROM activities WHERE void = 1")
                    .await
                    .unwrap();
                let _ = c.disconnect().await;
                assert_eq!(v, [3], "{what}: void sales");
                r
            };
            assert_eq!(void_sales(&topics), BTreeSet::from([3]));
            maria::drop_all(&urls).await;
            let got: BTreeMap<ActivityId, (i64, i64, i64, i64)> = acts
                .into_iter()
                .map(|(id, s, r, re, so)| (id, (s, r, re, so)))
                .collect();
            assert_eq!(got, want, "{what}: counters against the reference fold");
            let got: BTreeMap<OrderId, String> = statuses(&st);
            let exp: BTreeMap<OrderId, String> =
                expect.iter().map(|(o, s)| (*o, s.to_string())).collect();
            assert_eq!(got, exp, "{what}");
            // One row per move that stands: 8 creations but o7's, 4 moves.
            let events = st.iter().filter(|l| l.starts_with("event ")).count();
            assert_eq!(events, 7 + 4, "{what}: {st:#?}");
            match &first {
                None => first = Some(st),
                Some(f) => assert_eq!(f, &st, "{what} differs from {}", orders[0].0),
            }
        }
    });
}

/// Two sinks writing at once, each its node's topic (the nodes' embedded
/// sinks), the topics holding copies of the same orders: every order once,
/// counters equal to the fold, however their transactions interleave.
#[test]
fn two_sinks_writing_the_same_orders_at_once_count_each_once() {
    const ORDERS: u64 = 300;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let f = order_id_floor(now_ms());
        let (mut a, mut b) = (Topic::new(A), Topic::new(B));
        a.commit(&[sale(1, 1_000)]);
        b.commit(&[sale(1, 1_000)]);
        for i in 0..ORDERS {
            let (o, user, q) = (f | i, 100 + i, 1 + (i % 3) as u32);
            // Decided on A; B logs its copy, then pays every other one and
            // cancels every third.
            a.commit(&[created(o, 1, user, q)]);
            let mut on_b = vec![created(o, 1, user, q)];
            if i % 2 == 0 {
                on_b.push(paid(o, 1, user, q));
            } else if i % 3 == 0 {
                on_b.push(cancelled(o, 1, user, q, CancelReason::Timeout));
            }
            b.commit(&on_b);
        }
        let topics = [a, b];
        let want = reference(&topics);
        let urls = maria::shards("concurrent", 2).await;
        let write_all = |t: &Topic, seed: u64| {
            let mut w = maria::writer(&urls, t.name);
            let recs = t.recs.clone();
            async move {
                let mut g = Lcg(seed);
                let mut at = 0;
                while at < recs.len() {
                    let n = (1 + g.next(40) as usize).min(recs.len() - at);
                    // A deadlock between the two is transient: the sink
                    // retries it (`retry`), and so does this.
                    loop {
                        match w.write(&recs[at..at + n]).await {
                            Ok(()) => break,
                            Err(e) if e.class == crate::Class::Transient => {}
                            Err(e) => panic!("{}", e.msg),
                        }
                    }
                    at += n;
                }
                w.close().await;
            }
        };
        let (x, y) = (
            tokio::spawn(write_all(&topics[0], 1)),
            tokio::spawn(write_all(&topics[1], 2)),
        );
        x.await.unwrap();
        y.await.unwrap();
        let mut c = mysql_async::Conn::new(Opts::from_url(&urls[0]).unwrap())
            .await
            .unwrap();
        let acts: Vec<(u32, i64, i64, i64, i64)> = c
            .query("SELECT id, stock, remaining, reserved, sold FROM activities")
            .await
            .unwrap();
        let _ = c.disconnect().await;
        let st = state(&urls).await;
        maria::drop_all(&urls).await;
        let got: BTreeMap<ActivityId, (i64, i64, i64, i64)> = acts
            .into_iter()
            .map(|(id, s, r, re, so)| (id, (s, r, re, so)))
            .collect();
        assert_eq!(got, want);
        let orders = st.iter().filter(|l| l.starts_with("order ")).count();
        let events = st.iter().filter(|l| l.starts_with("event ")).count();
        let moves = (0..ORDERS).filter(|i| i % 2 == 0 || i % 3 == 0).count();
        assert_eq!((orders, events), (ORDERS as usize, ORDERS as usize + moves));
    });
}
