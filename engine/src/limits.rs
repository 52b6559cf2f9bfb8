//! Every bound the engine enforces or sizes itself by, each with its
//! reason, and the relations between them checked at compile time.
//!
//! Naming: the thing bounded, largest scope first, its unit, then `_MAX`
//! or `_MIN` (`SALE_USER_ORDERS_MAX`: orders, per user, per sale).

/// Largest quantity one order may ask for; beyond is a malformed request.
pub const QUANTITY_MAX: u32 = 1_000;

/// Largest `per_user_limit` a sale may set. It bounds what one buyer holds
/// in a sale, so the per-(user, sale) record keeps its units in 16 bits.
pub const PER_USER_LIMIT_MAX: u32 = 1_000;

/// Largest stock a sale may open with: far above any real flash sale, and
/// small enough that every counter sum fits an `i64` many times over.
pub const STOCK_MAX: u64 = 1_000_000_000;

/// Largest unit price (10^10 of the currency's main unit): with
/// [`QUANTITY_MAX`], an order's amount stays far inside a `u64`.
pub const PRICE_CENTS_MAX: u64 = 1_000_000_000_000;

/// A sale's display name, in bytes (it is stored in every snapshot).
pub const NAME_BYTES_MAX: usize = 200;

/// A sale's SKU, in bytes.
pub const SKU_BYTES_MAX: usize = 64;

/// A buyer's idempotency key, in bytes (the engine keeps only its hash;
/// the log keeps the string).
pub const REQUEST_ID_BYTES_MAX: usize = 64;

/// Orders a buyer may create in one sale beyond its `per_user_limit`:
/// second chances after cancelling or letting an order time out (a
/// changed quantity, a failed card). A real buyer needs a few; a script
/// looping create→cancel needs unbounded ones, and every order stays in
/// memory (~160 bytes) for the life of the sale, so this bounds what one
/// buyer's churn can cost: (limit + 16) orders per sale, ~3 KB at a limit
/// of 1 and ~165 KB at the largest limit.
pub const SALE_USER_EXTRA_ORDERS: u32 = 16;

/// Orders one buyer may create in a sale with `per_user_limit`, whatever
/// became of them: the limit taken one unit per order, plus
/// [`SALE_USER_EXTRA_ORDERS`]. Past it a purchase is refused with
/// [`crate::Reject::TooManyOrders`] (`409`) and changes nothing.
pub const fn sale_user_orders_max(per_user_limit: u32) -> u32 {
    per_user_limit.saturating_add(SALE_USER_EXTRA_ORDERS)
}

/// The cap at the largest limit a sale can have.
pub const SALE_USER_ORDERS_MAX: u32 = sale_user_orders_max(PER_USER_LIMIT_MAX);

/// Orders one stripe of user state can hold: an index slot keeps an arena
/// position in 24 bits. 16.7M per stripe is 17 billion orders over all
/// stripes, some 2.5 TB of state; a stripe that fills anyway refuses new
/// orders (`503`) instead of wrapping.
pub const STRIPE_ORDERS_MAX: usize = (1 << 24) - 1;

/// Orders each user stripe is sized for when a sale opens, at most: a sale
/// of `stock` units expects about `stock * 5/4 / USER_STRIPES` orders per
/// stripe (retries after cancels and timeouts add some), and growing the
/// stripes' arenas, indexes and heaps from empty during the first second
/// of a stampede cost ~1,000 instructions per order (callgrind of the live
/// sale). 32 orders per stripe is ~6 MB for the 1,024 stripes: bigger
/// sales grow past it by doubling, as before.
pub const PRESIZE_ORDERS_PER_STRIPE_MAX: usize = 32;

/// Work worth spreading over threads: a replayed batch with fewer events
/// ([`crate::Engine::apply_batch`]) runs on the calling thread.
pub const REPLAY_PARALLEL_EVENTS_MIN: usize = 10_000;

/// An invariant check over fewer users runs on the calling thread.
pub const CHECK_PARALLEL_USERS_MIN: usize = 100_000;

/// A snapshot with fewer orders loads on the calling thread.
pub const LOAD_PARALLEL_ORDERS_MIN: usize = 100_000;

/// Threads start-up work (replay, load, invariant check) is split over at
/// most: past this, the stripes' locks and memory bandwidth, not cores,
/// are the limit.
pub const STARTUP_THREADS_MAX: usize = 16;

// An order's amount (`price * quantity`) never overflows, with room to sum.
const _: () = assert!(QUANTITY_MAX as u64 * PRICE_CENTS_MAX < u64::MAX / 2);
// One order cannot ask for more than a buyer may ever hold.
const _: () = assert!(QUANTITY_MAX <= PER_USER_LIMIT_MAX);
// Counters are `i64`: stock, and any sum of counters, fits with room.
const _: () = assert!(STOCK_MAX < (i64::MAX as u64) / 4);
// The per-(user, sale) record holds units held and orders in 16 bits each.
const _: () = assert!(PER_USER_LIMIT_MAX <= u16::MAX as u32);
const _: () = assert!(SALE_USER_ORDERS_MAX < u16::MAX as u32);
const _: () = assert!(SALE_USER_ORDERS_MAX == PER_USER_LIMIT_MAX + SALE_USER_EXTRA_ORDERS);
