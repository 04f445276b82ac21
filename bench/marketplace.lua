--- Marketplace benchmark: a node with 10,000 GPU listings from 100
-- providers; times `offers list` queries on the node (budget: < 50 ms).
--   aitbc run bench/marketplace.lua [LISTINGS=10000]     (make bench)
local http = require "aitbc.http"
local json = require "aitbc.json"
local sys = require "aitbc.sys"

local n = tonumber(arg[1] or "10000")
local dir = assert(sys.tempdir("aitbc-bench-market"))
local node = assert(sys.spawn { argv = { sys.exe_path(), "serve", "--listen", "127.0.0.1:0", "--data-dir", dir,
  "--log-level", "warn" }, stdout = "pipe", stderr = "null" })
local line = ""
while not line:find("\n") do line = line .. assert(node:read(10)) end
local url = line:match("listening on (%S+)")
local admin = (sys.read_file(dir .. "/admin.key")):gsub("%s+$", "")

local function key(role)
  return assert(http.request { method = "POST", url = url .. "/v1/admin/keys", headers = { ["X-Api-Key"] = admin },
    json = { role = role } }).json.key
end

local models = { "RTX 4090", "RTX 3090", "A100", "H100", "L40S", "RTX 4080", "L4", "T4" }
local providers = {}
for i = 1, 100 do providers[i] = key("miner") end
local t0 = sys.monotonic()
local batch = {}
for i = 1, n do
  local model = models[i % #models + 1]
  batch[#batch + 1] = { method = "POST", url = url .. "/v1/marketplace/gpu/register",
    headers = { ["X-Api-Key"] = providers[i % 100 + 1], ["Content-Type"] = "application/json" },
    body = json.encode { model = model, vram_gb = 24, hourly_rate = string.format("%.3f", 0.2 + (i * 7919 % 1000) / 1000),
      region = ({ "eu", "us", "asia" })[i % 3 + 1] } }
  if #batch == 50 or i == n then
    for _, res in ipairs(http.request_many(batch)) do assert(res.status == 201, res.error or res.body) end
    batch = {}
  end
end
print(string.format("aitbc marketplace benchmark: %d listings from 100 providers registered in %.1f s", n, sys.monotonic() - t0))

local function timed(label, query)
  local times = {}
  for i = 1, 30 do
    local res = assert(http.request { url = url .. "/v1/marketplace/offers?" .. query })
    assert(res.status == 200, res.body)
    times[i] = res.time
  end
  table.sort(times)
  print(string.format("  %-52s median %6.2f ms   p95 %6.2f ms", label, times[15] * 1000, times[29] * 1000))
end
timed("offers list --model \"RTX 4090\"", "model=RTX%204090&limit=20")
timed("offers list (all models, by price)", "limit=20")
timed("offers list --sort -reputation", "sort=-reputation&limit=20")
timed("offers list --min-vram 16 --max-price 0.5 --region eu", "min_vram=16&max_price=0.5&region=eu&limit=20")
local res = assert(http.request { url = url .. "/v1/marketplace/pricing/RTX%204090" })
print(string.format("  %-52s %6.2f ms   (budget for offers list: < 50 ms)", "pricing --model \"RTX 4090\"", res.time * 1000))
node:kill(15)
node:communicate(nil, 20)
sys.remove_tree(dir)
