--- Helpers for specs: run the real aitbc binary (the one running the tests)
-- in a private AITBC_HOME, and clean up afterwards.
local json = require "aitbc.json"
local sys = require "aitbc.sys"

local M = { bin = assert(sys.exe_path()) }

local homes, procs = {}, {}

--- A fresh temporary directory, removed by M.cleanup().
function M.tempdir()
  local dir = assert(sys.tempdir("aitbc-test"))
  homes[#homes + 1] = dir
  return dir
end

--- Whether process pid (not necessarily a child of this one) runs; a zombie
-- no longer does (its parent may never reap it where PID 1 does not).
function M.alive(pid)
  if not sys.kill(pid, 0) then return false end
  local stat = sys.read_file("/proc/" .. pid .. "/stat")
  return not (stat and stat:match("^%d+ %b() (%a)") == "Z")
end

--- Stops a process if it still runs: SIGTERM, then SIGKILL after grace
-- seconds.  proc: from sys.spawn, or a pid (a process that is not a child
-- of this one, such as a detached node).
function M.stop(proc, grace)
  if math.type(proc) == "integer" then
    if not M.alive(proc) then return end
    sys.kill(proc, 15)
    local deadline = sys.monotonic() + (grace or 10)
    while M.alive(proc) and sys.monotonic() < deadline do sys.sleep(0.02) end
    if M.alive(proc) then sys.kill(proc, 9) end
    return
  end
  if proc:wait(true) then return end
  proc:kill(15)
  if not proc:communicate(nil, grace or 10) then
    proc:kill(9)
    proc:wait()
  end
end

--- sys.spawn whose process, if it still runs, is stopped when the test that
-- started it ends (a setup's: when its file ends), so that a failed test
-- leaves nothing behind.
function M.spawn(opts)
  local proc, err = sys.spawn(opts)
  if proc then procs[#procs + 1] = proc end
  return proc, err
end

--- A process started elsewhere (a detached node, a devnet's parts), by pid,
-- to be stopped like those of M.spawn.
function M.adopt(pid)
  procs[#procs + 1] = pid
  return pid
end

--- How many processes M.spawn has started so far (for M.stop_since).
function M.spawned() return #procs end

--- Stops what M.spawn started after the first `mark` processes, newest
-- first.  tests/support/helper.lua runs it when a test ends: a test that
-- failed half-way leaves none of its processes running.
function M.stop_since(mark)
  for i = #procs, mark + 1, -1 do
    M.stop(procs[i])
    procs[i] = nil
  end
end

--- Stops whatever M.spawn started, then removes M.tempdir()'s directories.
-- Run when a spec file ends (tests/support/helper.lua) and by specs' teardown.
function M.cleanup()
  M.stop_since(0)
  for _, dir in ipairs(homes) do sys.remove_tree(dir) end
  homes = {}
end

--- Polls check() until it returns a true value, and returns that value;
-- raises after timeout seconds (default 15) naming what it waited for.
function M.wait_for(what, check, timeout)
  local deadline = sys.monotonic() + (timeout or 15)
  while true do
    local value = check()
    if value then return value end
    if sys.monotonic() > deadline then error("timed out waiting for " .. what, 2) end
    sys.sleep(0.02)
  end
end

--- The simulated Ollama in a process of its own (stopped when the test, or
-- for setup's, the file ends); returns its URL and the process.
function M.simulated_ollama(token_delay)
  local dir = M.tempdir()
  local proc = assert(M.spawn { argv = { M.bin, "ollama", "serve-sim", "--listen", "127.0.0.1:0", "--token-delay",
    tostring(token_delay or 0.001), "--url-file", dir .. "/url" }, stdout = "null", stderr = "null" })
  local url = M.wait_for("the simulated Ollama to start", function()
    local text = sys.read_file(dir .. "/url")
    return text and text:find("\n") and text:gsub("%s+$", "")
  end)
  return url, proc
end

-- Settings from the developer's shell must not leak into tests.
local CLEAN_ENV = {
  AITBC_URL = false, AITBC_API_KEY = false, AITBC_OUTPUT = false, AITBC_CONFIG = false,
  AITBC_TIMEOUT = false, AITBC_ENVIRONMENT = false, AITBC_COLOR = false, AITBC_DEBUG = false,
  NO_COLOR = false,
}

--- run({args...}, {home=, env=, stdin=, timeout=, setsid=}) -> {code, out, err, json}
-- setsid: in a session of its own, without a controlling terminal (so that
-- nothing can prompt on the terminal the tests run in).
function M.run(args, opts)
  opts = opts or {}
  local env = {}
  for k, v in pairs(CLEAN_ENV) do env[k] = v end
  env.AITBC_HOME = opts.home or M.tempdir()
  for k, v in pairs(opts.env or {}) do env[k] = v end
  local proc = assert(sys.spawn { argv = { M.bin, table.unpack(args) }, env = env,
    stdin = opts.stdin and "pipe" or "null", stdout = "pipe", stderr = "pipe", setsid = opts.setsid })
  local code, out, err = proc:communicate(opts.stdin, opts.timeout or 30)
  if not code then M.stop(proc, 1) end
  assert(code, "aitbc did not finish: " .. tostring(out))
  return { code = code, out = out, err = err, json = function() return assert(json.decode(out)) end }
end

--- Starts the in-process test HTTP server with a handler module from
-- tests/support (default echo_app); returns the server and its URL.
--- Starts the in-process test HTTP server (tests/support/echo_app.lua, or
-- opts.handler); other opts go to server.start (limits, timeouts).
function M.echo_server(opts)
  local start = { port = 0, handler = "support.echo_app", max_body = 8 << 20, log_queue = "tests.echo_server.log" }
  for k, v in pairs(opts or {}) do start[k] = v end
  local srv = assert(require("aitbc.server").start(start))
  return srv, "http://127.0.0.1:" .. srv:port()
end

--- A loopback port with nothing listening on it.
function M.closed_port()
  local srv = M.echo_server()
  local port = srv:port()
  srv:stop(0)
  return port
end

function M.shell_quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

--- Runs aitbc on a pseudo-terminal (util-linux script, in every Debian);
-- prelude: shell commands before it (e.g. stty); input: what is typed (its
-- end then closes the terminal's input).  Returns the exit code and what the
-- terminal showed (CR LF as LF).
function M.on_terminal(args, env, prelude, input)
  local words = {}
  for i, a in ipairs(args) do words[i] = M.shell_quote(a) end
  local line = (prelude or "") .. "exec " .. M.shell_quote(M.bin) .. " " .. table.concat(words, " ")
  local proc = assert(sys.spawn { argv = { "script", "-qec", line, "/dev/null" }, env = env,
    stdin = input and "pipe" or "null", stdout = "pipe", stderr = "pipe" })
  local code, out = proc:communicate(input, 30)
  return code, (out:gsub("\r\n", "\n"))
end

return M
