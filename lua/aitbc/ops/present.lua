--- How `aitbc admin` shows the node's state to people: the status overview,
-- the scored health checks, operation steps, and the health report file
-- (Markdown beside its JSON).
local json = require "aitbc.json"

local M = {}

--- 1536 -> "1.5 KB"
function M.bytes(n)
  if type(n) ~= "number" then return "-" end
  local units, i = { "B", "KB", "MB", "GB", "TB" }, 1
  while n >= 1024 and i < #units do n, i = n / 1024, i + 1 end
  return (i == 1 and string.format("%d %s", n, units[i])) or string.format("%.1f %s", n, units[i])
end

--- 3725 -> "1h 2m"
function M.duration(s)
  if type(s) ~= "number" then return "-" end
  if s < 60 then return string.format("%.1f s", s) end
  if s < 3600 then return string.format("%dm %ds", s // 60, math.floor(s % 60)) end
  if s < 86400 then return string.format("%dh %dm", s // 3600, math.floor(s % 3600) // 60) end
  return string.format("%dd %dh", s // 86400, math.floor(s % 86400) // 3600)
end

local MARK = { ok = "✓", warn = "!", critical = "✗" }
local STYLE = { ok = "green", warn = "yellow", critical = "red", degraded = "yellow", failing = "red" }

local function mark(out, status) return out:style(MARK[status] or "?", STYLE[status]) end

local function pct(v) return type(v) == "number" and string.format("%.1f%%", v) or "-" end

--- The status document (GET /v1/admin/status) for people.
local function status_node(d, out)
  local n = d.node or {}
  out:print(out:format_record({
    node = string.format("aitbc %s, pid %s, up %s, %s%s", tostring(n.version), tostring(n.pid),
      M.duration(n.uptime_seconds), tostring(n.role), n.supervised and " (supervised)" or ""),
    status = out:style(tostring(d.status), STYLE[d.status]) .. (#(d.alerts or {}) > 0
      and string.format(" (%d alert%s)", #d.alerts, #d.alerts == 1 and "" or "s") or ""),
    key = n.node_key, data = n.data_dir,
  }, { "node", "status", { "key", "node key" }, { "data", "data dir" } }))
end

local function status_services(d, out)
  local rows = {}
  for i, s in ipairs(d.services or {}) do rows[i] = { service = s.name, status = s.status, inflight = s.inflight } end
  out:print(out:format_table(rows, { { "service", "service", keep = true }, "status", { "inflight", "in flight" } }))
end

local function status_chains(d, out)
  local rows = {}
  for i, c in ipairs((d.chain or {}).chains or {}) do
    rows[i] = { chain = c.chain_id, height = c.height, last = c.last_block_age_seconds and
      (M.duration(c.last_block_age_seconds) .. " ago"), rate = c.blocks_last_minute, state = c.state }
  end
  out:print(out:format_table(rows, { { "chain", "chain", keep = true }, "height", { "last", "last block" },
    { "rate", "blocks/min" }, "state" }))
end

local function status_summary(d, out)
  local db, rep, jobs, miners = d.database or {}, d.replication or {}, d.jobs or {}, d.miners or {}
  local integrity = db.integrity or {}
  local followers = {}
  for _, f in ipairs(rep.followers or {}) do
    followers[#followers + 1] = string.format("%s %s %s behind", f.address, f.chain_id, tostring(f.lag_blocks))
  end
  out:print(out:format_record({
    database = string.format("%s (WAL %s), schema %s, %s, integrity %s%s", M.bytes(db.size_bytes), M.bytes(db.wal_bytes),
      tostring(db.schema_version), tostring(db.journal_mode), tostring(integrity.status),
      integrity.checked_at and (" (" .. integrity.checked_at .. ")") or ""),
    replication = rep.role == "follower" and ("follower of " .. tostring(rep.leader))
      or (#followers > 0 and ("leader; followers: " .. table.concat(followers, ", ")) or "leader; no follower seen"),
    jobs = string.format("%d queued%s, %d running; miners %d of %d online", jobs.queued or 0,
      jobs.oldest_queued_age_seconds and (" (oldest " .. M.duration(jobs.oldest_queued_age_seconds) .. ")") or "",
      jobs.running or 0, miners.online or 0, miners.total or 0),
  }, { "database", "replication", "jobs" }))
end

local function status_resources(d, out)
  local r = d.resources or {}
  local rows = {}
  for _, name in ipairs { "cpu", "memory", "disk" } do
    local x = r[name]
    if x then
      rows[#rows + 1] = { resource = name, used = pct(x.used_percent) .. (x.total_bytes and (" of " .. M.bytes(x.total_bytes))
        or ""), threshold = pct(x.threshold_percent), status = x.status }
    end
  end
  local net = r.network or {}
  rows[#rows + 1] = { resource = "network", used = string.format("rx %s/s, tx %s/s (loopback %s/s)",
    M.bytes(net.rx_bytes_per_second), M.bytes(net.tx_bytes_per_second), M.bytes(net.loopback_bytes_per_second)),
    threshold = "-", status = "-" }
  out:print(out:format_table(rows, { "resource", "used", "threshold", "status" }))
end

local function status_events(d, out)
  if #(d.alerts or {}) == 0 then
    out:print(out:style("alerts:", "dim") .. " none")
  else
    out:print(out:style("alerts:", "dim"))
    for _, a in ipairs(d.alerts) do out:print("  " .. mark(out, a.severity) .. " " .. a.message) end
  end
  local rec = d.recent or {}
  out:print(string.format("%s %d critical, %d error(s), %d warning(s) in the last hour", out:style("recent:", "dim"),
    rec.critical or 0, rec.errors or 0, rec.warnings or 0))
  for _, e in ipairs(rec.entries or {}) do
    out:print(string.format("  %s %-8s %-15s %s", tostring(e.time), tostring(e.level), tostring(e.service), tostring(e.msg)))
  end
  if d.thresholds then
    local keys = {}
    for k in pairs(d.thresholds) do keys[#keys + 1] = k end
    table.sort(keys)
    local parts = {}
    for _, k in ipairs(keys) do parts[#parts + 1] = k .. "=" .. tostring(d.thresholds[k]) end
    out:print(out:style("thresholds:", "dim") .. " " .. table.concat(parts, ", "))
  end
end

--- GET /v1/admin/status for people.
function M.status(d, out)
  for i, part in ipairs { status_node, status_services, status_chains, status_summary, status_resources, status_events } do
    if i > 1 then out:print("") end
    part(d, out)
  end
end

--- The health checks (GET /v1/admin/health) for people.
function M.health(d, out)
  out:print(string.format("Health check%s: %s, score %d/100 (%s)", d.comprehensive and " (comprehensive)" or "",
    out:style(d.status, STYLE[d.status]), d.score, d.checked_at))
  local w = 0
  for _, c in ipairs(d.checks) do w = math.max(w, #c.name) end
  for _, c in ipairs(d.checks) do
    out:print(string.format("  %s %s%s  %s", mark(out, c.status), c.name, string.rep(" ", w - #c.name), c.detail))
    if c.recommendation then out:print(string.rep(" ", w + 6) .. out:style("→ " .. c.recommendation, "dim")) end
  end
  if d.report then
    out:print("report: " .. d.report.markdown .. " and " .. d.report.json)
  end
end

--- The health report: Markdown for people (with the JSON beside it).
function M.report_markdown(d)
  local lines = { "# AITBC node health report", "",
    string.format("- checked: %s%s", d.checked_at, d.comprehensive and " (comprehensive)" or ""),
    string.format("- node: aitbc %s, pid %s, %s, data dir %s", tostring(d.node.version), tostring(d.node.pid),
      tostring(d.node.role), tostring(d.node.data_dir)),
    string.format("- status: **%s**, score %d/100", d.status, d.score), "",
    "## Checks", "", "| check | status | detail |", "|---|---|---|" }
  local function cell(s) return (tostring(s or ""):gsub("|", "\\|"):gsub("\n", " ")) end
  for _, c in ipairs(d.checks) do
    lines[#lines + 1] = string.format("| %s | %s %s | %s |", cell(c.name), MARK[c.status] or "?", c.status, cell(c.detail))
  end
  lines[#lines + 1] = ""
  lines[#lines + 1] = "## Recovery recommendations"
  lines[#lines + 1] = ""
  local any = false
  for _, c in ipairs(d.checks) do
    if c.recommendation then
      any = true
      lines[#lines + 1] = string.format("- **%s** (%s): %s", c.name, c.status, c.recommendation)
    end
  end
  if not any then lines[#lines + 1] = "- none: every check passed" end
  local r = d.resources or {}
  lines[#lines + 1] = ""
  lines[#lines + 1] = "## Resources"
  lines[#lines + 1] = ""
  for _, name in ipairs { "cpu", "memory", "disk" } do
    local x = r[name]
    if x then
      lines[#lines + 1] = string.format("- %s: %s used (threshold %s), %s", name, pct(x.used_percent),
        pct(x.threshold_percent), tostring(x.status))
    end
  end
  lines[#lines + 1] = ""
  lines[#lines + 1] = "## Performance (requests since the node started)"
  lines[#lines + 1] = ""
  lines[#lines + 1] = "| route | requests | mean ms | p95 ms (≤) |"
  lines[#lines + 1] = "|---|---|---|---|"
  for i, p in ipairs(d.performance or {}) do
    if i > 15 then break end
    lines[#lines + 1] = string.format("| %s | %d | %s | %s |", cell(p.route), p.requests, tostring(p.mean_ms),
      tostring(p.p95_ms or "-"))
  end
  local j = d.jobs or {}
  lines[#lines + 1] = ""
  lines[#lines + 1] = string.format("Jobs: %d queued, %d running, %d completed, %d failed.", j.queued or 0, j.running or 0,
    j.completed or 0, j.failed or 0)
  return table.concat(lines, "\n") .. "\n"
end

--- Writes PATH.md and PATH.json (PATH without an extension; .md/.json dropped).
function M.write_report(base, d)
  local sys = require "aitbc.sys"
  base = base:gsub("%.md$", ""):gsub("%.json$", "")
  local md, js = base .. ".md", base .. ".json"
  local ok, err = sys.write_file(md, M.report_markdown(d), tonumber("644", 8))
  if ok then ok, err = sys.write_file(js, json.encode(d, { pretty = true }) .. "\n", tonumber("644", 8)) end
  if not ok then
    require("aitbc.errors").raise("failure", "cannot write the report: " .. tostring(err),
      "choose a writable place: --report FILE")
  end
  return { markdown = md, json = js }
end

--- One step of an operation, as it happens.
function M.step(out, s)
  local when = type(s.at) == "number" and string.format("%6.2fs", s.at) or ""
  local phase = s.phase == "rollback" and out:style("↩", "yellow") or out:style("✓", "green")
  out:print(string.format("%s %s %s", out:style(when, "dim"), phase, s.text))
end

return M
