//! Shard 0's transaction for sales: keep the copies of their creations
//! and of an admin's changes of them (added by a run, voided by an
//! abort), and recompute each sale's row whole from them and from what
//! every shard's orders hold of it (`fold::sale_row`), with an abort's
//! voided range kept in the same transaction.
//!
//! Recomputed, never incremented, so a replay or a crash between the
//! shards' commits and this one cannot count anything twice. The sale's
//! row is locked first: of two sinks recomputing one sale, the later reads
//! every shard after the earlier committed, so the last write is made from
//! every order change committed before it began (each sink recomputes
//! after its own order shards commit).

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;

use flashd_engine::{ActivityId, Counters, Event};
use mysql_async::prelude::*;
use mysql_async::{Pool, Transaction, Value};

use crate::classify::{sql_err, WriteError};
use crate::copies::Origin;
use crate::fold::{sale_row, SaleCopies, Voiding};
use crate::orders_tx::locking_tx;
use crate::rows::{ActivityRow, TopicEvent};
use crate::sale_changes::{Change, ChangeCopy};
use crate::sql::{id_list, values_sql, ROWS_PER_STATEMENT};

/// An abort's voided range, as kept in `flashd_aborts`.
#[derive(Debug, Clone)]
pub(crate) struct AbortRange {
    pub topic: String,
    pub abort_lsn: u64,
    pub covers: Range<u64>,
}

