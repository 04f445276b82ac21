-- aitbc devnet used as a newcomer would: a whole local network from one command, used through nothing
-- but the config it writes, and stopped again by devnet down.
local cli = require "support.cli"
local json = require "aitbc.json"
local sys = require "aitbc.sys"

describe("aitbc devnet", function()
  teardown(cli.cleanup)

  it("starts a node, the simulated Ollama and miners; the spec's commands then work from its config; down stops all", function()
    local home = cli.tempdir()
    -- nothing answers at OLLAMA_HOST: the devnet starts the simulated Ollama
    local env = { HOME = home, OLLAMA_HOST = "127.0.0.1:" .. cli.closed_port() }
    local function aitbc(args) return cli.run(args, { home = home .. "/.aitbc", env = env, timeout = 90 }) end
    local up = aitbc { "devnet", "up", "--miners", "2" }
    local state = json.decode(sys.read_file(home .. "/.aitbc/devnet/devnet.json") or "null")
    if state then -- whatever happens below, what it started is stopped when this test ends
      cli.adopt(state.node.pid)
      if state.ollama.pid then cli.adopt(state.ollama.pid) end
      for _, m in ipairs(state.miners) do cli.adopt(m.pid) end
    end
    assert.equal(0, up.code, up.err)
    assert.matches("started the SIMULATED Ollama", up.err)
    assert.matches("devnet up in .*: node http://127%.0%.0%.1:%d+, 2 miner%(s%), SIMULATED Ollama", up.out)
    local pids = { state.node.pid, state.ollama.pid, state.miners[1].pid, state.miners[2].pid }
    for _, pid in ipairs(pids) do assert.is_true(cli.alive(pid)) end

    -- the config points at it, with a client, a miner and an admin key
    local config = json.decode(sys.read_file(home .. "/.aitbc/config.json"))
    assert.equal(state.node.url, config.url)
    for _, role in ipairs { "client", "miner", "admin" } do assert.is_string(config.keys.default[role].key, role) end
    -- so the spec's lines work as written: no URL, no key given
    local sub = aitbc { "client", "submit", "--type", "inference", "--model", "llama3", "--data", '{"prompt":"Hello AITBC"}',
      "--wait", "--timeout", "60" }
    assert.equal(0, sub.code, sub.err)
    assert.matches("^Hello! I am the AITBC simulated model", sub.out)
    assert.matches("miner%s+devnet%-miner%-[12]", sub.out)
    assert.matches("signature verified against the node's key", sub.out)
    local who = aitbc { "-o", "json", "api", "--role", "admin", "/v1/auth/whoami" }
    assert.equal(0, who.code, who.err)
    assert.equal("admin", who.json().role)

    -- status: each part, and how it stands
    local status = aitbc { "devnet", "status" }
    assert.equal(0, status.code, status.err)
    assert.matches("node%s+healthy%s+" .. state.node.pid, status.out)
    assert.matches("ollama %(simulated%)%s+answering", status.out)
    assert.matches("devnet%-miner%-1%s+running", status.out)
    assert.matches("devnet%-miner%-2%s+running", status.out)
    local again = aitbc { "devnet", "up" } -- idempotent: it says so and changes nothing
    assert.equal(0, again.code, again.err)
    assert.matches("already running", again.out .. again.err)

    -- down: every part stopped, and nothing left running
    local down = aitbc { "-o", "json", "devnet", "down" }
    assert.equal(0, down.code, down.err)
    local results = {}
    for _, s in ipairs(down.json().stopped) do results[s.what] = s.result end
    assert.same({ ["devnet-miner-1"] = "stopped", ["devnet-miner-2"] = "stopped", ["simulated ollama"] = "stopped",
      node = "stopped" }, results)
    for _, pid in ipairs(pids) do assert.is_false(cli.alive(pid), "pid " .. pid .. " still runs") end
    local gone = aitbc { "devnet", "status" }
    assert.equal(3, gone.code)
    assert.matches("no devnet in", gone.err)
    local down_again = aitbc { "devnet", "down" } -- idempotent: nothing to stop, and it says so
    assert.equal(0, down_again.code)
    assert.matches("no devnet", down_again.out .. down_again.err)
  end)
end)
