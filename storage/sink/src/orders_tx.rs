//! One order shard's transaction: lock the orders' rows and copies, plan
//! each order's change (`fold::plan_order`), and write the rows, the
//! copies, the `order_events` rows and the shard's `sale_counters` deltas
//! together, so that a replay, or another sink writing the same orders
//! from another topic, finds the change made and makes it no more.
//!
//! Locks are taken in one order (month tables by name, orders by id, then
//! copies, then counters by sale), so two sinks' transactions on a shard
//! wait for each other rather than deadlock; a deadlock InnoDB still finds
//! is transient and retried.

use std::collections::{BTreeMap, HashMap};

use flashd_engine::{ActivityId, Counters, OrderId};
use mysql_async::prelude::*;
use mysql_async::{IsolationLevel, Pool, Transaction, TxOpts, Value};

use crate::classify::{sql_err, WriteError};
use crate::copies::{Copy, Move, Origin};
use crate::fold::{plan_order, OrderPlan, Voiding};
use crate::rows::{EventRow, OrderRow, OrderRun};
use crate::sql::{id_list, values_sql, ROWS_PER_STATEMENT};

/// Apply one shard's part of a run (`void`: `None`) or of an abort (the
/// orders its events name, with no events of their own, and `void`).
/// Returns the rows written.
pub(crate) async fn write_orders(
    pool: &Pool,
    orders: &BTreeMap<OrderId, OrderRun<'_>>,
    void: Option<Voiding<'_>>,
) -> Result<u64, WriteError> {
    let mut conn = pool.get_conn().await.map_err(sql_err)?;
    let mut tx = conn
        .start_transaction(locking_tx())
        .await
        .map_err(sql_err)?;
    let mut by_table: BTreeMap<&str, Vec<OrderId>> = BTreeMap::new();
    for (id, r) in orders {
        by_table.entry(r.table.as_str()).or_default().push(*id);
    }
    let mut stored = lock_rows(&mut tx, &by_table).await?;
    let mut fresh: HashMap<OrderId, OrderRow> = HashMap::new();
    // Orders seen for the first time get a row first, so that they are
    // locked like any other (an abort makes none: an order without a row
    // has nothing to undo). A sink inserting the same one meanwhile makes
    // ours wait, then find its row.
    if void.is_none() {
        let mut missing: BTreeMap<&str, Vec<OrderId>> = BTreeMap::new();
        for (table, ids) in &by_table {
            let m: Vec<OrderId> = ids
                .iter()
                .copied()
                .filter(|id| !stored.contains_key(id))
                .collect();
            if !m.is_empty() {
                missing.insert(table, m);
            }
        }
        // Rows this transaction inserted are its own, as built, with no
        // copies yet; where another sink's insert won, its row is read.
        let mut raced: BTreeMap<&str, Vec<OrderId>> = BTreeMap::new();
        for (table, ids) in &missing {
            for chunk in ids.chunks(ROWS_PER_STATEMENT) {
                let sql = values_sql(
                    &format!("INSERT IGNORE INTO `{table}` ({})", OrderRow::COLUMNS),
                    OrderRow::WIDTH,
                    chunk.len(),
                    "",
                );
                let params: Vec<Value> = chunk
                    .iter()
                    .flat_map(|id| OrderRow::placeholder(orders[id].order).values())
                    .collect();
                tx.exec_drop(sql, params).await.map_err(sql_err)?;
                if tx.affected_rows() == chunk.len() as u64 {
                    for id in chunk {
                        fresh.insert(*id, OrderRow::placeholder(orders[id].order));
                    }
                } else {
                    raced.entry(table).or_default().extend_from_slice(chunk);
                }
            }
        }
        stored.extend(lock_rows(&mut tx, &raced).await?);
    }
    // In id order, as every lock here is taken.
    let mut ids: Vec<OrderId> = stored.keys().copied().collect();
    ids.sort_unstable();
    let copies = read_copies(&mut tx, &ids).await?;
    stored.extend(fresh);
    let mut plans: Vec<(OrderId, OrderPlan)> = Vec::new();
    for (id, row) in &stored {
        let r = &orders[id];
        let none = Vec::new();
        let p = plan_order(
            r.order,
            row,
            copies.get(id).unwrap_or(&none),
            &r.events,
            void,
        );
        plans.push((*id, p));
    }
    plans.sort_by_key(|(id, _)| *id);
    let n = write_plans(&mut tx, orders, &plans, void, &ids).await?;
    tx.commit().await.map_err(sql_err)?;
    Ok(n)
}

