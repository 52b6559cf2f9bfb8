//! One sale compared: the state the merged logs fold to against the state
//! Redis holds ([`compare`]), every difference named, and the claims
//! Redis decided that no log holds yet told apart from drift.
//!
//! A `C` claim Redis holds and no log does is a decision whose node has
//! not logged it yet (it died, or its log write failed, between Redis's
//! answer and its log): a retry of the buyer's request on any node, or
//! the timeout, will log it. Until its deadline plus a grace it is *in
//! flight*, not drift; the comparison then expects Redis to hold the
//! logs' state plus those claims. Anything else Redis holds that no log
//! explains (a paid or cancelled claim without its logged move, a claim
//! past its grace) is drift, and so is every decision the logs hold that
//! Redis lacks (Redis lost it: a restart without fsync).

use std::collections::BTreeSet;

use flashd_engine::{ActivityId, Millis, OrderId};
use flashd_redis::{Claim, ClaimStatus, SaleSpec, SaleState};
use serde::Serialize;

use super::logs::SaleLog;

/// Differences of one kind listed one by one at most; past it, counted
/// (a Redis that lost a whole sale differs in every order: the operator
/// needs the size and a few examples, not a million lines).
pub const LISTED_PER_KIND_MAX: usize = 20;

/// A sale's counters, as one side holds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Counters {
    pub stock: u64,
    pub sold: u64,
    pub reserved: u64,
    pub remaining: u64,
    pub orders: usize,
}

impl Counters {
    pub fn of(s: &SaleState) -> Counters {
        Counters {
            stock: s.spec.stock,
            sold: s.sold,
            reserved: s.reserved,
            remaining: s.remaining(),
            orders: s.claims.len(),
        }
    }
}

/// One disagreement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    /// What disagrees: `logs` (the logs contradict each other), `sale`
    /// (one side lacks the sale), `spec`, `counters`, `claim` (both hold
    /// the order, differently), `redis_only`, `log_only`, `holding`,
    /// `orders_made`, `request`, `due`, `redis_check`, `log_check`,
    /// `redis_unreadable`.
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order: Option<OrderId>,
    pub detail: String,
}

/// A claim Redis holds that no log holds yet, within its grace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InFlight {
    pub order: OrderId,
    pub user: u64,
    pub quantity: u32,
    pub node: u16,
    pub created_at: Millis,
    pub deadline_ms: Millis,
}

