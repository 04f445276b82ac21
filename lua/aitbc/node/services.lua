--- The node's named services and their restarts inside the process.
--   coordinator      jobs, miners, agents and their events; the queue sweeps
--   blockchain-node  chains: blocks, transactions, accounts; producing or following
--   marketplace      GPU listings, offers and pricing
--   monitoring       /metrics and the metrics history (per-minute rollups)
-- A service that restarts is drained first: its new requests wait (they are
-- suspended, not refused) and the restart waits for those in flight; its
-- background work pauses; it starts again with its start-up checks, and its
-- health is verified before the operation says so.  The admin API, /health
-- and /v1/node belong to no service: they answer throughout.
--
-- A service's state is one number per process that only grows (a queue's
-- commit watermark, read without building the counters table on every
-- request): even while it serves, odd while it is down.
local sys = require "aitbc.sys"
local util = require "aitbc.node.util"

local M = {}

M.NAMES = { "coordinator", "blockchain-node", "marketplace", "monitoring" }
M.KNOWN = { coordinator = true, ["blockchain-node"] = true, marketplace = true, monitoring = true }
-- the order a restart of all of them follows: what the others use first
M.ORDER = { "blockchain-node", "coordinator", "marketplace", "monitoring" }

--- The service a route (its path template) belongs to, or nil.
function M.of(template)
  if template:match("^/v1/chain") or template:match("^/v1/governance") or template == "/v1/jobs/{id}/payment" then
    return "blockchain-node"
  end
  if template:match("^/v1/marketplace/") then return "marketplace" end
  if template:match("^/v1/jobs") or template:match("^/v1/miners/") or template:match("^/v1/agents") then
    return "coordinator"
  end
  if template == "/metrics" then return "monitoring" end
  return nil
end

local function watermark(name) return "aitbc.node.service:" .. name end

--- Whether the service serves now (in this process).
function M.serving(name)
  return sys.queue_committed(watermark(name)) % 2 == 0
end

--- Takes the service down (odd) or brings it up (even) and wakes the
-- requests that wait for it.
function M.set_serving(name, up)
  local state = sys.queue_committed(watermark(name))
  if (state % 2 == 0) == up then return end
  sys.queue_commit(watermark(name), state + 1)
  if up then sys.notify("service:" .. name) end
end

--- Requests of the service being handled now (all workers of this process).
function M.inflight(name)
  return math.floor(sys.counters()["service_inflight|" .. name] or 0)
end

--- Around a request of a service: nil when it may run (counted in flight
-- until M.leave), or the answer that makes it wait for a restart to end,
-- and after `patience` seconds a 503 with Retry-After.
function M.enter(ctx, name, patience)
  if not M.serving(name) then
    if ctx.req.resumed == "timeout" or (ctx.req.waited or 0) >= patience then
      util.fail(503, "service_restarting", name .. " is restarting; retry shortly", nil, { retry_after = 1 })
    end
    return { seconds = math.max(0.05, patience - (ctx.req.waited or 0)), wake = { "service:" .. name } }
  end
  sys.counter_add("service_inflight|" .. name, 1)
  return nil
end

function M.leave(name)
  sys.counter_add("service_inflight|" .. name, -1)
end

--- {name = "ok" | "restarting"} for /health.
function M.states()
  local out = {}
  for _, name in ipairs(M.NAMES) do out[name] = M.serving(name) and "ok" or "restarting" end
  return out
end

return M
