//! Commands that change engine state, and their path to durability.
//!
//! A command runs on a worker (or inline on a reactor). Before it touches
//! the engine it is admitted by the log writer ([`WriterHandle::admit`]):
//! 503 while the log is unavailable or a failure is being undone, 503 when
//! the writer's ring has no room for what it may push — room that is then
//! reserved, so nothing ever waits for the log while holding engine locks.
//! Its events go to the log writer while the engine still holds the buyer's
//! lock (so one user's events are logged in the order they were applied);
//! its reply follows them into the writer's ring and is released only after
//! the group commit that made them durable (`log.ack = "durable"`).
//! Refusals that changed nothing (sold out, limit reached, …) are answered
//! at once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use flashd_engine::{
    ActivityId, ActivitySpec, Engine, Event, EventSink, Millis, OrderId, OrderView, PlaceOrder,
    Placed, Reject, UserId,
};
use flashd_log::{Ack, Admission, Refused, Replies, WriterHandle};
use flashd_reactor::{Completer, Ticket};

use crate::api::RequestId;

pub enum Command {
    CreateActivity(Box<ActivitySpec>),
    Place {
        activity: ActivityId,
        user: UserId,
        quantity: u32,
        request_id: RequestId,
    },
    Pay {
        user: UserId,
        order: OrderId,
    },
    Cancel {
        user: UserId,
        order: OrderId,
    },
    /// Admin: add units to a sale's stock.
    AddStock {
        activity: ActivityId,
        units: u64,
    },
    /// Admin: move a sale's window (absent: unchanged).
    ChangeWindow {
        activity: ActivityId,
        start_at: Option<Millis>,
        end_at: Option<Millis>,
    },
    /// Admin: end a sale now (its end moves to the worker's `now`).
    EndActivity {
        activity: ActivityId,
    },
    /// Read an order. Not a change, but what it reports may still be on
    /// its way to the log: in durable mode it is answered after the commit
    /// that covers it, so a client never sees a state a failure takes back.
    Get {
        user: UserId,
        order: OrderId,
    },
    /// Read a sale this node does not serve yet (cluster mode: it may
    /// have been created on another node).
    GetActivity(ActivityId),
}

pub struct Job {
    pub ticket: Ticket,
    pub cmd: Command,
}

/// What a command came to, carried back to the sub-reactor for encoding.
#[derive(Debug, Clone, Copy)]
pub enum Outcome {
    Placed(Placed),
    Moved(OrderView),
    ActivityCreated(ActivityId),
    /// An admin's change of a sale applied (or asked for what it was).
    ActivityChanged(ActivityId),
    /// A sale, as `GET` answers it.
    Activity(ActivityId),
    Rejected(Reject),
    /// The log cannot make anything durable now (breaker open, or the
    /// write failed and the command was undone).
    LogUnavailable,
    /// The log writer's ring is full: shed.
    LogBusy,
    /// Cluster mode: Redis, which decides, was not asked to change
    /// anything (it cannot be reached, or this node lost its id lease):
    /// nothing was changed.
    AuthorityUnavailable,
    /// The outcome is not known to this node: the log failed and the undo
    /// is not yet durable (a crash could still bring the command back), or
    /// in cluster mode Redis may hold a decision this node could not record
    /// or got no answer for. The client learns the outcome by retrying with
    /// the same request id.
    OutcomeUnknown,
}

/// A reply waiting in the log writer's ring.
pub struct Pending {
    pub ticket: Ticket,
    pub outcome: Outcome,
    /// Cluster mode: Redis holds the decision this reply reports, whatever
    /// the log does. Undoing the events here does not undo it there, so a
    /// failed write answers `OutcomeUnknown` (the retry learns the
    /// outcome), never "nothing was changed".
    pub decided_elsewhere: bool,
}

/// Entries one command may push to the writer: its events (at most two:
/// an expiry cancel and the command's own) and its reply.
const ENTRIES_PER_COMMAND: usize = 3;

/// Everything the command path needs, shared by workers, reactors and the
/// sweeper.
pub struct Core {
    pub engine: Arc<Engine>,
    /// Set once recovery is done; `None` before that.
    pub writer: OnceLock<WriterHandle<Pending>>,
    pub ack: Ack,
    pub events: Arc<AtomicU64>,
    /// Cluster mode: Redis decides, this node records (`crate::cluster`).
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
}

/// Pushes events to the log writer under the command's admission.
pub struct LogSink<'a, 'w> {
    pub admission: &'a mut Admission<'w, Pending>,
    pub n: u64,
}

impl EventSink for LogSink<'_, '_> {
    fn emit(&mut self, ev: Event) {
        self.n += 1;
        self.admission.event(ev);
    }
}

/// Where a command's answer comes from.
pub enum Step {
    /// Answer now.
    Now(Outcome),
    /// The reply is in the writer's ring with the ticket; answered after
    /// the commit.
    Queued,
}

/// Unpaid orders the sweeper cancels per pass at most: bounds the ring room
/// one pass reserves (and never more than a quarter of the ring), so buyers
/// keep most of it even when a whole sale times out at once.
pub const EXPIRE_PER_PASS: usize = 1024;

