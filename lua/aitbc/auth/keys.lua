--- API keys kept by the CLI, per environment and type, in the config file
-- (mode 0600): file.keys[environment][type] = {key, source, imported_at}.
-- A command that needs a role gets its key by this precedence (keys.resolve):
--   --api-key > AITBC_<ROLE>_KEY > the active environment's stored key of
--   that role > AITBC_API_KEY > api_key in the config file,
-- except that for the client role AITBC_API_KEY comes before the stored key:
-- the spec makes AITBC_API_KEY the client's variable (15.1, 15.3), so it
-- stands in for AITBC_CLIENT_KEY, and sets no other role's key while that
-- role has one configured.
local apikey = require "aitbc.protocol.apikey"
local json = require "aitbc.json"
local sys = require "aitbc.sys"

local keys = {}

keys.TYPES = { "admin", "client", "coordinator", "miner" }
--- Environment variables read by `auth import-env`, by key type.
keys.IMPORT_VARS = {
  client = { "AITBC_API_KEY", "AITBC_CLIENT_KEY" },
  admin = { "AITBC_ADMIN_KEY" },
  coordinator = { "AITBC_COORDINATOR_KEY" },
  miner = { "AITBC_MINER_KEY" },
}
--- The variable that names a role's key for every command.
keys.ROLE_VAR = { client = "AITBC_CLIENT_KEY", admin = "AITBC_ADMIN_KEY", miner = "AITBC_MINER_KEY",
                  coordinator = "AITBC_COORDINATOR_KEY" }

local function env_value(name)
  local v = sys.getenv(name)
  if v and v ~= "" then return v end
end

--- Stored keys of one environment: type -> entry.
function keys.stored(file, environment)
  local all = type(file.keys) == "table" and file.keys or {}
  return type(all[environment]) == "table" and all[environment] or {}
end

function keys.put(file, environment, key_type, entry)
  file.keys = type(file.keys) == "table" and file.keys or {}
  file.keys[environment] = type(file.keys[environment]) == "table" and file.keys[environment] or {}
  file.keys[environment][key_type] = entry
end

--- Every stored key: list of {environment, type, key, key_id, source, imported_at}.
function keys.all(file)
  local out = {}
  for environment, entries in pairs(type(file.keys) == "table" and file.keys or {}) do
    for key_type, e in pairs(entries) do
      if type(e) == "table" and type(e.key) == "string" then
        out[#out + 1] = { environment = environment, type = key_type, key = e.key, key_id = apikey.identity(e.key),
          source = e.source, imported_at = e.imported_at }
      end
    end
  end
  table.sort(out, function(a, b)
    if a.environment ~= b.environment then return a.environment < b.environment end
    return a.type < b.type
  end)
  return out
end

