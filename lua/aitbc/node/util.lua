--- Helpers shared by the node's request handlers: errors with a status,
-- field validation, time formatting.
local crypto = require "aitbc.crypto"
local json = require "aitbc.json"
local money = require "aitbc.money"

local util = {}

local HttpError = {}
HttpError.__index = HttpError

--- Raises an error answered as {"error":{"code","message","field"}}.
-- extra: {limit, retry_after (seconds: also the Retry-After header)}.
function util.fail(status, code, message, field, extra)
  error(setmetatable({ status = status, code = code, message = message, field = field,
    limit = extra and extra.limit, retry_after = extra and extra.retry_after }, HttpError), 0)
end

function util.is_http_error(e) return getmetatable(e) == HttpError end

--- A handler returns util.SUSPEND, {seconds =, wake = {keys}} to wait (a
-- long poll) without holding a worker: it runs again when sys.notify wakes
-- one of its keys or the time is up (request.resumed, request.waited).
util.SUSPEND = setmetatable({}, { __name = "suspend" })

function util.invalid(field, message)
  util.fail(422, "validation_error", field .. " " .. message, field)
end

--- ISO-8601 UTC with milliseconds, or nil.
--- The node's Ed25519 key from its key file (a hex seed): {public, secret, id}.
function util.read_node_key(path)
  local seed = assert(crypto.unhex(assert(require("aitbc.sys").read_file(path)):match("^%s*(%x+)")))
  local public, secret = crypto.sign_keypair(seed)
  return { public = public, secret = secret, id = crypto.base64(public, "urlsafe") }
end

--- A chain this node keeps, by name | 404.
function util.chain_of(ctx, chain_id)
  for _, c in ipairs(ctx.config.chains) do if c == chain_id then return c end end
  -- a peer's chain this node follows (aitbc serve --peer)
  if type(chain_id) == "string" and ctx.store:chain_follow_get(chain_id) then return chain_id end
  util.fail(404, "unknown_chain",
    "this node has no chain " .. tostring(chain_id) .. " (it has " .. table.concat(ctx.config.chains, ", ") .. ")")
end

--- A chain this node hosts (writes go only there) | 404, or 409 for a peer's chain it only follows.
function util.hosted_chain_of(ctx, chain_id)
  chain_id = util.chain_of(ctx, chain_id)
  local f = ctx.store:chain_follow_get(chain_id)
  if f and not ctx.config.follow then
    util.fail(409, "peer_chain", chain_id .. " is hosted by the peer " .. f.leader .. "; this node only follows it",
      "chain_id")
  end
  return chain_id
end

util.iso = require("aitbc.timefmt").iso

--- A query parameter holding a time: RFC 3339 (or a date), or Unix seconds;
-- nil when absent | 400 naming it.
function util.query_time(query, name)
  local text = query[name]
  if text == nil or text == "" then return nil end
  local t = require("aitbc.timefmt").parse(text) or (text:match("^%d+%.?%d*$") and tonumber(text))
  if not t then util.invalid(name, "must be a time: RFC 3339 (2026-11-22T10:00:00Z), a date or Unix seconds") end
  return t
end

function util.new_id(bytes)
  return crypto.hex(crypto.random(bytes or 16))
end

--- 32 hex characters like a uuid4 hex, but time-ordered (48-bit
-- milliseconds, then 80 random bits) so that new rows append to the index.
function util.new_job_id(now)
  return string.format("%012x", math.floor(now * 1000)) .. crypto.hex(crypto.random(10))
end

-- ---- field validation (body is a decoded JSON object) ----

--- How deep a request body may nest: half of what JSON may nest at all
-- (json.MAX_DEPTH), so that whatever is stored can always be read back
-- inside the envelopes answers wrap around it (items[i].payload, a
-- follower's blocks, the CLI's own output).
util.MAX_BODY_DEPTH = json.MAX_DEPTH // 2

--- The most a rate (AITBC per hour) may ask: far beyond any real price,
-- and far from where integer units overflow.
util.MAX_RATE_UNITS = 1000000 * money.UNIT

local function finite(v) return v == v and v ~= math.huge and v ~= -math.huge end

local function range_text(min, max)
  if min and max then return string.format("between %s and %s", min, max) end
  if min then return "at least " .. min end
  return "at most " .. max
