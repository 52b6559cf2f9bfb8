//! flashd-kafka: the Kafka backend of the order log
//! ([`OrderLog`](flashd_log::OrderLog)), the production write-behind path,
//! and the record format on the topic (which the sink, `flashd-sink`,
//! reads).
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
//!
//! Invariants:
//! * LSNs only grow: every record (event or abort) takes the next LSN, and
//!   the committed LSN never moves back (asserted in [`KafkaLog`]).
//! * Every event of a group's record has an LSN at or above its group.
//! * Recovery hands out LSNs strictly increasing, never an event an abort
//!   voids, never a late record.
//!
//! Where things are: `config` ([`KafkaConfig`] and the client settings all
//! share), `record` (the format on the topic: kinds, encode/decode,
//! [`Tombstones`]; what the sink reads), `producer` ([`KafkaLog`] and its
//! delivery reports), `recover` ([`recover_topic`], the k-way merge),
//! `topic` ([`ensure_topic`]), `error` ([`KafkaLogError`]).

mod config;
mod error;
mod producer;
mod record;
mod recover;
mod topic;

pub use config::KafkaConfig;
pub use error::KafkaLogError;
pub use producer::KafkaLog;
pub use record::{
    decode_message, decode_records, decode_value, encode_abort, encode_events, encode_group_events,
    encode_value, Abort, LogRecord, Tombstones, TopicRecord, KIND_ABORT, KIND_ABORT_RANGE,
    KIND_EVENTS, KIND_GROUP_EVENTS, RECORD_FORMAT,
};
pub use recover::{
    recover_topic, KafkaRecovered, FETCH_BYTES, RECOVERY_PREFETCH_KBYTES,
    RECOVERY_PREFETCH_MESSAGES,
};
pub use topic::{ensure_topic, node_topic, node_topics, topic_node};
