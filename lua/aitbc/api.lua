--- Client for the AITBC node's HTTP API, shared by commands and scripts.
--   local api = require("aitbc.api").new{url = ..., api_key = ..., timeout = 30}
--   local path = api.path("/v1/jobs/{job_id}", {job_id = id})   -- every value escaped
--   local data, err = client:request("GET", path)                -- non-raising
--   local data = client:call("POST", "/v1/jobs", {json = body, expect = {job_id = "string"}})  -- raises
-- Errors are aitbc errors whose kind gives the exit code: 401/403 -> auth,
-- 404 -> not_found, other 4xx/5xx -> failure, transport -> network, and a
-- reply without what `expect` asks for -> failure naming the route and field.
-- Idempotent requests (GET, HEAD, PUT, DELETE) are retried on a dropped
-- connection or 502/503/504; others never are.
local errors = require "aitbc.errors"
local http = require "aitbc.http"
local json = require "aitbc.json"
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
-- opts.role picks the key for that role (see aitbc.auth.keys); opts.api_key and
-- opts.url override.  The client remembers where its key came from and the
-- role it was chosen for, so that a refusal can say so.
function M.from_context(ctx, opts)
  opts = opts or {}
  local keys = require "aitbc.auth.keys"
  local key, source = opts.api_key, opts.api_key and "given by the caller"
  if not key then key, source = keys.resolve(ctx, opts.role) end
  local client = M.new { url = opts.url or keys.url(ctx), api_key = key, timeout = ctx.settings.timeout }
  client.key_source, client.role = source, opts.role
  client.page = ctx.page -- a list command's --limit/--offset, for the route its declaration names
  return client
end

--- The query of a GET to the paged route with --limit/--offset added
-- (what the command set itself wins).
local function paged_query(page, method, path, query)
  if not page or method ~= "GET" then return query end
  local pattern = "^" .. page.route:gsub("[%-%.%+%*%?%^%$%%]", "%%%0"):gsub("{[%w_]+}", "[^/]+") .. "$"
  if not path:match(pattern) then return query end
  local q = {}
  for k, v in pairs(query or {}) do q[k] = v end
  if q.limit == nil then q.limit = page.limit end
  if q.offset == nil and page.offset and page.offset > 0 then q.offset = page.offset end
  return q
end

--- A path from a template: path("/v1/jobs/{job_id}/result", {job_id = id}).
-- Each value becomes exactly one path segment: percent-encoded, "." and
-- ".." encoded too (libcurl would collapse them), and refused with a usage
-- error when empty or holding "/" (servers decode %2F before routing, so no
-- encoding keeps a "/" inside one segment).  Query values go through
-- request's opts.query, which encodes them the same way.
function M.path(template, values)
  return (template:gsub("{([%w_]+)}", function(name)
    local value = values[name]
    assert(value ~= nil, "api.path: no value for {" .. name .. "}")
    value = tostring(value)
    local label = name:gsub("_", " ")
    if value == "" then errors.raise("usage", label .. " may not be empty", nil, { code = "invalid_value", field = name }) end
    if value:find("/", 1, true) then
      errors.raise("usage", label .. " '" .. value .. "' may not contain '/'", "check the " .. label .. " you typed",
        { code = "invalid_value", field = name })
    end
    if value == "." or value == ".." then return (value:gsub("%.", "%%2E")) end
    return http.escape(value)
  end))
end

local WANTS = { string = "a string", number = "a number", integer = "an integer", boolean = "true or false",
  object = "an object", array = "a list", scalar = "a string or a number", any = "a value",
  id = "an id (text without '/')", time = "an ISO 8601 time such as 2025-01-31T12:00:00Z" }

local function has_type(v, want)
  if want == "any" then return true end
  if want == "id" then return type(v) == "string" and v ~= "" and not v:find("/", 1, true) end
  if want == "time" then return type(v) == "string" and v:match("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d") ~= nil end
  if want == "integer" then return math.type(v) == "integer" end
  if want == "scalar" then return type(v) == "string" or type(v) == "number" end
  if want == "object" then return type(v) == "table" and (next(v) == nil or not json.is_array(v)) end
  if want == "array" then return type(v) == "table" and (next(v) == nil or json.is_array(v)) end
  return type(v) == want
end

local function kind_of(v)
  if type(v) == "table" then return json.is_array(v) and "a list" or "an object" end
  return "a " .. type(v)
end

