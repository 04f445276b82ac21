--- On-chain governance (DESIGN.md §10): proposals and stake-weighted votes
-- are signed transactions; a proposal's voting opens in the block that
-- includes it (its snapshot: the stake at the block before) and closes
-- `voting_period` blocks later, in the block whose producer writes its
-- tally as a transaction of its own (gov_tally, signed by the authority).
-- A follower recomputes every tally from the votes it replayed and refuses
-- one that differs, so leader and followers reach the same state.
--
--   gov_propose {title, description, deposit, changes = {name = value}}:
--     the deposit moves to the proposal's account gov:ID (ID = prop_ + the
--     first 12 hex of the transaction's hash)
--   gov_vote {proposal_id, choice = yes|no|abstain, power}: power at most
--     the voter's stake at the snapshot and now; a later vote replaces an
--     earlier one; stake that voted cannot be unstaked until the tally
--   gov_tally {proposal_id, outcome, quorum_reached, yes, no, abstain,
--     total_power, deposit = returned|burned, changes}: the deposit goes
--     back to the proposer when quorum was reached, to gov:burned
--     otherwise; a passed proposal's changes apply from the next block.
local crypto = require "aitbc.crypto"
local gp = require "aitbc.protocol.governance"
local json = require "aitbc.json"
local money = require "aitbc.money"
local signing = require "aitbc.protocol.signing"
local txcheck = require "aitbc.node.txcheck"
local util = require "aitbc.node.util"

local fail = util.fail

local M = { TYPES = { gov_propose = true, gov_vote = true }, BURNED = "gov:burned", MAX_TITLE = 140,
  MAX_DESCRIPTION = 10000, MAX_CHANGES = 8 }

-- ---- parameters ----

--- A chain parameter's value now, in its one spelling.
function M.param(store, chain_id, name)
  return store:param(chain_id, name) or gp.PARAMS[name].default
end

--- ...as a number: blocks, basis points or base units.
function M.number(store, chain_id, name) return gp.number(name, M.param(store, chain_id, name)) end

--- The parameters of a new chain: the defaults, with given {name = value}
-- (already normalized) over them.
function M.genesis_params(given)
  local params = {}
  for _, name in ipairs(gp.NAMES) do params[name] = (given or {})[name] or gp.PARAMS[name].default end
  return params
end

--- Checks a genesis block's parameters (a follower's): every name known, every value in its one spelling.
function M.check_genesis_params(params)
  if not txcheck.is_object(params) then return nil, "its params are not an object" end
  for name, value in pairs(params) do
    local norm, why = gp.normalize(name, value)
    if norm ~= value then return nil, "parameter " .. tostring(name) .. " " .. tostring(why or "is not in its one spelling") end
  end
  return true
end

--- The parameters as GET .../params shows them: value, since (height) and the proposal that set each.
function M.params_view(store, chain_id)
  local rows = {}
  for _, r in ipairs(store:params_history(chain_id)) do rows[r.name] = r end -- ordered by height: the last wins
  local params = {}
  for _, name in ipairs(gp.NAMES) do
    local r = rows[name]
    params[name] = { value = M.param(store, chain_id, name), since_height = r and r.height or 0,
      proposal_id = r and r.proposal_id or nil, kind = gp.PARAMS[name].kind, help = gp.PARAMS[name].help }
  end
  return params
end

-- ---- transactions ----

local PAYLOADS = {
  gov_propose = { title = true, description = true, deposit = true, changes = true },
  gov_vote = { proposal_id = true, choice = true, power = true },
}

local function check_changes(changes)
  if changes == nil then return {} end
  if not txcheck.is_object(changes) then
    fail(400, "invalid_changes", "payload.changes must be an object {parameter: value}", "payload.changes")
  end
  local n = 0
  for name, value in pairs(changes) do
    n = n + 1
    local field = "payload.changes." .. tostring(name)
    local norm, why = gp.normalize(name, value)
    if not norm then fail(400, "invalid_change", field .. " " .. why, field) end
    if norm ~= value then -- the signature covers the value as sent: one spelling only
      fail(400, "invalid_change", field .. " must be written \"" .. norm .. "\"", field)
    end
  end
  if n > M.MAX_CHANGES then
    fail(400, "invalid_changes", "payload.changes may change at most " .. M.MAX_CHANGES .. " parameters", "payload.changes")
  end
  return changes
