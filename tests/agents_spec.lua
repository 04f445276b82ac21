-- Agents and job events on the node: definitions validated with the field
-- named, owned, versioned, executed as jobs of type agent or multimodal;
-- events kept in order with the node's state changes and read by long poll.
local cli = require "support.cli"
local crypto = require "aitbc.crypto"
local http = require "aitbc.http"
local images = require "aitbc.agents.images"
local json = require "aitbc.json"
local nodes = require "support.node"

local DEF = { name = "data_analyzer", type = "analysis", model = "llama3", tools = { "calculator", "csv_query" },
  limits = { steps = 6 }, data = { q3 = { format = "csv", content = "region,revenue\neu,120\nus,200\n" } } }

-- A 2x1 PNG (8-bit RGB), byte for byte.
local PNG = "\137PNG\r\n\26\n\0\0\0\13IHDR\0\0\0\2\0\0\0\1\8\2\0\0\0\127\83\133\103\0\0\0\15IDAT\120\156\99\248\207"
  .. "\192\0\4\0\12\1\3\1\136\23\204\209\0\0\0\0IEND\174\66\96\130"

describe("agents on the node", function()
  local node, client, other, miner
  setup(function()
    node = nodes.start()
    client, other, miner = node:key("client"), node:key("client"), node:key("miner")
  end)
  teardown(function()
    node:stop()
    cli.cleanup()
  end)

  local function create(def, key)
    return node:request("POST", "/v1/agents", { key = key or client, json = def })
  end

  it("creates an agent from a definition, ready, with a warning when no miner has its model", function()
    local status, agent = create(DEF)
    assert.equal(201, status, json.encode(agent))
    assert.matches("^agent_%x+$", agent.agent_id)
    assert.same({ "ready", 1, "analysis" }, { agent.status, agent.version, agent.type })
    assert.same({ text = "llama3" }, agent.definition.models)
    assert.same({ steps = 6, tokens = 4096, seconds = 300 }, agent.definition.limits)
    assert.matches("no online miner has the text model llama3", agent.warnings[1])
    -- with a miner that has it, no warning
    node:request("POST", "/v1/miners/register", { key = miner, json = { capabilities = { models = { "llama3:latest" } } } })
    local _, again = create(DEF)
    assert.same({}, again.warnings)
  end)

  it("refuses a bad definition naming the field and the fix, and stores nothing", function()
    local _, before = node:request("GET", "/v1/agents", { key = client })
    local cases = {
      { { type = "analysis", model = "llama3" }, "name" },
      { { name = "x", type = "wizard", model = "llama3" }, "type" },
      { { name = "x", type = "chat" }, "model" },
      { { name = "x", model = "llama3", tools = { "rm_rf" } }, "tools[1]" },
      { { name = "x", model = "llama3", limits = { steps = 500 } }, "limits.steps" },
      { { name = "x", model = "llama3", limits = { hops = 1 } }, "limits.hops" },
      { { name = "x", model = "llama3", parameters = { temperature = 9 } }, "parameters.temperature" },
      { { name = "x", model = "llama3", parameters = { evil = 1 } }, "parameters.evil" },
      { { name = "x", type = "extract", model = "llama3" }, "fields" },
      { { name = "x", model = "llama3", tools = { "http_get" } }, "http_allow" },
      { { name = "x", type = "custom", model = "llama3" }, "workflow" },
      { { name = "x", type = "custom", model = "llama3", workflow = "return function(" }, "workflow" },
      { { name = "x", type = "custom", model = "llama3", workflow = string.dump(function() end) }, "workflow" },
      { { name = "x", model = "llama3", data = { d = { format = "xml", content = "" } } }, "data.d.format" },
      { { name = "x", model = "llama3", colour = "blue" }, "colour" },
    }
    for _, case in ipairs(cases) do
      local status, body = create(case[1])
      assert.equal(422, status, json.encode(case[1]))
      assert.equal(case[2], body.error.field, body.error.message)
    end
    local _, after = node:request("GET", "/v1/agents", { key = client })
    assert.equal(before.total, after.total)
  end)

  it("keeps agents to their owner; updates make versions; rollback and delete", function()
    local _, agent = create(DEF)
    local id = agent.agent_id
    assert.equal(404, (node:request("GET", "/v1/agents/" .. id, { key = other })))
    assert.equal(404, (node:request("POST", "/v1/agents/" .. id .. "/execute", { key = other, json = { input = "x" } })))
    local status, updated = node:request("PATCH", "/v1/agents/" .. id, { key = client,
      json = { system_prompt = "Be brief.", parameters = { temperature = 0.1 }, note = "terser" } })
    assert.equal(200, status, json.encode(updated))
    assert.same({ 2, "Be brief.", "llama3" }, { updated.version, updated.definition.system_prompt,
      updated.definition.models.text })
    assert.equal(422, (node:request("PATCH", "/v1/agents/" .. id, { key = client, json = { tools = { "nope" } } })))
    local _, versions = node:request("GET", "/v1/agents/" .. id .. "/versions", { key = client })
    assert.same({ 1, 2 }, { versions.items[1].version, versions.items[2].version })
    assert.equal("terser", versions.items[2].note)
    local _, back = node:request("POST", "/v1/agents/" .. id .. "/rollback", { key = client, json = { version = 1 } })
    assert.same({ 3, 1 }, { back.version, back.rolled_back_to })
    assert.is_nil(back.definition.system_prompt)
    local _, v2 = node:request("GET", "/v1/agents/" .. id .. "?version=2", { key = client })
    assert.equal("Be brief.", v2.definition.system_prompt)
    assert.equal(404, (node:request("GET", "/v1/agents/" .. id .. "?version=9", { key = client })))
    assert.equal(200, (node:request("DELETE", "/v1/agents/" .. id, { key = client })))
    assert.equal(404, (node:request("GET", "/v1/agents/" .. id, { key = client })))
  end)

  it("executes an agent as a job carrying its definition; images make it multimodal", function()
    local _, agent = create(DEF)
    local status, job = node:request("POST", "/v1/agents/" .. agent.agent_id .. "/execute", { key = client,
      json = { input = "Analyze Q3 financial data" } })
    assert.equal(201, status, json.encode(job))
    assert.same({ "agent", "QUEUED", "llama3", agent.agent_id }, { job.type, job.state, job.model, job.agent_id })
    -- images need a vision model
    local img = { data = crypto.base64(PNG) }
    local s, err = node:request("POST", "/v1/agents/" .. agent.agent_id .. "/execute", { key = client,
      json = { input = "what is this", images = { img } } })
    assert.equal(422, s)
    assert.matches("no vision model", err.error.message)
    local _, seeing = create { name = "seer", type = "chat", models = { text = "llama3", vision = "llava" } }
    local s2, mm = node:request("POST", "/v1/agents/" .. seeing.agent_id .. "/execute", { key = client,
      json = { input = "Analyze this chart", images = { img } } })
    assert.equal(201, s2, json.encode(mm))
    assert.same({ "multimodal", "llava" }, { mm.type, mm.model })
    -- what is not an image is refused, whatever it claims
    local s3, bad = node:request("POST", "/v1/agents/" .. seeing.agent_id .. "/execute", { key = client,
      json = { input = "x", images = { { data = crypto.base64("a text that says it is a PNG"), format = "png" } } } })
    assert.equal(422, s3)
    assert.equal("images[1]", bad.error.field)
    assert.same({ format = "png", width = 2, height = 1 }, (function()
      local i = images.sniff(PNG) return { format = i.format, width = i.width, height = i.height } end)())
  end)
end)

