--- The node's view of API keys: what it says of a key (GET
-- /v1/auth/whoami), an admin client for managing keys, rotation, and
-- harmless probes of what a key may do.
local api = require "aitbc.api"
local apikey = require "aitbc.protocol.apikey"
local errors = require "aitbc.errors"
local json = require "aitbc.json"
local keys = require "aitbc.auth.keys"

local remote = {}

--- The node role each stored key type stands for.
remote.NODE_ROLE = { client = "client", miner = "miner", admin = "admin", coordinator = "admin" }

--- An API client sending `key` to the node of the active environment (or of `environment`).
function remote.client(ctx, key, environment)
  local url = keys.url(ctx)
  if environment and environment ~= ctx.settings.environment then
    local envs = type(ctx.config.file.environments) == "table" and ctx.config.file.environments or {}
    url = type(envs[environment]) == "table" and envs[environment].url or ctx.settings.url
  end
  return api.new { url = url, api_key = key, timeout = ctx.settings.timeout, retries = 0 }
end

--- What the node says of a key: {status = valid|revoked|expired|unknown|unreachable|error, role, expires_at, ...}
function remote.check(ctx, key, environment)
  local who, err = remote.client(ctx, key, environment):request("GET", "/v1/auth/whoami", { expect = { role = "string",
    permissions = { "array?", "string" }, expires_at = "time?", last_used_at = "time?", environment = "string?" } })
  if who then
    return { status = "valid", role = who.role, expires_at = who.expires_at, last_used_at = who.last_used_at,
      permissions = who.permissions, node_environment = who.environment }
  end
  local status = ({ api_key_revoked = "revoked", api_key_expired = "expired", invalid_api_key = "unknown" })[err.code]
  if err.kind == "network" then status = "unreachable" end
  return { status = status or "error", error = err.node_message or err.message }
end

--- A client with the admin key (raises naming `purpose` when there is none); the key and where it came from.
function remote.admin(ctx, purpose)
  local key, source = keys.resolve(ctx, "admin")
  if not key then
    errors.raise("auth", purpose .. " needs an admin API key",
      "set AITBC_ADMIN_KEY, or run 'aitbc auth import-env --key-type admin' "
        .. "(the node's first admin key is in its data dir, admin.key)")
  end
  return remote.client(ctx, key), key, source
end

--- Replaces the key `old` of key_type on the node: creates the new one
-- (new_key, or one the node generates), then revokes the old one with an
-- admin key (the new key itself when an admin key is rotated).  Returns
-- the created key {key, key_id}, and whether and why not the old one was revoked.
function remote.rotate(ctx, key_type, old, new_key)
  local old_id = (apikey.identity(old))
  local role = remote.NODE_ROLE[key_type]
  local admin, admin_key = remote.client(ctx, old), old
  if role ~= "admin" then admin, admin_key = remote.admin(ctx, "rotating a " .. key_type .. " key") end
  local created = admin:call("POST", "/v1/admin/keys", { json = { role = role, key = new_key,
    name = "rotated from " .. old_id, environment = ctx.settings.environment }, expect = { key = "string", key_id = "id" } })
  local revoker = remote.client(ctx, role == "admin" and created.key or admin_key)
  local revoked, err = revoker:request("DELETE", api.path("/v1/admin/keys/{key_id}", { key_id = old_id }),
    { json = { reason = "rotated to " .. created.key_id } })
  return created, revoked ~= nil, err and err.message or nil
end

-- ---- what a key may do ----

local PROBES = {
  { area = "client", op = "read", method = "GET", path = "/v1/jobs?limit=1", what = "check job status" },
  { area = "client", op = "write", method = "POST", path = "/v1/jobs", body = "{}", what = "submit jobs" },
  { area = "miner", op = "read", method = "GET", path = "/v1/miners/me", what = "read miner status" },
  { area = "miner", op = "write", method = "POST", path = "/v1/miners/heartbeat", body = "{}", what = "heartbeat" },
  { area = "admin", op = "read", method = "GET", path = "/v1/admin/stats", what = "system status" },
  { area = "admin", op = "write", method = "POST", path = "/v1/admin/keys", body = "{}", what = "manage users and keys" },
}

--- Probes are harmless: writes carry an invalid body (answered 422 when
-- allowed), the miner probe names a miner that does not exist.  Returns the
-- probes {area, op, endpoint, what, status, access} and any rate limit announced.
function remote.probe(ctx, key)
  local http = require "aitbc.http"
  local results, limits = json.array(), nil
  for _, p in ipairs(PROBES) do
    local res, err = http.request { method = p.method, url = keys.url(ctx) .. p.path, body = p.body,
      headers = { ["X-Api-Key"] = key, ["X-Miner-ID"] = "__permission_probe__", ["Content-Type"] = "application/json" },
      timeout = ctx.settings.timeout }
    if not res then error(err, 0) end
    local verdict = res.status == 403 and "denied" or res.status == 401 and "invalid key" or "allowed"
    results[#results + 1] = { area = p.area, op = p.op, endpoint = p.method .. " " .. p.path:gsub("%?.*", ""),
      what = p.what, status = res.status, access = verdict }
    limits = limits or res.headers["x-ratelimit-limit"] or res.headers["retry-after"]
  end
  return results, limits
end

--- Access per area from probes: {client, miner, admin} = read-write | read-only | invalid key | none.
function remote.access(probes)
  local summary = {}
  for _, r in ipairs(probes) do
    summary[r.area] = summary[r.area] or {}
    summary[r.area][r.op] = r.access
  end
  local levels = {}
  for area, s in pairs(summary) do
    if s.read == "allowed" and s.write == "allowed" then levels[area] = "read-write"
    elseif s.read == "allowed" then levels[area] = "read-only"
    else levels[area] = s.read == "invalid key" and "invalid key" or "none" end
  end
  return levels
end

return remote
