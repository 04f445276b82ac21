-- aitbc auth against a real node: the edge cases behind spec §15.
local cli = require "support.cli"
local json = require "aitbc.json"
local nodes = require "support.node"
local sys = require "aitbc.sys"

describe("aitbc auth", function()
  local node
  setup(function() node = nodes.start { args = { "--log-level", "warn" } } end)
  teardown(function() node:stop() cli.cleanup() end)

  local function run(home, args, env)
    env = env or {}
    env.HOME = home
    return node:cli(args, { home = home .. "/.aitbc", env = env })
  end

  --- run, for a step that must succeed.
  local function ok(home, args, env)
    local r = run(home, args, env)
    assert.equal(0, r.code, table.concat(args, " ") .. ": " .. r.err)
    return r
  end

  it("says which variables to set when none is", function()
    local r = run(cli.tempdir(), { "auth", "import-env" })
    assert.equal(1, r.code)
    assert.matches("no API key to import", r.err)
    assert.matches("AITBC_ADMIN_KEY", r.err)
    r = run(cli.tempdir(), { "auth", "import-env", "--key-type", "miner" })
    assert.matches("AITBC_MINER_KEY is not set", r.err)
  end)

  it("explains every kind of malformed key and imports none of them", function()
    local home = cli.tempdir()
    for value, reason in pairs {
      ["short"] = "too short", ["$AITBC_KEY_NOT_EXPANDED"] = "unexpanded shell variable",
      ["has spaces in the middle of it"] = "only letters, digits", [" aitbc_client_padded_key_1234 "] = "whitespace",
      ["your_api_key_here"] = "placeholder",
    } do
      local r = run(home, { "auth", "import-env", "--key-type", "admin" }, { AITBC_ADMIN_KEY = value })
      assert.equal(1, r.code, value)
      assert.matches("AITBC_ADMIN_KEY [^\n]*" .. reason:gsub("%p", "%%%0"), r.err)
    end
    assert.is_nil(sys.stat(home .. "/.aitbc/config.json"))
  end)

  it("never prints a key unmasked unless asked", function()
    local home = cli.tempdir()
    local key = node:key("client")
    local all = {}
    for _, args in ipairs {
      { "auth", "import-env" }, { "auth", "list" }, { "auth", "validate" }, { "auth", "test", "--permissions" },
      { "-o", "json", "auth", "list" }, { "-o", "json", "auth", "validate" }, { "--debug", "auth", "list" },
    } do
      local r = run(home, args, { AITBC_API_KEY = key })
      assert.equal(0, r.code, table.concat(args, " ") .. ": " .. r.err)
      assert.matches("key_%x+", r.out) -- the key is there, by its id
      all[#all + 1] = r.out .. r.err
    end
    assert.not_matches(key, table.concat(all), 1, true)
    local r = run(home, { "config", "show" })
    assert.equal(0, r.code, r.err)
    assert.not_matches(key, r.out, 1, true)
  end)

  it("uses the role's key for each request: flag > role variable > stored > AITBC_API_KEY", function()
    local home = cli.tempdir()
    local stored_admin, stored_id = node:key("admin")
    local env_admin, env_id = node:key("admin")
    local flag_client, flag_id = node:key("client")
    ok(home, { "auth", "import-env", "--key-type", "admin" }, { AITBC_ADMIN_KEY = stored_admin })
    local function who(args, env)
      local full = { "-o", "json" }
      for _, a in ipairs(args) do full[#full + 1] = a end
      return json.decode(run(home, full, env).out).key_id
    end
    assert.equal(stored_id, who { "api", "--role", "admin", "/v1/auth/whoami" })
    assert.equal(env_id, who({ "api", "--role", "admin", "/v1/auth/whoami" }, { AITBC_ADMIN_KEY = env_admin }))
    assert.equal(flag_id, who({ "--api-key", flag_client, "api", "--role", "admin", "/v1/auth/whoami" }, { AITBC_ADMIN_KEY = env_admin }))
  end)

  it("lets AITBC_API_KEY (the client's variable) override the stored client key only, not the miner or admin keys",
    function()
    local home = cli.tempdir()
    local miner, miner_id = node:key("miner")
    local admin, admin_id = node:key("admin")
    local stored_client = node:key("client")
    local env_client, env_client_id = node:key("client")
    assert.equal(0, run(home, { "auth", "import-env" }, { AITBC_MINER_KEY = miner, AITBC_ADMIN_KEY = admin,
      AITBC_CLIENT_KEY = stored_client }).code)
    local env = { AITBC_API_KEY = env_client }
    local function who(role)
      local r = run(home, { "-o", "json", "api", "--role", role, "/v1/auth/whoami" }, env)
      assert.equal(0, r.code, r.out .. r.err)
      return json.decode(r.out).key_id
    end
    assert.equal(env_client_id, who("client"))
    assert.equal(miner_id, who("miner"))
    assert.equal(admin_id, who("admin"))
    -- a role with no key configured falls back on AITBC_API_KEY
    local bare = cli.tempdir()
    assert.equal(env_client_id, json.decode(run(bare, { "-o", "json", "api", "--role", "miner", "/v1/auth/whoami" },
      env).out).key_id)
  end)

  it("sends the key of the role the route needs from 'aitbc api', without --role", function()
    local home = cli.tempdir()
    local client, admin = node:key("client"), node:key("admin")
    assert.equal(0, run(home, { "auth", "import-env" }, { AITBC_CLIENT_KEY = client, AITBC_ADMIN_KEY = admin }).code)
    local jobs = run(home, { "-o", "json", "api", "/v1/jobs" })
    assert.equal(0, jobs.code, jobs.err)
    assert.is_number(json.decode(jobs.out).total)
    local stats = run(home, { "-o", "json", "api", "/v1/admin/stats" })
    assert.equal(0, stats.code, stats.err)
    local who = run(home, { "-o", "json", "api", "/v1/auth/whoami" }) -- any key may ask
    assert.equal(0, who.code, who.err)
    assert.equal("client", json.decode(who.out).role)
  end)

  it("names the key sent, where it came from and the role the route needs when the node refuses it", function()
    local home = cli.tempdir()
    local client, client_id = node:key("client")
    local wrong = run(home, { "api", "/v1/admin/stats" }, { AITBC_API_KEY = client })
    assert.equal(4, wrong.code)
    assert.matches(client_id .. " %(aitbc_…" .. client:sub(-4) .. ", from env AITBC_API_KEY%) is a client key", wrong.err)
    assert.matches("GET /v1/admin/stats needs an admin key", wrong.err)
    assert.matches("AITBC_ADMIN_KEY", wrong.err)
    local revoked, revoked_id = node:key("client")
    node:request("DELETE", "/v1/admin/keys/" .. revoked_id, { key = node.admin_key })
    local r = run(home, { "--api-key", revoked, "client", "list" })
    assert.equal(4, r.code)
    assert.matches("the node refused API key " .. revoked_id .. " %(aitbc_…" .. revoked:sub(-4) .. ", from flag %-%-api%-key%)"
      .. ": this API key was revoked", r.err)
    assert.matches("AITBC_CLIENT_KEY", r.err)
    local none = run(cli.tempdir(), { "client", "list" })
    assert.equal(4, none.code)
    assert.matches("GET /v1/jobs needs a client API key and none was sent", none.err)
    local j = json.decode(run(home, { "-o", "json", "--api-key", revoked, "client", "list" }).out)
    assert.equal("api_key_revoked", j.error.code)
  end)

  it("keeps a working key when import-env brings one the node refuses or one of another role", function()
    local home = cli.tempdir()
    local admin, admin_id = node:key("admin")
    assert.equal(0, run(home, { "auth", "import-env", "--key-type", "admin" }, { AITBC_ADMIN_KEY = admin }).code)
    local function stored(kind)
      local cfg = json.decode(sys.read_file(home .. "/.aitbc/config.json"))
      return cfg.keys.default[kind] and cfg.keys.default[kind].key
    end
    -- well formed, unknown to the node
    local unknown = "aitbc_admin_" .. string.rep("0", 40)
    local r = run(home, { "auth", "import-env", "--key-type", "admin" }, { AITBC_ADMIN_KEY = unknown })
    assert.equal(4, r.code)
    assert.matches("not imported: AITBC_ADMIN_KEY %(key_%x+%): the node at http://[%d.:]+ does not know this key", r.err)
    assert.matches("the stored admin key stays " .. admin_id, r.err)
    assert.not_matches("imported admin", r.out)
    assert.equal(admin, stored("admin"))
    assert.equal(0, run(home, { "auth", "validate" }).code)
    -- revoked on the node
    local old, old_id = node:key("admin")
    node:request("DELETE", "/v1/admin/keys/" .. old_id, { key = node.admin_key })
    r = run(home, { "auth", "import-env", "--key-type", "admin" }, { AITBC_ADMIN_KEY = old })
    assert.equal(4, r.code)
    assert.matches("says this key was revoked", r.err)
    assert.equal(admin, stored("admin"))
    -- a miner key where a client key belongs
    local miner = node:key("miner")
    r = run(home, { "auth", "import-env", "--key-type", "client" }, { AITBC_API_KEY = miner })
    assert.equal(4, r.code)
    assert.matches("AITBC_API_KEY holds a miner key, not a client key", r.err)
    assert.matches("AITBC_MINER_KEY", r.err)
    assert.is_nil(stored("client"))
    -- a bad specific variable does not hide a good generic one; the failure still shows
    local client, client_id = node:key("client")
    r = run(home, { "auth", "import-env", "--key-type", "client" }, { AITBC_CLIENT_KEY = unknown, AITBC_API_KEY = client })
    assert.equal(4, r.code)
    assert.matches("imported client key " .. client_id .. " .* from AITBC_API_KEY", r.out)
    assert.matches("not imported: AITBC_CLIENT_KEY", r.err)
    assert.equal(client, stored("client"))
  end)

  it("asks before revoking, and refuses without a terminal unless confirmed", function()
    local home = cli.tempdir()
    local _, id = node:key("client")
    ok(home, { "auth", "import-env", "--key-type", "admin" }, { AITBC_ADMIN_KEY = node.admin_key })
    local r = run(home, { "auth", "revoke", "--key-id", id })
    assert.equal(2, r.code)
    assert.matches("add %-%-yes", r.err)
    r = run(home, { "auth", "revoke", "--key-id", "not-an-id", "--confirm" })
    assert.equal(2, r.code)
    r = run(home, { "auth", "revoke", "--key-id", "key_0000000000000000", "--confirm" })
    assert.equal(3, r.code)
    r = run(home, { "--yes", "auth", "revoke", "--key-id", id })
    assert.equal(0, r.code, r.err)
  end)

  it("exports with mode 0600 and a checksum that verifies", function()
    local home = cli.tempdir()
    ok(home, { "auth", "import-env" }, { AITBC_CLIENT_KEY = node:key("client"), AITBC_MINER_KEY = node:key("miner") })
    local r = run(home, { "-o", "json", "auth", "export", "--format", "dotenv", "--output", home .. "/k.env" })
    assert.equal(0, r.code, r.err)
    local d = json.decode(r.out)
    assert.equal(tonumber("600", 8), sys.stat(home .. "/k.env").mode)
    local text = sys.read_file(home .. "/k.env")
    assert.equal(d.sha256, require("aitbc.crypto").hex(require("aitbc.crypto").sha256(text)))
    assert.matches("\nAITBC_MINER_KEY=aitbc_miner_%x+\n", text)
    assert.not_matches("export ", text)
    local check = assert(sys.spawn { argv = { "sha256sum", "-c", "k.env.sha256" }, cwd = home, stdout = "null" })
    assert.equal(0, check:wait())
  end)

  it("refuses a wrong backup password or a tampered backup without writing anything", function()
    local home = cli.tempdir()
    local key = node:key("client")
    ok(home, { "auth", "import-env" }, { AITBC_CLIENT_KEY = key })
    local pw = { AITBC_BACKUP_PASSWORD = "a long enough password" }
    assert.equal(0, run(home, { "auth", "backup", "--output", home .. "/b.enc" }, pw).code)
    assert.equal(tonumber("600", 8), sys.stat(home .. "/b.enc").mode)
    assert.not_matches(key, sys.read_file(home .. "/b.enc"), 1, true)
    local before = sys.read_file(home .. "/.aitbc/config.json")
    local r = run(home, { "auth", "recover", "--backup-file", home .. "/b.enc" }, { AITBC_BACKUP_PASSWORD = "wrong one!" })
    assert.equal(4, r.code)
    assert.matches("wrong password", r.err)
    local doc = json.decode(sys.read_file(home .. "/b.enc"))
    local ct = require("aitbc.crypto").unbase64(doc.ciphertext)
    doc.ciphertext = require("aitbc.crypto").base64(ct:sub(1, 10) .. string.char(ct:byte(11) ~ 1) .. ct:sub(12))
    assert(sys.write_file(home .. "/tampered.enc", json.encode(doc)))
    r = run(home, { "auth", "recover", "--backup-file", home .. "/tampered.enc" }, pw)
    assert.equal(4, r.code)
    assert.equal(before, sys.read_file(home .. "/.aitbc/config.json"))
    assert.equal(2, run(home, { "auth", "backup", "--output", home .. "/c.enc" }, { AITBC_BACKUP_PASSWORD = "short" }).code)
  end)

  it("switches environments with auth use: each its own node URL and keys", function()
    local other = nodes.start { args = { "--log-level", "warn" } }
    local home = cli.tempdir()
    -- no AITBC_URL here: the URL comes from the config file, per environment
    local function here(args, env)
      env = env or {}
      env.HOME = home
      return cli.run(args, { home = home .. "/.aitbc", env = env })
    end
    local key_a, id_a = node:key("client")
    local key_b, id_b = other:key("client")
    assert.equal(0, here({ "config", "set", "url", node.url }).code)
    assert.equal(0, here({ "auth", "import-env", "--key-type", "client" }, { AITBC_CLIENT_KEY = key_a }).code)
    local r = here { "auth", "use", "production", "--url", other.url }
    assert.equal(0, r.code, r.err)
    assert.matches("active environment: production", r.out)
    assert.matches("no keys stored for production yet", r.err)
    r = here({ "auth", "import-env", "--key-type", "client" }, { AITBC_CLIENT_KEY = key_b })
    assert.equal(0, r.code, r.err)
    assert.matches("accepted by the node as a client key", r.out) -- checked against production's node
    local function whoami()
      local w = here { "-o", "json", "api", "--role", "client", "/v1/auth/whoami" }
      assert.equal(0, w.code, w.err)
      return w.json().key_id
    end
    assert.equal(id_b, whoami()) -- production's key, at production's URL (node A does not know it)
    r = here { "auth", "use", "default" }
    assert.equal(0, r.code, r.err)
    assert.matches("keys stored there: client", r.out)
    assert.equal(id_a, whoami())
    local cfg = json.decode(sys.read_file(home .. "/.aitbc/config.json"))
    assert.same({ "default", other.url, node.url }, { cfg.environment, cfg.environments.production.url, cfg.url })
    assert.equal(2, here({ "auth", "use", "no spaces allowed" }).code)
    assert.equal(2, here({ "auth", "use", "staging", "--url", "not a url" }).code)
  end)

  it("finds a burst of refused requests and the use of a revoked key", function()
    local home = cli.tempdir()
    local key, id = node:key("client")
    for _ = 1, 12 do node:request("GET", "/v1/jobs", { key = "aitbc_client_guessing_0000000000" }) end
    node:request("DELETE", "/v1/admin/keys/" .. id, { key = node.admin_key })
    node:request("GET", "/v1/jobs", { key = key })
    ok(home, { "auth", "import-env", "--key-type", "admin" }, { AITBC_ADMIN_KEY = node.admin_key })
    local r = run(home, { "-o", "json", "auth", "audit", "--days", "1" })
    assert.equal(0, r.code, r.err)
    local kinds = {} -- kind -> its messages (other tests on this node revoke keys too)
    for _, a in ipairs(json.decode(r.out).alerts) do kinds[a.kind] = (kinds[a.kind] or "") .. a.message .. "\n" end
    assert.matches("refused requests from 127%.0%.0%.1", kinds.failure_burst)
    assert.matches(id, kinds.revoked_key_used)
  end)
end)
