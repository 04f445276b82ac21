--- aitbc deploy: deployments on a real container engine (aitbc.deploy):
-- their configurations, life cycle, logs and a live monitor; the aitbc-api
-- image; the engine itself.
local errors = require "aitbc.errors"
local json = require "aitbc.json"

local function deploy() return require "aitbc.deploy" end

--- The engine: --engine, CONTAINER_HOST, DOCKER_HOST, the usual sockets,
-- else the Podman service aitbc starts (said on stderr).
local function connect(ctx)
  return require("aitbc.deploy.engine").connect { engine = ctx.opts.engine,
    say = function(level, text) ctx.out[level](ctx.out, text) end }
end

local function bytes(n)
  if n == nil then return "-" end
  local units, i = { "B", "KiB", "MiB", "GiB", "TiB" }, 1
  while n >= 1024 and i < #units do n, i = n / 1024, i + 1 end
  return (i == 1 and string.format("%d %s", n, units[i])) or string.format("%.1f %s", n, units[i])
end

local function seconds(s) return s and string.format("%.2f s", s) or "" end

local STATE_STYLE = { created = "dim", started = "cyan", healthy = "green", running = "green", stopped = "yellow",
  removed = "yellow", failed = "red" }

--- Prints each event of a life-cycle step as it happens (table mode; in
-- json mode the result document says it all).  The last log lines of a
-- failed instance go to stderr, before the error.
local function live(ctx)
  local out = ctx.out
  local human = out.format == "table" and not out.shape
  return function(ev)
    if ev.state == "failed" then
      io.stderr:write(out:style(string.format("  %-16s %-8s %s", ev.instance, "failed", ev.detail or ""), "red",
        out.err_color), "\n")
      if ev.output and ev.output ~= "" then
        io.stderr:write("  its health check said: ", (ev.output:gsub("%s+$", ""):gsub("\n", "\n    ")), "\n")
      end
      if ev.logs and ev.logs ~= "" then
        io.stderr:write("  last log lines of ", ev.instance, ":\n    ",
          (ev.logs:gsub("%s+$", ""):gsub("\n", "\n    ")), "\n")
      end
      return
    end
    if not human or not ev.instance then return end
    local what = ev.address and (ev.address .. (ev.detail and (" (" .. ev.detail .. ")") or "")) or ev.detail or ""
    if ev.state == "healthy" then what = seconds(ev.seconds) .. (ev.detail and (" (" .. ev.detail .. ")") or "") end
    io.stdout:write("  ", string.format("%-16s ", ev.instance), out:style(string.format("%-8s", ev.state),
      STATE_STYLE[ev.state] or "dim"), " ", what, "\n")
    io.stdout:flush()
  end
end

local function instance_rows(list)
  local rows = json.array()
  for _, inst in ipairs(list) do
    rows[#rows + 1] = { instance = inst.name, n = inst.n, id = inst.id:sub(1, 12), state = inst.state,
      health = inst.health, address = inst.address, url = inst.address and ("http://" .. inst.address) or nil }
  end
  return rows
end

