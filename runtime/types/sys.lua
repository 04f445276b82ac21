---@meta aitbc.native.sys
-- Type stubs (LuaLS) for runtime/sys.c.  lua/aitbc/sys.lua adds /proc readings.
local sys = {}
sys.version = ""

---@return number
function sys.time() end
---@return number
function sys.monotonic() end
---@return true|nil, string? "interrupted"
function sys.sleep(seconds) end
---@return integer|false signal
function sys.interrupted() end
---@return string|nil
function sys.getenv(name) end
function sys.setenv(name, value) end
---@return boolean
function sys.isatty(fd) end
---@return integer|nil columns, integer? rows
function sys.term_size(fd) end
---A key pressed on the terminal (stdin) within seconds, read without echo.
---@return string|nil key, string? why "timeout"|"interrupted"|"not a terminal"
function sys.read_key(seconds) end
---@return integer
function sys.getpid() end
---@return string
function sys.hostname() end
---@return string
function sys.exe_path() end
---@param mode? integer default 0600
---@return true|nil, string? err
function sys.write_file(path, data, mode) end
---@return true|nil, string? err
function sys.mkdir(path, mode) end
---@return {type: string, size: integer, mode: integer, mtime: integer}|nil, string? err
function sys.stat(path) end
---@return true|nil, string? err
function sys.chmod(path, mode) end
---@return string[]|nil, string? err
function sys.list_dir(path) end
---@return {total: integer, free: integer, available: integer}|nil, string? err
function sys.disk_usage(path) end
---@return true|nil, string? err  a file's or directory's data on disk
function sys.fsync(path) end
---@class aitbc.file_lock
---@field unlock fun(self)
---An exclusive flock (never waited for); children do not inherit it.
---@return aitbc.file_lock|nil, string? "busy"|err
function sys.lock_file(path) end
---A listening TCP socket that child processes inherit (aitbc serve's supervisor).
---@return integer|nil fd, integer|string port_or_err
function sys.listen(host, port) end
---The terminal on stdin: keys at once, unechoed (true), or as it was (false).
---@return true|nil, string? err
function sys.term_raw(on) end
---@return string|nil bytes, string? "timeout"|"eof"|"interrupted"
function sys.read_input(timeout) end
---@type string|nil  "health" in a binary built with make variant HEALTH_FAULT=1
sys.build_fault = nil

---@class aitbc.proc
local proc = {}
---@return integer|nil code  128+signal when killed; nil while running (nohang)
function proc:wait(nohang) end
---@return boolean
function proc:kill(signal) end
---@return integer
function proc:pid() end
---@return string|nil chunk, string? "eof"|"timeout"|"interrupted"
function proc:read(timeout) end
---@return integer|nil code, string stdout_or_err, string? stderr
function proc:communicate(input, timeout) end
---@return {max_rss: integer, user: number, system: number}|nil
function proc:rusage() end
---@return true|nil, string? err  writes to the child's stdin (a pipe)
function proc:write(data) end
function proc:close_stdin() end

-- What threads share (runtime/shared.c).
---@class aitbc.mutex
---@field lock fun(self)
---@field unlock fun(self)
---@return aitbc.mutex
function sys.mutex(name) end
function sys.counter_add(key, n) end
---@return table<string, number>
function sys.counters() end
---@return integer|false seq  false when the queue is full
function sys.queue_push(name, text) end
---@return string[] items, integer last_seq
function sys.queue_drain(name, max) end
---@return string[]|nil items, integer? last_seq  nil once the queue is closed and empty
function sys.queue_take(name, max, timeout) end
function sys.queue_commit(name, seq) end
---@return integer
function sys.queue_committed(name) end
---@return boolean committed  whether everything pushed before the call was committed in time
function sys.queue_sync(name, timeout) end
function sys.queue_close(name) end
---Wakes suspended requests: every one (no key), every one waiting on key, or (mode "one") the one waiting longest.
---@param key? string
---@param mode? "one"
function sys.notify(key, mode) end
---@class aitbc.thread
---@field join fun(self): true|nil, string?
---Runs require(module)(arg) in a new Lua state on a new thread.
---@return aitbc.thread|nil, string? err
function sys.thread(module, arg) end

---@param opts {argv: string[], env?: table<string,string|false>, cwd?: string, stdin?: string, stdout?: string, stderr?: string, log?: string, setsid?: boolean, die_with_parent?: boolean|integer}
---streams: "inherit" (default), "pipe", "null"; stderr may be "stdout"
---@return aitbc.proc|nil, string? err
function sys.spawn(opts) end

return sys
