--- Direct GPU rental (spec §4.1): a renter books a listing for some hours,
-- paying hours × its rate into the escrow account rent:ID with a signed
-- rental_lock (ID = bk_ and 12 hex digits of the transaction's hash); the
-- listing is theirs for that window (one booking at a time: the check and
-- the lock commit together); jobs they submit with the booking go to the
-- listing's miner only, and that miner takes no other jobs meanwhile.
-- Each rental hour (--rental-hour seconds, 3600 by default) that has
-- passed is released to the provider's payout address; the renter may end
-- it early (the hour under way is paid, the rest refunded); a provider
-- whose miner goes offline refunds every hour not yet paid.  Bids: a
-- client locks hours × the most it would pay per hour, and a provider
-- accepting the bid books one of its listings at that price, the escrow
-- already in place; an open bid expires (refunded) after its time.
local chain = require "aitbc.node.chain"
local json = require "aitbc.json"
local money = require "aitbc.money"
local util = require "aitbc.node.util"

local fail, invalid = util.fail, util.invalid

local M = { BID_SECONDS = 7 * 86400 }

--- Seconds one rental hour lasts on this node.
local function hour(ctx) return ctx.config.rental_hour or 3600 end

function M.view(b, now)
  local v = {
    booking_id = b.booking_id, listing_id = b.listing_id, gpu_id = b.listing_id, model = b.model,
    miner_id = b.miner_id, provider = b.provider_key_id, renter = b.renter_key_id, renter_address = b.renter_address,
    payout_address = b.payout_address, hours = b.hours, duration_hours = b.hours, hourly_rate = money.format(b.rate_units),
    price_per_hour = money.format(b.rate_units), total_cost = money.format(b.total_units), status = b.status,
    chain_id = b.chain_id, escrow_account = "rent:" .. b.booking_id, lock_tx = b.lock_tx,
    start_time = util.iso(b.starts_at), end_time = util.iso(b.ends_at), created_at = util.iso(b.created_at),
    hour_seconds = b.period, hours_paid = b.hours_paid, paid = money.format(b.paid_units),
    refunded = money.format(b.refunded_units), ended_at = util.iso(b.ended_at), end_reason = b.end_reason,
    bid_id = b.bid_id,
  }
  if b.status == "active" and now then
    v.escrow_left = money.format(b.total_units - b.paid_units - b.refunded_units)
    v.seconds_left = math.max(0, math.floor(b.ends_at - now))
  end
  return v
end

local function hours_of(body)
  local h = body.hours ~= nil and body.hours or body.duration_hours -- the older clients' name
  if math.type(h) ~= "integer" and type(h) == "number" and h == math.floor(h) then h = math.tointeger(h) end
  if math.type(h) ~= "integer" or h < 1 or h > chain.MAX_RENTAL_HOURS then
    invalid(body.hours ~= nil and "hours" or "duration_hours",
      "must be a whole number of hours from 1 to " .. chain.MAX_RENTAL_HOURS)
  end
  return h
end

--- The signed rental_lock of a body, checked for this purpose (without state) | 422 saying how to pay.
local function lock_of(ctx, body, listing_id, hours, how)
  if body.tx == nil then
    fail(422, "payment_required", "a booking is paid into escrow from your wallet, with a signed rental_lock; "
      .. "pay with: " .. how, "tx")
  end
  if type(body.tx) ~= "table" or type(body.tx.payload) ~= "table" then invalid("tx", "must be a signed rental_lock") end
  local chain_id = util.hosted_chain_of(ctx, body.tx.chain_id)
  local c = chain.check_rental(chain_id, body, ctx.now)
  if c.tx.payload.listing_id ~= listing_id or c.tx.payload.hours ~= hours then
    invalid("tx.payload", "must lock for " .. listing_id .. " and " .. hours .. " hour(s), as this request asks")
  end
  return c, chain_id
end

local function payout_of(ctx, l)
  local payout = l.payout_address or (l.miner_id and ctx.store:miner_payout(l.miner_id))
  if not payout then
    fail(409, "no_payout_address", "listing " .. l.listing_id .. " names no payout address, nor does its miner: its "
      .. "provider cannot be paid, so it cannot be booked")
  end
  return payout
end

--- Books a listing (l) for a renter, its escrow committed with it; call
-- inside a store transaction.  c: the checked rental_lock (nil when the
-- escrow is already in place: an accepted bid).
local function book(ctx, l, spec)
  if not l.miner_id then
    fail(409, "no_miner", "listing " .. l.listing_id .. " names no miner: nothing would run the renter's jobs")
  end
  local active = ctx.store:booking_active("listing_id", l.listing_id)
  if active then
    fail(409, "already_booked", string.format("listing %s is booked until %s", l.listing_id, util.iso(active.ends_at)))
  end
  if spec.c then chain.commit(ctx.store, spec.chain_id, spec.c, ctx.now) end
  local b = { booking_id = spec.booking_id, listing_id = l.listing_id, renter_key_id = spec.renter_key_id,
    renter_address = spec.renter_address, provider_key_id = l.key_id, miner_id = l.miner_id, payout_address = spec.payout,
    model = l.model, hours = spec.hours, rate_units = spec.rate, total_units = spec.rate * spec.hours,
    chain_id = spec.chain_id, lock_tx = spec.lock_tx, period = hour(ctx), created_at = ctx.now, starts_at = ctx.now,
    ends_at = ctx.now + spec.hours * hour(ctx), bid_id = spec.bid_id }
  ctx.store:booking_insert(b)
  return ctx.store:booking_get(b.booking_id)
end

--- POST /v1/marketplace/gpu/{id}/book {hours, tx, signature}: 201 the booking.
function M.book(ctx, listing_id)
  local body = ctx:body_object()
  local hours = hours_of(body)
  local l = ctx.store:listing_get(listing_id)
  if not l then fail(404, "listing_not_found", "no listing " .. listing_id) end
  local c, chain_id = lock_of(ctx, body, listing_id, hours, string.format("aitbc marketplace gpu book %s --hours %d",
    listing_id, hours))
  if l.key_id == ctx.key.key_id then fail(409, "own_listing", "listing " .. listing_id .. " is yours") end
  local b = ctx.store:transaction(function()
    local now_l = ctx.store:offers { listing_id = listing_id, order = "l.listing_id", limit = 1, available_only = false,
      cutoff = ctx.now - ctx.config.heartbeat_timeout, fresh_since = ctx.now - 3600 }[1]
    if not now_l or now_l.status ~= "active" then fail(409, "not_available", "listing " .. listing_id .. " is not active") end
    if now_l.booked_until then
      fail(409, "already_booked", string.format("listing %s is booked until %s", listing_id, util.iso(now_l.booked_until)))
    end
    if now_l.available ~= 1 then
      fail(409, "not_available", "listing " .. listing_id .. "'s provider has no miner online now")
    end
    local total = now_l.rate_units * hours
    if c.amount ~= total then
      fail(409, "price_changed", string.format("%d hour(s) of %s cost %s AITBC at its rate of %s AITBC/hour; the lock "
        .. "holds %s", hours, listing_id, money.format(total), money.format(now_l.rate_units), money.format(c.amount)),
        "tx.payload.amount")
    end
    return book(ctx, now_l, { c = c, chain_id = chain_id, booking_id = chain.booking_id(c.hash),
      renter_key_id = ctx.key.key_id, renter_address = c.tx.from, payout = payout_of(ctx, now_l), hours = hours,
      rate = now_l.rate_units, lock_tx = c.hash })
  end)
  local v = M.view(b, ctx.now)
  v.status_word = "booked" -- the older clients read status "booked"
  return 201, v
end

local function own_booking(ctx, booking_id)
  local b = ctx.store:booking_get(booking_id)
  if not b or (b.renter_key_id ~= ctx.key.key_id and b.provider_key_id ~= ctx.key.key_id and ctx.key.role ~= "admin") then
    fail(404, "booking_not_found", "no booking " .. booking_id)
  end
  return b
end

function M.show(ctx, booking_id) return 200, M.view(own_booking(ctx, booking_id), ctx.now) end

--- Pays the provider for hours up to `paid_hours` and ends the booking
-- when `finish` {status, reason, refund = true}: the rest back to the renter.
-- One store transaction.  -> paid units, refunded units
local function settle(store, node_key, b, paid_hours, now, finish)
  return store:transaction(function()
    local owed = (paid_hours - b.hours_paid) * b.rate_units
    local paid, refunded = 0, 0
    if owed > 0 then
      chain.settle(store, b.chain_id, b.booking_id, b.payout_address, "rental_release", node_key, now, owed)
      paid = owed
    end
    if finish then
      local rest = b.total_units - b.paid_units - paid - b.refunded_units
      if rest > 0 then
        chain.settle(store, b.chain_id, b.booking_id, b.renter_address, "rental_refund", node_key, now, rest)
        refunded = rest
      end
      store:booking_jobs_cancel(b.booking_id, now, "booking " .. b.booking_id .. " ended")
    end
    store:booking_settled(b.booking_id, { hours_paid = paid_hours, paid = paid, refunded = refunded,
      status = finish and finish.status, ended_at = finish and now, end_reason = finish and finish.reason })
    return paid, refunded
  end)
end

--- Ends the renter's booking now: the hour under way is paid, the rest refunded.
local function release(ctx, b)
  if b.renter_key_id ~= ctx.key.key_id and ctx.key.role ~= "admin" then
    fail(403, "not_renter", "only the renter can release booking " .. b.booking_id)
  end
  if b.status ~= "active" then fail(409, "not_active", "booking " .. b.booking_id .. " has ended (" .. b.status .. ")") end
  local started = math.min(b.hours, math.max(1, math.ceil((ctx.now - b.starts_at) / b.period)))
  local paid, refunded = settle(ctx.store, ctx.node_key, b, started, ctx.now,
    { status = "released", reason = "released by the renter" })
  local v = M.view(ctx.store:booking_get(b.booking_id), ctx.now)
  v.refund, v.paid_now = money.format(refunded), money.format(paid)
  v.message = string.format("released after %d of %d hour(s): %s AITBC paid to the provider, %s AITBC refunded",
    started, b.hours, v.paid, v.refunded)
  return 200, v
end

--- POST /v1/marketplace/bookings/{id}/release
function M.release(ctx, booking_id) return release(ctx, own_booking(ctx, booking_id)) end

--- POST /v1/marketplace/gpu/{id}/release: the caller's booking of that listing (the older clients' route).
function M.release_listing(ctx, listing_id)
  local b = ctx.store:booking_active("listing_id", listing_id)
  if not b or b.renter_key_id ~= ctx.key.key_id then
    fail(400, "not_booked", "you have no active booking of " .. listing_id)
  end
  return release(ctx, b)