--- Removes every stored copy of the key with this id; returns what went.
function keys.remove(file, key_id)
  local removed = {}
  for _, e in ipairs(keys.all(file)) do
    if e.key_id == key_id then
      file.keys[e.environment][e.type] = nil
      if next(file.keys[e.environment]) == nil then file.keys[e.environment] = nil end
      removed[#removed + 1] = e
    end
  end
  return removed
end

--- Stored keys of one environment, or of all when environment is nil
-- (the rows of keys.all).
function keys.of_environment(file, environment)
  local out = {}
  for _, e in ipairs(keys.all(file)) do
    if not environment or e.environment == environment then out[#out + 1] = e end
  end
  return out
end

--- The keys the environment holds for these types (`auth import-env`):
-- candidates {type -> {{var, key}, ...}} most specific variable first (a
-- type's later variable: AITBC_CLIENT_KEY before AITBC_API_KEY), those
-- malformed failed {{type, variable, reason, fix}}, and how many were set.
function keys.from_env(types)
  local candidates, failed, seen = {}, json.array(), 0
  for _, key_type in ipairs(types) do
    local vars = keys.IMPORT_VARS[key_type]
    for i = #vars, 1, -1 do
      local var = vars[i]
      local value = env_value(var)
      if value then
        seen = seen + 1
        local ok, why, fix = apikey.check(value)
        if ok then
          candidates[key_type] = candidates[key_type] or {}
          table.insert(candidates[key_type], { var = var, key = value })
        else
          failed[#failed + 1] = { type = key_type, variable = var, reason = var .. " " .. why, fix = fix }
        end
      end
    end
  end
  return candidates, failed, seen
end

--- Keys as environment assignments: format "env" (export VAR=...),
-- "dotenv" (VAR=...) or "json" (an object); `when` goes in the header.
function keys.export_text(format, entries, environment, when)
  if format == "json" then
    local obj = {}
    for _, e in ipairs(entries) do obj[keys.ROLE_VAR[e.type]] = e.key end
    return json.encode(obj, { pretty = true }) .. "\n"
  end
  local lines = { "# AITBC API keys, environment " .. environment .. ", exported " .. when .. ".",
    "# Secret: keep this file private (mode 0600) and out of version control." }
  for _, e in ipairs(entries) do
    local prefix = format == "env" and "export " or ""
    lines[#lines + 1] = prefix .. keys.ROLE_VAR[e.type] .. "=" .. sys.shell_quote(e.key)
  end
  return table.concat(lines, "\n") .. "\n"
end

--- The stored key of a role in the active environment: entry, "environment/type".
local function stored_key(ctx, role)
  local environment = ctx.settings.environment
  local stored = keys.stored(ctx.config.file, environment)
  local key_type = stored[role] and role or (role == "admin" and stored.coordinator and "coordinator") or nil
  if key_type and type(stored[key_type].key) == "string" then
    return stored[key_type].key, "config file, environment " .. environment .. ", " .. key_type .. " key"
  end
end

--- Any key the user configured, for a request no role owns (aitbc api):
-- --api-key > AITBC_API_KEY > api_key > the stored keys, client first.
local function any_key(ctx)
  if env_value("AITBC_API_KEY") then return env_value("AITBC_API_KEY"), "env AITBC_API_KEY" end
  for _, role in ipairs { "client", "admin", "miner" } do -- a role's own variable (AITBC_MINER_KEY, …)
    local var = keys.ROLE_VAR[role]
    if var and env_value(var) then return env_value(var), "env " .. var end
  end
  if ctx.config.file.api_key then return ctx.config.file.api_key, "config file, api_key" end
  for _, role in ipairs { "client", "admin", "miner" } do
    local key, source = stored_key(ctx, role)
    if key then return key, source end
  end
end

--- key, source for a role (nil when none is configured); source says where
-- the key came from, for messages ("env AITBC_API_KEY", "flag --api-key",
-- "config file, environment default, miner key").
function keys.resolve(ctx, role)
  if ctx.globals and ctx.globals.api_key then return ctx.globals.api_key, "flag --api-key" end
  if not role then return any_key(ctx) end
  local var = keys.ROLE_VAR[role]
  if var and env_value(var) then return env_value(var), "env " .. var end
  local generic = env_value("AITBC_API_KEY")
  if role == "client" and generic then return generic, "env AITBC_API_KEY" end
  local key, source = stored_key(ctx, role)
  if key then return key, source end
  if generic then return generic, "env AITBC_API_KEY" end
  if ctx.config.file.api_key then return ctx.config.file.api_key, "config file, api_key" end
  return nil
end

--- The role a node route needs, for a request that names none (aitbc api):
-- what lua/aitbc/node/app.lua's routes ask; nil for public routes and those
-- any key may use.
function keys.role_for(method, path)
  path = path:gsub("^/api/v1/", "/v1/"):gsub("[?#].*$", "")
  if path:find("^/v1/admin/") or path == "/v1/admin" then return "admin" end
  if path:find("^/v1/marketplace/gpu/[^/]+/book$") or path:find("^/v1/marketplace/gpu/[^/]+/release$")
    or (method == "POST" and (path:find("^/v1/marketplace/gpu/[^/]+/reviews$") or path == "/v1/marketplace/bids"
      or path:find("^/v1/marketplace/bids/[^/]+/cancel$") or path:find("^/v1/marketplace/bookings/"))) then
    return "client"
  end
  if path:find("^/v1/marketplace/bids/[^/]+/accept$") then return "miner" end
  if path:find("^/v1/miners/") or ((path:find("^/v1/marketplace/gpu/") and (method ~= "GET"
    or path == "/v1/marketplace/gpu/mine"))) then return "miner" end
  if path:find("^/v1/jobs/") or path == "/v1/jobs" or path:find("^/v1/payments") then return "client" end
  if method == "POST" and path:find("^/v1/chain/[^/]+/blocks$") then return "admin" end
  return nil
end

--- The node URL for the active environment: --url / AITBC_URL, else the
-- environment's own url in the config file, else the configured url.
function keys.url(ctx)
  local source = ctx.config.sources.url or ""
  if source:find("^flag") or source:find("^env") then return ctx.settings.url end
  local envs = type(ctx.config.file.environments) == "table" and ctx.config.file.environments or {}
  local own = type(envs[ctx.settings.environment]) == "table" and envs[ctx.settings.environment].url
  return own or ctx.settings.url
end

return keys
