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
end)
