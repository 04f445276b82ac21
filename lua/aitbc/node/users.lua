--- Users (admin API): people and services that own API keys.  A user has a
-- role (its keys have it too: changing it changes what all of them may
-- do) and a status; suspending a user disables every key of theirs at once
-- (403 user_suspended), activating brings them back.  Activity comes from
-- the audit log.  The last active admin can be neither suspended nor
-- demoted: nobody could manage the node any more.
local apikey = require "aitbc.protocol.apikey"
local crypto = require "aitbc.crypto"
local json = require "aitbc.json"
local util = require "aitbc.node.util"

local fail, invalid = util.fail, util.invalid

local M = {}

local ROLES = { client = true, miner = true, admin = true }
local STATUSES = { active = true, suspended = true }
M.ACTIVITY_DAYS = 30

local function view(u)
  return { user_id = u.user_id, name = u.name, email = u.email, role = u.role, status = u.status, note = u.note,
    created_at = util.iso(u.created_at), updated_at = util.iso(u.updated_at), suspended_at = util.iso(u.suspended_at),
    suspended_reason = u.suspended_reason, keys = u.keys, active_keys = u.active_keys, last_seen = util.iso(u.last_seen),
    requests_30d = u.requests }
end

local function role_arg(value, field)
  if value ~= nil and not ROLES[value] then invalid(field, "must be client, miner or admin") end
  return value
end

local function get(ctx, user_id)
  local u = ctx.store:user_get(user_id, ctx.now, ctx.now - M.ACTIVITY_DAYS * 86400)
  if not u then fail(404, "user_not_found", "no user " .. user_id) end
  return u
end

function M.list(ctx)
  local q = ctx.query
  role_arg(q.role, "role")
  if q.status and not STATUSES[q.status] then invalid("status", "must be active or suspended") end
  local items = json.array()
  for _, u in ipairs(ctx.store:users_list { role = q.role, status = q.status, now = ctx.now,
    since = ctx.now - M.ACTIVITY_DAYS * 86400 }) do
    items[#items + 1] = view(u)
  end
  return 200, { items = items, activity_days = M.ACTIVITY_DAYS }
end

function M.show(ctx, user_id)
  local u = view(get(ctx, user_id))
  u.api_keys = json.array()
  for _, k in ipairs(ctx.store:user_keys(user_id)) do
    u.api_keys[#u.api_keys + 1] = { key_id = k.key_id, name = k.name, role = k.role, environment = k.environment,
      created_at = util.iso(k.created_at), expires_at = util.iso(k.expires_at), revoked_at = util.iso(k.revoked_at),
      status = require("aitbc.node.admin").key_status(k, ctx.now) }
  end
  return 200, u
end

--- A new key of the user (its role); the secret is in the answer once.
local function new_key(ctx, u, body)
  local key = apikey.generate(u.role)
  local key_id, hash = apikey.identity(key)
  local days = util.optional_number(body, "expires_in_days", 0.00001, 3650)
  ctx.store:key_create { key_id = key_id, hash = hash, role = u.role, user_id = u.user_id,
    name = util.optional_string(body, "key_name", 100) or (u.name .. "'s key"),
    environment = util.optional_string(body, "environment", 64) or "default", created_at = ctx.now,
    expires_at = days and (ctx.now + days * 86400) or nil }
  return { key = key, key_id = key_id, role = u.role }
end

function M.create(ctx)
  local body = ctx:body_object()
  local name = util.optional_string(body, "name", 100)
  if not name or not name:match("%S") then invalid("name", "is required (who the user is)") end
  local role = role_arg(util.optional_string(body, "role", 16), "role")
  if not role then invalid("role", "is required: client, miner or admin") end
  if ctx.store:user_by_name(name) then fail(409, "user_exists", "a user named '" .. name .. "' exists", "name") end
  local u = { user_id = "user_" .. crypto.hex(crypto.random(8)), name = name, role = role, now = ctx.now,
    email = util.optional_string(body, "email", 200), note = util.optional_string(body, "note", 500) }
  ctx.store:user_insert(u)
  ctx.log:info("user created", { user_id = u.user_id, role = role, by = ctx.key.key_id })
  local key = body.create_key == true and new_key(ctx, u, body) or nil
  local out = view(get(ctx, u.user_id))
  out.api_key = key
  return 201, out
end

local function update(ctx, user_id, changes, what)
  get(ctx, user_id)
  local outcome = ctx.store:user_update(user_id, changes, ctx.now)
  if outcome == "last_admin" then
    fail(409, "last_admin", "refusing to " .. what .. " " .. user_id .. ": it is the last active admin, and nobody "
      .. "could manage this node any more; make another admin first")
  end
  ctx.log:warn("user changed", { user_id = user_id, change = what, by = ctx.key.key_id })
  return 200, view(get(ctx, user_id))
end

function M.modify(ctx, user_id)
  local body = ctx:body_object()
  local changes = { name = util.optional_string(body, "name", 100), email = util.optional_string(body, "email", 200),
    note = util.optional_string(body, "note", 500), role = role_arg(util.optional_string(body, "role", 16), "role") }
  if not (changes.name or changes.email or changes.note or changes.role) then
    invalid("body", "has nothing to change: name, email, note or role")
  end
  if changes.name then
    local other = ctx.store:user_by_name(changes.name)
    if other and other.user_id ~= user_id then
      fail(409, "user_exists", "a user named '" .. changes.name .. "' exists", "name")
    end
  end
  return update(ctx, user_id, changes, changes.role and ("make " .. changes.role) or "modify")
end

function M.suspend(ctx, user_id)
  local body = ctx:body_object(true)
  local reason = util.optional_string(body, "reason", 200) or ("suspended by " .. ctx.key.key_id)
  return update(ctx, user_id, { status = "suspended", reason = reason }, "suspend")
end

function M.activate(ctx, user_id)
  return update(ctx, user_id, { status = "active" }, "activate")
end

function M.add_key(ctx, user_id)
  local u = get(ctx, user_id)
  if u.status ~= "active" then fail(409, "user_suspended", "user " .. user_id .. " is suspended") end
  local key = new_key(ctx, u, ctx:body_object(true))
  return 201, key
end

function M.activity(ctx, user_id)
  get(ctx, user_id)
  local days = util.query_number(ctx.query, "days", 0.0001, 3650, M.ACTIVITY_DAYS)
  local limit = util.query_integer(ctx.query, "limit", 1, 10000, 100)
  ctx.flush_audit()
  local rows, routes = ctx.store:user_activity(user_id, ctx.now - days * 86400, limit)
  local items = json.array()
  for i, r in ipairs(rows) do
    r.time = util.iso(r.time)
    items[i] = r
  end
  for _, r in ipairs(routes) do r.last = util.iso(r.last) end
  return 200, { user_id = user_id, since = util.iso(ctx.now - days * 86400), items = items, routes = json.array(routes) }
end

M.ROUTES = {
  { "GET", "/v1/admin/users", M.list },
  { "POST", "/v1/admin/users", M.create },
  { "GET", "/v1/admin/users/{id}", M.show },
  { "PATCH", "/v1/admin/users/{id}", M.modify },
  { "POST", "/v1/admin/users/{id}/suspend", M.suspend },
  { "POST", "/v1/admin/users/{id}/activate", M.activate },
  { "POST", "/v1/admin/users/{id}/keys", M.add_key },
  { "GET", "/v1/admin/users/{id}/activity", M.activity },
}

return M
