--- Governance from a client's side: what `aitbc governance` runs and
-- scripts call (require("aitbc.governance")).  Proposals and votes are
-- transactions signed by the active wallet on the chain of the --chain
-- setting; the node keeps the proposals, tallies them in the block that
-- closes their voting, and applies what passed (DESIGN.md §10).
--   local g = require "aitbc.governance"
--   local p = g.propose(ctx, { title = "...", description = "...", deposit = "1000", changes = { "miner_reward=1.05" } })
--   g.vote(ctx, p.proposal_id, "yes", "500")
--   local r = g.result(ctx, p.proposal_id, { wait = true })   -- r.status: passed | rejected
local api = require "aitbc.api"
local errors = require "aitbc.errors"
local gp = require "aitbc.protocol.governance"
local money = require "aitbc.money"
local sys = require "aitbc.sys"

local governance = {}

-- What the functions read from the node's replies (aitbc.api check_reply specs).
governance.VIEW = { proposal_id = "string", status = "string", title = "string", timeline = "object", tally = "object",
  deposit = "scalar" }

local function node(ctx) return api.from_context(ctx, { role = "client" }) end

local function path(ctx, template, values)
  values = values or {}
  values.chain = ctx.settings.chain
  return api.path("/v1/chain/{chain}" .. template, values)
end

local function usage(message, hint, field) errors.raise("usage", message, hint, { code = "usage_error", field = field }) end

--- A proposal as the node shows it; voter: an address whose voting power to include.
function governance.show(ctx, id, voter)
  return (node(ctx):call("GET", path(ctx, "/proposals/{id}", { id = id }), { query = { voter = voter },
    expect = governance.VIEW }))
end

--- A page of proposals (status: pending | active | passed | rejected | nil for all).
function governance.list(ctx, status, limit, offset)
  return (node(ctx):call("GET", path(ctx, "/proposals"), { query = { status = status, limit = limit, offset = offset },
    expect = { items = "array", total = "integer" } }))
end

--- The chain's parameters: {name = {value, since_height, proposal_id, kind, help}}.
function governance.params(ctx)
  return (node(ctx):call("GET", path(ctx, "/params"), { expect = { params = "object" } }))
end

--- "NAME=VALUE" strings (--set) -> {name = value} in their one spelling | a usage error.
function governance.changes(list, option)
  local changes, n = {}, 0
  for _, item in ipairs(list or {}) do
    local name, value = tostring(item):match("^%s*([%w_]+)%s*=%s*(.-)%s*$")
    if not name or value == "" then usage((option or "--set") .. " " .. tostring(item) .. ": write NAME=VALUE",
      "e.g. --set miner_reward=1.05; parameters: " .. table.concat(gp.NAMES, ", "), "set") end
    local norm, why = gp.normalize(name, value)
    if not norm then usage((option or "--set") .. " " .. name .. " " .. why, "see 'aitbc chain params'", "set") end
    if changes[name] then usage("--set " .. name .. " is given twice", nil, "set") end
    changes[name], n = norm, n + 1
  end
  return changes, n
end

--- The choice in the node's words (yes, no, abstain; the older for/against too) | a usage error.
function governance.choice(text)
  local choice = gp.CHOICE_ALIASES[tostring(text or ""):lower()]
  if not choice then usage("a vote is yes, no or abstain, not '" .. tostring(text) .. "'", nil, "vote") end
  return choice
end

