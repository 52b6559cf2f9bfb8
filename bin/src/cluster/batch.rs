//! A worker's batch in cluster mode. Purchases are grouped per sale and
//! each group is decided by one buy script call (Redis's group commit, as
//! `fdatasync` is the log's); every sale's call is submitted before any is
//! waited for. Then what Redis granted (or found granted before) is
//! recorded in the engine and pushed to the log under one admission per
//! purchase, and answered once the log holds it. Pays, cancels and reads
//! go one by one: they spread over the payment window, not the stampede.
//!
//! Order of truth: Redis decides, the log records, the client hears after
//! both. A purchase is never admitted to the log before Redis answered (an
//! admission must not be held across a wait), so the log can fail between
//! the two: the buyer hears 503 `outcome_unknown` and the claim waits in
//! Redis for the retry (any node) or the payment deadline.
//!
//! What a 503 promises: `unavailable` only when Redis was provably not
//! asked to change anything (the log's gate was shut before, Redis could
//! not be reached, the node lost its id lease); once a script may have
//! run — Redis answered a change the log then failed to record, or gave no
//! answer in time — the client hears `outcome_unknown`, and its retry with
//! the same request id learns the outcome.

use std::sync::atomic::Ordering;

use flashd_engine::{ActivityId, Event, Millis, OrderId, Placed, Reject, ReplayError, UserId};
use flashd_log::WriterHandle;
use flashd_reactor::Ticket;
use flashd_redis::{Buy, Claim, Decision, Settle, Settled};

use super::sales::refused;
use super::Cluster;
use crate::exec::{Command, Core, Job, LogSink, Outcome, Pending, Step};

/// Entries one recorded decision may push: the order's creation (a copy
/// when another node decided it), its move, and the reply.
const ENTRIES_PER_DECISION: usize = 3;

/// What to answer once a decision is recorded.
#[derive(Clone, Copy)]
enum Answer {
    /// A purchase: 201 when Redis granted it now, 200 when it found it.
    Placed { granted: bool },
    /// A pay or cancel: the order as it is now.
    Moved,
    /// A read of an order: the order as it is now (Redis changed nothing).
    Read,
    /// A refusal that still logs what Redis did (a pay at the deadline
    /// timed the order out).
    Refused(Reject),
}

impl Answer {
    /// The answer when the log cannot record what Redis answered. After a
    /// purchase, pay or cancel Redis holds the decision whatever the log
    /// does, so "nothing was changed" would be a lie: the outcome is
    /// unknown to the client until it retries. A read changed nothing.
    fn unrecorded(self) -> Outcome {
        if self.decided() {
            Outcome::OutcomeUnknown
        } else {
            Outcome::LogUnavailable
        }
    }

    /// Whether Redis holds what this answer reports as a decision (made
    /// now, or before and found again), whatever this node's log does.
    fn decided(self) -> bool {
        !matches!(self, Answer::Read)
    }
}

/// The answer to a Redis call that gave no decision: `unavailable` only
/// when the call provably never reached Redis.
pub(crate) fn undecided(e: &flashd_redis::RedisError) -> Outcome {
    if e.may_have_decided() {
        Outcome::OutcomeUnknown
    } else {
        Outcome::AuthorityUnavailable
    }
}

