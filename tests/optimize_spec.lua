-- aitbc optimize through a real node on loopback (spec §12): the history
-- the node derives from its own jobs, history imported through the admin
-- route (real store code: jobs of type imported), forecasts from it with
-- the CLI, and self-optimisation of an agent with real jobs run by a real
-- `aitbc miner mine-ollama` beside the simulated Ollama.
local cli = require "support.cli"
local json = require "aitbc.json"
local nodes = require "support.node"
local sys = require "aitbc.sys"

--- Per-minute points ending before now: jobs following a daily curve
-- (peak 14:00 UTC), exactly or flat with noise.
local function points_csv(days, shape, now)
  local lines = { "time,jobs,queue_wait_s,service_s,miners" }
  local stop = math.floor(now / 60) * 60
  local state = 7
  for t = stop - days * 86400, stop - 60, 60 do
    local jobs
    if shape == "daily" then
      jobs = math.floor(5 + 4 * math.cos(((t % 86400) / 3600 - 14) / 24 * 2 * math.pi) + 0.5)
    else
      state = (state * 1103515245 + 12345) & 0x7FFFFFFF
      jobs = 5 + state % 3 - 1
    end
    lines[#lines + 1] = string.format("%d,%d,0.5,20,3", t, jobs)
  end
  return table.concat(lines, "\n") .. "\n"
end

describe("optimize: history and forecasts", function()
  local node, home, env

  local function aitbc(args, opts)
    return node:cli(args, { home = home, env = env, timeout = (opts or {}).timeout or 60 })
  end

  before_each(function()
    node = nodes.start { args = { "--log-level", "warn" } }
    home = cli.tempdir()
    env = { AITBC_CLIENT_KEY = node:key("client"), AITBC_ADMIN_KEY = node.admin_key }
  end)
  after_each(function() node:stop() end)

  it("derives per-interval history from real jobs: submitted, queue wait, served, miners", function()
    local client, miner = env.AITBC_CLIENT_KEY, node:key("miner")
    for i = 1, 3 do
      local st = node:request("POST", "/v1/jobs", { key = client, json = { model = "llama3",
        payload = { prompt = "job " .. i } } })
      assert.equal(201, st)
    end
    assert.equal(200, (node:request("POST", "/v1/miners/register", { key = miner,
      json = { miner_id = "m1", capabilities = { models = { "llama3" } } } })))
    for _ = 1, 2 do
      local st, job = node:request("POST", "/v1/miners/poll", { key = miner, json = { max_wait_seconds = 1 } })
      assert.equal(200, st)
      assert.equal(200, (node:request("POST", "/v1/miners/" .. job.job_id .. "/result", { key = miner,
        json = { result = { response = "ok" }, metrics = { duration_ms = 5 } } })))
    end
    local st, h = node:request("GET", "/v1/optimize/history?interval=60&partial=1", { key = client })
    assert.equal(200, st, json.encode(h))
    local last = h.points[#h.points]
    assert.equal(3, last.jobs)
    assert.equal(2, last.served)
    assert.is_number(last.queue_wait_s)
    assert.equal(1, last.miners)
    assert.equal(2, h.service.samples)
    -- without partial the unfinished minute is not history yet
    local _, whole = node:request("GET", "/v1/optimize/history?interval=60", { key = client })
    assert.is_true(#whole.points < #h.points)
  end)

  it("refuses bad queries and imports with the field named; importing is for admins", function()
    local st, body = node:request("GET", "/v1/optimize/history?interval=700", { key = env.AITBC_CLIENT_KEY })
    assert.equal(422, st)
    assert.equal("interval", body.error.field)
    st = node:request("POST", "/v1/admin/history/import", { key = env.AITBC_CLIENT_KEY,
      json = { points = { { time = 1, jobs = 1 } } } })
    assert.equal(403, st)
    st, body = node:request("POST", "/v1/admin/history/import", { key = node.admin_key,
      json = { points = { { time = sys.time() + 3600, jobs = 1 } } } })
    assert.equal(422, st)
    assert.equal("points[1].time", body.error.field)
    st, body = node:request("POST", "/v1/admin/history/import", { key = node.admin_key,
      json = { points = { { time = 1000000, jobs = -1 } } } })
    assert.equal(422, st)
    assert.equal("points[1].jobs", body.error.field)
    -- a CSV with an unknown column: the CLI names the line
    assert(sys.write_file(home .. "/bad.csv", "time,jobz\n1,2\n"))
    local r = aitbc { "optimize", "import-history", home .. "/bad.csv" }
    assert.equal(2, r.code)
    assert.matches("line 1: column 2 is \"jobz\"", r.err)
  end)

  it("says how much history it needs when there is too little", function()
    local r = aitbc { "optimize", "predict", "--target", "network-load", "--horizon", "24h" }
    assert.equal(1, r.code)
    assert.matches("not enough history to forecast: 0 interval%(s%) of 15 min", r.err)
    assert.matches("at least 12 %(3 h%) are needed, and 192 %(two days%) for daily seasonality", r.err)
  end)

  it("forecasts imported history with daily seasonality: intervals, back-test, miners needed", function()
    assert(sys.write_file(home .. "/daily.csv", points_csv(4, "daily", sys.time())))
    local r = aitbc { "optimize", "import-history", home .. "/daily.csv" }
    assert.equal(0, r.code, r.err)
    assert.matches("imported 5760 points of 60 s", r.out)
    r = aitbc { "-o", "json", "optimize", "predict", "--target", "network-load", "--horizon", "24h" }
    assert.equal(0, r.code, r.err)
    local d = json.decode(r.out)
    assert.equal(96, d.model.season)
    assert.equal(96, #d.forecast)
    assert.is_true(d.backtest.holdout >= 96)
    assert.is_true(d.backtest.mase < 1, "MASE " .. tostring(d.backtest.mase)) -- beats repeating yesterday
    for _, f in ipairs(d.forecast) do
      assert.is_true(f.lo95 <= f.lo80 and f.lo80 <= f.mean and f.mean <= f.hi80 and f.hi80 <= f.hi95)
      assert.is_true(f.miners_needed >= 1)
    end
    -- the peak (14:00 UTC, 9 a minute: 135 a quarter) needs more miners than the night (1 a minute)
    local most, least = 0, math.huge
    for _, f in ipairs(d.forecast) do most, least = math.max(most, f.miners_needed), math.min(least, f.miners_needed) end
    assert.is_true(most > least)
    assert.is_true(math.abs(d.service.mean_s - 20) < 0.01)
    r = aitbc { "optimize", "predict", "--target", "queue-wait", "--horizon", "6h" }
    assert.equal(0, r.code, r.err)
    assert.matches("Forecast of queue%-wait", r.out)
    assert.matches("Recommendations", r.out)
    r = aitbc { "optimize", "predict", "--horizon", "2h", "--export", "csv" }
    assert.equal(0, r.code, r.err)
    assert.matches("^time,forecast,lo80,hi80,lo95,hi95,load,miners_needed,miners_needed_hi80\n", r.out)
    local rows = 0
    for _ in r.out:gmatch("\n") do rows = rows + 1 end
    assert.equal(9, rows)
  end)

  it("gives no daily pattern to a flat series", function()
    assert(sys.write_file(home .. "/flat.csv", points_csv(3, "flat", sys.time())))
    assert.equal(0, aitbc({ "optimize", "import-history", home .. "/flat.csv" }).code)
    local r = aitbc { "-o", "json", "optimize", "predict", "--horizon", "6h" }
    assert.equal(0, r.code, r.err)
    local d = json.decode(r.out)
    assert.is_nil(d.model.season)
    assert.matches("no daily pattern", d.model.note)
  end)
end)

describe("optimize self-opt", function()
  local node, home, env, sim, sim_url

  local function aitbc(args)
    return node:cli(args, { home = home, env = env, timeout = 300 })
  end

  setup(function()
    node = nodes.start { args = { "--log-level", "warn" } }
    home = cli.tempdir()
    env = { AITBC_CLIENT_KEY = node:key("client"), AITBC_MINER_KEY = node:key("miner") }
    sim, sim_url = cli.echo_server { handler = "aitbc.ollama.sim",
      config = '{"token_delay": 0.002, "models": ["llama3", "llama3.2:1b"], "state": "optimize-spec"}' }
    assert(cli.spawn { argv = { cli.bin, "--url", node.url, "miner", "mine-ollama", "--model", "llama3", "--continuous",
      "--miner-id", "opt-miner", "--ollama-url", sim_url, "--poll-wait", "2" },
      env = { AITBC_HOME = cli.tempdir(), AITBC_MINER_KEY = env.AITBC_MINER_KEY }, stdout = "null", stderr = "null" })
    assert(sys.write_file(home .. "/agent.json", json.encode { model = "llama3",
      system_prompt = "You answer briefly. Give numbers as digits. Never add anything else.",
      parameters = { num_ctx = 16384 } }))
  end)
  teardown(function()
    node:stop()
    sim:stop(1)
  end)

  it("measures with real jobs, keeps a faster num_ctx, rejects a model that answers wrong, saves a version", function()
    local r = aitbc { "agent", "create", "--name", "tuned", "--type", "chat", "--config", home .. "/agent.json" }
    assert.equal(0, r.code, r.err)
    local agent_id = r.out:match("(agent_%x+)")
    r = aitbc { "-o", "json", "optimize", "self-opt", "--agent-id", agent_id, "--target", "accuracy", "--runs", "1",
      "--probes", "2", "--max-trials", "1", "--seed", "2" }
    assert.equal(0, r.code, r.err)
    local acc = json.decode(r.out)
    assert.matches("benchmark", acc.probe_set.source) -- never run: the benchmark's tasks, with known answers
    assert.equal(0.5, acc.baseline.accuracy) -- the arithmetic right, the invoice's total not (the simulator cannot read)
    -- its first trial is the 1B variant, which gets large products wrong: rejected
    assert.equal("model", acc.trials[1].knob)
    assert.equal("llama3.2:1b", acc.trials[1].value)
    assert.equal("rejected", acc.trials[1].outcome, json.encode(acc.trials[1]) .. json.encode(acc.baseline.answers))
    assert.matches("fewer right answers", acc.trials[1].why)
    assert.is_nil(acc.version_after)
    r = aitbc { "-o", "json", "optimize", "self-opt", "--agent-id", agent_id, "--target", "inference-speed", "--runs",
      "2", "--probes", "2", "--max-trials", "2", "--seed", "2" }
    assert.equal(0, r.code, r.err)
    local d = json.decode(r.out)
    assert.is_true(d.simulated)
    assert.equal("rejected", d.trials[1].outcome) -- the 1B variant: faster, but wrong
    assert.equal("num_ctx", d.trials[2].knob)
    assert.equal("kept", d.trials[2].outcome)
    assert.same({ name = "num_ctx", before = 16384, after = 8192 }, d.changes[1])
    assert.is_true(d.final.median < d.baseline.p25, "faster beyond the spread")
    assert.is_true(d.improvement.percent > 20)
    assert.equal(1, d.version_before)
    assert.equal(2, d.version_after)
    -- the trials are jobs on the network, and not taken for the agent's inputs
    local st, inputs = node:request("GET", "/v1/agents/" .. agent_id .. "/inputs", { key = env.AITBC_CLIENT_KEY })
    assert.equal(200, st)
    assert.equal(0, #inputs.items)
    assert.is_true(d.jobs >= 2 * (1 + 2 * 2))
    -- agent rollback undoes it
    r = aitbc { "agent", "rollback", agent_id, "1" }
    assert.equal(0, r.code, r.err)
    local _, shown = node:request("GET", "/v1/agents/" .. agent_id, { key = env.AITBC_CLIENT_KEY })
    assert.equal(16384, shown.definition.parameters.num_ctx)
    assert.equal(3, shown.current_version)
  end)
end)
