-- Keeps HAProxy's shard → node map current, so steady-state requests go
-- straight to the node that owns their user and are not forwarded.
--
-- Every MERCH_OWNERS_PERIOD_MS (500) it asks one node of MERCH_NODES
-- (space-separated host:port of the nodes' internal listeners, in turn)
-- for GET /internal/owners ("shard node" per line) and sets each entry in
-- the map file MERCH_OWNERS_MAP. The map is only an optimisation: a stale
-- or missing entry costs one forward at the nodes, never a wrong answer.
-- Runtime changes are not written back to the file; a reload starts from
-- the file until the next poll.

local function split(s)
  local out = {}
  for w in string.gmatch(s or "", "%S+") do
    table.insert(out, w)
  end
  return out
end

core.register_task(function()
  local nodes = split(os.getenv("MERCH_NODES"))
  local map = os.getenv("MERCH_OWNERS_MAP") or "/usr/local/etc/haproxy/owners.map"
  local period = tonumber(os.getenv("MERCH_OWNERS_PERIOD_MS") or "500")
  local i = 0
  while true do
    if #nodes > 0 then
      i = i % #nodes + 1
      local hc = core.httpclient()
      local ok, res = pcall(function()
        return hc:get{url = "http://" .. nodes[i] .. "/internal/owners", timeout = 1000}
      end)
      if ok and res and res.status == 200 and res.body then
        for shard, node in string.gmatch(res.body, "(%d+) (%S+)") do
          core.set_map(map, shard, node)
        end
      end
    end
    core.msleep(period)
  end
end)
