--- Self-optimisation of an agent (spec 12.1, DESIGN.md §8): measure it on
-- a probe set, search what Ollama lets one change, keep what is faster
-- (or cheaper, or more accurate) beyond the noise without changing its
-- answers, and save the winner as a new version of the agent.
--
-- Every trial is a real job on the network (POST /v1/agents/{id}/execute
-- with `overrides` and `trial`, so it is not taken for a user's input
-- later), run by a miner beside its Ollama and measured with Ollama's own
-- timings (prompt_eval_duration + eval_duration, load excluded: each
-- configuration is warmed first, since changing num_ctx, num_batch or
-- num_thread reloads the model).  The search is coordinate-wise, as
-- llama-bench sweeps: one knob at a time from the best so far —
-- the model variants the miners have (same family), num_ctx, num_batch,
-- num_thread, a num_predict cap, the system prompt's length, temperature.
--
-- Targets:  inference-speed  median generation time per run (ms)
--           cost             median tokens processed per run (prompt + generated)
--           accuracy         share of the probe set answered right (known answers)
-- Quality guard: answers must agree with the baseline's (word overlap F1,
-- mean over the probes) at least `guard`, and where the probes have known
-- answers no fewer may be right; for accuracy, the score must not fall.
local benchmark = require "aitbc.agents.benchmark"
local json = require "aitbc.json"

local M = { TARGETS = { ["inference-speed"] = true, cost = true, accuracy = true } }
M.TARGET_NAMES = "inference-speed, cost or accuracy"

local function copy(t) return json.decode(json.encode(t or {})) end

