--- Runs an agent's workflow on a miner (DESIGN.md §8).  Built-in workflows
-- (lua/aitbc/agents/<type>.lua) and custom ones (Lua in the definition, run
-- in the sandbox) get the same three things: `llm` (chat/generate on the
-- miner's Ollama, with native tool calling), `tools` (the ones the
-- definition allows) and `emit` (events the client sees live).  The runner
-- keeps the limits: model calls (steps, plus one last call for a
-- best-effort answer), tokens and wall clock.
--
-- Events: agent.started, step, token, thought, tool_called, tool_output,
-- message_output, limit_reached, answer, agent.finished.
local json = require "aitbc.json"
local sandbox = require "aitbc.native.sandbox"
local sys = require "aitbc.sys"
local tools = require "aitbc.agents.tools"

local M = { BUILTIN = { analysis = true, chat = true, summarize = true, extract = true } }

local LimitReached = {}

--- Tool calls from a model turn: Ollama's tool_calls, else JSON put in the
-- content ({"name", "arguments"} or {"tool", "args"}, possibly fenced), as
-- models often do.  Each numbered: Ollama gives no call id.
local function tool_calls_of(message, step, allowed)
  local calls = {}
  for _, c in ipairs(message.tool_calls or {}) do
    local f = c["function"] or c
    if type(f.name) == "string" then calls[#calls + 1] = { name = f.name, arguments = f.arguments } end
  end
  if #calls == 0 and type(message.content) == "string" and message.content:find("{", 1, true) then
    local text = message.content:match("```%w*%s*(%b{})") or message.content:match("^%s*(%b{})%s*$")
    local obj = text and json.decode(text)
    local name = type(obj) == "table" and (obj.name or obj.tool)
    if type(name) == "string" and allowed[name] then
      calls[1] = { name = name, arguments = obj.arguments or obj.args or obj.parameters or {} }
    end
  end
  for i, c in ipairs(calls) do
    if type(c.arguments) == "string" then c.arguments = json.decode(c.arguments) or { input = c.arguments } end
    if type(c.arguments) ~= "table" then c.arguments = {} end
    c.id = step .. "." .. i
  end
  return calls
end
M.tool_calls_of = tool_calls_of

--- The context a workflow runs with.  opts: {payload, ollama, node, chain_id,
-- emit = function(type, data), stream_tokens}.
function M.context(opts)
  local payload = opts.payload
  local def = payload.agent.definition
  local started = sys.monotonic()
  local limits = def.limits
  local usage = { calls = 0, prompt_tokens = 0, completion_tokens = 0, tool_calls = 0, steps = 0 }
  local data = {}
  for name, d in pairs(def.data or {}) do data[name] = d end
  for name, d in pairs(payload.data or {}) do data[name] = d end
  local allowed = {}
  for _, name in ipairs(def.tools or {}) do allowed[name] = true end
  local env = { data = data, node = opts.node, chain_id = opts.chain_id, http_allow = def.http_allow }
  local ctx = { definition = def, input = payload.input or "", images = payload.images, data = data, usage = usage,
    limits = limits, tool_names = def.tools or {} }

  function ctx.emit(kind, value) opts.emit(kind, value) end
  function ctx.elapsed() return sys.monotonic() - started end
  function ctx.time_left() return limits.seconds - ctx.elapsed() end
  function ctx.tokens_left() return limits.tokens - usage.prompt_tokens - usage.completion_tokens end

  --- Tokens or time spent?  -> name, value
  local function spent()
    if ctx.tokens_left() <= 0 then return "tokens", limits.tokens - ctx.tokens_left() end
    if ctx.time_left() <= 0 then return "seconds", math.floor(ctx.elapsed()) end
  end

  --- Is a limit reached (steps, tokens, time)?  -> name, value (the first one that is)
  function ctx.limit_reached()
    if usage.steps >= limits.steps then return "steps", usage.steps end
    return spent()
  end

  --- Ollama options: the definition's parameters, the call's, and a
  -- prediction cap within the tokens left.
  function ctx.options(extra)
    local options = {}
    for k, v in pairs(def.parameters or {}) do options[k] = v end
    for k, v in pairs(extra or {}) do options[k] = v end
    local left = ctx.tokens_left()
    if left > 0 and (not options.num_predict or options.num_predict > left) then
      options.num_predict = math.max(16, math.floor(left))
    end
    return options
  end

  --- One model call: req {messages, tools (names or declarations), format,
  -- images, model, final}; -> {content, tool_calls = {{id, name, arguments}},
  -- tokens = {prompt, completion}, done_reason}.  A call once tokens or
  -- time are spent raises LimitReached, except the one final call for a
  -- best-effort answer (steps are the workflow's to count).
  function ctx.chat(req)
    if not req.final and spent() then error(LimitReached, 0) end
    if req.final and usage.final_done then error(LimitReached, 0) end
    if req.final then usage.final_done = true end
    usage.calls = usage.calls + 1
    local declarations = req.tools
    if type(declarations) == "table" and type(declarations[1]) == "string" then
      declarations = tools.declarations(declarations)
    end
    local model = req.model or def.models.text
    local final, err = opts.ollama:chat { model = model, messages = req.messages, tools = declarations,
      format = req.format, options = ctx.options(req.options), timeout = math.max(5, ctx.time_left() + 30),
      on_token = opts.stream_tokens and function(text) ctx.emit("token", { text = text }) end or nil }
    if not final then error(err, 0) end
    usage.prompt_tokens = usage.prompt_tokens + (final.prompt_eval_count or 0)
    usage.completion_tokens = usage.completion_tokens + (final.eval_count or 0)
    usage.eval_duration = (usage.eval_duration or 0) + (final.eval_duration or 0)
    usage.prompt_eval_duration = (usage.prompt_eval_duration or 0) + (final.prompt_eval_duration or 0)
    usage.load_duration = (usage.load_duration or 0) + (final.load_duration or 0)
    return { content = final.message.content or "", tool_calls = tool_calls_of(final.message, usage.calls, allowed),
      tokens = { prompt = final.prompt_eval_count or 0, completion = final.eval_count or 0 },
      done_reason = final.done_reason, model = model }
  end

  function ctx.generate(req)
    local reply = ctx.chat { messages = { { role = "system", content = req.system }, { role = "user", content = req.prompt } },
      format = req.format, options = req.options, model = req.model, final = req.final }
    return reply
  end

  --- Calls a tool the definition allows; the call and its output are events.
  function ctx.call_tool(name, arguments, id)
    usage.tool_calls = usage.tool_calls + 1
    id = id or ("t" .. usage.tool_calls)
    ctx.emit("tool_called", { call_id = id, name = name, arguments = arguments })
    local result, seconds
    if not allowed[name] then
      result, seconds = { error = "this agent may not use the tool " .. tostring(name) }, 0
    else
      result, seconds = tools.call(name, arguments, env)
    end
    ctx.emit("tool_output", { call_id = id, name = name, output = result, seconds = seconds })
    return result
  end

  --- Datasets for a prompt: "- name (csv; columns: a, b)".
  function ctx.describe_data()
    local lines, names = {}, {}
    for name in pairs(data) do names[#names + 1] = name end
    table.sort(names)
    for _, name in ipairs(names) do
      local d = data[name]
      if d.format == "csv" then
        local header = d.content:match("^([^\r\n]*)") or ""
        lines[#lines + 1] = string.format("- %s (csv; columns: %s)", name, header:gsub(",", ", "))
      else
        lines[#lines + 1] = string.format("- %s (%s)", name, d.format)
      end
    end
    return table.concat(lines, "\n")
  end

  return ctx
end

--- A model call for the sandbox: errors become plain messages it can read.
local function guarded(fn, req)
  local ok, value = pcall(fn, req)
  if ok then return value end
  if value == LimitReached then error("limit reached (steps, tokens or time): give your answer now", 0) end
  error(type(value) == "table" and (value.message or tostring(value)) or tostring(value), 0)
end

--- A custom workflow (or an on_message handler: name, code, message) in
-- the sandbox: the same llm/tools/emit as host functions; its input
-- {input, data, tools, limits, message}.
local function run_custom(ctx, handler)
  local def = ctx.definition
  local datasets = {}
  for name, d in pairs(ctx.data) do datasets[name] = d.content end
  local ok, value, kind, stats = sandbox.run {
    name = handler and handler.name or "workflow", code = handler and handler.code or def.workflow,
    seconds = def.limits.seconds, memory = 64 << 20, instructions = 5e8,
    input = { input = ctx.input, data = datasets, tools = json.array(ctx.tool_names), limits = def.limits,
      message = handler and handler.message },
    functions = {
      llm = { chat = function(req) return guarded(ctx.chat, req) end,
        generate = function(req) return guarded(ctx.generate, req) end },
      tools = { call = function(name, args) return ctx.call_tool(name, args) end },
      emit = function(kind, data) ctx.emit(tostring(kind), data) end,
    },
  }
  if not ok then return nil, "the workflow failed (" .. kind .. "): " .. tostring(value), stats end
  if type(value) == "string" then value = { answer = value } end
  if type(value) ~= "table" or value.answer == nil then
    return nil, "the workflow must return its answer (a string, or a table with answer)", stats
  end
  return value, nil, kind
end

--- A swarm member's training round (fed-avg, lua/aitbc/swarm/fedavg.lua):
-- the trainer, not the agent's workflow, runs in the sandbox on the
-- member's shard; its epochs are events.
local function run_training(ctx, train)
  local ok, value, kind = sandbox.run {
    name = "trainer", code = require("aitbc.swarm.fedavg").TRAINER, seconds = ctx.limits.seconds, memory = 64 << 20,
    instructions = 2e9,
    input = { input = ctx.input, model = train.model, epochs = train.epochs, learning_rate = train.learning_rate,
      label = train.label, weights = train.weights, scale = train.scale },
    functions = { emit = function(kind, data) ctx.emit(tostring(kind), data) end },
  }
  if not ok then return nil, "training failed (" .. kind .. "): " .. tostring(value) end
  return value
end

--- Runs the agent of a job; -> result {answer, partial, steps, usage, ...} | nil, err
function M.run(opts)
  local ctx = M.context(opts)
  local def = ctx.definition
  ctx.emit("agent.started", { agent_id = opts.payload.agent.agent_id, version = opts.payload.agent.version,
    type = def.type, model = ctx.images and def.models.vision or def.models.text })
  local result, err
  if type(opts.payload.train) == "table" then
    result, err = run_training(ctx, opts.payload.train)
  elseif type(opts.payload.on_message) == "table" and type(def.on_message) == "string" then
    result, err = run_custom(ctx, { name = "on_message", code = def.on_message, message = opts.payload.on_message })
  elseif def.type == "custom" and not ctx.images then
    result, err = run_custom(ctx)
  else
    local workflow = require("aitbc.agents." .. (ctx.images and "vision" or def.type))
    local ok, value = pcall(workflow, ctx)
    if ok then
      result = value
    elseif value == LimitReached then
      result = { answer = "", partial = true }
    else
      err = type(value) == "table" and (value.message or tostring(value)) or tostring(value)
    end
  end
  if not result then
    ctx.emit("agent.finished", { error = err, seconds = ctx.elapsed() })
    return nil, err
  end
  result.steps = ctx.usage.steps
  result.usage = { model_calls = ctx.usage.calls, tool_calls = ctx.usage.tool_calls,
    prompt_tokens = ctx.usage.prompt_tokens, completion_tokens = ctx.usage.completion_tokens,
    eval_duration = ctx.usage.eval_duration, prompt_eval_duration = ctx.usage.prompt_eval_duration,
    load_duration = ctx.usage.load_duration, seconds = ctx.elapsed() } -- the durations: ns, as Ollama counts them
  ctx.emit("agent.finished", result.usage)
  return result
end

M.LimitReached = LimitReached
return M