impl InFlight {
    fn of(c: &Claim) -> InFlight {
        InFlight {
            order: c.order_id,
            user: c.user,
            quantity: c.quantity,
            node: c.node,
            created_at: c.created_at,
            deadline_ms: c.deadline_ms,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Redis holds exactly what the logs say.
    Agree,
    /// Redis holds what the logs say plus decisions not logged yet.
    InFlight,
    Drift,
}

/// One sale's comparison.
#[derive(Debug, Clone, Serialize)]
pub struct SaleCompare {
    pub sale: ActivityId,
    pub verdict: Verdict,
    /// What the logs fold to (`None`: they hold no sale, or do not fold).
    pub logs: Option<Counters>,
    pub redis: Option<Counters>,
    pub in_flight: Vec<InFlight>,
    pub differences: Vec<Difference>,
    /// Differences past [`LISTED_PER_KIND_MAX`] of their kind, not listed.
    pub unlisted: usize,
    /// What is neither agreement nor drift, said in words.
    pub notes: Vec<String>,
}

/// Compare sale `sale`: `log` (the merged logs, if any log names the sale)
/// against `redis` (its state in Redis, if it holds it), at `now`; a
/// claim only Redis holds is in flight while `now < deadline + grace_ms`.
pub fn compare(
    sale: ActivityId,
    log: Option<&SaleLog>,
    redis: Option<&SaleState>,
    now: Millis,
    grace_ms: u64,
) -> SaleCompare {
    let mut d = Diffs::default();
    let mut in_flight = Vec::new();
    let mut notes = Vec::new();
    // Registered in Redis, not logged yet: in flight as a sale.
    let mut registered = false;
    if let Some(l) = log {
        for c in &l.conflicts {
            d.push("logs", None, c.clone());
        }
    }
    let folded = log.and_then(|l| match flashd_redis::fold_events(sale, &l.events) {
        Ok(s) => Some(s),
        Err(e) => {
            // Already named as a conflict when the creation is missing.
            if !l.conflicts.iter().any(|c| c.contains("ActivityCreated")) {
                d.push("logs", None, format!("the logs do not fold: {e}"));
            }
            None
        }
    });
    match (&folded, redis) {
        (None, None) if log.is_none() => {
            notes.push(format!("neither the logs nor Redis hold sale {sale}"));
        }
        (None, None) => {}
        (Some(l), None) => d.push(
            "sale",
            None,
            format!(
                "Redis holds no sale {sale}; the logs hold it with {} orders",
                l.claims.len()
            ),
        ),
        (None, Some(r)) if log.is_none() => {
            if r.claims.is_empty() && r.sold == 0 && r.reserved == 0 {
                // Registered by a node that has not logged its creation
                // yet; the first node to serve it will.
                registered = true;
                notes.push(format!(
                    "sale {sale} is registered in Redis with no orders; no log holds its creation yet (the first node to serve it logs it)"
                ));
            } else {
                d.push(
                    "sale",
                    None,
                    format!(
                        "Redis holds sale {sale} with {} orders; no log holds the sale",
                        r.claims.len()
                    ),
                );
            }
        }
        (None, Some(_)) => {}
        (Some(l), Some(r)) => {
            let log = log.expect("folded from it");
            in_flight = compare_states(sale, log, l, r, now, grace_ms, &mut d);
        }
    }
    if let Some(r) = redis {
        for p in r.check() {
            d.push("redis_check", None, p);
        }
    }
    let verdict = if !d.list.is_empty() {
        Verdict::Drift
    } else if !in_flight.is_empty() || registered {
        Verdict::InFlight
    } else {
        Verdict::Agree
    };
    SaleCompare {
        sale,
        verdict,
        logs: folded.as_ref().map(Counters::of),
        redis: redis.map(Counters::of),
        in_flight: in_flight.iter().map(InFlight::of).collect(),
        differences: d.list,
        unlisted: d.unlisted,
        notes,
    }
}

/// Sale `sale` when Redis's state of it cannot be read (a record the
/// scripts never write): drift, with the reason.
pub fn unreadable(sale: ActivityId, log: Option<&SaleLog>, why: &str) -> SaleCompare {
    let logs = log
        .and_then(|l| flashd_redis::fold_events(sale, &l.events).ok())
        .as_ref()
        .map(Counters::of);
    SaleCompare {
        sale,
        verdict: Verdict::Drift,
        logs,
        redis: None,
        in_flight: Vec::new(),
        differences: vec![Difference {
            kind: "redis_unreadable",
            order: None,
            detail: why.to_string(),
        }],
        unlisted: 0,
        notes: Vec::new(),
    }
}

/// Both sides hold the sale: the claims in flight, and every difference
/// between Redis and the logs' state plus those claims.
fn compare_states(
    sale: ActivityId,
    log: &SaleLog,
    l: &SaleState,
    r: &SaleState,
    now: Millis,
    grace_ms: u64,
    d: &mut Diffs,
) -> Vec<Claim> {
    let mut in_flight = Vec::new();
    for (id, c) in &r.claims {
        if l.claims.contains_key(id) {
            continue;
        }
        if c.status == ClaimStatus::Created && now < c.deadline_ms.saturating_add(grace_ms) {
            in_flight.push(c.clone());
        } else {
            d.push(
                "redis_only",
                Some(*id),
                format!(
                    "Redis holds order {id} (user {}, {}, {} units, node {}) that no log holds{}",
                    c.user,
                    status_name(c.status),
                    c.quantity,
                    c.node,
                    if c.status == ClaimStatus::Created {
                        format!(", {} ms past its deadline", now - c.deadline_ms)
                    } else {
                        String::new()
                    }
                ),
            );
        }
    }
    // What Redis must hold: the logs' state plus the claims in flight.
    let expected = if in_flight.is_empty() {
        l.clone()
    } else {
        let mut evs = log.events.clone();
        evs.extend(in_flight.iter().map(|c| c.created_event(sale)));
        match flashd_redis::fold_events(sale, &evs) {
            Ok(s) => s,
            Err(e) => {
                d.push("logs", None, format!("with the claims in flight: {e}"));
                l.clone()
            }
        }
    };
    for p in expected.check() {
        d.push("log_check", None, p);
    }
    if expected.spec != r.spec {
        d.push(
            "spec",
            None,
            format!(
                "logs {}, Redis {}",
                spec_text(&expected.spec),
                spec_text(&r.spec)
            ),
        );
    }
    if (expected.sold, expected.reserved) != (r.sold, r.reserved) {
        d.push(
            "counters",
            None,
            format!(
                "sold {} reserved {} remaining {} in the logs{}; Redis holds sold {} reserved {} remaining {}",
                expected.sold,
                expected.reserved,
                expected.remaining(),
                if in_flight.is_empty() { "" } else { " with the claims in flight" },
                r.sold,
                r.reserved,
                r.remaining()
            ),
        );
    }
    for (id, e) in &expected.claims {
        match r.claims.get(id) {
            None => d.push(
                "log_only",
                Some(*id),
                format!(
                    "the logs hold order {id} (user {}, {}, {} units) that Redis lacks",
                    e.user,
                    status_name(e.status),
                    e.quantity
                ),
            ),
            Some(c) if c.status != e.status => d.push(
                "claim",
                Some(*id),
                format!(
                    "order {id} (user {}): the logs say {}, Redis says {}",
                    e.user,
                    status_name(e.status),
                    status_name(c.status)
                ),
            ),
            Some(c) if c != e => d.push(
                "claim",
                Some(*id),
                format!("order {id}: the logs say {e:?}, Redis holds {c:?}"),
            ),
            Some(_) => {}
        }
    }
    let users: BTreeSet<u64> = expected
        .made
        .keys()
        .chain(r.made.keys())
        .chain(expected.held.keys())
        .chain(r.held.keys())
        .copied()
        .collect();
    for u in users {
        let (eh, rh) = (held(&expected, u), held(r, u));
        if eh != rh {
            d.push(
                "holding",
                None,
                format!("user {u} holds {rh} units in Redis, {eh} by the logs"),
            );
        }
        let (em, rm) = (expected.made.get(&u), r.made.get(&u));
        if em != rm {
            d.push(
                "orders_made",
                None,
                format!(
                    "user {u} made {} orders by Redis's count, {} by the logs",
                    rm.copied().unwrap_or(0),
                    em.copied().unwrap_or(0)
                ),
            );
        }
    }
    for (key, id) in &r.requests {
        if expected.requests.get(key).is_some_and(|e| e != id) {
            d.push(
                "request",
                Some(*id),
                format!(
                    "request {:?} of user {} is order {id} in Redis, order {} in the logs",
                    key.1, key.0, expected.requests[key]
                ),
            );
        }
    }
    // Claims both hold as `C` that Redis's expiry cannot reach (its due
    // list lost them): they would never time out.
    for id in expected.due.difference(&r.due) {
        if r.claims.contains_key(id) && expected.claims[id].status == r.claims[id].status {
            d.push(
                "due",
                Some(*id),
                format!("order {id} is unpaid but no due entry of Redis reaches it"),
            );
        }
    }
    in_flight
}

fn held(s: &SaleState, u: u64) -> u32 {
    s.held.get(&u).copied().unwrap_or(0)
}

pub fn status_name(s: ClaimStatus) -> &'static str {
    match s {
        ClaimStatus::Created => "created",
        ClaimStatus::Paid => "paid",
        ClaimStatus::Cancelled(flashd_engine::CancelReason::User) => "cancelled",
        ClaimStatus::Cancelled(flashd_engine::CancelReason::Timeout) => "timed out",
    }
}

fn spec_text(s: &SaleSpec) -> String {
    format!(
        "stock {} limit {} window {}..{} price {}",
        s.stock, s.per_user_limit, s.start_at, s.end_at, s.price_cents
    )
}

/// The differences found, at most [`LISTED_PER_KIND_MAX`] of each kind.
#[derive(Default)]
struct Diffs {
    list: Vec<Difference>,
    unlisted: usize,
}

impl Diffs {
    fn push(&mut self, kind: &'static str, order: Option<OrderId>, detail: String) {
        if self.list.iter().filter(|d| d.kind == kind).count() >= LISTED_PER_KIND_MAX {
            self.unlisted += 1;
        } else {
            self.list.push(Difference {
                kind,
                order,
                detail,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flashd_engine::Event;

    const NOW: Millis = 1_000_000;

    fn sale() -> Event {
        Event::ActivityCreated {
            id: 7,
            sku_id: "sku".into(),
            name: "n".into(),
            price_cents: 100,
            stock: 10,
            start_at: 0,
            end_at: 2 * NOW,
            per_user_limit: 3,
            created_at: 1,
        }
    }
    fn created(order: OrderId, user: u64, deadline: Millis) -> Event {
        Event::OrderCreated {
            order_id: order,
            activity_id: 7,
            user_id: user,
            quantity: 1,
            amount_cents: 100,
            request_id: format!("r{order}").into(),
            created_at: 10,
            expires_at: deadline,
        }
    }
    fn paid(order: OrderId, user: u64) -> Event {
        Event::OrderPaid {
            order_id: order,
            activity_id: 7,
            user_id: user,
            quantity: 1,
            at: 20,
        }
    }
    fn log(events: Vec<Event>) -> SaleLog {
        SaleLog {
            orders: events.iter().filter(|e| e.order_id().is_some()).count(),
            events,
            conflicts: Vec::new(),
            ambiguous: false,
        }
    }
    fn state(events: &[Event]) -> SaleState {
        flashd_redis::fold_events(7, events).unwrap()
    }
    fn kinds(c: &SaleCompare) -> Vec<&'static str> {
        c.differences.iter().map(|d| d.kind).collect()
    }

    #[test]
    fn an_unlogged_created_claim_is_in_flight_until_its_grace_ends() {
        let base = vec![sale(), created(1, 5, NOW + 100), paid(1, 5)];
        let l = log(base.clone());
        let mut r = base.clone();
        r.push(created(2, 6, NOW + 100));
        let c = compare(7, Some(&l), Some(&state(&r)), NOW, 50);
        assert_eq!(c.verdict, Verdict::InFlight, "{c:?}");
        assert_eq!(c.in_flight.len(), 1);
        assert_eq!(c.in_flight[0].order, 2);
        // Past deadline + grace: drift.
        let c = compare(7, Some(&l), Some(&state(&r)), NOW + 151, 50);
        assert_eq!(c.verdict, Verdict::Drift);
        // And what it holds and reserves, which the logs do not explain.
        assert_eq!(
            kinds(&c),
            ["redis_only", "counters", "holding", "orders_made"],
            "{c:?}"
        );
        // Paid in Redis with no log at all: drift however recent.
        r.push(paid(2, 6));
        let c = compare(7, Some(&l), Some(&state(&r)), NOW, 50);
        assert_eq!(c.verdict, Verdict::Drift);
        assert!(c.differences[0].detail.contains("paid"), "{c:?}");
    }

    #[test]
    fn a_claim_redis_lost_is_named_with_everything_it_moves() {
        let all = vec![sale(), created(1, 5, NOW), created(2, 6, NOW), paid(1, 5)];
        let l = log(all.clone());
        let lost = vec![sale(), created(1, 5, NOW), paid(1, 5)];
        let c = compare(7, Some(&l), Some(&state(&lost)), NOW, 0);
        assert_eq!(c.verdict, Verdict::Drift);
        let k = kinds(&c);
        for want in ["counters", "log_only", "holding", "orders_made"] {
            assert!(k.contains(&want), "{want}: {c:?}");
        }
        assert_eq!(
            c.differences
                .iter()
                .find(|d| d.kind == "log_only")
                .unwrap()
                .order,
            Some(2)
        );
        // Agreement is agreement.
        let c = compare(7, Some(&l), Some(&state(&all)), NOW, 0);
        assert_eq!(
            (c.verdict, c.differences.len()),
            (Verdict::Agree, 0),
            "{c:?}"
        );
        assert_eq!(c.logs, c.redis);
        // Redis without the sale, and the logs without it.
        let c = compare(7, Some(&l), None, NOW, 0);
        assert_eq!(kinds(&c), ["sale"]);
        let c = compare(7, None, Some(&state(&all)), NOW, 0);
        assert_eq!(kinds(&c), ["sale"]);
        let c = compare(7, None, Some(&state(&[sale()])), NOW, 0);
        assert_eq!(c.verdict, Verdict::InFlight, "registered, not logged yet");
    }

    #[test]
    fn differences_past_the_listing_bound_are_counted() {
        let mut evs = vec![sale()];
        for o in 0..30 {
            evs.push(created(100 + o, 1000 + o, NOW));
        }
        // A big sale lost from Redis's records but not its meta: stock 10
        // is oversold by the logs too, which the check names.
        let l = log(evs);
        let c = compare(7, Some(&l), Some(&state(&[sale()])), NOW, 0);
        let log_only = c
            .differences
            .iter()
            .filter(|d| d.kind == "log_only")
            .count();
        assert_eq!(log_only, LISTED_PER_KIND_MAX);
        assert!(c.unlisted >= 10, "{}", c.unlisted);
        assert!(kinds(&c).contains(&"log_check"), "the logs oversell: {c:?}");
    }
}