impl Core {
    /// Run `cmd` at `now`. `ticket` is the request's, handed to the writer
    /// when the answer must wait for durability.
    pub fn run(&self, cmd: &Command, now: Millis, ticket: Ticket) -> Step {
        let Some(w) = self.writer.get() else {
            return Step::Now(Outcome::LogUnavailable);
        };
        let mut admission = match w.admit(now, ENTRIES_PER_COMMAND) {
            Ok(a) => a,
            // After a failure is undone and until the breaker closes,
            // memory holds only what is durable: reads go on.
            Err(Refused::Unavailable)
                if matches!(cmd, Command::Get { .. }) && !w.gate.is_shut() =>
            {
                return Step::Now(execute(&self.engine, cmd, now, &mut flashd_engine::Discard));
            }
            Err(Refused::Unavailable) => return Step::Now(Outcome::LogUnavailable),
            Err(Refused::Busy) => return Step::Now(Outcome::LogBusy),
        };
        let mut sink = LogSink {
            admission: &mut admission,
            n: 0,
        };
        let out = execute(&self.engine, cmd, now, &mut sink);
        if sink.n > 0 {
            self.events.fetch_add(sink.n, Ordering::Relaxed);
        }
        let must_wait = match out {
            // A refusal that changed nothing needs no log.
            Outcome::Rejected(_) => false,
            _ => self.ack == Ack::Durable,
        };
        if must_wait {
            // Even a command with no events of its own (a retry answered
            // with an existing order, a repeated pay, a read) waits: what
            // it reports may still be on its way to the disk.
            admission.reply(Pending {
                ticket,
                outcome: out,
                decided_elsewhere: false,
            });
            Step::Queued
        } else {
            Step::Now(out)
        }
    }

    /// Cancel unpaid orders past their deadline through the log, at most
    /// [`EXPIRE_PER_PASS`]; returns how many. Admitted like any command.
    pub fn expire(&self, now: Millis) -> usize {
        let Some(w) = self.writer.get() else { return 0 };
        // Never more than a quarter of the ring: buyers and readers keep
        // the rest while a pass runs, whatever log.ring_capacity is.
        let room = (w.capacity() / 4).clamp(1, EXPIRE_PER_PASS);
        let Ok(mut admission) = w.admit(now, room) else {
            return 0;
        };
        let mut sink = LogSink {
            admission: &mut admission,
            n: 0,
        };
        let n = self.engine.expire_due(now, room, &mut sink);
        self.events.fetch_add(sink.n, Ordering::Relaxed);
        n
    }
}

pub fn execute(engine: &Engine, cmd: &Command, now: Millis, sink: &mut dyn EventSink) -> Outcome {
    let r = match cmd {
        Command::CreateActivity(spec) => engine
            .create_activity(spec, now, sink)
            .map(|v| Outcome::ActivityCreated(v.id)),
        Command::Place {
            activity,
            user,
            quantity,
            request_id,
        } => engine
            .place_order(
                &PlaceOrder {
                    activity_id: *activity,
                    user_id: *user,
                    quantity: *quantity,
                    request_id: request_id.as_str(),
                },
                now,
                sink,
            )
            .map(Outcome::Placed),
        Command::Pay { user, order } => engine.pay(*user, *order, now, sink).map(Outcome::Moved),
        Command::Cancel { user, order } => {
            engine.cancel(*user, *order, now, sink).map(Outcome::Moved)
        }
        Command::AddStock { activity, units } => engine
            .add_stock(*activity, *units, now, sink)
            .map(|v| Outcome::ActivityChanged(v.id)),
        Command::ChangeWindow {
            activity,
            start_at,
            end_at,
        } => engine
            .change_window(*activity, *start_at, *end_at, now, sink)
            .map(|v| Outcome::ActivityChanged(v.id)),
        Command::EndActivity { activity } => engine
            .end_sale(*activity, now, sink)
            .map(|v| Outcome::ActivityChanged(v.id)),
        Command::GetActivity(id) => engine
            .activity(*id)
            .map(|a| Outcome::Activity(a.id))
            .ok_or(Reject::NotFound),
        // Someone else's order is as good as no order.
        Command::Get { user, order } => engine
            .order(*user, *order)
            .map(Outcome::Moved)
            .ok_or(Reject::NotFound),
    };
    r.unwrap_or_else(Outcome::Rejected)
}

/// Completes requests once the writer knows their fate.
pub struct Completions {
    pub completer: Completer<Outcome>,
    pub woken: Vec<bool>,
}

impl Completions {
    fn complete(&mut self, p: Pending, out: Outcome) {
        self.woken[p.ticket.reactor()] = true;
        self.completer.push(p.ticket, out);
    }
}

impl Replies<Pending> for Completions {
    fn done(&mut self, p: Pending, durable: bool) {
        let out = if durable {
            p.outcome
        } else if p.decided_elsewhere {
            Outcome::OutcomeUnknown
        } else {
            Outcome::LogUnavailable
        };
        self.complete(p, out);
    }

    fn unknown(&mut self, p: Pending) {
        self.complete(p, Outcome::OutcomeUnknown);
    }

    fn flush(&mut self) {
        for (r, w) in self.woken.iter_mut().enumerate() {
            if std::mem::take(w) {
                self.completer.wake(r);
            }
        }
    }
}
