-- The CLI against careless input and a hostile peer, through the real
-- binary: path parts escaped, --config files checked, file options that
-- say why they cannot be read, amounts of any length, a listen address
-- checked before anything is created, and replies without what a command
-- needs (a clear error naming the route and the field, never a crash).
local cli = require "support.cli"
local crypto = require "aitbc.crypto"
local money = require "aitbc.money"
local nodes = require "support.node"
local sys = require "aitbc.sys"

--- A path nobody may read, even root (mode bits do not stop root).
local function unreadable_path()
  local path = cli.tempdir() .. "/secret"
  assert(sys.write_file(path, "x", 0))
  local f = io.open(path, "rb")
  if not f then return path end
  f:close()
  return "/proc/sys/vm/drop_caches" -- write-only, for root too
end

describe("path parts", function()
  local node, env
  setup(function()
    node = nodes.start { args = { "--log-level", "warn" } }
    env = { AITBC_CLIENT_KEY = node:key("client"), AITBC_MINER_KEY = node:key("miner") }
  end)
  teardown(function()
    node:stop()
    cli.cleanup()
  end)

  it("reach the node as one path segment, dot segments included", function()
    -- before: libcurl collapsed /v1/jobs/. into /v1/jobs (the job list, exit 0)
    -- and /v1/jobs/../cancel into /v1/cancel
    for _, case in ipairs {
      { { "client", "status", "." }, "job %. not found" },
      { { "client", "status", ".." }, "job %.%. not found" },
      { { "client", "result", ".." }, "job %.%. not found" },
      { { "client", "cancel", ".." }, "job %.%. not found" },
      { { "chain", "block", ".." }, "no block %.%. on" },
      { { "marketplace", "gpu", "remove", ".." }, "%.%." },
    } do
      local r = node:cli(case[1], { env = env })
      assert.equal(3, r.code, table.concat(case[1], " ") .. ": " .. r.out .. r.err)
      assert.matches(case[2], r.err)
    end
  end)

  it("refuses a value that would leave its segment, before sending anything", function()
    local r = node:cli({ "client", "status", "x/../../../v1/node?" }, { env = env })
    assert.equal(2, r.code, r.out)
    assert.matches("job id 'x/%.%./%.%./%.%./v1/node%?' may not contain '/'", r.err)
    assert.equal("", r.out) -- not the node's /v1/node answer
    r = node:cli({ "client", "status", "" }, { env = env })
    assert.equal(2, r.code)
    assert.matches("job id may not be empty", r.err)
    r = node:cli({ "client", "cancel", "abc/" }, { env = env }) -- the node strips a trailing '/': job abc
    assert.equal(2, r.code)
  end)

  it("keep query values whole", function()
    local r = node:cli({ "-o", "json", "client", "list", "--model", "x&state=COMPLETED&limit=1" }, { env = env })
    assert.equal(0, r.code, r.err)
    assert.same({}, r.json().items)
  end)
end)

describe("--config", function()
  teardown(cli.cleanup)

  it("naming a missing file is an error (exit 3), also through AITBC_CONFIG", function()
    local missing = cli.tempdir() .. "/nope.json"
    local r = cli.run { "--config", missing, "config", "show" }
    assert.equal(3, r.code, r.out)
    assert.matches("config file not found: " .. missing:gsub("%p", "%%%0"), r.err)
    r = cli.run({ "client", "list" }, { env = { AITBC_CONFIG = missing } })
    assert.equal(3, r.code)
    assert.matches("config file not found", r.err)
    -- commands that store settings create it
    assert.equal(0, cli.run({ "--config", missing, "config", "set", "timeout", "9" }).code)
    assert.equal("9\n", cli.run({ "--config", missing, "config", "get", "timeout" }).out)
  end)

  it("naming a directory is a usage error", function()
    local dir = cli.tempdir()
    local r = cli.run { "--config", dir, "config", "show" }
    assert.equal(2, r.code, r.out)
    assert.matches("config file .* is a directory, not a file", r.err)
  end)

  it("holding anything but a JSON object is refused", function()
    local dir = cli.tempdir()
    for _, text in ipairs { "[1, 2]", '"url"', "42", "true" } do
      local path = dir .. "/c.json"
      assert(sys.write_file(path, text))
      local r = cli.run { "--config", path, "config", "show" }
      assert.equal(1, r.code, text .. ": " .. r.out)
      assert.matches("is not valid", r.err)
      assert.equal(text, sys.read_file(path)) -- left as it was
    end
  end)

  it("that cannot be read says so (exit 4)", function()
    local r = cli.run { "--config", unreadable_path(), "config", "show" }
    assert.equal(4, r.code)
    assert.matches("permission denied", r.err)
  end)
end)

