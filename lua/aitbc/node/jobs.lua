--- Jobs (clients) and miners: the coordinator's work queue.
local json = require "aitbc.json"
local money = require "aitbc.money"
local receipts = require "aitbc.node.receipts"
local signed_receipts = require "aitbc.protocol.receipts"
local sys = require "aitbc.sys"
local util = require "aitbc.node.util"

local job_types = require "aitbc.jobs"

local fail, invalid = util.fail, util.invalid

local M = {}

--- A running job goes back to the queue when its miner has not answered
-- within its run timeout (run_timeout_seconds, capped by the TTL), and fails
-- after MAX_ATTEMPTS such leases.
M.DEFAULT_RUN_TIMEOUT = 600
M.MAX_ATTEMPTS = 3

local STATES = { QUEUED = true, RUNNING = true, COMPLETED = true, FAILED = true, CANCELED = true, EXPIRED = true }
local MAX_POLL_WAIT = 30

local function decode(text)
  if text == nil then return nil end
  return json.decode(text)
end

--- The wire view of a job (upstream JobView fields plus timings).
function M.view(job, now)
  local queue_end = job.started_at or job.finished_at or now
  return {
    job_id = job.job_id,
    type = job.job_type or "inference",
    state = job.state,
    status = job.state:lower(),
    model = job.model,
    assigned_miner_id = job.miner_id or json.null,
    requested_at = util.iso(job.requested_at),
    expires_at = util.iso(job.expires_at),
    started_at = util.iso(job.started_at),
    finished_at = util.iso(job.finished_at),
    ttl_seconds = job.ttl_seconds,
    attempts = job.attempts,
    run_timeout_seconds = job.run_timeout,
    lease_expires_at = job.state == "RUNNING" and util.iso(job.lease_expires_at) or nil,
    error = job.error or json.null,
    payment_id = job.payment_id or json.null,
    payment_status = job.payment_status or json.null,
    held_for_payment = job.held ~= nil and job.held ~= json.null or nil,
    payment_amount = job.payment_amount and money.format(job.payment_amount) or nil,
    settlement_id = job.settlement_id,
    -- a completed job's reward to its miner (paid | none), the miner_reward transaction
    reward_status = job.state == "COMPLETED" and (job.reward_status or "due") or nil,
    reward_tx = job.reward_tx,
    booking_id = job.booking_id, -- run under a booking, by its miner
    timings = {
      queue_ms = math.floor((queue_end - job.requested_at) * 1000 + 0.5),
      run_ms = job.started_at and math.floor(((job.finished_at or now) - job.started_at) * 1000 + 0.5) or nil,
    },
  }
end

--- A queued job may be taken: wake one miner waiting for its model (which
-- passes it on to the next if the job does not fit it).
local function announce(job)
  sys.notify("model:" .. (job.model and util.model_name(job.model) or "*"), "one")
end
M.announce = announce

-- ---- constraints and capabilities ----

local function parse_constraints(c)
  if c == nil then return {} end
  local out = {}
  out.min_vram_gb = util.optional_number(c, "min_vram_gb", 0, 4096)
  out.gpu = util.optional_string(c, "gpu", 200)
  out.region = util.optional_string(c, "region", 100)
  out.models = util.optional_string_list(c, "models", 50, 200)
  out.booking_id = util.optional_string(c, "booking_id", 64)
  if c.max_price ~= nil then out.max_price_units = util.rate(c.max_price, "constraints.max_price") end
  return out
end

local MAX_GPUS = 64

--- {model = {"completion", "tools", "vision", ...}} as Ollama's /api/show tells them.
local function parse_model_capabilities(m)
  if m == nil then return nil end
  local at = "capabilities.model_capabilities"
  if type(m) ~= "table" or json.is_array(m) then invalid(at, "must be an object: model -> list of capabilities") end
  local out, n = {}, 0
  for model in pairs(m) do
    n = n + 1
    if n > 500 or type(model) ~= "string" or #model > 200 then invalid(at, "must name at most 500 models") end
    out[model] = util.optional_string_list(m, model, 16, 32, at .. "." .. model) or json.array()
  end
  return out
