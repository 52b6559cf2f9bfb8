-- The classic flash-sale purchase, atomically in Redis.
-- KEYS[1] = sale hash (stock, start_ms, end_ms), KEYS[2] = buyers set
-- ARGV[1] = user, ARGV[2] = quantity, ARGV[3] = now (ms)
-- Returns the stock left, or -404 no sale, -403 not started, -410 ended,
-- -409 already bought, -1 sold out.
local sale = redis.call('HMGET', KEYS[1], 'stock', 'start_ms', 'end_ms')
if not sale[1] then return -404 end
local now = tonumber(ARGV[3])
if now < tonumber(sale[2]) then return -403 end
if now >= tonumber(sale[3]) then return -410 end
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1 then return -409 end
local q = tonumber(ARGV[2])
if tonumber(sale[1]) < q then return -1 end
local left = redis.call('HINCRBY', KEYS[1], 'stock', -q)
redis.call('SADD', KEYS[2], ARGV[1])
return left
