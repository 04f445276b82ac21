--- Spec §8: deployments (8.1–8.3), with the spec's command lines as written
-- after `aitbc devnet up`, on a real container engine: aitbc's own Podman
-- service in this HOME (what `aitbc deploy` starts when no engine answers),
-- and the aitbc-api image built from this binary first, as the README says
-- (`make image` runs `aitbc deploy image`).  Three real aitbc nodes run in
-- containers.  A machine without Podman skips the steps, saying why.
local s = require("aitbc.scenario").new("8. Deployment operations")

local function need_engine(t)
  if t.vars.no_engine then t:skip(t.vars.no_engine) end
end

s:step("8.1", "Create deployment configuration", function(t)
  local engine = t:run("aitbc deploy engine start")
  if engine.code == 5 then
    t.vars.no_engine = "no container engine: " .. (engine.stderr:match("error: ([^\n]+)") or engine.stderr)
    t:skip(t.vars.no_engine)
  end
  t:expect_exit(engine, 0)
  t:expect_exit(t:run("aitbc deploy image", { timeout = 300 }), 0)
  local r = t:run([[aitbc deploy create --name "prod-api" --image "aitbc-api:latest" --instances 3]])
  t:expect_exit(r, 0)
  t:expect_match(r.stdout, "deployment prod%-api saved and validated: 3 × aitbc%-api:latest", "saved and validated")
  t:expect_match(r.stdout, "config file%s+[^\n]*/deployments/prod%-api%.json", "where the configuration is")
  local bad = t:run([[aitbc deploy create --name "prod-api2" --image "aitbc-api:latest" --instances 0]])
  t:expect_exit(bad, 2)
  t:expect_match(bad.stderr, "%-%-instances must be", "a bad value names its field")
end)

s:step("8.2", "Start deployment", function(t)
  need_engine(t)
  local r = t:run([[aitbc deploy start "prod-api"]])
  t:expect_exit(r, 0)
  for n = 1, 3 do
    local name = "prod%-api%-" .. n
    local created, started, healthy = r.stdout:find(name .. "%s+created"), r.stdout:find(name .. "%s+started"),
      r.stdout:find(name .. "%s+healthy")
    t:expect(created and started and healthy and created < started and started < healthy,
      "instance " .. n .. " goes created → started → healthy:\n" .. r.stdout)
  end
  t:expect_match(r.stdout, "prod%-api running: 3/3 instances healthy", 'the final "running" state')
  -- real aitbc nodes answer on each instance's port (127.0.0.1)
  local show = t:json(t:run("aitbc -o json deploy show prod-api"))
  for _, inst in ipairs(show.instances_list) do
    t:expect_exit(t:run("aitbc --url " .. inst.url .. " api /v1/node"), 0)
  end
end)

s:step("8.3", "Monitor deployment", function(t)
  need_engine(t)
  -- on a terminal (here a pseudo-terminal), refreshed in place; the user presses q
  local r = t:run([[script -qec 'aitbc deploy monitor "prod-api"' /dev/null]], { stdin = "q" })
  t:expect_exit(r, 0)
  t:expect_match(r.stdout, "INSTANCE%s+HEALTH%s+CPU%s+MEMORY%s+NET RX / TX", "CPU, memory and network I/O columns")
  for n = 1, 3 do t:expect_match(r.stdout, "prod%-api%-" .. n .. "%s+healthy%s+[%d.]+%%", "instance " .. n) end
  local frame = t:json(t:run([[aitbc deploy monitor "prod-api" --once --output json]]))
  t:expect(#frame.instances == 3 and frame.healthy == 3, "one JSON frame: three healthy instances")
  for _, inst in ipairs(frame.instances) do
    t:expect(type(inst.cpu_percent) == "number" and inst.memory_bytes > 0 and inst.net_rx_bytes ~= nil,
      "measured CPU, memory and network of " .. inst.instance)
  end
end)

-- what the user types to tidy up: the deployment and the engine aitbc started
s:finally(function(t)
  if t.vars.no_engine then return end
  t:run("aitbc deploy destroy prod-api --yes")
  t:run("aitbc deploy engine stop")
end)

return s
