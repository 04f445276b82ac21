--- The admin API of node operations (admin keys only; app.lua routes them):
-- status and health checks, logs, restarts and the operations that carry
-- them, backups, updates, users and the metrics history.
local backup = require "aitbc.node.backup"
local json = require "aitbc.json"
local logbook = require "aitbc.node.logbook"
local operations = require "aitbc.node.operations"
local services = require "aitbc.node.services"
local status = require "aitbc.node.status"
local util = require "aitbc.node.util"

local fail, invalid = util.fail, util.invalid

local M = {}

local function truthy(v) return v == "1" or v == "true" or v == "yes" end

function M.status(ctx)
  return 200, status.status(ctx, truthy(ctx.query.verbose))
end

function M.health(ctx)
  return 200, status.health(ctx, truthy(ctx.query.comprehensive))
end

function M.note_follower(ctx, chain_id) status.note_follower(ctx, chain_id) end

-- ---- restarts and operations ----

local MODES = { graceful = true, emergency = true }

--- An operation of the same kind on the same service still running (the
-- records of a process killed meanwhile count only for an hour).
local function running(ctx, service)
  for _, op in ipairs(operations.list(ctx.config.data_dir, 50)) do
    local live = (op.state == "requested" or op.state == "running") and ctx.now - (op.started or 0) < 3600
    if live and op.params and (op.params.service == service or op.params.service == "all" or service == "all") then
      return op
    end
  end
end

function M.restart(ctx)
  local body = ctx:body_object()
  local service = util.optional_string(body, "service", 32)
  if not service then invalid("service", "is required: one of " .. table.concat(services.NAMES, ", ") .. ", or all") end
  if service ~= "all" and not services.KNOWN[service] then
    fail(404, "unknown_service", "no service '" .. service .. "': this node's services are "
      .. table.concat(services.NAMES, ", ") .. " (or all)", "service")
  end
  local mode = util.optional_string(body, "mode", 16) or "graceful"
  if not MODES[mode] then invalid("mode", "must be graceful or emergency") end
  local timeout = util.optional_number(body, "timeout", 1, 3600) or 300
  local force = body.force == true
  if service == "all" and not ctx.config.supervised then
    fail(409, "no_supervisor", "this node runs without its supervisor: nothing can replace its process "
      .. "(start it with aitbc serve)")
  end
  local busy = running(ctx, service)
  if busy and not force then
    fail(409, "operation_running", "operation " .. busy.id .. " (" .. busy.kind .. " of " .. tostring(busy.params.service)
      .. ") is still running; wait for it (aitbc admin operations " .. busy.id .. ") or add force")
  end
  local op = operations.create(ctx.config.data_dir, "restart", { service = service, mode = mode, timeout = timeout,
    force = force, by = ctx.key.key_id }, ctx.now)
  ctx.log:warn("restart requested", { operation = op.id, target = service, mode = mode, by = ctx.key.key_id })
  operations.submit(ctx.config, op)
  return 202, op
end

function M.operation(ctx, id)
  local op = operations.read(ctx.config.data_dir, id)
  if not op then fail(404, "operation_not_found", "no operation " .. id) end
  return 200, op
end

function M.operations(ctx)
  local limit = util.query_integer(ctx.query, "limit", 1, operations.KEEP, 20)
  return 200, { items = operations.list(ctx.config.data_dir, limit) }
end

-- ---- logs ----

local LEVEL_NAMES = "debug, info, warn, error or critical"

function M.logs(ctx)
  local q = ctx.query
  if q.level and not logbook.LEVELS[q.level] then invalid("level", "must be " .. LEVEL_NAMES) end
  local service = q.service
  if service and not (services.KNOWN[service] or service == "node" or service == "supervisor" or service == "http") then
    fail(404, "unknown_service", "no service '" .. service .. "': " .. table.concat(services.NAMES, ", ")
      .. ", node, supervisor or http", "service")
  end
  local filter = { service = service, level = q.level, grep = q.grep,
    since = util.query_number(q, "since", 0, 1e11), until_ = util.query_number(q, "until", 0, 1e11),
    tail = util.query_integer(q, "tail", 1, logbook.MAX_ENTRIES, 100) }
  local after = util.query_integer(q, "after", 0, math.maxinteger)
  if after then
    local entries, offset = logbook.after(ctx.config.log_path, after, filter)
    return 200, { items = json.array(entries), offset = offset }
  end
  local entries, size, truncated = logbook.query(ctx.config.log_path, filter)
  return 200, { items = json.array(entries), offset = size, truncated = truncated or nil }
end

M.ROUTES = {
  { "GET", "/v1/admin/status", M.status },
  { "GET", "/v1/admin/health", M.health },
  { "POST", "/v1/admin/restart", M.restart },
  { "GET", "/v1/admin/operations", M.operations },
  { "GET", "/v1/admin/operations/{id}", M.operation },
  { "GET", "/v1/admin/logs", M.logs },
  { "GET", "/v1/admin/metrics", require("aitbc.node.metrics").history },
  { "POST", "/v1/admin/backups", backup.create },
  { "GET", "/v1/admin/backups/{id}/files/{id}", backup.file },
  { "POST", "/v1/admin/backups/{id}/complete", backup.complete },
  { "DELETE", "/v1/admin/backups/{id}", backup.abort },
}
for _, r in ipairs(require("aitbc.node.users").ROUTES) do M.ROUTES[#M.ROUTES + 1] = r end
for _, r in ipairs(require("aitbc.node.update").ROUTES) do M.ROUTES[#M.ROUTES + 1] = r end

return M
