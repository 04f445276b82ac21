--- Swarms on the node (DESIGN.md §9): pools of agents per task type, tasks,
-- and their coordination.  Each member's work is an ordinary agent job of
-- that member's agent (matching, receipts, events), owned by the task's
-- creator.  The supervisor (M.sweep) moves tasks on: a failed shard goes to
-- another member, the reduce job follows the last map, and the task ends
-- when its strategy has what it needs.
--   map-reduce  the input split by lines into shards, one per distinct member
--               (round robin when there are more shards), then a reduce job
--               over the shards' answers, run by the first member
--   vote        the same input to every member; the majority of normalised answers
--   fed-avg     distributed training (swarm/fedavg.lua): the CSV's training
--               records split into shards, one per member; each round every
--               shard's member trains from the averaged weights, the
--               coordinator averages theirs by samples and scores them on the
--               held-out records; R rounds
--   pipeline    the members in pool order are stages: each stage's job gets
--               the previous stage's answer as its input
local definition = require "aitbc.agents.definition"
local jobs = require "aitbc.node.jobs"
local fedavg = require "aitbc.swarm.fedavg"
local json = require "aitbc.json"
local sw = require "aitbc.swarm"
local util = require "aitbc.node.util"

local fail, invalid = util.fail, util.invalid

local M = {}
local dispatch_round -- defined below coordinate's helpers

local function own_agent(ctx, agent_id)
  local row = type(agent_id) == "string" and ctx.store:agent_get(agent_id)
  if not row or (row.owner_key_id ~= ctx.key.key_id and ctx.key.role ~= "admin") then
    fail(404, "agent_not_found", "agent " .. tostring(agent_id) .. " not found (create one: aitbc agent create)", "agent_id")
  end
  return row
end

local function task_type_of(body, field)
  local t = util.optional_string(body, field or "task_type", 64)
  if not t or not t:match("^[%w][%w_%-%.]*$") then
    invalid(field or "task_type", "is required: a word like distributed-training (letters, digits, _ - .)")
  end
  return t
end

-- ---- pools ----

