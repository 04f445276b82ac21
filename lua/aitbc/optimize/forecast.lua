--- Holt-Winters forecasting (additive seasonality, damped additive trend:
-- ETS(A,Ad,A)) in plain Lua, for `aitbc optimize predict`.
--
--   local f = forecast.fit(series, {season = 96})  -- 96 fifteen-minute intervals a day
--   local out = f:predict(96)                       -- {mean, lo80, hi80, lo95, hi95}[h]
--   local bt = forecast.backtest(series, {season = 96, holdout = 96})
--
-- The smoothing parameters are fitted on the series by minimising the
-- one-step-ahead squared error (a grid, then a pattern search).  Daily
-- seasonality is used only when the series holds at least two seasons and
-- an analysis of variance by time of day finds a pattern above the noise
-- (so a series without seasonality is not given one); with too little history
-- it falls back to damped Holt (level and trend), and says so.  Intervals
-- come from the residual variance with the h-step variance of the
-- equivalent state-space model (Hyndman et al., "Forecasting with
-- exponential smoothing", class 1).
local M = { PHI = 0.98, MIN_POINTS = 12 }

local Z80, Z95 = 1.2815515655, 1.9599639845

local function mean(t, i, j)
  local s = 0
  for k = i, j do s = s + t[k] end
  return s / (j - i + 1)
end

--- Initial states: level, trend and (seasonal) the season's offsets.
local function initial(y, m)
  local n = #y
  if not m then
    local k = math.min(n, 4)
    return y[1], (y[k] - y[1]) / (k - 1), nil
  end
  local seasons = n // m
  local l0 = mean(y, 1, m)
  local b0 = (mean(y, m + 1, 2 * m) - l0) / m
  local s = {}
  for i = 1, m do s[i] = 0 end
  for k = 0, seasons - 1 do
    local avg = mean(y, k * m + 1, k * m + m)
    for i = 1, m do s[i] = s[i] + (y[k * m + i] - avg) / seasons end
  end
  local offset = mean(s, 1, m)
  for i = 1, m do s[i] = s[i] - offset end
  return l0, b0, s
end

--- Runs the recurrences over y; -> SSE of the one-step errors, and the
-- final states (level, trend, seasonal offsets ring and where it stands).
local function run(y, m, alpha, beta, gamma, phi, l, b, s0)
  local s
  if m then
    s = {}
    for i = 1, m do s[i] = s0[i] end
  end
  local sse = 0
  local n = #y
  for t = 1, n do
    local idx = m and ((t - 1) % m + 1)
    local season = m and s[idx] or 0
    local pb = phi * b
    local e = y[t] - (l + pb + season)
    sse = sse + e * e
    local nl = alpha * (y[t] - season) + (1 - alpha) * (l + pb)
    b = beta * (nl - l) + (1 - beta) * pb
    l = nl
    if m then s[idx] = gamma * (y[t] - nl) + (1 - gamma) * season end
  end
  return sse, l, b, s
end

local GRID = {
  alpha = { 0.02, 0.1, 0.2, 0.35, 0.5, 0.7, 0.9 },
  beta = { 0, 0.02, 0.1, 0.3 },
  gamma = { 0, 0.05, 0.15, 0.35, 0.6 },
}

local function clamp(x) return math.max(0, math.min(1, x)) end

--- Fits alpha, beta (and gamma) by least one-step SSE.
local function optimise(y, m, l0, b0, s0, phi)
  local function sse(p) return (run(y, m, p[1], p[2], p[3], phi, l0, b0, s0)) end
  local best, best_sse
  for _, a in ipairs(GRID.alpha) do
    for _, bt in ipairs(GRID.beta) do
      for _, g in ipairs(m and GRID.gamma or { 0 }) do
        local p = { a, bt, g }
        local e = sse(p)
        if not best_sse or e < best_sse then best, best_sse = p, e end
      end
    end
  end
  -- pattern search around the best grid point, halving the step
  local step = 0.08
  local dims = m and 3 or 2
  while step > 0.002 do
    local improved = false
    for d = 1, dims do
      for _, dir in ipairs { -1, 1 } do
        local p = { best[1], best[2], best[3] }
        p[d] = clamp(p[d] + dir * step)
        if d == 1 then p[1] = math.max(p[1], 0.001) end
        local e = sse(p)
        if e < best_sse then best, best_sse, improved = p, e, true end
      end
    end
    if not improved then step = step / 2 end
  end
  return best, best_sse
end

--- Is there a pattern by time of day?  An analysis of variance of the
-- series by phase (its position in the season), each season's own mean
-- taken out first so that a trend or a level shift is not mistaken for
-- one: the F statistic, and the bar it must clear (three standard
-- deviations above F's expectation of 1 without a pattern).
function M.season_test(y, m)
  local seasons = #y // m
  local z, phase = {}, {}
  for k = 0, seasons - 1 do
    local avg = mean(y, k * m + 1, k * m + m)
    for i = 1, m do z[k * m + i] = y[k * m + i] - avg end
  end
  local n = seasons * m
  for i = 1, m do
    local s = 0
    for k = 0, seasons - 1 do s = s + z[k * m + i] end
    phase[i] = s / seasons
  end
  local between, within = 0, 0
  for k = 0, seasons - 1 do
    for i = 1, m do
      local d = z[k * m + i] - phase[i]
      within = within + d * d
    end
  end
  for i = 1, m do between = between + seasons * phase[i] * phase[i] end
  local df1, df2 = m - 1, n - m - (seasons - 1)
  if df2 < 1 then return 0, math.huge end
  local f = (between / df1) / math.max(within / df2, 1e-12)
  return f, 1 + 3 * math.sqrt(2 / df1 + 2 / df2)
end

local Model = {}
Model.__index = Model

local function fit_one(y, m)
  local phi = M.PHI
  local l0, b0, s0 = initial(y, m)
  local p, sse = optimise(y, m, l0, b0, s0, phi)
  local _, l, b, s = run(y, m, p[1], p[2], p[3], phi, l0, b0, s0)
  local n = #y
  local k = 4 + (m and m or 0) -- alpha, beta, initial level and trend; gamma and m-1 seasonal states
  local sigma2 = sse / math.max(1, n - k)
  return setmetatable({ alpha = p[1], beta = p[2], gamma = m and p[3] or nil, phi = phi, season = m, n = n,
    level = l, trend = b, seasonal = s, sse = sse, sigma2 = sigma2 }, Model)
end

--- Fits a model to y (a list of numbers, oldest first).  opts: {season =
-- m, seasonal = true | false | nil (nil: chosen by AIC when the history
-- allows)}.  -> model | nil, why (too short)
function M.fit(y, opts)
  opts = opts or {}
  local n, m = #y, opts.season
  if n < M.MIN_POINTS then
    return nil, string.format("%d points; at least %d are needed", n, M.MIN_POINTS)
  end
  local can_season = m and m >= 2 and n >= 2 * m
  if opts.seasonal == true and not can_season then
    return nil, string.format("%d points; seasonality of %s needs at least %d", n, tostring(m), 2 * (m or 0))
  end
  local f, bar
  if can_season then f, bar = M.season_test(y, m) end
  local use_season = opts.seasonal == true or (opts.seasonal == nil and can_season and f > bar)
  local model = fit_one(y, use_season and m or nil)
  model.season_test = f and { f = f, threshold = bar } or nil
  if not can_season and m then
    model.why_no_season = string.format("daily seasonality needs at least %d intervals (two days); the history has %d",
      2 * m, n)
  elseif not use_season and f then
    model.why_no_season = string.format("no daily pattern: its strength (F %.2f) is within the noise (below %.2f)", f,
      bar)
  end
  return model
end

--- Forecasts h steps: a list of {mean, lo80, hi80, lo95, hi95}.  opts.min:
-- clip the bounds and the mean from below (0 for counts).
function Model:predict(h, opts)
  opts = opts or {}
  local out = {}
  local m, phi = self.season, self.phi
  -- the equivalent state-space model's smoothing parameters
  local a, bs, gs = self.alpha, self.alpha * self.beta, m and self.gamma * (1 - self.alpha) or 0
  local var_sum, phi_sum = 0, 0
  local phi_h = 0
  for step = 1, h do
    phi_h = phi_h + phi ^ step
    local season = m and self.seasonal[(self.n + step - 1) % m + 1] or 0
    local y = self.level + phi_h * self.trend + season
    if step > 1 then
      local j = step - 1
      phi_sum = phi_sum + phi ^ j
      local c = a + bs * phi_sum + ((m and j % m == 0) and gs or 0)
      var_sum = var_sum + c * c
    end
    local sd = math.sqrt(self.sigma2 * (1 + var_sum))
    local row = { mean = y, lo80 = y - Z80 * sd, hi80 = y + Z80 * sd, lo95 = y - Z95 * sd, hi95 = y + Z95 * sd, sd = sd }
    if opts.min then
      for _, k in ipairs { "mean", "lo80", "hi80", "lo95", "hi95" } do row[k] = math.max(opts.min, row[k]) end
    end
    out[step] = row
  end
  return out
end

--- Mean absolute error of the naive forecast that repeats the value `lag`
-- steps back (a season: seasonal naive), in sample: MASE's scale.
local function naive_mae(y, lag)
  local s, k = 0, 0
  for t = lag + 1, #y do
    s, k = s + math.abs(y[t] - y[t - lag]), k + 1
  end
  return k > 0 and s / k or nil
end

--- Back-test: fits on all but the last `holdout` points, forecasts them
-- and compares.  -> {holdout, mae, rmse, mase, scale (naive lag),
-- coverage80, coverage95, seasonal} | nil, why
function M.backtest(y, opts)
  local n, h = #y, opts.holdout
  if not h or h < 1 or n - h < M.MIN_POINTS then
    return nil, string.format("a back-test of %s intervals needs %d points; the history has %d", tostring(h),
      (h or 0) + M.MIN_POINTS, n)
  end
  local train = table.move(y, 1, n - h, 1, {})
  local model, why = M.fit(train, { season = opts.season, seasonal = opts.seasonal })
  if not model then return nil, why end
  local fc = model:predict(h, { min = opts.min })
  local abs, sq, in80, in95 = 0, 0, 0, 0
  for i = 1, h do
    local actual, f = y[n - h + i], fc[i]
    local e = actual - f.mean
    abs, sq = abs + math.abs(e), sq + e * e
    if actual >= f.lo80 and actual <= f.hi80 then in80 = in80 + 1 end
    if actual >= f.lo95 and actual <= f.hi95 then in95 = in95 + 1 end
  end
  local lag = model.season or 1
  local scale = naive_mae(train, lag)
  local mae = abs / h
  return { holdout = h, mae = mae, rmse = math.sqrt(sq / h), mase = scale and scale > 0 and mae / scale or nil,
    naive_lag = lag, coverage80 = in80 / h, coverage95 = in95 / h, seasonal = model.season ~= nil, model = model }
end

return M
