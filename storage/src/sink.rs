//! The sink: projects the order log (the Kafka topic) into sharded MySQL,
//! where the rest of the business reads orders.
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
//! Orders are placed by user id with a jump consistent hash, so one user's
//! orders stay on one shard and adding a shard moves only 1/n of users.
//! Order tables are per month of the order's creation (`orders_YYYYMM`,
//! from the snowflake id's timestamp, so status changes find the table
//! without a lookup).
//!
//! The sink runs on threads of its own (a consumer thread and a small
//! tokio runtime for MySQL), never on a reactor or worker.

use std::collections::{BTreeMap, HashMap, HashSet};
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

use crate::error::LogError;
use futures_util::FutureExt;

use crate::kafka::{decode_records, KafkaConfig, LogRecord};

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
    ) ENGINE=InnoDB",
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
    ) ENGINE=InnoDB",
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
    ) ENGINE=InnoDB",
];

fn my_err(e: mysql_async::Error) -> LogError {
    LogError::Mysql(e.to_string())
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
/// month's order tables). Idempotent.
pub async fn migrate(shards: &[String]) -> Result<(), LogError> {
    for url in shards {
        let opts = Opts::from_url(url).map_err(|e| LogError::Mysql(format!("{url}: {e}")))?;
        let db = opts
            .db_name()
            .ok_or_else(|| LogError::Mysql(format!("{url}: names no database")))?
            .to_string();
        let server = Opts::from(OptsBuilder::from_opts(opts.clone()).db_name(None::<String>));
        let mut c = mysql_async::Conn::new(server).await.map_err(my_err)?;
        c.query_drop(format!(
            "CREATE DATABASE IF NOT EXISTS `{}`",
            db.replace('`', "``")
        ))
        .await
        .map_err(my_err)?;
        c.disconnect().await.map_err(my_err)?;
        let mut c = mysql_async::Conn::new(opts).await.map_err(my_err)?;
        for s in SCHEMA {
            c.query_drop(*s).await.map_err(my_err)?;
        }
        let now = crate::kafka_now_ms();
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
        }
    }
}

pub struct Sink {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub stats: Arc<SinkStats>,
}

