--- API key usage from the node's audit log (`aitbc auth audit`): requests
-- by key, endpoint, hour and address; alerts (bursts of refused requests,
-- revoked or unknown keys presented, requests without a key); advice.
local json = require "aitbc.json"

local audit = {}

-- where refused requests with keys the node does not know are counted
local UNKNOWN_KEY = "(unknown key)"
-- refused requests from one address within this window make a burst ...
local BURST_SECONDS, BURST_COUNT = 300, 10
-- ... and a key older than this should be rotated
local ROTATE_DAYS = 90

--- Seconds since the epoch of an ISO 8601 UTC time ("2025-01-31T12:00:00Z"), or nil.
function audit.parse_time(t)
  local y, mo, d, h, mi, s = t:match("^(%d+)-(%d+)-(%d+)T(%d+):(%d+):(%d+)")
  if not y then return nil end
  local days = os.time { year = tonumber(y), month = tonumber(mo), day = tonumber(d), hour = 12 } // 86400
  return days * 86400 + tonumber(h) * 3600 + tonumber(mi) * 60 + tonumber(s)
end

local function seconds(t) return audit.parse_time(t) or 0 end

--- The audit rows of the last `days` (of one key when key_id is given) and
-- every key the node knows, read with an admin client.
function audit.fetch(admin, days, key_id)
  local log = admin:call("GET", "/v1/admin/audit", { query = { days = days, key_id = key_id },
    expect = { since = "scalar?", items = { "array", { status = "integer", time = "time", route = "string",
      key_id = "string?", remote = "string?" } } } })
  local key_list = admin:call("GET", "/v1/admin/keys", { expect = { items = { "array", { key_id = "string",
    status = "string", role = "string?", name = "string?", created_at = "time", revoked_at = "time?" } } } })
  return log, key_list
end

-- ---- counting ----

--- Who made a request: its key id, UNKNOWN_KEY for a key the node refused
-- as unknown, "-" for none.
local function who_of(row)
  return row.key_id or (row.outcome and row.outcome ~= "missing_api_key" and UNKNOWN_KEY) or "-"
end

local function key_tally(t, row, last_time)
  local who = who_of(row)
  local k = t.by_key[who]
  if not k then
    local info = t.known[row.key_id] or {}
    k = { key_id = who, name = info.name, role = info.role or row.role, status = info.status or "unknown",
      requests = 0, failures = 0, denied = 0, addresses = {}, endpoints = {}, first = row.time, last = last_time }
    t.by_key[who] = k
  end
  return k
end

