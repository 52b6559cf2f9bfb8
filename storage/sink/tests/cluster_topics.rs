//! The sink over cluster mode's node topics on a real broker (tansu) and
//! the machine's MariaDB: three nodes' topics holding overlapping events
//! of one sale (duplicate creations, a pay, a cancel and a timeout logged
//! by a node other than the creator's, aborted groups), read topic by
//! topic in two orders, all at once by pattern, replayed whole by a
//! restarted sink, and by one sink per node writing at once, always give
//! the same rows, equal to the engine's fold of the de-duplicated events
//! that stand. A node topic created after the
//! sink started is followed too.
//!
//! Needs tansu: `FLASHD_TANSU`, or `~/.cache/flashd-tools/bin/tansu`
//! (`scripts/test` installs it).

mod common;
use common::*;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::ops::Range;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use flashd_engine::fold::effect;
use flashd_engine::{order_created_ms, CancelReason, Counters, Event, OrderId};
use flashd_kafka::{encode_abort, encode_group_events, ensure_topic, Abort, KafkaConfig};
use flashd_sink::{migrate, Sink, SinkConfig};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

fn tansu_bin() -> PathBuf {
    if let Ok(p) = std::env::var("FLASHD_TANSU") {
        return p.into();
    }
    let p = PathBuf::from(std::env::var("HOME").unwrap_or_default())
        .join(".cache/flashd-tools/bin/tansu");
    assert!(
        p.exists(),
        "no Kafka-API broker: {} is missing (scripts/test installs it; or set FLASHD_TANSU)",
        p.display()
    );
    p
}

/// A tansu broker on its own port and SQLite file, gone when dropped.
struct Broker {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Broker {
    fn start() -> Broker {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!("{}_{port}", unique("tansu")));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(tansu_bin())
            .current_dir(&dir)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                "sqlite://tansu.db",
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn tansu");
        let t0 = Instant::now();
        while TcpStream::connect_timeout(
            &SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_millis(200),
        )
        .is_err()
        {
            assert!(t0.elapsed() < Duration::from_secs(20), "tansu not up");
            std::thread::sleep(Duration::from_millis(50));
        }
        Broker { child, port, dir }
    }

