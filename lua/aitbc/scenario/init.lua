--- QA scenarios: the spec's numbered scenarios as runnable steps.
--
--   local scenario = require "aitbc.scenario"
--   local s = scenario.new("Client job submission")
--   s:step("1.1", "Submit a job", function(t)
--     local r = t:run([[aitbc client submit --type inference --model "llama3" --data '{"prompt":"Hello AITBC"}']])
--     t:expect_exit(r, 0)
--     t.vars.job_id = t:expect_match(r.stdout, "job_id%s+(%x+)", "job id in the output")
--   end)
--   return s
--
-- Commands run through /bin/sh exactly as written, as a new user types
-- them: this binary first on PATH, HOME a fresh directory (so ~/.aitbc holds
-- the config), no AITBC_* or OLLAMA_HOST variable from the caller's
-- environment, and nothing else set but what a step sets as the README tells
-- a user to (t:setenv, or a spec line's own variables through t:run's env).
-- Before the steps the run types `aitbc devnet up` (aitbc.scenario.runner).
local json = require "aitbc.json"
local sys = require "aitbc.sys"

local scenario = {}

local Scenario = {}
Scenario.__index = Scenario

--- opts: {nodes = N}: the devnet it runs on has N peer nodes (cross-chain scenarios).
function scenario.new(title, opts)
  return setmetatable({ title = title, steps = {}, nodes = opts and opts.nodes or 1 }, Scenario)
end

