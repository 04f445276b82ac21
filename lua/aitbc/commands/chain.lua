--- aitbc chain: the node's ledger, for people and scripts.
--- GET under the chain's path; only the data (the response stays out of the renderer's place)
local function call(ctx, rest)
  return (require("aitbc.api").from_context(ctx):call("GET", "/v1/chain/" .. ctx.settings.chain .. rest))
end

return {
  name = "chain",
  category = "Node",
  summary = "Read the chain: head, blocks, transactions, accounts (chain: --chain setting, default ait-devnet)",
  commands = {
    { name = "list", summary = "Chains this node keeps, with their heights",
      run = function(ctx) return (require("aitbc.api").from_context(ctx):call("GET", "/v1/chains")) end },
    { name = "head", summary = "The latest block", run = function(ctx) return call(ctx, "/head") end },
    { name = "block", summary = "A block by height or hash", args = { { "ref", help = "height or hash" } },
      run = function(ctx) return call(ctx, "/blocks/" .. ctx.args.ref) end },
    { name = "tx", summary = "A transaction, its status and block", args = { { "hash", help = "transaction hash" } },
      run = function(ctx) return call(ctx, "/transactions/" .. ctx.args.hash) end },
    { name = "account", summary = "An address's balance, stake and nonce", args = { { "address", help = "ait1..." } },
      run = function(ctx) return call(ctx, "/accounts/" .. ctx.args.address) end },
    { name = "seal", summary = "Seal the pending transactions into a block now (admin key; else blocks come every --block-time)",
      run = function(ctx)
        local api = require("aitbc.api").from_context(ctx, { role = "admin" })
        return (api:call("POST", "/v1/chain/" .. ctx.settings.chain .. "/blocks"))
      end },
  },
}
