--- Ollama's HTTP API: models, generate and chat with NDJSON streaming
-- delivered token by token, cancellation, and the final statistics.
--   local ollama = require("aitbc.ollama").new(url)   -- default: OLLAMA_HOST
--   local final, err = ollama:generate { model = "llama3", prompt = "Hi",
--     on_token = function(text) io.write(text) end }   -- return false to stop
-- err is an aitbc error: network (exit 5) when Ollama is down, not_found
-- when the model is missing.
local errors = require "aitbc.errors"
local http = require "aitbc.http"
local json = require "aitbc.json"
local sys = require "aitbc.sys"

local M = { DEFAULT = "http://127.0.0.1:11434" }

local Client = {}
Client.__index = Client

--- OLLAMA_HOST as Ollama reads it: "host:port", "http://host:port", ":port"
-- (nil: OLLAMA_HOST, else the default).  Commands pass the `ollama_url`
-- setting (flag > OLLAMA_HOST > config file > default).
function M.normalize(url)
  url = url or sys.getenv("OLLAMA_HOST") or ""
  if url == "" then return M.DEFAULT end
  return require("aitbc.config").ollama_url(url) or url
end

function M.new(url, opts)
  opts = opts or {}
  return setmetatable({ url = M.normalize(url), timeout = opts.timeout or 600 }, Client)
end

local function unreachable(self, err)
  local reason = err.message:match("%((.-)%)$") or err.message
  return errors.new("network", "cannot reach Ollama at " .. self.url .. " (" .. reason .. ")",
    "start it with 'ollama serve', or point --ollama-url, OLLAMA_HOST or 'aitbc config set ollama_url URL' at it",
    { code = "ollama_unreachable" })
end

local function failure(self, res, model)
  local body = res.body and json.decode(res.body)
  local message = type(body) == "table" and body.error or ("HTTP " .. res.status)
  if res.status == 404 then
    return errors.new("not_found", "Ollama at " .. self.url .. ": " .. message,
      model and ("pull it with 'ollama pull " .. model .. "', or pick one from 'aitbc ollama models'") or nil,
      { code = "model_not_found" })
  end
  return errors.new("failure", "Ollama at " .. self.url .. ": " .. message, nil, { code = "ollama_error" })
end

function Client:get(path)
  local res, err = http.request { url = self.url .. path, timeout = 10, connect_timeout = 3 }
  if not res then return nil, unreachable(self, err) end
  if res.status ~= 200 then return nil, failure(self, res) end
  return json.decode(res.body)
end

--- The server's version, and whether it is aitbc's simulated Ollama.
function Client:version()
  local v, err = self:get("/api/version")
  if not v then return nil, err end
  return v.version, (v.version or ""):find("aitbc%-simulated") ~= nil
end

--- Installed models: list of {name, size, details}.
function Client:models()
  local tags, err = self:get("/api/tags")
  if not tags then return nil, err end
  return tags.models or {}
end

--- What Ollama says of a model (/api/show): its details and capabilities
-- (completion, tools, vision, ...; absent before Ollama 0.6) | nil, err.
function Client:show(name)
  local res, err = http.request { method = "POST", url = self.url .. "/api/show", json = { model = name }, timeout = 10,
    connect_timeout = 3 }
  if not res then return nil, unreachable(self, err) end
  if res.status ~= 200 then return nil, failure(self, res, name) end
  return json.decode(res.body)
end