--- The health of each running instance, checked now.
local function with_health(eng, list)
  local http = require "aitbc.http"
  local reqs, running = {}, {}
  for _, inst in ipairs(list) do
    if inst.state == "running" then
      running[#running + 1] = inst
      reqs[#reqs + 1] = eng:health_request(inst.id)
    end
  end
  local results = #reqs > 0 and http.request_many(reqs) or {}
  for i, inst in ipairs(running) do
    local h = eng:health_result(results[i]).status
    inst.health = h == "none" and "no check" or h
  end
  return list
end

--- "running", "stopped", "partial (2/3 running)" or "not started".
local function summary_state(d, list)
  local running = 0
  for _, inst in ipairs(list) do if inst.state == "running" then running = running + 1 end end
  if #list == 0 then return "not started", running end
  if running == 0 then return "stopped", running end
  if running >= d.instances then return "running", running end
  return string.format("partial (%d/%d running)", running, d.instances), running
end

local function view(d)
  return { name = d.name, id = d.id, image = d.image, instances = d.instances, bind = d.bind,
    port = d.host_port, container_port = d.container_port, cpus = d.cpus, memory_bytes = d.memory,
    env = next(d.env or {}) and d.env or nil, command = d.command, health_timeout = d.health_timeout,
    created_at = d.created_at, config_file = deploy().path(d.name) }
end

-- ---- create ----

local function create(ctx)
  local o = ctx.opts
  local spec = deploy().validate { name = o.name, image = o.image, instances = o.instances, port = o.port,
    container_port = o.container_port, bind = o.bind, cpus = o.cpus, memory = o.memory, env = o.env,
    command = o.command, health_timeout = o.health_timeout }
  local eng = connect(ctx)
  local built
  local function build(d)
    local interactive = ctx.out.format == "table" and require("aitbc.sys").isatty(0)
    if not ctx.globals.yes and not interactive then return false end
    if not ctx.confirm("image " .. d.image .. " is not in the engine; build it now from this binary?") then return false end
    ctx.out:info("building " .. d.image .. " (FROM scratch: this binary, its libraries, CA certificates) ...")
    built = require("aitbc.deploy.image").build(eng, d.image, function(line) ctx.out:verbose_info(1, "  | " .. line) end)
    return true
  end
  local d = deploy().create(eng, spec, build)
  local result = view(d)
  result.image_id = d.image_id
  result.image_built = built and true or nil
  result.engine = eng.label
  result.ports = d.host_port and string.format("%s:%d-%d → %d", d.bind, d.host_port, d.host_port + d.instances - 1,
    d.container_port) or string.format("%s:(free ports the engine picks) → %d", d.bind, d.container_port)
  return result, function(r, out)
    if built then out:success(string.format("built %s (%s in the image)", r.image, bytes(built.bytes))) end
    out:success(string.format("deployment %s saved and validated: %d × %s (image %s)", r.name, r.instances, r.image,
      (tostring(r.image_id):gsub("^sha256:", ""):sub(1, 12))))
    out:print(out:format_record(r, { "name", "image", "instances", "ports", "health_timeout", "engine", "config_file" }))
    out:print("start it: aitbc deploy start " .. r.name)
  end
end

-- ---- list / show ----

local function list(ctx)
  local all = deploy().all()
  local eng, why
  if #all > 0 then
    local ok, e = pcall(connect, ctx)
    if ok then eng = e else why = errors.is(e) and e.message or tostring(e) end
  end
  local items = json.array()
  for _, d in ipairs(all) do
    local state, running = "unknown (no engine)", nil
    if eng then state, running = summary_state(d, deploy().instances(eng, d)) end
    items[#items + 1] = { name = d.name, image = d.image, instances = d.instances, running = running, state = state,
      created_at = d.created_at }
  end
  return { items = items, engine = eng and eng.label or nil, engine_error = why }, function(r, out)
    if r.engine_error then out:warn(r.engine_error) end
    if #r.items == 0 then
      out:print("no deployments yet; create one: aitbc deploy create --name prod-api --image aitbc-api:latest "
        .. "--instances 3")
      return
    end
    out:print(out:format_table(r.items, { { "name", "name", keep = true }, "image", "instances", "running", "state",
      "created_at" }))
  end
end

local function show(ctx)
  local d = deploy().load(ctx.args.name)
  local eng = connect(ctx)
  local instances = with_health(eng, deploy().instances(eng, d))
  local r = view(d)
  r.state = summary_state(d, instances)
  r.instances_list = instance_rows(instances)
  r.engine = eng.label
  return r, function(v, out)
    out:print(out:format_record(v, { "name", "state", "image", "instances", "bind", "port", "container_port", "cpus",
      "memory_bytes", "health_timeout", "engine", "created_at", "config_file" }))
    if #v.instances_list > 0 then
      out:print("")
      out:print(out:format_table(v.instances_list, { { "instance", "instance", keep = true }, { "id", "id", keep = true },
        "state", "health", "url" }))
    end
  end
end

-- ---- life cycle ----

local function start(ctx)
  local d = deploy().load(ctx.args.name)
  local eng = connect(ctx)
  if ctx.out.format == "table" and not ctx.out.shape then
    ctx.out:print(string.format("starting %s: %d × %s on %s", d.name, d.instances, d.image, eng.label))
  end
  local result = deploy().start(eng, d, live(ctx), { keep_failed = ctx.opts.keep_failed })
  local r = { deployment = d.name, state = "running", seconds = result.seconds,
    instances = instance_rows(result.instances) }
  return r, function(v, out)
    out:success(string.format("%s running: %d/%d instances healthy in %.2f s", v.deployment, #v.instances, d.instances,
      v.seconds))
  end
end

local function stop(ctx)
  local d = deploy().load(ctx.args.name)
  local eng = connect(ctx)
  local result = deploy().stop(eng, d, live(ctx), ctx.opts.grace)
  return { deployment = d.name, state = "stopped", stopped = result.stopped }, function(v, out)
    if v.stopped == 0 then out:success(v.deployment .. " was not running; nothing to stop")
    else out:success(string.format("%s stopped (%d instance(s)); start it again: aitbc deploy start %s", v.deployment,
      v.stopped, v.deployment)) end
  end
end

local function restart(ctx)
  local d = deploy().load(ctx.args.name)
  local eng = connect(ctx)
  local result = deploy().restart(eng, d, live(ctx), { grace = ctx.opts.grace, keep_failed = true })
  return { deployment = d.name, state = "running", seconds = result.seconds, instances = instance_rows(result.instances) },
    function(v, out)
      out:success(string.format("%s restarted one instance at a time: %d/%d healthy in %.2f s", v.deployment,
        #v.instances, d.instances, v.seconds))
    end
end

local function scale(ctx)
  local d = deploy().load(ctx.args.name)
  local count = ctx.opts.instances or tonumber(ctx.args.count or "")
  if not count then errors.raise("usage", "how many instances? e.g. aitbc deploy scale " .. d.name .. " 5") end
  local eng = connect(ctx)
  local result = deploy().scale(eng, d, count, live(ctx), { keep_failed = ctx.opts.keep_failed, grace = ctx.opts.grace })
  result.deployment = d.name
  return result, function(v, out)
    if not v.running then
      out:success(string.format("%s now has %d instance(s) in its configuration (was %d); it is not running: "
        .. "'aitbc deploy start %s' starts them", v.deployment, v.to, v.from, v.deployment))
    elseif v.from == v.to then
      out:success(string.format("%s already has %d instance(s)", v.deployment, v.to))
    else
      out:success(string.format("%s scaled from %d to %d instance(s), one at a time, in %.2f s", v.deployment, v.from,
        v.to, v.seconds))
    end
  end
end

local function destroy(ctx)
  local d = deploy().load(ctx.args.name)
  local eng = connect(ctx)
  local count = #deploy().instances(eng, d)
  if not ctx.confirm(string.format("destroy deployment %s: remove its %d container(s) and its configuration?", d.name,
    count)) then
    errors.raise("failure", "not destroyed", nil, { code = "canceled" })
  end
  local result = deploy().destroy(eng, d, live(ctx))
  result.deployment = d.name
  return result, function(v, out)
    out:success(string.format("deployment %s destroyed: %d container(s) and its configuration removed%s", v.deployment,
      v.containers_removed, v.image and ("; image " .. d.image .. " " .. v.image) or ""))
  end
end

-- ---- logs ----

local function logs(ctx)
  local d = deploy().load(ctx.args.name)
  local eng = connect(ctx)
  local targets = {}
  for _, inst in ipairs(deploy().instances(eng, d)) do
    if not ctx.opts.instance or inst.n == ctx.opts.instance then targets[#targets + 1] = inst end
  end
  if #targets == 0 then
    errors.raise("not_found", ctx.opts.instance and ("no instance " .. ctx.opts.instance .. " in " .. d.name)
      or (d.name .. " has no containers (not started)"), "start it: aitbc deploy start " .. d.name)
  end
  local prefix = #targets > 1
  local function printer(inst)
    local partial = ""
    return function(text)
      partial = partial .. text
      for line in partial:gmatch("([^\n]*)\n") do
        io.stdout:write(prefix and (inst.name .. " | ") or "", line, "\n")
      end
      partial = partial:match("[^\n]*$")
      io.stdout:flush()
    end
  end
  if ctx.opts.follow then
    local reqs = {}
    for i, inst in ipairs(targets) do reqs[i] = eng:follow_request(inst.id, ctx.opts.tail, printer(inst)) end
    local ok, results = pcall(require("aitbc.http").request_many, reqs)
    local signal = require("aitbc.sys").interrupted()
    if not ok and not signal then error(results, 0) end
    for _, res in ipairs(ok and results or { { kind = "interrupted" } }) do
      if res.kind == "interrupted" or signal then -- Ctrl-C is the way out of -f, as of --watch
        ctx.exit_code = errors.signal_exit(signal or 2)
        return nil
      end
      if res.error then errors.raise("network", "following the logs: " .. res.error) end
    end
    return nil
  end
  local docs = json.array()
  for _, inst in ipairs(targets) do
    local text, err = eng:logs(inst.id, ctx.opts.tail)
    if not text then error(err, 0) end
    if ctx.out.format == "table" then printer(inst)(text .. ((text == "" or text:sub(-1) == "\n") and "" or "\n"))
    else docs[#docs + 1] = { instance = inst.name, logs = text } end
  end
  if ctx.out.format ~= "table" then return { deployment = d.name, instances = docs } end
end

-- ---- monitor ----

--- 7.1M, 472B, 1.9K: sizes short enough for a live table at 80 columns.
local function short(n)
  if n == nil then return "-" end
  local units, i = { "B", "K", "M", "G", "T" }, 1
  while n >= 1024 and i < #units do n, i = n / 1024, i + 1 end
  return i == 1 and string.format("%d%s", n, units[i]) or string.format("%.1f%s", n, units[i])
end

local function render_frame(f, out)
  out:print(string.format("%s · %s · %d/%d healthy · %s", f.deployment, f.image, f.healthy, f.desired, f.time))
  local rows = {}
  for i, r in ipairs(f.instances) do
    rows[i] = {
      instance = r.instance, health = r.state == "running" and r.health or r.state,
      cpu = r.cpu_percent and string.format("%.1f%%", r.cpu_percent) or "-",
      mem = r.memory_bytes and (short(r.memory_bytes) .. (r.memory_percent and string.format(" %.0f%%", r.memory_percent)
        or "")) or "-",
      net = r.net_rx_bytes and string.format("%s / %s", short(r.net_rx_bytes), short(r.net_tx_bytes)) or "-",
      rate = r.net_rx_per_second and string.format("%s / %s", short(r.net_rx_per_second), short(r.net_tx_per_second))
        or "-",
      pids = r.pids,
    }
  end
  out:print(out:format_table(rows, { { "instance", "instance", keep = true }, "health", { "cpu", "CPU" },
    { "mem", "memory" }, { "net", "net rx / tx" }, { "rate", "per second" }, "pids" }))
end

local function monitor(ctx)
  local d = deploy().load(ctx.args.name)
  local eng = connect(ctx)
  local next_frame = require("aitbc.deploy.monitor").sampler(eng, d)
  if ctx.opts.once then return next_frame(), render_frame end
  local decl = { path = ctx.command.path, run = function() return next_frame(), render_frame end }
  ctx.exit_code = require("aitbc.cli.watch").run(decl, ctx, ctx.opts.interval, function(frame, render)
    ctx.out:emit(frame, render)
  end)
end

-- ---- the image and the engine ----

local function image(ctx)
  local eng = connect(ctx)
  local tag = ctx.opts.tag
  if ctx.out.format == "table" then ctx.out:info("building " .. tag .. " on " .. eng.label .. " ...") end
  local r = require("aitbc.deploy.image").build(eng, tag, function(line)
    if ctx.out.format == "table" then io.stderr:write("  | ", line, "\n") end
  end)
  r.engine = eng.label
  return r, function(v, out)
    out:success(string.format("built %s (%s, FROM scratch: aitbc, %d libraries, CA certificates) in %.1f s", v.tag,
      tostring(v.id):gsub("^sha256:", ""):sub(1, 12), #v.libraries, v.seconds))
    out:print("deploy it: aitbc deploy create --name prod-api --image " .. v.tag .. " --instances 3")
  end
end

local function engine_status(ctx)
  local engine = require "aitbc.deploy.engine"
  local eng = connect(ctx)
  local own = engine.own_paths()
  local r = { engine = eng.label, kind = eng.kind, version = eng.version, api_version = eng.api_version,
    found = eng.source, started_by_aitbc = eng.own or false, pid = eng.own and engine.own_pid() or nil }
  if eng.own then
    r.env = engine.own_env()
    r.log = own.log
  end
  return r, function(v, out)
    out:print(out:format_record(v, { "engine", "kind", "version", "api_version", "found", "pid", "log" }))
    if v.env then
      out:print(out:style("the podman CLI on the same engine:", "dim"))
      out:print(string.format("  export CONTAINERS_CONF=%s CONTAINERS_STORAGE_CONF=%s", v.env.CONTAINERS_CONF,
        v.env.CONTAINERS_STORAGE_CONF))
    end
  end
end

local function engine_start()
  local engine = require "aitbc.deploy.engine"
  local eng, started = engine.own_service()
  return { engine = eng.label, pid = eng.pid, started = started, env = engine.own_env(), log = engine.own_paths().log },
    function(v, out)
      out:success(string.format("Podman's API service %s at %s (pid %d); the deploy commands use it",
        v.started and "started" or "already runs", v.engine, v.pid))
    end
end

local function engine_stop()
  local result = require("aitbc.deploy.engine").stop_service()
  return { result = result }, function(v, out)
    if v.result == "not running" then out:success("no Podman service started by aitbc runs here; nothing to stop")
    else out:success("Podman's API service " .. v.result .. " (containers keep running; 'aitbc deploy ...' starts it "
      .. "again)") end
  end
end

-- ---- declarations ----

local engine_opt = { "--engine", metavar = "ADDRESS",
  help = "the container engine: unix:///path/to/podman.sock or tcp://host:port (default: CONTAINER_HOST, DOCKER_HOST, "
    .. "the usual sockets, else a Podman service aitbc starts)" }
local name_arg = { "name", help = "the deployment's name", complete = "deployment" }
local grace_opt = { "--grace", type = "number", min = 0, max = 600, default = 10, metavar = "SECONDS",
  help = "how long an instance may take to stop before it is killed" }
local keep_opt = { "--keep-failed", type = "boolean",
  help = "leave an instance that failed its health check (and what this command made) as it is, to inspect it" }
local INSTANCE_FIELDS = { "deployment", "state", "seconds", "instances" }

return {
  name = "deploy",
  category = "Node",
  summary = "Deployments of aitbc nodes (or any image) on a container engine: Podman or Docker",
  description = "Configurations live in AITBC_HOME/deployments/ (mode 0600); containers are labelled with their "
    .. "deployment and named NAME-N; ports are published on 127.0.0.1 unless --bind says otherwise. With no engine "
    .. "answering, aitbc starts 'podman system service' (and says so); with none installed it exits 5 naming what "
    .. "to install.",
  commands = {
    {
      name = "create",
      summary = "Save and validate a deployment (the image must be in the engine; aitbc-api can be built)",
      fields = { "name", "id", "image", "image_id", "instances", "bind", "port", "container_port", "ports", "cpus",
        "memory_bytes", "env", "command", "health_timeout", "created_at", "config_file", "engine", "image_built" },
      id_field = "name",
      options = {
        { "--name", required = true, metavar = "NAME", help = "the deployment's name (letters, digits, - _ .)" },
        { "--image", required = true, metavar = "IMAGE", help = "the image, e.g. aitbc-api:latest (make image)" },
        { "--instances", type = "integer", min = 1, max = 64, default = 1, metavar = "N", help = "how many instances" },
        { "--port", type = "integer", min = 1, max = 65535, metavar = "PORT",
          help = "first host port (instance N gets PORT+N-1; default: free ports the engine picks)" },
        { "--container-port", type = "integer", min = 1, max = 65535, default = 8000, metavar = "PORT",
          help = "the port the image serves on" },
        { "--bind", default = "127.0.0.1", metavar = "ADDRESS",
          help = "host address the ports are published on (0.0.0.0: every interface)" },
        { "--cpus", type = "number", metavar = "N", help = "CPU limit per instance, in cores (e.g. 0.5)" },
        { "--memory", metavar = "SIZE", help = "memory limit per instance (e.g. 256m, 1g)" },
        { "--env", repeatable = true, metavar = "NAME=VALUE", help = "environment variable of the instances" },
        { "--command", metavar = "ARGS", help = "arguments after the image's entry point (aitbc-api: serve options, "
          .. "e.g. '--block-time 5'), split at spaces" },
        { "--health-timeout", type = "number", min = 1, max = 3600, default = 60, metavar = "SECONDS",
          help = "how long start waits for an instance to be healthy" },
        engine_opt,
      },
      examples = { 'aitbc deploy create --name "prod-api" --image "aitbc-api:latest" --instances 3',
        "aitbc deploy create --name edge --image aitbc-api:latest --port 9000 --memory 256m --cpus 0.5" },
      run = create,
    },
    { name = "list", summary = "Deployments and whether they run", list = "items",
      fields = { "name", "image", "instances", "running", "state", "created_at" }, id_field = "name",
      options = { engine_opt }, run = list },
    { name = "show", summary = "A deployment's configuration and its instances (health checked now)",
      args = { name_arg }, options = { engine_opt }, run = show },
    { name = "start", summary = "Start the instances: created → started → healthy, then running",
      description = "Creates the missing containers and starts them, then polls their health checks until every "
        .. "instance is healthy. One that fails (or is not healthy within --health-timeout) stops the start: its last "
        .. "log lines are shown and what this start made is removed again, unless --keep-failed.",
      fields = INSTANCE_FIELDS, args = { name_arg }, options = { keep_opt, engine_opt },
      examples = { 'aitbc deploy start "prod-api"' }, run = start },
    { name = "stop", summary = "Stop the instances (their containers and data stay)", args = { name_arg },
      options = { grace_opt, engine_opt }, run = stop },
    { name = "restart", summary = "Restart the instances one at a time, each healthy before the next",
      fields = INSTANCE_FIELDS, args = { name_arg }, options = { grace_opt, engine_opt }, run = restart },
    { name = "scale", summary = "Add or remove instances one at a time (each new one healthy before the next)",
      args = { name_arg, { "count", optional = true, help = "the new number of instances" } },
      options = { { "--instances", type = "integer", min = 1, max = 64, metavar = "N", help = "the new number" },
        keep_opt, grace_opt, engine_opt },
      examples = { "aitbc deploy scale prod-api 5", "aitbc deploy scale prod-api --instances 2" }, run = scale },
    { name = "logs", summary = "What the instances wrote (stdout and stderr)", args = { name_arg },
      options = { { "--instance", type = "integer", min = 1, metavar = "N", help = "only instance N" },
        { "--tail", type = "integer", min = 0, default = 100, metavar = "N", help = "the last N lines of each" },
        { "--follow", short = "-f", type = "boolean", help = "keep printing new lines until Ctrl-C" }, engine_opt },
      run = logs },
    { name = "monitor", summary = "Live CPU, memory, network and health per instance (q or Ctrl-C leaves)",
      description = "On a terminal the table is redrawn in place every --interval seconds; off one, frames follow "
        .. "each other (one JSON document a line with --output json) until Ctrl-C. --once prints one frame.",
      fields = { "deployment", "image", "time", "healthy", "desired", "instances" },
      args = { name_arg },
      options = { { "--interval", type = "number", min = 0.5, max = 3600, default = 2, metavar = "SECONDS",
        help = "seconds between frames" }, { "--once", type = "boolean", help = "one frame, then exit" }, engine_opt },
      examples = { 'aitbc deploy monitor "prod-api"', "aitbc deploy monitor prod-api --once -o json" },
      run = monitor },
    { name = "destroy", summary = "Remove a deployment: its containers, its configuration (and an image create built)",
      args = { name_arg }, options = { engine_opt }, run = destroy },
    { name = "image", summary = "Build the aitbc-api image FROM scratch from this binary (what 'make image' runs)",
      fields = { "tag", "id", "libraries", "bytes", "seconds", "engine" }, id_field = "tag",
      options = { { "--tag", default = "aitbc-api:latest", metavar = "TAG", help = "the image's name" }, engine_opt },
      run = image },
    {
      name = "engine",
      summary = "The container engine deployments run on",
      commands = {
        { name = "status", summary = "Which engine is used (starting Podman's service if none answers)",
          options = { engine_opt }, run = engine_status },
        { name = "start", summary = "Start aitbc's own Podman service (AITBC_HOME/engine), even if another "
          .. "engine answers; the deploy commands then use it", run = engine_start },
        { name = "stop", summary = "Stop the Podman service aitbc started (its containers keep running)",
          run = engine_stop },
      },
    },
  },
}
