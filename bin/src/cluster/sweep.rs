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

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flashd_engine::CancelReason;
use flashd_engine::{ActivityId, Millis, Reject};
use flashd_redis::{Claim, ClaimStatus};

use super::start::{LEASE_RENEW, LEASE_TTL};
use super::Cluster;
use crate::exec::{Core, LogSink, Outcome, EXPIRE_PER_PASS};

/// Timeouts made in Redis but not yet in this node's log (the log refused
/// them for a moment) are kept at most this many, retried every pass.
/// Past it the oldest are dropped with an error: `flashd reconcile` finds
/// them (the units are back on sale either way; only the log's record of
/// the timeout is missing).
const UNLOGGED_MAX: usize = 100_000;

/// Overdue orders of this node's log taken per pass: bounds one pass's
/// Redis reads (one `HGET` each) when a whole sale's orders come due at
/// once; the rest wait for the next pass.
const OVERDUE_PER_PASS: usize = 4096;

/// Passes between two askings of ids Redis held no sale for.
const ABSENT_RECHECK_PASSES: u64 = 100;

/// The sweeper's state across passes.
pub struct ClusterSweep {
    cl: Arc<Cluster>,
    core: Arc<Core>,
    /// Sale ids Redis holds no sale for, as last asked.
    absent: HashSet<ActivityId>,
    passes: u64,
    /// Timeouts logged, in the order logged, to look at once more after
    /// `verify_after`: a write the log failed was undone in the engine by
    /// then, and such a timeout is logged again (no client will retry it).
    logged: VecDeque<(Instant, ActivityId, Claim)>,
    verify_after: Duration,
    /// Orders this node holds `CREATED` past their deadline, being asked
    /// of Redis (`settle_overdue`).
    overdue: Vec<flashd_engine::OrderView>,
    last_lease: Instant,
    unlogged: Vec<(ActivityId, Claim)>,
}

impl ClusterSweep {
    /// `verify_after`: longer than the log takes to fail a write and undo
    /// it (`log.kafka.unavailable_ms` and an abort).
    pub fn new(cl: Arc<Cluster>, core: Arc<Core>, verify_after: Duration) -> ClusterSweep {
        ClusterSweep {
            cl,
            core,
            absent: HashSet::new(),
            passes: 0,
            logged: VecDeque::new(),
            verify_after,
            overdue: Vec::new(),
            last_lease: Instant::now(),
            unlogged: Vec::new(),
        }
    }

    /// Read Redis's counters of every sale this node serves into the
    /// mirror before it answers a `GET` of one, trying for up to `wait`:
    /// a restarted node's engine holds only its own share of each sale,
    /// which is what `GET` answered until the sweeper's first pass (the
    /// cluster chaos soak, seed 3245420602: a node sold 146 of a sale's
    /// 254 by its own count). `false`: Redis did not answer in time (the
    /// node then answers its own count until a pass reads Redis's).
    pub fn seed_mirror(&self, now: impl Fn() -> Millis, wait: Duration) -> bool {
        let sales: Vec<ActivityId> = self.core.engine.activities().map(|a| a.id).collect();
        let t0 = Instant::now();
        loop {
            if sales.is_empty() || self.cl.mirror_counters(&sales, now()) {
                return true;
            }
            if t0.elapsed() >= wait {
                tracing::warn!(
                    waited_ms = t0.elapsed().as_millis() as u64,
                    "cannot read the sales' counters from redis: GET of a sale answers this node's own count until the sweeper reads them"
                );
                return false;
            }
            std::thread::sleep(Duration::from_millis(250));
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
        cl.mirror_counters(&sales, now);
        self.verify_logged();
        self.retry_unlogged(now);
        self.settle_overdue(now);
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
                if self.log_move(sale, &c, now) {
                    self.logged.push_back((Instant::now(), sale, c));
                } else {
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
            if self.log_move(sale, &c, now) {
                self.logged.push_back((Instant::now(), sale, c));
            } else {
                self.unlogged.push((sale, c));
            }
        }
    }

    /// Orders this node's log holds as `CREATED` past their deadline (by
    /// `verify_after`, so Redis's own expiry had its turn): ask Redis what
    /// became of them and log it. Another node timed them out (and logged
    /// it in its own topic), or a node — this one, before a crash — moved
    /// them in Redis and died before its log held the move: either way this
    /// log (and so MySQL, and this node's share) would keep them `CREATED`.
    fn settle_overdue(&mut self, now: Millis) {
        let before = now.saturating_sub(self.verify_after.as_millis() as Millis);
        self.overdue
            .extend(self.core.engine.take_overdue(before, OVERDUE_PER_PASS));
        if self.overdue.is_empty() {
            return;
        }
        let mut by_sale: Vec<(ActivityId, Vec<flashd_engine::OrderView>)> = Vec::new();
        for o in std::mem::take(&mut self.overdue) {
            match by_sale.iter_mut().find(|(s, _)| *s == o.activity_id) {
                Some((_, v)) => v.push(o),
                None => by_sale.push((o.activity_id, vec![o])),
            }
        }
        for (sale, orders) in by_sale {
            let asked = orders.iter().map(|o| (o.user_id, o.id)).collect();
            let r = self.cl.client.claims(sale, asked).wait();
            self.cl.saw(&r);
            let Ok(claims) = r else {
                // Asked again next pass.
                self.overdue.extend(orders);
                continue;
            };
            for (o, c) in orders.into_iter().zip(claims) {
                match c {
                    Some(c) if c.status != ClaimStatus::Created => {
                        if self.log_move(sale, &c, now) {
                            self.logged.push_back((Instant::now(), sale, c));
                        } else {
                            self.unlogged.push((sale, c));
                        }
                    }
                    // Not yet timed out in Redis (its expiry runs late by
                    // the nodes' clock skew): asked again next pass.
                    Some(_) => self.overdue.push(o),
                    None => tracing::warn!(
                        sale,
                        order = o.id,
                        "an order this node logged is not in redis (repaired away?): run flashd reconcile"
                    ),
                }
            }
        }
    }

    /// Moves logged at least `verify_after` ago (timeouts made here, and
    /// pays and cancels the workers logged) whose write the log failed —
    /// the engine no longer holds the order as Redis does: the undo took
    /// the record back — go back to be logged again. A buyer told "retry"
    /// may never retry, and Redis's move is final: without this the log
    /// (and MySQL) would keep the order `CREATED` for good.
    fn verify_logged(&mut self) {
        self.logged.extend(self.cl.take_moved());
        while let Some((at, _, _)) = self.logged.front() {
            if at.elapsed() < self.verify_after {
                break;
            }
            let (_, sale, c) = self.logged.pop_front().expect("just looked");
            let held = self.core.engine.order(c.user, c.order_id);
            if !held.is_some_and(|o| o.status == c.status.order_status()) {
                tracing::warn!(
                    sale,
                    order = c.order_id,
                    "a logged move was undone by a failed write: logging it again"
                );
                self.unlogged.push((sale, c));
            }
        }
    }

    /// Log the move of claim `c` of `sale` Redis made (a timeout, or a pay
    /// or cancel logged again), and its creation if this node's log lacks
    /// it; false if the log refused it now.
    fn log_move(&self, sale: ActivityId, c: &Claim, now: Millis) -> bool {
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
                if r.moved && c.status == ClaimStatus::Cancelled(CancelReason::Timeout) {
                    cl.stats.timed_out.fetch_add(1, Ordering::Relaxed);
                }
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
