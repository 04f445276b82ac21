--- The node's side of optimisation (spec §12): the network's own history
-- per interval, derived from its jobs (what `aitbc optimize predict`
-- forecasts), history imported from elsewhere, the models online miners
-- have and an agent's recent inputs (what `aitbc optimize self-opt` probes
-- and tries).
local json = require "aitbc.json"
local util = require "aitbc.node.util"

local invalid = util.invalid

local M = { MAX_IMPORT_POINTS = 20000, MAX_IMPORT_JOBS = 200000 }

local function round(x, digits)
  local f = 10 ^ (digits or 3)
  return math.floor(x * f + 0.5) / f
end

--- One interval's point; adds its service times to totals.
local function point(h, b, t0, interval, totals)
  local r = h.buckets[b] or { jobs = 0, waited = 0, wait_sum = 0, wait_max = 0 }
  local present, slots = {}, 0
  for _, s in ipairs(h.spans) do
    if s.from < t0 + interval and s.to >= t0 then present[s.miner_id], slots = true, slots + (s.concurrency or 1) end
  end
  local served, service = 0, 0
  for id, m in pairs(h.miners[b] or {}) do
    if not present[id] then present[id], slots = true, slots + 1 end
    served, service = served + m.served, service + m.service_sum
    totals.service_sq = totals.service_sq + m.service_sq
  end
  local miners = 0
  for _ in pairs(present) do miners = miners + 1 end
  totals.served, totals.service_sum = totals.served + served, totals.service_sum + service
  return { t = util.iso(t0), jobs = r.jobs, miners = miners, slots = slots, served = served,
    queue_wait_s = r.waited > 0 and round(r.wait_sum / r.waited) or json.null,
    queue_wait_max_s = r.waited > 0 and round(r.wait_max) or json.null,
    service_s = served > 0 and round(service / served) or json.null }
end

