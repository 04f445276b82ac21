-- Agent workflows (lua/aitbc/agents/) against the simulated Ollama over
-- HTTP: tool calls the model really made, tools that really ran, limits that
-- end a run with the best answer it has, custom Lua in the sandbox.
local cli = require "support.cli"
local definition = require "aitbc.agents.definition"
local ollama = require "aitbc.ollama"
local runner = require "aitbc.agents.runner"

local PNG = "\137PNG\r\n\26\n\0\0\0\13IHDR\0\0\0\64\0\0\0\32\8\2\0\0\0" .. string.rep("\0", 20)

describe("agent workflows", function()
  local srv, client
  setup(function()
    local url
    srv, url = cli.echo_server { handler = "aitbc.ollama.sim", config = '{"token_delay": 0}' }
    client = ollama.new(url)
  end)
  teardown(function() srv:stop(1) end)

  local function agent(def, input, extra)
    local checked = definition.check(def, { invalid = function(f, m) error(f .. " " .. m, 0) end })
    local events = {}
    local payload = { agent = { agent_id = "agent_test", version = 1, definition = checked }, input = input }
    for k, v in pairs(extra or {}) do payload[k] = v end
    local result, err = runner.run { payload = payload, ollama = client,
      emit = function(kind, data) events[#events + 1] = { type = kind, data = data } end }
    local types = {}
    for i, e in ipairs(events) do types[i] = e.type end
    return result, err, events, types
  end

  local function find(events, kind)
    for _, e in ipairs(events) do if e.type == kind then return e.data end end
  end

  local CSV = "region,revenue\neu,120\nus,200\n"

  it("analysis: the model calls a tool on the attached data and answers from its output", function()
    local result, err, events, types = agent({ name = "a", type = "analysis", model = "llama3",
      tools = { "csv_query", "calculator" }, data = { q3 = { format = "csv", content = CSV } } },
      "Analyze Q3 financial data")
    assert.is_nil(err)
    assert.same({ "agent.started", "step", "tool_called", "tool_output", "step", "message_output", "answer",
      "agent.finished" }, types)
    local call = find(events, "tool_called")
    assert.same({ "csv_query", "q3" }, { call.name, call.arguments.dataset })
    assert.equal(320, find(events, "tool_output").output.result[1].sum)
    assert.matches("csv_query returned .*320", result.answer)
    assert.equal(2, result.usage.model_calls)
    assert.is_true(result.usage.completion_tokens > 0)
  end)

  it("analysis: arithmetic goes through the calculator, computed exactly", function()
    local result, _, events = agent({ name = "a", type = "analysis", model = "llama3", tools = { "calculator" } },
      "What is 1250 * 1.05 - 80?")
    assert.equal("calculator", find(events, "tool_called").name)
    assert.equal(1232.5, find(events, "tool_output").output.result)
    assert.matches("1232.5", result.answer)
  end)

  it("analysis: at its step limit it asks once more and gives a best-effort answer", function()
    local result, _, events = agent({ name = "a", type = "analysis", model = "llama3", tools = { "calculator" },
      limits = { steps = 1 } }, "What is 6 * 7?")
    assert.same({ "steps", 1 }, { find(events, "limit_reached").limit, find(events, "limit_reached").value })
    assert.is_true(result.partial)
    assert.matches("42", result.answer)
    assert.equal(2, result.usage.model_calls)
  end)

  it("chat, extract and summarize", function()
    local chat = agent({ name = "c", type = "chat", model = "llama3" }, "Hello there")
    assert.matches("Hello! I am the AITBC simulated model", chat.answer)
    local extract = agent({ name = "e", type = "extract", model = "llama3", fields = { "revenue", "region" } },
      "Q3 report. revenue: 320, region: eu. More text.")
    assert.same({ revenue = 320, region = "eu" }, extract.data)
    local long = string.rep("The network sealed a block and paid its miners. ", 400)
    local summary, _, _, types = agent({ name = "s", type = "summarize", model = "llama3",
      parameters = { num_ctx = 2048 }, limits = { tokens = 100000 } }, long)
    assert.is_true(summary.pieces > 1)
    assert.is_nil(summary.partial)
    local steps = 0
    for _, t in ipairs(types) do if t == "step" then steps = steps + 1 end end
    assert.equal(summary.pieces + 1, steps)
    -- with fewer tokens than the text needs, it says its summary is partial
    local short = agent({ name = "s", type = "summarize", model = "llama3", parameters = { num_ctx = 2048 },
      limits = { tokens = 2000 } }, long)
    assert.is_true(short.partial)
  end)

  it("multimodal: the images go to the vision model, which reads them", function()
    local images = require "aitbc.agents.images"
    local result, err = agent({ name = "v", type = "chat", models = { text = "llama3", vision = "llava" } },
      "Analyze this chart", { images = { assert(images.from_bytes(PNG)) } })
    assert.is_nil(err)
    assert.matches("image 1 is a 64x32 PNG", result.answer)
  end)

  it("custom: Lua in the sandbox with the same llm, tools and emit; its limits hold", function()
    local workflow = [[
      return function(job)
        emit("thought", {text = "adding up " .. job.input})
        local out = tools.call("calculator", {expression = job.input})
        local reply = llm.chat({messages = {{role = "user", content = "Hello, the sum is " .. out.result}}})
        return {answer = reply.content, sum = out.result}
      end]]
    local result, err, events = agent({ name = "w", type = "custom", model = "llama3", tools = { "calculator" },
      workflow = workflow }, "2 + 3")
    assert.is_nil(err)
    assert.equal(5, result.sum)
    assert.equal("adding up 2 + 3", find(events, "thought").text)
    assert.matches("Hello!", result.answer)
    -- a tool it was not given is refused as an observation, not run
    local denied = agent({ name = "w", type = "custom", model = "llama3", workflow =
      "return function() return {answer = tools.call('lua', {code = 'return 1'}).error} end" }, "x")
    assert.matches("may not use the tool lua", denied.answer)
    -- a workflow that never ends is stopped by the sandbox
    local _, loop_err = agent({ name = "w", type = "custom", model = "llama3", limits = { seconds = 1 },
      workflow = "return function() while true do end end" }, "x")
    assert.matches("the workflow failed %(%a+%)", loop_err)
    local _, io_err = agent({ name = "w", type = "custom", model = "llama3",
      workflow = "return function() return io.open('/etc/passwd'):read('a') end" }, "x")
    assert.matches("global 'io'", io_err)
  end)
end)
