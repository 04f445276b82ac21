--- aitbc chain: the node's ledger, for people and scripts.
local BLOCK = { height = "integer", hash = "string" }
-- The JSON fields of the node's views (--json FIELDS; aitbc.cli.registry).
local BLOCK_FIELDS = { "chain_id", "height", "hash", "prev_hash", "timestamp", "time", "tx_count", "tx_root", "proposer",
  "signature" }

--- GET under the chain's path; only the data (the response stays out of the renderer's place)
local function call(ctx, template, values, expect)
  local api = require "aitbc.api"
  values.chain = ctx.settings.chain
  return (api.from_context(ctx):call("GET", api.path("/v1/chain/{chain}" .. template, values), { expect = expect }))
end

--- A chain's state in one word: a leader produces blocks; a follower is
-- following, cannot reach its leader, or HALTED on a block it refused.
local function chain_state(d, c)
  if not d.follows then return "producing" end
  local sync = c.sync or {}
  if sync.state == "halted" then return "HALTED at block " .. tostring(sync.refused_height) end
  return sync.state or "following"
end

local function render_chains(d, out)
  local rows = {}
  for i, c in ipairs(d.items) do
    rows[i] = { chain = c.chain_id, height = c.height, head = c.head_hash and c.head_hash:sub(1, 16), state = chain_state(d, c),
      faucet = not d.follows and (c.faucet and "on" or "off") or "-" }
  end
  out:print(out:format_table(rows, { { "chain", "chain", keep = true }, "height", "head", "state", "faucet" }))
  out:print(out:format_record({ authority = d.authority, follows = d.follows }, { "authority", "follows" }))
  for _, c in ipairs(d.items) do
    local sync = c.sync or {}
    if sync.state == "halted" then
      out:warn(string.format("%s stopped following %s at block %s since %s: %s", c.chain_id, d.follows,
        tostring(sync.refused_height), tostring(sync.since), tostring(sync.reason)))
    elseif sync.state == "unreachable" then
      out:warn(c.chain_id .. ": " .. tostring(sync.reason))
    end
  end
end

return {
  name = "chain",
  category = "Node",
  summary = "Read the chain: head, blocks, transactions, accounts (chain: --chain setting, default ait-devnet)",
  commands = {
    { name = "list", summary = "Chains this node keeps: height, head, faucet, and a follower's sync state",
      list = "items", id_field = "chain_id", fields = { "chain_id", "height", "head_hash", "faucet", "sync" }, watch = true,
      run = function(ctx)
        return (require("aitbc.api").from_context(ctx):call("GET", "/v1/chains", { expect = { items = "array" } })),
          render_chains
      end },
    { name = "head", summary = "The latest block", fields = BLOCK_FIELDS, watch = true,
      run = function(ctx) return call(ctx, "/head", {}, BLOCK) end },
    { name = "block", summary = "A block by height or hash", args = { { "ref", help = "height or hash" } },
      fields = { "transactions", table.unpack(BLOCK_FIELDS) },
      run = function(ctx) return call(ctx, "/blocks/{block}", { block = ctx.args.ref }, BLOCK) end },
    { name = "tx", summary = "A transaction, its status and block", args = { { "hash", help = "transaction hash" } },
      fields = { "hash", "chain_id", "type", "from", "to", "amount", "nonce", "status", "block_height", "received_at", "tx",
        "signature" }, watch = true,
      run = function(ctx)
        return call(ctx, "/transactions/{hash}", { hash = ctx.args.hash }, { hash = "string", status = "string" })
      end },
    { name = "account", summary = "An address's balance, stake and nonce", args = { { "address", help = "ait1..." } },
      fields = { "chain_id", "address", "nonce", "balance", "staked", "total", "balance_units", "staked_units" }, watch = true,
      run = function(ctx)
        return call(ctx, "/accounts/{address}", { address = require("aitbc.wallet").address_arg(ctx.args.address,
          "the address") }, { address = "string", nonce = "integer" })
      end },
    { name = "seal", summary = "Seal the pending transactions into a block now (admin key; else blocks come every --block-time)",
      id_field = "hash", fields = BLOCK_FIELDS,
      run = function(ctx)
        local api = require "aitbc.api"
        return (api.from_context(ctx, { role = "admin" }):call("POST",
          api.path("/v1/chain/{chain}/blocks", { chain = ctx.settings.chain }), { expect = BLOCK }))
      end },
  },
}
