//! flashd-sink: projects the order log (the Kafka topic) into sharded
//! MySQL, where the rest of the business reads orders. A process role of
//! its own (`flashd sink`), or a thread group inside `flashd serve`.
//!
//! It owns the MySQL schema and its migration, the consumer group member,
//! the projection of events into rows and the placement of users on
//! shards. It must never change the order log nor decide anything about
//! stock: every counter it writes is folded from the engine's events.
//!
//! One consumer-group member reads batches of records, writes them to the
//! shards with multi-row `INSERT ... ON DUPLICATE KEY UPDATE`, and commits
//! the batch's offsets only after every shard committed its rows. A crash
//! between the two replays the batch; every write is idempotent, so the
//! replay changes nothing:
//!
//! * an order row carries `version`, the LSN of the last event applied to
//!   it; a status change applies only if its LSN is newer;
//! * `order_events` rows are keyed by (LSN, position in the record);
//! * the `activities` row (on shard 0) carries the LSN of the last event
//!   folded into its counters; counters are read, folded with the newer
//!   events and written back in one transaction.
//!
//! Abort records are tombstones by LSN (see `flashd_kafka`): an event
//! arriving before its abort is applied and then undone by it; one
//! arriving after it, or behind a later group on its partition (a late
//! record of a replaced producer), is never applied. The sink keeps, on
//! shard 0, the voided ranges (`flashd_aborts`) and per partition the
//! latest group fully written (`flashd_sink_partitions`), so this holds
//! across restarts and replays too.
//!
//! A write error is either transient (the server or the connection is
//! unwell: retried with backoff, as long as it lasts, loudly) or permanent
//! (the data or the statement is wrong and will be wrong forever): then the
//! batch is written one record at a time and each record that fails
//! permanently is parked in `flashd_poison` on shard 0 with its
//! topic/partition/offset, LSN, bytes and error, logged and counted, and
//! the sink moves on.
//!
//! Orders are placed by user id with a jump consistent hash, so one user's
//! orders stay on one shard and adding a shard moves only 1/n of users.
//! Order tables are per month of the order's creation (`orders_YYYYMM`,
//! from the snowflake id's timestamp, so status changes find the table
//! without a lookup).
//!
//! The sink runs on threads of its own (a consumer thread and a small
//! tokio runtime for MySQL), never on a reactor or worker.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use flashd_engine::{ActivityId, CancelReason, Event, OrderId, UserId, EPOCH_MS};
use mysql_async::prelude::*;
use mysql_async::{Opts, OptsBuilder, Pool, TxOpts, Value};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use futures_util::FutureExt;

mod error;
pub use error::SinkError;

use flashd_kafka::{
    decode_message, encode_abort, encode_value, Abort, KafkaConfig, LogRecord, Tombstones,
    TopicRecord,
};

/// Shard of a user: Lamping & Veach's jump consistent hash.
pub fn shard_of(user: UserId, shards: usize) -> usize {
    let mut key = user;
    let (mut b, mut j) = (-1i64, 0i64);
    while j < shards as i64 {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = (((b + 1) as f64) * ((1u64 << 31) as f64 / (((key >> 33) + 1) as f64))) as i64;
    }
    b.max(0) as usize
}

/// `orders_YYYYMM` of the month the order was created in (UTC).
pub fn order_table(id: OrderId) -> String {
    let ms = (id >> 22) + EPOCH_MS;
    let t = time::OffsetDateTime::from_unix_timestamp((ms / 1000) as i64)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!("orders_{:04}{:02}", t.year(), t.month() as u8)
}

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS activities (
        id INT UNSIGNED NOT NULL PRIMARY KEY,
        sku_id VARCHAR(255) NOT NULL,
        name VARCHAR(255) NOT NULL,
        price_cents BIGINT UNSIGNED NOT NULL,
        stock BIGINT NOT NULL,
        remaining BIGINT NOT NULL,
        reserved BIGINT NOT NULL,
        sold BIGINT NOT NULL,
        start_at BIGINT UNSIGNED NOT NULL,
        end_at BIGINT UNSIGNED NOT NULL,
        per_user_limit INT UNSIGNED NOT NULL,
        created_at BIGINT UNSIGNED NOT NULL,
        void TINYINT NOT NULL DEFAULT 0,
        version BIGINT UNSIGNED NOT NULL COMMENT 'LSN of the last event folded in'
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
    "CREATE TABLE IF NOT EXISTS orders_template (
        order_id BIGINT UNSIGNED NOT NULL PRIMARY KEY,
        activity_id INT UNSIGNED NOT NULL,
        user_id BIGINT UNSIGNED NOT NULL,
        quantity INT UNSIGNED NOT NULL,
        amount_cents BIGINT UNSIGNED NOT NULL DEFAULT 0,
        request_id VARCHAR(128) NOT NULL DEFAULT '',
        status VARCHAR(12) NOT NULL,
        created_at BIGINT UNSIGNED NOT NULL,
        expires_at BIGINT UNSIGNED NOT NULL DEFAULT 0,
        updated_at BIGINT UNSIGNED NOT NULL,
        version BIGINT UNSIGNED NOT NULL COMMENT 'LSN of the last event applied',
        KEY by_user (user_id),
        KEY by_activity (activity_id, status)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
    "CREATE TABLE IF NOT EXISTS order_events (
        lsn BIGINT UNSIGNED NOT NULL,
        seq INT UNSIGNED NOT NULL,
        order_id BIGINT UNSIGNED NOT NULL,
        activity_id INT UNSIGNED NOT NULL,
        user_id BIGINT UNSIGNED NOT NULL,
        kind VARCHAR(12) NOT NULL,
        reason VARCHAR(12) NOT NULL DEFAULT '',
        quantity INT UNSIGNED NOT NULL,
        at BIGINT UNSIGNED NOT NULL,
        PRIMARY KEY (lsn, seq),
        KEY by_order (order_id)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
];

/// The sink's own tables, on shard 0 only.
const META_SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS flashd_aborts (
        abort_lsn BIGINT UNSIGNED NOT NULL PRIMARY KEY,
        from_lsn BIGINT UNSIGNED NOT NULL,
        to_lsn BIGINT UNSIGNED NOT NULL COMMENT 'exclusive: LSNs from_lsn..to_lsn are void',
        KEY by_end (to_lsn)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
    "CREATE TABLE IF NOT EXISTS flashd_sink_partitions (
        topic VARCHAR(255) NOT NULL,
        partition_id INT NOT NULL,
        group_lsn BIGINT UNSIGNED NOT NULL COMMENT 'highest group of the partition fully written',
        PRIMARY KEY (topic, partition_id)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
    "CREATE TABLE IF NOT EXISTS flashd_poison (
        id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
        topic VARCHAR(255) NOT NULL,
        partition_id INT NOT NULL,
        record_offset BIGINT NOT NULL,
        lsn BIGINT UNSIGNED NOT NULL,
        error TEXT NOT NULL,
        payload LONGBLOB NOT NULL COMMENT 'the record as in the topic (format 1)',
        parked_at BIGINT UNSIGNED NOT NULL,
        UNIQUE KEY at_offset (topic, partition_id, record_offset, lsn)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
];

/// Tables whose text columns must hold any UTF-8 (a 4-byte character in a
/// name is a customer's right, not a poison record): older schemas took
/// the server's default character set.
const TEXT_TABLES: &[&str] = &["activities", "orders_template", "order_events"];

/// Wall-clock milliseconds: the one read of the clock in the sink (the
/// stamps of rows it writes itself, and the month tables it creates ahead).
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Is `url` a MySQL URL that names a database?
pub fn check_url(url: &str) -> Result<(), String> {
    let o = Opts::from_url(url).map_err(|e| e.to_string())?;
    match o.db_name() {
        Some(d) if !d.is_empty() => Ok(()),
        _ => Err("must name a database (mysql://user@host:port/DATABASE)".into()),
    }
}

