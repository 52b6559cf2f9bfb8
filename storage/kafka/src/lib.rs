//! flashd-kafka: the Kafka backend of [`OrderLog`], the production
//! write-behind path, and the record format on the topic (which the sink,
//! `flashd-sink`, reads).
//!
//! It owns the producer side ([`KafkaLog`]), the encoding of records
//! ([`encode_value`], [`decode_message`]), start-up replay of a topic
//! ([`recover_topic`]) and topic creation ([`ensure_topic`]). It must never
//! talk to MySQL or run an async runtime, and never decide stock: it only
//! carries the engine's events.
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
//! may be in the topic already and cannot be cut off, and a record of it
//! may still be in flight (a produce request the broker has not yet
//! processed) when we give up on it. So `rollback` replaces the producer
//! and writes an *abort* record for each activity involved. An abort is a
//! tombstone by LSN: it voids the whole range from the last successful
//! commit to itself (every record written in between belongs to a failed
//! group, was reverted in the engine and answered as failed), and lists
//! its activity's events in that range so that what did arrive can be
//! undone. Recovery and the sink honour it whatever the order of arrival:
//! an event of a voided range that arrives before its abort is applied and
//! then undone by it; one that arrives after it (a late record of a
//! replaced producer) is never applied. Only a replaced producer can put a
//! record behind a higher LSN of its partition, so such a *late* record
//! always belongs to a failed group and is skipped even when no abort
//! covers it (the process stopped before writing one).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::ops::Range;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use flashd_engine::{ActivityId, Event};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{
    BaseRecord, DeliveryResult, Producer, ProducerContext, PurgeConfig, ThreadedProducer,
};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use flashd_log::{decode_event, encode_event, DecodeError, LogError, OrderLog};

mod error;
pub use error::KafkaLogError;

/// Version byte at the start of every record value.
pub const RECORD_FORMAT: u8 = 1;
/// Record kind of an abort of format 1 (no LSNs, no range): still read
/// from older topics, never written.
pub const KIND_ABORT: u8 = 20;
/// Record kind of a packed run of events of one activity, each with its
/// own LSN (the header's LSN is the first one's). Format 1 wrote it; read
/// as one group (see [`KIND_GROUP_EVENTS`]) per partition.
pub const KIND_EVENTS: u8 = 21;
/// Record kind of a packed run of events of one activity with the *group*
/// it belongs to: the LSN the writer had last committed when it was
/// written. One group's records on one partition may interleave their
/// LSNs (one record per activity, several activities per partition), but
/// every record of a later group has LSNs above all of an earlier one; a
/// record whose group is below one already seen on its partition is late.
pub const KIND_GROUP_EVENTS: u8 = 23;
/// Record kind of an abort that is a tombstone: the LSN range it voids,
/// then its activity's events in that range, each with its LSN.
pub const KIND_ABORT_RANGE: u8 = 22;

/// Bytes of the header every record value starts with: format, kind, LSN.
const HEADER_BYTES: usize = 10;

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

/// A record as recovery hands it to its caller: an event to apply, or
/// the events an abort undoes (in reverse order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogRecord {
    Event(Event),
    /// Undo these events (in reverse order).
    Abort(Vec<Event>),
}

/// An abort record: a tombstone over `covers` and the undo list of its
/// activity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Abort {
    /// Every LSN in it belongs to a failed group: an event with one of
    /// these LSNs is never applied, whenever it arrives. Empty for an abort
    /// of format 1 (which named no LSNs).
    pub covers: Range<u64>,
    /// This activity's events in `covers` (LSN, event), oldest first: what
    /// may have arrived and must be undone. LSN 0 for a format-1 abort.
    pub events: Vec<(u64, Event)>,
}

/// A record as stored in the topic (one of the several a value can hold).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicRecord {
    Event(Event),
    Abort(Abort),
}

/// The LSN ranges voided by the abort records seen so far, merged: as
/// small as the number of separate failures, whatever their size.
#[derive(Debug, Clone, Default)]
pub struct Tombstones {
    /// start -> end (exclusive), disjoint and not touching.
    ranges: BTreeMap<u64, u64>,
}

