--- Agents on the node (DESIGN.md §8): versioned definitions owned by the API
-- key that created them; executing one is a job of type agent (or
-- multimodal, with images) that a miner runs next to its Ollama.
local definition = require "aitbc.agents.definition"
local images = require "aitbc.agents.images"
local jobs = require "aitbc.node.jobs"
local json = require "aitbc.json"
local util = require "aitbc.node.util"

local fail, invalid = util.fail, util.invalid

local M = { MAX_INPUT = 64 * 1024, MAX_IMAGES = 4 }

local V = { invalid = invalid }

--- Models that no online miner has: the agent is stored, with a warning.
local function model_warnings(ctx, def)
  local online, any = {}, false
  for _, m in ipairs(ctx.store:miners_list()) do
    if m.status == "ONLINE" and m.last_seen >= ctx.now - ctx.config.heartbeat_timeout then
      local caps = json.decode(m.capabilities) or {}
      if #(caps.models or {}) == 0 then any = true end
      for _, name in ipairs(caps.models or {}) do online[util.model_name(name)] = true end
    end
  end
  local warnings = json.array()
  for role, name in pairs(def.models) do
    if not any and not online[util.model_name(name)] then
      warnings[#warnings + 1] = string.format("no online miner has the %s model %s yet: its jobs wait in the queue "
        .. "until one does", role, name)
    end
  end
  return warnings
end

local function view(row, def, extra)
  local out = { agent_id = row.agent_id, name = row.name, type = row.type, version = row.defined_version or row.version,
    current_version = row.version, created_at = util.iso(row.created_at), updated_at = util.iso(row.updated_at),
    definition = def or json.decode(row.definition) }
  for k, v in pairs(extra or {}) do out[k] = v end
  return out
end

--- The caller's agent (404 for anyone else's: its existence is not told).
local function own(ctx, agent_id, version)
  local row = ctx.store:agent_get(agent_id, version)
  if not row or (row.owner_key_id ~= ctx.key.key_id and ctx.key.role ~= "admin") then
    if version and ctx.store:agent_get(agent_id) then
      fail(404, "version_not_found", "agent " .. agent_id .. " has no version " .. version)
    end
    fail(404, "agent_not_found", "agent " .. agent_id .. " not found")
  end
  return row
end
M.own = own

--- A trial's changes to the definition ({parameters, model, system_prompt},
-- what `optimize self-opt` tries), checked as the definition they make.
local function with_overrides(def, overrides)
  if overrides == nil then return def end
  if type(overrides) ~= "table" then invalid("overrides", "must be an object {parameters, model, system_prompt}") end
  local merged = json.decode(json.encode(def))
  for k, v in pairs(overrides) do
    if k == "parameters" or k == "system_prompt" then
      merged[k] = v
    elseif k == "model" then
      merged.models.text = v
    else
      invalid("overrides." .. tostring(k), "is not something a trial may change (parameters, model, system_prompt)")
    end
  end
  return definition.check(merged, { invalid = function(field, message) invalid("overrides." .. field, message) end })
end

function M.create(ctx)
  local def = definition.check(ctx:body_object(), V)
  local agent_id = "agent_" .. util.new_id(8)
  ctx.store:agent_insert({ agent_id = agent_id, owner_key_id = ctx.key.key_id, name = def.name, type = def.type },
    json.encode(def), ctx.now)
  ctx.log:info("agent created", { agent_id = agent_id, type = def.type, request_id = ctx.request_id })
  return 201, view(ctx.store:agent_get(agent_id), def,
    { status = "ready", warnings = model_warnings(ctx, def) })
end

function M.list(ctx)
  local limit = util.query_integer(ctx.query, "limit", 1, 500, 50)
  local offset = util.query_integer(ctx.query, "offset", 0, 1000000000, 0)
  local rows, total = ctx.store:agents_of(ctx.key.key_id, limit, offset)
  local items = json.array()
  for i, r in ipairs(rows) do
    local def = json.decode(r.definition)
    items[i] = { agent_id = r.agent_id, name = r.name, type = r.type, version = r.version, model = def.models.text,
      tools = json.array(def.tools), created_at = util.iso(r.created_at), updated_at = util.iso(r.updated_at) }
  end
  return 200, { items = items, total = total, limit = limit, offset = offset }
end

function M.show(ctx, agent_id)
  local version = util.query_integer(ctx.query, "version", 1, 1 << 40)
  return 200, view(own(ctx, agent_id, version))
