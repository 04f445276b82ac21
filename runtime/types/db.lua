---@meta aitbc.native.db
-- Type stubs (LuaLS) for runtime/db.c (SQLite).  See lua/aitbc/db.lua for the wrapper.
local db = {}
db.sqlite_version = ""

---@class aitbc.db.handle
local handle = {}
---@return true|nil, string? err
function handle:exec(sql) end
---@return aitbc.db.stmt|nil, string? err
function handle:prepare(sql) end
---@return integer
function handle:changes() end
---@return integer
function handle:last_insert_id() end
---@return integer|nil pages, string? err
function handle:backup(path) end
---A backup in steps (progress); consistent while the caller holds a read transaction on this connection.
---@return aitbc.db.backup|nil, string? err
function handle:backup_start(path) end
---@param name "length"|"sql_length"|"column"|"variable_number"
---@param value? integer  the new limit; without it, only reads
---@return integer previous
function handle:limit(name, value) end
function handle:close() end

---@class aitbc.db.backup
local backup = {}
---@return "more"|"busy"|"done"|nil state, integer|string remaining_or_err, integer? pagecount
function backup:step(pages) end
---@return true|nil, string? err  nil unless the last step was "done"
function backup:finish() end

---@class aitbc.db.stmt
local stmt = {}
---@return aitbc.db.stmt|nil, string? err  positional values, or one table of named values;
---nil, "cannot bind parameter :name (#2): string or blob too big" when SQLite refuses a value
function stmt:bind(...) end
---@return table|false|nil row, string? err  false when done
function stmt:step() end
function stmt:reset() end
function stmt:finalize() end

---@param opts? {readonly?: boolean, busy_timeout_ms?: integer}
---@return aitbc.db.handle|nil, string? err
function db.open(path, opts) end
---@return userdata  a string to bind as a BLOB
function db.blob(s) end

return db
