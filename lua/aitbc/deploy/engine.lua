--- The container engine: the Docker Engine API, which Podman and Docker both
-- serve, over a unix socket (or tcp://).  Found at --engine, CONTAINER_HOST,
-- DOCKER_HOST (each of these alone: a named engine that does not answer is
-- an error, never replaced by another), else at the socket of the Podman
-- service aitbc started before (AITBC_HOME/engine) or the usual sockets
-- (Podman's, rootless and root, then Docker's).  When none answers and
-- `podman` is installed, aitbc starts `podman system service` itself, with
-- the settings these machines need (../shared/notes/containers.md: runc,
-- cgroupfs, file events, ulimits inside the sandbox's limits) in a private
-- containers.conf and storage under AITBC_HOME/engine — nothing under /etc
-- changes — and says so.
--
--   local eng = engine.connect { engine = flag, say = function(level, text) end }
--   eng:call("GET", "/containers/json", { query = { all = "true" } })
--
-- Paths are the Docker API's (prefixed with its version here); eng.podman
-- says whether Podman's own routes (libpod: on-demand health checks) exist;
-- eng.ignore_interrupt = true lets requests finish after Ctrl-C (the
-- clean-up of an interrupted start).
local errors = require "aitbc.errors"
local http = require "aitbc.http"
local json = require "aitbc.json"
local sys = require "aitbc.sys"

local M = {}

--- The Docker API version spoken (Docker 20.10+, Podman 3+).
M.API = "/v1.41"

local Engine = {}
Engine.__index = Engine

--- An engine address as --engine, CONTAINER_HOST and DOCKER_HOST spell it
-- ("unix:///run/podman/podman.sock", "/path/to.sock", "tcp://host:2375",
-- "http://host:port") -> {socket = path} | {url = "http://host:port"}, or
-- nil and why.
function M.parse_address(text)
  text = tostring(text or "")
  if text:match("^/") then return { socket = text, label = "unix://" .. text } end
  local path = text:match("^unix://(/.*)$")
  if path then return { socket = path, label = text } end
  local hostport = text:match("^tcp://([^/]+)/?$") or text:match("^http://([^/]+)/?$")
  if hostport then return { url = "http://" .. hostport, label = text } end
  return nil, "'" .. text .. "' is not an engine address: use unix:///path/to/podman.sock (or a socket path), "
    .. "or tcp://host:port"
end

--- A client of the engine at a parsed address.
function M.new(address, source)
  local self = setmetatable({ socket = address.socket, label = address.label, source = source }, Engine)
  self.base = address.url or "http://localhost"
  return self
end

--- Why a transport failure happened, in words, with what to do.
local function transport_error(self, err)
  if err.kind == "interrupted" then return err end
  local why = err.code == "connect" and "nothing answers there" or err.code == "timeout" and "no answer in time"
    or (err.detail or err.message)
  return errors.new("network", "cannot reach the container engine at " .. self.label .. " (" .. why .. ")",
    "is it running? see 'aitbc deploy engine status'", { code = "engine_unreachable", detail = err.detail })
end

--- request(method, path, {query, json, body, headers, timeout, on_data, libpod})
-- -> res | nil, err.  path is the API's ("/containers/json"); libpod = true
-- sends it to Podman's own API instead.
function Engine:request(method, path, opts)
  opts = opts or {}
  local prefix = opts.libpod and (self.libpod or "/v4.0.0/libpod") or M.API
  local req = { method = method, url = http.with_query(self.base .. prefix .. path, opts.query),
    unix_socket = self.socket, headers = opts.headers, body = opts.body, json = opts.json,
    timeout = opts.timeout or 60, connect_timeout = opts.connect_timeout or 5, on_data = opts.on_data,
    ignore_interrupt = self.ignore_interrupt }
  local res, err = http.request(req)
  if not res then return nil, transport_error(self, err) end
  return res
end

--- The engine's own message in an error answer (Docker: {message}; Podman's
-- libpod: {cause, message, response}).
local function engine_message(res)
  local body = type(res.json) == "table" and res.json or json.decode(res.body or "") or {}
  local message = type(body) == "table" and (body.message or body.cause) or nil
  if type(message) ~= "string" or message == "" then message = (res.body or ""):sub(1, 300) end
  return message ~= "" and message or ("HTTP " .. res.status)
end
M.engine_message = engine_message

--- call(method, path, opts) -> the decoded JSON answer (true when it has
-- none).  Raises: transport 5, 404 -> 3, other 4xx/5xx -> 1, with the
-- engine's message; opts.what names the thing for messages.
function Engine:call(method, path, opts)
  opts = opts or {}
  local res, err = self:request(method, path, opts)
  if not res then error(err, 0) end
  if res.status >= 400 then
    local message = engine_message(res)
    local kind = res.status == 404 and "not_found" or "failure"
    errors.raise(kind, (opts.what and (opts.what .. ": ") or "") .. message, nil,
      { code = res.status == 409 and "engine_conflict" or ("engine_" .. res.status), status = res.status })
  end
  if res.body == nil or res.body == "" then return true end
  local data = res.json or json.decode(res.body)
  if data == nil then return res.body end
  return data
end

--- What the engine says it is: {kind = "podman"|"docker", version,
-- api_version} | nil, err.  Also sets self.podman and self.libpod.  Read
-- from /_ping's headers (Podman's /version runs its helpers to ask their
-- versions: 0.4 s here).
function Engine:identify(timeout)
  local res, err = self:request("GET", "/_ping", { timeout = timeout or 3, connect_timeout = timeout or 3 })
  if not res then return nil, err end
  local h = res.headers
  if res.status ~= 200 or not h["api-version"] then
    return nil, errors.new("network", self.label .. " answers, but not as a container engine (HTTP " .. res.status .. ")",
      nil, { code = "not_an_engine" })
  end
  local podman = h["libpod-api-version"]
  self.podman = podman ~= nil
  self.kind = podman and "podman" or "docker"
  self.version = podman or (h["server"] or ""):match("^Docker/(%S+)") or "?"
  self.api_version = h["api-version"]
  if podman then self.libpod = "/v" .. (podman:match("^(%d+)") or "4") .. ".0.0/libpod" end
  return { kind = self.kind, version = self.version, api_version = self.api_version }
