--- Full job cycle: N jobs submitted (32 at a time) while M miner processes
-- poll, answer and post results; prints completed jobs per second.
--   aitbc run bench/cycle.lua URL ADMIN_KEY [N=5000] [MINERS=8]
local http = require "aitbc.http"
local json = require "aitbc.json"
local sys = require "aitbc.sys"

local url, admin = arg[1], arg[2]
local n, miners = tonumber(arg[3] or "5000"), tonumber(arg[4] or "8")

local function key(role)
  local res = assert(http.request { method = "POST", url = url .. "/v1/admin/keys",
    headers = { ["X-Api-Key"] = admin }, json = { role = role } })
  return assert(res.json and res.json.key, res.body)
end

local function completed()
  local res = assert(http.request { url = url .. "/v1/admin/stats", headers = { ["X-Api-Key"] = admin } })
  return res.json.jobs_by_state.COMPLETED or 0
end

local client = key("client")
local before = completed()
local procs = {}
for i = 1, miners do
  procs[i] = assert(sys.spawn { argv = { sys.exe_path(), "run", "tests/support/miner_loop.lua", url, key("miner"),
    "bench-" .. i .. "-" .. sys.getpid(), "2" }, stdout = "null", stderr = "null" })
end
sys.sleep(0.3) -- miners registered and waiting
local started = sys.monotonic()
local batch = {}
for i = 1, n do
  batch[#batch + 1] = { method = "POST", url = url .. "/v1/jobs", headers = { ["X-Api-Key"] = client },
    body = json.encode { payload = { prompt = "cycle " .. i } } }
  if #batch == 32 or i == n then
    for _, res in ipairs(http.request_many(batch)) do assert(res.status == 201, res.error or res.body) end
    batch = {}
  end
end
local submitted = sys.monotonic()
-- (a tenth of a second between checks: admin stats counts every job, which costs the node more as they pile up)
while completed() - before < n do sys.sleep(0.1) end
local finished = sys.monotonic()
for _, p in ipairs(procs) do p:wait() end
print(string.format("%-34s %10.0f jobs/s  (%d jobs, %d miners, %.2f s; submitting took %.2f s)",
  "full cycle submit->poll->result", n / (finished - started), n, miners, finished - started, submitted - started))