end

--- The payload of a governance transaction, shape only (no state): the
-- amount it moves (the deposit; a vote moves none).
function M.payload(tx)
  local payload = tx.payload
  if not txcheck.is_object(payload) then fail(400, "invalid_payload", "tx.payload must be an object", "payload") end
  txcheck.only_fields(payload, PAYLOADS[tx.type], "payload.")
  if tx.type == "gov_propose" then
    txcheck.text(payload.title, "payload.title", M.MAX_TITLE)
    txcheck.text(payload.description, "payload.description", M.MAX_DESCRIPTION)
    check_changes(payload.changes)
    return txcheck.units(payload.deposit, "payload.deposit")
  end
  if type(payload.proposal_id) ~= "string" or not payload.proposal_id:match("^prop_%x+$") or #payload.proposal_id > 40 then
    fail(400, "invalid_proposal", "payload.proposal_id must be a proposal id (prop_ and hex)", "payload.proposal_id")
  end
  if not gp.CHOICES[payload.choice] then
    fail(400, "invalid_choice", "payload.choice must be yes, no or abstain", "payload.choice")
  end
  txcheck.units(payload.power, "payload.power")
  return 0
end

local function aitbc(units) return money.format(units) .. " AITBC" end

local function check_vote(store, chain_id, tx, account, head_height, replaying)
  local payload, id = tx.payload, tx.payload.proposal_id
  local p = store:proposal_get(chain_id, id)
  if not p then fail(404, "proposal_not_found", "no proposal " .. id .. " on " .. chain_id, "payload.proposal_id") end
  if p.status == "pending" then
    fail(409, "voting_not_open", "proposal " .. id .. " is not in a block yet; its voting opens with the next block",
      "payload.proposal_id")
  end
  -- a leader takes votes for the blocks up to the end; a follower replays what its leader sealed
  if p.status ~= "active" or (not replaying and head_height + 1 > p.end_height) then
    fail(409, "voting_closed", string.format("voting on %s closed at block %d", id, p.end_height), "payload.proposal_id")
  end
  local power = math.tointeger(tonumber(payload.power))
  local snapshot = store:stake_at(chain_id, tx.from, p.start_height - 1)
  if power > snapshot or power > account.staked then
    local most = math.min(snapshot, account.staked)
    fail(400, "insufficient_stake", string.format("%s voting power asked; %s had %s staked at block %d (the proposal's "
      .. "snapshot) and has %s staked now, so it can vote with at most %s%s", aitbc(power), tx.from, aitbc(snapshot),
      p.start_height - 1, aitbc(account.staked), aitbc(most),
      snapshot == 0 and " (stake before a proposal opens to vote on it: aitbc wallet stake)" or ""), "payload.power")
  end
  return { proposal = p, power = power }
end

--- Checks a governance transaction against the chain's state, before
-- anything is written; -> what apply needs.  account: the sender's;
-- head_height: the chain's newest block; replaying: a follower's replay.
function M.check(store, chain_id, c, account, head_height, replaying)
  local tx = c.tx
  if tx.type == "gov_propose" then
    local min = M.number(store, chain_id, "min_deposit")
    if c.amount < min then
      fail(400, "deposit_too_small", "the deposit is " .. aitbc(c.amount) .. "; proposals need at least " .. aitbc(min)
        .. " (the chain's min_deposit)", "payload.deposit")
    end
    if store:proposal_get(chain_id, gp.proposal_id(c.hash)) then
      fail(409, "duplicate_proposal", "a proposal with id " .. gp.proposal_id(c.hash) .. " exists; change the text")
    end
    return { voting_period = M.number(store, chain_id, "voting_period"), quorum = M.param(store, chain_id, "quorum"),
      threshold = M.param(store, chain_id, "threshold") }
  end
  return check_vote(store, chain_id, tx, account, head_height, replaying)
