--- Posts one event for a running job after a moment (for a spec whose
-- readers must be waiting first).  aitbc run tests/support/post_events.lua URL MINER_KEY JOB_ID
local http = require "aitbc.http"
local sys = require "aitbc.sys"
local url, key, job_id = arg[1], arg[2], arg[3]
sys.sleep(0.5)
local res = assert(http.request { method = "POST", url = url .. "/v1/miners/" .. job_id .. "/events",
  headers = { ["X-Api-Key"] = key }, json = { events = { { type = "thought", data = { text = "thinking" } } } } })
assert(res.status == 200, res.body)
