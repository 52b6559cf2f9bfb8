//! Bringing a shard written by the single-writer sink (rows guarded by
//! LSNs, `order_events` keyed by LSN, no copies) to the layout of the
//! crate doc, in place and restartably: the new tables are built under
//! scratch names from the order rows and renamed in one atomic `RENAME
//! TABLE`, so a migration stopped halfway leaves the old layout whole and
//! simply runs again.
//!
//! What the old rows say is taken as it stands: each order's status gives
//! its standing moves (one copy each, of topic `''`: written before
//! copies were kept, so no later abort voids them; an abort only ever
//! follows its failed group within one process), its holding goes into
//! the shard's `sale_counters`, and the old `order_events` rows of moves
//! that stand become the new ones; the old table stays as
//! `order_events_lsn`.

use mysql_async::prelude::*;
use mysql_async::Conn;

use crate::schema::{ORDER_COPIES, ORDER_EVENTS, SALE_COUNTERS};

const SCRATCH: &str = "flashd_upgrade_";

/// Upgrade one shard (`first`: shard 0, which also holds the sales and
/// the sink's own tables). Idempotent; a fresh shard gets empty tables.
pub(crate) async fn upgrade(c: &mut Conn, first: bool) -> Result<(), mysql_async::Error> {
    if first {
        sales(c).await?;
    }
    if table_exists(c, "order_copies").await? {
        return Ok(());
    }
    let scratch = |t: &str| format!("{SCRATCH}{t}");
    for (t, ddl) in [
        ("order_copies", ORDER_COPIES),
        ("sale_counters", SALE_COUNTERS),
        ("order_events", ORDER_EVENTS),
    ] {
        c.query_drop(format!("DROP TABLE IF EXISTS {}", scratch(t)))
            .await?;
        c.query_drop(ddl.replacen(t, &scratch(t), 1)).await?;
    }
    let tables: Vec<String> = c
        .query("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME LIKE 'orders\\_2%'")
        .await?;
    for t in &tables {
        for (kind, statuses) in [
            (1, "'CREATED','PAID','CANCELLED'"),
            (2, "'PAID'"),
            (3, "'CANCELLED'"),
        ] {
            c.query_drop(format!(
                "INSERT IGNORE INTO {} (order_id, kind, topic, lsn, voided) \
                 SELECT order_id, {kind}, '', version, 0 FROM `{t}` WHERE status IN ({statuses})",
                scratch("order_copies")
            ))
            .await?;
        }
        // `flashd_engine::fold::holding` of each status, summed.
        c.query_drop(format!(
            "INSERT INTO {} (activity_id, remaining, reserved, sold) \
             SELECT activity_id, -SUM(IF(status IN ('CREATED','PAID'), quantity, 0)), \
                    SUM(IF(status = 'CREATED', quantity, 0)), SUM(IF(status = 'PAID', quantity, 0)) \
             FROM `{t}` GROUP BY activity_id \
             ON DUPLICATE KEY UPDATE remaining = remaining + VALUES(remaining), \
               reserved = reserved + VALUES(reserved), sold = sold + VALUES(sold)",
            scratch("sale_counters")
        ))
        .await?;
    }
    let legacy_events = column_exists(c, "order_events", "seq").await?;
    let mut renames = vec![
        format!("{} TO order_copies", scratch("order_copies")),
        format!("{} TO sale_counters", scratch("sale_counters")),
    ];
    if legacy_events {
        // The least copy of each standing move, as the writer names it.
        c.query_drop(format!(
            "INSERT IGNORE INTO {} (order_id, kind, activity_id, user_id, reason, quantity, at, topic, lsn) \
             SELECT e.order_id, e.kind, e.activity_id, e.user_id, e.reason, e.quantity, e.at, '', e.lsn \
             FROM order_events e JOIN {} c ON c.order_id = e.order_id \
               AND c.kind = CASE e.kind WHEN 'created' THEN 1 WHEN 'paid' THEN 2 WHEN 'cancelled' THEN 3 END \
             ORDER BY e.lsn",
            scratch("order_events"),
            scratch("order_copies")
        ))
        .await?;
        renames.push("order_events TO order_events_lsn".into());
        renames.push(format!("{} TO order_events", scratch("order_events")));
    } else {
        c.query_drop(format!("DROP TABLE {}", scratch("order_events")))
            .await?;
    }
    c.query_drop(format!("RENAME TABLE {}", renames.join(", ")))
        .await?;
    for t in &tables {
        c.query_drop(format!(
            "UPDATE `{t}` SET version = CASE status WHEN 'VOID' THEN 0 WHEN 'CREATED' THEN 1 ELSE 2 END"
        ))
        .await?;
    }
    if !tables.is_empty() {
        tracing::info!(
            tables = tables.len(),
            legacy_events,
            "sink: shard upgraded to order copies (old order_events kept as order_events_lsn)"
        );
    }
    Ok(())
}

/// Shard 0: the sales' creation copies from `activities`, voided ranges
/// keyed by topic, and `activities.version` (an LSN) gone.
async fn sales(c: &mut Conn) -> Result<(), mysql_async::Error> {
    if table_exists(c, "activities").await? && !table_exists(c, "sale_copies").await? {
        let s = format!("{SCRATCH}sale_copies");
        c.query_drop(format!("DROP TABLE IF EXISTS {s}")).await?;
        c.query_drop(crate::schema::SALE_COPIES.replacen("sale_copies", &s, 1))
            .await?;
        c.query_drop(format!(
            "INSERT INTO {s} (activity_id, topic, lsn, voided) SELECT id, '', 0, void FROM activities"
        ))
        .await?;
        c.query_drop(format!("RENAME TABLE {s} TO sale_copies"))
            .await?;
    }
    if column_exists(c, "activities", "version").await? {
        c.query_drop("ALTER TABLE activities DROP COLUMN version")
            .await?;
    }
    if table_exists(c, "flashd_aborts").await?
        && !column_exists(c, "flashd_aborts", "topic").await?
    {
        c.query_drop(
            "ALTER TABLE flashd_aborts ADD COLUMN topic VARCHAR(255) NOT NULL DEFAULT '' FIRST, \
             DROP PRIMARY KEY, ADD PRIMARY KEY (topic, abort_lsn), \
             DROP INDEX by_end, ADD KEY by_end (topic, to_lsn)",
        )
        .await?;
    }
    Ok(())
}

async fn table_exists(c: &mut Conn, t: &str) -> Result<bool, mysql_async::Error> {
    let n: Option<u64> = c
        .exec_first(
            "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
            (t,),
        )
        .await?;
    Ok(n.unwrap_or(0) > 0)
}

async fn column_exists(c: &mut Conn, t: &str, col: &str) -> Result<bool, mysql_async::Error> {
    let n: Option<u64> = c
        .exec_first(
            "SELECT COUNT(*) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND COLUMN_NAME = ?",
            (t, col),
        )
        .await?;
    Ok(n.unwrap_or(0) > 0)
}
