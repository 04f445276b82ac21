--- An agent's definition: what `agent create --config FILE` reads and the
-- node stores, versioned.  check(def, v) validates and normalises it,
-- raising through v.invalid(field, message) with the field named and the
-- fix; the CLI checks the same before sending.
--
--   {
--     "name": "data_analyzer",             -- letters, digits, _ - . and spaces, up to 64
--     "type": "analysis",                  -- analysis | chat | summarize | extract | custom
--     "model": "llama3",                   -- the text model (or "models": {"text": ..., "vision": ...})
--     "system_prompt": "You are ...",
--     "tools": ["calculator", "csv_query"],
--     "limits": {"steps": 10, "tokens": 4096, "seconds": 300},
--     "parameters": {"temperature": 0.2, "num_ctx": 8192},
--     "data": {"q3": {"format": "csv", "content": "..."}},   -- or {"q3": "file:q3.csv"} in the CLI
--     "fields": ["revenue", "region"],     -- extract: what to pull out
--     "http_allow": ["https://api.example.com/"],            -- http_get may read these
--     "workflow": "return function(input) ... end",          -- custom: Lua, run in the sandbox
--     "on_message": true                   -- answer agent messages (aitbc agent-comm listen): true runs the
--                                          -- agent on the message; Lua source runs that handler in the sandbox
--   }
local inference = require "aitbc.jobs.inference"
local tools = require "aitbc.agents.tools"

local M = {}

M.TYPES = { analysis = true, chat = true, summarize = true, extract = true, custom = true }
M.TYPE_NAMES = "analysis, chat, summarize, extract or custom"
M.LIMITS = { steps = { 1, 50, 10 }, tokens = { 1, 200000, 4096 }, seconds = { 1, 3600, 300 } }
M.MAX_DATA = 1024 * 1024
M.MAX_WORKFLOW = 64 * 1024
local FORMATS = { csv = true, json = true, text = true }
local KNOWN = { name = true, type = true, model = true, models = true, system_prompt = true, tools = true,
  limits = true, parameters = true, data = true, fields = true, http_allow = true, workflow = true,
  description = true, on_message = true }

local function text(def, field, max, v)
  local s = def[field]
  if s == nil then return nil end
  if type(s) ~= "string" then v.invalid(field, "must be text") end
  if #s > max then v.invalid(field, "must be at most " .. max .. " bytes") end
  return s
end

local function model_name(s, field, v)
  if type(s) ~= "string" or not s:match("^[%w][%w_%.%-:/]*$") or #s > 200 then
    v.invalid(field, "must be an Ollama model name, e.g. llama3 or llava:13b")
  end
  return s
end

local function check_models(def, v)
  local models = {}
  if def.models ~= nil then
    if type(def.models) ~= "table" then v.invalid("models", "must be an object {text, vision}") end
    for k in pairs(def.models) do
      if k ~= "text" and k ~= "vision" then v.invalid("models." .. tostring(k), "is not a model role (text or vision)") end
    end
    models.text = def.models.text and model_name(def.models.text, "models.text", v)
    models.vision = def.models.vision and model_name(def.models.vision, "models.vision", v)
  end
  if def.model ~= nil then models.text = model_name(def.model, "model", v) end
  if not models.text then v.invalid("model", "is required: the text model the agent thinks with, e.g. \"llama3\"") end
  return models
end

