--- The node's state for its operators: the status document (admin status),
-- the scored health checks (admin status --health-check), the start-up
-- checks and health probes of a restarted service, and the resource
-- sampler the main loop runs.  Cheap things only in the status (it is
-- polled: ≤ 50 ms); the expensive checks run on request.
local crypto = require "aitbc.crypto"
local json = require "aitbc.json"
local logbook = require "aitbc.node.logbook"
local services = require "aitbc.node.services"
local signing = require "aitbc.protocol.signing"
local sys = require "aitbc.sys"
local util = require "aitbc.node.util"

local M = {}

--- Defaults; the node's configuration (DATA_DIR/node.json "thresholds") may change them.
M.THRESHOLDS = {
  cpu_percent = 90, memory_percent = 90, disk_percent = 90,
  queue_age_warn = 60, queue_age_critical = 600,
  follower_lag_warn = 10, follower_lag_critical = 100,
  backup_age_warn = 86400, backup_age_critical = 7 * 86400,
  block_age_factor = 5, -- a leader's newest block older than this many block times: stale
}

function M.thresholds(config)
  local t = {}
  for k, v in pairs(M.THRESHOLDS) do t[k] = v end
  for k, v in pairs(type(config.thresholds) == "table" and config.thresholds or {}) do
    if M.THRESHOLDS[k] and type(v) == "number" then t[k] = v end
  end
  return t
end

-- ---- resources: sampled by the main loop, read by the workers ----
-- Gauges in the process's counters ("ops|name"), set by adding the change.

local Sampler = {}
Sampler.__index = Sampler

function M.sampler() return setmetatable({ set = {}, next_at = 0 }, Sampler) end

local function proc_cpu_seconds()
  local stat = sys.read_file("/proc/self/stat") or ""
  local fields = {}
  for f in stat:gsub("^.-%) ", ""):gmatch("%S+") do fields[#fields + 1] = f end
  local ticks = (tonumber(fields[12]) or 0) + (tonumber(fields[13]) or 0) -- utime, stime (fields 14, 15)
  return ticks / 100
end

local function net_totals()
  local ext, lo = { rx = 0, tx = 0 }, { rx = 0, tx = 0 }
  for name, v in pairs(sys.network() or {}) do
    local t = name == "lo" and lo or ext
    t.rx, t.tx = t.rx + v.rx, t.tx + v.tx
  end
  return ext, lo
end

function Sampler:gauge(name, value)
  sys.counter_add("ops|" .. name, value - (self.set[name] or 0))
  self.set[name] = value
end

--- Every `every` seconds: CPU (machine, and this process), network rates.
function Sampler:tick(every)
  local now = sys.monotonic()
  if now < self.next_at then return end
  self.next_at = now + (every or 2)
  local cpu, pcpu = sys.cpu_times(), proc_cpu_seconds()
  local ext, lo = net_totals()
  local last = self.last
  if last then
    local dt = now - last.at
    if cpu and last.cpu then self:gauge("cpu_percent", sys.cpu_busy(last.cpu, cpu) * 100) end
    self:gauge("process_cpu_percent", (pcpu - last.pcpu) / dt * 100)
    self:gauge("net_rx_bytes_per_second", (ext.rx - last.ext.rx) / dt)
    self:gauge("net_tx_bytes_per_second", (ext.tx - last.ext.tx) / dt)
    self:gauge("loopback_bytes_per_second", (lo.rx - last.lo.rx) / dt)
    self:gauge("sampled_at", sys.time())
  end
  self.last = { at = now, cpu = cpu, pcpu = pcpu, ext = ext, lo = lo }
end

local function gauges(counters)
  local g = {}
  for k, v in pairs(counters) do
    local name = k:match("^ops|(.+)$")
    if name then g[name] = v end
  end
  return g
end

local function round(x, digits)
  if not x then return nil end
  local m = 10 ^ (digits or 1)
  return math.floor(x * m + 0.5) / m
end

local function level(value, limit)
  if not value or not limit then return "ok" end
  if value >= limit then return "critical" end
  if value >= limit * 0.8 then return "warn" end
  return "ok"
end

--- Resource use against the thresholds, and the alerts they raise.
local function resources(ctx, counters, t)
  local g = gauges(counters)
  local mem = sys.memory()
  local disk = sys.disk_usage(ctx.config.data_dir or ".")
  local rss = sys.rss()
  local out = {
    cpu = { used_percent = round(g.cpu_percent), threshold_percent = t.cpu_percent },
    memory = mem and { used_bytes = mem.used, total_bytes = mem.total, used_percent = round(mem.used / mem.total * 100),
      threshold_percent = t.memory_percent } or nil,
    disk = disk and { path = ctx.config.data_dir, used_bytes = disk.total - disk.free, total_bytes = disk.total,
      available_bytes = disk.available, used_percent = round((disk.total - disk.available) / disk.total * 100),
      threshold_percent = t.disk_percent } or nil,
    process = { pid = sys.getpid(), rss_bytes = rss, cpu_percent = round(g.process_cpu_percent) },
    network = { rx_bytes_per_second = round(g.net_rx_bytes_per_second, 0),
      tx_bytes_per_second = round(g.net_tx_bytes_per_second, 0),
      loopback_bytes_per_second = round(g.loopback_bytes_per_second, 0) },
    load = sys.loadavg(),
  }
  local alerts = json.array()
  for _, name in ipairs { "cpu", "memory", "disk" } do
    local r = out[name]
    if r then
      r.status = level(r.used_percent, r.threshold_percent)
      if r.status ~= "ok" then
        alerts[#alerts + 1] = { severity = r.status, resource = name, message = string.format("%s at %.1f%% (threshold %g%%)",
          name, r.used_percent, r.threshold_percent) }
      end
    end
  end
  return out, alerts
