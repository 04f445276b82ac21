--- The mine-ollama loop: poll -> job received -> inference on Ollama ->
-- result (or failure) -> waiting, with a heart-beat companion process that
-- keeps the miner alive on the node while a long inference blocks this one.
-- The miner declares the models its Ollama has, and keeps that declaration
-- current (re-registering when a model is pulled or removed), so the node
-- gives it only jobs it can run; a job for a model Ollama lacks all the same
-- goes back to the queue (UNSUPPORTED_MODEL), not to FAILED.
local api = require "aitbc.api"
local events = require "aitbc.mining.events"
local mining = require "aitbc.mining"
local sys = require "aitbc.sys"

local worker = {}

--- The heart-beat companion: a child process that exits with this one.
local function start_heartbeats(ctx, miner_id, interval)
  local argv = { sys.exe_path(), "--url", ctx.settings.url, "miner", "heartbeat", "--miner-id", miner_id,
    "--every", tostring(interval), "--parent", tostring(sys.getpid()) }
  local key = require("aitbc.auth.keys").resolve(ctx, "miner")
  return sys.spawn { argv = argv, env = { AITBC_MINER_KEY = key, AITBC_API_KEY = false }, stdin = "null",
    stdout = "null", stderr = "null" }
end

--- What a job asks of Ollama | nil, why (a payload may hold anything).
local function inference_of(payload)
  if type(payload) ~= "table" then payload = {} end
  local prompt = payload.prompt or payload.text or ""
  if type(prompt) ~= "string" then return nil, "payload.prompt is not text" end
  if payload.system ~= nil and type(payload.system) ~= "string" then return nil, "payload.system is not text" end
  if payload.images ~= nil and type(payload.images) ~= "table" then return nil, "payload.images is not a list" end
  local images = {}
  for i, img in ipairs(payload.images or {}) do
    if type(img) ~= "string" then return nil, "payload.images[" .. i .. "] is not base64 text" end
    images[i] = require("aitbc.crypto").unbase64(img) or img
  end
  return { prompt = prompt, system = payload.system, images = #images > 0 and images or nil,
    options = type(payload.options) == "table" and payload.options or nil }
end

-- ---- the models this miner declares ----

--- A model's queue name: lower case, without ":latest" (as the node matches them).
local function model_key(name) return (tostring(name):lower():gsub(":latest$", "")) end

