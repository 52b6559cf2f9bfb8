//! How an event moves its sale's stock counters: the one statement of that
//! arithmetic, pure and allocation-free. The engine's own transitions take
//! their counter moves from here, and so can anything that projects the
//! log (the MySQL sink folding events into its `activities` rows, and
//! undoing the events of an aborted group).
//!
//! Everything follows from one table, [`holding`]: what an order in each
//! status holds of its sale, measured from the order not existing.
//!
//! | status      | remaining | reserved | sold |
//! |-------------|-----------|----------|------|
//! | `CREATED`   | −q        | +q       | 0    |
//! | `PAID`      | −q        | 0        | +q   |
//! | `CANCELLED` | 0         | 0        | 0    |
//!
//! An event moves its order from one row to another ([`effect`]); undoing
//! it moves the order back ([`undo`]). So every order event conserves
//! `remaining + reserved + sold`, a sale's creation sets it to `stock`,
//! and an admin's added stock raises both by the units added
//! ([`stock_added`]); moving a sale's window moves no counter.
//!
//! The engine parks a cancelled order's units in a fourth counter,
//! `releasing`, until the cancel is durable: here they count as
//! `remaining`, where they are headed (and where a replay puts them).

use std::ops::{Add, AddAssign, Neg, Sub};

use crate::event::Event;
use crate::types::{ActivityId, OrderStatus};

/// A sale's three stock counters, or a change to them. Signed: a change
/// takes from some, and a projection may pass through negative values
/// while it applies commutative changes out of their original order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Counters {
    /// Units on sale.
    pub remaining: i64,
    /// Units in orders created and not yet paid or cancelled.
    pub reserved: i64,
    /// Units in paid orders.
    pub sold: i64,
}

impl Counters {
    pub const ZERO: Counters = Counters {
        remaining: 0,
        reserved: 0,
        sold: 0,
    };

    /// `remaining + reserved + sold`: a sale's stock, which no order event
    /// changes.
    #[inline]
    pub const fn total(self) -> i64 {
        self.remaining + self.reserved + self.sold
    }

    #[inline]
    pub const fn plus(self, d: Counters) -> Counters {
        Counters {
            remaining: self.remaining + d.remaining,
            reserved: self.reserved + d.reserved,
            sold: self.sold + d.sold,
        }
    }

    #[inline]
    pub const fn minus(self, d: Counters) -> Counters {
        Counters {
            remaining: self.remaining - d.remaining,
            reserved: self.reserved - d.reserved,
            sold: self.sold - d.sold,
        }
    }

    #[inline]
    pub const fn negated(self) -> Counters {
        Counters::ZERO.minus(self)
    }
}

impl Add for Counters {
    type Output = Counters;
    #[inline]
    fn add(self, d: Counters) -> Counters {
        self.plus(d)
    }
}

impl AddAssign for Counters {
    #[inline]
    fn add_assign(&mut self, d: Counters) {
        *self = self.plus(d);
    }
}

impl Sub for Counters {
    type Output = Counters;
    #[inline]
    fn sub(self, d: Counters) -> Counters {
        self.minus(d)
    }
}

impl Neg for Counters {
    type Output = Counters;
    #[inline]
    fn neg(self) -> Counters {
        self.negated()
    }
}

/// What an order of `quantity` units in `status` holds of its sale,
/// measured from the order not existing (see the table above).
#[inline]
pub const fn holding(status: OrderStatus, quantity: u32) -> Counters {
    let q = quantity as i64;
    match status {
        OrderStatus::Created => Counters {
            remaining: -q,
            reserved: q,
            sold: 0,
        },
        OrderStatus::Paid => Counters {
            remaining: -q,
            reserved: 0,
            sold: q,
        },
        OrderStatus::Cancelled => Counters::ZERO,
    }
}

/// An order of `quantity` units is created: units go from on sale to
/// reserved.
#[inline]
pub const fn created(quantity: u32) -> Counters {
    holding(OrderStatus::Created, quantity)
}

/// An order of `quantity` units is paid: units go from reserved to sold.
#[inline]
pub const fn paid(quantity: u32) -> Counters {
    holding(OrderStatus::Paid, quantity).minus(holding(OrderStatus::Created, quantity))
}

/// An order of `quantity` units is cancelled (by its buyer or by timeout):
/// units go from reserved back on sale.
#[inline]
pub const fn cancelled(quantity: u32) -> Counters {
    holding(OrderStatus::Cancelled, quantity).minus(holding(OrderStatus::Created, quantity))
}

