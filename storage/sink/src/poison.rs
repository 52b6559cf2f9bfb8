//! Parking records that cannot be written: bytes that do not decode, and
//! records whose write fails in a way that will recur forever. Each is
//! kept in `flashd_poison` on shard 0 with where it came from, logged and
//! counted, and the sink moves on.

use std::sync::atomic::Ordering;

use flashd_kafka::{encode_abort, encode_value, LogRecord, TopicRecord};
use mysql_async::prelude::*;
use mysql_async::Pool;

use crate::classify::{sql_err, WriteError};
use crate::clock::now_ms;
use crate::stats::SinkStats;
use crate::writer::Rec;

/// The longest error text kept with a parked record.
const POISON_ERROR_CHARS_MAX: usize = 4000;

/// A message whose bytes do not decode: parked as it is.
pub(crate) struct Undecodable {
    pub topic: std::sync::Arc<str>,
    pub partition: i32,
    pub offset: i64,
    pub payload: Vec<u8>,
    pub error: String,
}

/// A record to park, with where it came from.
pub(crate) struct Parked<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    /// 0 for bytes that do not decode.
    pub lsn: u64,
    pub payload: &'a [u8],
    pub error: &'a str,
}

/// One record as the topic would hold it alone (format 1).
pub(crate) fn record_bytes(r: &Rec) -> Vec<u8> {
    let mut v = Vec::new();
    match &r.rec {
        TopicRecord::Event(ev) => encode_value(r.lsn, &LogRecord::Event(ev.clone()), &mut v),
        TopicRecord::Abort(a) => encode_abort(r.lsn, a, &mut v),
    }
    v
}

/// Park one record on shard 0's pool (idempotent: a replay updates the
/// error).
pub(crate) async fn park(pool: &Pool, p: &Parked<'_>) -> Result<(), WriteError> {
    let mut conn = pool.get_conn().await.map_err(sql_err)?;
    // TEXT holds 64 KiB; MySQL's messages are far shorter, but a message
    // quoting the bad value must not itself fail to park.
    let error: String = p.error.chars().take(POISON_ERROR_CHARS_MAX).collect();
    conn.exec_drop(
        "INSERT INTO flashd_poison (topic, partition_id, record_offset, lsn, error, payload, parked_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?) ON DUPLICATE KEY UPDATE error = VALUES(error)",
        (p.topic, p.partition, p.offset, p.lsn, error, p.payload, now_ms()),
    )
    .await
    .map_err(sql_err)
}

/// A record was parked: count and tell.
pub(crate) fn poisoned(stats: &SinkStats, p: &Parked<'_>) {
    stats.poison.fetch_add(1, Ordering::Relaxed);
    if let Ok(mut l) = stats.last_error.lock() {
        *l = p.error.to_string();
    }
    tracing::error!(
        topic = p.topic,
        partition = p.partition,
        offset = p.offset,
        lsn = p.lsn,
        error = p.error,
        "sink: poison record parked in flashd_poison (shard 0); the sink moves on"
    );
}

/// A record could not even be parked: count and tell; it is skipped.
pub(crate) fn unparkable(stats: &SinkStats, p: &Parked<'_>, why: &WriteError) {
    stats.poison.fetch_add(1, Ordering::Relaxed);
    tracing::error!(topic = p.topic, partition = p.partition, offset = p.offset, lsn = p.lsn, error = p.error, park_error = %why.msg, "sink: poison record could not even be parked; skipped (it stays in the topic at this offset)");
}