end

--- Refuses an unstake of stake that voted on a proposal not yet tallied.
function M.check_unstake(store, chain_id, address, staked, amount)
  local locked = store:stake_locked(chain_id, address)
  if staked - locked < amount then
    fail(400, "stake_locked", string.format("%s of the stake votes on open proposals and stays staked until they are "
      .. "tallied; at most %s can be unstaked now", aitbc(locked), aitbc(math.max(0, staked - locked))), "payload.amount")
  end
end

--- Records what a checked governance transaction did (after its coins moved).
function M.apply(store, chain_id, c, info, now)
  local tx = c.tx
  if tx.type == "gov_propose" then
    store:proposal_insert { chain_id = chain_id, proposal_id = gp.proposal_id(c.hash), tx_hash = c.hash,
      proposer = tx.from, title = tx.payload.title, description = tx.payload.description, deposit = c.amount,
      changes = json.encode(tx.payload.changes or {}), voting_period = info.voting_period,
      quorum = info.quorum, threshold = info.threshold, submitted_at = now }
  else
    store:vote_put { chain_id = chain_id, proposal_id = tx.payload.proposal_id, voter = tx.from,
      choice = tx.payload.choice, power = info.power, tx_hash = c.hash, voted_at = now }
  end
end

--- Where a proposal's deposit goes (its account is gov:ID).
function M.account_of(proposal_id) return "gov:" .. proposal_id end

-- ---- sealing and tallies ----

--- Proposals included in the block at height open for votes (after it is sealed).
function M.sealed(store, chain_id, height) store:proposals_activate(chain_id, height) end

--- A proposal's tally from its votes: what its gov_tally transaction says.
-- Shares are compared as ratios of the integer totals (IEEE division is
-- exact to the last bit on every node, so all decide alike).
function M.tally(store, chain_id, p)
  local v = store:vote_totals(chain_id, p.proposal_id)
  local turnout, total = v.yes + v.no + v.abstain, p.total_power or 0
  local quorum_reached = total > 0 and turnout / total >= gp.number("quorum", p.quorum) / 10000
  local passed = quorum_reached and v.yes + v.no > 0
    and v.yes / (v.yes + v.no) > gp.number("threshold", p.threshold) / 10000
  return { proposal_id = p.proposal_id, outcome = passed and "passed" or "rejected", quorum_reached = quorum_reached,
    yes = tostring(v.yes), no = tostring(v.no), abstain = tostring(v.abstain), total_power = tostring(total),
    deposit = quorum_reached and "returned" or "burned",
    changes = passed and json.decode(p.changes) or {} }
end

local function move(store, chain_id, from, to, amount)
  local a = store:chain_account(chain_id, from)
  a.balance, a.nonce = a.balance - amount, a.nonce + 1
  store:chain_put_account(a)
  local b = store:chain_account(chain_id, to)
  b.balance = b.balance + amount
  store:chain_put_account(b)
  return a.nonce
end

--- Applies a tally decided in the block at height: the deposit, the
-- parameters (from the next block), the proposal's status.
local function apply_tally(store, chain_id, p, tally, height, tx, signature, received_at)
  local to = tally.deposit == "returned" and p.proposer or M.BURNED
  local nonce = move(store, chain_id, M.account_of(p.proposal_id), to, p.deposit)
  if nonce ~= tx.nonce then fail(400, "invalid_tx", "the tally's nonce is not the proposal account's next", "nonce") end
  if tally.outcome == "passed" then
    for name, value in pairs(tally.changes) do store:param_set(chain_id, name, height + 1, value, p.proposal_id) end
  end
  local hash = signing.hash(tx)
  local record = {}
  for k, val in pairs(tally) do record[k] = val end
  record.decided_height, record.applies_from = height, tally.outcome == "passed" and height + 1 or nil
  store:proposal_decide(chain_id, p.proposal_id, tally.outcome, json.encode(record), hash)
  store:chain_tx_insert { hash = hash, chain_id = chain_id, type = "gov_tally", sender = tx.from, recipient = to,
    amount = p.deposit, nonce = nonce, received_at = received_at, body = json.encode { tx = tx, signature = signature } }
  return hash
