--- Deployments: a named set of instances of one image on the container
-- engine (aitbc.deploy.engine).  The configuration is kept locally,
-- AITBC_HOME/deployments/NAME.json (mode 0600); the containers are the
-- state: each carries the labels aitbc.deployment (its name),
-- aitbc.deployment.id (a random id, so that a deployment of the same name
-- made elsewhere is never touched) and aitbc.instance (1..N), and is named
-- NAME-N.  Ports are published on 127.0.0.1 unless the configuration says
-- otherwise; health is polled by aitbc (the engine runs no checks on a
-- timer without systemd).
--
-- The life-cycle functions report what happens through on_event{instance,
-- n, state, detail, seconds} (created, started, healthy, running, stopped,
-- removed, failed ...) and raise aitbc errors.
local errors = require "aitbc.errors"
local http = require "aitbc.http"
local json = require "aitbc.json"
local sys = require "aitbc.sys"

local M = {}

M.LABEL = "aitbc.deployment"
M.LABEL_ID = "aitbc.deployment.id"
M.LABEL_INSTANCE = "aitbc.instance"
M.MAX_INSTANCES = 64
M.DEFAULT_HEALTH_TIMEOUT = 60

local function now_iso() return os.date("!%Y-%m-%dT%H:%M:%SZ") end

local function usage(field, message, hint)
  errors.raise("usage", message, hint, { code = "invalid_value", field = field })
end

-- ---- the configurations ----

function M.dir(home)
  return (home or require("aitbc.config").home()) .. "/deployments"
end

function M.check_name(name)
  if type(name) ~= "string" or not name:match("^[%w][%w_.%-]*$") or #name > 48 then
    usage("name", "deployment name '" .. tostring(name) .. "' is not valid",
      "use letters, digits, '-', '_' and '.', starting with a letter or digit, at most 48 characters")
  end
  return name
end

function M.path(name, home)
  return M.dir(home) .. "/" .. M.check_name(name) .. ".json"
end

--- The deployment's configuration; raises not found (exit 3).
function M.load(name, home)
  local path = M.path(name, home)
  local text = sys.read_file(path)
  if not text then
    errors.raise("not_found", "no deployment named '" .. name .. "'",
      "see 'aitbc deploy list', or create it with 'aitbc deploy create --name " .. name .. " --image IMAGE'",
      { code = "deployment_not_found" })
  end
  local d = json.decode(text)
  if type(d) ~= "table" or d.name ~= name or type(d.id) ~= "string" then
    errors.raise("failure", path .. " is not a deployment configuration", "fix it by hand, or remove it")
  end
  return d
end

function M.save(d, home)
  local dir = M.dir(home)
  local ok, err = sys.mkdir(dir, tonumber("700", 8))
  if not ok then errors.raise("failure", "cannot create " .. dir .. ": " .. tostring(err)) end
  d.updated_at = now_iso()
  ok, err = sys.write_file(M.path(d.name, home), json.encode(d, { pretty = true }) .. "\n", tonumber("600", 8))
  if not ok then errors.raise("failure", "cannot write " .. M.path(d.name, home) .. ": " .. tostring(err)) end
end

