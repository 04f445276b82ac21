--- Swarm and agent-message benchmark (issue 16's budgets):
-- * relay latency node to node, p95 <= 20 ms on loopback: an agent of
--   ait-devnet (node 1) sends to an agent of ait-healthchain (node 2, a
--   peer); timed from the send until node 1 answers with the receipt signed
--   by node 2 (node 1 checks the sender, relays, node 2 checks the sender
--   with node 1, stores, signs) — the whole round trip, an upper bound of
--   the relay itself.
-- * a 100-shard map-reduce over 8 miners adds <= 10 % to the sum of its
--   jobs' run times.  Each member job's workflow makes one model call to
--   the simulated Ollama (a token delay of 10 ms: a job lasts ~0.2 s, a
--   short real one).  Overhead: the miners' time the task held (8 x the map
--   phase's wall time, from coordinate to the last map's end, plus the
--   reduce phase's, to the task's completion) less the sum of the jobs' run
--   times (started -> finished, as the node recorded them), over that sum.
--   The idle tail of the map phase (100 shards over 8 miners: 4 idle in the
--   last round) counts as overhead; the figure without it is printed too.
--   aitbc run bench/swarm.lua [MESSAGES=200] [SHARDS=100] [MINERS=8]     (make bench)
local ac = require "aitbc.agentcomm"
local crypto = require "aitbc.crypto"
local http = require "aitbc.http"
local sys = require "aitbc.sys"
local timefmt = require "aitbc.timefmt"

local messages, shards, miners = tonumber(arg[1] or "200"), tonumber(arg[2] or "100"), tonumber(arg[3] or "8")

