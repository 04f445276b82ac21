--- Operations in the node's main loop (aitbc.node.serve): a service's
-- restart runs here as a coroutine, a step per loop turn, so that the other
-- services go on producing blocks and sweeping the queue meanwhile; a
-- restart of the whole node, an update or a restore goes on to the
-- supervisor, which starts the new process.
local operations = require "aitbc.node.operations"
local services = require "aitbc.node.services"
local sys = require "aitbc.sys"

local M = {}

local Runner = {}
Runner.__index = Runner

--- node: the main loop's state (store, data_dir, config, hooks); emit(event)
-- tells the supervisor (nil when the node runs without one).
function M.new(node, logger, emit)
  return setmetatable({ node = node, log = logger, emit = emit, active = {} }, Runner)
end

--- Waits (yielding to the main loop) until check() is true or seconds pass.
local function wait_until(check, seconds)
  local deadline = sys.monotonic() + seconds
  while true do
    local value = check()
    if value then return value end
    if sys.monotonic() >= deadline then return nil end
    coroutine.yield()
  end
end

--- One service: drain, stop, start with its checks, verify its health.
local function restart_service(self, op, name)
  local node, dir, p = self.node, self.node.data_dir, op.params
  local log = self.log
  local started = sys.monotonic()
  services.set_serving(name, false)
  local inflight = services.inflight(name)
  operations.step(dir, op, name .. ": stopped taking requests (new ones wait); " .. inflight .. " in flight",
    { service = name, phase = "shutdown", inflight = inflight })
  log:warn("service stopping for a restart", { service = name, operation = op.id, mode = p.mode })
  if p.mode ~= "emergency" then
    local drained = wait_until(function() return services.inflight(name) <= 0 end, p.timeout)
    if not drained then
      services.set_serving(name, true)
      local left = services.inflight(name)
      log:error("service restart timed out while draining; resumed as it was", { service = name, inflight = left })
      return false, string.format("%s did not drain within %g s (%d request(s) still in flight); it was resumed as it "
        .. "was and serves on", name, p.timeout, left), { rolled_back = true }
    end
    operations.step(dir, op, name .. ": in-flight work drained", { service = name, phase = "drained",
      seconds = sys.monotonic() - started })
  end
  -- started again: its own state is rebuilt and its start-up checks run
  local checks, probe = require("aitbc.node.status").service_restart(node, name)
  local failed = {}
  for _, c in ipairs(checks) do if c.status == "critical" then failed[#failed + 1] = c.name .. ": " .. c.detail end end
  if #failed > 0 then
    services.set_serving(name, true)
    log:critical("service start-up checks failed; it was resumed as it was", { service = name,
      failures = table.concat(failed, "; ") })
    return false, name .. " failed its start-up checks (" .. table.concat(failed, "; ") .. "); it was resumed as it "
      .. "was", { rolled_back = true, checks = checks }
  end
  services.set_serving(name, true)
  local held = sys.monotonic() - started
  operations.step(dir, op, name .. ": started (" .. #checks .. " start-up check(s) passed)",
    { service = name, phase = "started", checks = checks, held_seconds = held })
  local why
  local healthy = wait_until(function()
    local ok, detail, reason = pcall(probe)
    if ok and detail then return detail end
    why = ok and reason or detail
  end, math.max(5, (node.config.block_time or 2) * 3))
  if not healthy then
    log:critical("service unhealthy after its restart", { service = name, reason = why })
    return false, name .. " restarted but its health check failed: " .. tostring(why)
  end
  operations.step(dir, op, name .. ": health verified (" .. healthy .. ")", { service = name, phase = "healthy" })
  log:info("service restarted", { service = name, operation = op.id, seconds = sys.monotonic() - started })
  return true, name .. " restarted", { held_seconds = held }
end

local function run_restart(self, op)
  local dir = self.node.data_dir
  local names = op.params.service == "all" and services.ORDER or { op.params.service }
  local detail = {}
  for _, name in ipairs(names) do
    local ok, summary, fields = restart_service(self, op, name)
    detail[#detail + 1] = summary
    if not ok then
      operations.finish(dir, op, false, summary, fields)
      return
    end
  end
  operations.finish(dir, op, true, table.concat(detail, "; "))
end

--- Takes new operations from the queue and advances the running ones.
function Runner:tick()
  local config = self.node.config
  for _, id in ipairs((sys.queue_drain(operations.queue(config)))) do
    local op = operations.read(self.node.data_dir, id)
    if op and op.kind == "restart" and op.params.service ~= "all" then
      self.active[#self.active + 1] = { op = op, co = coroutine.create(run_restart) }
    elseif op and self.emit then
      self.emit { event = "operation", id = op.id, kind = op.kind }
    elseif op then
      operations.finish(self.node.data_dir, op, false, "this node runs without its supervisor (aitbc serve starts one): "
        .. "nothing can replace its process")
    end
  end
  for i = #self.active, 1, -1 do
    local a = self.active[i]
    local ok, err = coroutine.resume(a.co, self, a.op)
    if not ok then
      self.log:error("operation failed", { operation = a.op.id, error = tostring(err) })
      pcall(operations.finish, self.node.data_dir, a.op, false, "failed: " .. tostring(err))
    end
    if coroutine.status(a.co) == "dead" then table.remove(self.active, i) end
  end
end

--- Whether a service restart runs now (the loop then turns quickly).
function Runner:busy() return #self.active > 0 end

return M