function Scenario:step(id, name, fn)
  self.steps[#self.steps + 1] = { id = id, name = name, fn = fn }
  return self
end

--- fn(t) runs after the steps, whatever became of them, before the run's
-- own clean-up (`devnet down`): what the user types to tidy up (a
-- deployment destroyed).  Its failures are not reported.
function Scenario:finally(fn)
  self.finally_fn = fn
  return self
end

--- A failed expectation: stops the step, reported with its message.
local Failure = {}
Failure.__index = Failure
local Skip = {}

local Step = {}
Step.__index = Step

function Step:fail(message)
  error(setmetatable({ message = message }, Failure), 0)
end

function Step:skip(reason)
  error(setmetatable({ message = reason }, Skip), 0)
end

function Step:expect(cond, message)
  if not cond then self:fail(message or "expectation failed") end
  return cond
end

local function excerpt(s)
  s = s or ""
  if #s > 600 then s = s:sub(1, 600) .. "…" end
  return s
end

function Step:expect_exit(r, code)
  if r.code ~= code then
    self:fail(string.format("expected exit code %d, got %d\n  command: %s\n  stdout: %s\n  stderr: %s",
      code, r.code, r.command, excerpt(r.stdout), excerpt(r.stderr)))
  end
  return r
end

--- Returns the first capture (or the whole match) of pattern in text.
function Step:expect_match(text, pattern, what)
  local found = table.pack((text or ""):match(pattern))
  if found[1] == nil then
    self:fail(string.format("expected %s (pattern %q) in:\n%s", what or "a match", pattern, excerpt(text)))
  end
  return table.unpack(found, 1, found.n)
end

--- stdout of r decoded as JSON.
function Step:json(r)
  local value, err = json.decode(r.stdout)
  if value == nil then self:fail("stdout is not JSON (" .. tostring(err) .. "):\n" .. excerpt(r.stdout)) end
  return value
end

--- Names of the caller's environment variables that a new user's shell
-- would not hold: AITBC_* and OLLAMA_HOST.
local function foreign_variables()
  local names = {}
  for entry in (sys.read_file("/proc/self/environ") or ""):gmatch("[^%z]+") do
    local name = entry:match("^([^=]+)=")
    if name and (name:find("^AITBC_") or name == "OLLAMA_HOST") then names[#names + 1] = name end
  end
  return names
end

function Step:environment(extra)
  -- HOME too: a spec line writing to ~/... stays inside the run's directory
  local env = { PATH = self.bindir .. ":" .. (sys.getenv("PATH") or "/usr/bin:/bin"), HOME = self.home }
  for _, name in ipairs(foreign_variables()) do env[name] = false end
  for k, v in pairs(self.vars.env or {}) do env[k] = v end
  for k, v in pairs(self.env or {}) do env[k] = v end
  for k, v in pairs(extra or {}) do env[k] = v end
  return env
end

--- Sets an environment variable for this and every later step of the file
-- (only one the README tells a user to set, e.g. AITBC_WALLET_PASSWORD).
function Step:setenv(name, value)
  self.vars.env = self.vars.env or {}
  self.vars.env[name] = value
end

--- Starts a command line in the background (its output appended to log);
-- it is stopped (SIGTERM) when the scenario file ends.  Returns the pid.
function Step:spawn(cmdline, opts)
  opts = opts or {}
  local proc, err = sys.spawn { argv = { "/bin/sh", "-c", "exec " .. cmdline }, env = self:environment(opts.env),
    cwd = self.cwd, stdin = "null", stdout = "null", stderr = "null", log = opts.log, setsid = true }
  if not proc then self:fail("cannot start: " .. tostring(err)) end
  table.insert(self.cleanup, 1, proc)
  return proc:pid(), proc
end

--- Polls check() every 0.1 s until it returns a true value; fails after timeout.
function Step:wait_for(what, check, timeout)
  local deadline = sys.monotonic() + (timeout or 30)
  while sys.monotonic() < deadline do
    local v = check()
    if v then return v end
    sys.sleep(0.1)
  end
  self:fail("timed out waiting for " .. what)
end

--- Runs a shell command line; returns {code, stdout, stderr, command}.
function Step:run(cmdline, opts)
  opts = opts or {}
  local env = self:environment(opts.env)
  local proc, err = sys.spawn { argv = { "/bin/sh", "-c", cmdline }, env = env, cwd = self.cwd,
    stdin = opts.stdin and "pipe" or "null", stdout = "pipe", stderr = "pipe" }
  if not proc then self:fail("cannot run: " .. tostring(err)) end
  local code, out, errout = proc:communicate(opts.stdin, opts.timeout or 120)
  if not code then self:fail("command did not finish (" .. tostring(out) .. "): " .. cmdline) end
  self.commands = (self.commands or 0) + 1
  return { code = code, stdout = out, stderr = errout, command = cmdline }
end

--- A new API key of role ("client", "miner", "admin") made with the
-- configured admin key, as a user with one would:
--   aitbc -o json api --role admin POST /v1/admin/keys -d '{"role": ...}'
-- Returns the key and its id.
function Step:api_key(role, extra)
  local body = { role = role, name = "scenario " .. role }
  for k, v in pairs(extra or {}) do body[k] = v end
  local r = self:run("aitbc -o json api --role admin POST /v1/admin/keys -d " .. sys.shell_quote(json.encode(body)))
  if r.code ~= 0 then self:fail("cannot create a " .. role .. " key: " .. excerpt(r.stderr)) end
  local data = self:json(r)
  return data.key, data.key_id
end

function Step:log(msg)
  self.logs[#self.logs + 1] = msg
end

--- Loads a scenario file; it must return a scenario.
function scenario.load(path)
  local chunk, err = loadfile(path)
  if not chunk then return nil, err end
  local ok, s = pcall(chunk)
  if not ok then return nil, tostring(s) end
  if getmetatable(s) ~= Scenario then return nil, path .. " did not return a scenario (scenario.new(...))" end
  return s
end

--- Runs fn(t) as one step; its result {id, name, status, message, seconds, logs}.
local function run_step(id, name, fn, t)
  local started = sys.monotonic()
  local ok, e = xpcall(fn, function(err)
    if getmetatable(err) == Failure or getmetatable(err) == Skip then return err end
    return setmetatable({ message = "error: " .. tostring(err) .. "\n" .. debug.traceback(nil, 2) }, Failure)
  end, t)
  local r = { id = id, name = name, seconds = sys.monotonic() - started, logs = t.logs }
  if ok then r.status = "pass"
  elseif getmetatable(e) == Skip then r.status, r.message = "skip", e.message
  else r.status, r.message = "fail", e.message end
  return r
end

--- Runs every step of s.  env: {bindir, home, cwd, env, setup}.  setup,
-- if given, is {name, fn}: fn(t) runs before the steps (it types what a
-- user types first, e.g. `aitbc devnet up`) and may return a function(t)
-- run after them; a setup that fails is reported as a step "setup", and
-- the steps do not run.  on_step(result) is called after each step.
-- Returns the list of results {id, name, status = "pass"|"fail"|"skip",
-- message, seconds, logs}.
function scenario.execute(s, env, on_step)
  local vars, results, cleanup = {}, {}, {}
  local function step_env()
    return setmetatable({ vars = vars, logs = {}, bindir = env.bindir, home = env.home, cwd = env.cwd, env = env.env,
      cleanup = cleanup }, Step)
  end
  local teardown, ready = nil, true
  if env.setup then
    local t = step_env()
    local r = run_step("setup", env.setup.name, function(st) teardown = env.setup.fn(st) end, t)
    if r.status ~= "pass" then
      ready = false
      results[#results + 1] = r
      if on_step then on_step(r) end
    end
  end
  for _, st in ipairs(ready and s.steps or {}) do
    local r = run_step(st.id, st.name, st.fn, step_env())
    results[#results + 1] = r
    if on_step then on_step(r) end
    if sys.interrupted() then break end
  end
  if s.finally_fn and ready then pcall(s.finally_fn, step_env()) end
  for _, proc in ipairs(cleanup) do -- background commands, newest first
    proc:kill(15)
    if not proc:communicate(nil, 15) then proc:kill(9) proc:wait() end
  end
  if teardown then pcall(teardown, step_env()) end
  return results
end

--- JUnit XML for a list of {file, title, results}.
function scenario.junit(reports)
  local function esc(s)
    return (tostring(s or ""):gsub("[<>&\"]", { ["<"] = "&lt;", [">"] = "&gt;", ["&"] = "&amp;", ['"'] = "&quot;" }))
  end
  local out = { '<?xml version="1.0" encoding="UTF-8"?>', "<testsuites>" }
  for _, rep in ipairs(reports) do
    local failures, skipped = 0, 0
    for _, r in ipairs(rep.results) do
      if r.status == "fail" then failures = failures + 1 elseif r.status == "skip" then skipped = skipped + 1 end
    end
    out[#out + 1] = string.format('  <testsuite name="%s" file="%s" tests="%d" failures="%d" skipped="%d">',
      esc(rep.title), esc(rep.file), #rep.results, failures, skipped)
    for _, r in ipairs(rep.results) do
      out[#out + 1] = string.format('    <testcase classname="%s" name="%s %s" time="%.3f">',
        esc(rep.title), esc(r.id), esc(r.name), r.seconds)
      if r.status == "fail" then
        out[#out + 1] = string.format('      <failure message="%s">%s</failure>', esc(r.message:match("^[^\n]*")), esc(r.message))
      elseif r.status == "skip" then
        out[#out + 1] = string.format('      <skipped message="%s"/>', esc(r.message))
      end
      out[#out + 1] = "    </testcase>"
    end
    out[#out + 1] = "  </testsuite>"
  end
  out[#out + 1] = "</testsuites>"
  return table.concat(out, "\n") .. "\n"
end

return scenario
