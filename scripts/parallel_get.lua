--- Fetches several URLs at once and prints status and time for each.
--   aitbc run scripts/parallel_get.lua http://127.0.0.1:8000/health http://127.0.0.1:8000/v1/health
local http = require "aitbc.http"

local requests = {}
for i, url in ipairs(arg) do requests[i] = { url = url, timeout = 10 } end
if #requests == 0 then
  io.stderr:write("usage: aitbc run scripts/parallel_get.lua URL...\n")
  return 2
end
local failed = 0
for i, res in ipairs(http.request_many(requests)) do
  if res.error then
    failed = failed + 1
    print(string.format("%-50s error: %s", arg[i], res.error))
  else
    print(string.format("%-50s %d  %.1f ms  %d bytes", arg[i], res.status, res.time * 1000, #res.body))
  end
end
return failed > 0 and 1 or 0
