//! The MySQL schema the sink owns and its migration: on every shard the
//! sales (`activities`, read on shard 0), the order tables (one per month,
//! made `LIKE orders_template`), `order_events`, the copies of each
//! order's moves (`order_copies`) and what the shard's orders hold of each
//! sale (`sale_counters`); on shard 0 only, the sink's own tables (the
//! copies of each sale's creation, voided ranges, partitions' marks,
//! parked records). See the crate doc for what each row means.

use mysql_async::prelude::*;
use mysql_async::{Opts, OptsBuilder};

use crate::clock::now_ms;
use crate::placement::month_table;
use crate::upgrade::upgrade;
use crate::SinkError;

/// `order_events` as it is now: one row per move an order made.
pub(crate) const ORDER_EVENTS: &str = "CREATE TABLE IF NOT EXISTS order_events (
        order_id BIGINT UNSIGNED NOT NULL,
        kind VARCHAR(12) NOT NULL COMMENT 'created, paid or cancelled',
        activity_id INT UNSIGNED NOT NULL,
        user_id BIGINT UNSIGNED NOT NULL,
        reason VARCHAR(12) NOT NULL DEFAULT '',
        quantity INT UNSIGNED NOT NULL,
        at BIGINT UNSIGNED NOT NULL,
        topic VARCHAR(255) NOT NULL COMMENT 'topic of the least copy standing',
        lsn BIGINT UNSIGNED NOT NULL COMMENT 'its LSN in that topic',
        PRIMARY KEY (order_id, kind),
        KEY by_activity (activity_id)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4";

pub(crate) const ORDER_COPIES: &str = "CREATE TABLE IF NOT EXISTS order_copies (
        order_id BIGINT UNSIGNED NOT NULL,
        kind TINYINT UNSIGNED NOT NULL COMMENT '1 created, 2 paid, 3 cancelled',
        topic VARCHAR(255) NOT NULL COMMENT 'empty: written before copies were kept',
        lsn BIGINT UNSIGNED NOT NULL,
        voided TINYINT NOT NULL DEFAULT 0 COMMENT 'an abort of its topic undid it',
        PRIMARY KEY (order_id, kind, topic, lsn)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4";

pub(crate) const SALE_COUNTERS: &str = "CREATE TABLE IF NOT EXISTS sale_counters (
        activity_id INT UNSIGNED NOT NULL PRIMARY KEY,
        remaining BIGINT NOT NULL COMMENT 'what this shard''s orders hold of the sale',
        reserved BIGINT NOT NULL,
        sold BIGINT NOT NULL
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4";

/// Every shard's tables that `upgrade` may build from older ones: made
/// after it ran.
pub(crate) const SHARD_TABLES: &[&str] = &[ORDER_EVENTS, ORDER_COPIES, SALE_COUNTERS];

pub(crate) const SALE_COPIES: &str = "CREATE TABLE IF NOT EXISTS sale_copies (
        activity_id INT UNSIGNED NOT NULL,
        topic VARCHAR(255) NOT NULL COMMENT 'empty: written before copies were kept',
        lsn BIGINT UNSIGNED NOT NULL,
        voided TINYINT NOT NULL DEFAULT 0 COMMENT 'an abort of its topic undid it',
        PRIMARY KEY (activity_id, topic, lsn)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4";

pub(crate) const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS activities (
        id INT UNSIGNED NOT NULL PRIMARY KEY,
        sku_id VARCHAR(255) NOT NULL,
        name VARCHAR(255) NOT NULL,
        price_cents BIGINT UNSIGNED NOT NULL,
        stock BIGINT NOT NULL,
        remaining BIGINT NOT NULL,
        reserved BIGINT NOT NULL,
        sold BIGINT NOT NULL,
        start_at BIGINT UNSIGNED NOT NULL,
        end_at BIGINT UNSIGNED NOT NULL,
        per_user_limit INT UNSIGNED NOT NULL,
        created_at BIGINT UNSIGNED NOT NULL,
        void TINYINT NOT NULL DEFAULT 0
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
    "CREATE TABLE IF NOT EXISTS orders_template (
        order_id BIGINT UNSIGNED NOT NULL PRIMARY KEY,
        activity_id INT UNSIGNED NOT NULL,
        user_id BIGINT UNSIGNED NOT NULL,
        quantity INT UNSIGNED NOT NULL,
        amount_cents BIGINT UNSIGNED NOT NULL DEFAULT 0,
        request_id VARCHAR(128) NOT NULL DEFAULT '',
        status VARCHAR(12) NOT NULL,
        created_at BIGINT UNSIGNED NOT NULL,
        expires_at BIGINT UNSIGNED NOT NULL DEFAULT 0,
        updated_at BIGINT UNSIGNED NOT NULL,
        version BIGINT UNSIGNED NOT NULL COMMENT 'rank of the status: 0 VOID, 1 CREATED, 2 PAID or CANCELLED',
        KEY by_user (user_id),
        KEY by_activity (activity_id, status)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
];

