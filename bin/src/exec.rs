//! Commands that change engine state, and their outcomes: what crosses the
//! worker rings (or runs inline when `workers.count = 0`).

use flashd_engine::{
    ActivityId, ActivitySpec, Engine, EventSink, Millis, OrderId, OrderView, PlaceOrder, Placed,
    Reject, UserId,
};
use flashd_reactor::Ticket;

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
    Rejected(Reject),
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
    };
    r.unwrap_or_else(Outcome::Rejected)
}

/// Wall-clock milliseconds, read once per batch (or per inline request).
pub fn now_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}