local function percentile(list, p)
  table.sort(list)
  return list[math.max(1, math.ceil(#list * p / 100))]
end

local function line(what, value, budget)
  print(string.format("%-52s %s   (budget %s)", what, value, budget))
end

local cleanup = {}
local function start_node(extra)
  local dir = assert(sys.tempdir("aitbc-bench-swarm"))
  local argv = { sys.exe_path(), "serve", "--listen", "127.0.0.1:0", "--data-dir", dir, "--log-level", "warn",
    "--block-time", "0.5" }
  for _, a in ipairs(extra or {}) do argv[#argv + 1] = a end
  local proc = assert(sys.spawn { argv = argv, stdout = "pipe", stderr = "null" })
  local first = ""
  while not first:find("\n") do first = first .. assert(proc:read(10)) end
  local node = { url = first:match("listening on (%S+)"), admin = (sys.read_file(dir .. "/admin.key")):gsub("%s+$", ""),
    proc = proc, dir = dir }
  cleanup[#cleanup + 1] = node
  return node
end

local function call(node, method, path, key, body)
  local res = assert(http.request { method = method, url = node.url .. path, headers = { ["X-Api-Key"] = key },
    json = body, timeout = 30 })
  assert(res.status < 300, path .. ": " .. res.body)
  return res.json
end

local function key(node, role) return call(node, "POST", "/v1/admin/keys", node.admin, { role = role }).key end

local function wait_until(what, check, seconds)
  local deadline = sys.monotonic() + (seconds or 60)
  while true do
    local v = check()
    if v then return v end
    assert(sys.monotonic() < deadline, "timed out waiting for " .. what)
    sys.sleep(0.05)
  end
end

print("aitbc swarm benchmark")

-- ---- relay latency, node to node ----
local n1 = start_node()
local n2 = start_node { "--chains", "ait-healthchain", "--peer", n1.url }
call(n1, "POST", "/v1/admin/peers", n1.admin, { url = n2.url })
wait_until("each node to follow the other's chain", function()
  local c1, c2 = call(n1, "GET", "/v1/chains", n1.admin), call(n2, "GET", "/v1/chains", n2.admin)
  return #c1.items == 2 and #c2.items == 2
end, 30)
local client1 = key(n1, "client")
local function agent_key()
  local public, secret = crypto.sign_keypair(crypto.random(32))
  return { id = crypto.base64(public, "urlsafe"), secret = secret }
end
local sender, target = agent_key(), agent_key()
for _, a in ipairs { { "bench_sender", "ait-devnet", sender }, { "bench_target", "ait-healthchain", target } } do
  local record = ac.registration(a[1], a[2], { "bench" }, a[3].id, sys.time())
  call(n1, "POST", "/v1/agent-comm/agents", client1, { record = record, signature = ac.sign(record, a[3].secret) })
end
local delays = {}
for i = 1, messages do
  local env = ac.envelope { sender = "bench_sender", sender_chain = "ait-devnet", target = "bench_target",
    target_chain = "ait-healthchain", message = "bench " .. i, public_key = sender.id, now = sys.time() }
  local t0 = sys.monotonic()
  local sent = call(n1, "POST", "/v1/agent-comm/messages", client1, { envelope = env, signature = ac.sign(env, sender.secret) })
  delays[i] = (sys.monotonic() - t0) * 1000
  assert(sent.status == "delivered" and sent.receipt, "message " .. i .. " was not delivered at once: " .. sent.status)
end
line(string.format("relay node to node, send -> signed receipt, p95 (%d)", messages),
  string.format("%8.2f ms", percentile(delays, 95)), "20 ms")
print(string.format("  p50 %.2f ms, max %.2f ms", percentile(delays, 50), delays[#delays]))

-- ---- a 100-shard map-reduce over 8 miners ----
local node = n1
local client, miner_key = client1, key(n1, "miner")
local srv = assert(require("aitbc.server").start { port = 0, handler = "aitbc.ollama.sim", workers = 4 * miners,
  config = '{"token_delay": 0.01}' })
local ollama_url = "http://127.0.0.1:" .. srv:port()
local procs, homes = {}, {}
for i = 1, miners do
  local home = assert(sys.tempdir("aitbc-bench-miner"))
  homes[i] = home
  procs[i] = assert(sys.spawn { argv = { sys.exe_path(), "--url", node.url, "miner", "mine-ollama", "--model", "llama3",
    "--continuous", "--miner-id", "bench-" .. i, "--ollama-url", ollama_url, "--poll-wait", "5",
    "--allow-custom-workflows" }, env = { AITBC_HOME = home, AITBC_MINER_KEY = miner_key }, stdout = "null",
    stderr = "null" })
end
wait_until("the miners to register", function()
  return #call(node, "GET", "/v1/admin/miners", node.admin).items >= miners
end, 60)

local WORKFLOW = [[return function(req)
  if req.input:find('"stage":"reduce"', 1, true) then
    local sum = 0
    for n in req.input:gmatch('"(%d+)"') do sum = sum + tonumber(n) end
    return tostring(sum)
  end
  llm.generate { system = "Count the records.", prompt = req.input }
  local n = 0
  for _ in req.input:gmatch("[^\n]+") do n = n + 1 end
  return tostring(n)
end]]
for i = 1, miners do
  local a = call(node, "POST", "/v1/agents", client, { name = "bench-member-" .. i, type = "custom", model = "llama3",
    workflow = WORKFLOW, limits = { steps = 2, tokens = 64, seconds = 60 } })
  call(node, "POST", "/v1/swarm/members", client, { agent_id = a.agent_id, task_type = "bench-count" })
end
local records = {}
for i = 1, shards * 10 do records[i] = "record " .. i end
local task = call(node, "POST", "/v1/swarm/tasks", client, { task_type = "bench-count",
  input = table.concat(records, "\n"), shards = shards })
local t0 = sys.time() -- the node's timestamps are on the same clock
call(node, "POST", "/v1/swarm/tasks/" .. task.task_id .. "/coordinate", client, { strategy = "map-reduce" })
local view = wait_until("the task to complete", function()
  local v = call(node, "GET", "/v1/swarm/tasks/" .. task.task_id, client)
  return v.status ~= "running" and v
end, 600)
local wall = timefmt.parse(view.updated_at) - t0
assert(view.status == "completed", "the task " .. view.status .. ": " .. tostring(view.error))
local answer = call(node, "GET", "/v1/swarm/tasks/" .. task.task_id .. "/consensus", client).answer
assert(answer == tostring(#records), "the count is " .. tostring(answer) .. ", not " .. #records)

local run_sum, map_sum, reduce_run, map_last = 0, 0, 0, 0
local by_miner = {}
for _, w in ipairs(view.work) do
  local job = call(node, "GET", "/v1/jobs/" .. w.job_id, client)
  local started, finished = timefmt.parse(job.started_at), timefmt.parse(job.finished_at)
  local run = finished - started
  by_miner[job.assigned_miner_id] = by_miner[job.assigned_miner_id] or {}
  table.insert(by_miner[job.assigned_miner_id], { started, finished })
  run_sum = run_sum + run
  if w.stage == "reduce" then reduce_run = run
  else
    map_sum = map_sum + run
    map_last = math.max(map_last, finished)
  end
end
-- a miner's gap between one job's end and its next one's start (poll, assignment)
local gaps = {}
for _, list in pairs(by_miner) do
  table.sort(list, function(x, y) return x[1] < y[1] end)
  for i = 2, #list do gaps[#gaps + 1] = (list[i][1] - list[i - 1][2]) * 1000 end
end
local map_wall, reduce_wall = map_last - t0, t0 + wall - map_last
local held = miners * map_wall + reduce_wall
-- the idle tail of the map phase: the miners whose last round has no shard (ceil(100/8) rounds, 4 miners idle in the last)
local tail = (miners - shards % miners) % miners * (map_sum / shards)
line(string.format("map-reduce, %d shards over %d miners: overhead", shards, miners),
  string.format("%8.1f %%", (held - run_sum) / run_sum * 100), "10 %")
print(string.format("  without the idle tail of the map phase (%.2f s of miner time, the shards' count): %.1f %%", tail,
  (held - tail - run_sum) / run_sum * 100))
print(string.format("  wall %.2f s (map %.2f s, reduce %.2f s); jobs' run times: %.2f s in all (maps %.3f s each on "
  .. "average, reduce %.3f s); miner time held %.2f s", wall, map_wall, reduce_wall, run_sum, map_sum / shards,
  reduce_run, held))
print(string.format("  a miner's gap between jobs: p50 %.1f ms, p95 %.1f ms; the idle tail (%d shards over %d miners) "
  .. "and these gaps are the overhead", percentile(gaps, 50), percentile(gaps, 95), shards, miners))

srv:stop(1)
for i, p in ipairs(procs) do
  p:kill(15)
  p:wait()
  sys.remove_tree(homes[i])
end
for _, n in ipairs(cleanup) do
  n.proc:kill(15)
  n.proc:wait()
  sys.remove_tree(n.dir)
end