impl Sink {
    pub fn start(cfg: SinkConfig) -> Result<Sink, LogError> {
        if cfg.shards.is_empty() {
            return Err(LogError::Mysql("no shards configured".into()));
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("flashd-sink-db")
            .enable_all()
            .build()
            .map_err(|e| LogError::Mysql(e.to_string()))?;
        let pools: Vec<Pool> = cfg
            .shards
            .iter()
            .map(|u| Opts::from_url(u).map(Pool::new))
            .collect::<Result<_, _>>()
            .map_err(|e| LogError::Mysql(e.to_string()))?;
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
            // A MySQL outage holds a batch (and the poll loop) for as long
            // as it lasts; the group must not give our partitions away.
            .set("max.poll.interval.ms", "86400000");
        for (k, v) in &cfg.kafka.properties {
            c.set(k, v);
        }
        c.set("group.id", &cfg.group)
            // Offsets are committed by hand, after the rows.
            .set("enable.auto.commit", "false");
        let consumer: BaseConsumer = c.create().map_err(|e| LogError::Broker(e.to_string()))?;
        consumer
            .subscribe(&[&cfg.kafka.topic])
            .map_err(|e| LogError::Broker(e.to_string()))?;
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
                };
                run(&cfg, &consumer, &rt, &mut w, &s2, &st2);
                rt.block_on(async {
                    for p in w.pools {
                        let _ = p.disconnect().await;
                    }
                });
            })
            .map_err(|e| LogError::Mysql(e.to_string()))?;
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
    while !stop.load(Ordering::Acquire) {
        let mut batch: Vec<(u64, LogRecord)> = Vec::new();
        let mut offsets: BTreeMap<i32, i64> = BTreeMap::new();
        let started = Instant::now();
        while batch.len() < cfg.batch_max {
            let wait = if batch.is_empty() {
                Duration::from_millis(100)
            } else {
                cfg.batch_wait.saturating_sub(started.elapsed())
            };
            if !batch.is_empty() && wait.is_zero() {
                break;
            }
            match consumer.poll(wait) {
                None => {
                    if batch.is_empty() {
                        break;
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "sink: kafka consumer error");
                    break;
                }
                Some(Ok(m)) => {
                    let v = m.payload().unwrap_or(&[]);
                    match decode_records(v) {
                        Ok(r) => batch.extend(r),
                        // Not ours to judge: skip it loudly rather than
                        // stall every order behind it.
                        Err(e) => {
                            tracing::error!(partition = m.partition(), offset = m.offset(), error = %e, "sink: undecodable record skipped")
                        }
                    }
                    offsets.insert(m.partition(), m.offset() + 1);
                }
            }
        }
        if last_lag.elapsed() >= Duration::from_millis(500) {
            update_lag(cfg, consumer, &next, &mut known, stats);
            last_lag = Instant::now();
        }
        if offsets.is_empty() {
            continue;
        }
        let mut backoff = Duration::from_millis(50);
        loop {
            let t0 = Instant::now();
            // A server that died mid-query can leave a connection waiting
            // forever: bound each attempt.
            let attempt = rt.block_on(async {
                tokio::time::timeout(WRITE_TIMEOUT, w.write(&batch))
                    .await
                    .unwrap_or_else(|_| {
                        Err(LogError::Mysql(format!(
                            "batch write took over {WRITE_TIMEOUT:?}"
                        )))
                    })
            });
            match attempt {
                Ok(()) => {
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
                    if !stats.mysql_up.swap(true, Ordering::Relaxed) {
                        tracing::info!("sink: MySQL writes succeed again");
                    }
                    break;
                }
                Err(e) => {
                    stats.retries.fetch_add(1, Ordering::Relaxed);
                    if stats.mysql_up.swap(false, Ordering::Relaxed) {
                        tracing::warn!(error = %e, "sink: MySQL write failed; retrying with backoff (offsets not committed)");
                    }
                    if let Ok(mut l) = stats.last_error.lock() {
                        *l = e.to_string();
                    }
                    if stop.load(Ordering::Acquire) {
                        return;
                    }
                    // Fresh pools: connections to a server that went away
                    // are not worth reusing.
                    w.reset(rt);
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    if last_lag.elapsed() >= Duration::from_millis(500) {
                        update_lag(cfg, consumer, &next, &mut known, stats);
                        last_lag = Instant::now();
                    }
                }
            }
        }
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

/// The longest one batch write may take before it is retried.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

struct Writer {
    urls: Vec<String>,
    pools: Vec<Pool>,
    /// Order tables known to exist, per shard.
    tables: Vec<HashSet<String>>,
    stats: Arc<SinkStats>,
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
        }
    }

    async fn write(&mut self, batch: &[(u64, LogRecord)]) -> Result<(), LogError> {
        // Aborts are rare (a failed produce); they are applied one by one
        // between bulk runs of ordinary events.
        let mut run: Vec<(u64, &Event)> = Vec::new();
        for (lsn, rec) in batch {
            match rec {
                LogRecord::Event(ev) => run.push((*lsn, ev)),
                LogRecord::Abort(evs) => {
                    self.bulk(&run).await?;
                    run.clear();
                    self.abort(*lsn, evs).await?;
                }
            }
        }
        self.bulk(&run).await
    }

    async fn ensure_table(
        &mut self,
        shard: usize,
        table: &str,
        conn: &mut mysql_async::Conn,
    ) -> Result<(), LogError> {
        if !self.tables[shard].contains(table) {
            conn.query_drop(format!(
                "CREATE TABLE IF NOT EXISTS {table} LIKE orders_template"
            ))
            .await
            .map_err(my_err)?;
            self.tables[shard].insert(table.to_string());
        }
        Ok(())
    }

    async fn bulk(&mut self, run: &[(u64, &Event)]) -> Result<(), LogError> {
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
            let mut conn = self.pools[s].get_conn().await.map_err(my_err)?;
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
        self.fold_activities(&acts, &HashMap::new()).await
    }

    /// Fold events into the activity rows on shard 0, skipping those the
    /// row already has (LSN <= version). `reverts`: for abort records, the
    /// counter changes computed from the orders' statuses.
    async fn fold_activities(
        &mut self,
        acts: &BTreeMap<ActivityId, Vec<(u64, &Event)>>,
        reverts: &HashMap<ActivityId, (u64, [i64; 3], bool)>,
    ) -> Result<(), LogError> {
        if acts.is_empty() && reverts.is_empty() {
            return Ok(());
        }
        let ids: Vec<ActivityId> = acts
            .keys()
            .chain(reverts.keys())
            .copied()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut conn = self.pools[0].get_conn().await.map_err(my_err)?;
        let mut tx = conn
            .start_transaction(TxOpts::default())
            .await
            .map_err(my_err)?;
        let list = ids
            .iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let found: Vec<mysql_async::Row> = tx
            .query(format!("SELECT id, sku_id, name, price_cents, stock, remaining, reserved, sold, start_at, end_at, per_user_limit, created_at, void, version FROM activities WHERE id IN ({list}) FOR UPDATE"))
            .await
            .map_err(my_err)?;
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
                        row.remaining = *stock as i64;
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
        if !changed.is_empty() {
            let mut sql = String::from("INSERT INTO activities (id, sku_id, name, price_cents, stock, remaining, reserved, sold, start_at, end_at, per_user_limit, created_at, void, version) VALUES ");
            let mut params: Vec<Value> = Vec::new();
            for (i, id) in changed.iter().enumerate() {
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
            tx.exec_drop(sql, params).await.map_err(my_err)?;
            self.stats.rows[0].fetch_add(changed.len() as u64, Ordering::Relaxed);
        }
        tx.commit().await.map_err(my_err)
    }

    /// Undo `evs` (newest last) as the engine did: the activity row first
    /// (guarded by its version, computed from the orders' statuses before
    /// the abort), then the order rows (guarded by theirs).
    async fn abort(&mut self, lsn: u64, evs: &[Event]) -> Result<(), LogError> {
        let n = self.pools.len();
        // Current statuses of the orders involved.
        let mut status: HashMap<OrderId, (St, u64)> = HashMap::new();
        for ev in evs {
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
            let mut conn = self.pools[s].get_conn().await.map_err(my_err)?;
            self.ensure_table(s, &table, &mut conn).await?;
            let r: Option<(String, u64)> = conn
                .exec_first(
                    format!("SELECT status, version FROM {table} WHERE order_id = ?"),
                    (order_id,),
                )
                .await
                .map_err(my_err)?;
            if let Some((st, v)) = r.and_then(|(s, v)| St::parse(&s).map(|s| (s, v))) {
                status.insert(order_id, (st, v));
            }
        }
        // Replay the engine's revert over those statuses.
        let mut deltas: HashMap<ActivityId, (u64, [i64; 3], bool)> = HashMap::new();
        let mut changes: Vec<(Event, St)> = Vec::new();
        for ev in evs.iter().rev() {
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
        // An order row already at this LSN means this abort was applied
        // (and the activity row, written first, too).
        if status.values().any(|(_, v)| *v >= lsn) {
            return Ok(());
        }
        self.fold_activities(&BTreeMap::new(), &deltas).await?;
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
            let mut conn = self.pools[s].get_conn().await.map_err(my_err)?;
            let mut tx = conn
                .start_transaction(TxOpts::default())
                .await
                .map_err(my_err)?;
            tx.exec_drop(
                format!(
                    "UPDATE {table} SET status = ?, version = ? WHERE order_id = ? AND version < ?"
                ),
                (to.name(), lsn, order_id, lsn),
            )
            .await
            .map_err(my_err)?;
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
                    at: crate::kafka_now_ms(),
                }],
            )
            .await?;
            tx.commit().await.map_err(my_err)?;
            self.stats.rows[s].fetch_add(2, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// One shard's part of a batch, in one transaction; the rows written.
async fn write_shard(
    pool: &Pool,
    orders: &BTreeMap<String, Vec<OrderRow>>,
    events: &[EventRow],
) -> Result<u64, LogError> {
    let mut conn = pool.get_conn().await.map_err(my_err)?;
    let mut tx = conn
        .start_transaction(TxOpts::default())
        .await
        .map_err(my_err)?;
    let mut rows = 0u64;
    for (table, rs) in orders {
        for chunk in rs.chunks(1000) {
            upsert_orders(&mut tx, table, chunk).await?;
            rows += chunk.len() as u64;
        }
    }
    for chunk in events.chunks(1000) {
        insert_events(&mut tx, chunk).await?;
        rows += chunk.len() as u64;
    }
    tx.commit().await.map_err(my_err)?;
    Ok(rows)
}

async fn upsert_orders(
    tx: &mut mysql_async::Transaction<'_>,
    table: &str,
    rows: &[OrderRow],
) -> Result<(), LogError> {
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
    // Order matters: the guards read `version` before it is raised.
    sql.push_str(
        " ON DUPLICATE KEY UPDATE \
         status = IF(VALUES(version) > version, VALUES(status), status), \
         updated_at = IF(VALUES(version) > version, VALUES(updated_at), updated_at), \
         version = GREATEST(version, VALUES(version))",
    );
    tx.exec_drop(sql, params).await.map_err(my_err)
}

async fn insert_events(
    tx: &mut mysql_async::Transaction<'_>,
    rows: &[EventRow],
) -> Result<(), LogError> {
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
    tx.exec_drop(sql, params).await.map_err(my_err)
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
}