--- Adds one audit row (refused requests come counted: one row per
-- address, minute and outcome, with `count` and `last_time`).
local function count_row(t, row)
  local n, last_time, addr = row.count or 1, row.last_time or row.time, row.remote or "-"
  local failed = row.status >= 400 and n or 0
  t.total = t.total + n
  local k = key_tally(t, row, last_time)
  k.requests, k.failures = k.requests + n, k.failures + failed
  if row.status == 401 or row.status == 403 then
    k.denied = k.denied + n
    t.failures[#t.failures + 1] = { t = seconds(row.time), n = n, who = addr, time = row.time }
  end
  k.addresses[addr] = true
  k.endpoints[row.route] = (k.endpoints[row.route] or 0) + n
  if row.time < k.first then k.first = row.time end
  if last_time > k.last then k.last = last_time end
  local e = t.by_endpoint[row.route] or { endpoint = row.route, requests = 0, failures = 0 }
  t.by_endpoint[row.route] = e
  e.requests, e.failures = e.requests + n, e.failures + failed
  local hour = tonumber(row.time:sub(12, 13))
  t.by_hour[hour] = t.by_hour[hour] + n
  t.by_addr[addr] = (t.by_addr[addr] or 0) + n
  local info = t.known[row.key_id]
  if info and info.revoked_at and last_time >= info.revoked_at then -- same millisecond counts too
    t.revoked_use[row.key_id] = (t.revoked_use[row.key_id] or 0) + n
  end
end

local function tally(items, key_list)
  local t = { known = {}, by_key = {}, by_endpoint = {}, by_hour = {}, by_addr = {}, failures = {}, revoked_use = {},
    total = 0 }
  for _, k in ipairs(key_list) do t.known[k.key_id] = k end
  for h = 0, 23 do t.by_hour[h] = 0 end
  for _, row in ipairs(items) do count_row(t, row) end
  return t
end

-- ---- alerts and advice ----

--- BURST_COUNT or more refused requests from one address within BURST_SECONDS (once per address).
local function burst_alerts(failures, alerts)
  table.sort(failures, function(a, b) return a.t < b.t end)
  local reported = {}
  for i, f in ipairs(failures) do
    local n = 0
    for j = i, #failures do
      if failures[j].t - f.t > BURST_SECONDS then break end
      if failures[j].who == f.who then n = n + failures[j].n end
    end
    if n >= BURST_COUNT and not reported[f.who] then
      reported[f.who] = true
      alerts[#alerts + 1] = { kind = "failure_burst", severity = "high",
        message = string.format("%d refused requests from %s within 5 minutes (from %s)", n, f.who, f.time) }
    end
  end
end

local function key_alerts(t, alerts)
  for key_id, n in pairs(t.revoked_use) do
    alerts[#alerts + 1] = { kind = "revoked_key_used", severity = "high",
      message = string.format("revoked key %s was presented %d time(s) after its revocation", key_id, n) }
  end
  for key_id, k in pairs(t.by_key) do
    if key_id ~= "-" and key_id ~= UNKNOWN_KEY and not t.known[key_id] and k.denied > 0 then
      alerts[#alerts + 1] = { kind = "unknown_key", severity = "medium",
        message = string.format("%d request(s) with an unknown key %s", k.denied, key_id) }
    end
  end
  if t.by_key[UNKNOWN_KEY] then
    alerts[#alerts + 1] = { kind = "unknown_key", severity = "medium",
      message = string.format("%d request(s) with API keys this node does not know", t.by_key[UNKNOWN_KEY].denied) }
  end
  local keyless = t.by_key["-"]
  if keyless and keyless.requests > 0 then
    alerts[#alerts + 1] = { kind = "missing_key", severity = "low", message = keyless.requests .. " request(s) without any key" }
  end
end

local function recommendations(key_list, t, alerts, days, now)
  local recs = json.array()
  for _, k in ipairs(key_list) do
    if k.status == "active" then
      local age = (now - seconds(k.created_at)) / 86400
      if age > ROTATE_DAYS then
        recs[#recs + 1] = string.format("rotate %s (%s, %d days old): aitbc auth rotate --key-type %s --generate-new",
          k.key_id, k.role, math.floor(age), k.role)
      end
      if not t.by_key[k.key_id] then
        recs[#recs + 1] = string.format("%s (%s%s) was not used in %d days: revoke it if nobody needs it", k.key_id, k.role,
          k.name and (", " .. k.name) or "", days)
      end
    end
  end
  for _, a in ipairs(alerts) do
    if a.kind == "revoked_key_used" or a.kind == "failure_burst" then
      recs[#recs + 1] = "investigate the source of the alert above; rotate any key that may have leaked"
      break
    end
  end
  if #recs == 0 then recs[#recs + 1] = "no action needed: every active key is in use and younger than 90 days" end
  return recs
end

-- ---- the report's tables ----

local function by_requests(a, b) return a.requests > b.requests end

local function key_rows(by_key)
  local rows = json.array()
  for _, k in pairs(by_key) do
    local addrs, endpoints = json.array(), json.array()
    for a in pairs(k.addresses) do addrs[#addrs + 1] = a end
    table.sort(addrs)
    for route, n in pairs(k.endpoints) do endpoints[#endpoints + 1] = { endpoint = route, requests = n } end
    table.sort(endpoints, by_requests)
    rows[#rows + 1] = { key_id = k.key_id, name = k.name, role = k.role, status = k.status, requests = k.requests,
      failures = k.failures, denied = k.denied, first_seen = k.first, last_seen = k.last, addresses = addrs,
      address_count = #addrs, endpoints = endpoints }
  end
  table.sort(rows, by_requests)
  return rows
end

local function endpoint_rows(by_endpoint)
  local rows = json.array()
  for _, e in pairs(by_endpoint) do rows[#rows + 1] = e end
  table.sort(rows, by_requests)
  return rows
end

local function address_rows(by_addr)
  local rows = json.array()
  for a, n in pairs(by_addr) do rows[#rows + 1] = { address = a, requests = n, location = "not available" } end
  table.sort(rows, by_requests)
  return rows
end

--- The report over what audit.fetch read; now: the current time (seconds).
function audit.report(log, key_list, days, now)
  local t = tally(log.items, key_list.items)
  local alerts = json.array()
  burst_alerts(t.failures, alerts)
  key_alerts(t, alerts)
  local hours = json.array()
  for h = 0, 23 do hours[#hours + 1] = { hour_utc = h, requests = t.by_hour[h] } end
  return {
    period_days = days, since = log.since, total_requests = t.total, keys = key_rows(t.by_key),
    endpoints = endpoint_rows(t.by_endpoint), addresses = address_rows(t.by_addr), hourly = hours, alerts = alerts,
    recommendations = recommendations(key_list.items, t, alerts, days, now),
    geolocation = "not available: the node records client addresses only (no GeoIP database)",
  }
end

return audit
