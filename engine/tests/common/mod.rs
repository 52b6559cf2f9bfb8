//! What the engine's test files share: a fixed instant, a sale's spec and
//! an engine as most of them use them.

use flashd_engine::*;

/// A fixed instant (2027-01-15), so tests never read a clock.
pub const T0: Millis = 1_800_000_000_000;

/// A sale open for the hour from [`T0`].
pub fn spec(stock: u64, limit: u32) -> ActivitySpec {
    ActivitySpec {
        sku_id: "SKU-1".into(),
        name: "Phone".into(),
        price_cents: 1999,
        stock,
        start_at: T0,
        end_at: T0 + 3_600_000,
        per_user_limit: limit,
    }
}

/// Node 3, unpaid orders time out after a minute, 16 sales.
pub fn engine() -> Engine {
    Engine::new(EngineConfig {
        node_id: 3,
        order_ttl_ms: 60_000,
        max_activities: 16,
        hold_released_until_durable: false,
    })
}

/// A purchase at `now`, its events appended to `log`.
pub fn buy(
    e: &Engine,
    a: ActivityId,
    user: UserId,
    q: u32,
    rid: &str,
    now: Millis,
    log: &mut Vec<Event>,
) -> Result<Placed, Reject> {
    e.place_order(
        &PlaceOrder {
            activity_id: a,
            user_id: user,
            quantity: q,
            request_id: rid,
        },
        now,
        log,
    )
}
