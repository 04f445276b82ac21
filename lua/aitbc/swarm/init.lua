--- Swarms (DESIGN.md §9): what the node's coordinator and the CLI share —
-- splitting a task's input into shards, and consensus over what members
-- returned (never a constant: shares, coverage and dissent are counted).
local json = require "aitbc.json"

local M = { STRATEGIES = { ["map-reduce"] = true, vote = true, ["fed-avg"] = true, pipeline = true },
  MAX_SHARDS = 1000, MAX_INPUT = 512 * 1024 }
M.STRATEGY_LIST = { "map-reduce", "vote", "fed-avg", "pipeline" }
M.STRATEGY_NAMES = table.concat(M.STRATEGY_LIST, ", ")

--- Splits text into n shards of whole lines, as even as the lines allow
-- (records of a CSV keep its header line in every shard).  -> list of text
function M.split(text, n, csv)
  local lines, header = {}, nil
  for line in text:gmatch("[^\n]+") do lines[#lines + 1] = line end
  if csv and #lines > 0 then header = table.remove(lines, 1) end
  n = math.max(1, math.min(n, #lines))
  local shards = {}
  for i = 1, n do
    local from, to = (i - 1) * #lines // n + 1, i * #lines // n
    local part = { header }
    for k = from, to do part[#part + 1] = lines[k] end
    shards[i] = table.concat(part, "\n")
  end
  return shards
end

--- An answer in one spelling for voting: lower case, spaces collapsed, no
-- surrounding punctuation.
function M.normalize(answer)
  local text = type(answer) == "string" and answer or json.encode(answer)
  text = text:lower():gsub("%s+", " "):gsub("^[%s%p]+", ""):gsub("[%s%p]+$", "")
  return text
end

--- Majority of answers {agent_id = answer}: -> {answer, agreeing, share, dissenters, votes}.
function M.tally(answers)
  local groups, order, total = {}, {}, 0
  for agent, a in pairs(answers) do
    local k = M.normalize(a)
    if not groups[k] then groups[k] = { answer = a, members = {} } order[#order + 1] = k end
    table.insert(groups[k].members, agent)
    total = total + 1
  end
  table.sort(order, function(x, y)
    if #groups[x].members ~= #groups[y].members then return #groups[x].members > #groups[y].members end
    return x < y
  end)
  if total == 0 then return { votes = 0, share = 0, dissenters = json.array() } end
  local win = groups[order[1]]
  local dissenters = json.array()
  for i = 2, #order do
    for _, agent in ipairs(groups[order[i]].members) do
      dissenters[#dissenters + 1] = { agent_id = agent, answer = groups[order[i]].answer }
    end
  end
  table.sort(win.members)
  -- a tie is no majority
  local tied = #order > 1 and #groups[order[2]].members == #win.members
  return { answer = win.answer, agreeing = json.array(win.members), share = #win.members / total, votes = total,
    dissenters = dissenters, tie = tied or nil }
end

return M
