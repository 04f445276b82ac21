--- The older clients' payment routes (reference/upstream-api.md §6) over
-- our escrow: a payment is the escrow_lock a wallet signed for a job
-- (`aitbc client pay`, POST /v1/jobs/{id}/payment); its id is that
-- transaction's hash.  The node cannot sign for a wallet, so creating a
-- payment here answers how to pay.  Release and refund follow the job, as
-- the node settles every escrow when its job ends: a refund cancels a job
-- still queued or running, a release settles a completed job's escrow now.
-- Every route answers only the payment's own client (or an admin).
local chain = require "aitbc.node.chain"
local jobs = require "aitbc.node.jobs"
local money = require "aitbc.money"
local sys = require "aitbc.sys"
local util = require "aitbc.node.util"

local fail, invalid = util.fail, util.invalid

local M = {}

-- our payment_status -> the older API's names (pending -> escrowed -> released | refunded)
local STATUS = { awaiting = "pending", pending = "pending", funded = "escrowed", released = "released",
  refunded = "refunded" }

local function tx_time(store, hash)
  local t = hash and store:chain_tx(hash)
  if not t then return nil end
  local block = t.block_height and store:chain_block(t.chain_id, t.block_height)
  return t.received_at, block and block.timestamp
end

--- JobPaymentView, with our own names beside the older ones.
function M.view(store, job)
  local created, verified = tx_time(store, job.payment_id)
  local settled = tx_time(store, job.settlement_id)
  local status = job.payment_status
  return {
    payment_id = job.payment_id, job_id = job.job_id, amount = money.format(job.payment_amount or 0),
    currency = "AITBC", status = STATUS[status] or status, escrow_status = status, payment_method = "aitbc_token",
    chain_id = job.payment_chain, escrow_address = "escrow:" .. job.job_id, refund_address = job.payer,
    transaction_hash = job.payment_id, created_at = util.iso(created), verified_at = util.iso(verified),
    updated_at = util.iso(settled or verified or created),
    released_at = status == "released" and util.iso(settled) or nil,
    refunded_at = status == "refunded" and util.iso(settled) or nil,
    release_transaction_hash = status == "released" and job.settlement_id or nil,
    refund_transaction_hash = status == "refunded" and job.settlement_id or nil,
  }
end

local function not_found(id) fail(404, "payment_not_found", "payment " .. id .. " not found") end

--- The caller's payment by id (the escrow lock's hash) | 404.
local function own_payment(ctx, payment_id)
  local job = ctx.store:job_by_payment(payment_id)
  if not job or (job.client_key_id ~= ctx.key.key_id and ctx.key.role ~= "admin") then not_found(payment_id) end
  return job
end

--- POST /v1/payments {job_id, amount, …}: the node holds no wallet key, so
-- it says how to pay from the client's wallet.
function M.create(ctx)
  local body = ctx:body_object()
  local job_id = util.optional_string(body, "job_id", 128)
  if not job_id then invalid("job_id", "is required: the job this payment is for") end
  local job = jobs.own_job(ctx, job_id)
  if job.payment_id then
    fail(409, "already_paid", "job " .. job_id .. " already has a payment (" .. job.payment_id .. ")")
  end
  local amount = body.amount ~= nil and money.format(util.rate(body.amount, "amount")) or "AMOUNT"
  fail(422, "payment_required", "a payment is an escrow lock signed by your wallet, which this node cannot sign for you; "
    .. "pay with: aitbc client pay " .. job_id .. " --amount " .. amount, "payment_method")
end

function M.get(ctx, payment_id) return 200, M.view(ctx.store, own_payment(ctx, payment_id)) end

--- GET /v1/jobs/{id}/payment
function M.of_job(ctx, job_id)
  local job = jobs.own_job(ctx, job_id)
  if not job.payment_id then
    fail(404, "payment_not_found", "job " .. job_id .. " has no payment; pay with: aitbc client pay " .. job_id
      .. " --amount AMOUNT")
  end
  return 200, M.view(ctx.store, job)
end

--- GET /v1/payments/{id}/receipt: the escrow lock, once a block holds it.
function M.receipt(ctx, payment_id)
  local job = own_payment(ctx, payment_id)
  local v = M.view(ctx.store, job)
  local t = ctx.store:chain_tx(payment_id)
  return 200, { payment_id = v.payment_id, job_id = v.job_id, amount = v.amount, currency = v.currency,
    status = v.status, transaction_hash = v.transaction_hash, chain_id = v.chain_id,
    block_height = t and t.block_height, created_at = v.created_at, verified_at = v.verified_at }
end

--- The body's job_id, when given, must be the payment's (the older CLI sends both).
local function same_job(ctx, job)
  local body = ctx:body_object()
  local job_id = util.optional_string(body, "job_id", 128)
  if job_id and job_id ~= job.job_id then
    invalid("job_id", "payment " .. job.payment_id .. " is for job " .. job.job_id .. ", not " .. job_id)
  end
end

--- Settles the payment's escrow now when the job has ended and its lock is
-- in a block (otherwise the supervisor does when it is); the job afterwards.
local function settle_now(ctx, job)
  if job.payment_status == "funded" and job.state ~= "QUEUED" and job.state ~= "RUNNING" and not ctx.config.follow then
    chain.settle_jobs(ctx.store, ctx.node_key, ctx.now)
  end
  return ctx.store:job_get(job.job_id)
end

--- POST /v1/payments/{id}/refund {job_id, payment_id, reason}: cancels the
-- job if it is still queued or running; its escrow goes back to the payer.
function M.refund(ctx, payment_id)
  local job = own_payment(ctx, payment_id)
  same_job(ctx, job)
  if job.payment_status == "released" or job.state == "COMPLETED" then
    fail(409, "already_released", "payment " .. payment_id .. " pays for job " .. job.job_id
      .. ", which completed: its escrow goes to the miner and cannot be refunded")
  end
  local canceled = false
  if job.state == "QUEUED" or job.state == "RUNNING" then
    canceled = ctx.store:job_cancel(job.job_id, ctx.now)
    if canceled then sys.notify("job:" .. job.job_id) end
  end
  job = settle_now(ctx, ctx.store:job_get(job.job_id))
  local v = M.view(ctx.store, job)
  v.job_state, v.job_canceled = job.state, canceled
  if v.status ~= "refunded" then v.status = "refund_pending" end -- the lock is not in a block yet
  return 200, v
end

--- POST /v1/payments/{id}/release: a completed job's escrow to its miner.
function M.release(ctx, payment_id)
  local job = own_payment(ctx, payment_id)
  same_job(ctx, job)
  if job.payment_status == "refunded" or (job.state ~= "COMPLETED" and job.state ~= "QUEUED" and job.state ~= "RUNNING") then
    fail(409, "refunded", "payment " .. payment_id .. " is for job " .. job.job_id .. ", which ended " .. job.state
      .. " without a result: its escrow goes back to the payer")
  end
  if job.state ~= "COMPLETED" then
    fail(409, "job_not_completed", "a payment is released to the miner when its job completes; job " .. job.job_id
      .. " is " .. job.state .. " (to take the payment back, refund it: the job is canceled)")
  end
  job = settle_now(ctx, job)
  local v = M.view(ctx.store, job)
  if v.status ~= "released" then v.status = "release_pending" end -- the lock is not in a block yet
  v.job_state = job.state
  return 200, v
end

return M
