//! Folding events into the sales' `activities` rows, and undoing an
//! aborted group: pure functions over rows read from MySQL, so the writer
//! only reads, calls these and writes back.
//!
//! The arithmetic is the engine's ([`flashd_engine::fold`]): an event's
//! effect on its sale's counters, and an undo given the order's status
//! before the abort. What is the sink's own is only the projection: the
//! LSN guards (a row skips what it already has), the sale's other columns,
//! and the `VOID` status an order row keeps once its creation is undone.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use flashd_engine::fold::{effect, undo, Undo};
use flashd_engine::{ActivityId, Counters, Event, OrderId};

use crate::rows::{ActivityRow, LsnEvent, OrderRef, RowStatus};

/// What an abort does to one sale: its counters move back, and a sale
/// whose creation is undone becomes void; stock an admin added leaves it,
/// and a window an admin moved is the one before the group's first move.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SaleUndo {
    pub counters: Counters,
    pub void: bool,
    /// Units to take out of the `stock` column (added stock undone).
    pub stock_removed: u64,
    /// The window to put back, if the group moved it.
    pub window: Option<(u64, u64)>,
}

/// An order row as found before an abort.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RowState {
    pub status: RowStatus,
    /// LSN of the last event applied to it.
    pub version: u64,
}

/// An order row an abort moves to another status.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StatusChange {
    pub order: OrderRef,
    pub to: RowStatus,
}

/// Everything an abort does: per sale named by its events (every one of
/// them, changed or not: its version is raised to the abort's LSN, so a
/// late event of it finds it older), and per order row still to move.
#[derive(Debug, Default)]
pub(crate) struct GroupUndo {
    pub sales: HashMap<ActivityId, SaleUndo>,
    pub changes: Vec<StatusChange>,
}

/// Undo `evs` (an aborted group, newest last) at abort `lsn`, as the
/// engine reverts a replayed group, over the rows `found` before it (an
/// order without a row, or whose row is `VOID`, is gone: nothing to undo).
pub(crate) fn undo_group(evs: &[&Event], lsn: u64, found: HashMap<OrderId, RowState>) -> GroupUndo {
    let mut status = found;
    let mut out = GroupUndo::default();
    for ev in evs {
        out.sales.entry(ev.activity_id()).or_default();
    }
    for ev in evs.iter().rev().copied() {
        let row = ev.order_id().and_then(|o| status.get_mut(&o));
        let now = row.as_ref().and_then(|r| r.status.engine());
        match undo(ev, now) {
            Undo::Nothing => {}
            Undo::VoidSale(id) => out.sales.entry(id).or_default().void = true,
            Undo::StockRemoved { activity, units } => {
                let u = out.sales.entry(activity).or_default();
                u.stock_removed += units;
                u.counters.remaining -= units as i64;
            }
            // Newest first: the oldest move's window is the last one set.
            Undo::Window {
                activity,
                start_at,
                end_at,
            } => out.sales.entry(activity).or_default().window = Some((start_at, end_at)),
            Undo::Order {
                activity,
                delta,
                status: to,
            } => {
                out.sales.entry(activity).or_default().counters += delta;
                let to = to.map_or(RowStatus::Void, RowStatus::Is);
                if let (Some(row), Some(order)) = (row, OrderRef::of(ev)) {
                    row.status = to;
                    out.changes.push(StatusChange { order, to });
                }
            }
        }
    }
    // Orders already at this LSN were reverted by an earlier attempt of
    // this abort (the activity row, written first, too, and its version
    // guards it); the others still hold their statuses from before it, so
    // what is left to do is computed right.
    out.changes
        .retain(|c| !matches!(status.get(&c.order.order_id), Some(r) if r.version >= lsn));
    out
}

/// Fold `sales`' events (LSN order) and then an abort's `undo` at
/// `undo_lsn` into `rows` (read from MySQL; missing ones are created
/// fresh), skipping what a row already has (LSN <= its version). Returns
/// the sales whose rows changed.
pub(crate) fn fold_into(
    rows: &mut BTreeMap<ActivityId, ActivityRow>,
    sales: &BTreeMap<ActivityId, Vec<LsnEvent<'_>>>,
    undo: Option<(u64, &HashMap<ActivityId, SaleUndo>)>,
) -> BTreeSet<ActivityId> {
    let mut changed = BTreeSet::new();
    for (id, evs) in sales {
        for le in evs {
            let row = rows.entry(*id).or_insert_with(|| ActivityRow::fresh(*id));
            if le.lsn <= row.version && !row.fresh {
                continue;
            }
            row.fresh = false;
            fold_event(row, le.event);
            row.version = le.lsn;
            changed.insert(*id);
        }
    }
    let Some((lsn, undo)) = undo else {
        return changed;
    };
    for (id, u) in undo {
        let row = rows.entry(*id).or_insert_with(|| ActivityRow::fresh(*id));
        if lsn <= row.version && !row.fresh {
            continue;
        }
        row.fresh = false;
        row.counters += u.counters;
        row.void |= u.void;
        row.stock -= u.stock_removed as i64;
        if let Some((start_at, end_at)) = u.window {
            row.start_at = start_at;
            row.end_at = end_at;
        }
        row.version = lsn;
        changed.insert(*id);
    }
    changed
}

