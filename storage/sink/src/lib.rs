//! flashd-sink: projects the order log (the Kafka topic) into sharded
//! MySQL, where the rest of the business reads orders. A process role of
//! its own (`flashd sink`), or a thread group inside `flashd serve`.
//!
//! It owns the MySQL schema and its migration, the consumer group member,
//! the projection of events into rows and the placement of users on
//! shards. It must never change the order log nor decide anything about
//! stock: every counter it writes is folded from the engine's events, with
//! the engine's own arithmetic (`flashd_engine::fold`: an event's effect,
//! and its undo given the order's status).
//!
//! One consumer-group member reads batches of records, writes them to the
//! shards with multi-row `INSERT ... ON DUPLICATE KEY UPDATE`, and commits
//! the batch's offsets only after every shard committed its rows. A crash
//! between the two replays the batch; every write is idempotent, so the
//! replay changes nothing:
//!
//! * an order row carries `version`, the LSN of the last event applied to
//!   it; a status change applies only if its LSN is newer;
//! * `order_events` rows are keyed by (LSN, position in the record);
//! * the `activities` row (on shard 0) carries the LSN of the last event
//!   folded into its counters; counters are read, folded with the newer
//!   events and written back in one transaction.
//!
//! Abort records are tombstones by LSN (see `flashd_kafka`): an event
//! arriving before its abort is applied and then undone by it; one
//! arriving after it, or behind a later group on its partition (a late
//! record of a replaced producer), is never applied. The sink keeps, on
//! shard 0, the voided ranges (`flashd_aborts`) and per partition the
//! latest group fully written (`flashd_sink_partitions`), so this holds
//! across restarts and replays too.
//!
//! A write error is either transient (the server or the connection is
//! unwell: retried with backoff, as long as it lasts, loudly) or permanent
//! (the data or the statement is wrong and will be wrong forever): then the
//! batch is written one record at a time and each record that fails
//! permanently is parked in `flashd_poison` on shard 0 with its
//! topic/partition/offset, LSN, bytes and error, logged and counted, and
//! the sink moves on.
//!
//! Orders are placed by user id with a jump consistent hash, so one user's
//! orders stay on one shard and adding a shard moves only 1/n of users.
//! Order tables are per month of the order's creation (`orders_YYYYMM`,
//! from the snowflake id's timestamp, so status changes find the table
//! without a lookup).
//!
//! The sink runs on threads of its own (a consumer thread and a small
//! tokio runtime for MySQL), never on a reactor or worker.
//!
//! Where things are:
//!
//! * `consumer`: [`Sink::start`] / [`Sink::stop`], the sink's thread
//!   (poll a batch, write it, commit its offsets), the lag gauge and the
//!   rejoin of a stuck group;
//! * `writer`: the `Writer`, which writes a batch to the shards;
//!   `rows`: the rows built from events; `fold`: events folded into
//!   the sales' counters and an aborted group undone;
//! * `retry`: retrying transient failures; `classify`: which failures
//!   are transient; `poison`: parking records that cannot be written;
//! * `schema`: the tables and [`migrate`]; `placement`: shards and
//!   month tables; `stats`: what `/metrics` shows; `clock`: the one
//!   read of the wall clock.

mod classify;
mod clock;
mod consumer;
mod copies;
mod error;
mod fold;
mod orders_tx;
mod placement;
mod poison;
mod retry;
mod rows;
mod sales_tx;
mod schema;
mod sql;
mod stats;
mod topics;
mod upgrade;
mod writer;

pub use classify::{classify, classify_code, Class};
pub use consumer::{Sink, SinkConfig, UNASSIGNED_REJOIN};
pub use error::SinkError;
pub use placement::{order_table, shard_of};
pub use schema::{check_url, migrate};
pub use stats::{SinkStats, SINK_BATCH_BOUNDS};
pub use topics::{node_of, Topics, NODE_TOPIC_REFRESH};