impl Cluster {
    /// Run one worker batch at `now`; `answer` completes a request now
    /// (requests whose answer waits for the log are completed by the
    /// writer).
    pub fn run_batch(
        &self,
        core: &Core,
        batch: &mut Vec<Job>,
        now: Millis,
        answer: &mut dyn FnMut(Ticket, Outcome),
    ) {
        let Some(w) = core.writer.get() else {
            for job in batch.drain(..) {
                answer(job.ticket, Outcome::LogUnavailable);
            }
            return;
        };
        if self.health.is_lease_lost() {
            for job in batch.drain(..) {
                answer(job.ticket, Outcome::AuthorityUnavailable);
            }
            return;
        }
        // Ask Redis nothing the log could not record now.
        let log_open = w.gate.admit(now).is_some();
        let mut groups: Vec<(ActivityId, Vec<Job>)> = Vec::new();
        let mut others: Vec<Job> = Vec::new();
        for job in batch.drain(..) {
            match job.cmd {
                Command::Get { .. } | Command::GetActivity(_) => others.push(job),
                _ if !log_open => answer(job.ticket, Outcome::LogUnavailable),
                Command::Place { activity, .. } => {
                    match groups.iter_mut().find(|(s, _)| *s == activity) {
                        Some((_, jobs)) => jobs.push(job),
                        None => groups.push((activity, vec![job])),
                    }
                }
                _ => others.push(job),
            }
        }
        let mut inflight = Vec::with_capacity(groups.len());
        for (sale, jobs) in groups {
            if let Some(sent) = self.submit_buys(core, sale, jobs, now, answer) {
                inflight.push(sent);
            }
        }
        for (sale, jobs, pending) in inflight {
            let r = pending.wait();
            self.saw(&r);
            self.stats.buy_calls.fetch_add(1, Ordering::Relaxed);
            self.stats
                .buys_decided
                .fetch_add(jobs.len() as u64, Ordering::Relaxed);
            match r {
                Ok(decisions) => {
                    for (job, d) in jobs.into_iter().zip(decisions) {
                        self.decided(core, w, sale, job.ticket, d, now, answer);
                    }
                }
                Err(e) => {
                    tracing::debug!(sale, error = %e, "buy not decided");
                    let out = undecided(&e);
                    for job in jobs {
                        answer(job.ticket, out);
                    }
                }
            }
        }
        for job in others {
            if let Step::Now(out) = self.run_one(core, w, &job, now, log_open) {
                answer(job.ticket, out);
            }
        }
    }

    /// The buy script call for one sale's purchases, submitted (not
    /// waited for); `None` when every purchase was answered here.
    #[allow(clippy::type_complexity)]
    fn submit_buys(
        &self,
        core: &Core,
        sale: ActivityId,
        jobs: Vec<Job>,
        now: Millis,
        answer: &mut dyn FnMut(Ticket, Outcome),
    ) -> Option<(ActivityId, Vec<Job>, flashd_redis::Pending<Vec<Decision>>)> {
        if let Err(out) = self.ensure_sale(core, sale, now) {
            for job in jobs {
                answer(job.ticket, out);
            }
            return None;
        }
        let price = core.engine.activity(sale).map_or(0, |a| a.price_cents);
        let sold_out = self.sold_out_here(sale, now);
        let mut buys = Vec::with_capacity(jobs.len());
        let mut sent = Vec::with_capacity(jobs.len());
        for job in jobs {
            let Command::Place {
                user,
                quantity,
                ref request_id,
                ..
            } = job.cmd
            else {
                unreachable!("grouped purchases only");
            };
            if sold_out {
                self.stats.sold_out_local.fetch_add(1, Ordering::Relaxed);
                answer(job.ticket, Outcome::Rejected(Reject::SoldOut));
                continue;
            }
            let b = Buy {
                user,
                request_id: request_id.as_str().to_owned(),
                quantity,
                order_id: core.engine.next_order_id(now),
                amount_cents: price.saturating_mul(u64::from(quantity)),
                deadline_ms: now.saturating_add(self.order_ttl_ms),
            };
            if !b.is_valid() {
                answer(job.ticket, Outcome::Rejected(Reject::Invalid));
                continue;
            }
            buys.push(b);
            sent.push(job);
        }
        if sent.is_empty() {
            return None;
        }
        Some((sale, sent, self.client.buy(sale, now, buys)))
    }

    /// Answer one purchase Redis decided.
    #[allow(clippy::too_many_arguments)]
    fn decided(
        &self,
        core: &Core,
        w: &WriterHandle<Pending>,
        sale: ActivityId,
        ticket: Ticket,
        d: Decision,
        now: Millis,
        answer: &mut dyn FnMut(Ticket, Outcome),
    ) {
        let granted = matches!(d, Decision::Granted(_));
        match d {
            Decision::Granted(c) | Decision::Existing(c) => {
                if granted {
                    self.stats.buys_granted.fetch_add(1, Ordering::Relaxed);
                }
                let step = self.record(core, w, sale, &c, now, ticket, Answer::Placed { granted });
                if let Step::Now(out) = step {
                    answer(ticket, out);
                }
            }
            other => {
                if other == Decision::SoldOut {
                    self.note_sold_out(sale, now);
                }
                answer(
                    ticket,
                    Outcome::Rejected(other.reject().unwrap_or(Reject::Invalid)),
                );
            }
        }
    }