end

--- The leader, producing the block at height: a gov_tally transaction for
-- each proposal whose voting ends there (written before the block's
-- transactions are gathered, so the block includes it after every vote).
function M.tally_due(store, chain_id, node_key, height, now)
  for _, p in ipairs(store:proposals_due(chain_id, height)) do
    local tally = M.tally(store, chain_id, p)
    local account = store:chain_account(chain_id, M.account_of(p.proposal_id))
    local tx = { chain_id = chain_id, type = "gov_tally", from = account.address, public_key = crypto.hex(node_key.public),
      nonce = account.nonce + 1, payload = tally, timestamp = math.floor(now) }
    apply_tally(store, chain_id, p, tally, height, tx, signing.sign(signing.hash(tx), node_key.secret), now)
  end
end

--- A follower replaying a gov_tally of the block at height: signed by the
-- authority, for a proposal whose voting ended, and equal to the tally of
-- the votes this node replayed.
function M.replay_tally(store, chain_id, tx, signature, authority_public, height)
  local payload = tx.payload
  if not txcheck.is_object(payload) or type(payload.proposal_id) ~= "string" then
    fail(400, "invalid_payload", "a tally names its proposal", "payload.proposal_id")
  end
  if tx.public_key ~= crypto.hex(authority_public) or not signing.verify(signature, signing.hash(tx), authority_public) then
    fail(400, "bad_signature", "the tally is not signed by the authority", "signature")
  end
  local p = store:proposal_get(chain_id, payload.proposal_id)
  if not p or p.status ~= "active" or p.end_height > height or tx.from ~= M.account_of(p.proposal_id) then
    fail(400, "invalid_tx", "no proposal " .. payload.proposal_id .. " whose voting ended by block " .. height, "payload")
  end
  local expected = M.tally(store, chain_id, p)
  if signing.hash(expected) ~= signing.hash(payload) then
    fail(400, "tally_mismatch", "the tally of " .. p.proposal_id .. " does not match its votes here: "
      .. json.encode(expected), "payload")
  end
  apply_tally(store, chain_id, p, expected, height, tx, signature, tx.timestamp)
end

-- ---- views ----

local function blocks_view(p, head)
  local out = { start_height = p.start_height, end_height = p.end_height, snapshot_height = p.start_height
    and p.start_height - 1 or nil, voting_period = p.voting_period }
  if p.end_height and head then out.blocks_left = math.max(0, p.end_height - head.height) end
  return out
end

--- A proposal as the API shows it: its text, timeline, the tally so far
-- (or the decided one), turnout against quorum, and what it changed.
function M.view(store, chain_id, p, head, block_time)
  local totals, voters = store:vote_totals(chain_id, p.proposal_id)
  local decided = p.tally and json.decode(p.tally) or nil
  local turnout = totals.yes + totals.no + totals.abstain
  local total = p.total_power or 0
  local timeline = blocks_view(p, head)
  if timeline.blocks_left and head then
    timeline.ends_at = util.iso(head.timestamp + timeline.blocks_left * (block_time or 0))
  end
  local status = p.status
  return {
    proposal_id = p.proposal_id, chain_id = chain_id, tx_hash = p.tx_hash, proposer = p.proposer, title = p.title,
    description = p.description, deposit = money.format(p.deposit), changes = json.decode(p.changes),
    status = status, submitted_at = util.iso(p.submitted_at), timeline = timeline,
    quorum = p.quorum, threshold = p.threshold,
    tally = { yes = money.format(totals.yes), no = money.format(totals.no), abstain = money.format(totals.abstain),
      voters = voters, turnout = money.format(turnout), total_power = money.format(total),
      turnout_share = total > 0 and turnout / total or 0,
      quorum_reached = total > 0 and turnout / total >= gp.number("quorum", p.quorum) / 10000 },
    decision = decided and { outcome = decided.outcome, quorum_reached = decided.quorum_reached,
      deposit = decided.deposit, changes = decided.changes, decided_height = decided.decided_height,
      applies_from = decided.applies_from, tx_hash = p.tally_tx } or nil,
  }
