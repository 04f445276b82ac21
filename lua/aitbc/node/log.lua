--- Structured logs: one JSON object per line (time, level, service, msg,
-- request_id, ...).  Worker threads push lines onto a process-wide queue;
-- the supervisor alone writes node.log (Writer:drain), so lines are whole,
-- ordered, and none waits on an idle worker.
local json = require "aitbc.json"
local sys = require "aitbc.native.sys"
local util = require "aitbc.node.util"

-- critical: a part of the node cannot do its work (a service failed its
-- checks, the database or a chain failed verification, a process crashed).
local LEVELS = { debug = 10, info = 20, warn = 30, error = 40, critical = 50 }

local M = { LEVELS = LEVELS }

local Log = {}
Log.__index = Log

--- A logger for path's log (any thread).
function M.open(path, level, service)
  return setmetatable({ queue = "aitbc.node.log:" .. path, min = LEVELS[level] or LEVELS.info,
    service = service or "coordinator" }, Log)
end

function Log:write(level, msg, fields)
  if LEVELS[level] < self.min then return end
  local line = { time = util.iso(sys.time()), level = level, service = self.service, msg = msg }
  for k, v in pairs(fields or {}) do line[k] = v end
  sys.queue_push(self.queue, json.encode(line))
end

function Log:enabled(level) return LEVELS[level] >= self.min end
function Log:debug(msg, fields) self:write("debug", msg, fields) end
function Log:info(msg, fields) self:write("info", msg, fields) end
function Log:warn(msg, fields) self:write("warn", msg, fields) end
function Log:error(msg, fields) self:write("error", msg, fields) end
function Log:critical(msg, fields) self:write("critical", msg, fields) end

local Writer = {}
Writer.__index = Writer

--- The one writer of path (the supervisor).
function M.writer(path)
  local f, err = io.open(path, "a")
  if not f then return nil, err end
  f:setvbuf("full", 1 << 16)
  return setmetatable({ file = f, queue = "aitbc.node.log:" .. path }, Writer)
end

--- Appends every queued line to the file.
function Writer:drain()
  local lines = sys.queue_drain(self.queue)
  if #lines > 0 then
    self.file:write(table.concat(lines, "\n"), "\n")
    self.file:flush()
  end
  return #lines
end

function Writer:close()
  self:drain()
  self.file:close()
end

return M
