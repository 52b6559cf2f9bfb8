//! The `Writer`: writes a batch of records to the shards, idempotently
//! (see the crate doc): ordinary events in bulk, one transaction per shard,
//! abort records one at a time between them, and the partitions' marks and
//! voided ranges on shard 0 last.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use flashd_engine::{ActivityId, Event, OrderId};
use flashd_kafka::{Abort, Tombstones, TopicRecord};
use futures_util::FutureExt;
use mysql_async::prelude::*;
use mysql_async::{Opts, Pool, TxOpts, Value};

use crate::classify::{sql_err, WriteError};
use crate::clock::now_ms;
use crate::fold::{fold_into, undo_group, RowState, SaleUndo};
use crate::placement::{order_table, shard_of};
use crate::poison::{park, Parked};
use crate::rows::{ActivityRow, BatchRows, EventRow, LsnEvent, OrderRef, OrderRow, RowStatus};
use crate::schema::META_SCHEMA;
use crate::stats::SinkStats;

/// A record of a batch, with where it came from.
#[derive(Debug, Clone)]
pub(crate) struct Rec {
    pub partition: i32,
    pub offset: i64,
    /// The group of its message (see [`flashd_kafka::KIND_GROUP_EVENTS`]).
    pub group: u64,
    pub lsn: u64,
    pub rec: TopicRecord,
}

/// An abort's voided range, as kept in `flashd_aborts`.
#[derive(Debug, Clone)]
struct AbortRange {
    abort_lsn: u64,
    covers: Range<u64>,
}

/// What shard 0 knows of a batch's partitions and LSNs before it is
/// written.
struct Marks {
    /// The latest group fully written, per partition.
    high: BTreeMap<i32, u64>,
    /// The voided ranges that reach into the batch's LSNs.
    void: Tombstones,
}

/// Rows per multi-row statement: the widest row has 14 placeholders, and
/// a statement may hold at most 65,535 (ER_PS_MANY_PARAM); 1,000 rows
/// also keeps a statement well under `max_allowed_packet`.
const ROWS_PER_STATEMENT: usize = 1000;
const _: () = assert!(ROWS_PER_STATEMENT * ActivityRow::WIDTH <= 65_535);

pub(crate) struct Writer {
    urls: Vec<String>,
    pools: Vec<Pool>,
    /// Order tables known to exist, per shard.
    tables: Vec<HashSet<String>>,
    stats: Arc<SinkStats>,
    topic: String,
    /// The sink's own tables on shard 0 are known to exist.
    meta_ready: bool,
}

impl Writer {
    /// `pools`: one per URL of `urls`, in order.
    pub fn new(
        urls: Vec<String>,
        pools: Vec<Pool>,
        stats: Arc<SinkStats>,
        topic: String,
    ) -> Writer {
        Writer {
            tables: vec![HashSet::new(); urls.len()],
            urls,
            pools,
            stats,
            topic,
            meta_ready: false,
        }
    }

    /// Disconnect every pool (the sink stops).
    pub async fn close(self) {
        for p in self.pools {
            let _ = p.disconnect().await;
        }
    }

    /// Fresh pools: connections to a server that went away are not worth
    /// reusing.
    pub fn reset(&mut self, rt: &tokio::runtime::Runtime) {
        let fresh: Vec<Pool> = self
            .urls
            .iter()
            .filter_map(|u| Opts::from_url(u).ok().map(Pool::new))
            .collect();
        if fresh.len() == self.pools.len() {
            for old in std::mem::replace(&mut self.pools, fresh) {
                rt.spawn(async move {
                    let _ = old.disconnect().await;
                });
            }
            // Tables may have been lost with the server's data: check again.
            for t in &mut self.tables {
                t.clear();
            }
            self.meta_ready = false;
        }
    }

