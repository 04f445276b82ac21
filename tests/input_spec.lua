-- Hostile input at the node's door: non-finite and out-of-range numbers,
-- nesting the node could not read back, invalid UTF-8.  Each case goes
-- through the real node, and nothing it refuses may leave a row behind.
local cli = require "support.cli"
local json = require "aitbc.json"
local nodes = require "support.node"
local util = require "aitbc.node.util"

describe("node input", function()
  local node, client, miner, gpu_miner
  setup(function()
    node = nodes.start()
    client = node:key("client")
    miner = node:key("miner")
    gpu_miner = node:key("miner")
  end)
  teardown(function()
    node:stop()
    cli.cleanup()
  end)
  -- jobs a test left queued are canceled: another test's miner must not take them (tests run in any order)
  after_each(function()
    local _, queued = node:request("GET", "/v1/admin/jobs?state=QUEUED&limit=500", { key = node.admin_key })
    for _, j in ipairs(queued.items) do node:request("POST", "/v1/jobs/" .. j.job_id .. "/cancel", { key = node.admin_key }) end
  end)

  -- raw JSON text as the body (NaN and 1e999 cannot be encoded)
  local function post(path, key, text, headers)
    local h = { ["Content-Type"] = "application/json" }
    for k, v in pairs(headers or {}) do h[k] = v end
    return node:request("POST", path, { key = key, body = text, headers = h, timeout = 10 })
  end

  local function keys_count()
    local status, list = node:request("GET", "/v1/admin/keys", { key = node.admin_key })
    assert.equal(200, status)
    return #list.items
  end

  local function alive()
    local status, h = node:request("GET", "/health", { timeout = 5 })
    assert.equal(200, status)
    assert.equal("ok", h.status)
  end

  describe("numbers", function()
    local NON_FINITE = { "NaN", "-NaN", "Infinity", "-Infinity", "1e999", "-1e999", "0x10" }

    it("refuses non-finite numbers in every body, naming where the decoder stopped", function()
      for _, n in ipairs(NON_FINITE) do
        local status, body = post("/v1/jobs", client, '{"payload": {"x": ' .. n .. '}}')
        assert.equal(400, status, n)
        assert.equal("invalid_json", body.error.code, n)
      end
      local status, body = post("/v1/jobs", client, '{"payload": {"deep": [1, {"x": 1e999}]}}')
      assert.equal(400, status)
      assert.equal("payload.deep[2].x", body.error.field)
      assert.matches("payload.deep%[2%].x", body.error.message)
    end)

    it("a miner's poll with max_wait_seconds NaN is refused and the node keeps answering", function()
      local status = post("/v1/miners/register", miner, '{"miner_id": "nan-poller"}')
      assert.equal(200, status)
      for _, n in ipairs(NON_FINITE) do
        local s, body = post("/v1/miners/poll", miner, '{"max_wait_seconds": ' .. n .. "}")
        assert.equal(400, s, n)
        assert.equal("invalid_json", body.error.code)
      end
      local s, body = post("/v1/miners/poll", miner, '{"max_wait_seconds": 1e308}')
      assert.equal(422, s)
      assert.equal("max_wait_seconds", body.error.field)
      alive()
    end)

    it("a job with min_vram_gb NaN is refused and GPU miners' polls keep working", function()
      for _, n in ipairs(NON_FINITE) do
        local s = post("/v1/jobs", client, '{"payload": {}, "constraints": {"min_vram_gb": ' .. n .. "}}")
        assert.equal(400, s, n)
      end
      local s, body = post("/v1/jobs", client, '{"payload": {}, "constraints": {"min_vram_gb": 1e300}}')
      assert.equal(422, s)
      assert.equal("min_vram_gb", body.error.field)
      s = post("/v1/miners/register", gpu_miner,
        json.encode { miner_id = "gpu-poller", capabilities = { gpus = { { name = "RTX 4090", memory_gb = 24 } } } })
      assert.equal(200, s)
      s = post("/v1/miners/poll", gpu_miner, '{"max_wait_seconds": 0}')
      assert.is_true(s == 200 or s == 204, tostring(s))
    end)

    it("refuses vram_gb NaN or out of range at GPU registration and leaves no listing", function()
      for _, v in ipairs { "NaN", "1e999", "-Infinity" } do
        local s = post("/v1/marketplace/gpu/register", miner, '{"model": "RTX 4090", "hourly_rate": "1", "vram_gb": ' .. v .. "}")
        assert.equal(400, s, v)
      end
      for _, v in ipairs { "0", "-1", "1e308", '"24"', "4097" } do
        local s, body = post("/v1/marketplace/gpu/register", miner,
          '{"model": "RTX 4090", "hourly_rate": "1", "vram_gb": ' .. v .. "}")
        assert.equal(422, s, v)
        assert.equal("vram_gb", body.error.field)
      end
      local _, own = node:request("GET", "/v1/marketplace/gpu/mine", { key = miner })
      assert.equal(0, #own.items)
    end)

    it("refuses expires_in_days NaN or out of range and creates no key", function()
      local before = keys_count()
      for _, v in ipairs { "NaN", "Infinity", "1e999" } do
        local s = post("/v1/admin/keys", node.admin_key, '{"role": "client", "expires_in_days": ' .. v .. "}")
        assert.equal(400, s, v)
      end
      for _, v in ipairs { "0", "-1", "1e308", '"soon"' } do
        local s, body = post("/v1/admin/keys", node.admin_key, '{"role": "client", "expires_in_days": ' .. v .. "}")
        assert.equal(422, s, v)
        assert.equal("expires_in_days", body.error.field)
      end
      assert.equal(before, keys_count())
    end)

    it("answers hostile values for each route's fields with 4xx naming the field, and stores nothing", function()
      local listing_status, listing = post("/v1/marketplace/gpu/register", gpu_miner,
        '{"model": "A100", "vram_gb": 80, "hourly_rate": "2"}')
      assert.equal(201, listing_status)
      local gpu = "/v1/marketplace/gpu/" .. listing.listing_id
      local cases = {
        -- path, key, body, field
        { "/v1/jobs", client, '{"payload": {}, "ttl_seconds": 1e300}', "ttl_seconds" },
        { "/v1/jobs", client, '{"payload": {}, "ttl_seconds": 1.5}', "ttl_seconds" },
        { "/v1/jobs", client, '{"payload": {}, "constraints": {"max_price": 1e300}}', "constraints.max_price" },
        { "/v1/jobs", client, '{"payload": {}, "constraints": {"max_price": "9300000000"}}', "constraints.max_price" },
        { "/v1/jobs", client, '{"payload": {}, "constraints": {"models": [1]}}', "models[1]" },
        { "/v1/jobs", client, '{"payload": {}, "constraints": {"models": {"a": "b"}}}', "models" },
        { "/v1/jobs", client, '{"payload": {}, "constraints": {"models": ["' .. string.rep("m", 201) .. '"]}}', "models[1]" },
        { "/v1/miners/register", miner, '{"price_per_hour": "9300000000"}', "price_per_hour" },
        { "/v1/miners/register", miner, '{"price_per_hour": "1000001"}', "price_per_hour" },
        { "/v1/miners/register", miner, '{"concurrency": 1e300}', "concurrency" },
        { "/v1/miners/register", miner, '{"capabilities": {"gpus": [{"name": "x", "memory_gb": -1}]}}',
          "capabilities.gpus[1].memory_gb" },
        { "/v1/miners/register", miner, '{"capabilities": {"gpus": [{"name": "x", "count": 1e300}]}}',
          "capabilities.gpus[1].count" },
        { "/v1/miners/register", miner, '{"capabilities": {"gpus": {"name": "x"}}}', "capabilities.gpus" },
        { "/v1/miners/register", miner, '{"capabilities": {"cpu": 5}}', "capabilities.cpu" },
        { "/v1/miners/register", miner, "{}", "miner_id", { ["X-Miner-ID"] = string.rep("m", 65) } },
        { "/v1/miners/register", miner, '{"capabilities": {"gpus": [' .. string.rep('{"name": "g"},', 64) .. '{"name": "g"}]}}',
          "capabilities.gpus" },
        { "/v1/marketplace/gpu/register", gpu_miner, '{"model": "A", "vram_gb": 8, "hourly_rate": "1e3"}', "hourly_rate" },
        { "/v1/marketplace/gpu/register", gpu_miner, '{"model": "A", "vram_gb": 8, "hourly_rate": "2000000"}', "hourly_rate" },
        { "/v1/marketplace/gpu/register", gpu_miner, '{"model": "A", "vram_gb": 8, "hourly_rate": "1", "count": 0}', "count" },
        { "/v1/marketplace/gpu/register", gpu_miner,
          '{"model": "A", "vram_gb": 8, "hourly_rate": "1", "payout_address": "nowhere"}', "payout_address" },
        { "/v1/admin/keys", node.admin_key, '{"role": "client", "expires_in_days": 1e-300}', "expires_in_days" },
        { "/v1/chain/ait-devnet/faucet", client, '{"address": "x", "amount": 1e300}', "address" },
      }
      local admin_keys = keys_count()
      local _, jobs_before = node:request("GET", "/v1/jobs", { key = client })
      for _, c in ipairs(cases) do
        local s, body = post(c[1], c[2], c[3], c[5])
        assert.is_true(s == 400 or s == 422, c[3] .. " -> " .. tostring(s))
        assert.equal(c[4], body.error.field, c[3])
      end
      for _, c in ipairs {
        { '{"vram_gb": NaN}', 400 }, { '{"vram_gb": 1e300}', 422 }, { '{"vram_gb": 0}', 422 },
        { '{"count": 1e300}', 422 }, { '{"hourly_rate": "-1"}', 422 }, { '{"payout_address": "x"}', 422 },
      } do
        local s = node:request("PATCH", gpu, { key = gpu_miner, body = c[1], headers = { ["Content-Type"] = "application/json" } })
        assert.equal(c[2], s, c[1])
      end
      -- nothing stored: no job, no extra listing, no key, the listing unchanged
      local _, jobs_after = node:request("GET", "/v1/jobs", { key = client })
      assert.equal(jobs_before.total, jobs_after.total)
      local _, miners = node:request("GET", "/v1/admin/miners", { key = node.admin_key })
      for _, m in ipairs(miners.items) do assert.is_true(#m.miner_id <= 64) end
      assert.equal(admin_keys, keys_count())
      local _, own = node:request("GET", "/v1/marketplace/gpu/mine", { key = gpu_miner })
      assert.equal(1, #own.items)
      assert.equal(80, own.items[1].vram_gb)
      assert.equal("2", own.items[1].hourly_rate)
      alive()
    end)

    it("keeps amounts at the highest rate exact: receipts over a day, the market's average over many listings", function()
      local receipts = require "aitbc.node.receipts"
      local now = 1.7e9
      local job = { job_id = "j", client_key_id = "k", model = "m", requested_at = now - 86400, started_at = now - 86400 }
      local receipt = receipts.build(job, { miner_id = "m", price_units = util.MAX_RATE_UNITS }, {}, {}, now)
      assert.equal(util.MAX_RATE_UNITS * 24, receipt.price_units)
      -- enough listings at the highest rate that their plain sum would pass 2^63
      local n = math.tointeger(2 ^ 63 // util.MAX_RATE_UNITS + 2)
      local provider = node:key("miner")
      local batch = {}
      for i = 1, n do -- one region each: the same GPU in one place is one listing
        batch[#batch + 1] = { method = "POST", url = node.url .. "/v1/marketplace/gpu/register",
          headers = { ["X-Api-Key"] = provider, ["Content-Type"] = "application/json" },
          body = '{"model": "Overflow 9000", "vram_gb": 8, "hourly_rate": "1000000", "region": "r' .. i .. '"}' }
        if #batch == 256 or i == n then
          for _, res in ipairs(require("aitbc.http").request_many(batch)) do assert.equal(201, res.status) end
          batch = {}
        end
      end
      local s, pricing = node:request("GET", "/v1/marketplace/pricing/Overflow%209000")
      assert.equal(200, s)
      assert.equal(n, pricing.listings.count)
      assert.equal("1000000", pricing.listings.average)
      assert.equal("1000000", pricing.suggested_hourly_rate)
    end)

    it("answers 404, not 500, to an update racing the listing's removal", function()
      local provider = node:key("miner")
      local http = require "aitbc.http"
      local batch, statuses = {}, {}
      for i = 1, 200 do -- each listing updated and removed at once
        local s, l = post("/v1/marketplace/gpu/register", provider,
          '{"model": "Race 1", "vram_gb": 8, "hourly_rate": "1", "region": "r' .. i .. '"}')
        assert.equal(201, s)
        local url = node.url .. "/v1/marketplace/gpu/" .. l.listing_id
        local headers = { ["X-Api-Key"] = provider, ["Content-Type"] = "application/json" }
        batch[#batch + 1] = { method = "PATCH", url = url, headers = headers, body = '{"region": "eu"}' }
        batch[#batch + 1] = { method = "DELETE", url = url, headers = headers }
      end
      for _, res in ipairs(http.request_many(batch)) do
        statuses[#statuses + 1] = res.status
        assert.is_true(res.status == 200 or res.status == 404, tostring(res.status) .. " " .. tostring(res.body))
      end
      assert.equal(400, #statuses)
    end)

    it("refuses query numbers that are not plain whole numbers in range", function()
      for _, q in ipairs { "limit=0x10", "limit=1e2", "limit=nan", "limit=-1", "offset=1e18", "offset=0x1", "offset=-0",
        "limit=99999999999999999999999" } do
        local s, body = node:request("GET", "/v1/jobs?" .. q, { key = client })
        assert.equal(422, s, q)
        assert.equal(q:match("^([%w_]+)="), body.error.field, q)
      end
      for _, q in ipairs { "min_vram=inf", "min_vram=nan", "min_vram=1e999", "limit=1e1", "offset=0x10" } do
        local s, body = node:request("GET", "/v1/marketplace/offers?" .. q)
        assert.equal(422, s, q)
        assert.equal(q:match("^([%w_]+)="), body.error.field, q)
      end
      for _, q in ipairs { "days=1e999", "days=nan", "days=0x10", "limit=1e3" } do
        local s, body = node:request("GET", "/v1/admin/audit?" .. q, { key = node.admin_key })
        assert.equal(422, s, q)
        assert.equal(q:match("^([%w_]+)="), body.error.field, q)
      end
      assert.equal(200, (node:request("GET", "/v1/jobs?limit=10&offset=0", { key = client })))
      assert.equal(200, (node:request("GET", "/v1/marketplace/offers?min_vram=7.5&limit=5")))
      assert.equal(200, (node:request("GET", "/v1/admin/audit?days=0.5&limit=10", { key = node.admin_key })))
    end)
  end)

  describe("nesting", function()
    -- a JSON object nested `levels` deep counting the outer braces
    local function nested(levels)
      return string.rep('{"a":', levels) .. "1" .. string.rep("}", levels)
    end

    it("accepts a payload at the body limit and reads it back on every path; one level more is refused", function()
      local limit = util.MAX_BODY_DEPTH or 32
      -- the body is one level above its payload
      -- an inference payload: a prompt, and the nesting beside it
      local at = '{"model": "deep", "payload": {"prompt": "x", "deep": ' .. nested(limit - 2) .. "}}"
      local beyond = '{"model": "deep", "payload": {"prompt": "x", "deep": ' .. nested(limit - 1) .. "}}"
      local s, body = post("/v1/jobs", client, beyond)
      assert.equal(400, s)
      assert.equal("invalid_json", body.error.code)
      assert.matches("nest", body.error.message)
      local s2, job = post("/v1/jobs", client, at)
      assert.equal(201, s2)
      assert.equal(200, (node:request("GET", "/v1/jobs", { key = client })))
      assert.equal(200, (node:request("GET", "/v1/jobs/" .. job.job_id, { key = client })))
      local deep_miner = node:key("miner")
      assert.equal(200, (post("/v1/miners/register", deep_miner, '{"miner_id": "deep-miner", "capabilities": {"models": ["deep"]}}')))
      local s3, taken = post("/v1/miners/poll", deep_miner, '{"max_wait_seconds": 0}')
      assert.equal(200, s3)
      assert.equal(job.job_id, taken.job_id)
      local s4, mine = node:request("GET", "/v1/miners/jobs", { key = deep_miner })
      assert.equal(200, s4)
      assert.equal(job.job_id, mine.items[1].job_id)
      -- the result as deep as a body allows, read back through /result
      assert.equal(400, (post("/v1/miners/" .. job.job_id .. "/result", deep_miner, '{"result": ' .. nested(limit) .. "}")))
      assert.equal(200, (post("/v1/miners/" .. job.job_id .. "/result", deep_miner, '{"result": ' .. nested(limit - 1) .. "}")))
      local s5, result = node:request("GET", "/v1/jobs/" .. job.job_id .. "/result", { key = client })
      assert.equal(200, s5)
      assert.equal("table", type(result.result.a))
      assert.equal(200, (node:request("GET", "/v1/jobs", { key = client })))
    end)

    it("keeps an account's transaction history readable: nested memos never reach it", function()
      local chain = require "aitbc.node.chain"
      local crypto = require "aitbc.crypto"
      local wallet = require "aitbc.wallet"
      local public, secret = crypto.sign_keypair()
      local from, to = wallet.address(public), wallet.address((crypto.sign_keypair()))
      assert.equal(202, (post("/v1/chain/ait-devnet/faucet", client, json.encode { address = from, amount = "10" })))
      local function transfer(nonce, memo_levels)
        local tx = { chain_id = "ait-devnet", type = "transfer", from = from, public_key = crypto.hex(public), nonce = nonce,
          payload = { to = to, amount = "1", memo = "MEMO" }, timestamp = os.time() }
        -- the memo is raw JSON, so it must be signed as the node will read it
        local memo = nested(memo_levels)
        tx.payload.memo = json.decode(memo)
        local signature = chain.sign(chain.hash(tx), secret)
        return post("/v1/chain/ait-devnet/transactions", nil, json.encode { tx = tx, signature = signature })
      end
      -- body > tx > payload > memo: beyond the depth limit, or refused as a
      -- field a transfer does not have
      local limit = util.MAX_BODY_DEPTH or 32
      assert.equal(400, (transfer(1, limit - 2)))
      assert.equal(400, (transfer(1, 61))) -- fitted the old limit, then broke the history
      assert.equal(400, (transfer(1, limit - 3)))
      local s, history = node:request("GET", "/v1/chain/ait-devnet/accounts/" .. from .. "/transactions")
      assert.equal(200, s)
      assert.equal(1, #history.items) -- the faucet's grant
      s = node:request("GET", "/v1/chain/ait-devnet/transactions/" .. history.items[1].hash)
      assert.equal(200, s)
    end)

    it("refuses what the old limit let in and then could not read back", function()
      -- 63 levels under the payload fitted the old decoder and broke every read
      local s, body = post("/v1/jobs", client, '{"payload": ' .. nested(63) .. "}")
      assert.equal(400, s)
      assert.equal("invalid_json", body.error.code)
      assert.equal(200, (node:request("GET", "/v1/jobs", { key = client })))
    end)
  end)

  describe("UTF-8", function()
    it("refuses invalid UTF-8 in the path, the query and headers with 400, echoing nothing", function()
      for _, path in ipairs { "/v1/jobs%FF", "/v1/jobs/%C0%AF", "/v1/marketplace/pricing/%ED%A0%80" } do
        local s, body, res = node:request("GET", path, { key = client })
        assert.equal(400, s, path)
        assert.equal("invalid_utf8", body.error.code)
        assert.equal("path", body.error.field)
        assert.is_truthy(utf8.len(res.body))
      end
      local s, body = node:request("GET", "/v1/jobs?state=%FF", { key = client })
      assert.equal(400, s)
      assert.equal("query.state", body.error.field)
      s, body = node:request("GET", "/v1/jobs?%FF=1", { key = client })
      assert.equal(400, s)
      assert.equal("query", body.error.field)
      s, body = node:request("GET", "/v1/miners/me", { key = miner, headers = { ["X-Miner-ID"] = "m\xff" } })
      assert.equal(400, s)
      assert.equal("header.x-miner-id", body.error.field)
      -- headers the node does not read are not its business
      s = node:request("GET", "/v1/jobs", { key = client, headers = { ["User-Agent"] = "caf\xe9" } })
      assert.equal(200, s)
    end)

    it("refuses invalid UTF-8 and lone surrogates in bodies and stores nothing", function()
      local _, before = node:request("GET", "/v1/jobs", { key = client })
      for _, text in ipairs {
        '{"payload": {"prompt": "caf\xe9"}}', -- Latin-1
        '{"payload": {"prompt": "\xed\xa0\x80"}}', -- a surrogate in UTF-8
        '{"payload": {"prompt": "\xf4\x90\x80\x80"}}', -- beyond U+10FFFF
        '{"payload": {"prompt": "\xc0\xaf"}}', -- overlong
        '{"payload": {"\xff": 1}}',
      } do
        local s, body, res = post("/v1/jobs", client, text)
        assert.equal(400, s, text)
        assert.equal("invalid_utf8", body.error.code)
        assert.equal("body", body.error.field)
        assert.is_truthy(utf8.len(res.body))
      end
      for _, text in ipairs { '{"payload": {"prompt": "\\ud800"}}', '{"payload": {"prompt": "\\udc00x"}}',
        '{"payload": {"prompt": "\\ud800\\u0041"}}' } do
        local s, body = post("/v1/jobs", client, text)
        assert.equal(400, s, text)
        assert.equal("invalid_json", body.error.code)
      end
      local _, after = node:request("GET", "/v1/jobs", { key = client })
      assert.equal(before.total, after.total)
      -- valid text of every width still goes through, escaped or not
      local s, job = post("/v1/jobs", client, '{"payload": {"prompt": "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \\ud83d\\ude00"}}')
      assert.equal(201, s)
      local _, taken = node:request("GET", "/v1/jobs/" .. job.job_id, { key = client })
      assert.equal(job.job_id, taken.job_id)
    end)
  end)
end)
