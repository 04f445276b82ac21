--- The miner's side: GPU description, registration, and the mine-ollama
-- loop (poll -> job received -> inference on Ollama -> result -> waiting).
local api = require "aitbc.api"
local json = require "aitbc.json"
local sys = require "aitbc.sys"

local mining = {}

-- What the miner reads from the node's replies (aitbc.api check_reply specs).
local GPUS = { "array?", { name = "scalar", count = "integer?", memory_gb = "number?" } }
mining.MINER = { miner_id = "id", status = "string?", price_per_hour = "scalar?",
  capabilities = { "object?", { gpus = GPUS, models = { "array?", "scalar" } } } }
mining.JOB = { job_id = "id", payload = "any", model = "string?" }

--- GPU memory of well-known models, in GB (when --gpus names no size).
local KNOWN_VRAM = {
  ["rtx 4090"] = 24, ["rtx 4080"] = 16, ["rtx 4070"] = 12, ["rtx 3090"] = 24, ["rtx 3080"] = 10,
  ["a100"] = 80, ["h100"] = 80, ["h200"] = 141, ["l40s"] = 48, ["l4"] = 24, ["a10"] = 24, ["t4"] = 16,
  ["rtx a6000"] = 48, ["v100"] = 32,
}

--- "1x RTX 4090", "2x A100 80GB, 1x L4" -> {{name, count, memory_gb}} | nil, err
function mining.parse_gpus(text)
  local gpus = {}
  for part in text:gmatch("[^,;]+") do
    part = part:match("^%s*(.-)%s*$")
    local count, rest = part:match("^(%d+)%s*[xX×]%s*(.+)$")
    count, rest = tonumber(count) or 1, rest or part
    local size = tonumber(rest:match("(%d+)%s*[Gg][Bb]$"))
    local name = rest:gsub("%s*%d+%s*[Gg][Bb]$", "")
    if name == "" or count < 1 or count > 1024 then
      return nil, "cannot read '" .. part .. "': write it as COUNTx MODEL [MEMORY GB], e.g. 1x RTX 4090 or 2x A100 80GB"
    end
    if not size then
      local key = name:lower():gsub("^nvidia%s+", ""):gsub("^geforce%s+", "")
      size = KNOWN_VRAM[key]
    end
    gpus[#gpus + 1] = { name = name, count = math.tointeger(count), memory_gb = size }
  end
  if #gpus == 0 then return nil, "no GPU given" end
  return gpus
end

--- GPUs found through NVML: list, and the reason when there are none.
function mining.detect_gpus()
  local found, note = require("aitbc.native.gpu").list()
  local gpus = {}
  for _, g in ipairs(found) do
    gpus[#gpus + 1] = { name = g.name, count = 1, memory_gb = g.memory_total and math.floor(g.memory_total / 2 ^ 30 + 0.5) }
  end
  return gpus, note
end

function mining.describe(gpus)
  if #gpus == 0 then return "no GPU" end
  local parts = {}
  for _, g in ipairs(gpus) do
    parts[#parts + 1] = string.format("%dx %s%s", g.count or 1, g.name, g.memory_gb and (" (" .. g.memory_gb .. " GB)") or "")
  end
  return table.concat(parts, ", ")
end

--- The miner id this CLI registered (config file, per node URL).
function mining.saved_id(ctx)
  local miners = type(ctx.config.file.miners) == "table" and ctx.config.file.miners or {}
  return miners[ctx.settings.url]
end

function mining.save_id(ctx, miner_id)
  ctx.config.file.miners = type(ctx.config.file.miners) == "table" and ctx.config.file.miners or {}
  ctx.config.file.miners[ctx.settings.url] = miner_id
  local ok, err = require("aitbc.config").write_file(ctx.config.path, ctx.config.file)
  if not ok then error(err, 0) end
end

--- The API client with this miner's id in X-Miner-ID.
function mining.client(ctx, miner_id)
  local client = api.from_context(ctx, { role = "miner" })
  client.miner_id = miner_id or ctx.opts.miner_id or mining.saved_id(ctx)
  local request = client.request
  function client:request(method, path, opts)
    opts = opts or {}
    if self.miner_id then
      opts.headers = opts.headers or {}
      opts.headers["X-Miner-ID"] = self.miner_id
    end
    return request(self, method, path, opts)
  end
  return client
end

--- Registers (or updates) this miner; returns the node's answer.
function mining.register(ctx, spec)
  local client = mining.client(ctx, spec.miner_id)
  local data = client:call("POST", "/v1/miners/register", { json = {
    miner_id = spec.miner_id, capabilities = { gpus = json.array(spec.gpus), models = json.array(spec.models or {}) },
    price_per_hour = spec.price_per_hour, region = spec.region, concurrency = spec.concurrency,
    payout_address = spec.payout_address or require("aitbc.wallet").active_address(ctx), -- where job payments go
  }, expect = mining.MINER })
  mining.save_id(ctx, data.miner_id)
  return data
end

-- ---- mine-ollama ----

--- The heart-beat companion: a child process that keeps the miner alive on
-- the node while a long inference blocks this one, and exits with it.
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

--- Runs jobs until `jobs` are done (nil: forever) or a signal arrives;
-- the job in hand is finished first.  log(line) prints one step.
function mining.mine(ctx, opts, log)
  local ollama = require("aitbc.ollama").new(opts.ollama_url)
  local version, simulated = ollama:version()
  if not version then error(simulated, 0) end
  local model = assert(ollama:find_model(opts.model))
  log(string.format("Ollama %s at %s%s, model %s", version, ollama.url, simulated and " (SIMULATED)" or "", model.name))
  local miner_id = opts.miner_id or mining.saved_id(ctx)
  local client = mining.client(ctx, miner_id)
  local me, me_err
  if miner_id then me, me_err = client:request("GET", "/v1/miners/me", { expect = { status = "string" } }) end
  if me_err and me_err.code == "bad_reply" then error(me_err, 0) end
  if not me then
    local gpus = opts.gpus or mining.detect_gpus()
    local models = {}
    for _, m in ipairs(assert(ollama:models())) do models[#models + 1] = m.name end
    local reg = mining.register(ctx, { miner_id = miner_id, gpus = gpus, models = models, price_per_hour = opts.price_per_hour })
    miner_id = reg.miner_id
    client.miner_id = miner_id
    log(string.format("registered as miner %s (%s; models %s)", miner_id, mining.describe(gpus), table.concat(models, ", ")))
  else
    log("miner " .. miner_id .. " (" .. me.status .. ")")
  end
  local beats = start_heartbeats(ctx, miner_id, opts.heartbeat_interval)
  sys.on_interrupt("flag")
  local done, failed = 0, 0
  -- jobs this miner already holds (taken by `aitbc miner poll`) come first
  local in_hand = client:call("GET", "/v1/miners/jobs", { expect = { items = { "array", mining.JOB } } }).items
  if #in_hand > 0 then log(#in_hand .. " job(s) already in hand; running them first") end
  local ok, err = pcall(function()
    while not sys.interrupted() and (not opts.jobs or done + failed < opts.jobs) do
      local job, res
      if #in_hand > 0 then
        job, res = table.remove(in_hand, 1), { status = 200 }
      else
        log("polling for jobs...")
        job, res = client:request("POST", "/v1/miners/poll", { json = { max_wait_seconds = opts.poll_wait },
          timeout = opts.poll_wait + 30, expect = mining.JOB })
      end
      if job == nil then
        if sys.interrupted() then break end
        error(res, 0)
      end
      if res.status == 204 then
        log("no jobs in queue; waiting")
      else
        local ask, why = inference_of(job.payload)
        local prompt = ask and ask.prompt or ""
        log(string.format("job %s received: %s, %q", job.job_id, job.model or opts.model,
          #prompt > 60 and (prompt:sub(1, 57) .. "...") or prompt))
        local use = model.name
        if job.model and job.model ~= "" then
          local m = ollama:find_model(job.model)
          use = m and m.name or job.model
        end
        local started = sys.monotonic()
        local final, ierr
        if ask then
          log("running inference on " .. use .. " ...")
          final, ierr = ollama:generate { model = use, prompt = ask.prompt, system = ask.system, images = ask.images,
            options = ask.options, ignore_interrupt = true,
            on_token = opts.stream_tokens and function(t) io.stderr:write(t) end or nil }
          if opts.stream_tokens then io.stderr:write("\n") end
        else
          ierr = { message = "the job's payload cannot be run: " .. why }
        end
        local elapsed = sys.monotonic() - started
        if final then
          log(string.format("inference done: %d tokens in %.2f s (%.1f tokens/s)", final.eval_count or 0, elapsed,
            final.tokens_per_second or 0))
          local submitted, serr = client:request("POST", api.path("/v1/miners/{job_id}/result", { job_id = job.job_id }),
            { ignore_interrupt = true, expect = { receipt = { receipt_id = "scalar" } }, json = {
            result = { response = final.response, model = final.model, provider = "ollama", eval_count = final.eval_count },
            metrics = { duration_ms = math.floor(elapsed * 1000), eval_count = final.eval_count,
              eval_duration = final.eval_duration, total_duration = final.total_duration,
              prompt_eval_count = final.prompt_eval_count, tokens_per_second = final.tokens_per_second },
          } })
          if submitted then
            done = done + 1
            log("result submitted; receipt " .. submitted.receipt.receipt_id)
          elseif serr.code == "not_assigned" or serr.kind == "not_found" then
            -- canceled, expired or re-queued while it ran: not ours to answer any more
            log("job " .. job.job_id .. " is no longer this miner's (" .. serr.message .. "); result dropped")
          else
            error(serr, 0)
          end
        else
          local reported, ferr = client:request("POST", api.path("/v1/miners/{job_id}/fail", { job_id = job.job_id }),
            { ignore_interrupt = true, json = {
            error_code = "INFERENCE_FAILED", error_message = ierr.message,
            metrics = { duration_ms = math.floor(elapsed * 1000) } } })
          if not reported and ferr.code ~= "not_assigned" and ferr.kind ~= "not_found" then error(ferr, 0) end
          failed = failed + 1
          log("inference failed: " .. ierr.message .. (reported and "; reported to the node" or "; the job is no longer ours"))
        end
      end
    end
  end)
  if beats then beats:kill(15) beats:wait() end
  if not ok then error(err, 0) end
  log(sys.interrupted() and "stopping (signal); no job in hand" or "stopping")
  return { miner_id = miner_id, jobs_completed = done, jobs_failed = failed, model = model.name, ollama = ollama.url,
    simulated = simulated }
end

return mining
