--- The mine-ollama loop: poll -> job received -> inference on Ollama ->
-- result (or failure) -> waiting, with a heart-beat companion process that
-- keeps the miner alive on the node while a long inference blocks this one.
local api = require "aitbc.api"
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

--- The miner the node knows as `client.miner_id`, registered first if the
-- node does not know it (with the detected or given GPUs and Ollama's models).
local function ensure_registered(ctx, client, ollama, opts, log)
  local me, err
  if client.miner_id then me, err = client:request("GET", "/v1/miners/me", { expect = { status = "string" } }) end
  if err and err.code == "bad_reply" then error(err, 0) end
  if me then
    log("miner " .. client.miner_id .. " (" .. me.status .. ")")
    return
  end
  local gpus = opts.gpus or mining.detect_gpus()
  local models = {}
  for _, m in ipairs(assert(ollama:models())) do models[#models + 1] = m.name end
  local reg = mining.register(ctx, { miner_id = client.miner_id, gpus = gpus, models = models,
    price_per_hour = opts.price_per_hour })
  client.miner_id = reg.miner_id
  log(string.format("registered as miner %s (%s; models %s)", reg.miner_id, mining.describe(gpus), table.concat(models, ", ")))
end

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
    log("no jobs in queue; waiting")
    return nil
  end
  return job
end

--- The installed model a job names, or the default one.
local function model_for(ollama, job, default)
  if not job.model or job.model == "" then return default end
  local m = ollama:find_model(job.model)
  return m and m.name or job.model
end

--- Runs the job's inference: Ollama's final answer | nil, {message}; and the seconds it took.
local function infer(ollama, job, model, opts, log)
  local ask, why = inference_of(job.payload)
  local prompt = ask and ask.prompt or ""
  log(string.format("job %s received: %s, %q", job.job_id, job.model or opts.model,
    #prompt > 60 and (prompt:sub(1, 57) .. "...") or prompt))
  if not ask then return nil, { message = "the job's payload cannot be run: " .. why }, 0 end
  local use = model_for(ollama, job, model.name)
  local started = sys.monotonic()
  log("running inference on " .. use .. " ...")
  local final, err = ollama:generate { model = use, prompt = ask.prompt, system = ask.system, images = ask.images,
    options = ask.options, ignore_interrupt = true,
    on_token = opts.stream_tokens and function(t) io.stderr:write(t) end or nil }
  if opts.stream_tokens then io.stderr:write("\n") end
  return final, err, sys.monotonic() - started
end

--- A refusal meaning the job is no longer this miner's (canceled, expired
-- or re-queued while it ran): not ours to answer any more.
local function not_ours(err) return err.code == "not_assigned" or err.kind == "not_found" end

--- Submits a result; "done", or "dropped" when the job is no longer ours.
local function submit(client, job, final, elapsed, log)
  log(string.format("inference done: %d tokens in %.2f s (%.1f tokens/s)", final.eval_count or 0, elapsed,
    final.tokens_per_second or 0))
  local submitted, err = client:request("POST", api.path("/v1/miners/{job_id}/result", { job_id = job.job_id }),
    { ignore_interrupt = true, expect = { receipt = { receipt_id = "scalar" } }, json = {
    result = { response = final.response, model = final.model, provider = "ollama", eval_count = final.eval_count },
    metrics = { duration_ms = math.floor(elapsed * 1000), eval_count = final.eval_count,
      eval_duration = final.eval_duration, total_duration = final.total_duration,
      prompt_eval_count = final.prompt_eval_count, tokens_per_second = final.tokens_per_second },
  } })
  if submitted then
    log("result submitted; receipt " .. submitted.receipt.receipt_id)
    return "done"
  end
  if not not_ours(err) then error(err, 0) end
  log("job " .. job.job_id .. " is no longer this miner's (" .. err.message .. "); result dropped")
  return "dropped"
end

--- Reports a failed inference to the node; "failed".
local function report_failure(client, job, ierr, elapsed, log)
  local reported, err = client:request("POST", api.path("/v1/miners/{job_id}/fail", { job_id = job.job_id }),
    { ignore_interrupt = true, json = {
    error_code = "INFERENCE_FAILED", error_message = ierr.message,
    metrics = { duration_ms = math.floor(elapsed * 1000) } } })
  if not reported and not not_ours(err) then error(err, 0) end
  log("inference failed: " .. ierr.message .. (reported and "; reported to the node" or "; the job is no longer ours"))
  return "failed"
end

--- Polls and runs jobs until `opts.jobs` are done or failed (nil: forever)
-- or a signal arrives; counts {done, failed}.
local function work(client, ollama, model, opts, log, counts)
  -- jobs this miner already holds (taken by `aitbc miner poll`) come first
  local in_hand = client:call("GET", "/v1/miners/jobs", { expect = { items = { "array", mining.JOB } } }).items
  if #in_hand > 0 then log(#in_hand .. " job(s) already in hand; running them first") end
  while not sys.interrupted() and (not opts.jobs or counts.done + counts.failed < opts.jobs) do
    local job = next_job(client, in_hand, opts, log)
    if job then
      local final, ierr, elapsed = infer(ollama, job, model, opts, log)
      local outcome = final and submit(client, job, final, elapsed, log) or report_failure(client, job, ierr, elapsed, log)
      if counts[outcome] then counts[outcome] = counts[outcome] + 1 end
    elseif sys.interrupted() then
      break
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
  ensure_registered(ctx, client, ollama, opts, log)
  local beats = start_heartbeats(ctx, client.miner_id, opts.heartbeat_interval)
  sys.on_interrupt("flag")
  local counts = { done = 0, failed = 0 }
  local ok, err = pcall(work, client, ollama, model, opts, log, counts)
  if beats then beats:kill(15) beats:wait() end
  if not ok then error(err, 0) end
  log(sys.interrupted() and "stopping (signal); no job in hand" or "stopping")
  return { miner_id = client.miner_id, jobs_completed = counts.done, jobs_failed = counts.failed, model = model.name,
    ollama = ollama.url, simulated = simulated }
end

return worker
