//! Fills a Kafka topic with a realistic order stream and takes Kafka
//! snapshots of it, for measuring start-up (`bench/recovery-kafka`).
//!
//!   gen_topic fill --brokers B --topic T [--events N] [--sales S]
//!                  [--partitions P] [--group G]
//!       N events (default 10,000,000) written through the real producer
//!       (KafkaLog, a commit per G events, default 1024): S sales (default
//!       8), then every user places an order in sale `user % S`, every
//!       fourth pays, every tenth cancels, produced by the real engine.
//!       Orders expire a day after the run. Prints the next LSN.
//!   gen_topic snapshot --brokers B --topic T --dir D --upto LSN
//!       What the follower does: merge the topic up to LSN (on to the next
//!       commit boundary) into an engine of its own and write its snapshot
//!       and cut into D.
//!   gen_topic recover --brokers B --topic T --dir D
//!       What start-up does: the newest snapshot in D that fits the topic
//!       (if any) and the tail, or the whole topic; prints the times.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flashd_engine::{ActivitySpec, Engine, EngineConfig, Event, PlaceOrder, Placed};
use flashd_kafka::{
    apply_replayed, ensure_topic, recover_with_snapshot, write_kafka_snapshot, KafkaConfig,
    KafkaLog, TopicReader,
};
use flashd_log::OrderLog;

const DAY_MS: u64 = 24 * 3600 * 1000;

struct Args {
    cmd: String,
    brokers: String,
    topic: String,
    events: u64,
    sales: u32,
    partitions: i32,
    group: usize,
    dir: Option<PathBuf>,
    upto: Option<u64>,
}

fn parse() -> Args {
    let mut it = std::env::args().skip(1);
    let cmd = it.next().unwrap_or_else(|| usage("a command is required"));
    let mut a = Args {
        cmd,
        brokers: String::new(),
        topic: String::new(),
        events: 10_000_000,
        sales: 8,
        partitions: 4,
        group: 1024,
        dir: None,
        upto: None,
    };
    while let Some(k) = it.next() {
        let v = it
            .next()
            .unwrap_or_else(|| usage(&format!("{k} needs a value")));
        let num = |what: &str| -> u64 {
            v.parse()
                .unwrap_or_else(|_| usage(&format!("{what}: a number")))
        };
        match k.as_str() {
            "--brokers" => a.brokers = v.clone(),
            "--topic" => a.topic = v.clone(),
            "--events" => a.events = num("--events"),
            "--sales" => a.sales = num("--sales").clamp(1, 4096) as u32,
            "--partitions" => a.partitions = num("--partitions").clamp(1, 1024) as i32,
            "--group" => a.group = num("--group").max(1) as usize,
            "--dir" => a.dir = Some(PathBuf::from(&v)),
            "--upto" => a.upto = Some(num("--upto")),
            _ => usage(&format!("unknown argument {k}")),
        }
    }
    if a.brokers.is_empty() || a.topic.is_empty() {
        usage("--brokers and --topic are required");
    }
    a
}

