//! The Kafka backend of [`OrderLog`]: the production write-behind path.
//!
//! The events of one group commit are packed into one record per activity
//! (keyed by it), so one sale's events land on one partition in order.
//! Every event carries a global sequence number (the LSN) that this single
//! writer assigns; recovery merges the partitions by it and so replays
//! events in exactly the order the engine applied them, whatever the
//! partition count. Packing, not one record per event: a broker's cost is
//! per record far more than per byte (tansu with SQLite storage took about
//! 37,000 records/s from one producer here), and a busy sale's group holds
//! tens of orders of one activity.
//!
//! `append` hands records to librdkafka without waiting; `commit` waits
//! for the delivery report of every record appended since the last commit
//! (at most `timeout`, which is also librdkafka's `message.timeout.ms`), so
//! one commit covers a whole group of orders, as the file backend's
//! `fdatasync` does.
//!
//! A failed commit is where Kafka differs from a file: part of the batch
//! may be in the topic already and cannot be cut off. So `rollback`
//! remembers the batch's events and the next `append` first writes an
//! *abort* record for each activity involved, listing the events to undo;
//! the engine has reverted them live, and replay reverts them the same way
//! (reverting an event that never arrived does nothing). Because an abort
//! shares its activity's partition and precedes every later event of that
//! activity, nothing that depends on the reverted units can commit before
//! it.

use std::collections::BTreeMap;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use flashd_engine::{ActivityId, Event};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::codec::{decode_event, encode_event};
use crate::error::{DecodeError, LogError};
use crate::OrderLog;

/// Version byte at the start of every record value.
pub const RECORD_FORMAT: u8 = 1;
/// Record kind of an abort (engine events use the codec's kinds 1..=4).
pub const KIND_ABORT: u8 = 20;
/// Record kind of a packed run of events of one activity, each with its
/// own LSN (the header's LSN is the first one's).
pub const KIND_EVENTS: u8 = 21;

#[derive(Debug, Clone)]
pub struct KafkaConfig {
    pub brokers: String,
    pub topic: String,
    /// How long a commit may wait for delivery reports; librdkafka's
    /// `message.timeout.ms` is set to it, so every record of a batch is
    /// reported (delivered or failed) within it.
    pub timeout: Duration,
    /// librdkafka properties passed through (they override the defaults
    /// set here, except the ones correctness depends on).
    pub properties: Vec<(String, String)>,
}

/// A record as stored in the topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogRecord {
    Event(Event),
    /// Undo these events (in reverse order).
    Abort(Vec<Event>),
}

/// The key that keeps one sale's events on one partition.
pub fn activity_of(ev: &Event) -> ActivityId {
    match ev {
        Event::ActivityCreated { id, .. } => *id,
        Event::OrderCreated { activity_id, .. }
        | Event::OrderPaid { activity_id, .. }
        | Event::OrderCancelled { activity_id, .. } => *activity_id,
    }
}

pub fn encode_value(lsn: u64, rec: &LogRecord, out: &mut Vec<u8>) {
    out.clear();
    out.push(RECORD_FORMAT);
    out.push(0); // kind, patched below
    out.extend_from_slice(&lsn.to_le_bytes());
    let kind = match rec {
        LogRecord::Event(ev) => encode_event(ev, out),
        LogRecord::Abort(evs) => {
            out.extend_from_slice(&(evs.len() as u32).to_le_bytes());
            let mut p = Vec::with_capacity(128);
            for ev in evs {
                p.clear();
                let k = encode_event(ev, &mut p);
                out.push(k);
                out.extend_from_slice(&(p.len() as u32).to_le_bytes());
                out.extend_from_slice(&p);
            }
            KIND_ABORT
        }
    };
    out[1] = kind;
}

/// One record holding several events (of one activity), each with its LSN.
pub fn encode_events(events: &[(u64, &Event)], out: &mut Vec<u8>) {
    out.clear();
    out.push(RECORD_FORMAT);
    out.push(KIND_EVENTS);
    out.extend_from_slice(&events.first().map_or(0, |e| e.0).to_le_bytes());
    out.extend_from_slice(&(events.len() as u32).to_le_bytes());
    let mut p = Vec::with_capacity(128);
    for (lsn, ev) in events {
        p.clear();
        let k = encode_event(ev, &mut p);
        out.extend_from_slice(&lsn.to_le_bytes());
        out.push(k);
        out.extend_from_slice(&(p.len() as u32).to_le_bytes());
        out.extend_from_slice(&p);
    }
}

