--- The GPU marketplace: providers list GPUs (tied to their API key and,
-- when they have one, their miner), anyone browses offers, and a pricing
-- oracle summarises what the market asks and what jobs actually paid.
--
-- Reputation of a provider combines its miners' job record and its ratings,
-- each weighted by how much evidence it has: ((completed + 1) + (Σ (stars
-- - 1) / 4 + 1)) / ((completed + failed + expired + 2) + (ratings + 2)):
-- 0.5 for a newcomer, towards 1 with clean jobs and five-star ratings.
-- A client rates a provider once per booking or job of its own that ended
-- well (a booking completed or released, a job completed), 1 to 5 stars.
-- An offer is available while its listing is active, not booked, and its
-- provider has a miner online; a provider without any miner keeps a
-- listing available for an hour after registering or updating it.
-- Suggested rate: the median asked by available listings; when at least
-- three paid deals (jobs completed and paid, bookings with an hour paid,
-- accepted bids) on that GPU model in the last 7 days, the midpoint of that
-- median and the median those deals paid.
-- Registering the same GPU again (provider, miner, model, memory, region)
-- updates its listing instead of offering it twice.
local json = require "aitbc.json"
local money = require "aitbc.money"
local addresses = require "aitbc.protocol.address"
local util = require "aitbc.node.util"

local fail, invalid = util.fail, util.invalid

local M = { FRESH_SECONDS = 3600, HISTORY_SECONDS = 7 * 86400 }

--- "NVIDIA GeForce RTX 4090" and "rtx 4090" are the same model.
function M.model_key(name)
  return (name:lower():gsub("^%s*nvidia%s+", ""):gsub("^geforce%s+", ""):gsub("%s+", " "):gsub("^%s+", ""):gsub("%s+$", ""))
end

local SORTS = {
  price = "l.rate_units ASC", ["-price"] = "l.rate_units DESC", vram = "l.vram_gb ASC", ["-vram"] = "l.vram_gb DESC",
  reputation = "reputation ASC", ["-reputation"] = "reputation DESC", newest = "l.created_at DESC",
}

local function view(l)
  local ratings = l.ratings or 0
  return {
    listing_id = l.listing_id, provider = l.key_id, miner_id = l.miner_id, model = l.model, vram_gb = l.vram_gb,
    count = l.count, hourly_rate = money.format(l.rate_units), rate_units = l.rate_units, region = l.region,
    payout_address = l.payout_address, status = l.booked_until and "booked" or l.status, available = l.available == 1,
    booked_until = util.iso(l.booked_until),
    reputation = l.reputation and math.floor(l.reputation * 1000 + 0.5) / 1000,
    record = l.completed and { completed = l.completed, failed = l.failed, expired = l.expired } or nil,
    rating = { average = ratings > 0 and math.floor(l.stars / ratings * 100 + 0.5) / 100 or nil, count = ratings },
    created_at = util.iso(l.created_at), updated_at = util.iso(l.updated_at),
    -- the older clients' names
    id = l.listing_id, memory_gb = l.vram_gb, price_per_hour = money.format(l.rate_units),
    average_rating = ratings > 0 and math.floor(l.stars / ratings * 100 + 0.5) / 100 or 0, total_reviews = ratings,
  }
end

local MAX_VRAM_GB = 4096

local function vram_of(body, field)
  local vram = util.optional_number(body, field, 0, MAX_VRAM_GB, "vram_gb")
  if vram == 0 then invalid("vram_gb", "must be more than 0") end
  return vram
end

local function offers_filter(ctx)
  return { cutoff = ctx.now - ctx.config.heartbeat_timeout, fresh_since = ctx.now - M.FRESH_SECONDS }
end

local function own(ctx, listing_id)
  local l = ctx.store:listing_get(listing_id)
  if not l then fail(404, "listing_not_found", "no listing " .. listing_id) end
  if l.key_id ~= ctx.key.key_id then fail(403, "not_owner", "listing " .. listing_id .. " belongs to another provider") end
  return l
end

--- A listing as offers show it; 404 when it is gone (removed meanwhile).
local function one(ctx, listing_id)
  local f = offers_filter(ctx)
  f.listing_id, f.order, f.limit = listing_id, "l.listing_id", 1
  local l = ctx.store:offers(f)[1]
  if not l then fail(404, "listing_not_found", "no listing " .. listing_id .. " (removed meanwhile)") end
  return l
end

--- A listing's payout address, if given: an AITBC address, in its one
-- (lower-case) spelling.
local function payout_address(body)
  local text = util.optional_string(body, "payout_address", 128)
  if not text then return nil end
  local address, why = addresses.normalize(text)
  if not address then invalid("payout_address", "is not an AITBC address: " .. tostring(why)) end
  return address
