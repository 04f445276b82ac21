--- POST /v1/admin/update: an update of the node from its release channel
-- (aitbc.ops.release), pinned in DATA_DIR/node.json ("release": {"channel",
-- "public_key"}).  The plan (dry run): current and target version, the
-- checks (signature, expiry, the manifest's sequence, platform, schema,
-- configuration, never below the newest version trusted), the downtime
-- measured by earlier restarts, the backup and the rollback.  Otherwise the
-- binary is downloaded beside the data (DATA_DIR/releases/), its size and
-- SHA-256 checked against the signed manifest, and an "update" operation
-- goes to the supervisor, which swaps the process and checks its health
-- (aitbc.node.supervisor: a new process that fails is stopped, the old one
-- serves on).  Anything refused leaves everything as it was.
local backup = require "aitbc.node.backup"
local json = require "aitbc.json"
local operations = require "aitbc.node.operations"
local release = require "aitbc.ops.release"
local supervisor = require "aitbc.node.supervisor"
local sys = require "aitbc.sys"
local util = require "aitbc.node.util"

local fail, invalid = util.fail, util.invalid

local M = {}

-- one binary holds every service: updating one updates the node
M.COMPONENTS = { node = true, all = true, coordinator = true, ["blockchain-node"] = true, marketplace = true,
  monitoring = true }
M.CONFIG_FORMAT = 1 -- node.json's format; a release records the one it reads

