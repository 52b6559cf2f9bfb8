//! State transitions: the one function that applies an order event
//! ([`Engine::apply_locked`]), and undoing one ([`Engine::revert`],
//! [`Engine::revert_replayed`]) or finishing one once it is durable
//! ([`Engine::durable`]). How much each moves which counter comes from
//! [`crate::fold`]; this file decides the order of the atomic moves and
//! checks, in debug builds, what every move must keep true:
//! * each counter stays within `0..=stock` (`remaining` only below: a
//!   replay may pass through a negative value, see [`Activity`]), with no
//!   overflow;
//! * decreases come before increases, so `sold + reserved <= stock` at
//!   every instant for any reader (a sum of two atomics cannot be read
//!   consistently here; [`Engine::check_invariants`] checks it whole);
//! * an order moves only `CREATED → PAID` or `CREATED → CANCELLED`, and
//!   back only when such a move is undone.
//!
//! Release builds do exactly the atomic adds: the checks compile away.

use std::cmp::Reverse;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::activity::Activity;
use crate::engine::Engine;
use crate::error::{ApplyError, ReplayError};
use crate::event::{Event, EventKind};
use crate::fold::{self, Counters, Undo};
use crate::types::*;
use crate::users::{Order, RequestKey, Stripe};
use crate::view::OrderView;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Live command: the stock CAS may fail (another buyer won the unit).
    Live,
    /// Replay of the log: counters are applied as logged.
    Replay,
}

/// `counter += d` for a counter that stays within `0..=stock` (`reserved`,
/// `sold`, `releasing`): every unit taken from one was put there before by
/// the same order, under the same stripe lock.
///
/// `live`: checked (debug builds). A replay is not: its input is a log
/// from outside, which may not be this engine's history (refused whole by
/// the invariant check after recovery, never a panic), and `apply_batch`
/// replays stripes in parallel, so even a valid log may pass a counter
/// through a value no live instant had (a create applied before another
/// stripe's earlier cancel).
///
/// `stock` is the sale's (an atomic an admin may raise): loaded only by the
/// check, so release builds do the one add.
#[inline(always)]
pub(crate) fn shift(counter: &AtomicI64, d: i64, stock: &AtomicU64, live: bool) {
    let _prev = counter.fetch_add(d, Ordering::AcqRel);
    debug_assert!(
        !live
            || _prev
                .checked_add(d)
                .is_some_and(|n| (0..=stock.load(Ordering::Acquire) as i64).contains(&n)),
        "a counter at {_prev} moved by {d} leaves 0..={}",
        stock.load(Ordering::Acquire)
    );
}

/// `counter += d` for `remaining`, which never exceeds the stock but may
/// pass below zero in replay (commutative moves applied out of the order
/// they raced in) and in an undone cancel whose units were sold again.
#[inline(always)]
pub(crate) fn shift_remaining(counter: &AtomicI64, d: i64, stock: &AtomicU64, live: bool) {
    let _prev = counter.fetch_add(d, Ordering::AcqRel);
    debug_assert!(
        !live
            || _prev
                .checked_add(d)
                .is_some_and(|n| n <= stock.load(Ordering::Acquire) as i64),
        "remaining at {_prev} moved by {d} exceeds the stock {}",
        stock.load(Ordering::Acquire)
    );
}

