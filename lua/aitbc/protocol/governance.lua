--- What node and clients must agree on about governance: the chain
-- parameters (their names, ranges and one spelling of each value), the
-- proposal id a propose transaction gets, and the vote choices.
local money = require "aitbc.money"

local M = {}

--- A share written as a decimal from 0 to 1 with up to 4 places, in its one
-- spelling ("0.334", "1"); -> the spelling and the share in basis points.
local function share(text)
  if type(text) == "number" then text = string.format("%.4f", text) end
  if type(text) ~= "string" then return nil, "must be a decimal such as 0.334" end
  local whole, frac = text:match("^(%d)%.(%d+)$")
  if not whole then whole, frac = text:match("^(%d)$"), "" end
  if not whole or #frac > 4 then return nil, "must be a decimal from 0 to 1 with up to 4 places, e.g. 0.334" end
  local bp = tonumber(whole) * 10000 + tonumber((frac .. "0000"):sub(1, 4))
  if bp > 10000 then return nil, "must be at most 1" end
  local digits = string.format("%04d", bp % 10000):gsub("0+$", "")
  return (bp // 10000) .. (digits ~= "" and ("." .. digits) or ""), bp
end
M.share = share

--- The parameters: kind (blocks | share | amount), range, default, what it is.
-- Amounts are AITBC as the money module writes them; shares as share() does.
M.PARAMS = {
  voting_period = { kind = "blocks", min = 1, max = 1000000, default = "43200",
    help = "blocks a proposal stays open for votes (set when it is proposed)" },
  quorum = { kind = "share", min = 1, max = 10000, default = "0.334",
    help = "share of the total stake that must vote (yes, no or abstain) for a decision" },
  threshold = { kind = "share", min = 5000, max = 9999, default = "0.5",
    help = "share of the yes and no votes that must be yes (more than it) to pass" },
  min_deposit = { kind = "amount", min = 1, max = 1000000 * money.UNIT, default = "100",
    help = "AITBC a proposer locks; returned when quorum is reached, burned otherwise" },
  miner_reward = { kind = "amount", min = 0, max = 1000 * money.UNIT, default = "1",
    help = "AITBC the chain pays a miner's payout address for each job it completes" },
}
M.NAMES = { "voting_period", "quorum", "threshold", "min_deposit", "miner_reward" }

--- A parameter's value in its one spelling | nil, why.
function M.normalize(name, value)
  local p = M.PARAMS[name]
  if not p then return nil, "is not a chain parameter (they are " .. table.concat(M.NAMES, ", ") .. ")" end
  if p.kind == "blocks" then
    local n = math.tointeger(tonumber(value))
    if not n or tostring(value):find("[^%d]") or n < p.min or n > p.max then
      return nil, string.format("must be a whole number of blocks from %d to %d", p.min, p.max)
    end
    return tostring(n)
  elseif p.kind == "share" then
    local text, bp = share(value)
    if not text then return nil, bp end
    if bp < p.min or bp > p.max then
      return nil, string.format("must be from %s to %s", share(p.min / 10000), share(p.max / 10000))
    end
    return text
  end
  local units, err = money.parse(tostring(value))
  if not units then return nil, "must be an amount of AITBC: " .. tostring(err) end
  if units < p.min or units > p.max then
    return nil, string.format("must be from %s to %s AITBC", money.format(p.min), money.format(p.max))
  end
  return money.format(units)
end

--- A parameter's value as a number to compute with: blocks, basis points, base units.
function M.number(name, value)
  local p = M.PARAMS[name]
  if p.kind == "blocks" then return math.tointeger(tonumber(value)) end
  if p.kind == "share" then return select(2, share(value)) end
  return (money.parse(value))
end

--- The id of the proposal a gov_propose transaction with this hash makes.
function M.proposal_id(tx_hash) return "prop_" .. tx_hash:sub(1, 12) end

M.CHOICES = { yes = true, no = true, abstain = true }
--- The older CLI's words for the choices.
M.CHOICE_ALIASES = { ["for"] = "yes", against = "no", yes = "yes", no = "no", abstain = "abstain" }

return M
