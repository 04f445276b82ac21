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
  "region", "payout_address", "status", "available", "reputation", "record", "created_at", "updated_at" }


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
  description = "Reputation = (completed + 1) / (completed + failed + expired + 2) over the provider's jobs. "
    .. "The suggested price is the median asked by available listings, blended with what jobs on that GPU "
    .. "paid in the last 7 days when there are at least three (jobs completed and paid: their escrow released).",
  commands = {
    {
      name = "gpu",
      summary = "Your GPU listings: register, list, update, remove",
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
          list = "items", paged = "/v1/marketplace/gpu/list", id_field = "listing_id", fields = LISTING_FIELDS,
          run = function(ctx)
            local res = client(ctx, "miner"):call("GET", "/v1/marketplace/gpu/list", { expect = LISTINGS })
            return res, function(d, out)
              if #d.items == 0 then out:print("no listings yet (aitbc marketplace gpu register)") return end
              out:print(offers_table(d.items, out))
            end
          end,
        },
        {
          name = "update",
          summary = "Change a listing's price, count, region or status",
          fields = LISTING_FIELDS,
          args = { { "listing_id", help = "gpu_..." } },
          options = {
            { "--hourly-rate", metavar = "AITBC", help = "new price per GPU-hour" },
            { "--count", type = "integer", min = 1, max = 1024, help = "how many" },
            { "--region", metavar = "NAME", help = "region label" },
            { "--status", choices = { "active", "paused" }, help = "paused listings are not offered" },
          },
          run = function(ctx)
            local o = ctx.opts
            local body = { hourly_rate = o.hourly_rate and amount(o.hourly_rate, "--hourly-rate"), count = o.count,
              region = o.region, status = o.status }
            if next(body) == nil then
              errors.raise("usage", "nothing to change", "pass --hourly-rate, --count, --region or --status")
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
          for _, r in ipairs { { "available listings", d.listings }, { "jobs paid (7 days)", d.completed_jobs } } do
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
