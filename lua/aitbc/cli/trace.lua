--- -v and -vv: each HTTP request the command makes, on stderr.
--   -v   one line per request: method, URL, status (or the failure), time
--   -vv  also the request and response headers (API keys masked) and bodies
-- Keys are masked wherever they appear: the X-Api-Key header, and any text
-- shaped like an AITBC key (aitbc_<role>_<hex>) or equal to the key sent.
local http = require "aitbc.http"

local M = {}

local BODY_MAX = 4096 -- -vv shows this much of a body, then says how much more there was

local SECRET_HEADERS = { ["x-api-key"] = true, authorization = true, cookie = true, ["set-cookie"] = true }

local function mask(value)
  return require("aitbc.protocol.apikey").mask(value)
end

local function mask_text(text, sent_key)
  text = text:gsub("aitbc_%a+_%x+", function(k) return #k >= 20 and mask(k) or k end)
  if sent_key and #sent_key >= 8 then
    local at = 1
    repeat
      local i, j = text:find(sent_key, at, true)
      if i then text, at = text:sub(1, i - 1) .. mask(sent_key) .. text:sub(j + 1), i + 1 end
    until not i
  end
  return text
end
M.mask_text = mask_text

local function ms(seconds)
  return seconds < 1 and string.format("%.1f ms", seconds * 1000) or string.format("%.2f s", seconds)
end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t or {}) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b) return tostring(a):lower() < tostring(b):lower() end)
  return keys
end

local function header_lines(write, arrow, headers, sent_key)
  for _, k in ipairs(sorted_keys(headers)) do
    local v = tostring(headers[k])
    if SECRET_HEADERS[tostring(k):lower()] then v = mask(v) or "********" end
    write(arrow .. " " .. k .. ": " .. mask_text(v, sent_key))
  end
end

local function body_lines(write, arrow, body, sent_key)
  if body == nil or body == "" then return end
  local shown = body:sub(1, BODY_MAX)
  for line in (mask_text(shown, sent_key) .. "\n"):gmatch("(.-)\n") do write(arrow .. " " .. line) end
  if #body > BODY_MAX then write(arrow .. " … (" .. (#body - BODY_MAX) .. " more bytes)") end
end

local function sent_key_of(req)
  for k, v in pairs(req.headers or {}) do
    if tostring(k):lower() == "x-api-key" then return v end
  end
end

--- Traces every request through aitbc.http at `level` (1: a line each,
-- 2: headers and bodies) with write(line) (default: stderr).
function M.install(level, write)
  write = write or function(line) io.stderr:write(line, "\n") end
  if level <= 0 then
    http.trace = nil
    return
  end
  http.trace = function(stage, req, res, err, seconds)
    local method = req.method or "GET"
    local key = sent_key_of(req)
    local url = mask_text(req.url, key)
    if stage == "request" then
      if level >= 2 then
        write("> " .. method .. " " .. url)
        header_lines(write, ">", req.headers, key)
        body_lines(write, ">", req.body, key)
      end
      return
    end
    if res then
      write(string.format("* %s %s → %d (%s)", method, url, res.status, ms(seconds)))
      if level >= 2 then
        header_lines(write, "<", res.headers, key)
        body_lines(write, "<", res.body or (req.on_data and "(streamed to the command)") or nil, key)
      end
    else
      write(string.format("* %s %s → failed: %s (%s)", method, url, err and err.message or "?", ms(seconds)))
    end
  end
end

return M
