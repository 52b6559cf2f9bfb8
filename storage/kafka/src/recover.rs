//! Start-up replay of the topic ([`recover_topic`]): a k-way merge by LSN
//! over one consumer per partition, each holding one group of its records,
//! honouring aborts (tombstones by LSN) and skipping late records.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use flashd_log::LogError;

use crate::config::{client_config, KafkaConfig};
use crate::error::{kafka_err, KafkaLogError};
use crate::record::{decode_message, LogRecord, Tombstones, TopicRecord};

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
                        why: e.into(),
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
/// event an abort voids is never applied either. `apply` stops recovery
/// by returning an error, passed through as it is ([`LogError::Replay`]
/// for an event that does not apply).
pub fn recover_topic(
    cfg: &KafkaConfig,
    apply: &mut dyn FnMut(u64, LogRecord) -> Result<(), LogError>,
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
                    apply(lsn, LogRecord::Event(ev))?;
                }
            }
            TopicRecord::Abort(a) => {
                skipped.tombstones.insert(a.covers.clone());
                out.aborts += 1;
                let evs = a.events.into_iter().map(|(_, e)| e).collect();
                apply(lsn, LogRecord::Abort(evs))?;
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
