//! flashd-sink: projects the order log (the Kafka topics) into sharded
//! MySQL, where the rest of the business reads orders. A process role of
//! its own (`flashd sink`), or a thread group inside `flashd serve`.
//!
//! It owns the MySQL schema and its migration, the consumer group member,
//! the projection of events into rows and the placement of users on
//! shards. It must never change the order log nor decide anything about
//! stock: every counter it writes is folded from the engine's events, with
//! the engine's own arithmetic (`flashd_engine::fold`).
//!
//! **Topics.** A single node writes one topic; in cluster mode each node
//! writes its own, `<base>.node<id>`, as that topic's single writer, with
//! LSNs of its own. `SinkConfig::kafka.topic` names what a sink follows
//! ([`Topics`]): one topic (a node's embedded sink follows its node's),
//! several (`a,b`), or every node topic of a base, now and later
//! (`<base>.node*`, a pattern subscription; a standalone sink of a
//! cluster). Everything LSN-based is per topic: partitions' marks, voided
//! ranges, parked records.
//!
//! **The projection depends on the topics' contents only**, not on how
//! their records interleave, how they are split into batches, nor on
//! replays or restarts, nor on how many sinks write at once. The same
//! move of an order may be logged by several nodes (a node that completes
//! a retry, pays, cancels or times out an order first logs its own copy
//! of the creation), and each topic may void its own records. So:
//!
//! * every applied copy of an order's move is kept, by (order, move,
//!   topic, LSN), in `order_copies` on the order's shard, voided when an
//!   abort of its topic covers its LSN; a move *stands* while one of its
//!   copies does (`copies`);
//! * the order row (one per order) says what stands: its status is its
//!   standing terminal move, else `CREATED`, else `VOID` (every copy of
//!   its creation undone); `version` is the status's rank (0 `VOID`, 1
//!   `CREATED`, 2 `PAID`/`CANCELLED`), not an LSN;
//! * `order_events` holds one row per standing move, keyed by (order,
//!   move), naming its least standing copy (topic, LSN); a move no copy
//!   holds any more has no row;
//! * counters change only when an order's standing moves change, by the
//!   engine's effect of each move counted once (`fold::plan_order`), in
//!   the order shard's own `sale_counters` row, in the same transaction
//!   as the order's row and copies, which are read `FOR UPDATE` first: a
//!   replay, or a copy from another topic, finds the move standing and
//!   changes nothing;
//! * a sale's `activities` row (shard 0) is recomputed whole, never
//!   incremented: its description from any copy of its creation (every
//!   node logs the same; `sale_copies` keeps them per topic), `void` once
//!   every copy of its creation is undone, and its counters
//!   `opened(stock)` plus the sum of every shard's `sale_counters`; an
//!   admin's changes of a sale (`StockAdded`, `ActivityWindowChanged`)
//!   are kept per copy (topic, LSN) in `sale_changes` beside them, voided
//!   by their topic's aborts, and its `stock` is the creation's plus the
//!   standing copies' units, its window the last standing change's.
//!
//! One consumer-group member reads batches of records, writes them to the
//! shards, and commits the batch's offsets only after every shard
//! committed its rows. A crash between the two replays the batch, which
//! changes nothing.
//!
//! Abort records are tombstones by LSN within their topic (see
//! `flashd_kafka`): an event arriving before its abort is applied and then
//! its copy voided; one arriving after it, or behind a later group on its
//! partition (a late record of a replaced producer), is never applied.
//! The sink keeps, on shard 0, the voided ranges per topic
//! (`flashd_aborts`) and per partition of each topic the latest group
//! fully written (`flashd_sink_partitions`), so this holds across restarts
//! and replays too.
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
//! orders (and their copies) stay on one shard and adding a shard moves
//! only 1/n of users. Order tables are per month of the order's creation
//! (`orders_YYYYMM`, from the snowflake id's timestamp, so status changes
//! find the table without a lookup).
//!
//! The sink runs on threads of its own (a consumer thread and a small
//! tokio runtime for MySQL), never on a reactor or worker.
//!
//! Where things are:
//!
//! * `consumer`: [`Sink::start`] / [`Sink::stop`], the sink's thread
//!   (poll a batch, write it, commit its offsets), the lag gauge and the
//!   rejoin of a stuck group; `topics`: what a sink follows;
//! * `writer`: the `Writer`, which writes a batch (marks, voided ranges,
//!   runs of events and aborts); `orders_tx`: one order shard's
//!   transaction; `sales_tx`: the sales' on shard 0; `copies`: what an
//!   order's copies make of it; `sale_changes`: what an admin's changes
//!   make of a sale; `fold`: the rows a change of copies writes; `rows`:
//!   the rows; `sql`: multi-row statements;
//! * `retry`: retrying transient failures; `classify`: which failures
//!   are transient; `poison`: parking records that cannot be written;
//! * `schema`: the tables and [`migrate`]; `upgrade`: the single-writer
//!   layout brought to this one; `placement`: shards and month tables;
//!   `stats`: what `/metrics` shows; `clock`: the one read of the wall
//!   clock.

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
mod sale_changes;
mod sales_tx;
mod schema;
mod sql;
mod stats;
mod topics;
mod upgrade;
mod writer;

pub use classify::{classify, classify_code, Class};
pub use consumer::{Sink, SinkConfig, STUCK_RESTART, UNASSIGNED_REJOIN};
pub use error::SinkError;
pub use placement::{order_table, shard_of};
pub use schema::{check_url, migrate};
pub use stats::{SinkStats, SINK_BATCH_BOUNDS};
pub use topics::{Topics, NODE_TOPIC_REFRESH};
