//! The Lua scripts that decide a sale in Redis. Each runs atomically (Redis
//! runs one script at a time), so two nodes sending batches for the same
//! sale are serialised by Redis itself: that is the whole concurrency
//! story, there is no lock.
//!
//! The layout ([`crate::keys`]), shaped by what a purchase costs Redis
//! (`docs/cluster.md` has the measurements):
//! * `meta`: the sale's spec and its `sold` and `reserved` counters.
//! * `users`: one field per buyer, one string: `held,made` then each of
//!   their claims as `;<request_id>#<order_id>|S|qty|amount|created|
//!   deadline|node`, `S` its status: `C` created, `P` paid, `X` cancelled
//!   by the buyer, `T` timed out. The request id is the idempotency key
//!   (found with a plain `string.find` of `;<request_id>#`), `held` the
//!   limit's count and `made` the churn bound's. A purchase rewrites one
//!   field, where one hash per index cost a field each (measured: the
//!   writes were two thirds of a purchase's cost). Request ids are the
//!   API's (`A-Z a-z 0-9 - _ . :`, [`crate::Buy::is_valid`]), so never hold
//!   `;`, `#`, `|` or `,`. A record is small: a buyer makes at most
//!   `limit + 16` orders in a sale.
//! * `due`: a list, one entry per call that granted, `<latest deadline>|
//!   <user>,<user>,...`, pushed in the order made. Expiry pops entries
//!   whose deadline has passed and times out every due claim of the users
//!   they name; a pay or cancel never touches it (a claim no longer `C` is
//!   skipped). One push per batch, where a sorted set cost one insert per
//!   order.
//!
//! Shared conventions:
//! * Every key a script touches is passed in `KEYS` and carries the sale's
//!   hash tag, so the scripts run unchanged on Redis Cluster.
//! * Order ids and user ids are 64-bit and Lua numbers are doubles, exact
//!   only to 2^53: ids stay strings and are never `tonumber`ed. Quantities,
//!   counters and millisecond times are far below 2^53 and are compared as
//!   numbers; times are written from the caller's strings, never from a
//!   number (Lua 5.1 prints large numbers in exponent form).
//! * Reads are one `HMGET` per batch and writes one `HSET` per batch
//!   ([`BULK`] arguments at most a call), never a command per order.
//!
//! The repair is not a script: it is a `MULTI`/`EXEC` built in Rust
//! (`crate::reconcile`), because its input (a whole sale) may be far more
//! arguments than `unpack` can spread into one call.

use flashd_engine::{Millis, QUANTITY_MAX};

use crate::decision::{Buy, Claim};

/// Lua helpers shared by the scripts (prepended to each).
const PRELUDE: &str = r#"
-- Globals cost a table lookup at every use; the hot loops use locals.
local find, sub, match, tonumber = string.find, string.sub, string.match, tonumber
local ARGV, KEYS = ARGV, KEYS
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
-- held, made, and the claims (from the first ';', or '') of a record.
local function split(rec)
  local h, m = match(rec, '^(%d+),(%d+)')
  local p = find(rec, ';', 1, true)
  local body = ''
  if p then body = sub(rec, p) end
  return tonumber(h), tonumber(m), body
end
-- Order `oid` in record `rec` (plain finds: a '#' only ever precedes an
-- order id): where its segment starts and ends, where its status byte is,
-- its status, quantity and deadline; nil if the buyer has no such order.
local function find_order(rec, oid)
  local p = find(rec, '#' .. oid .. '|', 1, true)
  if not p then return nil end
  local s = find(rec, ';', 1, true)
  while true do
    local q = find(rec, ';', s + 1, true)
    if not q or q > p then break end
    s = q
  end
  local sp = p + #oid + 2
  local e = find(rec, ';', sp, true)
  if e then e = e - 1 else e = #rec end
  local st, qty, deadline = match(rec, '^(%a)|(%d+)|%d+|%d+|(%d+)', sp)
  return s, e, sp, st, tonumber(qty), tonumber(deadline)
end
"#;

/// Most arguments the scripts' `bulk` helper spreads into one command.
pub const BULK: usize = 4000;

