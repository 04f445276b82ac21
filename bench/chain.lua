--- Chain benchmark: signed transfers per second, accepted by the node and
-- included in blocks.  100 funded senders, 100 rounds; each round sends one
-- transfer per sender, all at once (a sender's nonces must arrive in order);
-- then as many again in batch requests ({transactions = [...]}).
--   aitbc run bench/chain.lua [SENDERS=100] [ROUNDS=100]     (make bench)
-- Budget (DESIGN.md §8): >= 5,000 tx/s.
local crypto = require "aitbc.crypto"
local http = require "aitbc.http"
local json = require "aitbc.json"
local sys = require "aitbc.sys"
local chain = require "aitbc.node.chain"
local wallet = require "aitbc.wallet"

local senders_n, rounds = tonumber(arg[1] or "100"), tonumber(arg[2] or "100")
local dir = assert(sys.tempdir("aitbc-bench-chain"))
local node = assert(sys.spawn { argv = { sys.exe_path(), "serve", "--listen", "127.0.0.1:0", "--data-dir", dir,
  "--log-level", "warn", "--block-time", "0.5" }, stdout = "pipe", stderr = "null" })
local line = ""
while not line:find("\n") do line = line .. assert(node:read(10)) end
local url = line:match("listening on (%S+)")
-- the senders are funded with the admin key: a client key gets at most 10,000 AITBC an hour from the faucet
local key = (sys.read_file(dir .. "/admin.key")):gsub("%s+$", "")

local senders = {}
local sink = wallet.address((crypto.sign_keypair())) -- where every transfer goes
local fund = {}
for i = 1, senders_n do
  local pk, sk = crypto.sign_keypair()
  senders[i] = { pk = pk, sk = sk, address = wallet.address(pk) }
  fund[i] = { method = "POST", url = url .. "/v1/chain/ait-devnet/faucet", headers = { ["X-Api-Key"] = key },
    json = nil, body = json.encode { address = senders[i].address, amount = "1000" } }
  fund[i].headers["Content-Type"] = "application/json"
end
for _, r in ipairs(http.request_many(fund)) do assert(r.status == 202, r.error or r.body) end
-- the faucet's own transactions are not part of the measurement: let a block take them
sys.sleep(1.2)

local function transfer(s, nonce)
  local tx = { chain_id = "ait-devnet", type = "transfer", from = s.address, public_key = crypto.hex(s.pk),
    nonce = nonce, payload = { to = sink, amount = "1000000" }, timestamp = os.time() }
  return { tx = tx, signature = crypto.base64(crypto.sign(chain.hash(tx), s.sk), "urlsafe") }
end

local function post(body)
  return { method = "POST", url = url .. "/v1/chain/ait-devnet/transactions",
    headers = { ["Content-Type"] = "application/json" }, body = json.encode(body) }
end

--- Sends the waves (each a list of requests sent at once, waves in order),
-- then waits until the last transaction is in a block; returns seconds to
-- accept and to include.
local function measure(waves, last_of)
  local started = sys.monotonic()
  local last
  for _, wave in ipairs(waves) do
    for _, res in ipairs(http.request_many(wave)) do
      assert(res.status == 202 or res.status == 200, res.error or res.body)
      last = last_of(json.decode(res.body))
    end
  end
  local accepted = sys.monotonic() - started
  repeat
    local res = assert(http.request { url = url .. "/v1/chain/ait-devnet/transactions/" .. last })
    local included = json.decode(res.body).status == "included"
    if not included then sys.sleep(0.02) end
  until included
  return accepted, sys.monotonic() - started
end

-- 1. one transaction per request (what wallets do): a wave = one round
local t0 = sys.monotonic()
local waves = {}
for r = 1, rounds do
  local wave = {}
  for i, s in ipairs(senders) do wave[i] = post(transfer(s, r)) end
  waves[r] = wave
end
-- 2. batches (what a relay or an exchange does): a wave = 10 rounds in
-- 8 requests, each carrying its senders' transfers in nonce order
local groups, per_wave = 8, math.min(10, rounds)
local batched = {}
for w = 1, rounds // per_wave do
  local wave = {}
  for g = 1, groups do
    local list = {}
    for r = rounds + (w - 1) * per_wave + 1, rounds + w * per_wave do
      for i = g, senders_n, groups do list[#list + 1] = transfer(senders[i], r) end
    end
    wave[g] = post { transactions = list }
  end
  batched[w] = wave
end
local signing = sys.monotonic() - t0
local single_n = senders_n * rounds
local batch_n = senders_n * (rounds // per_wave) * per_wave
local accepted, sealed = measure(waves, function(d) return d.hash end)
local b_accepted, b_sealed = measure(batched, function(d)
  assert(d.rejected == 0, "a batch had refusals")
  return d.results[#d.results].hash
end)
local sink_account = json.decode(assert(http.request { url = url .. "/v1/chain/ait-devnet/accounts/" .. sink }).body)
assert(sink_account.balance_units == tostring((single_n + batch_n) * 1000000), "the sink did not receive every transfer")
print(string.format("aitbc chain benchmark: %d senders, transfers signed beforehand (%.1f s), block time 0.5 s",
  senders_n, signing))
print(string.format("  one per request,  %6d tx: accepted %7.0f tx/s, accepted and in blocks %7.0f tx/s",
  single_n, single_n / accepted, single_n / sealed))
print(string.format("  batches of %4d, %6d tx: accepted %7.0f tx/s, accepted and in blocks %7.0f tx/s",
  senders_n * per_wave // groups, batch_n, batch_n / b_accepted, batch_n / b_sealed))
print("  budget: >= 5,000 tx/s accepted and included in blocks")
node:kill(15)
node:communicate(nil, 20)
sys.remove_tree(dir)
