//! Replay: rebuilding the state from the log. Sales are installed; order
//! events go through the same [`Engine::apply_locked`] as live commands,
//! in [`Mode::Replay`] (counters applied as logged, duplicates refused).

use crate::activity::Activity;
use crate::engine::Engine;
use crate::error::{ApplyError, ReplayError};
use crate::event::Event;
use crate::limits::{REPLAY_PARALLEL_EVENTS_MIN, STARTUP_THREADS_MAX};
use crate::spec::ActivitySpec;
use crate::transition::Mode;
use crate::types::*;
use crate::users::{Users, USER_STRIPES};

impl Engine {
    /// Apply one logged event (replay). Order matters only per user, which
    /// is the order the log keeps.
    pub fn apply(&self, ev: &Event) -> Result<(), ReplayError> {
        match ev {
            Event::ActivityCreated { .. } => {
                let mut next = self.next_activity.lock();
                self.install_activity(ev, &mut next)
            }
            Event::StockAdded { .. } | Event::ActivityWindowChanged { .. } => {
                self.replay_sale_change(ev)
            }
            Event::OrderCreated { user_id, .. }
            | Event::OrderPaid { user_id, .. }
            | Event::OrderCancelled { user_id, .. } => {
                let mut stripe = self.users.lock(*user_id);
                match self.apply_locked(ev, &mut stripe, Mode::Replay) {
                    Ok(_) => Ok(()),
                    Err(ApplyError::Misfit(e)) => Err(e),
                    Err(ApplyError::SoldOut) => {
                        unreachable!("replay applies counters as logged, with no stock check")
                    }
                }
            }
        }
    }

    /// Apply a run of logged events (replay) on every core. Equivalent to
    /// [`Engine::apply`] on each in order: the events of sales themselves
    /// come first, in log order (an order never precedes its sale in the
    /// log, creating a sale depends on nothing else, a change of a sale
    /// only on its creation, and the counters an added stock moves are
    /// commutative with the orders' in replay), then each thread applies, in log order,
    /// the events of the users in its share of the stripes. Only one
    /// user's events are ordered with respect to each other, and the sale
    /// counters they touch are commutative in replay. On failure, the
    /// failing event's LSN.
    pub fn apply_batch(&self, events: &[(u64, Event)]) -> Result<(), (u64, ReplayError)> {
        for (lsn, ev) in events {
            if ev.user_id().is_none() {
                self.apply(ev).map_err(|e| (*lsn, e))?;
            }
        }
        let threads = if events.len() >= REPLAY_PARALLEL_EVENTS_MIN {
            std::thread::available_parallelism().map_or(1, |n| n.get().min(STARTUP_THREADS_MAX))
        } else {
            1
        };
        let share = |t: usize| USER_STRIPES * t / threads..USER_STRIPES * (t + 1) / threads;
        let run = |stripes: std::ops::Range<usize>| -> Result<(), (u64, ReplayError)> {
            for (lsn, ev) in events {
                // Sales and their changes were applied above.
                let Some(user) = ev.user_id() else {
                    continue;
                };
                if stripes.contains(&Users::stripe_of(user)) {
                    self.apply(ev).map_err(|e| (*lsn, e))?;
                }
            }
            Ok(())
        };
        if threads == 1 {
            return run(0..USER_STRIPES);
        }
        let results: Vec<Result<(), (u64, ReplayError)>> = std::thread::scope(|sc| {
            let hs: Vec<_> = (0..threads)
                .map(|t| {
                    let (run, range) = (&run, share(t));
                    sc.spawn(move || run(range))
                })
                .collect();
            hs.into_iter()
                .map(|h| h.join().expect("replay thread panicked"))
                .collect()
        });
        // The earliest failure in the log, whichever thread met it.
        results
            .into_iter()
            .filter_map(Result::err)
            .min_by_key(|(lsn, _)| *lsn)
            .map_or(Ok(()), Err)
    }

    /// Install the sale `ev` (an `ActivityCreated`) creates, with the
    /// creation lock held (`next` is the next id to hand out).
    pub(crate) fn install_activity(
        &self,
        ev: &Event,
        next: &mut ActivityId,
    ) -> Result<(), ReplayError> {
        let Event::ActivityCreated {
            id,
            sku_id,
            name,
            price_cents,
            stock,
            start_at,
            end_at,
            per_user_limit,
            created_at,
        } = ev
        else {
            unreachable!("install_activity takes ActivityCreated");
        };
        // Any order, any gaps: a creation that failed to become durable
        // leaves its id unused, and in cluster mode ids come from Redis
        // for every node, so a node installs the sales it serves in the
        // order it meets them. A slot is written once (`ActivityTwice`).
        // Id 0 is no sale (ids start at 1): refused like one past the end.
        let slot = (*id as usize)
            .checked_sub(1)
            .and_then(|i| self.activities.get(i))
            .ok_or(ReplayError::ActivityBeyondCapacity { id: *id })?;
        let spec = ActivitySpec {
            sku_id: sku_id.clone(),
            name: name.clone(),
            price_cents: *price_cents,
            stock: *stock,
            start_at: *start_at,
            end_at: *end_at,
            per_user_limit: *per_user_limit,
        };
        slot.set(Activity::new(*id, spec, *created_at))
            .map_err(|_| ReplayError::ActivityTwice { id: *id })?;
        // Room for the stampede before anyone can buy: a sale is created
        // before it starts, so its stripes grow here (in the serving
        // engine, and in the snapshotter's follower, which replays the
        // creation shortly after) rather than in the first second of
        // orders.
        self.users.presize(*stock);
        *next = (*next).max(*id + 1);
        Ok(())
    }
}
