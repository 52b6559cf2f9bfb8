//! The record format on the topic: what [`crate::KafkaLog`] writes, what
//! recovery and the sink (`flashd-sink`) read. A value is a header (format,
//! kind, LSN) and a body by kind: a packed run of one activity's events of
//! one group, or an abort (a tombstone over a range of LSNs and the events
//! of its activity there to undo). Format-1 kinds are still read, never
//! written. [`Tombstones`] is the set of LSN ranges the aborts seen so far
//! void.

use std::collections::BTreeMap;
use std::ops::Range;

use flashd_engine::Event;
use flashd_log::{decode_event, encode_event, DecodeError};

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
