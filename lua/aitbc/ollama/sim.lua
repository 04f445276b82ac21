--- A simulated Ollama server, for tests and the devnet where no Ollama can
-- run: the same routes (/api/version, /api/tags, /api/show, /api/generate,
-- /api/chat), the same fields and NDJSON streaming, and a small
-- deterministic "model" whose answer depends on the prompt (and on any
-- images).  It says what it is: /api/version reports "…-aitbc-simulated"
-- and every model's family is "aitbc-sim".
-- Run with `aitbc ollama serve-sim`; config (JSON): {models = {...}, token_delay = seconds}.
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

return function(config_text)
  local config = json.decode(config_text ~= "" and config_text or "{}") or {}
  local models = config.models or { "llama3:latest", "llava:latest", "mistral:latest" }
  local delay = config.token_delay or 0.005
  local installed = {}
  for _, name in ipairs(models) do
    if not name:find(":") then name = name .. ":latest" end
    installed[name] = {
      name = name, model = name, modified_at = iso(), size = 4661224676,
      digest = crypto.hex(crypto.sha256(name)),
      details = { format = "gguf", family = "aitbc-sim", families = json.array { "aitbc-sim" },
        parameter_size = "8B", quantization_level = "Q4_0" },
    }
  end
  local function find(name)
    if type(name) ~= "string" then return nil end
    return installed[name] or installed[name .. ":latest"]
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

  return function(req)
    local path = req.path
    if req.method == "GET" and (path == "/" or path == "") then
      return { status = 200, headers = { ["Content-Type"] = "text/plain" }, body = "Ollama is running (aitbc simulated)" }
    elseif req.method == "GET" and path == "/api/version" then
      return reply(200, { version = "0.5.0-aitbc-simulated" })
    elseif req.method == "GET" and path == "/api/tags" then
      local list = json.array()
      for _, name in ipairs(models) do list[#list + 1] = find(name) end
      return reply(200, { models = list })
    end
    if req.method ~= "POST" then return reply(405, { error = "method not allowed" }) end
    local body = json.decode(req.body)
    if type(body) ~= "table" then return reply(400, { error = "invalid JSON body" }) end
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
