-- Governance on a real node (spec §6, DESIGN.md §10): proposals and votes
-- typed as a user types them, tallies written by the block that closes the
-- voting, a passed change that a later job's reward shows, a proposal that
-- misses quorum (its deposit burned), refusals that change nothing, and a
-- follower that reaches the same state by replaying the blocks.
local cli = require "support.cli"
local crypto = require "aitbc.crypto"
local json = require "aitbc.json"
local nodes = require "support.node"
local sys = require "aitbc.sys"

local VOTING = 25 -- blocks (of 0.2 s): long enough for the CLI steps of a test

describe("governance", function()
  local node, client_key
  setup(function()
    node = nodes.start { args = { "--block-time", "0.2", "--log-level", "warn", "--param", "voting_period=" .. VOTING,
      "--param", "min_deposit=100" } }
    client_key = node:key("client")
  end)
  teardown(function() node:stop() cli.cleanup() end)

  --- A user with a wallet of their own, funded (and staked) from the faucet.
  local function user(name, funds, stake)
    local home = cli.tempdir()
    local env = { AITBC_WALLET_PASSWORD = "pw of " .. name, AITBC_CLIENT_KEY = client_key }
    local u = { home = home, env = env }
    function u.run(args, opts)
      return node:cli(args, { home = home, env = env, timeout = opts and opts.timeout or 60 })
    end
    assert.equal(0, u.run({ "wallet", "create", "--name", name }).code)
    u.address = u.run({ "wallet", "address" }).out:gsub("%s+$", "")
    if funds then assert.equal(0, u.run({ "wallet", "faucet", "--amount", funds }).code) end
    if stake then
      local r = u.run { "wallet", "stake", stake, "--wait" }
      assert.equal(0, r.code, r.err)
    end
    return u
  end

  local function account(address)
    local _, a = node:request("GET", "/v1/chain/ait-devnet/accounts/" .. address)
    return a
  end
  local function proposal(id)
    local _, p = node:request("GET", "/v1/chain/ait-devnet/proposals/" .. id)
    return p
  end
  local function param(name)
    local _, p = node:request("GET", "/v1/chain/ait-devnet/params")
    return p.params[name].value
  end

  it("6.1–6.3: propose, vote, result; a passed change applies and a later job pays the new reward", function()
    local alice = user("alice", "2000", "500")
    local bob = user("bob", "300", "250")
    -- 6.1, as the spec writes it
    local r = alice.run { "governance", "propose", "--title", "Increase Miner Rewards", "--description",
      "Proposal to increase base reward by 5%", "--amount", "1000" }
    assert.equal(0, r.code, r.err)
    local text_id = r.out:match("proposal (prop_%x+) submitted: Increase Miner Rewards")
    assert.is_string(text_id, r.out)
    assert.matches("deposit%s+1000 AITBC", r.out)
    assert.matches("voting%s+blocks (%d+)–(%d+) %(" .. VOTING .. " blocks%)", r.out)
    assert.matches("the stake at block %d+ votes %(750 AITBC in all%)", r.out)
    -- one that changes the reward, with the older CLI's --parameter/--value
    local change = alice.run({ "-o", "json", "governance", "propose", "--title", "Miner reward 1.05", "--description",
      "5% more", "--parameter", "miner_reward", "--value", "1.05" }).json()
    assert.equal("active", change.proposal.status)
    assert.same({ miner_reward = "1.05" }, change.changes)
    assert.equal("100", change.deposit) -- the chain's min_deposit
    -- 6.2, as the spec writes it: the transaction hash, in a block
    r = alice.run { "governance", "vote", text_id, "--vote", "yes", "--amount", "500" }
    assert.equal(0, r.code, r.err)
    local hash = r.out:match("transaction%s+(%x+) %(block %d+%)")
    assert.is_string(hash, r.out)
    local tx = alice.run({ "-o", "json", "chain", "tx", hash }).json()
    assert.same({ "gov_vote", "included", "yes", "500000000000" }, { tx.type, tx.status, tx.tx.payload.choice,
      tx.tx.payload.power })
    -- the older CLI's positional choice; bob votes no with less than he has
    assert.equal(0, alice.run({ "governance", "vote", change.proposal_id, "for" }).code)
    assert.equal(0, bob.run({ "governance", "vote", change.proposal_id, "--vote", "against", "--amount", "100" }).code)
    -- a later vote replaces the earlier: bob's power counts once
    local again = bob.run({ "-o", "json", "governance", "vote", change.proposal_id, "--vote", "abstain" }).json()
    assert.is_true(again.replaced)
    assert.equal("250", again.power) -- all he may vote with, by default
    -- 6.3: live tally, then the decision
    local live = alice.run({ "-o", "json", "governance", "result", change.proposal_id }).json()
    assert.equal("active", live.status)
    assert.same({ "500", "0", "250", 2 }, { live.tally.yes, live.tally.no, live.tally.abstain, live.tally.voters })
    r = alice.run({ "governance", "result", change.proposal_id, "--wait" }, { timeout = 60 })
    assert.equal(0, r.code, r.err)
    assert.matches("PASSED", r.out)
    assert.matches("yes%s+500 AITBC%s+66%.7%%", r.out)
    assert.matches("turnout%s+750 of 750 AITBC staked %(100%.0%%%)", r.out)
    assert.matches("applied%s+miner_reward = 1%.05 from block %d+", r.out)
    assert.matches("deposit%s+returned to " .. alice.address, r.out)
    local decided = proposal(change.proposal_id)
    assert.equal("1.05", param("miner_reward"))
    local _, params = node:request("GET", "/v1/chain/ait-devnet/params")
    assert.same({ decided.decision.applies_from, change.proposal_id },
      { params.params.miner_reward.since_height, params.params.miner_reward.proposal_id })
    local tally = alice.run({ "-o", "json", "chain", "tx", decided.decision.tx_hash }).json()
    assert.same({ "gov_tally", "passed", decided.decision.decided_height }, { tally.type, tally.tx.payload.outcome,
      tally.block_height })
    -- what -o json gives is what --json FIELDS may select
    local registry = require "aitbc.cli.registry"
    for _, args in ipairs { { "result", text_id }, { "show", text_id }, { "list" } } do
      local decl = registry.get("governance").by_name[args[1]]
      local known = {}
      for _, f in ipairs(decl.fields) do known[f] = true end
      local doc = alice.run({ "-o", "json", "governance", table.unpack(args) }).json()
      for _, rec in ipairs(decl.list and doc[decl.list] or { doc }) do
        for k in pairs(rec) do assert.is_true(known[k], "governance " .. args[1] .. " gives " .. k) end
      end
    end
    assert.equal(0, alice.run({ "wait", "proposal", text_id, "--timeout", "30" }).code)
    assert.equal("passed", proposal(text_id).status)
    -- both deposits came back: 2000 - 500 staked - 1000 - 100 + 1100
    assert.equal("1500", account(alice.address).balance)

    -- a job completed now pays its miner the new reward
    local miner_key = node:key("miner")
    local payout = user("rig").address
    node:request("POST", "/v1/miners/register", { key = miner_key, json = { miner_id = "rig", payout_address = payout,
      capabilities = { models = { "llama3" } } } })
    local _, job = node:request("POST", "/v1/jobs", { key = client_key, json = { payload = { prompt = "hi" },
      model = "llama3" } })
    node:request("POST", "/v1/miners/poll", { key = miner_key, headers = { ["X-Miner-ID"] = "rig" }, json = {} })
    node:request("POST", "/v1/miners/" .. job.job_id .. "/result", { key = miner_key, headers = { ["X-Miner-ID"] = "rig" },
      json = { result = { response = "done" } } })
    local paid = cli.wait_for("the reward", function()
      local _, j = node:request("GET", "/v1/jobs/" .. job.job_id, { key = client_key })
      return j.reward_status == "paid" and j
    end)
    local _, reward = node:request("GET", "/v1/chain/ait-devnet/transactions/" .. paid.reward_tx)
    assert.same({ "miner_reward", payout, "1.05" }, { reward.type, reward.to, reward.amount })
  end)

  it("a proposal that misses quorum is rejected and its deposit burned; voted stake stays staked until the tally", function()
    local carol = user("carol", "1500", "100")
    user("whale", "2000", "1000") -- stake that does not vote: carol's 100 of 1100 is under the quorum
    local p = carol.run({ "-o", "json", "governance", "propose", "--title", "Quiet", "--description", "nobody comes",
      "--amount", "300", "--set", "quorum=0.5" }).json()
    assert.equal(0, carol.run({ "governance", "vote", p.proposal_id, "--vote", "yes" }).code)
    -- the stake that voted cannot leave before the tally
    local r = carol.run { "wallet", "unstake", "50" }
    assert.equal(1, r.code)
    assert.matches("100 AITBC of the stake votes on open proposals", r.err)
    assert.equal("100", account(carol.address).staked)
    r = carol.run({ "governance", "result", p.proposal_id, "--wait" }, { timeout = 60 })
    assert.equal(0, r.code, r.err)
    assert.matches("REJECTED", r.out)
    assert.matches("quorum%s+33%.4%% of the stake must vote: not reached", r.out)
    assert.matches("deposit%s+burned", r.out)
    local view = proposal(p.proposal_id)
    assert.same({ "rejected", false, "burned" }, { view.status, view.decision.quorum_reached, view.decision.deposit })
    assert.equal("0.334", param("quorum")) -- nothing applied
    assert.equal("1100", account(carol.address).balance) -- 1500 - 100 staked - 300 burned
    local _, tally = node:request("GET", "/v1/chain/ait-devnet/transactions/" .. view.decision.tx_hash)
    assert.same({ "gov_tally", "gov:burned", "300" }, { tally.type, tally.to, tally.amount })
    -- after the tally the stake is free again
    assert.equal(0, carol.run({ "wallet", "unstake", "50", "--wait" }).code)
  end)

  it("refuses bad proposals and votes with a clear error, changing nothing", function()
    local dave = user("dave", "500", "200")
    local before = account(dave.address)
    local function refused(args, code, pattern)
      local r = dave.run(args)
      assert.equal(code, r.code, r.out .. r.err)
      assert.matches(pattern, r.err)
    end
    refused({ "governance", "propose", "--title", "t", "--description", "d", "--amount", "50" }, 1,
      "the deposit is 50 AITBC; proposals need at least 100 AITBC")
    refused({ "governance", "propose", "--title", "t", "--description", "d", "--amount", "5000" }, 1,
      "the balance is 300 AITBC, less than 5000")
    refused({ "governance", "propose", "--title", "t", "--description", "d", "--set", "block_size=2" }, 2,
      "%-%-set block_size is not a chain parameter")
    refused({ "governance", "propose", "--title", "t", "--description", "d", "--set", "quorum=1.5" }, 2,
      "%-%-set quorum must be at most 1")
    refused({ "governance", "propose", "--title", "t", "--description", "d", "--set", "voting_period=0" }, 2,
      "must be a whole number of blocks from 1")
    refused({ "governance", "propose", "--description", "d" }, 2, "%-%-title is required")
    assert.same(before, account(dave.address))
    local p = dave.run({ "-o", "json", "governance", "propose", "--title", "t", "--description", "d" }).json()
    refused({ "governance", "vote", p.proposal_id, "--vote", "maybe" }, 2, "a vote is yes, no or abstain")
    refused({ "governance", "vote", p.proposal_id, "--vote", "yes", "--amount", "201" }, 1,
      "can vote with at most 200 AITBC")
    refused({ "governance", "vote", "prop_000000000000", "--vote", "yes" }, 3, "no proposal prop_000000000000")
    -- stake added after the snapshot does not vote
    assert.equal(0, dave.run({ "wallet", "stake", "50", "--wait" }).code)
    refused({ "governance", "vote", p.proposal_id, "--vote", "yes", "--amount", "250" }, 1,
      "had 200 AITBC staked at block %d+ %(the proposal's snapshot%)")
    assert.equal(0, proposal(p.proposal_id).tally.voters)
    -- after the end
    assert.equal(0, dave.run({ "wait", "proposal", p.proposal_id, "--timeout", "30" }).code)
    refused({ "governance", "vote", p.proposal_id, "--vote", "yes" }, 1, "voting on " .. p.proposal_id .. " has closed")
    -- the node refuses it too, when a client skips the CLI's check
    local doc = require("aitbc.wallet").open(json.decode(assert(sys.read_file(dave.home .. "/wallets/dave.json"))),
      "pw of dave")
    local a = account(dave.address)
    local tx = { chain_id = "ait-devnet", type = "gov_vote", from = dave.address, public_key = crypto.hex(doc.public_key),
      nonce = a.nonce + 1, payload = { proposal_id = p.proposal_id, choice = "yes", power = "1000000000" },
      timestamp = os.time() }
    local status, res = node:request("POST", "/v1/chain/ait-devnet/transactions",
      { json = require("aitbc.protocol.signing").signed_tx(tx, doc.secret_key) })
    assert.equal(409, status)
    assert.equal("voting_closed", res.error.code)
  end)

  it("a follower replays proposals, votes and tallies to the same state, and refuses a forged tally", function()
    local erin = user("erin", "5000", "4000") -- more than a third of all the stake: quorum on its own
    local p = erin.run({ "-o", "json", "governance", "propose", "--title", "Shorter votes", "--description", "faster",
      "--set", "voting_period=4" }).json()
    assert.equal(0, erin.run({ "governance", "vote", p.proposal_id, "--vote", "yes" }).code)
    assert.equal(0, erin.run({ "wait", "proposal", p.proposal_id, "--timeout", "30" }).code)
    local follower = nodes.start { args = { "--follow", node.url, "--log-level", "warn" } }
    finally(function() follower:stop() end)
    local _, lhead = node:request("GET", "/v1/chain/ait-devnet/head")
    cli.wait_for("the follower at the leader's height", function()
      local s, h = follower:request("GET", "/v1/chain/ait-devnet/head")
      return s == 200 and h.height >= lhead.height
    end, 30)
    local _, lp = node:request("GET", "/v1/chain/ait-devnet/proposals?limit=500")
    local _, fp = follower:request("GET", "/v1/chain/ait-devnet/proposals?limit=500")
    local function decided(list)
      local out = {}
      for _, x in ipairs(list.items) do
        if x.decision then out[x.proposal_id] = { x.status, x.tally.yes, x.tally.no, x.tally.abstain, x.decision.deposit } end
      end
      return out
    end
    assert.same(decided(lp), decided(fp))
    assert.is_truthy(decided(fp)[p.proposal_id])
    local _, lparams = node:request("GET", "/v1/chain/ait-devnet/params")
    local _, fparams = follower:request("GET", "/v1/chain/ait-devnet/params")
    assert.same(lparams.params, fparams.params)
    assert.equal("4", fparams.params.voting_period.value)
    assert.same(account(erin.address), (function()
      local _, a = follower:request("GET", "/v1/chain/ait-devnet/accounts/" .. erin.address)
      return a
    end)())

    -- a tally that does not match the votes: the follower refuses the block, changing nothing
    local chain = require "aitbc.node.chain"
    local signing = require "aitbc.protocol.signing"
    local store_mod = require "aitbc.node.store"
    local authority = {}
    authority.public, authority.secret = crypto.sign_keypair()
    authority.id = crypto.base64(authority.public, "urlsafe")
    local leader = assert(store_mod.open(cli.tempdir() .. "/l.db"))
    local copy = assert(store_mod.open(cli.tempdir() .. "/f.db"))
    finally(function() leader:close() copy:close() end)
    chain.genesis(leader, "c-devnet", authority, 1000, { voting_period = "1", min_deposit = "1" })
    local who = require("aitbc.wallet").keys(require("aitbc.wallet.bip39").generate(12))
    local function block(store, h) -- a block as a leader serves it, and its transactions
      local b, txs = store:chain_block("c-devnet", h), {}
      b.transactions = {}
      for i, t in ipairs(store:chain_block_txs("c-devnet", h)) do
        b.transactions[i] = t.hash
        local body = json.decode(store:chain_tx(t.hash).body)
        txs[i] = { tx = body.tx, signature = body.signature }
      end
      return b, txs
    end
    chain.accept(leader, "c-devnet", signing.signed_tx({ chain_id = "c-devnet", type = "transfer",
      from = require("aitbc.protocol.address").of(authority.public), public_key = crypto.hex(authority.public),
      nonce = 1, payload = { to = who.address, amount = "5000000000" }, timestamp = 1001 }, authority.secret), 1001)
    chain.produce(leader, "c-devnet", authority, 1002)
    local propose = { chain_id = "c-devnet", type = "gov_propose", from = who.address,
      public_key = crypto.hex(who.public_key), nonce = 1, payload = { title = "t", description = "d",
        deposit = "1000000000" }, timestamp = 1002 }
    chain.accept(leader, "c-devnet", signing.signed_tx(propose, who.secret_key), 1002)
    chain.produce(leader, "c-devnet", authority, 1003) -- block 2 opens the voting (1 block, nobody staked)
    chain.produce(leader, "c-devnet", authority, 1004) -- block 3 holds the tally
    for h = 0, 2 do
      local b, txs = block(leader, h)
      chain.follow_block(copy, "c-devnet", b, txs, authority.public)
    end
    local b3, forged = block(leader, 3)
    assert.equal("gov_tally", forged[1].tx.type)
    assert.equal("rejected", forged[1].tx.payload.outcome)
    forged[1].tx.payload.outcome = "passed" -- re-signed by the authority itself: still not what the votes say
    forged[1].signature = signing.sign(signing.hash(forged[1].tx), authority.secret)
    b3.transactions[1] = signing.hash(forged[1].tx)
    local ok, e = pcall(chain.follow_block, copy, "c-devnet", b3, forged, authority.public)
    assert.is_false(ok)
    assert.matches("does not match its votes", e.follow_error)
    assert.equal(2, copy:chain_head("c-devnet").height) -- nothing applied
    local good_block, good_txs = block(leader, 3)
    chain.follow_block(copy, "c-devnet", good_block, good_txs, authority.public)
    local id = require("aitbc.protocol.governance").proposal_id(chain.hash(propose))
    assert.same({ "rejected", "rejected" }, { leader:proposal_get("c-devnet", id).status,
      copy:proposal_get("c-devnet", id).status })
    assert.same(leader:chain_account("c-devnet", "gov:burned"), copy:chain_account("c-devnet", "gov:burned"))
  end)
end)
