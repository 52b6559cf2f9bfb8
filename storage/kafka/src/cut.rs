//! A cut of the topic ([`TopicCut`]): where replay of each partition
//! resumes after a snapshot, and everything the merge of
//! [`crate::TopicReader`] held at that point that decides what comes
//! after it. Stored beside the engine snapshot it belongs to, as
//! `cut-<lsn>.cut`: an 8-byte magic, a format version, then one CRC-framed
//! record ([`flashd_log::encode_record`]).
//!
//! What it carries, and why each is needed for a snapshot plus the tail
//! to equal a full replay:
//! * per partition, the offset replay resumes at (the first message the
//!   snapshot holds nothing of);
//! * per partition, the group of the last message applied before it: a
//!   message behind it with an older group is late, as in a full replay;
//! * per partition, the last message before the resume offset (its
//!   offset, group and first LSN): read again at start, it proves the
//!   topic is the one the snapshot was taken of (a recreated topic has
//!   other records there);
//! * the highest LSN handed out: a record at or below it is late;
//! * the abort ranges that reach past it: an event in one is void.

use std::ops::Range;
use std::path::Path;

use flashd_log::{decode_record, encode_record, Corruption, DecodeError, Decoded, LogError};

/// The first bytes of a cut file.
pub const CUT_MAGIC: &[u8; 8] = b"FLSHDCUT";
/// Format of a cut file; a reader refuses another.
pub const CUT_VERSION: u32 = 1;
/// Record kind of a cut's one record.
const KIND_CUT: u8 = 1;
/// Partitions a cut may name: Kafka's own practical ceiling per topic is
/// far below, so more is damage, and a decoder must not size a vector by
/// an unchecked count.
pub const CUT_PARTITIONS_MAX: usize = 1 << 16;
/// Abort ranges a cut may carry: each is one failed commit still ahead of
/// the cut's LSN, so a handful in practice; more is damage.
pub const CUT_RANGES_MAX: usize = 1 << 16;
/// Longest topic name Kafka allows.
const TOPIC_BYTES_MAX: usize = 249;

/// The last message before a partition's resume offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Anchor {
    pub offset: i64,
    pub group: u64,
    /// LSN of its first record (`u64::MAX` for a message with none).
    pub first_lsn: u64,
}

/// One partition's place in a cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionCut {
    pub id: i32,
    /// Replay of this partition resumes at this offset.
    pub resume: i64,
    /// Group of the last message applied before `resume`.
    pub group: Option<u64>,
    pub anchor: Option<Anchor>,
}

/// Where a snapshot stands in the topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicCut {
    pub topic: String,
    /// The next LSN: the snapshot holds every event below it that a full
    /// replay would apply, and nothing else. Also the snapshot's LSN.
    pub next_lsn: u64,
    /// The highest LSN handed out (applied, voided or an abort).
    pub high: Option<u64>,
    /// Every partition of the topic, by id.
    pub partitions: Vec<PartitionCut>,
    /// Abort ranges that reach past `high`.
    pub tombstones: Vec<Range<u64>>,
}

fn corrupt(path: &Path, why: Corruption) -> LogError {
    LogError::Corrupt {
        path: path.into(),
        offset: 0,
        why,
    }
}

impl TopicCut {
    /// The file's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut p = Vec::with_capacity(64 + 48 * self.partitions.len());
        let name = self.topic.as_bytes();
        p.extend_from_slice(&(name.len() as u16).to_le_bytes());
        p.extend_from_slice(name);
        p.extend_from_slice(&self.next_lsn.to_le_bytes());
        opt_u64(&mut p, self.high);
        p.extend_from_slice(&(self.partitions.len() as u32).to_le_bytes());
        for c in &self.partitions {
            p.extend_from_slice(&c.id.to_le_bytes());
            p.extend_from_slice(&c.resume.to_le_bytes());
            opt_u64(&mut p, c.group);
            match c.anchor {
                None => p.push(0),
                Some(a) => {
                    p.push(1);
                    p.extend_from_slice(&a.offset.to_le_bytes());
                    p.extend_from_slice(&a.group.to_le_bytes());
                    p.extend_from_slice(&a.first_lsn.to_le_bytes());
                }
            }
        }
        p.extend_from_slice(&(self.tombstones.len() as u32).to_le_bytes());
        for r in &self.tombstones {
            p.extend_from_slice(&r.start.to_le_bytes());
            p.extend_from_slice(&r.end.to_le_bytes());
        }
        let mut out = Vec::with_capacity(p.len() + 32);
        out.extend_from_slice(CUT_MAGIC);
        out.extend_from_slice(&CUT_VERSION.to_le_bytes());
        encode_record(&mut out, KIND_CUT, &p);
        out
    }

    /// Decode a cut file's bytes; `path` names it in errors.
    pub fn decode(path: &Path, data: &[u8]) -> Result<TopicCut, LogError> {
        if data.len() < 12 || &data[..8] != CUT_MAGIC {
            return Err(LogError::BadMagic {
                path: path.into(),
                what: "topic cut",
            });
        }
        let version = u32::from_le_bytes(data[8..12].try_into().expect("4 bytes"));
        if version != CUT_VERSION {
            return Err(LogError::Version {
                path: path.into(),
                found: version,
                supported: CUT_VERSION,
            });
        }
        let payload = match decode_record(&data[12..]) {
            Decoded::Record {
                kind: KIND_CUT,
                payload,
                len,
            } if 12 + len == data.len() => payload,
            Decoded::Record { .. } => {
                return Err(corrupt(
                    path,
                    Corruption::Fixed("not one cut record and nothing after it"),
                ))
            }
            Decoded::Checksum { expected, got, .. } => {
                return Err(LogError::ChecksumMismatch {
                    path: path.into(),
                    offset: 12,
                    expected,
                    got,
                })
            }
            Decoded::Incomplete => return Err(corrupt(path, Corruption::Incomplete)),
            Decoded::Zeroes => return Err(corrupt(path, Corruption::Zeroes)),
            Decoded::BadLength(n) => return Err(corrupt(path, Corruption::BadLength(n))),
        };
        decode_payload(payload).map_err(|e| corrupt(path, e.into()))
    }

    /// The cut of `partition`.
    pub fn partition(&self, id: i32) -> Option<&PartitionCut> {
        self.partitions.iter().find(|c| c.id == id)
    }
}

