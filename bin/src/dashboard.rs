//! The ops dashboard and the buyer page: two HTML pages compiled into the
//! binary (no build step, nothing fetched from anywhere but this server),
//! and `GET /api/v1/dashboard`, the admin-only JSON the dashboard polls.
//!
//! The JSON is read from the same counters as `/metrics` (per-reactor sums,
//! the log writer's histograms, the sales' atomics), as raw totals and
//! bucket counts: the page takes differences between two polls for rates
//! and for p50/p99 over the last seconds, so the server keeps no history
//! and an open dashboard costs one small read a second.

use std::sync::atomic::Ordering::Relaxed;

use flashd_engine::Reject;
use flashd_reactor::{Context, LATENCY_BOUNDS_NS};
use serde_json::{json, Map, Value};

use crate::app::Shared;
use crate::routes::{Route, ROUTE_NAMES};

/// The ops page (`GET /dashboard`).
const DASHBOARD_HTML: &str = include_str!("dashboard.html");
/// The buyer's live stock page (`GET /activities/{id}`).
const BUYER_HTML: &str = include_str!("buyer.html");

/// The pages run only their own inline script and talk only to this
/// server: a page that cannot load anything from elsewhere cannot leak the
/// admin token there either.
const PAGE_HEADERS: [(&str, &str); 3] = [
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
         connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
         frame-ancestors 'none'",
    ),
    ("Cache-Control", "no-store"),
    ("X-Content-Type-Options", "nosniff"),
];

const HTML: &str = "text/html; charset=utf-8";

pub fn page(cx: &mut Context<'_>) {
    cx.respond(200, HTML, &PAGE_HEADERS, DASHBOARD_HTML.as_bytes());
}

/// The buyer page for sale `id`; its script reads the id from the path.
pub fn buyer_page(id: Option<&str>, cx: &mut Context<'_>) {
    if id.and_then(|s| s.parse::<u32>().ok()).is_none() {
        return cx.respond_error(404, "not_found", "no such sale", &[]);
    }
    cx.respond(200, HTML, &PAGE_HEADERS, BUYER_HTML.as_bytes());
}

/// Per-bucket counts then the overflow, as the page expects.
fn buckets<const B: usize>(counts: ([u64; B], u64)) -> Value {
    let (b, above) = counts;
    let mut v: Vec<u64> = b.to_vec();
    v.push(above);
    json!(v)
}

/// `GET /api/v1/dashboard` (admin).
pub fn data(shared: &Shared, cx: &mut Context<'_>) {
    let stats = &shared.stats;
    let now = shared.clock.now_ms();
    let sum =
        |f: &dyn Fn(&crate::app::AppStats) -> u64| shared.app.iter().map(|a| f(a)).sum::<u64>();
    let mut rejected = Map::new();
    for (i, r) in Reject::ALL.iter().enumerate() {
        rejected.insert(
            r.code().to_string(),
            json!(sum(&|a| a.rejected[i].load(Relaxed))),
        );
    }
    let mut latency = Map::new();
    for route in [Route::PlaceOrder, Route::GetActivity, Route::GetOrder] {
        let t = stats.latency(route as usize);
        let mut v: Vec<u64> = t.buckets.to_vec();
        v.push(t.above);
        latency.insert(ROUTE_NAMES[route as usize].to_string(), json!(v));
    }
    let sales: Vec<Value> = shared
        .engine
        .activities()
        .map(|a| {
            let c = shared.counters(a);
            json!({
                "id": a.id,
                "sku_id": a.sku_id,
                "name": a.name,
                "stock": a.stock,
                "remaining": c.remaining.max(0),
                "sold": c.sold.max(0),
                "reserved": c.reserved.max(0),
                "state": a.state_with(now, c.remaining).as_str(),
                "start_at": a.start_at,
                "end_at": a.end_at,
            })
        })
        .collect();
    let log = shared.log.get().map(|l| {
        let s = &l.stats;
        json!({
            "backend": l.backend.to_string(),
            "commits": s.commits.load(Relaxed),
            "events": s.events.load(Relaxed),
            "failures": s.failures.load(Relaxed),
            "batch_bounds": flashd_log::BATCH_EVENTS_BOUNDS,
            "batch": buckets(s.batch_events.counts()),
            "commit_bounds_ns": flashd_log::COMMIT_NS_BOUNDS,
            "commit": buckets(s.commit_ns.counts()),
            "breaker_open": l.depth.gate.is_open(now) || l.depth.gate.is_failing(),
            "breaker_trips": l.depth.gate.trips.load(Relaxed),
            "ring_depth": l.depth.depth(),
            "committed_lsn": l.committed_lsn.load(Relaxed),
            "sink": l.sink.as_ref().map(|k| json!({
                "lag": k.lag.load(Relaxed),
                "events": k.events.load(Relaxed),
                "mysql_up": k.mysql_up.load(Relaxed),
            })),
        })
    });
    let reactor_sum = |f: &dyn Fn(&flashd_reactor::ReactorStats) -> u64| {
        stats.reactors.iter().map(|r| f(r)).sum::<u64>()
    };
    let body = json!({
        "now_ms": now,
        "version": env!("CARGO_PKG_VERSION"),
        "connections_open": stats.open.load(Relaxed),
        "orders_created": sum(&|a| a.orders_created.load(Relaxed)),
        "orders_replayed": sum(&|a| a.orders_replayed.load(Relaxed)),
        "rejected": rejected,
        "rate_limited": sum(&|a| a.rate_limited.load(Relaxed)),
        "overloaded": sum(&|a| a.ring_full.load(Relaxed)),
        "unauthorized": sum(&|a| a.unauthorized.load(Relaxed)),
        "invalid": sum(&|a| a.invalid.load(Relaxed)),
        "log_unavailable": sum(&|a| a.log_unavailable.load(Relaxed)),
        "latency_bounds_ns": LATENCY_BOUNDS_NS,
        "latency": latency,
        "log": log,
        "worker_ring_depths": shared.workers.as_ref().map(|d| d.depths()),
        "deferred_in_flight": stats
            .reactors
            .iter()
            .map(|r| r.deferred_in_flight.load(Relaxed))
            .collect::<Vec<_>>(),
        "sse": {
            "subscribers": stats.stream_subscribers.load(Relaxed),
            "max_subscribers": shared.sse.max_subscribers,
            "events": reactor_sum(&|r| r.stream_events.get()),
            "slow_drops": reactor_sum(&|r| r.stream_slow_drops.get()),
            "refused": shared.sse.refused.load(Relaxed),
            "encoded": shared.sse.encoded.load(Relaxed),
        },
        "sales": sales,
    });
    match serde_json::to_vec(&body) {
        Ok(b) => cx.respond(
            200,
            "application/json",
            &[("Cache-Control", "no-store")],
            &b,
        ),
        Err(_) => cx.respond_error(500, "internal", "could not encode the dashboard", &[]),
    }
}
