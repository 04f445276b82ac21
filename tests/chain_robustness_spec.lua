-- The chain under hostile and careless input, through real nodes: what the
-- leader accepts its followers can apply, a follower that stops says so,
-- addresses have one spelling, escrow only through the payment route, the
-- faucet within its limits, and a follower can be followed.
local cli = require "support.cli"
local crypto = require "aitbc.crypto"
local db = require "aitbc.db"
local json = require "aitbc.json"
local nodes = require "support.node"
local wallet = require "aitbc.wallet"
local bip39 = require "aitbc.wallet.bip39"
local chain = require "aitbc.node.chain"
local sys = require "aitbc.sys"

local UNIT = 1000000000

local function new_keys() return wallet.keys(bip39.generate(12)) end

--- Polls fn until it returns a true value (at most `seconds`); returns it.
local function wait_until(fn, seconds)
  local deadline = sys.monotonic() + (seconds or 20)
  repeat
    local v = fn()
    if v then return v end
    sys.sleep(0.05)
  until sys.monotonic() > deadline
  return fn()
end

local function account(node, address, chain_id)
  local _, a = node:request("GET", "/v1/chain/" .. (chain_id or "ait-devnet") .. "/accounts/" .. address)
  return a
end

--- A transaction from `who`, with `fields` over the defaults (json.null
-- removes one), signed as it stands.
local function signed(node, who, fields)
  local tx = { chain_id = "ait-devnet", type = "transfer", from = who.address, public_key = crypto.hex(who.public_key),
    nonce = account(node, who.address).nonce + 1, payload = {}, timestamp = os.time() }
  for k, v in pairs(fields or {}) do
    if v == json.null then tx[k] = nil else tx[k] = v end
  end
  return { tx = tx, signature = crypto.base64(crypto.sign(chain.hash(tx), who.secret_key), "urlsafe") }
end

local function send(node, body)
  return node:request("POST", "/v1/chain/ait-devnet/transactions", { json = body })
end

local function faucet(node, key, address, amount, chain_id)
  return node:request("POST", "/v1/chain/" .. (chain_id or "ait-devnet") .. "/faucet",
    { key = key, json = { address = address, amount = amount } })
end

--- Waits until `follower` has the leader's head of ait-devnet, then checks
-- every block hash and the accounts named.
local function same_chain(leader, follower, addresses)
  -- seal what is pending now, so that the leader's head holds every transaction
  local sealed, lhead = leader:request("POST", "/v1/chain/ait-devnet/blocks", { key = leader.admin_key })
  assert.equal(201, sealed)
  local fhead = wait_until(function()
    local s, h = follower:request("GET", "/v1/chain/ait-devnet/head")
    return s == 200 and h.height >= lhead.height and h
  end)
  assert.is_truthy(fhead, "the follower reached the leader's height " .. lhead.height)
  for h = 0, lhead.height do
    local _, lb = leader:request("GET", "/v1/chain/ait-devnet/blocks/" .. h)
    local _, fb = follower:request("GET", "/v1/chain/ait-devnet/blocks/" .. h)
    assert.equal(lb.hash, fb.hash, "block " .. h)
  end
  for _, a in ipairs(addresses) do assert.same(account(leader, a), account(follower, a)) end
end