/// The transactions of order shards: `READ COMMITTED`, so that locking
/// reads lock the rows they find and no gaps (an order's row, taken
/// first, serializes everything about the order; gap locks would only
/// make two sinks inserting neighbouring orders deadlock).
pub(crate) fn locking_tx() -> TxOpts {
    let mut o = TxOpts::default();
    o.with_isolation_level(IsolationLevel::ReadCommitted);
    o
}

/// The rows of `by_table`'s orders that exist, locked.
async fn lock_rows(
    tx: &mut Transaction<'_>,
    by_table: &BTreeMap<&str, Vec<OrderId>>,
) -> Result<HashMap<OrderId, OrderRow>, WriteError> {
    let mut stored = HashMap::new();
    for (table, ids) in by_table {
        for chunk in ids.chunks(ROWS_PER_STATEMENT) {
            let rows: Vec<mysql_async::Row> = tx
                .query(format!(
                    "SELECT {} FROM `{table}` WHERE order_id IN ({}) ORDER BY order_id FOR UPDATE",
                    OrderRow::COLUMNS,
                    id_list(chunk)
                ))
                .await
                .map_err(sql_err)?;
            for r in &rows {
                let row = OrderRow::from_row(r).ok_or_else(|| WriteError {
                    class: crate::classify::Class::Permanent,
                    msg: format!("{table}: an order row this sink cannot read: {r:?}"),
                })?;
                stored.insert(row.order_id, row);
            }
        }
    }
    Ok(stored)
}

/// The copies of `ids`, locked.
async fn read_copies(
    tx: &mut Transaction<'_>,
    ids: &[OrderId],
) -> Result<HashMap<OrderId, Vec<Copy>>, WriteError> {
    let mut out: HashMap<OrderId, Vec<Copy>> = HashMap::new();
    for chunk in ids.chunks(ROWS_PER_STATEMENT) {
        let rows: Vec<(OrderId, u8, String, u64, u8)> = tx
            .query(format!(
                "SELECT order_id, kind, topic, lsn, voided FROM order_copies WHERE order_id IN ({}) ORDER BY order_id FOR UPDATE",
                id_list(chunk)
            ))
            .await
            .map_err(sql_err)?;
        for (id, kind, topic, lsn, voided) in rows {
            let Some(mv) = Move::from_code(kind) else {
                continue;
            };
            out.entry(id).or_default().push(Copy {
                mv,
                at: Origin { topic, lsn },
                voided: voided != 0,
            });
        }
    }
    Ok(out)
}

