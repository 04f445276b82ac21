--- Chain benchmark: signed transfers per second, accepted by the node and
-- included in blocks.  100 funded senders, 100 rounds; each round sends one
-- transfer per sender, all at once (a sender's nonces must arrive in order).
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
local admin = (sys.read_file(dir .. "/admin.key")):gsub("%s+$", "")
local key = assert(http.request { method = "POST", url = url .. "/v1/admin/keys", headers = { ["X-Api-Key"] = admin },
  json = { role = "client" } }).json.key

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

local t0 = sys.monotonic()
local batches = {}
for r = 1, rounds do
  local batch = {}
  for i, s in ipairs(senders) do
    local tx = { chain_id = "ait-devnet", type = "transfer", from = s.address, public_key = crypto.hex(s.pk),
      nonce = r, payload = { to = sink, amount = "1000000" }, timestamp = os.time() }
    batch[i] = { method = "POST", url = url .. "/v1/chain/ait-devnet/transactions",
      headers = { ["Content-Type"] = "application/json" },
      body = json.encode { tx = tx, signature = crypto.base64(crypto.sign(chain.hash(tx), s.sk), "urlsafe") } }
  end
  batches[r] = batch
end
local signing = sys.monotonic() - t0
local total = senders_n * rounds
local started = sys.monotonic()
local last
for _, batch in ipairs(batches) do
  for _, res in ipairs(http.request_many(batch)) do
    assert(res.status == 202, res.error or res.body)
    last = json.decode(res.body).hash
  end
end
local accepted = sys.monotonic() - started
repeat
  local res = assert(http.request { url = url .. "/v1/chain/ait-devnet/transactions/" .. last })
  local included = json.decode(res.body).status == "included"
  if not included then sys.sleep(0.02) end
until included
local sealed = sys.monotonic() - started
local sink_account = json.decode(assert(http.request { url = url .. "/v1/chain/ait-devnet/accounts/" .. sink }).body)
assert(sink_account.balance_units == tostring(total * 1000000), "the sink did not receive every transfer")
print(string.format("aitbc chain benchmark: %d signed transfers from %d senders (signed beforehand in %.1f s)",
  total, senders_n, signing))
print(string.format("  accepted (validated, applied):     %7.0f tx/s  (%.2f s)", total / accepted, accepted))
print(string.format("  accepted and included in blocks:   %7.0f tx/s  (%.2f s, block time 0.5 s)   budget >= 5,000 tx/s",
  total / sealed, sealed))
node:kill(15)
node:communicate(nil, 20)
sys.remove_tree(dir)
