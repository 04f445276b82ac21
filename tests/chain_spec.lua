-- The chain on a real node: signed transactions, nonces, balances, blocks.
local cli = require "support.cli"
local crypto = require "aitbc.crypto"
local nodes = require "support.node"
local wallet = require "aitbc.wallet"
local bip39 = require "aitbc.wallet.bip39"
local chain = require "aitbc.node.chain"

describe("chain", function()
  local node, client_key, alice, bob
  -- every transaction a test had accepted on this node, by hash: the block test checks that each is sealed once
  local accepted = {}
  setup(function()
    node = nodes.start { args = { "--block-time", "0.2", "--chains", "ait-devnet,ait-healthchain", "--log-level", "warn" } }
    client_key = node:key("client")
  end)
  teardown(function() node:stop() cli.cleanup() end)
  -- fresh wallets for each test, so that each passes alone and in any order
  before_each(function() alice, bob = wallet.keys(bip39.generate(24)), wallet.keys(bip39.generate(24)) end)

  local function account(who, chain_id)
    local _, a = node:request("GET", "/v1/chain/" .. (chain_id or "ait-devnet") .. "/accounts/" .. who.address)
    return a
  end

  local function faucet(who, amount)
    local status, res = node:request("POST", "/v1/chain/ait-devnet/faucet", { key = client_key,
      json = { address = who.address, amount = amount } })
    if status == 202 then accepted[res.hash] = true end
    return status, res
  end

  local function signed(who, fields, sign_with)
    local tx = { chain_id = "ait-devnet", type = "transfer", from = who.address, public_key = crypto.hex(who.public_key),
      nonce = account(who).nonce + 1, payload = {}, timestamp = os.time() }
    for k, v in pairs(fields or {}) do tx[k] = v end
    return { tx = tx, signature = crypto.base64(crypto.sign(chain.hash(tx), (sign_with or who).secret_key), "urlsafe") }
  end

  local function send(body, chain_id)
    local status, res = node:request("POST", "/v1/chain/" .. (chain_id or "ait-devnet") .. "/transactions", { json = body })
    if status == 202 then accepted[res.hash] = true end
    for _, r in ipairs(status == 200 and res.results or {}) do
      if r.status == "pending" then accepted[r.hash] = true end
    end
    return status, res
  end

  local function included(hash)
    local _, t = node:request("GET", "/v1/chain/ait-devnet/transactions/" .. hash)
    return t.status == "included" and t
  end

  it("funds from the faucet and moves exactly the amount", function()
    assert.equal(202, (faucet(alice, "50")))
    assert.equal("50", account(alice).balance)
    local status, res = send(signed(alice, { payload = { to = bob.address, amount = tostring(12500000000) } }))
    assert.equal(202, status)
    assert.equal("37.5", account(alice).balance)
    assert.equal("12.5", account(bob).balance)
    assert.equal(1, account(alice).nonce)
    local _, t = node:request("GET", "/v1/chain/ait-devnet/transactions/" .. res.hash)
    assert.equal("transfer", t.type)
    t = cli.wait_for("a block to include the transfer", function() return included(res.hash) end)
    assert.is_number(t.block_height)
    -- a devnet's faucet gives again at once (a real chain's limits: chain_robustness_spec)
    assert.equal(202, (faucet(alice)))
  end)

  it("refuses a replay, a bad signature, a wrong nonce, an overdraft, a foreign key and an unknown chain — changing nothing", function()
    assert.equal(202, (faucet(alice, "50")))
    local ok_tx = signed(alice, { payload = { to = bob.address, amount = "1000000000" } })
    assert.equal(202, (send(ok_tx)))
    local before_a, before_b = account(alice), account(bob)
    local cases = {
      { ok_tx, 409, "duplicate_tx" },
      { signed(alice, { payload = { to = bob.address, amount = "1" } }, bob), 400, "bad_signature" },
      { signed(alice, { nonce = 99, payload = { to = bob.address, amount = "1" } }), 400, "bad_nonce" },
      { signed(alice, { payload = { to = bob.address, amount = "1000000000000" } }), 400, "insufficient_funds" },
      { signed(alice, { public_key = crypto.hex(bob.public_key), payload = { to = bob.address, amount = "1" } }, bob), 400, "key_mismatch" },
      { signed(alice, { payload = { to = bob.address, amount = "1.5" } }), 400, "invalid_amount" },
      { signed(alice, { payload = { to = "ait1notanaddress", amount = "1" } }), 400, "invalid_address" },
    }
    for i, c in ipairs(cases) do
      local status, err = send(c[1])
      assert.equal(c[2], status, "case " .. i)
      assert.equal(c[3], err.error.code, "case " .. i)
      assert.is_string(err.error.message)
    end
    local status, err = send(signed(alice, { chain_id = "ait-healthchain", payload = { to = bob.address, amount = "1" } }))
    assert.equal(400, status)
    assert.equal("wrong_chain", err.error.code)
    assert.equal(404, (send(signed(alice, { chain_id = "nope" }), "nope")))
    assert.same(before_a, account(alice))
    assert.same(before_b, account(bob))
    assert.equal("0", account(alice, "ait-healthchain").balance)
  end)

  it("stakes and unstakes without ever going negative", function()
    assert.equal(202, (faucet(alice, "50")))
    assert.equal(202, (send(signed(alice, { type = "stake", payload = { amount = "2000000000" } }))))
    local a = account(alice)
    assert.equal("2", a.staked)
    local status, err = send(signed(alice, { type = "unstake", payload = { amount = "3000000000" } }))
    assert.equal(400, status)
    assert.equal("insufficient_stake", err.error.code)
    assert.equal(202, (send(signed(alice, { type = "unstake", payload = { amount = "2000000000" } }))))
    assert.equal("0", account(alice).staked)
    assert.equal(a.total, account(alice).total)
  end)

  it("takes a batch: each transaction checked and applied on its own, in order, refusals changing nothing", function()
    assert.equal(202, (faucet(alice, "50")))
    local a, b = account(alice), account(bob)
    local n = a.nonce
    local status, res = send { transactions = {
      signed(alice, { nonce = n + 1, payload = { to = bob.address, amount = "1000000000" } }),
      signed(alice, { nonce = n + 2, payload = { to = bob.address, amount = "1" } }, bob),
      signed(alice, { nonce = n + 2, payload = { to = bob.address, amount = "2000000000" } }),
      signed(alice, { nonce = n + 3, payload = { to = bob.address, amount = "1000000000000" } }),
      "not a transaction",
    } }
    assert.equal(200, status)
    assert.equal(2, res.accepted)
    assert.equal(3, res.rejected)
    assert.equal("pending", res.results[1].status)
    assert.equal("bad_signature", res.results[2].error.code)
    assert.equal("pending", res.results[3].status)
    assert.equal("insufficient_funds", res.results[4].error.code)
    assert.equal("invalid_tx", res.results[5].error.code)
    assert.equal(n + 2, account(alice).nonce)
    assert.equal(tostring(math.tointeger(a.balance_units) - 3000000000), account(alice).balance_units)
    assert.equal(tostring(math.tointeger(b.balance_units) + 3000000000), account(bob).balance_units)
    local _, t = node:request("GET", "/v1/chain/ait-devnet/transactions/" .. res.results[3].hash)
    assert.equal(n + 2, t.nonce)
    local bad, err = send { transactions = {} }
    assert.equal(400, bad)
    assert.equal("invalid_batch", err.error.code)
  end)

  it("produces blocks that are hash-linked, signed by the node, and seal each accepted transaction once", function()
    assert.equal(202, (faucet(alice, "50")))
    assert.equal(202, (send(signed(alice, { payload = { to = bob.address, amount = "1000000000" } }))))
    assert.equal(202, (send(signed(alice, { type = "stake", payload = { amount = "2000000000" } }))))
    cli.wait_for("blocks to include every accepted transaction", function()
      for hash in pairs(accepted) do if not included(hash) then return false end end
      return true
    end)
    local _, head = node:request("GET", "/v1/chain/ait-devnet/head")
    local _, h = node:request("GET", "/health")
    local pk = crypto.unbase64(h.node_key, "urlsafe")
    local sealed = {}
    local block = head
    while block.height > 0 do
      local _, full = node:request("GET", "/v1/chain/ait-devnet/blocks/" .. block.height)
      local header = { chain_id = full.chain_id, height = full.height, prev_hash = full.prev_hash, timestamp = full.timestamp,
        tx_count = full.tx_count, tx_root = full.tx_root, proposer = full.proposer }
      assert.equal(full.hash, chain.hash(header))
      assert.is_true(crypto.verify(crypto.unbase64(full.signature, "urlsafe"), full.hash, pk))
      assert.equal(full.tx_count, #full.transactions)
      if #full.transactions > 0 then
        assert.equal(full.tx_root, crypto.hex(crypto.sha256(table.concat(full.transactions))))
      end
      for _, hash in ipairs(full.transactions) do
        assert.is_nil(sealed[hash], hash .. " sealed twice")
        sealed[hash] = full.height
        assert.equal(full.height, included(hash).block_height)
      end
      local _, prev = node:request("GET", "/v1/chain/ait-devnet/blocks/" .. full.prev_hash)
      assert.equal(full.height - 1, prev.height)
      block = prev
    end
    -- what was sealed is exactly what was accepted: nothing lost, nothing added
    local want, got = {}, {}
    for hash in pairs(accepted) do want[#want + 1] = hash end
    for hash in pairs(sealed) do got[#got + 1] = hash end
    table.sort(want)
    table.sort(got)
    assert.same(want, got)
    assert.is_true(h.chains["ait-devnet"] >= head.height)
  end)
end)

describe("aitbc wallet on the chain", function()
  it("shows balances, sends, stakes and lists history", function()
    local node = nodes.start { args = { "--block-time", "0.2", "--log-level", "warn" } }
    local home = cli.tempdir()
    local env = { AITBC_WALLET_PASSWORD = "a good password", AITBC_CLIENT_KEY = node:key("client") }
    local function run(args) return node:cli(args, { home = home, env = env }) end
    assert.equal(0, run({ "wallet", "create", "--name", "a" }).code)
    assert.equal(0, run({ "wallet", "create", "--name", "b" }).code)
    local b = run({ "wallet", "address", "b" }).out:gsub("%s+$", "")
    assert.equal(0, run({ "wallet", "faucet", "--amount", "20" }).code)
    local bal = run { "wallet", "balance" }
    assert.matches("available%s+20 AITBC", bal.out)
    assert.matches("staked%s+0 AITBC", bal.out)
    assert.matches("total%s+20 AITBC", bal.out)
    local sent = run { "wallet", "send", b, "2.5", "--wait" }
    assert.equal(0, sent.code, sent.err)
    assert.matches("status%s+included %(block %d+%)", sent.out)
    assert.equal(0, run({ "wallet", "stake", "5" }).code)
    local j = run({ "-o", "json", "wallet", "balance" }).json()
    assert.equal("12.5", j.available)
    assert.equal("5", j.staked)
    assert.equal("17.5", j.total)
    assert.equal("2.5", run({ "-o", "json", "wallet", "balance", "b" }).json().available)
    local over = run { "wallet", "send", b, "1000" }
    assert.equal(1, over.code)
    assert.matches("balance is 12%.5 AITBC, less than 1000", over.err)
    local hist = run { "wallet", "history" }
    assert.matches("transfer%s+%-2%.5", hist.out)
    assert.matches("faucet%s+%+20", hist.out)
    assert.equal(2, run({ "wallet", "send", "ait1bad", "1" }).code)
    node:stop()
  end)
end)

describe("aitbc chain", function()
  it("prints chains, blocks, transactions and accounts as fields, never JSON in a cell", function()
    local node = nodes.start { args = { "--block-time", "0.2", "--log-level", "warn" } }
    local home = cli.tempdir()
    local env = { AITBC_WALLET_PASSWORD = "a good password", AITBC_CLIENT_KEY = node:key("client") }
    local function run(args) return node:cli(args, { home = home, env = env }) end
    assert.equal(0, run({ "wallet", "create", "--name", "a" }).code)
    assert.equal(0, run({ "wallet", "faucet", "--amount", "3" }).code)
    local address = run({ "wallet", "address" }).out:gsub("%s+$", "")
    local tx = run({ "-o", "json", "wallet", "history" }).json().items[1]
    local block = cli.wait_for("the faucet's transaction in a block", function()
      return run({ "-o", "json", "chain", "tx", tx.hash }).json().block_height
    end)
    local outputs = {
      { { "chain", "list" }, "ait%-devnet%s+%d+%s+%x+%s+producing%s+on" },
      { { "chain", "head" }, "height%s+%d+" },
      { { "chain", "block", tostring(block) }, "transactions%s+1\n.*\n  " .. tx.hash },
      { { "chain", "tx", tx.hash }, "type%s+faucet.*status%s+included %(block " .. block .. "%).*amount%s+3 AITBC" },
      { { "chain", "account", address }, "available%s+3 AITBC.*in escrow%s+0 AITBC" },
    }
    for _, o in ipairs(outputs) do
      local r = run(o[1])
      assert.equal(0, r.code, r.err)
      assert.matches(o[2], r.out)
      assert.not_matches('[%[{]"', r.out, table.concat(o[1], " "))
    end
    node:stop()
  end)
end)

describe("job payments (client pay)", function()
  it("holds the payment in escrow, releases it to the miner on completion, refunds it on failure", function()
    local node = nodes.start { args = { "--block-time", "0.2", "--log-level", "warn" } }
    local client_home, miner_home = cli.tempdir(), cli.tempdir()
    local client_env = { AITBC_WALLET_PASSWORD = "client wallet pw", AITBC_CLIENT_KEY = node:key("client") }
    local miner_key = node:key("miner")
    local function as_client(args) return node:cli(args, { home = client_home, env = client_env }) end
    assert.equal(0, as_client({ "wallet", "create", "--name", "payer" }).code)
    assert.equal(0, as_client({ "wallet", "faucet", "--amount", "50" }).code)
    -- the miner has a wallet: its address becomes the payout address
    local miner_env = { AITBC_WALLET_PASSWORD = "miner wallet pw", AITBC_MINER_KEY = miner_key }
    assert.equal(0, node:cli({ "wallet", "create", "--name", "rig" }, { home = miner_home, env = miner_env }).code)
    local payout = node:cli({ "wallet", "address" }, { home = miner_home }).out:gsub("%s+$", "")
    local reg = node:cli({ "-o", "json", "miner", "register", "--gpus", "1x RTX 4090", "--models", "llama3", "--miner-id", "paid-rig" },
      { home = miner_home, env = miner_env }).json()
    assert.equal(payout, reg.payout_address)
    local bad = node:cli({ "miner", "register", "--gpus", "1x RTX 4090", "--payout-address", "ait1nope", "--miner-id", "x" },
      { home = miner_home, env = miner_env })
    assert.equal(1, bad.code)
    assert.matches("payout_address is not an AITBC address", bad.err)

    local job = as_client({ "-o", "json", "client", "submit", "--model", "llama3", "--prompt", "paid work" }).json()
    local pay = as_client { "client", "pay", job.job_id, "--amount", "10" }
    assert.equal(0, pay.code, pay.err)
    assert.matches("paid 10 AITBC for job " .. job.job_id, pay.out)
    assert.matches("transaction%s+%x+", pay.out)
    assert.matches("payment status%s+funded", pay.out)
    assert.equal("40", as_client({ "-o", "json", "wallet", "balance" }).json().available)
    local st = as_client({ "-o", "json", "client", "status", job.job_id }).json()
    assert.equal("funded", st.payment_status)
    assert.matches("payment%s+10 AITBC, funded", as_client({ "client", "status", job.job_id }).out)
    local twice = as_client { "client", "pay", job.job_id, "1" }
    assert.equal(1, twice.code) -- the node answers 409: the job already has a payment
    assert.matches("already has a payment", twice.err)
    -- the miner completes it: the escrow goes to the payout address
    local _, got = node:request("POST", "/v1/miners/poll", { key = miner_key, headers = { ["X-Miner-ID"] = "paid-rig" }, json = {} })
    assert.equal(job.job_id, got.job_id)
    node:request("POST", "/v1/miners/" .. job.job_id .. "/result", { key = miner_key, headers = { ["X-Miner-ID"] = "paid-rig" },
      json = { result = "done" } })
    local released = cli.wait_for("the escrow's release", function()
      local st2 = as_client({ "-o", "json", "client", "status", job.job_id }).json()
      assert.is_true(st2.payment_status == "funded" or st2.payment_status == "released", st2.payment_status)
      return st2.payment_status == "released" and st2
    end)
    -- the escrow, and the chain's reward for completing a job (miner_reward: 1 AITBC unless governance changed it)
    cli.wait_for("the miner's reward", function()
      return node:cli({ "-o", "json", "wallet", "balance" }, { home = miner_home }).json().available == "11"
    end)
    local _, t = node:request("GET", "/v1/chain/ait-devnet/transactions/" .. released.settlement_id)
    assert.equal("escrow_release", t.type)
    assert.equal(payout, t.to)

    -- a job that fails: the payer gets the coins back
    local job2 = as_client({ "-o", "json", "client", "submit", "--model", "llama3", "--prompt", "will fail" }).json()
    assert.equal(0, as_client({ "client", "pay", job2.job_id, "7.5" }).code)
    assert.equal("32.5", as_client({ "-o", "json", "wallet", "balance" }).json().available)
    node:request("POST", "/v1/miners/poll", { key = miner_key, headers = { ["X-Miner-ID"] = "paid-rig" }, json = {} })
    node:request("POST", "/v1/miners/" .. job2.job_id .. "/fail", { key = miner_key, headers = { ["X-Miner-ID"] = "paid-rig" },
      json = { error_message = "out of memory" } })
    cli.wait_for("the escrow's refund", function()
      local st2 = as_client({ "-o", "json", "client", "status", job2.job_id }).json()
      assert.is_true(st2.payment_status == "funded" or st2.payment_status == "refunded", st2.payment_status)
      return st2.payment_status == "refunded"
    end)
    assert.equal("40", as_client({ "-o", "json", "wallet", "balance" }).json().available)
    -- someone else's job, or more than the balance: refused, nothing moves
    local other = node:key("client")
    local _, job3 = node:request("POST", "/v1/jobs", { key = other, json = { payload = { prompt = "theirs" } } })
    assert.equal(3, as_client({ "client", "pay", job3.job_id, "1" }).code)
    local job4 = as_client({ "-o", "json", "client", "submit", "--model", "llama3", "--prompt", "too dear" }).json()
    local over = as_client { "client", "pay", job4.job_id, "1000" }
    assert.equal(1, over.code)
    assert.matches("balance is 40 AITBC", over.err)
    assert.equal("40", as_client({ "-o", "json", "wallet", "balance" }).json().available)
    node:stop()
  end)
end)

describe("a following node", function()
  it("verifies every block from the leader and reaches the same state", function()
    local leader = nodes.start { args = { "--block-time", "0.2", "--log-level", "warn" } }
    local ckey = leader:key("client")
    local a, b = wallet.keys(bip39.generate(24)), wallet.keys(bip39.generate(24))
    leader:request("POST", "/v1/chain/ait-devnet/faucet", { key = ckey, json = { address = a.address, amount = "30" } })
    local function tx(who, kind, payload)
      local _, acc = leader:request("GET", "/v1/chain/ait-devnet/accounts/" .. who.address)
      local t = { chain_id = "ait-devnet", type = kind, from = who.address, public_key = crypto.hex(who.public_key),
        nonce = acc.nonce + 1, payload = payload, timestamp = os.time() }
      assert.equal(202, (leader:request("POST", "/v1/chain/ait-devnet/transactions", { json = { tx = t,
        signature = crypto.base64(crypto.sign(chain.hash(t), who.secret_key), "urlsafe") } })))
    end
    tx(a, "transfer", { to = b.address, amount = "5000000000" })
    tx(a, "stake", { amount = "2000000000" })
    tx(b, "transfer", { to = a.address, amount = "1000000000" })
    -- an escrow that is refunded (the job is canceled): node-signed settlement transactions too
    local _, job = leader:request("POST", "/v1/jobs", { key = ckey, json = { payload = { prompt = "x" } } })
    local _, acc = leader:request("GET", "/v1/chain/ait-devnet/accounts/" .. a.address)
    local lock = { chain_id = "ait-devnet", type = "escrow_lock", from = a.address, public_key = crypto.hex(a.public_key),
      nonce = acc.nonce + 1, payload = { job_id = job.job_id, amount = "3000000000" }, timestamp = os.time() }
    local paid, payment = leader:request("POST", "/v1/jobs/" .. job.job_id .. "/payment", { key = ckey, json = { tx = lock,
      signature = crypto.base64(crypto.sign(chain.hash(lock), a.secret_key), "urlsafe") } })
    assert.equal(202, paid)
    leader:request("POST", "/v1/jobs/" .. job.job_id .. "/cancel", { key = ckey })
    local refund = cli.wait_for("the escrow's refund", function()
      local _, j = leader:request("GET", "/v1/jobs/" .. job.job_id, { key = ckey })
      return j.payment_status == "refunded" and j.settlement_id
    end)
    local function tx_on(node, hash)
      local _, t = node:request("GET", "/v1/chain/ait-devnet/transactions/" .. hash)
      return t
    end
    cli.wait_for("a block to include the refund", function() return tx_on(leader, refund).status == "included" end)
    local follower = nodes.start { args = { "--follow", leader.url, "--log-level", "warn" } }
    local _, lhead = leader:request("GET", "/v1/chain/ait-devnet/head")
    cli.wait_for("the follower to reach the leader's height " .. lhead.height, function()
      local _, fhead = follower:request("GET", "/v1/chain/ait-devnet/head")
      return fhead.height and fhead.height >= lhead.height -- 404 until the genesis is fetched
    end)
    for h = 0, lhead.height do
      local _, lb = leader:request("GET", "/v1/chain/ait-devnet/blocks/" .. h)
      local _, fb = follower:request("GET", "/v1/chain/ait-devnet/blocks/" .. h)
      assert.equal(lb.hash, fb.hash)
    end
    local _, chains = leader:request("GET", "/v1/chains")
    for _, who in ipairs { a.address, b.address, chains.faucet } do
      local _, la = leader:request("GET", "/v1/chain/ait-devnet/accounts/" .. who)
      local _, fa = follower:request("GET", "/v1/chain/ait-devnet/accounts/" .. who)
      assert.same(la, fa)
    end
    -- the escrow: locked and refunded in the same blocks on both, and empty on both (the account
    -- routes take wallet addresses only, so its balance is read from each node's store)
    for _, hash in ipairs { payment.tx_hash, refund } do
      local lt, ft = tx_on(leader, hash), tx_on(follower, hash)
      assert.same({ "included", lt.block_height, lt.type, lt.from, lt.to, "3" },
        { ft.status, ft.block_height, ft.type, ft.from, ft.to, ft.amount })
    end
    assert.same({ "escrow_lock", "escrow_refund" }, { tx_on(follower, payment.tx_hash).type, tx_on(follower, refund).type })
    for _, n in ipairs { leader, follower } do
      local store = assert(require("aitbc.node.store").open(n.dir .. "/node.db"))
      local escrow = store:chain_account("ait-devnet", "escrow:" .. job.job_id)
      store:close()
      assert.same({ 0, 0 }, { escrow.balance, escrow.staked })
    end
    local _, fa = follower:request("GET", "/v1/chain/ait-devnet/accounts/" .. a.address)
    assert.equal("24", fa.balance) -- 30 - 5 - 2 (staked) + 1; the 3 locked in escrow came back
    assert.equal("2", fa.staked)
    local s, err = follower:request("POST", "/v1/chain/ait-devnet/transactions", { json = { tx = lock, signature = "x" } })
    assert.equal(409, s)
    assert.equal("follower", err.error.code)
    follower:stop()
    leader:stop()
  end)

  it("follows only the authority it was told to trust (--authority)", function()
    local leader = nodes.start { args = { "--block-time", "0.2", "--log-level", "warn" } }
    local _, lchains = leader:request("GET", "/v1/chains")
    local follower = nodes.start { args = { "--follow", leader.url, "--authority", lchains.authority, "--log-level", "warn" } }
    local _, lhead = leader:request("GET", "/v1/chain/ait-devnet/head")
    cli.wait_for("the follower to reach the leader's height " .. lhead.height, function()
      local _, fhead = follower:request("GET", "/v1/chain/ait-devnet/head")
      return fhead.height and fhead.height >= lhead.height
    end)
    local _, fchains = follower:request("GET", "/v1/chains")
    assert.same({ lchains.authority, leader.url }, { fchains.authority, fchains.follows })
    local _, lb = leader:request("GET", "/v1/chain/ait-devnet/blocks/1")
    local _, fb = follower:request("GET", "/v1/chain/ait-devnet/blocks/1")
    assert.equal(lb.hash, fb.hash)
    -- a leader that announces another key than the one to trust is not followed at all
    local stranger = crypto.base64(crypto.sign_keypair(), "urlsafe")
    local r = cli.run { "serve", "--listen", "127.0.0.1:0", "--data-dir", cli.tempdir(), "--follow", leader.url,
      "--authority", stranger }
    assert.equal(1, r.code)
    assert.matches("announces another authority key than %-%-authority", r.err)
    r = cli.run { "serve", "--listen", "127.0.0.1:0", "--data-dir", cli.tempdir(), "--follow", leader.url,
      "--authority", "not-a-key" }
    assert.equal(2, r.code)
    assert.matches("%-%-authority must be a node key", r.err)
  end)

  it("refuses a block that was altered, signed by someone else, or does not extend its head", function()
    local store = assert(require("aitbc.node.store").open(cli.tempdir() .. "/f.db"))
    local authority = { }
    authority.public, authority.secret = crypto.sign_keypair()
    authority.id = crypto.base64(authority.public, "urlsafe")
    local leader_store = assert(require("aitbc.node.store").open(cli.tempdir() .. "/l.db"))
    chain.genesis(leader_store, "c", authority, 1000)
    chain.produce(leader_store, "c", authority, 1001)
    local function view(h)
      local b = leader_store:chain_block("c", h)
      b.transactions = {}
      return b
    end
    chain.follow_block(store, "c", view(0), {}, authority.public)
    local altered = view(1)
    altered.timestamp = altered.timestamp + 1
    local ok, e = pcall(chain.follow_block, store, "c", altered, {}, authority.public)
    assert.is_false(ok)
    assert.matches("hash does not match", e.follow_error)
    local stranger = crypto.sign_keypair()
    ok, e = pcall(chain.follow_block, store, "c", view(1), {}, stranger)
    assert.is_false(ok)
    assert.matches("not signed by the authority", e.follow_error)
    local skip = view(1)
    skip.height = 5
    ok, e = pcall(chain.follow_block, store, "c", skip, {}, authority.public)
    assert.is_false(ok)
    assert.matches("does not extend", e.follow_error)
    assert.equal(0, store:chain_head("c").height) -- nothing applied
    chain.follow_block(store, "c", view(1), {}, authority.public)
    assert.equal(view(1).hash, store:chain_head("c").hash)
    store:close()
    leader_store:close()
  end)
end)

describe("aitbc chain seal", function()
  it("seals pending transactions into a block at once, for admins only", function()
    local node = nodes.start { args = { "--block-time", "3600", "--log-level", "warn" } }
    finally(function() node:stop() end)
    local who = wallet.keys(bip39.generate(12))
    local _, funded = node:request("POST", "/v1/chain/ait-devnet/faucet", { key = node:key("client"), json = { address = who.address } })
    local _, t = node:request("GET", "/v1/chain/ait-devnet/transactions/" .. funded.hash)
    assert.equal("pending", t.status)
    local denied = node:cli({ "chain", "seal" }, { env = { AITBC_API_KEY = node:key("client") } })
    assert.equal(4, denied.code)
    local r = node:cli({ "-o", "json", "chain", "seal" }, { env = { AITBC_ADMIN_KEY = node.admin_key } })
    assert.equal(0, r.code, r.err)
    local block = r.json()
    assert.equal(1, block.tx_count)
    _, t = node:request("GET", "/v1/chain/ait-devnet/transactions/" .. funded.hash)
    assert.equal("included", t.status)
    assert.equal(block.height, t.block_height)
  end)
end)
