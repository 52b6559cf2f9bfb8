//! `flashd reconcile` against real parts: a private tansu broker holding
//! three nodes' topics, a private `redis-server`, and the real `flashd`
//! binary. Each test builds a cluster's state the way nodes make it —
//! Redis decides (`RedisClient`), the deciding node logs
//! (`flashd_kafka::KafkaLog` on its own topic) — then damages one side
//! and checks what the command says, its exit code, and what `--repair`
//! makes of it.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::services::{free_port, tansu_bin, wait_port};
use common::*;
use flashd_engine::{order_id_floor, ActivityId, Event, Millis};
use flashd_kafka::{ensure_topic, node_topic, KafkaConfig, KafkaLog};
use flashd_log::OrderLog;
use flashd_redis::{Buy, Claim, ClientConfig, Decision, RedisClient, Settle, Settled};
use serde_json::Value;

const BASE: &str = "orders-rc";
/// Payment window of the test's orders: long enough that nothing times
/// out while a test runs, unless it asks for it.
const TTL_MS: u64 = 600_000;

fn now_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as Millis
}

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A private redis-server, without persistence, and its port.
fn private_redis(dir: &Path) -> (Proc, u16) {
    let port = free_port();
    let redis = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .arg("--dir")
        .arg(dir)
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn redis-server (is it installed?)");
    let redis = Proc(redis);
    wait_port(port, true, Duration::from_secs(10));
    (redis, port)
}

/// A private tansu broker and a private redis-server, with the config
/// file `flashd reconcile` reads.
struct Parts {
    _broker: Proc,
    broker: String,
    _redis: Proc,
    redis_port: u16,
    /// Last: removed once both servers are gone.
    dir: TempDir,
}

impl Parts {
    fn start(tag: &str) -> Parts {
        let dir = TempDir::new(tag);
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let broker = Command::new(tansu_bin())
            .current_dir(dir.path())
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
        let broker = Proc(broker);
        let (redis, redis_port) = private_redis(dir.path());
        wait_port(port, true, Duration::from_secs(20));
        Parts {
            _broker: broker,
            broker: format!("127.0.0.1:{port}"),
            _redis: redis,
            redis_port,
            dir,
        }
    }

    fn redis_url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.redis_port)
    }

    fn kafka(&self, topic: String) -> KafkaConfig {
        KafkaConfig {
            brokers: self.broker.clone(),
            topic,
            timeout: Duration::from_secs(5),
            properties: Vec::new(),
        }
    }

    /// Node `id`: its topic (created) and its Redis client.
    fn node(&self, id: u16) -> Node {
        let cfg = self.kafka(node_topic(BASE, id));
        ensure_topic(&cfg, 2).unwrap();
        let mut rc = ClientConfig::new(self.redis_url(), id);
        rc.timeout = Duration::from_secs(5);
        Node {
            id,
            log: KafkaLog::open(cfg, 0).unwrap(),
            redis: RedisClient::start(rc).unwrap(),
            seq: 0,
        }
    }

    fn config(&self) -> PathBuf {
        let p = self.dir.path().join("reconcile.toml");
        std::fs::write(&p, config_text(&self.broker, &self.redis_url(), true)).unwrap();
        p
    }

    /// `redis-cli` against the private Redis (damage behind the nodes'
    /// backs).
    fn redis_cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.redis_port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

fn config_text(brokers: &str, redis_url: &str, cluster: bool) -> String {
    format!(
        "[engine]\nnode_id = 99\n\
         [server]\nrequest_timeout_ms = 10000\n[workers]\ncount = 1\n\
         [log]\nbackend = \"kafka\"\n[log.kafka]\nbrokers = \"{brokers}\"\ntopic = \"{BASE}\"\nunavailable_ms = 2000\n\
         [cluster]\nenabled = {cluster}\nredis_url = \"{redis_url}\"\nredis_timeout_ms = 2000\n\
         [logging]\nlevel = \"error\"\n"
    )
}

/// One node as the cluster design has it: Redis decides, the node logs
/// what its own calls decided.
struct Node {
    id: u16,
    log: KafkaLog,
    redis: RedisClient,
    seq: u64,
}

impl Node {
    fn write(&mut self, evs: &[Event]) {
        self.log.append(evs).unwrap();
        self.log.commit().unwrap();
    }

    fn order_id(&mut self, now: Millis) -> u64 {
        self.seq += 1;
        order_id_floor(now) | (u64::from(self.id) << 12) | self.seq
    }

