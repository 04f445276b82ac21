-- The devnet as a user types it: `aitbc devnet up`, then the spec's lines,
-- in a fresh HOME and with no variable the README does not tell a user to
-- set.  Real nodes, miners and the simulated Ollama; nothing else stands in.
local cli = require "support.cli"
local http = require "aitbc.http"
local json = require "aitbc.json"
local sys = require "aitbc.sys"

-- What the developer's shell may hold that a new user's does not.
local UNSET = { "AITBC_HOME", "AITBC_URL", "AITBC_API_KEY", "AITBC_CLIENT_KEY", "AITBC_MINER_KEY", "AITBC_ADMIN_KEY",
  "AITBC_OUTPUT", "AITBC_CONFIG", "AITBC_TIMEOUT", "AITBC_ENVIRONMENT", "AITBC_COLOR", "AITBC_DEBUG", "OLLAMA_HOST",
  "NO_COLOR" }

local function user_env(home, extra)
  local env = { HOME = home }
  for _, k in ipairs(UNSET) do env[k] = false end
  for k, v in pairs(extra or {}) do env[k] = v end
  return env
end

--- Types `aitbc ARGS...` as the user whose HOME is home; {code, out, err, json()}.
local function aitbc(home, args, extra_env)
  local proc = assert(sys.spawn { argv = { cli.bin, table.unpack(args) }, env = user_env(home, extra_env),
    stdin = "null", stdout = "pipe", stderr = "pipe" })
  local code, out, err = proc:communicate(nil, 90)
  assert(code, "aitbc " .. table.concat(args, " ") .. " did not finish")
  return { code = code, out = out, err = err, json = function() return assert(json.decode(out), out) end }
end

--- Starts `aitbc ARGS...` in the background; returns the process and a
-- function giving all it printed so far.
local function spawn(home, args)
  local log = home .. "/spawned-" .. sys.getpid() .. "-" .. math.random(1e9) .. ".log"
  local proc = assert(sys.spawn { argv = { cli.bin, table.unpack(args) }, env = user_env(home), stdin = "null",
    stdout = "null", stderr = "null", log = log })
  return proc, function() return sys.read_file(log) or "" end
end

local function wait_for(what, check, timeout)
  local deadline = sys.monotonic() + (timeout or 60)
  while sys.monotonic() < deadline do
    local v = check()
    if v then return v end
    sys.sleep(0.1)
  end
  error("timed out waiting for " .. what, 2)
end