end

--- A miner's capabilities, normalised: {gpus = {{name, memory_gb, count}}, models = {...}}.
-- Accepts the older CLI's shape {gpu = {model, memory_gb}} as well.
local function parse_capabilities(c)
  c = c or {}
  local gpus = {}
  if c.gpus ~= nil then
    if type(c.gpus) ~= "table" or (next(c.gpus) ~= nil and not json.is_array(c.gpus)) then
      invalid("capabilities.gpus", "must be a list")
    end
    if #c.gpus > MAX_GPUS then invalid("capabilities.gpus", "may list at most " .. MAX_GPUS .. " kinds of GPU") end
    for i, g in ipairs(c.gpus) do
      local at = "capabilities.gpus[" .. i .. "]"
      if type(g) ~= "table" then invalid(at, "must be an object") end
      local name = util.optional_string(g, "name", 200, at .. ".name") or util.optional_string(g, "model", 200, at .. ".model")
      if not name then invalid(at .. ".name", "is required") end
      gpus[#gpus + 1] = {
        name = name,
        memory_gb = util.optional_number(g, "memory_gb", 0, 4096, at .. ".memory_gb"),
        count = util.optional_integer(g, "count", 1, 1024, 1, at .. ".count"),
      }
    end
  elseif type(c.gpu) == "table" then
    local at = "capabilities.gpu"
    local name = util.optional_string(c.gpu, "model", 200, at .. ".model")
      or util.optional_string(c.gpu, "name", 200, at .. ".name")
    if name then
      gpus[1] = { name = name, memory_gb = util.optional_number(c.gpu, "memory_gb", 0, 4096, at .. ".memory_gb"), count = 1 }
    end
  end
  local models = util.optional_string_list(c, "models", 500, 200, "capabilities.models") or {}
  local custom = c.allow_custom_workflows
  if custom ~= nil and type(custom) ~= "boolean" then invalid("capabilities.allow_custom_workflows", "must be true or false") end
  -- the older CLI's {cpu = {cores}, memory = {gb}}: kept as given, objects only
  return { gpus = json.array(gpus), models = json.array(models), cpu = util.optional_object(c, "cpu", "capabilities.cpu"),
    memory = util.optional_object(c, "memory", "capabilities.memory"),
    model_capabilities = parse_model_capabilities(c.model_capabilities), allow_custom_workflows = custom or nil }
end

local function cached(job, field, cache)
  local v = job[cache]
  if v == nil then
    v = decode(job[field]) or {}
    job[cache] = v
  end
  return v
end

--- Has the miner (caps) every model the job names?  A miner listing none takes any.
local function has_models(job, want, caps)
  if #caps.models == 0 then return true end
  local have = {}
  for _, m in ipairs(caps.models) do have[util.model_name(m)] = true end
  if job.model and not have[util.model_name(job.model)] then return false end
  for _, m in ipairs(want.models or {}) do
    if not have[util.model_name(m)] then return false end
  end
  return true
end

local function has_gpu(want, caps)
  if not (want.min_vram_gb or want.gpu) then return true end
  for _, g in ipairs(caps.gpus) do
    if (not want.min_vram_gb or (g.memory_gb or 0) >= want.min_vram_gb)
      and (not want.gpu or g.name:lower():find(want.gpu:lower(), 1, true)) then return true end
  end
  return false
end

--- Does this job (row with model, constraints, needs) fit this miner (row)?
function M.fits(job, miner)
  local caps = miner.caps
  if job.needs and not job_types.meets(cached(job, "needs", "needs_table"), caps) then return false end
  local want = cached(job, "constraints", "constraints_table")
  if not has_models(job, want, caps) or not has_gpu(want, caps) then return false end
  if want.region and want.region ~= miner.region then return false end
  if want.max_price_units and miner.price_units and miner.price_units > want.max_price_units then return false end
  return true
