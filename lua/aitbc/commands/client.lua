--- aitbc client: submit AI jobs to the network and collect their results.
local errors = require "aitbc.errors"
local json = require "aitbc.json"

local function C() return require "aitbc.client" end

-- The JSON fields of the job view and of a result (--json FIELDS; aitbc.cli.registry).
local JOB_FIELDS = { "job_id", "type", "state", "status", "model", "assigned_miner_id", "requested_at", "expires_at",
  "started_at", "finished_at", "ttl_seconds", "attempts", "run_timeout_seconds", "lease_expires_at", "error", "payment_id",
  "payment_status", "payment_amount", "settlement_id", "reward_status", "reward_tx", "booking_id", "timings" }
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
  local status = words[state] or state
  if state == "QUEUED" and job.held_for_payment then status = "queued (held until its payment is funded)" end
  return {
    job_id = job.job_id, status = status, model = job.model,
    miner = job.assigned_miner_id ~= json.null and job.assigned_miner_id or "-",
    requested_at = job.requested_at, started_at = job.started_at, finished_at = job.finished_at,
    queued = ms(job.timings and job.timings.queue_ms), ran = ms(job.timings and job.timings.run_ms),
    attempts = job.attempts, error = job.error ~= json.null and job.error or nil,
    payment = type(job.payment_status) == "string"
      and string.format("%s AITBC, %s", job.payment_amount or "?", job.payment_status) or nil,
  }
end

--- Progress of a job on stderr: "  running on miner-1".
local function on_job(ctx)
  return function(job)
    ctx.out:info("  " .. job.state:lower() .. (job.assigned_miner_id ~= json.null and job.assigned_miner_id
      and (" on " .. job.assigned_miner_id) or ""))
  end
end

