--- The GPU marketplace from a client's side: renting a listing and bidding
-- for GPU hours, both paid into escrow from the active wallet with a signed
-- rental_lock (what `aitbc marketplace` runs and scripts call).
--   local m = require "aitbc.marketplace"
--   local b = m.book(ctx, "gpu_0a1b2c3d4e5f", 2)        -- b.booking_id, b.total_cost
--   m.release(ctx, b.booking_id)                          -- the hour under way paid, the rest refunded
local api = require "aitbc.api"
local errors = require "aitbc.errors"
local money = require "aitbc.money"

local M = {}

M.BOOKING = { booking_id = "string", listing_id = "string", status = "string", total_cost = "scalar", hours = "integer" }
M.BID = { bid_id = "string", status = "string", hours = "integer", max_price = "scalar" }
M.LISTING = { listing_id = "id", count = "integer", model = "scalar", vram_gb = "number", hourly_rate = "scalar",
  rate_units = "integer", reputation = "number?" }

local function node(ctx, role) return api.from_context(ctx, { role = role or "client" }) end
local function path(template, values) return api.path(template, values) end

--- A listing with its booking and ratings.
function M.details(ctx, listing_id)
  return (node(ctx):call("GET", path("/v1/marketplace/gpu/{id}", { id = listing_id }), { expect = M.LISTING }))
end

--- Books a listing for hours, paying hours × its rate into escrow from the
-- active wallet (opened with password).  -> the booking
function M.book(ctx, listing_id, hours, password)
  local l = M.details(ctx, listing_id)
  if l.booked_until then
    errors.raise("failure", "listing " .. listing_id .. " is booked until " .. l.booked_until, "see aitbc marketplace "
      .. "offers list for GPUs free now", { code = "already_booked" })
  end
  local client = node(ctx)
  local body = require("aitbc.wallet").signed_tx(ctx, client, "rental_lock", { listing_id = listing_id, hours = hours,
    amount = tostring(l.rate_units * hours) }, password)
  body.hours = hours
  return (client:call("POST", path("/v1/marketplace/gpu/{id}/book", { id = listing_id }), { json = body,
    expect = M.BOOKING }))
end

--- Ends a booking (bk_…) now, or the caller's booking of a listing (gpu_…).
function M.release(ctx, id)
  local route = id:match("^bk_") and "/v1/marketplace/bookings/{id}/release" or "/v1/marketplace/gpu/{id}/release"
  return (node(ctx):call("POST", path(route, { id = id }), { expect = M.BOOKING }))
end

function M.booking(ctx, booking_id)
  return (node(ctx):call("GET", path("/v1/marketplace/bookings/{id}", { id = booking_id }), { expect = M.BOOKING }))
end

--- The caller's bookings: as renter (a client key) or provider (a miner key).
function M.orders(ctx, q)
  return (node(ctx, q.role == "provider" and "miner" or "client"):call("GET", "/v1/marketplace/orders",
    { query = q, expect = { items = "array", total = "integer" } }))
end

--- Rates a provider: rating 1–5, comment, of a booking or job of the caller's (or its newest booking of the listing).
function M.review(ctx, listing_id, spec)
  return (node(ctx):call("POST", path("/v1/marketplace/gpu/{id}/reviews", { id = listing_id }), { json = spec,
    expect = { review_id = "string", average_rating = "number" } }))
end

function M.reviews(ctx, listing_id)
  return (node(ctx):call("GET", path("/v1/marketplace/gpu/{id}/reviews", { id = listing_id }),
    { expect = { reviews = "array", total_reviews = "integer" } }))
end

--- Posts a bid: hours of a GPU (model, min_vram_gb, region) at most
-- max_price AITBC an hour; hours × max_price is locked from the active wallet.
function M.bid(ctx, spec, password)
  local rate = money.from_option(spec.max_price, "--max-price")
  local client = node(ctx)
  local body = require("aitbc.wallet").signed_tx(ctx, client, "rental_lock", { listing_id = "bid", hours = spec.hours,
    amount = tostring(rate * spec.hours) }, password)
  body.hours, body.max_price, body.model, body.min_vram_gb = spec.hours, money.format(rate), spec.model, spec.min_vram
  body.region, body.notes = spec.region, spec.notes
  return (client:call("POST", "/v1/marketplace/bids", { json = body, expect = M.BID }))
end

function M.bids(ctx, q)
  return (api.from_context(ctx):call("GET", "/v1/marketplace/bids",
    { query = q, expect = { items = "array", total = "integer" } }))
end

function M.bid_details(ctx, bid_id)
  return (api.from_context(ctx):call("GET", path("/v1/marketplace/bids/{id}", { id = bid_id }), { expect = M.BID }))
end

--- A provider accepts a bid with one of its listings: a booking at the bid's price.
function M.bid_accept(ctx, bid_id, listing_id)
  return (node(ctx, "miner"):call("POST", path("/v1/marketplace/bids/{id}/accept", { id = bid_id }),
    { json = { listing_id = listing_id }, expect = M.BOOKING }))
end

function M.bid_cancel(ctx, bid_id)
  return (node(ctx):call("POST", path("/v1/marketplace/bids/{id}/cancel", { id = bid_id }), { expect = M.BID }))
end

return M
