--- The node's log entries for people: one line each (time, level,
-- service, message, fields), exported to a file, and the critical-entry
-- analysis of `admin logs --alert` (groups by component and signature, a
-- timeline, affected components, recommended actions).
local json = require "aitbc.json"

local M = {}

local CORE = { time = true, level = true, service = true, msg = true, ts = true }
local LEVEL_STYLE = { critical = "red", error = "red", warn = "yellow", debug = "dim" }

local function value_text(v)
  if type(v) == "table" then return json.encode(v) end
  local s = tostring(v)
  if s:find("[%s\"]") then return json.encode(s) end
  return s
end

--- "2025-01-01T12:00:00.123Z  ERROR     coordinator      handler failed  route=... error=..."
function M.line(e, out)
  local keys = {}
  for k in pairs(e) do if not CORE[k] then keys[#keys + 1] = k end end
  table.sort(keys)
  local fields = {}
  for _, k in ipairs(keys) do fields[#fields + 1] = k .. "=" .. value_text(e[k]) end
  local level = string.format("%-8s", tostring(e.level):upper())
  if out then level = out:style(level, LEVEL_STYLE[e.level]) end
  return string.format("%s  %s  %-15s  %s%s", tostring(e.time), level, tostring(e.service), tostring(e.msg),
    #fields > 0 and ("  " .. table.concat(fields, " ")) or "")
end

local function csv_cell(v)
  local s = v == nil and "" or (type(v) == "table" and json.encode(v) or tostring(v))
  if s:find('[,"\n\r]') then s = '"' .. s:gsub('"', '""') .. '"' end
  return s
end
M.csv_cell = csv_cell

--- The export format a file name asks for: json, ndjson, csv or text.
function M.export_format(path)
  if path:match("%.json$") then return "json" end
  if path:match("%.ndjson$") or path:match("%.jsonl$") then return "ndjson" end
  if path:match("%.csv$") then return "csv" end
  return "text"
end

--- Entries as the file's format wants them (appended ones: no JSON array).
function M.export_text(entries, format, first)
  local parts = {}
  if format == "json" then return json.encode(json.array(entries), { pretty = true }) .. "\n" end
  if format == "csv" and first then parts[1] = "time,level,service,message,fields" end
  for _, e in ipairs(entries) do
    if format == "ndjson" then
      local copy = {}
      for k, v in pairs(e) do if k ~= "ts" then copy[k] = v end end
      parts[#parts + 1] = json.encode(copy)
    elseif format == "csv" then
      local extra = {}
      for k, v in pairs(e) do if not CORE[k] then extra[k] = v end end
      parts[#parts + 1] = table.concat({ csv_cell(e.time), csv_cell(e.level), csv_cell(e.service), csv_cell(e.msg),
        csv_cell(next(extra) and extra or nil) }, ",")
    else
      parts[#parts + 1] = M.line(e)
    end
  end
  return #parts > 0 and (table.concat(parts, "\n") .. "\n") or ""
end

-- ---- critical entries: what happened, in what order, and what to do ----

--- A message with its variable parts (numbers, ids, hashes) made alike, so
-- that the same failure groups together.
function M.signature(msg)
  return (tostring(msg):gsub("%x%x%x%x%x%x%x%x+", "<id>"):gsub("%d+%.?%d*", "N"):gsub("%s+", " "))
end

local ACTIONS = {
  { "integrity", "the database failed its integrity check: stop writes, check the disk (dmesg), verify the last backup "
    .. "(aitbc admin backup verify DIR) and restore it (aitbc admin restore --from DIR)" },
  { "quick check", "the database failed its quick check: verify the last backup (aitbc admin backup verify DIR) and "
    .. "restore it (aitbc admin restore --from DIR)" },
  { "chain tip", "a chain does not verify: restore it from a backup, or resync this node from a trusted leader "
    .. "(aitbc serve --follow URL)" },
  { "refused a block", "a follower refused a block from its leader: check which of the two is wrong before syncing "
    .. "again (aitbc chain list on both)" },
  { "exited by itself", "the node process crashed and was started again: read what came before it (aitbc admin logs "
    .. "--since \"1 hour ago\" --level warn) and the supervisor's output (serve.out); check memory and disk" },
  { "did not come back", "the node process cannot start: look at its last lines (serve.out), check disk space and the "
    .. "database, then aitbc admin restart --service all --emergency --force" },
  { "new node process failed", "a new release or configuration failed its health check and was rolled back: check "
    .. "it before trying again (aitbc admin update --version V --dry-run)" },
  { "unhealthy after", "a service did not come back healthy: aitbc admin status --health-check --comprehensive, then "
    .. "restart it again (aitbc admin restart --service NAME)" },
  { "start-up checks", "a service failed its start-up checks and was resumed as it was: aitbc admin status "
    .. "--health-check --comprehensive --report" },
  { "block production", "blocks are not produced: check disk space and the database (aitbc admin status "
    .. "--health-check), then aitbc admin restart --service blockchain-node" },
}

local function action_for(group)
  local text = (group.signature .. " " .. group.component):lower()
  for _, a in ipairs(ACTIONS) do
    if text:find(a[1], 1, true) then return a[2] end
  end
  return "look at the entries around it (aitbc admin logs --service " .. group.component .. " --since \"1 hour ago\")"
    .. " and run aitbc admin status --health-check --comprehensive --report"
end

--- The analysis of critical (or any) entries: groups by component and
-- signature (most frequent, then most recent first), a timeline, the
-- affected components and a recommended action per group.
function M.analyse(entries)
  local groups, by_key, components = {}, {}, {}
  for _, e in ipairs(entries) do
    local component = tostring(e.service or "node")
    local sig = M.signature(e.msg)
    local key = component .. "\0" .. sig
    local g = by_key[key]
    if not g then
      g = { component = component, signature = sig, count = 0, first = e.time, level = e.level, example = e.msg }
      by_key[key] = g
      groups[#groups + 1] = g
    end
    g.count, g.last = g.count + 1, e.time
    components[component] = (components[component] or 0) + 1
  end
  table.sort(groups, function(a, b)
    if a.count ~= b.count then return a.count > b.count end
    return tostring(a.last) > tostring(b.last)
  end)
  for i, g in ipairs(groups) do
    g.priority = i
    g.action = action_for(g)
  end
  local affected = json.array()
  for name, n in pairs(components) do affected[#affected + 1] = { component = name, entries = n } end
  table.sort(affected, function(a, b) return a.entries > b.entries end)
  local timeline = json.array()
  for i, e in ipairs(entries) do
    if i > 200 then break end
    timeline[i] = { time = e.time, component = e.service, level = e.level, message = e.msg }
  end
  return { total = #entries, groups = json.array(groups), timeline = timeline, affected = affected }
end

--- The analysis for people.
function M.render_analysis(a, out, since_text)
  if a.total == 0 then
    out:print(out:style("✓", "green") .. " no critical entries" .. (since_text and (" since " .. since_text) or ""))
    return
  end
  out:print(out:style(string.format("%d critical entr%s in %d group(s)%s", a.total, a.total == 1 and "y" or "ies",
    #a.groups, since_text and (" since " .. since_text) or ""), "red"))
  out:print("")
  out:print("Prioritised (most frequent first):")
  for _, g in ipairs(a.groups) do
    out:print(string.format("  %d. [%s] %s — %d×, %s … %s", g.priority, g.component, g.example, g.count, tostring(g.first),
      tostring(g.last)))
    out:print("     " .. out:style("→ " .. g.action, "dim"))
  end
  out:print("")
  out:print("Timeline:")
  for _, t in ipairs(a.timeline) do
    out:print(string.format("  %s  %-15s %s", tostring(t.time), tostring(t.component), tostring(t.message)))
  end
  out:print("")
  local names = {}
  for _, c in ipairs(a.affected) do names[#names + 1] = c.component .. " (" .. c.entries .. ")" end
  out:print("Affected components: " .. table.concat(names, ", "))
end

return M