end

--- PATCH: the fields given replace the current ones; a new version.
function M.update(ctx, agent_id)
  local row = own(ctx, agent_id)
  local changes = ctx:body_object()
  local merged = json.decode(row.definition)
  local models = merged.models
  for k, v in pairs(changes) do
    if k ~= "note" and k ~= "expected_version" then merged[k] = v ~= json.null and v or nil end
  end
  -- models: the roles given change, the others stay
  local given = type(changes.models) == "table" and changes.models or {}
  merged.models = { text = changes.model or given.text or models.text,
    vision = given.vision ~= json.null and (given.vision or models.vision) or nil }
  merged.model = nil
  local def = definition.check(merged, V)
  local note = util.optional_string(changes, "note", 200) or "updated"
  local version = ctx.store:agent_new_version(agent_id, json.encode(def), def.name, note, ctx.now,
    util.optional_integer(changes, "expected_version", 1, 1 << 40))
  if not version then
    fail(409, "version_conflict", "agent " .. agent_id .. " changed meanwhile; read it again and retry")
  end
  return 200, view(ctx.store:agent_get(agent_id), def, { warnings = model_warnings(ctx, def) })
end

function M.versions(ctx, agent_id)
  local row = own(ctx, agent_id)
  local items = json.array()
  for i, v in ipairs(ctx.store:agent_versions(agent_id)) do
    items[i] = { version = v.version, created_at = util.iso(v.created_at), note = v.note, size = v.size,
      current = v.version == row.version }
  end
  return 200, { agent_id = agent_id, current_version = row.version, items = items }
end

--- POST {version}: that version's definition becomes a new, current version.
function M.rollback(ctx, agent_id)
  own(ctx, agent_id)
  local body = ctx:body_object()
  local version = util.optional_integer(body, "version", 1, 1 << 40)
  if not version then invalid("version", "is required: the version to go back to (see agent versions)") end
  local old = own(ctx, agent_id, version)
  local v = ctx.store:agent_new_version(agent_id, old.definition, nil, "rollback to version " .. version, ctx.now)
  if not v then fail(404, "agent_not_found", "agent " .. agent_id .. " not found") end
  return 200, view(ctx.store:agent_get(agent_id), nil, { rolled_back_to = version })
end

function M.delete(ctx, agent_id)
  own(ctx, agent_id)
  ctx.store:agent_delete(agent_id)
  return 200, { agent_id = agent_id, deleted = true }
end

--- POST /v1/agents/{id}/execute {input, data?, images?, version?,
-- ttl_seconds?, overrides?, trial?}: a job of type agent (multimodal with images) carrying the
-- definition as it is now, so later changes do not touch it.
function M.execute(ctx, agent_id)
  local body = ctx:body_object()
  local row = own(ctx, agent_id, util.optional_integer(body, "version", 1, 1 << 40))
  local def = with_overrides(json.decode(row.definition), body.overrides)
  local input = util.optional_string(body, "input", M.MAX_INPUT)
  local imgs = body.images ~= nil and images.check_list(body.images, "images", M.MAX_IMAGES, V) or nil
  if not input and not imgs then invalid("input", "is required: what the agent should work on") end
  local data = definition.check_data(body.data, "data", V)
  if imgs and not def.models.vision then
    invalid("images", "agent " .. agent_id .. " has no vision model: set models.vision (e.g. llava) with "
      .. "aitbc agent update " .. agent_id .. " --vision-model llava")
  end
  local job_type = imgs and "multimodal" or "agent"
  -- a message to the agent (aitbc agent-comm listen): its on_message handler answers
  local message = util.optional_object(body, "message")
  if message and not def.on_message then
    invalid("message", "agent " .. agent_id .. " has no on_message handler in its definition")
  end
  local needs = definition.needs(def, imgs ~= nil, message ~= nil)
  local payload = { agent = { agent_id = agent_id, version = row.defined_version, name = row.name, definition = def },
    input = input, data = data, images = imgs, on_message = message,
    trial = body.overrides ~= nil or body.trial == true or nil }
  local job = jobs.enqueue(ctx, { job_type = job_type, payload = payload, model = needs.models[1], needs = needs,
    ttl = util.optional_integer(body, "ttl_seconds", 1, 86400, 900),
    run_timeout = def.limits.seconds + 60 })
  job.agent_id, job.agent_version = agent_id, row.defined_version
  return 201, job
end

return M