--- Submits a proposal from the active wallet.  spec: {title, description,
-- deposit (AITBC text; default: the chain's min_deposit), changes
-- ({"NAME=VALUE"}), password, wait (default true: until a block includes
-- it and its voting opens), timeout}.  -> {proposal_id, tx_hash, status,
-- block_height, proposal (the node's view, when waited)}
function governance.propose(ctx, spec)
  if not spec.title or spec.title == "" then usage("--title is required: what the proposal is, in a line", nil, "title") end
  if not spec.description or spec.description == "" then
    usage("--description is required: what the proposal does and why", nil, "description")
  end
  local changes, n = governance.changes(spec.changes)
  local client = node(ctx)
  local deposit = spec.deposit and money.from_option(spec.deposit, "--amount")
    or money.parse(governance.params(ctx).params.min_deposit.value)
  local res = require("aitbc.wallet").submit(ctx, client, "gov_propose", { title = spec.title,
    description = spec.description, deposit = tostring(deposit), changes = n > 0 and changes or nil },
    spec.password, spec.wait ~= false, spec.timeout)
  local out = { proposal_id = gp.proposal_id(res.hash), tx_hash = res.hash, status = res.status,
    block_height = res.block_height, proposer = res.from, chain_id = res.chain_id, deposit = money.format(deposit),
    changes = changes }
  if spec.wait ~= false then out.proposal = governance.show(ctx, out.proposal_id) end
  return out
end

--- Votes from the active wallet: choice yes | no | abstain (or for |
-- against), power: AITBC of stake to vote with (default: all the wallet may
-- vote with on this proposal).  opts: {password, wait (default true),
-- timeout}.  A later vote replaces an earlier one.  -> {proposal_id, choice,
-- power, tx_hash, status, block_height, replaced}
function governance.vote(ctx, id, choice, power, opts)
  opts = opts or {}
  choice = governance.choice(choice)
  local address = require("aitbc.wallet").active_address(ctx)
  if not address then errors.raise("not_found", "no wallet yet", "create one: aitbc wallet create --name NAME") end
  local view = governance.show(ctx, id, address)
  if view.status == "pending" then
    errors.raise("failure", "proposal " .. id .. " is not in a block yet; its voting opens with the next block",
      "try again in a few seconds", { code = "voting_not_open" })
  elseif view.status ~= "active" then
    errors.raise("failure", "voting on " .. id .. " has closed: it " .. view.status, "see 'aitbc governance result " .. id .. "'",
      { code = "voting_closed" })
  end
  local voter = view.voter or {}
  local units = power and money.from_option(power, "--amount") or money.parse(voter.power or "0")
  if units <= 0 then
    errors.raise("failure", string.format("%s had no stake at block %s (the proposal's snapshot): it cannot vote on %s",
      address, tostring(view.timeline.snapshot_height), id),
      "stake before a proposal opens to vote on it: aitbc wallet stake AMOUNT", { code = "insufficient_stake" })
  end
  local res = require("aitbc.wallet").submit(ctx, node(ctx), "gov_vote", { proposal_id = id, choice = choice,
    power = tostring(units) }, opts.password, opts.wait ~= false, opts.timeout)
  return { proposal_id = id, choice = choice, power = money.format(units), voter = address, tx_hash = res.hash,
    status = res.status, block_height = res.block_height, chain_id = res.chain_id, replaced = voter.vote ~= nil }
end

local DECIDED = { passed = true, rejected = true }

--- A proposal's tally and decision.  opts: {wait (until it is decided),
-- timeout (seconds, default: its voting's blocks left at the chain's block
-- time plus a minute), on_progress(view)}.
function governance.result(ctx, id, opts)
  opts = opts or {}
  local view = governance.show(ctx, id)
  if not opts.wait then return view end
  local deadline = sys.monotonic() + (opts.timeout or ((view.timeline.blocks_left or 0) * 2 + 60))
  local last
  while not DECIDED[view.status] do
    if opts.on_progress and view.timeline.blocks_left ~= last then opts.on_progress(view) last = view.timeline.blocks_left end
    if sys.monotonic() > deadline then
      errors.raise("timeout", "proposal " .. id .. " is still " .. view.status .. " (" .. tostring(view.timeline.blocks_left)
        .. " block(s) left)", "wait longer with --timeout SECONDS")
    end
    sys.sleep(0.5)
    view = governance.show(ctx, id)
  end
  return view
end

return governance
