//! The Lua scripts that decide a sale in Redis. Each runs atomically (Redis
//! runs one script at a time), so two nodes sending batches for the same
//! sale are serialised by Redis itself: that is the whole concurrency
//! story, there is no lock.
//!
//! Shared conventions:
//! * Every key a script touches is passed in `KEYS` and carries the sale's
//!   hash tag ([`crate::keys`]), so the scripts run unchanged on Redis
//!   Cluster.
//! * Order ids and user ids are 64-bit and Lua numbers are doubles, exact
//!   only to 2^53: ids stay strings from `ARGV` to the stored value and are
//!   never `tonumber`ed. Quantities, counters and millisecond times are far
//!   below 2^53 and are compared as numbers; times are written back from
//!   the `ARGV` string, never from a number (Lua 5.1 prints large numbers
//!   in exponent form).
//! * A claim is one hash field, `order id → "S|user|qty|amount|created|
//!   deadline|node|request_id"`, `S` its status: `C` created, `P` paid,
//!   `X` cancelled by the buyer, `T` timed out. The status is the first
//!   byte, so a move rewrites `S .. string.sub(v, 2)`; the request id is
//!   last, so it may hold any byte (the Rust side splits at most 8 ways).
//! * Reads are one `HMGET` per key per batch and writes one `HSET`/`ZADD`
//!   per key per batch ([`BULK`] arguments at most a call), never a round
//!   trip or a command per order where a batched one does.
//!
//! The repair is not a script: it is a `MULTI`/`EXEC` built in Rust
//! ([`crate::reconcile`]), because its input (a whole sale's claims) may be
//! far larger than what `unpack` can spread into one call.

