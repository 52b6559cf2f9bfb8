//! An admin's changes to a sale that exists: adding stock, and moving its
//! window (ending it early is moving its end to now). Each is an [`Event`]
//! like any other: emitted, logged, replayed, undone if the log cannot
//! keep it.
//!
//! The rules ([`window_change`]), chosen so that nothing a buyer was told
//! becomes false:
//! * a sale that has ended cannot change: its buyers were told it ended,
//!   and re-opening it would sell past an end the shop announced;
//! * a sale that has started keeps its start (moving it would close a sale
//!   people are buying in, or move history); its end may move to any
//!   instant from now on: now ends it at once, later extends it;
//! * a sale not started yet may move both, to a start from now on;
//! * the window is never empty (`end_at > start_at`), as at creation,
//!   except by ending a sale ([`Engine::end_sale`]): its end moves to now,
//!   and a sale not started yet gets the empty window `[now, now)`, so it
//!   never opens;
//! * stock is added to a sale not ended, in `1..=STOCK_MAX` units, and the
//!   sum stays within [`STOCK_MAX`].
//!
//! Concurrency: admin changes are serialised by the engine's admin lock,
//! so the log holds them in the order they were applied, and undoing them
//! newest first (what the log writer does) restores each window exactly.
//! Buyers take no lock: a purchase reads `start_at`, `end_at` and takes
//! `remaining` by compare-and-swap. Ending a sale is one store of `end_at`:
//! every purchase whose `now` is at or past it is refused from then on.
//! Added units go to `stock` first and only then on sale (through
//! `releasing` while the log does not hold the addition yet, exactly like
//! a cancelled order's units), so `sold + reserved <= stock` holds at
//! every instant and no buyer takes a unit that a failed write takes back.

use std::sync::atomic::Ordering;

use crate::activity::{Activity, ActivityView};
use crate::engine::Engine;
use crate::error::ReplayError;
use crate::event::{Event, EventSink};
use crate::fold::{self, Undo};
use crate::limits::STOCK_MAX;
use crate::transition::{shift, shift_remaining, Mode};
use crate::types::*;

/// What [`window_change`] decides: the window to install, or none to
/// install (the asked window is the sale's already).
pub type WindowDecision = Option<(Millis, Millis)>;

/// Decide a window change: the sale's window is `[start_at, end_at)`, an
/// admin asks for `start` and/or `end` (absent: unchanged) at `now`.
/// The rules are this module's.
pub fn window_change(
    (start_at, end_at): (Millis, Millis),
    start: Option<Millis>,
    end: Option<Millis>,
    now: Millis,
) -> Result<WindowDecision, Reject> {
    if now >= end_at {
        return Err(Reject::SaleOver);
    }
    let new_start = start.unwrap_or(start_at);
    let new_end = end.unwrap_or(end_at);
    if new_start != start_at {
        if now >= start_at {
            return Err(Reject::StartLocked);
        }
        if new_start < now {
            return Err(Reject::StartInPast);
        }
    }
    if new_end != end_at && new_end < now {
        return Err(Reject::EndInPast);
    }
    if new_end <= new_start {
        return Err(Reject::WindowEmpty);
    }
    if (new_start, new_end) == (start_at, end_at) {
        return Ok(None);
    }
    Ok(Some((new_start, new_end)))
}

impl Engine {
    /// Add `units` to sale `id`'s stock at `now`. The units are on sale
    /// once the log holds the addition (at once without a log).
    pub fn add_stock(
        &self,
        id: ActivityId,
        units: u64,
        now: Millis,
        sink: &mut dyn EventSink,
    ) -> Result<ActivityView, Reject> {
        if units == 0 || units > STOCK_MAX {
            return Err(Reject::Invalid);
        }
        let a = self.activity(id).ok_or(Reject::NotFound)?;
        let _admin = self.admin.lock();
        if now >= a.end_at() {
            return Err(Reject::SaleOver);
        }
        // Both are at most STOCK_MAX: the sum cannot overflow.
        if a.stock() + units > STOCK_MAX {
            return Err(Reject::StockFull);
        }
        let ev = Event::StockAdded {
            id,
            added: units,
            at: now,
        };
        self.apply_sale_change(a, &ev, Mode::Live);
        sink.emit(ev);
        Ok(a.view(now))
    }

    /// Move sale `id`'s window at `now`: `start`, `end` as asked (absent:
    /// unchanged), under the rules of [`window_change`]. Asking for the
    /// window the sale has already changes nothing and emits nothing.
    pub fn change_window(
        &self,
        id: ActivityId,
        start: Option<Millis>,
        end: Option<Millis>,
        now: Millis,
        sink: &mut dyn EventSink,
    ) -> Result<ActivityView, Reject> {
        let a = self.activity(id).ok_or(Reject::NotFound)?;
        let _admin = self.admin.lock();
        let prev = (a.start_at(), a.end_at());
        let Some((start_at, end_at)) = window_change(prev, start, end, now)? else {
            return Ok(a.view(now));
        };
        let ev = Event::ActivityWindowChanged {
            id,
            start_at,
            end_at,
            prev_start_at: prev.0,
            prev_end_at: prev.1,
            at: now,
        };
        self.apply_sale_change(a, &ev, Mode::Live);
        sink.emit(ev);
        Ok(a.view(now))
    }