/// One event's change of its sale's row: the engine's effect on the
/// counters, for a sale's creation its columns, for an admin's change the
/// stock or the window it changed.
fn fold_event(row: &mut ActivityRow, ev: &Event) {
    match ev {
        Event::StockAdded { added, .. } => row.stock += *added as i64,
        Event::ActivityWindowChanged {
            start_at, end_at, ..
        } => {
            row.start_at = *start_at;
            row.end_at = *end_at;
        }
        _ => {}
    }
    if let Event::ActivityCreated {
        sku_id,
        name,
        price_cents,
        stock,
        start_at,
        end_at,
        per_user_limit,
        created_at,
        ..
    } = ev
    {
        row.sku_id = sku_id.clone();
        row.name = name.clone();
        row.price_cents = *price_cents;
        row.stock = *stock as i64;
        row.start_at = *start_at;
        row.end_at = *end_at;
        row.per_user_limit = *per_user_limit;
        row.created_at = *created_at;
        // Orders folded before the creation (a log from before issue 14's
        // point 3 was fixed) keep their units: the creation sets the
        // total to `stock`. That is the engine's `opened(stock)` added to
        // counters whose total was 0 (order events and undos keep it), and
        // unlike adding it stays right should a creation reach a row twice.
        let c = &mut row.counters;
        c.remaining = row.stock - c.reserved - c.sold;
        return;
    }
    row.counters += effect(ev).1;
}

#[cfg(test)]
mod tests {
    use super::*;
    use flashd_engine::{CancelReason, OrderStatus};

    fn sale(id: ActivityId, stock: u64) -> Event {
        Event::ActivityCreated {
            id,
            sku_id: format!("SKU-{id}"),
            name: "Phone".into(),
            price_cents: 100,
            stock,
            start_at: 0,
            end_at: 1_000,
            per_user_limit: 5,
            created_at: 1,
        }
    }

    fn created(o: OrderId, q: u32) -> Event {
        Event::OrderCreated {
            order_id: o,
            activity_id: 1,
            user_id: 7,
            quantity: q,
            amount_cents: 100,
            request_id: "r".into(),
            created_at: 2,
            expires_at: 3,
        }
    }

    fn paid(o: OrderId, q: u32) -> Event {
        Event::OrderPaid {
            order_id: o,
            activity_id: 1,
            user_id: 7,
            quantity: q,
            at: 4,
        }
    }

    fn cancelled(o: OrderId, q: u32) -> Event {
        Event::OrderCancelled {
            order_id: o,
            activity_id: 1,
            user_id: 7,
            quantity: q,
            reason: CancelReason::User,
            at: 4,
        }
    }

    fn row(status: OrderStatus, version: u64) -> RowState {
        RowState {
            status: RowStatus::Is(status),
            version,
        }
    }

    fn fold(evs: &[Event]) -> ActivityRow {
        let mut sales: BTreeMap<ActivityId, Vec<LsnEvent<'_>>> = BTreeMap::new();
        for (lsn, ev) in evs.iter().enumerate() {
            sales.entry(1).or_default().push(LsnEvent {
                lsn: lsn as u64,
                event: ev,
            });
        }
        let mut rows = BTreeMap::new();
        assert_eq!(fold_into(&mut rows, &sales, None).len(), 1);
        rows.remove(&1).unwrap()
    }

    #[test]
    fn events_move_the_counters_and_a_late_creation_keeps_earlier_units() {
        let r = fold(&[
            sale(1, 10),
            created(5, 2),
            paid(5, 2),
            created(6, 3),
            cancelled(6, 3),
        ]);
        assert_eq!(r.stock, 10);
        assert_eq!(
            (r.counters.remaining, r.counters.reserved, r.counters.sold),
            (8, 0, 2)
        );
        assert_eq!(r.version, 4);
        // An order logged before its sale's creation keeps its units.
        let r = fold(&[created(5, 2), sale(1, 10)]);
        assert_eq!(
            (r.counters.remaining, r.counters.reserved, r.counters.sold),
            (8, 2, 0)
        );
    }