end

-- ---- the Podman service aitbc starts itself ----

--- Where aitbc keeps the Podman service it starts: its configuration,
-- storage, socket, pid and log.
function M.own_dir(home)
  return (home or require("aitbc.config").home()) .. "/engine"
end

local function own_paths(home)
  local dir = M.own_dir(home)
  return { dir = dir, socket = dir .. "/podman.sock", pid = dir .. "/podman.pid", log = dir .. "/podman.log",
    containers_conf = dir .. "/containers.conf", storage_conf = dir .. "/storage.conf" }
end
M.own_paths = own_paths

--- The settings every container needs on these machines (the note):
-- ulimits the sandbox allows, runc (crun refuses hybrid cgroups), cgroupfs
-- and file events (no systemd); its own tmp_dir and file locks, so that it
-- shares no state with another Podman on the machine.
local function containers_conf(dir)
  return table.concat({
    "# Written by aitbc for the Podman service it starts (aitbc deploy engine status).",
    "[containers]",
    'default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]',
    "",
    "[engine]",
    'runtime = "runc"',
    'cgroup_manager = "cgroupfs"',
    'events_logger = "file"',
    string.format('tmp_dir = "%s/tmp"', dir),
    'lock_type = "file"',
    "",
  }, "\n")
end

--- Storage in a directory of ours; skip_mount_home: nothing stays mounted
-- once its containers are gone, so the directory can simply be removed.
local function storage_conf(dir)
  return table.concat({
    "# Written by aitbc for the Podman service it starts.",
    "[storage]",
    'driver = "overlay"',
    string.format('graphroot = "%s/storage"', dir),
    string.format('runroot = "%s/run"', dir),
    "",
    "[storage.options.overlay]",
    'skip_mount_home = "true"',
    "",
  }, "\n")
end

--- The environment that points the podman CLI at aitbc's own service.
function M.own_env(home)
  local p = own_paths(home)
  return { CONTAINERS_CONF = p.containers_conf, CONTAINERS_STORAGE_CONF = p.storage_conf }
end

--- The path of an executable on PATH, or nil.
function M.which(name)
  for dir in (sys.getenv("PATH") or "/usr/local/bin:/usr/bin:/bin"):gmatch("[^:]+") do
    local st = sys.stat(dir .. "/" .. name)
    if st and st.type == "file" and st.mode & tonumber("111", 8) ~= 0 then return dir .. "/" .. name end
  end
end

