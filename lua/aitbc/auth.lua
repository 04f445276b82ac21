--- The `aitbc auth` commands: API keys kept locally (aitbc.auth.keys) and
-- managed on the node (/v1/admin/keys, /v1/auth/whoami, /v1/admin/audit).
local api = require "aitbc.api"
local apikey = require "aitbc.protocol.apikey"
local config = require "aitbc.config"
local crypto = require "aitbc.crypto"
local errors = require "aitbc.errors"
local json = require "aitbc.json"
local keys = require "aitbc.auth.keys"
local sealed = require "aitbc.secrets.sealed"
local sys = require "aitbc.sys"

local auth = {}

local ago -- defined below

local NODE_ROLE = { client = "client", miner = "miner", admin = "admin", coordinator = "admin" }

local function iso(t) return os.date("!%Y-%m-%dT%H:%M:%SZ", math.floor(t or sys.time())) end

local function save(ctx)
  local ok, err = config.write_file(ctx.config.path, ctx.config.file)
  if not ok then error(err, 0) end
end

local function node(ctx, key, environment)
  local url = keys.url(ctx)
  if environment and environment ~= ctx.settings.environment then
    local envs = type(ctx.config.file.environments) == "table" and ctx.config.file.environments or {}
    url = type(envs[environment]) == "table" and envs[environment].url or ctx.settings.url
  end
  return api.new { url = url, api_key = key, timeout = ctx.settings.timeout, retries = 0 }
end

--- What the node says of a key: {status = valid|revoked|expired|unknown|unreachable, role, expires_at, ...}
local function check_on_node(ctx, key, environment)
  local who, err = node(ctx, key, environment):request("GET", "/v1/auth/whoami", { expect = { role = "string",
    permissions = { "array?", "string" }, expires_at = "time?", last_used_at = "time?", environment = "string?" } })
  if who then
    return { status = "valid", role = who.role, expires_at = who.expires_at, last_used_at = who.last_used_at,
      permissions = who.permissions, node_environment = who.environment }
  end
  local status = ({ api_key_revoked = "revoked", api_key_expired = "expired", invalid_api_key = "unknown" })[err.code]
  if err.kind == "network" then status = "unreachable" end
  return { status = status or "error", error = err.message }
end

local function admin_client(ctx, purpose)
  local key, source = keys.resolve(ctx, "admin")
  if not key then
    errors.raise("auth", purpose .. " needs an admin API key",
      "set AITBC_ADMIN_KEY, or run 'aitbc auth import-env --key-type admin' "
        .. "(the node's first admin key is in its data dir, admin.key)")
  end
  return node(ctx, key), key, source
end

-- ---- import-env ----

