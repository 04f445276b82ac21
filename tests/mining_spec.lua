-- Client and miner journeys with real processes: a node, simulated
-- Ollamas, miners, and the CLI.
local cli = require "support.cli"
local nodes = require "support.node"
local sys = require "aitbc.sys"
local mining = require "aitbc.mining"

--- A simulated Ollama in its own process; returns url, proc.
local function sim(token_delay)
  local dir = cli.tempdir()
  local proc = assert(sys.spawn { argv = { cli.bin, "ollama", "serve-sim", "--listen", "127.0.0.1:0", "--token-delay",
    tostring(token_delay or 0.001), "--url-file", dir .. "/url" }, stdout = "null", stderr = "null" })
  for _ = 1, 200 do
    local url = sys.read_file(dir .. "/url")
    if url and url:find("\n") then return (url:gsub("%s+$", "")), proc end
    sys.sleep(0.02)
  end
  error("simulated ollama did not start")
end

describe("mining", function()
  it("reads GPU descriptions", function()
    assert.same({ { name = "RTX 4090", count = 1, memory_gb = 24 } }, mining.parse_gpus("1x RTX 4090"))
    assert.same({ { name = "A100", count = 2, memory_gb = 80 }, { name = "Custom GPU", count = 1 } },
      mining.parse_gpus("2x A100 80GB, Custom GPU"))
    assert.is_nil((mining.parse_gpus("0x RTX 4090")))
    assert.equal("2x A100 (80 GB)", mining.describe { { name = "A100", count = 2, memory_gb = 80 } })
  end)

  it("says clearly that there is no GPU without a driver", function()
    local r = cli.run { "miner", "gpus" }
    assert.equal(0, r.code)
    assert.matches("no NVIDIA GPU found: ", r.out)
  end)
end)