/// Every (LSN, record) a stored value holds: one for an event or an abort,
/// several for a packed run of events.
pub fn decode_records(v: &[u8]) -> Result<Vec<(u64, LogRecord)>, DecodeError> {
    if v.len() < 10 || v[1] != KIND_EVENTS {
        return decode_value(v).map(|r| vec![r]);
    }
    if v[0] != RECORD_FORMAT {
        return Err(DecodeError::BadEnum("record format"));
    }
    let body = &v[10..];
    let count = u32::from_le_bytes(take(body, 0, 4)?.try_into().expect("4")) as usize;
    let mut at = 4;
    let mut out = Vec::with_capacity(count.min(1 << 16));
    for _ in 0..count {
        let lsn = u64::from_le_bytes(take(body, at, 8)?.try_into().expect("8"));
        let k = take(body, at + 8, 1)?[0];
        let len = u32::from_le_bytes(take(body, at + 9, 4)?.try_into().expect("4")) as usize;
        out.push((
            lsn,
            LogRecord::Event(decode_event(k, take(body, at + 13, len)?)?),
        ));
        at += 13 + len;
    }
    if at != body.len() {
        return Err(DecodeError::TrailingBytes);
    }
    Ok(out)
}

fn take(b: &[u8], at: usize, n: usize) -> Result<&[u8], DecodeError> {
    b.get(at..at + n).ok_or(DecodeError::Truncated)
}

pub fn decode_value(v: &[u8]) -> Result<(u64, LogRecord), DecodeError> {
    if v.len() < 10 {
        return Err(DecodeError::Truncated);
    }
    if v[0] != RECORD_FORMAT {
        return Err(DecodeError::BadEnum("record format"));
    }
    let kind = v[1];
    let lsn = u64::from_le_bytes(v[2..10].try_into().expect("8 bytes"));
    let body = &v[10..];
    if kind != KIND_ABORT {
        return Ok((lsn, LogRecord::Event(decode_event(kind, body)?)));
    }
    let count = u32::from_le_bytes(take(body, 0, 4)?.try_into().expect("4")) as usize;
    let mut at = 4;
    let mut evs = Vec::with_capacity(count.min(1 << 16));
    for _ in 0..count {
        let k = take(body, at, 1)?[0];
        let len = u32::from_le_bytes(take(body, at + 1, 4)?.try_into().expect("4")) as usize;
        evs.push(decode_event(k, take(body, at + 5, len)?)?);
        at += 5 + len;
    }
    if at != body.len() {
        return Err(DecodeError::TrailingBytes);
    }
    Ok((lsn, LogRecord::Abort(evs)))
}

/// Delivery reports of the batch in flight.
#[derive(Default)]
struct Batch {
    /// Generation of the batch; reports of an older one are ignored.
    generation: u32,
    sent: usize,
    reported: usize,
    failed: usize,
    first_error: Option<String>,
}

pub struct Deliveries {
    batch: Mutex<Batch>,
    done: Condvar,
}

impl Deliveries {
    /// The batch state; a poisoned lock (a panicking callback) still holds
    /// consistent counters, so take it.
    fn lock(&self) -> std::sync::MutexGuard<'_, Batch> {
        self.batch.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    /// `generation << 32 | index`.
    type DeliveryOpaque = usize;

    fn delivery(&self, r: &DeliveryResult<'_>, opaque: usize) {
        let generation = (opaque as u64 >> 32) as u32;
        let mut b = self.lock();
        if b.generation != generation {
            return;
        }
        b.reported += 1;
        if let Err((e, _)) = r {
            b.failed += 1;
            if b.first_error.is_none() {
                b.first_error = Some(e.to_string());
            }
        }
        if b.reported >= b.sent {
            self.done.notify_all();
        }
    }
}

fn client_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.brokers);
    c.set("reconnect.backoff.max.ms", "1000");
    for (k, v) in &cfg.properties {
        c.set(k, v);
    }
    c
}

fn make_producer(cfg: &KafkaConfig) -> Result<ThreadedProducer<Deliveries>, LogError> {
    let mut c = client_config(cfg);
    c.set("linger.ms", "1");
    // After an outage, find the broker again within a second or so (the
    // default backs off to 10 s).
    c.set("reconnect.backoff.max.ms", "1000");
    for (k, v) in &cfg.properties {
        c.set(k, v);
    }
    // Not overridable: a confirmed order must be on every in-sync replica,
    // exactly once, in order.
    c.set("enable.idempotence", "true");
    c.set("acks", "all");
    c.set(
        "message.timeout.ms",
        cfg.timeout.as_millis().max(1).to_string(),
    );
    c.create_with_context(Deliveries {
        batch: Mutex::new(Batch::default()),
        done: Condvar::new(),
    })
    .map_err(kafka_err)
}