    /// Decide a purchase in Redis; granted is asserted.
    fn decide(&mut self, sale: ActivityId, user: u64, qty: u32, deadline: Millis) -> Claim {
        let now = now_ms();
        let b = Buy {
            user,
            request_id: format!("req-{}-{user}-{}", self.id, self.seq + 1),
            quantity: qty,
            order_id: self.order_id(now),
            amount_cents: 100 * u64::from(qty),
            deadline_ms: deadline,
        };
        match self.redis.buy(sale, now, vec![b]).wait().unwrap().remove(0) {
            Decision::Granted(c) => c,
            d => panic!("not granted: {d:?}"),
        }
    }

    /// Decide and log a purchase.
    fn buy(&mut self, sale: ActivityId, user: u64, qty: u32) -> Claim {
        let c = self.decide(sale, user, qty, now_ms() + TTL_MS);
        self.write(&[c.created_event(sale)]);
        c
    }

    /// Pay or cancel in Redis; logged as a node that did not decide the
    /// order logs it: a copy of its creation, then the move.
    fn settle(&mut self, sale: ActivityId, op: Settle) -> Claim {
        let at = now_ms();
        let s = self
            .redis
            .settle(sale, at, vec![op])
            .wait()
            .unwrap()
            .remove(0);
        let (Settled::Paid(c) | Settled::Cancelled(c)) = &s else {
            panic!("not settled: {s:?}");
        };
        let mut evs = Vec::new();
        if c.node != self.id {
            evs.push(c.created_event(sale));
        }
        evs.extend(s.event(sale, at));
        self.write(&evs);
        c.clone()
    }
}

fn sale_event(id: ActivityId, stock: u64) -> Event {
    Event::ActivityCreated {
        id,
        sku_id: format!("sku-{id}"),
        name: format!("sale {id}"),
        price_cents: 100,
        stock,
        start_at: 0,
        end_at: now_ms() + 3_600_000,
        per_user_limit: 3,
        created_at: now_ms(),
    }
}

/// The cluster's ordinary state, agreeing everywhere: sales 1 and 2
/// created on node 1, served by nodes 1–3; orders decided on every node;
/// pays and cancels of other nodes' orders logged with copies; one
/// node's failed write aborted in its topic.
struct Cluster {
    parts: Parts,
    nodes: Vec<Node>,
    /// Sale 1's orders, decided and logged.
    orders: Vec<Claim>,
    /// The sales' `ActivityCreated`.
    sales: Vec<Event>,
}

fn cluster(tag: &str) -> Cluster {
    let parts = Parts::start(tag);
    let mut nodes: Vec<Node> = (1..=3).map(|i| parts.node(i)).collect();
    let mut sales = Vec::new();
    for sale in [1, 2] {
        let ev = sale_event(sale, 20);
        assert!(nodes[0].redis.register_sale(&ev).wait().unwrap());
        for n in &mut nodes {
            n.write(std::slice::from_ref(&ev));
        }
        sales.push(ev);
    }
    let mut orders = Vec::new();
    for (k, user) in (1..=6u64).enumerate() {
        orders.push(nodes[k % 3].buy(1, user, 1 + (user % 2) as u32));
    }
    for user in 10..13 {
        nodes[1].buy(2, user, 2);
    }
    // Node 2 pays node 1's order; node 3 cancels node 2's; node 1 pays
    // node 3's.
    for (node, k, pay) in [(1, 0, true), (2, 1, false), (0, 2, true)] {
        let c = &orders[k];
        let op = if pay {
            Settle::Pay {
                user: c.user,
                order_id: c.order_id,
            }
        } else {
            Settle::Cancel {
                user: c.user,
                order_id: c.order_id,
            }
        };
        nodes[node].settle(1, op);
    }
    // Node 3's write of a pay fails (its group is rolled back: the
    // abort record voids it in the topic) and Redis never made that pay:
    // the logs must not count it.
    let c = &orders[3];
    let ghost = Event::OrderPaid {
        order_id: c.order_id,
        activity_id: 1,
        user_id: c.user,
        quantity: c.quantity,
        at: now_ms(),
    };
    nodes[2].log.append(&[c.created_event(1), ghost]).unwrap();
    nodes[2].log.rollback().unwrap();
    assert_eq!(nodes[2].log.pending_aborts(), 0, "the abort is durable");
    Cluster {
        parts,
        nodes,
        orders,
        sales,
    }
}