function auth.import_env(ctx)
  local environment = ctx.settings.environment
  local path = ctx.config.path
  local dir = path:match("^(.*)/[^/]*$") or "."
  local st = sys.stat(dir)
  local path_chosen = ctx.globals.config or (sys.getenv("AITBC_CONFIG") or "") ~= ""
  if path_chosen and (not st or st.type ~= "directory") then
    errors.raise("failure", "cannot store keys in " .. path .. ": directory " .. dir .. " does not exist",
      "create it first (mkdir -p " .. dir .. ") or pass another --config path")
  end
  local types = ctx.opts.key_type and { ctx.opts.key_type } or keys.TYPES
  local imported, failed, seen = json.array(), json.array(), 0
  for _, key_type in ipairs(types) do
    local chosen
    for _, var in ipairs(keys.IMPORT_VARS[key_type]) do
      local value = sys.getenv(var)
      if value and value ~= "" then
        seen = seen + 1
        local ok, why, fix = apikey.check(value)
        if ok then
          chosen = { var = var, key = value } -- the later, more specific variable wins
        else
          failed[#failed + 1] = { type = key_type, variable = var, reason = var .. " " .. why, fix = fix }
        end
      end
    end
    if chosen then
      keys.put(ctx.config.file, environment, key_type, { key = chosen.key, source = chosen.var, imported_at = iso() })
      imported[#imported + 1] = { type = key_type, variable = chosen.var, key_id = (apikey.identity(chosen.key)),
        key = apikey.mask(chosen.key), environment = environment }
    end
  end
  if seen == 0 then
    local vars = {}
    for _, t in ipairs(types) do for _, v in ipairs(keys.IMPORT_VARS[t]) do vars[#vars + 1] = v end end
    errors.raise("failure", "no API key to import: " .. table.concat(vars, ", ") .. (#vars > 1 and " are" or " is") .. " not set",
      "export the key first, e.g. export " .. vars[1] .. "=<key of at least 16 characters>", { code = "no_keys" })
  end
  if #imported > 0 then save(ctx) end
  for _, item in ipairs(imported) do
    local stored = keys.stored(ctx.config.file, environment)[item.type]
    local check = check_on_node(ctx, stored.key)
    item.node_status, item.node_role = check.status, check.role
  end
  if #failed > 0 then ctx.exit_code = 1 end
  local persisted = ctx.config.file.environment or "default"
  return {
    config_file = path, environment = environment, active_environment = persisted,
    imported = imported, failed = failed,
  }, function(d, out)
    for _, i in ipairs(d.imported) do
      local article = (i.node_role or ""):match("^[aeiou]") and "an " or "a "
      local node_note = ({ valid = "accepted by the node as " .. article .. tostring(i.node_role) .. " key",
        unreachable = "node not reachable: not verified", unknown = "the node does not know this key",
        revoked = "REVOKED on the node", expired = "EXPIRED on the node" })[i.node_status] or i.node_status
      out:success(string.format("imported %s key %s (%s) from %s — %s", i.type, i.key_id, i.key, i.variable, node_note))
    end
    for _, f in ipairs(d.failed) do
      io.stderr:write(out:style("✗", "red", out.err_color), " not imported: ", f.reason, "\n")
      if f.fix then io.stderr:write("    fix: ", f.fix, "\n") end
    end
    if #d.imported > 0 then
      out:print(string.format("stored in %s under environment '%s'", d.config_file, d.environment))
    end
    if d.environment ~= d.active_environment then
      out:print(string.format("active environment is '%s'; use these keys with --environment %s, or switch: aitbc auth use %s",
        d.active_environment, d.environment, d.environment))
    else
      out:print("active environment: " .. d.environment)
    end
  end
end

-- ---- validate / list ----

local function rows_for(ctx, all_envs)
  local out = {}
  for _, e in ipairs(keys.all(ctx.config.file)) do
    if all_envs or e.environment == ctx.settings.environment then out[#out + 1] = e end
  end
  return out
end

local WORST = { ok = 0, format = 1, rejected = 4, unreachable = 5 }

function auth.validate(ctx)
  local entries = rows_for(ctx, false)
  if #entries == 0 then
    errors.raise("not_found", "no API keys stored for environment '" .. ctx.settings.environment .. "'",
      "import them with 'aitbc auth import-env'")
  end
  local results, worst = json.array(), "ok"
  for _, e in ipairs(entries) do
    if not ctx.opts.key_type or ctx.opts.key_type == e.type then
      local fmt_ok, why = apikey.check(e.key)
      local r = { type = e.type, key_id = e.key_id, key = apikey.mask(e.key), environment = e.environment,
        length = #e.key, format = fmt_ok and "ok" or why }
      local verdict = fmt_ok and "ok" or "format"
      if fmt_ok then
        local c = check_on_node(ctx, e.key)
        r.node = c.status
        r.role = c.role
        r.expires_at = c.expires_at or (c.status == "valid" and "never") or nil
        r.type_matches = c.role and (c.role == NODE_ROLE[e.type]) or nil
        if c.status == "unreachable" then verdict = "unreachable"
        elseif c.status ~= "valid" then verdict = "rejected" end
        r.error = c.status ~= "valid" and c.error or nil
      end
      if WORST[verdict] > WORST[worst] then worst = verdict end
      results[#results + 1] = r
    end
  end
  ctx.exit_code = WORST[worst]
  return { environment = ctx.settings.environment, node = keys.url(ctx), keys = results }, function(d, out)
    out:print(out:format_table(d.keys, { "type", { "key_id", "key id", keep = true }, "format", { "node", "node status" },
      { "role", "node role" }, { "expires_at", "expires" } }))
    for _, r in ipairs(d.keys) do
      if r.type_matches == false then
        out:warn(string.format("%s is stored as a %s key but the node knows it as a %s key", r.key_id, r.type, r.role))
      end
    end
    out:print(out:style("checked against " .. d.node .. " (environment " .. d.environment .. ")", "dim"))
  end
end

local function parse_iso(t)
  local y, mo, d, h, mi, s = t:match("^(%d+)-(%d+)-(%d+)T(%d+):(%d+):(%d+)")
  if not y then return nil end
  local days = os.time { year = tonumber(y), month = tonumber(mo), day = tonumber(d), hour = 12 } // 86400
  return days * 86400 + tonumber(h) * 3600 + tonumber(mi) * 60 + tonumber(s)
end

--- "42s ago", "5m ago", "3h ago", "12d ago"
ago = function(t)
  local secs = sys.time() - (parse_iso(t) or sys.time())
  if secs < 60 then return math.floor(secs) .. "s ago" end
  if secs < 3600 then return math.floor(secs / 60) .. "m ago" end
  if secs < 86400 then return math.floor(secs / 3600) .. "h ago" end
  return math.floor(secs / 86400) .. "d ago"
end

local function summarize_permissions(perms)
  local areas, seen = {}, {}
  for _, p in ipairs(perms or {}) do
    local area = p:match("^%u+ /v1/(%w+)")
    area = ({ jobs = "jobs", miners = "mining", admin = "admin", auth = "auth" })[area] or area
    if area and not seen[area] then seen[area] = true areas[#areas + 1] = area end
  end
  return table.concat(areas, ", ")
end

function auth.list(ctx)
  local items = json.array()
  for _, e in ipairs(rows_for(ctx, not ctx.opts.environment_only)) do
    local c = check_on_node(ctx, e.key, e.environment)
    items[#items + 1] = {
      key_id = e.key_id, key = apikey.mask(e.key), type = e.type, environment = e.environment,
      active = e.environment == ctx.settings.environment,
      status = ({ valid = "active", unknown = "invalid" })[c.status] or c.status,
      last_used_at = c.last_used_at, permissions = c.permissions and json.array(c.permissions) or json.array(),
      permission_summary = c.permissions and summarize_permissions(c.permissions) or "-",
      source = e.source,
    }
  end
  return { active_environment = ctx.settings.environment, keys = items }, function(d, out)
    if #d.keys == 0 then
      out:print("no API keys stored; import some with 'aitbc auth import-env'")
      return
    end
    local rows = {}
    for i, k in ipairs(d.keys) do
      rows[i] = setmetatable({ last_used = k.last_used_at and ago(k.last_used_at) or "never" }, { __index = k })
    end
    out:print(out:format_table(rows, { { "key_id", "key id", keep = true }, "type", { "environment", "env" }, "status",
      { "last_used", "last used" }, { "permission_summary", "permissions" } }))
    out:print(out:style("key ids are derived from the keys and safe to share; --output json adds the masked keys", "dim"))
    out:print(out:style("active environment: " .. d.active_environment, "dim"))
  end
end

function auth.use(ctx)
  local environment = ctx.args.environment
  local ok, why = config.check("environment", environment)
  if not ok then errors.raise("usage", "invalid environment name: " .. why) end
  ctx.config.file.environment = environment
  if ctx.opts.url then
    local url, uwhy = config.check("url", ctx.opts.url)
    if not url then errors.raise("usage", "--url " .. uwhy) end
    ctx.config.file.environments = type(ctx.config.file.environments) == "table" and ctx.config.file.environments or {}
    ctx.config.file.environments[environment] = { url = url }
  end
  save(ctx)
  local stored = keys.stored(ctx.config.file, environment)
  local types = {}
  for t in pairs(stored) do types[#types + 1] = t end
  table.sort(types)
  return { environment = environment, key_types = json.array(types) }, function(d, out)
    out:success("active environment: " .. d.environment)
    if #d.key_types == 0 then out:warn("no keys stored for " .. d.environment .. " yet (aitbc auth import-env)")
    else out:print("keys stored there: " .. table.concat(d.key_types, ", ")) end
  end
end

-- ---- rotate / revoke ----

function auth.rotate(ctx)
  local key_type = ctx.opts.key_type
  if not ctx.opts.generate_new and not ctx.opts.new_key then
    errors.raise("usage", "say how to make the new key: --generate-new, or --new-key KEY", nil, { code = "usage_error" })
  end
  if ctx.opts.new_key then
    local ok, why = apikey.check(ctx.opts.new_key)
    if not ok then errors.raise("usage", "--new-key " .. why) end
  end
  local old, old_source = keys.resolve(ctx, key_type)
  if not old then
    errors.raise("not_found", "no " .. key_type .. " key to rotate",
      "import it first: aitbc auth import-env --key-type " .. key_type)
  end
  local old_id = apikey.identity(old)
  local admin, admin_key = node(ctx, old), old
  if NODE_ROLE[key_type] ~= "admin" then admin, admin_key = admin_client(ctx, "rotating a " .. key_type .. " key") end
  local environment = ctx.settings.environment
  local created = admin:call("POST", "/v1/admin/keys", { json = { role = NODE_ROLE[key_type], key = ctx.opts.new_key,
    name = "rotated from " .. old_id, environment = environment }, expect = { key = "string", key_id = "id" } })
  local revoker = NODE_ROLE[key_type] == "admin" and node(ctx, created.key) or node(ctx, admin_key)
  local revoked, rerr = revoker:request("DELETE", api.path("/v1/admin/keys/{key_id}", { key_id = old_id }),
    { json = { reason = "rotated to " .. created.key_id } })
  keys.put(ctx.config.file, environment, key_type, { key = created.key, source = "aitbc auth rotate", imported_at = iso() })
  if ctx.config.file.api_key == old then ctx.config.file.api_key = created.key end
  save(ctx)
  local stale_vars = json.array()
  for _, var in ipairs(keys.IMPORT_VARS[key_type]) do
    if sys.getenv(var) == old then stale_vars[#stale_vars + 1] = var end
  end
  return {
    key_type = key_type, environment = environment, old_key_id = old_id, old_key_source = old_source,
    old_key_revoked = revoked ~= nil, revoke_error = rerr and rerr.message or nil,
    new_key_id = created.key_id, new_key = ctx.opts.reveal and created.key or apikey.mask(created.key),
    config_file = ctx.config.path, stale_variables = stale_vars, export_variable = keys.ROLE_VAR[key_type],
  }, function(d, out)
    out:success(string.format("new %s key %s created on the node (%s)", d.key_type, d.new_key_id, d.new_key))
    if d.old_key_revoked then out:success("old key " .. d.old_key_id .. " deactivated (revoked on the node)")
    else out:warn("old key " .. d.old_key_id .. " was not revoked: " .. tostring(d.revoke_error)) end
    out:success("local configuration updated: " .. d.config_file .. " (environment " .. d.environment .. ")")
    local vars = #d.stale_variables > 0 and d.stale_variables or { d.export_variable }
    out:print("Update your environment: " .. table.concat(vars, ", ") .. (#d.stale_variables > 0
      and " still holds the revoked key." or " should hold the new key where you set it."))
    out:print("  eval \"$(aitbc auth export --format env --key-type " .. d.key_type
      .. ")\"   # or edit your profile / secrets store")
  end
end

function auth.revoke(ctx)
  local key_id = ctx.opts.key_id
  if not key_id:match("^key_%x+$") then
    errors.raise("usage", "--key-id must be a key id such as key_0ed546631f4eb5de (see 'aitbc auth list')")
  end
  if not ctx.opts.confirm and not ctx.confirm("Revoke API key " .. key_id .. " on the node and remove it locally?") then
    errors.raise("failure", "not revoked", nil, { code = "canceled" })
  end
  local admin = admin_client(ctx, "revoking a key")
  local revoked, err = admin:request("DELETE", api.path("/v1/admin/keys/{key_id}", { key_id = key_id }),
    { json = { reason = "aitbc auth revoke" } })
  local on_node = revoked ~= nil
  if not on_node and err.kind ~= "not_found" and err.code ~= "already_revoked" then error(err, 0) end
  local removed = keys.remove(ctx.config.file, key_id)
  if #removed > 0 then save(ctx) end
  if not on_node and err.kind == "not_found" and #removed == 0 then
    errors.raise("not_found", "no key " .. key_id .. " on the node or in the local configuration")
  end
  local where = json.array()
  for _, r in ipairs(removed) do where[#where + 1] = r.environment .. "/" .. r.type end
  return { key_id = key_id, revoked_on_node = on_node, revoked_at = revoked and revoked.revoked_at,
    node_note = not on_node and err.message or nil, removed_locally = where, config_file = ctx.config.path,
    audit = "recorded in the node's audit log (DELETE /v1/admin/keys/" .. key_id .. ")" }, function(d, out)
    if d.revoked_on_node then
      out:success("revoked " .. d.key_id .. " on the node at " .. tostring(d.revoked_at) .. "; it is refused from now on")
    else out:warn(d.key_id .. " on the node: " .. tostring(d.node_note)) end
    if #d.removed_locally > 0 then
      out:success("removed from " .. d.config_file .. " (" .. table.concat(d.removed_locally, ", ") .. ")")
    else out:print("it was not stored locally") end
    out:print(d.audit)
  end
end

-- ---- export ----

local function export_text(format, entries, environment)
  if format == "json" then
    local obj = {}
    for _, e in ipairs(entries) do obj[keys.ROLE_VAR[e.type]] = e.key end
    return json.encode(obj, { pretty = true }) .. "\n"
  end
  local lines = { "# AITBC API keys, environment " .. environment .. ", exported " .. iso() .. ".",
    "# Secret: keep this file private (mode 0600) and out of version control." }
  for _, e in ipairs(entries) do
    local prefix = format == "env" and "export " or ""
    lines[#lines + 1] = prefix .. keys.ROLE_VAR[e.type] .. "=" .. sys.shell_quote(e.key)
  end
  return table.concat(lines, "\n") .. "\n"
end

function auth.export(ctx)
  local entries = {}
  for _, e in ipairs(rows_for(ctx, false)) do
    if not ctx.opts.key_type or e.type == ctx.opts.key_type then entries[#entries + 1] = e end
  end
  if #entries == 0 then
    errors.raise("not_found", "no API keys to export for environment '" .. ctx.settings.environment .. "'",
      "import them with 'aitbc auth import-env'")
  end
  local text = export_text(ctx.opts.format, entries, ctx.settings.environment)
  local sha = crypto.hex(crypto.sha256(text))
  local exported = json.array()
  for _, e in ipairs(entries) do
    exported[#exported + 1] = { type = e.type, variable = keys.ROLE_VAR[e.type], key_id = e.key_id }
  end
  local path = ctx.opts.output and config.expand(ctx.opts.output)
  if not path then
    if ctx.out.format ~= "table" then return { format = ctx.opts.format, content = text, sha256 = sha, keys = exported } end
    io.stdout:write(text)
    io.stderr:write("sha256 ", sha, "\n")
    return
  end
  local ok, err = sys.write_file(path, text, tonumber("600", 8))
  if not ok then errors.raise("failure", "cannot write " .. path .. ": " .. err) end
  local sum_path = path .. ".sha256"
  ok, err = sys.write_file(sum_path, sha .. "  " .. path:match("[^/]*$") .. "\n", tonumber("644", 8))
  if not ok then errors.raise("failure", "cannot write " .. sum_path .. ": " .. err) end
  return { path = path, format = ctx.opts.format, mode = "0600", sha256 = sha, checksum_file = sum_path, keys = exported },
    function(d, out)
      out:success(string.format("exported %d key(s) to %s (mode %s)", #d.keys, d.path, d.mode))
      out:print("sha256 " .. d.sha256 .. "  (verify: cd " .. (d.path:match("^(.*)/") or ".") .. " && sha256sum -c "
        .. d.checksum_file:match("[^/]*$") .. ")")
      out:warn("this file holds live credentials: store it encrypted or delete it after use (aitbc auth backup encrypts)")
    end
end

-- ---- test --permissions ----

local PROBES = {
  { area = "client", op = "read", method = "GET", path = "/v1/jobs?limit=1", what = "check job status" },
  { area = "client", op = "write", method = "POST", path = "/v1/jobs", body = "{}", what = "submit jobs" },
  { area = "miner", op = "read", method = "GET", path = "/v1/miners/me", what = "read miner status" },
  { area = "miner", op = "write", method = "POST", path = "/v1/miners/heartbeat", body = "{}", what = "heartbeat" },
  { area = "admin", op = "read", method = "GET", path = "/v1/admin/stats", what = "system status" },
  { area = "admin", op = "write", method = "POST", path = "/v1/admin/keys", body = "{}", what = "manage users and keys" },
}

--- Probes are harmless: writes carry an invalid body (answered 422 when
-- allowed), the miner probe names a miner that does not exist.
local function probe(ctx, key)
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

function auth.test(ctx)
  local candidates, seen = {}, {}
  local function add(key, label)
    if key and not seen[key] then seen[key] = true candidates[#candidates + 1] = { key = key, label = label } end
  end
  if ctx.globals.api_key then add(ctx.globals.api_key, "--api-key") end
  for _, t in ipairs(keys.TYPES) do
    local key, source = keys.resolve(ctx, t)
    if key then add(key, t .. " (" .. source .. ")") end
  end
  if #candidates == 0 then errors.raise("not_found", "no API key configured", "import one with 'aitbc auth import-env'") end
  local reports = json.array()
  for _, c in ipairs(candidates) do
    local probes, limits = probe(ctx, c.key)
    local summary = {}
    for _, r in ipairs(probes) do
      summary[r.area] = summary[r.area] or {}
      summary[r.area][r.op] = r.access
    end
    local function level(area)
      local s = summary[area]
      if s.read == "allowed" and s.write == "allowed" then return "read-write" end
      if s.read == "allowed" then return "read-only" end
      return s.read == "invalid key" and "invalid key" or "none"
    end
    local who = check_on_node(ctx, c.key)
    reports[#reports + 1] = { key = apikey.mask(c.key), key_id = (apikey.identity(c.key)), label = c.label,
      role = who.role, status = who.status, client = level("client"), miner = level("miner"), admin = level("admin"),
      probes = probes, rate_limit = limits or "none announced by the node" }
  end
  return { node = keys.url(ctx), keys = reports }, function(d, out)
    out:print(out:format_table(d.keys, { { "key_id", "key", keep = true }, { "label", "source" }, { "role", "node role" },
      { "client", "client ops" }, { "miner", "miner ops" }, { "admin", "admin ops" } }))
    if ctx.opts.permissions or ctx.globals.verbose then
      for _, r in ipairs(d.keys) do
        out:print("")
        out:print(out:style(r.key_id .. " (" .. tostring(r.role) .. ")", "bold"))
        out:print(out:format_table(r.probes, { "endpoint", "what", "status", "access" }))
        out:print("rate limits: " .. r.rate_limit)
      end
    end
  end
end

-- ---- backup / recover ----

local BACKUP_AD = "aitbc-key-backup-v1"

--- The backup password: --password-file > AITBC_BACKUP_PASSWORD > a prompt.
local function password(ctx, new) return require("aitbc.secrets.password").get("backup", ctx.opts.password_file, new) end

function auth.backup(ctx)
  local all = keys.all(ctx.config.file)
  if #all == 0 then errors.raise("not_found", "no API keys to back up", "import them with 'aitbc auth import-env'") end
  local pw = password(ctx, true)
  local plaintext = json.encode { format = "aitbc-keys", version = 1, created_at = iso(), keys = ctx.config.file.keys,
    environments = ctx.config.file.environments }
  local doc = sealed.seal({ format = "aitbc-key-backup", version = 1, created_at = iso() }, plaintext, pw, BACKUP_AD)
  local path = config.expand(ctx.opts.output)
  local ok, err = sys.write_file(path, json.encode(doc, { pretty = true }) .. "\n", tonumber("600", 8))
  if not ok then errors.raise("failure", "cannot write " .. path .. ": " .. err) end
  return { path = path, keys = #all, mode = "0600" }, function(d, out)
    out:success(string.format("encrypted backup of %d key(s) written to %s (Argon2id + XChaCha20-Poly1305, mode 0600)",
      d.keys, d.path))
  end
end

function auth.recover(ctx)
  local path = config.expand(ctx.opts.backup_file)
  local doc = json.decode(config.read_input(ctx.opts.backup_file, "--backup-file"))
  if type(doc) ~= "table" or doc.format ~= "aitbc-key-backup" or doc.version ~= 1 or type(doc.kdf) ~= "table" then
    errors.raise("failure", path .. " is not an aitbc key backup (made by 'aitbc auth backup')")
  end
  local intact, why = sealed.check(doc)
  if not intact then errors.raise("failure", path .. " is damaged (" .. why .. ")") end
  local plaintext = sealed.open(doc, password(ctx, false), BACKUP_AD)
  if not plaintext then
    errors.raise("auth", "cannot decrypt " .. path .. ": wrong password, or the file was altered",
      "nothing was changed; try again with the right password", { code = "decrypt_failed" })
  end
  local content = json.decode(plaintext)
  if type(content) ~= "table" or content.format ~= "aitbc-keys" then
    errors.raise("failure", "the backup's content is not readable")
  end
  local recovered = json.array()
  for environment, entries in pairs(type(content.keys) == "table" and content.keys or {}) do
    for key_type, e in pairs(entries) do
      if type(e) == "table" and apikey.check(e.key) then
        keys.put(ctx.config.file, environment, key_type, e)
        local c = ctx.opts.no_verify and { status = "not checked" } or check_on_node(ctx, e.key, environment)
        recovered[#recovered + 1] = { environment = environment, type = key_type, key_id = (apikey.identity(e.key)),
          key = apikey.mask(e.key), node = c.status, role = c.role }
      end
    end
  end
  if type(content.environments) == "table" then
    ctx.config.file.environments = type(ctx.config.file.environments) == "table" and ctx.config.file.environments or {}
    for k, v in pairs(content.environments) do ctx.config.file.environments[k] = v end
  end
  save(ctx)
  table.sort(recovered, function(a, b) return a.environment .. a.type < b.environment .. b.type end)
  return { backup = path, config_file = ctx.config.path, recovered = recovered }, function(d, out)
    out:success(string.format("decrypted %s and restored %d key(s) into %s", d.backup, #d.recovered, d.config_file))
    out:print(out:format_table(d.recovered, { "environment", "type", { "key_id", "key id", keep = true },
      { "node", "re-authentication" },
      { "role", "node role" } }))
  end
end

-- ---- audit ----

-- where refused requests with keys the node does not know are counted
local UNKNOWN_KEY = "(unknown key)"

local function hour_of(t) return tonumber(t:sub(12, 13)) end

local function parse_time(t) return parse_iso(t) or 0 end

function auth.audit(ctx)
  local admin = admin_client(ctx, "reading the audit log")
  local days = ctx.opts.days
  local log = admin:call("GET", "/v1/admin/audit", { query = { days = days, key_id = ctx.opts.key_id },
    expect = { since = "scalar?", items = { "array", { status = "integer", time = "time", route = "string",
      key_id = "string?", remote = "string?" } } } })
  local key_list = admin:call("GET", "/v1/admin/keys", { expect = { items = { "array", { key_id = "string",
    status = "string", role = "string?", name = "string?", created_at = "time", revoked_at = "time?" } } } })
  local known = {}
  for _, k in ipairs(key_list.items) do known[k.key_id] = k end
  local by_key, by_endpoint, by_hour, by_addr = {}, {}, {}, {}
  for h = 0, 23 do by_hour[h] = 0 end
  local failures = {}
  local revoked_use = {}
  local total = 0
  for _, row in ipairs(log.items) do
    -- refused requests come counted: one row per address, minute and outcome
    local n = row.count or 1
    local last_time = row.last_time or row.time
    total = total + n
    local who = row.key_id or (row.outcome and row.outcome ~= "missing_api_key" and UNKNOWN_KEY) or "-"
    local k = by_key[who]
    if not k then
      local info = known[row.key_id] or {}
      k = { key_id = who, name = info.name, role = info.role or row.role, status = info.status or "unknown",
        requests = 0, failures = 0, denied = 0, addresses = {}, endpoints = {}, first = row.time, last = last_time }
      by_key[who] = k
    end
    k.requests = k.requests + n
    if row.status >= 400 then k.failures = k.failures + n end
    if row.status == 401 or row.status == 403 then
      k.denied = k.denied + n
      failures[#failures + 1] = { t = parse_time(row.time), n = n, who = row.remote or "-", time = row.time }
    end
    k.addresses[row.remote or "-"] = true
    k.endpoints[row.route] = (k.endpoints[row.route] or 0) + n
    if row.time < k.first then k.first = row.time end
    if last_time > k.last then k.last = last_time end
    local e = by_endpoint[row.route] or { endpoint = row.route, requests = 0, failures = 0 }
    by_endpoint[row.route] = e
    e.requests = e.requests + n
    if row.status >= 400 then e.failures = e.failures + n end
    by_hour[hour_of(row.time)] = by_hour[hour_of(row.time)] + n
    by_addr[row.remote or "-"] = (by_addr[row.remote or "-"] or 0) + n
    local info = known[row.key_id]
    if info and info.revoked_at and last_time >= info.revoked_at then -- same millisecond counts too
      revoked_use[row.key_id] = (revoked_use[row.key_id] or 0) + n
    end
  end
  -- alerts
  local alerts = json.array()
  table.sort(failures, function(a, b) return a.t < b.t end)
  local reported = {}
  for i, f in ipairs(failures) do
    local n = 0
    for j = i, #failures do
      if failures[j].t - f.t > 300 then break end
      if failures[j].who == f.who then n = n + failures[j].n end
    end
    if n >= 10 and not reported[f.who] then
      reported[f.who] = true
      alerts[#alerts + 1] = { kind = "failure_burst", severity = "high",
        message = string.format("%d refused requests from %s within 5 minutes (from %s)", n, f.who, f.time) }
    end
  end
  for key_id, n in pairs(revoked_use) do
    alerts[#alerts + 1] = { kind = "revoked_key_used", severity = "high",
      message = string.format("revoked key %s was presented %d time(s) after its revocation", key_id, n) }
  end
  local unknown = by_key["-"]
  for key_id, k in pairs(by_key) do
    if key_id ~= "-" and key_id ~= UNKNOWN_KEY and not known[key_id] and k.denied > 0 then
      alerts[#alerts + 1] = { kind = "unknown_key", severity = "medium",
        message = string.format("%d request(s) with an unknown key %s", k.denied, key_id) }
    end
  end
  if by_key[UNKNOWN_KEY] then
    alerts[#alerts + 1] = { kind = "unknown_key", severity = "medium",
      message = string.format("%d request(s) with API keys this node does not know", by_key[UNKNOWN_KEY].denied) }
  end
  if unknown and unknown.requests > 0 then
    alerts[#alerts + 1] = { kind = "missing_key", severity = "low", message = unknown.requests .. " request(s) without any key" }
  end
  -- recommendations
  local now = sys.time()
  local recs = json.array()
  for _, k in ipairs(key_list.items) do
    if k.status == "active" then
      local age = (now - parse_time(k.created_at)) / 86400
      if age > 90 then
        recs[#recs + 1] = string.format("rotate %s (%s, %d days old): aitbc auth rotate --key-type %s --generate-new",
          k.key_id, k.role, math.floor(age), k.role)
      end
      if not by_key[k.key_id] then
        recs[#recs + 1] = string.format("%s (%s%s) was not used in %d days: revoke it if nobody needs it", k.key_id, k.role,
          k.name and (", " .. k.name) or "", days)
      end
    end
  end
  for _, a in ipairs(alerts) do
    if a.kind == "revoked_key_used" or a.kind == "failure_burst" then
      recs[#recs + 1] = "investigate the source of the alert above; rotate any key that may have leaked"
      break
    end
  end
  if #recs == 0 then recs[#recs + 1] = "no action needed: every active key is in use and younger than 90 days" end
  local key_rows, endpoint_rows, addr_rows = json.array(), json.array(), json.array()
  for _, k in pairs(by_key) do
    local addrs, endpoints = json.array(), json.array()
    for a in pairs(k.addresses) do addrs[#addrs + 1] = a end
    table.sort(addrs)
    for route, n in pairs(k.endpoints) do endpoints[#endpoints + 1] = { endpoint = route, requests = n } end
    table.sort(endpoints, function(a, b) return a.requests > b.requests end)
    key_rows[#key_rows + 1] = { key_id = k.key_id, name = k.name, role = k.role, status = k.status, requests = k.requests,
      failures = k.failures, denied = k.denied, first_seen = k.first, last_seen = k.last, addresses = addrs,
      address_count = #addrs, endpoints = endpoints }
  end
  table.sort(key_rows, function(a, b) return a.requests > b.requests end)
  for _, e in pairs(by_endpoint) do endpoint_rows[#endpoint_rows + 1] = e end
  table.sort(endpoint_rows, function(a, b) return a.requests > b.requests end)
  for a, n in pairs(by_addr) do addr_rows[#addr_rows + 1] = { address = a, requests = n, location = "not available" } end
  table.sort(addr_rows, function(a, b) return a.requests > b.requests end)
  local hours = json.array()
  for h = 0, 23 do hours[#hours + 1] = { hour_utc = h, requests = by_hour[h] } end
  return {
    period_days = days, since = log.since, total_requests = total, keys = key_rows, endpoints = endpoint_rows,
    addresses = addr_rows, hourly = hours, alerts = alerts, recommendations = recs,
    geolocation = "not available: the node records client addresses only (no GeoIP database)",
  }, function(d, out)
    out:print(out:style(string.format("API key usage over %s day%s (since %s): %d requests", d.period_days,
      d.period_days == 1 and "" or "s", d.since, d.total_requests), "bold"))
    local rows = {}
    for i, k in ipairs(d.keys) do rows[i] = setmetatable({ seen = ago(k.last_seen) }, { __index = k }) end
    out:print(out:format_table(rows, { { "key_id", "key id", keep = true }, "role", "status", { "requests", "reqs" },
      { "failures", "failed" }, "denied", { "address_count", "addrs" }, { "seen", "last seen" } }))
    if ctx.opts.detailed then
      out:print("")
      out:print(out:style("Endpoints", "bold"))
      out:print(out:format_table(d.endpoints, { "endpoint", "requests", "failures" }))
      out:print("")
      out:print(out:style("Addresses (" .. d.geolocation .. ")", "bold"))
      out:print(out:format_table(d.addresses, { "address", "requests" }))
      out:print("")
      out:print(out:style("Requests by hour (UTC)", "bold"))
      local peak = 1
      for _, h in ipairs(d.hourly) do peak = math.max(peak, h.requests) end
      for _, h in ipairs(d.hourly) do
        if h.requests > 0 then
          local bar = string.rep("█", math.max(1, h.requests * 40 // peak))
          out:print(string.format("  %02d:00  %-40s %d", h.hour_utc, bar, h.requests))
        end
      end
      for _, k in ipairs(d.keys) do
        out:print("")
        out:print(out:style(k.key_id .. " endpoints", "bold"))
        out:print(out:format_table(k.endpoints, { "endpoint", "requests" }))
      end
    end
    out:print("")
    if #d.alerts == 0 then out:print(out:style("alerts: none", "green"))
    else
      out:print(out:style("Alerts", "bold"))
      for _, a in ipairs(d.alerts) do out:print("  " .. out:style("[" .. a.severity .. "]", "red") .. " " .. a.message) end
    end
    out:print(out:style("Recommendations", "bold"))
    for _, r in ipairs(d.recommendations) do out:print("  - " .. r) end
  end
end

return auth
