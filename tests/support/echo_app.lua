--- Handler for the test HTTP server: echoes requests and produces the
-- status codes, sizes, delays and streams the HTTP client tests need.
local json = require "aitbc.json"
local sys = require "aitbc.sys"

local function reply(status, body, headers)
  headers = headers or {}
  headers["Content-Type"] = headers["Content-Type"] or "application/json"
  return { status = status, headers = headers, body = body }
end

return function()
  return function(req)
    local path = req.path
    local n = tonumber(path:match("^/%a+/(%d+)$"))
    if path == "/health" or path == "/v1/health" then
      return reply(200, json.encode { status = "ok" })
    elseif path == "/echo" then
      return reply(200, json.encode { method = req.method, path = req.path, query = req.query,
        headers = req.headers, body = req.body, remote = req.remote })
    elseif path:match("^/status/") then
      return reply(n, json.encode { error = { code = "status_" .. n, message = "status " .. n .. " as asked" } })
    elseif path:match("^/big/") then
      return reply(200, string.rep("x", n), { ["Content-Type"] = "text/plain" })
    elseif path:match("^/slow/") then
      sys.sleep(n / 1000)
      return reply(200, json.encode { slept_ms = n })
    elseif path:match("^/stream/") then
      local i = 0
      return { status = 200, headers = { ["Content-Type"] = "application/x-ndjson" }, stream = function()
        i = i + 1
        if i > n then return nil end
        sys.sleep(0.01)
        return json.encode { i = i } .. "\n"
      end }
    elseif path:match("^/wait/") then -- a long poll on a key: answers when woken or its time is up
      local seconds = tonumber(req.query.seconds or "5")
      if req.query.delay and not req.resumed then sys.sleep(tonumber(req.query.delay)) end -- to order the waiters
      -- ?decline=1: woken, it waits on (as a miner the job does not fit)
      if req.resumed and not (req.query.decline and req.resumed == "woken") then
        return reply(200, json.encode { resumed = req.resumed, waited = req.waited, connected = req.connected() })
      end
      return { suspend = seconds - (req.waited or 0), wake = { path:match("^/wait/(.*)$") } }
    elseif path:match("^/notify/") then
      if req.query.after then sys.sleep(tonumber(req.query.after)) end
      sys.notify(path:match("^/notify/(.*)$"), req.query.one and "one" or nil)
      return reply(200, "{}")
    elseif path == "/fail" then
      error("the handler broke")
    elseif path == "/badstatus" then
      return { status = 200.5, body = "{}" }
    elseif path == "/badheader" then
      return { status = 200, headers = { ["X-Bad"] = "a\r\nInjected: yes" }, body = "{}" }
    elseif path == "/headers" then
      return reply(200, "{}", { ["X-Custom"] = "yes", ["Retry-After"] = "7" })
    end
    return reply(404, json.encode { error = { code = "not_found", message = "no route " .. path } })
  end
end