/// `flashd reconcile` with `args`: (exit code, stdout, stderr).
fn reconcile(cfg: &Path, args: &[&str]) -> (i32, String, String) {
    let out: Output = Command::new(bin())
        .arg("reconcile")
        .arg("--config")
        .arg(cfg)
        .args(args)
        .output()
        .expect("run flashd reconcile");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn reconcile_json(cfg: &Path, args: &[&str]) -> (i32, Value) {
    let mut a = vec!["--json"];
    a.extend_from_slice(args);
    let (code, out, err) = reconcile(cfg, &a);
    let v = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
    (code, v)
}

fn sale(report: &Value, id: u64) -> &Value {
    report["sales"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["sale"] == id)
        .unwrap_or_else(|| panic!("no sale {id} in {report:#}"))
}

fn kinds(s: &Value) -> Vec<String> {
    s["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["kind"].as_str().unwrap().to_string())
        .collect()
}

fn assert_agrees(cfg: &Path) {
    let (code, out, err) = reconcile(cfg, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("ok: 2 sales: 2 agree, 0 in flight, 0 drift"),
        "{out}"
    );
}

#[test]
fn agreement_each_kind_of_drift_and_repair() {
    raise_nofile();
    let mut c = cluster("reconcile-drift");
    let cfg = c.parts.config();

    // Agreement: three topics, copies and an abort among them.
    let (code, out, err) = reconcile(&cfg, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("ok: 2 sales: 2 agree, 0 in flight, 0 drift"),
        "{out}"
    );
    assert!(out.contains("node 3 (orders-rc.node3)"), "{out}");
    let (code, j) = reconcile_json(&cfg, &[]);
    assert_eq!(code, 0);
    assert_eq!(j["drift"], false);
    assert_eq!(j["topics"].as_array().unwrap().len(), 3);
    assert!(
        j["topics"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["aborts"] == 1),
        "{j:#}"
    );
    let s1 = sale(&j, 1);
    assert_eq!(s1["verdict"], "agree");
    // 6 orders (2 paid, 1 cancelled, 3 created) on both sides.
    assert_eq!(s1["logs"], s1["redis"], "{s1:#}");
    assert_eq!(s1["logs"]["orders"], 6);

    // A damaged counter.
    let meta1 = flashd_redis::keys::meta(1);
    let reserved: u64 = c
        .parts
        .redis_cli(&["HGET", &meta1, "reserved"])
        .parse()
        .unwrap();
    let sold: u64 = c
        .parts
        .redis_cli(&["HGET", &meta1, "sold"])
        .parse()
        .unwrap();
    assert_eq!(
        (sold, reserved),
        (4, 4),
        "users 1 and 3 paid 2 each; 4, 5, 6 hold 1 + 2 + 1"
    );
    c.parts
        .redis_cli(&["HSET", &meta1, "reserved", &(reserved + 3).to_string()]);
    let (code, out, _) = reconcile(&cfg, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("sale 1: DRIFT"), "{out}");
    assert!(
        out.contains(&format!("counters: sold {sold} reserved {reserved} ")),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "Redis holds sold {sold} reserved {} ",
            reserved + 3
        )),
        "{out}"
    );
    assert!(out.contains("sale 2: agree"), "{out}");
    // Repair of that sale only: before and after said, then agreement.
    let (code, out, _) = reconcile(&cfg, &["--sale", "1", "--repair"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("repaired: Redis"), "{out}");
    assert!(out.contains("now: agree"), "{out}");
    assert_agrees(&cfg);

    // A buyer's record deleted in sale 2: their order, holding and count.
    let victim = 11u64;
    c.parts
        .redis_cli(&["HDEL", &flashd_redis::keys::users(2), &victim.to_string()]);
    let (code, j) = reconcile_json(&cfg, &[]);
    assert_eq!(code, 1, "{j:#}");
    let s2 = sale(&j, 2);
    assert_eq!(s2["verdict"], "drift");
    let k = kinds(s2);
    // Its counters still count the units: Redis disagrees with itself.
    for want in ["log_only", "holding", "orders_made", "redis_check"] {
        assert!(k.iter().any(|x| x == want), "{want} missing: {s2:#}");
    }
    assert!(
        s2["differences"]
            .to_string()
            .contains(&format!("user {victim}")),
        "{s2:#}"
    );
    let (code, out, _) = reconcile(&cfg, &["--repair"]);
    assert_eq!(code, 0, "{out}");
    assert_agrees(&cfg);

    // An extra claim: Redis decided and paid an order no node logged.
    let extra = c.nodes[0].decide(1, 40, 1, now_ms() + TTL_MS);
    let s = c.nodes[0]
        .redis
        .settle(
            1,
            now_ms(),
            vec![Settle::Pay {
                user: extra.user,
                order_id: extra.order_id,
            }],
        )
        .wait()
        .unwrap();
    assert!(matches!(s[0], Settled::Paid(_)), "{s:?}");
    let (code, j) = reconcile_json(&cfg, &[]);
    assert_eq!(code, 1, "{j:#}");
    let s1 = sale(&j, 1);
    assert!(kinds(s1).iter().any(|k| k == "redis_only"), "{s1:#}");
    let d = s1["differences"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["kind"] == "redis_only")
        .unwrap();
    assert_eq!(d["order"], extra.order_id);
    assert!(d["detail"].as_str().unwrap().contains("paid"), "{d}");
    let (code, out, _) = reconcile(&cfg, &["--repair"]);
    assert_eq!(code, 0, "{out}");
    assert_agrees(&cfg);
    assert_eq!(
        c.parts
            .redis_cli(&["HGET", &flashd_redis::keys::users(1), "40"]),
        "",
        "the unlogged order is gone"
    );

    // A lost claim: node 3 logged an order Redis no longer holds (a
    // Redis restarted without fsync).
    let lost = c.nodes[2].buy(2, 50, 1);
    c.parts
        .redis_cli(&["HDEL", &flashd_redis::keys::users(2), "50"]);
    c.parts
        .redis_cli(&["HINCRBY", &flashd_redis::keys::meta(2), "reserved", "-1"]);
    let (code, out, _) = reconcile(&cfg, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "log_only: the logs hold order {} (user 50, created, 1 units) that Redis lacks",
            lost.order_id
        )),
        "{out}"
    );
    let (code, out, _) = reconcile(&cfg, &["--repair", "--sale", "2"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        c.parts
            .redis_cli(&["HGET", &flashd_redis::keys::users(2), "50"])
            .contains(&format!("#{}|C|", lost.order_id)),
        "the lost claim is back"
    );
    assert_agrees(&cfg);

    // A whole sale gone from Redis.
    let keys = flashd_redis::keys::all(2);
    let mut del = vec!["DEL"];
    del.extend(keys.iter().map(String::as_str));
    c.parts.redis_cli(&del);
    let (code, out, _) = reconcile(&cfg, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("sale: Redis holds no sale 2"), "{out}");
    let (code, out, _) = reconcile(&cfg, &["--repair"]);
    assert_eq!(code, 0, "{out}");
    assert_agrees(&cfg);
    // A node that never saw the sale can still learn it from Redis: the
    // repair kept its names.
    let learnt = c.nodes[2].redis.sale_event(2).wait().unwrap();
    assert_eq!(learnt.as_ref(), Some(&c.sales[1]), "{learnt:?}");

    // Two logs that disagree on one order's creation: drift, and no
    // repair (it would have to pick one).
    let mut bad = c.orders[4].created_event(1);
    if let Event::OrderCreated { amount_cents, .. } = &mut bad {
        *amount_cents += 1;
    }
    c.nodes[2].write(&[bad]);
    let (code, out, _) = reconcile(&cfg, &["--repair"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "order {} created differently",
            c.orders[4].order_id
        )),
        "{out}"
    );
    assert!(
        out.contains("repair refused: the logs contradict each other"),
        "{out}"
    );
}