end

-- ---- routes ----

--- GET /v1/chain/{chain}/params
function M.get_params(ctx, chain_id)
  chain_id = util.chain_of(ctx, chain_id)
  local head = ctx.store:chain_head(chain_id)
  return 200, { chain_id = chain_id, height = head and head.height, params = M.params_view(ctx.store, chain_id) }
end

local STATUSES = { pending = true, active = true, passed = true, rejected = true }

--- GET /v1/chain/{chain}/proposals?status=&limit=&offset=
function M.list(ctx, chain_id)
  chain_id = util.chain_of(ctx, chain_id)
  local status = ctx.query.status and ctx.query.status:lower()
  if status == "all" then status = nil end
  if status and not STATUSES[status] then util.invalid("status", "must be pending, active, passed, rejected or all") end
  local limit = util.query_integer(ctx.query, "limit", 1, 500, 50)
  local offset = util.query_integer(ctx.query, "offset", 0, 1000000000, 0)
  local rows, total = ctx.store:proposals(chain_id, status, limit, offset)
  local head, items = ctx.store:chain_head(chain_id), json.array()
  for i, p in ipairs(rows) do items[i] = M.view(ctx.store, chain_id, p, head, ctx.config.block_time) end
  return 200, { items = items, total = total, limit = limit, offset = offset }
end

local function proposal_of(ctx, chain_id, id)
  local p = ctx.store:proposal_get(chain_id, id)
  if not p then fail(404, "proposal_not_found", "no proposal " .. id .. " on " .. chain_id) end
  return p
end

--- What an address may vote with on p: its stake at the snapshot and now,
-- the most it can vote with, and its vote so far.
local function voter_view(store, chain_id, p, address)
  local normalized = require("aitbc.protocol.address").normalize(address)
  if not normalized then util.invalid("voter", "is not an AITBC address") end
  local staked = store:chain_account(chain_id, normalized).staked
  local snapshot = p.start_height and store:stake_at(chain_id, normalized, p.start_height - 1) or nil
  local vote = store:vote_get(chain_id, p.proposal_id, normalized)
  return { address = normalized, staked = money.format(staked),
    snapshot_stake = snapshot and money.format(snapshot) or nil,
    power = snapshot and money.format(math.min(snapshot, staked)) or nil,
    vote = vote and { choice = vote.choice, power = money.format(vote.power), tx_hash = vote.tx_hash } or nil }
end

--- GET /v1/chain/{chain}/proposals/{id}[?voter=ADDRESS]
function M.show(ctx, chain_id, id)
  chain_id = util.chain_of(ctx, chain_id)
  local p = proposal_of(ctx, chain_id, id)
  local view = M.view(ctx.store, chain_id, p, ctx.store:chain_head(chain_id), ctx.config.block_time)
  if ctx.query.voter then view.voter = voter_view(ctx.store, chain_id, p, ctx.query.voter) end
  return 200, view
end

--- GET /v1/chain/{chain}/proposals/{id}/votes?limit=&offset=
function M.votes(ctx, chain_id, id)
  chain_id = util.chain_of(ctx, chain_id)
  proposal_of(ctx, chain_id, id)
  local limit = util.query_integer(ctx.query, "limit", 1, 500, 100)
  local offset = util.query_integer(ctx.query, "offset", 0, 1000000000, 0)
  local items = json.array()
  for i, v in ipairs(ctx.store:votes(chain_id, id, limit, offset)) do
    items[i] = { voter = v.voter, choice = v.choice, power = money.format(v.power), tx_hash = v.tx_hash,
      voted_at = util.iso(v.voted_at) }
  end
  return 200, { proposal_id = id, items = items, limit = limit, offset = offset }
end

return M
