//! Live stock for buyers: `GET /api/v1/activities/{id}/stream`, a
//! server-sent event stream of a sale's `remaining`, `sold`, `reserved`
//! and `state`.
//!
//! The reactor owns the connections (`flashd_reactor::Context::subscribe`,
//! reactor/src/stream.rs); this module decides what an event is. The
//! [`Hub`] keeps each streamed sale's latest encoded event, shared by every
//! subscriber on every reactor: a reactor asks for it every
//! `sse.min_interval_ms` (per sale it has subscribers of), the hub reads the
//! sale's counters (four atomic loads) and encodes a new event only when
//! they changed and the last one is at least `sse.min_interval_ms` old. So
//! a sale costs at most one encoding per interval, whatever its number of
//! subscribers, and the buy path pays nothing at all: nothing is pushed
//! from it, changes are noticed by polling.
//!
//! Event ids grow per sale and are never below the wall-clock millisecond
//! of the event, so they keep growing across a restart of the node and a
//! client's `Last-Event-ID` stays comparable: a reconnect with any id but
//! the current one gets the current state at once. The event of an ended
//! sale (`event: end`) is the last: the stream closes after it, and a
//! reconnect that already has it is closed at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use flashd_engine::{Activity, ActivityId, ActivityState, Millis};
use flashd_protocol::Request;
use flashd_reactor::{Context, StreamEvent, SubscribeError};

use crate::app::Shared;
use crate::config::SseSection;

/// Written once after the head: how long a client waits before
/// reconnecting (`EventSource` honours it). Two seconds keeps the
/// reconnect wave after a node restart at half the rate of one second,
/// while a buyer's page is stale a couple of seconds at most.
const PRELUDE: &[u8] = b"retry: 2000\n\n";

/// Everything an event says; a change in any of it is a new event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Counters {
    remaining: u64,
    sold: u64,
    reserved: u64,
    state: ActivityState,
}

impl Counters {
    /// `c`: the sale's counters as this node answers them
    /// (`Shared::counters`: Redis's in cluster mode).
    fn of(a: &Activity, c: flashd_engine::Counters, now: Millis) -> Counters {
        Counters {
            remaining: c.remaining.max(0) as u64,
            sold: c.sold.max(0) as u64,
            reserved: c.reserved.max(0) as u64,
            state: a.state_with(now, c.remaining),
        }
    }
}

struct Latest {
    counters: Counters,
    /// When it was encoded (the coalescing clock).
    at_ms: Millis,
    event: StreamEvent,
}

/// The latest event of every streamed sale, shared by all reactors.
pub struct Hub {
    min_interval_ms: u64,
    pub max_subscribers: usize,
    /// One entry per sale ever streamed: bounded by `engine.max_activities`.
    sales: Mutex<HashMap<ActivityId, Latest>>,
    /// Events encoded (each written to any number of subscribers).
    pub encoded: AtomicU64,
    /// Subscriptions refused at `sse.max_subscribers` (503).
    pub refused: AtomicU64,
}