    fn config(&self, topic: &str) -> KafkaConfig {
        KafkaConfig {
            brokers: format!("127.0.0.1:{}", self.port),
            topic: topic.into(),
            timeout: Duration::from_secs(10),
            properties: Vec::new(),
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn sale(id: u32, stock: u64) -> Event {
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

fn created(o: OrderId, a: u32, user: u64, q: u32) -> Event {
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

fn paid(o: OrderId, a: u32, user: u64, q: u32) -> Event {
    Event::OrderPaid {
        order_id: o,
        activity_id: a,
        user_id: user,
        quantity: q,
        at: order_created_ms(o) + 5,
    }
}

fn cancelled(o: OrderId, a: u32, user: u64, q: u32, reason: CancelReason) -> Event {
    Event::OrderCancelled {
        order_id: o,
        activity_id: a,
        user_id: user,
        quantity: q,
        reason,
        at: order_created_ms(o) + 7,
    }
}

/// A node's topic, written as its single writer writes it (the order
/// log's encoders, one message per group and sale, keyed by the sale).
struct NodeTopic {
    name: String,
    producer: BaseProducer,
    next: u64,
    /// Messages written.
    messages: u64,
    logged: Vec<(u64, Event)>,
    voided: Vec<Range<u64>>,
}

impl NodeTopic {
    fn open(broker: &Broker, name: String) -> NodeTopic {
        ensure_topic(&broker.config(&name), 2).expect("create topic");
        let producer = ClientConfig::new()
            .set("bootstrap.servers", broker.config(&name).brokers)
            .create()
            .unwrap();
        NodeTopic {
            name,
            producer,
            next: 0,
            messages: 0,
            logged: Vec::new(),
            voided: Vec::new(),
        }
    }

    fn send(&mut self, key: u32, v: &[u8]) {
        self.producer
            .send(
                BaseRecord::to(&self.name)
                    .key(key.to_string().as_bytes())
                    .payload(v),
            )
            .map_err(|(e, _)| e)
            .unwrap();
        self.producer.flush(Duration::from_secs(10)).unwrap();
        self.messages += 1;
    }

    /// Events of one sale in one group; `failed`: the commit failed, and
    /// the next group starts with the abort of this one.
    fn group(&mut self, evs: &[Event], failed: bool) {
        let from = self.next;
        let with_lsns: Vec<(u64, Event)> = evs
            .iter()
            .map(|e| {
                let l = self.next;
                self.next += 1;
                (l, e.clone())
            })
            .collect();
        let refs: Vec<(u64, &Event)> = with_lsns.iter().map(|(l, e)| (*l, e)).collect();
        let mut v = Vec::new();
        encode_group_events(from, &refs, &mut v);
        let key = evs[0].activity_id();
        self.send(key, &v);
        self.logged.extend(with_lsns.iter().cloned());
        if failed {
            let abort = Abort {
                covers: from..self.next,
                events: with_lsns,
            };
            encode_abort(self.next, &abort, &mut v);
            self.send(key, &v);
            self.voided.push(abort.covers);
            self.next += 1;
        }
    }

    fn commit(&mut self, evs: &[Event]) {
        self.group(evs, false)
    }

    fn fail(&mut self, evs: &[Event]) {
        self.group(evs, true)
    }

    fn standing(&self) -> impl Iterator<Item = &Event> {
        self.logged
            .iter()
            .filter(|(l, _)| !self.voided.iter().any(|r| r.contains(l)))
            .map(|(_, e)| e)
    }
}

/// The engine's fold of every move standing in some topic, once each:
/// per sale `(stock, remaining, reserved, sold)`.
fn reference(topics: &[NodeTopic]) -> BTreeMap<u32, (i64, i64, i64, i64)> {
    let mut sales: BTreeMap<u32, (i64, Counters)> = BTreeMap::new();
    let mut seen: BTreeSet<(OrderId, &'static str)> = BTreeSet::new();
    for ev in topics.iter().flat_map(|t| t.standing()) {
        let (id, d) = effect(ev);
        let s = sales.entry(id).or_default();
        match (ev.order_id(), ev) {
            (Some(o), _) => {
                if seen.insert((o, ev.kind().as_str())) {
                    s.1 += d;
                }
            }
            (None, Event::ActivityCreated { stock, .. }) => s.0 = *stock as i64,
            (None, _) => {}
        }
    }
    sales
        .into_iter()
        .map(|(id, (stock, c))| (id, (stock, stock + c.remaining, c.reserved, c.sold)))
        .collect()
}

/// Three nodes of `base` writing one cluster's sales; the orders' final
/// statuses.
fn write_cluster(broker: &Broker, base: &str) -> (Vec<NodeTopic>, BTreeMap<OrderId, String>) {
    let o: Vec<OrderId> = (1..=8).map(oid).collect();
    let mut t: Vec<NodeTopic> = (1..=3)
        .map(|n| NodeTopic::open(broker, format!("{base}.node{n}")))
        .collect();
    for n in &mut t {
        n.commit(&[sale(1, 10)]);
    }
    t[0].commit(&[sale(2, 5)]);
    t[1].commit(&[sale(2, 5)]);
    // o1: decided on node 1, paid on node 2 (its copy of the creation first).
    t[0].commit(&[created(o[0], 1, 11, 2)]);
    t[1].commit(&[created(o[0], 1, 11, 2), paid(o[0], 1, 11, 2)]);
    // o2: decided on node 1, cancelled by its buyer on node 3.
    t[0].commit(&[created(o[1], 1, 12, 1)]);
    t[2].commit(&[
        created(o[1], 1, 12, 1),
        cancelled(o[1], 1, 12, 1, CancelReason::User),
    ]);
    // o3: decided on node 2, timed out by node 1's sweeper.
    t[1].commit(&[created(o[2], 1, 13, 3)]);
    t[0].commit(&[
        created(o[2], 1, 13, 3),
        cancelled(o[2], 1, 13, 3, CancelReason::Timeout),
    ]);
    // o4: decided on node 3; a retry completed on node 1, twice there.
    t[2].commit(&[created(o[3], 1, 14, 1)]);
    t[0].commit(&[created(o[3], 1, 14, 1)]);
    t[0].commit(&[created(o[3], 1, 14, 1)]);
    // o5: node 2's group with it fails; the retry lands on node 1.
    t[1].fail(&[created(o[4], 1, 15, 2)]);
    t[0].commit(&[created(o[4], 1, 15, 2)]);
    // o6: node 3's pay of it fails: it stays CREATED.
    t[2].commit(&[created(o[5], 1, 16, 1)]);
    t[2].fail(&[paid(o[5], 1, 16, 1)]);
    // o7: node 1's group with it fails and no retry comes: VOID.
    t[0].fail(&[created(o[6], 1, 17, 1)]);
    // o8 (sale 2): decided on node 2, paid on node 1.
    t[1].commit(&[created(o[7], 2, 18, 1)]);
    t[0].commit(&[created(o[7], 2, 18, 1), paid(o[7], 2, 18, 1)]);
    let st = [
        "PAID",
        "CANCELLED",
        "CANCELLED",
        "CREATED",
        "CREATED",
        "CREATED",
        "VOID",
        "PAID",
    ];
    (t, o.into_iter().zip(st.map(String::from)).collect())
}

/// Records of the topics (every event or abort in them).
fn records(t: &[&NodeTopic]) -> u64 {
    t.iter()
        .map(|n| n.logged.len() as u64 + n.voided.len() as u64)
        .sum()
}

/// Run a sink over `topic` (a `kafka.topic` setting) in `group` until it
/// has read `records` records.
fn sink_until(broker: &Broker, topic: &str, group: &str, shards: &[String], records: u64) {
    let sink = Sink::start(SinkConfig {
        kafka: broker.config(topic),
        group: group.into(),
        shards: shards.to_vec(),
        batch_max: 3,
        batch_wait: Duration::from_millis(20),
    })
    .unwrap();
    let stats = sink.stats.clone();
    wait_until(
        Duration::from_secs(90),
        &format!("{topic}: {records} records"),
        || stats.events.load(Ordering::Relaxed) >= records,
    );
    sink.stop();
}

/// What a reader sees: activities, order rows, order_events, sorted.
fn state(shards: &[String]) -> Vec<String> {
    let mut out: Vec<String> = query::<(u32, String, i64, i64, i64, i64, i64)>(
        &shards[0],
        "SELECT id, name, stock, remaining, reserved, sold, void FROM activities",
    )
    .into_iter()
    .map(|r| format!("act {r:?}"))
    .collect();
    for s in shards {
        let tables: Vec<String> = query(s, "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME LIKE 'orders\\_2%'");
        for t in tables {
            out.extend(
                query::<(u64, u32, u64, u32, u64, String, String, u64, u64)>(
                    s,
                    &format!("SELECT order_id, activity_id, user_id, quantity, amount_cents, request_id, status, updated_at, version FROM {t}"),
                )
                .into_iter()
                .map(|r| format!("order {r:?}")),
            );
        }
        out.extend(
            query::<(u64, String, String, u32, u64, String, u64)>(
                s,
                "SELECT order_id, kind, reason, quantity, at, topic, lsn FROM order_events",
            )
            .into_iter()
            .map(|r| format!("event {r:?}")),
        );
    }
    out.sort();
    out
}

fn fresh_shards(tag: &str) -> Vec<String> {
    let shards = vec![
        mysql_url(&format!("{}_0", unique(tag))),
        mysql_url(&format!("{}_1", unique(tag))),
    ];
    rt().block_on(migrate(&shards)).unwrap();
    shards
}

fn check(
    what: &str,
    st: &[String],
    shards: &[String],
    want: &BTreeMap<u32, (i64, i64, i64, i64)>,
    statuses: &BTreeMap<OrderId, String>,
) {
    let acts: BTreeMap<u32, (i64, i64, i64, i64)> = query::<(u32, i64, i64, i64, i64)>(
        &shards[0],
        "SELECT id, stock, remaining, reserved, sold FROM activities",
    )
    .into_iter()
    .map(|(id, s, r, re, so)| (id, (s, r, re, so)))
    .collect();
    assert_eq!(&acts, want, "{what}: counters against the reference fold");
    for (o, s) in statuses {
        let line = st
            .iter()
            .find(|l| l.starts_with(&format!("order ({o},")))
            .unwrap_or_else(|| panic!("{what}: order {o} has no row: {st:#?}"));
        assert!(
            line.contains(&format!("\"{s}\"")),
            "{what}: {line}, want {s}"
        );
    }
    // One row per move that stands: seven creations, two pays, two cancels.
    let events = st.iter().filter(|l| l.starts_with("event ")).count();
    assert_eq!(events, 11, "{what}: {st:#?}");
}

#[test]
fn node_topics_read_in_any_order_and_replayed_give_the_same_rows() {
    let broker = Broker::start();
    let base = unique("orders").replace('_', "-");
    let (topics, statuses) = write_cluster(&broker, &base);
    let want = reference(&topics);
    let [a, b, c] = [&topics[0], &topics[1], &topics[2]];
    let all = format!("{base}.node*");

    // Node 1's topic, then node 2's, then the rest by pattern.
    let s1 = fresh_shards("ct1");
    sink_until(&broker, &a.name, "g1", &s1, records(&[a]));
    sink_until(&broker, &b.name, "g1", &s1, records(&[b]));
    sink_until(&broker, &all, "g1", &s1, records(&[c]));
    let st1 = state(&s1);
    check("1, 2, rest", &st1, &s1, &want, &statuses);

    // Node 3's, then node 2's and node 1's together (named).
    let s2 = fresh_shards("ct2");
    sink_until(&broker, &c.name, "g2", &s2, records(&[c]));
    sink_until(
        &broker,
        &format!("{},{}", b.name, a.name),
        "g2",
        &s2,
        records(&[a, b]),
    );
    let st2 = state(&s2);
    check("3, then 2 and 1", &st2, &s2, &want, &statuses);
    assert_eq!(st1, st2);

    // All three at once by pattern (the broker interleaves them), then a
    // restarted sink in a fresh group reading everything again.
    let s3 = fresh_shards("ct3");
    sink_until(&broker, &all, "g3", &s3, records(&[a, b, c]));
    let st3 = state(&s3);
    check("all at once", &st3, &s3, &want, &statuses);
    sink_until(&broker, &all, "g3-replay", &s3, records(&[a, b, c]));
    let replayed = state(&s3);
    assert_eq!(st3, replayed, "a replay changed rows");
    assert_eq!(st1, st3);

    // One sink per node topic, all at once into the same shards, as the
    // nodes' embedded sinks write.
    let s4 = fresh_shards("ct4");
    let sinks: Vec<(Sink, u64)> = [a, b, c]
        .iter()
        .map(|t| {
            let sink = Sink::start(SinkConfig {
                kafka: broker.config(&t.name),
                group: format!("g4-{}", t.name),
                shards: s4.clone(),
                batch_max: 2,
                batch_wait: Duration::from_millis(5),
            })
            .unwrap();
            (sink, records(&[t]))
        })
        .collect();
    for (sink, n) in &sinks {
        let stats = sink.stats.clone();
        wait_until(Duration::from_secs(90), "each node's sink", || {
            stats.events.load(Ordering::Relaxed) >= *n
        });
    }
    for (sink, _) in sinks {
        sink.stop();
    }
    let st4 = state(&s4);
    check("one sink per node", &st4, &s4, &want, &statuses);
    assert_eq!(st1, st4);

    for s in s1.iter().chain(&s2).chain(&s3).chain(&s4) {
        drop_db(s);
    }
}

#[test]
fn a_node_topic_created_after_the_sink_started_is_followed() {
    let broker = Broker::start();
    let base = unique("late").replace('_', "-");
    let mut n1 = NodeTopic::open(&broker, format!("{base}.node1"));
    n1.commit(&[sale(1, 10)]);
    let shards = fresh_shards("ctlate");
    let sink = Sink::start(SinkConfig {
        kafka: broker.config(&format!("{base}.node*")),
        group: "late".into(),
        shards: shards.clone(),
        batch_max: 100,
        batch_wait: Duration::from_millis(20),
    })
    .unwrap();
    let stats = sink.stats.clone();
    wait_until(Duration::from_secs(60), "node 1's sale", || {
        stats.events.load(Ordering::Relaxed) >= 1
    });
    // A node joins: its topic appears now, with an order.
    let o = oid(1);
    let mut n7 = NodeTopic::open(&broker, format!("{base}.node7"));
    n7.commit(&[sale(1, 10)]);
    n7.commit(&[created(o, 1, 5, 3)]);
    let acts = || {
        query::<(i64, i64, i64)>(
            &shards[0],
            "SELECT remaining, reserved, sold FROM activities WHERE id = 1",
        )
    };
    wait_until(Duration::from_secs(60), "node 7's order", || {
        acts() == vec![(7, 3, 0)]
    });
    sink.stop();
    for s in &shards {
        drop_db(s);
    }
}
