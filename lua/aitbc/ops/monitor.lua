--- aitbc admin monitor: a dashboard of the fleet — every node in the fleet
-- registry and the node this CLI uses — from each node's admin API: CPU,
-- memory and disk, network throughput and the API's latency (measured
-- here), chains (height, sync, block rate), jobs and queue, miners' GPUs
-- (utilisation and temperature from their heartbeats) and services.  One
-- frame is a table of plain data (JSON mode prints it); frame_lines draws it.
local json = require "aitbc.json"
local sys = require "aitbc.sys"

local M = {}

--- The fleet registry's nodes (aitbc.fleet, kept by `aitbc node add`):
-- {name, url, key}, a node's key from the config file's node_keys[name].
function M.fleet_nodes(ctx)
  local fleet = require "aitbc.fleet"
  local keys = type(ctx.config.file.node_keys) == "table" and ctx.config.file.node_keys or {}
  local out = {}
  for _, n in ipairs(fleet.read().nodes) do
    local k = keys[n.name]
    out[#out + 1] = { name = n.name, url = fleet.url(n), key = type(k) == "table" and k.key or nil }
  end
  return out
end

--- The nodes a frame shows: this CLI's node first, then the registry's
-- (the same URL once).
function M.targets(ctx)
  local api = require "aitbc.api"
  local list, seen = {}, {}
  local own = api.from_context(ctx, { role = "admin" })
  list[1] = { name = "this node", url = own.url, client = own }
  seen[own.url] = true
  for _, n in ipairs(M.fleet_nodes(ctx)) do
    if not seen[n.url] then
      seen[n.url] = true
      list[#list + 1] = { name = n.name, url = n.url, client = api.new { url = n.url, api_key = n.key,
        timeout = math.min(ctx.settings.timeout or 10, 10) } }
    end
  end
  return list
end

local function rate_per_minute(items, field)
  local sum, n = 0, 0
  for _, r in ipairs(items) do
    sum, n = sum + (r[field] or 0) * 60 / (r.resolution or 60), n + 1
  end
  return n > 0 and sum / n or nil
end

--- The GPUs' average utilisation and the hottest temperature.
local function gpu_figures(gpus)
  local sum, n, hottest = 0, 0, nil
  for _, g in ipairs(gpus) do
    if type(g.utilization_percent) == "number" then sum, n = sum + g.utilization_percent, n + 1 end
    if type(g.temperature_c) == "number" then hottest = math.max(hottest or g.temperature_c, g.temperature_c) end
  end
  return n > 0 and math.floor(sum / n * 10 + 0.5) / 10 or nil, hottest
end

--- Some fields of each item of a list.
local function pick(list, fields)
  local out = json.array()
  for i, item in ipairs(list or {}) do
    out[i] = {}
    for _, f in ipairs(fields) do out[i][f] = item[f] end
  end
  return out
end

--- One node's part of a frame: {name, url, status, latency_ms, ...} or
-- {name, url, status = "unreachable"|"unauthorized", error}.
local function sample(target)
  local started = sys.monotonic()
  local st, err = target.client:request("GET", "/v1/admin/status", { expect = { status = "string" } })
  local latency = (sys.monotonic() - started) * 1000
  if not st then
    local kind = err and err.kind
    return { name = target.name, url = target.url, status = (kind == "auth" or kind == "forbidden") and "unauthorized"
      or kind == "network" and "unreachable" or "error", error = err and err.message }
  end
  local hist = target.client:request("GET", "/v1/admin/metrics", { query = { since = tostring(os.time() - 900) } })
  local items = hist and hist.items or {}
  local res = st.resources or {}
  local gpus = st.miners and st.miners.gpus or {}
  local gpu_avg, hottest = gpu_figures(gpus)
  return {
    name = target.name, url = target.url, status = st.status, version = st.node and st.node.version,
    role = st.node and st.node.role, latency_ms = math.floor(latency * 10 + 0.5) / 10,
    cpu_percent = res.cpu and res.cpu.used_percent, memory_percent = res.memory and res.memory.used_percent,
    disk_percent = res.disk and res.disk.used_percent,
    net_rx_bytes_per_second = res.network and res.network.rx_bytes_per_second,
    net_tx_bytes_per_second = res.network and res.network.tx_bytes_per_second,
    chains = pick(st.chain and st.chain.chains, { "chain_id", "height", "state", "blocks_last_minute",
      "last_block_age_seconds" }), jobs = st.jobs, miners_online = st.miners and st.miners.online,
    miners_total = st.miners and st.miners.total, gpus = gpus, gpu_utilization_percent = gpu_avg,
    gpu_temperature_max_c = hottest, services = pick(st.services, { "name", "status" }), alerts = st.alerts,
    history = { minutes = #items, jobs_completed_per_minute = rate_per_minute(items, "jobs_completed"),
      blocks_per_minute = rate_per_minute(items, "blocks") },
  }
