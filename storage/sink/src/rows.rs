//! The rows the sink reads and writes, and a run of events split by
//! shard and order: the order row, an `order_events` row per move, and
//! the `activities` row of a sale.

use std::collections::BTreeMap;

use flashd_engine::{order_created_ms, ActivityId, Counters, Event, OrderId, OrderStatus, UserId};

use crate::copies::Origin;
use crate::placement::{order_table, shard_of};

/// An event with where it was logged: its topic and the LSN the topic's
/// writer gave it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TopicEvent<'a> {
    pub topic: &'a str,
    pub lsn: u64,
    pub event: &'a Event,
}

impl TopicEvent<'_> {
    pub fn origin(&self) -> Origin {
        Origin {
            topic: self.topic.to_string(),
            lsn: self.lsn,
        }
    }
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

/// An order row, as read (`FOR UPDATE`) and written back whole.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// The rank of `status` (see `copies::Present::rank`).
    pub version: u64,
}

impl OrderRow {
    /// Its columns, in the order [`OrderRow::from_row`] reads and
    /// [`OrderRow::values`] writes them.
    pub const COLUMNS: &'static str = "order_id, activity_id, user_id, quantity, amount_cents, request_id, status, created_at, expires_at, updated_at, version";
    pub const WIDTH: usize = 11;

    /// The row an order has before any of its moves is applied: `VOID`,
    /// holding nothing; written first so that the order's row is locked
    /// whoever else writes it (see `orders_tx`).
    pub fn placeholder(o: OrderRef) -> OrderRow {
        let at = order_created_ms(o.order_id);
        OrderRow {
            order_id: o.order_id,
            activity_id: o.activity_id,
            user_id: o.user_id,
            quantity: o.quantity,
            amount_cents: 0,
            request_id: String::new(),
            status: RowStatus::Void,
            created_at: at,
            expires_at: 0,
            updated_at: at,
            version: 0,
        }
    }

    /// A row read as `SELECT {COLUMNS}`; `None` if a column does not fit
    /// (a status this sink never writes).
    pub fn from_row(r: &mysql_async::Row) -> Option<OrderRow> {
        Some(OrderRow {
            order_id: r.get(0)?,
            activity_id: r.get(1)?,
            user_id: r.get(2)?,
            quantity: r.get(3)?,
            amount_cents: r.get(4)?,
            request_id: r.get(5)?,
            status: RowStatus::parse(&r.get::<String, _>(6)?)?,
            created_at: r.get(7)?,
            expires_at: r.get(8)?,
            updated_at: r.get(9)?,
            version: r.get(10)?,
        })
    }

    /// Its values in [`OrderRow::COLUMNS`] order.
    pub fn values(&self) -> [mysql_async::Value; Self::WIDTH] {
        use mysql_async::Value;
        [
            Value::from(self.order_id),
            Value::from(self.activity_id),
            Value::from(self.user_id),
            Value::from(self.quantity),
            Value::from(self.amount_cents),
            Value::from(self.request_id.as_str()),
            Value::from(self.status.as_str()),
            Value::from(self.created_at),
            Value::from(self.expires_at),
            Value::from(self.updated_at),
            Value::from(self.version),
        ]
    }

    /// Take the columns only a creation knows (every copy of it holds the
    /// same ones).
    pub fn fill_from_creation(&mut self, ev: &Event) {
        if let Event::OrderCreated {
            amount_cents,
            request_id,
            created_at,
            expires_at,
            ..
        } = ev
        {
            self.amount_cents = *amount_cents;
            self.request_id = request_id.to_string();
            self.created_at = *created_at;
            self.expires_at = *expires_at;
        }
    }
}

/// An `order_events` row: one move an order made, naming its least
/// standing copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EventRow {
    pub order_id: OrderId,
    pub kind: &'static str,
    pub activity_id: ActivityId,
    pub user_id: UserId,
    pub reason: &'static str,
    pub quantity: u32,
    pub at: u64,
    pub topic: String,
    pub lsn: u64,
}

