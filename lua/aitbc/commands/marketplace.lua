--- aitbc marketplace: list GPUs for rent, browse offers, check prices.
local errors = require "aitbc.errors"

local function client(ctx, role) return require("aitbc.api").from_context(ctx, { role = role }) end
local function listing_path(id) return require("aitbc.api").path("/v1/marketplace/gpu/{listing_id}", { listing_id = id }) end

--- A price option: checked here, sent as typed (the node reads AITBC decimals).
local function amount(text, option)
  require("aitbc.money").from_option(text, option, true)
  return text
end

-- What the commands read from the node's replies (aitbc.api check_reply specs).
local LISTING = { listing_id = "id", count = "integer", model = "scalar", vram_gb = "number", hourly_rate = "scalar",
  reputation = "number?" }
local LISTINGS = { items = { "array", LISTING } }
-- The JSON fields of a listing (--json FIELDS; aitbc.cli.registry).
local LISTING_FIELDS = { "listing_id", "provider", "miner_id", "model", "vram_gb", "count", "hourly_rate", "rate_units",
  "region", "payout_address", "status", "available", "booked_until", "reputation", "record", "rating", "created_at",
  "updated_at", "current_booking", "id", "memory_gb", "price_per_hour", "average_rating", "total_reviews" }
local BOOKING_FIELDS = { "booking_id", "listing_id", "gpu_id", "model", "miner_id", "provider", "renter",
  "renter_address", "payout_address", "hours", "duration_hours", "hourly_rate", "price_per_hour", "total_cost", "status",
  "status_word", "chain_id", "escrow_account", "lock_tx", "start_time", "end_time", "created_at", "hour_seconds",
  "hours_paid", "paid", "refunded", "ended_at", "end_reason", "bid_id", "escrow_left", "seconds_left", "refund",
  "paid_now", "message", "order_id", "gpu_model" }
local BID_FIELDS = { "bid_id", "id", "booking_id", "model", "min_vram_gb", "region", "hours", "max_price", "price", "total",
  "escrow_account", "lock_tx", "notes", "status", "created_at", "submitted_at", "expires_at", "listing_id", "ended_at" }
local password_file = { "--password-file", metavar = "FILE",
  help = "wallet password from FILE (else AITBC_WALLET_PASSWORD or a prompt)" }
local function password(ctx)
  return require("aitbc.secrets.password").get("wallet", ctx.opts.password_file, false, ctx.out.format == "table")
end
local function M() return require "aitbc.marketplace" end

local function render_booking(d, out)
  out:print(out:format_record({
    booking_id = d.booking_id, gpu = d.model .. " (listing " .. d.listing_id .. ", miner " .. tostring(d.miner_id) .. ")",
    status = d.status .. (d.end_reason and (": " .. d.end_reason) or ""),
    window = tostring(d.start_time) .. " → " .. tostring(d.end_time) .. string.format(" (%d hour(s) of %gs)", d.hours,
      d.hour_seconds or 3600),
    price = string.format("%s AITBC/hour, %s AITBC in all", d.hourly_rate, d.total_cost),
    escrow = string.format("%s: %s paid to the provider (%d hour(s)), %s refunded%s", tostring(d.escrow_account), d.paid,
      d.hours_paid or 0, d.refunded, d.escrow_left and (", " .. d.escrow_left .. " left") or ""),
    lock_tx = d.lock_tx,
  }, { { "booking_id", "booking" }, { "gpu", "GPU" }, "status", "window", "price", "escrow", { "lock_tx", "escrow lock" } }))
end

local function render_bid(d, out)
  out:print(out:format_record({ bid_id = d.bid_id, wants = string.format("%d hour(s) of %s%s%s", d.hours,
    d.model or "any GPU", d.min_vram_gb and string.format(", %g GB or more", d.min_vram_gb) or "",
    d.region and (" in " .. d.region) or ""), price = string.format("at most %s AITBC/hour, %s AITBC locked", d.max_price,
    d.total), status = d.status .. (d.booking_id and (": booking " .. d.booking_id) or ""), expires = d.expires_at,
    notes = d.notes }, { { "bid_id", "bid" }, "wants", "price", "status", "expires", "notes" }))
