--- Times: RFC 3339 as the API writes and reads it (UTC), and times as
-- people type them on the command line (`--since`), as journalctl reads
-- them: "1 hour ago", "30m", "2h30m", "yesterday", "today", "now", RFC 3339
-- ("2025-01-31T12:00:00Z", "...+02:00"), "2025-01-31 12:00[:00]",
-- "2025-01-31", "12:30" (today), "@1735689600" (Unix seconds).
local M = {}

local UNITS = {
  s = 1, sec = 1, secs = 1, second = 1, seconds = 1,
  m = 60, min = 60, mins = 60, minute = 60, minutes = 60,
  h = 3600, hr = 3600, hrs = 3600, hour = 3600, hours = 3600,
  d = 86400, day = 86400, days = 86400,
  w = 604800, week = 604800, weeks = 604800,
}

M.EXAMPLES = '"1 hour ago", "30m", "2h30m", "yesterday", "2025-01-31T12:00:00Z", "2025-01-31 12:00"'

--- Days since 1970-01-01 of a civil date (proleptic Gregorian; March-based years).
local function days_from_civil(y, m, d)
  y = m <= 2 and y - 1 or y
  local era = y // 400
  local yoe = y - era * 400
  local doy = (153 * (m + (m > 2 and -3 or 9)) + 2) // 5 + d - 1
  return era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468
end

local function valid_date(y, m, d, hh, mm, ss)
  if m < 1 or m > 12 or d < 1 or hh > 23 or mm > 59 or ss >= 61 then return false end
  local mdays = { 31, (y % 4 == 0 and (y % 100 ~= 0 or y % 400 == 0)) and 29 or 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 }
  return d <= mdays[m]
end

--- Seconds since the epoch of a UTC civil time.
function M.utc(y, m, d, hh, mm, ss)
  return days_from_civil(y, m, d) * 86400 + hh * 3600 + mm * 60 + ss
end

--- Seconds since the epoch of a local civil time.
local function local_time(y, m, d, hh, mm, ss)
  return os.time { year = y, month = m, day = d, hour = hh, min = mm, sec = math.floor(ss), isdst = nil }
    + (ss - math.floor(ss))
end

--- An RFC 3339 / ISO 8601 time ("T" or a space; seconds, fraction and zone
-- optional; a date alone is midnight) -> seconds | nil.  A time without a
-- zone is UTC, or local time when local_default is set (as people mean it).
function M.rfc3339(text, local_default)
  if type(text) ~= "string" then return nil end
  local y, mo, d, rest = text:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)(.*)$")
  if not y then return nil end
  y, mo, d = tonumber(y), tonumber(mo), tonumber(d)
  local hh, mi, ss, zone = 0, 0, 0, ""
  if rest ~= "" then
    local h, m, tail = rest:match("^[Tt ](%d%d):(%d%d)(.*)$")
    if not h then return nil end
    hh, mi = tonumber(h), tonumber(m)
    local s, after = tail:match("^:(%d%d%.?%d*)(.*)$")
    if s then ss, tail = tonumber(s), after end
    zone = tail
  end
  if not ss or not valid_date(y, mo, d, hh, mi, ss) then return nil end
  if zone == "" then return local_default and local_time(y, mo, d, hh, mi, ss) or M.utc(y, mo, d, hh, mi, ss) end
  if zone == "Z" or zone == "z" then return M.utc(y, mo, d, hh, mi, ss) end
  local sign, zh, zm = zone:match("^([+-])(%d%d):?(%d%d)$")
  if not sign then return nil end
  local offset = (tonumber(zh) * 3600 + tonumber(zm) * 60) * (sign == "+" and 1 or -1)
  return M.utc(y, mo, d, hh, mi, ss) - offset
end

--- What the API reads: RFC 3339, UTC when no zone is written -> seconds | nil.
function M.parse(text) return M.rfc3339(text, false) end

--- RFC 3339 with milliseconds, UTC: "2026-11-22T10:00:00.123Z".
function M.iso(t)
  if not t then return nil end
  local secs = math.floor(t)
  return os.date("!%Y-%m-%dT%H:%M:%S", secs) .. string.format(".%03dZ", math.floor((t - secs) * 1000))
end

--- "2h30m", "90s", "1 hour", "an hour", "2 days 3 hours" -> seconds | nil.
function M.duration(text)
  text = text:lower():gsub("^an? ", "1 ")
  local total, matched = 0, false
  local rest = text:gsub("(%d+%.?%d*)%s*(%a+)", function(n, unit)
    local u = UNITS[unit]
    if not u then return nil end
    total, matched = total + tonumber(n) * u, true
    return ""
  end)
  if not matched or rest:gsub("[%s,]", ""):gsub("and", "") ~= "" then return nil end
  return total
end

--- A time as people type it (see above; without a zone, local time)
-- -> seconds since the epoch | nil, a message naming what is accepted.
function M.human(text, now)
  now = now or os.time()
  if type(text) ~= "string" then return nil, "a time is needed, e.g. " .. M.EXAMPLES end
  local t = text:match("^%s*(.-)%s*$")
  local lower = t:lower()
  local midnight = function(days)
    local d = os.date("*t", math.floor(now))
    return os.time { year = d.year, month = d.month, day = d.day + days, hour = 0, min = 0, sec = 0 }
  end
  if lower == "now" then return now end
  if lower == "today" then return midnight(0) end
  if lower == "yesterday" then return midnight(-1) end
  if lower == "tomorrow" then return midnight(1) end
  local epoch = t:match("^@(%d+%.?%d*)$")
  if epoch then return tonumber(epoch) end
  local iso = M.rfc3339(t, true)
  if iso then return iso end
  local hh, mm, ss = t:match("^(%d%d?):(%d%d):?(%d*)$")
  if hh and tonumber(hh) < 24 and tonumber(mm) < 60 then
    return midnight(0) + tonumber(hh) * 3600 + tonumber(mm) * 60 + (tonumber(ss) or 0)
  end
  local ago = lower:match("^(.-)%s+ago$") or lower:match("^%-%s*(.+)$")
  local seconds = M.duration(ago or lower)
  if seconds then return now - seconds end
  return nil, "cannot read the time '" .. text .. "'; use e.g. " .. M.EXAMPLES
end

return M
