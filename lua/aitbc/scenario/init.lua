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
-- Commands run through /bin/sh exactly as written, with this binary first
-- on PATH, HOME a fresh directory (AITBC_HOME is $HOME/.aitbc) and AITBC_URL
-- the run's node.
local json = require "aitbc.json"
local sys = require "aitbc.sys"

local scenario = {}

local Scenario = {}
Scenario.__index = Scenario

function scenario.new(title)
  return setmetatable({ title = title, steps = {} }, Scenario)
end

function Scenario:step(id, name, fn)
  self.steps[#self.steps + 1] = { id = id, name = name, fn = fn }
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

function Step:environment(extra)
  -- HOME too: a spec line writing to ~/... stays inside the run's directory
  local env = { PATH = self.bindir .. ":" .. (sys.getenv("PATH") or "/usr/bin:/bin"), AITBC_HOME = self.home .. "/.aitbc",
    HOME = self.home }
  if self.url then env.AITBC_URL = self.url end
  if self.admin_key then env.AITBC_SCENARIO_ADMIN_KEY = self.admin_key end
  for k, v in pairs(self.vars.env or {}) do env[k] = v end
  for k, v in pairs(self.env or {}) do env[k] = v end
  for k, v in pairs(extra or {}) do env[k] = v end
  return env
end

--- Sets environment variables for this and every later step of the file.
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

--- An Ollama for this scenario: OLLAMA_HOST if one answers there, else the
-- simulated one, started once and stopped with the scenario.
function Step:ollama()
  if self.vars.ollama_url then return self.vars.ollama_url end
  local ollama = require "aitbc.ollama"
  local url = ollama.normalize(sys.getenv("OLLAMA_HOST"))
  if not ollama.new(url):version() then
    local file = self.home .. "/ollama-sim.url"
    self:spawn("aitbc ollama serve-sim --listen 127.0.0.1:0 --url-file " .. file, { log = self.home .. "/ollama-sim.log" })
    url = self:wait_for("the simulated Ollama", function()
      local text = sys.read_file(file)
      return text and text:find("\n") and text:gsub("%s+$", "")
    end, 15)
  end
  self.vars.ollama_url = url
  self:setenv("OLLAMA_HOST", url)
  return url
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

--- A new API key of role ("client", "miner", "admin") on the run's node.
function Step:api_key(role, extra)
  if not self.admin_key then self:fail("no admin key for this run (set AITBC_SCENARIO_ADMIN_KEY with --url)") end
  local body = { role = role }
  for k, v in pairs(extra or {}) do body[k] = v end
  local data, err = require("aitbc.api").new { url = self.url, api_key = self.admin_key }
    :request("POST", "/v1/admin/keys", { json = body, expect = { key = "string", key_id = "string" } })
  if not data then self:fail("cannot create a " .. role .. " key: " .. tostring(err)) end
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

--- Runs every step of s.  env: {bindir, home, url, admin_key, cwd, env}.
-- on_step(result) is called after each step.  Returns the list of results
-- {id, name, status = "pass"|"fail"|"skip", message, seconds, logs}.
function scenario.execute(s, env, on_step)
  local vars, results, cleanup = {}, {}, {}
  for _, st in ipairs(s.steps) do
    local t = setmetatable({ vars = vars, logs = {}, bindir = env.bindir, home = env.home, url = env.url,
      admin_key = env.admin_key, cwd = env.cwd, env = env.env, cleanup = cleanup }, Step)
    local started = sys.monotonic()
    local ok, e = xpcall(st.fn, function(err)
      if getmetatable(err) == Failure or getmetatable(err) == Skip then return err end
      return setmetatable({ message = "error: " .. tostring(err) .. "\n" .. debug.traceback(nil, 2) }, Failure)
    end, t)
    local r = { id = st.id, name = st.name, seconds = sys.monotonic() - started, logs = t.logs }
    if ok then r.status = "pass"
    elseif getmetatable(e) == Skip then r.status, r.message = "skip", e.message
    else r.status, r.message = "fail", e.message end
    results[#results + 1] = r
    if on_step then on_step(r) end
    if sys.interrupted() then break end
  end
  for _, proc in ipairs(cleanup) do -- background commands, newest first
    proc:kill(15)
    if not proc:communicate(nil, 15) then proc:kill(9) proc:wait() end
  end
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
