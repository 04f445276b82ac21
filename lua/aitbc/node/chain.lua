--- The chain: a proof-of-authority ledger kept by the node.
-- Transactions are canonical JSON (sorted keys, no spaces) signed with the
-- sender's Ed25519 key; the sender's address must be that key's address,
-- the nonce exactly one more than the account's, amounts decimal strings of
-- integer base units (1 AITBC = 10^9) and never more than the balance.  A
-- valid transaction is applied at once (one database transaction) and
-- sealed into the next block; blocks are produced every --block-time
-- seconds, hash-linked, and signed by the node's key.
-- Types: transfer {to, amount}, stake {amount}, unstake {amount},
-- escrow_lock {job_id, amount} (a client funds its own job, through
-- POST /v1/jobs/{id}/payment only: the coins move to the job's escrow
-- account "escrow:JOB"); and, written by the node itself: faucet (devnet
-- coins, within the limits of M.FAUCET), escrow_release (to the
-- miner's payout address when the job completed) and escrow_refund (to the
-- payer when it failed, expired or was canceled, or the miner named no
-- payout address).
local addresses = require "aitbc.protocol.address"
local crypto = require "aitbc.crypto"
local governance = require "aitbc.node.governance"
local gp = require "aitbc.protocol.governance"
local json = require "aitbc.json"
local money = require "aitbc.money"
local signing = require "aitbc.protocol.signing"
local txcheck = require "aitbc.node.txcheck"
local util = require "aitbc.node.util"

local fail = util.fail
local units, only_fields, tx_address, is_object = txcheck.units, txcheck.only_fields, txcheck.address, txcheck.is_object

local M = { SUPPLY = 1000000000 * money.UNIT, MAX_RENTAL_HOURS = 720 }

--- The booking (and bid) a rental_lock with this hash pays for: bk_ and 12 hex digits.
function M.booking_id(tx_hash) return "bk_" .. tx_hash:sub(1, 12) end

local ZERO = string.rep("0", 64)

-- What blocks and transactions are hashed and signed over (aitbc.protocol.signing).
M.hash, M.sign = signing.hash, signing.sign

--- A block's transaction root: SHA-256 of its transaction hashes in order.
local function tx_root(hashes)
  return #hashes > 0 and crypto.hex(crypto.sha256(table.concat(hashes))) or ZERO
end

--- params: the chain's parameters at genesis (chains made before
-- governance have none in their header: theirs are the defaults).
local function genesis_header(chain_id, authority_public, timestamp, params)
  return { chain_id = chain_id, height = 0, prev_hash = ZERO, timestamp = timestamp, tx_count = 0, tx_root = ZERO,
    proposer = crypto.base64(authority_public, "urlsafe"), faucet = addresses.of(authority_public),
    supply = tostring(M.SUPPLY), params = params }
end

--- Records a genesis block and its parameters (as the header covers them).
local function insert_genesis(store, chain_id, header, hash, proposer, signature)
  store:chain_block_insert { chain_id = chain_id, height = 0, hash = hash, prev_hash = ZERO, timestamp = header.timestamp,
    tx_count = 0, tx_root = ZERO, proposer = proposer, signature = signature,
    params = header.params and json.encode(header.params) or nil }
  for name, value in pairs(header.params or {}) do store:param_set(chain_id, name, 0, value, nil) end
end

