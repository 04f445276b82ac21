-- Client and miner journeys with real processes: a node, simulated
-- Ollamas, miners, and the CLI.
local cli = require "support.cli"
local json = require "aitbc.json"
local nodes = require "support.node"
local sys = require "aitbc.sys"
local mining = require "aitbc.mining"

local sim = cli.simulated_ollama

describe("mining", function()
  it("reads GPU descriptions", function()
    assert.same({ { name = "RTX 4090", count = 1, memory_gb = 24 } }, mining.parse_gpus("1x RTX 4090"))
    assert.same({ { name = "A100", count = 2, memory_gb = 80 }, { name = "Custom GPU", count = 1 } },
      mining.parse_gpus("2x A100 80GB, Custom GPU"))
    assert.is_nil((mining.parse_gpus("0x RTX 4090")))
    assert.equal("2x A100 (80 GB)", mining.describe { { name = "A100", count = 2, memory_gb = 80 } })
  end)

  it("lists the GPUs NVML reports, or says clearly why there is none", function()
    -- what this machine has, asked in this process through the same NVML binding
    local gpus, note = require("aitbc.native.gpu").list()
    local r = cli.run { "miner", "gpus" }
    assert.equal(0, r.code, r.err)
    local j = cli.run({ "-o", "json", "miner", "gpus" }).json()
    assert.equal(#gpus, #j.gpus)
    if #gpus == 0 then
      assert.is_string(note)
      assert.equal("no NVIDIA GPU found: " .. note .. "\n", r.out)
      assert.equal(note, j.note)
    else
      for i, g in ipairs(gpus) do
        assert.equal(g.name, j.gpus[i].name)
        assert.matches(g.name:gsub("%p", "%%%0"), r.out)
      end
      assert.not_matches("no NVIDIA GPU found", r.out)
    end
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

  -- what a test left queued (when it failed half-way) is canceled: the next test's miners must not take it
  after_each(function()
    local _, queued = node:request("GET", "/v1/admin/jobs?state=QUEUED&limit=500", { key = node.admin_key })
    for _, j in ipairs(queued.items) do node:request("POST", "/v1/jobs/" .. j.job_id .. "/cancel", { key = node.admin_key }) end
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
    -- every field the README documents is there (null where it has no value yet)
    for _, f in ipairs { "job_id", "state", "status", "model", "requested_at", "expires_at", "assigned_miner_id",
      "ttl_seconds", "attempts", "timings", "error", "payment_id", "payment_status" } do
      assert.is_true(job[f] ~= nil, f .. " is missing")
    end
    assert.matches("^%x+$", job.job_id)
    assert.same({ "QUEUED", "llama3", 900, 0 }, { job.state, job.model, job.ttl_seconds, job.attempts })
    assert.matches("^%d%d%d%d%-%d%d%-%d%dT", job.requested_at)
    assert.matches("^%d%d%d%d%-%d%d%-%d%dT", job.expires_at)
    assert.equal(json.null, job.assigned_miner_id) -- no miner has it yet
    assert.equal(json.null, job.error)
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
    local slow_url = sim(0.5)
    local job = run { "-o", "json", "client", "submit", "--model", "llama3", "--prompt", "slow work" }.json()
    local doomed = assert(cli.spawn { argv = { cli.bin, "--url", node.url, "miner", "mine-ollama", "--model", "llama3",
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
  end)

  it("finishes the job in hand when told to stop (SIGTERM), then stops", function()
    local slow_url = sim(0.1)
    local job = run { "-o", "json", "client", "submit", "--model", "llama3", "--prompt", "finish me" }.json()
    local miner = assert(cli.spawn { argv = { cli.bin, "--url", node.url, "miner", "mine-ollama", "--model", "llama3",
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
    local slow_url = sim(0.1)
    local job = run { "-o", "json", "client", "submit", "--model", "llama3", "--prompt", "cancel me midway" }.json()
    local miner = assert(cli.spawn { argv = { cli.bin, "--url", node.url, "miner", "mine-ollama", "--model", "llama3",
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
    assert.equal(143, code) -- SIGTERM: it finished the job in hand, then stopped
  end)

  it("heart-beats once, or every few seconds for as long as its parent lives", function()
    assert.equal(0, run({ "miner", "register", "--gpus", "1x RTX 4090", "--miner-id", "beating" }).code)
    local function status() return run({ "-o", "json", "miner", "status", "--miner-id", "beating" }).json() end
    -- silent past --heartbeat-timeout (2 s): offline; one heartbeat: online again
    cli.wait_for("the silent miner to go offline", function() return status().status == "OFFLINE" end)
    local r = run { "miner", "heartbeat", "--miner-id", "beating" }
    assert.equal(0, r.code, r.err)
    assert.matches("heartbeat sent for miner beating", r.out)
    assert.equal("ONLINE", status().status)
    assert.equal("beating", run({ "-o", "json", "miner", "heartbeat", "--miner-id", "beating" }).json().miner_id)
    -- --every: keeps beating (last_seen moves on) until its parent is gone, then stops by itself
    local parent = assert(cli.spawn { argv = { cli.bin, "run", "/dev/stdin" }, stdin = "pipe" }) -- reads until we close it
    local beats = assert(cli.spawn { argv = { cli.bin, "--url", node.url, "miner", "heartbeat", "--miner-id", "beating",
      "--every", "1", "--parent", tostring(parent:pid()) }, env = { AITBC_HOME = home, AITBC_MINER_KEY = env.AITBC_MINER_KEY },
      stdout = "pipe", stderr = "pipe" })
    local seen = { [status().last_seen] = true }
    cli.wait_for("two more heartbeats", function()
      seen[status().last_seen] = true
      local n = 0
      for _ in pairs(seen) do n = n + 1 end
      return n >= 3
    end)
    assert.is_nil(beats:wait(true)) -- still beating
    parent:kill(9)
    parent:wait()
    local code, _, err = beats:communicate(nil, 10)
    assert.equal(0, code, err)
    local unknown = run { "miner", "heartbeat", "--miner-id", "never-registered" }
    assert.equal(3, unknown.code)
  end)

  it("prints the tokens as they come with --stream, on stderr, and nothing of them without", function()
    local function mine(extra)
      local job = run({ "-o", "json", "client", "submit", "--model", "llama3", "--prompt", "stream these tokens" }).json()
      local r = run { "miner", "mine-ollama", "--model", "llama3", "--jobs", "1", "--miner-id", "streamer", table.unpack(extra) }
      assert.equal(0, r.code, r.err)
      local res = run({ "-o", "json", "client", "result", job.job_id }).json()
      return r, res.result.response
    end
    local r, text = mine {}
    assert.matches("^You asked about stream these tokens%.", text)
    assert.not_matches(text, r.out .. r.err, 1, true)
    assert.matches("result submitted", r.out)
    r, text = mine { "--stream" }
    assert.matches(text, r.err, 1, true)
    assert.not_matches(text, r.out, 1, true)
    assert.matches("result submitted", r.out)
    -- with --output json: stdout holds the one closing document; the log and the tokens are on stderr
    r, text = mine { "--stream", "-o", "json" }
    local done = require("aitbc.json").decode(r.out)
    assert.same({ "streamer", 1 }, { done.miner_id, done.jobs_completed })
    assert.matches(text, r.err, 1, true)
    assert.matches("result submitted", r.err)
  end)

  it("polls: a job, or 'no jobs in queue'", function()
    assert.equal(0, run({ "miner", "register", "--gpus", "1x RTX 4090", "--miner-id", "poller" }).code)
    local empty = run { "miner", "poll", "--miner-id", "poller" }
    assert.equal(0, empty.code, empty.err)
    assert.matches("no jobs in queue", empty.out)
    local job = run { "-o", "json", "client", "submit", "--model", "llama3", "--prompt", "poll me" }.json()
    local got = run { "-o", "json", "miner", "poll", "--miner-id", "poller" }.json()
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