impl Engine {
    /// The one place order state changes. Called with the user's stripe
    /// locked; a failure changes nothing. In `Live` mode a create fails if
    /// the stock CAS loses (or the sale was voided meanwhile, or the stripe
    /// is full); every other failure is a bug in the caller (live) or a log
    /// that is not ours (replay).
    pub(crate) fn apply_locked(
        &self,
        ev: &Event,
        stripe: &mut Stripe,
        mode: Mode,
    ) -> Result<OrderView, ApplyError> {
        let live = mode == Mode::Live;
        match ev {
            Event::ActivityCreated { .. }
            | Event::StockAdded { .. }
            | Event::ActivityWindowChanged { .. } => {
                unreachable!("events of a sale itself are not applied under a user lock")
            }
            Event::OrderCreated {
                order_id,
                activity_id,
                user_id,
                quantity,
                amount_cents,
                request_id,
                created_at,
                expires_at,
            } => {
                let a = self.activity(*activity_id).ok_or(ReplayError::NoActivity {
                    order: *order_id,
                    activity: *activity_id,
                })?;
                // Refused before any counter moves: a failed apply changes
                // nothing.
                if !stripe.has_room() {
                    return Err(ReplayError::StripeFull { order: *order_id }.into());
                }
                let key = RequestKey::of(request_id);
                if mode == Mode::Replay
                    && (stripe.has_id(*order_id) || stripe.by_request(*user_id, key).is_some())
                {
                    return Err(ReplayError::Duplicate { order: *order_id }.into());
                }
                // Live ids are generated unique, and the command looked the
                // request id up under this lock.
                debug_assert!(
                    mode == Mode::Replay
                        || !(stripe.has_id(*order_id)
                            || stripe.by_request(*user_id, key).is_some()),
                    "live order {order_id} or its request id seen twice"
                );
                let d = fold::created(*quantity);
                // Noted before the CAS below, whose release publishes it:
                // whoever sees the stock this order takes sees its key
                // (`Engine::public_refusal`). A CAS that then loses leaves
                // a bit set for nothing: a false positive, never wrong.
                a.requests.note(key);
                // Off sale first (the CAS that decides a race), then into
                // reserve.
                if mode == Mode::Live {
                    if !a.try_take(-d.remaining) {
                        return Err(ApplyError::SoldOut);
                    }
                } else {
                    shift_remaining(&a.remaining, d.remaining, &a.stock, live);
                }
                shift(&a.reserved, d.reserved, &a.stock, live);
                let order = Order {
                    id: *order_id,
                    activity_id: *activity_id,
                    user_id: *user_id,
                    quantity: *quantity,
                    amount_cents: *amount_cents,
                    status: OrderStatus::Created,
                    request_key: key,
                    created_at: *created_at,
                    expires_at: *expires_at,
                    updated_at: *created_at,
                    cancel_reason: None,
                };
                let view = OrderView::from(&order);
                stripe.push_order(order);
                stripe
                    .expiries
                    .push(Reverse((*expires_at, *user_id, *order_id)));
                self.ids.observe(*order_id);
                Ok(view)
            }
            Event::OrderPaid {
                order_id,
                activity_id,
                user_id,
                quantity,
                at,
            } => {
                let a = self
                    .activity_any(*activity_id)
                    .ok_or(ReplayError::NoActivity {
                        order: *order_id,
                        activity: *activity_id,
                    })?;
                let o = stripe
                    .order_mut(*user_id, *order_id)
                    .ok_or(ReplayError::UnknownOrder {
                        order: *order_id,
                        event: EventKind::OrderPaid,
                    })?;
                if o.status != OrderStatus::Created || o.quantity != *quantity {
                    return Err(ReplayError::BadMove {
                        order: *order_id,
                        event: EventKind::OrderPaid,
                        from: o.status,
                    }
                    .into());
                }
                debug_assert!(o.status.moves_to(OrderStatus::Paid));
                // Paying keeps the units held: the (user, sale) record
                // does not move.
                o.status = OrderStatus::Paid;
                o.updated_at = *at;
                let d = fold::paid(*quantity);
                // Reserved first, then sold: the sum never exceeds stock.
                shift(&a.reserved, d.reserved, &a.stock, live);
                shift(&a.sold, d.sold, &a.stock, live);
                Ok(OrderView::from(&*o))
            }
            Event::OrderCancelled {
                order_id,
                activity_id,
                user_id,
                quantity,
                reason,
                at,
            } => {
                let a = self
                    .activity_any(*activity_id)
                    .ok_or(ReplayError::NoActivity {
                        order: *order_id,
                        activity: *activity_id,
                    })?;
                let i = stripe
                    .find(*user_id, *order_id)
                    .ok_or(ReplayError::UnknownOrder {
                        order: *order_id,
                        event: EventKind::OrderCancelled,
                    })?;
                let o = &stripe.orders[i];
                if o.status != OrderStatus::Created || o.quantity != *quantity {
                    return Err(ReplayError::BadMove {
                        order: *order_id,
                        event: EventKind::OrderCancelled,
                        from: o.status,
                    }
                    .into());
                }
                stripe.cancel_at(i, *at, *reason);
                let view = OrderView::from(&stripe.orders[i]);
                let d = fold::cancelled(*quantity);
                // Out of reserve first, then back on sale: parked until
                // the cancel is durable, with a log that waits for that.
                shift(&a.reserved, d.reserved, &a.stock, live);
                if mode == Mode::Live && self.cfg.hold_released_until_durable {
                    shift(&a.releasing, d.remaining, &a.stock, live);
                } else {
                    shift_remaining(&a.remaining, d.remaining, &a.stock, live);
                }
                Ok(view)
            }
        }
    }