    /// Write a batch (records in the order their partitions hold them).
    /// Every event is checked against the voided ranges and its
    /// partition's high-water mark first; see the crate doc.
    pub async fn write(&mut self, batch: &[Rec]) -> Result<(), WriteError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.ensure_meta().await?;
        let Marks { mut high, mut void } = self.load_marks(batch).await?;
        let start_high = high.clone();
        // Aborts that arrived late: only their ranges are kept.
        let mut late_aborts: Vec<AbortRange> = Vec::new();
        // Aborts are rare (a failed produce); they are applied one by one
        // between bulk runs of ordinary events.
        let mut run: Vec<LsnEvent<'_>> = Vec::new();
        let mut skipped = 0u64;
        for r in batch {
            // A message of a group older than one already written on its
            // partition is a replaced producer's: late.
            let h = high.get(&r.partition).copied();
            let late = h.is_some_and(|h| r.group < h);
            if !late {
                high.insert(r.partition, r.group);
            }
            match &r.rec {
                TopicRecord::Event(ev) => {
                    if late || void.covers(r.lsn) {
                        skipped += 1;
                    } else {
                        run.push(LsnEvent {
                            lsn: r.lsn,
                            event: ev,
                        });
                    }
                }
                TopicRecord::Abort(a) => {
                    void.insert(a.covers.clone());
                    if late {
                        late_aborts.push(AbortRange {
                            abort_lsn: r.lsn,
                            covers: a.covers.clone(),
                        });
                    } else {
                        self.bulk(&run).await?;
                        run.clear();
                        self.abort(r.lsn, a).await?;
                    }
                }
            }
        }
        self.bulk(&run).await?;
        self.save_marks(&start_high, &high, &late_aborts).await?;
        if skipped > 0 {
            self.stats.voided.fetch_add(skipped, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Park one record on shard 0.
    pub async fn park(&mut self, p: &Parked<'_>) -> Result<(), WriteError> {
        self.ensure_meta().await?;
        park(&self.pools[0], &self.topic, p).await
    }

    async fn ensure_meta(&mut self) -> Result<(), WriteError> {
        if self.meta_ready {
            return Ok(());
        }
        let mut conn = self.pools[0].get_conn().await.map_err(sql_err)?;
        for s in META_SCHEMA {
            conn.query_drop(*s).await.map_err(sql_err)?;
        }
        self.meta_ready = true;
        Ok(())
    }

    /// The groups written so far on the batch's partitions and the voided
    /// ranges that reach into the batch's LSNs, from shard 0.
    async fn load_marks(&mut self, batch: &[Rec]) -> Result<Marks, WriteError> {
        let mut conn = self.pools[0].get_conn().await.map_err(sql_err)?;
        let parts: BTreeSet<i32> = batch.iter().map(|r| r.partition).collect();
        let list = parts
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let rows: Vec<(i32, u64)> = conn
            .exec(
                format!("SELECT partition_id, group_lsn FROM flashd_sink_partitions WHERE topic = ? AND partition_id IN ({list})"),
                (self.topic.as_str(),),
            )
            .await
            .map_err(sql_err)?;
        let high = rows.into_iter().collect();
        let lo = batch.iter().map(|r| r.lsn).min().unwrap_or(0);
        let hi = batch.iter().map(|r| r.lsn).max().unwrap_or(0);
        let ranges: Vec<(u64, u64)> = conn
            .exec(
                "SELECT from_lsn, to_lsn FROM flashd_aborts WHERE to_lsn > ? AND from_lsn <= ?",
                (lo, hi),
            )
            .await
            .map_err(sql_err)?;
        let mut void = Tombstones::default();
        for (f, t) in ranges {
            void.insert(f..t);
        }
        Ok(Marks { high, void })
    }

    /// Everything of the batch is written: raise the partitions' marks and
    /// keep the ranges of late aborts.
    async fn save_marks(
        &mut self,
        before: &BTreeMap<i32, u64>,
        high: &BTreeMap<i32, u64>,
        late_aborts: &[AbortRange],
    ) -> Result<(), WriteError> {
        let raised: Vec<(i32, u64)> = high
            .iter()
            .filter(|(p, l)| before.get(p) != Some(l))
            .map(|(p, l)| (*p, *l))
            .collect();
        if raised.is_empty() && late_aborts.is_empty() {
            return Ok(());
        }
        let mut conn = self.pools[0].get_conn().await.map_err(sql_err)?;
        let mut tx = conn
            .start_transaction(TxOpts::default())
            .await
            .map_err(sql_err)?;
        for a in late_aborts {
            insert_abort(&mut tx, a).await?;
        }
        for (p, l) in raised {
            tx.exec_drop(
                "INSERT INTO flashd_sink_partitions (topic, partition_id, group_lsn) VALUES (?, ?, ?) \
                 ON DUPLICATE KEY UPDATE group_lsn = GREATEST(group_lsn, VALUES(group_lsn))",
                (self.topic.as_str(), p, l),
            )
            .await
            .map_err(sql_err)?;
        }
        tx.commit().await.map_err(sql_err)
    }

    async fn ensure_table(
        &mut self,
        shard: usize,
        table: &str,
        conn: &mut mysql_async::Conn,
    ) -> Result<(), WriteError> {
        if !self.tables[shard].contains(table) {
            conn.query_drop(format!(
                "CREATE TABLE IF NOT EXISTS {table} LIKE orders_template"
            ))
            .await
            .map_err(sql_err)?;
            self.tables[shard].insert(table.to_string());
        }
        Ok(())
    }

    /// Write a run of ordinary events: order and event rows on their
    /// shards, then the sales' counters on shard 0.
    async fn bulk(&mut self, run: &[LsnEvent<'_>]) -> Result<(), WriteError> {
        if run.is_empty() {
            return Ok(());
        }
        let rows = BatchRows::build(run, self.pools.len());
        // Order tables first (cached after the first batch of a month),
        // then every shard's transaction at once: each commit waits for
        // its server's log flush, and two shards' flushes overlap.
        for (s, by_table) in rows.orders.iter().enumerate() {
            if by_table.is_empty() {
                continue;
            }
            let mut conn = self.pools[s].get_conn().await.map_err(sql_err)?;
            for table in by_table.keys() {
                self.ensure_table(s, table, &mut conn).await?;
            }
        }
        let writes = rows.shards().map(|s| {
            write_shard(&self.pools[s], &rows.orders[s], &rows.events[s])
                .map(move |r| r.map(|n| (s, n)))
        });
        for (s, n) in futures_util::future::try_join_all(writes).await? {
            self.stats.rows[s].fetch_add(n, Ordering::Relaxed);
        }
        self.fold_activities(&rows.sales, None).await
    }

    /// Fold events into the activity rows on shard 0, skipping those the
    /// row already has (LSN <= version); then, for an abort, its undo
    /// (computed from the orders' statuses) and its voided range, kept in
    /// the same transaction.
    async fn fold_activities(
        &mut self,
        sales: &BTreeMap<ActivityId, Vec<LsnEvent<'_>>>,
        abort: Option<(&AbortRange, &HashMap<ActivityId, SaleUndo>)>,
    ) -> Result<(), WriteError> {
        if sales.is_empty() && abort.is_none() {
            return Ok(());
        }
        let ids: BTreeSet<ActivityId> = sales
            .keys()
            .chain(abort.iter().flat_map(|(_, u)| u.keys()))
            .copied()
            .collect();
        let mut conn = self.pools[0].get_conn().await.map_err(sql_err)?;
        let mut tx = conn
            .start_transaction(TxOpts::default())
            .await
            .map_err(sql_err)?;
        let list = ids
            .iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let found: Vec<mysql_async::Row> = tx
            .query(format!(
                "SELECT {} FROM activities WHERE id IN ({list}) FOR UPDATE",
                ActivityRow::COLUMNS
            ))
            .await
            .map_err(sql_err)?;
        let mut rows: BTreeMap<ActivityId, ActivityRow> = found
            .iter()
            .map(ActivityRow::from_row)
            .map(|a| (a.id, a))
            .collect();
        let undo = abort.map(|(a, u)| (a.abort_lsn, u));
        let changed: Vec<ActivityId> = fold_into(&mut rows, sales, undo).into_iter().collect();
        for chunk in changed.chunks(ROWS_PER_STATEMENT) {
            let sql = values_sql(
                &format!("INSERT INTO activities ({})", ActivityRow::COLUMNS),
                ActivityRow::WIDTH,
                chunk.len(),
                " ON DUPLICATE KEY UPDATE sku_id=VALUES(sku_id), name=VALUES(name), price_cents=VALUES(price_cents), stock=VALUES(stock), remaining=VALUES(remaining), reserved=VALUES(reserved), sold=VALUES(sold), start_at=VALUES(start_at), end_at=VALUES(end_at), per_user_limit=VALUES(per_user_limit), created_at=VALUES(created_at), void=VALUES(void), version=VALUES(version)",
            );
            let params: Vec<Value> = chunk.iter().flat_map(|id| rows[id].values()).collect();
            tx.exec_drop(sql, params).await.map_err(sql_err)?;
            self.stats.rows[0].fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        if let Some((a, _)) = abort {
            insert_abort(&mut tx, a).await?;
        }
        tx.commit().await.map_err(sql_err)
    }

    /// Undo the aborted group as the engine did: the activity rows first
    /// (guarded by their versions, computed from the orders' statuses
    /// before the abort), then the order rows (guarded by theirs).
    async fn abort(&mut self, lsn: u64, abort: &Abort) -> Result<(), WriteError> {
        let n = self.pools.len();
        let evs: Vec<&Event> = abort.events.iter().map(|(_, e)| e).collect();
        // Current statuses of the orders involved.
        let mut found: HashMap<OrderId, RowState> = HashMap::new();
        for o in evs.iter().filter_map(|ev| OrderRef::of(ev)) {
            if found.contains_key(&o.order_id) {
                continue;
            }
            let s = shard_of(o.user_id, n);
            let table = order_table(o.order_id);
            let mut conn = self.pools[s].get_conn().await.map_err(sql_err)?;
            self.ensure_table(s, &table, &mut conn).await?;
            let r: Option<(String, u64)> = conn
                .exec_first(
                    format!("SELECT status, version FROM {table} WHERE order_id = ?"),
                    (o.order_id,),
                )
                .await
                .map_err(sql_err)?;
            if let Some((status, version)) =
                r.and_then(|(s, v)| RowStatus::parse(&s).map(|s| (s, v)))
            {
                found.insert(o.order_id, RowState { status, version });
            }
        }
        let undo = undo_group(&evs, lsn, found);
        let range = AbortRange {
            abort_lsn: lsn,
            covers: abort.covers.clone(),
        };
        self.fold_activities(&BTreeMap::new(), Some((&range, &undo.sales)))
            .await?;
        for (seq, c) in undo.changes.iter().enumerate() {
            let o = c.order;
            let s = shard_of(o.user_id, n);
            let table = order_table(o.order_id);
            let mut conn = self.pools[s].get_conn().await.map_err(sql_err)?;
            let mut tx = conn
                .start_transaction(TxOpts::default())
                .await
                .map_err(sql_err)?;
            tx.exec_drop(
                format!(
                    "UPDATE {table} SET status = ?, version = ? WHERE order_id = ? AND version < ?"
                ),
                (c.to.as_str(), lsn, o.order_id, lsn),
            )
            .await
            .map_err(sql_err)?;
            insert_events(&mut tx, &[EventRow::reverted(lsn, seq as u32, o, now_ms())]).await?;
            tx.commit().await.map_err(sql_err)?;
            self.stats.rows[s].fetch_add(2, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// Keep an abort's voided range (idempotent).
async fn insert_abort(
    tx: &mut mysql_async::Transaction<'_>,
    a: &AbortRange,
) -> Result<(), WriteError> {
    tx.exec_drop(
        "INSERT IGNORE INTO flashd_aborts (abort_lsn, from_lsn, to_lsn) VALUES (?, ?, ?)",
        (a.abort_lsn, a.covers.start, a.covers.end),
    )
    .await
    .map_err(sql_err)
}

/// `{head} VALUES (?,…),(?,…){tail}`: `rows` rows of `width` placeholders.
fn values_sql(head: &str, width: usize, rows: usize, tail: &str) -> String {
    let row = format!("({})", vec!["?"; width].join(","));
    let mut sql = String::with_capacity(head.len() + tail.len() + 8 + rows * (row.len() + 1));
    sql.push_str(head);
    sql.push_str(" VALUES ");
    for i in 0..rows {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str(&row);
    }
    sql.push_str(tail);
    sql
}

/// One shard's part of a batch, in one transaction; the rows written.
async fn write_shard(
    pool: &Pool,
    orders: &BTreeMap<String, Vec<OrderRow>>,
    events: &[EventRow],
) -> Result<u64, WriteError> {
    let mut conn = pool.get_conn().await.map_err(sql_err)?;
    let mut tx = conn
        .start_transaction(TxOpts::default())
        .await
        .map_err(sql_err)?;
    let mut rows = 0u64;
    for (table, rs) in orders {
        for chunk in rs.chunks(ROWS_PER_STATEMENT) {
            upsert_orders(&mut tx, table, chunk).await?;
            rows += chunk.len() as u64;
        }
    }
    for chunk in events.chunks(ROWS_PER_STATEMENT) {
        insert_events(&mut tx, chunk).await?;
        rows += chunk.len() as u64;
    }
    tx.commit().await.map_err(sql_err)?;
    Ok(rows)
}

async fn upsert_orders(
    tx: &mut mysql_async::Transaction<'_>,
    table: &str,
    rows: &[OrderRow],
) -> Result<(), WriteError> {
    // Order matters: the guards read `version` and `expires_at` before
    // they are changed. A creation (the only image with `expires_at` set)
    // fills the columns only it knows whenever it arrives, so a status
    // change that came first leaves no hole.
    let sql = values_sql(
        &format!("INSERT INTO {table} (order_id, activity_id, user_id, quantity, amount_cents, request_id, status, created_at, expires_at, updated_at, version)"),
        11,
        rows.len(),
        " ON DUPLICATE KEY UPDATE \
         amount_cents = IF(VALUES(expires_at) > 0, VALUES(amount_cents), amount_cents), \
         request_id = IF(VALUES(expires_at) > 0, VALUES(request_id), request_id), \
         created_at = IF(VALUES(expires_at) > 0, VALUES(created_at), created_at), \
         expires_at = IF(VALUES(expires_at) > 0, VALUES(expires_at), expires_at), \
         status = IF(VALUES(version) > version, VALUES(status), status), \
         updated_at = IF(VALUES(version) > version, VALUES(updated_at), updated_at), \
         version = GREATEST(version, VALUES(version))",
    );
    let params: Vec<Value> = rows
        .iter()
        .flat_map(|r| {
            [
                Value::from(r.order_id),
                Value::from(r.activity_id),
                Value::from(r.user_id),
                Value::from(r.quantity),
                Value::from(r.amount_cents),
                Value::from(r.request_id.as_str()),
                Value::from(r.status.as_str()),
                Value::from(r.created_at),
                Value::from(r.expires_at),
                Value::from(r.updated_at),
                Value::from(r.version),
            ]
        })
        .collect();
    tx.exec_drop(sql, params).await.map_err(sql_err)
}

async fn insert_events(
    tx: &mut mysql_async::Transaction<'_>,
    rows: &[EventRow],
) -> Result<(), WriteError> {
    let sql = values_sql(
        "INSERT INTO order_events (lsn, seq, order_id, activity_id, user_id, kind, reason, quantity, at)",
        9,
        rows.len(),
        " ON DUPLICATE KEY UPDATE lsn = lsn",
    );
    let params: Vec<Value> = rows
        .iter()
        .flat_map(|r| {
            [
                Value::from(r.lsn),
                Value::from(r.seq),
                Value::from(r.order_id),
                Value::from(r.activity_id),
                Value::from(r.user_id),
                Value::from(r.kind),
                Value::from(r.reason),
                Value::from(r.quantity),
                Value::from(r.at),
            ]
        })
        .collect();
    tx.exec_drop(sql, params).await.map_err(sql_err)
}

#[cfg(test)]
mod tests;
