//! The sweeper's pass in cluster mode (every `engine.expiry_sweep_ms`):
//! renew this node's id lease, start serving sales created elsewhere, read
//! every sale's counters for `GET` of a sale, and time out unpaid orders
//! in Redis, logging each timeout.
//!
//! Every node sweeps every sale: Redis runs one expire call after another,
//! so a claim is timed out (and its units returned) exactly once, by the
//! node whose call found it due; that node logs it. A unit therefore comes
//! back on sale at most one sweep interval (plus the nodes' clock skew,
//! `docs/cluster.md`) after its deadline while any node runs.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use flashd_engine::{ActivityId, Millis, Reject};
use flashd_redis::Claim;

use super::start::{LEASE_RENEW, LEASE_TTL};
use super::Cluster;
use crate::exec::{Core, LogSink, Outcome, EXPIRE_PER_PASS};

/// Timeouts made in Redis but not yet in this node's log (the log refused
/// them for a moment) are kept at most this many, retried every pass.
/// Past it the oldest are dropped with an error: `flashd reconcile` finds
/// them (the units are back on sale either way; only the log's record of
/// the timeout is missing).
const UNLOGGED_MAX: usize = 100_000;

/// Passes between two askings of ids Redis held no sale for.
const ABSENT_RECHECK_PASSES: u64 = 100;

/// The sweeper's state across passes.
pub struct ClusterSweep {
    cl: Arc<Cluster>,
    core: Arc<Core>,
    /// Sale ids Redis holds no sale for, as last asked.
    absent: HashSet<ActivityId>,
    passes: u64,
    last_lease: Instant,
    unlogged: Vec<(ActivityId, Claim)>,
}

impl ClusterSweep {
    pub fn new(cl: Arc<Cluster>, core: Arc<Core>) -> ClusterSweep {
        ClusterSweep {
            cl,
            core,
            absent: HashSet::new(),
            passes: 0,
            last_lease: Instant::now(),
            unlogged: Vec::new(),
        }
    }

    /// One pass at `now`; returns the orders timed out.
    pub fn pass(&mut self, now: Millis) -> usize {
        let (cl, core) = (self.cl.clone(), self.core.clone());
        let (cl, core) = (&*cl, &*core);
        if self.last_lease.elapsed() >= LEASE_RENEW {
            let r = cl
                .client
                .lease_node(cl.node, cl.holder.clone(), LEASE_TTL)
                .wait();
            cl.saw(&r);
            match r {
                Ok(true) => self.last_lease = Instant::now(),
                Ok(false) => cl.health.lease_lost(cl.node),
                Err(_) => {}
            }
        }
        // Sales created on other nodes: served (and their timeouts swept)
        // here too.
        let r = cl.client.last_sale_id().wait();
        cl.saw(&r);
        let Ok(last) = r else { return 0 };
        let last = last.min(core.engine.config().max_activities as ActivityId);
        // Ids Redis handed out but holds no sale for (a creation that
        // failed half way) are asked again now and then: one may still be
        // on its way.
        self.passes += 1;
        if self.passes.is_multiple_of(ABSENT_RECHECK_PASSES) {
            self.absent.clear();
        }
        // Every sale not served here yet (new, or whose installation the
        // log failed to record and undid).
        for id in 1..=last {
            if core.engine.activity(id).is_some() || self.absent.contains(&id) {
                continue;
            }
            match cl.ensure_sale(core, id, now) {
                Ok(()) => {}
                Err(Outcome::Rejected(Reject::NotFound)) => {
                    self.absent.insert(id);
                }
                Err(_) => break,
            }
        }
        let sales: Vec<ActivityId> = core.engine.activities().map(|a| a.id).collect();
        if sales.is_empty() {
            return 0;
        }
        let r = cl.client.counters(sales.clone()).wait();
        cl.saw(&r);
        if let Ok(counters) = r {
            for (sale, c) in sales.iter().zip(counters) {
                if let Some([stock, sold, reserved]) = c {
                    cl.mirror(*sale, now, stock, sold, reserved);
                }
            }
        }
        self.retry_unlogged(now);
        let mut timed_out = 0;
        for sale in sales {
            if cl.reserved(sale) == Some(0) {
                continue;
            }
            let r = cl.client.expire(sale, now, EXPIRE_PER_PASS).wait();
            cl.saw(&r);
            let Ok(claims) = r else { continue };
            timed_out += claims.len();
            for c in claims {
                if !self.log_timeout(sale, &c, now) {
                    self.unlogged.push((sale, c));
                }
            }
        }
        if self.unlogged.len() > UNLOGGED_MAX {
            let drop = self.unlogged.len() - UNLOGGED_MAX;
            tracing::error!(
                dropped = drop,
                "timeouts made in redis could not be logged for long: run flashd reconcile"
            );
            self.unlogged.drain(..drop);
        }
        timed_out
    }

    fn retry_unlogged(&mut self, now: Millis) {
        let pending = std::mem::take(&mut self.unlogged);
        for (sale, c) in pending {
            if !self.log_timeout(sale, &c, now) {
                self.unlogged.push((sale, c));
            }
        }
    }

    /// Log timeout `c` of `sale` (and its creation if this node's log
    /// lacks it); false if the log refused it now.
    fn log_timeout(&self, sale: ActivityId, c: &Claim, now: Millis) -> bool {
        let (cl, core) = (&*self.cl, &*self.core);
        let Some(w) = core.writer.get() else {
            return false;
        };
        let Ok(mut admission) = w.admit(now, 2) else {
            return false;
        };
        let mut sink = LogSink {
            admission: &mut admission,
            n: 0,
        };
        let created = c.created_event(sale);
        let moved = c.moved_event(sale, now);
        match core.engine.record(&created, moved.as_ref(), &mut sink) {
            Ok(r) => {
                core.events.fetch_add(sink.n, Ordering::Relaxed);
                if r.created && c.node != cl.node {
                    cl.stats.adopted_orders.fetch_add(1, Ordering::Relaxed);
                }
                cl.stats.timed_out.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(e) => {
                core.events.fetch_add(sink.n, Ordering::Relaxed);
                tracing::error!(sale, order = c.order_id, error = %e, "a timeout from redis does not apply here");
                // Retrying cannot help: counted as logged.
                true
            }
        }
    }
}
