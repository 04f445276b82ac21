-- Agents end to end (spec §5, §11): a node, the simulated Ollama, a real
-- `aitbc miner mine-ollama`, and the spec's command lines typed as a user
-- would.  The agent's tool calls, observations and answer come from the
-- model and from tools that really ran on the miner.
local cli = require "support.cli"
local json = require "aitbc.json"
local nodes = require "support.node"
local png = require "aitbc.agents.png"
local sys = require "aitbc.sys"

local CONFIG = {
  model = "llama3",
  system_prompt = "You are a financial analyst. Use the tools; never guess numbers.",
  tools = { "csv_query", "calculator" },
  limits = { steps = 6, tokens = 8000, seconds = 120 },
  parameters = { temperature = 0.1 },
  data = { q3 = "file:q3.csv" },
}

describe("agents on the network", function()
  local node, home, env, sim, sim_url

  local function aitbc(args, opts)
    opts = opts or {}
    return node:cli(args, { home = home, env = env, timeout = opts.timeout or 90 })
  end

  local function miner(id, extra)
    local argv = { cli.bin, "--url", node.url, "miner", "mine-ollama", "--model", "llama3", "--continuous",
      "--miner-id", id, "--ollama-url", sim_url, "--poll-wait", "2" }
    for _, a in ipairs(extra or {}) do argv[#argv + 1] = a end
    return assert(cli.spawn { argv = argv, env = { AITBC_HOME = cli.tempdir(), AITBC_MINER_KEY = env.AITBC_MINER_KEY },
      stdout = "pipe", stderr = "pipe" })
  end

  setup(function()
    node = nodes.start { args = { "--log-level", "warn" } }
    home = cli.tempdir()
    env = { AITBC_CLIENT_KEY = node:key("client"), AITBC_MINER_KEY = node:key("miner") }
    sim, sim_url = cli.echo_server { handler = "aitbc.ollama.sim", config = '{"token_delay": 0}' }
    assert(sys.write_file(home .. "/q3.csv", "region,revenue\neu,120\nus,200\nasia,95\n"))
    local config = {}
    for k, v in pairs(CONFIG) do config[k] = v end
    assert(sys.write_file(home .. "/agent_config.json", json.encode(config)))
    miner("m-plain")
  end)
  teardown(function()
    node:stop()
    sim:stop(1)
  end)

  local agent_id
  it("5.1 creates the agent from agent_config.json: registered and ready", function()
    local r = aitbc { "agent", "create", "--name", "data_analyzer", "--type", "analysis", "--config",
      home .. "/agent_config.json" }
    assert.equal(0, r.code, r.err)
    agent_id = r.out:match("registered and ready: (agent_%x+)")
    assert.is_string(agent_id, r.out)
    assert.matches("tools%s+csv_query, calculator", r.out)
    assert.matches("data%s+q3", r.out)
    -- a bad config names the file and the field
    assert(sys.write_file(home .. "/bad.json", '{"model": "llama3", "tools": ["teleport"]}'))
    local bad = aitbc { "agent", "create", "--name", "x", "--config", home .. "/bad.json" }
    assert.equal(2, bad.code)
    assert.matches("bad%.json: tools%[1%] is not a tool aitbc has", bad.err)
  end)

  it("5.2 executes it: its steps live, the answer from the tool's real output, and a verified receipt", function()
    local r = aitbc { "agent", "execute", agent_id, "--input", "Analyze Q3 financial data" }
    assert.equal(0, r.code, r.err)
    assert.matches("Step 1", r.out)
    assert.matches("→ csv_query {.*\"dataset\":\"q3\"", r.out)
    assert.matches("← csv_query: .*\"sum\":415", r.out) -- 120 + 200 + 95, computed by the tool on the miner
    assert.matches("Answer\n.*415", r.out)
    assert.matches("signature verified against the node's key", r.out)
    -- JSON: one document with the steps, the answer, the usage and the receipt
    local doc = aitbc({ "-o", "json", "agent", "execute", agent_id, "--input", "Analyze Q3 financial data" }).json()
    local kinds = {}
    for _, e in ipairs(doc.events) do kinds[e.type] = true end
    assert.is_true(kinds["tool_called"] and kinds["tool_output"] and kinds["answer"] and kinds["job.completed"])
    assert.matches("415", doc.answer)
    assert.is_true(doc.receipt_verified)
    assert.is_true(doc.usage.model_calls >= 2)
    -- --stream: NDJSON events as they happen, then the result
    local s = aitbc { "-o", "json", "agent", "execute", agent_id, "--input", "What is 12 * 12?", "--stream" }
    assert.equal(0, s.code, s.err)
    local lines = {}
    for line in s.out:gmatch("[^\n]+") do lines[#lines + 1] = assert(json.decode(line)) end
    assert.equal("result", lines[#lines].type)
    assert.matches("144", lines[#lines].result.answer)
    assert.equal("job.queued", lines[1].type)
  end)

  it("11.1 processes an image and text together on the agent's vision model", function()
    local r = aitbc { "agent", "update", agent_id, "--vision-model", "llava" }
    assert.equal(0, r.code, r.err)
    local c = png.canvas(64, 32, { 255, 255, 255 })
    c:rect(8, 8, 20, 16, { 200, 30, 30 })
    assert(sys.write_file(home .. "/image.png", c:png()))
    local m = aitbc { "multimodal", "process", "--agent-id", agent_id, "--image", home .. "/image.png", "--text",
      "Analyze this chart" }
    assert.equal(0, m.code, m.err)
    assert.matches("submitted: job %x+ %(multimodal%)", m.out)
    assert.matches("image 1 is a 64x32 PNG", m.out)
    -- what is not an image is refused here, naming the file
    assert(sys.write_file(home .. "/notes.jpg", "meeting notes"))
    local bad = aitbc { "multimodal", "process", "--agent-id", agent_id, "--image", home .. "/notes.jpg" }
    assert.equal(2, bad.code)
    assert.matches("notes%.jpg is not a PNG, JPEG, WebP or GIF image", bad.err)
  end)

  it("11.2 benchmarks per input type, audio reported as unsupported", function()
    local doc = aitbc({ "-o", "json", "multimodal", "benchmark", "--agent-id", agent_id, "--tasks", "2" },
      { timeout = 120 }).json()
    local text, vision, audio = doc.modalities.text, doc.modalities.vision, doc.modalities.audio
    assert.same({ true, 2, 0 }, { text.supported, text.tasks, text.failed })
    assert.is_true(text.runs[1].correct) -- the simulated model computes arithmetic...
    assert.is_false(text.runs[2].correct) -- ...but does not read an invoice: graded as it answered
    assert.equal(0.5, text.accuracy)
    assert.is_number(text.latency_ms.p50)
    assert.is_number(text.tokens_per_second)
    assert.is_number(text.ttft_ms.p50)
    assert.same({ true, 2, 0 }, { vision.supported, vision.tasks, vision.failed })
    assert.is_false(audio.supported)
    assert.matches("no audio input", audio.reason)
    assert.is_true(doc.simulated)
    local human = aitbc({ "multimodal", "benchmark", "--agent-id", agent_id, "--tasks", "1" }, { timeout = 120 })
    assert.matches("audio%s+%-%s+unsupported", human.out)
    assert.matches("simulated one: accuracy reflects the simulator", human.out)
  end)

  it("runs custom workflows only on miners that allow them, and a hostile one fails alone", function()
    assert(sys.write_file(home .. "/custom.json", json.encode { model = "llama3", tools = { "calculator" },
      limits = { seconds = 2 },
      workflow = "return function(job) local r = tools.call('calculator', {expression = job.input}) "
        .. "return {answer = 'the sum is ' .. r.result} end" }))
    local created = aitbc { "-o", "json", "agent", "create", "--name", "adder", "--type", "custom", "--config",
      home .. "/custom.json" }
    assert.equal(0, created.code, created.err)
    local custom = created.json().agent_id
    local client = node:request("GET", "/health") and env.AITBC_CLIENT_KEY
    local _, job = node:request("POST", "/v1/agents/" .. custom .. "/execute", { key = client, json = { input = "2 + 40" } })
    -- the plain miner does not take it
    cli.wait_for("the plain miner to have polled past it", function()
      local _, j = node:request("GET", "/v1/jobs/" .. job.job_id, { key = client })
      return j.state == "QUEUED" and j
    end)
    miner("m-custom", { "--allow-custom-workflows" })
    local done = cli.wait_for("the custom job to complete", function()
      local _, j = node:request("GET", "/v1/jobs/" .. job.job_id, { key = client })
      return j.state == "COMPLETED" and j
    end, 60)
    assert.equal("m-custom", done.assigned_miner_id)
    local _, res = node:request("GET", "/v1/jobs/" .. job.job_id .. "/result", { key = client })
    assert.equal("the sum is 42", res.result.answer)
    -- a workflow that never ends: its job fails with the sandbox's reason, and the miner goes on
    local r = aitbc { "agent", "update", custom, "--config", (function()
      assert(sys.write_file(home .. "/loop.json", json.encode { workflow = "return function() while true do end end" }))
      return home .. "/loop.json"
    end)() }
    assert.equal(0, r.code, r.err)
    local _, loop = node:request("POST", "/v1/agents/" .. custom .. "/execute", { key = client, json = { input = "x" } })
    local failed = cli.wait_for("the looping job to fail", function()
      local _, j = node:request("GET", "/v1/jobs/" .. loop.job_id, { key = client })
      return j.state == "FAILED" and j
    end, 60)
    assert.matches("AGENT_FAILED: the workflow failed %((%a+)%)", failed.error)
    local _, after = node:request("POST", "/v1/agents/" .. agent_id .. "/execute", { key = client,
      json = { input = "What is 6 * 7?" } })
    cli.wait_for("the next job to complete", function()
      local _, j = node:request("GET", "/v1/jobs/" .. after.job_id, { key = client })
      return j.state == "COMPLETED"
    end, 60)
  end)

  it("the example custom workflow in scripts/agents runs as its header shows", function()
    miner("m-example", { "--allow-custom-workflows" })
    local created = aitbc { "-q", "agent", "create", "--name", "q3_margin", "--type", "custom", "--config",
      "scripts/agents/q3_margin.json" }
    assert.equal(0, created.code, created.err)
    local id = created.out:match("^(agent_%x+)\n$")
    local r = aitbc({ "-o", "json", "agent", "execute", id, "--input", "Is the margin healthy?" }, { timeout = 120 })
    assert.equal(0, r.code, r.err)
    local doc = r.json()
    -- scripts/agents/q3.csv: revenue 415, costs 270
    assert.same({ 415, 270 }, { doc.data.revenue, doc.data.costs })
    assert.matches("^Q3 revenue 415, costs 270, margin 34%.9%%%. ", doc.answer)
    assert.is_true(doc.receipt_verified)
  end)
end)