end

function util.optional_string(body, field, max, name)
  local v = body[field]
  name = name or field
  if v == nil or v == json.null then return nil end
  if type(v) ~= "string" then util.invalid(name, "must be a string") end
  if max and #v > max then util.invalid(name, "must be at most " .. max .. " characters") end
  return v
end

function util.optional_integer(body, field, min, max, default, name)
  local v = body[field]
  name = name or field
  if v == nil or v == json.null then return default end
  local whole = math.type(v) == "integer" or (type(v) == "number" and finite(v) and v == math.floor(v))
  if not whole then util.invalid(name, "must be a whole number") end
  if (min and v < min) or (max and v > max) then util.invalid(name, "must be " .. range_text(min, max)) end
  v = math.tointeger(v)
  if not v then util.invalid(name, "must be " .. range_text(min, max)) end
  return v
end

--- A finite number from min to max.
function util.optional_number(body, field, min, max, name)
  local v = body[field]
  name = name or field
  if v == nil or v == json.null then return nil end
  if type(v) ~= "number" or not finite(v) then util.invalid(name, "must be a number") end
  if (min and v < min) or (max and v > max) then util.invalid(name, "must be " .. range_text(min, max)) end
  return v
end

function util.optional_object(body, field, name)
  local v = body[field]
  if v == nil or v == json.null then return nil end
  if type(v) ~= "table" or (json.is_array(v) and #v > 0) then util.invalid(name or field, "must be an object") end
  return v
end

--- A list of strings: at most max_items, each at most max_len bytes.
function util.optional_string_list(body, field, max_items, max_len, name)
  local v = body[field]
  name = name or field
  if v == nil or v == json.null then return nil end
  if type(v) ~= "table" or (next(v) ~= nil and not json.is_array(v)) then util.invalid(name, "must be a list of strings") end
  if max_items and #v > max_items then util.invalid(name, "may hold at most " .. max_items .. " items") end
  for i, s in ipairs(v) do
    if type(s) ~= "string" then util.invalid(name .. "[" .. i .. "]", "must be a string") end
    if max_len and #s > max_len then util.invalid(name .. "[" .. i .. "]", "must be at most " .. max_len .. " characters") end
  end
  return v
end

--- text cut to at most max bytes (at a UTF-8 character boundary), marked
-- with "…" and the full length when cut.
function util.clip(text, max)
  if #text <= max then return text end
  local cut = max
  while cut > 0 and (text:byte(cut + 1) or 0) & 0xC0 == 0x80 do cut = cut - 1 end
  return text:sub(1, cut) .. "…(" .. #text .. " bytes)"
end

--- A rate or price in AITBC (a decimal string or number) -> base units,
-- from 0 to MAX_RATE_UNITS.
function util.rate(value, field)
  local units, err = money.parse(value)
  if not units then util.invalid(field, "must be an amount in AITBC, e.g. 0.5 (" .. tostring(err) .. ")") end
  if units < 0 or units > util.MAX_RATE_UNITS then
    util.invalid(field, "must be from 0 to " .. money.format(util.MAX_RATE_UNITS) .. " AITBC")
  end
  return units
end

--- A query parameter holding a whole number (decimal digits only: no sign,
-- exponent or hex) from min to max, or default when absent.
function util.query_integer(query, name, min, max, default)
  local text = query[name]
  if text == nil then return default end
  local n = #text <= 18 and text:match("^%d+$") and math.tointeger(tonumber(text))
  if not n or n < min or n > max then util.invalid(name, "must be a whole number from " .. min .. " to " .. max) end
  return n
end

--- A query parameter holding a plain decimal number (no exponent, hex,
-- inf or nan) from min to max, or default when absent.
function util.query_number(query, name, min, max, default)
  local text = query[name]
  if text == nil then return default end
  local n = #text <= 32 and (text:match("^%d+%.?%d*$") or text:match("^%.%d+$")) and tonumber(text)
  if not n or n < min or n > max then util.invalid(name, "must be a number from " .. min .. " to " .. max) end
  return n
end

--- "llama3" and "llama3:latest" name the same model.
function util.model_name(name)
  if not name then return nil end
  return (name:lower():gsub(":latest$", ""))
end

return util
