--- Following a job from a client: its events as they happen (long polls on
-- GET /v1/jobs/{id}/events, resuming after the last one seen, so nothing is
-- lost or repeated across reconnections), then its result with the receipt
-- checked against the node's key.
local errors = require "aitbc.errors"
local sys = require "aitbc.sys"

local M = { POLL = 25 }

local function path(template, id) return require("aitbc.api").path(template, { job_id = id }) end

local EVENTS = { job_id = "string", events = "array", next = "integer", state = "string", done = "boolean" }

--- Calls on_event(event) for each event in order until the job ends (or
-- timeout seconds pass: a timeout error, exit 124).  -> the final state, the
-- events, the last seq seen
function M.events(client, job_id, opts)
  opts = opts or {}
  local deadline = sys.monotonic() + (opts.timeout or 600)
  local after, seen = opts.after or 0, {}
  while true do
    local left = deadline - sys.monotonic()
    if left <= 0 then
      errors.raise("timeout", "job " .. job_id .. " has not ended after " .. (opts.timeout or 600) .. " s",
        "follow it later with 'aitbc client status " .. job_id .. "'", { code = "timeout" })
    end
    local wait = math.max(0, math.min(M.POLL, math.floor(left)))
    local page = client:call("GET", path("/v1/jobs/{job_id}/events", job_id),
      { query = { after = after, wait = wait }, timeout = wait + 15, expect = EVENTS })
    for _, e in ipairs(page.events) do
      seen[#seen + 1] = e
      if opts.on_event then opts.on_event(e) end
    end
    after = page.next
    if page.done then return page.state, seen, after end
  end
end

local RESULT = { result = "any", receipt = { "object?", { receipt_id = "scalar?", duration_ms = "number?",
  tokens = "object?" } } }

--- The result of a completed job, its receipt verified against the node's
-- key (a receipt that does not verify is an error: the result is not trusted).
function M.result(client, job_id)
  local res = client:call("GET", path("/v1/jobs/{job_id}/result", job_id), { expect = RESULT })
  if type(res.receipt) == "table" then
    local node = client:call("GET", "/v1/node", { expect = { node_key = "string" } })
    local crypto = require "aitbc.crypto"
    local ok, why = require("aitbc.protocol.receipts").verify(res.receipt, crypto.unbase64(node.node_key, "urlsafe"))
    if not ok then
      errors.raise("failure", "the receipt of job " .. job_id .. " does not verify: " .. tostring(why),
        "do not trust this result; report it to the node operator", { code = "bad_receipt" })
    end
    res.receipt_verified = true
  end
  return res
end

return M
