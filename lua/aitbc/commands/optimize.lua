--- aitbc optimize: self-optimising agents and predictive scaling (spec §12).
-- self-opt measures an agent on a probe set with real jobs, searches
-- Ollama's parameters, model variants and prompt length under a quality
-- guard and saves the winner as a new version; predict forecasts the
-- network's load, queue wait or miners from its own history and says how
-- many miners keep the queue wait under a target.
local errors = require "aitbc.errors"
local json = require "aitbc.json"

local function api(ctx, role) return require("aitbc.api").from_context(ctx, { role = role or "client" }) end

local TARGETS = { "network-load", "queue-wait", "miners" }

--- "15m" and friends -> seconds, or a usage error naming the option.
local function duration(name, text, min, max)
  local s = require("aitbc.optimize.predict").duration(text)
  if not s or s < min or s > max then
    errors.raise("usage", string.format("--%s %s is not a duration from %ds to %ds", name, tostring(text), min, max),
      "write it like 24h, 90m, 2d or 1d12h")
  end
  return s
end

local function fetch_history(ctx, interval, days)
  return api(ctx):call("GET", "/v1/optimize/history", { query = { interval = interval, days = days },
    expect = { points = "array", interval_seconds = "integer" } })
end

local function fmt(v, digits)
  if type(v) ~= "number" then return "-" end
  return string.format("%." .. (digits or 1) .. "f", v)
end

local function utc(t) return os.date("!%Y-%m-%d %H:%M", math.floor(t)) end

