--- Times as the API writes and reads them: RFC 3339 in UTC.
local M = {}

--- Days since 1970-01-01 of a civil date (proleptic Gregorian; March-based years).
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = y // 400
  local yoe = y - era * 400
  local doy = (153 * (m + (m > 2 and -3 or 9)) + 2) // 5 + d - 1
  return era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468
end

--- Seconds since the epoch of "2026-11-22T10:00:00.123Z", "…+02:00",
-- "2026-11-22T10:00:00" or "2026-11-22 10:00" (UTC when no offset is
-- written), or "2026-11-22" (midnight UTC) -> seconds | nil.
function M.parse(text)
  if type(text) ~= "string" then return nil end
  local y, mo, d, rest = text:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)(.*)$")
  if not y then return nil end
  y, mo, d = tonumber(y), tonumber(mo), tonumber(d)
  if mo < 1 or mo > 12 or d < 1 or d > 31 then return nil end
  local h, mi, s, zone = 0, 0, 0, ""
  if rest ~= "" then
    local hh, mm, tail = rest:match("^[Tt ](%d%d):(%d%d)(.*)$")
    if not hh then return nil end
    h, mi = tonumber(hh), tonumber(mm)
    local secs, z = tail:match("^:(%d%d%.?%d*)(.*)$")
    if secs then s, zone = tonumber(secs), z else zone = tail end
    if h > 23 or mi > 59 or s >= 61 then return nil end
  end
  local offset = 0
  if zone ~= "" and zone ~= "Z" and zone ~= "z" then
    local sign, oh, om = zone:match("^([%+%-])(%d%d):?(%d%d)$")
    if not sign then return nil end
    offset = (tonumber(oh) * 3600 + tonumber(om) * 60) * (sign == "+" and 1 or -1)
  end
  return days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s - offset
end

--- RFC 3339 with milliseconds, UTC: "2026-11-22T10:00:00.123Z".
function M.iso(t)
  if not t then return nil end
  local secs = math.floor(t)
  return os.date("!%Y-%m-%dT%H:%M:%S", secs) .. string.format(".%03dZ", math.floor((t - secs) * 1000))
end

return M
