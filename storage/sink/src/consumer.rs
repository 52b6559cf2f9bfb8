//! The consumer-group member: [`Sink::start`] / [`Sink::stop`], and the
//! sink's thread, which polls a batch of records (of every topic it
//! follows), has the [`Writer`] write it (parking what cannot be
//! written), then commits the batch's offsets; beside that it keeps the
//! lag gauge and rejoins a group that is stuck.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use flashd_kafka::{decode_message, KafkaConfig};
use mysql_async::{Opts, Pool};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::poison::{poisoned, record_bytes, unparkable, Parked, Undecodable};
use crate::retry::{retry_transient, Job, Outcome};
use crate::stats::SinkStats;
use crate::topics::{Topics, NODE_TOPIC_REFRESH};
use crate::writer::{Rec, Writer};
use crate::SinkError;

#[derive(Debug, Clone)]
pub struct SinkConfig {
    /// `kafka.topic` names the topics followed: one, several (`a,b`), or
    /// every node topic of a base (`<base>.node*`); see [`Topics`].
    pub kafka: KafkaConfig,
    pub group: String,
    pub shards: Vec<String>,
    pub batch_max: usize,
    pub batch_wait: Duration,
}

/// A partition of a topic.
type Part = (Arc<str>, i32);

/// A member that has had no partition for this long, while the group's
/// committed offsets have not moved and the topic holds records past them,
/// leaves and rejoins its group. Seen on tansu (the chaos soak): after a
/// broker restart and a member's kill -9, the restarted member stayed
/// unassigned for minutes with nothing consumed, and a fresh join ended
/// it. Where another member of the group is working, its commits move the
/// offsets and nobody rejoins.
pub const UNASSIGNED_REJOIN: Duration = Duration::from_secs(10);

/// A member with no partition whose group commits nothing rejoins after
/// this long even when no records are seen waiting, or when the group's
/// offsets cannot be read (see `verdict`): longer than
/// [`UNASSIGNED_REJOIN`], since it may be rejoining for nothing.
pub const UNASSIGNED_BLIND_REJOIN: Duration = Duration::from_secs(30);

/// A member holding partitions, with records past what it has read, that
/// reads nothing for this long drops its consumer and starts a fresh one
/// (a new member of the group, on new connections). The chaos soak (seed
/// 68806543, kill -9 of the sink, a broker pause) left a sink holding all
/// three partitions of tansu's topic, 228 records behind, reading nothing
/// for minutes while its loop ran; a fresh process ended it at once. A
/// poll waits at most 100 ms and a fetch at most `fetch.wait.max.ms`
/// (20 ms), so 20 s without a record while records wait is no slow
/// broker. Counted in `flashd_sink_consumer_restarts_total`.
pub const STUCK_RESTART: Duration = Duration::from_secs(20);

/// The rule of [`STUCK_RESTART`]: partitions held, records behind, and
/// nothing read for that long.
fn stuck(assigned: u64, lag: i64, read_nothing_for: Duration) -> bool {
    assigned > 0 && lag > 0 && read_nothing_for >= STUCK_RESTART
}

/// How long the group checks may wait for the broker.
const GROUP_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// How often the lag gauge (and the group watch) is brought up to date.
const LAG_EVERY: Duration = Duration::from_millis(500);

/// How long the lag gauge waits for a partition's watermarks.
const WATERMARKS_TIMEOUT: Duration = Duration::from_millis(500);

/// A running sink: its thread and its figures.
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
        let topics = Topics::parse(&cfg.kafka.topic)?;
        let consumer = consumer(&cfg, &topics)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(SinkStats::new(cfg.shards.len()));
        let legacy_topic = match &topics {
            Topics::Named(n) if n.len() == 1 => Some(n[0].clone()),
            _ => None,
        };
        let writer = Writer::new(cfg.shards.clone(), pools, stats.clone(), legacy_topic);
        let body = SinkThread {
            cfg,
            topics,
            names: HashMap::new(),
            consumer,
            rt,
            writer,
            stop: stop.clone(),
            stats: stats.clone(),
            lag: LagGauge::new(),
            watch: GroupWatch::default(),
            last_record: Instant::now(),
        };
        let thread = std::thread::Builder::new()
            .name("flashd-sink".into())
            .spawn(move || body.run())
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