    /// A pay, cancel, read of an order, read of a sale, or sale creation.
    fn run_one(
        &self,
        core: &Core,
        w: &WriterHandle<Pending>,
        job: &Job,
        now: Millis,
        log_open: bool,
    ) -> Step {
        match &job.cmd {
            Command::CreateActivity(spec) => self.create_sale(core, spec, now, job.ticket),
            Command::GetActivity(sale) => Step::Now(match self.ensure_sale(core, *sale, now) {
                Ok(()) => Outcome::Activity(*sale),
                Err(out) => out,
            }),
            Command::Pay { user, order } | Command::Cancel { user, order } => {
                let (sale, _) = match self.locate(core, *user, *order, now) {
                    Ok(found) => found,
                    Err(out) => return Step::Now(out),
                };
                let op = if matches!(job.cmd, Command::Pay { .. }) {
                    Settle::Pay {
                        user: *user,
                        order_id: *order,
                    }
                } else {
                    Settle::Cancel {
                        user: *user,
                        order_id: *order,
                    }
                };
                let r = self.client.settle(sale, now, vec![op]).wait();
                self.saw(&r);
                self.stats.settle_calls.fetch_add(1, Ordering::Relaxed);
                let settled = match r.map(|mut v| v.pop()) {
                    Ok(Some(s)) => s,
                    // One move asked, none answered: the script ran.
                    Ok(None) => return Step::Now(Outcome::OutcomeUnknown),
                    Err(e) => return Step::Now(undecided(&e)),
                };
                let Some(c) = settled.claim().cloned() else {
                    return Step::Now(Outcome::Rejected(Reject::NotFound));
                };
                let how = match (&settled, settled.reject()) {
                    (Settled::BadTransition(_), Some(r)) => return Step::Now(Outcome::Rejected(r)),
                    (_, Some(r)) => Answer::Refused(r),
                    (_, None) => Answer::Moved,
                };
                // Paid, cancelled or timed out now, or before (possibly by
                // a node that died before logging it): this node's log
                // holds the creation and the move after this.
                self.record(core, w, sale, &c, now, job.ticket, how)
            }
            Command::Get { user, order } => {
                let (sale, found) = match self.locate(core, *user, *order, now) {
                    Ok(found) => found,
                    Err(out) => return Step::Now(out),
                };
                let claim = match found {
                    Some(c) => c,
                    None => {
                        let r = self.client.find_order(*user, *order, vec![sale]).wait();
                        self.saw(&r);
                        match r {
                            Ok(Some((_, c))) => c,
                            Ok(None) => return Step::Now(Outcome::Rejected(Reject::NotFound)),
                            Err(_) => return Step::Now(Outcome::AuthorityUnavailable),
                        }
                    }
                };
                let local = core.engine.order(*user, *order);
                if !log_open || local.is_some_and(|v| v.status == claim.status.order_status()) {
                    // This node's log holds it as it is (or the log is
                    // down and a read must not wait for it).
                    return Step::Now(Outcome::Moved(
                        local.unwrap_or_else(|| claim_view(sale, &claim, now)),
                    ));
                }
                self.record(core, w, sale, &claim, now, job.ticket, Answer::Read)
            }
            Command::Place { .. } => unreachable!("purchases are batched"),
            // Refused by the handler in cluster mode (`App::admin`): Redis
            // holds a sale's stock and window for every node.
            Command::AddStock { .. }
            | Command::ChangeWindow { .. }
            | Command::EndActivity { .. } => {
                debug_assert!(false, "a change of a sale reached a cluster worker");
                Step::Now(Outcome::Rejected(Reject::Invalid))
            }
        }
    }

    /// The sale of `user`'s order `order`, and its claim if Redis was
    /// asked: this node's engine knows orders its log holds; any other is
    /// looked for among every sale Redis has.
    fn locate(
        &self,
        core: &Core,
        user: UserId,
        order: OrderId,
        now: Millis,
    ) -> Result<(ActivityId, Option<Claim>), Outcome> {
        if let Some(v) = core.engine.order(user, order) {
            return Ok((v.activity_id, None));
        }
        let r = self.client.last_sale_id().wait();
        self.saw(&r);
        let last = r.map_err(|_| Outcome::AuthorityUnavailable)?;
        let last = last.min(core.engine.config().max_activities as ActivityId);
        let r = self
            .client
            .find_order(user, order, (1..=last).collect())
            .wait();
        self.saw(&r);
        match r {
            Ok(Some((sale, c))) => {
                self.ensure_sale(core, sale, now)?;
                Ok((sale, Some(c)))
            }
            Ok(None) => Err(Outcome::Rejected(Reject::NotFound)),
            Err(_) => Err(Outcome::AuthorityUnavailable),
        }
    }