local function median(list)
  if #list == 0 then return nil end
  local s = {}
  for i, v in ipairs(list) do s[i] = v end
  table.sort(s)
  return s[(#s + 1) // 2]
end

--- The checks of a target release: {name, status ("ok"|"failed"), detail}.
local function checks_for(signed, target, state, allow_downgrade)
  local out = json.array()
  local function add(name, ok, detail) out[#out + 1] = { name = name, status = ok and "ok" or "failed", detail = detail } end
  add("signature", true, "the manifest verifies with the pinned release key; it expires "
    .. os.date("!%Y-%m-%dT%H:%M:%SZ", math.floor(signed.expires_at)))
  local seen = tonumber(state.channel_sequence) or 0
  add("sequence", (signed.sequence or 0) >= seen, string.format("manifest sequence %s (newest seen %d)%s",
    tostring(signed.sequence), seen, (signed.sequence or 0) < seen and ": an older manifest (a rollback or freeze "
      .. "attack, or a stale mirror)" or ""))
  add("platform", target.platform == release.PLATFORM, "built for " .. tostring(target.platform) .. ", this node runs "
    .. release.PLATFORM)
  local db_schema = require("aitbc.node.store").SCHEMA_VERSION
  local schema = tonumber(target.schema_version)
  add("schema", schema ~= nil and schema >= db_schema, schema and (schema >= db_schema
    and string.format("the release reads database schema %d (this database: %d%s)", schema, db_schema,
      schema > db_schema and "; it migrates it forward at its start" or "")
    or string.format("the release knows database schema %d, this database has %d: it could not open it", schema,
      db_schema)) or "the manifest does not say which database schema the release reads")
  local cfg = tonumber(target.config_format) or 1
  add("configuration", cfg == M.CONFIG_FORMAT, string.format("node.json format %d (this node's: %d)", cfg,
    M.CONFIG_FORMAT))
  local trusted = state.trusted_version
  local below = trusted and release.compare(target.version, trusted) < 0
  add("no rollback below trusted", not below or allow_downgrade, trusted and string.format("newest version trusted "
    .. "here: %s%s", trusted, below and (allow_downgrade and " (a downgrade, allowed by allow_downgrade)"
      or "; refusing to go below it (allow_downgrade to insist)") or "") or "no update installed yet")
  return out
end

--- The plan of an update to `version` ("latest"): everything the dry run shows.
local function plan(ctx, body)
  local cfg = ctx.config.release
  if type(cfg) ~= "table" or type(cfg.channel) ~= "string" or type(cfg.public_key) ~= "string" then
    fail(409, "no_release_channel", "this node pins no release channel: put \"release\": {\"channel\": DIR_OR_URL, "
      .. "\"public_key\": KEY} in " .. ctx.config.data_dir .. "/node.json (aitbc release keygen prints the key), then "
      .. "aitbc admin restart --service all")
  end
  local doc, why = release.fetch_manifest(cfg.channel)
  if not doc then fail(502, "channel_unavailable", "release channel " .. cfg.channel .. ": " .. why) end
  local signed
  signed, why = release.verify(doc, cfg.public_key, ctx.now)
  if not signed then fail(422, "manifest_rejected", "release channel " .. cfg.channel .. ": " .. why) end
  local target
  target, why = release.pick(signed, body.version)
  if not target then fail(404, "version_not_found", why, "version") end
  local state = supervisor.read_release(ctx.config.data_dir)
  local current = sys.version
  local cmp = release.compare(target.version, current)
  local checks = checks_for(signed, target, state, body.allow_downgrade == true)
  local files = backup.plan(ctx.config.data_dir, "full")
  local measured = operations.measured_restarts(ctx.config.data_dir)
  local med = median(measured)
  return {
    component = body.component, requested = body.version, current_version = current,
    action = cmp > 0 and "upgrade" or cmp < 0 and "downgrade" or "reinstall",
    target = { version = target.version, size = target.size, sha256 = target.sha256, created_at = target.created_at,
      notes = target.notes, schema_version = target.schema_version },
    channel = { location = cfg.channel, name = signed.channel, sequence = signed.sequence,
      expires_at = util.iso(signed.expires_at), versions = #signed.releases },
    checks = checks, compatible = (function()
      for _, c in ipairs(checks) do if c.status ~= "ok" then return false end end
      return true
    end)(),
    downtime = { refused_connections = 0, seconds = med, measured_restarts = #measured,
      detail = med and string.format("a new process serves beside the old one; requests wait at most about %.2f s "
        .. "(median of %d measured whole-node restart(s)); no connection is refused", med, #measured)
        or "no whole-node restart measured yet; a new process serves beside the old one, no connection is refused" },
    backup = { type = "full", estimate_bytes = backup.estimate(ctx.store, files),
      files = (function()
        local names = json.array()
        for _, f in ipairs(files) do names[#names + 1] = f.name end
        return names
      end)() },
    rollback = json.array {
      "the new process is health-checked on its own listener before it serves; if it fails, it is stopped and "
        .. "version " .. current .. " serves on (nothing was swapped)",
      "after the swap the node's health is checked again; if it fails, the previous binary ("
        .. tostring(state.current and state.current.binary or (sys.exe_path() or ""):gsub(" %(deleted%)$", ""))
        .. ") is started again",
      "the database: restore the backup made before the update (aitbc admin restore --from DIR --data-dir "
        .. ctx.config.data_dir .. ")",
    },
    _target = target, _signed = signed, _state = state,
  }
end

local function public(p)
  p._target, p._signed, p._state = nil, nil, nil
  return p
end

function M.update(ctx)
  local body = ctx:body_object()
  body.component = util.optional_string(body, "component", 32) or "node"
  if not M.COMPONENTS[body.component] then
    invalid("component", "must be node (or one of its services: coordinator, blockchain-node, marketplace, "
      .. "monitoring; one binary holds them all)")
  end
  body.version = util.optional_string(body, "version", 64) or "latest"
  if body.version ~= "latest" and not release.valid_version(body.version) then
    invalid("version", "must be latest or a version like 1.2.3")
  end
  local p = plan(ctx, body)
  if body.dry_run == true then return 200, public(p) end
  local failed = {}
  for _, c in ipairs(p.checks) do if c.status ~= "ok" then failed[#failed + 1] = c.name .. ": " .. c.detail end end
  if #failed > 0 then
    fail(409, "update_refused", "nothing was changed: " .. table.concat(failed, "; "))
  end
  if p.action == "reinstall" and body.force ~= true then
    fail(409, "already_current", "this node runs version " .. p.current_version .. " already (force to reinstall it)",
      "version")
  end
  if not ctx.config.supervised then
    fail(409, "no_supervisor", "this node runs without its supervisor: nothing can replace its process "
      .. "(start it with aitbc serve)")
  end
  for _, op in ipairs(operations.list(ctx.config.data_dir, 50)) do
    if (op.state == "requested" or op.state == "running") and ctx.now - (op.started or 0) < 3600
      and (op.kind == "update" or (op.kind == "restart" and op.params and op.params.service == "all")) then
      fail(409, "operation_running", "operation " .. op.id .. " (" .. op.kind .. ") is still running; wait for it "
        .. "(aitbc admin operations " .. op.id .. ")")
    end
  end
  local dir = ctx.config.data_dir .. "/releases"
  assert(sys.mkdir(dir, tonumber("700", 8)))
  local path = dir .. "/aitbc-" .. p.target.version
  local ok, why = release.fetch_binary(ctx.config.release.channel, p._target, path)
  if not ok then fail(422, "binary_rejected", "nothing was changed: " .. why) end
  -- the newest manifest seen: an older one is refused from now on
  local state = p._state
  state.channel_sequence = math.max(tonumber(state.channel_sequence) or 0, p._signed.sequence or 0)
  supervisor.write_release(ctx.config.data_dir, state)
  local op = operations.create(ctx.config.data_dir, "update", { service = "all", component = body.component,
    version = p.target.version, from = p.current_version, binary = path, sha256 = p.target.sha256,
    backup = util.optional_string(body, "backup", 4096), timeout = 300, by = ctx.key.key_id }, ctx.now)
  operations.step(ctx.config.data_dir, op, string.format("downloaded %s (%d bytes) and verified it against the signed "
    .. "manifest (size, SHA-256)", p.target.version, p.target.size), { phase = "verified" })
  ctx.log:warn("update requested", { operation = op.id, from = p.current_version, to = p.target.version,
    by = ctx.key.key_id })
  operations.submit(ctx.config, op)
  return 202, op
end

M.ROUTES = { { "POST", "/v1/admin/update", M.update } }

return M
