--- aitbc chain: the node's ledger, for people and scripts.
local BLOCK = { height = "integer", hash = "string" }

--- GET under the chain's path; only the data (the response stays out of the renderer's place)
local function call(ctx, template, values, expect)
  local api = require "aitbc.api"
  values.chain = ctx.settings.chain
  return (api.from_context(ctx):call("GET", api.path("/v1/chain/{chain}" .. template, values), { expect = expect }))
end

return {
  name = "chain",
  category = "Node",
  summary = "Read the chain: head, blocks, transactions, accounts (chain: --chain setting, default ait-devnet)",
  commands = {
    { name = "list", summary = "Chains this node keeps, with their heights",
      run = function(ctx)
        return (require("aitbc.api").from_context(ctx):call("GET", "/v1/chains", { expect = { items = "array" } }))
      end },
    { name = "head", summary = "The latest block", run = function(ctx) return call(ctx, "/head", {}, BLOCK) end },
    { name = "block", summary = "A block by height or hash", args = { { "ref", help = "height or hash" } },
      run = function(ctx) return call(ctx, "/blocks/{block}", { block = ctx.args.ref }, BLOCK) end },
    { name = "tx", summary = "A transaction, its status and block", args = { { "hash", help = "transaction hash" } },
      run = function(ctx)
        return call(ctx, "/transactions/{hash}", { hash = ctx.args.hash }, { hash = "string", status = "string" })
      end },
    { name = "account", summary = "An address's balance, stake and nonce", args = { { "address", help = "ait1..." } },
      run = function(ctx)
        return call(ctx, "/accounts/{address}", { address = ctx.args.address }, { address = "string", nonce = "integer" })
      end },
    { name = "seal", summary = "Seal the pending transactions into a block now (admin key; else blocks come every --block-time)",
      run = function(ctx)
        local api = require "aitbc.api"
        return (api.from_context(ctx, { role = "admin" }):call("POST",
          api.path("/v1/chain/{chain}/blocks", { chain = ctx.settings.chain }), { expect = BLOCK }))
      end },
  },
}
