--- Client for the AITBC node's HTTP API, shared by commands and scripts.
--   local api = require("aitbc.api").new{url = ..., api_key = ..., timeout = 30}
--   local data, err = api:request("GET", "/v1/jobs/" .. id)   -- non-raising
--   local data = api:call("POST", "/v1/jobs", {json = body})  -- raises
-- Errors are aitbc errors whose kind gives the exit code: 401/403 -> auth,
-- 404 -> not_found, other 4xx/5xx -> failure, transport -> network.
-- Idempotent requests (GET, HEAD, PUT, DELETE) are retried on a dropped
-- connection or 502/503/504; others never are.
local errors = require "aitbc.errors"
local http = require "aitbc.http"
local sys = require "aitbc.sys"

local M = {}

local Client = {}
Client.__index = Client

function M.new(opts)
  return setmetatable({
    url = (opts.url or "http://127.0.0.1:8000"):gsub("/+$", ""),
    api_key = opts.api_key,
    timeout = opts.timeout or 30,
    retries = opts.retries or 2,
  }, Client)
end

--- A client configured from a command's context (flags, env, config).
-- opts.role picks the key for that role (see aitbc.keys); opts.api_key and
-- opts.url override.
function M.from_context(ctx, opts)
  opts = opts or {}
  local keys = require "aitbc.keys"
  return M.new {
    url = opts.url or keys.url(ctx),
    api_key = opts.api_key or keys.resolve(ctx, opts.role),
    timeout = ctx.settings.timeout,
  }
end

local IDEMPOTENT = { GET = true, HEAD = true, PUT = true, DELETE = true, OPTIONS = true }
local RETRY_STATUS = { [502] = true, [503] = true, [504] = true }

local function server_message(res)
  local body = res.json
  if type(body) == "table" then
    if type(body.error) == "table" then return body.error.message or body.error.code, body.error end
    if type(body.detail) == "table" then return require("aitbc.json").encode(body.detail) end
    if body.detail then return tostring(body.detail) end
    if type(body.error) == "string" then return body.error end
  end
  local text = (res.body or ""):sub(1, 200)
  return text ~= "" and text or ("HTTP " .. res.status)
end

local function status_error(res, method, path)
  local message, detail = server_message(res)
  local status = res.status
  local kind = "failure"
  local hint
  if status == 401 then
    kind, hint = "auth", "the node did not accept the API key; set one with --api-key, AITBC_API_KEY or 'aitbc auth'"
  elseif status == 403 then
    -- the role hint fits a role refusal, not a refusal with its own reason (a faucet that is off)
    kind = "auth"
    if not detail or detail.code == "forbidden" then hint = "this API key's role may not do that" end
  elseif status == 404 then
    kind = "not_found"
  elseif status == 429 then
    hint = "rate limited; retry in " .. (res.headers["retry-after"] or "a few") .. " seconds"
  elseif status >= 500 then
    hint = "the node failed; its log (aitbc serve --data-dir .../node.log) has details"
  end
  return errors.new(kind, message, hint, {
    code = detail and detail.code or ("http_" .. status), status = status,
    field = detail and detail.field, request = method .. " " .. path,
  })
end

--- request(method, path, {query, json, body, headers, timeout, ignore_interrupt}) ->
--  data (decoded JSON or the raw body), response | nil, err
function Client:request(method, path, opts)
  opts = opts or {}
  local headers = { Accept = "application/json" }
  if self.api_key and self.api_key ~= "" then headers["X-Api-Key"] = self.api_key end
  for k, v in pairs(opts.headers or {}) do headers[k] = v end
  local url = http.with_query(self.url .. path, opts.query)
  local attempts = IDEMPOTENT[method] and (self.retries + 1) or 1
  local res, err
  for attempt = 1, attempts do
    res, err = http.request { method = method, url = url, headers = headers, json = opts.json, body = opts.body,
      timeout = opts.timeout or self.timeout, on_data = opts.on_data, ignore_interrupt = opts.ignore_interrupt }
    local transient = (not res and err.code ~= "interrupted" and err.code ~= "url" and err.code ~= "timeout")
      or (res and RETRY_STATUS[res.status])
    if not transient or attempt == attempts then break end
    sys.sleep(0.2 * 2 ^ (attempt - 1))
  end
  if not res then return nil, err end
  if res.status >= 400 then return nil, status_error(res, method, path) end
  if res.json ~= nil then return res.json, res end
  return res.body, res
end

--- Like request, but raises the error.
function Client:call(method, path, opts)
  local data, res = self:request(method, path, opts)
  if data == nil then error(res, 0) end
  return data, res
end

return M