    /// Record claim `c` of `sale` in the engine and the log (its creation
    /// unless this node's log holds it, then its move unless held too),
    /// and answer after the log holds them.
    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        core: &Core,
        w: &WriterHandle<Pending>,
        sale: ActivityId,
        c: &Claim,
        now: Millis,
        ticket: Ticket,
        how: Answer,
    ) -> Step {
        let created = c.created_event(sale);
        let moved: Option<Event> = c.moved_event(sale, now);
        let mut admission = match w.admit(now, ENTRIES_PER_DECISION) {
            Ok(a) => a,
            Err(r) => {
                return Step::Now(match how {
                    Answer::Read => refused(r),
                    _ => how.unrecorded(),
                })
            }
        };
        let mut sink = LogSink {
            admission: &mut admission,
            n: 0,
        };
        let rec = core.engine.record(&created, moved.as_ref(), &mut sink);
        let n = sink.n;
        core.events.fetch_add(n, Ordering::Relaxed);
        match rec {
            Ok(r) => {
                if r.created && c.node != self.node {
                    self.stats.adopted_orders.fetch_add(1, Ordering::Relaxed);
                }
                if r.moved {
                    // Looked at again by the sweeper: a failed write
                    // undoes it, and no retry may ever come.
                    self.moved_here(sale, c.clone());
                }
                if r.moved
                    && matches!(
                        c.status,
                        flashd_redis::ClaimStatus::Cancelled(flashd_engine::CancelReason::Timeout)
                    )
                {
                    self.stats.timed_out.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(ReplayError::StripeFull { .. }) => {
                // Redis holds the claim; this node has no room to log it.
                // The retry (on a node with room) or the payment deadline
                // settles it: the client must not hear a refusal.
                return Step::Now(match how {
                    Answer::Read => Outcome::Rejected(Reject::CapacityExhausted),
                    _ => how.unrecorded(),
                });
            }
            Err(e) => {
                // Redis's claim does not fit this node's log: a bug or a
                // log that is not this cluster's. Never answered as done.
                tracing::error!(sale, order = c.order_id, error = %e, "a decision from redis does not apply here");
                return Step::Now(how.unrecorded());
            }
        }
        let out = match how {
            Answer::Refused(r) => return Step::Now(Outcome::Rejected(r)),
            Answer::Placed { granted } => {
                let v = core
                    .engine
                    .order(c.user, c.order_id)
                    .unwrap_or_else(|| claim_view(sale, c, now));
                Outcome::Placed(if granted {
                    Placed::Created(v)
                } else {
                    Placed::Existing(v)
                })
            }
            Answer::Moved | Answer::Read => Outcome::Moved(
                core.engine
                    .order(c.user, c.order_id)
                    .unwrap_or_else(|| claim_view(sale, c, now)),
            ),
        };
        if core.ack == flashd_log::Ack::Durable {
            admission.reply(Pending {
                ticket,
                outcome: out,
                decided_elsewhere: how.decided(),
            });
            Step::Queued
        } else {
            Step::Now(out)
        }
    }
}

/// An order as its claim in Redis describes it (for an answer when this
/// node's engine does not hold it).
fn claim_view(sale: ActivityId, c: &Claim, now: Millis) -> flashd_engine::OrderView {
    let status = c.status.order_status();
    flashd_engine::OrderView {
        id: c.order_id,
        activity_id: sale,
        user_id: c.user,
        quantity: c.quantity,
        amount_cents: c.amount_cents,
        status,
        created_at: c.created_at,
        expires_at: c.deadline_ms,
        // When it moved is not kept in Redis: at the latest, now.
        updated_at: if status == flashd_engine::OrderStatus::Created {
            c.created_at
        } else {
            now
        },
        cancel_reason: match c.status {
            flashd_redis::ClaimStatus::Cancelled(r) => Some(r),
            _ => None,
        },
    }
}
