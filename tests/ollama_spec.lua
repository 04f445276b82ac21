-- The Ollama binding against the simulated Ollama (same routes, NDJSON).
local json = require "aitbc.json"
local ollama = require "aitbc.ollama"
local server = require "aitbc.server"
local cli = require "support.cli"

describe("ollama binding (against the simulated Ollama)", function()
  local srv, client
  setup(function()
    srv = assert(server.start { port = 0, handler = "aitbc.ollama.sim",
      config = json.encode { models = { "llama3", "llava" }, token_delay = 0.002 } })
    client = ollama.new("127.0.0.1:" .. srv:port())
  end)
  teardown(function() srv:stop(1) end)

  it("reads OLLAMA_HOST the way Ollama does", function()
    assert.equal("http://127.0.0.1:11434", ollama.normalize(""))
    assert.equal("http://10.1.2.3:11434", ollama.normalize("10.1.2.3"))
    assert.equal("http://127.0.0.1:9999", ollama.normalize(":9999"))
    assert.equal("http://host:1234", ollama.normalize("http://host:1234/"))
  end)

  it("lists models and says it is simulated", function()
    local version, simulated = client:version()
    assert.matches("aitbc%-simulated", version)
    assert.is_true(simulated)
    local models = assert(client:models())
    assert.equal("llama3:latest", models[1].name)
    assert.equal("aitbc-sim", models[1].details.family)
    assert.equal("llama3:latest", assert(client:find_model("llama3")).name)
    local _, err = client:find_model("phi3")
    assert.equal("not_found", err.kind)
    assert.matches("installed: llama3:latest, llava:latest", err.hint)
  end)

  it("streams tokens one by one and ends with the statistics", function()
    local tokens = {}
    local final = assert(client:generate { model = "llama3", prompt = "Hello AITBC",
      on_token = function(t) tokens[#tokens + 1] = t end })
    assert.is_true(#tokens > 5)
    assert.equal(table.concat(tokens), final.response)
    assert.matches("^Hello! I am the AITBC simulated model", final.response)
    assert.equal(#tokens, final.eval_count)
    assert.is_true(final.tokens_per_second > 0)
    assert.is_true(final.done)
    local again = assert(client:generate { model = "llama3", prompt = "Hello AITBC" })
    assert.equal(final.response, again.response) -- deterministic
    local other = assert(client:generate { model = "llama3", prompt = "Analyze Q3 financial data" })
    assert.matches("You asked about Analyze Q3 financial data", other.response)
  end)

  it("passes images and honours num_predict", function()
    local png = "\137PNG\r\n\26\n\0\0\0\13IHDR\0\0\0\64\0\0\0\32\8\2\0\0\0" .. string.rep("x", 40)
    local final = assert(client:generate { model = "llava", prompt = "Analyze this chart",
      images = { png } })
    -- it reads what it is given: format, size and a digest of the content
    assert.matches("image 1 is a 64x32 PNG %(sha256 %x+%)", final.response)
    local junk = assert(client:generate { model = "llava", prompt = "Analyze this chart", images = { "not an image" } })
    assert.matches("image 1 is not an image I can read", junk.response)
    local blind = client:generate { model = "llama3", prompt = "x", images = { png } }
    assert.is_nil(blind)
    local short = assert(client:generate { model = "llama3", prompt = "long story", options = { num_predict = 3 } })
    assert.equal(3, short.eval_count)
  end)

  it("chats", function()
    local final = assert(client:chat { model = "llama3", messages = { { role = "user", content = "hello" } } })
    assert.equal("assistant", final.message.role)
    assert.matches("^Hello!", final.message.content)
  end)

  it("cancels a generation from the token callback", function()
    local seen = 0
    local final, err = client:generate { model = "llama3", prompt = "Hello", on_token = function() seen = seen + 1 return false end }
    assert.is_nil(final)
    assert.equal("canceled", err.code)
    assert.equal(1, seen)
  end)

  it("reports a missing model, a failing model and an unreachable Ollama clearly", function()
    local _, err = client:generate { model = "phi3", prompt = "x" }
    assert.equal("not_found", err.kind)
    assert.matches('model "phi3" not found', err.message)
    assert.matches("ollama pull phi3", err.hint)
    _, err = client:generate { model = "llama3", prompt = "__simulate_failure__" }
    assert.equal("failure", err.kind)
    assert.matches("simulated inference failure", err.message)
    local port = cli.closed_port()
    _, err = ollama.new("127.0.0.1:" .. port):generate { model = "llama3", prompt = "x" }
    assert.equal("network", err.kind)
    assert.matches("cannot reach Ollama at http://127.0.0.1:" .. port, err.message)
  end)
end)