--- The genesis of a chain: the node's faucet account holds the supply;
-- params {name = value} (normalized) set its parameters.  A chain that
-- exists keeps its own (they change only through governance): returns
-- the names given that differ from the chain's.
function M.genesis(store, chain_id, node_key, now, params)
  if store:chain_head(chain_id) then
    local differ = {}
    for name, value in pairs(params or {}) do
      if governance.param(store, chain_id, name) ~= value then differ[#differ + 1] = name end
    end
    table.sort(differ)
    return differ
  end
  local faucet = addresses.of(node_key.public)
  store:transaction(function()
    store:chain_put_account { chain_id = chain_id, address = faucet, balance = M.SUPPLY, staked = 0, nonce = 0 }
    local header = genesis_header(chain_id, node_key.public, math.floor(now), governance.genesis_params(params))
    local hash = M.hash(header)
    insert_genesis(store, chain_id, header, hash, node_key.id, M.sign(hash, node_key.secret))
  end)
  return {}
end

--- Seals the pending transactions of a chain into a new block; jobs held
-- for a payment it funds are then offered to the miners waiting for them.
function M.produce(store, chain_id, node_key, now)
  local height, released = store:transaction(function()
    local head = store:chain_head(chain_id)
    -- proposals whose voting ends in this block: their tallies go in after every vote
    governance.tally_due(store, chain_id, node_key, head.height + 1, now)
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
    local released = #pending > 0 and store:chain_seal(chain_id, header.height, pending[#pending].seq) or nil
    governance.sealed(store, chain_id, header.height)
    return header.height, released
  end)
  for _, job in ipairs(released or {}) do require("aitbc.node.jobs").announce(job) end
  return height
end

-- What a transaction holds: these fields and no other, and per type these
-- payload fields.  The leader checks every field here before it accepts a
-- transaction, and its followers check the same fields the same way, so
-- that whatever a leader seals its followers can apply (and hash alike).
local TX_FIELDS = { chain_id = true, type = true, from = true, public_key = true, nonce = true, payload = true,
  timestamp = true }
local PAYLOAD_FIELDS = {
  transfer = { to = true, amount = true }, faucet = { to = true, amount = true },
  stake = { amount = true }, unstake = { amount = true }, escrow_lock = { job_id = true, amount = true },
  miner_reward = { to = true, amount = true, job_id = true },
  rental_lock = { listing_id = true, hours = true, amount = true },
}
--- Transaction types by where they come from.
local SUBMITTED = { transfer = true, stake = true, unstake = true, gov_propose = true, gov_vote = true } -- POST .../transactions
local PAYMENT = { escrow_lock = true } -- POST /v1/jobs/{id}/payment
local FAUCET = { faucet = true } -- written by the node
local REWARD = { miner_reward = true } -- written by the node
local RENTAL = { rental_lock = true } -- POST /v1/marketplace/gpu/{id}/book and /v1/marketplace/bids
local SEALED = { transfer = true, stake = true, unstake = true, escrow_lock = true, faucet = true, miner_reward = true,
  gov_propose = true, gov_vote = true, rental_lock = true } -- a leader's block (also gov_tally and settlements: replayed apart)
--- A transaction's timestamp may differ from the leader's clock by this much.
M.CLOCK_SKEW = 3600

--- The transaction's type, refused unless this route takes it (kinds).
local function check_type(tx, kinds)
  if tx.type == "escrow_lock" and not kinds.escrow_lock then
    fail(400, "use_payment_route", "an escrow_lock pays for a job: send it to POST /v1/jobs/{job_id}/payment "
      .. "(aitbc client pay JOB_ID --amount AITBC), which checks that the job is yours and can be paid", "type")
  end
  if type(tx.type) ~= "string" or not kinds[tx.type] then
    local names = {}
    for k in pairs(kinds) do names[#names + 1] = k end
    table.sort(names)
    fail(400, "invalid_type", "tx.type must be " .. table.concat(names, ", "), "type")
  end
end

--- The sender's public key (raw bytes), which must be the key of tx.from.
local function sender_key(tx)
  tx_address(tx.from, "from")
  local pk = type(tx.public_key) == "string" and #tx.public_key == 64 and crypto.unhex(tx.public_key)
  if not pk or #pk ~= 32 then fail(400, "invalid_key", "tx.public_key must be 32 bytes of hex", "public_key") end
  if addresses.of(pk) ~= tx.from then fail(400, "key_mismatch", "tx.public_key is not the key of tx.from", "public_key") end
  return pk
end

local function check_nonce_and_time(tx, now)
  if math.type(tx.nonce) ~= "integer" or tx.nonce < 1 then
    fail(400, "invalid_nonce", "tx.nonce must be a whole number of at least 1 (a JSON number, not a string)", "nonce")
  end
  if math.type(tx.timestamp) ~= "integer" or tx.timestamp < 0 then
    fail(400, "invalid_timestamp", "tx.timestamp must be a whole number of Unix seconds (a JSON number)", "timestamp")
  end
  if now and math.abs(tx.timestamp - now) > M.CLOCK_SKEW then
    fail(400, "invalid_timestamp", string.format("tx.timestamp %d is more than %d seconds from the node's clock (%d); "
      .. "check this computer's clock", tx.timestamp, M.CLOCK_SKEW, math.floor(now)), "timestamp")
  end
end

local function job_id_field(value, field)
  if type(value) ~= "string" or #value > 64 or not value:match("^%x+$") then
    fail(400, "invalid_job", field .. " must be a job id", field)
  end
end

--- The payload's amount (base units) and the account it goes to (nil for
-- stake, unstake and votes; a proposal's account comes from its hash).
local function check_payload(tx)
  if governance.TYPES[tx.type] then return governance.payload(tx), nil end
  local payload = tx.payload
  if not is_object(payload) then fail(400, "invalid_payload", "tx.payload must be an object", "payload") end
  only_fields(payload, PAYLOAD_FIELDS[tx.type], "payload.")
  local amount = units(payload.amount, "payload.amount")
  if tx.type == "escrow_lock" then
    job_id_field(payload.job_id, "payload.job_id")
    return amount, "escrow:" .. payload.job_id
  elseif tx.type == "rental_lock" then -- its booking's account comes from its hash
    if type(payload.listing_id) ~= "string" or not (payload.listing_id == "bid" or payload.listing_id:match("^gpu_%x+$")) then
      fail(400, "invalid_listing", "payload.listing_id must be a listing id (gpu_…) or \"bid\"", "payload.listing_id")
    end
    if math.type(payload.hours) ~= "integer" or payload.hours < 1 or payload.hours > M.MAX_RENTAL_HOURS then
      fail(400, "invalid_hours", "payload.hours must be a whole number from 1 to " .. M.MAX_RENTAL_HOURS, "payload.hours")
    end
    return amount, nil
  elseif tx.type == "transfer" or tx.type == "faucet" or tx.type == "miner_reward" then
    if tx.type == "miner_reward" then job_id_field(payload.job_id, "payload.job_id") end
    tx_address(payload.to, "payload.to")
    if payload.to == tx.from then fail(400, "self_transfer", "payload.to is the sender", "payload.to") end
    return amount, payload.to
  end
  return amount, nil
end

--- Checks what a transaction says on its own (fields, key, signature) — no
-- state, so outside the write lock; returns what commit needs.  kinds: the
-- types this route takes; now: the leader's clock (nil when a follower
-- replays a sealed block: the timestamp was checked when it was accepted).
local function check_tx(chain_id, tx, signature, kinds, now)
  if not is_object(tx) then fail(400, "invalid_tx", "tx must be an object", "tx") end
  only_fields(tx, TX_FIELDS, "")
  if tx.chain_id ~= chain_id then
    fail(400, "wrong_chain", "tx.chain_id is " .. tostring(tx.chain_id) .. ", not " .. chain_id, "chain_id")
  end
  check_type(tx, kinds)
  local pk = sender_key(tx)
  check_nonce_and_time(tx, now)
  local amount, to = check_payload(tx)
  local hash = M.hash(tx)
  if not signing.verify(signature, hash, pk) then fail(400, "bad_signature", "the signature does not verify", "signature") end
  if tx.type == "gov_propose" then to = governance.account_of(gp.proposal_id(hash)) end
  if tx.type == "rental_lock" then to = "rent:" .. M.booking_id(hash) end
  return { hash = hash, tx = tx, signature = signature, amount = amount, to = to }
end

--- Applies a checked transaction against the accounts; call inside a store
-- transaction.  Every refusal comes before the first write, so a refused
-- transaction leaves nothing behind even when the caller goes on.
-- replaying: a follower applying its leader's block (no leader-only policy).
local function commit_tx(store, chain_id, c, now, replaying)
  local tx, hash, amount, to = c.tx, c.hash, c.amount, c.to
  if store:chain_tx(hash) then fail(409, "duplicate_tx", "transaction " .. hash .. " was already accepted") end
  local a = store:chain_account(chain_id, tx.from)
  if tx.nonce ~= a.nonce + 1 then
    fail(400, "bad_nonce", string.format("tx.nonce must be %d (the account's next), got %s", a.nonce + 1,
      tostring(tx.nonce)), "nonce")
  end
  local gov = governance.TYPES[tx.type]
    and governance.check(store, chain_id, c, a, store:chain_height(chain_id), replaying)
  if tx.type == "unstake" then
    if a.staked < amount then fail(400, "insufficient_stake", "only " .. money.format(a.staked) .. " AITBC is staked") end
    governance.check_unstake(store, chain_id, tx.from, a.staked, amount)
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
  if gov then governance.apply(store, chain_id, c, gov, now) end
  return hash
end

--- Checks and applies one signed transaction {tx, signature} on a
-- leader's store, as POST .../transactions does (kinds: the types taken,
-- default those a client submits); returns its hash.
function M.accept(store, chain_id, body, now, kinds)
  local c = check_tx(chain_id, body.tx, body.signature, kinds or SUBMITTED, now)
  return store:transaction(function() return commit_tx(store, chain_id, c, now) end)