end

-- ---- chains ----

local ZERO = string.rep("0", 64)

local function tx_root(hashes)
  return #hashes > 0 and crypto.hex(crypto.sha256(table.concat(hashes))) or ZERO
end

--- Verifies a chain's newest `n` blocks: each hash against its header, its
-- transactions' root and count, the link to the block before, and the
-- authority's signature.  Returns {chain_id, checked, height, problems}.
function M.verify_chain(store, chain_id, authority_id, n)
  local public = crypto.unbase64(authority_id or "", "urlsafe")
  local blocks = store:chain_blocks_recent(chain_id, n)
  local problems = json.array()
  for i, b in ipairs(blocks) do
    local where = "block " .. b.height
    if b.height > 0 then
      local header = { chain_id = chain_id, height = b.height, prev_hash = b.prev_hash, timestamp = b.timestamp,
        tx_count = b.tx_count, tx_root = b.tx_root, proposer = b.proposer }
      if signing.hash(header) ~= b.hash then problems[#problems + 1] = where .. ": its hash does not match its header" end
      local hashes = {}
      for j, t in ipairs(store:chain_block_txs(chain_id, b.height)) do hashes[j] = t.hash end
      if #hashes ~= b.tx_count then
        problems[#problems + 1] = string.format("%s: %d transactions stored, the header says %d", where, #hashes, b.tx_count)
      elseif tx_root(hashes) ~= b.tx_root then
        problems[#problems + 1] = where .. ": the transaction root does not match its transactions"
      end
    end
    local below = blocks[i + 1]
    if below and below.hash ~= b.prev_hash then problems[#problems + 1] = where .. ": does not link to block " .. below.height end
    if not (public and #public == 32 and signing.verify(b.signature, b.hash, public)) then
      problems[#problems + 1] = where .. ": not signed by the authority"
    end
  end
  return { chain_id = chain_id, checked = #blocks, height = blocks[1] and blocks[1].height, problems = problems }
end

--- Each chain: height, head, age of the newest block, blocks in the last
-- minute, and its state (producing, following, halted, stale).
local function chain_states(ctx, t)
  local follows = {}
  for _, f in ipairs(ctx.store:chain_follow_states()) do follows[f.chain_id] = f end
  local out = json.array()
  for _, c in ipairs(ctx.config.chains or {}) do
    local head = ctx.store:chain_head(c)
    local age = head and (ctx.now - head.timestamp) or nil
    local f = follows[c]
    local state = ctx.config.follow and (f and f.state or "following") or "producing"
    if state == "producing" and age and age > math.max(10, t.block_age_factor * (ctx.config.block_time or 2)) then
      state = "stale"
    end
    out[#out + 1] = { chain_id = c, height = head and head.height, head_hash = head and head.hash,
      last_block_age_seconds = round(age), blocks_last_minute = ctx.store:chain_blocks_since(c, ctx.now - 60),
      state = state, reason = f and f.reason or nil }
  end
  return out
end

--- Followers this leader has heard from (their reported heights, by address).
local function followers(ctx, counters, heights, t)
  local by = {}
  for k, v in pairs(counters) do
    local remote, chain_id, what = k:match("^follower|([^|]+)|([^|]+)|(%a+)$")
    if remote then
      local id = remote .. "|" .. chain_id
      by[id] = by[id] or { address = remote, chain_id = chain_id }
      by[id][what] = v
    end
  end
  local out = json.array()
  for _, f in pairs(by) do
    local seen_ago = f.seen and (ctx.now - f.seen) or nil
    if seen_ago and seen_ago < 600 then
      local lag = heights[f.chain_id] and f.height and math.max(0, heights[f.chain_id] - f.height) or nil
      out[#out + 1] = { address = f.address, chain_id = f.chain_id, height = f.height and math.floor(f.height),
        lag_blocks = lag and math.floor(lag), last_seen_seconds = round(seen_ago),
        status = level(lag, t.follower_lag_critical) ~= "ok" and level(lag, t.follower_lag_critical)
          or (lag and lag >= t.follower_lag_warn and "warn") or "ok" }
    end
  end
  table.sort(out, function(a, b) return a.address .. a.chain_id < b.address .. b.chain_id end)
  return out
end

--- A leader notes a follower that asked for a head (X-Aitbc-Follower-Height):
-- its address, chain, height and when.
function M.note_follower(ctx, chain_id)
  local height = math.tointeger(tonumber(ctx.headers["x-aitbc-follower-height"] or ""))
  if not height or height < 0 or not chain_id:match("^[%w_%-%.]+$") then return end
  local key = "follower|" .. (ctx.req.remote or "?") .. "|" .. chain_id .. "|"
  local counters = sys.counters()
  sys.counter_add(key .. "height", height - (counters[key .. "height"] or 0))
  sys.counter_add(key .. "seen", ctx.now - (counters[key .. "seen"] or 0))
end

local function file_size(path)
  local st = sys.stat(path)
  return st and st.size or 0
end

local function database(ctx)
  local s = ctx.store:db_stats()
  local path = ctx.config.db_path
  local last = M.last_integrity(ctx.config)
  return { path = path, connection = "ok", size_bytes = file_size(path), wal_bytes = file_size(path .. "-wal"),
    page_size = s.page_size, page_count = s.page_count, free_pages = s.freelist_count, journal_mode = s.journal_mode,
    schema_version = s.schema_version, integrity = last }
end

--- The last integrity check's result (health checks and emergency starts
-- write it), or a note that none ran yet.
function M.last_integrity(config)
  local text = sys.read_file((config.data_dir or ".") .. "/integrity.json")
  local r = text and json.decode(text)
  if type(r) ~= "table" then return { status = "not checked yet", hint = "aitbc admin status --health-check" } end
  return r
end

function M.save_integrity(config, problems, full, now)
  local r = { status = #problems == 0 and "ok" or "failed", problems = problems, checked_at = util.iso(now),
    kind = full and "integrity_check" or "quick_check" }
  sys.write_file(config.data_dir .. "/integrity.json", json.encode(r) .. "\n", tonumber("600", 8))
  return r
end

local function service_list(counters)
  local out = json.array()
  for _, name in ipairs(services.NAMES) do
    out[#out + 1] = { name = name, status = services.serving(name) and "ok" or "restarting",
      inflight = math.floor(counters["service_inflight|" .. name] or 0) }
  end
  return out
end

local function jobs_summary(ctx)
  local by_state = ctx.store:jobs_by_state()
  local oldest = ctx.store:oldest_queued()
  return { queued = by_state.QUEUED or 0, running = by_state.RUNNING or 0, completed = by_state.COMPLETED or 0,
    failed = by_state.FAILED or 0, oldest_queued_age_seconds = oldest and round(ctx.now - oldest) }
end

--- Online miners' GPUs as their heartbeats last reported them (NVML).
local function gpu_readings(ctx)
  local out = json.array()
  for _, r in ipairs(ctx.store:miners_gpu_readings(ctx.now - ctx.config.heartbeat_timeout)) do
    local stats = json.decode(r.gpu_stats)
    for _, g in ipairs(type(stats) == "table" and type(stats.gpus) == "table" and stats.gpus or {}) do
      out[#out + 1] = { miner_id = r.miner_id, index = g.index, name = g.name, utilization_percent = g.utilization_gpu,
        temperature_c = g.temperature_c, memory_used_bytes = g.memory_used, memory_total_bytes = g.memory_total,
        power_w = g.power_w, reported_at = util.iso(stats.at) }
    end
  end
  return out
end

--- Alerts of chains halted or stale and of followers behind; whether a chain is.
local function chain_alerts(chains, follow, alerts)
  local halted = false
  for _, c in ipairs(chains) do
    if c.state == "halted" or c.state == "stale" then
      halted = true
      alerts[#alerts + 1] = { severity = c.state == "halted" and "critical" or "warn", resource = "chain",
        message = c.chain_id .. " is " .. c.state .. (c.reason and (": " .. c.reason) or "") }
    end
  end
  for _, f in ipairs(follow) do
    if f.status ~= "ok" then
      alerts[#alerts + 1] = { severity = f.status, resource = "replication",
        message = string.format("follower %s is %d blocks behind on %s", f.address, f.lag_blocks or 0, f.chain_id) }
    end
  end
  return halted
end

--- GET /v1/admin/status: one document (verbose adds the recent entries
-- themselves, the thresholds and the HTTP figures).
function M.status(ctx, verbose)
  local t = M.thresholds(ctx.config)
  local counters = sys.counters()
  local chains = chain_states(ctx, t)
  local heights = {}
  for _, c in ipairs(chains) do heights[c.chain_id] = c.height end
  local res, alerts = resources(ctx, counters, t)
  local counts, newest = logbook.recent(ctx.config.log_path, ctx.now - 3600, verbose and 20 or 5)
  local miners_total = #ctx.store:miners_list()
  local online = ctx.store:miners_online(ctx.now - ctx.config.heartbeat_timeout)
  local follow = followers(ctx, counters, heights, t)
  local halted = chain_alerts(chains, follow, alerts)
  local svc = service_list(counters)
  local degraded = halted or #alerts > 0
  for _, s in ipairs(svc) do degraded = degraded or s.status ~= "ok" end
  local doc = {
    status = degraded and "degraded" or "ok",
    node = { version = sys.version, pid = sys.getpid(), uptime_seconds = math.floor(ctx.now - ctx.config.started_at),
      started_at = util.iso(ctx.config.started_at), node_key = ctx.node_key.id, environment = ctx.config.environment,
      data_dir = ctx.config.data_dir, supervised = ctx.config.supervised or false,
      role = ctx.config.follow and "follower" or "leader" },
    services = svc,
    health = { http = "ok", storage = "ok", chains = halted and "degraded" or "ok" },
    chain = { role = ctx.config.follow and "follower" or "leader", leader = ctx.config.follow, chains = chains },
    database = database(ctx),
    replication = { role = ctx.config.follow and "follower" or "leader", leader = ctx.config.follow, followers = follow },
    peers = { leader = ctx.config.follow, followers = #follow },
    jobs = jobs_summary(ctx),
    miners = { total = miners_total, online = online, gpus = gpu_readings(ctx) },
    resources = res,
    alerts = alerts,
    recent = { window_seconds = 3600, warnings = counts.warn, errors = counts.error, critical = counts.critical,
      entries = newest },
  }
  if verbose then
    doc.thresholds = t
    doc.http = { connections = math.floor(counters["gauge|http_connections|"] or 0) }
    local g = 0
    for k, v in pairs(counters) do if k:match("^gauge|http_connections|") then g = g + v end end
    doc.http.connections = math.floor(g)
  end
  return doc
end

-- ---- health checks, scored ----

local function check(name, status, detail, recommendation, fields)
  local c = { name = name, status = status, detail = detail, recommendation = status ~= "ok" and recommendation or nil }
  for k, v in pairs(fields or {}) do c[k] = v end
  return c
end

local function check_database(ctx, full)
  local started = sys.monotonic()
  local problems = ctx.store:integrity(full, 20)
  M.save_integrity(ctx.config, problems, full, ctx.now)
  local took = sys.monotonic() - started
  if #problems == 0 then
    return check("database integrity", "ok", string.format("PRAGMA %s: ok (%.2f s)", full and "integrity_check" or
      "quick_check", took))
  end
  return check("database integrity", "critical", table.concat(problems, "; "),
    "stop writes and restore the last good backup: aitbc admin restore --from DIR")
end

local function check_chains(ctx, n)
  local out = {}
  for _, c in ipairs(ctx.config.chains or {}) do
    local v = M.verify_chain(ctx.store, c, ctx.config.authority, n)
    if #v.problems == 0 then
      out[#out + 1] = check("chain " .. c, "ok", string.format("newest %d block(s) verified (hashes, links, "
        .. "transaction roots, signatures) up to height %s", v.checked, tostring(v.height)))
    else
      out[#out + 1] = check("chain " .. c, "critical", table.concat(v.problems, "; "),
        "the stored chain does not verify: restore it from a backup or resync a follower from its leader")
    end
  end
  return out
end

local function check_key_files(ctx)
  local dir = ctx.config.data_dir
  local bad = {}
  local st = sys.stat(dir)
  if st and st.mode & tonumber("077", 8) ~= 0 then bad[#bad + 1] = string.format("%s is mode %04o", dir, st.mode) end
  for _, name in ipairs { "node.key", "admin.key", "node.db" } do
    local f = sys.stat(dir .. "/" .. name)
    if f and f.mode & tonumber("077", 8) ~= 0 then bad[#bad + 1] = string.format("%s is mode %04o", name, f.mode) end
  end
  if #bad == 0 then return check("key file modes", "ok", "data directory 0700, keys and database 0600") end
  return check("key file modes", "critical", table.concat(bad, "; ") .. " (readable by other users)",
    "chmod 700 " .. dir .. " && chmod 600 " .. dir .. "/*.key " .. dir .. "/node.db")
end

local function check_disk(ctx, t)
  local d = sys.disk_usage(ctx.config.data_dir)
  if not d then return check("disk space", "critical", "cannot read the data directory's file system") end
  local used = (d.total - d.available) / d.total * 100
  local status = level(used, t.disk_percent)
  return check("disk space", status, string.format("%.1f%% used, %d MB available (threshold %g%%)", used,
    d.available // (1 << 20), t.disk_percent), "free space on the data directory's file system, or move old backups away")
end

local function check_clock(ctx)
  local drift = (sys.time() - ctx.config.started_at) - (sys.monotonic() - (ctx.config.started_mono or sys.monotonic()))
  local future = 0
  for _, c in ipairs(ctx.config.chains or {}) do
    local head = ctx.store:chain_head(c)
    if head then future = math.max(future, head.timestamp - ctx.now) end
  end
  local year = tonumber(os.date("!%Y", math.floor(ctx.now)))
  if year < 2024 or future > 5 then
    return check("clock", "critical", string.format("the wall clock reads %s; newest block %.0f s in the future",
      util.iso(ctx.now), future), "set the clock (NTP: timedatectl set-ntp true)")
  end
  if ctx.config.started_mono and math.abs(drift) > 5 then
    return check("clock", "warn", string.format("the wall clock moved %.1f s against the monotonic clock since start", drift),
      "check time synchronisation (timedatectl status)")
  end
  return check("clock", "ok", "wall clock " .. util.iso(ctx.now) .. ", steady since start; blocks not in the future")
end

local function check_miners(ctx)
  local online = ctx.store:miners_online(ctx.now - ctx.config.heartbeat_timeout)
  local total = #ctx.store:miners_list()
  local queued = ctx.store:jobs_by_state().QUEUED or 0
  if online == 0 and queued > 0 then
    return check("miners alive", "critical", string.format("no miner online (%d registered) and %d job(s) queued", total,
      queued), "start miners: aitbc miner mine-ollama --model MODEL --continuous")
  end
  if online == 0 then
    return check("miners alive", "warn", string.format("no miner online (%d registered)", total),
      "start miners: aitbc miner mine-ollama --model MODEL --continuous")
  end
  return check("miners alive", "ok", string.format("%d of %d miner(s) online", online, total))
end

local function check_queue(ctx, t)
  local oldest = ctx.store:oldest_queued()
  local age = oldest and (ctx.now - oldest) or 0
  local status = age >= t.queue_age_critical and "critical" or age >= t.queue_age_warn and "warn" or "ok"
  return check("queue age", status, oldest and string.format("oldest queued job waits %.0f s (warn %g s, critical %g s)",
    age, t.queue_age_warn, t.queue_age_critical) or "no job waiting",
    "more miners for the queued models (aitbc admin status shows the queue), or cancel stuck jobs")
end

local function check_backup(ctx, t)
  local text = sys.read_file(ctx.config.data_dir .. "/last-backup.json")
  local last = text and json.decode(text)
  if type(last) ~= "table" or not last.finished_at then
    return check("backup age", "warn", "no backup of this node yet", "aitbc admin backup --type full --destination DIR")
  end
  local age = ctx.now - (last.finished_epoch or 0)
  local status = age >= t.backup_age_critical and "critical" or age >= t.backup_age_warn and "warn" or "ok"
  return check("backup age", status, string.format("last %s backup %s (%.1f h ago), %s", tostring(last.type),
    last.finished_at, age / 3600, tostring(last.id)), "aitbc admin backup --type full --destination DIR")
end

local function check_replication(ctx, t)
  local counters = sys.counters()
  local heights = {}
  for _, c in ipairs(ctx.config.chains or {}) do heights[c] = ctx.store:chain_height(c) end
  if ctx.config.follow then
    for _, f in ipairs(ctx.store:chain_follow_states()) do
      if f.state == "halted" then
        return check("followers' lag", "critical", f.chain_id .. " halted following " .. ctx.config.follow .. ": "
          .. tostring(f.reason), "inspect the refused block; resync from a trusted leader")
      end
    end
    return check("followers' lag", "ok", "this node follows " .. ctx.config.follow .. "; every chain following")
  end
  local worst, list = nil, followers(ctx, counters, heights, t)
  for _, f in ipairs(list) do if not worst or (f.lag_blocks or 0) > (worst.lag_blocks or 0) then worst = f end end
  if not worst then return check("followers' lag", "ok", "no follower heard from in the last 10 minutes") end
  return check("followers' lag", worst.status, string.format("%d follower(s); the furthest behind: %s, %d block(s) on %s",
    #list, worst.address, worst.lag_blocks or 0, worst.chain_id), "check the follower's connectivity and its log")
end

local function check_services()
  local down = {}
  for _, name in ipairs(services.NAMES) do if not services.serving(name) then down[#down + 1] = name end end
  if #down == 0 then return check("services", "ok", table.concat(services.NAMES, ", ") .. " serving") end
  return check("services", "warn", table.concat(down, ", ") .. " restarting", "wait for the restart: aitbc admin status")
end

local function check_security(ctx)
  local refused = ctx.store:refused_since(ctx.now - 3600)
  local admins = ctx.store:keys_count("admin", ctx.now)
  local status = refused >= 1000 and "warn" or "ok"
  return check("security audit", status, string.format("%d usable admin key(s); %d refused request(s) (401) in the "
    .. "last hour", admins, refused), "look at who is refused: aitbc auth audit / aitbc admin logs --level warn",
    { refused_last_hour = refused, admin_keys = admins })
end

local WEIGHT = { ok = 1, warn = 0.5, critical = 0 }

--- GET /v1/admin/health: the checks, a score out of 100, the overall
-- status (critical when any check is) and the performance figures.
function M.health(ctx, comprehensive)
  local t = M.thresholds(ctx.config)
  local list = { check_database(ctx, comprehensive) }
  for _, c in ipairs(check_chains(ctx, comprehensive and 200 or 20)) do list[#list + 1] = c end
  for _, c in ipairs { check_key_files(ctx), check_disk(ctx, t), check_clock(ctx), check_miners(ctx), check_queue(ctx, t),
    check_backup(ctx, t), check_replication(ctx, t), check_services(), check_security(ctx) } do
    list[#list + 1] = c
  end
  local total, worst = 0, "ok"
  for _, c in ipairs(list) do
    total = total + WEIGHT[c.status]
    if c.status == "critical" or (c.status == "warn" and worst == "ok") then worst = c.status end
  end
  local status_doc = M.status(ctx, false)
  return { status = worst, score = math.floor(total / #list * 100 + 0.5), checked_at = util.iso(ctx.now),
    comprehensive = comprehensive or false, checks = json.array(list),
    node = status_doc.node, resources = status_doc.resources, jobs = status_doc.jobs,
    performance = M.performance(sys.counters()) }
end

--- Request latency by route from the counters: count, mean and p95 (upper bound of its bucket).
local BUCKETS = { 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30 }
function M.performance(counters)
  local out = json.array()
  for k, n in pairs(counters) do
    local route = k:match("^lat_count|(.*)$")
    if route and n > 0 then
      local target, cumulative, p95 = n * 0.95, 0, nil
      for i, le in ipairs(BUCKETS) do
        cumulative = cumulative + (counters["lat|" .. route .. "|" .. i] or 0)
        if not p95 and cumulative >= target then p95 = le end
      end
      out[#out + 1] = { route = route, requests = math.floor(n), mean_ms = round((counters["lat_sum|" .. route] or 0) / n
        * 1000, 2), p95_ms = p95 and p95 * 1000 or nil }
    end
  end
  table.sort(out, function(a, b) return a.requests > b.requests end)
  return out
end

-- ---- a service's restart: its start-up checks and its health probe ----

--- Runs a restarted service's start-up (its own state rebuilt) and checks;
-- returns the checks and a probe(): detail | nil, why.
function M.service_restart(node, name)
  local checks, ctx = {}, { store = node.store, config = node.config, now = sys.time() }
  if name == "blockchain-node" then
    checks = check_chains(ctx, 20)
    local before = {}
    for _, c in ipairs(node.config.chains or {}) do before[c] = node.store:chain_height(c) or -1 end
    if node.hooks and node.hooks.chain_restart then node.hooks.chain_restart() end
    return checks, function()
      if node.config.follow then
        for _, f in ipairs(node.store:chain_follow_states()) do
          if f.state == "halted" then return nil, f.chain_id .. " halted: " .. tostring(f.reason) end
        end
        return "following " .. node.config.follow
      end
      local produced = {}
      for c, h in pairs(before) do
        local now_h = node.store:chain_height(c) or -1
        if now_h <= h then return nil, "no new block on " .. c .. " yet" end
        produced[#produced + 1] = c .. " block " .. now_h
      end
      table.sort(produced)
      return "producing again: " .. table.concat(produced, ", ")
    end
  elseif name == "coordinator" then
    if node.hooks and node.hooks.sweep then node.hooks.sweep() end
    local by_state = node.store:jobs_by_state()
    checks[1] = check("job queue", "ok", string.format("lapsed and stale jobs re-queued; %d queued, %d running",
      by_state.QUEUED or 0, by_state.RUNNING or 0))
    sys.notify() -- waiting miners poll again
    return checks, function()
      node.store:jobs_by_state()
      return "the job store answers; miners' long polls were woken"
    end
  elseif name == "marketplace" then
    local rows, total = node.store:offers { order = "l.rate_units", limit = 1, cutoff = ctx.now - 60 }
    checks[1] = check("listings", "ok", string.format("%d listing(s) readable", total or #rows))
    return checks, function() return "offers answer" end
  else -- monitoring
    if node.hooks and node.hooks.monitoring_restart then node.hooks.monitoring_restart() end
    checks[1] = check("sampler", "ok", "resource sampling and the metrics history restarted")
    return checks, function()
      local at = sys.counters()["ops|sampled_at"]
      if not at or sys.time() - at > 10 then return nil, "no resource sample yet" end
      return "resources sampled " .. string.format("%.1f s ago", sys.time() - at)
    end
  end
end

return M
