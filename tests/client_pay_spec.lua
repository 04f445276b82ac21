-- aitbc client against a real node: paying for jobs however fast miners
-- are (spec 3.3 on a devnet), and the submit/list input rules.
local cli = require "support.cli"
local nodes = require "support.node"
local sys = require "aitbc.sys"

describe("paying for jobs", function()
  local node, miner_key, client_home, miner_home, client_env, payout
  setup(function()
    node = nodes.start { args = { "--block-time", "0.2", "--log-level", "warn" } }
    miner_key = node:key("miner")
    client_home, miner_home = cli.tempdir(), cli.tempdir()
    client_env = { AITBC_WALLET_PASSWORD = "client wallet pw", AITBC_CLIENT_KEY = node:key("client") }
    assert.equal(0, node:cli({ "wallet", "create", "--name", "payer" }, { home = client_home, env = client_env }).code)
    assert.equal(0, node:cli({ "wallet", "faucet", "--amount", "100" }, { home = client_home, env = client_env }).code)
    local miner_env = { AITBC_WALLET_PASSWORD = "miner wallet pw", AITBC_MINER_KEY = miner_key }
    assert.equal(0, node:cli({ "wallet", "create", "--name", "rig" }, { home = miner_home, env = miner_env }).code)
    payout = node:cli({ "wallet", "address" }, { home = miner_home }).out:gsub("%s+$", "")
    assert.equal(0, node:cli({ "miner", "register", "--gpus", "1x RTX 4090", "--models", "llama3", "--miner-id", "rig" },
      { home = miner_home, env = miner_env }).code)
  end)
  teardown(function() node:stop() cli.cleanup() end)

  local function as_client(args) return node:cli(args, { home = client_home, env = client_env }) end
  local function available(home) return node:cli({ "-o", "json", "wallet", "balance" }, { home = home }).json().available end
  local function miner(path, body, id)
    return node:request("POST", path, { key = miner_key, headers = { ["X-Miner-ID"] = id or "rig" }, json = body or {} })
  end
  --- The miner takes the job and completes it (as a devnet's does, in a moment).
  local function complete(job_id)
    local status, got = miner("/v1/miners/poll")
    assert.equal(200, status)
    assert.equal(job_id, got.job_id)
    assert.equal(200, (miner("/v1/miners/" .. job_id .. "/result", { result = { response = "done" } })))
  end

  it("settles a job that completed before its client paid: funded, then released to its miner", function()
    local job = as_client({ "-o", "json", "client", "submit", "--model", "llama3", "--prompt", "quick work" }).json()
    complete(job.job_id)
    -- the chain's reward for the job (miner_reward, 1 AITBC) reaches the payout address first
    local rewarded = cli.wait_for("the job's reward", function()
      local j = as_client({ "-o", "json", "client", "status", job.job_id }).json()
      return j.reward_status ~= "due" and j
    end)
    assert.equal("paid", rewarded.reward_status)
    local _, reward = node:request("GET", "/v1/chain/ait-devnet/transactions/" .. rewarded.reward_tx)
    assert.same({ "miner_reward", payout, "1" }, { reward.type, reward.to, reward.amount })
    local before = available(miner_home)
    local r = as_client { "client", "pay", job.job_id, "--amount", "10" }
    assert.equal(0, r.code, r.err)
    assert.matches("paid 10 AITBC for job " .. job.job_id, r.out)
    assert.matches("transaction%s+%x+", r.out)
    assert.matches("payment status%s+funded, then released", r.out)
    assert.matches("funded in block%s+%d+", r.out)
    assert.matches("released to%s+" .. payout .. " %(miner rig%)", r.out)
    -- the progress, in order, on stderr
    assert.matches("payment pending.*payment funded %(block %d+%).*payment released to " .. payout, r.err:gsub("\n", " "))
    assert.equal(tostring(tonumber(before) + 10), available(miner_home))
    local st = as_client({ "-o", "json", "client", "status", job.job_id }).json()
    assert.equal("released", st.payment_status)
    local _, t = node:request("GET", "/v1/chain/ait-devnet/transactions/" .. st.settlement_id)
    assert.equal("escrow_release", t.type)
    assert.equal(payout, t.to)
    -- paid once only
    local twice = as_client { "client", "pay", job.job_id, "1" }
    assert.equal(1, twice.code)
    assert.matches("already has a payment", twice.err)
  end)

  it("refuses to pay a completed job whose miner named no payout address, and a job that failed", function()
    local bare_key = node:key("miner")
    node:request("POST", "/v1/miners/register", { key = bare_key, json = { miner_id = "no-wallet",
      capabilities = { models = { "mistral" } } } })
    local job = as_client({ "-o", "json", "client", "submit", "--model", "mistral", "--prompt", "unpaid" }).json()
    local _, got = node:request("POST", "/v1/miners/poll", { key = bare_key, json = {} })
    assert.equal(job.job_id, got.job_id)
    node:request("POST", "/v1/miners/" .. job.job_id .. "/result", { key = bare_key, json = { result = "x" } })
    local before = available(client_home)
    local r = as_client { "client", "pay", job.job_id, "5" }
    assert.equal(1, r.code)
    assert.matches("named no payout address: there is nobody to pay", r.err)
    local failed = as_client({ "-o", "json", "client", "submit", "--model", "llama3", "--prompt", "doomed" }).json()
    miner("/v1/miners/poll")
    miner("/v1/miners/" .. failed.job_id .. "/fail", { error_message = "out of memory" })
    r = as_client { "client", "pay", failed.job_id, "5" }
    assert.equal(1, r.code)
    assert.matches("ended FAILED without a result", r.err)
    assert.equal(before, available(client_home))
  end)

  it("holds a job submitted with a payment until its escrow is funded, then offers it", function()
    -- through the API: the job waits, offered to no miner
    local _, job = node:request("POST", "/v1/jobs", { key = client_env.AITBC_CLIENT_KEY,
      json = { payload = { prompt = "paid first" }, model = "llama3", payment_amount = "4" } })
    assert.equal("awaiting", job.payment_status)
    assert.is_true(job.held_for_payment)
    assert.equal(204, (miner("/v1/miners/poll")))
    assert.matches("held until its payment is funded", as_client({ "client", "status", job.job_id }).out)
    local wrong = as_client { "client", "pay", job.job_id, "3" }
    assert.equal(1, wrong.code)
    assert.matches("submitted with payment_amount 4 AITBC; the escrow lock must be exactly that", wrong.err)
    local paid = as_client { "client", "pay", job.job_id, "4" }
    assert.equal(0, paid.code, paid.err)
    assert.matches("payment status%s+funded", paid.out)
    complete(job.job_id)

    -- through the CLI in one line: submitted, paid, funded, then run
    local before = available(client_home)
    local r = as_client { "client", "submit", "--model", "llama3", "--prompt", "paid in one go", "--pay", "3" }
    assert.equal(0, r.code, r.err)
    assert.matches("job submitted, paid 3 AITBC", r.out)
    assert.matches("payment%s+3 AITBC, funded", r.out)
    local id = r.out:match("job_id%s+(%x+)")
    assert.equal(tostring(tonumber(before) - 3), available(client_home))
    complete(id)
    local settled
    for _ = 1, 100 do
      settled = as_client({ "-o", "json", "client", "status", id }).json()
      if settled.payment_status == "released" then break end
      sys.sleep(0.05)
    end
    assert.equal("released", settled.payment_status)
  end)

  it("cancels a job submitted with --pay when its payment fails, and opens the wallet before submitting", function()
    local before = as_client({ "-o", "json", "client", "list", "--limit", "500" }).json().total
    local r = as_client { "client", "submit", "--model", "llama3", "--prompt", "too dear", "--pay", "100000" }
    assert.equal(1, r.code)
    local id = r.err:match("job (%x+) canceled, its payment failed: [^\n]*balance is")
    assert.is_not_nil(id, r.err)
    assert.equal("CANCELED", as_client({ "-o", "json", "client", "status", id }).json().state)
    local wrong = node:cli({ "client", "submit", "--model", "llama3", "--prompt", "x", "--pay", "1" },
      { home = client_home, env = { AITBC_WALLET_PASSWORD = "not the password", AITBC_CLIENT_KEY = client_env.AITBC_CLIENT_KEY } })
    assert.equal(4, wrong.code)
    assert.equal(before + 1, as_client({ "-o", "json", "client", "list", "--limit", "500" }).json().total)
  end)

  it("shows what a wallet has locked in escrow beside available, staked and total", function()
    assert.equal("0", as_client({ "-o", "json", "wallet", "balance" }).json().in_escrow) -- the earlier jobs are settled
    local job = as_client({ "-o", "json", "client", "submit", "--model", "phi3", "--prompt", "waits" }).json()
    assert.equal(0, as_client({ "client", "pay", job.job_id, "2.5" }).code)
    local b = as_client({ "-o", "json", "wallet", "balance" }).json()
    for _, f in ipairs { "available", "staked", "total", "in_escrow", "escrow_jobs" } do assert.is_not_nil(b[f], f) end
    assert.is_nil(b.balance)
    assert.equal("2.5", b.in_escrow)
    assert.equal(1, b.escrow_jobs)
    assert.matches("in escrow%s+2%.5 AITBC %(1 job not settled yet%)", as_client({ "wallet", "balance" }).out)
    assert.equal(0, as_client({ "client", "cancel", job.job_id }).code)
  end)

  it("answers the older clients' payment routes over the escrow, and only to the payment's client", function()
    local key = client_env.AITBC_CLIENT_KEY
    local function get(path, k) return node:request("GET", path, { key = k or key }) end
    local function post(path, body, k) return node:request("POST", path, { key = k or key, json = body or {} }) end
    local address = node:cli({ "wallet", "address" }, { home = client_home }).out:gsub("%s+$", "")
    cli.wait_for("the earlier refunds", function()
      return as_client({ "-o", "json", "wallet", "balance" }).json().in_escrow == "0"
    end)
    local before = available(client_home)
    local job = as_client({ "-o", "json", "client", "submit", "--model", "phi3", "--prompt", "nobody runs phi3" }).json()
    -- the node cannot sign for a wallet: it says how to pay
    local s, e = post("/v1/payments", { job_id = job.job_id, amount = 5, currency = "AITBC", payment_method = "aitbc_token" })
    assert.equal(422, s)
    assert.matches("pay with: aitbc client pay " .. job.job_id .. " %-%-amount 5", e.error.message)
    s, e = get("/v1/jobs/" .. job.job_id .. "/payment")
    assert.equal(404, s)
    assert.matches("aitbc client pay " .. job.job_id, e.error.message)
    assert.equal(0, as_client({ "client", "pay", job.job_id, "--amount", "5" }).code)
    local p = select(2, get("/api/v1/jobs/" .. job.job_id .. "/payment"))
    assert.same({ job.job_id, "5", "AITBC", "escrowed", "funded", address, "escrow:" .. job.job_id },
      { p.job_id, p.amount, p.currency, p.status, p.escrow_status, p.refund_address, p.escrow_address })
    assert.equal(p.payment_id, p.transaction_hash)
    assert.is_string(p.verified_at)
    local _, lock = node:request("GET", "/v1/chain/ait-devnet/transactions/" .. p.payment_id)
    assert.same({ "escrow_lock", "included" }, { lock.type, lock.status })
    local _, r = get("/v1/payments/" .. p.payment_id .. "/receipt")
    assert.same({ p.payment_id, "escrowed", lock.block_height }, { r.payment_id, r.status, r.block_height })
    -- another client's key sees nothing of it and cannot move it
    local other = node:key("client")
    for _, path in ipairs { "/v1/payments/" .. p.payment_id, "/v1/payments/" .. p.payment_id .. "/receipt",
      "/v1/jobs/" .. job.job_id .. "/payment" } do
      assert.equal(404, (get(path, other)), path)
    end
    assert.equal(404, (post("/v1/payments/" .. p.payment_id .. "/refund", {}, other)))
    assert.equal("escrowed", select(2, get("/v1/payments/" .. p.payment_id)).status)
    -- a queued job's payment is not released; refunding it cancels the job and pays the wallet back
    s, e = post("/v1/payments/" .. p.payment_id .. "/release", { job_id = job.job_id, payment_id = p.payment_id })
    assert.equal(409, s)
    assert.matches("released to the miner when its job completes", e.error.message)
    s, e = post("/v1/payments/" .. p.payment_id .. "/refund", { job_id = "not-this-job", payment_id = p.payment_id })
    assert.equal(422, s)
    assert.equal("job_id", e.error.field)
    local _, refund = post("/v1/payments/" .. p.payment_id .. "/refund", { job_id = job.job_id, reason = "changed my mind" })
    assert.same({ "refunded", true, "CANCELED" }, { refund.status, refund.job_canceled, refund.job_state })
    local _, back = node:request("GET", "/v1/chain/ait-devnet/transactions/" .. refund.refund_transaction_hash)
    assert.same({ "escrow_refund", address, "5" }, { back.type, back.to, back.amount })
    assert.equal(before, available(client_home))
    -- a completed job's payment is released to its miner, and cannot be refunded then
    local done = as_client({ "-o", "json", "client", "submit", "--model", "llama3", "--prompt", "paid work" }).json()
    assert.equal(0, as_client({ "client", "pay", done.job_id, "--amount", "2" }).code)
    complete(done.job_id)
    local paid_id = select(2, get("/v1/jobs/" .. done.job_id .. "/payment")).payment_id
    local _, released = post("/v1/payments/" .. paid_id .. "/release", { job_id = done.job_id })
    assert.equal("released", released.status)
    local _, to_miner = node:request("GET", "/v1/chain/ait-devnet/transactions/" .. released.release_transaction_hash)
    assert.same({ "escrow_release", payout, "2" }, { to_miner.type, to_miner.to, to_miner.amount })
    s, e = post("/v1/payments/" .. paid_id .. "/refund", {})
    assert.equal(409, s)
    assert.matches("completed: its escrow goes to the miner", e.error.message)
  end)

  it("lists blocks and signed receipts for the older explorer routes", function()
    local _, head = node:request("GET", "/v1/chain/ait-devnet/head")
    local s, page = node:request("GET", "/v1/explorer/blocks?limit=3")
    assert.equal(200, s)
    assert.equal(3, #page.items)
    assert.is_true(page.items[1].height >= head.height)
    assert.same({ page.items[1].height - 1, page.items[1].height - 2 }, { page.items[2].height, page.items[3].height })
    assert.equal(3, page.next_offset)
    assert.is_number(page.items[1].txCount)
    local _, next_page = node:request("GET", "/v1/explorer/blocks?limit=3&offset=3")
    assert.equal(page.items[3].height - 1, next_page.items[1].height)
    assert.equal(404, (node:request("GET", "/v1/explorer/blocks?chain_id=ait-nowhere")))
    -- receipts: the client's own jobs', verified with the node's key
    local key = client_env.AITBC_CLIENT_KEY
    local job = as_client({ "-o", "json", "client", "submit", "--model", "llama3", "--prompt", "receipt please" }).json()
    complete(job.job_id)
    local _, mine = node:request("GET", "/v1/explorer/receipts?job_id=" .. job.job_id, { key = key })
    assert.equal(job.job_id, mine.jobId)
    assert.equal(1, #mine.items)
    local item = mine.items[1]
    assert.same({ job.job_id, "rig", "COMPLETED" }, { item.jobId, item.miner, item.status })
    assert.equal(item.payload.receipt_id, item.receiptId)
    local _, info = node:request("GET", "/v1/node")
    assert.equal(info.node_key, item.coordinator)
    assert.is_true(require("aitbc.protocol.receipts").verify(item.payload))
    local _, all = node:request("GET", "/v1/explorer/receipts?limit=500", { key = key })
    assert.equal("all", all.jobId)
    assert.is_true(all.total >= 1)
    -- another client sees none of them; the miner that ran it does; no key, no receipts
    local _, theirs = node:request("GET", "/v1/explorer/receipts?job_id=" .. job.job_id, { key = node:key("client") })
    assert.equal(0, #theirs.items)
    local _, ran = node:request("GET", "/v1/explorer/receipts?job_id=" .. job.job_id, { key = miner_key })
    assert.equal(1, #ran.items)
    assert.equal(401, (node:request("GET", "/v1/explorer/receipts")))
  end)
end)

describe("client input", function()
  local node, env, home
  setup(function()
    node = nodes.start { args = { "--log-level", "warn" } }
    home = cli.tempdir()
    env = { AITBC_CLIENT_KEY = node:key("client") }
  end)
  teardown(function() node:stop() cli.cleanup() end)
  local function run(args) return node:cli(args, { home = home, env = env }) end

  it("refuses a submit the network would not run as meant, naming the fix", function()
    local twice = run { "client", "submit", "--model", "llama3", "--prompt", "a", "--data", '{"prompt":"b"}' }
    assert.equal(2, twice.code)
    assert.matches("the prompt is given twice", twice.err)
    assert.matches("keep one", twice.err)
    local training = run { "client", "submit", "--type", "training", "--model", "llama3", "--prompt", "a" }
    assert.equal(2, training.code)
    assert.matches("unknown job type 'training': this network runs inference jobs", training.err)
    assert.matches("use %-%-type inference", training.err)
    local nomodel = run { "client", "submit", "--prompt", "a" }
    assert.equal(2, nomodel.code)
    assert.matches("which model", nomodel.err)
    assert.matches("add %-%-model MODEL", nomodel.err)
    assert.equal(0, run({ "-o", "json", "client", "list" }).json().total) -- nothing was sent
    -- extra fields beside --prompt are fine
    local ok = run { "-o", "json", "client", "submit", "--model", "llama3", "--prompt", "a", "--data", '{"temperature":0.2}' }
    assert.equal(0, ok.code, ok.err)
    -- the node refuses an unknown type too
    local status, body = node:request("POST", "/v1/jobs", { key = env.AITBC_CLIENT_KEY,
      json = { payload = { type = "training", prompt = "x" }, model = "llama3" } })
    assert.equal(422, status)
    assert.equal("payload.type", body.error.field)
  end)

  it("takes --state in any case", function()
    for _, state in ipairs { "queued", "QUEUED", "Queued" } do
      local r = run { "-o", "json", "client", "list", "--state", state }
      assert.equal(0, r.code, r.err)
      assert.equal(1, r.json().total)
    end
    -- the older client's filters, with our names
    assert.equal(1, run({ "-o", "json", "client", "list", "--type", "inference", "--since", "2020-01-01" }).json().total)
    local agents = run { "-o", "json", "client", "list", "--type", "agent" }
    assert.equal(0, agents.code, agents.err .. agents.out)
    assert.equal(0, agents.json().total)
    assert.equal(0, run({ "-o", "json", "client", "list", "--until", "2020-01-01T00:00:00Z" }).json().total)
    assert.equal(1, run({ "-o", "json", "client", "list", "--since", "1 hour ago" }).json().total)
    local when = run { "client", "list", "--since", "the day before" }
    assert.equal(2, when.code)
    assert.matches("%-%-since: cannot read the time 'the day before'", when.err)
    local bad = run { "client", "list", "--state", "pending" }
    assert.equal(2, bad.code)
    assert.matches("%-%-state must be one of queued, running, completed, failed, canceled, expired %(any case%)", bad.err)
  end)
end)
