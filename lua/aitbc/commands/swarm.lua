--- aitbc swarm: agents working together (spec §7).  Agents join a pool
-- per task type; a task (swarm task create) is dispatched to the pool by a
-- strategy, each member's part an ordinary agent job; consensus tells the
-- agreed result and how sure it is.
local errors = require "aitbc.errors"
local sys = require "aitbc.sys"

local function api(ctx) return require("aitbc.api").from_context(ctx, { role = "client" }) end
local function task_path(template, id) return require("aitbc.api").path(template, { task_id = id }) end

local function need(o, ...)
  for _, name in ipairs { ... } do
    if o[name:gsub("-", "_")] == nil then
      errors.raise("usage", "--" .. name .. " is required", "see the command's --help", { code = "missing_option" })
    end
  end
end

local function join(ctx)
  need(ctx.opts, "agent-id", "task-type")
  local d = api(ctx):call("POST", "/v1/swarm/members", { json = { agent_id = ctx.opts.agent_id,
    task_type = ctx.opts.task_type }, expect = { agent_id = "string" } })
  return d, function(v, out)
    out:success(string.format("agent %s %s the %s swarm (%d member(s)); status: %s", v.agent_id,
      v.already and "is already in" or "joined", v.task_type, v.pool_size, v.status))
    out:print("next: aitbc swarm task create --task-type " .. v.task_type .. " --input FILE, then aitbc swarm coordinate")
  end
end

local function leave(ctx)
  need(ctx.opts, "agent-id", "task-type")
  local d = api(ctx):call("DELETE", "/v1/swarm/members", { query = { agent_id = ctx.opts.agent_id,
    task_type = ctx.opts.task_type } })
  return d, function(v, out) out:success("agent " .. v.agent_id .. " left the " .. v.task_type .. " swarm") end
end

local function list(ctx)
  local d = api(ctx):call("GET", "/v1/swarm/members", { query = { task_type = ctx.opts.task_type },
    expect = { items = "array" } })
  return d, function(v, out)
    if #v.items == 0 then out:print("no agents in " .. (ctx.opts.task_type or "any") .. " swarm") return end
    out:print(out:format_table(v.items, { { "task_type", "task type" }, { "agent_id", "agent" }, "name",
      { "joined_at", "joined" } }))
  end
end

local follow -- defined below: coordinate's dispatch and --wait

local function progress_line(v)
  local p = v.progress or {}
  return string.format("%s: %d/%d part(s) done%s%s%s", v.status, p.done or 0, p.parts or 0,
    p.rounds and string.format(" (round %d of %d)", p.round, p.rounds) or "",
    (p.failed or 0) > 0 and string.format(", %d failed (retried on another member)", p.failed) or "",
    p.reduce and (", reduce " .. p.reduce) or "")
end

local function render_task(v, out)
  out:print(out:format_record({ task_id = v.task_id, task_type = v.task_type, status = v.status, strategy = v.strategy,
    tracking_id = v.tracking_id, members = #v.members > 0 and table.concat(v.members, ", ") or nil,
    progress = v.tracking_id and progress_line(v) or nil, error = v.error },
    { { "task_id", "task" }, { "task_type", "task type" }, "status", "strategy", { "tracking_id", "tracking id" },
      "members", "progress", "error" }))
end

local function create(ctx)
  local o = ctx.opts
  need(o, "task-type")
  local input = o.input
  if o.input_file then input = require("aitbc.config").read_input(o.input_file, "--input-file") end
  if not input then errors.raise("usage", "--input TEXT or --input-file FILE is required") end
  local d = api(ctx):call("POST", "/v1/swarm/tasks", { json = { task_type = o.task_type, input = input, shards = o.shards,
    members = o.members, csv = o.csv or nil, instruction = o.instruction, regression = o.regression, label = o.label,
    rounds = o.rounds, epochs = o.epochs, learning_rate = o.learning_rate,
    pay_per_job = o.pay_per_job and require("aitbc.money").format(require("aitbc.money").from_option(o.pay_per_job,
      "--pay-per-job")) }, expect = { task_id = "string" } })
  return d, function(v, out)
    out:success("swarm task " .. v.task_id .. " created (" .. v.input_bytes .. " bytes of input)")
    out:print("dispatch it: aitbc swarm coordinate --task-id " .. v.task_id
      .. " --strategy map-reduce (or vote, fed-avg, pipeline)")
  end