    /// The log holds `ev` now: finish what waited for that (units of a
    /// cancelled order, or units an admin added, go on sale).
    pub fn durable(&self, ev: &Event) {
        if !self.cfg.hold_released_until_durable {
            return;
        }
        let live = true;
        let (id, units) = match ev {
            Event::OrderCancelled {
                activity_id,
                quantity,
                ..
            } => (*activity_id, *quantity as i64),
            Event::StockAdded { id, added, .. } => (*id, *added as i64),
            _ => return,
        };
        if let Some(a) = self.activity_any(id) {
            shift(&a.releasing, -units, &a.stock, live);
            shift_remaining(&a.remaining, units, &a.stock, live);
        }
    }

    /// Undo a live event the log could not make durable. Events may be
    /// reverted in any order: undoing a creation removes the order and
    /// returns its units wherever they are, and undoing a later move of an
    /// order that is already gone does nothing.
    pub fn revert(&self, ev: &Event) {
        self.revert_in(ev, Mode::Live)
    }

    /// Undo a replayed event (an abort record in the log). Replayed
    /// cancels put their units straight back on sale (nothing waits for
    /// durability during replay), so that is where undoing takes them from.
    pub fn revert_replayed(&self, ev: &Event) {
        self.revert_in(ev, Mode::Replay)
    }

    /// What to undo, and the counters' change, come from [`fold::undo`];
    /// this finds the order and puts it back.
    fn revert_in(&self, ev: &Event, mode: Mode) {
        let live = mode == Mode::Live;
        let parked = live && self.cfg.hold_released_until_durable;
        let (Some(user), Some(order)) = (ev.user_id(), ev.order_id()) else {
            match fold::undo(ev, None) {
                // Slots are write-once: the sale becomes a tombstone that
                // nobody can see or buy from; its id is not reused.
                Undo::VoidSale(id) => {
                    if let Some(a) = self.activity_any(id) {
                        a.void.store(true, Ordering::Release);
                    }
                }
                u @ (Undo::StockRemoved { .. } | Undo::Window { .. }) => {
                    self.undo_sale_change(u, parked, live)
                }
                Undo::Nothing | Undo::Order { .. } => {}
            }
            return;
        };
        let Some(a) = self.activity_any(ev.activity_id()) else {
            return;
        };
        let mut stripe = self.users.lock(user);
        let Some(i) = stripe.find(user, order) else {
            return;
        };
        let now = stripe.orders[i].status;
        let Undo::Order { delta, status, .. } = fold::undo(ev, Some(now)) else {
            return;
        };
        match status {
            // The creation: the order goes, with whatever it holds.
            None => {
                let o = stripe.remove_order(user, order).expect("found above");
                debug_assert_eq!(Some(o.quantity), ev.quantity());
                // A cancelled order holds nothing (`delta` is zero), but
                // its cancel cannot be durable (it came after this
                // creation): while parked, its units wait in `releasing`,
                // and now go on sale.
                if now == OrderStatus::Cancelled && parked {
                    let q = o.quantity as i64;
                    shift(&a.releasing, -q, &a.stock, live);
                    shift_remaining(&a.remaining, q, &a.stock, live);
                }
            }
            // A pay or a cancel: back to CREATED.
            Some(to) => {
                debug_assert!(to == OrderStatus::Created && to.moves_to(now));
                if now == OrderStatus::Cancelled {
                    let expires_at = stripe.orders[i].expires_at;
                    stripe.uncancel_at(i);
                    // Back on the payment clock.
                    stripe.expiries.push(Reverse((expires_at, user, order)));
                } else {
                    let o = &mut stripe.orders[i];
                    o.status = to;
                    // CREATED is only ever left once: it was last updated
                    // when it was created.
                    o.updated_at = o.created_at;
                    // Back on the payment clock too: a sweep that ran while
                    // the pay was in flight popped this order's deadline and
                    // skipped it as paid. Without this it would hold its
                    // units until a restart rebuilt the deadlines (found by
                    // the chaos soak: a broker pause failed a group with a
                    // pay in it). A second entry for an order still in the
                    // heap is harmless: the sweep skips any order no longer
                    // CREATED.
                    let expires_at = o.expires_at;
                    stripe.expiries.push(Reverse((expires_at, user, order)));
                }
            }
        }
        shift_back(a, delta, parked, live);
    }
}

