--- aitbc auth: API keys — import, validate, list, rotate, export, test,
-- revoke, back up, recover, audit.  The keys kept here are aitbc.auth.keys,
-- the node's view of them aitbc.auth.remote; backups aitbc.auth.backup,
-- the usage report aitbc.auth.audit.
local errors = require "aitbc.errors"
local json = require "aitbc.json"

local function iso(t) return os.date("!%Y-%m-%dT%H:%M:%SZ", math.floor(t or require("aitbc.sys").time())) end

local function save(ctx)
  local ok, err = require("aitbc.config").write_file(ctx.config.path, ctx.config.file)
  if not ok then error(err, 0) end
end

--- "42s ago", "5m ago", "3h ago", "12d ago"
local function ago(t)
  local sys = require "aitbc.sys"
  local secs = sys.time() - (require("aitbc.auth.audit").parse_time(t) or sys.time())
  if secs < 60 then return math.floor(secs) .. "s ago" end
  if secs < 3600 then return math.floor(secs / 60) .. "m ago" end
  if secs < 86400 then return math.floor(secs / 3600) .. "h ago" end
  return math.floor(secs / 86400) .. "d ago"
end

-- ---- import-env ----

--- A --config naming a file in a directory that is not there: say so before anything is read.
local function check_config_dir(ctx)
  local sys = require "aitbc.sys"
  local path = ctx.config.path
  local dir = path:match("^(.*)/[^/]*$") or "."
  local st = sys.stat(dir)
  local path_chosen = ctx.globals.config or (sys.getenv("AITBC_CONFIG") or "") ~= ""
  if path_chosen and (not st or st.type ~= "directory") then
    errors.raise("failure", "cannot store keys in " .. path .. ": directory " .. dir .. " does not exist",
      "create it first (mkdir -p " .. dir .. ") or pass another --config path")
  end
end

local function render_import(d, out)
  for _, i in ipairs(d.imported) do
    local article = (i.node_role or ""):match("^[aeiou]") and "an " or "a "
    local node_note = ({ valid = "accepted by the node as " .. article .. tostring(i.node_role) .. " key",
      unreachable = "node not reachable: not verified" })[i.node_status] or ("not verified: " .. tostring(i.node_error))
    out:success(string.format("imported %s key %s (%s) from %s — %s", i.type, i.key_id, i.key, i.variable, node_note))
  end
  for _, f in ipairs(d.failed) do
    io.stderr:write(out:style("✗", "red", out.err_color), " not imported: ", f.reason, "\n")
    if f.fix then io.stderr:write("    fix: ", f.fix, "\n") end
    if f.kept then io.stderr:write("    the stored ", f.type, " key stays ", f.kept, "\n") end
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

--- Why the node's answer about a key (aitbc.auth.remote.check) keeps it
-- out of the config as key_type; nil when it may be stored.
local function keys_var(key_type) return require("aitbc.auth.keys").ROLE_VAR[key_type] end

local function node_refusal(check, key_type, var, key_id, url)
  local remote = require "aitbc.auth.remote"
  if check.status == "valid" then
    if check.role == remote.NODE_ROLE[key_type] then return nil end
    local article = check.role:match("^[aeiou]") and "an " or "a "
    return string.format("%s holds %s%s key, not %s %s key", var, article, check.role,
      key_type:match("^[aeiou]") and "an" or "a", key_type),
      string.format("set it as %s and run 'aitbc auth import-env --key-type %s'", keys_var(check.role), check.role)
  end
  if check.status == "unreachable" or check.status == "error" then return nil end
  return string.format("%s (%s): the node at %s %s", var, key_id, url, ({ unknown = "does not know this key",
      revoked = "says this key was revoked", expired = "says this key expired" })[check.status] or check.status)
      .. (check.error and (" (" .. check.error .. ")") or ""),
    "get a valid " .. key_type .. " key from the node's administrator (aitbc api POST /v1/admin/keys), or check --url"
end