impl Hub {
    pub fn new(cfg: &SseSection) -> Hub {
        Hub {
            min_interval_ms: cfg.min_interval_ms,
            max_subscribers: cfg.max_subscribers,
            sales: Mutex::new(HashMap::new()),
            encoded: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    /// The sale's latest event, encoded anew if its counters changed and
    /// the previous event is old enough (or the sale just ended: the end
    /// is not held back).
    pub fn event(&self, a: &Activity, c: flashd_engine::Counters, now: Millis) -> StreamEvent {
        let counters = Counters::of(a, c, now);
        // A poisoned lock only means another thread panicked mid-update
        // of a map of plain values: the entry is still a whole event.
        let mut sales = self.sales.lock().unwrap_or_else(|e| e.into_inner());
        let prev = sales.get(&a.id);
        if let Some(l) = prev {
            let fresh = l.counters == counters;
            let too_soon = now < l.at_ms.saturating_add(self.min_interval_ms)
                && counters.state != ActivityState::Ended;
            if fresh || too_soon {
                return l.event.clone();
            }
        }
        let id = prev.map_or(0, |l| l.event.id + 1).max(now);
        let event = encode(a.id, id, &counters);
        self.encoded.fetch_add(1, Ordering::Relaxed);
        sales.insert(
            a.id,
            Latest {
                counters,
                at_ms: now,
                event: event.clone(),
            },
        );
        event
    }
}

/// `id: …`, `event: end` for the last one (plain messages otherwise, so
/// `EventSource.onmessage` sees them), and one `data:` line of JSON.
fn encode(activity: ActivityId, id: u64, c: &Counters) -> StreamEvent {
    let last = c.state == ActivityState::Ended;
    let mut b = Vec::with_capacity(160);
    let mut n = itoa::Buffer::new();
    b.extend_from_slice(b"id: ");
    b.extend_from_slice(n.format(id).as_bytes());
    if last {
        b.extend_from_slice(b"\nevent: end");
    }
    b.extend_from_slice(b"\ndata: {\"activity_id\":");
    b.extend_from_slice(n.format(activity).as_bytes());
    b.extend_from_slice(b",\"remaining\":");
    b.extend_from_slice(n.format(c.remaining).as_bytes());
    b.extend_from_slice(b",\"sold\":");
    b.extend_from_slice(n.format(c.sold).as_bytes());
    b.extend_from_slice(b",\"reserved\":");
    b.extend_from_slice(n.format(c.reserved).as_bytes());
    b.extend_from_slice(b",\"state\":\"");
    b.extend_from_slice(c.state.as_str().as_bytes());
    b.extend_from_slice(b"\"}\n\n");
    StreamEvent {
        id,
        bytes: Arc::from(b),
        last,
    }
}

/// `Last-Event-ID` as a number; anything else is as if absent (the
/// client then gets the current state, which is always safe).
fn last_event_id(req: &Request<'_>) -> Option<u64> {
    std::str::from_utf8(req.header("last-event-id")?)
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Answer `GET /api/v1/activities/{id}/stream`.
pub fn subscribe(shared: &Shared, id: Option<&str>, req: &Request<'_>, cx: &mut Context<'_>) {
    let Some(a) = id
        .and_then(|s| s.parse().ok())
        .and_then(|id| shared.engine.activity(id))
    else {
        return cx.respond_error(404, "not_found", "no such resource", &[]);
    };
    if cx.head_only() {
        return cx.respond(
            200,
            "text/event-stream",
            &[("Cache-Control", "no-store")],
            b"",
        );
    }
    let event = shared.sse.event(a, shared.counters(a), shared.now_ms());
    match cx.subscribe(u64::from(a.id), last_event_id(req), event, PRELUDE) {
        Ok(()) => {}
        Err(SubscribeError::Full) => {
            shared.sse.refused.fetch_add(1, Ordering::Relaxed);
            cx.respond_error(
                503,
                "too_many_subscribers",
                "this node streams to as many subscribers as it allows (sse.max_subscribers); retry later or poll GET /api/v1/activities/{id}",
                &[("Retry-After", "5")],
            )
        }
        Err(SubscribeError::NotHere) => cx.respond_error(
            503,
            "unavailable",
            "this request cannot be streamed",
            &[("Retry-After", "1")],
        ),
    }
}

/// A reactor's poll of one streamed sale: its event if newer than
/// `have_id`.
pub fn poll(shared: &Shared, topic: u64, have_id: u64) -> Option<StreamEvent> {
    let id = ActivityId::try_from(topic).ok()?;
    let a = shared.engine.activity(id)?;
    let event = shared.sse.event(a, shared.counters(a), shared.now_ms());
    (event.id > have_id).then_some(event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flashd_engine::{ActivitySpec, Engine, EngineConfig};

    fn engine() -> Engine {
        let e = Engine::new(EngineConfig::default());
        let spec = ActivitySpec {
            sku_id: "S".into(),
            name: "N".into(),
            price_cents: 100,
            stock: 10,
            start_at: 0,
            end_at: 1_000_000,
            per_user_limit: 5,
        };
        e.create_activity(&spec, 0, &mut flashd_engine::Discard)
            .unwrap();
        e
    }

    fn hub(min_interval_ms: u64) -> Hub {
        Hub::new(&SseSection {
            min_interval_ms,
            ..SseSection::default()
        })
    }

    fn text(e: &StreamEvent) -> String {
        String::from_utf8(e.bytes.to_vec()).unwrap()
    }

    /// One encoding per change, shared by every caller; none while the
    /// counters stand still.
    #[test]
    fn an_unchanged_sale_is_not_encoded_again() {
        let (e, h) = (engine(), hub(100));
        let a = e.activity(1).unwrap();
        let first = h.event(a, a.counters(), 500);
        assert_eq!(first.id, 500, "ids start at the wall-clock ms");
        let again = h.event(a, a.counters(), 900);
        assert!(Arc::ptr_eq(&first.bytes, &again.bytes));
        assert_eq!(h.encoded.load(Ordering::Relaxed), 1);
        assert_eq!(
            text(&first),
            "id: 500\ndata: {\"activity_id\":1,\"remaining\":10,\"sold\":0,\"reserved\":0,\"state\":\"open\"}\n\n"
        );
    }

    /// Changes inside `min_interval_ms` of the last event wait for it to
    /// pass and then go out as one event; ids grow even if the clock
    /// stands still or steps back.
    #[test]
    fn changes_are_coalesced_and_ids_grow() {
        let (e, h) = (engine(), hub(100));
        let a = e.activity(1).unwrap();
        let first = h.event(a, a.counters(), 1_000);
        let buy = |q| {
            e.place_order(
                &flashd_engine::PlaceOrder {
                    activity_id: 1,
                    user_id: u64::from(q),
                    quantity: q,
                    request_id: &format!("r{q}"),
                },
                1_000,
                &mut flashd_engine::Discard,
            )
            .unwrap()
        };
        buy(1);
        buy(2);
        assert_eq!(
            h.event(a, a.counters(), 1_050).id,
            first.id,
            "too soon: held back"
        );
        let next = h.event(a, a.counters(), 1_100);
        assert_eq!(next.id, 1_100);
        assert!(text(&next).contains("\"remaining\":7,\"sold\":0,\"reserved\":3"));
        buy(3);
        // The clock stepped back: the id still grows.
        let back = h.event(a, a.counters(), 2_000);
        buy(4);
        let later = h.event(a, a.counters(), 1_500);
        assert_eq!(h.encoded.load(Ordering::Relaxed), 3);
        assert!(back.id < h.event(a, a.counters(), 10_000).id);
        assert_eq!(later.id, back.id, "held back, 1500 < 2000 + 100");
    }

    /// The end of the sale is not held back, and it is the last event.
    #[test]
    fn the_end_is_sent_at_once_and_is_last() {
        let (e, h) = (engine(), hub(10_000));
        let a = e.activity(1).unwrap();
        let open = h.event(a, a.counters(), 999_990);
        assert!(!open.last);
        let end = h.event(a, a.counters(), 1_000_000);
        assert!(end.last && end.id > open.id);
        assert!(text(&end).starts_with("id: 1000000\nevent: end\ndata: "));
        assert!(text(&end).contains("\"state\":\"ended\""));
    }
}