/// Create each shard's database and tables (and this month's and next
/// month's order tables; the sink's own tables on shard 0), and widen
/// tables of an older schema to utf8mb4. Idempotent.
pub async fn migrate(shards: &[String]) -> Result<(), SinkError> {
    for (i, url) in shards.iter().enumerate() {
        let first = i == 0;
        let opts = Opts::from_url(url).map_err(|e| SinkError::Url {
            url: url.clone(),
            source: e,
        })?;
        let db = opts
            .db_name()
            .ok_or_else(|| SinkError::NoDatabase { url: url.clone() })?
            .to_string();
        let my_err = |e| SinkError::Mysql {
            url: url.clone(),
            source: e,
        };
        let server = Opts::from(OptsBuilder::from_opts(opts.clone()).db_name(None::<String>));
        let mut c = mysql_async::Conn::new(server).await.map_err(my_err)?;
        c.query_drop(format!(
            "CREATE DATABASE IF NOT EXISTS `{}` CHARACTER SET utf8mb4",
            db.replace('`', "``")
        ))
        .await
        .map_err(my_err)?;
        c.disconnect().await.map_err(my_err)?;
        let mut c = mysql_async::Conn::new(opts).await.map_err(my_err)?;
        for s in SCHEMA {
            c.query_drop(*s).await.map_err(my_err)?;
        }
        if first {
            for s in META_SCHEMA {
                c.query_drop(*s).await.map_err(my_err)?;
            }
        }
        // Tables made by an older schema in a 3-byte (or narrower)
        // character set: widen them (and every month's order table).
        let narrow: Vec<String> = c
            .exec(
                "SELECT TABLE_NAME FROM information_schema.TABLES t \
                 JOIN information_schema.COLLATION_CHARACTER_SET_APPLICABILITY c \
                   ON c.COLLATION_NAME = t.TABLE_COLLATION \
                 WHERE t.TABLE_SCHEMA = ? AND c.CHARACTER_SET_NAME <> 'utf8mb4'",
                (db.as_str(),),
            )
            .await
            .map_err(my_err)?;
        for t in narrow {
            if TEXT_TABLES.contains(&t.as_str()) || t.starts_with("orders_") {
                tracing::info!(db = %db, table = %t, "converting to utf8mb4");
                c.query_drop(format!(
                    "ALTER TABLE `{}` CONVERT TO CHARACTER SET utf8mb4",
                    t.replace('`', "``")
                ))
                .await
                .map_err(my_err)?;
            }
        }
        let now = now_ms();
        for ms in [now, now + 31 * 86_400_000] {
            let id = ms.saturating_sub(EPOCH_MS) << 22;
            c.query_drop(format!(
                "CREATE TABLE IF NOT EXISTS {} LIKE orders_template",
                order_table(id)
            ))
            .await
            .map_err(my_err)?;
        }
        c.disconnect().await.map_err(my_err)?;
    }
    Ok(())
}

#[derive(Debug, Clone)]
pub struct SinkConfig {
    pub kafka: KafkaConfig,
    pub group: String,
    pub shards: Vec<String>,
    pub batch_max: usize,
    pub batch_wait: Duration,
}

/// What `/metrics` shows of the sink.
pub struct SinkStats {
    pub events: AtomicU64,
    pub batches: AtomicU64,
    /// Records per batch: <=1, <=16, <=64, <=256, <=1024, <=4096, more.
    pub batch_hist: [AtomicU64; 7],
    pub rows: Vec<AtomicU64>,
    /// Records in the topic not yet written (sum over partitions).
    pub lag: AtomicI64,
    pub retries: AtomicU64,
    pub write_ns_sum: AtomicU64,
    pub mysql_up: AtomicBool,
    pub last_error: Mutex<String>,
    /// Records parked in `flashd_poison` (a write error that would recur
    /// forever, or bytes that do not decode).
    pub poison: AtomicU64,
    /// Events not applied because an abort voids them or they arrived
    /// behind a higher LSN of their partition.
    pub voided: AtomicU64,
    /// Partitions assigned to this member now.
    pub assigned: AtomicU64,
    /// Times this member left and rejoined its group because the group
    /// was stuck (see [`UNASSIGNED_REJOIN`]).
    pub rejoins: AtomicU64,
}

pub const SINK_BATCH_BOUNDS: [u64; 6] = [1, 16, 64, 256, 1024, 4096];

impl SinkStats {
    fn new(shards: usize) -> SinkStats {
        SinkStats {
            events: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            batch_hist: Default::default(),
            rows: (0..shards).map(|_| AtomicU64::new(0)).collect(),
            lag: AtomicI64::new(0),
            retries: AtomicU64::new(0),
            write_ns_sum: AtomicU64::new(0),
            mysql_up: AtomicBool::new(true),
            last_error: Mutex::new(String::new()),
            poison: AtomicU64::new(0),
            voided: AtomicU64::new(0),
            assigned: AtomicU64::new(0),
            rejoins: AtomicU64::new(0),
        }
    }
}

pub struct Sink {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub stats: Arc<SinkStats>,
}

impl Sink {
    pub fn start(cfg: SinkConfig) -> Result<Sink, SinkError> {
        if cfg.shards.is_empty() {
            return Err(SinkError::NoShards);
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("flashd-sink-db")
            .enable_all()
            .build()
            .map_err(SinkError::Runtime)?;
        let pools: Vec<Pool> = cfg
            .shards
            .iter()
            .map(|u| {
                Opts::from_url(u)
                    .map(Pool::new)
                    .map_err(|e| SinkError::Url {
                        url: u.clone(),
                        source: e,
                    })
            })
            .collect::<Result<_, _>>()?;
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &cfg.kafka.brokers)
            // A member killed -9 holds its partitions until its session
            // times out (librdkafka's default is 45 s): a restarted sink
            // should not wait that long.
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "1000")
            .set("reconnect.backoff.max.ms", "1000")
            .set("auto.offset.reset", "earliest")
            // A fetch that finds nothing new waits this long at the broker
            // (librdkafka's default is 500 ms).
            .set("fetch.wait.max.ms", "20")
            // Also the group's rebalance timeout: how long a join waits for
            // the members. At 24 h one rebalance after a broker restart and
            // a sink kill -9 stalled the sink for minutes on tansu (the
            // chaos soak). A MySQL outage longer than this makes the sink
            // leave the group and rejoin on its next poll; its uncommitted
            // batch is then replayed, which changes nothing (idempotent
            // rows, offsets committed after them).
            .set("max.poll.interval.ms", "30000");
        for (k, v) in &cfg.kafka.properties {
            c.set(k, v);
        }
        c.set("group.id", &cfg.group)
            // Offsets are committed by hand, after the rows.
            .set("enable.auto.commit", "false");
        let consumer: BaseConsumer = c.create()?;
        consumer.subscribe(&[&cfg.kafka.topic])?;
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(SinkStats::new(cfg.shards.len()));
        let (s2, st2) = (stop.clone(), stats.clone());
        let thread = std::thread::Builder::new()
            .name("flashd-sink".into())
            .spawn(move || {
                let mut w = Writer {
                    urls: cfg.shards.clone(),
                    pools,
                    tables: vec![HashSet::new(); cfg.shards.len()],
                    stats: st2.clone(),
                    topic: cfg.kafka.topic.clone(),
                    meta_ready: false,
                };
                run(&cfg, &consumer, &rt, &mut w, &s2, &st2);
                rt.block_on(async {
                    for p in w.pools {
                        let _ = p.disconnect().await;
                    }
                });
            })
            .map_err(SinkError::Thread)?;
        Ok(Sink {
            stop,
            thread: Some(thread),
            stats,
        })
    }

    /// Finish the batch in hand (if MySQL takes it), then stop.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A record of a batch, with where it came from.
#[derive(Debug, Clone)]
struct Rec {
    partition: i32,
    offset: i64,
    /// The group of its message (see [`flashd_kafka::KIND_GROUP_EVENTS`]).
    group: u64,
    lsn: u64,
    rec: TopicRecord,
}

/// A message whose bytes do not decode: parked as it is.
struct Undecodable {
    partition: i32,
    offset: i64,
    payload: Vec<u8>,
    error: String,
}

