--- Admin routes (API keys, stats, jobs, miners, audit) and /v1/auth/whoami.
local apikey = require "aitbc.protocol.apikey"
local json = require "aitbc.json"
local jobs = require "aitbc.node.jobs"
local util = require "aitbc.node.util"

local fail, invalid = util.fail, util.invalid

local M = {}

local ROLES = { client = true, miner = true, admin = true }

local function key_status(k, now)
  if k.revoked_at then return "revoked" end
  if k.expires_at and k.expires_at <= now then return "expired" end
  return "active"
end

local function key_view(k, now)
  return {
    key_id = k.key_id, role = k.role, name = k.name, environment = k.environment,
    created_at = util.iso(k.created_at), expires_at = util.iso(k.expires_at), revoked_at = util.iso(k.revoked_at),
    last_used_at = util.iso(k.last_used_at), status = key_status(k, now),
  }
end
M.key_status = key_status

--- Creates a key; the secret is in the answer once and never again.
function M.create_key(ctx)
  local body = ctx:body_object()
  local role = util.optional_string(body, "role", 16)
  if not role or not ROLES[role] then invalid("role", "must be client, miner or admin") end
  local key = util.optional_string(body, "key", 256)
  if key then
    local ok, why = apikey.check(key)
    if not ok then invalid("key", why) end
  else
    key = apikey.generate(role)
  end
  local expires_at
  local days = util.optional_number(body, "expires_in_days", 0.00001, 3650)
  if days then expires_at = ctx.now + days * 86400 end
  local key_id, hash = apikey.identity(key)
  if ctx.store:key_get(key_id) then fail(409, "key_exists", "that key is already registered as " .. key_id) end
  local row = { key_id = key_id, hash = hash, role = role, name = util.optional_string(body, "name", 100),
    environment = util.optional_string(body, "environment", 64) or "default", created_at = ctx.now, expires_at = expires_at }
  ctx.store:key_create(row)
  local view = key_view(row, ctx.now)
  view.key = key
  return 201, view
end

function M.list_keys(ctx)
  local items = json.array()
  for _, k in ipairs(ctx.store:keys_list()) do
    if not ctx.query.role or ctx.query.role == k.role then items[#items + 1] = key_view(k, ctx.now) end
  end
  return 200, { items = items }
end

function M.revoke_key(ctx, key_id)
  local body = ctx:body_object(true)
  local reason = util.optional_string(body, "reason", 200) or ("revoked by " .. ctx.key.key_id)
  local outcome = ctx.store:key_revoke(key_id, ctx.now, reason)
  if outcome == "not_found" then fail(404, "key_not_found", "no API key " .. key_id) end
  if outcome == "already_revoked" then
    fail(409, "already_revoked", key_id .. " was revoked at " .. util.iso(ctx.store:key_get(key_id).revoked_at))
  end
  if outcome == "last_admin_key" then
    fail(409, "last_admin_key", "refusing to revoke " .. key_id .. ": it is the last usable admin key (any other is "
      .. "revoked or expired) and without one nobody can manage this node; create another admin key first "
      .. "(POST /v1/admin/keys with role admin), or replace this one with: aitbc auth rotate --key-type admin --generate-new")
  end
  ctx.log:warn("api key revoked", { key_id = key_id, by = ctx.key.key_id, request_id = ctx.request_id })
  return 200, key_view(ctx.store:key_get(key_id), ctx.now)
end

function M.whoami(ctx)
  ctx.flush_audit()
  ctx.key.last_used_at = ctx.store:key_last_used(ctx.key.key_id)
  local view = key_view(ctx.key, ctx.now)
  view.permissions = ctx.permissions(ctx.key.role)
  return 200, view
end

function M.stats(ctx)
  local by_state = ctx.store:jobs_by_state()
  local total = 0
  for _, n in pairs(by_state) do total = total + n end
  local miners = ctx.store:miners_list()
  return 200, {
    total_jobs = total, jobs_by_state = by_state, queue_depth = by_state.QUEUED or 0,
    active_jobs = (by_state.QUEUED or 0) + (by_state.RUNNING or 0),
    miners_total = #miners, miners_online = ctx.store:miners_online(ctx.now - ctx.config.heartbeat_timeout),
    uptime_seconds = math.floor(ctx.now - ctx.config.started_at),
  }
end

function M.jobs(ctx)
  return jobs.list(ctx)
end

function M.miners(ctx)
  local items = json.array()
  for _, m in ipairs(ctx.store:miners_list()) do items[#items + 1] = jobs.miner_view(m) end
  return 200, { items = items }
end

function M.audit(ctx)
  local days = util.query_number(ctx.query, "days", 0, 3650, 30)
  if days == 0 then invalid("days", "must be more than 0") end
  local limit = util.query_integer(ctx.query, "limit", 1, 100000, 10000)
  ctx.flush_audit()
  local items = json.array()
  for _, r in ipairs(ctx.store:audit_since(ctx.now - days * 86400, ctx.query.key_id, limit)) do
    -- a row of refused requests counts them (count > 1) from time to last_time
    r.id, r.minute = nil, nil
    r.time, r.last_time = util.iso(r.time), util.iso(r.last_time)
    items[#items + 1] = r
  end
  return 200, { items = items, since = util.iso(ctx.now - days * 86400) }
end

return M
