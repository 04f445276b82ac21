--- A client's work on the network: submit jobs, follow them, fetch their
-- results (receipts checked against the node's key), pay for them.  What
-- `aitbc client` runs and what scripts call (require("aitbc").client):
-- every function takes the user's configuration first (a command's ctx, or
-- aitbc.context.new()), returns plain tables (the node's job view, its
-- result, a payment) and raises aitbc errors whose kind gives the exit code.
--   local job = client.submit(ctx, { model = "llama3", prompt = "Hello AITBC" })
--   local res = client.result(ctx, job.job_id, { wait = true })
--   local paid = client.pay(ctx, job.job_id, "10")   -- funded, then released to the miner
local errors = require "aitbc.errors"
local json = require "aitbc.json"
local sys = require "aitbc.sys"
local timefmt = require "aitbc.timefmt"

local client = {}

-- What the functions read from the node's replies (aitbc.api check_reply specs).
client.JOB = { job_id = "string", state = "string", assigned_miner_id = "string?",
  timings = { "object?", { queue_ms = "number?", run_ms = "number?" } }, payment_status = "string?",
  payment_amount = "scalar?", payment_id = "string?", settlement_id = "string?" }
local PAYMENT = { amount = "scalar", job_id = "string", tx_hash = "string?", chain_id = "string?", job_state = "string?" }

client.STATES = { "QUEUED", "RUNNING", "COMPLETED", "FAILED", "CANCELED", "EXPIRED" }

--- The node, with the client's key.
function client.node(ctx) return require("aitbc.api").from_context(ctx, { role = "client" }) end

local function job_path(template, id) return require("aitbc.api").path(template, { job_id = id }) end

local function usage(message, hint) errors.raise("usage", message, hint, { code = "usage_error" }) end

--- JSON text holding an object -> the table | raises a usage error naming what held it.
function client.object(text, what)
  local v, jerr = json.decode(text)
  if type(v) ~= "table" or (next(v) ~= nil and json.is_array(v)) then
    usage(what .. " must be a JSON object, e.g. '{\"prompt\":\"Hello AITBC\"}'" .. (jerr and (": " .. jerr) or ""))
  end
  return v
end

--- A job's payload from spec: data (an object, or JSON text of one; its
-- fields first), prompt, type (default inference), model.  Raises a usage
-- error naming the fix for a payload the network would not run as meant.
function client.payload(spec)
  local payload = {}
  local data = spec.data
  if type(data) == "string" then data = client.object(data, "--data") end
  for k, v in pairs(data or {}) do payload[k] = v end
  if spec.prompt then
    if payload.prompt ~= nil or payload.messages ~= nil then
      usage("the prompt is given twice: by --prompt and inside --data",
        "keep one: --prompt TEXT, or --data '{\"prompt\":\"...\"}' without --prompt")
    end
    payload.prompt = spec.prompt
  end
  if spec.type and payload.type and spec.type ~= payload.type then
    usage(string.format("--type %s and the payload's type %s differ", spec.type, tostring(payload.type)),
      "drop one of them")
  end
  payload.type = payload.type or spec.type or "inference"
  local ok, why = require("aitbc.jobs").check_type(payload.type)
  if not ok then usage(why, "use --type inference") end
  payload.model = spec.model or payload.model
  if type(payload.model) ~= "string" or payload.model == "" then
    usage("which model should run the job?", "add --model MODEL, e.g. --model llama3 ('aitbc ollama models' lists them)")
  end
  if payload.type == "inference" and not payload.prompt and not payload.messages then
    usage("an inference job needs a prompt", "add --prompt TEXT or --data '{\"prompt\":\"...\"}'")
  end
  return payload
end

function client.status(ctx, job_id)
  return (client.node(ctx):call("GET", job_path("/v1/jobs/{job_id}", job_id), { expect = client.JOB }))
end

local ENDED = { COMPLETED = true, FAILED = true, CANCELED = true, EXPIRED = true }