    /// End sale `id` at `now`: its end moves to now (a sale not started
    /// yet gets the empty window `[now, now)`). Buyers whose `now` is at or
    /// past it are refused from the moment this returns.
    pub fn end_sale(
        &self,
        id: ActivityId,
        now: Millis,
        sink: &mut dyn EventSink,
    ) -> Result<ActivityView, Reject> {
        let a = self.activity(id).ok_or(Reject::NotFound)?;
        let _admin = self.admin.lock();
        let prev = (a.start_at(), a.end_at());
        if now >= prev.1 {
            return Err(Reject::SaleOver);
        }
        let ev = Event::ActivityWindowChanged {
            id,
            start_at: prev.0.min(now),
            end_at: now,
            prev_start_at: prev.0,
            prev_end_at: prev.1,
            at: now,
        };
        self.apply_sale_change(a, &ev, Mode::Live);
        sink.emit(ev);
        Ok(a.view(now))
    }

    /// Replay a logged change of a sale (its creation excluded).
    pub(crate) fn replay_sale_change(&self, ev: &Event) -> Result<(), ReplayError> {
        let id = ev.activity_id();
        let a = self.activity_any(id).ok_or(ReplayError::UnknownSale {
            id,
            event: ev.kind(),
        })?;
        self.apply_sale_change(a, ev, Mode::Replay);
        Ok(())
    }

    /// Apply a `StockAdded` or an `ActivityWindowChanged` to `a`. Live,
    /// with the admin lock held and the change checked; in replay, as
    /// logged.
    fn apply_sale_change(&self, a: &Activity, ev: &Event, mode: Mode) {
        let live = mode == Mode::Live;
        match ev {
            Event::StockAdded { added, .. } => {
                let d = fold::stock_added(*added).remaining;
                // The stock first: `sold + reserved <= stock` at every
                // instant.
                a.stock.fetch_add(*added, Ordering::AcqRel);
                if live && self.cfg.hold_released_until_durable {
                    shift(&a.releasing, d, &a.stock, live);
                } else {
                    shift_remaining(&a.remaining, d, &a.stock, live);
                }
            }
            Event::ActivityWindowChanged {
                start_at, end_at, ..
            } => set_window(a, *start_at, *end_at),
            _ => unreachable!("not a change of a sale: {:?}", ev.kind()),
        }
    }

    /// Undo a change of a sale ([`fold::undo`] of a `StockAdded` or an
    /// `ActivityWindowChanged`). `parked`: the change was live with
    /// durability awaited, so added units are still in `releasing`.
    pub(crate) fn undo_sale_change(&self, u: Undo, parked: bool, live: bool) {
        match u {
            Undo::StockRemoved { activity, units } => {
                let Some(a) = self.activity_any(activity) else {
                    return;
                };
                let d = -(units as i64);
                // Off sale first, then out of the stock.
                if parked {
                    shift(&a.releasing, d, &a.stock, live);
                } else {
                    shift_remaining(&a.remaining, d, &a.stock, live);
                }
                a.stock.fetch_sub(units, Ordering::AcqRel);
            }
            Undo::Window {
                activity,
                start_at,
                end_at,
            } => {
                if let Some(a) = self.activity_any(activity) {
                    set_window(a, start_at, end_at);
                }
            }
            Undo::Nothing | Undo::VoidSale(_) | Undo::Order { .. } => {
                unreachable!("not the undo of a change of a sale: {u:?}")
            }
        }
    }
}

/// Install a window. The end is stored first when it moves earlier (a
/// sale ended early is closed before anything else is seen), the start
/// first otherwise; a reader between the two stores sees a window the
/// rules make harmless: only a sale not started yet moves its start, and
/// then to an instant from now on, so it is not open under either.
fn set_window(a: &Activity, start_at: Millis, end_at: Millis) {
    if end_at < a.end_at() {
        a.end_at.store(end_at, Ordering::Release);
        a.start_at.store(start_at, Ordering::Release);
    } else {
        a.start_at.store(start_at, Ordering::Release);
        a.end_at.store(end_at, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: (Millis, Millis) = (100, 200);

    #[test]
    fn the_window_rules() {
        // Not started (now 50): both may move, to instants from now on.
        assert_eq!(
            window_change(W, Some(60), Some(300), 50),
            Ok(Some((60, 300)))
        );
        assert_eq!(window_change(W, Some(50), None, 50), Ok(Some((50, 200))));
        assert_eq!(
            window_change(W, Some(40), None, 50),
            Err(Reject::StartInPast)
        );
        assert_eq!(
            window_change(W, Some(250), None, 50),
            Err(Reject::WindowEmpty)
        );
        assert_eq!(
            window_change(W, None, Some(100), 50),
            Err(Reject::WindowEmpty)
        );
        // Running (now 150): the start stays; the end moves from now on.
        assert_eq!(
            window_change(W, Some(120), None, 150),
            Err(Reject::StartLocked)
        );
        assert_eq!(
            window_change(W, Some(100), Some(150), 150),
            Ok(Some((100, 150)))
        );
        assert_eq!(window_change(W, None, Some(150), 150), Ok(Some((100, 150))));
        assert_eq!(window_change(W, None, Some(500), 150), Ok(Some((100, 500))));
        assert_eq!(
            window_change(W, None, Some(149), 150),
            Err(Reject::EndInPast)
        );
        // Ended (now 200): nothing changes.
        assert_eq!(
            window_change(W, None, Some(500), 200),
            Err(Reject::SaleOver)
        );
        assert_eq!(window_change(W, None, None, 250), Err(Reject::SaleOver));
        // The window it has already: no change.
        assert_eq!(window_change(W, None, None, 150), Ok(None));
        assert_eq!(window_change(W, Some(100), Some(200), 150), Ok(None));
    }
}
