--- `aitbc serve`'s supervisor: a small process that holds the listening
-- socket and runs the node in a child process that inherits it.  Restarting
-- the node (or swapping its binary) starts a new process beside the old:
-- the new one opens the database and answers its health check on a
-- listener of its own first, then serves on the shared socket, and only
-- then is the old one told to stop (it finishes what it has in flight).
-- The socket never closes, so no connection is refused: at worst one waits
-- in the kernel's queue.  A new process that fails its health check is
-- stopped and the old one serves on: the old binary and configuration are
-- kept (nginx's USR2 and HAProxy's socket hand-over are the models).
-- The duties (blocks, sweeps) move with DATA_DIR/node.lock (aitbc.node.serve).
local errors = require "aitbc.errors"
local json = require "aitbc.json"
local operations = require "aitbc.node.operations"
local sys = require "aitbc.sys"
local util = require "aitbc.node.util"

local M = {}

M.START_TIMEOUT = 60 -- a new process must be ready (database open, listener up) by then
M.HEALTH_TIMEOUT = 15 -- and healthy by then
M.RESTART_BACKOFF = { 0.2, 1, 2, 5, 10, 30 } -- a process that exits by itself comes back after these

local Sup = {}
Sup.__index = Sup

--- The supervisor's own lines in node.log (the node's writer appends too).
function Sup:log(level, msg, fields)
  local line = { time = util.iso(sys.time()), level = level, service = "supervisor", msg = msg, pid = sys.getpid() }
  for k, v in pairs(fields or {}) do line[k] = v end
  local f = io.open(self.log_path, "a")
  if f then
    f:write(json.encode(line), "\n")
    f:close()
  end
end

--- DATA_DIR/release.json: the binary the node runs (after an update) and
-- the one before it, and the newest version ever trusted (never go back
-- below it: a rollback attack).
function M.read_release(data_dir)
  local text = sys.read_file(data_dir .. "/release.json")
  local r = text and json.decode(text)
  return type(r) == "table" and r or {}
end

function M.write_release(data_dir, r)
  local ok, err = sys.write_file(data_dir .. "/release.json", json.encode(r, { pretty = true }) .. "\n",
    tonumber("600", 8))
  if not ok then error("cannot write release.json: " .. tostring(err), 0) end
end

--- The binary the node runs: the installed release's, when it is there.
function Sup:binary()
  local r = M.read_release(self.data_dir)
  if r.current and r.current.binary and sys.stat(r.current.binary) then return r.current.binary, r.current.version end
  return self.default_binary, sys.version
end

-- ---- children ----

local Child = {}
Child.__index = Child

