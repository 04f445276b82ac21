-- aitbc client against a real node, with miners on the simulated Ollama:
-- waiting for results, listing jobs, and refusing a receipt that does not verify.
local cli = require "support.cli"
local json = require "aitbc.json"
local nodes = require "support.node"

describe("aitbc client", function()
  local node, ollama_url, miner_key
  setup(function()
    node = nodes.start { args = { "--log-level", "warn" } }
    ollama_url = cli.simulated_ollama()
    miner_key = node:key("miner")
  end)
  teardown(function()
    node:stop()
    cli.cleanup()
  end)
  -- what a test left queued (when it failed half-way) is canceled: the next test's miners must not take it
  after_each(function()
    local _, queued = node:request("GET", "/v1/admin/jobs?state=QUEUED&limit=500", { key = node.admin_key })
    for _, j in ipairs(queued.items) do node:request("POST", "/v1/jobs/" .. j.job_id .. "/cancel", { key = node.admin_key }) end
  end)

  --- A client of its own for each test (its jobs are the only ones it lists).
  local function new_client()
    local home, key = cli.tempdir(), node:key("client")
    return function(args, extra)
      local env = { AITBC_CLIENT_KEY = key }
      for k, v in pairs(extra or {}) do env[k] = v end
      return node:cli(args, { home = home, env = env, timeout = 60 })
    end, key
  end

  --- A miner mining until its test ends (jobs: stop after that many).
  local function start_miner(miner_id, jobs)
    local argv = { cli.bin, "--url", node.url, "miner", "mine-ollama", "--model", "llama3", "--miner-id", miner_id,
      "--ollama-url", ollama_url, "--poll-wait", "1" }
    if jobs then argv[#argv + 1] = "--jobs" argv[#argv + 1] = tostring(jobs) else argv[#argv + 1] = "--continuous" end
    return assert(cli.spawn { argv = argv, env = { AITBC_HOME = cli.tempdir(), AITBC_MINER_KEY = miner_key },
      stdout = "pipe", stderr = "pipe" })
  end

  it("submit --wait waits for the result and prints it with its verified receipt", function()
    local run = new_client()
    start_miner("waiter")
    local r = run { "client", "submit", "--model", "llama3", "--prompt", "Hello AITBC", "--wait" }
    assert.equal(0, r.code, r.err)
    assert.matches("^Hello! I am the AITBC simulated model", r.out)
    assert.matches("miner%s+waiter", r.out)
    assert.matches("proof of execution%s+%x+ %(signature verified against the node's key%)", r.out)
    assert.matches("submitted; waiting", r.err)
    assert.matches("completed on waiter", r.err)
    local j = run({ "-o", "json", "client", "submit", "--model", "llama3", "--prompt", "again", "--wait" }).json()
    assert.equal("COMPLETED", j.state)
    assert.is_true(j.receipt_verified)
    assert.equal("waiter", j.receipt.provider)
    assert.matches("^You asked about again%.", j.result.response)
    -- a job that fails: --wait says how it ended
    local failed = run { "client", "submit", "--model", "llama3", "--prompt", "__simulate_failure__", "--wait" }
    assert.equal(1, failed.code)
    assert.matches("ended FAILED: INFERENCE_FAILED", failed.err)
  end)

  it("submit --wait prints the text as the miner generates it, once, and the job's story on stderr", function()
    local _, key = new_client()
    local slow = cli.simulated_ollama(0.25) -- about 4 tokens a second: the job runs for seconds
    local miner = assert(cli.spawn { argv = { cli.bin, "--url", node.url, "miner", "mine-ollama", "--model", "llama3",
      "--miner-id", "streamer", "--ollama-url", slow, "--poll-wait", "1", "--jobs", "1" },
      env = { AITBC_HOME = cli.tempdir(), AITBC_MINER_KEY = miner_key }, stdout = "null", stderr = "null" })
    local waiting = assert(cli.spawn { argv = { cli.bin, "--url", node.url, "client", "submit", "--model", "llama3",
      "--prompt", "Stream me", "--wait" }, env = { AITBC_HOME = cli.tempdir(), AITBC_CLIENT_KEY = key },
      stdout = "pipe", stderr = "null" })
    local seen = ""
    while not seen:find("You asked", 1, true) do seen = seen .. assert(waiting:read(30), "no text: " .. seen) end
    -- the first words are out while the job is still running: they came from its events, not its result
    local _, running = node:request("GET", "/v1/admin/jobs?state=RUNNING&limit=10", { key = node.admin_key })
    assert.equal(1, #running.items)
    local code, rest = waiting:communicate(nil, 60)
    assert.equal(0, code)
    local out = seen .. rest
    local text = out:match("^(You asked about Stream me%.[^\n]*%[simulated%])\n\njob ")
    assert.is_string(text, out) -- the text once, then the record
    local _, n = out:gsub("You asked", "")
    assert.equal(1, n)
    assert.matches("proof of execution%s+%x+ %(signature verified", out)
    assert.equal(0, miner:communicate(nil, 30))
  end)

  it("result --wait waits for a job no miner has taken yet; without --wait it says the result is not ready", function()
    local run, key = new_client()
    local job = run({ "-o", "json", "client", "submit", "--model", "llama3", "--prompt", "wait for me" }).json()
    local early = run { "client", "result", job.job_id }
    assert.equal(1, early.code)
    assert.matches("is QUEUED; its result is not ready yet", early.err)
    assert.matches("aitbc client result " .. job.job_id .. " %-%-wait", early.err) -- the hint
    local gave_up = run { "client", "result", job.job_id, "--wait", "--timeout", "1" }
    assert.equal(124, gave_up.code) -- a wait that ran out, as aitbc wait and timeout(1) exit
    assert.matches("has not ended after 1 s", gave_up.err)
    local waiting = assert(cli.spawn { argv = { cli.bin, "--url", node.url, "client", "result", job.job_id, "--wait" },
      env = { AITBC_HOME = cli.tempdir(), AITBC_CLIENT_KEY = key }, stdout = "pipe", stderr = "pipe" })
    start_miner("late", 1)
    local code, out, err = waiting:communicate(nil, 60)
    assert.equal(0, code, err)
    assert.matches("queued", err) -- it saw the job waiting, then running, then done
    assert.matches("completed on late", err)
    assert.matches("^You asked about wait for me%.", out)
    assert.matches("signature verified against the node's key", out)
  end)

  it("lists its own jobs, newest first, by state, with paging", function()
    local run = new_client()
    local other = new_client()
    other { "client", "submit", "--model", "phi3", "--prompt", "someone else's" }
    start_miner("lister", 2)
    local done = {}
    for i = 1, 2 do
      done[i] = run({ "-o", "json", "client", "submit", "--model", "llama3", "--prompt", "done " .. i, "--wait" }).json()
    end
    local queued = run({ "-o", "json", "client", "submit", "--model", "phi3", "--prompt", "nobody serves phi3" }).json()
    local r = run { "client", "list" }
    assert.equal(0, r.code, r.err)
    assert.matches("JOB ID%s+STATE%s+MODEL%s+MINER%s+REQUESTED", r.out)
    assert.matches(queued.job_id .. "%s+QUEUED%s+phi3%s+%-", r.out)
    assert.matches(done[1].job_id .. "%s+COMPLETED%s+llama3%s+lister", r.out)
    assert.matches("3 of 3", r.out)
    local j = run({ "-o", "json", "client", "list" }).json()
    assert.same({ 3, 20, 0 }, { j.total, j.limit, j.offset })
    assert.same({ queued.job_id, done[2].job_id, done[1].job_id }, { j.items[1].job_id, j.items[2].job_id, j.items[3].job_id })
    local completed = run({ "-o", "json", "client", "list", "--state", "completed", "--limit", "1" }).json()
    assert.same({ 2, 1 }, { completed.total, #completed.items })
    assert.equal(done[2].job_id, completed.items[1].job_id)
    assert.equal(1, run({ "-o", "json", "client", "history", "--model", "phi3" }).json().total)
    assert.matches("no jobs", run({ "client", "list", "--state", "failed" }).out)
  end)

  it("submit --gpu and --min-vram reach only a miner whose GPU fits", function()
    local run = new_client()
    local rigs = { { id = "small-gtx", name = "GeForce GTX 1060", gb = 6 }, { id = "big-gtx", name = "GeForce GTX 1080", gb = 24 },
      { id = "big-rtx", name = "NVIDIA GeForce RTX 4090", gb = 24 } }
    for _, rig in ipairs(rigs) do
      rig.key = node:key("miner")
      node:request("POST", "/v1/miners/register", { key = rig.key, headers = { ["X-Miner-ID"] = rig.id },
        json = { capabilities = { gpus = { { name = rig.name, memory_gb = rig.gb } } } } })
    end
    local job = run({ "-o", "json", "client", "submit", "--model", "llama3", "--prompt", "x", "--gpu", "rtx", "--min-vram", "20" }).json()
    local function poll(rig)
      return node:request("POST", "/v1/miners/poll", { key = rig.key, headers = { ["X-Miner-ID"] = rig.id }, json = {} })
    end
    assert.equal(204, (poll(rigs[1])))
    assert.equal(204, (poll(rigs[2])))
    local s, got = poll(rigs[3])
    assert.equal(200, s)
    assert.equal(job.job_id, got.job_id)
    assert.same({ gpu = "rtx", min_vram_gb = 20 }, got.constraints)
  end)

  it("result refuses a receipt that does not verify against the node's key", function()
    local run, key = new_client()
    local _, job = node:request("POST", "/v1/jobs", { key = key, json = { payload = { prompt = "x" }, model = "llama3" } })
    node:request("POST", "/v1/miners/register", { key = miner_key, headers = { ["X-Miner-ID"] = "honest" },
      json = { capabilities = { models = { "llama3" } } } })
    local _, got = node:request("POST", "/v1/miners/poll", { key = miner_key, headers = { ["X-Miner-ID"] = "honest" }, json = {} })
    assert.equal(job.job_id, got.job_id)
    assert.equal(200, (node:request("POST", "/v1/miners/" .. job.job_id .. "/result", { key = miner_key,
      headers = { ["X-Miner-ID"] = "honest" }, json = { result = { response = "the real answer" } } })))
    -- straight from the node: verified
    local direct = run { "client", "result", job.job_id }
    assert.equal(0, direct.code, direct.err)
    assert.matches("signature verified", direct.out)
    -- through a man in the middle that rewrites the receipt's provider
    local srv, base = cli.echo_server { handler = "support.tamper_app" }
    finally(function() srv:stop(1) end)
    local via = base .. "/" .. node.url:match(":(%d+)$")
    local r = run { "--url", via, "client", "result", job.job_id }
    assert.equal(1, r.code)
    assert.matches("the receipt of job " .. job.job_id .. " does not verify", r.err)
    assert.matches("do not trust this result", r.err)
    assert.not_matches("the real answer", r.out) -- the result is not shown as if it were good
    local j = run { "--url", via, "-o", "json", "client", "result", job.job_id }
    assert.equal(1, j.code)
    assert.equal("bad_receipt", json.decode(j.out).error.code)
  end)
end)