fn opt_u64(p: &mut Vec<u8>, v: Option<u64>) {
    match v {
        None => p.push(0),
        Some(v) => {
            p.push(1);
            p.extend_from_slice(&v.to_le_bytes());
        }
    }
}

/// A bounds-checked reader of a cut's payload.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (h, t) = self.0.split_at(n);
        self.0 = t;
        Ok(h)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.bytes(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.bytes(2)?.try_into().expect("2")))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.bytes(4)?.try_into().expect("4")))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.bytes(8)?.try_into().expect("8")))
    }
    fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(self.u64()? as i64)
    }
    fn flag(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::BadEnum("cut flag")),
        }
    }
    fn opt_u64(&mut self) -> Result<Option<u64>, DecodeError> {
        Ok(if self.flag()? {
            Some(self.u64()?)
        } else {
            None
        })
    }
}

fn decode_payload(p: &[u8]) -> Result<TopicCut, DecodeError> {
    let mut r = Reader(p);
    let n = r.u16()? as usize;
    if n == 0 || n > TOPIC_BYTES_MAX {
        return Err(DecodeError::BadEnum("cut topic name length"));
    }
    let topic = std::str::from_utf8(r.bytes(n)?)
        .map_err(|_| DecodeError::BadUtf8)?
        .to_string();
    let next_lsn = r.u64()?;
    let high = r.opt_u64()?;
    let parts = r.u32()? as usize;
    if parts > CUT_PARTITIONS_MAX {
        return Err(DecodeError::BadEnum("cut partition count"));
    }
    let mut partitions = Vec::with_capacity(parts);
    for _ in 0..parts {
        let id = r.u32()? as i32;
        let resume = r.i64()?;
        let group = r.opt_u64()?;
        let anchor = if r.flag()? {
            Some(Anchor {
                offset: r.i64()?,
                group: r.u64()?,
                first_lsn: r.u64()?,
            })
        } else {
            None
        };
        if resume < 0 || anchor.is_some_and(|a| a.offset < 0 || a.offset >= resume) {
            return Err(DecodeError::BadEnum("cut offsets"));
        }
        partitions.push(PartitionCut {
            id,
            resume,
            group,
            anchor,
        });
    }
    let ranges = r.u32()? as usize;
    if ranges > CUT_RANGES_MAX {
        return Err(DecodeError::BadEnum("cut abort range count"));
    }
    let mut tombstones = Vec::with_capacity(ranges);
    for _ in 0..ranges {
        let (start, end) = (r.u64()?, r.u64()?);
        if start >= end {
            return Err(DecodeError::BadEnum("cut abort range"));
        }
        tombstones.push(start..end);
    }
    if !r.0.is_empty() {
        return Err(DecodeError::BadEnum("bytes after the cut"));
    }
    if high.is_some_and(|h| h >= next_lsn) {
        return Err(DecodeError::BadEnum("cut LSNs"));
    }
    Ok(TopicCut {
        topic,
        next_lsn,
        high,
        partitions,
        tombstones,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> TopicCut {
        TopicCut {
            topic: "orders".into(),
            next_lsn: 42,
            high: Some(41),
            partitions: vec![
                PartitionCut {
                    id: 0,
                    resume: 7,
                    group: Some(30),
                    anchor: Some(Anchor {
                        offset: 6,
                        group: 30,
                        first_lsn: 33,
                    }),
                },
                PartitionCut {
                    id: 1,
                    resume: 0,
                    group: None,
                    anchor: None,
                },
            ],
            tombstones: vec![38..45, 50..52],
        }
    }

    #[test]
    fn round_trip() {
        let c = sample();
        let p = Path::new("cut");
        assert_eq!(TopicCut::decode(p, &c.encode()).unwrap(), c);
    }

    #[test]
    fn every_flipped_byte_or_cut_short_is_refused() {
        let bytes = sample().encode();
        let p = Path::new("cut");
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            assert!(TopicCut::decode(p, &b).is_err(), "byte {i} flipped");
            assert!(TopicCut::decode(p, &bytes[..i]).is_err(), "cut at {i}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(TopicCut::decode(p, &longer).is_err());
    }
}
