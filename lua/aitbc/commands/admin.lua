--- aitbc admin: run a node — its status and health, logs, restarts,
-- backups, updates, users and a live dashboard (spec §13, §14).  Every
-- command talks to the node's admin API with an admin key.
local errors = require "aitbc.errors"

local function admin(ctx) return require("aitbc.api").from_context(ctx, { role = "admin" }) end

local SERVICES = { "coordinator", "blockchain-node", "marketplace", "monitoring", "all" }
local LEVELS = { "debug", "info", "warn", "error", "critical" }

--- --format as the spec spells it for admin status: a synonym of --output.
local function apply_format(ctx)
  if ctx.opts.format then
    ctx.out.format = ctx.opts.format
    ctx.settings.output = ctx.opts.format
  end
end

-- ---- status and health ----

local function run_status(ctx)
  apply_format(ctx)
  local o = ctx.opts
  local present = require "aitbc.ops.present"
  local client = admin(ctx)
  if not (o.health_check or o.comprehensive or o.report) then
    local d = client:call("GET", "/v1/admin/status", { query = { verbose = o.verbose and "1" or nil },
      expect = { status = "string", node = "object", services = "array" } })
    return d, present.status
  end
  local d = client:call("GET", "/v1/admin/health", { query = { comprehensive = o.comprehensive and "1" or nil },
    expect = { status = "string", score = "number", checks = { "array", { name = "string", status = "string" } } },
    timeout = math.max(ctx.settings.timeout, 120) })
  if o.report then
    local base = o.report == true and ("aitbc-health-" .. os.date("%Y%m%d-%H%M%S")) or o.report
    d.report = present.write_report(base, d)
  end
  -- for cron and monitors: a critical check fails the command
  if d.status == "critical" then ctx.exit_code = 1 end
  return d, present.health
end

-- ---- restarts ----

local function run_restart(ctx)
  local o = ctx.opts
  local mode = o.emergency and "emergency" or "graceful"
  if o.emergency and not o.force and not ctx.confirm("emergency restart of " .. o.service .. " (requests in flight are "
    .. "cut off)?") then
    errors.raise("failure", "restart cancelled")
  end
  local present = require "aitbc.ops.present"
  local client = admin(ctx)
  local op = client:call("POST", "/v1/admin/restart", { json = { service = o.service, mode = mode, timeout = o.timeout,
    force = o.force or nil }, expect = require("aitbc.ops.operation").RECORD })
  local live = ctx.out.format == "table" and not ctx.out.shape
  if live then
    ctx.out:print(string.format("restart of %s (%s) accepted: operation %s", o.service, mode, op.id))
  end
  op = require("aitbc.ops.operation").follow(client, op, function(s) if live then present.step(ctx.out, s) end end,
    o.timeout + 60)
  if op.state ~= "succeeded" then
    errors.raise("failure", op.summary or ("restart " .. op.state),
      op.rolled_back and "nothing changed: the node serves as before; its log says more (aitbc admin logs --level warn)"
        or "aitbc admin logs --level warn --since \"10 minutes ago\"", { code = "restart_failed", operation = op.id })
  end
  return op, function(d, out) out:success(d.summary) end
end

-- ---- the dashboard ----