local function check_tools(def, v)
  local list = def.tools or {}
  if type(list) ~= "table" then v.invalid("tools", "must be a list of tool names") end
  local seen, out = {}, {}
  for i, name in ipairs(list) do
    if type(name) ~= "string" or not tools[name] or type(tools[name]) ~= "table" then
      v.invalid("tools[" .. i .. "]", "is not a tool aitbc has (" .. table.concat(tools.NAMES, ", ") .. ")")
    end
    if not seen[name] then seen[name], out[#out + 1] = true, name end
  end
  return out
end

local function check_limits(def, v)
  local given = def.limits or {}
  if type(given) ~= "table" then v.invalid("limits", "must be an object {steps, tokens, seconds}") end
  local out = {}
  for name, range in pairs(M.LIMITS) do
    local x = given[name]
    if x == nil then
      out[name] = range[3]
    elseif math.type(x) ~= "integer" or x < range[1] or x > range[2] then
      v.invalid("limits." .. name, string.format("must be a whole number from %d to %d", range[1], range[2]))
    else
      out[name] = x
    end
  end
  for name in pairs(given) do
    if not M.LIMITS[name] then v.invalid("limits." .. tostring(name), "is not a limit (steps, tokens, seconds)") end
  end
  return out
end

--- data: {name = {format, content}}: the total at most MAX_DATA.
function M.check_data(data, field, v)
  if data == nil then return nil end
  if type(data) ~= "table" then v.invalid(field, "must be an object: name -> {format, content}") end
  local total, out = 0, {}
  for name, d in pairs(data) do
    local at = field .. "." .. tostring(name)
    if type(name) ~= "string" or not name:match("^[%w_%-%.]+$") or #name > 64 then
      v.invalid(at, "a dataset's name may use letters, digits, _ - and .")
    end
    if type(d) ~= "table" or type(d.content) ~= "string" then v.invalid(at .. ".content", "is required (text)") end
    local format = d.format or "text"
    if not FORMATS[format] then v.invalid(at .. ".format", "must be csv, json or text") end
    total = total + #d.content
    out[name] = { format = format, content = d.content }
  end
  if total > M.MAX_DATA then v.invalid(field, "may hold at most 1 MiB of data in all") end
  return out
end

local function check_workflow(def, kind, v)
  local wf = text(def, "workflow", M.MAX_WORKFLOW, v)
  if kind == "custom" and not wf then
    v.invalid("workflow", "is required for type custom: Lua source returning function(input) ... end")
  end
  if wf and kind ~= "custom" then v.invalid("workflow", "is only for type custom") end
  if wf then
    if wf:byte(1) == 27 then v.invalid("workflow", "must be Lua source, not bytecode") end
    local ok, err = load(wf, "=workflow", "t", {})
    if not ok then v.invalid("workflow", "does not compile: " .. tostring(err)) end
  end
  return wf
end

--- on_message: true (the agent itself answers a message) or a Lua handler's source.
local function check_on_message(def, v)
  local h = def.on_message
  if h == nil or h == false then return nil end
  if h == true then return true end
  if type(h) ~= "string" then
    v.invalid("on_message", "must be true (the agent answers messages) or Lua source returning function(msg) ... end")
  end
  if #h > M.MAX_WORKFLOW then v.invalid("on_message", "must be at most " .. M.MAX_WORKFLOW .. " bytes") end
  if h:byte(1) == 27 then v.invalid("on_message", "must be Lua source, not bytecode") end
  local ok, err = load(h, "=on_message", "t", {})
  if not ok then v.invalid("on_message", "does not compile: " .. tostring(err)) end
  return h
end

local function check_http_allow(def, v)
  if def.http_allow == nil then return nil end
  if type(def.http_allow) ~= "table" then v.invalid("http_allow", "must be a list of URL prefixes") end
  for i, p in ipairs(def.http_allow) do
    if type(p) ~= "string" or not p:match("^https?://[^/]+/") then
      v.invalid("http_allow[" .. i .. "]", "must be an http:// or https:// prefix ending the host with /, e.g. "
        .. "https://api.example.com/")
    end
  end
  return def.http_allow
end

--- Validates and normalises a definition; returns the stored form.
function M.check(def, v)
  if type(def) ~= "table" then v.invalid("config", "must be a JSON object") end
  for k in pairs(def) do
    if not KNOWN[k] then v.invalid(tostring(k), "is not a field of an agent definition") end
  end
  local name = text(def, "name", 64, v)
  if not name or not name:match("^[%w][%w_%-%. ]*$") then
    v.invalid("name", "is required: letters, digits, _ - . and spaces, up to 64")
  end
  local kind = def.type or "chat"
  if not M.TYPES[kind] then v.invalid("type", "must be " .. M.TYPE_NAMES) end
  local models = check_models(def, v)
  local out = {
    name = name, type = kind, models = models, system_prompt = text(def, "system_prompt", 16 * 1024, v),
    description = text(def, "description", 2000, v), tools = check_tools(def, v), limits = check_limits(def, v),
    data = M.check_data(def.data, "data", v), http_allow = check_http_allow(def, v),
    workflow = check_workflow(def, kind, v), on_message = check_on_message(def, v),
  }
  inference.check_options(def.parameters, "parameters", v)
  out.parameters = def.parameters
  if def.fields ~= nil then
    if type(def.fields) ~= "table" or #def.fields == 0 then v.invalid("fields", "must be a list of names") end
    for i, f in ipairs(def.fields) do
      if type(f) ~= "string" or #f > 100 then v.invalid("fields[" .. i .. "]", "must be a name") end
    end
    out.fields = def.fields
  end
  if kind == "extract" and not out.fields then v.invalid("fields", "is required for type extract: what to pull out") end
  local uses_http = false
  for _, t in ipairs(out.tools) do if t == "http_get" then uses_http = true end end
  if uses_http and not out.http_allow then
    v.invalid("http_allow", "is required with the http_get tool: the URL prefixes the agent may read")
  end
  return out
end

--- What a miner needs to run this agent: {models, vision_model?, tools, custom_workflow};
-- for_message: to run its on_message handler (Lua: a custom workflow).
function M.needs(def, with_images, for_message)
  local needs = { models = { def.models.text }, tools = #def.tools > 0 and def.type == "analysis" or nil,
    custom_workflow = (def.type == "custom" or (for_message and type(def.on_message) == "string")) or nil }
  if with_images then
    needs.vision, needs.vision_model = true, def.models.vision
    needs.models = { def.models.vision }
  end
  return needs
end

return M