impl EventRow {
    pub const COLUMNS: &'static str =
        "order_id, kind, activity_id, user_id, reason, quantity, at, topic, lsn";
    pub const WIDTH: usize = 9;

    /// The row of order event `ev` of order `o`, naming copy `at`.
    pub fn of(o: OrderRef, ev: &Event, at: &Origin) -> EventRow {
        let (reason, when) = match ev {
            Event::OrderCreated { created_at, .. } => ("", *created_at),
            Event::OrderPaid { at, .. } => ("", *at),
            Event::OrderCancelled { reason, at, .. } => (reason.as_str(), *at),
            Event::ActivityCreated { created_at, .. } => ("", *created_at),
        };
        EventRow {
            order_id: o.order_id,
            kind: ev.kind().as_str(),
            activity_id: o.activity_id,
            user_id: o.user_id,
            reason,
            quantity: o.quantity,
            at: when,
            topic: at.topic.clone(),
            lsn: at.lsn,
        }
    }

    pub fn values(&self) -> [mysql_async::Value; Self::WIDTH] {
        use mysql_async::Value;
        [
            Value::from(self.order_id),
            Value::from(self.kind),
            Value::from(self.activity_id),
            Value::from(self.user_id),
            Value::from(self.reason),
            Value::from(self.quantity),
            Value::from(self.at),
            Value::from(self.topic.as_str()),
            Value::from(self.lsn),
        ]
    }
}

/// An `activities` row (on shard 0): the sale and its counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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
}

impl ActivityRow {
    /// Its columns, in the order [`ActivityRow::from_row`] reads and
    /// [`ActivityRow::values`] writes them.
    pub const COLUMNS: &'static str = "id, sku_id, name, price_cents, stock, remaining, reserved, sold, start_at, end_at, per_user_limit, created_at, void";
    pub const WIDTH: usize = 13;

    /// A sale no event has described yet.
    pub fn placeholder(id: ActivityId) -> ActivityRow {
        ActivityRow {
            id,
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
        ]
    }

    /// Take the sale's description from (a copy of) its creation.
    pub fn describe(&mut self, ev: &Event) {
        if let Event::ActivityCreated {
            sku_id,
            name,
            price_cents,
            stock,
            start_at,
            end_at,
            per_user_limit,
            created_at,
            ..
        } = ev
        {
            self.sku_id = sku_id.clone();
            self.name = name.clone();
            self.price_cents = *price_cents;
            self.stock = *stock as i64;
            self.start_at = *start_at;
            self.end_at = *end_at;
            self.per_user_limit = *per_user_limit;
            self.created_at = *created_at;
        }
    }
}

/// One order's part of a run: where its row lives and its events there.
pub(crate) struct OrderRun<'a> {
    pub order: OrderRef,
    pub table: String,
    pub events: Vec<TopicEvent<'a>>,
}

/// A run of events split for writing: per shard, each order's events; per
/// sale named by any of them, the copies of its creation among them.
pub(crate) struct BatchRows<'a> {
    pub orders: Vec<BTreeMap<OrderId, OrderRun<'a>>>,
    pub sales: BTreeMap<ActivityId, Vec<TopicEvent<'a>>>,
}

impl<'a> BatchRows<'a> {
    pub fn build(run: &[TopicEvent<'a>], shards: usize) -> BatchRows<'a> {
        let mut rows = BatchRows {
            orders: (0..shards).map(|_| BTreeMap::new()).collect(),
            sales: BTreeMap::new(),
        };
        for &te in run {
            let creations = rows.sales.entry(te.event.activity_id()).or_default();
            let Some(o) = OrderRef::of(te.event) else {
                creations.push(te);
                continue;
            };
            rows.orders[shard_of(o.user_id, shards)]
                .entry(o.order_id)
                .or_insert_with(|| OrderRun {
                    order: o,
                    table: order_table(o.order_id),
                    events: Vec::new(),
                })
                .events
                .push(te);
        }
        rows
    }
}