describe("the leader accepts only what its followers can apply", function()
  local leader, key, alice, bob
  setup(function()
    leader = nodes.start { args = { "--block-time", "0.1", "--log-level", "warn" } }
    key = leader:key("client")
    alice, bob = new_keys(), new_keys()
    assert.equal(202, (faucet(leader, key, alice.address, "500")))
  end)
  teardown(function() leader:stop() cli.cleanup() end)

  it("refuses a missing or odd timestamp, a string nonce, amounts with leading zeros, unknown fields: 400 naming the field", function()
    local to_bob = { to = bob.address, amount = "1000000000" }
    local cases = {
      { { timestamp = json.null, payload = to_bob }, "timestamp" },
      { { timestamp = tostring(os.time()), payload = to_bob }, "timestamp" },
      { { timestamp = os.time() + 0.5, payload = to_bob }, "timestamp" },
      { { timestamp = os.time() - 2 * 86400, payload = to_bob }, "timestamp" },
      { { timestamp = os.time() + 2 * 86400, payload = to_bob }, "timestamp" },
      { { nonce = "1", payload = to_bob }, "nonce" },
      { { nonce = 0, payload = to_bob }, "nonce" },
      { { payload = { to = bob.address, amount = "007" } }, "payload.amount" },
      { { payload = { to = bob.address, amount = "0" } }, "payload.amount" },
      { { payload = { to = bob.address, amount = 5 } }, "payload.amount" },
      { { payload = { to = bob.address, amount = "+5" } }, "payload.amount" },
      { { payload = json.null }, "payload" },
      { { memo = "hi", payload = to_bob }, "memo" },
      { { payload = { to = bob.address, amount = "1", note = "x" } }, "payload.note" },
      { { type = "stake", payload = { amount = "1", to = bob.address } }, "payload.to" },
      { { type = "faucet", payload = to_bob }, "type" },
      { { type = "escrow_release", payload = to_bob }, "type" },
    }
    local before = account(leader, alice.address)
    for i, c in ipairs(cases) do
      local status, res = send(leader, signed(leader, alice, c[1]))
      assert.equal(400, status, "case " .. i .. ": " .. json.encode(res))
      assert.equal(c[2], res.error.field, "case " .. i .. ": " .. res.error.message)
      assert.is_string(res.error.message)
    end
    -- in a batch too, each refused on its own
    local status, res = send(leader, { transactions = { signed(leader, alice, cases[1][1]), signed(leader, alice, cases[6][1]) } })
    assert.equal(200, status)
    assert.equal(0, res.accepted)
    assert.equal("timestamp", res.results[1].error.field)
    assert.equal("nonce", res.results[2].error.field)
    assert.same(before, account(leader, alice.address))
  end)

  it("whatever it accepted of a few hundred mutated transactions, a follower applies to the same state", function()
    local carol = new_keys()
    -- each mutation is signed as it stands: only the node's checks decide
    local values = { json.null, "1", 1, 1.5, -1, 0, "", {}, { 1 }, "007", "1e3", os.time() .. "",
      bob.address:upper(), "AIT1" .. bob.address:sub(5), alice.address, "escrow:ab", 2 ^ 60, "9999999999999999999" }
    local fields = { "timestamp", "nonce", "type", "chain_id", "public_key", "extra" }
    local payload_fields = { "to", "amount", "job_id", "extra" }
    local types = { "transfer", "stake", "unstake", "escrow_lock", "faucet", "escrow_refund" }
    local accepted, sent = 0, 0
    local seed = 1
    local function pick(list)
      seed = (seed * 1103515245 + 12345) % 2147483648
      return list[seed % #list + 1]
    end
    for round = 1, 240 do
      local who = round % 2 == 0 and alice or carol
      if round == 1 then assert.equal(202, (faucet(leader, key, carol.address, "300"))) end
      local tx = { type = pick(types), payload = { to = bob.address, amount = tostring(round) } }
      if round % 3 ~= 0 then
        local f = pick(fields)
        tx[f] = pick(values)
      end
      if round % 2 == 0 then
        local pf = pick(payload_fields)
        local v = pick(values)
        if v ~= json.null then tx.payload[pf] = v else tx.payload[pf] = nil end
      end
      local status = send(leader, signed(leader, who, tx))
      sent = sent + 1
      assert.is_true(status == 202 or (status >= 400 and status < 500), "round " .. round .. ": " .. tostring(status))
      if status == 202 then accepted = accepted + 1 end
    end
    assert.equal(240, sent)
    assert.is_true(accepted > 0, "some mutations are still valid transactions")
    local follower = nodes.start { args = { "--follow", leader.url, "--log-level", "warn" } }
    finally(function() follower:stop() end)
    same_chain(leader, follower, { alice.address, bob.address, carol.address })
    local status, health = follower:request("GET", "/health")
    assert.equal(200, status)
    assert.equal("ok", health.status)
    assert.equal("following", health.following.chains[1].state)
  end)
end)

describe("a follower that refuses a block", function()
  it("stops, and says so in /health (503, the chain, the block and why) and in aitbc chain list", function()
    local leader = nodes.start { args = { "--block-time", "0.1", "--log-level", "warn" } }
    finally(function() leader:stop() end)
    local alice, bob = new_keys(), new_keys()
    assert.equal(202, (faucet(leader, leader:key("client"), alice.address, "10")))
    local status, res = send(leader, signed(leader, alice, { payload = { to = bob.address, amount = "1000000000" } }))
    assert.equal(202, status)
    local t = wait_until(function()
      local _, x = leader:request("GET", "/v1/chain/ait-devnet/transactions/" .. res.hash)
      return x.block_height and x
    end)
    -- the leader's copy of the sealed transaction is altered behind its back
    local conn = assert(db.open(leader.dir .. "/node.db"))
    assert(conn:run("UPDATE chain_txs SET body = replace(body, '\"amount\":\"1000000000\"', '\"amount\":\"9000000000\"') "
      .. "WHERE hash = ?", res.hash))
    conn:close()
    local follower = nodes.start { args = { "--follow", leader.url, "--log-level", "warn" } }
    finally(function() follower:stop() end)
    local health = wait_until(function()
      local s, h = follower:request("GET", "/health")
      return s == 503 and h
    end)
    assert.is_truthy(health, "the follower's /health turns 503")
    assert.equal("degraded", health.status)
    assert.equal("halted", health.services.chain)
    assert.equal(leader.url, health.following.leader)
    local c = health.following.chains[1]
    assert.equal("ait-devnet", c.chain_id)
    assert.equal("halted", c.state)
    assert.equal(t.block_height, c.refused_height)
    assert.equal(t.block_height - 1, c.height)
    assert.matches("is not the one listed", c.reason)
    local list = follower:cli { "chain", "list" }
    assert.equal(0, list.code, list.err)
    assert.matches("HALTED at block " .. t.block_height, list.out)
    assert.matches("stopped following " .. leader.url:gsub("%p", "%%%0") .. " at block " .. t.block_height, list.err)
    local j = follower:cli({ "-o", "json", "chain", "list" }).json()
    assert.equal("halted", j.items[1].sync.state)
    -- the leader is fine
    local ls, lh = leader:request("GET", "/health")
    assert.equal(200, ls)
    assert.equal("ok", lh.status)
    assert.is_nil(lh.following)
  end)
end)

describe("a follower of a follower", function()
  it("announces its leader's authority, so another node can follow it to the same chain", function()
    local leader = nodes.start { args = { "--block-time", "0.1", "--log-level", "warn" } }
    finally(function() leader:stop() end)
    local ckey = leader:key("client")
    local alice, bob = new_keys(), new_keys()
    assert.equal(202, (faucet(leader, ckey, alice.address, "40")))
    assert.equal(202, (send(leader, signed(leader, alice, { payload = { to = bob.address, amount = tostring(5 * UNIT) } }))))
    -- a paid job, canceled: an escrow lock and its refund
    local _, job = leader:request("POST", "/v1/jobs", { key = ckey, json = { payload = { prompt = "x" } } })
    local lock = signed(leader, alice, { type = "escrow_lock", payload = { job_id = job.job_id, amount = tostring(3 * UNIT) } })
    assert.equal(202, (leader:request("POST", "/v1/jobs/" .. job.job_id .. "/payment", { key = ckey, json = lock })))
    leader:request("POST", "/v1/jobs/" .. job.job_id .. "/cancel", { key = ckey })
    assert.is_truthy(wait_until(function()
      local _, j = leader:request("GET", "/v1/jobs/" .. job.job_id, { key = ckey })
      return j.payment_status == "refunded"
    end))
    local first = nodes.start { args = { "--follow", leader.url, "--log-level", "warn" } }
    finally(function() first:stop() end)
    local _, lchains = leader:request("GET", "/v1/chains")
    local _, fchains = first:request("GET", "/v1/chains")
    local _, fhealth = first:request("GET", "/health")
    assert.equal(lchains.authority, fchains.authority)
    assert.equal(lchains.authority, fchains.node_key) -- what older followers read
    assert.equal(fhealth.node_key, fchains.this_node_key)
    assert.are_not.equal(fchains.authority, fchains.this_node_key)
    assert.equal(lchains.faucet, fchains.faucet)
    assert.equal(leader.url, fchains.follows)
    local second = nodes.start { args = { "--follow", first.url, "--log-level", "warn" } }
    finally(function() second:stop() end)
    same_chain(leader, second, { alice.address, bob.address, lchains.faucet })
    assert.equal("35", account(second, alice.address).balance) -- 40 - 5, and the 3 locked came back
    local _, h2 = second:request("GET", "/health")
    assert.equal("ok", h2.status)
    local _, c2 = second:request("GET", "/v1/chains")
    assert.equal(lchains.authority, c2.authority)
  end)
end)

describe("addresses have one spelling", function()
  local node, key
  setup(function()
    node = nodes.start { args = { "--block-time", "0.1", "--log-level", "warn" } }
    key = node:key("client")
  end)
  teardown(function() node:stop() cli.cleanup() end)

  it("reads an upper-case address as the same account on every route, and refuses mixed case", function()
    local alice = new_keys()
    local upper = alice.address:upper()
    local mixed = "AIT1" .. alice.address:sub(5)
    local status, res = faucet(node, key, upper, "20")
    assert.equal(202, status)
    assert.equal(alice.address, res.address)
    assert.equal("20", account(node, alice.address).balance)
    local a = account(node, upper)
    assert.equal(alice.address, a.address)
    assert.equal("20", a.balance)
    -- the per-address limit sees one address: a day's grants to the lower-case spelling count for the upper
    local conn = assert(db.open(node.dir .. "/node.db"))
    assert(conn:run("INSERT INTO faucet_grants (chain_id, key_id, address, amount, granted_at) VALUES (?, ?, ?, ?, ?)",
      "ait-devnet", "elsewhere", alice.address, chain.FAUCET_DEVNET.ADDRESS_DAY, sys.time() - 60))
    conn:close()
    status, res = faucet(node, key, upper, "1")
    assert.equal(429, status)
    assert.equal("address_per_day", res.error.limit)
    local _, h1 = node:request("GET", "/v1/chain/ait-devnet/accounts/" .. upper .. "/transactions")
    local _, h2 = node:request("GET", "/v1/chain/ait-devnet/accounts/" .. alice.address .. "/transactions")
    assert.equal(1, #h1.items)
    assert.same(h2, h1)
    for _, path in ipairs { "/v1/chain/ait-devnet/accounts/" .. mixed, "/v1/chain/ait-devnet/accounts/" .. mixed .. "/transactions" } do
      status, res = node:request("GET", path)
      assert.equal(400, status, path)
      assert.equal("address", res.error.field)
      assert.matches("mixes upper and lower case", res.error.message)
    end
    status, res = faucet(node, key, mixed, "1")
    assert.equal(400, status)
    assert.equal("address", res.error.field)
  end)

  it("refuses a signed transaction with an upper-case address (it cannot be rewritten): 400 naming the field", function()
    local alice, bob = new_keys(), new_keys()
    assert.equal(202, (faucet(node, key, alice.address, "5")))
    local before = account(node, alice.address)
    local status, res = send(node, signed(node, alice, { payload = { to = bob.address:upper(), amount = "1" } }))
    assert.equal(400, status)
    assert.equal("payload.to", res.error.field)
    assert.matches("lower case", res.error.message)
    status, res = send(node, signed(node, alice, { from = alice.address:upper(), payload = { to = bob.address, amount = "1" } }))
    assert.equal(400, status)
    assert.equal("from", res.error.field)
    -- to oneself in upper case does not slip past the self-transfer check
    status, res = send(node, signed(node, alice, { payload = { to = alice.address:upper(), amount = "1" } }))
    assert.equal(400, status)
    assert.equal("payload.to", res.error.field)
    assert.same(before, account(node, alice.address))
    assert.equal("0", account(node, bob.address).balance)
  end)

  it("keeps payout addresses in lower case (miners, listings) and refuses mixed case", function()
    local mkey = node:key("miner")
    local payout = new_keys().address
    local status, m = node:request("POST", "/v1/miners/register", { key = mkey, json = { miner_id = "case-rig",
      capabilities = { gpus = {}, models = { "llama3" } }, payout_address = payout:upper() } })
    assert.equal(200, status)
    assert.equal(payout, m.payout_address)
    local res
    status, res = node:request("POST", "/v1/miners/register", { key = mkey, json = { miner_id = "case-rig-2",
      payout_address = "AIT1" .. payout:sub(5) } })
    assert.equal(422, status)
    assert.equal("payout_address", res.error.field)
    local l
    status, l = node:request("POST", "/v1/marketplace/gpu/register", { key = mkey, json = { model = "RTX 4090", vram_gb = 24,
      hourly_rate = "0.5", payout_address = payout:upper() } })
    assert.equal(201, status)
    assert.equal(payout, l.payout_address)
    status, res = node:request("POST", "/v1/marketplace/gpu/register", { key = mkey, json = { model = "RTX 4090", vram_gb = 24,
      hourly_rate = "0.5", payout_address = "not an address" } })
    assert.equal(422, status)
    assert.equal("payout_address", res.error.field)
    status, res = node:request("PATCH", "/v1/marketplace/gpu/" .. l.listing_id, { key = mkey,
      json = { payout_address = "AIT1" .. payout:sub(5) } })
    assert.equal(422, status)
    assert.equal("payout_address", res.error.field)
  end)

  it("aitbc wallet send and chain account take an upper-case address and refuse mixed case", function()
    local home = cli.tempdir()
    local env = { AITBC_WALLET_PASSWORD = "a good password", AITBC_CLIENT_KEY = key }
    local function run(args) return node:cli(args, { home = home, env = env }) end
    assert.equal(0, run({ "wallet", "create", "--name", "a" }).code)
    local own = run({ "wallet", "address" }).out:gsub("%s+$", "")
    assert.equal(0, run({ "wallet", "faucet", "--amount", "10" }).code)
    local bob = new_keys()
    local sent = run { "wallet", "send", "--to", bob.address:upper(), "--amount", "2" }
    assert.equal(0, sent.code, sent.err)
    assert.equal("2", account(node, bob.address).balance)
    local mixed = run { "wallet", "send", "AIT1" .. bob.address:sub(5), "1" }
    assert.equal(2, mixed.code)
    assert.matches("mixes upper and lower case", mixed.err)
    local self = run { "wallet", "send", own:upper(), "1" }
    assert.equal(1, self.code)
    assert.matches("payload.to is the sender", self.err)
    local acc = run { "-o", "json", "chain", "account", bob.address:upper() }
    assert.equal(0, acc.code, acc.err)
    assert.equal(bob.address, acc.json().address)
    assert.equal(2, run({ "chain", "account", "AIT1" .. bob.address:sub(5) }).code)
    assert.equal("8", run({ "-o", "json", "wallet", "balance" }).json().available)
  end)
end)

describe("escrow locks", function()
  it("go only through the job's own payment route; the public route and batches refuse them, changing nothing", function()
    local node = nodes.start { args = { "--block-time", "0.1", "--log-level", "warn" } }
    finally(function() node:stop() end)
    local mine, theirs = node:key("client"), node:key("client")
    local alice = new_keys()
    assert.equal(202, (faucet(node, mine, alice.address, "50")))
    local _, other_job = node:request("POST", "/v1/jobs", { key = theirs, json = { payload = { prompt = "theirs" } } })
    local before = account(node, alice.address)
    for _, job_id in ipairs { other_job.job_id, "00000000000000000000000000000000" } do
      local lock = signed(node, alice, { type = "escrow_lock", payload = { job_id = job_id, amount = tostring(UNIT) } })
      local status, res = send(node, lock)
      assert.equal(400, status)
      assert.equal("use_payment_route", res.error.code)
      assert.equal("type", res.error.field)
      assert.matches("/v1/jobs/{job_id}/payment", res.error.message, 1, true)
      assert.matches("aitbc client pay", res.error.message, 1, true)
      local bs, batch = send(node, { transactions = { lock } })
      assert.equal(200, bs)
      assert.equal("use_payment_route", batch.results[1].error.code)
      -- the payment route: another client's job or no job at all is not found
      local ps = node:request("POST", "/v1/jobs/" .. job_id .. "/payment", { key = mine, json = lock })
      assert.equal(404, ps)
    end
    assert.same(before, account(node, alice.address))
    local _, history = node:request("GET", "/v1/chain/ait-devnet/accounts/" .. alice.address .. "/transactions")
    assert.equal(1, #history.items) -- the faucet only
  end)
end)

describe("escrow stranded before locks had to go through a job's payment route", function()
  it("is refunded to the lockers when the leader starts, and a follower applies it all", function()
    local dir = cli.tempdir()
    local node = nodes.start { data_dir = dir, args = { "--block-time", "0.1", "--log-level", "warn" } }
    local alice = new_keys()
    assert.equal(202, (faucet(node, node:key("client"), alice.address, "20")))
    local lock = signed(node, alice, { type = "escrow_lock", payload = { job_id = "00ff00ff", amount = tostring(4 * UNIT) } })
    node:stop()
    -- what the transactions route did with such a lock before it refused them
    local store = assert(require("aitbc.node.store").open(dir .. "/node.db"))
    store:transaction(function()
      local a = store:chain_account("ait-devnet", alice.address)
      a.balance, a.nonce = a.balance - 4 * UNIT, a.nonce + 1
      store:chain_put_account(a)
      local e = store:chain_account("ait-devnet", "escrow:00ff00ff")
      e.balance = e.balance + 4 * UNIT
      store:chain_put_account(e)
      store:chain_tx_insert { hash = chain.hash(lock.tx), chain_id = "ait-devnet", type = "escrow_lock", sender = alice.address,
        recipient = "escrow:00ff00ff", amount = 4 * UNIT, nonce = a.nonce, body = json.encode(lock), received_at = os.time() }
    end)
    store:close()
    node = nodes.start { data_dir = dir, args = { "--block-time", "0.1", "--log-level", "warn" } }
    finally(function() node:stop() end)
    assert.equal("20", account(node, alice.address).balance)
    local _, history = node:request("GET", "/v1/chain/ait-devnet/accounts/" .. alice.address .. "/transactions")
    assert.equal("escrow_refund", history.items[1].type)
    assert.equal("4", history.items[1].amount)
    local follower = nodes.start { args = { "--follow", node.url, "--log-level", "warn" } }
    finally(function() follower:stop() end)
    same_chain(node, follower, { alice.address })
  end)
end)

describe("the faucet", function()
  it("is on for devnet chains by default, off elsewhere, and --faucet turns it on or off", function()
    local node = nodes.start { args = { "--chains", "ait-devnet,ait-mainnet", "--log-level", "warn" } }
    finally(function() node:stop() end)
    local key = node:key("client")
    local who = new_keys()
    assert.equal(202, (faucet(node, key, who.address, "1")))
    local status, res = node:request("POST", "/v1/chain/ait-mainnet/faucet", { key = key, json = { address = who.address } })
    assert.equal(403, status)
    assert.equal("faucet_disabled", res.error.code)
    assert.matches("--faucet on", res.error.message, 1, true)
    local _, chains = node:request("GET", "/v1/chains")
    local on = {}
    for _, c in ipairs(chains.items) do on[c.chain_id] = c.faucet end
    assert.same({ ["ait-devnet"] = true, ["ait-mainnet"] = false }, on)

    local off = nodes.start { args = { "--faucet", "off", "--log-level", "warn" } }
    finally(function() off:stop() end)
    status, res = faucet(off, off:key("client"), who.address, "1")
    assert.equal(403, status)
    assert.equal("faucet_disabled", res.error.code)
    local home = cli.tempdir()
    local env = { AITBC_WALLET_PASSWORD = "a good password", AITBC_CLIENT_KEY = off:key("client") }
    assert.equal(0, off:cli({ "wallet", "create", "--name", "w" }, { home = home, env = env }).code)
    local r = off:cli({ "wallet", "faucet" }, { home = home, env = env })
    assert.equal(4, r.code)
    assert.matches("the faucet is off on ait%-devnet", r.err)
    assert.not_matches("role", r.err)

    local forced = nodes.start { args = { "--chains", "ait-mainnet", "--faucet", "on", "--log-level", "warn" } }
    finally(function() forced:stop() end)
    status = forced:request("POST", "/v1/chain/ait-mainnet/faucet", { key = forced:key("client"), json = { address = who.address } })
    assert.equal(202, status)
  end)

  it("limits each API key per hour and each address per minute and day, naming the limit and when to retry", function()
    -- a chain that is not a devnet, its faucet turned on: the real limits
    local node = nodes.start { args = { "--block-time", "0.1", "--log-level", "warn", "--chains", "ait-testnet",
      "--faucet", "on" } }
    finally(function() node:stop() end)
    local key = node:key("client")
    local per_request = chain.FAUCET.MAX // UNIT
    local n = chain.FAUCET.KEY_HOUR // chain.FAUCET.MAX
    for i = 1, n do assert.equal(202, (faucet(node, key, new_keys().address, tostring(per_request), "ait-testnet")), "grant " .. i) end
    local status, res, raw = faucet(node, key, new_keys().address, "1", "ait-testnet")
    assert.equal(429, status)
    assert.equal("faucet_rate_limited", res.error.code)
    assert.equal("key_per_hour", res.error.limit)
    assert.matches("at most 10000 AITBC an hour", res.error.message)
    assert.matches("try again in %d+ s", res.error.message)
    assert.is_true(res.error.retry_after > 3000 and res.error.retry_after <= 3600, tostring(res.error.retry_after))
    assert.equal(tostring(res.error.retry_after), raw.headers["retry-after"])
    -- another key still gets coins; an admin key has no per-key limit
    assert.equal(202, (faucet(node, node:key("client"), new_keys().address, "1", "ait-testnet")))
    for _ = 1, n + 1 do assert.equal(202, (faucet(node, node.admin_key, new_keys().address, tostring(per_request), "ait-testnet"))) end

    -- per address: one grant a minute
    local who = new_keys()
    assert.equal(202, (faucet(node, node:key("client"), who.address, "1", "ait-testnet")))
    status, res, raw = faucet(node, node:key("client"), who.address, "1", "ait-testnet")
    assert.equal(429, status)
    assert.equal("address_per_minute", res.error.limit)
    assert.is_true(res.error.retry_after >= 1 and res.error.retry_after <= 60)
    assert.is_string(raw.headers["retry-after"])
    -- per address and day: grants of a few minutes ago count
    local later = new_keys()
    local conn = assert(db.open(node.dir .. "/node.db"))
    assert(conn:run("INSERT INTO faucet_grants (chain_id, key_id, address, amount, granted_at) VALUES (?, ?, ?, ?, ?)",
      "ait-testnet", "elsewhere", later.address, chain.FAUCET.ADDRESS_DAY, sys.time() - 300))
    conn:close()
    status, res = faucet(node, node:key("client"), later.address, "1", "ait-testnet")
    assert.equal(429, status)
    assert.equal("address_per_day", res.error.limit)
    assert.matches("at most 2000 AITBC a day", res.error.message)
    assert.is_true(res.error.retry_after > 80000 and res.error.retry_after <= 86100, tostring(res.error.retry_after))
  end)

  it("gives a devnet's user thousands at once (a governance deposit and a stake), within the devnet's caps", function()
    local node = nodes.start { args = { "--log-level", "warn" } }
    finally(function() node:stop() end)
    local who = new_keys()
    assert.equal(202, (faucet(node, node:key("client"), who.address, "1500")))
    assert.equal(202, (faucet(node, node:key("client"), who.address, "500"))) -- no per-minute wait on a devnet
    local status, res = faucet(node, node:key("client"), who.address, tostring(chain.FAUCET_DEVNET.MAX // UNIT + 1))
    assert.equal(400, status)
    assert.matches("at most 10000 AITBC", res.error.message)
  end)

  it("never takes the faucet account below its floor (half the supply)", function()
    local node = nodes.start { args = { "--block-time", "0.1", "--log-level", "warn" } }
    finally(function() node:stop() end)
    -- the operator moves most of the faucet's coins away with the node's own key
    local seed = assert(crypto.unhex(assert(sys.read_file(node.dir .. "/node.key")):match("%x+")))
    local pk, sk = crypto.sign_keypair(seed)
    local operator = { address = wallet.address(pk), public_key = pk, secret_key = sk }
    local keep = chain.FAUCET.FLOOR + 50 * UNIT
    local move = tostring(chain.SUPPLY - keep)
    local status, res = send(node, signed(node, operator, { payload = { to = new_keys().address, amount = move } }))
    assert.equal(202, status, json.encode(res))
    local key = node:key("client")
    assert.equal(202, (faucet(node, key, new_keys().address, "50"))) -- exactly down to the floor
    status, res = faucet(node, key, new_keys().address, "1")
    assert.equal(403, status)
    assert.equal("faucet_floor", res.error.code)
    assert.matches("keeps at least 500000000 AITBC", res.error.message)
    assert.equal(tostring(chain.FAUCET.FLOOR), account(node, operator.address).balance_units)
  end)
end)
