//! What a change of copies makes of the rows: pure functions over rows
//! read from MySQL, so the writer only reads, calls these and writes back.
//!
//! An order: copies arrive (a run of events) or are voided (an abort of
//! their topic); its row, its `order_events` rows and what it holds of its
//! sale follow from the copies standing before and after (see `copies`).
//! The change of its holding is the delta its shard's `sale_counters` row
//! takes, in the same transaction, so it is counted exactly once however
//! often and from however many topics the order's moves arrive.
//!
//! A sale: its row is its description (from any copy of its creation:
//! every node logs the same), `void` once every copy of its creation was
//! undone, and its counters `flashd_engine::fold::opened(stock)` plus what
//! every shard's orders hold of it; recomputed whole, never incremented.

use std::ops::Range;

use flashd_engine::fold::opened;
use flashd_engine::{Counters, Event};

use crate::copies::{Copy, Move, Origin, Present};
use crate::rows::{ActivityRow, EventRow, OrderRef, OrderRow, TopicEvent};

/// Copies of one topic's LSNs to void: an abort's range.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Voiding<'a> {
    pub topic: &'a str,
    pub covers: &'a Range<u64>,
}

impl Voiding<'_> {
    fn voids(&self, at: &Origin) -> bool {
        at.topic == self.topic && self.covers.contains(&at.lsn)
    }
}

/// What to write for one order.
#[derive(Debug, Default)]
pub(crate) struct OrderPlan {
    /// Its row, if it changed.
    pub row: Option<OrderRow>,
    /// Copies to add.
    pub new_copies: Vec<Copy>,
    /// `order_events` rows to write whole (a move that now stands, or a
    /// smaller copy of one that stood).
    pub events: Vec<EventRow>,
    /// Moves that still stand whose least copy is now another one.
    pub renamed: Vec<(Move, Origin)>,
    /// Moves that no longer stand.
    pub gone: Vec<Move>,
    /// The change of what it holds of its sale.
    pub delta: Counters,
}

/// Plan the change of order `o`, whose row is `stored` and copies
/// `copies` (as read, locked), when `adds` arrive and `void` applies.
/// A copy already kept (same move, topic and LSN) is not added again, so a
/// replay plans nothing.
pub(crate) fn plan_order(
    o: OrderRef,
    stored: &OrderRow,
    copies: &[Copy],
    adds: &[TopicEvent<'_>],
    void: Option<Voiding<'_>>,
) -> OrderPlan {
    let mut plan = OrderPlan::default();
    let before = Present::of(copies);
    let mut after_copies: Vec<Copy> = copies.to_vec();
    if let Some(v) = void {
        for c in after_copies.iter_mut().filter(|c| v.voids(&c.at)) {
            c.voided = true;
        }
    }
    for te in adds {
        let Some(mv) = Move::of(te.event) else {
            continue;
        };
        let at = te.origin();
        if after_copies.iter().any(|c| c.mv == mv && c.at == at) {
            continue;
        }
        let c = Copy {
            mv,
            at,
            voided: false,
        };
        after_copies.push(c.clone());
        plan.new_copies.push(c);
    }
    let after = Present::of(&after_copies);
    plan.delta = after.holding(o.quantity) - before.holding(o.quantity);
    let event_of = |mv: Move| adds.iter().find(|te| Move::of(te.event) == Some(mv));
    for mv in Move::ALL {
        match (before.origin(mv), after.origin(mv)) {
            (b, Some(a)) if b != Some(a) => match event_of(mv) {
                Some(te) => plan.events.push(EventRow::of(o, te.event, a)),
                None => plan.renamed.push((mv, a.clone())),
            },
            (Some(_), None) => plan.gone.push(mv),
            _ => {}
        }
    }
    let mut row = stored.clone();
    if let Some(te) = event_of(Move::Created) {
        row.fill_from_creation(te.event);
    }
    row.status = after.status();
    row.version = after.rank() as u64;
    row.updated_at = match after.terminal() {
        // The time of the terminal move: from its event if it stands
        // since now, else as written when it came to stand.
        Some(mv) => match (before.origin(mv), event_of(mv)) {
            (None, Some(te)) => at_of(te.event),
            _ => stored.updated_at,
        },
        // CREATED or VOID: the creation's time, whatever came between.
        None => row.created_at,
    };
    if row != *stored {
        plan.row = Some(row);
    }
    plan
}

fn at_of(ev: &Event) -> u64 {
    match ev {
        Event::OrderPaid { at, .. } | Event::OrderCancelled { at, .. } => *at,
        Event::OrderCreated { created_at, .. } | Event::ActivityCreated { created_at, .. } => {
            *created_at
        }
    }
}

/// The copies of a sale's creation, as counted in `sale_copies`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SaleCopies {
    pub kept: u64,
    pub standing: u64,
}

