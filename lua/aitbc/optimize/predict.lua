--- Predictive scaling (spec 12.2): the network's own history per interval
-- (GET /v1/optimize/history, from its jobs), a Holt-Winters forecast of the
-- target with 80 % and 95 % intervals, a back-test on the last part of the
-- history, and from the load forecast and the measured service time the
-- miners needed per interval to keep the queue wait under a target
-- (Erlang C), turned into when to scale up and down.
local forecast = require "aitbc.optimize.forecast"
local queueing = require "aitbc.optimize.queueing"
local timefmt = require "aitbc.timefmt"

local M = {}

M.TARGETS = {
  ["network-load"] = { field = "jobs", what = "jobs per interval", unit = "jobs" },
  ["queue-wait"] = { field = "queue_wait_s", what = "mean queue wait", unit = "s" },
  ["miners"] = { field = "miners", what = "miners present", unit = "miners" },
}
M.TARGET_NAMES = "network-load, queue-wait or miners"

local UNITS = { s = 1, sec = 1, secs = 1, m = 60, min = 60, mins = 60, h = 3600, hour = 3600, hours = 3600,
  d = 86400, day = 86400, days = 86400, w = 604800, week = 604800, weeks = 604800 }

--- "24h", "90m", "2d", "1d12h", "3600s" -> seconds | nil
function M.duration(text)
  if type(text) ~= "string" then return nil end
  local rest = text:lower():gsub("%s+", "")
  if rest == "" or rest:gsub("%d+%.?%d*%a+", "") ~= "" then return nil end
  local total = 0
  for n, u in rest:gmatch("(%d+%.?%d*)(%a+)") do
    if not UNITS[u] then return nil end
    total = total + tonumber(n) * UNITS[u]
  end
  return total > 0 and math.floor(total) or nil
end

