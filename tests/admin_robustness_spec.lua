-- The node against races and careless admins: one owner per miner id, no
-- lock-out of the last admin, a bounded audit log under a flood of refused
-- requests, and a private data directory.
local cli = require "support.cli"
local crypto = require "aitbc.crypto"
local http = require "aitbc.http"
local json = require "aitbc.json"
local nodes = require "support.node"
local sys = require "aitbc.sys"
local wallet = require "aitbc.wallet"

local function address()
  local public = crypto.sign_keypair(crypto.random(32))
  return wallet.address(public)
end

describe("miner registration", function()
  local node
  setup(function() node = nodes.start() end)
  teardown(function()
    node:stop()
    cli.cleanup()
  end)

  it("gives a new miner id to exactly one of two keys registering it at once, with that key's fields only", function()
    local keys = { (node:key("miner")), (node:key("miner")) }
    local bodies = {
      { payout = address(), caps = { models = { "model-of-key-1" } }, region = "region-1" },
      { payout = address(), caps = { models = { "model-of-key-2" } }, region = "region-2" },
    }
    for round = 1, 40 do
      local miner_id = "contested-" .. round
      local reqs, who = {}, {}
      for i = 1, 8 do
        local k = (i % 2) + 1
        who[i] = k
        reqs[i] = { method = "POST", url = node.url .. "/v1/miners/register", timeout = 30,
          headers = { ["X-Api-Key"] = keys[k], ["Content-Type"] = "application/json" },
          body = json.encode { miner_id = miner_id, payout_address = bodies[k].payout,
            capabilities = bodies[k].caps, region = bodies[k].region } }
      end
      local results = http.request_many(reqs)
      local won = {}
      for i, r in ipairs(results) do
        assert.is_number(r.status, r.error)
        if r.status == 200 or r.status == 201 then
          won[who[i]] = true
        else
          assert.equal(409, r.status, r.body)
          assert.equal("miner_id_taken", json.decode(r.body).error.code)
        end
      end
      local winners = {}
      for k in pairs(won) do winners[#winners + 1] = k end
      assert.equal(1, #winners, "round " .. round .. ": both keys were told they registered " .. miner_id)
      local w = winners[1]
      -- the winner's own view: its key, payout, capabilities and region
      local status, me = node:request("GET", "/v1/miners/me", { key = keys[w], headers = { ["X-Miner-ID"] = miner_id } })
      assert.equal(200, status, json.encode(me))
      assert.equal(bodies[w].payout, me.payout_address)
      assert.same(bodies[w].caps.models, me.capabilities.models)
      assert.equal(bodies[w].region, me.region)
      local loser = 3 - w
      assert.equal(403, (node:request("GET", "/v1/miners/me", { key = keys[loser], headers = { ["X-Miner-ID"] = miner_id } })))
    end
  end)
end)

describe("admin keys", function()
  teardown(cli.cleanup)

  local function whoami(node, key)
    local status, body = node:request("GET", "/v1/auth/whoami", { key = key })
    return status, body
  end

  -- waits (bounded) until the key is refused as expired
  local function wait_expired(node, key)
    local deadline = sys.monotonic() + 30
    while sys.monotonic() < deadline do
      local status, body = whoami(node, key)
      if status == 401 and body.error.code == "api_key_expired" then return end
      sys.sleep(0.05)
    end
    error("the key did not expire")
  end

  it("refuses to revoke the last usable admin key, even when expired admin keys remain", function()
    local node = nodes.start()
    local first = node.admin_key
    local _, me = whoami(node, first)
    local first_id = me.key_id
    local short, short_id = node:key("admin", { expires_in_days = 0.00002 })
    wait_expired(node, short)
    local status, body = node:request("DELETE", "/v1/admin/keys/" .. first_id, { key = first })
    assert.equal(409, status, json.encode(body))
    assert.equal("last_admin_key", body.error.code)
    assert.matches("last usable admin key", body.error.message)
    assert.matches("create another admin key first", body.error.message)
    assert.equal(200, (whoami(node, first)))
    -- the expired one is no admin anybody can use: revoking it is fine
    assert.equal(200, (node:request("DELETE", "/v1/admin/keys/" .. short_id, { key = first })))
    -- with a second usable admin key, the first may go
    local second = node:key("admin")
    status, body = node:request("POST", "/v1/admin/keys/" .. first_id .. "/revoke", { key = first })
    assert.equal(200, status, json.encode(body))
    assert.equal(200, (whoami(node, second)))
    local _, second_view = whoami(node, second)
    status, body = node:request("DELETE", "/v1/admin/keys/" .. second_view.key_id, { key = second })
    assert.equal(409, status, json.encode(body))
    node:stop()
  end)

  it("lets only one of two admins revoking each other at once succeed", function()
    local node = nodes.start()
    local survivor = node.admin_key
    for round = 1, 25 do
      node.admin_key = survivor -- node:key creates keys with it
      local other = node:key("admin")
      local ids = {}
      for i, k in ipairs { survivor, other } do
        local _, v = whoami(node, k)
        ids[i] = v.key_id
      end
      local function revoke(by, id)
        return { method = "DELETE", url = node.url .. "/v1/admin/keys/" .. id, headers = { ["X-Api-Key"] = by }, timeout = 30 }
      end
      local results = http.request_many { revoke(survivor, ids[2]), revoke(other, ids[1]) }
      local usable = {}
      for i, k in ipairs { survivor, other } do
        if whoami(node, k) == 200 then usable[#usable + 1] = k end
        assert.is_true(results[i].status == 200 or results[i].status == 409 or results[i].status == 401, results[i].body)
      end
      assert.equal(1, #usable, "round " .. round .. ": " .. #usable .. " usable admin keys left")
      survivor = usable[1]
    end
    node:stop()
  end)

  it("writes a new admin.key on a restart that finds only expired or revoked admin keys, and says so", function()
    local dir = cli.tempdir()
    local node = nodes.start { data_dir = dir }
    local first = node.admin_key
    local _, me = whoami(node, first)
    local short = node:key("admin", { expires_in_days = 0.00002 })
    assert.equal(200, (node:request("DELETE", "/v1/admin/keys/" .. me.key_id, { key = short })))
    wait_expired(node, short)
    node:stop()

    node = nodes.start { data_dir = dir }
    assert.not_equal(first, node.admin_key)
    assert.equal(tonumber("600", 8), sys.stat(dir .. "/admin.key").mode)
    local status, view = whoami(node, node.admin_key)
    assert.equal(200, status, json.encode(view))
    assert.equal("admin", view.role)
    node.proc:kill(15)
    local _, _, stderr = node.proc:communicate(nil, 20)
    node.proc = nil
    assert.matches("no usable admin API key %(2 admin key%(s%), all revoked or expired%): created a new one, "
      .. view.key_id, stderr)
    assert.matches("no usable admin API key", sys.read_file(dir .. "/node.log"))
    -- a further restart keeps the key that is now usable
    node = nodes.start { data_dir = dir }
    assert.equal(view.key_id, select(2, whoami(node, node.admin_key)).key_id)
    node:stop()
  end)
end)

describe("the data directory", function()
  teardown(cli.cleanup)
  local OPEN = tonumber("755", 8)

  local function mode_of(path) return string.format("%04o", assert(sys.stat(path), path).mode) end

  it("is made private: an existing 0755 directory becomes 0700 and every file the node writes is 0600", function()
    local dir = cli.tempdir()
    assert(sys.chmod(dir, OPEN))
    local node = nodes.start { data_dir = dir }
    local key = node:key("client")
    assert.equal(201, (node:request("POST", "/v1/jobs", { key = key, json = { payload = { prompt = "x" } } })))
    for _, name in ipairs { "node.db", "node.db-wal", "node.db-shm", "node.log", "node.key", "admin.key" } do
      assert.equal("0600", mode_of(dir .. "/" .. name), name)
    end
    assert.equal("0700", mode_of(dir))
    node:stop()
  end)

  it("tightens files an older node left readable, and writes pid, url and output files 0600 when detached", function()
    local dir = cli.tempdir()
    assert(sys.write_file(dir .. "/node.log", "old\n", tonumber("644", 8)))
    assert(sys.chmod(dir, OPEN))
    local r = cli.run({ "-o", "json", "serve", "--detach", "--listen", "127.0.0.1:0", "--data-dir", dir }, { home = dir })
    assert.equal(0, r.code, r.err)
    local pid = cli.adopt(r.json().pid)
    assert.equal("0700", mode_of(dir))
    for _, name in ipairs { "node.pid", "node.url", "serve.out", "node.log", "node.db", "admin.key" } do
      assert.equal("0600", mode_of(dir .. "/" .. name), name)
    end
    sys.kill(pid, 15)
    local deadline = sys.monotonic() + 20
    while sys.stat(dir .. "/node.pid") and sys.monotonic() < deadline do sys.sleep(0.05) end
    assert.is_nil(sys.stat(dir .. "/node.pid"))
  end)

  it("refuses a shared directory such as /tmp with a clear error, writing nothing there", function()
    local dir = cli.tempdir()
    assert(sys.chmod(dir, tonumber("1777", 8)))
    local r = cli.run({ "serve", "--listen", "127.0.0.1:0", "--data-dir", dir }, { home = cli.tempdir() })
    assert.equal(1, r.code, r.err)
    assert.matches("is a shared directory %(mode 1777, like /tmp%)", r.err)
    assert.matches("a directory of its own", r.err)
    assert.same({}, sys.list_dir(dir))
    assert.equal("1777", mode_of(dir))
  end)
end)

describe("the audit log under a flood of refused requests", function()
  local node
  setup(function() node = nodes.start() end)
  teardown(function()
    node:stop()
    cli.cleanup()
  end)

  local function db_bytes()
    local n = 0
    for _, suffix in ipairs { "", "-wal" } do
      local st = sys.stat(node.dir .. "/node.db" .. suffix)
      n = n + (st and st.size or 0)
    end
    return n
  end

  local function audit(query)
    local status, body = node:request("GET", "/v1/admin/audit?days=1" .. (query or ""), { key = node.admin_key })
    assert.equal(200, status, json.encode(body))
    return body.items
  end

  it("stores one bounded row per address, minute and outcome, with the count", function()
    audit() -- settles what start-up wrote
    -- a 30 KB path never reaches a handler: the server refuses it (414, JSON)
    local status, refused = node:request("GET", "/v1/jobs/" .. string.rep("a", 30000))
    assert.equal(414, status)
    assert.equal("uri_too_long", refused.error.code)
    local before = db_bytes()
    local long = string.rep("a", 7500) -- as long as a request line may be
    local sent = { invalid_api_key = 0, missing_api_key = 0 }
    for _ = 1, 10 do
      local reqs = {}
      for i = 1, 100 do
        local bogus = i % 10 ~= 0
        reqs[i] = { method = "GET", url = node.url .. "/v1/jobs/" .. long .. i, timeout = 30,
          headers = bogus and { ["X-Api-Key"] = "aitbc_client_" .. crypto.hex(crypto.random(20)) } or nil }
        local outcome = bogus and "invalid_api_key" or "missing_api_key"
        sent[outcome] = sent[outcome] + 1
      end
      for _, r in ipairs(http.request_many(reqs)) do assert.equal(401, r.status, r.error) end
    end
    local items = audit()
    local counted, rows = {}, {}
    for _, r in ipairs(items) do
      if r.status == 401 then
        assert.is_true(#r.path <= 300, "an audit row holds a path of " .. #r.path .. " bytes")
        assert.equal("127.0.0.1", r.remote)
        counted[r.outcome] = (counted[r.outcome] or 0) + r.count
        rows[r.outcome] = (rows[r.outcome] or 0) + 1
      end
    end
    assert.same(sent, counted)
    -- one row per minute (the burst may straddle a minute boundary)
    assert.is_true(rows.invalid_api_key <= 2 and rows.missing_api_key <= 2, json.encode(rows))
    local grown = db_bytes() - before
    assert.is_true(grown < 512 * 1024, "the database grew by " .. grown .. " bytes for 1,000 refused requests")
    -- and `aitbc auth audit` reads the counts
    local home = cli.tempdir()
    assert.equal(0, cli.run({ "auth", "import-env", "--key-type", "admin" },
      { home = home, env = { AITBC_ADMIN_KEY = node.admin_key } }).code)
    local r = node:cli({ "-o", "json", "auth", "audit", "--days", "1" }, { home = home })
    assert.equal(0, r.code, r.err)
    local report = r.json()
    assert.is_true(report.total_requests >= 1000, "total_requests " .. report.total_requests)
    local alerts = {}
    for _, a in ipairs(report.alerts) do alerts[a.kind] = a.message end
    assert.matches("^%d+ refused requests from 127%.0%.0%.1", alerts.failure_burst)
    assert.is_true(tonumber(alerts.failure_burst:match("^%d+")) >= 1000, alerts.failure_burst)
    assert.matches("900 request%(s%) with API keys this node does not know", alerts.unknown_key)
    assert.matches("100 request%(s%) without any key", alerts.missing_key)
  end)

  it("counts refusals from more addresses than a minute may hold in one overflow row per outcome", function()
    local store_mod = require "aitbc.node.store"
    local store = assert(store_mod.open(cli.tempdir() .. "/audit.db"))
    local cap = store_mod.REFUSED_GROUPS_PER_MINUTE
    local minute_start = math.floor(sys.time() / 60) * 60
    local function refuse(i, outcome)
      store:audit_refused_push { time = minute_start + (i % 50) / 10, method = "GET", route = "GET /v1/jobs",
        path = "/v1/jobs", status = 401, remote = "10.0." .. (i // 256) .. "." .. (i % 256), outcome = outcome,
        request_id = "r" .. i }
    end
    for i = 1, 3 * cap do refuse(i, "invalid_api_key") end
    store:audit_refused_flush()
    for i = 1, 2 * cap do refuse(10000 + i, "invalid_api_key") end -- a second flush, new addresses
    refuse(1, "missing_api_key")
    store:audit_refused_flush()
    local rows = store:audit_since(minute_start - 1)
    local total, overflow = 0, nil
    for _, r in ipairs(rows) do
      total = total + r.count
      if r.remote == "*" and r.outcome == "invalid_api_key" then overflow = r end
    end
    assert.equal(5 * cap + 1, total)
    assert.equal(cap + 2, #rows) -- cap rows of their own, one overflow row per outcome
    assert.equal(4 * cap, overflow.count)
    assert.equal("(various)", overflow.path)
    store:close()
  end)
end)