fn main() {
    let a = parse();
    let cfg = KafkaConfig {
        brokers: a.brokers.clone(),
        topic: a.topic.clone(),
        timeout: Duration::from_secs(30),
        properties: Vec::new(),
    };
    let engine = || {
        Engine::new(EngineConfig {
            order_ttl_ms: DAY_MS,
            ..EngineConfig::default()
        })
    };
    match a.cmd.as_str() {
        "fill" => fill(&a, &cfg),
        "snapshot" => {
            let dir = a.dir.clone().unwrap_or_else(|| usage("--dir is required"));
            let upto = a.upto.unwrap_or_else(|| usage("--upto is required"));
            let e = engine();
            let t0 = Instant::now();
            let mut r = TopicReader::open(&cfg, None).expect("open the topic");
            // On to the first whole cut at or past `upto` (a commit's
            // boundary: the follower only ever stops at one).
            let mut to = upto;
            let cut = loop {
                r.run(Some(to), &mut |lsn, rec| apply_replayed(&e, lsn, rec))
                    .expect("replay");
                match r.cut() {
                    Some(c) => break c,
                    None => to += 1,
                }
            };
            let merged = t0.elapsed();
            let path = write_kafka_snapshot(&dir, &e, &cut, true).expect("write snapshot");
            eprintln!(
                "snapshot at LSN {} (merged in {:.1} s, written in {:.1} s): {}",
                cut.next_lsn,
                merged.as_secs_f64(),
                (t0.elapsed() - merged).as_secs_f64(),
                path.display()
            );
        }
        "recover" => {
            let dir = a.dir.clone().unwrap_or_else(|| usage("--dir is required"));
            let e = engine();
            let t0 = Instant::now();
            let r = recover_with_snapshot(&cfg, &dir, &e).expect("recover");
            e.check_invariants().expect("invariants");
            println!(
                "recovered in {} ms (snapshot {:?}: load {} ms, replay {} ms, {} events replayed, next LSN {})",
                t0.elapsed().as_millis(),
                r.snapshot.as_ref().map(|s| s.0),
                r.load_ms,
                r.replay_ms,
                r.rec.events,
                r.rec.next_lsn
            );
        }
        other => usage(&format!("unknown command {other}")),
    }
}

fn fill(a: &Args, cfg: &KafkaConfig) {
    ensure_topic(cfg, a.partitions).expect("create the topic");
    let mut log = KafkaLog::open(cfg.clone(), 0).expect("open the producer");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64;
    let engine = Engine::new(EngineConfig {
        order_ttl_ms: DAY_MS,
        ..EngineConfig::default()
    });
    let t0 = Instant::now();
    let mut batch: Vec<Event> = Vec::with_capacity(a.group * 2);
    let mut written: u64 = 0;
    for s in 0..a.sales {
        engine
            .create_activity(
                &ActivitySpec {
                    sku_id: format!("GEN-{s}"),
                    name: "generated".into(),
                    price_cents: 999,
                    stock: a.events,
                    start_at: now - 60_000,
                    end_at: now + DAY_MS,
                    per_user_limit: 1,
                },
                now,
                &mut batch,
            )
            .expect("create sale");
    }
    let mut user: u64 = 0;
    let mut request_id = String::new();
    while written + (batch.len() as u64) < a.events {
        user += 1;
        request_id.clear();
        write!(request_id, "r-{user}").expect("write to a String");
        let placed = engine
            .place_order(
                &PlaceOrder {
                    activity_id: (user % u64::from(a.sales)) as u32 + 1,
                    user_id: user,
                    quantity: 1,
                    request_id: &request_id,
                },
                now,
                &mut batch,
            )
            .expect("place order");
        let Placed::Created(order) = placed else {
            unreachable!("every user buys once")
        };
        if user.is_multiple_of(4) {
            engine.pay(user, order.id, now, &mut batch).expect("pay");
        } else if user % 10 == 1 {
            engine
                .cancel(user, order.id, now, &mut batch)
                .expect("cancel");
        }
        if batch.len() >= a.group {
            log.append(&batch).expect("append");
            written = log.commit().expect("commit");
            batch.clear();
        }
    }
    if !batch.is_empty() {
        log.append(&batch).expect("append");
        written = log.commit().expect("commit");
    }
    eprintln!(
        "wrote {written} events for {user} users into {} in {:.1} s",
        cfg.topic,
        t0.elapsed().as_secs_f64()
    );
    println!("{written}");
}

fn usage(why: &str) -> ! {
    eprintln!(
        "gen_topic: {why}\nusage: gen_topic fill|snapshot|recover --brokers B --topic T [--events N] [--sales S] [--partitions P] [--group G] [--dir D] [--upto LSN]"
    );
    std::process::exit(2)
}