--- "1 h 30 min", "15 min", "2 d" for seconds.
function M.span_text(s)
  if s >= 86400 and s % 86400 == 0 then return (s // 86400) .. " d" end
  if s >= 3600 and s % 3600 == 0 then return (s // 3600) .. " h" end
  if s >= 3600 then return string.format("%d h %d min", s // 3600, (s % 3600) // 60) end
  return (s // 60) .. " min"
end

local function clock(t) return os.date("!%a %H:%M", math.floor(t)) end

--- The series of one target from the history's points.
local function series(points, field)
  local y = {}
  for i, p in ipairs(points) do
    local v = p[field]
    y[i] = type(v) == "number" and v or 0 -- an interval where no job started waited nothing
  end
  return y
end

--- Miners needed per forecast interval for a load (jobs per interval):
-- servers from Erlang C divided by the miners' mean concurrency.
local function miners_for(jobs, interval, service, max_wait, slots_per_miner)
  local servers = queueing.servers_needed(jobs / interval, service.mean_s, max_wait, service.cv2 or 1)
  return math.ceil(servers / slots_per_miner)
end

--- Segments of consecutive intervals that need the same number of miners.
local function schedule(rows, interval)
  local out = {}
  for _, r in ipairs(rows) do
    local last = out[#out]
    if last and last.miners == r.miners_needed_hi80 then
      last.to = r.time + interval
    else
      out[#out + 1] = { from = r.time, to = r.time + interval, miners = r.miners_needed_hi80 }
    end
  end
  return out
end

--- What to do: how many miners now, scale up before the need peaks,
-- down once it falls after the peak, and the plan's change points.
local function recommendations(rows, plan, online, opts)
  local out = {}
  local peak, busiest -- the most miners needed (first time), the highest load
  for _, r in ipairs(rows) do
    if not peak or r.miners_needed_hi80 > peak.miners_needed_hi80 then peak = r end
    if not busiest or r.load > busiest.load then busiest = r end
  end
  local first = rows[1]
  out[#out + 1] = string.format("now: %d miner(s) online; %d needed for the next interval (%d at the 80 %% upper "
    .. "load) to keep the mean queue wait under %s s", online, first.miners_needed, first.miners_needed_hi80,
    opts.max_wait)
  if first.miners_needed_hi80 > online then
    out[#out + 1] = string.format("add %d miner(s) now: the queue is forecast to build up at once",
      first.miners_needed_hi80 - online)
  end
  if peak.miners_needed_hi80 > math.max(online, first.miners_needed_hi80) then
    out[#out + 1] = string.format("scale up to %d miner(s) by %s UTC: the load peaks at %.1f %s per interval at %s UTC",
      peak.miners_needed_hi80, clock(peak.time), busiest.load, opts.unit, clock(busiest.time))
  end
  local after -- the lowest need after the peak, held for an hour or more
  for _, seg in ipairs(plan) do
    if seg.from > peak.time and seg.to - seg.from >= 3600 and (not after or seg.miners < after.miners) then after = seg end
  end
  local high = math.max(online, peak.miners_needed_hi80)
  if after and after.miners < high then
    out[#out + 1] = string.format("scale down to %d miner(s) from %s UTC (until %s UTC)", math.max(1, after.miners),
      clock(after.from), clock(after.to))
  end
  if peak.miners_needed_hi80 <= online then
    out[#out + 1] = string.format("the %d miner(s) online suffice for the whole horizon (at most %d needed, %s UTC)",
      online, peak.miners_needed_hi80, clock(peak.time))
  end
  local steps = {}
  for i, seg in ipairs(plan) do
    if i <= 12 then steps[#steps + 1] = os.date("!%H:%M", math.floor(seg.from)) .. " " .. seg.miners end
  end
  out[#out + 1] = "plan (UTC, miners from then on): " .. table.concat(steps, " · ") .. (#plan > 12 and " …" or "")
  return out
end

--- For queue-wait and miners: the first interval where the forecast
-- itself calls for more miners.
local function target_warning(rows, opts)
  for _, r in ipairs(rows) do
    if opts.target == "queue-wait" and r.mean > opts.max_wait then
      return string.format("the queue wait is forecast above %s s from %s UTC (%.1f s): add miners before then",
        opts.max_wait, clock(r.time), r.mean)
    elseif opts.target == "miners" and r.mean + 0.5 < r.miners_needed_hi80 then
      return string.format("miners present are forecast at %.1f at %s UTC, short of the %d needed: recruit or book "
        .. "miners before then", r.mean, clock(r.time), r.miners_needed_hi80)
    end
  end
end

--- Rows of the forecast, with miners needed for the load forecast.
local function forecast_rows(fc, load_fc, t0, interval, service, slots, max_wait)
  local rows = {}
  for i = 1, #fc do
    local f = fc[i]
    local r = { time = t0 + (i - 1) * interval, mean = f.mean, lo80 = f.lo80, hi80 = f.hi80, lo95 = f.lo95, hi95 = f.hi95,
      load = load_fc[i].mean, load_hi80 = load_fc[i].hi80 }
    if type(service.mean_s) == "number" and service.mean_s > 0 then
      r.miners_needed = miners_for(r.load, interval, service, max_wait, slots)
      r.miners_needed_hi80 = miners_for(r.load_hi80, interval, service, max_wait, slots)
    end
    rows[i] = r
  end
  return rows
end

--- Forecasts from a history document (the node's answer).  opts: {target,
-- horizon (seconds), max_wait (seconds)}.  -> report | nil, why
function M.from_history(h, opts)
  local target = M.TARGETS[opts.target]
  local interval = h.interval_seconds
  local m = 86400 // interval
  local points = h.points
  local n = #points
  local steps = math.max(1, math.ceil(opts.horizon / interval))
  if n < forecast.MIN_POINTS then
    return nil, string.format("not enough history to forecast: %d interval(s) of %s (since %s); at least %d (%s) are "
      .. "needed, and %d (two days) for daily seasonality. Let the network run longer, or import history: aitbc "
      .. "optimize import-history FILE", n, M.span_text(interval), h.first_job_at or "no job yet", forecast.MIN_POINTS,
      M.span_text(forecast.MIN_POINTS * interval), 2 * m)
  end
  local from = timefmt.parse(h.from)
  local load = series(points, "jobs")
  local y = series(points, target.field)
  local model = assert(forecast.fit(y, { season = m }))
  local fc = model:predict(steps, { min = 0 })
  local load_model = opts.target == "network-load" and model or assert(forecast.fit(load, { season = m }))
  local load_fc = load_model == model and fc or load_model:predict(steps, { min = 0 })
  -- back-test: the last day (or the horizon, if longer), keeping two days to fit on for seasonality
  local holdout = math.min(math.max(steps, m), n - 2 * m)
  if holdout < 4 then holdout = math.max(1, math.min(steps, n // 4)) end
  local bt, bt_why = forecast.backtest(y, { season = m, holdout = holdout, min = 0 })
  local service = h.service or {}
  local slots = 1
  local last = points[n]
  if last and last.miners and last.miners > 0 and last.slots then slots = math.max(1, last.slots / last.miners) end
  local rows = forecast_rows(fc, load_fc, from + n * interval, interval, service, slots, opts.max_wait)
  local report = {
    target = opts.target, what = target.what, unit = target.unit, interval_seconds = interval,
    horizon_seconds = opts.horizon, steps = steps,
    history = { from = h.from, to = h.to, points = n, first_job_at = h.first_job_at, series = y,
      times_from = from },
    model = { method = model.season and "Holt-Winters, additive daily seasonality, damped trend"
        or "Holt (damped trend), no seasonality", season = model.season, alpha = model.alpha, beta = model.beta,
      gamma = model.gamma, phi = model.phi, sigma = math.sqrt(model.sigma2), note = model.why_no_season,
      season_test = model.season_test },
    backtest = bt and { holdout = bt.holdout, mae = bt.mae, rmse = bt.rmse, mase = bt.mase, naive_lag = bt.naive_lag,
      coverage80 = bt.coverage80, coverage95 = bt.coverage95 } or { skipped = bt_why },
    service = service, miners_online = h.miners_online, max_wait_s = opts.max_wait, forecast = rows,
  }
  if rows[1].miners_needed then
    local plan = schedule(rows, interval)
    report.schedule = plan
    report.recommendations = recommendations(rows, plan, h.miners_online or 0,
      { max_wait = opts.max_wait, unit = M.TARGETS["network-load"].unit })
    local first = target_warning(rows, opts)
    if first then table.insert(report.recommendations, 1, first) end
  else
    report.recommendations = { "no job has completed in the history yet, so the service time is unknown: miners "
      .. "needed cannot be computed (run some jobs first)" }
  end
  return report
end

return M