/// Most purchases (or pays and cancels) one script call decides: the
/// scripts `unpack` one read of the batch's buyers, and Lua's C stack
/// caps that near 8000. The client splits larger batches.
pub const BATCH_MAX: usize = 4000;

/// Create a sale's meta hash if absent.
///
/// `KEYS`: meta. `ARGV`: stock, limit, orders_max, start, end, price, and
/// optionally sku, name, created (what another node needs to serve the
/// sale: `crate::catalog`).
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
if #ARGV >= 9 then
  redis.call('HSET', KEYS[1], 'sku', ARGV[7], 'name', ARGV[8], 'created', ARGV[9])
end
return 1
"#;

/// Decide a batch of purchases of one sale: the group commit of Redis.
///
/// `KEYS`: meta, users, due.
/// `ARGV` (`buy_args` builds it): now, the batch's latest deadline, the
/// quantities (two bytes each, big-endian: `QUANTITY_BYTES`), then the
/// `n` users, then per purchase the record a first purchase stores:
/// `<qty>,1` and the claim's segment as it is stored if granted
/// (`;<request_id>#<order_id>|C|...`, built by the caller with `created =
/// now` and its node; its `;<request_id>#` is what finds a known request
/// among the buyer's claims).
///
/// The layout is shaped by what a purchase costs Redis
/// (`docs/cluster.md`): every argument is an object Redis parses and a
/// string Lua interns, so a purchase is two (its quantity rides in one
/// string for the whole batch); the users are contiguous, so the read of
/// their records spreads `ARGV` straight into `HMGET`; and a new buyer's
/// record (most of a stampede) is stored as it came, with no string built.
///
/// Returns the segments of the known requests, in order, then one string
/// of one code per purchase (one reply element, not one per purchase:
/// cheaper to build and to read): `G` granted, `E` a known `(user,
/// request_id)` (the next segment is its claim, whatever happened to it
/// since), `F` no such sale, `B` before the start, `A` at or after the
/// end, `L` the buyer's limit, `M` the buyer's order-count bound, `S`
/// sold out.
///
/// The checks run in the engine's order (`Engine::place_order`): the
/// idempotency key first, then the window, the limit, the count, the stock.
/// A batch is decided in order, each purchase seeing the ones before it
/// (the same user twice, the same request id twice: the second is `E`).
/// Per batch: 2 reads and 3 writes whatever its size; per purchase, string
/// work on the buyer's record (none for a new buyer) and one field written.
pub const BUY: &str = r#"
local byte = string.byte
local now = tonumber(ARGV[1])
local qs = ARGV[3]
local n = #qs / 2
local codes, existing = {}, {}
local m = redis.call('HMGET', KEYS[1], 'stock', 'sold', 'reserved', 'limit', 'orders_max', 'start', 'end')
if not m[1] then
  return {string.rep('F', n)}
