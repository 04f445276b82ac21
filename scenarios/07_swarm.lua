--- Spec §7: agent swarms (7.1–7.3), typed as written after `aitbc devnet up
-- --nodes 2`.  Two agents of the user join the distributed-training pool;
-- their workflow (Lua, run in the miners' sandbox) counts the records of
-- its shard, and the reduce job adds the counts: the agreed result is
-- known (12 records), and the confidence is counted from what came back.
local s = require("aitbc.scenario").new("7. Agent swarms", { nodes = 2 })

s:step("7.1", "Join an agent swarm", function(t)
  t:expect_exit(t:run([[cat > count.lua <<'LUA'
return function(req)
  if req.input:find('"stage":"reduce"', 1, true) then
    local sum = 0
    for n in req.input:gmatch('"(%d+)"') do sum = sum + tonumber(n) end
    return tostring(sum)
  end
  local n = 0
  for _ in req.input:gmatch("[^\n]+") do n = n + 1 end
  return tostring(n - 1) -- every shard keeps the CSV header
end
LUA
cat > member.json <<'JSON'
{"model": "llama3", "workflow": "file:count.lua", "limits": {"steps": 2, "tokens": 100, "seconds": 30}}
JSON
seq 1 12 | awk 'BEGIN{print "x,y,label"} {print $1","$1*2","($1%2)}' > train.csv]]), 0)
  local ids = {}
  for i = 1, 2 do
    local r = t:expect_exit(t:run("aitbc -q agent create --name trainer" .. i .. " --type custom --config member.json"), 0)
    ids[i] = t:expect_match(r.stdout, "(agent_%x+)", "the agent's id")
  end
  t.vars.agents = ids
  for _, id in ipairs(ids) do
    local r = t:run("aitbc swarm join --agent-id " .. id .. [[ --task-type "distributed-training"]])
    t:expect_exit(r, 0)
    t:expect_match(r.stdout, "joined the distributed%-training swarm.*awaiting coordination", "joined, awaiting coordination")
  end
  local r = t:expect_exit(t:run("aitbc swarm list --task-type distributed-training"), 0)
  t:expect_match(r.stdout, ids[2], "the pool lists both")
end)

s:step("7.2", "Coordinate swarm execution", function(t)
  local r = t:expect_exit(t:run("aitbc -q swarm task create --task-type distributed-training --input-file train.csv "
    .. "--csv --shards 3"), 0)
  t.vars.task_id = t:expect_match(r.stdout, "(swt_%x+)", "the task id")
  r = t:run("aitbc swarm coordinate --task-id " .. t.vars.task_id .. [[ --strategy "map-reduce"]])
  t:expect_exit(r, 0)
  t:expect_match(r.stdout, "dispatched to 2 member%(s%) with map%-reduce; tracking id swr_%x+", "dispatched, with a tracking id")
  t:wait_for("the swarm to finish", function()
    return t:run("aitbc swarm status --task-id " .. t.vars.task_id).stdout:find("status%s+completed")
  end, 90)
end)

s:step("7.3", "Achieve swarm consensus", function(t)
  local r = t:run("aitbc swarm consensus --task-id " .. t.vars.task_id)
  t:expect_exit(r, 0)
  t:expect_match(r.stdout, "agreed result%s+12\n", "the agreed result (12 records)")
  t:expect_match(r.stdout, "coverage 100%% %(3 of 3 shard%(s%)%)", "confidence metrics")
end)

return s