/// A sale's row: `stored` described by `creation` (a copy of it in the
/// run, if any), void when copies were kept and none stands, its counters
/// the opening of its stock (once described) plus `held`, what the shards'
/// orders hold of it. An order folded before its sale's creation keeps its
/// units: the creation sets the total to `stock`.
pub(crate) fn sale_row(
    stored: &ActivityRow,
    creation: Option<&Event>,
    copies: SaleCopies,
    held: Counters,
) -> ActivityRow {
    let mut row = stored.clone();
    if let Some(ev) = creation {
        row.describe(ev);
    }
    let open = if copies.kept > 0 {
        opened(row.stock.max(0) as u64)
    } else {
        Counters::ZERO
    };
    row.counters = open + held;
    row.void = copies.kept > 0 && copies.standing == 0;
    row
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rows::RowStatus;
    use flashd_engine::fold::holding;
    use flashd_engine::{CancelReason, OrderStatus};

    const O: OrderRef = OrderRef {
        order_id: 5,
        activity_id: 1,
        user_id: 7,
        quantity: 2,
    };

    fn created() -> Event {
        Event::OrderCreated {
            order_id: 5,
            activity_id: 1,
            user_id: 7,
            quantity: 2,
            amount_cents: 200,
            request_id: "r".into(),
            created_at: 2,
            expires_at: 3,
        }
    }

    fn cancelled() -> Event {
        Event::OrderCancelled {
            order_id: 5,
            activity_id: 1,
            user_id: 7,
            quantity: 2,
            reason: CancelReason::Timeout,
            at: 9,
        }
    }

    fn te<'a>(topic: &'a str, lsn: u64, event: &'a Event) -> TopicEvent<'a> {
        TopicEvent { topic, lsn, event }
    }

    /// Apply a plan to the row and copies, as the writer would.
    fn apply(row: &mut OrderRow, copies: &mut Vec<Copy>, p: &OrderPlan, void: Option<Voiding>) {
        if let Some(v) = void {
            for c in copies.iter_mut().filter(|c| v.voids(&c.at)) {
                c.voided = true;
            }
        }
        copies.extend(p.new_copies.iter().cloned());
        if let Some(r) = &p.row {
            *row = r.clone();
        }
    }

    #[test]
    fn copies_from_two_topics_count_once_and_an_abort_of_one_keeps_the_other() {
        let (c, x) = (created(), cancelled());
        let mut row = OrderRow::placeholder(O);
        let mut copies = Vec::new();
        let mut held = Counters::ZERO;
        // Node 2's cancel (with its creation copy), then node 1's creation.
        for adds in [
            vec![te("t.node2", 4, &c), te("t.node2", 5, &x)],
            vec![te("t.node1", 9, &c)],
        ] {
            let p = plan_order(O, &row, &copies, &adds, None);
            held += p.delta;
            apply(&mut row, &mut copies, &p, None);
        }
        assert_eq!(row.status, RowStatus::Is(OrderStatus::Cancelled));
        assert_eq!((row.updated_at, row.version, row.amount_cents), (9, 2, 200));
        assert_eq!(held, holding(OrderStatus::Cancelled, 2));
        // A replay plans nothing.
        let p = plan_order(O, &row, &copies, &[te("t.node1", 9, &c)], None);
        assert!(p.row.is_none() && p.new_copies.is_empty() && p.events.is_empty());
        // Node 1 voids its copy: the creation still stands on node 2's,
        // which its event row now names; nothing else moves.
        let v1 = Voiding {
            topic: "t.node1",
            covers: &(9..10),
        };
        let p = plan_order(O, &row, &copies, &[], Some(v1));
        assert_eq!(
            p.renamed,
            [(
                Move::Created,
                Origin {
                    topic: "t.node2".into(),
                    lsn: 4
                }
            )]
        );
        assert!(p.gone.is_empty() && p.row.is_none());
        assert_eq!(p.delta, Counters::ZERO);
        apply(&mut row, &mut copies, &p, Some(v1));
        // Node 2 voids its range: no copy stands, the order is VOID.
        let v2 = Voiding {
            topic: "t.node2",
            covers: &(4..6),
        };
        let p = plan_order(O, &row, &copies, &[], Some(v2));
        held += p.delta;
        assert_eq!(p.gone, [Move::Created, Move::Cancelled]);
        apply(&mut row, &mut copies, &p, Some(v2));
        assert_eq!(
            (row.status, row.version, row.updated_at),
            (RowStatus::Void, 0, 2)
        );
        assert_eq!(held, Counters::ZERO);
    }

    #[test]
    fn an_abort_of_a_pay_takes_the_order_back_to_created() {
        let c = created();
        let pay = Event::OrderPaid {
            order_id: 5,
            activity_id: 1,
            user_id: 7,
            quantity: 2,
            at: 8,
        };
        let mut row = OrderRow::placeholder(O);
        let mut copies = Vec::new();
        let p = plan_order(O, &row, &copies, &[te("t", 1, &c), te("t", 2, &pay)], None);
        assert_eq!(p.delta, holding(OrderStatus::Paid, 2));
        assert_eq!(p.events.len(), 2);
        apply(&mut row, &mut copies, &p, None);
        assert_eq!(
            (row.status, row.updated_at),
            (RowStatus::Is(OrderStatus::Paid), 8)
        );
        let v = Voiding {
            topic: "t",
            covers: &(2..3),
        };
        let p = plan_order(O, &row, &copies, &[], Some(v));
        assert_eq!(
            p.delta,
            holding(OrderStatus::Created, 2) - holding(OrderStatus::Paid, 2)
        );
        assert_eq!(p.gone, [Move::Paid]);
        apply(&mut row, &mut copies, &p, Some(v));
        assert_eq!(
            (row.status, row.updated_at),
            (RowStatus::Is(OrderStatus::Created), 2)
        );
    }

    #[test]
    fn a_sale_is_opened_once_described_and_void_when_no_copy_stands() {
        let sale = Event::ActivityCreated {
            id: 1,
            sku_id: "S".into(),
            name: "N".into(),
            price_cents: 100,
            stock: 10,
            start_at: 0,
            end_at: 1,
            per_user_limit: 5,
            created_at: 1,
        };
        let held = holding(OrderStatus::Paid, 3);
        // Orders folded before any creation: negative remaining.
        let r = sale_row(
            &ActivityRow::placeholder(1),
            None,
            SaleCopies::default(),
            held,
        );
        assert_eq!(r.counters, held);
        let r = sale_row(
            &r,
            Some(&sale),
            SaleCopies {
                kept: 2,
                standing: 1,
            },
            held,
        );
        assert_eq!(
            (
                r.counters.remaining,
                r.counters.reserved,
                r.counters.sold,
                r.void
            ),
            (7, 0, 3, false)
        );
        let r = sale_row(
            &r,
            None,
            SaleCopies {
                kept: 2,
                standing: 0,
            },
            held,
        );
        assert!(r.void);
        assert_eq!(r.counters.remaining, 7);
    }
}
