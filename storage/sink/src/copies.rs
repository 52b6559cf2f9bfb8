//! An order's copies, and what they make of it. In cluster mode several
//! topics may log the same move of one order (each node that completes a
//! retry, pays, cancels or times out an order first logs its own copy of
//! the order's creation), and each topic may void its own copies with an
//! abort. The sink keeps every copy it applied (`order_copies`, on the
//! order's shard: move, topic, LSN, voided) and derives everything else
//! from the set of copies still standing, so the result is a function of
//! the topics' contents, not of the order their records arrive in:
//!
//! * a move is *present* while at least one of its copies is not voided;
//! * the order's status is its present terminal move, else `CREATED` if
//!   its creation is present, else `VOID` (every copy undone);
//! * what the order holds of its sale is the engine's effect of each
//!   present move, summed once per move however many copies it has.
//!
//! Pure functions: the writer reads the copies, calls these and writes
//! back the differences.

use flashd_engine::fold::{cancelled, created, paid};
use flashd_engine::{Counters, Event, OrderStatus};

use crate::rows::RowStatus;

/// A move of an order: what a copy logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Move {
    Created,
    Paid,
    Cancelled,
}

impl Move {
    pub const ALL: [Move; 3] = [Move::Created, Move::Paid, Move::Cancelled];

    /// The move an order event makes (`None` for a sale's creation).
    pub fn of(ev: &Event) -> Option<Move> {
        match ev {
            Event::OrderCreated { .. } => Some(Move::Created),
            Event::OrderPaid { .. } => Some(Move::Paid),
            Event::OrderCancelled { .. } => Some(Move::Cancelled),
            Event::ActivityCreated { .. } => None,
        }
    }

    /// Its code in `order_copies.move`.
    pub fn code(self) -> u8 {
        match self {
            Move::Created => 1,
            Move::Paid => 2,
            Move::Cancelled => 3,
        }
    }

    pub fn from_code(c: u8) -> Option<Move> {
        Move::ALL.into_iter().find(|m| m.code() == c)
    }

    fn index(self) -> usize {
        self.code() as usize - 1
    }

    /// Its `order_events.kind` (the engine's spelling of the event).
    pub fn kind(self) -> &'static str {
        match self {
            Move::Created => "created",
            Move::Paid => "paid",
            Move::Cancelled => "cancelled",
        }
    }

    /// The engine's change of the sale's counters for this move of an
    /// order of `quantity` units.
    fn effect(self, quantity: u32) -> Counters {
        match self {
            Move::Created => created(quantity),
            Move::Paid => paid(quantity),
            Move::Cancelled => cancelled(quantity),
        }
    }
}

/// Where a copy was logged: its topic and its LSN there. Ordered, so that
/// the copy an `order_events` row names is the least one standing,
/// whichever arrived first.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Origin {
    pub topic: String,
    pub lsn: u64,
}

/// One copy of a move, as kept in `order_copies`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Copy {
    pub mv: Move,
    pub at: Origin,
    pub voided: bool,
}

/// The moves of an order that stand, each with its least standing copy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Present {
    by_move: [Option<Origin>; 3],
}

impl Present {
    pub fn of(copies: &[Copy]) -> Present {
        let mut p = Present::default();
        for c in copies.iter().filter(|c| !c.voided) {
            let slot = &mut p.by_move[c.mv.index()];
            if slot.as_ref().is_none_or(|o| c.at < *o) {
                *slot = Some(c.at.clone());
            }
        }
        p
    }

    /// The least standing copy of `mv`, if it stands.
    pub fn origin(&self, mv: Move) -> Option<&Origin> {
        self.by_move[mv.index()].as_ref()
    }

    pub fn has(&self, mv: Move) -> bool {
        self.origin(mv).is_some()
    }

    /// The terminal move that stands. Redis lets an order make one; were
    /// both ever logged, `PAID` wins whatever the arrival order (the buyer
    /// paid), so the result still depends on the log alone.
    pub fn terminal(&self) -> Option<Move> {
        [Move::Paid, Move::Cancelled]
            .into_iter()
            .find(|m| self.has(*m))
    }