/// Write what the plans say; the rows written.
async fn write_plans(
    tx: &mut Transaction<'_>,
    orders: &BTreeMap<OrderId, OrderRun<'_>>,
    plans: &[(OrderId, OrderPlan)],
    void: Option<Voiding<'_>>,
    ids: &[OrderId],
) -> Result<u64, WriteError> {
    let mut written = 0u64;
    if let Some(v) = void {
        for chunk in ids.chunks(ROWS_PER_STATEMENT) {
            tx.exec_drop(
                format!("UPDATE order_copies SET voided = 1 WHERE order_id IN ({}) AND topic = ? AND lsn >= ? AND lsn < ?", id_list(chunk)),
                (v.topic, v.covers.start, v.covers.end),
            )
            .await
            .map_err(sql_err)?;
        }
    }
    let copies: Vec<(OrderId, &Copy)> = plans
        .iter()
        .flat_map(|(id, p)| p.new_copies.iter().map(move |c| (*id, c)))
        .collect();
    for chunk in copies.chunks(ROWS_PER_STATEMENT) {
        let sql = values_sql(
            "INSERT IGNORE INTO order_copies (order_id, kind, topic, lsn, voided)",
            5,
            chunk.len(),
            "",
        );
        let params: Vec<Value> = chunk
            .iter()
            .flat_map(|(id, c)| {
                [
                    Value::from(*id),
                    Value::from(c.mv.code()),
                    Value::from(c.at.topic.as_str()),
                    Value::from(c.at.lsn),
                    Value::from(0u8),
                ]
            })
            .collect();
        tx.exec_drop(sql, params).await.map_err(sql_err)?;
        written += chunk.len() as u64;
    }
    let mut rows_by_table: BTreeMap<&str, Vec<&OrderRow>> = BTreeMap::new();
    for (id, p) in plans {
        if let Some(r) = &p.row {
            rows_by_table
                .entry(orders[id].table.as_str())
                .or_default()
                .push(r);
        }
    }
    for (table, rows) in rows_by_table {
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            let sql = values_sql(
                &format!("INSERT INTO `{table}` ({})", OrderRow::COLUMNS),
                OrderRow::WIDTH,
                chunk.len(),
                " ON DUPLICATE KEY UPDATE amount_cents = VALUES(amount_cents), request_id = VALUES(request_id), \
                 status = VALUES(status), created_at = VALUES(created_at), expires_at = VALUES(expires_at), \
                 updated_at = VALUES(updated_at), version = VALUES(version)",
            );
            let params: Vec<Value> = chunk.iter().flat_map(|r| r.values()).collect();
            tx.exec_drop(sql, params).await.map_err(sql_err)?;
            written += chunk.len() as u64;
        }
    }
    let events: Vec<&EventRow> = plans.iter().flat_map(|(_, p)| &p.events).collect();
    for chunk in events.chunks(ROWS_PER_STATEMENT) {
        let sql = values_sql(
            &format!("INSERT INTO order_events ({})", EventRow::COLUMNS),
            EventRow::WIDTH,
            chunk.len(),
            " ON DUPLICATE KEY UPDATE topic = VALUES(topic), lsn = VALUES(lsn)",
        );
        let params: Vec<Value> = chunk.iter().flat_map(|r| r.values()).collect();
        tx.exec_drop(sql, params).await.map_err(sql_err)?;
        written += chunk.len() as u64;
    }
    // Aborts only: moves renamed or gone (rare, one statement each).
    for (id, p) in plans {
        for (mv, at) in &p.renamed {
            tx.exec_drop(
                "UPDATE order_events SET topic = ?, lsn = ? WHERE order_id = ? AND kind = ?",
                (at.topic.as_str(), at.lsn, *id, mv.kind()),
            )
            .await
            .map_err(sql_err)?;
            written += 1;
        }
        for mv in &p.gone {
            tx.exec_drop(
                "DELETE FROM order_events WHERE order_id = ? AND kind = ?",
                (*id, mv.kind()),
            )
            .await
            .map_err(sql_err)?;
            written += 1;
        }
    }
    let mut deltas: BTreeMap<ActivityId, Counters> = BTreeMap::new();
    for (id, p) in plans {
        if p.delta != Counters::ZERO {
            *deltas.entry(orders[id].order.activity_id).or_default() += p.delta;
        }
    }
    let deltas: Vec<(ActivityId, Counters)> = deltas
        .into_iter()
        .filter(|(_, d)| *d != Counters::ZERO)
        .collect();
    for chunk in deltas.chunks(ROWS_PER_STATEMENT) {
        let sql = values_sql(
            "INSERT INTO sale_counters (activity_id, remaining, reserved, sold)",
            4,
            chunk.len(),
            " ON DUPLICATE KEY UPDATE remaining = remaining + VALUES(remaining), \
             reserved = reserved + VALUES(reserved), sold = sold + VALUES(sold)",
        );
        let params: Vec<Value> = chunk
            .iter()
            .flat_map(|(a, d)| {
                [
                    Value::from(*a),
                    Value::from(d.remaining),
                    Value::from(d.reserved),
                    Value::from(d.sold),
                ]
            })
            .collect();
        tx.exec_drop(sql, params).await.map_err(sql_err)?;
        written += chunk.len() as u64;
    }
    Ok(written)
}
