--- The older clients' explorer routes (reference/upstream-api.md §5:
-- `client blocks`, `client receipts`) over our chains and signed receipts.
-- Blocks are public, as the chain's own routes are; receipts carry what a
-- job produced, so a client sees its own jobs', a miner those of the jobs
-- it ran, an admin all.
local json = require "aitbc.json"
local util = require "aitbc.node.util"

local M = {}

--- GET /v1/explorer/blocks?limit=&offset=&chain_id=: newest first.
function M.blocks(ctx)
  local q = ctx.query
  local chain_id = util.chain_of(ctx, q.chain_id ~= nil and q.chain_id ~= "" and q.chain_id or ctx.config.chains[1])
  local limit = util.query_integer(q, "limit", 1, 500, 10)
  local offset = util.query_integer(q, "offset", 0, 1000000000, 0)
  local items = json.array()
  for i, b in ipairs(ctx.store:chain_blocks_page(chain_id, limit, offset)) do
    items[i] = { chain_id = chain_id, height = b.height, hash = b.hash, prev_hash = b.prev_hash,
      timestamp = util.iso(b.timestamp), time = b.timestamp, txCount = b.tx_count, tx_count = b.tx_count,
      proposer = b.proposer }
  end
  local last = items[#items]
  return 200, { chain_id = chain_id, items = items,
    next_offset = (last and last.height > 0 and #items == limit) and offset + limit or json.null }
end

--- GET /v1/explorer/receipts?limit=&offset=&job_id=
function M.receipts(ctx)
  local q = ctx.query
  local limit = util.query_integer(q, "limit", 1, 500, 10)
  local offset = util.query_integer(q, "offset", 0, 1000000000, 0)
  local job_id = q.job_id ~= "" and q.job_id or nil
  local role = ctx.key.role
  local rows, total = ctx.store:receipts_list { job_id = job_id, limit = limit, offset = offset,
    client_key_id = role == "client" and ctx.key.key_id or nil, miner_key_id = role == "miner" and ctx.key.key_id or nil }
  local items = json.array()
  for i, r in ipairs(rows) do
    local receipt = json.decode(r.receipt) or {}
    local signature = type(receipt.signature) == "table" and receipt.signature or {}
    items[i] = { receiptId = receipt.receipt_id, jobId = r.job_id, miner = r.miner_id, coordinator = signature.key_id,
      issuedAt = util.iso(r.finished_at), status = r.state, payload = receipt }
  end
  return 200, { jobId = job_id or "all", items = items, total = total, limit = limit, offset = offset }
end

return M