    /// The order row's status.
    pub fn status(&self) -> RowStatus {
        match self.terminal() {
            Some(Move::Paid) => RowStatus::Is(OrderStatus::Paid),
            Some(_) => RowStatus::Is(OrderStatus::Cancelled),
            None if self.has(Move::Created) => RowStatus::Is(OrderStatus::Created),
            None => RowStatus::Void,
        }
    }

    /// The order row's `version`: the rank of its status (0 `VOID`, 1
    /// `CREATED`, 2 paid or cancelled). Orders only move up, except where
    /// an abort undoes a move.
    pub fn rank(&self) -> u8 {
        match self.status() {
            RowStatus::Void => 0,
            RowStatus::Is(OrderStatus::Created) => 1,
            RowStatus::Is(_) => 2,
        }
    }

    /// What the order holds of its sale: the engine's effect of each
    /// standing move, once. With the creation and one terminal move this
    /// is `flashd_engine::fold::holding(status)`; a move standing without
    /// its creation (seen before the creation's copy) counts as the
    /// engine's fold of that move alone, until the creation comes.
    pub fn holding(&self, quantity: u32) -> Counters {
        let mut c = Counters::ZERO;
        for m in Move::ALL {
            if self.has(m) {
                c += m.effect(quantity);
            }
        }
        if self.has(Move::Paid) && self.has(Move::Cancelled) {
            // Only the winning terminal move counts (see `terminal`).
            c = c - Move::Cancelled.effect(quantity);
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flashd_engine::fold::holding;

    fn copy(mv: Move, topic: &str, lsn: u64, voided: bool) -> Copy {
        Copy {
            mv,
            at: Origin {
                topic: topic.into(),
                lsn,
            },
            voided,
        }
    }

    #[test]
    fn a_move_stands_while_one_copy_does_and_counts_once() {
        let one = Present::of(&[copy(Move::Created, "t.node1", 4, false)]);
        let three = Present::of(&[
            copy(Move::Created, "t.node2", 9, false),
            copy(Move::Created, "t.node1", 4, false),
            copy(Move::Created, "t.node3", 1, true),
        ]);
        assert_eq!(one, three);
        assert_eq!(three.holding(2), holding(OrderStatus::Created, 2));
        assert_eq!(three.status(), RowStatus::Is(OrderStatus::Created));
        // Every copy voided: the order is gone and holds nothing.
        let gone = Present::of(&[
            copy(Move::Created, "t.node1", 4, true),
            copy(Move::Created, "t.node2", 9, true),
        ]);
        assert_eq!(gone.status(), RowStatus::Void);
        assert_eq!((gone.holding(2), gone.rank()), (Counters::ZERO, 0));
    }

    #[test]
    fn holdings_are_the_engines_for_every_status() {
        for (moves, status) in [
            (&[Move::Created][..], OrderStatus::Created),
            (&[Move::Created, Move::Paid][..], OrderStatus::Paid),
            (
                &[Move::Created, Move::Cancelled][..],
                OrderStatus::Cancelled,
            ),
        ] {
            let copies: Vec<Copy> = moves.iter().map(|m| copy(*m, "t", 1, false)).collect();
            let p = Present::of(&copies);
            assert_eq!(p.holding(3), holding(status, 3));
            assert_eq!(p.status(), RowStatus::Is(status));
        }
        // A pay seen before any creation: the fold of the pay alone, and
        // the creation completes it to PAID's holding.
        let p = Present::of(&[copy(Move::Paid, "t.node2", 7, false)]);
        assert_eq!(p.holding(3), paid(3));
        assert_eq!(p.status(), RowStatus::Is(OrderStatus::Paid));
    }

    #[test]
    fn the_named_copy_is_the_least_standing_one_and_paid_wins_a_conflict() {
        let p = Present::of(&[
            copy(Move::Created, "t.node2", 1, false),
            copy(Move::Created, "t.node1", 50, false),
            copy(Move::Created, "t.node0", 0, true),
        ]);
        assert_eq!(
            p.origin(Move::Created),
            Some(&Origin {
                topic: "t.node1".into(),
                lsn: 50
            })
        );
        let both = Present::of(&[
            copy(Move::Created, "a", 1, false),
            copy(Move::Cancelled, "a", 2, false),
            copy(Move::Paid, "b", 2, false),
        ]);
        assert_eq!(both.status(), RowStatus::Is(OrderStatus::Paid));
        assert_eq!(both.holding(1), holding(OrderStatus::Paid, 1));
    }
}
