--- Deployments and fleet benchmark (issue 15's budgets), end to end through
-- the binary as a user runs it:
--   `aitbc deploy start` of 3 instances to healthy, the image present
--   (<= 3 s): aitbc's own Podman service in a temporary AITBC_HOME, the
--   aitbc-api image built once, then RUNS times: create, start (timed: the
--   whole process, from exec to exit), destroy;
--   `aitbc node chains` over 8 real nodes (<= 300 ms): a leader with two
--   chains, six followers and a node with a chain of its own, all on
--   loopback; timed RUNS times.
--   aitbc run bench/deploy.lua [RUNS=5]      (make bench)
-- Without Podman the first part prints why it is skipped.
local json = require "aitbc.json"
local sys = require "aitbc.sys"

local runs = tonumber(arg[1] or "5")
local exe = assert(sys.exe_path())
local cleanup = {}

local function median(list)
  local s = { table.unpack(list) }
  table.sort(s)
  return s[math.ceil(#s / 2)]
end

local function percentile(list, p)
  local s = { table.unpack(list) }
  table.sort(s)
  return s[math.max(1, math.ceil(#s * p / 100))]
end

local function line(what, value, budget)
  print(string.format("%-52s %s   (budget %s)", what, value, budget))
end

--- Runs aitbc with AITBC_HOME=home; returns code, stdout, stderr, seconds.
local function aitbc(home, args)
  local t0 = sys.monotonic()
  local proc = assert(sys.spawn { argv = { exe, table.unpack(args) }, env = { AITBC_HOME = home,
    CONTAINER_HOST = false, DOCKER_HOST = false, AITBC_URL = false, AITBC_CONFIG = false }, stdin = "null",
    stdout = "pipe", stderr = "pipe" })
  local code, out, err = proc:communicate(nil, 600)
  return code, out, err, sys.monotonic() - t0
end

local function must(home, args)
  local code, out, err, seconds = aitbc(home, args)
  if code ~= 0 then error("aitbc " .. table.concat(args, " ") .. " exited " .. tostring(code) .. ": " .. out .. err, 0) end
  return out, seconds
end

print("aitbc deploy and fleet benchmark")

local function bench_deploy()
  local engine = require "aitbc.deploy.engine"
  local why = not engine.which("podman") and "podman is not installed (make deps installs it)" or engine.unusable()
  if why then
    print("skip: deploy start: " .. why)
    return
  end
  local home = assert(sys.tempdir("aitbc-bench-deploy"))
  cleanup[#cleanup + 1] = function()
    aitbc(home, { "deploy", "destroy", "bench", "--yes" })
    aitbc(home, { "deploy", "engine", "stop" })
    sys.remove_tree(home)
  end
  must(home, { "deploy", "engine", "start" })
  local _, build = must(home, { "deploy", "image" })
  line("aitbc deploy image (aitbc-api FROM scratch)", string.format("%8.2f s", build), "-")
  local times, inner = {}, {}
  for _ = 1, runs do
    must(home, { "deploy", "create", "--name", "bench", "--image", "aitbc-api:latest", "--instances", "3" })
    local out, seconds = must(home, { "-o", "json", "deploy", "start", "bench" })
    local doc = json.decode(out)
    assert(#doc.instances == 3, "three instances")
    times[#times + 1], inner[#inner + 1] = seconds, doc.seconds
    must(home, { "deploy", "destroy", "bench", "--yes" })
  end
  line(string.format("deploy start, 3 instances to healthy (%d runs)", runs),
    string.format("median %.2f s, max %.2f s (engine work %.2f s)", median(times), math.max(table.unpack(times)),
      median(inner)), "3 s")
end

local function serve(args)
  local dir = assert(sys.tempdir("aitbc-bench-node"))
  local argv = { exe, "serve", "--listen", "127.0.0.1:0", "--data-dir", dir, "--log-level", "warn" }
  for _, a in ipairs(args or {}) do argv[#argv + 1] = a end
  local proc = assert(sys.spawn { argv = argv, stdout = "pipe", stderr = "null", env = { AITBC_HOME = dir } })
  cleanup[#cleanup + 1] = function()
    proc:kill(15)
    proc:communicate(nil, 20)
    sys.remove_tree(dir)
  end
  local first = ""
  while not first:find("\n") do first = first .. assert(proc:read(10)) end
  return assert(first:match("listening on (%S+)"))
end

local function bench_chains()
  local home = assert(sys.tempdir("aitbc-bench-fleet"))
  cleanup[#cleanup + 1] = function() sys.remove_tree(home) end
  local leader = serve { "--chains", "ait-devnet,ait-healthchain", "--block-time", "1" }
  local urls = { leader }
  for _ = 1, 6 do urls[#urls + 1] = serve { "--follow", leader } end
  urls[#urls + 1] = serve { "--chains", "ait-testnet" }
  for i, url in ipairs(urls) do must(home, { "node", "add", "n" .. i, url }) end
  must(home, { "node", "chains" }) -- warm: the followers have their genesis
  local times, inner = {}, {}
  for _ = 1, runs * 4 do
    local out, seconds = must(home, { "-o", "json", "node", "chains" })
    times[#times + 1], inner[#inner + 1] = seconds, json.decode(out).seconds
  end
  line(string.format("node chains over %d nodes (%d runs)", #urls, #times),
    string.format("median %.1f ms, p95 %.1f ms (queries %.1f ms)", median(times) * 1000, percentile(times, 95) * 1000,
      median(inner) * 1000), "300 ms")
end

local ok, err = pcall(function()
  bench_deploy()
  bench_chains()
end)
for i = #cleanup, 1, -1 do pcall(cleanup[i]) end
if not ok then error(err, 0) end