end

-- ---- client routes ----

local function own_job(ctx, job_id)
  local job = ctx.store:job_get(job_id)
  if not job or (job.client_key_id ~= ctx.key.key_id and ctx.key.role ~= "admin") then
    fail(404, "job_not_found", "job " .. job_id .. " not found")
  end
  if (job.state == "QUEUED" or job.state == "RUNNING") and job.expires_at <= ctx.now then
    ctx.store:expire_due(ctx.now)
    job = ctx.store:job_get(job_id)
  end
  return job
end
M.own_job = own_job

local MAX_PAYLOAD = 512 * 1024

--- Queues a job: spec {job_type, payload (a table), model, needs, ttl,
-- run_timeout, constraints, payment_amount (held until paid)}; returns its view.  Submit and agent execution
-- both come here.
function M.enqueue(ctx, spec)
  local encoded = json.encode(spec.payload)
  if #encoded > MAX_PAYLOAD then invalid("payload", "must be at most 512 KiB of JSON") end
  local ttl = spec.ttl or 900
  local job = {
    job_id = util.new_job_id(ctx.now), client_key_id = ctx.key.key_id, payload = encoded, model = spec.model,
    model_key = util.model_name(spec.model), constraints = json.encode(spec.constraints or {}), ttl_seconds = ttl,
    requested_at = ctx.now, expires_at = ctx.now + ttl, job_type = spec.job_type,
    run_timeout = math.min(spec.run_timeout or job_types.get(spec.job_type).run_timeout, ttl),
    needs = spec.needs and json.encode(spec.needs) or nil,
    payment_amount = spec.payment_amount, payment_status = spec.payment_amount and "awaiting" or nil,
    held = spec.payment_amount and 1 or nil, booking_id = spec.booking and spec.booking.booking_id,
  }
  ctx.store:job_insert(job)
  if spec.booking then
    sys.notify("miner:" .. spec.booking.miner_id, "one") -- the booked miner, whatever it waits for
  elseif not job.held then
    announce(job)
  end
  job.state, job.attempts = "QUEUED", 0
  return M.view(job, ctx.now)
end

