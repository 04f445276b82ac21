--- aitbc agent: AI agents that run on the network (spec §5).  A definition
-- (agent_config.json) is checked here and on the node, stored there and
-- versioned; executing it is a job a miner runs beside its Ollama, whose
-- steps (thoughts, tool calls, observations, the answer) stream back live.
local errors = require "aitbc.errors"
local json = require "aitbc.json"

local function api(ctx) return require("aitbc.api").from_context(ctx, { role = "client" }) end
local function agent_path(template, id) return require("aitbc.api").path(template, { agent_id = id }) end

local AGENT = { agent_id = "string", name = "string", type = "string", version = "integer", definition = "object" }
local AGENT_FIELDS = { "agent_id", "name", "type", "version", "current_version", "created_at", "updated_at", "definition" }
local CREATED_FIELDS = { "agent_id", "name", "type", "version", "current_version", "created_at", "updated_at",
  "definition", "status", "warnings", "public_key", "key_file" }
local FORMATS = { csv = "csv", json = "json" }

--- A usage error naming the config file and the field.
local function checker(source)
  return { invalid = function(field, message)
    errors.raise("usage", source .. ": " .. field .. " " .. message, "fix " .. field .. " in " .. source,
      { code = "invalid_config", field = field })
  end }
end

--- "file:PATH" (relative to the config file's directory base) -> the path, or nil.
local function file_ref(value, base)
  if type(value) ~= "string" or value:sub(1, 5) ~= "file:" then return nil end
  local file = value:sub(6)
  if file:sub(1, 1) ~= "/" and base then file = base .. "/" .. file end
  return file
end

--- Datasets given as "file:PATH" are read here; their format comes from
-- the extension.
local function load_files(data, base)
  local config = require "aitbc.config"
  for name, d in pairs(data or {}) do
    local file = file_ref(d, base)
    if file then
      data[name] = { format = FORMATS[file:match("%.(%w+)$") or ""] or "text",
        content = config.read_input(file, "the dataset " .. name) }
    end
  end
  return data
end

--- The definition from --config FILE and the options (which win).
local function definition_from(ctx)
  local o = ctx.opts
  local def, source = {}, "the options"
  if o.config then
    local text = require("aitbc.config").read_input(o.config, "--config")
    local value, err = json.decode(text)
    if type(value) ~= "table" or json.is_array(value) then
      errors.raise("usage", o.config .. " is not a JSON object: " .. tostring(err or "a list"),
        "see 'aitbc agent create --help' for the format")
    end
    def, source = value, o.config
    local base = o.config:match("^(.*)/[^/]*$")
    def.data = load_files(def.data, base)
    local workflow = file_ref(def.workflow, base) -- custom: its Lua in a file
    if workflow then def.workflow = require("aitbc.config").read_input(workflow, "the workflow") end
    local handler = file_ref(def.on_message, base) -- an on_message handler in a file
    if handler then def.on_message = require("aitbc.config").read_input(handler, "the on_message handler") end
  end
  if o.name then def.name = o.name end
  if o.type then def.type = o.type end
  if o.model then def.model, def.models = o.model, def.models and { vision = def.models.vision } or nil end
  if o.vision_model then
    def.models = def.models or {}
    def.models.vision = o.vision_model
    if def.model then def.models.text, def.model = def.model, nil end
  end
  require("aitbc.agents.definition").check(def, checker(source)) -- the node checks again; this names the file
  return def
end

local function render_agent(d, out)
  local def = d.definition or {}
  local models = def.models or {}
  out:print(out:format_record({
    agent_id = d.agent_id, name = d.name, type = d.type, version = d.version,
    model = models.text and (models.text .. (models.vision and (", vision " .. models.vision) or "")),
    tools = def.tools and #def.tools > 0 and table.concat(def.tools, ", ") or "none",
    limits = def.limits and string.format("%d steps, %d tokens, %d s", def.limits.steps, def.limits.tokens,
      def.limits.seconds),
    data = def.data and next(def.data) and (function()
      local names = {}
      for k in pairs(def.data) do names[#names + 1] = k end
      table.sort(names)
      return table.concat(names, ", ")
    end)() or nil,
  }, { { "agent_id", "agent id" }, "name", "type", "version", "model", "tools", "limits", "data" }))
end

-- ---- execution: live steps ----

local function short(v, max)
  local text = type(v) == "string" and v or json.encode(v)
  if #text > max then text = text:sub(1, max - 1) .. "…" end
  return text
end

--- A printer for events on a terminal or a log: one line per step.
local function live_printer(out)
  local in_tokens = false
  local function line(text)
    if in_tokens then io.stdout:write("\n") in_tokens = false end
    out:print(text)
  end
  local show = {
    ["job.queued"] = function() line(out:style("· queued", "dim")) end,
    ["job.running"] = function(d) line(out:style("· running on miner " .. tostring(d.miner_id), "dim")) end,
    ["agent.started"] = function(d)
      line(out:style(string.format("· agent %s (v%s, %s, model %s)", d.agent_id, d.version, d.type, d.model), "dim"))
    end,
    step = function(d) line(out:style("Step " .. d.n .. (d.what and (": " .. d.what) or ""), "bold")) end,
    token = function(d)
      if not in_tokens then io.stdout:write(out:style("  ", "dim")) end
      io.stdout:write(out:style(d.text, "dim"))
      io.stdout:flush()
      in_tokens = true
    end,
    thought = function(d) line("  thought: " .. short(d.text, 400)) end,
    tool_called = function(d) line("  → " .. d.name .. " " .. short(d.arguments or {}, 300)) end,
    tool_output = function(d)
      line(string.format("  ← %s: %s (%.2f s)", d.name, short(d.output, 400), d.seconds or 0))
    end,
    limit_reached = function(d)
      line(out:style(string.format("  ! limit reached: %s (%s); asking for its best answer", d.limit, d.value), "yellow"))
    end,
    message_output = function() if in_tokens then io.stdout:write("\n") in_tokens = false end end,
  }
  return function(e)
    local f = show[e.type]
    if f then f(e.data or {}) end
  end
end

local function render_run(d, out)
  out:print("")
  out:print(out:style("Answer", "bold") .. (d.partial and out:style(" (best effort: a limit was reached)", "yellow") or ""))
  out:print(d.answer or "")
  out:print("")
  local u, rc = d.usage or {}, d.receipt or {}
  out:print(out:format_record({
    job = d.job_id, steps = d.steps ~= 0 and d.steps or nil,
    calls = u.model_calls and string.format("%d model, %d tool", u.model_calls, u.tool_calls or 0),
    tokens = u.completion_tokens and string.format("%d generated, %d prompt", u.completion_tokens, u.prompt_tokens or 0),
    time = u.seconds and string.format("%.2f s", u.seconds),
    receipt = rc.receipt_id and (rc.receipt_id .. (d.receipt_verified and " (signature verified against the node's key)"
      or "")),
  }, { "job", "steps", "calls", "tokens", "time", { "receipt", "proof of execution" } }))
end

--- Runs a job for the agent and follows it to its end.  -> the result
-- document (answer, steps, events, usage, receipt).
local function run_and_follow(ctx, agent_id, body)
  local client = api(ctx)
  local follow = require "aitbc.jobs.follow"
  local job = client:call("POST", agent_path("/v1/agents/{agent_id}/execute", agent_id), { json = body,
    expect = { job_id = "string", state = "string" } })
  local json_mode = ctx.out.format ~= "table"
  if not json_mode then ctx.out:info("job " .. job.job_id .. " submitted for agent " .. agent_id) end
  local printer = not json_mode and live_printer(ctx.out)
  local on_event = printer
  if json_mode and ctx.opts.stream then
    on_event = function(e) io.stdout:write(json.encode(e), "\n") io.stdout:flush() end
  end
  local state, events = follow.events(client, job.job_id, { on_event = on_event, timeout = ctx.opts.timeout })
  if state ~= "COMPLETED" then
    local status = client:call("GET", require("aitbc.api").path("/v1/jobs/{job_id}", { job_id = job.job_id }))
    errors.raise("failure", "job " .. job.job_id .. " ended " .. state .. ": " .. tostring(status.error),
      "its steps: aitbc client status " .. job.job_id, { code = "job_" .. state:lower() })
  end
  local res = follow.result(client, job.job_id)
  local r = type(res.result) == "table" and res.result or { answer = res.result }
  local steps = json.array()
  for _, e in ipairs(events) do
    if e.type ~= "token" then steps[#steps + 1] = e end
  end
  return { job_id = job.job_id, agent_id = agent_id, state = state, answer = r.answer, partial = r.partial or false,
    data = r.data, steps = r.steps, usage = r.usage, events = steps, receipt = res.receipt,
    receipt_verified = res.receipt_verified or false }
end

--- --data [NAME=]FILE, repeated: datasets for this run (NAME defaults to
-- the file's name without its extension).
local function read_data_option(ctx)
  local data = {}
  for _, spec in ipairs(ctx.opts.data or {}) do
    local name, file = spec:match("^([%w_%-%.]+)=(.+)$")
    if not name then file, name = spec, ((spec:match("([^/]+)$") or spec):gsub("%.%w+$", "")) end
    data[name] = "file:" .. file
  end
  return next(data) and load_files(data) or nil
end

return {
  name = "agent",
  category = "Workflows",
  summary = "AI agents: define them, run them on the network, follow their steps",
  description = "An agent is a versioned definition on the node: a workflow type (analysis, chat, summarize, "
    .. "extract, or custom Lua run in a sandbox), its models, the tools it may use, limits and attached data. "
    .. "Executing it is a job that a miner runs beside its Ollama; its thoughts, tool calls, observations and "
    .. "answer stream back live.",
  commands = {
    {
      name = "create",
      summary = "Define an agent from a configuration file (prints its agent_id)",
      options = {
        { "--config", metavar = "FILE", help = "the definition, JSON (see the README: agents)" },
        { "--name", metavar = "NAME", help = "its name (overrides the file)" },
        { "--type", metavar = "TYPE", help = "analysis, chat, summarize, extract or custom (overrides the file)" },
        { "--model", metavar = "MODEL", help = "the text model, e.g. llama3 (overrides the file)" },
        { "--vision-model", metavar = "MODEL", help = "a vision model for images, e.g. llava" },
      },
      id_field = "agent_id", fields = CREATED_FIELDS,
      examples = { [[aitbc agent create --name "data_analyzer" --type "analysis" --config agent_config.json]] },
      run = function(ctx)
        local def = definition_from(ctx)
        local agent = api(ctx):call("POST", "/v1/agents", { json = def, expect = AGENT })
        -- its own Ed25519 key, kept by its owner (0600): it signs the agent's
        -- registrations and messages (aitbc agent-comm)
        local key = require("aitbc.agentcomm.keys").get(agent.agent_id, true)
        agent.public_key, agent.key_file = key.id, key.path
        key.secret:wipe()
        return agent, function(d, out)
          out:success("agent " .. d.name .. " registered and ready: " .. d.agent_id)
          render_agent(d, out)
          out:print(out:format_record({ public_key = d.public_key, key_file = d.key_file .. " (yours only: mode 0600)" },
            { { "public_key", "agent key" }, { "key_file", "key file" } }))
          for _, w in ipairs(d.warnings or {}) do out:warn(w) end
          out:print(out:style("next: aitbc agent execute " .. d.agent_id .. ' --input "..."', "dim"))
        end
      end,
    },
    {
      name = "execute",
      summary = "Run an agent on an input; its steps stream live, then the answer and its receipt",
      args = { { "agent_id", help = "the agent's id" } },
      options = {
        { "--input", metavar = "TEXT", help = "what the agent should work on" },
        { "--data", metavar = "[NAME=]FILE", repeatable = true, help = "attach a dataset (csv, json or text) for this run" },
        { "--version", type = "integer", min = 1, metavar = "N", help = "run this version (default: the current one)" },
        { "--stream", type = "boolean", help = "with --output json: one JSON event per line as they happen" },
        { "--timeout", type = "number", min = 1, default = 600, metavar = "SECONDS", help = "how long to follow it" },
      },
      id_field = "job_id", fields = { "job_id", "agent_id", "state", "answer", "partial", "data", "steps", "usage",
        "events", "receipt", "receipt_verified" },
      examples = { [[aitbc agent execute agent_0a1b2c3d4e5f6a7b --input "Analyze Q3 financial data"]],
                   [[aitbc -o json agent execute agent_0a1b2c3d4e5f6a7b --input "..." --stream]] },
      run = function(ctx)
        if not ctx.opts.input then errors.raise("usage", "--input is required: what the agent should work on") end
        local res = run_and_follow(ctx, ctx.args.agent_id, { input = ctx.opts.input, data = read_data_option(ctx),
          version = ctx.opts.version })
        if ctx.out.format ~= "table" and ctx.opts.stream then
          io.stdout:write(json.encode { type = "result", result = res }, "\n")
          return nil
        end
        return res, render_run
      end,
    },
    {
      name = "list",
      summary = "Your agents",
      list = "items", paged = "/v1/agents", id_field = "agent_id",
      fields = { "agent_id", "name", "type", "version", "model", "tools", "created_at", "updated_at" },
      run = function(ctx)
        local page = api(ctx):call("GET", "/v1/agents", { query = { limit = ctx.opts.limit, offset = ctx.opts.offset },
          expect = { items = "array", total = "integer" } })
        return page, function(d, out)
          if #d.items == 0 then out:print("no agents yet: aitbc agent create --config FILE") return end
          for _, a in ipairs(d.items) do a.tools = #a.tools > 0 and table.concat(a.tools, ",") or "-" end
          out:print(out:format_table(d.items, { "agent_id", "name", "type", "version", "model", "tools", "updated_at" }))
        end
      end,
    },
    {
      name = "show",
      summary = "An agent's definition (the current version, or --version N)",
      id_field = "agent_id", fields = AGENT_FIELDS,
      args = { { "agent_id", help = "the agent's id" } },
      options = { { "--version", type = "integer", min = 1, metavar = "N", help = "this version" } },
      run = function(ctx)
        local agent = api(ctx):call("GET", agent_path("/v1/agents/{agent_id}", ctx.args.agent_id),
          { query = { version = ctx.opts.version }, expect = AGENT })
        return agent, render_agent
      end,
    },
    {
      name = "update",
      summary = "Change an agent: a new version (the fields given replace the current ones)",
      id_field = "agent_id", fields = { "agent_id", "name", "type", "version", "current_version", "created_at",
        "updated_at", "definition", "warnings" },
      args = { { "agent_id", help = "the agent's id" } },
      options = {
        { "--config", metavar = "FILE", help = "fields to change, JSON" },
        { "--model", metavar = "MODEL", help = "the text model" },
        { "--vision-model", metavar = "MODEL", help = "the vision model" },
        { "--system-prompt", metavar = "TEXT", help = "the system prompt" },
        { "--note", metavar = "TEXT", help = "why (shown by 'agent versions')" },
      },
      run = function(ctx)
        local o = ctx.opts
        local changes = {}
        if o.config then
          local value = json.decode(require("aitbc.config").read_input(o.config, "--config"))
          if type(value) ~= "table" then errors.raise("usage", o.config .. " is not a JSON object") end
          changes = value
          changes.data = load_files(changes.data, o.config:match("^(.*)/[^/]*$"))
        end
        if o.model then changes.model = o.model end
        if o.vision_model then changes.models = { vision = o.vision_model } end
        if o.system_prompt then changes.system_prompt = o.system_prompt end
        if o.note then changes.note = o.note end
        if next(changes) == nil then errors.raise("usage", "nothing to change", "give --config, --model, ... ") end
        local agent = api(ctx):call("PATCH", agent_path("/v1/agents/{agent_id}", ctx.args.agent_id),
          { json = changes, expect = AGENT })
        return agent, function(d, out)
          out:success("agent " .. d.agent_id .. " is now at version " .. d.version)
          render_agent(d, out)
          for _, w in ipairs(d.warnings or {}) do out:warn(w) end
        end
      end,
    },
    {
      name = "versions",
      summary = "An agent's versions",
      list = "items", fields = { "version", "current", "created_at", "note", "size" },
      args = { { "agent_id", help = "the agent's id" } },
      run = function(ctx)
        local v = api(ctx):call("GET", agent_path("/v1/agents/{agent_id}/versions", ctx.args.agent_id),
          { expect = { items = "array" } })
        return v, function(d, out)
          for _, item in ipairs(d.items) do item.current = item.current and "*" or "" end
          out:print(out:format_table(d.items, { "version", "current", "created_at", "note" }))
        end
      end,
    },
    {
      name = "rollback",
      summary = "Go back to an earlier version (as a new version, so it can be undone too)",
      args = { { "agent_id", help = "the agent's id" }, { "version", help = "the version to go back to" } },
      run = function(ctx)
        local version = math.tointeger(tonumber(ctx.args.version))
        if not version or version < 1 then errors.raise("usage", "version must be a version number, e.g. 2") end
        local agent = api(ctx):call("POST", agent_path("/v1/agents/{agent_id}/rollback", ctx.args.agent_id),
          { json = { version = version }, expect = AGENT })
        return agent, function(d, out)
          out:success(string.format("agent %s is back at version %d's definition (now version %d)", d.agent_id,
            d.rolled_back_to, d.version))
        end
      end,
    },
    {
      name = "delete",
      summary = "Delete an agent and its versions (jobs already run keep their copy)",
      args = { { "agent_id", help = "the agent's id" } },
      run = function(ctx)
        local res = api(ctx):call("DELETE", agent_path("/v1/agents/{agent_id}", ctx.args.agent_id))
        return res, function(d, out) out:success("agent " .. d.agent_id .. " deleted") end
      end,
    },
  },
}
