//! The producer: [`KafkaLog`], the Kafka backend of [`OrderLog`], and the
//! delivery reports ([`Deliveries`]) one commit waits for.

use std::collections::BTreeMap;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use flashd_engine::{ActivityId, Event};
use rdkafka::error::KafkaError;
use rdkafka::producer::{
    BaseRecord, DeliveryResult, Producer, ProducerContext, PurgeConfig, ThreadedProducer,
};
use rdkafka::ClientContext;

use flashd_log::{LogError, OrderLog};

use crate::config::{client_config, KafkaConfig};
use crate::error::{kafka_err, KafkaLogError};
use crate::record::{encode_abort, encode_group_events, Abort};

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

pub(crate) struct Deliveries {
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
                .entry(ev.activity_id())
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
            // The key that keeps one sale's events on one partition.
            let a = ev.activity_id();
            let lsn = self.next_lsn;
            // A group's records carry the committed LSN as their group; the
            // sink and recovery refuse an event below it.
            debug_assert!(lsn >= self.committed_lsn);
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
        self.advance_committed();
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
                self.advance_committed();
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
    /// Everything sent is durable: the committed LSN moves to the next
    /// one, never back.
    fn advance_committed(&mut self) {
        assert!(
            self.next_lsn >= self.committed_lsn,
            "the committed LSN would go back from {} to {}",
            self.committed_lsn,
            self.next_lsn
        );
        self.committed_lsn = self.next_lsn;
    }

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
