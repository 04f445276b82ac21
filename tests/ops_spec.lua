-- Node operations (spec §13, §14): signed updates from a release channel,
-- GPU readings in heartbeats, the metrics history, the fleet dashboard,
-- backups, restarts under load, users, logs — through the real node and
-- the real binary.
local cli = require "support.cli"
local json = require "aitbc.json"
local nodes = require "support.node"
local sys = require "aitbc.sys"

local ROOT = cli.bin:gsub("/build/aitbc$", "")

--- A binary of this build with another version string (make variant).
local function variant(dir, version, fault)
  local out = dir .. "/aitbc-" .. version
  local proc = assert(sys.spawn { argv = { "make", "-s", "-C", ROOT, "variant", "VARIANT_VERSION=" .. version,
    "OUT=" .. out, fault and "HEALTH_FAULT=1" or "HEALTH_FAULT=" }, stdout = "pipe", stderr = "pipe" })
  local code, o, e = proc:communicate(nil, 300)
  assert(code == 0, "make variant failed: " .. tostring(o) .. tostring(e))
  return out
end

local function admin(node, args, opts)
  opts = opts or {}
  opts.env = opts.env or {}
  opts.env.AITBC_ADMIN_KEY = node.admin_key
  return node:cli(args, opts)
end

describe("signed updates", function()
  local node, dir, channel, key, home
  setup(function()
    dir = cli.tempdir()
    home = cli.tempdir()
    channel, key = dir .. "/channel", dir .. "/release.key"
    local r = cli.run({ "-o", "json", "release", "keygen", "--out", key }, { home = home })
    assert.equal(0, r.code, r.err)
    local public = r.json().public_key
    assert.equal(0, cli.run({ "release", "build", "--version", "0.2.0", "--key", key, "--out", channel, "--binary",
      variant(dir, "0.2.0") }, { home = home }).code)
    assert.equal(0, cli.run({ "release", "build", "--version", "0.3.0", "--key", key, "--out", channel, "--binary",
      variant(dir, "0.3.0", true) }, { home = home }).code)
    local data = cli.tempdir()
    assert(sys.write_file(data .. "/node.json", json.encode { release = { channel = channel, public_key = public } }))
    node = nodes.start { data_dir = data }
  end)
  teardown(function()
    node:stop()
    cli.cleanup()
  end)

  local function version()
    local _, health = node:request("GET", "/health")
    return health.version
  end

  it("plans an update without changing anything (--dry-run)", function()
    local r = admin(node, { "-o", "json", "admin", "update", "--component", "coordinator", "--version", "latest",
      "--dry-run" }, { home = home })
    assert.equal(0, r.code, r.err)
    local plan = r.json()
    assert.same({ "coordinator", sys.version, "0.3.0", "upgrade", true },
      { plan.component, plan.current_version, plan.target.version, plan.action, plan.compatible })
    local names = {}
    for _, c in ipairs(plan.checks) do names[#names + 1] = c.name end
    assert.same({ "signature", "sequence", "platform", "schema", "configuration", "no rollback below trusted" }, names)
    assert.equal("full", plan.backup.type)
    assert.is_true(plan.backup.estimate_bytes > 0)
    assert.equal(3, #plan.rollback)
    assert.equal(sys.version, version())
    assert.is_nil(sys.stat(node.dir .. "/releases"))
  end)

  it("refuses a version the channel does not have, a tampered manifest and a tampered binary; the node serves on",
    function()
      local r = admin(node, { "admin", "update", "--version", "9.9.9", "--dry-run" })
      assert.equal(3, r.code)
      assert.matches("no version 9.9.9 %(it has: 0.2.0, 0.3.0%)", r.err)
      local manifest = assert(sys.read_file(channel .. "/channel.json"))
      assert(sys.write_file(channel .. "/channel.json", (manifest:gsub('"channel": "stable"', '"channel": "evil"'))))
      r = admin(node, { "admin", "update", "--version", "0.2.0", "--yes", "--no-backup" })
      assert.equal(1, r.code)
      assert.matches("signature does not verify", r.err)
      assert(sys.write_file(channel .. "/channel.json", manifest))
      local binary = assert(sys.read_file(channel .. "/aitbc-0.2.0"))
      assert(sys.write_file(channel .. "/aitbc-0.2.0", binary:sub(1, -2) .. "X", tonumber("755", 8)))
      r = admin(node, { "admin", "update", "--version", "0.2.0", "--yes", "--no-backup" })
      assert.equal(1, r.code)
      assert.matches("SHA%-256 differs from the signed manifest", r.err)
      assert(sys.write_file(channel .. "/aitbc-0.2.0", binary, tonumber("755", 8)))
      assert.is_nil(sys.stat(node.dir .. "/releases/aitbc-0.2.0"))
      assert.equal(sys.version, version())
    end)

  it("updates to a signed release (backup first), rolls back one that fails its health check, refuses to go below "
    .. "the trusted version", function()
    local backups = cli.tempdir() .. "/pre-update"
    local r = admin(node, { "admin", "update", "--version", "0.2.0", "--yes", "--backup-dir", backups })
    assert.equal(0, r.code, r.err .. r.out)
    assert.matches("updated " .. sys.version:gsub("%.", "%%.") .. " %-> 0%.2%.0", r.out)
    assert.equal("0.2.0", version())
    assert.equal(0, admin(node, { "admin", "backup", "verify", backups }).code)
    -- 0.3.0 was built to fail its health check: the new process is stopped, 0.2.0 serves on
    r = admin(node, { "admin", "update", "--version", "0.3.0", "--yes", "--no-backup" })
    assert.equal(1, r.code)
    assert.matches("health check", r.err)
    assert.equal("0.2.0", version())
    local release = json.decode(assert(sys.read_file(node.dir .. "/release.json")))
    assert.same({ "0.2.0", "0.2.0" }, { release.current.version, release.trusted_version })
    -- back to the first version: below the trusted one, refused unless asked
    r = admin(node, { "-o", "json", "admin", "update", "--version", "0.2.0", "--dry-run" })
    assert.equal(0, r.code)
    r = admin(node, { "admin", "update", "--version", sys.version, "--yes", "--no-backup" })
    assert.equal(3, r.code) -- this build's version is not in the channel
  end)
end)

describe("GPU readings, the metrics history and the dashboard", function()
  local node
  setup(function() node = nodes.start() end)
  teardown(function()
    node:stop()
    cli.cleanup()
  end)

  local function miner()
    local key = node:key("miner")
    local status = node:request("POST", "/v1/miners/register", { key = key, json = { miner_id = "gpu-box",
      capabilities = { models = { "llama3" } } } })
    assert.equal(200, status)
    return key
  end

  it("keeps the GPU readings a heartbeat carries and shows them in admin status and the dashboard", function()
    local key = miner()
    local status, body = node:request("POST", "/v1/miners/heartbeat", { key = key, json = { gpus = {
      { index = 0, name = "RTX 4090", utilization_gpu = 71, temperature_c = 66, memory_used = 1 << 30,
        memory_total = 24 << 30 } } } })
    assert.equal(200, status, json.encode(body))
    status, body = node:request("POST", "/v1/miners/heartbeat", { key = key, json = { gpus = { { temperature_c = 900 } } } })
    assert.equal(422, status)
    assert.equal("gpus[1].temperature_c", body.error.field)
    -- an older client's heartbeat without readings still counts
    assert.equal(200, (node:request("POST", "/v1/miners/heartbeat", { key = key, body = "" })))
    local _, st = node:request("GET", "/v1/admin/status", { key = node.admin_key })
    assert.same({ "gpu-box", 71, 66 }, { st.miners.gpus[1].miner_id, st.miners.gpus[1].utilization_percent,
      st.miners.gpus[1].temperature_c })
    local home = cli.tempdir()
    assert(sys.write_file(home .. "/nodes.json", json.encode { version = 1, nodes = {
      { name = "gone", host = "127.0.0.1", port = cli.closed_port(), scheme = "http" } } }))
    local r = admin(node, { "-o", "json", "admin", "monitor", "--once" }, { home = home })
    assert.equal(0, r.code, r.err)
    local frame = r.json()
    assert.equal(2, #frame.nodes)
    local this, gone = frame.nodes[1], frame.nodes[2]
    assert.same({ "ok", 71, 66, 1 }, { this.status, this.gpu_utilization_percent, this.gpu_temperature_max_c,
      #this.gpus })
    assert.is_number(this.latency_ms)
    assert.is_number(this.disk_percent)
    assert.equal("ait-devnet", this.chains[1].chain_id)
    assert.same({ "gone", "unreachable" }, { gone.name, gone.status })
  end)

  it("draws plain frames when not on a terminal, and quits cleanly on Ctrl-C", function()
    local proc = cli.spawn { argv = { cli.bin, "admin", "monitor", "--dashboard", "--refresh", "0.5" },
      env = { AITBC_URL = node.url, AITBC_ADMIN_KEY = node.admin_key, AITBC_HOME = cli.tempdir() },
      stdout = "pipe", stderr = "pipe" }
    local seen = ""
    cli.wait_for("two frames", function()
      local chunk = proc:read(0.2)
      if chunk then seen = seen .. chunk end
      local _, n = seen:gsub("aitbc fleet dashboard", "")
      return n >= 2
    end, 30)
    assert.not_matches("\27%[", seen) -- no screen control when not on a terminal
    proc:kill(2)
    assert.equal(130, (proc:communicate(nil, 10)))
  end)

  it("takes the full screen on a terminal, and gives it back when q is pressed", function()
    local code, shown = cli.on_terminal({ "admin", "monitor", "--dashboard", "--refresh", "30" },
      { AITBC_URL = node.url, AITBC_ADMIN_KEY = node.admin_key, AITBC_HOME = cli.tempdir(), PATH = os.getenv("PATH"),
        TERM = "xterm" }, "stty cols 100 rows 40; ", "q")
    assert.equal(0, code, shown)
    assert.matches("\27%[%?1049h", shown)
    assert.matches("this node", shown)
    assert.matches("\27%[%?1049l", shown)
  end)

  it("writes a row a minute and folds rows older than a day into 15-minute rows", function()
    local store = require("aitbc.node.store").open(cli.tempdir() .. "/m.db")
    local metrics = require "aitbc.node.metrics"
    local rollup = metrics.rollup(store, 60)
    local t0 = 1800000000 -- a whole quarter hour
    assert.is_false(rollup:tick(t0 + 1)) -- the baseline
    assert.is_false(rollup:tick(t0 + 30))
    assert.is_true(rollup:tick(t0 + 61))
    local rows = store:metrics_range(0, math.huge, 10)
    assert.same({ 1, t0, 60, 0 }, { #rows, rows[1].minute, rows[1].resolution, rows[1].jobs_completed })
    for i = 0, 29 do
      store:metrics_put { minute = t0 - 2 * 86400 + i * 60, resolution = 60, jobs_submitted = 1, jobs_completed = 1,
        jobs_failed = 0, blocks = 2, transactions = 0, requests = 0, queue_depth = i }
    end
    assert.equal(2, store:metrics_downsample(t0 - 86400, t0 - 30 * 86400))
    rows = store:metrics_range(0, t0 - 86400, 10)
    assert.same({ 2, 900, 15, 30 }, { #rows, rows[1].resolution, rows[1].jobs_submitted, rows[1].blocks })
    store:close()
    local status, body = node:request("GET", "/v1/admin/metrics", { key = node.admin_key })
    assert.equal(200, status)
    assert.is_table(body.items)
    assert.equal("gpu_utilization", body.fields[9])
  end)
end)

describe("backups, restarts, users and logs", function()
  local node
  setup(function() node = nodes.start() end)
  teardown(function()
    node:stop()
    cli.cleanup()
  end)

  it("backs up while serving, verifies, finds an altered file, refuses an existing destination", function()
    local dest = cli.tempdir() .. "/aitbc-backup"
    local r = admin(node, { "-o", "json", "admin", "backup", "--type", "full", "--destination", dest })
    assert.equal(0, r.code, r.err)
    local d = r.json()
    assert.is_true(d.estimate_bytes > 0)
    assert.equal(0, admin(node, { "admin", "backup", "verify", dest, "--deep" }).code)
    r = admin(node, { "admin", "backup", "--type", "full", "--destination", dest })
    assert.not_equal(0, r.code)
    assert.matches("exists", r.err)
    local key = assert(sys.read_file(dest .. "/node.key"))
    -- one hex digit changed (whichever it was: writing a fixed "0" left it unchanged one time in 16)
    local last = key:sub(-2, -2)
    assert(sys.write_file(dest .. "/node.key", key:sub(1, -3) .. (last == "0" and "1" or "0") .. "\n"))
    r = admin(node, { "admin", "backup", "verify", dest })
    assert.equal(1, r.code)
    assert.matches("node.key", r.out)
  end)

  it("restarts the whole node under submit load: no refused connection, no acknowledged job lost", function()
    local client = node:key("client")
    local http = require "aitbc.http"
    local accepted, refused = {}, 0
    local function burst()
      local reqs = {}
      for i = 1, 8 do
        reqs[i] = { method = "POST", url = node.url .. "/v1/jobs", timeout = 30, headers = { ["X-Api-Key"] = client,
          ["Content-Type"] = "application/json" }, body = json.encode { payload = { type = "inference",
          prompt = "p" }, model = "llama3" } }
      end
      for _, res in ipairs(http.request_many(reqs)) do
        if res.status == 201 or res.status == 200 then
          accepted[#accepted + 1] = json.decode(res.body).job_id
        elseif not res.status then
          refused = refused + 1
        end
      end
    end
    local restart = cli.spawn { argv = { cli.bin, "-o", "json", "admin", "restart", "--service", "all" },
      env = { AITBC_URL = node.url, AITBC_ADMIN_KEY = node.admin_key, AITBC_HOME = cli.tempdir() },
      stdout = "pipe", stderr = "pipe" }
    local code
    repeat
      burst()
      code = restart:wait(true)
    until code
    burst()
    assert.equal(0, code)
    assert.equal(0, refused)
    assert.is_true(#accepted > 0)
    for _, id in ipairs(accepted) do
      assert.equal(200, (node:request("GET", "/v1/jobs/" .. id, { key = client })))
    end
  end)

  it("suspends a user (all their keys at once) and lists users by role and status", function()
    local r = admin(node, { "-o", "json", "admin", "users", "--action", "create", "--name", "alice", "--role", "miner",
      "--with-key" })
    assert.equal(0, r.code, r.err)
    local key = r.json().api_key.key
    -- the key works (no miner registered with it yet: 404, not an auth refusal)
    assert.equal(404, (node:request("GET", "/v1/miners/me", { key = key })))
    assert.equal(0, admin(node, { "admin", "users", "--action", "suspend", "--user", "alice", "--reason", "test" }).code)
    local status, body = node:request("GET", "/v1/miners/me", { key = key })
    assert.same({ 403, "user_suspended" }, { status, body.error.code })
    r = admin(node, { "-o", "json", "admin", "users", "--action", "list", "--role", "miner", "--status", "suspended" })
    local names = {}
    for _, u in ipairs(r.json().items or r.json()) do names[#names + 1] = u.name end
    assert.same({ "alice" }, names)
  end)

  it("filters logs by service, level and a human --since; --alert exits 1 on critical entries", function()
    assert.equal(0, admin(node, { "admin", "logs", "--level", "critical", "--since", "1 hour ago", "--alert" }).code)
    local r = admin(node, { "-o", "json", "admin", "logs", "--service", "coordinator", "--tail", "5", "--since", "30m" })
    assert.equal(0, r.code, r.err)
    r = admin(node, { "admin", "logs", "--since", "next tuesday-ish" })
    assert.equal(2, r.code)
    assert.matches("%-%-since", r.err)
    r = admin(node, { "admin", "restart", "--service", "no-such" })
    assert.equal(2, r.code)
  end)
end)
