//! Replay of the topic: [`TopicReader`], a k-way merge by LSN over one
//! consumer per partition, each holding one group of its records,
//! honouring aborts (tombstones by LSN) and skipping late records; and
//! [`recover_topic`], a replay of the whole topic with it.
//!
//! The merge can start at a [`TopicCut`] (a snapshot's place in the
//! topic), stop at a bound and go on later (the snapshotting follower
//! reads up to the committed LSN, then waits for more), and say where it
//! stands as a cut whenever no message is half applied ([`TopicReader::cut`]).
//! Everything the merge decides from (each partition's group, the highest
//! LSN handed out, the abort ranges ahead) is in the cut, and each
//! partition is read again from its first message not wholly applied, so
//! a merge resumed at a cut hands out exactly what one that never stopped
//! would have.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, VecDeque};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use flashd_log::LogError;

use crate::config::{client_config, KafkaConfig};
use crate::cut::{Anchor, PartitionCut, TopicCut};
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

/// A record in a partition's merge heap, ordered by LSN (then arrival),
/// with the offset of its message.
struct Item(u64, u64, TopicRecord, i64);

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

/// A message read from a partition and not yet wholly applied (or the
/// late one just read): what a cut needs to know of it.
struct Msg {
    offset: i64,
    group: u64,
    first_lsn: u64,
    /// Records not yet handed out.
    left: usize,
    total: usize,
    /// False for a late message (never applied).
    accepted: bool,
}

/// A message: its offset, group and records.
type Decoded = (i64, u64, Vec<(u64, TopicRecord)>);

/// One partition's stream: its own consumer (so each has its own bounded
/// prefetch) and the records of its current group, sorted.
struct PartStream {
    consumer: BaseConsumer,
    id: i32,
    /// Where this round may read up to (the high watermark when it was
    /// last fetched): records past it wait for the next round.
    end: i64,
    next_offset: i64,
    records: u64,
    /// The group whose records `heap` holds.
    group: Option<u64>,
    heap: BinaryHeap<Reverse<Item>>,
    seq: u64,
    /// The first message of the next group (read to learn that the
    /// current one is complete).
    next: Option<Decoded>,
    /// Every record of the current group on this partition is in `heap`.
    complete: bool,
    /// A message at or past `end`, read before the end moved there.
    peeked: Option<(i64, Vec<u8>)>,
    /// Messages read and not yet wholly applied, in offset order.
    window: VecDeque<Msg>,
    /// Group of the last accepted message that left `window`.
    done_group: Option<u64>,
    /// The last message that left `window`.
    anchor: Option<Anchor>,
}

impl PartStream {
    fn buffered(&self) -> usize {
        self.heap.len() + self.next.as_ref().map_or(0, |n| n.2.len())
    }

    /// Take a message's records; an abort's range counts from now on, so
    /// an event of it read after it is never applied, even one that sorts
    /// before it.
    fn push(&mut self, offset: i64, recs: Vec<(u64, TopicRecord)>, skipped: &mut Skipped) {
        for (lsn, rec) in recs {
            if let TopicRecord::Abort(a) = &rec {
                skipped.tombstones.insert(a.covers.clone());
            }
            self.seq += 1;
            self.heap.push(Reverse(Item(lsn, self.seq, rec, offset)));
        }
    }

    fn at_end(&self) -> bool {
        self.next_offset >= self.end
    }

    /// A record of the message at `offset` was handed out.
    fn taken(&mut self, offset: i64) {
        if let Some(m) = self.window.iter_mut().find(|m| m.offset == offset) {
            m.left -= 1;
        }
        self.trim();
    }

    /// Messages wholly dealt with at the front of the window leave it.
    fn trim(&mut self) {
        while self.window.front().is_some_and(|m| m.left == 0) {
            let m = self.window.pop_front().expect("front");
            if m.accepted {
                self.done_group = Some(m.group);
            }
            self.anchor = Some(Anchor {
                offset: m.offset,
                group: m.group,
                first_lsn: m.first_lsn,
            });
        }
    }