--- Waits until the job leaves QUEUED/RUNNING, following its events (one
-- long poll at a time, resuming after the last event seen); returns its
-- view.  opts: timeout (seconds, default 300: then a `timeout` error, exit
-- 124), on_change(job) when its state changes (job: state,
-- assigned_miner_id, attempts, error), on_token(text, attempt) for each
-- piece of an inference's output as the miner generates it.
function client.wait(ctx, job_id, opts)
  opts = opts or {}
  local job = client.status(ctx, job_id)
  if ENDED[job.state] then
    if opts.on_change then opts.on_change(job) end
    return job
  end
  local last, attempt -- the events from the first tell the job's story in order
  require("aitbc.jobs.follow").events(client.node(ctx), job_id, { timeout = opts.timeout or 300,
    on_event = function(e)
      local d = type(e.data) == "table" and e.data or {}
      if e.type:match("^job%.") then
        attempt = d.attempt or attempt
        if d.state ~= last and d.state then
          last = d.state
          if opts.on_change then
            opts.on_change { job_id = job_id, state = d.state, assigned_miner_id = d.miner_id or json.null,
              attempts = d.attempt, error = d.error }
          end
        end
      elseif e.type == "token" and opts.on_token and type(d.text) == "string" then
        opts.on_token(d.text, attempt)
      end
    end })
  return client.status(ctx, job_id)
end

--- A completed job's result with its receipt verified against the node's
-- key (receipt_verified); a receipt that does not verify raises.  opts:
-- wait (until the job ends), timeout, on_change, on_token (see client.wait).
function client.result(ctx, job_id, opts)
  opts = opts or {}
  if opts.wait then
    local done = client.wait(ctx, job_id, opts)
    if done.state ~= "COMPLETED" then
      errors.raise("failure", "job " .. job_id .. " ended " .. done.state .. ": " .. tostring(done.error))
    end
  end
  local ok, res = pcall(require("aitbc.jobs.follow").result, client.node(ctx), job_id)
  if not ok then
    if type(res) == "table" and res.code == "not_ready" then
      res.hint = "wait for it: aitbc client result " .. job_id .. " --wait"
    end
    error(res, 0)
  end
  res.job_id = job_id
  return res
end

local function tx_view(ctx, node, chain_id, hash)
  local api = require "aitbc.api"
  return node:call("GET", api.path("/v1/chain/{chain}/transactions/{hash}", { chain = chain_id or ctx.settings.chain,
    hash = hash }), { expect = { status = "string", block_height = "integer?", to = "string?" } })
end

--- Follows a payment until it is funded (its lock in a block) and, for a
-- job that had completed, released to the miner (or refunded); fills in
-- paid. on_change(status, job) on each new status.
local function follow_payment(ctx, node, paid, on_change, timeout)
  local deadline, seen = sys.monotonic() + timeout, paid.payment_status
  while true do
    local job = client.status(ctx, paid.job_id)
    local status = job.payment_status
    if status ~= seen then
      if status ~= "pending" and not paid.block_height then
        paid.block_height = tx_view(ctx, node, paid.chain_id, paid.tx_hash).block_height
      end
      -- an escrow is settled only once funded: say so when both came between two looks
      if seen == "pending" and (status == "released" or status == "refunded") and on_change then
        paid.payment_status = "funded"
        on_change("funded", job, paid)
      end
      seen = status
      if (status == "released" or status == "refunded") and type(job.settlement_id) == "string" then
        paid.settlement_id = job.settlement_id
        paid[status .. "_to"] = tx_view(ctx, node, paid.chain_id, job.settlement_id).to
        paid.miner = job.assigned_miner_id ~= json.null and job.assigned_miner_id or nil
      end
      paid.payment_status = status
      if on_change then on_change(status, job, paid) end
    end
    local settled = status == "released" or status == "refunded"
    -- the escrow of a job that had not ended waits for its end: funded is done
    if settled or (status == "funded" and paid.job_state ~= "COMPLETED") then return paid end
    if sys.monotonic() >= deadline then return paid end -- still pending: the answer says so
    sys.sleep(0.2)
  end
end