end

--- The wallet's keys when the task pays per job (each member job is held
-- until its creator's escrow for it is funded), else nil.
local function payer_keys(ctx, task)
  if not task.pay_per_job then return nil end
  return require("aitbc.wallet").unlock(ctx, require("aitbc.secrets.password").get("wallet", ctx.opts.password_file,
    false, ctx.out.format == "table"))
end

--- Pays every member job of the task held for its payment; -> how many.
local function pay_held(ctx, v, keys)
  local n = 0
  for _, w in ipairs(v.work or {}) do
    if w.payment_status == "awaiting" and w.job_state == "QUEUED" then
      local paid = require("aitbc.client").pay(ctx, w.job_id, w.payment_amount, { keys = keys, wait = false })
      ctx.out:info(string.format("paid %s AITBC for %s %d's job %s (transaction %s)", w.payment_amount, w.stage, w.part,
        w.job_id, paid.tx_hash))
      n = n + 1
    end
  end
  return n
end

local function with_keys(keys, fn)
  local ok, v = pcall(fn)
  if keys then keys.secret_key:wipe() end
  if not ok then error(v, 0) end
  return v
end

local function coordinate(ctx)
  need(ctx.opts, "task-id")
  local client = api(ctx)
  local keys = payer_keys(ctx, client:call("GET", task_path("/v1/swarm/tasks/{task_id}", ctx.opts.task_id)))
  local v = with_keys(keys, function() return follow(ctx, client, keys) end)
  return v, function(d, out)
    out:success(string.format("task %s dispatched to %d member(s) with %s; tracking id %s", d.task_id, #d.members,
      d.strategy, d.tracking_id))
    render_task(d, out)
    if d.status == "running" then out:print("follow it: aitbc swarm status --task-id " .. d.task_id) end
    if d.status == "running" and d.pay_per_job then
      out:print("its later jobs (reduce, retries, rounds, stages) wait for payment: aitbc swarm pay --task-id "
        .. d.task_id .. " (or coordinate with --wait, which pays them as they come)")
    end
  end
end

local function pay(ctx)
  need(ctx.opts, "task-id")
  local client = api(ctx)
  local v = client:call("GET", task_path("/v1/swarm/tasks/{task_id}", ctx.opts.task_id))
  if not v.pay_per_job then
    errors.raise("usage", "task " .. v.task_id .. " does not pay per job", "create it with --pay-per-job AITBC")
  end
  local keys = payer_keys(ctx, v)
  local n = with_keys(keys, function() return pay_held(ctx, v, keys) end)
  return { task_id = v.task_id, paid = n, pay_per_job = v.pay_per_job }, function(d, out)
    out:success(string.format("paid for %d held job(s) of task %s (%s AITBC each)", d.paid, d.task_id, d.pay_per_job))
  end
end

--- Dispatches the task, paying its held jobs; with --wait follows it to its end.
function follow(ctx, client, keys)
  local v = client:call("POST", task_path("/v1/swarm/tasks/{task_id}/coordinate", ctx.opts.task_id),
    { json = { strategy = ctx.opts.strategy }, expect = { task_id = "string" } })
  if keys then pay_held(ctx, v, keys) end
  if ctx.opts.wait then
    local last
    local deadline = sys.monotonic() + ctx.opts.timeout_wait
    while v.status == "running" do
      local line = progress_line(v)
      if line ~= last then ctx.out:info(line) last = line end
      if sys.monotonic() > deadline then
        errors.raise("timeout", "task " .. v.task_id .. " still runs after " .. ctx.opts.timeout_wait .. " s",
          "follow it: aitbc swarm status --task-id " .. v.task_id, { code = "timeout" })
      end
      sys.sleep(0.3)
      v = client:call("GET", task_path("/v1/swarm/tasks/{task_id}", v.task_id))
      if keys then pay_held(ctx, v, keys) end
    end
  end
  return v