--- Every configuration, by name.
function M.all(home)
  local list = {}
  for _, file in ipairs(sys.list_dir(M.dir(home)) or {}) do
    local name = file:match("^(.+)%.json$")
    if name then
      local ok, d = pcall(M.load, name, home)
      if ok then list[#list + 1] = d end
    end
  end
  table.sort(list, function(a, b) return a.name < b.name end)
  return list
end

--- "512m", "1g", "2048k", "1073741824" -> bytes | nil (binary units, as Docker reads them).
function M.parse_size(text)
  local n, unit = tostring(text):lower():match("^(%d+%.?%d*)%s*([kmg]?)i?b?$")
  n = tonumber(n)
  if not n then return nil end
  local bytes = n * ({ [""] = 1, k = 1024, m = 1024 ^ 2, g = 1024 ^ 3 })[unit]
  return math.tointeger(math.floor(bytes))
end

local function online_cpus()
  local text = sys.read_file("/sys/devices/system/cpu/online") or ""
  local count = 0
  for a, b in text:gmatch("(%d+)%-?(%d*)") do count = count + (b ~= "" and (tonumber(b) - tonumber(a) + 1) or 1) end
  return count > 0 and count or 1
end

local function is_address(s)
  if s:match("^%d+%.%d+%.%d+%.%d+$") then
    for part in s:gmatch("%d+") do if tonumber(part) > 255 then return false end end
    return true
  end
  return s:match("^[%x:]+$") ~= nil and s:find(":", 1, true) ~= nil
end

--- Whether something listens on host:port (a connect that succeeds).
local function port_in_use(host, port)
  if host == "0.0.0.0" then host = "127.0.0.1" elseif host == "::" then host = "::1" end
  local ok, net = pcall(require, "aitbc.native.net")
  if not ok then return false end
  local conn = net.connect(host, port, { timeout = 0.3 })
  if conn then conn:close() return true end
  return false
end

--- The host ports: in range, free now, not another deployment's.
local function check_ports(d, spec, home)
  local port = math.tointeger(spec.port)
  if not port or port < 1 or port + d.instances - 1 > 65535 then
    usage("port", "--port must leave room for one port per instance: from 1 to " .. (65536 - d.instances))
  end
  for i = 0, d.instances - 1 do
    if port_in_use(d.bind, port + i) then
      usage("port", string.format("port %d (instance %d) is in use on %s", port + i, i + 1, d.bind),
        "choose another --port, or leave it out: the engine then picks free ports")
    end
  end
  for _, other in ipairs(M.all(home)) do
    local op = math.tointeger(other.host_port)
    if other.name ~= d.name and op and port < op + other.instances and op < port + d.instances then
      usage("port", string.format("ports %d-%d overlap deployment %s's (%d-%d)", port, port + d.instances - 1,
        other.name, op, op + other.instances - 1), "choose another --port")
    end
  end
  return port
end

--- CPU and memory limits, environment and the entry point's arguments.
local function check_resources(d, spec)
  if spec.cpus ~= nil then
    local cpus = tonumber(spec.cpus)
    if not cpus or cpus <= 0 or cpus > online_cpus() then
      usage("cpus", string.format("--cpus must be more than 0 and at most this machine's %d", online_cpus()))
    end
    d.cpus = cpus
  end
  if spec.memory ~= nil then
    local bytes = M.parse_size(spec.memory)
    if not bytes or bytes < 6 * 1024 * 1024 then
      usage("memory", "--memory '" .. tostring(spec.memory) .. "' is not a size of at least 6m", "e.g. 256m or 1g")
    end
    d.memory = bytes
  end
  d.env = {}
  for _, kv in ipairs(spec.env or {}) do
    local k, v = tostring(kv):match("^([%a_][%w_]*)=(.*)$")
    if not k then usage("env", "--env '" .. tostring(kv) .. "' is not NAME=VALUE") end
    d.env[k] = v
  end
  d.command = json.array()
  for word in tostring(spec.command or ""):gmatch("%S+") do d.command[#d.command + 1] = word end
end

--- Checks a spec (as `deploy create` takes it) and returns the
-- configuration to save; a bad value is a usage error naming its field.
-- Nothing here needs the engine.
function M.validate(spec, home)
  local d = { version = 1, name = M.check_name(spec.name) }
  local image = spec.image
  if type(image) ~= "string" or not image:match("^[%w][%w._/:@%-]*$") or #image > 255 then
    usage("image", "image '" .. tostring(image) .. "' is not an image reference",
      "e.g. aitbc-api:latest or registry.example/team/app:1.2")
  end
  d.image = image
  d.instances = math.tointeger(spec.instances or 1)
  if not d.instances or d.instances < 1 or d.instances > M.MAX_INSTANCES then
    usage("instances", "--instances must be a whole number from 1 to " .. M.MAX_INSTANCES)
  end
  d.container_port = math.tointeger(spec.container_port or 8000)
  if not d.container_port or d.container_port < 1 or d.container_port > 65535 then
    usage("container_port", "--container-port must be a port number from 1 to 65535")
  end
  d.bind = spec.bind or "127.0.0.1"
  if not is_address(d.bind) then
    usage("bind", "--bind '" .. tostring(d.bind) .. "' is not an IP address",
      "127.0.0.1 (the default: this machine only), or 0.0.0.0 to publish on every interface")
  end
  if spec.port ~= nil then d.host_port = check_ports(d, spec, home) end
  check_resources(d, spec)
  d.health_timeout = tonumber(spec.health_timeout or M.DEFAULT_HEALTH_TIMEOUT)
  if not d.health_timeout or d.health_timeout < 1 or d.health_timeout > 3600 then
    usage("health_timeout", "--health-timeout must be from 1 to 3600 seconds")
  end
  return d
end

--- Saves a new deployment (d: from M.validate) once its image is in the
-- engine.  build(d) is called when the engine lacks the image and it is one
-- aitbc builds (aitbc-api); it returns true once built, or false.
function M.create(eng, d, build, home)
  if sys.stat(M.path(d.name, home)) then
    errors.raise("failure", "deployment '" .. d.name .. "' already exists",
      "see it with 'aitbc deploy show " .. d.name .. "', or remove it with 'aitbc deploy destroy " .. d.name .. "'",
      { code = "deployment_exists", field = "name" })
  end
  local image = eng:image(d.image)
  if not image then
    local buildable = require("aitbc.deploy.image").buildable(d.image)
    if buildable and build and build(d) then
      image = eng:image(d.image)
      d.image_built = true
    end
    if not image then
      errors.raise("not_found", "image " .. d.image .. " is not in the container engine (" .. eng.label .. ")",
        buildable and "build it: make image (or aitbc deploy image), or run this again on a terminal or with --yes "
          .. "to build it now" or ("pull or build it into that engine first (podman pull " .. d.image .. ")"),
        { code = "image_not_found", field = "image" })
    end
  end
  d.image_id = image.Id
  d.id = require("aitbc.crypto").hex(require("aitbc.crypto").random(6))
  d.created_at = now_iso()
  M.save(d, home)
  return d
end

-- ---- instances ----

local function instance_name(d, n) return d.name .. "-" .. n end

--- The published address of a list entry or an inspection: "host:port".
local function published(c, cport)
  for _, p in ipairs(type(c.Ports) == "table" and c.Ports or {}) do
    if p.PrivatePort == cport and p.PublicPort then
      return (p.IP and p.IP ~= "" and p.IP or "0.0.0.0") .. ":" .. p.PublicPort
    end
  end
  local ns = type(c.NetworkSettings) == "table" and c.NetworkSettings.Ports
  local b = type(ns) == "table" and ns[cport .. "/tcp"]
  if type(b) == "table" and type(b[1]) == "table" and b[1].HostPort and b[1].HostPort ~= "" then
    return (b[1].HostIp ~= "" and b[1].HostIp or "0.0.0.0") .. ":" .. b[1].HostPort
  end
end

--- The deployment's containers: a list ordered by instance number of
-- {n, id, name, state, status, address}; extra containers are kept too.
function M.instances(eng, d)
  local list = {}
  for _, c in ipairs(eng:containers { [M.LABEL_ID] = d.id }) do
    local labels = type(c.Labels) == "table" and c.Labels or {}
    local name = type(c.Names) == "table" and tostring(c.Names[1] or ""):gsub("^/", "") or c.Id
    list[#list + 1] = { n = math.tointeger(tonumber(labels[M.LABEL_INSTANCE])) or 0, id = c.Id, name = name,
      state = tostring(c.State or "unknown"), status = c.Status, address = published(c, d.container_port) }
  end
  table.sort(list, function(a, b) return a.n < b.n end)
  return list
end

local function by_number(list)
  local map = {}
  for _, inst in ipairs(list) do map[inst.n] = inst end
  return map
end

--- The Docker API body that creates instance n.
function M.create_body(d, n)
  local env = {}
  for k, v in pairs(d.env or {}) do env[#env + 1] = k .. "=" .. v end
  table.sort(env)
  local port = d.container_port .. "/tcp"
  local host_port = d.host_port and tostring(math.tointeger(d.host_port) + n - 1) or ""
  local body = {
    Image = d.image, Hostname = instance_name(d, n),
    Labels = { [M.LABEL] = d.name, [M.LABEL_ID] = d.id, [M.LABEL_INSTANCE] = tostring(n) },
    Env = json.array(env), ExposedPorts = { [port] = {} },
    HostConfig = {
      PortBindings = { [port] = json.array { { HostIp = d.bind or "127.0.0.1", HostPort = host_port } } },
      RestartPolicy = { Name = "no" },
    },
  }
  if #(d.command or {}) > 0 then body.Cmd = json.array(d.command) end
  if d.memory then body.HostConfig.Memory = math.tointeger(d.memory) end
  if d.cpus then body.HostConfig.NanoCpus = math.tointeger(math.floor(d.cpus * 1e9)) end
  return body
end

--- Fills inst.address from the engine when the list did not give it.
local function locate(eng, d, inst)
  if inst.address then return inst.address end
  local ok, c = pcall(eng.inspect, eng, inst.id)
  if ok and type(c) == "table" then inst.address = published(c, d.container_port) end
  return inst.address
end

--- Why a container is not healthy, in a few words, and its last check's output.
local function failure_reason(eng, inst, health)
  if health.status == "start failed" then return "the engine could not start it: " .. tostring(health.output) end
  local ok, c = pcall(eng.inspect, eng, inst.id)
  local state = ok and type(c) == "table" and type(c.State) == "table" and c.State or {}
  if state.Running == false or health.status == "not running" then
    return string.format("it exited (code %s%s)", tostring(state.ExitCode or "?"),
      (state.Error and state.Error ~= "") and (", " .. state.Error) or "")
  end
  local h = type(state.Health) == "table" and state.Health or {}
  local last = type(h.Log) == "table" and h.Log[#h.Log] or {}
  local output = health.output or (type(last) == "table" and last.Output) or nil
  if health.status == "timeout" then
    return "not healthy within " .. health.seconds .. " s (health: " .. tostring(health.last or "starting") .. ")", output
  end
  return "its health check failed" .. (type(last) == "table" and last.ExitCode and (" (exit " .. last.ExitCode .. ")")
    or ""), output
end

--- Polls the health of instances until each is healthy (or has no check
-- and runs).  Returns true, or nil, the failed instance and why.
local function wait_healthy(eng, d, pending, on_event, started_at)
  local deadline = sys.monotonic() + d.health_timeout
  local last = {}
  while #pending > 0 do
    local reqs = {}
    for i, inst in ipairs(pending) do reqs[i] = eng:health_request(inst.id) end
    local results = http.request_many(reqs)
    local still = {}
    for i, inst in ipairs(pending) do
      local h = eng:health_result(results[i])
      last[inst.id] = h.status
      if h.status == "healthy" or h.status == "none" then
        on_event { instance = inst.name, n = inst.n, state = "healthy", address = locate(eng, d, inst),
          detail = h.status == "none" and "running; the image has no health check" or nil,
          seconds = sys.monotonic() - (started_at[inst.id] or started_at[0]) }
      elseif h.status == "unhealthy" or h.status == "not running" then
        return nil, inst, h
      else
        still[#still + 1] = inst
      end
    end
    pending = still
    if #pending > 0 then
      if sys.monotonic() > deadline then
        return nil, pending[1], { status = "timeout", seconds = d.health_timeout, last = last[pending[1].id] }
      end
      local _, why = sys.sleep(0.1)
      if why == "interrupted" then errors.raise("interrupted", "interrupted") end
    end
  end
  return true
end

--- Undoes a start that failed: removes the containers it created, stops
-- those it started; reports each.
local function roll_back(eng, made, started, on_event)
  local undone = {}
  for i = #made, 1, -1 do
    pcall(eng.remove, eng, made[i].id)
    on_event { instance = made[i].name, n = made[i].n, state = "removed" }
    undone[made[i].id] = true
  end
  for i = #started, 1, -1 do
    if not undone[started[i].id] then
      pcall(eng.stop, eng, started[i].id)
      on_event { instance = started[i].name, n = started[i].n, state = "stopped" }
    end
  end
end

--- Reports a failed instance (its last log lines) and raises.
local function fail(eng, d, inst, health, on_event, made, started, opts, verb)
  local reason, output = failure_reason(eng, inst, health)
  local logs = eng:logs(inst.id, 20) or ""
  on_event { instance = inst.name, n = inst.n, state = "failed", detail = reason, output = output, logs = logs }
  local undo
  if opts.keep_failed then
    undo = "left as it is (--keep-failed): inspect it with 'aitbc deploy logs " .. d.name .. "'"
  elseif made then
    roll_back(eng, made, started, on_event)
    undo = "rolled back what this " .. verb .. " made"
  end
  errors.raise("failure", string.format("%s of %s stopped: %s %s", verb, d.name, inst.name, reason)
    .. (undo and ("; " .. undo) or ""), nil, { code = "unhealthy", details = { instance = inst.name, reason = reason,
      health_output = output, logs = logs } })
end

--- What fail() is told when the engine would not start a container.
local function start_failure(err)
  return { status = "start failed", output = errors.is(err) and err.message or tostring(err) }
end

--- Creates (if missing) and starts instance n; returns it.
local function bring_up(eng, d, n, existing, on_event, made, started, started_at)
  local inst = existing[n]
  if not inst then
    local name = instance_name(d, n)
    local ok, id = pcall(eng.create, eng, name, M.create_body(d, n))
    if not ok then
      if errors.is(id) and (id.status == 409 or id.message:find("already in use", 1, true)) then -- Podman: 500
        id.message = id.message .. " — a container named " .. name .. " exists that is not part of this deployment"
        id.hint = "remove or rename it, or give the deployment another name"
      end
      error(id, 0)
    end
    inst = { n = n, id = id, name = name, state = "created" }
    made[#made + 1] = inst
    on_event { instance = name, n = n, state = "created", detail = id:sub(1, 12) }
  end
  if inst.state ~= "running" then
    started_at[inst.id] = sys.monotonic()
    local ok, err = pcall(eng.start, eng, inst.id)
    if not ok then
      started[#started + 1] = inst
      return nil, inst, err
    end
    inst.state = "running"
    started[#started + 1] = inst
    on_event { instance = inst.name, n = n, state = "started", address = locate(eng, d, inst) }
  else
    on_event { instance = inst.name, n = n, state = "running", detail = "already running", address = inst.address }
  end
  return inst
end

--- After Ctrl-C: removes what this start created (a container whose
-- create was cut short included: any of the deployment's not there
-- before) and stops what it started, with requests that finish anyway.
local function roll_back_interrupted(eng, d, before, started, on_event)
  eng.ignore_interrupt = true
  local ok, now = pcall(M.instances, eng, d)
  local made = {}
  for _, inst in ipairs(ok and now or {}) do
    if not before[inst.id] then made[#made + 1] = inst end
  end
  roll_back(eng, made, started, on_event)
  eng.ignore_interrupt = nil
end

--- Starts every instance (creating the missing ones), then waits until all
-- are healthy.  A failure rolls back what this start did, unless
-- opts.keep_failed; so does Ctrl-C.  Returns {instances, seconds}.
function M.start(eng, d, on_event, opts)
  opts = opts or {}
  local t0 = sys.monotonic()
  if not eng:image(d.image) then
    errors.raise("not_found", "image " .. d.image .. " is not in the container engine (" .. eng.label .. ")",
      "build or pull it first (aitbc-api: make image)", { code = "image_not_found" })
  end
  local current = M.instances(eng, d)
  local existing, before = by_number(current), {}
  for _, inst in ipairs(current) do before[inst.id] = true end
  local made, started, started_at, pending = {}, {}, { [0] = t0 }, {}
  local ok, err = pcall(function()
    for _, inst in ipairs(current) do -- instances beyond the count (scaled down while stopped)
      if inst.n > d.instances or inst.n < 1 then
        eng:remove(inst.id)
        on_event { instance = inst.name, n = inst.n, state = "removed", detail = "beyond " .. d.instances
          .. " instances" }
      end
    end
    for n = 1, d.instances do
      local up, inst, failed, why = pcall(bring_up, eng, d, n, existing, on_event, made, started, started_at)
      if not up then -- the engine refused to create one (a name taken ...): undo the others, then say why
        if not opts.keep_failed and not sys.interrupted() then roll_back(eng, made, started, on_event) end
        error(inst, 0)
      end
      if not inst then fail(eng, d, failed, start_failure(why), on_event, made, started, opts, "start") end
      pending[#pending + 1] = inst
    end
    local healthy, failed, health = wait_healthy(eng, d, pending, on_event, started_at)
    if not healthy then fail(eng, d, failed, health, on_event, made, started, opts, "start") end
  end)
  if not ok then
    if (sys.interrupted() or type(err) == "table" and err.kind == "interrupted") and not opts.keep_failed then
      roll_back_interrupted(eng, d, before, started, on_event)
    end
    error(err, 0)
  end
  on_event { state = "running", detail = d.instances .. "/" .. d.instances .. " healthy",
    seconds = sys.monotonic() - t0 }
  return { instances = M.instances(eng, d), seconds = sys.monotonic() - t0 }
end

--- Stops the running instances (SIGTERM, then SIGKILL after grace), all at once.
function M.stop(eng, d, on_event, grace)
  grace = grace or 10
  local reqs, which = {}, {}
  for _, inst in ipairs(M.instances(eng, d)) do
    if inst.state == "running" or inst.state == "paused" or inst.state == "restarting" then
      which[#which + 1] = inst
      reqs[#reqs + 1] = { method = "POST", url = http.with_query(eng.base .. require("aitbc.deploy.engine").API
        .. "/containers/" .. http.escape(inst.id) .. "/stop", { t = grace }), unix_socket = eng.socket,
        timeout = grace + 30 }
    end
  end
  local results = #reqs > 0 and http.request_many(reqs) or {}
  local stopped = 0
  for i, inst in ipairs(which) do
    local res = results[i]
    if res.error then errors.raise("network", "stopping " .. inst.name .. ": " .. res.error) end
    if res.status >= 400 and res.status ~= 304 then
      errors.raise("failure", "stopping " .. inst.name .. ": " .. require("aitbc.deploy.engine").engine_message(res))
    end
    stopped = stopped + 1
    on_event { instance = inst.name, n = inst.n, state = "stopped" }
  end
  return { stopped = stopped }
end

--- Restarts the instances one at a time, each healthy before the next
-- (the others keep serving).  A failure stops there.
function M.restart(eng, d, on_event, opts)
  opts = opts or {}
  local t0 = sys.monotonic()
  local existing = by_number(M.instances(eng, d))
  for n = 1, d.instances do
    local inst = existing[n]
    if inst and inst.state == "running" then
      eng:stop(inst.id, opts.grace)
      inst.state = "exited"
      on_event { instance = inst.name, n = n, state = "stopped" }
    end
    local made, started, started_at = {}, {}, { [0] = sys.monotonic() }
    local up, failed, err = bring_up(eng, d, n, existing, on_event, made, started, started_at)
    if not up then
      fail(eng, d, failed, start_failure(err), on_event, nil, nil, opts, "restart")
    end
    local ok, bad, health = wait_healthy(eng, d, { up }, on_event, started_at)
    if not ok then fail(eng, d, bad, health, on_event, nil, nil, opts, "restart") end
  end
  on_event { state = "running", detail = d.instances .. "/" .. d.instances .. " healthy",
    seconds = sys.monotonic() - t0 }
  return { instances = M.instances(eng, d), seconds = sys.monotonic() - t0 }
end

--- Whether any instance runs.
function M.running(instances)
  for _, inst in ipairs(instances) do if inst.state == "running" then return true end end
  return false
end

--- Changes the number of instances.  On a running deployment, adds (each
-- healthy before the next) or removes (the highest first) one at a time;
-- on a stopped one only the configuration changes.  The configuration is
-- saved after each step, so it always says how many there are.
function M.scale(eng, d, count, on_event, opts, home)
  opts = opts or {}
  count = math.tointeger(count)
  if not count or count < 1 or count > M.MAX_INSTANCES then
    usage("instances", "the instance count must be a whole number from 1 to " .. M.MAX_INSTANCES)
  end
  local t0, from = sys.monotonic(), d.instances
  local current = M.instances(eng, d)
  if not M.running(current) then
    d.instances = count
    M.save(d, home)
    return { from = from, to = count, running = false, seconds = sys.monotonic() - t0 }
  end
  local existing = by_number(current)
  for n = from + 1, count do
    local made, started, started_at = {}, {}, { [0] = sys.monotonic() }
    local inst, failed, err = bring_up(eng, d, n, existing, on_event, made, started, started_at)
    if not inst then
      fail(eng, d, failed, start_failure(err), on_event, made, started, opts, "scale")
    end
    local ok, bad, health = wait_healthy(eng, d, { inst }, on_event, started_at)
    if not ok then fail(eng, d, bad, health, on_event, made, started, opts, "scale") end
    d.instances = n
    M.save(d, home)
  end
  for n = from, count + 1, -1 do
    local inst = existing[n]
    if inst then
      if inst.state == "running" then
        eng:stop(inst.id, opts.grace)
        on_event { instance = inst.name, n = n, state = "stopped" }
      end
      eng:remove(inst.id)
      on_event { instance = inst.name, n = n, state = "removed" }
    end
    d.instances = n - 1
    M.save(d, home)
  end
  d.instances = count
  M.save(d, home)
  return { from = from, to = count, running = true, seconds = sys.monotonic() - t0 }
end

--- Removes every container of the deployment and its configuration, and
-- the image when `deploy create` built it and nothing else uses it.
function M.destroy(eng, d, on_event, home)
  local removed = 0
  for _, inst in ipairs(M.instances(eng, d)) do
    eng:remove(inst.id)
    removed = removed + 1
    on_event { instance = inst.name, n = inst.n, state = "removed" }
  end
  local image
  if d.image_built then
    local others = false
    for _, other in ipairs(M.all(home)) do
      if other.name ~= d.name and other.image == d.image then others = true end
    end
    if others then
      image = "kept: another deployment uses it"
    else
      local ok, why = eng:remove_image(d.image)
      image = ok and "removed" or ("kept: " .. tostring(why))
    end
    on_event { state = "image", detail = d.image .. " " .. image }
  end
  os.remove(M.path(d.name, home))
  return { containers_removed = removed, image = image }
end

return M