local function own_pid(home)
  local pid = math.tointeger(tonumber((sys.read_file(own_paths(home).pid) or ""):match("%d+")))
  if pid and require("aitbc.daemon").alive(pid) then
    local cmdline = sys.read_file("/proc/" .. pid .. "/cmdline") or ""
    if cmdline:find(own_paths(home).socket, 1, true) then return pid end
  end
end
M.own_pid = own_pid

local function write(path, text)
  local ok, err = sys.write_file(path, text, tonumber("600", 8))
  if not ok then errors.raise("failure", "cannot write " .. path .. ": " .. tostring(err)) end
end

--- Why containers cannot run on this machine at all, or nil: without the
-- cgroup filesystem (a chroot without /sys) Podman only says "no such
-- file or directory".
function M.unusable()
  if not sys.stat("/sys/fs/cgroup") then
    return "this machine has no cgroup filesystem (/sys/fs/cgroup is missing), which containers need"
  end
end

--- Starts `podman system service` on AITBC_HOME/engine/podman.sock and
-- waits until it answers; returns the engine.
function M.start_service(home, podman)
  local p = own_paths(home)
  local unusable = M.unusable()
  if unusable then
    errors.raise("network", "no container engine can run here: " .. unusable,
      "mount /sys (a chroot or minimal container lacks it), or point --engine, CONTAINER_HOST or DOCKER_HOST "
        .. "at an engine elsewhere", { code = "no_engine" })
  end
  if #p.socket > 107 then
    errors.raise("failure", "the engine socket path " .. p.socket .. " is longer than a unix socket allows (107 bytes)",
      "use a shorter AITBC_HOME, or start an engine yourself and name it with --engine")
  end
  for _, d in ipairs { p.dir, p.dir .. "/tmp" } do
    local ok, err = sys.mkdir(d, tonumber("700", 8))
    if not ok then errors.raise("failure", "cannot create " .. d .. ": " .. tostring(err)) end
  end
  write(p.containers_conf, containers_conf(p.dir))
  write(p.storage_conf, storage_conf(p.dir))
  os.remove(p.socket)
  local env = M.own_env(home)
  local proc, err = sys.spawn { argv = { podman, "system", "service", "--time=0", "unix://" .. p.socket }, env = env,
    setsid = true, stdin = "null", stdout = "null", stderr = "null", log = p.log }
  if not proc then errors.raise("failure", "cannot start " .. podman .. ": " .. tostring(err)) end
  write(p.pid, proc:pid() .. "\n")
  local eng = M.new({ socket = p.socket, label = "unix://" .. p.socket }, "started by aitbc")
  local deadline = sys.monotonic() + 20
  while true do
    if sys.stat(p.socket) and eng:identify(2) then break end
    local code = proc:wait(true)
    if code or sys.monotonic() > deadline then
      if not code then proc:kill(15) end
      local log = (sys.read_file(p.log) or ""):gsub("%s+$", ""):sub(-600)
      errors.raise("failure", "podman system service " .. (code and ("exited (code " .. code .. ")") or "did not answer")
        .. " while starting" .. (log ~= "" and (": " .. log) or ""), "see " .. p.log, { code = "engine_start_failed" })
    end
    sys.sleep(0.05)
  end
  eng.pid, eng.own = proc:pid(), true
  return eng
end

--- Starts aitbc's own Podman service unless it runs already; returns the
-- engine and whether it was started now.  (Discovery tries its socket
-- first, so the deploy commands then use it.)
function M.own_service(home)
  local p = own_paths(home)
  if own_pid(home) and sys.stat(p.socket) then
    local eng = M.new({ socket = p.socket, label = "unix://" .. p.socket }, "started by aitbc")
    if eng:identify(3) then
      eng.pid, eng.own = own_pid(home), true
      return eng, false
    end
  end
  local podman = M.which("podman")
  if not podman then
    errors.raise("network", "podman is not installed", "install it (Debian: apt-get install podman runc, or "
      .. "'make deps')", { code = "no_engine" })
  end
  return M.start_service(home, podman), true
end

--- Stops the Podman service aitbc started in home: "stopped", "killed" or
-- "not running".  Its containers keep running (conmon holds them).
function M.stop_service(home)
  local pid = own_pid(home)
  if not pid then return "not running" end
  local result = require("aitbc.daemon").stop(pid, 10)
  os.remove(own_paths(home).pid)
  os.remove(own_paths(home).socket)
  return result
end

-- ---- discovery ----

