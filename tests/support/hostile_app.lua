--- Handler for the test HTTP server: a hostile peer that answers the
-- CLI's routes with plausible but wrong JSON.  It is not a stand-in for
-- the node: nothing here is checked or stored.  The first path segment
-- picks how it is wrong (point --url at http://HOST:PORT/<mode>):
--   old    the older coordinator's shapes (from reference/upstream-api.md):
--          register answers {status, session_token}, GPU lists are bare
--          arrays, a result's receipt is null, no /v1/miners/me
--   mixed  a miner can register and take a job, but the result's answer
--          has no receipt (mine-ollama gets as far as submitting)
--   badjob as mixed, but the job's payload holds no text to run
--   types  every route: the right field names with values of the wrong type
--   text   every route: 200 with an HTML page
--   errors every route: 400 whose error object holds objects, not strings
local json = require "aitbc.json"

local function reply(status, value, ctype)
  return { status = status, headers = { ["Content-Type"] = ctype or "application/json" },
    body = type(value) == "string" and value or json.encode(value) }
end

local JOB = { job_id = "0192af3c51d2e4c7a81f09b3c6d2e1f0", payload = { prompt = "Hello AITBC" }, constraints = {},
  model = "llama3" }

local OLD = {
  ["POST /v1/miners/register"] = { status = "ok", session_token = "5f0c1b2a9d8e4f3a" },
  ["POST /v1/miners/heartbeat"] = { status = "ok" },
  ["POST /v1/miners/poll"] = JOB,
  ["POST /v1/marketplace/gpu/register"] = { gpu_id = "gpu_1a2b", status = "registered", message = "GPU registered",
    base_price = 0.05, dynamic_price = 0.05, pricing_strategy = "market_balance" },
  ["GET /v1/marketplace/gpu/mine"] = json.array { { id = "gpu_1a2b", miner_id = "m1", model = "RTX 4090",
    memory_gb = 24, price_per_hour = 0.5, status = "available" } },
  ["GET /v1/marketplace/offers"] = json.array { { id = "offer_1", provider = "m1", capacity = 1, price = 0.5,
    status = "open", gpu_model = "RTX 4090" } },
  ["POST /v1/jobs"] = { job_id = JOB.job_id, state = "QUEUED", payload = JOB.payload },
  ["GET /v1/jobs"] = json.array { { job_id = JOB.job_id, state = "QUEUED" } },
}

local MIXED = {
  ["POST /v1/miners/register"] = { miner_id = "m1", status = "ONLINE" },
  ["GET /v1/miners/me"] = { miner_id = "m1", status = "ONLINE" },
  ["GET /v1/miners/jobs"] = { items = json.array() },
  ["POST /v1/miners/poll"] = JOB,
  ["POST /v1/miners/heartbeat"] = { status = "ok", miner_id = "m1" },
}

--- Every field name the CLI reads, each with a value of the wrong type.
local WRONG = {
  miner_id = 42, job_id = { id = 1 }, state = 7, status = { "ok" }, items = "none", total = "many",
  listing_id = false, count = "two", model = { "RTX" }, vram_gb = "24 GB", hourly_rate = { 0.5 },
  hash = 5, nonce = "one", address = 1, balance = { 1 }, staked = {}, total_units = {}, height = "top",
  key = 5, key_id = { 1 }, role = 3, amount = {}, receipt = "signed", result = 1, node_key = 1,
  capabilities = "gpu", timings = "fast", since = {}, listings = 0, completed_jobs = 0, payload = 1,
}

return function()
  return function(req)
    local mode, rest = req.path:match("^/(%a+)(/.*)$")
    local route = req.method .. " " .. (rest or "")
    if mode == "badjob" then
      if route == "POST /v1/miners/poll" then
        return reply(200, { job_id = JOB.job_id, payload = { prompt = { text = "not a string" }, images = 7 } })
      end
      if route:match("^POST /v1/miners/[^/]+/fail$") then return reply(200, { status = "ok", state = "FAILED" }) end
      mode = "mixed"
    end
    if mode == "old" or mode == "mixed" then
      local answer = (mode == "old" and OLD or MIXED)[route]
      if answer then return reply(200, answer) end
      if mode == "old" and route:match("^POST /v1/miners/[^/]+/result$") then
        return reply(200, { status = "ok", receipt = json.null })
      end
      if mode == "mixed" and route:match("^POST /v1/miners/[^/]+/result$") then return reply(200, { status = "ok" }) end
      return reply(404, { detail = "Not Found" })
    elseif mode == "types" then
      return reply(200, WRONG)
    elseif mode == "text" then
      return reply(200, "<html><body>It works!</body></html>", "text/html")
    elseif mode == "errors" then
      return reply(400, { error = { message = { nested = true }, code = json.array { 1 }, field = {} } })
    end
    return reply(404, { error = { code = "not_found", message = "no mode in " .. req.path } })
  end
end