end

--- GET /v1/marketplace/orders?status=&role=renter|provider: the caller's bookings.
function M.orders(ctx)
  local q = ctx.query
  local role = q.role or (ctx.key.role == "miner" and "provider" or "renter")
  if role ~= "renter" and role ~= "provider" then invalid("role", "must be renter or provider") end
  local status = q.status and q.status:lower() or nil
  if status == "all" then status = nil end
  if status and not ({ active = true, completed = true, released = true, interrupted = true })[status] then
    invalid("status", "must be active, completed, released, interrupted or all")
  end
  local limit = util.query_integer(q, "limit", 1, 500, 50)
  local offset = util.query_integer(q, "offset", 0, 1000000000, 0)
  local rows, total = ctx.store:bookings_of(role == "renter" and "renter_key_id" or "provider_key_id", ctx.key.key_id,
    status, limit, offset)
  local items = json.array()
  for i, b in ipairs(rows) do
    local v = M.view(b, ctx.now)
    v.order_id, v.gpu_model, v.duration_hours = b.booking_id, b.model, b.hours -- the older clients' names
    items[i] = v
  end
  return 200, { items = items, total = total, limit = limit, offset = offset, role = role }
end

--- The supervisor: pays the hours that passed, ends bookings that ran out
-- (completed) or whose miner went offline (interrupted: the rest refunded),
-- and refunds open bids that expired.  Returns how many changed.
function M.sweep(store, node_key, now, heartbeat_timeout)
  local n = 0
  for _, b in ipairs(store:bookings_active()) do
    local offline = b.miner_id and (b.miner_status ~= "ONLINE" or (b.last_seen or 0) < now - heartbeat_timeout)
    local elapsed = math.min(b.hours, math.floor((now - b.starts_at) / b.period))
    if offline then
      settle(store, node_key, b, math.max(elapsed, b.hours_paid), now, { status = "interrupted",
        reason = "the provider's miner " .. b.miner_id .. " went offline" })
      n = n + 1
    elseif elapsed >= b.hours then
      settle(store, node_key, b, b.hours, now, { status = "completed", reason = "its hours ran out" })
      n = n + 1
    elseif elapsed > b.hours_paid then
      settle(store, node_key, b, elapsed, now)
      n = n + 1
    end
  end
  for _, bid in ipairs(store:bids_expired(now)) do
    store:transaction(function()
      if store:bid_end(bid.bid_id, "expired", now) then
        chain.settle(store, bid.chain_id, bid.booking_id, bid.address, "rental_refund", node_key, now)
      end
    end)
    n = n + 1
  end
  return n