end

local function status(ctx)
  need(ctx.opts, "task-id")
  return api(ctx):call("GET", task_path("/v1/swarm/tasks/{task_id}", ctx.opts.task_id)), render_task
end

local function training_text(c)
  local spread = c.weight_spread or {}
  return string.format("%s on %d %s after %d of %d round(s); loss %.4f; weight spread %.4f max, %.4f mean "
    .. "(%d member(s) reporting)", c.accuracy and string.format("accuracy %.1f%%", c.accuracy * 100) or "regression",
    c.evaluated_records or 0, c.evaluated_on or "records", c.rounds_done or 0, c.rounds or 0, c.loss or 0,
    spread.max or 0, spread.mean or 0, c.members_reporting or 0)
end

--- A consensus's confidence in words, per strategy.
local function confidence_text(v)
  local c = v.confidence or {}
  if v.strategy == "fed-avg" then
    return training_text(c)
  elseif v.strategy == "pipeline" then
    return string.format("%d of %d stage(s) done", c.stages_done or 0, c.stages or 0)
  elseif v.strategy == "vote" then
    return string.format("%.0f%% agree (%d of %d vote(s)); coverage %.0f%%%s", (c.share_agreeing or 0) * 100,
      #(v.agreeing or {}), c.votes or 0, (c.coverage or 0) * 100, v.tie and "; a TIE: no majority" or "")
  end
  return string.format("coverage %.0f%% (%d of %d shard(s)), %d retried, reduce %s", (c.coverage or 0) * 100,
    c.shards_done or 0, c.shards or 0, c.retried or 0, c.reduced and "done" or "not done")
end

--- The agreed result in words: a trained model as its equation.
local function answer_text(answer)
  if type(answer) ~= "table" then return answer end
  local terms = { string.format("%.4f", answer.weights[1]) }
  for j, name in ipairs(answer.features) do terms[#terms + 1] = string.format("%+.4f*%s", answer.weights[j + 1], name) end
  return string.format("%s regression of %s: %s (features standardized)", answer.model, answer.label,
    table.concat(terms, " "))
end

local function consensus(ctx)
  need(ctx.opts, "task-id")
  local d = api(ctx):call("GET", task_path("/v1/swarm/tasks/{task_id}/consensus", ctx.opts.task_id))
  return d, function(v, out)
    if v.partial then
      out:warn(string.format("partial: task is %s; %d member part(s) have not reported", v.status, #v.missing))
    end
    local conf = confidence_text(v)
    local dissent = {}
    for _, x in ipairs(v.dissenters or {}) do dissent[#dissent + 1] = x.agent_id .. ": " .. tostring(x.answer) end
    local answer = answer_text(v.answer)
    out:print(out:format_record({ task_id = v.task_id, strategy = v.strategy, answer = answer or "(none yet)",
      confidence = conf, dissenters = #dissent > 0 and table.concat(dissent, "; ") or nil },
      { { "task_id", "task" }, "strategy", { "answer", "agreed result" }, "confidence", "dissenters" }))
  end
end

local password_file = { "--password-file", metavar = "FILE",
  help = "wallet password from FILE (else AITBC_WALLET_PASSWORD or a prompt), for --pay-per-job tasks" }
local task_id_opt = { "--task-id", metavar = "TASK_ID", help = "the task (aitbc swarm task create)" }
local TASK_FIELDS = { "task_id", "task_type", "status", "strategy", "tracking_id", "members", "progress", "work", "error" }

return {
  name = "swarm",
  category = "Workflows",
  summary = "Agent swarms: pools per task type, tasks dispatched by strategy, consensus",
  commands = {
    { name = "join", summary = "Put your agent in a task type's pool, awaiting coordination",
      options = { { "--agent-id", metavar = "AGENT_ID", help = "your agent" },
        { "--task-type", metavar = "TYPE", help = "the pool, e.g. distributed-training" } },
      examples = { [[aitbc swarm join --agent-id agent_1a2b --task-type "distributed-training"]] },
      fields = { "agent_id", "task_type", "status", "pool_size" }, run = join },
    { name = "leave", summary = "Take your agent out of a pool",
      options = { { "--agent-id", metavar = "AGENT_ID" }, { "--task-type", metavar = "TYPE" } }, run = leave },
    { name = "list", summary = "The agents in the pools", options = { { "--task-type", metavar = "TYPE" } },
      list = "items", fields = { "agent_id", "task_type", "name", "joined_at" }, run = list },
    { name = "task", summary = "Swarm tasks", commands = {
      { name = "create", summary = "A task for a pool: its input, split into shards when dispatched",
        options = {
          { "--task-type", metavar = "TYPE", help = "the pool that works on it" },
          { "--input", metavar = "TEXT", help = "the input text" },
          { "--input-file", metavar = "FILE", help = "the input, from a file (lines are the records)" },
          { "--shards", type = "integer", min = 1, max = 1000, metavar = "N",
            help = "map-reduce: shards (default: one per member)" },
          { "--members", type = "integer", min = 1, max = 1000, metavar = "N",
            help = "members wanted (default: the whole pool)" },
          { "--csv", type = "boolean", help = "the input is CSV: every shard keeps its header line" },
          { "--instruction", metavar = "TEXT", help = "what each member should do with its part" },
          { "--regression", choices = { "logistic", "linear" },
            help = "fed-avg: the model each member trains (default logistic: a 0/1 label)" },
          { "--label", metavar = "COLUMN", help = "fed-avg: the CSV column to predict (default: the last)" },
          { "--rounds", type = "integer", min = 1, max = 100, metavar = "R", help = "fed-avg: averaging rounds (default 5)" },
          { "--epochs", type = "integer", min = 1, max = 1000, metavar = "E",
            help = "fed-avg: passes over its shard each member makes per round (default 5)" },
          { "--learning-rate", type = "number", min = 1e-9, max = 10, metavar = "RATE",
            help = "fed-avg: the gradient step (default 0.1)" },
          { "--pay-per-job", metavar = "AITBC", help = "pay each member's job this much from your wallet: every job is "
            .. "held until its escrow is funded (coordinate pays them), and released to its miner when it completes" },
        },
        id_field = "task_id", fields = TASK_FIELDS, run = create },
    } },
    { name = "coordinate",
      summary = "Dispatch a task to its pool with a strategy (map-reduce, vote, fed-avg, pipeline)",
      description = "map-reduce: shards of the input to distinct members, then a reduce job. vote: the same input to "
        .. "every member, the majority of their answers. fed-avg: each member trains a logistic or linear regression "
        .. "on its shard of the CSV, the weights averaged by samples for R rounds and scored on held-out records "
        .. "(every 5th). pipeline: the members in pool order are stages, each one's answer the next one's input.",
      options = { task_id_opt, { "--strategy", default = "map-reduce", choices = require("aitbc.swarm").STRATEGY_LIST },
        { "--wait", type = "boolean", help = "show progress until the task ends (paying held jobs as they come)" },
        password_file,
        { "--timeout-wait", type = "number", min = 1, max = 86400, default = 600, metavar = "SECONDS",
          help = "with --wait: give up after this long" } },
      examples = { [[aitbc swarm coordinate --task-id swt_1a2b --strategy "map-reduce"]] },
      id_field = "tracking_id", fields = TASK_FIELDS, run = coordinate },
    { name = "pay", summary = "Pay for a task's member jobs held for payment (--pay-per-job)",
      options = { task_id_opt, password_file }, fields = { "task_id", "paid", "pay_per_job" }, run = pay },
    { name = "status", summary = "A task's progress, part by part", options = { task_id_opt },
      id_field = "task_id", fields = TASK_FIELDS, run = status },
    { name = "consensus", summary = "The agreed result of a task with its confidence metrics (partial if early)",
      options = { task_id_opt }, id_field = "task_id",
      fields = { "task_id", "strategy", "status", "answer", "confidence", "agreeing", "dissenters", "partial", "missing" },
      run = consensus },
  },
}