end
local avail = tonumber(m[1]) - tonumber(m[2]) - tonumber(m[3])
local limit, omax = tonumber(m[4]), tonumber(m[5])
local start_at, end_at = tonumber(m[6]), tonumber(m[7])
local got = redis.call('HMGET', KEYS[2], unpack(ARGV, 4, n + 3))
-- `out`: the HSET's arguments, user then record; `at[user]`: where in
-- `out` that user's record is, once this batch changed it (a later
-- purchase of the same buyer reads and rewrites it there); `won`: the
-- users with a new claim, for the due entry.
local out, at, won = {}, {}, {}
local no, nw = 0, 0
local taken = 0
for i = 1, n do
  local user = ARGV[i + 3]
  local k = at[user]
  -- The buyer's record as this batch left it; false for a new buyer.
  local rec
  if k then rec = out[k] else rec = got[i] end
  local fresh = ARGV[i + n + 3]
  -- Its request id, as `;<request_id>#`, among the buyer's claims: only
  -- a buyer with a record can have one.
  local p = rec and find(rec, sub(fresh, find(fresh, ';', 1, true), find(fresh, '#', 1, true)), 1, true)
  if p then
    local e = find(rec, ';', p + 1, true)
    if e then e = e - 1 else e = #rec end
    codes[i] = 'E'
    existing[#existing + 1] = sub(rec, p, e)
  elseif now < start_at then
    codes[i] = 'B'
  elseif now >= end_at then
    codes[i] = 'A'
  else
    local hi, lo = byte(qs, 2 * i - 1, 2 * i)
    local qty = hi * 256 + lo
    local h, c, body = 0, 0, ''
    if rec then h, c, body = split(rec) end
    if h + qty > limit then
      codes[i] = 'L'
    elseif c >= omax then
      codes[i] = 'M'
    elseif avail < qty then
      codes[i] = 'S'
    else
      avail = avail - qty
      taken = taken + qty
      -- A new buyer's record is the argument itself.
      local new = fresh
      if rec then new = (h + qty) .. ',' .. (c + 1) .. body .. sub(fresh, (find(fresh, ';', 1, true))) end
      if k then
        out[k] = new
      else
        out[no + 1] = user
        out[no + 2] = new
        no = no + 2
        at[user] = no
        nw = nw + 1
        won[nw] = user
      end
      codes[i] = 'G'
    end
  end
end
if taken > 0 then
  bulk('HSET', KEYS[2], out)
  redis.call('RPUSH', KEYS[3], ARGV[2] .. '|' .. table.concat(won, ','))
  redis.call('HINCRBY', KEYS[1], 'reserved', taken)
end
existing[#existing + 1] = table.concat(codes)
return existing
"#;

/// Bytes of one quantity in the buy script's quantities argument: two,
/// big-endian, as `QUANTITY_MAX` (1000) is more than one byte holds.
pub(crate) const QUANTITY_BYTES: usize = 2;
const _: () = assert!(QUANTITY_MAX <= u16::MAX as u32);

/// The buy script's `ARGV` for `buys`, decided at `now` by `node` (see
/// [`BUY`]); `buys` must be valid ([`Buy::is_valid`]) and at most
/// [`BATCH_MAX`].
pub(crate) fn buy_args(cmd: &mut redis::Cmd, now: Millis, node: u16, buys: &[&Buy]) {
    let latest = buys.iter().map(|b| b.deadline_ms).max();
    let mut quantities = Vec::with_capacity(buys.len() * QUANTITY_BYTES);
    for b in buys {
        // A valid quantity is at most QUANTITY_MAX, under 2^16 (asserted
        // above); an invalid one is never sent.
        let q = u16::try_from(b.quantity).unwrap_or(u16::MAX);
        quantities.extend_from_slice(&q.to_be_bytes());
    }
    cmd.arg(now).arg(latest).arg(quantities);
    for b in buys {
        cmd.arg(b.user);
    }
    for b in buys {
        let seg = Claim::granted(b, now, node).encode_segment();
        cmd.arg(format!("{},1{seg}", b.quantity));
    }
}

/// Pay or cancel a batch of claims of one sale.
///
/// `KEYS`: meta, users.
/// `ARGV`: now, the ops as one string (`P` pay, `C` cancel, one byte per
/// item), then two per item: user, order_id.
///
/// Returns the segment of every claim found, in order, as it is after its
/// item, then one string of one code per item: `N` no such order of this
/// buyer (no segment); for a pay: `D` paid now, `A` already paid, `T` too
/// late: the deadline (`now >= deadline`) passed, this call timed the claim
/// out and gave its units back (as the engine's `Engine::pay` does), `R`
/// cancelled before; for a cancel: `D` cancelled now, `A` already
/// cancelled (by the buyer or a timeout), `R` already paid. Items see the
/// ones before them. The due list is left alone: expiry skips a claim that
/// is no longer `C`.
pub const SETTLE: &str = r#"
local now = tonumber(ARGV[1])
local ops = ARGV[2]
local n = #ops
local us = {}
for i = 1, n do us[i] = ARGV[i * 2 + 1] end
local got = redis.call('HMGET', KEYS[2], unpack(us))
local recs, dirty, codes, segs = {}, {}, {}, {}
local dsold, dres = 0, 0
for i = 1, n do
  local user, oid = ARGV[i * 2 + 1], ARGV[i * 2 + 2]
  local rec = recs[user] or got[i]
  local s, e, sp, st, qty, deadline
  if rec then s, e, sp, st, qty, deadline = find_order(rec, oid) end
  if not s then
    codes[i] = 'N'
  else
    local to, code, dh = nil, nil, 0
    if sub(ops, i, i) == 'P' then
      if st == 'P' then code = 'A'
      elseif st ~= 'C' then code = 'R'
      elseif now >= deadline then to, code, dh = 'T', 'T', qty
      else to, code = 'P', 'D'; dsold = dsold + qty end
    else
      if st == 'X' or st == 'T' then code = 'A'
      elseif st ~= 'C' then code = 'R'
      else to, code, dh = 'X', 'D', qty end
    end
    if to then
      rec = sub(rec, 1, sp - 1) .. to .. sub(rec, sp + 1)
      dres = dres - qty
      if not dirty[user] then
        dirty[user] = true
        dirty[#dirty + 1] = user
      end
    end
    codes[i] = code
    segs[#segs + 1] = sub(rec, s, e)
    if dh ~= 0 then
      local h, m, body = split(rec)
      rec = (h - dh) .. ',' .. m .. body
    end
    recs[user] = rec
  end
end
if #dirty > 0 then
  local pairs_ = {}
  for j = 1, #dirty do
    pairs_[2 * j - 1] = dirty[j]
    pairs_[2 * j] = recs[dirty[j]]
  end
  bulk('HSET', KEYS[2], pairs_)
  redis.call('HINCRBY', KEYS[1], 'reserved', dres)
  if dsold ~= 0 then redis.call('HINCRBY', KEYS[1], 'sold', dsold) end
end
segs[#segs + 1] = table.concat(codes)
return segs
"#;

/// Time out the unpaid claims whose deadline is at or before `now`.
///
/// `KEYS`: meta, users, due. `ARGV`: now, limit (claims a call expires at
/// most, rounded up to whole due entries).
///
/// Pops due entries from the head while their deadline has passed, and
/// times out every `C` claim at or past its deadline of every user they
/// name. Returns `<user><segment>` of every claim this call timed out
/// (status `T`), so the caller can log an `OrderCancelled { Timeout }`
/// for each. Idempotent: a claim moves out of `C` in the same script that
/// gives its units back, so two nodes running this at once (Redis runs
/// them one after the other) give a unit back exactly once. An entry whose
/// deadline has not passed stops the pop, even if a later one has (nodes'
/// clocks differ by a little): its claims wait at most that skew.
pub const EXPIRE: &str = r#"
local now = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local entries = redis.call('LRANGE', KEYS[3], 0, 63)
local recs, dirty, out = {}, {}, {}
local popped, dres = 0, 0
for _, ent in ipairs(entries) do
  if #out >= limit then break end
  local bar = find(ent, '|', 1, true)
  if tonumber(sub(ent, 1, bar - 1)) > now then break end
  local users = {}
  for u in string.gmatch(sub(ent, bar + 1), '%d+') do users[#users + 1] = u end
  local got = redis.call('HMGET', KEYS[2], unpack(users))
  for i, u in ipairs(users) do
    local rec = recs[u] or got[i]
    if rec then
      local h, m, body = split(rec)
      local freed = 0
      body = string.gsub(body, ';([^;#]*)#(%d+)|C|(%d+)|(%d+)|(%d+)|(%d+)|(%d+)',
        function(req, oid, qty, amount, created, deadline, node)
          if tonumber(deadline) <= now then
            freed = freed + tonumber(qty)
            local seg = ';' .. req .. '#' .. oid .. '|T|' .. qty .. '|' .. amount .. '|'
              .. created .. '|' .. deadline .. '|' .. node
            out[#out + 1] = u .. seg
            return seg
          end
        end)
      if freed > 0 then
        rec = (h - freed) .. ',' .. m .. body
        dres = dres - freed
        if not dirty[u] then
          dirty[u] = true
          dirty[#dirty + 1] = u
        end
      end
      recs[u] = rec
    end
  end
  popped = popped + 1
end
if popped > 0 then redis.call('LTRIM', KEYS[3], popped, -1) end
if #dirty > 0 then
  local pairs_ = {}
  for j = 1, #dirty do
    pairs_[2 * j - 1] = dirty[j]
    pairs_[2 * j] = recs[dirty[j]]
  end
  bulk('HSET', KEYS[2], pairs_)
  redis.call('HINCRBY', KEYS[1], 'reserved', dres)
end
return out
"#;

/// A script with the shared helpers before it, as sent to `SCRIPT LOAD`.
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