function M.submit(ctx)
  local body = ctx:body_object()
  local payload = util.optional_object(body, "payload")
  if not payload then invalid("payload", "is required (an object, e.g. {\"prompt\": \"...\"})") end
  local model = util.optional_string(body, "model", 200) or util.optional_string(payload, "model", 200)
  local ttl = util.optional_integer(body, "ttl_seconds", 1, 86400, 900)
  local run_timeout = util.optional_integer(body, "run_timeout_seconds", 1, 86400)
  local constraints = parse_constraints(util.optional_object(body, "constraints"))
  local type_name = util.optional_string(body, "type", 32) or util.optional_string(payload, "type", 32) or "inference"
  local jt, why = job_types.get(type_name)
  if not jt then invalid(body.type and "type" or "payload.type", why) end
  if not jt.direct then
    invalid("type", type_name .. " jobs come from POST /v1/agents/{agent_id}/execute (aitbc agent execute)")
  end
  local needs = jt.validate(payload, model, { invalid = invalid })
  -- a payment announced at submit (the older API's payment_amount): the job
  -- is held, offered to no miner, until its escrow lock is in a block
  local pay_units
  if body.payment_amount ~= nil then
    pay_units = util.rate(body.payment_amount, "payment_amount")
    if pay_units == 0 then invalid("payment_amount", "must be more than 0") end
    local currency = util.optional_string(body, "payment_currency", 16)
    if currency and currency:upper() ~= "AITBC" then invalid("payment_currency", "must be AITBC") end
  end
  -- a job under a booking: the renter's, for the booked miner only (prepaid: no payment of its own)
  local booking_id = util.optional_string(body, "booking_id", 64) or constraints.booking_id
  local booking = booking_id and require("aitbc.node.rental").for_job(ctx, booking_id)
  if booking and pay_units then invalid("payment_amount", "a job under a booking is paid by the booking") end
  return 201, M.enqueue(ctx, { job_type = type_name, payload = payload, model = model, needs = needs, ttl = ttl,
    run_timeout = run_timeout, constraints = constraints, payment_amount = pay_units, booking = booking })
end

function M.get(ctx, job_id)
  return 200, M.view(own_job(ctx, job_id), ctx.now)
end

function M.list(ctx)
  local q = ctx.query
  local state_param = q.state and "state" or (q.status and "status") -- status: the older clients' name
  local state = state_param and q[state_param]:upper()
  if state and not STATES[state] then
    invalid(state_param, "must be one of QUEUED, RUNNING, COMPLETED, FAILED, CANCELED, EXPIRED")
  end
  local job_type = q.type ~= "" and q.type or nil
  if job_type and not job_types.get(job_type) then invalid("type", "is not a job type (inference, agent, multimodal)") end
  local limit = util.query_integer(q, "limit", 1, 500, 50)
  local offset = util.query_integer(q, "offset", 0, 1000000000, 0)
  ctx.store:expire_due(ctx.now)
  local rows, total = ctx.store:jobs_list {
    client_key_id = ctx.key.role ~= "admin" and ctx.key.key_id or nil, state = state, model = q.model,
    job_type = job_type, booking_id = q.booking_id, from_time = util.query_time(q, "from_time"),
    to_time = util.query_time(q, "to_time"), limit = limit, offset = offset,
  }
  local items = json.array()
  for i, row in ipairs(rows) do items[i] = M.view(row, ctx.now) end
  return 200, { items = items, total = total, limit = limit, offset = offset }
end

function M.result(ctx, job_id)
  local job = own_job(ctx, job_id)
  if job.state == "QUEUED" or job.state == "RUNNING" then
    fail(425, "not_ready", "job " .. job_id .. " is " .. job.state .. "; its result is not ready yet")
  end
  if job.state ~= "COMPLETED" then
    fail(409, "job_" .. job.state:lower(), "job " .. job_id .. " ended " .. job.state .. ": " .. tostring(job.error))
  end
  return 200, { job_id = job.job_id, state = job.state, result = decode(job.result), receipt = decode(job.receipt),
    metrics = decode(job.metrics), model = job.model }
end

function M.receipt(ctx, job_id)
  local job = own_job(ctx, job_id)
  if not job.receipt then fail(404, "receipt_not_available", "job " .. job_id .. " has no receipt (" .. job.state .. ")") end
  return 200, decode(job.receipt)
end

function M.cancel(ctx, job_id)
  local job = own_job(ctx, job_id)
  if not ctx.store:job_cancel(job_id, ctx.now) then
    fail(409, "not_cancelable", "job " .. job_id .. " is " .. job.state .. " and cannot be canceled")
  end
  sys.notify("job:" .. job_id)
  return 200, M.view(ctx.store:job_get(job_id), ctx.now)
end

-- ---- miner routes ----

local function with_caps(miner)
  miner.caps = decode(miner.capabilities) or { gpus = {}, models = {} }
  return miner
end

--- The miner making this request: X-Miner-ID (or miner_id) naming one of
-- this key's miners, or the key's only miner.
local function current_miner(ctx)
  local id = ctx.headers["x-miner-id"] or ctx.query.miner_id
  if id then
    local m = ctx.store:miner_get(id)
    if not m then fail(404, "miner_not_registered", "miner " .. id .. " is not registered; POST /v1/miners/register first") end
    if m.key_id ~= ctx.key.key_id then fail(403, "forbidden", "miner " .. id .. " belongs to another API key") end
    return with_caps(m)
  end
  local mine = ctx.store:miners_of_key(ctx.key.key_id)
  if #mine == 0 then
    fail(404, "miner_not_registered", "no miner is registered with this API key; POST /v1/miners/register first")
  end
  if #mine > 1 then fail(400, "miner_ambiguous", "several miners use this API key; name one with the X-Miner-ID header") end
  return with_caps(mine[1])
end
M.current_miner = current_miner

local function miner_view(m)
  return {
    miner_id = m.miner_id, status = m.status, capabilities = m.caps or decode(m.capabilities),
    concurrency = m.concurrency, region = m.region,
    price_per_hour = m.price_units and money.format(m.price_units) or nil,
    payout_address = m.payout_address, registered_at = util.iso(m.registered_at), last_seen = util.iso(m.last_seen),
    jobs_completed = m.jobs_completed, jobs_failed = m.jobs_failed, inflight = m.inflight,
  }
end
M.miner_view = miner_view

function M.register(ctx)
  local body = ctx:body_object()
  local miner_id = util.optional_string(body, "miner_id", 64) or ctx.headers["x-miner-id"] or ctx.query.miner_id
  if miner_id and #miner_id > 64 then invalid("miner_id", "must be at most 64 characters") end
  if miner_id and not miner_id:match("^[%w][%w_%-%.]*$") then
    invalid("miner_id", "may use letters, digits, '_', '-' and '.', starting with a letter or digit")
  end
  local caps = parse_capabilities(util.optional_object(body, "capabilities"))
  local price_units
  if body.price_per_hour ~= nil then price_units = util.rate(body.price_per_hour, "price_per_hour") end
  local payout = util.optional_string(body, "payout_address", 128)
  if payout then
    local why
    payout, why = require("aitbc.protocol.address").normalize(payout) -- one spelling: lower case
    if not payout then invalid("payout_address", "is not an AITBC address: " .. tostring(why)) end
  end
  local m = {
    miner_id = miner_id or ("miner_" .. util.new_id(6)), key_id = ctx.key.key_id, capabilities = json.encode(caps),
    concurrency = util.optional_integer(body, "concurrency", 1, 64, 1), region = util.optional_string(body, "region", 100),
    price_units = price_units, payout_address = payout,
    now = ctx.now, session_token = util.new_id(16),
  }
  local outcome = ctx.store:miner_register(m)
  if not outcome then
    fail(409, "miner_id_taken", "miner id " .. m.miner_id .. " is registered by another API key; choose another miner_id")
  end
  local row = with_caps(ctx.store:miner_get(m.miner_id))
  local view = miner_view(row)
  view.status, view.session_token = "ok", m.session_token
  view.miner_status = row.status
  view.created = outcome == "created" -- a new registration, or the same miner again
  -- 200 either way: the older clients take only 200 or 204 as success
  return 200, view
end

--- A heartbeat's optional GPU readings (NVML: {gpus = [{index, name,
-- utilization_gpu, memory_used, memory_total, temperature_c, power_w}]})
-- -> their JSON as kept with the miner | nil (none given).
local GPU_NUMBERS = { index = { 0, 64 }, utilization_gpu = { 0, 100 }, utilization_memory = { 0, 100 },
  memory_used = { 0, 2 ^ 50 }, memory_total = { 0, 2 ^ 50 }, temperature_c = { -50, 200 }, power_w = { 0, 5000 } }