describe("client and miner journeys", function()
  local node, ollama_url, ollama_proc, env, home
  setup(function()
    node = nodes.start { args = { "--heartbeat-timeout", "2", "--log-level", "warn" } }
    ollama_url, ollama_proc = sim()
    home = cli.tempdir()
    env = { AITBC_CLIENT_KEY = node:key("client"), AITBC_MINER_KEY = node:key("miner"), OLLAMA_HOST = ollama_url }
  end)
  teardown(function()
    node:stop()
    ollama_proc:kill(15)
    ollama_proc:wait()
    cli.cleanup()
  end)

  local function run(args, extra)
    local e = {}
    for k, v in pairs(env) do e[k] = v end
    for k, v in pairs(extra or {}) do e[k] = v end
    return node:cli(args, { home = home, env = e, timeout = 60 })
  end

  it("runs a job from submit to a verified result, with the documented JSON fields", function()
    local sub = run { "-o", "json", "client", "submit", "--type", "inference", "--model", "llama3", "--data", '{"prompt":"Hello AITBC"}' }
    assert.equal(0, sub.code, sub.err)
    local job = sub.json()
    for _, f in ipairs { "job_id", "state", "requested_at", "expires_at", "assigned_miner_id" } do assert.is_not_nil(job[f], f) end
    local reg = run { "-o", "json", "miner", "register", "--gpus", "1x RTX 4090", "--price-per-hour", "0.5", "--miner-id", "journey-1" }
    assert.equal(0, reg.code, reg.err)
    local m = reg.json()
    assert.equal("journey-1", m.miner_id)
    assert.equal("0.5", m.price_per_hour)
    assert.equal(24, m.capabilities.gpus[1].memory_gb)
    local mine = run { "miner", "mine-ollama", "--model", "llama3", "--jobs", "1", "--miner-id", "journey-1" }
    assert.equal(0, mine.code, mine.err)
    assert.matches("job " .. job.job_id .. " received", mine.out)
    assert.matches("result submitted; receipt %x+", mine.out)
    local st = run { "-o", "json", "client", "status", job.job_id }.json()
    assert.equal("COMPLETED", st.state)
    assert.equal("journey-1", st.assigned_miner_id)
    local res = run { "-o", "json", "client", "result", job.job_id }
    assert.equal(0, res.code, res.err)
    local r = res.json()
    assert.matches("^Hello! I am the AITBC simulated model", r.result.response)
    assert.is_true(r.receipt_verified)
    assert.equal("journey-1", r.receipt.provider)
    local me = run { "-o", "json", "miner", "status", "--miner-id", "journey-1" }.json()
    assert.equal(1, me.jobs_completed)
  end)

  it("reports a failed inference through /fail: the job ends FAILED with the reason", function()
    local job = run { "-o", "json", "client", "submit", "--model", "llama3", "--prompt", "__simulate_failure__" }.json()
    local mine = run { "miner", "mine-ollama", "--model", "llama3", "--jobs", "1", "--miner-id", "journey-1" }
    assert.equal(0, mine.code, mine.err)
    assert.matches("inference failed: .*simulated inference failure; reported to the node", mine.out)
    local st = run { "-o", "json", "client", "status", job.job_id }.json()
    assert.equal("FAILED", st.state)
    assert.matches("^INFERENCE_FAILED: .*simulated inference failure", st.error)
    local res = run { "client", "result", job.job_id }
    assert.equal(1, res.code)
    assert.matches("ended FAILED", res.err)
  end)

  it("re-queues the job of a killed miner, and another miner completes it", function()
    local slow_url, slow_proc = sim(0.5)
    local job = run { "-o", "json", "client", "submit", "--model", "llama3", "--prompt", "slow work" }.json()
    local doomed = assert(sys.spawn { argv = { cli.bin, "--url", node.url, "miner", "mine-ollama", "--model", "llama3",
      "--jobs", "1", "--miner-id", "doomed", "--ollama-url", slow_url, "--heartbeat-interval", "1" },
      env = { AITBC_HOME = home, AITBC_MINER_KEY = env.AITBC_MINER_KEY }, stdout = "pipe", stderr = "pipe" })
    local out = ""
    while not out:find("running inference") do
      local chunk = doomed:read(10)
      assert(chunk, "the doomed miner never started its inference")
      out = out .. chunk
    end
    doomed:kill(9)
    doomed:wait()
    local st = run { "-o", "json", "client", "status", job.job_id }.json()
    assert.equal("RUNNING", st.state)
    assert.equal("doomed", st.assigned_miner_id)
    -- its heart-beat companion notices and stops; after the timeout the job goes back to the queue
    local rescue = run { "miner", "mine-ollama", "--model", "llama3", "--jobs", "1", "--miner-id", "rescuer", "--poll-wait", "10" }
    assert.equal(0, rescue.code, rescue.err)
    local done = run { "-o", "json", "client", "status", job.job_id }.json()
    assert.equal("COMPLETED", done.state)
    assert.equal("rescuer", done.assigned_miner_id)
    assert.equal(2, done.attempts)
    slow_proc:kill(15)
    slow_proc:wait()
  end)

  it("finishes the job in hand when told to stop (SIGTERM), then stops", function()
    local slow_url, slow_proc = sim(0.1)
    local job = run { "-o", "json", "client", "submit", "--model", "llama3", "--prompt", "finish me" }.json()
    local miner = assert(sys.spawn { argv = { cli.bin, "--url", node.url, "miner", "mine-ollama", "--model", "llama3",
      "--continuous", "--miner-id", "polite", "--ollama-url", slow_url },
      env = { AITBC_HOME = home, AITBC_MINER_KEY = env.AITBC_MINER_KEY }, stdout = "pipe", stderr = "pipe" })
    local out = ""
    while not out:find("running inference") do
      local chunk = miner:read(10)
      assert(chunk, "the miner never started its inference")
      out = out .. chunk
    end
    miner:kill(15) -- mid-inference
    local code, rest = miner:communicate(nil, 30)
    out = out .. (rest or "")
    assert.equal(143, code) -- stopped by SIGTERM, after the job
    assert.matches("result submitted", out)
    assert.matches("stopping", out)
    assert.equal("COMPLETED", run { "-o", "json", "client", "status", job.job_id }.json().state)
    slow_proc:kill(15)
    slow_proc:wait()
  end)

  it("stops on Ctrl-C (SIGINT) with exit 130, as the README promises", function()
    local miner = assert(sys.spawn { argv = { cli.bin, "--url", node.url, "miner", "mine-ollama", "--model", "llama3",
      "--continuous", "--miner-id", "interrupted", "--ollama-url", ollama_url },
      env = { AITBC_HOME = home, AITBC_MINER_KEY = env.AITBC_MINER_KEY }, stdout = "pipe", stderr = "pipe" })
    local out = ""
    while not out:find("polling for jobs") do
      local chunk = miner:read(10)
      assert(chunk, "the miner never polled")
      out = out .. chunk
    end
    miner:kill(2)
    local code, rest = miner:communicate(nil, 30)
    assert.equal(130, code)
    assert.matches("stopping %(signal%)", out .. rest)
  end)

  it("keeps mining when the job in hand is canceled meanwhile", function()
    local slow_url, slow_proc = sim(0.1)
    local job = run { "-o", "json", "client", "submit", "--model", "llama3", "--prompt", "cancel me midway" }.json()
    local miner = assert(sys.spawn { argv = { cli.bin, "--url", node.url, "miner", "mine-ollama", "--model", "llama3",
      "--continuous", "--miner-id", "steady", "--ollama-url", slow_url },
      env = { AITBC_HOME = home, AITBC_MINER_KEY = env.AITBC_MINER_KEY }, stdout = "pipe", stderr = "pipe" })
    local out = ""
    local function until_seen(text)
      while not out:find(text) do
        local chunk = miner:read(15)
        assert(chunk, "the miner never said: " .. text .. "\n" .. out)
        out = out .. chunk
      end
    end
    until_seen("running inference")
    assert.equal(0, run({ "client", "cancel", job.job_id }).code)
    until_seen("result dropped")
    run { "client", "submit", "--model", "llama3", "--prompt", "next one" }
    until_seen("result submitted")
    miner:kill(15)
    local code = miner:communicate(nil, 30)
    assert.equal(143, code)
    slow_proc:kill(15)
    slow_proc:wait()
  end)

  it("polls: a job, or 'no jobs in queue'", function()
    local empty = run { "miner", "poll", "--miner-id", "journey-1" }
    assert.equal(0, empty.code, empty.err)
    assert.matches("no jobs in queue", empty.out)
    local job = run { "-o", "json", "client", "submit", "--model", "llama3", "--prompt", "poll me" }.json()
    local got = run { "-o", "json", "miner", "poll", "--miner-id", "journey-1" }.json()
    assert.equal(job.job_id, got.job_id)
    assert.equal("poll me", got.payload.prompt)
    local cancel = run { "client", "cancel", job.job_id }
    assert.equal(0, cancel.code)
  end)

  it("polls: says the miner is full, not 'no jobs in queue', when a fitting job waits and its slot is taken", function()
    local held = run { "-o", "json", "client", "submit", "--model", "llama3", "--prompt", "held" }.json()
    local waiting = run { "-o", "json", "client", "submit", "--model", "llama3", "--prompt", "waiting" }.json()
    assert.equal(held.job_id, run { "-o", "json", "miner", "poll", "--miner-id", "journey-1" }.json().job_id)
    local full = run { "miner", "poll", "--miner-id", "journey-1" }
    assert.equal(0, full.code, full.err)
    assert.not_matches("no jobs in queue", full.out)
    assert.matches("this miner is full: 1 of 1 job%(s%) in hand %(" .. held.job_id .. "%)", full.out)
    assert.matches("aitbc miner mine%-ollama %-%-model llama3 %-%-jobs 1", full.out)
    local j = run { "-o", "json", "miner", "poll", "--miner-id", "journey-1" }.json()
    assert.equal("at_capacity", j.reason)
    assert.same({ held.job_id }, j.jobs_in_hand)
    assert.equal("QUEUED", run { "-o", "json", "client", "status", waiting.job_id }.json().state)
    -- the wire stays what older miners expect (204, no body); the reason rides in headers
    local status, body, res = node:request("POST", "/v1/miners/poll", { key = env.AITBC_MINER_KEY,
      headers = { ["X-Miner-ID"] = "journey-1" }, json = {} })
    assert.equal(204, status)
    assert.is_nil(body)
    assert.equal("at_capacity", res.headers["x-poll-reason"])
    assert.equal("1", res.headers["x-miner-inflight"])
    assert.equal("1", res.headers["x-miner-concurrency"])
    for _, id in ipairs { held.job_id, waiting.job_id } do assert.equal(0, run({ "client", "cancel", id }).code) end
    status, body, res = node:request("POST", "/v1/miners/poll", { key = env.AITBC_MINER_KEY,
      headers = { ["X-Miner-ID"] = "journey-1" }, json = {} })
    assert.equal(204, status)
    assert.is_nil(body)
    assert.equal("no_jobs", res.headers["x-poll-reason"])
  end)

  it("puts a job its miner cannot run (UNSUPPORTED_MODEL) back in the queue, attempt uncounted, for another miner", function()
    local job = run { "-o", "json", "client", "submit", "--model", "mistral", "--prompt", "hand me on" }.json()
    local other = node:key("miner")
    node:request("POST", "/v1/miners/register", { key = other, json = { miner_id = "other-m",
      capabilities = { models = { "mistral" } } } })
    local failed_before = run { "-o", "json", "miner", "status", "--miner-id", "journey-1" }.json().jobs_failed
    local got = run { "-o", "json", "miner", "poll", "--miner-id", "journey-1" }.json()
    assert.equal(job.job_id, got.job_id)
    -- another miner waits for a mistral job meanwhile: the hand-back wakes it
    local waiter = assert(sys.spawn { argv = { cli.bin, "--url", node.url, "-o", "json", "miner", "poll", "--wait", "20",
      "--miner-id", "other-m" }, env = { AITBC_HOME = cli.tempdir(), AITBC_MINER_KEY = other }, stdout = "pipe",
      stderr = "pipe" })
    local status, answer = node:request("POST", "/v1/miners/" .. job.job_id .. "/fail", { key = env.AITBC_MINER_KEY,
      headers = { ["X-Miner-ID"] = "journey-1" },
      json = { error_code = "UNSUPPORTED_MODEL", error_message = "Ollama here has no model mistral" } })
    assert.equal(200, status)
    assert.equal("QUEUED", answer.state)
    local code, out, err = waiter:communicate(nil, 30)
    assert.equal(0, code, err)
    assert.equal(job.job_id, require("aitbc.json").decode(out).job_id)
    local st = run { "-o", "json", "client", "status", job.job_id }.json()
    assert.equal("RUNNING", st.state)
    assert.equal("other-m", st.assigned_miner_id)
    assert.equal(1, st.attempts) -- the hand-back did not count
    local me = run { "-o", "json", "miner", "status", "--miner-id", "journey-1" }.json()
    assert.equal(failed_before, me.jobs_failed)
    assert.equal(0, run({ "client", "cancel", job.job_id }).code)
  end)

  it("fails clearly when Ollama is down or lacks the model", function()
    local down = run({ "miner", "mine-ollama", "--model", "llama3", "--miner-id", "journey-1" },
      { OLLAMA_HOST = "127.0.0.1:" .. cli.closed_port() })
    assert.equal(5, down.code)
    assert.matches("cannot reach Ollama at http://127.0.0.1:%d+", down.err)
    local missing = run { "miner", "mine-ollama", "--model", "phi3", "--miner-id", "journey-1" }
    assert.equal(3, missing.code)
    assert.matches("has no model phi3", missing.err)
  end)

  it("refuses bad client input before sending anything", function()
    assert.equal(2, run({ "client", "submit", "--data", "{not json" }).code)
    assert.equal(2, run({ "client", "submit", "--data", "[1,2]" }).code)
    local r = run { "client", "submit", "--model", "llama3" }
    assert.equal(2, r.code)
    assert.matches("needs a prompt", r.err)
    assert.equal(3, run({ "client", "status", "0000000000000000000000000000dead" }).code)
  end)
end)