end

-- ---- bids ----

local function bid_view(b)
  return { bid_id = b.bid_id, id = b.bid_id, booking_id = b.status == "accepted" and b.booking_id or nil,
    model = b.model, min_vram_gb = b.min_vram_gb, region = b.region, hours = b.hours,
    max_price = money.format(b.rate_units), price = money.format(b.rate_units), total = money.format(b.total_units),
    escrow_account = "rent:" .. b.booking_id, lock_tx = b.lock_tx, notes = b.notes, status = b.status,
    created_at = util.iso(b.created_at), submitted_at = util.iso(b.created_at), expires_at = util.iso(b.expires_at),
    listing_id = b.listing_id, ended_at = util.iso(b.ended_at) }
end

--- POST /v1/marketplace/bids {model?, min_vram_gb?, region?, hours, max_price, notes?, tx, signature}
function M.bid(ctx)
  local body = ctx:body_object()
  if body.tx == nil then -- the older clients' unpaid bid {provider, capacity, price, notes}: say how to post one
    local function shown(v, default)
      return (math.type(v) == "integer" or (type(v) == "string" and v:match("^%d+%.?%d*$"))) and tostring(v)
        or (type(v) == "number" and v == v and v > 0 and v < 1e9 and money.format(util.rate(v, "price"))) or default
    end
    fail(422, "payment_required", "a bid locks hours × max_price in escrow from your wallet, with a signed rental_lock; "
      .. "post it with: aitbc marketplace bid submit --hours " .. shown(body.hours or body.duration_hours, "HOURS")
      .. " --max-price " .. shown(body.max_price or body.price, "PRICE") .. " [--model MODEL]", "tx")
  end
  local hours = hours_of(body)
  if body.max_price == nil then
    invalid("max_price", "is required: the most you pay per GPU-hour, in AITBC (a bid locks hours × max_price)")
  end
  local rate = util.rate(body.max_price, "max_price")
  if rate == 0 then invalid("max_price", "must be more than 0") end
  local model = util.optional_string(body, "model", 100)
  local c, chain_id = lock_of(ctx, body, "bid", hours, string.format("aitbc marketplace bid submit --hours %d "
    .. "--max-price %s%s", hours, money.format(rate), model and (" --model \"" .. model .. "\"") or ""))
  if c.amount ~= rate * hours then
    invalid("tx.payload.amount", string.format("must be %s AITBC: %d hour(s) × %s AITBC", money.format(rate * hours),
      hours, money.format(rate)))
  end
  local b = { bid_id = "bid_" .. c.hash:sub(1, 12), booking_id = chain.booking_id(c.hash), key_id = ctx.key.key_id,
    address = c.tx.from, model = model, model_key = model and require("aitbc.node.marketplace").model_key(model),
    min_vram_gb = util.optional_number(body, "min_vram_gb", 0, 4096), region = util.optional_string(body, "region", 100),
    hours = hours, rate_units = rate, total_units = rate * hours, chain_id = chain_id, lock_tx = c.hash,
    notes = util.optional_string(body, "notes", 1024), created_at = ctx.now,
    expires_at = ctx.now + util.optional_integer(body, "expires_in_seconds", 60, M.BID_SECONDS, M.BID_SECONDS) }
  ctx.store:transaction(function()
    chain.commit(ctx.store, chain_id, c, ctx.now)
    ctx.store:bid_insert(b)
  end)
  b.status = "open"
  return 201, bid_view(b)
