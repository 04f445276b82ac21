-- An existing database: one the first aitbc wrote (schema version 1), opened
-- by today's node, reaches the current schema with its rows intact.
local cli = require "support.cli"
local crypto = require "aitbc.crypto"
local db = require "aitbc.db"
local json = require "aitbc.json"
local nodes = require "support.node"
local sys = require "aitbc.sys"

--- A key as version 1 stored it: its public id and the hash of the key.
local function v1_key_row(key, role, now)
  local digest = crypto.hex(crypto.sha256("aitbc-api-key:" .. key))
  return { key_id = "key_" .. digest:sub(1, 16), hash = digest, role = role, name = role .. " from v1",
    environment = "default", created_at = now - 86400 }
end

describe("a database from an older aitbc", function()
  teardown(cli.cleanup)

  it("is migrated to the current schema when the node opens it, with its keys, miners, jobs and audit intact", function()
    local dir = cli.tempdir()
    local now = sys.time()
    local admin, client, miner = "aitbc_admin_" .. string.rep("a1", 20), "aitbc_client_" .. string.rep("c2", 20),
      "aitbc_miner_" .. string.rep("e3", 20)
    local conn = assert(db.open(dir .. "/node.db"))
    assert(conn:exec(assert(sys.read_file("tests/support/schema_v1.sql"))))
    assert(conn:exec("PRAGMA user_version = 1"))
    local ids = {}
    for role, key in pairs { admin = admin, client = client, miner = miner } do
      local row = v1_key_row(key, role, now)
      ids[role] = row.key_id
      assert(conn:run([[INSERT INTO api_keys (key_id, hash, role, name, environment, created_at)
        VALUES (:key_id, :hash, :role, :name, :environment, :created_at)]], row))
    end
    assert(conn:run([[INSERT INTO miners (miner_id, key_id, capabilities, status, registered_at, last_seen, jobs_completed,
      session_token) VALUES ('old-rig', ?, ?, 'ONLINE', ?, ?, 1, 'token-from-v1')]], ids.miner,
      json.encode { gpus = { { name = "RTX 4090", memory_gb = 24 } }, models = { "llama3" } }, now - 3600, now))
    assert(conn:run([[INSERT INTO jobs (job_id, client_key_id, state, payload, model, constraints, ttl_seconds, requested_at,
      expires_at, started_at, finished_at, miner_id, attempts, result, metrics)
      VALUES ('0000000000000000000000000000d0e1', ?, 'COMPLETED', '{"prompt":"done in v1"}', 'llama3', '{}', 900, ?, ?, ?, ?,
      'old-rig', 1, '{"response":"an answer from v1"}', '{"eval_count":7}')]], ids.client, now - 600, now + 300, now - 590, now - 580))
    assert(conn:run([[INSERT INTO jobs (job_id, client_key_id, state, payload, model, constraints, ttl_seconds, requested_at,
      expires_at) VALUES ('0000000000000000000000000000a17e', ?, 'QUEUED', '{"prompt":"queued in v1"}', 'Llama3:latest', '{}',
      3600, ?, ?)]], ids.client, now - 60, now + 3540))
    assert(conn:run([[INSERT INTO audit (time, key_id, role, method, route, path, status, remote, request_id)
      VALUES (?, ?, 'client', 'GET', 'GET /v1/jobs', '/v1/jobs', 200, '127.0.0.1', 'from-v1')]], now - 500, ids.client))
    conn:close()
    assert(sys.write_file(dir .. "/admin.key", admin .. "\n", tonumber("600", 8))) -- as the v1 node left it

    local node = nodes.start { data_dir = dir, args = { "--log-level", "warn" } }
    -- the schema is today's
    local check = assert(db.open(dir .. "/node.db"))
    local version = check:first("PRAGMA user_version").user_version
    -- columns later versions added are filled in for the old rows (the queue by model: lower case, no ":latest")
    local queued = check:first("SELECT model_key, payment_status FROM jobs WHERE job_id = '0000000000000000000000000000a17e'")
    check:close()
    assert.equal(require("aitbc.node.store").SCHEMA_VERSION, version)
    assert.equal("llama3", queued.model_key)
    assert.is_nil(queued.payment_status)
    -- the keys still open the doors they opened
    assert.equal(admin, node.admin_key) -- no new admin key was made
    local _, who = node:request("GET", "/v1/auth/whoami", { key = client })
    assert.same({ ids.client, "client" }, { who.key_id, who.role })
    -- the finished job, its result and its miner's record
    local s, res = node:request("GET", "/v1/jobs/0000000000000000000000000000d0e1/result", { key = client })
    assert.equal(200, s)
    assert.same({ response = "an answer from v1" }, res.result)
    local _, me = node:request("GET", "/v1/miners/me", { key = miner, headers = { ["X-Miner-ID"] = "old-rig" } })
    assert.same({ "old-rig", 1, 0 }, { me.miner_id, me.jobs_completed, me.jobs_failed })
    -- the queued job is still queued: the old miner takes it
    local ps, got = node:request("POST", "/v1/miners/poll", { key = miner, headers = { ["X-Miner-ID"] = "old-rig" }, json = {} })
    assert.equal(200, ps)
    assert.same({ "0000000000000000000000000000a17e", "queued in v1" }, { got.job_id, got.payload.prompt })
    local _, stats = node:request("GET", "/v1/admin/stats", { key = admin })
    assert.equal(2, stats.total_jobs)
    local _, audit = node:request("GET", "/v1/admin/audit?days=1", { key = admin })
    local old
    for _, row in ipairs(audit.items) do if row.request_id == "from-v1" then old = row end end
    assert.same({ ids.client, "GET /v1/jobs", 200, 1 }, { old.key_id, old.route, old.status, old.count })
    -- each key became the key of a user of its own, with the key's role, active, and its activity from the audit log
    local _, users = node:request("GET", "/v1/admin/users", { key = admin })
    local by_name = {}
    for _, u in ipairs(users.items) do by_name[u.name] = u end
    for role, id in pairs(ids) do
      local u = assert(by_name[role .. " from v1 (" .. id .. ")"], "a user for the " .. role .. " key")
      assert.same({ role, "active", 1 }, { u.role, u.status, u.keys })
    end
    assert.equal(3, by_name["client from v1 (" .. ids.client .. ")"].requests_30d) -- v1's, whoami, the result
    assert.equal(143, node:stop()) -- a graceful stop on SIGTERM
  end)

  it("is refused, unchanged, when it is newer than this aitbc", function()
    local dir = cli.tempdir()
    local conn = assert(db.open(dir .. "/node.db"))
    local future = require("aitbc.node.store").SCHEMA_VERSION + 1
    assert(conn:exec("PRAGMA user_version = " .. future))
    conn:close()
    local r = cli.run { "serve", "--listen", "127.0.0.1:0", "--data-dir", dir }
    assert.equal(1, r.code)
    assert.matches("database schema " .. future .. " is newer than this aitbc", r.err)
    conn = assert(db.open(dir .. "/node.db"))
    assert.equal(future, conn:first("PRAGMA user_version").user_version)
    conn:close()
  end)
end)