fn run(
    cfg: &SinkConfig,
    consumer: &BaseConsumer,
    rt: &tokio::runtime::Runtime,
    w: &mut Writer,
    stop: &AtomicBool,
    stats: &SinkStats,
) {
    // Next offset to read, per partition, as far as this member knows.
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    let mut known: BTreeMap<i32, (i64, i64)> = BTreeMap::new();
    let mut last_lag = Instant::now() - Duration::from_secs(10);
    let mut watch = GroupWatch::default();
    while !stop.load(Ordering::Acquire) {
        let mut batch: Vec<Rec> = Vec::new();
        let mut bad: Vec<Undecodable> = Vec::new();
        let mut offsets: BTreeMap<i32, i64> = BTreeMap::new();
        let started = Instant::now();
        while batch.len() < cfg.batch_max {
            let wait = if batch.is_empty() && bad.is_empty() {
                Duration::from_millis(100)
            } else {
                cfg.batch_wait.saturating_sub(started.elapsed())
            };
            if !(batch.is_empty() && bad.is_empty()) && wait.is_zero() {
                break;
            }
            match consumer.poll(wait) {
                None => {
                    if batch.is_empty() && bad.is_empty() {
                        break;
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "sink: kafka consumer error");
                    break;
                }
                Some(Ok(m)) => {
                    let v = m.payload().unwrap_or(&[]);
                    let (partition, offset) = (m.partition(), m.offset());
                    match decode_message(v) {
                        Ok((group, r)) => batch.extend(r.into_iter().map(|(lsn, rec)| Rec {
                            partition,
                            offset,
                            group,
                            lsn,
                            rec,
                        })),
                        // Not ours to judge: park it rather than stall
                        // every order behind it.
                        Err(e) => bad.push(Undecodable {
                            partition,
                            offset,
                            payload: v.to_vec(),
                            error: format!("undecodable record: {e}"),
                        }),
                    }
                    offsets.insert(partition, offset + 1);
                }
            }
        }
        if last_lag.elapsed() >= Duration::from_millis(500) {
            update_lag(cfg, consumer, &next, &mut known, stats);
            watch.check(cfg, consumer, stats);
            last_lag = Instant::now();
        }
        if offsets.is_empty() {
            continue;
        }
        let t0 = Instant::now();
        // While MySQL is down, the lag gauge keeps moving.
        let mut lag = || {
            if last_lag.elapsed() >= Duration::from_millis(500) {
                update_lag(cfg, consumer, &next, &mut known, stats);
                last_lag = Instant::now();
            }
        };
        // Undecodable messages first: parked whatever the rest does.
        for u in &bad {
            let job = Job::Park {
                partition: u.partition,
                offset: u.offset,
                lsn: 0,
                payload: &u.payload,
                error: &u.error,
            };
            match retry_transient(rt, w, stop, stats, &job, &mut lag) {
                Ok(true) => poisoned(stats, u.partition, u.offset, 0, &u.error),
                Ok(false) => return,
                Err(e) => unparkable(stats, u.partition, u.offset, 0, &u.error, &e),
            }
        }
        match retry_transient(rt, w, stop, stats, &Job::Write(&batch), &mut lag) {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::error!(error = %e.msg, records = batch.len(), "sink: a write error that will recur; writing the batch one record at a time to park what fails");
                for r in &batch {
                    match retry_transient(
                        rt,
                        w,
                        stop,
                        stats,
                        &Job::Write(std::slice::from_ref(r)),
                        &mut lag,
                    ) {
                        Ok(true) => continue,
                        Ok(false) => return,
                        Err(e) => {
                            let payload = record_bytes(r);
                            let job = Job::Park {
                                partition: r.partition,
                                offset: r.offset,
                                lsn: r.lsn,
                                payload: &payload,
                                error: &e.msg,
                            };
                            match retry_transient(rt, w, stop, stats, &job, &mut lag) {
                                Ok(true) => poisoned(stats, r.partition, r.offset, r.lsn, &e.msg),
                                Ok(false) => return,
                                Err(pe) => {
                                    unparkable(stats, r.partition, r.offset, r.lsn, &e.msg, &pe)
                                }
                            }
                        }
                    }
                }
            }
        }
        if !stats.mysql_up.swap(true, Ordering::Relaxed) {
            tracing::info!("sink: MySQL writes succeed again");
        }
        let n = batch.len() as u64;
        stats.events.fetch_add(n, Ordering::Relaxed);
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats
            .write_ns_sum
            .fetch_add(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
        let bi = SINK_BATCH_BOUNDS
            .iter()
            .position(|b| n <= *b)
            .unwrap_or(SINK_BATCH_BOUNDS.len());
        stats.batch_hist[bi].fetch_add(1, Ordering::Relaxed);
        let mut tpl = TopicPartitionList::new();
        for (p, o) in &offsets {
            next.insert(*p, *o);
            let _ = tpl.add_partition_offset(&cfg.kafka.topic, *p, Offset::Offset(*o));
        }
        let tc = Instant::now();
        let committed = consumer.commit(&tpl, CommitMode::Sync);
        tracing::debug!(
            records = batch.len(),
            fill_ms = started.elapsed().as_millis() as u64,
            commit_ms = tc.elapsed().as_millis() as u64,
            "sink batch"
        );
        if let Err(e) = committed {
            // The rows are in; a replay of this batch changes nothing.
            tracing::warn!(error = %e, "sink: offset commit failed; the batch may be replayed");
        }
    }
}

/// What the sink asks of MySQL, retried as a unit.
enum Job<'a> {
    Write(&'a [Rec]),
    Park {
        partition: i32,
        offset: i64,
        lsn: u64,
        payload: &'a [u8],
        error: &'a str,
    },
}

/// Run `job` until it succeeds (`Ok(true)`), the sink is stopped
/// (`Ok(false)`), or it fails in a way that will recur (`Err`). Transient
/// failures are retried with backoff and fresh pools for as long as they
/// last, shown by `flashd_sink_mysql_up` and the retry counter; an error
/// we cannot classify is retried [`UNCLASSIFIED_ATTEMPTS_MAX`] times, then
/// taken as permanent.
fn retry_transient(
    rt: &tokio::runtime::Runtime,
    w: &mut Writer,
    stop: &AtomicBool,
    stats: &SinkStats,
    job: &Job<'_>,
    waiting: &mut dyn FnMut(),
) -> Result<bool, WriteError> {
    let mut backoff = Duration::from_millis(50);
    let mut unclassified = 0u32;
    loop {
        // A server that died mid-query can leave a connection waiting
        // forever: bound each attempt.
        let attempt = rt.block_on(async {
            let fut = async {
                match job {
                    Job::Write(batch) => w.write(batch).await,
                    Job::Park {
                        partition,
                        offset,
                        lsn,
                        payload,
                        error,
                    } => w.park(*partition, *offset, *lsn, payload, error).await,
                }
            };
            tokio::time::timeout(WRITE_TIMEOUT, fut)
                .await
                .unwrap_or_else(|_| {
                    Err(WriteError {
                        class: Class::Transient,
                        msg: format!("write took over {WRITE_TIMEOUT:?}"),
                    })
                })
        });
        let e = match attempt {
            Ok(()) => return Ok(true),
            Err(e) => e,
        };
        match e.class {
            Class::Permanent => return Err(e),
            Class::Unclassified => {
                unclassified += 1;
                if unclassified >= UNCLASSIFIED_ATTEMPTS_MAX {
                    tracing::error!(error = %e.msg, attempts = unclassified, "sink: an unclassified MySQL error keeps recurring; taking it as permanent");
                    return Err(e);
                }
            }
            Class::Transient => {}
        }
        stats.retries.fetch_add(1, Ordering::Relaxed);
        if stats.mysql_up.swap(false, Ordering::Relaxed) {
            tracing::warn!(error = %e.msg, "sink: MySQL write failed; retrying with backoff (offsets not committed)");
        }
        if let Ok(mut l) = stats.last_error.lock() {
            *l = e.msg.clone();
        }
        if stop.load(Ordering::Acquire) {
            return Ok(false);
        }
        // Fresh pools: connections to a server that went away are not
        // worth reusing.
        w.reset(rt);
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_secs(2));
        waiting();
    }
}

fn poisoned(stats: &SinkStats, partition: i32, offset: i64, lsn: u64, error: &str) {
    stats.poison.fetch_add(1, Ordering::Relaxed);
    if let Ok(mut l) = stats.last_error.lock() {
        *l = error.to_string();
    }
    tracing::error!(
        partition,
        offset,
        lsn,
        error,
        "sink: poison record parked in flashd_poison (shard 0); the sink moves on"
    );
}

fn unparkable(
    stats: &SinkStats,
    partition: i32,
    offset: i64,
    lsn: u64,
    error: &str,
    why: &WriteError,
) {
    stats.poison.fetch_add(1, Ordering::Relaxed);
    tracing::error!(partition, offset, lsn, error, park_error = %why.msg, "sink: poison record could not even be parked; skipped (it stays in the topic at this offset)");
}