local function gpu_readings(ctx)
  -- the older clients' heartbeats carry other things, or nothing: only an object with gpus is read
  if not ctx.req.body:match("^%s*{") then return nil end
  local body = ctx:body_object(true)
  if body.gpus == nil then return nil end
  if type(body.gpus) ~= "table" or #body.gpus > 16 then
    util.invalid("gpus", "must be a list of at most 16 GPU readings ({index, name, utilization_gpu, temperature_c, ...})")
  end
  local out = json.array()
  for i, g in ipairs(body.gpus) do
    if type(g) ~= "table" then util.invalid("gpus[" .. i .. "]", "must be an object") end
    local r = { name = util.optional_string(g, "name", 128, "gpus[" .. i .. "].name") }
    for field, range in pairs(GPU_NUMBERS) do
      r[field] = util.optional_number(g, field, range[1], range[2], "gpus[" .. i .. "]." .. field)
    end
    out[i] = r
  end
  return json.encode { gpus = out, at = ctx.now }
end

function M.heartbeat(ctx)
  local miner = current_miner(ctx)
  local readings = gpu_readings(ctx)
  ctx.store:miner_touch(miner.miner_id, ctx.now)
  if readings then ctx.store:miner_gpu_stats(miner.miner_id, readings) end
  return 200, { status = "ok", miner_id = miner.miner_id }
