--- What `deploy monitor` shows: per instance, its state, its health
-- (checked now), CPU, memory and network from the engine's stats, which
-- Podman and Docker both give in the Docker schema (a created container
-- has none: Podman answers an empty body, Docker 409).  CPU is the share of
-- one core over the time between two readings, so the first frame takes
-- two readings half a second apart; network and CPU rates need the
-- previous frame, which the sampler keeps.
local deploy = require "aitbc.deploy"
local http = require "aitbc.http"
local json = require "aitbc.json"
local sys = require "aitbc.sys"

local M = {}

--- {cpu_ns, memory, memory_limit, rx, tx, pids} from a stats document, or nil.
function M.reading(doc)
  if type(doc) ~= "table" or type(doc.cpu_stats) ~= "table" then return nil end
  local usage = type(doc.cpu_stats.cpu_usage) == "table" and doc.cpu_stats.cpu_usage.total_usage
  if type(usage) ~= "number" then return nil end
  local mem = type(doc.memory_stats) == "table" and doc.memory_stats or {}
  local inner = type(mem.stats) == "table" and mem.stats or {}
  -- as docker stats shows it: the page cache the kernel can drop is not counted
  local cache = inner.inactive_file or inner.total_inactive_file or 0
  local rx, tx, seen = 0, 0, false
  for _, n in pairs(type(doc.networks) == "table" and doc.networks or {}) do
    if type(n) == "table" then
      rx, tx, seen = rx + (tonumber(n.rx_bytes) or 0), tx + (tonumber(n.tx_bytes) or 0), true
    end
  end
  return { cpu_ns = usage, memory = math.max(0, (tonumber(mem.usage) or 0) - cache), memory_limit = tonumber(mem.limit),
    rx = seen and rx or nil, tx = seen and tx or nil,
    pids = type(doc.pids_stats) == "table" and tonumber(doc.pids_stats.current) or nil }
end

local function read_stats(eng, running)
  local reqs = {}
  for i, inst in ipairs(running) do reqs[i] = eng:stats_request(inst.id) end
  local results = #reqs > 0 and http.request_many(reqs) or {}
  local at, out = sys.monotonic(), {}
  for i, inst in ipairs(running) do
    local res = results[i]
    if res and not res.error and res.status == 200 then
      local r = M.reading(json.decode(res.body or ""))
      if r then
        r.at = at
        out[inst.id] = r
      end
    end
  end
  return out
end

local function rate(now, before, key)
  if not (now and before and now[key] and before[key]) then return nil end
  local dt = now.at - before.at
  if dt <= 0 then return nil end
  return math.max(0, (now[key] - before[key]) / dt)
end

local function round(x, places)
  if x == nil then return nil end
  local m = 10 ^ (places or 1)
  return math.floor(x * m + 0.5) / m
end

--- One instance's row of a frame, from its readings now and before.
local function row(inst, health, r, before, host)
  local h = inst.state == "running" and (health == "none" and "no check" or health) or "-"
  local cpu = rate(r, before, "cpu_ns")
  -- without a limit of its own a container's limit is the host's memory
  local limited = r and r.memory_limit and r.memory_limit > 0 and (not host or r.memory_limit < host.total)
  return {
    instance = inst.name, n = inst.n, state = inst.state, health = h, address = inst.address,
    cpu_percent = cpu and round(cpu / 1e9 * 100, 1) or nil,
    memory_bytes = r and math.tointeger(r.memory) or nil,
    memory_limit_bytes = limited and math.tointeger(r.memory_limit) or nil,
    memory_percent = limited and round(r.memory / r.memory_limit * 100, 1) or nil,
    net_rx_bytes = r and math.tointeger(r.rx) or nil, net_tx_bytes = r and math.tointeger(r.tx) or nil,
    net_rx_per_second = round(rate(r, before, "rx"), 0), net_tx_per_second = round(rate(r, before, "tx"), 0),
    pids = r and math.tointeger(r.pids) or nil,
  }
end

--- The health of the running instances, checked now: id -> status.
local function health_of(eng, running)
  local reqs = {}
  for i, inst in ipairs(running) do reqs[i] = eng:health_request(inst.id) end
  local results = #reqs > 0 and http.request_many(reqs) or {}
  local health = {}
  for i, inst in ipairs(running) do health[inst.id] = eng:health_result(results[i]).status end
  return health
end

--- A sampler for deployment d: each call returns one frame
-- {deployment, image, time, healthy, desired, instances = [{instance, n,
-- state, health, cpu_percent, memory_bytes, memory_limit_bytes,
-- memory_percent, net_rx_bytes, net_tx_bytes, net_rx_per_second,
-- net_tx_per_second, pids, address}]}.
function M.sampler(eng, d)
  local previous
  return function()
    local instances = deploy.instances(eng, d)
    local running = {}
    for _, inst in ipairs(instances) do if inst.state == "running" then running[#running + 1] = inst end end
    if not previous and #running > 0 then
      previous = read_stats(eng, running)
      sys.sleep(0.5)
    end
    previous = previous or {}
    local health = health_of(eng, running)
    local now = read_stats(eng, running)
    local rows, healthy, host = json.array(), 0, sys.memory()
    for _, inst in ipairs(instances) do
      rows[#rows + 1] = row(inst, health[inst.id], now[inst.id], previous[inst.id], host)
      if rows[#rows].health == "healthy" then healthy = healthy + 1 end
    end
    for id, r in pairs(now) do previous[id] = r end
    return { deployment = d.name, image = d.image, time = os.date("!%Y-%m-%dT%H:%M:%SZ"), instances = rows,
      healthy = healthy, desired = d.instances }
  end
end

return M