--- The installed model matching name ("llama3" matches "llama3:latest").
function Client:find_model(name)
  local models, err = self:models()
  if not models then return nil, err end
  local want = name:lower():gsub(":latest$", "")
  for _, m in ipairs(models) do
    if m.name:lower():gsub(":latest$", "") == want then return m end
  end
  local names = {}
  for _, m in ipairs(models) do names[#names + 1] = m.name end
  return nil, errors.new("not_found", "Ollama at " .. self.url .. " has no model " .. name,
    #names > 0 and ("installed: " .. table.concat(names, ", ") .. "; or pull it with 'ollama pull " .. name .. "'")
      or ("no models are installed; pull one with 'ollama pull " .. name .. "'"), { code = "model_not_found" })
end

--- POSTs a streaming request; calls on_chunk(decoded line) per NDJSON line.
-- Returns the final (done) object with tokens_per_second added.
function Client:stream(path, body, on_chunk, opts)
  opts = opts or {}
  local pending, final, stream_err, canceled = "", nil, nil, false
  local function line(text)
    if text == "" then return true end
    local obj = json.decode(text)
    if type(obj) ~= "table" then stream_err = "Ollama sent a line that is not JSON: " .. text:sub(1, 80) return false end
    if obj.error then stream_err = tostring(obj.error) return false end
    if obj.done then final = obj end
    if on_chunk(obj) == false then canceled = true return false end
    return true
  end
  local res, err = http.request {
    method = "POST", url = self.url .. path, json = body, timeout = opts.timeout or self.timeout, connect_timeout = 3,
    ignore_interrupt = opts.ignore_interrupt,
    on_data = function(chunk)
      pending = pending .. chunk
      while true do
        local nl = pending:find("\n", 1, true)
        if not nl then break end
        local text = pending:sub(1, nl - 1)
        pending = pending:sub(nl + 1)
        if not line(text) then return false end
      end
    end,
  }
  if canceled then return nil, errors.new("interrupted", "canceled", nil, { code = "canceled" }) end
  if stream_err then
    return nil, errors.new("failure", "Ollama at " .. self.url .. ": " .. stream_err, nil, { code = "ollama_error" })
  end
  if not res then return nil, unreachable(self, err) end
  if res.status ~= 200 then
    res.body = pending
    return nil, failure(self, res, body.model)
  end
  if pending ~= "" then line(pending) end
  if not final then
    return nil, errors.new("failure", "Ollama's stream ended without a final message", nil, { code = "ollama_error" })
  end
  if (final.eval_count or 0) > 0 and (final.eval_duration or 0) > 0 then
    final.tokens_per_second = final.eval_count / (final.eval_duration / 1e9)
  end
  return final
end

--- generate{model, prompt, system, images (raw bytes), options, on_token}
-- -> final {response (whole text), eval_count, ...} | nil, err
function Client:generate(req)
  local images
  for i, img in ipairs(req.images or {}) do
    images = images or {}
    images[i] = require("aitbc.crypto").base64(img)
  end
  local parts = {}
  local final, err = self:stream("/api/generate", {
    model = req.model, prompt = req.prompt, system = req.system, images = images and json.array(images),
    options = req.options, stream = true,
  }, function(obj)
    if obj.response and obj.response ~= "" then
      parts[#parts + 1] = obj.response
      if req.on_token then return req.on_token(obj.response) end
    end
  end, req)
  if not final then return nil, err end
  final.response = table.concat(parts)
  return final
end

--- chat{model, messages = {{role, content, images (base64)}}, tools, format,
-- options, on_token} -> final with message = {role = "assistant", content =
-- whole text, tool_calls = {{function = {name, arguments}}} | nil}.  A
-- streamed tool call arrives whole in one chunk (Ollama 0.8+); some models
-- put it in the content instead, as JSON: the agent workflows read both.
function Client:chat(req)
  local parts, calls = {}, {}
  local final, err = self:stream("/api/chat", { model = req.model, messages = json.array(req.messages),
    tools = req.tools and #req.tools > 0 and json.array(req.tools) or nil, format = req.format,
    options = req.options, stream = true }, function(obj)
    local message = obj.message or {}
    for _, call in ipairs(message.tool_calls or {}) do calls[#calls + 1] = call end
    local text = message.content
    if text and text ~= "" then
      parts[#parts + 1] = text
      if req.on_token then return req.on_token(text) end
    end
  end, req)
  if not final then return nil, err end
  final.message = { role = "assistant", content = table.concat(parts), tool_calls = #calls > 0 and calls or nil }
  return final
end

return M
