--- Marketplace benchmark: a node with 10,000 GPU listings from 100
-- providers, one in ten booked by 50 renters (signed rental locks, as
-- `marketplace gpu book` sends them), half of those released and rated;
-- times `offers list` queries on the node (budget: median < 10 ms).
--   aitbc run bench/marketplace.lua [LISTINGS=10000]     (make bench)
local addresses = require "aitbc.protocol.address"
local crypto = require "aitbc.crypto"
local http = require "aitbc.http"
local json = require "aitbc.json"
local money = require "aitbc.money"
local signing = require "aitbc.protocol.signing"
local sys = require "aitbc.sys"

local n = tonumber(arg[1] or "10000")
local dir = assert(sys.tempdir("aitbc-bench-market"))
local node = assert(sys.spawn { argv = { sys.exe_path(), "serve", "--listen", "127.0.0.1:0", "--data-dir", dir,
  "--log-level", "warn", "--heartbeat-timeout", "3600" }, stdout = "pipe", stderr = "null",
  die_with_parent = true }) -- a failed run leaves no node behind
local line = ""
while not line:find("\n") do line = line .. assert(node:read(10)) end
local url = line:match("listening on (%S+)")
local admin = (sys.read_file(dir .. "/admin.key")):gsub("%s+$", "")

local function key(role)
  return assert(http.request { method = "POST", url = url .. "/v1/admin/keys", headers = { ["X-Api-Key"] = admin },
    json = { role = role } }).json.key
end

--- A wallet: its keys and address, and the nonce of its next transaction.
local function wallet()
  local public, secret = crypto.sign_keypair(crypto.random(32))
  return { public = public, secret = secret, address = addresses.of(public), nonce = 0 }
end

local models = { "RTX 4090", "RTX 3090", "A100", "H100", "L40S", "RTX 4080", "L4", "T4" }
local providers, payouts = {}, {}
for i = 1, 100 do
  providers[i], payouts[i] = key("miner"), wallet().address
  local res = assert(http.request { method = "POST", url = url .. "/v1/miners/register",
    headers = { ["X-Api-Key"] = providers[i] }, json = { miner_id = "rig-" .. i, capabilities = { models = { "llama3" } } } })
  assert(res.status == 200, res.body)
end
local t0 = sys.monotonic()
local batch, listings = {}, {}
for i = 1, n do
  local model = models[i % #models + 1]
  batch[#batch + 1] = { method = "POST", url = url .. "/v1/marketplace/gpu/register",
    headers = { ["X-Api-Key"] = providers[i % 100 + 1], ["Content-Type"] = "application/json" },
    -- (key, model, memory, region) names a listing: vram_gb varies so that each of the n is its own
    body = json.encode { model = model, vram_gb = 16 + i // 600,
      hourly_rate = string.format("%.3f", 0.2 + (i * 7919 % 1000) / 1000),
      region = ({ "eu", "us", "asia" })[i % 3 + 1], payout_address = payouts[i % 100 + 1],
      miner_id = "rig-" .. (i % 100 + 1) } }
  if #batch == 50 or i == n then
    for _, res in ipairs(http.request_many(batch)) do
      local l = res.status == 201 and json.decode(res.body)
      assert(l and not l.updated, res.error or res.body)
      listings[#listings + 1] = l
    end
    batch = {}
  end
end
print(string.format("aitbc marketplace benchmark: %d listings from 100 providers registered in %.1f s", n, sys.monotonic() - t0))

-- renters: funded wallets booking one listing in ten for an hour; half end early and rate the provider
local chain_id = assert(http.request { url = url .. "/v1/chains" }).json.items[1].chain_id
local renters = {}
for i = 1, 50 do
  local w = wallet()
  w.key = key("client")
  local res = assert(http.request { method = "POST", url = url .. "/v1/chain/" .. chain_id .. "/faucet",
    headers = { ["X-Api-Key"] = w.key }, json = { address = w.address, amount = "10000" } })
  assert(res.status < 300, res.body)
  renters[i] = w
end
local function book(w, l)
  w.nonce = w.nonce + 1
  local tx = { chain_id = chain_id, type = "rental_lock", from = w.address, public_key = crypto.hex(w.public),
    nonce = w.nonce, payload = { listing_id = l.listing_id, hours = 1, amount = tostring(money.parse(l.hourly_rate)) },
    timestamp = os.time() }
  local body = signing.signed_tx(tx, w.secret)
  body.hours = 1
  return { method = "POST", url = url .. "/v1/marketplace/gpu/" .. l.listing_id .. "/book",
    headers = { ["X-Api-Key"] = w.key, ["Content-Type"] = "application/json" }, body = json.encode(body) }
end
t0 = sys.monotonic()
local booked = {}
for r, w in ipairs(renters) do -- one renter's locks in order (nonces), the renters side by side
  batch = {}
  for i = r * 10, #listings, #renters * 10 do batch[#batch + 1] = { w = w, l = listings[i] } end
  for _, b in ipairs(batch) do
    local res = assert(http.request(book(b.w, b.l)))
    assert(res.status == 201, res.body)
    booked[#booked + 1] = { w = b.w, l = b.l, booking = res.json.booking_id }
  end
end
local rated = 0
for i = 1, #booked, 2 do
  local b = booked[i]
  local res = assert(http.request { method = "POST", url = url .. "/v1/marketplace/bookings/" .. b.booking .. "/release",
    headers = { ["X-Api-Key"] = b.w.key } })
  assert(res.status == 200, res.body)
  res = assert(http.request { method = "POST", url = url .. "/v1/marketplace/gpu/" .. b.l.listing_id .. "/reviews",
    headers = { ["X-Api-Key"] = b.w.key }, json = { rating = i % 5 + 1, comment = "bench", booking_id = b.booking } })
  assert(res.status == 201, res.body)
  rated = rated + 1
end
print(string.format("  %d bookings by %d renters (%d released and rated, %d active) in %.1f s", #booked, #renters, rated,
  #booked - rated, sys.monotonic() - t0))

local function timed(label, query, route)
  local times = {}
  for i = 1, 30 do
    local res = assert(http.request { url = url .. (route or "/v1/marketplace/offers?") .. query })
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
timed("offers list --available all (booked ones too)", "available=all&limit=20")
timed("gpu list (the older clients' route)", "limit=20", "/v1/marketplace/gpu/list?")
local res = assert(http.request { url = url .. "/v1/marketplace/pricing/RTX%204090" })
print(string.format("  %-52s %6.2f ms   (budget for offers list: median < 10 ms)", "pricing --model \"RTX 4090\"",
  res.time * 1000))
node:kill(15)
node:communicate(nil, 20)
sys.remove_tree(dir)
