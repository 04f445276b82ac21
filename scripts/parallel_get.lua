--- Fetches several URLs at once and prints status and time for each.
--   aitbc run scripts/parallel_get.lua [URL...]   (default: the configured node's /health and /v1/health)
local aitbc = require "aitbc"

local urls = { ... }
if #urls == 0 then
  local base = aitbc.node().url
  urls = { base .. "/health", base .. "/v1/health" }
end
local requests = {}
for i, url in ipairs(urls) do requests[i] = { url = url, timeout = 10 } end
local failed = 0
for i, res in ipairs(aitbc.http.request_many(requests)) do
  if res.error then
    failed = failed + 1
    print(string.format("%-50s error: %s", urls[i], res.error))
  else
    print(string.format("%-50s %d  %.1f ms  %d bytes", urls[i], res.status, res.time * 1000, #res.body))
  end
end
return failed > 0 and 1 or 0