end

function M.me(ctx)
  local miner = current_miner(ctx)
  for _, m in ipairs(ctx.store:miners_list()) do
    if m.miner_id == miner.miner_id then miner.inflight = m.inflight end
  end
  return 200, miner_view(miner)
end

local function assigned_view(job)
  return { job_id = job.job_id, type = job.job_type or "inference", payload = decode(job.payload), model = job.model,
    constraints = decode(job.constraints), requested_at = util.iso(job.requested_at),
    expires_at = util.iso(job.expires_at), attempt = job.attempts, run_timeout_seconds = job.run_timeout,
    lease_expires_at = util.iso(job.lease_expires_at) }
end

--- The queue keys of the models a miner runs (nil: it takes any model).
local function model_keys(miner)
  if #miner.caps.models == 0 then return nil end
  local keys = {}
  for i, m in ipairs(miner.caps.models) do keys[i] = util.model_name(m) end
  return keys
end

--- What wakes a miner's waiting poll: a new job for one of its models (any
-- model when it declared none), or a slot of its own coming free.
local function wake_keys(miner)
  local keys = { "miner:" .. miner.miner_id }
  for _, k in ipairs(model_keys(miner) or { "*" }) do keys[#keys + 1] = "model:" .. k end
  return keys
end

--- The poll's empty answer: 204 (as upstream's clients expect), its
-- X-Poll-Reason saying why: "at_capacity" when the miner already holds as
-- many jobs as its concurrency allows (X-Miner-Inflight and
-- X-Miner-Concurrency say how many), else "no_jobs" (none that fits).
local function no_job(ctx, miner)
  local inflight = ctx.store:miner_inflight(miner.miner_id)
  ctx.reply_headers = { ["X-Poll-Reason"] = inflight >= miner.concurrency and "at_capacity" or "no_jobs",
    ["X-Miner-Inflight"] = tostring(inflight), ["X-Miner-Concurrency"] = tostring(miner.concurrency) }
  return 204, nil
end

--- Claims one job that fits, waiting up to max_wait_seconds; 204 if none.
-- The wait holds no worker: the request is suspended and runs again when a
-- job for it is announced or its time is up.
function M.poll(ctx)
  local body = ctx:body_object(true)
  local wait = util.optional_number(body, "max_wait_seconds", 0, 3600) or 0
  wait = math.min(wait, MAX_POLL_WAIT)
  local miner = current_miner(ctx)
  if not ctx.req.resumed and (ctx.now - miner.last_seen >= 1 or miner.status ~= "ONLINE") then
    ctx.store:miner_touch(miner.miner_id, ctx.now)
  end
  -- a poller that hung up (a stopped miner) must not be handed a job
  if ctx.req.connected and not ctx.req.connected() then return 204, nil end
  -- a booked miner runs its renter's jobs only
  local booking = ctx.store:booking_active("miner_id", miner.miner_id)
  local job = ctx.store:job_claim(miner, sys.time(), function(j) return M.fits(j, miner) end, model_keys(miner),
    booking and booking.booking_id)
  if job then
    sys.notify("job:" .. job.job_id) -- its event readers see it running
    return 200, assigned_view(job)
  end
  local left = wait - (ctx.req.waited or 0)
  if left < 0.01 or ctx.req.resumed == "shutdown" or sys.interrupted() then return no_job(ctx, miner) end
  return util.SUSPEND, { seconds = left, wake = wake_keys(miner) }
