--- A private container engine for specs: aitbc's own Podman service
-- (`aitbc deploy engine start`) in a temporary AITBC_HOME, the aitbc-api
-- image built into it once (a spec file's setup), and a clean-up that
-- removes every container and image in that engine and stops the service,
-- whatever the tests left — it is nobody else's.  A machine without a
-- working engine gets the reason instead, for a skip line: never a fake.
local cli = require "support.cli"
local json = require "aitbc.json"
local sys = require "aitbc.sys"

local M = {}

--- Why there is no engine to test with, or nil.
function M.unavailable()
  local engine = require "aitbc.deploy.engine"
  if not engine.which("podman") then return "podman is not installed (make deps installs it)" end
  if not engine.which("runc") and not sys.stat("/usr/sbin/runc") then
    return "runc is not installed (make deps installs it)"
  end
  return engine.unusable()
end

--- Starts the engine; returns it ({home, socket, pid, engine, env, run}),
-- or nil and why (it did not start: the skip's reason).
function M.start()
  local why = M.unavailable()
  if why then return nil, why end
  local home = cli.tempdir()
  local env = { CONTAINER_HOST = false, DOCKER_HOST = false }
  local r = cli.run({ "-o", "json", "deploy", "engine", "start" }, { home = home, env = env, timeout = 60 })
  if r.code ~= 0 then
    local doc = json.decode(r.out)
    local message = type(doc) == "table" and type(doc.error) == "table" and doc.error.message or (r.out .. r.err)
    return nil, "the engine did not start: " .. tostring(message):gsub("%s+$", "")
  end
  local started = json.decode(r.out)
  local e = { home = home, pid = started.pid, socket = started.engine:gsub("^unix://", ""), env = env }
  e.engine = require("aitbc.deploy.engine").new({ socket = e.socket, label = started.engine }, "test")
  assert(e.engine:identify(5))
  --- The CLI in this engine's AITBC_HOME.
  function e.run(args, opts)
    opts = opts or {}
    opts.home, opts.env = home, opts.env or {}
    for k, v in pairs(env) do if opts.env[k] == nil then opts.env[k] = v end end
    opts.timeout = opts.timeout or 120
    return cli.run(args, opts)
  end
  return e
end

--- Builds aitbc-api:latest from the binary under test; true | nil, output.
function M.build_image(e)
  local r = e.run({ "deploy", "image" }, { timeout = 300 })
  if r.code ~= 0 then return nil, r.out .. r.err end
  return true
end

--- Removes every container and image in the engine, then stops it.
function M.cleanup(e)
  if not e then return end
  local eng = e.engine
  local ok, list = pcall(eng.containers, eng)
  for _, c in ipairs(ok and list or {}) do pcall(eng.remove, eng, c.Id) end
  local res = eng:request("GET", "/images/json")
  for _, img in ipairs(res and res.status == 200 and res.json or {}) do
    eng:request("DELETE", "/images/" .. img.Id:gsub("^sha256:", ""), { query = { force = "true" } })
  end
  if e.pid then cli.stop(e.pid, 10) end
end

return M