--- POST /v1/swarm/members {agent_id, task_type}
function M.join(ctx)
  local body = ctx:body_object()
  local row = own_agent(ctx, body.agent_id)
  local task_type = task_type_of(body)
  local new = ctx.store:swarm_join { task_type = task_type, agent_id = row.agent_id, owner_key_id = ctx.key.key_id,
    joined_at = ctx.now }
  return new and 201 or 200, { agent_id = row.agent_id, task_type = task_type, status = "awaiting coordination",
    already = not new or nil, pool_size = #ctx.store:swarm_members(task_type) }
end

--- DELETE /v1/swarm/members?agent_id=&task_type=
function M.leave(ctx)
  own_agent(ctx, ctx.query.agent_id)
  local task_type = task_type_of(ctx.query)
  if not ctx.store:swarm_leave(task_type, ctx.query.agent_id) then
    fail(404, "not_a_member", "agent " .. ctx.query.agent_id .. " is not in the " .. task_type .. " pool")
  end
  return 200, { agent_id = ctx.query.agent_id, task_type = task_type, status = "left" }
end

--- GET /v1/swarm/members?task_type=
function M.members(ctx)
  local items = json.array()
  for i, m in ipairs(ctx.store:swarm_members(ctx.query.task_type ~= "" and ctx.query.task_type or nil)) do
    local a = ctx.store:agent_get(m.agent_id)
    items[i] = { agent_id = m.agent_id, task_type = m.task_type, joined_at = util.iso(m.joined_at),
      name = a and a.name, mine = m.owner_key_id == ctx.key.key_id }
  end
  return 200, { items = items }
end

-- ---- tasks ----

--- POST /v1/swarm/tasks {task_type, input, shards?, members?, csv?}
function M.create(ctx)
  local body = ctx:body_object()
  local task_type = task_type_of(body)
  local input = util.optional_string(body, "input", sw.MAX_INPUT)
  if not input or input == "" then invalid("input", "is required: the text (or file contents) to work on") end
  local spec = { input = input, shards = util.optional_integer(body, "shards", 1, sw.MAX_SHARDS),
    members = util.optional_integer(body, "members", 1, 1000), csv = body.csv == true or nil,
    instruction = util.optional_string(body, "instruction", 4096),
    -- fed-avg: the model, and how long and fast each member trains
    regression = util.optional_string(body, "regression", 16), label = util.optional_string(body, "label", 200),
    rounds = util.optional_integer(body, "rounds", 1, 100), epochs = util.optional_integer(body, "epochs", 1, 1000),
    learning_rate = util.optional_number(body, "learning_rate", 1e-9, 10),
    -- each member job held until the task's creator pays this much for it
    pay_per_job = body.pay_per_job ~= nil and util.rate(body.pay_per_job, "pay_per_job") or nil }
  if spec.regression and not fedavg.MODELS[spec.regression] then invalid("regression", "must be logistic or linear") end
  if spec.pay_per_job == 0 then invalid("pay_per_job", "must be more than 0 (or left out: the jobs are not paid)") end
  local task_id = "swt_" .. util.new_id(8)
  ctx.store:swarm_task_insert { task_id = task_id, owner_key_id = ctx.key.key_id, task_type = task_type,
    spec = json.encode(spec), now = ctx.now }
  return 201, M.view(ctx.store, ctx.store:swarm_task(task_id))
end

--- An agent job of member agent_id for the task's owner; train: a fed-avg
-- round's request (the trainer runs instead of the agent's workflow, so a
-- miner needs no custom workflows for it).  Held until paid when the task
-- pays per job.
local function member_job(store, task, agent_id, input, swarm_info, now, train)
  local row = store:agent_get(agent_id)
  if not row then return nil end
  local def = json.decode(row.definition)
  local needs = definition.needs(def, false)
  if train then needs.custom_workflow, needs.tools = nil, nil end
  local ctx = { store = store, now = now, key = { key_id = task.owner_key_id } }
  local job = jobs.enqueue(ctx, { job_type = "agent", model = needs.models[1], needs = needs,
    ttl = json.decode(task.spec).pay_per_job and 3600 or 900, run_timeout = def.limits.seconds + 60,
    payment_amount = json.decode(task.spec).pay_per_job,
    payload = { agent = { agent_id = agent_id, version = row.defined_version, name = row.name, definition = def },
      input = input, train = train, data = { swarm = { format = "json", content = json.encode(swarm_info) } } } })
  return job.job_id
end

--- A task's instruction (if any) before the member's input.
local function with_instruction(task, input)
  local spec = json.decode(task.spec)
  return spec.instruction and (spec.instruction .. "\n\n" .. input) or input
end

local function dispatch(store, task, stage, part, agent_id, text, tried, now, train)
  local job_id = member_job(store, task, agent_id, text, { task_id = task.task_id, task_type = task.task_type,
    strategy = task.strategy, stage = stage, part = part }, now, train)
  if not job_id then return false end
  store:swarm_work_insert { task_id = task.task_id, stage = stage, part = part, agent_id = agent_id, job_id = job_id,
    tried = json.encode(tried), created_at = now }
  return true
end

--- The training records' shards of a fed-avg task (as at coordinate).
local function training_shards(task, state)
  local spec = json.decode(task.spec)
  local prep = assert(fedavg.prepare(spec.input, spec.label))
  return sw.split(prep.train, state.shards, true), prep
end