--- With --wait, for people: the inference's text on stdout as the miner
-- generates it (job events), state changes on stderr on their own lines.
-- -> {on_token, on_change, text()} (text: what was shown, nil if nothing).
local function live_output(ctx)
  local parts, attempt, open = {}, nil, false
  local progress = on_job(ctx)
  local live = {}
  function live.on_change(job)
    if open then io.stdout:write("\n") io.stdout:flush() open = false end
    progress(job)
  end
  if ctx.out.format == "table" and not ctx.out.shape then
    function live.on_token(text, n)
      if attempt and n ~= attempt and #parts > 0 then -- a lost miner's partial answer: the next attempt starts over
        if open then io.stdout:write("\n") open = false end
        ctx.out:info("  attempt " .. tostring(n) .. " starts the answer again")
        parts = {}
      end
      attempt = n
      io.stdout:write(text)
      io.stdout:flush()
      parts[#parts + 1] = text
      open = not text:find("\n$")
    end
  end
  --- What was shown (nil: nothing), its line ended.
  function live.text()
    if open then io.stdout:write("\n") open = false end
    return #parts > 0 and table.concat(parts) or nil
  end
  return live
end

--- Progress of a payment on stderr: "  payment funded (block 12)".
local function on_payment(ctx)
  return function(status, _, paid)
    local where = ""
    if status == "funded" and paid.block_height then where = " (block " .. paid.block_height .. ")" end
    if status == "released" and paid.released_to then where = " to " .. paid.released_to end
    if status == "refunded" and paid.refunded_to then where = " to " .. paid.refunded_to end
    ctx.out:info("  payment " .. tostring(status) .. where)
  end
end

--- shown: the text already streamed (--wait): not printed twice.
local function render_result(d, out, shown)
  local r = d.result
  local text = type(r) == "table" and (r.response or r.output or r.text) or (type(r) == "string" and r or nil)
  if shown and text and shown:gsub("%s+$", "") == text:gsub("%s+$", "") then -- luacheck: ignore 542
  elseif text then out:print(text) else out:print(json.encode(r, { pretty = true })) end
  out:print("")
  local rc = d.receipt or {}
  local tokens = rc.tokens or {}
  out:print(out:format_record({
    job = d.job_id, model = d.model or rc.model, miner = rc.provider,
    tokens = tokens.completion and string.format("%s generated, %s prompt", tokens.completion, tokens.prompt or "?"),
    duration = rc.duration_ms and string.format("%.2f s", rc.duration_ms / 1000),
    receipt = rc.receipt_id and (rc.receipt_id .. (d.receipt_verified and " (signature verified against the node's key)" or "")),
  }, { "job", "model", "miner", "tokens", "duration", { "receipt", "proof of execution" } }))
  if d.payment then -- submitted with --pay: released to the miner once the sweep settles it
    out:print(out:style(string.format("paid %s AITBC (transaction %s); 'aitbc client status %s' shows its settlement",
      d.payment.amount, d.payment.tx_hash, d.job_id), "dim"))
  end
end

--- The fields of a record that hold something (format_record shows the others as "-").
local function present(record, fields)
  local out = {}
  for _, f in ipairs(fields) do
    if record[type(f) == "table" and f[1] or f] ~= nil then out[#out + 1] = f end
  end
  return out
end

local function render_payment(d, out)
  local settled = d.payment_status == "released" or d.payment_status == "refunded"
  out:success(string.format("paid %s AITBC for job %s", d.amount, d.job_id))
  local status = d.payment_status
  if settled then status = "funded, then " .. status end
  local record = { tx = d.tx_hash, status = status, block = d.block_height and tostring(d.block_height),
    released = d.released_to and (d.released_to .. (d.miner and (" (miner " .. d.miner .. ")") or "")),
    refunded = d.refunded_to, settlement = d.settlement_id, chain = d.chain_id }
  out:print(out:format_record(record, present(record, { { "tx", "transaction" }, { "status", "payment status" },
    { "block", "funded in block" }, { "released", "released to" }, { "refunded", "refunded to" }, "settlement", "chain" })))
  if d.payment_status == "funded" and d.job_state ~= "COMPLETED" then
    out:print(out:style("held in escrow: released to the miner when the job completes, refunded if it fails", "dim"))
  elseif d.payment_status == "pending" then
    out:print(out:style("not in a block yet; 'aitbc client status " .. d.job_id .. "' shows when it is funded", "dim"))
  end
end

local function render_submitted(d, out)
  out:success("job submitted" .. (d.payment and (", paid " .. d.payment.amount .. " AITBC") or ""))
  local p = d.payment
  local record = { job_id = d.job_id, status = d.state == "QUEUED" and "pending (QUEUED)" or human(d).status,
    model = d.model, expires = d.expires_at,
    payment = p and string.format("%s AITBC, %s", p.amount, p.payment_status), tx = p and p.tx_hash }
  out:print(out:format_record(record, present(record, { { "job_id", "job_id" }, "status", "model", "expires", "payment",
    { "tx", "transaction" } })))
  out:print(out:style("next: aitbc client status " .. d.job_id .. "  ·  aitbc client result " .. d.job_id
    .. " --wait", "dim"))
end

local password_file = { "--password-file", metavar = "FILE",
  help = "wallet password from FILE (else AITBC_WALLET_PASSWORD or a prompt)" }

return {
  name = "client",
  category = "Workflows",
  summary = "Submit AI jobs to the network, follow them, and get their results",
  commands = {
    {
      name = "submit",
      summary = "Submit a job (prints its id and initial status)",
      id_field = "job_id", fields = SUBMIT_FIELDS,
      description = "The payload is --data (a JSON object), or --prompt, or --file; the prompt may be given once. "
        .. "--pay AMOUNT pays for the job from the active wallet as it is submitted: the job is held, offered to no "
        .. "miner, until the escrow is funded (in a block), and the escrow goes to the miner when it completes.",
      options = {
        { "--type", default = "inference", metavar = "TYPE", help = "job type (this network runs: inference)" },
        { "--model", metavar = "MODEL", help = "model to run, e.g. llama3 (required)" },
        { "--data", metavar = "JSON", help = "the job's payload as a JSON object, e.g. '{\"prompt\":\"...\"}'" },
        { "--prompt", metavar = "TEXT", help = "the prompt (instead of --data)" },
        { "--file", metavar = "FILE", help = "payload from a JSON file" },
        { "--ttl", type = "integer", min = 1, max = 86400, default = 900, metavar = "SECONDS", help = "give up after" },
        { "--min-vram", type = "number", min = 0, metavar = "GB", help = "only miners with this much GPU memory" },
        { "--gpu", metavar = "NAME", help = "only miners whose GPU name contains this" },
        { "--pay", metavar = "AITBC", help = "pay this much from the active wallet; the job runs once it is funded" },
        { "--booking", metavar = "ID", help = "run it on the GPU you booked (aitbc marketplace gpu book): its miner only, "
          .. "paid by the booking" },
        password_file,
        { "--wait", type = "boolean", help = "wait for the result, printing its text as the miner generates it" },
        { "--timeout", type = "number", min = 1, default = 300, metavar = "SECONDS", help = "with --wait: how long" },
      },
      examples = { [[aitbc client submit --type inference --model "llama3" --data '{"prompt":"Hello AITBC"}']],
                   [[aitbc client submit --model llama3 --prompt "Explain proof of authority" --wait]],
                   [[aitbc client submit --model llama3 --prompt "Paid work" --pay 10]] },
      run = function(ctx)
        local o = ctx.opts
        local data = o.data
        if o.file then -- --data's fields over the file's
          data = C().object(require("aitbc.config").read_input(o.file, "--file"), o.file)
          for k, v in pairs(o.data and C().object(o.data, "--data") or {}) do data[k] = v end
        end
        local job = C().submit(ctx, { data = data, prompt = o.prompt, model = o.model,
          type = o.type ~= "inference" and o.type or nil, ttl = o.ttl, min_vram = o.min_vram, gpu = o.gpu, booking = o.booking,
          pay = o.pay, pay_option = "--pay", password_file = o.password_file, interactive = ctx.out.format == "table",
          on_change = on_payment(ctx) })
        if not o.wait then return job, render_submitted end
        ctx.out:info("job " .. job.job_id .. " submitted; waiting for it")
        local live = live_output(ctx)
        local res = C().result(ctx, job.job_id, { wait = true, timeout = o.timeout, on_change = live.on_change,
          on_token = live.on_token })
        res.payment = job.payment
        return res, function(d, out) render_result(d, out, live.text()) end
      end,
    },
    {
      name = "status",
      summary = "A job's status: state, assigned miner and timings",
      args = { job_arg }, fields = JOB_FIELDS, watch = true,
      examples = { "aitbc client status 0192af3c51d2e4c7a81f09b3c6d2e1f0" },
      run = function(ctx)
        return C().status(ctx, ctx.args.job_id), function(d, out) render_status(human(d), out) end
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
        local live = live_output(ctx)
        return C().result(ctx, ctx.args.job_id, { wait = ctx.opts.wait, timeout = ctx.opts.timeout,
          on_change = live.on_change, on_token = ctx.opts.wait and live.on_token or nil }),
          function(d, out) render_result(d, out, live.text()) end
      end,
    },
    {
      name = "pay",
      summary = "Pay for a job from the active wallet: escrow, released to the miner when the job completes",
      description = "Signs an escrow_lock transaction; the payment is funded once a block includes it. A queued or "
        .. "running job's escrow is released to the miner's payout address when the job completes and refunded if "
        .. "it fails, expires or is canceled. A job that already completed (a miner may finish before you pay) is "
        .. "settled at once: funded, then released to its miner. To pay before any miner starts, submit with --pay.",
      args = { job_arg, { "amount_arg", optional = true, help = "AITBC (or --amount)" } },
      id_field = "tx_hash", fields = { "amount", "job_id", "tx_hash", "chain_id", "payment_status" },
      options = {
        { "--amount", metavar = "AITBC", help = "how much" },
        password_file,
        { "--no-wait", type = "boolean", help = "do not wait for the payment to be funded (in a block)" },
      },
      examples = { "aitbc client pay 0192af3c51d2e4c7a81f09b3c6d2e1f0 --amount 10",
                   "aitbc client pay 0192af3c51d2e4c7a81f09b3c6d2e1f0 10" },
      run = function(ctx)
        local text = ctx.opts.amount or ctx.args.amount_arg
        if not text then errors.raise("usage", "how much? aitbc client pay JOB_ID --amount AITBC") end
        return C().pay(ctx, ctx.args.job_id, text, { what = "--amount", password_file = ctx.opts.password_file,
          interactive = ctx.out.format == "table",
          wait = not ctx.opts.no_wait, on_change = on_payment(ctx) }), render_payment
      end,
    },
    {
      name = "cancel",
      summary = "Cancel a queued or running job",
      args = { job_arg }, fields = JOB_FIELDS,
      run = function(ctx)
        return C().cancel(ctx, ctx.args.job_id), function(d, out) out:success("job " .. d.job_id .. " canceled") end
      end,
    },
    {
      name = "list",
      aliases = { "history" },
      summary = "Your jobs, newest first",
      list = "items", paged = "/v1/jobs", id_field = "job_id", fields = JOB_FIELDS, watch = true,
      options = {
        { "--state", metavar = "STATE", help = "only this state: queued, running, completed, failed, canceled, expired "
          .. "(any case)" },
        { "--model", metavar = "MODEL", help = "only this model" },
        { "--type", metavar = "TYPE", help = "only this job type: inference, agent, multimodal" },
        { "--since", metavar = "TIME", help = "submitted at or after: \"1 hour ago\", yesterday, 2026-11-22T10:00:00Z…" },
        { "--until", metavar = "TIME", help = "submitted at or before (the same forms)" },
        { "--limit", type = "integer", min = 1, max = 500, default = 20, help = "how many" },
        { "--offset", type = "integer", min = 0, default = 0, help = "skip this many" },
      },
      examples = { "aitbc client list --state completed", "aitbc client list --state QUEUED --limit 5",
        "aitbc client list --type agent --since yesterday" },
      run = function(ctx)
        local o = ctx.opts
        local res = C().list(ctx, { state = o.state, model = o.model, type = o.type, from_time = o.since,
          to_time = o["until"], limit = o.limit, offset = o.offset })
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
