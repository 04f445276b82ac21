--- aitbc chain: the node's ledger, for people and scripts.
local BLOCK = { height = "integer", hash = "string" }
-- The JSON fields of the node's views (--json FIELDS; aitbc.cli.registry).
local BLOCK_FIELDS = { "chain_id", "height", "hash", "prev_hash", "timestamp", "time", "tx_count", "tx_root", "proposer",
  "signature", "params" }

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

local function iso(t) return type(t) == "number" and os.date("!%Y-%m-%dT%H:%M:%SZ", math.floor(t)) or t end

--- A block: its header as a record, its transactions one per line (no JSON in a cell).
local function render_block(d, out)
  out:print(out:format_record({ height = d.height, hash = d.hash, prev_hash = d.prev_hash, time = iso(d.timestamp),
    proposer = d.proposer, tx_count = d.tx_count, tx_root = d.tx_root, chain = d.chain_id, signature = d.signature },
    { "height", "hash", { "prev_hash", "previous" }, "time", "chain", "proposer", { "tx_count", "transactions" },
      { "tx_root", "tx root" }, "signature" }))
  for _, h in ipairs(type(d.transactions) == "table" and d.transactions or {}) do out:print("  " .. tostring(h)) end
end

--- A transaction: what it did, in words and AITBC; the signed body stays in --output json.
local function render_tx(d, out)
  local payload = type(d.tx) == "table" and type(d.tx.payload) == "table" and d.tx.payload or {}
  local money = require "aitbc.money"
  local power = type(payload.power) == "string" and math.tointeger(tonumber(payload.power)) -- base units
  local record = { hash = d.hash, type = d.type, status = d.status .. (d.block_height
      and (" (block " .. d.block_height .. ")") or ""), from = d.from, to = d.to or "-",
    amount = d.amount and (d.amount .. " AITBC"), job = payload.job_id, nonce = d.nonce, received = d.received_at,
    -- governance: what was proposed, voted or decided
    proposal = payload.proposal_id or (d.type == "gov_propose" and d.to and d.to:gsub("^gov:", "")) or nil,
    title = payload.title,
    vote = payload.choice and power and (payload.choice .. " with " .. money.format(power) .. " AITBC") or nil,
    outcome = payload.outcome and (payload.outcome .. ", deposit " .. tostring(payload.deposit)) or nil,
    chain = d.chain_id, signature = type(d.signature) == "string" and d.signature or nil }
  local fields = {}
  for _, f in ipairs { "hash", "type", "status", "from", "to", "amount", "job", "proposal", "title", "vote", "outcome",
    "nonce", "received", "chain", "signature" } do
    if record[f] ~= nil then fields[#fields + 1] = f end -- what this type of transaction has
  end
  out:print(out:format_record(record, fields))
end

local function render_account(d, out)
  local escrow = d.escrow and (d.escrow .. " AITBC" .. ((d.escrow_jobs or 0) > 0
    and string.format(" (%d job%s not settled yet)", d.escrow_jobs, d.escrow_jobs == 1 and "" or "s") or ""))
  out:print(out:format_record({ address = d.address, available = d.balance and (d.balance .. " AITBC"),
    staked = d.staked and (d.staked .. " AITBC"), total = d.total and (d.total .. " AITBC"), escrow = escrow,
    nonce = d.nonce, chain = d.chain_id }, { "address", "available", "staked", "total", { "escrow", "in escrow" }, "nonce",
    "chain" }))
end

return {
  name = "chain",
  category = "Node",
  summary = "Read the chain: head, blocks, transactions, accounts (chain: --chain setting, default ait-devnet)",
  commands = {
    { name = "list", summary = "Chains this node keeps: height, head, faucet, and a follower's sync state",
      list = "items", id_field = "chain_id", fields = { "chain_id", "height", "head_hash", "faucet", "sync", "hosted", "host",
        "authority" }, watch = true,
      run = function(ctx)
        return (require("aitbc.api").from_context(ctx):call("GET", "/v1/chains", { expect = { items = "array" } })),
          render_chains
      end },
    { name = "head", summary = "The latest block", fields = BLOCK_FIELDS, watch = true,
      run = function(ctx) return call(ctx, "/head", {}, BLOCK), render_block end },
    { name = "block", summary = "A block by height or hash", args = { { "ref", help = "height or hash" } },
      fields = { "transactions", table.unpack(BLOCK_FIELDS) },
      run = function(ctx) return call(ctx, "/blocks/{block}", { block = ctx.args.ref }, BLOCK), render_block end },
    { name = "tx", summary = "A transaction, its status and block", args = { { "hash", help = "transaction hash" } },
      fields = { "hash", "chain_id", "type", "from", "to", "amount", "nonce", "status", "block_height", "received_at", "tx",
        "signature" }, watch = true,
      run = function(ctx)
        return call(ctx, "/transactions/{hash}", { hash = ctx.args.hash }, { hash = "string", status = "string",
          type = "string", block_height = "integer?", amount = "scalar?" }), render_tx
      end },
    { name = "account", summary = "An address's balance, stake and nonce", args = { { "address", help = "ait1..." } },
      fields = { "chain_id", "address", "nonce", "balance", "staked", "total", "balance_units", "staked_units" }, watch = true,
      run = function(ctx)
        return call(ctx, "/accounts/{address}", { address = require("aitbc.wallet").address_arg(ctx.args.address,
          "the address") }, { address = "string", nonce = "integer", balance = "scalar", staked = "scalar",
          total = "scalar", escrow_jobs = "integer?" }), render_account
      end },
    { name = "params", summary = "The chain's parameters (changed only by governance): value, since which block, by what",
      fields = { "chain_id", "height", "params" }, watch = true,
      run = function(ctx)
        return call(ctx, "/params", {}, { chain_id = "string", params = "object" }), function(d, out)
          local rows = {}
          for _, name in ipairs(require("aitbc.protocol.governance").NAMES) do
            local p = d.params[name]
            if p then
              rows[#rows + 1] = { name = name, value = p.value .. (p.kind == "amount" and " AITBC" or
                (p.kind == "blocks" and " blocks" or "")), since = "block " .. tostring(p.since_height),
                by = p.proposal_id or "genesis", meaning = p.help }
            end
          end
          out:print(out:format_table(rows, { { "name", "parameter", keep = true }, "value", "since", { "by", "set by" },
            "meaning" }))
        end
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
