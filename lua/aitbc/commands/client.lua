--- aitbc client: submit AI jobs to the network and collect their results.
local errors = require "aitbc.errors"
local json = require "aitbc.json"

local function api(ctx) return require("aitbc.api").from_context(ctx, { role = "client" }) end
local function job_path(template, id) return require("aitbc.api").path(template, { job_id = id }) end

-- What the commands read from the node's replies (aitbc.api check_reply specs).
local JOB = { job_id = "string", state = "string", assigned_miner_id = "string?",
  timings = { "object?", { queue_ms = "number?", run_ms = "number?" } }, payment_status = "string?",
  payment_amount = "scalar?" }
local RESULT = { result = "any", receipt = { "object?", { receipt_id = "scalar?", duration_ms = "number?",
  tokens = "object?" } } }

-- The JSON fields of the job view and of a result (--json FIELDS; aitbc.cli.registry).
local JOB_FIELDS = { "job_id", "type", "state", "status", "model", "assigned_miner_id", "requested_at", "expires_at",
  "started_at", "finished_at", "ttl_seconds", "attempts", "run_timeout_seconds", "lease_expires_at", "error", "payment_id",
  "payment_status", "payment_amount", "settlement_id", "timings" }
local RESULT_FIELDS = { "job_id", "state", "model", "result", "metrics", "receipt", "receipt_verified" }
local SUBMIT_FIELDS = { table.unpack(JOB_FIELDS) }
for _, f in ipairs(RESULT_FIELDS) do
  if not ({ job_id = true, state = true, model = true })[f] then SUBMIT_FIELDS[#SUBMIT_FIELDS + 1] = f end
end
local job_arg = { "job_id", help = "the job's id", complete = "job" }

local function ms(v) return v and string.format("%.1f s", v / 1000) or "-" end

local function render_status(d, out)
  out:print(out:format_record(d, {
    { "job_id", "job id" }, { "status", "status" }, { "model", "model" }, { "miner", "assigned miner" },
    { "requested_at", "requested" }, { "started_at", "started" }, { "finished_at", "finished" },
    { "queued", "time queued" }, { "ran", "time running" }, { "attempts", "attempts" }, { "error", "error" },
    { "payment", "payment" },
  }))
end

--- The job as people read it (JSON mode keeps the node's JobView).
local function human(job)
  local state = job.state
  local words = { QUEUED = "queued (pending: waiting for a miner)", RUNNING = "processing on a miner",
    COMPLETED = "completed", FAILED = "failed", CANCELED = "canceled", EXPIRED = "expired (TTL passed)" }
  return {
    job_id = job.job_id, status = words[state] or state, model = job.model,
    miner = job.assigned_miner_id ~= json.null and job.assigned_miner_id or "-",
    requested_at = job.requested_at, started_at = job.started_at, finished_at = job.finished_at,
    queued = ms(job.timings and job.timings.queue_ms), ran = ms(job.timings and job.timings.run_ms),
    attempts = job.attempts, error = job.error ~= json.null and job.error or nil,
    payment = type(job.payment_status) == "string"
      and string.format("%s AITBC, %s", job.payment_amount or "?", job.payment_status) or nil,
  }
end

local function payload_from(ctx)
  local o = ctx.opts
  local payload = {}
  if o.file then
    local text = require("aitbc.config").read_input(o.file, "--file")
    local v, jerr = json.decode(text)
    if type(v) ~= "table" then errors.raise("usage", o.file .. " is not a JSON object: " .. tostring(jerr)) end
    payload = v
  end
  if o.data then
    local v, jerr = json.decode(o.data)
    if type(v) ~= "table" or json.is_array(v) then
      errors.raise("usage", "--data must be a JSON object, e.g. '{\"prompt\":\"Hello AITBC\"}'"
        .. (jerr and (": " .. jerr) or ""))
    end
    for k, val in pairs(v) do payload[k] = val end
  end
  if o.prompt then payload.prompt = o.prompt end
  payload.type = payload.type or o.type
  payload.model = o.model or payload.model
  if payload.type == "inference" and not payload.prompt and not payload.messages then
    errors.raise("usage", "an inference job needs a prompt", "add --prompt TEXT or --data '{\"prompt\":\"...\"}'")
  end
  return payload
end

--- Polls until the job leaves QUEUED/RUNNING (or the timeout passes).
local function wait_done(ctx, client, job_id, timeout)
  local sys = require "aitbc.sys"
  local deadline = sys.monotonic() + timeout
  local last
  while true do
    local job = client:call("GET", job_path("/v1/jobs/{job_id}", job_id), { expect = JOB })
    if job.state ~= last then
      ctx.out:info("  " .. job.state:lower() .. (job.assigned_miner_id ~= json.null and job.assigned_miner_id
        and (" on " .. job.assigned_miner_id) or ""))
      last = job.state
    end
    if job.state ~= "QUEUED" and job.state ~= "RUNNING" then return job end
    if sys.monotonic() >= deadline then
      errors.raise("network", "job " .. job_id .. " is still " .. job.state .. " after " .. timeout .. " s",
        "check later with 'aitbc client status " .. job_id .. "'", { code = "timeout" })
    end
    sys.sleep(0.25)
  end
end

--- Fetches the result and checks its receipt against the node's key.
local function fetch_result(client, job_id)
  local res = client:call("GET", job_path("/v1/jobs/{job_id}/result", job_id), { expect = RESULT })
  local receipt = res.receipt
  if type(receipt) == "table" then
    local node = client:call("GET", "/v1/node", { expect = { node_key = "string" } })
    local crypto = require "aitbc.crypto"
    local ok, why = require("aitbc.protocol.receipts").verify(receipt, crypto.unbase64(node.node_key, "urlsafe"))
    res.receipt_verified = ok == true
    if not ok then
      errors.raise("failure", "the receipt of job " .. job_id .. " does not verify: " .. tostring(why),
        "do not trust this result; report it to the node operator", { code = "bad_receipt" })
    end
  end
  return res
end

local function render_result(d, out)
  local r = d.result
  local text = type(r) == "table" and (r.response or r.output or r.text) or (type(r) == "string" and r or nil)
  if text then out:print(text) else out:print(json.encode(r, { pretty = true })) end
  out:print("")
  local rc = d.receipt or {}
  local tokens = rc.tokens or {}
  out:print(out:format_record({
    job = d.job_id, model = d.model or rc.model, miner = rc.provider,
    tokens = tokens.completion and string.format("%s generated, %s prompt", tokens.completion, tokens.prompt or "?"),
    duration = rc.duration_ms and string.format("%.2f s", rc.duration_ms / 1000),
    receipt = rc.receipt_id and (rc.receipt_id .. (d.receipt_verified and " (signature verified against the node's key)" or "")),
  }, { "job", "model", "miner", "tokens", "duration", { "receipt", "proof of execution" } }))
end

return {
  name = "client",
  category = "Workflows",
  summary = "Submit AI jobs to the network, follow them, and get their results",
  commands = {
    {
      name = "submit",
      summary = "Submit a job (prints its id and initial status)",
      id_field = "job_id", fields = SUBMIT_FIELDS,
      options = {
        { "--type", default = "inference", metavar = "TYPE", help = "job type" },
        { "--model", metavar = "MODEL", help = "model to run, e.g. llama3" },
        { "--data", metavar = "JSON", help = "the job's payload as a JSON object, e.g. '{\"prompt\":\"...\"}'" },
        { "--prompt", metavar = "TEXT", help = "the prompt (instead of --data)" },
        { "--file", metavar = "FILE", help = "payload from a JSON file" },
        { "--ttl", type = "integer", min = 1, max = 86400, default = 900, metavar = "SECONDS", help = "give up after" },
        { "--min-vram", type = "number", min = 0, metavar = "GB", help = "only miners with this much GPU memory" },
        { "--gpu", metavar = "NAME", help = "only miners whose GPU name contains this" },
        { "--wait", type = "boolean", help = "wait for the result and print it" },
        { "--timeout", type = "number", min = 1, default = 300, metavar = "SECONDS", help = "with --wait: how long" },
      },
      examples = { [[aitbc client submit --type inference --model "llama3" --data '{"prompt":"Hello AITBC"}']],
                   [[aitbc client submit --model llama3 --prompt "Explain proof of authority" --wait]] },
      run = function(ctx)
        local client = api(ctx)
        local payload = payload_from(ctx)
        local constraints = (ctx.opts.min_vram or ctx.opts.gpu) and { min_vram_gb = ctx.opts.min_vram, gpu = ctx.opts.gpu } or nil
        local job = client:call("POST", "/v1/jobs", { json = { payload = payload, model = payload.model,
          ttl_seconds = ctx.opts.ttl, constraints = constraints }, expect = JOB })
        if ctx.opts.wait then
          ctx.out:info("job " .. job.job_id .. " submitted; waiting for it")
          local done = wait_done(ctx, client, job.job_id, ctx.opts.timeout)
          if done.state ~= "COMPLETED" then
            errors.raise("failure", "job " .. job.job_id .. " ended " .. done.state .. ": " .. tostring(done.error))
          end
          local res = fetch_result(client, job.job_id)
          res.job_id = job.job_id
          return res, render_result
        end
        return job, function(d, out)
          out:success("job submitted")
          out:print(out:format_record({ job_id = d.job_id, status = "pending (" .. d.state .. ")", model = d.model,
            expires = d.expires_at }, { { "job_id", "job_id" }, "status", "model", "expires" }))
          out:print(out:style("next: aitbc client status " .. d.job_id .. "  ·  aitbc client result " .. d.job_id
            .. " --wait", "dim"))
        end
      end,
    },
    {
      name = "status",
      summary = "A job's status: state, assigned miner and timings",
      args = { job_arg }, fields = JOB_FIELDS, watch = true,
      examples = { "aitbc client status 0192af3c51d2e4c7a81f09b3c6d2e1f0" },
      run = function(ctx)
        local job = api(ctx):call("GET", job_path("/v1/jobs/{job_id}", ctx.args.job_id), { expect = JOB })
        return job, function(d, out) render_status(human(d), out) end
      end,
    },
    {
      name = "result",
      summary = "A completed job's output and its signed receipt (verified locally)",
      args = { job_arg }, fields = RESULT_FIELDS,
      options = {
        { "--wait", type = "boolean", help = "wait until the job is done" },
        { "--timeout", type = "number", min = 1, default = 300, metavar = "SECONDS", help = "with --wait: how long" },
      },
      examples = { "aitbc client result 0192af3c51d2e4c7a81f09b3c6d2e1f0 --wait" },
      run = function(ctx)
        local client = api(ctx)
        local id = ctx.args.job_id
        if ctx.opts.wait then
          local done = wait_done(ctx, client, id, ctx.opts.timeout)
          if done.state ~= "COMPLETED" then
            errors.raise("failure", "job " .. id .. " ended " .. done.state .. ": " .. tostring(done.error))
          end
        end
        local ok, res = pcall(fetch_result, client, id)
        if not ok then
          if errors.is(res) and res.code == "not_ready" then
            res.hint = "wait for it: aitbc client result " .. id .. " --wait"
          end
          error(res, 0)
        end
        res.job_id = id
        return res, render_result
      end,
    },
    {
      name = "pay",
      summary = "Pay for a job from the active wallet: held in escrow, released to the miner when it completes",
      description = "Signs an escrow_lock transaction; the payment is funded once a block includes it. The node "
        .. "releases it to the miner's payout address when the job completes and refunds it if the job fails, "
        .. "expires or is canceled.",
      args = { job_arg, { "amount_arg", optional = true, help = "AITBC (or --amount)" } },
      id_field = "tx_hash", fields = { "amount", "job_id", "tx_hash", "chain_id", "payment_status" },
      options = {
        { "--amount", metavar = "AITBC", help = "how much" },
        { "--password-file", metavar = "FILE", help = "wallet password from FILE (else AITBC_WALLET_PASSWORD or a prompt)" },
        { "--no-wait", type = "boolean", help = "do not wait for the payment to be funded (in a block)" },
      },
      examples = { "aitbc client pay 0192af3c51d2e4c7a81f09b3c6d2e1f0 --amount 10",
                   "aitbc client pay 0192af3c51d2e4c7a81f09b3c6d2e1f0 10" },
      run = function(ctx)
        local text = ctx.opts.amount or ctx.args.amount_arg
        if not text then errors.raise("usage", "how much? aitbc client pay JOB_ID --amount AITBC") end
        local units = require("aitbc.money").from_option(text, "--amount")
        local client = api(ctx)
        local payment_path = job_path("/v1/jobs/{job_id}/payment", ctx.args.job_id)
        local password = require("aitbc.secrets.password").get("wallet", ctx.opts.password_file, false,
          ctx.out.format == "table")
        local body = require("aitbc.wallet").signed_tx(ctx, client, "escrow_lock",
          { job_id = ctx.args.job_id, amount = tostring(units) }, password)
        local res = client:call("POST", payment_path, { json = body,
          expect = { amount = "scalar", job_id = "string", tx_hash = "string?", chain_id = "string?" } })
        if not ctx.opts.no_wait then
          local sys = require "aitbc.sys"
          local deadline = sys.monotonic() + 60
          repeat
            local job = client:call("GET", job_path("/v1/jobs/{job_id}", ctx.args.job_id), { expect = JOB })
            res.payment_status = job.payment_status
            if job.payment_status ~= "pending" then break end
            sys.sleep(0.2)
          until sys.monotonic() > deadline
        end
        return res, function(d, out)
          out:success(string.format("paid %s AITBC for job %s", d.amount, d.job_id))
          out:print(out:format_record({ tx = d.tx_hash, status = d.payment_status, chain = d.chain_id },
            { { "tx", "transaction" }, { "status", "payment status" }, "chain" }))
        end
      end,
    },
    {
      name = "cancel",
      summary = "Cancel a queued or running job",
      args = { job_arg }, fields = JOB_FIELDS,
      run = function(ctx)
        local job = api(ctx):call("POST", job_path("/v1/jobs/{job_id}/cancel", ctx.args.job_id),
          { expect = { job_id = "string" } })
        return job, function(d, out) out:success("job " .. d.job_id .. " canceled") end
      end,
    },
    {
      name = "list",
      aliases = { "history" },
      summary = "Your jobs, newest first",
      list = "items", paged = "/v1/jobs", id_field = "job_id", fields = JOB_FIELDS, watch = true,
      options = {
        { "--state", choices = { "queued", "running", "completed", "failed", "canceled", "expired" }, help = "only this state" },
        { "--model", metavar = "MODEL", help = "only this model" },
        { "--limit", type = "integer", min = 1, max = 500, default = 20, help = "how many" },
      },
      run = function(ctx)
        local res = api(ctx):call("GET", "/v1/jobs", { query = { state = ctx.opts.state and ctx.opts.state:upper(),
          model = ctx.opts.model, limit = ctx.opts.limit }, expect = { total = "integer", items = { "array",
            { job_id = "string", state = "string", requested_at = "string", assigned_miner_id = "string?" } } } })
        return res, function(d, out)
          if #d.items == 0 then out:print("no jobs") return end
          local rows = {}
          for i, j in ipairs(d.items) do
            rows[i] = { job_id = j.job_id, state = j.state, model = j.model or "-",
              miner = j.assigned_miner_id ~= json.null and j.assigned_miner_id or "-",
              requested = j.requested_at:sub(1, 19):gsub("T", " ") }
          end
          out:print(out:format_table(rows, { { "job_id", "job id", keep = true }, "state", "model", "miner", "requested" }))
          out:print(out:style(string.format("%d of %d", #d.items, d.total), "dim"))
        end
      end,
    },
  },
}
