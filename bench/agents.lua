--- Agents benchmark (issue 12's budgets): a sandbox start (<= 1 ms), an
-- agent's overhead over its model calls (<= 5 ms a step: the analysis
-- workflow, its tools and events, against the simulated Ollama with no
-- token delay, model calls timed apart), and job events reaching waiting
-- clients (<= 50 ms p95 after the miner posts them, READERS long-polling
-- one job on a real node).
--   aitbc run bench/agents.lua [RUNS=200] [READERS=20]     (make bench)
local http = require "aitbc.http"
local sys = require "aitbc.sys"

if arg[1] == "--reader" then -- one client following a job's events; prints each one's delivery delay (ms)
  local url, key, job_id = arg[2], arg[3], arg[4]
  local after, delays = 0, {}
  while true do
    local res = assert(http.request { url = url .. "/v1/jobs/" .. job_id .. "/events?wait=20&after=" .. after,
      headers = { ["X-Api-Key"] = key }, timeout = 30 })
    local page = assert(res.json, res.body)
    local now = sys.monotonic()
    for _, e in ipairs(page.events) do
      if e.type == "bench" then delays[#delays + 1] = string.format("%.3f", (now - e.data.sent) * 1000) end
    end
    after = page.next
    if page.done then break end
  end
  print(table.concat(delays, " "))
  return
end

local runs, readers = tonumber(arg[1] or "200"), tonumber(arg[2] or "20")

local function percentile(list, p)
  table.sort(list)
  return list[math.max(1, math.ceil(#list * p / 100))]
end

local function line(what, value, budget)
  print(string.format("%-44s %s   (budget %s)", what, value, budget))
end

print("aitbc agents benchmark")

-- a sandbox start: a fresh state with its limits, a chunk, a call, closed
local sandbox = require "aitbc.native.sandbox"
local n, t0 = 2000, sys.monotonic()
for _ = 1, n do
  assert(sandbox.run { name = "bench", code = "return function(x) return x + 1 end", input = 1, seconds = 1,
    memory = 8 << 20, instructions = 1e6 })
end
line("sandbox start + run + close", string.format("%8.1f us", (sys.monotonic() - t0) / n * 1e6), "1000 us")

-- a node, a miner and running jobs: the agent's events go to it as a miner's do
local dir = assert(sys.tempdir("aitbc-bench-agents"))
local node = assert(sys.spawn { argv = { sys.exe_path(), "serve", "--listen", "127.0.0.1:0", "--data-dir", dir,
  "--log-level", "warn" }, stdout = "pipe", stderr = "null" })
local first = ""
while not first:find("\n") do first = first .. assert(node:read(10)) end
local url = first:match("listening on (%S+)")
local admin = (sys.read_file(dir .. "/admin.key")):gsub("%s+$", "")
local function call(method, path, key, body)
  local res = assert(http.request { method = method, url = url .. path, headers = { ["X-Api-Key"] = key },
    json = body, timeout = 30 })
  assert(res.status < 300, res.body)
  return res.json
end
local client, miner = call("POST", "/v1/admin/keys", admin, { role = "client" }).key,
  call("POST", "/v1/admin/keys", admin, { role = "miner" }).key
call("POST", "/v1/miners/register", miner, { miner_id = "bench-miner" })
local function running_job()
  local job = call("POST", "/v1/jobs", client, { payload = { prompt = "bench" } })
  call("POST", "/v1/miners/poll", miner, { max_wait_seconds = 1 })
  return job
end

-- an analysis agent: per step, the time outside its model calls (its tools,
-- its events posted to the node as the miner posts them)
local srv = assert(require("aitbc.server").start { port = 0, handler = "aitbc.ollama.sim",
  config = '{"token_delay": 0}' })
local ollama = require("aitbc.ollama").new("http://127.0.0.1:" .. srv:port())
local in_model = 0
local timed = setmetatable({ chat = function(_, req)
  local started = sys.monotonic()
  local final, err = ollama.chat(ollama, req)
  in_model = in_model + (sys.monotonic() - started)
  return final, err
end }, { __index = ollama })
local definition = require "aitbc.agents.definition"
local def = definition.check({ name = "bench", type = "analysis", model = "llama3", tools = { "csv_query", "calculator" },
  data = { q3 = { format = "csv", content = "region,revenue,costs\neu,120,80\nus,200,150\nasia,95,40\n" } } },
  { invalid = function(f, m) error(f .. " " .. m) end })
local runner = require "aitbc.agents.runner"
local api = require("aitbc.api").new { url = url, api_key = miner, timeout = 10 }
local agent_job = running_job()
local poster = require("aitbc.mining.events").poster(api, agent_job.job_id, print)
local steps, events, total = 0, 0, 0
for _ = 1, runs do
  local started = sys.monotonic()
  local result = assert(runner.run { ollama = timed, stream_tokens = true,
    emit = function(kind, data) events = events + 1 poster.emit(kind, data) end,
    payload = { agent = { agent_id = "agent_bench", version = 1, definition = def }, input = "Analyze Q3 financial data" } })
  poster.flush()
  total = total + (sys.monotonic() - started)
  steps = steps + result.steps
end
srv:stop(1)
call("POST", "/v1/miners/" .. agent_job.job_id .. "/result", miner, { result = { response = "done" } })
line(string.format("agent overhead over model calls (%d runs)", runs),
  string.format("%8.3f ms/step", (total - in_model) / steps * 1000), "5 ms")
print(string.format("  %d steps, %d events posted to a node; model calls %.1f ms/step (simulated Ollama over HTTP)",
  steps, events, in_model / steps * 1000))

-- events: readers waiting on a job; the miner posts, each reader times the delivery
local job = running_job()
local procs = {}
for i = 1, readers do
  procs[i] = assert(sys.spawn { argv = { sys.exe_path(), "run", "bench/agents.lua", "--reader", url, client, job.job_id },
    stdout = "pipe", stderr = "pipe" })
end
sys.sleep(0.5) -- the readers are waiting
local posts = 100
for i = 1, posts do
  call("POST", "/v1/miners/" .. job.job_id .. "/events", miner,
    { events = { { type = "bench", data = { n = i, sent = sys.monotonic() } } } })
  sys.sleep(0.02)
end
call("POST", "/v1/miners/" .. job.job_id .. "/result", miner, { result = { response = "done" } })
local delays = {}
for _, p in ipairs(procs) do
  local code, out, err = p:communicate(nil, 60)
  assert(code == 0, tostring(err))
  for d in out:gmatch("%S+") do delays[#delays + 1] = tonumber(d) end
end
node:kill(15)
node:wait()
sys.remove_tree(dir)
assert(#delays == posts * readers, "events lost: " .. #delays .. " of " .. posts * readers)
line(string.format("event delivery, %d readers x %d posts, p95", readers, posts),
  string.format("%8.2f ms", percentile(delays, 95)), "50 ms")
print(string.format("  p50 %.2f ms, max %.2f ms (post sent -> reader has it, same machine's monotonic clock)",
  percentile(delays, 50), delays[#delays]))
