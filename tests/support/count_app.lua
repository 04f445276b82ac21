--- Handler for the test HTTP server that counts the requests it gets
-- (sys.counters()["count_app.requests"]): for tests that must show that
-- nothing was contacted.
local sys = require "aitbc.sys"

return function()
  return function()
    sys.counter_add("count_app.requests")
    return { status = 200, headers = { ["Content-Type"] = "application/json" }, body = '{"status":"ok"}' }
  end
end
