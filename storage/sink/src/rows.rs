//! The rows the sink writes, built from the engine's events: an order row
//! image (or status change) and an `order_events` row per order event, and
//! the `activities` row that events are folded into (see `fold`).

use std::collections::BTreeMap;

use flashd_engine::fold::status_after;
use flashd_engine::{order_created_ms, ActivityId, Counters, Event, OrderId, OrderStatus, UserId};

use crate::placement::{order_table, shard_of};

/// An event with the LSN the log gave it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LsnEvent<'a> {
    pub lsn: u64,
    pub event: &'a Event,
}

/// An order row's status: the engine's, or `VOID` for an order whose
/// creation an abort undid (the engine forgets such an order; its row
/// stays, so that a reader sees why its units came back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RowStatus {
    Is(OrderStatus),
    Void,
}

impl RowStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RowStatus::Is(s) => s.as_str(),
            RowStatus::Void => "VOID",
        }
    }

    pub fn parse(s: &str) -> Option<RowStatus> {
        match s {
            "VOID" => Some(RowStatus::Void),
            _ => OrderStatus::parse(s).map(RowStatus::Is),
        }
    }

    /// The engine's status (`None`: the order is gone, as the engine
    /// forgets it).
    pub fn engine(self) -> Option<OrderStatus> {
        match self {
            RowStatus::Is(s) => Some(s),
            RowStatus::Void => None,
        }
    }
}

/// The order an event moves (none for a sale's creation), as its rows
/// name it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OrderRef {
    pub order_id: OrderId,
    pub activity_id: ActivityId,
    pub user_id: UserId,
    pub quantity: u32,
}

impl OrderRef {
    pub fn of(ev: &Event) -> Option<OrderRef> {
        Some(OrderRef {
            order_id: ev.order_id()?,
            activity_id: ev.activity_id(),
            user_id: ev.user_id()?,
            quantity: ev.quantity()?,
        })
    }
}

/// An order row image (or status change) to upsert.
pub(crate) struct OrderRow {
    pub order_id: OrderId,
    pub activity_id: ActivityId,
    pub user_id: UserId,
    pub quantity: u32,
    pub amount_cents: u64,
    pub request_id: String,
    pub status: RowStatus,
    pub created_at: u64,
    pub expires_at: u64,
    pub updated_at: u64,
    pub version: u64,
}

/// An `order_events` row.
pub(crate) struct EventRow {
    pub lsn: u64,
    pub seq: u32,
    pub order_id: OrderId,
    pub activity_id: ActivityId,
    pub user_id: UserId,
    pub kind: &'static str,
    pub reason: &'static str,
    pub quantity: u32,
    pub at: u64,
}

impl EventRow {
    /// The row of an order event (`created`, `paid`, `cancelled`).
    fn of(lsn: u64, o: OrderRef, ev: &Event) -> EventRow {
        let (reason, at) = match ev {
            Event::OrderCreated { created_at, .. } => ("", *created_at),
            Event::OrderPaid { at, .. } => ("", *at),
            Event::OrderCancelled { reason, at, .. } => (reason.as_str(), *at),
            Event::ActivityCreated { created_at, .. } => ("", *created_at),
            // Only order events have order rows (`OrderRef::of`).
            Event::StockAdded { at, .. } | Event::ActivityWindowChanged { at, .. } => ("", *at),
        };
        let kind = ev.kind().as_str();
        EventRow {
            lsn,
            seq: 0,
            order_id: o.order_id,
            activity_id: o.activity_id,
            user_id: o.user_id,
            kind,
            reason,
            quantity: o.quantity,
            at,
        }
    }

    /// The row of an abort undoing a move of order `o` (the `seq`th of
    /// the abort at `lsn`), at wall-clock `at`.
    pub fn reverted(lsn: u64, seq: u32, o: OrderRef, at: u64) -> EventRow {
        EventRow {
            lsn,
            seq,
            order_id: o.order_id,
            activity_id: o.activity_id,
            user_id: o.user_id,
            kind: "reverted",
            reason: "",
            quantity: o.quantity,
            at,
        }
    }
}

impl OrderRow {
    /// The row image an order event writes: a creation fills every
    /// column; a pay or a cancel only its status, `updated_at` and
    /// `version` (the upsert keeps the rest).
    fn of(lsn: u64, o: OrderRef, ev: &Event) -> OrderRow {
        let mut row = OrderRow {
            order_id: o.order_id,
            activity_id: o.activity_id,
            user_id: o.user_id,
            quantity: o.quantity,
            amount_cents: 0,
            request_id: String::new(),
            status: RowStatus::Is(status_after(ev).unwrap_or(OrderStatus::Created)),
            created_at: order_created_ms(o.order_id),
            expires_at: 0,
            updated_at: 0,
            version: lsn,
        };
        match ev {
            Event::OrderCreated {
                amount_cents,
                request_id,
                created_at,
                expires_at,
                ..
            } => {
                row.amount_cents = *amount_cents;
                row.request_id = request_id.to_string();
                row.created_at = *created_at;
                row.expires_at = *expires_at;
                row.updated_at = *created_at;
            }
            Event::OrderPaid { at, .. } | Event::OrderCancelled { at, .. } => row.updated_at = *at,
            Event::ActivityCreated { .. }
            | Event::StockAdded { .. }
            | Event::ActivityWindowChanged { .. } => {}
        }
        row
    }
}

