//! Why an event or a snapshot does not apply. Every error is `Copy`, with
//! typed fields and no `String`: building one never allocates, so a live
//! purchase that loses the stock race costs nothing extra, and the words
//! are only written when someone prints the error.

use crate::event::EventKind;
use crate::limits::STRIPE_ORDERS_MAX;
use crate::types::*;

/// A logged event or a snapshot that does not fit the state it is applied
/// to: the log or the snapshot is not this engine's history. The first
/// five variants are also what a live command can meet (see
/// [`crate::Engine::place_order`]); the `Activity*` ones come from a
/// sale's creation, the `Snapshot*` ones from [`crate::Engine::load`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// The event names a sale this engine does not have (or that was
    /// voided since the purchase looked it up).
    #[error("event does not apply: order {order}: no activity {activity}")]
    NoActivity {
        order: OrderId,
        activity: ActivityId,
    },
    /// The buyer's stripe holds [`STRIPE_ORDERS_MAX`] orders.
    #[error(
        "event does not apply: order {order}: its stripe already holds {STRIPE_ORDERS_MAX} orders"
    )]
    StripeFull { order: OrderId },
    /// Replay: the order id, or the buyer's request id, was seen before.
    #[error("event does not apply: order {order} or its request id seen twice")]
    Duplicate { order: OrderId },
    /// A pay or cancel of an order that was never created.
    #[error("event does not apply: {event} order {order} unknown")]
    UnknownOrder { order: OrderId, event: EventKind },
    /// A pay or cancel from a status that does not allow it, or with
    /// another quantity than the order's.
    #[error("event does not apply: order {order} {event} from {from:?}")]
    BadMove {
        order: OrderId,
        event: EventKind,
        from: OrderStatus,
    },
    /// The sale's id is past `engine.max_activities` (or is 0).
    #[error("event does not apply: activity {id} beyond engine.max_activities")]
    ActivityBeyondCapacity { id: ActivityId },
    #[error("event does not apply: activity {id} created twice")]
    ActivityTwice { id: ActivityId },
    /// A snapshot's stripe claims more orders than a stripe can index.
    #[error("event does not apply: snapshot stripe holds {orders} orders, more than {STRIPE_ORDERS_MAX}")]
    SnapshotStripeOverfull { orders: u32 },
    /// Snapshots load into an engine that holds nothing yet.
    #[error("event does not apply: snapshot loaded into a non-empty engine")]
    SnapshotIntoNonEmpty,
    #[error("event does not apply: snapshot activity {id} beyond engine.max_activities")]
    SnapshotActivityBeyondCapacity { id: ActivityId },
    #[error("event does not apply: snapshot activity {id} twice")]
    SnapshotActivityTwice { id: ActivityId },
    /// A change of a sale (stock added, window moved) this engine does not
    /// have.
    #[error("event does not apply: {event} of unknown activity {id}")]
    UnknownSale { id: ActivityId, event: EventKind },
}

/// Why [`crate::Engine`]'s one state-changing function changed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ApplyError {
    /// Live only: another buyer took the last units first (the CAS lost).
    /// An ordinary outcome on the hot path.
    SoldOut,
    /// The event does not fit the state: in replay, the log is not ours;
    /// live, a race with a sale's undoing, a full stripe, or a bug.
    Misfit(ReplayError),
}

impl From<ReplayError> for ApplyError {
    fn from(e: ReplayError) -> ApplyError {
        ApplyError::Misfit(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_small_copies_with_the_same_words_as_ever() {
        // No heap parts: an error costs a few words on the stack.
        assert!(std::mem::size_of::<ReplayError>() <= 24);
        let cases = [
            (
                ReplayError::NoActivity {
                    order: 5,
                    activity: 2,
                },
                "event does not apply: order 5: no activity 2",
            ),
            (
                ReplayError::StripeFull { order: 5 },
                "event does not apply: order 5: its stripe already holds 16777215 orders",
            ),
            (
                ReplayError::Duplicate { order: 5 },
                "event does not apply: order 5 or its request id seen twice",
            ),
            (
                ReplayError::UnknownOrder {
                    order: 5,
                    event: EventKind::OrderPaid,
                },
                "event does not apply: paid order 5 unknown",
            ),
            (
                ReplayError::BadMove {
                    order: 5,
                    event: EventKind::OrderCancelled,
                    from: OrderStatus::Paid,
                },
                "event does not apply: order 5 cancelled from Paid",
            ),
            (
                ReplayError::ActivityBeyondCapacity { id: 9 },
                "event does not apply: activity 9 beyond engine.max_activities",
            ),
            (
                ReplayError::ActivityTwice { id: 9 },
                "event does not apply: activity 9 created twice",
            ),
            (
                ReplayError::SnapshotStripeOverfull { orders: 1 << 30 },
                "event does not apply: snapshot stripe holds 1073741824 orders, more than 16777215",
            ),
            (
                ReplayError::SnapshotIntoNonEmpty,
                "event does not apply: snapshot loaded into a non-empty engine",
            ),
            (
                ReplayError::SnapshotActivityBeyondCapacity { id: 9 },
                "event does not apply: snapshot activity 9 beyond engine.max_activities",
            ),
            (
                ReplayError::SnapshotActivityTwice { id: 9 },
                "event does not apply: snapshot activity 9 twice",
            ),
            (
                ReplayError::UnknownSale {
                    id: 9,
                    event: EventKind::StockAdded,
                },
                "event does not apply: stock_added of unknown activity 9",
            ),
        ];
        for (e, words) in cases {
            assert_eq!(e.to_string(), words);
        }
    }
}