    /// No message is partly applied: an accepted one is untouched (a late
    /// one is never applied, and is read and skipped again on resume).
    fn clean(&self) -> bool {
        self.window.iter().all(|m| !m.accepted || m.left == m.total)
    }

    /// The offset the consumer must deliver next.
    fn position(&self) -> i64 {
        self.peeked.as_ref().map_or(self.next_offset, |p| p.0 + 1)
    }

    fn cut(&self) -> PartitionCut {
        PartitionCut {
            id: self.id,
            resume: self.window.front().map_or(self.next_offset, |m| m.offset),
            group: self.done_group,
            anchor: self.anchor,
        }
    }

    /// Make the smallest record of the current group available (a whole
    /// group read, or this round's end); false when there is nothing more
    /// to read this round. Late messages met on the way go to `skipped`.
    fn fill(&mut self, topic: &str, skipped: &mut Skipped) -> Result<bool, LogError> {
        loop {
            if self.heap.is_empty() {
                self.complete = false;
                if let Some((off, g, recs)) = self.next.take() {
                    self.group = Some(g);
                    self.push(off, recs, skipped);
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
            let Some((off, g, recs)) = self.read(topic)? else {
                continue;
            };
            self.window.push_back(Msg {
                offset: off,
                group: g,
                first_lsn: recs.first().map_or(u64::MAX, |r| r.0),
                left: recs.len(),
                total: recs.len(),
                accepted: true,
            });
            match self.group {
                Some(cur) if g < cur => {
                    let m = self.window.back_mut().expect("just pushed");
                    m.accepted = false;
                    m.left = 0;
                    for (lsn, rec) in &recs {
                        skipped.late(*lsn, rec);
                    }
                    self.trim();
                }
                Some(cur) if g > cur => {
                    if self.heap.is_empty() {
                        self.group = Some(g);
                        self.push(off, recs, skipped);
                    } else {
                        self.next = Some((off, g, recs));
                        self.complete = true;
                    }
                }
                _ => {
                    self.group = Some(g);
                    self.push(off, recs, skipped);
                }
            }
            self.trim();
        }
    }

    /// The next message below this round's end, or `None` when there is
    /// none (its offsets up to the end hold nothing more).
    fn read(&mut self, topic: &str) -> Result<Option<Decoded>, LogError> {
        let (id, end) = (self.id, self.end);
        let decode = |off: i64, v: &[u8]| {
            decode_message(v)
                .map(|(g, recs)| (off, g, recs))
                .map_err(|e| LogError::Corrupt {
                    path: format!("kafka:{topic}/{id}").into(),
                    offset: off as u64,
                    why: e.into(),
                })
        };
        let got = match self.peeked.take() {
            Some((off, v)) if off < end => decode(off, &v)?,
            Some(p) => {
                self.peeked = Some(p);
                self.next_offset = end;
                return Ok(None);
            }
            // Decoded straight from the consumer's buffer: the hot path
            // of a replay copies nothing.
            None => match self.poll(topic, |off, v| {
                if off < end {
                    Ok(decode(off, v))
                } else {
                    Err((off, v.to_vec()))
                }
            })? {
                Ok(d) => d?,
                Err(p) => {
                    // Offsets below the end that hold no message: keep
                    // this one for the round whose end passes it.
                    self.peeked = Some(p);
                    self.next_offset = end;
                    return Ok(None);
                }
            },
        };
        self.next_offset = got.0 + 1;
        self.records += 1;
        Ok(Some(got))
    }

    /// The consumer's next message, handed to `take` (its offset and
    /// value).
    fn poll<T>(&mut self, topic: &str, take: impl FnOnce(i64, &[u8]) -> T) -> Result<T, LogError> {
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
                // Read before (fetched again after a reassignment).
                Some(Ok(m)) if m.offset() < self.next_offset => {}
                Some(Ok(m)) => return Ok(take(m.offset(), m.payload().unwrap_or(&[]))),
            }
        }
    }
}

/// A cut that does not fit the topic: the snapshot is not of this topic,
/// or the topic no longer holds what must be replayed after it.
fn mismatch(topic: &str, why: String) -> LogError {
    KafkaLogError::CutMismatch {
        topic: topic.to_string(),
        why,
    }
    .into()
}