/// An `activities` row (on shard 0): the sale and its counters.
#[derive(Debug, Clone, Default)]
pub(crate) struct ActivityRow {
    pub id: ActivityId,
    pub sku_id: String,
    pub name: String,
    pub price_cents: u64,
    pub stock: i64,
    /// `remaining`, `reserved`, `sold`.
    pub counters: Counters,
    pub start_at: u64,
    pub end_at: u64,
    pub per_user_limit: u32,
    pub created_at: u64,
    pub void: bool,
    pub version: u64,
    /// Not in MySQL yet: every event applies (LSNs start at 0).
    pub fresh: bool,
}

impl ActivityRow {
    /// Its columns, in the order [`ActivityRow::from_row`] reads and
    /// [`ActivityRow::values`] writes them.
    pub const COLUMNS: &'static str = "id, sku_id, name, price_cents, stock, remaining, reserved, sold, start_at, end_at, per_user_limit, created_at, void, version";
    pub const WIDTH: usize = 14;

    /// A sale not in MySQL yet.
    pub fn fresh(id: ActivityId) -> ActivityRow {
        ActivityRow {
            id,
            fresh: true,
            ..Default::default()
        }
    }

    /// A row read as `SELECT {COLUMNS}`.
    pub fn from_row(r: &mysql_async::Row) -> ActivityRow {
        ActivityRow {
            id: r.get(0).unwrap_or(0),
            sku_id: r.get(1).unwrap_or_default(),
            name: r.get(2).unwrap_or_default(),
            price_cents: r.get(3).unwrap_or(0),
            stock: r.get(4).unwrap_or(0),
            counters: Counters {
                remaining: r.get(5).unwrap_or(0),
                reserved: r.get(6).unwrap_or(0),
                sold: r.get(7).unwrap_or(0),
            },
            start_at: r.get(8).unwrap_or(0),
            end_at: r.get(9).unwrap_or(0),
            per_user_limit: r.get(10).unwrap_or(0),
            created_at: r.get(11).unwrap_or(0),
            void: r.get::<i64, _>(12).unwrap_or(0) != 0,
            version: r.get(13).unwrap_or(0),
            fresh: false,
        }
    }

    /// Its values in [`ActivityRow::COLUMNS`] order.
    pub fn values(&self) -> [mysql_async::Value; Self::WIDTH] {
        use mysql_async::Value;
        [
            Value::from(self.id),
            Value::from(self.sku_id.as_str()),
            Value::from(self.name.as_str()),
            Value::from(self.price_cents),
            Value::from(self.stock),
            Value::from(self.counters.remaining),
            Value::from(self.counters.reserved),
            Value::from(self.counters.sold),
            Value::from(self.start_at),
            Value::from(self.end_at),
            Value::from(self.per_user_limit),
            Value::from(self.created_at),
            Value::from(self.void as i64),
            Value::from(self.version),
        ]
    }
}

/// A run of events as rows: per shard, the order rows by month table and
/// the `order_events` rows; per sale, its events to fold (in LSN order).
pub(crate) struct BatchRows<'a> {
    pub orders: Vec<BTreeMap<String, Vec<OrderRow>>>,
    pub events: Vec<Vec<EventRow>>,
    pub sales: BTreeMap<ActivityId, Vec<LsnEvent<'a>>>,
}

impl<'a> BatchRows<'a> {
    pub fn build(run: &[LsnEvent<'a>], shards: usize) -> BatchRows<'a> {
        let mut rows = BatchRows {
            orders: (0..shards).map(|_| BTreeMap::new()).collect(),
            events: (0..shards).map(|_| Vec::new()).collect(),
            sales: BTreeMap::new(),
        };
        for &le in run {
            rows.sales
                .entry(le.event.activity_id())
                .or_default()
                .push(le);
            let Some(o) = OrderRef::of(le.event) else {
                continue;
            };
            let s = shard_of(o.user_id, shards);
            rows.orders[s]
                .entry(order_table(o.order_id))
                .or_default()
                .push(OrderRow::of(le.lsn, o, le.event));
            rows.events[s].push(EventRow::of(le.lsn, o, le.event));
        }
        rows
    }

    /// Shards with rows to write.
    pub fn shards(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.orders.len())
            .filter(|&s| !(self.orders[s].is_empty() && self.events[s].is_empty()))
    }
}
