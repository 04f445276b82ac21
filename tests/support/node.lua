--- A real node for specs: `aitbc serve` on a free loopback port with a
-- temporary data directory, plus keys of each role and a small client.
local http = require "aitbc.http"
local json = require "aitbc.json"
local sys = require "aitbc.sys"
local cli = require "support.cli"

local M = {}

local Node = {}
Node.__index = Node

--- start{args = {...extra serve options}} -> node
function M.start(opts)
  opts = opts or {}
  local dir = opts.data_dir or cli.tempdir()
  local argv = { cli.bin, "serve", "--listen", "127.0.0.1:0", "--data-dir", dir }
  for _, a in ipairs(opts.args or {}) do argv[#argv + 1] = a end
  local proc = assert(cli.spawn { argv = argv, stdout = "pipe", stderr = "pipe", env = { AITBC_HOME = dir },
    die_with_parent = true })
  -- (up in a tenth of a second; a start that took over 10 s was seen once under a full run's load,
  -- so it gets what serve's supervisor gives its node process, and its log when it fails)
  local line, deadline = "", sys.monotonic() + 45
  while not line:find("\n") do
    local chunk, err = proc:read(math.max(0.1, deadline - sys.monotonic()))
    if not chunk then
      local _, _, stderr = proc:communicate(nil, 5)
      error("node did not start (" .. tostring(err) .. "): " .. tostring(stderr) .. "\nits node.log ends:\n"
        .. (sys.read_file(dir .. "/node.log") or ""):sub(-1500))
    end
    line = line .. chunk
  end
  local url = assert(line:match("listening on (http://[%d%.:]+)"), "unexpected first line: " .. line)
  local node = setmetatable({ proc = proc, url = url, dir = dir }, Node)
  node.admin_key = assert(sys.read_file(dir .. "/admin.key")):gsub("%s+$", "")
  return node
end

--- request(method, path, {key=, json=, body=, headers=}) -> status, decoded body, response
function Node:request(method, path, opts)
  opts = opts or {}
  local headers = {}
  for k, v in pairs(opts.headers or {}) do headers[k] = v end
  if opts.key then headers["X-Api-Key"] = opts.key end
  local res, err = http.request { method = method, url = self.url .. path, headers = headers, json = opts.json,
    body = opts.body, timeout = opts.timeout or 30 }
  if not res then error(method .. " " .. path .. ": " .. tostring(err) .. "\n" .. self:diagnosis(), 2) end
  local decoded = res.body ~= "" and json.decode(res.body) or nil
  return res.status, decoded, res
end

--- What a failed request leaves to go on: whether the node process is
-- still there, and the end of its log.
function Node:diagnosis()
  local exited = self.proc and self.proc:wait(true)
  local text = sys.read_file(self.dir .. "/node.log") or ""
  local lines = {}
  for line in text:gmatch("[^\n]+") do lines[#lines + 1] = line end
  return string.format("node process: %s; the last lines of its node.log:\n%s",
    exited and ("exited, code " .. tostring(exited)) or "running",
    table.concat(lines, "\n", math.max(1, #lines - 14)))
end

--- A new API key of role; returns the key and its id.
function Node:key(role, extra)
  local body = { role = role }
  for k, v in pairs(extra or {}) do body[k] = v end
  local status, data = self:request("POST", "/v1/admin/keys", { key = self.admin_key, json = body })
  assert(status == 201, "key creation failed: " .. tostring(status))
  return data.key, data.key_id
end

--- Stops with SIGTERM (or kill -9 with hard = true) and returns the exit
-- code.  A node nobody stopped is stopped when the test that started it
-- ends, or for a setup's node when its file ends (tests/support/helper.lua).
function Node:stop(hard)
  if not self.proc then return end
  self.proc:kill(hard and 9 or 15)
  local code = self.proc:communicate(nil, 20)
  self.proc = nil
  return code
end

--- The CLI pointed at this node.
function Node:cli(args, opts)
  opts = opts or {}
  opts.env = opts.env or {}
  opts.env.AITBC_URL = self.url
  return cli.run(args, opts)
end

return M