/// Recompute `sales` (each with the copies of its creation and of its
/// changes in the run), voiding first the copies `abort` voids and keeping
/// its range. Returns the rows written.
pub(crate) async fn write_sales(
    pools: &[Pool],
    sales: &BTreeMap<ActivityId, Vec<TopicEvent<'_>>>,
    abort: Option<&AbortRange>,
) -> Result<u64, WriteError> {
    if sales.is_empty() && abort.is_none() {
        return Ok(0);
    }
    let ids: Vec<ActivityId> = sales.keys().copied().collect();
    let mut conn = pools[0].get_conn().await.map_err(sql_err)?;
    let mut tx = conn
        .start_transaction(locking_tx())
        .await
        .map_err(sql_err)?;
    let mut written = 0u64;
    let mut stored = lock_sales(&mut tx, &ids).await?;
    // An abort names every sale its events touched, whether or not those
    // events ever reached the topic. A sale with no row has nothing here
    // to void: its creation never arrived (the write that failed was its
    // creation's), or it arrives later and the row is then computed whole
    // from what stands. A row made for it now would be a sale no one
    // created: described by nothing and, with no copy of its creation
    // kept, never void (the chaos soak, seed 1347520705).
    let ids: Vec<ActivityId> = if abort.is_some() {
        ids.into_iter()
            .filter(|id| stored.contains_key(id))
            .collect()
    } else {
        ids
    };
    // A sale without a row yet (its orders may come before its creation)
    // gets one, then is locked like the others.
    let missing: Vec<ActivityId> = ids
        .iter()
        .copied()
        .filter(|id| !stored.contains_key(id))
        .collect();
    for chunk in missing.chunks(ROWS_PER_STATEMENT) {
        let sql = values_sql(
            &format!("INSERT IGNORE INTO activities ({})", ActivityRow::COLUMNS),
            ActivityRow::WIDTH,
            chunk.len(),
            "",
        );
        let params: Vec<Value> = chunk
            .iter()
            .flat_map(|id| ActivityRow::placeholder(*id).values())
            .collect();
        tx.exec_drop(sql, params).await.map_err(sql_err)?;
    }
    stored.extend(lock_sales(&mut tx, &missing).await?);
    if let Some(a) = abort {
        let v = Voiding {
            topic: &a.topic,
            covers: &a.covers,
        };
        for chunk in ids.chunks(ROWS_PER_STATEMENT) {
            tx.exec_drop(
                format!("UPDATE sale_copies SET voided = 1 WHERE activity_id IN ({}) AND topic = ? AND lsn >= ? AND lsn < ?", id_list(chunk)),
                (v.topic, v.covers.start, v.covers.end),
            )
            .await
            .map_err(sql_err)?;
        }
    }
    let changes_before = sale_changes(&mut tx, &ids).await?;
    let mut changes = changes_before.clone();
    if let Some(a) = abort {
        for c in changes.values_mut().flatten() {
            if c.at.topic == a.topic && a.covers.contains(&c.at.lsn) {
                c.voided = true;
            }
        }
    }
    let mut new_changes: Vec<(ActivityId, &ChangeCopy)> = Vec::new();
    for te in sales.values().flatten() {
        let Some((id, change)) = Change::of(te.event) else {
            continue;
        };
        let kept = changes.entry(id).or_default();
        // A copy kept already (a replay) is not added again.
        if !kept
            .iter()
            .any(|c| c.at.topic == te.topic && c.at.lsn == te.lsn)
        {
            kept.push(ChangeCopy {
                at: te.origin(),
                change,
                voided: false,
            });
        }
    }
    for (id, kept) in &changes {
        let before = changes_before.get(id).map_or(0, Vec::len);
        new_changes.extend(kept[before..].iter().map(|c| (*id, c)));
    }
    if let Some(a) = abort {
        for chunk in ids.chunks(ROWS_PER_STATEMENT) {
            tx.exec_drop(
                format!("UPDATE sale_changes SET voided = 1 WHERE activity_id IN ({}) AND topic = ? AND lsn >= ? AND lsn < ?", id_list(chunk)),
                (a.topic.as_str(), a.covers.start, a.covers.end),
            )
            .await
            .map_err(sql_err)?;
        }
    }
    for chunk in new_changes.chunks(ROWS_PER_STATEMENT) {
        let sql = values_sql(
            "INSERT IGNORE INTO sale_changes (activity_id, topic, lsn, kind, added, start_at, end_at, prev_start_at, prev_end_at, voided)",
            10,
            chunk.len(),
            "",
        );
        let params: Vec<Value> = chunk
            .iter()
            .flat_map(|(id, c)| {
                let (added, [start_at, end_at, prev_start_at, prev_end_at]) = c.change.columns();
                [
                    Value::from(*id),
                    Value::from(c.at.topic.as_str()),
                    Value::from(c.at.lsn),
                    Value::from(c.change.code()),
                    Value::from(added),
                    Value::from(start_at),
                    Value::from(end_at),
                    Value::from(prev_start_at),
                    Value::from(prev_end_at),
                    Value::from(0u8),
                ]
            })
            .collect();
        tx.exec_drop(sql, params).await.map_err(sql_err)?;
        written += chunk.len() as u64;
    }
    let creations: Vec<&TopicEvent<'_>> = sales
        .values()
        .flatten()
        .filter(|te| matches!(te.event, Event::ActivityCreated { .. }))
        .collect();
    for chunk in creations.chunks(ROWS_PER_STATEMENT) {
        let sql = values_sql(
            "INSERT IGNORE INTO sale_copies (activity_id, topic, lsn, voided)",
            4,
            chunk.len(),
            "",
        );
        let params: Vec<Value> = chunk
            .iter()
            .flat_map(|te| {
                [
                    Value::from(te.event.activity_id()),
                    Value::from(te.topic),
                    Value::from(te.lsn),
                    Value::from(0u8),
                ]
            })
            .collect();
        tx.exec_drop(sql, params).await.map_err(sql_err)?;
        written += chunk.len() as u64;
    }
    let copies = sale_copies(&mut tx, &ids).await?;
    let held = held(pools, &mut tx, &ids).await?;
    let mut changed: Vec<ActivityRow> = Vec::new();
    for (id, before) in &stored {
        // Every copy describes the sale alike; the least one is taken.
        let creation = sales[id]
            .iter()
            .filter(|te| matches!(te.event, Event::ActivityCreated { .. }))
            .min_by(|a, b| (a.topic, a.lsn).cmp(&(b.topic, b.lsn)))
            .map(|te| te.event);
        let after = sale_row(
            before,
            creation,
            copies.get(id).copied().unwrap_or_default(),
            held.get(id).copied().unwrap_or_default(),
            changes_before.get(id).map_or(&[], Vec::as_slice),
            changes.get(id).map_or(&[], Vec::as_slice),
        );
        if after != *before {
            changed.push(after);
        }
    }
    for chunk in changed.chunks(ROWS_PER_STATEMENT) {
        let sql = values_sql(
            &format!("INSERT INTO activities ({})", ActivityRow::COLUMNS),
            ActivityRow::WIDTH,
            chunk.len(),
            " ON DUPLICATE KEY UPDATE sku_id=VALUES(sku_id), name=VALUES(name), price_cents=VALUES(price_cents), stock=VALUES(stock), remaining=VALUES(remaining), reserved=VALUES(reserved), sold=VALUES(sold), start_at=VALUES(start_at), end_at=VALUES(end_at), per_user_limit=VALUES(per_user_limit), created_at=VALUES(created_at), void=VALUES(void)",
        );
        let params: Vec<Value> = chunk.iter().flat_map(|a| a.values()).collect();
        tx.exec_drop(sql, params).await.map_err(sql_err)?;
        written += chunk.len() as u64;
    }
    if let Some(a) = abort {
        insert_abort(&mut tx, a).await?;
        written += 1;
    }
    tx.commit().await.map_err(sql_err)?;
    Ok(written)
}