--- The engines to try, in order: {address, source, explicit}.
function M.candidates(opts)
  opts = opts or {}
  local function named(text, source)
    local address, why = M.parse_address(text)
    if not address then errors.raise("usage", source .. ": " .. why, nil, { code = "invalid_engine" }) end
    return { { address = address, source = source, explicit = true } }
  end
  if opts.engine and opts.engine ~= "" then return named(opts.engine, "--engine") end
  for _, var in ipairs { "CONTAINER_HOST", "DOCKER_HOST" } do
    local v = sys.getenv(var)
    if v and v ~= "" then return named(v, var) end
  end
  local list, seen = {}, {}
  local function add(path, source)
    if path and not seen[path] then
      seen[path] = true
      list[#list + 1] = { address = { socket = path, label = "unix://" .. path }, source = source }
    end
  end
  add(own_paths(opts.home).socket, "started by aitbc")
  local runtime = sys.getenv("XDG_RUNTIME_DIR")
  if runtime and runtime ~= "" then add(runtime .. "/podman/podman.sock", "Podman (rootless)") end
  add("/run/podman/podman.sock", "Podman")
  add("/var/run/docker.sock", "Docker")
  if runtime and runtime ~= "" then add(runtime .. "/docker.sock", "Docker (rootless)") end
  local home = sys.getenv("HOME")
  if home and home ~= "" then add(home .. "/.docker/run/docker.sock", "Docker Desktop") end
  return list
end

--- connect{engine, home, say, start = true} -> an engine that answers.
-- say(level, text) is told when aitbc starts the Podman service.  No
-- engine at all: a network error (exit 5) naming what to install.
function M.connect(opts)
  opts = opts or {}
  local tried = {}
  for _, c in ipairs(M.candidates(opts)) do
    local eng = M.new(c.address, c.source)
    if c.explicit then
      local _, err = eng:identify()
      if err then
        err.message = err.message .. " (from " .. c.source .. ")"
        err.hint = "start that engine, or correct " .. c.source .. " (unix:///path/to/podman.sock or tcp://host:port)"
        error(err, 0)
      end
      return eng
    end
    if sys.stat(c.address.socket) then
      if eng:identify(2) then
        eng.own = c.source == "started by aitbc" or nil
        return eng
      end
      tried[#tried + 1] = c.address.label .. " (not answering)"
    end
  end
  local podman = M.which("podman")
  if podman and opts.start ~= false then
    local eng = M.start_service(opts.home, podman)
    if opts.say then
      opts.say("warn", string.format("no container engine answered%s: started Podman's API service (%s system service, "
        .. "pid %d) at %s; it keeps running — stop it with 'aitbc deploy engine stop'",
        #tried > 0 and (" (" .. table.concat(tried, ", ") .. ")") or "", podman, eng.pid, eng.label))
    end
    return eng
  end
  errors.raise("network", "no container engine: nothing answers at the usual sockets"
    .. (#tried > 0 and (" (" .. table.concat(tried, ", ") .. ")") or "") .. " and podman is not installed",
    "install Podman (Debian: apt-get install podman runc, or 'make deps'), or point --engine, CONTAINER_HOST or "
      .. "DOCKER_HOST at a Docker or Podman socket", { code = "no_engine" })
end

-- ---- containers ----

--- Containers carrying every label in labels ({key = value}), stopped ones
-- too: the engine's list entries.
function Engine:containers(labels)
  local filters = {}
  for k, v in pairs(labels or {}) do filters[#filters + 1] = k .. "=" .. v end
  table.sort(filters)
  local query = { all = "true" }
  if #filters > 0 then query.filters = json.encode { label = json.array(filters) } end
  local list = self:call("GET", "/containers/json", { query = query, what = "listing containers" })
  return type(list) == "table" and list or {}
end

function Engine:inspect(id)
  return self:call("GET", "/containers/" .. http.escape(id) .. "/json", { what = "container " .. id })
end

--- Creates a container named name from a Docker API create body; its id.
function Engine:create(name, body)
  local created = self:call("POST", "/containers/create", { query = { name = name }, json = body,
    what = "creating " .. name })
  return created.Id
end

function Engine:start(id)
  local res, err = self:request("POST", "/containers/" .. http.escape(id) .. "/start")
  if not res then error(err, 0) end
  if res.status == 304 or res.status < 300 then return true end -- 304: running already
  errors.raise(res.status == 404 and "not_found" or "failure", "starting " .. id .. ": " .. engine_message(res))
end

--- Stops a container (SIGTERM, SIGKILL after grace seconds).
function Engine:stop(id, grace)
  grace = grace or 10
  local res, err = self:request("POST", "/containers/" .. http.escape(id) .. "/stop", { query = { t = grace },
    timeout = grace + 30 })
  if not res then error(err, 0) end
  if res.status == 304 or res.status < 300 then return true end
  errors.raise(res.status == 404 and "not_found" or "failure", "stopping " .. id .. ": " .. engine_message(res))
end

--- Removes a container (force: even if it runs); a missing one is fine.
function Engine:remove(id)
  local res, err = self:request("DELETE", "/containers/" .. http.escape(id), { query = { force = "true", v = "true" } })
  if not res then error(err, 0) end
  if res.status == 404 or res.status < 300 then return true end
  errors.raise("failure", "removing " .. id .. ": " .. engine_message(res))
end

--- Splits a Docker log stream (8-byte frame headers when the container has
-- no TTY) into text; returns a function fed with chunks, calling
-- on_text(text, stream) for each frame's payload.
function M.log_demuxer(on_text)
  local buf = ""
  return function(chunk)
    buf = buf .. chunk
    while true do
      local b = buf:byte(1)
      if b == nil then return end
      if b > 2 or #buf >= 4 and buf:sub(2, 4) ~= "\0\0\0" then -- a TTY's raw text
        on_text(buf, 1)
        buf = ""
        return
      end
      if #buf < 8 then return end
      local size = string.unpack(">I4", buf, 5)
      if #buf < 8 + size then return end
      on_text(buf:sub(9, 8 + size), b == 2 and 2 or 1)
      buf = buf:sub(9 + size)
    end
  end
end

--- The last n lines of text (a last line without its newline counts).
function M.last_lines(text, n)
  local i = #text - (text:sub(-1) == "\n" and 1 or 0)
  if n <= 0 then return "" end
  while i > 0 do
    if text:byte(i) == 10 then
      n = n - 1
      if n == 0 then return text:sub(i + 1) end
    end
    i = i - 1
  end
  return text
end

-- Podman (4.3) counts `tail` in its log records, and a line written in
-- pieces is several records: its tail cuts lines and runs them together.
-- Its logs are read whole and cut here instead.
local function engine_tail(self, tail)
  if self.podman then return "all" end
  return tail or 20
end

--- The last `tail` lines a container wrote (stdout and stderr), as text.
function Engine:logs(id, tail)
  local parts = {}
  local feed = M.log_demuxer(function(text) parts[#parts + 1] = text end)
  local res, err = self:request("GET", "/containers/" .. http.escape(id) .. "/logs",
    { query = { stdout = "true", stderr = "true", tail = engine_tail(self, tail) },
      on_data = function(chunk) feed(chunk) end })
  if not res then return nil, err end
  if res.status >= 400 then -- the error document went through the demuxer as text
    res.body = table.concat(parts)
    return nil, errors.new(res.status == 404 and "not_found" or "failure", "logs of " .. id .. ": " .. engine_message(res))
  end
  local text = table.concat(parts)
  return self.podman and M.last_lines(text, tail or 20) or text
end

--- The request that follows a container's log (for http.request_many).  On
-- Podman the whole log comes, its lines but the last `tail` dropped here.
function Engine:follow_request(id, tail, on_text)
  tail = tail or 20
  local skip = 0
  if self.podman then
    local sofar = self:logs(id, math.maxinteger) or ""
    local _, lines = sofar:gsub("\n", "")
    skip = math.max(0, lines - tail)
  end
  local feed = M.log_demuxer(function(text, stream)
    while skip > 0 and text ~= "" do
      local nl = text:find("\n", 1, true)
      if not nl then return end
      text, skip = text:sub(nl + 1), skip - 1
    end
    if text ~= "" then on_text(text, stream) end
  end)
  return { method = "GET", url = http.with_query(self.base .. M.API .. "/containers/" .. http.escape(id) .. "/logs",
    { stdout = "true", stderr = "true", follow = "true", tail = engine_tail(self, tail) }), unix_socket = self.socket,
    timeout = 0, connect_timeout = 5, on_data = function(chunk) feed(chunk) return true end }
end

--- The health of a running container, checked now:
-- {status = "healthy"|"unhealthy"|"starting"|"none", output}.  Podman runs
-- the image's check on demand (nothing runs it on a timer without
-- systemd); Docker runs its own checks, so its last verdict is read.
function Engine:health_request(id)
  if self.podman then
    return { method = "GET", url = self.base .. self.libpod .. "/containers/" .. http.escape(id) .. "/healthcheck",
      unix_socket = self.socket, timeout = 30, connect_timeout = 5 }
  end
  return { method = "GET", url = self.base .. M.API .. "/containers/" .. http.escape(id) .. "/json",
    unix_socket = self.socket, timeout = 30, connect_timeout = 5 }
end

local function last_output(health)
  local log = type(health.Log) == "table" and health.Log[#health.Log] or nil
  return type(log) == "table" and log.Output or nil
end

--- Podman's answer to its healthcheck route (409 when the container has
-- no check, or does not run).
local function libpod_health(res, body)
  if res.status == 200 and type(body) == "table" then
    return { status = tostring(body.Status or "unknown"), output = last_output(body) }
  end
  local message = engine_message(res)
  if message:find("no defined healthcheck", 1, true) or message:find("has no healthcheck", 1, true) then
    return { status = "none" }
  end
  if message:find("not running", 1, true) then return { status = "not running", output = message } end
  return { status = "unknown", output = message }
end

--- Docker's inspection: the verdict of the checks it runs itself.
local function docker_health(res, body)
  if res.status ~= 200 or type(body) ~= "table" then return { status = "unknown", output = engine_message(res) } end
  local state = type(body.State) == "table" and body.State or {}
  if not state.Running then return { status = "not running" } end
  local health = type(state.Health) == "table" and state.Health or nil
  if not health then return { status = "none" } end
  return { status = tostring(health.Status or "unknown"), output = last_output(health) }
end

--- Reads a health_request's answer.
function Engine:health_result(res)
  if res.error then return { status = "unknown", output = res.error } end
  local body = json.decode(res.body or "") or {}
  if self.podman then return libpod_health(res, body) end
  return docker_health(res, body)
end

--- The engine's one-shot stats of a container (request for request_many).
function Engine:stats_request(id)
  return { method = "GET", url = http.with_query(self.base .. M.API .. "/containers/" .. http.escape(id) .. "/stats",
    { stream = "false", ["one-shot"] = "true" }), unix_socket = self.socket, timeout = 15, connect_timeout = 5 }
end

-- ---- images ----

--- The image's inspection, or nil when the engine has no such image.
function Engine:image(ref)
  local res, err = self:request("GET", "/images/" .. http.escape(ref) .. "/json")
  if not res then error(err, 0) end
  if res.status == 404 then return nil end
  if res.status >= 400 then errors.raise("failure", "image " .. ref .. ": " .. engine_message(res)) end
  return res.json
end

function Engine:remove_image(ref)
  local res, err = self:request("DELETE", "/images/" .. http.escape(ref), { query = { force = "false" } })
  if not res then error(err, 0) end
  if res.status == 404 or res.status < 300 then return true end
  return nil, engine_message(res)
end

--- Builds an image from a tar context (Dockerfile at its root): calls
-- on_line(text) with each line of the build's output; returns the image id.
function Engine:build(tar, tag, on_line)
  local pending, failure, id = "", nil, nil
  local function line(text)
    local doc = json.decode(text)
    if type(doc) ~= "table" then return end
    if doc.error or doc.errorDetail then
      failure = tostring(doc.error or (type(doc.errorDetail) == "table" and doc.errorDetail.message) or "build failed")
    end
    if type(doc.aux) == "table" and doc.aux.ID then id = doc.aux.ID end
    if type(doc.stream) == "string" and on_line then
      for l in doc.stream:gmatch("[^\n]+") do on_line(l) end
    end
  end
  local res, err = self:request("POST", "/build", { query = { t = tag, rm = "true", forcerm = "true" }, body = tar,
    headers = { ["Content-Type"] = "application/x-tar" }, timeout = 600, on_data = function(chunk)
      pending = pending .. chunk
      for l in pending:gmatch("([^\n]*)\n") do line(l) end
      pending = pending:match("[^\n]*$")
      return true
    end })
  if not res then error(err, 0) end
  if pending ~= "" then line(pending) end
  if res.status >= 400 then errors.raise("failure", "building " .. tag .. ": HTTP " .. res.status) end
  if failure then errors.raise("failure", "building " .. tag .. ": " .. failure) end
  return id
end

return M