/// Whether `e` is a cut that does not fit the topic (the caller then
/// replays the whole topic instead).
pub fn is_cut_mismatch(e: &LogError) -> bool {
    match e {
        LogError::Backend { source, .. } => matches!(
            source.downcast_ref::<KafkaLogError>(),
            Some(KafkaLogError::CutMismatch { .. })
        ),
        _ => false,
    }
}

/// The merge of a topic's partitions by LSN (see the module doc).
pub struct TopicReader {
    topic: String,
    /// Fetches the high watermarks that bound each round.
    probe: BaseConsumer,
    /// Every partition, by id.
    parts: Vec<PartStream>,
    skipped: Skipped,
    /// The highest LSN handed out so far: nothing at or below it may be
    /// applied any more.
    high: Option<u64>,
    out: KafkaRecovered,
}

impl TopicReader {
    /// Open the topic for a merge from its beginning (`from` = `None`) or
    /// from a snapshot's cut. A cut is checked against the topic first,
    /// before anything is applied: same name and partitions, its offsets
    /// within what the topic holds, and the last message before each
    /// resume offset the one the cut names; a cut that fails is a
    /// [`KafkaLogError::CutMismatch`] ([`is_cut_mismatch`]). The first
    /// round reads up to the high watermarks found here.
    pub fn open(cfg: &KafkaConfig, from: Option<&TopicCut>) -> Result<TopicReader, LogError> {
        let topic = cfg.topic.clone();
        let probe: BaseConsumer = client_config(cfg).create().map_err(kafka_err)?;
        let md = probe
            .fetch_metadata(Some(&topic), cfg.timeout.max(Duration::from_secs(10)))
            .map_err(kafka_err)?;
        let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
            return Err(KafkaLogError::NoTopic { topic }.into());
        };
        if let Some(e) = t.error() {
            return Err(KafkaLogError::Topic { topic, code: e }.into());
        }
        let mut ids: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
        ids.sort_unstable();
        if let Some(c) = from {
            if c.topic != topic {
                return Err(mismatch(
                    &topic,
                    format!("the snapshot is of topic {:?}", c.topic),
                ));
            }
            let cut_ids: Vec<i32> = c.partitions.iter().map(|p| p.id).collect();
            if cut_ids != ids {
                return Err(mismatch(
                    &topic,
                    format!("the snapshot knows partitions {cut_ids:?}, the topic has {ids:?}"),
                ));
            }
        }
        let mut parts = Vec::with_capacity(ids.len());
        for &p in &ids {
            let (low, high) = probe
                .fetch_watermarks(&topic, p, Duration::from_secs(10))
                .map_err(kafka_err)?;
            let pc = from.and_then(|c| c.partition(p));
            let (mut start, mut anchor) = (low, None);
            if let Some(pc) = pc {
                if pc.resume > high {
                    return Err(mismatch(&topic, format!("partition {p}: the snapshot resumes at offset {}, past the end {high} (the topic was recreated or truncated)", pc.resume)));
                }
                if pc.resume < low {
                    return Err(mismatch(&topic, format!("partition {p}: offsets {}..{low}, which the snapshot does not hold, are gone (retention deleted them)", pc.resume)));
                }
                start = pc.resume;
                match pc.anchor {
                    Some(a) if a.offset >= low => {
                        start = a.offset;
                        anchor = Some(a);
                    }
                    Some(a) => tracing::warn!(topic, partition = p, offset = a.offset, low, "retention deleted the message before the snapshot's offset: cannot check that this is the topic the snapshot was taken of"),
                    None => {}
                }
            }
            let consumer = recovery_consumer(cfg)?;
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&topic, p, Offset::Offset(start))
                .map_err(kafka_err)?;
            consumer.assign(&tpl).map_err(kafka_err)?;
            let s = PartStream {
                consumer,
                id: p,
                end: high,
                next_offset: start,
                records: 0,
                group: pc.and_then(|c| c.group),
                heap: BinaryHeap::new(),
                seq: 0,
                next: None,
                complete: false,
                peeked: None,
                window: VecDeque::new(),
                done_group: pc.and_then(|c| c.group),
                anchor: pc.and_then(|c| c.anchor),
            };
            parts.push((s, anchor));
        }
        // Every consumer is assigned (and fetching) before the first is
        // waited on: the checks cost one fetch's latency, not one each.
        let parts: Vec<PartStream> = parts
            .into_iter()
            .map(|(mut s, anchor)| {
                if let Some(a) = anchor {
                    s.check_anchor(&topic, a)?;
                }
                Ok(s)
            })
            .collect::<Result<_, LogError>>()?;
        let mut skipped = Skipped::default();
        let mut out = KafkaRecovered {
            partitions: vec![0; ids.len()],
            ..Default::default()
        };
        let mut high = None;
        if let Some(c) = from {
            for r in &c.tombstones {
                skipped.tombstones.insert(r.clone());
            }
            high = c.high;
            out.next_lsn = c.next_lsn;
        }
        Ok(TopicReader {
            topic,
            probe,
            parts,
            skipped,
            high,
            out,
        })
    }

    /// Let the next round read up to the partitions' high watermarks now.
    pub fn refresh_ends(&mut self) -> Result<(), LogError> {
        for s in &mut self.parts {
            let (_, high) = self
                .probe
                .fetch_watermarks(&self.topic, s.id, Duration::from_secs(10))
                .map_err(kafka_err)?;
            if high > s.end {
                s.end = high;
                // More of the current group may be there now.
                if s.next.is_none() {
                    s.complete = false;
                }
            }
        }
        Ok(())
    }

    /// Assign every consumer again at the offset it must deliver next:
    /// after the broker failed a round, so that whatever state the
    /// consumers were left in, the next round reads on from exactly there.
    pub fn reassign(&mut self) -> Result<(), LogError> {
        for s in &mut self.parts {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&self.topic, s.id, Offset::Offset(s.position()))
                .map_err(kafka_err)?;
            s.consumer.assign(&tpl).map_err(kafka_err)?;
        }
        Ok(())
    }

    /// Hand out, in LSN order, every record below `upto` (all of this
    /// round, with `None`) to `apply`: events, and for an abort the events
    /// to undo. Late records (see the crate doc) are never applied; an
    /// event an abort voids is never applied either. `apply` stops the
    /// merge by returning an error, passed through as it is
    /// ([`LogError::Replay`] for an event that does not apply).
    ///
    /// With a bound, every record below it must already be in the topic
    /// below this round's end (the committed LSN, read before the ends
    /// were fetched, is such a bound): a partition with nothing more to
    /// read then holds nothing below it.
    pub fn run(
        &mut self,
        upto: Option<u64>,
        apply: &mut dyn FnMut(u64, LogRecord) -> Result<(), LogError>,
    ) -> Result<(), LogError> {
        let out = &mut self.out;
        let skipped = &mut self.skipped;
        let parts = &mut self.parts;
        let mut live: Vec<usize> = (0..parts.len()).collect();
        loop {
            // Every partition still running shows its next record.
            let mut i = 0;
            while i < live.len() {
                if parts[live[i]].fill(&self.topic, skipped)? {
                    i += 1;
                } else {
                    live.swap_remove(i);
                }
            }
            let buffered: usize = live.iter().map(|&k| parts[k].buffered()).sum();
            out.peak_buffered = out.peak_buffered.max(buffered);
            let Some((k, lsn)) = live
                .iter()
                .filter_map(|&k| parts[k].heap.peek().map(|Reverse(Item(l, ..))| (k, *l)))
                .min_by_key(|&(_, l)| l)
            else {
                break;
            };
            if upto.is_some_and(|u| lsn >= u) {
                break;
            }
            let Reverse(Item(lsn, _, rec, off)) = parts[k].heap.pop().expect("peeked");
            parts[k].taken(off);
            out.next_lsn = out.next_lsn.max(lsn + 1);
            // Per partition and group the LSNs are sorted and groups rise, so
            // only a duplicate can fall at or below what was handed out.
            if self.high.is_some_and(|h| lsn <= h) {
                skipped.late(lsn, &rec);
                continue;
            }
            self.high = Some(lsn);
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
        Ok(())
    }

    /// One past the highest LSN handed out (or the cut's, if none yet).
    pub fn next_lsn(&self) -> u64 {
        self.out.next_lsn
    }

    /// Where the merge stands, if no message is partly applied (always so
    /// after a round that read up to a committed LSN, since a commit
    /// covers whole groups); `None` otherwise.
    pub fn cut(&self) -> Option<TopicCut> {
        if !self.parts.iter().all(PartStream::clean) {
            return None;
        }
        // Ranges that end at or below the next LSN void nothing ahead.
        let ahead = self.high.map_or(0, |h| h + 1);
        Some(TopicCut {
            topic: self.topic.clone(),
            next_lsn: self.out.next_lsn,
            high: self.high,
            partitions: self.parts.iter().map(PartStream::cut).collect(),
            tombstones: self
                .skipped
                .tombstones
                .ranges()
                .filter(|r| r.end > ahead)
                .collect(),
        })
    }

    /// What the merge found, since it was opened (logging late records).
    pub fn finish(self) -> KafkaRecovered {
        let mut out = self.out;
        for (i, s) in self.parts.iter().enumerate() {
            out.partitions[i] = s.records;
        }
        let Skipped {
            tombstones,
            late,
            mut late_events,
        } = self.skipped;
        late_events.retain(|l| !tombstones.covers(*l));
        out.late = late;
        out.late_unvoided = late_events.len() as u64;
        if out.late > 0 {
            tracing::warn!(
                late = out.late,
                late_unvoided = out.late_unvoided,
                first_unvoided = ?late_events.iter().take(16).collect::<Vec<_>>(),
                "kafka replay: records of failed groups arrived behind later ones and were not applied"
            );
        }
        out
    }
}