/// One record as the topic would hold it alone (format 1).
fn record_bytes(r: &Rec) -> Vec<u8> {
    let mut v = Vec::new();
    match &r.rec {
        TopicRecord::Event(ev) => encode_value(r.lsn, &LogRecord::Event(ev.clone()), &mut v),
        TopicRecord::Abort(a) => encode_abort(r.lsn, a, &mut v),
    }
    v
}

/// An unclassified error this many times in a row counts as permanent:
/// with the backoff that is about ten seconds, far past a deadlock or a
/// failover, and short enough that nothing stalls unnoticed.
const UNCLASSIFIED_ATTEMPTS_MAX: u32 = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// The server or the connection: retry.
    Transient,
    /// The data or the statement: it will fail the same way forever.
    Permanent,
    /// Not known to be either.
    Unclassified,
}

#[derive(Debug)]
struct WriteError {
    class: Class,
    msg: String,
}

/// MySQL/MariaDB server error codes that say the server, the connection or
/// contention is at fault (retrying is right).
const TRANSIENT_CODES: &[u16] = &[
    1021, // disk full
    1030, // got error from storage engine
    1037, 1038, 1041, // out of memory
    1040, // too many connections
    1043, // bad handshake
    1044, 1045, 1142, // access denied: an operator fixes grants
    1049, // unknown database: not migrated yet
    1053, // server shutdown in progress
    1114, // table is full
    1146, // table does not exist: recreated after a reset
    1152, 1153, 1154, 1155, 1156, 1157, 1158, 1159, 1160, 1161, // network
    1180, 1181, // commit / rollback failed
    1203, // too many connections of this user
    1205, // lock wait timeout
    1213, // deadlock
    1290, 1836, 1792, // read-only
    1317, // query interrupted
    1615, // statement must be re-prepared
    1637, // too many active transactions
    1927, // connection killed
    1969, 3024, // statement timeout
    2002, 2003, 2006, 2013, 2055, // client: cannot connect, gone away, lost
    4031, // disconnected for inactivity
];

/// Codes that say the data or the statement is wrong: the same write will
/// fail the same way forever.
const PERMANENT_CODES: &[u16] = &[
    1048, // column cannot be null
    1054, // unknown column
    1062, // duplicate key (our upserts never collide)
    1064, // syntax
    1136, // column count
    1118, // row size too large
    1264, // out of range
    1265, // data truncated
    1292, // incorrect value
    1300, // invalid character string
    1364, // field has no default
    1366, // incorrect string value (e.g. 4-byte UTF-8 in utf8)
    1367, // illegal value
    1390, // too many placeholders
    1406, // data too long
    1452, 1451, // foreign key
];

/// Which kind of failure a MySQL error is.
pub fn classify(e: &mysql_async::Error) -> Class {
    use mysql_async::{DriverError as D, Error as E};
    match e {
        E::Server(s) => classify_code(s.code),
        E::Io(_) => Class::Transient,
        E::Driver(d) => match d {
            D::ConnectionClosed
            | D::PoolDisconnected
            | D::PacketOutOfOrder
            | D::UnexpectedPacket { .. }
            | D::BadCompressedPacketHeader => Class::Transient,
            D::StmtParamsMismatch { .. }
            | D::StmtParamsNumberExceedsLimit { .. }
            | D::PacketTooLarge
            | D::MixedParams
            | D::NamedParamsForPositionalQuery
            | D::MissingNamedParam { .. } => Class::Permanent,
            _ => Class::Unclassified,
        },
        _ => Class::Unclassified,
    }
}

/// Which kind of failure a server error code is.
pub fn classify_code(code: u16) -> Class {
    if TRANSIENT_CODES.contains(&code) {
        Class::Transient
    } else if PERMANENT_CODES.contains(&code) {
        Class::Permanent
    } else {
        Class::Unclassified
    }
}

fn sql_err(e: mysql_async::Error) -> WriteError {
    WriteError {
        class: classify(&e),
        msg: e.to_string(),
    }
}

/// Park one record on shard 0 (idempotent: a replay updates the error).
async fn park(
    pool: &Pool,
    topic: &str,
    partition: i32,
    offset: i64,
    lsn: u64,
    payload: &[u8],
    error: &str,
) -> Result<(), WriteError> {
    let mut conn = pool.get_conn().await.map_err(sql_err)?;
    // TEXT holds 64 KiB; MySQL's messages are far shorter, but a message
    // quoting the bad value must not itself fail to park.
    let error: String = error.chars().take(POISON_ERROR_CHARS_MAX).collect();
    conn.exec_drop(
        "INSERT INTO flashd_poison (topic, partition_id, record_offset, lsn, error, payload, parked_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?) ON DUPLICATE KEY UPDATE error = VALUES(error)",
        (topic, partition, offset, lsn, error, payload, now_ms()),
    )
    .await
    .map_err(sql_err)
}

/// The longest error text kept with a parked record.
const POISON_ERROR_CHARS_MAX: usize = 4000;

fn update_lag(
    cfg: &SinkConfig,
    consumer: &BaseConsumer,
    next: &BTreeMap<i32, i64>,
    known: &mut BTreeMap<i32, (i64, i64)>,
    stats: &SinkStats,
) {
    let Ok(assigned) = consumer.assignment() else {
        return;
    };
    let mut lag = 0i64;
    for e in assigned.elements() {
        let p = e.partition();
        // A partition whose watermarks do not come back counts with the
        // last ones it reported (tansu has been seen not to answer for an
        // empty partition after a restart; that must not freeze the gauge).
        let (low, high) =
            match consumer.fetch_watermarks(&cfg.kafka.topic, p, Duration::from_millis(500)) {
                Ok(w) => {
                    known.insert(p, w);
                    w
                }
                Err(_) => known.get(&p).copied().unwrap_or((0, 0)),
            };
        // Records fetched but not yet written still count as lag.
        let done = next.get(&p).copied().unwrap_or(low).max(low);
        lag += (high - done).max(0);
    }
    stats.lag.store(lag, Ordering::Relaxed);
}

/// A member that has had no partition for this long, while the group's
/// committed offsets have not moved and the topic holds records past them,
/// leaves and rejoins its group. Seen on tansu (the chaos soak): after a
/// broker restart and a member's kill -9, the restarted member stayed
/// unassigned for minutes with nothing consumed, and a fresh join ended
/// it. Where another member of the group is working, its commits move the
/// offsets and nobody rejoins.
pub const UNASSIGNED_REJOIN: Duration = Duration::from_secs(10);

/// How long the group checks may wait for the broker.
const GROUP_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Watches for a group that has stopped consuming (see
/// [`UNASSIGNED_REJOIN`]).
#[derive(Default)]
struct GroupWatch {
    /// Since when this member has had no partition, and the group's
    /// committed offsets then.
    unassigned: Option<(Instant, Vec<i64>)>,
}

impl GroupWatch {
    fn check(&mut self, cfg: &SinkConfig, consumer: &BaseConsumer, stats: &SinkStats) {
        let assigned = consumer.assignment().map_or(0, |a| a.count());
        stats.assigned.store(assigned as u64, Ordering::Relaxed);
        if assigned > 0 {
            self.unassigned = None;
            return;
        }
        let Some((since, before)) = &self.unassigned else {
            self.unassigned = group_offsets(cfg, consumer).map(|(c, _)| (Instant::now(), c));
            return;
        };
        if since.elapsed() < UNASSIGNED_REJOIN {
            return;
        }
        let Some((committed, behind)) = group_offsets(cfg, consumer) else {
            return;
        };
        if committed == *before && behind > 0 {
            tracing::warn!(
                unassigned_s = since.elapsed().as_secs(),
                records_behind = behind,
                "sink: no partition assigned and the group is not consuming; leaving and rejoining the group"
            );
            consumer.unsubscribe();
            if let Err(e) = consumer.subscribe(&[&cfg.kafka.topic]) {
                tracing::error!(error = %e, "sink: cannot subscribe again");
            }
            stats.rejoins.fetch_add(1, Ordering::Relaxed);
            self.unassigned = None;
        } else {
            self.unassigned = Some((Instant::now(), committed));
        }
    }
}

/// The group's committed offset per partition of the topic, and how many
/// records lie past them in all; `None` when the broker does not answer.
fn group_offsets(cfg: &SinkConfig, consumer: &BaseConsumer) -> Option<(Vec<i64>, i64)> {
    let md = consumer
        .fetch_metadata(Some(&cfg.kafka.topic), GROUP_CHECK_TIMEOUT)
        .ok()?;
    let topic = md.topics().iter().find(|t| t.name() == cfg.kafka.topic)?;
    let mut tpl = TopicPartitionList::new();
    for p in topic.partitions() {
        tpl.add_partition(&cfg.kafka.topic, p.id());
    }
    let committed = consumer.committed_offsets(tpl, GROUP_CHECK_TIMEOUT).ok()?;
    let mut offsets = Vec::new();
    let mut behind = 0i64;
    for e in committed.elements() {
        let c = match e.offset() {
            Offset::Offset(o) => o,
            _ => 0,
        };
        let (_, high) = consumer
            .fetch_watermarks(&cfg.kafka.topic, e.partition(), GROUP_CHECK_TIMEOUT)
            .ok()?;
        behind += (high - c).max(0);
        offsets.push(c);
    }
    Some((offsets, behind))
}

/// The longest one batch write may take before it is retried.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

struct Writer {
    urls: Vec<String>,
    pools: Vec<Pool>,
    /// Order tables known to exist, per shard.
    tables: Vec<HashSet<String>>,
    stats: Arc<SinkStats>,
    topic: String,
    /// The sink's own tables on shard 0 are known to exist.
    meta_ready: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    Created,
    Paid,
    Cancelled,
    Void,
}

impl St {
    fn name(self) -> &'static str {
        match self {
            St::Created => "CREATED",
            St::Paid => "PAID",
            St::Cancelled => "CANCELLED",
            St::Void => "VOID",
        }
    }
    fn parse(s: &str) -> Option<St> {
        Some(match s {
            "CREATED" => St::Created,
            "PAID" => St::Paid,
            "CANCELLED" => St::Cancelled,
            "VOID" => St::Void,
            _ => return None,
        })
    }
}

