--- Structured logs: one JSON object per line (time, level, service, msg,
-- request_id, ...), appended to the data directory's node.log.  Each worker
-- state buffers its lines and flushes them in one write.
local json = require "aitbc.json"
local sys = require "aitbc.native.sys"
local util = require "aitbc.node.util"

local LEVELS = { debug = 10, info = 20, warn = 30, error = 40 }

local M = { LEVELS = LEVELS }

local Log = {}
Log.__index = Log

function M.open(path, level, service)
  local f, err = io.open(path, "a")
  if not f then return nil, err end
  f:setvbuf("full", 1 << 16)
  return setmetatable({ file = f, min = LEVELS[level] or LEVELS.info, service = service or "coordinator" }, Log)
end

function Log:write(level, msg, fields)
  if LEVELS[level] < self.min then return end
  local line = { time = util.iso(sys.time()), level = level, service = self.service, msg = msg }
  for k, v in pairs(fields or {}) do line[k] = v end
  self.file:write(json.encode(line), "\n")
  if LEVELS[level] >= LEVELS.warn then self.file:flush() end
end

function Log:enabled(level) return LEVELS[level] >= self.min end
function Log:debug(msg, fields) self:write("debug", msg, fields) end
function Log:info(msg, fields) self:write("info", msg, fields) end
function Log:warn(msg, fields) self:write("warn", msg, fields) end
function Log:error(msg, fields) self:write("error", msg, fields) end
function Log:flush() self.file:flush() end

return M