describe("job events", function()
  local node, client, miner
  setup(function()
    node = nodes.start()
    client, miner = node:key("client"), node:key("miner")
    node:request("POST", "/v1/miners/register", { key = miner, json = { miner_id = "ev-miner" } })
  end)
  teardown(function()
    node:stop()
    cli.cleanup()
  end)

  local function events(job_id, after, wait)
    local s, body = node:request("GET", "/v1/jobs/" .. job_id .. "/events?after=" .. (after or 0) .. "&wait=" .. (wait or 0),
      { key = client, timeout = 30 })
    assert.equal(200, s, json.encode(body))
    return body
  end

  it("keeps the node's state changes and the miner's events in order; a reader resumes where it left", function()
    local _, job = node:request("POST", "/v1/jobs", { key = client, json = { payload = { prompt = "hi" }, model = "m" } })
    local first = events(job.job_id)
    assert.same({ "job.queued" }, { first.events[1].type })
    assert.is_false(first.done)
    node:request("POST", "/v1/miners/poll", { key = miner, json = { max_wait_seconds = 1 } })
    local posted = node:request("POST", "/v1/miners/" .. job.job_id .. "/events", { key = miner,
      json = { events = { { type = "token", data = { text = "Hel" } }, { type = "token", data = { text = "lo" } } } } })
    assert.equal(200, posted)
    local rest = events(job.job_id, first.next)
    local types = {}
    for i, e in ipairs(rest.events) do types[i] = e.type end
    assert.same({ "job.running", "token", "token" }, types)
    assert.equal("lo", rest.events[3].data.text)
    -- nothing new: empty, same cursor
    local none = events(job.job_id, rest.next)
    assert.same({ 0, rest.next }, { #none.events, none.next })
    node:request("POST", "/v1/miners/" .. job.job_id .. "/result", { key = miner, json = { result = { response = "Hello" } } })
    local last = events(job.job_id, rest.next)
    assert.equal("job.completed", last.events[1].type)
    assert.is_true(last.done)
    -- only its running miner posts, and not the node's job.* names
    assert.equal(409, (node:request("POST", "/v1/miners/" .. job.job_id .. "/events", { key = miner,
      json = { events = { { type = "token" } } } })))
    local s, bad = node:request("POST", "/v1/miners/" .. job.job_id .. "/events", { key = miner,
      json = { events = { { type = "job.completed" } } } })
    assert.same({ 422, "events[1].type" }, { s, bad.error.field })
  end)

  it("speaks text/event-stream on request: ids an EventSource resumes from, 'end', then 204", function()
    local _, job = node:request("POST", "/v1/jobs", { key = client, json = { payload = { prompt = "hi" } } })
    node:request("POST", "/v1/miners/poll", { key = miner, json = { max_wait_seconds = 1 } })
    node:request("POST", "/v1/miners/" .. job.job_id .. "/events", { key = miner,
      json = { events = { { type = "token", data = { text = "Hel" } }, { type = "token", data = { text = "lo" } } } } })
    local function stream(last_id)
      local res = assert(http.request { url = node.url .. "/v1/jobs/" .. job.job_id .. "/events",
        headers = { ["X-Api-Key"] = client, Accept = "text/event-stream", ["Last-Event-ID"] = last_id }, timeout = 30 })
      return res
    end
    local res = stream()
    assert.equal(200, res.status)
    assert.equal("text/event-stream", res.headers["content-type"])
    local ids, names = {}, {}
    for id, name, data in res.body:gmatch("id: (%d+)\nevent: ([%w%._]+)\ndata: ([^\n]+)\n\n") do
      ids[#ids + 1], names[#names + 1] = tonumber(id), name
      assert.equal(name, json.decode(data).type)
    end
    assert.same({ 1, 2, 3, 4 }, ids)
    assert.same({ "job.queued", "job.running", "token", "token" }, names)
    assert.not_matches("event: end", res.body) -- still running
    -- the reconnection resumes after Last-Event-ID; it waits for what comes next
    node:request("POST", "/v1/miners/" .. job.job_id .. "/result", { key = miner, json = { result = { response = "Hello" } } })
    local rest = stream("4")
    assert.matches("^retry: %d+\n\nid: 5\nevent: job%.completed\n", rest.body)
    assert.matches("event: end\ndata: {\"state\":\"COMPLETED\"}\n\n$", rest.body)
    assert.equal(204, stream("5").status) -- nothing more: an EventSource stops here
    assert.equal(422, stream("five").status)
  end)

  it("wakes a waiting reader as soon as the miner posts (the wait holds no worker)", function()
    local _, job = node:request("POST", "/v1/jobs", { key = client, json = { payload = { prompt = "hi" } } })
    node:request("POST", "/v1/miners/poll", { key = miner, json = { max_wait_seconds = 1 } })
    local cursor = events(job.job_id).next
    -- ten readers wait; the post (sent after they wait, from the same batch) wakes them all
    local reqs = {}
    for i = 1, 10 do
      reqs[i] = { url = node.url .. "/v1/jobs/" .. job.job_id .. "/events?after=" .. cursor .. "&wait=20",
        headers = { ["X-Api-Key"] = client }, timeout = 30 }
    end
    local poster = require("aitbc.sys").spawn { argv = { cli.bin, "run", "tests/support/post_events.lua", node.url,
      miner, job.job_id }, stdout = "pipe", stderr = "pipe" }
    local results = http.request_many(reqs)
    local code, out, err = poster:communicate(nil, 30)
    assert.equal(0, code, tostring(out) .. tostring(err))
    for _, r in ipairs(results) do
      assert.equal(200, r.status)
      local body = json.decode(r.body)
      assert.equal("thought", body.events[1].type)
    end
  end)
end)
