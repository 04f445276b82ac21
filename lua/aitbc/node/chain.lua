--- The chain: a proof-of-authority ledger kept by the node.
-- Transactions are canonical JSON (sorted keys, no spaces) signed with the
-- sender's Ed25519 key; the sender's address must be that key's address,
-- the nonce exactly one more than the account's, amounts decimal strings of
-- integer base units (1 AITBC = 10^9) and never more than the balance.  A
-- valid transaction is applied at once (one database transaction) and
-- sealed into the next block; blocks are produced every --block-time
-- seconds, hash-linked, and signed by the node's key.
-- Types: transfer {to, amount}, stake {amount}, unstake {amount},
-- escrow_lock {job_id, amount} (a client funds a job: the coins move to the
-- job's escrow account "escrow:JOB"); and, written by the node itself:
-- faucet (devnet coins, once a minute per address), escrow_release (to the
-- miner's payout address when the job completed) and escrow_refund (to the
-- payer when it failed, expired or was canceled, or the miner named no
-- payout address).
local crypto = require "aitbc.crypto"
local json = require "aitbc.json"
local money = require "aitbc.money"
local util = require "aitbc.node.util"
local wallet = require "aitbc.wallet"

local fail = util.fail

local M = { SUPPLY = 1000000000 * money.UNIT, FAUCET_MAX = 1000 * money.UNIT, FAUCET_DEFAULT = 100 * money.UNIT }

local ZERO = string.rep("0", 64)

function M.hash(obj) return crypto.hex(crypto.sha256(json.encode(obj))) end

--- A signature over a hash, as blocks and transactions carry it.
function M.sign(hash, secret) return crypto.base64(crypto.sign(hash, secret), "urlsafe") end

--- A block's transaction root: SHA-256 of its transaction hashes in order.
local function tx_root(hashes)
  return #hashes > 0 and crypto.hex(crypto.sha256(table.concat(hashes))) or ZERO
end

local function units(text, field)
  if type(text) ~= "string" or not text:match("^%d+$") or #text > 18 then
    fail(400, "invalid_amount", field .. " must be a whole number of base units as a string (1 AITBC = 10^9)", field)
  end
  local n = math.tointeger(tonumber(text))
  if not n or n <= 0 then fail(400, "invalid_amount", field .. " must be more than 0", field) end
  return n
end

local function genesis_header(chain_id, authority_public, timestamp)
  return { chain_id = chain_id, height = 0, prev_hash = ZERO, timestamp = timestamp, tx_count = 0, tx_root = ZERO,
    proposer = crypto.base64(authority_public, "urlsafe"), faucet = wallet.address(authority_public),
    supply = tostring(M.SUPPLY) }
end

--- The genesis of a chain: the node's faucet account holds the supply.
function M.genesis(store, chain_id, node_key, now)
  if store:chain_head(chain_id) then return end
  local faucet = wallet.address(node_key.public)
  store:transaction(function()
    store:chain_put_account { chain_id = chain_id, address = faucet, balance = M.SUPPLY, staked = 0, nonce = 0 }
    local header = genesis_header(chain_id, node_key.public, math.floor(now))
    local hash = M.hash(header)
    store:chain_block_insert { chain_id = chain_id, height = 0, hash = hash, prev_hash = ZERO, timestamp = header.timestamp,
      tx_count = 0, tx_root = ZERO, proposer = node_key.id,
      signature = M.sign(hash, node_key.secret) }
  end)
end

--- Seals the pending transactions of a chain into a new block.
function M.produce(store, chain_id, node_key, now)
  return store:transaction(function()
    local head = store:chain_head(chain_id)
    local pending = store:chain_pending(chain_id, 20000)
    local hashes = {}
    for i, t in ipairs(pending) do hashes[i] = t.hash end
    local root = tx_root(hashes)
    local header = { chain_id = chain_id, height = head.height + 1, prev_hash = head.hash, timestamp = math.floor(now),
      tx_count = #pending, tx_root = root, proposer = node_key.id }
    local hash = M.hash(header)
    store:chain_block_insert { chain_id = chain_id, height = header.height, hash = hash, prev_hash = head.hash,
      timestamp = header.timestamp, tx_count = #pending, tx_root = root, proposer = node_key.id,
      signature = M.sign(hash, node_key.secret) }
    if #pending > 0 then store:chain_seal(chain_id, header.height, pending[#pending].seq) end
    return header.height
  end)
end

--- Checks what a transaction says on its own (shape, key, signature) —
-- no state, so outside the write lock; returns what commit needs.
local function check_tx(chain_id, tx, signature, trusted)
  if type(tx) ~= "table" then fail(400, "invalid_tx", "tx must be an object", "tx") end
  if tx.chain_id ~= chain_id then
    fail(400, "wrong_chain", "tx.chain_id is " .. tostring(tx.chain_id) .. ", not " .. chain_id, "chain_id")
  end
  local kinds = { transfer = true, stake = true, unstake = true, escrow_lock = true, faucet = trusted }
  if not kinds[tx.type] then fail(400, "invalid_type", "tx.type must be transfer, stake or unstake", "type") end
  if type(tx.from) ~= "string" or not wallet.parse_address(tx.from) then
    fail(400, "invalid_address", "tx.from is not an address", "from")
  end
  local pk = type(tx.public_key) == "string" and crypto.unhex(tx.public_key)
  if not pk or #pk ~= 32 then fail(400, "invalid_key", "tx.public_key must be 32 bytes of hex", "public_key") end
  if wallet.address(pk) ~= tx.from then fail(400, "key_mismatch", "tx.public_key is not the key of tx.from", "public_key") end
  local sig = type(signature) == "string" and crypto.unbase64(signature, "urlsafe")
  local hash = M.hash(tx)
  if not sig or not crypto.verify(sig, hash, pk) then fail(400, "bad_signature", "the signature does not verify", "signature") end
  local payload = type(tx.payload) == "table" and tx.payload or {}
  local amount = units(payload.amount, "payload.amount")
  local to
  if tx.type == "escrow_lock" then
    if type(payload.job_id) ~= "string" or not payload.job_id:match("^%x+$") then
      fail(400, "invalid_job", "payload.job_id must be a job id", "payload.job_id")
    end
    to = "escrow:" .. payload.job_id
  elseif tx.type == "transfer" or tx.type == "faucet" then
    to = payload.to
    if type(to) ~= "string" or not wallet.parse_address(to) then
      fail(400, "invalid_address", "payload.to is not an address", "payload.to")
    end

    if to == tx.from then fail(400, "self_transfer", "payload.to is the sender", "payload.to") end
  end
  return { hash = hash, tx = tx, signature = signature, amount = amount, to = to }
end

--- Applies a checked transaction against the accounts; call inside a store
-- transaction.  Every refusal comes before the first write, so a refused
-- transaction leaves nothing behind even when the caller goes on.
local function commit_tx(store, chain_id, c, now)
  local tx, hash, amount, to = c.tx, c.hash, c.amount, c.to
  if store:chain_tx(hash) then fail(409, "duplicate_tx", "transaction " .. hash .. " was already accepted") end
  local a = store:chain_account(chain_id, tx.from)
  if math.tointeger(tx.nonce) ~= a.nonce + 1 then
    fail(400, "bad_nonce", string.format("tx.nonce must be %d (the account's next), got %s", a.nonce + 1,
      tostring(tx.nonce)), "nonce")
  end
  if tx.type == "unstake" then
    if a.staked < amount then fail(400, "insufficient_stake", "only " .. money.format(a.staked) .. " AITBC is staked") end
    a.staked, a.balance = a.staked - amount, a.balance + amount
  else
    if a.balance < amount then
      fail(400, "insufficient_funds",
        "the balance is " .. money.format(a.balance) .. " AITBC, less than " .. money.format(amount))
    end
    a.balance = a.balance - amount
    if tx.type == "stake" then a.staked = a.staked + amount end
  end
  a.nonce = a.nonce + 1
  store:chain_put_account(a)
  if to then
    local b = store:chain_account(chain_id, to)
    b.balance = b.balance + amount
    store:chain_put_account(b)
  end
  store:chain_tx_insert { hash = hash, chain_id = chain_id, type = tx.type, sender = tx.from, recipient = to,
    amount = amount, nonce = a.nonce, body = json.encode { tx = tx, signature = c.signature }, received_at = now }
  return hash
end

--- Checks and applies one signed transaction; returns its hash.
local function apply(ctx, chain_id, tx, signature, trusted)
  local c = check_tx(chain_id, tx, signature, trusted)
  return ctx.store:transaction(function() return commit_tx(ctx.store, chain_id, c, ctx.now) end)
end

local function chain_of(ctx, chain_id)
  for _, c in ipairs(ctx.config.chains) do if c == chain_id then return c end end
  fail(404, "unknown_chain",
    "this node has no chain " .. tostring(chain_id) .. " (it has " .. table.concat(ctx.config.chains, ", ") .. ")")
end

local function writable(ctx)
  if ctx.config.follow then
    fail(409, "follower", "this node follows " .. ctx.config.follow .. "; send transactions there")
  end
end

--- Settles a job's escrow: everything in "escrow:JOB" goes to `to`, in a
-- transaction the node signs (kind escrow_release or escrow_refund).
-- Returns the transaction's hash, or nil when the escrow holds nothing.
function M.settle(store, chain_id, job_id, to, kind, node_key, now)
  return store:transaction(function()
    local escrow = store:chain_account(chain_id, "escrow:" .. job_id)
    if escrow.balance <= 0 then return nil end
    local amount = escrow.balance
    escrow.balance, escrow.nonce = 0, escrow.nonce + 1
    store:chain_put_account(escrow)
    local dest = store:chain_account(chain_id, to)
    dest.balance = dest.balance + amount
    store:chain_put_account(dest)
    local tx = { chain_id = chain_id, type = kind, from = "escrow:" .. job_id, public_key = crypto.hex(node_key.public),
      nonce = escrow.nonce, payload = { job_id = job_id, to = to, amount = tostring(amount) }, timestamp = math.floor(now) }
    local hash = M.hash(tx)
    store:chain_tx_insert { hash = hash, chain_id = chain_id, type = kind, sender = tx.from, recipient = to,
      amount = amount, nonce = escrow.nonce, received_at = now,
      body = json.encode { tx = tx, signature = M.sign(hash, node_key.secret) } }
    return hash
  end)
end

--- Releases or refunds the escrow of every job that ended; the supervisor
-- runs this.  Completed with a payout address: released; otherwise refunded.
function M.settle_jobs(store, node_key, now)
  local n = 0
  for _, job in ipairs(store:jobs_to_settle()) do
    local release = job.state == "COMPLETED" and job.payout_address and wallet.parse_address(job.payout_address)
    local to = release and job.payout_address or job.payer
    local kind = release and "escrow_release" or "escrow_refund"
    -- one transaction: the escrow and the job's payment status change together
    store:transaction(function()
      local hash = M.settle(store, job.payment_chain, job.job_id, to, kind, node_key, now)
      store:job_payment(job.job_id, { payment_status = release and "released" or "refunded", settlement_id = hash })
    end)
    n = n + 1
  end
  return n
end

--- POST /v1/jobs/{id}/payment {tx, signature}: the client's own job, funded
-- by an escrow_lock transaction from the paying wallet.
local function check_payable(ctx, job_id)
  local job = ctx.store:job_get(job_id)
  if not job or (job.client_key_id ~= ctx.key.key_id and ctx.key.role ~= "admin") then
    fail(404, "job_not_found", "job " .. job_id .. " not found")
  end
  if job.payment_id then fail(409, "already_paid", "job " .. job_id .. " already has a payment (" .. job.payment_id .. ")") end
  if job.state ~= "QUEUED" and job.state ~= "RUNNING" then
    fail(409, "job_ended", "job " .. job_id .. " is " .. job.state .. "; only a queued or running job can be paid")
  end
end

function M.pay_job(ctx, job_id)
  writable(ctx)
  check_payable(ctx, job_id)
  local body = ctx:body_object()
  local tx = body.tx
  if type(tx) ~= "table" or tx.type ~= "escrow_lock" or type(tx.payload) ~= "table" or tx.payload.job_id ~= job_id then
    fail(400, "invalid_payment", "the payment must be an escrow_lock transaction for job " .. job_id, "tx")
  end
  local chain_id = chain_of(ctx, tx.chain_id)
  local c = check_tx(chain_id, tx, body.signature, false)
  -- the escrow lock and the job's payment record commit together
  ctx.store:transaction(function()
    check_payable(ctx, job_id) -- again under the lock: two payments for one job must not both pass
    commit_tx(ctx.store, chain_id, c, ctx.now)
    ctx.store:job_payment(job_id, { payment_id = c.hash, payment_status = "pending", payment_amount = c.amount,
      payment_chain = chain_id, payer = tx.from })
  end)
  return 202, { job_id = job_id, payment_id = c.hash, tx_hash = c.hash, payment_status = "pending", chain_id = chain_id,
    amount = money.format(c.amount) }
end

-- ---- following another node ----

local function refuse(why) error({ follow_error = why }, 0) end

--- Replays a node-signed escrow settlement from the leader.
local function replay_settlement(store, chain_id, tx, signature, authority_public)
  local sig = crypto.unbase64(signature or "", "urlsafe")
  if tx.public_key ~= crypto.hex(authority_public) or not sig or not crypto.verify(sig, M.hash(tx), authority_public) then
    refuse("settlement " .. M.hash(tx) .. " is not signed by the authority")
  end
  local amount = units(tx.payload.amount, "payload.amount")
  local escrow = store:chain_account(chain_id, tx.from)
  if escrow.balance < amount or math.tointeger(tx.nonce) ~= escrow.nonce + 1 then
    refuse("settlement " .. M.hash(tx) .. " does not fit the escrow")
  end
  escrow.balance, escrow.nonce = escrow.balance - amount, escrow.nonce + 1
  store:chain_put_account(escrow)
  local dest = store:chain_account(chain_id, tx.payload.to)
  dest.balance = dest.balance + amount
  store:chain_put_account(dest)
  store:chain_tx_insert { hash = M.hash(tx), chain_id = chain_id, type = tx.type, sender = tx.from, recipient = tx.payload.to,
    amount = amount, nonce = escrow.nonce, received_at = tx.timestamp, body = json.encode { tx = tx, signature = signature } }
end

--- Verifies a block from the leader and applies it; refuses (raising
-- {follow_error}) anything that does not check out, changing nothing.
-- block: the leader's block view; txs: its transactions {tx, signature}, in order.
function M.follow_block(store, chain_id, block, txs, authority_public)
  store:transaction(function()
    local head = store:chain_head(chain_id)
    local header
    if block.height == 0 then
      if head then refuse("a second genesis") end
      header = genesis_header(chain_id, authority_public, block.timestamp)
      store:chain_put_account { chain_id = chain_id, address = header.faucet, balance = M.SUPPLY, staked = 0, nonce = 0 }
    else
      if not head or block.height ~= head.height + 1 or block.prev_hash ~= head.hash then
        refuse("block " .. tostring(block.height) .. " does not extend the local head")
      end
      header = { chain_id = chain_id, height = block.height, prev_hash = block.prev_hash, timestamp = block.timestamp,
        tx_count = block.tx_count, tx_root = block.tx_root, proposer = block.proposer }
    end
    if M.hash(header) ~= block.hash then refuse("block " .. block.height .. ": its hash does not match its header") end
    local sig = crypto.unbase64(block.signature or "", "urlsafe")
    if not sig or not crypto.verify(sig, block.hash, authority_public) then
      refuse("block " .. block.height .. " is not signed by the authority")
    end
    if #txs ~= block.tx_count then refuse("block " .. block.height .. ": transaction count differs") end
    local hashes = {}
    local ctx = { store = store }
    for i, t in ipairs(txs) do
      local h = M.hash(t.tx)
      if h ~= block.transactions[i] then refuse("block " .. block.height .. ": transaction " .. i .. " is not the one listed") end
      hashes[i] = h
      ctx.now = t.tx.timestamp
      if t.tx.type == "escrow_release" or t.tx.type == "escrow_refund" then
        replay_settlement(store, chain_id, t.tx, t.signature, authority_public)
      else
        local ok, err = pcall(apply, ctx, chain_id, t.tx, t.signature, t.tx.type == "faucet")
        if not ok then
          refuse("block " .. block.height .. ": transaction " .. h .. " is invalid: " .. tostring(err.message or err))
        end
      end
    end
    local root = tx_root(hashes)
    if root ~= block.tx_root then refuse("block " .. block.height .. ": the transaction root does not match") end
    store:chain_block_insert { chain_id = chain_id, height = block.height, hash = block.hash, prev_hash = block.prev_hash,
      timestamp = block.timestamp, tx_count = block.tx_count, tx_root = block.tx_root, proposer = block.proposer,
      signature = block.signature }
    store:chain_seal_all(chain_id, block.height)
  end)
end

-- ---- routes ----

local function block_view(b)
  return { chain_id = b.chain_id, height = b.height, hash = b.hash, prev_hash = b.prev_hash, timestamp = b.timestamp,
    tx_count = b.tx_count, tx_root = b.tx_root, proposer = b.proposer, signature = b.signature }
end

local function account_view(a)
  return { chain_id = a.chain_id, address = a.address, nonce = a.nonce,
    balance = money.format(a.balance), staked = money.format(a.staked), total = money.format(a.balance + a.staked),
    balance_units = tostring(a.balance), staked_units = tostring(a.staked) }
end

local function tx_view(t)
  local body = json.decode(t.body)
  return { hash = t.hash, chain_id = t.chain_id, type = t.type, from = t.sender, to = t.recipient,
    amount = money.format(t.amount), nonce = t.nonce, status = t.block_height and "included" or "pending",
    block_height = t.block_height, received_at = util.iso(t.received_at), tx = body.tx, signature = body.signature }
end

function M.chains(ctx)
  local items = json.array()
  for _, c in ipairs(ctx.config.chains) do
    local head = ctx.store:chain_head(c)
    items[#items + 1] = { chain_id = c, height = head and head.height, head_hash = head and head.hash }
  end
  return 200, { items = items, block_time = ctx.config.block_time, node_key = ctx.node_key.id,
    faucet = wallet.address(ctx.node_key.public) }
end

function M.head(ctx, chain_id)
  return 200, block_view(assert(ctx.store:chain_head(chain_of(ctx, chain_id))))
end

--- Seals the pending transactions into a block now (admins; tests and
-- scripts that should not wait for --block-time).
function M.seal(ctx, chain_id)
  writable(ctx)
  chain_of(ctx, chain_id)
  local height = M.produce(ctx.store, chain_id, ctx.node_key, ctx.now)
  return 201, block_view(assert(ctx.store:chain_block(chain_id, height)))
end

function M.block(ctx, chain_id, ref)
  local b = ctx.store:chain_block(chain_of(ctx, chain_id), ref)
  if not b then fail(404, "block_not_found", "no block " .. ref .. " on " .. chain_id) end
  local view = block_view(b)
  view.transactions = json.array()
  for i, t in ipairs(ctx.store:chain_block_txs(chain_id, b.height)) do view.transactions[i] = t.hash end
  return 200, view
end

function M.tx(ctx, chain_id, hash)
  chain_of(ctx, chain_id)
  local t = ctx.store:chain_tx(hash)
  if not t or t.chain_id ~= chain_id then fail(404, "tx_not_found", "no transaction " .. hash .. " on " .. chain_id) end
  return 200, tx_view(t)
end

function M.account(ctx, chain_id, address)
  if not wallet.parse_address(address) then fail(400, "invalid_address", address .. " is not an address", "address") end
  return 200, account_view(ctx.store:chain_account(chain_of(ctx, chain_id), address))
end

function M.history(ctx, chain_id, address)
  local items = json.array()
  for i, t in ipairs(ctx.store:chain_history(chain_of(ctx, chain_id), address, 100)) do items[i] = tx_view(t) end
  return 200, { items = items }
end

function M.submit(ctx, chain_id)
  writable(ctx)
  chain_of(ctx, chain_id)
  local body = ctx:body_object()
  if body.transactions ~= nil then return M.submit_batch(ctx, chain_id, body.transactions) end
  local hash = apply(ctx, chain_id, body.tx, body.signature, false)
  return 202, { hash = hash, tx_hash = hash, status = "pending" }
end

M.BATCH_MAX = 1000

local function refusal(e)
  if not util.is_http_error(e) then error(e, 0) end -- not a refusal: roll the whole batch back
  return { status = "rejected", error = { code = e.code, message = e.message, field = e.field } }
end

--- {transactions = [{tx, signature}, ...]}: each checked and applied on its
-- own, in order, under one commit (a relay's or an exchange's many
-- transfers cost one write); answers one result per transaction.
function M.submit_batch(ctx, chain_id, list)
  if type(list) ~= "table" or #list == 0 or #list > M.BATCH_MAX then
    fail(400, "invalid_batch", "transactions must be a list of 1 to " .. M.BATCH_MAX .. " {tx, signature} objects",
      "transactions")
  end
  local results, checked = json.array(), {}
  for i, item in ipairs(list) do
    local ok, c = pcall(function()
      if type(item) ~= "table" then fail(400, "invalid_tx", "each entry must be {tx, signature}") end
      return check_tx(chain_id, item.tx, item.signature, false)
    end)
    if ok then checked[i] = c else results[i] = refusal(c) end
  end
  local accepted = 0
  ctx.store:transaction(function()
    for i = 1, #list do
      local c = checked[i]
      if c then
        local ok, e = pcall(commit_tx, ctx.store, chain_id, c, ctx.now)
        if ok then
          results[i], accepted = { hash = c.hash, status = "pending" }, accepted + 1
        else
          results[i] = refusal(e)
        end
      end
    end
  end)
  return 200, { accepted = accepted, rejected = #list - accepted, results = results }
end

function M.faucet(ctx, chain_id)
  writable(ctx)
  chain_of(ctx, chain_id)
  local body = ctx:body_object()
  local to = body.address
  if type(to) ~= "string" or not wallet.parse_address(to) then
    fail(400, "invalid_address", "address is not an AITBC address", "address")
  end
  local amount = M.FAUCET_DEFAULT
  if body.amount ~= nil then
    local ok, err = money.parse(body.amount)
    if not ok or ok <= 0 or ok > M.FAUCET_MAX then
      fail(400, "invalid_amount", "amount must be more than 0 and at most " .. money.format(M.FAUCET_MAX) .. " AITBC"
        .. (err and (": " .. err) or ""), "amount")
    end
    amount = ok
  end
  local from = wallet.address(ctx.node_key.public)
  -- the rate limit and the nonce are read and used under one write lock:
  -- concurrent faucet requests must not both pass it, nor share a nonce
  local hash = ctx.store:transaction(function()
    if ctx.store:chain_faucet_since(chain_id, to, ctx.now - 60) > 0 then
      fail(429, "faucet_rate_limited", "this address got coins from the faucet less than a minute ago; try again later")
    end
    local tx = { chain_id = chain_id, type = "faucet", from = from, public_key = crypto.hex(ctx.node_key.public),
      nonce = ctx.store:chain_account(chain_id, from).nonce + 1, payload = { to = to, amount = tostring(amount) },
      timestamp = math.floor(ctx.now) }
    return apply(ctx, chain_id, tx, M.sign(M.hash(tx), ctx.node_key.secret), true)
  end)
  return 202, { hash = hash, status = "pending", address = to, amount = money.format(amount) }
end

return M