/// Lua helpers shared by the scripts (prepended to each).
const PRELUDE: &str = r#"
-- Spread `t` into calls of `cmd key ...` of at most 4000 arguments each
-- (Lua's C stack caps unpack near 8000); `t` holds pairs, 4000 is even.
local function bulk(cmd, key, t)
  local n = #t
  local i = 1
  while i <= n do
    local j = math.min(i + 3999, n)
    redis.call(cmd, key, unpack(t, i, j))
    i = j + 1
  end
end
-- status, user, qty, deadline of a claim value.
local function parse(v)
  local s, user, qty, _, _, deadline = string.match(v, '^(%a)|(%d+)|(%d+)|(%d+)|(%d+)|(%d+)|')
  return s, user, tonumber(qty), tonumber(deadline)
end
"#;

/// Most arguments [`PRELUDE`]'s `bulk` spreads into one command.
pub const BULK: usize = 4000;

/// Create a sale's meta hash if absent.
///
/// `KEYS`: meta. `ARGV`: stock, limit, orders_max, start, end, price.
/// Returns `1` when it created the sale, or the existing
/// `{stock, limit, orders_max, start, end, price}` so the caller can tell
/// a repeat of the same creation (fine) from a different sale under the
/// same id (refused).
pub const CREATE_SALE: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.call('HMGET', KEYS[1], 'stock', 'limit', 'orders_max', 'start', 'end', 'price')
end
redis.call('HSET', KEYS[1], 'stock', ARGV[1], 'sold', 0, 'reserved', 0, 'limit', ARGV[2],
  'orders_max', ARGV[3], 'start', ARGV[4], 'end', ARGV[5], 'price', ARGV[6])
return 1
"#;

/// Decide a batch of purchases of one sale: the group commit of Redis.
///
/// `KEYS`: meta, req, held, made, claims, due.
/// `ARGV`: now, node, then six per purchase: user, request_id, qty,
/// order_id, amount, deadline.
///
/// Returns one string per purchase, in order: `G` granted (the claim is
/// what the caller sent, created at `now` by `node`), `E<order id>|<claim>`
/// a known `(user, request_id)` (its claim, whatever happened to it since),
/// `F` no such sale, `B` before the start, `A` at or after the end, `L`
/// the buyer's limit, `M` the buyer's order-count bound, `S` sold out.
///
/// The checks run in the engine's order (`Engine::place_order`): the
/// idempotency key first, then the window, the limit, the count, the stock.
/// A batch is decided in order, each purchase seeing the ones before it
/// (the same user twice, the same request id twice: the second is `E`).
/// Per batch: 4 reads, at most 6 writes, whatever its size; per purchase
/// only string building in Lua and the fields the writes add.
pub const BUY: &str = r#"
local now = tonumber(ARGV[1])
local node = ARGV[2]
local n = (#ARGV - 2) / 6
local out = {}
local m = redis.call('HMGET', KEYS[1], 'stock', 'sold', 'reserved', 'limit', 'orders_max', 'start', 'end')
if not m[1] then
  for i = 1, n do out[i] = 'F' end
  return out
end
local avail = tonumber(m[1]) - tonumber(m[2]) - tonumber(m[3])
local limit, omax = tonumber(m[4]), tonumber(m[5])
local start_at, end_at = tonumber(m[6]), tonumber(m[7])
local rk, uk = {}, {}
for i = 1, n do
  local b = 2 + (i - 1) * 6
  uk[i] = ARGV[b + 1]
  rk[i] = ARGV[b + 1] .. ':' .. ARGV[b + 2]
end
local known = redis.call('HMGET', KEYS[2], unpack(rk))
local held0 = redis.call('HMGET', KEYS[3], unpack(uk))
local made0 = redis.call('HMGET', KEYS[4], unpack(uk))
local held, made, fresh, fresh_claim = {}, {}, {}, {}
local reqs, claims, due = {}, {}, {}
local taken = 0
for i = 1, n do
  local b = 2 + (i - 1) * 6
  local user, key = uk[i], rk[i]
  local oid = known[i] or fresh[key]
  if oid then
    local v = fresh_claim[oid] or redis.call('HGET', KEYS[5], oid)
    out[i] = 'E' .. oid .. '|' .. v
  elseif now < start_at then
    out[i] = 'B'
  elseif now >= end_at then
    out[i] = 'A'
  else
    local qty = tonumber(ARGV[b + 3])
    local h = held[user] or tonumber(held0[i]) or 0
    local c = made[user] or tonumber(made0[i]) or 0
    if h + qty > limit then
      out[i] = 'L'
    elseif c >= omax then
      out[i] = 'M'
    elseif avail < qty then
      out[i] = 'S'
    else
      avail = avail - qty
      taken = taken + qty
      held[user] = h + qty
      made[user] = c + 1
      oid = ARGV[b + 4]
      local v = 'C|' .. user .. '|' .. ARGV[b + 3] .. '|' .. ARGV[b + 5] .. '|' .. ARGV[1]
        .. '|' .. ARGV[b + 6] .. '|' .. node .. '|' .. ARGV[b + 2]
      fresh[key] = oid
      fresh_claim[oid] = v
      local k = #reqs
      reqs[k + 1] = key
      reqs[k + 2] = oid
      claims[k + 1] = oid
      claims[k + 2] = v
      due[k + 1] = ARGV[b + 6]
      due[k + 2] = oid
      out[i] = 'G'
    end
  end
end
if taken > 0 then
  local hp, mp = {}, {}
  for u, h in pairs(held) do
    hp[#hp + 1] = u
    hp[#hp + 1] = h
    mp[#mp + 1] = u
    mp[#mp + 1] = made[u]
  end
  bulk('HSET', KEYS[2], reqs)
  bulk('HSET', KEYS[3], hp)
  bulk('HSET', KEYS[4], mp)
  bulk('HSET', KEYS[5], claims)
  bulk('ZADD', KEYS[6], due)
  redis.call('HINCRBY', KEYS[1], 'reserved', taken)
end
return out
"#;

/// Pay or cancel a batch of claims of one sale.
///
/// `KEYS`: meta, held, claims, due.
/// `ARGV`: now, then three per item: op (`P` pay, `C` cancel), user,
/// order_id.
///
/// Returns one string per item, its first byte the outcome and the rest
/// the claim as it is after the item (`<claim>` without the order id):
/// `N` no such order for this user (nothing after it); for a pay: `D`
/// paid now, `A` already paid, `T` too late: the deadline (`now >=
/// deadline`) passed, this call timed the claim out and gave its units
/// back (the engine's `Engine::pay` does the same), `R` cancelled before;
/// for a cancel: `D` cancelled now, `A` already cancelled (by the buyer or
/// a timeout), `R` already paid. Items see the ones before them.
pub const SETTLE: &str = r#"
local now = tonumber(ARGV[1])
local n = (#ARGV - 1) / 3
local ids = {}
for i = 1, n do ids[i] = ARGV[1 + (i - 1) * 3 + 3] end
local vs = redis.call('HMGET', KEYS[3], unpack(ids))
local cur, out, changed, gone = {}, {}, {}, {}
local dsold, dres = 0, 0
for i = 1, n do
  local b = 1 + (i - 1) * 3
  local op, user, oid = ARGV[b + 1], ARGV[b + 2], ARGV[b + 3]
  local v = cur[oid] or vs[i]
  local s, owner, qty, deadline
  if v then s, owner, qty, deadline = parse(v) end
  if not v or owner ~= user then
    out[i] = 'N'
  elseif op == 'P' then
    if s == 'P' then
      out[i] = 'A' .. v
    elseif s ~= 'C' then
      out[i] = 'R' .. v
    elseif now >= deadline then
      v = 'T' .. string.sub(v, 2)
      dres = dres - qty
      redis.call('HINCRBY', KEYS[2], user, -qty)
      changed[oid] = v
      gone[#gone + 1] = oid
      out[i] = 'T' .. v
    else
      v = 'P' .. string.sub(v, 2)
      dres = dres - qty
      dsold = dsold + qty
      changed[oid] = v
      gone[#gone + 1] = oid
      out[i] = 'D' .. v
    end
  else
    if s == 'X' or s == 'T' then
      out[i] = 'A' .. v
    elseif s ~= 'C' then
      out[i] = 'R' .. v
    else
      v = 'X' .. string.sub(v, 2)
      dres = dres - qty
      redis.call('HINCRBY', KEYS[2], user, -qty)
      changed[oid] = v
      gone[#gone + 1] = oid
      out[i] = 'D' .. v
    end
  end
  if v then cur[oid] = v end
end
if #gone > 0 then
  local cp = {}
  for oid, v in pairs(changed) do
    cp[#cp + 1] = oid
    cp[#cp + 1] = v
  end
  bulk('HSET', KEYS[3], cp)
  bulk('ZREM', KEYS[4], gone)
  redis.call('HINCRBY', KEYS[1], 'reserved', dres)
  if dsold ~= 0 then redis.call('HINCRBY', KEYS[1], 'sold', dsold) end
end
return out
"#;

/// Time out the unpaid claims whose deadline is at or before `now`.
///
/// `KEYS`: meta, held, claims, due. `ARGV`: now, limit (most claims a
/// call expires).
///
/// Returns `<order id>|<claim>` of every claim this call timed out (status
/// `T`), so the caller can log an `OrderCancelled { reason: Timeout }` for
/// each. Idempotent: a claim leaves `due` in the same script that gives
/// its units back, so two nodes running this at once (Redis runs them one
/// after the other) give a unit back exactly once; a claim paid or
/// cancelled meanwhile is only dropped from `due`.
pub const EXPIRE: &str = r#"
local ids = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
if #ids == 0 then return {} end
local vs = redis.call('HMGET', KEYS[3], unpack(ids))
local out, cp = {}, {}
local dres = 0
for i = 1, #ids do
  local v = vs[i]
  if v then
    local s, user, qty = parse(v)
    if s == 'C' then
      v = 'T' .. string.sub(v, 2)
      dres = dres - qty
      redis.call('HINCRBY', KEYS[2], user, -qty)
      cp[#cp + 1] = ids[i]
      cp[#cp + 1] = v
      out[#out + 1] = ids[i] .. '|' .. v
    end
  end
end
bulk('ZREM', KEYS[4], ids)
if #cp > 0 then
  bulk('HSET', KEYS[3], cp)
  redis.call('HINCRBY', KEYS[1], 'reserved', dres)
end
return out
"#;

/// A script with its [`PRELUDE`], as sent to `SCRIPT LOAD`.
pub fn source(body: &str) -> String {
    format!("{PRELUDE}{body}")
}

/// The scripts a session loads, by name (for errors) and body.
pub const ALL: [(&str, &str); 4] = [
    ("create_sale", CREATE_SALE),
    ("buy", BUY),
    ("settle", SETTLE),
    ("expire", EXPIRE),
];
