-- Swarms (spec §7, DESIGN.md §9) on a real node with a real miner: each
-- member's part is an agent job whose workflow (Lua, in the miner's
-- sandbox) really computes.  Map-reduce over input whose answer is known,
-- a shard that fails on one member and is retried on another, and a vote
-- with a dissenting member.
local cli = require "support.cli"
local json = require "aitbc.json"
local nodes = require "support.node"
local sys = require "aitbc.sys"

local COUNT = [[return function(req)
  if req.input:find('"stage":"reduce"', 1, true) then
    local sum = 0
    for n in req.input:gmatch('"(%d+)"') do sum = sum + tonumber(n) end
    return tostring(sum)
  end
  local n = 0
  for _ in req.input:gmatch("%S+") do n = n + 1 end
  return tostring(n)
end]]

describe("swarms", function()
  local node, home, env, sim

  local function aitbc(args) return node:cli(args, { home = home, env = env, timeout = 90 }) end

  local function agent(name, workflow)
    assert(sys.write_file(home .. "/" .. name .. ".json", json.encode { model = "llama3", workflow = workflow,
      limits = { steps = 2, tokens = 100, seconds = 30 } }))
    local r = aitbc { "-q", "agent", "create", "--name", name, "--type", "custom", "--config", home .. "/" .. name .. ".json" }
    assert.equal(0, r.code, r.err)
    return (r.out:gsub("%s+$", ""))
  end

  local function join(id, pool) assert.equal(0, aitbc({ "swarm", "join", "--agent-id", id, "--task-type", pool }).code) end

  local function run_task(pool, input, strategy, extra)
    local args = { "-q", "swarm", "task", "create", "--task-type", pool, "--input", input }
    for _, a in ipairs(extra or {}) do args[#args + 1] = a end
    local r = aitbc(args)
    assert.equal(0, r.code, r.err)
    local task_id = r.out:gsub("%s+$", "")
    r = aitbc { "-o", "json", "swarm", "coordinate", "--task-id", task_id, "--strategy", strategy, "--wait" }
    assert.equal(0, r.code, r.err)
    assert.equal("completed", r.json().status)
    r = aitbc { "-o", "json", "swarm", "consensus", "--task-id", task_id }
    assert.equal(0, r.code, r.err)
    return r.json(), task_id
  end

  setup(function()
    node = nodes.start { args = { "--log-level", "warn" } }
    home = cli.tempdir()
    env = { AITBC_CLIENT_KEY = node:key("client"), AITBC_MINER_KEY = node:key("miner") }
    local url
    sim, url = cli.echo_server { handler = "aitbc.ollama.sim", config = '{"token_delay": 0}' }
    assert(cli.spawn { argv = { cli.bin, "--url", node.url, "miner", "mine-ollama", "--model", "llama3", "--continuous",
      "--miner-id", "m1", "--ollama-url", url, "--poll-wait", "2", "--allow-custom-workflows" },
      env = { AITBC_HOME = cli.tempdir(), AITBC_MINER_KEY = env.AITBC_MINER_KEY }, stdout = "null", stderr = "null" })
  end)
  teardown(function() node:stop() sim:stop(1) end)

  it("map-reduce over shards of distinct members gives the exact count, with full coverage", function()
    local a, b = agent("count-a", COUNT), agent("count-b", COUNT)
    join(a, "word-count") join(b, "word-count")
    local words = {}
    for i = 1, 57 do words[#words + 1] = "w" .. i .. (i % 5 == 0 and "\n" or " ") end
    local c, task_id = run_task("word-count", table.concat(words), "map-reduce", { "--shards", "4" })
    assert.equal("57", c.answer)
    assert.equal(1, c.confidence.coverage)
    assert.equal(4, c.confidence.shards_done)
    assert.is_false(c.partial)
    local st = aitbc({ "-o", "json", "swarm", "status", "--task-id", task_id }).json()
    local members = {}
    for _, w in ipairs(st.work) do if w.stage == "map" then members[w.agent_id] = true end end
    assert.truthy(members[a] and members[b])
  end)

  it("a shard that fails on one member is retried on another", function()
    local broken = agent("broken", "return function() error('disk on fire') end")
    local good = agent("good", COUNT)
    join(broken, "retry-pool") join(good, "retry-pool")
    local c, task_id = run_task("retry-pool", "a b c\nd e\nf\n", "map-reduce", { "--shards", "2" })
    assert.equal("6", c.answer)
    assert.is_true(c.confidence.retried >= 1)
    local st = aitbc({ "-o", "json", "swarm", "status", "--task-id", task_id }).json()
    local retried_on_good = false
    for _, w in ipairs(st.work) do
      if w.stage == "map" and w.agent_id == good and w.state == "done" then retried_on_good = true end
    end
    assert.is_true(retried_on_good)
  end)

  it("a vote gives the majority with the share agreeing and the dissenter", function()
    local yes1 = agent("yes1", "return function() return 'Yes.' end")
    local yes2 = agent("yes2", "return function() return ' yes' end")
    local no = agent("no", "return function() return 'No' end")
    for _, id in ipairs { yes1, yes2, no } do join(id, "judges") end
    local c = run_task("judges", "is 7 prime?", "vote")
    assert.equal("yes", c.answer:lower():gsub("[%s%p]", ""))
    assert.near(2 / 3, c.confidence.share_agreeing, 1e-9)
    assert.equal(1, #c.dissenters)
    assert.equal(no, c.dissenters[1].agent_id)
  end)

  it("fed-avg trains a logistic regression across members to a known accuracy on held-out records", function()
    -- linearly separable: label 1 when 2*x1 - x2 + 1 > 0, with a margin; the generator is seeded
    local rows, seed = { "x1,x2,label" }, 12345
    local function uniform()
      seed = (seed * 1103515245 + 12345) % 2147483648
      return seed / 2147483648 * 10 - 5
    end
    while #rows < 301 do
      local x1, x2 = uniform(), uniform()
      local margin = 2 * x1 - x2 + 1
      if math.abs(margin) > 0.5 then rows[#rows + 1] = string.format("%.3f,%.3f,%d", x1, x2, margin > 0 and 1 or 0) end
    end
    local a, b, c = agent("learner-a", COUNT), agent("learner-b", COUNT), agent("learner-c", COUNT)
    for _, id in ipairs { a, b, c } do join(id, "distributed-training") end
    local r, task_id = run_task("distributed-training", table.concat(rows, "\n"), "fed-avg",
      { "--rounds", "3", "--epochs", "4", "--learning-rate", "0.2" })
    assert.is_false(r.partial)
    assert.equal("logistic", r.answer.model)
    assert.same({ "x1", "x2" }, r.answer.features)
    assert.equal(3, #r.answer.weights)
    -- the held-out fifth (60 records) is classified as the rule does
    assert.equal(60, r.confidence.evaluated_records)
    assert.equal("held-out records", r.confidence.evaluated_on)
    assert.is_true(r.confidence.accuracy >= 0.95, "accuracy " .. tostring(r.confidence.accuracy))
    -- the rule's direction: x1 up, x2 down
    assert.is_true(r.answer.weights[2] > 0 and r.answer.weights[3] < 0)
    assert.equal(3, r.confidence.rounds_done)
    assert.equal(3, r.confidence.members_reporting)
    assert.equal(240, r.confidence.samples)
    assert.is_true(r.confidence.weight_spread.max > 0 and r.confidence.weight_spread.mean <= r.confidence.weight_spread.max)
    -- later rounds do no worse than the first
    local h = r.confidence.history
    assert.is_true(h[3].loss <= h[1].loss)
    -- every round's member work was an ordinary job, one per shard per round
    local st = aitbc({ "-o", "json", "swarm", "status", "--task-id", task_id }).json()
    local per_round = {}
    for _, w in ipairs(st.work) do
      assert.equal("done", w.state)
      assert.equal("COMPLETED", w.job_state)
      per_round[w.stage] = (per_round[w.stage] or 0) + 1
    end
    assert.same({ ["round-1"] = 3, ["round-2"] = 3, ["round-3"] = 3 }, per_round)
    local text = aitbc { "swarm", "consensus", "--task-id", task_id }
    assert.equal(0, text.code, text.err)
    assert.matches("accuracy %d+%.%d%% on 60 held%-out records after 3 of 3 round%(s%)", text.out)
  end)

  it("fed-avg refuses input that is not a CSV of numbers, naming the record", function()
    local a = agent("learner-x", COUNT)
    join(a, "bad-training")
    local r = aitbc { "-q", "swarm", "task", "create", "--task-type", "bad-training", "--input", "x,label\n1,0\ntwo,1\n" }
    local task_id = r.out:gsub("%s+$", "")
    r = aitbc { "swarm", "coordinate", "--task-id", task_id, "--strategy", "fed-avg" }
    assert.equal(1, r.code)
    assert.matches("record 2, column x: 'two' is not a number", r.err)
  end)

  it("a pipeline hands each stage's answer to the next member", function()
    local upper = agent("upper", "return function(req) return (req.input:upper()) end")
    local exclaim = agent("exclaim", "return function(req) return req.input .. '!' end")
    local count = agent("len", "return function(req) return req.input .. ' (' .. #req.input .. ')' end")
    for _, id in ipairs { upper, exclaim, count } do join(id, "polish") end
    local c, task_id = run_task("polish", "hello swarm", "pipeline")
    assert.equal("HELLO SWARM! (12)", c.answer)
    assert.equal(3, c.confidence.stages_done)
    local st = aitbc({ "-o", "json", "swarm", "status", "--task-id", task_id }).json()
    assert.equal(3, #st.work)
    for i, id in ipairs { upper, exclaim, count } do
      assert.equal(i, st.work[i].part)
      assert.equal(id, st.work[i].agent_id)
    end
  end)
end)

-- Escrow on members' jobs: the task's creator pays each one from a wallet
-- (--pay-per-job); each job is held, offered to no miner, until its escrow
-- is funded, and released to the miner that completed it.
describe("swarm member jobs paid by the task's creator", function()
  local node, home, env, miner_home, sim

  local function aitbc(args) return node:cli(args, { home = home, env = env, timeout = 90 }) end
  local function balance(h) return tonumber(node:cli({ "-o", "json", "wallet", "balance" }, { home = h }).json().available) end

  setup(function()
    node = nodes.start { args = { "--block-time", "0.2", "--log-level", "warn" } }
    home, miner_home = cli.tempdir(), cli.tempdir()
    env = { AITBC_CLIENT_KEY = node:key("client"), AITBC_WALLET_PASSWORD = "payer pw" }
    assert.equal(0, aitbc({ "wallet", "create", "--name", "payer" }).code)
    assert.equal(0, aitbc({ "wallet", "faucet", "--amount", "100" }).code)
    local miner_env = { AITBC_HOME = miner_home, AITBC_MINER_KEY = node:key("miner"), AITBC_WALLET_PASSWORD = "rig password" }
    assert.equal(0, node:cli({ "wallet", "create", "--name", "rig" }, { home = miner_home, env = miner_env }).code)
    local url
    sim, url = cli.echo_server { handler = "aitbc.ollama.sim", config = '{"token_delay": 0}' }
    assert(cli.spawn { argv = { cli.bin, "--url", node.url, "miner", "mine-ollama", "--model", "llama3", "--continuous",
      "--miner-id", "paid-rig", "--ollama-url", url, "--poll-wait", "2", "--allow-custom-workflows" },
      env = miner_env, stdout = "null", stderr = "null" })
  end)
  teardown(function() node:stop() sim:stop(1) end)

  local function agent(name)
    assert(sys.write_file(home .. "/" .. name .. ".json", json.encode { model = "llama3", workflow = COUNT,
      limits = { steps = 2, tokens = 100, seconds = 30 } }))
    local r = aitbc { "-q", "agent", "create", "--name", name, "--type", "custom", "--config", home .. "/" .. name .. ".json" }
    assert.equal(0, r.code, r.err)
    local id = r.out:gsub("%s+$", "")
    assert.equal(0, aitbc({ "swarm", "join", "--agent-id", id, "--task-type", "paid-count" }).code)
    return id
  end

  local function status(task_id) return aitbc({ "-o", "json", "swarm", "status", "--task-id", task_id }).json() end

  it("holds each member job until the creator's escrow for it is funded, then releases it to the miner", function()
    agent("paid-a") agent("paid-b")
    local r = aitbc { "-q", "swarm", "task", "create", "--task-type", "paid-count", "--input", "a b c\nd e\n",
      "--shards", "2", "--pay-per-job", "2" }
    assert.equal(0, r.code, r.err)
    local task_id = r.out:gsub("%s+$", "")
    local payer_before = balance(home)
    -- dispatched through the API (nobody pays yet): both map jobs are held
    local code = node:request("POST", "/v1/swarm/tasks/" .. task_id .. "/coordinate",
      { key = env.AITBC_CLIENT_KEY, json = { strategy = "map-reduce" } })
    assert.equal(202, code)
    local st = status(task_id)
    assert.equal(2, #st.work)
    for _, w in ipairs(st.work) do
      assert.equal("awaiting", w.payment_status)
      assert.equal("QUEUED", w.job_state)
      local job = aitbc({ "-o", "json", "client", "status", w.job_id }).json()
      assert.is_true(job.held_for_payment)
    end
    r = aitbc { "swarm", "pay", "--task-id", task_id }
    assert.equal(0, r.code, r.err)
    assert.matches("paid for 2 held job%(s%) of task " .. task_id .. " %(2 AITBC each%)", r.out)
    -- the maps run once funded; the reduce job that follows is held in turn
    cli.wait_for("the reduce job, held", function()
      for _, w in ipairs(status(task_id).work) do if w.stage == "reduce" and w.payment_status == "awaiting" then return true end end
    end)
    r = aitbc { "swarm", "pay", "--task-id", task_id }
    assert.equal(0, r.code, r.err)
    assert.matches("paid for 1 held job%(s%)", r.out)
    cli.wait_for("the task to complete", function() return status(task_id).status == "completed" end)
    assert.equal("5", aitbc({ "-o", "json", "swarm", "consensus", "--task-id", task_id }).json().answer)
    cli.wait_for("every escrow released to the miner", function()
      for _, w in ipairs(status(task_id).work) do if w.payment_status ~= "released" then return false end end
      return true
    end)
    assert.equal(payer_before - 6, balance(home))
  end)

  it("coordinate --wait pays the held jobs as they come", function()
    local r = aitbc { "-q", "swarm", "task", "create", "--task-type", "paid-count", "--input", "x y\nz\n", "--shards", "2",
      "--pay-per-job", "1.5" }
    local task_id = r.out:gsub("%s+$", "")
    r = aitbc { "swarm", "coordinate", "--task-id", task_id, "--wait" }
    assert.equal(0, r.code, r.err)
    assert.matches("status%s+completed", r.out)
    assert.matches("paid 1.5 AITBC for map 1's job", r.err)
    assert.matches("paid 1.5 AITBC for reduce 0's job", r.err)
  end)
end)
