-- Scripts (aitbc run) after `aitbc devnet up`: the README's example lines
-- as written, and require "aitbc" giving the client API the commands use,
-- with the configuration the devnet wrote.
local cli = require "support.cli"
local json = require "aitbc.json"
local sys = require "aitbc.sys"

describe("scripts on a devnet", function()
  local home
  local function run(args, env)
    local e = { AITBC_HOME = home }
    for k, v in pairs(env or {}) do e[k] = v end
    return cli.run(args, { home = home, env = e, timeout = 120 })
  end
  setup(function()
    home = cli.tempdir()
    local up = run { "devnet", "up", "--simulate" }
    assert(up.code == 0, "devnet up failed: " .. up.err)
  end)
  teardown(function()
    run { "devnet", "down" }
    cli.cleanup()
  end)

  --- A script in a file of its own; returns its path.
  local function script(text)
    local path = cli.tempdir() .. "/script.lua"
    assert(sys.write_file(path, text, tonumber("600", 8)))
    return path
  end

  it("runs every example the README shows, as written, and the README shows every example", function()
    local readme = assert(sys.read_file("README.md"))
    local shown = {}
    for line in readme:gmatch("[^\n]+") do
      local args = line:match("^build/aitbc run (scripts/%S+%.lua[^#]*)")
      if args then
        local argv = { "run" }
        for word in args:gmatch("%S+") do argv[#argv + 1] = word end
        shown[argv[2]] = true
        local r = run(argv)
        assert.equal(0, r.code, line .. "\n" .. r.out .. r.err)
        assert.is_true(#r.out > 0, line)
      end
    end
    for _, name in ipairs(sys.list_dir("scripts")) do
      if name:match("%.lua$") then assert.is_true(shown["scripts/" .. name], "README shows no run of scripts/" .. name) end
    end
  end)

  it("talk to the configured node, not a default port", function()
    local r = run { "run", "scripts/node_health.lua" }
    assert.equal(0, r.code, r.err)
    local url = run({ "config", "get", "url" }).out:gsub("%s+$", "")
    assert.equal(url, r.out:match("^(%S+):"))
    -- the flags `aitbc run` was given count, as for any command
    local closed = "http://127.0.0.1:" .. cli.closed_port()
    local away = run { "--url", closed, "run", "scripts/node_health.lua" }
    assert.equal(5, away.code)
    assert.matches("unhealthy: cannot reach " .. closed, away.err)
  end)

  it("give require 'aitbc' the client API the commands use, with the user's keys", function()
    local path = script([[
      local aitbc = require "aitbc"
      local job = aitbc.client.submit { model = "llama3", prompt = "from a script" }
      assert(job.job_id and job.state == "QUEUED", "submit returns the job view")
      local done = aitbc.client.wait(job.job_id, { timeout = 60 })
      assert(done.state == "COMPLETED", done.state)
      local res = aitbc.client.result(job.job_id)
      assert(res.receipt_verified == true and type(res.result.response) == "string", "a verified result")
      assert(aitbc.client.status(job.job_id).assigned_miner_id == "devnet-miner-1")
      local list = aitbc.client.list { state = "completed" }
      assert(list.total >= 1 and list.items[1].job_id == job.job_id, "list")
      assert(aitbc.node():call("GET", "/v1/auth/whoami").role == "client")
      assert(aitbc.node({ role = "admin" }):call("GET", "/v1/auth/whoami").role == "admin")
      local ok, err = pcall(aitbc.client.submit, { prompt = "no model" })
      assert(not ok and aitbc.errors.exit_code(err) == 2 and err.message:find("which model"), tostring(err))
      local other = aitbc.connect { url = "http://127.0.0.1:1" }
      ok, err = pcall(other.client.status, job.job_id)
      assert(not ok and aitbc.errors.exit_code(err) == 5, tostring(err))
      print(job.job_id)
      return 0
    ]])
    local r = run { "run", path }
    assert.equal(0, r.code, r.out .. r.err)
    assert.matches("%x+", r.out)
  end)

  it("pay through the client API: funded, then released to the devnet's miner", function()
    local env = { AITBC_WALLET_PASSWORD = "script wallet pw" }
    assert.equal(0, run({ "wallet", "create", "--name", "scripted" }, env).code)
    assert.equal(0, run({ "wallet", "faucet", "--amount", "20" }, env).code)
    local path = script([[
      local aitbc = require "aitbc"
      local job = aitbc.client.submit { model = "llama3", prompt = "paid from a script" }
      aitbc.client.wait(job.job_id, { timeout = 60 })
      local seen = {}
      local paid = aitbc.client.pay(job.job_id, "2", { on_change = function(status) seen[#seen + 1] = status end })
      print(paid.payment_status, table.concat(seen, ","), paid.released_to)
    ]])
    local r = run({ "run", path }, env)
    assert.equal(0, r.code, r.out .. r.err)
    local state = json.decode(sys.read_file(home .. "/devnet/devnet.json"))
    assert.matches("^released%s+pending,funded,released%s+" .. state.miners[1].payout_address, r.out)
    assert.equal("18", run({ "-o", "json", "wallet", "balance" }).json().available)
  end)
end)
