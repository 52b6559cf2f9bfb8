//! Events: the only way engine state changes. Replaying them in log order
//! from empty rebuilds the state exactly (see `Engine::apply`).

use std::fmt;

use crate::types::*;

/// A change to the engine's state, as the log keeps it. How each moves its
/// sale's counters is in [`crate::fold`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    ActivityCreated {
        id: ActivityId,
        sku_id: String,
        name: String,
        price_cents: u64,
        stock: u64,
        start_at: Millis,
        end_at: Millis,
        per_user_limit: u32,
        created_at: Millis,
    },
    OrderCreated {
        order_id: OrderId,
        activity_id: ActivityId,
        user_id: UserId,
        quantity: u32,
        amount_cents: u64,
        request_id: Box<str>,
        created_at: Millis,
        expires_at: Millis,
    },
    OrderPaid {
        order_id: OrderId,
        activity_id: ActivityId,
        user_id: UserId,
        quantity: u32,
        at: Millis,
    },
    OrderCancelled {
        order_id: OrderId,
        activity_id: ActivityId,
        user_id: UserId,
        quantity: u32,
        reason: CancelReason,
        at: Millis,
    },
    /// An admin added `added` units to a sale's stock (they go on sale).
    StockAdded {
        id: ActivityId,
        added: u64,
        at: Millis,
    },
    /// An admin moved a sale's window (ending it early is moving its end
    /// to now). The window it replaced travels with it, so undoing the
    /// change (a failed log write, an aborted group) needs no other state.
    ActivityWindowChanged {
        id: ActivityId,
        start_at: Millis,
        end_at: Millis,
        prev_start_at: Millis,
        prev_end_at: Millis,
        at: Millis,
    },
}

/// Which of the [`Event`]s an event is (for messages, metrics and rows).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    ActivityCreated,
    OrderCreated,
    OrderPaid,
    OrderCancelled,
    StockAdded,
    ActivityWindowChanged,
}

impl EventKind {
    /// `"activity_created"`, `"created"`, `"paid"`, `"cancelled"`: an
    /// order event by the move it makes; `"stock_added"`,
    /// `"window_changed"`: an admin's change to a sale.
    pub const fn as_str(self) -> &'static str {
        match self {
            EventKind::ActivityCreated => "activity_created",
            EventKind::OrderCreated => "created",
            EventKind::OrderPaid => "paid",
            EventKind::OrderCancelled => "cancelled",
            EventKind::StockAdded => "stock_added",
            EventKind::ActivityWindowChanged => "window_changed",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Event {
    pub const fn kind(&self) -> EventKind {
        match self {
            Event::ActivityCreated { .. } => EventKind::ActivityCreated,
            Event::OrderCreated { .. } => EventKind::OrderCreated,
            Event::OrderPaid { .. } => EventKind::OrderPaid,
            Event::OrderCancelled { .. } => EventKind::OrderCancelled,
            Event::StockAdded { .. } => EventKind::StockAdded,
            Event::ActivityWindowChanged { .. } => EventKind::ActivityWindowChanged,
        }
    }

    /// The sale the event concerns.
    pub const fn activity_id(&self) -> ActivityId {
        match self {
            Event::ActivityCreated { id, .. }
            | Event::StockAdded { id, .. }
            | Event::ActivityWindowChanged { id, .. } => *id,
            Event::OrderCreated { activity_id, .. }
            | Event::OrderPaid { activity_id, .. }
            | Event::OrderCancelled { activity_id, .. } => *activity_id,
        }
    }

    /// The order the event concerns (`None` for an event of the sale
    /// itself: its creation, an admin's change).
    pub const fn order_id(&self) -> Option<OrderId> {
        match self {
            Event::ActivityCreated { .. }
            | Event::StockAdded { .. }
            | Event::ActivityWindowChanged { .. } => None,
            Event::OrderCreated { order_id, .. }
            | Event::OrderPaid { order_id, .. }
            | Event::OrderCancelled { order_id, .. } => Some(*order_id),
        }
    }

    /// The buyer the event concerns (`None` for an event of the sale
    /// itself): whose
    /// stripe it is applied under, and whose events keep their order.
    pub const fn user_id(&self) -> Option<UserId> {
        match self {
            Event::ActivityCreated { .. }
            | Event::StockAdded { .. }
            | Event::ActivityWindowChanged { .. } => None,
            Event::OrderCreated { user_id, .. }
            | Event::OrderPaid { user_id, .. }
            | Event::OrderCancelled { user_id, .. } => Some(*user_id),
        }
    }

    /// Units of the order the event concerns (`None` for an event of the
    /// sale itself).
    pub const fn quantity(&self) -> Option<u32> {
        match self {
            Event::ActivityCreated { .. }
            | Event::StockAdded { .. }
            | Event::ActivityWindowChanged { .. } => None,
            Event::OrderCreated { quantity, .. }
            | Event::OrderPaid { quantity, .. }
            | Event::OrderCancelled { quantity, .. } => Some(*quantity),
        }
    }
}

/// Where executed commands put their events. The engine calls it while it
/// still holds the lock of the user the event concerns, so one user's
/// events reach the sink in the order they were applied.
pub trait EventSink {
    fn emit(&mut self, e: Event);
}

impl EventSink for Vec<Event> {
    fn emit(&mut self, e: Event) {
        self.push(e);
    }
}

/// A sink that drops events: for a command known to emit none (a read),
/// or a caller that keeps no log.
pub struct Discard;

impl EventSink for Discard {
    fn emit(&mut self, _e: Event) {}
}