end

--- A frame: {time, nodes = [...]}.
function M.frame(targets)
  local nodes = json.array()
  for i, t in ipairs(targets) do nodes[i] = sample(t) end
  return { time = os.date("!%Y-%m-%dT%H:%M:%SZ"), nodes = nodes }
end

-- ---- drawing ----

local function pct(v) return type(v) == "number" and string.format("%5.1f%%", v) or "    -" end
local function bytes(n) return type(n) == "number" and require("aitbc.ops.present").bytes(n) .. "/s" or "-" end

--- A bar of `width` cells for a percentage.
local function bar(v, width)
  if type(v) ~= "number" then return string.rep(" ", width) end
  local full = math.floor(math.max(0, math.min(100, v)) / 100 * width + 0.5)
  return string.rep("█", full) .. string.rep("░", width - full)
end

local function fit(line, width)
  if utf8.len(line) and utf8.len(line) > width then
    return line:sub(1, (utf8.offset(line, width) or (#line + 1)) - 1)
  end
  return line
end

--- A node that answered, drawn: add(line) for each line.
local function node_lines(n, add, width, style)
  local color = n.status == "ok" and "green" or "yellow"
  add(string.format("%s  %s  %s  aitbc %s, %s, API %.1f ms", style(n.name, "bold"), n.url, style(n.status, color),
    tostring(n.version), tostring(n.role), n.latency_ms))
  local w = math.max(5, math.min(20, width // 6))
  add(string.format("  cpu %s %s  mem %s %s  disk %s %s", bar(n.cpu_percent, w), pct(n.cpu_percent),
    bar(n.memory_percent, w), pct(n.memory_percent), bar(n.disk_percent, w), pct(n.disk_percent)))
  add(string.format("  net rx %s  tx %s", bytes(n.net_rx_bytes_per_second), bytes(n.net_tx_bytes_per_second)))
  for _, c in ipairs(n.chains) do
    add(string.format("  chain %-14s height %-8s %-10s %s blocks/min", c.chain_id, tostring(c.height),
      tostring(c.state), tostring(c.blocks_last_minute or "-")))
  end
  local j = n.jobs or {}
  add(string.format("  jobs  %s running, %s queued (oldest %s s), %s completed/min over %d min of history",
    tostring(j.running or 0), tostring(j.queued or 0), tostring(j.oldest_queued_age_seconds or "-"),
    n.history.jobs_completed_per_minute and string.format("%.1f", n.history.jobs_completed_per_minute) or "-",
    n.history.minutes))
  add(string.format("  miners %s of %s online; GPUs %d%s", tostring(n.miners_online), tostring(n.miners_total),
    #n.gpus, #n.gpus > 0 and string.format(", %s used on average, hottest %s °C", pct(n.gpu_utilization_percent),
      tostring(n.gpu_temperature_max_c or "-")) or " reported (miners send NVML readings with their heartbeats)"))
  for _, g in ipairs(n.gpus) do
    add(string.format("    %s gpu%s %-22s %s %s  %s °C", tostring(g.miner_id), tostring(g.index), tostring(g.name),
      bar(g.utilization_percent, 10), pct(g.utilization_percent), tostring(g.temperature_c or "-")))
  end
  local svc = {}
  for _, s in ipairs(n.services) do
    svc[#svc + 1] = style(s.name, s.status == "ok" and "green" or "yellow") .. (s.status == "ok" and "" or
      ("(" .. s.status .. ")"))
  end
  add("  services " .. table.concat(svc, " "))
  for _, a in ipairs(n.alerts or {}) do add(style("  ! " .. tostring(a.message), "yellow")) end
end

--- The frame as lines no wider than `width` (style(text, color) colours).
function M.frame_lines(f, width, refresh, style)
  style = style or function(t) return t end
  local lines = {}
  local function add(s) lines[#lines + 1] = fit(s, width) end
  add(style(string.format("aitbc fleet dashboard — %d node(s) — %s — every %gs — q quits, r refreshes", #f.nodes,
    f.time, refresh), "bold"))
  for _, n in ipairs(f.nodes) do
    add("")
    if not n.version then
      add(style(string.format("%s  %s  %s%s", n.name, n.url, n.status, n.error and (": " .. n.error) or ""), "red"))
    else
      node_lines(n, add, width, style)
    end
  end
  return lines
end

return M
