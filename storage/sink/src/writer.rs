//! The `Writer`: writes a batch of records to the shards, idempotently
//! and whatever the order its topics' records arrive in (see the crate
//! doc): ordinary events in bulk (each order shard's transaction, then the
//! sales on shard 0), abort records one at a time between them, and the
//! partitions' marks on shard 0 last.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use flashd_engine::{ActivityId, OrderId};
use flashd_kafka::{Abort, Tombstones, TopicRecord};
use futures_util::FutureExt;
use mysql_async::prelude::*;
use mysql_async::{Opts, Pool, TxOpts};

use crate::classify::{sql_err, WriteError};
use crate::fold::Voiding;
use crate::orders_tx::write_orders;
use crate::placement::{order_table, shard_of};
use crate::poison::{park, Parked};
use crate::rows::{BatchRows, OrderRef, OrderRun, TopicEvent};
use crate::sales_tx::{insert_abort, write_sales, AbortRange};
use crate::schema::META_SCHEMA;
use crate::stats::SinkStats;

/// A record of a batch, with where it came from.
#[derive(Debug, Clone)]
pub(crate) struct Rec {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    /// The group of its message (see [`flashd_kafka::KIND_GROUP_EVENTS`]).
    pub group: u64,
    /// Its LSN in its topic.
    pub lsn: u64,
    pub rec: TopicRecord,
}

/// A partition of a topic.
type Part = (Arc<str>, i32);

/// What shard 0 knows of a batch's partitions and LSNs before it is
/// written.
struct Marks {
    /// The latest group fully written, per partition.
    high: BTreeMap<Part, u64>,
    /// The voided ranges that reach into the batch's LSNs, per topic.
    void: HashMap<Arc<str>, Tombstones>,
}

pub(crate) struct Writer {
    urls: Vec<String>,
    pools: Vec<Pool>,
    /// Order tables known to exist, per shard.
    tables: Vec<HashSet<String>>,
    stats: Arc<SinkStats>,
    /// The topic voided ranges kept before ranges named their topic
    /// belong to: the one topic of a single-topic sink.
    legacy_topic: Option<String>,
    /// The sink's own tables on shard 0 are known to exist.
    meta_ready: bool,
}

