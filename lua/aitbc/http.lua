--- HTTP client: the native libcurl binding plus URL and JSON helpers.
-- Two faces, like Redis call/pcall: `http.request` returns nil, err on a
-- transport failure; `http.call` raises an aitbc error (exit code 5).
local native = require "aitbc.native.http"
local errors = require "aitbc.errors"
local json = require "aitbc.json"
local monotonic = require("aitbc.native.sys").monotonic

local http = { request_many = native.request_many, curl_version = native.curl_version }

--- http.trace(stage, req, res | nil, err | nil, seconds): when set (the
-- CLI's -v, aitbc.cli.trace), called with "request" before each request
-- and "response" after it, with the response or the error.
http.trace = nil

function http.escape(s)
  return (tostring(s):gsub("[^%w%-%._~]", function(c) return string.format("%%%02X", c:byte()) end))
end

--- Appends ?k=v&... (sorted, escaped; nil values skipped) to a URL.
function http.with_query(url, query)
  if not query then return url end
  local keys = {}
  for k, v in pairs(query) do if v ~= nil then keys[#keys + 1] = k end end
  if #keys == 0 then return url end
  table.sort(keys)
  local parts = {}
  for _, k in ipairs(keys) do parts[#parts + 1] = http.escape(k) .. "=" .. http.escape(query[k]) end
  return url .. (url:find("?", 1, true) and "&" or "?") .. table.concat(parts, "&")
end

--- request{method, url, headers, body|json, timeout, ...} -> res | nil, err
-- `json = table` sends it as the body with Content-Type application/json.
-- A response whose Content-Type is JSON gets `res.json` decoded.
function http.request(req)
  if req.json ~= nil then
    local headers = {}
    for k, v in pairs(req.headers or {}) do headers[k] = v end
    headers["Content-Type"] = "application/json"
    local copy = {}
    for k, v in pairs(req) do copy[k] = v end
    copy.body, copy.headers, copy.json = json.encode(req.json), headers, nil
    req = copy
  end
  local trace, started = http.trace, nil
  if trace then
    started = monotonic()
    trace("request", req)
  end
  local res, message, kind = native.request(req)
  local err = not res and errors.from_http(message, kind, req.url) or nil
  if trace then trace("response", req, res, err, monotonic() - started) end
  if not res then return nil, err end
  local ctype = res.headers["content-type"] or ""
  if res.body and ctype:find("json", 1, true) then res.json = json.decode(res.body) end
  return res
end

function http.call(req)
  local res, err = http.request(req)
  if not res then error(err, 0) end
  return res
end

return http