--- Starts a node process; it answers {event = "ready"} once its database
-- and its own listener are up.
function Sup:spawn(binary, extra)
  local argv = { binary, "serve" }
  for _, a in ipairs(self.child_args) do argv[#argv + 1] = a end
  argv[#argv + 1] = "--listen-fd"
  argv[#argv + 1] = tostring(self.fd)
  for _, a in ipairs(extra or {}) do argv[#argv + 1] = a end
  -- the node dies with its supervisor (kill -9 of `aitbc serve` stops it all, as it did before)
  local proc, err = sys.spawn { argv = argv, stdin = "pipe", stdout = "pipe", stderr = "inherit", die_with_parent = 9 }
  if not proc then return nil, err end
  return setmetatable({ proc = proc, pid = proc:pid(), binary = binary, buffer = "", events = {} }, Child)
end

--- Reads what the child said so far (events) for up to `wait` seconds;
-- returns false once its pipe is closed (it exited).
function Child:pump(wait)
  local chunk, why = self.proc:read(wait)
  if chunk then
    self.buffer = self.buffer .. chunk
    for line in self.buffer:gmatch("([^\n]*)\n") do
      local ev = json.decode(line)
      if type(ev) == "table" then self.events[#self.events + 1] = ev end
    end
    self.buffer = self.buffer:match("[^\n]*$")
    return true
  end
  return why ~= "eof"
end

--- The next event of a kind within timeout seconds | nil, why.
function Child:expect(kind, timeout)
  local deadline = sys.monotonic() + timeout
  while true do
    for i, ev in ipairs(self.events) do
      if ev.event == kind then
        table.remove(self.events, i)
        return ev
      end
    end
    if sys.interrupted() then return nil, "interrupted" end
    local left = deadline - sys.monotonic()
    if left <= 0 then return nil, "no '" .. kind .. "' within " .. timeout .. " s" end
    if not self:pump(math.min(left, 0.2)) then
      self.exit_code = self.proc:wait()
      return nil, "the process exited (code " .. tostring(self.exit_code) .. ")"
    end
  end
end

--- Stops it: SIGTERM (it drains: requests in flight get its --grace), or
-- SIGKILL at once; SIGKILL too after timeout seconds.  Returns its exit code.
function Child:stop(hard, timeout)
  self.proc:kill(hard and 9 or 15)
  local deadline = sys.monotonic() + (timeout or 30)
  while sys.monotonic() < deadline do
    self:pump(0.05)
    local code = self.proc:wait(true)
    if code then return code end
  end
  self.proc:kill(9)
  return self.proc:wait()
end

--- Health of a new process, checked on its own listener (no client reaches
-- it yet): GET /health answers ok, and its version is the one expected.
local function check_health(control, expect_version, timeout)
  local http = require "aitbc.http"
  local deadline, why = sys.monotonic() + timeout, "no answer"
  while sys.monotonic() < deadline and not sys.interrupted() do
    local res, err = http.request { method = "GET", url = control .. "/health", timeout = 2 }
    if not res then
      why = err and err.message or "no answer"
    elseif res.status ~= 200 or type(res.json) ~= "table" or res.json.status ~= "ok" then
      why = string.format("/health answered %d %s", res.status, type(res.json) == "table"
        and tostring(res.json.status) .. (res.json.reason and (": " .. res.json.reason) or "") or "")
    elseif expect_version and res.json.version ~= expect_version then
      why = "it runs version " .. tostring(res.json.version) .. ", not " .. expect_version
      return false, why
    else
      return true, res.json
    end
    sys.sleep(0.05)
  end
  return false, why
end

--- Starts a new process and brings it to serving: ready, healthy on its
-- own listener, then told to serve.  Returns it | nil, why (it was stopped).
function Sup:bring_up(binary, opts)
  local child, err = self:spawn(binary, opts.extra)
  if not child then return nil, "cannot start " .. binary .. ": " .. tostring(err) end
  local ready, why = child:expect("ready", opts.start_timeout or M.START_TIMEOUT)
  if not ready then
    child:stop(true, 5)
    return nil, "it did not start: " .. why, child.exit_code
  end
  child.control, child.version, child.integrity = ready.control, ready.version, ready.integrity
  child.duties = ready.duties -- it took them at start (no process held them)
  if opts.step then opts.step("new process " .. child.pid .. " (" .. child.version .. ") started; checking its health") end
  local healthy, detail = check_health(child.control, opts.expect_version, opts.health_timeout or M.HEALTH_TIMEOUT)
  if not healthy then
    child:stop(false, 5)
    return nil, "it failed its health check: " .. tostring(detail)
  end
  if opts.step then opts.step("new process " .. child.pid .. " healthy on its own listener") end
  local ok, werr = child.proc:write("serve\n")
  local serving, serr
  if ok then serving, serr = child:expect("serving", 10) end
  if not serving then
    child:stop(true, 5)
    return nil, "it did not start serving: " .. tostring(werr or serr)
  end
  return child
end

-- ---- operations: a restart, an update's swap ----

--- Replaces the running process by one of `binary`: the old one drains
-- (graceful) or is killed at once (emergency, which also runs the
-- integrity checks at start).  On failure the old one serves on.
-- Returns true, fields | false, why.
function Sup:replace(op, binary, expect_version)
  local dir = self.data_dir
  local p = op.params or {}
  local emergency = p.mode == "emergency"
  local function step(text, fields) operations.step(dir, op, text, fields) end
  local handover_started = sys.monotonic()
  local old = self.child
  if emergency and old then
    sys.sleep(0.2) -- the answer that accepted the operation leaves first
    local code = old:stop(true)
    step("emergency: the old process " .. old.pid .. " was stopped at once (exit " .. tostring(code) .. ")",
      { phase = "shutdown" })
    self:log("warn", "emergency restart: old process killed", { old_pid = old.pid })
    self.child = nil
  end
  local new, why = self:bring_up(binary, { expect_version = expect_version, step = step,
    extra = emergency and { "--integrity-check" } or nil, health_timeout = M.HEALTH_TIMEOUT })
  if not new then
    self:log("critical", "the new node process failed; keeping the old one", { reason = why, binary = binary })
    if not old or emergency then
      -- nothing serves any more: the binary that ran before comes back
      local back, berr = self:bring_up(old and old.binary or self:binary(), {})
      self.child = back
      if not back then
        self:log("critical", "cannot start the node again", { reason = berr })
        return false, why .. "; and the previous binary did not start either: " .. tostring(berr)
      end
      step("rolled back: process " .. back.pid .. " runs the previous binary again", { phase = "rollback" })
    else
      step("rolled back: the new process was stopped; the old one (" .. old.pid .. ") serves on", { phase = "rollback" })
    end
    return false, "the new process " .. why
  end
  step("new process " .. new.pid .. " serving on the shared socket", { phase = "serving" })
  if new.integrity then step("integrity checks at start", { phase = "integrity", integrity = new.integrity }) end
  if old and not emergency then
    local drained_at = sys.monotonic()
    local code = old:stop(false, (p.timeout or 300) + 5)
    step(string.format("old process %d drained and stopped (exit %s) in %.2f s", old.pid, tostring(code),
      sys.monotonic() - drained_at), { phase = "drained" })
  end
  self.child = new
  local duties = new.duties or new:expect("duties", 10)
  local healthy, detail = check_health(self.url, expect_version, M.HEALTH_TIMEOUT)
  if not healthy then
    self:log("critical", "the node is unhealthy after the restart", { reason = detail })
    return false, "health check after the restart failed: " .. tostring(detail)
  end
  local seconds = sys.monotonic() - handover_started
  step(string.format("health verified on %s: version %s%s", self.url, tostring(detail.version),
    duties and ", the new process holds the node's duties" or ""), { phase = "healthy" })
  self:log("info", "node process replaced", { new_pid = new.pid, old_pid = old and old.pid, version = detail.version,
    seconds = seconds })
  return true, { handover_seconds = seconds, pid = new.pid, version = detail.version }
end

function Sup:run_restart(op)
  local ok, result = self:replace(op, (self:binary()), nil)
  if ok then
    operations.finish(self.data_dir, op, true, string.format("the node restarted in %.2f s (process %d); no connection "
      .. "was refused", result.handover_seconds, result.pid), result)
  else
    operations.finish(self.data_dir, op, false, result, { rolled_back = true })
  end
end

--- An update: the release (downloaded, verified and backed up by the node)
-- goes live; its health decides, else the old binary and configuration come back.
function Sup:run_update(op)
  local p = op.params
  local rel = M.read_release(self.data_dir)
  local previous = rel.current or { binary = self.default_binary, version = sys.version }
  local ok, result = self:replace(op, p.binary, p.version)
  if ok then
    rel.previous, rel.current = previous, { version = p.version, binary = p.binary, sha256 = p.sha256,
      installed_at = util.iso(sys.time()) }
    rel.trusted_version = p.version
    rel.history = rel.history or json.array()
    rel.history[#rel.history + 1] = { version = p.version, from = previous.version, at = util.iso(sys.time()) }
    M.write_release(self.data_dir, rel)
    operations.finish(self.data_dir, op, true, string.format("updated %s -> %s in %.2f s; the previous binary is "
      .. "kept for a rollback", tostring(previous.version), p.version, result.handover_seconds), result)
  else
    operations.finish(self.data_dir, op, false, result .. "; rolled back: version " .. tostring(previous.version)
      .. " serves on with its configuration", { rolled_back = true })
  end
end

function Sup:handle(ev)
  if ev.event ~= "operation" then return end
  local op = operations.read(self.data_dir, ev.id)
  if not op then return end
  self:log("info", "operation", { operation = op.id, kind = op.kind })
  local ok, err = pcall(function()
    if op.kind == "restart" then self:run_restart(op)
    elseif op.kind == "update" then self:run_update(op)
    else operations.finish(self.data_dir, op, false, "the supervisor does not know operation " .. tostring(op.kind)) end
  end)
  if not ok then
    self:log("critical", "operation failed", { operation = op.id, error = tostring(err) })
    pcall(operations.finish, self.data_dir, op, false, "failed: " .. tostring(err))
  end
end

--- A process that exited by itself (a crash) comes back, after a pause
-- that grows while it keeps failing.
function Sup:revive(code)
  self:log("critical", "the node process exited by itself; starting it again", { pid = self.child.pid, code = code })
  self.child = nil
  local attempt = 0
  while not sys.interrupted() do
    attempt = attempt + 1
    sys.sleep(M.RESTART_BACKOFF[math.min(attempt, #M.RESTART_BACKOFF)])
    if sys.interrupted() then return end
    local child, why = self:bring_up((self:binary()), { extra = { "--integrity-check" } })
    if child then
      self.child = child
      self:log("warn", "node process started again", { pid = child.pid, attempt = attempt })
      return
    end
    self:log("critical", "the node process did not come back", { reason = why, attempt = attempt })
  end
end

--- Runs until SIGTERM or Ctrl-C.  opts: host, port, data_dir, pid_file,
-- url_file, grace; child_args: the serve options passed on to each node
-- process.  Prints "aitbc node listening on URL" once it serves.  Returns
-- the exit code of a node process that could not start (it said why).
function M.run(opts, child_args, say)
  local fd, port = sys.listen(opts.host, opts.port)
  if not fd then errors.raise("failure", port, "choose another port with --listen, or stop what uses it") end
  sys.on_interrupt("flag")
  local self = setmetatable({ fd = fd, data_dir = opts.data_dir, child_args = child_args,
    log_path = opts.data_dir .. "/node.log", default_binary = assert(sys.exe_path()),
    url = string.format("http://%s:%d", opts.host == "0.0.0.0" and "127.0.0.1" or opts.host, port) }, Sup)
  local url = string.format("http://%s:%d", opts.host, port)
  local child, why, code = self:bring_up((self:binary()), { start_timeout = M.START_TIMEOUT })
  if not child and code and code ~= 0 then return code end -- it said why on stderr (a usage error: 2)
  if not child then errors.raise("failure", "the node did not start: " .. why, "its log: " .. self.log_path) end
  self.child = child
  if opts.pid_file then sys.write_file(opts.pid_file, sys.getpid() .. "\n", tonumber("600", 8)) end
  if opts.url_file then sys.write_file(opts.url_file, url .. "\n", tonumber("600", 8)) end
  io.stdout:write("aitbc node listening on ", url, "\n")
  io.stdout:flush()
  say("info", "data dir " .. opts.data_dir .. "; log " .. self.log_path .. "; Ctrl-C stops")
  while not sys.interrupted() do
    local c = self.child
    if c then
      c:pump(0.2)
      while #c.events > 0 and self.child == c do self:handle(table.remove(c.events, 1)) end
      local exited = self.child == c and c.proc:wait(true)
      if exited and not sys.interrupted() then self:revive(exited) end
    else
      self:revive(nil)
    end
  end
  if self.child then self.child:stop(false, (opts.grace or 10) + 10) end
  if opts.pid_file then os.remove(opts.pid_file) end
  say("info", "node stopped")
end

return M
