-- The real binary, as a user runs it.
local cli = require "support.cli"
local json = require "aitbc.json"
local sys = require "aitbc.sys"

describe("aitbc CLI", function()
  after_each(cli.cleanup)

  it("prints help with no arguments, for --help, and for every command", function()
    local r = cli.run {}
    assert.equal(0, r.code)
    assert.matches("Usage: aitbc", r.out)
    assert.matches("Exit codes:", r.out)
    assert.equal(r.out, cli.run({ "--help" }).out)
    for _, name in ipairs { "config", "run", "scenario", "test", "completion", "api", "version" } do
      local h = cli.run { name, "--help" }
      assert.equal(0, h.code)
      assert.matches("Usage: aitbc " .. name, h.out)
      assert.matches(name, r.out)
    end
    local sub = cli.run { "config", "set", "--help" }
    assert.matches("Usage: aitbc config set KEY VALUE", sub.out)
    assert.matches("Examples:", sub.out)
  end)

  it("lists every command in its help from the build's index, which matches the declarations", function()
    local registry = require "aitbc.cli.registry"
    local index = require "aitbc.cli.command_index"
    local declared = {}
    for _, d in ipairs(registry.all()) do
      declared[#declared + 1] = { name = d.name, summary = d.summary or "", category = d.category }
    end
    assert.same(declared, index)
    local help = cli.run({ "--help" }).out
    for _, d in ipairs(declared) do assert.matches("\n  " .. d.name:gsub("%-", "%%-") .. "%s+", help) end
  end)

  it("prints its version", function()
    assert.matches("^aitbc %d+%.%d+%.%d+\n$", cli.run({ "--version" }).out)
    local v = cli.run({ "--output", "json", "version" }).json()
    assert.matches("^Lua 5%.4", v.lua)
    assert.is_string(v.libcurl)
  end)

  it("exits 2 with a suggestion for an unknown command, subcommand or option", function()
    local r = cli.run { "confg" }
    assert.equal(2, r.code)
    assert.equal("", r.out)
    assert.matches("unknown command 'confg'", r.err)
    assert.matches("did you mean 'config'", r.err)
    r = cli.run { "config", "shwo" }
    assert.equal(2, r.code)
    assert.matches("did you mean 'show'", r.err)
    r = cli.run { "config", "show", "--revael" }
    assert.equal(2, r.code)
    assert.matches("did you mean '%-%-reveal'", r.err)
    r = cli.run { "config", "get" }
    assert.equal(2, r.code)
    assert.matches("missing argument KEY", r.err)
    r = cli.run { "config", "get", "url", "extra" }
    assert.equal(2, r.code)
    assert.matches("unexpected argument 'extra'", r.err)
    r = cli.run { "--output", "xml", "config", "show" }
    assert.equal(2, r.code)
    assert.matches("must be one of table, json, yaml", r.err)
  end)

  it("prints exactly one JSON document on stdout in json mode, errors included", function()
    for _, args in ipairs {
      { "--output", "json", "config", "show" },
      { "config", "show", "--output", "json" },
      { "-o", "json", "bogus" },
      { "--output=json", "config", "show", "--bogus" },
      { "--output", "json", "run", "/no/such/script.lua" },
    } do
      local r = cli.run(args)
      local doc, err = json.decode(r.out)
      assert.is_table(doc, "not JSON for " .. table.concat(args, " ") .. ": " .. tostring(err) .. "\n" .. r.out)
      if r.code ~= 0 then
        assert.is_string(doc.error.code)
        assert.is_string(doc.error.message)
      end
    end
    local r = cli.run { "-o", "json", "bogus" }
    assert.equal(2, r.code)
    assert.equal("unknown_command", r.json().error.code)
    assert.equal("", r.err)
  end)

  it("colours only when asked, and never with NO_COLOR or --no-color", function()
    local home = cli.tempdir()
    local function coloured(args, env)
      local r = cli.run(args, { home = home, env = env })
      return (r.out .. r.err):find("\27[", 1, true) ~= nil
    end
    -- a success on stdout, an error on stderr
    for _, args in ipairs { { "config", "set", "url", "http://127.0.0.1:9" }, { "config", "get", "nope" } } do
      local what = table.concat(args, " ")
      assert.is_false(coloured(args), what) -- not a terminal
      assert.is_true(coloured(args, { AITBC_COLOR = "always" }), what)
      assert.is_false(coloured(args, { AITBC_COLOR = "always", NO_COLOR = "1" }), what)
      assert.is_true(coloured(args, { AITBC_COLOR = "always", NO_COLOR = "" }), what) -- empty: not set (no-color.org)
      assert.is_false(coloured({ "--no-color", table.unpack(args) }, { AITBC_COLOR = "always" }), what)
      assert.is_false(coloured(args, { AITBC_COLOR = "never" }), what)
      assert.is_false(coloured({ "-o", "json", table.unpack(args) }, { AITBC_COLOR = "always" }), what)
    end
  end)

  it("never prompts in JSON mode: what it would ask for is a JSON error naming how to give it", function()
    local home = cli.tempdir()
    -- setsid: no controlling terminal, so a prompt could not even be attempted on ours
    local function json_run(args, env)
      local full = { "-o", "json" }
      for _, a in ipairs(args) do full[#full + 1] = a end
      local r = cli.run(full, { home = home, env = env, setsid = true, stdin = "y\nsecret password\nsecret password\n" })
      local doc = json.decode(r.out)
      assert.is_table(doc, table.concat(args, " ") .. ": " .. r.out)
      assert.equal("", r.err)
      return r.code, doc.error
    end
    -- a confirmation: refused, not asked, even with "y" waiting on stdin
    local code, err = json_run { "auth", "revoke", "--key-id", "key_0123456789abcdef" }
    assert.equal(2, code)
    assert.matches("confirmation needed", err.message)
    assert.matches("%-%-yes", err.hint)
    -- a password: refused, not read from stdin
    code, err = json_run { "wallet", "create", "--name", "w" }
    assert.equal(2, code)
    assert.matches("password is needed", err.message)
    assert.matches("AITBC_WALLET_PASSWORD", err.hint)
    assert.matches("%-%-password%-file", err.hint)
    assert.equal(0, cli.run({ "auth", "import-env" }, { home = home, env = { AITBC_URL = "http://127.0.0.1:" .. cli.closed_port(),
      AITBC_CLIENT_KEY = "aitbc_client_0123456789abcdef01" } }).code)
    code, err = json_run { "auth", "backup", "--output", home .. "/b.enc" }
    assert.equal(2, code)
    assert.matches("AITBC_BACKUP_PASSWORD", err.hint)
    assert.is_nil(sys.stat(home .. "/wallets/w.json"))
    assert.is_nil(sys.stat(home .. "/b.enc"))
  end)

  it("never prompts in JSON mode, even on a terminal", function()
    local home = cli.tempdir()
    local env = { AITBC_HOME = home, AITBC_WALLET_PASSWORD = false }
    local code, shown = cli.on_terminal({ "-o", "json", "wallet", "create", "--name", "w" }, env)
    assert.equal(2, code, shown)
    assert.not_matches("Wallet password:", shown)
    assert.matches('"code": ?"usage"', shown)
    assert.matches("AITBC_WALLET_PASSWORD", shown)
    assert.is_nil(sys.stat(home .. "/wallets/w.json"))
  end)

  it("renders yaml", function()
    local r = cli.run { "--output", "yaml", "config", "get", "url" }
    assert.equal(0, r.code)
    assert.matches("key: url\n", r.out)
    assert.matches("source: default\n", r.out)
  end)

  describe("config", function()
    it("sets, gets and unsets values in a 0600 file under AITBC_HOME", function()
      local home = cli.tempdir()
      local r = cli.run({ "config", "set", "url", "http://127.0.0.1:9999/" }, { home = home })
      assert.equal(0, r.code, r.err)
      assert.equal(tonumber("600", 8), sys.stat(home .. "/config.json").mode)
      assert.equal("http://127.0.0.1:9999\n", cli.run({ "config", "get", "url" }, { home = home }).out)
      assert.equal(home .. "/config.json\n", cli.run({ "config", "path" }, { home = home }).out)
      assert.equal(0, cli.run({ "config", "unset", "url" }, { home = home }).code)
      assert.equal("http://127.0.0.1:8000\n", cli.run({ "config", "get", "url" }, { home = home }).out)
    end)

    it("applies flag > environment > file > default", function()
      local home = cli.tempdir()
      cli.run({ "config", "set", "timeout", "12" }, { home = home })
      local function get(extra, env)
        local args = { "-o", "json", "config", "get", "timeout" }
        for _, a in ipairs(extra) do args[#args + 1] = a end
        return cli.run(args, { home = home, env = env }).json()
      end
      assert.same({ key = "timeout", value = 12, source = "file" }, get({}))
      assert.same({ key = "timeout", value = 7, source = "env AITBC_TIMEOUT" }, get({}, { AITBC_TIMEOUT = "7" }))
      assert.same({ key = "timeout", value = 3, source = "flag --timeout" }, get({ "--timeout", "3" }, { AITBC_TIMEOUT = "7" }))
      cli.run({ "config", "unset", "timeout" }, { home = home })
      assert.same({ key = "timeout", value = 30, source = "default" }, get({}))
    end)

    it("masks secrets unless asked", function()
      local home = cli.tempdir()
      cli.run({ "config", "set", "api_key", "client_dev_key_1_valid" }, { home = home })
      local shown = cli.run({ "config", "show" }, { home = home }).out
      assert.not_matches("client_dev_key_1_valid", shown)
      assert.matches("clie…alid", shown)
      assert.matches("client_dev_key_1_valid", cli.run({ "config", "get", "api_key", "--reveal" }, { home = home }).out)
    end)

    it("refuses unknown keys and invalid values, naming the fix", function()
      local r = cli.run { "config", "set", "urll", "x" }
      assert.equal(2, r.code)
      assert.matches("did you mean 'url'", r.err)
      r = cli.run { "config", "set", "url", "ftp://x" }
      assert.equal(2, r.code)
      assert.matches("http:// or https://", r.err)
      r = cli.run({ "config", "show" }, { env = { AITBC_TIMEOUT = "soon" } })
      assert.equal(2, r.code)
      assert.matches("timeout %(from env AITBC_TIMEOUT%)", r.err)
    end)

    it("reports a corrupt config file without a traceback and loses nothing", function()
      local home = cli.tempdir()
      assert(sys.write_file(home .. "/config.json", "{not json"))
      local r = cli.run({ "config", "show" }, { home = home })
      assert.equal(1, r.code)
      assert.matches("is not valid", r.err)
      assert.not_matches("traceback", r.err)
      assert.equal("{not json", sys.read_file(home .. "/config.json"))
    end)

    it("uses --config for another file", function()
      local dir = cli.tempdir()
      local r = cli.run { "--config", dir .. "/custom.json", "config", "set", "output", "json" }
      assert.equal(0, r.code, r.err)
      assert.matches('"output": "json"', sys.read_file(dir .. "/custom.json"))
    end)
  end)

  describe("api and the network", function()
    local srv, base
    setup(function() srv, base = cli.echo_server() end)
    teardown(function() srv:stop(1) end)

    it("prints the node's JSON answer", function()
      local r = cli.run { "--url", base, "api", "/health" }
      assert.equal(0, r.code, r.err)
      assert.matches('"status": "ok"', r.out)
      local echo = cli.run({ "--url", base, "--api-key", "abcdefghijklmnop", "-o", "json", "api", "POST", "/echo",
        "-d", '{"x":1}', "-q", "a=b" }).json()
      assert.equal("abcdefghijklmnop", echo.headers["x-api-key"])
      assert.same({ a = "b" }, echo.query)
    end)

    it("maps HTTP errors to exit codes", function()
      local expect = { [401] = 4, [403] = 4, [404] = 3, [400] = 1, [500] = 1 }
      for status, code in pairs(expect) do
        local r = cli.run { "--url", base, "api", "/status/" .. status }
        assert.equal(code, r.code, "status " .. status .. ": " .. r.err)
        assert.matches("status " .. status .. " as asked", r.err)
      end
    end)

    it("exits 5 with a clear message when the node is unreachable", function()
      local port = cli.closed_port()
      local r = cli.run { "--url", "http://127.0.0.1:" .. port, "api", "/health" }
      assert.equal(5, r.code)
      assert.matches("cannot reach http://127.0.0.1:" .. port, r.err)
      assert.matches("is the node running", r.err)
      local j = cli.run { "--url", "http://127.0.0.1:" .. port, "-o", "json", "api", "/health" }
      assert.equal(5, j.code)
      assert.equal("connect", j.json().error.code)
    end)

    it("exits 5 on a timeout", function()
      local r = cli.run { "--url", base, "--timeout", "0.3", "api", "/slow/3000" }
      assert.equal(5, r.code)
      assert.matches("no answer in time", r.err)
    end)
  end)

  describe("completion", function()
    it("prints scripts for bash, zsh and fish, and completes from the declarations", function()
      assert.matches("complete %-o default %-F _aitbc aitbc", cli.run({ "completion", "bash" }).out)
      assert.matches("compdef _aitbc aitbc", cli.run({ "completion", "zsh" }).out)
      assert.matches("complete %-c aitbc", cli.run({ "completion", "fish" }).out)
      assert.equal(2, cli.run({ "completion", "tcsh" }).code)
      assert.matches("\nset\n", cli.run({ "__complete", "config" }).out)
      assert.matches("%-%-reveal", cli.run({ "__complete", "config", "show" }).out)
      assert.equal("table\njson\nyaml\n", cli.run({ "__complete", "config", "--output" }).out)
      assert.not_matches("__complete", cli.run({ "__complete" }).out)
    end)
  end)

  it("generates the command reference from the declarations", function()
    local r = cli.run { "reference" }
    assert.equal(0, r.code)
    assert.matches("## aitbc config set", r.out)
    assert.matches("## aitbc scenario run", r.out)
  end)
end)