    #[test]
    fn events_a_row_already_has_are_skipped() {
        let evs = [created(5, 2)];
        let mut sales = BTreeMap::new();
        sales.insert(
            1,
            vec![LsnEvent {
                lsn: 9,
                event: &evs[0],
            }],
        );
        let mut rows = BTreeMap::new();
        rows.insert(
            1,
            ActivityRow {
                id: 1,
                version: 9,
                counters: Counters {
                    remaining: 10,
                    ..Counters::ZERO
                },
                ..Default::default()
            },
        );
        assert!(fold_into(&mut rows, &sales, None).is_empty());
        assert_eq!(rows[&1].counters.remaining, 10);
    }

    #[test]
    fn undoing_a_group_reverses_each_move_from_the_orders_status() {
        // A paid order whose creation and pay are both undone: its sold
        // units go back on sale, the row becomes VOID.
        let (c, p) = (created(5, 2), paid(5, 2));
        let found = HashMap::from([(5, row(OrderStatus::Paid, 3))]);
        let u = undo_group(&[&c, &p], 10, found);
        assert_eq!(
            u.sales[&1].counters,
            Counters {
                remaining: 2,
                reserved: 0,
                sold: -2
            }
        );
        let moves: Vec<_> = u.changes.iter().map(|c| c.to).collect();
        assert_eq!(
            moves,
            [RowStatus::Is(OrderStatus::Created), RowStatus::Void]
        );
        // A cancel undone: the order holds its units again.
        let x = cancelled(6, 3);
        let u = undo_group(
            &[&x],
            10,
            HashMap::from([(6, row(OrderStatus::Cancelled, 3))]),
        );
        assert_eq!(
            u.sales[&1].counters,
            Counters {
                remaining: -3,
                reserved: 3,
                sold: 0
            }
        );
        // A sale's creation undone: void.
        let s = sale(2, 5);
        assert!(undo_group(&[&s], 10, HashMap::new()).sales[&2].void);
    }

    #[test]
    fn an_order_never_applied_or_already_reverted_moves_no_row() {
        let c = created(5, 2);
        // No row: nothing to undo, but the sale is named (its version
        // rises to the abort's LSN).
        let u = undo_group(&[&c], 10, HashMap::new());
        assert_eq!(u.sales[&1], SaleUndo::default());
        assert!(u.changes.is_empty());
        // Reverted by an earlier attempt of this abort: the row is left.
        let u = undo_group(
            &[&c],
            10,
            HashMap::from([(5, row(OrderStatus::Created, 10))]),
        );
        assert!(u.changes.is_empty());
    }

    fn stock_added(added: u64) -> Event {
        Event::StockAdded { id: 1, added, at: 5 }
    }

    fn window(start_at: u64, end_at: u64, prev: (u64, u64)) -> Event {
        Event::ActivityWindowChanged {
            id: 1,
            start_at,
            end_at,
            prev_start_at: prev.0,
            prev_end_at: prev.1,
            at: 5,
        }
    }

    #[test]
    fn an_admins_changes_move_the_stock_and_the_window_columns() {
        let r = fold(&[
            sale(1, 10),
            created(5, 2),
            stock_added(4),
            window(0, 500, (0, 1_000)),
        ]);
        assert_eq!(r.stock, 14);
        assert_eq!(
            (r.counters.remaining, r.counters.reserved, r.counters.sold),
            (12, 2, 0)
        );
        assert_eq!((r.start_at, r.end_at), (0, 500));
        assert_eq!(r.version, 3);
    }

    #[test]
    fn undoing_an_admins_changes_takes_the_stock_out_and_puts_the_first_window_back() {
        let (a, w1, w2) = (
            stock_added(4),
            window(0, 500, (0, 1_000)),
            window(0, 400, (0, 500)),
        );
        let u = undo_group(&[&a, &w1, &w2], 10, HashMap::new());
        let s = u.sales[&1];
        assert_eq!(s.stock_removed, 4);
        assert_eq!(s.counters.remaining, -4);
        assert_eq!(s.window, Some((0, 1_000)), "the window before the group");
        // Folded into the row the group had reached.
        let mut rows = BTreeMap::new();
        let mut row = fold(&[sale(1, 10), a.clone(), w1.clone(), w2.clone()]);
        assert_eq!((row.stock, row.end_at), (14, 400));
        row.version = 3;
        rows.insert(1, row);
        fold_into(&mut rows, &BTreeMap::new(), Some((10, &u.sales)));
        let r = &rows[&1];
        assert_eq!((r.stock, r.counters.remaining), (10, 10));
        assert_eq!((r.start_at, r.end_at), (0, 1_000));
        assert_eq!(r.version, 10);
    }
}
