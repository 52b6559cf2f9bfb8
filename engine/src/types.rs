//! Identifiers, time and the small enums the engine speaks in.

use serde::{Deserialize, Serialize};

/// Wall-clock milliseconds since the Unix epoch. The engine never reads a
/// clock: every command carries the `now` its caller took once per batch.
pub type Millis = u64;
pub type UserId = u64;
pub type ActivityId = u32;
pub type OrderId = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[repr(u8)]
pub enum OrderStatus {
    Created = 0,
    Paid = 1,
    Cancelled = 2,
}

impl OrderStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            OrderStatus::Created => "CREATED",
            OrderStatus::Paid => "PAID",
            OrderStatus::Cancelled => "CANCELLED",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[repr(u8)]
pub enum CancelReason {
    /// The buyer cancelled.
    User = 0,
    /// Not paid within `engine.order_ttl_ms`.
    Timeout = 1,
}

/// A sale's state as buyers see it at a given instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActivityState {
    Upcoming,
    Open,
    SoldOut,
    Ended,
}

impl ActivityState {
    pub fn as_str(&self) -> &'static str {
        match self {
            ActivityState::Upcoming => "upcoming",
            ActivityState::Open => "open",
            ActivityState::SoldOut => "sold_out",
            ActivityState::Ended => "ended",
        }
    }
}

/// Why a command was refused. Refusals change nothing and emit no event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    SoldOut,
    LimitReached,
    NotStarted,
    Ended,
    NotFound,
    /// The move is not allowed from the order's current status.
    BadTransition,
    /// The request id was used before for a different purchase.
    IdempotencyConflict,
    /// The engine's fixed capacity (activities) is used up.
    CapacityExhausted,
    /// Paid too late: the order timed out and its units went back.
    Expired,
    /// A command outside the engine's bounds (quantity, request id, spec);
    /// the API validates first, so this is defence in depth.
    Invalid,
}

impl Reject {
    /// Stable code for the API's `error` field.
    pub fn code(&self) -> &'static str {
        match self {
            Reject::SoldOut => "sold_out",
            Reject::LimitReached => "limit_reached",
            Reject::NotStarted => "not_started",
            Reject::Ended => "ended",
            Reject::NotFound => "not_found",
            Reject::BadTransition => "bad_transition",
            Reject::IdempotencyConflict => "idempotency_conflict",
            Reject::CapacityExhausted => "capacity_exhausted",
            Reject::Expired => "order_expired",
            Reject::Invalid => "invalid_request",
        }
    }

    /// The HTTP status the API answers with.
    pub fn status(&self) -> u16 {
        match self {
            Reject::SoldOut
            | Reject::LimitReached
            | Reject::BadTransition
            | Reject::IdempotencyConflict
            | Reject::Expired => 409,
            Reject::Invalid => 400,
            Reject::NotStarted | Reject::Ended => 403,
            Reject::NotFound => 404,
            Reject::CapacityExhausted => 503,
        }
    }

    pub fn message(&self) -> &'static str {
        match self {
            Reject::SoldOut => "no units left",
            Reject::LimitReached => "per-user limit reached for this sale",
            Reject::NotStarted => "the sale has not started",
            Reject::Ended => "the sale has ended",
            Reject::NotFound => "not found",
            Reject::BadTransition => "the order cannot make that move from its current status",
            Reject::IdempotencyConflict => "request_id was already used for a different purchase",
            Reject::CapacityExhausted => "no room for another sale on this node",
            Reject::Expired => "the order was not paid in time and has been cancelled",
            Reject::Invalid => "request outside the allowed bounds",
        }
    }

    pub const ALL: [Reject; 10] = [
        Reject::Expired,
        Reject::Invalid,
        Reject::SoldOut,
        Reject::LimitReached,
        Reject::NotStarted,
        Reject::Ended,
        Reject::NotFound,
        Reject::BadTransition,
        Reject::IdempotencyConflict,
        Reject::CapacityExhausted,
    ];
}
