--- The node fuzzer at any size, against a running node (tests/fuzz_spec.lua
-- runs it small in `make check`).  Prints the seed, the statuses and every
-- failure; exits 1 when a request failed or the node stopped answering.
--   aitbc run bench/fuzz.lua URL ADMIN_KEY [COUNT=20000] [SEED=random]
package.path = "./tests/?.lua;" .. package.path
local fuzz = require "support.fuzz"

local url, admin = arg[1], arg[2]
if not url or not admin then
  io.stderr:write("usage: aitbc run bench/fuzz.lua URL ADMIN_KEY [COUNT] [SEED]\n")
  os.exit(2)
end
local count = math.tointeger(tonumber(arg[3] or "20000"))
local seed = arg[4] and math.tointeger(tonumber(arg[4])) or fuzz.seed()
local started = os.time()
local report = fuzz.run { url = url, admin_key = admin, seed = seed, count = count, budget_s = 3600 }
local statuses = {}
for status, n in pairs(report.statuses) do statuses[#statuses + 1] = string.format("%d x%d", status, n) end
table.sort(statuses)
local reached = 0
for _ in pairs(report.routes) do reached = reached + 1 end
print(string.format("seed %d: %d requests over %d of %d routes in ~%ds; statuses: %s", seed, report.sent, reached,
  report.route_count, os.time() - started, table.concat(statuses, ", ")))
for _, f in ipairs(report.failures) do print("FAIL " .. f) end
print(report.alive and "node alive" or "NODE NOT ANSWERING /health")
os.exit((#report.failures == 0 and report.alive) and 0 or 1)
