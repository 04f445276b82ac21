--- Forecasting benchmark: a node with 30 days of generated per-minute load
-- (`optimize import-history --generate 30`, completed jobs of type
-- imported), then `aitbc optimize predict --horizon 24h` timed end to end,
-- the CLI process included (budget: ≤ 1 s).
--   aitbc run bench/optimize.lua [DAYS=30]     (make bench)
local http = require "aitbc.http"
local sys = require "aitbc.sys"

local days = tostring(math.tointeger(tonumber(arg[1] or "30")) or 30)
local dir = assert(sys.tempdir("aitbc-bench-optimize"))
local node = assert(sys.spawn { argv = { sys.exe_path(), "serve", "--listen", "127.0.0.1:0", "--data-dir", dir,
  "--log-level", "warn" }, stdout = "pipe", stderr = "null",
  die_with_parent = true }) -- a failed run leaves no node behind
local line = ""
while not line:find("\n") do line = line .. assert(node:read(10)) end
local url = line:match("listening on (%S+)")
local admin = (sys.read_file(dir .. "/admin.key")):gsub("%s+$", "")
local client = assert(http.request { method = "POST", url = url .. "/v1/admin/keys", headers = { ["X-Api-Key"] = admin },
  json = { role = "client" } }).json.key

--- Runs the CLI against the node; returns its exit code, output and wall time.
local function aitbc(...)
  local t0 = sys.monotonic()
  local proc = assert(sys.spawn { argv = { sys.exe_path(), "--url", url, ... }, stdout = "pipe", stderr = "pipe",
    env = { HOME = dir, AITBC_ADMIN_KEY = admin, AITBC_CLIENT_KEY = client } })
  local code, out, err = proc:communicate(nil, 300)
  return code, (out or "") .. (err or ""), sys.monotonic() - t0
end

local code, out, took = aitbc("optimize", "import-history", "--generate", days)
assert(code == 0, out)
print(string.format("aitbc optimize benchmark: %s days of per-minute load imported in %.1f s", days, took))
local times = {}
for i = 1, 7 do
  code, out, times[i] = aitbc("-o", "json", "optimize", "predict", "--target", "network-load", "--horizon", "24h")
  assert(code == 0, out)
end
table.sort(times)
print(string.format("  %-52s median %6.0f ms   max %6.0f ms   (budget: <= 1 s)",
  "optimize predict --horizon 24h (30 days, 15m steps)", times[4] * 1000, times[7] * 1000))
node:kill(15)
node:communicate(nil, 20)
sys.remove_tree(dir)