local function percentile(sorted, p)
  if #sorted == 0 then return nil end
  local x = (#sorted - 1) * p + 1
  local lo = math.floor(x)
  local hi = math.min(#sorted, lo + 1)
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (x - lo)
end

--- Word overlap of two answers (F1 over their words, lower case), 0..1.
function M.agreement(a, b)
  local function bag(s)
    local t, n = {}, 0
    for w in tostring(s or ""):lower():gmatch("[%w%.]+") do t[w], n = (t[w] or 0) + 1, n + 1 end
    return t, n
  end
  local ba, na = bag(a)
  local bb, nb = bag(b)
  if na == 0 and nb == 0 then return 1 end
  if na == 0 or nb == 0 then return 0 end
  local common = 0
  for w, c in pairs(ba) do common = common + math.min(c, bb[w] or 0) end
  return 2 * common / (na + nb)
end

--- The family of a model: its name without tag and trailing version
-- ("llama3.2:1b" and "llama3" are both "llama").
function M.family(name)
  return (tostring(name):lower():gsub(":.*$", ""):gsub("[%d%.%-_]+$", ""))
end

--- A shorter system prompt: its first sentence.
local function compact(prompt)
  if type(prompt) ~= "string" then return nil end
  local first = prompt:match("^(.-[%.!?])%s") -- the first sentence, when more follow
  if first and #first < #prompt then return first end
end

--- The probe set: the agent's recent inputs, or the benchmark's text tasks
-- (known answers) for the accuracy target or an agent never run.
local function probe_set(client, agent, target, n, seed)
  if target ~= "accuracy" then
    local path = require("aitbc.api").path("/v1/agents/{agent_id}/inputs", { agent_id = agent.agent_id })
    local recent = client:call("GET", path, { query = { limit = n }, expect = { items = "array" } }).items
    if #recent > 0 then
      local probes = {}
      for i, input in ipairs(recent) do probes[i] = { prompt = input } end
      return probes, "the agent's " .. #recent .. " most recent input(s)"
    end
  end
  local probes = {}
  for i, task in ipairs(benchmark.suite(seed, n).text) do probes[i] = task end
  return probes, string.format("%d text task(s) of the benchmark (seed %d, known answers)", #probes, seed)
end

--- Runs one job of the agent with a configuration; -> run | nil, why
local function run_job(client, agent, config, probe)
  local follow = require "aitbc.jobs.follow"
  local path = require("aitbc.api").path("/v1/agents/{agent_id}/execute", { agent_id = agent.agent_id })
  local ok, job = pcall(client.call, client, "POST", path, { json = { input = probe.prompt, trial = true,
    overrides = { parameters = next(config.parameters) and config.parameters or nil, model = config.model,
      system_prompt = config.system_prompt } }, expect = { job_id = "string" } })
  if not ok then return nil, type(job) == "table" and job.message or tostring(job) end
  local state = follow.events(client, job.job_id, { timeout = 600 })
  if state ~= "COMPLETED" then return nil, "job " .. job.job_id .. " ended " .. state end
  local res = follow.result(client, job.job_id)
  local m = type(res.metrics) == "table" and res.metrics or {}
  local r = type(res.result) == "table" and res.result or { answer = res.result }
  if not m.eval_duration then return nil, "job " .. job.job_id .. ": the miner reported no Ollama timings" end
  local correct -- nil: no known answer
  if probe.answer ~= nil then correct = (benchmark.grade(probe, r.answer)) end
  local gen_ms = ((m.prompt_eval_duration or 0) + m.eval_duration) / 1e6
  return { job_id = job.job_id, answer = tostring(r.answer or ""), ms = gen_ms, load_ms = (m.load_duration or 0) / 1e6,
    tokens = (m.prompt_eval_count or 0) + (m.eval_count or 0), eval_count = m.eval_count or 0,
    tokens_per_second = m.eval_duration > 0 and (m.eval_count or 0) / (m.eval_duration / 1e9) or nil,
    correct = correct, simulated = m.simulated }
end

--- Measures a configuration: a warm-up job, then each probe `runs` times.
-- -> measurement {median, p25, p75, min, max (of the objective per run),
-- accuracy, answers, tokens_per_second, jobs} | nil, why
local function measure(client, agent, config, probes, opts, report)
  local warm, why = run_job(client, agent, config, probes[1])
  if not warm then return nil, why end
  local values, answers, correct, graded, tps, jobs = {}, {}, 0, 0, {}, 1
  for round = 1, opts.runs do
    for i, probe in ipairs(probes) do
      local r, err = run_job(client, agent, config, probe)
      if not r then return nil, err end
      jobs = jobs + 1
      if r.simulated then report.simulated = true end
      values[#values + 1] = opts.target == "cost" and r.tokens or r.ms
      if r.tokens_per_second then tps[#tps + 1] = r.tokens_per_second end
      if round == 1 then
        answers[i] = r.answer
        if r.correct ~= nil then
          graded = graded + 1
          if r.correct then correct = correct + 1 end
        end
      end
    end
  end
  table.sort(values)
  table.sort(tps)
  return { median = percentile(values, 0.5), p25 = percentile(values, 0.25), p75 = percentile(values, 0.75),
    min = values[1], max = values[#values], runs = #values, unit = opts.target == "cost" and "tokens" or "ms",
    accuracy = graded > 0 and correct / graded or nil, correct = graded > 0 and correct or nil,
    tokens_per_second = percentile(tps, 0.5), answers = answers, jobs = jobs + 0 }
end

--- Does the candidate keep the baseline's answers?  -> ok, agreement, why
local function guard(base, cand, threshold, target)
  local sum = 0
  for i, a in ipairs(base.answers) do sum = sum + M.agreement(a, cand.answers[i]) end
  local agreement = sum / math.max(1, #base.answers)
  if base.correct and cand.correct < base.correct then
    return false, agreement, string.format("fewer right answers (%d < %d)", cand.correct, base.correct)
  end
  if target ~= "accuracy" and agreement < threshold then
    return false, agreement, string.format("answers changed (agreement %.2f < %.2f)", agreement, threshold)
  end
  return true, agreement
end

--- Is the candidate better than the best so far, beyond the noise?
local function better(best, cand, target)
  if target == "accuracy" then
    if cand.accuracy ~= best.accuracy then return cand.accuracy > best.accuracy end
  end
  -- faster/cheaper by more than 3 % and by more than half the spread of both
  local noise = math.max(0.03 * best.median, ((best.p75 - best.p25) + (cand.p75 - cand.p25)) / 4)
  return best.median - cand.median > noise
end

--- What to try, one knob at a time: {knob, value, apply(config)}.
local function candidates(base, models, agent_model)
  local out = {}
  local function add(knob, value, fn) out[#out + 1] = { knob = knob, value = value, apply = fn } end
  for _, m in ipairs(models) do
    if M.family(m) == M.family(agent_model) and m ~= require("aitbc.jobs").model_name(agent_model) then
      add("model", m, function(c) c.model = m end)
    end
  end
  local p = base.parameters
  for _, v in ipairs { 8192, 4096, 2048 } do
    if p.num_ctx ~= v and not (p.num_ctx == nil and v == 2048) then
      add("num_ctx", v, function(c) c.parameters.num_ctx = v end)
    end
  end
  for _, v in ipairs { 1024, 256 } do
    if p.num_batch ~= v then add("num_batch", v, function(c) c.parameters.num_batch = v end) end
  end
  for _, v in ipairs { 16, 4 } do
    if p.num_thread ~= v then add("num_thread", v, function(c) c.parameters.num_thread = v end) end
  end
  if not p.num_predict or p.num_predict > 128 then
    add("num_predict", 128, function(c) c.parameters.num_predict = 128 end)
  end
  local short = compact(base.system_prompt)
  if short then
    add("prompt length", string.format("%d characters (its first sentence)", #short),
      function(c) c.system_prompt = short end)
  end
  for _, v in ipairs { 0, 0.7 } do
    if p.temperature ~= v then add("temperature", v, function(c) c.parameters.temperature = v end) end
  end
  return out
end

local function describe(knob, config)
  if knob == "model" then return config.model end
  if knob == "prompt length" then return config.system_prompt and (#config.system_prompt .. " characters") or "none" end
  local v = config.parameters[knob]
  return v == nil and "default" or tostring(v)
end

--- Judges a measured trial against the baseline (guard) and the best so
-- far; fills in its outcome.  -> whether it is the new best
local function judge(trial, baseline, best_m, m, opts)
  local kept, agreement, guard_why = guard(baseline, m, opts.guard, opts.target)
  trial.median, trial.p25, trial.p75, trial.accuracy, trial.agreement = m.median, m.p25, m.p75, m.accuracy, agreement
  if not kept then
    trial.outcome, trial.why = "rejected", guard_why
  elseif better(best_m, m, opts.target) then
    trial.outcome, trial.why = "kept", string.format("median %.1f → %.1f %s", best_m.median, m.median, m.unit)
    return true
  else
    trial.outcome, trial.why = "no gain", string.format("median %.1f vs %.1f %s: within the noise or worse", m.median,
      best_m.median, m.unit)
  end
  return false
end

--- What changed from base to best: {name, before, after}.
local function changes_of(base, best)
  local changes = json.array()
  if best.model ~= base.model then changes[#changes + 1] = { name = "model", before = base.model, after = best.model } end
  for _, k in ipairs { "num_ctx", "num_batch", "num_thread", "num_predict", "temperature" } do
    if best.parameters[k] ~= base.parameters[k] then
      changes[#changes + 1] = { name = k, before = base.parameters[k] == nil and "default" or base.parameters[k],
        after = best.parameters[k] }
    end
  end
  if best.system_prompt ~= base.system_prompt then
    changes[#changes + 1] = { name = "system_prompt", before = #(base.system_prompt or "") .. " characters",
      after = #(best.system_prompt or "") .. " characters" }
  end
  return changes
end

--- Saves the winner as a new version of the agent (the note says what
-- changed and by how much); -> the new version
local function save(client, agent, report, base, best)
  local parts = {}
  for _, c in ipairs(report.changes) do parts[#parts + 1] = c.name .. " " .. tostring(c.before) .. "→" .. tostring(c.after) end
  local note = string.format("optimize self-opt %s: %s; median %.0f→%.0f %s", report.target, table.concat(parts, ", "),
    report.baseline.median, report.final.median, report.baseline.unit)
  local path = require("aitbc.api").path("/v1/agents/{agent_id}", { agent_id = agent.agent_id })
  return client:call("PATCH", path, { json = { parameters = best.parameters,
    model = best.model ~= base.model and best.model or nil,
    system_prompt = best.system_prompt ~= base.system_prompt and best.system_prompt or nil,
    note = note:sub(1, 200), expected_version = agent.current_version or agent.version }, expect = { version = "integer" } })
    .version
end

--- Runs the optimisation.  opts: {client, agent (its view), target, runs,
-- probes, guard, max_trials, seed, save (false: report only),
-- on_progress = function(text)}.  -> report | nil, why
function M.run(opts)
  local client, agent, target = opts.client, opts.agent, opts.target
  local def = agent.definition
  local say = opts.on_progress or function() end
  local report = { agent_id = agent.agent_id, target = target, version_before = agent.current_version or agent.version,
    trials = json.array() }
  local probes, source = probe_set(client, agent, target, opts.probes, opts.seed or 1)
  report.probe_set = { source = source, probes = #probes, runs_per_probe = opts.runs }
  local base = { model = def.models.text, parameters = copy(def.parameters), system_prompt = def.system_prompt }
  say(string.format("probe set: %s; %d run(s) each, after a warm-up", source, opts.runs))
  local baseline, why = measure(client, agent, base, probes, opts, report)
  if not baseline then return nil, "the baseline could not be measured: " .. why end
  report.baseline = baseline
  say(string.format("baseline: median %.1f %s (IQR %.1f–%.1f)%s", baseline.median, baseline.unit, baseline.p25,
    baseline.p75, baseline.accuracy and string.format(", accuracy %.0f %%", baseline.accuracy * 100) or ""))
  local best, best_m = copy(base), baseline
  local models = {}
  local ok, listed = pcall(client.call, client, "GET", "/v1/optimize/models", { expect = { items = "array" } })
  for _, m in ipairs(ok and listed.items or {}) do models[#models + 1] = m.name end
  local jobs = baseline.jobs
  for i, cand in ipairs(candidates(base, models, def.models.text)) do
    if i > opts.max_trials then
      report.stopped = string.format("stopped after %d trials (--max-trials)", opts.max_trials)
      break
    end
    local config = copy(best)
    cand.apply(config)
    local trial = { knob = cand.knob, value = cand.value, from = describe(cand.knob, best) }
    local m, err = measure(client, agent, config, probes, opts, report)
    if m then
      jobs = jobs + m.jobs
      if judge(trial, baseline, best_m, m, opts) then best, best_m = config, m end
    else
      trial.outcome, trial.why = "failed", err
    end
    report.trials[#report.trials + 1] = trial
    say(string.format("trial %d: %s = %s: %s (%s)", i, trial.knob, tostring(trial.value), trial.outcome, trial.why or ""))
  end
  report.jobs = jobs
  report.final = best_m
  local changes = changes_of(base, best)
  report.changes = changes
  if target == "accuracy" then
    report.improvement = { accuracy_before = baseline.accuracy, accuracy_after = best_m.accuracy }
  end
  report.improvement = report.improvement or {}
  report.improvement.median_before, report.improvement.median_after = baseline.median, best_m.median
  report.improvement.unit = baseline.unit
  report.improvement.percent = baseline.median > 0 and (baseline.median - best_m.median) / baseline.median * 100 or 0
  if #changes > 0 and opts.save ~= false then report.version_after = save(client, agent, report, base, best) end
  return report
end

return M