local function import_env(ctx)
  local apikey, keys, remote = require "aitbc.protocol.apikey", require "aitbc.auth.keys", require "aitbc.auth.remote"
  check_config_dir(ctx)
  local environment = ctx.settings.environment
  local types = ctx.opts.key_type and { ctx.opts.key_type } or keys.TYPES
  local candidates, failed, seen = keys.from_env(types)
  if seen == 0 then
    local vars = {}
    for _, t in ipairs(types) do for _, v in ipairs(keys.IMPORT_VARS[t]) do vars[#vars + 1] = v end end
    errors.raise("failure", "no API key to import: " .. table.concat(vars, ", ") .. (#vars > 1 and " are" or " is") .. " not set",
      "export the key first, e.g. export " .. vars[1] .. "=<key of at least 16 characters>", { code = "no_keys" })
  end
  -- each key is checked with the node before it is stored: a key the node
  -- refuses, or one of another role, never replaces the stored one
  local imported, exit = json.array(), #failed > 0 and 1 or 0
  for _, key_type in ipairs(types) do
    for _, c in ipairs(candidates[key_type] or {}) do
      local check = remote.check(ctx, c.key)
      local reason, fix = node_refusal(check, key_type, c.var, (apikey.identity(c.key)), keys.url(ctx))
      if reason then
        failed[#failed + 1] = { type = key_type, variable = c.var, key_id = (apikey.identity(c.key)), reason = reason,
          fix = fix, node_status = check.status, node_role = check.role }
        exit = 4
      else
        keys.put(ctx.config.file, environment, key_type, { key = c.key, source = c.var, imported_at = iso() })
        imported[#imported + 1] = { type = key_type, variable = c.var, key_id = (apikey.identity(c.key)),
          key = apikey.mask(c.key), environment = environment, node_status = check.status, node_role = check.role,
          node_error = check.status ~= "valid" and check.error or nil }
        break -- the most specific variable the node accepts
      end
    end
  end
  if #imported > 0 then save(ctx) end
  for _, f in ipairs(failed) do -- what stays in place of a refused key
    local entry = keys.stored(ctx.config.file, environment)[f.type]
    f.kept = entry and type(entry.key) == "string" and (apikey.identity(entry.key)) or nil
  end
  ctx.exit_code = exit ~= 0 and exit or nil
  return { config_file = ctx.config.path, environment = environment,
    active_environment = ctx.config.file.environment or "default", imported = imported, failed = failed }, render_import
end

-- ---- validate / list / use ----

local WORST = { ok = 0, format = 1, rejected = 4, unreachable = 5 }

--- One stored key checked: its row and verdict (ok, format, rejected, unreachable).
local function validate_one(ctx, e)
  local apikey, remote = require "aitbc.protocol.apikey", require "aitbc.auth.remote"
  local fmt_ok, why = apikey.check(e.key)
  local r = { type = e.type, key_id = e.key_id, key = apikey.mask(e.key), environment = e.environment,
    length = #e.key, format = fmt_ok and "ok" or why }
  if not fmt_ok then return r, "format" end
  local c = remote.check(ctx, e.key)
  r.node, r.role = c.status, c.role
  r.expires_at = c.expires_at or (c.status == "valid" and "never") or nil
  r.type_matches = c.role and (c.role == remote.NODE_ROLE[e.type]) or nil
  r.error = c.status ~= "valid" and c.error or nil
  if c.status == "unreachable" then return r, "unreachable" end
  return r, c.status == "valid" and "ok" or "rejected"
end

local function validate(ctx)
  local keys = require "aitbc.auth.keys"
  local entries = keys.of_environment(ctx.config.file, ctx.settings.environment)
  if #entries == 0 then
    errors.raise("not_found", "no API keys stored for environment '" .. ctx.settings.environment .. "'",
      "import them with 'aitbc auth import-env'")
  end
  local results, worst = json.array(), "ok"
  for _, e in ipairs(entries) do
    if not ctx.opts.key_type or ctx.opts.key_type == e.type then
      local r, verdict = validate_one(ctx, e)
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

local function summarize_permissions(perms)
  local areas, seen = {}, {}
  for _, p in ipairs(perms or {}) do
    local area = p:match("^%u+ /v1/(%w+)")
    area = ({ jobs = "jobs", miners = "mining", admin = "admin", auth = "auth" })[area] or area
    if area and not seen[area] then seen[area] = true areas[#areas + 1] = area end
  end
  return table.concat(areas, ", ")
end

local function render_list(d, out)
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

local function list(ctx)
  local apikey, keys, remote = require "aitbc.protocol.apikey", require "aitbc.auth.keys", require "aitbc.auth.remote"
  local items = json.array()
  local only = ctx.opts.environment_only and ctx.settings.environment or nil
  for _, e in ipairs(keys.of_environment(ctx.config.file, only)) do
    local c = remote.check(ctx, e.key, e.environment)
    items[#items + 1] = {
      key_id = e.key_id, key = apikey.mask(e.key), type = e.type, environment = e.environment,
      active = e.environment == ctx.settings.environment,
      status = ({ valid = "active", unknown = "invalid" })[c.status] or c.status,
      last_used_at = c.last_used_at, permissions = c.permissions and json.array(c.permissions) or json.array(),
      permission_summary = c.permissions and summarize_permissions(c.permissions) or "-",
      source = e.source,
    }
  end
  return { active_environment = ctx.settings.environment, keys = items }, render_list
end

local function use(ctx)
  local config = require "aitbc.config"
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
  local types = {}
  for t in pairs(require("aitbc.auth.keys").stored(ctx.config.file, environment)) do types[#types + 1] = t end
  table.sort(types)
  return { environment = environment, key_types = json.array(types) }, function(d, out)
    out:success("active environment: " .. d.environment)
    if #d.key_types == 0 then out:warn("no keys stored for " .. d.environment .. " yet (aitbc auth import-env)")
    else out:print("keys stored there: " .. table.concat(d.key_types, ", ")) end
  end
end

-- ---- rotate / revoke ----

local function render_rotate(d, out)
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

local function rotate(ctx)
  local apikey, keys, remote = require "aitbc.protocol.apikey", require "aitbc.auth.keys", require "aitbc.auth.remote"
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
  local created, revoked, revoke_error = remote.rotate(ctx, key_type, old, ctx.opts.new_key)
  local environment = ctx.settings.environment
  keys.put(ctx.config.file, environment, key_type, { key = created.key, source = "aitbc auth rotate", imported_at = iso() })
  if ctx.config.file.api_key == old then ctx.config.file.api_key = created.key end
  save(ctx)
  local stale_vars = json.array()
  for _, var in ipairs(keys.IMPORT_VARS[key_type]) do
    if require("aitbc.sys").getenv(var) == old then stale_vars[#stale_vars + 1] = var end
  end
  return {
    key_type = key_type, environment = environment, old_key_id = (apikey.identity(old)), old_key_source = old_source,
    old_key_revoked = revoked, revoke_error = revoke_error,
    new_key_id = created.key_id, new_key = ctx.opts.reveal and created.key or apikey.mask(created.key),
    config_file = ctx.config.path, stale_variables = stale_vars, export_variable = keys.ROLE_VAR[key_type],
  }, render_rotate
end

local function render_revoke(d, out)
  if d.revoked_on_node then
    out:success("revoked " .. d.key_id .. " on the node at " .. tostring(d.revoked_at) .. "; it is refused from now on")
  else out:warn(d.key_id .. " on the node: " .. tostring(d.node_note)) end
  if #d.removed_locally > 0 then
    out:success("removed from " .. d.config_file .. " (" .. table.concat(d.removed_locally, ", ") .. ")")
  else out:print("it was not stored locally") end
  out:print(d.audit)
end

local function revoke(ctx)
  local keys, remote = require "aitbc.auth.keys", require "aitbc.auth.remote"
  local key_id = ctx.opts.key_id
  if not key_id:match("^key_%x+$") then
    errors.raise("usage", "--key-id must be a key id such as key_0ed546631f4eb5de (see 'aitbc auth list')")
  end
  if not ctx.opts.confirm and not ctx.confirm("Revoke API key " .. key_id .. " on the node and remove it locally?") then
    errors.raise("failure", "not revoked", nil, { code = "canceled" })
  end
  local admin = remote.admin(ctx, "revoking a key")
  local revoked, err = admin:request("DELETE", require("aitbc.api").path("/v1/admin/keys/{key_id}", { key_id = key_id }),
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
    audit = "recorded in the node's audit log (DELETE /v1/admin/keys/" .. key_id .. ")" }, render_revoke
end

-- ---- export ----

local function render_export(d, out)
  out:success(string.format("exported %d key(s) to %s (mode %s)", #d.keys, d.path, d.mode))
  out:print("sha256 " .. d.sha256 .. "  (verify: cd " .. (d.path:match("^(.*)/") or ".") .. " && sha256sum -c "
    .. d.checksum_file:match("[^/]*$") .. ")")
  out:warn("this file holds live credentials: store it encrypted or delete it after use (aitbc auth backup encrypts)")
end

local function export(ctx)
  local crypto, keys, sys = require "aitbc.crypto", require "aitbc.auth.keys", require "aitbc.sys"
  local entries = {}
  for _, e in ipairs(keys.of_environment(ctx.config.file, ctx.settings.environment)) do
    if not ctx.opts.key_type or e.type == ctx.opts.key_type then entries[#entries + 1] = e end
  end
  if #entries == 0 then
    errors.raise("not_found", "no API keys to export for environment '" .. ctx.settings.environment .. "'",
      "import them with 'aitbc auth import-env'")
  end
  local text = keys.export_text(ctx.opts.format, entries, ctx.settings.environment, iso())
  local sha = crypto.hex(crypto.sha256(text))
  local exported = json.array()
  for _, e in ipairs(entries) do
    exported[#exported + 1] = { type = e.type, variable = keys.ROLE_VAR[e.type], key_id = e.key_id }
  end
  local path = ctx.opts.output and require("aitbc.config").expand(ctx.opts.output)
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
    render_export
end

-- ---- test --permissions ----

--- The keys to probe: --api-key, then each type's key, each key once.
local function keys_to_test(ctx)
  local keys = require "aitbc.auth.keys"
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
  return candidates
end

local function test(ctx)
  local apikey, keys, remote = require "aitbc.protocol.apikey", require "aitbc.auth.keys", require "aitbc.auth.remote"
  local reports = json.array()
  for _, c in ipairs(keys_to_test(ctx)) do
    local probes, limits = remote.probe(ctx, c.key)
    local access = remote.access(probes)
    local who = remote.check(ctx, c.key)
    reports[#reports + 1] = { key = apikey.mask(c.key), key_id = (apikey.identity(c.key)), label = c.label,
      role = who.role, status = who.status, client = access.client, miner = access.miner, admin = access.admin,
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

--- The backup password: --password-file > AITBC_BACKUP_PASSWORD > a prompt.
local function password(ctx, new)
  return require("aitbc.secrets.password").get("backup", ctx.opts.password_file, new, ctx.out.format == "table")
end

local function backup(ctx)
  local keys = require "aitbc.auth.keys"
  local all = keys.all(ctx.config.file)
  if #all == 0 then errors.raise("not_found", "no API keys to back up", "import them with 'aitbc auth import-env'") end
  local doc = require("aitbc.auth.backup").seal(ctx.config.file, password(ctx, true), iso())
  local path = require("aitbc.config").expand(ctx.opts.output)
  local ok, err = require("aitbc.sys").write_file(path, json.encode(doc, { pretty = true }) .. "\n", tonumber("600", 8))
  if not ok then errors.raise("failure", "cannot write " .. path .. ": " .. err) end
  return { path = path, keys = #all, mode = "0600" }, function(d, out)
    out:success(string.format("encrypted backup of %d key(s) written to %s (Argon2id + XChaCha20-Poly1305, mode 0600)",
      d.keys, d.path))
  end
end

local function recover(ctx)
  local apikey, remote, backups = require "aitbc.protocol.apikey", require "aitbc.auth.remote", require "aitbc.auth.backup"
  local config = require "aitbc.config"
  local path = config.expand(ctx.opts.backup_file)
  local doc = json.decode(config.read_input(ctx.opts.backup_file, "--backup-file"))
  backups.check(doc, path)
  local content = backups.open(doc, password(ctx, false), path)
  local recovered = json.array()
  local restored = backups.restore(ctx.config.file, content)
  if ctx.config.sources.url == "default" and ctx.config.file.url then ctx.settings.url = ctx.config.file.url end
  for _, r in ipairs(restored) do
    local c = ctx.opts.no_verify and { status = "not checked" } or remote.check(ctx, r.key, r.environment)
    recovered[#recovered + 1] = { environment = r.environment, type = r.type, key_id = (apikey.identity(r.key)),
      key = apikey.mask(r.key), node = c.status, role = c.role }
  end
  save(ctx)
  table.sort(recovered, function(a, b) return a.environment .. a.type < b.environment .. b.type end)
  return { backup = path, config_file = ctx.config.path, recovered = recovered }, function(d, out)
    out:success(string.format("decrypted %s and restored %d key(s) into %s", d.backup, #d.recovered, d.config_file))
    out:print(out:format_table(d.recovered, { "environment", "type", { "key_id", "key id", keep = true },
      { "node", "re-authentication" }, { "role", "node role" } }))
  end
end

-- ---- audit ----

local function render_hours(hourly, out)
  local peak = 1
  for _, h in ipairs(hourly) do peak = math.max(peak, h.requests) end
  for _, h in ipairs(hourly) do
    if h.requests > 0 then
      local bar = string.rep("█", math.max(1, h.requests * 40 // peak))
      out:print(string.format("  %02d:00  %-40s %d", h.hour_utc, bar, h.requests))
    end
  end
end

local function render_audit_details(d, out)
  out:print("")
  out:print(out:style("Endpoints", "bold"))
  out:print(out:format_table(d.endpoints, { "endpoint", "requests", "failures" }))
  out:print("")
  out:print(out:style("Addresses (" .. d.geolocation .. ")", "bold"))
  out:print(out:format_table(d.addresses, { "address", "requests" }))
  out:print("")
  out:print(out:style("Requests by hour (UTC)", "bold"))
  render_hours(d.hourly, out)
  for _, k in ipairs(d.keys) do
    out:print("")
    out:print(out:style(k.key_id .. " endpoints", "bold"))
    out:print(out:format_table(k.endpoints, { "endpoint", "requests" }))
  end
end

local function audit(ctx)
  local admin = require("aitbc.auth.remote").admin(ctx, "reading the audit log")
  local report = require "aitbc.auth.audit"
  local log, key_list = report.fetch(admin, ctx.opts.days, ctx.opts.key_id)
  return report.report(log, key_list, ctx.opts.days, require("aitbc.sys").time()), function(d, out)
    out:print(out:style(string.format("API key usage over %s day%s (since %s): %d requests", d.period_days,
      d.period_days == 1 and "" or "s", d.since, d.total_requests), "bold"))
    local rows = {}
    for i, k in ipairs(d.keys) do rows[i] = setmetatable({ seen = ago(k.last_seen) }, { __index = k }) end
    out:print(out:format_table(rows, { { "key_id", "key id", keep = true }, "role", "status", { "requests", "reqs" },
      { "failures", "failed" }, "denied", { "address_count", "addrs" }, { "seen", "last seen" } }))
    if ctx.opts.detailed then render_audit_details(d, out) end
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

local key_type = { "--key-type", choices = { "admin", "client", "miner", "coordinator" }, help = "only keys of this type" }

return {
  name = "auth",
  category = "Node",
  summary = "Manage API keys: import, validate, rotate, export, revoke, back up, audit",
  description = "Keys are stored per environment in the config file (mode 0600). A command uses the key of the "
    .. "role it needs: --api-key > AITBC_<ROLE>_KEY > AITBC_API_KEY > the active environment's stored key > api_key.",
  commands = {
    {
      name = "import-env",
      creates_config = true,
      summary = "Import keys from AITBC_API_KEY, AITBC_CLIENT_KEY, AITBC_ADMIN_KEY, AITBC_COORDINATOR_KEY, AITBC_MINER_KEY",
      description = "Each key must have at least 16 characters (letters, digits, '_', '-', '.') and is checked "
        .. "with the node before it is stored: a key the node refuses (unknown, revoked, expired) or one of another "
        .. "role (a miner key in AITBC_API_KEY) is not imported and the key stored before stays. Valid keys are "
        .. "imported even when others fail; a malformed key exits 1, a refused one 4. When the node cannot be "
        .. "reached the keys are stored unverified, with a warning. Keys go to the environment chosen with "
        .. "--environment (default: the active one) in the config file chosen with --config.",
      options = { key_type },
      examples = { "aitbc auth import-env", "aitbc auth import-env --key-type admin",
                   "aitbc auth import-env --config ~/.aitbc/custom_config.json",
                   "aitbc auth import-env --environment production" },
      run = import_env,
    },
    {
      name = "validate",
      summary = "Check each stored key's format and whether the node accepts it (type, expiry)",
      options = { key_type },
      examples = { "aitbc auth validate" },
      run = validate,
    },
    {
      name = "list",
      summary = "Stored keys (masked) with type, environment, status on the node, last use and permissions",
      list = "keys", id_field = "key_id", fields = { "key_id", "key", "type", "environment", "active", "status",
        "last_used_at", "permissions", "permission_summary", "source" },
      options = { { "--environment-only", type = "boolean", help = "only the active environment's keys" } },
      examples = { "aitbc auth list", "aitbc auth list --output json" },
      run = list,
    },
    {
      name = "use",
      creates_config = true,
      summary = "Switch the active environment (and optionally set its node URL)",
      args = { { "environment", help = "development, staging, production, ..." } },
      options = { { "--url", metavar = "URL", help = "node URL for this environment" } },
      examples = { "aitbc auth use production", "aitbc auth use staging --url https://staging.example:8000" },
      run = use,
    },
    {
      name = "rotate",
      summary = "Create a new key on the node, revoke the old one, update the local configuration",
      options = {
        { "--key-type", choices = { "admin", "client", "miner", "coordinator" }, default = "admin",
          help = "which key to rotate" },
        { "--generate-new", type = "boolean", help = "let the node generate the new key" },
        { "--new-key", metavar = "KEY", help = "register this key instead of generating one" },
        { "--reveal", type = "boolean", help = "print the new key unmasked" },
      },
      examples = { "aitbc auth rotate --key-type admin --generate-new" },
      run = rotate,
    },
    {
      name = "export",
      summary = "Write stored keys as environment assignments (mode 0600) with a SHA-256 checksum",
      options = {
        { "--format", choices = { "env", "dotenv", "json" }, default = "env",
          help = "env: export VAR=..., dotenv: VAR=..., json: an object" },
        { "--output", metavar = "FILE", help = "file to write (default: stdout); FILE.sha256 gets the checksum" },
        key_type,
      },
      examples = { "aitbc auth export --format env --output ~/aitbc_keys.env",
                   'eval "$(aitbc auth export --format env --key-type admin)"' },
      run = export,
    },
    {
      name = "test",
      summary = "Probe what each configured key may do on the node (client, miner, admin; read/write)",
      options = { { "--permissions", type = "boolean", help = "show every endpoint probed" } },
      examples = { "aitbc auth test --permissions" },
      run = test,
    },
    {
      name = "revoke",
      summary = "Revoke a key on the node and remove it from the local configuration",
      options = {
        { "--key-id", metavar = "ID", required = true, help = "the key's id (key_..., see 'aitbc auth list')",
          complete = "key" },
        { "--confirm", type = "boolean", help = "do not ask for confirmation" },
      },
      examples = { "aitbc auth revoke --key-id key_0ed546631f4eb5de --confirm" },
      run = revoke,
    },
    {
      name = "backup",
      summary = "Write an encrypted backup of the stored keys (Argon2id + XChaCha20-Poly1305)",
      description = "The password comes from --password-file, else AITBC_BACKUP_PASSWORD, else a hidden prompt.",
      options = {
        { "--output", metavar = "FILE", required = true, help = "backup file to write (mode 0600)" },
        { "--password-file", metavar = "FILE", help = "read the password from this file" },
      },
      examples = { "aitbc auth backup --output ~/aitbc_backup.enc" },
      run = backup,
    },
    {
      name = "recover",
      creates_config = true,
      summary = "Restore keys from an encrypted backup and re-check them against the node",
      options = {
        { "--backup-file", metavar = "FILE", required = true, help = "a file made by 'aitbc auth backup'" },
        { "--password-file", metavar = "FILE", help = "read the password from this file" },
        { "--no-verify", type = "boolean", help = "do not re-authenticate the keys against the node" },
      },
      examples = { "aitbc auth recover --backup-file ~/aitbc_backup.enc" },
      run = recover,
    },
    {
      name = "audit",
      summary = "Usage report from the node's audit log: by key, endpoint, hour and address, with alerts",
      options = {
        { "--days", type = "number", default = 30, min = 0.01, max = 3650, metavar = "N", help = "period to cover" },
        { "--detailed", type = "boolean", help = "add endpoints, addresses, hourly pattern and per-key breakdown" },
        { "--key-id", metavar = "ID", help = "only this key" },
      },
      examples = { "aitbc auth audit --days 30 --detailed" },
      run = audit,
    },
  },
}