/// A sale opens with `stock` units, all on sale. Added to counters that
/// already hold folded orders of the sale (a projection that saw them
/// first), it gives `remaining = stock - reserved - sold`, as their total
/// was 0.
#[inline]
pub const fn opened(stock: u64) -> Counters {
    Counters {
        remaining: stock as i64,
        reserved: 0,
        sold: 0,
    }
}

/// An admin adds `units` to a sale: they go on sale (and the sale's
/// `stock` rises by as much).
#[inline]
pub const fn stock_added(units: u64) -> Counters {
    Counters {
        remaining: units as i64,
        reserved: 0,
        sold: 0,
    }
}

/// What applying `ev` does to its sale's counters: the sale, and the
/// change. Any event applies whatever state its order is in (checking that
/// the move is allowed is the caller's part: the engine refuses events
/// that do not fit; a projection trusts the log).
#[inline]
pub const fn effect(ev: &Event) -> (ActivityId, Counters) {
    match ev {
        Event::ActivityCreated { id, stock, .. } => (*id, opened(*stock)),
        Event::OrderCreated {
            activity_id,
            quantity,
            ..
        } => (*activity_id, created(*quantity)),
        Event::OrderPaid {
            activity_id,
            quantity,
            ..
        } => (*activity_id, paid(*quantity)),
        Event::OrderCancelled {
            activity_id,
            quantity,
            ..
        } => (*activity_id, cancelled(*quantity)),
        Event::StockAdded { id, added, .. } => (*id, stock_added(*added)),
        Event::ActivityWindowChanged { id, .. } => (*id, Counters::ZERO),
    }
}

/// The status an order is left in by the order event `ev` (`None` for an
/// event of the sale itself).
#[inline]
pub const fn status_after(ev: &Event) -> Option<OrderStatus> {
    match ev {
        Event::ActivityCreated { .. }
        | Event::StockAdded { .. }
        | Event::ActivityWindowChanged { .. } => None,
        Event::OrderCreated { .. } => Some(OrderStatus::Created),
        Event::OrderPaid { .. } => Some(OrderStatus::Paid),
        Event::OrderCancelled { .. } => Some(OrderStatus::Cancelled),
    }
}

/// What undoing an event does, given the state it is undone in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Undo {
    /// Nothing: the event's effect is not there to undo (its order is
    /// unknown or gone, or has not made the move the event made, or made
    /// it and was moved back already). Undoing twice is harmless.
    Nothing,
    /// A sale's creation is undone: the sale becomes void, a tombstone
    /// nobody can see or buy from. No counter moves.
    VoidSale(ActivityId),
    /// Added stock is undone: `units` leave the sale's `stock` and its
    /// `remaining` ([`stock_added`] negated).
    StockRemoved { activity: ActivityId, units: u64 },
    /// A window change is undone: the sale's window is `[start_at,
    /// end_at)` again. Changes of one sale are undone newest first (the
    /// log writer and an abort both do), so the oldest one's window is
    /// where they end.
    Window {
        activity: ActivityId,
        start_at: crate::types::Millis,
        end_at: crate::types::Millis,
    },
    /// Add `delta` to the sale's counters; the order is then in `status`,
    /// or gone (`None`: its creation was undone, whatever became of it
    /// since).
    Order {
        activity: ActivityId,
        delta: Counters,
        status: Option<OrderStatus>,
    },
}