/// An order row image (or status change) to upsert.
struct OrderRow {
    order_id: OrderId,
    activity_id: ActivityId,
    user_id: UserId,
    quantity: u32,
    amount_cents: u64,
    request_id: String,
    status: St,
    created_at: u64,
    expires_at: u64,
    updated_at: u64,
    version: u64,
}

struct EventRow {
    lsn: u64,
    seq: u32,
    order_id: OrderId,
    activity_id: ActivityId,
    user_id: UserId,
    kind: &'static str,
    reason: &'static str,
    quantity: u32,
    at: u64,
}

#[derive(Debug, Clone, Default)]
struct ActivityRow {
    id: ActivityId,
    sku_id: String,
    name: String,
    price_cents: u64,
    stock: i64,
    remaining: i64,
    reserved: i64,
    sold: i64,
    start_at: u64,
    end_at: u64,
    per_user_limit: u32,
    created_at: u64,
    void: bool,
    version: u64,
    /// Not in MySQL yet: every event applies (LSNs start at 0).
    fresh: bool,
}

fn created_ms(id: OrderId) -> u64 {
    (id >> 22) + EPOCH_MS
}

impl Writer {
    fn reset(&mut self, rt: &tokio::runtime::Runtime) {
        let fresh: Vec<Pool> = self
            .urls
            .iter()
            .filter_map(|u| Opts::from_url(u).ok().map(Pool::new))
            .collect();
        if fresh.len() == self.pools.len() {
            for old in std::mem::replace(&mut self.pools, fresh) {
                rt.spawn(async move {
                    let _ = old.disconnect().await;
                });
            }
            // Tables may have been lost with the server's data: check again.
            for t in &mut self.tables {
                t.clear();
            }
            self.meta_ready = false;
        }
    }