end

--- GET /v1/marketplace/bids?status=open|…&mine=1&model=
function M.bids(ctx)
  local q = ctx.query
  local status = q.status or "open"
  if status == "all" then status = nil end
  local limit = util.query_integer(q, "limit", 1, 500, 50)
  local offset = util.query_integer(q, "offset", 0, 1000000000, 0)
  local rows, total = ctx.store:bids { key_id = (q.mine == "1" or q.mine == "true") and ctx.key.key_id or nil,
    status = status, model_key = q.model and require("aitbc.node.marketplace").model_key(q.model) or nil,
    limit = limit, offset = offset }
  local items = json.array()
  for i, b in ipairs(rows) do items[i] = bid_view(b) end
  return 200, { items = items, total = total, limit = limit, offset = offset }
end

local function bid_of(ctx, bid_id)
  local b = ctx.store:bid_get(bid_id)
  if not b then fail(404, "bid_not_found", "no bid " .. bid_id) end
  return b
end

function M.bid_show(ctx, bid_id) return 200, bid_view(bid_of(ctx, bid_id)) end

--- POST /v1/marketplace/bids/{id}/cancel: the bidder's open bid; its escrow comes back.
function M.bid_cancel(ctx, bid_id)
  local b = bid_of(ctx, bid_id)
  if b.key_id ~= ctx.key.key_id then fail(403, "not_bidder", "bid " .. bid_id .. " is someone else's") end
  ctx.store:transaction(function()
    if not ctx.store:bid_end(bid_id, "canceled", ctx.now) then
      fail(409, "bid_closed", "bid " .. bid_id .. " is " .. ctx.store:bid_get(bid_id).status)
    end
    chain.settle(ctx.store, b.chain_id, b.booking_id, b.address, "rental_refund", ctx.node_key, ctx.now)
  end)
  return 200, bid_view(ctx.store:bid_get(bid_id))