/// The group member, subscribed to the topics.
fn consumer(cfg: &SinkConfig, topics: &Topics) -> Result<BaseConsumer, SinkError> {
    let mut c = ClientConfig::new();
    if topics.is_pattern() {
        c.set(
            "topic.metadata.refresh.interval.ms",
            NODE_TOPIC_REFRESH.as_millis().to_string(),
        );
    }
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
    subscribe(&consumer, topics)?;
    Ok(consumer)
}

fn subscribe(consumer: &BaseConsumer, topics: &Topics) -> Result<(), SinkError> {
    let names = topics.subscription();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    consumer.subscribe(&refs)?;
    Ok(())
}

/// Let go of a stuck consumer without leaving its group: its handle is
/// destroyed with `RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE`, which stops its
/// heartbeats and closes its connections, so the group drops the member
/// after `session.timeout.ms` and hands its partitions to the fresh one.
/// Dropping it instead runs the consumer close, which on the stall this is
/// for never completed (the first try, closing on a thread of its own, left
/// the old member heartbeating and holding every partition; the fresh one
/// got none). Its offsets need no goodbye: they are committed after the
/// rows, and whatever it read past them is read again.
///
/// The Rust side of the old consumer (its queue handle and context, a few
/// hundred bytes) is leaked on purpose: dropping it would run that close.
/// The destroy joins librdkafka's threads, so it runs on a thread of its
/// own; a broker in trouble cannot hold the sink.
fn abandon(old: BaseConsumer) {
    struct Handle(*mut rdkafka::bindings::rd_kafka_t);
    // SAFETY: librdkafka handles may be used from any thread, and after the
    // forget below nothing but the thread that receives it touches it.
    unsafe impl Send for Handle {}
    let h = Handle(old.client().native_ptr());
    std::mem::forget(old);
    let spawned = std::thread::Builder::new()
        .name("flashd-sink-abandon".into())
        .spawn(move || {
            let h = h;
            // SAFETY: the handle is live (its only owner was forgotten
            // above, so nothing else destroys it) and destroyed once.
            unsafe {
                rdkafka::bindings::rd_kafka_destroy_flags(
                    h.0,
                    rdkafka::bindings::RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE,
                )
            };
        });
    if let Err(e) = spawned {
        // No thread: the old handle stays (leaked, heartbeating); the
        // fresh member waits for the next rebalance.
        tracing::error!(error = %e, "sink: cannot start the thread that destroys the old consumer");
    }
}

/// What one poll round gathered.
struct Polled {
    batch: Vec<Rec>,
    bad: Vec<Undecodable>,
    /// Next offset to commit, per partition.
    offsets: BTreeMap<Part, i64>,
    started: Instant,
}

impl Polled {
    fn is_empty(&self) -> bool {
        self.batch.is_empty() && self.bad.is_empty()
    }
}

/// The sink's thread.
struct SinkThread {
    cfg: SinkConfig,
    topics: Topics,
    /// Each topic's name, shared by its records.
    names: HashMap<String, Arc<str>>,
    consumer: BaseConsumer,
    rt: tokio::runtime::Runtime,
    writer: Writer,
    stop: Arc<AtomicBool>,
    stats: Arc<SinkStats>,
    lag: LagGauge,
    watch: GroupWatch,
    /// When a poll last returned a record (or the member last had nothing
    /// to read): see [`STUCK_RESTART`].
    last_record: Instant,
}

impl SinkThread {
    fn run(mut self) {
        self.consume();
        let SinkThread { rt, writer, .. } = self;
        rt.block_on(writer.close());
    }

