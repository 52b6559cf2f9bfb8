-- wrk: POST a purchase per request, each with the next user's token.
-- Usage: wrk -s bench/lua/buy.lua URL -- ACTIVITY TOKENS_FILE USERS_PER_THREAD
-- TOKENS_FILE holds one JWT per line, all lines of equal length (flashd
-- token --count with users of equal digit count), so every wrk thread seeks
-- to its own range: wrk's Lua random seed is the same in every thread, so
-- ranges, not random picks, keep threads' users apart.
local threads = {}
local next_id = 0

function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

function init(args)
  activity = args[1]
  per_thread = tonumber(args[3])
  f = io.open(args[2], "r")
  local first = f:read("*l")
  linelen = #first + 1
  base = tid * per_thread * linelen
  f:seek("set", base)
  used = 0
  n = 0
  path = "/api/v1/activities/" .. activity .. "/orders"
end

function request()
  if used >= per_thread then
    f:seek("set", base)
    used = 0
  end
  local tok = f:read("*l")
  used = used + 1
  n = n + 1
  -- Request ids are per user, across sales: name the sale in them, or a
  -- user buying again in the next run's sale would be an idempotency
  -- conflict (409), not a new order.
  local body = '{"quantity":1,"request_id":"a' .. activity .. "-t" .. tid .. "-" .. n .. '"}'
  return wrk.format("POST", path, {
    ["Authorization"] = "Bearer " .. tok,
    ["Content-Type"] = "application/json",
  }, body)
end