--- Pays amount (AITBC, a decimal string) for a job from the active wallet:
-- an escrow_lock signed here.  A queued or running job's escrow is released
-- to its miner when it completes (refunded if it fails, expires or is
-- canceled); a completed job's is released at once.  opts: password (else
-- AITBC_WALLET_PASSWORD or a prompt, unless interactive is false), password_file, keys (an opened wallet,
-- aitbc.wallet.unlock), wait (default true: until funded, and for a
-- completed job released), timeout (60), on_change(status, job, payment),
-- what (the amount's name in messages, default "amount").  Returns {job_id,
-- amount, tx_hash, chain_id, payment_status, block_height, settlement_id,
-- released_to | refunded_to, miner}.
function client.pay(ctx, job_id, amount, opts)
  opts = opts or {}
  local units = require("aitbc.money").from_option(tostring(amount), opts.what or "amount")
  local wallet = require "aitbc.wallet"
  local node = client.node(ctx)
  local keys = opts.keys
    or wallet.unlock(ctx, opts.password
      or require("aitbc.secrets.password").get("wallet", opts.password_file, false, opts.interactive))
  local ok, body = pcall(wallet.sign_tx, ctx, node, keys, "escrow_lock", { job_id = job_id, amount = tostring(units) })
  if not opts.keys then keys.secret_key:wipe() end
  if not ok then error(body, 0) end
  local paid = node:call("POST", job_path("/v1/jobs/{job_id}/payment", job_id), { json = body, expect = PAYMENT })
  paid.payer = keys.address
  if opts.on_change then opts.on_change(paid.payment_status, nil, paid) end
  if opts.wait == false then return paid end
  return follow_payment(ctx, node, paid, opts.on_change, opts.timeout or 60)
end

--- Submits a job; returns the node's view of it.  spec: model, prompt or
-- data (see client.payload), type, ttl (seconds), min_vram (GB), gpu;
-- pay (AITBC): the job is held, offered to no miner, until an escrow of
-- that much from the active wallet is funded (password, password_file,
-- on_change as for client.pay); its payment is in job.payment.  When the
-- payment fails the job is canceled and the error raised.
function client.submit(ctx, spec)
  local payload = client.payload(spec)
  local units = spec.pay and require("aitbc.money").from_option(tostring(spec.pay), spec.pay_option or "pay")
  local keys -- the wallet opens before the job exists: a wrong password costs nothing
  if units then
    keys = require("aitbc.wallet").unlock(ctx, spec.password
      or require("aitbc.secrets.password").get("wallet", spec.password_file, false, spec.interactive))
  end
  local node = client.node(ctx)
  local constraints = (spec.min_vram or spec.gpu) and { min_vram_gb = spec.min_vram, gpu = spec.gpu } or nil
  local ok, job = pcall(function()
    local job = node:call("POST", "/v1/jobs", { json = { payload = payload, model = payload.model, ttl_seconds = spec.ttl,
      constraints = constraints, payment_amount = units and require("aitbc.money").format(units),
      booking_id = spec.booking }, expect = client.JOB })
    if not units then return job end
    local paid_ok, paid = pcall(client.pay, ctx, job.job_id, require("aitbc.money").format(units),
      { keys = keys, on_change = spec.on_change })
    if not paid_ok then
      node:request("POST", job_path("/v1/jobs/{job_id}/cancel", job.job_id)) -- held, so nobody ran it
      if errors.is(paid) then paid.message = "job " .. job.job_id .. " canceled, its payment failed: " .. paid.message end
      error(paid, 0)
    end
    job = client.status(ctx, job.job_id)
    job.payment = paid
    return job
  end)
  if keys then keys.secret_key:wipe() end
  if not ok then error(job, 0) end
  return job
end

function client.cancel(ctx, job_id)
  return (client.node(ctx):call("POST", job_path("/v1/jobs/{job_id}/cancel", job_id), { expect = { job_id = "string" } }))
end

--- Jobs of this key, newest first.  filter: state (any case), model, type,
-- from_time, to_time (as people type times: aitbc.timefmt.human), limit (20), offset.  Returns
-- {items, total, limit, offset}.
function client.list(ctx, filter)
  filter = filter or {}
  local state = filter.state and filter.state:upper()
  if state then
    local known = false
    for _, s in ipairs(client.STATES) do known = known or s == state end
    if not known then
      usage("--state must be one of " .. table.concat(client.STATES, ", "):lower() .. " (any case), got '"
        .. filter.state .. "'")
    end
  end
  local times = {}
  for _, f in ipairs { { "from_time", "--since" }, { "to_time", "--until" } } do
    if filter[f[1]] then
      local t, err = timefmt.human(filter[f[1]])
      if not t then usage(f[2] .. ": " .. err) end
      times[f[1]] = timefmt.iso(t)
    end
  end
  return (client.node(ctx):call("GET", "/v1/jobs", { query = { state = state, model = filter.model, type = filter.type,
    from_time = times.from_time, to_time = times.to_time, limit = filter.limit or 20, offset = filter.offset },
    expect = { total = "integer", items = { "array",
      { job_id = "string", state = "string", requested_at = "string", assigned_miner_id = "string?" } } } }))
end

return client
