--- The node's side of receipts: what one holds when a miner completes a
-- job (durations, tokens, price, the result's hash).  Signing and checking
-- a receipt is aitbc.protocol.receipts, shared with the clients.
local crypto = require "aitbc.crypto"
local json = require "aitbc.json"
local util = require "aitbc.node.util"

local receipts = {}

local function count(t, ...)
  for _, k in ipairs { ... } do
    local v = type(t) == "table" and t[k]
    if math.type(v) == "integer" then return v end
  end
  return nil
end

--- job: the stored row; result, metrics: decoded tables; miner: row.
-- Version 1.1: every time is RFC 3339 UTC text (1.0 had started_at and
-- completed_at in Unix seconds, as the older coordinator wrote them).  A
-- receipt is verified over the fields it holds, so 1.0 receipts stored
-- before still verify: nothing rewrites a signed receipt.
function receipts.build(job, miner, result, metrics, now)
  local duration_ms = math.max(0, math.floor((now - job.started_at) * 1000 + 0.5))
  local price_units
  if miner.price_units then -- rate x ms / 3,600,000 without the product (it could overflow)
    local rate, hour = miner.price_units, 3600000
    price_units = rate // hour * duration_ms + rate % hour * duration_ms // hour
  end
  return {
    version = "1.1",
    receipt_id = util.new_id(16),
    job_id = job.job_id,
    provider = miner.miner_id,
    client = job.client_key_id,
    status = "COMPLETED",
    model = job.model,
    requested_at = util.iso(job.requested_at),
    started_at = util.iso(job.started_at),
    completed_at = util.iso(now),
    queue_ms = math.floor((job.started_at - job.requested_at) * 1000 + 0.5),
    duration_ms = duration_ms,
    tokens = {
      prompt = count(metrics, "prompt_eval_count", "prompt_tokens") or count(result, "prompt_eval_count"),
      completion = count(metrics, "eval_count", "completion_tokens") or count(result, "eval_count"),
    },
    result_hash = "sha256:" .. crypto.hex(crypto.sha256(json.encode(result))),
    units = duration_ms,
    unit_type = "gpu_ms",
    price_units = price_units,
  }
end

return receipts