end

--- The same in two steps, for a route whose own records must commit with
-- the transaction: check (no state) -> c {hash, tx, amount, to}; then
-- commit(store, chain_id, c, now) inside the caller's store transaction.
function M.check_rental(chain_id, body, now) return check_tx(chain_id, body.tx, body.signature, RENTAL, now) end
function M.commit(store, chain_id, c, now) return commit_tx(store, chain_id, c, now) end

local chain_of = util.chain_of

local function writable(ctx, chain_id)
  if ctx.config.follow then
    fail(409, "follower", "this node follows " .. ctx.config.follow .. "; send transactions there")
  end
  -- a peer's chain this node only follows: its host takes its transactions
  local f = chain_id and ctx.store:chain_follow_get(chain_id)
  if f then
    fail(409, "peer_chain", chain_id .. " is hosted by the peer " .. f.leader .. "; this node only follows it: send its "
      .. "transactions there (aitbc --url " .. f.leader .. " ...)", "chain_id")
  end
end

--- The node's settlements: the account each moves coins from, by the
-- reference its payload names.
local SETTLEMENTS = {
  escrow_release = { ref = "job_id", prefix = "escrow:" }, escrow_refund = { ref = "job_id", prefix = "escrow:" },
  rental_release = { ref = "booking_id", prefix = "rent:" }, rental_refund = { ref = "booking_id", prefix = "rent:" },
}