/// The sink's own tables, on shard 0 only.
pub(crate) const META_SCHEMA: &[&str] = &[
    SALE_COPIES,
    "CREATE TABLE IF NOT EXISTS flashd_aborts (
        topic VARCHAR(255) NOT NULL DEFAULT '' COMMENT 'empty: written before topics were kept',
        abort_lsn BIGINT UNSIGNED NOT NULL,
        from_lsn BIGINT UNSIGNED NOT NULL,
        to_lsn BIGINT UNSIGNED NOT NULL COMMENT 'exclusive: LSNs from_lsn..to_lsn of the topic are void',
        PRIMARY KEY (topic, abort_lsn),
        KEY by_end (topic, to_lsn)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
    "CREATE TABLE IF NOT EXISTS flashd_sink_partitions (
        topic VARCHAR(255) NOT NULL,
        partition_id INT NOT NULL,
        group_lsn BIGINT UNSIGNED NOT NULL COMMENT 'highest group of the partition fully written',
        PRIMARY KEY (topic, partition_id)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
    "CREATE TABLE IF NOT EXISTS flashd_poison (
        id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
        topic VARCHAR(255) NOT NULL,
        partition_id INT NOT NULL,
        record_offset BIGINT NOT NULL,
        lsn BIGINT UNSIGNED NOT NULL,
        error TEXT NOT NULL,
        payload LONGBLOB NOT NULL COMMENT 'the record as in the topic (format 1)',
        parked_at BIGINT UNSIGNED NOT NULL,
        UNIQUE KEY at_offset (topic, partition_id, record_offset, lsn)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
];

/// Tables whose text columns must hold any UTF-8 (a 4-byte character in a
/// name is a customer's right, not a poison record): older schemas took
/// the server's default character set.
const TEXT_TABLES: &[&str] = &["activities", "orders_template", "order_events"];

/// Is `url` a MySQL URL that names a database?
pub fn check_url(url: &str) -> Result<(), SinkError> {
    let o = Opts::from_url(url).map_err(|e| SinkError::Url {
        url: url.to_string(),
        source: e,
    })?;
    match o.db_name() {
        Some(d) if !d.is_empty() => Ok(()),
        _ => Err(SinkError::NoDatabase {
            url: url.to_string(),
        }),
    }
}

/// Create each shard's database and tables (and this month's and next
/// month's order tables; the sink's own tables on shard 0), bring tables
/// of the single-writer layout to this one (`upgrade`), and widen tables
/// of an older schema to utf8mb4. Idempotent.
pub async fn migrate(shards: &[String]) -> Result<(), SinkError> {
    for (i, url) in shards.iter().enumerate() {
        let first = i == 0;
        let opts = Opts::from_url(url).map_err(|e| SinkError::Url {
            url: url.clone(),
            source: e,
        })?;
        let db = opts
            .db_name()
            .ok_or_else(|| SinkError::NoDatabase { url: url.clone() })?
            .to_string();
        let my_err = |e| SinkError::Mysql {
            url: url.clone(),
            source: e,
        };
        let server = Opts::from(OptsBuilder::from_opts(opts.clone()).db_name(None::<String>));
        let mut c = mysql_async::Conn::new(server).await.map_err(my_err)?;
        c.query_drop(format!(
            "CREATE DATABASE IF NOT EXISTS `{}` CHARACTER SET utf8mb4",
            db.replace('`', "``")
        ))
        .await
        .map_err(my_err)?;
        c.disconnect().await.map_err(my_err)?;
        let mut c = mysql_async::Conn::new(opts).await.map_err(my_err)?;
        for s in SCHEMA {
            c.query_drop(*s).await.map_err(my_err)?;
        }
        upgrade(&mut c, first).await.map_err(my_err)?;
        for s in SHARD_TABLES {
            c.query_drop(*s).await.map_err(my_err)?;
        }
        if first {
            for s in META_SCHEMA {
                c.query_drop(*s).await.map_err(my_err)?;
            }
        }
        // Tables made by an older schema in a 3-byte (or narrower)
        // character set: widen them (and every month's order table).
        let narrow: Vec<String> = c
            .exec(
                "SELECT TABLE_NAME FROM information_schema.TABLES t \
                 JOIN information_schema.COLLATION_CHARACTER_SET_APPLICABILITY c \
                   ON c.COLLATION_NAME = t.TABLE_COLLATION \
                 WHERE t.TABLE_SCHEMA = ? AND c.CHARACTER_SET_NAME <> 'utf8mb4'",
                (db.as_str(),),
            )
            .await
            .map_err(my_err)?;
        for t in narrow {
            if TEXT_TABLES.contains(&t.as_str()) || t.starts_with("orders_") {
                tracing::info!(db = %db, table = %t, "converting to utf8mb4");
                c.query_drop(format!(
                    "ALTER TABLE `{}` CONVERT TO CHARACTER SET utf8mb4",
                    t.replace('`', "``")
                ))
                .await
                .map_err(my_err)?;
            }
        }
        let now = now_ms();
        for ms in [now, now + 31 * 86_400_000] {
            c.query_drop(format!(
                "CREATE TABLE IF NOT EXISTS {} LIKE orders_template",
                month_table(ms)
            ))
            .await
            .map_err(my_err)?;
        }
        c.disconnect().await.map_err(my_err)?;
    }
    Ok(())
}