--- Full screen on a terminal (the alternate screen, redrawn in place, on
-- resize too; q or Ctrl-C quits and gives the screen back), plain frames
-- one after another otherwise, one JSON frame a line in JSON mode.
local function run_monitor(ctx)
  local o = ctx.opts
  local monitor = require "aitbc.ops.monitor"
  local sys = require "aitbc.sys"
  local out = ctx.out
  local targets = monitor.targets(ctx)
  local json_mode = out.format ~= "table"
  local screen = not json_mode and not o.once and sys.isatty(1) and sys.isatty(0)
  if o.once then
    local f = monitor.frame(targets)
    return f, function(d, o2)
      for _, line in ipairs(monitor.frame_lines(d, 100, o.refresh,
        function(t, c) return o2:style(t, c) end)) do o2:print(line) end
    end
  end
  sys.on_interrupt("flag")
  local function style(t, c) return out:style(t, c) end
  local restore = function() end
  if screen then
    io.stdout:write("\27[?1049h\27[?25l")
    sys.term_raw(true)
    restore = function()
      sys.term_raw(false)
      io.stdout:write("\27[?25h\27[?1049l")
      io.stdout:flush()
    end
  end
  local ok, err = pcall(function()
    local quit = false
    while not quit and not sys.interrupted() do
      local f = monitor.frame(targets)
      local cols, rows = sys.term_size(1)
      local function draw(w, h)
        if json_mode then
          io.stdout:write(require("aitbc.json").encode(f), "\n")
        elseif screen then
          local lines = monitor.frame_lines(f, w or 80, o.refresh, style)
          local buf = { "\27[H" }
          for i = 1, math.min(#lines, (h or 24) - 1) do buf[#buf + 1] = lines[i] .. "\27[K\r\n" end
          buf[#buf + 1] = "\27[J"
          io.stdout:write(table.concat(buf))
        else
          for _, line in ipairs(monitor.frame_lines(f, w or 100, o.refresh, style)) do io.stdout:write(line, "\n") end
          io.stdout:write("\n")
        end
        io.stdout:flush()
      end
      draw(cols, rows)
      local next_at = sys.monotonic() + o.refresh
      while sys.monotonic() < next_at and not sys.interrupted() do
        if screen then
          local key = sys.read_input(0.2)
          if key and key:find("[qQ\3]") then quit = true break end
          if key and key:find("[rR]") then break end
          local c2, r2 = sys.term_size(1)
          if c2 ~= cols or r2 ~= rows then -- resized: the same frame, redrawn to fit
            cols, rows = c2, r2
            io.stdout:write("\27[2J")
            draw(cols, rows)
          end
        else
          sys.sleep(math.min(0.2, math.max(0, next_at - sys.monotonic())))
        end
      end
    end
  end)
  restore()
  if not ok then error(err, 0) end
  local signal = sys.interrupted()
  if signal then ctx.exit_code = errors.signal_exit(signal) end
end

-- ---- updates ----

local function render_plan(d, out)
  local present = require "aitbc.ops.present"
  out:print(string.format("update of %s: %s -> %s (%s; %s)", d.component, d.current_version, d.target.version, d.action,
    d.requested == "latest" and "the channel's latest" or "as asked"))
  out:print(string.format("  channel   %s (%s, sequence %s, %d version(s), expires %s)", d.channel.location,
    tostring(d.channel.name), tostring(d.channel.sequence), d.channel.versions, d.channel.expires_at))
  out:print(string.format("  release   %s, %s, sha256 %s", d.target.version, present.bytes(d.target.size),
    d.target.sha256))
  out:print("  checks")
  for _, c in ipairs(d.checks) do
    out:print(string.format("    %s %-26s %s", c.status == "ok" and out:style("✓", "green") or out:style("✗", "red"),
      c.name, c.detail))
  end
  out:print("  downtime  " .. d.downtime.detail)
  out:print(string.format("  backup    a full backup first (%s: %s), about %s", d.backup_destination or "-",
    table.concat(d.backup.files, ", "), present.bytes(d.backup.estimate_bytes)))
  out:print("  rollback")
  for _, r in ipairs(d.rollback) do out:print("    - " .. r) end
  if d.dry_run then
    out:print(d.compatible and "dry run: nothing was changed; run it without --dry-run to update"
      or out:style("dry run: this update would be refused (a check failed); nothing was changed", "red"))
  end
end

local PLAN = { current_version = "string", target = "object", checks = "array", rollback = "array",
  downtime = "object", backup = "object", channel = "object" }

local function run_update(ctx)
  local o = ctx.opts
  local config = require "aitbc.config"
  local client = admin(ctx)
  local body = { component = o.component, version = o.version, allow_downgrade = o.allow_downgrade or nil,
    force = o.force or nil }
  local ask = { dry_run = true }
  for k, v in pairs(body) do ask[k] = v end
  local plan = client:call("POST", "/v1/admin/update", { json = ask, expect = PLAN, timeout = 120 })
  local dest = o.backup_dir and config.expand(o.backup_dir)
    or string.format("%s/backups/pre-update-%s-%s", config.home(), plan.target.version, os.date("%Y%m%d-%H%M%S"))
  plan.backup_destination = o.no_backup and "skipped (--no-backup)" or dest
  plan.dry_run = o.dry_run or nil
  if o.dry_run then
    if not plan.compatible then ctx.exit_code = 1 end
    return plan, render_plan
  end
  local live = ctx.out.format == "table" and not ctx.out.shape
  if live then render_plan(plan, ctx.out) end
  if not plan.compatible then
    local failed = {}
    for _, c in ipairs(plan.checks) do if c.status ~= "ok" then failed[#failed + 1] = c.name .. ": " .. c.detail end end
    errors.raise("failure", "update refused, nothing was changed: " .. table.concat(failed, "; "),
      nil, { code = "update_refused" })
  end
  if not ctx.confirm(string.format("update the node from %s to %s?", plan.current_version,
    plan.target.version)) then
    errors.raise("failure", "update cancelled")
  end
  local made
  if not o.no_backup then
    local out = ctx.out
    made = require("aitbc.ops.backup").create(client, { type = "full", destination = dest },
      function(text) if live then out:info(text) end end, function(text) if live then out:progress(text) end end)
    out:progress_done()
    if live then out:print("  backup verified: " .. made.destination) end
  end
  body.backup = made and made.destination
  local op = client:call("POST", "/v1/admin/update", { json = body, expect = require("aitbc.ops.operation").RECORD,
    timeout = 600 })
  local present = require "aitbc.ops.present"
  op = require("aitbc.ops.operation").follow(client, op, function(s) if live then present.step(ctx.out, s) end end, 660)
  op.plan, op.backup = plan, made and made.destination
  if op.state ~= "succeeded" then
    errors.raise("failure", op.summary or ("update " .. op.state), "the previous version serves on; the backup made "
      .. "before: " .. tostring(op.backup) .. "; aitbc admin logs --level warn --since \"10 minutes ago\"",
      { code = "update_failed", operation = op.id })
  end
  return op, function(d, out) out:success(d.summary) end
end

-- ---- logs ----

--- --since/--until -> seconds | a usage error naming the option.
local function when(text, option)
  if not text then return nil end
  local t, err = require("aitbc.timefmt").human(text)
  if not t then errors.raise("usage", option .. ": " .. err) end
  return t
end

local function log_query(o)
  return { service = o.service, level = o.level, grep = o.grep, tail = o.tail,
    since = when(o.since, "--since"), ["until"] = when(o["until"], "--until") }
end

local LOGS = { items = "array", offset = "integer" }

--- An alert to the configured webhook: the analysis as JSON.
local function post_webhook(ctx, url, analysis, since_text)
  local res, err = require("aitbc.http").request { method = "POST", url = url, timeout = 10,
    json = { source = "aitbc admin logs --alert", node = ctx.settings.url, since = since_text, critical = analysis.total,
      groups = analysis.groups, affected = analysis.affected, timeline = analysis.timeline } }
  if not res or res.status >= 300 then
    ctx.out:warn("the alert webhook " .. url .. " did not take the alert: " .. (res and ("HTTP " .. res.status)
      or tostring(err and err.message)))
    return false
  end
  return true
end

local function follow_logs(ctx, client, query, offset, export)
  local sys = require "aitbc.sys"
  local logs = require "aitbc.ops.logs"
  sys.on_interrupt("flag")
  while not sys.interrupted() do
    sys.sleep(0.5)
    if sys.interrupted() then break end
    local q = { service = query.service, level = query.level, grep = query.grep, after = offset }
    local d, err = client:request("GET", "/v1/admin/logs", { query = q, expect = LOGS })
    if d then
      for _, e in ipairs(d.items) do
        if ctx.out.format == "table" then ctx.out:print(logs.line(e, ctx.out))
        else io.stdout:write(require("aitbc.json").encode(e), "\n") end
      end
      io.stdout:flush()
      if export and #d.items > 0 then export(d.items) end
      offset = d.offset
    elseif err.kind ~= "network" then
      error(err, 0)
    end
  end
  ctx.exit_code = errors.signal_exit(sys.interrupted())
end

local function run_logs(ctx)
  local o = ctx.opts
  local logs = require "aitbc.ops.logs"
  if o.alert and not o.level then o.level = "critical" end
  local client = admin(ctx)
  local query = log_query(o)
  local d = client:call("GET", "/v1/admin/logs", { query = query, expect = LOGS })
  local export
  if o.export then
    local format, first = logs.export_format(o.export), true
    local f = io.open(o.export, "w")
    if not f then errors.raise("failure", "cannot write " .. o.export, "choose a writable file: --export FILE") end
    f:close()
    export = function(entries)
      local fh = assert(io.open(o.export, first and "w" or "a"))
      fh:write(logs.export_text(entries, first and format or (format == "json" and "ndjson" or format), first))
      fh:close()
      first = false
    end
    export(d.items)
  end
  if o.alert then
    local a = logs.analyse(d.items)
    a.since = o.since
    a.exported = o.export
    local webhook = o.webhook or ctx.settings.alert_webhook
    if a.total > 0 then
      ctx.exit_code = 1 -- for cron: something needs a person
      if webhook then a.webhook = { url = webhook, delivered = post_webhook(ctx, webhook, a, o.since) } end
    end
    return a, function(r, out) logs.render_analysis(r, out, o.since) end
  end
  if o.follow then
    if ctx.out.format == "table" then
      for _, e in ipairs(d.items) do ctx.out:print(logs.line(e, ctx.out)) end
    else
      for _, e in ipairs(d.items) do io.stdout:write(require("aitbc.json").encode(e), "\n") end
    end
    io.stdout:flush()
    follow_logs(ctx, client, query, d.offset, export)
    return nil
  end
  return d, function(r, out)
    for _, e in ipairs(r.items) do out:print(logs.line(e, out)) end
    if #r.items == 0 then out:info("no entries match") end
    if o.export then out:info(string.format("exported %d entr%s to %s", #r.items, #r.items == 1 and "y" or "ies", o.export)) end
  end
end

-- ---- backups ----

local function render_backup(d, out)
  local present = require "aitbc.ops.present"
  out:success(string.format("backup written to %s (%s, %s in %.1f s, %s/s)", d.destination, d.type,
    present.bytes(d.total_bytes), d.seconds, present.bytes(d.bytes_per_second)))
  out:print(string.format("  estimated %s before it started; verified: every file's SHA-256 matches the node's manifest",
    present.bytes(d.estimate_bytes)))
  for _, f in ipairs(d.files) do
    out:print(string.format("  %-14s %10s  sha256 %s", f.name, present.bytes(f.size), f.sha256))
  end
  out:print("  manifest checksum " .. d.checksum)
  local chains = {}
  for c, h in pairs(d.chains or {}) do chains[#chains + 1] = c .. " at height " .. h.height end
  table.sort(chains)
  if #chains > 0 then out:print("  chains: " .. table.concat(chains, ", ")) end
end

local function render_verify(d, out)
  if d.ok then
    out:success(string.format("%s is a good %s backup (%s, %d file(s)%s)", d.directory, d.manifest.type,
      d.manifest.created_at, #d.files, d.deep and ", databases pass quick_check" or ""))
    for _, f in ipairs(d.files) do out:print(string.format("  %-14s %s  sha256 ok", f.name, f.status)) end
    return
  end
  out:print(out:style("✗", "red") .. " " .. d.directory .. " is not a good backup:")
  for _, p in ipairs(d.problems) do out:print("  - " .. p) end
end

local function run_backup(ctx)
  local o, a = ctx.opts, ctx.args
  local backup = require "aitbc.ops.backup"
  if a.action == "verify" then
    if not a.path then errors.raise("usage", "which backup? aitbc admin backup verify DIR") end
    local r = backup.verify(require("aitbc.config").expand(a.path), o.deep)
    if not r.ok then ctx.exit_code = 1 end
    return r, render_verify
  end
  if a.action and a.action ~= "create" then
    errors.raise("usage", "unknown backup action '" .. a.action .. "' (create or verify)")
  end
  if not o.destination then errors.raise("usage", "missing required option --destination") end
  local out = ctx.out
  local r = backup.create(admin(ctx), { type = o.type, destination = require("aitbc.config").expand(o.destination) },
    function(text) out:info(text) end, function(text) out:progress(text) end)
  out:progress_done()
  return r, render_backup
end

local function run_restore(ctx)
  local o = ctx.opts
  local config = require "aitbc.config"
  if not o.data_dir then
    errors.raise("usage", "--data-dir is needed: restore into a stopped node's data directory, then start it "
      .. "(aitbc serve --data-dir DIR)")
  end
  local r = require("aitbc.ops.restore").offline(config.expand(o.from), config.expand(o.data_dir), { force = o.force })
  return r, function(d, out)
    out:success(string.format("restored %s backup %s (%s) into %s", d.type, tostring(d.backup_id), tostring(d.created_at),
      d.data_dir))
    out:print("  restored: " .. table.concat(d.restored, ", "))
    if #d.moved_aside > 0 then out:print("  moved aside: " .. table.concat(d.moved_aside, ", ")) end
    for _, c in ipairs(d.chains) do
      out:print(string.format("  %s: height %s, %d accounts, balances %s — %s", c.chain_id, tostring(c.height), c.accounts,
        require("aitbc.money").format(math.tointeger(tonumber(c.balances))),
        c.matches_manifest and "as the backup recorded" or "DIFFERS from the backup"))
    end
    out:print("  start it: aitbc serve --data-dir " .. d.data_dir)
  end
end

-- ---- users ----

local USER = { user_id = "string", name = "string", role = "string", status = "string" }

--- --user NAME|ID -> the user's id (a name is looked up).
local function user_id(ctx, client)
  local who = ctx.opts.user
  if not who then errors.raise("usage", "--user NAME|ID is needed for --action " .. ctx.opts.action) end
  if who:match("^user_%x+$") then return who end
  local list = client:call("GET", "/v1/admin/users", { expect = { items = { "array", USER } } })
  for _, u in ipairs(list.items) do if u.name == who then return u.user_id end end
  errors.raise("not_found", "no user named '" .. who .. "'", "aitbc admin users --action list")
end

local function users_table(items, out)
  local rows = {}
  for i, u in ipairs(items) do
    rows[i] = { user = u.user_id, name = u.name, role = u.role, status = u.status,
      keys = string.format("%d/%d", u.active_keys or 0, u.keys or 0), last = u.last_seen or "never",
      requests = u.requests_30d }
  end
  return out:format_table(rows, { { "user", "user id", keep = true }, "name", "role", "status", { "keys", "keys active" },
    { "last", "last seen" }, { "requests", "requests 30d" } })
end

local function export_users(path, format, items)
  local text
  if format == "json" then
    text = require("aitbc.json").encode(items, { pretty = true }) .. "\n"
  else
    local cell = require("aitbc.ops.logs").csv_cell
    local cols = { "user_id", "name", "email", "role", "status", "keys", "active_keys", "created_at", "last_seen",
      "requests_30d", "suspended_at", "suspended_reason" }
    local lines = { table.concat(cols, ",") }
    for _, u in ipairs(items) do
      local cells = {}
      for i, c in ipairs(cols) do cells[i] = cell(u[c]) end
      lines[#lines + 1] = table.concat(cells, ",")
    end
    text = table.concat(lines, "\n") .. "\n"
  end
  local ok, err = require("aitbc.sys").write_file(path, text, tonumber("600", 8))
  if not ok then errors.raise("failure", "cannot write " .. path .. ": " .. tostring(err)) end
end

local function render_user(d, out)
  out:print(out:format_record(d, { { "user_id", "user id" }, "name", "email", "role", "status", { "keys", "keys" },
    { "active_keys", "active keys" }, { "last_seen", "last seen" }, { "requests_30d", "requests (30 d)" },
    { "suspended_reason", "suspended" } }))
  if d.api_key then
    out:print("")
    out:print("api key (shown once): " .. d.api_key.key)
  end
end

local function run_users(ctx)
  local o = ctx.opts
  local client = admin(ctx)
  local action = o.action
  if action == "list" or action == "export" then
    local d = client:call("GET", "/v1/admin/users", { query = { role = o.role, status = o.status },
      expect = { items = { "array", USER } } })
    if action == "export" then
      local path = o.export or ("aitbc-users-" .. os.date("%Y%m%d") .. "." .. (o.export_format or "csv"))
      local format = o.export_format or (path:match("%.json$") and "json" or "csv")
      export_users(path, format, d.items)
      d.exported = { path = path, format = format, users = #d.items }
    end
    return d, function(r, out)
      out:print(users_table(r.items, out))
      if r.exported then out:success(string.format("exported %d user(s) to %s (%s)", r.exported.users, r.exported.path,
        r.exported.format)) end
    end
  elseif action == "create" then
    if not o.name then errors.raise("usage", "--name is needed to create a user") end
    if not o.role then errors.raise("usage", "--role is needed to create a user (client, miner or admin)") end
    local d = client:call("POST", "/v1/admin/users", { json = { name = o.name, role = o.role, email = o.email,
      create_key = o.with_key or nil }, expect = USER })
    return d, function(r, out)
      out:success("user " .. r.name .. " created (" .. r.user_id .. ", " .. r.role .. ")")
      render_user(r, out)
    end
  end
  local id = user_id(ctx, client)
  local path = require("aitbc.api").path("/v1/admin/users/{id}", { id = id })
  if action == "modify" then
    local d = client:call("PATCH", path, { json = { name = o.name, email = o.email, role = o.role }, expect = USER })
    return d, function(r, out) out:success("user " .. r.user_id .. " modified") render_user(r, out) end
  elseif action == "suspend" or action == "activate" then
    local d = client:call("POST", path .. "/" .. action, { json = { reason = o.reason }, expect = USER })
    return d, function(r, out)
      out:success(string.format("user %s (%s) %s: %d key(s) %s", r.name, r.user_id, r.status, r.keys or 0,
        r.status == "suspended" and "disabled" or "usable again"))
    end
  elseif action == "activity" then
    local d = client:call("GET", path .. "/activity", { query = { days = o.days, limit = o.limit_rows },
      expect = { items = "array", routes = "array" } })
    return d, function(r, out)
      out:print("since " .. r.since .. ", by route:")
      local rows = {}
      for i, x in ipairs(r.routes) do rows[i] = { route = x.route, requests = x.requests, errors = x.errors, last = x.last } end
      out:print(out:format_table(rows, { "route", "requests", "errors", "last" }))
      out:print("")
      rows = {}
      for i, x in ipairs(r.items) do
        rows[i] = { time = x.time, key = x.key_id, request = x.method .. " " .. x.path, status = x.status, from = x.remote }
      end
      out:print(out:format_table(rows, { "time", "key", "request", "status", "from" }))
    end
  end
  local d = client:call("GET", path, { expect = USER })
  return d, render_user
end

-- ---- operations ----

local function run_operations(ctx)
  local client = admin(ctx)
  if ctx.args.id then
    local op = client:call("GET", require("aitbc.api").path("/v1/admin/operations/{id}", { id = ctx.args.id }),
      { expect = require("aitbc.ops.operation").RECORD })
    return op, function(d, out)
      out:print(string.format("%s %s of %s: %s%s", d.id, d.kind, tostring(d.params and d.params.service or
        d.params and d.params.version or "-"), d.state, d.summary and (" — " .. d.summary) or ""))
      for _, s in ipairs(d.steps) do require("aitbc.ops.present").step(out, s) end
    end
  end
  local d = client:call("GET", "/v1/admin/operations", { expect = { items = "array" } })
  return d, function(r, out)
    local rows = {}
    for i, op in ipairs(r.items) do
      rows[i] = { id = op.id, kind = op.kind, target = op.params and (op.params.service or op.params.version or
        op.params.type), state = op.state, started = op.created_at, seconds = op.seconds and string.format("%.2f", op.seconds),
        summary = op.summary }
    end
    out:print(out:format_table(rows, { { "id", "id", keep = true }, "kind", "target", "state", "started", "seconds",
      "summary" }))
  end
end

return {
  name = "admin",
  category = "Node",
  summary = "Run a node: status and health, logs, restarts, backups, updates, users, a live dashboard",
  description = "Every command uses the node's admin API (an admin key: --api-key, AITBC_ADMIN_KEY or the stored "
    .. "admin key). Exit codes as everywhere: 0 ok, 1 failure (a critical health check, critical log entries with "
    .. "--alert, a restart or update that failed and was rolled back), 2 usage, 3 not found, 4 auth, 5 network.",
  commands = {
    {
      name = "status",
      summary = "The node at a glance: services, health, chains, database, replication, resources, alerts",
      description = "With --health-check: active checks, each ok, warn or critical, scored out of 100 (database "
        .. "integrity, chain verification, key file modes, disk, clock, miners, queue age, backup age, followers' "
        .. "lag, services, security); exit 1 when one is critical. --report writes it as Markdown and JSON.",
      options = {
        { "--verbose", type = "boolean", help = "more detail: recent entries, thresholds, connections" },
        { "--format", choices = { "table", "json", "yaml" }, metavar = "FORMAT", help = "same as --output" },
        { "--health-check", type = "boolean", help = "run the scored health checks" },
        { "--comprehensive", type = "boolean", help = "with --health-check: full integrity check, 200 blocks per chain" },
        { "--report", optional_value = true, metavar = "[FILE]",
          help = "write the health report to FILE.md and FILE.json (default aitbc-health-DATE-TIME)" },
      },
      examples = { "aitbc admin status", "aitbc admin status --verbose --format json",
        "aitbc admin status --health-check --comprehensive --report" },
      run = run_status,
    },
    {
      name = "restart",
      summary = "Restart a service of the node, or all of it, without refusing a connection",
      description = "graceful (the default): the service's new requests wait while those in flight finish, it "
        .. "starts again with its checks, its health is verified; --service all starts a new node process beside "
        .. "the old one and lets the old one drain. A restart that fails (a drain past --timeout, checks or health "
        .. "that fail) is rolled back: the node serves as before, exit 1. --emergency: no draining; a new process "
        .. "at once, the database and the chains checked at its start.",
      options = {
        { "--service", required = true, choices = SERVICES, metavar = "NAME", help = "coordinator, blockchain-node, "
          .. "marketplace, monitoring, or all" },
        { "--graceful", type = "boolean", help = "drain first (the default)" },
        { "--emergency", type = "boolean", help = "restart at once, checking integrity at start" },
        { "--force", type = "boolean", help = "no question; even while another operation runs" },
        { "--timeout", type = "number", min = 1, max = 3600, default = 300, metavar = "SECONDS",
          help = "how long draining may take" },
      },
      examples = { "aitbc admin restart --service blockchain-node --graceful --timeout 300",
        "aitbc admin restart --service all --emergency --force" },
      run = run_restart,
    },
    {
      name = "logs",
      summary = "The node's log: formatted, filtered by service, level and time; follow, export, alert",
      description = "--since and --until take \"1 hour ago\", \"30m\", \"yesterday\", \"today\", RFC 3339 "
        .. "(2025-01-31T12:00:00Z) or \"2025-01-31 12:00\" (local time). --alert analyses the critical entries "
        .. "(grouped by component and signature, a timeline, recommended actions), exits 1 when there are any and "
        .. "posts them to --webhook or the alert_webhook setting. --export FILE writes .json, .ndjson, .csv or text.",
      options = {
        { "--service", metavar = "NAME", help = "coordinator, blockchain-node, marketplace, monitoring, node, supervisor" },
        { "--level", choices = LEVELS, metavar = "LEVEL", help = "this level and above: debug, info, warn, error, critical" },
        { "--tail", type = "integer", min = 1, max = 10000, default = 100, metavar = "N", help = "the newest N entries" },
        { "--since", metavar = "TIME", help = "entries from then on" },
        { "--until", metavar = "TIME", help = "entries up to then" },
        { "--grep", metavar = "TEXT", help = "entries holding TEXT (any case)" },
        { "--follow", type = "boolean", help = "keep printing new entries until Ctrl-C" },
        { "--export", metavar = "FILE", help = "also write them to FILE (.json, .ndjson, .csv, else text)" },
        { "--alert", type = "boolean", help = "analyse critical entries; exit 1 when there are any" },
        { "--webhook", metavar = "URL", help = "with --alert: POST the analysis there (default: alert_webhook setting)" },
      },
      examples = { "aitbc admin logs --service coordinator --tail 100 --level error",
        "aitbc admin logs --level critical --since \"1 hour ago\" --alert",
        "aitbc admin logs --follow --export node-logs.ndjson" },
      run = run_logs,
    },
    {
      name = "backup",
      summary = "Back the node up while it serves (a manifest with sizes and SHA-256), or verify a backup",
      description = "Types: full (database, configuration and keys), db, chain (the chain's tables), config. The node "
        .. "copies its database through SQLite's backup API in one read transaction (one consistent state while "
        .. "it serves) and hashes every file; the files are downloaded into DEST.partial, checked against the "
        .. "manifest, synced, and renamed to DEST: an interrupted backup never looks like a good one. DEST must not "
        .. "exist. 'aitbc admin backup verify DIR' checks a backup (manifest checksum, sizes, SHA-256; --deep: "
        .. "SQLite's quick_check too) and exits 1 when it is not good.",
      args = { { "action", optional = true, help = "create (the default) or verify" },
        { "path", optional = true, help = "with verify: the backup directory" } },
      options = {
        { "--type", choices = { "full", "chain", "db", "config" }, default = "full", metavar = "TYPE",
          help = "full, chain, db or config" },
        { "--destination", metavar = "DIR", help = "where the backup goes (a new directory)" },
        { "--deep", type = "boolean", help = "with verify: also run SQLite's quick_check on the databases" },
      },
      examples = { "aitbc admin backup --type full --destination /backups/aitbc-$(date +%Y%m%d)",
        "aitbc admin backup verify /backups/aitbc-20250131" },
      run = run_backup,
    },
    {
      name = "monitor",
      summary = "A live dashboard of the fleet: resources, network, chains, jobs, GPUs, services",
      description = "Every node in the fleet registry (aitbc node add) and the node this CLI uses, from their admin "
        .. "API: CPU, memory and disk, network throughput and the API's latency, chain height, sync state and block "
        .. "rate, running jobs and queue depth, GPU utilisation and temperature (miners' heartbeats carry their NVML "
        .. "readings), services. On a terminal a full-screen view redrawn in place every --refresh seconds and on "
        .. "resize (q quits, r refreshes); otherwise plain frames one after another, or one JSON frame a line with "
        .. "--output json. --once: one frame.",
      options = {
        { "--dashboard", type = "boolean", help = "the full dashboard (the default view)" },
        { "--refresh", type = "number", min = 0.5, max = 3600, default = 30, metavar = "SECONDS",
          help = "redraw this often" },
        { "--once", type = "boolean", help = "one frame, then exit" },
      },
      examples = { "aitbc admin monitor --dashboard --refresh 30", "aitbc admin monitor --once -o json" },
      run = run_monitor,
    },
    {
      name = "update",
      summary = "Update the node from its signed release channel (plan, backup, swap, health check, rollback)",
      description = "The channel and its Ed25519 key are pinned in DATA_DIR/node.json (\"release\": {\"channel\": "
        .. "DIR_OR_URL, \"public_key\": KEY}); aitbc release build makes one. --dry-run shows the plan: current and "
        .. "target version, checks (signature, expiry, the manifest's sequence, platform, database schema, "
        .. "configuration, never below the newest version trusted), the downtime measured by earlier restarts, the "
        .. "backup and the rollback. Without it: a full backup (verified), the binary downloaded and checked against "
        .. "the signed manifest, a new process beside the old, its health checked; one that fails is stopped and the "
        .. "old version serves on (exit 1). One binary holds every service: --component names any of them.",
      options = {
        { "--component", choices = { "node", "all", "coordinator", "blockchain-node", "marketplace", "monitoring" },
          default = "node", metavar = "NAME", help = "what to update (one binary holds all services)" },
        { "--version", default = "latest", metavar = "V", help = "latest, or a version the channel has" },
        { "--dry-run", type = "boolean", help = "show the plan; change nothing" },
        { "--allow-downgrade", type = "boolean", help = "go below the newest version this node trusted" },
        { "--force", type = "boolean", help = "reinstall the version running" },
        { "--backup-dir", metavar = "DIR", help = "where the backup goes (default AITBC_HOME/backups/pre-update-V-DATE)" },
        { "--no-backup", type = "boolean", help = "skip the backup" },
      },
      examples = { "aitbc admin update --component coordinator --version latest --dry-run",
        "aitbc admin update --version 0.2.0 --yes" },
      run = run_update,
    },
    {
      name = "restore",
      summary = "Put a verified backup back into a stopped node's data directory",
      description = "The backup is verified first; a node running on --data-dir is refused; files already there are "
        .. "refused unless --force, which moves them aside (NAME.before-restore-DATE). Afterwards the chains' heads "
        .. "and balances are compared with what the backup recorded.",
      options = {
        { "--from", required = true, metavar = "DIR", help = "the backup directory" },
        { "--data-dir", metavar = "DIR", help = "the node's data directory (the node stopped)" },
        { "--force", type = "boolean", help = "move files already there aside" },
      },
      examples = { "aitbc admin restore --from /backups/aitbc-20250131 --data-dir ~/.aitbc/node" },
      run = run_restore,
    },
    {
      name = "users",
      summary = "Users who own the API keys: list, create, modify, suspend, activate, activity, export",
      description = "A user has a role (its keys have it: --action modify --role changes what all of them may do) and "
        .. "a status; --action suspend disables every key of the user at once. Activity (requests in 30 days, last "
        .. "seen, per route) comes from the audit log. Keys made before users existed each became a user's key. "
        .. "--action export writes CSV or JSON (--export FILE, --export-format).",
      options = {
        { "--action", choices = { "list", "show", "create", "modify", "suspend", "activate", "activity", "export" },
          default = "list", metavar = "ACTION", help = "list, show, create, modify, suspend, activate, activity, export" },
        { "--role", choices = { "client", "miner", "admin" }, metavar = "ROLE",
          help = "list: only this role; create, modify: the user's role" },
        { "--status", choices = { "active", "suspended" }, metavar = "STATUS", help = "list: only this status" },
        { "--user", metavar = "NAME|ID", help = "the user (show, modify, suspend, activate, activity)" },
        { "--name", metavar = "NAME", help = "create, modify: the user's name" },
        { "--email", metavar = "EMAIL", help = "create, modify" },
        { "--with-key", type = "boolean", help = "create: also an API key for the user (shown once)" },
        { "--reason", metavar = "TEXT", help = "suspend: why" },
        { "--days", type = "number", min = 0.001, max = 3650, metavar = "DAYS", help = "activity: this far back (30)" },
        { "--limit-rows", type = "integer", min = 1, max = 10000, metavar = "N", help = "activity: at most N requests" },
        { "--export", metavar = "FILE", help = "export: the file (default aitbc-users-DATE.csv)" },
        { "--export-format", choices = { "csv", "json" }, metavar = "FORMAT", help = "export: csv or json" },
      },
      examples = { "aitbc admin users --action list --role miner --status active",
        "aitbc admin users --action create --name alice --role client --with-key",
        "aitbc admin users --action suspend --user alice --reason \"left the project\"",
        "aitbc admin users --action export --export users.csv" },
      run = run_users,
    },
    {
      name = "operations",
      summary = "Restarts and updates the node ran: their steps and outcome",
      args = { { "id", optional = true, help = "one operation (op_...)" } },
      run = run_operations,
    },
  },
}
