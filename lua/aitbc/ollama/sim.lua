--- A simulated Ollama server, for tests and the devnet where no Ollama can
-- run: the same routes (/api/version, /api/tags, /api/show, /api/generate,
-- /api/chat, /api/pull, /api/delete), the same fields and NDJSON streaming, and a small
-- deterministic "model" whose answer depends on the prompt (and on any
-- images).  It says what it is: /api/version reports "…-aitbc-simulated"
-- and every model's family is "aitbc-sim".
-- /api/pull and /api/delete install and remove models (instantly, nothing
-- is downloaded), as `ollama pull` and `ollama rm` do.
-- Run with `aitbc ollama serve-sim`; config (JSON): {models = {...},
-- token_delay = seconds, state = a name for this server's model list}.
local crypto = require "aitbc.crypto"
local json = require "aitbc.json"
local sys = require "aitbc.sys"

local VOCABULARY = {
  "compute", "network", "tokens", "miners", "inference", "GPU", "result", "ledger", "model", "proof",
  "latency", "throughput", "queue", "receipt", "block", "stake", "market", "price", "agent", "swarm",
}

local function iso() return os.date("!%Y-%m-%dT%H:%M:%S", math.floor(sys.time())) .. "Z" end

--- The answer, as tokens: a greeting or a summary of the prompt, then
-- words chosen by the prompt's hash.  Same prompt, same answer.
local function answer(prompt, images, limit)
  local tokens = {}
  local p = (prompt or ""):lower()
  if p:find("hello") or p:find("hi%f[%A]") then
    for _, w in ipairs { "Hello", "!", " I", " am", " the", " AITBC", " simulated", " model", "." } do tokens[#tokens + 1] = w end
  else
    local words = {}
    for w in (prompt or ""):gmatch("%w+") do words[#words + 1] = w end
    tokens[#tokens + 1] = "You"
    tokens[#tokens + 1] = " asked"
    tokens[#tokens + 1] = " about"
    for i = 1, math.min(#words, 6) do tokens[#tokens + 1] = " " .. words[i] end
    tokens[#tokens + 1] = "."
  end
  if images and #images > 0 then
    local bytes = 0
    for _, img in ipairs(images) do bytes = bytes + #(crypto.unbase64(img) or img) end
    for _, w in ipairs { " I", " see", " " .. #images, " image" .. (#images > 1 and "s" or ""), " (" .. bytes, " bytes)", "." } do
      tokens[#tokens + 1] = w
    end
  end
  local digest = crypto.sha256(prompt or "")
  for i = 1, 8 do tokens[#tokens + 1] = " " .. VOCABULARY[digest:byte(i) % #VOCABULARY + 1] end
  tokens[#tokens + 1] = "."
  while limit and #tokens > limit do table.remove(tokens) end
  return tokens
end

--- A model's full name: "llama3" is "llama3:latest".
local function full_name(name)
  if type(name) ~= "string" or name == "" then return nil end
  return name:find(":") and name or (name .. ":latest")
end

return function(config_text)
  local config = json.decode(config_text ~= "" and config_text or "{}") or {}
  local delay = config.token_delay or 0.005
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
  local function reply(status, body)
    return { status = status, headers = { ["Content-Type"] = "application/json" }, body = json.encode(body) }
  end
  local function missing(name)
    return reply(404, { error = string.format("model \"%s\" not found, try pulling it first", tostring(name)) })
  end

  --- A generate or chat answer, streamed as NDJSON or whole.
  local function respond(body, chat)
    local model = find(body.model)
    if not model then return missing(body.model) end
    local prompt, images = body.prompt, body.images
    if chat then
      local last = type(body.messages) == "table" and body.messages[#body.messages] or {}
      prompt, images = last.content, last.images
    end
    if prompt == "__simulate_failure__" then return reply(500, { error = "simulated inference failure" }) end
    local limit = type(body.options) == "table" and math.tointeger(body.options.num_predict) or nil
    local tokens = answer(prompt, images, limit)
    local started = sys.monotonic()
    local function chunk(text, done)
      local obj = { model = model.name, created_at = iso(), done = done }
      if chat then obj.message = { role = "assistant", content = text } else obj.response = text end
      if done then
        local elapsed = math.max(1, math.floor((sys.monotonic() - started) * 1e9))
        obj.done_reason = "stop"
        obj.total_duration, obj.load_duration = elapsed + 1000000, 1000000
        obj.prompt_eval_count = #tostring(prompt or "") // 4 + 1
        obj.prompt_eval_duration = 500000
        obj.eval_count, obj.eval_duration = #tokens, elapsed
      end
      return json.encode(obj)
    end
    if body.stream == false then
      if delay > 0 then sys.sleep(delay * #tokens) end
      local final = json.decode(chunk("", true))
      if chat then final.message.content = table.concat(tokens) else final.response = table.concat(tokens) end
      return { status = 200, headers = { ["Content-Type"] = "application/json" }, body = json.encode(final) }
    end
    local i = 0
    return { status = 200, headers = { ["Content-Type"] = "application/x-ndjson" }, stream = function()
      i = i + 1
      if i > #tokens + 1 then return nil end
      if delay > 0 then sys.sleep(delay) end
      if i == #tokens + 1 then return chunk("", true) .. "\n" end
      return chunk(tokens[i], false) .. "\n"
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
      return reply(200, { details = model.details, modelfile = "# aitbc simulated model", parameters = "", template = "" })
    elseif path == "/api/generate" then
      return respond(body, false)
    elseif path == "/api/chat" then
      return respond(body, true)
    end
    return reply(404, { error = "no route " .. path })
  end
end