/// Undo `ev` with its order now in `status_now` (`None`: the order is
/// unknown, or gone already; ignored for an event of the sale itself). Events may be
/// undone in any order:
/// * a creation removes the order and returns all it holds, whatever its
///   status (a paid order's units leave `sold`, a cancelled one holds
///   none);
/// * a pay or a cancel takes the order back to `CREATED` only if it is in
///   the status that event left it in; otherwise there is nothing to undo.
///
/// So `undo(ev, status_after(ev))` exactly reverses [`effect`] for every
/// order event.
#[inline]
pub const fn undo(ev: &Event, status_now: Option<OrderStatus>) -> Undo {
    let (activity, quantity, made) = match ev {
        Event::ActivityCreated { id, .. } => return Undo::VoidSale(*id),
        Event::StockAdded { id, added, .. } => {
            return Undo::StockRemoved {
                activity: *id,
                units: *added,
            }
        }
        Event::ActivityWindowChanged {
            id,
            prev_start_at,
            prev_end_at,
            ..
        } => {
            return Undo::Window {
                activity: *id,
                start_at: *prev_start_at,
                end_at: *prev_end_at,
            }
        }
        Event::OrderCreated {
            activity_id,
            quantity,
            ..
        } => (*activity_id, *quantity, None),
        Event::OrderPaid {
            activity_id,
            quantity,
            ..
        } => (*activity_id, *quantity, Some(OrderStatus::Paid)),
        Event::OrderCancelled {
            activity_id,
            quantity,
            ..
        } => (*activity_id, *quantity, Some(OrderStatus::Cancelled)),
    };
    let Some(now) = status_now else {
        return Undo::Nothing;
    };
    match made {
        // A creation: the order goes, with all it holds.
        None => Undo::Order {
            activity,
            delta: holding(now, quantity).negated(),
            status: None,
        },
        // A move: back to CREATED, if the order is where the move left it.
        Some(to) => {
            let made_it = matches!(
                (now, to),
                (OrderStatus::Paid, OrderStatus::Paid)
                    | (OrderStatus::Cancelled, OrderStatus::Cancelled)
            );
            if !made_it {
                return Undo::Nothing;
            }
            Undo::Order {
                activity,
                delta: holding(OrderStatus::Created, quantity).minus(holding(to, quantity)),
                status: Some(OrderStatus::Created),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::CancelReason;

    const Q: u32 = 3;

    fn events() -> [Event; 5] {
        [
            Event::ActivityCreated {
                id: 4,
                sku_id: "S".into(),
                name: "N".into(),
                price_cents: 100,
                stock: 10,
                start_at: 0,
                end_at: 1,
                per_user_limit: 5,
                created_at: 0,
            },
            Event::OrderCreated {
                order_id: 9,
                activity_id: 4,
                user_id: 7,
                quantity: Q,
                amount_cents: 300,
                request_id: "r".into(),
                created_at: 0,
                expires_at: 1,
            },
            Event::OrderPaid {
                order_id: 9,
                activity_id: 4,
                user_id: 7,
                quantity: Q,
                at: 1,
            },
            Event::OrderCancelled {
                order_id: 9,
                activity_id: 4,
                user_id: 7,
                quantity: Q,
                reason: CancelReason::User,
                at: 1,
            },
            Event::OrderCancelled {
                order_id: 9,
                activity_id: 4,
                user_id: 7,
                quantity: Q,
                reason: CancelReason::Timeout,
                at: 1,
            },
        ]
    }

    fn c(remaining: i64, reserved: i64, sold: i64) -> Counters {
        Counters {
            remaining,
            reserved,
            sold,
        }
    }

    #[test]
    fn each_event_moves_the_counters_as_the_ledger_says() {
        let [open, create, pay, cancel, timeout] = events();
        assert_eq!(effect(&open), (4, c(10, 0, 0)));
        assert_eq!(effect(&create), (4, c(-3, 3, 0)));
        assert_eq!(effect(&pay), (4, c(0, -3, 3)));
        assert_eq!(effect(&cancel), (4, c(3, -3, 0)));
        assert_eq!(effect(&timeout), (4, c(3, -3, 0)));
        // Order events conserve the total; a sale's creation sets it.
        for ev in events() {
            let (_, d) = effect(&ev);
            let want = if let Event::ActivityCreated { stock, .. } = ev {
                stock as i64
            } else {
                0
            };
            assert_eq!(d.total(), want, "{ev:?}");
        }
        // A whole life, from the sale's creation: paid, or cancelled.
        let s = c(0, 0, 0) + effect(&open).1 + effect(&create).1;
        assert_eq!(s, c(7, 3, 0));
        assert_eq!(s + effect(&pay).1, c(7, 0, 3));
        assert_eq!(s + effect(&cancel).1, c(10, 0, 0));
        // Orders folded before their sale (a log from before the sale was
        // logged first): its creation still gives `stock - reserved - sold`.
        let early = effect(&create).1 + effect(&pay).1;
        assert_eq!(early + effect(&open).1, c(7, 0, 3));
    }

    #[test]
    fn applying_then_undoing_is_the_identity_for_every_event() {
        let start = c(7, 2, 1);
        for ev in events() {
            let (a, d) = effect(&ev);
            match undo(&ev, status_after(&ev)) {
                Undo::VoidSale(id) => {
                    assert!(matches!(ev, Event::ActivityCreated { .. }));
                    assert_eq!(id, a);
                }
                Undo::Order {
                    activity,
                    delta,
                    status,
                } => {
                    assert_eq!(activity, a);
                    assert_eq!(start + d + delta, start, "{ev:?}");
                    let back = match ev {
                        Event::OrderCreated { .. } => None,
                        _ => Some(OrderStatus::Created),
                    };
                    assert_eq!(status, back, "{ev:?}");
                }
                Undo::Nothing | Undo::StockRemoved { .. } | Undo::Window { .. } => {
                    panic!("{ev:?} undoes as {:?}", undo(&ev, status_after(&ev)))
                }
            }
        }
    }

    #[test]
    fn undoing_a_creation_returns_all_the_order_holds_in_any_status() {
        let [_, create, pay, cancel, _] = events();
        // Created then paid, then the creation undone first (events may be
        // undone in any order): the units leave `sold`.
        let paid = effect(&create).1 + effect(&pay).1;
        for (status, counters) in [
            (OrderStatus::Created, effect(&create).1),
            (OrderStatus::Paid, paid),
            (
                OrderStatus::Cancelled,
                effect(&create).1 + effect(&cancel).1,
            ),
        ] {
            let Undo::Order {
                delta,
                status: after,
                ..
            } = undo(&create, Some(status))
            else {
                panic!("a creation is always undone");
            };
            assert_eq!(counters + delta, Counters::ZERO, "{status:?}");
            assert_eq!(after, None, "the order is gone");
        }
        assert_eq!(undo(&create, None), Undo::Nothing, "unknown order");
    }

    #[test]
    fn undoing_a_move_the_order_has_not_made_does_nothing() {
        let [open, _, pay, cancel, _] = events();
        for s in [
            None,
            Some(OrderStatus::Created),
            Some(OrderStatus::Cancelled),
        ] {
            assert_eq!(undo(&pay, s), Undo::Nothing, "pay undone from {s:?}");
        }
        for s in [None, Some(OrderStatus::Created), Some(OrderStatus::Paid)] {
            assert_eq!(undo(&cancel, s), Undo::Nothing, "cancel undone from {s:?}");
        }
        assert_eq!(undo(&open, None), Undo::VoidSale(4));
        assert_eq!(undo(&open, Some(OrderStatus::Paid)), Undo::VoidSale(4));
    }

    #[test]
    fn changes_of_a_sale_move_its_stock_or_nothing_and_undo_to_where_they_were() {
        let add = Event::StockAdded {
            id: 4,
            added: 5,
            at: 2,
        };
        let window = Event::ActivityWindowChanged {
            id: 4,
            start_at: 10,
            end_at: 20,
            prev_start_at: 1,
            prev_end_at: 30,
            at: 2,
        };
        // Added units go on sale: the total (the stock) rises by as much.
        assert_eq!(effect(&add), (4, c(5, 0, 0)));
        assert_eq!(effect(&add).1.total(), 5);
        assert_eq!(effect(&window), (4, Counters::ZERO));
        assert_eq!(status_after(&add), None);
        assert_eq!(status_after(&window), None);
        // Undone whatever an order's status (they concern no order).
        for s in [None, Some(OrderStatus::Created)] {
            assert_eq!(
                undo(&add, s),
                Undo::StockRemoved {
                    activity: 4,
                    units: 5
                }
            );
            assert_eq!(
                undo(&window, s),
                Undo::Window {
                    activity: 4,
                    start_at: 1,
                    end_at: 30
                }
            );
        }
        // A sale opened, orders, added stock: remaining = stock - held.
        let [open, create, pay, _, _] = events();
        let s = effect(&open).1 + effect(&create).1 + effect(&pay).1 + effect(&add).1;
        assert_eq!(s, c(12, 0, 3));
        assert_eq!(s.total(), 15);
    }

    #[test]
    fn counters_arithmetic() {
        let a = c(1, 2, 3);
        let b = c(10, 20, 30);
        assert_eq!(a + b, c(11, 22, 33));
        assert_eq!(b - a, c(9, 18, 27));
        assert_eq!(-a, c(-1, -2, -3));
        let mut x = a;
        x += b;
        assert_eq!(x, a + b);
        assert_eq!(a.total(), 6);
        assert_eq!(Counters::default(), Counters::ZERO);
    }
}
