//! Events: the only way engine state changes. Replaying them in log order
//! from empty rebuilds the state exactly (see `Engine::apply`).

use serde::{Deserialize, Serialize};

use crate::types::*;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

/// A sink that drops events (for callers that keep no log).
pub struct Discard;

impl EventSink for Discard {
    fn emit(&mut self, _e: Event) {}
}
