--- API keys kept by the CLI, per environment and type, in the config file
-- (mode 0600): file.keys[environment][type] = {key, source, imported_at}.
-- A command that needs a role gets its key by the usual precedence:
--   --api-key > AITBC_<ROLE>_KEY > AITBC_API_KEY > stored key of the active
--   environment > api_key in the config file.
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
-- chosen {type -> {var, key}} (a type's later, more specific variable
-- wins), failed {{type, variable, reason, fix}}, and how many were set.
function keys.from_env(types)
  local chosen, failed, seen = {}, json.array(), 0
  for _, key_type in ipairs(types) do
    for _, var in ipairs(keys.IMPORT_VARS[key_type]) do
      local value = env_value(var)
      if value then
        seen = seen + 1
        local ok, why, fix = apikey.check(value)
        if ok then
          chosen[key_type] = { var = var, key = value }
        else
          failed[#failed + 1] = { type = key_type, variable = var, reason = var .. " " .. why, fix = fix }
        end
      end
    end
  end
  return chosen, failed, seen
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

--- key, source for a role (nil when none is configured).
function keys.resolve(ctx, role)
  if ctx.globals.api_key then return ctx.globals.api_key, "flag --api-key" end
  local var = role and keys.ROLE_VAR[role]
  if var and env_value(var) then return env_value(var), "env " .. var end
  if env_value("AITBC_API_KEY") then return env_value("AITBC_API_KEY"), "env AITBC_API_KEY" end
  local stored = keys.stored(ctx.config.file, ctx.settings.environment)
  local entry = role and (stored[role] or (role == "admin" and stored.coordinator))
  if entry then return entry.key, "config " .. ctx.settings.environment .. "/" .. (stored[role] and role or "coordinator") end
  if ctx.config.file.api_key then return ctx.config.file.api_key, "config api_key" end
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
