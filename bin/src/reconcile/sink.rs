//! The sink's side (with `[[mysql.shards]]`): do the MySQL order tables
//! say what the nodes' logs say? Orders the sink has not written yet, or
//! has written at an earlier status, are *lag* (it writes behind the
//! log); anything else is *disagreement*: drift.
//!
//! It reads only the order tables' `order_id`, `activity_id` and `status`
//! (every `orders_YYYYMM` of every shard), the columns that every version
//! of the sink's schema has; the sales' counters in `activities` are the
//! sink's own fold of the same orders and are not compared.

use std::collections::BTreeMap;

use flashd_engine::{ActivityId, OrderId};
use flashd_redis::SaleState;
use mysql_async::prelude::*;
use serde::Serialize;

use super::compare::{Difference, LISTED_PER_KIND_MAX};

/// The status an order table row holds for an order whose creation an
/// abort undid: the row stays, the order is gone.
const VOID: &str = "VOID";

/// Orders per status, as one side holds them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StatusCounts {
    pub created: u64,
    pub paid: u64,
    pub cancelled: u64,
    /// Rows of orders an abort undid (the sink's side only).
    pub void: u64,
}

impl StatusCounts {
    fn add(&mut self, status: &str) {
        match status {
            "CREATED" => self.created += 1,
            "PAID" => self.paid += 1,
            "CANCELLED" => self.cancelled += 1,
            _ => self.void += 1,
        }
    }
}

/// One sale: the logs against the sink.
#[derive(Debug, Clone, Serialize)]
pub struct SinkSale {
    pub logs: StatusCounts,
    pub sink: StatusCounts,
    /// Orders the sink has not written, or has at an earlier status than
    /// the logs (`CREATED` where the logs say paid or cancelled).
    pub lag: u64,
    pub disagreements: Vec<Difference>,
    pub unlisted: usize,
}

impl SinkSale {
    pub fn agrees(&self) -> bool {
        self.disagreements.is_empty()
    }
}

/// The order tables' rows of the sales asked for.
#[derive(Debug, Default)]
pub struct Rows {
    /// (activity id, status) by order id.
    by_order: BTreeMap<OrderId, (ActivityId, String)>,
    /// Order ids by sale.
    by_sale: BTreeMap<ActivityId, Vec<OrderId>>,
}

/// Read the order rows of sale `only` (every sale when `None`) from every shard: `(rows, problems)`,
/// where problems are orders found twice (on two shards or in two month
/// tables). `Err` of a message naming the shard when one cannot be read.
pub fn read(shards: &[String], only: Option<ActivityId>) -> Result<(Rows, Vec<String>), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("a runtime for the MySQL client: {e}"))?;
    rt.block_on(read_async(shards, only))
}

async fn read_async(
    shards: &[String],
    only: Option<ActivityId>,
) -> Result<(Rows, Vec<String>), String> {
    let mut rows = Rows::default();
    let mut twice = Vec::new();
    let filter = only.map_or(String::new(), |s| format!(" WHERE activity_id = {s}"));
    for (i, url) in shards.iter().enumerate() {
        let at =
            |e: mysql_async::Error| format!("shard {i} ({}): {e}", crate::migrate::redact(url));
        let opts = mysql_async::Opts::from_url(url).map_err(|e| format!("shard {i}: {e}"))?;
        let mut c = mysql_async::Conn::new(opts).await.map_err(at)?;
        let tables: Vec<String> = c
            .query(
                "SELECT TABLE_NAME FROM information_schema.TABLES \
                 WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME LIKE 'orders\\_%'",
            )
            .await
            .map_err(at)?;
        for t in tables.iter().filter(|t| is_month_table(t)) {
            let got: Vec<(u64, u32, String)> = c
                .query(format!(
                    "SELECT order_id, activity_id, status FROM `{t}`{filter}"
                ))
                .await
                .map_err(at)?;
            for (order, sale, status) in got {
                match rows.by_order.insert(order, (sale, status.clone())) {
                    Some((s0, st0)) => twice.push(format!(
                        "order {order} is in two rows: sale {s0} {st0}, and sale {sale} {status} in {t} of shard {i}"
                    )),
                    None => rows.by_sale.entry(sale).or_default().push(order),
                }
            }
        }
        c.disconnect().await.map_err(at)?;
    }
    Ok((rows, twice))
}

/// `orders_YYYYMM`: a month's order table (not `orders_template`).
fn is_month_table(t: &str) -> bool {
    t.strip_prefix("orders_")
        .is_some_and(|d| d.len() == 6 && d.bytes().all(|b| b.is_ascii_digit()))
}

/// Compare sale `sale`'s orders in the logs' state `logs` with the rows.
pub fn compare(sale: ActivityId, logs: &SaleState, rows: &Rows) -> SinkSale {
    let mut out = SinkSale {
        logs: StatusCounts::default(),
        sink: StatusCounts::default(),
        lag: 0,
        disagreements: Vec::new(),
        unlisted: 0,
    };
    let mut disagree = |order: OrderId, detail: String| {
        if out.disagreements.len() < LISTED_PER_KIND_MAX {
            out.disagreements.push(Difference {
                kind: "sink",
                order: Some(order),
                detail,
            });
        } else {
            out.unlisted += 1;
        }
    };
    let mut logs_counts = StatusCounts::default();
    let mut sink_counts = StatusCounts::default();
    let mut lag = 0;
    for (id, c) in &logs.claims {
        let want = c.status.order_status().as_str();
        logs_counts.add(want);
        match rows.by_order.get(id) {
            None => lag += 1,
            Some((s, _)) if *s != sale => disagree(
                *id,
                format!("order {id} of sale {sale} in the logs is a row of sale {s}"),
            ),
            Some((_, got)) if got == want => {}
            Some((_, got)) if got == "CREATED" => lag += 1,
            Some((_, got)) => disagree(
                *id,
                format!("order {id}: the logs say {want}, the sink's row says {got}"),
            ),
        }
    }
    for id in rows.by_sale.get(&sale).into_iter().flatten() {
        let status = &rows.by_order[id].1;
        sink_counts.add(status);
        if !logs.claims.contains_key(id) && status != VOID {
            disagree(
                *id,
                format!("the sink holds order {id} ({status}) that no log holds"),
            );
        }
    }
    out.logs = logs_counts;
    out.sink = sink_counts;
    out.lag = lag;
    out
}