impl Writer {
    /// `pools`: one per URL of `urls`, in order. `legacy_topic`: see the
    /// field.
    pub fn new(
        urls: Vec<String>,
        pools: Vec<Pool>,
        stats: Arc<SinkStats>,
        legacy_topic: Option<String>,
    ) -> Writer {
        Writer {
            tables: vec![HashSet::new(); urls.len()],
            urls,
            pools,
            stats,
            legacy_topic,
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

    /// Write a batch (each partition's records in the order it holds
    /// them; topics and partitions interleaved in any way). Every event is
    /// checked against its topic's voided ranges and its partition's
    /// high-water mark first; see the crate doc.
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
        let mut run: Vec<TopicEvent<'_>> = Vec::new();
        let mut skipped = 0u64;
        for r in batch {
            // A message of a group older than one already written on its
            // partition is a replaced producer's: late.
            let part = (r.topic.clone(), r.partition);
            let h = high.get(&part).copied();
            let late = h.is_some_and(|h| r.group < h);
            if !late {
                high.insert(part, r.group);
            }
            let tomb = void.entry(r.topic.clone()).or_default();
            match &r.rec {
                TopicRecord::Event(ev) => {
                    if late || tomb.covers(r.lsn) {
                        skipped += 1;
                    } else {
                        run.push(TopicEvent {
                            topic: &r.topic,
                            lsn: r.lsn,
                            event: ev,
                        });
                    }
                }
                TopicRecord::Abort(a) => {
                    tomb.insert(a.covers.clone());
                    let range = AbortRange {
                        topic: r.topic.to_string(),
                        abort_lsn: r.lsn,
                        covers: a.covers.clone(),
                    };
                    if late {
                        late_aborts.push(range);
                    } else {
                        self.bulk(&run).await?;
                        run.clear();
                        self.abort(&range, a).await?;
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
        park(&self.pools[0], p).await
    }

    async fn ensure_meta(&mut self) -> Result<(), WriteError> {
        if self.meta_ready {
            return Ok(());
        }
        let mut conn = self.pools[0].get_conn().await.map_err(sql_err)?;
        for s in META_SCHEMA {
            conn.query_drop(*s).await.map_err(sql_err)?;
        }
        // Ranges kept before they named a topic were the one topic's of
        // the single-writer sink: a single-topic sink takes them as its
        // own. (A sink of several topics leaves them: they cannot be told
        // apart; cluster mode starts on a fresh topic per node.)
        if let Some(t) = &self.legacy_topic {
            conn.exec_drop(
                "UPDATE IGNORE flashd_aborts SET topic = ? WHERE topic = ''",
                (t.as_str(),),
            )
            .await
            .map_err(sql_err)?;
        }
        self.meta_ready = true;
        Ok(())
    }

    /// The groups written so far on the batch's partitions and the voided
    /// ranges that reach into the batch's LSNs of each topic, from shard 0.
    async fn load_marks(&mut self, batch: &[Rec]) -> Result<Marks, WriteError> {
        let mut conn = self.pools[0].get_conn().await.map_err(sql_err)?;
        let mut lsns: BTreeMap<Arc<str>, (u64, u64, BTreeSet<i32>)> = BTreeMap::new();
        for r in batch {
            let e = lsns
                .entry(r.topic.clone())
                .or_insert((u64::MAX, 0, BTreeSet::new()));
            e.0 = e.0.min(r.lsn);
            e.1 = e.1.max(r.lsn);
            e.2.insert(r.partition);
        }
        let mut high = BTreeMap::new();
        let mut void = HashMap::new();
        for (topic, (lo, hi, parts)) in lsns {
            let list = parts
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(",");
            let rows: Vec<(i32, u64)> = conn
                .exec(
                    format!("SELECT partition_id, group_lsn FROM flashd_sink_partitions WHERE topic = ? AND partition_id IN ({list})"),
                    (&*topic,),
                )
                .await
                .map_err(sql_err)?;
            for (p, g) in rows {
                high.insert((topic.clone(), p), g);
            }
            let ranges: Vec<(u64, u64)> = conn
                .exec(
                    "SELECT from_lsn, to_lsn FROM flashd_aborts WHERE topic = ? AND to_lsn > ? AND from_lsn <= ?",
                    (&*topic, lo, hi),
                )
                .await
                .map_err(sql_err)?;
            let mut t = Tombstones::default();
            for (f, to) in ranges {
                t.insert(f..to);
            }
            void.insert(topic, t);
        }
        Ok(Marks { high, void })
    }

    /// Everything of the batch is written: raise the partitions' marks and
    /// keep the ranges of late aborts.
    async fn save_marks(
        &mut self,
        before: &BTreeMap<Part, u64>,
        high: &BTreeMap<Part, u64>,
        late_aborts: &[AbortRange],
    ) -> Result<(), WriteError> {
        let raised: Vec<(&Part, u64)> = high
            .iter()
            .filter(|(p, l)| before.get(*p) != Some(*l))
            .map(|(p, l)| (p, *l))
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
        for ((topic, p), l) in raised {
            tx.exec_drop(
                "INSERT INTO flashd_sink_partitions (topic, partition_id, group_lsn) VALUES (?, ?, ?) \
                 ON DUPLICATE KEY UPDATE group_lsn = GREATEST(group_lsn, VALUES(group_lsn))",
                (&**topic, *p, l),
            )
            .await
            .map_err(sql_err)?;
        }
        tx.commit().await.map_err(sql_err)
    }

    /// Make sure the month tables of `orders` exist on their shards.
    async fn ensure_tables<'a>(
        &mut self,
        shards: impl Iterator<Item = (usize, &'a BTreeMap<OrderId, OrderRun<'a>>)>,
    ) -> Result<(), WriteError> {
        for (s, orders) in shards {
            let missing: BTreeSet<&str> = orders
                .values()
                .map(|r| r.table.as_str())
                .filter(|t| !self.tables[s].contains(*t))
                .collect();
            if missing.is_empty() {
                continue;
            }
            let mut conn = self.pools[s].get_conn().await.map_err(sql_err)?;
            for table in missing {
                conn.query_drop(format!(
                    "CREATE TABLE IF NOT EXISTS `{table}` LIKE orders_template"
                ))
                .await
                .map_err(sql_err)?;
                self.tables[s].insert(table.to_string());
            }
        }
        Ok(())
    }

    /// Write a run of ordinary events: every order shard's transaction at
    /// once (each commit waits for its server's log flush, and two shards'
    /// flushes overlap), then the sales on shard 0.
    async fn bulk(&mut self, run: &[TopicEvent<'_>]) -> Result<(), WriteError> {
        if run.is_empty() {
            return Ok(());
        }
        let rows = BatchRows::build(run, self.pools.len());
        self.ensure_tables(rows.orders.iter().enumerate()).await?;
        let pools = &self.pools;
        let writes = rows
            .orders
            .iter()
            .enumerate()
            .filter(|(_, o)| !o.is_empty())
            .map(|(s, o)| write_orders(&pools[s], o, None).map(move |r| r.map(|n| (s, n))));
        for (s, n) in futures_util::future::try_join_all(writes).await? {
            self.stats.rows[s].fetch_add(n, Ordering::Relaxed);
        }
        let n = write_sales(&self.pools, &rows.sales, None).await?;
        self.stats.rows[0].fetch_add(n, Ordering::Relaxed);
        Ok(())
    }

    /// Apply an abort of its topic: void the copies in its range of the
    /// orders its events name (on their shards), then of the sales' (on
    /// shard 0, where the range is kept in the same transaction).
    async fn abort(&mut self, range: &AbortRange, abort: &Abort) -> Result<(), WriteError> {
        let n = self.pools.len();
        let mut orders: Vec<BTreeMap<OrderId, OrderRun<'_>>> =
            (0..n).map(|_| BTreeMap::new()).collect();
        let mut sales: BTreeMap<ActivityId, Vec<TopicEvent<'_>>> = BTreeMap::new();
        for (_, ev) in &abort.events {
            sales.entry(ev.activity_id()).or_default();
            if let Some(o) = OrderRef::of(ev) {
                orders[shard_of(o.user_id, n)]
                    .entry(o.order_id)
                    .or_insert_with(|| OrderRun {
                        order: o,
                        table: order_table(o.order_id),
                        events: Vec::new(),
                    });
            }
        }
        self.ensure_tables(orders.iter().enumerate()).await?;
        let v = Voiding {
            topic: &range.topic,
            covers: &range.covers,
        };
        for (s, o) in orders.iter().enumerate().filter(|(_, o)| !o.is_empty()) {
            let rows = write_orders(&self.pools[s], o, Some(v)).await?;
            self.stats.rows[s].fetch_add(rows, Ordering::Relaxed);
        }
        let rows = write_sales(&self.pools, &sales, Some(range)).await?;
        self.stats.rows[0].fetch_add(rows, Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod cluster_tests;
