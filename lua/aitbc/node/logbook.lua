--- Reading node.log (one JSON object per line, oldest first) for the admin
-- API: filtered by service, least level, time and text; the newest `tail`
-- entries; or what came after a byte offset (a follower of the log).  The
-- file is read from its end backwards in blocks, and a line is decoded only
-- when its time, level and service (read with patterns) pass the filter.
local json = require "aitbc.json"
local log = require "aitbc.node.log"
local timefmt = require "aitbc.timefmt"

local M = {}

M.LEVELS = log.LEVELS
local BLOCK = 256 * 1024
M.MAX_SCAN = 64 * 1024 * 1024 -- bytes read at most for one answer
M.MAX_ENTRIES = 10000

--- Seconds of an entry's "time" (ISO, UTC) | nil.
local function entry_time(line)
  local t = line:match('"time":"([^"]+)"')
  return t and timefmt.parse(t)
end

--- A line's time, and whether it passes the filter (its time first: the
-- cheapest, and what ends a search backwards).
local function passes(line, f)
  local t = entry_time(line)
  if not t or (f.since and t < f.since) or (f.until_ and t > f.until_) then return t, false end
  local level = line:match('"level":"(%a+)"')
  if not level or (M.LEVELS[level] or 0) < f.min_level then return t, false end
  if f.service and line:match('"service":"([^"]+)"') ~= f.service then return t, false end
  if f.grep and not line:lower():find(f.grep, 1, true) then return t, false end
  return t, true
end

local function decode(line, t)
  local e = json.decode(line)
  if type(e) ~= "table" then return nil end
  e.ts = t
  return e
end

--- filter: {service, level, since, until_, grep, tail} -> entries (oldest
-- first), the file's size (the offset a follower goes on from), and
-- whether the scan stopped at MAX_SCAN before reaching `since`.
function M.query(path, filter)
  local f = { service = filter.service, since = filter.since, until_ = filter.until_, tail = filter.tail or 100,
    min_level = M.LEVELS[filter.level or "debug"] or 0, grep = filter.grep and filter.grep:lower() }
  local file = io.open(path, "rb")
  if not file then return {}, 0, false end
  local size = file:seek("end")
  local pos, carry, found, scanned, truncated = size, "", {}, 0, false
  local done = false
  while pos > 0 and not done do
    local n = math.min(BLOCK, pos)
    pos = pos - n
    file:seek("set", pos)
    local chunk = file:read(n) .. carry
    scanned = scanned + n
    local first_nl = pos > 0 and chunk:find("\n", 1, true) or 0
    carry = pos > 0 and chunk:sub(1, first_nl) or ""
    local lines = {}
    for line in chunk:sub(first_nl + 1):gmatch("[^\n]+") do lines[#lines + 1] = line end
    for i = #lines, 1, -1 do
      local t, ok = passes(lines[i], f)
      if ok then
        local e = decode(lines[i], t)
        if e then found[#found + 1] = e end
        if #found >= f.tail then done = true break end
      end
      -- entries are in time order: older than `since` ends the search
      if f.since and t and t < f.since - 1 then done = true break end
    end
    if scanned >= M.MAX_SCAN and not done and pos > 0 then truncated, done = true, true end
  end
  file:close()
  local out = {}
  for i = #found, 1, -1 do out[#out + 1] = found[i] end
  return out, size, truncated
end

--- Entries after byte offset `after` (a follower), at most MAX_ENTRIES;
-- returns them and the offset to go on from.  An offset past the end (the
-- log was replaced) starts over at 0.
function M.after(path, after, filter)
  local f = { service = filter.service, min_level = M.LEVELS[filter.level or "debug"] or 0,
    grep = filter.grep and filter.grep:lower() }
  local file = io.open(path, "rb")
  if not file then return {}, 0 end
  local size = file:seek("end")
  if after > size then after = 0 end
  file:seek("set", after)
  local text = file:read(math.min(size - after, M.MAX_SCAN)) or ""
  file:close()
  local last_nl = text:match(".*()\n") or 0 -- a line still being written waits
  local out = {}
  for line in text:sub(1, last_nl):gmatch("[^\n]+") do
    local t, ok = passes(line, f)
    if ok then
      local e = decode(line, t)
      if e then out[#out + 1] = e end
      if #out >= M.MAX_ENTRIES then break end
    end
  end
  return out, after + last_nl
end

--- Counts by level since a time and the newest entries at warn or above
-- (admin status's "recent events").
function M.recent(path, since, limit)
  local entries = M.query(path, { level = "warn", since = since, tail = 2000 })
  local counts = { warn = 0, error = 0, critical = 0 }
  for _, e in ipairs(entries) do counts[e.level] = (counts[e.level] or 0) + 1 end
  local newest = json.array()
  for i = #entries, math.max(1, #entries - (limit or 10) + 1), -1 do newest[#newest + 1] = entries[i] end
  return counts, newest
end

return M