--- Processes whose command line or environment names dir (what a devnet in dir runs).
local function processes_under(dir)
  local found = {}
  for _, name in ipairs(sys.list_dir("/proc") or {}) do
    local pid = tonumber(name)
    if pid and pid ~= sys.getpid() then
      local cmd = (sys.read_file("/proc/" .. name .. "/cmdline") or "")
      local environ = (sys.read_file("/proc/" .. name .. "/environ") or "")
      if cmd ~= "" and (cmd:find(dir, 1, true) or environ:find(dir, 1, true)) then
        found[#found + 1] = pid .. ": " .. cmd:gsub("%z", " ")
      end
    end
  end
  return found
end

local SUBMIT = { "client", "submit", "--type", "inference", "--model", "llama3", "--data", '{"prompt":"Hello AITBC"}' }

local function submit(home, model, prompt)
  local r = aitbc(home, { "-o", "json", "client", "submit", "--type", "inference", "--model", model, "--data",
    json.encode { prompt = prompt } })
  assert.equal(0, r.code, r.err)
  return r.json().job_id
end

local function job(home, id)
  local r = aitbc(home, { "-o", "json", "client", "status", id })
  assert.equal(0, r.code, r.err)
  return r.json()
end

local function wait_state(home, id, state, timeout)
  return wait_for("job " .. id .. " " .. state, function()
    local j = job(home, id)
    assert.not_equal("FAILED", j.state, j.error)
    return j.state == state and j
  end, timeout)
end

describe("aitbc devnet, typed as a user does", function()
  local home, started

  before_each(function()
    home = cli.tempdir()
    started = {}
  end)
  after_each(function()
    for _, p in ipairs(started) do
      p:kill(9)
      p:wait()
    end
    aitbc(home, { "devnet", "down" })
    cli.cleanup()
  end)

  it("spec 2.3 works right after devnet up: the miner and ollama commands find its Ollama (ollama_url)", function()
    local up = aitbc(home, { "devnet", "up" })
    assert.equal(0, up.code, up.err)
    local sim = aitbc(home, { "config", "get", "ollama_url" })
    assert.equal(0, sim.code, sim.err)
    local url = sim.out:match("^(http://127%.0%.0%.1:%d+)\n$")
    assert.is_string(url, sim.out)
    assert.matches("SIMULATED Ollama at " .. url:gsub("%p", "%%%0"), up.err)
    local models = aitbc(home, { "ollama", "models" })
    assert.equal(0, models.code, models.err)
    assert.matches("%(SIMULATED%)", models.out)
    assert.matches("llama3:latest", models.out)
    local reg = aitbc(home, { "miner", "register", "--gpus", "1x RTX 4090", "--price-per-hour", "0.5" })
    assert.equal(0, reg.code, reg.err)
    assert.matches("models%s+llama3:latest, llava:latest, mistral:latest", reg.out)
    local id = submit(home, "llama3", "Hello AITBC")
    local miner, log = spawn(home, { "miner", "mine-ollama", "--model", "llama3", "--continuous" })
    started[#started + 1] = miner
    wait_for("the miner to poll", function() return log():find("polling for jobs") end)
    assert.matches("at " .. url:gsub("%p", "%%%0") .. " %(SIMULATED%)", log())
    wait_state(home, id, "COMPLETED") -- by this miner or the devnet's
    miner:kill(2)
    assert.equal(130, miner:wait())
    -- flag > OLLAMA_HOST > config file
    local closed = "127.0.0.1:" .. cli.closed_port()
    local env_wins = aitbc(home, { "ollama", "models" }, { OLLAMA_HOST = closed })
    assert.equal(5, env_wins.code)
    assert.matches("cannot reach Ollama at http://" .. closed:gsub("%p", "%%%0"), env_wins.err)
    assert.equal(0, aitbc(home, { "ollama", "models", "--ollama-url", url }, { OLLAMA_HOST = closed }).code)
    local shown = aitbc(home, { "-o", "json", "config", "show" }).json()
    assert.is_not_nil(json.encode(shown):find(url, 1, true), "config show lists ollama_url")
  end)

  it("gives a miner only the jobs its Ollama can run, keeps that current, and fails none for a missing model", function()
    assert.equal(0, aitbc(home, { "devnet", "up", "--miners", "0" }).code)
    local url = aitbc(home, { "config", "get", "ollama_url" }).out:gsub("%s+$", "")
    -- registered while Ollama did not answer: no model list
    local reg = aitbc(home, { "miner", "register", "--gpus", "1x RTX 4090", "--price-per-hour", "0.5", "--ollama-url",
      "127.0.0.1:" .. cli.closed_port() })
    assert.equal(0, reg.code, reg.err)
    assert.matches("models%s+any", reg.out)
    local phi = {}
    for i = 1, 3 do phi[i] = submit(home, "phi3", "phi job " .. i) end
    local llama = submit(home, "llama3", "llama job")
    local miner, log = spawn(home, { "miner", "mine-ollama", "--model", "llama3", "--continuous" })
    started[#started + 1] = miner
    wait_state(home, llama, "COMPLETED") -- queued after the phi3 jobs, and still the one this miner took
    assert.matches("now declares models llama3:latest, llava:latest, mistral:latest %(was: any%)", log())
    for _, id in ipairs(phi) do
      local j = job(home, id)
      assert.equal("QUEUED", j.state, j.error)
      assert.equal(0, j.attempts)
    end
    -- `ollama pull phi3`: the miner notices, declares it, and runs the waiting jobs
    local res = assert(http.request { method = "POST", url = url .. "/api/pull", json = { model = "phi3" } })
    assert.equal(200, res.status)
    for _, id in ipairs(phi) do wait_state(home, id, "COMPLETED") end
    assert.matches("Ollama's models changed: llama3:latest, llava:latest, mistral:latest, phi3:latest", log())
    -- `ollama rm llama3`: a llama3 job is never failed for it, whether the miner saw the removal first or not
    res = assert(http.request { method = "DELETE", url = url .. "/api/delete", json = { model = "llama3" } })
    assert.equal(200, res.status)
    local orphan = submit(home, "llama3", "nobody has llama3 now")
    wait_for("the miner to drop llama3", function()
      return log():find("now declares models llava:latest, mistral:latest, phi3:latest", 1, true)
    end)
    local j = job(home, orphan)
    assert.equal("QUEUED", j.state, j.error)
    assert.equal(0, j.attempts)
    miner:kill(15)
    assert.equal(143, miner:wait())
  end)

  it("keeps working when its keys are rotated (15.7); up and down are idempotent; a failed up stops what it started", function()
    local dir = home .. "/.aitbc/devnet"
    local up = aitbc(home, { "devnet", "up" })
    assert.equal(0, up.code, up.err)
    local again = aitbc(home, { "devnet", "up" })
    assert.equal(0, again.code, again.err)
    assert.matches("devnet already running in " .. dir:gsub("%p", "%%%0"), again.out)
    for _, key_type in ipairs { "admin", "miner", "client" } do
      local r = aitbc(home, { "auth", "rotate", "--key-type", key_type, "--generate-new" })
      assert.equal(0, r.code, r.err)
    end
    wait_state(home, submit(home, "llama3", "after rotation"), "COMPLETED") -- the devnet's miner still works
    assert.equal(0, aitbc(home, { "devnet", "up" }).code)
    local down = aitbc(home, { "devnet", "down" })
    assert.equal(0, down.code, down.err)
    assert.same({}, processes_under(dir))
    local down_again = aitbc(home, { "devnet", "down" })
    assert.equal(0, down_again.code, down_again.err)
    assert.matches("no devnet running in .*; nothing to stop", down_again.out)
    -- back up on the same data: the node's first admin key is revoked, the config's works
    local restarted = aitbc(home, { "devnet", "up" })
    assert.equal(0, restarted.code, restarted.err)
    wait_state(home, submit(home, "llama3", "after restart"), "COMPLETED")
    assert.equal(0, aitbc(home, { "devnet", "down" }).code)
    -- a config holding no admin key the node accepts: up fails, and leaves nothing running
    local failed = aitbc(home, { "--config", home .. "/other.json", "devnet", "up" })
    assert.equal(4, failed.code, failed.out)
    assert.matches("no admin key that the devnet's node accepts", failed.err)
    assert.same({}, processes_under(dir))
    assert.equal(3, aitbc(home, { "devnet", "status" }).code)
    assert.equal(0, aitbc(home, { "devnet", "down" }).code)
    local recovered = aitbc(home, { "devnet", "up" })
    assert.equal(0, recovered.code, recovered.err)
    local r = aitbc(home, SUBMIT)
    assert.equal(0, r.code, r.err)
  end)

  it("brings back a part that stopped when up is typed again", function()
    local up = aitbc(home, { "-o", "json", "devnet", "up" })
    assert.equal(0, up.code, up.err)
    local state = up.json()
    assert.is_nil(json.encode(state):find("aitbc_", 1, true), "no key in the JSON output")
    sys.kill(state.miners[1].pid, 9)
    wait_for("the miner to be gone", function() return not sys.kill(state.miners[1].pid, 0) end)
    local again = aitbc(home, { "-o", "json", "devnet", "up" })
    assert.equal(0, again.code, again.err)
    local now = again.json()
    assert.equal(state.node.pid, now.node.pid)
    assert.not_equal(state.miners[1].pid, now.miners[1].pid)
    assert.matches("miner%s+devnet%-miner%-1", again.err)
    wait_state(home, submit(home, "llama3", "the miner is back"), "COMPLETED")
  end)
end)
