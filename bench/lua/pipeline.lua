-- wrk: send `depth` GETs of `path` per round trip (HTTP/1.1 pipelining).
-- Usage: wrk -s bench/lua/pipeline.lua URL -- PATH DEPTH
local path, depth = "/healthz", 16

function init(args)
  path = args[1] or path
  depth = tonumber(args[2] or depth)
  local r = {}
  for i = 1, depth do
    r[i] = wrk.format("GET", path)
  end
  req = table.concat(r)
end

function request()
  return req
end