--- Ollama's installed models: names, sorted | nil, err.
local function installed_models(ollama)
  local list, err = ollama:models()
  if not list then return nil, err end
  local names = {}
  for _, m in ipairs(list) do names[#names + 1] = m.name end
  table.sort(names)
  return names
end

local function same_models(a, b)
  local in_a, in_b = {}, {}
  for _, m in ipairs(a or {}) do in_a[model_key(m)] = true end
  for _, m in ipairs(b or {}) do in_b[model_key(m)] = true end
  for k in pairs(in_a) do if not in_b[k] then return false end end
  for k in pairs(in_b) do if not in_a[k] then return false end end
  return true
end

local function list_text(models) return #models > 0 and table.concat(models, ", ") or "any" end

--- What each model can do, as Ollama says (/api/show's capabilities):
-- completion, tools, vision...; a model it says nothing about is left out
-- (the node then assumes it able).
local function capabilities_of(ollama, models)
  local out
  for _, name in ipairs(models) do
    local info = ollama:show(name)
    if info and type(info.capabilities) == "table" then
      out = out or {}
      out[name] = require("aitbc.json").array(info.capabilities)
    end
  end
  return out
end

--- Registers this miner with these models, or updates its registration
-- when the models it declared differ (all else it declared stays, unless
-- --gpus or --price-per-hour say otherwise).  Returns the models.
local function declare(ctx, client, models, opts, log)
  local me, err
  if client.miner_id then me, err = client:request("GET", "/v1/miners/me", { expect = mining.MINER }) end
  if not me and err and err.kind ~= "not_found" then error(err, 0) end
  local model_caps = capabilities_of(opts.ollama, models)
  if me then
    local caps = me.capabilities or {}
    if same_models(caps.models, models) and not opts.gpus and not opts.price_per_hour
      and (caps.model_capabilities ~= nil or model_caps == nil)
      and (caps.allow_custom_workflows or false) == (opts.allow_custom_workflows or false) then
      log("miner " .. client.miner_id .. " (" .. tostring(me.status) .. "; models " .. list_text(models) .. ")")
      return models
    end
    mining.register(ctx, { miner_id = me.miner_id, gpus = opts.gpus or caps.gpus or {}, models = models,
      price_per_hour = opts.price_per_hour or me.price_per_hour, region = me.region, concurrency = me.concurrency,
      payout_address = me.payout_address, model_capabilities = model_caps,
      allow_custom_workflows = opts.allow_custom_workflows })
    if not same_models(caps.models, models) then
      log(string.format("miner %s now declares models %s (was: %s)", me.miner_id, list_text(models),
        list_text(caps.models or {})))
    end
    return models
  end
  local gpus = opts.gpus or mining.detect_gpus()
  local reg = mining.register(ctx, { miner_id = client.miner_id, gpus = gpus, models = models,
    price_per_hour = opts.price_per_hour, model_capabilities = model_caps,
    allow_custom_workflows = opts.allow_custom_workflows })
  client.miner_id = reg.miner_id
  log(string.format("registered as miner %s (%s; models %s)", reg.miner_id, mining.describe(gpus), list_text(models)))
  return models
end

--- Keeps the declared models equal to Ollama's: re-registers when they
-- changed.  Ollama not answering leaves the declaration as it is (the next
-- inference says why it fails).
local function keep_declared(ctx, client, ollama, state, log)
  local models, err = installed_models(ollama)
  if not models then
    if not state.ollama_down then log("cannot read Ollama's models (" .. err.message .. "); declared models kept") end
    state.ollama_down = true
    return
  end
  state.ollama_down = nil
  if same_models(models, state.declared) then return end
  log("Ollama's models changed: " .. list_text(models))
  state.declared = declare(ctx, client, models, { ollama = ollama, allow_custom_workflows = state.allow_custom }, log)
end

-- ---- one job ----

--- The next job: one already in hand, else what a long poll brings (nil
-- when the queue stays empty, or when a signal cut the poll short).
local function next_job(client, in_hand, opts, log)
  if #in_hand > 0 then return table.remove(in_hand, 1) end
  log("polling for jobs...")
  local job, res = client:request("POST", "/v1/miners/poll", { json = { max_wait_seconds = opts.poll_wait },
    timeout = opts.poll_wait + 30, expect = mining.JOB })
  if job == nil then
    if sys.interrupted() then return nil end
    error(res, 0)
  end
  if res.status == 204 then
    if res.headers["x-poll-reason"] == "at_capacity" then
      log(string.format("this miner is full: %s of %s job(s) in hand (taken elsewhere); waiting for a slot",
        res.headers["x-miner-inflight"] or "?", res.headers["x-miner-concurrency"] or "?"))
    else
      log("no jobs in queue; waiting")
    end
    return nil
  end
  return job
end

--- The declared model a job names (or the default one), spelled as Ollama
-- lists it; nil when it is not among them.
local function model_for(installed, job, default)
  local want = model_key(job.model and job.model ~= "" and job.model or default)
  for _, name in ipairs(installed) do
    if model_key(name) == want then return name end
  end
end

--- Runs the job's inference on `use` (an installed model): Ollama's final
-- answer | nil, {message}; and the seconds it took.
local function infer(ollama, job, use, opts, log, poster)
  local ask, why = inference_of(job.payload)
  if not ask then return nil, { message = "the job's payload cannot be run: " .. why }, 0 end
  local started = sys.monotonic()
  log("running inference on " .. use .. " ...")
  local final, err = ollama:generate { model = use, prompt = ask.prompt, system = ask.system, images = ask.images,
    options = ask.options, ignore_interrupt = true,
    on_token = function(t)
      if opts.stream_tokens then io.stderr:write(t) end
      poster.emit("token", { text = t }) -- the client following the job sees them live
    end }
  poster.flush()
  if opts.stream_tokens then io.stderr:write("\n") end
  return final, err, sys.monotonic() - started
end

--- A refusal meaning the job is no longer this miner's (canceled, expired
-- or re-queued while it ran): not ours to answer any more.
local function not_ours(err) return err.code == "not_assigned" or err.kind == "not_found" end

--- Submits a result and its metrics; "done", or "dropped" when the job is
-- no longer ours.
local function post_result(client, job, result, metrics, log)
  local submitted, err = client:request("POST", api.path("/v1/miners/{job_id}/result", { job_id = job.job_id }),
    { ignore_interrupt = true, expect = { receipt = { receipt_id = "scalar" } },
      json = { result = result, metrics = metrics } })
  if submitted then
    log("result submitted; receipt " .. submitted.receipt.receipt_id)
    return "done"
  end
  if not not_ours(err) then error(err, 0) end
  log("job " .. job.job_id .. " is no longer this miner's (" .. err.message .. "); result dropped")
  return "dropped"
end

--- An inference's result: the text, and Ollama's own figures.
local function submit(client, job, final, elapsed, log, simulated)
  log(string.format("inference done: %d tokens in %.2f s (%.1f tokens/s)", final.eval_count or 0, elapsed,
    final.tokens_per_second or 0))
  return post_result(client, job,
    { response = final.response, model = final.model, provider = "ollama", eval_count = final.eval_count },
    { duration_ms = math.floor(elapsed * 1000), eval_count = final.eval_count, eval_duration = final.eval_duration,
      total_duration = final.total_duration, load_duration = final.load_duration,
      prompt_eval_count = final.prompt_eval_count, prompt_eval_duration = final.prompt_eval_duration,
      tokens_per_second = final.tokens_per_second, simulated = simulated or nil }, log)
end

--- Reports a failed inference to the node; "failed".
local function report_failure(client, job, ierr, elapsed, log, code)
  local reported, err = client:request("POST", api.path("/v1/miners/{job_id}/fail", { job_id = job.job_id }),
    { ignore_interrupt = true, json = {
    error_code = code or "INFERENCE_FAILED", error_message = ierr.message,
    metrics = { duration_ms = math.floor(elapsed * 1000) } } })
  if not reported and not not_ours(err) then error(err, 0) end
  log("inference failed: " .. ierr.message .. (reported and "; reported to the node" or "; the job is no longer ours"))
  return "failed"
end

--- Hands a job whose model Ollama lacks back to the node, which re-queues
-- it for another miner without counting the attempt; "returned".
local function hand_back(client, job, model, ollama, log)
  local reported, err = client:request("POST", api.path("/v1/miners/{job_id}/fail", { job_id = job.job_id }),
    { ignore_interrupt = true, json = { error_code = "UNSUPPORTED_MODEL",
      error_message = "Ollama at " .. ollama.url .. " has no model " .. model } })
  if not reported and not not_ours(err) then error(err, 0) end
  log(string.format("job %s needs model %s, which Ollama here does not have: %s", job.job_id, model,
    reported and "handed back to the queue" or "the job is no longer ours"))
  return "returned"
end

--- An agent's job (or a multimodal one): its workflow runs here beside
-- Ollama (lua/aitbc/agents/runner.lua), every step posted as an event; the
-- result is the answer with its steps and usage.
local function run_agent(ctx, client, ollama, state, job, opts, log, poster)
  local agent = type(job.payload) == "table" and job.payload.agent
  if type(agent) ~= "table" or type(agent.definition) ~= "table" then
    return report_failure(client, job, { message = "the job carries no agent definition" }, 0, log, "BAD_PAYLOAD")
  end
  log(string.format("job %s received: %s of agent %s (%s, %s)", job.job_id, job.type, agent.agent_id,
    agent.definition.type, job.model))
  local started = sys.monotonic()
  local result, err = require("aitbc.agents.runner").run { payload = job.payload, ollama = ollama,
    node = api.new { url = ctx.settings.url, timeout = 10 }, emit = poster.emit, stream_tokens = true }
  poster.flush()
  local elapsed = sys.monotonic() - started
  if not result then
    if tostring(err):find("not found, try pulling it", 1, true) then
      keep_declared(ctx, client, ollama, state, log)
      return hand_back(client, job, job.model, ollama, log)
    end
    return report_failure(client, job, { message = tostring(err) }, elapsed, log, "AGENT_FAILED")
  end
  local usage = result.usage or {}
  log(string.format("agent done: %d step(s), %d model call(s), %d tool call(s), %.2f s%s", result.steps or 0,
    usage.model_calls or 0, usage.tool_calls or 0, elapsed, result.partial and " (best effort: a limit was reached)" or ""))
  return post_result(client, job, result, { duration_ms = math.floor(elapsed * 1000),
    eval_count = usage.completion_tokens, prompt_eval_count = usage.prompt_tokens, eval_duration = usage.eval_duration,
    prompt_eval_duration = usage.prompt_eval_duration, load_duration = usage.load_duration,
    steps = result.steps, model_calls = usage.model_calls, tool_calls = usage.tool_calls,
    simulated = opts.simulated or nil }, log)
end

--- Sleeps up to seconds, waking early on a signal.
local function pause(seconds)
  local till = sys.monotonic() + seconds
  while sys.monotonic() < till and not sys.interrupted() do sys.sleep(0.2) end
end

--- Runs one job: "done", "failed", "dropped" or "returned" (Ollama has
-- not the job's model: the declaration is brought up to date, then the
-- job handed back).
local function run_job(ctx, client, ollama, state, job, opts, log)
  local poster = events.poster(client, job.job_id, log)
  if job.type == "agent" or job.type == "multimodal" then
    return run_agent(ctx, client, ollama, state, job, opts, log, poster)
  end
  local prompt = type(job.payload) == "table" and type(job.payload.prompt) == "string" and job.payload.prompt or ""
  log(string.format("job %s received: %s, %q", job.job_id, job.model or opts.model,
    #prompt > 60 and (prompt:sub(1, 57) .. "...") or prompt))
  local wanted = job.model and job.model ~= "" and job.model or opts.model
  local final, ierr, elapsed = infer(ollama, job, model_for(state.declared, job, opts.model) or wanted, opts, log, poster)
  if final then return submit(client, job, final, elapsed, log, opts.simulated) end
  if ierr.code == "model_not_found" then
    keep_declared(ctx, client, ollama, state, log)
    return hand_back(client, job, wanted, ollama, log)
  end
  return report_failure(client, job, ierr, elapsed, log)
end

--- Polls and runs jobs until `opts.jobs` are done or failed (nil: forever)
-- or a signal arrives; counts {done, failed}.  Before each poll the
-- declared models are brought in line with Ollama's.
local function work(ctx, client, ollama, state, opts, log, counts)
  -- jobs this miner already holds (taken by `aitbc miner poll`) come first
  local in_hand = client:call("GET", "/v1/miners/jobs", { expect = { items = { "array", mining.JOB } } }).items
  if #in_hand > 0 then log(#in_hand .. " job(s) already in hand; running them first") end
  while not sys.interrupted() and (not opts.jobs or counts.done + counts.failed < opts.jobs) do
    if #in_hand == 0 then keep_declared(ctx, client, ollama, state, log) end
    if #in_hand == 0 and #state.declared == 0 then
      -- an empty list would mean "any model": take nothing until Ollama has one
      log("Ollama has no model installed; taking no jobs until it has one (ollama pull " .. opts.model .. ")")
      pause(opts.poll_wait)
    else
      local job = next_job(client, in_hand, opts, log)
      if job then
        local outcome = run_job(ctx, client, ollama, state, job, opts, log)
        if counts[outcome] then counts[outcome] = counts[outcome] + 1 end
      elseif sys.interrupted() then
        break
      end
    end
  end
end

--- Runs jobs until `opts.jobs` are done (nil: forever) or a signal arrives;
-- the job in hand is finished first.  opts: model, ollama_url, miner_id,
-- gpus, price_per_hour, jobs, poll_wait, heartbeat_interval, stream_tokens.
-- log(line) prints one step.  Returns a summary.
function worker.run(ctx, opts, log)
  local ollama = require("aitbc.ollama").new(opts.ollama_url)
  local version, simulated = ollama:version()
  if not version then error(simulated, 0) end
  local model = assert(ollama:find_model(opts.model))
  log(string.format("Ollama %s at %s%s, model %s", version, ollama.url, simulated and " (SIMULATED)" or "", model.name))
  local client = mining.client(ctx, opts.miner_id)
  opts.ollama, opts.simulated = ollama, simulated
  local state = { declared = declare(ctx, client, assert(installed_models(ollama)), opts, log),
    allow_custom = opts.allow_custom_workflows }
  local beats = start_heartbeats(ctx, client.miner_id, opts.heartbeat_interval)
  sys.on_interrupt("flag")
  local counts = { done = 0, failed = 0 }
  local ok, err = pcall(work, ctx, client, ollama, state, opts, log, counts)
  if beats then beats:kill(15) beats:wait() end
  if not ok then error(err, 0) end
  log(sys.interrupted() and "stopping (signal); no job in hand" or "stopping")
  return { miner_id = client.miner_id, jobs_completed = counts.done, jobs_failed = counts.failed, model = model.name,
    ollama = ollama.url, simulated = simulated }
end

return worker
