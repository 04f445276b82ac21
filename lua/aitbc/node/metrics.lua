--- The metrics history: the main loop (with the node's duties) writes a
-- row a minute into metrics_history — jobs submitted, completed and failed
-- in that minute, queue depth and waits, running jobs, miners online, their
-- GPUs' utilisation and hottest temperature (from heartbeats), blocks and
-- transactions, CPU, memory and disk, requests — and after a day folds
-- them into 15-minute rows, kept 30 days (DESIGN.md §11).  `admin monitor`
-- and `optimize predict` read it through GET /v1/admin/metrics.
local json = require "aitbc.json"
local sys = require "aitbc.sys"
local util = require "aitbc.node.util"

local M = {}

M.KEEP_MINUTES = 86400 -- minute rows for a day, then 15-minute rows
M.KEEP = 30 * 86400

--- Sum of the counters whose names start with prefix (this process's).
local function counter_sum(counters, prefix)
  local n = 0
  for k, v in pairs(counters) do if k:sub(1, #prefix) == prefix then n = n + v end end
  return n
end

--- Online miners' GPU readings -> average utilisation, hottest, count.
local function gpu_summary(rows)
  local util_sum, util_n, hottest, gpus = 0, 0, nil, 0
  for _, r in ipairs(rows) do
    local stats = r.gpu_stats and json.decode(r.gpu_stats)
    for _, g in ipairs(type(stats) == "table" and type(stats.gpus) == "table" and stats.gpus or {}) do
      gpus = gpus + 1
      if type(g.utilization_gpu) == "number" then util_sum, util_n = util_sum + g.utilization_gpu, util_n + 1 end
      if type(g.temperature_c) == "number" then hottest = math.max(hottest or g.temperature_c, g.temperature_c) end
    end
  end
  return util_n > 0 and util_sum / util_n or nil, hottest, gpus
end
M.gpu_summary = gpu_summary

local Rollup = {}
Rollup.__index = Rollup

--- heartbeat_timeout: a miner heard from within it is online.
function M.rollup(store, heartbeat_timeout, data_dir)
  return setmetatable({ store = store, timeout = heartbeat_timeout or 60, data_dir = data_dir, next_down = 0 }, Rollup)
end

--- What the minute's row is made of, read now.
function Rollup:read(now)
  local snap = self.store:metrics_snapshot(now, now - self.timeout)
  local counters = sys.counters()
  snap.submitted = counter_sum(counters, "req|POST /v1/jobs|2")
  snap.requests = counter_sum(counters, "req|")
  snap.cpu = counters["ops|cpu_percent"]
  return snap
end

--- Called every loop turn; writes the row of each minute that ended.
function Rollup:tick(now)
  local minute = math.floor(now / 60) * 60
  if not self.last then
    self.last, self.minute = self:read(now), minute -- the baseline: the first row is the next whole minute's
    return false
  end
  if minute <= self.minute then return false end
  local cur, prev = self:read(now), self.last
  local blocks, txs = 0, 0
  for chain_id, h in pairs(cur.heights) do
    local before = prev.heights[chain_id]
    if before and h > before then
      blocks = blocks + (h - before)
      txs = txs + self.store:chain_txs_above(chain_id, before)
    end
  end
  local mem, disk = sys.memory(), self.data_dir and sys.disk_usage(self.data_dir)
  local gpu_util, hottest, gpus = gpu_summary(cur.miners)
  local function delta(a, b) return math.max(0, math.floor((a or 0) - (b or 0))) end
  self.store:metrics_put {
    minute = self.minute, resolution = 60, jobs_submitted = delta(cur.submitted, prev.submitted),
    jobs_completed = delta(cur.completed, prev.completed), jobs_failed = delta(cur.failed, prev.failed),
    queue_depth = cur.queue_depth, running = cur.running, queue_wait_avg = cur.queue_wait_avg,
    queue_wait_max = cur.queue_wait_max, miners_online = #cur.miners, gpu_utilization = gpu_util,
    gpu_temperature_max = hottest, gpus = gpus, blocks = blocks, transactions = txs, cpu_percent = cur.cpu,
    memory_percent = mem and mem.used / mem.total * 100 or nil,
    disk_percent = disk and (disk.total - disk.available) / disk.total * 100 or nil,
    requests = delta(cur.requests, prev.requests),
  }
  self.last, self.minute = cur, minute
  if now >= self.next_down then
    self.store:metrics_downsample(now - M.KEEP_MINUTES, now - M.KEEP)
    self.next_down = now + 900
  end
  return true
end

-- ---- the admin API ----

local FIELDS = { "jobs_submitted", "jobs_completed", "jobs_failed", "queue_depth", "running", "queue_wait_avg",
  "queue_wait_max", "miners_online", "gpu_utilization", "gpu_temperature_max", "gpus", "blocks", "transactions",
  "cpu_percent", "memory_percent", "disk_percent", "requests" }

--- GET /v1/admin/metrics?since=&until=&limit=: rows oldest first.
function M.history(ctx)
  local q = ctx.query
  local since = util.query_number(q, "since", 0, 1e11, ctx.now - 3600)
  local until_ = util.query_number(q, "until", 0, 1e11, ctx.now)
  local limit = util.query_integer(q, "limit", 1, 50000, 1440)
  local rows = ctx.store:metrics_range(since, until_, limit)
  local items = json.array()
  for i = #rows, 1, -1 do
    local r = rows[i]
    local item = { time = util.iso(r.minute), minute = r.minute, resolution = r.resolution }
    for _, f in ipairs(FIELDS) do item[f] = r[f] end
    items[#items + 1] = item
  end
  return 200, { items = items, fields = json.array(FIELDS), since = util.iso(since), ["until"] = util.iso(until_) }
end

return M
