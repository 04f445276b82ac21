--- Handler for the test HTTP server playing what `node test` may meet at a
-- registered address (start{config = ...}):
--   "foreign"   a web server that is not an aitbc node: 404 to everything
--   "degraded"  an aitbc node that answers /health 503 {"status": "degraded"}
--   "silent"    /health answers only after a second (longer than --timeout)
local json = require "aitbc.json"
local sys = require "aitbc.sys"

local function reply(status, doc)
  return { status = status, headers = { ["Content-Type"] = "application/json" }, body = doc and json.encode(doc) or "" }
end

return function(config)
  return function(req)
    if config == "foreign" then return reply(404) end
    if req.path == "/health" then
      if config == "silent" then sys.sleep(1) end
      return reply(503, { status = "degraded", version = sys.version, services = { chain = "halted" } })
    elseif req.path == "/v1/chains" then
      return reply(200, { items = json.array() })
    end
    return reply(404, { error = { code = "not_found", message = "no route" } })
  end
end
