-- Direct GPU rental, ratings and bids on a real node (spec §4.1, issue 18):
-- a booking's escrow paid to the provider hour by hour (hours of 1 s here),
-- its jobs on the booked miner only, an early release refunding the rest to
-- the base unit, one winner when two renters race for a listing, a provider
-- gone offline refunding, ratings once per booking, bids accepted at their
-- price — and a follower replaying all of it to the same balances.
local cli = require "support.cli"
local http = require "aitbc.http"
local json = require "aitbc.json"
local money = require "aitbc.money"
local nodes = require "support.node"

describe("GPU rental", function()
  local node, miner_key, client_key
  setup(function()
    node = nodes.start { args = { "--block-time", "0.2", "--rental-hour", "1", "--heartbeat-timeout", "3",
      "--log-level", "warn" } }
    miner_key, client_key = node:key("miner"), node:key("client")
  end)
  teardown(function() node:stop() cli.cleanup() end)

  local function account(address)
    local _, a = node:request("GET", "/v1/chain/ait-devnet/accounts/" .. address)
    return a
  end
  local function units(address) return math.tointeger(tonumber(account(address).balance_units)) end

  --- A user with a wallet of their own (and coins).
  local function user(name, key_env, funds)
    local home = cli.tempdir()
    local env = { AITBC_WALLET_PASSWORD = "pw of " .. name }
    for k, v in pairs(key_env) do env[k] = v end
    local u = { home = home }
    function u.run(args) return node:cli(args, { home = home, env = env, timeout = 60 }) end
    assert.equal(0, u.run({ "wallet", "create", "--name", name }).code)
    u.address = u.run({ "wallet", "address" }).out:gsub("%s+$", "")
    if funds then assert.equal(0, u.run({ "wallet", "faucet", "--amount", funds }).code) end
    return u
  end

  local function miner(id, extra)
    local body = { miner_id = id, capabilities = { models = { "llama3" } } }
    for k, v in pairs(extra or {}) do body[k] = v end
    return node:request("POST", "/v1/miners/register", { key = miner_key, json = body })
  end
  local function poll(id)
    return node:request("POST", "/v1/miners/poll", { key = miner_key, headers = { ["X-Miner-ID"] = id }, json = {} })
  end
  --- A provider's listing served by miner `id`, its payments to `payout`.
  local function listing(id, payout, rate)
    miner(id, { concurrency = 2 })
    local s, l = node:request("POST", "/v1/marketplace/gpu/register", { key = miner_key, headers = { ["X-Miner-ID"] = id },
      json = { model = "RTX 4090", vram_gb = 24, hourly_rate = rate or "0.5", payout_address = payout, region = id } })
    assert.equal(201, s, json.encode(l))
    return l.listing_id
  end

  it("books a GPU, runs the renter's jobs on it only, pays hourly, and refunds the rest on an early release", function()
    local payee = user("payee", { AITBC_MINER_KEY = miner_key })
    local renter = user("renter", { AITBC_CLIENT_KEY = client_key }, "40")
    local gpu = listing("rig", payee.address, "0.5")
    miner("other", { concurrency = 2 })
    local start = units(renter.address)
    local r = renter.run { "marketplace", "gpu", "book", gpu, "--hours", "50" }
    assert.equal(0, r.code, r.err)
    local booking_id = r.out:match("booking%s+(bk_%x+)")
    assert.is_string(booking_id, r.out)
    assert.matches("booked " .. gpu .. " for 50 hour%(s%): 25 AITBC locked in escrow", r.out)
    assert.equal(start - 25 * money.UNIT, units(renter.address))
    -- booked: not offered, and not bookable again
    local _, offers = node:request("GET", "/v1/marketplace/offers?model=RTX%204090")
    for _, o in ipairs(offers.items) do assert.are_not.equal(gpu, o.listing_id) end
    local again = renter.run { "marketplace", "gpu", "book", gpu, "--hours", "1" }
    assert.equal(1, again.code)
    assert.matches("is booked until", again.err)
    -- the renter's job goes to the booked miner only; the booked miner takes no one else's
    local job = renter.run({ "-o", "json", "client", "submit", "--model", "llama3", "--prompt", "mine", "--booking",
      booking_id }).json()
    assert.equal(booking_id, job.booking_id)
    local _, other_job = node:request("POST", "/v1/jobs", { key = node:key("client"), json = { payload = { prompt = "x" },
      model = "llama3" } })
    local s1, got_other = poll("other")
    assert.equal(200, s1)
    assert.equal(other_job.job_id, got_other.job_id) -- not the booked job
    local s2, got_rig = poll("rig")
    assert.equal(200, s2)
    assert.equal(job.job_id, got_rig.job_id)
    -- with a slot free, the booked miner still takes nobody else's job
    local _, third = node:request("POST", "/v1/jobs", { key = node:key("client"), json = { payload = { prompt = "y" },
      model = "llama3" } })
    local s3, _, res3 = poll("rig")
    assert.same({ 204, "no_jobs" }, { s3, res3.headers["x-poll-reason"] })
    assert.equal(third.job_id, select(2, poll("other")).job_id)
    -- a job under someone else's booking is refused
    local stranger = node:request("POST", "/v1/jobs", { key = node:key("client"), json = { payload = { prompt = "x" },
      booking_id = booking_id } })
    assert.equal(404, stranger)
    -- hours pass: each one paid to the provider
    cli.wait_for("two hours paid to the provider", function()
      local b = renter.run({ "-o", "json", "marketplace", "orders" }).json().items[1]
      return b.hours_paid >= 2 and units(payee.address) >= 2 * money.parse("0.5")
    end, 30)
    -- released early: the hour under way paid, the rest back to the renter, to the base unit
    r = renter.run { "marketplace", "gpu", "release", booking_id }
    assert.equal(0, r.code, r.err)
    assert.matches("released after %d+ of 50 hour%(s%)", r.out)
    local done = renter.run({ "-o", "json", "marketplace", "orders", "--status", "released" }).json().items[1]
    local paid_units, refunded_units = money.parse(done.paid), money.parse(done.refunded)
    assert.equal(25 * money.UNIT, paid_units + refunded_units)
    assert.equal(done.hours_paid * money.parse("0.5"), paid_units)
    assert.equal(paid_units, units(payee.address))
    assert.equal(start - paid_units, units(renter.address))
    -- the listing is free again, and jobs under the ended booking are refused
    local _, details = node:request("GET", "/v1/marketplace/gpu/" .. gpu)
    assert.is_nil(details.current_booking)
    local late = renter.run { "client", "submit", "--model", "llama3", "--prompt", "late", "--booking", booking_id }
    assert.equal(1, late.code)
    assert.matches("has ended %(released%)", late.err)
  end)

  it("two renters racing for one listing: exactly one books it, the other's coins stay put", function()
    local payee = user("payee2", { AITBC_MINER_KEY = miner_key })
    local gpu = listing("race-rig", payee.address, "1")
    local a = user("racer_a", { AITBC_CLIENT_KEY = client_key }, "10")
    local b = user("racer_b", { AITBC_CLIENT_KEY = node:key("client") }, "10")
    local wallet = require "aitbc.wallet"
    local function signed(u)
      local name = u == a and "racer_a" or "racer_b"
      local doc = json.decode(assert(require("aitbc.sys").read_file(u.home .. "/wallets/" .. name .. ".json")))
      local keys = wallet.open(doc, "pw of " .. name)
      local tx = { chain_id = "ait-devnet", type = "rental_lock", from = u.address,
        public_key = require("aitbc.crypto").hex(keys.public_key), nonce = account(u.address).nonce + 1,
        payload = { listing_id = gpu, hours = 2, amount = "2000000000" }, timestamp = os.time() }
      local body = require("aitbc.protocol.signing").signed_tx(tx, keys.secret_key)
      body.hours = 2
      return json.encode(body)
    end
    local before = { units(a.address), units(b.address) }
    local reqs = {}
    for i, u in ipairs { a, b } do
      reqs[i] = { method = "POST", url = node.url .. "/v1/marketplace/gpu/" .. gpu .. "/book", body = signed(u),
        headers = { ["X-Api-Key"] = node:key("client"), ["Content-Type"] = "application/json" } }
    end
    local results = http.request_many(reqs)
    local statuses = { results[1].status, results[2].status }
    table.sort(statuses)
    assert.same({ 201, 409 }, statuses)
    local loser = results[1].status == 409 and 1 or 2
    assert.equal("already_booked", json.decode(results[loser].body).error.code)
    local spent = { before[1] - units(a.address), before[2] - units(b.address) }
    assert.equal(0, spent[loser])
    assert.equal(2 * money.UNIT, spent[3 - loser])
  end)

  it("a provider whose miner goes offline refunds every hour not yet paid", function()
    local payee = user("payee3", { AITBC_MINER_KEY = miner_key })
    local gpu = listing("flaky", payee.address, "1")
    local renter = user("r3", { AITBC_CLIENT_KEY = client_key }, "100")
    local start = units(renter.address)
    local booking = renter.run({ "-o", "json", "marketplace", "gpu", "book", gpu, "--hours", "60" }).json()
    -- no heartbeat from "flaky": after the node's heartbeat timeout (3 s) it is offline
    local ended = cli.wait_for("the booking interrupted", function()
      local b = renter.run({ "-o", "json", "marketplace", "orders", "--status", "interrupted" }).json().items[1]
      return b and b.booking_id == booking.booking_id and b
    end, 30)
    assert.matches("went offline", ended.end_reason)
    local paid = money.parse(ended.paid)
    assert.equal(ended.hours_paid * money.UNIT, paid)
    assert.is_true(ended.hours_paid < 60)
    assert.equal(start - paid, units(renter.address))
    assert.equal(paid, units(payee.address))
  end)

  it("ratings: once per booking that ended well, 1 to 5, and they move the provider's reputation", function()
    local payee = user("payee4", { AITBC_MINER_KEY = miner_key })
    local gpu = listing("rated", payee.address, "0.25")
    local renter = user("r4", { AITBC_CLIENT_KEY = client_key }, "10")
    local r = renter.run { "marketplace", "review", gpu, "--rating", "5" }
    assert.equal(1, r.code)
    assert.matches("after a booking of yours ended", r.err)
    local booking = renter.run({ "-o", "json", "marketplace", "gpu", "book", gpu, "--hours", "1" }).json()
    cli.wait_for("the booking to end", function()
      return renter.run({ "-o", "json", "marketplace", "orders", "--status", "completed" }).json().total > 0
    end, 30)
    local before = renter.run({ "-o", "json", "marketplace", "gpu", "details", gpu }).json().reputation
    assert.equal(2, renter.run({ "marketplace", "review", gpu, "--rating", "6" }).code)
    r = renter.run { "marketplace", "review", gpu, "--rating", "5", "--comment", "fast and honest" }
    assert.equal(0, r.code, r.err)
    assert.matches("rated " .. gpu .. " 5/5 %(booking:" .. booking.booking_id .. "%)", r.out)
    assert.equal(1, renter.run({ "marketplace", "review", gpu, "--rating", "1", "--booking", booking.booking_id }).code)
    local d = renter.run({ "-o", "json", "marketplace", "gpu", "details", gpu }).json()
    assert.same({ 5, 1 }, { d.rating.average, d.rating.count })
    assert.is_true(d.reputation > before, d.reputation .. " > " .. before)
    local reviews = renter.run({ "-o", "json", "marketplace", "reviews", gpu }).json()
    assert.same({ 5, "fast and honest" }, { reviews.reviews[1].rating, reviews.reviews[1].comment })
  end)

  it("bids: escrow locked when posted, a provider accepts at the bid's price, a canceled bid refunds", function()
    local payee = user("payee5", { AITBC_MINER_KEY = miner_key })
    local gpu = listing("bidder-rig", payee.address, "0.9")
    local client = user("c5", { AITBC_CLIENT_KEY = client_key }, "50")
    local start = units(client.address)
    local bid = client.run({ "-o", "json", "marketplace", "bid", "submit", "--hours", "3", "--max-price", "0.7",
      "--model", "RTX 4090" }).json()
    assert.equal("open", bid.status)
    assert.equal(start - money.parse("2.1"), units(client.address))
    local provider = user("p5", { AITBC_MINER_KEY = miner_key })
    local open = provider.run({ "-o", "json", "marketplace", "bid", "list" }).json()
    local seen = false
    for _, b in ipairs(open.items) do seen = seen or b.bid_id == bid.bid_id end
    assert.is_true(seen)
    local wrong = provider.run { "marketplace", "bid", "accept", bid.bid_id, "--listing", "gpu_000000000000" }
    assert.equal(3, wrong.code)
    local r = provider.run { "-o", "json", "marketplace", "bid", "accept", bid.bid_id, "--listing", gpu }
    assert.equal(0, r.code, r.err)
    local booking = r.json()
    assert.same({ "0.7", "2.1", bid.bid_id, gpu }, { booking.hourly_rate, booking.total_cost, booking.bid_id,
      booking.listing_id })
    assert.equal(1, provider.run({ "marketplace", "bid", "accept", bid.bid_id, "--listing", gpu }).code) -- once
    -- the pricing oracle counts the accepted bid
    local _, pricing = node:request("GET", "/v1/marketplace/pricing?model=RTX%204090")
    assert.is_true(pricing.completed_jobs.count >= 1)
    -- another bid, withdrawn: its escrow comes back
    local second = client.run({ "-o", "json", "marketplace", "bid", "submit", "--hours", "2", "--max-price", "1" }).json()
    local before_cancel = units(client.address)
    assert.equal(0, client.run({ "marketplace", "bid", "cancel", second.bid_id }).code)
    assert.equal(before_cancel + 2 * money.UNIT, units(client.address))
  end)

  it("a follower replays rental locks and settlements to the same balances", function()
    local _, head = node:request("POST", "/v1/chain/ait-devnet/blocks", { key = node.admin_key })
    local follower = nodes.start { args = { "--follow", node.url, "--log-level", "warn" } }
    finally(function() follower:stop() end)
    cli.wait_for("the follower at the leader's height", function()
      local s, h = follower:request("GET", "/v1/chain/ait-devnet/head")
      return s == 200 and h.height >= head.height
    end, 30)
    local _, lchains = node:request("GET", "/v1/chains")
    for _, who in ipairs { lchains.faucet } do
      local _, a = node:request("GET", "/v1/chain/ait-devnet/accounts/" .. who)
      local _, b = follower:request("GET", "/v1/chain/ait-devnet/accounts/" .. who)
      assert.equal(a.balance_units, b.balance_units)
    end
    local _, lb = node:request("GET", "/v1/chain/ait-devnet/blocks/" .. head.height)
    local _, fb = follower:request("GET", "/v1/chain/ait-devnet/blocks/" .. head.height)
    assert.equal(lb.hash, fb.hash)
  end)
end)