end

function M.register(ctx)
  local body = ctx:body_object()
  local gpu = type(body.gpu) == "table" and body.gpu or body -- the older CLI's {"gpu": {...}}
  local model = util.optional_string(gpu, "model", 100) or util.optional_string(gpu, "name", 100)
  if not model or model:match("^%s*$") then invalid("model", "is required, e.g. \"RTX 4090\"") end
  local vram
  for _, f in ipairs { "vram_gb", "vram", "memory_gb", "memory" } do -- the older APIs' names too
    if gpu[f] ~= nil then
      vram = vram_of(gpu, f)
      break
    end
  end
  if not vram then invalid("vram_gb", "is required: the GPU's memory in GB, e.g. 24") end
  local rate_value = gpu.hourly_rate or gpu.price_per_hour
  if rate_value == nil then invalid("hourly_rate", "is required: AITBC per hour, e.g. 0.5") end
  local l = {
    listing_id = "gpu_" .. util.new_id(6), key_id = ctx.key.key_id, model = model, model_key = M.model_key(model),
    vram_gb = vram, count = util.optional_integer(gpu, "count", 1, 1024, 1),
    rate_units = util.rate(rate_value, gpu.hourly_rate ~= nil and "hourly_rate" or "price_per_hour"),
    region = util.optional_string(gpu, "region", 100), payout_address = payout_address(gpu),
    now = ctx.now,
  }
  local mine = ctx.store:miners_of_key(ctx.key.key_id)
  local wanted = ctx.headers["x-miner-id"] or util.optional_string(body, "miner_id", 64)
  for _, m in ipairs(mine) do
    if m.miner_id == wanted or (not wanted and #mine == 1) then l.miner_id = m.miner_id end
  end
  local listing_id, before = ctx.store:listing_register(l)
  local v = view(one(ctx, listing_id))
  v.gpu_id = v.listing_id -- the older API's name
  if not before then return 201, v end
  -- the same GPU again: its listing is updated, not doubled
  v.updated = true
  v.previous = { hourly_rate = money.format(before.rate_units), count = before.count, status = before.status,
    region = before.region }
  return 200, v
end

--- GET /v1/marketplace/gpu/list?available=&model=&price_max=&memory_min=&region=&limit=&offset=
-- every listing (the older clients' GPU list), with their filters.
function M.list(ctx)
  local q = ctx.query
  local f = offers_filter(ctx)
  if q.model and q.model ~= "" then f.model_key = M.model_key(q.model) end
  f.min_vram = util.query_number(q, "memory_min", 0, MAX_VRAM_GB) or util.query_number(q, "min_vram", 0, MAX_VRAM_GB)
  if q.price_max then f.max_rate = util.rate(q.price_max, "price_max") end
  if q.region and q.region ~= "" then f.region = q.region end
  f.available_only = q.available == "true" or q.available == "1"
  f.order = "l.rate_units ASC"
  f.limit = util.query_integer(q, "limit", 1, 500, 50)
  f.offset = util.query_integer(q, "offset", 0, 1000000000, 0)
  local rows, total = ctx.store:offers(f)
  local items = json.array()
  for i, r in ipairs(rows) do items[i] = view(r) end
  return 200, { items = items, total = total, limit = f.limit, offset = f.offset }
end

--- GET /v1/marketplace/gpu/{id}: a listing with its booking and ratings.
function M.details(ctx, listing_id)
  local v = view(one(ctx, listing_id))
  local b = ctx.store:booking_active("listing_id", listing_id)
  if b then
    v.current_booking = { booking_id = b.booking_id, start_time = util.iso(b.starts_at), end_time = util.iso(b.ends_at),
      hours = b.hours }
  end
  return 200, v
end

--- GET /v1/marketplace/gpu/{id}/reviews: the provider's ratings (this listing's first).
function M.reviews(ctx, listing_id)
  local l = ctx.store:listing_get(listing_id)
  if not l then fail(404, "listing_not_found", "no listing " .. listing_id) end
  local limit = util.query_integer(ctx.query, "limit", 1, 500, 50)
  local offset = util.query_integer(ctx.query, "offset", 0, 1000000000, 0)
  local rows, n, stars = ctx.store:ratings_of("provider_key_id", l.key_id, limit, offset)
  local reviews = json.array()
  for i, r in ipairs(rows) do
    reviews[i] = { rating = r.stars, comment = r.comment, subject = r.subject, listing_id = r.listing_id,
      created_at = util.iso(r.created_at) }
  end
  return 200, { gpu_id = listing_id, listing_id = listing_id, provider = l.key_id,
    average_rating = n > 0 and math.floor(stars / n * 100 + 0.5) / 100 or 0, total_reviews = n, reviews = reviews }
end

--- What a rating is of: the caller's booking or job that ended well, with
-- this listing's provider | 4xx.  The older clients name neither: then the
-- caller's newest completed booking of the listing not yet rated.
local function rating_subject(ctx, l, body)
  local booking_id, job_id = util.optional_string(body, "booking_id", 64), util.optional_string(body, "job_id", 64)
  if booking_id or not job_id then
    local b = booking_id and ctx.store:booking_get(booking_id) or ctx.store:booking_to_rate(l.listing_id, ctx.key.key_id)
    if not b or b.renter_key_id ~= ctx.key.key_id or b.provider_key_id ~= l.key_id then
      fail(409, "nothing_to_rate", "you can rate this provider after a booking of yours ended (completed or released) "
        .. "or a job of yours its miner completed; name it with booking_id or job_id")
    end
    if b.status ~= "completed" and b.status ~= "released" then
      fail(409, "nothing_to_rate", "booking " .. b.booking_id .. " is " .. b.status .. "; rate it once it ended well")
    end
    return "booking:" .. b.booking_id
  end
  local job = ctx.store:job_get(job_id)
  local miner = job and job.miner_id and ctx.store:miner_get(job.miner_id)
  if not job or job.client_key_id ~= ctx.key.key_id or not miner or miner.key_id ~= l.key_id then
    fail(409, "nothing_to_rate", "job " .. job_id .. " is not a job of yours that this provider's miner ran")
  end
  if job.state ~= "COMPLETED" then fail(409, "nothing_to_rate", "job " .. job_id .. " is " .. job.state) end
  return "job:" .. job_id
end

--- POST /v1/marketplace/gpu/{id}/reviews {rating (1–5), comment, booking_id | job_id}
function M.review(ctx, listing_id)
  local body = ctx:body_object()
  local l = ctx.store:listing_get(listing_id)
  if not l then fail(404, "listing_not_found", "no listing " .. listing_id) end
  local stars = util.optional_integer(body, "rating", 1, 5)
  if not stars then invalid("rating", "is required: 1 to 5 stars") end
  local subject = rating_subject(ctx, l, body)
  ctx.store:transaction(function()
    if ctx.store:rating_get(subject) then
      fail(409, "already_rated", subject:gsub(":", " ") .. " is rated already (once per booking or job)")
    end
    ctx.store:rating_insert { subject = subject, provider_key_id = l.key_id, listing_id = listing_id,
      rater_key_id = ctx.key.key_id, stars = stars, comment = util.optional_string(body, "comment", 2000),
      created_at = ctx.now }
  end)
  local _, n, total = ctx.store:ratings_of("provider_key_id", l.key_id, 1, 0)
  return 201, { status = "review_added", review_id = subject, subject = subject, gpu_id = listing_id, rating = stars,
    average_rating = math.floor(total / n * 100 + 0.5) / 100, total_reviews = n,
    reputation = view(one(ctx, listing_id)).reputation }
end

function M.list_own(ctx)
  local f = offers_filter(ctx)
  f.key_id, f.order = ctx.key.key_id, "l.created_at DESC"
  f.limit = util.query_integer(ctx.query, "limit", 1, 1000, 1000)
  f.offset = util.query_integer(ctx.query, "offset", 0, 1000000000, 0)
  local rows, total = ctx.store:offers(f)
  local items = json.array()
  for _, r in ipairs(rows) do items[#items + 1] = view(r) end
  return 200, { items = items, total = total, limit = f.limit, offset = f.offset }
end

function M.update(ctx, listing_id)
  own(ctx, listing_id)
  local body = ctx:body_object()
  local fields = { updated_at = ctx.now }
  if body.hourly_rate ~= nil then fields.rate_units = util.rate(body.hourly_rate, "hourly_rate") end
  if body.status ~= nil then
    if body.status ~= "active" and body.status ~= "paused" then invalid("status", "must be active or paused") end
    fields.status = body.status
  end
  fields.count = util.optional_integer(body, "count", 1, 1024)
  fields.region = util.optional_string(body, "region", 100)
  fields.payout_address = payout_address(body)
  fields.vram_gb = vram_of(body, "vram_gb")
  ctx.store:listing_update(listing_id, fields)
  return 200, view(one(ctx, listing_id))
end

function M.remove(ctx, listing_id)
  own(ctx, listing_id)
  ctx.store:listing_delete(listing_id)
  return 200, { listing_id = listing_id, status = "removed" }
end

function M.offers(ctx)
  local q = ctx.query
  local f = offers_filter(ctx)
  -- the older clients' names: gpu_model, memory_min, price_max, status=open
  local model = q.model ~= nil and q.model or q.gpu_model
  if model and model ~= "" then f.model_key = M.model_key(model) end
  f.min_vram = util.query_number(q, "min_vram", 0, MAX_VRAM_GB) or util.query_number(q, "memory_min", 0, MAX_VRAM_GB)
  if q.max_price then f.max_rate = util.rate(q.max_price, "max_price")
  elseif q.price_max then f.max_rate = util.rate(q.price_max, "price_max") end
  if q.region and q.region ~= "" then f.region = q.region end
  if q.status ~= nil and q.status ~= "open" and q.status ~= "all" then invalid("status", "must be open or all") end
  f.available_only = q.available ~= "all" and q.available ~= "false" and q.status ~= "all"
  local sort = q.sort or "price"
  f.order = SORTS[sort]
  if not f.order then
    local names = {}
    for k in pairs(SORTS) do names[#names + 1] = k end
    table.sort(names)
    invalid("sort", "must be one of " .. table.concat(names, ", "))
  end
  f.limit = util.query_integer(q, "limit", 1, 500, 50)
  f.offset = util.query_integer(q, "offset", 0, 1000000000, 0)
  local rows, total = ctx.store:offers(f)
  local items = json.array()
  for i, r in ipairs(rows) do items[i] = view(r) end
  return 200, { items = items, total = total, limit = f.limit, offset = f.offset, sort = sort }
end

--- Statistics of integer amounts (nearest-rank percentiles; the median of
-- an even count is the lower middle and the upper middle's mean, rounded down).
local function stats(values)
  local n = #values
  if n == 0 then return { count = 0 } end
  table.sort(values)
  -- the mean as the sum of quotients and remainders: a plain sum of many
  -- rates could overflow
  local quotients, remainders = 0, 0
  for _, v in ipairs(values) do quotients, remainders = quotients + v // n, remainders + v % n end
  local function pct(p) return values[math.max(1, math.ceil(p / 100 * n))] end
  local median = n % 2 == 1 and values[(n + 1) // 2] or (values[n // 2] + values[n // 2 + 1]) // 2
  local f = money.format
  return { count = n, min = f(values[1]), max = f(values[n]), average = f(quotients + remainders // n), median = f(median),
    p25 = f(pct(25)), p75 = f(pct(75)), p90 = f(pct(90)), median_units = median }
end

function M.pricing(ctx, model)
  model = model or ctx.query.model
  if not model or model == "" then invalid("model", "is required, e.g. /v1/marketplace/pricing/RTX%204090") end
  local key = M.model_key(model)
  local f = offers_filter(ctx)
  f.model_key, f.available_only, f.order, f.limit = key, true, "l.rate_units", 100000
  local rates = {}
  for i, r in ipairs(ctx.store:offers(f)) do rates[i] = r.rate_units end
  local paid = ctx.store:completed_rates("%" .. key:gsub("[%%_]", "") .. "%", ctx.now - M.HISTORY_SECONDS)
  -- and what renters paid: bookings with an hour paid, bids a provider accepted
  local booked = ctx.store:booked_rates(key, ctx.now - M.HISTORY_SECONDS)
  table.move(booked, 1, #booked, #paid + 1, paid)
  local live, jobs = stats(rates), stats(paid)
  local suggested, rule
  if live.count > 0 and jobs.count >= 3 then
    suggested = (live.median_units + jobs.median_units) // 2
    rule = "midpoint of the median asked by available listings and the median paid in the last 7 days (jobs completed "
      .. "and paid, bookings with an hour paid, accepted bids)"
  elseif live.count > 0 then
    suggested, rule = live.median_units, "median asked by available listings (fewer than 3 paid deals to learn from)"
  elseif jobs.count > 0 then
    suggested, rule = jobs.median_units, "median paid in the last 7 days (no available listing)"
  end
  live.median_units, jobs.median_units = nil, nil
  if live.count == 0 and jobs.count == 0 then
    fail(404, "no_market_data", "no available listings and no completed jobs for " .. model)
  end
  return 200, {
    model = model, listings = live, completed_jobs = jobs, currency = "AITBC", unit = "per GPU-hour",
    suggested_hourly_rate = suggested and money.format(suggested), suggestion_rule = rule,
  }
end

return M
