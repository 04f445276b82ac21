--- SQLite: the native binding plus conveniences used across the node.
--   local db = assert(require("aitbc.db").open(path))
--   db:run("INSERT INTO t VALUES (?, ?)", 1, "x")  -> changes | nil, err
--   db:query("SELECT ...", ...)                    -> rows | nil, err
--   db:first("SELECT ...", ...)                    -> row | false | nil, err
--   db:transaction(function() ... end)             -> results of fn (rolled back on error)
-- A value SQLite refuses to bind (over its length limit) is an error naming
-- the parameter, like any SQL error, never a silent NULL.
local native = require "aitbc.native.db"

local M = { blob = native.blob, sqlite_version = native.sqlite_version }

local Db = {}
Db.__index = Db

--- open(path [, opts]) -> db | nil, err
-- opts.readonly; opts.synchronous ("FULL" default, or "NORMAL": in WAL mode
-- a commit then survives a crash of the process but not of the machine);
-- opts.page_size: for a new database;
-- opts.write_lock: serialise transactions of every connection in this
-- process with the same lock name (server workers), instead of letting
-- SQLite's busy handler sleep.
function M.open(path, opts)
  opts = opts or {}
  local handle, err = native.open(path, opts)
  if not handle then return nil, err end
  local self = setmetatable({ handle = handle, cache = {}, depth = 0 }, Db)
  if opts.write_lock then self.lock = require("aitbc.native.sys").mutex(opts.write_lock) end
  if not opts.readonly then
    if opts.page_size then -- takes effect only on a new database
      local ok, perr = handle:exec("PRAGMA page_size = " .. math.tointeger(opts.page_size))
      if not ok then handle:close() return nil, perr end
    end
    local sync = opts.synchronous or "FULL"
    assert(sync == "FULL" or sync == "NORMAL", "synchronous must be FULL or NORMAL")
    local ok, perr = handle:exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=" .. sync .. "; PRAGMA foreign_keys=ON;")
    if not ok then handle:close() return nil, perr end
  end
  return self
end

--- A cached prepared statement for sql.
function Db:statement(sql)
  local st = self.cache[sql]
  if st then return st end
  local err
  st, err = self.handle:prepare(sql)
  if not st then return nil, err end
  self.cache[sql] = st
  return st
end

local function bind(st, ...)
  if select("#", ...) == 1 and type((...)) == "table" then return st:bind((...)) end
  return st:bind(...)
end

function Db:query(sql, ...)
  local st, err = self:statement(sql)
  if not st then return nil, err end
  local bound, berr = bind(st, ...)
  if not bound then return nil, berr end
  local rows = {}
  while true do
    local row, serr = st:step()
    if row == nil then return nil, serr end
    if not row then break end
    rows[#rows + 1] = row
  end
  return rows
end

function Db:first(sql, ...)
  local st, err = self:statement(sql)
  if not st then return nil, err end
  local bound, berr = bind(st, ...)
  if not bound then return nil, berr end
  local row, serr = st:step()
  st:reset()
  if row == nil then return nil, serr end
  return row
end

function Db:run(sql, ...)
  local st, err = self:statement(sql)
  if not st then return nil, err end
  local bound, berr = bind(st, ...)
  if not bound then return nil, berr end
  local row, serr = st:step()
  if row == nil then return nil, serr end
  st:reset()
  return self.handle:changes(), self.handle:last_insert_id()
end

function Db:exec(sql) return self.handle:exec(sql) end
function Db:limit(name, value) return self.handle:limit(name, value) end
function Db:backup(path) return self.handle:backup(path) end

--- Runs fn inside BEGIN IMMEDIATE ... COMMIT; any error rolls back and is
-- raised again.  Nested calls join the outer transaction.
function Db:transaction(fn, ...)
  if self.depth > 0 then return fn(...) end
  if self.lock then self.lock:lock() end
  local ok, err = self.handle:exec("BEGIN IMMEDIATE")
  if not ok then
    if self.lock then self.lock:unlock() end
    return nil, err
  end
  self.depth = 1
  local results = table.pack(pcall(fn, ...))
  self.depth = 0
  if results[1] then
    ok, err = self.handle:exec("COMMIT")
    if not ok then results = { false, err, n = 2 } end
  end
  if not results[1] then self.handle:exec("ROLLBACK") end
  if self.lock then self.lock:unlock() end
  if not results[1] then error(results[2], 0) end
  return table.unpack(results, 2, results.n)
end

function Db:close()
  for _, st in pairs(self.cache) do st:finalize() end
  self.cache = {}
  self.handle:close()
end

return M