--- Settles an escrow: everything in its account (or `amount` of it) goes to
-- `to`, in a transaction the node signs.  kind: escrow_release or
-- escrow_refund (ref: a job id; account escrow:JOB), rental_release or
-- rental_refund (ref: a booking id; account rent:BOOKING).  Returns the
-- transaction's hash, or nil when the escrow holds nothing.
function M.settle(store, chain_id, ref, to, kind, node_key, now, amount)
  local spec = assert(SETTLEMENTS[kind], "a settlement kind")
  return store:transaction(function()
    local escrow = store:chain_account(chain_id, spec.prefix .. ref)
    if escrow.balance <= 0 then return nil end
    amount = math.min(amount or escrow.balance, escrow.balance)
    if amount <= 0 then return nil end
    escrow.balance, escrow.nonce = escrow.balance - amount, escrow.nonce + 1
    store:chain_put_account(escrow)
    local dest = store:chain_account(chain_id, to)
    dest.balance = dest.balance + amount
    store:chain_put_account(dest)
    local tx = { chain_id = chain_id, type = kind, from = spec.prefix .. ref, public_key = crypto.hex(node_key.public),
      nonce = escrow.nonce, payload = { [spec.ref] = ref, to = to, amount = tostring(amount) }, timestamp = math.floor(now) }
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
    local payout = job.state == "COMPLETED" and job.payout_address and addresses.normalize(job.payout_address)
    local to = payout or job.payer
    local kind = payout and "escrow_release" or "escrow_refund"
    -- one transaction: the escrow and the job's payment status change together
    store:transaction(function()
      local hash = M.settle(store, job.payment_chain, job.job_id, to, kind, node_key, now)
      store:job_payment(job.job_id, { payment_status = payout and "released" or "refunded", settlement_id = hash })
    end)
    n = n + 1
  end
  return n
end

--- Pays each completed job's miner the chain's miner_reward from the
-- authority's account (a miner_reward transaction the node signs), on
-- the chain the job was paid on, else the node's first; the supervisor runs
-- this.  A miner without a payout address, a reward of 0, or an authority
-- account that cannot pay: the job is marked as owed none.  Returns how many
-- were paid.
function M.reward_jobs(store, node_key, now, default_chain, limit)
  local paid = 0
  for _, job in ipairs(store:jobs_to_reward(limit or 200)) do
    store:transaction(function()
      local chain_id = job.payment_chain or default_chain
      local reward = governance.number(store, chain_id, "miner_reward")
      local to = job.payout_address and addresses.normalize(job.payout_address)
      local from = addresses.of(node_key.public)
      local treasury = store:chain_account(chain_id, from)
      if not to or reward <= 0 or treasury.balance < reward or to == from then
        store:job_reward(job.job_id, "none", nil)
        return
      end
      local tx = { chain_id = chain_id, type = "miner_reward", from = from, public_key = crypto.hex(node_key.public),
        nonce = treasury.nonce + 1, payload = { to = to, amount = tostring(reward), job_id = job.job_id },
        timestamp = math.floor(now) }
      local c = check_tx(chain_id, tx, M.sign(M.hash(tx), node_key.secret), REWARD, now)
      store:job_reward(job.job_id, "paid", commit_tx(store, chain_id, c, now))
      paid = paid + 1
    end)
  end
  return paid
end

--- Refunds escrow that no job payment accounts for — locked through the
-- public transactions route before it refused escrow locks (another
-- client's job, or no job) — to the senders of its locks, newest first
-- (older locks went with their job's settlement).  The leader runs it at
-- start; returns how many refunds it made.
function M.refund_stranded(store, node_key, now)
  local n = 0
  for _, e in ipairs(store:chain_stranded_escrows()) do
    local job_id, left = e.address:sub(#"escrow:" + 1), e.balance
    local locks = store:chain_locks_into(e.chain_id, e.address)
    for i = #locks, 1, -1 do
      if left <= 0 then break end
      local amount = math.min(locks[i].amount, left)
      M.settle(store, e.chain_id, job_id, locks[i].sender, "escrow_refund", node_key, now, amount)
      left, n = left - amount, n + 1
    end
  end
  return n
end

--- POST /v1/jobs/{id}/payment {tx, signature}: the client's own job, funded
-- by an escrow_lock transaction from the paying wallet.  A queued or running
-- job's escrow waits for the job to end; a completed job not yet paid is
-- settled at once to its miner (released once the lock is in a block), so
-- a job that finished before its client paid can still be paid.
local function check_payable(ctx, job_id)
  local job = ctx.store:job_get(job_id)
  if not job or (job.client_key_id ~= ctx.key.key_id and ctx.key.role ~= "admin") then
    fail(404, "job_not_found", "job " .. job_id .. " not found")
  end
  if job.payment_id then fail(409, "already_paid", "job " .. job_id .. " already has a payment (" .. job.payment_id .. ")") end
  if job.state == "COMPLETED" then
    if not (job.miner_id and ctx.store:miner_payout(job.miner_id)) then
      fail(409, "no_payout_address", "job " .. job_id .. " was completed by miner " .. tostring(job.miner_id)
        .. ", which named no payout address: there is nobody to pay")
    end
  elseif job.state ~= "QUEUED" and job.state ~= "RUNNING" then
    fail(409, "job_ended", "job " .. job_id .. " ended " .. job.state .. " without a result; there is nothing to pay for")
  end
  return job
end

function M.pay_job(ctx, job_id)
  writable(ctx)
  local job = check_payable(ctx, job_id)
  local body = ctx:body_object()
  local tx = body.tx
  if type(tx) ~= "table" or tx.type ~= "escrow_lock" or type(tx.payload) ~= "table" or tx.payload.job_id ~= job_id then
    fail(400, "invalid_payment", "the payment must be an escrow_lock transaction for job " .. job_id, "tx")
  end
  local chain_id = chain_of(ctx, tx.chain_id)
  writable(ctx, chain_id)
  local c = check_tx(chain_id, tx, body.signature, PAYMENT, ctx.now)
  if job.payment_status == "awaiting" and c.amount ~= job.payment_amount then
    fail(400, "invalid_payment", string.format("job %s was submitted with payment_amount %s AITBC; the escrow lock must "
      .. "be exactly that, not %s AITBC", job_id, money.format(job.payment_amount), money.format(c.amount)),
      "tx.payload.amount")
  end
  -- the escrow lock and the job's payment record commit together
  ctx.store:transaction(function()
    check_payable(ctx, job_id) -- again under the lock: two payments for one job must not both pass
    commit_tx(ctx.store, chain_id, c, ctx.now)
    ctx.store:job_payment(job_id, { payment_id = c.hash, payment_status = "pending", payment_amount = c.amount,
      payment_chain = chain_id, payer = tx.from })
  end)
  return 202, { job_id = job_id, payment_id = c.hash, tx_hash = c.hash, payment_status = "pending", chain_id = chain_id,
    amount = money.format(c.amount), job_state = job.state }
end

-- ---- following another node ----

local function refuse(why) error({ follow_error = why }, 0) end

--- Replays a node-signed escrow settlement from the leader: the same fields
-- M.settle writes, signed by the authority, fitting the escrow.
local function replay_settlement(store, chain_id, tx, signature, authority_public)
  only_fields(tx, TX_FIELDS, "")
  local payload, spec = tx.payload, SETTLEMENTS[tx.type]
  if not is_object(payload) then fail(400, "invalid_payload", "tx.payload must be an object", "payload") end
  only_fields(payload, { [spec.ref] = true, to = true, amount = true }, "payload.")
  local ref = payload[spec.ref]
  if tx.chain_id ~= chain_id or type(ref) ~= "string" or tx.from ~= spec.prefix .. ref then
    fail(400, "invalid_tx", "a settlement must move an escrow on this chain", "from")
  end
  tx_address(payload.to, "payload.to")
  local amount = units(payload.amount, "payload.amount")
  if math.type(tx.nonce) ~= "integer" or math.type(tx.timestamp) ~= "integer" then
    fail(400, "invalid_tx", "a settlement's nonce and timestamp must be whole numbers", "nonce")
  end
  if tx.public_key ~= crypto.hex(authority_public) or not signing.verify(signature, M.hash(tx), authority_public) then
    fail(400, "bad_signature", "the settlement is not signed by the authority", "signature")
  end
  local escrow = store:chain_account(chain_id, tx.from)
  if escrow.balance < amount or tx.nonce ~= escrow.nonce + 1 then
    fail(400, "invalid_tx", "the settlement does not fit the escrow (balance, nonce)", "nonce")
  end
  escrow.balance, escrow.nonce = escrow.balance - amount, escrow.nonce + 1
  store:chain_put_account(escrow)
  local dest = store:chain_account(chain_id, payload.to)
  dest.balance = dest.balance + amount
  store:chain_put_account(dest)
  store:chain_tx_insert { hash = M.hash(tx), chain_id = chain_id, type = tx.type, sender = tx.from, recipient = payload.to,
    amount = amount, nonce = escrow.nonce, received_at = tx.timestamp, body = json.encode { tx = tx, signature = signature } }
end

--- Applies one transaction of the sealed block at height: what the leader
-- accepted (checked as it checked it, but for its clock) or wrote itself.
local function replay_tx(store, chain_id, t, authority_public, height)
  local tx = t.tx
  if not is_object(tx) then fail(400, "invalid_tx", "tx must be an object", "tx") end
  if SETTLEMENTS[tx.type] then return replay_settlement(store, chain_id, tx, t.signature, authority_public) end
  if tx.type == "gov_tally" then
    only_fields(tx, TX_FIELDS, "")
    return governance.replay_tally(store, chain_id, tx, t.signature, authority_public, height)
  end
  if (tx.type == "faucet" or tx.type == "miner_reward") and tx.public_key ~= crypto.hex(authority_public) then
    fail(400, "bad_signature", "a " .. tx.type .. " transaction must come from the authority", "public_key")
  end
  local c = check_tx(chain_id, tx, t.signature, SEALED, nil)
  if tx.type == "miner_reward" and c.amount ~= governance.number(store, chain_id, "miner_reward") then
    fail(400, "invalid_reward", "the reward is not the chain's miner_reward", "payload.amount")
  end
  commit_tx(store, chain_id, c, tx.timestamp, true)
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
      if type(block.params) == "string" then block.params = json.decode(block.params) end -- a stored row's
      if block.params ~= nil then
        local ok, why = governance.check_genesis_params(block.params)
        if not ok then refuse("the genesis block: " .. why) end
      end
      header = genesis_header(chain_id, authority_public, block.timestamp, block.params)
      store:chain_put_account { chain_id = chain_id, address = header.faucet, balance = M.SUPPLY, staked = 0, nonce = 0 }
    else
      if not head or block.height ~= head.height + 1 or block.prev_hash ~= head.hash then
        refuse("block " .. tostring(block.height) .. " does not extend the local head")
      end
      header = { chain_id = chain_id, height = block.height, prev_hash = block.prev_hash, timestamp = block.timestamp,
        tx_count = block.tx_count, tx_root = block.tx_root, proposer = block.proposer }
    end
    if M.hash(header) ~= block.hash then refuse("block " .. block.height .. ": its hash does not match its header") end
    if not signing.verify(block.signature, block.hash, authority_public) then
      refuse("block " .. block.height .. " is not signed by the authority")
    end
    if #txs ~= block.tx_count then refuse("block " .. block.height .. ": transaction count differs") end
    local hashes = {}
    for i, t in ipairs(txs) do
      local h = M.hash(t.tx)
      if h ~= block.transactions[i] then refuse("block " .. block.height .. ": transaction " .. i .. " is not the one listed") end
      hashes[i] = h
      -- a refused transaction changes nothing before it is refused, and the
      -- whole block rolls back with the refusal
      local ok, err = pcall(replay_tx, store, chain_id, t, authority_public, block.height)
      if not ok then
        refuse("block " .. block.height .. ": transaction " .. h .. " is invalid: "
          .. tostring(type(err) == "table" and err.message or err))
      end
    end
    local root = tx_root(hashes)
    if root ~= block.tx_root then refuse("block " .. block.height .. ": the transaction root does not match") end
    if block.height == 0 then
      insert_genesis(store, chain_id, header, block.hash, block.proposer, block.signature)
    else
      store:chain_block_insert { chain_id = chain_id, height = block.height, hash = block.hash, prev_hash = block.prev_hash,
        timestamp = block.timestamp, tx_count = block.tx_count, tx_root = block.tx_root, proposer = block.proposer,
        signature = block.signature }
    end
    store:chain_seal_all(chain_id, block.height)
    governance.sealed(store, chain_id, block.height)
  end)
end

--- The faucet's limits (README "The chain").  A request gives at most MAX;
-- an address gets one grant a minute and at most ADDRESS_DAY a day; an API
-- key gets at most KEY_HOUR an hour (admin keys have no per-key limit: they
-- can make keys anyway); and the faucet account never goes below FLOOR.
M.FAUCET = {
  DEFAULT = 100 * money.UNIT, MAX = 1000 * money.UNIT,
  ADDRESS_INTERVAL = 60, ADDRESS_DAY = 2000 * money.UNIT, KEY_HOUR = 10000 * money.UNIT,
  FLOOR = M.SUPPLY // 2,
}
--- A devnet's (a chain named so: one person's local network, where trying
-- governance takes a deposit and a stake of some thousands at once).
M.FAUCET_DEVNET = {
  DEFAULT = 100 * money.UNIT, MAX = 10000 * money.UNIT,
  ADDRESS_INTERVAL = 0, ADDRESS_DAY = 100000 * money.UNIT, KEY_HOUR = 1000000 * money.UNIT,
  FLOOR = M.SUPPLY // 2,
}

--- Whether `aitbc serve --faucet auto` turns the faucet on for a chain:
-- devnet chains only, named so (the default "ait-devnet").
M.BLOCKS_PER_PULL = 200

--- Fetches and applies the blocks of chain c that the node behind client
-- (an aitbc.api client) has beyond ours, at most BLOCKS_PER_PULL, each
-- verified against the authority's key; the head request says how far we
-- are (the sealer's status lists its followers' lag).  -> nil, or the
-- refused height and why.  Followers (serve --follow) and peers use it.
function M.pull_blocks(store, client, c, authority_public)
  local head = store:chain_head(c)
  local leader = client:call("GET", "/v1/chain/" .. c .. "/head",
    { headers = head and { ["X-Aitbc-Follower-Height"] = tostring(head.height) } or nil })
  local from = head and head.height + 1 or 0
  for h = from, math.min(leader.height, from + M.BLOCKS_PER_PULL - 1) do
    local block = client:call("GET", "/v1/chain/" .. c .. "/blocks/" .. h)
    local txs = {}
    for i, hash in ipairs(block.transactions) do
      local t = client:call("GET", "/v1/chain/" .. c .. "/transactions/" .. hash)
      txs[i] = { tx = t.tx, signature = t.signature }
    end
    local ok, e = pcall(M.follow_block, store, c, block, txs, authority_public)
    if not ok then return h, type(e) == "table" and (e.follow_error or e.message) or tostring(e) end
  end
end

function M.is_devnet(chain_id) return chain_id:lower():find("devnet", 1, true) ~= nil end

local function faucet_on(ctx, chain_id)
  for _, c in ipairs(ctx.config.faucet_chains or {}) do if c == chain_id then return true end end
  return false
end

-- ---- routes ----

--- timestamp: the signed Unix seconds; time: the same instant in RFC 3339.
local function block_view(b)
  return { chain_id = b.chain_id, height = b.height, hash = b.hash, prev_hash = b.prev_hash, timestamp = b.timestamp,
    time = util.iso(b.timestamp), tx_count = b.tx_count, tx_root = b.tx_root, proposer = b.proposer, signature = b.signature,
    params = b.params and json.decode(b.params) or nil } -- genesis: the parameters its hash covers
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

--- How a follower stands, per chain: {chain_id -> {state, refused_height,
-- reason, since}}; empty on a leader.  The supervisor that follows writes
-- it; request handlers read it here.
function M.follow_states(store)
  local out = {}
  for _, r in ipairs(store:chain_follow_states()) do
    out[r.chain_id] = { state = r.state, refused_height = r.height, reason = r.reason, since = util.iso(r.since) }
  end
  return out
end

--- GET /v1/chains.  `authority` (also as `node_key`, which followers read)
-- is the key that signs the chains' blocks: on a follower its leader's, so
-- that a follower can be followed too; `this_node_key` is this node's own.
function M.chains(ctx)
  local items = json.array()
  local following = M.follow_states(ctx.store)
  local authority = ctx.config.authority or ctx.node_key.id
  for _, c in ipairs(ctx.config.chains) do
    local head = ctx.store:chain_head(c)
    items[#items + 1] = { chain_id = c, height = head and head.height, head_hash = head and head.hash,
      faucet = not ctx.config.follow and faucet_on(ctx, c), sync = ctx.config.follow and following[c] or nil,
      hosted = not ctx.config.follow, authority = authority }
  end
  -- peers' chains this node follows (aitbc serve --peer): their host signs their blocks
  if not ctx.config.follow then
    for _, f in ipairs(require("aitbc.node.peers").followed(ctx.store)) do
      local head = ctx.store:chain_head(f.chain_id)
      items[#items + 1] = { chain_id = f.chain_id, height = head and head.height, head_hash = head and head.hash,
        faucet = false, hosted = false, host = f.leader, authority = f.node_key, sync = following[f.chain_id] }
    end
  end
  return 200, { items = items, block_time = ctx.config.block_time, authority = authority, node_key = authority,
    this_node_key = ctx.node_key.id, follows = ctx.config.follow,
    faucet = addresses.of(crypto.unbase64(authority, "urlsafe")) }
end

function M.head(ctx, chain_id)
  local head = ctx.store:chain_head(chain_of(ctx, chain_id))
  -- a follower that has not yet fetched the genesis block
  if not head then
    fail(404, "block_not_found", "no block on " .. chain_id .. " yet (following " .. tostring(ctx.config.follow) .. ")")
  end
  return 200, block_view(head)
end

--- Seals the pending transactions into a block now (admins; tests and
-- scripts that should not wait for --block-time).
function M.seal(ctx, chain_id)
  writable(ctx, chain_id)
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

--- An address from a path or a body, in its one (lower-case) spelling.
local function address_arg(text, field)
  local address, why = addresses.normalize(text)
  if not address then fail(400, "invalid_address", tostring(text) .. " is not an AITBC address: " .. tostring(why), field) end
  return address
end

function M.account(ctx, chain_id, address)
  address = address_arg(address, "address")
  local view = account_view(ctx.store:chain_account(chain_of(ctx, chain_id), address))
  -- paid into job escrows not yet settled (back to it if a job fails, to the miner when it completes)
  local escrowed, jobs = ctx.store:chain_escrowed_by(chain_id, address)
  view.escrow, view.escrow_units, view.escrow_jobs = money.format(escrowed), tostring(escrowed), jobs
  return 200, view
end

function M.history(ctx, chain_id, address)
  address = address_arg(address, "address")
  local limit = util.query_integer(ctx.query, "limit", 1, 500, 100)
  local offset = util.query_integer(ctx.query, "offset", 0, 1000000000, 0)
  local rows, total = ctx.store:chain_history(chain_of(ctx, chain_id), address, limit, offset)
  local items = json.array()
  for i, t in ipairs(rows) do items[i] = tx_view(t) end
  return 200, { items = items, total = total, limit = limit, offset = offset }
end

function M.submit(ctx, chain_id)
  writable(ctx, chain_id)
  chain_of(ctx, chain_id)
  local body = ctx:body_object()
  if body.transactions ~= nil then return M.submit_batch(ctx, chain_id, body.transactions) end
  local hash = M.accept(ctx.store, chain_id, body, ctx.now)
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
      return check_tx(chain_id, item.tx, item.signature, SUBMITTED, ctx.now)
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

--- Seconds until the grants (oldest first) in the last `window` seconds
-- leave room for `amount` under `limit`; nil when there is room now.
local function wait_for_room(grants, window, limit, amount, now)
  local used = 0
  for _, g in ipairs(grants) do used = used + g.amount end
  if used + amount <= limit then return nil end
  for _, g in ipairs(grants) do
    used = used - g.amount
    if used + amount <= limit then return math.max(1, math.ceil(g.granted_at + window - now)) end
  end
  return window
end

local function rate_limited(ctx, limit, message, wait)
  fail(429, "faucet_rate_limited", string.format("%s; try again in %d s (at %s)", message, wait,
    util.iso(ctx.now + wait)), nil, { limit = limit, retry_after = wait })
end

--- The faucet's limits on a chain.
function M.faucet_limits(chain_id) return M.is_devnet(chain_id) and M.FAUCET_DEVNET or M.FAUCET end

--- Refuses a grant that would break a limit (under the write lock).
local function check_faucet_limits(ctx, chain_id, from, to, amount)
  local F, now = M.faucet_limits(chain_id), ctx.now
  local recent = F.ADDRESS_INTERVAL > 0 and ctx.store:faucet_grants(chain_id, "address", to, now - F.ADDRESS_INTERVAL) or {}
  if #recent > 0 then
    rate_limited(ctx, "address_per_minute", "the faucet gives an address one grant a minute",
      math.max(1, math.ceil(recent[#recent].granted_at + F.ADDRESS_INTERVAL - now)))
  end
  local day = ctx.store:faucet_grants(chain_id, "address", to, now - 86400)
  local wait = wait_for_room(day, 86400, F.ADDRESS_DAY, amount, now)
  if wait then
    rate_limited(ctx, "address_per_day", "the faucet gives an address at most " .. money.format(F.ADDRESS_DAY)
      .. " AITBC a day", wait)
  end
  if ctx.key.role ~= "admin" then
    local hour = ctx.store:faucet_grants(chain_id, "key_id", ctx.key.key_id, now - 3600)
    wait = wait_for_room(hour, 3600, F.KEY_HOUR, amount, now)
    if wait then
      rate_limited(ctx, "key_per_hour", "the faucet gives an API key at most " .. money.format(F.KEY_HOUR)
        .. " AITBC an hour", wait)
    end
  end
  local left = ctx.store:chain_account(chain_id, from).balance
  if left - amount < F.FLOOR then
    fail(403, "faucet_floor", string.format("the faucet keeps at least %s AITBC (half the supply) and holds %s: it "
      .. "cannot give %s AITBC; it gives again once coins come back to %s", money.format(F.FLOOR), money.format(left),
      money.format(amount), from), nil, { limit = "floor" })
  end
end

function M.faucet(ctx, chain_id)
  writable(ctx, chain_id)
  chain_of(ctx, chain_id)
  if not faucet_on(ctx, chain_id) then
    fail(403, "faucet_disabled", "the faucet is off on " .. chain_id .. " (aitbc serve --faucet on turns it on; "
      .. "by default it is on for devnet chains only)", nil, { limit = "disabled" })
  end
  local body = ctx:body_object()
  local to = address_arg(body.address, "address")
  local F = M.faucet_limits(chain_id)
  local amount = F.DEFAULT
  if body.amount ~= nil then
    local ok, err = money.parse(body.amount)
    if not ok or ok <= 0 or ok > F.MAX then
      fail(400, "invalid_amount", "amount must be more than 0 and at most " .. money.format(F.MAX) .. " AITBC"
        .. (err and (": " .. err) or ""), "amount")
    end
    amount = ok
  end
  local from = addresses.of(ctx.node_key.public)
  if to == from then fail(400, "self_transfer", "address is the faucet's own", "address") end
  -- the limits and the nonce are read and used under one write lock:
  -- concurrent faucet requests must not both pass them, nor share a nonce
  local hash = ctx.store:transaction(function()
    check_faucet_limits(ctx, chain_id, from, to, amount)
    local tx = { chain_id = chain_id, type = "faucet", from = from, public_key = crypto.hex(ctx.node_key.public),
      nonce = ctx.store:chain_account(chain_id, from).nonce + 1, payload = { to = to, amount = tostring(amount) },
      timestamp = math.floor(ctx.now) }
    local c = check_tx(chain_id, tx, M.sign(M.hash(tx), ctx.node_key.secret), FAUCET, ctx.now)
    local h = commit_tx(ctx.store, chain_id, c, ctx.now)
    ctx.store:faucet_grant({ chain_id = chain_id, key_id = ctx.key.key_id, address = to, amount = amount,
      granted_at = ctx.now }, ctx.now - 86400)
    return h
  end)
  return 202, { hash = hash, status = "pending", address = to, amount = money.format(amount) }
end

return M
