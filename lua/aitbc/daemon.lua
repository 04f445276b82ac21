--- Starting this binary in the background: a new session, output appended
-- to a log file, and a hand-shake through a file the child writes once it
-- is ready (its URL), so the caller learns at once whether it started.
local errors = require "aitbc.errors"
local sys = require "aitbc.sys"

local daemon = {}

--- start{args = {...}, ready_file = PATH, log = PATH, env = {}, timeout = 15}
-- -> {pid, url} ; args must make the child write its URL to ready_file.
function daemon.start(opts)
  os.remove(opts.ready_file)
  local argv = { sys.exe_path() }
  for _, a in ipairs(opts.args) do argv[#argv + 1] = a end
  local proc, err = sys.spawn { argv = argv, setsid = true, stdin = "null", stdout = "null", stderr = "null",
    log = opts.log, env = opts.env }
  if not proc then errors.raise("failure", err) end
  local deadline = sys.monotonic() + (opts.timeout or 15)
  while sys.monotonic() < deadline do
    local url = sys.read_file(opts.ready_file)
    if url and url:find("\n") then return { pid = proc:pid(), url = (url:gsub("%s+$", "")) } end
    local code = proc:wait(true)
    if code then
      local log = opts.log and sys.read_file(opts.log) or ""
      errors.raise("failure", string.format("%s exited during start-up (code %d)%s", opts.args[1], code,
        log ~= "" and (": " .. log:gsub("%s+$", ""):sub(-400)) or ""))
    end
    sys.sleep(0.02)
  end
  proc:kill(15)
  local log = opts.log and sys.read_file(opts.log) or ""
  errors.raise("failure", opts.args[1] .. " did not start within " .. (opts.timeout or 15) .. " seconds"
    .. (opts.log and ("; see " .. opts.log) or "") .. (log ~= "" and (": " .. log:gsub("%s+$", ""):sub(-600)) or ""))
end

--- Whether a process (not necessarily our child) is alive.  A zombie (it
-- exited; its parent, often init, has not reaped it yet) is not.
function daemon.alive(pid)
  if not (pid and sys.kill(pid, 0) ~= nil) then return false end
  local stat = sys.read_file("/proc/" .. math.tointeger(pid) .. "/stat")
  return not (stat and stat:match("^%d+ %b() (%a)") == "Z")
end

--- SIGTERM, then wait up to timeout seconds; SIGKILL if it will not go.
function daemon.stop(pid, timeout)
  if not daemon.alive(pid) then return "not running" end
  sys.kill(pid, 15)
  local deadline = sys.monotonic() + (timeout or 10)
  while sys.monotonic() < deadline do
    if not daemon.alive(pid) then return "stopped" end
    sys.sleep(0.05)
  end
  sys.kill(pid, 9)
  return "killed"
end

return daemon