/// Apply an undo's `delta` to `a`: decreases first, then increases, so
/// `sold + reserved <= stock` holds at every instant. Units an undone
/// cancel takes back from `remaining` come from `releasing` while cancels
/// are parked: that is where its units still are.
fn shift_back(a: &Activity, d: Counters, parked: bool, live: bool) {
    if d.remaining < 0 {
        if parked {
            shift(&a.releasing, d.remaining, &a.stock, live);
        } else {
            shift_remaining(&a.remaining, d.remaining, &a.stock, live);
        }
    }
    if d.reserved < 0 {
        shift(&a.reserved, d.reserved, &a.stock, live);
    }
    if d.sold < 0 {
        shift(&a.sold, d.sold, &a.stock, live);
    }
    if d.remaining > 0 {
        shift_remaining(&a.remaining, d.remaining, &a.stock, live);
    }
    if d.reserved > 0 {
        shift(&a.reserved, d.reserved, &a.stock, live);
    }
    if d.sold > 0 {
        shift(&a.sold, d.sold, &a.stock, live);
    }
}

#[cfg(all(test, debug_assertions))]
mod tests {
    use super::*;

    /// Found by the log_segment fuzz target: a CRC-clean log whose order
    /// takes more than the sale's stock is a log that is not ours, refused
    /// by the invariant check after recovery, never a panic in replay.
    #[test]
    fn replaying_a_log_that_is_not_ours_never_panics() {
        let e = Engine::new(crate::EngineConfig::default());
        e.apply(&Event::ActivityCreated {
            id: 1,
            sku_id: "S".into(),
            name: "N".into(),
            price_cents: 1,
            stock: 5,
            start_at: 0,
            end_at: 10,
            per_user_limit: 1,
            created_at: 0,
        })
        .unwrap();
        let _ = e.apply(&Event::OrderCreated {
            order_id: 1 << 22,
            activity_id: 1,
            user_id: 7,
            quantity: 34_305,
            amount_cents: 34_305,
            request_id: "r".into(),
            created_at: 1,
            expires_at: 2,
        });
        assert!(e.check_invariants().is_err());
    }

    #[test]
    #[should_panic(expected = "leaves 0..=10")]
    fn a_counter_taken_below_zero_is_caught() {
        let c = AtomicI64::new(2);
        shift(&c, -3, &AtomicU64::new(10), true);
    }

    #[test]
    #[should_panic(expected = "leaves 0..=10")]
    fn a_counter_past_the_stock_is_caught() {
        let c = AtomicI64::new(8);
        shift(&c, 3, &AtomicU64::new(10), true);
    }

    #[test]
    #[should_panic(expected = "exceeds the stock 10")]
    fn remaining_past_the_stock_is_caught() {
        let c = AtomicI64::new(8);
        shift_remaining(&c, 3, &AtomicU64::new(10), true);
    }

    #[test]
    #[should_panic]
    fn an_overflow_is_caught() {
        let c = AtomicI64::new(i64::MAX);
        shift_remaining(&c, 1, &AtomicU64::new(i64::MAX as u64), true);
    }

    #[test]
    fn remaining_may_pass_below_zero_and_counters_reach_their_bounds() {
        let c = AtomicI64::new(1);
        shift_remaining(&c, -3, &AtomicU64::new(10), true);
        assert_eq!(c.load(Ordering::Relaxed), -2);
        let c = AtomicI64::new(3);
        shift(&c, -3, &AtomicU64::new(10), true);
        shift(&c, 10, &AtomicU64::new(10), true);
        assert_eq!(c.load(Ordering::Relaxed), 10);
    }
}