--- A fed-avg round: every shard to its member, from the averaged weights; -> how many dispatched.
dispatch_round = function(store, task, state, shards, members, now)
  local _, prep = training_shards(task, state)
  local n = 0
  for i, shard in ipairs(shards) do
    local agent = members[(i - 1) % #members + 1]
    local train = { model = state.model, epochs = state.epochs, learning_rate = state.learning_rate, label = state.label,
      weights = state.weights, scale = prep.scale, round = state.round }
    if dispatch(store, task, "round-" .. state.round, i, agent, shard, { agent }, now, train) then n = n + 1 end
  end
  return n
end

--- Each strategy's first dispatch: -> jobs dispatched, fed-avg's state.
local START = {
  ["map-reduce"] = function(store, task, spec, members, now)
    local n = 0
    for i, shard in ipairs(sw.split(spec.input, spec.shards or #members, spec.csv)) do
      local agent = members[(i - 1) % #members + 1]
      if dispatch(store, task, "map", i, agent, with_instruction(task, shard), { agent }, now) then n = n + 1 end
    end
    return n
  end,
  vote = function(store, task, spec, members, now)
    local n = 0
    for i, agent in ipairs(members) do
      if dispatch(store, task, "vote", i, agent, with_instruction(task, spec.input), { agent }, now) then n = n + 1 end
    end
    return n
  end,
  ["fed-avg"] = function(store, task, spec, members, now)
    local prep, why = fedavg.prepare(spec.input, spec.label)
    if not prep then invalid("input", "fed-avg trains on a CSV of numbers with a header line: " .. why) end
    local shards = sw.split(prep.train, spec.shards or #members, true)
    local state = { round = 1, rounds = spec.rounds or 5, shards = #shards, model = spec.regression or "logistic",
      epochs = spec.epochs or 5, learning_rate = spec.learning_rate or 0.1, label = prep.label, features = prep.names,
      history = json.array() }
    return dispatch_round(store, task, state, shards, members, now), state
  end,
  pipeline = function(store, task, spec, members, now)
    return dispatch(store, task, "stage", 1, members[1], with_instruction(task, spec.input), { members[1] }, now)
      and 1 or 0
  end,
}

--- POST /v1/swarm/tasks/{id}/coordinate {strategy}
function M.coordinate(ctx, task_id)
  local task = ctx.store:swarm_task(task_id)
  if not task or (task.owner_key_id ~= ctx.key.key_id and ctx.key.role ~= "admin") then
    fail(404, "task_not_found", "swarm task " .. task_id .. " not found (aitbc swarm task create)")
  end
  local strategy = util.optional_string(ctx:body_object(), "strategy", 32) or "map-reduce"
  if not sw.STRATEGIES[strategy] then invalid("strategy", "must be one of " .. sw.STRATEGY_NAMES) end
  if task.status ~= "created" then
    fail(409, "already_coordinated", "task " .. task_id .. " was dispatched already (" .. tostring(task.run_id) .. ")")
  end
  local spec = json.decode(task.spec)
  local members = {}
  for _, m in ipairs(ctx.store:swarm_members(task.task_type)) do
    if not spec.members or #members < spec.members then members[#members + 1] = m.agent_id end
  end
  if #members == 0 then
    fail(409, "no_members", "nobody is in the " .. task.task_type .. " pool: aitbc swarm join --agent-id AGENT "
      .. "--task-type " .. task.task_type)
  end
  task.strategy = strategy
  local run_id = "swr_" .. util.new_id(8)
  local n, state = START[strategy](ctx.store, task, spec, members, ctx.now)
  ctx.store:swarm_task_update(task_id, { status = "running", strategy = strategy, run_id = run_id,
    members = json.encode(json.array(members)), result = state and json.encode { fedavg = state }, now = ctx.now })
  local view = M.view(ctx.store, ctx.store:swarm_task(task_id))
  view.dispatched = n
  return 202, view
end

-- ---- the coordinator's turn ----

local function answer_of(job_result)
  local r = job_result and json.decode(job_result)
  local a = type(r) == "table" and (r.answer or r.result) or r
  return type(a) == "string" and a or json.encode(a)
end

--- Another member for a failed part (one that has not tried it), its job dispatched; -> whether it was.
local function retry(store, task, w, members, now)
  local tried = json.decode(w.tried)
  local seen, next_agent = {}, nil
  for _, a in ipairs(tried) do seen[a] = true end
  for _, a in ipairs(members) do if not seen[a] and not next_agent then next_agent = a end end
  if not next_agent or w.stage == "reduce" or task.strategy == "pipeline" then return false end
  tried[#tried + 1] = next_agent
  local same = json.decode(store:job_get(w.job_id).payload)
  if not dispatch(store, task, w.stage, w.part, next_agent, same.input, tried, now, same.train) then return false end
  store:swarm_work_set(task.task_id, w.seq, "retried", nil)
  return true
end

--- Members' jobs that ended: their answers kept, failed parts retried elsewhere; -> whether any ended.
local function collect(store, task, members, now)
  local changed = false
  for _, w in ipairs(store:swarm_work(task.task_id)) do
    if w.state == "running" and w.job_state == "COMPLETED" then
      store:swarm_work_set(task.task_id, w.seq, "done", answer_of(w.job_result))
      changed = true
    elseif w.state == "running" and (w.job_state == "FAILED" or w.job_state == "EXPIRED" or w.job_state == "CANCELED") then
      store:swarm_work_set(task.task_id, w.seq, "failed", json.encode { error = w.job_error, state = w.job_state })
      retry(store, task, w, members, now)
      changed = true
    end
  end
  return changed
end

--- A part that failed everywhere it could go ("map 3"), or nil.
local function lost_part(work)
  local done, open, failed = {}, {}, {}
  for _, w in ipairs(work) do
    local key = w.stage .. " " .. w.part
    if w.stage ~= "reduce" then
      if w.state == "done" then done[key] = true
      elseif w.state == "running" then open[key] = true
      elseif w.state == "failed" then failed[key] = true end
    end
  end
  for key in pairs(failed) do if not done[key] and not open[key] then return key end end
end

--- Map-reduce once every map part is in: the reduce job, then the result.
local function reduce_step(store, task, work, members, now)
  local by_part, parts, reduce = {}, 0, nil
  for _, w in ipairs(work) do
    if w.stage == "reduce" then reduce = w
    elseif w.state == "done" then by_part[w.part] = w parts = math.max(parts, w.part) end
  end
  if not reduce then
    local answers = json.array()
    for p = 1, parts do answers[p] = by_part[p] and by_part[p].output end
    -- the reduce goes to a member whose map part succeeded
    local reducer = (by_part[1] or next(by_part) and by_part[next(by_part)] or {}).agent_id or members[1]
    dispatch(store, task, "reduce", 0, reducer, with_instruction(task, json.encode { stage = "reduce", parts = answers }),
      { reducer }, now)
    return true
  elseif reduce.state == "done" then
    store:swarm_task_update(task.task_id, { status = "completed", result = json.encode { answer = reduce.output }, now = now })
    return true
  elseif reduce.state == "failed" then
    store:swarm_task_update(task.task_id, { status = "failed", error = "the reduce job failed", now = now })
    return true
  end
  return false
end

--- A member's training result, or nil when it is not one for these features.
local function trained(output, features)
  local r = json.decode(output or "")
  if type(r) ~= "table" or type(r.weights) ~= "table" or #r.weights ~= features + 1 or math.type(r.samples) ~= "integer"
    or r.samples < 1 then return nil end
  for _, v in ipairs(r.weights) do if type(v) ~= "number" or v ~= v or v == math.huge or v == -math.huge then return nil end end
  return r
end

--- Fed-avg once a round's members are in: their weights averaged by
-- samples, scored on the held-out records, then the next round or the end.
-- A shard lost everywhere is left out of the round (as Flower tolerates
-- failed clients); a round with no weights at all fails the task.
local function fedavg_step(store, task, work, members, now)
  local state = json.decode(task.result).fedavg
  local stage = "round-" .. state.round
  local results = {}
  for _, w in ipairs(work) do
    if w.stage == stage and w.state == "running" then return false end
    if w.stage == stage and w.state == "done" then results[#results + 1] = trained(w.output, #state.features) end
  end
  if #results == 0 then
    store:swarm_task_update(task.task_id, { status = "failed", error = "round " .. state.round
      .. ": no member returned weights", now = now })
    return true
  end
  local shards, prep = training_shards(task, state)
  local weights, samples, spread = fedavg.average(results)
  local scored = #prep.heldout.rows > 0 and prep.heldout or fedavg.lib().parse(prep.train, state.label)
  local score = fedavg.lib().evaluate(state.model, weights, scored, prep.scale)
  state.weights = weights
  state.history[#state.history + 1] = { round = state.round, members_reporting = #results, shards = state.shards,
    samples = samples, loss = score.loss, accuracy = score.accuracy, weight_spread = spread }
  state.evaluated_on = #prep.heldout.rows > 0 and "held-out records" or "training records (too few to hold any out)"
  state.evaluated_records = score.samples
  if state.round < state.rounds then
    state.round = state.round + 1
    dispatch_round(store, task, state, shards, members, now)
    store:swarm_task_update(task.task_id, { result = json.encode { fedavg = state }, now = now })
  else
    state.done = true
    store:swarm_task_update(task.task_id, { status = "completed", result = json.encode { fedavg = state }, now = now })
  end
  return true
end

--- Pipeline: the next stage gets the answer of the one before; the last one's is the result.
local function pipeline_step(store, task, work, members, now)
  local last
  for _, w in ipairs(work) do
    if w.state == "running" then return false end
    if w.state == "done" and (not last or w.part > last.part) then last = w end
  end
  for _, w in ipairs(work) do
    if w.state == "failed" and (not last or w.part > last.part) then
      store:swarm_task_update(task.task_id, { status = "failed", error = "stage " .. w.part .. " (" .. w.agent_id
        .. ") failed: " .. tostring((json.decode(w.output or "") or {}).error), now = now })
      return true
    end
  end
  if last and last.part >= #members then
    store:swarm_task_update(task.task_id, { status = "completed", result = json.encode { answer = last.output }, now = now })
    return true
  end
  local next_part = last and last.part + 1 or 1
  dispatch(store, task, "stage", next_part, members[next_part], with_instruction(task, last.output),
    { members[next_part] }, now)
  return true
end

--- Moves one running task on; -> whether anything changed.
local function advance(store, task, now)
  local members = json.decode(task.members or "[]")
  local changed = collect(store, task, members, now)
  local work = store:swarm_work(task.task_id)
  if task.strategy == "fed-avg" then return fedavg_step(store, task, work, members, now) or changed end
  if task.strategy == "pipeline" then return pipeline_step(store, task, work, members, now) or changed end
  local lost = lost_part(work)
  if lost then
    store:swarm_task_update(task.task_id, { status = "failed", error = lost
      .. " failed on every member that could take it", now = now })
    return true
  end
  for _, w in ipairs(work) do if w.stage ~= "reduce" and w.state == "running" then return changed end end
  if task.strategy == "map-reduce" then return reduce_step(store, task, work, members, now) or changed end
  store:swarm_task_update(task.task_id, { status = "completed", now = now })
  return true
end

--- The supervisor's turn: running tasks moved on; -> how many changed.
function M.sweep(store, now)
  local n = 0
  for _, task in ipairs(store:swarm_running()) do
    if advance(store, task, now) then n = n + 1 end
  end
  return n
end

-- ---- views ----

function M.view(store, task)
  local work = store:swarm_work(task.task_id)
  local items, done, total_parts, failed = json.array(), 0, 0, 0
  for i, w in ipairs(work) do
    items[i] = { seq = w.seq, stage = w.stage, part = w.part, agent_id = w.agent_id, job_id = w.job_id, state = w.state,
      job_state = w.job_state, payment_status = w.job_payment_status,
      payment_amount = w.job_payment_amount and require("aitbc.money").format(w.job_payment_amount) or nil }
    if w.stage ~= "reduce" and w.state == "done" then done = done + 1 end
    if w.state == "failed" then failed = failed + 1 end
    if w.stage ~= "reduce" then total_parts = math.max(total_parts, w.part) end
  end
  local spec = json.decode(task.spec)
  local state = task.strategy == "fed-avg" and task.result and json.decode(task.result).fedavg
  if state then total_parts = state.shards * state.rounds end -- every round's shards
  if task.strategy == "pipeline" then total_parts = #json.decode(task.members or "[]") end
  return { task_id = task.task_id, task_type = task.task_type, status = task.status, strategy = task.strategy,
    tracking_id = task.run_id, members = task.members and json.decode(task.members) or json.array(),
    shards = spec.shards, members_wanted = spec.members, input_bytes = #spec.input,
    pay_per_job = spec.pay_per_job and require("aitbc.money").format(spec.pay_per_job) or nil,
    progress = { parts = total_parts, done = done, failed = failed, reduce = task.strategy == "map-reduce" and
      (function() for _, w in ipairs(work) do if w.stage == "reduce" then return w.state end end return "waiting" end)()
      or nil, round = state and state.round, rounds = state and state.rounds }, work = items, error = task.error,
    created_at = util.iso(task.created_at), updated_at = util.iso(task.updated_at) }
end

local function own_task(ctx, task_id)
  local task = ctx.store:swarm_task(task_id)
  if not task or (task.owner_key_id ~= ctx.key.key_id and ctx.key.role ~= "admin") then
    fail(404, "task_not_found", "swarm task " .. task_id .. " not found")
  end
  return task
end

function M.show(ctx, task_id) return 200, M.view(ctx.store, own_task(ctx, task_id)) end

--- Each strategy's agreed answer and confidence, counted from what members returned.
local CONFIDENCE = {
  ["fed-avg"] = function(out, c)
    local state = c.task.result and json.decode(c.task.result).fedavg or {}
    local last = state.history and state.history[#state.history] or {}
    out.answer = state.weights and { model = state.model, label = state.label, features = state.features,
      weights = state.weights, standardized = true } or nil
    out.confidence = { rounds_done = state.history and #state.history or 0, rounds = state.rounds,
      accuracy = last.accuracy, loss = last.loss, evaluated_on = state.evaluated_on,
      evaluated_records = state.evaluated_records, weight_spread = last.weight_spread,
      members_reporting = last.members_reporting, shards = state.shards, samples = last.samples, history = state.history }
  end,
  pipeline = function(out, c)
    local stages, done_stages, last = #c.view.members, 0, nil
    for _, w in ipairs(c.work) do
      if w.state == "done" then done_stages, last = done_stages + 1, w.output end
    end
    out.answer = c.task.status == "completed" and last or nil
    out.confidence = { stages = stages, stages_done = done_stages, coverage = stages > 0 and done_stages / stages or 0 }
  end,
  vote = function(out, c)
    local t = sw.tally(c.answers)
    out.answer, out.agreeing, out.dissenters, out.tie = t.answer, t.agreeing, t.dissenters, t.tie
    out.confidence = { share_agreeing = t.share, votes = t.votes, members = #c.view.members,
      coverage = #c.view.members > 0 and t.votes / #c.view.members or 0 }
  end,
  ["map-reduce"] = function(out, c)
    out.answer = c.reduce and c.reduce.state == "done" and c.reduce.output or nil
    local covered, retries, parts = 0, 0, c.view.progress.parts
    for _ in pairs(c.parts) do covered = covered + 1 end
    for _, w in ipairs(c.view.work) do if w.state == "retried" then retries = retries + 1 end end
    out.confidence = { coverage = parts > 0 and covered / parts or 0, shards = parts, shards_done = covered,
      retried = retries, reduced = out.answer ~= nil }
  end,
}

--- GET /v1/swarm/tasks/{id}/consensus: the agreed result and how sure it is.
function M.consensus(ctx, task_id)
  local task = own_task(ctx, task_id)
  local view = M.view(ctx.store, task)
  local answers, missing, parts = {}, json.array(), {}
  local reduce
  for _, w in ipairs(ctx.store:swarm_work(task_id)) do
    if w.stage == "reduce" then reduce = w
    elseif w.state == "done" then answers[w.agent_id .. (task.strategy == "map-reduce" and ("#" .. w.part) or "")] = w.output
      parts[w.stage .. " " .. w.part] = true
    end
  end
  for _, w in ipairs(view.work) do
    if w.stage ~= "reduce" and not parts[w.stage .. " " .. w.part] and w.state == "running" then
      missing[#missing + 1] = { stage = w.stage, part = w.part, agent_id = w.agent_id, job_id = w.job_id,
        payment_status = w.payment_status }
    end
  end
  local out = { task_id = task_id, tracking_id = task.run_id, strategy = task.strategy, status = task.status,
    partial = task.status ~= "completed", missing = missing }
  local confidence = CONFIDENCE[task.strategy] or CONFIDENCE["map-reduce"]
  confidence(out, { task = task, view = view, answers = answers, parts = parts, reduce = reduce,
    work = ctx.store:swarm_work(task_id) })
  return 200, out
end

return M
