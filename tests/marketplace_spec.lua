-- The GPU marketplace on a real node.
local cli = require "support.cli"
local nodes = require "support.node"

describe("marketplace", function()
  -- a node of its own for each test, so that each passes alone and in any order
  local node, provider, other, client
  before_each(function()
    node = nodes.start { args = { "--heartbeat-timeout", "1", "--block-time", "0.2", "--log-level", "warn" } }
    provider, other, client = node:key("miner"), node:key("miner"), node:key("client")
  end)
  after_each(function() node:stop() end)
  teardown(cli.cleanup)


  local function list(key, body)
    local status, l = node:request("POST", "/v1/marketplace/gpu/register", { key = key, json = body })
    assert.equal(201, status, require("aitbc.json").encode(l))
    return l
  end

  local function offers(query)
    local status, res = node:request("GET", "/v1/marketplace/offers?" .. query)
    assert.equal(200, status)
    local ids = {}
    for i, o in ipairs(res.items) do ids[i] = o.model .. "@" .. o.hourly_rate end
    return ids, res
  end

  --- Four RTX 4090 listings, under three spellings of the model: one
  -- provider's in two places, two other providers' (the same GPU listed
  -- again by one provider updates its listing).
  local function list_rtx_4090s()
    list(provider, { model = "RTX 4090", vram_gb = 24, hourly_rate = "0.6", region = "eu" })
    list(node:key("miner"), { model = "NVIDIA GeForce RTX 4090", vram_gb = 24, hourly_rate = "0.4" })
    list(node:key("miner"), { model = "rtx 4090", vram_gb = 24, hourly_rate = "0.9", region = "eu" })
    list(provider, { model = "RTX 4090", vram_gb = 24, hourly_rate = "0.5" })
  end

  it("filters, sorts and pages exactly", function()
    list_rtx_4090s()
    list(other, { model = "A100", vram_gb = 80, hourly_rate = "1.9", region = "us" })
    list(other, { gpu = { name = "H100", memory_gb = 80, price_per_hour = 2.5 } }) -- the older API's shape
    assert.same({ "NVIDIA GeForce RTX 4090@0.4", "RTX 4090@0.5", "RTX 4090@0.6", "rtx 4090@0.9" },
      (offers("model=RTX%204090")))
    assert.same({ "rtx 4090@0.9", "RTX 4090@0.6" }, (offers("model=rtx%204090&region=eu&sort=-price")))
    assert.same({ "A100@1.9", "H100@2.5" }, (offers("min_vram=40")))
    assert.same({ "NVIDIA GeForce RTX 4090@0.4", "RTX 4090@0.5" }, (offers("max_price=0.5")))
    local page, res = offers("model=RTX%204090&limit=2&offset=2")
    assert.same({ "RTX 4090@0.6", "rtx 4090@0.9" }, page)
    assert.equal(4, res.total)
    assert.same({ "H100@2.5", "A100@1.9" }, (offers("min_vram=40&sort=-price")))
  end)

  it("computes the pricing oracle from the listings and completed jobs", function()
    list_rtx_4090s()
    local status, p = node:request("GET", "/v1/marketplace/pricing/RTX%204090")
    assert.equal(200, status)
    assert.same({ count = 4, min = "0.4", p25 = "0.4", median = "0.55", average = "0.6", p75 = "0.6", p90 = "0.9", max = "0.9" },
      p.listings)
    assert.equal("0.55", p.suggested_hourly_rate)
    -- three jobs at 0.8/hour on an RTX 4090 miner: never paid, they paid nothing
    local miner = node:key("miner")
    local payout = require("aitbc.wallet").keys(require("aitbc.wallet.bip39").generate(24)).address
    node:request("POST", "/v1/miners/register", { key = miner, json = { miner_id = "priced",
      capabilities = { gpus = { { name = "RTX 4090", memory_gb = 24 } } }, price_per_hour = "0.8", payout_address = payout } })
    local jobs = {}
    for i = 1, 3 do
      local _, job = node:request("POST", "/v1/jobs", { key = client, json = { payload = { prompt = "x" } } })
      local _, got = node:request("POST", "/v1/miners/poll", { key = miner, json = {} })
      assert.equal(job.job_id, got.job_id)
      node:request("POST", "/v1/miners/" .. job.job_id .. "/result", { key = miner, json = { result = "ok" } })
      jobs[i] = job.job_id
    end
    local _, unpaid = node:request("GET", "/v1/marketplace/pricing?model=rtx%204090")
    assert.equal(0, unpaid.completed_jobs.count)
    assert.equal("0.55", unpaid.suggested_hourly_rate)
    -- paid (funded, then released to the miner): the suggestion moves halfway there
    local home, env = cli.tempdir(), { AITBC_CLIENT_KEY = client, AITBC_WALLET_PASSWORD = "pricing wallet" }
    assert.equal(0, node:cli({ "wallet", "create", "--name", "payer" }, { home = home, env = env }).code)
    assert.equal(0, node:cli({ "wallet", "faucet", "--amount", "10" }, { home = home, env = env }).code)
    for _, id in ipairs(jobs) do
      local paid = node:cli({ "client", "pay", id, "1" }, { home = home, env = env })
      assert.equal(0, paid.code, paid.err)
      assert.matches("released to%s+" .. payout, paid.out)
    end
    local _, p2 = node:request("GET", "/v1/marketplace/pricing?model=rtx%204090")
    assert.equal(3, p2.completed_jobs.count)
    assert.equal("0.8", p2.completed_jobs.median)
    assert.equal("0.675", p2.suggested_hourly_rate)
    assert.matches("midpoint", p2.suggestion_rule)
    assert.equal(404, (node:request("GET", "/v1/marketplace/pricing/GTX%20480")))
  end)

  it("refuses invalid listings and queries, naming the field", function()
    for body, field in pairs {
      [{ model = "RTX 4090", vram_gb = 24, hourly_rate = "-1" }] = "hourly_rate",
      [{ model = "RTX 4090", vram_gb = 0, hourly_rate = "1" }] = "vram_gb",
      [{ vram_gb = 24, hourly_rate = "1" }] = "model",
      [{ model = "RTX 4090", hourly_rate = "1" }] = "vram_gb",
      [{ model = "RTX 4090", vram_gb = 24 }] = "hourly_rate",
      [{ model = "RTX 4090", vram_gb = 24, hourly_rate = "0.1234567891" }] = "hourly_rate",
    } do
      local status, err = node:request("POST", "/v1/marketplace/gpu/register", { key = provider, json = body })
      assert.equal(422, status)
      assert.equal(field, err.error.field)
    end
    local status, err = node:request("GET", "/v1/marketplace/offers?sort=cheapest")
    assert.equal(422, status)
    assert.equal("sort", err.error.field)
    assert.equal(403, (node:request("POST", "/v1/marketplace/gpu/register", { key = client,
      json = { model = "X", vram_gb = 1, hourly_rate = "1" } })))
  end)

  it("lets only the owner change or remove a listing", function()
    local l = list(provider, { model = "L4", vram_gb = 24, hourly_rate = "0.3" })
    local s1, e1 = node:request("PATCH", "/v1/marketplace/gpu/" .. l.listing_id, { key = other, json = { hourly_rate = "0.1" } })
    assert.equal(403, s1)
    assert.equal("not_owner", e1.error.code)
    assert.equal(403, (node:request("DELETE", "/v1/marketplace/gpu/" .. l.listing_id, { key = other })))
    local s2, updated = node:request("PATCH", "/v1/marketplace/gpu/" .. l.listing_id, { key = provider,
      json = { hourly_rate = "0.35", status = "paused" } })
    assert.equal(200, s2)
    assert.equal("0.35", updated.hourly_rate)
    assert.is_false(updated.available)
    assert.same({}, (offers("model=L4")))
    assert.equal(200, (node:request("DELETE", "/v1/marketplace/gpu/" .. l.listing_id, { key = provider })))
    assert.equal(404, (node:request("DELETE", "/v1/marketplace/gpu/" .. l.listing_id, { key = provider })))
  end)

  it("stops offering a listing whose miner goes offline, and scores providers by their record", function()
    local key = node:key("miner")
    node:request("POST", "/v1/miners/register", { key = key, json = { miner_id = "flaky" } })
    local l = list(key, { model = "T4", vram_gb = 16, hourly_rate = "0.1" })
    assert.equal("flaky", l.miner_id)
    assert.is_true(l.available)
    local _, job = node:request("POST", "/v1/jobs", { key = client, json = { payload = { prompt = "x" } } })
    node:request("POST", "/v1/miners/poll", { key = key, json = {} })
    node:request("POST", "/v1/miners/" .. job.job_id .. "/fail", { key = key, json = { error_message = "crashed" } })
    local _, res = offers("model=T4")
    assert.equal(1, #res.items)
    assert.equal(1, res.items[1].record.failed)
    -- no ratings yet: the record (0 + 1) and the ratings' prior (1) over the evidence (1 job + 0 ratings + 4)
    assert.equal(0.4, res.items[1].reputation)
    -- no heartbeat: after --heartbeat-timeout (1 s) the miner is offline, and its listing no longer offered
    cli.wait_for("the listing to go", function() return #offers("model=T4") == 0 end)
    local _, all = offers("model=T4&available=all")
    assert.is_false(all.items[1].available)
  end)

  it("works from the CLI as the spec writes it", function()
    local home = cli.tempdir()
    local env = { AITBC_MINER_KEY = node:key("miner") }
    local r = node:cli({ "marketplace", "gpu", "register", "--model", "RTX 4090", "--vram", "24", "--hourly-rate", "0.5" },
      { home = home, env = env })
    assert.equal(0, r.code, r.err)
    assert.matches("listing gpu_%x+ is live on the network", r.out)
    r = node:cli({ "marketplace", "offers", "list", "--model", "RTX 4090" }, { home = home })
    assert.matches("LISTING%s+PROVIDER%s+REP%s+GPU%s+VRAM%s+AITBC/H%s+REGION%s+STATUS", r.out)
    r = node:cli({ "marketplace", "pricing", "--model", "RTX 4090" }, { home = home })
    assert.matches("SOURCE%s+COUNT%s+MIN%s+P25%s+MEDIAN%s+AVERAGE%s+P75%s+P90%s+MAX", r.out)
    assert.matches("available listings%s+%d+", r.out)
    assert.matches("suggested: [%d.]+ AITBC/hour", r.out)
    assert.equal(2, node:cli({ "marketplace", "gpu", "register", "--model", "X", "--vram", "8", "--hourly-rate", "-2" },
      { home = home, env = env }).code)
  end)

  it("updates a listing when the same GPU is registered again, instead of offering it twice", function()
    local home = cli.tempdir()
    local env = { AITBC_MINER_KEY = node:key("miner") }
    local function register(rate, extra)
      local args = { "marketplace", "gpu", "register", "--model", "L40S", "--vram", "48", "--hourly-rate", rate }
      for _, a in ipairs(extra or {}) do args[#args + 1] = a end
      return node:cli(args, { home = home, env = env })
    end
    local first = register("0.7")
    assert.equal(0, first.code, first.err)
    local id = first.out:match("listing (gpu_%x+) is live")
    local again = register("0.65", { "--count", "2" })
    assert.equal(0, again.code, again.err)
    assert.matches("you already listed this GPU as " .. id .. ": updated it %(0%.7 → 0%.65 AITBC/hour, 1 → 2 GPU%(s%)%)",
      again.out)
    local _, res = offers("model=L40S")
    assert.equal(1, res.total)
    assert.equal("0.65", res.items[1].hourly_rate)
    assert.equal(2, res.items[1].count)
    local j = node:cli({ "-o", "json", "marketplace", "gpu", "register", "--model", "L40S", "--vram", "48", "--hourly-rate",
      "0.65", "--count", "2" }, { home = home, env = env }).json()
    assert.is_true(j.updated)
    assert.equal(id, j.listing_id)
    -- another region is another listing
    local eu = register("0.8", { "--region", "eu" })
    assert.matches("listing gpu_%x+ is live", eu.out)
    assert.equal(2, select(2, offers("model=L40S")).total)
  end)
end)
