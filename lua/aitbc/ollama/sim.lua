--- A simulated Ollama server, for tests and the devnet where no Ollama can
-- run: the same routes (/api/version, /api/tags, /api/show, /api/generate,
-- /api/chat, /api/pull, /api/delete), the same fields and NDJSON streaming, and a small
-- deterministic "model" whose answer depends on the prompt (and on any
-- images, whose format, size and content hash it reads).  It speaks Ollama's
-- tool calling (`tools` in, `message.tool_calls` out: one call chosen from
-- what the conversation asks and the tools offered, then an answer built on
-- the tool's output), `format: "json"`, and /api/show's `capabilities`
-- (completion, tools; vision for llava).  It says what it is:
-- /api/version reports "…-aitbc-simulated", every model's family is
-- "aitbc-sim", and its answers end with "[simulated]".
-- /api/pull and /api/delete install and remove models (instantly, nothing
-- is downloaded), as `ollama pull` and `ollama rm` do.
-- Run with `aitbc ollama serve-sim`; config (JSON): {models = {...},
-- token_delay = seconds, state = a name for this server's model list,
-- vram_gb, cores}.
--
-- Its timings follow a small model of the hardware it pretends to be (a
-- GPU of vram_gb, default 6, beside `cores` CPU cores, default 8), so that
-- Ollama's options change them as they do on a real machine, and what it
-- reports (load_duration, prompt_eval_duration, eval_duration) is what it
-- sleeps:
--   * a token of an 8B model takes token_delay on the GPU; the size comes
--     from the tag (llama3.2:1b, :3b, :70b; else 7-8B), Q4 weights 0.56 GB
--     per billion parameters;
--   * the weights, the KV cache (num_ctx, default 2048) and the compute
--     buffer (num_batch, default 512) must fit in VRAM: what does not runs
--     on the CPU, ten times slower with `cores` threads, slower still with
--     fewer num_thread, and with more threads than cores (contention);
--   * the prompt is evaluated num_batch tokens at a time, and cut from the
--     start to num_ctx (as Ollama truncates: the answer then differs);
--   * changing the model, num_ctx, num_batch or num_thread reloads it;
--   * num_predict caps the answer; temperature above 1 makes it wander
--     (other words, arithmetic now and then off); models under 3B get large
--     products wrong; each timing jitters by up to ±4 %.
local crypto = require "aitbc.crypto"
local images_mod = require "aitbc.agents.images"
local json = require "aitbc.json"
local sys = require "aitbc.sys"

local VOCABULARY = {
  "compute", "network", "tokens", "miners", "inference", "GPU", "result", "ledger", "model", "proof",
  "latency", "throughput", "queue", "receipt", "block", "stake", "market", "price", "agent", "swarm",
}

local function iso() return os.date("!%Y-%m-%dT%H:%M:%S", math.floor(sys.time())) .. "Z" end

--- Simple arithmetic in the text ("17 * 23", "(120 + 200) / 2"), computed:
-- a model that can add.
local function arithmetic(text)
  text = text:gsub("%d%d%d%d%-%d%d%-%d%d", "date") -- a date is not a subtraction
  local expr = text:match("([%d%.%s%(%)]*%d[%d%.%s%(%)]*[%+%-%*/][%d%.%s%(%)%+%-%*/]*%d[%s%)]*)")
  if not expr or not expr:match("^[%d%.%s%(%)%+%-%*/]+$") then return nil end
  local fn = load("return " .. expr, "=sim", "t", {})
  local ok, value = pcall(fn or error)
  if ok and type(value) == "number" and value == value and math.abs(value) < 1e15 then return expr, value end
end

local function number_text(v)
  if math.type(v) == "integer" or (v == math.floor(v) and math.abs(v) < 1e15) then return string.format("%d", v) end
  return string.format("%.6g", v)
end

--- What it says it sees in the images: format, size, a digest; a count
-- chosen by the content (it cannot really count shapes).
local function describe_images(list)
  local words = {}
  for i, img in ipairs(list) do
    local bytes = crypto.unbase64(img) or img
    local info = images_mod.sniff(bytes)
    local digest = crypto.hex(crypto.sha256(bytes))
    if info then
      words[#words + 1] = string.format("image %d is a %dx%d %s (sha256 %s), in which I count %d shapes", i,
        info.width, info.height, info.format:upper(), digest:sub(1, 12), digest:byte(1) % 7 + 1)
    else
      words[#words + 1] = string.format("image %d is not an image I can read (%d bytes)", i, #bytes)
    end
  end
  return " I see: " .. table.concat(words, "; ") .. "."
end

local function split_tokens(text)
  local tokens = {}
  for word in text:gmatch("%s*%S+") do tokens[#tokens + 1] = word end
  return tokens
end

--- The answer, as tokens: a greeting, the value of arithmetic in the
-- prompt, or a summary of the prompt, then words chosen by the prompt's
-- hash.  Same prompt, same answer (below temperature 1; a model under 3B
-- gets products past 1000 wrong).
local function answer(prompt, images, limit, quirks)
  quirks = quirks or {}
  local p = (prompt or ""):lower()
  local text
  local expr, value = arithmetic(prompt or "")
  if p:find("hello") or p:find("hi%f[%A]") then
    text = "Hello! I am the AITBC simulated model."
  elseif expr then
    if quirks.small and math.abs(value) >= 1000 then value = value + value // 8 end -- a carry lost
    if quirks.wander and math.random() < quirks.wander then value = value + math.random(1, 9) end
    text = "The answer is " .. number_text(value) .. "."
  else
    local words = {}
    for w in (prompt or ""):gmatch("%w+") do words[#words + 1] = w end
    text = "You asked about " .. table.concat(words, " ", 1, math.min(#words, 6)) .. "."
  end
  if images and #images > 0 then text = text .. describe_images(images) end
  local digest = crypto.sha256((prompt or "") .. (quirks.wander and tostring(math.random()) or ""))
  for i = 1, 8 do text = text .. " " .. VOCABULARY[digest:byte(i) % #VOCABULARY + 1] end
  local tokens = split_tokens(text .. ". [simulated]")
  while limit and limit > 0 and #tokens > limit do table.remove(tokens) end
  return tokens
end

--- The datasets a conversation mentions, as the analysis workflow lists them
-- ("- q3 (csv; columns: region, revenue)").
local function datasets(messages)
  local out = {}
  for _, m in ipairs(messages) do
    for name, format, columns in tostring(m.content or ""):gmatch("%- ([%w_%-%.]+) %((%a+); columns: ([^%)]*)%)") do
      local cols = {}
      for c in columns:gmatch("[^,%s]+") do cols[#cols + 1] = c end
      out[#out + 1] = { name = name, format = format, columns = cols }
    end
    for name, format in tostring(m.content or ""):gmatch("%- ([%w_%-%.]+) %((%a+)%)") do
      out[#out + 1] = { name = name, format = format, columns = {} }
    end
  end
  return out
end

--- The one tool call the conversation asks for, if any: chosen from the
-- user's words and the tools offered, with arguments drawn from them.
local function choose_tool(messages, tools)
  local offered = {}
  for _, t in ipairs(tools) do
    local f = type(t) == "table" and t["function"]
    if f and f.name then offered[f.name] = true end
  end
  local user = ""
  for _, m in ipairs(messages) do if m.role == "user" then user = tostring(m.content) end end
  local lower = user:lower()
  local expr = arithmetic(user)
  if offered.calculator and expr then return "calculator", { expression = expr } end
  for _, d in ipairs(datasets(messages)) do
    if d.format == "csv" and offered.csv_query then
      local column = d.columns[#d.columns]
      return "csv_query", { dataset = d.name, aggregate = { fn = "sum", column = column } }
    elseif d.format == "json" and offered.json_query then
      return "json_query", { dataset = d.name, path = "" }
    end
  end
  if offered.chain and (lower:find("balance") or lower:find("block") or lower:find("chain")) then
    return "chain", { query = "head" }
  end
  if offered.marketplace and (lower:find("gpu") or lower:find("price") or lower:find("market")) then
    return "marketplace", { query = "offers" }
  end
end

--- An answer built on the tool outputs in the conversation.
local function answer_from_tools(messages)
  local parts = {}
  for _, m in ipairs(messages) do
    if m.role == "tool" then
      local out = tostring(m.content or "")
      parts[#parts + 1] = (m.tool_name or "a tool") .. " returned " .. (#out > 300 and (out:sub(1, 300) .. "…") or out)
    end
  end
  return split_tokens("Based on what I found: " .. table.concat(parts, "; ") .. ". That is my analysis. [simulated]")
end

--- A JSON object with the keys the prompt asks for ("keys: a, b"), each
-- filled from "key: value" or "key = value" in the text, else null.
local function json_answer(prompt)
  local keys = (prompt or ""):match("[Kk]eys?:%s*([^\n%.]+)") or ""
  local obj = {}
  for key in keys:gmatch("[%w_]+") do
    local value = (prompt or ""):match(key .. "%s*[:=]%s*(%-?%d+%.?%d*)")
      or (prompt or ""):match(key .. "%s*[:=]%s*([%w_%-]+)")
    obj[key] = value and (tonumber(value) or value) or json.null
  end
  return json.encode(obj)
end

--- A model's full name: "llama3" is "llama3:latest".
local function full_name(name)
  if type(name) ~= "string" or name == "" then return nil end
  return name:find(":") and name or (name .. ":latest")
end

--- Billions of parameters of a model, from its tag (llama3.2:1b, qwen2.5:0.5b,
-- llama3:70b-instruct); 8 when the tag does not say.
local function model_billions(name)
  local tag = name:match(":(.*)$") or ""
  return tonumber(tag:match("^(%d+%.?%d*)b") or tag:match("[%-_](%d+%.?%d*)b")) or 8
end

--- What a request costs on the simulated hardware: seconds of load,
-- prompt evaluation and per generated token, and how many prompt tokens
-- fit (the rest is cut).  options: Ollama's; loaded: the configuration now
-- in memory (a change reloads).
local function costs(hw, model, options, prompt_tokens, loaded)
  local b = model_billions(model)
  local ctx = math.tointeger(options.num_ctx) or 2048
  local batch = math.min(math.tointeger(options.num_batch) or 512, ctx)
  local threads = math.tointeger(options.num_thread) or hw.cores
  local weights = 0.56 * b
  local need = weights + ctx * 0.016 * b / 1024 + batch * 0.5 / 1024
  local on_cpu = math.min(1, math.max(0, need - hw.vram_gb) / weights) -- the share of layers that spill
  local gpu_token = hw.delay * b / 8
  local speed = math.min(threads, hw.cores) / hw.cores
  if threads > hw.cores then speed = speed * (hw.cores / threads) ^ 0.5 end
  local cpu_token = gpu_token * 10 / speed
  local token = (1 - on_cpu) * gpu_token + on_cpu * cpu_token
  -- prompt evaluation and loading scale with token_delay up to its default
  -- only: a test that slows the stream to watch it does not wait seconds
  -- before the first token
  local base = math.min(hw.delay, 0.005) / hw.delay
  if hw.delay == 0 then base = 0 end
  local kept = math.min(prompt_tokens, ctx)
  local prompt = (math.ceil(kept / batch) * gpu_token * 0.6 + kept * token / 25) * base
  local config = table.concat({ model, ctx, batch, threads }, "|")
  local load = config ~= loaded and weights * 0.02 * math.min(hw.delay, 0.005) / 0.005 or 0
  return { load = load, prompt = prompt, token = token, kept = kept, config = config, on_cpu = on_cpu,
    small = b < 3 }
end

local function jitter() return 1 + 0.04 * (2 * math.random() - 1) end

return function(config_text)
  local config = json.decode(config_text ~= "" and config_text or "{}") or {}
  local delay = config.token_delay or 0.005
  local hw = { delay = delay, vram_gb = config.vram_gb or 6, cores = config.cores or 8 }
  -- The installed models are shared by the server's worker threads (each
  -- has its own Lua state): process-wide counters, 1 per installed model,
  -- named after this server (config.state); seeded once, changed by
  -- /api/pull and /api/delete under a process-wide lock.
  local prefix = "ollama-sim|" .. tostring(config.state or "default") .. "|"
  local lock = sys.mutex(prefix)
  lock:lock()
  if not sys.counters()[prefix] then
    for _, name in ipairs(config.models or { "llama3", "llava", "mistral" }) do
      if full_name(name) then sys.counter_add(prefix .. full_name(name), 1) end
    end
    sys.counter_add(prefix, 1)
  end
  lock:unlock()

  local function entry(name)
    return { name = name, model = name, modified_at = iso(), size = 4661224676, digest = crypto.hex(crypto.sha256(name)),
      details = { format = "gguf", family = "aitbc-sim", families = json.array { "aitbc-sim" },
        parameter_size = "8B", quantization_level = "Q4_0" } }
  end
  local function find(name)
    name = full_name(name)
    if name and (sys.counters()[prefix .. name] or 0) > 0 then return entry(name) end
  end
  local function installed()
    local names = {}
    for key, n in pairs(sys.counters()) do
      if n > 0 and #key > #prefix and key:sub(1, #prefix) == prefix then names[#names + 1] = key:sub(#prefix + 1) end
    end
    table.sort(names)
    local list = json.array()
    for i, name in ipairs(names) do list[i] = entry(name) end
    return list
  end
  --- Installs (pull) or removes (delete) a model; whether it changed anything.
  local function set_installed(name, on)
    lock:lock()
    local was = (sys.counters()[prefix .. name] or 0) > 0
    if was ~= on then sys.counter_add(prefix .. name, on and 1 or -1) end
    lock:unlock()
    return was ~= on
  end
  -- the configuration in memory (model, num_ctx, num_batch, num_thread),
  -- shared by the worker threads as a process-wide counter holding its hash
  local loaded_key = "ollama-sim-loaded|" .. tostring(config.state or "default") -- not under prefix: not a model
  local function swap_loaded(cfg)
    local h = string.unpack("<I4", crypto.sha256(cfg)) + 1
    lock:lock()
    local was = sys.counters()[loaded_key] or 0
    if was ~= h then sys.counter_add(loaded_key, h - was) end
    lock:unlock()
    return was == h
  end
  local function reply(status, body)
    return { status = status, headers = { ["Content-Type"] = "application/json" }, body = json.encode(body) }
  end
  local function missing(name)
    return reply(404, { error = string.format("model \"%s\" not found, try pulling it first", tostring(name)) })
  end

  --- What a request costs here (the whole prompt: system and earlier
  -- turns too), and the prompt the model sees: cut from the start to
  -- num_ctx, as Ollama truncates.
  local function charge(body, chat, messages, prompt, model_name)
    local all = {}
    if chat then
      for _, m in ipairs(messages) do all[#all + 1] = tostring(m.content or "") end
    else
      all = { tostring(body.system or ""), tostring(prompt or "") }
    end
    local full = table.concat(all, "\n")
    local options = type(body.options) == "table" and body.options or {}
    local cost = costs(hw, model_name, options, #full // 4 + 1, nil)
    cost.load = swap_loaded(cost.config) and 0 or cost.load
    if cost.kept < #full // 4 + 1 then -- truncated: the model sees only the end
      local seen = full:sub(-cost.kept * 4)
      prompt = #seen < #tostring(prompt or "") and seen or prompt
    end
    body.small = cost.small
    return cost, prompt
  end

  --- What the model says: tokens, or a tool call (and no tokens).
  local function decide(body, chat, messages, prompt, images)
    local used_tools = false
    for _, m in ipairs(messages) do if m.role == "tool" then used_tools = true end end
    if chat and used_tools then return answer_from_tools(messages) end
    if chat and type(body.tools) == "table" and #body.tools > 0 then
      local name, args = choose_tool(messages, body.tools)
      if name then return {}, { ["function"] = { name = name, arguments = args } } end
    end
    if body.format == "json" then return { json_answer(prompt) } end
    local options = type(body.options) == "table" and body.options or {}
    local limit = math.tointeger(options.num_predict)
    local t = tonumber(options.temperature) or 0.8
    return answer(prompt, images, limit, { small = body.small, wander = t > 1 and (t - 1) or nil })
  end

  --- A generate or chat answer, streamed as NDJSON or whole; a chat that
  -- offers tools may get one tool call instead.
  local function respond(body, chat)
    local model = find(body.model)
    if not model then return missing(body.model) end
    local prompt, images = body.prompt, body.images
    local messages = chat and type(body.messages) == "table" and body.messages or {}
    if chat then
      local last = messages[#messages] or {}
      prompt, images = last.content, last.images
    end
    if prompt == "__simulate_failure__" then return reply(500, { error = "simulated inference failure" }) end
    if images and #images > 0 and not model.name:find("llava") then
      return reply(400, { error = "model \"" .. model.name .. "\" does not support images" })
    end
    local cost
    cost, prompt = charge(body, chat, messages, prompt, model.name)
    local tokens, tool_call = decide(body, chat, messages, prompt, images)
    local load_s, prompt_s = cost.load * jitter(), cost.prompt * jitter()
    local eval_s = 0
    local function token_time()
      local t = cost.token * jitter()
      eval_s = eval_s + t
      return t
    end
    local function chunk(text, done)
      local obj = { model = model.name, created_at = iso(), done = done }
      if chat then obj.message = { role = "assistant", content = text } else obj.response = text end
      if done then
        local ns = function(x) return math.max(1, math.floor(x * 1e9)) end
        obj.done_reason = "stop"
        obj.load_duration, obj.prompt_eval_duration, obj.eval_duration = ns(load_s), ns(prompt_s), ns(eval_s)
        obj.total_duration = ns(load_s + prompt_s + eval_s) + 200000
        obj.prompt_eval_count = cost.kept
        obj.eval_count = math.max(#tokens, 1)
      end
      return json.encode(obj)
    end
    if load_s + prompt_s > 0 then sys.sleep(load_s + prompt_s) end
    if body.stream == false then
      local total = 0
      for _ = 1, math.max(#tokens, 1) do total = total + token_time() end
      if total > 0 then sys.sleep(total) end
      local final = json.decode(chunk("", true))
      if chat then
        final.message.content = table.concat(tokens)
        if tool_call then final.message.tool_calls = json.array { tool_call } end
      else
        final.response = table.concat(tokens)
      end
      return { status = 200, headers = { ["Content-Type"] = "application/json" }, body = json.encode(final) }
    end
    -- streamed: content token by token; a tool call arrives whole in one chunk
    local i = 0
    return { status = 200, headers = { ["Content-Type"] = "application/x-ndjson" }, stream = function()
      i = i + 1
      if tool_call and i == 1 then
        local obj = json.decode(chunk("", false))
        obj.message.tool_calls = json.array { tool_call }
        return json.encode(obj) .. "\n"
      end
      local n = tool_call and i - 1 or i
      if n > #tokens + 1 then return nil end
      if n <= math.max(#tokens, 1) then
        local t = token_time()
        if t > 0 then sys.sleep(t) end
      end
      if n == #tokens + 1 then return chunk("", true) .. "\n" end
      return chunk(tokens[n], false) .. "\n"
    end }
  end

  --- DELETE /api/delete, as `ollama rm`.
  local function delete(body)
    local name = full_name(body.model or body.name)
    if not (name and set_installed(name, false)) then
      return reply(404, { error = string.format("model '%s' not found", tostring(body.model or body.name)) })
    end
    return { status = 200, headers = {}, body = "" }
  end

  --- POST /api/pull, as `ollama pull`: instant, nothing is downloaded.
  local function pull(body)
    local name = full_name(body.model or body.name)
    if not name then return reply(400, { error = "model is required" }) end
    set_installed(name, true)
    if body.stream == false then return reply(200, { status = "success" }) end
    local digest = "sha256:" .. crypto.hex(crypto.sha256(name))
    local lines = { { status = "pulling manifest" }, { status = "pulling " .. digest:sub(8, 19), digest = digest,
      total = 4661224676, completed = 4661224676 }, { status = "verifying sha256 digest" },
      { status = "writing manifest" }, { status = "success" } }
    for i, l in ipairs(lines) do lines[i] = json.encode(l) .. "\n" end
    return { status = 200, headers = { ["Content-Type"] = "application/x-ndjson" }, body = table.concat(lines) }
  end

  return function(req)
    local path = req.path
    if req.method == "GET" and (path == "/" or path == "") then
      return { status = 200, headers = { ["Content-Type"] = "text/plain" }, body = "Ollama is running (aitbc simulated)" }
    elseif req.method == "GET" and path == "/api/version" then
      return reply(200, { version = "0.5.0-aitbc-simulated" })
    elseif req.method == "GET" and path == "/api/tags" then
      return reply(200, { models = installed() })
    end
    if req.method ~= "POST" and not (req.method == "DELETE" and path == "/api/delete") then
      return reply(405, { error = "method not allowed" })
    end
    local body = json.decode(req.body)
    if type(body) ~= "table" then return reply(400, { error = "invalid JSON body" }) end
    if path == "/api/delete" then return delete(body) elseif path == "/api/pull" then return pull(body) end
    if path == "/api/show" then
      local model = find(body.model or body.name)
      if not model then return missing(body.model or body.name) end
      local caps = model.name:find("llava") and { "completion", "vision" } or { "completion", "tools" }
      return reply(200, { details = model.details, modelfile = "# aitbc simulated model", parameters = "", template = "",
        capabilities = json.array(caps), model_info = { ["general.architecture"] = "aitbc-sim" } })
    elseif path == "/api/generate" then
      return respond(body, false)
    elseif path == "/api/chat" then
      return respond(body, true)
    end
    return reply(404, { error = "no route " .. path })
  end
end
