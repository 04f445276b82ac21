--- History to import into a node (`aitbc optimize import-history`): points
-- {time, jobs, queue_wait_s, service_s, miners} read from CSV or JSON, or a
-- synthetic workload generated from a seed (a daily pattern with Poisson
-- noise) for demos and tests, which says it is synthetic.
local json = require "aitbc.json"
local timefmt = require "aitbc.timefmt"

local M = { COLUMNS = { "time", "jobs", "queue_wait_s", "service_s", "miners" } }

--- Points from CSV with a header naming (some of) the columns.
local function parse_csv(text)
  local lines = {}
  for line in text:gmatch("[^\r\n]+") do
    if line:match("%S") and not line:match("^%s*#") then lines[#lines + 1] = line end
  end
  if #lines < 2 then return nil, "needs a header line (time,jobs,...) and at least one point" end
  local header = {}
  for name in (lines[1] .. ","):gmatch("%s*([^,]-)%s*,") do header[#header + 1] = name end
  local known = {}
  for _, c in ipairs(M.COLUMNS) do known[c] = true end
  for i, name in ipairs(header) do
    if not known[name] then
      return nil, string.format("line 1: column %d is %q; columns are %s", i, name, table.concat(M.COLUMNS, ", "))
    end
  end
  local points = {}
  for i = 2, #lines do
    local p, k = {}, 0
    for cell in (lines[i] .. ","):gmatch("%s*([^,]-)%s*,") do
      k = k + 1
      local name = header[k]
      if not name then return nil, string.format("line %d: more cells than columns", i) end
      if cell ~= "" then
        if name == "time" then
          p.time = timefmt.parse(cell) or tonumber(cell)
          if not p.time then return nil, string.format("line %d: time %q is not RFC 3339 or Unix seconds", i, cell) end
        else
          p[name] = tonumber(cell)
          if not p[name] then return nil, string.format("line %d: %s %q is not a number", i, name, cell) end
          if name == "jobs" or name == "miners" then p[name] = math.tointeger(p[name]) or p[name] end
        end
      end
    end
    points[#points + 1] = p
  end
  return points
end

--- Points from a file's text: CSV, or JSON (a list of points, or
-- {points = [...]}).  -> points | nil, why (naming the line)
function M.parse(text)
  local first = text:match("^%s*(.)")
  if first ~= "[" and first ~= "{" then return parse_csv(text) end
  local doc, err = json.decode(text)
  if type(doc) ~= "table" then return nil, "not JSON: " .. tostring(err) end
  local points = doc.points or doc
  if type(points) ~= "table" or #points == 0 then return nil, "holds no points (a list of {time, jobs, ...})" end
  return points
end

--- A synthetic workload: `days` of per-minute points ending at `now`
-- (minute-aligned), jobs drawn from a Poisson law whose rate follows the
-- hour of day (quiet at night, busiest at 14:00 UTC), queue waits that grow
-- with the load, and more miners by day.  Same seed, same workload.
function M.generate(days, seed, now, opts)
  opts = opts or {}
  local peak, base = opts.peak or 8, opts.base or 1.5
  local state = (seed * 2654435761 + 1) & 0x7FFFFFFF
  local function uniform()
    state = (state * 1103515245 + 12345) & 0x7FFFFFFF
    return (state + 0.5) / 0x80000000
  end
  local function poisson(lambda)
    local l, k, p = math.exp(-lambda), 0, 1
    repeat
      k = k + 1
      p = p * uniform()
    until p <= l
    return k - 1
  end
  local stop = math.floor(now / 60) * 60
  local points = {}
  for t = stop - days * 86400, stop - 60, 60 do
    local hour = (t % 86400) / 3600
    local shape = (1 + math.cos((hour - 14) / 24 * 2 * math.pi)) / 2 -- 1 at 14:00, 0 at 02:00
    local rate = base + (peak - base) * shape ^ 2
    local busy = rate / peak
    -- jobs of about 20 s; miners follow the load (about 70 % busy), and waits grow near the peak
    local miners = math.max(1, math.ceil(rate * 20 / 60 / 0.7))
    points[#points + 1] = { time = t, jobs = poisson(rate), queue_wait_s = 0.2 + 6 * busy ^ 3 * (0.5 + uniform()),
      service_s = 15 + 10 * uniform(), miners = miners }
  end
  return points
end

return M