local function render_forecast(d, out)
  local P = require "aitbc.optimize.predict"
  out:print(out:style(string.format("Forecast of %s (%s) for the next %s, in %s intervals", d.target, d.what,
    P.span_text(d.horizon_seconds), P.span_text(d.interval_seconds)), "bold"))
  local m, bt = d.model, d.backtest
  local gamma = m.gamma and string.format(", γ %.2f", m.gamma) or ""
  local params = string.format("α %.2f, β %.2f%s, φ %.2f", m.alpha, m.beta, gamma, m.phi)
  out:print(out:format_record({
    history = string.format("%s → %s UTC, %d intervals (first job %s)", d.history.from, d.history.to, d.history.points,
      d.history.first_job_at or "-"),
    model = m.method .. " (" .. params .. ")",
    note = m.note,
    backtest = bt.holdout and string.format("last %s held out: MAE %s %s, RMSE %s, MASE %s (against %s naive); "
      .. "80 %% interval held %d %%, 95 %% held %d %%", P.span_text(bt.holdout * d.interval_seconds), fmt(bt.mae, 2),
      d.unit, fmt(bt.rmse, 2), fmt(bt.mase, 2), bt.naive_lag == 1 and "last-value" or "seasonal",
      math.floor(bt.coverage80 * 100 + 0.5), math.floor(bt.coverage95 * 100 + 0.5)) or ("skipped: " .. tostring(bt.skipped)),
    service = type(d.service.mean_s) == "number" and string.format("%.2f s per job (measured over %d jobs, Cs² %s)",
      d.service.mean_s, d.service.samples, fmt(d.service.cv2, 2)) or "unknown (no job completed in the history)",
  }, { "history", "model", "note", { "backtest", "back-test" }, { "service", "service time" } }))
  if out.tty then
    local mean, hi = {}, {}
    for i, r in ipairs(d.forecast) do mean[i], hi[i] = r.mean, r.hi95 end
    out:print("")
    for _, line in ipairs(require("aitbc.optimize.chart").render(d.history.series, mean, hi,
      { width = out.width, label = d.unit, style = function(t, s) return out:style(t, s) end })) do
      out:print(line)
    end
  end
  out:print("")
  local every = math.max(1, 3600 // d.interval_seconds)
  local rows = {}
  for i, r in ipairs(d.forecast) do
    if (i - 1) % every == 0 then
      rows[#rows + 1] = { time = utc(r.time), forecast = fmt(r.mean), ["80 %"] = fmt(r.lo80) .. "–" .. fmt(r.hi80),
        ["95 %"] = fmt(r.lo95) .. "–" .. fmt(r.hi95),
        ["miners needed"] = r.miners_needed and string.format("%d (%d at 80 %% upper)", r.miners_needed,
          r.miners_needed_hi80) or "-" }
    end
  end
  out:print(out:format_table(rows, { "time", "forecast", "80 %", "95 %", "miners needed" }))
  if every > 1 then
    out:print(out:style(string.format("(every %s shown; all %d intervals: --output json or --export csv)",
      P.span_text(every * d.interval_seconds), #d.forecast), "dim"))
  end
  out:print("")
  out:print(out:style("Recommendations", "bold") .. string.format(" (queue wait under %s s)", d.max_wait_s))
  for _, r in ipairs(d.recommendations) do out:print("  • " .. r) end
end

local function forecast_csv(d)
  local lines = { "time,forecast,lo80,hi80,lo95,hi95,load,miners_needed,miners_needed_hi80" }
  for _, r in ipairs(d.forecast) do
    lines[#lines + 1] = string.format("%s,%.4f,%.4f,%.4f,%.4f,%.4f,%.4f,%s,%s", os.date("!%Y-%m-%dT%H:%M:%SZ",
      math.floor(r.time)), r.mean, r.lo80, r.hi80, r.lo95, r.hi95, r.load, r.miners_needed or "", r.miners_needed_hi80 or "")
  end
  return table.concat(lines, "\n") .. "\n"
end

local interval_opt = { "--interval", metavar = "DURATION", default = "15m",
  help = "the forecast's step: a divisor of a day (15m gives 96 a day)" }
local days_opt = { "--days", type = "integer", min = 1, max = 90, default = 30, metavar = "N",
  help = "how much history to read" }

local function render_selfopt(d, out)
  local function summary(m)
    if not m then return "-" end
    return string.format("median %.1f %s (IQR %.1f–%.1f, min %.1f, max %.1f; %d runs)%s%s", m.median, m.unit, m.p25, m.p75,
      m.min, m.max, m.runs, m.tokens_per_second and string.format(", %.1f tokens/s", m.tokens_per_second) or "",
      m.accuracy and string.format(", accuracy %.0f %%", m.accuracy * 100) or "")
  end
  local imp = d.improvement
  local verdict
  if #d.changes == 0 then
    verdict = "no change beat the baseline beyond the noise under the quality guard: the agent is unchanged"
  elseif d.target == "accuracy" then
    verdict = string.format("accuracy %.0f %% → %.0f %%", (imp.accuracy_before or 0) * 100, (imp.accuracy_after or 0) * 100)
  else
    verdict = string.format("%.1f %% %s (median %.1f → %.1f %s)", imp.percent, d.target == "cost" and "cheaper" or "faster",
      imp.median_before, imp.median_after, imp.unit)
  end
  out:print("")
  out:print(out:style("Optimization report", "bold") .. " for agent " .. d.agent_id .. " (target " .. d.target .. ")")
  out:print(out:format_record({ probes = string.format("%s, %d run(s) each", d.probe_set.source, d.probe_set.runs_per_probe),
    baseline = summary(d.baseline), optimised = summary(d.final), improvement = verdict,
    jobs = string.format("%d jobs on the network", d.jobs) },
    { { "probes", "probe set" }, "baseline", { "optimised", "after" }, "improvement", { "jobs", "measured with" } }))
  if #d.changes > 0 then
    out:print("")
    out:print(out:style("Parameter changes", "bold"))
    local rows = {}
    for i, c in ipairs(d.changes) do rows[i] = { parameter = c.name, before = tostring(c.before), after = tostring(c.after) } end
    out:print(out:format_table(rows, { "parameter", "before", "after" }))
  end
  out:print("")
  out:print(out:style("What was tried", "bold"))
  local rows = {}
  for i, t in ipairs(d.trials) do
    rows[i] = { ["#"] = tostring(i), knob = t.knob, change = tostring(t.from) .. " → " .. tostring(t.value),
      median = t.median and string.format("%.1f", t.median) or "-",
      agreement = t.agreement and string.format("%.2f", t.agreement) or "-", outcome = t.outcome, why = t.why or "" }
  end
  out:print(out:format_table(rows, { "#", "knob", "change", "median", "agreement", "outcome", "why" }))
  if d.stopped then out:print(out:style(d.stopped, "dim")) end
  if d.version_after then
    out:success(string.format("saved as version %d of agent %s (was %d); undo: aitbc agent rollback %s %d", d.version_after,
      d.agent_id, d.version_before, d.agent_id, d.version_before))
  elseif #d.changes > 0 then
    out:print("not saved (--dry-run)")
  end
  if d.simulated then
    out:print(out:style("the miners' Ollama is aitbc's simulated one: its timings come from its model of the hardware",
      "yellow"))
  end
end

return {
  name = "optimize",
  category = "Workflows",
  summary = "Self-optimising agents and predictive scaling from the network's own history",
  description = "self-opt tunes an agent with real jobs on the network (Ollama's parameters, model variants the "
    .. "miners have, prompt length) under a quality guard and saves the winner as a new version (aitbc agent "
    .. "rollback undoes it); predict forecasts load, queue wait or miners from the node's own jobs and recommends "
    .. "how many miners to run.",
  commands = {
    {
      name = "self-opt",
      summary = "Tune an agent with real jobs (speed, cost or accuracy) and save the winner as a new version",
      fields = { "agent_id", "target", "probe_set", "baseline", "final", "improvement", "changes", "trials", "jobs",
        "version_before", "version_after", "simulated", "stopped" },
      options = {
        { "--agent-id", metavar = "AGENT", help = "the agent to optimise" },
        { "--target", choices = { "inference-speed", "cost", "accuracy" }, default = "inference-speed",
          help = "what to improve" },
        { "--runs", type = "integer", min = 1, max = 20, default = 3, metavar = "N",
          help = "runs of each probe per configuration (medians over them)" },
        { "--probes", type = "integer", min = 1, max = 20, default = 3, metavar = "N", help = "probe set size" },
        { "--guard", type = "number", min = 0, max = 1, default = 0.8, metavar = "SHARE",
          help = "how much the answers must agree with the baseline's (word overlap)" },
        { "--max-trials", type = "integer", min = 1, max = 100, default = 20, metavar = "N",
          help = "configurations to try at most" },
        { "--seed", type = "integer", min = 0, default = 1, metavar = "N", help = "benchmark tasks' seed (as probes)" },
        { "--dry-run", type = "boolean", help = "measure and report, but save nothing" },
      },
      examples = { [[aitbc optimize self-opt --agent-id agent_0a1b2c3d4e5f6a7b --target "inference-speed"]],
        [[aitbc optimize self-opt --agent-id agent_0a1b2c3d4e5f6a7b --target accuracy --runs 1]] },
      run = function(ctx)
        local o = ctx.opts
        if not o.agent_id then errors.raise("usage", "--agent-id is required: the agent to optimise") end
        local client = api(ctx)
        local agent = client:call("GET", require("aitbc.api").path("/v1/agents/{agent_id}", { agent_id = o.agent_id }),
          { expect = { agent_id = "string", definition = "object" } })
        local tty = ctx.out.format == "table"
        if tty then
          ctx.out:print(string.format("Optimization started: agent %s (%s, version %d), target %s", agent.agent_id,
            agent.name, agent.current_version or agent.version, o.target))
        end
        local report, why = require("aitbc.optimize.selfopt").run { client = client, agent = agent, target = o.target,
          runs = o.runs, probes = o.probes, guard = o.guard, max_trials = o.max_trials, seed = o.seed,
          save = not o.dry_run, on_progress = tty and function(text) ctx.out:info(text) end or nil }
        if not report then errors.raise("failure", why) end
        return report, render_selfopt
      end,
    },
    {
      name = "predict",
      summary = "Forecast network load, queue wait or miners, with intervals, a back-test and scaling advice",
      fields = { "target", "what", "unit", "interval_seconds", "horizon_seconds", "steps", "history", "model",
        "backtest", "service", "miners_online", "max_wait_s", "forecast", "schedule", "recommendations" },
      options = {
        { "--target", choices = TARGETS, default = "network-load", help = "what to forecast" },
        { "--horizon", metavar = "DURATION", default = "24h", help = "how far ahead, e.g. 24h, 90m, 2d" },
        interval_opt, days_opt,
        { "--max-wait", type = "number", min = 0.01, max = 86400, default = 10, metavar = "SECONDS",
          help = "the mean queue wait to stay under (for miners needed)" },
        { "--export", choices = { "csv" }, help = "print the forecast as CSV instead" },
      },
      examples = { [[aitbc optimize predict --target "network-load" --horizon "24h"]],
        [[aitbc optimize predict --target queue-wait --horizon 6h --max-wait 5]],
        [[aitbc optimize predict --horizon 48h --export csv > forecast.csv]] },
      run = function(ctx)
        local o = ctx.opts
        local horizon = duration("horizon", o.horizon, 60, 7 * 86400)
        local interval = duration("interval", o.interval, 60, 86400)
        if 86400 % interval ~= 0 then
          errors.raise("usage", "--interval " .. o.interval .. " does not divide a day", "use 5m, 15m, 30m or 1h")
        end
        local h = fetch_history(ctx, interval, o.days)
        local P = require "aitbc.optimize.predict"
        local report, why = P.from_history(h, { target = o.target, horizon = horizon, max_wait = o.max_wait })
        if not report then errors.raise("failure", why, nil, { code = "history_too_short" }) end
        if o.export == "csv" then
          io.stdout:write(forecast_csv(report))
          return nil
        end
        return report, render_forecast
      end,
    },
    {
      name = "history",
      summary = "The network's history per interval, from its jobs (what predict reads)",
      list = "points", fields = { "t", "jobs", "queue_wait_s", "queue_wait_max_s", "miners", "slots", "served",
        "service_s" },
      options = { interval_opt, days_opt },
      run = function(ctx)
        local interval = duration("interval", ctx.opts.interval, 60, 86400)
        local h = fetch_history(ctx, interval, ctx.opts.days)
        return h, function(d, out)
          if #d.points == 0 then out:print("no history yet: no job was submitted to this node") return end
          out:print(out:format_table(d.points, { "t", "jobs", "queue_wait_s", "miners", "served", "service_s" }))
        end
      end,
    },
    {
      name = "import-history",
      summary = "Import past load (CSV or JSON points), or a generated synthetic workload, into the node (admin)",
      description = "Points are {time, jobs, queue_wait_s, service_s, miners} per interval (CSV with that header, or "
        .. "JSON); each becomes that many completed jobs of type imported, spread over its interval, which the "
        .. "history and forecasts read like any other job. --generate DAYS makes a synthetic daily workload "
        .. "instead (for demos and tests; it says so).",
      args = { { "file", help = "the points (CSV or JSON); - reads standard input", optional = true } },
      options = {
        { "--interval", type = "integer", min = 1, max = 86400, default = 60, metavar = "SECONDS",
          help = "each point's span" },
        { "--generate", type = "integer", min = 1, max = 30, metavar = "DAYS",
          help = "instead of a file: a synthetic workload of DAYS ending now" },
        { "--seed", type = "integer", min = 0, default = 1, metavar = "N", help = "the synthetic workload's seed" },
      },
      fields = { "points", "jobs", "interval_seconds", "synthetic" },
      run = function(ctx)
        local o = ctx.opts
        local H = require "aitbc.optimize.history"
        local points, interval, synthetic
        if o.generate then
          points, interval, synthetic = H.generate(o.generate, o.seed, require("aitbc.sys").time()), 60, true
        elseif ctx.args.file then
          local text = require("aitbc.config").read_input(ctx.args.file, "the history file")
          local why
          points, why = H.parse(text)
          if not points then errors.raise("usage", ctx.args.file .. ": " .. why) end
          interval = o.interval
        else
          errors.raise("usage", "give a FILE of points, or --generate DAYS for a synthetic workload")
        end
        local client = api(ctx, "admin")
        local total = { points = 0, jobs = 0, interval_seconds = interval, synthetic = synthetic or false }
        for i = 1, #points, 5000 do
          local chunk = table.move(points, i, math.min(#points, i + 4999), 1, json.array())
          local r = client:call("POST", "/v1/admin/history/import", { json = { interval = interval, points = chunk,
            model = synthetic and "synthetic" or nil }, expect = { jobs = "integer" } })
          total.points, total.jobs = total.points + r.points, total.jobs + r.jobs
          if ctx.out.format == "table" then ctx.out:progress(string.format("imported %d of %d points", total.points,
            #points)) end
        end
        ctx.out:progress_done()
        return total, function(d, out)
          out:success(string.format("imported %d %spoints of %d s: %d jobs", d.points, d.synthetic and "synthetic " or "",
            d.interval_seconds, d.jobs))
          out:print(out:style("next: aitbc optimize predict --target network-load --horizon 24h", "dim"))
        end
      end,
    },
  },
}
