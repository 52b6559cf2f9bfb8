//! Identifiers, time and the small enums the engine speaks in.

/// Wall-clock milliseconds since the Unix epoch. The engine never reads a
/// clock: every command carries the `now` its caller took once per batch.
pub type Millis = u64;
pub type UserId = u64;
pub type ActivityId = u32;
pub type OrderId = u64;

/// Where an order is in its life. It starts `Created` and makes at most
/// one move, to `Paid` or to `Cancelled` ([`OrderStatus::moves_to`]); only
/// undoing an event the log could not keep takes it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum OrderStatus {
    Created = 0,
    Paid = 1,
    Cancelled = 2,
}

impl OrderStatus {
    pub const ALL: [OrderStatus; 3] = [
        OrderStatus::Created,
        OrderStatus::Paid,
        OrderStatus::Cancelled,
    ];

    /// `"CREATED"`, `"PAID"` or `"CANCELLED"`: the API's and the order
    /// tables' spelling.
    pub const fn as_str(&self) -> &'static str {
        match self {
            OrderStatus::Created => "CREATED",
            OrderStatus::Paid => "PAID",
            OrderStatus::Cancelled => "CANCELLED",
        }
    }

    /// The status [`OrderStatus::as_str`] spells `s` (exactly, case
    /// included), if any.
    pub fn parse(s: &str) -> Option<OrderStatus> {
        match s {
            "CREATED" => Some(OrderStatus::Created),
            "PAID" => Some(OrderStatus::Paid),
            "CANCELLED" => Some(OrderStatus::Cancelled),
            _ => None,
        }
    }

    /// Whether an order may move from `self` to `to`: only `CREATED → PAID`
    /// and `CREATED → CANCELLED` (invariant 4).
    pub const fn moves_to(self, to: OrderStatus) -> bool {
        matches!(
            (self, to),
            (OrderStatus::Created, OrderStatus::Paid)
                | (OrderStatus::Created, OrderStatus::Cancelled)
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum CancelReason {
    /// The buyer cancelled.
    User = 0,
    /// Not paid within `engine.order_ttl_ms`.
    Timeout = 1,
}

impl CancelReason {
    /// `"user"` or `"timeout"`: the API's and the order tables' spelling.
    pub const fn as_str(&self) -> &'static str {
        match self {
            CancelReason::User => "user",
            CancelReason::Timeout => "timeout",
        }
    }
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
    /// The buyer already created as many orders in this sale as anyone may
    /// ([`crate::sale_user_orders_max`]), counting cancelled and
    /// timed-out ones: a bound on what one buyer's churn costs.
    TooManyOrders,
    /// Admin: the sale has ended; it can no longer change.
    SaleOver,
    /// Admin: the sale has started; its start cannot move.
    StartLocked,
    /// Admin: a new start before now.
    StartInPast,
    /// Admin: a new end before now.
    EndInPast,
    /// Admin: a window whose end is not after its start.
    WindowEmpty,
    /// Admin: the added stock would take the sale past `STOCK_MAX`.
    StockFull,
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
            Reject::TooManyOrders => "too_many_orders",
            Reject::SaleOver => "sale_over",
            Reject::StartLocked => "start_locked",
            Reject::StartInPast => "start_in_past",
            Reject::EndInPast => "end_in_past",
            Reject::WindowEmpty => "window_empty",
            Reject::StockFull => "stock_full",
        }
    }

    /// The HTTP status the API answers with.
    pub fn status(&self) -> u16 {
        match self {
            Reject::SoldOut
            | Reject::LimitReached
            | Reject::BadTransition
            | Reject::IdempotencyConflict
            | Reject::Expired
            | Reject::TooManyOrders
            | Reject::SaleOver
            | Reject::StartLocked
            | Reject::StockFull => 409,
            Reject::Invalid | Reject::StartInPast | Reject::EndInPast | Reject::WindowEmpty => 400,
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
            Reject::TooManyOrders => {
                "this buyer has created the most orders allowed in this sale, cancelled ones included"
            }
            Reject::SaleOver => "the sale has ended; it can no longer change",
            Reject::StartLocked => "start_at: the sale has started; its start cannot move",
            Reject::StartInPast => "start_at: must not be before now",
            Reject::EndInPast => "end_at: must not be before now",
            Reject::WindowEmpty => "end_at: must be after start_at",
            Reject::StockFull => "add: the sale's stock would exceed 10^9 units",
        }
    }

    pub const ALL: [Reject; 17] = [
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
        Reject::TooManyOrders,
        Reject::SaleOver,
        Reject::StartLocked,
        Reject::StartInPast,
        Reject::EndInPast,
        Reject::WindowEmpty,
        Reject::StockFull,
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_spell_and_parse_back() {
        for s in OrderStatus::ALL {
            assert_eq!(OrderStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(OrderStatus::parse("VOID"), None);
        assert_eq!(OrderStatus::parse("paid"), None, "exact spelling only");
        assert_eq!(OrderStatus::parse(""), None);
        let moves: Vec<(OrderStatus, OrderStatus)> = OrderStatus::ALL
            .iter()
            .flat_map(|&a| OrderStatus::ALL.map(|b| (a, b)))
            .filter(|&(a, b)| a.moves_to(b))
            .collect();
        assert_eq!(
            moves,
            [
                (OrderStatus::Created, OrderStatus::Paid),
                (OrderStatus::Created, OrderStatus::Cancelled)
            ]
        );
        assert_eq!(CancelReason::User.as_str(), "user");
        assert_eq!(CancelReason::Timeout.as_str(), "timeout");
    }

    #[test]
    fn every_refusal_is_listed_once_with_its_own_code() {
        // Exhaustive: a new variant does not compile here until it gets
        // the next number, and then `ALL` (what metrics count by) must
        // hold exactly the numbers 0..=that.
        let number = |r: Reject| match r {
            Reject::SoldOut => 0,
            Reject::LimitReached => 1,
            Reject::NotStarted => 2,
            Reject::Ended => 3,
            Reject::NotFound => 4,
            Reject::BadTransition => 5,
            Reject::IdempotencyConflict => 6,
            Reject::CapacityExhausted => 7,
            Reject::Expired => 8,
            Reject::Invalid => 9,
            Reject::TooManyOrders => 10,
            Reject::SaleOver => 11,
            Reject::StartLocked => 12,
            Reject::StartInPast => 13,
            Reject::EndInPast => 14,
            Reject::WindowEmpty => 15,
            Reject::StockFull => 16,
        };
        let mut seen: Vec<usize> = Reject::ALL.iter().map(|&r| number(r)).collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..=16).collect::<Vec<_>>());
        let mut codes: Vec<&str> = Reject::ALL.iter().map(|r| r.code()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), Reject::ALL.len(), "codes are distinct");
        assert_eq!(Reject::TooManyOrders.status(), 409);
        assert_eq!(Reject::TooManyOrders.code(), "too_many_orders");
    }
}
