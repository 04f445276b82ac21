-- The node against races and careless admins: one owner per miner id, no
-- lock-out of the last admin, a bounded audit log under a flood of refused
-- requests, and a private data directory.
local cli = require "support.cli"
local crypto = require "aitbc.crypto"
local http = require "aitbc.http"
local json = require "aitbc.json"
local nodes = require "support.node"
local sys = require "aitbc.sys"
local wallet = require "aitbc.wallet"

local function address()
  local public = crypto.sign_keypair(crypto.random(32))
  return wallet.address(public)
end

describe("miner registration", function()
  local node
  setup(function() node = nodes.start() end)
  teardown(function()
    node:stop()
    cli.cleanup()
  end)

  it("gives a new miner id to exactly one of two keys registering it at once, with that key's fields only", function()
    local keys = { (node:key("miner")), (node:key("miner")) }
    local bodies = {
      { payout = address(), caps = { models = { "model-of-key-1" } }, region = "region-1" },
      { payout = address(), caps = { models = { "model-of-key-2" } }, region = "region-2" },
    }
    for round = 1, 40 do
      local miner_id = "contested-" .. round
      local reqs, who = {}, {}
      for i = 1, 8 do
        local k = (i % 2) + 1
        who[i] = k
        reqs[i] = { method = "POST", url = node.url .. "/v1/miners/register", timeout = 30,
          headers = { ["X-Api-Key"] = keys[k], ["Content-Type"] = "application/json" },
          body = json.encode { miner_id = miner_id, payout_address = bodies[k].payout,
            capabilities = bodies[k].caps, region = bodies[k].region } }
      end
      local results = http.request_many(reqs)
      local won = {}
      for i, r in ipairs(results) do
        assert.is_number(r.status, r.error)
        if r.status == 200 or r.status == 201 then
          won[who[i]] = true
        else
          assert.equal(409, r.status, r.body)
          assert.equal("miner_id_taken", json.decode(r.body).error.code)
        end
      end
      local winners = {}
      for k in pairs(won) do winners[#winners + 1] = k end
      assert.equal(1, #winners, "round " .. round .. ": both keys were told they registered " .. miner_id)
      local w = winners[1]
      -- the winner's own view: its key, payout, capabilities and region
      local status, me = node:request("GET", "/v1/miners/me", { key = keys[w], headers = { ["X-Miner-ID"] = miner_id } })
      assert.equal(200, status, json.encode(me))
      assert.equal(bodies[w].payout, me.payout_address)
      assert.same(bodies[w].caps.models, me.capabilities.models)
      assert.equal(bodies[w].region, me.region)
      local loser = 3 - w
      assert.equal(403, (node:request("GET", "/v1/miners/me", { key = keys[loser], headers = { ["X-Miner-ID"] = miner_id } })))
    end
  end)
end)