pub struct KafkaLog {
    producer: ThreadedProducer<Deliveries>,
    cfg: KafkaConfig,
    next_lsn: u64,
    committed_lsn: u64,
    /// Events appended since the last commit (to abort if it fails).
    batch: Vec<Event>,
    /// Events of failed batches whose abort records are not yet durable.
    to_abort: Vec<Event>,
    value: Vec<u8>,
}

impl KafkaLog {
    /// `next_lsn`: one past the highest LSN in the topic (from recovery).
    pub fn open(cfg: KafkaConfig, next_lsn: u64) -> Result<KafkaLog, LogError> {
        let producer = make_producer(&cfg)?;
        // Connect (and learn the partition leaders) before the first order
        // has to wait on it: its delivery budget is `timeout`, not the
        // time it takes to reach a broker from cold.
        producer
            .client()
            .fetch_metadata(Some(&cfg.topic), Duration::from_secs(10))
            .map_err(kafka_err)?;
        Ok(KafkaLog {
            producer,
            cfg,
            next_lsn,
            committed_lsn: next_lsn,
            batch: Vec::new(),
            to_abort: Vec::new(),
            value: Vec::with_capacity(256),
        })
    }

    /// Produce `self.value` (already encoded) keyed by `key`.
    fn send(&mut self, key: ActivityId, index: usize, generation: u32) -> Result<(), LogError> {
        let key = key.to_string();
        let opaque = ((generation as usize) << 32) | index;
        let mut record = BaseRecord::with_opaque_to(&self.cfg.topic, opaque)
            .key(key.as_bytes())
            .payload(&self.value[..]);
        let deadline = Instant::now() + self.cfg.timeout;
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((
                    KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                    back,
                )) if Instant::now() < deadline => {
                    record = back;
                    std::thread::sleep(Duration::from_micros(200));
                }
                Err((e, _)) => return Err(kafka_err(e)),
            }
        }
    }

    /// Wait until everything queued is delivered (or `timeout`): what a
    /// clean shutdown does, since dropping a producer discards its queue.
    pub fn flush(&self, timeout: Duration) -> Result<(), LogError> {
        self.producer.flush(timeout).map_err(kafka_err)
    }
}

impl Drop for KafkaLog {
    fn drop(&mut self) {
        if let Err(e) = self.flush(self.cfg.timeout) {
            tracing::error!(error = %e, "kafka producer flush at shutdown failed");
        }
    }
}

fn kafka_err(e: KafkaError) -> LogError {
    LogError::Broker(e.to_string())
}

impl OrderLog for KafkaLog {
    fn append(&mut self, events: &[Event]) -> Result<(), LogError> {
        let generation = {
            let mut b = self.producer.context().lock();
            if b.sent == 0 {
                b.generation = b.generation.wrapping_add(1);
                b.reported = 0;
                b.failed = 0;
                b.first_error = None;
            }
            b.generation
        };
        let mut index = self.producer.context().lock().sent;
        // Aborts first: they must precede anything else of their activity.
        if !self.to_abort.is_empty() && self.batch.is_empty() {
            let mut by_activity: BTreeMap<ActivityId, Vec<Event>> = BTreeMap::new();
            for ev in &self.to_abort {
                by_activity
                    .entry(activity_of(ev))
                    .or_default()
                    .push(ev.clone());
            }
            for (a, evs) in by_activity {
                encode_value(self.next_lsn, &LogRecord::Abort(evs), &mut self.value);
                self.next_lsn += 1;
                self.send(a, index, generation)?;
                index += 1;
                self.bump_sent();
            }
        }
        // LSNs in the engine's order; one record per activity, its events
        // in that order.
        let mut by_activity: Vec<(ActivityId, Vec<(u64, &Event)>)> = Vec::new();
        for ev in events {
            let a = activity_of(ev);
            let lsn = self.next_lsn;
            self.next_lsn += 1;
            match by_activity.iter_mut().find(|(x, _)| *x == a) {
                Some((_, v)) => v.push((lsn, ev)),
                None => by_activity.push((a, vec![(lsn, ev)])),
            }
        }
        self.batch.extend(events.iter().cloned());
        for (a, evs) in &by_activity {
            encode_events(evs, &mut self.value);
            self.send(*a, index, generation)?;
            index += 1;
            self.bump_sent();
        }
        Ok(())
    }

