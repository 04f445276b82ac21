-- The node under hostile or heavy use: what it acknowledges is audited even
-- if it is killed, protocol errors get the JSON error document and a line in
-- node.log, and long polls beyond what a thread per connection could hold
-- leave it answering.
local cli = require "support.cli"
local http = require "aitbc.http"
local json = require "aitbc.json"
local net = require "aitbc.native.net"
local nodes = require "support.node"
local store_mod = require "aitbc.node.store"
local sys = require "aitbc.sys"

local function wait_for(what, fn, seconds)
  local deadline = sys.monotonic() + (seconds or 10)
  repeat
    local v = fn()
    if v then return v end
    sys.sleep(0.05)
  until sys.monotonic() > deadline
  error("timed out waiting for " .. what)
end

describe("the node", function()
  teardown(cli.cleanup)

  it("has the audit row of every acknowledged request, even after kill -9", function()
    local node = nodes.start()
    local key = node:key("client")
    local acknowledged = {}
    for batch = 1, 4 do
      local reqs = {}
      for i = 1, 100 do
        reqs[i] = { method = "POST", url = node.url .. "/v1/jobs", timeout = 30, body = '{"payload":{"prompt":"x"}}',
          headers = { ["X-Api-Key"] = key, ["Content-Type"] = "application/json", ["X-Request-ID"] = "kill9-" .. batch .. "-" .. i } }
      end
      for i, res in ipairs(http.request_many(reqs)) do
        if res.status == 201 then acknowledged[#acknowledged + 1] = reqs[i].headers["X-Request-ID"] end
      end
    end
    node:stop(true) -- kill -9 right after the last answer
    assert.equal(400, #acknowledged)
    local store = assert(store_mod.open(node.dir .. "/node.db"))
    local have = {}
    for _, r in ipairs(store:audit_since(0, nil, 100000)) do have[r.request_id] = r.status end
    store:close()
    local missing = 0
    for _, id in ipairs(acknowledged) do
      if have[id] ~= 201 then missing = missing + 1 end
    end
    assert.equal(0, missing, missing .. " acknowledged submits have no audit row")
  end)

  it("answers protocol errors with its JSON error document and logs them in node.log", function()
    local node = nodes.start()
    local port = tonumber(node.url:match(":(%d+)$"))
    local c = assert(net.connect("127.0.0.1", port))
    c:send("GET /health HTTP/3.0\r\n\r\n")
    local text = ""
    repeat
      local chunk = c:recv(4096, 5)
      text = text .. (chunk or "")
    until not chunk
    c:close()
    assert.matches("^HTTP/1.1 505", text)
    local doc = json.decode(text:match("\r\n\r\n(.*)$"))
    assert.equal("http_version_not_supported", doc.error.code)
    local line = wait_for("the refusal in node.log", function()
      for l in (sys.read_file(node.dir .. "/node.log") or ""):gmatch("[^\n]+") do
        local entry = json.decode(l)
        if entry and entry.request_id == doc.error.request_id then return entry end
      end
    end)
    assert.equal(505, line.status)
    assert.equal("warn", line.level)
    node:stop()
  end)

  it("keeps more long polls than a thread per connection could, and still answers", function()
    local node = nodes.start()
    local miner = node:key("miner")
    assert.equal(200, (node:request("POST", "/v1/miners/register", { key = miner, json = { miner_id = "m1" } })))
    local port = tonumber(node.url:match(":(%d+)$"))
    local body = '{"max_wait_seconds":3}'
    local poll = "POST /v1/miners/poll HTTP/1.1\r\nX-Api-Key: " .. miner .. "\r\nContent-Type: application/json\r\n"
      .. "Content-Length: " .. #body .. "\r\n\r\n" .. body
    local limits = assert(sys.read_file("/proc/self/limits"))
    local n = math.min(1500, (tonumber(limits:match("Max open files%s+(%d+)")) or 1024) - 200)
    local polls = {}
    for i = 1, n do
      polls[i] = assert(net.connect("127.0.0.1", port, { source = "127.0.1." .. (i % 200 + 1) }))
      polls[i]:send(poll)
    end
    -- while they wait, the node answers; a job goes to exactly one of them
    local started = sys.monotonic()
    local status = node:request("GET", "/health")
    assert.equal(200, status)
    local client = node:key("client")
    local _, job = node:request("POST", "/v1/jobs", { key = client, json = { payload = { prompt = "x" } } })
    assert.is_true(sys.monotonic() - started < 3, "the node answered only after the polls")
    local taken, empty = 0, 0
    for _, c in ipairs(polls) do
      local text = c:recv(65536, 10) or ""
      if text:match("^HTTP/1.1 200") then
        taken = taken + 1
        assert.matches(job.job_id, text)
      elseif text:match("^HTTP/1.1 204") then
        empty = empty + 1
      end
      c:close()
    end
    assert.equal(1, taken)
    assert.equal(n - 1, empty)
    node:stop()
  end)

  it("re-queues a job whose miner heart-beats but never answers, and fails it after its last lease", function()
    local node = nodes.start()
    local client, miner = node:key("client"), node:key("miner")
    node:request("POST", "/v1/miners/register", { key = miner, json = { miner_id = "silent" } })
    local _, job = node:request("POST", "/v1/jobs", { key = client,
      json = { payload = { prompt = "x" }, run_timeout_seconds = 1 } })
    assert.equal(1, job.run_timeout_seconds)
    local function state() return select(2, node:request("GET", "/v1/jobs/" .. job.job_id, { key = client })) end
    for attempt = 1, 3 do
      local status, taken = node:request("POST", "/v1/miners/poll", { key = miner, json = { max_wait_seconds = 5 } })
      assert.equal(200, status)
      assert.equal(attempt, taken.attempt)
      assert.is_string(taken.lease_expires_at)
      -- heart-beating does not extend a lease
      node:request("POST", "/v1/miners/heartbeat", { key = miner })
      wait_for("the lease to run out", function() return state().state ~= "RUNNING" end, 10)
      if attempt < 3 then assert.equal("QUEUED", state().state) end
    end
    local final = state()
    assert.equal("FAILED", final.state)
    assert.matches("^LEASE_EXPIRED", final.error)
    -- the miner's late answer is refused
    local status = node:request("POST", "/v1/miners/" .. job.job_id .. "/result", { key = miner, json = { result = {} } })
    assert.equal(409, status)
    node:stop()
  end)
end)
