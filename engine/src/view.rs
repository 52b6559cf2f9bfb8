//! What commands take and answer: a purchase, its outcome, and an order as
//! its owner sees it. All `Copy`, so they travel through completion rings
//! without allocating.

use crate::types::*;
use crate::users::Order;

/// An order as answered to its owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderView {
    pub id: OrderId,
    pub activity_id: ActivityId,
    pub user_id: UserId,
    pub quantity: u32,
    pub amount_cents: u64,
    pub status: OrderStatus,
    pub created_at: Millis,
    pub expires_at: Millis,
    pub updated_at: Millis,
    pub cancel_reason: Option<CancelReason>,
}

impl From<&Order> for OrderView {
    fn from(o: &Order) -> Self {
        OrderView {
            id: o.id,
            activity_id: o.activity_id,
            user_id: o.user_id,
            quantity: o.quantity,
            amount_cents: o.amount_cents,
            status: o.status,
            created_at: o.created_at,
            expires_at: o.expires_at,
            updated_at: o.updated_at,
            cancel_reason: o.cancel_reason,
        }
    }
}

/// Result of a purchase that did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placed {
    /// A new order (HTTP 201).
    Created(OrderView),
    /// The same request id was seen before: that order (HTTP 200).
    Existing(OrderView),
}

/// A purchase.
#[derive(Debug, Clone, Copy)]
pub struct PlaceOrder<'a> {
    pub activity_id: ActivityId,
    pub user_id: UserId,
    pub quantity: u32,
    pub request_id: &'a str,
}