/// The rows of `ids` that exist, locked.
async fn lock_sales(
    tx: &mut Transaction<'_>,
    ids: &[ActivityId],
) -> Result<BTreeMap<ActivityId, ActivityRow>, WriteError> {
    let mut stored = BTreeMap::new();
    for chunk in ids.chunks(ROWS_PER_STATEMENT) {
        let rows: Vec<mysql_async::Row> = tx
            .query(format!(
                "SELECT {} FROM activities WHERE id IN ({}) ORDER BY id FOR UPDATE",
                ActivityRow::COLUMNS,
                id_list(chunk)
            ))
            .await
            .map_err(sql_err)?;
        for r in &rows {
            let a = ActivityRow::from_row(r);
            stored.insert(a.id, a);
        }
    }
    Ok(stored)
}

/// Keep an abort's voided range (idempotent).
pub(crate) async fn insert_abort(
    tx: &mut Transaction<'_>,
    a: &AbortRange,
) -> Result<(), WriteError> {
    tx.exec_drop(
        "INSERT IGNORE INTO flashd_aborts (topic, abort_lsn, from_lsn, to_lsn) VALUES (?, ?, ?, ?)",
        (a.topic.as_str(), a.abort_lsn, a.covers.start, a.covers.end),
    )
    .await
    .map_err(sql_err)
}

/// The kept copies of the changes of `ids`, locked (the sale's row lock
/// already keeps other writers out; this reads what they committed).
async fn sale_changes(
    tx: &mut Transaction<'_>,
    ids: &[ActivityId],
) -> Result<BTreeMap<ActivityId, Vec<ChangeCopy>>, WriteError> {
    type ChangeRow = (ActivityId, String, u64, u8, u64, u64, u64, u64, u64, u8);
    let mut out: BTreeMap<ActivityId, Vec<ChangeCopy>> = BTreeMap::new();
    for chunk in ids.chunks(ROWS_PER_STATEMENT) {
        let rows: Vec<ChangeRow> = tx
            .query(format!(
                "SELECT activity_id, topic, lsn, kind, added, start_at, end_at, prev_start_at, prev_end_at, voided FROM sale_changes WHERE activity_id IN ({}) FOR UPDATE",
                id_list(chunk)
            ))
            .await
            .map_err(sql_err)?;
        for (id, topic, lsn, kind, added, start_at, end_at, prev_start_at, prev_end_at, voided) in
            rows
        {
            // A kind this sink never writes is left out: it changes nothing.
            let Some(change) =
                Change::from_columns(kind, added, [start_at, end_at, prev_start_at, prev_end_at])
            else {
                continue;
            };
            out.entry(id).or_default().push(ChangeCopy {
                at: Origin { topic, lsn },
                change,
                voided: voided != 0,
            });
        }
    }
    Ok(out)
}

async fn sale_copies(
    tx: &mut Transaction<'_>,
    ids: &[ActivityId],
) -> Result<HashMap<ActivityId, SaleCopies>, WriteError> {
    let mut out = HashMap::new();
    for chunk in ids.chunks(ROWS_PER_STATEMENT) {
        let rows: Vec<(ActivityId, u64, u64)> = tx
            .query(format!(
                "SELECT activity_id, COUNT(*), CAST(SUM(voided = 0) AS UNSIGNED) FROM sale_copies WHERE activity_id IN ({}) GROUP BY activity_id",
                id_list(chunk)
            ))
            .await
            .map_err(sql_err)?;
        for (id, kept, standing) in rows {
            out.insert(id, SaleCopies { kept, standing });
        }
    }
    Ok(out)
}

/// What every shard's orders hold of `ids`: shard 0's read locked in the
/// transaction (it waits for an order transaction of the shard still
/// writing them), the others' as last committed.
async fn held(
    pools: &[Pool],
    tx: &mut Transaction<'_>,
    ids: &[ActivityId],
) -> Result<HashMap<ActivityId, Counters>, WriteError> {
    let mut out: HashMap<ActivityId, Counters> = HashMap::new();
    let mut add = |rows: Vec<(ActivityId, i64, i64, i64)>| {
        for (id, remaining, reserved, sold) in rows {
            *out.entry(id).or_default() += Counters {
                remaining,
                reserved,
                sold,
            };
        }
    };
    for chunk in ids.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "SELECT activity_id, remaining, reserved, sold FROM sale_counters WHERE activity_id IN ({})",
            id_list(chunk)
        );
        add(tx
            .query(format!("{sql} LOCK IN SHARE MODE"))
            .await
            .map_err(sql_err)?);
        for pool in &pools[1..] {
            let mut c = pool.get_conn().await.map_err(sql_err)?;
            add(c.query(sql.as_str()).await.map_err(sql_err)?);
        }
    }
    Ok(out)
}
