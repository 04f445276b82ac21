--- A minimal miner for tests and benchmarks: registers, then polls and
-- answers jobs until the queue stays empty for `idle` seconds; prints the
-- id of every job it completed, one per line.
--   aitbc run tests/support/miner_loop.lua URL MINER_KEY MINER_ID [IDLE_SECONDS]
local http = require "aitbc.http"
local json = require "aitbc.json"

local url, key, miner_id, idle = arg[1], arg[2], arg[3], tonumber(arg[4] or "2")
local headers = { ["X-Api-Key"] = key, ["X-Miner-ID"] = miner_id, ["Content-Type"] = "application/json" }

local function post(path, body)
  return assert(http.request { method = "POST", url = url .. path, headers = headers, body = body, timeout = 60 })
end

local reg = post("/v1/miners/register", json.encode { miner_id = miner_id })
assert(reg.status == 200 or reg.status == 201, reg.body)
local poll_body = json.encode { max_wait_seconds = idle }
while true do
  local res = post("/v1/miners/poll", poll_body)
  if res.status == 204 then break end
  assert(res.status == 200, res.body)
  local job = json.decode(res.body)
  local done = post("/v1/miners/" .. job.job_id .. "/result",
    json.encode { result = { response = "echo: " .. tostring(job.payload.prompt) }, metrics = { eval_count = 1 } })
  assert(done.status == 200, done.body)
  io.write(job.job_id, "\n")
  io.flush()
end