--- A spec's parts: the type wanted, the inner spec, whether it may be absent.
local function spec_parts(spec)
  local want, inner
  if type(spec) == "string" then want = spec
  elseif type(spec[1]) == "string" then want, inner = spec[1], spec[2]
  else want, inner = "object", spec end
  local optional = want:sub(-1) == "?"
  if optional then want = want:sub(1, -2) end
  return want, inner, optional
end

--- "'where' is a list, expected an object with a, b" (naming the required fields).
local function wrong_type(value, want, inner, name)
  local fields = {}
  if want == "object" and type(inner) == "table" then
    for f, fs in pairs(inner) do -- the required ones
      local _, _, optional = spec_parts(fs)
      if not optional then fields[#fields + 1] = f end
    end
    table.sort(fields)
  end
  return string.format("%s is %s, expected %s%s", name, kind_of(value), WANTS[want],
    #fields > 0 and (" with " .. table.concat(fields, ", ")) or "")
end

local check

local function check_inner(value, want, inner, where, problems)
  if want == "object" then
    local names = {}
    for f in pairs(inner) do names[#names + 1] = f end
    table.sort(names) -- the same order every time
    for _, f in ipairs(names) do check(value[f], inner[f], where and (where .. "." .. f) or f, problems) end
  elseif want == "array" then
    for i, item in ipairs(value) do
      local before = #problems
      check(item, inner, (where or "") .. "[" .. i .. "]", problems)
      if #problems > before then break end
    end
  end
end

--- Walks value against spec, adding what is wrong to `problems` as
-- {field, text}; a list stops at its first wrong item.
-- spec: "type" or "type?" (absent or null allowed) with type one of string,
-- number, integer, boolean, scalar, id (one path segment), time (ISO 8601),
-- object, array, any; a table {field = spec} for an object; {"array", spec}
-- for a list of spec; {"object?", {fields}} for an optional object.
check = function(value, spec, where, problems)
  local want, inner, optional = spec_parts(spec)
  local name = where and ("'" .. where .. "'") or "the reply"
  if value == nil or value == json.null then
    if not optional then problems[#problems + 1] = { where, name .. " is missing, expected " .. WANTS[want] } end
  elseif not has_type(value, want) then
    problems[#problems + 1] = { where, wrong_type(value, want, inner, name) }
  elseif inner then
    check_inner(value, want, inner, where, problems)
  end
end

--- Checks that a node's reply holds what the caller will read (see check
-- for the spec); returns the reply | nil, err naming the route and fields.
function M.check_reply(reply, route, spec)
  local problems = {}
  check(reply, spec, nil, problems)
  if #problems == 0 then return reply end
  local texts = {}
  for i = 1, math.min(#problems, 4) do texts[i] = problems[i][2] end
  if #problems > 4 then texts[#texts + 1] = (#problems - 4) .. " more" end
  return nil, errors.new("failure", "unexpected reply from " .. route .. ": " .. table.concat(texts, "; "),
    "is --url an AITBC node of this version?"
      .. (route:match("^GET ") and (" 'aitbc api " .. route:sub(5) .. "' shows the whole reply") or ""),
    { code = "bad_reply", field = problems[1][1], request = route })
end

--- Like check_reply, but raises.
function M.expect(reply, route, spec)
  local ok, err = M.check_reply(reply, route, spec)
  if not ok then error(err, 0) end
  return reply
end

local IDEMPOTENT = { GET = true, HEAD = true, PUT = true, DELETE = true, OPTIONS = true }
local RETRY_STATUS = { [502] = true, [503] = true, [504] = true }

--- The message of an error reply, and its error object when there is one:
-- only strings are taken from it (a peer may send anything).
local function server_message(res)
  local body = res.json
  local function str(v) return (type(v) == "string" or type(v) == "number") and tostring(v) or nil end
  if type(body) == "table" then
    if type(body.error) == "table" then
      local e = body.error
      local detail = { code = str(e.code), field = str(e.field) }
      return str(e.message) or detail.code or ("HTTP " .. res.status), detail
    end
    if type(body.detail) == "table" then return json.encode(body.detail) end
    if str(body.detail) then return str(body.detail) end
    if str(body.error) then return str(body.error) end
  end
  local text = (res.body or ""):sub(1, 200)
  return text ~= "" and text or ("HTTP " .. res.status)
end

--- "API key key_0ed546631f4eb5de (aitbc_…1a2b, from env AITBC_API_KEY)", or "no API key".
local function key_words(client)
  if not client.api_key or client.api_key == "" then return "no API key" end
  local apikey = require "aitbc.protocol.apikey"
  return string.format("API key %s (%s%s)", (apikey.identity(client.api_key)), apikey.mask(client.api_key),
    client.key_source and (", from " .. client.key_source) or "")
end

--- "a client", "an admin"
local function a(word) return (word:match("^[aeiou]") and "an " or "a ") .. word end

--- How to give a key of `role`: its variable, or import one.
local function key_hint(role)
  if not role then return "pass --api-key KEY, set AITBC_API_KEY, or store keys with 'aitbc auth import-env'" end
  local var = require("aitbc.auth.keys").ROLE_VAR[role] or "AITBC_API_KEY"
  return string.format("use %s key: --api-key KEY, %s=KEY, or 'aitbc auth import-env --key-type %s'", a(role), var, role)
end

--- 401: no key, or one the node does not accept (unknown, revoked, expired).
local function refused(client, message, fields)
  local needed = client.role
  fields.required_role = needed
  if fields.code == "missing_api_key" or not fields.key_id then
    local which = needed and (a(needed) .. " ") or "an "
    return errors.new("auth", fields.request .. " needs " .. which .. "API key and none was sent"
      .. (fields.code ~= "missing_api_key" and (": " .. message) or ""), key_hint(needed), fields)
  end
  return errors.new("auth", "the node refused " .. key_words(client) .. ": " .. message, key_hint(needed), fields)
end

--- 403: a key of the wrong role; the node's message names both ("a client
-- key may not use GET /v1/admin/stats (needs a admin key)").  A refusal
-- with its own reason (a faucet that is off) keeps it.
local function forbidden(client, message, fields)
  if fields.code ~= "forbidden" and not fields.code:find("^http_") then return errors.new("auth", message, nil, fields) end
  local has = message:match("^an? (%w+) key may not")
  local needs = message:match("needs an? ([%w ]-) key%)?$")
  if not needs then -- not the node's role refusal: its words, and the key's
    return errors.new("auth", message .. " (" .. key_words(client) .. ")", "this API key may not do that", fields)
  end
  fields.required_role, fields.key_role = needs:match("^(%w+)"), has
  local text = string.format("%s is %s; %s needs %s", key_words(client), has and (a(has) .. " key") or "not allowed there",
    fields.request, a(needs) .. " key")
  return errors.new("auth", text, key_hint(fields.required_role), fields)
end

--- A 401 or 403 that names the key sent, where it came from, and the role the route needs.
local function auth_error(client, res, message, detail, method, path)
  local fields = { code = detail and detail.code or ("http_" .. res.status), status = res.status,
    field = detail and detail.field, request = method .. " " .. path, key_source = client.key_source,
    node_message = message }
  if client.api_key and client.api_key ~= "" then
    fields.key_id = (require("aitbc.protocol.apikey").identity(client.api_key))
  end
  if res.status == 401 then return refused(client, message, fields) end
  return forbidden(client, message, fields)
end

local function status_error(client, res, method, path)
  local message, detail = server_message(res)
  local status = res.status
  if status == 401 or status == 403 then return auth_error(client, res, message, detail, method, path) end
  local kind = "failure"
  local hint
  if status == 404 then
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

--- request(method, path, {query, json, body, headers, timeout, ignore_interrupt, expect}) ->
--  data (decoded JSON or the raw body), response | nil, err.  expect: what
--  the reply must hold (a spec for M.check_reply); checked unless it is a 204.
function Client:request(method, path, opts)
  opts = opts or {}
  local headers = { Accept = "application/json" }
  if self.api_key and self.api_key ~= "" then headers["X-Api-Key"] = self.api_key end
  for k, v in pairs(opts.headers or {}) do headers[k] = v end
  local url = http.with_query(self.url .. path, paged_query(self.page, method, path, opts.query))
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
  if res.status >= 400 then return nil, status_error(self, res, method, path) end
  local data = res.json
  if data == nil then data = res.body end
  if opts.expect and res.status ~= 204 then -- 204: no content, nothing to check
    local ok, bad = M.check_reply(data, method .. " " .. path, opts.expect)
    if not ok then return nil, bad end
  end
  return data, res
end

--- Like request, but raises the error.
function Client:call(method, path, opts)
  local data, res = self:request(method, path, opts)
  if data == nil then error(res, 0) end
  return data, res
end

return M
