-- The node over HTTP: every route, state transition and error path.
local cli = require "support.cli"
local json = require "aitbc.json"
local nodes = require "support.node"
local receipts = require "aitbc.protocol.receipts"
local crypto = require "aitbc.crypto"
local sys = require "aitbc.sys"

describe("aitbc serve", function()
  local node, client, client2, miner, miner2
  setup(function()
    node = nodes.start()
    client = node:key("client")
    client2 = node:key("client")
    miner = node:key("miner")
    miner2 = node:key("miner")
  end)
  teardown(function()
    node:stop()
    cli.cleanup()
  end)

  local function submit(body, key)
    local status, job = node:request("POST", "/v1/jobs", { key = key or client, json = body })
    assert.equal(201, status, json.encode(job))
    return job
  end

  local function register(key, body, miner_id)
    local status, m = node:request("POST", "/v1/miners/register", { key = key or miner, json = body or {},
      headers = miner_id and { ["X-Miner-ID"] = miner_id } or nil })
    assert.is_true(status == 200 or status == 201, json.encode(m))
    return m
  end

  local function poll(key, miner_id, wait)
    return node:request("POST", "/v1/miners/poll", { key = key or miner, json = { max_wait_seconds = wait or 0 },
      headers = miner_id and { ["X-Miner-ID"] = miner_id } or nil })
  end

  describe("first start and health", function()
    it("wrote the admin key with mode 0600 and answers health without a key", function()
      assert.equal(tonumber("600", 8), sys.stat(node.dir .. "/admin.key").mode)
      assert.equal(tonumber("600", 8), sys.stat(node.dir .. "/node.key").mode)
      for _, path in ipairs { "/health", "/v1/health", "/api/v1/health" } do
        local status, h = node:request("GET", path)
        assert.equal(200, status)
        assert.equal("ok", h.status)
        assert.equal("ok", h.services.storage)
        assert.is_string(h.node_key)
      end
    end)

    it("exposes Prometheus metrics", function()
      node:request("GET", "/health")
      local _, _, res = node:request("GET", "/metrics")
      assert.matches("text/plain", res.headers["content-type"])
      assert.matches('aitbc_requests_total{route="GET /health",status="200"} %d+', res.body)
      assert.matches('aitbc_request_duration_seconds_bucket{route="GET /health",le="%+Inf"}', res.body)
      assert.matches("aitbc_queue_depth %d+", res.body)
      assert.matches("aitbc_miners_online %d+", res.body)
    end)

    it("logs JSON lines with a request id", function()
      local _, _, res = node:request("GET", "/v1/jobs", { key = client, headers = { ["X-Request-ID"] = "trace-me-1" } })
      assert.equal("trace-me-1", res.headers["x-request-id"])
      local function logged()
        local found
        for line in (sys.read_file(node.dir .. "/node.log") or ""):gmatch("[^\n]+") do
          local entry = json.decode(line)
          assert.is_table(entry, line)
          assert.is_string(entry.time)
          assert.is_string(entry.level)
          assert.is_string(entry.service)
          if entry.request_id == "trace-me-1" then found = entry end
        end
        return found
      end
      local found = cli.wait_for("the request's log line", function()
        node:request("GET", "/health") -- a request lets the node flush its log
        return logged()
      end)
      assert.equal("/v1/jobs", found.path)
    end)
  end)

  describe("authentication and roles", function()
    it("answers 401 for a missing or unknown key, 403 for the wrong role", function()
      local status, body = node:request("GET", "/v1/jobs")
      assert.equal(401, status)
      assert.equal("missing_api_key", body.error.code)
      status, body = node:request("GET", "/v1/jobs", { key = "aitbc_client_0000000000000000000000" })
      assert.equal(401, status)
      assert.equal("invalid_api_key", body.error.code)
      status, body = node:request("POST", "/v1/miners/poll", { key = client, json = {} })
      assert.equal(403, status)
      assert.matches("needs a miner key", body.error.message)
      status = node:request("POST", "/v1/jobs", { key = miner, json = { payload = {} } })
      assert.equal(403, status)
      status = node:request("GET", "/v1/admin/keys", { key = client })
      assert.equal(403, status)
    end)

    it("creates, lists (without secrets) and revokes keys; a revoked key is refused at once", function()
      local key, key_id = node:key("client", { name = "temp", environment = "staging" })
      assert.equal(200, (node:request("GET", "/v1/jobs", { key = key })))
      local _, list = node:request("GET", "/v1/admin/keys", { key = node.admin_key })
      local listed
      for _, k in ipairs(list.items) do
        assert.is_nil(k.key)
        assert.is_nil(k.hash)
        if k.key_id == key_id then listed = k end
      end
      assert.equal("staging", listed.environment)
      assert.equal("active", listed.status)
      local status, revoked = node:request("DELETE", "/v1/admin/keys/" .. key_id, { key = node.admin_key })
      assert.equal(200, status)
      assert.equal("revoked", revoked.status)
      local s2, body = node:request("GET", "/v1/jobs", { key = key })
      assert.equal(401, s2)
      assert.equal("api_key_revoked", body.error.code)
      assert.equal(409, (node:request("DELETE", "/v1/admin/keys/" .. key_id, { key = node.admin_key })))
      assert.equal(404, (node:request("DELETE", "/v1/admin/keys/key_nope", { key = node.admin_key })))
    end)

    it("accepts an imported key, refuses a short one, and will not revoke the last admin key", function()
      local status, k = node:request("POST", "/v1/admin/keys", { key = node.admin_key,
        json = { role = "client", key = "imported_client_key_123" } })
      assert.equal(201, status)
      assert.equal("imported_client_key_123", k.key)
      assert.equal(200, (node:request("GET", "/v1/jobs", { key = "imported_client_key_123" })))
      local s2, body = node:request("POST", "/v1/admin/keys", { key = node.admin_key, json = { role = "client", key = "short" } })
      assert.equal(422, s2)
      assert.equal("key", body.error.field)
      local _, who = node:request("GET", "/v1/auth/whoami", { key = node.admin_key })
      local s3, last = node:request("DELETE", "/v1/admin/keys/" .. who.key_id, { key = node.admin_key })
      assert.equal(409, s3)
      assert.equal("last_admin_key", last.error.code)
    end)

    it("expires keys", function()
      local key = node:key("client", { expires_in_days = 0.00001 }) -- 0.864 s
      local body = cli.wait_for("the key to expire", function()
        local status, b = node:request("GET", "/v1/jobs", { key = key })
        assert.is_true(status == 200 or status == 401, tostring(status))
        return status == 401 and b
      end)
      assert.equal("api_key_expired", body.error.code)
    end)

    it("tells a key who it is and what it may do", function()
      local _, who = node:request("GET", "/v1/auth/whoami", { key = miner })
      assert.equal("miner", who.role)
      assert.equal("active", who.status)
      local perms = table.concat(who.permissions, "\n")
      assert.matches("POST /v1/miners/poll", perms)
      assert.not_matches("POST /v1/jobs\n", perms .. "\n")
    end)

    it("audits every authenticated request", function()
      --- The audit rows by request id, and how many refusals of an unknown key
      -- they count (refusals are counted per address, minute and outcome).
      local function audit()
        local status, a = node:request("GET", "/v1/admin/audit?days=1", { key = node.admin_key })
        assert.equal(200, status)
        local rows, unknown = {}, 0
        for _, row in ipairs(a.items) do
          assert.is_string(row.time)
          assert.equal("127.0.0.1", row.remote)
          if row.request_id then rows[row.request_id] = row end
          if row.outcome == "invalid_api_key" then unknown = unknown + row.count end
        end
        return rows, unknown
      end
      local key, key_id = node:key("client")
      local _, unknown_before = audit()
      node:request("GET", "/v1/jobs", { key = key, headers = { ["X-Request-ID"] = "audit-ok-1" } })
      local s401 = node:request("GET", "/v1/jobs", { key = "aitbc_client_unknown_key_1234567" })
      assert.equal(401, s401)
      local rows, unknown_after = audit()
      local ok = rows["audit-ok-1"]
      assert.same({ "GET /v1/jobs", 200, key_id, "client" }, { ok.route, ok.status, ok.key_id, ok.role })
      assert.equal(unknown_before + 1, unknown_after)
    end)
  end)

  describe("bad input", function()
    it("answers malformed JSON, wrong types, missing fields and oversized bodies with JSON errors", function()
      local cases = {
        { body = "{not json", status = 400, code = "invalid_json" },
        { body = "[1,2]", status = 422, code = "validation_error" },
        { body = "", status = 400, code = "missing_body" },
        { json = { ttl_seconds = 10 }, status = 422, field = "payload" },
        { json = { payload = "text" }, status = 422, field = "payload" },
        { json = { payload = {}, ttl_seconds = "soon" }, status = 422, field = "ttl_seconds" },
        { json = { payload = {}, ttl_seconds = 0 }, status = 422, field = "ttl_seconds" },
        { json = { payload = {}, model = 5 }, status = 422, field = "model" },
        { json = { payload = {}, constraints = { min_vram_gb = "lots" } }, status = 422, field = "min_vram_gb" },
        { json = { payload = {}, constraints = { max_price = "-1" } }, status = 422, field = "constraints.max_price" },
      }
      for _, c in ipairs(cases) do
        local status, body = node:request("POST", "/v1/jobs", { key = client, body = c.body, json = c.json })
        assert.equal(c.status, status, json.encode(c))
        assert.is_table(body.error, json.encode(c))
        if c.code then assert.equal(c.code, body.error.code) end
        if c.field then assert.equal(c.field, body.error.field) end
        assert.is_string(body.error.message)
      end
      local status, body = node:request("POST", "/v1/jobs", { key = client, body = string.rep("x", 2 << 20) })
      assert.equal(413, status)
      assert.equal("payload_too_large", body.error.code)
      assert.equal(404, (node:request("GET", "/v1/nowhere", { key = client })))
      local s405, b405 = node:request("PUT", "/v1/jobs", { key = client })
      assert.equal(405, s405)
      assert.equal("method_not_allowed", b405.error.code)
      assert.equal(200, (node:request("GET", "/health")))
    end)
  end)

  describe("jobs and miners", function()
    -- a node of its own for each test, so that each passes alone and in any order
    local shared
    before_each(function()
      shared = { node, client, client2, miner, miner2 }
      node = nodes.start { args = { "--log-level", "warn" } }
      client, client2, miner, miner2 = node:key("client"), node:key("client"), node:key("miner"), node:key("miner")
    end)
    after_each(function()
      node:stop()
      node, client, client2, miner, miner2 = table.unpack(shared)
    end)

    --- Miner miner_id (key) takes the next job and completes it; returns the job.
    local function complete(key, miner_id, result)
      local s, job = poll(key, miner_id)
      assert.equal(200, s)
      assert.equal(200, (node:request("POST", "/v1/miners/" .. job.job_id .. "/result", { key = key,
        headers = { ["X-Miner-ID"] = miner_id }, json = { result = result or "ok" } })))
      return job
    end

    it("runs a job QUEUED -> RUNNING -> COMPLETED with a receipt signed by the node", function()
      local job = submit { payload = { prompt = "Hello AITBC" }, model = "llama3", ttl_seconds = 60 }
      assert.equal("QUEUED", job.state)
      assert.equal(32, #job.job_id)
      local status, body = node:request("GET", "/v1/jobs/" .. job.job_id .. "/result", { key = client })
      assert.equal(425, status)
      assert.equal("not_ready", body.error.code)
      local m = register(miner, { capabilities = { gpus = { { name = "RTX 4090", memory_gb = 24 } }, models = { "llama3:latest" } },
        price_per_hour = "0.5", miner_id = "rig-1" })
      assert.equal("rig-1", m.miner_id)
      assert.equal("0.5", m.price_per_hour)
      local s, assigned = poll(miner, "rig-1")
      assert.equal(200, s)
      assert.equal(job.job_id, assigned.job_id)
      assert.equal("Hello AITBC", assigned.payload.prompt)
      local _, running = node:request("GET", "/v1/jobs/" .. job.job_id, { key = client })
      assert.equal("RUNNING", running.state)
      assert.equal("rig-1", running.assigned_miner_id)
      local s2, done = node:request("POST", "/v1/miners/" .. job.job_id .. "/result", { key = miner,
        headers = { ["X-Miner-ID"] = "rig-1" }, json = { result = { response = "Hi!" }, metrics = { eval_count = 3, prompt_eval_count = 4 } } })
      assert.equal(200, s2, json.encode(done))
      local s3, result = node:request("GET", "/v1/jobs/" .. job.job_id .. "/result", { key = client })
      assert.equal(200, s3)
      assert.equal("Hi!", result.result.response)
      local r = result.receipt
      assert.equal(job.job_id, r.job_id)
      assert.equal("rig-1", r.provider)
      assert.equal(3, r.tokens.completion)
      assert.equal(4, r.tokens.prompt)
      assert.equal("sha256:" .. crypto.hex(crypto.sha256(json.encode { response = "Hi!" })), r.result_hash)
      local _, h = node:request("GET", "/health")
      local pk = crypto.unbase64(h.node_key, "urlsafe")
      assert.is_true(receipts.verify(r, pk))
      r.provider = "someone-else"
      assert.is_nil((receipts.verify(r, pk)))
      local _, final = node:request("GET", "/v1/jobs/" .. job.job_id, { key = client })
      assert.equal("COMPLETED", final.state)
      assert.is_number(final.timings.queue_ms)
      assert.is_number(final.timings.run_ms)
    end)

    it("answers 204 when there is nothing, and long-polls until a job arrives", function()
      register(miner2, { miner_id = "idle-1" })
      local s = poll(miner2, "idle-1", 0)
      assert.equal(204, s)
      local results = require("aitbc.http").request_many {
        { method = "POST", url = node.url .. "/v1/miners/poll", headers = { ["X-Api-Key"] = miner2, ["X-Miner-ID"] = "idle-1" },
          body = '{"max_wait_seconds": 10}', timeout = 20 },
        { method = "POST", url = node.url .. "/v1/jobs", headers = { ["X-Api-Key"] = client2 },
          body = '{"payload":{"prompt":"late"}}' },
      }
      assert.equal(201, results[2].status)
      assert.equal(200, results[1].status)
      local late = json.decode(results[1].body)
      assert.equal("late", late.payload.prompt)
      assert.is_true(results[1].time < 9)
      assert.equal(200, (node:request("POST", "/v1/miners/" .. late.job_id .. "/result", { key = miner2,
        headers = { ["X-Miner-ID"] = "idle-1" }, json = { result = "ok" } })))
    end)

    it("gives a job only to a miner whose capabilities fit", function()
      local picky = node:key("miner")
      register(picky, { miner_id = "small-gpu", capabilities = { gpus = { { name = "GTX 1060", memory_gb = 6 } }, models = { "phi3" } } })
      local big = node:key("miner")
      register(big, { miner_id = "big-gpu", capabilities = { gpus = { { name = "A100", memory_gb = 80 } } } })
      local job = submit { payload = { prompt = "x" }, model = "llama3:70b", constraints = { min_vram_gb = 40 } }
      assert.equal(204, (poll(picky, "small-gpu")))
      local s, assigned = poll(big, "big-gpu")
      assert.equal(200, s)
      assert.equal(job.job_id, assigned.job_id)
      node:request("POST", "/v1/miners/" .. job.job_id .. "/fail", { key = big, json = { error_code = "OOM", error_message = "out of memory" } })
    end)

    it("finds the job a miner fits behind many it does not (the queue is read a page at a time)", function()
      local small = node:key("miner")
      register(small, { miner_id = "deep-small", capabilities = { gpus = { { name = "RTX 3060", memory_gb = 12 } },
        models = { "deepmodel" } } })
      local big_ones = {}
      for i = 1, 70 do
        big_ones[i] = submit { payload = { prompt = "big " .. i }, model = "deepmodel", constraints = { min_vram_gb = 48 } }
      end
      local fits = submit { payload = { prompt = "small" }, model = "deepmodel", constraints = { min_vram_gb = 8 } }
      local s, got = poll(small, "deep-small")
      assert.equal(200, s)
      assert.equal(fits.job_id, got.job_id)
      for _, j in ipairs(big_ones) do node:request("POST", "/v1/jobs/" .. j.job_id .. "/cancel", { key = client }) end
      node:request("POST", "/v1/miners/" .. got.job_id .. "/result", { key = small, headers = { ["X-Miner-ID"] = "deep-small" },
        json = { result = "ok" } })
    end)

    it("gives a job only to a miner whose GPU name, region and price fit", function()
      local rigs = {
        { id = "gtx-eu-0.1", gpu = "GeForce GTX 1060", region = "eu", price = "0.1" },
        { id = "rtx-us-0.2", gpu = "NVIDIA GeForce RTX 4090", region = "us", price = "0.2" },
        { id = "rtx-eu-2", gpu = "RTX 4090", region = "eu", price = "2" },
      }
      for _, rig in ipairs(rigs) do
        rig.key = node:key("miner")
        register(rig.key, { miner_id = rig.id, region = rig.region, price_per_hour = rig.price,
          capabilities = { gpus = { { name = rig.gpu, memory_gb = 24 } } } })
      end
      for _, case in ipairs {
        { { gpu = "gtx" }, "gtx-eu-0.1" },
        { { gpu = "4090", region = "eu" }, "rtx-eu-2" },
        { { region = "eu", max_price = "0.5" }, "gtx-eu-0.1" },
        { { gpu = "rtx 4090", max_price = "0.5" }, "rtx-us-0.2" },
        { { region = "ap" }, nil },
      } do
        local job = submit { payload = { prompt = "fit" }, constraints = case[1] }
        local what = json.encode(case[1])
        for _, rig in ipairs(rigs) do -- those that do not fit first: none of them may take it
          if rig.id ~= case[2] then assert.equal(204, (poll(rig.key, rig.id)), rig.id .. " took " .. what) end
        end
        for _, rig in ipairs(rigs) do
          if rig.id == case[2] then
            local s, got = poll(rig.key, rig.id)
            assert.equal(200, s, rig.id .. " did not get " .. what)
            assert.equal(job.job_id, got.job_id)
            node:request("POST", "/v1/miners/" .. job.job_id .. "/result", { key = rig.key,
              headers = { ["X-Miner-ID"] = rig.id }, json = { result = "ok" } })
          end
        end
      end
    end)

    it("accepts a result only from the assigned miner", function()
      register(miner2, { miner_id = "idle-1" })
      local job = submit { payload = { prompt = "mine" } }
      local other = node:key("miner")
      register(other, { miner_id = "thief" })
      local s, assigned = poll(miner2, "idle-1")
      assert.equal(200, s)
      assert.equal(job.job_id, assigned.job_id)
      local s2, body = node:request("POST", "/v1/miners/" .. job.job_id .. "/result", { key = other,
        headers = { ["X-Miner-ID"] = "thief" }, json = { result = "stolen" } })
      assert.equal(409, s2)
      assert.equal("not_assigned", body.error.code)
      local s3 = node:request("POST", "/v1/miners/" .. job.job_id .. "/result", { key = client, json = { result = "x" } })
      assert.equal(403, s3)
      local s4, b4 = node:request("POST", "/v1/miners/" .. job.job_id .. "/result", { key = miner2,
        headers = { ["X-Miner-ID"] = "thief" }, json = { result = "x" } })
      assert.equal(403, s4, json.encode(b4))
      local s5, b5 = node:request("POST", "/v1/miners/" .. job.job_id .. "/result", { key = miner2,
        headers = { ["X-Miner-ID"] = "idle-1" }, json = {} })
      assert.equal(422, s5)
      assert.equal("result", b5.error.field)
      assert.equal(200, (node:request("POST", "/v1/miners/" .. job.job_id .. "/result", { key = miner2,
        headers = { ["X-Miner-ID"] = "idle-1" }, json = { result = "mine" } })))
    end)

    it("records a failure with its reason: FAILED, and the result says why", function()
      register(miner2, { miner_id = "idle-1" })
      local job = submit { payload = { prompt = "boom" } }
      local _, assigned = poll(miner2, "idle-1")
      assert.equal(job.job_id, assigned.job_id)
      local s = node:request("POST", "/v1/miners/" .. job.job_id .. "/fail", { key = miner2,
        headers = { ["X-Miner-ID"] = "idle-1" }, json = { error_code = "INFERENCE_FAILED", error_message = "model not found" } })
      assert.equal(200, s)
      local _, view = node:request("GET", "/v1/jobs/" .. job.job_id, { key = client })
      assert.equal("FAILED", view.state)
      assert.equal("INFERENCE_FAILED: model not found", view.error)
      local s2, body = node:request("GET", "/v1/jobs/" .. job.job_id .. "/result", { key = client })
      assert.equal(409, s2)
      assert.equal("job_failed", body.error.code)
      assert.matches("model not found", body.error.message)
    end)

    it("cancels queued and running jobs, frees the miner, and refuses to cancel twice", function()
      register(miner2, { miner_id = "idle-1" })
      local job = submit { payload = { prompt = "cancel me" } }
      local _, assigned = poll(miner2, "idle-1")
      assert.equal(job.job_id, assigned.job_id)
      local s, canceled = node:request("POST", "/v1/jobs/" .. job.job_id .. "/cancel", { key = client })
      assert.equal(200, s)
      assert.equal("CANCELED", canceled.state)
      assert.equal(409, (node:request("POST", "/v1/jobs/" .. job.job_id .. "/cancel", { key = client })))
      assert.equal(409, (node:request("POST", "/v1/miners/" .. job.job_id .. "/result", { key = miner2,
        headers = { ["X-Miner-ID"] = "idle-1" }, json = { result = "late" } })))
      local next_job = submit { payload = { prompt = "next" } }
      local s2, got = poll(miner2, "idle-1")
      assert.equal(200, s2) -- the slot was freed
      assert.equal(next_job.job_id, got.job_id)
      node:request("POST", "/v1/miners/" .. got.job_id .. "/result", { key = miner2, headers = { ["X-Miner-ID"] = "idle-1" },
        json = { result = "ok" } })
    end)

    it("expires a job past its TTL", function()
      local job = submit { payload = { prompt = "too slow" }, ttl_seconds = 1, model = "no-such-model" }
      cli.wait_for("the job to expire", function()
        local _, view = node:request("GET", "/v1/jobs/" .. job.job_id, { key = client })
        assert.is_true(view.state == "QUEUED" or view.state == "EXPIRED", view.state)
        return view.state == "EXPIRED"
      end)
      assert.equal(409, (node:request("GET", "/v1/jobs/" .. job.job_id .. "/result", { key = client })))
    end)

    it("keeps each client's jobs to itself; lists with filters and paging", function()
      register(miner, { miner_id = "rig-1" })
      local done = {}
      for i = 1, 3 do
        submit { payload = { prompt = "done " .. i } }
        done[complete(miner, "rig-1").job_id] = true
      end
      local queued = submit { payload = { prompt = "still queued" } }
      local job = submit({ payload = { prompt = "private" } }, client2)
      assert.equal(404, (node:request("GET", "/v1/jobs/" .. job.job_id, { key = client })))
      assert.equal(200, (node:request("GET", "/v1/jobs/" .. job.job_id, { key = node.admin_key })))
      local _, list = node:request("GET", "/v1/jobs?state=COMPLETED&limit=2", { key = client })
      assert.equal(2, #list.items)
      assert.equal(3, list.total)
      for _, j in ipairs(list.items) do
        assert.equal("COMPLETED", j.state)
        assert.is_true(done[j.job_id])
      end
      local _, all = node:request("GET", "/v1/jobs", { key = client })
      assert.equal(4, all.total) -- client2's job is not among them
      assert.equal(queued.job_id, all.items[1].job_id) -- newest first
      local s, bad = node:request("GET", "/v1/jobs?state=DONE", { key = client })
      assert.equal(422, s)
      assert.equal("state", bad.error.field)
      node:request("POST", "/v1/jobs/" .. job.job_id .. "/cancel", { key = client2 })
    end)

    it("handles heartbeats, miner status and unknown miners", function()
      register(miner2, { miner_id = "idle-1" })
      submit { payload = { prompt = "one" } }
      complete(miner2, "idle-1")
      assert.equal(200, (node:request("POST", "/v1/miners/heartbeat", { key = miner2, headers = { ["X-Miner-ID"] = "idle-1" }, json = {} })))
      local _, me = node:request("GET", "/v1/miners/me", { key = miner2, headers = { ["X-Miner-ID"] = "idle-1" } })
      assert.equal("ONLINE", me.status)
      assert.equal(1, me.jobs_completed)
      local s, body = node:request("POST", "/v1/miners/heartbeat", { key = miner2, headers = { ["X-Miner-ID"] = "ghost" }, json = {} })
      assert.equal(404, s)
      assert.equal("miner_not_registered", body.error.code)
      local fresh = node:key("miner")
      assert.equal(404, (node:request("POST", "/v1/miners/poll", { key = fresh, json = {} })))
      local s2 = node:request("POST", "/v1/miners/register", { key = fresh, json = { miner_id = "idle-1" } })
      assert.equal(409, s2) -- someone else's miner id
    end)

    it("reports stats and miners to admins", function()
      register(miner, { miner_id = "rig-1" })
      register(miner2, { miner_id = "rig-2" })
      submit { payload = { prompt = "one" } }
      complete(miner, "rig-1")
      submit { payload = { prompt = "two" } }
      local s, stats = node:request("GET", "/v1/admin/stats", { key = node.admin_key })
      assert.equal(200, s)
      assert.equal(2, stats.total_jobs)
      assert.equal(2, stats.miners_online)
      local _, miners = node:request("GET", "/v1/admin/miners", { key = node.admin_key })
      assert.equal(2, #miners.items)
    end)
  end)
end)

describe("node lifecycle", function()
  after_each(cli.cleanup)

  it("re-queues the job of a miner that stops heart-beating, and another miner completes it", function()
    local node = nodes.start { args = { "--heartbeat-timeout", "1" } }
    local client = node:key("client")
    local m1, m2 = node:key("miner"), node:key("miner")
    node:request("POST", "/v1/miners/register", { key = m1, json = { miner_id = "dies" } })
    local _, job = node:request("POST", "/v1/jobs", { key = client, json = { payload = { prompt = "survive" } } })
    local _, got = node:request("POST", "/v1/miners/poll", { key = m1, json = {} })
    assert.equal(job.job_id, got.job_id)
    node:request("POST", "/v1/miners/register", { key = m2, json = { miner_id = "lives" } })
    -- "dies" falls silent: once past --heartbeat-timeout its job is re-queued, which wakes this poll
    local s, again = node:request("POST", "/v1/miners/poll", { key = m2, json = { max_wait_seconds = 20 } })
    assert.equal(200, s)
    assert.equal(job.job_id, again.job_id)
    assert.equal(2, again.attempt)
    assert.equal(409, (node:request("POST", "/v1/miners/" .. job.job_id .. "/result", { key = m1, json = { result = "late" } })))
    assert.equal(200, (node:request("POST", "/v1/miners/" .. job.job_id .. "/result", { key = m2, json = { result = "done" } })))
    assert.equal(143, node:stop()) -- SIGTERM: a graceful stop, exit 128 + 15
  end)

  it("shuts down gracefully on SIGTERM, finishing a request in flight", function()
    local node = nodes.start()
    local m = node:key("miner")
    node:request("POST", "/v1/miners/register", { key = m, json = {} })
    local http = require "aitbc.http"
    -- a long poll in flight while the node is told to stop
    local poller = assert(cli.spawn { argv = { cli.bin, "--url", node.url, "--api-key", m, "api", "POST",
      "/v1/miners/poll", "-d", '{"max_wait_seconds": 20}' }, stdout = "pipe", stderr = "pipe" })
    cli.wait_for("the poll to wait on the node", function()
      local _, _, res = node:request("GET", "/metrics")
      return tonumber(res.body:match("\naitbc_http_waiting (%d+)")) == 1
    end)
    node.proc:kill(15)
    local code = node.proc:communicate(nil, 15)
    node.proc = nil
    assert.equal(143, code) -- stopped by SIGTERM (128 + 15), after a graceful shutdown
    local pcode = poller:communicate(nil, 15)
    assert.equal(0, pcode) -- answered (204), not cut off
    local res, err = http.request { url = node.url .. "/health", timeout = 2 }
    assert.is_nil(res)
    assert.equal("connect", err.code)
  end)

  it("takes bodies up to --max-body and refuses larger ones with 413 (1 MiB by default)", function()
    --- A job submission of exactly size bytes of JSON.
    local function body_of(size)
      local empty = '{"payload":{"prompt":""}}'
      return '{"payload":{"prompt":"' .. string.rep("a", size - #empty) .. '"}}'
    end
    local small = nodes.start { args = { "--max-body", "2048", "--log-level", "warn" } }
    local key = small:key("client")
    assert.equal(201, (small:request("POST", "/v1/jobs", { key = key, body = body_of(2048) })))
    local s, err = small:request("POST", "/v1/jobs", { key = key, body = body_of(2049) })
    assert.equal(413, s)
    assert.equal("payload_too_large", err.error.code)
    local default = nodes.start { args = { "--log-level", "warn" } }
    key = default:key("client")
    -- 1 MiB is read (and refused for its content: a prompt holds at most 256 KiB), one byte more is not
    local s1, e1 = default:request("POST", "/v1/jobs", { key = key, body = body_of(1 << 20) })
    assert.same({ 422, "payload.prompt" }, { s1, e1.error.field })
    assert.equal(413, (default:request("POST", "/v1/jobs", { key = key, body = body_of((1 << 20) + 1) })))
    local r = cli.run { "serve", "--max-body", "100", "--listen", "127.0.0.1:0", "--data-dir", cli.tempdir() }
    assert.equal(2, r.code)
    assert.matches("%-%-max%-body", r.err)
  end)

  it("runs --handler-slots handlers at once; a waiting long poll holds none of them", function()
    local function threads(node) -- of the node's process (its supervisor's child: /health names it)
      local _, health = node:request("GET", "/health")
      return #assert(sys.list_dir("/proc/" .. health.pid .. "/task"))
    end
    local one = nodes.start { args = { "--handler-slots", "1", "--log-level", "warn" } }
    local five = nodes.start { args = { "--handler-slots", "5", "--log-level", "warn" } }
    assert.equal(4, threads(five) - threads(one)) -- one thread per slot
    five:stop()
    -- with its one slot free while a miner's poll waits, the node answers others, and the poll gets their job
    local m, c = one:key("miner"), one:key("client")
    one:request("POST", "/v1/miners/register", { key = m, json = { miner_id = "waiting" } })
    local poller = assert(cli.spawn { argv = { cli.bin, "--url", one.url, "--api-key", m, "-o", "json", "api", "POST",
      "/v1/miners/poll", "-d", '{"max_wait_seconds": 20}' }, stdout = "pipe", stderr = "pipe" })
    cli.wait_for("the poll to wait on the node", function()
      local _, _, res = one:request("GET", "/metrics")
      return tonumber(res.body:match("\naitbc_http_waiting (%d+)")) == 1
    end)
    local s, job = one:request("POST", "/v1/jobs", { key = c, json = { payload = { prompt = "for the waiting miner" } } })
    assert.equal(201, s)
    local code, out, err = poller:communicate(nil, 30)
    assert.equal(0, code, err)
    assert.equal(job.job_id, json.decode(out).job_id)
    assert.equal(2, cli.run({ "serve", "--handler-slots", "0", "--listen", "127.0.0.1:0", "--data-dir", cli.tempdir() }).code)
  end)

  it("stops gracefully on Ctrl-C (SIGINT) and exits 130, as the README promises", function()
    local node = nodes.start()
    node.proc:kill(2)
    local code, _, err = node.proc:communicate(nil, 15)
    node.proc = nil
    assert.equal(130, code)
    assert.matches("node stopped", err)
  end)

  it("refuses a port in use and a bad --listen", function()
    local node = nodes.start()
    local port = node.url:match(":(%d+)$")
    local r = cli.run { "serve", "--listen", "127.0.0.1:" .. port, "--data-dir", cli.tempdir() }
    assert.equal(1, r.code)
    assert.matches("cannot listen on 127.0.0.1:" .. port, r.err)
    r = cli.run { "serve", "--listen", "localhost" }
    assert.equal(2, r.code)
    assert.matches("IPv4:PORT", r.err)
    node:stop()
  end)

  it("runs detached with a pid file and stops on SIGTERM", function()
    local dir = cli.tempdir()
    local r = cli.run({ "-o", "json", "serve", "--detach", "--listen", "127.0.0.1:0", "--data-dir", dir }, { home = dir })
    assert.equal(0, r.code, r.err)
    local info = r.json()
    assert.matches("^http://127%.0%.0%.1:%d+$", info.url)
    local pid = cli.adopt(tonumber(assert(sys.read_file(dir .. "/node.pid"))))
    assert.equal(info.pid, pid)
    assert.equal(200, require("aitbc.http").request { url = info.url .. "/health" }.status)
    assert.is_true(sys.kill(pid, 15))
    cli.wait_for("the node to remove its pid file", function() return not sys.stat(dir .. "/node.pid") end)
    cli.wait_for("the node to exit", function() return not cli.alive(pid) end)
  end)
end)
