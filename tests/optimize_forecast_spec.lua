-- Holt-Winters (lua/aitbc/optimize/forecast.lua) and the queue model
-- against series whose shape is known: generated with a daily pattern and
-- noise from a fixed seed, with none, and with too little history.
local forecast = require "aitbc.optimize.forecast"
local queueing = require "aitbc.optimize.queueing"

--- Gaussian noise from a seed (xorshift, Box-Muller): the same series every run.
local function noise(seed)
  local state = seed
  local function uniform()
    state = state ~ (state << 13) & 0xFFFFFFFF
    state = state ~ (state >> 17)
    state = state ~ (state << 5) & 0xFFFFFFFF
    return ((state & 0xFFFFFF) + 0.5) / 0x1000000
  end
  return function(sigma)
    return sigma * math.sqrt(-2 * math.log(uniform())) * math.cos(2 * math.pi * uniform())
  end
end

local M = 96 -- fifteen-minute intervals a day

local function daily(days, seed, opts)
  opts = opts or {}
  local rnd, y = noise(seed), {}
  for t = 1, days * M do
    y[t] = 50 + (opts.trend or 0) * t + (opts.amplitude or 30) * math.sin(2 * math.pi * (t - 1) / M)
      + rnd(opts.sigma or 3)
  end
  return y
end

describe("optimize: Holt-Winters forecasting", function()
  it("finds a daily pattern, forecasts it, and its back-test beats seasonal naive", function()
    local y = daily(6, 12345)
    local model = assert(forecast.fit(y, { season = M }))
    assert.equal(M, model.season)
    local fc = model:predict(M)
    -- one day ahead follows the known curve within a few noise widths
    local worst = 0
    for h = 1, M do
      local truth = 50 + 30 * math.sin(2 * math.pi * (#y + h - 1) / M)
      worst = math.max(worst, math.abs(fc[h].mean - truth))
      assert.is_true(fc[h].lo95 <= fc[h].lo80 and fc[h].lo80 <= fc[h].mean and fc[h].mean <= fc[h].hi80
        and fc[h].hi80 <= fc[h].hi95)
    end
    assert.is_true(worst < 4 * 3, "largest error " .. worst)
    local bt = assert(forecast.backtest(y, { season = M, holdout = M }))
    assert.is_true(bt.seasonal)
    assert.is_true(bt.mase < 1, "MASE " .. bt.mase) -- better than repeating yesterday
    assert.is_true(bt.mae < 2 * 3, "MAE " .. bt.mae)
    assert.is_true(bt.coverage95 >= 0.8, "95 % interval covered " .. bt.coverage95)
  end)

  it("gives no seasonality to a series that has none", function()
    local y = daily(5, 777, { amplitude = 0, sigma = 5 })
    local model = assert(forecast.fit(y, { season = M }))
    assert.is_nil(model.season)
    assert.matches("no daily pattern", model.why_no_season)
    local bt = assert(forecast.backtest(y, { season = M, holdout = M }))
    assert.is_false(bt.seasonal)
    assert.is_true(bt.mae < 2 * 5, "MAE " .. bt.mae)
  end)

  it("follows a trend, and intervals widen with the horizon", function()
    local y = daily(4, 99, { trend = 0.05, sigma = 2 })
    local model = assert(forecast.fit(y, { season = M }))
    local fc = model:predict(M)
    assert.is_true(fc[M].hi95 - fc[M].lo95 > fc[1].hi95 - fc[1].lo95)
    assert.is_true(model.trend > 0)
  end)

  it("falls back without seasonality on less than two days, and says how much it needs", function()
    local y = daily(1, 5)
    local model = assert(forecast.fit(y, { season = M }))
    assert.is_nil(model.season)
    assert.matches("at least 192 intervals", model.why_no_season)
    local short, why = forecast.fit({ 1, 2, 3 }, { season = M })
    assert.is_nil(short)
    assert.matches("at least 12", why)
  end)
end)

describe("optimize: the queue model", function()
  it("Erlang C matches the textbook values", function()
    -- 2 servers, 1 erlang: P(wait) = 1/3
    assert.is_true(math.abs(queueing.erlang_c(2, 1) - 1 / 3) < 1e-9)
    assert.equal(1, queueing.erlang_c(3, 3))
    -- M/M/1: Wq = rho / (mu - lambda) = 0.5 / (1 - 0.5) = 1 s with s = 1, lambda = 0.5
    assert.is_true(math.abs(queueing.wait(1, 0.5, 1, 1) - 1) < 1e-9)
  end)

  it("needs more servers for a tighter target, more load or longer-tailed service", function()
    local base = queueing.servers_needed(2, 3, 5, 1)    -- 6 erlangs
    assert.is_true(base >= 7)
    assert.is_true(queueing.servers_needed(2, 3, 0.5, 1) > base)
    assert.is_true(queueing.servers_needed(4, 3, 5, 1) > base)
    assert.is_true(queueing.servers_needed(2, 3, 0.5, 4) >= queueing.servers_needed(2, 3, 0.5, 1))
    assert.equal(0, queueing.servers_needed(0, 3, 5, 1))
  end)
end)