describe("file options", function()
  teardown(cli.cleanup)

  it("say why a file cannot be read: missing (3), a directory (2), no permission (4)", function()
    local dir = cli.tempdir()
    local missing, locked = dir .. "/missing", unreadable_path()
    local env = { AITBC_WALLET_PASSWORD = "long enough password" }
    for _, make in ipairs {
      function(f) return { "client", "submit", "--prompt", "hi", "--file", f }, "--file" end,
      function(f) return { "api", "-d", "@" .. f, "/health" }, "--data file" end,
      function(f) return { "run", f }, "script" end,
      function(f) return { "wallet", "import", f }, "keystore file" end,
      function(f) return { "wallet", "create", "--name", "w", "--password-file", f }, "--password-file" end,
      function(f) return { "wallet", "restore", "--name", "w", "--mnemonic-file", f }, "--mnemonic-file" end,
      function(f) return { "auth", "recover", "--backup-file", f }, "--backup-file" end,
    } do
      for _, case in ipairs { { missing, 3, "not found" }, { dir, 2, "is a directory" },
                              { locked, 4, "permission denied" } } do
        local args, what = make(case[1])
        local r = cli.run(args, { env = env })
        local label = table.concat(args, " ")
        assert.equal(case[2], r.code, label .. ": " .. r.err)
        assert.matches(what:gsub("%p", "%%%0") .. ".*" .. case[3], r.err, 1, false, label)
        assert.not_matches("nil", r.err, 1, false, label)
      end
    end
  end)
end)

describe("amounts", function()
  teardown(cli.cleanup)

  it("parse at any length, refusing beyond the maximum", function()
    assert.equal(money.MAX, money.parse("1000000000"))
    assert.equal(1, money.parse("0.000000001"))
    for _, text in ipairs { "1000000000.000000001", "9999999999", "12345678901", "99999999999999999999999999",
                            "-9999999999", 1e30 } do
      local units, err = money.parse(text)
      assert.is_nil(units, tostring(text))
      assert.equal("more than the maximum, 1000000000 AITBC", err)
    end
  end)

  it("too large get the right message from every command that takes one", function()
    local address = require("aitbc.wallet").address(crypto.random(32))
    for _, case in ipairs {
      { "client", "pay", "0192af3c51d2e4c7a81f09b3c6d2e1f0", "9999999999" },
      { "client", "pay", "0192af3c51d2e4c7a81f09b3c6d2e1f0", "--amount", "12345678901" },
      { "wallet", "send", address, "9999999999" },
      { "wallet", "stake", "9999999999" },
      { "wallet", "unstake", "9999999999" },
      { "wallet", "faucet", "--amount", "9999999999" },
      { "miner", "register", "--gpus", "1x RTX 4090", "--price-per-hour", "9999999999" },
      { "miner", "mine-ollama", "--model", "llama3", "--price-per-hour", "9999999999" },
      { "marketplace", "gpu", "register", "--model", "RTX 4090", "--vram", "24", "--hourly-rate", "9999999999" },
      { "marketplace", "gpu", "update", "gpu_1", "--hourly-rate", "9999999999" },
      { "marketplace", "offers", "list", "--max-price", "9999999999" },
    } do
      local r = cli.run(case, { env = { AITBC_URL = "http://127.0.0.1:" .. cli.closed_port() } })
      local label = table.concat(case, " ")
      assert.equal(2, r.code, label .. ": " .. r.err)
      assert.matches("more than the maximum, 1000000000 AITBC", r.err, 1, true, label)
    end
  end)
end)

