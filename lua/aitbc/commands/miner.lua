--- aitbc miner: offer a GPU to the network and run its jobs through Ollama.
local errors = require "aitbc.errors"
local json = require "aitbc.json"

local function mining() return require "aitbc.mining" end

-- The JSON fields of the node's miner view (--json FIELDS; aitbc.cli.registry).
local MINER_FIELDS = { "miner_id", "status", "capabilities", "concurrency", "region", "price_per_hour", "payout_address",
  "registered_at", "last_seen", "jobs_completed", "jobs_failed", "inflight" }
local REGISTER_FIELDS = { "miner_status", "session_token", "created", "gpu_note", "model_note", table.unpack(MINER_FIELDS) }

local miner_id = { "--miner-id", metavar = "ID", help = "which miner (default: the one this CLI registered)" }

local function render_job(d, out)
  out:success("job " .. d.job_id .. " assigned to this miner (now processing)")
  local p = type(d.payload) == "table" and d.payload or {}
  out:print(out:format_record({ job_id = d.job_id, type = p.type or "-", model = d.model or p.model or "-",
    prompt = p.prompt, payload = json.encode(d.payload), expires = d.expires_at },
    { { "job_id", "job id" }, "type", "model", "prompt", "payload", "expires" }))
end

return {
  name = "miner",
  category = "Workflows",
  summary = "Register GPUs with the network, take jobs and run them on Ollama",
  commands = {
    {
      name = "register",
      summary = "Register this machine's GPUs (given or detected) and Ollama models with the node",
      id_field = "miner_id", fields = REGISTER_FIELDS,
      options = {
        { "--gpus", metavar = "LIST", help = "e.g. \"1x RTX 4090\" or \"2x A100 80GB\" (default: detected via NVML)" },
        { "--price-per-hour", metavar = "AITBC", help = "hourly price in AITBC, e.g. 0.5" },
        { "--models", metavar = "LIST", help = "comma-separated models (default: those installed in Ollama)" },
        { "--ollama-url", metavar = "URL", help = "Ollama to read models from (default: the ollama_url setting)" },
        { "--region", metavar = "NAME", help = "region label" },
        { "--concurrency", type = "integer", min = 1, max = 64, default = 1, help = "jobs at once" },
        { "--payout-address", metavar = "ADDRESS", help = "where job payments go (default: your active wallet)" },
        miner_id,
      },
      examples = { [[aitbc miner register --gpus "1x RTX 4090" --price-per-hour 0.5]] },
      run = function(ctx)
        local m = mining()
        local o = ctx.opts
        local gpus, note
        if o.gpus then
          gpus, note = m.parse_gpus(o.gpus)
          if not gpus then errors.raise("usage", "--gpus: " .. note) end
        else
          gpus, note = m.detect_gpus()
        end
        if o.price_per_hour then require("aitbc.money").from_option(o.price_per_hour, "--price-per-hour", true) end
        local models, model_note = {}, nil
        if o.models then
          for name in o.models:gmatch("[^,%s]+") do models[#models + 1] = name end
        else
          local list, err = require("aitbc.ollama").new(o.ollama_url or ctx.settings.ollama_url):models()
          if list then for _, x in ipairs(list) do models[#models + 1] = x.name end
          else model_note = err.message .. ": registered without a model list (any model's jobs may come)" end
        end
        local data = m.register(ctx, { miner_id = o.miner_id, gpus = gpus, models = models,
          price_per_hour = o.price_per_hour, region = o.region, concurrency = o.concurrency, payout_address = o.payout_address })
        data.gpu_note = #gpus == 0 and note or nil
        data.model_note = model_note
        return data, function(d, out)
          out:success("registered miner " .. d.miner_id)
          local caps = d.capabilities or {}
          out:print(out:format_record({ miner_id = d.miner_id, gpus = m.describe(caps.gpus or {}),
            models = #(caps.models or {}) > 0 and table.concat(caps.models, ", ") or "any",
            price = d.price_per_hour and (d.price_per_hour .. " AITBC/hour") or "-", concurrency = d.concurrency,
            status = d.miner_status, payout = d.payout_address },
            { { "miner_id", "miner_id" }, "gpus", "models", { "price", "price" }, "concurrency", "status",
              { "payout", "payments to" } }))
          if not d.payout_address then
            out:warn("no payout address (no --payout-address and no wallet): paid jobs will be refunded to their clients")
          end
          if d.gpu_note then out:warn("no GPU detected (" .. d.gpu_note .. "); pass --gpus to declare yours") end
          if d.model_note then out:warn(d.model_note) end
        end
      end,
    },
    {
      name = "poll",
      summary = "Take one job that fits this miner, if there is one (it becomes processing)",
      id_field = "job_id", fields = { "job_id", "payload", "model", "constraints", "requested_at", "expires_at", "attempt",
        "run_timeout_seconds", "lease_expires_at", "job", "message" },
      options = { { "--wait", type = "number", min = 0, max = 30, default = 0, metavar = "SECONDS",
                    help = "wait this long for a job" },
                  miner_id },
      examples = { "aitbc miner poll", "aitbc miner poll --wait 10" },
      run = function(ctx)
        local client = mining().client(ctx, ctx.opts.miner_id)
        local job, res = client:call("POST", "/v1/miners/poll", { json = { max_wait_seconds = ctx.opts.wait },
          timeout = ctx.opts.wait + 30, expect = mining().JOB })
        if res.status == 204 and res.headers["x-poll-reason"] == "at_capacity" then
          -- full: the node would give this miner nothing, queued jobs or not
          local held = client:call("GET", "/v1/miners/jobs", { expect = { items = { "array", mining().JOB } } }).items
          local ids = json.array()
          for i, j in ipairs(held) do ids[i] = j.job_id end
          local concurrency = math.tointeger(tonumber(res.headers["x-miner-concurrency"])) or #ids
          return { job = json.null, reason = "at_capacity", jobs_in_hand = ids, concurrency = concurrency,
            model = held[1] and held[1].model or nil,
            message = string.format("this miner is full: %d of %d job(s) in hand", #ids, concurrency) }, function(d, out)
            out:print(d.message .. " (" .. table.concat(d.jobs_in_hand, ", ") .. "); it takes no new job until one is "
              .. "answered")
            out:print("run them: aitbc miner mine-ollama --model " .. (d.model or "MODEL") .. " --jobs " .. #d.jobs_in_hand
              .. "   ·   or register with a higher --concurrency")
          end
        end
        if res.status == 204 then
          return { job = json.null, reason = "no_jobs", message = "no jobs in queue" },
            function(_, out) out:print("no jobs in queue") end
        end
        return job, render_job
      end,
    },
    {
      name = "mine-ollama",
      summary = "Mine: poll, run each job on Ollama, submit the result, repeat",
      fields = { "miner_id", "jobs_completed", "jobs_failed", "model", "ollama", "simulated" },
      description = "Logs one line per step. Without --continuous it stops after --jobs jobs (default 1). "
        .. "It declares the models its Ollama has, and updates that when they change, so it gets only jobs it can "
        .. "run. Ctrl-C or SIGTERM lets the job in hand finish, then stops (exit 130, or 143 for SIGTERM); a second "
        .. "Ctrl-C stops at once.",
      options = {
        { "--model", metavar = "MODEL", required = true, help = "default model (a job may name another installed one)" },
        { "--continuous", type = "boolean", help = "run until stopped" },
        { "--jobs", type = "integer", min = 1, metavar = "N", help = "stop after N jobs (default 1 without --continuous)" },
        { "--ollama-url", metavar = "URL", help = "Ollama's URL (default: the ollama_url setting: OLLAMA_HOST, config file, "
          .. "http://127.0.0.1:11434)" },
        { "--gpus", metavar = "LIST", help = "GPUs to register with, if not registered yet" },
        { "--price-per-hour", metavar = "AITBC", help = "price to register with, if not registered yet" },
        { "--poll-wait", type = "number", min = 1, max = 30, default = 10, metavar = "SECONDS", help = "long-poll time" },
        { "--heartbeat-interval", type = "number", min = 1, max = 600, default = 10, metavar = "SECONDS",
          help = "how often to tell the node this miner is alive" },
        { "--stream", type = "boolean", help = "print the generated tokens (stderr) as they come" },
        { "--allow-custom-workflows", type = "boolean",
          help = "also run agents whose workflow is their own Lua (in the sandbox: memory, instruction and time limits)" },
        miner_id,
      },
      examples = { "aitbc miner mine-ollama --model llama3 --continuous", "aitbc miner mine-ollama --model llama3 --jobs 5" },
      run = function(ctx)
        local o = ctx.opts
        local m = mining()
        local gpus
        if o.gpus then
          gpus = m.parse_gpus(o.gpus)
          if not gpus then errors.raise("usage", "--gpus: cannot read '" .. o.gpus .. "'") end
        end
        if o.price_per_hour then require("aitbc.money").from_option(o.price_per_hour, "--price-per-hour", true) end
        local stream = ctx.out.format == "table" and io.stdout or io.stderr
        local worker = require "aitbc.mining.worker"
        local summary = worker.run(ctx, { model = o.model, ollama_url = o.ollama_url or ctx.settings.ollama_url,
          miner_id = o.miner_id, gpus = gpus,
          price_per_hour = o.price_per_hour, jobs = not o.continuous and (o.jobs or 1) or nil, poll_wait = o.poll_wait,
          heartbeat_interval = o.heartbeat_interval, stream_tokens = o.stream,
          allow_custom_workflows = o.allow_custom_workflows },
          function(line) stream:write(os.date("%Y-%m-%d %H:%M:%S"), "  ", line, "\n") stream:flush() end)
        local signal = require("aitbc.sys").interrupted()
        if signal then ctx.exit_code = errors.signal_exit(signal) end -- stopped, after finishing the job in hand
        return summary, function(d, out)
          out:print(string.format("done: %d job(s) completed, %d failed", d.jobs_completed, d.jobs_failed))
        end
      end,
    },
    {
      name = "heartbeat",
      summary = "Tell the node this miner is alive",
      options = { miner_id,
        { "--every", type = "number", min = 1, metavar = "SECONDS", help = "keep sending, this often" },
        { "--parent", type = "integer", metavar = "PID", help = "with --every: stop when this process is gone" } },
      run = function(ctx)
        local client = mining().client(ctx, ctx.opts.miner_id)
        local sys = require "aitbc.sys"
        if not ctx.opts.every then
          local r = client:call("POST", "/v1/miners/heartbeat", { json = mining().heartbeat_body(),
            expect = { miner_id = "string" } })
          return r, function(d, out) out:success("heartbeat sent for miner " .. d.miner_id) end
        end
        sys.on_interrupt("flag")
        while not sys.interrupted() do
          if ctx.opts.parent and not sys.kill(ctx.opts.parent, 0) then break end
          client:request("POST", "/v1/miners/heartbeat", { json = mining().heartbeat_body() })
          local until_next = sys.monotonic() + ctx.opts.every
          while sys.monotonic() < until_next and not sys.interrupted() do sys.sleep(0.2) end
        end
        if sys.interrupted() then ctx.exit_code = errors.signal_exit(sys.interrupted()) end
      end,
    },
    {
      name = "status",
      summary = "This miner as the node sees it",
      fields = MINER_FIELDS, watch = true,
      options = { miner_id },
      run = function(ctx)
        local me = mining().client(ctx, ctx.opts.miner_id):call("GET", "/v1/miners/me", { expect = mining().MINER })
        return me, function(d, out)
          local caps = d.capabilities or {}
          out:print(out:format_record({ miner_id = d.miner_id, status = d.status, gpus = mining().describe(caps.gpus or {}),
            models = #(caps.models or {}) > 0 and table.concat(caps.models, ", ") or "any",
            price = d.price_per_hour and (d.price_per_hour .. " AITBC/hour"), jobs_completed = d.jobs_completed,
            jobs_failed = d.jobs_failed, inflight = d.inflight, last_seen = d.last_seen },
            { "miner_id", "status", "gpus", "models", "price", { "inflight", "jobs in hand" }, { "jobs_completed", "completed" },
              { "jobs_failed", "failed" }, { "last_seen", "last seen" } }))
        end
      end,
    },
    {
      name = "gpus",
      summary = "NVIDIA GPUs on this machine (NVML)",
      list = "gpus", fields = { "index", "name", "memory_gb", "used_gb", "utilization", "temperature_c", "power_w", "uuid" },
      run = function()
        local list, note = require("aitbc.native.gpu").list()
        local rows = json.array()
        for _, g in ipairs(list) do
          rows[#rows + 1] = { index = g.index, name = g.name,
            memory_gb = g.memory_total and string.format("%.1f", g.memory_total / 2 ^ 30),
            used_gb = g.memory_used and string.format("%.1f", g.memory_used / 2 ^ 30), utilization = g.utilization_gpu,
            temperature_c = g.temperature_c, power_w = g.power_w, uuid = g.uuid }
        end
        return { gpus = rows, note = note }, function(d, out)
          if #d.gpus == 0 then out:print("no NVIDIA GPU found: " .. tostring(d.note)) return end
          out:print(out:format_table(d.gpus, { "index", "name", { "memory_gb", "memory GB" }, { "used_gb", "used GB" },
            { "utilization", "util %" }, { "temperature_c", "temp °C" }, { "power_w", "power W" } }))
          out:print(out:style(d.note, "dim"))
        end
      end,
    },
  },
}
