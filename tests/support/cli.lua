--- Helpers for specs: run the real aitbc binary (the one running the tests)
-- in a private AITBC_HOME, and clean up afterwards.
local json = require "aitbc.json"
local sys = require "aitbc.sys"

local M = { bin = assert(sys.exe_path()) }

local homes = {}

--- A fresh temporary directory, removed by M.cleanup().
function M.tempdir()
  local dir = assert(sys.tempdir("aitbc-test"))
  homes[#homes + 1] = dir
  return dir
end

function M.cleanup()
  for _, dir in ipairs(homes) do sys.remove_tree(dir) end
  homes = {}
end

-- Settings from the developer's shell must not leak into tests.
local CLEAN_ENV = {
  AITBC_URL = false, AITBC_API_KEY = false, AITBC_OUTPUT = false, AITBC_CONFIG = false,
  AITBC_TIMEOUT = false, AITBC_ENVIRONMENT = false, AITBC_COLOR = false, AITBC_DEBUG = false,
  NO_COLOR = false,
}

--- run({args...}, {home=, env=, stdin=, timeout=}) -> {code, out, err, json}
function M.run(args, opts)
  opts = opts or {}
  local env = {}
  for k, v in pairs(CLEAN_ENV) do env[k] = v end
  env.AITBC_HOME = opts.home or M.tempdir()
  for k, v in pairs(opts.env or {}) do env[k] = v end
  local proc = assert(sys.spawn { argv = { M.bin, table.unpack(args) }, env = env,
    stdin = opts.stdin and "pipe" or "null", stdout = "pipe", stderr = "pipe" })
  local code, out, err = proc:communicate(opts.stdin, opts.timeout or 30)
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

return M