#[test]
fn claims_in_flight_are_not_drift_until_their_grace_ends() {
    raise_nofile();
    let mut c = cluster("reconcile-inflight");
    let cfg = c.parts.config();
    // Node 2 died between Redis's answer and its log write.
    let fresh = c.nodes[1].decide(1, 60, 1, now_ms() + TTL_MS);
    let (code, out, err) = reconcile(&cfg, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("sale 1: agree, with claims in flight"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "in flight: order {} of user 60 (1 units, node 2)",
            fresh.order_id
        )),
        "{out}"
    );
    let (code, j) = reconcile_json(&cfg, &[]);
    assert_eq!(code, 0);
    assert_eq!(sale(&j, 1)["verdict"], "in_flight");
    assert_eq!(sale(&j, 1)["in_flight"][0]["order"], fresh.order_id);

    // Past its deadline and the grace, the same claim is drift.
    let short = c.nodes[0].decide(2, 61, 1, now_ms() + 300);
    std::thread::sleep(Duration::from_millis(400));
    let (code, out, _) = reconcile(&cfg, &["--grace-ms", "50"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("redis_only: Redis holds order {}", short.order_id)),
        "{out}"
    );
    assert!(out.contains("past its deadline"), "{out}");

    // A drifting sale with a claim in flight: no repair without --force.
    let meta1 = flashd_redis::keys::meta(1);
    c.parts.redis_cli(&["HINCRBY", &meta1, "sold", "5"]);
    let (code, out, _) = reconcile(&cfg, &["--sale", "1", "--repair"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("repair refused: 1 claims in flight"), "{out}");
    let (code, out, _) = reconcile(&cfg, &["--sale", "1", "--repair", "--force"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("dropped 1 claims in flight: [{}]", fresh.order_id)),
        "{out}"
    );
    // The completed retry would now find nothing: a new order. What
    // matters here is that the sale agrees again.
    let (code, out, _) = reconcile(&cfg, &["--sale", "1"]);
    assert_eq!(code, 0, "{out}");

    // A sale registered in Redis (the shared id sequence names it) that
    // no node has logged yet: in flight as a sale.
    c.parts
        .redis_cli(&["SET", flashd_redis::keys::SALE_SEQ, "2"]);
    let id = c.nodes[0].redis.next_sale_id().wait().unwrap();
    assert_eq!(id, 3);
    c.nodes[0]
        .redis
        .register_sale(&sale_event(id, 5))
        .wait()
        .unwrap();
    let (code, out, _) = reconcile(&cfg, &["--sale", "3"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("sale 3: agree, with claims in flight"),
        "{out}"
    );
    assert!(out.contains("registered in Redis with no orders"), "{out}");
    // Found without --sale too (ids up to the sequence are read).
    let (_, out, _) = reconcile(&cfg, &["--grace-ms", "600000"]);
    assert!(
        out.contains("sale 3: agree, with claims in flight"),
        "{out}"
    );
    // Once Redis sold from it with nothing logged, it is drift that no
    // repair can fix from the logs.
    let x = c.nodes[0].decide(3, 70, 1, now_ms() + TTL_MS);
    c.nodes[0]
        .redis
        .settle(
            3,
            now_ms(),
            vec![Settle::Pay {
                user: x.user,
                order_id: x.order_id,
            }],
        )
        .wait()
        .unwrap();
    let (code, out, _) = reconcile(&cfg, &["--sale", "3", "--repair"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("sale: Redis holds sale 3 with 1 orders; no log holds the sale"),
        "{out}"
    );
    assert!(out.contains("repair refused: no log holds sale 3"), "{out}");
}

#[test]
fn unreachable_redis_or_kafka_is_exit_3_and_single_node_mode_is_exit_2() {
    let dir = TempDir::new("reconcile-down");
    // Nothing listens on the port: Redis is probed before Kafka is read,
    // so the broker's address does not matter.
    let port = free_port();
    let p = dir.path().join("down.toml");
    std::fs::write(
        &p,
        config_text("127.0.0.1:1", &format!("redis://127.0.0.1:{port}/"), true),
    )
    .unwrap();
    let t0 = Instant::now();
    let (code, out, err) = reconcile(&p, &[]);
    assert_eq!(code, 3, "{out}\n{err}");
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(err.contains("cannot connect"), "{err}");

    // Redis up, the brokers not: 3 once the metadata request gives up.
    let (_redis, up) = private_redis(dir.path());
    std::fs::write(
        &p,
        config_text(
            &format!("127.0.0.1:{}", free_port()),
            &format!("redis://127.0.0.1:{up}/"),
            true,
        ),
    )
    .unwrap();
    let (code, out, err) = reconcile(&p, &[]);
    assert_eq!(code, 3, "{out}\n{err}");
    assert!(err.contains("kafka brokers"), "{err}");

    std::fs::write(
        &p,
        config_text("127.0.0.1:1", &format!("redis://127.0.0.1:{port}/"), false),
    )
    .unwrap();
    let (code, _, err) = reconcile(&p, &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cluster mode"), "{err}");
    // A configuration error is 2 as everywhere else.
    std::fs::write(&p, "[cluster]\nenabled = 1\n").unwrap();
    let (code, _, err) = reconcile(&p, &[]);
    assert_eq!(code, 2, "{err}");
}

/// One statement through the `mariadb` client against the machine's
/// MariaDB (`FLASHD_MYSQL_PORT`, else 3306).
fn maria(db: Option<&str>, sql: &str) -> String {
    let port = std::env::var("FLASHD_MYSQL_PORT").unwrap_or_else(|_| "3306".into());
    let mut c = Command::new("mariadb");
    c.args(["-h127.0.0.1", &format!("-P{port}"), "-uroot", "-N", "-B"]);
    if let Some(db) = db {
        c.arg(db);
    }
    let out = c.arg("-e").arg(sql).output().expect("mariadb client");
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn the_sinks_order_tables_lagging_is_not_drift_disagreeing_is() {
    raise_nofile();
    let c = cluster("reconcile-sink");
    let db = format!("flashd_reconcile_{}", std::process::id());
    let port = std::env::var("FLASHD_MYSQL_PORT").unwrap_or_else(|_| "3306".into());
    maria(
        None,
        &format!("DROP DATABASE IF EXISTS {db}; CREATE DATABASE {db}"),
    );
    // The columns reconcile reads, in the month table of the orders.
    let table = flashd_sink::order_table(c.orders[0].order_id);
    maria(
        Some(&db),
        &format!(
            "CREATE TABLE {table} (order_id BIGINT UNSIGNED PRIMARY KEY, activity_id INT UNSIGNED NOT NULL, status VARCHAR(12) NOT NULL)"
        ),
    );
    // The sink is behind: order 0 (paid) is still CREATED, order 5 is
    // not written at all; the rest as the logs say.
    let row = |o: &Claim, status: &str| format!("({}, 1, '{status}')", o.order_id);
    let statuses = ["CREATED", "CANCELLED", "PAID", "CREATED", "CREATED"];
    let rows: Vec<String> = c.orders[..5]
        .iter()
        .zip(statuses)
        .map(|(o, s)| row(o, s))
        .collect();
    maria(
        Some(&db),
        &format!("INSERT INTO {table} VALUES {}", rows.join(",")),
    );
    let p = c.parts.dir.path().join("sink.toml");
    let text = format!(
        "{}[[mysql.shards]]\nurl = \"mysql://root@127.0.0.1:{port}/{db}\"\n",
        config_text(&c.parts.broker, &c.parts.redis_url(), true)
    );
    std::fs::write(&p, &text).unwrap();
    let (code, out, err) = reconcile(&p, &["--sale", "1"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("sink: logs created 3 paid 2 cancelled 1; sink created 3 paid 1 cancelled 1 (void 0); lag 2 orders; agrees"),
        "{out}"
    );
    // An order whose creation an abort undid keeps a VOID row: fine.
    maria(
        Some(&db),
        &format!(
            "INSERT INTO {table} VALUES ({}, 1, 'VOID')",
            c.orders[5].order_id + 1000
        ),
    );
    let (code, out, _) = reconcile(&p, &["--sale", "1"]);
    assert_eq!(code, 0, "{out}");
    // The sink says paid where the logs say cancelled, and holds an
    // order no log does.
    maria(
        Some(&db),
        &format!(
            "UPDATE {table} SET status = 'PAID' WHERE order_id = {}; INSERT INTO {table} VALUES ({}, 1, 'CREATED')",
            c.orders[1].order_id,
            c.orders[5].order_id + 2000
        ),
    );
    let (code, j) = reconcile_json(&p, &["--sale", "1"]);
    assert_eq!(code, 1, "{j:#}");
    let s = sale(&j, 1);
    assert_eq!(s["verdict"], "agree", "Redis still agrees: {s:#}");
    let d = s["sink"]["disagreements"].to_string();
    assert!(
        d.contains(&format!(
            "order {}: the logs say CANCELLED, the sink's row says PAID",
            c.orders[1].order_id
        )),
        "{d}"
    );
    assert!(
        d.contains(&format!(
            "the sink holds order {} (CREATED)",
            c.orders[5].order_id + 2000
        )),
        "{d}"
    );
    assert_eq!(s["sink"]["lag"], 2);
    maria(None, &format!("DROP DATABASE {db}"));

    // MySQL that cannot be reached: 3.
    let closed = free_port();
    std::fs::write(
        &p,
        text.replace(
            &format!("127.0.0.1:{port}/"),
            &format!("127.0.0.1:{closed}/"),
        ),
    )
    .unwrap();
    let (code, _, err) = reconcile(&p, &["--sale", "1"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("shard 0"), "{err}");
}