end

--- This miner's jobs in hand (taken with poll, not yet answered).
function M.miner_jobs(ctx)
  local miner = current_miner(ctx)
  local rows = ctx.store:jobs_list { miner_id = miner.miner_id, state = "RUNNING", limit = 100, offset = 0 }
  local items = json.array()
  for i, job in ipairs(rows) do items[i] = assigned_view(job) end
  return 200, { items = items }
end

local function running_job(ctx, miner, job_id)
  local job = ctx.store:job_get(job_id)
  if not job then fail(404, "job_not_found", "job " .. job_id .. " not found") end
  if job.miner_id ~= miner.miner_id or job.state ~= "RUNNING" then
    fail(409, "not_assigned", string.format("job %s is %s%s, not running on miner %s", job_id, job.state,
      job.miner_id and (" on " .. job.miner_id) or "", miner.miner_id))
  end
  return job
end

function M.submit_result(ctx, job_id)
  local body = ctx:body_object()
  if body.result == nil then invalid("result", "is required") end
  local metrics = util.optional_object(body, "metrics") or {}
  local miner = current_miner(ctx)
  local job = running_job(ctx, miner, job_id)
  local receipt = signed_receipts.sign(receipts.build(job, miner, body.result, metrics, ctx.now), ctx.node_key.public,
    ctx.node_key.secret)
  local ok = ctx.store:job_finish(job_id, miner.miner_id, { state = "COMPLETED", result = json.encode(body.result),
    metrics = json.encode(metrics), receipt = json.encode(receipt), finished_at = ctx.now }, "jobs_completed")
  if not ok then fail(409, "not_assigned", "job " .. job_id .. " stopped running on this miner meanwhile") end
  sys.notify("miner:" .. miner.miner_id) -- a slot came free: its waiting poll may take a job
  sys.notify("job:" .. job_id)             -- and its event readers learn it ended
  return 200, { status = "ok", job_id = job_id, receipt = receipt }
end

--- Failure codes meaning "this miner cannot run the job", not "the job
-- failed": the job goes back to the queue, its attempt not counted.
M.CANNOT_RUN = { UNSUPPORTED_MODEL = true }

function M.submit_failure(ctx, job_id)
  local body = ctx:body_object()
  local code = util.optional_string(body, "error_code", 64) or "FAILED"
  local message = util.optional_string(body, "error_message", 4000)
  if not message then invalid("error_message", "is required (why the job failed)") end
  local metrics = util.optional_object(body, "metrics") or {}
  local miner = current_miner(ctx)
  local job = running_job(ctx, miner, job_id)
  if M.CANNOT_RUN[code] then
    if not ctx.store:job_release(job_id, miner.miner_id) then
      fail(409, "not_assigned", "job " .. job_id .. " stopped running on this miner meanwhile")
    end
    ctx.log:info("job released", { job_id = job_id, miner_id = miner.miner_id, reason = code .. ": " .. message,
      request_id = ctx.request_id })
    announce(job) -- another miner may take it
    sys.notify("miner:" .. miner.miner_id)
    return 200, { status = "ok", job_id = job_id, state = "QUEUED", requeued = true }
  end
  local ok = ctx.store:job_finish(job_id, miner.miner_id, { state = "FAILED", metrics = json.encode(metrics),
    error = code .. ": " .. message, finished_at = ctx.now }, "jobs_failed")
  if not ok then fail(409, "not_assigned", "job " .. job_id .. " stopped running on this miner meanwhile") end
  sys.notify("miner:" .. miner.miner_id)
  sys.notify("job:" .. job_id)
  return 200, { status = "ok", job_id = job_id, state = "FAILED" }
end

return M
