//! Sales in cluster mode: created on one node with an id from Redis, met
//! on every other node and installed there from Redis, each logged by
//! every node that serves it (so each node's log replays on its own).

use std::sync::atomic::Ordering;

use flashd_engine::{ActivityId, ActivitySpec, Event, Millis, Reject, ReplayError};
use flashd_log::Refused;
use flashd_reactor::Ticket;

use super::Cluster;
use crate::exec::{Core, LogSink, Outcome, Pending, Step};

impl Cluster {
    /// Make sure this node serves `sale`: installed and logged from Redis
    /// if it was created on another node. `Err` is the answer to give.
    pub fn ensure_sale(&self, core: &Core, sale: ActivityId, now: Millis) -> Result<(), Outcome> {
        if core.engine.activity(sale).is_some() {
            return Ok(());
        }
        if sale == 0 || sale > core.engine.config().max_activities as ActivityId {
            return Err(Outcome::Rejected(Reject::NotFound));
        }
        let r = self.client.sale_event(sale).wait();
        self.saw(&r);
        let ev = match r {
            Ok(Some(ev)) => ev,
            Ok(None) => return Err(Outcome::Rejected(Reject::NotFound)),
            Err(e) => {
                tracing::warn!(sale, error = %e, "cannot read a sale from redis");
                return Err(Outcome::AuthorityUnavailable);
            }
        };
        self.install(core, &ev, now, true)?;
        // Created elsewhere, perhaps sold there already: its counters are
        // Redis's, not this node's empty share (a failed read leaves it to
        // the sweeper's next pass).
        self.mirror_counters(&[sale], now);
        Ok(())
    }

    /// Install `ev` (an `ActivityCreated`) here and log it; `adopted`: it
    /// was created on another node.
    fn install(
        &self,
        core: &Core,
        ev: &Event,
        now: Millis,
        adopted: bool,
    ) -> Result<bool, Outcome> {
        let Some(w) = core.writer.get() else {
            return Err(Outcome::LogUnavailable);
        };
        let mut admission = w.admit(now, 1).map_err(refused)?;
        let mut sink = LogSink {
            admission: &mut admission,
            n: 0,
        };
        match core.engine.record_sale(ev, &mut sink) {
            Ok(new) => {
                core.events.fetch_add(sink.n, Ordering::Relaxed);
                if new && adopted {
                    self.stats.adopted_sales.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(
                        sale = ev.activity_id(),
                        "serving a sale created on another node"
                    );
                }
                Ok(new)
            }
            Err(ReplayError::ActivityBeyondCapacity { .. }) => {
                Err(Outcome::Rejected(Reject::CapacityExhausted))
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot install a sale from redis");
                Err(Outcome::Rejected(Reject::CapacityExhausted))
            }
        }
    }

    /// `POST /api/v1/activities` in cluster mode: the id from Redis (one
    /// sequence for every node), the sale written to Redis with its names,
    /// then installed and logged here; answered once the log holds it.
    pub fn create_sale(
        &self,
        core: &Core,
        spec: &ActivitySpec,
        now: Millis,
        ticket: Ticket,
    ) -> Step {
        if spec.validate().is_err() {
            return Step::Now(Outcome::Rejected(Reject::Invalid));
        }
        let r = self.client.next_sale_id().wait();
        self.saw(&r);
        let id = match r {
            Ok(id) => id,
            Err(_) => return Step::Now(Outcome::AuthorityUnavailable),
        };
        if id > core.engine.config().max_activities as ActivityId {
            return Step::Now(Outcome::Rejected(Reject::CapacityExhausted));
        }
        let ev = Event::ActivityCreated {
            id,
            sku_id: spec.sku_id.clone(),
            name: spec.name.clone(),
            price_cents: spec.price_cents,
            stock: spec.stock,
            start_at: spec.start_at,
            end_at: spec.end_at,
            per_user_limit: spec.per_user_limit,
            created_at: now,
        };
        let r = self.client.register_sale(&ev).wait();
        self.saw(&r);
        if let Err(e) = r {
            tracing::warn!(sale = id, error = %e, "sale creation not stored in redis");
            return Step::Now(super::batch::undecided(&e));
        }
        // From here the sale exists in Redis and every node will serve
        // it: a failure to log it here is an unknown outcome, not "nothing
        // was changed" (a creation is not idempotent: the client checks
        // the list of sales before creating it again).
        if self.install(core, &ev, now, false).is_err() {
            return Step::Now(Outcome::OutcomeUnknown);
        }
        let out = Outcome::ActivityCreated(id);
        if core.ack != flashd_log::Ack::Durable {
            return Step::Now(out);
        }
        // Answered after the creation is durable: a reply queued behind it.
        let Some(w) = core.writer.get() else {
            return Step::Now(Outcome::OutcomeUnknown);
        };
        match w.admit(now, 1) {
            Ok(mut a) => {
                a.reply(Pending {
                    ticket,
                    outcome: out,
                    decided_elsewhere: true,
                });
                Step::Queued
            }
            Err(_) => Step::Now(Outcome::OutcomeUnknown),
        }
    }
}

/// The answer to a command the log did not admit.
pub(crate) fn refused(r: Refused) -> Outcome {
    match r {
        Refused::Unavailable => Outcome::LogUnavailable,
        Refused::Busy => Outcome::LogBusy,
    }
}