impl PartStream {
    /// Read the message a cut names as the last before its resume offset
    /// and check it is the same one (a recreated topic has another there,
    /// or none).
    fn check_anchor(&mut self, topic: &str, a: Anchor) -> Result<(), LogError> {
        let (off, found) = self.poll(topic, |off, v| {
            let found = decode_message(v)
                .ok()
                .map(|(g, recs)| (g, recs.first().map_or(u64::MAX, |r| r.0)));
            (off, found)
        })?;
        if off != a.offset || found != Some((a.group, a.first_lsn)) {
            return Err(mismatch(topic, format!("partition {}: the snapshot's last message before its offset is at {} (group {}, LSN {}), the topic has {} at {off} (the topic was recreated)", self.id, a.offset, a.group, a.first_lsn, match found { Some((g, l)) => format!("group {g}, LSN {l}"), None => "an undecodable message".into() })));
        }
        self.next_offset = off + 1;
        Ok(())
    }
}

/// A consumer for one partition of a replay: no group commits, a bounded
/// prefetch.
fn recovery_consumer(cfg: &KafkaConfig) -> Result<BaseConsumer, LogError> {
    let mut c = client_config(cfg);
    c.set("group.id", "flashd-recovery")
        .set("enable.auto.commit", "false")
        // Never jump elsewhere in a partition: an offset the broker no
        // longer has is an error, not a silent skip.
        .set("auto.offset.reset", "error")
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
    c.create().map_err(kafka_err)
}

/// Replay the whole topic (every partition, from the beginning) in LSN
/// order, handing each record to `apply` (see [`TopicReader::run`]). A
/// k-way merge over one consumer per partition, each holding one group of
/// its records (what one commit wrote to it), so memory is bounded by the
/// largest group and the prefetch, not by the topic (a topic of format 1
/// names no groups: each of its partitions is read as one).
pub fn recover_topic(
    cfg: &KafkaConfig,
    apply: &mut dyn FnMut(u64, LogRecord) -> Result<(), LogError>,
) -> Result<KafkaRecovered, LogError> {
    let mut r = TopicReader::open(cfg, None)?;
    r.run(None, apply)?;
    Ok(r.finish())
}