end


local function render_listing(d, out)
  out:print(out:format_record({
    listing_id = d.listing_id, gpu = string.format("%dx %s (%s GB)", d.count, d.model, d.vram_gb),
    price = d.hourly_rate .. " AITBC/hour", region = d.region or "-", status = d.status,
    live = d.available and "yes: offered on the network now" or "no (paused, or its provider is offline)",
    reputation = string.format("%.2f", d.reputation or 0.5),
  }, { { "listing_id", "listing_id" }, "gpu", "price", "region", "status", "live", "reputation" }))
end

local function offers_table(items, out)
  local rows = {}
  for i, o in ipairs(items) do
    rows[i] = { listing = o.listing_id, provider = o.provider, reputation = string.format("%.2f", o.reputation or 0.5),
      gpu = (o.count > 1 and (o.count .. "x ") or "") .. o.model, vram = string.format("%g GB", o.vram_gb),
      price = o.hourly_rate, region = o.region or "-", status = o.available and "available" or o.status }
  end
  return out:format_table(rows, { { "listing", "listing", keep = true }, "provider", { "reputation", "rep" }, "gpu",
    "vram", { "price", "AITBC/h" }, "region", "status" })
end

return {
  name = "marketplace",
  category = "Workflows",
  summary = "The GPU marketplace: list your GPUs, browse offers, see market prices",
  description = "Rent a GPU directly (gpu book: hours × its rate locked in escrow, paid to the provider hour by "
    .. "hour), or post a bid that providers accept. Reputation combines a provider's job record and ratings: "
    .. "((completed + 1) + (Σ (stars - 1) / 4 + 1)) / ((completed + failed + expired + 2) + (ratings + 2)). "
    .. "The suggested price is the median asked by available listings, blended with what was paid on that GPU "
    .. "in the last 7 days (jobs, bookings, accepted bids) when there are at least three such deals.",
  commands = {
    {
      name = "gpu",
      summary = "GPU listings: register and manage yours; details, book and release others'",
      commands = {
        {
          name = "register",
          summary = "List a GPU on the marketplace (live at once; the same GPU again updates its listing)",
          id_field = "listing_id", fields = LISTING_FIELDS,
          options = {
            { "--model", required = true, metavar = "MODEL", help = "GPU model, e.g. \"RTX 4090\"" },
            { "--vram", type = "number", required = true, min = 0.001, max = 4096, metavar = "GB", help = "GPU memory" },
            { "--hourly-rate", required = true, metavar = "AITBC", help = "price per GPU-hour" },
            { "--count", type = "integer", min = 1, max = 1024, default = 1, help = "how many such GPUs" },
            { "--region", metavar = "NAME", help = "region label" },
            { "--payout-address", metavar = "ADDRESS", help = "where payments go" },
            { "--miner-id", metavar = "ID", help = "the miner serving it (default: your only miner, if any)" },
          },
          examples = { [[aitbc marketplace gpu register --model "RTX 4090" --vram 24 --hourly-rate 0.5]] },
          run = function(ctx)
            local o = ctx.opts
            local listing = client(ctx, "miner"):call("POST", "/v1/marketplace/gpu/register", {
              headers = o.miner_id and { ["X-Miner-ID"] = o.miner_id } or nil,
              json = { model = o.model, vram_gb = o.vram, hourly_rate = amount(o.hourly_rate, "--hourly-rate"), count = o.count,
                region = o.region, payout_address = o.payout_address, miner_id = o.miner_id }, expect = LISTING })
            return listing, function(d, out)
              if d.updated then
                local p = d.previous or {}
                out:success(string.format("you already listed this GPU as %s: updated it (%s → %s AITBC/hour, %s → %s "
                  .. "GPU(s))%s", d.listing_id, tostring(p.hourly_rate), d.hourly_rate, tostring(p.count), d.count,
                  d.available and "; live on the network" or ""))
                out:print(out:style("one listing per GPU; --count N says how many, --region another place", "dim"))
              else
                out:success("listing " .. d.listing_id .. (d.available and " is live on the network" or " registered"))
              end
              render_listing(d, out)
            end
          end,
        },
        {
          name = "list",
          summary = "Your listings",
          list = "items", paged = "/v1/marketplace/gpu/mine", id_field = "listing_id", fields = LISTING_FIELDS,
          run = function(ctx)
            local res = client(ctx, "miner"):call("GET", "/v1/marketplace/gpu/mine", { expect = LISTINGS })
            return res, function(d, out)
              if #d.items == 0 then out:print("no listings yet (aitbc marketplace gpu register)") return end
              out:print(offers_table(d.items, out))
            end
          end,
        },
        {
          name = "details",
          summary = "A listing: its GPU, price, reputation, ratings and current booking",
          args = { { "listing_id", help = "gpu_..." } }, fields = LISTING_FIELDS,
          run = function(ctx)
            return M().details(ctx, ctx.args.listing_id), function(d, out)
              render_listing(d, out)
              out:print(out:format_record({ rating = d.rating and d.rating.count > 0 and string.format("%.2f of 5 (%d)",
                d.rating.average, d.rating.count) or "no ratings yet", booked = d.current_booking and string.format(
                "until %s (booking %s)", d.current_booking.end_time, d.current_booking.booking_id) or "no" },
                { "rating", "booked" }))
            end
          end,
        },
        {
          name = "book",
          summary = "Rent a GPU for some hours: hours × its rate locked in escrow from your wallet, paid hourly",
          args = { { "listing_id", help = "gpu_... (aitbc marketplace offers list)" } },
          options = {
            { "--hours", type = "integer", min = 1, max = 720, required = true, metavar = "H", help = "how many hours" },
            password_file,
          },
          id_field = "booking_id", fields = BOOKING_FIELDS,
          examples = { "aitbc marketplace gpu book gpu_0a1b2c3d4e5f --hours 2" },
          run = function(ctx)
            return M().book(ctx, ctx.args.listing_id, ctx.opts.hours, password(ctx)), function(d, out)
              out:success(string.format("booked %s for %d hour(s): %s AITBC locked in escrow", d.listing_id, d.hours,
                d.total_cost))
              render_booking(d, out)
              out:print(out:style("your jobs on it: aitbc client submit --booking " .. d.booking_id .. " ...  ·  end "
                .. "early: aitbc marketplace gpu release " .. d.booking_id, "dim"))
            end
          end,
        },
        {
          name = "release",
          summary = "End your booking early: the hour under way is paid, the rest refunded",
          args = { { "id", help = "the booking (bk_...) or the listing (gpu_...)" } },
          id_field = "booking_id", fields = BOOKING_FIELDS,
          run = function(ctx)
            return M().release(ctx, ctx.args.id), function(d, out)
              out:success(d.message)
              render_booking(d, out)
            end
          end,
        },
        {
          name = "update",
          summary = "Change a listing's price, count, region, status or payout address",
          fields = LISTING_FIELDS,
          args = { { "listing_id", help = "gpu_..." } },
          options = {
            { "--hourly-rate", metavar = "AITBC", help = "new price per GPU-hour" },
            { "--count", type = "integer", min = 1, max = 1024, help = "how many" },
            { "--region", metavar = "NAME", help = "region label" },
            { "--status", choices = { "active", "paused" }, help = "paused listings are not offered" },
            { "--payout-address", metavar = "ADDRESS", help = "where rental payments go" },
          },
          run = function(ctx)
            local o = ctx.opts
            local body = { hourly_rate = o.hourly_rate and amount(o.hourly_rate, "--hourly-rate"), count = o.count,
              region = o.region, status = o.status, payout_address = o.payout_address }
            if next(body) == nil then
              errors.raise("usage", "nothing to change", "pass --hourly-rate, --count, --region, --status or --payout-address")
            end
            local listing = client(ctx, "miner"):call("PATCH", listing_path(ctx.args.listing_id),
              { json = body, expect = LISTING })
            return listing, function(d, out) out:success("listing " .. d.listing_id .. " updated") render_listing(d, out) end
          end,
        },
        {
          name = "remove",
          summary = "Take a listing off the marketplace",
          fields = LISTING_FIELDS,
          args = { { "listing_id", help = "gpu_..." } },
          run = function(ctx)
            local res = client(ctx, "miner"):call("DELETE", listing_path(ctx.args.listing_id),
              { expect = { listing_id = "string" } })
            return res, function(d, out) out:success("listing " .. d.listing_id .. " removed") end
          end,
        },
      },
    },
    {
      name = "offers",
      summary = "Browse GPU offers",
      commands = {
        {
          name = "list",
          summary = "Available GPUs, with providers, reputation and hourly prices",
          list = "items", paged = "/v1/marketplace/offers", id_field = "listing_id", fields = LISTING_FIELDS, watch = true,
          options = {
            { "--model", metavar = "MODEL", help = "GPU model, e.g. \"RTX 4090\"" },
            { "--min-vram", type = "number", min = 0, metavar = "GB", help = "at least this much memory" },
            { "--max-price", metavar = "AITBC", help = "at most this per hour" },
            { "--region", metavar = "NAME", help = "only this region" },
            { "--sort", choices = { "price", "-price", "vram", "-vram", "reputation", "-reputation", "newest" },
              default = "price", help = "order ('-' for descending)" },
            { "--all", type = "boolean", help = "include paused listings and offline providers" },
            { "--limit", type = "integer", min = 1, max = 500, default = 20, help = "how many" },
            { "--offset", type = "integer", min = 0, default = 0, help = "skip this many" },
          },
          examples = { [[aitbc marketplace offers list --model "RTX 4090"]],
                       "aitbc marketplace offers list --min-vram 40 --sort -reputation" },
          run = function(ctx)
            local o = ctx.opts
            local res = client(ctx):call("GET", "/v1/marketplace/offers", { query = { model = o.model, min_vram = o.min_vram,
              max_price = o.max_price and amount(o.max_price, "--max-price"), region = o.region, sort = o.sort,
              available = o.all and "all" or nil, limit = o.limit, offset = o.offset },
              expect = { items = LISTINGS.items, total = "integer" } })
            return res, function(d, out)
              if #d.items == 0 then out:print("no GPU offers match") return end
              out:print(offers_table(d.items, out))
              out:print(out:style(string.format("%d of %d offer(s), sorted by %s", #d.items, d.total, d.sort), "dim"))
            end
          end,
        },
      },
    },
    {
      name = "orders",
      summary = "Your bookings (as renter; --as provider: of your listings) with their escrow",
      list = "items", paged = "/v1/marketplace/orders", id_field = "booking_id", fields = BOOKING_FIELDS,
      options = {
        { "--status", choices = { "all", "active", "completed", "released", "interrupted" }, default = "all",
          help = "which ones" },
        { "--as", choices = { "renter", "provider" }, default = "renter", help = "whose bookings" },
      },
      run = function(ctx)
        local page = M().orders(ctx, { status = ctx.opts.status, role = ctx.opts["as"], limit = ctx.opts.limit,
          offset = ctx.opts.offset })
        return page, function(d, out)
          if #d.items == 0 then out:print("no bookings" .. (ctx.opts.status ~= "all" and (" " .. ctx.opts.status) or ""))
            return end
          local rows = {}
          for i, b in ipairs(d.items) do
            rows[i] = { booking = b.booking_id, gpu = b.model, hours = string.format("%d/%d", b.hours_paid, b.hours),
              cost = b.total_cost, paid = b.paid, refunded = b.refunded, status = b.status, ends = b.end_time }
          end
          out:print(out:format_table(rows, { { "booking", "booking", keep = true }, "gpu", { "hours", "hours paid" },
            { "cost", "AITBC" }, "paid", "refunded", "status", "ends" }))
        end
      end,
    },
    {
      name = "review",
      summary = "Rate a provider 1–5, once per booking or job of yours that ended well",
      args = { { "listing_id", help = "gpu_..." } },
      options = {
        { "--rating", type = "integer", min = 1, max = 5, required = true, metavar = "N", help = "1 to 5 stars" },
        { "--comment", metavar = "TEXT", help = "what went well or not" },
        { "--booking", metavar = "ID", help = "the booking rated (default: your newest ended one of this GPU)" },
        { "--job", metavar = "ID", help = "or a job its miner completed for you" },
      },
      id_field = "review_id", fields = { "status", "review_id", "subject", "gpu_id", "rating", "average_rating",
        "total_reviews", "reputation" },
      run = function(ctx)
        local o = ctx.opts
        return M().review(ctx, ctx.args.listing_id, { rating = o.rating, comment = o.comment, booking_id = o.booking,
          job_id = o.job }), function(d, out)
          out:success(string.format("rated %s %d/5 (%s)", d.gpu_id, d.rating, d.subject))
          out:print(string.format("provider now: %.2f of 5 over %d rating(s); reputation %.3f", d.average_rating,
            d.total_reviews, d.reputation or 0))
        end
      end,
    },
    {
      name = "reviews",
      summary = "A provider's ratings",
      args = { { "listing_id", help = "gpu_..." } },
      list = "reviews", fields = { "rating", "comment", "subject", "listing_id", "created_at" },
      run = function(ctx)
        return M().reviews(ctx, ctx.args.listing_id), function(d, out)
          out:print(string.format("%s: %.2f of 5 over %d rating(s)", d.provider, d.average_rating, d.total_reviews))
          local rows = {}
          for i, r in ipairs(d.reviews) do
            rows[i] = { stars = string.rep("*", r.rating), comment = r.comment or "", of = r.subject, at = r.created_at }
          end
          if #rows > 0 then out:print(out:format_table(rows, { "stars", "comment", "of", "at" })) end
        end
      end,
    },
    {
      name = "bid",
      summary = "Bids: ask for GPU hours at a price (escrow locked); providers accept them",
      commands = {
        {
          name = "submit",
          summary = "Post a bid: hours × --max-price locked from your wallet until a provider accepts, or it expires",
          options = {
            { "--hours", type = "integer", min = 1, max = 720, required = true, metavar = "H", help = "GPU hours wanted" },
            { "--max-price", required = true, metavar = "AITBC", help = "the most you pay per GPU-hour" },
            { "--model", metavar = "MODEL", help = "GPU model, e.g. \"RTX 4090\" (default: any)" },
            { "--min-vram", type = "number", min = 0, metavar = "GB", help = "at least this much memory" },
            { "--region", metavar = "NAME", help = "only this region" },
            { "--notes", metavar = "TEXT", help = "what you will run" },
            password_file,
          },
          id_field = "bid_id", fields = BID_FIELDS,
          examples = { [[aitbc marketplace bid submit --hours 4 --max-price 0.6 --model "RTX 4090"]] },
          run = function(ctx)
            local o = ctx.opts
            return M().bid(ctx, { hours = o.hours, max_price = o.max_price, model = o.model, min_vram = o.min_vram,
              region = o.region, notes = o.notes }, password(ctx)), function(d, out)
              out:success("bid " .. d.bid_id .. " posted: " .. d.total .. " AITBC locked in escrow")
              render_bid(d, out)
            end
          end,
        },
        {
          name = "list",
          summary = "Open bids (providers: what you could accept); --mine for yours",
          list = "items", paged = "/v1/marketplace/bids", id_field = "bid_id", fields = BID_FIELDS,
          options = {
            { "--mine", type = "boolean", help = "your own bids, whatever their status" },
            { "--model", metavar = "MODEL", help = "bids for this GPU model" },
          },
          run = function(ctx)
            local o = ctx.opts
            local page = M().bids(ctx, { mine = o.mine and "1" or nil, status = o.mine and "all" or "open", model = o.model,
              limit = o.limit, offset = o.offset })
            return page, function(d, out)
              if #d.items == 0 then out:print("no bids") return end
              local rows = {}
              for i, b in ipairs(d.items) do
                rows[i] = { bid = b.bid_id, wants = (b.model or "any") .. (b.min_vram_gb and string.format(" ≥%gGB",
                  b.min_vram_gb) or ""), hours = b.hours, price = b.max_price, status = b.status, expires = b.expires_at }
              end
              out:print(out:format_table(rows, { { "bid", "bid", keep = true }, "wants", "hours", { "price", "max AITBC/h" },
                "status", "expires" }))
            end
          end,
        },
        {
          name = "details", summary = "A bid", args = { { "bid_id", help = "bid_..." } }, fields = BID_FIELDS,
          run = function(ctx) return M().bid_details(ctx, ctx.args.bid_id), render_bid end,
        },
        {
          name = "accept",
          summary = "Accept a bid with one of your listings: a booking at the bid's price, paid from its escrow",
          args = { { "bid_id", help = "bid_..." } },
          options = { { "--listing", required = true, metavar = "ID", help = "your listing that serves it (gpu_...)" } },
          id_field = "booking_id", fields = BOOKING_FIELDS,
          run = function(ctx)
            return M().bid_accept(ctx, ctx.args.bid_id, ctx.opts.listing), function(d, out)
              out:success("bid " .. ctx.args.bid_id .. " accepted: booking " .. d.booking_id)
              render_booking(d, out)
            end
          end,
        },
        {
          name = "cancel",
          summary = "Withdraw your open bid: its escrow comes back",
          args = { { "bid_id", help = "bid_..." } }, id_field = "bid_id", fields = BID_FIELDS,
          run = function(ctx)
            return M().bid_cancel(ctx, ctx.args.bid_id), function(d, out)
              out:success("bid " .. d.bid_id .. " canceled: " .. d.total .. " AITBC refunded")
            end
          end,
        },
      },
    },
    {
      name = "pricing",
      summary = "The pricing oracle: what the market asks and pays for a GPU model",
      args = { { "model_arg", optional = true, help = "GPU model (or --model)" } },
      options = { { "--model", metavar = "MODEL", help = "GPU model, e.g. \"RTX 4090\"" } },
      examples = { [[aitbc marketplace pricing --model "RTX 4090"]] },
      run = function(ctx)
        local model = ctx.opts.model or ctx.args.model_arg
        if not model then errors.raise("usage", "which GPU model?", "aitbc marketplace pricing --model \"RTX 4090\"") end
        -- the query form: a model name may hold any character, '/' included
        local stats = { "object", { count = "integer" } }
        local res = client(ctx):call("GET", "/v1/marketplace/pricing", { query = { model = model },
          expect = { model = "scalar", listings = stats, completed_jobs = stats, suggested_hourly_rate = "scalar?",
            suggestion_rule = "string?" } })
        return res, function(d, out)
          out:print(out:style(string.format("%s — AITBC per GPU-hour", d.model), "bold"))
          local rows = {}
          for _, r in ipairs { { "available listings", d.listings }, { "paid (7 days)", d.completed_jobs } } do
            local s = r[2]
            rows[#rows + 1] = { source = r[1], count = s.count, min = s.min or "-", p25 = s.p25 or "-", median = s.median or "-",
              average = s.average or "-", p75 = s.p75 or "-", p90 = s.p90 or "-", max = s.max or "-" }
          end
          out:print(out:format_table(rows, { { "source", "source", keep = true }, "count", "min", "p25", "median", "average",
            "p75", "p90", "max" }))
          if d.suggested_hourly_rate then
            out:print("")
            out:print(out:style("suggested: " .. d.suggested_hourly_rate .. " AITBC/hour", "green")
              .. (d.suggestion_rule and ("  (" .. d.suggestion_rule .. ")") or ""))
          end
        end
      end,
    },
  },
}
