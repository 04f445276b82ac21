--- Handler for the test HTTP server: a recording proxy in front of a real
-- node, for tests/support/upstream/record.lua.  Config (JSON):
-- {node = "http://127.0.0.1:PORT", log = "FILE"}.  Every request goes on to
-- the node (its headers as sent, but those of the connection itself) and
-- the node's answer comes back unchanged; FILE gets one JSON line per
-- exchange: method, path and query (as the server hands them to a handler:
-- percent-decoded), the request headers (names in lower case, values as
-- sent), the body's exact bytes, and the node's status, content type and
-- body.
local compat = require "support.upstream.compat"
local http = require "aitbc.http"
local json = require "aitbc.json"
local sys = require "aitbc.sys"

-- the connection's own headers: curl writes its own for the hop to the node
local HOP = { host = true, ["content-length"] = true, connection = true, ["transfer-encoding"] = true,
  ["accept-encoding"] = true, expect = true }

local function append(file, line)
  local f = assert(io.open(file, "a"))
  f:write(line, "\n")
  f:close()
end

return function(config)
  local conf = json.decode(config)
  return function(req)
    local headers = {}
    for name, value in pairs(req.headers) do
      if not HOP[name] then headers[name] = value end
    end
    -- curl would add a form content type to a POST that names none; the
    -- node must see what the client sent
    if req.method ~= "GET" and not req.headers["content-type"] then headers["Content-Type"] = "" end
    local send_body = req.method ~= "GET" or req.body ~= ""
    local res, err = http.request { method = req.method, url = http.with_query(conf.node .. compat.encode_path(req.path), req.query),
      headers = headers, body = send_body and req.body or nil, timeout = 60 }
    local entry = { at = sys.time(), method = req.method, path = req.path, query = req.query, headers = req.headers,
      body = req.body }
    if res then
      entry.status, entry.content_type, entry.response = res.status, res.headers["content-type"], res.body
    else
      entry.status, entry.error = 502, tostring(err and err.message or err)
    end
    append(conf.log, json.encode(entry))
    if not res then return { status = 502, body = "node unreachable: " .. entry.error } end
    return { status = res.status, headers = { ["Content-Type"] = res.headers["content-type"] }, body = res.body }
  end
end
