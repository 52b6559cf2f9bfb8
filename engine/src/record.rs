//! Recording what another authority decided (cluster mode): Redis decides
//! every purchase, pay, cancel and timeout of a sale that many nodes serve
//! (`docs/cluster.md`); the engine of each node records the decisions that
//! node logs, so its log replays into it and it knows which orders its own
//! log already holds.
//!
//! Recorded events are applied as replay applies them ([`Mode::Replay`]):
//! counters move as logged, with no stock check, because the decision was
//! made elsewhere and this node's counters only ever hold its share of the
//! sale. They are emitted to the log under the buyer's lock, in the order
//! applied, so one buyer's events are logged in an order replay accepts.

use std::sync::atomic::Ordering;

use crate::engine::Engine;
use crate::error::{ApplyError, ReplayError};
use crate::event::{Event, EventSink};
use crate::transition::Mode;
use crate::types::*;

/// What [`Engine::record`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    /// The order's creation was new here: applied and emitted.
    pub created: bool,
    /// The move was applied and emitted.
    pub moved: bool,
}

impl Engine {
    /// A new order id of this node, for a purchase Redis will decide.
    pub fn next_order_id(&self, now: Millis) -> OrderId {
        self.ids.next(now)
    }

    /// Install a sale decided elsewhere (its `ActivityCreated`), under the
    /// id it was given, in whatever order sales arrive. `Ok(true)`: it is
    /// new here (the caller logs the event it emitted to `sink`);
    /// `Ok(false)`: already here with the same id.
    ///
    /// A sale whose recorded creation the log failed to make durable was
    /// voided by the undo; the sale still exists (Redis holds it), so
    /// recording it again brings it back and emits its creation anew.
    pub fn record_sale(&self, ev: &Event, sink: &mut dyn EventSink) -> Result<bool, ReplayError> {
        let Event::ActivityCreated { id, .. } = ev else {
            unreachable!("record_sale takes ActivityCreated");
        };
        let mut next = self.next_activity.lock();
        if let Some(a) = self.activity_any(*id) {
            if a.void.load(Ordering::Acquire) {
                sink.emit(ev.clone());
                a.void.store(false, Ordering::Release);
                return Ok(true);
            }
            return Ok(false);
        }
        self.install_activity(ev, &mut next)?;
        sink.emit(ev.clone());
        Ok(true)
    }

    /// Record order `created` (an `OrderCreated`) unless this engine holds
    /// it already, then `moved` (its `OrderPaid` or `OrderCancelled`, a
    /// move made now) unless the order has already left `Created` here;
    /// emit what was applied, under the buyer's lock.
    pub fn record(
        &self,
        created: &Event,
        moved: Option<&Event>,
        sink: &mut dyn EventSink,
    ) -> Result<Recorded, ReplayError> {
        let (Event::OrderCreated {
            order_id, user_id, ..
        },) = (created,)
        else {
            unreachable!("record takes an OrderCreated first");
        };
        let mut stripe = self.users.lock(*user_id);
        let mut done = Recorded {
            created: false,
            moved: false,
        };
        let status = stripe
            .find(*user_id, *order_id)
            .map(|i| stripe.orders[i].status);
        if status.is_none() {
            self.apply_locked(created, &mut stripe, Mode::Replay)
                .map_err(misfit)?;
            sink.emit(created.clone());
            done.created = true;
        }
        if let Some(mv) = moved {
            debug_assert_eq!(mv.order_id(), Some(*order_id), "a move of another order");
            if status.is_none_or(|s| s == OrderStatus::Created) {
                self.apply_locked(mv, &mut stripe, Mode::Replay)
                    .map_err(misfit)?;
                sink.emit(mv.clone());
                done.moved = true;
            }
        }
        Ok(done)
    }
}

fn misfit(e: ApplyError) -> ReplayError {
    match e {
        ApplyError::Misfit(e) => e,
        ApplyError::SoldOut => {
            unreachable!("replay applies counters as logged, with no stock check")
        }
    }
}