    /// Write a batch (records in the order their partitions hold them).
    /// Every event is checked against the voided ranges and its
    /// partition's high-water mark first; see the module doc.
    async fn write(&mut self, batch: &[Rec]) -> Result<(), WriteError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.ensure_meta().await?;
        let (mut high, mut void) = self.load_marks(batch).await?;
        let start_high = high.clone();
        // Aborts that arrived late: only their ranges are kept.
        let mut late_aborts: Vec<(u64, Range<u64>)> = Vec::new();
        // Aborts are rare (a failed produce); they are applied one by one
        // between bulk runs of ordinary events.
        let mut run: Vec<(u64, &Event)> = Vec::new();
        let mut skipped = 0u64;
        for r in batch {
            // A message of a group older than one already written on its
            // partition is a replaced producer's: late.
            let h = high.get(&r.partition).copied();
            let late = h.is_some_and(|h| r.group < h);
            if !late {
                high.insert(r.partition, r.group);
            }
            match &r.rec {
                TopicRecord::Event(ev) => {
                    if late || void.covers(r.lsn) {
                        skipped += 1;
                    } else {
                        run.push((r.lsn, ev));
                    }
                }
                TopicRecord::Abort(a) => {
                    void.insert(a.covers.clone());
                    if late {
                        late_aborts.push((r.lsn, a.covers.clone()));
                    } else {
                        self.bulk(&run).await?;
                        run.clear();
                        self.abort(r.lsn, a).await?;
                    }
                }
            }
        }
        self.bulk(&run).await?;
        self.save_marks(&start_high, &high, &late_aborts).await?;
        if skipped > 0 {
            self.stats.voided.fetch_add(skipped, Ordering::Relaxed);
        }
        Ok(())
    }

    async fn ensure_meta(&mut self) -> Result<(), WriteError> {
        if self.meta_ready {
            return Ok(());
        }
        let mut conn = self.pools[0].get_conn().await.map_err(sql_err)?;
        for s in META_SCHEMA {
            conn.query_drop(*s).await.map_err(sql_err)?;
        }
        self.meta_ready = true;
        Ok(())
    }

    /// The groups written so far on the batch's partitions and the voided
    /// ranges that reach into the batch's LSNs, from shard 0.
    async fn load_marks(
        &mut self,
        batch: &[Rec],
    ) -> Result<(BTreeMap<i32, u64>, Tombstones), WriteError> {
        let mut conn = self.pools[0].get_conn().await.map_err(sql_err)?;
        let parts: std::collections::BTreeSet<i32> = batch.iter().map(|r| r.partition).collect();
        let list = parts
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let rows: Vec<(i32, u64)> = conn
            .exec(
                format!("SELECT partition_id, group_lsn FROM flashd_sink_partitions WHERE topic = ? AND partition_id IN ({list})"),
                (self.topic.as_str(),),
            )
            .await
            .map_err(sql_err)?;
        let high = rows.into_iter().collect();
        let lo = batch.iter().map(|r| r.lsn).min().unwrap_or(0);
        let hi = batch.iter().map(|r| r.lsn).max().unwrap_or(0);
        let ranges: Vec<(u64, u64)> = conn
            .exec(
                "SELECT from_lsn, to_lsn FROM flashd_aborts WHERE to_lsn > ? AND from_lsn <= ?",
                (lo, hi),
            )
            .await
            .map_err(sql_err)?;
        let mut void = Tombstones::default();
        for (f, t) in ranges {
            void.insert(f..t);
        }
        Ok((high, void))
    }

    /// Everything of the batch is written: raise the partitions' marks and
    /// keep the ranges of late aborts.
    async fn save_marks(
        &mut self,
        before: &BTreeMap<i32, u64>,
        high: &BTreeMap<i32, u64>,
        late_aborts: &[(u64, Range<u64>)],
    ) -> Result<(), WriteError> {
        let raised: Vec<(i32, u64)> = high
            .iter()
            .filter(|(p, l)| before.get(p) != Some(l))
            .map(|(p, l)| (*p, *l))
            .collect();
        if raised.is_empty() && late_aborts.is_empty() {
            return Ok(());
        }
        let mut conn = self.pools[0].get_conn().await.map_err(sql_err)?;
        let mut tx = conn
            .start_transaction(TxOpts::default())
            .await
            .map_err(sql_err)?;
        for (lsn, r) in late_aborts {
            tx.exec_drop(
                "INSERT IGNORE INTO flashd_aborts (abort_lsn, from_lsn, to_lsn) VALUES (?, ?, ?)",
                (*lsn, r.start, r.end),
            )
            .await
            .map_err(sql_err)?;
        }
        for (p, l) in raised {
            tx.exec_drop(
                "INSERT INTO flashd_sink_partitions (topic, partition_id, group_lsn) VALUES (?, ?, ?) \
                 ON DUPLICATE KEY UPDATE group_lsn = GREATEST(group_lsn, VALUES(group_lsn))",
                (self.topic.as_str(), p, l),
            )
            .await
            .map_err(sql_err)?;
        }
        tx.commit().await.map_err(sql_err)
    }

    async fn park(
        &mut self,
        partition: i32,
        offset: i64,
        lsn: u64,
        payload: &[u8],
        error: &str,
    ) -> Result<(), WriteError> {
        self.ensure_meta().await?;
        park(
            &self.pools[0],
            &self.topic,
            partition,
            offset,
            lsn,
            payload,
            error,
        )
        .await
    }

    async fn ensure_table(
        &mut self,
        shard: usize,
        table: &str,
        conn: &mut mysql_async::Conn,
    ) -> Result<(), WriteError> {
        if !self.tables[shard].contains(table) {
            conn.query_drop(format!(
                "CREATE TABLE IF NOT EXISTS {table} LIKE orders_template"
            ))
            .await
            .map_err(sql_err)?;
            self.tables[shard].insert(table.to_string());
        }
        Ok(())
    }

    async fn bulk(&mut self, run: &[(u64, &Event)]) -> Result<(), WriteError> {
        if run.is_empty() {
            return Ok(());
        }
        let n = self.pools.len();
        let mut orders: Vec<BTreeMap<String, Vec<OrderRow>>> =
            (0..n).map(|_| BTreeMap::new()).collect();
        let mut events: Vec<Vec<EventRow>> = (0..n).map(|_| Vec::new()).collect();
        let mut acts: BTreeMap<ActivityId, Vec<(u64, &Event)>> = BTreeMap::new();
        for &(lsn, ev) in run {
            match ev {
                Event::ActivityCreated { id, .. } => acts.entry(*id).or_default().push((lsn, ev)),
                Event::OrderCreated {
                    order_id,
                    activity_id,
                    user_id,
                    quantity,
                    amount_cents,
                    request_id,
                    created_at,
                    expires_at,
                } => {
                    let s = shard_of(*user_id, n);
                    orders[s]
                        .entry(order_table(*order_id))
                        .or_default()
                        .push(OrderRow {
                            order_id: *order_id,
                            activity_id: *activity_id,
                            user_id: *user_id,
                            quantity: *quantity,
                            amount_cents: *amount_cents,
                            request_id: request_id.to_string(),
                            status: St::Created,
                            created_at: *created_at,
                            expires_at: *expires_at,
                            updated_at: *created_at,
                            version: lsn,
                        });
                    events[s].push(EventRow {
                        lsn,
                        seq: 0,
                        order_id: *order_id,
                        activity_id: *activity_id,
                        user_id: *user_id,
                        kind: "created",
                        reason: "",
                        quantity: *quantity,
                        at: *created_at,
                    });
                    acts.entry(*activity_id).or_default().push((lsn, ev));
                }
                Event::OrderPaid {
                    order_id,
                    activity_id,
                    user_id,
                    quantity,
                    at,
                }
                | Event::OrderCancelled {
                    order_id,
                    activity_id,
                    user_id,
                    quantity,
                    at,
                    ..
                } => {
                    let (status, kind, reason) = match ev {
                        Event::OrderPaid { .. } => (St::Paid, "paid", ""),
                        Event::OrderCancelled {
                            reason: CancelReason::User,
                            ..
                        } => (St::Cancelled, "cancelled", "user"),
                        _ => (St::Cancelled, "cancelled", "timeout"),
                    };
                    let s = shard_of(*user_id, n);
                    orders[s]
                        .entry(order_table(*order_id))
                        .or_default()
                        .push(OrderRow {
                            order_id: *order_id,
                            activity_id: *activity_id,
                            user_id: *user_id,
                            quantity: *quantity,
                            amount_cents: 0,
                            request_id: String::new(),
                            status,
                            created_at: created_ms(*order_id),
                            expires_at: 0,
                            updated_at: *at,
                            version: lsn,
                        });
                    events[s].push(EventRow {
                        lsn,
                        seq: 0,
                        order_id: *order_id,
                        activity_id: *activity_id,
                        user_id: *user_id,
                        kind,
                        reason,
                        quantity: *quantity,
                        at: *at,
                    });
                    acts.entry(*activity_id).or_default().push((lsn, ev));
                }
            }
        }
        // Order tables first (cached after the first batch of a month),
        // then every shard's transaction at once: each commit waits for
        // its server's log flush, and two shards' flushes overlap.
        for (s, by_table) in orders.iter().enumerate() {
            if by_table.is_empty() {
                continue;
            }
            let mut conn = self.pools[s].get_conn().await.map_err(sql_err)?;
            let tables: Vec<String> = by_table.keys().cloned().collect();
            for table in &tables {
                self.ensure_table(s, table, &mut conn).await?;
            }
        }
        let writes = (0..n)
            .filter(|&s| !(orders[s].is_empty() && events[s].is_empty()))
            .map(|s| {
                write_shard(&self.pools[s], &orders[s], &events[s])
                    .map(move |r| r.map(|rows| (s, rows)))
            });
        for (s, rows) in futures_util::future::try_join_all(writes).await? {
            self.stats.rows[s].fetch_add(rows, Ordering::Relaxed);
        }
        self.fold_activities(&acts, &HashMap::new(), None).await
    }

    /// Fold events into the activity rows on shard 0, skipping those the
    /// row already has (LSN <= version). `reverts`: for abort records, the
    /// counter changes computed from the orders' statuses; `abort_row`:
    /// its LSN and voided range, kept in the same transaction.
    async fn fold_activities(
        &mut self,
        acts: &BTreeMap<ActivityId, Vec<(u64, &Event)>>,
        reverts: &HashMap<ActivityId, (u64, [i64; 3], bool)>,
        abort_row: Option<(u64, Range<u64>)>,
    ) -> Result<(), WriteError> {
        if acts.is_empty() && reverts.is_empty() && abort_row.is_none() {
            return Ok(());
        }
        let ids: Vec<ActivityId> = acts
            .keys()
            .chain(reverts.keys())
            .copied()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut conn = self.pools[0].get_conn().await.map_err(sql_err)?;
        let mut tx = conn
            .start_transaction(TxOpts::default())
            .await
            .map_err(sql_err)?;
        let list = ids
            .iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let found: Vec<mysql_async::Row> = tx
            .query(format!("SELECT id, sku_id, name, price_cents, stock, remaining, reserved, sold, start_at, end_at, per_user_limit, created_at, void, version FROM activities WHERE id IN ({list}) FOR UPDATE"))
            .await
            .map_err(sql_err)?;
        let mut rows: BTreeMap<ActivityId, ActivityRow> = BTreeMap::new();
        for r in found {
            let a = ActivityRow {
                id: r.get(0).unwrap_or(0),
                sku_id: r.get(1).unwrap_or_default(),
                name: r.get(2).unwrap_or_default(),
                price_cents: r.get(3).unwrap_or(0),
                stock: r.get(4).unwrap_or(0),
                remaining: r.get(5).unwrap_or(0),
                reserved: r.get(6).unwrap_or(0),
                sold: r.get(7).unwrap_or(0),
                start_at: r.get(8).unwrap_or(0),
                end_at: r.get(9).unwrap_or(0),
                per_user_limit: r.get(10).unwrap_or(0),
                created_at: r.get(11).unwrap_or(0),
                void: r.get::<i64, _>(12).unwrap_or(0) != 0,
                version: r.get(13).unwrap_or(0),
                fresh: false,
            };
            rows.insert(a.id, a);
        }
        let mut changed: std::collections::BTreeSet<ActivityId> = Default::default();
        for (id, evs) in acts {
            for &(lsn, ev) in evs {
                let row = rows.entry(*id).or_insert_with(|| ActivityRow {
                    id: *id,
                    fresh: true,
                    ..Default::default()
                });
                if lsn <= row.version && !row.fresh {
                    continue;
                }
                row.fresh = false;
                match ev {
                    Event::ActivityCreated {
                        sku_id,
                        name,
                        price_cents,
                        stock,
                        start_at,
                        end_at,
                        per_user_limit,
                        created_at,
                        ..
                    } => {
                        row.sku_id = sku_id.clone();
                        row.name = name.clone();
                        row.price_cents = *price_cents;
                        row.stock = *stock as i64;
                        // Orders folded before the creation (a log from
                        // before issue 14's point 3 was fixed) keep their
                        // units: remaining follows from the other counters,
                        // never overwrites them.
                        row.remaining = *stock as i64 - row.reserved - row.sold;
                        row.start_at = *start_at;
                        row.end_at = *end_at;
                        row.per_user_limit = *per_user_limit;
                        row.created_at = *created_at;
                    }
                    Event::OrderCreated { quantity, .. } => {
                        row.remaining -= *quantity as i64;
                        row.reserved += *quantity as i64;
                    }
                    Event::OrderPaid { quantity, .. } => {
                        row.reserved -= *quantity as i64;
                        row.sold += *quantity as i64;
                    }
                    Event::OrderCancelled { quantity, .. } => {
                        row.reserved -= *quantity as i64;
                        row.remaining += *quantity as i64;
                    }
                }
                row.version = lsn;
                changed.insert(*id);
            }
        }
        for (id, (lsn, d, void)) in reverts {
            let row = rows.entry(*id).or_insert_with(|| ActivityRow {
                id: *id,
                fresh: true,
                ..Default::default()
            });
            if *lsn <= row.version && !row.fresh {
                continue;
            }
            row.fresh = false;
            row.remaining += d[0];
            row.reserved += d[1];
            row.sold += d[2];
            row.void |= *void;
            row.version = *lsn;
            changed.insert(*id);
        }
        let changed: Vec<ActivityId> = changed.into_iter().collect();
        // Chunks keep a statement under the server's 65,535 placeholders.
        for chunk in changed.chunks(ROWS_PER_STATEMENT) {
            let mut sql = String::from("INSERT INTO activities (id, sku_id, name, price_cents, stock, remaining, reserved, sold, start_at, end_at, per_user_limit, created_at, void, version) VALUES ");
            let mut params: Vec<Value> = Vec::with_capacity(chunk.len() * 14);
            for (i, id) in chunk.iter().enumerate() {
                let r = &rows[id];
                sql.push_str(if i == 0 {
                    "(?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
                } else {
                    ",(?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
                });
                params.extend([
                    Value::from(r.id),
                    Value::from(r.sku_id.as_str()),
                    Value::from(r.name.as_str()),
                    Value::from(r.price_cents),
                    Value::from(r.stock),
                    Value::from(r.remaining),
                    Value::from(r.reserved),
                    Value::from(r.sold),
                    Value::from(r.start_at),
                    Value::from(r.end_at),
                    Value::from(r.per_user_limit),
                    Value::from(r.created_at),
                    Value::from(r.void as i64),
                    Value::from(r.version),
                ]);
            }
            sql.push_str(" ON DUPLICATE KEY UPDATE sku_id=VALUES(sku_id), name=VALUES(name), price_cents=VALUES(price_cents), stock=VALUES(stock), remaining=VALUES(remaining), reserved=VALUES(reserved), sold=VALUES(sold), start_at=VALUES(start_at), end_at=VALUES(end_at), per_user_limit=VALUES(per_user_limit), created_at=VALUES(created_at), void=VALUES(void), version=VALUES(version)");
            tx.exec_drop(sql, params).await.map_err(sql_err)?;
            self.stats.rows[0].fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        if let Some((lsn, covers)) = abort_row {
            tx.exec_drop(
                "INSERT IGNORE INTO flashd_aborts (abort_lsn, from_lsn, to_lsn) VALUES (?, ?, ?)",
                (lsn, covers.start, covers.end),
            )
            .await
            .map_err(sql_err)?;
        }
        tx.commit().await.map_err(sql_err)
    }

    /// Undo `evs` (newest last) as the engine did: the activity row first
    /// (guarded by its version, computed from the orders' statuses before
    /// the abort), then the order rows (guarded by theirs).
    async fn abort(&mut self, lsn: u64, abort: &Abort) -> Result<(), WriteError> {
        let n = self.pools.len();
        let evs: Vec<&Event> = abort.events.iter().map(|(_, e)| e).collect();
        // Current statuses of the orders involved.
        let mut status: HashMap<OrderId, (St, u64)> = HashMap::new();
        for ev in &evs {
            let (order_id, user_id) = match ev {
                Event::ActivityCreated { .. } => continue,
                Event::OrderCreated {
                    order_id, user_id, ..
                }
                | Event::OrderPaid {
                    order_id, user_id, ..
                }
                | Event::OrderCancelled {
                    order_id, user_id, ..
                } => (*order_id, *user_id),
            };
            if status.contains_key(&order_id) {
                continue;
            }
            let s = shard_of(user_id, n);
            let table = order_table(order_id);
            let mut conn = self.pools[s].get_conn().await.map_err(sql_err)?;
            self.ensure_table(s, &table, &mut conn).await?;
            let r: Option<(String, u64)> = conn
                .exec_first(
                    format!("SELECT status, version FROM {table} WHERE order_id = ?"),
                    (order_id,),
                )
                .await
                .map_err(sql_err)?;
            if let Some((st, v)) = r.and_then(|(s, v)| St::parse(&s).map(|s| (s, v))) {
                status.insert(order_id, (st, v));
            }
        }
        // Replay the engine's revert over those statuses.
        let mut deltas: HashMap<ActivityId, (u64, [i64; 3], bool)> = HashMap::new();
        // Every activity it names has its version raised to the abort's
        // LSN, changed or not: a late event of it then finds it older.
        for ev in &evs {
            deltas
                .entry(flashd_kafka::activity_of(ev))
                .or_insert((lsn, [0; 3], false));
        }
        let mut changes: Vec<(Event, St)> = Vec::new();
        for ev in evs.iter().rev().copied() {
            match ev {
                Event::ActivityCreated { id, .. } => {
                    deltas.entry(*id).or_insert((lsn, [0; 3], false)).2 = true;
                }
                Event::OrderCreated {
                    order_id,
                    activity_id,
                    quantity,
                    ..
                } => {
                    let q = *quantity as i64;
                    let Some((st, _)) = status.get_mut(order_id) else {
                        continue;
                    };
                    let d = &mut deltas.entry(*activity_id).or_insert((lsn, [0; 3], false)).1;
                    match *st {
                        St::Created => {
                            d[1] -= q;
                            d[0] += q;
                        }
                        St::Paid => {
                            d[2] -= q;
                            d[0] += q;
                        }
                        St::Cancelled | St::Void => {}
                    }
                    if *st != St::Void {
                        *st = St::Void;
                        changes.push((ev.clone(), St::Void));
                    }
                }
                Event::OrderPaid {
                    order_id,
                    activity_id,
                    quantity,
                    ..
                }
                | Event::OrderCancelled {
                    order_id,
                    activity_id,
                    quantity,
                    ..
                } => {
                    // Undo a pay or a cancel: the order is CREATED again,
                    // its units move back from sold / remaining to reserved.
                    let (from, counter) = match ev {
                        Event::OrderPaid { .. } => (St::Paid, 2),
                        _ => (St::Cancelled, 0),
                    };
                    let q = *quantity as i64;
                    let Some((st, _)) = status.get_mut(order_id) else {
                        continue;
                    };
                    if *st == from {
                        *st = St::Created;
                        let d = &mut deltas.entry(*activity_id).or_insert((lsn, [0; 3], false)).1;
                        d[counter] -= q;
                        d[1] += q;
                        changes.push((ev.clone(), St::Created));
                    }
                }
            }
        }
        // Orders already at this LSN were reverted by an earlier attempt
        // of this abort (the activity row, written first, too, and its
        // version guards it); the others still hold their statuses from
        // before it, so what is left to do is computed right.
        changes.retain(|(ev, _)| {
            !matches!(order_of(ev).and_then(|o| status.get(&o)), Some((_, v)) if *v >= lsn)
        });
        self.fold_activities(&BTreeMap::new(), &deltas, Some((lsn, abort.covers.clone())))
            .await?;
        for (seq, (ev, to)) in changes.iter().enumerate() {
            let (order_id, activity_id, user_id, quantity) = match ev {
                Event::OrderCreated {
                    order_id,
                    activity_id,
                    user_id,
                    quantity,
                    ..
                }
                | Event::OrderPaid {
                    order_id,
                    activity_id,
                    user_id,
                    quantity,
                    ..
                }
                | Event::OrderCancelled {
                    order_id,
                    activity_id,
                    user_id,
                    quantity,
                    ..
                } => (*order_id, *activity_id, *user_id, *quantity),
                Event::ActivityCreated { .. } => continue,
            };
            let s = shard_of(user_id, n);
            let table = order_table(order_id);
            let mut conn = self.pools[s].get_conn().await.map_err(sql_err)?;
            let mut tx = conn
                .start_transaction(TxOpts::default())
                .await
                .map_err(sql_err)?;
            tx.exec_drop(
                format!(
                    "UPDATE {table} SET status = ?, version = ? WHERE order_id = ? AND version < ?"
                ),
                (to.name(), lsn, order_id, lsn),
            )
            .await
            .map_err(sql_err)?;
            insert_events(
                &mut tx,
                &[EventRow {
                    lsn,
                    seq: seq as u32,
                    order_id,
                    activity_id,
                    user_id,
                    kind: "reverted",
                    reason: "",
                    quantity,
                    at: now_ms(),
                }],
            )
            .await?;
            tx.commit().await.map_err(sql_err)?;
            self.stats.rows[s].fetch_add(2, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// Rows per multi-row statement: the widest row has 14 placeholders, and
/// a statement may hold at most 65,535 (ER_PS_MANY_PARAM); 1,000 rows
/// also keeps a statement well under `max_allowed_packet`.
const ROWS_PER_STATEMENT: usize = 1000;
const _: () = assert!(ROWS_PER_STATEMENT * 14 <= 65_535);

/// The order an event concerns (none for a sale's creation).
fn order_of(ev: &Event) -> Option<OrderId> {
    match ev {
        Event::ActivityCreated { .. } => None,
        Event::OrderCreated { order_id, .. }
        | Event::OrderPaid { order_id, .. }
        | Event::OrderCancelled { order_id, .. } => Some(*order_id),
    }
}

/// One shard's part of a batch, in one transaction; the rows written.
async fn write_shard(
    pool: &Pool,
    orders: &BTreeMap<String, Vec<OrderRow>>,
    events: &[EventRow],
) -> Result<u64, WriteError> {
    let mut conn = pool.get_conn().await.map_err(sql_err)?;
    let mut tx = conn
        .start_transaction(TxOpts::default())
        .await
        .map_err(sql_err)?;
    let mut rows = 0u64;
    for (table, rs) in orders {
        for chunk in rs.chunks(ROWS_PER_STATEMENT) {
            upsert_orders(&mut tx, table, chunk).await?;
            rows += chunk.len() as u64;
        }
    }
    for chunk in events.chunks(ROWS_PER_STATEMENT) {
        insert_events(&mut tx, chunk).await?;
        rows += chunk.len() as u64;
    }
    tx.commit().await.map_err(sql_err)?;
    Ok(rows)
}

async fn upsert_orders(
    tx: &mut mysql_async::Transaction<'_>,
    table: &str,
    rows: &[OrderRow],
) -> Result<(), WriteError> {
    let mut sql = format!("INSERT INTO {table} (order_id, activity_id, user_id, quantity, amount_cents, request_id, status, created_at, expires_at, updated_at, version) VALUES ");
    let mut params: Vec<Value> = Vec::with_capacity(rows.len() * 11);
    for (i, r) in rows.iter().enumerate() {
        sql.push_str(if i == 0 {
            "(?,?,?,?,?,?,?,?,?,?,?)"
        } else {
            ",(?,?,?,?,?,?,?,?,?,?,?)"
        });
        params.extend([
            Value::from(r.order_id),
            Value::from(r.activity_id),
            Value::from(r.user_id),
            Value::from(r.quantity),
            Value::from(r.amount_cents),
            Value::from(r.request_id.as_str()),
            Value::from(r.status.name()),
            Value::from(r.created_at),
            Value::from(r.expires_at),
            Value::from(r.updated_at),
            Value::from(r.version),
        ]);
    }
    // Order matters: the guards read `version` and `expires_at` before
    // they are changed. A creation (the only image with `expires_at` set)
    // fills the columns only it knows whenever it arrives, so a status
    // change that came first leaves no hole.
    sql.push_str(
        " ON DUPLICATE KEY UPDATE \
         amount_cents = IF(VALUES(expires_at) > 0, VALUES(amount_cents), amount_cents), \
         request_id = IF(VALUES(expires_at) > 0, VALUES(request_id), request_id), \
         created_at = IF(VALUES(expires_at) > 0, VALUES(created_at), created_at), \
         expires_at = IF(VALUES(expires_at) > 0, VALUES(expires_at), expires_at), \
         status = IF(VALUES(version) > version, VALUES(status), status), \
         updated_at = IF(VALUES(version) > version, VALUES(updated_at), updated_at), \
         version = GREATEST(version, VALUES(version))",
    );
    tx.exec_drop(sql, params).await.map_err(sql_err)
}

async fn insert_events(
    tx: &mut mysql_async::Transaction<'_>,
    rows: &[EventRow],
) -> Result<(), WriteError> {
    let mut sql = String::from("INSERT INTO order_events (lsn, seq, order_id, activity_id, user_id, kind, reason, quantity, at) VALUES ");
    let mut params: Vec<Value> = Vec::with_capacity(rows.len() * 9);
    for (i, r) in rows.iter().enumerate() {
        sql.push_str(if i == 0 {
            "(?,?,?,?,?,?,?,?,?)"
        } else {
            ",(?,?,?,?,?,?,?,?,?)"
        });
        params.extend([
            Value::from(r.lsn),
            Value::from(r.seq),
            Value::from(r.order_id),
            Value::from(r.activity_id),
            Value::from(r.user_id),
            Value::from(r.kind),
            Value::from(r.reason),
            Value::from(r.quantity),
            Value::from(r.at),
        ]);
    }
    sql.push_str(" ON DUPLICATE KEY UPDATE lsn = lsn");
    tx.exec_drop(sql, params).await.map_err(sql_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jump_hash_is_stable_and_moves_few_users() {
        for u in 0..1000u64 {
            assert_eq!(shard_of(u, 1), 0);
            assert!(shard_of(u, 2) < 2);
        }
        let moved = (0..100_000u64)
            .filter(|u| shard_of(*u, 4) != shard_of(*u, 5))
            .count();
        // About 1/5 of users move to the new shard, and only to it.
        assert!((15_000..25_000).contains(&moved), "{moved}");
        assert!((0..100_000u64)
            .filter(|u| shard_of(*u, 4) != shard_of(*u, 5))
            .all(|u| shard_of(u, 5) == 4));
        let on0 = (0..100_000u64).filter(|u| shard_of(*u, 2) == 0).count();
        assert!((45_000..55_000).contains(&on0), "{on0}");
    }

    #[test]
    fn order_tables_are_per_month_of_the_id() {
        // 2026-11-22T00:00:00Z
        let ms = 1_795_305_600_000u64;
        assert_eq!(order_table((ms - EPOCH_MS) << 22), "orders_202611");
        assert_eq!(order_table(0), "orders_202401");
    }

    #[test]
    fn errors_that_recur_are_told_from_outages() {
        // Data and statement errors: the same write fails forever.
        for code in [1366, 1406, 1390, 1064, 1264, 1048] {
            assert_eq!(classify_code(code), Class::Permanent, "{code}");
        }
        // The server or the connection: retry.
        for code in [1205, 1213, 2006, 2013, 1053, 1927, 1040, 1146] {
            assert_eq!(classify_code(code), Class::Transient, "{code}");
        }
        assert_eq!(classify_code(9999), Class::Unclassified);
        let lost = mysql_async::Error::Driver(mysql_async::DriverError::ConnectionClosed);
        assert_eq!(classify(&lost), Class::Transient);
        let too_many =
            mysql_async::Error::Driver(mysql_async::DriverError::StmtParamsNumberExceedsLimit {
                supplied: 70_000,
            });
        assert_eq!(classify(&too_many), Class::Permanent);
    }

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
            Writer {
                urls: urls.to_vec(),
                pools: urls
                    .iter()
                    .map(|u| Pool::new(Opts::from_url(u).unwrap()))
                    .collect(),
                tables: vec![HashSet::new(); urls.len()],
                stats: Arc::new(SinkStats::new(urls.len())),
                topic: topic.into(),
                meta_ready: false,
            }
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
        ((now_ms() - EPOCH_MS) << 22) | n
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
            created_at: created_ms(o),
            expires_at: created_ms(o) + 60_000,
        }
    }

    fn paid(o: OrderId, a: ActivityId, user: UserId, q: u32) -> Event {
        Event::OrderPaid {
            order_id: o,
            activity_id: a,
            user_id: user,
            quantity: q,
            at: created_ms(o) + 5,
        }
    }

    fn rec(partition: i32, offset: i64, group: u64, lsn: u64, rec: TopicRecord) -> Rec {
        Rec {
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
            at: created_ms(o[4]) + 9,
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
}
