--- Spec §7: agent swarms (7.1–7.3), typed as written after `aitbc devnet up
-- --nodes 2`.  Two agents of the user join the distributed-training pool.
-- The spec's map-reduce: their workflow (Lua, run in the miners' sandbox)
-- counts the records of its shard, and the reduce job adds the counts: the
-- agreed result is known (40 records).  And the pool's own strategy,
-- fed-avg: each member trains a logistic regression on its shard of the
-- same CSV (whose label is x > y, separable), the weights averaged for 5
-- rounds and scored on the held-out fifth.  Confidence is counted from
-- what came back.
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
seq 1 40 | awk 'BEGIN{print "x,y,label"} {x=$1%10; y=($1*7)%11; print x","y","(x>y?1:0)}' > train.csv]]), 0)
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
  -- the same pool trains a model on the same records: federated averaging
  r = t:expect_exit(t:run("aitbc -q swarm task create --task-type distributed-training --input-file train.csv"), 0)
  t.vars.training_id = t:expect_match(r.stdout, "(swt_%x+)", "the training task's id")
  r = t:run("aitbc swarm coordinate --task-id " .. t.vars.training_id .. [[ --strategy "fed-avg" --wait]])
  t:expect_exit(r, 0)
  t:expect_match(r.stdout, "dispatched to 2 member%(s%) with fed%-avg", "training dispatched")
  t:expect_match(r.stdout, "status%s+completed", "5 rounds trained")
end)

s:step("7.3", "Achieve swarm consensus", function(t)
  local r = t:run("aitbc swarm consensus --task-id " .. t.vars.task_id)
  t:expect_exit(r, 0)
  t:expect_match(r.stdout, "agreed result%s+40\n", "the agreed result (40 records)")
  t:expect_match(r.stdout, "coverage 100%% %(3 of 3 shard%(s%)%)", "confidence metrics")
  r = t:expect_exit(t:run("aitbc swarm consensus --task-id " .. t.vars.training_id), 0)
  t:expect_match(r.stdout, "logistic regression of label: [-%d.]+ [-+][%d.]+%*x [-+][%d.]+%*y", "the trained model")
  local accuracy = tonumber(t:expect_match(r.stdout, "accuracy ([%d.]+)%% on 8 held%-out records after 5 of 5 round",
    "held-out accuracy"))
  t:expect(accuracy >= 75, "the model classifies most held-out records (" .. accuracy .. "%)")
  t:expect_match(r.stdout, "weight spread [%d.]+ max", "how far members' weights spread")
end)

return s
