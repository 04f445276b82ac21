-- aitbc run and aitbc scenario run.
local cli = require "support.cli"
local sys = require "aitbc.sys"

local function script(dir, name, text)
  local path = dir .. "/" .. name
  assert(sys.write_file(path, text, tonumber("644", 8)))
  return path
end

describe("aitbc run", function()
  after_each(cli.cleanup)

  it("gives the script its arguments and the aitbc API, and its exit code", function()
    local dir = cli.tempdir()
    local path = script(dir, "s.lua", [[
      local aitbc = require "aitbc"
      local a, b = ...
      print(a, b, arg[0] ~= nil, aitbc.json.encode({ n = #arg }), aitbc.crypto.hex(aitbc.crypto.sha256("")):sub(1, 8))
      return 7
    ]])
    local r = cli.run { "run", path, "one", "--two" }
    assert.equal(7, r.code)
    assert.equal('one\t--two\ttrue\t{"n":2}\te3b0c442\n', r.out)
  end)

  it("reports a missing script (exit 3) and a failing one (exit 1) without a traceback", function()
    local r = cli.run { "run", "/no/such.lua" }
    assert.equal(3, r.code)
    assert.matches("script not found", r.err)
    local dir = cli.tempdir()
    local bad = script(dir, "bad.lua", "local x = nil\nreturn x.field\n")
    r = cli.run { "run", bad }
    assert.equal(1, r.code)
    assert.matches("bad.lua:2:", r.err)
    assert.not_matches("stack traceback", r.err)
    r = cli.run { "--debug", "run", bad }
    assert.matches("stack traceback", r.err)
    local syntax = script(dir, "syntax.lua", "this is not lua")
    assert.equal(2, cli.run({ "run", syntax }).code)
  end)

  it("turns Ctrl-C into exit 130 after cleanup runs", function()
    local dir = cli.tempdir()
    local path = script(dir, "wait.lua", [[
      local sys = require "aitbc.sys"
      local marker <close> = setmetatable({}, { __close = function() io.stderr:write("cleanup ran\n") end })
      print("ready") io.stdout:flush()
      for _ = 1, 200 do sys.sleep(0.05) end
      print("not interrupted")
    ]])
    local p = assert(cli.spawn { argv = { cli.bin, "run", path }, stdout = "pipe", stderr = "pipe" })
    assert.equal("ready\n", p:read(10))
    p:kill(2)
    local code, out, err = p:communicate(nil, 10)
    assert.equal(130, code)
    assert.equal("", out)
    assert.matches("cleanup ran", err)
    assert.matches("interrupted", err)
  end)
end)

describe("aitbc scenario run", function()
  after_each(cli.cleanup)

  local SCENARIO = [[
    local s = require("aitbc.scenario").new("Fixture")
    s:step("0.1", "passes", function(t)
      local r = t:run("aitbc config set timeout 12 && aitbc config get timeout")
      t:expect_exit(r, 0)
      t.vars.out = t:expect_match(r.stdout, "\n(%d+)\n$")
    end)
    s:step("0.2", "sees state from the step before", function(t)
      t:expect(t.vars.out == "12", "vars carried over")
      t:expect(os.getenv("HOME") ~= (t:run("echo $HOME").stdout:gsub("\n", "")), "own home")
      t:expect_exit(t:run('test "$(pwd -P)" = "$(cd "$HOME" && pwd -P)"'), 0) -- files a step writes land there
    end)
    s:step("0.3", "fails", function(t) t:expect_exit(t:run("aitbc bogus"), 0) end)
    s:step("0.4", "skips", function(t) t:skip("not today") end)
    return s
  ]]

  it("reports each step, exits 1 on a failure, and ends with the counts", function()
    local dir = cli.tempdir()
    local path = script(dir, "fixture.lua", SCENARIO)
    local r = cli.run { "scenario", "run", path, "--junit", dir .. "/junit.xml" }
    assert.equal(1, r.code, r.err)
    assert.matches("ok   0%.1 passes", r.out)
    assert.matches("ok   0%.2 sees state", r.out)
    assert.matches("FAIL 0%.3 fails", r.out)
    assert.matches("expected exit code 0, got 2", r.out)
    assert.matches("skip 0%.4 skips", r.out)
    assert.matches("2 passed, 1 failed, 1 skipped\n$", r.out)
    local xml = assert(sys.read_file(dir .. "/junit.xml"))
    assert.matches('tests="4" failures="1" skipped="1"', xml)
  end)

  it("speaks TAP and JSON", function()
    local dir = cli.tempdir()
    local path = script(dir, "fixture.lua", SCENARIO)
    local tap = cli.run { "scenario", "run", "--tap", path }
    assert.matches("^TAP version 13\nok 1 %- 0%.1 passes\n", tap.out)
    assert.matches("not ok 3 %- 0%.3 fails", tap.out)
    assert.matches("ok 4 %- 0%.4 skips # SKIP not today", tap.out)
    assert.matches("\n1%.%.4\n", tap.out)
    local j = cli.run({ "-o", "json", "scenario", "run", path }).json()
    assert.equal(2, j.passed)
    assert.equal(1, j.failed)
    assert.equal("fail", j.files[1].results[3].status)
  end)

  it("types 'aitbc devnet up' before a file's steps and 'devnet down' after; steps get no variable a user would not set",
    function()
    local dir = cli.tempdir()
    local path = script(dir, "devnet.lua", [==[
      local s = require("aitbc.scenario").new("Devnet")
      s:step("0.1", "talks to the devnet as its user", function(t)
        local env = t:run("env").stdout
        t:expect(not env:find("AITBC_") and not env:find("OLLAMA_HOST"), "no AITBC_* or OLLAMA_HOST:\n" .. env)
        local r = t:run("aitbc -o json api /health")
        t:expect_exit(r, 0)
        t:expect(t:json(r).status == "ok", "healthy")
        r = t:run([[aitbc client submit --type inference --model "llama3" --data '{"prompt":"Hello AITBC"}']])
        t:expect_exit(r, 0)
        t:expect_exit(t:run("aitbc ollama models"), 0)
        local key = t:api_key("client")
        t:expect(key:find("^aitbc_"), "a key made with the configured admin key")
        t:log(t:run("aitbc config get url").stdout)
      end)
      return s
    ]==])
    local r = cli.run({ "-o", "json", "scenario", "run", path },
      { env = { OLLAMA_HOST = "127.0.0.1:1", AITBC_CLIENT_KEY = "aitbc_client_not_a_real_key_0000" }, timeout = 120 })
    assert.equal(0, r.code, r.out .. r.err)
    local step = r.json().files[1].results[1]
    assert.equal("pass", step.status, step.message)
    local url = step.logs[1]:match("^(http://[%d%.:]+)")
    assert.is_string(url)
    local res, err = require("aitbc.http").request { url = url .. "/health", timeout = 2 }
    assert.is_nil(res)
    assert.equal("connect", err.code)
  end)

  it("refuses a file that is not a scenario", function()
    local dir = cli.tempdir()
    local r = cli.run { "scenario", "run", script(dir, "x.lua", "return 42") }
    assert.equal(2, r.code)
    assert.matches("did not return a scenario", r.err)
    assert.equal(3, cli.run({ "scenario", "run", dir .. "/none.lua" }).code)
  end)
end)

describe("example scripts", function()
  local srv, base
  setup(function() srv, base = cli.echo_server() end)
  teardown(function() srv:stop(1) end)
  after_each(cli.cleanup)

  it("node_health reports a live node and exits 5 for a dead one", function()
    local r = cli.run { "run", "scripts/node_health.lua", base }
    assert.equal(0, r.code, r.err)
    assert.matches('{"status":"ok"}', r.out)
    r = cli.run { "run", "scripts/node_health.lua", "http://127.0.0.1:" .. cli.closed_port() }
    assert.equal(5, r.code)
  end)

  it("parallel_get fetches several URLs at once", function()
    local r = cli.run { "run", "scripts/parallel_get.lua", base .. "/health", base .. "/big/100" }
    assert.equal(0, r.code, r.err)
    assert.matches("/health%s+200", r.out)
    assert.matches("100 bytes", r.out)
  end)

  it("config_report prints JSON", function()
    local r = cli.run { "run", "scripts/config_report.lua", "--json" }
    assert.equal("default", require("aitbc.json").decode(r.out).url.source)
  end)
end)

describe("the installed binary", function()
  after_each(cli.cleanup)

  it("runs from anywhere with no source tree beside it", function()
    local dir = cli.tempdir()
    local copy = dir .. "/aitbc"
    local cp = assert(sys.spawn { argv = { "cp", cli.bin, copy } })
    assert.equal(0, cp:wait())
    local p = assert(cli.spawn { argv = { copy, "--output", "json", "config", "show" }, cwd = dir,
      env = { AITBC_HOME = dir, AITBC_LUA_DIR = false }, stdout = "pipe", stderr = "pipe" })
    local code, out, err = p:communicate(nil, 30)
    assert.equal(0, code, err)
    assert.equal(dir .. "/config.json", require("aitbc.json").decode(out).config_file)
  end)
end)