--- GET /v1/optimize/history?interval=S&days=D&partial=0|1: one point per
-- interval (UTC-aligned, the current unfinished one left out unless
-- partial=1) from the first job
-- on: jobs submitted, mean and longest queue wait of the jobs that
-- started, miners present (registered and heard from, or starting a job),
-- jobs served and their mean service time; and the service time over the
-- whole span (mean, squared coefficient of variation) for queue models.
function M.history(ctx)
  local interval = util.query_integer(ctx.query, "interval", 60, 86400, 900)
  if 86400 % interval ~= 0 then
    invalid("interval", "must divide a day (e.g. 300, 900, 3600) so that days line up")
  end
  local days = util.query_integer(ctx.query, "days", 1, 90, 30)
  -- partial=1: the current interval too, so far (a dashboard's last point)
  local partial = util.query_integer(ctx.query, "partial", 0, 1, 0) == 1
  local to = math.floor(ctx.now / interval) * interval + (partial and interval or 0)
  local span_from = to - days * 86400
  local h = ctx.store:job_history(span_from, to, interval)
  -- history starts with the first job (none: no history at all)
  local from = not h.first and to or math.max(span_from, math.floor(h.first / interval) * interval)
  local offset = (from - span_from) // interval -- the buckets were counted from the span's start
  local points = json.array()
  local totals = { served = 0, service_sum = 0, service_sq = 0 }
  local n = math.max(0, math.floor((to - from) / interval))
  for i = 0, n - 1 do points[#points + 1] = point(h, i + offset, from + i * interval, interval, totals) end
  local served, service_sum, service_sq = totals.served, totals.service_sum, totals.service_sq
  local mean = served > 0 and service_sum / served or nil
  local cv2 = mean and mean > 0 and served > 1 and math.max(0, service_sq / served - mean * mean) / (mean * mean) or nil
  return 200, { interval_seconds = interval, from = util.iso(from), to = util.iso(to), first_job_at = util.iso(h.first),
    points = points, service = { mean_s = mean and round(mean, 4) or json.null, cv2 = cv2 and round(cv2, 4) or json.null,
      samples = served },
    miners_online = ctx.store:miners_online(ctx.now - ctx.config.heartbeat_timeout) }
end

--- POST /v1/admin/history/import {interval?, model?, points: [{time, jobs,
-- queue_wait_s?, service_s?, miners?}]}: past load from elsewhere (the
-- older coordinator's records, another network's, a demo) as completed
-- jobs of type "imported" spread evenly over each point's interval, so that
-- the history above reads them like any other job.  Points must lie in
-- the past.
function M.import(ctx)
  local body = ctx:body_object()
  local interval = util.optional_integer(body, "interval", 1, 86400, 60)
  local model = util.optional_string(body, "model", 200) or "imported"
  local points = body.points
  if type(points) ~= "table" or (next(points) ~= nil and not json.is_array(points)) or #points == 0 then
    invalid("points", "is required: a list of {time, jobs, queue_wait_s, service_s, miners}")
  end
  if #points > M.MAX_IMPORT_POINTS then
    invalid("points", "may hold at most " .. M.MAX_IMPORT_POINTS .. " points a request; send the rest in another")
  end
  local rows, total = {}, 0
  for i, p in ipairs(points) do
    local at = "points[" .. i .. "]"
    if type(p) ~= "table" then invalid(at, "must be an object {time, jobs, ...}") end
    local t = type(p.time) == "number" and p.time or (type(p.time) == "string" and require("aitbc.timefmt").parse(p.time))
    if not t then invalid(at .. ".time", "is required: RFC 3339 (2026-11-22T10:00:00Z) or Unix seconds") end
    if t + interval > ctx.now then invalid(at .. ".time", "must be in the past (with its interval)") end
    local jobs = util.optional_integer(p, "jobs", 0, 100000, nil, at .. ".jobs")
    if not jobs then invalid(at .. ".jobs", "is required: how many jobs were submitted") end
    local wait = util.optional_number(p, "queue_wait_s", 0, 86400, at .. ".queue_wait_s") or 0
    local service = util.optional_number(p, "service_s", 0, 86400, at .. ".service_s") or 1
    local miners = util.optional_integer(p, "miners", 1, 100000, 1, at .. ".miners")
    total = total + jobs
    if total > M.MAX_IMPORT_JOBS then
      invalid("points", "may stand for at most " .. M.MAX_IMPORT_JOBS .. " jobs a request; send fewer points")
    end
    for k = 0, jobs - 1 do
      local requested = t + (k + 0.5) * interval / jobs
      rows[#rows + 1] = { job_id = util.new_job_id(requested), client_key_id = ctx.key.key_id, model = model,
        requested_at = requested, started_at = requested + wait, finished_at = requested + wait + service,
        miner_id = "imported-" .. (k % miners + 1) }
    end
  end
  local n = ctx.store:jobs_import(rows)
  ctx.log:info("history imported", { points = #points, jobs = n, request_id = ctx.request_id })
  return 201, { points = #points, jobs = n, interval_seconds = interval, model = model }
end

--- GET /v1/optimize/models: the models online miners declare, with how
-- many miners have each and what they can do (Ollama's capabilities).
function M.models(ctx)
  local by = {}
  for _, m in ipairs(ctx.store:miners_list()) do
    if m.status == "ONLINE" and m.last_seen >= ctx.now - ctx.config.heartbeat_timeout then
      local caps = json.decode(m.capabilities) or {}
      for _, name in ipairs(caps.models or {}) do
        local key = util.model_name(name)
        by[key] = by[key] or { name = key, miners = 0,
          capabilities = (caps.model_capabilities or {})[name] or json.null }
        by[key].miners = by[key].miners + 1
      end
    end
  end
  local items = json.array()
  for _, v in pairs(by) do items[#items + 1] = v end
  table.sort(items, function(a, b) return a.name < b.name end)
  return 200, { items = items }
end

--- GET /v1/agents/{id}/inputs?limit=N: what the agent was last asked
-- (its runs, not the optimiser's trials), newest first.
function M.agent_inputs(ctx, agent_id)
  require("aitbc.node.agents").own(ctx, agent_id)
  local limit = util.query_integer(ctx.query, "limit", 1, 100, 10)
  return 200, { agent_id = agent_id, items = json.array(ctx.store:agent_recent_inputs(agent_id, limit)) }
end

return M