describe("serve --listen", function()
  teardown(cli.cleanup)

  it("is checked fully before anything is created (usage error, exit 2)", function()
    for _, listen in ipairs { "999.1.1.1:80", "1.2.3.256:80", "1.2.3:80", "1.2.3.4.5:80", "01.2.3.4:80",
                              "1.2.3.4:65536", "localhost:80" } do
      local dir = cli.tempdir() .. "/node"
      local r = cli.run { "serve", "--listen", listen, "--data-dir", dir }
      assert.equal(2, r.code, listen .. ": " .. r.err)
      assert.matches("--listen must be IPv4:PORT", r.err, 1, true)
      assert.is_nil(sys.stat(dir), listen .. ": created " .. dir)
    end
  end)
end)

describe("replies without what a command needs", function()
  local srv, base, ollama_url
  setup(function()
    srv, base = cli.echo_server { handler = "support.hostile_app" }
    ollama_url = cli.simulated_ollama()
  end)
  teardown(function()
    srv:stop(1)
    cli.cleanup()
  end)

  --- Runs args against the hostile peer in mode; checks exit 1, no crash,
  -- and a message naming the route and each field.
  local function refused(mode, args, route, fields, opts)
    local r = cli.run({ "--url", base .. "/" .. mode, table.unpack(args) }, opts)
    local label = mode .. ": " .. table.concat(args, " ")
    assert.equal(1, r.code, label .. ": " .. r.out .. r.err)
    assert.not_matches("internal error", r.err, 1, true, label)
    assert.matches("unexpected reply from " .. route, r.err, 1, true, label)
    for _, f in ipairs(fields) do assert.matches(f, r.err, 1, true, label) end
    return r
  end

  it("the older coordinator's: miner register, mine-ollama, marketplace gpu register and gpu list", function()
    refused("old", { "miner", "register", "--gpus", "1x RTX 4090", "--models", "llama3" },
      "POST /v1/miners/register", { "'miner_id' is missing" })
    refused("old", { "miner", "mine-ollama", "--model", "llama3", "--ollama-url", ollama_url, "--gpus", "1x RTX 4090" },
      "POST /v1/miners/register", { "'miner_id' is missing" })
    refused("mixed", { "miner", "mine-ollama", "--model", "llama3", "--ollama-url", ollama_url, "--miner-id", "m1" },
      "POST /v1/miners/0192af3c51d2e4c7a81f09b3c6d2e1f0/result", { "'receipt' is missing" })
    -- a job that cannot be run is reported failed, and the miner goes on
    local r = cli.run { "--url", base .. "/badjob", "miner", "mine-ollama", "--model", "llama3", "--ollama-url", ollama_url,
      "--miner-id", "m1" }
    assert.equal(0, r.code, r.err)
    assert.matches("payload cannot be run: payload.prompt is not text; reported to the node", r.out, 1, true)
    assert.matches("0 job(s) completed, 1 failed", r.out, 1, true)
    refused("old", { "marketplace", "gpu", "register", "--model", "RTX 4090", "--vram", "24", "--hourly-rate", "0.5" },
      "POST /v1/marketplace/gpu/register", { "'listing_id' is missing", "'count' is missing" })
    refused("old", { "marketplace", "gpu", "list" }, "GET /v1/marketplace/gpu/mine",
      { "the reply is a list, expected an object with items" })
    refused("old", { "marketplace", "offers", "list" }, "GET /v1/marketplace/offers", { "the reply is a list" })
    refused("old", { "client", "list" }, "GET /v1/jobs", { "the reply is a list" })
  end)

  it("right names with values of the wrong type, from every group", function()
    local home = cli.tempdir()
    local pw = { AITBC_WALLET_PASSWORD = "long enough password" }
    assert.equal(0, cli.run({ "wallet", "create", "--name", "w" }, { home = home, env = pw }).code)
    local address = cli.run({ "wallet", "address" }, { home = home }).out:gsub("%s+$", "")
    local as_wallet = { home = home, env = pw }
    for _, case in ipairs {
      { { "client", "submit", "--model", "llama3", "--prompt", "hi" }, "POST /v1/jobs", { "'job_id' is an object", "'state' is a number" } },
      { { "client", "status", "j1" }, "GET /v1/jobs/j1", { "'job_id' is an object" } },
      { { "client", "result", "j1" }, "GET /v1/jobs/j1/result", { "'receipt' is a string" } },
      { { "client", "cancel", "j1" }, "POST /v1/jobs/j1/cancel", { "'job_id' is an object" } },
      { { "client", "list" }, "GET /v1/jobs", { "'items' is a string", "'total' is a string" } },
      { { "client", "pay", "j1", "1" }, "GET /v1/chain/ait-devnet/accounts/" .. address, { "'nonce' is a string" },
        as_wallet },
      { { "miner", "status", "--miner-id", "m1" }, "GET /v1/miners/me", { "'miner_id' is a number" } },
      { { "miner", "poll", "--miner-id", "m1" }, "POST /v1/miners/poll", { "'job_id' is an object" } },
      { { "miner", "heartbeat", "--miner-id", "m1" }, "POST /v1/miners/heartbeat", { "'miner_id' is a number" } },
      { { "wallet", "balance" }, "GET /v1/chain/ait-devnet/accounts/" .. address, { "'address' is a number" },
        as_wallet },
      { { "wallet", "history" }, "GET /v1/chain/ait-devnet/accounts/" .. address .. "/transactions",
        { "'items' is a string" }, as_wallet },
      { { "wallet", "faucet" }, "POST /v1/chain/ait-devnet/faucet", { "'hash' is a number" }, as_wallet },
      { { "wallet", "send", address, "1" }, "GET /v1/chain/ait-devnet/accounts/" .. address, { "'nonce'" }, as_wallet },
      { { "chain", "head" }, "GET /v1/chain/ait-devnet/head", { "'height' is a string", "'hash' is a number" } },
      { { "chain", "list" }, "GET /v1/chains", { "'items' is a string" } },
      { { "chain", "account", address }, "GET /v1/chain/ait-devnet/accounts/" .. address, { "'nonce' is a string" } },
      { { "marketplace", "gpu", "list" }, "GET /v1/marketplace/gpu/mine", { "'items' is a string" } },
      { { "marketplace", "gpu", "update", "gpu_1", "--count", "2" }, "PATCH /v1/marketplace/gpu/gpu_1",
        { "'listing_id' is a boolean", "'count' is a string" } },
      { { "marketplace", "pricing", "--model", "RTX 4090" }, "GET /v1/marketplace/pricing", { "'listings' is a number" } },
      { { "auth", "audit" }, "GET /v1/admin/audit", { "'items' is a string" },
        { env = { AITBC_ADMIN_KEY = "admin_key_for_the_test" } } },
      { { "auth", "rotate", "--key-type", "admin", "--generate-new" }, "POST /v1/admin/keys", { "'key' is a number" },
        { env = { AITBC_ADMIN_KEY = "admin_key_for_the_test" } } },
    } do
      refused("types", case[1], case[2], case[3], case[4])
    end
  end)

  it("an HTML page where JSON belongs, and an error whose fields are not text", function()
    refused("text", { "client", "status", "j1" }, "GET /v1/jobs/j1", { "the reply is a string, expected an object" })
    refused("text", { "miner", "register", "--gpus", "1x RTX 4090", "--models", "llama3" }, "POST /v1/miners/register",
      { "the reply is a string" })
    local r = cli.run { "--url", base .. "/errors", "client", "status", "j1" }
    assert.equal(1, r.code)
    assert.matches("error: HTTP 400", r.err, 1, true)
    assert.not_matches("internal error", r.err, 1, true)
  end)
end)