    /// Poll, write, commit, until stopped.
    fn consume(&mut self) {
        while !self.stop.load(Ordering::Acquire) {
            let polled = self.poll();
            if self.lag.due() {
                self.lag.update(&self.consumer, &self.stats);
                self.watch.check(&self.topics, &self.consumer, &self.stats);
                self.unstick();
                self.lag.last = Instant::now();
            }
            if polled.offsets.is_empty() {
                continue;
            }
            let t0 = Instant::now();
            if !self.write(&polled) {
                return;
            }
            if !self.stats.mysql_up.swap(true, Ordering::Relaxed) {
                tracing::info!("sink: MySQL writes succeed again");
            }
            let n = polled.batch.len() as u64;
            self.stats.events.fetch_add(n, Ordering::Relaxed);
            self.stats.batches.fetch_add(1, Ordering::Relaxed);
            self.stats
                .write_ns_sum
                .fetch_add(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
            self.stats.batch_hist.observe(n);
            self.commit(&polled);
            // Time spent writing (MySQL down, retried for minutes) is not
            // time spent reading nothing.
            self.last_record = Instant::now();
        }
    }

    /// A member that holds partitions with records waiting and has read
    /// nothing for [`STUCK_RESTART`] starts a fresh consumer (see there).
    fn unstick(&mut self) {
        let assigned = self.stats.assigned.load(Ordering::Relaxed);
        let lag = self.stats.lag.load(Ordering::Relaxed);
        if !stuck(assigned, lag, self.last_record.elapsed()) {
            if assigned == 0 || lag <= 0 {
                // Nothing this member should be reading: not a stall.
                self.last_record = Instant::now();
            }
            return;
        }
        let positions = self
            .consumer
            .position()
            .map(|p| {
                p.elements()
                    .iter()
                    .map(|e| format!("{}/{}@{:?}", e.topic(), e.partition(), e.offset()))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        tracing::warn!(
            partitions = assigned,
            records_behind = lag,
            read_nothing_s = self.last_record.elapsed().as_secs(),
            positions = %positions,
            "sink: holding partitions with records waiting and reading nothing; starting a fresh consumer"
        );
        match consumer(&self.cfg, &self.topics) {
            Ok(fresh) => {
                abandon(std::mem::replace(&mut self.consumer, fresh));
                self.stats.restarts.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => tracing::error!(error = %e, "sink: cannot start a fresh consumer"),
        }
        self.last_record = Instant::now();
    }

    /// Up to `batch_max` records, waiting at most `batch_wait` once the
    /// first arrived (100 ms for the first).
    fn poll(&mut self) -> Polled {
        let mut p = Polled {
            batch: Vec::new(),
            bad: Vec::new(),
            offsets: BTreeMap::new(),
            started: Instant::now(),
        };
        while p.batch.len() < self.cfg.batch_max {
            let wait = if p.is_empty() {
                Duration::from_millis(100)
            } else {
                self.cfg.batch_wait.saturating_sub(p.started.elapsed())
            };
            if !p.is_empty() && wait.is_zero() {
                break;
            }
            match self.consumer.poll(wait) {
                None => {
                    if p.is_empty() {
                        break;
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "sink: kafka consumer error");
                    break;
                }
                Some(Ok(m)) => {
                    self.last_record = Instant::now();
                    let v = m.payload().unwrap_or(&[]);
                    let (partition, offset) = (m.partition(), m.offset());
                    let topic = match self.names.get(m.topic()) {
                        Some(t) => t.clone(),
                        None => {
                            let t: Arc<str> = m.topic().into();
                            self.names.insert(m.topic().to_string(), t.clone());
                            t
                        }
                    };
                    match decode_message(v) {
                        Ok((group, r)) => p.batch.extend(r.into_iter().map(|(lsn, rec)| Rec {
                            topic: topic.clone(),
                            partition,
                            offset,
                            group,
                            lsn,
                            rec,
                        })),
                        // Not ours to judge: park it rather than stall
                        // every order behind it.
                        Err(e) => p.bad.push(Undecodable {
                            topic: topic.clone(),
                            partition,
                            offset,
                            payload: v.to_vec(),
                            error: format!("undecodable record: {e}"),
                        }),
                    }
                    p.offsets.insert((topic, partition), offset + 1);
                }
            }
        }
        p
    }

    /// Write what was polled: undecodable messages parked first, whatever
    /// the rest does; then the batch, or, when it fails in a way that will
    /// recur, one record at a time, parking each that fails so. `false`:
    /// the sink was stopped first.
    fn write(&mut self, p: &Polled) -> bool {
        for u in &p.bad {
            let parked = Parked {
                topic: &u.topic,
                partition: u.partition,
                offset: u.offset,
                lsn: 0,
                payload: &u.payload,
                error: &u.error,
            };
            if !self.park(&parked) {
                return false;
            }
        }
        let e = match self.retry(&Job::Write(&p.batch)) {
            Outcome::Done => return true,
            Outcome::Stopped => return false,
            Outcome::Failed(e) => e,
        };
        tracing::error!(error = %e.msg, records = p.batch.len(), "sink: a write error that will recur; writing the batch one record at a time to park what fails");
        for r in &p.batch {
            let e = match self.retry(&Job::Write(std::slice::from_ref(r))) {
                Outcome::Done => continue,
                Outcome::Stopped => return false,
                Outcome::Failed(e) => e,
            };
            let payload = record_bytes(r);
            let parked = Parked {
                topic: &r.topic,
                partition: r.partition,
                offset: r.offset,
                lsn: r.lsn,
                payload: &payload,
                error: &e.msg,
            };
            if !self.park(&parked) {
                return false;
            }
        }
        true
    }

    /// Park a record (or skip it, loudly, if even that fails). `false`:
    /// the sink was stopped first.
    fn park(&mut self, p: &Parked<'_>) -> bool {
        match self.retry(&Job::Park(p)) {
            Outcome::Done => poisoned(&self.stats, p),
            Outcome::Stopped => return false,
            Outcome::Failed(why) => unparkable(&self.stats, p, &why),
        }
        true
    }

    fn retry(&mut self, job: &Job<'_>) -> Outcome {
        let SinkThread {
            consumer,
            rt,
            writer,
            stop,
            stats,
            lag,
            ..
        } = self;
        // While MySQL is down, the lag gauge keeps moving.
        let mut waiting = || {
            if lag.due() {
                lag.update(consumer, stats);
            }
        };
        retry_transient(rt, writer, stop, stats, job, &mut waiting)
    }

    /// The rows are in: commit the batch's offsets.
    fn commit(&mut self, p: &Polled) {
        let mut tpl = TopicPartitionList::new();
        for ((topic, part), o) in &p.offsets {
            self.lag.next.insert((topic.clone(), *part), *o);
            let _ = tpl.add_partition_offset(topic, *part, Offset::Offset(*o));
        }
        let tc = Instant::now();
        let committed = self.consumer.commit(&tpl, CommitMode::Sync);
        tracing::debug!(
            records = p.batch.len(),
            fill_ms = p.started.elapsed().as_millis() as u64,
            commit_ms = tc.elapsed().as_millis() as u64,
            "sink batch"
        );
        if let Err(e) = committed {
            // The rows are in; a replay of this batch changes nothing.
            tracing::warn!(error = %e, "sink: offset commit failed; the batch may be replayed");
        }
    }
}

/// A partition's low and high watermarks.
#[derive(Debug, Clone, Copy, Default)]
struct Watermarks {
    low: i64,
    high: i64,
}

/// `flashd_sink_lag_records`: records in the assigned partitions not yet
/// written.
struct LagGauge {
    /// Next offset to read, per partition, as far as this member knows.
    next: BTreeMap<Part, i64>,
    /// The last watermarks each partition reported.
    known: BTreeMap<Part, Watermarks>,
    last: Instant,
}

impl LagGauge {
    fn new() -> LagGauge {
        LagGauge {
            next: BTreeMap::new(),
            known: BTreeMap::new(),
            last: Instant::now() - Duration::from_secs(10),
        }
    }

    fn due(&self) -> bool {
        self.last.elapsed() >= LAG_EVERY
    }

    fn update(&mut self, consumer: &BaseConsumer, stats: &SinkStats) {
        if let Some(lag) = self.measure(consumer) {
            stats.lag.store(lag, Ordering::Relaxed);
        }
        self.last = Instant::now();
    }

    fn measure(&mut self, consumer: &BaseConsumer) -> Option<i64> {
        let assigned = consumer.assignment().ok()?;
        let mut lag = 0i64;
        for e in assigned.elements() {
            let p: Part = (e.topic().into(), e.partition());
            // A partition whose watermarks do not come back counts with
            // the last ones it reported (tansu has been seen not to answer
            // for an empty partition after a restart; that must not freeze
            // the gauge).
            let w = match consumer.fetch_watermarks(e.topic(), e.partition(), WATERMARKS_TIMEOUT) {
                Ok((low, high)) => {
                    let w = Watermarks { low, high };
                    self.known.insert(p.clone(), w);
                    w
                }
                Err(_) => self.known.get(&p).copied().unwrap_or_default(),
            };
            // Records fetched but not yet written still count as lag.
            let done = self.next.get(&p).copied().unwrap_or(w.low).max(w.low);
            lag += (w.high - done).max(0);
        }
        Some(lag)
    }
}

/// Since when a member has had no partition, the group's committed
/// offsets then (`None`: they could not be read), and when it last said
/// why it could not read them.
struct Unassigned {
    since: Instant,
    committed: Option<Vec<i64>>,
    said: Option<Instant>,
}

/// The group's committed offset per partition of the topics, and how many
/// records lie past them on the partitions whose watermarks came back.
struct GroupOffsets {
    committed: Vec<i64>,
    behind: i64,
}

/// What the watch does about an unassigned member, from what it saw when
/// the member lost its partitions (`before`) and what it sees now.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Not long enough yet, or another member is consuming.
    Wait,
    /// The group's offsets moved (or were first read): watch from now.
    Restart,
    /// Leave and rejoin the group, for this reason.
    Rejoin(&'static str),
}

/// The rule (a function of the figures alone, so a test can hold it):
///
/// * offsets unmoved and records past them: after [`UNASSIGNED_REJOIN`];
/// * offsets unmoved, whatever the watermarks say (a partition that does
///   not answer counts no records; tansu has been seen to answer stale
///   ones after a restart): after [`UNASSIGNED_BLIND_REJOIN`];
/// * the group's offsets cannot be read at all: after
///   [`UNASSIGNED_BLIND_REJOIN`] too.
///
/// The last two are the stall the chaos soak found (seed 68806543): after
/// a sink `kill -9` and a broker pause the restarted member had no
/// partition for minutes while the watch, unable to show records waiting,
/// never rejoined; a fresh member ended it at once. One needless
/// rebalance every 30 s while a group commits nothing (so has nothing to
/// lose by it) costs less than a sale's orders never reaching MySQL.
fn verdict(
    unassigned_for: Duration,
    before: Option<&[i64]>,
    now: Result<&GroupOffsets, &str>,
) -> Verdict {
    match (before, now) {
        (_, Err(_)) if unassigned_for >= UNASSIGNED_BLIND_REJOIN => {
            Verdict::Rejoin("the group's offsets cannot be read")
        }
        (_, Err(_)) => Verdict::Wait,
        (Some(before), Ok(g)) if before == g.committed.as_slice() => {
            if g.behind > 0 && unassigned_for >= UNASSIGNED_REJOIN {
                Verdict::Rejoin("the group is not consuming and records wait")
            } else if unassigned_for >= UNASSIGNED_BLIND_REJOIN {
                Verdict::Rejoin(
                    "the group has committed nothing while this member had no partition",
                )
            } else {
                Verdict::Wait
            }
        }
        // Moved, or read for the first time: count from now.
        (_, Ok(_)) => Verdict::Restart,
    }
}

/// Watches for a group that has stopped consuming (see
/// [`UNASSIGNED_REJOIN`]).
#[derive(Default)]
struct GroupWatch {
    unassigned: Option<Unassigned>,
}

impl GroupWatch {
    fn check(&mut self, topics: &Topics, consumer: &BaseConsumer, stats: &SinkStats) {
        let assigned = consumer.assignment().map_or(0, |a| a.count());
        stats.assigned.store(assigned as u64, Ordering::Relaxed);
        if assigned > 0 {
            self.unassigned = None;
            return;
        }
        let Some(u) = &mut self.unassigned else {
            self.unassigned = Some(Unassigned {
                since: Instant::now(),
                committed: group_offsets(topics, consumer).ok().map(|g| g.committed),
                said: None,
            });
            return;
        };
        // Nothing to decide before the shorter wait is over: the group
        // is not read (a broker round trip or three) every half second.
        if u.since.elapsed() < UNASSIGNED_REJOIN {
            return;
        }
        let now = group_offsets(topics, consumer);
        if let Err(why) = &now {
            if u.said.is_none_or(|t| t.elapsed() >= UNASSIGNED_REJOIN) {
                tracing::warn!(
                    unassigned_s = u.since.elapsed().as_secs(),
                    why = %why,
                    "sink: no partition assigned and the group's offsets cannot be read"
                );
                u.said = Some(Instant::now());
            }
        }
        match verdict(
            u.since.elapsed(),
            u.committed.as_deref(),
            now.as_ref().map_err(|e| e.as_str()),
        ) {
            Verdict::Wait => {}
            Verdict::Restart => {
                self.unassigned = Some(Unassigned {
                    since: Instant::now(),
                    committed: now.ok().map(|g| g.committed),
                    said: None,
                });
            }
            Verdict::Rejoin(why) => {
                let behind = now.as_ref().map_or(-1, |g| g.behind);
                tracing::warn!(
                    unassigned_s = u.since.elapsed().as_secs(),
                    records_behind = behind,
                    why,
                    "sink: no partition assigned; leaving and rejoining the group"
                );
                consumer.unsubscribe();
                if let Err(e) = subscribe(consumer, topics) {
                    tracing::error!(error = %e, "sink: cannot subscribe again");
                }
                stats.rejoins.fetch_add(1, Ordering::Relaxed);
                self.unassigned = None;
            }
        }
    }
}

/// The group's offsets on every partition of the topics followed (in
/// name order); `Err` says which question the broker did not answer.
fn group_offsets(topics: &Topics, consumer: &BaseConsumer) -> Result<GroupOffsets, String> {
    // Named topics: their own metadata; node topics: all, then filtered.
    let md = match topics {
        Topics::Named(n) if n.len() == 1 => {
            consumer.fetch_metadata(Some(&n[0]), GROUP_CHECK_TIMEOUT)
        }
        _ => consumer.fetch_metadata(None, GROUP_CHECK_TIMEOUT),
    }
    .map_err(|e| format!("metadata: {e}"))?;
    let mut followed: Vec<_> = md
        .topics()
        .iter()
        .filter(|t| topics.follows(t.name()))
        .collect();
    followed.sort_by(|a, b| a.name().cmp(b.name()));
    let mut tpl = TopicPartitionList::new();
    for t in &followed {
        for p in t.partitions() {
            tpl.add_partition(t.name(), p.id());
        }
    }
    if tpl.count() == 0 {
        return Err("metadata: no partition of the topics followed".into());
    }
    let committed = consumer
        .committed_offsets(tpl, GROUP_CHECK_TIMEOUT)
        .map_err(|e| format!("committed offsets: {e}"))?;
    let mut g = GroupOffsets {
        committed: Vec::new(),
        behind: 0,
    };
    for e in committed.elements() {
        let c = match e.offset() {
            Offset::Offset(o) => o,
            _ => 0,
        };
        // A partition that does not answer counts nothing behind: the
        // longer wait of `verdict` covers it.
        if let Ok((_, high)) =
            consumer.fetch_watermarks(e.topic(), e.partition(), GROUP_CHECK_TIMEOUT)
        {
            g.behind += (high - c).max(0);
        }
        g.committed.push(c);
    }
    Ok(g)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offsets(committed: &[i64], behind: i64) -> GroupOffsets {
        GroupOffsets {
            committed: committed.to_vec(),
            behind,
        }
    }

    #[test]
    fn a_member_that_reads_nothing_with_records_waiting_is_restarted() {
        let s = Duration::from_secs;
        assert!(stuck(3, 228, s(20)));
        assert!(!stuck(3, 228, s(19)), "not before STUCK_RESTART");
        assert!(!stuck(3, 0, s(600)), "caught up: idle, not stuck");
        assert!(
            !stuck(0, 228, s(600)),
            "no partition: the group watch's case"
        );
    }

    /// `abandon` returns at once, destroys the old handle without a crash
    /// or a double free, and the group hands every partition to a fresh
    /// member once the old one's session times out (librdkafka's mock
    /// cluster, a real group coordinator). The first fix of the stall
    /// closed the old consumer on a thread instead: a close that never
    /// completes keeps polling, so its member rejoined every rebalance and
    /// kept the partitions.
    #[test]
    fn an_abandoned_member_hands_its_partitions_to_a_fresh_one() {
        use rdkafka::mocking::MockCluster;
        let mock = MockCluster::new(1).unwrap();
        mock.create_topic("orders", 3, 1).unwrap();
        let member = || -> BaseConsumer {
            let c: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", mock.bootstrap_servers())
                .set("group.id", "sink")
                .set("session.timeout.ms", "6000")
                .set("heartbeat.interval.ms", "500")
                .set("enable.auto.commit", "false")
                .create()
                .unwrap();
            c.subscribe(&["orders"]).unwrap();
            c
        };
        let assigned = |c: &BaseConsumer, limit: Duration| {
            let t0 = Instant::now();
            while t0.elapsed() < limit {
                let _ = c.poll(Duration::from_millis(100));
                if c.assignment().map_or(0, |a| a.count()) == 3 {
                    return true;
                }
            }
            false
        };
        let old = member();
        assert!(
            assigned(&old, Duration::from_secs(30)),
            "the first member never got the partitions"
        );
        let t0 = Instant::now();
        abandon(old);
        assert!(t0.elapsed() < Duration::from_secs(1), "abandon blocked");
        let fresh = member();
        assert!(
            assigned(&fresh, Duration::from_secs(40)),
            "the fresh member got no partitions after the old one was abandoned"
        );
        // Not before the old member's session could time out: it really
        // was dropped by the group, not closed politely.
        assert!(t0.elapsed() >= Duration::from_secs(5), "{:?}", t0.elapsed());
    }

    #[test]
    fn a_stuck_group_is_rejoined_and_a_working_one_left_alone() {
        let s = Duration::from_secs;
        let before = [5, 7, 9];
        // Records wait and nobody commits: rejoin after the short wait.
        let stuck = offsets(&before, 12);
        assert_eq!(verdict(s(3), Some(&before), Ok(&stuck)), Verdict::Wait);
        assert!(matches!(
            verdict(s(10), Some(&before), Ok(&stuck)),
            Verdict::Rejoin(_)
        ));
        // Another member is consuming: its commits move the offsets, and
        // nobody rejoins however long this one waits.
        let moving = offsets(&[6, 7, 9], 12);
        assert_eq!(
            verdict(s(3600), Some(&before), Ok(&moving)),
            Verdict::Restart
        );
        // No records seen past the offsets (none, or watermarks that do
        // not answer or are stale): rejoin only after the longer wait.
        let quiet = offsets(&before, 0);
        assert_eq!(verdict(s(10), Some(&before), Ok(&quiet)), Verdict::Wait);
        assert_eq!(verdict(s(29), Some(&before), Ok(&quiet)), Verdict::Wait);
        assert!(matches!(
            verdict(s(30), Some(&before), Ok(&quiet)),
            Verdict::Rejoin(_)
        ));
        // The group cannot be read at all: the longer wait too, whether or
        // not it was ever read.
        for b in [Some(&before[..]), None] {
            assert_eq!(
                verdict(s(10), b, Err("committed offsets: timed out")),
                Verdict::Wait
            );
            assert!(matches!(
                verdict(s(30), b, Err("metadata: timed out")),
                Verdict::Rejoin(_)
            ));
        }
        // First read after being unreadable: watch from now.
        assert_eq!(verdict(s(30), None, Ok(&stuck)), Verdict::Restart);
    }
}