impl Tombstones {
    pub fn insert(&mut self, r: Range<u64>) {
        if r.is_empty() {
            return;
        }
        let (mut start, mut end) = (r.start, r.end);
        // Absorb every range that overlaps or touches [start, end).
        let touching: Vec<(u64, u64)> = self
            .ranges
            .range(..=end)
            .rev()
            .take_while(|(_, e)| **e >= start)
            .map(|(s, e)| (*s, *e))
            .collect();
        for (s, e) in touching {
            self.ranges.remove(&s);
            start = start.min(s);
            end = end.max(e);
        }
        self.ranges.insert(start, end);
    }

    pub fn covers(&self, lsn: u64) -> bool {
        self.ranges
            .range(..=lsn)
            .next_back()
            .is_some_and(|(_, e)| lsn < *e)
    }

    /// The disjoint ranges, in order.
    pub fn ranges(&self) -> impl Iterator<Item = Range<u64>> + '_ {
        self.ranges.iter().map(|(s, e)| *s..*e)
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
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

/// One record holding several events of one activity, each with its LSN,
/// written in `group` (kind [`KIND_GROUP_EVENTS`]).
pub fn encode_group_events(group: u64, events: &[(u64, &Event)], out: &mut Vec<u8>) {
    out.clear();
    out.push(RECORD_FORMAT);
    out.push(KIND_GROUP_EVENTS);
    out.extend_from_slice(&events.first().map_or(group, |e| e.0).to_le_bytes());
    out.extend_from_slice(&group.to_le_bytes());
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

/// An abort record (kind [`KIND_ABORT_RANGE`]) at `lsn`. Its group is
/// `covers.start`.
pub fn encode_abort(lsn: u64, abort: &Abort, out: &mut Vec<u8>) {
    out.clear();
    out.push(RECORD_FORMAT);
    out.push(KIND_ABORT_RANGE);
    out.extend_from_slice(&lsn.to_le_bytes());
    out.extend_from_slice(&abort.covers.start.to_le_bytes());
    out.extend_from_slice(&abort.covers.end.to_le_bytes());
    out.extend_from_slice(&(abort.events.len() as u32).to_le_bytes());
    let mut p = Vec::with_capacity(128);
    for (l, ev) in &abort.events {
        p.clear();
        let k = encode_event(ev, &mut p);
        out.extend_from_slice(&l.to_le_bytes());
        out.push(k);
        out.extend_from_slice(&(p.len() as u32).to_le_bytes());
        out.extend_from_slice(&p);
    }
}

/// Every (LSN, record) a stored value holds: one for an event or an abort,
/// several for a packed run of events.
pub fn decode_records(v: &[u8]) -> Result<Vec<(u64, TopicRecord)>, DecodeError> {
    decode_message(v).map(|(_, r)| r)
}

/// The group of a stored value (0 for format-1 kinds, which named none)
/// and every (LSN, record) it holds.
pub fn decode_message(v: &[u8]) -> Result<(u64, Vec<(u64, TopicRecord)>), DecodeError> {
    if v.len() < HEADER_BYTES {
        return Err(DecodeError::Truncated);
    }
    if v[0] != RECORD_FORMAT {
        return Err(DecodeError::BadEnum("record format"));
    }
    let lsn = u64::from_le_bytes(v[2..HEADER_BYTES].try_into().expect("8 bytes"));
    let body = &v[HEADER_BYTES..];
    let events = |evs: Vec<(u64, Event)>| {
        evs.into_iter()
            .map(|(l, e)| (l, TopicRecord::Event(e)))
            .collect()
    };
    match v[1] {
        KIND_EVENTS => Ok((0, events(lsn_events(body, 0)?.0))),
        KIND_GROUP_EVENTS => {
            let group = u64::from_le_bytes(take(body, 0, 8)?.try_into().expect("8"));
            let (evs, _) = lsn_events(body, 8)?;
            // A group starts at the LSN after the last commit: nothing in
            // it is older.
            if evs.iter().any(|(l, _)| *l < group) {
                return Err(DecodeError::BadEnum("event LSN below its group"));
            }
            Ok((group, events(evs)))
        }
        KIND_ABORT_RANGE => {
            let from = u64::from_le_bytes(take(body, 0, 8)?.try_into().expect("8"));
            let to = u64::from_le_bytes(take(body, 8, 8)?.try_into().expect("8"));
            // An abort voids what was written before it, never itself or
            // anything after it.
            if from > to || to > lsn {
                return Err(DecodeError::BadEnum("abort range"));
            }
            let (events, _) = lsn_events(body, 16)?;
            if events.iter().any(|(l, _)| !(from..to).contains(l)) {
                return Err(DecodeError::BadEnum("aborted event LSN"));
            }
            Ok((
                from,
                vec![(
                    lsn,
                    TopicRecord::Abort(Abort {
                        covers: from..to,
                        events,
                    }),
                )],
            ))
        }
        _ => {
            let (lsn, rec) = decode_value(v)?;
            Ok((
                0,
                vec![(
                    lsn,
                    match rec {
                        LogRecord::Event(e) => TopicRecord::Event(e),
                        LogRecord::Abort(evs) => TopicRecord::Abort(Abort {
                            covers: 0..0,
                            events: evs.into_iter().map(|e| (0, e)).collect(),
                        }),
                    },
                )],
            ))
        }
    }
}

/// A count, then that many (LSN, kind, length, payload) events, from `at`
/// to the end of `body`.
fn lsn_events(body: &[u8], mut at: usize) -> Result<(Vec<(u64, Event)>, usize), DecodeError> {
    let count = u32::from_le_bytes(take(body, at, 4)?.try_into().expect("4")) as usize;
    at += 4;
    // The count is the sender's word: let the bytes, not it, size the Vec.
    let mut out = Vec::with_capacity(count.min(body.len() / 13));
    for _ in 0..count {
        let lsn = u64::from_le_bytes(take(body, at, 8)?.try_into().expect("8"));
        let k = take(body, at + 8, 1)?[0];
        let len = u32::from_le_bytes(take(body, at + 9, 4)?.try_into().expect("4")) as usize;
        out.push((lsn, decode_event(k, take(body, at + 13, len)?)?));
        at += 13 + len;
    }
    if at != body.len() {
        return Err(DecodeError::TrailingBytes);
    }
    Ok((out, at))
}

fn take(b: &[u8], at: usize, n: usize) -> Result<&[u8], DecodeError> {
    at.checked_add(n)
        .and_then(|end| b.get(at..end))
        .ok_or(DecodeError::Truncated)
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
    /// One past the last LSN of the last successful commit: where the
    /// range an abort voids starts.
    committed_lsn: u64,
    /// Events appended since the last commit, with their LSNs (to abort if
    /// it fails).
    batch: Vec<(u64, Event)>,
    /// Events of failed batches whose abort records are not yet durable.
    to_abort: Vec<(u64, Event)>,
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

    /// Start a batch of delivery reports (a new generation when the last
    /// one was settled); its generation and the index of its next record.
    fn begin(&self) -> (u32, usize) {
        let mut b = self.producer.context().lock();
        if b.sent == 0 {
            b.generation = b.generation.wrapping_add(1);
            b.reported = 0;
            b.failed = 0;
            b.first_error = None;
        }
        (b.generation, b.sent)
    }

    /// Queue one abort record per activity of `to_abort`, each voiding
    /// everything from the last successful commit up to the first of them.
    fn send_aborts(&mut self, generation: u32, index: &mut usize) -> Result<(), LogError> {
        let mut by_activity: BTreeMap<ActivityId, Vec<(u64, Event)>> = BTreeMap::new();
        for (lsn, ev) in &self.to_abort {
            by_activity
                .entry(activity_of(ev))
                .or_default()
                .push((*lsn, ev.clone()));
        }
        let covers = self.committed_lsn..self.next_lsn;
        for (a, events) in by_activity {
            let abort = Abort {
                covers: covers.clone(),
                events,
            };
            encode_abort(self.next_lsn, &abort, &mut self.value);
            self.next_lsn += 1;
            self.send(a, *index, generation)?;
            *index += 1;
            self.bump_sent();
        }
        Ok(())
    }

    /// Wait (until `deadline`) for every record of the batch in flight to
    /// be reported; settle the batch.
    fn settle(&self, deadline: Instant) -> Result<(), LogError> {
        let cx = self.producer.context();
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
            Err(KafkaLogError::Delivery {
                failed: b.failed,
                sent: b.sent,
                first: b.first_error.clone(),
            }
            .into())
        } else if b.reported < b.sent {
            Err(KafkaLogError::DeliveryTimeout {
                missing: b.sent - b.reported,
                sent: b.sent,
                timeout: self.cfg.timeout,
            }
            .into())
        } else {
            Ok(())
        };
        // Next batch: a new generation, so late reports of this one
        // cannot be counted against it.
        b.sent = 0;
        outcome
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
    KafkaLogError::Client(e).into()
}

impl OrderLog for KafkaLog {
    fn append(&mut self, events: &[Event]) -> Result<(), LogError> {
        let (generation, mut index) = self.begin();
        // Aborts first: they must precede anything else of their activity.
        if !self.to_abort.is_empty() && self.batch.is_empty() {
            self.send_aborts(generation, &mut index)?;
        }
        // LSNs in the engine's order; one record per activity, its events
        // in that order.
        let mut by_activity: Vec<(ActivityId, Vec<(u64, &Event)>)> = Vec::new();
        for ev in events {
            let a = activity_of(ev);
            let lsn = self.next_lsn;
            self.next_lsn += 1;
            self.batch.push((lsn, ev.clone()));
            match by_activity.iter_mut().find(|(x, _)| *x == a) {
                Some((_, v)) => v.push((lsn, ev)),
                None => by_activity.push((a, vec![(lsn, ev)])),
            }
        }
        for (a, evs) in &by_activity {
            encode_group_events(self.committed_lsn, evs, &mut self.value);
            self.send(*a, index, generation)?;
            index += 1;
            self.bump_sent();
        }
        Ok(())
    }

    fn commit(&mut self) -> Result<u64, LogError> {
        // librdkafka times messages out on a coarse timer, so its reports
        // may come late: past `timeout` the batch counts as failed (what
        // did arrive is voided by the abort records).
        self.settle(Instant::now() + self.cfg.timeout)?;
        self.batch.clear();
        self.to_abort.clear();
        self.committed_lsn = self.next_lsn;
        Ok(self.committed_lsn)
    }

    /// Undo the failed group in the topic as the engine undoes it here.
    /// When this returns, the producer that sent the group is gone (nothing
    /// of it is queued or retried any more) and every record of it that
    /// may still land (a request the broker had not processed) has an LSN
    /// in `committed_lsn..next_lsn`, the range the abort records void.
    /// Those are made durable here when the broker answers within
    /// `timeout`, else they go first in the next commit (and the range
    /// then grows to cover these attempts too).
    fn rollback(&mut self) -> Result<(), LogError> {
        let failed = self.committed_lsn..self.next_lsn;
        self.to_abort.append(&mut self.batch);
        self.producer.context().lock().sent = 0;
        if let Some((code, why)) = self.producer.client().fatal_error() {
            tracing::warn!(?code, why, "kafka producer hit a fatal error");
        }
        // Let the old producer settle first (every record delivered or
        // timed out), so that what can still land is as little as possible.
        if let Err(e) = self.producer.flush(self.cfg.timeout) {
            tracing::error!(
                error = %e,
                in_flight = self.producer.in_flight_count(),
                voided_lsns = ?failed,
                "kafka rollback: the failed group's records did not settle; any that still land are voided by the abort records (by LSN)"
            );
        }
        // Nothing queued may be sent, nor anything retried, any more.
        self.producer
            .purge(PurgeConfig::default().queue().inflight());
        // A fresh producer (a new producer id) for what comes next: after
        // timed-out batches an idempotent producer's sequence state may no
        // longer match the broker's (a restarted broker refuses it), and
        // waiting for librdkafka to recover it would keep orders failing.
        self.producer = make_producer(&self.cfg)?;
        let (generation, mut index) = self.begin();
        let sent = self
            .send_aborts(generation, &mut index)
            .and_then(|()| self.settle(Instant::now() + self.cfg.timeout));
        match sent {
            Ok(()) => {
                self.to_abort.clear();
                self.committed_lsn = self.next_lsn;
            }
            Err(e) => tracing::warn!(
                error = %e,
                voided_lsns = ?(self.committed_lsn..self.next_lsn),
                "kafka rollback: abort records not yet durable; they go first in the next commit"
            ),
        }
        Ok(())
    }

    fn undo_pending(&self) -> bool {
        !self.to_abort.is_empty()
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

    /// Events of failed groups whose abort is not durable yet (tests and
    /// metrics).
    pub fn pending_aborts(&self) -> usize {
        self.to_abort.len()
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
    /// Events not applied because an abort voids their LSN.
    pub voided: u64,
    /// Records that arrived behind a higher LSN of their partition (a
    /// replaced producer's): never applied.
    pub late: u64,
    /// Of those, events no abort in the topic voids (the process stopped
    /// before writing it); skipped all the same, and logged.
    pub late_unvoided: u64,
    /// The most decoded records held at once while merging (the memory
    /// bound of recovery, besides librdkafka's per-partition prefetch).
    pub peak_buffered: usize,
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
    let topic = NewTopic::new(&cfg.topic, partitions, TopicReplication::Fixed(1));
    // The admin client's futures are completed by librdkafka's own
    // thread: a plain blocking executor is enough (no async runtime here).
    let res = futures_executor::block_on(admin.create_topics([&topic], &AdminOptions::new()))
        .map_err(kafka_err)?;
    for r in res {
        if let Err((name, code)) = r {
            if code != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists {
                return Err(KafkaLogError::CreateTopic { topic: name, code }.into());
            }
        }
    }
    Ok(true)
}

/// Per-partition prefetch of recovery's consumers, in KiB and messages:
/// what bounds recovery's memory (with [`FETCH_BYTES`] per partition),
/// whatever the topic's size. 4 MiB keeps a partition streaming at the
/// broker's pace (librdkafka refills below `queued.min.messages`).
pub const RECOVERY_PREFETCH_KBYTES: u32 = 4096;
pub const RECOVERY_PREFETCH_MESSAGES: u32 = 2000;
/// librdkafka's largest fetch per partition (its default is 1 MiB).
pub const FETCH_BYTES: u32 = 1 << 20;
/// Late records whose LSNs are kept to check at the end whether an abort
/// voids them: a failed group's records, so this is generous; past it,
/// they are only counted.
const LATE_TRACKED_MAX: usize = 1 << 16;
/// A partition that yields nothing for this long stops recovery.
const RECOVERY_STALL: Duration = Duration::from_secs(30);

/// What recovery keeps of the records it does not apply.
#[derive(Default)]
struct Skipped {
    tombstones: Tombstones,
    late: u64,
    /// LSNs of late events, to check at the end whether an abort voids
    /// them (at most [`LATE_TRACKED_MAX`]).
    late_events: BTreeSet<u64>,
}

impl Skipped {
    /// A late record: never applied; an abort's range still counts.
    fn late(&mut self, lsn: u64, rec: &TopicRecord) {
        self.late += 1;
        match rec {
            TopicRecord::Event(_) => {
                if self.late_events.len() < LATE_TRACKED_MAX {
                    self.late_events.insert(lsn);
                }
            }
            // What it voids was undone by the abort that follows every
            // failure before anything commits again; undoing it here,
            // after later events, would undo those.
            TopicRecord::Abort(a) => self.tombstones.insert(a.covers.clone()),
        }
    }
}

/// A record in a partition's merge heap, ordered by LSN (then arrival).
struct Item(u64, u64, TopicRecord);

impl PartialEq for Item {
    fn eq(&self, o: &Item) -> bool {
        (self.0, self.1) == (o.0, o.1)
    }
}
impl Eq for Item {}
impl PartialOrd for Item {
    fn partial_cmp(&self, o: &Item) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Item {
    fn cmp(&self, o: &Item) -> std::cmp::Ordering {
        (self.0, self.1).cmp(&(o.0, o.1))
    }
}

/// One partition's stream during recovery: its own consumer (so each has
/// its own bounded prefetch) and the records of its current group, sorted.
struct PartStream {
    consumer: BaseConsumer,
    id: i32,
    /// High watermark at the start: records past it are not replayed.
    end: i64,
    next_offset: i64,
    records: u64,
    /// The group whose records `heap` holds.
    group: Option<u64>,
    heap: BinaryHeap<Reverse<Item>>,
    seq: u64,
    /// The first message of the next group (read to learn that the
    /// current one is complete).
    next: Option<(u64, Vec<(u64, TopicRecord)>)>,
    /// Every record of the current group on this partition is in `heap`.
    complete: bool,
}

impl PartStream {
    fn buffered(&self) -> usize {
        self.heap.len() + self.next.as_ref().map_or(0, |n| n.1.len())
    }

    /// Take a message's records; an abort's range counts from now on, so
    /// an event of it read after it is never applied, even one that sorts
    /// before it.
    fn push(&mut self, recs: Vec<(u64, TopicRecord)>, skipped: &mut Skipped) {
        for (lsn, rec) in recs {
            if let TopicRecord::Abort(a) = &rec {
                skipped.tombstones.insert(a.covers.clone());
            }
            self.seq += 1;
            self.heap.push(Reverse(Item(lsn, self.seq, rec)));
        }
    }

    fn at_end(&self) -> bool {
        self.next_offset >= self.end
    }

    /// Make the smallest record of the current group available (a whole
    /// group read, or the partition's end); false when the partition is
    /// done. Late messages met on the way go to `skipped`.
    fn fill(&mut self, topic: &str, skipped: &mut Skipped) -> Result<bool, LogError> {
        loop {
            if self.heap.is_empty() {
                self.complete = false;
                if let Some((g, recs)) = self.next.take() {
                    self.group = Some(g);
                    self.push(recs, skipped);
                    continue;
                }
                if self.at_end() {
                    return Ok(false);
                }
            } else if self.complete {
                return Ok(true);
            } else if self.at_end() {
                self.complete = true;
                continue;
            }
            let (g, recs) = self.read(topic)?;
            match self.group {
                Some(cur) if g < cur => {
                    for (lsn, rec) in &recs {
                        skipped.late(*lsn, rec);
                    }
                }
                Some(cur) if g > cur => {
                    if self.heap.is_empty() {
                        self.group = Some(g);
                        self.push(recs, skipped);
                    } else {
                        self.next = Some((g, recs));
                        self.complete = true;
                    }
                }
                _ => {
                    self.group = Some(g);
                    self.push(recs, skipped);
                }
            }
        }
    }

    /// The next message below the end (its group and records).
    fn read(&mut self, topic: &str) -> Result<(u64, Vec<(u64, TopicRecord)>), LogError> {
        let last_progress = Instant::now();
        loop {
            match self.consumer.poll(Duration::from_millis(200)) {
                None => {
                    if last_progress.elapsed() > RECOVERY_STALL {
                        return Err(KafkaLogError::RecoveryStalled {
                            topic: topic.to_string(),
                            partition: self.id,
                            offset: self.next_offset,
                            end: self.end,
                            stalled: RECOVERY_STALL,
                        }
                        .into());
                    }
                }
                Some(Err(e)) => return Err(kafka_err(e)),
                Some(Ok(m)) => {
                    let off = m.offset();
                    self.next_offset = off + 1;
                    if off >= self.end {
                        continue;
                    }
                    self.records += 1;
                    let v = m.payload().unwrap_or(&[]);
                    return decode_message(v).map_err(|e| LogError::Corrupt {
                        path: format!("kafka:{topic}/{}", self.id).into(),
                        offset: off as u64,
                        why: e.to_string(),
                    });
                }
            }
        }
    }
}

/// Replay the whole topic (every partition, from the beginning) in LSN
/// order, handing each record to `apply`: events, and for an abort the
/// events to undo. A k-way merge over one consumer per partition, each
/// holding one group of its records (what one commit wrote to it), so
/// memory is bounded by the largest group and the prefetch, not by the
/// topic (a topic of format 1 names no groups: each of its partitions is
/// read as one). Late records (see the module doc) are never applied; an
/// event an abort voids is never applied either.
pub fn recover_topic(
    cfg: &KafkaConfig,
    apply: &mut dyn FnMut(u64, LogRecord) -> Result<(), String>,
) -> Result<KafkaRecovered, LogError> {
    let probe: BaseConsumer = client_config(cfg).create().map_err(kafka_err)?;
    let md = probe
        .fetch_metadata(Some(&cfg.topic), cfg.timeout.max(Duration::from_secs(10)))
        .map_err(kafka_err)?;
    let Some(t) = md.topics().iter().find(|t| t.name() == cfg.topic) else {
        return Err(KafkaLogError::NoTopic {
            topic: cfg.topic.clone(),
        }
        .into());
    };
    if let Some(e) = t.error() {
        return Err(KafkaLogError::Topic {
            topic: cfg.topic.clone(),
            code: e,
        }
        .into());
    }
    let ids: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
    let mut out = KafkaRecovered {
        partitions: vec![0; ids.len()],
        ..Default::default()
    };
    let mut parts: Vec<PartStream> = Vec::new();
    for &p in &ids {
        let (low, high) = probe
            .fetch_watermarks(&cfg.topic, p, Duration::from_secs(10))
            .map_err(kafka_err)?;
        if high <= low {
            continue;
        }
        let mut c = client_config(cfg);
        c.set("group.id", "flashd-recovery")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .set(
                "queued.max.messages.kbytes",
                RECOVERY_PREFETCH_KBYTES.to_string(),
            )
            .set(
                "queued.min.messages",
                RECOVERY_PREFETCH_MESSAGES.to_string(),
            )
            .set("fetch.max.bytes", FETCH_BYTES.to_string())
            .set("max.partition.fetch.bytes", FETCH_BYTES.to_string());
        let consumer: BaseConsumer = c.create().map_err(kafka_err)?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&cfg.topic, p, Offset::Offset(low))
            .map_err(kafka_err)?;
        consumer.assign(&tpl).map_err(kafka_err)?;
        parts.push(PartStream {
            consumer,
            id: p,
            end: high,
            next_offset: low,
            records: 0,
            group: None,
            heap: BinaryHeap::new(),
            seq: 0,
            next: None,
            complete: false,
        });
    }
    drop(probe);
    let mut skipped = Skipped::default();
    // The highest LSN handed out so far: nothing at or below it may be
    // applied any more.
    let mut high: Option<u64> = None;
    let mut live: Vec<usize> = (0..parts.len()).collect();
    loop {
        // Every partition still running shows its next record.
        let mut i = 0;
        while i < live.len() {
            if parts[live[i]].fill(&cfg.topic, &mut skipped)? {
                i += 1;
            } else {
                live.swap_remove(i);
            }
        }
        let buffered: usize = live.iter().map(|&k| parts[k].buffered()).sum();
        out.peak_buffered = out.peak_buffered.max(buffered);
        let Some(&k) = live.iter().min_by_key(|&&k| {
            parts[k]
                .heap
                .peek()
                .map_or(u64::MAX, |Reverse(Item(l, _, _))| *l)
        }) else {
            break;
        };
        let Reverse(Item(lsn, _, rec)) = parts[k].heap.pop().expect("filled");
        out.next_lsn = out.next_lsn.max(lsn + 1);
        // Per partition and group the LSNs are sorted and groups rise, so
        // only a duplicate can fall at or below what was handed out.
        if high.is_some_and(|h| lsn <= h) {
            skipped.late(lsn, &rec);
            continue;
        }
        high = Some(lsn);
        match rec {
            TopicRecord::Event(ev) => {
                if skipped.tombstones.covers(lsn) {
                    out.voided += 1;
                } else {
                    out.events += 1;
                    apply(lsn, LogRecord::Event(ev))
                        .map_err(|why| LogError::Replay { lsn, why })?;
                }
            }
            TopicRecord::Abort(a) => {
                skipped.tombstones.insert(a.covers.clone());
                out.aborts += 1;
                let evs = a.events.into_iter().map(|(_, e)| e).collect();
                apply(lsn, LogRecord::Abort(evs)).map_err(|why| LogError::Replay { lsn, why })?;
            }
        }
    }
    for (i, p) in ids.iter().enumerate() {
        if let Some(s) = parts.iter().find(|s| s.id == *p) {
            out.partitions[i] = s.records;
        }
    }
    let Skipped {
        tombstones,
        late,
        mut late_events,
    } = skipped;
    late_events.retain(|l| !tombstones.covers(*l));
    out.late = late;
    out.late_unvoided = late_events.len() as u64;
    if out.late > 0 {
        tracing::warn!(
            late = out.late,
            late_unvoided = out.late_unvoided,
            first_unvoided = ?late_events.iter().take(16).collect::<Vec<_>>(),
            "kafka recovery: records of failed groups arrived behind later ones and were not applied"
        );
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
            vec![
                (10, TopicRecord::Event(a.clone())),
                (13, TopicRecord::Event(b))
            ]
        );
        assert!(decode_records(&v[..v.len() - 1]).is_err());
        v.push(0);
        assert!(decode_records(&v).is_err());
        // Single records still decode through the same door.
        encode_value(4, &LogRecord::Event(a.clone()), &mut v);
        assert_eq!(
            decode_records(&v).unwrap(),
            vec![(4, TopicRecord::Event(a))]
        );
    }

    #[test]
    fn abort_records_carry_their_range_and_lsns() {
        let a = Abort {
            covers: 10..14,
            events: vec![(10, order(5, 2)), (12, order(6, 2))],
        };
        let mut v = Vec::new();
        encode_abort(14, &a, &mut v);
        assert_eq!(
            decode_records(&v).unwrap(),
            vec![(14, TopicRecord::Abort(a.clone()))]
        );
        for cut in 0..v.len() {
            assert!(decode_records(&v[..cut]).is_err(), "cut at {cut}");
        }
        // An abort never voids itself or what follows it, and lists only
        // events of its range.
        encode_abort(13, &a, &mut v);
        assert!(decode_records(&v).is_err());
        let outside = Abort {
            covers: 10..12,
            events: vec![(12, order(6, 2))],
        };
        encode_abort(14, &outside, &mut v);
        assert!(decode_records(&v).is_err());
        // A format-1 abort still reads, voiding nothing by LSN.
        encode_value(9, &LogRecord::Abort(vec![order(5, 2)]), &mut v);
        assert_eq!(
            decode_records(&v).unwrap(),
            vec![(
                9,
                TopicRecord::Abort(Abort {
                    covers: 0..0,
                    events: vec![(0, order(5, 2))]
                })
            )]
        );
    }

    #[test]
    fn a_count_larger_than_the_bytes_is_an_error_not_an_allocation() {
        let mut v = vec![RECORD_FORMAT, KIND_EVENTS];
        v.extend_from_slice(&0u64.to_le_bytes());
        v.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode_records(&v), Err(DecodeError::Truncated));
    }

    #[test]
    fn tombstones_merge_ranges_and_answer_by_lsn() {
        let mut t = Tombstones::default();
        assert!(!t.covers(0));
        t.insert(10..14);
        t.insert(20..22);
        t.insert(5..5);
        assert!(t.covers(10) && t.covers(13) && !t.covers(14) && !t.covers(9));
        assert!(t.covers(21) && !t.covers(22) && !t.covers(17));
        // Touching and overlapping ranges merge into one.
        t.insert(14..20);
        assert_eq!(t.ranges().collect::<Vec<_>>(), vec![10..22]);
        t.insert(2..11);
        t.insert(30..31);
        t.insert(25..40);
        assert_eq!(t.ranges().collect::<Vec<_>>(), vec![2..22, 25..40]);
        assert!(t.covers(39) && !t.covers(40) && !t.covers(23));
    }
}
