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

impl Engine {
    /// Orders still `CREATED` here whose payment deadline is at or before
    /// `before`, at most `limit`, each handed out once (taken off the
    /// engine's deadline queue). In cluster mode Redis times orders out,
    /// and the node that did may have died before logging it: the caller
    /// asks Redis what became of these and logs it.
    pub fn take_overdue(&self, before: Millis, limit: usize) -> Vec<crate::OrderView> {
        let mut out = Vec::new();
        for s in self.users.stripes() {
            if out.len() >= limit {
                break;
            }
            let mut stripe = s.lock();
            while let Some(std::cmp::Reverse((at, user, order))) = stripe.expiries.peek().copied() {
                if at > before || out.len() >= limit {
                    break;
                }
                stripe.expiries.pop();
                if let Some(i) = stripe.find(user, order) {
                    let o = &stripe.orders[i];
                    if o.status == OrderStatus::Created {
                        out.push(crate::OrderView::from(o));
                    }
                }
            }
        }
        out
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

#[cfg(test)]
mod tests {
    use crate::{Discard, Engine, EngineConfig, Event, OrderStatus};

    #[test]
    fn overdue_orders_are_handed_out_once_and_only_while_created() {
        let e = Engine::new(EngineConfig::default());
        let sale = Event::ActivityCreated {
            id: 3,
            sku_id: "s".into(),
            name: "n".into(),
            price_cents: 100,
            stock: 10,
            start_at: 0,
            end_at: 1_000_000,
            per_user_limit: 5,
            created_at: 0,
        };
        assert!(e.record_sale(&sale, &mut Discard).unwrap());
        // Installed out of order and recorded twice: the second is a no-op.
        assert!(!e.record_sale(&sale, &mut Discard).unwrap());
        let created = |order: u64, user: u64, expires_at: u64| Event::OrderCreated {
            order_id: order,
            activity_id: 3,
            user_id: user,
            quantity: 1,
            amount_cents: 100,
            request_id: format!("r{order}").into(),
            created_at: 10,
            expires_at,
        };
        e.record(&created(1, 7, 500), None, &mut Discard).unwrap();
        e.record(&created(2, 8, 900), None, &mut Discard).unwrap();
        // The same creation again changes nothing; a move made elsewhere
        // is recorded once.
        let r = e.record(&created(1, 7, 500), None, &mut Discard).unwrap();
        assert!(!r.created && !r.moved);
        assert!(e.take_overdue(499, 10).is_empty());
        let due = e.take_overdue(1_000, 10);
        let ids: Vec<u64> = due.iter().map(|o| o.id).collect();
        assert_eq!(ids.len(), 2, "{ids:?}");
        assert!(e.take_overdue(1_000, 10).is_empty(), "each handed out once");
        let paid = Event::OrderPaid {
            order_id: 2,
            activity_id: 3,
            user_id: 8,
            quantity: 1,
            at: 950,
        };
        let r = e
            .record(&created(2, 8, 900), Some(&paid), &mut Discard)
            .unwrap();
        assert!(!r.created && r.moved);
        assert_eq!(e.order(8, 2).unwrap().status, OrderStatus::Paid);
        let r = e
            .record(&created(2, 8, 900), Some(&paid), &mut Discard)
            .unwrap();
        assert!(!r.moved, "a move already held is not recorded twice");
    }
}

#[cfg(test)]
mod ids {
    use crate::{Discard, Engine, EngineConfig, Event, ReplayError};

    fn sale(id: u32) -> Event {
        Event::ActivityCreated {
            id,
            sku_id: "s".into(),
            name: "n".into(),
            price_cents: 1,
            stock: 1,
            start_at: 0,
            end_at: 1,
            per_user_limit: 1,
            created_at: 0,
        }
    }

    /// Sale ids are installed in any order now; 0 (no sale's id) and one
    /// past `max_activities` are refused, never an index out of range (a
    /// log segment the fuzzer made: `fuzz/corpus/log_segment/`).
    #[test]
    fn a_sale_id_of_zero_or_past_capacity_is_refused() {
        let e = Engine::new(EngineConfig {
            max_activities: 4,
            ..EngineConfig::default()
        });
        for id in [0, 5, u32::MAX] {
            assert_eq!(
                e.apply(&sale(id)),
                Err(ReplayError::ActivityBeyondCapacity { id })
            );
            assert_eq!(
                e.record_sale(&sale(id), &mut Discard),
                Err(ReplayError::ActivityBeyondCapacity { id })
            );
        }
        assert_eq!(e.apply(&sale(3)), Ok(()));
        assert_eq!(e.apply(&sale(1)), Ok(()), "an earlier id after a later one");
        assert_eq!(e.apply(&sale(3)), Err(ReplayError::ActivityTwice { id: 3 }));
    }
}