    fn commit(&mut self) -> Result<u64, LogError> {
        let cx = self.producer.context();
        // librdkafka times messages out on a coarse timer, so its reports
        // may come late: past `timeout` the batch counts as failed (what
        // did arrive is undone by the abort records).
        let deadline = Instant::now() + self.cfg.timeout;
        let mut b = cx.lock();
        while b.reported < b.sent {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            b = cx
                .done
                .wait_timeout(b, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        let outcome = if b.failed > 0 {
            Err(LogError::Broker(b.first_error.clone().unwrap_or_default()))
        } else if b.reported < b.sent {
            Err(LogError::Broker(format!(
                "{} of {} records not reported within {:?}",
                b.sent - b.reported,
                b.sent,
                self.cfg.timeout
            )))
        } else {
            Ok(())
        };
        // Next batch: a new generation, so late reports of this one
        // cannot be counted against it.
        b.sent = 0;
        drop(b);
        match outcome {
            Ok(()) => {
                self.batch.clear();
                self.to_abort.clear();
                self.committed_lsn = self.next_lsn;
                Ok(self.committed_lsn)
            }
            Err(e) => Err(e),
        }
    }

    fn rollback(&mut self) -> Result<(), LogError> {
        // Some of the batch may be in the topic: undo it there as the
        // engine undoes it here. The aborts of earlier failures stay queued
        // too (they may not have arrived).
        self.to_abort.append(&mut self.batch);
        let mut b = self.producer.context().lock();
        b.sent = 0;
        drop(b);
        // A fresh producer (a new producer id) for what comes next: after
        // timed-out batches an idempotent producer's sequence state may no
        // longer match the broker's (a restarted broker refuses it), and
        // waiting for librdkafka to recover it would keep orders failing.
        if let Some((code, why)) = self.producer.client().fatal_error() {
            tracing::warn!(?code, why, "kafka producer hit a fatal error");
        }
        // Let the old producer settle first (every record delivered or
        // timed out): a record of the failed batch must not land after the
        // abort record the new producer will write.
        let _ = self.producer.flush(self.cfg.timeout * 2);
        self.producer = make_producer(&self.cfg)?;
        Ok(())
    }

    fn committed_lsn(&self) -> u64 {
        self.committed_lsn
    }
}

impl KafkaLog {
    fn bump_sent(&self) {
        let mut b = self.producer.context().lock();
        b.sent += 1;
    }
}

/// What replaying the topic found.
#[derive(Debug, Default)]
pub struct KafkaRecovered {
    pub next_lsn: u64,
    pub events: u64,
    pub aborts: u64,
    /// Records per partition.
    pub partitions: Vec<u64>,
}

/// Create the topic if it does not exist (`partitions` partitions).
pub fn ensure_topic(cfg: &KafkaConfig, partitions: i32) -> Result<bool, LogError> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> =
        client_config(cfg).create().map_err(kafka_err)?;
    let consumer: BaseConsumer = client_config(cfg).create().map_err(kafka_err)?;
    let md = consumer
        .fetch_metadata(Some(&cfg.topic), Duration::from_secs(10))
        .map_err(kafka_err)?;
    if md
        .topics()
        .iter()
        .any(|t| t.name() == cfg.topic && t.error().is_none() && !t.partitions().is_empty())
    {
        return Ok(false);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| LogError::Broker(e.to_string()))?;
    let topic = NewTopic::new(&cfg.topic, partitions, TopicReplication::Fixed(1));
    let res = rt
        .block_on(admin.create_topics([&topic], &AdminOptions::new()))
        .map_err(kafka_err)?;
    for r in res {
        if let Err((name, code)) = r {
            if code != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists {
                return Err(LogError::Broker(format!("creating topic {name}: {code}")));
            }
        }
    }
    Ok(true)
}

/// Read the whole topic (every partition, from `from` offsets or the
/// beginning), merge by LSN, and hand each record to `apply` in order.
pub fn recover_topic(
    cfg: &KafkaConfig,
    apply: &mut dyn FnMut(u64, LogRecord) -> Result<(), String>,
) -> Result<KafkaRecovered, LogError> {
    let mut c = client_config(cfg);
    c.set("group.id", "flashd-recovery")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false");
    let consumer: BaseConsumer = c.create().map_err(kafka_err)?;
    let md = consumer
        .fetch_metadata(Some(&cfg.topic), cfg.timeout.max(Duration::from_secs(10)))
        .map_err(kafka_err)?;
    let Some(t) = md.topics().iter().find(|t| t.name() == cfg.topic) else {
        return Err(LogError::Broker(format!("topic {} not found", cfg.topic)));
    };
    if let Some(e) = t.error() {
        return Err(LogError::Broker(format!("topic {}: {e:?}", cfg.topic)));
    }
    let parts: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
    let mut tpl = TopicPartitionList::new();
    let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
    let mut out = KafkaRecovered {
        partitions: vec![0; parts.len()],
        ..Default::default()
    };
    for &p in &parts {
        let (low, high) = consumer
            .fetch_watermarks(&cfg.topic, p, Duration::from_secs(10))
            .map_err(kafka_err)?;
        if high > low {
            ends.insert(p, high);
            tpl.add_partition_offset(&cfg.topic, p, Offset::Offset(low))
                .map_err(kafka_err)?;
        }
    }
    let mut records: Vec<(u64, LogRecord)> = Vec::new();
    if !ends.is_empty() {
        consumer.assign(&tpl).map_err(kafka_err)?;
        let mut last_progress = Instant::now();
        while !ends.is_empty() {
            match consumer.poll(Duration::from_millis(200)) {
                None => {
                    if last_progress.elapsed() > Duration::from_secs(30) {
                        return Err(LogError::Broker(format!(
                            "replaying {}: no progress for 30 s with partitions {:?} unfinished",
                            cfg.topic,
                            ends.keys().collect::<Vec<_>>()
                        )));
                    }
                }
                Some(Err(e)) => return Err(kafka_err(e)),
                Some(Ok(m)) => {
                    last_progress = Instant::now();
                    let (p, off) = (m.partition(), m.offset());
                    let v = m.payload().unwrap_or(&[]);
                    let recs = decode_records(v).map_err(|e| LogError::Corrupt {
                        path: format!("kafka:{}/{p}", cfg.topic).into(),
                        offset: off as u64,
                        why: e.to_string(),
                    })?;
                    if let Some(i) = parts.iter().position(|q| *q == p) {
                        out.partitions[i] += 1;
                    }
                    records.extend(recs);
                    if ends.get(&p).is_some_and(|h| off + 1 >= *h) {
                        ends.remove(&p);
                    }
                }
            }
        }
    }
    // Per partition the LSNs increase; across them, this merge restores
    // the order the engine applied.
    records.sort_by_key(|(lsn, _)| *lsn);
    for (lsn, rec) in records {
        out.next_lsn = out.next_lsn.max(lsn + 1);
        match &rec {
            LogRecord::Event(_) => out.events += 1,
            LogRecord::Abort(_) => out.aborts += 1,
        }
        apply(lsn, rec).map_err(|why| LogError::Replay { lsn, why })?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(id: u64, a: u32) -> Event {
        Event::OrderCreated {
            order_id: id,
            activity_id: a,
            user_id: 7,
            quantity: 1,
            amount_cents: 100,
            request_id: "r".into(),
            created_at: 1,
            expires_at: 2,
        }
    }

    #[test]
    fn records_round_trip() {
        let mut v = Vec::new();
        let e = LogRecord::Event(order(5, 2));
        encode_value(42, &e, &mut v);
        assert_eq!(decode_value(&v).unwrap(), (42, e));
        let a = LogRecord::Abort(vec![order(5, 2), order(6, 2)]);
        encode_value(43, &a, &mut v);
        assert_eq!(decode_value(&v).unwrap(), (43, a));
        assert!(decode_value(&v[..v.len() - 1]).is_err());
        v[0] = 9;
        assert!(decode_value(&v).is_err());
    }

    #[test]
    fn packed_events_round_trip_with_their_lsns() {
        let (a, b) = (order(5, 2), order(9, 2));
        let mut v = Vec::new();
        encode_events(&[(10, &a), (13, &b)], &mut v);
        assert_eq!(
            decode_records(&v).unwrap(),
            vec![(10, LogRecord::Event(a.clone())), (13, LogRecord::Event(b))]
        );
        assert!(decode_records(&v[..v.len() - 1]).is_err());
        v.push(0);
        assert!(decode_records(&v).is_err());
        // Single records still decode through the same door.
        encode_value(4, &LogRecord::Event(a.clone()), &mut v);
        assert_eq!(decode_records(&v).unwrap(), vec![(4, LogRecord::Event(a))]);
    }
}