end

--- POST /v1/marketplace/bids/{id}/accept {listing_id}: a provider books one
-- of its listings that meets the bid, at the bid's price, from its escrow.
function M.bid_accept(ctx, bid_id)
  local body = ctx:body_object()
  local listing_id = util.optional_string(body, "listing_id", 64)
  if not listing_id then invalid("listing_id", "is required: the listing of yours that the bid books") end
  local booking = ctx.store:transaction(function()
    local b = bid_of(ctx, bid_id)
    if b.status ~= "open" then fail(409, "bid_closed", "bid " .. bid_id .. " is " .. b.status) end
    local l = ctx.store:listing_get(listing_id)
    if not l or l.key_id ~= ctx.key.key_id then fail(404, "listing_not_found", "you have no listing " .. listing_id) end
    if l.status ~= "active" then fail(409, "not_available", "listing " .. listing_id .. " is paused") end
    if b.model_key and l.model_key ~= b.model_key then
      fail(409, "does_not_meet", "bid " .. bid_id .. " wants a " .. b.model .. "; listing " .. listing_id .. " is a " .. l.model)
    end
    if b.min_vram_gb and l.vram_gb < b.min_vram_gb then
      fail(409, "does_not_meet", string.format("bid %s wants %g GB; listing %s has %g GB", bid_id, b.min_vram_gb,
        listing_id, l.vram_gb))
    end
    if b.region and l.region ~= b.region then
      fail(409, "does_not_meet", "bid " .. bid_id .. " wants region " .. b.region)
    end
    if b.key_id == l.key_id then fail(409, "own_bid", "bid " .. bid_id .. " is your own") end
    local booked = book(ctx, l, { chain_id = b.chain_id, booking_id = b.booking_id, renter_key_id = b.key_id,
      renter_address = b.address, payout = payout_of(ctx, l), hours = b.hours, rate = b.rate_units, lock_tx = b.lock_tx,
      bid_id = bid_id })
    ctx.store:bid_end(bid_id, "accepted", ctx.now, listing_id)
    return booked
  end)
  return 201, M.view(booking, ctx.now)
end

--- The booking a job is submitted under: the caller's, active | 4xx.
function M.for_job(ctx, booking_id)
  local b = ctx.store:booking_get(booking_id)
  if not b or b.renter_key_id ~= ctx.key.key_id then fail(404, "booking_not_found", "you have no booking " .. booking_id) end
  if b.status ~= "active" then fail(409, "booking_ended", "booking " .. booking_id .. " has ended (" .. b.status .. ")") end
  if not b.miner_id then
    fail(409, "no_miner", "listing " .. b.listing_id .. " names no miner: nothing can run jobs under booking " .. booking_id)
  end
  return b
end

return M
